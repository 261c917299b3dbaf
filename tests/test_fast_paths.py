"""The faster paths of issue 18 against independent references.

* bootstrap count matrices counted in column blocks = one plain ``np.bincount`` of the same draws;
* ``run_training.train_loss_final`` (a top-10 per run in the aggregate) = numpy's mean of the
  last 10 logged losses;
* the gradients' loss windows (``min_by``/``max_by``) = numpy's means of the first/last k losses;
* :func:`gradients_frame` without the per-layer section and the ratio bootstrap (what the report
  runs) = :func:`gradients` on every row it keeps;
* the probability of improvement from sorted prefix counts = the pairwise kernel per resample,
  bit for bit (estimate and BCa bounds, with ties);
* ``fetch_frame`` through the Arrow C stream = ``pl.from_arrow`` of pyarrow's table (every column
  type the store uses), and a ``compare`` process never imports pyarrow.
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


def _poi_pairwise(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray, confidence: float = 0.95):
    """The pairwise-kernel reference (the code before the sorted prefix sums): estimate, BCa bounds."""
    from stabstat.stats.resampling import _intervals, _jackknife_counts

    xa, xb = np.sort(a), np.sort(b)
    na, nb = xa.size, xb.size
    kernel = (xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])

    def stat(ka, kb, ta, tb):
        return np.einsum("jr,jr->r", kernel.T @ ka.astype(np.float64), kb) / (ta * tb)

    theta_b = stat(ca, cb, na, nb)[None, :]
    jack = [stat(_jackknife_counts(na), np.ones((nb, na)), na - 1, nb)[None, :],
            stat(np.ones((na, nb)), _jackknife_counts(nb), na, nb - 1)[None, :]]
    low, high, _, _ = _intervals(np.array([kernel.mean()]), theta_b, jack, "bca", confidence)
    return float(kernel.mean()), float(low[0]), float(high[0])


@pytest.mark.parametrize("na,nb,decimals", [(2, 3, 0), (10, 10, 1), (37, 50, 2), (50, 50, 6), (13, 40, 0)])
def test_probability_of_improvement_equals_pairwise_kernel(na, nb, decimals):
    # Rounded values give many ties (the 1/2 of the kernel); the results must be bit-identical.
    rng = np.random.default_rng(na * 100 + nb)
    a = np.round(rng.normal(0.2, 1, na), decimals)
    b = np.round(rng.normal(0.0, 1, nb), decimals)
    ca, cb = _draw_counts(rng, 2000, na), _draw_counts(rng, 2000, nb)
    from stabstat import stats as S

    got = S.probability_of_improvement(a, b, method="bca", resamples=2000, _counts=(ca, cb))
    est, low, high = _poi_pairwise(a, b, ca, cb)
    assert got.method == "bca"
    assert (got.estimate, got.ci_low, got.ci_high) == (est, low, high)


_TYPED_SQL = """
SELECT r AS i, r::SMALLINT AS small, r * 1.5 AS d, 'run' || r AS s, [r, r + 1] AS l,
       '{"a": 1}'::JSON AS j, CASE WHEN r % 2 = 0 THEN NULL ELSE r END AS n,
       TIMESTAMP '2026-01-02 03:04:05' + INTERVAL (r) SECOND AS t,
       TIMESTAMPTZ '2026-01-02 03:04:05+00' AS tz, DATE '2026-01-02' AS day,
       r::DECIMAL(9, 3) / 7 AS dec, {'x': r, 'y': 'b'} AS st, r % 3 = 0 AS b, 'ab'::BLOB AS bl,
       'nan'::DOUBLE AS nan, r::HUGEINT AS huge
FROM range(2500) t(r)
"""


@pytest.mark.parametrize("sql", [_TYPED_SQL, "SELECT 1 AS a WHERE false", "SELECT 42 AS answer"])
def test_fetch_frame_equals_the_pyarrow_path(sql):
    import duckdb
    import polars as pl

    from stabstat.store.connection import fetch_frame

    con = duckdb.connect()
    got = fetch_frame(con, sql)
    want = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(want, pl.DataFrame)
    assert got.schema == want.schema
    assert got.equals(want, null_equal=True)


def test_compare_process_never_imports_pyarrow(loss_db):
    # pyarrow cost ~0.12 s of every CLI call; the analysis path fetches through the Arrow C stream.
    import subprocess
    import sys

    db, _ = loss_db
    code = ("import sys\nfrom stabstat.cli import main\n"
            f"sys.argv = ['stabstat', 'compare', '--by', 'bc', '--db', {str(db)!r}]\ntry:\n    main()\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('pyarrow loaded:', 'pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mean" in out.stdout and out.stdout.strip().endswith("pyarrow loaded: False"), out.stdout
