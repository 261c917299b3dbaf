"""The levels of a factor in a :class:`~stabstat.analysis.selection.RunSet` frame.

Small helpers every analysis shares: the order of a factor's levels, one level's runs, the
metric values of a group, its failure count, and :func:`pair_by_seed` (two levels' values
aligned by seed, used by ``compare`` and by ``stabstat check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.analysis.columns import Columns

__all__ = ["LevelArrays", "group_rate", "level_arrays", "level_arrays_from_columns", "levels", "levels_from_columns",
           "metric_values", "pair_arrays", "pair_by_seed", "subset"]


def levels(frame: pl.DataFrame, col: str) -> list[Any]:
    """The distinct values of ``col``, sorted (as text when they do not compare), null last."""
    return _sorted_levels(frame[col].unique().to_list())


def _sorted_levels(vals: list[Any]) -> list[Any]:
    """Distinct values ``vals`` sorted (as text when they do not compare), null last."""
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


@dataclass(frozen=True)
class LevelArrays:
    """One group's runs as numpy arrays, taken from its frame once (``compare`` reuses them
    for every pair the group is in instead of filtering the frame again per pair).

    values: ``(n,)`` float64, :func:`metric_values` of the frame; successful: the same for
    the runs known not to have failed; finite: the finite ``value`` column in frame order
    (``(m,)``, what :func:`pair_arrays` returns unpaired); by_seed: those values ordered by
    seed and seeds their sorted seeds, or None when the group cannot be paired (no ``seed``
    column, a null seed, a repeated seed); failed/known: failed runs / runs with a known status.
    """

    frame: pl.DataFrame | None
    values: np.ndarray
    successful: np.ndarray
    finite: np.ndarray
    by_seed: np.ndarray | None
    seeds: list[Any] | None
    has_seed: bool
    failed: int
    known: int
    #: Runs in the group (the frame's height), those without a value included.
    n_runs: int = -1

    def rate(self, confidence: float) -> S.RateResult:
        """The failure rate with its interval (as :func:`group_rate` of the frame)."""
        return S.rate_interval(self.failed, self.known, confidence=confidence)


def level_arrays(frame: pl.DataFrame) -> LevelArrays:
    """The :class:`LevelArrays` of one group's rows."""
    import polars as pl

    ok = frame.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
    by_seed: np.ndarray | None = None
    seeds: list[Any] | None = None
    has_seed = "seed" in ok.columns
    if has_seed and ok["seed"].null_count() == 0 and ok["seed"].n_unique() == ok.height:
        ordered = ok.sort("seed")
        by_seed, seeds = ordered["value"].to_numpy(), ordered["seed"].to_list()
    known = frame["failed"].drop_nulls()
    return LevelArrays(frame, metric_values(frame), metric_values(frame, successful_only=True), ok["value"].to_numpy(),
                       by_seed, seeds, has_seed, int(known.sum()), int(known.len()), frame.height)


def levels_from_columns(cols: Columns, col: str) -> list[Any] | None:
    """:func:`levels` of a :class:`~stabstat.analysis.columns.Columns` (no polars), or None
    when its values are floats that polars and Python may group differently (NaN, -0.0):
    the caller then takes the frame."""
    c = cols[col]
    if c.data.dtype.kind == "f":
        ok = c.data[~c.null]
        if not np.all(np.isfinite(ok)) or np.any((ok == 0) & np.signbit(ok)):
            return None
    return _sorted_levels(list(dict.fromkeys(c.to_list())))


def level_arrays_from_columns(cols: Columns, col: str) -> list[tuple[Any, LevelArrays]] | None:
    """``[(level, LevelArrays)]`` for every level of ``col`` in :func:`levels` order, from
    numpy columns: the same arrays as ``level_arrays(subset(frame, col, level))`` of the frame
    of these columns (tests/test_compare_fast.py), without polars. None when the levels or the
    seeds are floats (the frame path then decides, as it always did)."""
    lvls = levels_from_columns(cols, col)
    has_seed = "seed" in cols
    if lvls is None or (has_seed and cols["seed"].data.dtype.kind == "f"):
        return None
    key = cols[col].to_list()
    value, failed = cols["value"], cols["failed"]
    finite_all = ~value.null & np.isfinite(value.filled(np.nan).astype(np.float64))
    v_all = value.data.astype(np.float64, copy=False)
    seed_all = cols["seed"].to_list() if has_seed else None
    out = []
    for lv in lvls:
        rows = np.fromiter((k is None if lv is None else (k is not None and k == lv) for k in key), dtype=bool,
                           count=len(key))
        finite = rows & finite_all
        vals = v_all[finite]
        ok = finite & ~failed.null & ~failed.data.astype(bool)
        by_seed: np.ndarray | None = None
        seeds: list[Any] | None = None
        if seed_all is not None:
            s = [seed_all[i] for i in np.flatnonzero(finite)]
            if None not in s and len(set(s)) == len(s):
                order = sorted(range(len(s)), key=s.__getitem__)
                by_seed, seeds = vals[order], [s[i] for i in order]
        known = rows & ~failed.null
        out.append((lv, LevelArrays(None, vals, v_all[ok], vals, by_seed, seeds, has_seed,
                                    int((known & failed.data.astype(bool)).sum()), int(known.sum()), int(rows.sum()))))
    return out


def pair_arrays(a: LevelArrays, b: LevelArrays, paired: bool | str) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`pair_by_seed` on two groups' :class:`LevelArrays` (no frame work per pair)."""
    want = paired is True or (paired == "auto" and a.has_seed)
    if (want and a.has_seed and a.seeds is not None and b.seeds is not None and len(a.seeds) >= 2
            and set(a.seeds) == set(b.seeds)):
        return a.by_seed, b.by_seed, True  # type: ignore[return-value]
    if paired is True:
        raise SelectionError("--paired needs both groups to have the same seeds, one run per seed")
    return a.finite, b.finite, False


def pair_by_seed(fa: pl.DataFrame, fb: pl.DataFrame, paired: bool | str) -> tuple[np.ndarray, np.ndarray, bool]:
    """The finite values of two groups and whether they are paired: aligned by ``seed``
    when pairing applies (``paired`` ``"auto"``: both have exactly the same seeds, once
    each, at least 2; ``True``: required, else SelectionError; ``False``: never).
    """
    return pair_arrays(level_arrays(fa), level_arrays(fb), paired)
