"""How-many-seeds commands, whole process: ``stabstat plan`` and ``stabstat decompose``.

Targets (issue 15): ``plan`` with 2,000 resamples x 20 candidate n on 6 configurations under
2 s, and ``decompose`` on 10,000 runs under 2 s, each a fresh process (start-up, DuckDB
selection and statistics). The reference is the interpreter's own start-up (``python -c
pass``), timed interleaved, so the ratio says how much stabstat adds. The stores are written
in DuckDB SQL (as ``bench_report.generate_db``), values from DuckDB's ``hash``: the same on
every generation.

* plan: 6 learning rates x 30 pilot runs (10% failed at the majority), ``--delta 0.02``
  (6 cases: each configuration against itself shifted) with the default 20 candidate n, and
  all 15 pairs at their observed difference.
* decompose: 4 configurations x 50 init_seed x 50 order_seed = 10,000 runs, balanced (ANOVA,
  10,000 resamples); and the same with 10% failed runs (the successful runs are unbalanced:
  Henderson's method I, 1,000 rebuilt resamples per configuration).

Run alone: ``python -m benchmarks.bench_planning [--quick]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE = Path(tempfile.gettempdir()) / "stabstat-bench-planning"


def _store(path: Path, *, configs: int, init: int, order: int, seeds: int, fail: float) -> Path:
    """``configs`` learning rates x ``init`` init_seed x ``order`` order_seed x ``seeds`` seeds,
    dev accuracy 0.8 + init and order effects + noise (the majority 0.6 for failed runs)."""
    from stabstat.store import Store

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with Store.open(tmp, read_only=False) as store:
        con = store.con
        con.execute("SET enable_progress_bar = false")
        for name, typ in [("task", "VARCHAR"), ("seed", "BIGINT"), ("lr", "DOUBLE"), ("init_seed", "BIGINT"),
                          ("order_seed", "BIGINT"), ("batch_size", "BIGINT")]:
            con.execute(f'ALTER TABLE runs ADD COLUMN IF NOT EXISTS "{name}" {typ}')
        con.execute("CREATE OR REPLACE MACRO u(a, b) AS (hash(a, b) % 1000003) / 1000003.0")
        n = configs * init * order * seeds
        con.execute(f"""
            CREATE TEMP TABLE gen AS
            SELECT r, 'run' || lpad(r::VARCHAR, 6, '0') AS run_id, r % {configs} AS cfg,
                   (r // {configs}) % {init} AS i, (r // ({configs} * {init})) % {order} AS o,
                   r // ({configs} * {init} * {order}) AS seed, u(r, 1) < {fail} AS failed
            FROM range({n}) t(r)
        """)
        con.execute("""
            INSERT INTO runs (run_id, status, status_written, started_at, finished_at, schema_version, task_info,
                              config, environment, source, source_format, fingerprint, ingested_at,
                              task, seed, lr, init_seed, order_seed, batch_size)
            SELECT run_id, 'completed', 'completed', TIMESTAMP '2026-01-01 00:00:00',
                   TIMESTAMP '2026-01-01 01:00:00', 1,
                   '{"name": "synthetic", "majority": {"accuracy": 0.6}, "higher_is_better": {"accuracy": true}}'::JSON,
                   json_object('task', 'synthetic', 'seed', seed, 'lr', 1e-5 * (cfg + 1), 'init_seed', i,
                               'order_seed', o, 'batch_size', 16),
                   '{"device": "cpu"}'::JSON, 'generated/' || run_id, 'stabstat', md5(run_id),
                   TIMESTAMP '2026-01-02 00:00:00', 'synthetic', seed, 1e-5 * (cfg + 1), i, o, 16
            FROM gen
        """)
        con.execute("INSERT INTO majority SELECT run_id, 'accuracy', 0.6 FROM gen")
        con.execute("INSERT INTO steps SELECT run_id, 100, 1.0, 0.3, 1e-5, 1.0, 10.0 FROM gen")
        con.execute("""
            INSERT INTO evals SELECT run_id, 100, 'dev', 'accuracy',
                   CASE WHEN failed THEN 0.6
                        ELSE 0.8 + 0.004 * cfg + 0.03 * (u(i, 11 + cfg) - 0.5) + 0.015 * (u(o, 13 + cfg) - 0.5)
                             + 0.01 * (u(r, 17) - 0.5) END
            FROM gen
        """)
        con.execute("CHECKPOINT")
    tmp.rename(path)
    return path


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict[str, Any]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    reps = 1 if quick else 5
    side = 10 if quick else 50
    pilot = _store(CACHE / "pilot.duckdb", configs=6, init=1, order=1, seeds=30, fail=0.1)
    big = _store(CACHE / f"crossed{side}.duckdb", configs=4, init=side, order=side, seeds=1, fail=0.0)
    failing = _store(CACHE / f"crossed{side}_failed.duckdb", configs=4, init=side, order=side, seeds=1, fail=0.1)
    py = sys.executable
    cmds = {
        "python": [py, "-c", "pass"],
        "plan6": [py, "-m", "stabstat", "plan", "--by", "lr", "--delta", "0.02", "--db", str(pilot)],
        "plan15": [py, "-m", "stabstat", "plan", "--by", "lr", "--db", str(pilot)],
        "decompose": [py, "-m", "stabstat", "decompose", "--by", "lr", "--db", str(big)],
        "decompose_failed": [py, "-m", "stabstat", "decompose", "--by", "lr", "--db", str(failing)],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(reps):  # interleaved: load from other processes hits every variant alike
        for k, c in cmds.items():
            times[k].append(_time(c))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_big = 4 * side * side

    def row(name: str, key: str, target: str, note: str) -> dict[str, Any]:
        return {"benchmark": name, "ours": med[key], "reference": med["python"], "unit": "s",
                "ratio": med[key] / med["python"], "target": target,
                "note": f"reference: python -c pass; {note}; median of {reps}"}

    return [
        row("stabstat plan --delta, 6 configs x 30 runs, 2,000 resamples x 20 n (whole process)", "plan6",
            "< 2 s", "6 cases: each configuration against itself shifted by delta"),
        row("stabstat plan (observed differences), 15 pairs of 6 configs (whole process)", "plan15", "-",
            "15 pairs: mean and failure-rate power"),
        row(f"stabstat decompose --by lr, {n_big} runs, init x order balanced (whole process)", "decompose",
            "< 2 s", "ANOVA, 10,000 resamples, all and successful runs"),
        row(f"stabstat decompose --by lr, {n_big} runs, 10% failed (whole process)", "decompose_failed", "-",
            "successful runs unbalanced: Henderson's method I, 1,000 rebuilt resamples per configuration"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
