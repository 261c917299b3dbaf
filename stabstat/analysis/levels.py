"""The levels of a factor in a :class:`~stabstat.analysis.selection.RunSet` frame.

Small helpers every analysis shares: the order of a factor's levels, one level's runs, the
metric values of a group, its failure count, and :func:`pair_by_seed` (two levels' values
aligned by seed, used by ``compare`` and by ``stabstat check``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

__all__ = ["group_rate", "levels", "metric_values", "pair_by_seed", "subset"]


def levels(frame: pl.DataFrame, col: str) -> list[Any]:
    """The distinct values of ``col``, sorted (as text when they do not compare), null last."""
    vals = frame[col].unique().to_list()
    present = [v for v in vals if v is not None]
    try:
        present.sort()
    except TypeError:
        present.sort(key=str)
    return present + ([None] if None in vals else [])


def subset(frame: pl.DataFrame, col: str, level: Any) -> pl.DataFrame:
    """The rows where ``col`` is ``level`` (null when ``level`` is None)."""
    import polars as pl

    return frame.filter(pl.col(col).is_null() if level is None else pl.col(col) == level)


def metric_values(frame: pl.DataFrame, *, successful_only: bool = False) -> np.ndarray:
    """The finite metric values of the rows (float64, 1-D); ``successful_only`` keeps the
    runs known not to have failed."""
    import polars as pl

    f = frame.filter(pl.col("failed").not_() & pl.col("failed").is_not_null()) if successful_only else frame
    v = f["value"].drop_nulls().to_numpy().astype(np.float64)
    return v[np.isfinite(v)]


def group_rate(frame: pl.DataFrame, confidence: float) -> S.RateResult:
    """The failure rate of the rows whose failure status is known, with its interval."""
    known = frame["failed"].drop_nulls()
    return S.rate_interval(int(known.sum()), int(known.len()), confidence=confidence)


def pair_by_seed(fa: pl.DataFrame, fb: pl.DataFrame, paired: bool | str) -> tuple[np.ndarray, np.ndarray, bool]:
    """The finite values of two groups and whether they are paired: aligned by ``seed``
    when pairing applies (``paired`` ``"auto"``: both have exactly the same seeds, once
    each, at least 2; ``True``: required, else SelectionError; ``False``: never).
    """
    import polars as pl

    def ok(f: pl.DataFrame) -> pl.DataFrame:
        return f.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())

    a, b = ok(fa), ok(fb)
    want = paired is True or (paired == "auto" and "seed" in a.columns)
    if want and "seed" in a.columns:
        sa, sb = a["seed"], b["seed"]
        if (sa.null_count() == 0 and sb.null_count() == 0 and sa.n_unique() == a.height
                and sb.n_unique() == b.height and set(sa.to_list()) == set(sb.to_list()) and a.height >= 2):
            a, b = a.sort("seed"), b.sort("seed")
            return a["value"].to_numpy(), b["value"].to_numpy(), True
    if paired is True:
        raise SelectionError("--paired needs both groups to have the same seeds, one run per seed")
    return a["value"].to_numpy(), b["value"].to_numpy(), False
