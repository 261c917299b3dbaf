"""``failure_rate``: the failure rate per level of one factor, or per cell of two.

Groups (:class:`~stabstat.analysis.results.FailureRateGroup`): failures with a Wilson
interval (Clopper-Pearson at 0 or all). One factor: every pair's Newcombe difference with
a Fisher exact p. Numeric factors: the logistic trend of failure (odds ratio per doubling
or per unit), with two factors each adjusted for the other and also fitted at every level
of the other; under separation a permutation trend test gives the p-value. Pairs and trends
are two families of adjusted p-values.

RNG salts (``Settings.rng``): 6 the joint fit's permutation tests, 7 the per-level fits'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.levels import group_rate, levels, subset
from stabstat.analysis.results import (
    AnalysisResult,
    FailureCount,
    FailureRateDifference,
    FailureRateGroup,
    Interval,
    LogisticTrend,
    result_settings,
    with_adjusted,
)
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["failure_rate", "failure_rate_frame"]


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
    groups = _cells(frame, names, cfg.confidence)
    small = [g for g in groups if g.n_runs < S.MIN_SEEDS]
    if small:
        warnings.append(f"{len(small)} group(s) have fewer than {S.MIN_SEEDS} runs: at a 30% failure rate "
                        "such groups often show no failure at all")
    pair_tests = _pair_tests(frame, names[0], cfg.confidence) if len(names) == 1 else []
    trend_tests = _trend_tests(frame, names, transform, cfg)
    for t in trend_tests:
        if t.fit.separation:
            warnings.append(f"trend of failure in {t.factor}"
                            + (f" at {t.at}" if t.at else "") + ": " + "; ".join(t.fit.warnings))
    tests = [*with_adjusted(pair_tests, cfg.correction), *with_adjusted(trend_tests, cfg.correction)]
    return AnalysisResult("failure_rate", tuple(names), groups, tests,
                          result_settings(runset, cfg, "failure_rate", transform=transform), warnings)


def _cells(frame: pl.DataFrame, names: list[str], confidence: float) -> list[FailureRateGroup]:
    """One row per level (cell) with its failures, in level order (nulls last)."""
    import polars as pl

    cells = frame.group_by(names, maintain_order=False).agg(
        pl.len().alias("n_runs"), pl.col("failed").sum().alias("n_failed")).sort(names, nulls_last=True)
    groups = []
    for row in cells.iter_rows(named=True):
        r = S.rate_interval(int(row["n_failed"]), int(row["n_runs"]), confidence=confidence)
        groups.append(FailureRateGroup({n: row[n] for n in names}, r.n, FailureCount.of(r), tuple(r.warnings)))
    return groups


def _pair_tests(frame: pl.DataFrame, name: str, confidence: float) -> list[FailureRateDifference]:
    """Newcombe difference and Fisher p of every pair of levels of ``name``."""
    lvs = levels(frame, name)
    rates = {lv: group_rate(subset(frame, name, lv), confidence) for lv in lvs}
    out = []
    for la, lb in combinations(lvs, 2):
        ra, rb = rates[la], rates[lb]
        nd = S.newcombe_diff(ra.k, ra.n, rb.k, rb.n, confidence=confidence)
        out.append(FailureRateDifference(la, lb, Interval(nd.estimate, nd.ci_low, nd.ci_high), ra.n, rb.n,
                                         nd.p_value))
    return out


def _is_numeric(frame: pl.DataFrame, col: str) -> bool:
    return frame[col].dtype.is_numeric() and frame[col].drop_nulls().n_unique() >= 2


def _auto_transform(x: np.ndarray, transform: str) -> str:
    if transform != "auto":
        return transform
    # Sizes and step counts (positive, spanning a factor of 4 or more) are compared per doubling.
    return "log2" if np.all(x > 0) and x.max() / x.min() >= 4 else "none"


def _trend_tests(frame: pl.DataFrame, names: list[str], transform: str, cfg: Settings) -> list[LogisticTrend]:
    """Logistic trends of failure in the numeric factors: one joint fit (each factor
    adjusted for the other), then, with two factors, each numeric one at every level of the
    other."""
    numeric = [n for n in names if _is_numeric(frame, n)]
    if not numeric:
        return []
    sub = frame.drop_nulls(numeric)
    y = sub["failed"].to_numpy().astype(bool)
    tf = {n: _auto_transform(sub[n].to_numpy().astype(np.float64), transform) for n in numeric}
    fits = S.logistic_regression({n: sub[n].to_numpy().astype(np.float64) for n in numeric}, y,
                                 transforms=tf, confidence=cfg.confidence)
    out = [_trend(fit, {}, sub[fit.factor].to_numpy().astype(np.float64), y, cfg, (6, k))
           for k, fit in enumerate(fits)]
    if len(names) == 2:
        for k, (n, other) in enumerate(((names[0], names[1]), (names[1], names[0]))):
            if n not in numeric:
                continue
            for li, lv in enumerate(levels(sub, other)):
                part = subset(sub, other, lv)
                if part[n].n_unique() < 2:
                    continue
                yy = part["failed"].to_numpy().astype(bool)
                xx = part[n].to_numpy().astype(np.float64)
                fit = S.logistic_trend(xx, yy, factor=n, transform=tf[n], confidence=cfg.confidence)
                out.append(_trend(fit, {other: lv}, xx, yy, cfg, (7, k, li)))
    return out


def _trend(fit: S.TrendResult, at: Mapping[str, Any], x: np.ndarray, y: np.ndarray, cfg: Settings,
           salt: tuple[int, ...]) -> LogisticTrend:
    """The row of one fit; under separation (with both outcomes and two x values) the
    p-value and direction come from a permutation trend test."""
    per = "doubling" if fit.transform == "log2" else "unit"
    if fit.separation and np.unique(x).size >= 2 and 0 < y.sum() < y.size:
        xt = np.log2(x) if fit.transform == "log2" else x
        pt = S.trend_permutation_test(xt, y, resamples=cfg.resamples, rng=cfg.rng(*salt))
        return LogisticTrend(fit.factor, at, fit, per, pt.p_value, "permutation trend test (separation: no Wald test)",
                             "increasing" if pt.statistic > 0 else "decreasing")
    direction = None if math.isnan(fit.coef) else ("increasing" if fit.coef > 0 else "decreasing")
    return LogisticTrend(fit.factor, at, fit, per, fit.p_value, "GLM Wald z", direction)
