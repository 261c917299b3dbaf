"""The report page carries Vega compiled in Python (stabstat.report.vega), not Vega-Lite.

The compile strips the inline data before handing a spec to vl-convert and puts the values
back afterwards: the result must be exactly what compiling the whole spec gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vl_convert as vlc  # a dependency of stabstat (the report compiles with it): never skipped
from report_fixtures import page_specs, small_report

from stabstat.report.vega import compile_async, compile_spec


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty template cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(cache))
    return cache


def _with_aria_off(spec: dict) -> dict:
    return {**spec, "config": {**spec.get("config", {}), "aria": False}}


def _two_dataset_spec() -> dict:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "datasets": {"runs": [{"x": 1.0, "y": 2.0, "s": "a"}, {"x": 2.0, "y": 1.5, "s": "b"}],
                     "base": [{"b": 1.2}]},
        "layer": [
            {"data": {"name": "runs"}, "mark": "point",
             "encoding": {"x": {"field": "x", "type": "quantitative"},
                          "y": {"field": "y", "type": "quantitative"},
                          "color": {"field": "s", "type": "nominal"},
                          "tooltip": [{"field": "s", "type": "nominal"}]}},
            {"data": {"name": "base"}, "mark": "rule",
             "encoding": {"y": {"field": "b", "type": "quantitative"}}},
        ],
    }


def test_compile_equals_compiling_the_whole_spec() -> None:
    from stabstat.report.bundle import vegalite_minor

    spec = _two_dataset_spec()
    want = vlc.vegalite_to_vega(_with_aria_off(spec), vl_version=vegalite_minor())
    got = compile_spec(spec)
    assert got == want
    assert got["$schema"].startswith("https://vega.github.io/schema/vega/")
    values = {d["name"]: d.get("values") for d in got["data"]}
    assert values["runs"] == spec["datasets"]["runs"] and values["base"] == [{"b": 1.2}]
    assert "datasets" in spec and spec["datasets"]["runs"][0] == {"x": 1.0, "y": 2.0, "s": "a"}


def test_aria_descriptions_are_not_compiled() -> None:
    """The canvas renderer has no per-mark ARIA: no description string per item is compiled."""
    spec = _two_dataset_spec()
    assert '"description"' in json.dumps(vlc.vegalite_to_vega(spec))
    assert '"description"' not in json.dumps(compile_spec(spec)["marks"])


def test_unexpected_shape_falls_back_to_a_full_compile() -> None:
    """A dataset the spec never uses is dropped by Vega-Lite: the data cannot be put back by
    name, so the whole spec is compiled (the same output either way)."""
    spec = _two_dataset_spec()
    spec["datasets"]["unused"] = [{"z": 1}]
    want = vlc.vegalite_to_vega(_with_aria_off(spec))
    assert compile_spec(spec) == want


def test_compile_async_gives_the_same_spec() -> None:
    a, b = compile_async(_two_dataset_spec()), compile_async(_two_dataset_spec())
    assert a.result() == b.result() == compile_spec(_two_dataset_spec(), cache=False)


def test_template_cache_hit_needs_no_compiler(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A second spec of the same structure, other data (so other dataset names): read from
    the cache, no vl-convert call, and the same Vega as a fresh compile of the whole spec."""
    from stabstat.report.bundle import vegalite_minor

    first = compile_spec(_two_dataset_spec())
    files = list((tmp_path / "cache" / "vega-templates").glob("*.json"))
    assert len(files) == 1 and '"values":[]' in files[0].read_text()
    other = _two_dataset_spec()
    other["datasets"] = {"data-1f": [{"x": 5.0, "y": 1.0, "s": "c"}], "data-0e": [{"b": 0.5}]}
    other["layer"][0]["data"]["name"] = "data-1f"
    other["layer"][1]["data"]["name"] = "data-0e"
    want = vlc.vegalite_to_vega(_with_aria_off(other), vl_version=vegalite_minor())

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("compiled although the template was cached")

    monkeypatch.setattr(vlc, "vegalite_to_vega", boom)
    got = compile_spec(other)
    assert got == want and got != first
    assert {d["name"] for d in got["data"]} >= {"data-1f", "data-0e"}


def test_foreign_cache_file_is_compiled_again(tmp_path: Path) -> None:
    first = compile_spec(_two_dataset_spec())
    (path,) = (tmp_path / "cache" / "vega-templates").glob("*.json")
    path.write_text("{truncated")
    assert compile_spec(_two_dataset_spec()) == first
    assert path.read_text().startswith('{"$schema"')


def test_report_page_carries_vega(tmp_path: Path) -> None:
    rep = small_report(tmp_path)
    page = rep.to_html(bundle="/* no bundle */")
    specs = page_specs(page)
    assert sorted(specs) == sorted(f"chart-{f.id}" for f in rep.figures)
    for key, spec in specs.items():
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega/v"), key
        assert "datasets" not in spec
    # each is what compiling the figure's whole Vega-Lite spec (data included) gives
    from stabstat.report.bundle import vegalite_minor

    for f in rep.figures:
        full = vlc.vegalite_to_vega(_with_aria_off(f.spec()), vl_version=vegalite_minor())
        assert f.vega_spec() == full, f.id
    # the figures keep their Vega-Lite (stabstat chart, notebooks): only the page is compiled
    assert all(f.spec()["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
               for f in rep.figures)


def test_spec_that_cannot_compile_stays_vega_lite(monkeypatch: pytest.MonkeyPatch) -> None:
    """vl-convert failing on a spec does not stop the page: that chart stays Vega-Lite (the
    browser compiles it, and shows the error in the chart's place if it fails there too)."""
    import altair as alt

    from stabstat.report import Figure

    chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")

    def fails(*a: object, **k: object) -> None:
        raise ValueError("Vega-Lite to Vega conversion failed: boom")

    monkeypatch.setattr(vlc, "vegalite_to_vega", fails)
    fig = Figure("f", "F", "caption", chart)
    assert fig.vega_spec() == fig.spec()
    assert compile_async(fig.spec()).exception() is not None
