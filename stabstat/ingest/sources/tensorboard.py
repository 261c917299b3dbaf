"""TensorBoard event files (``events.out.tfevents.*``): the reader and the ``tensorboard`` adapter.

One run = one folder of event files. Several files in one folder (a restarted writer) are read
oldest first (by the timestamp in the file name) and merged by step, the newest value winning
for a tag and step, as TensorBoard shows them. Also part of the run: subfolders written by
``SummaryWriter.add_hparams`` (named by a Unix time, ``1700000000.123/``: its hparams and
metrics), and Keras' per-split subfolders (``train/``, ``validation/``, ``eval/``, ``test/``:
their tags get the folder name as a prefix). Event files in any other subfolder belong to
separate runs; they are not read and a note names them. Layouts found by the
walker: Lightning's ``lightning_logs/version_<n>/``, Hugging Face's ``runs/<date_host>/``,
any ``<logdir>/<run>/``.

Records are read with the ``tensorboard`` package's record reader (the TensorFlow-free stub
that TensorBoard itself uses without TensorFlow; it checks both CRCs) and its ``Event`` proto
(optional extra: ``pip install 'stabstat[tensorboard]'``).

=================================================  =========================================
source                                             stabstat
=================================================  =========================================
``Event.step``                                     ``step``
summary value ``simple_value`` (TF1, PyTorch)      by :func:`stabstat.ingest.tags.map_tag`:
tensor value of plugin ``scalars`` (TF2, Keras;    ``train/loss`` -> ``steps.loss``,
the plugin is named on a tag's first value only)   ``eval/accuracy`` -> ``evals``, ...
``Event.wall_time`` (Unix s) of a loss/lr/grad     ``steps.wall_time`` = it minus the run's
norm value                                         first event's wall time
first / last event wall time                       ``started_at`` / ``finished_at``
hparams plugin ``session_start_info.hparams``      factors
``hparams.yaml`` beside the events (Lightning)     factors, over the hparams plugin
images, histograms, text, audio                    skipped, named in a note
=================================================  =========================================

Factors, lowest precedence first: hive folder names on the path, a Hugging Face
``run.json``/``config.json`` beside the events, the hparams plugin, ``hparams.yaml``,
``--param``. Status (:func:`stabstat.ingest.tags.run_status`): ``diverged`` on a non-finite
training loss; ``failed`` when the files hold no scalar at all (a run that crashed before its
first log; the error says so: such a folder is ingested, never silently dropped);
``interrupted`` when a file is cut mid-record or fails a CRC check (the records before the
damage are kept, the error names the file); else ``completed`` (event files have no end marker).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError, require
from stabstat.ingest.source import PrepareOptions, RunInput
from stabstat.ingest.sources.lightning import HPARAMS_FILE, read_hparams_yaml
from stabstat.ingest.tags import (
    Collector,
    RunRecord,
    Target,
    base_config,
    iso_time,
    prepare_record,
    run_id_for,
    run_status,
    side_files,
)

__all__ = ["EVENTS_PREFIX", "TensorBoardSource", "event_files", "is_tensorboard_dir", "read_tensorboard_run"]

EVENTS_PREFIX = "events.out.tfevents."
#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one.
READER_VERSION = 1
_FEATURE = "Reading TensorBoard event files"
#: ``add_hparams`` subfolders are named ``str(time.time())``.
_HPARAMS_DIR_RE = re.compile(r"^\d{9,}(\.\d+)?$")
#: Keras writes one subfolder per split.
_SPLIT_DIRS = ("train", "validation", "eval", "test")


def _has_events(d: Path) -> bool:
    try:
        return any(f.name.startswith(EVENTS_PREFIX) and f.is_file() for f in d.iterdir())
    except OSError:
        return False


def _keras_dirs(d: Path) -> list[Path]:
    return [d / s for s in _SPLIT_DIRS if (d / s).is_dir() and _has_events(d / s)]


def is_tensorboard_dir(d: Path) -> bool:
    """Whether ``d`` holds event files, or (Keras) only per-split subfolders holding them."""
    return d.is_dir() and (_has_events(d) or bool(_keras_dirs(d)))


def _file_order(f: Path) -> tuple[int, int, str]:
    """Oldest first: the writer's Unix time in ``events.out.tfevents.<time>.<host>.<pid>.<n>``,
    then PyTorch's file counter ``<n>`` (several writers in one second)."""
    parts = f.name[len(EVENTS_PREFIX):].split(".")
    stamp, last = parts[0], parts[-1]
    return (int(stamp) if stamp.isdigit() else 0, int(last) if last.isdigit() and len(parts) > 1 else 0, str(f))


def event_files(run_dir: Path) -> list[tuple[Path, str]]:
    """The event files of run ``run_dir`` with the tag prefix of each (``""``, or
    ``"validation/"`` for a Keras split folder), oldest first. Other subfolders holding event
    files are separate runs (:func:`_nested_runs`)."""
    found: list[tuple[Path, str]] = []
    folders = [(s, s.name + "/") for s in _keras_dirs(run_dir)]
    if _has_events(run_dir):
        folders += [(run_dir, "")] + [(s, "") for s in sorted(run_dir.iterdir())
                                      if s.is_dir() and _HPARAMS_DIR_RE.match(s.name)]
    for folder, prefix in folders:
        found += [(f, prefix) for f in folder.iterdir() if f.name.startswith(EVENTS_PREFIX) and f.is_file()]
    return sorted(found, key=lambda fp: _file_order(fp[0]))


@dataclass
class _Scan:
    """What the files of one run held besides the scalars."""

    wall: list[float] = field(default_factory=list)  #: first and last wall time seen
    plugins: dict[str, str] = field(default_factory=dict)  #: tag -> plugin named by its first value
    hparams: dict[str, Any] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  #: tags of non-scalar values
    negative: set[str] = field(default_factory=set)  #: tags logged at a negative step
    damage: list[str] = field(default_factory=list)

    def seen(self, wall_time: float) -> None:
        if not self.wall:
            self.wall = [wall_time, wall_time]
        else:
            self.wall = [min(self.wall[0], wall_time), max(self.wall[1], wall_time)]


def _proto_value(v: Any) -> Any:
    """A ``google.protobuf.Value`` of the hparams plugin as a Python scalar (integral
    numbers as int: protobuf has doubles only, and a seed should stay an int)."""
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        x = v.number_value
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    return None


def _tensor_scalar(tensor: Any) -> float | None:
    """The value of a scalar ``TensorProto`` (TF2 writers), None when it is not one number."""
    from tensorboard.util import tensor_util

    arr = tensor_util.make_ndarray(tensor)
    if arr.size != 1 or arr.dtype.kind not in "fiub":
        return None
    return float(arr.reshape(()).item())


def _values(event: Any, prefix: str, collector: Collector, scan: _Scan, hparams_pb: Any) -> None:
    """The summary values of one event -> ``collector`` (scalars) or ``scan`` (the rest)."""
    for value in event.summary.value:
        tag = prefix + value.tag
        plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
        if plugin:
            scan.plugins.setdefault(tag, plugin)
        plugin = plugin or scan.plugins.get(tag, "")
        kind = value.WhichOneof("value")
        if plugin == "hparams":
            data = hparams_pb.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                scan.hparams.update({k: _proto_value(v) for k, v in data.session_start_info.hparams.items()})
            continue
        if kind == "simple_value":
            number: float | None = value.simple_value
        elif kind == "tensor" and plugin == "scalars":
            number = _tensor_scalar(value.tensor)
        else:
            number = None
        if number is None:
            scan.skipped.add(tag)
        elif event.step < 0:
            scan.negative.add(tag)
        else:
            collector.add(tag, event.step, number, event.wall_time)


def _read_file(path: Path, prefix: str, collector: Collector, scan: _Scan) -> None:
    """Every record of one event file -> ``collector`` / ``scan``; damage is noted in ``scan``."""
    tb = require("tensorboard", "tensorboard", _FEATURE)
    del tb  # imported for the message only; the modules below are its own
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    except (OSError, errors.OpError) as exc:
        raise InputFormatError(f"{path}: cannot be read: {exc}") from exc
    n = 0
    try:
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as exc:
                what = "fails a CRC check" if "crc" in str(exc.message) and "truncated" not in str(exc.message) else "is cut mid-record"
                scan.damage.append(f"{path}: {what} after {n} records; the records before it are kept")
                break
            try:
                event = event_pb2.Event.FromString(reader.record())
            except DecodeError:
                scan.damage.append(f"{path}: record {n + 1} is not an Event; the records before it are kept")
                break
            n += 1
            scan.seen(event.wall_time)
            if event.HasField("summary"):
                _values(event, prefix, collector, scan, plugin_data_pb2)
    finally:
        reader.file_handle.close()


def _nested_runs(run_dir: Path, files: list[tuple[Path, str]]) -> list[str]:
    """Subfolders of a run folder that hold event files this run does not read (the walker
    does not search a run folder, so they are named in a note rather than lost unseen)."""
    used = {f.parent for f, _ in files}
    return sorted(str(p.parent.relative_to(run_dir)) for p in run_dir.glob("*/**/" + EVENTS_PREFIX + "*")
                  if p.parent not in used and not p.parent.name.startswith("."))


def _notes(scan: _Scan) -> list[str]:
    notes = []
    if scan.skipped:
        names = sorted(scan.skipped)
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        notes.append(f"skipped non-scalar tags (images, histograms, text, ...): {', '.join(names[:8])}{more}")
    if scan.negative:
        notes.append(f"skipped values at negative steps of: {', '.join(sorted(scan.negative))}")
    return notes


def read_tensorboard_run(
    run_dir: str | Path,
    *,
    root: Path | None = None,
    params: Mapping[str, Any] | None = None,
    tag_map: Mapping[str, Target] | None = None,
) -> RunRecord:
    """Read one folder of TensorBoard event files (see the module docstring for the mapping).

    Parameters
    ----------
    run_dir
        Folder holding ``events.out.tfevents.*`` files (or Keras' ``train/``,
        ``validation/`` subfolders holding them).
    root
        The folder the ingest started from: the run id is the path relative to it
        (:func:`stabstat.ingest.tags.run_id_for`).
    params
        ``--param`` factors, over every other source.
    tag_map
        ``--map`` rules (:func:`stabstat.ingest.tags.parse_map`).

    Raises
    ------
    MissingExtraError
        The ``tensorboard`` package is not installed.
    InputFormatError
        No event file in the folder, an unreadable file, or a malformed ``hparams.yaml``.
    """
    d = Path(run_dir)
    files = event_files(d) if d.is_dir() else []
    if not files:
        raise InputFormatError(f"{d}: no {EVENTS_PREFIX}* files here; not a TensorBoard run folder")
    collector, scan = Collector(tag_map), _Scan()
    for f, prefix in files:
        _read_file(f, prefix, collector, scan)
    config, task, side_files = base_config(d)
    config.update(scan.hparams)
    notes: list[str] = []
    if (d / HPARAMS_FILE).is_file():
        hparams, notes = read_hparams_yaml(d / HPARAMS_FILE)
        config.update(hparams)
        side_files.append(d / HPARAMS_FILE)
    config.update(params or {})
    nested = _nested_runs(d, files)
    if nested:
        notes.append(f"not read: event files in {', '.join(sorted(set(nested)))} (separate runs: "
                     "give those folders as their own paths)")
    run_id = run_id_for(d, root)
    damage = "; ".join(scan.damage) or None
    status, error = run_status(collector.losses, points=collector.points, damage=damage)
    task["metrics"] = collector.metrics()
    start = scan.wall[0] if scan.wall else None
    environment = {"source": "TensorBoard event files", "files": [str(f) for f, _ in files],
                   "tags": collector.tag_summary()}
    return RunRecord(
        run_id=run_id, source=str(d), source_format=TensorBoardSource.name, status=status, error=error,
        config=config, task=task, environment=environment, tables=collector.tables(run_id, start),
        files=[f for f, _ in files] + side_files, notes=notes + collector.notes + _notes(scan),
        started_at=iso_time(start), finished_at=iso_time(scan.wall[1] if scan.wall else None),
    )


class TensorBoardSource:
    """Source adapter for TensorBoard event files (``--format tensorboard``).

    A folder holding ``events.out.tfevents.*`` (or only Keras split subfolders holding them) is
    a run (strength 2: it beats a Lightning ``metrics.csv`` beside it, the same run without
    wall times). An event file given by the user belongs to its run folder.
    ``options.root``: the folder the ingest started from, for run ids (None: ids from the
    folder name).
    """

    name: str = "tensorboard"
    marker_files: tuple[str, ...] = (EVENTS_PREFIX + "*",)

    def check_available(self) -> None:
        """Raise :class:`~stabstat.errors.MissingExtraError` when the ``tensorboard`` package
        (the record reader and protos) is not installed (the walker asks once per ingest)."""
        require("tensorboard.compat.proto.event_pb2", "tensorboard", _FEATURE)

    def detect(self, path: Path) -> int:
        return 2 if is_tensorboard_dir(path) else 0

    def locate(self, path: Path) -> Path | None:
        if not (path.is_file() and path.name.startswith(EVENTS_PREFIX)):
            return None
        folder = path.parent
        if _HPARAMS_DIR_RE.match(folder.name) and _has_events(folder.parent):
            return folder.parent
        if folder.name in _SPLIT_DIRS and folder.parent.name:
            return folder.parent
        return folder

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        def files() -> list[Path]:  # what read_tensorboard_run reads, in its order
            hp = [path / HPARAMS_FILE] if (path / HPARAMS_FILE).is_file() else []
            return [f for f, _ in event_files(path)] + side_files(path) + hp

        return prepare_record(
            f"{self.name}/{READER_VERSION}", path, options, files=files,
            read=lambda: read_tensorboard_run(path, root=options.root, params=options.params, tag_map=options.tag_map))
