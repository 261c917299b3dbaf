"""Early failure prediction (issue 14): what ``stabstat early`` and ``--stop-doomed`` cost.

* ``early`` over a generated store (runs x steps written by the real ``RunLogger``, 30% failing,
  layer norms and dev evaluations): the whole analysis (7 K, two predictors, held-out folds,
  2,000 bootstrap resamples) against its floor, one DuckDB read of the per-step series it needs.
  Target: under 10 s for 300 runs x 200 steps on 2 cores (an interactive command).
* ``--stop-doomed`` in the runner: :class:`runner.stop_doomed.DoomWatch` per optimiser step
  (record + verdict) in microseconds, against a tiny-BERT training step (57 ms, FINDINGS) as the
  reference. Target: < 0.1% of a step.

Run alone: ``python -m benchmarks.bench_early [--quick]``.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK = {"name": "gen", "num_labels": 2, "n_train": 500, "n_dev": 200, "metrics": ["accuracy"],
        "majority": {"accuracy": 0.6}, "higher_is_better": {"accuracy": True}}


def _write(out: Path, runs: int, steps: int) -> None:
    from runner.logwriter import RunLogger

    s = np.arange(1, steps + 1)
    for i in range(runs):
        rng = np.random.default_rng(i)
        failed = rng.random() < 0.3
        rate = rng.uniform(15, 80)
        loss = (0.673 if failed else 0.1) + (0 if failed else 0.6 * np.exp(-s / rate)) + rng.normal(0, 0.02, steps)
        low = np.exp(-s / 10.0) + 1e-3 if failed else rng.uniform(0.5, 1.5, steps)
        cfg = {"task": "gen", "seed": i // 3, "lr": [1e-4, 5e-5, 2e-5][i % 3], "max_steps": steps}
        with RunLogger(out, f"gen-{i:04d}", cfg, task=TASK, flush_every_steps=10_000) as log:
            for st in range(1, steps + 1):
                log.log_step(st, loss=float(loss[st - 1]), lr=1e-4, grad_norm=1.0)
                log.log_layer_grads(st, ["embeddings", "encoder.layer.0"], [0, 1], [float(low[st - 1]), 1.0])
                if st % 20 == 0:
                    log.log_eval(st, "dev", {"accuracy": 0.6 if failed else 0.6 + 0.3 * (1 - math.exp(-st / rate))})


def _bench_early(runs: int, steps: int, repeats: int) -> dict[str, Any]:
    from stabstat.analysis import Settings
    from stabstat.analysis.early import early
    from stabstat.ingest import ingest
    from stabstat.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "runs", runs, steps)
        db = Path(tmp) / "s.duckdb"
        with Store.open(db, read_only=False) as store:
            ingest(store, [Path(tmp) / "runs"])
        ours, ref = [], []
        with Store.open(db) as store:
            for _ in range(repeats):  # interleaved
                t = time.perf_counter()
                early(store, settings=Settings(resamples=2000))
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.query("SELECT run_id, step, loss FROM steps ORDER BY run_id, step")
                store.query("SELECT run_id, step, arg_min(grad_norm, depth) FROM layer_grads GROUP BY run_id, step")
                store.query("SELECT run_id, step, value FROM evals ORDER BY run_id, step")
                ref.append(time.perf_counter() - t)
    o, r = statistics.median(ours), statistics.median(ref)
    return {"benchmark": f"early: {runs} runs x {steps} steps, 7 K x 2 predictors, B=2000",
            "ours": o, "reference": r, "unit": "s", "ratio": o / r, "target": "ours < 10 s",
            "note": "reference: one DuckDB read of the series it needs (the floor)"}


def _bench_watch(steps: int) -> dict[str, Any]:
    from runner.stop_doomed import DoomWatch
    from schemas.stop_rule import parse

    rule = parse("at=60% loss_ratio>=0.95 loss_vs_majority>=0.98 lower_grad_ratio<=0.05")
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 0.7, steps).tolist()
    norms = [[float(x), 1.0] for x in rng.uniform(0.1, 1.0, steps)]
    times = []
    for _ in range(5):
        w = DoomWatch(rule, TASK, steps)
        t = time.perf_counter()
        for st in range(1, steps + 1):
            w.step(st, losses[st - 1], norms[st - 1])
            w.verdict(st)
        times.append((time.perf_counter() - t) / steps)
    us = statistics.median(times) * 1e6
    ref_us = 57_000.0
    return {"benchmark": "--stop-doomed: DoomWatch per optimiser step", "ours": us, "reference": ref_us,
            "unit": "us", "ratio": us / ref_us, "target": "ratio < 0.001",
            "note": "reference: a tiny-BERT step (FINDINGS, batch 16, 2 threads)"}


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs, steps = (60, 100) if quick else (300, 200)
    return [_bench_early(runs, steps, 2 if quick else 3), _bench_watch(1000)]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
