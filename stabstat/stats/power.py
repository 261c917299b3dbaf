"""How many seeds: power of the mean-difference test, of Fisher's test of failure rates, and
the seeds needed for a CI of the mean narrower than a width.

* :func:`bootstrap_power` (deepsig's bootstrap power analysis; Colas et al. 2018): simulated
  experiments of n runs per arm are drawn *from the pilot runs* (with replacement, so the
  pilot's shape -- skew, failed runs -- is kept) and tested; the power at n is the share that
  reject at ``alpha`` (two-sided). The test is ``compare``'s, the permutation test of the mean
  difference: enumerated exactly up to :data:`EXACT_MAX_N` runs per arm (where a t-test would
  wrongly reject two identical failed runs against two successful ones), and beyond that its
  large-sample equivalent, Welch's t-test, vectorised over the experiments
  (``test="permutation"`` runs the Monte-Carlo permutation test there too, with
  ``permutations`` per experiment: ~100x slower). Monte-Carlo error of a power ``p`` from
  ``B`` experiments: ``sqrt(p (1 - p) / B)``.
* :func:`normal_power` / :func:`normal_n`: the analytic normal approximation
  ``power = Phi(z - z_{1-alpha/2}) + Phi(-z - z_{1-alpha/2})``, ``z = |delta| / sqrt((s_a^2 + s_b^2) / n)``.
* :func:`fisher_power`: exact power of Fisher's exact test (two-sided, as ``compare`` and
  ``failure-rate`` use) for failure rates ``p_a`` vs ``p_b`` with n runs each: the sum over
  every outcome ``(k_a, k_b)`` of its binomial probability times whether Fisher rejects, the
  p-values of all tables with the same total computed at once from the hypergeometric pmf.
* :func:`ci_width_n`: the expected width of the t interval of the mean,
  ``2 t_{n-1} s / sqrt(n)``, and the smallest n below a target width.
* :func:`pilot_sd_interval`: the chi-square interval of the SD behind every analytic n: a
  pilot of m runs knows its SD only to within this range, and the n needed scales with its square.

References
----------
Colas, Sigaud & Oudeyer (2018), How many random seeds? Statistical power analysis in deep
reinforcement learning experiments, arXiv:1806.08295.
Dror, Shlomov & Reichart (2019), Deep dominance (deepsig: bootstrap power analysis), ACL.
Fisher (1935), The logic of inductive inference, JRSS 98:39-82.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats._common import FloatArray, RNGLike, _as_1d, _as_rng

__all__ = ["EXACT_MAX_N", "bootstrap_power", "ci_width_n", "fisher_power", "fisher_pvalues", "normal_n",
           "normal_power", "pilot_sd_interval", "t_quantile"]

TESTS = ("welch", "permutation")


def _welch_reject(mean_a: FloatArray, var_a: FloatArray, na: int, mean_b: FloatArray, var_b: FloatArray, nb: int,
                  alpha: float) -> NDArray[np.bool_]:
    """Two-sided Welch t-test of ``B`` experiments given their arms' means and variances
    (ddof 1), each ``(B,)``, with ``na`` and ``nb`` runs."""
    from scipy.special import stdtr

    va, vb = var_a / na, var_b / nb
    se2 = va + vb
    diff = mean_a - mean_b
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / np.sqrt(se2)
        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        p = 2 * stdtr(df, -np.abs(t))
    # identical constant samples: no evidence; different constants: certain
    p = np.where(se2 > 0, p, np.where(diff != 0, 0.0, 1.0))
    return np.asarray(p < alpha)


def _permutation_reject(a: FloatArray, b: FloatArray, alpha: float, permutations: int,
                        rng: np.random.Generator) -> NDArray[np.bool_]:
    """Two-sided permutation test of the mean difference for each row (Monte-Carlo p-value
    ``(1 + #|d*| >= |d|) / (1 + permutations)``, as ``stats.permutation_test``)."""
    pooled = np.concatenate([a, b], axis=1)
    na, n = a.shape[1], pooled.shape[1]
    observed = np.abs(a.mean(axis=1) - b.mean(axis=1))
    hits = np.zeros(pooled.shape[0])
    total = pooled.sum(axis=1)
    for _ in range(permutations):
        idx = rng.permuted(np.broadcast_to(np.arange(n), pooled.shape), axis=1)[:, :na]
        sa = np.take_along_axis(pooled, idx, axis=1).sum(axis=1)
        d = np.abs(sa / na - (total - sa) / (n - na))
        hits += d >= observed - 1e-12
    return np.asarray((1 + hits) / (1 + permutations) <= alpha)


#: Up to this many runs per arm the simulated experiments are tested with the exact permutation
#: test (every split of the 2n runs: 924 at n = 6); beyond, with Welch's t-test.
EXACT_MAX_N = 6


def _exact_permutation_reject(a: FloatArray, b: FloatArray, alpha: float) -> NDArray[np.bool_]:
    """Two-sided exact permutation test of the mean difference for each row of ``a`` and
    ``b`` (both ``(B, n)``): the p-value is the share of the ``C(2n, n)`` splits whose
    ``|mean difference|`` is at least the observed one. A small n cannot reject at all when
    ``2 / C(2n, n) > alpha`` (n <= 3 at alpha 0.05), as ``compare``'s test cannot."""
    from itertools import combinations

    n = a.shape[1]
    pooled = np.concatenate([a, b], axis=1)
    # A split and its complement have the same |difference|: the half with run 0 in arm a will do.
    splits = np.array([c for c in combinations(range(2 * n), n) if c[0] == 0], dtype=np.intp)  # (S/2, n)
    member = np.zeros((2 * n, splits.shape[0]))
    member[splits.T, np.arange(splits.shape[0])] = 1.0  # run i is in arm a of split s
    total = pooled.sum(axis=1)
    sa = pooled @ member  # (B, S): arm a's sum in every split, one matrix product
    # |mean_a - mean_b| = |2 sa - total| / n >= the observed |sum_a - sum_b| / n, without the
    # abs: sa at or beyond either end of [(total - obs) / 2, (total + obs) / 2]
    observed = np.abs(a.sum(axis=1) - b.sum(axis=1)) - 1e-12 * n
    hi, lo = ((total + observed) / 2)[:, None], ((total - observed) / 2)[:, None]
    extreme = np.count_nonzero((sa >= hi) | (sa <= lo), axis=1)
    return np.asarray(extreme / splits.shape[0] <= alpha)


def bootstrap_power(a: ArrayLike, b: ArrayLike, ns: Sequence[int], *, alpha: float = 0.05,
                    resamples: int = 2000, test: str = "welch", permutations: int = 199,
                    rng: RNGLike = None) -> FloatArray:
    """Power of the two-sided mean-difference test at each n (runs per arm), by simulating
    ``resamples`` experiments drawn from the pilot runs ``a`` ``(m_a,)`` and ``b`` ``(m_b,)``.

    To plan for a difference ``delta`` other than the observed one, pass ``b = a + delta``
    (a location shift that keeps the pilot's shape). Returns ``(len(ns),)``.
    """
    xa, xb = _as_1d(a, "a"), _as_1d(b, "b")
    if xa.size < 2 or xb.size < 2:
        raise ValueError("bootstrap power needs at least 2 pilot runs per arm")
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose {' or '.join(TESTS)}")
    if min(ns, default=2) < 2:
        raise ValueError(f"n = {min(ns)}: a test needs at least 2 runs per arm")
    gen, _ = _as_rng(rng)
    # One experiment of n_max runs per arm; the experiment of n runs is its first n (common
    # random numbers across n: a smoother curve, and one draw instead of one per n).
    n_max = max(ns)
    sa = xa[gen.integers(0, xa.size, size=(resamples, n_max))]
    sb = xb[gen.integers(0, xb.size, size=(resamples, n_max))]
    ca, cb = np.cumsum(sa, axis=1), np.cumsum(sb, axis=1)
    qa, qb = np.cumsum(sa * sa, axis=1), np.cumsum(sb * sb, axis=1)
    out = np.empty(len(ns))
    for j, n in enumerate(ns):
        if n <= EXACT_MAX_N and 2 / math.comb(2 * n, n) > alpha:
            rej = np.zeros(resamples, dtype=bool)  # not even the most extreme split reaches alpha
        elif n <= EXACT_MAX_N:
            rej = _exact_permutation_reject(sa[:, :n], sb[:, :n], alpha)
        elif test == "welch":
            ma, mb = ca[:, n - 1] / n, cb[:, n - 1] / n
            va = np.maximum(qa[:, n - 1] - n * ma * ma, 0.0) / (n - 1)
            vb = np.maximum(qb[:, n - 1] - n * mb * mb, 0.0) / (n - 1)
            rej = _welch_reject(ma, va, n, mb, vb, n, alpha)
        else:
            rej = _permutation_reject(sa[:, :n], sb[:, :n], alpha, permutations, gen)
        out[j] = rej.mean()
    return out


def _z(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def normal_power(delta: float, sd_a: float, sd_b: float, n: int | ArrayLike, *, alpha: float = 0.05) -> FloatArray:
    """Analytic power (normal approximation, two-sided) to detect ``delta`` with n runs per arm."""
    from scipy.special import ndtr

    nn = np.asarray(n, dtype=np.float64)
    se = np.sqrt((sd_a**2 + sd_b**2) / nn)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, abs(delta) / se, np.inf if delta else 0.0)
    crit = _z(1 - alpha / 2)
    return np.asarray(ndtr(z - crit) + ndtr(-z - crit), dtype=np.float64)  # both tails reject


def normal_n(delta: float, sd_a: float, sd_b: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Smallest n per arm with :func:`normal_power` >= ``power`` (None when delta is 0)."""
    if delta == 0:
        return None
    z = _z(1 - alpha / 2) + _z(power)
    n = max(2, math.ceil(z**2 * (sd_a**2 + sd_b**2) / delta**2 - 1e-9))  # one tail: at most 1 too many
    while n > 2 and normal_power(delta, sd_a, sd_b, n - 1, alpha=alpha) >= power:
        n -= 1
    return n


def pilot_sd_interval(sd: float, m: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The chi-square CI of a normal SD estimated from ``m`` pilot runs."""
    from scipy.special import chdtri  # chdtri(df, q): the chi-square quantile of upper tail q

    if m < 2:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo = sd * math.sqrt((m - 1) / chdtri(m - 1, alpha))
    hi = sd * math.sqrt((m - 1) / chdtri(m - 1, 1 - alpha))
    return float(lo), float(hi)


def fisher_pvalues(n_a: int, n_b: int) -> FloatArray:
    """Two-sided Fisher exact p-values of every 2x2 table: ``(n_a + 1, n_b + 1)``, entry
    ``[k_a, k_b]`` for ``k_a`` of ``n_a`` and ``k_b`` of ``n_b`` failed runs (tables whose
    probability is at most the observed one, relative tolerance 1e-7 as scipy)."""
    return _fisher_pvalues(int(n_a), int(n_b)).copy()


@lru_cache(maxsize=64)
def _fisher_pvalues(n_a: int, n_b: int) -> FloatArray:
    from scipy.special import gammaln

    def log_comb(n: int, k: NDArray[np.int64]) -> FloatArray:
        return np.asarray(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1), dtype=np.float64)

    out = np.empty((n_a + 1, n_b + 1))
    for t in range(n_a + n_b + 1):
        lo, hi = max(0, t - n_b), min(n_a, t)
        ka = np.arange(lo, hi + 1)
        # hypergeometric pmf of k_a given the total t (the margins are fixed under the null)
        pmf = np.exp(log_comb(n_a, ka) + log_comb(n_b, t - ka) - log_comb(n_a + n_b, np.array(t)))
        order = np.sort(pmf)
        # p(k) = sum of the pmf over tables no more likely than k
        csum = np.cumsum(order)
        pos = np.searchsorted(order, pmf * (1 + 1e-7), side="right")
        out[ka, t - ka] = np.minimum(1.0, csum[pos - 1])
    return out


def fisher_power(p_a: float, p_b: float, n: int | Sequence[int], *, alpha: float = 0.05) -> FloatArray:
    """Exact power of the two-sided Fisher test with n runs per arm when the failure rates
    are ``p_a`` and ``p_b``. Returns ``(len(n),)`` (a scalar n gives one value)."""
    ns = [int(n)] if isinstance(n, (int, np.integer)) else [int(x) for x in n]
    out = np.empty(len(ns))
    for j, m in enumerate(ns):
        reject = _fisher_pvalues(m, m) <= alpha
        out[j] = float(_binom_pmf(m, p_a) @ reject @ _binom_pmf(m, p_b))
    return out


def _binom_pmf(m: int, p: float) -> FloatArray:
    """Binomial pmf of 0..m (scipy.special only: scipy.stats costs ~1 s to import)."""
    from scipy.special import gammaln, xlog1py, xlogy

    k = np.arange(m + 1, dtype=np.float64)
    logc = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
    return np.asarray(np.exp(logc + xlogy(k, p) + xlog1py(m - k, -p)), dtype=np.float64)


def t_quantile(q: float, df: ArrayLike) -> FloatArray:
    """Student's t quantile ``q`` for each df (scipy.special's ``stdtrit``)."""
    from scipy.special import stdtrit

    return np.asarray(stdtrit(np.asarray(df, dtype=np.float64), q), dtype=np.float64)


def ci_width_n(sd: float, width: float, *, confidence: float = 0.95, n_max: int = 10_000) -> tuple[int | None, float]:
    """Smallest n whose t interval of the mean, ``2 t_{n-1} sd / sqrt(n)``, is narrower than
    ``width``, and that interval's width (None, NaN when even ``n_max`` runs are not enough)."""
    if sd == 0:
        return 2, 0.0
    ns = np.arange(2, n_max + 1)
    widths = 2 * t_quantile(1 - (1 - confidence) / 2, ns - 1) * sd / np.sqrt(ns)
    ok = np.nonzero(widths < width)[0]
    if not ok.size:
        return None, math.nan
    return int(ns[ok[0]]), float(widths[ok[0]])
