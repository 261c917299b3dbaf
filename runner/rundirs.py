"""The run directories of a sweep's output, local or in object storage, behind one interface.

``--out`` is a local folder or an object-store URL (``s3://bucket/prefix``, any fsspec URL);
:meth:`RunDirs.for_out` is the one place that tells them apart
(:func:`stabstat.remote.is_remote`). Everything that reads or writes run directories for a
sweep goes through the object it returns:

* :meth:`RunDirs.status` / :meth:`RunDirs.statuses` -- the status written in
  ``<out>/<run_id>/run.json`` (None when absent or unreadable);
* :meth:`RunDirs.pending` -- the planned runs whose status is not in
  :data:`schemas.DONE_STATUSES` (absent, running/killed, interrupted, failed): what a resumed
  sweep runs;
* :meth:`RunDirs.attempt` -- a context manager for one new attempt at a run: it deletes the
  leftover of an earlier attempt and gives the folder to train in and the logger factory;
  :meth:`Attempt.result` turns the trainer's status into the run's final status.

Local: the run is written in place by :class:`runner.logwriter.RunLogger` (atomic renames,
fsync). Remote: the run is written to a local staging folder (``$STABSTAT_STAGING_DIR``, else
the system temp folder) by the mirroring logger of :mod:`runner.storage`, which uploads each
file as soon as it is written; statuses come from one listing of the prefix plus one
concurrent batch of reads. The staging folder is deleted after the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from schemas import DONE_STATUSES
from stabstat.errors import StorageError
from stabstat.remote import is_remote

__all__ = ["STAGING_ENV", "Attempt", "LocalRunDirs", "RemoteRunDirs", "RunDirs"]

#: Folder for the staging directories of remote runs (default: the system temp folder).
STAGING_ENV = "STABSTAT_STAGING_DIR"


class _Planned(Protocol):
    """What :meth:`RunDirs.pending` needs of a planned run (:class:`runner.sweep.PlannedRun`)."""

    @property
    def run_id(self) -> str: ...


P = TypeVar("P", bound=_Planned)


class Attempt:
    """One attempt at a run: train into ``out_dir/<run_id>`` with ``logger_factory``.

    ``logger_factory`` has :class:`runner.logwriter.RunLogger`'s signature; None means the
    plain ``RunLogger`` (``runner.train.train_run``'s default).
    """

    def __init__(self, out_dir: Path, logger_factory: Callable[..., Any] | None = None) -> None:
        self.out_dir = out_dir
        self.logger_factory = logger_factory

    def result(self, status: str) -> str:
        """The run's final status, given the status the trainer's logger ended with."""
        return status


class RunDirs:
    """The run directories ``<out>/<run_id>/`` of one output; build with :meth:`for_out`."""

    #: True for an object-store URL.
    remote: bool = False

    @staticmethod
    def for_out(out: str | os.PathLike[str], *,
                storage_options: Mapping[str, Any] | None = None) -> RunDirs:
        """:class:`RemoteRunDirs` for a URL with a scheme other than ``file://``, else
        :class:`LocalRunDirs`. Cheap: no I/O, no fsspec import."""
        if is_remote(out):
            return RemoteRunDirs(os.fspath(out), storage_options=storage_options)
        return LocalRunDirs(out)

    @property
    def location(self) -> Path | str:
        """The output as a launcher passes it on: a ``Path``, or the URL text."""
        raise NotImplementedError

    def check(self) -> None:
        """Fail now (before any data is loaded) when writing here needs a missing extra."""

    def status(self, run_id: str) -> str | None:
        """The status in ``<out>/<run_id>/run.json``; None when absent or unreadable."""
        raise NotImplementedError

    def statuses(self, run_ids: Sequence[str]) -> dict[str, str | None]:
        """``run_id -> status`` (None when absent or unreadable) for every id of ``run_ids``."""
        return {r: self.status(r) for r in run_ids}

    def pending(self, planned: Sequence[P]) -> list[P]:
        """The planned runs that still need running, in their order: those whose status is not
        in :data:`schemas.DONE_STATUSES` (absent, running/killed, interrupted, failed)."""
        statuses = self.statuses([p.run_id for p in planned])
        return [p for p in planned if statuses.get(p.run_id) not in DONE_STATUSES]

    def attempt(self, run_id: str) -> contextlib.AbstractContextManager[Attempt]:
        """Start a new attempt at ``run_id``: delete the leftover of an earlier one (which did not
        finish: the caller has checked :meth:`status`) and yield where and how to write it."""
        raise NotImplementedError


class LocalRunDirs(RunDirs):
    """Run directories in a local (or shared) folder."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)

    @property
    def location(self) -> Path:
        return self.out

    def status(self, run_id: str) -> str | None:
        p = self.out / run_id / "run.json"
        try:
            status = json.loads(p.read_text("utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            return None
        return status if isinstance(status, str) else None

    @contextlib.contextmanager
    def attempt(self, run_id: str) -> Iterator[Attempt]:
        leftover = self.out / run_id
        if leftover.exists():
            shutil.rmtree(leftover)
        self.out.mkdir(parents=True, exist_ok=True)
        yield Attempt(self.out)


class RemoteRunDirs(RunDirs):
    """Run directories under an object-store URL (``s3://bucket/prefix``); needs the ``[s3]`` extra."""

    remote = True

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = storage_options

    @property
    def location(self) -> str:
        return self.url

    def check(self) -> None:
        from runner.storage import filesystem

        filesystem(self.url, self.storage_options)  # names the [s3] extra when fsspec/s3fs are missing

    def status(self, run_id: str) -> str | None:
        from runner.storage import remote_run_status

        return remote_run_status(self.url, run_id, storage_options=self.storage_options)

    def statuses(self, run_ids: Sequence[str]) -> dict[str, str | None]:
        from runner.storage import remote_statuses

        # one listing + one batch of reads of the bucket, not one request per run
        found = remote_statuses(self.url, list(run_ids), storage_options=self.storage_options)
        return {r: found.get(r) for r in run_ids}

    @contextlib.contextmanager
    def attempt(self, run_id: str) -> Iterator[Attempt]:
        from runner.storage import RemoteRunDir, filesystem

        fs, root = filesystem(self.url, self.storage_options)
        remote = RemoteRunDir(fs, root, run_id)
        where = f"{self.url.rstrip('/')}/{run_id}"
        try:
            remote.remove()  # the leftover of an attempt that did not finish
        except OSError as exc:
            raise StorageError(f"{where}: cannot delete the old attempt: {exc}") from exc
        base = os.environ.get(STAGING_ENV) or None
        if base:
            Path(base).mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix="stabstat-stage-", dir=base)
        try:
            yield _MirroredAttempt(Path(staging), remote, f"{self.url}/{run_id}")
        except OSError as exc:  # the first run.json could not be written there: bucket, rights, endpoint
            raise StorageError(f"{where}: cannot write: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class _MirroredAttempt(Attempt):
    """A remote attempt: trains in local staging, each file mirrored to the remote run directory."""

    def __init__(self, staging: Path, remote: Any, url: str) -> None:
        super().__init__(staging, self._make_logger)
        self._remote = remote
        self._url = url
        self._made: list[Any] = []

    def _make_logger(self, out_dir: Any, run_id: str, config: Mapping[str, Any], **kwargs: Any) -> Any:
        from runner.storage import MirroredRunLogger

        logger = MirroredRunLogger(out_dir, run_id, config, remote=self._remote, **kwargs)
        self._made.append(logger)
        return logger

    def result(self, status: str) -> str:
        """``failed`` when the logger could not start or the last upload did not go through
        (the remote run then reads as interrupted and the next submission redoes it)."""
        if not self._made:  # the logger could not even start (e.g. the bucket is not writable)
            return "failed"
        if self._made[0].upload_error is not None:
            print(f"{self._url}: upload failed: {self._made[0].upload_error}", file=sys.stderr)
            return "failed"
        return status
