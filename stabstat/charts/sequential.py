"""Sequential view: a claim's confidence sequence against seeds (a funnel), the stopping point marked."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from stabstat.charts._base import (
    FAILED_COLOR,
    HEIGHT,
    OK_COLOR,
    WIDTH,
    inline_data,
    require_columns,
)


def sequence_funnel(
    frame: pl.DataFrame,
    *,
    boundary: float,
    decided_at: int | None,
    label: str = "difference",
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Any:
    """The running intersection of a confidence sequence after each seed (a funnel that
    narrows), the claim's boundary as a horizontal rule and the first n that excludes it as a
    vertical rule (none while undecided).

    Parameters
    ----------
    frame
        One row per n: ``n`` (int >= 1, runs or pairs), ``low``, ``high`` (floats, the claim's
        units; infinite ends are clipped by the caller).
    boundary
        The value the claim must exclude (0 for a difference).
    decided_at
        The first n whose interval excludes ``boundary``; None when it never did.
    """
    require_columns(frame, ["n", "low", "high"], "sequence_funnel")
    data = inline_data(frame, ["n", "low", "high"])
    x = alt.X("n:Q", title="seeds (pairs for two levels)")
    band = alt.Chart(data).mark_area(opacity=0.3, color=OK_COLOR).encode(
        x=x, y=alt.Y("low:Q", title=label), y2=alt.Y2("high:Q"),
        tooltip=[alt.Tooltip("n:Q"), alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    rule = alt.Chart(alt.Data(values=[{"boundary": boundary}])).mark_rule(strokeDash=[4, 4]).encode(
        y=alt.Y("boundary:Q"))
    layers = [band, rule]
    if decided_at is not None:
        stop = alt.Chart(alt.Data(values=[{"n": decided_at, "what": f"decided at n = {decided_at}"}]))
        layers.append(stop.mark_rule(color=FAILED_COLOR, size=2).encode(x=alt.X("n:Q"), tooltip=[alt.Tooltip("what:N")]))
    return alt.layer(*layers).properties(
        width=width, height=height,
        title=title or ("confidence sequence: " + (f"decided at n = {decided_at}" if decided_at else "undecided")))


def claims_funnels(claims: list[dict[str, Any]], *, width: int = WIDTH, height: int = HEIGHT) -> Any:
    """One :func:`sequence_funnel` per claim, stacked; ``claims``: ``stabstat check
    --sequential``'s JSON tests (``name``, ``verdict``, ``sequence`` with ``boundary``,
    ``decided_at``, ``lows``, ``highs``). Infinite ends (asymptotic sequences before they
    start, or an empty intersection) are left out of the band."""
    import math

    charts = []
    for c in claims:
        seq = c.get("sequence")
        if not seq or not seq["lows"]:
            continue
        rows = [{"n": i + 1, "low": lo, "high": hi} for i, (lo, hi) in enumerate(zip(seq["lows"], seq["highs"],
                                                                                       strict=True))
                if math.isfinite(lo) and math.isfinite(hi) and lo <= hi]
        frame = pl.DataFrame(rows, schema={"n": pl.Int64, "low": pl.Float64, "high": pl.Float64})
        charts.append(sequence_funnel(frame, boundary=float(seq["boundary"]), decided_at=seq["decided_at"],
                                      title=f"{c.get('verdict', '')} {c.get('name', '')}".strip(),
                                      width=width, height=height))
    return alt.vconcat(*charts) if charts else None
