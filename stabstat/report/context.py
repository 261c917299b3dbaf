"""The report's context: the selection, the analysis results and the settings, gathered once.

:func:`build_context` selects the runs (:func:`stabstat.analysis.select_runs`, once), runs
:func:`stabstat.analysis.compare_frame` per task (only as far as the wanted figures need it)
and prepares the per-run frame every chart starts from. The figures
(:mod:`stabstat.report.figures`), tables (:mod:`stabstat.report.sections`), provenance and
methods text only read a :class:`ReportContext`.

This module is the one place of the report that runs analyses. Downstream the report reads
their typed rows (:mod:`stabstat.analysis.results`) by attribute, so the result dataclasses
are the one definition of the fields; only the JSON embedded in the page is their
``to_dict()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stabstat._text import level

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from stabstat.analysis import AnalysisResult, RunSet, Selection, Settings
    from stabstat.analysis.results import CompareGroup, Row
    from stabstat.claims import CheckResult
    from stabstat.store import Store

#: A task or a factor level as stored in the ``runs`` table.
Level = str | bool | int | float | None

#: Figures that need the per-configuration statistics (``compare``).
STAT_FIGURES = frozenset({"metric-by-config", "failure-rate", "forest"})


@dataclass(frozen=True)
class ConfigGroup:
    """One configuration of one task as the report shows it: ``panel`` (the task's label when
    the selection has several tasks, else None), ``config`` (the level as text) and ``stats``,
    its row of ``compare``."""

    panel: str | None
    config: str
    stats: CompareGroup


@dataclass
class ReportContext:
    """What one report is computed from (built by :func:`build_context`, read by the builders).

    ``run_settings`` is the selection's description (``RunSet.settings``: ``metric``, ``split``,
    ``at``, ``failure_rule``, ``higher_is_better``, ``selection``, ``n_selected``, ``excluded``).
    ``compares`` holds ``(task or None, compare result)``, one per task when the selection
    has several (``multi_task``), else one with task None. ``config_groups`` has one
    :class:`ConfigGroup` per (task, configuration), in that order. ``runs`` is one row per
    selected run with
    ``config``, ``failed`` (nulls as False), ``majority`` and, with several tasks, ``panel``.
    ``notes`` collects the messages the builders leave for the page (in page order).
    """

    store: Store
    selection: Selection
    settings: Settings
    only: Sequence[str] | None
    by: str
    runset: RunSet
    tasks: list[Level]
    compares: list[tuple[Level, AnalysisResult]]
    levels: list[str]
    config_groups: list[ConfigGroup]
    runs: pl.DataFrame
    warnings: list[str]
    loss_kw: dict[str, int] = field(default_factory=dict)
    grad_kw: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    prefetch: Prefetch | None = None  #: the chart data being computed meanwhile (if started)

    def close(self) -> None:
        """Stop and wait for the prefetch (if any); idempotent. :func:`build_report` calls it."""
        if self.prefetch is not None:
            self.prefetch.close()

    # ----------------------------------------------------------------- derived, read-only

    @property
    def frame(self) -> pl.DataFrame:
        """The selected runs as :func:`stabstat.analysis.select_runs` returned them."""
        return self.runset.frame

    @property
    def run_settings(self) -> dict[str, Any]:
        return self.runset.settings

    @property
    def metric(self) -> str:
        return str(self.run_settings["metric"])

    @property
    def split(self) -> str:
        return str(self.run_settings["split"])

    @property
    def metric_title(self) -> str:
        """``"dev accuracy"``, with `` (best)`` when the best value over steps is used."""
        return f"{self.split} {self.metric}" + (" (best)" if self.run_settings["at"] == "best"
                                                else "")

    @property
    def multi_task(self) -> bool:
        return len(self.tasks) > 1

    @property
    def confidence_pct(self) -> int:
        """The CI level as a whole percentage (95), truncated as the page always wrote it."""
        return int(self.settings.confidence * 100)

    @property
    def task_labels(self) -> list[str]:
        return [level(t) for t in self.tasks]

    @property
    def n_seeds(self) -> int | None:
        """Distinct seeds among the selected runs (None when seed is not a factor)."""
        frame = self.frame
        return frame.get_column("seed").n_unique() if "seed" in frame.columns else None

    def want(self, figure: str) -> bool:
        """Whether ``figure`` is computed (all of them unless ``only`` was given)."""
        return self.only is None or figure in self.only

    def tests(self) -> Iterator[tuple[Level, Row]]:
        """``(task, test row)`` of every compare result, in order."""
        for task, res in self.compares:
            for t in res.tests:
                yield task, t

    @cached_property
    def series_config(self) -> pl.DataFrame:
        """:attr:`runs` with ``config`` prefixed by the task (``"rte / true"``) when several
        tasks share a chart that has no panels (loss curves, metric against loss)."""
        import polars as pl

        if self.multi_task:
            return self.runs.with_columns(config=pl.col("panel") + " / " + pl.col("config"))
        return self.runs

    @cached_property
    def layer_gradients(self) -> pl.DataFrame:
        """Per-layer gradient quantiles of the selected runs (:mod:`stabstat.chartdata`),
        shared by the two gradient figures."""
        if self.prefetch is not None and "layer_gradients" in self.prefetch:
            return cast("pl.DataFrame", self.prefetch.result("layer_gradients"))
        return _layer_gradients(self, self.store.con, _sel_runs(self))

    def loss_curves(self) -> pl.DataFrame:
        """Loss curves (or bands, beyond ``max_runs``) of the selected runs."""
        if self.prefetch is not None and "loss_curves" in self.prefetch:
            return cast("pl.DataFrame", self.prefetch.result("loss_curves"))
        return _loss_curves(self, self.store.con, _sel_runs(self))

    def gradient_collapse(self) -> AnalysisResult:
        """The collapse test of :func:`stabstat.analysis.gradients` over the selected runs
        (grouped by failure status only), without what the page does not show (the per-layer
        section, the log10-ratio bootstrap): the selection is not made again."""
        if self.prefetch is not None and "gradient_collapse" in self.prefetch:
            return cast("AnalysisResult", self.prefetch.result("gradient_collapse"))
        return _gradient_collapse(self, self.store.con)

    def check_claims(self, path: str | Path, settings: Settings | None, *,
                     sequential: bool = False) -> CheckResult:
        """:func:`stabstat.claims.check` of a claims file (``settings``: see
        :func:`stabstat.claims.claims_settings`; ``sequential``: confidence sequences)."""
        from stabstat.claims import check

        return check(self.store, path, settings=settings, sequential=sequential)

    def runs_table(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        return runs_table(self.store, columns)


def _sel_runs(ctx: ReportContext) -> pl.DataFrame:
    """The runs frame of the chart data (``run_id``, ``config``, ``failed``)."""
    return ctx.series_config.select("run_id", "config", "failed")


def _layer_gradients(ctx: ReportContext, con: duckdb.DuckDBPyConnection,
                     runs: pl.DataFrame) -> pl.DataFrame:
    from stabstat import chartdata

    return chartdata.layer_gradients_data(con, runs, **ctx.grad_kw)


def _loss_curves(ctx: ReportContext, con: duckdb.DuckDBPyConnection,
                 runs: pl.DataFrame) -> pl.DataFrame:
    from stabstat import chartdata

    return chartdata.loss_curves_data(con, runs, **ctx.loss_kw)


def _gradient_collapse(ctx: ReportContext, con: duckdb.DuckDBPyConnection) -> AnalysisResult:
    from stabstat.analysis.gradients import gradients_frame

    return gradients_frame(con, ctx.runset, settings=ctx.settings, per_layer=False, ratio_test=False)


class Prefetch:
    """The chart data's DuckDB aggregations, started before the statistics and run meanwhile.

    The report's two costs are DuckDB scans of the big tables (loss bands, per-layer
    gradients, the collapse table: seconds over 36 M layer rows) and numpy statistics
    (``compare``), then Altair. They are independent, and DuckDB releases the GIL while it
    runs a query, so one worker thread runs the scans, in the order the figures need them, on
    a second connection to the same database (:meth:`duckdb.DuckDBPyConnection.cursor`: its
    own temp tables, the same locked configuration) while the main thread computes the
    statistics and builds the charts. Each result is the same as the sequential call's (the
    same functions, the same data); an error is raised where the result is asked for.
    """

    def __init__(self, ctx: ReportContext) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._cursor = ctx.store.con.cursor()
        with contextlib.suppress(Exception):  # the configuration may be locked
            self._cursor.execute("SET enable_progress_bar = false")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stabstat-report")
        self._futures: dict[str, Future[Any]] = {}
        cur = self._cursor
        runs = _sel_runs(ctx)  # here: the worker reads only finished frames
        if ctx.want("loss-curves"):
            self._futures["loss_curves"] = self._pool.submit(_loss_curves, ctx, cur, runs)
        if ctx.want("layer-gradients") or ctx.want("gradient-heatmap"):
            grads = self._pool.submit(_layer_gradients, ctx, cur, runs)
            self._futures["layer_gradients"] = grads
            if ctx.want("layer-gradients"):
                # Only when there is something to draw, as the figure asks for it (without
                # per-layer norms it may raise what the figure never sees). One worker runs
                # the jobs in order, so ``grads`` is done when this job starts.
                self._futures["gradient_collapse"] = self._pool.submit(
                    lambda: _gradient_collapse(ctx, cur) if grads.result().height else None)

    def __contains__(self, name: str) -> bool:
        return name in self._futures

    def result(self, name: str) -> Any:
        """The result of job ``name`` (waits for it; raises what the job raised)."""
        return self._futures[name].result()

    def close(self) -> None:
        """Cancel the jobs not started, interrupt a running one (its result is no longer
        wanted: the page is built, or the report failed), wait for it, close the connection."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if any(f.running() for f in self._futures.values()):
            with contextlib.suppress(Exception):
                self._cursor.interrupt()
        self._pool.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self._cursor.close()


def runs_table(store: Store, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Columns of the ``runs`` table (default: the factors and ``finished_at``), by run_id.

    Read directly: ``store.runs()`` also computes every run's final metrics."""
    from stabstat.store import fetch_frame, quote_ident

    cols = list(columns) if columns is not None else [*store.factors(), "finished_at"]
    sql = "SELECT run_id" + "".join(f", {quote_ident(c)}" for c in cols) + " FROM runs"
    return fetch_frame(store.con, sql)


# --------------------------------------------------------------------------- building it


def build_context(store: Store, *, by: str | None, selection: Selection | None,
                  settings: Settings | None, only: Sequence[str] | None,
                  max_runs_drawn: int | None = None, loss_points: int | None = None,
                  grad_points: int | None = None, prefetch: bool = False) -> ReportContext:
    """Select the runs and compute the statistics a report (or ``only`` its figures) needs.

    ``prefetch=True`` starts the chart data's DuckDB aggregations (:class:`Prefetch`) before
    the statistics, to run meanwhile; the caller must then :meth:`ReportContext.close` the
    context (also on error) before closing the store.

    Raises SelectionError / QueryError as :func:`stabstat.analysis.select_runs` does, and
    SelectionError when ``by`` is None and not exactly one factor varies.
    """
    from stabstat import analysis as A
    from stabstat.report.configs import choose_configuration, combine_factors

    sel = selection or A.Selection()
    cfg = settings or A.Settings()
    # DuckDB draws a progress bar on stdout for long queries; a report must not.
    with contextlib.suppress(Exception):
        store.con.execute("SET enable_progress_bar = false")
    if by is None:  # one factor, or aliased factors named by all of them (report.configs)
        names = choose_configuration(store, A.select_runs(store, [], selection=sel).frame, only)
    else:
        names = [by]
    runset = combine_factors(A.select_runs(store, names, selection=sel), names)
    by = runset.by[0]
    frame = runset.frame
    tasks: list[Level] = []
    if "task" in frame.columns and by != "task":
        tasks = frame.get_column("task").unique().sort(nulls_last=True).to_list()
    multi_task = len(tasks) > 1
    warnings = [w for w in runset.warnings if not w.startswith("the selection pools")]

    loss_kw: dict[str, int] = {}
    if max_runs_drawn is not None:
        loss_kw["max_runs"] = max_runs_drawn
    if loss_points is not None:
        loss_kw["points"] = loss_points
    ctx = ReportContext(
        store=store, selection=sel, settings=cfg, only=only, by=by, runset=runset,
        tasks=tasks, compares=[], levels=[], config_groups=[],
        runs=_runs_frame(frame, by, multi_task), warnings=warnings, loss_kw=loss_kw,
        grad_kw={"points": grad_points} if grad_points is not None else {},
    )
    if prefetch:
        ctx.prefetch = Prefetch(ctx)
    try:
        need_stats = only is None or bool(STAT_FIGURES & set(only))
        ctx.compares = _compare_per_task(runset, tasks, cfg) if need_stats else []
    except BaseException:
        ctx.close()
        raise
    for t, res in ctx.compares:
        prefix = f"{t}: " if multi_task else ""
        warnings += [prefix + w for w in res.warnings if w not in runset.warnings]
    ctx.config_groups = [ConfigGroup(level(t) if multi_task else None, level(g.key[by]), g)
                         for t, res in ctx.compares for g in cast("list[CompareGroup]", res.groups)]
    ctx.levels = _levels(ctx.config_groups, frame, by)
    return ctx


def _compare_per_task(runset: RunSet, tasks: list[Level],
                      cfg: Settings) -> list[tuple[Level, AnalysisResult]]:
    """``compare_frame`` per task (one part with task None when there is one task at most)."""
    import polars as pl

    from stabstat import analysis as A

    parts: list[tuple[Level, RunSet]] = []
    if len(tasks) > 1:
        frame = runset.frame
        for t in tasks:
            sub = frame.filter(pl.col("task") == t) if t is not None else frame.filter(
                pl.col("task").is_null())
            parts.append((t, A.RunSet(sub, runset.by, runset.settings, [])))
    else:
        parts.append((None, runset))
    return [(t, A.compare_frame(part, settings=cfg)) for t, part in parts]


def _levels(config_groups: list[ConfigGroup], frame: pl.DataFrame, by: str) -> list[str]:
    """Configuration labels in the compare results' order (first appearance over tasks)."""
    levels = list(dict.fromkeys(cg.config for cg in config_groups))
    if levels:
        return levels
    # statistics skipped (``only``): order the levels like compare does
    vals = [v for v in frame.get_column(by).unique().to_list() if v is not None]
    try:
        vals.sort()
    except TypeError:
        vals.sort(key=str)
    return [level(v) for v in vals] + (["null"] if frame.get_column(by).null_count() else [])


def _runs_frame(frame: pl.DataFrame, by: str, multi_task: bool) -> pl.DataFrame:
    """The per-run frame the charts share: ``config`` label, ``panel`` (several tasks only),
    ``majority`` (the failure baseline) and ``failed`` with nulls as False."""
    import polars as pl

    runs = frame.with_columns(
        config=pl.col(by).map_elements(level, return_dtype=pl.String)
        if frame.schema[by] != pl.String else pl.col(by).fill_null("null"),
        panel=(pl.col("task").cast(pl.String).fill_null("null") if multi_task else pl.lit(None,
               dtype=pl.String)),
        majority=pl.col("baseline"),
    )
    if not multi_task:
        runs = runs.drop("panel")
    # a run with unknown failure status is drawn as successful; the summary says how many
    return runs.with_columns(pl.col("failed").fill_null(False))
