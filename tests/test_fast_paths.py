"""The faster paths of issue 18 against independent references.

* bootstrap count matrices counted in column blocks = one plain ``np.bincount`` of the same draws;
* ``run_training.train_loss_final`` (a top-10 per run in the aggregate) = numpy's mean of the
  last 10 logged losses;
* the gradients' loss windows (``min_by``/``max_by``) = numpy's means of the first/last k losses;
* :func:`gradients_frame` without the per-layer section and the ratio bootstrap (what the report
  runs) = :func:`gradients` on every row it keeps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import write_run

from stabstat.analysis import Selection, Settings, select_runs
from stabstat.analysis.gradients import gradients, gradients_frame
from stabstat.analysis.results import CollapseVsFailure
from stabstat.ingest import ingest
from stabstat.stats.resampling import _draw_counts
from stabstat.store import Store


def _plain_counts(rng: np.random.Generator, resamples: int, n: int | list[int]) -> np.ndarray:
    """The unblocked reference: every draw counted by one bincount (the code before issue 18)."""
    sizes = [n] if isinstance(n, int) else list(n)
    total = sum(sizes)
    if len(set(sizes)) == 1:
        idx = rng.integers(0, sizes[0], size=(len(sizes), sizes[0], resamples))
        idx += (np.arange(len(sizes)) * sizes[0])[:, None, None]
    else:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        idx = np.concatenate([rng.integers(0, m, size=(m, resamples)) + offsets[t] for t, m in enumerate(sizes)])
    idx = idx.reshape(total, resamples) * resamples + np.arange(resamples)
    return np.bincount(idx.ravel(), minlength=resamples * total).reshape(total, resamples)


@pytest.mark.parametrize("n", [1, 7, 300, [3, 3, 3], [10, 20, 5]])
@pytest.mark.parametrize("resamples", [1, 255, 256, 1000, 1537])
def test_blocked_counts_equal_one_bincount(n, resamples):
    got = _draw_counts(np.random.default_rng(5), resamples, n)
    want = _plain_counts(np.random.default_rng(5), resamples, n)
    assert got.dtype == np.int16 and got.shape == want.shape
    assert np.array_equal(got, want)
    assert np.all(got.sum(axis=0) == (n if isinstance(n, int) else sum(n)))


@pytest.fixture
def loss_db(tmp_path):
    """Runs with 3 to 60 logged losses (one with a NaN), ingested into a real store."""
    rng = np.random.default_rng(3)
    losses = {}
    for i, n in enumerate([3, 4, 9, 17, 40, 60]):
        ls = [float(x) for x in 0.7 * np.exp(-np.arange(n) / 20) + 0.05 * rng.random(n)]
        if n == 17:
            ls[-3] = float("nan")
        losses[f"r{i}"] = ls
        write_run(tmp_path / "runs", f"r{i}", config={"seed": i, "bc": bool(i % 2)}, losses=ls,
                  evals={n: {"accuracy": 0.5 + 0.05 * i}}, task={"majority": {"accuracy": 0.6}}, seed=i)
    db = tmp_path / "x.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, tmp_path / "runs").ok
    return db, losses


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)


def test_train_loss_final_is_the_mean_of_the_last_ten(loss_db):
    db, losses = loss_db
    with Store.open(db) as store:
        rows = dict(store.con.execute("SELECT run_id, train_loss_final FROM run_training").fetchall())
    for run_id, ls in losses.items():
        assert _close(rows[run_id], float(np.mean(ls[-10:]))), run_id


def test_gradient_loss_windows_and_report_variant(loss_db):
    db, losses = loss_db
    with Store.open(db) as store:
        full = gradients(store, settings=Settings(resamples=200))
        runs = {r.run_id: r for r in full.sections["runs"]}
        for run_id, ls in losses.items():
            k = max(1, min(10, len(ls) // 4))
            assert _close(runs[run_id].loss_start, float(np.mean(ls[:k]))), run_id
            assert _close(runs[run_id].loss_end, float(np.mean(ls[-k:]))), run_id
        # what the report runs: the selection it already has, no per-layer section, no bootstrap
        runset = select_runs(store, ["bc"], selection=Selection())
        lean = gradients_frame(store, runset, settings=Settings(resamples=200), per_layer=False, ratio_test=False)
    # repr: equal rows, NaN (a run with a NaN loss) equal to NaN
    assert repr(lean.groups) == repr(full.groups)
    assert repr(lean.sections["runs"]) == repr(full.sections["runs"])
    assert lean.sections["layers"] == [] and full.sections["layers"] != []
    assert [t for t in full.tests if isinstance(t, CollapseVsFailure)] == lean.tests
