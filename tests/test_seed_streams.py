"""Seed streams of the runner: init_seed, order_seed, dropout_seed (default: seed) next to data_seed.

Old sweeps must plan the same configs and run ids as before the streams existed; changing one
stream must change only what it drives (initial weights, batch order, dropout masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner import sweep
from stabstat.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"model": "tiny", "max_length": 32, "n_train": 64, "max_steps": 3, "eval_every": 100, "batch_size": 16,
        "dropout": 0.1}


def test_old_sweeps_keep_their_run_ids() -> None:
    # The recorded demo runs are this sweep with --seeds 10-19 (README): the run ids the runner
    # plans for them are the folders committed.
    recorded = {p.name for p in (ROOT / "examples" / "recorded" / "runs").iterdir() if p.is_dir()}
    planned = {r.run_id for r in sweep.plan(ROOT / "examples" / "demo" / "sweep.toml", seeds=list(range(10, 20)))}
    assert recorded and recorded == planned
    # Pinned before the change (git HEAD 6a645ad): a tiny synthetic config, seed 1.
    runs = sweep.plan({"config": {"task": "synthetic", "model": "tiny", "max_steps": 8}}, seeds=2)
    assert runs[1].run_id == "synthetic-cbc7341c45"
    assert not set(sweep.SEED_STREAMS) & set(runs[1].config)


def test_null_stream_is_the_default_and_a_set_one_is_a_new_run() -> None:
    base = sweep.plan({"config": {"task": "synthetic", "model": "tiny", "max_steps": 8}})[0]
    for key in sweep.SEED_STREAMS:
        same = sweep.plan({"config": {"task": "synthetic", "model": "tiny", "max_steps": 8, key: None}})[0]
        assert same.run_id == base.run_id and key not in same.config
        other = sweep.plan({"config": {"task": "synthetic", "model": "tiny", "max_steps": 8, key: 3}})[0]
        assert other.run_id != base.run_id and other.config[key] == 3


def test_a_sweep_crosses_init_and_order_seeds() -> None:
    runs = sweep.plan({"seeds": 1, "config": {"task": "synthetic", "model": "tiny", "max_steps": 8},
                       "grid": {"init_seed": [0, 1, 2, 3, 4], "order_seed": [0, 1, 2, 3, 4]}})
    assert len({r.run_id for r in runs}) == 25
    assert {(r.config["init_seed"], r.config["order_seed"]) for r in runs} == {
        (i, o) for i in range(5) for o in range(5)}
    with pytest.raises(ConfigError, match=r"\[grid\]\.order_seed\[0\].*integer"):
        sweep.plan({"config": {"task": "synthetic"}, "grid": {"order_seed": ["x"]}})
    with pytest.raises(ConfigError, match="init_seed = -1 is below the minimum"):
        sweep.plan({"config": {"task": "synthetic", "init_seed": -1}})


def test_seed_streams_defaults() -> None:
    from runner.train import seed_streams

    assert seed_streams({"seed": 7}) == {"init_seed": 7, "order_seed": 7, "dropout_seed": 7, "data_seed": 0}
    assert seed_streams({"seed": 7, "order_seed": 2, "data_seed": "seed", "init_seed": None}) == {
        "init_seed": 7, "order_seed": 2, "dropout_seed": 7, "data_seed": 7}


# --------------------------------------------------------------------------- training


def _trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **streams: Any) -> dict[str, Any]:
    """Train a 3-step tiny run and record its initial weights, its training batches' indices,
    the step losses and the step-0 dev loss."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq

    import runner.models
    from runner import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    seen: dict[str, Any] = {"encoded": [], "batches": []}
    real_load, real_init, real_batch = runner.models.load_model, train._Encoded.__init__, train._Encoded.batch

    def load(*a: Any, **k: Any) -> Any:
        model = real_load(*a, **k)
        seen["weights"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

    def init(self: Any, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        seen["encoded"].append(self)

    def batch(self: Any, idx: Any, device: Any) -> Any:
        if self is seen["encoded"][0]:  # the training split is encoded first
            seen["batches"].append(idx.tolist())
        return real_batch(self, idx, device)

    p = sweep.plan({"config": {"task": "synthetic", **FAST, **streams}})[0]
    with monkeypatch.context() as m:  # undone before the next trace wraps the same functions
        m.setattr(runner.models, "load_model", load)
        m.setattr(train._Encoded, "__init__", init)
        m.setattr(train._Encoded, "batch", batch)
        assert train.run_planned(p, tmp_path / name, threads=1) == "completed"
    d = tmp_path / name / p.run_id
    steps = pq.read_table(d / "steps.parquet").to_pylist()
    evals = pq.read_table(d / "evals.parquet").to_pylist()
    seen["losses"] = [r["loss"] for r in sorted(steps, key=lambda r: r["step"])]
    seen["dev_loss_0"] = next(r["value"] for r in evals if r["step"] == 0 and r["metric"] == "loss")
    return seen


def _same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_each_stream_changes_only_what_it_drives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _trace(tmp_path, monkeypatch, "base", init_seed=0, order_seed=0, dropout_seed=0)
    order = _trace(tmp_path, monkeypatch, "order", init_seed=0, order_seed=1, dropout_seed=0)
    init = _trace(tmp_path, monkeypatch, "init", init_seed=1, order_seed=0, dropout_seed=0)
    drop = _trace(tmp_path, monkeypatch, "drop", init_seed=0, order_seed=0, dropout_seed=1)
    again = _trace(tmp_path, monkeypatch, "again", init_seed=0, order_seed=0, dropout_seed=0)
    assert again["losses"] == base["losses"] and again["batches"] == base["batches"]
    # order_seed: same initial weights (and step-0 dev loss), other batches
    assert _same_weights(order["weights"], base["weights"]) and order["dev_loss_0"] == base["dev_loss_0"]
    assert order["batches"] != base["batches"]
    # init_seed: other initial weights, same batches
    assert not _same_weights(init["weights"], base["weights"]) and init["dev_loss_0"] != base["dev_loss_0"]
    assert init["batches"] == base["batches"]
    # dropout_seed: same weights and batches, other dropout masks -> other training losses
    assert _same_weights(drop["weights"], base["weights"]) and drop["batches"] == base["batches"]
    assert drop["losses"] != base["losses"]


@pytest.mark.slow
def test_a_run_without_streams_keeps_one_init_and_dropout_stream(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Without init_seed/dropout_seed the dropout masks continue the init stream, as before the
    # keys existed; setting both to the seed re-seeds dropout, so the losses differ while the
    # weights and batches stay.
    old = _trace(tmp_path, monkeypatch, "old")
    explicit = _trace(tmp_path, monkeypatch, "explicit", init_seed=0, dropout_seed=0)
    assert _same_weights(old["weights"], explicit["weights"]) and old["batches"] == explicit["batches"]
    assert old["losses"] != explicit["losses"]
