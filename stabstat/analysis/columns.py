"""A query result as numpy columns, turned into a polars frame only when asked for.

:func:`~stabstat.analysis.selection.select_runs` fetches its rows with DuckDB's
``fetchnumpy`` into :class:`Columns`, applies the failure rule and its filters on the arrays,
and keeps them in the :class:`~stabstat.analysis.selection.RunSet`. ``compare`` reads its
levels straight from the arrays (:func:`stabstat.analysis.levels.level_arrays_from_columns`),
so a ``compare`` never imports polars (~0.1 s of a 1 s process); every other analysis
reads ``RunSet.frame``, built here once from the same arrays with the dtypes DuckDB's Arrow
export gives (tests/test_compare_fast.py checks it equals ``fetch_frame`` of the query).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import duckdb
    import polars as pl

__all__ = ["Column", "Columns", "fetch_columns"]

#: DuckDB type -> polars dtype name (the types a selection query returns: the factor types
#: BOOLEAN/BIGINT/DOUBLE/VARCHAR and the run_summary/run_training columns).
_POLARS_TYPES = {
    "BOOLEAN": "Boolean", "TINYINT": "Int8", "SMALLINT": "Int16", "INTEGER": "Int32", "BIGINT": "Int64",
    "UTINYINT": "UInt8", "USMALLINT": "UInt16", "UINTEGER": "UInt32", "UBIGINT": "UInt64",
    "FLOAT": "Float32", "DOUBLE": "Float64", "VARCHAR": "String",
}


@dataclass(frozen=True)
class Column:
    """One column of ``n`` rows: ``data`` (``(n,)`` numpy array; any value where null),
    ``null`` (``(n,)`` bool, True where SQL NULL) and its DuckDB type name."""

    data: np.ndarray
    null: np.ndarray
    duck_type: str

    def take(self, rows: np.ndarray) -> Column:
        """The rows selected by ``rows`` (a bool mask or indices), in that order."""
        return Column(self.data[rows], self.null[rows], self.duck_type)

    def to_list(self) -> list[Any]:
        """Python values (int, float, bool, str), None where null: what polars' ``to_list`` gives."""
        out: list[Any] = self.data.tolist()
        for i in np.flatnonzero(self.null):
            out[i] = None
        return out

    def filled(self, value: Any) -> np.ndarray:
        """``data`` with ``value`` where null."""
        return np.where(self.null, value, self.data) if self.null.any() else self.data


class Columns:
    """Named :class:`Column` s of equal length, in query order (a light, read-only frame)."""

    def __init__(self, cols: dict[str, Column]) -> None:
        self.cols = cols
        self.height = len(next(iter(cols.values())).data) if cols else 0

    @property
    def names(self) -> list[str]:
        return list(self.cols)

    def __contains__(self, name: object) -> bool:
        return name in self.cols

    def __getitem__(self, name: str) -> Column:
        return self.cols[name]

    def take(self, rows: np.ndarray) -> Columns:
        """The rows selected by a bool mask or indices, every column."""
        return Columns({k: c.take(rows) for k, c in self.cols.items()})

    def with_column(self, name: str, col: Column) -> Columns:
        """A copy with ``name`` added at the end (or replaced in place)."""
        return Columns({**self.cols, name: col})

    def rename(self, names: dict[str, str]) -> Columns:
        """Columns renamed by ``names`` (old -> new), order kept."""
        return Columns({names.get(k, k): c for k, c in self.cols.items()})

    def to_frame(self) -> pl.DataFrame:
        """The polars DataFrame of these columns (nulls as nulls, dtypes as DuckDB's Arrow
        export would give them)."""
        import polars as pl

        series = []
        for name, c in self.cols.items():
            dtype = getattr(pl, _POLARS_TYPES[c.duck_type]) if c.duck_type in _POLARS_TYPES else None
            values: Any = np.ma.masked_array(c.data, mask=c.null) if c.null.any() else c.data
            if dtype is None:
                values = c.to_list()
            series.append(pl.Series(name, values, dtype=dtype))
        return pl.DataFrame(series)


def fetch_columns(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> Columns:
    """Run ``sql`` and fetch its result as :class:`Columns` (DuckDB's ``fetchnumpy``: no
    Arrow, no polars, no Python rows)."""
    rel = con.sql(sql, params=list(params) if params is not None else None)
    assert rel is not None, "fetch_columns needs a query with a result"
    names, types = rel.columns, [str(t) for t in rel.types]
    arrays = rel.fetchnumpy()
    return Columns({name: _column(arrays[name], typ) for name, typ in zip(names, types, strict=True)})


def _column(arr: Any, duck_type: str) -> Column:
    """A :class:`Column` from one ``fetchnumpy`` array (masked where the column has nulls)."""
    if isinstance(arr, np.ma.MaskedArray):
        return Column(np.asarray(arr.data), np.ma.getmaskarray(arr).copy(), duck_type)
    data = np.asarray(arr)
    null = np.zeros(data.shape, dtype=bool)
    if data.dtype == object:  # VARCHAR without a mask may still hold None
        null = np.fromiter((v is None for v in data), dtype=bool, count=data.size)
    return Column(data, null, duck_type)


def bool_column(values: Iterable[bool] | np.ndarray, null: np.ndarray) -> Column:
    """A BOOLEAN column from values and a null mask."""
    return Column(np.asarray(values, dtype=bool), np.asarray(null, dtype=bool), "BOOLEAN")
