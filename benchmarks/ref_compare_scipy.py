"""Reference for ``stabstat compare`` (whole process): DuckDB + ``scipy.stats.bootstrap``, by hand.

What someone without stabstat would write for the headline of ``compare --by FACTOR``: read
each run's final dev accuracy and its factor level from a stabstat database with DuckDB, then
per level the mean with a 95% BCa bootstrap interval (10,000 resamples, seeded), and print
them. No failure rates, SDs, medians, pairwise tests or corrections (``compare`` does all of
these), so this is a lower bound on the work.

Usage: ``python benchmarks/ref_compare_scipy.py DB FACTOR``. Timed as a fresh process by
:mod:`benchmarks.bench_cli` (imports included).
"""

from __future__ import annotations

import sys


def main(db: str, factor: str) -> int:
    import duckdb
    import numpy as np
    from scipy import stats

    con = duckdb.connect(db, read_only=True)
    rows = con.execute(
        f"""
        SELECT r."{factor}"::VARCHAR AS level, arg_max(e.value, e.step) AS value
        FROM runs r JOIN evals e USING (run_id)
        WHERE e.split = 'dev' AND e.metric = 'accuracy'
        GROUP BY r.run_id, r."{factor}"
        ORDER BY level
        """
    ).fetchall()
    con.close()
    groups: dict[str, list[float]] = {}
    for level, value in rows:
        groups.setdefault(level, []).append(value)
    rng = np.random.default_rng(0)
    for level, values in groups.items():
        x = np.asarray(values)
        res = stats.bootstrap((x,), np.mean, n_resamples=10_000, method="BCa", confidence_level=0.95, random_state=rng)
        print(f"{level}\t{len(x)}\t{x.mean():.4f}\t[{res.confidence_interval.low:.4f}, "
              f"{res.confidence_interval.high:.4f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
