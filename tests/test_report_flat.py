"""The page's Vega with a mark per series instead of a facet subflow per series, grid axes
folded into labelled axes and no data sets that only rename another (report.vegaflat, issue 18).

Unit tests check what is changed and what is left alone (series order, subsets that are not
contiguous, names used elsewhere, keys that are not strings, axes that do not agree, aliases
used in expressions or shadowed in a group). The
browser test draws every figure of a report as the page did before and as it does now and
compares the pictures pixel by pixel (Vega's own PNG export of the canvas renderer) and every
item's tooltip in drawing order, with negative controls: the series drawn in the other order,
and a grid folded where another axis lies between, must give a different picture.
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
from stabstat.report.vegaflat import drop_aliases, flatten_pathgroups, merge_grid_axes
from stabstat.report.vegaprune import prune, tooltips_on_hover


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(tmp_path / "cache"))


def _bands(rows: list[dict[str, Any]], facet: bool = False) -> dict[str, Any]:
    """Overlapping areas and lines per series ``g`` (path groups), optionally faceted by ``f``
    into cells, with grid axes on both scales."""
    enc = {"x": {"field": "x", "type": "quantitative"},
           "y": {"field": "y", "type": "quantitative"},
           "color": {"field": "g", "type": "nominal"},
           "tooltip": [{"field": "g", "type": "nominal"}, {"field": "x", "type": "quantitative"}]}
    layer = [{"mark": {"type": "area", "opacity": 0.6}, "encoding": {**enc, "y2": {"field": "y2"}}},
             {"mark": "line", "encoding": enc}]
    spec: dict[str, Any] = {"$schema": "https://vega.github.io/schema/vega-lite/v6.json",
                            "datasets": {"rows": rows}, "data": {"name": "rows"}}
    if facet:
        spec.update(facet={"field": "f", "type": "nominal"}, columns=2,
                    spec={"layer": layer, "width": 120, "height": 80})
    else:
        spec.update(layer=layer, width=200, height=120)
    return spec


def _rows(order: str = "ab", cells: str = "pq") -> list[dict[str, Any]]:
    """Rows grouped by series (each series' rows together), ``cells`` cycling within them."""
    return [{"x": i, "y": 1 + (i * 7 + ord(g)) % 5, "y2": 0.5 * ((i * 3 + ord(g)) % 4), "g": g,
             "f": cells[i % len(cells)]}
            for g in order for i in range(10)]


def _pathgroups(spec: dict[str, Any]) -> int:
    """Group marks faceted into series (Vega-Lite's path groups), anywhere in ``spec``."""
    n = 0

    def walk(marks: list[dict[str, Any]]) -> None:
        nonlocal n
        for m in marks:
            if m.get("name", "").endswith("_pathgroup") and "facet" in m.get("from", {}):
                n += 1
            walk(m.get("marks", []))

    walk(spec["marks"])
    return n


def _flat_marks(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, data) of every non-group mark, in drawing order."""
    out: list[tuple[str, str]] = []

    def walk(marks: list[dict[str, Any]]) -> None:
        for m in marks:
            if m["type"] == "group":
                walk(m.get("marks", []))
            else:
                out.append((m["type"], m.get("from", {}).get("data", "")))

    walk(spec["marks"])
    return out


def test_each_series_gets_its_own_mark_in_vegas_order() -> None:
    vega = prune(compile_spec(_bands(_rows("ba"))))
    assert _pathgroups(vega) == 2
    before = json.dumps(vega)
    out = flatten_pathgroups(vega)
    assert json.dumps(vega) == before, "the input spec was changed"
    assert _pathgroups(out) == 0
    marks = [m for m in _flat_marks(out) if m[0] in ("area", "line")]
    assert [m[0] for m in marks] == ["area", "area", "line", "line"]
    filters = {d["name"]: d["transform"][0]["expr"] for d in out["data"] if d["name"] in
               {m[1] for m in marks}}
    # "b" comes first in the data, so Vega's facet creates (and draws) its series first
    assert [filters[m[1]] for m in marks] == ['datum["g"]==="b"', 'datum["g"]==="a"'] * 2
    rows = next(d for d in vega["data"] if d.get("values"))["values"]
    assert any(d.get("values") is rows for d in out["data"]), "values copied, not shared"


def test_cells_are_flattened_when_each_series_is_contiguous() -> None:
    vega = prune(compile_spec(_bands(_rows(), facet=True)))
    assert _pathgroups(vega) == 2
    out = flatten_pathgroups(vega)
    assert _pathgroups(out) == 0
    cell = next(m for m in out["marks"] if m.get("name") == "cell")
    assert len(cell["data"]) == 2  # one filter per series, inside the cell (area and line)


def test_interleaved_series_inside_cells_are_left_alone() -> None:
    """A cell sees a subset of the rows: with series interleaved, a cell could meet them in
    another order than the whole data, so its path groups stay."""
    rows = _rows()
    rows = [r for pair in zip(rows[:10], rows[10:], strict=True) for r in pair]
    vega = prune(compile_spec(_bands(rows, facet=True)))
    assert flatten_pathgroups(vega) == vega
    # at the top level the whole data is seen: the order of first appearance is known
    top = prune(compile_spec(_bands(rows)))
    assert _pathgroups(flatten_pathgroups(top)) == 0


@pytest.mark.parametrize("bad", [None, 3.5, True])
def test_keys_that_are_not_strings_or_integers_are_left_alone(bad: object) -> None:
    rows = _rows()
    for r in rows[:10]:
        r["g"] = bad
    vega = prune(compile_spec(_bands(rows)))
    assert _pathgroups(flatten_pathgroups(vega)) == 2


def test_a_name_used_elsewhere_keeps_its_path_group() -> None:
    vega = prune(compile_spec(_bands(_rows())))
    group = next(m for m in vega["marks"] if m.get("name", "").endswith("_pathgroup"))
    vega.setdefault("signals", []).append(
        {"name": "n", "update": f"length(data({json.dumps(group['from']['facet']['name'])}))"})
    assert _pathgroups(flatten_pathgroups(vega)) == 1


def test_grid_axis_folds_into_the_labelled_axis_after_it() -> None:
    vega = prune(compile_spec(_bands(_rows())))
    axes = vega["axes"]
    assert [(a["orient"], a.get("grid"), a.get("labels", True)) for a in axes] == [
        ("bottom", True, False), ("left", True, False), ("bottom", False, True),
        ("left", False, True)]
    out = merge_grid_axes(vega)
    assert [(a["orient"], a.get("grid"), a.get("labels", True)) for a in out["axes"]] == [
        ("left", True, False), ("bottom", True, True), ("left", False, True)]
    assert out["axes"][1] == {**axes[2], "grid": True, "gridScale": axes[0]["gridScale"]}
    assert vega["axes"] == axes, "the input spec was changed"


def test_grid_axes_that_cannot_fold_are_left_alone() -> None:
    vega = prune(compile_spec(_bands(_rows())))
    only_y = copy.deepcopy(vega)
    del only_y["axes"][0]  # [grid y, labelled x, labelled y]: x's axis lies between
    assert merge_grid_axes(only_y)["axes"] == only_y["axes"]
    other_ticks = copy.deepcopy(vega)
    other_ticks["axes"][2]["tickCount"] = 3
    assert len(merge_grid_axes(other_ticks)["axes"]) == 4
    styled = copy.deepcopy(vega)
    styled.setdefault("config", {})["axisX"] = {"gridColor": "red"}
    assert len(merge_grid_axes(styled)["axes"]) == 4


def test_aliases_are_read_from_their_source() -> None:
    vega = prune(compile_spec(_bands(_rows())))
    vega["data"] += [{"name": "alias_1", "source": vega["data"][0]["name"]},
                     {"name": "alias_2", "source": "alias_1"},
                     {"name": "alias_3", "source": "alias_1"}]
    vega["marks"].append({"type": "symbol", "from": {"data": "alias_2"}})
    vega.setdefault("signals", []).append({"name": "n", "update": "length(data('alias_3'))"})
    before = json.dumps(vega)
    out = drop_aliases(vega)
    assert json.dumps(vega) == before, "the input spec was changed"
    names = [d["name"] for d in out["data"]]
    assert "alias_2" not in names and out["marks"][-1]["from"] == {"data": vega["data"][0]["name"]}
    # alias_3 is used in an expression: it stays, reading the rows without alias_1
    assert "alias_1" not in names
    assert out["data"][names.index("alias_3")]["source"] == vega["data"][0]["name"]
    rows = vega["data"][0]["values"]
    assert out["data"][0]["values"] is rows, "values copied, not shared"


def test_an_alias_whose_source_a_group_shadows_stays() -> None:
    spec = {"data": [{"name": "d", "values": [{"a": 1}]}, {"name": "e", "source": "d"}],
            "marks": [{"type": "group", "data": [{"name": "d", "values": [{"a": 2}]}],
                       "marks": [{"type": "symbol", "from": {"data": "e"}}]}]}
    assert drop_aliases(spec) == spec


def test_report_page_carries_the_flattened_vega(tmp_path: Path) -> None:
    rep = small_report(tmp_path)
    specs = page_specs(rep.to_html(bundle="/* no bundle */"))
    flattened = merged = dropped = 0
    for f in rep.figures:
        vega = f.vega_spec()
        want = tooltips_on_hover(drop_aliases(merge_grid_axes(flatten_pathgroups(prune(vega)))))
        assert specs[f"chart-{f.id}"] == json.loads(json.dumps(want)) == json.loads(
            json.dumps(page_vega(vega))), f.id
        flattened += _pathgroups(prune(vega)) - _pathgroups(want)
        merged += len(vega.get("axes", [])) - len(want.get("axes", []))
        dropped += len({d["name"] for d in prune(vega)["data"]} - {d["name"] for d in want["data"]})
    assert flattened >= 4 and merged >= 3 and dropped >= 5, (flattened, merged, dropped)


# --------------------------------------------------------------------------- in a browser

_PICTURE_JS = """async (specs) => {
  const out = {};
  for (const [key, spec] of Object.entries(specs)) {
    const el = document.createElement('div');
    document.body.appendChild(el);
    const res = await vegaEmbed(el, spec, {renderer: 'canvas', actions: false});
    const tips = [];  // every item's tooltip, in drawing order
    (function walk(node) {
      if (node.tooltip !== undefined) { tips.push(JSON.stringify(node.tooltip)); }
      (node.items || []).forEach(walk);
    })(res.view.scenegraph().root);
    out[key] = [await res.view.toImageURL('png'), tips];
    res.finalize();
    el.remove();
  }
  return out;
}"""


def _pictures(specs: dict[str, Any]) -> dict[str, Any]:
    """Each spec drawn by Vega's canvas renderer: [PNG data URL, item tooltips in order]."""
    out: dict[str, Any] = evaluate_with_vega(_PICTURE_JS, specs)
    return out


def _reversed_series(spec: dict[str, Any]) -> dict[str, Any]:
    """The flattened spec with the copies of each mark (one per series) in the other order."""
    out = copy.deepcopy(spec)

    def walk(marks: list[dict[str, Any]]) -> None:
        for m in marks:
            if m["type"] == "group":
                if m.get("marks") and all("__" in c.get("name", "") for c in m["marks"]):
                    m["marks"].reverse()
                walk(m.get("marks", []))

    walk(out["marks"])
    return out


@pytest.mark.slow
def test_flattened_charts_draw_the_same_picture(tmp_path: Path) -> None:
    require_browser()
    rep = small_report(tmp_path)
    specs: dict[str, Any] = {}
    for f in rep.figures:
        before = prune(f.vega_spec())  # tooltips in "update": every item carries its text
        specs[f"{f.id}:before"] = before
        specs[f"{f.id}:after"] = drop_aliases(merge_grid_axes(flatten_pathgroups(before)))
    bands = prune(compile_spec(_bands(_rows())))
    specs["bands:before"] = bands
    specs["bands:after"] = drop_aliases(merge_grid_axes(flatten_pathgroups(bands)))
    cells = prune(compile_spec(_bands(_rows(), facet=True)))
    specs["cells:before"], specs["cells:after"] = cells, flatten_pathgroups(cells)
    # Negative controls: overlapping series drawn in the other order; a grid folded into an
    # axis with the other labelled axis between them (its domain line then lies under the
    # grid line that meets it).
    specs["bands:reversed"] = _reversed_series(flatten_pathgroups(bands))
    forced = copy.deepcopy(bands)
    del forced["axes"][0]
    forced["axes"] = [forced["axes"][1], {**forced["axes"][2], "grid": True,
                                          "gridScale": forced["axes"][0]["gridScale"]}]
    specs["grid:before"] = {**copy.deepcopy(bands), "axes": bands["axes"][1:]}
    specs["grid:forced"] = forced
    pics = _pictures(specs)
    for key in [f.id for f in rep.figures] + ["bands", "cells"]:
        png, tips = pics[f"{key}:before"]
        assert png.startswith("data:image/png") and len(png) > 2000, key
        assert pics[f"{key}:after"] == [png, tips], f"{key} draws differently flattened"
    assert any(tips for _, tips in pics.values()), "no tooltips were compared"
    assert pics["bands:reversed"][0] != pics["bands:before"][0], "the comparison cannot fail"
    assert pics["grid:forced"][0] != pics["grid:before"][0], "the comparison cannot fail"
