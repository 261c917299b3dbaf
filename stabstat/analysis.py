"""Analyses over a store selection: compare, failure rate, variance, gradients.

Each analysis takes a :class:`stabstat.store.Store` (or, for the ``*_frame`` cores, a polars
frame of runs) plus a :class:`Selection` and :class:`Settings`, and returns an
:class:`AnalysisResult` with

* ``groups``: one dict per level of the factor(s), keyed by the factor's own name
  (``{"bias_correction": False, "n_runs": 25, "n_failed": 7, "failure_rate": 0.28, ...}``);
* ``tests``: one dict per test or between-group estimate (field ``test`` names it);
* ``settings``: the provenance: selection, metric, split, failure rule, CI method,
  resamples, seed, confidence, correction, package version;
* ``sections``: extra tables (e.g. ``bins`` for variance, ``runs`` and ``layers`` for
  gradients), each a list of dicts;
* ``warnings``: plain-language caveats (too few seeds, pooled tasks, separation, ...).

``to_dict()`` gives ``{"groups", "tests", "settings", "warnings", **sections}`` (what
``--format json`` prints); ``to_frame()`` the groups as a polars DataFrame.

The failure rule (Mosbach et al. 2021): a run *fails* when its metric (final by default)
is at or below its majority-class baseline (at or above, for a lower-is-better metric;
within :data:`BASELINE_TOLERANCE`), or
when it diverged, or when it has no value for the metric. ``Selection.baseline`` replaces
the stored majority with one value (same "at or below" rule); ``Selection.fail_below``
fails runs strictly below a value instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import __version__
from stabstat import stats as S
from stabstat.errors import QueryError, SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = [
    "STATUSES_EXCLUDED",
    "AnalysisResult",
    "RunSet",
    "Selection",
    "Settings",
    "compare",
    "compare_frame",
    "failure_rate",
    "failure_rate_frame",
    "gradients",
    "select_runs",
    "variance",
    "variance_frame",
]

#: Run statuses left out unless ``Selection.include_incomplete``: a run still running or
#: interrupted was not trained to the end, and ``failed`` (an exception) is usually the
#: infrastructure, not the recipe. Diverged runs stay in (and count as failed).
STATUSES_EXCLUDED = ("running", "interrupted", "failed")
#: "At or below the baseline" allows this much rounding difference.
BASELINE_TOLERANCE = 1e-9
#: Statistics reported per group by ``compare``.
GROUP_STATISTICS = ("mean", "std", "median", "iqm", "max")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Selection:
    """Which runs and which number per run.

    filters: ``key=value`` strings (or a mapping) over factor columns, all must hold.
    where: extra SQL condition over the ``runs`` table's columns (trusted SQL).
    metric / split: default the task's main metric (``accuracy`` when evaluated, else the
    first of ``task.metrics``) and split ``dev`` (or the only split).
    at: ``final`` (value at the last evaluation) or ``best`` (best over evaluations).
    baseline / fail_below: failure thresholds overriding the stored majority baseline.
    include_incomplete: keep runs whose status is in :data:`STATUSES_EXCLUDED`.
    """

    filters: tuple[str, ...] | Mapping[str, Any] = ()
    where: str | None = None
    metric: str | None = None
    split: str | None = None
    at: str = "final"
    baseline: float | None = None
    fail_below: float | None = None
    include_incomplete: bool = False

    def describe(self) -> dict[str, Any]:
        filters = dict(self.filters) if isinstance(self.filters, Mapping) else list(self.filters)
        return {"filters": filters, "where": self.where, "at": self.at,
                "include_incomplete": self.include_incomplete}


@dataclass(frozen=True)
class Settings:
    """How the statistics are computed (recorded in every result)."""

    resamples: int = S.DEFAULT_RESAMPLES
    seed: int = S.DEFAULT_SEED
    ci_method: str = "bca"
    confidence: float = S.DEFAULT_CONFIDENCE
    correction: str = "holm"

    def describe(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "ci_method": self.ci_method,
                "confidence": self.confidence, "correction": self.correction}

    def rng(self, *salt: int) -> np.random.Generator:
        """A generator for one sub-computation: the seed plus a fixed salt, so results do
        not depend on which other statistics were computed before."""
        return np.random.default_rng([self.seed, *salt])


@dataclass
class AnalysisResult:
    """The result of one analysis; see the module docstring for the fields."""

    analysis: str
    by: tuple[str, ...]
    groups: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "by": list(self.by), "groups": self.groups,
                "tests": self.tests, "settings": self.settings, "warnings": self.warnings,
                **self.sections}

    def to_frame(self, section: str = "groups") -> pl.DataFrame:
        """``groups`` (default), ``tests`` or a section as a polars DataFrame."""
        import polars as pl

        rows = self.groups if section == "groups" else self.tests if section == "tests" else self.sections[section]
        flat = [{k: _flat(v) for k, v in r.items()} for r in rows]
        if not flat:
            return pl.DataFrame()
        try:
            return pl.DataFrame(flat, infer_schema_length=None)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            # Columns mixing types (e.g. a factor level and a label): fall back to text.
            return pl.DataFrame([{k: None if v is None else str(v) for k, v in r.items()} for r in flat],
                                infer_schema_length=None)


def _flat(v: Any) -> Any:
    """A table cell: lists of scalars joined with ", ", nested values as JSON text."""
    import json

    if isinstance(v, dict) or (isinstance(v, (list, tuple)) and any(isinstance(x, (dict, list)) for x in v)):
        return json.dumps(v, default=str, sort_keys=True)
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return v


@dataclass
class RunSet:
    """The selected runs: ``frame`` has one row per run with the columns ``run_id``,
    ``status``, one column per requested factor, ``seed`` (when a factor), ``task`` (when a
    factor), ``value`` (the metric), ``baseline``, ``failed`` (bool or null when no rule
    applies), ``train_loss_final``, ``diverged``. ``settings`` says how they were chosen."""

    frame: pl.DataFrame
    by: tuple[str, ...]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- selection


def _frame(store: Store, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
    """Run SQL on the store's connection and fetch the whole result as a polars frame."""
    from stabstat.store import fetch_frame

    return fetch_frame(store.con, sql, list(params) or None)


def _scalar(store: Store, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return [r[0] for r in store.con.execute(sql, list(params)).fetchall()]


def _selected_ids_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """SQL selecting ``runs`` rows of the selection (all columns) and its parameters."""
    cond, params = store.filter_sql(selection.filters)
    where = f" AND ({selection.where})" if selection.where else ""
    return f"SELECT * FROM runs WHERE ({cond}){where}", params


def _resolve_split_metric(store: Store, selection: Selection, ids_sql: str, params: list[Any]) -> tuple[str, str]:
    splits = _scalar(store, f"SELECT DISTINCT split FROM evals WHERE run_id IN (SELECT run_id FROM ({ids_sql})) "
                     "ORDER BY 1", params)
    if not splits:
        raise SelectionError("the selected runs have no evaluations (evals table is empty for them); "
                             "nothing to analyse")
    split = selection.split
    if split is None:
        split = "dev" if "dev" in splits else splits[0] if len(splits) == 1 else None
        if split is None:
            raise SelectionError(f"several splits and none is 'dev': pass --split (one of {', '.join(splits)})")
    elif split not in splits:
        raise SelectionError(f"unknown split {split!r}; splits of the selected runs: {', '.join(splits)}")
    metrics = _scalar(store, f"SELECT DISTINCT metric FROM evals WHERE split = ? AND run_id IN "
                      f"(SELECT run_id FROM ({ids_sql})) ORDER BY 1", [split, *params])
    metric = selection.metric
    if metric is None:
        if "accuracy" in metrics:
            metric = "accuracy"
        else:
            declared = _scalar(store, f"SELECT json_extract_string(task_info, '$.metrics[0]') FROM ({ids_sql}) "
                               "WHERE task_info IS NOT NULL", params)
            metric = next((m for m in declared if m in metrics), None)
            if metric is None:
                candidates = [m for m in metrics if "loss" not in m.lower()] or metrics
                metric = candidates[0]
    elif metric not in metrics:
        raise SelectionError(f"unknown metric {metric!r} on split {split!r}; metrics: {', '.join(metrics)}")
    return split, metric


def select_runs(store: Store, by: Sequence[str] = (), *, selection: Selection | None = None,
                extra: Sequence[str] = ()) -> RunSet:
    """The selected runs with their metric value and failure flag (see :class:`RunSet`).

    ``extra`` names further factors to carry as columns (not grouping factors).

    Raises
    ------
    SelectionError
        Unknown factor, split or metric (the message lists those that exist), a bad
        filter, or an empty selection.
    QueryError
        ``selection.where`` is not valid SQL over the runs table.
    """
    import duckdb
    import polars as pl

    sel = selection or Selection()
    if sel.at not in ("final", "best"):
        raise SelectionError(f"--at must be 'final' or 'best', got {sel.at!r}")
    if sel.baseline is not None and sel.fail_below is not None:
        raise SelectionError("give either --baseline or --fail-below, not both")
    factors = store.factors()
    by_cols = []
    for name in by:
        store.quote_factor(name)  # raises SelectionError listing the factors
        by_cols.append(name if name in factors else next(f for f in factors if f.lower() == name.lower()))
    ids_sql, params = _selected_ids_sql(store, sel)
    try:
        n_sel = _scalar(store, f"SELECT count(*) FROM ({ids_sql})", params)[0]
    except duckdb.Error as exc:
        raise QueryError(f"--where {sel.where!r}: {str(exc).splitlines()[0]}") from None
    if n_sel == 0:
        total = _scalar(store, "SELECT count(*) FROM runs")[0]
        raise SelectionError(f"the selection matched no runs ({total} runs in {store.path}); "
                             "check --filter/--where (stabstat runs lists them)")
    split, metric = _resolve_split_metric(store, sel, ids_sql, params)
    for name in extra:
        store.quote_factor(name)
    carried = [name if name in factors else next(f for f in factors if f.lower() == name.lower()) for name in extra]
    extra = list(dict.fromkeys(c for c in ("seed", "task", *carried) if c in factors and c not in by_cols))
    q = store.quote_factor
    fcols = "".join(f", s.{q(c)} AS __f{i}" for i, c in enumerate(by_cols))
    xcols = "".join(f", s.{q(c)} AS __x_{c}" for c in extra)
    value_col = "final_value" if sel.at == "final" else "best_value"
    sql = f"""
        WITH s AS ({ids_sql}),
        m AS (SELECT * FROM run_summary WHERE split = ? AND metric = ?)
        SELECT s.run_id, s.status{fcols}{xcols},
               m.{value_col} AS value, m.final_step, m.higher_is_better, m.majority,
               t.train_loss_final, coalesce(t.diverged, s.status = 'diverged') AS diverged
        FROM s LEFT JOIN m USING (run_id) LEFT JOIN run_training t USING (run_id)
        ORDER BY s.run_id"""
    frame = _frame(store, sql, [*params, split, metric])
    warnings: list[str] = []
    excluded: dict[str, int] = {}
    if not sel.include_incomplete:
        for st in STATUSES_EXCLUDED:
            k = int((frame["status"] == st).sum())
            if k:
                excluded[st] = k
        frame = frame.filter(~pl.col("status").is_in(list(STATUSES_EXCLUDED)) | pl.col("status").is_null())
        if excluded:
            warnings.append("left out (status): " + ", ".join(f"{v} {k}" for k, v in excluded.items())
                            + "; include them with --include-incomplete")
    if frame.height == 0:
        raise SelectionError(f"no completed runs in the selection ({n_sel} matched, all with status "
                             f"{', '.join(excluded)}); use --include-incomplete to analyse them")
    hib_values = frame["higher_is_better"].drop_nulls().unique().to_list()
    higher = bool(hib_values[0]) if len(hib_values) == 1 else True
    if len(hib_values) > 1:
        warnings.append(f"runs disagree on whether higher {metric} is better; higher is assumed better")
    frame, rule, fw = _apply_failure_rule(frame, sel, higher, metric)
    warnings += fw
    rename = {f"__f{i}": c for i, c in enumerate(by_cols)} | {f"__x_{c}": c for c in extra}
    frame = frame.rename(rename)
    if "task" in frame.columns and "task" not in by_cols:
        tasks = frame["task"].drop_nulls().unique().sort().to_list()
        if len(tasks) > 1:
            warnings.append(f"the selection pools {len(tasks)} tasks ({', '.join(map(str, tasks))}); "
                            "add --filter task=NAME to analyse one")
    n_missing = int(frame["value"].is_null().sum())
    if n_missing:
        warnings.append(f"{n_missing} run(s) have no {split}/{metric} value: counted as failed, "
                        "left out of the metric statistics")
    settings = {
        "selection": sel.describe(),
        "metric": metric,
        "split": split,
        "at": sel.at,
        "higher_is_better": higher,
        "failure_rule": rule,
        "n_selected": n_sel,
        "excluded": excluded,
        "stabstat_version": __version__,
        "database": str(store.path),
    }
    return RunSet(frame, tuple(by_cols), settings, warnings)


def _apply_failure_rule(frame: pl.DataFrame, sel: Selection, higher: bool, metric: str
                        ) -> tuple[pl.DataFrame, str, list[str]]:
    import polars as pl

    warnings: list[str] = []
    value = pl.col("value")
    worse_eq = "at or below" if higher else "at or above"
    if sel.fail_below is not None:
        thr = float(sel.fail_below)
        base = pl.lit(thr)
        bad = (value < thr) if higher else (value > thr)
        rule = f"{metric} {'below' if higher else 'above'} {thr:g} (--fail-below), or diverged, or no value"
    else:
        if sel.baseline is not None:
            base = pl.lit(float(sel.baseline))
            rule = f"{metric} {worse_eq} {float(sel.baseline):g} (--baseline), or diverged, or no value"
        else:
            base = pl.col("majority")
            rule = f"{metric} {worse_eq} the run's majority-class baseline, or diverged, or no value"
        # A tolerance: the metric and the majority score may be computed in different ways
        # (e.g. 146/277 as a mean of predictions vs as a count ratio) and differ in the last bit.
        bad = (value <= base + BASELINE_TOLERANCE) if higher else (value >= base - BASELINE_TOLERANCE)
    frame = frame.with_columns(baseline=base.cast(pl.Float64))
    failed = (
        pl.when(pl.col("diverged").fill_null(False)).then(True)
        .when(value.is_null()).then(True)
        .when(pl.col("baseline").is_null()).then(None)
        .otherwise(bad)
    )
    frame = frame.with_columns(failed=failed.cast(pl.Boolean))
    unknown = int(frame["failed"].is_null().sum())
    if unknown:
        warnings.append(f"{unknown} run(s) have no stored majority baseline for {metric}: failure unknown; "
                        "pass --baseline VALUE or --fail-below VALUE")
    return frame, rule, warnings


# --------------------------------------------------------------------------- helpers


def _levels(frame: pl.DataFrame, col: str) -> list[Any]:
    vals = frame[col].unique().to_list()
    present = [v for v in vals if v is not None]
    try:
        present.sort()
    except TypeError:
        present.sort(key=str)
    return present + ([None] if None in vals else [])


def _subset(frame: pl.DataFrame, col: str, level: Any) -> pl.DataFrame:
    import polars as pl

    return frame.filter(pl.col(col).is_null() if level is None else pl.col(col) == level)


def _values(frame: pl.DataFrame, *, successful_only: bool = False) -> np.ndarray:
    import polars as pl

    f = frame.filter(pl.col("failed").not_() & pl.col("failed").is_not_null()) if successful_only else frame
    v = f["value"].drop_nulls().to_numpy().astype(np.float64)
    return v[np.isfinite(v)]


def _settings(runset: RunSet, settings: Settings, analysis: str, **more: Any) -> dict[str, Any]:
    return {"analysis": analysis, "by": list(runset.by), **runset.settings, **settings.describe(), **more}


def _ci_fields(prefix: str, r: S.BootstrapResult) -> dict[str, Any]:
    return {prefix: r.estimate, f"{prefix}_ci_low": r.ci_low, f"{prefix}_ci_high": r.ci_high}


def _rate_fields(r: S.RateResult) -> dict[str, Any]:
    # No run with a known failure status (no baseline): n_failed is unknown, not 0.
    return {"n_failed": r.k if r.n else None, "failure_rate": r.rate, "failure_ci_low": r.ci_low,
            "failure_ci_high": r.ci_high, "failure_ci_method": r.method if r.n else None}


def _group_rate(frame: pl.DataFrame, confidence: float) -> S.RateResult:
    known = frame["failed"].drop_nulls()
    return S.rate_interval(int(known.sum()), int(known.len()), confidence=confidence)


def _pair_arrays(fa: pl.DataFrame, fb: pl.DataFrame, paired: bool | str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Values of two groups, aligned by seed when pairing applies (see ``compare``)."""
    import polars as pl

    def ok(f: pl.DataFrame) -> pl.DataFrame:
        return f.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())

    a, b = ok(fa), ok(fb)
    want = paired is True or (paired == "auto" and "seed" in a.columns)
    if want and "seed" in a.columns:
        sa, sb = a["seed"], b["seed"]
        if (sa.null_count() == 0 and sb.null_count() == 0 and sa.n_unique() == a.height
                and sb.n_unique() == b.height and set(sa.to_list()) == set(sb.to_list()) and a.height >= 2):
            a, b = a.sort("seed"), b.sort("seed")
            return a["value"].to_numpy(), b["value"].to_numpy(), True
    if paired is True:
        raise SelectionError("--paired needs both groups to have the same seeds, one run per seed")
    return a["value"].to_numpy(), b["value"].to_numpy(), False


# --------------------------------------------------------------------------- compare


def compare(store: Store, by: str, *, selection: Selection | None = None, settings: Settings | None = None,
            paired: bool | str = "auto", stratify: str | None = None) -> AnalysisResult:
    """Compare the levels of factor ``by``: per-level statistics with CIs and failure
    rates, pairwise differences with p-values (corrected), spread tests.

    paired: ``"auto"`` pairs two levels by ``seed`` when both have exactly the same seeds
    once each; ``True`` requires it; ``False`` never pairs.
    stratify: a factor (usually ``task``): each level also gets the mean and IQM over all
    its runs with a *stratified* bootstrap CI (seeds resampled within each stratum, as
    rliable): fields ``mean_stratified``, ``iqm_stratified`` and their ``_ci_low/_ci_high``.
    """
    runset = select_runs(store, [by], selection=selection, extra=[stratify] if stratify else [])
    return compare_frame(runset, settings=settings or Settings(), paired=paired, stratify=stratify)


def compare_frame(runset: RunSet, *, settings: Settings | None = None, paired: bool | str = "auto",
                  stratify: str | None = None) -> AnalysisResult:
    """:func:`compare` on an already selected :class:`RunSet` (one ``by`` factor)."""
    import polars as pl

    cfg = settings or Settings()
    if stratify is not None and stratify not in runset.frame.columns:
        raise SelectionError(f"--stratify {stratify!r}: not a column of the selected runs")
    (by,) = runset.by
    frame = runset.frame
    levels = _levels(frame, by)
    warnings = list(runset.warnings)
    groups: list[dict[str, Any]] = []
    per_level: list[tuple[Any, pl.DataFrame]] = [(lv, _subset(frame, by, lv)) for lv in levels]
    for gi, (lv, f) in enumerate(per_level):
        vals = _values(f)
        row: dict[str, Any] = {by: lv, "n_runs": f.height, "n_valid": int(vals.size)}
        rate = _group_rate(f, cfg.confidence)
        row.update(_rate_fields(rate))
        notes: list[str] = []
        boot = S.bootstrap_statistics(vals, GROUP_STATISTICS, method=cfg.ci_method, resamples=cfg.resamples,
                                      confidence=cfg.confidence, rng=cfg.rng(1, gi))
        for stat in GROUP_STATISTICS:
            r = boot[stat]
            if stat == "mean":
                row.update({"mean": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high})
                notes += list(r.warnings)
            else:
                row.update(_ci_fields(stat, r))
        if stratify is not None:
            strata = [_values(part) for _, part in sorted(
                f.filter(pl.col(stratify).is_not_null()).group_by(stratify), key=lambda kv: str(kv[0]))]
            strata = [x for x in strata if x.size]
            for k, stat in enumerate(("mean", "iqm")):
                sr = S.stratified_bootstrap(strata, statistic=stat, combine="pool", method=cfg.ci_method,
                                            resamples=cfg.resamples, confidence=cfg.confidence,
                                            rng=cfg.rng(10, gi, k))
                row.update(_ci_fields(f"{stat}_stratified", sr))
            row["n_strata"] = len(strata)
        ok = _values(f, successful_only=True)
        row["mean_successful"] = float(ok.mean()) if ok.size else math.nan
        row["std_successful"] = float(ok.std(ddof=1)) if ok.size > 1 else math.nan
        row["warnings"] = sorted(set(notes))
        groups.append(row)
        if notes:
            warnings.append(f"{by}={lv}: {notes[0]}")
    tests: list[dict[str, Any]] = []
    mean_tests: list[dict[str, Any]] = []
    rate_tests: list[dict[str, Any]] = []
    for (i, (la, fa)), (j, (lb, fb)) in combinations(enumerate(per_level), 2):
        a, b, is_paired = _pair_arrays(fa, fb, paired)
        if a.size == 0 or b.size == 0:
            continue
        # One set of draws per pair serves the mean difference, the SD ratio (all runs) and
        # the probability of improvement (common random numbers).
        pair_rng = cfg.rng(2, i, j)
        ca = S.draw_counts(pair_rng, cfg.resamples, a.size)
        cb = ca if is_paired else S.draw_counts(pair_rng, cfg.resamples, b.size)
        d = S.bootstrap_diff(a, b, statistic="mean", paired=is_paired, method=cfg.ci_method,
                             resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.seed, _counts=(ca, cb))
        p = S.permutation_test(a, b, statistic="mean", paired=is_paired, resamples=cfg.resamples,
                               rng=cfg.rng(3, i, j))
        mean_tests.append({"test": "mean_difference", "a": la, "b": lb, "estimate": d.estimate,
                           "ci_low": d.ci_low, "ci_high": d.ci_high, "ci_method": d.method, "paired": is_paired,
                           "n_a": int(a.size), "n_b": int(b.size), "p_value": p.p_value,
                           "p_method": "permutation" + (" (paired sign-flip)" if is_paired else "")})
        unpaired_counts = (ca, cb) if not is_paired else (ca, S.draw_counts(pair_rng, cfg.resamples, b.size))
        poi = S.probability_of_improvement(a, b, method=cfg.ci_method, resamples=cfg.resamples,
                                           confidence=cfg.confidence, rng=cfg.seed, _counts=unpaired_counts)
        tests.append({"test": "probability_of_improvement", "a": la, "b": lb, "estimate": poi.estimate,
                      "ci_low": poi.ci_low, "ci_high": poi.ci_high, "ci_method": poi.method})
        ra, rb = _group_rate(fa, cfg.confidence), _group_rate(fb, cfg.confidence)
        if ra.n and rb.n:
            nd = S.newcombe_diff(ra.k, ra.n, rb.k, rb.n, confidence=cfg.confidence)
            rate_tests.append({"test": "failure_rate_difference", "a": la, "b": lb, "estimate": nd.estimate,
                               "ci_low": nd.ci_low, "ci_high": nd.ci_high, "ci_method": "newcombe",
                               "n_a": ra.n, "n_b": rb.n, "p_value": nd.p_value, "p_method": "fisher exact"})
        for k, (runs_label, xa, xb) in enumerate((("all", a, b), ("successful", _values(fa, successful_only=True),
                                                                   _values(fb, successful_only=True)))):
            if xa.size >= 2 and xb.size >= 2:
                sr = S.bootstrap_diff(xa, xb, statistic="std", op="ratio", method=cfg.ci_method,
                                      resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.rng(5, i, j, k),
                                      _counts=unpaired_counts if k == 0 else None)
                tests.append({"test": "sd_ratio", "runs": runs_label, "a": la, "b": lb, "estimate": sr.estimate,
                              "ci_low": sr.ci_low, "ci_high": sr.ci_high, "ci_method": sr.method,
                              "n_a": int(xa.size), "n_b": int(xb.size)})
    for family in (mean_tests, rate_tests):
        adj = S.adjust_pvalues([t["p_value"] for t in family], cfg.correction)
        for t, pa in zip(family, adj, strict=True):
            t["p_adjusted"] = float(pa)
            t["correction"] = cfg.correction
    tests = mean_tests + rate_tests + tests
    for runs_label, succ in (("all", False), ("successful", True)):
        arrays = [_values(f, successful_only=succ) for _, f in per_level]
        if sum(x.size >= 2 for x in arrays) >= 2:
            bf = S.brown_forsythe(*arrays)
            tests.append({"test": "brown_forsythe", "runs": runs_label, "statistic": bf.statistic,
                          "p_value": bf.p_value, "df": list(bf.df) if bf.df else None,
                          "n": list(bf.n), "warnings": list(bf.warnings)})
    return AnalysisResult("compare", (by,), groups, tests,
                          _settings(runset, cfg, "compare", paired=str(paired), stratify=stratify,
                                    p_value_method="permutation test of the mean difference "
                                                   f"({cfg.resamples} permutations)"),
                          warnings)


# --------------------------------------------------------------------------- failure rate


def _is_numeric(frame: pl.DataFrame, col: str) -> bool:
    return frame[col].dtype.is_numeric() and frame[col].drop_nulls().n_unique() >= 2


def _auto_transform(x: np.ndarray, transform: str) -> str:
    if transform != "auto":
        return transform
    # Sizes and step counts (positive, spanning a factor of 4 or more) are compared per doubling.
    return "log2" if np.all(x > 0) and x.max() / x.min() >= 4 else "none"


def failure_rate(store: Store, by: str | Sequence[str], *, selection: Selection | None = None,
                 settings: Settings | None = None, transform: str = "auto") -> AnalysisResult:
    """Failure rate per level of one factor (or per cell of two), with Wilson/Clopper-Pearson
    intervals; pairwise Newcombe differences; logistic trend for numeric factors.

    With two factors (e.g. ``n_train`` and ``max_steps``) the logistic regression has both
    (each adjusted for the other), and each factor's trend is also fitted at every fixed
    level of the other: the paper's test of "small data" against "few iterations".
    transform: ``auto`` (log2 for positive factors spanning >= 4x, else per unit),
    ``log2`` or ``none``.
    """
    names = [by] if isinstance(by, str) else list(by)
    if not 1 <= len(names) <= 2:
        raise SelectionError("failure-rate takes one or two --by factors")
    runset = select_runs(store, names, selection=selection)
    return failure_rate_frame(runset, settings=settings or Settings(), transform=transform)


def failure_rate_frame(runset: RunSet, *, settings: Settings | None = None, transform: str = "auto") -> AnalysisResult:
    """:func:`failure_rate` on an already selected :class:`RunSet` (one or two factors)."""
    import polars as pl

    cfg = settings or Settings()
    names = list(runset.by)
    frame = runset.frame.filter(pl.col("failed").is_not_null())
    warnings = list(runset.warnings)
    if frame.height == 0:
        raise SelectionError("no run has a known failure status; pass --baseline VALUE or --fail-below VALUE")
    groups: list[dict[str, Any]] = []
    cells = frame.group_by(names, maintain_order=False).agg(
        pl.len().alias("n_runs"), pl.col("failed").sum().alias("n_failed")).sort(names, nulls_last=True)
    for row in cells.iter_rows(named=True):
        r = S.rate_interval(int(row["n_failed"]), int(row["n_runs"]), confidence=cfg.confidence)
        groups.append({**{n: row[n] for n in names}, "n_runs": r.n, **_rate_fields(r),
                       "warnings": list(r.warnings)})
    small = [g for g in groups if g["n_runs"] < S.MIN_SEEDS]
    if small:
        warnings.append(f"{len(small)} group(s) have fewer than {S.MIN_SEEDS} runs: at a 30% failure rate "
                        "such groups often show no failure at all")
    tests: list[dict[str, Any]] = []
    pair_tests: list[dict[str, Any]] = []
    if len(names) == 1:
        (name,) = names
        levels = _levels(frame, name)
        rates = {lv: _group_rate(_subset(frame, name, lv), cfg.confidence) for lv in levels}
        for la, lb in combinations(levels, 2):
            ra, rb = rates[la], rates[lb]
            nd = S.newcombe_diff(ra.k, ra.n, rb.k, rb.n, confidence=cfg.confidence)
            pair_tests.append({"test": "failure_rate_difference", "a": la, "b": lb, "estimate": nd.estimate,
                               "ci_low": nd.ci_low, "ci_high": nd.ci_high, "ci_method": "newcombe",
                               "n_a": ra.n, "n_b": rb.n, "p_value": nd.p_value, "p_method": "fisher exact"})
    trend_tests: list[dict[str, Any]] = []
    numeric = [n for n in names if _is_numeric(frame, n)]
    if numeric:
        sub = frame.drop_nulls(numeric)
        y = sub["failed"].to_numpy().astype(bool)
        tf = {n: _auto_transform(sub[n].to_numpy().astype(np.float64), transform) for n in numeric}
        fits = S.logistic_regression({n: sub[n].to_numpy().astype(np.float64) for n in numeric}, y,
                                     transforms=tf, confidence=cfg.confidence)
        for k, fit in enumerate(fits):
            trend_tests.append(_trend_dict(fit, {}, sub[fit.factor].to_numpy().astype(np.float64), y, cfg, (6, k)))
        if len(names) == 2:
            for k, (n, other) in enumerate(((names[0], names[1]), (names[1], names[0]))):
                if n not in numeric:
                    continue
                for li, lv in enumerate(_levels(sub, other)):
                    part = _subset(sub, other, lv)
                    if part[n].n_unique() < 2:
                        continue
                    yy = part["failed"].to_numpy().astype(bool)
                    xx = part[n].to_numpy().astype(np.float64)
                    fit = S.logistic_trend(xx, yy, factor=n, transform=tf[n], confidence=cfg.confidence)
                    trend_tests.append(_trend_dict(fit, {other: lv}, xx, yy, cfg, (7, k, li)))
        for t in trend_tests:
            if t["separation"]:
                warnings.append(f"trend of failure in {t['factor']}"
                                + (f" at {t['at']}" if t["at"] else "") + ": " + "; ".join(t["warnings"]))
    for family in (pair_tests, trend_tests):
        adj = S.adjust_pvalues([t["p_value"] for t in family], cfg.correction)
        for t, pa in zip(family, adj, strict=True):
            t["p_adjusted"] = float(pa)
            t["correction"] = cfg.correction
    tests = pair_tests + trend_tests
    return AnalysisResult("failure_rate", tuple(names), groups, tests,
                          _settings(runset, cfg, "failure_rate", transform=transform), warnings)


def _trend_dict(fit: S.TrendResult, at: dict[str, Any], x: np.ndarray, y: np.ndarray, cfg: Settings,
                salt: tuple[int, ...]) -> dict[str, Any]:
    d = fit.to_dict()
    levels = d.pop("levels")
    out = {"test": "logistic_trend", "factor": fit.factor, "at": at, **d, "per": "doubling" if fit.transform == "log2"
           else "unit", "p_method": "GLM Wald z", "levels": levels}
    if fit.separation and np.unique(x).size >= 2 and 0 < y.sum() < y.size:
        xt = np.log2(x) if fit.transform == "log2" else x
        pt = S.trend_permutation_test(xt, y, resamples=cfg.resamples, rng=cfg.rng(*salt))
        out["p_value"] = pt.p_value
        out["p_method"] = "permutation trend test (separation: no Wald test)"
        out["direction"] = "increasing" if pt.statistic > 0 else "decreasing"
    else:
        out["direction"] = None if math.isnan(fit.coef) else ("increasing" if fit.coef > 0 else "decreasing")
    return out


# --------------------------------------------------------------------------- variance


def variance(store: Store, against: str = "train_loss", *, by: str | None = None, bins: int = 5,
             selection: Selection | None = None, settings: Settings | None = None) -> AnalysisResult:
    """Among successful runs: the dev metric against the final training loss (or a numeric
    factor): Pearson and Spearman correlation with bootstrap CIs, OLS slope, and the spread
    of the metric within ``bins`` equal-count bins of the training loss.

    A metric spread within bins close to the overall spread means runs that reach the same
    training loss still generalise differently (Mosbach et al. 2021, section 6).
    """
    names = [by] if by else []
    if against != "train_loss":
        store.quote_factor(against)
        names = [*names, against]
    runset = select_runs(store, names, selection=selection)
    return variance_frame(runset, against=against, by=by, bins=bins, settings=settings or Settings())


def variance_frame(runset: RunSet, *, against: str = "train_loss", by: str | None = None, bins: int = 5,
                   settings: Settings | None = None) -> AnalysisResult:
    """:func:`variance` on an already selected :class:`RunSet`."""
    import polars as pl

    cfg = settings or Settings()
    if bins < 1:
        raise SelectionError(f"--bins must be >= 1, got {bins}")
    xcol = "train_loss_final" if against == "train_loss" else against
    base = runset.frame.filter(pl.col("failed").not_() & pl.col("value").is_not_null()
                               & pl.col(xcol).is_not_null())
    base = base.filter(pl.col(xcol).cast(pl.Float64).is_finite() & pl.col("value").is_finite())
    warnings = list(runset.warnings)
    n_failed = int(runset.frame["failed"].fill_null(False).sum())
    levels = _levels(base, by) if by else [None]
    groups: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    bin_rows: list[dict[str, Any]] = []
    for li, lv in enumerate(levels):
        f = _subset(base, by, lv) if by else base
        x = f[xcol].cast(pl.Float64).to_numpy()
        y = f["value"].to_numpy().astype(np.float64)
        key = {by: lv} if by else {}
        row: dict[str, Any] = {**key, "n_runs": int(x.size), "metric_sd": float(y.std(ddof=1)) if y.size > 1 else math.nan}
        if x.size < 3:
            warnings.append(f"{'all' if not by else f'{by}={lv}'}: fewer than 3 successful runs with a "
                            f"{against}; no correlation")
            groups.append(row)
            continue
        for k, kind in enumerate(("pearson", "spearman")):
            r = S.bootstrap_correlation(x, y, kind=kind, method=cfg.ci_method, resamples=cfg.resamples,
                                        confidence=cfg.confidence, rng=cfg.rng(8, li, k))
            row.update(_ci_fields(kind, r))
            tests.append({"test": f"{kind}_correlation", **key, "estimate": r.estimate, "ci_low": r.ci_low,
                          "ci_high": r.ci_high, "ci_method": r.method, "n": int(x.size)})
        ols = _ols(x, y, cfg.confidence)
        row.update({"slope": ols["estimate"], "slope_ci_low": ols["ci_low"], "slope_ci_high": ols["ci_high"],
                    "r_squared": ols["r_squared"]})
        tests.append({"test": "ols_slope", **key, **ols})
        # Equal-count bins by rank of x: every bin holds runs with nearly the same loss.
        k_bins = min(bins, x.size)
        order = np.argsort(x, kind="stable")
        bin_of = np.empty(x.size, dtype=int)
        bin_of[order] = (np.arange(x.size) * k_bins) // x.size
        within = []
        for b in range(k_bins):
            m = bin_of == b
            yb, xb = y[m], x[m]
            sd = float(yb.std(ddof=1)) if yb.size > 1 else math.nan
            if yb.size > 1:
                within.append((yb.size - 1, sd**2))
            bin_rows.append({**key, "bin": b + 1, "n_runs": int(m.sum()), f"{against}_min": float(xb.min()),
                             f"{against}_max": float(xb.max()), "metric_mean": float(yb.mean()),
                             "metric_min": float(yb.min()), "metric_max": float(yb.max()),
                             "metric_range": float(yb.max() - yb.min()), "metric_sd": sd})
        dof = sum(d for d, _ in within)
        pooled = math.sqrt(sum(d * v for d, v in within) / dof) if dof else math.nan
        row["within_bin_sd"] = pooled
        row["within_to_total_sd"] = pooled / row["metric_sd"] if row["metric_sd"] else math.nan
        groups.append(row)
    return AnalysisResult("variance", (by,) if by else (), groups, tests,
                          _settings(runset, cfg, "variance", against=against, bins=bins,
                                    runs="successful only", n_failed_left_out=n_failed,
                                    binning="equal-count bins by rank of " + against),
                          warnings, {"bins": bin_rows})


def _ols(x: np.ndarray, y: np.ndarray, confidence: float) -> dict[str, Any]:
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    lo, hi = fit.conf_int(alpha=1 - confidence)[1]
    return {"estimate": float(fit.params[1]), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(fit.pvalues[1]), "r_squared": float(fit.rsquared), "n": int(x.size),
            "ci_method": "OLS t"}


# --------------------------------------------------------------------------- gradients


def gradients(store: Store, *, by: str | None = None, selection: Selection | None = None,
              settings: Settings | None = None, max_depth: int = 2, steps: int | None = None,
              collapse_factor: float = 10.0, plateau: float = 0.8) -> AnalysisResult:
    """The vanishing-gradient signature of failed runs (Mosbach et al. 2021, section 5).

    Per run: the *lower layers* are those with ``depth <= max_depth`` (0 = embeddings,
    1 = first encoder layer, ...); their combined norm per step is
    ``sqrt(sum of squared layer norms)``. ``ratio`` = median of that norm over the first
    ``steps`` logged steps (all when None) divided by its value at the first logged step.
    A run is *collapsed* when ``ratio <= 1 / collapse_factor`` while its training loss
    plateaus: the mean of its last logged losses is at least ``plateau`` times the mean of
    its first ones (windows: a quarter of the logged losses, at most 10 each). Runs without per-layer norms (e.g. HF Trainer logs) use the total
    ``grad_norm`` of the steps table instead (``source = "total"``).
    """
    runset = select_runs(store, [by] if by else [], selection=selection)
    cfg = settings or Settings()
    import polars as pl

    frame = runset.frame
    ids = frame["run_id"].to_list()
    step_cap = "" if steps is None else f" AND step <= {int(steps)}"
    con = store.con
    con.execute("CREATE OR REPLACE TEMP TABLE __sel_ids AS SELECT unnest(?::VARCHAR[]) AS run_id", [ids])
    try:
        layer = _frame(store, f"""
            WITH lg AS (SELECT * FROM layer_grads WHERE run_id IN (SELECT run_id FROM __sel_ids){step_cap}),
            lower AS (SELECT run_id, step, sqrt(sum(grad_norm * grad_norm)) AS norm
                      FROM lg WHERE depth <= ? GROUP BY run_id, step),
            firsts AS (SELECT run_id, arg_min(norm, step) AS first_norm FROM lower GROUP BY run_id)
            SELECT l.run_id, f.first_norm, median(l.norm) AS median_norm, count(*) AS n_steps, 'layers' AS source
            FROM lower l JOIN firsts f USING (run_id) GROUP BY l.run_id, f.first_norm""", [max_depth])
        total = _frame(store, f"""
            WITH st AS (SELECT run_id, step, grad_norm AS norm FROM steps
                        WHERE run_id IN (SELECT run_id FROM __sel_ids)
                          AND run_id NOT IN (SELECT DISTINCT run_id FROM layer_grads)
                          AND grad_norm IS NOT NULL AND isfinite(grad_norm){step_cap}),
            firsts AS (SELECT run_id, arg_min(norm, step) AS first_norm FROM st GROUP BY run_id)
            SELECT s.run_id, f.first_norm, median(s.norm) AS median_norm, count(*) AS n_steps, 'total' AS source
            FROM st s JOIN firsts f USING (run_id) GROUP BY s.run_id, f.first_norm""")
        # Start and end windows: the first and last quarter of the logged losses, at most 10
        # each (HF Trainer logs have few points; the windows must not overlap).
        losses = _frame(store, """
            WITH l AS (SELECT run_id, step, loss,
                              row_number() OVER (PARTITION BY run_id ORDER BY step) AS fwd,
                              row_number() OVER (PARTITION BY run_id ORDER BY step DESC) AS back,
                              greatest(1, least(10, count(*) OVER (PARTITION BY run_id) // 4)) AS k
                       FROM steps WHERE run_id IN (SELECT run_id FROM __sel_ids) AND loss IS NOT NULL)
            SELECT run_id, avg(loss) FILTER (WHERE fwd <= k) AS loss_start,
                   avg(loss) FILTER (WHERE back <= k) AS loss_end
            FROM l GROUP BY run_id""")
        per_depth = _frame(store, f"""
            WITH lg AS (SELECT * FROM layer_grads WHERE run_id IN (SELECT run_id FROM __sel_ids){step_cap}),
            firsts AS (SELECT run_id, layer, depth, arg_min(grad_norm, step) AS first_norm
                       FROM lg GROUP BY run_id, layer, depth)
            SELECT lg.run_id, lg.layer, lg.depth, median(lg.grad_norm) / nullif(f.first_norm, 0) AS ratio
            FROM lg JOIN firsts f USING (run_id, layer, depth)
            GROUP BY lg.run_id, lg.layer, lg.depth, f.first_norm""")
    finally:
        con.execute("DROP TABLE IF EXISTS __sel_ids")
    norms = pl.concat([layer, total], how="vertical_relaxed") if total.height else layer
    if norms.height == 0:
        raise SelectionError("the selected runs have neither per-layer gradient norms (layer_grads) nor a "
                             "total grad_norm in their steps; nothing to analyse")
    keep = ["run_id", "failed", *([by] if by else [])]
    runs = (frame.select(keep).join(norms, on="run_id", how="inner").join(losses, on="run_id", how="left")
            .with_columns(ratio=pl.col("median_norm") / pl.col("first_norm"),
                          loss_ratio=pl.col("loss_end") / pl.col("loss_start")))
    runs = runs.with_columns(
        plateau=(pl.col("loss_ratio") >= plateau).fill_null(False),
        collapsed=((pl.col("ratio") <= 1.0 / collapse_factor) & (pl.col("loss_ratio") >= plateau)).fill_null(False),
    ).sort("run_id")
    warnings = list(runset.warnings)
    missing = frame.height - runs.height
    if missing:
        warnings.append(f"{missing} run(s) have no gradient norms and are left out")
    if total.height:
        warnings.append(f"{total.height} run(s) have no per-layer norms: their total grad_norm is used")
    group_cols = (["failed"] + ([by] if by else []))
    groups: list[dict[str, Any]] = []
    for key, part in sorted(runs.group_by(group_cols), key=lambda kv: tuple(str(v) for v in kv[0])):
        key_d = dict(zip(group_cols, key, strict=True))
        ratio = part["ratio"].drop_nulls().to_numpy()
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        coll = S.rate_interval(int(part["collapsed"].sum()), part.height, confidence=cfg.confidence)
        groups.append({**key_d, "n_runs": part.height, "n_collapsed": coll.k, "collapse_rate": coll.rate,
                       "collapse_ci_low": coll.ci_low, "collapse_ci_high": coll.ci_high,
                       "median_ratio": float(np.median(ratio)) if ratio.size else math.nan,
                       "ratio_q25": float(np.quantile(ratio, 0.25)) if ratio.size else math.nan,
                       "ratio_q75": float(np.quantile(ratio, 0.75)) if ratio.size else math.nan,
                       "median_loss_ratio": _median(part["loss_ratio"].drop_nulls().to_numpy())})
    tests: list[dict[str, Any]] = []
    known = runs.filter(pl.col("failed").is_not_null())
    fa = known.filter(pl.col("failed"))
    su = known.filter(pl.col("failed").not_())
    if fa.height and su.height:
        ka, kb = int(fa["collapsed"].sum()), int(su["collapsed"].sum())
        p = S.fisher_exact(ka, fa.height, kb, su.height)
        tests.append({"test": "collapse_vs_failure", "a": "failed", "b": "successful",
                      "estimate": ka / fa.height - kb / su.height, "p_value": p,
                      "p_method": "fisher exact", "n_a": fa.height, "n_b": su.height})
        la = np.log10(fa["ratio"].drop_nulls().to_numpy())
        lb = np.log10(su["ratio"].drop_nulls().to_numpy())
        la, lb = la[np.isfinite(la)], lb[np.isfinite(lb)]
        if la.size >= 2 and lb.size >= 2:
            d = S.bootstrap_diff(la, lb, statistic="median", method=cfg.ci_method, resamples=cfg.resamples,
                                 confidence=cfg.confidence, rng=cfg.rng(9))
            tests.append({"test": "log10_ratio_median_difference", "a": "failed", "b": "successful",
                          "estimate": d.estimate, "ci_low": d.ci_low, "ci_high": d.ci_high,
                          "ci_method": d.method, "n_a": int(la.size), "n_b": int(lb.size)})
    layer_rows: list[dict[str, Any]] = []
    if per_depth.height:
        pdj = per_depth.join(frame.select("run_id", "failed"), on="run_id", how="inner")
        agg = (pdj.group_by(["depth", "layer", "failed"])
               .agg(pl.len().alias("n_runs"), pl.col("ratio").median().alias("median_ratio"))
               .sort(["depth", "layer", "failed"], nulls_last=True))
        layer_rows = agg.to_dicts()
    run_rows = runs.select(["run_id", *([by] if by else []), "failed", "source", "n_steps", "first_norm",
                            "median_norm", "ratio", "loss_start", "loss_end", "loss_ratio", "collapsed"]).to_dicts()
    return AnalysisResult("gradients", (by,) if by else (), groups, tests,
                          _settings(runset, cfg, "gradients", max_depth=max_depth, steps=steps,
                                    collapse_factor=collapse_factor, plateau=plateau,
                                    lower_layers=f"depth <= {max_depth}"),
                          warnings, {"runs": run_rows, "layers": layer_rows})


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan
