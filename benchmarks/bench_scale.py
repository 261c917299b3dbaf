"""Cost of object storage for the runner and for ingest, against the same work on a local disk.

The S3 side is moto's server on 127.0.0.1 (no network latency: the figures isolate what the
storage layer itself adds -- request count, serialisation, the mirror). Each pair is measured
interleaved in the same process, ``reps`` times, medians:

- ``flush``: one ``RunLogger.flush`` of 200 steps with per-layer gradient norms (7 layers) and an
  evaluation: local writer vs the mirrored writer (same local write + upload of the parts and
  run.json). A flush happens every 30 s or 200 steps, so tens of ms are negligible.
- ``pending``: the resume check of a 200-run sweep (``runner.sweep.pending``): statuses read
  from 200 local run.json files vs one bucket listing + one concurrent batch of reads.
- ``ingest``: ``stabstat ingest`` of 20 finished runs into a fresh database: a local folder vs
  ``s3://`` (mirror + the same ingest); and a second, unchanged ingest of the bucket (only the
  listing and the fingerprints) vs the same for the folder.

Run: ``python -m benchmarks.bench_scale`` (``--quick``: fewer repetitions).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

#: Issue 7 states no speed target; these figures say what remote storage costs.
NO_TARGET = "none (informational)"


def _server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _fill(log: Any, n_steps: int, start: int) -> None:
    layers = ["embeddings", *[f"encoder.layer.{i}" for i in range(4)], "pooler", "classifier"]
    for s in range(start, start + n_steps):
        log.log_step(s, loss=0.5, lr=2e-5, grad_norm=1.0, epoch=s / 100)
        log.log_layer_grads(s, layers, list(range(len(layers))), [0.1] * len(layers))
    log.log_eval(start + n_steps - 1, "dev", {"accuracy": 0.7, "loss": 0.6})


def _row(name: str, ours: list[float], ref: list[float], unit: str, target: str, note: str) -> dict[str, Any]:
    o, r = statistics.median(ours), statistics.median(ref)
    return {"benchmark": name, "ours": o, "reference": r, "unit": unit,
            "ratio": o / r if r else float("nan"), "target": target, "note": note}


def _write_runs(out: Path, n: int) -> None:
    from runner.logwriter import RunLogger

    for i in range(n):
        with RunLogger(out, f"rte-{i:04d}", {"task": "rte", "seed": i, "lr": 2e-5},
                       task={"majority": {"accuracy": 0.53}}, flush_every_steps=10**9) as log:
            _fill(log, 50, 1)


def run(quick: bool = False) -> list[dict[str, Any]]:
    try:
        import moto.server  # noqa: F401
        import s3fs
    except ImportError:
        print("bench_scale: needs moto[s3] and s3fs (pip install 'stabstat[s3]' moto[s3] flask flask-cors)",
              file=sys.stderr)
        return []
    from runner.logwriter import RunLogger
    from runner.storage import MirroredRunLogger, RemoteRunDir, filesystem
    from runner.sweep import PlannedRun, pending

    reps = 3 if quick else 11
    server, endpoint = _server()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "STABSTAT_CACHE_DIR")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", STABSTAT_CACHE_DIR=str(tmp / "cache"))
    rows: list[dict[str, Any]] = []
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)

        # -- flush ---------------------------------------------------------------------------
        rfs, root = filesystem(f"s3://{bucket}/flush")
        local_log = RunLogger(tmp / "flush-local", "r", {"task": "rte"}, flush_every_steps=10**9)
        remote_log = MirroredRunLogger(tmp / "flush-stage", "r", {"task": "rte"}, flush_every_steps=10**9,
                                       remote=RemoteRunDir(rfs, root, "r"))
        ours, ref = [], []
        step = 1
        for i in range(reps):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                log = remote_log if which else local_log
                _fill(log, 200, step)
                t = time.perf_counter()
                log.flush()
                (ours if which else ref).append((time.perf_counter() - t) * 1e3)
            step += 200
        rows.append(_row("flush 200 steps: s3 mirror vs local", ours, ref, "ms",
                         NO_TARGET, "moto on loopback; parts + run.json uploaded"))

        # -- pending / ingest ------------------------------------------------------------------
        n_pending = 200
        local_many = tmp / "many"
        for i in range(n_pending):
            d = local_many / f"rte-{i:04d}"
            d.mkdir(parents=True)
            (d / "run.json").write_text('{"status": "completed"}')
        fs.put(str(local_many) + "/", f"{bucket}/many/", recursive=True)
        planned = [PlannedRun(f"rte-{i:04d}", {"task": "rte"}) for i in range(n_pending)]
        ours, ref = [], []
        for _ in range(reps):
            t = time.perf_counter()
            assert pending(planned, f"s3://{bucket}/many") == []
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert pending(planned, local_many) == []
            ref.append(time.perf_counter() - t)
        rows.append(_row("pending() of 200 runs: s3 vs local", ours, ref, "s", NO_TARGET,
                         "one listing + one concurrent batch of run.json reads"))

        from stabstat.ingest.remote import ingest_paths
        from stabstat.store import Store

        runs = tmp / "runs"
        _write_runs(runs, 20)
        fs.put(str(runs) + "/", f"{bucket}/runs/", recursive=True)
        first_o, first_r, again_o, again_r = [], [], [], []
        for i in range(max(2, reps // 3)):
            for target, first, again in ((f"s3://{bucket}/runs", first_o, again_o), (str(runs), first_r, again_r)):
                db = tmp / f"db-{uuid.uuid4().hex[:6]}.duckdb"
                with Store.open(db, read_only=False) as st:
                    t = time.perf_counter()
                    rep = ingest_paths(st, [target])
                    first.append(time.perf_counter() - t)
                    assert len(rep.added) == 20, rep.summary()
                    t = time.perf_counter()
                    rep = ingest_paths(st, [target])
                    again.append(time.perf_counter() - t)
                    assert len(rep.unchanged) == 20, rep.summary()
            if i == 0:  # the first s3 round downloaded into the cache; later rounds reuse it
                first_o.clear()
                first_r.clear()
                again_o.clear()
                again_r.clear()
        rows.append(_row("ingest 20 runs: s3 (cached mirror) vs folder", first_o, first_r, "s", NO_TARGET,
                         "mirror up to date: listing + fingerprints + load"))
        rows.append(_row("re-ingest 20 unchanged runs: s3 vs folder", again_o, again_r, "s", NO_TARGET,
                         "listing + fingerprints only"))
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['benchmark']:<48} ours {r['ours']:.4g} {r['unit']}  reference {r['reference']:.4g} {r['unit']}"
              f"  ratio {r['ratio']:.2f}  target {r['target']}")
