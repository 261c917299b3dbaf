"""Shared pieces of the chart functions: colours, sizes, inline data and frame helpers.

Every view module of :mod:`stabstat.charts` builds on these; nothing here draws a chart.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

from stabstat.errors import SelectionError

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

#: Default size of one chart panel, CSS pixels.
WIDTH = 320
HEIGHT = 240


# --------------------------------------------------------------------------- helpers


def round_sig(x: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """Round floats to ``digits`` significant digits; NaN/inf become ``None`` (JSON null)."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        if x == 0.0:  # -0.0 too: written as 0.0
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
    rows = [{k: round_sig(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return {"values": rows}


def require_columns(frame: pl.DataFrame, columns: Sequence[str], chart: str) -> None:
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


def jitter(run_id: str, width: float = 0.9) -> float:
    """A stable horizontal offset in [-width/2, width/2] derived from the run id (no RNG)."""
    u = zlib.crc32(run_id.encode("utf-8")) / 0xFFFFFFFF
    return round((u - 0.5) * width, 4)


def with_status(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``status`` ("failed"/"successful") from the boolean ``failed`` column."""
    return frame.with_columns(
        pl.when(pl.col("failed").fill_null(False))
        .then(pl.lit("failed"))
        .otherwise(pl.lit("successful"))
        .alias("status")
    )


def category_order(frame: pl.DataFrame, column: str, order: Sequence[str] | None) -> list[str]:
    """Category order: ``order`` if given, else first appearance in ``frame``."""
    if order is not None:
        return [str(o) for o in order]
    return [str(v) for v in frame.get_column(column).cast(pl.String).unique(maintain_order=True)]


def panels(frame: pl.DataFrame) -> list[Any]:
    if "panel" not in frame.columns:
        return [None]
    return list(frame.get_column("panel").unique(maintain_order=True))


def in_panel(frame: pl.DataFrame | None, panel: Any) -> pl.DataFrame | None:
    if frame is None or panel is None or "panel" not in frame.columns:
        return frame
    return frame.filter(pl.col("panel") == panel)


def concat_panels(charts: list[Any], title: str | None) -> Any:
    if len(charts) == 1:
        c = charts[0]
        return c.properties(title=title) if title else c
    out = alt.hconcat(*charts)
    return out.properties(title=title) if title else out
