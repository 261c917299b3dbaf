"""Ingest through its Python API (stabstat.ingest.ingest): round trips, idempotence, replacement,
factors, rejections, batches and kill-safety."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stabstat.ingest import ingest
from stabstat.store import Store

ROOT = Path(__file__).resolve().parents[1]


def count(store: Store, table: str, run_id: str | None = None) -> int:
    if run_id is None:
        return int(store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return int(store.con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0][0])


def parquet_rows(run_dir: Path, table: str) -> int:
    f = run_dir / f"{table}.parquet"
    return pq.read_metadata(f).num_rows if f.exists() else 0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.duckdb"


def test_round_trip_counts_values_and_factor_types(make_run, tmp_path, db):
    losses = [0.7, 0.65, 0.6, float("nan")]
    a = make_run("a", config={"task": "rte", "seed": 1, "lr": 2e-5, "bias_correction": False, "nested": {"x": 1}},
                 losses=[0.7, 0.6, 0.5], evals={0: {"accuracy": 0.5}, 3: {"accuracy": 0.8, "loss": 0.4}},
                 task={"majority": {"accuracy": 0.53}}, predictions=7)
    b = make_run("b", config={"task": "rte", "seed": 2, "lr": 1e-4, "bias_correction": True}, losses=losses,
                 evals={4: {"accuracy": 0.53}})
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [tmp_path / "runs"])
        assert rep.ok and sorted(rep.added) == ["a", "b"] and rep.unchanged == []
        for d in (a, b):
            for t in ("steps", "layer_grads", "evals", "predictions"):
                assert count(store, t, d.name) == parquet_rows(d, t), t
        assert count(store, "predictions", "a") == 7
        assert store.factors() == {"task": "VARCHAR", "seed": "BIGINT", "lr": "DOUBLE", "bias_correction": "BOOLEAN"}
        got = store.con.execute("SELECT loss FROM steps WHERE run_id = 'b' ORDER BY step").fetchall()
        assert [r[0] for r in got[:3]] == losses[:3] and math.isnan(got[3][0])
        row = store.con.execute(
            "SELECT status, seed, lr, bias_correction, config, source_format FROM runs WHERE run_id = 'a'"
        ).fetchall()[0]
        assert row[:4] == ("completed", 1, 2e-5, False)
        assert json.loads(row[4])["nested"] == {"x": 1} and row[5] == "stabstat"
        assert store.con.execute("SELECT metric, value FROM majority").fetchall() == [("accuracy", 0.53)]
        assert store.con.execute("SELECT status FROM runs WHERE run_id = 'b'").fetchall() == [("diverged",)]
        actions = store.con.execute("SELECT action, count(*) FROM ingests GROUP BY ALL").fetchall()
        assert actions == [("ingested", 2)]


def test_reingest_is_a_noop(make_run, tmp_path, db):
    for i in range(3):
        make_run(f"r{i}", config={"seed": i})
    with Store.open(db, read_only=False) as store:
        assert len(ingest(store, tmp_path / "runs").added) == 3
        before = {t: count(store, t) for t in ("runs", "steps", "layer_grads", "evals", "ingests")}
        rep = ingest(store, tmp_path / "runs")
        assert rep.ingested == [] and sorted(rep.unchanged) == ["r0", "r1", "r2"] and rep.ok
        assert {t: count(store, t) for t in before} == before


def test_changed_run_is_replaced_as_a_whole(make_run, tmp_path, db):
    make_run("keep", config={"seed": 0})
    make_run("x", config={"seed": 1}, n_steps=30, evals={30: {"accuracy": 0.6}})
    with Store.open(db, read_only=False) as store:
        ingest(store, tmp_path / "runs")
        assert count(store, "steps", "x") == 30
    from runner.logwriter import RunLogger

    with RunLogger(tmp_path / "runs", "x", {"seed": 1, "lr": 0.1}, overwrite=True) as log:
        for s in range(1, 6):
            log.log_step(s, loss=0.5)
        log.log_eval(5, "dev", {"accuracy": 0.9})
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "runs")
        assert rep.replaced == ["x"] and rep.unchanged == ["keep"] and rep.added == []
        assert count(store, "runs", "x") == 1 and count(store, "steps", "x") == 5
        assert count(store, "layer_grads", "x") == 0
        assert store.con.execute("SELECT value FROM evals WHERE run_id = 'x'").fetchall() == [(0.9,)]
        assert store.con.execute("SELECT lr FROM runs WHERE run_id = 'x'").fetchall() == [(0.1,)]
        assert count(store, "steps", "keep") == 20


def test_running_run_then_finished_is_replaced(make_run, tmp_path, db):
    d = make_run("live", finish=False, n_steps=12)
    with Store.open(db, read_only=False) as store:
        ingest(store, d)
        assert store.con.execute("SELECT status FROM runs").fetchall() == [("running",)]
        assert count(store, "steps") == 12
    # the same run, finished later with more steps
    import shutil

    shutil.rmtree(d)
    make_run("live", n_steps=15)
    with Store.open(db, read_only=False) as store:
        assert ingest(store, d).replaced == ["live"]
        assert store.con.execute("SELECT status, (SELECT count(*) FROM steps) FROM runs").fetchall() == [("completed", 15)]


def test_new_factor_adds_column_and_int_widens_to_double(make_run, tmp_path, db):
    make_run("a", config={"seed": 1, "warmup": 0})
    with Store.open(db, read_only=False) as store:
        ingest(store, tmp_path / "runs")
        make_run("b", config={"seed": 2, "warmup": 0.1, "n_train": 1000})
        rep = ingest(store, tmp_path / "runs")
        assert rep.added == ["b"] and any("warmup" in n and "DOUBLE" in n for n in rep.notes)
        assert store.factors() == {"seed": "BIGINT", "warmup": "DOUBLE", "n_train": "BIGINT"}
        rows = store.con.execute("SELECT run_id, warmup, n_train FROM runs ORDER BY run_id").fetchall()
        assert rows == [("a", 0.0, None), ("b", 0.1, 1000)]


def test_factor_type_conflict_rejects_only_that_run(make_run, tmp_path, db):
    make_run("a", config={"seed": 1})
    with Store.open(db, read_only=False) as store:
        ingest(store, tmp_path / "runs")
        make_run("bad", config={"seed": "abc"})
        make_run("good", config={"seed": 3})
        rep = ingest(store, tmp_path / "runs")
        assert rep.added == ["good"] and len(rep.rejected) == 1
        msg = str(rep.rejected[0])
        assert "bad" in msg and "'seed'" in msg and "BIGINT" in msg and "fresh --db" in msg
        assert count(store, "runs", "bad") == 0 and count(store, "steps", "bad") == 0
        assert store.con.execute("SELECT action FROM ingests WHERE run_id = 'bad'").fetchall() == [("rejected",)]


def test_reserved_config_key_is_rejected(make_run, tmp_path, db):
    make_run("a", config={"status": "x", "seed": 1})
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "runs")
        assert rep.added == [] and "built-in column" in rep.rejected[0].message


def test_duplicate_run_id_in_two_folders(make_run, tmp_path, db):
    make_run("same", out_dir=tmp_path / "one")
    make_run("same", out_dir=tmp_path / "two")
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [tmp_path / "one", tmp_path / "two"])
        assert rep.added == ["same"] and "unique" in rep.rejected[0].message
        assert count(store, "runs") == 1


KILLER = """
import sys, time
from stabstat import store as S
from stabstat.ingest import ingest
from stabstat.store import load as L
orig = L.insert_runs
calls = []
def slow_insert(store, batch, existing, ingest_id):
    orig(store, batch, existing, ingest_id)
    calls.append(1)
    print("inserted", ",".join(r.run_id for r in batch), flush=True)
    if len(calls) == int(sys.argv[3]):
        time.sleep(60)  # inside the open transaction: the parent kills us here
L.insert_runs = slow_insert
with S.Store.open(sys.argv[1], read_only=False) as st:
    ingest(st, sys.argv[2], batch_runs=2)
print("done", flush=True)
"""


def test_sigkill_during_ingest_leaves_whole_runs_only(make_run, tmp_path, db):
    n_runs = 8
    for i in range(n_runs):
        make_run(f"r{i}", config={"seed": i}, n_steps=10 + i, evals={10 + i: {"accuracy": 0.5}},
                 task={"majority": {"accuracy": 0.5}})
    # The child stops inside the third batch's transaction (rows inserted, not committed).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(db), str(tmp_path / "runs"), "3"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    inserted: list[str] = []
    assert child.stdout is not None
    for _ in range(3):
        line = child.stdout.readline().split()
        assert line and line[0] == "inserted", line
        inserted.append(line[1])
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    with Store.open(db) as store:
        present = sorted(r[0] for r in store.con.execute("SELECT run_id FROM runs").fetchall())
        # batches 1 and 2 were committed with all their rows; batch 3 left nothing behind
        committed = sorted(",".join(inserted[:2]).split(","))
        assert present == committed
        for rid in present:
            i = int(rid[1:])
            assert count(store, "steps", rid) == 10 + i
            assert count(store, "layer_grads", rid) == (10 + i) * 5
            assert count(store, "evals", rid) == 1 and count(store, "majority", rid) == 1
        for t in ("steps", "layer_grads", "evals", "predictions", "majority"):
            orphans = store.con.execute(f"SELECT count(*) FROM {t} WHERE run_id NOT IN (SELECT run_id FROM runs)").fetchall()
            assert orphans == [(0,)], t
    # a second ingest completes the job without duplicates
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "runs")
        assert len(rep.added) == n_runs - len(present) and sorted(rep.unchanged) == present
        assert count(store, "runs") == n_runs
        assert count(store, "steps") == sum(10 + i for i in range(n_runs))


def test_ingest_rejects_bad_run_inside_a_batch_and_keeps_the_rest(make_run, tmp_path, db):
    """A run whose rows break a constraint (NaN in a finite-only column, found only while loading)
    makes its batch roll back; the batch is retried run by run and only that run is rejected."""
    import pyarrow as pa

    for i in range(4):
        make_run(f"r{i}", config={"seed": i})
    ev = tmp_path / "runs" / "r2" / "evals.parquet"
    t = pq.read_table(ev)
    t = t.set_column(t.column_names.index("value"), "value", pa.array([float("nan")] * t.num_rows))
    pq.write_table(t, ev)
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "runs", batch_runs=10)
        assert sorted(rep.added) == ["r0", "r1", "r3"]
        assert len(rep.rejected) == 1 and "evals.parquet: value" in rep.rejected[0].message
        assert "non-finite" in rep.rejected[0].message
        assert count(store, "steps", "r2") == 0 and count(store, "runs") == 3


def test_full_validation_catches_duplicate_keys(make_run, tmp_path, db):
    d = make_run("dup", config={"seed": 1})
    t = pq.read_table(d / "evals.parquet")
    import pyarrow as pa

    pq.write_table(pa.concat_tables([t, t]), d / "evals.parquet")
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, d, validate="full")
        assert rep.added == [] and "duplicate key" in rep.rejected[0].message


def test_stale_running_run_is_stored_as_interrupted(make_run, db):
    d = make_run("stale", finish=False, n_steps=5)
    rj = json.loads((d / "run.json").read_text())
    rj["heartbeat_at"] = "2020-01-01T00:00:00+00:00"
    (d / "run.json").write_text(json.dumps(rj))
    with Store.open(db, read_only=False) as store:
        assert ingest(store, d).added == ["stale"]
        assert store.con.execute("SELECT status, status_written FROM runs").fetchall() == [("interrupted", "running")]
        assert count(store, "steps") == 5


def test_mixed_parquet_layouts_in_one_batch(make_run, tmp_path, db):
    """A foreign writer's file (int32 step, columns in another order, an extra column) loads
    next to RunLogger's files in one batch, matched by column name."""
    import pyarrow as pa

    d = make_run("a", config={"seed": 2}, n_steps=3)  # first file of the batch: the odd one
    make_run("b", config={"seed": 1}, n_steps=4)
    t = pq.read_table(d / "steps.parquet")
    t = pa.table({
        "extra": pa.array(["x"] * t.num_rows),
        "loss": t.column("loss"), "step": t.column("step").cast(pa.int32()),
        **{c: t.column(c) for c in t.column_names if c not in ("loss", "step")},
    })
    pq.write_table(t, d / "steps.parquet")
    with Store.open(db, read_only=False) as store:
        assert sorted(ingest(store, tmp_path / "runs").added) == ["a", "b"]
        got = store.con.execute("SELECT step, loss FROM steps WHERE run_id = 'a' ORDER BY step").fetchall()
        assert got == list(zip(t.column("step").to_pylist(), t.column("loss").to_pylist(), strict=True))
        assert count(store, "steps", "b") == 4


@pytest.mark.parametrize(("n", "cap", "want"), [
    (1100, 1000, 550), (300, 1000, 300), (1000, 1000, 1000), (1001, 1000, 501), (401, 200, 134), (7, 3, 3),
    (5, 4, 3), (1, 1000, 1), (0, 1000, 1),
])
def test_even_share_is_the_fewest_most_equal_batches(n, cap, want):
    from stabstat.ingest.batch import even_share

    assert even_share(n, cap) == want
    sizes, left = [], n  # as ingest uses it: each batch's size from the runs still to load
    while left:
        sizes.append(even_share(left, cap))
        left -= sizes[-1]
    # the fewest batches of at most cap runs, sizes differing by at most one
    assert len(sizes) == -(-n // cap) and max(sizes or [0]) <= cap and max(sizes or [0]) - min(sizes or [0]) <= 1


def test_batches_are_as_equal_as_they_can_be(make_run, tmp_path, db):
    """5 runs at batch_runs=4 load as 3 + 2 (each batch one transaction: the progress callback
    is told after each), not 4 + 1: a tiny last batch costs a transaction and goes through the
    write-ahead log."""
    for i in range(5):
        make_run(f"r{i}", config={"seed": i})
    seen: list[tuple[int, int]] = []
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "runs", batch_runs=4, progress=lambda done, total: seen.append((done, total)))
        assert rep.ok and len(rep.added) == 5 and count(store, "runs") == 5
    assert seen == [(0, 5), (3, 5), (5, 5)]
