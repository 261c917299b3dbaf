"""The ingest: discover runs, prepare them, load them in batches, one transaction per batch.

:func:`ingest` discovers runs (:mod:`stabstat.ingest.discover`), prepares each in one helper
thread through its source adapter (reading run.json files and Parquet footers overlaps with
DuckDB loading the previous batch; DuckDB releases the GIL), skips runs whose fingerprint is
stored, checks factor types against the ``runs`` columns, and loads batches of up to
``batch_runs`` runs (and about ``batch_rows`` rows) with the store's load primitives
(:mod:`stabstat.store.load`) in one transaction each: a kill rolls back the uncommitted batch,
so the database never holds part of a run. A batch that fails is rolled back and its halves are
loaded the same way down to single runs (:meth:`_Ingest._find_bad`), so one bad run never keeps
good runs out and costs a few transactions, not one per run of its batch; the failing run is
explained by :func:`stabstat.validate.validate_run` (first problem) or DuckDB's message.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from stabstat.errors import InputFormatError, StabstatError
from stabstat.ingest import registry
from stabstat.ingest.discover import FoundRun, find_runs  # issue 12: runs with their roots
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, prepare_runs
from stabstat.store import load
from stabstat.store.connection import first_line
from stabstat.store.load import IngestReport, Rejection
from stabstat.store.schema import RESERVED, factor_type

if TYPE_CHECKING:
    from stabstat.store.queries import Store

__all__ = ["Progress", "check_factors", "check_majority", "even_share", "ingest"]

#: Rows of a table have no meaningful order (every query orders by step), so the ingest lets
#: DuckDB insert in parallel without keeping the files' row order: ~20% less CPU. (A JSON
#: reader's inserts keep it: :func:`stabstat.store.load.insert_runs`.)
_KEEP_ORDER = False

#: A failed part of at most this many runs is loaded run by run instead of halved again.
_ONE_BY_ONE = 4


class Progress(Protocol):
    """A progress display the caller owns (a tqdm bar, ...): ``update(n)`` after ``n`` more runs."""

    def update(self, n: int) -> Any: ...


#: ``progress=``: a callable ``progress(done, total)`` (called with ``done=0`` before the first
#: run, then with the running count of runs handled), or an object with ``update(n)`` (and
#: optionally ``close()``, called at the end).
ProgressArg = Callable[[int, int], Any] | Progress | None


def ingest(
    store: Store,
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    fmt: str = "auto",
    params: Mapping[str, Any] | None = None,
    options: PrepareOptions | None = None,
    progress: ProgressArg = None,
    validate: str = "fast",
    batch_runs: int = 1000,
    batch_rows: int = 5_000_000,
    on_rejected: Callable[[Rejection], None] | None = None,
) -> IngestReport:
    """Load every run under ``paths`` (run directories or Hugging Face Trainer logs) into ``store``.

    Parameters
    ----------
    store
        Opened with ``read_only=False``.
    paths
        Run directories, folders searched recursively, run.json or trainer_state.json files.
    fmt
        ``auto`` (detect per folder) or a registered format (``stabstat``, ``hf``,
        ``tensorboard``, ``lightning``, ``table``); see :func:`~stabstat.ingest.discover.find_runs`.
    params
        Extra factors for runs of every format (``--param key=value``), over everything the
        runs' own files say.
    options
        What the adapters need besides the paths (issue 12): ``tag_map`` (``--map``),
        ``table`` (a table file's column roles), ``inform`` (lines saying what was inferred);
        ``known``, ``params`` and ``root`` are set here.
    progress
        None, a callable ``progress(done, total)`` (runs handled so far, runs found), or an
        object with ``update(n)`` / ``close()``. The CLI passes a click progress bar.
    validate
        ``fast``: contract checks that need no row (run.json, Parquet footers, column types,
        run_id and order from row-group statistics) plus NOT NULL / CHECK constraints while
        loading. ``full``: also the row-level validator (duplicate keys, rows out of order);
        about 2x slower.
    batch_runs, batch_rows
        Runs per transaction, at most (the runs are split in batches as equal as they can be); a
        kill loses the uncommitted batch, never part of a run. Each batch costs fixed work (its
        statements, a commit, partly filled row groups merged at the checkpoint), so fewer and
        larger batches load faster; ``batch_rows`` bounds the memory a batch needs.
    on_rejected
        Called with each :class:`~stabstat.store.load.Rejection` as it happens (the CLI prints them).

    Raises
    ------
    InputFormatError
        A path does not exist, or no run was found under the paths.
    """
    store.require_writable()
    if validate not in ("fast", "full"):
        raise InputFormatError(f"--validate {validate!r}: expected fast or full")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    found = find_runs(paths, fmt, inform=options.inform if options else None)
    if not found:
        where = ", ".join(map(str, paths))
        markers = registry.join_words([m for a in registry.adapters() for m in a.marker_files], "and")
        raise InputFormatError(f"no runs found under {where} (looked for {markers}; --format {fmt})")
    job = _Ingest(store, batch_runs=batch_runs, batch_rows=batch_rows, on_rejected=on_rejected)
    bar = _ProgressAdapter(progress, len(found))
    try:
        # the helper thread sees job.existing grow as batches commit (same dict)
        base = options or PrepareOptions()
        opts = replace(base, known=job.existing, params={**base.params, **(params or {})})
        job.run(found, opts, full=validate == "full", bar=bar)
    finally:
        bar.close()
    return job.report


class _ProgressAdapter:
    """Both forms of ``progress=`` behind one ``advance(n)``."""

    def __init__(self, progress: ProgressArg, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None and not hasattr(progress, "update"):
            progress(0, total)  # type: ignore[operator]

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is None:
            return
        if hasattr(self.progress, "update"):
            self.progress.update(n)
        else:
            self.progress(self.done, self.total)

    def grow(self, n: int) -> None:
        """``n`` more runs than paths found (one table file holds many runs)."""
        self.total += n
        if self.progress is not None and hasattr(self.progress, "total"):
            self.progress.total += n

    def close(self) -> None:
        close = getattr(self.progress, "close", None) if hasattr(self.progress, "update") else None
        if close is not None:
            close()


def _prepare(item: FoundRun, options: PrepareOptions, full: bool) -> list[RunInput] | Reject:
    """The runs of one path through its adapter (in the helper thread; a table file holds
    many); a rejection is returned, not raised."""
    d = item.path
    try:
        runs = prepare_runs(item.adapter, d, replace(options, root=item.root))
        for run in runs if full else ():
            if run.unchanged or run.validate_dir is None:
                continue
            from stabstat.validate import validate_run

            problems = validate_run(run.validate_dir)
            if problems:
                more = f" (and {len(problems) - 1} more: run `stabstat validate {run.validate_dir}`)" if len(problems) > 1 else ""
                raise Reject(f"{problems[0]}{more}")
        return runs
    except Reject as exc:
        return exc
    except (OSError, StabstatError) as exc:  # unreadable file, permissions, ...
        return Reject(f"{d}: cannot be read: {first_line(exc)}")


class _Ingest:
    """The state of one :func:`ingest` call: report, stored fingerprints, the open batch."""

    def __init__(
        self, store: Store, *, batch_runs: int, batch_rows: int, on_rejected: Callable[[Rejection], None] | None
    ) -> None:
        self.store = store
        self.batch_runs, self.batch_rows = batch_runs, batch_rows
        self.on_rejected = on_rejected
        self.report = IngestReport(db=store.path)
        self.ingest_id = f"{load.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        #: run_id -> fingerprint of the stored runs (updated as batches commit)
        self.existing: dict[str, str] = dict(store.con.execute("SELECT run_id, fingerprint FROM runs").fetchall())
        #: factor columns as they will be once the checked runs are loaded
        self.virtual = dict(store.factors())

    def reject(self, source: str, message: str, run: RunInput | None = None) -> None:
        rej = Rejection(source, message)
        self.report.rejected.append(rej)
        load.record_ingests(self.store, [(self.ingest_id, run, source, "rejected", message)])
        if self.on_rejected is not None:
            self.on_rejected(rej)

    def run(
        self, found: list[FoundRun], options: PrepareOptions, *, full: bool, bar: _ProgressAdapter
    ) -> None:
        """Prepare every run (one helper thread working ahead) and load them in batches, with
        :data:`_KEEP_ORDER` (the setting before is put back at the end)."""
        with load.insertion_order(self.store.con, keep=_KEEP_ORDER):
            self._run(found, options, full=full, bar=bar)

    def _run(
        self, found: list[FoundRun], options: PrepareOptions, *, full: bool, bar: _ProgressAdapter
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        seen: dict[str, str] = {}
        batch: list[RunInput] = []
        batch_n = limit = 0
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stabstat-prepare")
        try:
            prepared = pool.map(lambda item: _prepare(item, options, full), found)
            for item, runs_or_rej in zip(found, prepared, strict=True):
                d = item.path
                runs: list[RunInput | Reject] = [runs_or_rej] if isinstance(runs_or_rej, Reject) else [*runs_or_rej]
                if len(runs) != 1:
                    bar.grow(len(runs) - 1)  # issue 12: a table file holds many runs (or none)
                for run_or_rej in runs:
                    run = self._admit(d, run_or_rej, seen)
                    if run is None:
                        bar.advance(1)
                        continue
                    if not batch:  # the runs not handled yet, in batches as equal as they can be
                        limit = even_share(bar.total - bar.done, self.batch_runs)
                    batch.append(run)
                    batch_n += run.n_rows
                    if len(batch) >= limit or batch_n >= self.batch_rows:
                        self.load_batch(batch)
                        bar.advance(len(batch))
                        batch, batch_n = [], 0
            if batch:
                self.load_batch(batch)
                bar.advance(len(batch))
        finally:
            # on an error (or Ctrl-C) do not wait for the remaining preparations
            pool.shutdown(wait=True, cancel_futures=True)

    def _admit(self, d: Path, run_or_rej: RunInput | Reject, seen: dict[str, str]) -> RunInput | None:
        """The run if it is to be loaded; None when it was rejected or is unchanged."""
        if isinstance(run_or_rej, Reject):
            self.reject(str(d), str(run_or_rej))
            return None
        run = run_or_rej
        if run.run_id in seen:
            self.reject(str(d), f"run_id {run.run_id!r} also found at {seen[run.run_id]}; "
                        "run ids must be unique: remove or rename one copy")
            return None
        seen[run.run_id] = str(d)
        if run.unchanged or self.existing.get(run.run_id) == run.fingerprint:
            self.report.unchanged.append(run.run_id)
            return None
        try:
            check_majority(run)
            check_factors(run, self.virtual)
        except Reject as exc:
            self.reject(str(d), str(exc), run)
            return None
        return run

    def load_batch(self, batch: list[RunInput]) -> None:
        """Load ``batch`` in one transaction; if that fails, find the runs that fail (see
        :meth:`_find_bad`) and load the others."""
        exc = self._try_load(batch)
        if exc is None:
            return
        if len(batch) > 1:
            self._find_bad(batch)
        else:
            self._load_alone_failed(batch[0], exc)

    def _try_load(self, batch: list[RunInput]) -> BaseException | None:
        """One transaction for ``batch``: None when committed, else the error (rolled back)."""
        import duckdb

        con, report = self.store.con, self.report
        notes_before = len(report.notes)
        con.execute("BEGIN")
        try:
            load.apply_factor_columns(self.store, batch, report)
            load.insert_runs(self.store, batch, self.existing, self.ingest_id)
            con.execute("COMMIT")
        except (duckdb.Error, Reject, OSError) as exc:
            con.execute("ROLLBACK")
            # a statement that failed inside an insertion_order() block could not put it back
            con.execute(f"SET preserve_insertion_order = {str(_KEEP_ORDER).lower()}")
            del report.notes[notes_before:]
            self.virtual = dict(self.store.factors())
            return exc
        for run in batch:
            (report.replaced if run.run_id in self.existing else report.added).append(run.run_id)
            self.existing[run.run_id] = run.fingerprint
        return None

    def _find_bad(self, batch: list[RunInput]) -> None:
        """``batch`` failed: load each half in one transaction. A half that fails while the
        other loaded is halved again (one bad run among ``n`` costs ~``2 log2 n``
        transactions instead of ``n``); when both fail (bad runs are many) or a half is small,
        its runs are loaded one by one (at most ~3 reads of each file when every run is bad)."""
        half = (len(batch) + 1) // 2
        failed: list[tuple[list[RunInput], BaseException]] = []
        for part in (batch[:half], batch[half:]):
            checked = self._recheck(part)  # self.virtual holds only what is committed
            exc = self._try_load(checked) if checked else None
            if exc is not None:
                failed.append((checked, exc))
        for part, exc in failed:
            if len(part) == 1:
                self._load_alone_failed(part[0], exc)
            elif len(failed) == 1 and len(part) > _ONE_BY_ONE:
                self._find_bad(part)
            else:
                for run in part:
                    if self._recheck([run]):
                        self.load_batch([run])

    def _recheck(self, runs: list[RunInput]) -> list[RunInput]:
        """The runs whose factor types still fit the committed columns (others rejected)."""
        checked = []
        for run in runs:
            try:
                check_factors(run, self.virtual)
            except Reject as rej:
                self.reject(run.source, str(rej), run)
                continue
            checked.append(run)
        return checked

    def _load_alone_failed(self, run: RunInput, exc: BaseException) -> None:
        """``run`` failed to load on its own: DuckDB's JSON reader refused it (read it in Python
        instead, which names the file, entry and field of a malformed file, or loads it), or
        reject it with :func:`explain_failure`'s line."""
        jf = load.json_files(run)
        if jf is not None:
            try:
                jf.reader.fallback(run)
            except (Reject, StabstatError, OSError) as rej:
                self.reject(run.source, first_line(rej), run)
                return
            if load.json_files(run) is None:  # no JSON tables left: cannot come back here
                self.load_batch([run])
                return
        self.reject(run.source, explain_failure(run, exc), run)


def even_share(n: int, cap: int) -> int:
    """The size of the next batch for ``n`` runs still to load, at most ``cap`` per batch: the
    fewest batches, as equal as they can be (1,100 runs at 1,000: 550 and 550, not 1,000 and
    100; 7 at 3: 3, then 2 of the 4 left, then 2). A batch's appends of fewer rows than a
    DuckDB row group (122,880) go through the write-ahead log and are written again at the
    checkpoint; a large one is written once, straight to the file."""
    return max(1, math.ceil(n / math.ceil(n / cap))) if n > 0 and cap > 0 else 1


def explain_failure(run: RunInput, exc: BaseException) -> str:
    """One line saying why ``run`` failed to load: the validator's first problem when it
    finds one (it names file and column), else the database's message."""
    if run.validate_dir is not None:
        from stabstat.validate import validate_run

        try:
            problems = validate_run(run.validate_dir)
        except Exception:  # noqa: BLE001 - fall back to the database's message
            problems = []
        if problems:
            more = f" (and {len(problems) - 1} more: run `stabstat validate {run.validate_dir}`)" if len(problems) > 1 else ""
            return f"{problems[0]}{more}"
    return (
        f"{run.source}: could not be loaded: {first_line(exc)}; "
        f"check it with `stabstat validate {run.source}` and re-write or delete it"
    )


def check_majority(run: RunInput) -> None:
    """Fill ``run.majority`` from ``task.majority`` (metric -> finite number) or reject."""
    task = run.run_json.get("task") or {}
    maj = task.get("majority") if isinstance(task, dict) else None
    if maj is None:
        return
    where = run.metadata_file or run.source
    if not isinstance(maj, dict):
        raise Reject(f"{where}: task.majority: must be an object metric -> score, got {json.dumps(maj)[:60]}")
    for metric, value in maj.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Reject(f"{where}: task.majority.{metric}: must be a finite number, got {json.dumps(value)[:60]}")
        run.majority.append([run.run_id, str(metric), float(value)])


def check_factors(run: RunInput, columns: dict[str, str]) -> None:
    """Check ``run``'s factors against ``columns`` (name -> type) and record additions and
    widenings in it. int values in a DOUBLE column are fine; a float in a BIGINT column
    widens the column to DOUBLE; anything else that differs is a conflict."""
    lower = {n.lower(): n for n in columns}
    changes: dict[str, str] = {}
    for key, value in run.factors.items():
        typ = factor_type(value)
        if key.lower() in RESERVED:
            raise Reject(
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
            raise Reject(
                f"{run.source}: factor {key!r} differs only in case from the stored factor {name!r} "
                "(column names are case-insensitive); use one spelling"
            )
        have = changes.get(name, columns[name])
        if have == typ or (have == "DOUBLE" and typ == "BIGINT"):
            continue
        if have == "BIGINT" and typ == "DOUBLE":
            changes[name] = "DOUBLE"
            continue
        raise Reject(
            f"{run.source}: factor {key!r} is {value!r} ({typ}) but the database stores it as {have}; "
            f"fix the run's config, or ingest into a fresh --db"
        )
    columns.update(changes)
