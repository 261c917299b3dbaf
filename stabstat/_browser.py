"""Open a report in headless Chromium, offline, and check that every chart rendered.

A development helper for the browser test and the report benchmark (needs the ``dev`` extra:
``playwright``; the browser itself is the system's Chromium, never a downloaded one).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Chromium flags: headless, no sandbox (containers), and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    """Path of the system Chromium: ``$STABSTAT_CHROMIUM``, /usr/bin/chromium, or on ``PATH``."""
    env = os.environ.get("STABSTAT_CHROMIUM")
    if env and Path(env).exists():
        return env
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BrowserResult:
    """What the browser saw: console errors, blocked requests and data marks per chart."""

    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)  #: e.g. Vega-Lite's "WARN ..."
    page_errors: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)  #: every non-file:// request (blocked)
    marks: dict[str, int] = field(default_factory=dict)  #: chart id -> data marks (Vega scenegraph)
    #: chart id -> SVG mark elements in the DOM (0 for the report's canvas charts)
    dom_marks: dict[str, int] = field(default_factory=dict)
    #: chart id -> pixels of its canvas that are not white, read back from the bitmap
    painted: dict[str, int] = field(default_factory=dict)
    #: chart id -> canvas pixels with a colour (max - min channel >= 60): axes, grid and text
    #: are grey, so these are data marks (the report's marks are coloured)
    colored: dict[str, int] = field(default_factory=dict)
    chart_ids: list[str] = field(default_factory=list)  #: chart containers found in the page
    render_s: float = 0.0  #: seconds from navigation until every chart reported back
    screenshot: Path | None = None


# Counts SVG elements drawn for data marks, read from the DOM (independent of the page's own
# count): vega's SVG renderer puts each mark in <g class="mark-<type> role-mark ...">.
_DOM_MARKS_JS = """
() => {
  const out = {};
  document.querySelectorAll('div.chart').forEach((el) => {
    let n = 0;
    el.querySelectorAll('svg g.role-mark').forEach((g) => {
      if (g.classList.contains('mark-group')) return;
      n += g.querySelectorAll(':scope > path, :scope > rect, :scope > line, :scope > text,'
        + ' :scope > circle, :scope > image, :scope > g > path').length;
    });
    out[el.id] = n;
  });
  return out;
}
"""


# Reads each chart's canvas back (the page's charts draw with Vega's canvas renderer): pixels
# that are not white, and coloured pixels. Independent of the page's own scenegraph count: a
# canvas that was sized but never drawn on reads as 0.
_CANVAS_PIXELS_JS = """
() => {
  const out = {};
  document.querySelectorAll('div.chart').forEach((el) => {
    let painted = 0, colored = 0;
    el.querySelectorAll('canvas').forEach((c) => {
      if (!c.width || !c.height) return;
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < px.length; i += 4) {
        if (px[i + 3] === 0) continue;
        const r = px[i], g = px[i + 1], b = px[i + 2];
        if (r < 250 || g < 250 || b < 250) painted++;
        if (Math.max(r, g, b) - Math.min(r, g, b) >= 60) colored++;
      }
    });
    out[el.id] = [painted, colored];
  });
  return out;
}
"""


def render_report(
    path: str | Path,
    *,
    screenshot: str | Path | None = None,
    timeout_s: float = 120.0,
    viewport: tuple[int, int] = (1280, 900),
) -> BrowserResult:
    """Open ``path`` from a ``file://`` URL with every other request aborted, wait for the charts.

    Raises
    ------
    RuntimeError
        If no Chromium is installed (the message says how to install one).
    """
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set STABSTAT_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    res = BrowserResult()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          service_workers="block")
            page = context.new_page()

            def route(r: Any) -> None:
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    res.network_requests.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            def console(m: Any) -> None:
                if m.type == "error":
                    res.console_errors.append(m.text)
                elif m.type == "warning":
                    res.console_warnings.append(m.text)

            page.on("console", console)
            page.on("pageerror", lambda e: res.page_errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            res.marks = page.evaluate("() => window.stabstatReady", ) or {}
            res.render_s = time.perf_counter() - t0
            res.chart_ids = page.evaluate(
                "() => Array.from(document.querySelectorAll('div.chart')).map(e => e.id)")
            res.dom_marks = page.evaluate(_DOM_MARKS_JS)
            pixels = page.evaluate(_CANVAS_PIXELS_JS)
            res.painted = {k: v[0] for k, v in pixels.items()}
            res.colored = {k: v[1] for k, v in pixels.items()}
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
                res.screenshot = Path(screenshot)
        finally:
            browser.close()
    return res
