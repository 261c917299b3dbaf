"""Writing already-prepared runs: the load primitives behind :func:`stabstat.ingest.ingest`.

The store does not know where a run came from: a run arrives as a :class:`LoadableRun` (its
``runs`` row as a run.json-like dict, its factors, and per contract table a :class:`TableData`:
Parquet files read by DuckDB itself, typed column lists, or JSON files that DuckDB reads and a
format's SQL (:class:`JsonReader`) shapes into rows), and ``source_format`` is just a value for
the ``runs`` column. The caller owns the transaction; the primitives are
:func:`apply_factor_columns` (ALTER TABLE for new or widened factors), :func:`insert_runs`
(DELETE the replaced runs, INSERT the new rows), and :func:`record_ingests` (the ``ingests`` log).

Rows held by Python go in as one list parameter per column (``INSERT ... SELECT
unnest(?::T[]), ...``): never ``executemany`` or multi-row VALUES (milliseconds per row or per
parameter), and never an Arrow table (registering one, or ``pa.array`` on a list, imports
pandas: ~0.7 s of start-up for every ``stabstat ingest``).

JSON files (e.g. Hugging Face ``trainer_state.json``) are never parsed by Python on the way in:
the runs of one batch that share a :class:`JsonReader` are staged by DuckDB's own readers
(``read_json`` / ``read_text`` over all their files in one statement, into temporary tables), the reader's
``facts`` query returns one small row per run (status, metric names, row counts) that its
``finish`` callback writes into the run before its ``runs`` row is inserted, and each table's
rows are inserted with one ``INSERT ... SELECT`` from the staged rows. A file DuckDB cannot
read (or that the reader's SQL finds malformed: ``error()``) fails the statement, so the batch
is rolled back and retried by halves down to single runs, where :attr:`JsonReader.fallback` reads the failing
run in Python (one-line rejection naming the file and entry, or column lists to load).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import schemas
from stabstat import rundir
from stabstat._text import json_safe
from stabstat.store.connection import quote_ident
from stabstat.store.schema import (
    DUCK_TYPES,
    INGESTS_COLUMNS,
    INGESTS_TYPES,
    RUNS_FIXED_COLUMNS,
    factor_type,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from stabstat.store.queries import Store

__all__ = [
    "IngestReport",
    "JsonFiles",
    "JsonReader",
    "LoadableRun",
    "Rejection",
    "TableData",
    "apply_factor_columns",
    "insert_columns",
    "insert_runs",
    "json_files",
    "now",
    "record_ingests",
    "statement_params",
]


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A run that was not ingested: its ``source`` (directory) and one-line ``message``."""

    source: str
    message: str

    def __str__(self) -> str:
        if self.message.startswith(self.source):  # the message already names the file
            return f"rejected {self.message}"
        return f"rejected {self.source}: {self.message}"


@dataclass
class IngestReport:
    """What one :func:`stabstat.ingest.ingest` call did. Run ids per outcome; ``rejected`` with reasons."""

    db: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  #: e.g. factor columns widened to DOUBLE

    @property
    def ingested(self) -> list[str]:
        """Runs written by this call (new plus replaced)."""
        return self.added + self.replaced

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        """``N ingested, M unchanged, K rejected`` (with the new/replaced split)."""
        return (
            f"{len(self.ingested)} ingested ({len(self.added)} new, {len(self.replaced)} replaced), "
            f"{len(self.unchanged)} unchanged, {len(self.rejected)} rejected"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = [asdict(r) for r in self.rejected]
        d["summary"] = self.summary()
        return d


# ---------------------------------------------------------------------------------------------
# What a run to load looks like
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonReader:
    """How DuckDB turns one JSON-based format's files into contract rows (shared by all runs
    of that format; see the module docstring for the flow).

    ``stage``: SQL statements run in order, each creating one temporary table (named in
    ``temp_tables``, dropped afterwards); or a callable ``stage(con, params)`` that runs its
    own (a reader whose SQL depends on what the files hold, e.g. their keys). They get four
    list parameters, one entry per file of the batch: ``$files`` (VARCHAR[], paths as given to
    ``read_json(..., filename = true)``, which returns them unchanged), ``$runs`` (VARCHAR[],
    the file's run_id), ``$r`` (BIGINT[], the run's 1-based number in the batch: an integer
    key, cheaper to group by than run_id) and ``$pos`` (INTEGER[], the file's position among
    its run's files, in the adapter's order);
    and ``$max_bytes`` (BIGINT), for ``read_json``'s ``maximum_object_size``: twice the
    largest file of the batch (a file may grow before it is read), at least DuckDB's default
    16 MiB (a larger limit costs time: DuckDB sizes its read buffers by it).
    A malformed file must make a statement fail (``error('...')`` in SQL).
    ``selects``: contract table -> SELECT over the temporary tables yielding that table's
    columns in contract order (run_id first); it may name ``$run_ids`` (VARCHAR[], the run_id
    of each run number: ``$run_ids[r]``), and it runs with ``preserve_insertion_order`` on:
    DuckDB then appends an order-preserving SELECT (a scan of staged tables, no join) batch by
    batch, where a join's output is appended per thread, each thread leaving a partly filled
    row group that the checkpoint merges, i.e. writes again (300 HF runs of 1,000 steps: 3 row
    groups instead of 4, a checkpoint of ~6 ms instead of ~33 ms). ``facts``: SELECT over them
    yielding one row per run, ``run_id`` first; ``finish(run, facts)`` gets that row as a dict
    and completes the run (status, ``run_json``, each :attr:`TableData.rows`) before it is
    stored.
    ``fallback(run)``: read the run without DuckDB (only after it failed to load alone):
    raise :class:`stabstat.ingest.Reject`-like exceptions with the one-line reason, or
    replace the run's JSON tables by column lists to load.
    """

    name: str
    stage: tuple[str, ...] | Callable[[Any, dict[str, Any]], None]
    temp_tables: tuple[str, ...]
    selects: Mapping[str, str]
    facts: str
    finish: Callable[[Any, dict[str, Any]], None]
    fallback: Callable[[Any], None]


@dataclass(frozen=True)
class JsonFiles:
    """The JSON files of one run for :class:`JsonReader` ``reader`` (the adapter's order:
    ``$pos`` counts along it). Every JSON table of the run holds the same instance."""

    reader: JsonReader
    files: tuple[str, ...]
    #: The largest file's size in bytes when the adapter listed them (0: unknown).
    max_bytes: int = 0


@dataclass
class TableData:
    """One contract table of one run, in one of three forms (or several, concatenated).

    ``files``: Parquet files DuckDB reads itself (``read_parquet``; the zero-copy path), with
    the distinct Arrow schemas among them in ``file_schemas`` (files of one layout are read as
    they are; mixed layouts are matched by column name). ``columns``: contract column name ->
    values (equal lengths, contract order), for rows a reader built in Python. ``json``: JSON
    files that DuckDB reads and a :class:`JsonReader` shapes into this table's rows.
    ``rows``: the table's row count (for batching and the ``ingests`` log; for ``json`` an
    estimate until the reader's ``finish`` sets it).
    """

    files: list[str] = field(default_factory=list)
    file_schemas: list[pa.Schema] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    rows: int = 0
    json: JsonFiles | None = None


class LoadableRun(Protocol):
    """What the load primitives read from a prepared run (:class:`stabstat.ingest.RunInput`).

    ``run_json`` is run.json-like metadata: ``status`` (as written), ``started_at`` /
    ``finished_at`` / ``heartbeat_at`` (ISO 8601 text), ``error``, ``schema_version``,
    ``task``, ``config``, ``environment``; missing keys become NULL. ``status`` is the effective
    status; ``majority`` holds ``[run_id, metric, value]`` rows.
    """

    run_id: str
    source: str
    source_format: str
    run_json: dict[str, Any]
    status: str
    fingerprint: str
    factors: dict[str, Any]
    tables: dict[str, TableData]
    majority: list[list[Any]]


def now() -> datetime:
    """The current UTC time, naive (DuckDB TIMESTAMP)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _json_text(obj: Any) -> str | None:
    """JSON text for a JSON column; NaN/inf become null (DuckDB's JSON rejects them)."""
    if obj is None:
        return None
    return json.dumps(json_safe(obj), default=str, allow_nan=False)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return rundir.parse_timestamp(value).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Primitives (the caller holds the transaction)
# ---------------------------------------------------------------------------------------------


def insert_columns(store: Store, table: str, columns: Mapping[str, list[Any]], types: Sequence[str]) -> None:
    """Insert rows given as one list per column (``columns``: name -> values, all of one
    length; ``types``: DuckDB type per column, in the same order), unnested side by side by
    DuckDB. Nothing happens for zero rows."""
    names = list(columns)
    if not names or not len(columns[names[0]]):
        return
    params = []
    for name, typ in zip(names, types, strict=True):
        values = columns[name]
        if typ == "DOUBLE":  # a list mixing int and float must not become an integer list
            values = [None if v is None else float(v) for v in values]
        params.append(values)
    cols = ", ".join(quote_ident(c) for c in names)
    unnest = ", ".join(f"unnest(?::{typ}[]) AS c{j}" for j, typ in enumerate(types))
    store.con.execute(f"INSERT INTO {quote_ident(table)} ({cols}) SELECT * FROM (SELECT {unnest})", params)


def _insert_rows(store: Store, table: str, columns: list[str], types: list[str], rows: list[list[Any]]) -> None:
    """:func:`insert_columns` for rows given as lists (transposed here)."""
    if rows:
        insert_columns(store, table, {c: [row[j] for row in rows] for j, c in enumerate(columns)}, types)


def apply_factor_columns(store: Store, batch: Sequence[LoadableRun], report: IngestReport) -> None:
    """Add the ``runs`` columns the batch's factors need, and widen BIGINT ones to DOUBLE
    where a run has a float (a note in ``report``). Types were checked before
    (:func:`stabstat.ingest.batch.check_factors`)."""
    current = dict(store.factors())
    wanted: dict[str, str] = {}
    for run in batch:
        for key, value in run.factors.items():
            typ = factor_type(value)
            if typ is None:
                continue
            prev = wanted.get(key, current.get(key))
            if prev is None or (prev == "BIGINT" and typ == "DOUBLE"):
                wanted[key] = typ
    for key, typ in wanted.items():
        if key not in current:
            store.con.execute(f"ALTER TABLE runs ADD COLUMN {quote_ident(key)} {typ}")
        elif current[key] != typ:
            store.con.execute(f"ALTER TABLE runs ALTER COLUMN {quote_ident(key)} SET DATA TYPE {typ}")
            report.notes.append(f"factor {key!r} widened from {current[key]} to {typ}")


def insert_runs(store: Store, batch: Sequence[LoadableRun], existing: Mapping[str, str], ingest_id: str) -> None:
    """Write ``batch``: delete the rows of runs already stored (``existing``: run_id ->
    fingerprint), insert the ``runs``, ``majority`` and table rows, and log each run in
    ``ingests`` (action ``ingested`` or ``replaced``)."""
    con = store.con
    contract = schemas.load()
    stale = [r.run_id for r in batch if r.run_id in existing]
    if stale:
        for name in [*contract.table_names, "majority", "runs"]:
            con.execute(f"DELETE FROM {quote_ident(name)} WHERE list_contains(?::VARCHAR[], run_id)", [stale])

    staged = _stage_json(store, batch)  # before the runs rows: it completes their status
    _insert_runs_rows(store, batch)
    majority_rows = [row for r in batch for row in r.majority]
    _insert_rows(store, "majority", ["run_id", "metric", "value"], ["VARCHAR", "VARCHAR", "DOUBLE"], majority_rows)

    for t in contract.tables:
        cols = ", ".join(quote_ident(c) for c in t.column_names)
        data = [r.tables[t.name] for r in batch if t.name in r.tables]
        files = [f for d in data for f in d.files]
        if files:
            # Files of one layout are read as they are; mixed layouts (extra columns, other
            # integer widths) are matched by column name.
            shapes = [x for d in data for x in d.file_schemas]
            union = ", union_by_name = true" if any(not x.equals(shapes[0]) for x in shapes) else ""
            con.execute(
                f"INSERT INTO {quote_ident(t.name)} ({cols}) SELECT {cols} FROM read_parquet(?{union})",
                [files],
            )
        # Rows built by Python (e.g. HF logs; small): one list per column (see insert_columns).
        with_columns = [d.columns for d in data if d.columns]
        if with_columns:
            merged = {c: [v for cd in with_columns for v in cd[c]] for c in t.column_names}
            insert_columns(store, t.name, merged, [DUCK_TYPES[c.type] for c in t.columns])
        for reader, run_ids in staged:
            if t.name in reader.selects:
                sql = f"INSERT INTO {quote_ident(t.name)} ({cols}) {reader.selects[t.name]}"
                with insertion_order(con, keep=True):
                    con.execute(sql, statement_params(sql, {"run_ids": run_ids}))
    for reader, _ in staged:
        for temp in reader.temp_tables:
            con.execute(f"DROP TABLE IF EXISTS {quote_ident(temp)}")
    record_ingests(
        store,
        [(ingest_id, r, r.source, "replaced" if r.run_id in existing else "ingested", None) for r in batch],
    )


@contextlib.contextmanager
def insertion_order(con: Any, keep: bool) -> Iterator[None]:
    """``preserve_insertion_order`` set to ``keep`` inside, as it was afterwards.

    The setting is not transactional, and a statement that failed inside a transaction leaves
    it aborted: no SET runs until its ROLLBACK. Then the failure propagates (the restore's own
    error never hides it) and whoever rolls back sets what it needs again
    (:meth:`stabstat.ingest.batch._Ingest._try_load`).
    """
    before = bool(con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0])
    con.execute(f"SET preserve_insertion_order = {str(keep).lower()}")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute(f"SET preserve_insertion_order = {str(before).lower()}")
        raise
    con.execute(f"SET preserve_insertion_order = {str(before).lower()}")


#: DuckDB's default ``maximum_object_size`` of ``read_json`` (bytes).
_DUCKDB_JSON_OBJECT = 2**24


def json_files(run: LoadableRun) -> JsonFiles | None:
    """The run's :class:`JsonFiles` (every JSON table of a run holds the same), or None."""
    return next((d.json for d in run.tables.values() if d.json is not None), None)


def statement_params(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that ``sql`` names as ``$name`` (DuckDB refuses others)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}  # $r is not $runs


def _stage_json(store: Store, batch: Sequence[LoadableRun]) -> list[tuple[JsonReader, list[str]]]:
    """Stage the JSON files of the batch's runs (one set of statements per reader, every file
    of the batch at once) and complete each run from its facts row; the readers staged, each
    with the run_ids of its runs by run number (``$run_ids``, 1-based in SQL)."""
    groups: dict[str, tuple[JsonReader, list[LoadableRun]]] = {}
    for run in batch:
        jf = json_files(run)
        if jf is not None:
            groups.setdefault(jf.reader.name, (jf.reader, []))[1].append(run)
    for reader, runs in groups.values():
        files: list[str] = []
        run_ids: list[str] = []
        numbers: list[int] = []
        pos: list[int] = []
        largest = 0
        for k, run in enumerate(runs, start=1):
            jf = json_files(run)
            assert jf is not None
            files += jf.files
            run_ids += [run.run_id] * len(jf.files)
            numbers += [k] * len(jf.files)
            pos += range(len(jf.files))
            largest = max(largest, jf.max_bytes)
        params: dict[str, Any] = {"files": files, "runs": run_ids, "r": numbers, "pos": pos,
                                  "max_bytes": max(_DUCKDB_JSON_OBJECT, 2 * largest)}
        if callable(reader.stage):
            reader.stage(store.con, params)
        else:
            for sql in reader.stage:
                store.con.execute(sql, statement_params(sql, params))
        cur = store.con.execute(reader.facts)
        names = [d[0] for d in cur.description]
        facts = {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
        for run in runs:
            reader.finish(run, facts.get(run.run_id, {}))
    return [(reader, [run.run_id for run in runs]) for reader, runs in groups.values()]


def _insert_runs_rows(store: Store, batch: Sequence[LoadableRun]) -> None:
    """The ``runs`` rows of a batch: the fixed columns, then the factors some run sets."""
    stamp = now()
    fixed_names = [n for n, _ in RUNS_FIXED_COLUMNS]
    factor_types = store.factors()
    factor_names = [k for k in factor_types if any(r.factors.get(k) is not None for r in batch)]
    rows = []
    for r in batch:
        rj = r.run_json
        rows.append([
            r.run_id, r.status, rj.get("status"), _timestamp(rj.get("started_at")),
            _timestamp(rj.get("finished_at")), _timestamp(rj.get("heartbeat_at")), rj.get("error"),
            rj.get("schema_version"), _json_text(rj.get("task")), _json_text(rj.get("config")),
            _json_text(rj.get("environment")), r.source, r.source_format, r.fingerprint, stamp,
            *[r.factors.get(k) for k in factor_names],
        ])
    types = [t.split()[0] for _, t in RUNS_FIXED_COLUMNS] + [factor_types[k] for k in factor_names]
    _insert_rows(store, "runs", [*fixed_names, *factor_names], types, rows)


def record_ingests(
    store: Store, items: Sequence[tuple[str, LoadableRun | None, str, str, str | None]]
) -> None:
    """Append to ``ingests`` one row per ``(ingest_id, run or None, source, action, message)``
    (action ``ingested``, ``replaced`` or ``rejected``), with the run's row counts."""
    rows = []
    stamp = now()
    for ingest_id, run, source, action, message in items:
        counts = {name: d.rows for name, d in run.tables.items()} if run is not None else {}
        rows.append([
            ingest_id, stamp, run.run_id if run else None, source,
            run.source_format if run else None, action, run.fingerprint if run else None,
            counts.get("steps"), counts.get("layer_grads"), counts.get("evals"), counts.get("predictions"),
            message,
        ])
    _insert_rows(store, "ingests", INGESTS_COLUMNS, INGESTS_TYPES, rows)
