"""Altair charts of fine-tuning stability, one function per view.

Every chart function takes a small, already-aggregated :class:`polars.DataFrame` whose columns are
listed in its docstring and returns an :class:`altair.Chart` (or layered / concatenated chart) that
renders in Jupyter, in the HTML report (:mod:`stabstat.report`) and through ``vl-convert`` for
static export (``stabstat chart``). The matching ``*_data`` functions in
:mod:`stabstat.chartdata` build these frames from a :class:`stabstat.store.Store` with DuckDB, so
that only aggregated rows reach a page (the downsampling rules are documented there).

Charts embed their data inline (``{"values": [...]}``) with floats rounded to
:data:`SIGNIFICANT_DIGITS` significant digits: a chart is a pure function of its frame, so the
same frame always gives the same Vega-Lite JSON (the report relies on it for byte-identical
output), and no global ``alt.data_transformers`` setting is read or changed.

Examples
--------
>>> import polars as pl
>>> from stabstat import charts
>>> runs = pl.DataFrame({"config": ["a", "a", "b"], "run_id": ["r1", "r2", "r3"],
...                      "value": [0.52, 0.71, 0.70], "failed": [True, False, False],
...                      "majority": [0.53, 0.53, 0.53]})
>>> chart = charts.metric_by_config(runs)
>>> sorted(chart.to_dict()["layer"][1]["encoding"])
['color', 'shape', 'tooltip', 'x', 'xOffset', 'y']
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

from stabstat.errors import SelectionError

__all__ = [
    "FAILED_COLOR",
    "AnyChart",
    "OK_COLOR",
    "SIGNIFICANT_DIGITS",
    "failure_rate",
    "failure_rate_vs",
    "forest",
    "inline_data",
    "layer_gradients",
    "layer_gradients_heatmap",
    "loss_bands",
    "loss_curves",
    "metric_by_config",
    "metric_vs_loss",
]

#: Floats written into chart data are rounded to this many significant digits (the page stays
#: small and the JSON does not depend on the last bits of a float sum).
SIGNIFICANT_DIGITS = 6
#: Colour of failed runs in every chart (a run fails when its final dev metric is not better
#: than the majority-class baseline; see :mod:`stabstat.analysis`).
FAILED_COLOR = "#d62728"
#: Colour of successful runs where a chart distinguishes only failed / successful.
OK_COLOR = "#4c78a8"
STATUS_DOMAIN = ["successful", "failed"]
STATUS_RANGE = [OK_COLOR, FAILED_COLOR]

#: What the chart functions return: a single, layered, faceted or concatenated Altair chart;
#: all render in Jupyter and have ``.to_dict()`` / ``.save()``.
AnyChart = alt.Chart | alt.LayerChart | alt.FacetChart | alt.HConcatChart

_WIDTH = 320
_HEIGHT = 240


# --------------------------------------------------------------------------- helpers


def _round(x: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """Round floats to ``digits`` significant digits; NaN/inf become ``None`` (JSON null)."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        if x == 0.0:
            return 0.0
        return float(f"{x:.{digits}g}")
    return x


def inline_data(frame: pl.DataFrame, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Rows of ``frame`` as inline Vega-Lite data ``{"values": [...]}`` (floats rounded,
    NaN/inf -> null).

    A plain dict, not ``alt.Data``: Altair validates an ``alt.Data`` row by row when it is
    built (seconds for 20,000 rows), and moves a dict's rows into the spec's top-level
    ``datasets`` under a content hash, so data shared by several layers is written once.

    Parameters
    ----------
    frame
        Any polars frame; temporal columns are written as ISO strings.
    columns
        The columns to keep (default: all); unused columns only make the page bigger.
    """
    if columns is not None:
        frame = frame.select(list(columns))
    casts = [
        pl.col(name).cast(pl.String)
        for name, dtype in frame.schema.items()
        if dtype.is_temporal() or dtype == pl.Decimal
    ]
    if casts:
        frame = frame.with_columns(casts)
    rows = [{k: _round(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return {"values": rows}


def _require(frame: pl.DataFrame, columns: Sequence[str], chart: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SelectionError(
            f"chart {chart!r}: the data lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(frame.columns) or 'no columns'}. "
            f"Build it with stabstat.chartdata.{chart}_data(store, ...)."
        )
    if frame.height == 0:
        raise SelectionError(
            f"chart {chart!r}: no rows to draw; widen the selection (--where/--filter) "
            "or check that the runs have evaluations (stabstat runs)."
        )


def _jitter(run_id: str, width: float = 0.9) -> float:
    """A stable horizontal offset in [-width/2, width/2] derived from the run id (no RNG)."""
    u = zlib.crc32(run_id.encode("utf-8")) / 0xFFFFFFFF
    return round((u - 0.5) * width, 4)


def _status(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``status`` ("failed"/"successful") from the boolean ``failed`` column."""
    return frame.with_columns(
        pl.when(pl.col("failed").fill_null(False))
        .then(pl.lit("failed"))
        .otherwise(pl.lit("successful"))
        .alias("status")
    )


def _order(frame: pl.DataFrame, column: str, order: Sequence[str] | None) -> list[str]:
    """Category order: ``order`` if given, else first appearance in ``frame``."""
    if order is not None:
        return [str(o) for o in order]
    return [str(v) for v in frame.get_column(column).cast(pl.String).unique(maintain_order=True)]


def _panels(frame: pl.DataFrame) -> list[Any]:
    if "panel" not in frame.columns:
        return [None]
    return list(frame.get_column("panel").unique(maintain_order=True))


def _in_panel(frame: pl.DataFrame | None, panel: Any) -> pl.DataFrame | None:
    if frame is None or panel is None or "panel" not in frame.columns:
        return frame
    return frame.filter(pl.col("panel") == panel)


def _concat(charts: list[Any], title: str | None) -> Any:
    if len(charts) == 1:
        c = charts[0]
        return c.properties(title=title) if title else c
    out = alt.hconcat(*charts)
    return out.properties(title=title) if title else out


# --------------------------------------------------------------------------- Figure 1 view


def metric_by_config(
    runs: pl.DataFrame,
    groups: pl.DataFrame | None = None,
    *,
    order: Sequence[str] | None = None,
    metric: str = "dev metric",
    config_title: str = "configuration",
    title: str | None = None,
    width: int = _WIDTH,
    height: int = _HEIGHT,
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
    _require(runs, ["config", "run_id", "value", "failed"], "metric_by_config")
    if groups is not None:
        _require(groups, ["config", "point", "ci_low", "ci_high"], "metric_by_config")
    runs = _status(runs.with_columns(pl.col("config").cast(pl.String)))
    runs = runs.with_columns(
        pl.col("run_id").map_elements(_jitter, return_dtype=pl.Float64).alias("jitter")
    )
    domain = _order(runs, "config", order)
    x = alt.X("config:N", title=config_title, sort=domain, scale=alt.Scale(domain=domain),
              axis=alt.Axis(labelAngle=0, labelLimit=160))
    charts = []
    for panel in _panels(runs):
        prun = _in_panel(runs, panel)
        assert prun is not None
        y = alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False))
        base_cols = ["config", "run_id", "value", "status", "jitter"]
        box = (
            alt.Chart()
            .mark_boxplot(extent="min-max", size=28, opacity=0.35, color="#555555",
                          median={"color": "#f58518"})
            .encode(x=x, y=y)
        )
        points = (
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
                tooltip=["run_id:N", "config:N", alt.Tooltip("value:Q", format=".4f"), "status:N"],
            )
        )
        layers: list[Any] = [box, points]
        pgroups = _in_panel(groups, panel)
        if pgroups is not None and pgroups.height:
            gdata = inline_data(
                pgroups.with_columns(pl.col("config").cast(pl.String)),
                ["config", "point", "ci_low", "ci_high"],
            )
            layers.append(
                alt.Chart(gdata)
                .mark_rule(strokeWidth=3, color="#000000")
                .encode(
                    x=x,
                    y=alt.Y("ci_low:Q", title=metric),
                    y2="ci_high:Q",
                    tooltip=["config:N", alt.Tooltip("point:Q", format=".4f"),
                             alt.Tooltip("ci_low:Q", format=".4f"),
                             alt.Tooltip("ci_high:Q", format=".4f")],
                )
            )
            layers.append(
                alt.Chart(gdata)
                .mark_tick(color=FAILED_COLOR, thickness=3, size=30)
                .encode(x=x, y=alt.Y("point:Q", title=metric))
            )
        if "majority" in prun.columns and prun.get_column("majority").drop_nulls().len():
            maj = float(prun.get_column("majority").drop_nulls().first())  # type: ignore[arg-type]
            layers.append(
                alt.Chart(inline_data(pl.DataFrame({"majority": [maj]})))
                .mark_rule(strokeDash=[4, 3], color="#1f3fbf")
                .encode(y="majority:Q", tooltip=[alt.Tooltip("majority:Q", format=".4f")])
            )
        chart = alt.layer(*layers, data=inline_data(prun, base_cols)).properties(
            width=width, height=height, title=str(panel) if panel is not None else ""
        )
        charts.append(chart)
    return _concat(charts, title)


# --------------------------------------------------------------------------- failure rates


def failure_rate(
    frame: pl.DataFrame,
    *,
    factor: str = "level",
    order: Sequence[str] | None = None,
    title: str | None = None,
    width: int = _WIDTH,
    height: int = _HEIGHT,
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
    _require(frame, ["level", "n", "failures", "rate", "ci_low", "ci_high"], "failure_rate")
    frame = frame.with_columns(pl.col("level").cast(pl.String))
    domain = _order(frame, "level", order)
    x = alt.X("level:N", title=factor, sort=domain, scale=alt.Scale(domain=domain),
              axis=alt.Axis(labelAngle=0, labelLimit=160))
    y = alt.Y("rate:Q", title="failure rate", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    tooltip = ["level:N", "failures:Q", "n:Q", alt.Tooltip("rate:Q", format=".1%"),
               alt.Tooltip("ci_low:Q", format=".1%"), alt.Tooltip("ci_high:Q", format=".1%")]
    charts = []
    for panel in _panels(frame):
        p = _in_panel(frame, panel)
        assert p is not None
        bars = alt.Chart().mark_bar(opacity=0.35, color=FAILED_COLOR, size=24).encode(
            x=x, y=y, tooltip=tooltip
        )
        err = alt.Chart().mark_errorbar(ticks={"size": 12}, color="#000000").encode(
            x=x, y=alt.Y("ci_low:Q", title="failure rate"), y2="ci_high:Q", tooltip=tooltip
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
    return _concat(charts, title)


def failure_rate_vs(
    frame: pl.DataFrame,
    *,
    factor: str = "n_train",
    log_x: bool = True,
    title: str | None = None,
    width: int = _WIDTH,
    height: int = _HEIGHT,
) -> AnyChart:
    """Failure rate against a numeric factor (e.g. ``n_train``) on a log x axis.

    Parameters
    ----------
    frame
        Like :func:`failure_rate` but ``level`` is numeric (the x position, > 0 when ``log_x``);
        optional ``series`` (str) draws one coloured line per value (e.g. another factor).
    """
    _require(frame, ["level", "n", "failures", "rate", "ci_low", "ci_high"], "failure_rate")
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
    ticks = sorted({_round(float(v)) for v in frame.get_column("level").drop_nulls().to_list()})
    x = alt.X("level:Q", title=factor,
              scale=alt.Scale(type="log") if log_x else alt.Scale(zero=False),
              axis=alt.Axis(values=ticks, format="~s" if log_x else "~g"))
    y = alt.Y("rate:Q", title="failure rate", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    tooltip = ["level:Q", "failures:Q", "n:Q", alt.Tooltip("rate:Q", format=".1%"),
               alt.Tooltip("ci_low:Q", format=".1%"), alt.Tooltip("ci_high:Q", format=".1%")]
    line = alt.Chart().mark_line(point=True).encode(x=x, y=y, color=color, tooltip=tooltip)
    err = alt.Chart().mark_errorbar(ticks={"size": 10}).encode(
        x=x, y=alt.Y("ci_low:Q", title="failure rate"), y2="ci_high:Q", color=color
    )
    chart = alt.layer(line, err, data=inline_data(frame, cols)).properties(
        width=width, height=height
    )
    return chart.properties(title=title) if title else chart


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
    _require(frame, ["status", "layer", "depth", "step", "median"], "layer_gradients")
    layer_order = (
        frame.select("layer", "depth").unique().sort("depth", "layer").get_column("layer").to_list()
    )
    cols = [c for c in ["status", "layer", "depth", "step", "median", "q25", "q75", "runs"]
            if c in frame.columns]
    # Non-positive norms cannot sit on a log axis; they mean "no gradient" and are dropped.
    frame = frame.filter(pl.col("median") > 0)
    color = alt.Color("status:N", scale=alt.Scale(domain=STATUS_DOMAIN, range=STATUS_RANGE),
                      title="runs")
    y = alt.Y("median:Q", title="grad norm (median)", scale=alt.Scale(type="log"))
    tooltip = ["layer:N", "status:N", "step:Q", alt.Tooltip("median:Q", format=".3g")]
    layers: list[Any] = []
    if "q25" in frame.columns and "q75" in frame.columns:
        frame = frame.with_columns(
            pl.when(pl.col("q25") > 0).then(pl.col("q25")).otherwise(pl.col("median")).alias("q25")
        )
        layers.append(
            alt.Chart().mark_area(opacity=0.2).encode(
                x=alt.X("step:Q", title="step"), y=alt.Y("q25:Q", scale=alt.Scale(type="log"),
                                                          title="grad norm (median)"),
                y2="q75:Q", color=color,
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
    _require(frame, ["status", "layer", "depth", "step", "median"], "layer_gradients")
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
            tooltip=["layer:N", "step:Q", alt.Tooltip("median:Q", format=".3g")],
        )
        .properties(width=width, height=height)
        .facet(column=alt.Column("status:N", sort=STATUS_DOMAIN, title=None))
    )
    return chart.properties(title=title) if title else chart


# --------------------------------------------------------------------------- generalisation


def metric_vs_loss(
    frame: pl.DataFrame,
    *,
    metric: str = "dev metric",
    log_x: bool | None = None,
    title: str | None = None,
    width: int = _WIDTH,
    height: int = _HEIGHT,
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
    _require(frame, ["run_id", "config", "train_loss", "value", "failed"], "metric_vs_loss")
    frame = _status(frame.with_columns(pl.col("config").cast(pl.String)))
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
        tooltip=["run_id:N", "config:N", alt.Tooltip("train_loss:Q", format=".4g"),
                 alt.Tooltip("value:Q", format=".4f"), "status:N"],
    )
    layers: list[Any] = [points]
    if "majority" in frame.columns and frame.get_column("majority").drop_nulls().len():
        maj = float(frame.get_column("majority").drop_nulls().first())  # type: ignore[arg-type]
        layers.append(
            alt.Chart(inline_data(pl.DataFrame({"majority": [maj]})))
            .mark_rule(strokeDash=[4, 3], color="#1f3fbf")
            .encode(y="majority:Q")
        )
    chart = alt.layer(
        *layers,
        data=inline_data(frame, ["run_id", "config", "train_loss", "value", "status"]),
    ).properties(width=width, height=height)
    return chart.properties(title=title) if title else chart


# --------------------------------------------------------------------------- loss curves


def loss_curves(
    frame: pl.DataFrame,
    *,
    log_y: bool = False,
    title: str | None = None,
    width: int = 480,
    height: int = _HEIGHT,
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
    _require(frame, ["run_id", "config", "step", "loss", "failed"], "loss_curves")
    frame = _status(frame.with_columns(pl.col("config").cast(pl.String)))
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
            detail="run_id:N",
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
            tooltip=["run_id:N", "config:N", "status:N", "step:Q",
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
    height: int = _HEIGHT,
) -> AnyChart:
    """Training-loss quantile bands per configuration and run status (for many runs).

    Parameters
    ----------
    frame
        One row per (config, status, step bucket): ``config`` (str), ``status``
        ("failed"/"successful"), ``step`` (int), ``q10``, ``median``, ``q90`` (floats, nats:
        quantiles over runs of the per-run bucket mean), ``runs`` (int).
    """
    _require(frame, ["config", "status", "step", "q10", "median", "q90"], "loss_curves")
    frame = frame.with_columns(pl.col("config").cast(pl.String),
                               (pl.col("config").cast(pl.String) + " / " + pl.col("status"))
                               .alias("series"))
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    color = alt.Color("config:N", title="configuration")
    dash = alt.StrokeDash("status:N", scale=alt.Scale(domain=STATUS_DOMAIN,
                                                      range=[[1, 0], [5, 3]]), title="runs")
    band = alt.Chart().mark_area(opacity=0.15).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("q10:Q", title="training loss", scale=yscale),
        y2="q90:Q", color=color, detail="series:N",
    )
    line = alt.Chart().mark_line(strokeWidth=1.5).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("median:Q", title="training loss", scale=yscale),
        color=color, strokeDash=dash, detail="series:N",
        tooltip=["config:N", "status:N", "step:Q", alt.Tooltip("median:Q", format=".4g"),
                 alt.Tooltip("q10:Q", format=".4g"), alt.Tooltip("q90:Q", format=".4g")]
        + (["runs:Q"] if "runs" in frame.columns else []),
    )
    cols = [c for c in ["config", "status", "series", "step", "q10", "median", "q90", "runs"]
            if c in frame.columns]
    chart = alt.layer(band, line, data=inline_data(frame, cols)).properties(
        width=width, height=height
    )
    return chart.properties(title=title) if title else chart


# --------------------------------------------------------------------------- forest plot


def forest(
    frame: pl.DataFrame,
    *,
    estimate: str = "difference",
    title: str | None = None,
    width: int = _WIDTH,
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
    _require(frame, ["label", "estimate", "ci_low", "ci_high"], "forest")
    order = [str(v) for v in frame.get_column("label").to_list()]
    cols = [c for c in ["label", "estimate", "ci_low", "ci_high", "p_adj", "significant"]
            if c in frame.columns]
    y = alt.Y("label:N", sort=order, title=None)
    tooltip: list[Any] = ["label:N", alt.Tooltip("estimate:Q", format=".4f"),
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
        x=alt.X("ci_low:Q", title=estimate), x2="ci_high:Q", y=y, color=color, tooltip=tooltip
    )
    point = alt.Chart().mark_point(filled=True, size=60, shape="square").encode(
        x=alt.X("estimate:Q", title=estimate), y=y, color=color, tooltip=tooltip
    )
    zero = alt.Chart(inline_data(pl.DataFrame({"zero": [0.0]}))).mark_rule(
        strokeDash=[3, 3], color="#888888"
    ).encode(x="zero:Q")
    chart = alt.layer(zero, rule, point, data=inline_data(frame, cols)).properties(
        width=width, height=max(60, row_height * len(order))
    )
    return chart.properties(title=title) if title else chart


def spec(chart: Any) -> dict[str, Any]:
    """The chart's Vega-Lite specification as a plain dict (no global Altair state read)."""
    out: dict[str, Any] = chart.to_dict(validate=True)
    return out


def save(chart: Any, path: str, *, fmt: str | None = None, scale: float = 2.0) -> None:
    """Write ``chart`` to ``path`` as PNG, SVG or Vega-Lite JSON, offline via vl-convert.

    ``fmt`` defaults to the file suffix (``.png``, ``.svg``, ``.json``).
    """
    import json
    from pathlib import Path

    p = Path(path)
    kind = (fmt or p.suffix.lstrip(".")).lower()
    vl = spec(chart)
    if kind == "json":
        p.write_text(json.dumps(vl, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return
    import vl_convert as vlc

    if kind == "svg":
        p.write_text(vlc.vegalite_to_svg(vl), encoding="utf-8")
    elif kind == "png":
        p.write_bytes(vlc.vegalite_to_png(vl, scale=scale))
    else:
        raise SelectionError(
            f"--out {path}: unknown chart format {kind!r}; use a .png, .svg or .json file "
            "or pass --format png|svg|json"
        )
