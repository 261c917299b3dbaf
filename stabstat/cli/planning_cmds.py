"""``stabstat decompose | plan | expected-max``: where the variance comes from, how many seeds,
what best score to expect from k runs.

Thin: options are parsed here, the work is :mod:`stabstat.analysis` (decompose, plan,
expected_max). ``--format json`` prints the result's ``to_dict()`` (documented in the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import click

from stabstat._text import CLI_MISSING, ci_cli, level_cli, number_cli
from stabstat.cli._options import (
    db_option,
    echo_json,
    format_option,
    open_store,
    print_rows,
    selection_from,
    selection_options,
    settings_from,
    stat_options,
)

if TYPE_CHECKING:
    from stabstat.analysis import AnalysisResult

#: Simulated experiments per candidate n of ``plan`` unless --resamples is given.
PLAN_RESAMPLES = 2000


def _emit(result: AnalysisResult, fmt: str, table: Any, section: str | None = None) -> None:
    if fmt == "json":
        echo_json(result.to_dict())
        return
    if fmt == "csv":
        click.echo(result.to_frame().write_csv(), nl=False)
        if section is not None and result.sections.get(section):
            click.echo()
            click.echo(result.to_frame(section).write_csv(), nl=False)
        return
    table(result)
    s = result.settings
    click.echo(f"metric: {s['split']}/{s['metric']} ({s['at']}); failure: {s['failure_rule']}")
    click.echo(f"resamples {s['resamples']}, seed {s['seed']}, {int(round(s['confidence'] * 100))}% intervals")
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)


def _key(key: dict[str, Any] | Any) -> dict[str, str]:
    return {k: level_cli(v) for k, v in key.items()}


# --------------------------------------------------------------------------- decompose


@click.command("decompose")
@click.option("--by", "by", metavar="FACTOR", help="Decompose each level (configuration) of this factor separately.")
@click.option("--factor", "factors", multiple=True, metavar="FACTOR",
              help="A random factor (repeatable) [default: init_seed, order_seed, dropout_seed, data_seed, seed "
                   "where present].")
@click.option("--method", type=click.Choice(["auto", "anova", "reml", "moments"]), default="auto", show_default=True,
              help="ANOVA (method of moments; balanced crossed designs), REML (statsmodels MixedLM) or "
                   "moments (Henderson's method I; fast on large unbalanced designs); auto: ANOVA when the "
                   "design is balanced, else REML.")
@selection_options
@stat_options
@db_option
@format_option
def decompose(by: str | None, factors: tuple[str, ...], method: str, db: str, fmt: str, **kw: Any) -> None:
    """Where the variance comes from: variance components of the metric over the
    seed factors (weight init, data order, dropout, training subset) plus residual.

    Per configuration and for all runs with a value and for successful runs only
    (failed runs usually dominate the variance; a warning says so): each
    component's variance and share of the total with percentile bootstrap CIs
    that resample the levels of each factor, never single runs (pigeonhole
    bootstrap). Runs without init_seed/order_seed/dropout_seed used their seed.
    Cross the factors in the sweep to separate them, e.g.
    [grid] init_seed = [0, 1, 2, 3, 4], order_seed = [0, 1, 2, 3, 4].

    \b
    Example:
        stabstat decompose --by recipe
        stabstat decompose --factor init_seed --factor order_seed --format json
        stabstat decompose --by lr --method reml --resamples 500
    """
    from stabstat.analysis import decompose as run_decompose

    with open_store(db) as store:
        res = run_decompose(store, by=by, factors=list(factors) or None, selection=selection_from(kw),
                            settings=settings_from(kw), method=method)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.decompose import ComponentRow, DecomposeGroup

        groups = [{**_key(g.key), "runs": g.runs, "n": str(g.n_runs), "failed": str(g.n_failed),
                   "method": g.method or CLI_MISSING, "mean": number_cli(g.mean),
                   "total variance [CI]": ci_cli(g.total, g.total_ci_low, g.total_ci_high)}
                  for g in cast("list[DecomposeGroup]", r.groups)]
        print_rows(f"{r.settings['metric']}: total variance", groups)
        comps = [{**_key(c.key), "runs": c.runs, "component": c.component,
                  "levels": CLI_MISSING if c.n_levels is None else str(c.n_levels),
                  "variance [CI]": ci_cli(c.variance, c.ci_low, c.ci_high),
                  "share [CI]": ci_cli(c.share, c.share_ci_low, c.share_ci_high)}
                 for c in cast("list[ComponentRow]", r.sections["components"])]
        print_rows("components (share of the total variance)", comps)

    _emit(res, fmt, table, "components")


# --------------------------------------------------------------------------- plan


def _ns(values: tuple[str, ...]) -> list[int] | None:
    if not values:
        return None
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part.isdigit() or int(part) < 2:
                raise click.BadParameter(f"{part!r} is not a number of seeds >= 2 (e.g. --n 5,10,20)",
                                         param_hint="--n")
            out.append(int(part))
    return out


@click.command("plan")
@click.option("--by", "by", metavar="FACTOR", help="Configurations: the levels of this factor.")
@click.option("--delta", type=float, metavar="D",
              help="Difference in mean to detect, per configuration [default: the observed difference of each "
                   "pair of configurations].")
@click.option("--rate-diff", "rate_diff", type=click.FloatRange(0.0, 1.0, min_open=True), metavar="P",
              help="Drop in failure rate to detect, per configuration [default: the observed rates of each pair].")
@click.option("--width", type=click.FloatRange(0.0, min_open=True), metavar="W",
              help="Also: seeds for a CI of the mean narrower than W (metric units).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level of the tests (two-sided).")
@click.option("--power", "power", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.8,
              show_default=True, help="Power wanted (1 - beta).")
@click.option("--n", "ns", multiple=True, metavar="N[,N...]",
              help="Candidate numbers of seeds per configuration [default: 2 .. 200, 20 values].")
@click.option("--test", type=click.Choice(["welch", "permutation"]), default="welch", show_default=True,
              help="Test in the simulated experiments beyond 6 runs per arm (up to 6, compare's permutation "
                   "test is enumerated exactly): Welch's t (fast, its large-sample equivalent) or the "
                   "permutation test itself (slow).")
@selection_options
@stat_options
@db_option
@format_option
def plan(by: str | None, delta: float | None, rate_diff: float | None, width: float | None, alpha: float,
         power: float, ns: tuple[str, ...], test: str, db: str, fmt: str, **kw: Any) -> None:
    """How many seeds per configuration: power against seeds from pilot runs.

    Mean difference: bootstrap power (simulated experiments drawn from the
    pilot runs, failed runs included, tested with compare's permutation test:
    exact up to 6 runs per arm, Welch's t beyond) beside the analytic normal
    approximation, and the analytic n at the ends of the CI of the pilot's SD
    (the pilot's own size limits what it can say). Failure rate: exact power of Fisher's test.
    --width: seeds for a t interval of the mean narrower than W. Simulated
    experiments per candidate n: --resamples [default here: 2000].

    \b
    Example:
        stabstat plan --by recipe
        stabstat plan --by recipe --delta 0.02 --width 0.02 --power 0.9
        stabstat plan --filter recipe=mosbach2021 --delta 0.01 --n 5,10,20,40 --format json
    """
    from stabstat.analysis import plan as run_plan
    from stabstat.analysis.plan import DEFAULT_NS

    ctx = click.get_current_context()
    if ctx.get_parameter_source("resamples") == click.core.ParameterSource.DEFAULT:
        kw["resamples"] = PLAN_RESAMPLES
    with open_store(db) as store:
        res = run_plan(store, by=by, selection=selection_from(kw), settings=settings_from(kw), delta=delta,
                       rate_diff=rate_diff, width=width, alpha=alpha, power=power, ns=_ns(ns) or DEFAULT_NS,
                       test=test)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.plan import PlanRow, PowerPoint

        rows = [{"target": g.target, "a": level_cli(g.a), "b": CLI_MISSING if g.b is None else level_cli(g.b),
                 "effect": number_cli(g.effect), "pilot n": str(g.pilot_n),
                 "n needed": CLI_MISSING if g.n_needed is None else str(g.n_needed),
                 "normal approx.": CLI_MISSING if g.n_needed_normal is None else str(g.n_needed_normal),
                 "range (pilot SD CI)": CLI_MISSING if g.n_needed_low is None
                 else f"{g.n_needed_low} .. {g.n_needed_high}", "note": g.note}
                for g in cast("list[PlanRow]", r.groups)]
        print_rows(f"seeds per configuration for power {r.settings['power']:g} at alpha {r.settings['alpha']:g}",
                    rows)
        points = [p for p in cast("list[PowerPoint]", r.sections["power"]) if p.target != "width"]
        pairs = list(dict.fromkeys((p.target, p.a, p.b) for p in points))
        if pairs:
            grid = [{"n": str(n), **{f"{t}: {level_cli(a)}" + ("" if b is None else f" vs {level_cli(b)}"):
                                     number_cli(next((p.power for p in points if (p.target, p.a, p.b, p.n)
                                                      == (t, a, b, n)), None), 3)
                                     for t, a, b in pairs}}
                    for n in dict.fromkeys(p.n for p in points)]
            print_rows("power by seeds per configuration", grid)

    _emit(res, fmt, table, "power")


# --------------------------------------------------------------------------- expected max


@click.command("expected-max")
@click.option("--by", "by", metavar="FACTOR", help="One curve per level (configuration) of this factor.")
@click.option("--estimator", type=click.Choice(["unbiased", "plugin"]), default="unbiased", show_default=True,
              help="unbiased: mean of the max over all k-subsets (Tang et al. 2020); plugin: k draws with "
                   "replacement from the runs (Dodge et al. 2019), biased low near k = n.")
@click.option("--budget", "budgets", multiple=True, type=click.FloatRange(0.0, min_open=True), metavar="COST",
              help="Compute budget in steps x batch size (repeatable) [default: 1..n runs of the cheapest "
                   "configuration].")
@selection_options
@stat_options
@db_option
@format_option
def expected_max(by: str | None, estimator: str, budgets: tuple[float, ...], db: str, fmt: str, **kw: Any) -> None:
    """Expected best score among k runs, k = 1..n, per configuration, with
    bootstrap bands; and within compute budgets when runs cost different amounts.

    "Show your work" (Dodge et al. 2019): what best dev score to expect when
    training k seeds and keeping the best. The default estimator is unbiased
    (the average of the maximum over every subset of k runs; Tang et al. 2020).
    Failed runs count: they are what a new seed may give.

    \b
    Example:
        stabstat expected-max --by recipe
        stabstat expected-max --by recipe --estimator plugin --format json
        stabstat expected-max --by lr --budget 6400 --budget 32000
    """
    from stabstat.analysis import expected_max as run_expected_max

    with open_store(db) as store:
        res = run_expected_max(store, by=by, selection=selection_from(kw), settings=settings_from(kw),
                               estimator=estimator, budgets=list(budgets) or None)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.expected_max import BudgetPoint, ExpectedMaxPoint

        points = cast("list[ExpectedMaxPoint]", r.sections["curve"])
        rows = [{**_key(p.key), "k": str(p.k), "expected max [CI]": ci_cli(p.estimate, p.ci_low, p.ci_high)}
                for p in points]
        print_rows(f"expected maximum of k runs ({r.settings['estimator']})", rows)
        brows = [{**_key(b.key), "budget": number_cli(b.budget), "runs": str(b.k),
                  "expected max": number_cli(b.estimate)} for b in cast("list[BudgetPoint]", r.sections["budget"])]
        print_rows("within a budget (steps x batch size)", brows)

    _emit(res, fmt, table, "curve")
