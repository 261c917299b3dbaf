"""``decompose``: where the variance of the metric comes from (seed factors + residual).

Per configuration (level of ``by``, or all runs) and per run set (``all`` runs with a value,
failed ones included, and ``successful`` runs only): the variance components of the metric over
the random factors present (:data:`SEED_FACTORS`: ``init_seed``, ``order_seed``,
``dropout_seed``, ``data_seed``, ``seed``) plus the residual, with their shares and pigeonhole
bootstrap CIs (levels resampled, never rows): :func:`stabstat.stats.variance_components`
(ANOVA for a balanced crossed design, REML otherwise; the bootstrap of an unbalanced design
evaluates Henderson's method I on each resample).

Which factors: a run without ``init_seed`` / ``order_seed`` / ``dropout_seed`` used ``seed``
for it (the runner's default), so a missing value is filled with the run's seed (``data_seed``
= ``"seed"`` likewise). Within a group a factor is left out (with a note) when it has one level,
when it splits the runs exactly as an earlier factor does (confounded: the two cannot be told
apart), or when every run has its own level (it is then the residual).

RNG salts (``Settings.rng``): 20 components.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.levels import levels, subset
from stabstat.analysis.results import AnalysisResult, Row, result_settings
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError
from stabstat.stats.components import METHODS, encode_levels

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["FAILURES_DOMINATE", "SEED_FACTORS", "ComponentRow", "DecomposeGroup", "component_shares", "decompose",
           "decompose_frame"]

#: Factors that are randomness, in the order they are reported.
SEED_FACTORS = ("init_seed", "order_seed", "dropout_seed", "data_seed", "seed")
#: Total variance with failed runs over that without, above which a warning says failures dominate.
FAILURES_DOMINATE = 2.0
RUN_SETS = ("all", "successful")


@dataclass(frozen=True)
class DecomposeGroup(Row):
    """One configuration and run set: the runs, the estimator and the total variance."""

    key: Mapping[str, Any]
    runs: str
    n_runs: int
    n_failed: int
    factors: tuple[str, ...]
    method: str | None
    balanced: bool | None
    mean: float
    total: float
    total_ci_low: float
    total_ci_high: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "runs": self.runs, "n_runs": self.n_runs, "n_failed": self.n_failed,
                "factors": list(self.factors), "method": self.method, "balanced": self.balanced,
                "mean": self.mean, "total_variance": self.total, "total_ci_low": self.total_ci_low,
                "total_ci_high": self.total_ci_high, "notes": list(self.notes)}


@dataclass(frozen=True)
class ComponentRow(Row):
    """One variance component of a configuration and run set (``component`` a factor or
    ``residual``): variance in squared metric units and its share of the total, with CIs."""

    key: Mapping[str, Any]
    runs: str
    component: str
    n_levels: int | None
    variance: float
    ci_low: float
    ci_high: float
    share: float
    share_ci_low: float
    share_ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "runs": self.runs, "component": self.component, "n_levels": self.n_levels,
                "variance": self.variance, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "sd": math.sqrt(max(self.variance, 0.0)), "share": self.share,
                "share_ci_low": self.share_ci_low, "share_ci_high": self.share_ci_high}


def decompose(store: Store, *, by: str | None = None, factors: Sequence[str] | None = None,
              selection: Selection | None = None, settings: Settings | None = None,
              method: str = "auto") -> AnalysisResult:
    """Variance components of the metric over the seed factors, per level of ``by``.

    factors: the random factors (default: those of :data:`SEED_FACTORS` in the store).
    method: ``auto`` (ANOVA when the design is balanced, else REML), ``anova``, ``reml`` or
    ``moments`` (Henderson's method I: fast on large unbalanced designs).
    """
    known = store.factors()
    wanted = list(factors) if factors else [f for f in SEED_FACTORS if f in known]
    if not wanted:
        raise SelectionError("no seed factors in the store (init_seed, order_seed, dropout_seed, data_seed, "
                             "seed); name the random factors with --factor")
    runset = select_runs(store, [by] if by else [], selection=selection, extra=wanted)
    return decompose_frame(runset, by=runset.by[0] if by else None, factors=wanted,
                           settings=settings or Settings(), method=method)


def decompose_frame(runset: RunSet, *, by: str | None, factors: Sequence[str], settings: Settings | None = None,
                    method: str = "auto") -> AnalysisResult:
    """:func:`decompose` on an already selected :class:`RunSet` (``factors`` are columns)."""
    cfg = settings or Settings()
    if method not in METHODS:
        raise SelectionError(f"--method {method!r}: choose {', '.join(METHODS)}")
    frame = _filled(runset.frame, factors)
    warnings = list(runset.warnings)
    groups: list[DecomposeGroup] = []
    rows: list[ComponentRow] = []
    for gi, lv in enumerate(levels(frame, by) if by else [None]):
        f = subset(frame, by, lv) if by else frame
        key = {by: lv} if by else {}
        totals = {}
        all_runs: tuple[DecomposeGroup, list[ComponentRow]] | None = None
        for si, runs in enumerate(RUN_SETS):
            same = runs == "successful" and _runs(f, "all").height == _runs(f, "successful").height
            if same and all_runs is not None:
                # no failed (nor unknown) run among those with a value: the same runs, the same numbers
                group = dataclasses.replace(all_runs[0], runs=runs)
                comps = [dataclasses.replace(c, runs=runs) for c in all_runs[1]]
            else:
                group, comps = _one(f, key, runs, factors, method, cfg, (20, gi, si))
                label = f"{by}={lv}: " if by else ""
                warnings += [f"{label}{runs} runs: {n}" for n in group.notes]
            all_runs = all_runs or (group, comps)
            groups.append(group)
            rows += comps
            totals[runs] = group.total
        n_failed = groups[-1].n_failed
        if n_failed and totals["successful"] > 0 and totals["all"] > FAILURES_DOMINATE * totals["successful"]:
            warnings.append(f"{f'{by}={lv}: ' if by else ''}failed runs dominate the variance: total "
                            f"{totals['all']:.3g} with the {n_failed} failed run(s), {totals['successful']:.3g} "
                            f"without ({totals['all'] / totals['successful']:.1f}x); read the successful runs' "
                            "components for where the rest comes from")
    return AnalysisResult("decompose", (by,) if by else (), groups, [],
                          result_settings(runset, cfg, "decompose", factors=list(factors), method=method,
                                          model="additive random effects of the seed factors + residual",
                                          intervals="percentile, pigeonhole bootstrap (levels resampled)"),
                          warnings, {"components": rows})


def _filled(frame: pl.DataFrame, factors: Sequence[str]) -> pl.DataFrame:
    """Seed streams left unset used the run's seed: fill them so (``data_seed = "seed"`` too)."""
    import polars as pl

    if "seed" not in frame.columns:
        return frame
    seed_text = pl.col("seed").cast(pl.Utf8)
    out = []
    for c in factors:
        if c in ("init_seed", "order_seed", "dropout_seed") and c in frame.columns:
            out.append(pl.col(c).cast(pl.Utf8).fill_null(seed_text).alias(c))
        elif c == "data_seed" and c in frame.columns:
            col = pl.col(c).cast(pl.Utf8)
            out.append(pl.when(col == "seed").then(seed_text).otherwise(col).alias(c))
    return frame.with_columns(out) if out else frame


def _usable(f: pl.DataFrame, factors: Sequence[str]) -> tuple[list[str], list[str]]:
    """The factors that can carry a component in these runs, and notes on those left out."""
    notes: list[str] = []
    keep: list[str] = []
    partitions: list[tuple[str, Any]] = []
    for c in factors:
        if c not in f.columns:
            continue
        vals = f[c].to_list()
        if any(v is None for v in vals):
            notes.append(f"{c} is missing for some runs: left out")
            continue
        codes, n_levels = encode_levels(vals)
        if n_levels < 2:
            continue
        if n_levels == len(vals):
            notes.append(f"every run has its own {c}: its variance is part of the residual")
            continue
        same = next((name for name, p in partitions if _same_partition(p, codes)), None)
        if same is not None:
            notes.append(f"{c} varies exactly as {same} does (confounded): reported as {same}")
            continue
        partitions.append((c, codes))
        keep.append(c)
    return keep, notes


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def _runs(f: pl.DataFrame, runs: str) -> pl.DataFrame:
    """The runs with a finite value (``all``), or those known not to have failed (``successful``)."""
    import polars as pl

    ok = f.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
    if runs == "successful":
        ok = ok.filter(pl.col("failed").not_() & pl.col("failed").is_not_null())
    return ok


def component_shares(runset: RunSet, factors: Sequence[str] | None = None, *, successful_only: bool = False,
                     settings: Settings | None = None, salt: tuple[int, ...] = (21,)) -> S.ComponentsResult:
    """Variance components of all the selected runs (one configuration), for ``stabstat
    check``'s ``variance_share`` claims: the result carries the bootstrap replicates of the
    shares (:meth:`~stabstat.stats.ComponentsResult.share_p_value`).

    Raises
    ------
    SelectionError
        No seed factor with repeated levels, or a design that leaves nothing to estimate.
    """
    cfg = settings or Settings()
    wanted = list(factors) if factors else [f for f in SEED_FACTORS if f in runset.frame.columns]
    ok = _runs(_filled(runset.frame, wanted), "successful" if successful_only else "all")
    keep, notes = _usable(ok, wanted)
    if not keep:
        raise SelectionError("no seed factor with repeated levels in the selected runs ("
                             + ("; ".join(notes) or "one run per seed") + "): cross init_seed x order_seed")
    try:
        return S.variance_components(ok["value"].to_numpy().astype(np.float64), {c: ok[c].to_list() for c in keep},
                                     resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.rng(*salt))
    except ValueError as exc:
        raise SelectionError(str(exc)) from None


def _one(f: pl.DataFrame, key: Mapping[str, Any], runs: str, factors: Sequence[str], method: str, cfg: Settings,
         salt: tuple[int, ...]) -> tuple[DecomposeGroup, list[ComponentRow]]:
    n_failed = int(f["failed"].fill_null(False).sum())
    ok = _runs(f, runs)
    keep, notes = _usable(ok, factors)
    y = ok["value"].to_numpy().astype(np.float64)
    if not keep:
        return _residual_only(y, key, runs, n_failed, notes, cfg, salt)
    try:
        res = S.variance_components(y, {c: ok[c].to_list() for c in keep}, method=method,
                                    resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.rng(*salt))
    except ValueError as exc:
        if method == "anova":
            where = "".join(f" of {k}={v}" for k, v in key.items())
            raise SelectionError(f"--method anova: the design of the {runs} runs{where} is not balanced (every "
                                 "combination of the factors' levels the same number of times; leaving failed runs "
                                 "out unbalances it); use --method auto (REML) or moments") from None
        notes.append(str(exc))
        return DecomposeGroup(key, runs, ok.height, n_failed, tuple(keep), None, None, float(y.mean()),
                              math.nan, math.nan, math.nan, tuple(notes)), []
    notes += list(res.warnings)
    group = DecomposeGroup(key, runs, res.n, n_failed, tuple(keep), res.method, res.balanced, res.mean, res.total,
                           res.total_ci_low, res.total_ci_high, tuple(notes))
    comps = [ComponentRow(key, runs, c.name, c.n_levels, c.variance, c.ci_low, c.ci_high, c.share,
                          c.share_ci_low, c.share_ci_high) for c in res.components]
    return group, comps


def _residual_only(y: np.ndarray, key: Mapping[str, Any], runs: str, n_failed: int, notes: list[str], cfg: Settings,
                   salt: tuple[int, ...]) -> tuple[DecomposeGroup, list[ComponentRow]]:
    """No factor to split by (e.g. one ``seed`` per run): the whole variance is residual,
    with the bootstrap CI of the SD (runs resampled: each run is its own level) squared."""
    if y.size < 2:
        notes.append(f"only {y.size} run(s): no variance")
        return DecomposeGroup(key, runs, int(y.size), n_failed, (), None, None,
                              float(y.mean()) if y.size else math.nan, math.nan, math.nan, math.nan, tuple(notes)), []
    notes = [n for n in notes if not n.startswith("every run has its own")]
    notes.append("no seed factor with repeated levels (one run per seed; cross init_seed x order_seed to split "
                 "the variance): all of it is residual")
    sd = S.bootstrap_ci(y, statistic="std", method=cfg.ci_method, resamples=cfg.resamples,
                        confidence=cfg.confidence, rng=cfg.rng(*salt))
    var, lo, hi = sd.estimate**2, sd.ci_low**2, sd.ci_high**2
    group = DecomposeGroup(key, runs, int(y.size), n_failed, (), "sample variance", None, float(y.mean()), var, lo, hi,
                           tuple(notes))
    return group, [ComponentRow(key, runs, "residual", None, var, lo, hi, 1.0, 1.0, 1.0)]
