"""runner.hf_callback: a Trainer run writes a valid run directory with pre-clip norms, and the
callback's take-over of clipping leaves training unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import pyarrow.parquet as pq  # noqa: E402

from runner.hf_callback import StabstatCallback  # noqa: E402
from stabstat.validate import validate_run  # noqa: E402


class _Data(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1000, 2000, (n, 12), generator=g)
        self.y = (self.x[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.x[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.y[i]}


def _train(tmp_path: Path, name: str, callbacks: list[Any]) -> tuple[Any, Any]:
    from runner.models import load_model

    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = load_model("tiny", num_labels=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / name), max_steps=6, per_device_train_batch_size=8, learning_rate=1e-3,
        warmup_steps=2, logging_steps=1, eval_strategy="steps", eval_steps=3, max_grad_norm=0.05,
        save_strategy="no", report_to=[], use_cpu=True, seed=7, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Data(48, 1), eval_dataset=_Data(16, 2),
                                   callbacks=callbacks)
    trainer.train()
    return trainer, model


@pytest.mark.slow
def test_trainer_run_directory(tmp_path: Path) -> None:
    cb = StabstatCallback(tmp_path / "runs", config={"task": "toy", "recipe": "hf"},
                          task={"name": "toy", "num_labels": 2, "metrics": ["loss"], "majority": {}})
    trainer, model = _train(tmp_path, "with", [cb])
    d = tmp_path / "runs" / cb.run_id
    assert validate_run(d) == []
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "completed"
    cfg = info["config"]
    assert (cfg["lr"], cfg["seed"], cfg["max_steps"], cfg["max_grad_norm"], cfg["task"], cfg["recipe"]) == (
        1e-3, 7, 6, 0.05, "toy", "hf")
    assert "layer_grads_after_clipping" not in cfg
    assert trainer.args.max_grad_norm == 0.05  # restored after train()

    steps = pq.read_table(d / "steps.parquet").to_pylist()
    hist = {h["step"]: h for h in trainer.state.log_history if "loss" in h}
    assert [s["step"] for s in steps] == list(range(1, 7))
    for s in steps:
        h = hist[s["step"]]
        assert s["loss"] == pytest.approx(h["loss"], rel=1e-6)
        assert s["grad_norm"] == pytest.approx(h["grad_norm"], rel=1e-5)  # the Trainer's pre-clip norm
        assert s["grad_norm"] > 0.05  # clipping was active, yet the norm is the pre-clip one
        assert s["lr"] == pytest.approx(h["learning_rate"], rel=1e-9)
    layers = pq.read_table(d / "layer_grads.parquet").to_pylist()
    for s in steps:
        norms = [r["grad_norm"] for r in layers if r["step"] == s["step"]]
        assert math.sqrt(sum(n * n for n in norms)) == pytest.approx(s["grad_norm"], rel=1e-5)
    evals = pq.read_table(d / "evals.parquet").to_pylist()
    assert sorted({(r["step"], r["metric"]) for r in evals}) == [(3, "loss"), (6, "loss")]

    # the take-over of clipping does not change training
    _, plain = _train(tmp_path, "without", [])
    for (n, a), (_, b) in zip(model.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), n
