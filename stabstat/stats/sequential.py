"""Confidence sequences: intervals valid at every number of seeds at once (anytime-valid).

A fixed-n interval covers with probability ``1 - alpha`` at the one n chosen in advance;
looking after every seed and stopping when it excludes a value inflates the error. A
*confidence sequence* ``(C_t)`` covers the true mean at every t simultaneously:
``P(for all t: mu in C_t) >= 1 - alpha``, so the running intersection of its intervals can
be checked after every seed, and a decision taken at any (data-dependent) time keeps its
level.

Bounded outcomes (failure indicators, accuracy, F1 in [0, 1], MCC in [-1, 1]): the
*hedged-capital betting* confidence sequence of Waudby-Smith & Ramdas (2023), Theorem 3 with
the predictable plug-in bets of their eq. (26): for a candidate mean ``m`` two gamblers bet
on ``X_i > m`` and ``X_i < m`` with bets ``lambda_i`` fixed before seeing ``X_i``; their
wealth ``K_t(m) = max(K_t^+(m), K_t^-(m)) / 2`` is a nonnegative martingale when ``m`` is the
true mean, so by Ville's inequality it ever reaches ``1/alpha`` with probability at most
``alpha``, and ``C_t = {m: K_t(m) < 1/alpha}``. Values are rescaled to [0, 1] from the stated
``bounds`` (a value outside them is an error: the guarantee needs them).

Two arms (a difference of failure rates or of means): observations are paired in arrival
order (seed order), ``D_i = (X_i - Y_i + w) / 2w`` (``w`` the width of the bounds) lies in
[0, 1] and has mean ``(mu_X - mu_Y + w) / 2w``; with independent runs the pairs are
independent, so the betting sequence of ``D`` is one for the difference. An unmatched last
run of the longer arm waits for its partner.

Unbounded metrics (loss, perplexity): the *asymptotic* confidence sequence of Waudby-Smith,
Arnold, Wu, Wang & Ramdas (2024), Theorem 2.2 (Robbins' normal mixture with a plug-in
variance), valid as the sample grows rather than at every n: use it with care below ~20 seeds.

Shapes: every function takes one arm as a 1-D array in arrival order, shape ``(n,)``; the
vectorised :func:`betting_log_wealth` takes ``(sims, n)`` and candidate means ``(k,)``.

References
----------
Waudby-Smith, I. & Ramdas, A. (2023). Estimating means of bounded random variables by
betting. JRSS-B 86(1):1-27 (hedged capital, predictable plug-in, Theorem 3, eq. 26).
Waudby-Smith, I., Arnold, D., Wu, J., Wang, Y. & Ramdas, A. (2024). Time-uniform central limit
theory and asymptotic confidence sequences. Annals of Statistics 52(6) (Theorem 2.2).
Ville, J. (1939). Etude critique de la notion de collectif. Gauthier-Villars.
Howard, S., Ramdas, A., McAuliffe, J. & Sekhon, J. (2021). Time-uniform, nonparametric,
nonasymptotic confidence sequences. Annals of Statistics 49(2):1055-1080.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ConfidenceSequence", "asymptotic_cs", "asymptotic_diff_cs", "betting_cs", "betting_diff_cs",
           "betting_log_wealth", "betting_p_values", "paired_unit", "rate_cs"]

FloatArray = NDArray[np.float64]

#: Candidate means per unit of the rescaled [0, 1] range: the interval's ends are rounded
#: outwards to this grid, so they are conservative by at most 1/GRID of the bounds' width.
GRID = 1000
#: The betting fraction cap of Waudby-Smith & Ramdas (2023): bets at most c/m (resp. c/(1-m)).
BET_CAP = 0.5


@dataclass(frozen=True)
class ConfidenceSequence:
    """A confidence sequence for a mean (or a difference of means) observed in order.

    ``lows[t - 1]``, ``highs[t - 1]``: the running intersection of the intervals after t
    observations (t = 1..n; in the units of the data); ``ci_low``/``ci_high`` the last of them.
    ``estimate``: the mean of all n observations (of the differences, for two arms).
    ``confidence``: 1 - alpha, holding for all t at once (asymptotically for ``asymptotic``).
    ``bounds``: the range the data were assumed to lie in (None for ``asymptotic``).
    """

    estimate: float
    ci_low: float
    ci_high: float
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    method: str
    confidence: float
    n: int
    bounds: tuple[float, float] | None
    warnings: tuple[str, ...] = ()

    def excludes_from(self, value: float) -> int | None:
        """The first t (1-based) from which the running intersection excludes ``value``
        (None when it never does)."""
        out = np.nonzero((np.asarray(self.lows) > value) | (np.asarray(self.highs) < value))[0]
        return int(out[0]) + 1 if out.size else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lows"], d["highs"] = list(self.lows), list(self.highs)
        d["bounds"] = None if self.bounds is None else list(self.bounds)
        d["warnings"] = list(self.warnings)
        return d


# --------------------------------------------------------------------------- checks


def _unit(x: ArrayLike, bounds: tuple[float, float], name: str) -> FloatArray:
    """``x`` rescaled from ``bounds`` to [0, 1]; ValueError naming the bound a value breaks."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"bounds must be two finite numbers low < high, got {bounds!r}")
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; a confidence sequence needs every value")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name}: value {arr.min() if arr.min() < lo else arr.max():g} is outside the stated "
                         f"bounds [{lo:g}, {hi:g}]; state bounds that hold for every run")
    return (arr - lo) / (hi - lo)


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return 1.0 - confidence


# --------------------------------------------------------------------------- betting


def _plugin_bets(x: FloatArray, alpha: float) -> FloatArray:
    """Predictable plug-in bets of WS&R (2023) eq. (26), shape of ``x`` (``(..., n)``).

    ``lambda_t = sqrt(2 log(2/alpha) / (sigma2_{t-1} t log(1 + t)))`` with the regularised
    running mean ``mu_t = (1/2 + sum_{i<=t} x_i) / (t + 1)`` and variance
    ``sigma2_t = (1/4 + sum_{i<=t} (x_i - mu_i)^2) / (t + 1)``; ``sigma2_0 = 1/4``. Bet t
    uses data up to t - 1 only (predictable), which is what keeps the wealth a martingale.
    """
    n = x.shape[-1]
    t = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    sig2 = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)
    prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), sig2[..., :-1]], axis=-1)
    return np.sqrt(2.0 * math.log(2.0 / alpha) / (prev * t * np.log1p(t)))


def betting_log_wealth(x: ArrayLike, m: ArrayLike, *, confidence: float = 0.95,
                       cap: float = BET_CAP) -> tuple[FloatArray, FloatArray]:
    """Log wealth of the two hedged gamblers against candidate means ``m``.

    Parameters
    ----------
    x : ``(n,)`` or ``(sims, n)`` values in [0, 1], in arrival order.
    m : ``(k,)`` candidate means in [0, 1].
    confidence : 1 - alpha; tunes the bets (``log(2/alpha)``), not the validity.

    Returns
    -------
    (log_up, log_down): each ``(..., k, n)``: ``log K_t^+(m)`` (betting that the mean is above
    m) and ``log K_t^-(m)`` (below), after t = 1..n observations. The hedged process is
    ``max(K^+, K^-) / 2``; under the true mean each of ``K^+``, ``K^-`` is a martingale.
    """
    alpha = _alpha(confidence)
    xa = np.asarray(x, dtype=np.float64)
    ma = np.asarray(m, dtype=np.float64).reshape(-1)
    lam = _plugin_bets(xa, alpha)[..., None, :]
    dev = xa[..., None, :] - ma[:, None]
    with np.errstate(divide="ignore"):
        cap_up = np.where(ma > 0, cap / np.maximum(ma, 1e-300), np.inf)[:, None]
        cap_down = np.where(ma < 1, cap / np.maximum(1 - ma, 1e-300), np.inf)[:, None]
    up = np.cumsum(np.log1p(np.minimum(lam, cap_up) * dev), axis=-1)
    down = np.cumsum(np.log1p(-np.minimum(lam, cap_down) * dev), axis=-1)
    return up, down


def betting_p_values(x: ArrayLike, m: float, *, confidence: float = 0.95, cap: float = BET_CAP
                     ) -> tuple[FloatArray, FloatArray]:
    """Anytime-valid one-sided p-values against mean ``m`` after each observation.

    ``x``: ``(n,)`` or ``(sims, n)`` values in [0, 1]. Returns ``(p_above, p_below)``, each of
    the shape of ``x``: ``min(1, 2 / max_{s<=t} K_s^+(m))`` tests "the mean is above m"
    (small when it is), ``p_below`` likewise with ``K^-``. ``min(p_above, p_below) <= alpha``
    exactly when the hedged sequence at level ``confidence`` has excluded ``m`` by t. Each is
    valid at any stopping time (Ville's inequality), so it may be checked after every seed.
    """
    up, down = betting_log_wealth(x, [m], confidence=confidence, cap=cap)
    best_up = np.maximum.accumulate(up[..., 0, :], axis=-1)
    best_down = np.maximum.accumulate(down[..., 0, :], axis=-1)
    return np.minimum(1.0, 2.0 * np.exp(-best_up)), np.minimum(1.0, 2.0 * np.exp(-best_down))


def _betting_unit(u: FloatArray, confidence: float, grid: int) -> tuple[FloatArray, FloatArray]:
    """Running-intersection ends on [0, 1] after each of the ``n`` observations ``u``."""
    alpha = _alpha(confidence)
    ms = np.linspace(0.0, 1.0, grid + 1)
    up, down = betting_log_wealth(u, ms, confidence=confidence)
    # hedged: reject m when max(K^+, K^-) / 2 >= 1/alpha
    keep = np.maximum(up, down) < math.log(2.0 / alpha)  # (grid + 1, n)
    step = 1.0 / grid
    any_kept = keep.any(axis=0)
    first = np.argmax(keep, axis=0)
    last = grid - np.argmax(keep[::-1], axis=0)
    # outward rounding: the true end lies between a kept and a rejected grid point
    lows = np.where(any_kept, np.maximum(ms[first] - step, 0.0), np.nan)
    highs = np.where(any_kept, np.minimum(ms[last] + step, 1.0), np.nan)
    lows = np.fmax.accumulate(np.nan_to_num(lows, nan=np.inf))
    highs = np.fmin.accumulate(np.nan_to_num(highs, nan=-np.inf))
    return lows, highs


def betting_cs(x: ArrayLike, *, bounds: tuple[float, float] = (0.0, 1.0), confidence: float = 0.95,
               grid: int = GRID) -> ConfidenceSequence:
    """Betting confidence sequence for the mean of a bounded metric (WS&R 2023).

    ``x``: ``(n,)`` values in arrival (seed) order, each within ``bounds``. The interval
    after t runs is the running intersection of the hedged-capital sets; its ends are rounded
    outwards to a grid of ``grid`` steps over ``bounds``.
    """
    u = _unit(x, bounds, "values")
    if u.size == 0:
        raise ValueError("a confidence sequence needs at least one value")
    lows, highs = _betting_unit(u, confidence, grid)
    lo, w = float(bounds[0]), float(bounds[1]) - float(bounds[0])
    return _result(float(np.mean(np.asarray(x, dtype=np.float64))), lo + w * lows, lo + w * highs, "betting (hedged capital, WS&R 2023)",
                   confidence, (float(bounds[0]), float(bounds[1])))


def rate_cs(failed: ArrayLike, *, confidence: float = 0.95, grid: int = GRID) -> ConfidenceSequence:
    """Betting confidence sequence for a failure rate; ``failed``: ``(n,)`` 0/1 in seed order."""
    f = np.asarray(failed, dtype=np.float64).reshape(-1)
    if not np.all((f == 0) | (f == 1)):
        raise ValueError("failed must hold 0/1 (or booleans) only")
    return betting_cs(f, bounds=(0.0, 1.0), confidence=confidence, grid=grid)


def paired_unit(a: ArrayLike, b: ArrayLike, bounds: tuple[float, float]) -> FloatArray:
    """``D_i = (a_i - b_i + w) / 2w`` in [0, 1] for the first ``min(n_a, n_b)`` pairs in order."""
    ua, ub = _unit(a, bounds, "arm a"), _unit(b, bounds, "arm b")
    k = min(ua.size, ub.size)
    return (ua[:k] - ub[:k] + 1.0) / 2.0


def betting_diff_cs(a: ArrayLike, b: ArrayLike, *, bounds: tuple[float, float] = (0.0, 1.0),
                    confidence: float = 0.95, grid: int = GRID) -> ConfidenceSequence:
    """Betting confidence sequence for ``mean(a) - mean(b)`` of a bounded metric (or of two
    failure rates, with 0/1 arms).

    ``a``, ``b``: ``(n_a,)``, ``(n_b,)`` in arrival order, each within ``bounds``; the i-th runs
    of the two arms form pair i (``n = min(n_a, n_b)``; see the module docstring).
    """
    d = paired_unit(a, b, bounds)
    if d.size == 0:
        raise ValueError("a confidence sequence of a difference needs at least one run in each arm")
    lows, highs = _betting_unit(d, confidence, grid)
    w = float(bounds[1]) - float(bounds[0])
    k = d.size
    est = float(np.mean(np.asarray(a, dtype=np.float64)[:k]) - np.mean(np.asarray(b, dtype=np.float64)[:k]))
    return _result(est, w * (2 * lows - 1), w * (2 * highs - 1), "betting on paired differences (WS&R 2023)",
                   confidence, (-w, w))


def _result(est: float, lows: FloatArray, highs: FloatArray, method: str, confidence: float,
            bounds: tuple[float, float] | None) -> ConfidenceSequence:
    warnings: tuple[str, ...] = ()
    if lows[-1] > highs[-1]:
        warnings = ("the running intersection is empty: the data contradict every mean inside the bounds "
                    "(an event of probability <= alpha, or values that are not independent)",)
    return ConfidenceSequence(est, float(lows[-1]), float(highs[-1]), tuple(map(float, lows)),
                              tuple(map(float, highs)), method, confidence, int(lows.size), bounds, warnings)


# --------------------------------------------------------------------------- asymptotic


def asymptotic_radius(t: ArrayLike, sd: ArrayLike, *, confidence: float = 0.95, t_opt: int = 20) -> FloatArray:
    """Half-width of the asymptotic CS (WS et al. 2024, Thm 2.2) after ``t`` observations.

    ``sd * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))`` with
    ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t_opt`` (tightest near ``t_opt``).
    """
    alpha = _alpha(confidence)
    la = -2.0 * math.log(alpha)
    rho2 = (la + math.log(la + 1.0)) / t_opt
    tt = np.asarray(t, dtype=np.float64)
    return np.asarray(sd) * np.sqrt(2.0 * (tt * rho2 + 1.0) / (tt**2 * rho2)
                                    * np.log(np.sqrt(tt * rho2 + 1.0) / alpha))


def asymptotic_cs(x: ArrayLike, *, confidence: float = 0.95, t_opt: int = 20, start: int = 10
                  ) -> ConfidenceSequence:
    """Asymptotic confidence sequence for the mean of an unbounded metric (``x``: ``(n,)``).

    Running mean +- :func:`asymptotic_radius` with the running SD (ddof 0), then the running
    intersection from ``start`` observations on (before that the interval is infinite: with
    a handful of values the plug-in SD can be near 0 and a collapsed early interval would
    poison the intersection). Coverage is asymptotic in the paper's sense: prefer
    :func:`betting_cs` when the metric is bounded.
    """
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("values must be a non-empty array of finite numbers")
    t = np.arange(1, arr.size + 1, dtype=np.float64)
    mean = np.cumsum(arr) / t
    var = np.maximum(np.cumsum(arr**2) / t - mean**2, 0.0)
    rad = asymptotic_radius(t, np.sqrt(var), confidence=confidence, t_opt=t_opt)
    rad[: max(1, min(start, arr.size)) - 1] = np.inf
    lows = np.maximum.accumulate(mean - rad)
    highs = np.minimum.accumulate(mean + rad)
    res = _result(float(mean[-1]), lows, highs, f"asymptotic (WS et al. 2024, t_opt {t_opt})", confidence, None)
    warn = () if arr.size >= t_opt else (f"only {arr.size} values: the asymptotic sequence is approximate this "
                                         f"early; use betting_cs with stated bounds when the metric is bounded",)
    return replace(res, warnings=res.warnings + warn)


def asymptotic_diff_cs(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95, t_opt: int = 20,
                       start: int = 10) -> ConfidenceSequence:
    """Asymptotic CS of ``mean(a) - mean(b)`` over pairs in arrival order (``n = min(n_a, n_b)``)."""
    xa, xb = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    k = min(xa.size, xb.size)
    return asymptotic_cs(xa[:k] - xb[:k], confidence=confidence, t_opt=t_opt, start=start)
