"""Shared by the MLflow and W&B source tests: a sweep's numbers drawn once, written by the
trackers' own clients in the tests and by our RunLogger here, and `stabstat compare` on both."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from stabstat.cli import cli


@dataclass
class SweepRun:
    """One run of a sweep: its factors and the numbers every writer logs."""

    lr: float
    seed: int
    bias_correction: bool
    losses: list[float]  #: steps 1..n
    lrs: list[float]
    grad_norms: list[float]
    accuracy: float  #: final eval accuracy, at step n
    f1: float  #: final val f1, at step n
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        return list(range(1, len(self.losses) + 1))


def make_sweep(*, seeds: int = 6, n_steps: int = 8, seed: int = 20261130) -> list[SweepRun]:
    """2 configurations (lr 1e-5 / 3e-5, bias correction on / off) x ``seeds`` seeds; the
    second configuration has lower, noisier accuracies and one failed-looking run."""
    rng = np.random.default_rng(seed)
    runs = []
    for lr, bc in ((1e-5, True), (3e-5, False)):
        for s in range(seeds):
            losses = [float(0.7 * math.exp(-i / n_steps) + 0.01 * rng.random()) for i in range(n_steps)]
            acc = float(rng.normal(0.8, 0.02) if bc else rng.normal(0.7, 0.08))
            runs.append(SweepRun(lr=lr, seed=s, bias_correction=bc, losses=losses,
                                 lrs=[lr * (1 - i / n_steps) for i in range(n_steps)],
                                 grad_norms=[float(1 + rng.random()) for _ in range(n_steps)],
                                 accuracy=acc, f1=float(rng.uniform(0.5, 0.9))))
    return runs


def write_own_format(out: Path, runs: list[SweepRun]) -> None:
    """The same numbers as stabstat run directories (RunLogger, the contract's writer)."""
    from runner.logwriter import RunLogger

    for i, r in enumerate(runs):
        config = {"task": "rte", "lr": r.lr, "seed": r.seed, "bias_correction": r.bias_correction}
        with RunLogger(out, f"own-{i}", config, task={"metrics": ["accuracy", "f1"]},
                       flush_every_steps=10**9) as log:
            for step, loss, lr, g in zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True):
                log.log_step(step, loss=loss, lr=lr, grad_norm=g)
            log.log_eval(r.steps[-1], "eval", {"accuracy": r.accuracy})
            log.log_eval(r.steps[-1], "val", {"f1": r.f1})


def ingest_cli(paths: list[str], db: Path, *extra: str) -> Any:
    """`stabstat ingest PATHS --db DB` through click (the result: exit code, output)."""
    return CliRunner().invoke(cli, ["ingest", *paths, "--db", str(db), "--no-progress", *extra])


def compare_json(db: Path, by: str) -> dict[str, Any]:
    """`stabstat compare --by BY --split eval --format json` on ``db``: groups, tests and
    warnings (the settings name the database)."""
    res = CliRunner().invoke(cli, ["compare", "--db", str(db), "--by", by, "--metric", "accuracy",
                                   "--split", "eval", "--resamples", "2000", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout if hasattr(res, "stdout") else res.output)
    return {k: out[k] for k in ("by", "groups", "tests", "warnings")}


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """``a == b`` with floats equal to 1e-9 relative (sums over runs stored in another order
    differ in the last bit), NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
