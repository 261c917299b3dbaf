"""runner.train: one run end to end with the tiny model; determinism; divergence; failures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402

from runner import sweep, train  # noqa: E402
from stabstat.validate import validate_run  # noqa: E402

FAST = {"model": "tiny", "max_length": 32, "n_train": 64, "max_steps": 8, "eval_every": 3, "batch_size": 16}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def _plan(**config: Any) -> sweep.PlannedRun:
    return sweep.plan({"config": {"task": "synthetic", **FAST, **config}})[0]


def _tables(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for t in ("steps", "layer_grads", "evals", "predictions"):
        rows = pq.read_table(run_dir / f"{t}.parquet").to_pylist()
        for r in rows:
            r.pop("wall_time", None)
        out[t] = rows
    return out


def test_lr_schedule() -> None:
    lrs = [train.lr_at(s, lr=1.0, total_steps=10, warmup_steps=2) for s in range(1, 11)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert [train.lr_at(s, lr=2.0, total_steps=4, warmup_steps=0) for s in (1, 4)] == [2.0, 0.5]


@pytest.mark.slow
def test_one_run_writes_a_valid_directory(tmp_path: Path) -> None:
    p = _plan(max_grad_norm=0.01)
    status = train.run_planned(p, tmp_path, threads=1)
    d = tmp_path / p.run_id
    assert status == "completed"
    assert validate_run(d) == []
    info = json.loads((d / "run.json").read_text())
    assert info["config"] == p.config
    assert info["task"]["n_train"] == 64 and info["task"]["n_dev"] == 300 and info["task"]["generated"]
    assert info["task"]["majority"] == {"accuracy": pytest.approx(0.6)}
    assert {"torch", "transformers", "datasets"} <= set(info["environment"]["packages"])
    t = _tables(d)
    assert [r["step"] for r in t["steps"]] == list(range(1, 9))
    # warm-up over ceil(0.1 * 8) = 1 step, then linear decay
    assert [r["lr"] for r in t["steps"]] == pytest.approx(
        [train.lr_at(s, lr=2e-5, total_steps=8, warmup_steps=1) for s in range(1, 9)])
    assert [r["epoch"] for r in t["steps"]] == pytest.approx([s / 4 for s in range(1, 9)])
    # grad_norm is the pre-clip total: above the clip threshold, and the root-sum-square of the layers
    for s in t["steps"]:
        layers = [r["grad_norm"] for r in t["layer_grads"] if r["step"] == s["step"]]
        assert s["grad_norm"] > 0.01
        assert math.sqrt(sum(x * x for x in layers)) == pytest.approx(s["grad_norm"], rel=1e-9)
    names = [r["layer"] for r in t["layer_grads"] if r["step"] == 1]
    assert names == ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]
    assert sorted({r["step"] for r in t["evals"]}) == [0, 3, 6, 8]
    assert {r["metric"] for r in t["evals"]} == {"accuracy", "loss"}
    assert len(t["predictions"]) == 4 * 300
    # accuracy logged = accuracy of the logged predictions
    for step in (0, 8):
        preds = [r for r in t["predictions"] if r["step"] == step]
        acc = sum(r["label"] == r["prediction"] for r in preds) / len(preds)
        logged = next(r["value"] for r in t["evals"] if r["step"] == step and r["metric"] == "accuracy")
        assert logged == pytest.approx(acc)
        assert all(0.5 <= r["probability"] <= 1.0 for r in preds)


@pytest.mark.slow
def test_same_config_and_seed_give_identical_logs(tmp_path: Path) -> None:
    p = _plan(dropout=0.1)
    train.run_planned(p, tmp_path / "a", threads=1)
    torch.manual_seed(12345)  # global state left over by the caller must not matter
    train.run_planned(p, tmp_path / "b", threads=1)
    a, b = _tables(tmp_path / "a" / p.run_id), _tables(tmp_path / "b" / p.run_id)
    assert a == b
    other = sweep.plan({"seeds": [1], "config": {"task": "synthetic", **FAST, "dropout": 0.1}})[0]
    train.run_planned(other, tmp_path / "a", threads=1)
    c = _tables(tmp_path / "a" / other.run_id)
    assert [r["loss"] for r in c["steps"]] != [r["loss"] for r in a["steps"]]


def test_run_planned_is_idempotent_and_redoes_leftovers(tmp_path: Path) -> None:
    p = _plan(max_steps=2, eval_every=None)
    assert train.run_planned(p, tmp_path, threads=1) == "completed"
    mtime = (tmp_path / p.run_id / "run.json").stat().st_mtime_ns
    assert train.run_planned(p, tmp_path, threads=1) == "completed"
    assert (tmp_path / p.run_id / "run.json").stat().st_mtime_ns == mtime
    # a killed attempt: status running, a stray part file -> deleted and redone from scratch
    info = json.loads((tmp_path / p.run_id / "run.json").read_text())
    info["status"] = "running"
    (tmp_path / p.run_id / "run.json").write_text(json.dumps(info))
    (tmp_path / p.run_id / "steps.parts").mkdir()
    (tmp_path / p.run_id / "steps.parts" / "part-000009.parquet").write_bytes(b"junk")
    assert train.run_planned(p, tmp_path, threads=1) == "completed"
    assert not (tmp_path / p.run_id / "steps.parts").exists()
    assert validate_run(tmp_path / p.run_id) == []


def test_diverged_run_stops_and_is_marked(tmp_path: Path) -> None:
    # An absurd learning rate without clipping overflows the logits within a few steps.
    p = _plan(lr=1e30, max_grad_norm=None, max_steps=30, eval_every=100, warmup_ratio=0.0)
    status = train.run_planned(p, tmp_path, threads=1)
    d = tmp_path / p.run_id
    assert status == "diverged"
    assert validate_run(d) == []
    t = _tables(d)
    losses = [r["loss"] for r in t["steps"]]
    assert not math.isfinite(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])
    assert len(losses) < 30
    assert max(r["step"] for r in t["evals"]) == len(losses)  # evaluated once more at the stop


def test_exception_is_recorded_and_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.models

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("no memory left")

    monkeypatch.setattr(runner.models, "load_model", boom)
    p = _plan()
    assert train.run_planned(p, tmp_path, threads=1) == "failed"
    info = json.loads((tmp_path / p.run_id / "run.json").read_text())
    assert info["status"] == "failed" and "no memory left" in info["error"]


def test_glue_pair_task_with_n_train(tmp_path: Path, glue_dir: Path) -> None:
    p = sweep.plan({"config": {"task": "mrpc", **FAST, "max_steps": 2, "eval_every": None}})[0]
    assert train.run_planned(p, tmp_path, data_dir=str(glue_dir), threads=1) == "completed"
    d = tmp_path / p.run_id
    assert validate_run(d) == []
    info = json.loads((d / "run.json").read_text())
    assert info["task"]["metrics"] == ["accuracy", "f1", "acc_f1"] and info["task"]["n_dev"] == 408
    metrics = {r["metric"] for r in _tables(d)["evals"]}
    assert metrics == {"accuracy", "f1", "acc_f1", "loss"}
