"""PyTorch Lightning ``CSVLogger`` runs (``version_N/metrics.csv`` + ``hparams.yaml``): reader and adapter.

``CSVLogger`` writes ``<save_dir>/<name>/version_<n>/metrics.csv`` and ``hparams.yaml``.
``metrics.csv`` is sparse: one row per ``log_metrics`` call, so training, validation and test
values sit on separate rows with empty cells elsewhere; ``epoch`` and ``step`` are columns
(last in older Lightning, first in newer). Rows are merged by ``step`` (a later row wins for
the same column and step). One run = one folder holding ``metrics.csv``.

==============================  ==========================================================
source                          stabstat
==============================  ==========================================================
``step`` cell                   ``step`` of every value on the row (Lightning's
                                ``global_step`` at logging time, as written)
``epoch`` cell                  ``steps.epoch``
other cells                     by :func:`stabstat.ingest.tags.map_tag` (``train_loss`` /
                                ``train_loss_step`` -> ``steps.loss``, ``lr-Adam`` ->
                                ``steps.lr``, ``val_acc`` -> ``evals`` ``val``/``acc``,
                                ``*_epoch`` -> evals, others -> split ``train`` extras)
(no clock in the file)          ``steps.wall_time`` null
``hparams.yaml``                factors (over folder names and HF side files; under
                                ``--param``)
==============================  ==========================================================

A CSV without a training loss still ingests its evaluations. A ``version_<n>/`` folder holding
only ``hparams.yaml`` (the run stopped before CSVLogger's first save) is ingested as a
``failed`` run whose error says so, never silently skipped. A last row cut mid-write (no
final newline, fewer cells) is dropped and the run is ``interrupted`` with a note; any other
row whose cell count differs from the header is an :class:`~stabstat.errors.InputFormatError`
naming the file and line. ``hparams.yaml`` is loaded with a safe loader: tags such as
``!!python/object:argparse.Namespace`` never run code; their content is read as plain data
(a mapping, list or string) and a note names the tag. Reading ``hparams.yaml`` needs PyYAML
(``pip install 'stabstat[lightning]'``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError, require
from stabstat.ingest.source import PrepareOptions, RunInput
from stabstat.ingest.tags import (
    Collector,
    RunRecord,
    Target,
    base_config,
    prepare_record,
    run_id_for,
    run_status,
    side_files,
)

__all__ = ["HPARAMS_FILE", "METRICS_FILE", "LightningSource", "logger_twins", "read_hparams_yaml",
           "read_lightning_run", "read_metrics_csv"]

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
_VERSION_RE = re.compile(r"^version_\d+$")
#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one.
READER_VERSION = 1


def read_hparams_yaml(path: Path) -> tuple[dict[str, Any], list[str]]:
    """``hparams.yaml`` as a dict, and notes on tags read as plain data (never executed).

    Raises
    ------
    MissingExtraError
        PyYAML is not installed.
    InputFormatError
        Malformed YAML, naming the file and line.
    """
    yaml = require("yaml", "lightning", f"Reading {path.name}")
    notes: list[str] = []

    class _SafeLoader(yaml.SafeLoader):  # type: ignore[name-defined,misc]
        """SafeLoader whose unknown tags (``!!python/...``) construct plain data."""

    def plain(loader: Any, node: Any) -> Any:
        notes.append(f"{path.name}: {node.tag} at line {node.start_mark.line + 1} read as plain data, not executed")
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    _SafeLoader.add_constructor(None, plain)
    try:
        data = yaml.load(path.read_text("utf-8"), Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputFormatError(f"{path}: malformed YAML{where}: {problem}; fix or remove the file") from exc
    if data is None:
        return {}, notes
    if not isinstance(data, dict):
        notes.append(f"{path.name}: expected a mapping of hyperparameters, got {type(data).__name__}; ignored")
        return {}, notes
    return {str(k): v for k, v in data.items()}, notes


def _number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise InputFormatError(
            f"{path}: line {line}: column {column!r}: expected a number, got {cell[:40]!r}; fix the cell"
        ) from None


def _step(path: Path, line: int, cell: str) -> int:
    value = _number(path, line, "step", cell)
    if not value.is_integer() or value < 0:
        raise InputFormatError(f"{path}: line {line}: column 'step': expected a non-negative integer, got {cell!r}")
    return int(value)


def read_metrics_csv(path: Path, collector: Collector) -> str | None:
    """Feed every non-empty cell of a Lightning ``metrics.csv`` to ``collector``.

    Returns a one-line note when the last row was cut mid-write (and dropped), else None.

    Raises
    ------
    InputFormatError
        Unreadable file, no ``step`` column, a ragged row before the last, a non-numeric cell.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: cannot be read: {exc}") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return None
    header = rows[0]
    if "step" not in header:
        raise InputFormatError(f"{path}: no 'step' column in the header ({', '.join(header)[:80]}); "
                               "not a Lightning CSVLogger file: use --format table")
    i_step = header.index("step")
    damage = None
    body = rows[1:]
    if body and len(body[-1]) != len(header) and not text.endswith(("\n", "\r")):
        damage = f"{path}: line {len(rows)}: the last row was cut mid-write ({len(body[-1])} of {len(header)} cells); dropped"
        body = body[:-1]
    for n, row in enumerate(body, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InputFormatError(f"{path}: line {n}: {len(row)} cells, the header has {len(header)} "
                                   "(a hand-edited or damaged file); fix or delete the row")
        cell = row[i_step].strip()
        if not cell:
            raise InputFormatError(f"{path}: line {n}: column 'step' is empty; fix or delete the row")
        step = _step(path, n, cell)
        for j, value in enumerate(row):
            if j != i_step and value.strip():
                collector.add(header[j], step, _number(path, n, header[j], value.strip()))
    return damage


def read_lightning_run(
    run_dir: str | Path,
    *,
    root: Path | None = None,
    params: Mapping[str, Any] | None = None,
    tag_map: Mapping[str, Target] | None = None,
) -> RunRecord:
    """Read one CSVLogger run folder (see the module docstring for the mapping).

    Parameters
    ----------
    run_dir
        Folder holding ``metrics.csv`` (and usually ``hparams.yaml``).
    root
        The folder the ingest started from: the run id is the path relative to it
        (:func:`stabstat.ingest.tags.run_id_for`).
    params
        ``--param`` factors, over every other source.
    tag_map
        ``--map`` rules (:func:`stabstat.ingest.tags.parse_map`).

    Raises
    ------
    InputFormatError
        No ``metrics.csv``, or a damaged file (see :func:`read_metrics_csv`).
    MissingExtraError
        ``hparams.yaml`` is present and PyYAML is not installed.
    """
    d = Path(run_dir)
    metrics = d / METRICS_FILE
    collector = Collector(tag_map)
    if metrics.is_file():
        damage = read_metrics_csv(metrics, collector)
    elif (d / HPARAMS_FILE).is_file() and _VERSION_RE.match(d.name):
        damage = None  # CSVLogger writes metrics.csv at its first save: the run stopped before it
    else:
        raise InputFormatError(f"{d}: no {METRICS_FILE}; not a Lightning CSVLogger run folder")
    config, task, files = base_config(d)
    notes: list[str] = []
    hp = d / HPARAMS_FILE
    if hp.is_file():
        hparams, notes = read_hparams_yaml(hp)
        config.update(hparams)
        files.append(hp)
    config.update(params or {})
    run_id = run_id_for(d, root)
    status, error = run_status(collector.losses, points=collector.points, damage=damage)
    if not metrics.is_file():
        error = f"no {METRICS_FILE} beside {HPARAMS_FILE}: the run stopped before CSVLogger's first save"
    read = [metrics] if metrics.is_file() else []
    task["metrics"] = collector.metrics()
    environment = {"source": f"PyTorch Lightning CSVLogger {METRICS_FILE}", "files": [str(f) for f in read + files],
                   "tags": collector.tag_summary()}
    return RunRecord(
        run_id=run_id, source=str(d), source_format=LightningSource.name, status=status, error=error,
        config=config, task=task, environment=environment, tables=collector.tables(run_id),
        files=read + files, notes=notes + collector.notes + ([damage] if damage else []),
    )


def logger_twins(tensorboard_runs: Iterable[Path], csv_runs: Iterable[Path]) -> dict[Path, Path]:
    """CSVLogger folders that repeat a TensorBoardLogger folder: CSV run -> its TensorBoard twin.

    A ``Trainer(logger=[TensorBoardLogger(d), CSVLogger(d)])`` writes every training twice, in
    neighbouring ``version_<n>`` folders of one parent (``version_0`` events, ``version_1``
    metrics.csv), both with the same ``hparams.yaml``. Ingesting both would count each seed
    twice. A CSV run is a twin when a TensorBoard run in the same parent at version ``n - 1``
    or ``n + 1`` (the loggers' order) has a byte-identical ``hparams.yaml``; the TensorBoard
    folder is kept (it has wall times). Each TensorBoard run pairs with one CSV run at most.
    """
    def version(d: Path) -> int | None:
        return int(d.name[len("version_"):]) if _VERSION_RE.match(d.name) else None

    def hparams(d: Path) -> bytes | None:
        try:
            return (d / HPARAMS_FILE).read_bytes()
        except OSError:
            return None

    tb = {(d.parent, version(d)): d for d in tensorboard_runs if version(d) is not None}
    twins: dict[Path, Path] = {}
    used: set[Path] = set()
    for d in sorted(csv_runs, key=lambda p: (str(p.parent), version(p) or 0)):
        n, text = version(d), hparams(d)
        if n is None or text is None:
            continue
        for other in (tb.get((d.parent, n - 1)), tb.get((d.parent, n + 1))):
            if other is not None and other not in used and hparams(other) == text:
                twins[d] = other
                used.add(other)
                break
    return twins


class LightningSource:
    """Source adapter for Lightning ``CSVLogger`` folders (``--format lightning``).

    A folder holding ``metrics.csv`` whose header has a ``step`` column is a run (strength 1:
    event files beside it are the same run logged by ``TensorBoardLogger``, which has wall
    times and wins). ``metrics.csv`` or ``hparams.yaml`` given by the user belongs to its folder.
    ``options.root``: the folder the ingest started from, for run ids (None: ids from the folder name).
    """

    name: str = "lightning"
    marker_files: tuple[str, ...] = (METRICS_FILE,)

    def detect(self, path: Path) -> int:
        f = path / METRICS_FILE
        if not f.is_file():
            # version_<n>/hparams.yaml alone: a CSVLogger run that stopped before its first save
            # (a TensorBoardLogger folder holds event files, and TensorBoard claims it).
            return 1 if _VERSION_RE.match(path.name) and (path / HPARAMS_FILE).is_file() else 0
        try:
            with f.open(encoding="utf-8", newline="") as fh:
                header = next(csv.reader([fh.readline()]), [])
        except (OSError, UnicodeDecodeError):
            return 1  # let prepare report the unreadable file
        return 1 if "step" in header else 0

    def locate(self, path: Path) -> Path | None:
        if path.is_file() and path.name in (METRICS_FILE, HPARAMS_FILE) and (path.parent / METRICS_FILE).is_file():
            return path.parent
        return None

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        def files() -> list[Path]:  # what read_lightning_run reads, in its order
            return [f for f in (path / METRICS_FILE,) if f.is_file()] + side_files(path) + [
                f for f in (path / HPARAMS_FILE,) if f.is_file()]

        return prepare_record(
            f"{self.name}/{READER_VERSION}", path, options, files=files,
            read=lambda: read_lightning_run(path, root=options.root, params=options.params, tag_map=options.tag_map))
