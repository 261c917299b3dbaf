"""The report's faster paths (issue 18, third pass) against independent references.

* :func:`stabstat.chartdata.layer_gradients_data` and the loss bands of
  :func:`stabstat.chartdata.loss_curves_data` (integer run keys, the largest step from the
  table's statistics when every run is selected) = numpy over the raw rows, for the whole
  store and for a subset whose largest step is smaller than the store's;
* the collapse table's per-run norms (one aggregate per run; the total-norm query only for
  runs without layer rows) = numpy over the raw rows, with runs of both kinds;
* the report's prefetch (chart data computed in a worker thread meanwhile) = the sequential
  context, result for result; an error of a worker job reaches the caller as it would
  sequentially, and a failure of the statistics stops the worker.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_run

from stabstat import chartdata
from stabstat.analysis import Selection, Settings, select_runs
from stabstat.analysis.gradients import gradients_frame
from stabstat.errors import QueryError
from stabstat.ingest import ingest
from stabstat.store import Store, fetch_frame

LAYERS = ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine runs of 30 to 97 steps, three configurations; two runs log no layer norms (their
    total grad_norm stands in), one logs them every third step only."""
    tmp = tmp_path_factory.mktemp("fast")
    runs = tmp / "runs"
    specs = [  # (run id, steps, layers, grad_every, accuracy)
        ("a0", 97, LAYERS, 1, 0.80), ("a1", 60, LAYERS, 1, 0.52), ("a2", 45, LAYERS, 3, 0.77),
        ("b0", 30, LAYERS, 1, 0.51), ("b1", 64, LAYERS, 1, 0.79), ("b2", 80, None, 1, 0.74),
        ("c0", 50, LAYERS, 1, 0.70), ("c1", 33, None, 1, 0.50), ("c2", 71, LAYERS, 2, 0.81),
    ]
    for i, (rid, n, layers, every, acc) in enumerate(specs):
        write_run(runs, rid, config={"task": "rte", "seed": i, "recipe": rid[0]}, n_steps=n,
                  layers=layers, grad_every=every, evals={n: {"accuracy": acc}},
                  task={"majority": {"accuracy": 0.6}}, seed=i)
    db = tmp / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [runs]).ok
    return db


def _runs_frame(store: Store, ids: list[str] | None = None) -> pl.DataFrame:
    rs = select_runs(store, ["recipe"])
    frame = rs.frame.select("run_id", pl.col("recipe").alias("config"),
                            pl.col("failed").fill_null(False))
    return frame if ids is None else frame.filter(pl.col("run_id").is_in(ids))


def _quantiles(x: list[float], qs: tuple[float, ...]) -> list[float]:
    # numpy's default (linear) interpolation is DuckDB's quantile_cont
    return [float(v) for v in np.quantile(np.asarray(x), qs)]


def _grad_reference(raw: pl.DataFrame, runs: pl.DataFrame, points: int) -> dict[tuple, list[float]]:
    """(status, layer, bucket start) -> [q25, median, q75, runs] from the raw layer rows."""
    raw = raw.join(runs, on="run_id", how="inner")
    w = max(1, math.ceil(raw["step"].max() / points))
    per_run: dict[tuple, list[float]] = {}
    for r in raw.iter_rows(named=True):
        if r["grad_norm"] > 0 and math.isfinite(r["grad_norm"]):
            key = ("failed" if r["failed"] else "successful", r["layer"], r["run_id"],
                   (r["step"] - 1) // w * w + 1)
            per_run.setdefault(key, []).append(math.log(r["grad_norm"]))
    cells: dict[tuple, list[float]] = {}
    for (status, layer, _, step), logs in per_run.items():
        cells.setdefault((status, layer, step), []).append(math.exp(sum(logs) / len(logs)))
    return {k: [*_quantiles(v, (0.25, 0.5, 0.75)), len(v)] for k, v in cells.items()}


@pytest.mark.parametrize("subset", [None, ["a1", "a2", "b0", "b1", "c0", "c2"]])
@pytest.mark.parametrize("points", [7, 100])
def test_layer_gradients_data_equals_numpy(mixed_db: Path, subset: list[str] | None, points: int) -> None:
    with Store.open(mixed_db) as store:
        runs = _runs_frame(store, subset)
        got = chartdata.layer_gradients_data(store, runs, points=points)
        raw = fetch_frame(store.con, "SELECT run_id, step, layer, grad_norm FROM layer_grads")
    want = _grad_reference(raw, runs, points)
    assert got.height == len(want) > 0
    for r in got.iter_rows(named=True):
        q25, med, q75, n = want[(r["status"], r["layer"], r["step"])]
        assert r["runs"] == n
        assert r["q25"] == pytest.approx(q25, rel=1e-12)
        assert r["median"] == pytest.approx(med, rel=1e-12)
        assert r["q75"] == pytest.approx(q75, rel=1e-12)
    # the subset's largest layer step (70, c2) is below the store's (97, a0): the buckets
    # follow the selected runs (width 10, not 14)
    if points == 7:
        width = 14 if subset is None else 10
        assert sorted(set(got["step"])) == [1 + width * b for b in range(7)]


@pytest.mark.parametrize("subset", [None, ["a1", "a2", "b0", "b1", "b2", "c0", "c1"]])
def test_loss_bands_equal_numpy(mixed_db: Path, subset: list[str] | None) -> None:
    with Store.open(mixed_db) as store:
        runs = _runs_frame(store, subset)
        got = chartdata.loss_curves_data(store, runs, points=10, max_runs=2)
        raw = fetch_frame(store.con, "SELECT run_id, step, loss FROM steps").join(runs, on="run_id")
    assert "q10" in got.columns
    w = max(1, math.ceil(raw["step"].max() / 10))
    per_run: dict[tuple, list[float]] = {}
    for r in raw.iter_rows(named=True):
        key = (r["config"], "failed" if r["failed"] else "successful", r["run_id"],
               (r["step"] - 1) // w * w + 1)
        per_run.setdefault(key, []).append(r["loss"])
    cells: dict[tuple, list[float]] = {}
    for (config, status, _, step), losses in per_run.items():
        cells.setdefault((config, status, step), []).append(sum(losses) / len(losses))
    assert got.height == len(cells)
    for r in got.iter_rows(named=True):
        vals = cells[(r["config"], r["status"], r["step"])]
        q10, med, q90 = _quantiles(vals, (0.1, 0.5, 0.9))
        assert r["runs"] == len(vals)
        assert (r["q10"], r["median"], r["q90"]) == pytest.approx((q10, med, q90), rel=1e-12)


def test_collapse_norms_equal_numpy_with_and_without_layer_rows(mixed_db: Path) -> None:
    with Store.open(mixed_db) as store:
        runset = select_runs(store, [])
        res = gradients_frame(store, runset, settings=Settings(resamples=200), per_layer=False,
                              ratio_test=False)
        lg = fetch_frame(store.con, "SELECT run_id, step, depth, grad_norm FROM layer_grads")
        st = fetch_frame(store.con, "SELECT run_id, step, grad_norm FROM steps")
        # only layer runs selected: the total-norm query is skipped, the rows are the same
        lean = gradients_frame(store, select_runs(store, [], selection=Selection(
            where="run_id NOT IN ('b2', 'c1')")), settings=Settings(resamples=200),
            per_layer=False, ratio_test=False)
    rows = {r.run_id: r for r in res.sections["runs"]}
    assert set(rows) == {"a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"}
    for rid, row in rows.items():
        mine = lg.filter((pl.col("run_id") == rid) & (pl.col("depth") <= 2))
        if mine.height:
            per_step = mine.group_by("step").agg((pl.col("grad_norm") ** 2).sum().sqrt().alias("n")).sort("step")
            norms, source = per_step["n"].to_numpy(), "layers"
        else:
            norms, source = st.filter(pl.col("run_id") == rid).sort("step")["grad_norm"].to_numpy(), "total"
        assert row.source == source and row.n_steps == norms.size
        assert row.first_norm == pytest.approx(norms[0], rel=1e-12)
        assert row.median_norm == pytest.approx(float(np.median(norms)), rel=1e-12)
    assert res.warnings.count("2 run(s) have no per-layer norms: their total grad_norm is used") == 1
    lean_rows = {r.run_id: r for r in lean.sections["runs"]}
    assert set(lean_rows) == set(rows) - {"b2", "c1"}
    assert all(lean_rows[k] == rows[k] for k in lean_rows)
    assert not any("total grad_norm" in w for w in lean.warnings)


def _ctx(store: Store, *, prefetch: bool, only: list[str] | None = None):  # type: ignore[no-untyped-def]
    from stabstat.report.context import build_context

    return build_context(store, by="recipe", selection=None, settings=Settings(resamples=300),
                         only=only, loss_points=10, prefetch=prefetch)


def test_prefetch_gives_the_sequential_results(mixed_db: Path) -> None:
    with Store.open(mixed_db) as store:
        seq = _ctx(store, prefetch=False)
        assert seq.prefetch is None
        want = (seq.loss_curves(), seq.layer_gradients, seq.gradient_collapse().to_dict())
        par = _ctx(store, prefetch=True)
        try:
            assert par.prefetch is not None
            assert {"loss_curves", "layer_gradients", "gradient_collapse"} <= set(par.prefetch._futures)
            got = (par.loss_curves(), par.layer_gradients, par.gradient_collapse().to_dict())
        finally:
            par.close()
        assert got[0].equals(want[0]) and got[1].equals(want[1]) and got[2] == want[2]
        assert [c.stats for c in par.config_groups] == [c.stats for c in seq.config_groups]
        assert par.levels == seq.levels and par.warnings == seq.warnings
        # only the wanted figures' data are prefetched
        one = _ctx(store, prefetch=True, only=["loss-curves"])
        one.close()
        assert one.prefetch is not None and set(one.prefetch._futures) == {"loss_curves"}


def _report_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stabstat-report")]


def test_prefetch_error_reaches_the_caller(mixed_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stabstat.report import build_report

    def broken(*args: object, **kwargs: object) -> pl.DataFrame:
        raise QueryError("layer_grads: broken on purpose")

    monkeypatch.setattr(chartdata, "layer_gradients_data", broken)
    with Store.open(mixed_db) as store:
        with pytest.raises(QueryError, match="broken on purpose"):
            build_report(store, by="recipe", settings=Settings(resamples=300))
        assert not _report_threads()
        # the statistics fail while the worker runs: it is stopped before the error leaves
        from stabstat.report import context

        def failing(*args: object, **kwargs: object) -> None:
            raise QueryError("compare: broken on purpose")

        monkeypatch.setattr(context, "_compare_per_task", failing)
        with pytest.raises(QueryError, match="compare: broken"):
            _ctx(store, prefetch=True)
        assert not _report_threads()
