"""The :class:`Store`: an open stabstat database and its read side.

Query methods return polars DataFrames: :meth:`Store.runs`, :meth:`Store.summary`,
:meth:`Store.schema` and :meth:`Store.query` (one read-only statement). User-given factor names
reach SQL only through :meth:`Store.quote_factor` and :meth:`Store.filter_sql`. Writing runs
is :func:`stabstat.ingest.ingest`'s job (with :mod:`stabstat.store.load`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stabstat.errors import InputFormatError, QueryError, SelectionError, StabstatError
from stabstat.store.connection import connect, default_db, fetch_frame, first_line, quote_ident
from stabstat.store.schema import RESERVED, create_schema, parse_value, summary_select

if TYPE_CHECKING:
    import duckdb
    import polars as pl

__all__ = ["Store"]

_QUERY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}


class Store:
    """A stabstat DuckDB database.

    Open with :meth:`open` (or ``stabstat.open(path)``); use as a context manager to close it.
    Query methods return polars DataFrames.

    >>> import stabstat
    >>> with stabstat.open("stabstat.duckdb") as store:  # doctest: +SKIP
    ...     store.runs()
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        # The runs table's columns, read once per read-only store: its schema cannot change
        # while the file is open read-only (DuckDB lets no writer in), and a selection asks
        # for the factors ~7 times (4 ms each, a quarter of select_runs).
        self._columns_cache: list[tuple[str, str]] | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, read_only: bool = True,
             external_access: bool = True) -> Store:
        """Open the database at ``path`` (default ``$STABSTAT_DB`` or ``./stabstat.duckdb``).

        ``read_only=False`` creates the file and the tables if needed (for ingest).
        ``external_access=False`` locks the connection to this database: SQL run on it
        (``--where``, claims files) cannot read files, the network or extensions
        (:func:`stabstat.store.connection.restrict`); the analysis commands open it so.

        Raises
        ------
        DatabaseInUseError
            Another process holds the file (DuckDB allows one writer, or many readers).
        InputFormatError
            The file does not exist (read-only) or is not a DuckDB database.
        """
        p = str(path) if path is not None else default_db()
        store = cls(connect(p, read_only, external_access=external_access), p, read_only=read_only)
        if not read_only:
            create_schema(store.con, p)
        elif not store._runs_columns():  # no runs table (its columns, read once, serve the factors too)
            store.close()
            raise InputFormatError(f"{p}: not a stabstat database (no runs table); create it with `stabstat ingest`")
        return store

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(Exception):  # closing twice is fine
            self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def require_writable(self) -> None:
        """Raise :class:`~stabstat.errors.StabstatError` if the store is open read-only."""
        if self.read_only:
            raise StabstatError(f"{self.path} is open read-only; use Store.open(path, read_only=False) to ingest")

    # -- factors ---------------------------------------------------------------------------

    def _runs_columns(self) -> list[tuple[str, str]]:
        if self._columns_cache is not None:
            return self._columns_cache
        cols = [
            (str(r[0]), str(r[1]))
            for r in self.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = 'runs' ORDER BY ordinal_position"
            ).fetchall()
        ]
        if self.read_only:
            self._columns_cache = cols
        return cols

    def factors(self) -> dict[str, str]:
        """Factor name -> DuckDB type (BOOLEAN, BIGINT, DOUBLE or VARCHAR), in the order the
        columns were added."""
        return {n: t for n, t in self._runs_columns() if n not in RESERVED}

    def quote_factor(self, name: str) -> str:
        """The quoted SQL identifier of factor ``name``; never paste a user's name into SQL
        without this. Matching is exact, else case-insensitive when unambiguous.

        Raises
        ------
        SelectionError
            If ``name`` is not a factor; the message lists the factors.
        """
        factors = self.factors()
        if name in factors:
            return quote_ident(name)
        folded = [f for f in factors if f.lower() == name.lower()]
        if len(folded) == 1:
            return quote_ident(folded[0])
        available = ", ".join(factors) or "(none: ingest some runs first)"
        raise SelectionError(f"unknown factor {name!r}; factors in {self.path}: {available}")

    def filter_sql(self, filters: Mapping[str, Any] | Sequence[str], *, table_alias: str = "") -> tuple[str, list[Any]]:
        """A SQL condition over ``runs`` factor columns and its parameters.

        ``filters``: ``{"seed": 3}`` or ``["task=rte", "bias_correction=false"]`` (values from
        text are parsed like ``--param``; a VARCHAR factor keeps the text). Identifiers are
        validated with :meth:`quote_factor`, values are bound as parameters. Returns
        ``("TRUE", [])`` for no filters.

        Raises
        ------
        SelectionError
            Unknown factor, or a value that does not fit the factor's type.
        """
        items: list[tuple[str, Any]] = []
        value: Any
        if isinstance(filters, Mapping):
            items = list(filters.items())
        else:
            for item in filters:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise SelectionError(f"--filter {item!r}: expected key=value, e.g. --filter task=rte")
                items.append((key.strip(), value))
        factors = self.factors()
        prefix = f"{table_alias}." if table_alias else ""
        conds, params = [], []
        for key, value in items:
            ident = self.quote_factor(key)
            typ = factors.get(key) or next(t for n, t in factors.items() if n.lower() == key.lower())
            if value is None:
                conds.append(f"{prefix}{ident} IS NULL")
                continue
            if isinstance(value, str) and typ != "VARCHAR":
                value = parse_value(value)
            ok = (
                (typ == "VARCHAR" and isinstance(value, str))
                or (typ == "BOOLEAN" and isinstance(value, bool))
                or (typ in ("BIGINT", "DOUBLE") and isinstance(value, (int, float)) and not isinstance(value, bool))
            )
            if not ok:
                raise SelectionError(f"filter {key}={value!r}: factor {key!r} is {typ}; give a value of that type")
            conds.append(f"{prefix}{ident} = ?")
            params.append(value)
        return (" AND ".join(conds) if conds else "TRUE"), params

    # -- querying --------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run one read-only SQL statement (SELECT, EXPLAIN, PRAGMA, CALL; also DESCRIBE, SHOW,
        SUMMARIZE) and return the result as a polars DataFrame. Values go in ``params``
        (``?`` or ``$name`` placeholders), never into the SQL text.

        Raises
        ------
        QueryError
            Several statements, a writing statement, or DuckDB's error (first line).
        """
        import duckdb

        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(f"query: {first_line(exc)}") from None
        if len(statements) != 1:
            raise QueryError(f"query: expected exactly one SQL statement, got {len(statements)}")
        kind = statements[0].type.name
        if kind not in _QUERY_STATEMENTS:
            raise QueryError(
                f"query: {kind} statements are not allowed: queries are read-only "
                "(use SELECT; to change the database, re-ingest the runs)"
            )
        try:
            return fetch_frame(self.con, sql, params)
        except duckdb.Error as exc:
            raise QueryError(f"query: {first_line(exc)}") from None

    def schema(self) -> pl.DataFrame:
        """Tables and views with their columns: ``table``, ``kind``, ``column``, ``type``, ``rows``."""
        import polars as pl

        cols = self.con.execute(
            """SELECT c.table_name, t.table_type, c.column_name, c.data_type
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = 'main'
               ORDER BY t.table_type, c.table_name, c.ordinal_position"""
        ).fetchall()
        counts: dict[str, int | None] = {}
        for name, kind, *_ in cols:
            if name not in counts:
                counts[name] = (
                    int(self.con.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()[0][0])
                    if kind == "BASE TABLE" else None
                )
        return pl.DataFrame(
            {
                "table": [c[0] for c in cols],
                "kind": ["table" if c[1] == "BASE TABLE" else "view" for c in cols],
                "column": [c[2] for c in cols],
                "type": [c[3] for c in cols],
                "rows": [counts[c[0]] for c in cols],
            },
            schema={"table": pl.String, "kind": pl.String, "column": pl.String, "type": pl.String, "rows": pl.Int64},
        )

    def runs(self) -> pl.DataFrame:
        """One row per run: run_id, status, the factors, source_format, started_at,
        train_loss_final, diverged, and the final value of every evaluated metric as a column
        ``<split>/<metric>`` (e.g. ``dev/accuracy``). Sorted by run_id."""
        factor_cols = "".join(f", r.{quote_ident(f)}" for f in self.factors())
        base = fetch_frame(
            self.con,
            f"""SELECT r.run_id, r.status{factor_cols}, r.source_format, r.started_at,
                       t.train_loss_final, t.diverged
                FROM runs r LEFT JOIN run_training t USING (run_id) ORDER BY r.run_id""",
        )
        finals = fetch_frame(
            self.con,
            "SELECT run_id, split || '/' || metric AS name, final_value FROM run_summary ORDER BY split, metric",
        )
        if finals.height:
            wide = finals.pivot(on="name", index="run_id", values="final_value")
            base = base.join(wide, on="run_id", how="left")
        return base.sort("run_id")

    def summary(
        self,
        *,
        split: str | None = None,
        metric: str | None = None,
        higher_is_better: bool | Mapping[str, bool] | None = None,
    ) -> pl.DataFrame:
        """``run_summary`` rows joined with the runs' factor columns.

        Parameters
        ----------
        split, metric
            Keep only this split / metric (checked against what exists).
        higher_is_better
            Direction override for ``best_value``: a bool (for ``metric`` when given, else for
            every metric) or ``{metric: bool}``. Precedence: this, then run.json's
            ``task.higher_is_better``, then :func:`default_higher_is_better`.

        Raises
        ------
        SelectionError
            Unknown split or metric (the message lists those that exist).
        """
        conds, params = [], []
        for what, value in (("split", split), ("metric", metric)):
            if value is None:
                continue
            known = [r[0] for r in self.con.execute(f"SELECT DISTINCT {what} FROM evals ORDER BY 1").fetchall()]
            if value not in known:
                raise SelectionError(f"unknown {what} {value!r}; {what}s in {self.path}: {', '.join(known) or '(none)'}")
            conds.append(f"s.{what} = ?")
            params.append(value)
        hib_true: list[str] = []
        hib_false: list[str] = []
        hib_all: bool | None = None
        if isinstance(higher_is_better, Mapping):
            for k, v in higher_is_better.items():
                (hib_true if v else hib_false).append(str(k))
        elif higher_is_better is not None:
            if metric is not None:
                (hib_true if higher_is_better else hib_false).append(metric)
            else:
                hib_all = bool(higher_is_better)
        override = (
            "CASE WHEN list_contains(?::VARCHAR[], ev.metric) THEN TRUE "
            "WHEN list_contains(?::VARCHAR[], ev.metric) THEN FALSE ELSE ?::BOOLEAN END"
        )
        factor_cols = "".join(f", r.{quote_ident(f)}" for f in self.factors())
        where = " AND ".join(conds) if conds else "TRUE"
        sql = (
            f"SELECT s.*{factor_cols} FROM ({summary_select(override)}) s JOIN runs r USING (run_id) "
            f"WHERE {where} ORDER BY s.run_id, s.split, s.metric"
        )
        return fetch_frame(self.con, sql, [hib_true, hib_false, hib_all, *params])
