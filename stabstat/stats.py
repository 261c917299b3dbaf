"""Pure, vectorised statistics over groups x seeds.

Everything here is a function of numpy arrays (no store, no I/O) and takes an explicit
random generator (``rng``: a :class:`numpy.random.Generator` or an ``int`` seed; never
global state). Results are small frozen dataclasses that carry their provenance
(method, resamples, seed, confidence, n) and have ``to_dict()``.

Shapes
------
A *group* is a 1-D array of per-seed values (one value per run), shape ``(n,)``.
Groups may have different sizes (ragged); functions over several groups take a
sequence of such arrays. Stratified functions take, per group, a sequence of per-task
arrays (``(n_t,)`` each) or a 2-D ``(seeds, tasks)`` matrix as rliable does.

How the bootstrap is vectorised
-------------------------------
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
correlated). Differences between groups always get their own independent draws.

References
----------
Efron (1987), Better bootstrap confidence intervals, JASA 82:171-185 (BCa).
Wilson (1927), JASA 22:209-212. Clopper & Pearson (1934), Biometrika 26:404-413.
Newcombe (1998), Statistics in Medicine 17:873-890 (method 10, hybrid score).
Holm (1979), Scand. J. Statist. 6:65-70. Benjamini & Hochberg (1995), JRSS-B 57:289-300.
Brown & Forsythe (1974), JASA 69:364-367.
Agarwal et al. (2021), Deep RL at the edge of the statistical precipice, NeurIPS (IQM,
stratified bootstrap, probability of improvement).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "MIN_SEEDS",
    "STATISTICS",
    "BootstrapResult",
    "RateDiffResult",
    "RateResult",
    "TestResult",
    "TrendResult",
    "adjust_pvalues",
    "benjamini_hochberg",
    "bootstrap_ci",
    "bootstrap_correlation",
    "bootstrap_diff",
    "bootstrap_groups",
    "bootstrap_statistics",
    "brown_forsythe",
    "clopper_pearson_interval",
    "compute_statistic",
    "draw_counts",
    "failure_rate",
    "fisher_exact",
    "holm",
    "iqm",
    "logistic_regression",
    "logistic_trend",
    "newcombe_diff",
    "permutation_test",
    "probability_of_improvement",
    "rate_interval",
    "sd_ratio_ci",
    "seed_warnings",
    "stratified_bootstrap",
    "stratified_bootstrap_groups",
    "trend_permutation_test",
    "wilson_interval",
]

Statistic = Literal["mean", "median", "std", "iqm", "max"]
CIMethod = Literal["bca", "percentile"]
RNGLike = np.random.Generator | int | None
FloatArray = NDArray[np.float64]

#: Statistics every bootstrap function accepts. ``std`` is the sample SD (ddof=1).
STATISTICS: tuple[str, ...] = ("mean", "median", "std", "iqm", "max")
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
#: Fewer seeds than this per group trigger a warning for interval claims: at a 15-30%
#: failure rate, smaller samples often contain no failed run at all.
MIN_SEEDS = 10


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with a bootstrap confidence interval.

    ``n`` is the sample size (an int) or, for two-sample and stratified statistics, a
    tuple of sizes. ``method`` is the interval actually used: ``bca``, ``percentile``, or
    ``percentile`` with a warning when BCa was undefined for these data.
    ``seed`` is the int seed given, or ``None`` when a Generator was passed.
    """

    estimate: float
    ci_low: float
    ci_high: float
    statistic: str
    method: str
    resamples: int
    seed: int | None
    confidence: float
    n: int | tuple[int, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = list(self.n) if isinstance(self.n, tuple) else self.n
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class RateResult:
    """A proportion ``k / n`` with its interval (``wilson``, or ``clopper-pearson`` at 0 or n)."""

    k: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    method: str
    confidence: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class RateDiffResult:
    """Difference of two proportions ``rate_a - rate_b`` with Newcombe's hybrid score
    interval and a two-sided Fisher exact p-value."""

    k_a: int
    n_a: int
    k_b: int
    n_b: int
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    test: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TestResult:
    """A hypothesis test: its statistic and p-value (``df`` where it has degrees of freedom)."""

    name: str
    statistic: float
    p_value: float
    n: tuple[int, ...]
    df: tuple[float, ...] | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = list(self.n)
        d["df"] = None if self.df is None else list(self.df)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class TrendResult:
    """Logistic-regression coefficient of failure on one (possibly transformed) factor.

    ``odds_ratio`` is per unit of the transformed factor: per doubling when
    ``transform == 'log2'``. When the data are separated (a level boundary splits
    failures from successes) the maximum-likelihood estimate does not exist: then
    ``separation`` is True, estimates are NaN and ``levels`` (per-level Wilson
    intervals) carry the evidence.
    """

    factor: str
    transform: str
    coef: float
    se: float
    odds_ratio: float
    or_ci_low: float
    or_ci_high: float
    p_value: float
    n: int
    n_failed: int
    separation: bool
    confidence: float
    adjusted_for: tuple[str, ...] = ()
    levels: tuple[tuple[Any, RateResult], ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "transform": self.transform,
            "coef": self.coef,
            "se": self.se,
            "odds_ratio": self.odds_ratio,
            "or_ci_low": self.or_ci_low,
            "or_ci_high": self.or_ci_high,
            "p_value": self.p_value,
            "n": self.n,
            "n_failed": self.n_failed,
            "separation": self.separation,
            "confidence": self.confidence,
            "adjusted_for": list(self.adjusted_for),
            "levels": [{"level": lv, **r.to_dict()} for lv, r in self.levels],
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- helpers


def _as_rng(rng: RNGLike) -> tuple[np.random.Generator, int | None]:
    """Return a Generator and the int seed to record (None when a Generator was given)."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED), DEFAULT_SEED
    if isinstance(rng, np.random.Generator):
        return rng, None
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng)), int(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, not {type(rng).__name__}")


def _as_1d(x: ArrayLike, name: str = "values") -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per seed), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop or impute them before bootstrapping")
    return arr


def _check_common(statistic: str, method: str, resamples: int, confidence: float) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    if method not in ("bca", "percentile"):
        raise ValueError(f"unknown CI method {method!r}; choose 'bca' or 'percentile'")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


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
    else:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        idx = np.concatenate([rng.integers(0, m, size=(m, resamples)) + offsets[t]
                              for t, m in enumerate(sizes)])
    idx *= resamples
    idx += np.arange(resamples, dtype=np.int64)
    counts = np.bincount(idx.ravel(), minlength=resamples * total).reshape(total, resamples)
    return counts.astype(np.int16) if max(sizes) < np.iinfo(np.int16).max else counts


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


def seed_warnings(n: int, *, purpose: str = "a confidence interval", minimum: int = MIN_SEEDS) -> list[str]:
    """Warnings when ``n`` seeds are too few for ``purpose`` (empty list when enough)."""
    if n < 2:
        return [f"only {n} seed(s): no interval can be computed for {purpose}"]
    if n < minimum:
        return [
            f"only {n} seeds (< {minimum}) for {purpose}: the interval is unreliable and a "
            "failure mode absent from the sample is invisible"
        ]
    return []


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


# --------------------------------------------------------------------------- one-sample


def bootstrap_groups(
    groups: Sequence[ArrayLike] | NDArray[Any],
    *,
    statistic: Statistic | str = "mean",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    min_seeds: int = MIN_SEEDS,
) -> list[BootstrapResult]:
    """Bootstrap CI of ``statistic`` for each of several groups (ragged allowed).

    groups: a sequence of 1-D arrays (one value per seed; sizes may differ) or a 2-D
    ``(groups, seeds)`` array. Returns one :class:`BootstrapResult` per group, in order.
    Groups of the same size share one ``(n, resamples)`` count matrix (see module doc).
    Groups with fewer than 2 values get the estimate (when n = 1) and a NaN interval.
    """
    _check_common(statistic, method, resamples, confidence)
    gen, seed = _as_rng(rng)
    arrays = [_as_1d(g, f"group {i}") for i, g in enumerate(groups)]
    out: list[BootstrapResult | None] = [None] * len(arrays)
    by_size: dict[int, list[int]] = {}
    for i, arr in enumerate(arrays):
        by_size.setdefault(arr.size, []).append(i)
    # Fixed order of sizes so the same data and seed always consume the stream alike.
    for n in sorted(by_size):
        idx = by_size[n]
        if n < 2:
            for i in idx:
                est = float(compute_statistic(statistic, arrays[i])) if n == 1 and statistic != "std" else math.nan
                out[i] = _result(est, math.nan, math.nan, statistic, method, resamples, seed,
                                 confidence, n, seed_warnings(n, purpose=f"the {statistic}", minimum=min_seeds))
            continue
        xs = np.sort(np.stack([arrays[i] for i in idx]), axis=1)
        theta_hat = np.asarray(compute_statistic(statistic, xs, axis=1), dtype=np.float64)
        counts = _draw_counts(gen, resamples, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            theta_b = _stat_from_counts(statistic, xs, counts, n)
            jack = [_stat_from_counts(statistic, xs, _jackknife_counts(n), n - 1)] if method == "bca" else None
        low, high, notes, used = _intervals(theta_hat, theta_b, jack, method, confidence)
        for j, i in enumerate(idx):
            w = seed_warnings(n, purpose=f"a CI of the {statistic}", minimum=min_seeds) + notes[j]
            out[i] = _result(theta_hat[j], low[j], high[j], statistic, used[j], resamples, seed,
                             confidence, n, w)
    return [r for r in out if r is not None]


def draw_counts(rng: RNGLike, resamples: int, n: int) -> NDArray[Any]:
    """``(n, resamples)`` bootstrap counts (column r: how often each of n items is drawn)."""
    return _draw_counts(_as_rng(rng)[0], resamples, n)


def bootstrap_statistics(
    x: ArrayLike,
    statistics: Sequence[str] = STATISTICS,
    *,
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    min_seeds: int = MIN_SEEDS,
) -> dict[str, BootstrapResult]:
    """Bootstrap CIs of several statistics of one sample ``x`` (``(n,)``) from one set of
    resamples (the statistics share the draws). Returns statistic -> result."""
    for st_name in statistics:
        _check_common(st_name, method, resamples, confidence)
    gen, seed = _as_rng(rng)
    arr = _as_1d(x)
    n = arr.size
    out: dict[str, BootstrapResult] = {}
    if n < 2:
        for st_name in statistics:
            out[st_name] = bootstrap_groups([arr], statistic=st_name, method=method, resamples=resamples,
                                            confidence=confidence, rng=gen, min_seeds=min_seeds)[0]
            out[st_name] = BootstrapResult(**{**out[st_name].__dict__, "seed": seed})
        return out
    xs = np.sort(arr)[None, :]
    counts = _draw_counts(gen, resamples, n)
    jk = _jackknife_counts(n) if method == "bca" else None
    for st_name in statistics:
        theta_hat = np.atleast_1d(np.asarray(compute_statistic(st_name, xs, axis=1), dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            theta_b = _stat_from_counts(st_name, xs, counts, n)
            jack = [_stat_from_counts(st_name, xs, jk, n - 1)] if jk is not None else None
        low, high, notes, used = _intervals(theta_hat, theta_b, jack, method, confidence)
        w = seed_warnings(n, purpose=f"a CI of the {st_name}", minimum=min_seeds) + notes[0]
        out[st_name] = _result(theta_hat[0], low[0], high[0], st_name, used[0], resamples, seed, confidence, n, w)
    return out


def bootstrap_ci(
    x: ArrayLike,
    *,
    statistic: Statistic | str = "mean",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    min_seeds: int = MIN_SEEDS,
) -> BootstrapResult:
    """Bootstrap CI of ``statistic`` of one sample ``x`` (shape ``(n,)``).

    Examples
    --------
    >>> r = bootstrap_ci([0.6, 0.7, 0.8, 0.75, 0.72, 0.69, 0.81, 0.55, 0.77, 0.74], resamples=2000)
    >>> r.ci_low <= r.estimate <= r.ci_high, r.method, r.n
    (True, 'bca', 10)
    """
    return bootstrap_groups([x], statistic=statistic, method=method, resamples=resamples,
                            confidence=confidence, rng=rng, min_seeds=min_seeds)[0]


# --------------------------------------------------------------------------- two-sample


def bootstrap_diff(
    a: ArrayLike,
    b: ArrayLike,
    *,
    statistic: Statistic | str = "mean",
    paired: bool = False,
    op: Literal["diff", "ratio"] | str = "diff",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    min_seeds: int = MIN_SEEDS,
    _counts: tuple[NDArray[Any], NDArray[Any]] | None = None,
) -> BootstrapResult:
    """CI of ``stat(a) - stat(b)`` (``op='diff'``) or ``stat(a) / stat(b)`` (``op='ratio'``).

    Unpaired (default): a (``(n_a,)``) and b (``(n_b,)``) are resampled independently.
    Paired: a and b have the same length and position i of both is the same seed; pairs
    are resampled together (for the mean this is the CI of the mean per-seed difference).
    BCa uses the jackknife of each sample (unpaired) or of the pairs (paired).
    ``_counts`` (internal) reuses count matrices drawn by :func:`draw_counts` (common
    random numbers across statistics of the same pair): ``(n_a, R)`` and ``(n_b, R)``,
    or the same ``(n, R)`` matrix twice when paired.
    """
    _check_common(statistic, method, resamples, confidence)
    if op not in ("diff", "ratio"):
        raise ValueError(f"op must be 'diff' or 'ratio', got {op!r}")
    gen, seed = _as_rng(rng)
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    label = f"{statistic} {'difference' if op == 'diff' else 'ratio'}"
    combine: Callable[[Any, Any], Any] = np.subtract if op == "diff" else np.divide
    notes = (seed_warnings(xa.size, purpose=f"a CI of the {label}", minimum=min_seeds)
             + seed_warnings(xb.size, purpose=f"a CI of the {label}", minimum=min_seeds))
    if paired and xa.size != xb.size:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    n_out: tuple[int, ...] = (xa.size,) if paired else (xa.size, xb.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = float(combine(compute_statistic(statistic, xa), compute_statistic(statistic, xb))) \
            if min(xa.size, xb.size) >= (2 if statistic == "std" else 1) else math.nan
    if min(xa.size, xb.size) < 2 or not math.isfinite(est):
        if math.isfinite(est) is False and min(xa.size, xb.size) >= 2:
            notes.append(f"the {label} is undefined for these data (division by zero)")
        return _result(est, math.nan, math.nan, statistic, method, resamples, seed, confidence, n_out, notes)

    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            n = xa.size
            oa, ob = np.argsort(xa, kind="stable"), np.argsort(xb, kind="stable")
            sa, sb = xa[oa][None, :], xb[ob][None, :]
            counts = _counts[0] if _counts is not None else _draw_counts(gen, resamples, n)
            theta_b = combine(_stat_from_counts(statistic, sa, counts[oa], n),
                              _stat_from_counts(statistic, sb, counts[ob], n))
            jk = _jackknife_counts(n)
            jack = [combine(_stat_from_counts(statistic, sa, jk[oa], n - 1),
                            _stat_from_counts(statistic, sb, jk[ob], n - 1))] if method == "bca" else None
        else:
            sa, sb = np.sort(xa)[None, :], np.sort(xb)[None, :]
            ca, cb = _counts if _counts is not None else (
                _draw_counts(gen, resamples, xa.size), _draw_counts(gen, resamples, xb.size))
            ta = _stat_from_counts(statistic, sa, ca, xa.size)
            tb = _stat_from_counts(statistic, sb, cb, xb.size)
            theta_b = combine(ta, tb)
            jack = None
            if method == "bca":
                fa = compute_statistic(statistic, xa)
                fb = compute_statistic(statistic, xb)
                ja = _stat_from_counts(statistic, sa, _jackknife_counts(xa.size), xa.size - 1)
                jb = _stat_from_counts(statistic, sb, _jackknife_counts(xb.size), xb.size - 1)
                jack = [combine(ja, fb), combine(fa, jb)]
    low, high, more, used = _intervals(np.array([est]), theta_b, jack, method, confidence)
    if not np.all(np.isfinite(theta_b)):
        more[0].append(f"some resamples give an undefined {label} (e.g. a zero denominator); no interval")
    return _result(est, low[0], high[0], label, used[0], resamples, seed, confidence, n_out, notes + more[0])


def sd_ratio_ci(
    a: ArrayLike,
    b: ArrayLike,
    *,
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> BootstrapResult:
    """Bootstrap CI of ``sd(a) / sd(b)`` (sample SDs, ddof=1; independent resampling)."""
    return bootstrap_diff(a, b, statistic="std", op="ratio", method=method, resamples=resamples,
                          confidence=confidence, rng=rng)


def probability_of_improvement(
    a: ArrayLike,
    b: ArrayLike,
    *,
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    _counts: tuple[NDArray[Any], NDArray[Any]] | None = None,
) -> BootstrapResult:
    """``P(X_a > X_b) + P(X_a = X_b) / 2`` over independent draws, with a bootstrap CI.

    Equals the Mann-Whitney U of a against b divided by ``n_a * n_b`` (Agarwal et al. 2021).
    a: ``(n_a,)``, b: ``(n_b,)``, resampled independently.
    """
    _check_common("mean", method, resamples, confidence)
    gen, seed = _as_rng(rng)
    xa, xb = np.sort(_as_1d(a, "a")), np.sort(_as_1d(b, "b"))
    na, nb = xa.size, xb.size
    notes = seed_warnings(min(na, nb), purpose="a CI of the probability of improvement")
    if na == 0 or nb == 0:
        return _result(math.nan, math.nan, math.nan, "probability of improvement", method,
                       resamples, seed, confidence, (na, nb), notes)
    # kernel[i, j] = 1 if a_i > b_j, 1/2 if equal: the statistic is c_a @ K @ c_b / (n_a n_b).
    kernel = (xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])
    est = float(kernel.mean())

    def stat(ca: NDArray[Any], cb: NDArray[Any], ta: int, tb: int) -> FloatArray:
        # ca: (n_a, R), cb: (n_b, R) counts -> (R,)
        return np.einsum("jr,jr->r", kernel.T @ ca.astype(np.float64), cb) / (ta * tb)

    ca, cb = _counts if _counts is not None else (_draw_counts(gen, resamples, na), _draw_counts(gen, resamples, nb))
    theta_b = stat(ca, cb, na, nb)[None, :]
    jack = None
    if method == "bca" and na > 1 and nb > 1:
        # Leave one value of a out (all of b kept), then one value of b out.
        ja = stat(_jackknife_counts(na), np.ones((nb, na)), na - 1, nb)
        jb = stat(np.ones((na, nb)), _jackknife_counts(nb), na, nb - 1)
        jack = [ja[None, :], jb[None, :]]
    use = method if jack is not None else "percentile"
    low, high, more, used = _intervals(np.array([est]), theta_b, jack, use, confidence)
    return _result(est, low[0], high[0], "probability of improvement", used[0], resamples, seed,
                   confidence, (na, nb), notes + more[0])


def permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    statistic: Statistic | str = "mean",
    paired: bool = False,
    alternative: Literal["two-sided", "greater", "less"] | str = "two-sided",
    resamples: int = DEFAULT_RESAMPLES,
    rng: RNGLike = DEFAULT_SEED,
) -> TestResult:
    """Permutation test of ``stat(a) - stat(b) = 0`` (``alternative``: two-sided, or
    ``greater``: stat(a) > stat(b), or ``less``).

    Unpaired: group labels are permuted over the pooled ``n_a + n_b`` values (exchangeable
    under "same distribution"). Paired: a and b are swapped within each seed with
    probability 1/2. The p-value is ``(1 + #{|T*| >= |T|}) / (1 + resamples)``, which is
    never 0 and is a valid (slightly conservative) Monte-Carlo p-value; one-sided versions
    count ``T* >= T`` (greater) or ``T* <= T`` (less).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    gen, seed = _as_rng(rng)
    del seed
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    name = f"permutation test ({'paired, ' if paired else ''}{statistic} difference)"
    if min(xa.size, xb.size) < (2 if statistic == "std" else 1):
        return TestResult(name, math.nan, math.nan, (xa.size, xb.size),
                          warnings=("too few values for a test",))
    t_obs = float(compute_statistic(statistic, xa) - compute_statistic(statistic, xb))
    if paired:
        if xa.size != xb.size:
            raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
        swap = gen.random((resamples, xa.size)) < 0.5
        pa = np.where(swap, xb, xa)
        pb = np.where(swap, xa, xb)
    else:
        pooled = np.concatenate([xa, xb])
        perm = gen.permuted(np.broadcast_to(np.arange(pooled.size), (resamples, pooled.size)), axis=1)
        z = pooled[perm]
        pa, pb = z[:, : xa.size], z[:, xa.size:]
    t_b = compute_statistic(statistic, pa, axis=1) - compute_statistic(statistic, pb, axis=1)
    # Tolerance: the same difference computed in another order may differ in the last bits.
    tol = 1e-12 * max(1.0, abs(t_obs))
    if alternative == "greater":
        extreme = np.count_nonzero(t_b >= t_obs - tol)
    elif alternative == "less":
        extreme = np.count_nonzero(t_b <= t_obs + tol)
    else:
        extreme = np.count_nonzero(np.abs(t_b) >= abs(t_obs) - tol)
    p = (1.0 + extreme) / (1.0 + resamples)
    return TestResult(name if alternative == "two-sided" else f"{name}, {alternative}", t_obs, float(p),
                      (xa.size, xb.size))


def trend_permutation_test(
    x: ArrayLike,
    failed: ArrayLike,
    *,
    alternative: Literal["two-sided", "increasing", "decreasing"] | str = "two-sided",
    resamples: int = DEFAULT_RESAMPLES,
    rng: RNGLike = DEFAULT_SEED,
) -> TestResult:
    """Permutation test of a monotone trend of failure (``(n,)`` bools) in ``x`` (``(n,)``).

    The statistic is the covariance of x and the failure indicator (the Cochran-Armitage
    trend statistic); failure labels are permuted. Unlike the logistic Wald test it stays
    valid under perfect separation. ``increasing``: failure rises with x.
    """
    gen, _ = _as_rng(rng)
    xv = _as_1d(x, "x")
    y = np.asarray(failed, dtype=np.float64).reshape(-1)
    name = "permutation trend test (Cochran-Armitage statistic)"
    if xv.size != y.size or xv.size < 2:
        raise ValueError(f"x and failed need the same length >= 2, got {xv.size} and {y.size}")
    xc = xv - xv.mean()
    t_obs = float(xc @ y) / xv.size
    perm = gen.permuted(np.broadcast_to(y, (resamples, y.size)), axis=1)
    t_b = (perm @ xc) / xv.size
    tol = 1e-12 * max(1.0, abs(t_obs))
    if alternative == "increasing":
        extreme = np.count_nonzero(t_b >= t_obs - tol)
    elif alternative == "decreasing":
        extreme = np.count_nonzero(t_b <= t_obs + tol)
    elif alternative == "two-sided":
        extreme = np.count_nonzero(np.abs(t_b) >= abs(t_obs) - tol)
    else:
        raise ValueError(f"alternative must be two-sided, increasing or decreasing, got {alternative!r}")
    return TestResult(name, t_obs, float((1.0 + extreme) / (1.0 + resamples)), (xv.size,))


def _weighted_pearson(x: FloatArray, y: FloatArray, w: NDArray[Any]) -> FloatArray:
    """Pearson r of (x, y) pairs weighted by counts. x, y: ``(n,)`` or ``(n, R)``; w: ``(n, R)``."""
    wf = w.astype(np.float64)
    tot = wf.sum(axis=0)
    xw = x if x.ndim == 2 else x[:, None]
    yw = y if y.ndim == 2 else y[:, None]
    mx = (xw * wf).sum(axis=0) / tot
    my = (yw * wf).sum(axis=0) / tot
    dx, dy = xw - mx, yw - my
    sxy = (wf * dx * dy).sum(axis=0)
    sxx = (wf * dx * dx).sum(axis=0)
    syy = (wf * dy * dy).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx * syy)


def _resample_ranks(v: FloatArray, w: NDArray[Any]) -> FloatArray:
    """Mid-ranks of each item within every resample given by counts w ``(n, R)``.

    Items with equal values share one block of ranks, as scipy.stats.rankdata('average').
    """
    order = np.argsort(v, kind="stable")
    sv = v[order]
    starts = np.flatnonzero(np.concatenate([[True], sv[1:] != sv[:-1]]))
    block_counts = np.add.reduceat(w[order].astype(np.int64), starts, axis=0)  # (blocks, R)
    cum = np.cumsum(block_counts, axis=0)
    block_rank = cum - (block_counts - 1) / 2.0
    block_of_sorted = np.repeat(np.arange(starts.size), np.diff(np.concatenate([starts, [v.size]])))
    ranks = np.empty((v.size, w.shape[1]))
    ranks[order] = block_rank[block_of_sorted]
    return ranks


def bootstrap_correlation(
    x: ArrayLike,
    y: ArrayLike,
    *,
    kind: Literal["pearson", "spearman"] | str = "pearson",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> BootstrapResult:
    """Pearson or Spearman correlation of paired ``(n,)`` samples with a bootstrap CI.

    Pairs are resampled together. Spearman's resampled ranks are the mid-ranks within each
    resample (duplicates from resampling are ties), computed from counts without sorting.
    """
    _check_common("mean", method, resamples, confidence)
    if kind not in ("pearson", "spearman"):
        raise ValueError(f"kind must be 'pearson' or 'spearman', got {kind!r}")
    gen, seed = _as_rng(rng)
    xv, yv = _as_1d(x, "x"), _as_1d(y, "y")
    if xv.size != yv.size:
        raise ValueError(f"x and y need equal lengths, got {xv.size} and {yv.size}")
    n = xv.size
    label = f"{kind} correlation"
    notes = seed_warnings(n, purpose=f"a CI of the {label}")
    if n < 3 or np.all(xv == xv[0]) or np.all(yv == yv[0]):
        notes.append("fewer than 3 pairs or a constant variable: no correlation")
        return _result(math.nan, math.nan, math.nan, label, method, resamples, seed, confidence, n, notes)

    def stat(w: NDArray[Any]) -> FloatArray:
        if kind == "pearson":
            return _weighted_pearson(xv, yv, w)
        return _weighted_pearson(_resample_ranks(xv, w), _resample_ranks(yv, w), w)

    est = float(stat(np.ones((n, 1), dtype=np.int64))[0])
    theta_b = stat(_draw_counts(gen, resamples, n))[None, :]
    jack = [stat(_jackknife_counts(n))[None, :]] if method == "bca" else None
    if not np.all(np.isfinite(theta_b)):
        notes.append("some resamples have a constant variable (correlation undefined); they are left out")
        theta_b = theta_b[:, np.isfinite(theta_b[0])]
    low, high, more, used = _intervals(np.array([est]), theta_b, jack, method, confidence)
    return _result(est, low[0], high[0], label, used[0], resamples, seed, confidence, n, notes + more[0])


# --------------------------------------------------------------------------- stratified


def _task_arrays(group: Sequence[ArrayLike] | NDArray[Any], gi: int) -> list[FloatArray]:
    if isinstance(group, np.ndarray) and group.ndim == 2:
        return [_as_1d(group[:, t], f"group {gi} task {t}") for t in range(group.shape[1])]
    return [_as_1d(t, f"group {gi} task {j}") for j, t in enumerate(group)]


def stratified_bootstrap_groups(
    groups: Sequence[Sequence[ArrayLike] | NDArray[Any]],
    *,
    statistic: Statistic | str = "iqm",
    combine: Literal["pool", "mean"] | str = "pool",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> list[BootstrapResult]:
    """Stratified bootstrap over tasks for several groups (configurations).

    groups: per group, either a sequence of per-task 1-D arrays (``(n_t,)`` each, sizes
    may differ) or a ``(seeds, tasks)`` matrix as rliable takes. Seeds are resampled
    within each task, never across tasks. ``combine='pool'`` computes the statistic over
    all runs of all tasks pooled (rliable's aggregate IQM); ``combine='mean'`` averages
    the per-task statistics. BCa's acceleration treats each task as a separate sample.
    Groups with the same task layout (sizes per task) share the random draws.
    """
    _check_common(statistic, method, resamples, confidence)
    if combine not in ("pool", "mean"):
        raise ValueError(f"combine must be 'pool' or 'mean', got {combine!r}")
    gen, seed = _as_rng(rng)
    tasks = [_task_arrays(g, i) for i, g in enumerate(groups)]
    layouts: dict[tuple[int, ...], list[int]] = {}
    for i, ts in enumerate(tasks):
        layouts.setdefault(tuple(t.size for t in ts), []).append(i)
    out: list[BootstrapResult | None] = [None] * len(tasks)
    label = f"{statistic} (stratified, {'pooled' if combine == 'pool' else 'mean over tasks'})"
    for layout in sorted(layouts):
        idx = layouts[layout]
        sizes = np.array(layout)
        if len(layout) == 0 or sizes.min() < 2:
            for i in idx:
                out[i] = _result(math.nan, math.nan, math.nan, label, method, resamples, seed,
                                 confidence, layout, ["every task needs at least 2 seeds"])
            continue
        all_counts = _draw_counts(gen, resamples, layout)  # (N, R), task-major item order
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        per_task_counts = [all_counts[offsets[t]: offsets[t + 1]] for t in range(len(layout))]
        g = len(idx)
        with np.errstate(invalid="ignore", divide="ignore"):
            if combine == "mean":
                # Per task, counts attach to sorted positions (seeds are exchangeable).
                theta_b = np.zeros((g, resamples))
                theta_hat = np.zeros(g)
                jack_t: list[FloatArray] = []
                per_task_hat = []
                for t, m in enumerate(layout):
                    xs = np.sort(np.stack([tasks[i][t] for i in idx]), axis=1)
                    theta_b += _stat_from_counts(statistic, xs, per_task_counts[t], int(m))
                    h = np.asarray(compute_statistic(statistic, xs, axis=1), dtype=np.float64)
                    theta_hat += h
                    per_task_hat.append(h)
                    if method == "bca":
                        jack_t.append(_stat_from_counts(statistic, xs, _jackknife_counts(int(m)), int(m) - 1))
                n_tasks = len(layout)
                theta_b /= n_tasks
                theta_hat /= n_tasks
                jack = None
                if method == "bca":
                    jack = [(theta_hat * n_tasks - per_task_hat[t])[:, None] / n_tasks + jack_t[t] / n_tasks
                            for t in range(n_tasks)]
            else:
                counts = all_counts
                total = int(sizes.sum())
                theta_b = np.empty((g, resamples))
                theta_hat = np.empty(g)
                jack_rows: list[list[FloatArray]] = [[] for _ in layout]
                jk_all = _jackknife_counts(total) if method == "bca" else None
                for j, i in enumerate(idx):
                    pooled = np.concatenate(tasks[i])
                    order = np.argsort(pooled, kind="stable")
                    xs = pooled[order][None, :]
                    theta_hat[j] = float(compute_statistic(statistic, pooled))
                    theta_b[j] = _stat_from_counts(statistic, xs, counts[order], total)[0]
                    if jk_all is not None:
                        jv = _stat_from_counts(statistic, xs, jk_all[order], total - 1)[0]
                        for t in range(len(layout)):
                            jack_rows[t].append(jv[offsets[t]: offsets[t + 1]])
                jack = [np.stack(rows) for rows in jack_rows] if method == "bca" else None
        low, high, notes, used = _intervals(theta_hat, theta_b, jack, method, confidence)
        for j, i in enumerate(idx):
            w = seed_warnings(int(sizes.min()), purpose=f"a stratified CI of the {statistic}") + notes[j]
            out[i] = _result(theta_hat[j], low[j], high[j], label, used[j], resamples, seed,
                             confidence, layout, w)
    return [r for r in out if r is not None]


def stratified_bootstrap(
    group: Sequence[ArrayLike] | NDArray[Any],
    *,
    statistic: Statistic | str = "iqm",
    combine: Literal["pool", "mean"] | str = "pool",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> BootstrapResult:
    """Stratified bootstrap CI for one group; see :func:`stratified_bootstrap_groups`."""
    return stratified_bootstrap_groups([group], statistic=statistic, combine=combine, method=method,
                                       resamples=resamples, confidence=confidence, rng=rng)[0]


# --------------------------------------------------------------------------- rates


def clopper_pearson_interval(k: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k successes out of n."""
    # Beta quantiles through scipy.special: importing scipy.stats costs ~0.8 s of CLI start-up.
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, alpha / 2))
    high = 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - alpha / 2))
    return low, high


def wilson_interval(k: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (Wilson 1927)."""
    if n <= 0:
        return math.nan, math.nan
    z = float(special.ndtri(1 - (1 - confidence) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(k: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> RateResult:
    """Proportion k/n with Wilson's interval, or Clopper-Pearson when k is 0 or n.

    (Wilson is near-nominal inside; at the boundary the exact interval is the honest one.)
    """
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return RateResult(0, 0, math.nan, math.nan, math.nan, "wilson", confidence, ("no runs",))
    if k in (0, n):
        low, high = clopper_pearson_interval(k, n, confidence=confidence)
        method = "clopper-pearson"
    else:
        low, high = wilson_interval(k, n, confidence=confidence)
        method = "wilson"
    return RateResult(k, n, k / n, low, high, method, confidence,
                      tuple(seed_warnings(n, purpose="a failure-rate interval")))


def failure_rate(failed: ArrayLike, *, confidence: float = DEFAULT_CONFIDENCE) -> RateResult:
    """Failure rate of a boolean ``(n,)`` array (True = failed run) with its interval."""
    arr = np.asarray(failed, dtype=bool).reshape(-1)
    return rate_interval(int(arr.sum()), int(arr.size), confidence=confidence)


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int, *,
                 alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float:
    """Fisher exact p-value for rate_a vs rate_b (``greater``: rate_a > rate_b)."""
    if n_a == 0 or n_b == 0:
        return math.nan
    # Conditional on the margins, k_a is hypergeometric: n_a draws from n_a + n_b runs of which
    # k_a + k_b failed. Computed with log-gamma (as scipy.stats.fisher_exact, without its import).
    total, failed = n_a + n_b, k_a + k_b
    support = np.arange(max(0, failed - n_b), min(failed, n_a) + 1)
    lg = special.gammaln
    logpmf = (lg(failed + 1) - lg(support + 1) - lg(failed - support + 1)
              + lg(total - failed + 1) - lg(n_a - support + 1) - lg(total - failed - n_a + support + 1)
              - lg(total + 1) + lg(n_a + 1) + lg(total - n_a + 1))
    pmf = np.exp(logpmf)
    if alternative == "greater":
        p = pmf[support >= k_a].sum()
    elif alternative == "less":
        p = pmf[support <= k_a].sum()
    else:  # tables at most as likely as the observed one (relative tolerance as scipy's)
        observed = pmf[support == k_a][0]
        p = pmf[pmf <= observed * (1 + 1e-7)].sum()
    return float(min(1.0, p))


def newcombe_diff(
    k_a: int, n_a: int, k_b: int, n_b: int, *, confidence: float = DEFAULT_CONFIDENCE
) -> RateDiffResult:
    """``k_a/n_a - k_b/n_b`` with Newcombe's hybrid score interval (1998, method 10).

    Built from the two Wilson intervals (l, u): ``d - sqrt((p_a-l_a)^2 + (u_b-p_b)^2)`` to
    ``d + sqrt((u_a-p_a)^2 + (p_b-l_b)^2)``. Defined for 0-vs-0 counts (unlike the score
    inversion). The p-value is Fisher's exact test, two-sided.
    """
    if n_a <= 0 or n_b <= 0:
        return RateDiffResult(k_a, n_a, k_b, n_b, math.nan, math.nan, math.nan, math.nan,
                              "newcombe", "fisher exact", confidence)
    pa, pb = k_a / n_a, k_b / n_b
    la, ua = wilson_interval(k_a, n_a, confidence=confidence)
    lb, ub = wilson_interval(k_b, n_b, confidence=confidence)
    d = pa - pb
    low = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return RateDiffResult(k_a, n_a, k_b, n_b, d, max(-1.0, low), min(1.0, high),
                          fisher_exact(k_a, n_a, k_b, n_b), "newcombe", "fisher exact", confidence)


# --------------------------------------------------------------------------- regression


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


# --------------------------------------------------------------------------- variance & p


def brown_forsythe(*groups: ArrayLike) -> TestResult:
    """Brown-Forsythe test of equal spread (Levene's test centred at the median).

    groups: two or more 1-D arrays. Robust to skew and to failed-run mixtures, unlike the
    F test or Bartlett's (which reject far too often there). Same statistic and p-value as
    ``scipy.stats.levene(center='median')`` (checked in the tests).
    """

    arrays = [_as_1d(g, f"group {i}") for i, g in enumerate(groups)]
    sizes = tuple(a.size for a in arrays)
    usable = [a for a in arrays if a.size >= 2]
    name = "Brown-Forsythe (median-centred Levene)"
    if len(usable) < 2:
        return TestResult(name, math.nan, math.nan, sizes, warnings=("needs two groups with >= 2 runs each",))
    notes = [] if len(usable) == len(arrays) else ["groups with fewer than 2 runs were left out"]
    # All deviations zero in every group: the statistic is 0/0; equal spread is not in doubt.
    if all(np.all(a == np.median(a)) for a in usable):
        return TestResult(name, math.nan, 1.0, sizes, (len(usable) - 1.0, sum(a.size for a in usable) - len(usable)),
                          tuple(notes + ["every group is constant: no spread to compare"]))
    # One-way ANOVA on absolute deviations from each group's median; F tail via scipy.special.
    z = [np.abs(a - np.median(a)) for a in usable]
    n_i = np.array([a.size for a in z], dtype=np.float64)
    zbar_i = np.array([a.mean() for a in z])
    n_total, k = float(n_i.sum()), float(len(z))
    zbar = float((n_i * zbar_i).sum() / n_total)
    within = float(sum(((a - m) ** 2).sum() for a, m in zip(z, zbar_i, strict=True)))
    between = float((n_i * (zbar_i - zbar) ** 2).sum())
    df = (k - 1.0, n_total - k)
    w = (df[1] / df[0]) * between / within if within > 0 else math.inf
    p = float(special.fdtrc(df[0], df[1], w)) if math.isfinite(w) else 0.0
    return TestResult(name, float(w), p, sizes, df, tuple(notes))


def holm(pvalues: ArrayLike) -> FloatArray:
    """Holm (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    stepped = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(stepped))
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> FloatArray:
    """Benjamini-Hochberg (1995) adjusted p-values (FDR); NaN entries stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out


def adjust_pvalues(pvalues: ArrayLike, method: Literal["holm", "bh", "none"] | str = "holm") -> FloatArray:
    """Adjust p-values for multiple comparisons: ``holm`` (family-wise), ``bh`` (FDR) or ``none``."""
    if method == "holm":
        return holm(pvalues)
    if method == "bh":
        return benjamini_hochberg(pvalues)
    if method == "none":
        return np.asarray(pvalues, dtype=np.float64).reshape(-1).copy()
    raise ValueError(f"unknown correction {method!r}; choose 'holm', 'bh' or 'none'")


def _exp(x: float) -> float:
    """``math.exp`` that gives inf instead of raising: an odds ratio per unit of a factor with
    tiny values (e.g. lr ~ 2e-5, transform "none") has a coefficient of ~1e5."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
