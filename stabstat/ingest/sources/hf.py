"""Hugging Face Trainer logs (``trainer_state.json``): the reader and the ``hf`` source adapter.

A Hugging Face ``Trainer`` writes ``trainer_state.json`` into every checkpoint folder
(``<output_dir>/checkpoint-<step>/``) and, when ``trainer.save_state()`` is called, into the
output folder itself. Its ``log_history`` is a list of dicts:

* training entries ``{"loss", "grad_norm", "learning_rate", "epoch", "step"}``
  (``loss`` is the mean over the logging window, ``grad_norm`` the total norm before
  clipping; ``grad_norm`` only in newer versions),
* evaluation entries ``{"eval_loss", "eval_<metric>", "eval_runtime", ..., "epoch", "step"}``,
* a final ``{"train_runtime", "train_loss", ...}`` entry, which is ignored.

One *run directory* is the folder holding ``trainer_state.json`` or ``checkpoint-*/`` folders
that hold one. Every state file of a run is read, newest (highest ``global_step``) last, and a
step logged in several files keeps the newest file's entry, so the newest checkpoint wins and
no step appears twice.

The result has the same long tables as a stabstat run directory (``steps`` and ``evals``; no
``layer_grads``), and a ``run.json``-like dict. Factors (the ``config``) come from, in
increasing precedence:

1. hive-style folder names on the path (``.../bias_correction=false/seed=3/``),
2. a ``run.json`` (its ``config`` object, else its top-level scalars) or a ``config.json``
   beside the state file (a model ``config.json`` written by ``save_pretrained`` is not a
   list of factors: only its ``_name_or_path`` is taken, as ``model``),
3. ``--param key=value`` from the command line (``params``).

Values from folder names and ``--param`` are parsed with :func:`parse_value`
(:func:`stabstat.store.schema.parse_value`, re-exported here).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schemas
from stabstat.errors import InputFormatError, StabstatError
from stabstat.ingest.fingerprint import hf_fingerprint
from stabstat.ingest.runinfo import hive_factors, make_run_id, parse_param, side_factors
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, TableData, scalar_factors
from stabstat.ingest.sources import hf_duckdb, hf_typed
from stabstat.ingest.sources.hf_duckdb import STATE_SCALARS
from stabstat.store.load import JsonFiles, JsonReader
from stabstat.store.schema import parse_value

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "STATE_FILE",
    "HFRun",
    "HFSource",
    "hive_factors",
    "make_run_id",
    "is_hf_run_dir",
    "parse_param",
    "parse_value",
    "read_hf_run",
    "run_dir_of",
    "state_files",
]

STATE_FILE = "trainer_state.json"
#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one
#: (2: read by DuckDB; environment.trainer_state holds TrainerState's non-null scalars).
READER_VERSION = 2

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Per-evaluation bookkeeping keys of the Trainer, not metrics.
_EVAL_SKIP = set(hf_duckdb.EVAL_SKIP)


def run_dir_of(state_file: Path) -> Path:
    """The run directory of a state file: the folder above ``checkpoint-<n>/``, else its folder."""
    parent = state_file.parent
    if _CHECKPOINT_RE.match(parent.name):
        return parent.parent
    return parent


def state_files(run_dir: Path) -> list[Path]:
    """``trainer_state.json`` files of one run directory (its own and its checkpoints')."""
    found = []
    own = run_dir / STATE_FILE
    if own.is_file():
        found.append(own)
    if run_dir.is_dir():
        for sub in sorted(run_dir.iterdir()):
            if _CHECKPOINT_RE.match(sub.name) and (sub / STATE_FILE).is_file():
                found.append(sub / STATE_FILE)
    return found


def is_hf_run_dir(d: Path) -> bool:
    """Whether ``d`` holds a ``trainer_state.json`` itself or in a ``checkpoint-*`` folder."""
    return bool(state_files(d))


@dataclass
class HFRun:
    """One Hugging Face Trainer run read as a stabstat run."""

    run_id: str
    run_dir: Path
    run_json: dict[str, Any]  #: like a stabstat run.json: status, config, task, environment, ...
    #: ``"steps"`` and ``"evals"``: rows as lists in the contract's column order. Plain Python
    #: (no Arrow): building Arrow arrays from lists makes pyarrow import pandas (~0.7 s).
    rows: dict[str, list[list[Any]]]
    files: list[Path] = field(default_factory=list)  #: every file read
    fingerprint: str = ""

    def records(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` as dicts keyed by the contract's column names."""
        names = schemas.load().table(table).column_names
        return [dict(zip(names, row, strict=True)) for row in self.rows[table]]


def _first_value(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict whose repeated key keeps its first value, as DuckDB's reader
    (yyjson) reads it: the SQL paths and this reader agree on such a (hand-edited) file."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _load_state(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_first_value)
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg} "
            "(a truncated trainer_state.json; delete that checkpoint folder or re-save the state)"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("log_history"), list):
        raise InputFormatError(
            f"{path}: log_history: missing or not a list; not a Hugging Face Trainer state file"
        )
    return data


def _number(path: Path, i: int, key: str, value: Any, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputFormatError(
            f"{path}: log_history[{i}].{key}: expected a number, got {json.dumps(value)[:60]}"
        )
    return float(value)


def _step(path: Path, i: int, entry: Mapping[str, Any]) -> int:
    value = entry.get("step")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputFormatError(
            f"{path}: log_history[{i}].step: expected a non-negative integer, got {json.dumps(value)[:60]}"
        )
    return value


def _eval_prefixes(entry: Mapping[str, Any]) -> list[str]:
    prefixes = {k[: -len("_runtime")] for k in entry if k.endswith("_runtime") and k != "train_runtime"}
    if any(k.startswith("eval_") for k in entry):
        prefixes.add("eval")
    return sorted(p for p in prefixes if p)


def read_hf_run(
    run_dir: str | os.PathLike[str],
    *,
    params: Mapping[str, Any] | None = None,
) -> HFRun:
    """Read one Hugging Face Trainer run directory.

    Parameters
    ----------
    run_dir
        Folder holding ``trainer_state.json`` and/or ``checkpoint-<n>/trainer_state.json``.
    params
        Extra factors (``--param``), overriding folder names and side files.

    Returns
    -------
    HFRun
        ``rows["steps"]``: one row per logged training entry (step, epoch, loss = mean over the
        logging window, lr, grad_norm; wall_time is null); ``rows["evals"]``: one row per
        evaluation entry and metric, split ``eval`` (or the prefix of ``<prefix>_runtime``),
        metric without the prefix. Status: ``diverged`` if a logged loss is non-finite, else
        ``completed`` when the final ``train_runtime`` entry is present or ``global_step``
        reached ``max_steps``, else ``interrupted``.

    Raises
    ------
    InputFormatError
        No state file, malformed JSON, or a non-numeric value, naming the file and entry.
    """
    d = Path(run_dir)
    states = _read_states(d)
    run_id = make_run_id(d)
    rows, status, metrics = _rows_and_status(states, run_id)
    run_json, side_files = _metadata(d, states[-1], params, run_id, status, metrics)
    used = [f for f, _ in states] + side_files
    return HFRun(
        run_id=run_id, run_dir=d, run_json=run_json, rows=rows,
        files=used, fingerprint=hf_fingerprint(READER_VERSION, d, params, used),
    )


def _rows_and_status(
    states: list[tuple[Path, dict[str, Any]]], run_id: str,
) -> tuple[dict[str, list[list[Any]]], str, list[str]]:
    """The ``steps``/``evals`` rows (contract column order), the status and the metric names
    of a run's states (oldest first)."""
    newest = states[-1][1]
    train, evals, finished = _read_history(states)
    contract = schemas.load()
    steps_rows = [train[s] for s in sorted(train)]
    for row in steps_rows:  # finite-only columns: non-finite means undefined -> null
        for key in ("epoch", "lr"):
            if row[key] is not None and not math.isfinite(row[key]):
                row[key] = None
    steps_names = contract.table("steps").column_names
    steps = [[{"run_id": run_id, "wall_time": None, **r}[c] for c in steps_names] for r in steps_rows]
    keys = sorted(evals)
    evals_names = contract.table("evals").column_names
    evals_rows = [
        [{"run_id": run_id, "step": k[0], "split": k[1], "metric": k[2], "value": evals[k]}[c] for c in evals_names]
        for k in keys
    ]

    diverged = any(r["loss"] is not None and not math.isfinite(r["loss"]) for r in steps_rows)
    gs, ms = newest.get("global_step"), newest.get("max_steps")
    reached = isinstance(gs, int) and isinstance(ms, int) and ms > 0 and gs >= ms
    status = "diverged" if diverged else ("completed" if finished or reached else "interrupted")
    return {"steps": steps, "evals": evals_rows}, status, sorted({k[2] for k in keys})


def _metadata(
    d: Path, newest: tuple[Path, dict[str, Any]], params: Mapping[str, Any] | None,
    run_id: str, status: str, metrics: list[str] | None, resolved: Path | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """The run.json-like dict of an HF run (factors: folder names < side files < ``params``),
    and the side files read. ``metrics`` None: no ``task.metrics`` yet (a side file's stays).
    ``resolved``: ``d.resolve()`` when the caller has it."""
    newest_path, state = newest
    config = hive_factors(resolved if resolved is not None else d.resolve())
    side, task, side_files = side_factors(d, newest_path)
    config.update(side)
    config.update(params or {})
    task_info: dict[str, Any] = {} if metrics is None else {"metrics": metrics}
    if task:
        task_info.update(task)
    environment = {
        "source": f"Hugging Face Trainer {STATE_FILE}",
        "state_file": str(newest_path),
        "trainer_state": {k: state[k] for k in STATE_SCALARS
                          if k in state and isinstance(state[k], (bool, int, float, str))},
    }
    run_json: dict[str, Any] = {
        "schema_version": schemas.load().version,
        "run_id": run_id,
        "status": status,
        "started_at": None,
        "finished_at": None,
        "config": config,
        "task": task_info,
        "environment": environment,
    }
    return run_json, side_files


def _read_states(d: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every state file of run ``d`` with its content, oldest (lowest ``global_step``) first."""
    files = state_files(d)
    if not files:
        raise InputFormatError(f"{d}: no {STATE_FILE} here or in checkpoint-*/ folders")
    states = [(f, _load_state(f)) for f in files]

    def global_step(item: tuple[Path, dict[str, Any]]) -> tuple[int, int]:
        gs = item[1].get("global_step")
        gs_i = gs if isinstance(gs, int) and not isinstance(gs, bool) else -1
        # On a tie the run folder's own file (written by save_state at the end) wins.
        return gs_i, 1 if item[0].parent == d else 0

    states.sort(key=global_step)
    return states


def _read_history(
    states: list[tuple[Path, dict[str, Any]]],
) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, str, str], float | None], bool]:
    """The training entries (step -> steps row as a dict), the evaluations ((step, split,
    metric) -> value; non-finite -> None) and whether the final summary entry was seen.
    States go oldest first, so a newer file's entry for a step replaces an older one's."""
    train: dict[int, dict[str, Any]] = {}
    evals: dict[tuple[int, str, str], float | None] = {}
    finished = False
    for path, state in states:
        for i, entry in enumerate(state["log_history"]):
            if not isinstance(entry, dict):
                raise InputFormatError(f"{path}: log_history[{i}]: expected an object, got {json.dumps(entry)[:60]}")
            if "train_runtime" in entry:
                finished = True
                continue  # the summary entry (train_loss over the whole run) is not a step
            prefixes = _eval_prefixes(entry)
            if prefixes:
                step = _step(path, i, entry)
                for prefix in prefixes:
                    for key, value in entry.items():
                        if not key.startswith(prefix + "_"):
                            continue
                        metric = key[len(prefix) + 1:]
                        if metric in _EVAL_SKIP or isinstance(value, (list, dict, str)):
                            continue  # bookkeeping, or a non-scalar such as a confusion matrix
                        v = _number(path, i, key, value)
                        evals[(step, prefix, metric)] = v if v is None or math.isfinite(v) else None
                continue
            if "loss" in entry:
                step = _step(path, i, entry)
                train[step] = {
                    "step": step,
                    "epoch": _number(path, i, "epoch", entry.get("epoch")),
                    "loss": _number(path, i, "loss", entry.get("loss")),
                    "lr": _number(path, i, "learning_rate", entry.get("learning_rate")),
                    "grad_norm": _number(path, i, "grad_norm", entry.get("grad_norm")),
                }
    return train, evals, finished


# ---------------------------------------------------------------------------------------------
# The source adapter
# ---------------------------------------------------------------------------------------------


class HFSource:
    """Source adapter for Hugging Face Trainer logs (``--format hf``).

    A folder holding ``trainer_state.json`` itself or in ``checkpoint-*/`` is a run (strength
    2). A ``trainer_state.json`` or a ``checkpoint-<n>/`` folder given by the user belongs to
    the run above it. ``prepare`` reads no state file: it lists them, reads the side files and
    fingerprints the run from file sizes and modification times; DuckDB reads the state files
    of a whole batch at load time (:data:`READER`: plain files typed in one pass, see
    :mod:`.hf_typed`, the others with the SQL in :mod:`.hf_duckdb`), which also decides the
    status. A run DuckDB cannot load is read by :func:`read_hf_run` instead.
    """

    name: str = "hf"
    marker_files: tuple[str, ...] = (STATE_FILE,)

    def detect(self, path: Path) -> int:
        return 2 if is_hf_run_dir(path) else 0

    def locate(self, path: Path) -> Path | None:
        if path.is_file():
            return run_dir_of(path) if path.name == STATE_FILE else None
        if _CHECKPOINT_RE.match(path.name) and (path / STATE_FILE).is_file():
            return path.parent
        return None

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        files = state_files(path)
        if not files:
            raise Reject(f"{path}: no {STATE_FILE} here or in checkpoint-*/ folders")
        # Checkpoints (by folder name) first, the folder's own file last: DuckDB ranks the
        # files by global_step, then by this order, so the own file wins a tie as in read_hf_run.
        ordered = [f for f in files if f.parent != path] + [f for f in files if f.parent == path]
        newest_guess = ordered[-1] if ordered[-1].parent == path else max(ordered, key=_checkpoint_number)
        resolved = path.resolve()  # once: run id, folder factors and fingerprint all use it
        run_id = make_run_id(path, resolved=resolved)
        try:
            # task.metrics is set by _finish from the metric names DuckDB finds
            run_json, side_files = _metadata(path, (newest_guess, {}), options.params, run_id, "interrupted", None,
                                             resolved)
        except StabstatError as exc:
            raise Reject(str(exc)) from None
        fingerprint = hf_fingerprint(READER_VERSION, path, options.params, [*ordered, *side_files], resolved=resolved)
        if options.known.get(run_id) == fingerprint:
            return RunInput(run_id=run_id, source=str(path), source_format=self.name, run_json=run_json,
                            status="", fingerprint=fingerprint, factors={}, unchanged=True)
        sizes = [f.stat().st_size for f in ordered]
        jf = JsonFiles(READER, tuple(str(f) for f in ordered), max_bytes=max(sizes))
        # Row estimate for batching until finish() counts them: ~50 bytes of JSON per row at
        # most (a compact training entry is ~100 bytes), so a batch's staged JSON stays bounded.
        estimate = sum(sizes) // 50
        return RunInput(
            run_id=run_id, source=str(path), source_format=self.name, run_json=run_json, status="interrupted",
            fingerprint=fingerprint, factors=scalar_factors(run_json["config"]),
            tables={"steps": TableData(json=jf, rows=estimate), "evals": TableData(json=jf)},
        )


def _checkpoint_number(f: Path) -> int:
    m = _CHECKPOINT_RE.match(f.parent.name)
    return int(m.group(1)) if m else -1


def _finish(run: Any, facts: dict[str, Any]) -> None:
    """Complete a run from its facts row of :data:`hf_duckdb.FACTS` (status, metric names,
    the newest state file and its scalars, row counts); the rules of :func:`_rows_and_status`.
    A run without a facts row (DuckDB read none of its files) fails its batch."""
    if not facts:
        raise Reject(f"{run.source}: DuckDB read none of its {STATE_FILE} files")
    gs, ms = facts.get("global_step"), facts.get("max_steps")
    gs_v, ms_v = (json.loads(x) if x is not None else None for x in (gs, ms))
    reached = (isinstance(gs_v, int) and isinstance(ms_v, int) and not isinstance(gs_v, bool)
               and not isinstance(ms_v, bool) and ms_v > 0 and gs_v >= ms_v)
    if facts.get("diverged"):
        status = "diverged"
    else:
        status = "completed" if facts.get("finished") or reached else "interrupted"
    run.status = status
    rj = run.run_json
    rj["status"] = status
    rj["task"] = {"metrics": list(facts.get("metrics") or []), **rj["task"]}
    if facts.get("state_file"):
        rj["environment"]["state_file"] = facts["state_file"]
        scalars = {k: json.loads(facts[k]) for k in STATE_SCALARS if facts.get(k) is not None}
        rj["environment"]["trainer_state"] = {k: v for k, v in scalars.items()
                                              if isinstance(v, (bool, int, float, str))}
    run.tables["steps"].rows = int(facts.get("n_steps") or 0)
    run.tables["evals"].rows = int(facts.get("n_evals") or 0)


def _fallback(run: Any) -> None:
    """Read a run that DuckDB could not load with the Python reader: raise :class:`Reject`
    with its one-line reason, or swap its JSON tables for column lists."""
    d = Path(run.source)
    try:
        states = _read_states(d)
        rows, status, metrics = _rows_and_status(states, run.run_id)
    except StabstatError as exc:
        raise Reject(str(exc)) from None
    run.status = run.run_json["status"] = status
    run.run_json["task"] = {"metrics": metrics, **run.run_json["task"]}
    newest_path, state = states[-1]
    run.run_json["environment"]["state_file"] = str(newest_path)
    run.run_json["environment"]["trainer_state"] = {
        k: state[k] for k in STATE_SCALARS if k in state and isinstance(state[k], (bool, int, float, str))}
    contract = schemas.load()
    for name, table_rows in rows.items():
        names = contract.table(name).column_names
        columns = {c: [row[j] for row in table_rows] for j, c in enumerate(names)}
        run.tables[name] = TableData(columns=columns, rows=len(table_rows))


#: How DuckDB reads trainer_state.json files: plain files typed (:mod:`.hf_typed`), the others
#: as JSON text (:mod:`.hf_duckdb`), both into the same staged rows.
READER = JsonReader(
    name="hf", stage=hf_typed.stage, temp_tables=(*hf_duckdb.TEMP_TABLES, *hf_typed.TEMP_TABLES),
    selects=hf_duckdb.SELECTS, facts=hf_duckdb.FACTS, finish=_finish, fallback=_fallback,
)
