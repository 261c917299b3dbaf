"""The report in a real browser: headless Chromium opens it from file:// with every other
request aborted, logs no console error, and draws marks in every chart.

Needs the system Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) and the
``playwright`` Python package; never a downloaded browser.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from report_fixtures import make_db

from stabstat._browser import find_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None,
                       reason="no system Chromium (/usr/bin/chromium): apt-get install chromium"),
]

playwright = pytest.importorskip("playwright.sync_api",
                                 reason="the dev extra's playwright package is not installed")


def _check(res: object, n_charts: int) -> None:
    from stabstat._browser import BrowserResult

    assert isinstance(res, BrowserResult)
    assert res.network_requests == [], "the report tried to go online"
    assert res.console_errors == [] and res.page_errors == []
    assert res.console_warnings == [], "Vega-Lite warned about a spec"
    assert len(res.chart_ids) == n_charts
    assert sorted(res.marks) == sorted(res.chart_ids)
    empty = {k: v for k, v in res.marks.items() if v <= 0}
    assert not empty, f"charts without data marks: {empty}"
    # The charts draw on canvas (issue 18): the bitmap itself is read back, independently of
    # the page's scenegraph count. Axes alone paint pixels too; the scenegraph count above
    # says that data marks were drawn, this that they reached a non-blank canvas.
    blank = [k for k in res.chart_ids if res.painted.get(k, 0) <= 1000]
    assert not blank, f"charts whose canvas stayed (nearly) blank: {blank} ({res.painted})"
    assert res.screenshot is not None and res.screenshot.stat().st_size > 10_000


def test_network_guard_sees_requests(tmp_path: Path) -> None:
    """Negative control: a page that reaches out is caught (so the offline check can fail)."""
    from stabstat._browser import render_report

    page = tmp_path / "online.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png">'
                    "<script>window.stabstatReady = Promise.resolve({});"
                    'console.error("boom")</script></body></html>')
    res = render_report(page)
    assert res.network_requests == ["http://example.invalid/x.png"]
    assert "boom" in res.console_errors


def test_canvas_reader_sees_a_blank_canvas(tmp_path: Path) -> None:
    """Negative control of the pixel check: a sized canvas nobody drew on reads as 0 painted
    pixels, one with a grey line as painted but not coloured, a red one as coloured."""
    from stabstat._browser import render_report

    page = tmp_path / "canvas.html"
    page.write_text(
        '<!DOCTYPE html><html><body>'
        '<div class="chart" id="chart-blank"><canvas width="200" height="100"></canvas></div>'
        '<div class="chart" id="chart-grey"><canvas width="200" height="100"></canvas></div>'
        '<div class="chart" id="chart-red"><canvas width="200" height="100"></canvas></div>'
        "<script>"
        "const g = document.querySelector('#chart-grey canvas').getContext('2d');"
        "g.fillStyle = '#888'; g.fillRect(0, 0, 10, 10);"
        "const r = document.querySelector('#chart-red canvas').getContext('2d');"
        "r.fillStyle = '#d62728'; r.fillRect(0, 0, 5, 4);"
        "window.stabstatReady = Promise.resolve({});</script></body></html>")
    res = render_report(page)
    assert res.painted == {"chart-blank": 0, "chart-grey": 100, "chart-red": 20}
    assert res.colored == {"chart-blank": 0, "chart-grey": 0, "chart-red": 20}


def test_report_renders_offline(tmp_path: Path) -> None:
    from stabstat._browser import render_report
    from stabstat.analysis import Settings
    from stabstat.report import build_report
    from stabstat.store import Store

    db = make_db(tmp_path, seeds=6, steps=40, n_trains=(1000, 4000))
    with Store.open(db) as store:
        rep = build_report(store, by="bias_correction", settings=Settings(resamples=400))
    out = rep.write(tmp_path / "report.html")
    res = render_report(out, screenshot=tmp_path / "report.png")
    _check(res, len(rep.figures))
    assert res.dom_marks == {k: 0 for k in res.chart_ids}, "the charts draw on canvas, not SVG"
    # 8 figures + the "How many seeds" section (issue 15): expected-max curves and power curve
    assert len(rep.figures) == 10
    assert [f.id for f in rep.figures][-2:] == ["expected-max", "power-curve"]
    assert res.marks["chart-expected-max"] > 0 and res.marks["chart-power-curve"] > 0


def test_large_report_renders_within_the_page_budget(tmp_path: Path) -> None:
    """2,000 runs x 2,000 steps (per-layer norms at every step): the page stays under
    PAGE_BUDGET_BYTES and renders."""
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.bench_report import generate_db
    from stabstat._browser import render_report
    from stabstat.analysis import Settings
    from stabstat.report import PAGE_BUDGET_BYTES, build_report
    from stabstat.store import Store

    db = generate_db(tmp_path / "big.duckdb", runs=2000, steps=2000, configs=8, layers=6,
                     evals_every=1000)
    t0 = time.perf_counter()
    try:
        with Store.open(db) as store:
            rep = build_report(store, by="n_train", settings=Settings(resamples=1000))
            out = rep.write(tmp_path / "big.html")
    finally:
        db.unlink()  # ~300 MB; pytest keeps the last runs' temp folders
    build_s = time.perf_counter() - t0
    size = out.stat().st_size
    print(f"\nlarge report: {size / 1e6:.2f} MB, built in {build_s:.1f} s", file=sys.stderr)
    assert size <= PAGE_BUDGET_BYTES
    loss = next(f for f in rep.figures if f.id == "loss-curves")
    assert "q10" in str(loss.spec())  # 2,000 runs: bands, not 2,000 lines
    res = render_report(out, screenshot=tmp_path / "big.png")
    print(f"rendered in {res.render_s:.1f} s", file=sys.stderr)
    _check(res, len(rep.figures))


def test_report_with_forgetting_probe_renders(tmp_path: Path) -> None:
    """Runs with forgetting-probe results: the report adds the forgetting figure, which draws."""
    from test_forgetting import _build

    from stabstat._browser import render_report
    from stabstat.analysis import Settings
    from stabstat.report import build_report
    from stabstat.store import Store

    db, _, _ = _build(tmp_path)
    with Store.open(db) as store:
        rep = build_report(store, by="bias_correction", settings=Settings(resamples=400))
    assert "forgetting" in [f.id for f in rep.figures]
    out = rep.write(tmp_path / "report.html")
    res = render_report(out, screenshot=tmp_path / "report.png")
    _check(res, len(rep.figures))
    assert res.marks["chart-forgetting"] > 0 and res.painted["chart-forgetting"] > 1000
