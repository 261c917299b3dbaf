"""Forest plot of pairwise differences with their confidence intervals."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import (
    FAILED_COLOR,
    WIDTH,
    AnyChart,
    inline_data,
    require_columns,
)

# --------------------------------------------------------------------------- forest plot


def forest(
    frame: pl.DataFrame,
    *,
    estimate: str = "difference",
    title: str | None = None,
    width: int = WIDTH,
    row_height: int = 22,
) -> AnyChart:
    """Forest plot of pairwise differences with their confidence intervals.

    Parameters
    ----------
    frame
        One row per comparison: ``label`` (str, e.g. ``"on - off"``), ``estimate`` (float),
        ``ci_low``, ``ci_high`` (floats); optional ``p_adj`` (float, adjusted p-value) and
        ``significant`` (bool). A vertical rule marks zero (no difference).
    estimate
        X-axis title.
    """
    require_columns(frame, ["label", "estimate", "ci_low", "ci_high"], "forest")
    order = [str(v) for v in frame.get_column("label").to_list()]
    cols = [c for c in ["label", "estimate", "ci_low", "ci_high", "p_adj", "significant"]
            if c in frame.columns]
    y = alt.Y("label:N", sort=order, title=None)
    tooltip: list[Any] = [alt.Tooltip("label:N"), alt.Tooltip("estimate:Q", format=".4f"),
                          alt.Tooltip("ci_low:Q", format=".4f"),
                          alt.Tooltip("ci_high:Q", format=".4f")]
    if "p_adj" in frame.columns:
        tooltip.append(alt.Tooltip("p_adj:Q", format=".3g"))
    color: Any = alt.value("#000000")
    if "significant" in frame.columns:
        color = alt.Color("significant:N", scale=alt.Scale(domain=[False, True],
                                                           range=["#777777", FAILED_COLOR]),
                          title="CI excludes 0")
    rule = alt.Chart().mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=estimate), x2=alt.X2("ci_high:Q"), y=y, color=color, tooltip=tooltip
    )
    point = alt.Chart().mark_point(filled=True, size=60, shape="square").encode(
        x=alt.X("estimate:Q", title=estimate), y=y, color=color, tooltip=tooltip
    )
    zero = alt.Chart(inline_data(pl.DataFrame({"zero": [0.0]}))).mark_rule(
        strokeDash=[3, 3], color="#888888"
    ).encode(x=alt.X("zero:Q"))
    chart = alt.layer(zero, rule, point, data=inline_data(frame, cols)).properties(
        width=width, height=max(60, row_height * len(order))
    )
    return chart.properties(title=title) if title else chart
