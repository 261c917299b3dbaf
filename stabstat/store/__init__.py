"""The DuckDB store: the database of ingested runs, and queries over it.

Tables (``stabstat schema`` lists them with their columns):

``runs``
    One row per run: ``run_id``, ``status`` (the effective status at ingest time: a ``running``
    run whose heartbeat is stale reads ``interrupted``), ``status_written`` (as in run.json),
    timestamps (UTC), ``error``, ``task_info`` / ``config`` / ``environment`` (JSON),
    ``source`` (the run directory), ``source_format`` (the source adapter's name: ``stabstat``,
    ``hf``, ...), ``fingerprint``, ``ingested_at``, and **one column per scalar config key**
    (the factors: ``task``, ``model``, ``seed``, ``lr``, ``bias_correction``, ...). A factor
    column is added the first time a run has that key (NULL for earlier runs).
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

Modules: :mod:`~stabstat.store.connection` (opening the file, locks, ``fetch_frame``,
``quote_ident``), :mod:`~stabstat.store.schema` (DDL from the contract, factor column types,
the views), :mod:`~stabstat.store.queries` (:class:`Store` and its read methods),
:mod:`~stabstat.store.load` (the primitives that write prepared runs). Runs are read and
loaded by :func:`stabstat.ingest.ingest`, which imports the store (never the other way);
the store never knows which format a run came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabstat.store.connection import DB_ENV, DEFAULT_DB, default_db, fetch_frame, quote_ident
from stabstat.store.queries import Store
from stabstat.store.schema import (
    LOWER_IS_BETTER_PATTERN,
    RESERVED,
    STORE_VERSION,
    TRAIN_LOSS_WINDOW,
    default_higher_is_better,
    parse_value,
)

if TYPE_CHECKING:
    from stabstat.store.load import IngestReport, Rejection


def __getattr__(name: str) -> Any:
    # The write side (store.load and what it imports, ~7 ms) loads on first use only:
    # the analysis commands never write.
    if name in ("IngestReport", "Rejection"):
        from stabstat.store import load

        value = getattr(load, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "LOWER_IS_BETTER_PATTERN",
    "RESERVED",
    "STORE_VERSION",
    "TRAIN_LOSS_WINDOW",
    "IngestReport",
    "Rejection",
    "Store",
    "default_db",
    "default_higher_is_better",
    "fetch_frame",
    "parse_value",
    "quote_ident",
]
