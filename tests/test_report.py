"""The HTML report: self-contained (no remote script or style), deterministic, complete."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from report_fixtures import make_db

from stabstat import charts
from stabstat import report as R
from stabstat.analysis import Selection, Settings
from stabstat.cli import cli
from stabstat.ingest import ingest
from stabstat.store import Store

FAST = Settings(resamples=400)


class _Tags(HTMLParser):
    """Collect every start tag with its attributes, and the text of <style> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _remote_sources(page: str) -> list[str]:
    """Every script/style/link/img/iframe source or CSS url() that points at http(s)."""
    p = _Tags()
    p.feed(page)
    bad = []
    for tag, attrs in p.tags:
        for key in ("src", "href", "data", "srcset"):
            v = attrs.get(key)
            if v and re.match(r"\s*(https?:)?//", v, re.I) and not (tag == "a" and key == "href"):
                bad.append(f"<{tag} {key}={v}>")
    for css in p.styles:
        bad += [m.group(0) for m in re.finditer(r"(@import|url\()\s*['\"]?\s*(https?:)?//", css)]
    return bad


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("reportdb"), seeds=6, steps=40,
                   n_trains=(1000, 4000))


def _build(db: Path, **kw: Any) -> R.Report:
    kw.setdefault("settings", FAST)
    with Store.open(db) as store:
        return R.build_report(store, **kw)


# ---------------------------------------------------------------- page mechanics (fast)


def _tiny_report(title: str = "t", data: dict[str, Any] | None = None) -> R.Report:
    chart = charts.forest(pl.DataFrame({"label": ["a - b"], "estimate": [0.1], "ci_low": [0.0],
                                        "ci_high": [0.2]}))
    return R.Report(title=title, subtitle="s", provenance=[("database", "x.duckdb")],
                    summary=None, figures=[R.Figure("forest", "Forest", "caption", chart)],
                    methods="m", data=data or {})


def test_remote_source_detector_can_fail() -> None:
    page = ('<html><head><script src="https://cdn.example/vega.js"></script>'
            '<link rel="stylesheet" href="http://x/y.css"><style>@import url("https://f/g");'
            "</style></head><body><a href=\"https://ok.example\">a link is fine</a></body></html>")
    assert len(_remote_sources(page)) == 3


def test_script_content_cannot_close_the_element() -> None:
    nasty = "</script><script>alert(1)</script><!--"
    page = _tiny_report(title=nasty, data={"x": nasty}).to_html(bundle="var a = '</script>';")
    # one opening and one closing tag per script element, nothing smuggled in
    assert page.count("<script") == page.count("</script>") == 4
    blob = re.search(r'<script type="application/json" id="stabstat-data">(.*?)</script>',
                     page, re.S)
    assert blob is not None and json.loads(blob.group(1)) == {"x": nasty}
    assert "&lt;/script&gt;" in page  # the title is escaped as text


def test_specs_and_chart_containers_match() -> None:
    page = _tiny_report().to_html(bundle="")
    blob = re.search(r'id="stabstat-specs">(.*?)</script>', page, re.S)
    assert blob is not None
    specs = json.loads(blob.group(1))
    assert list(specs) == ["chart-forest"]
    assert '<div class="chart" id="chart-forest">' in page
    # Vega compiled from the figure's Vega-Lite when the page is written (issue 18, 4th pass)
    assert specs["chart-forest"]["$schema"].startswith("https://vega.github.io/schema/vega/")


def test_bundle_is_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vl_convert

    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(tmp_path))
    R.javascript_bundle.cache_clear()
    try:
        first = R.javascript_bundle()
        files = list(tmp_path.glob("vega-bundle-*.js"))
        assert len(files) == 1 and "vegaEmbed" in first and len(first) > 100_000
        R.javascript_bundle.cache_clear()

        def boom(*a: Any, **k: Any) -> str:
            raise AssertionError("bundle rebuilt instead of read from the cache")

        monkeypatch.setattr(vl_convert, "javascript_bundle", boom)
        assert R.javascript_bundle() == first
    finally:
        R.javascript_bundle.cache_clear()


def test_chart_kinds_are_the_report_figures() -> None:
    from stabstat.cli.report_cmds import CHART_KINDS

    assert CHART_KINDS == R.FIGURES


def test_text_keeps_the_page_and_cli_dialects() -> None:
    """stabstat._text writes what the report and the CLI tables wrote before it existed."""
    import math

    from stabstat import _text as T

    assert [T.number(x) for x in (None, math.nan, math.inf, 0.5, 2e-5, 2e6, True, 3)] == [
        "\u2013", "\u2013", "\u2013", "0.5000", "2e-05", "2e+06", "True", "3"]
    assert [T.number_cli(x) for x in (None, math.nan, math.inf, 0.5, 2e-5, True, 3)] == [
        "-", "-", "inf", "0.5000", "2e-05", "true", "3"]
    assert T.ci(0.5, 0.25, 0.75) == "0.5000 [0.2500, 0.7500]" == T.ci_cli(0.5, 0.25, 0.75)
    assert (T.ci(0.5, None, None), T.ci(None, 0.1, 0.2)) == ("0.5000", "\u2013")
    assert (T.ci_cli(0.5, math.nan, None), T.ci_cli(math.nan, 0.1, 0.2)) == ("0.5000", "-")
    assert T.percent_ci(0.25, 0.09, 0.53) == "25% [9, 53]"
    assert [T.p_value(p) for p in (None, 5e-5, 0.01234)] == ["\u2013", "<1e-4", "0.0123"]
    assert T.p_value_cli(None) == "-"
    assert [T.level(v) for v in (None, True, 2e-05, 1.0, "x")] == [
        "null", "true", "2e-05", "1", "x"]
    assert [T.level_cli(v) for v in (None, True, 2e-05, 1.0, {"lr": 1.0}, {})] == [
        "null", "true", "2e-05", "1.0000", "lr=1.0000", "all"]
    assert [T.cell(v) for v in (None, True, math.nan, -math.inf, 0.5, 7)] == [
        "\u2013", "yes", "NaN", "-inf", "0.5000", "7"]
    assert T.json_safe({1: [math.nan, (math.inf, 2.5)]}) == {"1": [None, [None, 2.5]]}
    rounded = T.round_floats({"a": (1 / 3, math.nan)}, 4)
    assert rounded["a"][0] == 0.3333 and math.isnan(rounded["a"][1])


def test_help_has_examples() -> None:
    for cmd in ("report", "chart"):
        res = CliRunner().invoke(cli, [cmd, "--help"])
        assert res.exit_code == 0, res.output
        assert "Example:" in res.output and f"stabstat {cmd}" in res.output


# ---------------------------------------------------------------- over a real store


@pytest.mark.slow
def test_report_is_self_contained_and_complete(db: Path, tmp_path: Path) -> None:
    rep = _build(db, by="bias_correction")
    page = rep.to_html()
    assert _remote_sources(page) == []
    assert "vegaEmbed" in page  # the bundle is inlined
    ids = [f.id for f in rep.figures]
    # + the "How many seeds" section (issue 15); no forgetting chart: these runs have no probe
    assert ids == ["metric-by-config", "failure-rate", "failure-vs-size", "loss-curves",
                   "layer-gradients", "gradient-heatmap", "metric-vs-loss", "forest",
                   "expected-max", "power-curve"]
    prov = dict(rep.provenance)
    assert prov["database"] == str(db.resolve())
    assert "majority-class baseline" in prov["failure rule"]
    assert "400 resamples, seed 0" in prov["confidence intervals"]
    assert "95% BCa/percentile bootstrap" in prov["confidence intervals"]  # "auto" since issue 17 item 9
    for pkg in ("stabstat", "duckdb", "polars", "altair", "vega-lite", "numpy", "scipy"):
        assert pkg in prov["software"]
    assert prov["runs"].startswith("24 analysed of 24 selected")
    # one summary row per configuration, the counts add up
    assert rep.summary is not None
    assert [r[0] for r in rep.summary.rows] == ["false", "true"]
    assert sum(int(r[1]) for r in rep.summary.rows) == 24
    assert "400 resamples" in rep.methods
    assert "seed 0" in rep.methods and "Mosbach" in rep.methods
    # the per-configuration numbers are the analysis' numbers
    data = rep.data["compare"][0]
    assert {g["bias_correction"] for g in data["groups"]} == {False, True}
    assert rep.claims is None
    # the vanishing-gradient view comes with the collapse test of `stabstat gradients`
    grad = next(f for f in rep.figures if f.id == "layer-gradients")
    assert grad.table is not None and [r[0] for r in grad.table.rows] == ["successful", "failed"]
    assert "Fisher exact p" in grad.table.caption
    # failed runs are marked in the Figure 1 view: as many as the analysis counted
    fig1 = rep.figures[0].spec()
    rows = [r for rows in fig1["datasets"].values() for r in rows if "status" in r]
    assert len(rows) == 24
    assert sum(r["status"] == "failed" for r in rows) == sum(g["n_failed"]
                                                             for g in data["groups"])
    for f in rep.figures:  # every spec is valid Vega-Lite
        f.chart.to_dict(validate=True)


@pytest.mark.slow
def test_report_is_deterministic(db: Path, tmp_path: Path) -> None:
    a = _build(db, by="bias_correction").to_html()
    b = _build(db, by="bias_correction").to_html()
    assert a == b
    c = _build(db, by="bias_correction", settings=Settings(resamples=400, seed=1)).to_html()
    assert c != a  # another resampling seed changes the intervals, so the test can fail
    # the CLI writes the same bytes twice
    runner = CliRunner()
    outs = []
    for name in ("one.html", "two.html"):
        res = runner.invoke(cli, ["report", "--db", str(db), "--by", "bias_correction",
                                  "--resamples", "400", "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    assert b"http://" not in outs[0].split(b"<script>")[0]  # head before the bundle


@pytest.mark.slow
def test_report_with_claims(db: Path, tmp_path: Path) -> None:
    claims = tmp_path / "claims.toml"
    claims.write_text(
        '[defaults]\nresamples = 400\n\n'
        '[[claims]]\nname = "bias correction lowers the failure rate"\nkind = "failure_rate"\n'
        'factor = "bias_correction"\nhigher = false\nlower = true\n\n'
        '[[claims]]\nname = "more data fails less"\nkind = "failure_trend"\n'
        'factor = "n_train"\ndirection = "decreasing"\n'
    )
    rep = _build(db, by="bias_correction", claims=claims)
    assert rep.data["claims"]["settings"]["resamples"] == 400  # the file's [defaults]
    assert rep.claims is not None
    assert [r[1] for r in rep.claims.rows] == ["bias correction lowers the failure rate",
                                               "more data fails less"]
    assert all(r[0] in ("PASS", "FAIL", "INCONCLUSIVE") for r in rep.claims.rows)
    page = rep.to_html(bundle="")
    assert 'id="claims"' in page and "verdict-" in page
    assert len(rep.data["claims"]["tests"]) == 2
    res = CliRunner().invoke(cli, ["report", "--db", str(db), "--by", "bias_correction",
                                   "--claims", str(claims), "--resamples", "300",
                                   "--out", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "c.html").read_text()
    blob = re.search(r'id="stabstat-data">(.*?)</script>', page, re.S)
    assert blob is not None
    assert json.loads(blob.group(1))["claims"]["settings"]["resamples"] == 300  # explicit wins


@pytest.mark.slow
def test_selection_options_reach_the_report(db: Path) -> None:
    rep = _build(db, by="bias_correction", selection=Selection(filters=("n_train=1000",)))
    assert dict(rep.provenance)["runs"].startswith("12 analysed")
    assert "n_train=1000" in dict(rep.provenance)["selection"]
    # n_train no longer varies: no failure-vs-size chart
    assert "failure-vs-size" not in [f.id for f in rep.figures]
    rep = _build(db, by="bias_correction", selection=Selection(baseline=0.6))
    assert "0.6" in dict(rep.provenance)["failure rule"]


@pytest.mark.slow
def test_default_by_and_its_errors(db: Path) -> None:
    from stabstat.errors import SelectionError

    with pytest.raises(SelectionError, match=r"several factors vary .*bias_correction, n_train"):
        _build(db)
    rep = _build(db, selection=Selection(filters=("n_train=1000",)))
    assert "bias_correction" in rep.title


@pytest.mark.slow
def test_many_runs_switch_loss_curves_to_bands(db: Path) -> None:
    rep = _build(db, by="n_train", max_runs_drawn=5, only=["loss-curves"])
    (fig,) = rep.figures
    spec = fig.spec()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["area", "line"]


@pytest.mark.slow
def test_chart_command_exports(db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for kind, name in [("metric-by-config", "fig1.png"), ("layer-gradients", "g.svg"),
                       ("forest", "f.json"), ("failure-vs-size", "s.png")]:
        out = tmp_path / name
        res = runner.invoke(cli, ["chart", kind, "--db", str(db), "--by", "bias_correction",
                                  "--resamples", "400", "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 500
    assert (tmp_path / "fig1.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<svg")
    assert "layer" in json.loads((tmp_path / "f.json").read_text())
    res = runner.invoke(cli, ["chart", "forest", "--db", str(db), "--by", "bias_correction",
                              "--out", str(tmp_path / "f.gif")])
    assert res.exit_code == 2 and "use .png, .svg or .json" in res.output
    res = runner.invoke(cli, ["report", "--db", str(db), "--by", "nope",
                              "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "unknown factor 'nope'" in res.output


@pytest.mark.slow
def test_several_tasks_get_panels_and_per_task_statistics(tmp_path: Path) -> None:
    from report_fixtures import make_runs

    runs = tmp_path / "runs"
    make_runs(runs, seeds=4, steps=20, task="rte")
    make_runs(runs, seeds=4, steps=20, task="mrpc")
    db = tmp_path / "two.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [runs]).ok
    rep = _build(db, by="bias_correction")
    assert rep.summary is not None and rep.summary.columns[0] == "task"
    assert [(r[0], r[1]) for r in rep.summary.rows] == [
        ("mrpc", "false"), ("mrpc", "true"), ("rte", "false"), ("rte", "true")]
    fig1 = rep.figures[0].spec()
    assert [p["title"] for p in fig1["hconcat"]] == ["mrpc", "rte"]
    assert [c["task"] for c in rep.data["compare"]] == ["mrpc", "rte"]
    forest = next(f for f in rep.figures if f.id == "forest").spec()
    labels = [r["label"] for rows in forest["datasets"].values() for r in rows if "label" in r]
    assert labels == ["mrpc: false \u2212 true", "rte: false \u2212 true"]
    assert "2 tasks (mrpc, rte), analysed separately" in rep.methods


@pytest.mark.slow
def test_chart_function_for_notebooks(db: Path) -> None:
    from stabstat.errors import SelectionError

    with Store.open(db) as store:
        ch = R.chart(store, "layer-gradients", by="bias_correction")
        assert ch.to_dict()["facet"]["field"] == "layer"
        with pytest.raises(SelectionError, match="unknown chart 'nope'"):
            R.chart(store, "nope")


@pytest.mark.slow
def test_diverged_and_unevaluated_runs_do_not_break_the_report(tmp_path: Path) -> None:
    from report_fixtures import MAJORITY, make_runs

    from runner.logwriter import RunLogger

    runs = tmp_path / "runs"
    make_runs(runs, seeds=3, steps=20, grad_every=2)
    task = {"majority": {"accuracy": MAJORITY}}
    with RunLogger(runs, "diverged", {"task": "rte", "seed": 99, "bias_correction": False},
                   task=task) as log:
        for step in range(1, 11):
            log.log_step(step, loss=0.7 if step < 6 else float("inf"))
        log.log_eval(10, "dev", {"accuracy": MAJORITY})
    with RunLogger(runs, "no-evals", {"task": "rte", "seed": 98, "bias_correction": True},
                   task=task) as log:
        log.log_step(1, loss=0.7)
    db = tmp_path / "edge.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [runs]).ok
    rep = _build(db, by="bias_correction")
    assert rep.summary is not None
    counts = {r[0]: (int(r[1]), int(r[2])) for r in rep.summary.rows}
    # the diverged run and the run without a dev value both count as failed
    assert counts["false"][0] == 4 and counts["true"][0] == 4
    page = rep.to_html(bundle="")
    assert "NaN" not in re.search(r'id="stabstat-specs">(.*?)</script>', page, re.S).group(1)
    loss = next(f for f in rep.figures if f.id == "loss-curves").spec()
    diverged = [r for rows in loss["datasets"].values() for r in rows
                if r.get("run_id") == "diverged"]
    assert diverged and max(r["step"] for r in diverged) < 6
