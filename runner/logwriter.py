"""A framework-agnostic, buffered, crash-safe writer of one run directory.

Use :class:`RunLogger` from any training loop (plain PyTorch, JAX, your own trainer): it needs
only pyarrow. It writes the run-log contract in ``schemas/`` (``schemas.load()``); the column
lists, types and nullability all come from there.

On disk (see ``schemas/README.md``)::

    <out_dir>/<run_id>/run.json                      replaced atomically at start, every flush, finish
    <out_dir>/<run_id>/<table>.parts/part-<n>.parquet while running, one file per flush
    <out_dir>/<run_id>/<table>.parquet               after a clean finish (parts compacted)

Every file is written to a temporary name, fsync'ed and renamed (:mod:`runner.durable`), so
after ``kill -9`` at any moment each file is either complete or absent, and every flushed row
reads back. Logged values are checked against the contract as they arrive
(:mod:`runner.rowbuffer`).

Example
-------
>>> from runner.logwriter import RunLogger
>>> with RunLogger("runs", "rte-s1", {"task": "rte", "seed": 1, "lr": 2e-5}) as log:  # doctest: +SKIP
...     for step in range(1, 101):
...         loss = train_step()
...         log.log_step(step, loss=loss, lr=2e-5)
...         if log.diverged:
...             break
...     log.log_eval(100, "dev", {"accuracy": 0.71})
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from runner.durable import write_json_atomic, write_parquet_atomic
from runner.rowbuffer import RowBuffer, make_converter

__all__ = ["RunLogger", "Terminated", "utc_now_iso"]

_MAX_ERROR_CHARS = 20_000


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives while a :class:`RunLogger` is active.

    A subclass of :class:`SystemExit` so that ``except Exception`` in user code does not
    swallow it and the interpreter exits quietly with code 128 + signal number after the
    logger has marked the run ``interrupted``.
    """


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC text, e.g. ``2026-11-25T19:36:15.123456+00:00``."""
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------------------------
# The logger
# --------------------------------------------------------------------------------------------


def _default_environment() -> dict[str, Any]:
    """Cheap facts about the process; never imports a package just to read its version."""
    from importlib import metadata

    packages: dict[str, str] = {}
    for name in ("torch", "transformers", "datasets", "numpy", "pyarrow", "accelerate", "stabstat"):
        if name in sys.modules or name in ("pyarrow", "stabstat"):
            with contextlib.suppress(metadata.PackageNotFoundError):
                packages[name] = metadata.version(name)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "packages": packages,
    }


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id:
        raise ValueError(
            f"RunLogger: run_id {run_id!r} must be a non-empty file name without '/' "
            "(it becomes the run directory's name)"
        )


def _json_copy(obj: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise TypeError(f"RunLogger: {what} must be a mapping, got {type(obj).__name__}")
    try:
        out = json.loads(json.dumps(dict(obj), allow_nan=False, default=str))
    except ValueError as exc:
        raise ValueError(f"RunLogger: {what} is not JSON-serialisable: {exc} (NaN/inf are not allowed)") from exc
    if not isinstance(out, dict):  # pragma: no cover - a Mapping always dumps to an object
        raise TypeError(f"RunLogger: {what} must be a mapping")
    return out


class RunLogger:
    """Write one run directory ``out_dir/run_id`` following the run-log contract.

    Parameters
    ----------
    out_dir
        Parent folder; the run directory ``out_dir/run_id`` is created.
    run_id
        Unique id of the run; also the directory name and the ``run_id`` column of every table.
    config
        The run's configuration; every scalar entry is a factor at analysis time
        (conventional keys: model, task, seed, lr, bias_correction, warmup_ratio, epochs,
        max_steps, batch_size, n_train, weight_decay, max_grad_norm). Must be JSON-serialisable.
    task
        Facts about the task (num_labels, n_train, n_dev, metrics, majority, higher_is_better);
        can also be given later with :meth:`set_task`.
    environment
        Extra environment facts, merged over the defaults (python, platform, hostname, pid,
        versions of already-imported packages).
    flush_every_steps, flush_every_s
        Buffered rows are written as one part file per table when :meth:`log_step` is called
        after this many steps, or this many seconds, since the last flush (the flush comes
        before the new step, so each part holds all rows of its steps). Never a file per step
        unless you ask for ``flush_every_steps=1``.
    stale_after_s
        Written to ``run.json``: a ``running`` run whose heartbeat is older than this reads as
        ``interrupted``. Keep it well above ``flush_every_s`` plus the longest step/eval.
    overwrite
        Replace an existing run directory (only one that holds a ``run.json`` or is empty).

    Raises
    ------
    FileExistsError
        If the run directory exists and ``overwrite`` is false.

    Notes
    -----
    Used as a context manager it finishes the run on exit: ``completed`` (or ``diverged`` if a
    non-finite loss was logged), ``interrupted`` on KeyboardInterrupt / SIGTERM / SystemExit,
    ``failed`` (with the error message) on any other exception, which is re-raised. In the main
    thread it installs a SIGTERM handler for its lifetime and restores the previous one.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        run_id: str,
        config: Mapping[str, Any],
        *,
        task: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        flush_every_steps: int = 200,
        flush_every_s: float = 30.0,
        stale_after_s: float = 600.0,
        overwrite: bool = False,
    ) -> None:
        _check_run_id(run_id)
        if flush_every_steps < 1:
            raise ValueError("RunLogger: flush_every_steps must be >= 1")
        if not flush_every_s > 0 or not stale_after_s > 0:
            raise ValueError("RunLogger: flush_every_s and stale_after_s must be > 0")
        self._schema = schemas.load()
        self.run_id = run_id
        self.run_dir = Path(out_dir) / run_id
        self.flush_every_steps = int(flush_every_steps)
        self.flush_every_s = float(flush_every_s)
        self.stale_after_s = float(stale_after_s)
        self.diverged = False
        #: Set by :meth:`mark_stopped`: the run ends ``stopped`` with this record in run.json.
        self.stopped: dict[str, Any] | None = None

        cfg = _json_copy(config, "config")
        self._run_json: dict[str, Any] = {
            "schema_version": self._schema.version,
            "run_id": run_id,
            "status": "running",
            "started_at": utc_now_iso(),
            "finished_at": None,
            "heartbeat_at": None,
            "stale_after_s": self.stale_after_s,
            "config": cfg if cfg is not None else {},
            "task": _json_copy(task, "task"),
            "environment": {**_default_environment(), **(_json_copy(environment, "environment") or {})},
            "error": None,
        }
        self._buffers = {t.name: RowBuffer(t) for t in self._schema.tables}
        self._part_no = dict.fromkeys(self._buffers, 0)
        self._steps_since_flush = 0
        self._finished = False
        self._old_sigterm: Any = None
        self._installed_sigterm = False
        self._writing = False
        self._pending_signal: int | None = None

        self._prepare_dir(overwrite)
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        self._write_run_json()

    # -- set-up --------------------------------------------------------------------------------

    def _prepare_dir(self, overwrite: bool) -> None:
        d = self.run_dir
        if d.exists():
            if not overwrite:
                raise FileExistsError(
                    f"RunLogger: run directory {d} already exists; choose another run_id or pass "
                    "overwrite=True to replace it"
                )
            if not d.is_dir() or not ((d / "run.json").exists() or not any(d.iterdir())):
                raise FileExistsError(
                    f"RunLogger: {d} exists and is not a run directory (no run.json); "
                    "refusing to delete it with overwrite=True"
                )
            shutil.rmtree(d)
        d.mkdir(parents=True)

    def _write_run_json(self) -> None:
        self._run_json["heartbeat_at"] = utc_now_iso()
        write_json_atomic(self._run_json, self.run_dir / "run.json")

    # -- context manager & signals ---------------------------------------------------------------

    def __enter__(self) -> RunLogger:
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed_sigterm = True
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self._writing:
            # Do not abandon rows already taken out of the buffers: finish this write first.
            self._pending_signal = signum
            return
        raise Terminated(128 + signum)

    def _restore_sigterm(self) -> None:
        if self._installed_sigterm:
            self._installed_sigterm = False
            # getsignal() gives None for a handler not installed from Python: SIG_DFL is the
            # closest we can restore.
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            else:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._finished:
                if exc is None:
                    self.finish("diverged" if self.diverged else "stopped" if self.stopped else "completed")
                elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    what = "SIGTERM" if isinstance(exc, Terminated) else type(exc).__name__
                    self.finish("interrupted", error=f"interrupted by {what}")
                else:
                    self.finish("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._restore_sigterm()
        # returning None never swallows the exception

    # -- logging ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"RunLogger: run {self.run_id} is already finished")

    def log_step(
        self,
        step: int,
        *,
        loss: float | None,
        lr: float | None = None,
        grad_norm: float | None = None,
        epoch: float | None = None,
        wall_time: float | None = None,
    ) -> None:
        """Record one optimiser step (``step`` = 1 for the first update, strictly increasing).

        ``loss`` is the batch's mean training loss in nats; NaN/inf are stored and set
        :attr:`diverged` (nothing is raised: stop the loop yourself). ``grad_norm`` is the
        total L2 norm before clipping. ``wall_time`` defaults to seconds since the logger started.
        """
        self._check_open()
        now = time.monotonic()
        # Flush *before* recording a new step, so a part holds every row logged for its steps
        # (log_layer_grads/log_eval for step s usually come right after log_step(s)).
        if self._steps_since_flush and (
            self._steps_since_flush >= self.flush_every_steps or now - self._last_flush >= self.flush_every_s
        ):
            self.flush()
        if wall_time is None:
            wall_time = now - self._t0
        self._buffers["steps"].append({
            "run_id": self.run_id, "step": step, "epoch": epoch, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "wall_time": wall_time,
        })
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
        self._steps_since_flush += 1

    def log_layer_grads(
        self,
        step: int,
        layers: Sequence[str],
        depths: Sequence[int],
        norms: Sequence[float],
    ) -> None:
        """Record per-layer gradient L2 norms (before clipping) for ``step``; equal-length sequences.

        ``layers``/``depths``/``norms`` are what :meth:`runner.gradnorms.LayerGradNorms.compute`
        returns. Non-finite norms are stored as they are.
        """
        self._check_open()
        if not len(layers) == len(depths) == len(norms):
            raise ValueError(
                f"RunLogger.log_layer_grads: layers, depths and norms must have equal lengths, "
                f"got {len(layers)}, {len(depths)}, {len(norms)}"
            )
        buf = self._buffers["layer_grads"]
        for layer, depth, norm in zip(layers, depths, norms, strict=True):
            buf.append({"run_id": self.run_id, "step": step, "layer": layer, "depth": depth, "grad_norm": norm})

    def log_eval(self, step: int, split: str, metrics: Mapping[str, float | None]) -> None:
        """Record one evaluation: one row per metric. Values are fractions (not percent);
        None, NaN and inf are stored as null ("undefined")."""
        self._check_open()
        buf = self._buffers["evals"]
        for metric, value in metrics.items():
            buf.append({"run_id": self.run_id, "step": step, "split": split, "metric": metric, "value": value})

    def log_predictions(
        self,
        step: int,
        split: str,
        example_ids: Any,
        labels: Any,
        predictions: Any,
        probabilities: Any = None,
    ) -> None:
        """Record per-example predictions of one evaluation.

        ``example_ids``, ``labels``, ``predictions``: integer array-likes of shape ``(n,)``
        (lists, numpy arrays, CPU tensors); ``probabilities``: floats of shape ``(n,)``, the
        model's probability of the predicted label, or None.
        """
        import numpy as np

        self._check_open()
        table = self._schema.table("predictions")
        step = make_converter("predictions", table.column("step"))(step)
        split = make_converter("predictions", table.column("split"))(split)

        def ints(name: str, values: Any) -> Any:
            a = np.asarray(values)
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise TypeError(
                    f"RunLogger.log_predictions: predictions.{name} must be a 1-d integer array "
                    f"(int64), got dtype {a.dtype} with shape {a.shape}"
                )
            return a.astype(np.int64, copy=False)

        cols: dict[str, Any] = {
            "example_id": ints("example_id", example_ids),
            "label": ints("label", labels),
            "prediction": ints("prediction", predictions),
        }
        n = len(cols["example_id"])
        if probabilities is None:
            cols["probability"] = pa.nulls(n, pa.float64())
        else:
            p = np.asarray(probabilities)
            if p.ndim != 1 or p.dtype.kind not in "fiu":
                raise TypeError(
                    "RunLogger.log_predictions: predictions.probability must be a 1-d float array "
                    f"(float64), got dtype {p.dtype} with shape {p.shape}"
                )
            p = p.astype(np.float64)
            # finite-only column: non-finite -> null, like every finite-only column
            cols["probability"] = pa.array(p, type=pa.float64(), mask=~np.isfinite(p))
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"RunLogger.log_predictions: arrays must have equal lengths, got {lengths}")
        schema = table.arrow_schema()
        arrays = []
        for f in schema:
            if f.name == "run_id":
                arrays.append(pa.array([self.run_id] * n, type=f.type))
            elif f.name == "step":
                arrays.append(pa.array(np.full(n, step, dtype=np.int64), type=f.type))
            elif f.name == "split":
                arrays.append(pa.array([split] * n, type=f.type))
            else:
                arrays.append(pa.array(cols[f.name], type=f.type))
        self._buffers["predictions"].append_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Set (or replace) the task facts in ``run.json`` and rewrite it now."""
        self._check_open()
        self._run_json["task"] = _json_copy(task, "task")
        self._write_run_json()

    # -- flushing and finishing ------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered row as one new part file per table, then refresh the heartbeat."""
        self._check_open()
        with self._signals_deferred():
            self._flush()

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        # SIGTERM during a write would abandon rows already taken out of the buffers: the
        # handler only records it, and it is raised once the write is done.
        if self._writing:
            yield
            return
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending_signal is not None:
            signum, self._pending_signal = self._pending_signal, None
            raise Terminated(128 + signum)

    def _flush(self) -> None:
        for name, buf in self._buffers.items():
            table = buf.take()
            if table is None:
                continue
            parts = self.run_dir / self._schema.table(name).parts_dir
            parts.mkdir(exist_ok=True)
            self._part_no[name] += 1
            write_parquet_atomic(table, parts / f"part-{self._part_no[name]:06d}.parquet", buf.table)
        self._steps_since_flush = 0
        self._last_flush = time.monotonic()
        self._write_run_json()

    def mark_stopped(self, step: int, total_steps: int, reason: str, rule: str) -> None:
        """Record that the run's early-stopping rule judged it doomed at optimiser ``step`` of
        ``total_steps``: the caller stops training and the run finishes ``stopped`` with
        ``run.json["stopped"] = {step, total_steps, reason, rule}``."""
        self._check_open()
        self.stopped = {"step": int(step), "total_steps": int(total_steps), "reason": str(reason),
                        "rule": str(rule)}

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Flush, compact the parts into one ``<table>.parquet`` per table, and write the final
        ``run.json`` with ``status`` (completed, failed, diverged, interrupted or stopped: the
        last one needs :meth:`mark_stopped` first)."""
        self._check_open()
        if status not in self._schema.final_statuses:
            raise ValueError(
                f"RunLogger.finish: status must be one of {', '.join(self._schema.final_statuses)}, got {status!r}"
            )
        if status == "stopped" and self.stopped is None:
            raise ValueError("RunLogger.finish: status 'stopped' needs mark_stopped(step, total_steps, reason, rule) first")
        try:
            with self._signals_deferred():
                self._flush()
                counts: dict[str, int] = {}
                for t in self._schema.tables:
                    n = self._compact(t)
                    if n is not None:
                        counts[t.name] = n
                # run.json goes last: until it says final, a crash reads as running/stale ->
                # interrupted, and the compacted files (preferred by readers) are complete.
                self._run_json.update(
                    status=status,
                    finished_at=utc_now_iso(),
                    error=None if error is None else str(error)[:_MAX_ERROR_CHARS],
                    tables=counts,
                )
                if status == "stopped":
                    self._run_json["stopped"] = self.stopped
                self._write_run_json()
                self._finished = True
        finally:
            if self._finished:
                self._restore_sigterm()

    def _compact(self, t: schemas.Table) -> int | None:
        parts_dir = self.run_dir / t.parts_dir
        files = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []
        if not files and not t.required:
            return None
        schema = t.arrow_schema()
        tables = [pq.read_table(f, schema=schema) for f in files]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        write_parquet_atomic(table, self.run_dir / t.filename, t)
        if parts_dir.is_dir():
            shutil.rmtree(parts_dir)
        return table.num_rows

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has run."""
        return self._finished

    @property
    def status(self) -> str:
        """The status currently written in ``run.json``."""
        return str(self._run_json["status"])
