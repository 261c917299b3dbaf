"""Multiple comparisons: Holm (family-wise error) and Benjamini-Hochberg (FDR) adjustments.

p-values are a ``(m,)`` array; NaN entries (tests that could not be run) stay NaN and do
not count towards ``m``.

References
----------
Holm (1979), Scand. J. Statist. 6:65-70. Benjamini & Hochberg (1995), JRSS-B 57:289-300.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from stabstat.stats._common import FloatArray


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
