"""Variance components of a metric over crossed random factors (seeds), with bootstrap CIs.

Model (additive random effects): the value of run ``i`` is
``y_i = mu + a_1[l_1(i)] + ... + a_K[l_K(i)] + e_i`` where ``l_f(i)`` is the run's level of
random factor ``f`` (``init_seed``, ``order_seed``, ``data_seed`` ...), ``a_f ~ (0, s_f^2)``
and ``e_i ~ (0, s_e^2)``; the *residual* ``s_e^2`` holds everything the factors do not
(interactions between them, other randomness, non-determinism). Components are variances
in the metric's squared units; a share is a component over their sum.

Estimators:

* **ANOVA (method of moments)** for a balanced crossed design (every combination of the
  factors' levels present ``r >= 1`` times): with ``N`` runs, factor ``f``'s mean square
  ``MS_f = (N / L_f) sum_l (m_fl - m)^2 / (L_f - 1)`` has expectation
  ``s_e^2 + (N / L_f) s_f^2``, the residual mean square ``MS_e`` (total minus main-effect
  sums of squares, over ``N - 1 - sum (L_f - 1)`` degrees of freedom) has ``s_e^2``; so
  ``s_f^2 = (MS_f - MS_e) L_f / N`` (negative estimates are set to 0, with a warning).
  For balanced data with non-negative estimates this equals REML.
* **REML** otherwise: statsmodels ``MixedLM`` with one variance component per factor
  (``vc_formula = {f: "0 + C(f)"}``, one group holding every run).
* **Henderson's method I** (moments for unbalanced designs; equals ANOVA when balanced):
  ``method="moments"``, and the estimator evaluated on each bootstrap resample of an
  unbalanced design (refitting REML thousands of times would take minutes).

Bootstrap (Owen 2007, "the pigeonhole bootstrap"; Bouthillier et al. 2021): the levels of
each factor are resampled independently with replacement, and a resample holds every run
whose levels were drawn, once per drawn combination (a level drawn twice becomes two
levels). Rows are never resampled one by one: the runs of a seed are not independent of one
another. For a balanced design the resampled statistics come from level-count matrices
(``(resamples, L_f)`` multinomial counts, as :mod:`~stabstat.stats.resampling`) contracted
with the cell means, without building any resample; otherwise each resample is built and
Henderson's method I evaluated on it. Intervals are percentile intervals. With few levels per
factor (< 10) they are rough: a factor with 5 levels gives its variance 4 degrees of freedom.

References
----------
Searle, Casella & McCulloch (1992), Variance Components, Wiley (ANOVA estimators, REML).
Owen (2007), The pigeonhole bootstrap, Ann. Appl. Stat. 1:386-411.
Bouthillier et al. (2021), Accounting for variance in machine learning benchmarks, MLSys.
Dodge et al. (2020), Fine-tuning pretrained language models: weight initializations, data
orders, and early stopping, arXiv:2002.06305.
"""

from __future__ import annotations

import dataclasses
import math
import string
import warnings as _warnings
from collections.abc import Mapping, Sequence
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

__all__ = ["METHODS", "REML_MAX_RUNS", "UNBALANCED_RESAMPLES", "ComponentsResult", "VarianceComponent", "anova_components", "encode_levels",
           "henderson_components", "is_balanced", "reml_components", "variance_components"]

RESIDUAL = "residual"
METHODS = ("auto", "anova", "reml", "moments")
#: ``auto`` fits REML up to this many runs; beyond, Henderson's method I (a statsmodels REML fit
#: of two crossed factors takes ~0.5-10 s at 1,000-2,000 runs). ``method="reml"`` forces it.
REML_MAX_RUNS = 500
#: An unbalanced design's bootstrap rebuilds every resample: at most this many (~0.5 ms each
#: at 2,000 runs); a balanced design's takes the ``resamples`` asked for.
UNBALANCED_RESAMPLES = 1000


@dataclass(frozen=True)
class VarianceComponent:
    """One component: its variance (metric units squared) and share of the total, with
    percentile bootstrap intervals; ``n_levels`` is None for the residual."""

    name: str
    variance: float
    ci_low: float
    ci_high: float
    share: float
    share_ci_low: float
    share_ci_high: float
    n_levels: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.name, "n_levels": self.n_levels, "variance": self.variance,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "sd": math.sqrt(max(self.variance, 0.0)),
                "share": self.share, "share_ci_low": self.share_ci_low, "share_ci_high": self.share_ci_high}


@dataclass(frozen=True)
class ComponentsResult:
    """Variance components of one sample of runs: the factors' in the given order, then the
    residual; ``total`` is their sum; ``method`` ``anova``, ``reml`` or ``moments``."""

    components: tuple[VarianceComponent, ...]
    total: float
    total_ci_low: float
    total_ci_high: float
    mean: float
    n: int
    method: str
    balanced: bool
    replicates: int | None
    resamples: int
    confidence: float
    seed: int | None
    warnings: tuple[str, ...] = field(default=())
    #: ``(resamples, K + 1)`` bootstrap replicates of the shares (columns as ``components``);
    #: for one-sided bootstrap p-values (``stabstat check``). Not part of ``to_dict``.
    share_replicates: FloatArray | None = field(default=None, repr=False, compare=False)

    def share_p_value(self, name: str, value: float, *, above: bool) -> float:
        """One-sided bootstrap p-value against "the share of ``name`` is above (or below)
        ``value``": ``(1 + #replicates on the other side) / (1 + #replicates)``."""
        j = [c.name for c in self.components].index(name)
        reps = self.share_replicates[:, j] if self.share_replicates is not None else np.empty(0)
        reps = reps[np.isfinite(reps)]
        if not reps.size:
            return math.nan
        other = np.sum(reps <= value) if above else np.sum(reps >= value)
        return float((1 + other) / (1 + reps.size))

    def component(self, name: str) -> VarianceComponent:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "balanced": self.balanced, "replicates": self.replicates, "n": self.n,
                "mean": self.mean, "total": self.total, "total_ci_low": self.total_ci_low,
                "total_ci_high": self.total_ci_high, "components": [c.to_dict() for c in self.components],
                "resamples": self.resamples, "confidence": self.confidence, "seed": self.seed,
                "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- designs


def encode_levels(values: Sequence[Any] | NDArray[Any]) -> tuple[NDArray[np.intp], int]:
    """Integer codes ``0..L-1`` of a factor's values (by sorted text) and ``L``."""
    keys = [repr(v) for v in (values.tolist() if isinstance(values, np.ndarray) else list(values))]
    uniq = sorted(set(keys))
    index = {k: i for i, k in enumerate(uniq)}
    return np.fromiter((index[k] for k in keys), dtype=np.intp, count=len(keys)), len(uniq)


def is_balanced(codes: Sequence[NDArray[np.intp]], sizes: Sequence[int]) -> int | None:
    """``r`` when every combination of the factors' levels occurs exactly ``r`` times, else None."""
    if not codes:
        return None
    cell = np.ravel_multi_index(tuple(codes), tuple(sizes))
    counts = np.bincount(cell, minlength=int(np.prod(sizes)))
    return int(counts[0]) if counts.size and counts.min() == counts.max() and counts[0] > 0 else None


def _cells(y: FloatArray, codes: Sequence[NDArray[np.intp]], sizes: Sequence[int], r: int
           ) -> tuple[FloatArray, FloatArray]:
    """Cell means and cell sums of squares of a balanced design, each shaped ``sizes``."""
    cell = np.ravel_multi_index(tuple(codes), tuple(sizes))
    m = int(np.prod(sizes))
    means = (np.bincount(cell, y, minlength=m) / r).reshape(sizes)
    squares = np.bincount(cell, y * y, minlength=m).reshape(sizes).astype(np.float64)
    return means.astype(np.float64), squares


def _anova_from_counts(means: FloatArray, squares: FloatArray, r: int, weights: Sequence[FloatArray]
                       ) -> FloatArray:
    """ANOVA components for a batch of level weightings: ``weights[f]`` is ``(B, L_f)`` (how
    often each level is in the resample; all ones = the sample itself). Returns ``(B, K + 1)``:
    the factors' components, then the residual, negative estimates kept (callers truncate)."""
    k = means.ndim
    sizes = means.shape
    n = r * math.prod(sizes)
    letters = string.ascii_lowercase[:k]
    cell_w = f"{letters}," + ",".join(f"z{c}" for c in letters)  # e.g. "ab,za,zb"
    g = np.einsum(f"{cell_w}->z", means, *weights, optimize=True) / math.prod(sizes)
    total = np.einsum(f"{cell_w}->z", squares, *weights, optimize=True) - n * g * g
    out = np.empty((weights[0].shape[0], k + 1))
    ss_main = np.zeros_like(g)
    ms = []
    for f in range(k):
        others = [w for j, w in enumerate(weights) if j != f]
        spec = f"{letters}," + ",".join(f"z{c}" for j, c in enumerate(letters) if j != f) + f"->z{letters[f]}"
        summed = np.einsum(spec, means, *others, optimize=True) if others else np.broadcast_to(means, weights[f].shape)
        m_f = summed / (math.prod(sizes) / sizes[f])
        ss = (n / sizes[f]) * np.einsum("zl,zl->z", weights[f], (m_f - g[:, None]) ** 2)
        ss_main += ss
        ms.append(ss / (sizes[f] - 1))
    df_e = n - 1 - sum(s - 1 for s in sizes)
    ms_e = (total - ss_main) / df_e
    for f in range(k):
        out[:, f] = (ms[f] - ms_e) * sizes[f] / n
    out[:, k] = ms_e
    return out


def anova_components(values: ArrayLike, factors: Mapping[str, Sequence[Any] | NDArray[Any]]) -> dict[str, float]:
    """ANOVA (method-of-moments) variance components of a balanced crossed design.

    values: ``(n,)`` metric per run. factors: name -> ``(n,)`` level per run (any values).
    Returns name -> component, then ``"residual"``; negative estimates are returned as they
    are (unbiased, not truncated). Raises ValueError when the design is not balanced or
    leaves no residual degrees of freedom.
    """
    y = _as_1d(values)
    codes, sizes = _encode_all(factors, y.size)
    r = is_balanced(codes, sizes)
    if r is None:
        raise ValueError("the design is not balanced (every combination of levels the same number of times); "
                         "use reml_components")
    _check_df(y.size, sizes)
    means, squares = _cells(y, codes, sizes, r)
    est = _anova_from_counts(means, squares, r, [np.ones((1, s)) for s in sizes])[0]
    return dict(zip([*factors, RESIDUAL], map(float, est), strict=True))


def reml_components(values: ArrayLike, factors: Mapping[str, Sequence[Any] | NDArray[Any]]) -> dict[str, float]:
    """REML variance components (statsmodels ``MixedLM``, one variance component per factor,
    all runs in one group). values: ``(n,)``; factors: name -> ``(n,)`` levels. Returns
    name -> component, then ``"residual"`` (the model's scale)."""
    y = _as_1d(values)
    codes, sizes = _encode_all(factors, y.size)
    _check_df(y.size, sizes)
    return dict(zip([*factors, RESIDUAL], map(float, _reml(y, codes)), strict=True))


def _reml(y: FloatArray, codes: Sequence[NDArray[np.intp]]) -> FloatArray:
    import pandas as pd  # statsmodels' formulas need it; imported only when REML is used
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    names = [f"f{j}" for j in range(len(codes))]
    frame = pd.DataFrame({"y": y, "g": np.zeros(y.size, dtype=np.intp), **dict(zip(names, codes, strict=True))})
    vc = {n: f"0 + C({n})" for n in names}
    with _warnings.catch_warnings():
        # Boundary fits (a component at 0) warn; the estimate at the boundary is the answer.
        _warnings.simplefilter("ignore", ConvergenceWarning)
        _warnings.simplefilter("ignore", RuntimeWarning)
        _warnings.filterwarnings("ignore", message=".*[Hh]essian.*")
        fit = sm.MixedLM.from_formula("y ~ 1", groups="g", re_formula="0", vc_formula=vc, data=frame).fit(reml=True)
    order = [fit.model.exog_vc.names.index(n) for n in names]
    return np.array([*np.asarray(fit.vcomp)[order], float(fit.scale)])


def henderson_components(values: ArrayLike, factors: Mapping[str, Sequence[Any] | NDArray[Any]]) -> dict[str, float]:
    """Henderson's method I (method of moments for unbalanced designs): name -> component,
    then ``"residual"``, negative estimates kept. Equals ANOVA on a balanced design."""
    y = _as_1d(values)
    codes, sizes = _encode_all(factors, y.size)
    _check_df(y.size, sizes)
    return dict(zip([*factors, RESIDUAL], map(float, _henderson(y, codes, sizes)), strict=True))


def _henderson(y: FloatArray, codes: Sequence[NDArray[np.intp]], sizes: Sequence[int]) -> FloatArray:
    """Henderson's method I: equate ``T_y = sum y^2``, ``T_f = sum_l (sum of level l)^2 / n_l``
    and ``T_0 = (sum y)^2 / n`` to their expectations under the additive model and solve
    for ``(n mu^2, s_1^2 .. s_K^2, s_e^2)``. ``E[T_f] = n mu^2 + sum_g k_fg s_g^2 + L_f s_e^2``
    with ``k_fg = sum_l sum_m n_lm^2 / n_l`` (``k_ff = n``), ``E[T_0] = n mu^2 + sum_g (sum_m
    n_m^2 / n) s_g^2 + s_e^2``, ``E[T_y] = n mu^2 + n sum_g s_g^2 + n s_e^2``.
    Levels absent from the sample (after a resample) simply have no runs."""
    n = y.size
    k = len(codes)
    counts = [np.bincount(c, minlength=s).astype(np.float64) for c, s in zip(codes, sizes, strict=True)]
    present = [cnt > 0 for cnt in counts]
    a = np.zeros((k + 2, k + 2))
    t = np.zeros(k + 2)
    # row 0: T_y; rows 1..k: T_f; row k+1: T_0. Columns: n mu^2, s_1..s_k, s_e.
    a[0] = [1.0, *([float(n)] * k), float(n)]
    t[0] = float(y @ y)
    for f in range(k):
        sums = np.bincount(codes[f], y, minlength=sizes[f])
        t[f + 1] = float((sums[present[f]] ** 2 / counts[f][present[f]]).sum())
        a[f + 1, 0] = 1.0
        a[f + 1, k + 1] = float(present[f].sum())
        for g in range(k):
            if g == f:
                a[f + 1, 1 + g] = float(n)
                continue
            pair = np.bincount(codes[f] * sizes[g] + codes[g], minlength=sizes[f] * sizes[g])
            pair = pair.reshape(sizes[f], sizes[g]).astype(np.float64)
            a[f + 1, 1 + g] = float(((pair**2).sum(axis=1)[present[f]] / counts[f][present[f]]).sum())
    t[k + 1] = float(y.sum() ** 2 / n)
    a[k + 1] = [1.0, *[float((cnt**2).sum() / n) for cnt in counts], 1.0]
    sol = np.linalg.lstsq(a, t, rcond=None)[0]
    return np.asarray(sol[1:], dtype=np.float64)


def _encode_all(factors: Mapping[str, Sequence[Any] | NDArray[Any]], n: int) -> tuple[list[NDArray[np.intp]], list[int]]:
    if not factors:
        raise ValueError("no factors: give at least one random factor (e.g. init_seed)")
    codes, sizes = [], []
    for name, vals in factors.items():
        c, size = encode_levels(vals)
        if c.size != n:
            raise ValueError(f"factor {name!r} has {c.size} values for {n} runs")
        if size < 2:
            raise ValueError(f"factor {name!r} has one level: it explains no variance; leave it out")
        codes.append(c)
        sizes.append(size)
    return codes, sizes


def _check_df(n: int, sizes: Sequence[int]) -> None:
    if n - 1 - sum(s - 1 for s in sizes) < 1:
        raise ValueError(f"{n} runs leave no residual degrees of freedom for {len(sizes)} factor(s) with "
                         f"{', '.join(map(str, sizes))} levels: every run is its own level")


# --------------------------------------------------------------------------- bootstrap


def _pigeonhole(codes: Sequence[NDArray[np.intp]], sizes: Sequence[int], rng: np.random.Generator
                ) -> tuple[NDArray[np.intp], list[NDArray[np.intp]]]:
    """One pigeonhole resample of an unbalanced design: the rows (indices into the sample)
    and their new level codes (a level drawn twice becomes two levels)."""
    rows = np.arange(codes[0].size)
    new_codes: list[NDArray[np.intp]] = [c.copy() for c in codes]
    for f, size in enumerate(sizes):
        drawn = rng.integers(0, size, size)
        order = np.argsort(drawn, kind="stable")  # positions of the draws, grouped by level
        counts = np.bincount(drawn, minlength=size)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        level = new_codes[f]
        reps = counts[level]
        keep = np.repeat(np.arange(rows.size), reps)
        within = np.arange(keep.size) - np.repeat(np.cumsum(reps) - reps, reps)
        rows = rows[keep]
        new_codes = [c[keep] for c in new_codes]
        new_codes[f] = order[starts[level[keep]] + within]
    return rows, new_codes


def variance_components(
    values: ArrayLike,
    factors: Mapping[str, Sequence[Any] | NDArray[Any]],
    *,
    method: str = "auto",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = None,
) -> ComponentsResult:
    """Variance components of ``values`` over the random ``factors`` plus the residual, with
    shares of the total and percentile pigeonhole-bootstrap intervals (levels resampled).

    values: ``(n,)`` metric per run (finite). factors: name -> ``(n,)`` level per run; each
    must have >= 2 levels. method: ``auto`` (ANOVA when balanced, else REML), ``anova``
    (balanced designs only), ``reml`` or ``moments`` (Henderson's method I, fast); ``auto``
    uses moments instead of REML above :data:`REML_MAX_RUNS` runs. The bootstrap of an
    unbalanced design evaluates Henderson's method I on each of at most
    :data:`UNBALANCED_RESAMPLES` resamples (a REML refit takes seconds at 1,000 runs).
    Components below 0 are set to 0 (a warning says which) in the point estimates and every
    resample.
    """
    y = _as_1d(values)
    codes, sizes = _encode_all(factors, y.size)
    _check_df(y.size, sizes)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = is_balanced(codes, sizes)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    if method == "anova" and r is None:
        raise ValueError("method 'anova' needs a balanced design; use 'reml', 'moments' or 'auto'")
    use_anova = r is not None and method in ("auto", "anova")
    gen, seed = _as_rng(rng)
    if use_anova:
        assert r is not None
        means, squares = _cells(y, codes, sizes, r)
        point = _anova_from_counts(means, squares, r, [np.ones((1, s)) for s in sizes])[0]
        reps = np.empty((0, len(sizes) + 1))
        if resamples > 0:
            weights = [draw_counts(gen, resamples, s).T.astype(np.float64) for s in sizes]
            reps = _anova_from_counts(means, squares, r, weights)
        b = resamples
    else:
        use_reml = method == "reml" or (method == "auto" and y.size <= REML_MAX_RUNS)
        point = _reml(y, codes) if use_reml else _henderson(y, codes, sizes)
        b = min(resamples, UNBALANCED_RESAMPLES)
        reps = np.empty((b, len(sizes) + 1))
        for i in range(b):
            rows, new = _pigeonhole(codes, sizes, gen)
            new_sizes = [int(c.max()) + 1 for c in new]
            ok = rows.size - 1 - sum(np.unique(c).size - 1 for c in new) >= 1
            reps[i] = _henderson(y[rows], new, new_sizes) if ok else np.nan
    names = [*factors, RESIDUAL]
    used = "anova" if use_anova else ("reml" if use_reml else "moments")
    res = _result(y, names, sizes, point, reps, method=used, r=r, resamples=b, confidence=confidence, seed=seed)
    notes = []
    if not use_anova and method == "auto" and not use_reml:
        notes.append(f"unbalanced design of {y.size} runs (> {REML_MAX_RUNS}): Henderson's method I instead of "
                     "REML (slow at this size; method 'reml' forces it)")
    if b < resamples:
        notes.append(f"unbalanced design: {b} bootstrap resamples (each is rebuilt), not {resamples}")
    return dataclasses.replace(res, warnings=res.warnings + tuple(notes)) if notes else res


def _result(y: FloatArray, names: Sequence[str], sizes: Sequence[int], point: FloatArray, reps: FloatArray, *,
            method: str, r: int | None, resamples: int, confidence: float, seed: int | None) -> ComponentsResult:
    notes = [f"{n}: the estimate {v:.3g} is below 0 and is reported as 0 (its variance is too small to "
             "tell from the residual)" for n, v in zip(names, point, strict=True) if v < 0]
    point = np.maximum(point, 0.0)
    reps = np.maximum(reps, 0.0)
    reps = reps[np.all(np.isfinite(reps), axis=1)]
    total = float(point.sum())
    tot_reps = reps.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_reps = reps / tot_reps[:, None]
    alpha = (1 - confidence) / 2

    def ci(x: FloatArray) -> tuple[float, float]:
        x = x[np.isfinite(x)]
        if x.size < 2:
            return math.nan, math.nan
        lo, hi = np.quantile(x, [alpha, 1 - alpha])
        return float(lo), float(hi)

    comps = []
    for j, name in enumerate(names):
        lo, hi = ci(reps[:, j])
        slo, shi = ci(share_reps[:, j])
        comps.append(VarianceComponent(name, float(point[j]), lo, hi, float(point[j] / total) if total > 0 else math.nan,
                                       slo, shi, sizes[j] if j < len(sizes) else None))
    tlo, thi = ci(tot_reps)
    if min(sizes) < 10:
        notes.append(f"few levels ({', '.join(f'{n}: {s}' for n, s in zip(names, sizes, strict=False))}): "
                     "a component's interval rests on that many draws and is rough")
    return ComponentsResult(tuple(comps), total, tlo, thi, float(y.mean()), int(y.size), method, r is not None, r,
                            resamples, confidence, seed, tuple(notes), share_reps)
