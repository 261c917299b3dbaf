"""``stabstat forgetting``: the forgetting probe's analysis from the CLI.

Thin: options are parsed here, the work is :func:`stabstat.analysis.forgetting`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import click

from stabstat._text import CLI_MISSING, ci_cli, level_cli, number_cli
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

def _group_label(outcome: str, key: dict[str, Any]) -> str:
    return ", ".join([*(f"{k}={level_cli(v)}" for k, v in key.items()), outcome])


def _print_table(res: AnalysisResult) -> None:
    """k down the side, one column per group (``value [CI] (n)``); then recovery and differences."""
    from stabstat.analysis.forgetting import (
        ForgettingDifference,
        ForgettingPoint,
        ForgettingRecovery,
    )

    s = res.settings
    by_k: dict[int, dict[str, str]] = {}
    for p in cast("list[ForgettingPoint]", res.groups):
        cell = f"{ci_cli(p.value.estimate, p.value.ci_low, p.value.ci_high)} ({p.n_runs})"
        by_k.setdefault(p.k, {"k": str(p.k)})[_group_label(p.outcome, dict(p.key))] = cell
    print_rows(f"{s['statistic']} {s['probe_metric']} [CI] (runs), top k layers reset to pre-trained",
                [by_k[k] for k in sorted(by_k)])
    rec = [{"runs": _group_label(r.outcome, dict(r.key)), "n": str(r.n_runs), "layers": str(r.layers),
            "pre-trained (k = L)": number_cli(r.pretrained), "k = 0": number_cli(r.at_k0),
            f"recovered from k (within {s['within']:.0%})": CLI_MISSING if r.recovered_at is None
            else str(r.recovered_at)}
           for r in cast("list[ForgettingRecovery]", res.sections["recovery"])]
    print_rows("recovery", rec)
    tests = [{**{k: level_cli(v) for k, v in t.key.items()}, "k": str(t.k),
              f"{s['statistic']} difference [CI]": ci_cli(t.diff.estimate, t.diff.ci_low, t.diff.ci_high),
              "n failed": str(t.n_a), "n successful": str(t.n_b)}
             for t in cast("list[ForgettingDifference]", res.tests)]
    print_rows("failed - successful", tests)


@click.command("forgetting")
@click.option("--by", "by", metavar="FACTOR", help="Also split the runs by this factor's levels.")
@click.option("--score", "score", type=click.Choice(["mlm_perplexity", "mlm_loss", "mlm_accuracy"]),
              default="mlm_perplexity", show_default=True, help="The probe's score to analyse.")
@click.option("--statistic", type=click.Choice(["median", "mean", "iqm", "max", "std"]), default="median",
              show_default=True, help="Statistic over the runs of a group at each k.")
@click.option("--within", type=click.FloatRange(0.0, 10.0), default=0.1, show_default=True,
              help="Recovered: the statistic is within this relative distance of the pre-trained score "
                   "from k on.")
@click.option("--chart", "chart_out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also save the chart (png, svg or Vega-Lite json, from the suffix).")
@selection_options
@stat_options
@db_option
@format_option
def forgetting(by: str | None, score: str, statistic: str, within: float, chart_out: str | None, db: str,
               fmt: str, **kw: Any) -> None:
    """Forgetting probe: is a failed run's damage in its top layers?

    Needs runs trained with probe = ["forgetting"] (README: The forgetting
    probe): for k = 0..L, the top k encoder layers were reset to the
    pre-trained weights under the pre-trained MLM head and the masked-LM
    perplexity measured on the same masked text for every run (k = L is the
    pre-trained model). Runs are failed or successful by the usual rule on the
    dev metric (--metric, --baseline, ...). Per k: the statistic over runs with
    a bootstrap CI, failed and successful apart; failed minus successful with
    its CI; and the k from which on each group stays within --within of the
    pre-trained score (Mosbach et al. 2021, Section 4).

    \b
    Example:
        stabstat forgetting
        stabstat forgetting --by bias_correction --chart forgetting.png
        stabstat forgetting --score mlm_loss --statistic mean --format json
    """
    from stabstat.analysis import forgetting as run_forgetting

    chart_fmt = chart_format(chart_out) if chart_out is not None else None
    with open_store(db) as store:
        res = run_forgetting(store, by=by, selection=selection_from(kw), settings=settings_from(kw),
                             metric=score, statistic=statistic, within=within)
    if fmt == "json":
        echo_json(res.to_dict())
    elif fmt == "csv":
        click.echo(res.to_frame().write_csv(), nl=False)
        tests = res.to_frame("tests")
        if tests.height:
            click.echo()
            click.echo(tests.write_csv(), nl=False)
    else:
        _print_table(res)
        from stabstat.stats import AUTO_TEXT

        s = res.settings
        conf = f"{int(round(s['confidence'] * 100))}%"
        method = {"bca": "BCa", "percentile": "percentile"}.get(s["ci_method"], f"({AUTO_TEXT})")
        click.echo(f"failure: {s['split']}/{s['metric']} ({s['at']}): {s['failure_rule']}")
        click.echo(f"intervals: {conf} bootstrap {method}, {s['resamples']} resamples, seed {s['seed']}")
        for w in res.warnings:
            click.secho(f"warning: {w}", fg="yellow", err=True)
    if chart_out is not None:
        from stabstat import charts
        from stabstat.analysis.forgetting import curve_frame

        ch = charts.forgetting_curves(curve_frame(res), metric=score)
        charts.save(ch, chart_out, fmt=chart_fmt)
        click.echo(f"wrote {chart_out}", err=fmt != "table")
