"""The report's figures: one builder per chart, in a registry in page order.

A builder takes the :class:`~stabstat.report.context.ReportContext` and returns a
:class:`~stabstat.report.page.Figure`, or None when the selection has nothing to draw (it may
then leave a note in ``ctx.notes``, e.g. "no per-layer gradient norms were logged").
:data:`BUILDERS` maps each figure id (the ``KIND`` of ``stabstat chart``) to its builder;
:func:`build_figures` runs those the context wants (``only``), in page order.

polars, Altair (:mod:`stabstat.charts`) and DuckDB (:mod:`stabstat.chartdata`) are imported
inside the builders: importing :mod:`stabstat.report` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NotRequired, TypedDict

from stabstat._text import level as label
from stabstat.report.methods import ci_name
from stabstat.report.page import Figure
from stabstat.report.sections import gradient_table, pair_tests

if TYPE_CHECKING:
    import polars as pl

    from stabstat.claims import CheckResult
    from stabstat.report.context import ReportContext

__all__ = ["BUILDERS", "FIGURES", "FigureBuilder", "build_figures", "claims_funnel"]

FigureBuilder = Callable[["ReportContext"], Figure | None]


def metric_by_config(ctx: ReportContext) -> Figure | None:
    """The paper's Figure 1 view: every run, the spread, the mean with its CI, the baseline."""
    import polars as pl

    from stabstat import charts

    drawn = ctx.runs.filter(pl.col("value").is_not_null())
    groups = pl.DataFrame([
        {"panel": cg.panel, "config": cg.config, "point": cg.stats.mean.estimate,
         "ci_low": cg.stats.mean.ci_low, "ci_high": cg.stats.mean.ci_high}
        for cg in ctx.config_groups
    ], schema={"panel": pl.String, "config": pl.String, "point": pl.Float64,
               "ci_low": pl.Float64, "ci_high": pl.Float64})
    if not ctx.multi_task:
        groups = groups.drop("panel")
    if not drawn.height:
        return None
    return Figure(
        "metric-by-config", f"{ctx.metric_title} per configuration",
        f"Every run as a point (failed runs as red crosses), a min-max box with the median, "
        f"the mean with its {ctx.confidence_pct}% {ci_name(ctx.settings)} bootstrap CI "
        "(black bar, red tick) and the failure baseline (dashed). Cf. Mosbach et al. (2021), "
        "Figure 1.",
        charts.metric_by_config(drawn, groups, order=ctx.levels, metric=ctx.metric_title,
                                config_title=ctx.by),
    )


def failure_rate(ctx: ReportContext) -> Figure | None:
    """Failure rate per configuration with its Wilson interval."""
    import polars as pl

    from stabstat import charts

    frame = pl.DataFrame([
        {"panel": cg.panel, "level": cg.config, "n": cg.stats.n_runs,
         "failures": cg.stats.failures.n_failed, "rate": cg.stats.failures.rate,
         "ci_low": cg.stats.failures.ci_low, "ci_high": cg.stats.failures.ci_high}
        for cg in ctx.config_groups
    ], schema={"panel": pl.String, "level": pl.String, "n": pl.Int64, "failures": pl.Int64,
               "rate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})
    if not ctx.multi_task:
        frame = frame.drop("panel")
    return Figure(
        "failure-rate", f"Failure rate per {ctx.by}",
        "Share of failed runs per configuration with its interval (Wilson; Clopper-Pearson "
        "when no or every run failed); labels give failed / runs.",
        charts.failure_rate(frame, factor=ctx.by, order=ctx.levels),
    )


def failure_vs_size(ctx: ReportContext) -> Figure | None:
    """Failure rate against the training-set size factor on a log axis, when it varies."""
    import polars as pl

    from stabstat import charts

    size_factor = next((f for f in ("n_train", "train_size", "n_examples")
                        if f in ctx.store.factors()), None)
    if size_factor is None:
        if ctx.only is not None:
            ctx.notes.append("no n_train factor: the runs' config has no n_train key.")
        return None
    # The size of each selected run from the runs table (a second select_runs would
    # recompute every run's summary).
    sf = ctx.frame
    if size_factor not in sf.columns:
        sf = sf.join(ctx.runs_table([size_factor]), on="run_id", how="left")
    sf = sf.filter(pl.col("failed").is_not_null() & pl.col(size_factor).is_not_null())
    if not (sf.get_column(size_factor).n_unique() >= 2 and sf.schema[size_factor].is_numeric()):
        if ctx.only is not None:
            ctx.notes.append(f"{size_factor} does not vary among the selected runs.")
        return None
    recs = _rates_by_size(sf, size_factor, ctx.by, ctx.settings.confidence)
    if not all(r["level"] > 0 for r in recs):
        ctx.notes.append(f"{size_factor} has values <= 0: no log-axis failure-rate chart.")
        return None
    by = ctx.by
    return Figure(
        "failure-vs-size", f"Failure rate against {size_factor}",
        f"Failure rate per {size_factor} (log axis)"
        + (f", one line per {by}" if by != size_factor else "")
        + "; intervals as above. Mosbach et al. (2021) find that failure tracks "
          "the number of training iterations rather than the data size.",
        charts.failure_rate_vs(pl.DataFrame(recs), factor=size_factor),
    )


class _SizeCell(TypedDict):
    """One point of the failure-against-size chart (the columns of
    :func:`stabstat.charts.failure_rate_vs`)."""

    level: float
    n: int
    failures: int
    rate: float
    ci_low: float
    ci_high: float
    series: NotRequired[str]


def _rates_by_size(sf: pl.DataFrame, size_factor: str, by: str,
                   confidence: float) -> list[_SizeCell]:
    """Failure rate with its interval per (size, configuration) cell, sorted; ``level`` is the
    size as a float, ``series`` the configuration's label (unless ``by`` is the size)."""
    import polars as pl

    from stabstat import stats as S

    keys = [size_factor] + ([by] if by != size_factor else [])
    cells = sf.group_by(keys).agg(n=pl.len(), failures=pl.col("failed").sum()).sort(keys)
    recs = []
    for r in cells.iter_rows(named=True):
        rr = S.rate_interval(int(r["failures"]), int(r["n"]), confidence=confidence)
        rec: _SizeCell = {"level": float(r[size_factor]), "n": rr.n, "failures": rr.k,
                          "rate": rr.rate, "ci_low": rr.ci_low, "ci_high": rr.ci_high}
        if by != size_factor:
            rec["series"] = label(r[by])
        recs.append(rec)
    return recs


def loss_curves(ctx: ReportContext) -> Figure | None:
    """Training loss against step: one line per run, or quantile bands for many runs."""
    from stabstat import charts

    loss = ctx.loss_curves()
    if not loss.height:
        ctx.notes.append("No training losses were logged for the selected runs: no loss chart.")
        return None
    if "q10" in loss.columns:
        chart = charts.loss_bands(loss)
        how = ("more runs than drawn individually: median (line) and 10-90% band over runs "
               "per configuration, failed and successful runs apart")
    else:
        chart = charts.loss_curves(loss)
        how = ("one line per run, failed runs dashed and thicker; click a configuration in "
               "the legend to bring its runs forward")
    return Figure(
        "loss-curves", "Training loss",
        f"Training loss against step, coloured by configuration; {how}. Steps are averaged "
        "in equal buckets (at most a few hundred points per curve).",
        chart,
    )


#: Left once, by whichever gradient figure comes first, when no layer norms were logged.
_NO_GRADIENTS = ("No per-layer gradient norms were logged for the selected runs: "
                 "no gradient charts.")


def layer_gradients(ctx: ReportContext) -> Figure | None:
    """Per-layer gradient norms of failed vs successful runs, with the collapse test."""
    from stabstat import charts

    grads = ctx.layer_gradients
    if not grads.height:
        ctx.notes.append(_NO_GRADIENTS)
        return None
    return Figure(
        "layer-gradients", "Per-layer gradient norms",
        "Median gradient L2 norm per layer (before clipping) against step, log scale, with "
        "the inter-quartile band, failed vs successful runs. Vanishing norms in the lower "
        "layers mark failed runs (Mosbach et al., 2021, Section 5).",
        charts.layer_gradients(grads),
        gradient_table(ctx.gradient_collapse()),
    )


def gradient_heatmap(ctx: ReportContext) -> Figure | None:
    """The per-layer medians as a layers x steps heat map."""
    from stabstat import charts

    grads = ctx.layer_gradients
    if not grads.height:
        if not ctx.want("layer-gradients"):  # else layer_gradients left the note
            ctx.notes.append(_NO_GRADIENTS)
        return None
    return Figure(
        "gradient-heatmap", "Gradient norms over layers and steps",
        "The same medians as a heat map (log colour scale), layers from input (bottom) "
        "to output (top).",
        charts.layer_gradients_heatmap(grads),
    )


def metric_vs_loss(ctx: ReportContext) -> Figure | None:
    """Final dev metric against final training loss, one point per run."""
    import polars as pl

    from stabstat import charts

    mv = ctx.series_config.filter(pl.col("value").is_not_null()
                                  & pl.col("train_loss_final").is_not_null()).rename(
        {"train_loss_final": "train_loss"})
    mv = mv.filter(pl.col("train_loss").is_finite())
    if not mv.height:
        return None
    return Figure(
        "metric-vs-loss", f"{ctx.metric_title} against final training loss",
        "One point per run (failed runs as crosses); the final training loss is the mean "
        "of the last logged losses. Runs with the same training loss that still differ "
        "on dev show a generalisation effect (Mosbach et al., 2021, Section 6)."
        + _spearman_note(mv),
        charts.metric_vs_loss(mv, metric=ctx.metric_title),
    )


def _spearman_note(mv: pl.DataFrame) -> str:
    """A sentence with the successful runs' Spearman correlation of metric and loss ("" with
    fewer than 3 such runs or an undefined correlation)."""
    import polars as pl

    # A point estimate only: the bootstrap CI (``stabstat variance``) costs seconds per
    # thousand runs, and the chart is the point here.
    ok = mv.filter(~pl.col("failed"))
    if ok.height < 3:
        return ""
    rho = ok.select(pl.corr("train_loss", "value", method="spearman")).item()
    if rho is None or rho != rho:
        return ""
    return (f" Among the {ok.height} successful runs the Spearman correlation of the "
            f"metric with the final training loss is {rho:.3f} (stabstat variance "
            "gives its bootstrap CI and the spread at equal loss).")


class _ForestRow(TypedDict):
    """One row of the forest plot (the columns of :func:`stabstat.charts.forest`)."""

    label: str
    estimate: float
    ci_low: float
    ci_high: float
    p_adj: float | None
    significant: bool


def forest(ctx: ReportContext) -> Figure | None:
    """Pairwise differences in mean with their bootstrap CIs."""
    import polars as pl

    from stabstat import charts
    from stabstat.analysis.results import MeanDifference

    rows: list[_ForestRow] = []
    for t, tt, a, b in pair_tests(ctx):
        if not isinstance(tt, MeanDifference):
            continue
        lo, hi = tt.diff.ci_low, tt.diff.ci_high
        rows.append({
            "label": (f"{label(t)}: " if ctx.multi_task else "") + f"{a} \u2212 {b}",
            "estimate": tt.diff.estimate, "ci_low": lo, "ci_high": hi,
            "p_adj": tt.p_adjusted,
            "significant": bool(lo is not None and hi is not None and (lo > 0 or hi < 0)),
        })
    if not rows:
        return None
    return Figure(
        "forest", "Pairwise differences",
        f"Difference in mean {ctx.metric} between configurations (a \u2212 b) with "
        f"{ctx.confidence_pct}% bootstrap CIs; red where the CI excludes 0.",
        charts.forest(pl.DataFrame(rows), estimate=f"difference in mean {ctx.metric}"),
    )


def forgetting(ctx: ReportContext) -> Figure | None:
    """The forgetting probe: MLM perplexity against top layers reset, failed vs successful runs
    (only when the selected runs have probe results)."""
    from stabstat import charts
    from stabstat.analysis import RunSet
    from stabstat.analysis.forgetting import curve_frame, forgetting_frame, has_probe_results

    if not has_probe_results(ctx.store, ctx.frame["run_id"].to_list()):
        if ctx.only is not None:
            ctx.notes.append("No forgetting-probe results (split probe.k<k>) for the selected runs: "
                             "train with probe = [\"forgetting\"] (README: The forgetting probe).")
        return None
    pooled = RunSet(ctx.frame, (), ctx.run_settings, [])  # failed vs successful over all configurations
    res = forgetting_frame(ctx.store, pooled, ctx.settings)
    frame = curve_frame(res)
    if not frame.height:
        return None
    layers = int(frame["k"].max())  # type: ignore[arg-type]  # k = L: the pre-trained model
    return Figure(
        "forgetting", "Forgetting probe: MLM perplexity with the top layers reset",
        f"After fine-tuning, the top k of the {layers} encoder layers are reset to their pre-trained "
        "weights under the pre-trained MLM head, and the masked-LM perplexity is measured on the same "
        f"masked text for every run (k = {layers}: the pre-trained model, dashed). Median over runs with "
        f"its {ctx.confidence_pct}% {ci_name(ctx.settings)} bootstrap band, failed and successful runs "
        "apart. Failed runs that recover only when many top layers are reset have forgotten in "
        "those layers (Mosbach et al., 2021, Section 4 and Figure 4).",
        charts.forgetting_curves(frame, metric="MLM perplexity"),
    )


def examples_uncertainty(ctx: ReportContext) -> Figure | None:
    """Seeds vs examples: CI widths of each configuration's mean with only seeds, only examples,
    or both resampled (only when the selected runs have per-example predictions; one task)."""
    from stabstat import charts
    from stabstat.analysis import RunSet
    from stabstat.analysis.examples import example_sections, has_predictions, uncertainty_frame
    from stabstat.errors import SelectionError

    split, metric = ctx.run_settings["split"], ctx.run_settings["metric"]
    if len(ctx.tasks) > 1 or not has_predictions(ctx.store, ctx.frame["run_id"].to_list(), split):
        return None
    try:
        sections, _ = example_sections(ctx.store, RunSet(ctx.runs, ("config",), ctx.run_settings, []), ctx.settings,
                                       resample=True, test_aso=False)
    except SelectionError as e:
        ctx.notes.append(f"No seeds x examples figure: {e}")
        return None
    rows = sections["examples"]
    share = ", ".join(f"{r['level']} {r['share_examples']:.0%}" for r in rows)
    return Figure(
        "examples-uncertainty", "Where the uncertainty comes from: seeds vs examples",
        f"{ctx.confidence_pct}% percentile interval width of each configuration's mean {metric}, recomputed "
        f"from the per-example predictions of split {split}, with only the runs (seeds) resampled, only the "
        "dev examples resampled, or both jointly (the multibootstrap of Sellam et al., 2022). A finite dev "
        f"set adds uncertainty that a seeds-only bootstrap ignores. Examples' share of the variance: {share}.",
        charts.uncertainty_sources(uncertainty_frame(rows), metric=metric, confidence_pct=ctx.confidence_pct),
    )


def _seed_planning_allowed(ctx: ReportContext, min_configs: int) -> bool:
    """The "How many seeds" figures need one task and >= 3 runs with a value per configuration."""
    import polars as pl

    counts = ctx.frame.filter(pl.col("value").is_not_null()).group_by(ctx.by).len()
    ok = not ctx.multi_task and counts.height >= min_configs and int(counts["len"].min()) >= 3  # type: ignore[arg-type]
    if not ok and ctx.only is not None:
        ctx.notes.append(f"The \"How many seeds\" figures need one task (--filter task=NAME) and at least 3 runs "
                         f"with a value in each of {min_configs} or more configurations.")
    return ok


def expected_max(ctx: ReportContext) -> Figure | None:
    """How many seeds: the expected best score among k runs per configuration (Dodge et al.
    2019, unbiased estimator of Tang et al. 2020), with bootstrap bands."""
    import polars as pl

    from stabstat import charts
    from stabstat.analysis.expected_max import ExpectedMaxPoint, expected_max_frame

    if not _seed_planning_allowed(ctx, 1):
        return None
    res = expected_max_frame(ctx.runset, by=ctx.by, settings=ctx.settings)
    points = [p for p in res.sections["curve"] if isinstance(p, ExpectedMaxPoint)]
    frame = pl.DataFrame([{"config": label(p.key[ctx.by]), "k": p.k, "expected_max": p.estimate,
                           "ci_low": p.ci_low, "ci_high": p.ci_high} for p in points])
    many = max(p.k for p in points) > 16
    return Figure(
        "expected-max", f"How many seeds: expected best {ctx.metric_title} among k runs",
        f"For k = 1..n runs of a configuration, the expected best {ctx.metric} if one trained k seeds and "
        "kept the best (Dodge et al. 2019), estimated without bias as the mean of the maximum over every "
        f"subset of k runs (Tang et al. 2020), with a {ctx.confidence_pct}% percentile bootstrap band "
        "(runs resampled). Failed runs count: they are what a new seed may give. "
        "`stabstat expected-max` prints the numbers (and the expected best within a compute budget).",
        charts.expected_max_curves(frame, metric=ctx.metric_title, log_x=many),
    )


def power_curve(ctx: ReportContext) -> Figure | None:
    """How many seeds: power against seeds per configuration to detect the observed differences
    in mean (bootstrap from the runs) and in failure rate (Fisher, exact)."""
    import dataclasses

    import polars as pl

    from stabstat import charts
    from stabstat.analysis.plan import PowerPoint, plan_frame

    if not _seed_planning_allowed(ctx, 2):
        return None
    settings = dataclasses.replace(ctx.settings, resamples=min(ctx.settings.resamples, 1000))
    res = plan_frame(ctx.runset, by=ctx.by, settings=settings)
    names = {"mean": "mean", "failure_rate": "failure rate"}
    frame = pl.DataFrame([{"comparison": f"{names[p.target]}: {label(p.a)} vs {label(p.b)}", "n": p.n,
                           "power": p.power} for p in res.sections["power"]
                          if isinstance(p, PowerPoint) and p.target in names],
                         schema={"comparison": pl.String, "n": pl.Int64, "power": pl.Float64})
    if not frame.height:
        return None
    return Figure(
        "power-curve", "How many seeds: power against seeds per configuration",
        "Power to detect the observed difference between two configurations at alpha 0.05 (two-sided) "
        "with n seeds each: the mean by simulated experiments drawn from the runs (the permutation test "
        "above, enumerated up to 6 runs each, then its large-sample equivalent Welch's t-test; "
        f"{settings.resamples} experiments per n), "
        "the failure rate by the exact power of Fisher's test; dashed: power 0.8. A pilot this size knows "
        "its spread only roughly: `stabstat plan` gives the range (Colas et al. 2018).",
        charts.power_curves(frame),
    )


#: Figure id -> builder, in page order. The ids are also the ``KIND`` of ``stabstat chart``
#: (``stabstat.cli.report_cmds.CHART_KINDS`` repeats them so that ``--help`` stays cheap).
def early(ctx: ReportContext) -> Figure | None:
    """Early failure prediction (``stabstat early``): held-out precision, recall and compute
    saved against the step K at which runs would be stopped. Drawn for ``stabstat chart early``
    and on a page whose selection holds runs stopped by ``--stop-doomed`` (the evidence for
    stopping); None when it cannot be computed (too few failed or successful runs)."""
    from stabstat import charts
    from stabstat.analysis import Settings
    from stabstat.analysis.early import early as run_early
    from stabstat.errors import SelectionError

    if ctx.only is None and not (ctx.frame["status"] == "stopped").any():
        return None
    settings = Settings(resamples=min(ctx.settings.resamples, 2000), seed=ctx.settings.seed,
                        confidence=ctx.settings.confidence)
    try:
        res = run_early(ctx.store, selection=ctx.selection, settings=settings)
    except SelectionError as exc:
        if ctx.only is not None:
            ctx.notes.append(f"No early failure prediction: {exc}")
        return None
    chosen = ", ".join(f"{m}: K = {k}" if k is not None else f"{m}: none" for m, k in res.chosen.items())
    return Figure(
        "early", "Early failure prediction: stopping doomed runs at step K",
        f"Predictors fitted on some runs and scored on held-out ones ({res.settings['folds']}) from the "
        "first K steps (training loss against its start and the class-balance loss, the lowest layer's "
        "gradient-norm ratio, the dev score against the majority baseline). Precision and recall of the "
        "runs flagged as failing, and the share of all optimiser steps stopping them at K saves, with "
        f"{ctx.confidence_pct}% percentile bootstrap bands over runs; dashed: the target precision "
        f"{res.settings['target']:g}. Earliest K whose precision stays at the target: {chosen}.",
        charts.early_curves(res.to_frame(), target=res.settings["target"]),
    )


BUILDERS: dict[str, FigureBuilder] = {
    "metric-by-config": metric_by_config,
    "failure-rate": failure_rate,
    "failure-vs-size": failure_vs_size,
    "loss-curves": loss_curves,
    "layer-gradients": layer_gradients,
    "gradient-heatmap": gradient_heatmap,
    "metric-vs-loss": metric_vs_loss,
    "forest": forest,
    "examples-uncertainty": examples_uncertainty,
    "forgetting": forgetting,
    "expected-max": expected_max,
    "power-curve": power_curve,
    "early": early,
}

def claims_funnel(checked: CheckResult) -> Figure | None:
    """The confidence sequence of each claim checked with ``sequential=True`` against the number
    of seeds, the boundary and the stopping point marked (issue: anytime-valid claims). Not in
    :data:`BUILDERS`: it depends on the claims file, not on the selection; ``build_report``
    adds it after the claims are checked. None when no claim carries a sequence."""
    from stabstat import charts

    tests = [c for c in checked.to_dict()["tests"] if c.get("sequence")]
    if not tests:
        return None
    chart = charts.claims_funnels(tests)
    if chart is None:
        return None
    return Figure(
        "claims-funnel", "Claims as seeds arrive: confidence sequences",
        "For each claim checked sequentially, the running confidence sequence of its quantity "
        "(band) against the number of seeds, the claim's boundary (line) and the number of seeds "
        "at which the sequence first excluded it (the stopping point). The band is valid at every "
        "number of seeds at once (betting confidence sequences, Waudby-Smith & Ramdas 2023; "
        "Bonferroni over the claims), so the verdict stays valid however often the check is "
        "re-run as seeds arrive.",
        chart,
    )


#: Figure ids of a report, in page order (also the ``KIND`` of ``stabstat chart``).
FIGURES = tuple(BUILDERS)


def build_figures(ctx: ReportContext) -> list[Figure]:
    """The wanted figures (all unless ``ctx.only``) that have something to draw, in order."""
    from dataclasses import replace

    from stabstat.report.vega import compile_async

    # The page's Vega is compiled on a thread while the next figures are built (report.vega);
    # not for `stabstat chart` (only=...), which wants the Vega-Lite chart, not a page.
    ahead = ctx.only is None
    figures = []
    for kind, build in BUILDERS.items():
        if ctx.want(kind):
            fig = build(ctx)
            if fig is not None:
                figures.append(replace(fig, vega=compile_async(fig.spec())) if ahead else fig)
    return figures
