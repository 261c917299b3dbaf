"""Bootstrap machinery: count matrices, statistics from counts, jackknife, BCa intervals.

A bootstrap resample of ``n`` values is fully described by how often each value is
drawn: a column of counts summing to ``n``. We draw one ``(n, resamples)`` count matrix per
group size (``np.bincount`` over uniform indices, i.e. exact multinomial resampling) and
evaluate every statistic from counts without sorting any resample:

* mean and standard deviation are matrix products ``counts @ values``;
* order statistics (median, max) and the interquartile mean use the running sum of the
  counts over the *sorted* values: the k-th smallest resampled value is the first sorted
  value whose cumulative count reaches k, and the IQM's weights are the overlap of each
  value's block of ranks with the middle half.

Because the seeds of a group are exchangeable, the counts can be attached to the sorted
positions directly, so groups of the same size share one count matrix (common random
numbers: each group's bootstrap distribution is exact; their Monte-Carlo errors are
correlated). Differences between groups get their own independent draws, unless the caller
passes counts or replicates (``compare`` reuses each level's matrix in the pairs it is in, the
two levels of a pair always independent: :mod:`stabstat.analysis.compare` says why that stays
exact). The normal CDF and quantile of BCa come from :mod:`stabstat.stats.special` (no scipy).


The same statistics are also evaluated directly (:func:`compute_statistic`, the reference
path; :func:`iqm`); the two paths must agree (checked in ``tests/test_stats.py``).
``_intervals`` turns ``(G, R)`` replicates into percentile or BCa endpoints for ``G``
statistics at once; ``_result`` packs one into a :class:`BootstrapResult`.

References
----------
Efron (1987), Better bootstrap confidence intervals, JASA 82:171-185 (BCa).
Efron & Tibshirani (1993), An Introduction to the Bootstrap, ch. 14 (acceleration).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats import special
from stabstat.stats._common import STATISTICS, FloatArray, RNGLike, _as_rng
from stabstat.stats.results import BootstrapResult


def iqm(x: ArrayLike, axis: int = -1) -> FloatArray | float:
    """Interquartile mean: the mean of the middle 50% of the values.

    As rliable (``scipy.stats.trim_mean(x, 0.25)``): ``floor(0.25 * n)`` values are cut
    from each end of the sorted sample and the rest averaged.
    """
    arr = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = arr.shape[axis]
    k = int(0.25 * n)
    sliced = np.take(arr, np.arange(k, n - k), axis=axis)
    out = sliced.mean(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def compute_statistic(statistic: str, x: ArrayLike, axis: int = -1) -> Any:
    """Evaluate a named statistic along ``axis`` (plain numpy; the reference path)."""
    arr = np.asarray(x, dtype=np.float64)
    if statistic == "mean":
        return arr.mean(axis=axis)
    if statistic == "median":
        return np.median(arr, axis=axis)
    if statistic == "std":
        return arr.std(axis=axis, ddof=1) if arr.shape[axis] > 1 else np.full(
            np.delete(arr.shape, axis % arr.ndim), np.nan
        )
    if statistic == "iqm":
        return iqm(arr, axis=axis)
    if statistic == "max":
        return arr.max(axis=axis)
    raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")


#: Resamples counted per bincount in :func:`_draw_counts` (measured best at 256-512).
_COUNT_BLOCK = 256


def _draw_counts(rng: np.random.Generator, resamples: int, n: int | Sequence[int]) -> NDArray[Any]:
    """``(N, resamples)`` bootstrap counts: column r says how often each item is drawn.

    ``n`` is one sample size, or the sizes of several strata (tasks) drawn at once: items
    are then stacked stratum by stratum (N = sum of sizes) and each column's counts sum to
    the stratum size within every stratum. Item-major layout, so that running sums over
    items are row additions (fast in numpy). int16 whenever the counts fit.
    """
    sizes = [int(n)] if isinstance(n, (int, np.integer)) else [int(m) for m in n]
    total = sum(sizes)
    if len(set(sizes)) == 1:
        m = sizes[0]
        idx = rng.integers(0, m, size=(len(sizes), m, resamples))
        idx += (np.arange(len(sizes), dtype=np.int64) * m)[:, None, None]
        idx = idx.reshape(total, resamples)
    else:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        idx = np.concatenate([rng.integers(0, m, size=(m, resamples)) + offsets[t]
                              for t, m in enumerate(sizes)])
    counts = np.empty((total, resamples), dtype=np.int16 if max(sizes) < np.iinfo(np.int16).max else np.int64)
    # Counted in blocks of resamples: one bincount over all (total * resamples) cells
    # scatters its increments over a buffer far larger than the CPU caches; a block of
    # _COUNT_BLOCK columns (a few MB for a thousand items) stays in cache. 2x faster for
    # n >= 300; the same draws and the same counts.
    for c0 in range(0, resamples, _COUNT_BLOCK):
        w = min(resamples, c0 + _COUNT_BLOCK) - c0
        keys = idx[:, c0:c0 + w] * w
        keys += np.arange(w, dtype=np.int64)
        counts[:, c0:c0 + w] = np.bincount(keys.ravel(), minlength=w * total).reshape(total, w)
    return counts


def draw_counts(rng: RNGLike, resamples: int, n: int) -> NDArray[Any]:
    """``(n, resamples)`` bootstrap counts (column r: how often each of n items is drawn)."""
    return _draw_counts(_as_rng(rng)[0], resamples, n)


def _running_counts(counts: NDArray[Any], total: int) -> NDArray[Any]:
    """Cumulative counts over items (axis 0), in the narrowest integer type that holds ``total``."""
    dtype = np.int16 if total < np.iinfo(np.int16).max else np.int64
    cum = counts.astype(dtype, copy=True)
    # A Python loop over rows beats np.cumsum(axis=0) here: each step is one vectorised
    # add of a contiguous row, whereas cumsum walks the array in strided order.
    for i in range(1, cum.shape[0]):
        np.add(cum[i], cum[i - 1], out=cum[i])
    return cum


def _stat_from_counts(
    statistic: str, xs: FloatArray, counts: NDArray[Any], total: int
) -> FloatArray:
    """Statistic of resamples given as counts.

    xs: ``(G, n)`` values, sorted ascending along the last axis when the statistic depends
    on order (median, iqm, max). counts: ``(n, R)`` aligned with xs's columns, each column
    summing to ``total``. Returns ``(G, R)``.
    """
    if statistic == "mean":
        return np.einsum("gn,nr->gr", xs, counts) / total
    if statistic == "std":
        if total < 2:
            return np.full((xs.shape[0], counts.shape[1]), np.nan)
        # Centre first so that E[x^2] - E[x]^2 does not cancel catastrophically.
        xc = xs - xs.mean(axis=1, keepdims=True)
        m1 = np.einsum("gn,nr->gr", xc, counts) / total
        m2 = np.einsum("gn,nr->gr", xc * xc, counts) / total
        var = np.maximum(m2 - m1 * m1, 0.0) * (total / (total - 1))
        return np.sqrt(var)
    cum = _running_counts(counts, total)
    if statistic == "max":
        return xs[:, _order_position(cum, total)]
    if statistic == "median":
        lo = _order_position(cum, (total + 1) // 2)
        hi = _order_position(cum, total // 2 + 1)
        return 0.5 * (xs[:, lo] + xs[:, hi])
    if statistic == "iqm":
        k = int(0.25 * total)
        # Ranks [k, total-k) are kept. With L_i = clip(cum_i, k, total-k) the weight of
        # item i is L_i - L_{i-1}; summing by parts avoids forming those differences:
        # sum_i x_i (L_i - L_{i-1}) = x_n (total-k) - x_1 k - sum_{i<n} L_i (x_{i+1} - x_i).
        np.clip(cum, k, total - k, out=cum)
        inner = np.einsum("gi,ir->gr", np.diff(xs, axis=1), cum[:-1])
        return (xs[:, -1:] * (total - k) - xs[:, :1] * k - inner) / (total - 2 * k)
    raise ValueError(f"unknown statistic {statistic!r}")


def _order_position(cum: NDArray[Any], k: int) -> NDArray[np.intp]:
    """Row of the k-th smallest (1-based) drawn value per resample, from cumulative counts."""
    # cum is non-decreasing down each column: the position is the number of rows below k.
    return np.count_nonzero(cum < k, axis=0)


def _jackknife_counts(n: int) -> NDArray[np.int64]:
    """``(n, n)`` leave-one-out counts (row i omits item i)."""
    return np.ones((n, n), dtype=np.int64) - np.eye(n, dtype=np.int64)


def _acceleration(jack: Sequence[FloatArray]) -> FloatArray:
    """BCa acceleration from jackknife values of one or several independent samples.

    jack: per sample, a ``(G, n_j)`` array of leave-one-out statistics. Uses the
    empirical influence values ``U = (n_j - 1) * (mean - theta_(i))`` and
    ``a = sum_j sum_i U^3 / n_j^3 / (6 * (sum_j sum_i U^2 / n_j^2)^1.5)``
    (Efron & Tibshirani 1993, ch. 14; one sample: the familiar skewness formula).
    A zero-variance jackknife (all leave-one-out values equal) gives a = 0.
    """
    num = 0.0
    den = 0.0
    for jk in jack:
        n_j = jk.shape[-1]
        u = (n_j - 1) * (jk.mean(axis=-1, keepdims=True) - jk)
        num = num + (u**3).sum(axis=-1) / n_j**3
        den = den + (u**2).sum(axis=-1) / n_j**2
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = num_a / (6.0 * den_a**1.5)
    # Guard: relative to the scale of U, a tiny denominator means "no skewness information".
    return np.where(np.isfinite(a) & (den_a > 1e-300), a, 0.0)


def _quantiles(values: FloatArray, q: FloatArray) -> FloatArray:
    """Linear-interpolation quantiles (numpy's default method) of each row.

    values: ``(G, R)`` (any order); q: ``(G, k)`` probabilities. Returns ``(G, k)``.
    Only the needed order statistics are selected (``np.partition``), no full sort.
    """
    g, r = values.shape
    h = np.clip(q, 0.0, 1.0) * (r - 1)
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, r - 1)
    frac = h - lo
    out = np.empty(q.shape)
    for i in range(g):
        kth = np.unique(np.concatenate([lo[i], hi[i]]))
        part = np.partition(values[i], kth)
        vlo, vhi = part[lo[i]], part[hi[i]]
        # Written so that equal neighbours give exactly that value (no 0 * inf, no rounding).
        out[i] = np.where(vlo == vhi, vlo, vlo + frac[i] * (vhi - vlo))
    return out


def _intervals(
    theta_hat: FloatArray,
    theta_b: FloatArray,
    jack: Sequence[FloatArray] | None,
    method: str,
    confidence: float,
) -> tuple[FloatArray, FloatArray, list[list[str]], list[str]]:
    """Percentile or BCa endpoints for G statistics at once.

    theta_hat: ``(G,)``; theta_b: ``(G, R)`` bootstrap replicates; jack: jackknife values
    (BCa only). Returns (low, high, per-group warnings, per-group method used).
    """
    g = theta_hat.shape[0]
    alpha = (1.0 - confidence) / 2.0
    probs = np.tile(np.array([alpha, 1.0 - alpha]), (g, 1))
    notes: list[list[str]] = [[] for _ in range(g)]
    used = [method] * g
    finite = np.all(np.isfinite(theta_b), axis=1) & np.isfinite(theta_hat)
    clean_b = np.where(np.isfinite(theta_b), theta_b, 0.0)
    b_min, b_max = clean_b.min(axis=1), clean_b.max(axis=1)
    if method == "bca":
        assert jack is not None
        r = theta_b.shape[1]
        # Values equal to the estimate up to rounding are ties (the count-based statistics
        # and the direct estimate sum in different orders).
        scale = np.maximum(np.abs(theta_hat), np.maximum(np.abs(b_min), np.abs(b_max)))
        tol = (1e-12 * scale)[:, None]
        below = np.count_nonzero(theta_b < theta_hat[:, None] - tol, axis=1)
        at_or_below = np.count_nonzero(theta_b <= theta_hat[:, None] + tol, axis=1)
        # Mid-rank: ties with the estimate count one half (as scipy does); this keeps
        # discrete statistics (median, max) from getting an infinite bias correction.
        frac = (below + at_or_below) / (2.0 * r)
        with np.errstate(divide="ignore", invalid="ignore"):
            z0 = special.ndtri(frac)
            a = _acceleration(jack)
            z = special.ndtri(np.array([alpha, 1.0 - alpha]))
            num = z0[:, None] + z[None, :]
            den = 1.0 - a[:, None] * num
            adj = special.ndtr(z0[:, None] + num / den)
            # Past the pole of Efron's formula (a * (z0 + z) >= 1, extreme acceleration) the
            # adjusted level would jump to the wrong tail; take its limit instead: the
            # extreme replicate on the endpoint's own side.
            adj = np.where(den <= 0, np.array([0.0, 1.0])[None, :], adj)
        constant = b_min == b_max
        bad = ~np.all(np.isfinite(adj), axis=1) & ~constant
        for i in np.flatnonzero(bad & finite):
            notes[i].append(
                "BCa undefined here (the estimate lies outside the bootstrap distribution); "
                "percentile interval used"
            )
            used[i] = "percentile"
        probs = np.where((bad | constant)[:, None], probs, adj)
    ends = _quantiles(clean_b, probs)
    low = np.where(finite, ends[:, 0], np.nan)
    high = np.where(finite, ends[:, 1], np.nan)
    return low, high, notes, used


def _result(
    estimate: float, low: float, high: float, statistic: str, method: str, resamples: int,
    seed: int | None, confidence: float, n: int | tuple[int, ...], notes: Sequence[str],
) -> BootstrapResult:
    # Rounding in the interpolation can put an endpoint a hair beyond a constant estimate.
    if math.isfinite(low) and math.isfinite(high) and math.isfinite(estimate):
        span = max(abs(high - low), abs(estimate)) * 1e-12
        if low > estimate and low - estimate <= span:
            low = estimate
        if high < estimate and estimate - high <= span:
            high = estimate
    return BootstrapResult(
        estimate=float(estimate), ci_low=float(low), ci_high=float(high), statistic=statistic,
        method=method, resamples=resamples, seed=seed, confidence=confidence, n=n,
        warnings=tuple(dict.fromkeys(notes)),
    )
