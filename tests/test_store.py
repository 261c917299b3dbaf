"""The DuckDB store through its Python API: the run_summary view, the runs frame, identifier
safety, read-only queries and locking (loading runs: tests/test_ingest.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stabstat.errors import DatabaseInUseError, InputFormatError, QueryError, SelectionError
from stabstat.ingest import ingest
from stabstat.store import Store, default_higher_is_better, quote_ident


def count(store: Store, table: str, run_id: str | None = None) -> int:
    if run_id is None:
        return int(store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    return int(store.con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0][0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.duckdb"


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
        ingest(store, tmp_path / "runs")
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
        ingest(store, tmp_path / "runs")
    with Store.open(db) as store:
        f = store.runs()
    assert f["run_id"].to_list() == ["a", "b"]
    assert f["dev/accuracy"].to_list() == [0.8, 0.6] and f["train/accuracy"].to_list() == [None, 0.9]
    assert {"seed", "status", "train_loss_final", "diverged"} <= set(f.columns)


def test_quote_factor_and_filter_sql_never_paste_identifiers(make_run, tmp_path, db):
    make_run("a", config={"seed": 1, "task": "rte", 'we"ird key': 1, "bias_correction": False})
    with Store.open(db, read_only=False) as store:
        ingest(store, tmp_path / "runs")
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
        ingest(store, tmp_path / "runs")
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


