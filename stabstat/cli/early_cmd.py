"""``stabstat early``: predict failed runs from their first K steps (held-out), choose K, print
the ``stabstat-run --stop-doomed`` rule.

Thin: options are parsed here, the work is :func:`stabstat.analysis.early.early`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from stabstat._text import ci_cli
from stabstat.cli._options import (
    chart_format,
    db_option,
    echo_json,
    format_option,
    open_store,
    print_rows,
    selection_from,
    selection_options,
)

if TYPE_CHECKING:
    from stabstat.analysis.early import EarlyResult

def _steps(text: str | None) -> list[int] | None:
    from stabstat.errors import SelectionError

    if text is None:
        return None
    try:
        ks = sorted({int(t) for t in text.replace(" ", "").split(",") if t})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise SelectionError(f"--steps {text!r}: give optimiser steps >= 1 separated by commas, e.g. --steps 10,20,40")
    return ks


def _folds(text: str) -> str | int:
    from stabstat.errors import SelectionError

    if text in ("auto", "config"):
        return text
    if text.isdigit() and int(text) >= 2:
        return int(text)
    raise SelectionError(f"--folds {text!r}: give auto, config (leave one configuration out) or a number >= 2")


def _print_table(res: EarlyResult) -> None:
    pct = f"{int(round(res.settings['confidence'] * 100))}%"
    rows = [{"method": r.method, "K": str(r.step), "flagged (successful)": f"{r.flagged} ({r.flagged_successful})",
             f"precision [{pct}]": ci_cli(r.precision.estimate, r.precision.ci_low, r.precision.ci_high),
             f"recall [{pct}]": ci_cli(r.recall.estimate, r.recall.ci_low, r.recall.ci_high),
             f"compute saved [{pct}]": ci_cli(r.saving.estimate, r.saving.ci_low, r.saving.ci_high)}
            for r in res.rows]
    print_rows(None, rows)


def _print_verdict(res: EarlyResult) -> None:
    from schemas.stop_rule import parse

    s = res.settings
    n = res.rows[0]
    click.echo(f"runs: {n.n_runs} ({n.n_failed} failed); failure: {s['split']}/{s['metric']} ({s['at']}): "
               f"{s['failure_rule']}")
    click.echo(f"held out: {s['folds']}; intervals: {int(round(s['confidence'] * 100))}% percentile bootstrap "
               f"over runs, {s['resamples']} resamples, seed {s['seed']}")
    for method, k in res.chosen.items():
        if k is None:
            click.echo(f"{method}: no K keeps the held-out precision >= {s['target']:g}; do not stop runs early "
                       "on this evidence (train more seeds, or try other --steps)")
            continue
        r = res.row(method, k)
        click.echo(f"{method}: K = {k}: precision {ci_cli(r.precision.estimate, r.precision.ci_low, r.precision.ci_high)}, "
                   f"saves {ci_cli(r.saving.estimate, r.saving.ci_low, r.saving.ci_high)} of the compute")
        if r.rule is not None:
            parse(r.rule)  # the runner's parser reads what we print
            click.echo(f"  stop rule (fitted on all runs): stabstat-run SWEEP --stop-doomed \"{r.rule}\"")


@click.command("early")
@click.option("--steps", "steps_text", metavar="K,K,...",
              help="Steps K to try [default: 5, 10, 15, 20, 30, 40 and 50% of the median run length].")
@click.option("--target", type=click.FloatRange(0.5, 1.0), default=0.95, show_default=True,
              help="Precision the chosen K must keep (held out) at it and every later K.")
@click.option("--folds", "folds_text", default="auto", show_default=True, metavar="auto|config|N",
              help="Held-out scheme: leave one configuration (config minus seeds) out, or N-fold over runs; "
                   "auto: config with >= 3 configurations, else 5-fold.")
@click.option("--method", "methods", type=click.Choice(["threshold", "logit"]), multiple=True,
              help="Predictors to score (repeatable) [default: both].")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the runs.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the folds and the resampling.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--chart", "chart_out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also save precision/recall/compute saved vs K (png, svg or Vega-Lite json).")
@selection_options
@db_option
@format_option
def early(steps_text: str | None, target: float, folds_text: str, methods: tuple[str, ...], resamples: int,
          seed: int, confidence: float, chart_out: str | None, db: str, fmt: str, **kw: Any) -> None:
    """Predict failed runs from their first K steps and choose the K to stop at.

    Features at K: training loss relative to its start and to the
    class-balance loss, the lowest layer's gradient-norm ratio, and the last
    dev score minus the majority baseline (whatever the logs have). Two
    predictors, a single printed threshold and an L1 logistic regression, are
    fitted on some runs and scored on held-out ones. Per K: precision,
    recall, runs flagged and the compute stopping them at K saves, with
    bootstrap intervals. K = the earliest step whose held-out precision stays
    >= --target; its threshold is printed as a `stabstat-run --stop-doomed`
    rule. Stopped runs are left out (their outcome is unknown).

    \b
    Example:
        stabstat early
        stabstat early --steps 10,20,40 --target 0.9 --folds config
        stabstat early --method threshold --format json
        stabstat early --chart early.png
    """
    from stabstat.analysis import Settings
    from stabstat.analysis.early import early as run_early

    chart_fmt = chart_format(chart_out) if chart_out is not None else None
    settings = Settings(resamples=resamples, seed=seed, confidence=confidence)
    with open_store(db) as store:
        res = run_early(store, selection=selection_from(kw), settings=settings, steps=_steps(steps_text),
                        target=target, folds=_folds(folds_text), methods=methods or ("threshold", "logit"))
    if fmt == "json":
        echo_json(res.to_dict())
    elif fmt == "csv":
        click.echo(res.to_frame().write_csv(), nl=False)
    else:
        _print_table(res)
        _print_verdict(res)
        for w in res.warnings:
            click.secho(f"warning: {w}", fg="yellow", err=True)
    if chart_out is not None:
        from stabstat import charts

        charts.save(charts.early_curves(res.to_frame(), target=target), chart_out,
                    fmt=chart_fmt)
        click.echo(f"wrote {chart_out}", err=fmt != "table")
