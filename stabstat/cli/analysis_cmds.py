"""``stabstat compare | failure-rate | variance | gradients | check``: statistics from the CLI.

Thin: options are parsed here, the work is :mod:`stabstat.analysis` / :mod:`stabstat.claims`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from stabstat.cli._options import db_option, echo_json, format_option

F = TypeVar("F", bound=Callable[..., Any])


def selection_options(f: F) -> F:
    """--filter, --where, --metric, --split, --at, --baseline, --fail-below, --include-incomplete."""
    opts = [
        click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
                     help="Keep runs whose factor KEY equals VALUE (repeatable; all must hold)."),
        click.option("--where", "where", metavar="SQL",
                     help="Extra condition over the runs table's columns, e.g. \"lr <= 1e-4\" "
                          "(trusted SQL: it is pasted into the query)."),
        click.option("--metric", help="Metric to analyse [default: accuracy if evaluated, else the task's "
                                      "first metric]."),
        click.option("--split", help="Evaluation split [default: dev, or the only split]."),
        click.option("--at", "at", type=click.Choice(["final", "best"]), default="final", show_default=True,
                     help="The metric at the last evaluation, or the best over evaluations."),
        click.option("--baseline", type=float, metavar="VALUE",
                     help="Fail runs at or below VALUE instead of their stored majority-class baseline."),
        click.option("--fail-below", "fail_below", type=float, metavar="VALUE",
                     help="Fail runs strictly below VALUE instead (not with --baseline)."),
        click.option("--include-incomplete", is_flag=True,
                     help="Keep running, interrupted and crashed (status failed) runs."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def stat_options(f: F) -> F:
    """--resamples, --seed, --ci-method, --confidence, --correction."""
    opts = [
        click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
                     help="Bootstrap resamples (and permutations for p-values)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the resampling: the same data and seed give the same output."),
        click.option("--ci-method", "ci_method", type=click.Choice(["bca", "percentile"]), default="bca",
                     show_default=True, help="Bootstrap interval."),
        click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
                     help="Confidence level of the intervals."),
        click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default="holm", show_default=True,
                     help="Multiple-comparison adjustment across the p-values of one command."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _selection(kw: dict[str, Any]) -> Any:
    from stabstat.analysis import Selection

    return Selection(filters=tuple(kw["filters"]), where=kw["where"], metric=kw["metric"], split=kw["split"],
                     at=kw["at"], baseline=kw["baseline"], fail_below=kw["fail_below"],
                     include_incomplete=kw["include_incomplete"])


def _settings(kw: dict[str, Any]) -> Any:
    from stabstat.analysis import Settings

    return Settings(resamples=kw["resamples"], seed=kw["seed"], ci_method=kw["ci_method"],
                    confidence=kw["confidence"], correction=kw["correction"])


def _open(db: str) -> Any:
    from stabstat.store import Store

    return Store.open(db)


# --------------------------------------------------------------------------- output


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def _ci(est: Any, lo: Any, hi: Any) -> str:
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "-"
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _num(est)
    return f"{_num(est)} [{_num(lo)}, {_num(hi)}]"


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def _level(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_level(x)}" for k, x in v.items()) or "all"
    return "null" if v is None else _num(v) if isinstance(v, (bool, float)) else str(v)


def _print_rows(title: str, rows: Sequence[dict[str, str]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    click.echo(title)
    click.echo("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    click.echo("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        click.echo("  ".join(r.get(c, "").ljust(widths[c]) for c in cols).rstrip())
    click.echo()


def _emit(result: Any, fmt: str, table: Callable[[Any], None]) -> None:
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
    click.echo(f"intervals: {int(round(s['confidence'] * 100))}% {s['ci_method']}, {s['resamples']} resamples, "
               f"seed {s['seed']}; p-values adjusted: {s['correction']}")
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)


def _rate(g: dict[str, Any]) -> str:
    return _ci(g["failure_rate"], g["failure_ci_low"], g["failure_ci_high"])


def _tests_table(tests: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for t in tests:
        if t["test"] == "brown_forsythe":
            rows.append({"test": f"Brown-Forsythe ({t['runs']} runs)", "a": "all levels", "b": "",
                         "estimate [CI]": f"W = {_num(t['statistic'])}", "p": _p(t["p_value"]), "p adj": ""})
            continue
        name = t["test"].replace("_", " ")
        if "runs" in t:
            name += f" ({t['runs']} runs)"
        if t.get("paired"):
            name += " (paired)"
        rows.append({"test": name, "a": _level(t.get("a", t.get("at", ""))), "b": _level(t.get("b", "")),
                     "estimate [CI]": _ci(t.get("estimate"), t.get("ci_low"), t.get("ci_high")),
                     "p": _p(t.get("p_value")), "p adj": _p(t.get("p_adjusted"))})
    return rows


# --------------------------------------------------------------------------- compare


@click.command("compare")
@click.option("--by", "by", required=True, metavar="FACTOR", help="Factor whose levels are compared.")
@click.option("--paired/--unpaired", "paired", default=None,
              help="Pair levels by seed [default: when both levels have the same seeds once each].")
@click.option("--stratify", metavar="FACTOR",
              help="Also report mean and IQM with a bootstrap stratified by FACTOR (e.g. task): "
                   "seeds are resampled within each stratum.")
@selection_options
@stat_options
@db_option
@format_option
def compare(by: str, paired: bool | None, stratify: str | None, db: str, fmt: str, **kw: Any) -> None:
    """Compare the levels of a factor: per-level statistics with bootstrap CIs
    and failure rates, pairwise differences with p-values, and spread tests.

    Per level: runs, failed runs and failure rate (Wilson interval; Clopper-Pearson
    at 0 or all), mean, SD, median, IQM and max of the metric with bootstrap CIs
    (BCa by default). Pairs of levels (a, b): mean difference a - b with a
    bootstrap CI and a permutation p-value (paired by seed when both levels share
    their seeds), probability of improvement P(a > b), failure-rate difference
    (Newcombe interval, Fisher exact p), SD ratio with and without failed runs;
    p-values Holm-adjusted over the pairs. Brown-Forsythe test of equal spread.

    \b
    Example:
        stabstat compare --by bias_correction --filter task=rte
        stabstat compare --by lr --metric f1 --at best --format json
        stabstat compare --by recipe --baseline 0.5 --resamples 20000 --seed 7
        stabstat compare --by recipe --stratify task
    """
    from stabstat.analysis import compare as run_compare

    with _open(db) as store:
        res = run_compare(store, by, selection=_selection(kw), settings=_settings(kw),
                          paired="auto" if paired is None else paired, stratify=stratify)

    def table(r: Any) -> None:
        f = r.by[0]
        rows = [{f: _level(g[f]), "runs": str(g["n_runs"]), "failed": _num(g["n_failed"]),
                 "failure rate [CI]": _rate(g), "mean [CI]": _ci(g["mean"], g["ci_low"], g["ci_high"]),
                 "sd [CI]": _ci(g["std"], g["std_ci_low"], g["std_ci_high"]),
                 "median [CI]": _ci(g["median"], g["median_ci_low"], g["median_ci_high"]),
                 "iqm [CI]": _ci(g["iqm"], g["iqm_ci_low"], g["iqm_ci_high"]),
                 "max": _num(g["max"]),
                 **({"stratified mean [CI]": _ci(g["mean_stratified"], g["mean_stratified_ci_low"],
                                                 g["mean_stratified_ci_high"]),
                     "stratified iqm [CI]": _ci(g["iqm_stratified"], g["iqm_stratified_ci_low"],
                                                g["iqm_stratified_ci_high"])} if stratify else {})}
                for g in r.groups]
        _print_rows(f"{r.settings['metric']} by {f}", rows)
        _print_rows("pairwise (a - b; sd ratio a / b)", _tests_table(r.tests))

    _emit(res, fmt, table)


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

    with _open(db) as store:
        res = run_failure_rate(store, list(by), selection=_selection(kw), settings=_settings(kw),
                               transform=transform)

    def table(r: Any) -> None:
        rows = [{**{f: _level(g[f]) for f in r.by}, "runs": str(g["n_runs"]), "failed": _num(g["n_failed"]),
                 "failure rate [CI]": _rate(g), "interval": g["failure_ci_method"]} for g in r.groups]
        _print_rows(f"failure rate by {' x '.join(r.by)}", rows)
        pairs = [t for t in r.tests if t["test"] == "failure_rate_difference"]
        _print_rows("pairwise differences (a - b)", _tests_table(pairs))
        trends = [{"factor": t["factor"], "at": _level(t["at"]),
                   "odds ratio [CI]": _ci(t["odds_ratio"], t["or_ci_low"], t["or_ci_high"]),
                   "per": t["per"], "direction": t["direction"] or "-", "p": _p(t["p_value"]),
                   "p adj": _p(t.get("p_adjusted")),
                   "note": "separation" if t["separation"] else ""}
                  for t in r.tests if t["test"] == "logistic_trend"]
        _print_rows("logistic trend of failure", trends)

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

    with _open(db) as store:
        res = run_variance(store, against, by=by, bins=bins, selection=_selection(kw), settings=_settings(kw))

    def table(r: Any) -> None:
        rows = []
        for g in r.groups:
            key = {by: _level(g[by])} if by else {}
            rows.append({**key, "runs": str(g["n_runs"]),
                         "pearson [CI]": _ci(g.get("pearson"), g.get("pearson_ci_low"), g.get("pearson_ci_high")),
                         "spearman [CI]": _ci(g.get("spearman"), g.get("spearman_ci_low"), g.get("spearman_ci_high")),
                         "slope [CI]": _ci(g.get("slope"), g.get("slope_ci_low"), g.get("slope_ci_high")),
                         "metric sd": _num(g.get("metric_sd")), "within-bin sd": _num(g.get("within_bin_sd"))})
        _print_rows(f"successful runs: {r.settings['metric']} against {against}", rows)
        brows = [{**({by: _level(b[by])} if by else {}), "bin": str(b["bin"]), "runs": str(b["n_runs"]),
                  against: f"{_num(b[f'{against}_min'])} .. {_num(b[f'{against}_max'])}",
                  "mean": _num(b["metric_mean"]), "range": f"{_num(b['metric_min'])} .. {_num(b['metric_max'])}",
                  "sd": _num(b["metric_sd"])} for b in r.sections["bins"]]
        _print_rows(f"bins of nearly equal {against}", brows)

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

    with _open(db) as store:
        res = run_gradients(store, by=by, selection=_selection(kw), settings=_settings(kw), max_depth=max_depth,
                            steps=steps, collapse_factor=collapse_factor, plateau=plateau)

    def table(r: Any) -> None:
        rows = [{"runs": "failed" if g["failed"] else "successful" if g["failed"] is not None else "unknown",
                 **({by: _level(g[by])} if by else {}), "n": str(g["n_runs"]),
                 "collapsed [CI]": f"{g['n_collapsed']} ({_ci(g['collapse_rate'], g['collapse_ci_low'], g['collapse_ci_high'])})",
                 "lower-layer norm ratio (median, IQR)":
                     f"{_num(g['median_ratio'])} ({_num(g['ratio_q25'])} .. {_num(g['ratio_q75'])})",
                 "loss end/start": _num(g["median_loss_ratio"])} for g in r.groups]
        sources = {run["source"] for run in r.sections["runs"]}
        title = (f"lower layers (depth <= {r.settings['max_depth']})" if sources == {"layers"}
                 else "total gradient norm (no per-layer norms)" if sources == {"total"}
                 else f"lower layers (depth <= {r.settings['max_depth']}), total norm where no per-layer norms")
        _print_rows(title, rows)
        _print_rows("tests (a = failed, b = successful)", _tests_table(r.tests))

    _emit(res, fmt, table)


# --------------------------------------------------------------------------- check


@click.command("check")
@click.argument("claims_file", type=click.Path(dir_okay=False))
@click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Significance level [default: the file's, else 0.05].")
@click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default=None,
              help="Adjustment across the claims [default: the file's, else holm].")
@click.option("--resamples", type=click.IntRange(min=100), default=None, help="Override the file's resamples.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the file's seed.")
@db_option
@format_option
def check(claims_file: str, alpha: float | None, correction: str | None, resamples: int | None, seed: int | None,
          db: str, fmt: str) -> None:
    """Evaluate declarative stability claims (TOML); exit 1 when any claim FAILs.

    Each claim gets PASS (evidence for it), FAIL (evidence against it) or
    INCONCLUSIVE, with the estimate, its CI, the one-sided p-value and the
    p-value adjusted across the file's claims (Holm by default), and the runs
    used. The claims format is in the README (Statistics section).

    \b
    Example:
        stabstat check claims.toml
        stabstat check claims.toml --db sweep.duckdb --format json

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
    from stabstat.analysis import Settings
    from stabstat.claims import check as run_check
    from stabstat.claims import load_claims

    defaults, _ = load_claims(claims_file)
    settings = None
    if resamples is not None or seed is not None:
        settings = Settings(resamples=resamples or int(defaults.get("resamples", 10_000)),
                            seed=seed if seed is not None else int(defaults.get("seed", 0)),
                            ci_method=str(defaults.get("ci_method", "bca")),
                            confidence=float(defaults.get("confidence", 0.95)))
    with _open(db) as store:
        res = run_check(store, claims_file, settings=settings, alpha=alpha, correction=correction)
    if fmt == "json":
        echo_json(res.to_dict())
    elif fmt == "csv":
        click.echo(res.to_frame().write_csv(), nl=False)
    else:
        colour = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}
        for c in res.claims:
            click.secho(f"{c.verdict:<12}", fg=colour[c.verdict], nl=False)
            click.echo(f" {c.name}")
            click.echo(f"             {c.detail}")
            click.echo(f"             estimate {_ci(c.estimate, c.ci_low, c.ci_high)} ({c.ci_method}); "
                       f"p = {_p(c.p_value)}, adjusted {_p(c.p_adjusted)} ({c.p_method}); "
                       f"n = {', '.join(f'{k}: {v}' for k, v in c.n.items())}")
            for w in c.warnings:
                click.secho(f"             warning: {w}", fg="yellow")
        counts = res.counts()
        s = res.settings
        click.echo(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive "
                   f"(alpha {s['alpha']:g}, {s['correction']} across {len(res.claims)} claims; "
                   f"{s['resamples']} resamples, seed {s['seed']})")
    if not res.ok:
        sys.exit(1)
