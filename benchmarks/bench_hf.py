"""Hugging Face ingest speed: ``stabstat ingest`` of ``trainer_state.json`` runs against DuckDB's
own JSON reader loading the same files.

Runs are written once as the Trainer writes them (``json.dumps(state, indent=2)``, a training
entry at every step, an evaluation entry every 100 steps, the final ``train_runtime`` entry) in
hive-style folders ``lr=<lr>/bias_correction=<bool>/seed=<n>/`` and cached under
``$STABSTAT_BENCH_CACHE`` (default ``/tmp/stabstat_bench_hf``): full mode 6 configs x 50 seeds
= 300 runs x 1,000 steps (10 evaluations each), quick mode 6 x 5 seeds.

Reference: one DuckDB statement ``CREATE TABLE entries AS SELECT filename, unnest(log_history)
FROM read_json(glob, filename = true, hive_partitioning = true, columns = {...})`` into a fresh
database file: the rows, no checks, no runs table, no evaluation metrics split into rows.
Ours: :func:`stabstat.ingest.ingest` into a fresh database file (discovery, fingerprints,
factors from the folder names, steps and evals rows in the contract's tables, statuses,
transactions per batch). Both run in this process, interleaved, medians compared; peak RSS of
each variant sampled with psutil every 10 ms.

Target (issue 18): ours / reference <= 1.2, memory bounded.

A third row measures the cost of one corrupt file: the same runs with the middle run's state
file replaced by one whose first training entry has a string loss (hard links to the cached
files, cached too), ingested by us (299 runs load, the bad one is rejected in one line) against
our own ingest of the clean runs in the same loop. A failed batch is retried by halves, so the
corrupt file costs a few extra transactions, not one per run of its batch.

Run alone: ``python -m benchmarks.bench_hf [--quick]``.
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

from benchmarks.bench_ingest import _fresh, _PeakRSS

FULL = {"seeds": 50, "steps": 1000}
QUICK = {"seeds": 5, "steps": 1000}
CONFIGS = [(lr, bc) for lr in (1e-5, 2e-5, 1e-4) for bc in (False, True)]


def _cache_root() -> Path:
    return Path(os.environ.get("STABSTAT_BENCH_CACHE", "/tmp/stabstat_bench_hf"))


def _state(rng: Any, lr: float, bc: bool, steps: int) -> dict[str, Any]:
    """A Trainer state: a training entry per step, an evaluation every 100 steps, the summary."""
    hist: list[dict[str, Any]] = []
    for s in range(1, steps + 1):
        hist.append({"epoch": round(s / 250, 4), "grad_norm": float(1 + rng.random()),
                     "learning_rate": lr * (1 - s / steps), "loss": float(0.7 * (0.5 if bc else 0.9) ** (s / 200)
                                                                          + 0.05 * rng.random()), "step": s})
        if s % 100 == 0:
            hist.append({"epoch": round(s / 250, 4), "eval_accuracy": float(0.6 + 0.3 * rng.random()),
                         "eval_f1": float(rng.random()), "eval_loss": float(rng.random()),
                         "eval_runtime": 1.25, "eval_samples_per_second": 200.0, "eval_steps_per_second": 12.5,
                         "step": s})
    hist.append({"epoch": steps / 250, "step": steps, "total_flos": 1.0e12, "train_loss": 0.5,
                 "train_runtime": 120.5, "train_samples_per_second": 100.0, "train_steps_per_second": 8.3})
    return {"best_metric": None, "epoch": steps / 250, "eval_steps": 100, "global_step": steps,
            "is_hyper_param_search": False, "log_history": hist, "logging_steps": 1, "max_steps": steps,
            "num_train_epochs": 4, "save_steps": 500, "total_flos": 1.0e12, "train_batch_size": 16}


def generate(seeds: int, steps: int) -> Path:
    """Write (once) ``6 * seeds`` HF run folders; returns their parent folder (cached)."""
    import numpy as np

    root = _cache_root() / f"{seeds}x{steps}"
    marker = root / "COMPLETE.json"
    if marker.exists():
        return root / "runs"
    if root.exists():
        shutil.rmtree(root)
    for c, (lr, bc) in enumerate(CONFIGS):
        for seed in range(seeds):
            d = root / "runs" / f"lr={lr}" / f"bias_correction={str(bc).lower()}" / f"seed={seed}"
            d.mkdir(parents=True)
            state = _state(np.random.default_rng([c, seed]), lr, bc, steps)
            (d / "trainer_state.json").write_text(json.dumps(state, indent=2))
    marker.write_text(json.dumps({"seeds": seeds, "steps": steps}))
    return root / "runs"


#: The reference's explicit schema (what DuckDB would otherwise sample for): the entry keys.
_ENTRY = ("STRUCT(epoch DOUBLE, grad_norm DOUBLE, learning_rate DOUBLE, loss DOUBLE, step BIGINT, "
          "eval_accuracy DOUBLE, eval_f1 DOUBLE, eval_loss DOUBLE, eval_runtime DOUBLE, train_runtime DOUBLE)")


def _reference(root: Path, db: Path) -> tuple[float, int, int]:
    import duckdb

    _fresh(db)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        con = duckdb.connect(str(db))
        con.execute("SET enable_progress_bar = false")
        con.execute(
            "CREATE TABLE entries AS SELECT filename, lr, bias_correction, seed, unnest(log_history, recursive := true) "
            f"FROM read_json(?, filename = true, hive_partitioning = true, hive_types = "
            "{'lr': 'DOUBLE', 'bias_correction': 'BOOLEAN', 'seed': 'BIGINT'}, "
            f"columns = {{'global_step': 'BIGINT', 'log_history': '{_ENTRY}[]'}})",
            [f"{root}/*/*/*/trainer_state.json"],
        )
        n = int(con.execute("SELECT count(*) FROM entries").fetchall()[0][0])
        con.close()
        dt = time.perf_counter() - t0
    return dt, mem.peak, n


def corrupt_copy(root: Path) -> Path:
    """(Once) ``root``'s runs as hard links, the middle run's state file replaced by a bad one."""
    out = root.parent / "corrupt"
    marker = root.parent / "CORRUPT_COMPLETE"
    if marker.exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    files = sorted(root.glob("*/*/*/trainer_state.json"))
    for f in files:
        target = out / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, target)
    bad = out / files[len(files) // 2].relative_to(root)  # in a full batch (the first holds 25 runs)
    bad.unlink()
    bad.write_text(json.dumps({"global_step": 1, "log_history": [{"loss": "high", "step": 1}]}))
    marker.write_text("1")
    return out


def _ours(root: Path, db: Path) -> tuple[float, int, Any]:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    _fresh(db)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        with Store.open(db, read_only=False) as store:
            report = ingest(store, root, fmt="hf")
        dt = time.perf_counter() - t0
    return dt, mem.peak, report


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the benchmark rows (see module docstring)."""
    size = QUICK if quick else FULL
    root = generate(size["seeds"], size["steps"])
    n_runs = len(CONFIGS) * size["seeds"]
    work = _cache_root() / "dbs"
    work.mkdir(parents=True, exist_ok=True)
    reps = 3 if quick else 5
    ref_t: list[float] = []
    ours_t: list[float] = []
    ref_m: list[int] = []
    ours_m: list[int] = []
    n_entries = 0
    for i in range(reps):
        for which in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
            if which == "ref":
                dt, peak, n_entries = _reference(root, work / "ref.duckdb")
                ref_t.append(dt)
                ref_m.append(peak)
            else:
                dt, peak, report = _ours(root, work / "ours.duckdb")
                assert report.ok and len(report.added) == n_runs, report.summary()
                ours_t.append(dt)
                ours_m.append(peak)
    import duckdb

    con = duckdb.connect(str(work / "ours.duckdb"), read_only=True)
    counts = {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in ("steps", "evals")}
    con.close()
    ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
    bad_root = corrupt_copy(root)
    clean_t: list[float] = []
    bad_t: list[float] = []
    for i in range(3):
        for which in (("clean", "bad") if i % 2 == 0 else ("bad", "clean")):
            dt, _, report = _ours(root if which == "clean" else bad_root, work / "ours.duckdb")
            if which == "clean":
                clean_t.append(dt)
            else:
                assert len(report.added) == n_runs - 1 and len(report.rejected) == 1, report.summary()
                bad_t.append(dt)
    clean_med, bad_med = statistics.median(clean_t), statistics.median(bad_t)
    label = f"{n_runs} HF runs x {size['steps']} steps ({counts['steps']:,} steps + {counts['evals']:,} evals rows)"
    return [
        {
            "benchmark": f"ingest {label}",
            "ours": round(ours_med, 3),
            "reference": round(ref_med, 3),
            "unit": "s",
            "ratio": round(ours_med / ref_med, 3),
            "target": "<= 1.2",
            "note": f"reference: CREATE TABLE AS SELECT unnest(log_history) FROM read_json(glob, filename, "
                    f"hive_partitioning, explicit columns) ({n_entries:,} entries); medians of {reps}, interleaved; "
                    f"ours {', '.join(f'{x:.2f}' for x in ours_t)} s, ref {', '.join(f'{x:.2f}' for x in ref_t)} s",
        },
        {
            "benchmark": f"ingest peak RSS {label}",
            "ours": round(max(ours_m) / 2**20, 1),
            "reference": round(max(ref_m) / 2**20, 1),
            "unit": "MiB",
            "ratio": round(max(ours_m) / max(ref_m), 3),
            "target": "bounded (report)",
            "note": "process RSS sampled every 10 ms while each variant runs (includes the Python interpreter "
                    "and what earlier variants left allocated)",
        },
        {
            "benchmark": f"ingest {n_runs} HF runs with 1 corrupt state file (string loss) vs all clean",
            "ours": round(bad_med, 3),
            "reference": round(clean_med, 3),
            "unit": "s",
            "ratio": round(bad_med / clean_med, 3),
            "target": "report (a failed batch is retried by halves)",
            "note": f"both ours, medians of 3, interleaved; corrupt {', '.join(f'{x:.2f}' for x in bad_t)} s, "
                    f"clean {', '.join(f'{x:.2f}' for x in clean_t)} s",
        },
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
