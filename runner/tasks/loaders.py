"""Task loading: GLUE TSVs, the Hugging Face hub, your own CSV/TSV/JSONL files (:func:`load_task`).

Every loader returns a :class:`~runner.tasks.taskdata.TaskData`: texts (one or two per
example), integer labels, the label names, the task's metrics and the majority-class dev score
of each metric.

GLUE tasks (``task = "rte" | "mrpc" | "cola" | "sst2" | "qnli"``) are read, in this order, from

1. ``data_dir/<TASK>/{train,dev}.tsv`` -- the layout of GLUE's ``download_glue_data.py``
   (``--data-dir`` on the command line, else ``$STABSTAT_GLUE_DIR``);
2. the hub (``nyu-mll/glue``) when neither is given and the machine is not offline
   (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` unset).

The TSVs are read with ``datasets``' CSV builder with quoting off (GLUE sentences contain bare
quotes), the UTF-8 BOM of MRPC's header stripped, CoLA's header-less columns named, and every
text/label column kept as a string (so "null" or "1.0" is never re-typed).

``task = "synthetic"`` is generated from the model's tokenizer (:mod:`runner.tasks.synthetic`);
metrics and majority baselines are in :mod:`runner.tasks.metrics`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runner.tasks.metrics import BINARY_ONLY, METRICS
from runner.tasks.taskdata import TaskData
from stabstat.errors import ConfigError, InputFormatError

__all__ = [
    "GLUE_ENV",
    "GLUE_TASKS",
    "TaskSpec",
    "canonical_task",
    "known_tasks",
    "load_task",
    "resolve_data_dir",
]

GLUE_ENV = "STABSTAT_GLUE_DIR"


@dataclass(frozen=True)
class TaskSpec:
    """How to read one GLUE task."""

    name: str  #: canonical name, e.g. "rte"
    folder: str  #: folder in the GLUE directory, e.g. "RTE"
    text_a: str
    text_b: str | None
    label: str
    label_values: tuple[str, ...]  #: label strings in id order (id = position)
    metrics: tuple[str, ...]
    header: bool = True
    column_names: tuple[str, ...] | None = None  #: for header-less files
    hub: tuple[str, str] = ("nyu-mll/glue", "")
    hub_text: tuple[str, str | None] = ("sentence", None)


GLUE_TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec(
        "rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"),
        ("accuracy",), hub=("nyu-mll/glue", "rte"), hub_text=("sentence1", "sentence2"),
    ),
    "mrpc": TaskSpec(
        "mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("0", "1"),
        ("accuracy", "f1", "acc_f1"), hub=("nyu-mll/glue", "mrpc"), hub_text=("sentence1", "sentence2"),
    ),
    "cola": TaskSpec(
        "cola", "CoLA", "sentence", None, "label", ("0", "1"), ("mcc",), header=False,
        column_names=("source", "label", "original_label_mark", "sentence"),
        hub=("nyu-mll/glue", "cola"), hub_text=("sentence", None),
    ),
    "sst2": TaskSpec(
        "sst2", "SST-2", "sentence", None, "label", ("0", "1"), ("accuracy",),
        hub=("nyu-mll/glue", "sst2"), hub_text=("sentence", None),
    ),
    "qnli": TaskSpec(
        "qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"),
        ("accuracy",), hub=("nyu-mll/glue", "qnli"), hub_text=("question", "sentence"),
    ),
}
_ALIASES = {"sst-2": "sst2"}


def known_tasks() -> list[str]:
    """Names accepted as ``task`` without ``train_file``/``dev_file``."""
    return [*GLUE_TASKS, "synthetic"]


def canonical_task(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def _quiet_datasets() -> Any:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _offline() -> bool:
    return any(os.environ.get(v, "").strip() not in ("", "0", "false", "False")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _labels_to_ids(values: Sequence[Any], label_values: Sequence[str], *, file: str, column: str,
                   task: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(label_values)}
    ids = np.empty(len(values), dtype=np.int64)
    bad: set[str] = set()
    for j, v in enumerate(values):
        k = index.get(str(v).strip())
        if k is None:
            bad.add(str(v))
            continue
        ids[j] = k
    if bad:
        shown = ", ".join(repr(b) for b in sorted(bad)[:5])
        raise InputFormatError(
            f"{file}: column {column!r}: value(s) {shown} are not labels of task {task} "
            f"(expected one of {', '.join(label_values)}); fix the file or the task's label_column"
        )
    return ids


def _load_glue_tsv(spec: TaskSpec, data_dir: Path) -> TaskData:
    folder = data_dir / spec.folder
    files = {split: folder / f"{split}.tsv" for split in ("train", "dev")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputFormatError(
            f"task {spec.name}: missing data file(s) {', '.join(missing)}; expected the GLUE layout "
            f"<data-dir>/{spec.folder}/{{train,dev}}.tsv (pass --data-dir DIR, e.g. glue_data)"
        )
    datasets = _quiet_datasets()
    wanted = [c for c in (spec.text_a, spec.text_b, spec.label) if c is not None]
    kw: dict[str, Any] = {
        "delimiter": "\t",
        "quoting": csv.QUOTE_NONE,
        "keep_default_na": False,
        "na_filter": False,
        "encoding": "utf-8-sig",  # MRPC's header starts with a BOM
        "converters": dict.fromkeys(wanted, str),
    }
    if not spec.header:
        kw.update(header=None, column_names=list(spec.column_names or ()))
    out: dict[str, tuple[list[str], list[str] | None, np.ndarray]] = {}
    for split, path in files.items():
        try:
            ds = datasets.load_dataset("csv", data_files={"train": str(path)}, split="train", **kw)
        except Exception as exc:  # pandas/arrow parse errors: name the file
            raise InputFormatError(f"{path}: cannot read as a GLUE {spec.folder} TSV: {exc}") from exc
        for c in wanted:
            if c not in ds.column_names:
                raise InputFormatError(
                    f"{path}: column {c!r} not found (columns: {', '.join(ds.column_names)}); "
                    f"is this the {spec.folder} file of the GLUE layout?"
                )
        labels = _labels_to_ids(ds[spec.label], spec.label_values, file=str(path), column=spec.label,
                                task=spec.name)
        out[split] = (
            [str(t) for t in ds[spec.text_a]],
            None if spec.text_b is None else [str(t) for t in ds[spec.text_b]],
            labels,
        )
    return TaskData(
        name=spec.name, train_a=out["train"][0], train_b=out["train"][1], train_labels=out["train"][2],
        dev_a=out["dev"][0], dev_b=out["dev"][1], dev_labels=out["dev"][2],
        label_names=spec.label_values, metrics=spec.metrics, source=str(folder),
    )


def _load_glue_hub(spec: TaskSpec) -> TaskData:  # pragma: no cover - needs the network
    datasets = _quiet_datasets()
    repo, name = spec.hub
    ds = datasets.load_dataset(repo, name)
    a, b = spec.hub_text
    parts = {}
    for split, hub_split in (("train", "train"), ("dev", "validation")):
        d = ds[hub_split]
        labels = np.asarray(d["label"], dtype=np.int64)
        if labels.min() < 0 or labels.max() >= len(spec.label_values):
            raise InputFormatError(f"hub {repo}/{name} {hub_split}: labels outside 0..{len(spec.label_values) - 1}")
        parts[split] = (list(d[a]), None if b is None else list(d[b]), labels)
    return TaskData(
        name=spec.name, train_a=parts["train"][0], train_b=parts["train"][1], train_labels=parts["train"][2],
        dev_a=parts["dev"][0], dev_b=parts["dev"][1], dev_labels=parts["dev"][2],
        label_names=spec.label_values, metrics=spec.metrics, source=f"hub:{repo}/{name}",
    )


def _load_table_file(path: Path) -> Any:
    datasets = _quiet_datasets()
    suffix = path.suffix.lower()
    kw: dict[str, Any] = {}
    if suffix in (".jsonl", ".json"):
        builder = "json"
    elif suffix in (".csv", ".tsv"):
        builder = "csv"
        kw = {"keep_default_na": False, "na_filter": False}
        if suffix == ".tsv":
            kw.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        raise InputFormatError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .jsonl or .json")
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train", **kw)
    except Exception as exc:
        raise InputFormatError(f"{path}: cannot read: {exc}") from exc


def _load_custom(name: str, config: Mapping[str, Any]) -> TaskData:
    paths = {}
    for key in ("train_file", "dev_file"):
        value = config.get(key)
        if not value:
            raise ConfigError(f"task {name!r}: {key} is required for a task that is not built in "
                              f"(built in: {', '.join(known_tasks())})")
        p = Path(str(value)).expanduser()
        if not p.is_file():
            raise InputFormatError(f"{key} = {str(value)!r}: file not found")
        paths[key] = p
    text_col = config.get("text_column") or "text"
    pair_col = config.get("text_pair_column")
    label_col = config.get("label_column") or "label"
    metrics = tuple(config.get("metrics") or ("accuracy",))
    loaded = {k: _load_table_file(p) for k, p in paths.items()}
    for k, ds in loaded.items():
        for c in (text_col, pair_col, label_col):
            if c is not None and c not in ds.column_names:
                raise InputFormatError(
                    f"{paths[k]}: column {c!r} not found (columns: {', '.join(ds.column_names)}); "
                    "set text_column / text_pair_column / label_column"
                )
    label_values = config.get("label_values")
    if label_values:
        label_values = tuple(str(v) for v in label_values)
    else:
        seen = {str(v).strip() for v in loaded["train_file"][label_col]}
        try:  # numeric labels sort as numbers (2 before 10)
            label_values = tuple(sorted(seen, key=float))
        except ValueError:
            label_values = tuple(sorted(seen))
    if len(label_values) < 2:
        raise InputFormatError(f"{paths['train_file']}: column {label_col!r} has fewer than 2 distinct labels")
    for m in metrics:
        if m not in METRICS:
            raise ConfigError(f"metrics: unknown metric {m!r} (known: {', '.join(METRICS)})")
        if m in BINARY_ONLY and len(label_values) != 2:
            raise ConfigError(f"metrics: {m} needs 2 labels, task {name!r} has {len(label_values)}")
    parts = {}
    for key, ds in loaded.items():
        labels = _labels_to_ids(ds[label_col], label_values, file=str(paths[key]), column=label_col, task=name)
        parts[key] = ([str(t) for t in ds[text_col]],
                      None if pair_col is None else [str(t) for t in ds[pair_col]], labels)
    tr, dv = parts["train_file"], parts["dev_file"]
    return TaskData(
        name=name, train_a=tr[0], train_b=tr[1], train_labels=tr[2], dev_a=dv[0], dev_b=dv[1],
        dev_labels=dv[2], label_names=label_values, metrics=metrics,
        source=f"{paths['train_file']}, {paths['dev_file']}",
    )


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """``data_dir``, else ``$STABSTAT_GLUE_DIR``, else None (hub)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(GLUE_ENV)
    return Path(env).expanduser() if env else None


def load_task(
    config: Mapping[str, Any],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
) -> TaskData:
    """Load the task a run config names (``task`` plus, for your own files, ``train_file`` ...).

    ``tokenizer`` is needed only for ``task = "synthetic"`` (the task is generated from its
    vocabulary). The training subset (``n_train``, ``data_seed``) is applied by the caller with
    :func:`subsample`.

    Raises
    ------
    ConfigError
        Unknown task name without ``train_file``/``dev_file``.
    InputFormatError
        Missing files, unreadable files, missing columns, labels the task does not define.
    """
    raw = str(config.get("task", ""))
    if config.get("train_file") or config.get("dev_file"):
        return _load_custom(raw, config)
    name = canonical_task(raw)
    if name == "synthetic":
        from runner.tasks.synthetic import generate_from_tokenizer

        if tokenizer is None:
            raise ConfigError("task 'synthetic' is generated from the model's tokenizer; none was given")
        return generate_from_tokenizer(tokenizer)
    spec = GLUE_TASKS.get(name)
    if spec is None:
        raise ConfigError(
            f"task = {raw!r}: unknown task (built in: {', '.join(known_tasks())}); for your own "
            "data set give train_file and dev_file (CSV/TSV/JSONL with text and label columns)"
        )
    root = resolve_data_dir(data_dir)
    if root is not None:
        return _load_glue_tsv(spec, root)
    if _offline():
        raise InputFormatError(
            f"task {name}: no local data and the hub is off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); "
            f"pass --data-dir DIR holding {spec.folder}/train.tsv and {spec.folder}/dev.tsv, "
            f"or set ${GLUE_ENV}"
        )
    return _load_glue_hub(spec)  # pragma: no cover - needs the network
