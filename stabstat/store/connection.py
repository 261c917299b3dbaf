"""Opening the DuckDB file, and the two helpers every SQL user needs.

:func:`connect` turns DuckDB's lock and open errors into one-line messages
(:class:`~stabstat.errors.DatabaseInUseError` names the process holding the file).
:func:`fetch_frame` is the one SQL-to-polars path of the analysis side; :func:`quote_ident`
the one way a name reaches SQL text. duckdb and polars are imported on first use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabstat.errors import DatabaseInUseError, InputFormatError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

__all__ = ["DB_ENV", "DEFAULT_DB", "connect", "default_db", "fetch_frame", "first_line", "quote_ident",
           "restrict"]

DB_ENV = "STABSTAT_DB"
DEFAULT_DB = "stabstat.duckdb"


def quote_ident(name: str) -> str:
    """Quote ``name`` as a DuckDB identifier (``"..."``, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def default_db() -> str:
    """``$STABSTAT_DB`` or ``./stabstat.duckdb``."""
    return os.environ.get(DB_ENV, DEFAULT_DB)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (DuckDB's messages run over several lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def fetch_frame(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> pl.DataFrame:
    """Run ``sql`` and fetch its whole result as a polars DataFrame (via Arrow, no Python rows).

    The one SQL-to-frame path of the analysis side (store, analysis, chart data, report).
    Values go in ``params``, never into ``sql``. Fetches everything, so no result stays open.
    The Arrow data pass through the Arrow C stream interface (``__arrow_c_stream__``), so
    pyarrow (~0.12 s to import) is never loaded on this path; the frame equals
    ``pl.from_arrow(rel.to_arrow_table())`` column for column (tests/test_fast_paths.py).
    """
    import polars as pl

    rel = con.sql(sql, params=params)
    if rel is None:  # a statement without a result
        return pl.DataFrame()
    return pl.DataFrame(rel).rechunk()


def restrict(con: duckdb.DuckDBPyConnection) -> None:
    """Lock ``con`` to its own database: no file, network or extension access, for good.

    ``enable_external_access = false`` refuses ``read_text``, ``read_csv``,
    ``read_parquet``, ``glob``, ``ATTACH``, ``COPY`` and ``INSTALL``/``LOAD``;
    ``lock_configuration`` keeps a later ``SET`` (e.g. in a ``--where`` or a claims file)
    from turning it back on. Temp tables still work (they live in memory). Used by the
    analysis, ``check``, ``report`` and ``chart`` commands, whose SQL fragments may come
    from a shared claims file; ``stabstat query`` (the user's own SQL) keeps full access.
    """
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def connect(path: str, read_only: bool, *, external_access: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file ``path`` (``:memory:`` allowed); ``external_access=False``
    locks the connection to the database (:func:`restrict`).

    Raises
    ------
    DatabaseInUseError
        Another process holds the file's lock, or this process has it open with the other
        read-only setting.
    InputFormatError
        The folder does not exist, the file does not exist (read-only) or is not DuckDB's.
    """
    import duckdb

    if path != ":memory:" and not Path(path).parent.is_dir():
        raise InputFormatError(f"{path}: folder {Path(path).parent} does not exist; create it or choose another --db")
    if read_only and path != ":memory:" and not Path(path).exists():
        raise InputFormatError(
            f"{path}: no such database; create it with `stabstat ingest RUNS --db {path}` "
            f"(or set ${DB_ENV})"
        )
    try:
        con = duckdb.connect(path, read_only=read_only)
        # DuckDB draws its own progress bar on long statements; the CLI's is the only one.
        con.execute("SET enable_progress_bar = false")
        if not external_access:
            restrict(con)
        return con
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            m = re.search(r"PID (\d+)", msg)
            pid = f"pid {m.group(1)}" if m else "pid unknown"
            raise DatabaseInUseError(
                f"database {path} is in use by another process ({pid}); "
                "wait for it to finish or use another --db"
            ) from None
        raise InputFormatError(f"{path}: cannot open as a DuckDB database: {first_line(exc)}") from None
    except duckdb.ConnectionException as exc:
        raise DatabaseInUseError(
            f"database {path} is already open in this process with other settings "
            f"(read-only vs read-write); close the other Store first ({first_line(exc)})"
        ) from None
