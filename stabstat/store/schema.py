"""The database layout: tables from the run-log contract, factor columns, the two views.

Tables and views are described in :mod:`stabstat.store`. The contract's nullability and
finiteness become NOT NULL / CHECK constraints, so a bad value aborts the loading
transaction. No PRIMARY KEY or index: DuckDB cannot ALTER a table that has one, and factor
columns are added and widened as runs arrive (uniqueness of ``run_id`` is kept by the ingest).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import schemas
from stabstat.errors import SchemaError
from stabstat.store.connection import quote_ident

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "LOWER_IS_BETTER_PATTERN",
    "RESERVED",
    "RUNS_FIXED_COLUMNS",
    "STORE_VERSION",
    "TRAIN_LOSS_WINDOW",
    "create_schema",
    "default_higher_is_better",
    "factor_type",
    "parse_value",
]

#: Version of the database layout written by this package (stored in ``stabstat_meta``).
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
#: DuckDB type of each contract column type.
DUCK_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "float64": "DOUBLE", "bool": "BOOLEAN"}
#: Columns of ``ingests`` and their DuckDB types (one row per run ingested, replaced or rejected).
INGESTS_COLUMNS = [
    "ingest_id", "ingested_at", "run_id", "source", "source_format", "action", "fingerprint",
    "n_steps", "n_layer_grads", "n_evals", "n_predictions", "message",
]
INGESTS_TYPES = ["VARCHAR", "TIMESTAMP", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR",
                 "BIGINT", "BIGINT", "BIGINT", "BIGINT", "VARCHAR"]
_INT_RE = re.compile(r"^[+-]?\d+$")


def default_higher_is_better(metric: str) -> bool:
    """The default direction of a metric: False for loss/error-like names
    (:data:`LOWER_IS_BETTER_PATTERN`), True otherwise. ``task.higher_is_better`` in run.json and
    the ``higher_is_better`` argument of :meth:`Store.summary` override it."""
    return re.search(LOWER_IS_BETTER_PATTERN, metric.lower()) is None


# ---------------------------------------------------------------------------------------------
# Factor columns
# ---------------------------------------------------------------------------------------------


def factor_type(value: Any) -> str | None:
    """The ``runs`` column type a factor value needs: BOOLEAN, BIGINT, DOUBLE (also for an
    int beyond 64 bits) or VARCHAR; None for null or a non-scalar value (no column)."""
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


def parse_value(text: str) -> bool | int | float | str:
    """Parse a factor value given as text (folder name, ``--param``, ``--filter``).

    ``true``/``false`` (any case) -> bool, integers -> int, other numbers -> float, anything
    else stays a string.

    >>> parse_value("false"), parse_value("3"), parse_value("2e-5"), parse_value("rte")
    (False, 3, 2e-05, 'rte')
    """
    low = text.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if _INT_RE.match(text.strip()):
        return int(text)
    try:
        f = float(text)
    except ValueError:
        return text
    # "nan"/"inf" as a folder name is more likely a label than a number.
    return f if math.isfinite(f) else text


# ---------------------------------------------------------------------------------------------
# SQL text
# ---------------------------------------------------------------------------------------------


def table_ddl(t: schemas.Table) -> str:
    """CREATE TABLE for one contract table, with its NOT NULL / CHECK constraints."""
    cols = []
    for c in t.columns:
        spec = f"{quote_ident(c.name)} {DUCK_TYPES[c.type]}"
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


def run_training_sql() -> str:
    """CREATE VIEW ``run_training``: per run ``n_logged``, ``last_step``, ``train_loss_final``
    (mean of the last :data:`TRAIN_LOSS_WINDOW` logged losses) and ``diverged``.

    The last losses are taken by ``max_by(loss, step, n)`` (a top-n per run inside the hash
    aggregate, newest first) and averaged in that order: the same values and summation order
    as a ``row_number()`` window, without sorting every step of every run (10-20x faster).
    """
    return f"""
CREATE OR REPLACE VIEW run_training AS
WITH agg AS (
    SELECT run_id,
           count(*) AS n_logged,
           max(step) AS last_step,
           list_avg(max_by(loss, step, {TRAIN_LOSS_WINDOW})) AS train_loss_final,
           bool_or(NOT isfinite(loss)) AS any_nonfinite
    FROM steps WHERE loss IS NOT NULL GROUP BY run_id
)
SELECT r.run_id,
       coalesce(a.n_logged, 0) AS n_logged,
       a.last_step,
       a.train_loss_final,
       coalesce(a.any_nonfinite, false) OR coalesce(r.status = 'diverged', false) AS diverged
FROM runs r LEFT JOIN agg a USING (run_id)
"""


def summary_select(override: str = "NULL::BOOLEAN") -> str:
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


def create_schema(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Create the tables and views that do not exist yet (one transaction).

    Raises
    ------
    SchemaError
        The file was written by a newer stabstat (a higher :data:`STORE_VERSION`).
    """
    con.execute("BEGIN")
    try:
        con.execute("CREATE TABLE IF NOT EXISTS stabstat_meta (key VARCHAR NOT NULL, value VARCHAR)")
        found = con.execute("SELECT value FROM stabstat_meta WHERE key = 'store_version'").fetchall()
        row = found[0] if found else None
        if row is None:
            con.execute("INSERT INTO stabstat_meta VALUES ('store_version', ?)", [str(STORE_VERSION)])
        elif int(row[0]) > STORE_VERSION:
            raise SchemaError(
                f"{path}: written by a newer stabstat (store version {row[0]} > {STORE_VERSION}); upgrade stabstat"
            )
        fixed = ",\n  ".join(f"{quote_ident(n)} {t}" for n, t in RUNS_FIXED_COLUMNS)
        con.execute(f"CREATE TABLE IF NOT EXISTS runs (\n  {fixed}\n)")
        for t in schemas.load().tables:
            con.execute(table_ddl(t))
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
        con.execute(run_training_sql())
        con.execute("CREATE OR REPLACE VIEW run_summary AS " + summary_select())
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
