"""RunLogger: buffering, crash safety, statuses, type checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from runner.logwriter import RunLogger
from stabstat import rundir
from stabstat.validate import validate_run

CONFIG = {"task": "rte", "seed": 3, "lr": 2e-5, "bias_correction": False}


def _run_json(d: Path) -> dict:
    return json.loads((d / "run.json").read_text())


def _parts(d: Path, table: str) -> list[str]:
    p = d / f"{table}.parts"
    return sorted(x.name for x in p.iterdir()) if p.is_dir() else []


def test_buffers_instead_of_a_file_per_step(tmp_path: Path) -> None:
    with RunLogger(tmp_path, "r", CONFIG, flush_every_steps=50, flush_every_s=3600) as log:
        for s in range(1, 51):
            log.log_step(s, loss=1.0)
            log.log_layer_grads(s, ["embeddings", "classifier"], [0, 1], [1.0, 2.0])
        assert _parts(log.run_dir, "steps") == []
        log.log_step(51, loss=1.0)  # the step after the 50th flushes steps 1..50 with their grads
        assert _parts(log.run_dir, "steps") == ["part-000001.parquet"]
        assert pq.read_table(log.run_dir / "steps.parts" / "part-000001.parquet").num_rows == 50
        assert pq.read_table(log.run_dir / "layer_grads.parts" / "part-000001.parquet").num_rows == 100
        for s in range(52, 60):
            log.log_step(s, loss=1.0)
    d = tmp_path / "r"
    assert sorted(p.name for p in d.iterdir()) == [
        "evals.parquet", "layer_grads.parquet", "run.json", "steps.parquet",
    ]
    assert pq.read_table(d / "steps.parquet").column("step").to_pylist() == list(range(1, 60))
    rj = _run_json(d)
    assert rj["status"] == "completed"
    assert rj["tables"] == {"steps": 59, "layer_grads": 100, "evals": 0}
    assert validate_run(d) == []


def test_flushes_after_flush_every_s(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "r", CONFIG, flush_every_steps=10_000, flush_every_s=0.05)
    beat0 = _run_json(log.run_dir)["heartbeat_at"]
    log.log_step(1, loss=1.0)
    assert _parts(log.run_dir, "steps") == []
    time.sleep(0.06)
    log.log_step(2, loss=1.0)
    assert _parts(log.run_dir, "steps") == ["part-000001.parquet"]
    assert _run_json(log.run_dir)["heartbeat_at"] > beat0
    log.finish()


def test_parts_readable_while_running(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "live", CONFIG, flush_every_steps=4)
    for s in range(1, 11):
        log.log_step(s, loss=0.5, lr=1e-5)
        log.log_layer_grads(s, ["embeddings", "encoder.layer.0"], [0, 1], [0.1, 0.2])
    d = log.run_dir
    assert _run_json(d)["status"] == "running"
    # 8 of 10 steps are flushed; the rest are still in memory.
    steps = duckdb.sql(f"select step from read_parquet('{d}/steps.parts/*.parquet') order by step").fetchall()
    assert [s for (s,) in steps] == list(range(1, 9))
    assert rundir.read_table(d, "layer_grads").num_rows == 16
    assert validate_run(d) == []  # a running run may lack evals
    assert rundir.effective_status(_run_json(d)) == "running"
    log.finish()
    assert not (d / "steps.parts").exists()
    assert rundir.read_table(d, "steps").column("step").to_pylist() == list(range(1, 11))


def test_nan_loss_marks_diverged_and_is_stored(tmp_path: Path) -> None:
    with RunLogger(tmp_path, "nan", CONFIG) as log:
        log.log_step(1, loss=0.7, grad_norm=1.0)
        assert not log.diverged
        log.log_step(2, loss=float("nan"), grad_norm=float("inf"))
        assert log.diverged
        log.log_eval(2, "dev", {"accuracy": 0.5, "loss": float("nan")})
    d = tmp_path / "nan"
    assert _run_json(d)["status"] == "diverged"
    steps = rundir.read_table(d, "steps").to_pydict()
    assert steps["loss"][0] == 0.7 and math.isnan(steps["loss"][1])
    assert steps["grad_norm"][1] == math.inf
    # evals.value is finite-only: an undefined value is stored as null
    assert rundir.read_table(d, "evals").column("value").to_pylist() == [0.5, None]
    assert validate_run(d) == []
    nan_rows = duckdb.sql(f"select count(*) from read_parquet('{d}/steps.parquet') where isnan(loss)").fetchall()
    assert nan_rows == [(1,)]


def test_exception_marks_failed_and_reraises(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), RunLogger(tmp_path, "boom", CONFIG) as log:
        log.log_step(1, loss=1.0)
        _ = 1 / 0
    rj = _run_json(tmp_path / "boom")
    assert rj["status"] == "failed"
    assert "ZeroDivisionError" in rj["error"]
    assert rj["finished_at"] is not None
    assert rundir.read_table(tmp_path / "boom", "steps").num_rows == 1


def test_keyboard_interrupt_marks_interrupted(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), RunLogger(tmp_path, "ki", CONFIG) as log:
        log.log_step(1, loss=1.0)
        raise KeyboardInterrupt
    assert _run_json(tmp_path / "ki")["status"] == "interrupted"
    assert validate_run(tmp_path / "ki") == []


def test_sigterm_handler_installed_and_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with RunLogger(tmp_path, "sig", CONFIG) as log:
        assert signal.getsignal(signal.SIGTERM) != before
        log.log_step(1, loss=1.0)
    assert signal.getsignal(signal.SIGTERM) == before


def test_no_handler_outside_main_thread(tmp_path: Path) -> None:
    import threading

    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def work() -> None:
        with RunLogger(tmp_path, "thr", CONFIG) as log:
            seen.append(signal.getsignal(signal.SIGTERM))
            log.log_step(1, loss=1.0)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [before]
    assert _run_json(tmp_path / "thr")["status"] == "completed"


_CHILD = textwrap.dedent(
    """
    import sys, time
    from runner.logwriter import RunLogger
    out, run_id, flush_every, stale = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with RunLogger(out, run_id, {"seed": 1}, flush_every_steps=flush_every, stale_after_s=stale) as log:
        step = 0
        while True:
            step += 1
            log.log_step(step, loss=1.0 / step, lr=1e-5)
            log.log_layer_grads(step, ["embeddings", "encoder.layer.0", "classifier"], [0, 1, 2], [0.1, 0.2, 0.3])
            if step % 7 == 0:
                log.log_eval(step, "dev", {"accuracy": 0.5})
            if step == 3:
                print("started", flush=True)
            time.sleep(0.0005)
    """
)


def _spawn(tmp_path: Path, run_id: str, flush_every: int, stale: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), run_id, str(flush_every), str(stale)],
        stdout=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("delay", [0.05, 0.23, 0.41])
def test_sigkill_mid_run_keeps_every_flushed_row(tmp_path: Path, delay: float) -> None:
    # flush_every_steps=1 writes constantly, so the kill very likely lands inside a write.
    proc = _spawn(tmp_path, "killed", flush_every=1, stale=0.3)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    d = tmp_path / "killed"

    rj = _run_json(d)  # never a torn run.json
    assert rj["status"] == "running"
    assert validate_run(d) == []
    steps = rundir.read_table(d, "steps").column("step").to_pylist()
    assert len(steps) >= 3
    assert steps == list(range(1, len(steps) + 1))  # flushed rows are contiguous, none lost
    via_duckdb = duckdb.sql(f"select step from read_parquet('{d}/steps.parts/*.parquet') order by step").fetchall()
    assert [s for (s,) in via_duckdb] == steps
    grads = rundir.read_table(d, "layer_grads")
    # A part holds all rows of its steps; a kill between two tables' parts of one flush may
    # leave only the newest step without its layer rows.
    grad_steps = set(grads.column("step").to_pylist())
    assert set(steps[:-1]) <= grad_steps <= set(steps)

    beat = rundir.parse_timestamp(rj["heartbeat_at"])
    assert rundir.effective_status(rj, now=beat + timedelta(seconds=0.1)) == "running"
    assert rundir.effective_status(rj, now=beat + timedelta(seconds=0.5)) == "interrupted"
    time.sleep(0.35)
    assert rundir.effective_status(rj) == "interrupted"


def test_sigterm_in_subprocess_marks_interrupted(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "termed", flush_every=1000, stale=600)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    d = tmp_path / "termed"
    rj = _run_json(d)
    assert rj["status"] == "interrupted"
    assert "SIGTERM" in rj["error"]
    assert (d / "steps.parquet").exists() and not (d / "steps.parts").exists()
    steps = rundir.read_table(d, "steps").column("step").to_pylist()
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3
    assert validate_run(d) == []


def test_leftover_parts_after_compaction_are_ignored(tmp_path: Path) -> None:
    # A crash between writing <table>.parquet and removing <table>.parts/ must be harmless.
    log = RunLogger(tmp_path, "c", CONFIG, flush_every_steps=2)
    for s in range(1, 5):
        log.log_step(s, loss=1.0)
    parts = sorted((log.run_dir / "steps.parts").iterdir())
    saved = [(p.name, p.read_bytes()) for p in parts]
    log.finish()
    (log.run_dir / "steps.parts").mkdir()
    for name, data in saved:
        (log.run_dir / "steps.parts" / name).write_bytes(data)
    assert rundir.table_files(log.run_dir, "steps") == [log.run_dir / "steps.parquet"]
    assert rundir.read_table(log.run_dir, "steps").num_rows == 4
    assert validate_run(log.run_dir) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": 1.5, "loss": 1.0}, r"steps\.step must be an integer \(int64\).*float"),
        ({"step": True, "loss": 1.0}, r"steps\.step must be an integer"),
        ({"step": 1, "loss": "0.3"}, r"steps\.loss must be a number \(float64\).*str"),
        ({"step": 1, "loss": 1.0, "lr": [1e-5]}, r"steps\.lr must be a number"),
        ({"step": None, "loss": 1.0}, r"steps\.step must not be None"),
    ],
)
def test_log_step_type_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    log = RunLogger(tmp_path, "t", CONFIG)
    step = kwargs.pop("step")
    with pytest.raises(TypeError, match=match):
        log.log_step(step, **kwargs)
    # the bad row was not half-appended
    log.log_step(1, loss=1.0)
    log.finish()
    assert rundir.read_table(log.run_dir, "steps").num_rows == 1


def test_numpy_scalars_accepted(tmp_path: Path) -> None:
    with RunLogger(tmp_path, "np", CONFIG) as log:
        log.log_step(np.int64(1), loss=np.float32(0.5), lr=np.float64(1e-5))
        log.log_layer_grads(np.int32(1), ["embeddings"], [np.int64(0)], [np.float32(0.25)])
    assert rundir.read_table(tmp_path / "np", "steps").column("loss").to_pylist() == [0.5]
    assert rundir.read_table(tmp_path / "np", "layer_grads").column("grad_norm").to_pylist() == [0.25]


def test_layer_grads_and_predictions_errors(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "e", CONFIG)
    with pytest.raises(ValueError, match="equal lengths"):
        log.log_layer_grads(1, ["a", "b"], [0], [1.0, 2.0])
    with pytest.raises(TypeError, match=r"layer_grads\.layer must be a str"):
        log.log_layer_grads(1, [3], [0], [1.0])
    with pytest.raises(TypeError, match=r"predictions\.label must be a 1-d integer array"):
        log.log_predictions(1, "dev", [0, 1], [0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="equal lengths"):
        log.log_predictions(1, "dev", [0, 1, 2], [0, 1], [0, 1])
    log.log_predictions(1, "dev", np.arange(3), [0, 1, 1], np.array([0, 1, 0]), [0.9, float("nan"), 0.6])
    log.log_predictions(2, "dev", [0, 1, 2], [0, 1, 1], [1, 1, 0])
    log.finish()
    pred = rundir.read_table(log.run_dir, "predictions").to_pydict()
    assert pred["step"] == [1, 1, 1, 2, 2, 2]
    assert pred["probability"] == [0.9, None, 0.6, None, None, None]
    assert validate_run(log.run_dir) == []


def test_run_json_contents_and_set_task(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "j", {**CONFIG, "path": Path("/x")}, environment={"git_commit": "abc"},
                    stale_after_s=42)
    rj = _run_json(log.run_dir)
    assert rj["schema_version"] == 1 and rj["run_id"] == "j" and rj["status"] == "running"
    assert rj["config"]["path"] == "/x" and rj["stale_after_s"] == 42
    assert rj["environment"]["git_commit"] == "abc" and "python" in rj["environment"]
    started = datetime.fromisoformat(rj["started_at"])
    assert started.tzinfo is not None and abs(datetime.now(UTC) - started) < timedelta(minutes=1)
    log.set_task({"name": "rte", "num_labels": 2, "majority": {"accuracy": 0.527}})
    assert _run_json(log.run_dir)["task"]["majority"] == {"accuracy": 0.527}
    log.finish("completed")
    with pytest.raises(RuntimeError, match="already finished"):
        log.log_step(1, loss=1.0)
    with pytest.raises(RuntimeError, match="already finished"):
        log.finish()
    assert rundir.read_run_json(log.run_dir)["status"] == "completed"


def test_bad_arguments(tmp_path: Path) -> None:
    RunLogger(tmp_path, "dup", CONFIG).finish()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RunLogger(tmp_path, "dup", CONFIG)
    log = RunLogger(tmp_path, "dup", {"seed": 9}, overwrite=True)
    assert _run_json(log.run_dir)["config"] == {"seed": 9}
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a run directory"):
        RunLogger(tmp_path, "notarun", CONFIG, overwrite=True)
    with pytest.raises(ValueError, match="run_id"):
        RunLogger(tmp_path, "a/b", CONFIG)
    with pytest.raises(ValueError, match="JSON"):
        RunLogger(tmp_path, "nanconf", {"lr": float("nan")})
    with pytest.raises(ValueError, match="status must be one of"):
        RunLogger(tmp_path, "st", CONFIG).finish("running")
    assert os.path.isdir(tmp_path / "notarun")


def test_sigterm_during_a_flush_loses_no_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.logwriter as lw

    real = lw.write_parquet_atomic
    fired = []

    def write_then_signal(table, path, t):  # type: ignore[no-untyped-def]
        if not fired:
            fired.append(path.name)
            signal.raise_signal(signal.SIGTERM)  # arrives in the middle of the flush
        real(table, path, t)

    monkeypatch.setattr(lw, "write_parquet_atomic", write_then_signal)
    with pytest.raises(SystemExit) as info, RunLogger(tmp_path, "mid", CONFIG, flush_every_steps=3) as log:
        for s in range(1, 10):
            log.log_step(s, loss=1.0)
            log.log_layer_grads(s, ["embeddings"], [0], [0.5])
    assert info.value.code == 128 + signal.SIGTERM
    assert fired == ["part-000001.parquet"]
    d = tmp_path / "mid"
    assert _run_json(d)["status"] == "interrupted"
    # the flush at step 4 completed (steps 1-3 and their layer rows), then SIGTERM was raised
    assert rundir.read_table(d, "steps").column("step").to_pylist() == [1, 2, 3]
    assert rundir.read_table(d, "layer_grads").column("step").to_pylist() == [1, 2, 3]
