"""TensorBoard ingest speed: ``stabstat ingest`` and our reader against TensorBoard's own loader.

Runs are written once with PyTorch's ``SummaryWriter`` (a Hugging Face-style run: ``train/loss``,
``train/learning_rate``, ``train/grad_norm`` and ``eval/accuracy`` at every step) and cached
under ``$STABSTAT_BENCH_CACHE`` (default ``/tmp/stabstat_bench_sources``): full mode 300 runs x
1,000 steps x 4 tags (1.2 M scalars), quick mode 30 runs.

Reference: TensorBoard's ``EventAccumulator`` (every scalar kept: ``size_guidance`` 0) over
each run folder, all scalars gathered into one polars DataFrame (run, tag, step, wall_time,
value); with ``tbparse`` installed, also ``tbparse.SummaryReader(root).scalars`` (a pandas
DataFrame; same loader). Ours, two variants: ``ingest``, the full ``stabstat ingest`` path
(:func:`stabstat.ingest.ingest` with ``fmt="tensorboard"`` into a fresh DuckDB file: discovery,
reading in the helper thread, fingerprints, batched transactions, rows in the store), and
``reader``, :func:`stabstat.ingest.sources.tensorboard.read_tensorboard_run` per run folder
alone (records, CRC checks, tag mapping, merge by step, the contract's column lists).
Variants run in the same process, interleaved, and the medians are compared; peak RSS of each
variant is sampled with psutil every 10 ms (the process' RSS, which includes what earlier
variants left allocated, and its growth during the variant).

Target (issue 12): full ingest / reference <= 1.2.

Run alone: ``python -m benchmarks.bench_sources [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

FULL = {"runs": 300, "steps": 1000}
QUICK = {"runs": 30, "steps": 1000}
TAGS = ("train/loss", "train/learning_rate", "train/grad_norm", "eval/accuracy")


def _write_one(args: tuple[str, int, int]) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    out, i, steps = args
    rng = np.random.default_rng(i)
    with SummaryWriter(str(Path(out) / f"lr={[2e-5, 1e-4][i % 2]}" / f"seed={i}")) as w:
        for s in range(1, steps + 1):
            w.add_scalar("train/loss", float(0.7 * np.exp(-s / steps) + 0.05 * rng.random()), s)
            w.add_scalar("train/learning_rate", 2e-5 * (1 - s / steps), s)
            w.add_scalar("train/grad_norm", float(1 + rng.random()), s)
            w.add_scalar("eval/accuracy", float(rng.random()), s)


def generate(n_runs: int, steps: int, *, workers: int = 2) -> Path:
    """Write (once) ``n_runs`` TensorBoard run folders; returns their parent folder (cached)."""
    root = Path(os.environ.get("STABSTAT_BENCH_CACHE", "/tmp/stabstat_bench_sources")) / f"{n_runs}x{steps}"
    marker = root / "COMPLETE.json"
    if marker.exists():
        return root / "runs"
    if root.exists():
        shutil.rmtree(root)
    (root / "runs").mkdir(parents=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_one, [(str(root / "runs"), i, steps) for i in range(n_runs)], chunksize=8))
    marker.write_text(json.dumps({"runs": n_runs, "steps": steps, "tags": list(TAGS)}))
    return root / "runs"


class _Peak:
    """Highest RSS of this process (bytes) while the ``with`` block runs, sampled every 10 ms."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._done = threading.Event()
        self.peak = 0

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> _Peak:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("events.out.tfevents.*"))


def ours(root: Path) -> int:
    from stabstat.ingest.sources.tensorboard import read_tensorboard_run

    n = 0
    for d in run_dirs(root):
        r = read_tensorboard_run(d, root=root)
        n += len(r.tables["steps"]["step"]) * 3 + len(r.tables["evals"]["step"])
    return n


def ingest_full(root: Path) -> int:
    """``stabstat ingest --format tensorboard`` of every run under ``root`` into a fresh DuckDB
    file (deleted first); returns the scalars stored (3 steps columns + evals rows)."""
    import tempfile

    from stabstat.ingest import ingest
    from stabstat.store import Store

    with tempfile.TemporaryDirectory(prefix="stabstat_bench_") as tmp, \
            Store.open(Path(tmp) / "bench.duckdb", read_only=False) as store:
        report = ingest(store, [root], fmt="tensorboard")
        assert not report.rejected, report.rejected[:1]
        steps, evals = store.con.execute(
            "SELECT (SELECT count(*) FROM steps), (SELECT count(*) FROM evals)").fetchone() or (0, 0)
    return int(steps) * 3 + int(evals)


def reference(root: Path) -> int:
    import polars as pl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cols: dict[str, list[Any]] = {"run": [], "tag": [], "step": [], "wall_time": [], "value": []}
    for d in run_dirs(root):
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                cols["run"].append(str(d))
                cols["tag"].append(tag)
                cols["step"].append(e.step)
                cols["wall_time"].append(e.wall_time)
                cols["value"].append(e.value)
    return pl.DataFrame(cols).height


def tbparse_read(root: Path) -> int:
    from tbparse import SummaryReader

    return len(SummaryReader(str(root), extra_columns={"wall_time", "dir_name"}).scalars)


def measure(*, quick: bool, repeats: int) -> dict[str, Any]:
    """Time every variant ``repeats`` times, interleaved; medians, rows and peak RSS."""
    size = QUICK if quick else FULL
    root = generate(size["runs"], size["steps"])
    variants: dict[str, Callable[[Path], int]] = {"ingest": ingest_full, "ours": ours, "reference": reference}
    try:
        import tbparse  # noqa: F401

        variants["tbparse"] = tbparse_read
    except ImportError:
        pass
    first = run_dirs(root)[0]
    for fn in variants.values():  # warm-up: imports, on one run
        fn(first)
    times: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, int] = dict.fromkeys(variants, 0)
    growth: dict[str, int] = dict.fromkeys(variants, 0)  #: peak minus the RSS at the variant's start
    rows: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            with _Peak() as mem:
                start = mem.peak
                t0 = time.perf_counter()
                rows[name] = fn(root)
                times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], mem.peak)
            growth[name] = max(growth[name], mem.peak - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size, "repeats": repeats, "median_s": med, "rows": rows,
        "peak_rss_mib": {k: round(v / 2**20) for k, v in peaks.items()},
        "peak_growth_mib": {k: round(v / 2**20) for k, v in growth.items()},
        "ours_over_reference": round(med["ours"] / med["reference"], 3),
        "ingest_over_reference": round(med["ingest"] / med["reference"], 3),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``python -m benchmarks.run`` (see its docstring)."""
    r = measure(quick=quick, repeats=1 if quick else 3)
    size = f"{r['size']['runs']} runs x {r['size']['steps']} steps x {len(TAGS)} tags"
    rss, grow = r["peak_rss_mib"], r["peak_growth_mib"]
    return [
        {"benchmark": f"tensorboard ingest into DuckDB ({size})", "ours": r["median_s"]["ingest"],
         "reference": r["median_s"]["reference"], "unit": "s", "ratio": r["ingest_over_reference"],
         "target": "<= 1.2", "note": f"reference: EventAccumulator -> one DataFrame; peak RSS MiB ingest "
                                     f"{rss['ingest']} (+{grow['ingest']}), reference {rss['reference']} "
                                     f"(+{grow['reference']})"},
        {"benchmark": f"tensorboard read only ({size})", "ours": r["median_s"]["ours"],
         "reference": r["median_s"]["reference"], "unit": "s", "ratio": r["ours_over_reference"],
         "target": "-", "note": f"our reader alone; peak RSS MiB {rss['ours']} (+{grow['ours']})"},
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    result = measure(quick=args.quick, repeats=args.repeats)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
