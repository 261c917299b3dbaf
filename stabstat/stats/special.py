"""The special functions of the statistics, in plain Python/numpy (no ``scipy`` import).

``import scipy.special`` costs 0.15-0.2 s of a CLI process (it pulls scipy's array-API layer,
which imports ``numpy.f2py`` and ``numpy.testing``), more than half of what the whole
``compare`` command may take. The few functions ``compare``'s statistics need are small:

* :func:`ndtr` (standard normal CDF) through :func:`math.erf` / :func:`math.erfc`, the same
  reduction as Cephes' ``ndtr``;
* :func:`ndtri` (its inverse), Wichura's algorithm AS241 (relative accuracy ~1e-16);
* :func:`gammaln` through :func:`math.lgamma`;
* :func:`betainc` (regularised incomplete beta ``I_x(a, b)``) by the continued fraction of
  Numerical Recipes (modified Lentz), its prefactor ``x^a (1-x)^b / B(a, b)`` from log-gamma
  (Stirling's series for large arguments, so that no large log-gammas cancel);
* :func:`betaincinv` (its inverse in ``x``, the Clopper-Pearson quantiles) by safeguarded
  Newton steps on the smaller tail;
* :func:`fdtrc` (F distribution survival function, Brown-Forsythe's p-value) as
  ``I_{d2/(d2 + d1 f)}(d2/2, d1/2)``.

Each is checked against ``scipy.special`` over wide grids, extremes included
(``tests/test_stats_special.py``, which states the largest relative error reached). Arguments
are floats or arrays (any shape; results have the broadcast shape, floats for 0-d inputs);
outside a function's domain the result is NaN, as scipy's.

References
----------
Wichura (1988), Algorithm AS 241: the percentage points of the normal distribution, Applied
Statistics 37:477-484. Press, Teukolsky, Vetterling & Flannery (2007), Numerical Recipes, 3rd
ed., sec. 6.4 (incomplete beta) and 5.2 (Lentz's method). DiDonato & Morris (1992), Algorithm
708, ACM TOMS 18:360-373 (the scaled prefactor).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["betainc", "betaincinv", "fdtrc", "gammaln", "ndtr", "ndtri"]

_EPS = 2.220446049250313e-16
_TINY = 1e-300
_SQRT1_2 = 0.7071067811865476
_LOG_SQRT_2PI = 0.9189385332046728  # log(sqrt(2 pi))


def _elementwise(fn: Callable[..., float], *args: Any) -> Any:
    """Apply the scalar ``fn`` over broadcast arguments: a float for scalars, else an array."""
    scalars = [float(a) for a in args if isinstance(a, (float, int))]
    if len(scalars) == len(args):  # the common scalar call, no numpy
        return fn(*scalars)
    if len(args) == 1:
        arr = np.asarray(args[0], dtype=np.float64)
        if arr.ndim == 0:
            return fn(float(arr))
        return np.array([fn(v) for v in arr.ravel().tolist()], dtype=np.float64).reshape(arr.shape)
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
    if arrs[0].ndim == 0:
        return fn(*[float(a) for a in arrs])
    cols = [a.ravel().tolist() for a in arrs]
    return np.array([fn(*vals) for vals in zip(*cols, strict=True)], dtype=np.float64).reshape(arrs[0].shape)


# --------------------------------------------------------------------------- normal


def _ndtr1(x: float) -> float:
    # Cephes' reduction: erf near 0 (relative accuracy there), erfc in the tails.
    if math.isnan(x):
        return math.nan
    t = x * _SQRT1_2
    z = abs(t)
    if z < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(t)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if t > 0 else y


def ndtr(x: ArrayLike) -> Any:
    """Standard normal CDF ``Phi(x)`` (float for a scalar, else an array of ``x``'s shape)."""
    return _elementwise(_ndtr1, x)


# AS241 (PPND16) coefficients, highest power first.
_A = (2.5090809287301226727e+3, 3.3430575583588128105e+4, 6.7265770927008700853e+4, 4.5921953931549871457e+4,
      1.3731693765509461125e+4, 1.9715909503065514427e+3, 1.3314166789178437745e+2, 3.3871328727963666080e+0)
_B = (5.2264952788528545610e+3, 2.8729085735721942674e+4, 3.9307895800092710610e+4, 2.1213794301586595867e+4,
      5.3941960214247511077e+3, 6.8718700749205790830e+2, 4.2313330701600911252e+1, 1.0)
_C = (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1, 1.27045825245236838258e+0,
      3.64784832476320460504e+0, 5.76949722146069140550e+0, 4.63033784615654529590e+0, 1.42343711074968357734e+0)
_D = (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2, 1.48103976427480074590e-1,
      6.89767334985100004550e-1, 1.67638483018380384940e+0, 2.05319162663775882187e+0, 1.0)
_E = (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3, 2.65321895265761230930e-2,
      2.96560571828504891230e-1, 1.78482653991729133580e+0, 5.46378491116411436990e+0, 6.65790464350110377720e+0)
_F = (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5, 7.86869131145613259100e-4,
      1.48753612908506148525e-2, 1.36929880922735805310e-1, 5.99832206555887937690e-1, 1.0)


def _poly(coef: tuple[float, ...], r: float) -> float:
    out = coef[0] * r + coef[1]
    for c in coef[2:]:
        out = out * r + c
    return out


def _ndtri1(p: float) -> float:
    if not 0.0 <= p <= 1.0:  # NaN included
        return math.nan
    if p == 0.0 or p == 1.0:
        return -math.inf if p == 0.0 else math.inf
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _poly(_A, r) / _poly(_B, r)
    # Tails: r = sqrt(-log(min(p, 1 - p))); 1 - p is exact for p >= 0.5 (Sterbenz).
    r = math.sqrt(-math.log(p if q <= 0.0 else 1.0 - p))
    x = _poly(_C, r - 1.6) / _poly(_D, r - 1.6) if r <= 5.0 else _poly(_E, r - 5.0) / _poly(_F, r - 5.0)
    return -x if q < 0.0 else x


def ndtri(p: ArrayLike) -> Any:
    """Inverse of the standard normal CDF (AS241): ``x`` with ``Phi(x) = p``.

    ``p`` in [0, 1] (``-inf``/``inf`` at 0/1, NaN outside); float for a scalar, else an
    array of ``p``'s shape. Element by element in Python (the bootstrap calls it on a few
    values at a time, where numpy's per-call overhead would dominate).
    """
    return _elementwise(_ndtri1, p)


# --------------------------------------------------------------------------- gamma, beta


def _gammaln1(x: float) -> float:
    if math.isnan(x):
        return math.nan
    if x <= 0 and x == math.floor(x):  # poles of Gamma (scipy: +inf)
        return math.inf
    if math.isinf(x):
        return math.inf
    return math.lgamma(x)


def gammaln(x: ArrayLike) -> Any:
    """``log|Gamma(x)|`` (``inf`` at the poles 0, -1, -2, ...)."""
    return _elementwise(_gammaln1, x)


def _stirling_tail(z: float) -> float:
    """``lgamma(z) - ((z - 0.5) log z - z + log sqrt(2 pi))`` for z >= 10 (Stirling's series;
    its 6 terms reach double precision there)."""
    z2 = 1.0 / (z * z)
    series = 1.0 / 1188 - z2 * 691.0 / 360360
    for c in (1.0 / 1680, 1.0 / 1260, 1.0 / 360):
        series = c - z2 * series
    return (1.0 / 12 - z2 * series) / z


def _log_beta_prefactor(a: float, b: float, x: float, y: float) -> float:
    """``log(x^a y^b / B(a, b))`` for 0 < x < 1 and ``y = 1 - x`` (each to its own relative
    precision: the caller computes the smaller of the two directly).

    With both a and b >= 10 written around the mean ``x0 = a / (a + b)`` (DiDonato & Morris's
    scaling): ``0.5 log(ab / (2 pi (a + b))) + a log(x / x0) + b log((1-x) / (1-x0))`` minus the
    Stirling tails, so that no log-gamma of size ~a log a cancels against another. The value is
    symmetric in (a, x) <-> (b, 1 - x), so the upper tail uses the same prefactor.
    """
    # The larger of x, y is ~1: its log from the smaller one (log1p), not from its own rounding.
    lx, ly = (math.log(x), math.log1p(-x)) if x <= y else (math.log1p(-y), math.log(y))
    s = a + b
    if a >= 10 and b >= 10:
        x0, y0 = a / s, b / s
        d = x - x0 if x <= y else y0 - y
        core = a * _log_ratio(d / x0, lx, math.log(x0)) + b * _log_ratio(-d / y0, ly, math.log(y0))
        corr = _stirling_tail(a) + _stirling_tail(b) - _stirling_tail(s)
        return 0.5 * math.log(a * b / s) - _LOG_SQRT_2PI + core - corr
    if max(a, b) >= 10:
        # One small, one large: lgamma(big) - lgamma(big + small) by Stirling, so that the
        # two log-gammas of size ~big log big do not cancel (math.lgamma is good to a few ulp):
        # log B(a, b) = lgamma(small) - (big - 1/2) log1p(small / big) - small log s + small + tails.
        small, big = (a, b) if a < b else (b, a)
        log_beta_rest = (math.lgamma(small) - (big - 0.5) * math.log1p(small / big) + small
                         + _stirling_tail(big) - _stirling_tail(s))
        # The small side's power absorbs small * log s (a log(x s) or b log((1 - x) s)).
        if a < b:
            return a * (lx + math.log(s)) + b * ly - log_beta_rest
        return a * lx + b * (ly + math.log(s)) - log_beta_rest
    return a * lx + b * ly - (math.lgamma(a) + math.lgamma(b) - math.lgamma(s))


def _log_ratio(t: float, log_u: float, log_u0: float) -> float:
    """``log(u / u0)`` given ``t = (u - u0) / u0``: ``log1p`` near 1 (no cancellation), logs apart."""
    return math.log1p(t) if abs(t) < 0.5 else log_u - log_u0


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of ``I_x(a, b)`` (Numerical Recipes ``betacf``, modified Lentz);
    converges fast for ``x < (a + 1) / (a + b + 2)``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) <= _EPS:
            break
    return h


def _betainc_tails(a: float, b: float, x: float, y: float | None = None) -> tuple[float, float]:
    """``(I_x(a, b), 1 - I_x(a, b))``, the smaller one computed directly (full relative accuracy).

    ``y``: ``1 - x`` when the caller has it more precisely than ``1.0 - x`` (x near 1).
    """
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    pref = math.exp(_log_beta_prefactor(a, b, x, y))
    if x < (a + 1.0) / (a + b + 2.0):
        lower = pref * _beta_cf(a, b, x) / a
        return lower, 1.0 - lower
    upper = pref * _beta_cf(b, a, y) / b
    return 1.0 - upper, upper


def _betainc1(a: float, b: float, x: float) -> float:
    if not (a > 0 and b > 0 and 0 <= x <= 1) or math.isinf(a) or math.isinf(b):
        return math.nan
    return _betainc_tails(a, b, x)[0]


def betainc(a: ArrayLike, b: ArrayLike, x: ArrayLike) -> Any:
    """Regularised incomplete beta ``I_x(a, b)`` (a, b > 0, 0 <= x <= 1; NaN outside)."""
    return _elementwise(_betainc1, a, b, x)


def _betaincinv1(a: float, b: float, p: float) -> float:
    if not (a > 0 and b > 0 and 0 <= p <= 1) or math.isinf(a) or math.isinf(b):
        return math.nan
    if p == 0.0 or p == 1.0:
        return p
    # Solve for whichever of x and 1 - x is <= 1/2 (so that it keeps its relative accuracy),
    # against whichever tail is <= 1/2 (1 - p is exact for p >= 1/2, Sterbenz).
    if p <= _betainc_tails(a, b, 0.5)[0]:
        return _beta_root(a, b, p if p <= 0.5 else 1.0 - p, upper=p > 0.5)
    return 1.0 - _beta_root(b, a, 1.0 - p if p >= 0.5 else p, upper=p < 0.5)


def _beta_root(a: float, b: float, target: float, *, upper: bool) -> float:
    """x in (0, 1/2] with ``I_x(a, b) = target`` (``upper``: ``1 - I_x(a, b) = target``).

    Newton steps in ``log x`` on ``log(tail) - log(target)`` (well scaled where the tail or x
    is tiny: near 0, ``log I`` is ~linear in ``log x`` with slope a), kept inside a bracket
    that every evaluation narrows (bisection, geometric once both ends are positive).
    """
    lo, hi = 0.0, 0.5
    log_t = math.log(target)
    if upper:
        x = 0.25
    else:  # the small-x asymptote I ~ x^a / (a B(a, b)), capped inside the bracket
        log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        x = min(math.exp(max((log_t + math.log(a) + log_beta) / a, -700.0)), 0.25)
    for _ in range(400):
        lower_tail, upper_tail = _betainc_tails(a, b, x)
        tail = upper_tail if upper else lower_tail
        if (tail < target) != upper:
            lo = x
        else:
            hi = x
        x_new = math.nan
        if tail > 0.0 and abs(math.log(tail) - log_t) <= 1e-14:
            return x  # the residual is at the tail's own rounding: x is off by ~1e-14 / a at most
        if tail > 0.0:
            # d log(tail) / d log x = +-x^a (1-x)^(b-1) / (B(a, b) tail)
            slope = math.exp(_log_beta_prefactor(a, b, x, 1.0 - x) - math.log1p(-x) - math.log(tail))
            if slope > 0 and math.isfinite(slope):
                x_new = x * math.exp(max(min((log_t - math.log(tail)) / (-slope if upper else slope), 50.0), -50.0))
        if abs(x_new - x) <= 2 * _EPS * x:  # Newton has converged (NaN compares False)
            return x_new
        if lo > 0 and hi - lo <= 1e-13 * hi:
            # The bracket holds the root to 1e-13: closer, the rounding of the tail itself (its
            # relative error over a, the slope of log I in log x) makes Newton hop between ends.
            return lo * math.sqrt(hi / lo)
        if not lo <= x_new <= hi:  # bisect, geometrically once both ends are positive (x may be ~1e-300)
            x_new = lo * math.sqrt(hi / lo) if lo > 0 else 0.5 * (lo + hi)
        x = x_new
    return x


def betaincinv(a: ArrayLike, b: ArrayLike, p: ArrayLike) -> Any:
    """Inverse of :func:`betainc` in x: the ``p`` quantile of Beta(a, b)."""
    return _elementwise(_betaincinv1, a, b, p)


def _fdtrc1(d1: float, d2: float, f: float) -> float:
    if not (d1 > 0 and d2 > 0 and f >= 0):  # NaN f or f < 0 included (scipy: NaN)
        return math.nan
    if math.isinf(f):
        return 0.0
    # Both w = d2 / (d2 + d1 f) and 1 - w directly: 1.0 - w would lose the small one's digits.
    total = d2 + d1 * f
    return _betainc_tails(0.5 * d2, 0.5 * d1, d2 / total, d1 * f / total)[0]


def fdtrc(d1: ArrayLike, d2: ArrayLike, f: ArrayLike) -> Any:
    """Survival function ``P(F > f)`` of the F(d1, d2) distribution."""
    return _elementwise(_fdtrc1, d1, d2, f)
