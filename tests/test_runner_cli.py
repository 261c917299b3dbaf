"""stabstat-run: the end-to-end sweep, resume after SIGKILL, --jobs, --dry-run, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import find_glue_dir  # noqa: E402

from runner import sweep  # noqa: E402
from runner.cli import run_cmd  # noqa: E402
from stabstat.validate import validate_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

RTE_SWEEP = """
name = "e2e"
seeds = 2
[config]
model = "tiny"
task = "rte"
max_length = 32
n_train = 64
max_steps = 4
eval_every = 2
[grid]
bias_correction = [true, false]
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, "utf-8")
    return p


def _invoke(*args: Any) -> Any:
    return CliRunner().invoke(run_cmd, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_end_to_end_rte_sweep_validates(tmp_path: Path, glue_dir: Path) -> None:
    GLUE = glue_dir
    f = _write(tmp_path, RTE_SWEEP)
    out = tmp_path / "runs"
    res = _invoke(f, "--out", out, "--data-dir", GLUE, "--threads", 1, "--progress", "plain")
    assert res.exit_code == 0, res.output
    assert "4 runs planned, 0 already done, 4 to run" in res.output
    assert "done: 4 completed" in res.output
    planned = sweep.plan(f)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.run_id for p in planned)
    for p in planned:
        assert validate_run(out / p.run_id) == [], p.run_id
        info = json.loads((out / p.run_id / "run.json").read_text())
        assert info["status"] == "completed" and info["config"]["bias_correction"] == p.config["bias_correction"]
        assert info["task"]["majority"]["accuracy"] == pytest.approx(146 / 277)
    again = _invoke(f, "--out", out, "--data-dir", GLUE)
    assert again.exit_code == 0 and "all 4 runs already done" in again.output


def test_dry_run_trains_nothing(tmp_path: Path) -> None:
    f = _write(tmp_path, RTE_SWEEP)
    out = tmp_path / "runs"
    res = _invoke(f, "--out", out, "--dry-run", "--seeds", "0-2")
    assert res.exit_code == 0, res.output
    assert "6 runs planned, 6 to run" in res.output
    for p in sweep.plan(f, seeds="0-2"):
        assert p.run_id in res.output
    assert "bias_correction" in res.output.splitlines()[2]
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("max_steps = 4", "max_steps = 4\nlearning_rate = 1e-5"), "[config].learning_rate: unknown key 'learning_rate'"),
        (("max_steps = 4", 'max_steps = "4"'), "[config].max_steps: max_steps must be an integer"),
        (('task = "rte"', 'task = "rtx"'), "task = 'rtx': unknown task"),
    ],
)
def test_bad_input_fails_before_training(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    GLUE = find_glue_dir()[0] or tmp_path / "glue"  # the data are never read: the input fails first
    f = _write(tmp_path, RTE_SWEEP.replace(*edit))
    out = tmp_path / "runs"
    res = CliRunner().invoke(run_cmd, [str(f), "--out", str(out), "--data-dir", str(GLUE)], standalone_mode=False)
    assert res.exception is not None and message in str(res.exception)
    assert not out.exists()
    # through the console entry point: one line on stderr, exit code 2
    proc = subprocess.run([sys.executable, "-m", "runner", str(f), "--out", str(out), "--data-dir", str(GLUE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0] and (str(f) in err[0] or "rtx" in err[0])
    assert not out.exists()


def test_missing_data_files_fail_before_training(tmp_path: Path) -> None:
    f = _write(tmp_path, RTE_SWEEP)
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    out = tmp_path / "runs"
    res = CliRunner().invoke(run_cmd, [str(f), "--out", str(out), "--data-dir", str(tmp_path / "glue")],
                             standalone_mode=False)
    assert "missing data file(s)" in str(res.exception) and "RTE/train.tsv" in str(res.exception)
    assert not out.exists()


# 400 steps: the trainer flushes part files every 200 steps, so a run spends its second half
# "running" with flushed parts on disk -- a window of seconds, even on a fast, quiet machine.
RESUME_SWEEP = """
seeds = 2
[config]
model = "tiny"
task = "synthetic"
max_length = 16
n_train = 128
max_steps = 400
eval_every = 200
[grid]
lr = [1e-4, 2e-5]
"""


@pytest.mark.slow
def test_resume_after_sigkill_runs_each_run_exactly_once(tmp_path: Path) -> None:
    f = _write(tmp_path, RESUME_SWEEP)
    out = tmp_path / "runs"
    planned = sweep.plan(f)
    cmd = [sys.executable, "-m", "runner", str(f), "--out", str(out), "--threads", "1", "--progress", "plain"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill once >= 1 run completed and the next is mid-way
            done = [p for p in planned if sweep.run_status(out, p.run_id) == "completed"]
            running = [p for p in planned if sweep.run_status(out, p.run_id) == "running"
                       and (out / p.run_id / "steps.parts").is_dir()]
            if done and running:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not reach a mid-run state in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = running[0].run_id
    assert sweep.run_status(out, killed) == "running"  # what kill -9 leaves behind
    before = {p.run_id: json.loads((out / p.run_id / "run.json").read_text())["started_at"] for p in done}

    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(done)} already done" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.run_id for p in planned)
    for p in planned:
        d = out / p.run_id
        assert validate_run(d) == [], p.run_id
        info = json.loads((d / "run.json").read_text())
        assert info["status"] == "completed"
        steps = [r["step"] for r in pq.read_table(d / "steps.parquet").to_pylist()]
        assert steps == list(range(1, 401))  # exactly once each: the killed attempt is gone
        if p.run_id in before:  # completed runs were not redone
            assert info["started_at"] == before[p.run_id]
    assert not (out / killed / "steps.parts").exists()


@pytest.mark.slow
def test_jobs_2_gives_the_same_logs_as_serial(tmp_path: Path) -> None:
    text = RESUME_SWEEP.replace("seeds = 2", "seeds = 1").replace("max_steps = 400", "max_steps = 6")
    f = _write(tmp_path, text)
    res_pool = _invoke(f, "--out", tmp_path / "pool", "--jobs", 2, "--threads", 1, "--progress", "plain")
    assert res_pool.exit_code == 0 and "2 at a time" in res_pool.output, res_pool.output
    res_serial = _invoke(f, "--out", tmp_path / "serial", "--threads", 1, "--progress", "plain")
    assert res_serial.exit_code == 0
    for p in sweep.plan(f):
        for t in ("steps", "layer_grads", "evals", "predictions"):
            a = pq.read_table(tmp_path / "pool" / p.run_id / f"{t}.parquet").drop_columns(
                ["wall_time"] if t == "steps" else [])
            b = pq.read_table(tmp_path / "serial" / p.run_id / f"{t}.parquet").drop_columns(
                ["wall_time"] if t == "steps" else [])
            assert a.equals(b), (p.run_id, t)


def test_help_has_an_example() -> None:
    res = CliRunner().invoke(run_cmd, ["--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "--jobs" in res.output
