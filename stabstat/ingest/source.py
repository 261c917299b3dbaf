"""The source-adapter interface: how one input format becomes runs the store can load.

An adapter (a :class:`SourceAdapter`) knows one format of training logs (``stabstat``: our
run directories; ``hf``: Hugging Face Trainer states; more formats plug in the same way and
register in :mod:`stabstat.ingest.registry`). It does three things:

``detect(path)``
    Whether a folder is one run of this format, as a strength (0: no). With ``--format auto``
    the strongest adapter wins a folder; a run folder is not searched further. Strengths in
    use: 3 = stabstat table files, 2 = a trainer state, 1 = a bare run.json (a run.json beside
    a trainer state is a side file of factors, so HF beats it; table files beat both).
``locate(path)``
    The run that a path given by the user (a marker file such as ``run.json``, or a folder
    inside a run such as ``checkpoint-500/``) belongs to; None when the adapter has no claim.
``prepare(path, options)``
    Read and check one run, without loading anything, into a :class:`RunInput`; raise
    :class:`Reject` with a one-line reason (file, field, fix) when it cannot be ingested.
    A run whose fingerprint equals ``options.known[run_id]`` may return early with
    ``unchanged=True`` (nothing else checked): re-ingesting a large tree is cheap.

:class:`RunInput` is format-free: metadata in run.json's shape, factors, a fingerprint, and
per contract table a :class:`~stabstat.store.load.TableData` (Parquet files that DuckDB reads
itself, typed column lists, or JSON files that DuckDB reads at load time with a format's
:class:`~stabstat.store.load.JsonReader`: its SQL stages every file of a batch in one
``read_json`` statement, its ``finish`` completes the run from a facts row, its ``fallback``
reads a run that DuckDB refused in Python; see ``hf``). Adapters are called from one helper
thread, so ``prepare`` must not touch the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from stabstat.store.load import TableData

__all__ = ["PrepareOptions", "Reject", "RunInput", "SourceAdapter", "TableData", "TableOptions", "apply_params",
           "prepare_runs", "scalar_factors"]


class Reject(Exception):
    """This run cannot be ingested; the message is the one-line reason (file, field, fix)."""


@dataclass
class RunInput:
    """One run, read and checked, ready to load (satisfies :class:`~stabstat.store.load.LoadableRun`)."""

    run_id: str
    source: str  #: where the run was read from (its directory), for messages and ``runs.source``
    source_format: str  #: the adapter's name (``runs.source_format``)
    #: run.json-like metadata: status (as written), started_at/finished_at/heartbeat_at (ISO
    #: 8601 text), error, schema_version, task, config, environment; missing keys are NULL.
    run_json: dict[str, Any]
    status: str  #: effective status (a running run with a stale heartbeat is interrupted)
    fingerprint: str  #: changes whenever the run's data changes (see stabstat.ingest.fingerprint)
    factors: dict[str, Any]  #: scalar config entries -> one ``runs`` column each
    tables: dict[str, TableData] = field(default_factory=dict)  #: contract table -> data
    #: the file ``run_json`` came from, for messages (defaults to ``source``)
    metadata_file: str | None = None
    #: a run directory in the contract's own layout that ``stabstat.validate`` can check (for
    #: ``--validate full`` and to explain a failed load); None for other formats
    validate_dir: Path | None = None
    majority: list[list[Any]] = field(default_factory=list)  #: ``[run_id, metric, value]`` rows
    unchanged: bool = False  #: fingerprint already stored: nothing else was checked

    @property
    def n_rows(self) -> int:
        """Rows over all tables (for batching)."""
        return sum(d.rows for d in self.tables.values())


@dataclass(frozen=True)
class TableOptions:
    """Column roles and shape of a table file (``--run-col``, ``--step-col``, ...; None:
    inferred). Read by the ``table`` adapter (:mod:`stabstat.ingest.sources.table`)."""

    run_col: str | None = None
    step_col: str | None = None
    metric_col: str | None = None
    value_col: str | None = None
    split_col: str | None = None
    factors: tuple[str, ...] | None = None  #: ``--factor COL`` (repeatable); None: inferred
    split: str = "dev"  #: split of a results table's score columns without a split prefix
    shape: str = "auto"  #: ``auto``, ``long``, ``history`` or ``results``


@dataclass(frozen=True)
class PrepareOptions:
    """What :meth:`SourceAdapter.prepare` gets besides the path.

    ``known``: run_id -> fingerprint of the runs already stored. ``params``: extra factors
    given by the user (``--param``), over everything a run's own files say (applied to runs
    of every format by :func:`prepare_runs`). ``tag_map``: ``--map TAG=split/metric`` rules,
    source name -> :class:`stabstat.ingest.tags.Target`. ``root``: the folder the user named
    that the run was found under (set per run by the walker, :func:`stabstat.ingest.discover.find_runs`;
    None for a file named directly): readers of other loggers' folders name runs by their
    path below it. ``table``: column roles of table files. ``inform``: called (in the helper
    thread) with lines saying what an adapter inferred, e.g. a table's column roles.
    """

    known: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tag_map: Mapping[str, Any] = field(default_factory=dict)
    root: Path | None = None
    table: TableOptions = field(default_factory=TableOptions)
    inform: Callable[[str], None] | None = None


class SourceAdapter(Protocol):
    """One input format (see the module docstring)."""

    #: ``--format`` value and ``runs.source_format``: ``"stabstat"``, ``"hf"``, ...
    name: str
    #: file names that mark a run of this format (for messages: "looked for run.json and ...")
    marker_files: tuple[str, ...]

    def detect(self, path: Path) -> int:
        """Strength with which folder ``path`` is one run of this format; 0 if it is not."""
        ...

    def locate(self, path: Path) -> Path | None:
        """The run a user-given file or folder belongs to (``run.json`` -> its folder,
        ``checkpoint-<n>/`` -> the run above it), or None."""
        ...

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        """Read and check one run; raise :class:`Reject` with the reason when it cannot be loaded."""
        ...

    # Optional (not part of the Protocol, so existing adapters need not define it):
    # ``prepare_many(path, options) -> Iterable[RunInput]`` for a path that holds many runs
    # (a table file); :func:`prepare_runs` calls it when present, else ``[prepare(...)]``.


def prepare_runs(adapter: SourceAdapter, path: Path, options: PrepareOptions) -> list[RunInput]:
    """The runs at ``path``: ``adapter.prepare_many(path, options)`` when the adapter has it
    (one table file holds many runs), else ``[adapter.prepare(path, options)]``; then
    ``options.params`` (``--param``) applied to every run of every format.

    With ``--param`` given, the adapter is not offered the stored fingerprints (``known``):
    its early "unchanged" answer would skip a run whose parameters changed. The fingerprint
    of each run then covers the parameters, so an unchanged run is still recognised (by the
    ingest, after reading it).

    Raises
    ------
    Reject
        From the adapter: the path cannot be ingested (one line).
    """
    if options.params:
        options = replace(options, known={})
    many = getattr(adapter, "prepare_many", None)
    runs = list(many(path, options)) if many is not None else [adapter.prepare(path, options)]
    if options.params:
        for run in runs:
            apply_params(run, options.params)
    return runs


def apply_params(run: RunInput, params: Mapping[str, Any]) -> None:
    """Put ``params`` (``--param`` factors) over ``run``'s config and factors, and into its
    fingerprint. Idempotent for readers that applied them already (same keys, same values)."""
    config = dict(run.run_json.get("config") or {})
    config.update(params)
    run.run_json = {**run.run_json, "config": config}
    run.factors = {**run.factors, **scalar_factors(params)}
    digest = hashlib.sha256(json.dumps([run.fingerprint, sorted((str(k), repr(v)) for k, v in params.items())])
                            .encode()).hexdigest()
    run.fingerprint = digest


def scalar_factors(config: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a config (the factors); nested values stay in the JSON only."""
    return {str(k): v for k, v in config.items() if v is None or isinstance(v, (bool, int, float, str))}
