"""The page's Vega without the invalid-value guards its inline data make dead, tooltips on
hover (report.vegaprune).

A guard may go only where every value reaching it passes it; then the chart must draw the
same scene. The unit tests check what is removed and what is kept (nulls, NaN-free strings,
fields the tracer cannot follow); the browser test draws every figure of a report both ways
and compares the scene graphs item by item, with a negative control showing that the
comparison sees a guard that was still needed. Tooltips: none is computed while drawing, and
hovering items in the real page shows the text the compiled spec gives them (the hover test
times out when the page's hover processing is off: checked by hand when it was written).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import evaluate_with_vega, page_specs, require_browser, small_report

from stabstat.report.page import page_vega
from stabstat.report.vega import compile_spec
from stabstat.report.vegaprune import prune, tooltips_on_hover


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(tmp_path / "cache"))


def _line_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A line per group and points, with a nominal tooltip field: filters, ``defined`` tests
    and tooltip text guards all appear in the compiled Vega."""
    enc = {"x": {"field": "x", "type": "quantitative"},
           "y": {"field": "y", "type": "quantitative"},
           "color": {"field": "g", "type": "nominal"},
           "tooltip": [{"field": "g", "type": "nominal"},
                       {"field": "y", "type": "quantitative", "format": ".3f"}]}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v6.json",
            "datasets": {"rows": rows}, "data": {"name": "rows"},
            "layer": [{"mark": "line", "encoding": enc}, {"mark": "point", "encoding": enc}]}


def _rows(n: int = 12) -> list[dict[str, Any]]:
    return [{"x": i, "y": round(0.1 * i * i, 3), "g": "ab"[i % 2]} for i in range(n)]


def _text(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "data"}) + json.dumps(
        [{k: v for k, v in d.items() if k != "values"} for d in spec["data"]])


def test_clean_data_lose_every_guard() -> None:
    vega = compile_spec(_line_spec(_rows()))
    before = _text(vega)
    assert "isValid" in before and '"defined"' in before and '"filter"' in before
    out = prune(vega)
    after = _text(out)
    assert "isValid" not in after and '"defined"' not in after and '"filter"' not in after
    assert 'datum[\\"g\\"]' in after  # the tooltip still shows the group, unguarded
    assert 'format(datum[\\"y\\"], \\".3f\\")' in after  # and the formatted number
    assert _text(vega) == before, "the input spec was changed"
    rows = next(d for d in vega["data"] if d.get("values"))["values"]
    assert any(d.get("values") is rows for d in out["data"]), "values copied, not shared"


def test_a_null_keeps_the_guards_of_its_field_only() -> None:
    rows = _rows()
    rows[3]["y"] = None
    after = _text(prune(compile_spec(_line_spec(rows))))
    assert 'isValid(datum[\\"y\\"]) && isFinite(+datum[\\"y\\"])' in after
    assert '"defined"' in after and '"filter"' in after
    assert 'isValid(datum[\\"g\\"])' not in after  # the group is still a string everywhere


@pytest.mark.parametrize("bad", [float("nan"), "7", True])
def test_values_that_are_not_finite_numbers_keep_the_number_guards(bad: object) -> None:
    rows = _rows()
    rows[5]["x"] = bad
    assert 'isFinite(+datum[\\"x\\"])' in _text(prune(compile_spec(_line_spec(rows))))


def test_a_non_string_keeps_the_tooltip_text_guard() -> None:
    rows = _rows()
    rows[2]["g"] = 3
    assert 'isArray(datum[\\"g\\"])' in _text(prune(compile_spec(_line_spec(rows))))


def test_untraceable_fields_keep_their_guards() -> None:
    """A formula the tracer does not know makes its output unknown; a copy or toNumber carries
    the class; a transform it does not know makes every field unknown."""
    guard = 'isValid(datum["{0}"]) && isFinite(+datum["{0}"])'
    spec = {"$schema": "https://vega.github.io/schema/vega/v6.json", "marks": [], "data": [
        {"name": "raw", "values": [{"a": 1.0, "b": 2}]},
        {"name": "d1", "source": "raw", "transform": [
            {"type": "formula", "expr": "datum.a / datum.b", "as": "r"},
            {"type": "formula", "expr": "toNumber(datum[\"b\"])", "as": "b2"},
            {"type": "formula", "expr": "datum['a']", "as": "a2"},
            {"type": "filter", "expr": guard.format("r")},
            {"type": "filter", "expr": guard.format("b2") + " && " + guard.format("a2")}]},
        {"name": "d2", "source": "raw", "transform": [
            {"type": "fold", "fields": ["a", "b"]},
            {"type": "filter", "expr": guard.format("a")}]},
        {"name": "d3", "source": "raw", "transform": [
            {"type": "aggregate", "groupby": [], "ops": ["q1", "sum"], "fields": ["a", "a"],
             "as": ["q", "s"]},
            {"type": "filter", "expr": guard.format("q")},
            {"type": "filter", "expr": guard.format("s")}]},
        {"name": "parsed", "values": [{"a": 1.0}], "format": {"parse": {"a": "date"}},
         "transform": [{"type": "filter", "expr": guard.format("a")}]},
    ]}
    got = {d["name"]: [t["expr"] for t in d.get("transform", []) if t["type"] == "filter"]
           for d in prune(spec)["data"]}
    assert got["d1"] == [guard.format("r")]
    assert got["d2"] == [guard.format("a")]
    assert got["d3"] == [guard.format("s")]
    assert got["parsed"] == [guard.format("a")]


def test_tooltips_move_to_the_hover_encoding() -> None:
    """Every mark's tooltip (nested marks too) moves from update to hover, nothing else."""
    spec = prune(compile_spec(_line_spec(_rows())))
    before = json.dumps(spec)
    tips = before.count('"tooltip"')
    assert tips == 2
    out = tooltips_on_hover(spec)
    found: list[dict[str, Any]] = []

    def walk(marks: list[dict[str, Any]]) -> None:
        for m in marks:
            found.append(m.get("encode", {}))
            walk(m.get("marks", []))

    walk(out["marks"])
    assert sum("tooltip" in e.get("hover", {}) for e in found) == tips
    assert not any("tooltip" in e.get("update", {}) for e in found)
    # the rest of each encoding is untouched
    back = json.loads(json.dumps(out))

    def restore(marks: list[dict[str, Any]]) -> None:
        for m in marks:
            enc = m.get("encode", {})
            if "hover" in enc:
                enc["update"]["tooltip"] = enc.pop("hover")["tooltip"]
            restore(m.get("marks", []))

    restore(back["marks"])
    assert json.dumps(back, sort_keys=True) == json.dumps(json.loads(before), sort_keys=True)


def test_vega_lite_fallback_is_left_alone() -> None:
    spec = _line_spec(_rows())
    assert prune(spec) == spec
    assert tooltips_on_hover(spec) == spec


def test_report_page_carries_the_pruned_vega(tmp_path: Path) -> None:
    rep = small_report(tmp_path)
    page = rep.to_html(bundle="/* no bundle */")
    specs = page_specs(page)
    for f in rep.figures:
        # pruned, tooltips on hover and report.vegaflat's steps (tests/test_report_flat.py)
        want = page_vega(f.vega_spec())
        assert specs[f"chart-{f.id}"] == json.loads(json.dumps(want)), f.id
        assert '"update":{"tooltip"' not in json.dumps(want, separators=(",", ":"))
    text = json.dumps(specs)
    assert text.count("isFinite") < json.dumps(
        [f.vega_spec() for f in rep.figures]).count("isFinite") / 4


# --------------------------------------------------------------------------- in a browser

_SCENE_JS = """async (specs) => {
  const out = {};
  for (const [key, spec] of Object.entries(specs)) {
    const el = document.createElement('div');
    document.body.appendChild(el);
    const res = await vegaEmbed(el, spec, {renderer: 'canvas', actions: false});
    const tips = [];  // Vega's scene JSON leaves tooltips out: collected item by item
    (function walk(node) {
      if (node.tooltip !== undefined) { tips.push(JSON.stringify(node.tooltip)); }
      (node.items || []).forEach(walk);
    })(res.view.scenegraph().root);
    out[key] = JSON.stringify([JSON.parse(res.view.scenegraph().toJSON()), tips]);
    res.finalize();
  }
  return out;
}"""


def _scenes(specs: dict[str, Any]) -> dict[str, Any]:
    """Each spec's scene graph after one run (Vega's own JSON of it) and its items' tooltips,
    ``defined: true`` dropped: an item without ``defined`` is drawn as defined (Vega's
    default)."""
    raw = evaluate_with_vega(_SCENE_JS, specs)

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not (k == "defined" and v is True)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return {k: strip(json.loads(v)) for k, v in raw.items()}


@pytest.mark.slow
def test_pruned_charts_draw_the_same_scene(tmp_path: Path) -> None:
    require_browser()
    rep = small_report(tmp_path)
    nulls = _rows()
    nulls[3]["y"] = None
    null_vega = compile_spec(_line_spec(nulls))
    # Negative control: every guard removed by force although a null reaches them.
    forced = copy.deepcopy(null_vega)
    for d in forced["data"]:
        d["transform"] = [t for t in d.get("transform", []) if t["type"] != "filter"]
    forced_text = json.dumps(forced).replace(
        'isValid(datum[\\"y\\"]) && isFinite(+datum[\\"y\\"])', "true")
    specs: dict[str, Any] = {}
    for f in rep.figures:
        specs[f"{f.id}:compiled"] = f.vega_spec()
        specs[f"{f.id}:pruned"] = prune(f.vega_spec())
    specs["nulls:compiled"], specs["nulls:pruned"] = null_vega, prune(null_vega)
    specs["nulls:forced"] = json.loads(forced_text)
    scenes = _scenes(specs)
    for f in rep.figures:
        a, b = scenes[f"{f.id}:compiled"], scenes[f"{f.id}:pruned"]
        assert json.dumps(a).count('"marktype"') > 3 and a[1], f.id  # marks and tooltips
        assert a == b, f"figure {f.id} draws differently without its guards"
    assert scenes["nulls:pruned"] == scenes["nulls:compiled"]
    assert scenes["nulls:forced"] != scenes["nulls:compiled"], "the comparison cannot fail"


_FIND_JS = """
function stabstatItems(view) {
  // Every item of a rect or symbol mark: [mark name, index, centre in page pixels, item].
  const out = [];
  const box = view.container().querySelector('canvas').getBoundingClientRect();
  (function walk(mark, ox, oy) {
    (mark.items || []).forEach((item, i) => {
      if (mark.marktype === 'group') {
        (item.items || []).forEach(m => walk(m, ox + (item.x || 0), oy + (item.y || 0)));
      } else if (mark.marktype === 'rect' || mark.marktype === 'symbol') {
        const rect = mark.marktype === 'rect';
        out.push([mark.name, i, box.left + view.origin()[0] + ox + item.x + (rect ? item.width / 2 : 0),
                  box.top + view.origin()[1] + oy + item.y + (rect ? item.height / 2 : 0), item]);
      }
    });
  })(view.scenegraph().root, 0, 0);
  return out;
}
function stabstatTips(view) {  // [mark name, index, tooltip] of the items that have one
  return stabstatItems(view).filter(e => e[4].tooltip != null).map(e => [e[0], e[1], e[4].tooltip]);
}
"""


@pytest.mark.slow
def test_tooltips_show_on_hover_with_the_same_text(tmp_path: Path) -> None:
    """The page's marks carry no tooltip until hovered; hovering items shows exactly the text
    that the compiled spec (tooltip in ``update``, computed while drawing) gives them."""
    require_browser()
    from playwright.sync_api import sync_playwright

    from stabstat._browser import CHROMIUM_ARGS, find_chromium

    rep = small_report(tmp_path, only=["failure-rate", "metric-vs-loss"])
    out = tmp_path / "report.html"
    rep.write(out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(out.resolve().as_uri(), wait_until="load")
            page.evaluate("() => window.stabstatReady")
            page.add_script_tag(content=_FIND_JS)
            assert len(rep.figures) == 2
            for f in rep.figures:
                chart = f"chart-{f.id}"
                page.locator(f"#{chart}").scroll_into_view_if_needed()
                view = f"window.stabstatViews[{json.dumps(chart)}]"
                assert page.evaluate(f"() => stabstatTips({view}).length") == 0, \
                    f"{f.id}: tooltips were computed while drawing"
                x, y = page.evaluate(f"() => stabstatItems({view})[0].slice(2, 4)")
                shown = page.locator("#vg-tooltip-element.visible")
                # a hollow point is picked on its outline: move around it until one shows
                for dx, dy in [(d, e) for d in range(-6, 7, 2) for e in range(-6, 7, 2)]:
                    page.mouse.move(x + dx, y + dy)
                    page.wait_for_timeout(20)
                    page.mouse.move(x + dx + 0.5, y + dy)
                    if shown.count():
                        break
                shown.wait_for(timeout=5000)
                text = shown.inner_text()
                hovered = page.evaluate(f"() => stabstatTips({view})")
                assert hovered, f.id
                want = page.evaluate("""async ([spec, hovered]) => {
                  const el = document.createElement('div'); document.body.appendChild(el);
                  const res = await vegaEmbed(el, spec, {renderer: 'canvas', actions: false});
                  const items = stabstatItems(res.view);
                  const out = hovered.map(([name, i]) =>
                    items.find(e => e[0] === name && e[1] === i)[4].tooltip);
                  res.finalize(); el.remove(); return out;
                }""", [prune(f.vega_spec()), hovered])
                assert [h[2] for h in hovered] == want, f.id
                assert any(all(k in text and str(v) in text for k, v in tip.items())
                           for tip in want), (f.id, text, want)
                page.mouse.move(1, 1)
        finally:
            browser.close()
