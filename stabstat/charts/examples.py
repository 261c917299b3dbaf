"""Where a configuration's uncertainty comes from: seeds vs examples (the seeds x examples
bootstrap of :mod:`stabstat.stats.multibootstrap`)."""

from __future__ import annotations

import altair as alt
import polars as pl

from stabstat.charts._base import AnyChart, inline_data, require_columns

__all__ = ["SOURCES", "uncertainty_sources"]

#: The three bootstraps compared, in drawing order.
SOURCES = ("seeds only", "examples only", "seeds x examples")


def uncertainty_sources(frame: pl.DataFrame, *, metric: str = "metric", confidence_pct: int = 95,
                        width: int = 360, height_per_config: int = 42) -> AnyChart:
    """CI width per configuration with only seeds, only examples, or both resampled.

    Parameters
    ----------
    frame
        One row per (config, source): ``config`` (str), ``source`` (one of :data:`SOURCES`),
        ``width`` (float, CI width in the metric's units) and optional ``share_examples``
        (float in [0, 1], the examples' share of the bootstrap variance; shown in the tooltip).
    metric
        The metric's name (axis title).
    """
    require_columns(frame, ["config", "source", "width"], "uncertainty_sources")
    cols = [c for c in ("config", "source", "width", "share_examples") if c in frame.columns]
    tooltip = [alt.Tooltip("config:N"), alt.Tooltip("source:N"), alt.Tooltip("width:Q", format=".4f", title=f"{confidence_pct}% CI width")]
    if "share_examples" in cols:
        tooltip.append(alt.Tooltip("share_examples:Q", format=".0%", title="examples' share of variance"))
    n = max(1, frame["config"].n_unique())
    return alt.Chart(alt.Data(values=inline_data(frame, cols)["values"])).mark_bar().encode(
        y=alt.Y("config:N", title=None, sort=None),
        yOffset=alt.YOffset("source:N", sort=list(SOURCES)),
        x=alt.X("width:Q", title=f"{confidence_pct}% CI width of the mean {metric}"),
        color=alt.Color("source:N", scale=alt.Scale(domain=list(SOURCES)), title="resampled"),
        tooltip=tooltip,
    ).properties(width=width, height=height_per_config * n)
