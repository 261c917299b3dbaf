"""Run directories on S3: the runner writes them, ``stabstat ingest s3://...`` reads them.

Against a local S3 stand-in (moto's server on 127.0.0.1, a free port), configured only through
the standard ``AWS_ENDPOINT_URL`` -- the same way a user points stabstat at MinIO or Ceph.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from click.testing import CliRunner  # noqa: E402

from stabstat.cli import cli  # noqa: E402

BUCKET = "stabstat-test"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for this module; yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Environment pointing at the moto server, a fresh prefix, and an s3fs filesystem."""
    import uuid

    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STABSTAT_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.prefix = f"{BUCKET}/{uuid.uuid4().hex[:8]}"  # type: ignore[attr-defined]
    return fs


def _objects(fs: Any, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p[len(prefix) + 1:] for p in fs.find(prefix))


# --------------------------------------------------------------------------------------------
# fast: the mirrored writer and the remote ingest, with runs written by RunLogger directly
# --------------------------------------------------------------------------------------------


def _mirrored(fs: Any, tmp_path: Path, run_id: str, **kwargs: Any) -> Any:
    from runner.storage import MirroredRunLogger, RemoteRunDir, filesystem

    rfs, root = filesystem(f"s3://{fs.prefix}")
    return MirroredRunLogger(tmp_path / "stage", run_id, {"task": "rte", "seed": 1, "lr": 2e-5},
                             remote=RemoteRunDir(rfs, root, run_id), **kwargs)


def test_mirror_uploads_each_flush_and_compacts_at_finish(s3: Any, tmp_path: Path) -> None:
    log = _mirrored(s3, tmp_path, "rte-a", flush_every_steps=2)
    assert _objects(s3, s3.prefix) == ["rte-a/run.json"]  # claimed at start
    for step in range(1, 6):
        log.log_step(step, loss=0.7 - 0.01 * step, lr=2e-5)
    # two flushes so far (before steps 3 and 5): parts are up, each one whole object
    assert _objects(s3, s3.prefix) == [
        "rte-a/run.json", "rte-a/steps.parts/part-000001.parquet", "rte-a/steps.parts/part-000002.parquet",
    ]
    remote_json = json.loads(s3.cat_file(f"{s3.prefix}/rte-a/run.json"))
    assert remote_json["status"] == "running"
    log.log_eval(5, "dev", {"accuracy": 0.7})
    log.finish("completed")
    assert _objects(s3, s3.prefix) == [
        "rte-a/evals.parquet", "rte-a/layer_grads.parquet", "rte-a/run.json", "rte-a/steps.parquet",
    ]
    assert json.loads(s3.cat_file(f"{s3.prefix}/rte-a/run.json"))["status"] == "completed"
    # the remote copy is byte-identical to the local one
    for name in ("steps.parquet", "run.json"):
        assert s3.cat_file(f"{s3.prefix}/rte-a/{name}") == (log.run_dir / name).read_bytes()


def test_remote_pending_reads_statuses_from_the_bucket(s3: Any, tmp_path: Path) -> None:
    from runner.sweep import PlannedRun, pending, run_status

    url = f"s3://{s3.prefix}"
    done = _mirrored(s3, tmp_path, "rte-done")
    done.log_step(1, loss=0.5)
    done.finish("completed")
    killed = _mirrored(s3, tmp_path, "rte-killed", flush_every_steps=1)
    killed.log_step(1, loss=0.5)
    killed.log_step(2, loss=0.4)  # flushed, then the "job" dies without finishing
    planned = [PlannedRun(r, {"task": "rte"}) for r in ("rte-done", "rte-killed", "rte-new")]
    assert run_status(url, "rte-done") == "completed"
    assert run_status(url, "rte-killed") == "running"
    assert run_status(url, "rte-new") is None
    assert [p.run_id for p in pending(planned, url)] == ["rte-killed", "rte-new"]


def test_ingest_from_s3_is_idempotent_and_names_urls(s3: Any, tmp_path: Path) -> None:
    from conftest import write_run

    local = tmp_path / "local"
    for i in range(2):
        write_run(local, f"rte-s{i}", config={"task": "rte", "seed": i}, seed=i, n_steps=5)
    s3.put(str(local) + "/", s3.prefix + "/", recursive=True)
    s3.pipe(f"{s3.prefix}/.submitit/123/log.out", b"not a run")  # ignored: hidden folder
    url = f"s3://{s3.prefix}"
    db = str(tmp_path / "s.duckdb")
    r = CliRunner().invoke(cli, ["ingest", url, "--db", db])
    assert r.exit_code == 0, r.output
    assert "2 ingested (2 new, 0 replaced), 0 unchanged, 0 rejected" in r.output
    from stabstat.store import Store

    with Store.open(db) as st:
        rows = st.query("SELECT run_id, source FROM runs ORDER BY run_id").to_dicts()
    assert rows == [{"run_id": f"rte-s{i}", "source": f"{url}/rte-s{i}"} for i in range(2)]
    r = CliRunner().invoke(cli, ["ingest", url, "--db", db])
    assert r.exit_code == 0 and "0 ingested (0 new, 0 replaced), 2 unchanged" in r.output, r.output
    # a run deleted from the bucket disappears from the mirror too; a changed one is replaced
    write_run(tmp_path / "v2", "rte-s1", config={"task": "rte", "seed": 1}, seed=7, n_steps=9)
    s3.put(str(tmp_path / "v2" / "rte-s1") + "/", f"{s3.prefix}/rte-s1/", recursive=True)
    r = CliRunner().invoke(cli, ["ingest", url, "--db", db])
    assert r.exit_code == 0 and "1 ingested (0 new, 1 replaced), 1 unchanged" in r.output, r.output


def test_endpoint_option_instead_of_the_environment(s3: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_run

    write_run(tmp_path / "local", "rte-s0", n_steps=3)
    s3.put(str(tmp_path / "local") + "/", s3.prefix + "/", recursive=True)
    endpoint = os.environ.pop("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    url = f"s3://{s3.prefix}"
    r = CliRunner().invoke(cli, ["ingest", url, "--db", str(tmp_path / "e.duckdb"), "--s3-endpoint", endpoint])
    assert r.exit_code == 0, r.output
    assert "1 ingested (1 new" in r.output


def test_object_deleted_after_the_listing_is_skipped(s3: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A run finishing during the ingest deletes its part files between listing and download."""
    from conftest import write_run

    from stabstat.ingest import remote

    write_run(tmp_path / "local", "rte-s0", n_steps=3)
    s3.put(str(tmp_path / "local") + "/", s3.prefix + "/", recursive=True)
    real = remote._objects

    def listing_with_a_vanished_part(fs: Any, root: str, url: str) -> Any:
        objs, run_dirs = real(fs, root, url)
        objs["rte-s0/steps.parts/part-000001.parquet"] = {"size": 123, "type": "file"}
        return objs, run_dirs

    monkeypatch.setattr(remote, "_objects", listing_with_a_vanished_part)
    r = CliRunner().invoke(cli, ["ingest", f"s3://{s3.prefix}", "--db", str(tmp_path / "v.duckdb")])
    assert r.exit_code == 0, r.output
    assert "1 ingested (1 new" in r.output


def test_missing_prefix_is_one_line(s3: Any, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["ingest", f"s3://{s3.prefix}/nothing", "--db", str(tmp_path / "x.duckdb")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"Error: s3://{s3.prefix}/nothing: no such prefix (no objects under it)"]


def test_corrupt_object_reported_like_a_local_file(s3: Any, tmp_path: Path) -> None:
    from conftest import write_run

    local = tmp_path / "local"
    for i in range(2):
        write_run(local, f"rte-s{i}", config={"task": "rte", "seed": i}, seed=i, n_steps=5)
    bad = local / "rte-s1" / "steps.parquet"
    bad.write_bytes(bad.read_bytes()[:-40])  # truncated: the footer is gone
    s3.put(str(local) + "/", s3.prefix + "/", recursive=True)
    url = f"s3://{s3.prefix}"

    runner = CliRunner()
    r_local = runner.invoke(cli, ["ingest", str(local), "--db", str(tmp_path / "l.duckdb")])
    r_s3 = runner.invoke(cli, ["ingest", url, "--db", str(tmp_path / "r.duckdb")])
    for r in (r_local, r_s3):
        assert r.exit_code == 1, r.output
        assert "1 ingested (1 new, 0 replaced), 0 unchanged, 1 rejected" in r.output
    rej_local = [ln for ln in r_local.output.splitlines() if ln.startswith("rejected")]
    rej_s3 = [ln for ln in r_s3.output.splitlines() if ln.startswith("rejected")]
    assert len(rej_local) == len(rej_s3) == 1
    assert f"{url}/rte-s1/steps.parquet" in rej_s3[0]
    assert str(tmp_path / "cache") not in rej_s3[0]  # the cache is an implementation detail
    # the same message, with the URL in place of the local folder
    assert rej_s3[0] == rej_local[0].replace(str(local), url)


# --------------------------------------------------------------------------------------------
# slow: stabstat-run trains 2 tiny runs into s3://, resumes from the bucket, ingest loads them
# --------------------------------------------------------------------------------------------

SWEEP = """
seeds = 1
[config]
model = "tiny"
task = "synthetic"
max_length = 32
n_train = 32
max_steps = 3
batch_size = 8
log_predictions = false
[grid]
bias_correction = [true, false]
"""


@pytest.mark.slow
def test_runner_writes_runs_to_s3_and_ingest_loads_them(s3: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    from runner.cli import run_cmd
    from runner.sweep import pending, plan

    torch.set_num_threads(1)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    url = f"s3://{s3.prefix}/runs"
    runner = CliRunner()
    r = runner.invoke(run_cmd, [str(sweep), "--out", url, "--threads", "1", "--progress", "plain"])
    assert r.exit_code == 0, r.output
    planned = plan(sweep)
    ids = sorted(p.run_id for p in planned)
    assert pending(planned, url) == []
    objs = _objects(s3, f"{s3.prefix}/runs")
    # compacted tables only: the part files were removed after the final run.json
    assert objs == sorted(f"{i}/{f}" for i in ids for f in
                          ("evals.parquet", "layer_grads.parquet", "run.json", "steps.parquet"))
    assert not list((tmp_path / "staging").iterdir())  # staging cleaned up

    # a job killed mid-run leaves run.json "running": the next submission redoes exactly that run
    victim = f"{s3.prefix}/runs/{ids[0]}"
    rj = json.loads(s3.cat_file(f"{victim}/run.json"))
    keep = s3.cat_file(f"{s3.prefix}/runs/{ids[1]}/run.json")
    rj.update(status="running", finished_at=None)
    s3.pipe(f"{victim}/run.json", json.dumps(rj).encode())
    s3.pipe(f"{victim}/steps.parts/part-000001.parquet", b"leftover of the killed attempt")
    assert [p.run_id for p in pending(planned, url)] == [ids[0]]
    r = runner.invoke(run_cmd, [str(sweep), "--out", url, "--threads", "1", "--progress", "plain"])
    assert r.exit_code == 0, r.output
    assert "1 already done, 1 to run" in r.output
    assert s3.cat_file(f"{s3.prefix}/runs/{ids[1]}/run.json") == keep  # untouched
    assert json.loads(s3.cat_file(f"{victim}/run.json"))["status"] == "completed"
    assert _objects(s3, f"{s3.prefix}/runs") == objs  # nothing duplicated, no leftover part

    db = str(tmp_path / "s.duckdb")
    r = CliRunner().invoke(cli, ["ingest", url, "--db", db])
    assert r.exit_code == 0, r.output
    from stabstat.store import Store

    with Store.open(db) as st:
        runs = st.query("SELECT run_id, status, bias_correction FROM runs ORDER BY run_id").to_dicts()
        n_steps = st.query("SELECT run_id, count(*) AS n FROM steps GROUP BY run_id ORDER BY run_id").to_dicts()
    assert [x["run_id"] for x in runs] == ids
    assert {x["status"] for x in runs} == {"completed"}
    assert n_steps == [{"run_id": i, "n": 3} for i in ids]


@pytest.mark.slow
def test_unwritable_bucket_is_one_line(s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from runner.cli import main

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP.replace("bias_correction = [true, false]", "bias_correction = [true]"))
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--out", "s3://no-such-bucket-here/runs", "--threads", "1", "--progress", "plain"])
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("Error: s3://no-such-bucket-here/runs/synthetic-"), err
    assert "cannot write" in err[0]
