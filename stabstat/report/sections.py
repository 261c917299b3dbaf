"""The report's tables: summary per configuration, pairwise comparisons, claims, and the
gradient-collapse table under the per-layer gradient chart.

Each builder reads the typed result rows (:mod:`stabstat.analysis.results`,
:class:`stabstat.claims.ClaimResult`) by attribute and returns a
:class:`~stabstat.report.page.Table` of formatted cells (page dialect of :mod:`stabstat._text`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stabstat._text import ci, number, p_value, percent_ci
from stabstat._text import level as label
from stabstat.report.page import Table

if TYPE_CHECKING:
    from stabstat.analysis import AnalysisResult
    from stabstat.analysis.results import FailureRateDifference, GradientGroup, MeanDifference
    from stabstat.claims import CheckResult
    from stabstat.report.context import Level, ReportContext

    #: A test of ``compare`` shown as a pairwise comparison (the forest plot takes the means).
    PairTest = MeanDifference | FailureRateDifference

__all__ = ["claims_table", "comparisons_table", "gradient_table", "pair_tests",
           "summary_table"]

def summary_table(ctx: ReportContext) -> Table:
    """One row per (task, configuration): runs, failures, failure rate and mean with their
    CIs, SD, median, IQM, max and the mean over successful runs."""
    by, multi = ctx.by, ctx.multi_task
    cols = (["task"] if multi else []) + [
        by, "runs", "failed", "failure rate [CI]", f"mean [{ctx.confidence_pct}% CI]",
        "std", "median", "IQM", "max", "mean (successful)",
    ]
    numeric = ([False] if multi else []) + [False, True, True, False, False, True, True,
                                            True, True, True]
    rows: list[list[str]] = []
    for cg in ctx.config_groups:
        g, f = cg.stats, cg.stats.failures
        rows.append(([str(cg.panel)] if multi else []) + [
            cg.config, str(g.n_runs), str(f.n_failed),
            percent_ci(f.rate, f.ci_low, f.ci_high),
            ci_or_why(g.mean.estimate, g.mean.ci_low, g.mean.ci_high, g.warnings, "fewer than 2 runs"),
            number(g.std.estimate), number(g.median.estimate), number(g.iqm.estimate),
            number(g.max.estimate), number(g.mean_successful),
        ])
    return Table(cols, rows, numeric,
                 caption=f"{ctx.metric_title} over seeds per configuration; a run fails when "
                         f"{ctx.run_settings['failure_rule']}.")


def pair_tests(ctx: ReportContext) -> Iterator[tuple[Level, PairTest, str, str]]:
    """``(task, test, a, b)`` for every mean and failure-rate difference of the compare
    results, ``a``/``b`` the two configurations' labels."""
    from stabstat.analysis.results import FailureRateDifference, MeanDifference

    for t, tt in ctx.tests():
        if isinstance(tt, (MeanDifference, FailureRateDifference)):
            yield t, tt, label(tt.a), label(tt.b)


def comparisons_table(ctx: ReportContext) -> Table | None:
    """Differences between configurations (mean and failure rate), or None without any."""
    from stabstat.analysis.results import MeanDifference

    multi = ctx.multi_task
    rows: list[list[str]] = []
    for t, tt, a, b in pair_tests(ctx):
        if isinstance(tt, MeanDifference):
            what = "mean difference" + (" (paired)" if tt.paired else "")
        else:
            what = "failure-rate difference"
        rows.append(([label(t)] if multi else []) + [
            f"{a} \u2212 {b}", what,
            ci_or_why(tt.diff.estimate, tt.diff.ci_low, tt.diff.ci_high, (),
                      "too few runs, or the statistic is undefined in some resamples"),
            p_value(tt.p_value), p_value(tt.p_adjusted),
            f"{tt.n_a} / {tt.n_b}",
        ])
    if not rows:
        return None
    correction = ctx.settings.correction
    return Table(
        (["task"] if multi else []) + ["pair (a \u2212 b)", "estimate", "value [CI]", "p",
                                       f"p ({correction})", "runs a / b"],
        rows, ([False] if multi else []) + [False, False, False, True, True, True],
        caption="Differences between configurations: mean of the metric (bootstrap CI, "
                "permutation p-value) and failure rate (Newcombe CI, Fisher exact p); "
                f"p-values adjusted ({correction}) over the pairs of each family.",
    )


def ci_or_why(est: Any, lo: Any, hi: Any, why: Sequence[str] = (), default: str = "") -> str:
    """``est [lo, hi]``, or, when there is an estimate but no interval, the estimate and why
    not (the first of ``why`` that says so, else ``default``): the page says what the CLI's
    warnings say instead of showing a bare number."""
    text = ci(est, lo, hi)
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return text
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        reason = next((w for w in why if "undefined" in w or "no interval" in w or "too few" in w), default)
        return f"{text} (no interval: {reason})" if reason else f"{text} (no interval)"
    return text


def claims_table(result: CheckResult, path: str | Path) -> Table:
    """The verdicts of ``stabstat check`` (``result``: :func:`stabstat.claims.check`'s)."""
    s = result.settings
    return Table(
        ["verdict", "claim", "kind", "estimate [CI]", "p (adj.)", "runs", "detail"],
        [[c.verdict, c.name, c.kind, ci_or_why(c.estimate, c.ci_low, c.ci_high, c.warnings),
          p_value(c.p_adjusted),
          ", ".join(f"{k}: {v}" for k, v in c.n.items()), c.detail]
         for c in result.claims],
        [False, False, False, False, True, False, False],
        caption=f"Claims from {Path(path).name}: {s['verdict_rule']} "
                f"(alpha {s['alpha']:g}, {s['correction']}).",
    )


def gradient_table(res: AnalysisResult) -> Table:
    """The collapse test of :func:`stabstat.analysis.gradients` (``res``) as a small table."""
    from stabstat.analysis.results import CollapseVsFailure

    st = res.settings
    rows = []
    for g in cast("list[GradientGroup]", res.groups):
        status = {True: "failed", False: "successful", None: "unknown"}[g.failed]
        c = g.collapsed
        rows.append([
            status, str(g.n_runs), str(c.n_failed), percent_ci(c.rate, c.ci_low, c.ci_high),
            ci(g.median_ratio, g.ratio_q25, g.ratio_q75, 4),
            number(g.median_loss_ratio),
        ])
    fisher = next((t for t in res.tests if isinstance(t, CollapseVsFailure)), None)
    ptxt = p_value(fisher.p_value) if fisher is not None else ""
    p = f"; Fisher exact p {'' if ptxt.startswith('<') else '= '}{ptxt}" if fisher is not None else ""
    return Table(
        ["runs", "n", "collapsed", "collapse rate [CI]", "lower-layer norm ratio, median [IQR]",
         "loss last/first, median"],
        rows, [False, True, True, False, True, True],
        caption=(f"Lower layers ({st['lower_layers']}): norm ratio = median over steps of their "
                 "combined norm / its value at the first step. A run collapses when the ratio "
                 f"is <= 1/{st['collapse_factor']:g} while its loss plateaus (mean of the last "
                 f"10 losses >= {st['plateau']:g} x the first 10){p}. "
                 "stabstat gradients takes other thresholds."),
    )
