"""Early failure prediction's view: held-out precision, recall and compute saved against the
step K at which runs would be stopped (``stabstat early``)."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import AnyChart, inline_data, require_columns

__all__ = ["early_curves"]

_MEASURES = ("precision", "recall", "saving")
_LABELS = {"precision": "precision", "recall": "recall", "saving": "compute saved"}


def early_curves(frame: pl.DataFrame, *, target: float | None = 0.95, title: str | None = None,
                 width: int = 300, height: int = 200) -> AnyChart:
    """Precision, recall and compute saved (each 0..1, with its interval band) against K, one
    panel per predictor, and a dashed rule at the precision ``target``.

    Parameters
    ----------
    frame
        One row per (method, step), as :meth:`stabstat.analysis.early.EarlyResult.to_frame`:
        ``method`` (str), ``step`` (int, K in optimiser steps), and per measure in
        ``precision``, ``recall``, ``saving`` the columns ``<m>``, ``<m>_low``, ``<m>_high``
        (floats in 0..1, null when undefined: nothing flagged).
    target
        The precision the chosen K must keep; None draws no rule.
    """
    require_columns(frame, ["method", "step", *_MEASURES], "early_curves")
    long = pl.concat([
        frame.select(pl.col("method"), pl.col("step"), pl.lit(_LABELS[m]).alias("measure"),
                     pl.col(m).cast(pl.Float64).alias("value"),
                     pl.col(f"{m}_low").cast(pl.Float64).alias("ci_low") if f"{m}_low" in frame.columns
                     else pl.lit(None, dtype=pl.Float64).alias("ci_low"),
                     pl.col(f"{m}_high").cast(pl.Float64).alias("ci_high") if f"{m}_high" in frame.columns
                     else pl.lit(None, dtype=pl.Float64).alias("ci_high"))
        for m in _MEASURES]).filter(pl.col("value").is_not_nan() & pl.col("value").is_not_null())
    order = [_LABELS[m] for m in _MEASURES]
    color = alt.Color("measure:N", sort=order, title=None)
    x = alt.X("step:Q", title="stopped at step K")
    y = alt.Scale(domain=[0, 1])
    layers: list[Any] = [
        alt.Chart().mark_area(opacity=0.15).encode(x=x, y=alt.Y("ci_low:Q", scale=y, title="share"),
                                                   y2=alt.Y2("ci_high:Q"), color=color),
        alt.Chart().mark_line(point=True, strokeWidth=1.5).encode(
            x=x, y=alt.Y("value:Q", scale=y, title="share"), color=color,
            tooltip=[alt.Tooltip("method:N"), alt.Tooltip("step:Q"), alt.Tooltip("measure:N"), alt.Tooltip("value:Q", format=".3f"),
                     alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")]),
    ]
    if target is not None:
        layers.append(alt.Chart().mark_rule(strokeDash=[4, 3], color="black").encode(
            y=alt.Y("target:Q", scale=y)))
        long = long.with_columns(target=pl.lit(float(target)))
    cols = [c for c in ("method", "step", "measure", "value", "ci_low", "ci_high", "target") if c in long.columns]
    chart = alt.layer(*layers, data=inline_data(long.sort(["method", "measure", "step"]), cols))
    chart = chart.properties(width=width, height=height).facet(
        column=alt.Column("method:N", title=None, sort=long["method"].unique(maintain_order=True).to_list()))
    return chart.properties(title=title) if title else chart
