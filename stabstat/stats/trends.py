"""Trends of failure in a numeric factor: logistic regression (GLM Binomial, logit link).

``failed`` is a ``(n,)`` boolean per run, factors are ``(n,)`` numeric values; results are
:class:`TrendResult` (odds ratio per unit, or per doubling with ``transform='log2'``).
statsmodels is imported on first use (CLI start-up time). The separation-robust
permutation test of a trend is :func:`stabstat.stats.permutation.trend_permutation_test`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats import special
from stabstat.stats._common import DEFAULT_CONFIDENCE, FloatArray
from stabstat.stats.proportions import rate_interval
from stabstat.stats.results import RateResult, TrendResult


def _transform(x: FloatArray, transform: str, name: str) -> FloatArray:
    if transform == "log2":
        if np.any(x <= 0):
            raise ValueError(f"factor {name!r} has values <= 0; log2 needs positive values "
                             "(use transform='none')")
        return np.log2(x)
    if transform == "none":
        return x
    raise ValueError(f"transform must be 'log2' or 'none', got {transform!r}")


def _separated(x: FloatArray, y: NDArray[np.bool_]) -> bool:
    """Complete or quasi-complete separation of a binary y by one numeric x."""
    if y.all() or not y.any():
        return True
    f, s = x[y], x[~y]
    return bool(f.max() <= s.min() or s.max() <= f.min())


def _levels(x: NDArray[Any], y: NDArray[np.bool_], confidence: float) -> tuple[tuple[Any, RateResult], ...]:
    out = []
    for lv in np.unique(x):
        m = x == lv
        item = lv.item() if hasattr(lv, "item") else lv
        out.append((item, rate_interval(int(y[m].sum()), int(m.sum()), confidence=confidence)))
    return tuple(out)


def logistic_regression(
    factors: Mapping[str, ArrayLike],
    failed: ArrayLike,
    *,
    transforms: Mapping[str, str] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[TrendResult]:
    """Logistic regression of failure on one or more numeric factors (GLM Binomial, logit).

    factors: name -> ``(n,)`` numeric values; failed: ``(n,)`` booleans. transforms: name ->
    ``'log2'`` (odds ratio per doubling, for sizes such as n_train or max_steps) or
    ``'none'`` (per unit); default ``'none'``. Returns one :class:`TrendResult` per factor
    (each adjusted for the others). With perfect or quasi-perfect separation the MLE does
    not exist: results get ``separation=True``, NaN estimates and a warning; the per-level
    Wilson intervals (``levels``, for the first factor) remain.
    """
    import statsmodels.api as sm

    names = list(factors)
    if not names:
        raise ValueError("logistic_regression needs at least one factor")
    y = np.asarray(failed, dtype=bool).reshape(-1)
    tf = {nm: (transforms or {}).get(nm, "none") for nm in names}
    raw = {nm: np.asarray(factors[nm], dtype=np.float64).reshape(-1) for nm in names}
    for nm in names:
        if raw[nm].size != y.size:
            raise ValueError(f"factor {nm!r} has {raw[nm].size} values but failed has {y.size}")
    cols = [_transform(raw[nm], tf[nm], nm) for nm in names]
    n, k = int(y.size), int(y.sum())
    notes: list[str] = []
    separated = False
    if k == 0 or k == n:
        separated = True
        notes.append(f"{'no' if k == 0 else 'every'} run failed: the odds ratio is not estimable")
    elif any(np.unique(c).size < 2 for c in cols):
        separated = True
        notes.append("a factor has a single value in the selection: no trend can be estimated")
    elif len(cols) == 1 and _separated(cols[0], y):
        separated = True
        notes.append("perfect separation: failures and successes do not overlap in "
                     f"{names[0]}; the odds ratio is infinite, see the per-level intervals")
    z = float(special.ndtri(1 - (1 - confidence) / 2))
    levels = _levels(raw[names[0]], y, confidence)
    nan_results = [
        TrendResult(nm, tf[nm], math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n, k,
                    True, confidence, tuple(o for o in names if o != nm),
                    levels if i == 0 else _levels(raw[nm], y, confidence), tuple(notes))
        for i, nm in enumerate(names)
    ]
    if separated:
        return nan_results
    design = sm.add_constant(np.column_stack(cols), has_constant="add")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.GLM(y.astype(np.float64), design, family=sm.families.Binomial()).fit()
        except Exception as exc:  # statsmodels raises on separation in some versions
            notes.append(f"the logistic fit failed ({type(exc).__name__}: {exc}); see the per-level intervals")
            return [TrendResult(**{**r.__dict__, "warnings": tuple(notes)}) for r in nan_results]
    fitted = np.asarray(fit.fittedvalues)
    sep_warn = any("separation" in str(w.message).lower() for w in caught)
    if sep_warn or np.any((fitted < 1e-8) | (fitted > 1 - 1e-8)):
        notes.append("(quasi-)perfect separation in the logistic fit: odds ratios are not "
                     "finite; see the per-level intervals")
        return [TrendResult(**{**r.__dict__, "warnings": tuple(notes)}) for r in nan_results]
    if not getattr(fit, "converged", True):
        notes.append("the logistic fit did not converge")
    params, bse, pvals = np.asarray(fit.params), np.asarray(fit.bse), np.asarray(fit.pvalues)
    out = []
    for i, nm in enumerate(names):
        b, se = float(params[i + 1]), float(bse[i + 1])
        out.append(TrendResult(
            nm, tf[nm], b, se, _exp(b), _exp(b - z * se), _exp(b + z * se),
            float(pvals[i + 1]), n, k, False, confidence, tuple(o for o in names if o != nm),
            levels if i == 0 else _levels(raw[nm], y, confidence), tuple(notes),
        ))
    return out


def logistic_trend(
    x: ArrayLike,
    failed: ArrayLike,
    *,
    factor: str = "x",
    transform: Literal["log2", "none"] | str = "none",
    confidence: float = DEFAULT_CONFIDENCE,
) -> TrendResult:
    """Logistic trend of failure (``(n,)`` bools) on one numeric factor ``x`` (``(n,)``).

    See :func:`logistic_regression`; ``transform='log2'`` gives the odds ratio per doubling.
    """
    return logistic_regression({factor: x}, failed, transforms={factor: transform},
                               confidence=confidence)[0]


def _exp(x: float) -> float:
    """``math.exp`` that gives inf instead of raising: an odds ratio per unit of a factor with
    tiny values (e.g. lr ~ 2e-5, transform "none") has a coefficient of ~1e5."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
