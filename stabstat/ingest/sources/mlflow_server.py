"""MLflow tracking servers: ``stabstat ingest mlflow+http://host:port/#experiment=NAME``.

The URL is the server's tracking URI with ``mlflow+`` in front (``mlflow+https://`` too) and
the experiments to read in the fragment: ``#experiment=NAME`` (repeat with ``&`` for several,
``#experiment=a&experiment=b``) or ``#experiment_id=ID``; no fragment reads every experiment.
Credentials are the client's own (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``).

The runs are fetched with the official client (``mlflow-skinny``: ``pip install
'stabstat[mlflow]'``): ``MlflowClient.search_runs`` (deleted runs included, so they are
counted like a file store's) and ``get_metric_history`` per metric, and written into a local
mirror in the file-store layout (``<cache>/mlflow/<host_port>-<hash>/<experiment_id>/<run_id>/``)
that :mod:`stabstat.ingest.sources.mlflow` then reads; :func:`stabstat.ingest.remote.ingest_paths`
ingests the mirror and rewrites messages and ``runs.source`` to the URL. A file is rewritten
only when its content changed, so an unchanged run keeps its fingerprint (a second ingest
reports it unchanged), and the metric histories of a finished run whose ``end_time`` is
already mirrored are not fetched again. Runs gone from the server are removed from the mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stabstat.errors import InputFormatError, StorageError, require

__all__ = ["is_mlflow_url", "mirror_mlflow", "parse_mlflow_url"]

_SCHEMES = ("mlflow+http://", "mlflow+https://")
_FEATURE = "Reading runs from an MLflow tracking server"


def is_mlflow_url(text: str | os.PathLike[str]) -> bool:
    """True for ``mlflow+http://...`` / ``mlflow+https://...``."""
    return os.fspath(text).lower().startswith(_SCHEMES)


def parse_mlflow_url(url: str) -> tuple[str, list[str], list[str]]:
    """``(tracking_uri, experiment names, experiment ids)`` of an ``mlflow+http`` URL.

    >>> parse_mlflow_url("mlflow+http://127.0.0.1:5000/#experiment=sweep")
    ('http://127.0.0.1:5000/', ['sweep'], [])

    Raises
    ------
    InputFormatError
        Not an ``mlflow+http(s)`` URL, no host, or an unknown fragment key.
    """
    if not is_mlflow_url(url):
        raise InputFormatError(f"{url}: expected mlflow+http://host:port/#experiment=NAME")
    base, _, fragment = url[len("mlflow+"):].partition("#")
    if not urlsplit(base).netloc:
        raise InputFormatError(f"{url}: no host; expected mlflow+http://host:port/#experiment=NAME")
    names: list[str] = []
    ids: list[str] = []
    for key, value in parse_qsl(fragment, keep_blank_values=True):
        if key == "experiment" and value:
            names.append(value)
        elif key == "experiment_id" and value:
            ids.append(value)
        else:
            raise InputFormatError(f"{url}: fragment {key}={value!r}: expected #experiment=NAME or "
                                   "#experiment_id=ID (repeat with &)")
    return base, names, ids


def _write(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (an unchanged file keeps its mtime)."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _values(folder: Path, values: dict[str, str]) -> None:
    """``values`` (key -> text) as files under ``folder`` (keys with ``/`` nested, as MLflow
    does), removing files of keys that are gone."""
    for key, text in values.items():
        _write(folder / key, text)
    if folder.is_dir():
        for f in folder.rglob("*"):
            if f.is_file() and f.relative_to(folder).as_posix() not in values:
                f.unlink()


def _meta(fields: dict[str, Any]) -> str:
    """A small ``meta.yaml`` (values are plain scalars; strings quoted as JSON, which YAML reads)."""
    import json

    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())


def _experiments(client: Any, url: str, names: list[str], ids: list[str]) -> list[Any]:
    from mlflow.entities import ViewType

    if not names and not ids:
        return list(client.search_experiments(view_type=ViewType.ALL))
    found = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            have = ", ".join(sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL)))
            raise InputFormatError(f"{url}: no experiment named {name!r} on the server (it has: {have}); "
                                   "fix #experiment=NAME")
        found.append(exp)
    for exp_id in ids:
        try:
            found.append(client.get_experiment(exp_id))
        except Exception as exc:  # noqa: BLE001 - the client raises MlflowException subclasses
            raise InputFormatError(f"{url}: no experiment with id {exp_id!r} ({_first(exc)}); "
                                   "fix #experiment_id=ID") from None
    return found


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _runs(client: Any, experiment_ids: Iterable[str]) -> Iterable[Any]:
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs(list(experiment_ids), run_view_type=ViewType.ALL, max_results=1000,
                                  page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _mirror_run(client: Any, run: Any, folder: Path) -> None:
    """One run into ``folder`` in the file-store layout."""
    info, data = run.info, run.data
    meta = {"run_id": info.run_id, "run_name": info.run_name, "experiment_id": str(info.experiment_id),
            "status": info.status, "lifecycle_stage": info.lifecycle_stage, "start_time": info.start_time,
            "end_time": info.end_time, "artifact_uri": info.artifact_uri, "user_id": info.user_id}
    meta_file = folder / "meta.yaml"
    # a finished run whose end_time is already mirrored has the histories we hold
    done = info.status in ("FINISHED", "FAILED", "KILLED") and meta_file.is_file() and \
        meta_file.read_text(encoding="utf-8") == _meta(meta) and (folder / "metrics").is_dir()
    _values(folder / "params", {k: str(v) for k, v in data.params.items()})
    _values(folder / "tags", {k: str(v) for k, v in data.tags.items()})
    if not done:
        histories = {}
        for key in sorted(data.metrics):
            points = client.get_metric_history(info.run_id, key)
            histories[key] = "".join(f"{p.timestamp} {float(p.value)!r} {p.step}\n" for p in points)
        _values(folder / "metrics", histories)
    _write(meta_file, _meta(meta))  # last: a mirror cut short re-fetches this run next time


def mirror_mlflow(url: str, *, cache_dir: str | os.PathLike[str]) -> Path:
    """Mirror the experiments named by ``url`` into a local file-store folder under
    ``cache_dir/mlflow/``; returns it.

    Raises
    ------
    MissingExtraError
        The ``mlflow`` (or ``mlflow-skinny``) package is not installed.
    InputFormatError
        A malformed URL, or an experiment the server does not have.
    StorageError
        The server cannot be reached or answers with an error.
    """
    tracking_uri, names, ids = parse_mlflow_url(url)
    require("mlflow", "mlflow", _FEATURE)
    from mlflow.tracking import MlflowClient

    base = Path(cache_dir)
    host = urlsplit(tracking_uri).netloc.replace(":", "_")
    tag = hashlib.sha256(url.encode()).hexdigest()[:8]
    local = (base / "mlflow" / f"{host}-{tag}")
    local.mkdir(parents=True, exist_ok=True)
    local = local.resolve()
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        experiments = _experiments(client, url, names, ids)
        kept: set[Path] = set()
        for exp in experiments:
            exp_dir = local / str(exp.experiment_id)
            _write(exp_dir / "meta.yaml", _meta({"experiment_id": str(exp.experiment_id), "name": exp.name,
                                                 "lifecycle_stage": exp.lifecycle_stage}))
            kept.add(exp_dir)
            for run in _runs(client, [exp.experiment_id]):
                run_dir = exp_dir / run.info.run_id
                _mirror_run(client, run, run_dir)
                kept.add(run_dir)
    except InputFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection errors and MlflowException alike
        raise StorageError(f"{url}: the MLflow server at {tracking_uri} failed: {_first(exc)}; "
                           "check the host, port and credentials") from None
    for exp_dir in [p for p in local.iterdir() if p.is_dir()]:
        if exp_dir not in kept:
            shutil.rmtree(exp_dir)
            continue
        for run_dir in [p for p in exp_dir.iterdir() if p.is_dir()]:
            if run_dir not in kept:
                shutil.rmtree(run_dir)
    return local
