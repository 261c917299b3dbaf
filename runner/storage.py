"""Run directories on object storage (``s3://bucket/prefix``, any fsspec URL) for the runner.

A run still trains into a local *staging* directory with :class:`runner.logwriter.RunLogger`
(atomic renames, fsync, compaction: all of that needs a real file system). This module mirrors
each file to the remote run directory ``<url>/<run_id>/`` as soon as the logger has written it:

* after every flush: the new part files ``<table>.parts/part-<n>.parquet``, then ``run.json``
  (the heartbeat);
* at the finish: the compacted ``<table>.parquet`` files, then the final ``run.json``, then the
  remote part files are deleted (readers ignore leftover parts next to a compacted file).

Each file becomes one object written with a single PUT, and S3 objects are atomic, so a job
killed at any moment leaves only whole objects: at worst a ``run.json`` that still says
``running`` with an old heartbeat, which readers take as ``interrupted`` and the next
submission of the sweep redoes.

This module is the object-store side only: the mirroring logger and the reading of remote
statuses. Deciding local or remote, resuming, the staging folder and one attempt at a run are
:mod:`runner.rundirs` (``RunDirs.for_out(url)``), which :func:`runner.train.run_planned` uses.

Endpoint and credentials come from the usual places -- ``AWS_ENDPOINT_URL`` (S3-compatible
stores such as MinIO or Ceph), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_PROFILE`` -- or from ``storage_options`` passed to fsspec (e.g.
``{"endpoint_url": "http://minio:9000"}``). Worker processes inherit the environment, so a
launcher needs nothing else. Needs the ``[s3]`` extra (fsspec, s3fs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError
from stabstat.remote import filesystem as _filesystem

__all__ = [
    "MirroredRunLogger",
    "RemoteRunDir",
    "download_run",
    "filesystem",
    "remote_run_status",
    "remote_statuses",
]


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, root path without scheme)`` for ``url``.

    Raises :class:`~stabstat.errors.MissingExtraError` naming the ``[s3]`` extra when fsspec or
    (for ``s3://``) s3fs is missing.
    """
    return _filesystem(url, storage_options, feature=f"writing runs to {url}")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


class RemoteRunDir:
    """One remote run directory ``<root>/<run_id>`` and the files already copied there."""

    def __init__(self, fs: Any, root: str, run_id: str) -> None:
        self.fs = fs
        self.path = _join(root, run_id)
        self._sent: dict[str, tuple[int, int]] = {}  #: relative path -> (mtime_ns, size) sent

    def put(self, local_dir: Path, rel: str, *, force: bool = False) -> bool:
        """Upload ``local_dir/rel`` to ``<run dir>/rel`` unless that version was sent already.
        Returns False when the local file vanished (a part compacted away meanwhile)."""
        src = local_dir / rel
        try:
            st = src.stat()
        except FileNotFoundError:
            return False
        key = (st.st_mtime_ns, st.st_size)
        if not force and self._sent.get(rel) == key:
            return True
        self.fs.put_file(str(src), _join(self.path, rel))
        self._sent[rel] = key
        return True

    def delete_parts(self, table_dirs: Sequence[str]) -> None:
        """Remove remote ``<table>.parts/`` folders (after the compacted tables are up)."""
        for d in table_dirs:
            rels = [r for r in self._sent if r.startswith(d + "/")]
            if rels:
                self.fs.rm([_join(self.path, r) for r in rels])
                for r in rels:
                    del self._sent[r]

    def remove(self) -> None:
        """Delete the whole remote run directory (a leftover of an attempt that did not finish)."""
        try:
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass
        self._sent.clear()


def _mirrored_logger_class() -> type:
    """The RunLogger subclass, built lazily so importing this module needs no pyarrow."""
    from runner.logwriter import RunLogger

    class _Mirrored(RunLogger):
        """A :class:`~runner.logwriter.RunLogger` that copies every file it writes to a
        :class:`RemoteRunDir` right after writing it (see the module docstring for the order)."""

        def __init__(self, out_dir: Any, run_id: str, config: Mapping[str, Any], *,
                     remote: RemoteRunDir, **kwargs: Any) -> None:
            self._remote = remote
            self.upload_error: str | None = None
            super().__init__(out_dir, run_id, config, **kwargs)
            self._push(final=False)  # the run.json that claims the remote slot

        def _push(self, *, final: bool) -> None:
            d = self.run_dir
            tables = self._schema.tables
            if final:
                files = [t.filename for t in tables if (d / t.filename).exists()]
            else:
                files = [
                    f"{t.parts_dir}/{p.name}"
                    for t in tables if (d / t.parts_dir).is_dir()
                    for p in sorted((d / t.parts_dir).glob("part-*.parquet"))
                ]
            for rel in files:
                self._remote.put(d, rel)
            # run.json last: when it says final, every table it describes is already up.
            self._remote.put(d, "run.json", force=True)
            if final:
                self._remote.delete_parts([t.parts_dir for t in tables])

        def flush(self) -> None:
            super().flush()
            self._push(final=False)

        def set_task(self, task: Mapping[str, Any]) -> None:
            super().set_task(task)
            self._remote.put(self.run_dir, "run.json", force=True)

        def finish(self, status: str = "completed", error: str | None = None) -> None:
            super().finish(status, error)  # local first: the staging copy is always complete
            try:
                self._push(final=True)
            except Exception as exc:  # network, permissions: the remote run stays "running"
                self.upload_error = f"{type(exc).__name__}: {exc}"

    return _Mirrored


def MirroredRunLogger(out_dir: Any, run_id: str, config: Mapping[str, Any], *,  # noqa: N802
                      remote: RemoteRunDir, **kwargs: Any) -> Any:
    """A RunLogger writing ``out_dir/run_id`` (local staging) and mirroring it to ``remote``."""
    return _mirrored_logger_class()(out_dir, run_id, config, remote=remote, **kwargs)


# --------------------------------------------------------------------------------------------
# Statuses and run directories read from the remote (resume: runner.rundirs)
# --------------------------------------------------------------------------------------------


def remote_statuses(url: str, run_ids: Sequence[str] | None = None, *,
                    storage_options: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    """``run_id -> status`` written in each ``<url>/<run_id>/run.json`` (None: unreadable).

    One listing of the prefix plus one concurrent batch of reads, so it stays fast for
    thousands of runs. Runs without a ``run.json`` are absent from the result.
    """
    fs, root = filesystem(url, storage_options)
    fs.invalidate_cache()  # other processes write here: never trust a cached listing
    if not fs.exists(root):
        return {}
    wanted = None if run_ids is None else set(run_ids)
    paths = {}
    # one recursive listing (paginated), not one request per run directory
    for p in fs.find(root):
        rel = p[len(root):].strip("/") if p.startswith(root) else p
        parts = rel.split("/")
        if len(parts) == 2 and parts[1] == "run.json" and (wanted is None or parts[0] in wanted):
            paths[parts[0]] = p
    if not paths:
        return {}
    blobs = fs.cat(list(paths.values()), on_error="return")
    out: dict[str, str | None] = {}
    for run_id, p in paths.items():
        blob = blobs.get(p) if isinstance(blobs, dict) else None
        status = None
        if isinstance(blob, bytes):
            try:
                s = json.loads(blob).get("status")
                status = s if isinstance(s, str) else None
            except (ValueError, AttributeError):
                status = None
        out[run_id] = status
    return out


def remote_run_status(url: str, run_id: str, *,
                      storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The status in ``<url>/<run_id>/run.json``; None when absent or unreadable."""
    fs, root = filesystem(url, storage_options)
    try:
        blob = fs.cat_file(_join(root, run_id, "run.json"))
        status = json.loads(blob).get("status")
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def download_run(url: str, run_id: str, dest: str | os.PathLike[str], *,
                 storage_options: Mapping[str, Any] | None = None) -> Path:
    """Copy ``<url>/<run_id>/`` to ``dest/<run_id>/`` (for inspection with local tools)."""
    fs, root = filesystem(url, storage_options)
    src = _join(root, run_id)
    if not fs.exists(_join(src, "run.json")):
        raise InputFormatError(f"{url.rstrip('/')}/{run_id}/run.json: not found")
    target = Path(dest) / run_id
    fs.get(src + "/", str(target) + "/", recursive=True)
    return target
