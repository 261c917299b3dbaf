"""Where a report's numbers come from: the "Data and provenance" rows and package versions.

Every row is text read from the database or the settings (never the clock or the host beyond
the database's path), so the same database and options give the same rows.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from stabstat import __version__
from stabstat._text import PAGE_MISSING
from stabstat._text import level as label
from stabstat.report.bundle import vegalite_minor
from stabstat.report.methods import ci_name

if TYPE_CHECKING:
    import polars as pl

    from stabstat.report.context import ReportContext

__all__ = ["package_versions", "provenance_rows"]

#: Factor levels listed per factor before the rest is summarised as "... (n values)".
_LEVELS_SHOWN = 8


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers and the page (sorted by name)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version(), "stabstat": __version__}
    for dist in ["duckdb", "polars", "numpy", "scipy", "statsmodels", "altair",
                 "vl-convert-python", "pyarrow"]:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import vl_convert as vlc

        out["vega"] = vlc.get_vega_version()
        out["vega-lite"] = vegalite_minor()
        out["vega-embed"] = vlc.get_vega_embed_version()
    except ImportError:  # pragma: no cover
        pass
    return dict(sorted(out.items()))


def provenance_rows(ctx: ReportContext, versions: dict[str, str]) -> list[tuple[str, str]]:
    """The (name, text) rows of the provenance table, in page order."""
    import polars as pl

    from stabstat import chartdata

    frame, rs, cfg = ctx.frame, ctx.run_settings, ctx.settings
    ids = frame.get_column("run_id").to_list()
    prov_frame = ctx.runs_table().filter(pl.col("run_id").is_in(ids))
    n_seeds = ctx.n_seeds
    excluded = rs.get("excluded") or {}
    loss_kw = ctx.loss_kw
    return [
        ("database", os.path.abspath(str(ctx.store.path))),
        ("runs", f"{frame.height} analysed of {rs['n_selected']} selected"
                 + (" (left out: " + ", ".join(f"{v} {k}" for k, v in excluded.items()) + ")"
                    if excluded else "")
                 + (f"; {n_seeds} seeds" if n_seeds is not None else "")),
        ("selection", _selection_text(rs["selection"])),
        ("configurations", f"{ctx.by}: " + ", ".join(ctx.levels)),
        ("tasks", ", ".join(ctx.task_labels) if ctx.tasks else
         (label(frame.get_column("task").first()) if "task" in frame.columns else PAGE_MISSING)),
        ("metric", f"{ctx.split}/{ctx.metric}, {rs['at']} value, "
                   + ("higher is better" if rs["higher_is_better"] else "lower is better")),
        ("failure rule", rs["failure_rule"]),
        ("confidence intervals", f"{ctx.confidence_pct}% {ci_name(cfg)} bootstrap, "
                                 f"{cfg.resamples:,} resamples, seed {cfg.seed}; failure rates: "
                                 "Wilson (Clopper-Pearson at 0 or n)"),
        ("p-values", f"permutation test ({cfg.resamples:,} permutations) for means, Fisher "
                     f"exact for failure rates; adjusted: {cfg.correction}"),
        ("factors", "; ".join(_factor_levels(ctx, prov_frame)) or PAGE_MISSING),
        ("data as of", _data_as_of(prov_frame)),
        ("chart data", "aggregated in DuckDB: steps averaged in equal buckets (<= "
                       f"{loss_kw.get('points', chartdata.DEFAULT_LOSS_POINTS)} points per curve), "
                       f"runs drawn one by one up to "
                       f"{loss_kw.get('max_runs', chartdata.DEFAULT_MAX_RUNS)}, quantile bands "
                       "beyond; gradient norms as quantiles per (status, layer, step bucket)"),
        ("software", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]


def _selection_text(sel_desc: dict[str, Any]) -> str:
    """``filters: ...; where: ...`` from the selection's description (``RunSet.settings``)."""
    filt = sel_desc["filters"]
    filters_text = (", ".join(f"{k}={v}" for k, v in filt.items()) if isinstance(filt, dict)
                    else ", ".join(filt)) or "none"
    return (f"filters: {filters_text}; where: {sel_desc['where'] or 'none'}"
            + ("; incomplete runs included" if sel_desc["include_incomplete"] else ""))


def _data_as_of(prov_frame: pl.DataFrame) -> str:
    """The newest finish time among the runs (UTC): the page's date, never the clock's."""
    if "finished_at" not in prov_frame.columns:
        return PAGE_MISSING
    newest: Any = prov_frame.get_column("finished_at").drop_nulls().max()  # a datetime
    return (f"{newest:%Y-%m-%d %H:%M:%S} UTC (newest finish time among the runs)"
            if newest is not None else PAGE_MISSING)


def _factor_levels(ctx: ReportContext, prov_frame: pl.DataFrame) -> list[str]:
    """``name (type): level, level, ...`` per factor of the store, levels in natural order."""
    factors = ctx.store.factors()
    out = []
    for name in factors:
        if name not in prov_frame.columns:
            continue
        vals = prov_frame.get_column(name).unique().to_list()
        shown = sorted((label(v) for v in vals), key=_natural)
        text = ", ".join(shown[:_LEVELS_SHOWN]) + (
            f", \u2026 ({len(shown)} values)" if len(shown) > _LEVELS_SHOWN else "")
        out.append(f"{name} ({factors[name].lower()}): {text}")
    return out


def _natural(s: str) -> tuple[Any, ...]:
    """Sort key putting numbers in numeric order ("2e-05" < "0.0001", "2" < "10")."""
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)
