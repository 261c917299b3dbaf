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

Modules (every public name is re-exported here):

* :mod:`~stabstat.report.context` - the selection, analysis results and settings, built once;
  the only module that runs analyses (the others read its typed result rows);
* :mod:`~stabstat.report.figures` - one builder per figure, the registry :data:`FIGURES`;
* :mod:`~stabstat.report.sections` - the summary, comparisons, claims and gradient tables;
* :mod:`~stabstat.report.provenance` - provenance rows, :func:`package_versions`;
* :mod:`~stabstat.report.methods` - the methods paragraph and its references;
* :mod:`~stabstat.report.page` - :class:`Report`, :class:`Figure`, :class:`Table`, the HTML;
* :mod:`~stabstat.report.bundle` - the Vega script, cached on disk;
* :mod:`~stabstat.report.build` - :func:`build_report`, :func:`chart`.

Importing this package is cheap (no polars, Altair or DuckDB until a report is built).
"""

from __future__ import annotations

from stabstat.report.build import build_report, chart
from stabstat.report.bundle import javascript_bundle
from stabstat.report.figures import FIGURES
from stabstat.report.methods import REFERENCES
from stabstat.report.page import PAGE_BUDGET_BYTES, Figure, Report, Table
from stabstat.report.provenance import package_versions

__all__ = [
    "FIGURES",
    "PAGE_BUDGET_BYTES",
    "REFERENCES",
    "Figure",
    "Report",
    "Table",
    "build_report",
    "chart",
    "javascript_bundle",
    "package_versions",
]
