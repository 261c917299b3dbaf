"""MLflow file stores (``mlruns/<experiment_id>/<run_id>/``): the reader and the ``mlflow`` adapter.

The store is read directly (no MLflow package, no server): one run = one folder holding
``meta.yaml`` and ``metrics/``/``params/``/``tags/`` folders, each value one file named by its
key (a key with ``/`` is nested folders: ``params/optimizer/lr`` is the parameter
``optimizer/lr``). A tracking server is read through the official client into the same layout
(:mod:`stabstat.ingest.sources.mlflow_server`), then by this reader.

=============================================  ==============================================
MLflow                                         stabstat
=============================================  ==============================================
``meta.yaml`` ``run_id``                       ``run_id`` (MLflow's 32-hex id, unique per store)
``meta.yaml`` ``status``                       status: FINISHED -> ``completed``, FAILED ->
(1..5 in file stores, names from a server)     ``failed``, KILLED -> ``interrupted``, RUNNING /
                                               SCHEDULED -> ``running`` (``interrupted`` once
                                               the last metric is older than 600 s); any
                                               status -> ``diverged`` on a non-finite
                                               training loss
``meta.yaml`` ``start_time`` / ``end_time``    ``started_at`` / ``finished_at`` (ms -> ISO 8601)
``meta.yaml`` ``lifecycle_stage: deleted``     not ingested, not a rejection: one line each
(run or experiment)                            through ``options.inform`` (stderr in the CLI)
``params/<key>`` (text)                        factor ``<key>``, typed by :func:`param_value`
tag ``mlflow.parentRunId`` (nested runs)       factor ``parent_run_id``
experiment ``meta.yaml`` ``name``              factor ``experiment``
other tags (``mlflow.runName``, user tags)     ``environment.mlflow_tags`` in run.json
``metrics/<key>``: lines                       by :func:`stabstat.ingest.tags.map_tag`:
``<timestamp ms> <value> <step>``              ``loss``/``train_loss`` -> ``steps.loss``,
                                               ``learning_rate`` -> ``steps.lr``,
                                               ``eval_accuracy`` -> ``evals`` eval/accuracy,
                                               ``val/acc`` -> ``evals`` val/acc, ...; the
                                               timestamp -> ``steps.wall_time`` (s since the
                                               run's first training value); per column and
                                               step the newest timestamp wins
``models/m-<id>/`` (MLflow 3 logged models)    not runs: never read
``artifact_uri`` (may be a Windows path)       ``environment.artifact_uri``, as text
=============================================  ==============================================

The Hugging Face Trainer's ``MLflowCallback`` logs ``loss``, ``grad_norm``, ``learning_rate``,
``epoch`` and ``eval_<metric>`` at the global step: they map as ``trainer_state.json`` does.
Its params (every ``TrainingArguments`` field and the model config) all become factors.

Parameter values are text in MLflow; :func:`param_value` types them: ``None`` -> null,
``True``/``False`` (any case) -> bool, an integer literal -> int, a float literal
(``2e-05``, ``0.1``) -> float, anything else (``nan``, ``[1, 2]``, ``adamw``) stays text.

Errors (one line, the run rejected, other runs kept): a ``meta.yaml`` that is not YAML or has
no ``run_id``; a metric file line that is not ``timestamp value step``.

The ingest reads ``meta.yaml``, params and tags here and leaves the metric files to DuckDB
(:mod:`stabstat.ingest.sources.mlflow_sql`: every metric file of a batch in one ``read_csv``);
:func:`read_mlflow_run` is the same mapping in Python (tests, and the fallback that names a
bad line when DuckDB cannot read a file).
"""

from __future__ import annotations

import functools
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError, StabstatError, require
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, TableData
from stabstat.ingest.sources.mlflow_sql import layout_reader
from stabstat.ingest.tags import (
    Collector,
    RunRecord,
    Target,
    base_config,
    files_fingerprint,
    iso_time,
)
from stabstat.rundir import effective_status
from stabstat.store.load import JsonFiles
from stabstat.store.schema import parse_value

__all__ = ["META_FILE", "MlflowSource", "is_mlflow_run_dir", "param_value", "read_meta", "read_mlflow_run"]

META_FILE = "meta.yaml"
#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one.
READER_VERSION = 2
#: File stores write ``RunStatus`` numbers; servers (and our mirror of them) write names.
_STATUS_NAMES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
_OURS = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted",
         "RUNNING": "running", "SCHEDULED": "running"}
_VALUE_FOLDERS = ("metrics", "params", "tags")
_PARENT_TAG = "mlflow.parentRunId"


def param_value(text: str) -> Any:
    """An MLflow parameter (always text) as a typed factor value (rule in the module docstring).

    >>> [param_value(s) for s in ("2e-05", "True", "None", "3", "adamw", "nan")]
    [2e-05, True, None, 3, 'adamw', 'nan']
    """
    if text == "None":
        return None
    value = parse_value(text)
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def is_mlflow_run_dir(d: Path) -> bool:
    """A run folder of a file store: ``meta.yaml`` beside a ``metrics/``, ``params/`` or
    ``tags/`` folder, and not an MLflow 3 logged model (``models/m-<id>/``)."""
    if d.name.startswith("m-") and d.parent.name == "models":
        return False
    return (d / META_FILE).is_file() and any((d / sub).is_dir() for sub in _VALUE_FOLDERS)


#: One line of the flat ``key: value`` mapping MLflow's file store writes (``yaml.safe_dump``):
#: a value ``''``, a one-line single-quoted string, a decimal integer, ``[]``, a plain string
#: starting with a letter (other YAML 1.1 meanings excluded in :func:`_flat_yaml`), or a run id
#: (32 hex digits, at least one a letter: all digits is an integer in YAML).
_META_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): (?:'((?:[^'\n]|'')*)'|(0|-?[1-9][0-9]*)|(\[\])|"
                        r"([A-Za-z_][ -\"$-~]*?|(?=[0-9]*[a-f])[0-9a-f]{32}))\n")  # printable ASCII but '#'
#: Plain words that YAML 1.1 reads as booleans or null (any case): left to PyYAML.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _flat_yaml(text: str) -> dict[str, Any] | None:
    """``text`` parsed as MLflow writes ``meta.yaml`` (one ``key: value`` per line, the value
    forms of :data:`_META_LINE`), or None when any line is anything else: PyYAML reads it then.
    The same dict ``yaml.safe_load`` returns for the text it accepts (a test compares them);
    ~10x faster than libyaml through PyYAML's Python constructor, which was most of the
    per-run time of a large store."""
    if not text.endswith("\n"):
        text += "\n"
    out: dict[str, Any] = {}
    pos = 0
    match = _META_LINE.match
    while pos < len(text):
        m = match(text, pos)
        if m is None:
            return None
        key, quoted, integer, empty, plain = m.groups()
        if quoted is not None:
            out[key] = quoted.replace("''", "'")
        elif integer is not None:
            out[key] = int(integer)
        elif empty is not None:
            out[key] = []
        elif plain in ("null", "Null", "NULL"):  # a running run's end_time
            out[key] = None
        else:
            if plain.lower() in _YAML_WORDS or plain != plain.rstrip() or ": " in plain or plain.endswith(":"):
                return None
            out[key] = plain
        pos = m.end()
    return out if out else None


def read_meta(path: Path) -> dict[str, Any]:
    """A ``meta.yaml`` as a dict (MLflow's flat layout parsed directly, :func:`_flat_yaml`;
    anything else by ``safe_load``: no tags executed).

    Raises
    ------
    InputFormatError
        Not YAML, or not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{path}: not valid YAML ({exc}); restore it from a backup, "
                               "or delete the run folder") from None
    flat = _flat_yaml(text)
    if flat is not None:
        return flat
    yaml = require("yaml", "mlflow", "Reading MLflow stores")
    try:
        # libyaml's safe loader when PyYAML has it, else the pure one
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(f"{path}: not valid YAML ({first}); restore it from a backup, "
                               "or delete the run folder") from None
    if not isinstance(data, dict):
        raise InputFormatError(f"{path}: expected a YAML mapping of run fields (run_id, status, ...), "
                               f"got {type(data).__name__}; restore it from a backup, or delete the run folder")
    return data


def _values(folder: Path) -> list[tuple[str, Path]]:
    """``(key, file)`` of every value file under ``folder`` (keys with ``/`` are nested
    folders), sorted by key. ``os.scandir`` gives each entry's type without a ``stat`` (an
    MLflow run is a dozen small files: per-file calls are most of reading one); linked
    folders are not followed, as ``Path.rglob`` does not."""
    out: list[tuple[str, Path]] = []

    def walk(d: str, prefix: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{prefix}{e.name}/")
                elif e.is_file():
                    out.append((prefix + e.name, Path(e.path)))

    try:
        walk(str(folder), "")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(out)


@functools.lru_cache(maxsize=256)
def _experiment_cached(path: str, mtime_ns: int, size: int) -> tuple[str | None, bool]:
    """``(name, deleted)`` of an experiment's ``meta.yaml``, read once per version of the file
    (every run of an experiment names the same one)."""
    exp = read_meta(Path(path))
    name = exp.get("name")
    return (name if isinstance(name, str) else None), exp.get("lifecycle_stage") == "deleted"


def _experiment(run_dir: Path) -> tuple[str | None, bool] | None:
    """``(name, deleted)`` of the run's experiment (``<run>/../meta.yaml``), None without one.

    Raises
    ------
    InputFormatError
        A malformed experiment ``meta.yaml``.
    """
    meta = run_dir.parent / META_FILE
    try:
        st = meta.stat()
    except OSError:
        return None
    return _experiment_cached(str(meta), st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def _read_metric(path: Path, key: str, collector: Collector) -> tuple[float | None, int]:
    """Every line ``timestamp value step`` of one metric file -> ``collector``: per step the
    line with the newest timestamp, as the DuckDB path's ``arg_max(value, ts)`` keeps it,
    whatever order the client appended them in (two lines of one step with the very same
    timestamp: here the later line, in DuckDB either one).
    Returns ``(newest timestamp in ms, lines)``. Lines of MLflow < 1.0 have no step (step 0);
    extra fields (logged models, datasets) are ignored.

    Raises
    ------
    InputFormatError
        A line that is not two or more numbers separated by spaces.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    newest: float | None = None
    kept: dict[int, tuple[int, float]] = {}  # step -> (ts, value) of its newest line
    n = 0
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split(" ")
        try:
            ts = int(parts[0])
            value = float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            if not line.strip():
                continue
            raise InputFormatError(
                f"{path}: line {n}: expected 'timestamp value step' (e.g. '1700000000000 0.25 10'), "
                f"got {line[:60]!r}; fix or delete that line") from None
        if step < 0:
            continue
        prev = kept.get(step)
        if prev is None or ts >= prev[0]:
            kept[step] = (ts, value)
        newest = ts if newest is None or ts > newest else newest
    add = collector.add
    for step, (ts, value) in kept.items():
        add(key, step, value, ts / 1000.0)
    return newest, n


def _status_name(meta: Mapping[str, Any]) -> str:
    raw = meta.get("status")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _STATUS_NAMES.get(raw, str(raw))
    return str(raw or "FINISHED").upper()


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _status(name: str, diverged: bool, newest_ms: float | None, start_ms: float | None) -> tuple[str, str | None]:
    """``(status, error)`` of a run from its MLflow status name (table in the module docstring)."""
    if diverged:
        return "diverged", None
    ours = _OURS.get(name)
    if ours is None:
        return "failed", f"unknown MLflow status {name!r}"
    if ours == "running":
        beat = newest_ms if newest_ms is not None else start_ms
        rj = {"status": "running", "heartbeat_at": iso_time(None if beat is None else beat / 1000.0)
              or datetime.now(UTC).isoformat()}
        return effective_status(rj), None
    return ours, ("MLflow status FAILED" if ours == "failed" else None)


def _run_id(meta: Mapping[str, Any], meta_file: Path) -> str:
    run_id = meta.get("run_id") or meta.get("run_uuid")
    if not isinstance(run_id, str) or not run_id:
        raise InputFormatError(f"{meta_file}: run_id: missing; an MLflow run's meta.yaml names its run_id "
                               "(the folder name); restore it, or delete the run folder")
    return run_id


def _record(d: Path, meta: Mapping[str, Any], run_id: str, params: Mapping[str, Any] | None) -> RunRecord:
    """Everything of a run but its metrics (tables empty, status from MLflow's): factors from
    folder names, side files, params, the parent run and the experiment; files read."""
    config, task, side_files = base_config(d)
    files: list[Path] = [d / META_FILE]
    exp = _experiment(d)
    if exp is not None:
        if exp[0] is not None:
            config["experiment"] = exp[0]
        side_files.append(d.parent / META_FILE)
    for key, f in _values(d / "params"):
        config[key] = param_value(f.read_text(encoding="utf-8", errors="replace"))
        files.append(f)
    tags: dict[str, str] = {}
    for key, f in _values(d / "tags"):
        tags[key] = f.read_text(encoding="utf-8", errors="replace")
        files.append(f)
    if tags.get(_PARENT_TAG):
        config["parent_run_id"] = tags[_PARENT_TAG]
    config.update(params or {})
    start, end = _ms(meta.get("start_time")), _ms(meta.get("end_time"))
    environment = {
        "source": "MLflow file store", "mlflow_status": _status_name(meta), "start_time_ms": start,
        "run_name": meta.get("run_name"), "experiment_id": str(meta.get("experiment_id", d.parent.name)),
        "artifact_uri": meta.get("artifact_uri"), "user": meta.get("user_id"), "mlflow_tags": tags,
    }
    return RunRecord(
        run_id=run_id, source=str(d), source_format=MlflowSource.name, status="completed", error=None,
        config=config, task=task, environment=environment, tables={}, files=files + side_files,
        started_at=iso_time(None if start is None else start / 1000.0),
        finished_at=iso_time(None if end is None else end / 1000.0),
    )


def read_mlflow_run(
    run_dir: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    tag_map: Mapping[str, Target] | None = None,
) -> RunRecord:
    """Read one run folder of an MLflow file store in Python (see the module docstring for the
    mapping; the ingest reads metric files with DuckDB, :mod:`.mlflow_sql`, and falls back to
    this on a file DuckDB cannot read).

    Parameters
    ----------
    run_dir
        ``mlruns/<experiment_id>/<run_id>/``.
    params
        ``--param`` factors, over every other source.
    tag_map
        ``--map`` rules (:func:`stabstat.ingest.tags.parse_map`).

    Raises
    ------
    InputFormatError
        A malformed ``meta.yaml`` (or one without ``run_id``), or a metric file with a bad line.
    MissingExtraError
        PyYAML is not installed.
    """
    d = Path(run_dir)
    meta = read_meta(d / META_FILE)
    record = _record(d, meta, _run_id(meta, d / META_FILE), params)
    collector = Collector(tag_map)
    newest: float | None = None
    for key, f in _values(d / "metrics"):
        ts, _n = _read_metric(f, key, collector)
        record.files.append(f)
        if ts is not None and (newest is None or ts > newest):
            newest = ts
    record.status, record.error = _status(record.environment["mlflow_status"],
                                          any(not math.isfinite(v) for v in collector.losses), newest,
                                          record.environment["start_time_ms"])
    record.task["metrics"] = collector.metrics()
    record.environment["tags"] = collector.tag_summary()
    record.tables = collector.tables(record.run_id)  # wall_time: s since the first training value
    record.notes = list(collector.notes)
    return record


def _finish(run: Any, facts: dict[str, Any]) -> None:
    """Complete a run staged by DuckDB from its facts row (:mod:`.mlflow_sql`): status, row counts."""
    env = run.run_json["environment"]
    status, error = _status(env["mlflow_status"], bool(facts.get("diverged")), facts.get("newest"),
                            env.get("start_time_ms"))
    run.status = run.run_json["status"] = status
    run.run_json["error"] = error
    for table, key in (("steps", "n_steps"), ("evals", "n_evals"), ("layer_grads", "n_layers")):
        if table in run.tables:
            run.tables[table].rows = int(facts.get(key) or 0)


def _fallback_for(tag_map: Mapping[str, Target]) -> Callable[[Any], None]:
    """The fallback of a run DuckDB could not read: the Python reader (its one-line reason as
    a :class:`Reject`, or its rows as column lists)."""
    def fallback(run: Any) -> None:
        try:
            record = read_mlflow_run(Path(run.source), tag_map=tag_map)
        except (StabstatError, OSError) as exc:
            raise Reject(str(exc)) from None
        run.status = run.run_json["status"] = record.status
        run.run_json["error"] = record.error
        run.tables = {name: TableData(columns=cols, rows=len(cols["run_id"])) for name, cols in record.tables.items()}
    return fallback


def is_deleted(run_dir: Path, meta: Mapping[str, Any] | None = None) -> bool:
    """Whether the run (or its experiment) has ``lifecycle_stage: deleted`` (a malformed
    ``meta.yaml`` reads as not deleted: :func:`read_mlflow_run` then reports it). ``meta``:
    the run's ``meta.yaml`` when already read."""
    try:
        if (meta if meta is not None else read_meta(run_dir / META_FILE)).get("lifecycle_stage") == "deleted":
            return True
    except (InputFormatError, OSError):
        pass
    try:
        exp = _experiment(run_dir)
    except InputFormatError:
        return False
    return exp is not None and exp[1]


class MlflowSource:
    """Source adapter for MLflow file stores (``--format mlflow``).

    A folder holding ``meta.yaml`` beside ``metrics/``/``params/``/``tags/`` is a run
    (strength 2); the experiment folder above it and MLflow 3 ``models/m-<id>/`` folders are
    not. ``meta.yaml`` given by the user belongs to its run. Deleted runs are not ingested:
    :meth:`prepare_many` returns no run for them and says so through ``options.inform``.
    """

    name: str = "mlflow"
    marker_files: tuple[str, ...] = ("mlruns/<experiment>/<run>/meta.yaml",)

    def detect(self, path: Path) -> int:
        return 2 if is_mlflow_run_dir(path) else 0

    def locate(self, path: Path) -> Path | None:
        if path.is_file() and path.name == META_FILE and is_mlflow_run_dir(path.parent):
            return path.parent
        return None

    def prepare_many(self, path: Path, options: PrepareOptions) -> list[RunInput]:
        """The run at ``path``, or none when it is deleted (a line to ``options.inform``)."""
        try:
            meta: Mapping[str, Any] = read_meta(path / META_FILE)  # read once: deletion check and run
        except (StabstatError, OSError) as exc:
            if not is_deleted(path):  # a run of a deleted experiment is skipped all the same
                raise Reject(str(exc)) from None
            meta = {}
        if is_deleted(path, meta):
            if options.inform is not None:
                options.inform(f"{path}: deleted MLflow run (lifecycle_stage: deleted); skipped")
            return []
        return [self.prepare(path, options, meta=meta)]

    def prepare(self, path: Path, options: PrepareOptions, *, meta: Mapping[str, Any] | None = None) -> RunInput:
        """The run at ``path`` (``meta``: its ``meta.yaml`` when already read)."""
        tag_map = dict(getattr(options, "tag_map", {}) or {})
        try:
            return self._prepare(path, options, tag_map, meta)
        except (StabstatError, OSError) as exc:
            raise Reject(str(exc)) from None

    def _prepare(self, d: Path, options: PrepareOptions, tag_map: dict[str, Target],
                 meta: Mapping[str, Any] | None) -> RunInput:
        """Metadata read here; metric files staged by DuckDB at load time (:mod:`.mlflow_sql`)."""
        if meta is None:
            meta = read_meta(d / META_FILE)
        record = _record(d, meta, _run_id(meta, d / META_FILE), options.params)
        metrics = _values(d / "metrics")
        mapping = {f"--map {k}": v.describe() for k, v in tag_map.items()}
        fp = files_fingerprint(f"{self.name}/{READER_VERSION}", d, {**options.params, **mapping},
                               record.files + [f for _, f in metrics])
        if options.known.get(record.run_id) == fp:
            return RunInput(run_id=record.run_id, source=str(d), source_format=self.name, run_json={}, status="",
                            fingerprint=fp, factors={}, unchanged=True)
        if not metrics:  # nothing for DuckDB to read
            record = read_mlflow_run(d, params=options.params, tag_map=tag_map)
            return record.to_run_input(fp)
        collector = Collector(tag_map)
        keys = [k for k, _ in metrics]
        targets = [collector.target(k) for k in keys]  # sorted keys: the Python reader's claim order
        for k in keys:
            collector.add(k, 0, 0.0)  # only to list the evaluation metrics as the Python reader does
        record.task["metrics"] = collector.metrics()
        record.environment["tags"] = collector.tag_summary()
        record.notes = list(collector.notes)
        reader = layout_reader(keys, targets, finish=_finish, fallback=_fallback_for(tag_map),
                               tag=repr(sorted(mapping.items())))
        jf = JsonFiles(reader, tuple(str(f) for _, f in metrics))
        run = record.to_run_input(fp)
        # rows: an estimate for batching (~25 bytes a line) until _finish counts them
        estimate = sum(f.stat().st_size for _, f in metrics) // 25
        run.tables = {"steps": TableData(json=jf, rows=estimate), "evals": TableData(json=jf)}
        if any(t.table == "layer_grads" for t in targets):
            run.tables["layer_grads"] = TableData(json=jf)
        run.status = "interrupted"  # until _finish sets it from the staged rows
        return run
