"""Expected maximum of k runs: "what best dev score should I expect from k seeds?".

For n observed values ``v_(1) <= ... <= v_(n)`` (one per run) and k = 1..n:

* **unbiased** (Tang et al. 2020, the default): the average over all ``C(n, k)`` subsets of k
  runs of their maximum, ``E_k = sum_i v_(i) C(i-1, k-1) / C(n, k)`` (the i-th smallest value is
  the maximum of exactly ``C(i-1, k-1)`` subsets). A U-statistic: unbiased for the expected
  maximum of k runs drawn from the population, defined for k <= n.
* **plug-in** (Dodge et al. 2019, "Show your work"): the expected maximum of k draws *with
  replacement* from the empirical distribution, ``E_k = sum_i v_(i) ((i/n)^k - ((i-1)/n)^k)``.
  Biased low for k near n (a draw repeats a run instead of adding a new one).

Bootstrap bands resample the runs (``(n, resamples)`` count matrices as in
:mod:`~stabstat.stats.resampling`): a resampled value repeated ``c`` times occupies ``c``
consecutive ranks, so its weight is a difference of the cumulative weights
(``sum_{i <= q} C(i-1, k-1) = C(q, k)``); summed by parts, every resample and every k is one
matrix product. Ties are handled the same way.

Budget: when runs cost different amounts (e.g. steps x batch size), ``k = floor(budget / cost)``
runs of a configuration fit in a budget; :func:`expected_max_budget` gives ``E_k`` at that k.

References
----------
Dodge, Gururangan, Card, Schwartz & Smith (2019), Show your work: improved reporting of
experimental results, EMNLP.
Tang, Chen, Cheng, Shan & Liu (2020), Showing your work doesn't always work, ACL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats._common import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    FloatArray,
    RNGLike,
    _as_1d,
    _as_rng,
)
from stabstat.stats.resampling import draw_counts

__all__ = ["ESTIMATORS", "ExpectedMaxResult", "expected_max", "expected_max_budget", "expected_max_curve"]

ESTIMATORS = ("unbiased", "plugin")


def _log_comb(m: NDArray[Any], k: int) -> FloatArray:
    """``log C(m, k)`` elementwise (``-inf`` where ``m < k``)."""
    # scipy's vectorised gammaln, imported here: this module loads with stabstat.stats (its
    # name is also a function's), and scipy.special costs ~0.15 s of every CLI start-up.
    from scipy.special import gammaln

    m = np.asarray(m, dtype=np.float64)
    out = np.full(m.shape, -np.inf)
    ok = m >= k
    out[ok] = gammaln(m[ok] + 1) - gammaln(k + 1) - gammaln(m[ok] - k + 1)
    return out


def _cum_weight(cum: NDArray[Any], n: int, k: int, estimator: str) -> FloatArray:
    """Share of the k-subsets (unbiased) / k-draws (plug-in) whose maximum is among the ``cum``
    smallest values: ``C(cum, k) / C(n, k)`` or ``(cum / n) ** k``."""
    if estimator == "plugin":
        return np.asarray((cum / n) ** k, dtype=np.float64)
    return np.exp(_log_comb(cum, k) - _log_comb(np.array(n), k))


def expected_max(values: ArrayLike, k: int | Sequence[int] | None = None, *, estimator: str = "unbiased"
                 ) -> FloatArray:
    """Expected maximum of k runs for each k (default 1..n). values: ``(n,)``; returns
    ``(len(k),)``. The unbiased estimator needs k <= n."""
    v = np.sort(_as_1d(values))
    n = v.size
    ks = list(range(1, n + 1)) if k is None else ([int(k)] if isinstance(k, (int, np.integer)) else list(k))
    _check(n, ks, estimator)
    cum = np.arange(n + 1, dtype=np.float64)
    return np.array([float(v @ np.diff(_cum_weight(cum, n, kk, estimator))) for kk in ks])


def _check(n: int, ks: Sequence[int], estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose {' or '.join(ESTIMATORS)}")
    if n < 1:
        raise ValueError("no values")
    bad = [k for k in ks if k < 1 or (estimator == "unbiased" and k > n)]
    if bad:
        raise ValueError(f"k = {bad[0]} is outside 1..{n} (the unbiased estimator needs k <= n runs)")


@dataclass(frozen=True)
class ExpectedMaxResult:
    """Expected maximum of k runs with a percentile bootstrap band, for each k.

    ``k``, ``estimate``, ``ci_low``, ``ci_high`` are ``(K,)`` arrays; ``n`` the runs."""

    k: NDArray[np.int64]
    estimate: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    n: int
    estimator: str
    resamples: int
    confidence: float
    seed: int | None
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "n": self.n, "resamples": self.resamples, "confidence": self.confidence,
                "seed": self.seed, "k": self.k.tolist(), "estimate": self.estimate.tolist(),
                "ci_low": self.ci_low.tolist(), "ci_high": self.ci_high.tolist(), "warnings": list(self.warnings)}


def expected_max_curve(values: ArrayLike, *, k: Sequence[int] | None = None, estimator: str = "unbiased",
                       resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                       rng: RNGLike = None) -> ExpectedMaxResult:
    """Expected maximum of k runs (k = 1..n by default) with a bootstrap band (runs resampled).

    values: ``(n,)`` metric per run. The band at k = n is the bootstrap distribution of the
    sample maximum's expectation and is narrow only when the top runs agree.
    """
    v = np.sort(_as_1d(values))
    n = v.size
    ks = list(range(1, n + 1)) if k is None else [int(x) for x in k]
    _check(n, ks, estimator)
    gen, seed = _as_rng(rng)
    est = expected_max(v, ks, estimator=estimator)
    lo = np.full(len(ks), math.nan)
    hi = np.full(len(ks), math.nan)
    notes: list[str] = []
    if n >= 2 and resamples >= 2:
        counts = draw_counts(gen, resamples, n)  # (n, B) over the sorted values
        cum = np.cumsum(counts, axis=0, dtype=np.intp)  # rank of each value's last copy
        # Summation by parts: E_b(k) = sum_j v_j (T_k(cum_j) - T_k(cum_{j-1}))
        #                            = sum_j (v_j - v_{j+1}) T_k(cum_j)      (v_{n+1} = 0),
        # so each resample is a histogram W_b(m) of the weights dv over the ranks m, and every k
        # at once is one matrix product with the table T[m, k] (B x (n+1) x K).
        dv = v - np.append(v[1:], 0.0)
        index = cum.T + np.arange(resamples)[:, None] * (n + 1)  # (B, n)
        w = np.bincount(index.ravel(), weights=np.broadcast_to(dv, (resamples, n)).ravel(),
                        minlength=resamples * (n + 1)).reshape(resamples, n + 1)
        grid = np.arange(n + 1)
        table = np.stack([_cum_weight(grid, n, kk, estimator) for kk in ks], axis=1)  # (n+1, K)
        reps = w @ table  # (B, K)
        alpha = (1 - confidence) / 2
        lo, hi = np.quantile(reps, [alpha, 1 - alpha], axis=0)
    else:
        notes.append(f"only {n} run(s): no band")
    return ExpectedMaxResult(np.asarray(ks, dtype=np.int64), est, lo, hi, n, estimator, resamples, confidence, seed,
                             tuple(notes))


def expected_max_budget(values: ArrayLike, costs: ArrayLike, budgets: ArrayLike, *, estimator: str = "unbiased"
                        ) -> tuple[NDArray[np.int64], FloatArray]:
    """Expected maximum within each compute budget: ``k = floor(budget / mean cost)`` runs.

    values, costs: ``(n,)`` metric and cost per run (e.g. steps x batch size, > 0). budgets:
    ``(m,)`` in the costs' unit. Returns ``k`` ``(m,)`` and the expected maximum ``(m,)``: NaN
    where not even one run fits (k = 0) or where k exceeds the n observed runs (no data there).
    """
    v = _as_1d(values)
    c = _as_1d(costs, "costs")
    if c.size != v.size:
        raise ValueError(f"{c.size} costs for {v.size} values")
    if np.any(c <= 0):
        raise ValueError("costs must be > 0")
    b = np.asarray(budgets, dtype=np.float64).reshape(-1)
    ks = np.floor(b / float(c.mean()) + 1e-9).astype(np.int64)
    curve = expected_max(v, None, estimator=estimator)
    out = np.full(b.size, math.nan)
    ok = (ks >= 1) & (ks <= v.size)
    out[ok] = curve[ks[ok] - 1]
    return ks, out
