"""Which runs and which number per run: :class:`Selection`, :class:`Settings`, :func:`select_runs`.

:func:`select_runs` builds the one selection query (``runs`` LEFT JOIN ``run_summary`` at
the chosen split/metric LEFT JOIN ``run_training``) and applies the failure rule; every
analysis starts from its :class:`RunSet`. :func:`resolve_factor` is the one place where a
user-given factor name is matched to the store's factor column.

The failure rule (Mosbach et al. 2021): a run *fails* when its metric (final by default)
is at or below its majority-class baseline (at or above, for a lower-is-better metric;
within :data:`BASELINE_TOLERANCE`), or when it diverged, or when it has no value for the
metric. ``Selection.baseline`` replaces the stored majority with one value (same "at or
below" rule); ``Selection.fail_below`` fails runs strictly below a value instead.
:func:`failure_rule_text` is its one text rendering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import __version__
from stabstat import stats as S
from stabstat.errors import QueryError, SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = [
    "BASELINE_TOLERANCE", "STATUSES_EXCLUDED", "RunSet", "Selection", "Settings", "failure_rule_text",
    "resolve_factor", "select_runs",
]

#: Run statuses left out unless ``Selection.include_incomplete``: a run still running or
#: interrupted was not trained to the end, and ``failed`` (an exception) is usually the
#: infrastructure, not the recipe. Diverged runs stay in (and count as failed), and so do runs
#: ``stopped`` early by ``stabstat-run --stop-doomed``: their rule judged them doomed, and leaving
#: them out would hide exactly the failures the rule predicted (the warnings say so).
STATUSES_EXCLUDED = ("running", "interrupted", "failed")
#: "At or below the baseline" allows this much rounding difference.
BASELINE_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Selection:
    """Which runs and which number per run.

    filters: ``key=value`` strings (or a mapping) over factor columns, all must hold.
    where: extra SQL condition over the ``runs`` table's columns; it can only narrow the
    filtered runs, and on a store opened with ``external_access=False`` (as the CLI does) it
    cannot read files. params: values of its ``?`` placeholders, in order.
    metric / split: default the task's main metric (``accuracy`` when evaluated, else the
    first of ``task.metrics``) and split ``dev`` (or the only split; ``train`` counts only
    when it is the only one).
    at: ``final`` (value at the last evaluation) or ``best`` (best over evaluations).
    baseline / fail_below: failure thresholds overriding the stored majority baseline.
    include_incomplete: keep runs whose status is in :data:`STATUSES_EXCLUDED`.
    """

    filters: tuple[str, ...] | Mapping[str, Any] = ()
    where: str | None = None
    metric: str | None = None
    split: str | None = None
    at: str = "final"
    baseline: float | None = None
    fail_below: float | None = None
    include_incomplete: bool = False
    params: tuple[Any, ...] = ()

    def describe(self) -> dict[str, Any]:
        filters = dict(self.filters) if isinstance(self.filters, Mapping) else list(self.filters)
        out = {"filters": filters, "where": self.where, "at": self.at,
               "include_incomplete": self.include_incomplete}
        return out | ({"params": list(self.params)} if self.params else {})


@dataclass(frozen=True)
class Settings:
    """How the statistics are computed (recorded in every result)."""

    resamples: int = S.DEFAULT_RESAMPLES
    seed: int = S.DEFAULT_SEED
    #: ``auto`` (BCa, percentile where it covers better at small n: ``stats.default_ci_method``),
    #: ``bca`` or ``percentile``.
    ci_method: str = "auto"
    confidence: float = S.DEFAULT_CONFIDENCE
    correction: str = "holm"

    def describe(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "ci_method": self.ci_method,
                "confidence": self.confidence, "correction": self.correction}

    def rng(self, *salt: int) -> np.random.Generator:
        """A generator for one sub-computation: the seed plus a fixed salt, so results do
        not depend on which other statistics were computed before."""
        return np.random.default_rng([self.seed, *salt])


@dataclass
class RunSet:
    """The selected runs: ``frame`` has one row per run with the columns ``run_id``,
    ``status``, one column per requested factor, ``seed`` (when a factor), ``task`` (when a
    factor), ``value`` (the metric), ``baseline``, ``failed`` (bool or null when no rule
    applies), ``train_loss_final``, ``diverged``. ``settings`` says how they were chosen."""

    frame: pl.DataFrame
    by: tuple[str, ...]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- factor names


def resolve_factor(store: Store, name: str) -> str:
    """The store's factor column a user-given ``name`` means: the exact name, else the one
    factor equal to it ignoring case (the same matching as ``Store.quote_factor``).

    Raises
    ------
    SelectionError
        Not a factor (or ambiguous); the message lists the factors.
    """
    store.quote_factor(name)  # raises SelectionError listing the factors
    factors = store.factors()
    return name if name in factors else next(f for f in factors if f.lower() == name.lower())


# --------------------------------------------------------------------------- SQL


def _scalar(store: Store, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """The first column of a query's rows."""
    return [r[0] for r in store.con.execute(sql, list(params)).fetchall()]


def _selected_ids_sql(store: Store, selection: Selection) -> tuple[str, list[Any]]:
    """SQL selecting ``runs`` rows of the selection (all columns) and its parameters.

    The filters are applied in a subquery and the user's ``--where`` one level up, inside
    its own parentheses (on lines of their own, so a ``--`` comment ends there): whatever
    the expression says, it can only narrow the filtered rows. :func:`check_where` makes
    sure it cannot close those parentheses. Its ``?`` placeholders take ``selection.params``.
    """
    cond, params = store.filter_sql(selection.filters)
    sql = f"SELECT * FROM runs WHERE ({cond})"
    if selection.where:
        check_where(selection.where)
        sql = f"SELECT * FROM ({sql}) AS runs WHERE (\n{selection.where}\n)"
        params = [*params, *selection.params]
    elif selection.params:
        raise SelectionError("--param is given without --where: use it for the ? placeholders of --where, "
                             "e.g. --where \"lr > ?\" --param 2e-5")
    return sql, params


def check_where(where: str) -> None:
    """Refuse a ``--where`` expression that is not one self-contained expression: one whose
    parentheses (outside strings and comments) close more than they open, or a ``;``.

    Raises
    ------
    QueryError
        Naming ``--where`` and the fix.
    """
    import duckdb

    try:
        tokens = duckdb.tokenize(where)
    except duckdb.Error as exc:
        raise QueryError(f"--where {where!r}: {str(exc).splitlines()[0]}") from None
    depth = 0
    ends = [start for start, _ in tokens[1:]] + [len(where)]
    for (start, kind), end in zip(tokens, ends, strict=True):
        if kind != duckdb.token_type.operator:
            continue  # brackets inside strings, quoted names and comments do not count
        for ch in where[start:end]:
            depth += ch == "("
            depth -= ch == ")"
            if ch == ";" or depth < 0:
                raise QueryError(f"--where {where!r}: must be one condition over the runs table's columns "
                                 "(unbalanced ')' or a ';'); e.g. --where \"lr > 1e-5 AND task = 'rte'\"")
    if depth != 0:
        raise QueryError(f"--where {where!r}: unbalanced '('; close every parenthesis")


def _selection_sql(store: Store, ids_sql: str, by_cols: Sequence[str], extra: Sequence[str], at: str) -> str:
    """The selection query: one row per selected run with its metric value (parameters: the
    ids query's, then split and metric). Factor columns come out as ``__f<i>`` (grouping,
    in ``by_cols`` order) and ``__x<i>`` (carried, in ``extra`` order), renamed after the
    failure rule."""
    q = store.quote_factor
    fcols = "".join(f", s.{q(c)} AS __f{i}" for i, c in enumerate(by_cols))
    # Aliases by position: a factor name (spaces, quotes, keywords) never becomes SQL text
    # except through quote_factor.
    xcols = "".join(f", s.{q(c)} AS __x{i}" for i, c in enumerate(extra))
    value_col = "final_value" if at == "final" else "best_value"
    return f"""
        WITH s AS ({ids_sql}),
        m AS (SELECT * FROM run_summary WHERE split = ? AND metric = ?)
        SELECT s.run_id, s.status{fcols}{xcols},
               m.{value_col} AS value, m.final_step, m.higher_is_better, m.majority,
               t.train_loss_final, coalesce(t.diverged, s.status = 'diverged') AS diverged
        FROM s LEFT JOIN m USING (run_id) LEFT JOIN run_training t USING (run_id)
        ORDER BY s.run_id"""


def _resolve_split(store: Store, selection: Selection, ids_sql: str, params: list[Any]) -> str:
    splits = _scalar(store, f"SELECT DISTINCT split FROM evals WHERE run_id IN (SELECT run_id FROM ({ids_sql})) "
                     "ORDER BY 1", params)
    if not splits:
        raise SelectionError("the selected runs have no evaluations (evals table is empty for them); "
                             "nothing to analyse")
    split = selection.split
    if split is None:
        # issue 12: `train` holds other loggers' training-time extras (stabstat.ingest.tags),
        # not an evaluation: the default only when no other split exists
        candidates = [s for s in splits if s != "train"] or splits
        split = "dev" if "dev" in candidates else candidates[0] if len(candidates) == 1 else None
        if split is None:
            raise SelectionError(f"several splits and none is 'dev': pass --split (one of {', '.join(splits)})")
    elif split not in splits:
        raise SelectionError(f"unknown split {split!r}; splits of the selected runs: {', '.join(splits)}")
    return str(split)


def _resolve_split_metric(store: Store, selection: Selection, ids_sql: str, params: list[Any]) -> tuple[str, str]:
    split = _resolve_split(store, selection, ids_sql, params)
    metrics = _scalar(store, f"SELECT DISTINCT metric FROM evals WHERE split = ? AND run_id IN "
                      f"(SELECT run_id FROM ({ids_sql})) ORDER BY 1", [split, *params])
    metric = selection.metric
    if metric is None:
        if "accuracy" in metrics:
            metric = "accuracy"
        else:
            declared = _scalar(store, f"SELECT json_extract_string(task_info, '$.metrics[0]') FROM ({ids_sql}) "
                               "WHERE task_info IS NOT NULL", params)
            metric = next((m for m in declared if m in metrics), None)
            if metric is None:
                candidates = [m for m in metrics if "loss" not in m.lower()] or metrics
                metric = candidates[0]
    elif metric not in metrics:
        raise SelectionError(f"unknown metric {metric!r} on split {split!r}; metrics: {', '.join(metrics)}")
    return split, metric


# --------------------------------------------------------------------------- selection


def select_runs(store: Store, by: Sequence[str] = (), *, selection: Selection | None = None,
                extra: Sequence[str] = ()) -> RunSet:
    """The selected runs with their metric value and failure flag (see :class:`RunSet`).

    ``extra`` names further factors to carry as columns (not grouping factors).

    Raises
    ------
    SelectionError
        Unknown factor, split or metric (the message lists those that exist), a bad
        filter, or an empty selection.
    QueryError
        ``selection.where`` is not valid SQL over the runs table.
    """
    from stabstat.store import fetch_frame

    sel = selection or Selection()
    if sel.at not in ("final", "best"):
        raise SelectionError(f"--at must be 'final' or 'best', got {sel.at!r}")
    if sel.baseline is not None and sel.fail_below is not None:
        raise SelectionError("give either --baseline or --fail-below, not both")
    by_cols = [resolve_factor(store, name) for name in by]
    ids_sql, params = _selected_ids_sql(store, sel)
    n_sel = _count_selected(store, ids_sql, params, sel)
    split, metric = _resolve_split_metric(store, sel, ids_sql, params)
    carried = [resolve_factor(store, name) for name in extra]
    factors = store.factors()
    extra = list(dict.fromkeys(c for c in ("seed", "task", *carried) if c in factors and c not in by_cols))
    frame = fetch_frame(store.con, _selection_sql(store, ids_sql, by_cols, extra, sel.at),
                        [*params, split, metric])
    frame, excluded, warnings = _exclude_incomplete(frame, sel)
    if frame.height == 0:
        raise SelectionError(f"no completed runs in the selection ({n_sel} matched, all with status "
                             f"{', '.join(excluded)}); use --include-incomplete to analyse them")
    hib_values = frame["higher_is_better"].drop_nulls().unique().to_list()
    higher = bool(hib_values[0]) if len(hib_values) == 1 else True
    if len(hib_values) > 1:
        warnings.append(f"runs disagree on whether higher {metric} is better; higher is assumed better")
    frame, fw = _apply_failure_rule(frame, sel, higher, metric)
    warnings += fw
    frame = frame.rename({f"__f{i}": c for i, c in enumerate(by_cols)} | {f"__x{i}": c for i, c in enumerate(extra)})
    warnings += _pooling_and_missing_warnings(frame, by_cols, split, metric)
    settings = {
        "selection": sel.describe(),
        "metric": metric,
        "split": split,
        "at": sel.at,
        "higher_is_better": higher,
        "failure_rule": failure_rule_text(sel, metric, higher),
        "n_selected": n_sel,
        "excluded": excluded,
        "stabstat_version": __version__,
        "database": str(store.path),
    }
    return RunSet(frame, tuple(by_cols), settings, warnings)


def _count_selected(store: Store, ids_sql: str, params: list[Any], sel: Selection) -> int:
    """How many ``runs`` rows the selection matches; an empty selection is an error."""
    import duckdb

    try:
        n_sel = int(_scalar(store, f"SELECT count(*) FROM ({ids_sql})", params)[0])
    except duckdb.PermissionException:
        raise QueryError(f"--where {sel.where!r}: reads files, the network or extensions, which the analysis "
                         "commands do not allow; write a condition over the runs table's columns "
                         "(use `stabstat query` for your own SQL)") from None
    except duckdb.Error as exc:
        raise QueryError(f"--where {sel.where!r}: {str(exc).splitlines()[0]}") from None
    if n_sel == 0:
        total = _scalar(store, "SELECT count(*) FROM runs")[0]
        raise SelectionError(f"the selection matched no runs ({total} runs in {store.path}); "
                             "check --filter/--where (stabstat runs lists them)")
    return n_sel


def _exclude_incomplete(frame: pl.DataFrame, sel: Selection) -> tuple[pl.DataFrame, dict[str, int], list[str]]:
    """Leave out runs in :data:`STATUSES_EXCLUDED` (unless ``include_incomplete``): the
    frame, the counts left out per status and the warning saying so."""
    import polars as pl

    warnings: list[str] = []
    excluded: dict[str, int] = {}
    if not sel.include_incomplete:
        for st in STATUSES_EXCLUDED:
            k = int((frame["status"] == st).sum())
            if k:
                excluded[st] = k
        frame = frame.filter(~pl.col("status").is_in(list(STATUSES_EXCLUDED)) | pl.col("status").is_null())
        if excluded:
            warnings.append("left out (status): " + ", ".join(f"{v} {k}" for k, v in excluded.items())
                            + "; include them with --include-incomplete")
    return frame, excluded, warnings


def _pooling_and_missing_warnings(frame: pl.DataFrame, by_cols: Sequence[str], split: str, metric: str) -> list[str]:
    warnings: list[str] = []
    if "task" in frame.columns and "task" not in by_cols:
        tasks = frame["task"].drop_nulls().unique().sort().to_list()
        if len(tasks) > 1:
            warnings.append(f"the selection pools {len(tasks)} tasks ({', '.join(map(str, tasks))}); "
                            "add --filter task=NAME to analyse one")
    n_missing = int(frame["value"].is_null().sum())
    if n_missing:
        warnings.append(f"{n_missing} run(s) have no {split}/{metric} value: counted as failed, "
                        "left out of the metric statistics")
    return warnings


# --------------------------------------------------------------------------- the failure rule


def failure_rule_text(selection: Selection, metric: str, higher: bool, *, sentence: bool = False) -> str:
    """The failure rule in words: the short form recorded as ``settings["failure_rule"]``
    (``"accuracy at or below the run's majority-class baseline, or diverged, or no value"``),
    or with ``sentence=True`` the clause of the report's methods text (``"its accuracy is at
    or below the majority-class baseline of its task, when its training diverged, or when it
    has no accuracy value"``)."""
    worse = "at or below" if higher else "at or above"
    if selection.fail_below is not None:
        thr = f"{'below' if higher else 'above'} {float(selection.fail_below):g}"
        option = " (--fail-below)"
    elif selection.baseline is not None:
        thr = f"{worse} {float(selection.baseline):g}"
        option = " (--baseline)"
    else:
        thr = f"{worse} " + ("the majority-class baseline of its task" if sentence
                             else "the run's majority-class baseline")
        option = ""
    if sentence:
        return f"its {metric} is {thr}, when its training diverged, or when it has no {metric} value"
    return f"{metric} {thr}{option}, or diverged, or no value"


def _apply_failure_rule(frame: pl.DataFrame, sel: Selection, higher: bool, metric: str
                        ) -> tuple[pl.DataFrame, list[str]]:
    """Add ``baseline`` (the threshold per run) and ``failed`` (null when unknown: no
    baseline); the warning when some runs' failure is unknown."""
    import polars as pl

    warnings: list[str] = []
    value = pl.col("value")
    if sel.fail_below is not None:
        thr = float(sel.fail_below)
        base = pl.lit(thr)
        bad = (value < thr) if higher else (value > thr)
    else:
        base = pl.lit(float(sel.baseline)) if sel.baseline is not None else pl.col("majority")
        # A tolerance: the metric and the majority score may be computed in different ways
        # (e.g. 146/277 as a mean of predictions vs as a count ratio) and differ in the last bit.
        bad = (value <= base + BASELINE_TOLERANCE) if higher else (value >= base - BASELINE_TOLERANCE)
    frame = frame.with_columns(baseline=base.cast(pl.Float64))
    failed = (
        pl.when(pl.col("diverged").fill_null(False)).then(True)
        .when(pl.col("status") == "stopped").then(True)  # stopped early as doomed (--stop-doomed)
        .when(value.is_null()).then(True)
        .when(pl.col("baseline").is_null()).then(None)
        .otherwise(bad)
    )
    frame = frame.with_columns(failed=failed.cast(pl.Boolean))
    n_stopped = int((frame["status"] == "stopped").sum())
    if n_stopped:
        warnings.append(f"{n_stopped} run(s) stopped early by their --stop-doomed rule (status stopped): "
                        "counted as failed; leave them out with --where \"status <> 'stopped'\"")
    unknown = int(frame["failed"].is_null().sum())
    if unknown:
        warnings.append(f"{unknown} run(s) have no stored majority baseline for {metric}: failure unknown; "
                        "pass --baseline VALUE or --fail-below VALUE")
    return frame, warnings
