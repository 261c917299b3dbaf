"""``forgetting``: is a failed run's damage in the top layers? (Mosbach et al. 2021, section 4).

Reads the forgetting probe's evaluations (``runner.probe``; contract: split ``probe.k<k>``, one
row per score, at the run's final step; schemas/README.md "Probe evaluations"): for each run
and k = 0..L the MLM score of the fine-tuned model whose top k encoder layers were reset to
the pre-trained weights (k = L is the pre-trained model itself). Runs are split into failed
and successful by the failure rule of :mod:`stabstat.analysis.selection` (on the dev metric),
and per k the analysis gives a statistic over runs with a bootstrap band, the difference
failed - successful with its CI, and per group the smallest k from which on the statistic
stays within ``within`` (relative) of the pre-trained model's score: how many top layers
have to be reset before the run's MLM ability is back.

RNG salts (``Settings.rng``): 21 the bands (one per group), 22 the differences (one per k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.results import AnalysisResult, Interval, Row, result_settings
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = [
    "PROBE_METRICS", "PROBE_SPLIT_PATTERN", "ForgettingDifference", "ForgettingPoint", "ForgettingRecovery",
    "ForgettingRunValue", "curve_frame", "forgetting", "forgetting_frame", "has_probe_results",
]

#: The forgetting probe's splits: ``probe.k<k>`` (DuckDB regular expression).
PROBE_SPLIT_PATTERN = r"^probe\.k[0-9]+$"
#: Scores the probe logs, and whether lower is better.
PROBE_METRICS: Mapping[str, bool] = {"mlm_perplexity": True, "mlm_loss": True, "mlm_accuracy": False}


@dataclass(frozen=True)
class ForgettingPoint(Row):
    """One point of a band: ``statistic`` of the probe metric over a group's runs at ``k``
    reset layers, with its bootstrap CI. ``outcome``: failed / successful / unknown."""

    outcome: str
    key: Mapping[str, Any]
    k: int
    layers: int
    n_runs: int
    value: Interval
    ci_method: str

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, **self.key, "k": self.k, "layers": self.layers, "n_runs": self.n_runs,
                **self.value.fields("value"), "ci_method": self.ci_method}


@dataclass(frozen=True)
class ForgettingDifference(Row):
    """Statistic of the failed runs minus that of the successful runs at ``k``, bootstrap CI."""

    key: Mapping[str, Any]
    k: int
    diff: Interval
    ci_method: str
    n_a: int
    n_b: int

    test = "forgetting_difference"
    a = "failed"
    b = "successful"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, **self.key, "k": self.k, "a": self.a, "b": self.b,
                "estimate": self.diff.estimate, "ci_low": self.diff.ci_low, "ci_high": self.diff.ci_high,
                "ci_method": self.ci_method, "n_a": self.n_a, "n_b": self.n_b}


@dataclass(frozen=True)
class ForgettingRecovery(Row):
    """Per group: the pre-trained score (k = L; median over the runs), the score at k = 0, and
    ``recovered_at``: the smallest k from which on the group's statistic stays within
    ``within`` of the pre-trained score (None when even k = L - 1 is not)."""

    outcome: str
    key: Mapping[str, Any]
    n_runs: int
    layers: int
    pretrained: float
    at_k0: float
    recovered_at: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, **self.key, "n_runs": self.n_runs, "layers": self.layers,
                "pretrained": self.pretrained, "at_k0": self.at_k0, "recovered_at": self.recovered_at}


@dataclass(frozen=True)
class ForgettingRunValue(Row):
    """One run's probe score at ``k``."""

    run_id: str
    key: Mapping[str, Any]
    outcome: str
    k: int
    value: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.key, "outcome": self.outcome, "k": self.k, "value": self.value}


# --------------------------------------------------------------------------- data


def has_probe_results(store: Store, run_ids: Sequence[str] | None = None) -> bool:
    """Whether any (of the given) runs has forgetting-probe evaluations."""
    sql = "SELECT count(*) FROM evals WHERE regexp_matches(split, ?)"
    params: list[Any] = [PROBE_SPLIT_PATTERN]
    if run_ids is not None:
        sql += " AND run_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(run_ids))
    # fetchall: a fetchone would leave the result open, and DuckDB refuses the next query on it
    return bool(store.con.execute(sql, params).fetchall()[0][0])


def _probe_values(store: Store, ids: list[str], metric: str) -> pl.DataFrame:
    """``run_id, k, value``: the metric at each k, from the run's last probe evaluation."""
    from stabstat.store import fetch_frame

    return fetch_frame(store.con, """
        SELECT run_id, CAST(substr(split, 8) AS INTEGER) AS k, arg_max_null(value, step) AS value
        FROM evals
        WHERE regexp_matches(split, ?) AND metric = ? AND run_id IN (SELECT unnest(?::VARCHAR[]))
        GROUP BY run_id, split ORDER BY run_id, k""", [PROBE_SPLIT_PATTERN, metric, ids])


# --------------------------------------------------------------------------- the analysis


def forgetting(store: Store, *, by: str | None = None, selection: Selection | None = None,
               settings: Settings | None = None, metric: str = "mlm_perplexity", statistic: str = "median",
               within: float = 0.1) -> AnalysisResult:
    """Probe score against the number of top layers reset, failed vs successful runs.

    ``selection`` picks the runs and the dev metric that decides failure (as every analysis);
    ``metric`` is the probe's score (``mlm_perplexity``, ``mlm_loss`` or ``mlm_accuracy``);
    ``statistic`` (``median``, ``mean``, ``iqm`` ...) is taken over the runs of a group at each k.

    Raises
    ------
    SelectionError
        No selected run has probe results (the message says how to get them), or an unknown
        probe metric.
    """
    runset = select_runs(store, [by] if by else [], selection=selection)
    return forgetting_frame(store, runset, settings or Settings(), metric=metric, statistic=statistic,
                            within=within)


def forgetting_frame(store: Store, runset: RunSet, settings: Settings, *, metric: str = "mlm_perplexity",
                     statistic: str = "median", within: float = 0.1) -> AnalysisResult:
    """:func:`forgetting` over an already selected :class:`RunSet` (its ``by`` groups the runs)."""
    import polars as pl

    if metric not in PROBE_METRICS:
        raise SelectionError(f"--metric {metric!r}: not a probe score; use one of {', '.join(PROBE_METRICS)}")
    if statistic not in S.STATISTICS:
        raise SelectionError(f"--statistic {statistic!r}: use one of {', '.join(S.STATISTICS)}")
    if not (math.isfinite(within) and within >= 0):
        raise SelectionError(f"--within {within!r}: give a relative distance >= 0, e.g. 0.1 for 10%")
    by = list(runset.by)
    frame = runset.frame
    values = _probe_values(store, frame["run_id"].to_list(), metric)
    if not values.height:
        raise SelectionError("no forgetting-probe results for the selected runs (evals of split probe.k<k>); "
                             "train with probe = [\"forgetting\"] in the sweep's [config] and a checkpoint "
                             "with an MLM head (README: The forgetting probe)")
    runs = (frame.select(["run_id", "failed", *by]).join(values, on="run_id", how="inner")
            .with_columns(outcome=pl.when(pl.col("failed").is_null()).then(pl.lit("unknown"))
                          .when(pl.col("failed")).then(pl.lit("failed")).otherwise(pl.lit("successful"))))
    warnings = list(runset.warnings)
    missing = frame.height - runs["run_id"].n_unique()
    if missing:
        warnings.append(f"{missing} run(s) have no probe results and are left out")
    depths = runs.group_by("run_id").agg(pl.col("k").max().alias("layers"))
    if depths["layers"].n_unique() > 1:
        warnings.append("runs differ in their number of layers (" + ", ".join(
            map(str, sorted(depths["layers"].unique().to_list()))) + "): models of different depth are pooled")
    runs = runs.join(depths, on="run_id")
    groups, recovery = _bands(runs, by, settings, metric, statistic, within)
    tests = _differences(runs, by, settings, statistic)
    n_min = min((g.n_runs for g in groups), default=0)
    warnings += S.seed_warnings(n_min, purpose="the bands of the smallest group")
    sections: dict[str, Sequence[Row]] = {"recovery": recovery, "runs": [
        ForgettingRunValue(d["run_id"], {c: d[c] for c in by}, d["outcome"], d["k"], d["value"])
        for d in runs.sort(["run_id", "k"]).to_dicts()]}
    return AnalysisResult("forgetting", tuple(by), groups, tests,
                          result_settings(runset, settings, "forgetting", probe_metric=metric,
                                          statistic=statistic, within=within,
                                          lower_is_better=PROBE_METRICS[metric]),
                          warnings, sections)


def _group_keys(runs: pl.DataFrame, cols: list[str]) -> list[tuple[Any, ...]]:
    keys = runs.select(cols).unique().rows()
    return sorted(keys, key=lambda t: tuple(str(v) for v in t))


def _bands(runs: pl.DataFrame, by: list[str], cfg: Settings, metric: str, statistic: str, within: float
           ) -> tuple[list[ForgettingPoint], list[ForgettingRecovery]]:
    """Per (group, k) the statistic and its CI; per group the recovery summary."""
    import polars as pl

    points: list[ForgettingPoint] = []
    recovery: list[ForgettingRecovery] = []
    lower = PROBE_METRICS[metric]
    for gi, key in enumerate(_group_keys(runs, [*by, "outcome"])):
        part = runs.filter(pl.all_horizontal(pl.col(c).eq_missing(v) for c, v in zip([*by, "outcome"], key, strict=True)))
        keyd = dict(zip(by, key[:-1], strict=True))
        ks = sorted(part["k"].unique().to_list())
        samples = [_finite(part.filter(pl.col("k") == k)["value"]) for k in ks]
        results = S.bootstrap_groups(samples, statistic=statistic, method=cfg.ci_method, resamples=cfg.resamples,
                                     confidence=cfg.confidence, rng=cfg.rng(21, gi))
        layers = int(part["layers"].max())  # type: ignore[arg-type]
        for k, x, r in zip(ks, samples, results, strict=True):
            points.append(ForgettingPoint(key[-1], keyd, int(k), layers, int(x.size), Interval.of(r), r.method))
        est = {int(k): r.estimate for k, r in zip(ks, results, strict=True)}
        ref = float(np.median(_finite(part.filter(pl.col("k") == pl.col("layers"))["value"]))) \
            if part.filter(pl.col("k") == pl.col("layers")).height else math.nan
        recovery.append(ForgettingRecovery(key[-1], keyd, int(part["run_id"].n_unique()), layers, ref,
                                           est.get(0, math.nan), _recovered_at(est, ref, layers, lower, within)))
    return points, recovery


def _recovered_at(est: Mapping[int, float], ref: float, layers: int, lower: bool, within: float) -> int | None:
    """Smallest k < L such that the estimate at every k' in [k, L) is within ``within`` of ``ref``."""
    if not math.isfinite(ref):
        return None
    ok = (lambda v: v <= ref * (1 + within)) if lower else (lambda v: v >= ref * (1 - within))
    found: int | None = None
    for k in range(layers - 1, -1, -1):
        v = est.get(k, math.nan)
        if not (math.isfinite(v) and ok(v)):
            break
        found = k
    return found


def _differences(runs: pl.DataFrame, by: list[str], cfg: Settings, statistic: str) -> list[ForgettingDifference]:
    """Failed minus successful at each k, per level of ``by``."""
    import polars as pl

    tests: list[ForgettingDifference] = []
    levels = _group_keys(runs, by) if by else [()]
    for li, level in enumerate(levels):
        part = runs.filter(pl.all_horizontal(pl.col(c).eq_missing(v) for c, v in zip(by, level, strict=True))) if by else runs
        fa, su = part.filter(pl.col("outcome") == "failed"), part.filter(pl.col("outcome") == "successful")
        if not (fa.height and su.height):
            continue
        for k in sorted(set(fa["k"].to_list()) & set(su["k"].to_list())):
            a = _finite(fa.filter(pl.col("k") == k)["value"])
            b = _finite(su.filter(pl.col("k") == k)["value"])
            if a.size < 2 or b.size < 2:
                continue
            d = S.bootstrap_diff(a, b, statistic=statistic, method=cfg.ci_method, resamples=cfg.resamples,
                                 confidence=cfg.confidence, rng=cfg.rng(22, li, int(k)))
            tests.append(ForgettingDifference(dict(zip(by, level, strict=True)), int(k), Interval.of(d), d.method,
                                              int(a.size), int(b.size)))
    return tests


def _finite(col: pl.Series) -> np.ndarray:
    x = col.drop_nulls().to_numpy().astype(np.float64)
    return x[np.isfinite(x)]


def curve_frame(result: AnalysisResult) -> pl.DataFrame:
    """The frame :func:`stabstat.charts.forgetting_curves` draws, from a ``forgetting`` result:
    ``status`` (failed/successful; unknown runs are left out), ``k``, ``value``, ``ci_low``,
    ``ci_high``, ``n_runs``, ``reference`` (the group's pre-trained score) and, when the result
    is split ``by`` factors, ``panel`` (their levels as text)."""
    import polars as pl

    refs = {(r.outcome, tuple(sorted(r.key.items()))): r.pretrained for r in result.sections["recovery"]
            if isinstance(r, ForgettingRecovery)}
    rows = []
    for p in result.groups:
        if not isinstance(p, ForgettingPoint) or p.outcome == "unknown":
            continue
        row: dict[str, Any] = {"status": p.outcome, "k": p.k, "value": p.value.estimate, "ci_low": p.value.ci_low,
                               "ci_high": p.value.ci_high, "n_runs": p.n_runs,
                               "reference": refs.get((p.outcome, tuple(sorted(p.key.items()))), math.nan)}
        if p.key:
            row["panel"] = ", ".join(f"{k}={v}" for k, v in p.key.items())
        rows.append(row)
    schema = {"status": pl.String, "k": pl.Int64, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "n_runs": pl.Int64, "reference": pl.Float64} | ({"panel": pl.String} if any("panel" in r for r in rows)
                                                              else {})
    return pl.DataFrame(rows, schema=schema)
