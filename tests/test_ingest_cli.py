"""``stabstat ingest | runs | query | schema`` through click's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stabstat.cli import cli
from stabstat.store import Store


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def good_runs(make_run, tmp_path: Path) -> Path:
    make_run("a-good", config={"task": "rte", "seed": 1, "bias_correction": True}, evals={20: {"accuracy": 0.8}},
             task={"majority": {"accuracy": 0.53}})
    make_run("b-good", config={"task": "rte", "seed": 2, "bias_correction": False}, evals={20: {"accuracy": 0.53}},
             task={"majority": {"accuracy": 0.53}})
    return tmp_path / "runs"


def test_ingest_then_reingest_is_a_noop(good_runs, tmp_path):
    db = str(tmp_path / "x.duckdb")
    r = invoke("ingest", str(good_runs), "--db", db)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"2 ingested (2 new, 0 replaced), 0 unchanged, 0 rejected -> {db}"
    r = invoke("ingest", str(good_runs), "--db", db)
    assert r.exit_code == 0 and r.stdout.startswith("0 ingested (0 new, 0 replaced), 2 unchanged, 0 rejected")
    with Store.open(db) as s:
        assert s.con.execute("SELECT count(*) FROM runs").fetchall() == [(2,)]


def test_bad_inputs_are_rejected_one_line_each_and_good_runs_kept(good_runs, make_run, tmp_path):
    runs = good_runs
    # 1. fails validation: run.json without config
    d = make_run("c-noconfig", config={"seed": 5})
    rj = json.loads((d / "run.json").read_text())
    del rj["config"]
    (d / "run.json").write_text(json.dumps(rj))
    # 2. truncated Parquet
    d = make_run("d-truncated", config={"seed": 6})
    f = d / "layer_grads.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    # 3. malformed JSON
    d = make_run("e-badjson", config={"seed": 7})
    (d / "run.json").write_text((d / "run.json").read_text()[:40])
    # 4. factor type conflicting with the column made by the good runs (seed BIGINT)
    make_run("f-conflict", config={"task": "rte", "seed": "abc"})
    # 5. a required table file missing from a finished run
    d = make_run("g-nosteps", config={"seed": 8})
    (d / "steps.parquet").unlink()

    db = str(tmp_path / "x.duckdb")
    r = invoke("ingest", str(runs), "--db", db)
    assert r.exit_code == 1, r.output
    assert r.stdout.strip() == f"2 ingested (2 new, 0 replaced), 0 unchanged, 5 rejected -> {db}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(f"rejected {runs}/") for line in lines)
    by_run = {line[len(f"rejected {runs}/"):].split("/")[0].split(":")[0]: line for line in lines}
    assert "run.json: config: missing required key 'config'" in by_run["c-noconfig"]
    assert "layer_grads.parquet: not a readable Parquet file (corrupt or truncated" in by_run["d-truncated"]
    assert "re-write it or delete the run directory" in by_run["d-truncated"]
    assert "run.json: malformed JSON at line" in by_run["e-badjson"]
    assert "factor 'seed' is 'abc' (VARCHAR) but the database stores it as BIGINT" in by_run["f-conflict"]
    assert "steps.parquet: missing required table file" in by_run["g-nosteps"]
    assert "Traceback" not in r.output
    with Store.open(db) as s:
        assert [x[0] for x in s.con.execute("SELECT run_id FROM runs ORDER BY 1").fetchall()] == ["a-good", "b-good"]
        assert s.con.execute("SELECT count(DISTINCT run_id) FROM steps").fetchall() == [(2,)]
        assert s.con.execute("SELECT count(*) FROM ingests WHERE action = 'rejected'").fetchall() == [(5,)]
    # the good runs are unchanged on the next ingest; the bad ones are reported again
    r = invoke("ingest", str(runs), "--db", db, "--json")
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert sorted(rep["unchanged"]) == ["a-good", "b-good"] and len(rep["rejected"]) == 5


def test_database_in_use_gives_one_line_not_a_traceback(good_runs, tmp_path):
    db = tmp_path / "x.duckdb"
    assert invoke("ingest", str(good_runs), "--db", str(db)).exit_code == 0
    hold = "import sys, time, duckdb\ncon = duckdb.connect(sys.argv[1])\nprint('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", hold, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for args in (["ingest", str(good_runs)], ["runs"], ["query", "SELECT 1"]):
            r = invoke(*args, "--db", str(db))
            assert r.exit_code == 2, r.output
            assert r.stderr.strip() == (
                f"Error: database {db} is in use by another process (pid {proc.pid}); "
                "wait for it to finish or use another --db"
            )
            assert "Traceback" not in r.output
    finally:
        proc.kill()
        proc.wait()


def test_runs_query_schema_outputs(good_runs, tmp_path):
    db = str(tmp_path / "x.duckdb")
    env = {"STABSTAT_DB": db}
    assert invoke("ingest", str(good_runs), env=env).exit_code == 0  # --db from the environment
    r = invoke("runs", "--format", "json", env=env)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["run_id"], x["seed"], x["bias_correction"], x["dev/accuracy"]) for x in rows] == [
        ("a-good", 1, True, 0.8), ("b-good", 2, False, 0.53)]
    r = invoke("runs", "--format", "csv", env=env)
    assert r.stdout.splitlines()[0].startswith("run_id,status,task,seed,bias_correction,")
    r = invoke("runs", env=env)
    assert r.stdout.startswith("same for all runs: task=rte, source_format=stabstat\n")
    assert "a-good" in r.stdout and "dev/accuracy" in r.stdout and "bias_correction" in r.stdout
    assert "task" in invoke("runs", "--all-columns", env=env).stdout.splitlines()[1]
    r = invoke("query", "SELECT run_id, final_value, majority FROM run_summary ORDER BY run_id", "--format", "csv", env=env)
    assert r.stdout.splitlines() == ["run_id,final_value,majority", "a-good,0.8,0.53", "b-good,0.53,0.53"]
    r = invoke("query", "DELETE FROM runs", env=env)
    assert r.exit_code == 2 and "DELETE statements are not allowed: queries are read-only" in r.stderr
    r = invoke("query", "SELEC 1", env=env)
    assert r.exit_code == 2 and r.stderr.startswith("Error: query: Parser Error") and "Traceback" not in r.output
    r = invoke("schema", env=env)
    assert r.exit_code == 0
    assert "runs (table, 2 rows)" in r.stdout and "run_summary (view)" in r.stdout
    assert "  bias_correction          BOOLEAN" in r.stdout
    r = invoke("schema", "--format", "json", env=env)
    assert {"table": "majority", "kind": "table", "column": "value", "type": "DOUBLE", "rows": 2} in json.loads(r.stdout)


def test_missing_database_and_no_runs(tmp_path):
    r = invoke("runs", "--db", str(tmp_path / "none.duckdb"))
    assert r.exit_code == 2 and "no such database; create it with `stabstat ingest" in r.stderr
    (tmp_path / "empty").mkdir()
    r = invoke("ingest", str(tmp_path / "empty"), "--db", str(tmp_path / "y.duckdb"))
    assert r.exit_code == 2 and "no runs found under" in r.stderr


def test_hf_ingest_with_params_and_progress(make_hf_run, tmp_path):
    make_hf_run("hf/bias_correction=false/seed=1")
    make_hf_run("hf/bias_correction=true/seed=1")
    db = str(tmp_path / "hf.duckdb")
    r = invoke("ingest", str(tmp_path / "hf"), "--db", db, "--format", "hf", "--param", "task=rte",
               "--param", "lr=2e-5", "--progress")
    assert r.exit_code == 0, r.output
    assert "ingesting" in r.stderr  # the progress bar goes to stderr
    assert r.stdout.startswith("2 ingested (2 new")
    r = invoke("query", "SELECT task, lr, bias_correction, seed FROM runs ORDER BY bias_correction", "--db", db,
               "--format", "json")
    assert json.loads(r.stdout) == [
        {"task": "rte", "lr": 2e-5, "bias_correction": False, "seed": 1},
        {"task": "rte", "lr": 2e-5, "bias_correction": True, "seed": 1},
    ]
    r = invoke("ingest", str(tmp_path / "hf"), "--db", db, "--param", "oops")
    assert r.exit_code == 2 and "--param 'oops': expected key=value" in r.stderr


@pytest.mark.parametrize("command", ["ingest", "runs", "query", "schema"])
def test_help_has_an_example(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and "Example:" in r.stdout and "stabstat " + command in r.stdout


def test_hostile_factor_names_are_quoted_not_executed(make_hf_run, tmp_path):
    make_hf_run("hf/seed=1")
    db = str(tmp_path / "h.duckdb")
    evil = 'x"; DROP TABLE runs; --'
    r = invoke("ingest", str(tmp_path / "hf"), "--db", db, "--param", f"{evil}=1")
    assert r.exit_code == 0, r.output
    with Store.open(db) as s:
        assert evil in s.factors() and s.quote_factor(evil) == '"x""; DROP TABLE runs; --"'
        assert s.query(f"SELECT {s.quote_factor(evil)} AS v FROM runs")["v"].to_list() == [1]


def test_ingest_and_runs_do_not_import_pandas(make_run, make_hf_run, tmp_path):
    """Regression: an Arrow scan in DuckDB imports pandas (+0.7 s per command); ingest avoids it."""
    make_run("a", out_dir=tmp_path / "mixed")
    make_hf_run("mixed/hf/seed=1")
    code = (
        "import sys\nfrom stabstat.cli import cli\n"
        f"for args in (['ingest', {str(tmp_path / 'mixed')!r}, '--db', {str(tmp_path / 'p.duckdb')!r}],"
        f" ['runs', '--db', {str(tmp_path / 'p.duckdb')!r}]):\n"
        "    try:\n        cli(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "print('PANDAS', 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "2 ingested (2 new" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().endswith("PANDAS False")
