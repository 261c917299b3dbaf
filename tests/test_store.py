"""The DuckDB store through its Python API: round trips, idempotence, replacement, factors,
the run_summary view, identifier safety, read-only queries, locking and kill-safety."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stabstat.errors import DatabaseInUseError, InputFormatError, QueryError, SelectionError
from stabstat.store import Store, default_higher_is_better, quote_ident

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
        rep = store.ingest([tmp_path / "runs"])
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
        assert len(store.ingest(tmp_path / "runs").added) == 3
        before = {t: count(store, t) for t in ("runs", "steps", "layer_grads", "evals", "ingests")}
        rep = store.ingest(tmp_path / "runs")
        assert rep.ingested == [] and sorted(rep.unchanged) == ["r0", "r1", "r2"] and rep.ok
        assert {t: count(store, t) for t in before} == before


def test_changed_run_is_replaced_as_a_whole(make_run, tmp_path, db):
    make_run("keep", config={"seed": 0})
    make_run("x", config={"seed": 1}, n_steps=30, evals={30: {"accuracy": 0.6}})
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
        assert count(store, "steps", "x") == 30
    from runner.logwriter import RunLogger

    with RunLogger(tmp_path / "runs", "x", {"seed": 1, "lr": 0.1}, overwrite=True) as log:
        for s in range(1, 6):
            log.log_step(s, loss=0.5)
        log.log_eval(5, "dev", {"accuracy": 0.9})
    with Store.open(db, read_only=False) as store:
        rep = store.ingest(tmp_path / "runs")
        assert rep.replaced == ["x"] and rep.unchanged == ["keep"] and rep.added == []
        assert count(store, "runs", "x") == 1 and count(store, "steps", "x") == 5
        assert count(store, "layer_grads", "x") == 0
        assert store.con.execute("SELECT value FROM evals WHERE run_id = 'x'").fetchall() == [(0.9,)]
        assert store.con.execute("SELECT lr FROM runs WHERE run_id = 'x'").fetchall() == [(0.1,)]
        assert count(store, "steps", "keep") == 20


def test_running_run_then_finished_is_replaced(make_run, tmp_path, db):
    d = make_run("live", finish=False, n_steps=12)
    with Store.open(db, read_only=False) as store:
        store.ingest(d)
        assert store.con.execute("SELECT status FROM runs").fetchall() == [("running",)]
        assert count(store, "steps") == 12
    # the same run, finished later with more steps
    import shutil

    shutil.rmtree(d)
    make_run("live", n_steps=15)
    with Store.open(db, read_only=False) as store:
        assert store.ingest(d).replaced == ["live"]
        assert store.con.execute("SELECT status, (SELECT count(*) FROM steps) FROM runs").fetchall() == [("completed", 15)]


def test_new_factor_adds_column_and_int_widens_to_double(make_run, tmp_path, db):
    make_run("a", config={"seed": 1, "warmup": 0})
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
        make_run("b", config={"seed": 2, "warmup": 0.1, "n_train": 1000})
        rep = store.ingest(tmp_path / "runs")
        assert rep.added == ["b"] and any("warmup" in n and "DOUBLE" in n for n in rep.notes)
        assert store.factors() == {"seed": "BIGINT", "warmup": "DOUBLE", "n_train": "BIGINT"}
        rows = store.con.execute("SELECT run_id, warmup, n_train FROM runs ORDER BY run_id").fetchall()
        assert rows == [("a", 0.0, None), ("b", 0.1, 1000)]


def test_factor_type_conflict_rejects_only_that_run(make_run, tmp_path, db):
    make_run("a", config={"seed": 1})
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
        make_run("bad", config={"seed": "abc"})
        make_run("good", config={"seed": 3})
        rep = store.ingest(tmp_path / "runs")
        assert rep.added == ["good"] and len(rep.rejected) == 1
        msg = str(rep.rejected[0])
        assert "bad" in msg and "'seed'" in msg and "BIGINT" in msg and "fresh --db" in msg
        assert count(store, "runs", "bad") == 0 and count(store, "steps", "bad") == 0
        assert store.con.execute("SELECT action FROM ingests WHERE run_id = 'bad'").fetchall() == [("rejected",)]


def test_reserved_config_key_is_rejected(make_run, tmp_path, db):
    make_run("a", config={"status": "x", "seed": 1})
    with Store.open(db, read_only=False) as store:
        rep = store.ingest(tmp_path / "runs")
        assert rep.added == [] and "built-in column" in rep.rejected[0].message


def test_duplicate_run_id_in_two_folders(make_run, tmp_path, db):
    make_run("same", out_dir=tmp_path / "one")
    make_run("same", out_dir=tmp_path / "two")
    with Store.open(db, read_only=False) as store:
        rep = store.ingest([tmp_path / "one", tmp_path / "two"])
        assert rep.added == ["same"] and "unique" in rep.rejected[0].message
        assert count(store, "runs") == 1


def test_summary_final_best_direction_majority_and_train_loss(make_run, tmp_path, db):
    losses = [1.0 - 0.03 * i for i in range(25)]
    make_run(
        "a", config={"seed": 1, "bias_correction": True}, losses=losses,
        evals={5: {"accuracy": 0.9, "loss": 0.3, "mcc": 0.4}, 25: {"accuracy": 0.7, "loss": 0.5, "mcc": 0.2}},
        task={"majority": {"accuracy": 0.55}, "higher_is_better": {"mcc": False}},
    )
    make_run("div", config={"seed": 2, "bias_correction": False}, losses=[0.7, float("inf"), 0.7],
             evals={3: {"accuracy": 0.5}})
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
        s = store.summary()
        assert s.columns[:11] == ["run_id", "split", "metric", "final_step", "final_value", "best_value",
                                  "higher_is_better", "majority", "train_loss_final", "diverged", "status"]
        assert {"seed", "bias_correction"} <= set(s.columns)
        rows = {(r["run_id"], r["metric"]): r for r in s.to_dicts()}
        acc = rows[("a", "accuracy")]
        assert (acc["final_step"], acc["final_value"], acc["best_value"], acc["higher_is_better"]) == (25, 0.7, 0.9, True)
        assert acc["majority"] == 0.55 and acc["bias_correction"] is True
        assert acc["train_loss_final"] == pytest.approx(np.mean(losses[-10:]))
        assert acc["diverged"] is False and acc["status"] == "completed"
        loss = rows[("a", "loss")]
        assert (loss["best_value"], loss["higher_is_better"], loss["majority"]) == (0.3, False, None)
        assert (rows[("a", "mcc")]["best_value"], rows[("a", "mcc")]["higher_is_better"]) == (0.2, False)  # run.json wins
        d = rows[("div", "accuracy")]
        assert d["diverged"] is True and d["status"] == "diverged" and not math.isfinite(d["train_loss_final"])
        # overrides: a bool for the chosen metric, a mapping for several
        s2 = store.summary(metric="mcc", higher_is_better=True)
        assert s2.height == 1 and s2["best_value"][0] == 0.4 and s2["higher_is_better"][0] is True
        s3 = store.summary(split="dev", higher_is_better={"loss": True})
        assert s3.filter(s3["metric"] == "loss")["best_value"].to_list() == [0.5]
        with pytest.raises(SelectionError, match="accuracy, loss, mcc"):
            store.summary(metric="f1")
        with pytest.raises(SelectionError, match="splits in"):
            store.summary(split="test")


def test_default_direction_by_metric_name():
    assert not default_higher_is_better("loss") and not default_higher_is_better("eval_loss")
    assert not default_higher_is_better("error_rate") and not default_higher_is_better("MSE")
    assert default_higher_is_better("accuracy") and default_higher_is_better("f1")
    assert default_higher_is_better("acc_f1") and default_higher_is_better("glossary_score")


def test_runs_frame_has_factors_and_final_metrics(make_run, tmp_path, db):
    make_run("a", config={"seed": 1}, evals={20: {"accuracy": 0.8}})
    make_run("b", config={"seed": 2}, evals=[(20, "dev", {"accuracy": 0.6}), (20, "train", {"accuracy": 0.9})])
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
    with Store.open(db) as store:
        f = store.runs()
    assert f["run_id"].to_list() == ["a", "b"]
    assert f["dev/accuracy"].to_list() == [0.8, 0.6] and f["train/accuracy"].to_list() == [None, 0.9]
    assert {"seed", "status", "train_loss_final", "diverged"} <= set(f.columns)


def test_quote_factor_and_filter_sql_never_paste_identifiers(make_run, tmp_path, db):
    make_run("a", config={"seed": 1, "task": "rte", 'we"ird key': 1, "bias_correction": False})
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
    with Store.open(db) as store:
        assert store.quote_factor("seed") == '"seed"' and store.quote_factor("SEED") == '"seed"'
        assert store.quote_factor('we"ird key') == '"we""ird key"'
        with pytest.raises(SelectionError, match=r"unknown factor .*factors in .*seed, task"):
            store.quote_factor("seed; DROP TABLE runs")
        sql, params = store.filter_sql(["task=rte", "bias_correction=false", "seed=1"])
        assert params == ["rte", False, 1] and "rte" not in sql
        assert store.query(f"SELECT run_id FROM runs WHERE {sql}", params)["run_id"].to_list() == ["a"]
        sql, params = store.filter_sql({'we"ird key': 1}, table_alias="r")
        assert store.query(f"SELECT r.run_id FROM runs r WHERE {sql}", params).height == 1
        with pytest.raises(SelectionError, match="BIGINT"):
            store.filter_sql(["seed=abc"])
        with pytest.raises(SelectionError, match="expected key=value"):
            store.filter_sql(["seed"])
    assert quote_ident('a"b') == '"a""b"'


def test_query_is_read_only_and_parameterised(make_run, tmp_path, db):
    make_run("a")
    with Store.open(db, read_only=False) as store:
        store.ingest(tmp_path / "runs")
    with Store.open(db) as store:
        assert store.query("SELECT count(*) AS n FROM steps WHERE step > ?", [10])["n"][0] == 10
        for bad in ("DELETE FROM runs", "DROP TABLE runs", "CREATE TABLE x (a INT)", "ATTACH 'x.db'"):
            with pytest.raises(QueryError, match="not allowed: queries are read-only"):
                store.query(bad)
        with pytest.raises(QueryError, match="exactly one"):
            store.query("SELECT 1; SELECT 2")
        with pytest.raises(QueryError, match="nosuch"):
            store.query("SELECT * FROM nosuch")
        assert count(store, "runs") == 1
        sch = store.schema()
        assert {"runs", "steps", "layer_grads", "evals", "predictions", "majority", "ingests",
                "run_summary", "run_training"} <= set(sch["table"].to_list())


def test_missing_or_foreign_database_files(tmp_path):
    with pytest.raises(InputFormatError, match="no such database.*stabstat ingest"):
        Store.open(tmp_path / "none.duckdb")
    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database" * 100)
    with pytest.raises(InputFormatError, match="cannot open as a DuckDB database"):
        Store.open(bad, read_only=False)


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


def test_database_in_use_by_another_process(tmp_path, db):
    Store.open(db, read_only=False).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for ro in (False, True):
            with pytest.raises(DatabaseInUseError, match=rf"in use by another process \(pid {proc.pid}\)"):
                Store.open(db, read_only=ro)
    finally:
        proc.kill()
        proc.wait()


KILLER = """
import sys, time
from stabstat import store as S
orig = S.Store._insert
calls = []
def slow_insert(self, batch, existing, ingest_id):
    orig(self, batch, existing, ingest_id)
    calls.append(1)
    print("inserted", ",".join(r.run_id for r in batch), flush=True)
    if len(calls) == int(sys.argv[3]):
        time.sleep(60)  # inside the open transaction: the parent kills us here
S.Store._insert = slow_insert
with S.Store.open(sys.argv[1], read_only=False) as st:
    st.ingest(sys.argv[2], batch_runs=2)
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
        rep = store.ingest(tmp_path / "runs")
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
        rep = store.ingest(tmp_path / "runs", batch_runs=10)
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
        rep = store.ingest(d, validate="full")
        assert rep.added == [] and "duplicate key" in rep.rejected[0].message



def test_stale_running_run_is_stored_as_interrupted(make_run, db):
    d = make_run("stale", finish=False, n_steps=5)
    rj = json.loads((d / "run.json").read_text())
    rj["heartbeat_at"] = "2020-01-01T00:00:00+00:00"
    (d / "run.json").write_text(json.dumps(rj))
    with Store.open(db, read_only=False) as store:
        assert store.ingest(d).added == ["stale"]
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
        assert sorted(store.ingest(tmp_path / "runs").added) == ["a", "b"]
        got = store.con.execute("SELECT step, loss FROM steps WHERE run_id = 'a' ORDER BY step").fetchall()
        assert got == list(zip(t.column("step").to_pylist(), t.column("loss").to_pylist(), strict=True))
        assert count(store, "steps", "b") == 4
