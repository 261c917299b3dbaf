"""Durable file writes of a run directory: temp file in the same folder, fsync, rename.

After ``kill -9`` at any moment a file written here is either complete (the new version) or
absent/the old version: the temp name (``.<name>.tmp``) never matches a name readers take, and
the rename is made durable by fsync'ing the folder. Used by :class:`runner.logwriter.RunLogger`
for part files, compacted tables and ``run.json``; needs only pyarrow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import schemas

__all__ = ["atomic_write", "write_json_atomic", "write_parquet_atomic"]


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; directories cannot be opened on Windows, where this is a no-op.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a hidden temp file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_parquet_atomic(table: pa.Table, path: Path, t: schemas.Table) -> None:
    """Write ``table`` (of contract table ``t``) as Parquet to ``path`` atomically."""
    # No min/max statistics for float columns that may hold NaN: pyarrow's statistics skip NaN,
    # and DuckDB's filter pushdown trusts them, so `WHERE isnan(loss)` would silently find 0 rows.
    with_stats = [c.name for c in t.columns if not (c.type == "float64" and not c.finite)]
    atomic_write(path, lambda f: pq.write_table(table, f, write_statistics=with_stats))


def write_json_atomic(obj: Mapping[str, Any], path: Path) -> None:
    """Write ``obj`` as indented UTF-8 JSON (no NaN/inf; unknown objects as ``str``) atomically."""
    data = json.dumps(obj, indent=2, allow_nan=False, default=str).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
