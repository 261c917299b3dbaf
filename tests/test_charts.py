"""Chart specs carry the fields and encodings each view needs (not pixel tests), and the
DuckDB aggregation behind the big charts follows its documented bucketing rule."""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import polars as pl
import pytest

from stabstat import chartdata, charts
from stabstat.errors import SelectionError


def _runs() -> pl.DataFrame:
    rows = []
    for panel in ["rte", "mrpc"]:
        for cfg in ["devlin", "ours"]:
            for s in range(6):
                failed = cfg == "devlin" and s < 2
                rows.append({
                    "panel": panel, "config": cfg, "run_id": f"{panel}-{cfg}-{s}",
                    "value": 0.53 if failed else 0.70 + 0.01 * s, "failed": failed,
                    "majority": 0.53,
                })
    return pl.DataFrame(rows)


def _groups(runs: pl.DataFrame) -> pl.DataFrame:
    return runs.group_by("panel", "config", maintain_order=True).agg(
        point=pl.col("value").mean(), ci_low=pl.col("value").min(), ci_high=pl.col("value").max()
    )


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """All unit specs (those with a mark) anywhere in a composed spec."""
    out = []
    if "mark" in spec:
        out.append(spec)
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            out += _layers(sub)
    if "spec" in spec:
        out += _layers(spec["spec"])
    return out


def _mark(layer: dict[str, Any]) -> str:
    m = layer["mark"]
    return m if isinstance(m, str) else m["type"]


def _rows(spec: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``node``'s data: inline, or a named entry of the spec's ``datasets``."""
    data = node["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def _data_rows(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    found = list(spec.get("datasets", {}).values())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "values" in node and isinstance(node["values"], list):
                found.append(node["values"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found


def test_metric_by_config_figure1_layers() -> None:
    runs = _runs()
    spec = charts.spec(charts.metric_by_config(runs, _groups(runs), metric="dev accuracy"))
    assert len(spec["hconcat"]) == 2  # one panel per task
    panel = spec["hconcat"][0]
    assert panel["title"] == "rte"
    marks = [_mark(layer) for layer in panel["layer"]]
    assert marks == ["boxplot", "point", "rule", "tick", "rule"]
    points = panel["layer"][1]["encoding"]
    assert points["x"]["field"] == "config" and points["y"]["field"] == "value"
    assert points["xOffset"]["field"] == "jitter"
    # failed runs are marked by both colour and shape
    assert points["shape"]["field"] == "status" and points["color"]["field"] == "status"
    assert points["color"]["scale"]["domain"] == ["successful", "failed"]
    ci = panel["layer"][2]["encoding"]
    assert ci["y"]["field"] == "ci_low" and ci["y2"]["field"] == "ci_high"
    majority = panel["layer"][4]
    assert majority["encoding"]["y"]["field"] == "majority"
    assert _rows(spec, majority) == [{"majority": 0.53}]
    rows = _rows(spec, panel)
    assert len(rows) == 12
    assert sum(r["status"] == "failed" for r in rows) == 2
    assert all(-0.45 <= r["jitter"] <= 0.45 for r in rows)
    # the configuration order is the order given, and the x axis does not rotate labels
    assert points["x"]["sort"] == ["devlin", "ours"]


def test_metric_by_config_without_groups_or_panels() -> None:
    runs = _runs().filter(pl.col("panel") == "rte").drop("panel", "majority")
    spec = charts.spec(charts.metric_by_config(runs, order=["ours", "devlin"]))
    assert [_mark(x) for x in spec["layer"]] == ["boxplot", "point"]
    assert spec["layer"][1]["encoding"]["x"]["scale"]["domain"] == ["ours", "devlin"]


def test_jitter_is_stable_and_rng_free() -> None:
    a = charts.spec(charts.metric_by_config(_runs()))
    b = charts.spec(charts.metric_by_config(_runs().reverse()))
    ja = {r["run_id"]: r["jitter"] for rows in _data_rows(a) for r in rows if "jitter" in r}
    jb = {r["run_id"]: r["jitter"] for rows in _data_rows(b) for r in rows if "jitter" in r}
    assert ja == jb and len(set(ja.values())) > 10


def test_same_frame_same_json() -> None:
    runs = _runs()
    one = json.dumps(charts.spec(charts.metric_by_config(runs, _groups(runs))), sort_keys=True)
    two = json.dumps(charts.spec(charts.metric_by_config(runs, _groups(runs))), sort_keys=True)
    assert one == two


def test_inline_data_rounds_and_nulls_non_finite() -> None:
    frame = pl.DataFrame({"a": [1 / 3, math.nan, math.inf, 0.0, 123456789.123], "b": [1, 2, 3, 4, 5]})
    rows = charts.inline_data(frame)["values"]
    assert [r["a"] for r in rows] == [0.333333, None, None, 0.0, 123457000.0]
    assert [r["b"] for r in rows] == [1, 2, 3, 4, 5]


def test_missing_columns_name_the_chart_and_the_fix() -> None:
    with pytest.raises(SelectionError, match=r"metric_by_config.*lacks column\(s\) failed"):
        charts.metric_by_config(_runs().drop("failed"))
    with pytest.raises(SelectionError, match="no rows"):
        charts.metric_by_config(_runs().head(0))


def _rates(levels: list[Any]) -> pl.DataFrame:
    return pl.DataFrame({
        "level": levels, "n": [25] * len(levels), "failures": [10, 5, 1][: len(levels)],
        "rate": [0.4, 0.2, 0.04][: len(levels)], "ci_low": [0.23, 0.09, 0.007][: len(levels)],
        "ci_high": [0.59, 0.39, 0.2][: len(levels)],
    })


def test_failure_rate_error_bars() -> None:
    spec = charts.spec(charts.failure_rate(_rates(["off", "on"]), factor="bias_correction"))
    marks = [_mark(x) for x in spec["layer"]]
    assert "errorbar" in marks and "point" in marks
    err = spec["layer"][marks.index("errorbar")]["encoding"]
    assert err["y"]["field"] == "ci_low" and err["y2"]["field"] == "ci_high"
    assert spec["layer"][0]["encoding"]["x"]["title"] == "bias_correction"
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == [0, 1]


def test_failure_rate_vs_n_train_log_axis() -> None:
    spec = charts.spec(charts.failure_rate_vs(_rates([1000, 2000, 5000])))
    enc = spec["layer"][0]["encoding"]
    assert enc["x"]["field"] == "level" and enc["x"]["type"] == "quantitative"
    assert enc["x"]["scale"]["type"] == "log"
    assert enc["x"]["axis"]["values"] == [1000, 2000, 5000]
    with pytest.raises(SelectionError, match="not numeric"):
        charts.failure_rate_vs(_rates(["a", "b"]))
    with pytest.raises(SelectionError, match="log axis"):
        charts.failure_rate_vs(_rates([0, 10]))


def _grads() -> pl.DataFrame:
    rows = []
    for status in ["failed", "successful"]:
        for depth, layer in enumerate(["embeddings", "encoder.layer.0", "classifier"]):
            for step in range(1, 200, 20):
                m = 1e-3 if status == "failed" and depth < 2 and step > 40 else 1.0
                rows.append({"status": status, "layer": layer, "depth": depth, "step": step,
                             "median": m, "q25": m / 2, "q75": 2 * m, "runs": 4})
    return pl.DataFrame(rows)


def test_layer_gradients_small_multiples_log_scale() -> None:
    spec = charts.spec(charts.layer_gradients(_grads()))
    assert spec["facet"]["field"] == "layer"
    assert spec["facet"]["sort"] == ["embeddings", "encoder.layer.0", "classifier"]  # by depth
    layers = spec["spec"]["layer"]
    line = [x for x in layers if _mark(x) == "line"][0]["encoding"]
    assert line["y"]["scale"]["type"] == "log" and line["x"]["field"] == "step"
    assert line["color"]["field"] == "status"
    assert any(_mark(x) == "area" for x in layers)  # inter-quartile band


def test_layer_gradients_heatmap() -> None:
    spec = charts.spec(charts.layer_gradients_heatmap(_grads()))
    enc = spec["spec"]["encoding"]
    assert spec["spec"]["mark"]["type"] == "rect"
    assert enc["color"]["scale"]["type"] == "log"
    assert enc["y"]["field"] == "layer" and enc["x"]["field"] == "step"
    assert spec["facet"]["column"]["field"] == "status"


def test_metric_vs_loss_distinguishes_failed() -> None:
    frame = _runs().with_columns(
        train_loss=pl.when(pl.col("failed")).then(0.69).otherwise(0.002)
    )
    spec = charts.spec(charts.metric_vs_loss(frame))
    pts = spec["layer"][0]["encoding"]
    assert pts["x"]["field"] == "train_loss" and pts["y"]["field"] == "value"
    assert pts["shape"]["field"] == "status"
    assert pts["x"]["scale"]["type"] == "log"  # losses span > 20x
    assert spec["layer"][1]["encoding"]["y"]["field"] == "majority"


def test_loss_curves_and_bands() -> None:
    rows = [{"run_id": f"r{r}", "config": "c", "failed": r == 0, "step": s, "loss": 0.7 - s / 1e3}
            for r in range(3) for s in range(1, 100, 10)]
    spec = charts.spec(charts.loss_curves(pl.DataFrame(rows)))
    enc = spec["encoding"]
    assert enc["detail"]["field"] == "run_id" and enc["color"]["field"] == "config"
    assert enc["strokeDash"]["field"] == "status"
    # legend-bound highlight, with a fixed name so two builds give the same JSON
    assert spec["params"][0]["name"] == "pick_config"
    assert spec["params"][0]["bind"] == "legend"
    assert charts.spec(charts.loss_curves(pl.DataFrame(rows))) == spec
    bands = pl.DataFrame({"config": ["c"] * 4, "status": ["failed", "failed", "successful",
                                                          "successful"],
                          "step": [1, 11, 1, 11], "q10": [0.5] * 4, "median": [0.6] * 4,
                          "q90": [0.7] * 4, "runs": [3] * 4})
    spec = charts.spec(charts.loss_bands(bands))
    assert [_mark(x) for x in spec["layer"]] == ["area", "line"]
    assert spec["layer"][0]["encoding"]["y2"]["field"] == "q90"


def test_forest_plot() -> None:
    frame = pl.DataFrame({"label": ["ours - devlin", "lee - devlin"], "estimate": [0.1, 0.02],
                          "ci_low": [0.05, -0.01], "ci_high": [0.15, 0.05],
                          "significant": [True, False]})
    spec = charts.spec(charts.forest(frame))
    marks = [_mark(x) for x in spec["layer"]]
    assert marks == ["rule", "rule", "point"]
    assert spec["layer"][0]["encoding"]["x"]["field"] == "zero"
    rule = spec["layer"][1]["encoding"]
    assert rule["x"]["field"] == "ci_low" and rule["x2"]["field"] == "ci_high"
    assert rule["y"]["sort"] == ["ours - devlin", "lee - devlin"]


def test_save_formats(tmp_path: Any) -> None:
    chart = charts.forest(pl.DataFrame({"label": ["a - b"], "estimate": [0.1], "ci_low": [0.0],
                                        "ci_high": [0.2]}))
    charts.save(chart, str(tmp_path / "f.svg"))
    charts.save(chart, str(tmp_path / "f.png"))
    charts.save(chart, str(tmp_path / "f.json"))
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<svg")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "f.json").read_text())["layer"]
    with pytest.raises(SelectionError, match="unknown chart format"):
        charts.save(chart, str(tmp_path / "f.gif"))


# ---------------------------------------------------------------- DuckDB aggregation


@pytest.fixture()
def con() -> Any:
    c = duckdb.connect()
    # 30 runs x 1000 steps; every third run "fails" (flat loss, vanishing lower-layer grads);
    # run 1 diverges at step 500 (inf loss) - its non-finite steps must be left out.
    c.execute("""
        CREATE TABLE steps AS
        SELECT 'r' || lpad(r::VARCHAR, 2, '0') AS run_id, s::BIGINT AS step,
               CASE WHEN r = 1 AND s >= 500 THEN 'inf'::DOUBLE
                    WHEN r % 3 = 0 THEN 0.69 ELSE 0.69 * exp(-s / 200.0) END AS loss
        FROM range(30) t(r), range(1, 1001) u(s)
    """)
    c.execute("""
        CREATE TABLE layer_grads AS
        SELECT 'r' || lpad(r::VARCHAR, 2, '0') AS run_id, s::BIGINT AS step,
               'encoder.layer.' || d AS layer, (d + 1)::INT AS depth,
               (CASE WHEN r % 3 = 0 AND s > 100 THEN 1e-3 ELSE 1.0 END) * (d + 1) AS grad_norm
        FROM range(30) t(r), range(1, 1001, 5) u(s), range(3) v(d)
    """)
    yield c
    c.close()


def _selection(n: int) -> pl.DataFrame:
    return pl.DataFrame({"run_id": [f"r{r:02d}" for r in range(n)],
                         "config": [f"c{r % 2}" for r in range(n)],
                         "failed": [r % 3 == 0 for r in range(n)]})


def test_bucket_width() -> None:
    assert chartdata.bucket_width(2000, 200) == 10
    assert chartdata.bucket_width(2001, 200) == 11
    assert chartdata.bucket_width(50, 200) == 1
    assert chartdata.bucket_width(None, 200) == 1


def test_loss_curves_data_matches_polars_reference(con: Any) -> None:
    sel = _selection(10)
    got = chartdata.loss_curves_data(con, sel, points=100, row_budget=10_000)
    w = chartdata.bucket_width(1000, 100)
    raw = pl.from_arrow(con.sql("SELECT * FROM steps").to_arrow_table())
    assert isinstance(raw, pl.DataFrame)
    want = (
        raw.filter(pl.col("run_id").is_in(sel["run_id"].to_list()) & pl.col("loss").is_finite())
        .with_columns(step=((pl.col("step") - 1) // w) * w + 1)
        .group_by("run_id", "step").agg(pl.col("loss").mean())
        .sort("run_id", "step")
    )
    assert got.columns == ["run_id", "config", "failed", "step", "loss"]
    assert got.height == want.height <= 10 * 100
    assert got["step"].to_list() == want["step"].to_list()
    assert got["loss"].to_list() == pytest.approx(want["loss"].to_list(), rel=1e-12)
    # the diverged run keeps its finite part only
    assert got.filter(pl.col("run_id") == "r01")["step"].max() < 500


def test_loss_curves_data_respects_row_budget(con: Any) -> None:
    got = chartdata.loss_curves_data(con, _selection(30), points=200, row_budget=600)
    # 600 rows / 30 runs = 20 points per run (the floor)
    assert got.group_by("run_id").len()["len"].max() == 20


def test_loss_curves_switch_to_bands_over_max_runs(con: Any) -> None:
    got = chartdata.loss_curves_data(con, _selection(30), points=50, max_runs=10)
    assert set(got.columns) == {"config", "status", "step", "q10", "median", "q90", "runs"}
    assert got.select("config", "status").unique().height == 4
    assert (got["q10"] <= got["median"]).all() and (got["median"] <= got["q90"]).all()
    assert got.group_by("config", "status").len()["len"].max() == 50
    failed = got.filter(pl.col("status") == "failed")
    assert failed["median"].to_list() == pytest.approx([0.69] * failed.height)


def test_layer_gradients_data_quantiles(con: Any) -> None:
    got = chartdata.layer_gradients_data(con, _selection(30), points=10)
    assert got.columns == ["status", "layer", "depth", "step", "q25", "median", "q75", "runs"]
    assert got.select("status", "layer").unique().height == 6
    late_failed = got.filter((pl.col("status") == "failed") & (pl.col("step") > 200)
                             & (pl.col("layer") == "encoder.layer.0"))
    assert late_failed["median"].to_list() == pytest.approx([1e-3] * late_failed.height)
    assert got.filter(pl.col("status") == "failed")["runs"].max() == 10
    # deterministic order
    assert got.equals(chartdata.layer_gradients_data(con, _selection(30), points=10))


def test_chartdata_needs_run_columns(con: Any) -> None:
    with pytest.raises(SelectionError, match="lacks failed"):
        chartdata.loss_curves_data(con, _selection(3).drop("failed"))
