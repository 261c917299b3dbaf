"""Almost stochastic order (ASO; Dror, Shlomov & Reichart 2019, ACL; del Barrio, Cuesta-Albertos
& Matran 2018, An optimal transportation approach for assessing almost stochastic order).

For score samples A (size n) and B (size m) with empirical quantile functions F^-1 and G^-1
(``F^-1(t) = a_(ceil(n t))``, the sorted sample), the violation ratio is

    eps_W2 = integral over {t: F^-1(t) < G^-1(t)} of (F^-1 - G^-1)^2 dt / integral of (F^-1 - G^-1)^2 dt,

the share of the squared Wasserstein-2 distance where A is *below* B. It is computed exactly:
both quantile functions are step functions, constant between the merged breakpoints
``{k/n} u {l/m}``, so the integrals are sums over at most n + m intervals (deepsig
approximates them on a grid of step dt). The bootstrap (B resamples of each sample, done as
one sorted ``(B, n)`` matrix) estimates sigma of ``sqrt(nm/(n+m)) (eps* - eps)``, and

    eps_min = eps_W2 + sigma / sqrt(nm/(n+m)) * z_confidence    (clipped to [0, 1]),

an upper confidence bound on the violation ratio. Interpretation: eps_min < 0.5 means A is
almost stochastically larger than B (higher = better) at that confidence; the usual, stricter
threshold is 0.2 (Ulmer et al., deep-significance). eps_W2 is 0.5 when both samples are
equal (no distance).

Several comparisons: Bonferroni uses confidence ``1 - (1 - c)/k`` for each of k comparisons;
Holm works on the p-values of ``H0: eps >= tau`` implied by the normal approximation,
``p = Phi((eps_W2 - tau) sqrt(nm/(n+m)) / sigma)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats._common import DEFAULT_CONFIDENCE, RNGLike, _as_rng

__all__ = ["ASO_THRESHOLD", "AsoResult", "aso", "aso_matrix", "violation_ratio"]

#: The usual threshold on eps_min for claiming A better than B (Ulmer et al. 2022).
ASO_THRESHOLD = 0.2


def _grid(n: int, m: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Quantile indices into the sorted samples and widths of the intervals between the
    merged breakpoints ``{k/n} u {l/m}`` of (0, 1)."""
    br = np.unique(np.concatenate([np.arange(n + 1) / n, np.arange(m + 1) / m]))
    mid = (br[:-1] + br[1:]) / 2
    ia = np.clip(np.ceil(n * mid).astype(np.intp) - 1, 0, n - 1)
    ib = np.clip(np.ceil(m * mid).astype(np.intp) - 1, 0, m - 1)
    return ia, ib, np.diff(br)


def _ratios(sa: NDArray[np.float64], sb: NDArray[np.float64], dt: float | None = None) -> NDArray[np.float64]:
    """Violation ratios of row-wise sorted samples ``(K, n)`` and ``(K, m)``: ``(K,)``.
    ``dt``: None for the exact integral; a step for deepsig's Riemann sum over
    ``t = dt, 2 dt, ... < 1`` (which leaves the first point out of the numerator only)."""
    n, m = sa.shape[1], sb.shape[1]
    if dt is None:
        ia, ib, w = _grid(n, m)
    else:
        t = np.arange(dt, 1, dt)
        ia = np.clip(np.ceil(n * t).astype(np.intp) - 1, 0, n - 1)
        ib = np.clip(np.ceil(m * t).astype(np.intp) - 1, 0, m - 1)
        w = np.full(t.size, dt)
    d = sb[:, ib] - sa[:, ia]  # G^-1 - F^-1 on each interval
    sq = d**2 * w
    total = sq.sum(axis=1)
    viol = np.where(d > 0, sq, 0.0)
    if dt is not None:
        viol[:, 0] = 0.0
    viol = viol.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, viol / total, 0.5)


def violation_ratio(a: ArrayLike, b: ArrayLike, *, dt: float | None = None) -> float:
    """eps_W2 of A over B (exact, or deepsig's grid of step ``dt``; see the module docstring)."""
    sa = np.sort(np.asarray(a, dtype=np.float64))[None, :]
    sb = np.sort(np.asarray(b, dtype=np.float64))[None, :]
    return float(_ratios(sa, sb, dt)[0])


@dataclass(frozen=True)
class AsoResult:
    """ASO of A over B: ``eps_min`` (upper bound on the violation ratio at ``confidence``,
    already Bonferroni-adjusted when ``comparisons`` > 1), ``violation_ratio`` (eps_W2),
    ``sigma`` (bootstrap SD of the scaled ratio), ``p_value`` of H0 eps >= ``threshold``."""

    eps_min: float
    violation_ratio: float
    sigma: float
    confidence: float
    comparisons: int
    threshold: float
    p_value: float
    n_a: int
    n_b: int
    resamples: int
    seed: int | None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def aso(a: ArrayLike, b: ArrayLike, *, confidence: float = DEFAULT_CONFIDENCE, comparisons: int = 1,
        resamples: int = 1000, threshold: float = ASO_THRESHOLD, dt: float | None = None,
        rng: RNGLike = None) -> AsoResult:
    """Almost stochastic order of scores ``a`` ``(n,)`` over ``b`` ``(m,)`` (higher = better).

    comparisons: Bonferroni factor (the confidence used is ``1 - (1 - confidence)/comparisons``).
    resamples: bootstrap resamples for sigma. dt: None integrates exactly (default); a step
    (deepsig's default 0.005) reproduces deepsig's grid, which leaves the lowest quantile out
    of the violation set and so reads up to a few hundredths lower when the lower tails
    decide. Non-finite scores are dropped (with a warning).
    """
    from scipy.special import ndtr, ndtri

    gen, seed = _as_rng(rng)
    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    notes = []
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        notes.append("non-finite scores dropped")
        xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
    n, m = xa.size, xb.size
    if n == 0 or m == 0:
        return AsoResult(math.nan, math.nan, math.nan, confidence, comparisons, threshold, math.nan, n, m,
                         resamples, seed, (*notes, "a sample is empty"))
    eps = violation_ratio(xa, xb, dt=dt)
    ra = np.sort(xa[gen.integers(0, n, size=(resamples, n))], axis=1)
    rb = np.sort(xb[gen.integers(0, m, size=(resamples, m))], axis=1)
    const = math.sqrt(n * m / (n + m))
    sigma = float(np.std(const * (_ratios(ra, rb, dt) - eps)))
    conf = 1 - (1 - confidence) / comparisons
    eps_min = float(np.clip(eps + sigma / const * ndtri(conf), 0.0, 1.0))
    if sigma > 0:
        p = float(ndtr((eps - threshold) * const / sigma))
    else:
        p = 0.0 if eps < threshold else 1.0
    if eps == 0.5 and sigma == 0:
        notes.append("both samples equal: violation ratio set to 0.5")
    return AsoResult(eps_min, eps, sigma, conf, comparisons, threshold, p, n, m, resamples, seed, tuple(notes))


def aso_matrix(samples: Sequence[ArrayLike], *, confidence: float = DEFAULT_CONFIDENCE, resamples: int = 1000,
               threshold: float = ASO_THRESHOLD, correction: str = "bonferroni",
               rng: RNGLike = None) -> tuple[NDArray[np.float64], NDArray[np.float64], list[AsoResult]]:
    """ASO of every ordered pair (i, j), i != j, of G samples.

    correction: ``"bonferroni"`` (eps_min at confidence ``1 - (1 - c)/(G (G - 1))``, as
    deepsig's ``multi_aso``), ``"holm"`` (eps_min unadjusted; Holm over the p-values of
    H0 eps >= ``threshold``) or ``"none"``. Returns ``(eps_min (G, G), p_adjusted (G, G),
    results)`` (diagonals NaN; results in row-major order of the pairs). Each pair draws from
    its own generator spawned from ``rng``.
    """
    from stabstat.stats.multiple import holm

    gen, _ = _as_rng(rng)
    g = len(samples)
    k = g * (g - 1)
    pairs = [(i, j) for i in range(g) for j in range(g) if i != j]
    kids = gen.spawn(len(pairs))
    res = [aso(samples[i], samples[j], confidence=confidence, resamples=resamples, threshold=threshold,
               comparisons=k if correction == "bonferroni" else 1, rng=kid)
           for (i, j), kid in zip(pairs, kids, strict=True)]
    eps = np.full((g, g), np.nan)
    padj = np.full((g, g), np.nan)
    ps = np.array([r.p_value for r in res])
    adj = holm(ps) if correction == "holm" else np.minimum(ps * k, 1.0) if correction == "bonferroni" else ps
    for (i, j), r, p in zip(pairs, res, np.asarray(adj, dtype=np.float64), strict=True):
        eps[i, j] = r.eps_min
        padj[i, j] = p
    return eps, padj, res
