"""CLI cold start: ``stabstat --help`` and ``stabstat compare`` over 600 runs.

Targets (issue 8): ``--help`` under 0.5 s and ``compare --by bias_correction`` over 600 runs under
1.5 s, each a fresh process. The reference is the interpreter's own start-up (``python -c pass``),
measured interleaved in the same run, so the ratio says how much stabstat adds.

Run alone: ``python -m benchmarks.bench_cli [--quick]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "stabstat-bench-cli"


def _write_runs(out: Path, n_runs: int, n_steps: int = 100) -> None:
    """``n_runs`` runs in two arms (bias correction off/on), 6 layers, dev accuracy at 3 evaluations."""
    from runner.logwriter import RunLogger

    rng = np.random.default_rng(0)
    layers = ["embeddings"] + [f"encoder.layer.{i}" for i in range(4)] + ["classifier"]
    depths = list(range(len(layers)))
    for i in range(n_runs):
        bc = bool(i % 2)
        failed = (not bc) and rng.random() < 0.3
        config = {"task": "synthetic", "seed": i // 2, "lr": 1e-4, "bias_correction": bc}
        task = {"name": "synthetic", "metrics": ["accuracy"], "majority": {"accuracy": 0.6}}
        with RunLogger(out, f"run-{i:04d}", config, task=task, flush_every_steps=10_000) as log:
            for s in range(1, n_steps + 1):
                loss = 0.67 if failed else 0.7 * np.exp(-s / 40)
                log.log_step(s, loss=float(loss), lr=1e-4, grad_norm=1.0)
                log.log_layer_grads(s, layers, depths, rng.random(len(layers)).tolist())
            for s in (0, n_steps // 2, n_steps):
                acc = 0.6 if failed or s == 0 else float(0.8 + 0.05 * rng.standard_normal())
                log.log_eval(s, "dev", {"accuracy": acc})


def _db(n_runs: int) -> Path:
    db = CACHE / f"runs{n_runs}.duckdb"
    if db.exists():
        return db
    runs = CACHE / f"runs{n_runs}"
    if not runs.exists():
        _write_runs(runs, n_runs)
    env = {**os.environ, "STABSTAT_DB": str(db)}
    subprocess.run([sys.executable, "-m", "stabstat", "ingest", str(runs)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return db


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict[str, object]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    n_runs = 60 if quick else 600
    reps = 3 if quick else 7
    db = _db(n_runs)
    py = sys.executable
    cmds = {
        "python": [py, "-c", "pass"],
        "help": [py, "-m", "stabstat", "--help"],
        "compare": [py, "-m", "stabstat", "compare", "--by", "bias_correction", "--db", str(db)],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(reps):  # interleaved: load from other processes hits every variant alike
        for k, c in cmds.items():
            times[k].append(_time(c))
    med = {k: statistics.median(v) for k, v in times.items()}
    return [
        {"benchmark": "stabstat --help (cold process)", "ours": med["help"], "reference": med["python"],
         "unit": "s", "ratio": med["help"] / med["python"], "target": "< 0.5 s",
         "note": f"reference: python -c pass; median of {reps}"},
        {"benchmark": f"stabstat compare --by bias_correction, {n_runs} runs", "ours": med["compare"],
         "reference": med["python"], "unit": "s", "ratio": med["compare"] / med["python"],
         "target": "< 1.5 s", "note": f"10,000 BCa resamples; median of {reps}"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
