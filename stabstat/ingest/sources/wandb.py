"""Weights & Biases run folders (``wandb/run-<date>_<time>-<id>/``, ``offline-run-*``): the
reader and the ``wandb`` adapter.

What a run folder holds depends on the client. Since ~0.10 the full per-step history is only
in the binary transaction log ``run-<id>.wandb`` (LevelDB-log framed protobuf ``Record``\\ s);
online runs also get ``files/config.yaml``, ``files/wandb-summary.json`` and
``files/wandb-metadata.json`` from their sender (an offline run of wandb 0.29 has none of them:
only the log, ``files/requirements.txt`` and ``logs/``; its config, summary and environment are
records of the log). Older clients
wrote ``wandb-history.jsonl`` (one JSON object per ``wandb.log`` call), with or without the
``files/`` folder. The log is read with the ``wandb`` package's own record reader
(``wandb.sdk.internal.datastore``; ``pip install 'stabstat[wandb]'``, which pins a ``wandb``
that still ships it: it was removed in 0.30), never the network and never a login.

==============================================  =============================================
W&B                                             stabstat
==============================================  =============================================
folder name ``...-<id>``, record ``run.run_id``  ``run_id`` (the W&B run id)
``config.yaml`` ``key: {value: V}``; config      factors (``_wandb`` and other ``_`` keys
records of the log (``value_json``)              dropped; ``config.yaml`` over the log)
history rows: ``_step``                          ``step``
history keys                                     by :func:`stabstat.ingest.tags.map_tag`
                                                 (``train/loss`` -> ``steps.loss``,
                                                 ``eval/accuracy`` -> ``evals`` eval/accuracy);
                                                 nested keys joined with ``.``; non-numbers
                                                 (media, tables) skipped, named in a note
``_timestamp`` (Unix s)                          ``steps.wall_time`` (s since the run's start)
``wandb-summary.json`` (bare ``NaN``/            final values: ``evals`` rows at the last step,
``Infinity`` accepted)                           only when the run has no history at all
``wandb-metadata.json``                          ``environment`` (python, host, program, gpu)
``run.start_time`` / ``startedAt``               ``started_at``
exit record: code 0 / other / none               ``completed`` / ``failed`` (the code in
                                                 ``error``) / ``interrupted`` (the process
                                                 died: a crash keeps what it logged)
a non-finite training loss                       ``diverged``
==============================================  =============================================

``latest-run`` (a link, or on Windows a copy of the newest run folder) duplicates a run: the
walker does not follow links, a copy named ``latest-run`` beside its run is not claimed, and a
user-given ``latest-run`` resolves to its run, so each run is counted once. A log cut
mid-record (a crash or a run still writing) keeps the records before the damage
(``interrupted``, the error names the file); a file that is not a W&B log at all is rejected.

W&B's exported CSVs (the runs table of a project, or a metric's history from a chart's
"Download CSV") are read by the ``table`` format (:mod:`stabstat.ingest.sources.table`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError, MissingExtraError, StabstatError, require
from stabstat.ingest.source import PrepareOptions, Reject, RunInput
from stabstat.ingest.tags import (
    Collector,
    RunRecord,
    Target,
    base_config,
    files_fingerprint,
    iso_time,
    run_status,
)
from stabstat.rundir import parse_timestamp

__all__ = ["WandbSource", "is_wandb_run_dir", "read_wandb_run", "wandb_logs"]

#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one.
READER_VERSION = 1
_FEATURE = "Reading W&B .wandb run logs"
_RUN_DIR_RE = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")
_SIDE_FILES = ("config.yaml", "wandb-summary.json", "wandb-metadata.json", "wandb-history.jsonl")


def wandb_logs(d: Path) -> list[Path]:
    """The ``run-<id>.wandb`` transaction logs of run folder ``d`` (a resumed run may have several)."""
    try:
        return sorted(f for f in d.iterdir() if f.suffix == ".wandb" and f.name.startswith("run-") and f.is_file())
    except OSError:
        return []


def _side(d: Path, name: str) -> Path | None:
    """``files/<name>``, or ``<name>`` in the run folder itself (older layout), if present."""
    for f in (d / "files" / name, d / name):
        if f.is_file():
            return f
    return None


def is_wandb_run_dir(d: Path) -> bool:
    """A W&B run folder: named ``run-<date>_<time>-<id>`` / ``offline-run-...`` and holding a
    ``.wandb`` log, or (older clients, online runs) ``config.yaml``/``wandb-summary.json``/
    ``wandb-history.jsonl`` in ``files/`` or beside."""
    if not _RUN_DIR_RE.match(d.name) or not d.is_dir():
        return False
    return bool(wandb_logs(d)) or any(_side(d, n) for n in _SIDE_FILES)


@dataclass
class _Read:
    """Everything one run's files said, before it becomes a :class:`RunRecord`."""

    run_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    start: float | None = None  #: Unix s
    end: float | None = None
    exit_code: int | None = None
    history_rows: int = 0
    skipped: set[str] = field(default_factory=set)
    damage: list[str] = field(default_factory=list)


def _loads(text: str) -> Any:
    """JSON with W&B's bare ``NaN``/``Infinity``/``-Infinity`` (Python's json accepts them)."""
    return json.loads(text)


def _key(item: Any) -> str:
    """A history/summary/config item's key: ``key``, or ``nested_key`` parts joined with ``.``."""
    return item.key if item.key else ".".join(item.nested_key)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _add_row(row: Mapping[str, Any], collector: Collector, read: _Read) -> None:
    """One history row (``_step``, ``_timestamp``, metrics) -> ``collector``."""
    step = row.get("_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return
    ts = _number(row.get("_timestamp"))
    read.history_rows += 1
    for key, value in row.items():
        if key.startswith("_"):
            continue
        number = _number(value)
        if number is None:
            read.skipped.add(key)
            continue
        collector.add(key, step, number, ts)
    if ts is not None:
        read.end = ts if read.end is None else max(read.end, ts)


def _records(path: Path, read: _Read) -> Iterator[Any]:
    """The protobuf records of one ``.wandb`` log, damage noted in ``read`` (records before
    it are kept).

    Raises
    ------
    InputFormatError
        The file is not a W&B log (bad header) or cannot be opened.
    MissingExtraError
        ``wandb`` is missing or has no record reader.
    """
    require("wandb", "wandb", _FEATURE)
    try:
        from wandb.proto import wandb_internal_pb2
        from wandb.sdk.internal import datastore
    except ImportError:
        raise MissingExtraError(f"{_FEATURE} needs wandb's record reader (wandb.sdk.internal.datastore, "
                                "removed in wandb 0.30): pip install 'stabstat[wandb]'") from None
    ds = datastore.DataStore()
    try:
        ds.open_for_scan(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises bare Exception/AssertionError
        raise InputFormatError(f"{path}: not a W&B run log ({exc or 'bad header'}); delete it, or "
                               "re-create it with `wandb sync`-able files from the run") from None
    n = 0
    try:
        while True:
            try:
                data = ds.scan_data()
            except Exception as exc:  # noqa: BLE001 - AssertionError on CRC/length, struct.error
                read.damage.append(f"{path}: damaged after {n} records ({exc or 'cut mid-record'}); "
                                   "the records before it are kept")
                return
            if data is None:
                return
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            try:
                record.ParseFromString(data)
            except Exception:  # noqa: BLE001 - DecodeError
                read.damage.append(f"{path}: record {n + 1} is not a W&B record; the records before it are kept")
                return
            n += 1
            yield record
    finally:
        if ds._fp is not None:
            ds._fp.close()


def _read_log(path: Path, collector: Collector, read: _Read) -> None:
    """Run, config, history, summary, environment and exit records of one log -> ``read``."""
    for record in _records(path, read):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                row[_key(item)] = _loads(item.value_json)
            _add_row(row, collector, read)
        elif kind == "run":
            run = record.run
            read.run_id = run.run_id or read.run_id
            if run.HasField("start_time"):
                read.start = run.start_time.seconds + run.start_time.nanos / 1e9
            for item in run.config.update:
                read.config[_key(item)] = _loads(item.value_json)
            read.environment.update({"project": run.project or None, "entity": run.entity or None,
                                     "run_name": run.display_name or None, "group": run.run_group or None,
                                     "job_type": run.job_type or None, "wandb_tags": list(run.tags)})
        elif kind == "config":
            for item in record.config.update:
                read.config[_key(item)] = _loads(item.value_json)
            for item in record.config.remove:
                read.config.pop(_key(item), None)
        elif kind == "summary":
            for item in record.summary.update:
                read.summary[_key(item)] = _loads(item.value_json)
        elif kind == "exit":
            read.exit_code = int(record.exit.exit_code)
        elif kind == "environment":
            env = record.environment
            read.environment.update({k: v for k, v in (("python", env.python), ("host", env.host),
                                                       ("os", env.os), ("program", env.program)) if v})


def _read_jsonl(path: Path, collector: Collector, read: _Read) -> None:
    """Older clients' ``wandb-history.jsonl``: one row per line (train and val keys alternate)."""
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except json.JSONDecodeError:
            read.damage.append(f"{path}: line {n} is not JSON (cut by a crash?); the lines before it are kept")
            return
        if isinstance(row, dict):
            _add_row(row, collector, read)


def _read_side_files(d: Path, read: _Read, files: list[Path]) -> None:
    """``config.yaml`` (``{value: ...}`` unwrapped), ``wandb-summary.json``, ``wandb-metadata.json``."""
    cfg = _side(d, "config.yaml")
    if cfg is not None:
        yaml = require("yaml", "wandb", _FEATURE)
        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputFormatError(f"{cfg}: not valid YAML ({str(exc).splitlines()[0]}); fix or delete it") from None
        for key, entry in (data or {}).items():
            read.config[str(key)] = entry.get("value") if isinstance(entry, dict) and "value" in entry else entry
        files.append(cfg)
    summary = _side(d, "wandb-summary.json")
    if summary is not None:
        try:
            data = _loads(summary.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{summary}: not valid JSON ({exc}); fix or delete it") from None
        if isinstance(data, dict):
            read.summary.update(data)
        files.append(summary)
    meta = _side(d, "wandb-metadata.json")
    if meta is not None:
        try:
            data = _loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{meta}: not valid JSON ({exc}); fix or delete it") from None
        if isinstance(data, dict):
            read.environment.update({k: data[k] for k in ("python", "host", "os", "program", "gpu", "gpu_count",
                                                         "cpu_count", "args") if k in data})
            if read.start is None and isinstance(data.get("startedAt"), str):
                with contextlib.suppress(ValueError):  # an unreadable date: started_at stays unknown
                    read.start = parse_timestamp(data["startedAt"]).timestamp()
        files.append(meta)


def _summary_rows(read: _Read, collector: Collector) -> None:
    """A run with no history: its summary's numbers as final values at its last step."""
    step = read.summary.get("_step")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0
    for key, value in read.summary.items():
        number = _number(value)
        if key.startswith("_") or number is None:
            continue
        collector.add(key, step, number)


def _status(read: _Read, collector: Collector, has_log: bool) -> tuple[str, str | None]:
    damage = "; ".join(read.damage) or None
    status, error = run_status(collector.losses, points=collector.points, damage=damage)
    if status in ("diverged", "interrupted") or not has_log:
        return status, error
    if read.exit_code is None:
        return "interrupted", "the log has no exit record: the process died (crash, kill) or is still running"
    if read.exit_code != 0:
        return "failed", f"the run exited with code {read.exit_code}"
    return ("completed", None) if collector.points else (status, error)


def read_wandb_run(
    run_dir: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    tag_map: Mapping[str, Target] | None = None,
) -> RunRecord:
    """Read one W&B run folder (see the module docstring for the mapping).

    Parameters
    ----------
    run_dir
        ``wandb/run-<date>_<time>-<id>/`` or ``wandb/offline-run-...``.
    params
        ``--param`` factors, over every other source.
    tag_map
        ``--map`` rules (:func:`stabstat.ingest.tags.parse_map`).

    Raises
    ------
    InputFormatError
        Not a run folder, a ``.wandb`` file that is not a W&B log, or a malformed side file.
    MissingExtraError
        ``wandb`` (with its record reader) or PyYAML is not installed.
    """
    d = Path(run_dir)
    m = _RUN_DIR_RE.match(d.name)
    if m is None or not is_wandb_run_dir(d):
        raise InputFormatError(f"{d}: not a W&B run folder (run-<date>_<time>-<id>/ holding a run-<id>.wandb "
                               "log or files/config.yaml)")
    collector, read = Collector(tag_map), _Read()
    logs = wandb_logs(d)
    files: list[Path] = list(logs)
    for log in logs:
        _read_log(log, collector, read)
    history = _side(d, "wandb-history.jsonl")
    if history is not None and not read.history_rows:
        _read_jsonl(history, collector, read)
        files.append(history)
    _read_side_files(d, read, files)
    if not read.history_rows and read.summary:
        _summary_rows(read, collector)
    run_id = read.run_id or m.group("id")
    config, task, side_files = base_config(d)
    config.update({k: v for k, v in read.config.items() if not k.startswith("_")})
    config.update(params or {})
    status, error = _status(read, collector, bool(logs))
    task["metrics"] = collector.metrics()
    notes = list(collector.notes)
    if read.skipped:
        notes.append(f"skipped non-numeric history keys (media, tables, text): {', '.join(sorted(read.skipped)[:8])}")
    summary = {k: v if not isinstance(v, float) or math.isfinite(v) else str(v)
               for k, v in read.summary.items() if not k.startswith("_") and (_number(v) is not None or isinstance(v, str))}
    environment = {"source": "W&B run folder", "files": [str(f) for f in files], "tags": collector.tag_summary(),
                   "summary": summary, **{k: v for k, v in read.environment.items() if v not in (None, [])}}
    return RunRecord(
        run_id=run_id, source=str(d), source_format=WandbSource.name, status=status, error=error,
        config=config, task=task, environment=environment, tables=collector.tables(run_id, read.start),
        files=files + side_files, notes=notes + ([e for e in read.damage if e != error]),
        started_at=iso_time(read.start), finished_at=iso_time(read.end) if status != "running" else None,
    )


class WandbSource:
    """Source adapter for W&B run folders (``--format wandb``).

    A ``run-<date>_<time>-<id>`` / ``offline-run-...`` folder holding a ``.wandb`` log or the
    side files is a run (strength 2). A file inside it given by the user (the ``.wandb`` log,
    ``files/config.yaml``) belongs to it; ``latest-run`` given by the user resolves to its run.
    """

    name: str = "wandb"
    marker_files: tuple[str, ...] = ("wandb/run-*/run-*.wandb",)

    def detect(self, path: Path) -> int:
        return 2 if is_wandb_run_dir(path) else 0

    def locate(self, path: Path) -> Path | None:
        if path.name == "latest-run" and path.is_dir():
            real = path.resolve()
            return real if is_wandb_run_dir(real) else None
        for d in (path.parent, path.parent.parent):
            if path.is_file() and is_wandb_run_dir(d) and (path.suffix == ".wandb" or path.name in _SIDE_FILES):
                return d
        return None

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        tag_map = dict(getattr(options, "tag_map", {}) or {})
        try:
            record = read_wandb_run(path, params=options.params, tag_map=tag_map)
        except (StabstatError, OSError) as exc:
            raise Reject(str(exc)) from None
        fp = files_fingerprint(f"{self.name}/{READER_VERSION}", path, {**options.params, **{
            f"--map {k}": v.describe() for k, v in tag_map.items()}}, record.files)
        return record.to_run_input(fp)

