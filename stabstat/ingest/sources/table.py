"""Tidy tables (CSV, TSV, Parquet, JSONL) holding many runs: the reader and the ``table`` adapter.

One file holds many runs, in one of three shapes (``--shape``, inferred by default):

``long``
    One row per run, step and metric: ``run, step, metric, value`` (+ ``split``) + factor
    columns (constant within a run). Inferred when a metric and a value column exist.
``history``
    One row per run and step, one column per metric (tracker exports: W&B/MLflow history):
    ``run, step, train/loss, eval/accuracy, ...`` + factor columns. Inferred when a step
    column exists but no metric/value columns.
``results``
    One row per run, factor and final-score columns (a paper's per-seed results table):
    ``lr, seed, accuracy, test_f1``. Inferred otherwise.

===============================  ==============================================================
source                           stabstat
===============================  ==============================================================
run column (``--run-col``;       run id ``<value>-<8 hex of file + value>``; without one:
``run_id``, ``run``, ...)        one run per file (long/history) or per row (results; the id
                                 from its factor values)
step column (``--step-col``;     ``step`` (results tables have none: step 0)
``step``, ``global_step``, ...)
metric + value (long)            by :func:`stabstat.ingest.tags.map_tag`, or with a split
                                 column by :func:`stabstat.ingest.tags.split_target`
metric columns (history)         by :func:`stabstat.ingest.tags.map_tag`
score columns (results)          ``evals`` (split by prefix, else ``--split``, default ``dev``;
                                 metric = the rest of the name)
factor columns (``--factor``)    factors (constant within a run), under ``--param``
===============================  ==============================================================

Inferred factors: every column that is not a role column and not numeric-and-varying, plus
numeric columns with a conventional factor name (``lr``, ``seed``, ... :data:`FACTOR_NAMES`) or
a ``config.``/``config/`` prefix. What was inferred is returned as summary lines for the CLI
to print (:attr:`TableRead.summary`). Null cells are "not logged" and make no row. Values are
taken as written (a percent score stays 71.2: the summary warns when scores exceed 1).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabstat.errors import InputFormatError, StabstatError
from stabstat.ingest.runinfo import hive_factors
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, TableOptions
from stabstat.ingest.tags import (
    EXTRA_SPLIT,
    Collector,
    RunRecord,
    Target,
    files_fingerprint,
    map_tag,
    run_status,
    split_target,
    table_run_id,
)

if TYPE_CHECKING:
    import polars as pl

__all__ = ["FACTOR_NAMES", "TABLE_SUFFIXES", "TableOptions", "TableRead", "TableSource", "read_table"]

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".jsonl", ".ndjson")
#: Bumped when the reader's output changes, so re-ingesting replaces runs read by an older one.
READER_VERSION = 1
#: Numeric columns with these names (lower case) are factors, not scores.
FACTOR_NAMES = frozenset({
    "seed", "lr", "learning_rate", "bias_correction", "warmup_ratio", "warmup_steps", "epochs",
    "num_train_epochs", "max_steps", "batch_size", "per_device_train_batch_size", "n_train",
    "weight_decay", "max_grad_norm", "dropout", "adam_epsilon", "adam_beta1", "adam_beta2",
})
_RUN_COLS = ("run_id", "run", "run_name", "name", "id")
_STEP_COLS = ("step", "global_step", "_step", "steps", "iteration", "iter")
_METRIC_COLS = ("metric", "tag", "key", "metric_name")
_VALUE_COLS = ("value", "metric_value", "score")
_SPLIT_COLS = ("split",)
SHAPES = ("auto", "long", "history", "results")


@dataclass
class TableRead:
    """What :func:`read_table` found: the runs, the roles used, and lines saying what was inferred."""

    runs: list[RunRecord]
    shape: str
    roles: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def _read_frame(path: Path) -> pl.DataFrame:
    """The file as a polars frame; CSV/TSV rows are first checked for a ragged row."""
    import polars as pl

    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputFormatError(f"{path}: unknown table type {suffix or '(none)'}; expected one of "
                               f"{', '.join(TABLE_SUFFIXES)}")
    try:
        if suffix in (".csv", ".tsv", ".tab"):
            sep = "," if suffix == ".csv" else "\t"
            _check_ragged(path, sep)
            return pl.read_csv(path, separator=sep, infer_schema_length=None)
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        return pl.read_ndjson(path)
    except InputFormatError:
        raise
    except (OSError, UnicodeDecodeError, pl.exceptions.PolarsError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFormatError(f"{path}: cannot be read as a {suffix[1:]} table: {first}") from exc


def _check_ragged(path: Path, sep: str) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, [])
        for row in reader:
            if row and len(row) != len(header):
                raise InputFormatError(
                    f"{path}: line {reader.line_num}: {len(row)} cells, the header has {len(header)}; "
                    "fix or delete the row")


def _pick(columns: Sequence[str], given: str | None, names: Sequence[str], role: str) -> str | None:
    """The column playing ``role``: ``given`` (checked), else the first conventional name present."""
    if given is not None:
        if given not in columns:
            raise InputFormatError(f"--{role}-col {given!r}: no such column; columns: {', '.join(columns)}")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _roles(df: pl.DataFrame, opts: TableOptions) -> tuple[str, dict[str, str | None]]:
    cols = df.columns
    roles = {
        "run": _pick(cols, opts.run_col, _RUN_COLS, "run"),
        "step": _pick(cols, opts.step_col, _STEP_COLS, "step"),
        "metric": _pick(cols, opts.metric_col, _METRIC_COLS, "metric"),
        "value": _pick(cols, opts.value_col, _VALUE_COLS, "value"),
        "split": _pick(cols, opts.split_col, _SPLIT_COLS, "split"),
    }
    shape = opts.shape
    if shape not in SHAPES:
        raise InputFormatError(f"--shape {shape!r}: expected one of {', '.join(SHAPES)}")
    if shape == "auto":
        shape = "long" if roles["metric"] and roles["value"] else "history" if roles["step"] else "results"
    if shape == "long" and not (roles["metric"] and roles["value"]):
        raise InputFormatError("--shape long: needs a metric and a value column (--metric-col, --value-col)")
    if shape in ("long", "history") and not roles["step"]:
        raise InputFormatError(f"--shape {shape}: needs a step column (--step-col)")
    if shape != "long":
        roles["metric"] = roles["value"] = roles["split"] = None
    if shape == "results":
        roles["step"] = None
    return shape, roles


def _is_factor_like(df: pl.DataFrame, col: str, run: str | None) -> bool:
    """Inferred factor: a conventional factor name, a non-numeric column, or (in tables with a
    run column) a non-float column constant within every run."""
    low = col.lower()
    if low in FACTOR_NAMES or low.startswith(("config.", "config/")):
        return True
    dtype = df.schema[col]
    if not dtype.is_numeric():
        return True
    return False if run is None else not dtype.is_float() and _constant(df, col, run)


def _constant(df: pl.DataFrame, col: str, run: str | None) -> bool:
    import polars as pl

    if run is None:
        return bool(df[col].n_unique() <= 1)
    most = df.group_by(run).agg(pl.col(col).n_unique()).get_column(col).max()
    return int(most or 0) <= 1  # type: ignore[arg-type]


def _factor_columns(df: pl.DataFrame, shape: str, roles: Mapping[str, str | None],
                    opts: TableOptions) -> tuple[list[str], list[str], list[str]]:
    """``(factors, value columns, skipped)``: value columns are the metrics (history) or
    scores (results); long tables have none (skipped: varying non-numeric columns)."""
    used = {c for c in roles.values() if c}
    rest = [c for c in df.columns if c not in used]
    run = roles["run"]
    if opts.factors is not None:
        missing = [c for c in opts.factors if c not in df.columns]
        if missing:
            raise InputFormatError(f"--factor {missing[0]!r}: no such column; columns: {', '.join(df.columns)}")
        factors = list(opts.factors)
    elif shape == "results":
        factors = [c for c in rest if _is_factor_like(df, c, None)]
    else:
        factors = [c for c in rest if _is_factor_like(df, c, run)]
    skipped: list[str] = []
    if shape != "results":
        for c in list(factors):
            if not _constant(df, c, run):
                if opts.factors is not None:
                    raise InputFormatError(f"--factor {c!r}: varies within a run; a factor is constant per run")
                factors.remove(c)
                skipped.append(c)
    values = [c for c in rest if c not in factors and c not in skipped]
    if shape == "long":
        skipped += values
        values = []
    else:
        non_numeric = [c for c in values if not df.schema[c].is_numeric()]
        skipped += non_numeric
        values = [c for c in values if c not in non_numeric]
    return factors, values, skipped


def _row_keys(df: pl.DataFrame, factors: Sequence[str]) -> list[str]:
    """Run keys of a results table without a run column: ``lr=2e-05_seed=3`` from the factor
    values when they tell the rows apart, else ``row<n>`` (1-based)."""
    keys = ["_".join(f"{c}={v}" for c, v in zip(factors, row, strict=True))
            for row in df.select(factors).iter_rows()] if factors else []
    if not keys or len(set(keys)) != len(keys):
        keys = [f"row{i + 1}" for i in range(df.height)]
    return keys


def _collect(part: pl.DataFrame, shape: str, roles: Mapping[str, str | None], values: Sequence[str],
             collector: Collector, opts: TableOptions) -> None:
    """The values of one run's rows -> ``collector``."""
    if shape == "results":
        row = part.row(0, named=True)
        for col in values:
            v = row[col]
            if v is None:
                continue
            target = collector.custom.get(col) or split_target(*_score_split(col, opts.split))
            collector.custom.setdefault(col, target)
            collector.add(col, 0, float(v))
        return
    step_col = roles["step"]
    assert step_col is not None
    steps = part.get_column(step_col).to_list()
    if shape == "history":
        for col in values:
            for s, v in zip(steps, part.get_column(col).to_list(), strict=True):
                if v is not None and s is not None:
                    collector.add(col, int(s), float(v))
        return
    metric_col, value_col, split_col = roles["metric"], roles["value"], roles["split"]
    assert metric_col is not None and value_col is not None
    metrics = part.get_column(metric_col).cast(str).to_list()
    vals = part.get_column(value_col).to_list()
    splits = part.get_column(split_col).cast(str).to_list() if split_col else [None] * len(metrics)
    for s, m, v, sp in zip(steps, metrics, vals, splits, strict=True):
        if v is None or s is None or m is None:
            continue
        tag = m if sp is None else f"{sp}/{m}"
        if sp is not None and tag not in collector.custom:
            collector.custom[tag] = split_target(sp, m)
        collector.add(tag, int(s), float(v))


def _score_split(col: str, default: str) -> tuple[str, str]:
    """``(split, metric)`` of a results-table score column (``test_f1`` -> test, f1)."""
    t = map_tag(col)
    if t.table == "evals" and not t.extra and t.split != EXTRA_SPLIT:
        return t.split or default, t.name
    return default, col


def _check_numbers(df: pl.DataFrame, path: Path, shape: str, roles: Mapping[str, str | None],
                   values: Sequence[str]) -> None:
    numeric = [roles["value"]] if shape == "long" else list(values)
    for col in [roles["step"], *numeric]:
        if col and not df.schema[col].is_numeric():
            bad = df.get_column(col).drop_nulls().head(1).to_list()
            raise InputFormatError(f"{path}: column {col!r}: expected numbers, got {str(bad[:1])[1:-1][:40]}; "
                                   "fix the column or give the roles (--step-col, --value-col)")


def read_table(
    path: str | Path,
    options: TableOptions | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    tag_map: Mapping[str, Target] | None = None,
) -> TableRead:
    """Read every run of one table file (shapes and mapping: see the module docstring).

    Returns
    -------
    TableRead
        ``runs`` in the order they first appear; ``summary``: one line per inferred role.

    Raises
    ------
    InputFormatError
        Unreadable file, a ragged CSV row, an unknown ``--*-col``/``--factor`` column, a
        non-numeric step or value column, a ``--factor`` that varies within a run.
    """
    p = Path(path)
    opts = options or TableOptions()
    df = _read_frame(p)
    shape, roles = _roles(df, opts)
    factors, values, skipped = _factor_columns(df, shape, roles, opts)
    _check_numbers(df, p, shape, roles, values)
    run = roles["run"]
    if run is not None:
        parts = df.partition_by(run, maintain_order=True, include_key=True)
        keys = [str(part.get_column(run)[0]) for part in parts]
    elif shape == "results":
        parts = [df.slice(i, 1) for i in range(df.height)]
        keys = _row_keys(df, factors)
    else:
        parts, keys = [df], [p.stem]
    base = hive_factors(p.resolve().parent)
    runs = [_run(p, part, key, shape, roles, factors, values, opts, base, params, tag_map)
            for part, key in zip(parts, keys, strict=True)]
    summary = _summary(p, df, shape, roles, factors, values, skipped, opts)
    return TableRead(runs=runs, shape=shape, roles={**roles, "factors": factors, "values": values}, summary=summary)


def _run(p: Path, part: pl.DataFrame, key: str, shape: str, roles: Mapping[str, str | None],
         factors: Sequence[str], values: Sequence[str], opts: TableOptions, base: Mapping[str, Any],
         params: Mapping[str, Any] | None, tag_map: Mapping[str, Target] | None) -> RunRecord:
    collector = Collector(tag_map)
    _collect(part, shape, roles, values, collector, opts)
    first = part.row(0, named=True) if part.height else {}
    config = {**base, **{c: first.get(c) for c in factors}, **(params or {})}
    run_id = table_run_id(p, key)
    status, error = run_status(collector.losses, points=collector.points, damage=None)
    environment = {"source": f"table {p.name} ({shape})", "files": [str(p)], "run_key": key,
                   "tags": collector.tag_summary()}
    return RunRecord(
        run_id=run_id, source=str(p), source_format=TableSource.name, status=status, error=error,
        config=config, task={"metrics": collector.metrics()}, environment=environment,
        tables=collector.tables(run_id), files=[p], notes=list(collector.notes),
    )


def _summary(p: Path, df: pl.DataFrame, shape: str, roles: Mapping[str, str | None], factors: Sequence[str],
             values: Sequence[str], skipped: Sequence[str], opts: TableOptions) -> list[str]:
    """Lines saying how the file was read, for the CLI to print."""
    how = {"long": "long (run, step, metric, value)", "history": "history (one row per run and step)",
           "results": "results (one row per run)"}[shape]
    lines = [f"{p.name}: {df.height} rows read as {how}{'' if opts.shape == 'auto' else ' (--shape)'}"]
    for role in ("run", "step", "metric", "value", "split"):
        if roles[role]:
            lines.append(f"  {role} column: {roles[role]}")
    if roles["run"] is None:
        lines.append("  no run column: " + ("one run per row" if shape == "results" else "the whole file is one run"))
    lines.append(f"  factors{'' if opts.factors is not None else ' (inferred)'}: {', '.join(factors) or 'none'}")
    if values:
        label = "scores" if shape == "results" else "metric columns"
        lines.append(f"  {label}: {', '.join(values)}")
    if shape == "results":
        lines.append(f"  scores recorded at step 0; split {opts.split!r} unless the name has a split prefix")
        big = [c for c in values if (df.get_column(c).max() or 0) > 1]  # type: ignore[operator]
        if big:
            lines.append(f"  warning: {', '.join(big)} exceed 1: percent? the contract wants fractions")
    if skipped:
        lines.append(f"  ignored (vary within a run or not numeric): {', '.join(skipped)}")
    return lines


class TableSource:
    """Source adapter for tidy tables (``--format table``).

    Never detected in a folder with ``--format auto`` (a stray CSV in a run folder must not
    become runs): a table file is read when the user names it, or, with ``--format table``,
    every table file under the folders named (``runs_are_files``: the walker offers files,
    not folders). A contract table file inside a stabstat run folder (``steps.parquet``
    beside ``run.json``) is not a table of runs and is not claimed. One file holds many
    runs: :meth:`prepare_many` returns them all; :meth:`prepare` serves a file of one run.
    Column roles come from ``options.table``; the lines saying what was inferred go to
    ``options.inform``.
    """

    name: str = "table"
    marker_files: tuple[str, ...] = tuple(f"*{s}" for s in TABLE_SUFFIXES)
    #: runs are files (not folders): with ``--format table`` the walker offers every file
    runs_are_files: bool = True

    def detect(self, path: Path) -> int:
        return 0

    def locate(self, path: Path) -> Path | None:
        if not (path.is_file() and path.suffix.lower() in TABLE_SUFFIXES):
            return None
        return None if (path.parent / "run.json").is_file() else path

    def prepare_many(self, path: Path, options: PrepareOptions) -> list[RunInput]:
        """Every run of table file ``path`` (see :func:`read_table`); :class:`Reject` when unreadable."""
        try:
            read = read_table(path, options.table, params=options.params, tag_map=options.tag_map)
        except StabstatError as exc:
            raise Reject(str(exc)) from None
        if options.inform is not None:
            for line in read.summary:
                options.inform(line)
        key = {**options.params, **{f"--map {k}": v.describe() for k, v in options.tag_map.items()},
               "options": repr(options.table)}
        return [r.to_run_input(files_fingerprint(f"{self.name}/{READER_VERSION}/{r.run_id}", path, key, [path]))
                for r in read.runs]

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        runs = self.prepare_many(path, options)
        if len(runs) != 1:
            raise Reject(f"{path}: holds {len(runs)} runs; ingest it with the table adapter's prepare_many")
        return runs[0]
