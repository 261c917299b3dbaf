"""Shared fixtures: run directories written by the project's own writer, and HF Trainer logs.

``make_run`` (fixture) writes one run directory with :class:`runner.logwriter.RunLogger`
from a config, a list of training losses and evaluations; ``make_hf_run`` writes a
``trainer_state.json`` tree like the Hugging Face Trainer does. Both are plain functions
underneath (:func:`write_run`, :func:`write_trainer_state`) taking a target folder, so tests
can also call them on any folder. Everything is deterministic (seeded ``numpy`` generator).

Example
-------
>>> def test_something(make_run, tmp_path):  # doctest: +SKIP
...     d = make_run("rte-s1", config={"task": "rte", "seed": 1}, losses=[0.7, 0.6, 0.5],
...                  evals={3: {"accuracy": 0.8}}, task={"majority": {"accuracy": 0.53}})
...     assert (d / "run.json").exists() and d.parent == tmp_path / "runs"
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: The environment variable that points the tests at a GLUE copy (folders RTE, MRPC, CoLA, ...).
GLUE_ENV = "STABSTAT_GLUE_DIR"
#: Where the GLUE TSVs are looked for when ``$STABSTAT_GLUE_DIR`` is unset: beside the checkout.
GLUE_BESIDE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "glue"


def find_glue_dir() -> tuple[Path | None, str]:
    """The GLUE folder (``$STABSTAT_GLUE_DIR``, else ``../shared/data/glue`` beside the
    checkout) when it holds ``RTE/train.tsv``, and the reason when it does not."""
    env = os.environ.get(GLUE_ENV)
    folder = Path(env) if env else GLUE_BESIDE
    if (folder / "RTE" / "train.tsv").is_file():
        return folder, ""
    where = f"${GLUE_ENV}={env}" if env else f"{folder} (${GLUE_ENV} unset)"
    return None, (f"GLUE TSVs not found in {where}: set {GLUE_ENV} to a glue_data folder "
                  "(one folder per task: RTE/train.tsv, ...)")


#: Layers written by default (names and depths as runner.gradnorms produces them).
DEFAULT_LAYERS: tuple[str, ...] = ("embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier")

EvalSpec = Mapping[int, Mapping[str, float | None]] | Sequence[tuple[int, str, Mapping[str, float | None]]]


def write_run(
    out_dir: str | Path,
    run_id: str = "run-a",
    *,
    config: Mapping[str, Any] | None = None,
    losses: Sequence[float | None] | None = None,
    n_steps: int = 20,
    evals: EvalSpec | None = None,
    split: str = "dev",
    layers: Sequence[str] | None = DEFAULT_LAYERS,
    grad_every: int = 1,
    task: Mapping[str, Any] | None = None,
    predictions: int = 0,
    status: str | None = None,
    finish: bool = True,
    lr: float = 2e-5,
    seed: int = 0,
) -> Path:
    """Write one run directory ``out_dir/run_id`` with :class:`runner.logwriter.RunLogger`.

    Parameters
    ----------
    config
        The run's config (its scalar entries are the factors); default ``{"task": "rte", "seed": 0}``.
    losses
        Training loss per step (step ``i+1`` gets ``losses[i]``; NaN/inf make the run diverged;
        None = not logged). Default: ``n_steps`` losses decaying from 0.7.
    evals
        ``{step: {metric: value}}`` evaluated on ``split``, or ``[(step, split, {metric: value})]``.
        Default: ``{last_step: {"accuracy": 0.75}}``.
    layers, grad_every
        Per-layer gradient norms (seeded random) every ``grad_every`` steps; ``None`` = none.
    task
        Task facts for run.json (e.g. ``{"majority": {"accuracy": 0.53}}``).
    predictions
        Number of per-example predictions to log at the last evaluation (0 = none).
    status
        Final status passed to ``finish`` (default: completed, or diverged after a non-finite loss).
    finish
        False leaves the run "running": rows flushed as part files, run.json not final.

    Returns
    -------
    Path
        The run directory.
    """
    from runner.logwriter import RunLogger

    rng = np.random.default_rng(seed)
    if losses is None:
        losses = [0.7 * math.exp(-i / max(n_steps, 1)) + 0.01 * float(rng.random()) for i in range(n_steps)]
    last = len(losses)
    if evals is None:
        evals = {last: {"accuracy": 0.75}}
    items: list[tuple[int, str, Mapping[str, float | None]]]
    if isinstance(evals, Mapping):
        items = [(int(s), split, m) for s, m in evals.items()]
    else:
        items = [(int(s), sp, m) for s, sp, m in evals]
    cfg = dict(config) if config is not None else {"task": "rte", "seed": seed}

    log = RunLogger(out_dir, run_id, cfg, task=task, environment={"device": "cpu"}, flush_every_steps=10**9)
    for i, loss in enumerate(losses):
        step = i + 1
        log.log_step(step, loss=loss, lr=lr, grad_norm=float(1.0 + rng.random()), epoch=step / max(last, 1),
                     wall_time=0.1 * step)
        if layers and step % grad_every == 0:
            norms = [float(0.1 * (d + 1) * (1 + rng.random())) for d in range(len(layers))]
            log.log_layer_grads(step, list(layers), list(range(len(layers))), norms)
    for step, sp, metrics in sorted(items, key=lambda x: x[0]):
        log.log_eval(step, sp, metrics)
    if predictions:
        step = max((s for s, _, _ in items), default=last)
        ids = np.arange(predictions)
        labels = rng.integers(0, 2, predictions)
        preds = rng.integers(0, 2, predictions)
        log.log_predictions(step, split, ids, labels, preds, rng.random(predictions))
    if finish:
        log.finish(status or ("diverged" if log.diverged else "completed"))
    else:
        log.flush()
    return log.run_dir


def write_trainer_state(
    folder: str | Path,
    log_history: Sequence[Mapping[str, Any]],
    *,
    global_step: int | None = None,
    max_steps: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/trainer_state.json`` as the Hugging Face Trainer does (``log_history`` and
    the top-level bookkeeping keys). ``global_step`` defaults to the last entry's step."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = [e["step"] for e in log_history if "step" in e]
    gs = global_step if global_step is not None else (max(steps) if steps else 0)
    state = {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": log_history[-1].get("epoch", 0.0) if log_history else 0.0,
        "eval_steps": 500,
        "global_step": gs,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": list(log_history),
        "logging_steps": 10,
        "max_steps": max_steps if max_steps is not None else gs,
        "num_train_epochs": 3,
        "save_steps": 500,
        "total_flos": 0.0,
        "train_batch_size": 16,
        **(extra or {}),
    }
    path = folder / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2))  # NaN is written as NaN, as Python's json does
    return path


def hf_history(
    n_logs: int = 5,
    *,
    every: int = 10,
    eval_every: int = 20,
    losses: Sequence[float] | None = None,
    final: bool = True,
) -> list[dict[str, Any]]:
    """A Trainer ``log_history``: a training entry every ``every`` steps (loss, grad_norm,
    learning_rate, epoch, step), an evaluation entry (eval_loss, eval_accuracy, eval_runtime,
    ...) every ``eval_every`` steps, and the final ``train_runtime`` entry when ``final``."""
    out: list[dict[str, Any]] = []
    for i in range(n_logs):
        step = (i + 1) * every
        loss = losses[i] if losses is not None else round(0.7 - 0.05 * i, 4)
        out.append({"epoch": step / 100, "grad_norm": 1.5 + i, "learning_rate": 2e-5, "loss": loss, "step": step})
        if step % eval_every == 0:
            out.append({
                "epoch": step / 100, "eval_accuracy": 0.6 + 0.01 * i, "eval_loss": 0.65 - 0.01 * i,
                "eval_runtime": 1.25, "eval_samples_per_second": 200.0, "eval_steps_per_second": 12.5,
                "step": step,
            })
    if final:
        last = n_logs * every
        out.append({"epoch": last / 100, "step": last, "total_flos": 1.0, "train_loss": 0.6,
                    "train_runtime": 12.3, "train_samples_per_second": 10.0, "train_steps_per_second": 1.0})
    return out


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE TSV folder (see :func:`find_glue_dir`); the test is skipped, with the reason,
    when there is none."""
    folder, why = find_glue_dir()
    if folder is None:
        pytest.skip(why)
    return folder


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_run(run_id="run-a", *, out_dir=tmp_path / "runs", **write_run_options)``
    writes a run directory with RunLogger and returns its path (see :func:`write_run`)."""

    def factory(run_id: str = "run-a", *, out_dir: str | Path | None = None, **kwargs: Any) -> Path:
        return write_run(out_dir if out_dir is not None else tmp_path / "runs", run_id, **kwargs)

    return factory


@pytest.fixture
def make_hf_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_hf_run(rel="hf/seed=1", *, history=None, checkpoints=(), root=tmp_path,
    side=None, **write_trainer_state_options)`` writes a Hugging Face Trainer run folder
    ``root/rel``: its own ``trainer_state.json`` (unless ``own=False``), one
    ``checkpoint-<n>/trainer_state.json`` per entry of ``checkpoints`` holding the history up to
    step n, and ``side`` as ``run.json`` beside it. Returns the run folder."""

    def factory(
        rel: str = "hf/seed=1",
        *,
        history: Sequence[Mapping[str, Any]] | None = None,
        checkpoints: Sequence[int] = (),
        own: bool = True,
        root: str | Path | None = None,
        side: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Path:
        d = Path(root if root is not None else tmp_path) / rel
        hist = list(history) if history is not None else hf_history()
        for n in checkpoints:
            part = [e for e in hist if e.get("step", 0) <= n and "train_runtime" not in e]
            write_trainer_state(d / f"checkpoint-{n}", part, global_step=n, max_steps=kwargs.get("max_steps"))
        if own:
            write_trainer_state(d, hist, **kwargs)
        if side is not None:
            (d / "run.json").write_text(json.dumps(side))
        return d

    return factory
