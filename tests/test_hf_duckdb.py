"""Hugging Face ingest through DuckDB's JSON reader (stabstat.ingest.sources.hf_duckdb).

The Python reader (:func:`read_hf_run`) is the reference: every stored row, status and metric
list of the DuckDB path must equal what it reads from the same files. Files DuckDB's SQL
refuses are rejected with the Python reader's one-line message while the good runs of the
same batch load; the fallback path (a run read in Python) loads the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import hf_history, write_trainer_state

import stabstat.ingest.sources.hf as hf_mod
from stabstat.ingest import ingest
from stabstat.ingest.sources.hf import read_hf_run
from stabstat.store import Store


def _rows(store: Store, table: str, run_id: str, cols: list[str]) -> list[tuple[Any, ...]]:
    order = "step, split, metric" if table == "evals" else "step"
    sql = f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ? ORDER BY {order}"
    return [tuple(r) for r in store.con.execute(sql, [run_id]).fetchall()]


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Row lists equal, NaN equal to NaN (exact floats otherwise: both parse correctly rounded)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
                continue
            if x != y or type(x) is not type(y):
                return False
    return True


def _reference(d: Path) -> dict[str, Any]:
    run = read_hf_run(d)
    steps_cols = ["run_id", "step", "epoch", "loss", "lr", "grad_norm", "wall_time"]
    evals_cols = ["run_id", "step", "split", "metric", "value"]
    steps = [tuple(r[c] for c in steps_cols) for r in run.records("steps")]
    evals = sorted((tuple(r[c] for c in evals_cols) for r in run.records("evals")), key=lambda r: (r[1], r[2], r[3]))
    return {"run": run, "steps": steps, "evals": evals, "steps_cols": steps_cols, "evals_cols": evals_cols}


def assert_same_as_python(store: Store, d: Path) -> dict[str, Any]:
    """The stored rows, status, task and environment of run folder ``d`` equal what the Python
    reader gives for it; returns the reference (:func:`_reference`)."""
    ref = _reference(d)
    run = ref["run"]
    assert _same(_rows(store, "steps", run.run_id, ref["steps_cols"]), ref["steps"]), d
    assert _same(_rows(store, "evals", run.run_id, ref["evals_cols"]), ref["evals"]), d
    status, task, env = store.con.execute(
        "SELECT status, task_info, environment FROM runs WHERE run_id = ?", [run.run_id]).fetchall()[0]
    assert status == run.run_json["status"], d
    assert json.loads(task) == run.run_json["task"], d
    assert json.loads(env) == run.run_json["environment"], d
    return ref


def assert_ingested_as_python(store: Store, runs: Sequence[Path]) -> None:
    """Every run folder of ``runs`` is stored as the Python reader reads it
    (:func:`assert_same_as_python`), and its ``ingests`` row counts its rows."""
    for d in runs:
        ref = assert_same_as_python(store, d)
        counts = store.con.execute("SELECT n_steps, n_evals FROM ingests WHERE run_id = ?",
                                   [ref["run"].run_id]).fetchall()
        assert counts == [(len(ref["steps"]), len(ref["evals"]))], d


def assert_only_bad_rejected(rep: Any, good: Sequence[Path], bad_file: Path, message: str) -> None:
    """``rep`` added exactly the runs of ``good`` and rejected one, in one line naming
    ``bad_file`` and matching the regular expression ``message``."""
    assert sorted(rep.added) == sorted(read_hf_run(d).run_id for d in good)
    assert len(rep.rejected) == 1
    line = str(rep.rejected[0])
    assert "\n" not in line and str(bad_file) in line
    assert re.search(message, line), line


def _varied_runs(make_hf_run: Any, root: Path) -> list[Path]:
    """Runs that exercise every rule of the reader."""
    out = []
    # 1. plain, finished, with a side task and hive factors
    out.append(make_hf_run("v/bias_correction=true/seed=1", root=root, side={"task": {"majority": {"accuracy": 0.6}}}))
    # 2. checkpoints only, an older one disagreeing about step 20 (the newest file wins), not finished
    hist = hf_history(6)
    d = make_hf_run("v/bias_correction=false/seed=2", root=root, history=hist, checkpoints=(20, 40), own=False,
                    max_steps=100)
    older = json.loads((d / "checkpoint-20" / "trainer_state.json").read_text())
    older["log_history"][1]["loss"] = 9.0
    (d / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(older))
    out.append(d)
    # 3. non-finite values: NaN/inf loss (diverged), inf lr and NaN epoch (-> null), NaN eval value (-> null),
    #    nulls, a missing grad_norm, a duplicated step inside one file (the later entry wins)
    hist3: list[dict[str, Any]] = [
        {"epoch": 0.1, "grad_norm": 1.0, "learning_rate": float("inf"), "loss": 0.7, "step": 10},
        {"epoch": float("nan"), "learning_rate": 2e-5, "loss": float("nan"), "step": 20},
        {"epoch": 0.3, "grad_norm": None, "learning_rate": None, "loss": None, "step": 30},
        {"epoch": 0.3, "grad_norm": 2.0, "learning_rate": 1e-5, "loss": 0.5, "step": 30},
        {"epoch": 0.3, "eval_accuracy": float("nan"), "eval_loss": None, "eval_runtime": 1.0, "step": 30},
        {"epoch": 0.4, "grad_norm": float("inf"), "learning_rate": 1e-5, "loss": float("-inf"), "step": 40},
    ]
    out.append(make_hf_run("v/bias_correction=false/seed=3", root=root, history=hist3, max_steps=40))
    # 4. a test-prefixed evaluation, a non-scalar metric (skipped), a string metric (skipped),
    #    the same step evaluated twice (later wins), global_step reached max_steps, no final entry
    hist4: list[dict[str, Any]] = [
        {"epoch": 1.0, "grad_norm": 1.0, "learning_rate": 1e-5, "loss": 0.4, "step": 5},
        {"epoch": 1.0, "eval_accuracy": 0.7, "eval_runtime": 1.0, "eval_samples_per_second": 3.0, "step": 5},
        {"epoch": 1.0, "eval_accuracy": 0.75, "eval_confusion": [[1, 2], [3, 4]], "eval_note": "x",
         "eval_runtime": 1.0, "step": 5},
        {"epoch": 1.0, "test_accuracy": 0.72, "test_f1": 0.5, "test_runtime": 2.0, "step": 5},
        {"epoch": 1.0, "learning_rate": 1e-5, "loss": 0.3, "step": 6, "extra": {"loss": 1}},
        {"epoch": 1.0, "step": 6, "note": "no loss: not a training entry"},
    ]
    out.append(make_hf_run("v/bias_correction=true/seed=4", root=root, history=hist4, max_steps=6))
    return out


def test_duckdb_path_equals_the_python_reader(make_hf_run, tmp_path, monkeypatch):
    runs = _varied_runs(make_hf_run, tmp_path)

    def no_fallback(run: Any) -> None:
        raise AssertionError(f"{run.source}: fell back to the Python reader")

    monkeypatch.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, fallback=no_fallback))
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "v")
        assert rep.ok and len(rep.added) == len(runs), rep.summary()
        assert_ingested_as_python(store, runs)
    statuses = {d.name: read_hf_run(d).run_json["status"] for d in runs}
    assert statuses == {"seed=1": "completed", "seed=2": "interrupted", "seed=3": "diverged", "seed=4": "completed"}


def test_fallback_path_loads_the_same_rows(make_hf_run, tmp_path, monkeypatch):
    """When DuckDB's SQL fails for a run, the run is read in Python and loads the same rows."""
    runs = _varied_runs(make_hf_run, tmp_path)
    broken = dataclasses.replace(hf_mod.READER, stage=("SELECT error('refused')",))
    monkeypatch.setattr(hf_mod, "READER", broken)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "v")
        assert rep.ok and len(rep.added) == len(runs), rep.summary()
        for d in runs:
            ref = _reference(d)
            assert _same(_rows(store, "steps", ref["run"].run_id, ref["steps_cols"]), ref["steps"]), d
            assert _same(_rows(store, "evals", ref["run"].run_id, ref["evals_cols"]), ref["evals"]), d


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"log_history": [{"loss": 0.5, "st', r"trainer_state.json: malformed JSON at line 1 column \d+"),
        (json.dumps({"log_history": [{"loss": "high", "step": 1}]}), r"log_history\[0\]\.loss: expected a number"),
        (json.dumps({"log_history": [{"loss": True, "step": 1}]}), r"log_history\[0\]\.loss: expected a number"),
        (json.dumps({"log_history": [{"loss": 0.5, "step": 1.5}]}), r"log_history\[0\]\.step: expected a non-negative"),
        (json.dumps({"log_history": [{"loss": 0.5, "step": -1}]}), r"log_history\[0\]\.step: expected a non-negative"),
        (json.dumps({"log_history": [{"eval_acc": 0.5, "eval_runtime": 1, "step": "3"}]}), r"log_history\[0\]\.step"),
        (json.dumps({"log_history": [{"eval_acc": True, "eval_runtime": 1, "step": 3}]}),
         r"log_history\[0\]\.eval_acc: expected a number"),
        (json.dumps({"log_history": [5]}), r"log_history\[0\]: expected an object"),
        (json.dumps({"global_step": 3}), "log_history: missing or not a list"),
        (json.dumps({"log_history": {"a": 1}}), "log_history: missing or not a list"),
        ("", "malformed JSON at line 1 column 1"),
        ('{"log_history": []}\n{"log_history": []}', "malformed JSON at line 2 column 1: Extra data"),
    ],
)
def test_bad_file_rejected_in_one_line_and_good_runs_load(make_hf_run, tmp_path, content, message):
    good = [make_hf_run(f"hf/seed={s}", side={"task": {"majority": {"accuracy": 0.6}}}) for s in (1, 2, 3)]
    bad = tmp_path / "hf" / "seed=9"
    bad.mkdir(parents=True)
    (bad / "trainer_state.json").write_text(content)
    db = tmp_path / "x.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert_only_bad_rejected(rep, good, bad / "trainer_state.json", message)
        n = store.con.execute("SELECT count(*) FROM steps WHERE run_id LIKE 'seed=9-%'").fetchall()
        assert n == [(0,)]
        assert store.con.execute("SELECT count(DISTINCT run_id) FROM steps").fetchall() == [(3,)]
        # the bad run is reported again; the good ones are unchanged
        rep2 = ingest(store, tmp_path / "hf")
        assert len(rep2.unchanged) == 3 and len(rep2.rejected) == 1 and rep2.ingested == []


def test_rewritten_state_file_is_replaced_and_reingest_is_a_noop(make_hf_run, tmp_path):
    d = make_hf_run("hf/seed=1", max_steps=100, history=hf_history(3, final=False))
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        run_id = rep.added[0]
        assert store.con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
        assert ingest(store, tmp_path / "hf").unchanged == [run_id]
        # the Trainer saves again: more history, now finished
        write_trainer_state(d, hf_history(5), max_steps=100)
        st = (d / "trainer_state.json").stat()
        os.utime(d / "trainer_state.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        rep = ingest(store, tmp_path / "hf")
        assert rep.replaced == [run_id]
        assert store.con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
        assert store.con.execute("SELECT count(*) FROM steps").fetchall() == [(5,)]
        assert store.con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]


def test_many_runs_in_one_statement_batch_and_estimates(make_hf_run, tmp_path):
    """Several batches (batch_runs=2): every run once, row counts exact in the ingests log."""
    for s in range(5):
        make_hf_run(f"hf/seed={s}")
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf", batch_runs=2)
        assert len(rep.added) == 5 and rep.ok
        assert store.con.execute("SELECT count(*), count(DISTINCT run_id) FROM steps").fetchall() == [(25, 5)]
        assert store.con.execute("SELECT DISTINCT n_steps, n_evals FROM ingests").fetchall() == [(5, 4)]
        # no temporary staging table is left behind
        temps = store.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        assert temps == []


def test_sigkill_during_hf_ingest_leaves_whole_runs_only(make_hf_run, tmp_path):
    """A kill inside a batch's transaction (JSON staged, rows inserted, not committed) leaves
    the committed batches complete and nothing of the killed one (temp tables die with it)."""
    import signal
    import subprocess
    import sys

    from test_ingest import KILLER, ROOT

    for s in range(6):
        make_hf_run(f"hf/seed={s}", history=hf_history(3 + s))
    db = tmp_path / "k.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", KILLER, str(db), str(tmp_path / "hf"), "2"],
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    inserted = [child.stdout.readline().split()[1] for _ in range(2)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Store.open(db) as store:
        present = sorted(r[0] for r in store.con.execute("SELECT run_id FROM runs").fetchall())
        assert present == sorted(inserted[0].split(","))
        for rid in present:
            n = int(rid.split("-")[0].split("=")[1]) + 3
            assert store.con.execute("SELECT count(*) FROM steps WHERE run_id = ?", [rid]).fetchall() == [(n,)]
        orphans = store.con.execute("SELECT count(*) FROM steps WHERE run_id NOT IN (SELECT run_id FROM runs)")
        assert orphans.fetchall() == [(0,)]
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert len(rep.added) == 6 - len(present) and sorted(rep.unchanged) == present
        assert store.con.execute("SELECT count(*) FROM steps").fetchall() == [(sum(3 + s for s in range(6)),)]


def test_paths_with_glob_characters_load(make_hf_run, tmp_path):
    """read_json treats a path as a glob pattern: a folder named ``run[1]`` is not found by
    it; the run is then read by the Python reader, with the same rows."""
    odd = make_hf_run("hf/run[1]")
    plain = make_hf_run("hf/seed=2")
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 2, rep.summary()
        for d in (odd, plain):
            ref = _reference(d)
            assert _same(_rows(store, "steps", ref["run"].run_id, ref["steps_cols"]), ref["steps"]), d
            assert _same(_rows(store, "evals", ref["run"].run_id, ref["evals_cols"]), ref["evals"]), d


def test_state_file_over_duckdbs_default_object_size_is_read_by_duckdb(make_hf_run, tmp_path, monkeypatch):
    """read_json refuses a JSON value over 16 MiB by default (~150,000 logged steps)."""
    def no_fallback(run: Any) -> None:
        raise AssertionError(f"{run.source}: fell back to the Python reader")

    monkeypatch.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, fallback=no_fallback))
    hist = [{"epoch": s / 1000, "grad_norm": 1.0, "learning_rate": 1e-5, "loss": 0.5, "step": s}
            for s in range(1, 200_001)]
    d = make_hf_run("hf/big", history=hist)
    assert (d / "trainer_state.json").stat().st_size > 2**24
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 1
        assert store.con.execute("SELECT count(*), max(step) FROM steps").fetchall() == [(200_000, 200_000)]
