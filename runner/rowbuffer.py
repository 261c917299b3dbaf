"""Row buffers of a run directory's tables, with type checks derived from the run-log contract.

:class:`RowBuffer` holds the rows of one table not yet flushed (Python lists per column plus
ready Arrow record batches); :func:`make_converter` turns one column of ``schemas.load()`` into
a function that checks a value (type, nullability, range, finiteness) and returns it as a
Python scalar, so a bad value raises at the logging call that made it, naming table and column.
Used by :class:`runner.logwriter.RunLogger`; needs only pyarrow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

import schemas

__all__ = ["Converter", "RowBuffer", "make_converter"]


#: value -> the checked Python scalar (raises TypeError/ValueError naming table.column)
Converter = Callable[[Any], Any]


def make_converter(table: str, col: schemas.Column) -> Converter:
    """A function that checks one value against ``col`` and returns it as a Python scalar."""
    where = f"{table}.{col.name}"
    nullable = col.nullable

    def null_error() -> TypeError:
        return TypeError(f"RunLogger: {where} must not be None (contract type {col.type}, non-nullable)")

    if col.type in ("int64", "int32"):
        lo, hi = (-(2**63), 2**63 - 1) if col.type == "int64" else (-(2**31), 2**31 - 1)

        def to_int(v: Any) -> int | None:
            if v is None:
                if nullable:
                    return None
                raise null_error()
            if isinstance(v, bool):
                raise TypeError(f"RunLogger: {where} must be an integer ({col.type}), got bool {v!r}")
            try:
                i = operator.index(v)
            except TypeError:
                raise TypeError(
                    f"RunLogger: {where} must be an integer ({col.type}), "
                    f"got {type(v).__name__} {v!r}"
                ) from None
            if not lo <= i <= hi:
                raise ValueError(f"RunLogger: {where}={i} does not fit in {col.type}")
            return i

        return to_int

    if col.type == "float64":
        finite = col.finite

        def to_float(v: Any) -> float | None:
            if v is None:
                if nullable:
                    return None
                raise null_error()
            if isinstance(v, (bool, str, bytes)):
                raise TypeError(
                    f"RunLogger: {where} must be a number (float64), got {type(v).__name__} {v!r}"
                )
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise TypeError(
                    f"RunLogger: {where} must be a number (float64), got {type(v).__name__} {v!r}"
                ) from None
            if finite and not math.isfinite(f):
                # The contract forbids NaN/inf here and says null means "undefined": a logging
                # call must not crash training, so store null rather than raise.
                if nullable:
                    return None
                raise ValueError(f"RunLogger: {where} must be finite, got {f!r}")
            return f

        return to_float

    if col.type == "string":

        def to_str(v: Any) -> str | None:
            if v is None:
                if nullable:
                    return None
                raise null_error()
            if not isinstance(v, str):
                raise TypeError(f"RunLogger: {where} must be a str (string), got {type(v).__name__} {v!r}")
            return v

        return to_str

    if col.type == "bool":

        def to_bool(v: Any) -> bool | None:
            if v is None:
                if nullable:
                    return None
                raise null_error()
            if not isinstance(v, bool) and type(v).__name__ not in ("bool_", "bool"):
                raise TypeError(f"RunLogger: {where} must be a bool, got {type(v).__name__} {v!r}")
            return bool(v)

        return to_bool

    raise ValueError(f"schemas: unknown column type {col.type!r} for {where}")  # pragma: no cover


class RowBuffer:
    """Rows of one table not yet flushed: Python lists per column plus ready Arrow batches."""

    def __init__(self, table: schemas.Table) -> None:
        self.table = table
        self.schema = table.arrow_schema()
        self.names = table.column_names
        self.converters = [make_converter(table.name, c) for c in table.columns]
        self.columns: list[list[Any]] = [[] for _ in self.names]
        self.batches: list[pa.RecordBatch] = []
        self.n_rows = 0

    def append(self, row: Mapping[str, Any]) -> None:
        # Convert the whole row first so a bad value leaves the buffer unchanged.
        values = [conv(row.get(name)) for name, conv in zip(self.names, self.converters, strict=True)]
        for col, v in zip(self.columns, values, strict=True):
            col.append(v)
        self.n_rows += 1

    def append_batch(self, batch: pa.RecordBatch) -> None:
        self._move_lists_to_batch()
        self.batches.append(batch)
        self.n_rows += batch.num_rows

    def _move_lists_to_batch(self) -> None:
        if self.columns and self.columns[0]:
            self.batches.append(pa.RecordBatch.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(self.columns, self.schema, strict=True)],
                schema=self.schema,
            ))
            self.columns = [[] for _ in self.names]

    def take(self) -> pa.Table | None:
        """Everything buffered as one Arrow table (or None), and clear the buffer."""
        self._move_lists_to_batch()
        if not self.batches:
            return None
        out = pa.Table.from_batches(self.batches, schema=self.schema)
        self.batches = []
        self.n_rows = 0
        return out
