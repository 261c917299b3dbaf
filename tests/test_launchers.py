"""runner.launchers: local / slurm (submitit) / ray run the same sweep with the same resume rule.

Slurm is exercised through submitit's own executors: ``debug`` (in this process), ``local``
(real subprocesses from the same job files) and, for the generated sbatch script, ``slurm``
with a stand-in ``sbatch`` command on PATH that records the script it is given.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from stabstat.errors import ConfigError

SWEEP = """
seeds = 2
[config]
model = "tiny"
task = "synthetic"
max_length = 32
n_train = 32
max_steps = 2
batch_size = 8
log_predictions = false
[grid]
bias_correction = [true, false]
"""

LAUNCHER_TABLE = """
[launcher]
partition = "gpu"
time = 30
gpus_per_run = 1
cpus_per_run = 4
mem_gb = 16
max_parallel = 2
setup = ["module load cuda"]
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _sweep(tmp_path: Path, text: str = SWEEP) -> Path:
    p = tmp_path / "sweep.toml"
    p.write_text(text, "utf-8")
    return p


def _check_runs(out: Path, ids: list[str]) -> None:
    """Exactly these run directories, each completed and valid against the contract."""
    from stabstat.ingest.discover import find_run_dirs
    from stabstat.validate import validate_run

    assert sorted(d.name for d in find_run_dirs([out])) == sorted(ids)
    for i in ids:
        assert validate_run(out / i) == []
        assert json.loads((out / i / "run.json").read_text())["status"] == "completed"


# --------------------------------------------------------------------------------------------
# fast: configuration
# --------------------------------------------------------------------------------------------


def test_launcher_table_is_read_checked_and_ignored_by_plan(tmp_path: Path) -> None:
    from runner.launchers import read_launcher_table
    from runner.sweep import plan

    p = _sweep(tmp_path, SWEEP + LAUNCHER_TABLE)
    assert read_launcher_table(p)["partition"] == "gpu"
    assert len(plan(p)) == 4  # the [launcher] table does not change the runs or their ids
    (tmp_path / "plain").mkdir()
    assert [r.run_id for r in plan(p)] == [r.run_id for r in plan(_sweep(tmp_path / "plain", SWEEP))]
    bad = _sweep(tmp_path, SWEEP + "[launcher]\npartitoin = 'gpu'\n")
    with pytest.raises(ConfigError, match=r"sweep.toml: \[launcher\].partitoin: unknown key \(did you mean 'partition'\?\)"):
        read_launcher_table(bad)
    bad = _sweep(tmp_path, SWEEP + "[launcher]\ntime = '2h'\n")
    with pytest.raises(ConfigError, match=r"\[launcher\].time: expected int"):
        read_launcher_table(bad)


def test_paper_sweep_example_matches_the_docs() -> None:
    import tomllib

    from runner.launchers import SlurmLauncher, make_launcher, read_launcher_table
    from runner.sweep import plan

    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "scale" / "paper.toml"
    planned = plan(example)
    assert len(planned) == 3 * 3 * 2 * 3 * 25 and len({p.run_id for p in planned}) == 1350
    lch = make_launcher("slurm", table=read_launcher_table(example))
    assert isinstance(lch, SlurmLauncher)
    assert (lch.partition, lch.time, lch.gpus_per_run, lch.max_parallel) == ("gpu", 240, 1, 64)
    docs = (root / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in docs.split("```toml\n")[1:]]
    assert tomllib.loads(example.read_text()) in [tomllib.loads(b) for b in blocks if "[launcher]" in b]


def test_options_override_the_sweep_file() -> None:
    from runner.launchers import RayLauncher, SlurmLauncher, make_launcher

    lch = make_launcher("slurm", table={"partition": "gpu", "time": 30, "max_parallel": 2},
                        partition="debug", time=None, max_parallel=8)
    assert isinstance(lch, SlurmLauncher)
    assert (lch.partition, lch.time, lch.max_parallel) == ("debug", 30, 8)
    ray = make_launcher("ray", table={"ray_address": "auto"}, gpus_per_run=0)
    assert isinstance(ray, RayLauncher) and ray.address == "auto" and ray.gpus_per_run == 0
    with pytest.raises(ConfigError, match="unknown launcher 'k8s'"):
        make_launcher("k8s")


def test_slurm_without_sbatch_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("submitit")
    from runner.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(SystemExit) as exc:
        main([str(_sweep(tmp_path)), "--out", str(tmp_path / "runs"), "--launcher", "slurm"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Error: --launcher slurm: the sbatch and srun commands were not found; run stabstat-run "
                   "on a Slurm login node, or use --launcher local / ray"]
    assert not (tmp_path / "runs").exists()  # nothing started


def test_sbatch_script_is_one_array_with_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    from runner.launchers import make_launcher, read_launcher_table
    from runner.sweep import plan

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "sbatch"
    fake.write_text('#!/bin/sh\ncp "$1" "$SBATCH_COPY"\necho "Submitted batch job 4242"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    srun = bindir / "srun"  # submitit looks for srun to decide it is on a Slurm cluster
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_COPY", str(tmp_path / "script.sh"))

    p = _sweep(tmp_path, SWEEP + LAUNCHER_TABLE)
    lch = make_launcher("slurm", table=read_launcher_table(p), time=45, wait=False)
    out = tmp_path / "runs"
    statuses = lch.launch(plan(p), out)
    assert set(statuses.values()) == {"submitted"} and len(statuses) == 4
    script = (tmp_path / "script.sh").read_text()
    assert script.count("#SBATCH --array=0-3%2") == 1  # one array for the sweep, 2 at a time
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=45", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "module load cuda"):
        assert line in script, line
    assert str(out / ".submitit") in script  # job files beside the runs, in a hidden folder
    assert [j.job_id for j in lch.jobs] == [f"4242_{i}" for i in range(4)]


# --------------------------------------------------------------------------------------------
# submitit's debug executor: the whole path in this process
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_and_submitit_debug_run_pending_runs_only(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    pytest.importorskip("torch")
    import torch

    from runner.launchers import LocalLauncher, SlurmLauncher
    from runner.logwriter import RunLogger
    from runner.sweep import pending, plan

    torch.set_num_threads(1)
    planned = plan(_sweep(tmp_path, SWEEP.replace("seeds = 2", "seeds = 1")))
    out = tmp_path / "runs"
    # a leftover of a killed job: run.json still says running
    RunLogger(out, planned[0].run_id, planned[0].config).flush()
    todo = pending(planned, out)
    assert [p.run_id for p in todo] == [p.run_id for p in planned]
    done: list[tuple[str, str]] = []
    # the first run through the local launcher (stabstat-run's own pool/serial path), the rest
    # through submitit's in-process executor
    local = LocalLauncher(jobs=1).launch(todo[:1], out, threads=1, on_done=lambda r, s: done.append((r, s)))
    statuses = SlurmLauncher(cluster="debug").launch(todo[1:], out, threads=1,
                                                     on_done=lambda r, s: done.append((r, s)))
    statuses.update(local)
    assert statuses == {p.run_id: "completed" for p in planned}
    assert sorted(done) == sorted(statuses.items())
    _check_runs(out, [p.run_id for p in planned])
    assert pending(planned, out) == []


# --------------------------------------------------------------------------------------------
# submitit's local executor: a 4-run sweep in subprocesses, a job killed, resubmitted
# --------------------------------------------------------------------------------------------

# three 2-step runs and one long run (the one that gets killed)
KILL_SWEEP = SWEEP.split("[grid]")[0].replace("seeds = 2", "seeds = 1") + """
[[arms]]
name = "a"
[[arms]]
name = "b"
lr = 1e-4
[[arms]]
name = "c"
bias_correction = false
[[arms]]
name = "long"
max_steps = 100
"""


@pytest.mark.slow
def test_submitit_local_sweep_kill_and_resubmit(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    pytest.importorskip("torch")
    from runner.cli import run_cmd
    from runner.launchers import SlurmLauncher
    from runner.sweep import pending, plan

    sweep = _sweep(tmp_path, KILL_SWEEP)
    planned = plan(sweep)
    assert len(planned) == 4
    out = tmp_path / "runs"
    [victim] = [p for p in planned if p.config["max_steps"] == 100]
    lch = SlurmLauncher(cluster="local", wait=False)
    lch.launch(planned, out, threads=1)
    # SIGKILL the training process of one long run once it is training (an OOM kill, a lost node)
    rj_path = out / victim.run_id / "run.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            rj = json.loads(rj_path.read_text())
        except (OSError, ValueError):
            rj = {}
        if rj.get("task"):  # data loaded, model training
            break
        time.sleep(0.05)
    else:
        pytest.fail("the run never started")
    os.kill(int(rj["environment"]["pid"]), signal.SIGKILL)
    results = {}
    for p, job in zip(planned, lch.jobs, strict=True):
        job._results_timeout_s = 0  # no result file is coming from the killed job (local disk, no NFS lag)
        while not job.done():
            time.sleep(0.2)
        results[p.run_id] = SlurmLauncher._result(job, p.run_id)
    assert results.pop(victim.run_id) in ("interrupted", "failed")
    assert set(results.values()) == {"completed"}
    assert json.loads(rj_path.read_text())["status"] == "running"  # what a kill -9 leaves
    assert [p.run_id for p in pending(planned, out)] == [victim.run_id]
    before = {p.run_id: (out / p.run_id / "run.json").read_bytes() for p in planned if p is not victim}

    # resubmission through the CLI: only the killed run runs again, in the same directory
    r = CliRunner().invoke(run_cmd, [str(sweep), "--out", str(out), "--launcher", "slurm",
                                     "--submitit-cluster", "local", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "3 already done, 1 to run" in r.output
    assert f"{victim.run_id} completed" in r.output
    _check_runs(out, [p.run_id for p in planned])
    for run_id, data in before.items():
        assert (out / run_id / "run.json").read_bytes() == data  # completed runs never re-run
    import pyarrow.parquet as pq

    steps = pq.read_table(out / victim.run_id / "steps.parquet").column("step").to_pylist()
    assert steps == list(range(1, 101))  # one attempt: nothing of the killed one duplicated


# --------------------------------------------------------------------------------------------
# ray, started locally
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_runs_the_sweep_and_resumes(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("torch")
    from runner.launchers import RayLauncher
    from runner.sweep import pending, plan

    planned = plan(_sweep(tmp_path))
    out = tmp_path / "runs"
    # one run already done: the launcher is handed only the pending ones
    import torch

    from runner.train import run_planned

    torch.set_num_threads(1)
    assert run_planned(planned[0], out, threads=1) == "completed"
    first = (out / planned[0].run_id / "run.json").read_bytes()
    todo = pending(planned, out)
    assert len(todo) == 3
    # Ray is told this node has one GPU (it trusts the declaration): the launcher must then give
    # each run a whole GPU, so the runs take turns although two CPUs are free.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        statuses = RayLauncher().launch(todo, out, threads=1)
    finally:
        ray.shutdown()
    assert statuses == {p.run_id: "completed" for p in todo}
    _check_runs(out, [p.run_id for p in planned])
    from stabstat.rundir import parse_timestamp

    spans = sorted(
        (parse_timestamp(rj["started_at"]), parse_timestamp(rj["finished_at"]))
        for rj in (json.loads((out / p.run_id / "run.json").read_text()) for p in todo)
    )
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))  # one at a time
    assert (out / planned[0].run_id / "run.json").read_bytes() == first
    assert pending(planned, out) == []
