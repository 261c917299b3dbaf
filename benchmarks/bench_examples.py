"""Example-level inference speed: ASO against deepsig, the seeds x examples bootstrap.

1. ASO of 50 vs 50 scores, 1,000 bootstrap resamples: ``stabstat.stats.aso`` (exact integral)
   against ``deepsig.aso`` (its defaults: dt 0.005, one job). Target: ours >= 20x faster
   (ratio ours/deepsig <= 0.05). The eps_min of both are reported (deepsig's grid differs
   from the exact integral by a few hundredths at most).
2. Seeds x examples bootstrap of 6 configurations x 50 runs x 277 examples (RTE dev),
   1,000 resamples, accuracy; configurations share the dev set and the seeds (paired).
   Target: under 3 s.

Runs are interleaved (ours, reference, ours, ...), medians reported.
Run: ``python -m benchmarks.bench_examples`` (``--quick`` for one repetition each).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stabstat import stats


def _median_ms(fns: dict[str, Callable[[], Any]], reps: int) -> tuple[dict[str, float], dict[str, Any]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    last: dict[str, Any] = {k: f() for k, f in fns.items()}  # warm-up
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            last[k] = f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}, last


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time the two workloads; rows in the benchmarks format (times in ms)."""
    rng = np.random.default_rng(16)
    rows: list[dict[str, Any]] = []
    a, b = rng.normal(0.70, 0.03, 50), rng.normal(0.68, 0.03, 50)
    try:
        import deepsig

        fns: dict[str, Callable[[], Any]] = {
            "ours": lambda: stats.aso(a, b, resamples=1000, rng=1).eps_min,
            "deepsig": lambda: float(deepsig.aso(a, b, seed=1, show_progress=False)),
        }
        t, last = _median_ms(fns, 1 if quick else 3)
        rows.append({"benchmark": "examples: ASO 50 vs 50 scores, 1,000 resamples vs deepsig.aso",
                     "ours": t["ours"], "reference": t["deepsig"], "unit": "ms", "ratio": t["ours"] / t["deepsig"],
                     "target": "<= 0.05 (20x faster)",
                     "note": f"eps_min ours {last['ours']:.3f}, deepsig {last['deepsig']:.3f}"})
    except ImportError:  # pragma: no cover - deepsig is a dev dependency
        rows.append({"benchmark": "examples: ASO 50 vs 50 scores vs deepsig.aso", "ours": float("nan"),
                     "reference": float("nan"), "unit": "ms", "ratio": float("nan"),
                     "target": "<= 0.05 (20x faster)", "note": "deepsig not installed (pip install deepsig)"})

    j, r, g = 277, 50, 6
    labels = rng.integers(0, 2, j)
    hard = rng.random(j)  # per-example difficulty shared by the runs
    preds = [np.where(rng.random((r, j)) < 0.5 + 0.4 * hard + 0.01 * k, labels, 1 - labels) for k in range(g)]
    seeds = [np.arange(r)] * g

    def boot() -> Any:
        return stats.multibootstrap(preds, [labels] * g, seeds=seeds, metric="accuracy", resamples=1000, rng=0)

    t2, _ = _median_ms({"ours": boot}, 1 if quick else 5)
    rows.append({"benchmark": "examples: seeds x examples bootstrap, 6 configs x 50 runs x 277 examples, B=1,000",
                 "ours": t2["ours"], "reference": float("nan"), "unit": "ms", "ratio": float("nan"),
                 "target": "< 3000 ms", "note": "accuracy; paired over examples and seeds"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
