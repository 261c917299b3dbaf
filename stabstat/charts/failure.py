"""Failure-rate views: per level of a factor, and against a numeric factor on a log axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import (
    FAILED_COLOR,
    HEIGHT,
    WIDTH,
    AnyChart,
    category_order,
    concat_panels,
    in_panel,
    inline_data,
    panels,
    require_columns,
    round_sig,
)
from stabstat.errors import SelectionError

# --------------------------------------------------------------------------- failure rates


def failure_rate(
    frame: pl.DataFrame,
    *,
    factor: str = "level",
    order: Sequence[str] | None = None,
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Failure rate per level of a factor, with Wilson intervals as error bars.

    Parameters
    ----------
    frame
        One row per level (and panel): ``level`` (the factor's value, any type: shown as a
        category), ``n`` (int, runs), ``failures`` (int), ``rate`` (float in [0, 1]),
        ``ci_low``, ``ci_high`` (floats in [0, 1], the Wilson interval); optional ``panel``.
    factor
        X-axis title: the factor's name.
    """
    require_columns(frame, ["level", "n", "failures", "rate", "ci_low", "ci_high"], "failure_rate")
    frame = frame.with_columns(pl.col("level").cast(pl.String))
    domain = category_order(frame, "level", order)
    x = alt.X("level:N", title=factor, sort=domain, scale=alt.Scale(domain=domain),
              axis=alt.Axis(labelAngle=0, labelLimit=160))
    y = alt.Y("rate:Q", title="failure rate", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    tooltip = [alt.Tooltip("level:N"), alt.Tooltip("failures:Q"), alt.Tooltip("n:Q"), alt.Tooltip("rate:Q", format=".1%"),
               alt.Tooltip("ci_low:Q", format=".1%"), alt.Tooltip("ci_high:Q", format=".1%")]
    charts = []
    for panel in panels(frame):
        p = in_panel(frame, panel)
        assert p is not None
        bars = alt.Chart().mark_bar(opacity=0.35, color=FAILED_COLOR, size=24).encode(
            x=x, y=y, tooltip=tooltip
        )
        err = alt.Chart().mark_errorbar(ticks={"size": 12}, color="#000000").encode(
            x=x, y=alt.Y("ci_low:Q", title="failure rate"), y2=alt.Y2("ci_high:Q"), tooltip=tooltip
        )
        dots = alt.Chart().mark_point(filled=True, color="#000000").encode(x=x, y=y, tooltip=tooltip)
        text = alt.Chart().mark_text(dy=-8, fontSize=10, align="left", dx=6).encode(
            x=x, y=y, text=alt.Text("label:N")
        ).transform_calculate(label="datum.failures + '/' + datum.n")
        charts.append(
            alt.layer(bars, err, dots, text,
                      data=inline_data(p, ["level", "n", "failures", "rate", "ci_low", "ci_high"]))
            .properties(width=width, height=height,
                        title=str(panel) if panel is not None else "")
        )
    return concat_panels(charts, title)


def failure_rate_vs(
    frame: pl.DataFrame,
    *,
    factor: str = "n_train",
    log_x: bool = True,
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Failure rate against a numeric factor (e.g. ``n_train``) on a log x axis.

    Parameters
    ----------
    frame
        Like :func:`failure_rate` but ``level`` is numeric (the x position, > 0 when ``log_x``);
        optional ``series`` (str) draws one coloured line per value (e.g. another factor).
    """
    require_columns(frame, ["level", "n", "failures", "rate", "ci_low", "ci_high"], "failure_rate")
    if not frame.schema["level"].is_numeric():
        raise SelectionError(
            f"chart 'failure_rate_vs': factor {factor!r} is not numeric; "
            "use the per-level failure-rate chart instead"
        )
    if log_x and frame.filter(pl.col("level") <= 0).height:
        raise SelectionError(
            f"chart 'failure_rate_vs': factor {factor!r} has values <= 0, which a log axis "
            "cannot show; pass log_x=False"
        )
    cols = ["level", "n", "failures", "rate", "ci_low", "ci_high"]
    color: Any = alt.value("#000000")
    if "series" in frame.columns:
        frame = frame.with_columns(pl.col("series").cast(pl.String))
        cols.append("series")
        color = alt.Color("series:N", title="series")
    # Ticks at the levels themselves: a log axis over 1,000..5,000 otherwise crowds its labels.
    ticks = sorted({round_sig(float(v)) for v in frame.get_column("level").drop_nulls().to_list()})
    x = alt.X("level:Q", title=factor,
              scale=alt.Scale(type="log") if log_x else alt.Scale(zero=False),
              axis=alt.Axis(values=ticks, format="~s" if log_x else "~g"))
    y = alt.Y("rate:Q", title="failure rate", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    tooltip = [alt.Tooltip("level:Q"), alt.Tooltip("failures:Q"), alt.Tooltip("n:Q"), alt.Tooltip("rate:Q", format=".1%"),
               alt.Tooltip("ci_low:Q", format=".1%"), alt.Tooltip("ci_high:Q", format=".1%")]
    line = alt.Chart().mark_line(point=True).encode(x=x, y=y, color=color, tooltip=tooltip)
    err = alt.Chart().mark_errorbar(ticks={"size": 10}).encode(
        x=x, y=alt.Y("ci_low:Q", title="failure rate"), y2=alt.Y2("ci_high:Q"), color=color
    )
    chart = alt.layer(line, err, data=inline_data(frame, cols)).properties(
        width=width, height=height
    )
    return chart.properties(title=title) if title else chart
