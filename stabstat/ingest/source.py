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
itself, or typed column lists). Adapters are called from one helper thread, so ``prepare``
must not touch the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stabstat.store.load import TableData

__all__ = ["PrepareOptions", "Reject", "RunInput", "SourceAdapter", "TableData", "scalar_factors"]


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
class PrepareOptions:
    """What :meth:`SourceAdapter.prepare` gets besides the path.

    ``known``: run_id -> fingerprint of the runs already stored. ``params``: extra factors
    given by the user (``--param``), for formats whose logs do not carry their config.
    """

    known: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


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


def scalar_factors(config: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a config (the factors); nested values stay in the JSON only."""
    return {str(k): v for k, v in config.items() if v is None or isinstance(v, (bool, int, float, str))}
