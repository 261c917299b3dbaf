"""W&B run folders (stabstat.ingest.sources.wandb), written by the real client in offline mode
(`WANDB_MODE=offline`: no network, no login): every value round-trips from the binary
``run-<id>.wandb`` log; ``latest-run`` counted once; a killed process keeps what it logged;
exit codes; cut and unreadable logs; compare = own format. Only the online layout's side files
(``files/config.yaml``, ``wandb-summary.json``, ``wandb-metadata.json``) and the old
``wandb-history.jsonl`` layout are hand-written: the offline client (0.29) writes none of them
(its run folder holds the ``.wandb`` log, ``files/requirements.txt`` and ``logs/``; asserted)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stabstat.errors import InputFormatError
from stabstat.ingest.discover import walk
from stabstat.ingest.sources.wandb import WandbSource, read_wandb_run
from stabstat.store import Store
from tests.tracker_fixtures import (
    SweepRun,
    assert_same,
    compare_json,
    ingest_cli,
    make_sweep,
    write_own_format,
)

wandb = pytest.importorskip("wandb")
pytest.importorskip("wandb.sdk.internal.datastore", reason="wandb >= 0.30 has no record reader: stabstat[wandb] pins it")


def _offline_env(root: Path) -> dict[str, str]:
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root),
            "WANDB_CONFIG_DIR": str(root / ".config"), "WANDB_CACHE_DIR": str(root / ".cache"),
            "WANDB_DATA_DIR": str(root / ".data"), "WANDB_DISABLE_GIT": "true"}


def _log(run, r: SweepRun) -> None:
    for step, loss, lr, g in zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True):
        run.log({"train/loss": loss, "train/learning_rate": lr, "train/grad_norm": g,
                 "train/epoch": step / len(r.steps)}, step=step)
    run.log({"eval/accuracy": r.accuracy, "val/f1": r.f1}, step=r.steps[-1])


def write_sweep(root: Path, sweep: list[SweepRun]) -> dict[str, SweepRun]:
    """Each run through ``wandb.init`` (offline) -> W&B run id -> its numbers."""
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _offline_env(root).items():
            mp.setenv(k, v)
        for r in sweep:
            run = wandb.init(project="stab", dir=str(root), config={
                "task": "rte", "lr": r.lr, "seed": r.seed, "bias_correction": r.bias_correction,
                "optim": {"name": "adamw", "betas": [0.9, 0.999]}, "warmup": None})
            _log(run, r)
            run.summary["best_accuracy"] = r.accuracy
            run.finish()
            ids[run.id] = r
        wandb.teardown()
    return ids


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wb")
    sweep = make_sweep(seeds=3, n_steps=6)  # 2 configurations x 3 seeds
    return root, write_sweep(root, sweep)


def test_offline_runs_round_trip(sweep_dir):
    root, ids = sweep_dir
    wdir = root / "wandb"
    assert (wdir / "latest-run").is_symlink()
    found = walk([wdir], [WandbSource()], expected="x")
    assert len(found) == len(ids)  # latest-run is not a second copy
    assert all(d.name.startswith("offline-run-") for _, d in found)
    for _, d in found:
        # What the offline client (0.29) writes, checked rather than assumed: the .wandb log,
        # files/requirements.txt and logs/, but none of the side files an online run's sender
        # writes (files/config.yaml, wandb-summary.json, wandb-metadata.json): everything
        # below comes from the log. If a client starts writing them, this fails and the side
        # file test should use the real ones.
        assert (d / "files" / "requirements.txt").is_file() and next(d.glob("run-*.wandb")).is_file()
        assert not [f for n in ("config.yaml", "wandb-summary.json", "wandb-metadata.json", "wandb-history.jsonl")
                    for f in d.rglob(n)]
        rec = read_wandb_run(d)
        r = ids[rec.run_id]
        assert rec.status == "completed" and rec.error is None and rec.source_format == "wandb"
        steps = rec.rows("steps")
        assert [(s["step"], s["loss"], s["lr"], s["grad_norm"], s["epoch"]) for s in steps] == [
            (st, loss, lr, g, st / len(r.steps)) for st, loss, lr, g in zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True)]
        walls = [s["wall_time"] for s in steps]
        assert all(w is not None and w >= 0 for w in walls) and walls == sorted(walls)
        assert {(e["step"], e["split"], e["metric"]): e["value"] for e in rec.rows("evals")} == {
            (r.steps[-1], "eval", "accuracy"): r.accuracy, (r.steps[-1], "val", "f1"): r.f1}
        assert rec.factors == {"task": "rte", "lr": r.lr, "seed": r.seed, "bias_correction": r.bias_correction,
                               "warmup": None}
        assert rec.config["optim"] == {"name": "adamw", "betas": [0.9, 0.999]}
        assert rec.environment["summary"]["best_accuracy"] == r.accuracy
        assert rec.environment["project"] == "stab" and rec.started_at and rec.finished_at
    # the user may name latest-run, the .wandb log or the folder: one run each time
    latest = wdir / "latest-run"
    log = next(latest.resolve().glob("run-*.wandb"))
    assert len(walk([latest, log, latest.resolve()], [WandbSource()], expected="x")) == 1


def test_ingest_into_the_store_and_again(sweep_dir, tmp_path):
    root, ids = sweep_dir
    db = tmp_path / "w.duckdb"
    res = ingest_cli([str(root / "wandb")], db)
    assert res.exit_code == 0, res.output
    with Store.open(db) as store:
        runs = dict(store.con.execute("SELECT run_id, lr FROM runs WHERE source_format = 'wandb'").fetchall())
        n = store.con.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert runs == {rid: r.lr for rid, r in ids.items()}
    assert n == sum(len(r.steps) for r in ids.values())
    again = ingest_cli([str(root / "wandb")], db)
    assert again.exit_code == 0 and "unchanged" in again.output


def test_killed_process_keeps_what_it_logged(tmp_path):
    """A real crash: the process is SIGKILLed mid-run; the log holds every block written."""
    script = textwrap.dedent("""
        import os, signal, time, wandb
        run = wandb.init(project="stab", config={"lr": 1e-5, "seed": 0})
        for s in range(1, 1501):
            run.log({"train/loss": 1.0 / s, "train/learning_rate": 1e-5}, step=s)
        time.sleep(2)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, **_offline_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (d,) = [d for d in (tmp_path / "wandb").iterdir() if d.name.startswith("offline-run-")]
    rec = read_wandb_run(d)
    assert rec.status == "interrupted" and "no exit record" in rec.error
    steps = rec.rows("steps")
    assert len(steps) >= 1000, "whole 32 KiB blocks reach the file before the kill"
    assert [(s["step"], s["loss"]) for s in steps] == [(s, 1.0 / s) for s in range(1, len(steps) + 1)]


def test_exit_code_and_cut_log(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _offline_env(tmp_path).items():
            mp.setenv(k, v)
        run = wandb.init(project="stab", config={"lr": 1e-5})
        for s in range(1, 400):
            run.log({"loss": 0.5, "eval_accuracy": 0.7}, step=s)
        run.finish(exit_code=3)
        wandb.teardown()
    (d,) = [d for d in (tmp_path / "wandb").iterdir() if d.name.startswith("offline-run-")]
    rec = read_wandb_run(d)
    assert rec.status == "failed" and rec.error == "the run exited with code 3" and len(rec.rows("steps")) == 399
    log = next(d.glob("run-*.wandb"))
    data = log.read_bytes()
    log.write_bytes(data[: len(data) // 2 + 11])  # cut mid-record
    cut = read_wandb_run(d)
    assert cut.status == "interrupted" and str(log) in cut.error and "the records before it are kept" in cut.error
    assert 0 < len(cut.rows("steps")) < 399


def test_unreadable_log_one_line_exit_1_good_runs_kept(sweep_dir, tmp_path):
    root, ids = sweep_dir
    wdir = tmp_path / "wandb"
    shutil.copytree(root / "wandb", wdir, symlinks=True)
    latest = wdir / "latest-run"  # as on Windows: a copy of the newest run, not a link
    target = latest.resolve()
    latest.unlink()
    shutil.copytree(target, latest)
    bad = wdir / "run-20260101_000000-junk0001"
    bad.mkdir()
    (bad / "run-junk0001.wandb").write_bytes(b"this is not a W&B log at all")
    with pytest.raises(InputFormatError, match="not a W&B run log"):
        read_wandb_run(bad)
    db = tmp_path / "bad.duckdb"
    res = ingest_cli([str(wdir)], db)
    assert res.exit_code == 1
    (line,) = [ln for ln in res.stderr.splitlines() if "junk0001" in ln]
    assert str(bad / "run-junk0001.wandb") in line and "not a W&B run log" in line and "delete it" in line
    assert "Traceback" not in res.output
    with Store.open(db) as store:
        assert store.con.execute("SELECT count(*) FROM runs").fetchone()[0] == len(ids)


def test_side_files_summary_only_and_old_layout(tmp_path):
    """Side files the installed client cannot produce here, so written by hand in W&B's shapes:

    - the online layout's ``files/config.yaml`` (values wrapped as ``{desc, value}``, as
      ``wandb.sdk.lib.config_util.save_config_file_from_dict`` writes them),
      ``files/wandb-summary.json`` (bare ``NaN``/``Infinity``: Python's ``json.dumps``) and
      ``files/wandb-metadata.json``. An online run's sender writes them; the offline client
      (0.29, checked in ``test_offline_runs_round_trip``) writes only the ``.wandb`` log,
      ``files/requirements.txt`` and ``logs/``, and an online run needs the network;
    - the old layout (clients before ~0.10): ``wandb-history.jsonl`` (train and val rows
      alternating) and ``config.yaml`` beside it, no ``files/`` folder and no ``.wandb`` log.

    Everything an offline run has is written by the real client in the other tests."""
    yaml = pytest.importorskip("yaml")
    online = tmp_path / "wandb" / "run-20240102_030405-abcd1234"
    (online / "files").mkdir(parents=True)
    (online / "files" / "config.yaml").write_text(yaml.safe_dump({
        "_wandb": {"desc": None, "value": {"cli_version": "0.16.0", "t": {"1": [1, 5]}}},
        "lr": {"desc": None, "value": 2e-05}, "seed": {"desc": None, "value": 4},
        "bias_correction": {"desc": None, "value": False}, "model": {"desc": None, "value": "bert-base"}}))
    (online / "files" / "wandb-summary.json").write_text(
        '{"eval/accuracy": 0.625, "train/loss": NaN, "best": Infinity, "_step": 300, "_runtime": 12.5, '
        '"media": {"_type": "image-file"}}')
    (online / "files" / "wandb-metadata.json").write_text(json.dumps({
        "python": "3.11.7", "host": "gpu-7", "program": "train.py", "startedAt": "2024-01-02T03:04:05.123456",
        "gpu": "NVIDIA A100", "gpu_count": 1}))
    rec = read_wandb_run(online)
    assert rec.run_id == "abcd1234"
    assert rec.factors == {"lr": 2e-05, "seed": 4, "bias_correction": False, "model": "bert-base"}
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in rec.rows("evals")] == [
        (300, "eval", "accuracy", 0.625), (300, "train", "best", None)]  # an extra; inf is null in evals
    (row,) = rec.rows("steps")
    assert row["step"] == 300 and row["loss"] != row["loss"]  # NaN kept: the run diverged
    assert rec.status == "diverged"
    assert rec.environment["host"] == "gpu-7" and rec.environment["gpu"] == "NVIDIA A100"
    assert rec.started_at.startswith("2024-01-02T03:04:05")
    assert rec.environment["summary"]["best"] == "inf"

    old = tmp_path / "wandb" / "run-20200102_030405-old00001"
    old.mkdir(parents=True)
    rows = [{"_step": 1, "_timestamp": 1.6e9, "train_loss": 0.7, "lr": 1e-5},
            {"_step": 1, "_timestamp": 1.6e9 + 1, "val_acc": 0.55},
            {"_step": 2, "_timestamp": 1.6e9 + 2, "train_loss": 0.6, "lr": 1e-5}]
    (old / "wandb-history.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n"
                                             + '{"_step": 2, "_timestamp": 1600000003, "val_acc": 0.6, "val_loss": NaN}\n')
    (old / "config.yaml").write_text("wandb_version: 1\nlr:\n  desc: null\n  value: 1.0e-05\n")
    rec = read_wandb_run(old)
    assert [(s["step"], s["loss"], s["lr"]) for s in rec.rows("steps")] == [(1, 0.7, 1e-5), (2, 0.6, 1e-5)]
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in rec.rows("evals")] == [
        (1, "val", "acc", 0.55), (2, "val", "acc", 0.6), (2, "val", "loss", None)]
    assert rec.factors == {"wandb_version": 1, "lr": 1e-05} and rec.status == "completed"
    assert {d.name for _, d in walk([tmp_path / "wandb"], [WandbSource()], expected="x")} == {online.name, old.name}


def test_compare_equals_own_format(tmp_path):
    sweep = make_sweep(seeds=6, n_steps=4)
    write_sweep(tmp_path / "w", sweep)
    write_own_format(tmp_path / "own", sweep)
    assert ingest_cli([str(tmp_path / "w" / "wandb")], tmp_path / "wb.duckdb").exit_code == 0
    assert ingest_cli([str(tmp_path / "own")], tmp_path / "own.duckdb").exit_code == 0
    ours = compare_json(tmp_path / "own.duckdb", "lr")
    assert [g["n_runs"] for g in ours["groups"]] == [6, 6] and ours["tests"]
    assert_same(compare_json(tmp_path / "wb.duckdb", "lr"), ours)
