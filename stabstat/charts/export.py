"""A chart's Vega-Lite spec, and static export (PNG, SVG, JSON) offline through vl-convert."""

from __future__ import annotations

from typing import Any

from stabstat.errors import SelectionError


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
