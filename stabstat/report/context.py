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
        from stabstat import chartdata

        sel_runs = self.series_config.select("run_id", "config", "failed")
        return chartdata.layer_gradients_data(self.store, sel_runs, **self.grad_kw)

    def loss_curves(self) -> pl.DataFrame:
        """Loss curves (or bands, beyond ``max_runs``) of the selected runs."""
        from stabstat import chartdata

        sel_runs = self.series_config.select("run_id", "config", "failed")
        return chartdata.loss_curves_data(self.store, sel_runs, **self.loss_kw)

    def gradient_collapse(self) -> AnalysisResult:
        """The collapse test of :func:`stabstat.analysis.gradients` over the selected runs
        (grouped by failure status only), without what the page does not show (the per-layer
        section, the log10-ratio bootstrap): the selection is not made again."""
        from stabstat.analysis.gradients import gradients_frame

        return gradients_frame(self.store, self.runset, settings=self.settings, per_layer=False, ratio_test=False)

    def check_claims(self, path: str | Path, settings: Settings | None, *,
                     sequential: bool = False) -> CheckResult:
        """:func:`stabstat.claims.check` of a claims file (``settings``: see
        :func:`stabstat.claims.claims_settings`; ``sequential``: confidence sequences)."""
        from stabstat.claims import check

        return check(self.store, path, settings=settings, sequential=sequential)

    def runs_table(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        return runs_table(self.store, columns)


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
                  grad_points: int | None = None) -> ReportContext:
    """Select the runs and compute the statistics a report (or ``only`` its figures) needs.

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

    need_stats = only is None or bool(STAT_FIGURES & set(only))
    compares = _compare_per_task(runset, tasks, cfg) if need_stats else []
    for t, res in compares:
        prefix = f"{t}: " if multi_task else ""
        warnings += [prefix + w for w in res.warnings if w not in runset.warnings]
    config_groups = [ConfigGroup(level(t) if multi_task else None, level(g.key[by]), g)
                     for t, res in compares for g in cast("list[CompareGroup]", res.groups)]

    loss_kw: dict[str, int] = {}
    if max_runs_drawn is not None:
        loss_kw["max_runs"] = max_runs_drawn
    if loss_points is not None:
        loss_kw["points"] = loss_points
    return ReportContext(
        store=store, selection=sel, settings=cfg, only=only, by=by, runset=runset,
        tasks=tasks, compares=compares, levels=_levels(config_groups, frame, by),
        config_groups=config_groups,
        runs=_runs_frame(frame, by, multi_task), warnings=warnings, loss_kw=loss_kw,
        grad_kw={"points": grad_points} if grad_points is not None else {},
    )


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


def _choose_by(store: Store, runs: pl.DataFrame) -> str:
    """The factor to compare when ``--by`` is not given: the one non-seed factor that varies."""
    import polars as pl

    from stabstat.errors import SelectionError

    ids = runs.get_column("run_id").to_list()
    table = runs_table(store).filter(pl.col("run_id").is_in(ids))
    varying = []
    for name in store.factors():
        if name in ("seed", "task") or name not in table.columns:
            continue
        k = table.get_column(name).n_unique()
        if 1 < k < table.height or (k == table.height == 2):
            varying.append(name)
    if len(varying) == 1:
        return varying[0]
    if not varying:
        raise SelectionError(
            "no factor besides seed and task varies among the selected runs; pass --by FACTOR "
            f"(factors: {', '.join(store.factors()) or 'none'})"
        )
    raise SelectionError(
        f"several factors vary among the selected runs ({', '.join(varying)}); pass --by FACTOR "
        "to choose the one to compare (and --filter to fix the others)"
    )
