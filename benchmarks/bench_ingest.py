"""Ingest speed: ``stabstat.ingest.ingest`` against a raw DuckDB load of the same Parquet files.

Runs are written once with the project's own writer (:class:`runner.logwriter.RunLogger`) and
cached under ``$STABSTAT_BENCH_CACHE`` (default ``/tmp/stabstat_bench_ingest``): full mode
500 runs x 1,000 steps x 24 layers (12 M layer-gradient rows), quick mode 50 runs.

Reference: ``CREATE TABLE <t> AS SELECT * FROM read_parquet('<root>/*/<t>.parquet')`` for
steps, layer_grads and evals into a fresh database file: no validation, no run table, no
transactions per batch. Ours: ``stabstat.ingest.ingest(Store.open(path, read_only=False), root)``
into a fresh database file (discovery, run.json checks, Parquet footer checks, fingerprints,
factor columns, NOT NULL/CHECK constraints, batched transactions; it inserts without keeping
the files' row order, ``preserve_insertion_order = false``). All are timed in the same process,
interleaved, and the medians compared; a third variant, the reference with
``preserve_insertion_order = false``, isolates ingest's own overhead. Peak RSS of each variant
is sampled with psutil every 10 ms (the process' resident set while the variant runs).

Target (issue 4): ours / reference <= 1.3, memory bounded.

The ``ingest`` area also runs :mod:`benchmarks.bench_hf` (Hugging Face ``trainer_state.json``
runs against DuckDB's ``read_json``), whose rows follow these.

Run alone: ``python -m benchmarks.bench_ingest [--quick]``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

FULL = {"runs": 500, "steps": 1000, "layers": 24}
QUICK = {"runs": 50, "steps": 1000, "layers": 24}
TABLES = ("steps", "layer_grads", "evals")


def _cache_root() -> Path:
    return Path(os.environ.get("STABSTAT_BENCH_CACHE", "/tmp/stabstat_bench_ingest"))


def _write_one(args: tuple[str, int, int, int]) -> None:
    import numpy as np

    from runner.logwriter import RunLogger

    out, i, steps, n_layers = args
    rng = np.random.default_rng(i)
    layers = ["embeddings"] + [f"encoder.layer.{k}" for k in range(n_layers - 3)] + ["pooler", "classifier"]
    depths = list(range(n_layers))
    config = {
        "task": ["rte", "mrpc", "cola"][i % 3], "seed": i // 12, "lr": [2e-5, 1e-4][i % 2],
        "bias_correction": bool((i // 2) % 2), "warmup_ratio": [0.0, 0.1][(i // 4) % 2],
        "n_train": 1000, "max_steps": steps,
    }
    task = {"majority": {"accuracy": 0.527}, "metrics": ["accuracy", "f1", "loss"]}
    with RunLogger(out, f"run{i:04d}", config, task=task, overwrite=True) as log:
        for s in range(1, steps + 1):
            log.log_step(s, loss=float(0.7 * np.exp(-s / steps) + 0.05 * rng.random()), lr=config["lr"],
                         grad_norm=float(1 + rng.random()), epoch=s / 100, wall_time=0.1 * s)
            log.log_layer_grads(s, layers, depths, rng.random(n_layers).tolist())
            if s % 100 == 0:
                log.log_eval(s, "dev", {"accuracy": float(rng.random()), "f1": float(rng.random()),
                                        "loss": float(rng.random())})


def generate(n_runs: int, steps: int, layers: int, *, workers: int = 2) -> Path:
    """Write (once) ``n_runs`` run directories; returns their parent folder (cached)."""
    root = _cache_root() / f"{n_runs}x{steps}x{layers}"
    marker = root / "COMPLETE.json"
    if marker.exists():
        return root / "runs"
    if root.exists():
        shutil.rmtree(root)
    (root / "runs").mkdir(parents=True)
    jobs = [(str(root / "runs"), i, steps, layers) for i in range(n_runs)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_one, jobs, chunksize=4))
    marker.write_text(json.dumps({"runs": n_runs, "steps": steps, "layers": layers}))
    return root / "runs"


class _PeakRSS:
    """Sample this process' RSS every ``interval`` s in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> _PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _fresh(path: Path) -> None:
    for suffix in ("", ".wal"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def _raw(root: Path, db: Path, *, keep_order: bool = True) -> tuple[float, int]:
    import duckdb

    _fresh(db)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        con = duckdb.connect(str(db))
        con.execute("SET enable_progress_bar = false")
        if not keep_order:
            con.execute("SET preserve_insertion_order = false")
        for t in TABLES:
            con.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet(?)", [f"{root}/*/{t}.parquet"])
        con.close()
        dt = time.perf_counter() - t0
    return dt, mem.peak


def _ours(root: Path, db: Path) -> tuple[float, int, Any]:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    _fresh(db)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        with Store.open(db, read_only=False) as store:
            report = ingest(store, root)
        dt = time.perf_counter() - t0
    return dt, mem.peak, report


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the benchmark rows (see module docstring)."""
    size = QUICK if quick else FULL
    root = generate(size["runs"], size["steps"], size["layers"])
    work = _cache_root() / "dbs"
    work.mkdir(parents=True, exist_ok=True)
    reps = 3 if quick else 5
    raw_t, ours_t, raw_m, ours_m, unordered_t = [], [], [], [], []
    n_rows = 0
    for i in range(reps):
        # alternate which goes first, so neither always meets a warm page cache
        order = ("raw", "ours", "unordered") if i % 2 == 0 else ("unordered", "ours", "raw")
        for which in order:
            if which == "raw":
                dt, peak = _raw(root, work / "raw.duckdb")
                raw_t.append(dt)
                raw_m.append(peak)
            elif which == "unordered":
                unordered_t.append(_raw(root, work / "raw.duckdb", keep_order=False)[0])
            else:
                dt, peak, report = _ours(root, work / "ours.duckdb")
                assert report.ok and len(report.added) == size["runs"], report.summary()
                ours_t.append(dt)
                ours_m.append(peak)
    import duckdb

    con = duckdb.connect(str(work / "ours.duckdb"), read_only=True)
    n_rows = sum(int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in TABLES)
    con.close()
    ours_med, raw_med = statistics.median(ours_t), statistics.median(raw_t)
    label = f"{size['runs']} runs x {size['steps']} steps x {size['layers']} layers ({n_rows:,} rows)"
    from benchmarks import bench_hf  # imports this module: not at the top

    return [
        {
            "benchmark": f"ingest {label}",
            "ours": round(ours_med, 3),
            "reference": round(raw_med, 3),
            "unit": "s",
            "ratio": round(ours_med / raw_med, 3),
            "target": "<= 1.3",
            "note": f"reference: CREATE TABLE AS SELECT * FROM read_parquet(glob); medians of {reps}, interleaved; "
                    f"median of per-pair ratios {statistics.median(o / r for o, r in zip(ours_t, raw_t, strict=True)):.2f}; "
                    f"ours {', '.join(f'{x:.2f}' for x in ours_t)} s, raw {', '.join(f'{x:.2f}' for x in raw_t)} s",
        },
        {
            "benchmark": f"ingest {label}, vs raw load without row order",
            "ours": round(ours_med, 3),
            "reference": round(statistics.median(unordered_t), 3),
            "unit": "s",
            "ratio": round(ours_med / statistics.median(unordered_t), 3),
            "target": "info",
            "note": "reference: the same CTAS with SET preserve_insertion_order = false, as ingest uses; "
                    "this isolates ingest's own overhead (checks, fingerprints, transactions)",
        },
        {
            "benchmark": f"ingest peak RSS {label}",
            "ours": round(max(ours_m) / 2**20, 1),
            "reference": round(max(raw_m) / 2**20, 1),
            "unit": "MiB",
            "ratio": round(max(ours_m) / max(raw_m), 3),
            "target": "bounded (report)",
            "note": "process RSS sampled every 10 ms while each variant runs (includes the Python interpreter)",
        },
        *bench_hf.run(quick=quick),
    ]


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    for r in rows:
        print(json.dumps(r))
