"""Comparing spread between groups: Brown-Forsythe test, bootstrap CI of an SD ratio.

Groups are ``(n,)`` per-seed values. The Brown-Forsythe F tail comes from
:mod:`stabstat.stats.special` (no scipy import: CLI start-up time).

References
----------
Brown & Forsythe (1974), JASA 69:364-367.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from stabstat.stats import special
from stabstat.stats._common import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    CIMethod,
    RNGLike,
    _as_1d,
)
from stabstat.stats.bootstrap import bootstrap_diff
from stabstat.stats.results import BootstrapResult, TestResult


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
    # One-way ANOVA on absolute deviations from each group's median; F tail via stabstat.stats.special.
    z = [np.abs(a - np.median(a)) for a in usable]
    n_i = np.array([a.size for a in z], dtype=np.float64)
    zbar_i = np.array([a.mean() for a in z])
    n_total, k = float(n_i.sum()), float(len(z))
    zbar = float((n_i * zbar_i).sum() / n_total)
    within = float(sum(((a - m) ** 2).sum() for a, m in zip(z, zbar_i, strict=True)))
    between = float((n_i * (zbar_i - zbar) ** 2).sum())
    df = (k - 1.0, n_total - k)
    # No spread of the absolute deviations within any group (always so with 2 runs per
    # group: both deviate from their median by half their distance): the F ratio is x/0,
    # and rounding would turn it into W ~ 1e29, p ~ 0. The test is undefined, not significant.
    scale = float(max((a**2).sum() for a in z))
    if within <= 1e-12 * scale or n_total - k < 1:
        return TestResult(name, math.nan, math.nan, sizes, df, tuple(notes + [
            "undefined: no spread of the deviations within any group (e.g. 2 runs per group); "
            "needs groups of 3 or more runs that differ"]))
    w = (df[1] / df[0]) * between / within
    p = float(special.fdtrc(df[0], df[1], w))
    return TestResult(name, float(w), p, sizes, df, tuple(notes))


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
