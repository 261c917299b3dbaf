"""The report page: :class:`Figure`, :class:`Table`, :class:`Report` and its HTML rendering.

:meth:`Report.to_html` is a pure function of the report: sorted, compact JSON, no clock, the
stylesheet and script from ``stabstat/assets`` and the Vega bundle of
:mod:`stabstat.report.bundle` inlined, so the page opens offline and the same report always
gives the same bytes (``tests/test_report_golden.py`` pins them).
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabstat import __version__
from stabstat._text import cell, json_safe, round_floats
from stabstat.report.bundle import javascript_bundle
from stabstat.report.methods import REFERENCES
from stabstat.report.vega import compile_spec
from stabstat.report.vegaflat import drop_aliases, flatten_pathgroups, merge_grid_axes
from stabstat.report.vegaprune import prune, tooltips_on_hover

if TYPE_CHECKING:
    from concurrent.futures import Future

    import polars as pl

    from stabstat.charts import AnyChart

__all__ = ["PAGE_BUDGET_BYTES", "Figure", "Report", "Table", "page_vega"]

#: Largest page :func:`stabstat.report.build_report` aims for. Chart data are aggregated in
#: DuckDB so that a report over thousands of runs stays under this (README, "Large sweeps:
#: what reaches the page", has the rules).
PAGE_BUDGET_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Figure:
    """One chart of the report: an anchor id, a heading, a caption and the Altair chart."""

    id: str
    title: str
    caption: str
    chart: AnyChart  #: an altair chart (anything with ``.to_dict()``)
    table: Table | None = None  #: numbers shown under the chart
    #: the page's Vega spec being compiled (:func:`stabstat.report.vega.compile_async`), set by
    #: :func:`stabstat.report.figures.build_figures`; None: compiled when the page is written
    vega: Future[dict[str, Any]] | None = field(default=None, compare=False, repr=False)

    def spec(self) -> dict[str, Any]:
        """The chart's Vega-Lite spec (what ``stabstat chart`` and notebooks get)."""
        out: dict[str, Any] = self.chart.to_dict()
        return out

    def vega_spec(self) -> dict[str, Any]:
        """The spec the page carries: :meth:`spec` compiled to Vega (report.vega).

        A spec vl-convert cannot compile stays Vega-Lite: vega-embed then compiles it in the
        browser, and the chart shows the compile error where it would have been drawn.
        """
        try:
            return self.vega.result() if self.vega is not None else compile_spec(self.spec())
        except ValueError:  # vl-convert's "Vega-Lite to Vega conversion failed"
            return self.spec()


@dataclass
class Table:
    """A small table for the page: column names and rows of already-formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, *, caption: str = "", digits: int = 4) -> Table:
        """Format a polars frame: floats to ``digits`` decimals, nulls as an en dash."""
        cols = list(frame.columns)
        numeric = [frame.schema[c].is_numeric() for c in cols]
        rows = [[cell(v, digits) for v in row] for row in frame.iter_rows()]
        return cls(cols, rows, numeric, caption)


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
        specs = {f"chart-{f.id}": page_vega(f.vega_spec()) for f in self.figures}
        parts = self._head(bundle if bundle is not None else javascript_bundle())
        parts += self._nav()
        parts += self._provenance()
        parts += self._tables()
        for f in self.figures:
            parts += _figure_html(f)
        parts += _methods_html(self.methods)
        parts.append('<script type="application/json" id="stabstat-specs">'
                     f"{_json_for_script(specs)}</script>")
        parts.append('<script type="application/json" id="stabstat-data">'
                     f"{_json_for_script(round_floats(self.data))}</script>")
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

    # ----------------------------------------------------------------- page parts (lines)

    def _head(self, bundle: str) -> list[str]:
        """From the doctype to the page header: metadata, inlined CSS and the Vega bundle."""
        esc = html.escape
        return [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="stabstat {esc(__version__)}">',
            f"<title>{esc(self.title)}</title>",
            f"<style>\n{_asset('report.css')}</style>",
            f"<script>\n{_script_safe(bundle)}\n</script>",
            "</head>",
            "<body>",
            "<header>",
            f"<h1>{esc(self.title)}</h1>",
            f'<p class="lead">{esc(self.subtitle)}</p>',
            "</header>",
        ]

    def _nav(self) -> list[str]:
        """The table of contents: every section present, in page order."""
        esc = html.escape
        toc = [("provenance", "Data and provenance")]
        if self.summary is not None:
            toc.append(("summary", "Summary per configuration"))
        if self.comparisons is not None:
            toc.append(("comparisons", "Pairwise comparisons"))
        if self.claims is not None:
            toc.append(("claims", "Claims"))
        toc += [(f.id, f.title) for f in self.figures]
        toc.append(("methods", "Methods"))
        return (["<nav><ul>"]
                + [f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t in toc]
                + ["</ul></nav>"])

    def _provenance(self) -> list[str]:
        esc = html.escape
        return (['<section id="provenance"><h2>Data and provenance</h2>', '<table class="kv">']
                + [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in self.provenance]
                + ["</table>"]
                + [f'<p class="note">{esc(n)}</p>' for n in self.notes]
                + ["</section>"])

    def _tables(self) -> list[str]:
        """The summary, comparisons and claims sections (those present)."""
        parts: list[str] = []
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
        return parts


def page_vega(vega: dict[str, Any]) -> dict[str, Any]:
    """A figure's Vega (:meth:`Figure.vega_spec`) as the page carries it: the same picture with
    less for the browser to do (issue 18). Vega, not Vega-Lite, so the browser skips the
    compile step (report.vega); without the invalid-value guards the inline data prove dead,
    tooltips computed on hover (report.vegaprune); a line or area per series instead of a
    facet subflow per series, grid axes folded into labelled axes, no data sets that only
    rename another (report.vegaflat)."""
    return tooltips_on_hover(drop_aliases(merge_grid_axes(flatten_pathgroups(prune(vega)))))


def _figure_html(f: Figure) -> list[str]:
    """A figure's section: heading, the chart's container (filled by report.js), caption,
    and its table."""
    esc = html.escape
    parts = [
        f'<section id="{esc(f.id)}"><h2>{esc(f.title)}</h2>',
        f'<figure><div class="chart" id="chart-{esc(f.id)}"></div>'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>",
    ]
    if f.table is not None:
        parts.append(_table_html(f.table))
    parts.append("</section>")
    return parts


def _methods_html(methods: str) -> list[str]:
    esc = html.escape
    return ([
        '<section id="methods"><h2>Methods</h2>',
        f'<blockquote class="methods">{esc(methods)}</blockquote>',
        '<p class="note">The paragraph above is generated from the settings of '
        "this report and may be quoted.</p>",
        '<h3>References</h3><ul class="note">',
    ] + [f"<li>{esc(r)}</li>" for r in REFERENCES] + ["</ul></section>"])


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


def _asset(name: str) -> str:
    """A file of ``stabstat/assets`` (the page's CSS and script) as text."""
    return resources.files("stabstat").joinpath("assets", name).read_text(encoding="utf-8")


def _script_safe(js: str) -> str:
    """Make JS safe inside ``<script>``: no ``</script`` or ``<!--`` may end it early."""
    return js.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _json_for_script(obj: Any) -> str:
    """Deterministic JSON (sorted keys, compact) safe inside a ``<script>`` element."""
    text = json.dumps(json_safe(obj), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    # "<" could close the script element ("</script") or start a comment; "&" and ">" are
    # escaped too, as Django's json_script does, and U+2028/9 break old JS parsers.
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
