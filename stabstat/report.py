"""A self-contained, deterministic HTML report of a stabstat database.

:func:`build_report` gathers everything from a :class:`stabstat.store.Store` (the selection,
the per-configuration summary, the analyses of :mod:`stabstat.analysis`, the charts of
:mod:`stabstat.charts` over data aggregated by :mod:`stabstat.chartdata`) into a
:class:`Report`; :meth:`Report.to_html` writes one HTML file with Vega, Vega-Lite and
vega-embed inlined, so it opens offline and makes no network request.

Determinism: the same database and options give a byte-identical file. Nothing in the page
depends on the clock, the host or a random generator: the "data as of" time is the newest
timestamp stored in the data, chart data are rounded (:data:`stabstat.charts.SIGNIFICANT_DIGITS`),
JSON keys are sorted, and bootstrap resampling uses the analysis' fixed seed.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from stabstat import __version__
from stabstat.errors import MissingExtraError

__all__ = [
    "FIGURES",
    "Figure",
    "Report",
    "build_report",
    "chart",
    "javascript_bundle",
    "package_versions",
]

#: Figure ids of a report, in page order (also the ``KIND`` of ``stabstat chart``).
FIGURES = (
    "metric-by-config",
    "failure-rate",
    "failure-vs-size",
    "loss-curves",
    "layer-gradients",
    "gradient-heatmap",
    "metric-vs-loss",
    "forest",
)

#: Works the methods paragraph cites.
REFERENCES = (
    "Mosbach, M., Andriushchenko, M., Klakow, D. (2021). On the Stability of Fine-tuning BERT: "
    "Misconceptions, Explanations, and Strong Baselines. ICLR 2021. arXiv:2006.04884.",
    "Efron, B. (1987). Better bootstrap confidence intervals. JASA 82(397):171-185.",
    "Wilson, E. B. (1927). Probable inference, the law of succession, and statistical "
    "inference. JASA 22(158):209-212.",
    "Newcombe, R. G. (1998). Interval estimation for the difference between independent "
    "proportions. Statistics in Medicine 17(8):873-890.",
    "Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian "
    "Journal of Statistics 6(2):65-70.",
)

#: Largest page :func:`build_report` aims for. Chart data are aggregated in DuckDB so that a
#: report over thousands of runs stays under this (README, "Large sweeps: what reaches the page", has the rules).
PAGE_BUDGET_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- the JS bundle


def _bundle_cache_dir() -> Path:
    """``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat``, else ``~/.cache/stabstat``."""
    if os.environ.get("STABSTAT_CACHE_DIR"):
        return Path(os.environ["STABSTAT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "stabstat"


def _vegalite_minor() -> str:
    """The Vega-Lite version (``"6.4"``) Altair writes specs for, as vl-convert names it."""
    import altair as alt
    import vl_convert as vlc

    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    have = list(vlc.get_vegalite_versions())
    return want if want in have else have[-1]


@lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one self-contained script (about 0.9 MB).

    Built offline by ``vl_convert.javascript_bundle`` from the JavaScript that the installed
    ``vl-convert-python`` wheel ships, for the Vega-Lite version Altair targets. Building takes
    a few seconds, so the result is cached in memory and on disk
    (``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat`` or ``~/.cache/stabstat``),
    keyed by the vl-convert and Vega-Lite versions. A cache that cannot be written is skipped.
    """
    try:
        import vl_convert as vlc
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingExtraError(
            "the HTML report needs the package 'vl-convert-python': pip install vl-convert-python"
        ) from exc
    from importlib import metadata

    vl = _vegalite_minor()
    name = f"vega-bundle-vlc{metadata.version('vl-convert-python')}-vl{vl}.js"
    path = _bundle_cache_dir() / name
    try:
        text = path.read_text(encoding="utf-8")
        if text.startswith("/* stabstat vega bundle */"):
            return text[len("/* stabstat vega bundle */\n"):]
    except OSError:
        pass
    bundle: str = vlc.javascript_bundle(vl_version=vl)  # type: ignore[call-arg]  # stub: snippet optional
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("/* stabstat vega bundle */\n" + bundle, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home is fine: we just rebuild next time
    return bundle


def _asset(name: str) -> str:
    return resources.files("stabstat").joinpath("assets", name).read_text(encoding="utf-8")


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
        out["vega-lite"] = _vegalite_minor()
        out["vega-embed"] = vlc.get_vega_embed_version()
    except ImportError:  # pragma: no cover
        pass
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class Figure:
    """One chart of the report: an anchor id, a heading, a caption and the Altair chart."""

    id: str
    title: str
    caption: str
    chart: Any  #: an altair chart (anything with ``.to_dict()``)
    table: Table | None = None  #: numbers shown under the chart

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = self.chart.to_dict()
        return out


@dataclass
class Table:
    """A small table for the page: column names and rows of already-formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: Any, *, caption: str = "", digits: int = 4) -> Table:
        """Format a polars frame: floats to ``digits`` decimals, nulls as an en dash."""
        cols = list(frame.columns)
        numeric = [frame.schema[c].is_numeric() for c in cols]
        rows = [[_cell(v, digits) for v in row] for row in frame.iter_rows()]
        return cls(cols, rows, numeric, caption)


def _cell(v: Any, digits: int = 4) -> str:
    import math

    if v is None:
        return "\u2013"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


@dataclass
class Report:
    """Everything one report page shows; :meth:`to_html` renders it deterministically."""

    title: str
    subtitle: str
    provenance: list[tuple[str, str]]
    summary: Table | None
    figures: list[Figure]
    methods: str
    claims: Table | None = None
    comparisons: Table | None = None
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  #: machine-readable results, embedded as JSON

    def to_html(self, *, bundle: str | None = None) -> str:
        """The page as one string. ``bundle`` overrides the Vega script (tests only)."""
        specs = {f"chart-{f.id}": f.spec() for f in self.figures}
        esc = html.escape
        parts: list[str] = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="stabstat {esc(__version__)}">',
            f"<title>{esc(self.title)}</title>",
            f"<style>\n{_asset('report.css')}</style>",
            f"<script>\n{_script_safe(bundle if bundle is not None else javascript_bundle())}\n</script>",
            "</head>",
            "<body>",
            "<header>",
            f"<h1>{esc(self.title)}</h1>",
            f'<p class="lead">{esc(self.subtitle)}</p>',
            "</header>",
        ]
        toc = [("provenance", "Data and provenance")]
        if self.summary is not None:
            toc.append(("summary", "Summary per configuration"))
        if self.comparisons is not None:
            toc.append(("comparisons", "Pairwise comparisons"))
        if self.claims is not None:
            toc.append(("claims", "Claims"))
        toc += [(f.id, f.title) for f in self.figures]
        toc.append(("methods", "Methods"))
        parts.append("<nav><ul>")
        parts += [f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t in toc]
        parts.append("</ul></nav>")

        parts.append('<section id="provenance"><h2>Data and provenance</h2>')
        parts.append('<table class="kv">')
        parts += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in self.provenance]
        parts.append("</table>")
        parts += [f'<p class="note">{esc(n)}</p>' for n in self.notes]
        parts.append("</section>")

        if self.summary is not None:
            parts.append('<section id="summary"><h2>Summary per configuration</h2>')
            parts.append(_table_html(self.summary))
            parts.append("</section>")
        if self.comparisons is not None:
            parts.append('<section id="comparisons"><h2>Pairwise comparisons</h2>')
            parts.append(_table_html(self.comparisons))
            parts.append("</section>")
        if self.claims is not None:
            parts.append('<section id="claims"><h2>Claims</h2>')
            parts.append(_table_html(self.claims, verdict_column="verdict"))
            parts.append("</section>")

        for f in self.figures:
            parts.append(f'<section id="{esc(f.id)}"><h2>{esc(f.title)}</h2>')
            parts.append(
                f'<figure><div class="chart" id="chart-{esc(f.id)}"></div>'
                f"<figcaption>{esc(f.caption)}</figcaption></figure>"
            )
            if f.table is not None:
                parts.append(_table_html(f.table))
            parts.append("</section>")

        parts.append('<section id="methods"><h2>Methods</h2>')
        parts.append(f'<blockquote class="methods">{esc(self.methods)}</blockquote>')
        parts.append('<p class="note">The paragraph above is generated from the settings of '
                     "this report and may be quoted.</p>")
        parts.append('<h3>References</h3><ul class="note">')
        parts += [f"<li>{esc(r)}</li>" for r in REFERENCES]
        parts.append("</ul></section>")

        parts.append('<script type="application/json" id="stabstat-specs">'
                     f"{_json_for_script(specs)}</script>")
        parts.append('<script type="application/json" id="stabstat-data">'
                     f"{_json_for_script(_round_floats(self.data))}</script>")
        parts.append(f"<script>\n{_asset('report.js')}</script>")
        parts.append("</body>")
        parts.append("</html>")
        return "\n".join(parts) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the page atomically (temp file + rename); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        tmp.write_text(self.to_html(), encoding="utf-8")
        os.replace(tmp, p)
        return p


def _table_html(t: Table, *, verdict_column: str | None = None) -> str:
    esc = html.escape
    numeric = t.numeric or [False] * len(t.columns)
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{esc(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th class="num">{esc(c)}</th>' if n else f"<th>{esc(c)}</th>"
        for c, n in zip(t.columns, numeric, strict=True)
    ) + "</tr></thead><tbody>")
    vi = t.columns.index(verdict_column) if verdict_column in t.columns else -1
    for row in t.rows:
        cells = []
        for i, (v, n) in enumerate(zip(row, numeric, strict=True)):
            if i == vi:
                cls = "".join(ch for ch in v if ch.isalnum() or ch == "_")
                cells.append(f'<td><span class="verdict verdict-{cls}">{esc(v)}</span></td>')
            elif n:
                cells.append(f'<td class="num">{esc(v)}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _round_floats(obj: Any, digits: int = 10) -> Any:
    """Floats to ``digits`` significant digits, recursively: the embedded results do not
    depend on the last bits of a BLAS reduction, which may vary with the thread count."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if obj == obj and obj not in (float("inf"),
                                                                        float("-inf")) else obj
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round_floats(v, digits) for v in obj]
    return obj


def _script_safe(js: str) -> str:
    """Make JS safe inside ``<script>``: no ``</script`` or ``<!--`` may end it early."""
    return js.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _json_for_script(obj: Any) -> str:
    """Deterministic JSON (sorted keys, compact) safe inside a ``<script>`` element."""
    from stabstat.cli._options import _json_safe

    text = json.dumps(_json_safe(obj), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    # "<" could close the script element ("</script") or start a comment; "&" and ">" are
    # escaped too, as Django's json_script does, and U+2028/9 break old JS parsers.
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _kv(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _join(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "\u2013"


# --------------------------------------------------------------------------- building a report


def _label(v: Any) -> str:
    """A factor level as text: booleans lower-case, floats shortest (``2e-05``), None "null"."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _fmt(x: Any, digits: int = 4) -> str:
    import math

    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "\u2013"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def _ci_text(est: Any, lo: Any, hi: Any, digits: int = 4) -> str:
    import math

    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "\u2013"
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _fmt(est, digits)
    return f"{_fmt(est, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _pct_ci(rate: Any, lo: Any, hi: Any) -> str:
    import math

    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "\u2013"
    return f"{rate * 100:.0f}% [{lo * 100:.0f}, {hi * 100:.0f}]"


def _p_text(p: Any) -> str:
    import math

    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "\u2013"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _choose_by(store: Any, runs: Any) -> str:
    """The factor to compare when ``--by`` is not given: the one non-seed factor that varies."""
    import polars as pl

    from stabstat.errors import SelectionError

    ids = runs.get_column("run_id").to_list()
    table = _runs_table(store).filter(pl.col("run_id").is_in(ids))
    varying = []
    for name in store.factors():
        if name in ("seed", "task") or name not in table.columns:
            continue
        k = table.get_column(name).n_unique()
        if 1 < k < table.height or (k == table.height == 2):
            varying.append(name)
    if len(varying) == 1:
        return varying[0]
    if not varying:
        raise SelectionError(
            "no factor besides seed and task varies among the selected runs; pass --by FACTOR "
            f"(factors: {', '.join(store.factors()) or 'none'})"
        )
    raise SelectionError(
        f"several factors vary among the selected runs ({', '.join(varying)}); pass --by FACTOR "
        "to choose the one to compare (and --filter to fix the others)"
    )


def build_report(
    store: Any,
    *,
    by: str | None = None,
    selection: Any = None,
    settings: Any = None,
    claims: str | Path | None = None,
    title: str | None = None,
    max_runs_drawn: int | None = None,
    loss_points: int | None = None,
    grad_points: int | None = None,
    only: Sequence[str] | None = None,
    claims_settings: Any = None,
) -> Report:
    """Gather the report of a store selection (nothing is written; see :meth:`Report.write`).

    Parameters
    ----------
    store
        An open :class:`stabstat.store.Store`.
    by
        The factor whose levels are the configurations; default: the one factor besides
        ``seed`` and ``task`` that varies among the selected runs.
    selection, settings
        :class:`stabstat.analysis.Selection` (which runs, which metric, the failure rule) and
        :class:`stabstat.analysis.Settings` (CI method, resamples, seed, correction), as for
        ``stabstat compare``. With several tasks in the selection every statistic is per task.
    claims
        A claims TOML file (``stabstat check``): its verdicts get a section, computed as
        ``stabstat check`` does: with the file's own ``[defaults]`` (resamples, seed, ...)
        unless ``claims_settings`` (a :class:`stabstat.analysis.Settings`) overrides them.
    max_runs_drawn, loss_points, grad_points
        Downsampling of the loss and gradient charts (defaults in :mod:`stabstat.chartdata`).
    only
        Compute only these figures (ids from :data:`FIGURES`), e.g. for ``stabstat chart``;
        the statistics are then computed only as far as those figures need them.

    Raises
    ------
    SelectionError, QueryError, ConfigError
        As the analyses raise them (unknown factor, empty selection, bad claims file...).
    """
    import polars as pl

    from stabstat import analysis as A
    from stabstat import chartdata, charts

    sel = selection or A.Selection()
    cfg = settings or A.Settings()
    # DuckDB draws a progress bar on stdout for long queries; a report must not.
    with contextlib.suppress(Exception):
        store.con.execute("SET enable_progress_bar = false")
    if by is None:
        probe = A.select_runs(store, [], selection=sel)
        by = _choose_by(store, probe.frame)
    runset = A.select_runs(store, [by], selection=sel)
    by = runset.by[0]
    frame = runset.frame
    rs = runset.settings
    metric, split = rs["metric"], rs["split"]
    metric_title = f"{split} {metric}" + (" (best)" if rs["at"] == "best" else "")
    tasks: list[Any] = []
    if "task" in frame.columns and by != "task":
        tasks = frame.get_column("task").unique().sort(nulls_last=True).to_list()
    multi_task = len(tasks) > 1
    notes: list[str] = []
    warnings: list[str] = list(runset.warnings)
    warnings = [w for w in warnings if not w.startswith("the selection pools")]

    # -- statistics, per task when the selection has several -------------------------------
    parts: list[tuple[Any, Any]] = []  # (task or None, RunSet)
    if multi_task:
        for t in tasks:
            sub = frame.filter(pl.col("task") == t) if t is not None else frame.filter(
                pl.col("task").is_null())
            parts.append((t, A.RunSet(sub, runset.by, rs, [])))
    else:
        parts.append((None, runset))
    def want(fig: str) -> bool:
        return only is None or fig in only

    compares = []
    need_stats = only is None or bool({"metric-by-config", "failure-rate", "forest"} & set(only))
    for t, part in (parts if need_stats else []):
        res = A.compare_frame(part, settings=cfg)
        compares.append((t, res))
        prefix = f"{t}: " if multi_task else ""
        warnings += [prefix + w for w in res.warnings if w not in runset.warnings]

    levels_order: list[str] = []
    for _, res in compares:
        for g in res.groups:
            lab = _label(g[by])
            if lab not in levels_order:
                levels_order.append(lab)

    if not levels_order:  # statistics skipped (``only``): order the levels like compare does
        vals = [v for v in frame.get_column(by).unique().to_list() if v is not None]
        try:
            vals.sort()
        except TypeError:
            vals.sort(key=str)
        levels_order = [_label(v) for v in vals] + (
            ["null"] if frame.get_column(by).null_count() else [])

    # -- the summary table ---------------------------------------------------------------
    cols = (["task"] if multi_task else []) + [
        by, "runs", "failed", "failure rate [CI]", f"mean [{int(cfg.confidence * 100)}% CI]",
        "std", "median", "IQM", "max", "mean (successful)",
    ]
    numeric = ([False] if multi_task else []) + [False, True, True, False, False, True, True,
                                                 True, True, True]
    rows: list[list[str]] = []
    group_rows: list[dict[str, Any]] = []
    for t, res in compares:
        for g in res.groups:
            row = ([_label(t)] if multi_task else []) + [
                _label(g[by]), str(g["n_runs"]), str(g["n_failed"]),
                _pct_ci(g["failure_rate"], g["failure_ci_low"], g["failure_ci_high"]),
                _ci_text(g["mean"], g["ci_low"], g["ci_high"]),
                _fmt(g["std"]), _fmt(g["median"]), _fmt(g["iqm"]), _fmt(g["max"]),
                _fmt(g["mean_successful"]),
            ]
            rows.append(row)
            group_rows.append({"panel": _label(t) if multi_task else None,
                               "config": _label(g[by]), **g})
    summary = Table(cols, rows, numeric,
                    caption=f"{metric_title} over seeds per configuration; a run fails when "
                            f"{rs['failure_rule']}.")

    # -- pairwise comparisons -------------------------------------------------------------
    comp_rows: list[list[str]] = []
    forest_rows: list[dict[str, Any]] = []
    for t, res in compares:
        for tt in res.tests:
            if tt["test"] not in ("mean_difference", "failure_rate_difference"):
                continue
            a, b = _label(tt["a"]), _label(tt["b"])
            what = "mean difference" if tt["test"] == "mean_difference" else \
                "failure-rate difference"
            comp_rows.append(([_label(t)] if multi_task else []) + [
                f"{a} \u2212 {b}", what + (" (paired)" if tt.get("paired") else ""),
                _ci_text(tt["estimate"], tt["ci_low"], tt["ci_high"]),
                _p_text(tt.get("p_value")), _p_text(tt.get("p_adjusted")),
                f"{tt.get('n_a', '')} / {tt.get('n_b', '')}",
            ])
            if tt["test"] == "mean_difference":
                lo, hi = tt["ci_low"], tt["ci_high"]
                forest_rows.append({
                    "label": (f"{_label(t)}: " if multi_task else "") + f"{a} \u2212 {b}",
                    "estimate": tt["estimate"], "ci_low": lo, "ci_high": hi,
                    "p_adj": tt.get("p_adjusted"),
                    "significant": bool(lo is not None and hi is not None and (lo > 0 or hi < 0)),
                })
    comparisons = None
    if comp_rows:
        comparisons = Table(
            (["task"] if multi_task else []) + ["pair (a \u2212 b)", "estimate", "value [CI]", "p",
                                                f"p ({cfg.correction})", "runs a / b"],
            comp_rows, ([False] if multi_task else []) + [False, False, False, True, True, True],
            caption="Differences between configurations: mean of the metric (bootstrap CI, "
                    "permutation p-value) and failure rate (Newcombe CI, Fisher exact p); "
                    f"p-values adjusted ({cfg.correction}) over the pairs of each family.",
        )

    # -- per-run frame shared by the charts ---------------------------------------------------
    runs = frame.with_columns(
        config=pl.col(by).map_elements(_label, return_dtype=pl.String)
        if frame.schema[by] != pl.String else pl.col(by).fill_null("null"),
        panel=(pl.col("task").cast(pl.String).fill_null("null") if multi_task else pl.lit(None,
               dtype=pl.String)),
        majority=pl.col("baseline"),
    )
    if not multi_task:
        runs = runs.drop("panel")
    # a run with unknown failure status is drawn as successful; the summary says how many
    runs = runs.with_columns(pl.col("failed").fill_null(False))
    series_config = (
        runs.with_columns(config=pl.col("panel") + " / " + pl.col("config")) if multi_task else runs
    )

    figures: list[Figure] = []
    drawn = runs.filter(pl.col("value").is_not_null())
    groups_frame = pl.DataFrame([
        {"panel": r["panel"], "config": r["config"], "point": r["mean"], "ci_low": r["ci_low"],
         "ci_high": r["ci_high"]} for r in group_rows
    ], schema={"panel": pl.String, "config": pl.String, "point": pl.Float64,
               "ci_low": pl.Float64, "ci_high": pl.Float64})
    if not multi_task:
        groups_frame = groups_frame.drop("panel")
    if drawn.height and want("metric-by-config"):
        figures.append(Figure(
            "metric-by-config", f"{metric_title} per configuration",
            f"Every run as a point (failed runs as red crosses), a min-max box with the median, "
            f"the mean with its {int(cfg.confidence * 100)}% {_ci_name(cfg)} bootstrap CI "
            "(black bar, red tick) and the failure baseline (dashed). Cf. Mosbach et al. (2021), "
            "Figure 1.",
            charts.metric_by_config(drawn, groups_frame, order=levels_order, metric=metric_title,
                                    config_title=by),
        ))
    fr_frame = pl.DataFrame([
        {"panel": r["panel"], "level": r["config"], "n": r["n_runs"], "failures": r["n_failed"],
         "rate": r["failure_rate"], "ci_low": r["failure_ci_low"], "ci_high": r["failure_ci_high"]}
        for r in group_rows
    ], schema={"panel": pl.String, "level": pl.String, "n": pl.Int64, "failures": pl.Int64,
               "rate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})
    if not multi_task:
        fr_frame = fr_frame.drop("panel")
    if want("failure-rate"):
        figures.append(Figure(
            "failure-rate", f"Failure rate per {by}",
            "Share of failed runs per configuration with its interval (Wilson; Clopper-Pearson "
            "when no or every run failed); labels give failed / runs.",
            charts.failure_rate(fr_frame, factor=by, order=levels_order),
        ))

    # failure rate against n_train on a log axis, when n_train varies
    size_factor = next((f for f in ("n_train", "train_size", "n_examples")
                        if f in store.factors()), None)
    if size_factor is not None and want("failure-vs-size"):
        # The size of each selected run from the runs table (a second select_runs would
        # recompute every run's summary).
        if size_factor in frame.columns:
            sf = frame
        else:
            sizes = _runs_table(store, [size_factor])
            sf = frame.join(sizes, on="run_id", how="left")
        sf = sf.filter(pl.col("failed").is_not_null() & pl.col(size_factor).is_not_null())
        if sf.get_column(size_factor).n_unique() >= 2 and sf.schema[size_factor].is_numeric():
            keys = [size_factor] + ([by] if by != size_factor else [])
            cells = sf.group_by(keys).agg(n=pl.len(), failures=pl.col("failed").sum()).sort(keys)
            from stabstat import stats as S

            recs = []
            for r in cells.iter_rows(named=True):
                rr = S.rate_interval(int(r["failures"]), int(r["n"]), confidence=cfg.confidence)
                rec: dict[str, Any] = {"level": float(r[size_factor]), "n": rr.n, "failures": rr.k,
                       "rate": rr.rate, "ci_low": rr.ci_low, "ci_high": rr.ci_high}
                if by != size_factor:
                    rec["series"] = _label(r[by])
                recs.append(rec)
            if not all(r["level"] > 0 for r in recs):
                notes.append(f"{size_factor} has values <= 0: no log-axis failure-rate chart.")
            else:
                figures.append(Figure(
                    "failure-vs-size", f"Failure rate against {size_factor}",
                    f"Failure rate per {size_factor} (log axis)"
                    + (f", one line per {by}" if by != size_factor else "")
                    + "; intervals as above. Mosbach et al. (2021) find that failure tracks "
                      "the number of training iterations rather than the data size.",
                    charts.failure_rate_vs(pl.DataFrame(recs), factor=size_factor),
                ))

        elif want("failure-vs-size") and only is not None:
            notes.append(f"{size_factor} does not vary among the selected runs.")
    elif want("failure-vs-size") and only is not None:
        notes.append("no n_train factor: the runs' config has no n_train key.")

    sel_runs = series_config.select("run_id", "config", "failed")
    loss_kw: dict[str, Any] = {}
    if max_runs_drawn is not None:
        loss_kw["max_runs"] = max_runs_drawn
    if loss_points is not None:
        loss_kw["points"] = loss_points
    loss = (chartdata.loss_curves_data(store, sel_runs, **loss_kw) if want("loss-curves")
            else pl.DataFrame())
    if loss.height:
        if "q10" in loss.columns:
            chart = charts.loss_bands(loss)
            how = ("more runs than drawn individually: median (line) and 10-90% band over runs "
                   "per configuration, failed and successful runs apart")
        else:
            chart = charts.loss_curves(loss)
            how = ("one line per run, failed runs dashed and thicker; click a configuration in "
                   "the legend to bring its runs forward")
        figures.append(Figure(
            "loss-curves", "Training loss",
            f"Training loss against step, coloured by configuration; {how}. Steps are averaged "
            "in equal buckets (at most a few hundred points per curve).",
            chart,
        ))
    elif want("loss-curves"):
        notes.append("No training losses were logged for the selected runs: no loss chart.")

    gkw: dict[str, Any] = {"points": grad_points} if grad_points is not None else {}
    grads = (chartdata.layer_gradients_data(store, sel_runs, **gkw)
             if want("layer-gradients") or want("gradient-heatmap") else pl.DataFrame())
    if grads.height and want("layer-gradients"):
        figures.append(Figure(
            "layer-gradients", "Per-layer gradient norms",
            "Median gradient L2 norm per layer (before clipping) against step, log scale, with "
            "the inter-quartile band, failed vs successful runs. Vanishing norms in the lower "
            "layers mark failed runs (Mosbach et al., 2021, Section 5).",
            charts.layer_gradients(grads),
            _gradient_table(A.gradients(store, selection=sel, settings=cfg)),
        ))
    if grads.height and want("gradient-heatmap"):
        figures.append(Figure(
            "gradient-heatmap", "Gradient norms over layers and steps",
            "The same medians as a heat map (log colour scale), layers from input (bottom) "
            "to output (top).",
            charts.layer_gradients_heatmap(grads),
        ))
    if not grads.height and (want("layer-gradients") or want("gradient-heatmap")):
        notes.append("No per-layer gradient norms were logged for the selected runs: "
                     "no gradient charts.")

    mv = series_config.filter(pl.col("value").is_not_null()
                              & pl.col("train_loss_final").is_not_null()).rename(
        {"train_loss_final": "train_loss"})
    mv = mv.filter(pl.col("train_loss").is_finite())
    variance_note = ""
    if mv.height and want("metric-vs-loss"):
        # A point estimate only: the bootstrap CI (``stabstat variance``) costs seconds per
        # thousand runs, and the chart is the point here.
        ok = mv.filter(~pl.col("failed"))
        if ok.height >= 3:
            rho = ok.select(pl.corr("train_loss", "value", method="spearman")).item()
            if rho is not None and rho == rho:
                variance_note = (
                    f" Among the {ok.height} successful runs the Spearman correlation of the "
                    f"metric with the final training loss is {rho:.3f} (stabstat variance "
                    "gives its bootstrap CI and the spread at equal loss)."
                )
        figures.append(Figure(
            "metric-vs-loss", f"{metric_title} against final training loss",
            "One point per run (failed runs as crosses); the final training loss is the mean "
            "of the last logged losses. Runs with the same training loss that still differ "
            "on dev show a generalisation effect (Mosbach et al., 2021, Section 6)."
            + variance_note,
            charts.metric_vs_loss(mv, metric=metric_title),
        ))
    if forest_rows and want("forest"):
        figures.append(Figure(
            "forest", "Pairwise differences",
            f"Difference in mean {metric} between configurations (a \u2212 b) with "
            f"{int(cfg.confidence * 100)}% bootstrap CIs; red where the CI excludes 0.",
            charts.forest(pl.DataFrame(forest_rows), estimate=f"difference in mean {metric}"),
        ))

    # -- claims ------------------------------------------------------------------------------
    claims_table = None
    claims_dict = None
    if claims is not None and only is None:
        from stabstat.claims import check

        res_c = check(store, claims, settings=claims_settings)
        claims_dict = res_c.to_dict()
        claims_table = Table(
            ["verdict", "claim", "kind", "estimate [CI]", "p (adj.)", "runs", "detail"],
            [[c.verdict, c.name, c.kind, _ci_text(c.estimate, c.ci_low, c.ci_high),
              _p_text(c.p_adjusted),
              ", ".join(f"{k}: {v}" for k, v in c.n.items()), c.detail]
             for c in res_c.claims],
            [False, False, False, False, True, False, False],
            caption=f"Claims from {Path(claims).name}: {res_c.settings['verdict_rule']} "
                    f"(alpha {res_c.settings['alpha']:g}, {res_c.settings['correction']}).",
        )

    # -- provenance ---------------------------------------------------------------------------
    ids = frame.get_column("run_id").to_list()
    prov_frame = _provenance_frame(store, ids)
    versions = package_versions()
    n_seeds = frame.get_column("seed").n_unique() if "seed" in frame.columns else None
    factors = store.factors()
    factor_levels = []
    for name in factors:
        if name not in prov_frame.columns:
            continue
        vals = prov_frame.get_column(name).unique().to_list()
        shown = sorted((_label(v) for v in vals), key=_natural)
        text = ", ".join(shown[:8]) + (f", \u2026 ({len(shown)} values)" if len(shown) > 8 else "")
        factor_levels.append(f"{name} ({factors[name].lower()}): {text}")
    sel_desc = rs["selection"]
    filt = sel_desc["filters"]
    filters_text = (", ".join(f"{k}={v}" for k, v in filt.items()) if isinstance(filt, dict)
                    else ", ".join(filt)) or "none"
    newest = prov_frame.get_column("finished_at").drop_nulls().max() \
        if "finished_at" in prov_frame.columns else None
    excluded = rs.get("excluded") or {}
    provenance = [
        ("database", os.path.abspath(str(store.path))),
        ("runs", f"{frame.height} analysed of {rs['n_selected']} selected"
                 + (" (left out: " + ", ".join(f"{v} {k}" for k, v in excluded.items()) + ")"
                    if excluded else "")
                 + (f"; {n_seeds} seeds" if n_seeds is not None else "")),
        ("selection", f"filters: {filters_text}; where: {sel_desc['where'] or 'none'}"
                      + ("; incomplete runs included" if sel_desc["include_incomplete"] else "")),
        ("configurations", f"{by}: " + ", ".join(levels_order)),
        ("tasks", ", ".join(_label(t) for t in tasks) if tasks else
         (_label(frame.get_column("task").first()) if "task" in frame.columns else "\u2013")),
        ("metric", f"{split}/{metric}, {rs['at']} value, "
                   + ("higher is better" if rs["higher_is_better"] else "lower is better")),
        ("failure rule", rs["failure_rule"]),
        ("confidence intervals", f"{int(cfg.confidence * 100)}% {_ci_name(cfg)} bootstrap, "
                                 f"{cfg.resamples:,} resamples, seed {cfg.seed}; failure rates: "
                                 "Wilson (Clopper-Pearson at 0 or n)"),
        ("p-values", f"permutation test ({cfg.resamples:,} permutations) for means, Fisher "
                     f"exact for failure rates; adjusted: {cfg.correction}"),
        ("factors", "; ".join(factor_levels) or "\u2013"),
        ("data as of", f"{newest:%Y-%m-%d %H:%M:%S} UTC (newest finish time among the runs)"
         if newest is not None else "\u2013"),
        ("chart data", "aggregated in DuckDB: steps averaged in equal buckets (<= "
                       f"{loss_kw.get('points', chartdata.DEFAULT_LOSS_POINTS)} points per curve), "
                       f"runs drawn one by one up to "
                       f"{loss_kw.get('max_runs', chartdata.DEFAULT_MAX_RUNS)}, quantile bands "
                       "beyond; gradient norms as quantiles per (status, layer, step bucket)"),
        ("software", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    notes = [f"Warning: {w}" for w in dict.fromkeys(warnings)] + notes

    methods = _methods_text(
        n_runs=frame.height, by=by, levels=levels_order, n_seeds=n_seeds, tasks=tasks,
        metric=metric, split=split, at=rs["at"], rule=_rule_text(sel, metric,
                                                                 rs["higher_is_better"]), cfg=cfg,
        versions=versions, n_claims=len(claims_dict["tests"]) if claims_dict else 0,
        multi_task=multi_task, per_config=[int(r["n_runs"]) for r in group_rows],
    )
    data: dict[str, Any] = {
        "compare": [{"task": t, **res.to_dict()} for t, res in compares],
        "settings": {"by": by, **rs, **cfg.describe()},
    }
    if claims_dict is not None:
        data["claims"] = claims_dict
    task_text = (", ".join(_label(t) for t in tasks) if multi_task else
                 (_label(frame.get_column("task").first()) if "task" in frame.columns else ""))
    return Report(
        title=title or f"Fine-tuning stability by {by}" + (f" ({task_text})" if task_text else ""),
        subtitle=f"{frame.height} runs, {len(levels_order)} configurations of {by}, "
                 f"{split}/{metric}. Generated by stabstat {__version__}.",
        provenance=provenance,
        summary=summary,
        comparisons=comparisons,
        claims=claims_table,
        figures=figures,
        methods=methods,
        notes=notes,
        data=data,
    )


def chart(store: Any, kind: str, *, by: str | None = None, selection: Any = None,
          settings: Any = None, max_runs_drawn: int | None = None,
          loss_points: int | None = None) -> Any:
    """One chart of the report over a store selection, as an Altair chart (for Jupyter).

    ``kind`` is one of :data:`FIGURES`; the options are those of :func:`build_report`.

    Raises
    ------
    SelectionError
        Unknown ``kind``, or the selection has no data for this chart (e.g. no per-layer
        gradient norms were logged); the message says which.

    Examples
    --------
    >>> import stabstat
    >>> from stabstat.report import chart
    >>> chart(stabstat.open("stabstat.duckdb"), "metric-by-config", by="lr")  # doctest: +SKIP
    """
    from stabstat.errors import SelectionError

    if kind not in FIGURES:
        raise SelectionError(f"unknown chart {kind!r}; charts: {', '.join(FIGURES)}")
    rep = build_report(store, by=by, selection=selection, settings=settings,
                       max_runs_drawn=max_runs_drawn, loss_points=loss_points, only=[kind])
    for f in rep.figures:
        if f.id == kind:
            return f.chart
    why = " ".join(rep.notes) or "the selection has no data for it"
    raise SelectionError(f"chart {kind}: nothing to draw ({why})")


def _gradient_table(res: Any) -> Table:
    """The collapse test of :func:`stabstat.analysis.gradients` as a small table."""
    st = res.settings
    rows = []
    for g in res.groups:
        status = {True: "failed", False: "successful", None: "unknown"}[g["failed"]]
        rows.append([
            status, str(g["n_runs"]), str(g["n_collapsed"]),
            _pct_ci(g["collapse_rate"], g["collapse_ci_low"], g["collapse_ci_high"]),
            _ci_text(g["median_ratio"], g["ratio_q25"], g["ratio_q75"], 4),
            _fmt(g["median_loss_ratio"]),
        ])
    fisher = next((t for t in res.tests if t["test"] == "collapse_vs_failure"), None)
    ptxt = _p_text(fisher["p_value"]) if fisher else ""
    p = f"; Fisher exact p {'' if ptxt.startswith('<') else '= '}{ptxt}" if fisher else ""
    return Table(
        ["runs", "n", "collapsed", "collapse rate [CI]", "lower-layer norm ratio, median [IQR]",
         "loss last/first, median"],
        rows, [False, True, True, False, True, True],
        caption=(f"Lower layers ({st['lower_layers']}): norm ratio = median over steps of their "
                 "combined norm / its value at the first step. A run collapses when the ratio "
                 f"is <= 1/{st['collapse_factor']:g} while its loss plateaus (mean of the last "
                 f"10 losses >= {st['plateau']:g} x the first 10){p}. "
                 "stabstat gradients takes other thresholds."),
    )


def _natural(s: str) -> tuple[Any, ...]:
    """Sort key putting numbers in numeric order ("2e-05" < "0.0001", "2" < "10")."""
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _runs_table(store: Any, columns: Sequence[str] | None = None) -> Any:
    """Columns of the ``runs`` table (default: the factors and ``finished_at``), by run_id.

    Read directly: ``store.runs()`` also computes every run's final metrics."""
    from stabstat.store import fetch_frame, quote_ident

    cols = list(columns) if columns is not None else [*store.factors(), "finished_at"]
    sql = "SELECT run_id" + "".join(f", {quote_ident(c)}" for c in cols) + " FROM runs"
    return fetch_frame(store.con, sql)


def _provenance_frame(store: Any, ids: list[str]) -> Any:
    import polars as pl

    return _runs_table(store).filter(pl.col("run_id").is_in(ids))


def _methods_text(*, n_runs: int, by: str, levels: list[str], n_seeds: int | None,
                  tasks: list[Any], metric: str, split: str, at: str, rule: str, cfg: Any,
                  versions: Mapping[str, str], n_claims: int, multi_task: bool,
                  per_config: Sequence[int] = ()) -> str:
    conf = f"{int(round(cfg.confidence * 100))}%"
    method = {"bca": "bias-corrected and accelerated (BCa)", "percentile": "percentile"}.get(
        cfg.ci_method, cfg.ci_method)
    seeds = f" over {n_seeds} random seeds" if n_seeds else ""
    task = (f" on {len(tasks)} tasks ({', '.join(_label(t) for t in tasks)}), analysed "
            "separately" if multi_task else "")
    each = ""
    if per_config:
        lo, hi = min(per_config), max(per_config)
        each = f"; {lo} runs each" if lo == hi else f"; {lo} to {hi} runs each"
    parts = [
        f"We analysed {n_runs} fine-tuning runs{seeds}{task}, in {len(levels)} configurations "
        f"of {by} ({', '.join(levels)}{each}).",
        f"Each run is scored by its {at} {split} {metric}. Following Mosbach et al. (2021), a "
        f"run counts as failed when {rule}.",
        f"Per configuration we report the mean, standard deviation, median, interquartile mean "
        f"and maximum over runs, each with a {conf} {method} bootstrap confidence interval "
        f"({cfg.resamples:,} resamples, seed {cfg.seed}; Efron, 1987).",
        "Failure rates carry Wilson score intervals (Clopper-Pearson when no run or every run "
        "failed).",
        "Differences in mean between configurations have bootstrap intervals (resampling runs "
        "paired by seed when both configurations share the same seeds) and permutation-test "
        "p-values; differences in failure rate have Newcombe's hybrid score intervals and "
        f"Fisher exact p-values; p-values are adjusted with the {_correction_name(cfg)} "
        "across the pairs.",
    ]
    if n_claims:
        parts.append(f"{n_claims} pre-stated claim(s) were tested with one-sided tests at the "
                     "level given in the claims file, adjusted across claims.")
    parts.append(
        f"Computed with stabstat {versions.get('stabstat', __version__)} (DuckDB "
        f"{versions.get('duckdb', '?')}, NumPy {versions.get('numpy', '?')}, SciPy "
        f"{versions.get('scipy', '?')}, statsmodels {versions.get('statsmodels', '?')})."
    )
    return " ".join(parts)


def _rule_text(sel: Any, metric: str, higher: bool) -> str:
    worse = "at or below" if higher else "at or above"
    if sel.fail_below is not None:
        thr = f"{'below' if higher else 'above'} {float(sel.fail_below):g}"
    elif sel.baseline is not None:
        thr = f"{worse} {float(sel.baseline):g}"
    else:
        thr = f"{worse} the majority-class baseline of its task"
    return f"its {metric} is {thr}, when its training diverged, or when it has no {metric} value"


def _ci_name(cfg: Any) -> str:
    return {"bca": "BCa", "percentile": "percentile"}.get(cfg.ci_method, str(cfg.ci_method))


def _correction_name(cfg: Any) -> str:
    return {"holm": "Holm (1979) method", "bh": "Benjamini-Hochberg (1995) method",
            "none": "no correction (unadjusted)"}.get(cfg.correction, cfg.correction)
