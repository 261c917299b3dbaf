"""The forgetting probe's view: MLM score against the number of top layers reset (cf. the
Figure 4 of Mosbach et al. 2021)."""

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

__all__ = ["forgetting_curves"]


def forgetting_curves(
    frame: pl.DataFrame,
    *,
    metric: str = "mlm_perplexity",
    log_scale: bool | None = None,
    title: str | None = None,
    width: int = 320,
    height: int = 220,
) -> AnyChart:
    """Probe score against k (top encoder layers reset to pre-trained), failed vs successful runs.

    A line with points per run status (the statistic over runs at each k), its bootstrap
    band, and a dashed rule at the pre-trained model's score (k = L) when ``reference`` is given.

    Parameters
    ----------
    frame
        One row per (status, k[, panel]): ``status`` ("failed"/"successful"), ``k`` (int, 0..L),
        ``value`` (float, the statistic), optional ``ci_low``/``ci_high`` (the band),
        ``n_runs`` (int), ``reference`` (float, the pre-trained score, equal within a panel)
        and ``panel`` (str: one chart per level of the grouping factor, side by side).
    metric
        Axis title (the probe score, e.g. ``mlm_perplexity``).
    log_scale
        Log y axis; default: for perplexities when every value is positive.
    """
    require_columns(frame, ["status", "k", "value"], "forgetting_curves")
    frame = frame.filter(pl.col("value").is_not_null())
    if log_scale is None:
        low = frame.select(pl.min_horizontal(*[c for c in ("value", "ci_low") if c in frame.columns]).min()).item()
        log_scale = "perplexity" in metric and low is not None and low > 0
    scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=False)
    color = alt.Color("status:N", scale=alt.Scale(domain=STATUS_DOMAIN, range=STATUS_RANGE), title="runs")
    x = alt.X("k:Q", title="top layers reset to pre-trained (k)", axis=alt.Axis(tickMinStep=1, format="d"))
    tooltip = [alt.Tooltip("status:N"), alt.Tooltip("k:Q"), alt.Tooltip("value:Q", format=".4g", title=metric)]
    if "n_runs" in frame.columns:
        tooltip.append(alt.Tooltip("n_runs:Q"))
    layers: list[Any] = []
    if "ci_low" in frame.columns and "ci_high" in frame.columns:
        layers.append(alt.Chart().mark_area(opacity=0.2).encode(
            x=x, y=alt.Y("ci_low:Q", scale=scale, title=metric), y2=alt.Y2("ci_high:Q"), color=color))
    layers.append(alt.Chart().mark_line(point=True, strokeWidth=1.5).encode(
        x=x, y=alt.Y("value:Q", scale=scale, title=metric), color=color, tooltip=tooltip))
    if "reference" in frame.columns and frame["reference"].drop_nulls().len():
        layers.append(alt.Chart().mark_rule(strokeDash=[4, 3], color="black").encode(
            y=alt.Y("max(reference):Q", scale=scale, title=metric)))
    cols = [c for c in ("status", "k", "value", "ci_low", "ci_high", "n_runs", "reference", "panel")
            if c in frame.columns]
    chart = alt.layer(*layers, data=inline_data(frame.sort([c for c in ("panel", "status", "k") if c in cols]), cols))
    chart = chart.properties(width=width, height=height)
    if "panel" in frame.columns:
        order = frame.get_column("panel").unique(maintain_order=True).to_list()
        return chart.facet(column=alt.Column("panel:N", sort=order, title=None)).properties(title=title) \
            if title else chart.facet(column=alt.Column("panel:N", sort=order, title=None))
    return chart.properties(title=title) if title else chart
