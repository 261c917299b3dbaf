"""Per-run views of the dev metric: per configuration (the paper's Figure 1) and against the
final training loss (generalisation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import (
    FAILED_COLOR,
    HEIGHT,
    STATUS_DOMAIN,
    WIDTH,
    AnyChart,
    category_order,
    concat_panels,
    in_panel,
    inline_data,
    jitter,
    panels,
    require_columns,
    with_status,
)

# --------------------------------------------------------------------------- Figure 1 view


def metric_by_config(
    runs: pl.DataFrame,
    groups: pl.DataFrame | None = None,
    *,
    order: Sequence[str] | None = None,
    metric: str = "dev metric",
    config_title: str = "configuration",
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Dev metric per configuration: every run, its spread, the CI and the majority baseline.

    The paper's Figure 1 view (Mosbach et al., 2021): one jittered point per run (failed runs
    drawn as red crosses), a min-max box plot of the runs, the group's point estimate with its
    confidence interval as a thick tick and rule, and the majority-class score as a dashed rule.

    Parameters
    ----------
    runs
        One row per run: ``config`` (str, the configuration label), ``run_id`` (str), ``value``
        (float, final dev metric, a fraction), ``failed`` (bool); optional ``majority`` (float,
        the majority-class score, equal within a panel) and ``panel`` (str, e.g. the task:
        one sub-chart per panel, each with its own y axis).
    groups
        Optional, one row per configuration (and panel): ``config``, ``point`` (float, e.g. the
        mean), ``ci_low``, ``ci_high`` (floats, the interval). Without it no CI is drawn.
    order
        Configuration order on the x axis (default: first appearance in ``runs``).
    metric
        Y-axis title (e.g. ``"dev accuracy"``).

    Returns
    -------
    A layered chart, or a horizontal concatenation of them when ``runs`` has ``panel``.
    """
    require_columns(runs, ["config", "run_id", "value", "failed"], "metric_by_config")
    if groups is not None:
        require_columns(groups, ["config", "point", "ci_low", "ci_high"], "metric_by_config")
    runs = with_status(runs.with_columns(pl.col("config").cast(pl.String)))
    runs = runs.with_columns(
        pl.col("run_id").map_elements(jitter, return_dtype=pl.Float64).alias("jitter")
    )
    domain = category_order(runs, "config", order)
    x = alt.X("config:N", title=config_title, sort=domain, scale=alt.Scale(domain=domain),
              axis=alt.Axis(labelAngle=0, labelLimit=160))
    charts = [
        _metric_panel(runs, groups, panel, x=x, metric=metric, width=width, height=height)
        for panel in panels(runs)
    ]
    return concat_panels(charts, title)


def _metric_panel(runs: pl.DataFrame, groups: pl.DataFrame | None, panel: Any, *, x: alt.X,
                  metric: str, width: int, height: int) -> AnyChart:
    """One panel of :func:`metric_by_config`: box, run points, CI (when ``groups``), baseline."""
    prun = in_panel(runs, panel)
    assert prun is not None
    y = alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False))
    base_cols = ["config", "run_id", "value", "status", "jitter"]
    box = (
        alt.Chart()
        .mark_boxplot(extent="min-max", size=28, opacity=0.35, color="#555555",
                      median={"color": "#f58518"})
        .encode(x=x, y=y)
    )
    layers: list[Any] = [box, _run_points(x, y)]
    pgroups = in_panel(groups, panel)
    if pgroups is not None and pgroups.height:
        layers += _ci_layers(pgroups, x=x, metric=metric)
    if "majority" in prun.columns and prun.get_column("majority").drop_nulls().len():
        maj = float(prun.get_column("majority").drop_nulls().first())  # type: ignore[arg-type]
        layers.append(
            alt.Chart(inline_data(pl.DataFrame({"majority": [maj]})))
            .mark_rule(strokeDash=[4, 3], color="#1f3fbf")
            .encode(y=alt.Y("majority:Q"), tooltip=[alt.Tooltip("majority:Q", format=".4f")])
        )
    return alt.layer(*layers, data=inline_data(prun, base_cols)).properties(
        width=width, height=height, title=str(panel) if panel is not None else ""
    )


def _run_points(x: alt.X, y: alt.Y) -> alt.Chart:
    """One jittered point per run: grey circles, failed runs as red crosses."""
    return (
        alt.Chart()
        .mark_point(filled=True, size=55, opacity=0.75)
        .encode(
            x=x,
            xOffset=alt.XOffset("jitter:Q", scale=alt.Scale(domain=[-1, 1])),
            y=y,
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=STATUS_DOMAIN, range=["#777777", FAILED_COLOR]),
                legend=alt.Legend(title="run"),
            ),
            shape=alt.Shape(
                "status:N",
                scale=alt.Scale(domain=STATUS_DOMAIN, range=["circle", "cross"]),
                legend=alt.Legend(title="run"),
            ),
            tooltip=[alt.Tooltip("run_id:N"), alt.Tooltip("config:N"), alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("status:N")],
        )
    )


def _ci_layers(groups: pl.DataFrame, *, x: alt.X, metric: str) -> list[alt.Chart]:
    """The group's interval (black rule, ``ci_low``..``ci_high``) and point estimate (red tick)."""
    gdata = inline_data(
        groups.with_columns(pl.col("config").cast(pl.String)),
        ["config", "point", "ci_low", "ci_high"],
    )
    rule = (
        alt.Chart(gdata)
        .mark_rule(strokeWidth=3, color="#000000")
        .encode(
            x=x,
            y=alt.Y("ci_low:Q", title=metric),
            y2=alt.Y2("ci_high:Q"),
            tooltip=[alt.Tooltip("config:N"), alt.Tooltip("point:Q", format=".4f"),
                     alt.Tooltip("ci_low:Q", format=".4f"),
                     alt.Tooltip("ci_high:Q", format=".4f")],
        )
    )
    tick = (
        alt.Chart(gdata)
        .mark_tick(color=FAILED_COLOR, thickness=3, size=30)
        .encode(x=x, y=alt.Y("point:Q", title=metric))
    )
    return [rule, tick]


# --------------------------------------------------------------------------- generalisation


def metric_vs_loss(
    frame: pl.DataFrame,
    *,
    metric: str = "dev metric",
    log_x: bool | None = None,
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> AnyChart:
    """Final dev metric against final training loss, failed runs distinguished.

    Among successful runs, a spread of dev scores at the same training loss is a
    generalisation effect (Mosbach et al., 2021, Section 6).

    Parameters
    ----------
    frame
        One row per run: ``run_id``, ``config`` (str), ``train_loss`` (float, final training
        loss in nats), ``value`` (float, final dev metric), ``failed`` (bool); optional
        ``majority`` (float) drawn as a dashed rule.
    log_x
        Log x axis; default: when every loss is > 0 and they span more than a factor of 20.
    """
    require_columns(frame, ["run_id", "config", "train_loss", "value", "failed"], "metric_vs_loss")
    frame = with_status(frame.with_columns(pl.col("config").cast(pl.String)))
    frame = frame.filter(pl.col("train_loss").is_finite() & pl.col("value").is_not_null())
    if log_x is None:
        lo = frame.get_column("train_loss").min()
        hi = frame.get_column("train_loss").max()
        log_x = bool(lo is not None and hi is not None and lo > 0 and hi / lo > 20)  # type: ignore[operator]
    xscale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    # A log axis labels every minor tick (0.02 0.03 0.04 ...): drop the ones that collide.
    xaxis = alt.Axis(labelOverlap="greedy", labelSeparation=6, format="~g")
    points = alt.Chart().mark_point(size=40).encode(
        x=alt.X("train_loss:Q", title="final training loss", scale=xscale, axis=xaxis),
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("config:N", title="configuration"),
        shape=alt.Shape("status:N", scale=alt.Scale(domain=STATUS_DOMAIN,
                                                    range=["circle", "cross"]), title="run"),
        tooltip=[alt.Tooltip("run_id:N"), alt.Tooltip("config:N"), alt.Tooltip("train_loss:Q", format=".4g"),
                 alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("status:N")],
    )
    layers: list[Any] = [points]
    if "majority" in frame.columns and frame.get_column("majority").drop_nulls().len():
        maj = float(frame.get_column("majority").drop_nulls().first())  # type: ignore[arg-type]
        layers.append(
            alt.Chart(inline_data(pl.DataFrame({"majority": [maj]})))
            .mark_rule(strokeDash=[4, 3], color="#1f3fbf")
            .encode(y=alt.Y("majority:Q"))
        )
    chart = alt.layer(
        *layers,
        data=inline_data(frame, ["run_id", "config", "train_loss", "value", "status"]),
    ).properties(width=width, height=height)
    return chart.properties(title=title) if title else chart
