"""Per-layer gradient-norm views: small multiples per layer and a layers x steps heat map."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import (
    STATUS_DOMAIN,
    STATUS_RANGE,
    AnyChart,
    inline_data,
    require_columns,
)

# --------------------------------------------------------------------------- gradients


def layer_gradients(
    frame: pl.DataFrame,
    *,
    columns: int = 4,
    title: str | None = None,
    width: int = 170,
    height: int = 120,
) -> AnyChart:
    """Per-layer gradient norm against step, failed vs successful runs (small multiples).

    The vanishing-gradient view: one small chart per layer (ordered by depth, input first),
    log-scale y, the median over runs as a line and the inter-quartile range as a band,
    coloured by run status.

    Parameters
    ----------
    frame
        One row per (status, layer, step bucket): ``status`` ("failed"/"successful"),
        ``layer`` (str), ``depth`` (int), ``step`` (int, bucket start), ``median`` (float > 0),
        optional ``q25``, ``q75`` (floats) and ``runs`` (int, runs in the cell).
    """
    require_columns(frame, ["status", "layer", "depth", "step", "median"], "layer_gradients")
    layer_order = (
        frame.select("layer", "depth").unique().sort("depth", "layer").get_column("layer").to_list()
    )
    # Only the encoded fields go into the page (depth orders the panels here, in Python; the
    # run counts are not drawn): ~25% less data for the browser to parse and carry.
    cols = [c for c in ["status", "layer", "step", "median", "q25", "q75"] if c in frame.columns]
    # Non-positive norms cannot sit on a log axis; they mean "no gradient" and are dropped.
    frame = frame.filter(pl.col("median") > 0)
    color = alt.Color("status:N", scale=alt.Scale(domain=STATUS_DOMAIN, range=STATUS_RANGE),
                      title="runs")
    y = alt.Y("median:Q", title="grad norm (median)", scale=alt.Scale(type="log"))
    tooltip = [alt.Tooltip("layer:N"), alt.Tooltip("status:N"), alt.Tooltip("step:Q"), alt.Tooltip("median:Q", format=".3g")]
    layers: list[Any] = []
    if "q25" in frame.columns and "q75" in frame.columns:
        frame = frame.with_columns(
            pl.when(pl.col("q25") > 0).then(pl.col("q25")).otherwise(pl.col("median")).alias("q25")
        )
        layers.append(
            alt.Chart().mark_area(opacity=0.2).encode(
                x=alt.X("step:Q", title="step"), y=alt.Y("q25:Q", scale=alt.Scale(type="log"),
                                                          title="grad norm (median)"),
                y2=alt.Y2("q75:Q"), color=color,
            )
        )
    layers.append(
        alt.Chart().mark_line(strokeWidth=1.5).encode(
            x=alt.X("step:Q", title="step"), y=y, color=color, tooltip=tooltip
        )
    )
    chart = (
        alt.layer(*layers, data=inline_data(frame, cols))
        .properties(width=width, height=height)
        .facet(facet=alt.Facet("layer:N", sort=layer_order, title=None), columns=columns)
        .resolve_scale(y="shared")
    )
    return chart.properties(title=title) if title else chart


def layer_gradients_heatmap(
    frame: pl.DataFrame,
    *,
    title: str | None = None,
    width: int = 320,
    height: int = 200,
) -> AnyChart:
    """Heat map of the median gradient norm over layers x steps, one panel per run status.

    Parameters
    ----------
    frame
        As for :func:`layer_gradients` (``status``, ``layer``, ``depth``, ``step``, ``median``).
    """
    require_columns(frame, ["status", "layer", "depth", "step", "median"], "layer_gradients")
    layer_order = (
        frame.select("layer", "depth").unique().sort("depth", "layer").get_column("layer").to_list()
    )
    frame = frame.filter(pl.col("median") > 0)
    chart = (
        alt.Chart(inline_data(frame, ["status", "layer", "step", "median"]))
        .mark_rect()
        .encode(
            x=alt.X("step:O", title="step (bucket start)",
                    axis=alt.Axis(labelOverlap=True, labelAngle=0)),
            y=alt.Y("layer:N", sort=list(reversed(layer_order)), title=None),
            color=alt.Color("median:Q", scale=alt.Scale(type="log", scheme="viridis"),
                            title="grad norm"),
            tooltip=[alt.Tooltip("layer:N"), alt.Tooltip("step:Q"), alt.Tooltip("median:Q", format=".3g")],
        )
        .properties(width=width, height=height)
        .facet(column=alt.Column("status:N", sort=STATUS_DOMAIN, title=None))
    )
    return chart.properties(title=title) if title else chart
