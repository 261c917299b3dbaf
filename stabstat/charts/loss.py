"""Training-loss views: one curve per run, or quantile bands per configuration for many runs."""

from __future__ import annotations

import altair as alt
import polars as pl

from stabstat.charts._base import (
    HEIGHT,
    STATUS_DOMAIN,
    AnyChart,
    inline_data,
    require_columns,
    with_status,
)

# --------------------------------------------------------------------------- loss curves


def loss_curves(
    frame: pl.DataFrame,
    *,
    log_y: bool = False,
    title: str | None = None,
    width: int = 480,
    height: int = HEIGHT,
) -> AnyChart:
    """Training-loss curves of individual runs, coloured by configuration, failed ones dashed.

    Clicking a configuration in the legend fades the other configurations' runs.

    Parameters
    ----------
    frame
        One row per (run, step bucket): ``run_id``, ``config`` (str), ``step`` (int),
        ``loss`` (float, nats; the bucket mean), ``failed`` (bool). Build it with
        :func:`stabstat.chartdata.loss_curves_data`, which downsamples to a few hundred points
        per run and switches to :func:`loss_bands` for many runs.
    """
    require_columns(frame, ["run_id", "config", "step", "loss", "failed"], "loss_curves")
    frame = with_status(frame.with_columns(pl.col("config").cast(pl.String)))
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    if log_y:
        frame = frame.filter(pl.col("loss") > 0)
    # Click a configuration in the legend to bring its runs forward. The parameter is named:
    # Altair numbers unnamed ones from a global counter, which would break byte-identical output.
    pick = alt.selection_point(name="pick_config", fields=["config"], bind="legend")
    chart = (
        alt.Chart(inline_data(frame, ["run_id", "config", "step", "loss", "status"]))
        .mark_line(clip=True)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("loss:Q", title="training loss", scale=yscale),
            color=alt.Color("config:N", title="configuration"),
            detail=alt.Detail("run_id:N"),
            # ordinal (sorted) status: Vega-Lite warns about a width on a nominal field
            strokeDash=alt.StrokeDash(
                "status:O", sort=STATUS_DOMAIN,
                scale=alt.Scale(domain=STATUS_DOMAIN, range=[[1, 0], [5, 3]]), title="run",
            ),
            strokeWidth=alt.StrokeWidth(
                "status:O", sort=STATUS_DOMAIN,
                scale=alt.Scale(domain=STATUS_DOMAIN, range=[1.0, 1.8]), title="run",
            ),
            opacity=alt.condition(pick, alt.value(0.6), alt.value(0.05)),
            tooltip=[alt.Tooltip("run_id:N"), alt.Tooltip("config:N"), alt.Tooltip("status:N"), alt.Tooltip("step:Q"),
                     alt.Tooltip("loss:Q", format=".4g")],
        )
        .add_params(pick)
        .properties(width=width, height=height)
    )
    return chart.properties(title=title) if title else chart


def loss_bands(
    frame: pl.DataFrame,
    *,
    log_y: bool = False,
    title: str | None = None,
    width: int = 480,
    height: int = HEIGHT,
) -> AnyChart:
    """Training-loss quantile bands per configuration and run status (for many runs).

    Parameters
    ----------
    frame
        One row per (config, status, step bucket): ``config`` (str), ``status``
        ("failed"/"successful"), ``step`` (int), ``q10``, ``median``, ``q90`` (floats, nats:
        quantiles over runs of the per-run bucket mean), ``runs`` (int).
    """
    require_columns(frame, ["config", "status", "step", "q10", "median", "q90"], "loss_curves")
    frame = frame.with_columns(pl.col("config").cast(pl.String),
                               (pl.col("config").cast(pl.String) + " / " + pl.col("status"))
                               .alias("series"))
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    color = alt.Color("config:N", title="configuration")
    dash = alt.StrokeDash("status:N", scale=alt.Scale(domain=STATUS_DOMAIN,
                                                      range=[[1, 0], [5, 3]]), title="runs")
    band = alt.Chart().mark_area(opacity=0.15).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("q10:Q", title="training loss", scale=yscale),
        y2=alt.Y2("q90:Q"), color=color, detail=alt.Detail("series:N"),
    )
    line = alt.Chart().mark_line(strokeWidth=1.5).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("median:Q", title="training loss", scale=yscale),
        color=color, strokeDash=dash, detail=alt.Detail("series:N"),
        tooltip=[alt.Tooltip("config:N"), alt.Tooltip("status:N"), alt.Tooltip("step:Q"), alt.Tooltip("median:Q", format=".4g"),
                 alt.Tooltip("q10:Q", format=".4g"), alt.Tooltip("q90:Q", format=".4g")]
        + ([alt.Tooltip("runs:Q")] if "runs" in frame.columns else []),
    )
    cols = [c for c in ["config", "status", "series", "step", "q10", "median", "q90", "runs"]
            if c in frame.columns]
    chart = alt.layer(band, line, data=inline_data(frame, cols)).properties(
        width=width, height=height
    )
    return chart.properties(title=title) if title else chart
