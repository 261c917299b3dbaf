"""``stabstat compare | failure-rate | variance | gradients | check``: statistics from the CLI.

Thin: options are parsed here, the work is :mod:`stabstat.analysis` / :mod:`stabstat.claims`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import click

from stabstat._text import CLI_MISSING, ci_cli, level_cli, number_cli, p_value_cli
from stabstat.cli._options import (
    chart_format,
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
    from stabstat.analysis.results import FailureCount, Interval, Row
    from stabstat.claims import CheckResult


# --------------------------------------------------------------------------- output


def _interval(iv: Interval | None) -> str:
    """``estimate [low, high]``; ``-`` when there is none."""
    return CLI_MISSING if iv is None else ci_cli(iv.estimate, iv.ci_low, iv.ci_high)


def _emit(result: AnalysisResult, fmt: str, table: Callable[[AnalysisResult], None]) -> None:
    if fmt == "json":
        echo_json(result.to_dict())
        return
    if fmt == "csv":
        click.echo(result.to_frame().write_csv(), nl=False)
        tests = result.to_frame("tests")
        if tests.height:
            click.echo()
            click.echo(tests.write_csv(), nl=False)
        return
    table(result)
    s = result.settings
    click.echo(f"metric: {s['split']}/{s['metric']} ({s['at']}); failure: {s['failure_rule']}")
    click.echo(intervals_footer(result.analysis, s))
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)


#: The failure-rate interval, as every footer names it.
_RATE_CI = "Wilson (Clopper-Pearson at 0 or all)"


def intervals_footer(analysis: str, s: Mapping[str, Any]) -> str:
    """The footer line naming the interval and test methods ``analysis`` actually used
    (``s``: the result's settings)."""
    from stabstat.stats import AUTO_TEXT

    conf = f"{int(round(s['confidence'] * 100))}%"
    ci = s["ci_method"]
    boot = (f"bootstrap {'BCa' if ci == 'bca' else ci if ci != 'auto' else f'({AUTO_TEXT})'}, "
            f"{s['resamples']} resamples, seed {s['seed']}")
    adjusted = f"p-values adjusted: {s['correction']}"
    if analysis == "failure_rate":
        return (f"intervals: {conf} {_RATE_CI}; differences Newcombe, Fisher exact p; trends: logistic "
                f"regression, Wald (permutation test under separation, {s['resamples']} permutations, "
                f"seed {s['seed']}); {adjusted}")
    if analysis == "gradients":
        return (f"intervals: collapsed share {conf} {_RATE_CI}; log10 ratio median difference {conf} {boot}; "
                "collapse vs failure: Fisher exact p")
    if analysis == "variance":
        return f"intervals: correlations {conf} {boot} (pairs resampled); slope: OLS t interval"
    return (f"intervals: {conf} {boot}; failure rates {_RATE_CI}, differences Newcombe; "
            f"p: permutation ({s['resamples']}), Fisher exact for failure rates; {adjusted}")


def _rate(f: FailureCount) -> str:
    return ci_cli(f.rate, f.ci_low, f.ci_high)


def _tests_table(tests: Sequence[Row]) -> list[dict[str, str]]:
    """One table row per test of compare / failure-rate / gradients: name, levels a and b,
    estimate [CI], p and adjusted p (``-`` where a test has none)."""
    from stabstat.analysis.results import (
        BrownForsythe,
        CollapseVsFailure,
        FailureRateDifference,
        Log10RatioMedianDifference,
        MeanDifference,
        ProbabilityOfImprovement,
        SdRatio,
    )

    rows = []
    for t in tests:
        p: float | None
        p_adj: float | None
        match t:
            case BrownForsythe():
                defined = math.isfinite(t.statistic)  # undefined with no within-group spread
                rows.append({"test": f"Brown-Forsythe ({t.runs} runs)", "a": "all levels", "b": "",
                             "estimate [CI]": f"W = {number_cli(t.statistic)}" if defined else "undefined",
                             "p": p_value_cli(t.p_value), "p adj": ""})
                continue
            case MeanDifference():
                name, est, p, p_adj = "mean difference" + (" (paired)" if t.paired else ""), _interval(t.diff), \
                    t.p_value, t.p_adjusted
            case FailureRateDifference():
                name, est, p, p_adj = "failure rate difference", _interval(t.diff), t.p_value, t.p_adjusted
            case ProbabilityOfImprovement():
                name, est, p, p_adj = "probability of improvement", _interval(t.poi), None, None
            case SdRatio():
                name, est, p, p_adj = f"sd ratio ({t.runs} runs)", _interval(t.ratio), None, None
            case CollapseVsFailure():
                name, est, p, p_adj = "collapse vs failure", ci_cli(t.estimate, None, None), t.p_value, None
            case Log10RatioMedianDifference():
                name, est, p, p_adj = "log10 ratio median difference", _interval(t.diff), None, None
            case _:
                raise TypeError(f"no table row for {type(t).__name__}")
        rows.append({"test": name, "a": level_cli(t.a), "b": level_cli(t.b), "estimate [CI]": est,
                     "p": p_value_cli(p), "p adj": p_value_cli(p_adj)})
    return rows


# --------------------------------------------------------------------------- compare


@click.command("compare")
@click.option("--by", "by", required=True, metavar="FACTOR", help="Factor whose levels are compared.")
@click.option("--paired/--unpaired", "paired", default=None,
              help="Pair levels by seed [default: when both levels have the same seeds once each].")
@click.option("--stratify", metavar="FACTOR",
              help="Also report mean and IQM with a bootstrap stratified by FACTOR (e.g. task): "
                   "seeds are resampled within each stratum.")
@click.option("--resample", type=click.Choice(["seeds", "seeds,examples"]), default="seeds", show_default=True,
              help="seeds,examples: also a seeds x examples bootstrap (MultiBERTs) recomputing the metric "
                   "(accuracy, f1, mcc, acc_f1) from the stored per-example predictions: CIs of each "
                   "level's mean and of differences, and the examples' share of the variance.")
@click.option("--test", "test", type=click.Choice(["aso"]), default=None,
              help="aso: also almost stochastic order (Dror et al. 2019) of every ordered pair: "
                   "eps_min < 0.5 means a is almost stochastically larger (usual threshold 0.2).")
@selection_options
@stat_options
@db_option
@format_option
def compare(by: str, paired: bool | None, stratify: str | None, resample: str, test: str | None, db: str, fmt: str,
            **kw: Any) -> None:
    """Compare the levels of a factor: per-level statistics with bootstrap CIs
    and failure rates, pairwise differences with p-values, and spread tests.

    Per level: runs, failed runs and failure rate (Wilson interval; Clopper-Pearson
    at 0 or all), mean, SD, median, IQM and max of the metric with bootstrap CIs
    (BCa, percentile for the SD below 20 runs: --ci-method auto). Pairs of levels
    (a, b): mean difference a - b with a bootstrap CI and a permutation p-value
    (paired by seed when both levels share their seeds), probability of
    improvement P(a > b), failure-rate difference (Newcombe interval, Fisher
    exact p), SD ratio with and without failed runs; p-values Holm-adjusted over
    the pairs. Brown-Forsythe test of equal spread ("undefined" when no group
    has spread to compare, e.g. 2 runs per group).

    \b
    Example:
        stabstat compare --by bias_correction --filter task=rte
        stabstat compare --by lr --metric f1 --at best --format json
        stabstat compare --by recipe --baseline 0.5 --resamples 20000 --seed 7
        stabstat compare --by recipe --stratify task
        stabstat compare --by recipe --where "lr > ? AND n_train <= ?" --param 2e-5 --param 1000
        stabstat compare --by recipe --resample seeds,examples --metric accuracy
        stabstat compare --by recipe --test aso --correction holm
    """
    from stabstat.analysis import compare as run_compare

    with open_store(db) as store:
        res = run_compare(store, by, selection=selection_from(kw), settings=settings_from(kw),
                          paired="auto" if paired is None else paired, stratify=stratify,
                          resample=resample, test=test)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.results import CompareGroup

        f = r.by[0]
        rows = [{f: level_cli(g.level), "runs": str(g.n_runs), "failed": number_cli(g.failures.n_failed),
                 "failure rate [CI]": _rate(g.failures), "mean [CI]": _interval(g.mean),
                 "sd [CI]": _interval(g.std), "median [CI]": _interval(g.median), "iqm [CI]": _interval(g.iqm),
                 "max": number_cli(g.max.estimate),
                 **({"stratified mean [CI]": _interval(g.stratified.mean if g.stratified else None),
                     "stratified iqm [CI]": _interval(g.stratified.iqm if g.stratified else None)}
                    if stratify else {})}
                for g in cast("list[CompareGroup]", r.groups)]
        print_rows(f"{r.settings['metric']} by {f}", rows)
        print_rows("pairwise (a - b; sd ratio a / b)", _tests_table(r.tests))
        _example_tables(r)

    _emit(res, fmt, table)


def _example_tables(r: AnalysisResult) -> None:
    """The seeds x examples bootstrap and ASO tables of ``compare`` (when asked for)."""
    f = r.by[0]
    print_rows(f"seeds x examples bootstrap ({r.settings.get('example_resamples')} resamples, percentile CI; runs "
                "and examples resampled jointly)", [
        {f: level_cli(g["level"]), "runs": str(g["runs"]), "examples": str(g["examples"]),
         "mean [CI]": ci_cli(g["estimate"], g["ci_low"], g["ci_high"]),
         "width seeds only": number_cli(g["width_seeds"]), "width examples only": number_cli(g["width_examples"]),
         "examples' share": number_cli(g["share_examples"])} for g in r.sections.get("examples", [])])
    print_rows("seeds x examples differences (a - b)", [
        {"a": level_cli(d["a"]), "b": level_cli(d["b"]), "estimate [CI]": ci_cli(d["estimate"], d["ci_low"],
                                                                                   d["ci_high"]),
         "paired over": d["pairing"]} for d in r.sections.get("examples_pairs", [])])
    print_rows("almost stochastic order (eps_min < 0.5: a almost stochastically larger; strict: < 0.2)", [
        {"a": level_cli(t["a"]), "b": level_cli(t["b"]), "eps_min": number_cli(t["eps_min"]),
         "violation ratio": number_cli(t["violation_ratio"]), "confidence": number_cli(t["confidence"]),
         f"p adj (eps >= 0.2, {t['correction']})": p_value_cli(t["p_adjusted"])} for t in r.sections.get("aso", [])])


# --------------------------------------------------------------------------- failure rate


@click.command("failure-rate")
@click.option("--by", "by", required=True, multiple=True, metavar="FACTOR",
              help="Factor (give --by twice for two, e.g. --by n_train --by max_steps).")
@click.option("--transform", type=click.Choice(["auto", "log2", "none"]), default="auto", show_default=True,
              help="Numeric factors in the logistic trend: log2 (odds ratio per doubling), none (per unit), "
                   "auto (log2 for positive factors spanning >= 4x).")
@selection_options
@stat_options
@db_option
@format_option
def failure_rate(by: tuple[str, ...], transform: str, db: str, fmt: str, **kw: Any) -> None:
    """Failure rate per level of one factor, or per cell of two.

    A run fails when its metric is at or below its majority-class baseline
    (or --baseline / --fail-below), when it diverged, or when it has no value.
    Intervals: Wilson (Clopper-Pearson at 0 or all failures). One factor:
    pairwise differences (Newcombe interval, Fisher exact p, Holm-adjusted).
    Numeric factors: logistic regression of failure (statsmodels GLM Binomial),
    odds ratio per doubling or per unit with CI and p; with two factors each is
    adjusted for the other and also fitted at every level of the other, which
    separates data-set size from the number of iterations. Perfect separation
    is reported with a warning and a permutation trend test.

    \b
    Example:
        stabstat failure-rate --by bias_correction
        stabstat failure-rate --by n_train --filter bias_correction=false
        stabstat failure-rate --by n_train --by max_steps --format json
    """
    from stabstat.analysis import failure_rate as run_failure_rate

    with open_store(db) as store:
        res = run_failure_rate(store, list(by), selection=selection_from(kw), settings=settings_from(kw),
                               transform=transform)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.results import FailureRateDifference, FailureRateGroup, LogisticTrend

        rows = [{**{f: level_cli(v) for f, v in g.key.items()}, "runs": str(g.n_runs),
                 "failed": number_cli(g.failures.n_failed), "failure rate [CI]": _rate(g.failures),
                 "interval": str(g.failures.ci_method)} for g in cast("list[FailureRateGroup]", r.groups)]
        print_rows(f"failure rate by {' x '.join(r.by)}", rows)
        pairs = [t for t in r.tests if isinstance(t, FailureRateDifference)]
        print_rows("pairwise differences (a - b)", _tests_table(pairs))
        trends = [{"factor": t.factor, "at": level_cli(dict(t.at)),
                   "odds ratio [CI]": ci_cli(t.fit.odds_ratio, t.fit.or_ci_low, t.fit.or_ci_high),
                   "per": t.per, "direction": t.direction or CLI_MISSING, "p": p_value_cli(t.p_value),
                   "p adj": p_value_cli(t.p_adjusted),
                   "note": "separation" if t.fit.separation else ""}
                  for t in r.tests if isinstance(t, LogisticTrend)]
        print_rows("logistic trend of failure", trends)

    _emit(res, fmt, table)


# --------------------------------------------------------------------------- variance


@click.command("variance")
@click.option("--against", default="train_loss", show_default=True, metavar="train_loss|FACTOR",
              help="The final training loss (mean of the last 10 logged losses), or a numeric factor.")
@click.option("--by", "by", metavar="FACTOR", help="Analyse each level of this factor separately.")
@click.option("--bins", type=click.IntRange(min=1), default=5, show_default=True,
              help="Equal-count bins of runs ordered by --against.")
@selection_options
@stat_options
@db_option
@format_option
def variance(against: str, by: str | None, bins: int, db: str, fmt: str, **kw: Any) -> None:
    """Among successful runs: does the same training loss give the same dev metric?

    Reports Pearson and Spearman correlations between the final training loss
    and the metric (bootstrap CIs, pairs resampled), the OLS slope (t interval),
    and the metric's mean, range and SD within equal-count bins of runs with
    nearly the same training loss. A within-bin SD close to the overall SD
    (within_to_total_sd near 1) means the remaining variance is generalisation,
    not optimisation (Mosbach et al. 2021). Failed runs are left out.

    \b
    Example:
        stabstat variance --against train_loss --filter task=rte
        stabstat variance --by bias_correction --bins 4 --format json
    """
    from stabstat.analysis import variance as run_variance

    with open_store(db) as store:
        res = run_variance(store, against, by=by, bins=bins, selection=selection_from(kw), settings=settings_from(kw))

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.results import VarianceBin, VarianceGroup

        rows = []
        for g in cast("list[VarianceGroup]", r.groups):
            fit = g.fit
            rows.append({**{k: level_cli(v) for k, v in g.key.items()}, "runs": str(g.n_runs),
                         "pearson [CI]": _interval(fit.pearson if fit else None),
                         "spearman [CI]": _interval(fit.spearman if fit else None),
                         "slope [CI]": _interval(fit.slope if fit else None),
                         "metric sd": number_cli(g.metric_sd),
                         "within-bin sd": number_cli(fit.within_bin_sd if fit else None)})
        print_rows(f"successful runs: {r.settings['metric']} against {against}", rows)
        brows = [{**{k: level_cli(v) for k, v in b.key.items()}, "bin": str(b.bin), "runs": str(b.n_runs),
                  against: f"{number_cli(b.x_min)} .. {number_cli(b.x_max)}",
                  "mean": number_cli(b.metric_mean),
                  "range": f"{number_cli(b.metric_min)} .. {number_cli(b.metric_max)}",
                  "sd": number_cli(b.metric_sd)} for b in cast("list[VarianceBin]", r.sections["bins"])]
        print_rows(f"bins of nearly equal {against}", brows)

    _emit(res, fmt, table)


# --------------------------------------------------------------------------- gradients


@click.command("gradients")
@click.option("--by", "by", metavar="FACTOR", help="Also split the summary by this factor.")
@click.option("--max-depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Lower layers: depth <= this (0 embeddings, 1 first encoder layer, ...).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Use only the first STEPS steps [default: all].")
@click.option("--collapse-factor", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Collapsed: the lower layers' median norm is this many times below its first value ...")
@click.option("--plateau", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="... while the final training loss is at least this fraction of the initial loss.")
@selection_options
@stat_options
@db_option
@format_option
def gradients(by: str | None, max_depth: int, steps: int | None, collapse_factor: float, plateau: float,
              db: str, fmt: str, **kw: Any) -> None:
    """The vanishing-gradient signature: lower layers' gradient norms, failed vs successful runs.

    Per run, the lower layers' combined gradient norm (sqrt of the sum of squared
    layer norms) is summarised as its median over the steps divided by its value at
    the first logged step. A run is flagged as collapsed when that ratio falls by
    --collapse-factor or more while its loss plateaus. Summaries per failed and
    successful runs, a Fisher test of collapse against failure, and per-layer
    ratios. Runs without per-layer norms (HF Trainer logs) use the total grad_norm.

    \b
    Example:
        stabstat gradients --filter task=rte
        stabstat gradients --by bias_correction --steps 200 --format json
    """
    from stabstat.analysis import gradients as run_gradients

    with open_store(db) as store:
        res = run_gradients(store, by=by, selection=selection_from(kw), settings=settings_from(kw),
                            max_depth=max_depth, steps=steps, collapse_factor=collapse_factor, plateau=plateau)

    def table(r: AnalysisResult) -> None:
        from stabstat.analysis.results import GradientGroup, GradientRun

        rows = [{"runs": "failed" if g.failed else "successful" if g.failed is not None else "unknown",
                 **{k: level_cli(v) for k, v in g.key.items()}, "n": str(g.n_runs),
                 "collapsed [CI]": f"{g.collapsed.n_failed} ({_rate(g.collapsed)})",
                 "lower-layer norm ratio (median, IQR)":
                     f"{number_cli(g.median_ratio)} ({number_cli(g.ratio_q25)} .. {number_cli(g.ratio_q75)})",
                 "loss end/start": number_cli(g.median_loss_ratio)} for g in cast("list[GradientGroup]", r.groups)]
        sources = {run.source for run in cast("list[GradientRun]", r.sections["runs"])}
        title = (f"lower layers (depth <= {r.settings['max_depth']})" if sources == {"layers"}
                 else "total gradient norm (no per-layer norms)" if sources == {"total"}
                 else f"lower layers (depth <= {r.settings['max_depth']}), total norm where no per-layer norms")
        print_rows(title, rows)
        print_rows("tests (a = failed, b = successful)", _tests_table(r.tests))

    _emit(res, fmt, table)


# --------------------------------------------------------------------------- check


@click.command("check")
@click.argument("claims_file", type=click.Path(dir_okay=False))
@click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Significance level [default: the file's, else 0.05].")
@click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default=None,
              help="Adjustment across the claims [default: the file's, else holm].")
@click.option("--resamples", type=click.IntRange(min=100), default=None,
              help="Bootstrap resamples [default: the file's, else 10000].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Resampling seed [default: the file's, else 0].")
@click.option("--sequential", is_flag=True,
              help="Confidence sequences instead of fixed-n tests (kinds failure_rate, mean, max_failure_rate): "
                   "PASS/FAIL as soon as the sequence excludes the claim's boundary; valid however often it is "
                   "re-run as seeds arrive. Bonferroni across the claims.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --sequential: write each claim's confidence sequence against seeds (a funnel, the "
                   "stopping point marked) to FILE (.png, .svg or .json).")
@db_option
@format_option
def check(claims_file: str, alpha: float | None, correction: str | None, resamples: int | None, seed: int | None,
          sequential: bool, chart_path: str | None, db: str, fmt: str) -> None:
    """Evaluate declarative stability claims (TOML); exit 1 when any claim FAILs.

    Each claim gets PASS (evidence for it), FAIL (evidence against it) or
    INCONCLUSIVE, with the estimate, its CI, the one-sided p-value and the
    p-value adjusted across the file's claims (Holm by default), and the runs
    used. The claims format is in the README (Statistics section).

    With --sequential each claim gets a time-uniform confidence sequence
    (betting, Waudby-Smith & Ramdas 2023) over its runs in seed order, at
    level alpha / (number of claims): check after every batch of seeds and
    stop when every claim is decided (stabstat-run --until-decided does).
    A mean is assumed to lie in [0, 1] ([-1, 1] for mcc) unless the claim
    states bounds = [low, high].

    \b
    Example:
        stabstat check claims.toml
        stabstat check claims.toml --db sweep.duckdb --format json
        stabstat check claims.toml --sequential
        stabstat check claims.toml --sequential --chart funnel.png

    \b
    claims.toml:
        [defaults]
        filter = { task = "rte" }
        [[claims]]
        name = "bias correction lowers the failure rate"
        kind = "failure_rate"
        factor = "bias_correction"
        higher = false
        lower = true
    """
    from stabstat.claims import check as run_check
    from stabstat.claims import load_claims

    load_claims(claims_file)  # a bad file is reported before the store is opened
    if chart_path is not None and not sequential:
        raise click.UsageError("--chart draws confidence sequences: add --sequential")
    chart_fmt = chart_format(chart_path) if chart_path is not None else None
    # Command line > file > defaults, field by field (stabstat.claims.claims_settings).
    with open_store(db) as store:
        res = run_check(store, claims_file, alpha=alpha, sequential=sequential,
                        overrides={"resamples": resamples, "seed": seed, "correction": correction})
    if fmt == "json":
        echo_json(res.to_dict())
    elif fmt == "csv":
        click.echo(res.to_frame().write_csv(), nl=False)
    else:
        _print_verdicts(res)
    if chart_path is not None:
        from stabstat.charts import save
        from stabstat.charts.sequential import claims_funnels

        funnels = claims_funnels([c.to_dict() for c in res.claims])
        if funnels is not None:
            save(funnels, chart_path, fmt=chart_fmt)
    if not res.ok:
        sys.exit(1)


def _print_verdicts(res: CheckResult) -> None:
    """``stabstat check``'s table: per claim its coloured verdict, detail, estimate with CI,
    p-values and runs, then the counts and the settings."""
    colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}
    for c in res.claims:
        click.secho(f"{c.verdict:<12}", fg=colour[c.verdict], nl=False)
        click.echo(f" {c.name}")
        click.echo(f"             {c.detail}")
        if c.sequence is not None:
            at = c.sequence["decided_at"]
            b = f"{c.sequence['boundary']:g}"
            click.echo(f"             confidence sequence: excludes {b} from n = {at} on" if at
                       else f"             confidence sequence: does not exclude {b} yet")
        click.echo(f"             estimate {ci_cli(c.estimate, c.ci_low, c.ci_high)} ({c.ci_method}); "
                   f"p = {p_value_cli(c.p_value)}, adjusted {p_value_cli(c.p_adjusted)} ({c.p_method}); "
                   f"n = {', '.join(f'{k}: {v}' for k, v in c.n.items())}")
        for w in c.warnings:
            click.secho(f"             warning: {w}", fg="yellow")
    counts = res.counts()
    s = res.settings
    click.echo(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive "
               f"(alpha {s['alpha']:g}, {s['correction']} across {len(res.claims)} claims; "
               + ("confidence sequences, valid at every number of seeds)" if s.get("sequential")
                  else f"{s['resamples']} resamples, seed {s['seed']})"))
