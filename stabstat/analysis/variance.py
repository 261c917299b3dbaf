"""``variance``: among successful runs, does the same training loss give the same metric?

Per group (all successful runs, or each level of ``by``): Pearson and Spearman
correlations of the metric with ``against`` (the final training loss or a numeric factor)
with bootstrap CIs, the OLS slope, and the metric's spread within equal-count bins of
``against``; the pooled within-bin SD over the group's SD (``within_to_total_sd``) near 1
means runs reaching the same loss still generalise differently (Mosbach et al. 2021, §6).

RNG salts (``Settings.rng``): 8 correlations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.levels import levels, subset
from stabstat.analysis.results import (
    AnalysisResult,
    Correlation,
    Interval,
    OlsSlope,
    Row,
    VarianceBin,
    VarianceFit,
    VarianceGroup,
    result_settings,
)
from stabstat.analysis.selection import RunSet, Selection, Settings, resolve_factor, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    from stabstat.store import Store

__all__ = ["variance", "variance_frame"]


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
        against = resolve_factor(store, against)
        names = [*names, against]
    runset = select_runs(store, names, selection=selection)
    by = runset.by[0] if by else None
    return variance_frame(runset, against=against, by=by, bins=bins, settings=settings or Settings())


def variance_frame(runset: RunSet, *, against: str = "train_loss", by: str | None = None, bins: int = 5,
                   settings: Settings | None = None) -> AnalysisResult:
    """:func:`variance` on an already selected :class:`RunSet` (``against`` and ``by`` are
    column names of its frame)."""
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
    groups: list[VarianceGroup] = []
    tests: list[Row] = []
    bin_rows: list[VarianceBin] = []
    for li, lv in enumerate(levels(base, by) if by else [None]):
        f = subset(base, by, lv) if by else base
        x = f[xcol].cast(pl.Float64).to_numpy()
        y = f["value"].to_numpy().astype(np.float64)
        key = {by: lv} if by else {}
        metric_sd = float(y.std(ddof=1)) if y.size > 1 else math.nan
        if x.size < 3:
            warnings.append(f"{'all' if not by else f'{by}={lv}'}: fewer than 3 successful runs with a "
                            f"{against}; no correlation")
            groups.append(VarianceGroup(key, int(x.size), metric_sd))
            continue
        # The same seed-count warning as compare's (a correlation of 3 runs can sit on its
        # interval's edge: the bootstrap has almost nothing to resample).
        warnings += [f"{'all' if not by else f'{by}={lv}'}: {w}"
                     for w in S.seed_warnings(int(x.size), purpose="a correlation")]
        correlations = [_correlation(kind, key, x, y, cfg, (8, li, k))
                        for k, kind in enumerate(("pearson", "spearman"))]
        ols = _ols(key, x, y, cfg.confidence)
        tests += [*correlations, ols]
        level_bins = _bins(key, x, y, against, bins)
        bin_rows += level_bins
        pooled = _pooled_sd(level_bins)
        fit = VarianceFit(correlations[0].r, correlations[1].r, ols.slope, ols.r_squared, pooled,
                          pooled / metric_sd if metric_sd else math.nan)
        groups.append(VarianceGroup(key, int(x.size), metric_sd, fit))
    return AnalysisResult("variance", (by,) if by else (), groups, tests,
                          result_settings(runset, cfg, "variance", against=against, bins=bins,
                                          runs="successful only", n_failed_left_out=n_failed,
                                          binning="equal-count bins by rank of " + against),
                          warnings, {"bins": bin_rows})


def _correlation(kind: str, key: Mapping[str, Any], x: np.ndarray, y: np.ndarray, cfg: Settings,
                 salt: tuple[int, ...]) -> Correlation:
    r = S.bootstrap_correlation(x, y, kind=kind, method=cfg.ci_method, resamples=cfg.resamples,
                                confidence=cfg.confidence, rng=cfg.rng(*salt))
    return Correlation(kind, key, Interval.of(r), r.method, int(x.size))


def _ols(key: Mapping[str, Any], x: np.ndarray, y: np.ndarray, confidence: float) -> OlsSlope:
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    lo, hi = fit.conf_int(alpha=1 - confidence)[1]
    return OlsSlope(key, Interval(float(fit.params[1]), float(lo), float(hi)), float(fit.pvalues[1]),
                    float(fit.rsquared), int(x.size))


def _bins(key: Mapping[str, Any], x: np.ndarray, y: np.ndarray, against: str, bins: int) -> list[VarianceBin]:
    """Equal-count bins by rank of ``x``: every bin holds runs with nearly the same loss."""
    k_bins = min(bins, x.size)
    order = np.argsort(x, kind="stable")
    bin_of = np.empty(x.size, dtype=int)
    bin_of[order] = (np.arange(x.size) * k_bins) // x.size
    out = []
    for b in range(k_bins):
        m = bin_of == b
        yb, xb = y[m], x[m]
        sd = float(yb.std(ddof=1)) if yb.size > 1 else math.nan
        out.append(VarianceBin(key, b + 1, int(m.sum()), against, float(xb.min()), float(xb.max()),
                               float(yb.mean()), float(yb.min()), float(yb.max()), sd))
    return out


def _pooled_sd(bins: list[VarianceBin]) -> float:
    """The metric's SD within bins, pooled over the bins with >= 2 runs (NaN when none)."""
    within = [(b.n_runs - 1, b.metric_sd**2) for b in bins if b.n_runs > 1]
    dof = sum(d for d, _ in within)
    return math.sqrt(sum(d * v for d, v in within) / dof) if dof else math.nan
