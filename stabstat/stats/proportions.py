"""Proportions (failure rates): Wilson and Clopper-Pearson intervals, Fisher exact, Newcombe.

A rate is ``k`` failed runs out of ``n``; results are :class:`RateResult` (one rate) and
:class:`RateDiffResult` (a difference of two). Beta quantiles, normal quantiles and
log-gamma come from :mod:`stabstat.stats.special` (importing ``scipy.stats`` costs ~0.8 s of
CLI start-up, ``scipy.special`` ~0.15 s).

References
----------
Wilson (1927), JASA 22:209-212. Clopper & Pearson (1934), Biometrika 26:404-413.
Newcombe (1998), Statistics in Medicine 17:873-890 (method 10, hybrid score).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from stabstat.stats import special
from stabstat.stats._common import DEFAULT_CONFIDENCE, seed_warnings
from stabstat.stats.results import RateDiffResult, RateResult


def clopper_pearson_interval(k: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k successes out of n."""
    # Beta quantiles through stabstat.stats.special: no scipy import on the CLI's path.
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
    # k_a + k_b failed. Computed with log-gamma (as scipy.stats.fisher_exact, without scipy).
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
