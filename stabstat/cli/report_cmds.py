"""``stabstat report`` and ``stabstat chart``: the HTML report and single-chart export.

Thin: options are parsed here; the work is :func:`stabstat.report.build_report` and
:mod:`stabstat.charts`. The selection and statistics options are those of the analysis
commands (:func:`stabstat.cli._options.selection_options` / ``stat_options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stabstat.cli._options import (
    F,
    db_option,
    open_store,
    selection_from,
    selection_options,
    settings_from,
    stat_options,
)

#: Figure ids, also the KIND argument of ``stabstat chart`` (kept here so --help is cheap;
#: a test checks it equals stabstat.report.FIGURES).
CHART_KINDS = (
    "metric-by-config",
    "failure-rate",
    "failure-vs-size",
    "loss-curves",
    "layer-gradients",
    "gradient-heatmap",
    "metric-vs-loss",
    "forest",
    "examples-uncertainty",
    "forgetting",
    "expected-max",
    "power-curve",
    "early",
)


def _downsampling(f: F) -> F:
    """--max-runs, --points: downsampling of the loss and gradient charts."""
    f = click.option("--max-runs", "max_runs", type=click.IntRange(min=1), default=None,
                     help="Draw at most this many loss curves one by one; beyond, quantile "
                          "bands per configuration [default: 200].")(f)
    f = click.option("--points", "points", type=click.IntRange(min=10), default=None,
                     help="Points per loss curve (steps are averaged in equal buckets) "
                          "[default: 200].")(f)
    return f


@click.command("report")
@click.option("--by", "by", metavar="FACTOR",
              help="Factor whose levels are compared [default: the one factor besides seed and "
                   "task that varies].")
@click.option("--claims", "claims", type=click.Path(dir_okay=False, exists=True),
              metavar="FILE", help="Claims file (TOML, as for `stabstat check`): adds verdicts; "
                                   "statistics options given here override the file's [defaults], "
                                   "which override the defaults.")
@click.option("--sequential", is_flag=True,
              help="With --claims: check them with confidence sequences (as `stabstat check "
                   "--sequential`) and draw each claim's sequence against the number of seeds.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="HTML file to write.")
@click.option("--title", help="Page title [default: from the factor and task].")
@_downsampling
@selection_options
@stat_options
@db_option
def report(by: str | None, claims: str | None, sequential: bool, out: str, title: str | None,
           max_runs: int | None, points: int | None, db: str, **kw: Any) -> None:
    """Write a self-contained HTML report (opens offline, no network request).

    The page holds the data selection and provenance (database, runs, factors,
    failure rule, CI method, resamples, seed, package versions), a summary table
    per configuration (runs, failures, mean with CI, SD, median, IQM, max),
    pairwise comparisons, the charts (dev metric per configuration, failure
    rate, failure rate against n_train, training-loss curves, per-layer
    gradient norms, dev metric against training loss, forest plot), claim
    verdicts with --claims, and a methods paragraph to quote. The same
    database and options give a byte-identical file.

    \b
    Example:
        stabstat report --by bias_correction --out report.html
        stabstat report --by lr --filter task=rte --claims claims.toml --out rte.html
        stabstat report --by bias_correction --claims claims.toml --sequential
        stabstat report --db sweep.duckdb --metric mcc --resamples 2000 --out cola.html
    """
    from stabstat.report import PAGE_BUDGET_BYTES, build_report

    if sequential and not claims:
        raise click.UsageError("--sequential checks the claims of --claims FILE: give a claims file")

    # Claims: command line > the file's [defaults] > defaults, field by field, as for
    # `stabstat check` (stabstat.claims.claims_settings is the one rule).
    claims_cfg = None
    if claims:
        from stabstat.claims import claims_settings as merge
        from stabstat.claims import load_claims

        ctx = click.get_current_context()
        given = {name: kw[name] for name in ("resamples", "seed", "ci_method", "confidence", "correction")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
        claims_cfg = merge(load_claims(claims)[0], overrides=given)
    with open_store(db) as store:
        rep = build_report(store, by=by, selection=selection_from(kw), settings=settings_from(kw),
                           claims=claims, title=title, max_runs_drawn=max_runs,
                           loss_points=points, claims_settings=claims_cfg, sequential=sequential)
        path = rep.write(out)
    size = path.stat().st_size
    click.echo(f"wrote {path} ({size / 1e6:.2f} MB, {len(rep.figures)} charts)")
    for n in rep.notes:
        click.secho(n, fg="yellow", err=True)
    if size > PAGE_BUDGET_BYTES:
        click.secho(f"warning: the page is {size / 2**20:.1f} MiB, over the "
                    f"{PAGE_BUDGET_BYTES / 2**20:.0f} MiB budget; browsers may be slow to open "
                    "it: narrow the selection (--filter) or lower --max-runs / --points",
                    fg="yellow", err=True)


@click.command("chart")
@click.argument("kind", type=click.Choice(CHART_KINDS), metavar="KIND")
@click.option("--by", "by", metavar="FACTOR",
              help="Factor whose levels are the configurations [default: as for report].")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="File to write: .png, .svg or .json (Vega-Lite).")
@click.option("--format", "fmt", type=click.Choice(["png", "svg", "json"]), default=None,
              help="Output format [default: from the --out suffix].")
@click.option("--scale", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="PNG pixel density (2 = twice the chart's size in CSS pixels).")
@_downsampling
@selection_options
@stat_options
@db_option
def chart(kind: str, by: str | None, out: str, fmt: str | None, scale: float,
          max_runs: int | None, points: int | None, db: str, **kw: Any) -> None:
    """Export one chart of the report as PNG, SVG or Vega-Lite JSON (offline, via vl-convert).

    KIND is one of: metric-by-config (the paper's Figure 1 view), failure-rate,
    failure-vs-size (against n_train, log axis), loss-curves, layer-gradients,
    gradient-heatmap, metric-vs-loss, forest. Selection and statistics options
    are those of `stabstat report`.

    \b
    Example:
        stabstat chart metric-by-config --by bias_correction --out fig1.png
        stabstat chart layer-gradients --filter task=rte --out grads.svg
        stabstat chart forest --by lr --out forest.json
    """
    from stabstat import charts
    from stabstat.errors import SelectionError
    from stabstat.report import chart as report_chart

    suffix = Path(out).suffix.lstrip(".").lower()
    kind_fmt = fmt or suffix
    if kind_fmt not in ("png", "svg", "json"):
        raise SelectionError(f"--out {out}: cannot tell the format from the suffix; "
                             "use .png, .svg or .json, or pass --format png|svg|json")
    if fmt and suffix in ("png", "svg", "json") and suffix != fmt:
        # An SVG in a .png file opens nowhere; refuse rather than write it.
        raise SelectionError(f"--out {out} and --format {fmt} disagree; name the file .{fmt} "
                             f"or pass --format {suffix} (or leave --format out)")
    with open_store(db) as store:
        ch = report_chart(store, kind, by=by, selection=selection_from(kw), settings=settings_from(kw),
                          max_runs_drawn=max_runs, loss_points=points)
    charts.save(ch, out, fmt=kind_fmt, scale=scale)
    click.echo(f"wrote {out}")
