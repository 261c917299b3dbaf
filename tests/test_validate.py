"""The validator reports every contract problem, naming the file and the column."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import schemas
from runner.logwriter import RunLogger
from stabstat import rundir
from stabstat.cli import cli
from stabstat.errors import InputFormatError, SchemaError
from stabstat.ingest.discover import find_run_dirs, validate_path
from stabstat.validate import Problem, validate_run


def make_run(root: Path, run_id: str = "run-a", *, predictions: bool = False) -> Path:
    """A small valid, finished run written by the real writer."""
    with RunLogger(root, run_id, {"task": "rte", "seed": 1}, task={"num_labels": 2}) as log:
        for s in range(1, 6):
            log.log_step(s, loss=1.0 / s, lr=1e-5, grad_norm=0.5, epoch=s / 5)
            log.log_layer_grads(s, ["embeddings", "encoder.layer.0", "classifier"], [0, 1, 2], [0.1, 0.2, 0.3])
        log.log_eval(5, "dev", {"accuracy": 0.6, "f1": 0.5})
        if predictions:
            log.log_predictions(5, "dev", [0, 1, 2], [0, 1, 1], [0, 1, 0], [0.9, 0.8, 0.7])
    return root / run_id


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, values.type), values)


def edit_json(d: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((d / "run.json").read_text())
    change(data)
    (d / "run.json").write_text(json.dumps(data))


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_valid_run_has_no_problems(tmp_path: Path) -> None:
    d = make_run(tmp_path, predictions=True)
    assert validate_run(d) == []


def test_missing_run_json(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    (d / "run.json").unlink()
    p = only(validate_run(d))
    assert p.path == str(d / "run.json") and "missing" in p.message
    # the CLI finds a folder with tables but no run.json and reports it
    assert [r.run_dir for r in validate_path(tmp_path)] == [str(d)]


def test_malformed_run_json(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    (d / "run.json").write_text('{"schema_version": 1, "run_id": ')
    p = only(validate_run(d))
    assert p.path == str(d / "run.json") and "malformed JSON at line 1" in p.message
    with pytest.raises(InputFormatError, match="run.json: malformed JSON"):
        rundir.read_run_json(d)


@pytest.mark.parametrize("key", ["schema_version", "run_id", "status", "started_at", "config"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j.pop(key))
    problems = validate_run(d)
    p = next(p for p in problems if p.column == key)
    assert p.path == str(d / "run.json") and f"missing required key {key!r}" in p.message
    assert f"run.json: {key}: missing required key" in str(p)
    with pytest.raises(SchemaError, match=key):
        rundir.read_run_json(d)


def test_mistyped_run_json_keys(tmp_path: Path) -> None:
    d = make_run(tmp_path)

    def change(j: dict) -> None:
        j["config"] = [1, 2]
        j["started_at"] = "yesterday"
        j["stale_after_s"] = "10"

    edit_json(d, change)
    got = {p.column: p.message for p in validate_run(d)}
    assert set(got) == {"config", "started_at", "stale_after_s"}
    assert "JSON object" in got["config"] and "ISO 8601" in got["started_at"] and "number" in got["stale_after_s"]


def test_unknown_schema_version(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j.update(schema_version=7))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "run.json"), "schema_version")
    assert "unknown schema_version 7" in p.message


def test_unknown_status(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j.update(status="done"))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "run.json"), "status")
    assert "unknown status 'done'" in p.message and "completed" in p.message


def test_run_id_mismatch_between_dir_json_and_table(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j.update(run_id="other"))
    problems = validate_run(d)
    rj = next(p for p in problems if p.path == str(d / "run.json"))
    assert rj.column == "run_id" and "differs from the directory name 'run-a'" in rj.message
    # the tables still say run-a, which no longer matches run.json
    tab = next(p for p in problems if p.path == str(d / "steps.parquet"))
    assert tab.column == "run_id" and "'run-a'" in tab.message and "expected 'other'" in tab.message


def test_table_run_id_mismatch(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "evals.parquet", lambda t: set_column(t, "run_id", pa.array(["zzz", "run-a"])))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "evals.parquet"), "run_id")
    assert "1 row(s) with run_id 'zzz'" in p.message


def test_missing_required_table_file(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    (d / "evals.parquet").unlink()
    p = only(validate_run(d))
    assert p.path == str(d / "evals.parquet") and "missing required table file" in p.message


def test_missing_table_is_fine_while_running(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "live", {"seed": 1}, flush_every_steps=1)
    log.log_step(1, loss=1.0)
    log.log_step(2, loss=1.0)
    assert not (log.run_dir / "evals.parts").exists()
    assert validate_run(log.run_dir) == []


def test_missing_column(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "steps.parquet", lambda t: t.drop_columns(["lr"]))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "steps.parquet"), "lr")
    assert p.message == "missing column (expected type float64)"
    with pytest.raises(SchemaError, match=r"steps\.parquet: lr: missing column"):
        rundir.read_table(d, "steps")


@pytest.mark.parametrize(
    ("table", "column", "values", "expected"),
    [
        ("steps", "loss", pa.array(["a"] * 5), "float64"),
        ("steps", "step", pa.array([1.0, 2.0, 3.0, 4.0, 5.0]), "int64"),
        ("layer_grads", "layer", pa.array(list(range(15))), "string"),
        ("evals", "value", pa.array([True, False]), "float64"),
    ],
)
def test_mistyped_column(tmp_path: Path, table: str, column: str, values: pa.Array, expected: str) -> None:
    d = make_run(tmp_path)
    rewrite(d / f"{table}.parquet", lambda t: set_column(t, column, values))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / f"{table}.parquet"), column)
    assert f"expected {expected}" in p.message


def test_compatible_types_are_accepted_and_cast(tmp_path: Path) -> None:
    # Hand-written logs often have int64 depth, int32 step, float32 norms, large_string names.
    d = make_run(tmp_path)

    def change(t: pa.Table) -> pa.Table:
        t = set_column(t, "depth", t.column("depth").cast(pa.int64()).combine_chunks())
        t = set_column(t, "step", t.column("step").cast(pa.int32()).combine_chunks())
        t = set_column(t, "grad_norm", t.column("grad_norm").cast(pa.float32()).combine_chunks())
        return set_column(t, "layer", t.column("layer").cast(pa.large_string()).combine_chunks())

    rewrite(d / "layer_grads.parquet", change)
    assert validate_run(d) == []
    assert rundir.read_table(d, "layer_grads").schema == schemas.load().table("layer_grads").arrow_schema()


def test_null_in_non_nullable_column(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "layer_grads.parquet",
            lambda t: set_column(t, "layer", pa.array(["embeddings", None] + ["x"] * 13, pa.string())))
    problems = validate_run(d)
    p = next(p for p in problems if p.column == "layer")
    assert p.path == str(d / "layer_grads.parquet")
    assert "1 null value(s) in a non-nullable column (rows [1])" in p.message


def test_duplicate_step_layer(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "layer_grads.parquet", lambda t: pa.concat_tables([t.slice(0, 3), t.slice(0, 3), t.slice(3)]))
    # (run.json's row count for layer_grads no longer matches either; that is reported too)
    p = only([q for q in validate_run(d) if q.path != str(d / "run.json")])
    assert (p.path, p.column) == (str(d / "layer_grads.parquet"), "step, layer")
    assert "3 duplicate key(s)" in p.message and "(step=1, layer='embeddings') x2" in p.message


def test_duplicate_step_in_steps(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "steps.parquet", lambda t: set_column(t, "step", pa.array([1, 2, 2, 3, 4], pa.int64())))
    p = only([q for q in validate_run(d) if q.path != str(d / "run.json")])
    assert (p.path, p.column) == (str(d / "steps.parquet"), "step")
    assert "duplicate key" in p.message and "(step=2) x2" in p.message


def test_steps_going_backwards(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "steps.parquet", lambda t: set_column(t, "step", pa.array([1, 2, 5, 3, 4], pa.int64())))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "steps.parquet"), "step")
    assert "step goes backwards 1 time(s), first at row 3 (5 -> 3)" in p.message


def test_steps_going_backwards_across_parts(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "parts", {"seed": 1}, flush_every_steps=2)
    for s in [1, 2, 3, 4, 2, 3]:
        log.log_step(s, loss=1.0)
    log.flush()
    problems = validate_run(log.run_dir)
    cols = {p.column for p in problems}
    assert cols == {"step"}
    assert all(str(log.run_dir / "steps.parts") in p.path and "3 part files" in p.path for p in problems)
    assert any("goes backwards" in p.message for p in problems)
    assert any("duplicate key" in p.message for p in problems)


@pytest.mark.parametrize(
    ("table", "column", "values"),
    [
        ("evals", "value", pa.array([0.5, float("nan")])),
        ("steps", "lr", pa.array([1e-5, float("inf"), 1e-5, 1e-5, 1e-5])),
        ("steps", "wall_time", pa.array([0.0, 1.0, float("-inf"), 3.0, 4.0])),
    ],
)
def test_non_finite_in_finite_only_column(tmp_path: Path, table: str, column: str, values: pa.Array) -> None:
    d = make_run(tmp_path)
    rewrite(d / f"{table}.parquet", lambda t: set_column(t, column, values))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / f"{table}.parquet"), column)
    assert "1 non-finite value(s)" in p.message


def test_non_finite_allowed_where_contract_allows(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    rewrite(d / "steps.parquet", lambda t: set_column(t, "loss", pa.array([1.0, float("nan"), None, 1.0, 1.0])))
    assert validate_run(d) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_parquet(tmp_path: Path, damage: str) -> None:
    d = make_run(tmp_path)
    f = d / "layer_grads.parquet"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet at all", "empty": b""}[damage])
    p = only(validate_run(d))
    assert p.path == str(f) and p.column is None
    assert "not a readable Parquet file" in p.message
    with pytest.raises(InputFormatError, match="layer_grads.parquet: not a readable Parquet"):
        rundir.read_table(d, "layer_grads")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j.update(status="weird"))
    rewrite(d / "steps.parquet", lambda t: t.drop_columns(["epoch"]))
    rewrite(d / "evals.parquet", lambda t: set_column(t, "value", pa.array([float("nan"), 0.5])))
    (d / "layer_grads.parquet").write_bytes(b"x")
    got = {(Path(p.path).name, p.column) for p in validate_run(d)}
    assert got == {("run.json", "status"), ("steps.parquet", "epoch"), ("evals.parquet", "value"),
                   ("layer_grads.parquet", None)}


def test_row_counts_promised_by_run_json(tmp_path: Path) -> None:
    d = make_run(tmp_path)
    edit_json(d, lambda j: j["tables"].update(steps=99))
    p = only(validate_run(d))
    assert (p.path, p.column) == (str(d / "run.json"), "tables")
    assert "steps has 99 rows but steps files hold 5" in p.message


def test_problem_str() -> None:
    assert str(Problem("a/steps.parquet", "loss", "bad")) == "a/steps.parquet: loss: bad"
    assert str(Problem("a/run.json", None, "missing")) == "a/run.json: missing"


# -- CLI ------------------------------------------------------------------------------------


def test_cli_ok_and_problems(tmp_path: Path) -> None:
    make_run(tmp_path / "sweep", "a")
    make_run(tmp_path / "sweep" / "nested", "b")
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", str(tmp_path / "sweep")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == "2 runs OK (2 completed)"

    bad = make_run(tmp_path / "sweep", "c")
    rewrite(bad / "steps.parquet", lambda t: t.drop_columns(["loss"]))
    res = runner.invoke(cli, ["validate", str(tmp_path / "sweep")])
    assert res.exit_code == 1
    assert f"{bad / 'steps.parquet'}: loss: missing column (expected type float64)" in res.output
    assert res.output.strip().splitlines()[-1] == "2 runs OK (2 completed), 1 with problems"

    res = runner.invoke(cli, ["validate", "--format", "json", str(bad), str(tmp_path / "sweep" / "a")])
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert (out["n_runs"], out["n_ok"], out["n_with_problems"]) == (2, 1, 1)
    bad_report = next(r for r in out["runs"] if r["run_id"] == "c")
    assert bad_report["problems"] == [
        {"path": str(bad / "steps.parquet"), "column": "loss", "message": "missing column (expected type float64)"}
    ]


def test_cli_no_runs_found(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert res.exit_code == 1
    assert "no run directories" in res.output


def test_cli_missing_path(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "does not exist" in res.output


def test_cli_help_has_example() -> None:
    res = CliRunner().invoke(cli, ["validate", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "stabstat validate runs/" in res.output


# -- finding run directories, rundir ---------------------------------------------------------


def test_find_run_dirs(tmp_path: Path) -> None:
    a = make_run(tmp_path / "x", "a")
    b = make_run(tmp_path / "x" / "deep" / "er", "b")
    (tmp_path / "x" / "notes").mkdir()
    assert find_run_dirs([tmp_path]) == [a, b]
    assert find_run_dirs([a / "run.json", a, tmp_path / "x"]) == [a, b]
    with pytest.raises(InputFormatError, match="no such file or directory"):
        find_run_dirs([tmp_path / "missing"])
    with pytest.raises(InputFormatError, match="expected a run directory"):
        find_run_dirs([a / "steps.parquet"])


def test_effective_status() -> None:
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1, 12, 0, 0)
    rj = {"status": "running", "started_at": "2026-01-01T12:00:00+00:00"}
    assert rundir.effective_status(rj, now=t0 + timedelta(seconds=599)) == "running"  # default 600 s
    assert rundir.effective_status(rj, now=t0 + timedelta(seconds=601)) == "interrupted"
    rj |= {"heartbeat_at": "2026-01-01T13:00:00Z", "stale_after_s": 10}
    assert rundir.effective_status(rj, now=t0 + timedelta(hours=1, seconds=5)) == "running"
    assert rundir.effective_status(rj, now=t0 + timedelta(hours=1, seconds=11)) == "interrupted"
    for final in ("completed", "failed", "diverged", "interrupted"):
        assert rundir.effective_status({"status": final}, now=t0 + timedelta(days=9)) == final
    with pytest.raises(SchemaError, match="heartbeat_at"):
        rundir.effective_status({"status": "running", "heartbeat_at": "noon"})


def test_table_files_order_and_temp_files(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, "p", {"seed": 1}, flush_every_steps=1)
    for s in range(1, 13):
        log.log_step(s, loss=1.0)
    parts = log.run_dir / "steps.parts"
    (parts / ".part-000099.parquet.tmp").write_bytes(b"half a file")  # a write cut short
    (parts / "part-1000000.parquet").write_bytes((parts / "part-000011.parquet").read_bytes())
    (parts / "part-000011.parquet").unlink()
    names = [f.name for f in rundir.table_files(log.run_dir, "steps")]
    assert names[-2:] == ["part-000010.parquet", "part-1000000.parquet"]  # numeric, not lexical
    assert rundir.read_table(log.run_dir, "steps").column("step").to_pylist() == list(range(1, 12))
    assert rundir.table_files(log.run_dir, "predictions") == []
    with pytest.raises(KeyError):
        rundir.table_files(log.run_dir, "nope")
