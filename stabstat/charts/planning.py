"""Planning views: expected maximum of k runs per configuration, and power against seeds."""

from __future__ import annotations

import altair as alt
import polars as pl

from stabstat.charts._base import HEIGHT, WIDTH, AnyChart, inline_data, require_columns


def expected_max_curves(
    frame: pl.DataFrame,
    *,
    metric: str = "metric",
    log_x: bool = False,
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Expected best value among k runs against k: one line per configuration with its
    bootstrap band (Dodge et al. 2019; unbiased estimator of Tang et al. 2020).

    Parameters
    ----------
    frame
        One row per configuration and k: ``config`` (text), ``k`` (int >= 1, runs),
        ``expected_max``, ``ci_low``, ``ci_high`` (floats, metric units).
    log_x
        A log2 axis for k (many runs).
    """
    require_columns(frame, ["config", "k", "expected_max", "ci_low", "ci_high"], "expected_max_curves")
    frame = frame.with_columns(pl.col("config").cast(pl.String))
    data = inline_data(frame, ["config", "k", "expected_max", "ci_low", "ci_high"])
    scale = alt.Scale(type="log", base=2) if log_x else alt.Scale(zero=False)
    x = alt.X("k:Q", title="runs (k)", scale=scale)
    color = alt.Color("config:N", title="configuration")
    band = alt.Chart(data).mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("ci_low:Q", title=f"expected best {metric}", scale=alt.Scale(zero=False)), y2=alt.Y2("ci_high:Q"),
        color=color)
    line = alt.Chart(data).mark_line(point=True).encode(
        x=x, y=alt.Y("expected_max:Q", scale=alt.Scale(zero=False)), color=color,
        tooltip=[alt.Tooltip("config:N"), alt.Tooltip("k:Q"), alt.Tooltip("expected_max:Q", format=".4f"),
                 alt.Tooltip("ci_low:Q", format=".4f"), alt.Tooltip("ci_high:Q", format=".4f")])
    return (band + line).properties(width=width, height=height,
                                    title=title or f"Expected best {metric} among k runs")


def power_curves(
    frame: pl.DataFrame,
    *,
    target_power: float = 0.8,
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Power against seeds per configuration: one line per comparison, a rule at the target.

    Parameters
    ----------
    frame
        One row per comparison and n: ``comparison`` (text, e.g. ``"mean: a vs b"``), ``n``
        (int, seeds per configuration), ``power`` (float in [0, 1]).
    """
    require_columns(frame, ["comparison", "n", "power"], "power_curves")
    data = inline_data(frame, ["comparison", "n", "power"])
    x = alt.X("n:Q", title="seeds per configuration", scale=alt.Scale(type="log", base=2))
    lines = alt.Chart(data).mark_line(point=True).encode(
        x=x, y=alt.Y("power:Q", title="power", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("comparison:N", title="comparison"),
        tooltip=[alt.Tooltip("comparison:N"), alt.Tooltip("n:Q"), alt.Tooltip("power:Q", format=".3f")])
    rule = alt.Chart({"values": [{"power": target_power}]}).mark_rule(strokeDash=[4, 4], color="#888").encode(
        y=alt.Y("power:Q"))
    return (lines + rule).properties(width=width, height=height, title=title or "Power against seeds")
