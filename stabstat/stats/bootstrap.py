"""Bootstrap confidence intervals for one and two samples, and for correlations.

One sample (:func:`bootstrap_ci`, several statistics at once :func:`bootstrap_statistics`,
several groups at once :func:`bootstrap_groups`), two samples (:func:`bootstrap_diff`:
difference or ratio, paired or not; :func:`probability_of_improvement`) and paired
samples (:func:`bootstrap_correlation`). Inputs are ``(n,)`` per-seed values; results
are :class:`BootstrapResult`. The resampling machinery is in
:mod:`stabstat.stats.resampling`; bootstraps stratified over tasks are in
:mod:`stabstat.stats.stratified`.

References
----------
Agarwal et al. (2021), Deep RL at the edge of the statistical precipice, NeurIPS
(probability of improvement).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats._common import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_SEEDS,
    STATISTICS,
    CIMethod,
    FloatArray,
    RNGLike,
    Statistic,
    _as_1d,
    _as_rng,
    _check_common,
    resolve_method,
    seed_warnings,
)
from stabstat.stats.resampling import (
    _draw_counts,
    _intervals,
    _jackknife_counts,
    _result,
    _stat_from_counts,
    compute_statistic,
)
from stabstat.stats.results import BootstrapResult

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
    Groups of the same size share one ``(n, resamples)`` count matrix (see
    :mod:`stabstat.stats.resampling`).
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
        m = resolve_method(method, statistic, n)
        if n < 2:
            for i in idx:
                est = float(compute_statistic(statistic, arrays[i])) if n == 1 and statistic != "std" else math.nan
                out[i] = _result(est, math.nan, math.nan, statistic, m, resamples, seed,
                                 confidence, n, seed_warnings(n, purpose=f"the {statistic}", minimum=min_seeds))
            continue
        xs = np.sort(np.stack([arrays[i] for i in idx]), axis=1)
        theta_hat = np.asarray(compute_statistic(statistic, xs, axis=1), dtype=np.float64)
        counts = _draw_counts(gen, resamples, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            theta_b = _stat_from_counts(statistic, xs, counts, n)
            jack = [_stat_from_counts(statistic, xs, _jackknife_counts(n), n - 1)] if m == "bca" else None
        low, high, notes, used = _intervals(theta_hat, theta_b, jack, m, confidence)
        for j, i in enumerate(idx):
            w = seed_warnings(n, purpose=f"a CI of the {statistic}", minimum=min_seeds) + notes[j]
            out[i] = _result(theta_hat[j], low[j], high[j], statistic, used[j], resamples, seed,
                             confidence, n, w)
    return [r for r in out if r is not None]


def bootstrap_statistics(
    x: ArrayLike,
    statistics: Sequence[str] = STATISTICS,
    *,
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
    min_seeds: int = MIN_SEEDS,
    _counts: NDArray[Any] | None = None,
) -> dict[str, BootstrapResult]:
    """Bootstrap CIs of several statistics of one sample ``x`` (``(n,)``) from one set of
    resamples (the statistics share the draws). Returns statistic -> result.

    ``_counts`` (internal): the ``(n, R)`` count matrix to use, rows attached to the *sorted*
    values (what :func:`draw_counts` of the same ``rng`` would give first; ``compare`` draws it
    itself to reuse it for the pairs the sample is in)."""
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
    xs = np.sort(arr)[None, :]  # the estimate from sorted values: summed in the resamples' order
    counts = _counts if _counts is not None else _draw_counts(gen, resamples, n)
    for st_name in statistics:
        m = resolve_method(method, st_name, n)
        theta_hat = np.atleast_1d(np.asarray(compute_statistic(st_name, xs, axis=1), dtype=np.float64))
        theta_b, jk = bootstrap_replicates(arr, counts, statistic=st_name, jackknife=m == "bca")
        low, high, notes, used = _intervals(theta_hat, theta_b, None if jk is None else [jk], m, confidence)
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

#: One sample's bootstrap replicates ``(1, R)`` and leave-one-out values ``(1, n)`` (or None).
Replicates = tuple[FloatArray, FloatArray | None]


def bootstrap_replicates(x: ArrayLike, counts: NDArray[Any], *, statistic: Statistic | str = "mean",
                         by_position: bool = False, jackknife: bool = True) -> Replicates:
    """``statistic`` of each resample of ``x`` (``(n,)``) given as counts ``(n, R)``, and of
    each leave-one-out sample (for BCa's acceleration; None unless ``jackknife``).

    ``by_position=False``: row k of counts belongs to the k-th smallest value (how
    :func:`draw_counts` matrices are used for a sample on its own); the leave-one-out values
    are then in sorted order. ``True``: row i belongs to ``x[i]`` (pairs resampled together:
    the same row of both samples is the same seed), and so does leave-one-out value i.
    Returns ``(theta_b (1, R), jack (1, n) or None)``.
    """
    xv = np.asarray(x, dtype=np.float64)
    n = xv.size
    order = np.argsort(xv, kind="stable") if by_position else None
    xs = (xv[order] if order is not None else np.sort(xv))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_b = _stat_from_counts(statistic, xs, counts[order] if order is not None else counts, n)
        jack = None
        if jackknife:
            jk = _jackknife_counts(n)
            jack = _stat_from_counts(statistic, xs, jk[order] if order is not None else jk, n - 1)
    return theta_b, jack



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
    _replicates: tuple[Replicates, Replicates] | None = None,
) -> BootstrapResult:
    """CI of ``stat(a) - stat(b)`` (``op='diff'``) or ``stat(a) / stat(b)`` (``op='ratio'``).

    Unpaired (default): a (``(n_a,)``) and b (``(n_b,)``) are resampled independently.
    Paired: a and b have the same length and position i of both is the same seed; pairs
    are resampled together (for the mean this is the CI of the mean per-seed difference).
    BCa uses the jackknife of each sample (unpaired) or of the pairs (paired).
    ``_counts`` (internal) reuses count matrices drawn by :func:`draw_counts` (common
    random numbers across statistics of the same pair): ``(n_a, R)`` and ``(n_b, R)``,
    or the same ``(n, R)`` matrix twice when paired. ``_replicates`` (internal) gives each
    sample's :func:`bootstrap_replicates` instead (``by_position=paired``; with the jackknife
    for BCa): ``compare`` computes them once per level and reuses them in every pair of that
    level; the result is the one these counts give, to the last bit.
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
    method = resolve_method(method, statistic, min(xa.size, xb.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        est = float(combine(compute_statistic(statistic, xa), compute_statistic(statistic, xb))) \
            if min(xa.size, xb.size) >= (2 if statistic == "std" else 1) else math.nan
    if min(xa.size, xb.size) < 2 or not math.isfinite(est):
        if math.isfinite(est) is False and min(xa.size, xb.size) >= 2:
            notes.append(f"the {label} is undefined for these data (division by zero)")
        return _result(est, math.nan, math.nan, statistic, method, resamples, seed, confidence, n_out, notes)

    bca = method == "bca"
    if _replicates is None:
        if paired:
            counts = _counts[0] if _counts is not None else _draw_counts(gen, resamples, xa.size)
            ca = cb = counts
        else:
            ca, cb = _counts if _counts is not None else (
                _draw_counts(gen, resamples, xa.size), _draw_counts(gen, resamples, xb.size))
        _replicates = (bootstrap_replicates(xa, ca, statistic=statistic, by_position=paired, jackknife=bca),
                       bootstrap_replicates(xb, cb, statistic=statistic, by_position=paired, jackknife=bca))
    (ta, ja), (tb, jb) = _replicates
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_b = combine(ta, tb)
        jack = None
        if bca:
            assert ja is not None and jb is not None, "_replicates without jackknife values for a BCa interval"
            # Paired: leave one *pair* out (position i of both); unpaired: one value of either sample.
            jack = [combine(ja, jb)] if paired else [combine(ja, compute_statistic(statistic, xb)),
                                                     combine(compute_statistic(statistic, xa), jb)]
    low, high, more, used = _intervals(np.array([est]), theta_b, jack, method, confidence)
    if not np.all(np.isfinite(theta_b)):
        more[0].append(f"some resamples give an undefined {label} (e.g. a zero denominator); no interval")
    return _result(est, low[0], high[0], label, used[0], resamples, seed, confidence, n_out, notes + more[0])


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
    method = resolve_method(method, "probability of improvement", min(na, nb))
    notes = seed_warnings(min(na, nb), purpose="a CI of the probability of improvement")
    if na == 0 or nb == 0:
        return _result(math.nan, math.nan, math.nan, "probability of improvement", method,
                       resamples, seed, confidence, (na, nb), notes)
    # The statistic is c_a @ K @ c_b / (t_a t_b) with K[i, j] = 1 if a_i > b_j, 1/2 if equal.
    # With a sorted, column j of c_a @ K is a difference of prefix sums of c_a at the two
    # insertion points of b_j: O((n_a + n_b) R) integer work instead of O(n_a n_b R), and
    # exact (twice the sum is an integer), so the numbers equal the pairwise kernel's.
    below = np.searchsorted(xa, xb, side="left")  # (n_b,) values of a < b_j
    upto = np.searchsorted(xa, xb, side="right")  # (n_b,) values of a <= b_j

    def stat(ca: NDArray[Any], cb: NDArray[Any], ta: int, tb: int) -> FloatArray:
        # ca: (n_a, R), cb: (n_b, R) counts summing to ta, tb per column -> (R,).
        # The narrowest integer type in which every product fits (2 ta tb): int16 up to ~120
        # values per group, int32 beyond, int64 past 2**31: less memory traffic, the same sums.
        wide = np.int16 if 2 * ta * tb < 2**15 else np.int32 if 2 * ta * tb < 2**31 else np.int64
        cum = np.zeros((ca.shape[0] + 1, ca.shape[1]), dtype=wide)
        np.cumsum(ca, axis=0, out=cum[1:])
        # 2 * (#a > b_j) + (#a = b_j) per resample: (n_b, R)
        twice = 2 * cum[-1] - cum[upto] - cum[below]
        return (twice * cb.astype(wide, copy=False)).sum(axis=0, dtype=np.int64) / 2.0 / (ta * tb)

    est = float(stat(np.ones((na, 1), dtype=np.int64), np.ones((nb, 1), dtype=np.int64), na, nb)[0])

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


# --------------------------------------------------------------------------- correlation


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
    method = resolve_method(method, "correlation", n)
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
