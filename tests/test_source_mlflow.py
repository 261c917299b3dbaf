"""MLflow runs (stabstat.ingest.sources.mlflow, .mlflow_server), written by the real client:
to a file store (read directly) and to a real `mlflow server` (sqlite backend, 127.0.0.1, a
free port) read through the official client. Every value round-trips; deleted runs, logged
models, nested runs, statuses, typed params, damaged files; compare = our own format."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stabstat.errors import InputFormatError
from stabstat.ingest.source import PrepareOptions, Reject
from stabstat.ingest.sources import mlflow_sql
from stabstat.ingest.sources.mlflow import MlflowSource, param_value, read_mlflow_run
from stabstat.ingest.sources.mlflow_server import parse_mlflow_url
from stabstat.store import Store
from tests.tracker_fixtures import (
    SweepRun,
    assert_same,
    compare_json,
    ingest_cli,
    make_sweep,
    write_own_format,
)

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def _log_run(client: MlflowClient, exp_id: str, r: SweepRun, *, status: str = "FINISHED",
             parent: str | None = None) -> str:
    """One sweep run through the client, with the HF Trainer MLflowCallback's metric names."""
    from mlflow.entities import Metric, Param, RunTag

    tags = {"mlflow.parentRunId": parent} if parent else {}
    run = client.create_run(exp_id, tags=tags)
    rid = run.info.run_id
    t0 = run.info.start_time
    params = [Param("task", "rte"), Param("learning_rate", str(r.lr)), Param("seed", str(r.seed)),
              Param("bias_correction", str(r.bias_correction)), Param("warmup", "None"),
              Param("optim/name", "adamw"), Param("note", "nan")]
    metrics = []
    for i, (step, loss, lr, g) in enumerate(zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True)):
        ts = t0 + 100 * (i + 1)
        metrics += [Metric("loss", loss, ts, step), Metric("learning_rate", lr, ts, step),
                    Metric("grad_norm", g, ts, step), Metric("epoch", step / len(r.steps), ts, step)]
    last, ts = r.steps[-1], t0 + 100 * (len(r.steps) + 1)
    metrics += [Metric("eval_accuracy", r.accuracy, ts, last), Metric("eval_loss", 0.5, ts, last),
                Metric("val/f1", r.f1, ts, last), Metric("train_runtime", 12.5, ts, last)]
    client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("team", "nlp")])
    client.set_terminated(rid, status=status, end_time=ts + 1)
    return rid


def _check_run(rec, r: SweepRun) -> None:
    """Every logged value of ``r`` is in the record ``rec`` where the mapping says."""
    assert [(s["step"], s["loss"], s["lr"], s["grad_norm"], s["epoch"]) for s in rec.rows("steps")] == [
        (step, loss, lr, g, step / len(r.steps)) for step, loss, lr, g in zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True)]
    assert [s["wall_time"] for s in rec.rows("steps")] == pytest.approx([0.1 * i for i in range(len(r.steps))], abs=1e-3)
    last = r.steps[-1]
    assert {(e["step"], e["split"], e["metric"]): e["value"] for e in rec.rows("evals")} == {
        (last, "eval", "accuracy"): r.accuracy, (last, "eval", "loss"): 0.5, (last, "val", "f1"): r.f1,
        (last, "train", "runtime"): 12.5}
    assert rec.factors["learning_rate"] == r.lr and rec.factors["seed"] == r.seed
    assert rec.factors["bias_correction"] is r.bias_correction
    assert rec.factors["optim/name"] == "adamw" and rec.factors["note"] == "nan" and rec.factors["task"] == "rte"
    assert rec.config["warmup"] is None
    assert rec.task["metrics"] == ["accuracy", "f1", "loss"]
    assert rec.environment["mlflow_tags"]["team"] == "nlp"


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    """A file store written by the real client: a 2 x 3 sweep, a nested child run, a FAILED,
    a KILLED and a RUNNING run, a deleted run, a diverged run and an MLflow 3 logged model."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    root = tmp_path / "mlruns"
    client = MlflowClient(tracking_uri=root.as_uri())
    exp_id = client.create_experiment("sweep")
    sweep = make_sweep(seeds=3, n_steps=6)
    ids = {_log_run(client, exp_id, r): r for r in sweep}
    parent = next(iter(ids))
    child = _log_run(client, exp_id, sweep[0], parent=parent)
    failed = _log_run(client, exp_id, sweep[1], status="FAILED")
    killed = _log_run(client, exp_id, sweep[2], status="KILLED")
    deleted = _log_run(client, exp_id, sweep[3])
    client.delete_run(deleted)
    diverged = client.create_run(exp_id).info.run_id
    client.log_metric(diverged, "train/loss", 0.5, step=1)
    client.log_metric(diverged, "train/loss", float("nan"), step=2)
    client.set_terminated(diverged)
    running = client.create_run(exp_id).info.run_id
    client.log_metric(running, "loss", 0.5, step=1)
    mlflow.set_tracking_uri(root.as_uri())
    mlflow.set_experiment("sweep")
    with mlflow.start_run(run_id=parent):
        mlflow.initialize_logged_model(name="clf")
    # keep the parent FINISHED (start_run(run_id=...) re-opens it and ends it FINISHED)
    return {"root": root, "exp_id": exp_id, "ids": ids, "parent": parent, "child": child, "failed": failed,
            "killed": killed, "deleted": deleted, "diverged": diverged, "running": running}


def test_file_store_round_trip(file_store):
    fs = file_store
    exp = fs["root"] / fs["exp_id"]
    assert list((exp / "models").glob("m-*/meta.yaml")), "MLflow 3 writes logged models beside runs"
    assert (exp / fs["parent"] / "params" / "optim" / "name").is_file(), "params with / are nested folders"
    for rid, r in fs["ids"].items():
        rec = read_mlflow_run(exp / rid)
        assert rec.run_id == rid and rec.status == "completed" and rec.error is None
        _check_run(rec, r)
        assert rec.factors["experiment"] == "sweep" and "parent_run_id" not in rec.factors
        assert rec.started_at is not None and rec.finished_at is not None
    child = read_mlflow_run(exp / fs["child"])
    assert child.factors["parent_run_id"] == fs["parent"]
    assert read_mlflow_run(exp / fs["failed"]).status == "failed"
    assert read_mlflow_run(exp / fs["killed"]).status == "interrupted"
    assert read_mlflow_run(exp / fs["diverged"]).status == "diverged"
    assert read_mlflow_run(exp / fs["running"]).status == "running"  # its last metric is fresh


@pytest.mark.parametrize("plan", ["wide", "long"])
def test_file_store_ingest_skips_deleted_runs_and_models(file_store, tmp_path, monkeypatch, plan):
    """Both SQL plans of :mod:`stabstat.ingest.sources.mlflow_sql` (wide: one pivoting
    aggregation, long: one row per file and step) store what the Python reader reads."""
    monkeypatch.setattr(mlflow_sql, "WIDE_MAX_KEYS", 10**6 if plan == "wide" else 0)
    fs = file_store
    db = tmp_path / "m.duckdb"
    res = ingest_cli([str(fs["root"])], db)
    assert res.exit_code == 0, res.output
    with Store.open(db) as store:
        runs = store.con.execute("SELECT run_id, status, source_format, parent_run_id FROM runs").fetchall()
        n_steps = store.con.execute("SELECT count(*) FROM steps").fetchone()[0]
    got = {r[0]: r for r in runs}
    assert fs["deleted"] not in got and not any(k.startswith("m-") for k in got)
    assert set(got) == {*fs["ids"], fs["child"], fs["failed"], fs["killed"], fs["diverged"], fs["running"]}
    assert {r[2] for r in runs} == {"mlflow"}
    assert got[fs["child"]][3] == fs["parent"] and got[fs["parent"]][3] is None
    assert n_steps == sum(len(r.steps) for r in fs["ids"].values()) + 3 * 6 + 2 + 1
    assert "deleted" in res.output
    # the store (metric files read by DuckDB) holds exactly what the Python reader reads
    exp = fs["root"] / fs["exp_id"]
    with Store.open(db) as store:
        for rid in got:
            rec = read_mlflow_run(exp / rid)
            for table in ("steps", "evals"):
                cols = list(rec.tables[table])
                stored = store.con.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ? "
                                           f"ORDER BY {', '.join(cols[1:4])}", [rid]).fetchall()
                assert _same_rows(stored, [tuple(r.values()) for r in rec.rows(table)]), (rid, table)
        statuses = dict(store.con.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {rid: read_mlflow_run(exp / rid).status for rid in got}
    assert statuses[fs["diverged"]] == "diverged" and statuses[fs["killed"]] == "interrupted"
    again = ingest_cli([str(fs["root"])], db)
    assert again.exit_code == 0 and "unchanged" in again.output


def _same_rows(a, b) -> bool:
    """Rows equal, floats to 1e-9 (wall times are differences of Unix milliseconds), NaN = NaN."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float):
                if not (u == v or (u != u and v != v) or abs(u - v) <= 1e-9 * max(1.0, abs(u))):
                    return False
            elif u != v:
                return False
    return True


def test_meta_yaml_fast_path_equals_pyyaml(file_store):
    """The direct parse of MLflow's flat meta.yaml reads every run file the real client wrote
    (the fast path is used) and gives what ``yaml.safe_load`` gives; on generated files
    (``safe_dump`` of MLflow-like fields, as the file store writes them) it either agrees with
    PyYAML or declines (None: PyYAML reads it)."""
    yaml = pytest.importorskip("yaml")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stabstat.ingest.sources.mlflow import _flat_yaml

    runs = [f for f in file_store["root"].rglob("meta.yaml") if MlflowSource().detect(f.parent)]
    assert len(runs) >= 10
    for f in runs:
        text = f.read_text()
        assert _flat_yaml(text) is not None and _flat_yaml(text) == yaml.safe_load(text), f

    value = st.one_of(st.integers(-10**15, 10**15), st.text(max_size=12), st.sampled_from(
        ["", "yes", "No", "null", "~", "1.5", "0123", "2024-01-02", "C:\\Users\\me", "a: b", "x #y", "it's",
         "file:///tmp/a b", "1_000", ".inf", "On", "-"]), st.just([]), st.none(), st.booleans())

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), value, min_size=1, max_size=8))
    def check(fields):
        text = yaml.safe_dump(fields, default_flow_style=False)
        fast = _flat_yaml(text)
        assert fast is None or fast == yaml.safe_load(text) == fields

    check()


def test_param_typing_rule():
    assert [param_value(s) for s in ("2e-05", "0.1", "True", "false", "None", "3", "-2", "adamw", "nan", "inf",
                                      "[1, 2]", "")] == [2e-05, 0.1, True, False, None, 3, -2, "adamw", "nan",
                                                         "inf", "[1, 2]", ""]


def _hand_run(root: Path, run_id: str, *, meta: str | None = None, metric: str = "1700000000000 0.5 1\n") -> Path:
    """A run folder in the file-store layout, for damaged inputs the client never writes."""
    d = root / "1" / run_id
    (d / "metrics").mkdir(parents=True)
    (d / "params").mkdir()
    (d / "meta.yaml").write_text(meta if meta is not None else
                                 f"run_id: {run_id}\nstatus: 3\nstart_time: 1700000000000\nend_time: 1700000001000\n"
                                 "lifecycle_stage: active\nartifact_uri: C:\\Users\\me\\mlruns\\1\\artifacts\n")
    (d / "metrics" / "loss").write_text(metric)
    (d / "params" / "lr").write_text("2e-05")
    return d


def test_windows_artifact_uri_and_old_two_field_lines(tmp_path):
    d = _hand_run(tmp_path, "a" * 32, metric="1700000000000 0.5\n1700000000100 0.25 2 m-123\n")
    rec = read_mlflow_run(d)
    assert rec.environment["artifact_uri"] == "C:\\Users\\me\\mlruns\\1\\artifacts"
    assert [(s["step"], s["loss"]) for s in rec.rows("steps")] == [(0, 0.5), (2, 0.25)]
    assert rec.factors == {"lr": 2e-05}
    # DuckDB's CSV reader rejects the fourth field: the run is loaded by the Python fallback
    good = _hand_run(tmp_path, "e" * 32)
    res = ingest_cli([str(tmp_path / "1")], tmp_path / "w.duckdb")
    assert res.exit_code == 0, res.output
    with Store.open(tmp_path / "w.duckdb") as store:
        rows = store.con.execute("SELECT run_id, step, loss FROM steps ORDER BY run_id, step").fetchall()
    assert rows == [("a" * 32, 0, 0.5), ("a" * 32, 2, 0.25), (good.name, 1, 0.5)]


def test_bad_input_one_line_exit_1_good_runs_kept(tmp_path, file_store):
    root = file_store["root"]
    bad_yaml = _hand_run(root, "b" * 32, meta="run_id: [unclosed\nstatus: 3\n")
    no_id = _hand_run(root, "c" * 32, meta="status: 3\n")
    bad_line = _hand_run(root, "d" * 32, metric="1700000000000 0.5 1\n1700000000001 oops 2\n")
    with pytest.raises(InputFormatError, match=r"line 2: expected 'timestamp value step'.*fix or delete that line"):
        read_mlflow_run(bad_line)
    with pytest.raises(Reject, match=r"not valid YAML"):
        MlflowSource().prepare(bad_yaml, PrepareOptions())
    db = tmp_path / "bad.duckdb"
    res = ingest_cli([str(root)], db)
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if "meta.yaml" in ln or "loss" in ln]
    assert any(str(bad_yaml / "meta.yaml") in ln and "not valid YAML" in ln and "delete the run folder" in ln for ln in lines)
    assert any(str(no_id / "meta.yaml") in ln and "run_id: missing" in ln for ln in lines)
    assert any(str(bad_line / "metrics" / "loss") in ln and "line 2" in ln for ln in lines)
    assert "Traceback" not in res.output
    with Store.open(db) as store:
        n = store.con.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert n == len(file_store["ids"]) + 5  # every good run (the deleted one is skipped)


@pytest.mark.parametrize("plan", ["wide", "long"])
def test_duplicate_steps_and_short_lines_same_as_python_reader(tmp_path, monkeypatch, plan):
    """A step logged twice keeps its newest value in both SQL plans, as the Python reader does;
    a line without a value or a timestamp, which DuckDB's CSV reader would read as NULL,
    rejects its run naming file and line (the Python reader's message), good runs kept."""
    monkeypatch.setattr(mlflow_sql, "WIDE_MAX_KEYS", 10**6 if plan == "wide" else 0)
    dup = _hand_run(tmp_path, "a" * 32, metric="1700000000000 0.5 1\n1700000000100 0.25 2\n"
                                               "1700000000200 0.125 1\n1700000000300 nan 3\n"
                                               "1700000000050 0.0625 2\n")  # appended later, older
    (dup / "metrics" / "eval_accuracy").write_text("1700000000050 0.5 2\n1700000000150 0.75 2\n")
    (dup / "metrics" / "grad_norm").mkdir()  # per-layer norms: a nested key -> layer_grads
    for depth, layer in enumerate(("encoder.layer.0", "encoder.layer.1")):
        (dup / "metrics" / "grad_norm" / layer).write_text(f"1700000000000 {depth + 0.5} 1\n1700000000300 {depth} 3\n")
    no_value = _hand_run(tmp_path, "b" * 32, metric="1700000000000 0.5 1\n1700000000001\n")
    no_ts = _hand_run(tmp_path, "c" * 32, metric="1700000000000 0.5 1\n 0.5 2\n")
    db = tmp_path / "d.duckdb"
    res = ingest_cli([str(tmp_path / "1")], db)
    assert res.exit_code == 1 and "Traceback" not in res.output
    for bad in (no_value, no_ts):
        (line,) = [ln for ln in res.stderr.splitlines() if bad.name in ln]
        assert str(bad / "metrics" / "loss") in line and "line 2: expected 'timestamp value step'" in line
    rec = read_mlflow_run(dup)
    with Store.open(db) as store:
        steps = store.con.execute("SELECT step, loss, wall_time FROM steps ORDER BY step").fetchall()
        evals = store.con.execute("SELECT step, split, metric, value FROM evals").fetchall()
        status = store.con.execute("SELECT status FROM runs").fetchall()
    assert _same_rows(steps, [(r["step"], r["loss"], r["wall_time"]) for r in rec.rows("steps")])
    assert [s[:2] for s in steps[:2]] == [(1, 0.125), (2, 0.25)] and steps[2][1] != steps[2][1]
    assert [s[2] for s in steps] == pytest.approx([0.1, 0.0, 0.2], abs=1e-3)  # s since the earliest step row
    assert evals == [(2, "eval", "accuracy", 0.75)] == [tuple(e.values())[1:] for e in rec.rows("evals")]
    assert status == [("diverged",)] and rec.status == "diverged"
    with Store.open(db) as store:
        layers = store.con.execute("SELECT step, layer, depth, grad_norm FROM layer_grads ORDER BY step, depth").fetchall()
    assert layers == [tuple(r.values())[1:] for r in rec.rows("layer_grads")] == [
        (1, "encoder.layer.0", 1, 0.5), (1, "encoder.layer.1", 2, 1.5), (3, "encoder.layer.0", 1, 0.0),
        (3, "encoder.layer.1", 2, 1.0)]  # depth 0 is the embeddings


def test_adapter_detect_and_locate(file_store):
    exp = file_store["root"] / file_store["exp_id"]
    src = MlflowSource()
    run = exp / file_store["parent"]
    assert src.detect(run) == 2 and src.detect(exp) == 0 and src.detect(file_store["root"]) == 0
    assert all(src.detect(m) == 0 for m in (exp / "models").iterdir())
    assert src.locate(run / "meta.yaml") == run and src.locate(exp / "meta.yaml") is None


def test_compare_equals_own_format(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    sweep = make_sweep(seeds=6, n_steps=5)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    exp_id = client.create_experiment("cmp")
    for r in sweep:
        _log_run(client, exp_id, r)
    write_own_format(tmp_path / "own", sweep)
    assert ingest_cli([str(tmp_path / "mlruns")], tmp_path / "ml.duckdb").exit_code == 0
    assert ingest_cli([str(tmp_path / "own")], tmp_path / "own.duckdb").exit_code == 0
    ours = compare_json(tmp_path / "own.duckdb", "lr")
    theirs = compare_json(tmp_path / "ml.duckdb", "learning_rate")
    assert len(ours["groups"]) == 2 and [g["n_runs"] for g in ours["groups"]] == [6, 6] and ours["tests"]
    assert_same(_without_factor_name(theirs), _without_factor_name(ours))


def _without_factor_name(result):
    """Compare results with the factor's name blanked (``learning_rate`` in MLflow, ``lr`` ours)."""
    import json

    return json.loads(json.dumps(result).replace("learning_rate", "lr"))


# --- a real tracking server -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a sqlite backend; stopped (its process group) after the test."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield uri
    finally:
        with_group = proc.poll() is None
        if with_group:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def test_server_round_trip(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("STABSTAT_CACHE_DIR", str(tmp_path / "cache"))
    client = MlflowClient(tracking_uri=mlflow_server)
    exp_id = client.create_experiment("sweep")
    other = client.create_experiment("other")
    sweep = make_sweep(seeds=2, n_steps=5)
    ids = {_log_run(client, exp_id, r): r for r in sweep}
    deleted = _log_run(client, exp_id, sweep[0])
    client.delete_run(deleted)
    _log_run(client, other, sweep[0])  # not in the experiment asked for
    url = f"mlflow+{mlflow_server}/#experiment=sweep"
    db = tmp_path / "srv.duckdb"
    res = ingest_cli([url], db)
    assert res.exit_code == 0, res.output
    with Store.open(db) as store:
        got = dict(store.con.execute("SELECT run_id, source FROM runs").fetchall())
        steps = store.con.execute("SELECT run_id, step, loss, lr, grad_norm FROM steps ORDER BY run_id, step").fetchall()
        evals = store.con.execute("SELECT run_id, split, metric, value FROM evals").fetchall()
        lrs = dict(store.con.execute("SELECT run_id, learning_rate FROM runs").fetchall())
    assert set(got) == set(ids)
    assert all(src.startswith(url) for src in got.values())
    for rid, r in ids.items():
        assert [s[1:] for s in steps if s[0] == rid] == list(zip(r.steps, r.losses, r.lrs, r.grad_norms, strict=True))
        assert (rid, "eval", "accuracy", r.accuracy) in evals and lrs[rid] == r.lr
    again = ingest_cli([url], db)
    assert again.exit_code == 0 and "unchanged" in again.output
    bad = ingest_cli([f"mlflow+{mlflow_server}/#experiment=nope"], tmp_path / "x.duckdb")
    assert bad.exit_code != 0 and "no experiment named 'nope'" in bad.output and "Traceback" not in bad.output


def test_url_syntax():
    assert parse_mlflow_url("mlflow+https://h:1/#experiment=a&experiment=b") == ("https://h:1/", ["a", "b"], [])
    assert parse_mlflow_url("mlflow+http://h:1") == ("http://h:1", [], [])
    assert parse_mlflow_url("mlflow+http://h/#experiment_id=7") == ("http://h/", [], ["7"])
    with pytest.raises(InputFormatError, match="expected #experiment=NAME"):
        parse_mlflow_url("mlflow+http://h/#exp=7")
