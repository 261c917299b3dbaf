"""Metric names of other loggers -> the contract's tables: the mapping rules and the run record.

TensorBoard tags, Lightning ``metrics.csv`` columns and tidy-table metric names (later MLflow
and W&B keys) all go through :func:`map_tag`, so one name means the same column whatever wrote
it. The first rule that matches wins:

======================================================  =====================================
source name (examples)                                  stabstat column
======================================================  =====================================
``--map TAG=split/metric`` (``TAG=steps/loss``)          ``evals`` (split, metric) / ``steps``
``loss``, ``train_loss``, ``train/loss``, ``Loss/train``  ``steps.loss``
``lr``, ``learning_rate``, ``train/learning_rate``,       ``steps.lr``
``lr-Adam``, ``lr-AdamW/pg1`` (LearningRateMonitor)
``grad_norm``, ``train/grad_norm``,                      ``steps.grad_norm``
``grad_2.0_norm_total`` (Lightning ``grad_norm``)
``epoch``, ``train/epoch``                               ``steps.epoch``
``grad_norm/<layer>``, ``layer_grads/<layer>``           ``layer_grads`` (layer, depth)
``eval/accuracy``, ``eval_loss``                         ``evals`` split ``eval``
``val_acc``, ``val/acc``, ``valid_f1``,                  ``evals`` split ``val``
``validation/loss``, ``acc/val``
``test_acc``, ``test/acc``                               ``evals`` split ``test``
``dev_acc``, ``dev/acc``                                 ``evals`` split ``dev``
``train_acc``, ``train/train_runtime``, ``hp_metric``,   ``evals`` split ``train`` (extras)
any other name
======================================================  =====================================

Split prefixes (``eval``, ``val``, ``valid``, ``validation``, ``test``, ``dev``, ``train``,
``training``) are matched case-insensitively before ``/`` or ``_``, and as a suffix after
``/`` (``Accuracy/test``, the PyTorch tutorial style). A training name (split ``train`` or
none) whose metric is ``loss``/``lr``/``learning_rate``/``grad_norm``/``epoch`` goes to
``steps``. Lightning suffixes: ``<name>_step`` is the per-step value of ``<name>`` when that is
a ``steps`` column (``train_loss_step`` -> ``steps.loss``), otherwise the metric keeps the
suffix (``val_acc_step``: per-batch values, not the evaluation); ``<name>_epoch`` is an epoch
aggregate: an ``evals`` row without the suffix when ``<name>`` has a split prefix or is a
training column (``val_acc_epoch`` -> ``val``/``acc``, ``train_loss_epoch`` -> ``train``/``loss``),
else an extra under its full name (``acc_epoch``).

**Extras.** A name that no rule maps is kept, never dropped: an ``evals`` row with split
``train`` (:data:`EXTRA_SPLIT`) and the full name as the metric, at its step. Split ``train``
thus holds everything measured while training that is not an evaluation on held-out data.
When two names map to the same column (``loss`` and ``train_loss``), the first one seen keeps
it and the other becomes an extra (a note says so). Steps rows exist where ``loss``, ``lr`` or
``grad_norm`` was logged; ``epoch`` and ``wall_time`` fill those rows (an epoch value logged
at a step without a training value, e.g. beside a validation, makes no row).

Values: ``evals.value``, ``steps.lr``/``epoch``/``wall_time`` are finite-only in the
contract, so NaN/inf there become null; ``steps.loss``/``grad_norm`` keep them (a
non-finite training loss makes the run ``diverged``).

:class:`RunRecord` is the format-free result of every reader here: a run id, status,
factors and run.json-like metadata, and the contract tables as column lists;
:meth:`RunRecord.to_run_input` turns it into the ingest's :class:`~stabstat.ingest.RunInput`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import schemas
from stabstat.errors import InputFormatError, StabstatError
from stabstat.ingest.runinfo import hive_factors, make_run_id, side_factors
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, TableData, scalar_factors
from stabstat.store.schema import STORE_VERSION

__all__ = [
    "EXTRA_SPLIT",
    "STEP_COLUMNS",
    "Collector",
    "RunRecord",
    "Target",
    "base_config",
    "files_fingerprint",
    "layer_depths",
    "map_tag",
    "parse_map",
    "prepare_record",
    "run_id_for",
    "run_status",
    "side_files",
    "split_target",
]

#: Split of the ``evals`` rows that hold training-time values that are not evaluations.
EXTRA_SPLIT = "train"
#: ``steps`` columns a tag can fill (``wall_time`` comes from the logger's clock).
STEP_COLUMNS = ("epoch", "loss", "lr", "grad_norm")
#: Columns that make a ``steps`` row (``epoch`` only fills rows).
_ROW_COLUMNS = ("loss", "lr", "grad_norm")
#: Split prefix (lower case) -> split name.
_SPLITS = {"eval": "eval", "val": "val", "valid": "val", "validation": "val", "test": "test",
           "dev": "dev", "train": "train", "training": "train"}
#: Metric name (lower case) of a training value -> steps column.
_STEP_NAMES = {"loss": "loss", "lr": "lr", "learning_rate": "lr", "grad_norm": "grad_norm",
               "grad_2.0_norm_total": "grad_norm", "epoch": "epoch"}
_PREFIX_RE = re.compile(r"^(eval|validation|valid|val|test|dev|training|train)[/_](.+)$", re.IGNORECASE)
_SUFFIX_RE = re.compile(r"^(.+)/(eval|validation|valid|val|test|dev|training|train)$", re.IGNORECASE)
#: Lightning's LearningRateMonitor: ``lr-<Optimizer>`` or ``lr-<Optimizer>/pg1`` (first group).
_LR_MONITOR_RE = re.compile(r"^lr-[^/\-]+(/pg1)?$")
_LAYER_RE = re.compile(r"^(?:grad_norm|layer_grads)/(.+)$")
#: Bookkeeping values of evaluations (Hugging Face); kept as rows, not listed in ``task.metrics``.
_BOOKKEEPING = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time"}


@dataclass(frozen=True)
class Target:
    """Where one source name goes: ``table`` ``steps`` (``name`` = column), ``evals``
    (``split``, ``name`` = metric) or ``layer_grads`` (``name`` = layer)."""

    table: str
    name: str
    split: str | None = None
    #: no rule matched: an ``evals`` row of split ``train`` (not part of equality: an extra
    #: and a mapped name landing on the same row are the same column)
    extra: bool = field(default=False, compare=False)

    def describe(self) -> str:
        """``steps.loss``, ``evals:val/acc`` or ``layer_grads:<layer>`` (for notes)."""
        if self.table == "steps":
            return f"steps.{self.name}"
        if self.table == "evals":
            return f"evals:{self.split}/{self.name}"
        return f"layer_grads:{self.name}"


def _extra(tag: str) -> Target:
    return Target("evals", tag, EXTRA_SPLIT, extra=True)


def _split_metric(name: str) -> tuple[str | None, str]:
    """``(split, metric)`` of a name by its split prefix or suffix; split None when it has none."""
    m = _PREFIX_RE.match(name)
    if m:
        return _SPLITS[m.group(1).lower()], m.group(2)
    m = _SUFFIX_RE.match(name)
    if m:
        return _SPLITS[m.group(2).lower()], m.group(1)
    return None, name


def _training_column(split: str | None, metric: str) -> str | None:
    """The steps column a training value fills, or None."""
    if split not in (None, "train"):
        return None
    if split is None and _LR_MONITOR_RE.match(metric):
        return "lr"
    return _STEP_NAMES.get(metric.lower())


def split_target(split: str | None, metric: str) -> Target:
    """Where a value named by an explicit ``(split, metric)`` pair goes (a table's split
    column): a training column of split ``train`` (or none) -> ``steps``, else ``evals``."""
    column = _training_column(split or None, metric)
    if column is not None:
        return Target("steps", column)
    return Target("evals", metric, split or EXTRA_SPLIT)


def map_tag(tag: str, custom: Mapping[str, Target] | None = None) -> Target:
    """Where the values of source name ``tag`` go (the rules of the module docstring).

    >>> map_tag("train/loss").describe(), map_tag("val_acc_epoch").describe()
    ('steps.loss', 'evals:val/acc')
    >>> map_tag("lr-AdamW").describe(), map_tag("hp_metric").describe()
    ('steps.lr', 'evals:train/hp_metric')
    """
    if custom and tag in custom:
        return custom[tag]
    m = _LAYER_RE.match(tag)
    if m:
        return Target("layer_grads", m.group(1))
    if tag.endswith("_epoch") and len(tag) > len("_epoch"):
        split, metric = _split_metric(tag[: -len("_epoch")])
        if split is None and _training_column(None, metric) is None:
            return _extra(tag)
        return Target("evals", "loss" if _training_column(split, metric) == "loss" else metric, split or EXTRA_SPLIT)
    if tag.endswith("_step") and len(tag) > len("_step"):
        split, metric = _split_metric(tag[: -len("_step")])
        column = _training_column(split, metric)
        if column is not None:
            return Target("steps", column)
    split, metric = _split_metric(tag)
    column = _training_column(split, metric)
    if column is not None:
        return Target("steps", column)
    if split is None:
        return _extra(tag)
    return Target("evals", metric, split)


def parse_map(items: Iterable[str]) -> dict[str, Target]:
    """``--map TAG=split/metric`` options -> tag -> :class:`Target` (``TAG=steps/<column>``
    for a training column). The tag is everything before the last ``=``.

    Raises
    ------
    InputFormatError
        An item without ``=`` or ``/``, or ``steps/<name>`` with an unknown column.
    """
    out: dict[str, Target] = {}
    for item in items:
        tag, sep, dest = item.rpartition("=")
        split, slash, metric = dest.strip().partition("/")
        if not sep or not tag.strip() or not slash or not split or not metric:
            raise InputFormatError(f"--map {item!r}: expected TAG=split/metric, e.g. --map acc=dev/accuracy")
        if split == "steps":
            if metric not in STEP_COLUMNS:
                raise InputFormatError(f"--map {item!r}: steps/{metric}: expected one of "
                                       f"{', '.join('steps/' + c for c in STEP_COLUMNS)}")
            out[tag.strip()] = Target("steps", metric)
        else:
            out[tag.strip()] = Target("evals", metric, split)
    return out


def layer_depths(layers: Iterable[str]) -> dict[str, int]:
    """Contract depths of layer names: ``embeddings`` 0, ``encoder.layer.<i>`` i+1, then
    ``pooler``, then ``classifier``, then other names in sorted order."""
    names = set(layers)
    blocks = sorted((int(m.group(1)), n) for n in names if (m := re.fullmatch(r"encoder\.layer\.(\d+)", n)))
    depth: dict[str, int] = {"embeddings": 0} if "embeddings" in names else {}
    for i, n in blocks:
        depth[n] = i + 1
    nxt = max(depth.values(), default=-1) + 1
    for n in ["pooler", "classifier", *sorted(names - set(depth) - {"pooler", "classifier"})]:
        if n in names and n not in depth:
            depth[n] = nxt
            nxt += 1
    return depth


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


class Collector:
    """Scalar points of one run -> the contract tables as column lists.

    :meth:`add` takes ``(tag, step, value, wall_time)`` in the order they were written; a
    later point for the same column and step replaces an earlier one (newest wins, as in
    TensorBoard). ``wall_time``: seconds (any origin; Unix time for TensorBoard).
    """

    def __init__(self, custom: Mapping[str, Target] | None = None) -> None:
        self.custom = dict(custom or {})
        self.targets: dict[str, Target] = {}  #: tag -> where its values went
        self.claimed: dict[Target, str] = {}  #: target -> the tag that owns it
        self.notes: list[str] = []
        self.steps: dict[str, dict[int, float]] = {c: {} for c in STEP_COLUMNS}
        self.wall: dict[int, float] = {}
        self.evals: dict[tuple[int, str, str], float] = {}
        self.layers: dict[tuple[int, str], float] = {}
        self.points = 0

    def target(self, tag: str) -> Target:
        """Where ``tag`` goes in this run (first claim wins; see the module docstring)."""
        t = self.targets.get(tag)
        if t is None:
            t = map_tag(tag, self.custom)
            owner = self.claimed.setdefault(t, tag)
            if owner != tag:
                self.notes.append(f"tag {tag!r} maps to {t.describe()} like {owner!r}; kept as an extra")
                t = _extra(tag)
                self.claimed.setdefault(t, tag)
            self.targets[tag] = t
        return t

    def add(self, tag: str, step: int, value: float, wall_time: float | None = None) -> None:
        """One scalar value of ``tag`` at ``step``."""
        t = self.target(tag)
        self.points += 1
        if t.table == "steps":
            self.steps[t.name][step] = value
            if wall_time is not None and t.name in _ROW_COLUMNS:
                self.wall[step] = max(wall_time, self.wall.get(step, wall_time))
        elif t.table == "evals":
            self.evals[(step, t.split or EXTRA_SPLIT, t.name)] = value
        else:
            self.layers[(step, t.name)] = value

    @property
    def losses(self) -> list[float]:
        """Logged training losses (for the status)."""
        return list(self.steps["loss"].values())

    def metrics(self) -> list[str]:
        """Evaluation metric names (splits other than ``train``, without bookkeeping)."""
        return sorted({m for (_, s, m) in self.evals if s != EXTRA_SPLIT and m not in _BOOKKEEPING})

    def tables(self, run_id: str, start: float | None = None) -> dict[str, dict[str, list[Any]]]:
        """Contract table -> column -> values (contract column order, ``run_id`` included),
        rows ordered by step. ``start``: the run's start on the ``wall_time`` clock."""
        contract = schemas.load()
        rows = sorted(set().union(*(self.steps[c] for c in _ROW_COLUMNS)))
        st = self.steps
        origin = start if start is not None else min(self.wall.values(), default=0.0)
        wall = [self.wall.get(s) for s in rows]
        steps: dict[str, list[Any]] = {
            "run_id": [run_id] * len(rows), "step": rows,
            "epoch": [_finite(st["epoch"].get(s)) for s in rows],
            "loss": [st["loss"].get(s) for s in rows],
            "lr": [_finite(st["lr"].get(s)) for s in rows],
            "grad_norm": [st["grad_norm"].get(s) for s in rows],
            "wall_time": [None if w is None else _finite(w - origin) for w in wall],
        }
        keys = sorted(self.evals)
        evals: dict[str, list[Any]] = {"run_id": [run_id] * len(keys), "step": [k[0] for k in keys], "split": [k[1] for k in keys],
                 "metric": [k[2] for k in keys], "value": [_finite(self.evals[k]) for k in keys]}
        out: dict[str, dict[str, list[Any]]] = {"steps": steps, "evals": evals}
        if self.layers:
            depth = layer_depths(layer for _, layer in self.layers)
            lk = sorted(self.layers, key=lambda k: (k[0], depth[k[1]]))
            out["layer_grads"] = {"run_id": [run_id] * len(lk), "step": [k[0] for k in lk],
                                  "layer": [k[1] for k in lk], "depth": [depth[k[1]] for k in lk],
                                  "grad_norm": [self.layers[k] for k in lk]}
        # contract order; a column added to the contract later (nullable, by its rules) is null
        return {name: {c: cols.get(c, [None] * len(cols["run_id"])) for c in contract.table(name).column_names}
                for name, cols in out.items()}

    def tag_summary(self) -> dict[str, str]:
        """Tag -> where it went (``steps.loss``, ``evals:val/acc``, ...), for the run's environment."""
        return {tag: t.describe() for tag, t in sorted(self.targets.items())}


def run_status(losses: Iterable[float], *, points: int, damage: str | None) -> tuple[str, str | None]:
    """``(status, error)`` of a run read from logs that carry no status.

    ``diverged``: a non-finite training loss was logged. ``failed``: not one scalar was logged
    (a run that crashed before its first log), error says so. ``interrupted``: a file was cut
    or damaged (``damage`` names it; the rows before the damage are kept). Else ``completed``:
    these logs have no end-of-run marker, so a run that stopped early reads as completed.
    """
    if any(not math.isfinite(v) for v in losses):
        return "diverged", damage
    if points == 0:
        return "failed", damage or "no scalar values were logged (the run crashed before its first log?)"
    if damage:
        return "interrupted", damage
    return "completed", None


def run_id_for(run_dir: Path, root: Path | None = None) -> str:
    """Stable run id of a run folder: its path relative to ``root`` with ``/`` -> ``_``, then
    ``-<8 hex>`` of its resolved absolute path (as :func:`stabstat.ingest.runinfo.make_run_id`,
    which is used when ``root`` is None or the folder itself): ``lr=2e-5_seed=3_version_0-1a2b3c4d``."""
    base = make_run_id(run_dir)
    if root is None:
        return base
    try:
        rel = run_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return base
    if not rel.parts:
        return base
    return "_".join(rel.parts) + base[len(run_dir.resolve().name):]


def table_run_id(path: Path, key: str) -> str:
    """Run id of a run held by a row group of a table file: ``<key>-<8 hex of file + key>``."""
    digest = hashlib.sha1(f"{path.resolve()}\0{key}".encode()).hexdigest()[:8]
    name = re.sub(r"[^\w.=+-]+", "_", key).strip("_") or path.stem
    return f"{name}-{digest}"


def files_fingerprint(
    reader: str, run_dir: Path, options: Mapping[str, Any], files: Iterable[Path]
) -> str:
    """Fingerprint of a run read from other loggers' files: the reader's name and version,
    the resolved run folder, the options that change what is read (``--param``, ``--map``)
    and (path, size, mtime) of every file read. A rewritten file changes it; reading does not."""
    h = hashlib.sha256()
    h.update(json.dumps([STORE_VERSION, reader, str(run_dir.resolve()),
                         sorted(((str(k), str(v)) for k, v in options.items()))]).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


#: Side files of factors beside other loggers' files, in the order :func:`base_config` reads them.
SIDE_FILES = ("config.json", "run.json")


def side_files(run_dir: Path) -> list[Path]:
    """The side files :func:`base_config` reads in ``run_dir`` (those that exist)."""
    return [run_dir / n for n in SIDE_FILES if (run_dir / n).is_file()]


def prepare_record(
    reader: str, path: Path, options: PrepareOptions, *, files: Callable[[], list[Path]],
    read: Callable[[], RunRecord],
) -> RunInput:
    """The ``prepare`` of a reader of another logger's run folder: the run as a
    :class:`~stabstat.ingest.RunInput` whose fingerprint covers ``reader`` (name/version),
    ``--param``/``--map`` and every file read.

    ``files()`` lists the files ``read()`` will read, from their names only (no content): a
    run whose fingerprint from them equals the stored one (``options.known``) is answered
    ``unchanged`` without reading it, so re-ingesting a large tree costs one ``stat`` per file.

    Raises
    ------
    Reject
        ``read()`` raised a :class:`~stabstat.errors.StabstatError` (its one line).
    """
    key = {**options.params, **{f"--map {k}": v.describe() for k, v in options.tag_map.items()}}
    stored = options.known.get(run_id_for(path, options.root)) if options.known else None
    if stored is not None:
        try:
            early = files_fingerprint(reader, path, key, files())
        except OSError:
            early = None
        if early == stored:
            return RunInput(run_id=run_id_for(path, options.root), source=str(path), source_format=reader.split("/")[0],
                            run_json={}, status="", fingerprint=early, factors={}, unchanged=True)
    try:
        record = read()
    except StabstatError as exc:
        raise Reject(str(exc)) from None
    return record.to_run_input(files_fingerprint(reader, path, key, record.files))


def base_config(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """Factors every reader shares, lowest precedence first: hive folder names on the resolved
    path (``lr=2e-5/seed=3/``), then a Hugging Face ``run.json``/``config.json`` beside the
    logs (:func:`stabstat.ingest.runinfo.side_factors`). Returns ``(config, task, side files)``;
    the caller layers its own sources on top and ``--param`` values last.
    ``training_args.bin`` is a pickle and is never loaded."""
    config = hive_factors(run_dir.resolve())
    side, task, files = side_factors(run_dir, None, beside="the logs")
    config.update(side)
    return config, dict(task or {}), files


def iso_time(unix: float | None) -> str | None:
    """ISO 8601 UTC text of a Unix time (run.json's timestamps), None for None."""
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat()


@dataclass
class RunRecord:
    """One run read from another logger's files, format-free (what every reader here returns).

    ``tables``: contract table -> column -> values, columns in contract order (``run_id``
    included), equal lengths; ``steps`` and ``evals`` always, ``layer_grads`` when logged.
    ``config``: every factor and side value (scalars are the factors); ``task``: at least
    ``metrics``; ``environment``: where the values came from (files, tag mapping, notes).
    Times are ISO 8601 UTC text or None.
    """

    run_id: str
    source: str  #: the run folder (or table file) read
    source_format: str  #: ``tensorboard``, ``lightning``, ``table``
    status: str  #: a contract status (see :func:`run_status`)
    error: str | None
    config: dict[str, Any]
    task: dict[str, Any]
    environment: dict[str, Any]
    tables: dict[str, dict[str, list[Any]]]
    files: list[Path] = field(default_factory=list)  #: every file read
    notes: list[str] = field(default_factory=list)  #: what was skipped or renamed, one line each
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def factors(self) -> dict[str, Any]:
        """The scalar entries of ``config`` (one ``runs`` column each)."""
        return scalar_factors(self.config)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` as dicts keyed by column name (for tests and debugging)."""
        cols = self.tables.get(table, {})
        names = list(cols)
        return [dict(zip(names, values, strict=True)) for values in zip(*cols.values(), strict=True)]

    def run_json(self) -> dict[str, Any]:
        """The run.json-like metadata the store reads (``schema_version`` of the contract)."""
        return {"schema_version": schemas.load().version, "run_id": self.run_id, "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at, "error": self.error,
                "config": self.config, "task": self.task,
                "environment": {**self.environment, "notes": self.notes} if self.notes else self.environment}

    def to_run_input(self, fingerprint: str) -> RunInput:
        """The ingest's :class:`~stabstat.ingest.RunInput` for this run."""
        tables = {name: TableData(columns=cols, rows=len(cols["run_id"])) for name, cols in self.tables.items()}
        return RunInput(run_id=self.run_id, source=self.source, source_format=self.source_format,
                        run_json=self.run_json(), status=self.status, fingerprint=fingerprint,
                        factors=self.factors, tables=tables)
