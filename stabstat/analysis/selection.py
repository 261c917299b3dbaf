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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import __version__
from stabstat import stats as S
from stabstat.analysis.columns import Column, Columns, bool_column, fetch_columns
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


class RunSet:
    """The selected runs: ``frame`` has one row per run with the columns ``run_id``,
    ``status``, one column per requested factor, ``seed`` (when a factor), ``task`` (when a
    factor), ``value`` (the metric), ``baseline``, ``failed`` (bool or null when no rule
    applies), ``train_loss_final``, ``diverged``. ``settings`` says how they were chosen.

    :func:`select_runs` gives the same rows as numpy :attr:`columns` too and builds the polars
    ``frame`` from them on first use (``compare`` reads the columns and never imports polars);
    a RunSet made from a frame has no columns."""

    def __init__(self, frame: pl.DataFrame | None, by: tuple[str, ...], settings: dict[str, Any],
                 warnings: list[str] | None = None, *, columns: Columns | None = None) -> None:
        if frame is None and columns is None:
            raise ValueError("RunSet needs a frame or columns")
        self._frame = frame
        self.columns = columns
        self.by = by
        self.settings = settings
        self.warnings = warnings if warnings is not None else []

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            assert self.columns is not None
            self._frame = self.columns.to_frame()
        return self._frame

    def __repr__(self) -> str:
        n = self.columns.height if self.columns is not None else self.frame.height
        return f"RunSet({n} runs, by={self.by!r})"


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


def _resolve_split(selection: Selection, splits: list[str]) -> str:
    """The split to analyse among ``splits`` (those the selected runs have, sorted)."""
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
    # One query for the (split, metric) pairs of the selected runs (it was two: splits, then
    # the split's metrics).
    pairs = store.con.execute(f"SELECT DISTINCT split, metric FROM evals WHERE run_id IN "
                              f"(SELECT run_id FROM ({ids_sql})) ORDER BY 1, 2", list(params)).fetchall()
    split = _resolve_split(selection, sorted({str(p[0]) for p in pairs}))
    metrics = [m for sp, m in pairs if sp == split]
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
    cols = fetch_columns(store.con, _selection_sql(store, ids_sql, by_cols, extra, sel.at), [*params, split, metric])
    cols, excluded, warnings = _exclude_incomplete(cols, sel)
    if cols.height == 0:
        raise SelectionError(f"no completed runs in the selection ({n_sel} matched, all with status "
                             f"{', '.join(excluded)}); use --include-incomplete to analyse them")
    hib = cols["higher_is_better"]
    hib_values = list(dict.fromkeys(hib.data[~hib.null].tolist()))
    higher = bool(hib_values[0]) if len(hib_values) == 1 else True
    if len(hib_values) > 1:
        warnings.append(f"runs disagree on whether higher {metric} is better; higher is assumed better")
    cols, fw = _apply_failure_rule(cols, sel, higher, metric)
    warnings += fw
    cols = cols.rename({f"__f{i}": c for i, c in enumerate(by_cols)} | {f"__x{i}": c for i, c in enumerate(extra)})
    warnings += _pooling_and_missing_warnings(cols, by_cols, split, metric)
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
    return RunSet(None, tuple(by_cols), settings, warnings, columns=cols)


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


def _exclude_incomplete(cols: Columns, sel: Selection) -> tuple[Columns, dict[str, int], list[str]]:
    """Leave out runs in :data:`STATUSES_EXCLUDED` (unless ``include_incomplete``): the
    rows, the counts left out per status and the warning saying so."""
    warnings: list[str] = []
    excluded: dict[str, int] = {}
    if not sel.include_incomplete:
        status = cols["status"].filled(None)
        drop = np.zeros(cols.height, dtype=bool)
        for st in STATUSES_EXCLUDED:
            hit = status == st
            if hit.any():
                excluded[st] = int(hit.sum())
                drop |= hit
        if drop.any():
            cols = cols.take(~drop)
        if excluded:
            warnings.append("left out (status): " + ", ".join(f"{v} {k}" for k, v in excluded.items())
                            + "; include them with --include-incomplete")
    return cols, excluded, warnings


def _pooling_and_missing_warnings(cols: Columns, by_cols: Sequence[str], split: str, metric: str) -> list[str]:
    warnings: list[str] = []
    if "task" in cols and "task" not in by_cols:
        tasks = sorted(set(v for v in cols["task"].to_list() if v is not None))
        if len(tasks) > 1:
            warnings.append(f"the selection pools {len(tasks)} tasks ({', '.join(map(str, tasks))}); "
                            "add --filter task=NAME to analyse one")
    n_missing = int(cols["value"].null.sum())
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


def _apply_failure_rule(cols: Columns, sel: Selection, higher: bool, metric: str
                        ) -> tuple[Columns, list[str]]:
    """Add ``baseline`` (the threshold per run) and ``failed`` (null when unknown: no
    baseline); the warning when some runs' failure is unknown.

    ``failed``, in order: diverged, or stopped (early, as doomed: ``--stop-doomed``), or no
    value -> True; else no baseline -> null; else the comparison with the threshold."""
    value, n = cols["value"], cols.height
    if sel.fail_below is not None or sel.baseline is not None:
        thr = float(sel.fail_below if sel.fail_below is not None else sel.baseline)  # type: ignore[arg-type]
        base = Column(np.full(n, thr), np.zeros(n, dtype=bool), "DOUBLE")
    else:
        maj = cols["majority"]
        base = Column(maj.data.astype(np.float64), maj.null, "DOUBLE")
    v = value.filled(np.nan).astype(np.float64)
    b = base.filled(np.nan)
    with np.errstate(invalid="ignore"):
        if sel.fail_below is not None:
            bad = (v < b) if higher else (v > b)
        else:
            # A tolerance: the metric and the majority score may be computed in different ways
            # (e.g. 146/277 as a mean of predictions vs as a count ratio) and differ in the last bit.
            bad = (v <= b + BASELINE_TOLERANCE) if higher else (v >= b - BASELINE_TOLERANCE)
    status = cols["status"].filled(None)
    stopped = status == "stopped"
    surely = cols["diverged"].filled(False).astype(bool) | stopped | value.null
    failed = surely | bad
    unknown_rule = ~surely & base.null
    cols = cols.with_column("baseline", base).with_column("failed", bool_column(failed & ~unknown_rule, unknown_rule))
    warnings: list[str] = []
    n_stopped = int(stopped.sum())
    if n_stopped:
        warnings.append(f"{n_stopped} run(s) stopped early by their --stop-doomed rule (status stopped): "
                        "counted as failed; leave them out with --where \"status <> 'stopped'\"")
    unknown = int(unknown_rule.sum())
    if unknown:
        warnings.append(f"{unknown} run(s) have no stored majority baseline for {metric}: failure unknown; "
                        "pass --baseline VALUE or --fail-below VALUE")
    return cols, warnings
