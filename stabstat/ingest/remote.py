"""Run directories in object storage (``s3://bucket/prefix``, any fsspec URL) for the analysis side.

``stabstat ingest s3://bucket/prefix`` lists every ``<run_id>/run.json`` under the prefix (one
recursive listing), mirrors those run directories into a local cache folder -- downloading only
objects that are new or changed, with each file's modification time set to the object's, and
deleting local copies of objects that are gone -- and then runs the ordinary ingest
(:func:`stabstat.ingest.ingest`) on the mirror. So everything a local ingest does holds for a bucket too: the same validation, the same
idempotence (an unchanged object gives an unchanged fingerprint, so a second ingest reports
"unchanged"), and a corrupt object is reported as one line naming its ``s3://`` URL while the
good runs are ingested. The ``source`` column of ``runs`` records the URL, not the cache path.

Why a mirror rather than DuckDB reading the bucket: DuckDB's httpfs extension is not always
installable (offline clusters), and the validation before loading reads Parquet footers and
``run.json`` files; a cache makes a re-ingest of a large bucket download only what changed.

Endpoint and credentials: the standard AWS environment (``AWS_ENDPOINT_URL`` for S3-compatible
stores such as MinIO/Ceph/R2, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``),
or ``storage_options`` (passed to fsspec, e.g. ``{"endpoint_url": "http://127.0.0.1:9000"}``;
``stabstat ingest --s3-endpoint URL``). The cache folder is ``$STABSTAT_CACHE_DIR`` or
``~/.cache/stabstat/remote``. Needs the ``[s3]`` extra (fsspec, s3fs); no torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabstat.errors import InputFormatError, StorageError
from stabstat.ingest.batch import ingest
from stabstat.ingest.sources.mlflow_server import is_mlflow_url, mirror_mlflow
from stabstat.remote import filesystem, is_remote, url_of
from stabstat.store.load import IngestReport, Rejection

if TYPE_CHECKING:
    from stabstat.store.queries import Store

__all__ = [
    "CACHE_ENV",
    "Mirror",
    "clear_cache",
    "default_cache_dir",
    "ingest_paths",
    "list_runs",
    "mirror",
]

CACHE_ENV = "STABSTAT_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat/remote`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stabstat" / "remote"


def _hidden(rel: str) -> bool:
    # dot-folders (submitit logs, temp files) and anything below them are not runs
    return any(part.startswith(".") for part in rel.split("/")[:-1])


def list_runs(url: str, *, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """URLs of the run directories under ``url`` (folders holding a ``run.json``), sorted.

    Raises :class:`~stabstat.errors.InputFormatError` if nothing exists under ``url``.
    """
    fs, root = filesystem(url, storage_options)
    return [url_of(fs, f"{root}/{rel}" if rel else root) for rel in _objects(fs, root, url)[1]]


def _objects(fs: Any, root: str, url: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(relative key -> info) of every object under root, and the relative run dirs."""
    fs.invalidate_cache()  # writers may be adding objects right now
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    except OSError as exc:  # permissions, unknown bucket, endpoint down
        raise StorageError(f"{url}: cannot list: {exc}") from exc
    objs: dict[str, dict[str, Any]] = {}
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = path[len(root):].lstrip("/") if path.startswith(root) else path
        if rel == "" and path.endswith("run.json"):  # the URL names one run.json
            rel = "run.json"
        objs[rel] = info
    if not objs:
        raise InputFormatError(f"{url}: no such prefix (no objects under it)")
    run_dirs = sorted({
        rel.rsplit("/", 1)[0] if "/" in rel else ""
        for rel in objs
        if rel.split("/")[-1] == "run.json" and not _hidden(rel)
    })
    return objs, run_dirs


def _mtime_ns(info: Mapping[str, Any]) -> int | None:
    """The object's modification time (ns) from fsspec's info, if it has one."""
    from datetime import datetime

    for key in ("LastModified", "last_modified", "mtime", "updated", "modified"):
        v = info.get(key)
        if isinstance(v, datetime):
            return int(v.timestamp() * 1e9)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(float(v) * 1e9)
        if isinstance(v, str):
            try:
                return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return None


@dataclass
class Mirror:
    """A remote prefix mirrored to ``local``; ``run_dirs`` maps local run dir -> its URL."""

    url: str
    local: Path
    run_dirs: dict[Path, str] = field(default_factory=dict)
    downloaded: int = 0  #: objects fetched by this sync (new or changed)

    def to_url(self, text: str) -> str:
        """Replace cache paths in ``text`` (a message) by the objects' URLs."""
        root = str(self.local)
        if root not in text:
            return text
        base = self.url.rstrip("/")
        return re.sub(re.escape(root) + r"(/[^\s:'\"]*)?", lambda m: base + (m.group(1) or ""), text)


def mirror(url: str, *, cache_dir: str | os.PathLike[str] | None = None,
           storage_options: Mapping[str, Any] | None = None) -> Mirror:
    """Mirror the run directories under ``url`` into ``cache_dir/<scheme>/<bucket/prefix>``.

    Downloads objects that are missing locally or differ in size or modification time (one
    concurrent batch), deletes local files whose objects are gone, and drops cached run
    directories that no longer exist remotely. Objects outside run directories are ignored.
    """
    fs, root = filesystem(url, storage_options)
    objs, run_dirs = _objects(fs, root, url)
    proto = url.split("://", 1)[0].lower()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # one folder per URL; a hash keeps distinct endpoints with the same bucket name apart
    tag = hashlib.sha256(repr((url, sorted((storage_options or {}).items(), key=str),
                               os.environ.get("AWS_ENDPOINT_URL"))).encode()).hexdigest()[:8]
    local = base / proto / f"{root.replace('/', '_')}-{tag}"
    local.mkdir(parents=True, exist_ok=True)
    local = local.resolve()  # the store records resolved paths; keep one spelling
    m = Mirror(url=url.rstrip("/"), local=local)

    run_set = set(run_dirs)

    def in_run(rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:i]) in run_set for i in range(len(parts)))

    wanted = {rel: info for rel, info in objs.items() if in_run(rel)}
    # local files of cached runs that no longer exist remotely
    for d in run_dirs:
        m.run_dirs[local / d if d else local] = f"{m.url}/{d}" if d else m.url
    for p in sorted(local.rglob("*"), reverse=True):
        rel = p.relative_to(local).as_posix()
        if p.is_file() and rel not in wanted:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()

    get_remote, get_local, times = [], [], []
    for rel, info in sorted(wanted.items()):
        dest = local / rel
        mt = _mtime_ns(info)
        size = info.get("size")
        if dest.is_file():
            st = dest.stat()
            if st.st_size == size and (mt is None or st.st_mtime_ns == mt):
                continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        get_remote.append(f"{root}/{rel}" if rel else root)
        get_local.append(str(dest))
        times.append(mt)
    if get_remote:
        try:
            fs.get(get_remote, get_local)  # one concurrent batch
        except FileNotFoundError:
            # an object vanished since the listing (a finishing run deletes its part files):
            # fetch one by one and skip the missing; the next ingest sees the finished run
            for src, dest_s in zip(get_remote, get_local, strict=True):
                try:
                    fs.get_file(src, dest_s)
                except FileNotFoundError:
                    Path(dest_s).unlink(missing_ok=True)
                except OSError as exc:
                    raise StorageError(f"{url}: download of {url_of(fs, src)} failed: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"{url}: download failed: {exc}") from exc
        for dest_s, mt in zip(get_local, times, strict=True):
            if mt is not None and os.path.exists(dest_s):
                os.utime(dest_s, ns=(mt, mt))
    m.downloaded = len(get_remote)
    return m


def ingest_paths(
    store: Store,
    paths: Sequence[str | os.PathLike[str]] | Iterable[str | os.PathLike[str]],
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_rejected: Any = None,
    **kwargs: Any,
) -> IngestReport:
    """:func:`stabstat.ingest.ingest` for local paths and remote URLs alike.

    Each URL is mirrored first (:func:`mirror`); rejection messages and the ``source`` of
    ingested runs then name the ``s3://`` objects, not the cache. ``kwargs`` go to
    :func:`~stabstat.ingest.ingest` (fmt, params, progress, validate, ...).
    """
    texts: list[str] = [os.fspath(p) for p in paths]
    mirrors: list[Mirror] = []
    local_paths: list[str] = []
    for text in texts:
        if is_remote(text):  # mlflow+http://: an MLflow server's runs mirrored as a local file store
            m = (Mirror(url=text, local=mirror_mlflow(text, cache_dir=cache_dir or default_cache_dir()))
                 if is_mlflow_url(text) else mirror(text, cache_dir=cache_dir, storage_options=storage_options))
            mirrors.append(m)
            local_paths.append(str(m.local))
        else:
            local_paths.append(text)
    if not mirrors:
        return ingest(store, local_paths, on_rejected=on_rejected, **kwargs)

    def rewrite(text: str) -> str:
        for m in mirrors:
            text = m.to_url(text)
        return text

    def rejected(rej: Rejection) -> None:
        if on_rejected is not None:
            on_rejected(Rejection(rewrite(rej.source), rewrite(rej.message)))

    try:
        report = ingest(store, local_paths, on_rejected=rejected if on_rejected else None, **kwargs)
    except InputFormatError as exc:
        raise InputFormatError(rewrite(str(exc))) from exc
    report.rejected = [Rejection(rewrite(r.source), rewrite(r.message)) for r in report.rejected]
    report.notes = [rewrite(n) for n in report.notes]
    # the runs' provenance is the bucket, not this machine's cache
    for m in mirrors:
        for table in ("runs", "ingests"):
            store.con.execute(
                f"UPDATE {table} SET source = ? || substr(source, ?) WHERE starts_with(source, ?)",
                [m.url, len(str(m.local)) + 1, str(m.local)],
            )
    return report


def clear_cache(cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete the whole mirror cache (it is rebuilt by the next remote ingest)."""
    shutil.rmtree(Path(cache_dir) if cache_dir is not None else default_cache_dir(), ignore_errors=True)
