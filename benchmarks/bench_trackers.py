"""MLflow file-store ingest speed: ``stabstat ingest`` of an ``mlruns/`` store against MLflow's own
client reading the same store.

The store is written once and cached under ``$STABSTAT_BENCH_CACHE`` (default
``/tmp/stabstat_bench_trackers``): runs and params through the real client
(``MlflowClient.create_run``, ``log_batch``, ``set_terminated`` on a ``file://`` store), the
metric files appended in the file store's own line format (``<timestamp ms> <value> <step>``,
what ``log_metric`` writes, without 1.2 M client calls). Full mode: 300 runs x 1,000 steps x 4
metrics (``loss``, ``learning_rate``, ``grad_norm``, ``eval_accuracy`` every step) = 1.2 M
points; quick mode 30 runs.

Reference: ``mlflow.search_runs(experiment_ids, output_format="list")`` then
``MlflowClient.get_metric_history(run_id, key)`` for every run and metric: the values in
memory as ``Metric`` objects, nothing stored. Ours: :func:`stabstat.ingest.ingest` into a fresh
DuckDB file (discovery, meta.yaml, params typed, tag mapping, statuses, fingerprints, the
contract's tables, one transaction per batch). Same process, interleaved, medians.

Target (issue 13): ours >= 5x faster than the client (ratio ours / reference <= 0.2).

Run alone: ``python -m benchmarks.bench_trackers [--quick]``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_ingest import _fresh

FULL = {"runs": 300, "steps": 1000}
QUICK = {"runs": 30, "steps": 1000}
METRICS = ("loss", "learning_rate", "grad_norm", "eval_accuracy")


def _cache_root() -> Path:
    return Path(os.environ.get("STABSTAT_BENCH_CACHE", "/tmp/stabstat_bench_trackers"))


def generate(runs: int, steps: int) -> tuple[Path, str]:
    """Write (once) the store; returns ``(mlruns folder, experiment id)``."""
    import numpy as np
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    root = _cache_root() / f"{runs}x{steps}"
    marker = root / "COMPLETE.json"
    if marker.exists():
        return root / "mlruns", json.loads(marker.read_text())["experiment_id"]
    if root.exists():
        shutil.rmtree(root)
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    exp_id = client.create_experiment("bench")
    for i in range(runs):
        rng = np.random.default_rng(i)
        lr = (1e-5, 2e-5, 1e-4)[i % 3]
        run = client.create_run(exp_id)
        rid, t0 = run.info.run_id, run.info.start_time
        client.log_batch(rid, params=[Param("learning_rate", str(lr)), Param("seed", str(i // 3)),
                                      Param("bias_correction", str(i % 2 == 0))])
        mdir = root / "mlruns" / exp_id / rid / "metrics"
        mdir.mkdir(exist_ok=True)
        ts = [t0 + 50 * s for s in range(1, steps + 1)]
        values = {"loss": 0.7 * 0.5 ** (np.arange(steps) / 200) + 0.05 * rng.random(steps),
                  "learning_rate": lr * (1 - np.arange(steps) / steps), "grad_norm": 1 + rng.random(steps),
                  "eval_accuracy": 0.6 + 0.3 * rng.random(steps)}
        for key in METRICS:
            (mdir / key).write_text("".join(f"{t} {float(v)!r} {s}\n" for s, (t, v) in
                                            enumerate(zip(ts, values[key], strict=True), start=1)))
        client.set_terminated(rid, end_time=ts[-1] + 1)
    marker.write_text(json.dumps({"runs": runs, "steps": steps, "experiment_id": exp_id}))
    return root / "mlruns", exp_id


def _reference(mlruns: Path, exp_id: str) -> tuple[float, int]:
    import mlflow
    from mlflow.tracking import MlflowClient

    t0 = time.perf_counter()
    mlflow.set_tracking_uri(mlruns.as_uri())
    client = MlflowClient(tracking_uri=mlruns.as_uri())
    runs = mlflow.search_runs([exp_id], output_format="list", max_results=50_000)
    n = 0
    for run in runs:
        for key in run.data.metrics:
            n += len(client.get_metric_history(run.info.run_id, key))
    return time.perf_counter() - t0, n


def _ours(mlruns: Path, db: Path) -> tuple[float, Any]:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    _fresh(db)
    t0 = time.perf_counter()
    with Store.open(db, read_only=False) as store:
        report = ingest(store, mlruns, fmt="mlflow")
    return time.perf_counter() - t0, report


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the benchmark rows (see module docstring)."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    size = QUICK if quick else FULL
    mlruns, exp_id = generate(size["runs"], size["steps"])
    work = _cache_root() / "dbs"
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]  # the machine is shared: the ratio moves with its load
    reps = 5
    ref_t: list[float] = []
    ours_t: list[float] = []
    n_points = 0
    for i in range(reps):
        for which in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
            if which == "ref":
                dt, n_points = _reference(mlruns, exp_id)
                ref_t.append(dt)
            else:
                dt, report = _ours(mlruns, work / "ours.duckdb")
                assert report.ok and len(report.added) == size["runs"], report.summary()
                ours_t.append(dt)
    import duckdb

    con = duckdb.connect(str(work / "ours.duckdb"), read_only=True)
    counts = {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in ("steps", "evals")}
    con.close()
    assert n_points == size["runs"] * size["steps"] * len(METRICS)
    assert counts == {"steps": size["runs"] * size["steps"], "evals": size["runs"] * size["steps"]}, counts
    ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
    label = f"{size['runs']} MLflow file-store runs x {size['steps']} steps x {len(METRICS)} metrics"
    return [{
        "benchmark": f"ingest {label} ({n_points:,} points)",
        "ours": round(ours_med, 3),
        "reference": round(ref_med, 3),
        "unit": "s",
        "ratio": round(ours_med / ref_med, 3),
        "target": "<= 0.2 (>= 5x faster)",
        "note": f"reference: mlflow.search_runs + MlflowClient.get_metric_history per run and metric (values in "
                f"memory, nothing stored); ours: stabstat ingest into a fresh DuckDB file ({counts['steps']:,} steps "
                f"+ {counts['evals']:,} evals rows); medians of {reps}, interleaved; ours "
                f"{', '.join(f'{x:.2f}' for x in ours_t)} s, ref {', '.join(f'{x:.2f}' for x in ref_t)} s; "
                f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
    }]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
