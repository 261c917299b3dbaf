"""The DuckDB store: ingest run directories (and Hugging Face Trainer logs), query them.

Tables (``stabstat schema`` lists them with their columns):

``runs``
    One row per run: ``run_id``, ``status`` (the effective status at ingest time: a ``running``
    run whose heartbeat is stale reads ``interrupted``), ``status_written`` (as in run.json),
    timestamps (UTC), ``error``, ``task_info`` / ``config`` / ``environment`` (JSON),
    ``source`` (the run directory), ``source_format`` (``stabstat`` or ``hf``),
    ``fingerprint``, ``ingested_at``, and **one column per scalar config key** (the factors:
    ``task``, ``model``, ``seed``, ``lr``, ``bias_correction``, ...). A factor column is added
    the first time a run has that key (NULL for earlier runs).
``steps``, ``layer_grads``, ``evals``, ``predictions``
    The run-log tables of the contract (``schemas/run_log_v1.json``), all runs together.
    Non-nullable and finite-only columns are enforced by NOT NULL / CHECK constraints.
``majority``
    ``(run_id, metric, value)``: the majority-class score per metric (``task.majority``).
``ingests``
    One row per run ingested, replaced or rejected: when, from where, row counts, message.
``run_training`` (view)
    Per run: ``n_logged`` losses, ``last_step``, ``train_loss_final`` (mean of the last
    :data:`TRAIN_LOSS_WINDOW` logged training losses), ``diverged``.
``run_summary`` (view)
    One row per (run_id, split, metric) of ``evals``: ``final_step``, ``final_value`` (value at
    the last evaluation), ``best_value`` (max or min over evaluations, by ``higher_is_better``),
    ``higher_is_better``, ``majority``, ``train_loss_final``, ``diverged``, ``status``.

Ingest is idempotent: each run has a fingerprint (see :func:`stabstat_fingerprint`); a run
whose fingerprint is stored is skipped, a run whose fingerprint changed is replaced as a whole.
Runs are loaded in transactions of up to ``batch_runs`` runs (and about ``batch_rows`` rows):
a kill rolls back the uncommitted batch, so the database never holds part of a run. A batch
that fails is rolled back and its runs are loaded one per transaction, so one bad run never
keeps good runs out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schemas
from stabstat import rundir
from stabstat.errors import (
    DatabaseInUseError,
    InputFormatError,
    QueryError,
    SchemaError,
    SelectionError,
    StabstatError,
)

if TYPE_CHECKING:
    import duckdb
    import polars as pl
    import pyarrow as pa

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "LOWER_IS_BETTER_PATTERN",
    "TRAIN_LOSS_WINDOW",
    "IngestReport",
    "Rejection",
    "Store",
    "default_higher_is_better",
    "quote_ident",
]

DB_ENV = "STABSTAT_DB"
DEFAULT_DB = "stabstat.duckdb"
#: Version of the database layout written by this module (stored in ``stabstat_meta``).
STORE_VERSION = 1
#: ``train_loss_final`` is the mean of this many last logged training losses.
TRAIN_LOSS_WINDOW = 10
#: Metric names matching this (case-insensitive) are lower-is-better by default.
LOWER_IS_BETTER_PATTERN = r"(^|[_\-. ])(loss|nll|error|err|perplexity|ppl|mse|mae|rmse|wer|cer)($|[_\-. ])|loss$"
#: Fixed columns of ``runs`` (factor names may not use them).
RUNS_FIXED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("status", "VARCHAR"),
    ("status_written", "VARCHAR"),
    ("started_at", "TIMESTAMP"),
    ("finished_at", "TIMESTAMP"),
    ("heartbeat_at", "TIMESTAMP"),
    ("error", "VARCHAR"),
    ("schema_version", "INTEGER"),
    ("task_info", "JSON"),
    ("config", "JSON"),
    ("environment", "JSON"),
    ("source", "VARCHAR"),
    ("source_format", "VARCHAR"),
    ("fingerprint", "VARCHAR"),
    ("ingested_at", "TIMESTAMP"),
)
RESERVED = frozenset(name for name, _ in RUNS_FIXED_COLUMNS)
_FACTOR_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR")
_DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "float64": "DOUBLE", "bool": "BOOLEAN"}
_QUERY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}
_INGESTS_COLUMNS = [
    "ingest_id", "ingested_at", "run_id", "source", "source_format", "action", "fingerprint",
    "n_steps", "n_layer_grads", "n_evals", "n_predictions", "message",
]
_INGESTS_TYPES = ["VARCHAR", "TIMESTAMP", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR",
                  "BIGINT", "BIGINT", "BIGINT", "BIGINT", "VARCHAR"]


def quote_ident(name: str) -> str:
    """Quote ``name`` as a DuckDB identifier (``"..."``, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def default_db() -> str:
    """``$STABSTAT_DB`` or ``./stabstat.duckdb``."""
    return os.environ.get(DB_ENV, DEFAULT_DB)


def default_higher_is_better(metric: str) -> bool:
    """The default direction of a metric: False for loss/error-like names
    (:data:`LOWER_IS_BETTER_PATTERN`), True otherwise. ``task.higher_is_better`` in run.json and
    the ``higher_is_better`` argument of :meth:`Store.summary` override it."""
    return re.search(LOWER_IS_BETTER_PATTERN, metric.lower()) is None


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
    """What one :meth:`Store.ingest` call did. Run ids per outcome; ``rejected`` with reasons."""

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


class _Reject(Exception):
    """Internal: this run cannot be ingested (message is the one-line reason)."""


# ---------------------------------------------------------------------------------------------
# One run, ready to load
# ---------------------------------------------------------------------------------------------


@dataclass
class _RunInput:
    run_id: str
    source: str
    source_format: str  # "stabstat" | "hf"
    run_json: dict[str, Any]
    status: str  # effective
    fingerprint: str
    factors: dict[str, Any]
    files: dict[str, list[str]] = field(default_factory=dict)  # table -> Parquet files
    file_schemas: dict[str, list[pa.Schema]] = field(default_factory=dict)  # distinct per table
    values: dict[str, list[list[Any]]] = field(default_factory=dict)  # table -> rows (HF runs)
    rows: dict[str, int] = field(default_factory=dict)
    run_dir: Path | None = None
    majority: list[list[Any]] = field(default_factory=list)  # [run_id, metric, value] rows
    unchanged: bool = False  # fingerprint already stored: nothing else was checked

    def check_majority(self) -> None:
        """Fill :attr:`majority` from ``task.majority`` (metric -> finite number) or reject."""
        task = self.run_json.get("task") or {}
        maj = task.get("majority") if isinstance(task, dict) else None
        if maj is None:
            return
        where = f"{self.run_dir / 'run.json'}" if self.source_format == "stabstat" and self.run_dir else self.source
        if not isinstance(maj, dict):
            raise _Reject(f"{where}: task.majority: must be an object metric -> score, got {json.dumps(maj)[:60]}")
        for metric, value in maj.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _Reject(f"{where}: task.majority.{metric}: must be a finite number, got {json.dumps(value)[:60]}")
            self.majority.append([self.run_id, str(metric), float(value)])


def _factor_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT" if -(2**63) <= value < 2**63 else "DOUBLE"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, str):
        return "VARCHAR"
    return None


def _scalar_factors(config: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a config (the factors); nested values stay in the JSON only."""
    return {str(k): v for k, v in config.items() if v is None or isinstance(v, (bool, int, float, str))}


def _json_text(obj: Any) -> str | None:
    """JSON text for a JSON column; NaN/inf become null (DuckDB's JSON rejects them)."""
    if obj is None:
        return None

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), default=str, allow_nan=False)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return rundir.parse_timestamp(value).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def stabstat_fingerprint(run_dir: Path, run_json_bytes: bytes, status: str, files: Iterable[Path]) -> str:
    """Fingerprint of a stabstat run directory: its resolved path, the effective status, the
    bytes of run.json and the (name, size, mtime) of every table file. Any rewrite of a file
    (a still-running run that flushed again, a re-run) changes it; reading them does not."""
    h = hashlib.sha256()
    h.update(json.dumps([STORE_VERSION, str(run_dir.resolve()), status]).encode())
    h.update(hashlib.sha256(run_json_bytes).digest())
    for f in files:
        st = os.stat(f)
        # parent/name: "steps.parquet" under the run, or "steps.parts/part-000001.parquet"
        h.update(f"{f.parent.name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fetch_frame(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> pl.DataFrame:
    """Run ``sql`` and fetch its whole result as a polars DataFrame (via Arrow, no Python rows).

    The one SQL-to-frame path of the analysis side (store, analysis, chart data, report).
    Values go in ``params``, never into ``sql``. Fetches everything, so no result stays open.
    """
    import polars as pl

    rel = con.sql(sql, params=params)
    if rel is None:  # a statement without a result
        return pl.DataFrame()
    out = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(out, pl.DataFrame)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _prepare_stabstat(
    run_dir: Path, *, full_validation: bool, known: Mapping[str, str] | None = None
) -> _RunInput:
    """Read and check one stabstat run directory without reading its rows.

    Checks run.json against the contract, every table file's Parquet footer (a truncated or
    corrupt file fails here), column names and types, and from the row-group statistics the
    run_id column and the order column. Values (nulls, non-finite numbers) are checked by the
    database's constraints while loading. ``full_validation`` also runs the row-level
    validator (:func:`stabstat.validate.validate_run`: duplicate keys, rows out of order).

    A run whose fingerprint equals ``known[run_id]`` (already in the database) is returned
    with ``unchanged=True`` before its files are opened: re-ingesting a large tree is cheap.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        run_json_bytes = (run_dir / "run.json").read_bytes()
    except FileNotFoundError:
        raise _Reject(
            f"{run_dir / 'run.json'}: missing; a run directory needs a run.json "
            "(a run whose writer never started, or not a stabstat run: try --format hf)"
        ) from None
    try:
        rj = json.loads(run_json_bytes)
        if not isinstance(rj, dict) or rundir.check_run_json(rj):
            raise ValueError("not a valid run.json")
    except ValueError:
        # let the reader produce its message (file, key, fix)
        try:
            rj = rundir.read_run_json(run_dir)
        except StabstatError as exc:
            raise _Reject(f"{exc}") from None
    run_id = rj["run_id"]
    if run_id != run_dir.name:
        raise _Reject(
            f"{run_dir / 'run.json'}: run_id: {run_id!r} differs from the directory name "
            f"{run_dir.name!r}; rename one of them"
        )
    try:
        status = rundir.effective_status(rj)
    except SchemaError as exc:
        raise _Reject(str(exc)) from None
    final = rj["status"] in schemas.load().final_statuses

    run = _RunInput(
        run_id=run_id, source=str(run_dir), source_format="stabstat", run_json=rj, status=status,
        fingerprint="", factors=_scalar_factors(rj.get("config") or {}), run_dir=run_dir,
    )
    listing = [(t, rundir.table_files(run_dir, t.name)) for t in schemas.load().tables]
    all_files = [f for _, files in listing for f in files]
    try:
        run.fingerprint = stabstat_fingerprint(run_dir, run_json_bytes, status, all_files)
    except OSError as exc:  # a file vanished while we looked (a running run compacting)
        raise _Reject(f"{run_dir}: changed while being read ({exc}); ingest again") from None
    if known is not None and known.get(run_id) == run.fingerprint:
        run.unchanged = True
        return run
    for t, files in listing:
        if not files:
            if t.required and final:
                raise _Reject(
                    f"{run_dir / t.filename}: missing required table file (the run says {rj['status']}); "
                    "re-write the run or delete its directory"
                )
            continue
        n_rows = 0
        prev_max: Any = None
        schemas_seen: list[pa.Schema] = []
        for f in files:
            try:
                md = pq.read_metadata(f)
                arrow_schema = md.schema.to_arrow_schema()
            except (OSError, pa.ArrowException) as exc:
                raise _Reject(
                    f"{f}: not a readable Parquet file (corrupt or truncated: {_first_line(exc)}); "
                    "re-write it or delete the run directory"
                ) from None
            names = arrow_schema.names
            for col in t.columns:
                if col.name not in names:
                    raise _Reject(f"{f}: {col.name}: missing column (expected type {col.type}); see schemas/README.md")
                typ = arrow_schema.field(col.name).type
                if not rundir.compatible_type(col.type, typ, col.nullable):
                    raise _Reject(f"{f}: {col.name}: type {typ}, expected {col.type}; see schemas/README.md")
            if not any(arrow_schema.equals(x) for x in schemas_seen):
                schemas_seen.append(arrow_schema)
            n_rows += md.num_rows
            # Row-group statistics: cheap checks that need no row to be read.
            idx = {md.schema.column(i).name: i for i in range(md.num_columns)}
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                if rg.num_rows == 0:
                    continue
                st = rg.column(idx["run_id"]).statistics
                if st is not None and st.has_min_max and (st.min != run_id or st.max != run_id):
                    other = st.min if st.min != run_id else st.max
                    raise _Reject(
                        f"{f}: run_id: rows with run_id {other!r}, expected {run_id!r} "
                        "(the run's id in run.json and its directory name)"
                    )
                st = rg.column(idx[t.order]).statistics
                if st is not None and st.has_min_max:
                    if prev_max is not None and st.min < prev_max:
                        raise _Reject(
                            f"{f}: {t.order}: goes backwards ({prev_max} -> {st.min}); "
                            "rows must be written in training order"
                        )
                    prev_max = st.max
        run.files[t.name] = [str(f) for f in files]
        run.file_schemas[t.name] = schemas_seen
        run.rows[t.name] = n_rows

    if full_validation:
        from stabstat.validate import validate_run

        problems = validate_run(run_dir)
        if problems:
            more = f" (and {len(problems) - 1} more: run `stabstat validate {run_dir}`)" if len(problems) > 1 else ""
            raise _Reject(f"{problems[0]}{more}")
    return run


def _prepare_hf(run_dir: Path, params: Mapping[str, Any] | None) -> _RunInput:
    from stabstat.hf import read_hf_run

    try:
        hf = read_hf_run(run_dir, params=params)
    except StabstatError as exc:
        raise _Reject(str(exc)) from None
    rj = hf.run_json
    return _RunInput(
        run_id=hf.run_id, source=str(run_dir), source_format="hf", run_json=rj, status=rj["status"],
        fingerprint=hf.fingerprint, factors=_scalar_factors(rj["config"]), values=hf.rows,
        rows={k: len(v) for k, v in hf.rows.items()}, run_dir=run_dir,
    )


# ---------------------------------------------------------------------------------------------
# Finding runs
# ---------------------------------------------------------------------------------------------


def _has_stabstat_tables(d: Path) -> bool:
    return any((d / t.filename).exists() or (d / t.parts_dir).is_dir() for t in schemas.load().tables)


def discover(paths: Iterable[str | os.PathLike[str]], fmt: str = "auto") -> list[tuple[str, Path]]:
    """Runs under ``paths`` as ``(format, run_dir)`` pairs, sorted, without duplicates.

    ``fmt``: ``stabstat`` (folders with run.json or table files), ``hf`` (folders with
    ``trainer_state.json`` here or in ``checkpoint-*/``), or ``auto``: per folder, stabstat
    when it holds stabstat table files, else hf when it holds a trainer state, else stabstat
    when it holds a run.json. A run folder is not searched further.

    Raises
    ------
    InputFormatError
        If a path does not exist or ``fmt`` is unknown.
    """
    from stabstat.hf import STATE_FILE, is_hf_run_dir, run_dir_of

    if fmt not in ("auto", "stabstat", "hf"):
        raise InputFormatError(f"--format {fmt!r}: expected auto, stabstat or hf")

    def classify(d: Path) -> str | None:
        tables = fmt != "hf" and _has_stabstat_tables(d)
        if tables:
            return "stabstat"
        if fmt != "stabstat" and is_hf_run_dir(d):
            return "hf"
        if fmt != "hf" and (d / "run.json").is_file():
            return "stabstat"
        return None

    found: dict[Path, tuple[str, Path]] = {}

    def add(kind: str, d: Path) -> None:
        found.setdefault(d.resolve(), (kind, d))

    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InputFormatError(f"{path}: no such file or directory")
        if path.is_file():
            if path.name == "run.json" and fmt != "hf":
                add("stabstat", path.parent)
            elif path.name == STATE_FILE and fmt != "stabstat":
                add("hf", run_dir_of(path))
            else:
                raise InputFormatError(
                    f"{path}: expected a run directory, a folder of runs, a run.json or a {STATE_FILE}"
                )
            continue
        if re.match(r"^checkpoint-\d+$", path.name) and fmt != "stabstat" and (path / STATE_FILE).is_file():
            add("hf", path.parent)
            continue
        for root, dirs, _files in os.walk(path):
            rp = Path(root)
            kind = classify(rp)
            if kind is not None:
                add(kind, rp)
                dirs[:] = []  # a run directory holds no further runs
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".parts"))
    return sorted(found.values(), key=lambda kv: str(kv[1]))


# ---------------------------------------------------------------------------------------------
# SQL text
# ---------------------------------------------------------------------------------------------


def _table_ddl(t: schemas.Table) -> str:
    cols = []
    for c in t.columns:
        spec = f"{quote_ident(c.name)} {_DUCK_TYPES[c.type]}"
        if not c.nullable:
            spec += " NOT NULL"
        checks = []
        if c.type == "float64" and c.finite:
            checks.append(f"isfinite({quote_ident(c.name)})")
        if c.name == "step":
            checks.append(f"{quote_ident(c.name)} >= 0")
        if checks:
            spec += " CHECK (" + " AND ".join(checks) + ")"
        cols.append(spec)
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(t.name)} (\n  " + ",\n  ".join(cols) + "\n)"


def _run_training_sql() -> str:
    return f"""
CREATE OR REPLACE VIEW run_training AS
WITH logged AS (
    SELECT run_id, step, loss,
           row_number() OVER (PARTITION BY run_id ORDER BY step DESC) AS back
    FROM steps WHERE loss IS NOT NULL
), agg AS (
    SELECT run_id,
           count(*) AS n_logged,
           max(step) AS last_step,
           avg(loss) FILTER (WHERE back <= {TRAIN_LOSS_WINDOW}) AS train_loss_final,
           bool_or(NOT isfinite(loss)) AS any_nonfinite
    FROM logged GROUP BY run_id
)
SELECT r.run_id,
       coalesce(a.n_logged, 0) AS n_logged,
       a.last_step,
       a.train_loss_final,
       coalesce(a.any_nonfinite, false) OR coalesce(r.status = 'diverged', false) AS diverged
FROM runs r LEFT JOIN agg a USING (run_id)
"""


def _summary_select(override: str = "NULL::BOOLEAN") -> str:
    """The run_summary SELECT; ``override`` is a boolean SQL expression over ``metric``
    (NULL = no override) placed before run.json's and the name-based direction."""
    pattern = LOWER_IS_BETTER_PATTERN.replace("'", "''")
    return f"""
WITH ev AS (
    SELECT run_id, split, metric,
           max(step) AS final_step,
           arg_max_null(value, step) AS final_value,
           max(value) AS max_value,
           min(value) AS min_value
    FROM evals GROUP BY run_id, split, metric
), directed AS (
    SELECT ev.*, r.status,
           coalesce(
               {override},
               TRY_CAST(json_extract_string(r.task_info,
                   '$.higher_is_better."' || replace(ev.metric, '"', '\\"') || '"') AS BOOLEAN),
               NOT regexp_matches(lower(ev.metric), '{pattern}')
           ) AS higher_is_better
    FROM ev JOIN runs r USING (run_id)
)
SELECT d.run_id, d.split, d.metric, d.final_step, d.final_value,
       CASE WHEN d.higher_is_better THEN d.max_value ELSE d.min_value END AS best_value,
       d.higher_is_better,
       m.value AS majority,
       t.train_loss_final,
       t.diverged,
       d.status
FROM directed d
LEFT JOIN majority m ON m.run_id = d.run_id AND m.metric = d.metric
LEFT JOIN run_training t ON t.run_id = d.run_id
"""


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
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
        # DuckDB draws its own progress bar on long statements; ours (click) is the only one.
        con.execute("SET enable_progress_bar = false")
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
        raise InputFormatError(f"{path}: cannot open as a DuckDB database: {_first_line(exc)}") from None
    except duckdb.ConnectionException as exc:
        raise DatabaseInUseError(
            f"database {path} is already open in this process with other settings "
            f"(read-only vs read-write); close the other Store first ({_first_line(exc)})"
        ) from None


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

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, read_only: bool = True) -> Store:
        """Open the database at ``path`` (default ``$STABSTAT_DB`` or ``./stabstat.duckdb``).

        ``read_only=False`` creates the file and the tables if needed (for ingest).

        Raises
        ------
        DatabaseInUseError
            Another process holds the file (DuckDB allows one writer, or many readers).
        InputFormatError
            The file does not exist (read-only) or is not a DuckDB database.
        """
        p = str(path) if path is not None else default_db()
        store = cls(_connect(p, read_only), p, read_only=read_only)
        if not read_only:
            store._create_schema()
        elif not store._has_table("runs"):
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

    def _has_table(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
            [name],
        ).fetchall()
        return bool(rows[0][0])

    def _create_schema(self) -> None:
        con = self.con
        con.execute("BEGIN")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS stabstat_meta (key VARCHAR NOT NULL, value VARCHAR)")
            found = con.execute("SELECT value FROM stabstat_meta WHERE key = 'store_version'").fetchall()
            row = found[0] if found else None
            if row is None:
                con.execute("INSERT INTO stabstat_meta VALUES ('store_version', ?)", [str(STORE_VERSION)])
            elif int(row[0]) > STORE_VERSION:
                raise SchemaError(
                    f"{self.path}: written by a newer stabstat (store version {row[0]} > {STORE_VERSION}); upgrade stabstat"
                )
            fixed = ",\n  ".join(f"{quote_ident(n)} {t}" for n, t in RUNS_FIXED_COLUMNS)
            con.execute(f"CREATE TABLE IF NOT EXISTS runs (\n  {fixed}\n)")
            for t in schemas.load().tables:
                con.execute(_table_ddl(t))
            con.execute(
                "CREATE TABLE IF NOT EXISTS majority (run_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE)"
            )
            con.execute(
                """CREATE TABLE IF NOT EXISTS ingests (
                  ingest_id VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL, run_id VARCHAR, source VARCHAR,
                  source_format VARCHAR, action VARCHAR NOT NULL, fingerprint VARCHAR,
                  n_steps BIGINT, n_layer_grads BIGINT, n_evals BIGINT, n_predictions BIGINT,
                  message VARCHAR)"""
            )
            con.execute(_run_training_sql())
            con.execute("CREATE OR REPLACE VIEW run_summary AS " + _summary_select())
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _require_writable(self) -> None:
        if self.read_only:
            raise StabstatError(f"{self.path} is open read-only; use Store.open(path, read_only=False) to ingest")

    # -- factors ---------------------------------------------------------------------------

    def _runs_columns(self) -> list[tuple[str, str]]:
        return [
            (str(r[0]), str(r[1]))
            for r in self.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = 'runs' ORDER BY ordinal_position"
            ).fetchall()
        ]

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
        from stabstat.hf import parse_value

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
            raise QueryError(f"query: {_first_line(exc)}") from None
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
            raise QueryError(f"query: {_first_line(exc)}") from None

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
            f"SELECT s.*{factor_cols} FROM ({_summary_select(override)}) s JOIN runs r USING (run_id) "
            f"WHERE {where} ORDER BY s.run_id, s.split, s.metric"
        )
        return fetch_frame(self.con, sql, [hib_true, hib_false, hib_all, *params])

    # -- ingest ----------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        fmt: str = "auto",
        params: Mapping[str, Any] | None = None,
        progress: bool = False,
        validate: str = "fast",
        batch_runs: int = 200,
        batch_rows: int = 5_000_000,
        on_rejected: Callable[[Rejection], None] | None = None,
    ) -> IngestReport:
        """Load every run under ``paths`` (run directories or Hugging Face Trainer logs).

        Parameters
        ----------
        paths
            Run directories, folders searched recursively, run.json or trainer_state.json files.
        fmt
            ``auto`` (detect per folder), ``stabstat`` or ``hf``; see :func:`discover`.
        params
            Extra factors for Hugging Face runs (``--param key=value``), over folder names and
            side files.
        progress
            Show a progress bar on stderr.
        validate
            ``fast``: contract checks that need no row (run.json, Parquet footers, column types,
            run_id and order from row-group statistics) plus NOT NULL / CHECK constraints while
            loading. ``full``: also the row-level validator (duplicate keys, rows out of order);
            about 2x slower.
        batch_runs, batch_rows
            Runs per transaction, at most; a kill loses the uncommitted batch, never part of a run.
        on_rejected
            Called with each :class:`Rejection` as it happens (the CLI prints them).

        Raises
        ------
        InputFormatError
            A path does not exist, or no run was found under the paths.
        """
        self._require_writable()
        if validate not in ("fast", "full"):
            raise InputFormatError(f"--validate {validate!r}: expected fast or full")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        found = discover(paths, fmt)
        if not found:
            where = ", ".join(map(str, paths))
            raise InputFormatError(
                f"no runs found under {where} (looked for run.json and trainer_state.json; --format {fmt})"
            )
        report = IngestReport(db=self.path)
        ingest_id = f"{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        existing = dict(self.con.execute("SELECT run_id, fingerprint FROM runs").fetchall())
        self._virtual = dict(self.factors())
        seen: dict[str, str] = {}
        batch: list[_RunInput] = []
        batch_n = 0
        n_batches = 0

        def reject(source: str, message: str, run: _RunInput | None = None) -> None:
            rej = Rejection(source, message)
            report.rejected.append(rej)
            self._record(ingest_id, run, source, "rejected", message)
            if on_rejected is not None:
                on_rejected(rej)

        bar_ctx: Any = None
        if progress:
            import click

            bar_ctx = click.progressbar(length=len(found), label="ingesting", file=sys.stderr)
        bar = bar_ctx.__enter__() if bar_ctx is not None else None
        try:
            def prepare(item: tuple[str, Path]) -> _RunInput | _Reject:
                kind, d = item
                try:
                    if kind == "stabstat":
                        return _prepare_stabstat(d, full_validation=validate == "full", known=existing)
                    return _prepare_hf(d, params)
                except _Reject as exc:
                    return exc
                except (OSError, StabstatError) as exc:  # unreadable file, permissions, ...
                    return _Reject(f"{d}: cannot be read: {_first_line(exc)}")

            # Reading run.json files and Parquet footers (Python) overlaps with loading the
            # previous batch (DuckDB, which releases the GIL): one helper thread works ahead.
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stabstat-prepare")
            # Rows of a table have no meaningful order (every query orders by step), so let
            # DuckDB insert in parallel without keeping the files' row order: ~20% less CPU.
            self.con.execute("SET preserve_insertion_order = false")
            try:
                for (_kind, d), run_or_rej in zip(found, pool.map(prepare, found), strict=True):
                    if isinstance(run_or_rej, _Reject):
                        reject(str(d), str(run_or_rej))
                        if bar is not None:
                            bar.update(1)
                        continue
                    run = run_or_rej
                    if run.run_id in seen:
                        reject(str(d), f"run_id {run.run_id!r} also found at {seen[run.run_id]}; "
                               "run ids must be unique: remove or rename one copy")
                        if bar is not None:
                            bar.update(1)
                        continue
                    seen[run.run_id] = str(d)
                    if run.unchanged or existing.get(run.run_id) == run.fingerprint:
                        report.unchanged.append(run.run_id)
                        if bar is not None:
                            bar.update(1)
                        continue
                    try:
                        run.check_majority()
                        self._check_factors(run, self._virtual)
                    except _Reject as exc:
                        reject(str(d), str(exc), run)
                        if bar is not None:
                            bar.update(1)
                        continue
                    batch.append(run)
                    batch_n += sum(run.rows.values())
                    # A small first batch gets DuckDB busy while the helper thread reads ahead.
                    limit = batch_runs if n_batches else max(1, min(batch_runs, 25))
                    if len(batch) >= limit or batch_n >= batch_rows:
                        self._load_batch(batch, existing, report, ingest_id, reject)
                        n_batches += 1
                        if bar is not None:
                            bar.update(len(batch))
                        batch, batch_n = [], 0
                if batch:
                    self._load_batch(batch, existing, report, ingest_id, reject)
                    if bar is not None:
                        bar.update(len(batch))
            finally:
                # on an error (or Ctrl-C) do not wait for the remaining preparations
                pool.shutdown(wait=True, cancel_futures=True)
                with contextlib.suppress(Exception):  # never mask the error that got us here
                    self.con.execute("RESET preserve_insertion_order")
        finally:
            if bar_ctx is not None:
                bar_ctx.__exit__(None, None, None)
        return report

    def _check_factors(self, run: _RunInput, columns: dict[str, str]) -> None:
        """Check ``run``'s factors against ``columns`` (name -> type) and record additions and
        widenings in it. int values in a DOUBLE column are fine; a float in a BIGINT column
        widens the column to DOUBLE; anything else that differs is a conflict."""
        lower = {n.lower(): n for n in columns}
        changes: dict[str, str] = {}
        for key, value in run.factors.items():
            typ = _factor_type(value)
            if key.lower() in RESERVED:
                raise _Reject(
                    f"{run.source}: config key {key!r} is a built-in column of the runs table "
                    f"({', '.join(sorted(RESERVED))}); rename it in the config"
                )
            if typ is None:
                continue  # null: no column needed (an existing column gets NULL)
            name = lower.get(key.lower())
            if name is None:
                changes[key] = typ
                continue
            if name != key:
                raise _Reject(
                    f"{run.source}: factor {key!r} differs only in case from the stored factor {name!r} "
                    "(column names are case-insensitive); use one spelling"
                )
            have = changes.get(name, columns[name])
            if have == typ or (have == "DOUBLE" and typ == "BIGINT"):
                continue
            if have == "BIGINT" and typ == "DOUBLE":
                changes[name] = "DOUBLE"
                continue
            raise _Reject(
                f"{run.source}: factor {key!r} is {value!r} ({typ}) but the database stores it as {have}; "
                f"fix the run's config, or ingest into a fresh --db"
            )
        columns.update(changes)

    def _apply_factor_columns(self, batch: list[_RunInput], report: IngestReport) -> None:
        current = dict(self.factors())
        wanted: dict[str, str] = {}
        for run in batch:
            for key, value in run.factors.items():
                typ = _factor_type(value)
                if typ is None:
                    continue
                prev = wanted.get(key, current.get(key))
                if prev is None or (prev == "BIGINT" and typ == "DOUBLE"):
                    wanted[key] = typ
        for key, typ in wanted.items():
            if key not in current:
                self.con.execute(f"ALTER TABLE runs ADD COLUMN {quote_ident(key)} {typ}")
            elif current[key] != typ:
                self.con.execute(f"ALTER TABLE runs ALTER COLUMN {quote_ident(key)} SET DATA TYPE {typ}")
                report.notes.append(f"factor {key!r} widened from {current[key]} to {typ}")

    def _record(
        self, ingest_id: str, run: _RunInput | None, source: str, action: str, message: str | None
    ) -> None:
        self._record_many([(ingest_id, run, source, action, message)])

    def _record_many(self, items: list[tuple[str, _RunInput | None, str, str, str | None]]) -> None:
        rows = []
        now = _now()
        for ingest_id, run, source, action, message in items:
            counts = run.rows if run is not None else {}
            rows.append([
                ingest_id, now, run.run_id if run else None, source,
                run.source_format if run else None, action, run.fingerprint if run else None,
                counts.get("steps"), counts.get("layer_grads"), counts.get("evals"), counts.get("predictions"),
                message,
            ])
        self._insert_rows("ingests", _INGESTS_COLUMNS, _INGESTS_TYPES, rows)

    def _insert_rows(self, table: str, columns: list[str], types: list[str], rows: list[list[Any]]) -> None:
        """Insert Python rows: one list parameter per column, unnested side by side by DuckDB
        (``types``: DuckDB type per column).

        Not executemany or multi-row VALUES (milliseconds per row or per parameter), and not
        an Arrow table (registering one, or ``pa.array`` on a list, imports pandas: ~0.7 s of
        start-up for every ``stabstat ingest``)."""
        if not rows:
            return
        params = []
        for j, typ in enumerate(types):
            values = [row[j] for row in rows]
            if typ == "DOUBLE":  # a list mixing int and float must not become an integer list
                values = [None if v is None else float(v) for v in values]
            params.append(values)
        cols = ", ".join(quote_ident(c) for c in columns)
        unnest = ", ".join(f"unnest(?::{typ}[]) AS c{j}" for j, typ in enumerate(types))
        self.con.execute(f"INSERT INTO {quote_ident(table)} ({cols}) SELECT * FROM (SELECT {unnest})", params)

    def _load_batch(
        self,
        batch: list[_RunInput],
        existing: dict[str, str],
        report: IngestReport,
        ingest_id: str,
        reject: Callable[[str, str, _RunInput | None], None],
    ) -> None:
        import duckdb

        con = self.con
        notes_before = len(report.notes)
        con.execute("BEGIN")
        try:
            self._apply_factor_columns(batch, report)
            self._insert(batch, existing, ingest_id)
            con.execute("COMMIT")
        except (duckdb.Error, _Reject, OSError) as exc:
            con.execute("ROLLBACK")
            del report.notes[notes_before:]
            self._virtual = dict(self.factors())
            if len(batch) > 1:
                # Find the bad run(s): load one run per transaction.
                for run in batch:
                    try:
                        self._check_factors(run, self._virtual)
                    except _Reject as rej:
                        reject(run.source, str(rej), run)
                        continue
                    self._load_batch([run], existing, report, ingest_id, reject)
                return
            run = batch[0]
            reject(run.source, self._explain_failure(run, exc), run)
            return
        for run in batch:
            (report.replaced if run.run_id in existing else report.added).append(run.run_id)
            existing[run.run_id] = run.fingerprint

    def _explain_failure(self, run: _RunInput, exc: BaseException) -> str:
        """One line saying why ``run`` failed to load: the validator's first problem when it
        finds one (it names file and column), else the database's message."""
        if run.source_format == "stabstat" and run.run_dir is not None:
            from stabstat.validate import validate_run

            try:
                problems = validate_run(run.run_dir)
            except Exception:  # noqa: BLE001 - fall back to the database's message
                problems = []
            if problems:
                more = f" (and {len(problems) - 1} more: run `stabstat validate {run.run_dir}`)" if len(problems) > 1 else ""
                return f"{problems[0]}{more}"
        return (
            f"{run.source}: could not be loaded: {_first_line(exc)}; "
            f"check it with `stabstat validate {run.source}` and re-write or delete it"
        )

    def _insert(self, batch: list[_RunInput], existing: dict[str, str], ingest_id: str) -> None:
        con = self.con
        contract = schemas.load()
        stale = [r.run_id for r in batch if r.run_id in existing]
        if stale:
            for name in [*contract.table_names, "majority", "runs"]:
                con.execute(f"DELETE FROM {quote_ident(name)} WHERE list_contains(?::VARCHAR[], run_id)", [stale])

        # runs rows: one Arrow table per batch (executemany costs milliseconds per row)
        now = _now()
        fixed_names = [n for n, _ in RUNS_FIXED_COLUMNS]
        factor_types = self.factors()
        factor_names = [k for k in factor_types if any(r.factors.get(k) is not None for r in batch)]
        rows = []
        for r in batch:
            rj = r.run_json
            rows.append([
                r.run_id, r.status, rj.get("status"), _timestamp(rj.get("started_at")),
                _timestamp(rj.get("finished_at")), _timestamp(rj.get("heartbeat_at")), rj.get("error"),
                rj.get("schema_version"), _json_text(rj.get("task")), _json_text(rj.get("config")),
                _json_text(rj.get("environment")), r.source, r.source_format, r.fingerprint, now,
                *[r.factors.get(k) for k in factor_names],
            ])
        types = [t.split()[0] for _, t in RUNS_FIXED_COLUMNS] + [factor_types[k] for k in factor_names]
        self._insert_rows("runs", [*fixed_names, *factor_names], types, rows)

        majority_rows = [row for r in batch for row in r.majority]
        self._insert_rows("majority", ["run_id", "metric", "value"], ["VARCHAR", "VARCHAR", "DOUBLE"], majority_rows)

        for t in contract.tables:
            cols = ", ".join(quote_ident(c) for c in t.column_names)
            files = [f for r in batch for f in r.files.get(t.name, [])]
            if files:
                # Files of one layout are read as they are; mixed layouts (extra columns, other
                # integer widths) are matched by column name.
                shapes = [x for r in batch for x in r.file_schemas.get(t.name, [])]
                union = ", union_by_name = true" if any(not x.equals(shapes[0]) for x in shapes) else ""
                con.execute(
                    f"INSERT INTO {quote_ident(t.name)} ({cols}) SELECT {cols} FROM read_parquet(?{union})",
                    [files],
                )
            # Rows read by Python (HF logs; small): multi-row VALUES, no Arrow (see _insert_rows).
            values = [row for r in batch for row in r.values.get(t.name, [])]
            self._insert_rows(t.name, t.column_names, [_DUCK_TYPES[c.type] for c in t.columns], values)
        self._record_many(
            [(ingest_id, r, r.source, "replaced" if r.run_id in existing else "ingested", None) for r in batch]
        )
