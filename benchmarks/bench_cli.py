"""CLI cold start: ``stabstat --help`` and ``stabstat compare`` over 600 runs and over 6 configs x 50 seeds.

Targets (issue 8, issue 18): ``--help`` under 0.5 s and ``compare --by bias_correction`` over 600
runs under 1.0 s, each a fresh process; the reference of those is the interpreter's own start-up
(``python -c pass``), measured interleaved in the same run, so the ratio says how much stabstat
adds. ``compare --by lr`` over 6 configs x 50 seeds (BCa, 10,000 resamples, whole process)
against a hand-written DuckDB + ``scipy.stats.bootstrap`` script on the same database
(``benchmarks/ref_compare_scipy.py``: only the mean's BCa interval per level), target <= 0.5x.

Every process runs with Python's bytecode cache enabled (:func:`_bytecode_env`), as an installed
copy does, after one untimed warm-up of each command; where the machine disables it
(``PYTHONDONTWRITEBYTECODE``), the ``compare --by lr`` pair is also timed without it (an extra
row), so both figures come from the same run.

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


def _configs_db(configs: int = 6, seeds: int = 50, steps: int = 100) -> Path:
    """A store with ``configs`` learning rates x ``seeds`` seeds (dev accuracy every 50 steps,
    some runs failed at the majority baseline), written with DuckDB SQL into a real store."""
    from stabstat.store import Store

    db = CACHE / f"configs{configs}x{seeds}.duckdb"
    if db.exists():
        return db
    tmp = db.with_suffix(".tmp.duckdb")
    if tmp.exists():
        tmp.unlink()
    with Store.open(tmp, read_only=False) as store:
        con = store.con
        for name, typ in [("task", "VARCHAR"), ("seed", "BIGINT"), ("lr", "DOUBLE")]:
            con.execute(f'ALTER TABLE runs ADD COLUMN "{name}" {typ}')
        con.execute("CREATE OR REPLACE MACRO u(a, b) AS (hash(a, b) % 1000003) / 1000003.0")
        # Run ids padded to 6 digits: lpad truncates longer text, so 4 digits repeated ids
        # from run 10,000 on (and the selection's join multiplied the rows).
        con.execute(f"""
            CREATE TEMP TABLE gen AS
            SELECT r, 'run' || lpad(r::VARCHAR, 6, '0') AS run_id, r % {configs} AS cfg, r // {configs} AS seed,
                   [1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4][r % {configs} + 1] AS lr,
                   u(r, 1) < (r % {configs}) * 0.06 AS failed
            FROM range({configs * seeds}) t(r)
        """)
        con.execute("""
            INSERT INTO runs (run_id, status, status_written, schema_version, task_info, config, environment,
                              source, source_format, fingerprint, ingested_at, task, seed, lr)
            SELECT run_id, 'completed', 'completed', 1,
                   '{"name": "rte", "majority": {"accuracy": 0.527}}'::JSON,
                   json_object('task', 'rte', 'seed', seed, 'lr', lr), '{}'::JSON, 'generated/' || run_id,
                   'stabstat', md5(run_id), TIMESTAMP '2026-01-02 00:00:00', 'rte', seed, lr
            FROM gen
        """)
        con.execute("INSERT INTO majority SELECT run_id, 'accuracy', 0.527 FROM gen")
        con.execute(f"""
            INSERT INTO steps SELECT run_id, s, s / {steps}, CASE WHEN failed THEN 0.69 ELSE 0.69 * exp(-s / 30) END,
                                     lr, 1.0, s * 0.1
            FROM gen, range(1, {steps} + 1) t(s)
        """)
        con.execute(f"""
            INSERT INTO evals SELECT run_id, s, 'dev', 'accuracy',
                                     CASE WHEN failed THEN 0.527 ELSE 0.75 + 0.01 * cfg + 0.05 * u(r, s) END
            FROM gen, range(50, {steps} + 1, 50) t(s)
        """)
        con.execute("CHECKPOINT")
    tmp.rename(db)
    return db


def _time(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def _bytecode_env() -> dict[str, str]:
    """The environment of an installed copy: Python may cache compiled bytecode (here under
    the benchmark's cache folder, so the tree is left alone). A machine that sets
    ``PYTHONDONTWRITEBYTECODE=1`` (this one does) makes every process recompile stabstat's
    ~40 modules from source (~0.04 s), which no pip-installed copy does; numpy, duckdb,
    scipy and click come with their bytecode either way. Every command of the run, the
    references included, gets the same environment."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    return env


def run(quick: bool = False) -> list[dict[str, object]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    n_runs = 60 if quick else 600
    reps = 3 if quick else 7
    db = _db(n_runs)
    py = sys.executable
    cfg_db = _configs_db(seeds=5 if quick else 50)
    ref_script = str(Path(__file__).with_name("ref_compare_scipy.py"))
    cmds = {
        "python": [py, "-c", "pass"],
        "help": [py, "-m", "stabstat", "--help"],
        "compare": [py, "-m", "stabstat", "compare", "--by", "bias_correction", "--db", str(db)],
        "compare6": [py, "-m", "stabstat", "compare", "--by", "lr", "--db", str(cfg_db)],
        "scipy6": [py, ref_script, str(cfg_db), "lr"],
    }
    env = _bytecode_env()
    runs: dict[str, tuple[list[str], dict[str, str] | None]] = {k: (c, env) for k, c in cmds.items()}
    no_cache = os.environ.get("PYTHONDONTWRITEBYTECODE")
    if no_cache:  # the same pair as this machine runs it: stabstat recompiled in every process
        runs["compare6_src"] = (cmds["compare6"], None)
        runs["scipy6_src"] = (cmds["scipy6"], None)
    for c, e in runs.values():  # untimed warm-up: fills the bytecode cache and the OS's file cache
        _time(c, e)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):  # interleaved: load from other processes hits every variant alike
        for k, (c, e) in runs.items():
            times[k].append(_time(c, e))
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = [] if not no_cache else [
        {"benchmark": f"same, without a bytecode cache (PYTHONDONTWRITEBYTECODE={no_cache}, as this machine sets it)",
         "ours": med["compare6_src"], "reference": med["scipy6_src"], "unit": "s",
         "ratio": med["compare6_src"] / med["scipy6_src"], "target": "-",
         "note": f"stabstat's modules compiled from source in every process; median of {reps}"}]
    return [
        {"benchmark": "stabstat --help (cold process)", "ours": med["help"], "reference": med["python"],
         "unit": "s", "ratio": med["help"] / med["python"], "target": "< 0.5 s",
         "note": f"reference: python -c pass; median of {reps}"},
        {"benchmark": f"stabstat compare --by bias_correction, {n_runs} runs", "ours": med["compare"],
         "reference": med["python"], "unit": "s", "ratio": med["compare"] / med["python"],
         "target": "< 1.0 s", "note": f"10,000 BCa resamples; median of {reps}"},
        {"benchmark": f"stabstat compare --by lr, 6 configs x {5 if quick else 50} seeds (whole process)",
         "ours": med["compare6"], "reference": med["scipy6"], "unit": "s",
         "ratio": med["compare6"] / med["scipy6"], "target": "<= 0.5",
         "note": "reference: benchmarks/ref_compare_scipy.py (duckdb + scipy.stats.bootstrap BCa 10,000 of the "
                 f"mean per level only); ours: every compare statistic and test; median of {reps}; "
                 "processes may cache bytecode, as an installed copy does"},
        *extra,
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
