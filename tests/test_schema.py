"""The run-log contract: loader, prose, and the writer -> validator -> DuckDB round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import schemas
from runner.logwriter import RunLogger
from stabstat import rundir
from stabstat.ingest.discover import find_run_dirs
from stabstat.validate import validate_run

ROOT = Path(__file__).resolve().parents[1]


def test_contract_loads_and_maps_to_arrow() -> None:
    s = schemas.load()
    assert s.version == 1 == schemas.CURRENT_VERSION
    assert s.table_names == ["steps", "layer_grads", "evals", "predictions"]
    assert set(s.final_statuses) | {"running"} == set(s.statuses)
    for t in s.tables:
        schema = t.arrow_schema()
        assert schema.names == t.column_names
        assert t.column_names[0] == "run_id"
        assert set(t.key) <= set(t.column_names) and t.order in t.column_names
        for c in t.columns:
            assert schema.field(c.name).nullable == c.nullable
            assert c.meaning
        for k in t.key:  # key columns identify rows: never null
            assert not t.column(k).nullable
    assert [t.name for t in s.tables if not t.required] == ["predictions"]


def test_done_statuses_are_final_statuses_of_the_contract() -> None:
    # "need not be run again" (resume) is a subset of the contract's final statuses
    # issue 14: a run stopped by --stop-doomed is done too (resume must not restart it)
    assert schemas.DONE_STATUSES == ("completed", "diverged", "stopped")
    assert set(schemas.DONE_STATUSES) < set(schemas.load().final_statuses)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown run-log schema_version 2"):
        schemas.load(2)


def test_readme_documents_every_column_and_status() -> None:
    """schemas/README.md is the prose contract: it must mention everything in the JSON."""
    text = (ROOT / "schemas" / "README.md").read_text()
    s = schemas.load()
    for t in s.tables:
        assert f"`{t.filename}`" in text, t.filename
        for c in t.columns:
            assert f"`{c.name}`" in text, f"{t.name}.{c.name}"
    for status in s.statuses:
        assert f"`{status}`" in text, status
    for key in [*s.run_json_required, *s.run_json_optional]:
        assert f"`{key}`" in text, key


def test_json_file_is_the_only_column_list() -> None:
    """No module spells out a table's column list: both sides read schemas.load()."""
    needle = '"grad_norm", "wall_time"'
    for pkg in ("runner", "stabstat"):
        for f in (ROOT / pkg).rglob("*.py"):
            assert needle not in f.read_text(), f


def _write_round_trip_run(root: Path) -> tuple[Path, dict[str, list[tuple]]]:
    rng = np.random.default_rng(0)
    expected: dict[str, list[tuple]] = {"steps": [], "layer_grads": [], "evals": [], "predictions": []}
    layers = ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]
    with RunLogger(root, "rt", {"task": "mrpc", "seed": 7, "lr": 2e-5, "bias_correction": True},
                   task={"name": "mrpc", "num_labels": 2, "majority": {"accuracy": 0.68}},
                   flush_every_steps=7) as log:
        for step in range(1, 31):
            loss, lr, gn = float(rng.random()), 2e-5 * step / 30, float(rng.random())
            log.log_step(step, loss=loss, lr=lr, grad_norm=gn, epoch=step / 10, wall_time=step * 0.1)
            expected["steps"].append(("rt", step, step / 10, loss, lr, gn, step * 0.1))
            norms = rng.random(len(layers)).tolist()
            log.log_layer_grads(step, layers, list(range(len(layers))), norms)
            expected["layer_grads"] += [("rt", step, la, i, n) for i, (la, n) in enumerate(zip(layers, norms, strict=True))]
            if step % 10 == 0:
                log.log_eval(step, "dev", {"accuracy": step / 40, "f1": None})
                expected["evals"] += [("rt", step, "dev", "accuracy", step / 40), ("rt", step, "dev", "f1", None)]
                labels, preds = rng.integers(0, 2, 4), rng.integers(0, 2, 4)
                probs = rng.random(4)
                log.log_predictions(step, "dev", np.arange(4), labels, preds, probs)
                expected["predictions"] += [
                    ("rt", step, "dev", i, int(labels[i]), int(preds[i]), float(probs[i])) for i in range(4)
                ]
    return root / "rt", expected


def test_round_trip_writer_validator_duckdb(tmp_path: Path) -> None:
    d, expected = _write_round_trip_run(tmp_path)
    assert validate_run(d) == []
    rj = rundir.read_run_json(d)
    assert rj["status"] == "completed" and rj["config"]["seed"] == 7 and rj["task"]["majority"]["accuracy"] == 0.68
    assert rj["tables"] == {k: len(v) for k, v in expected.items()}
    s = schemas.load()
    for t in s.tables:
        cols = ", ".join(t.column_names)
        got = duckdb.sql(f"select {cols} from read_parquet('{d / t.filename}')").fetchall()
        assert got == expected[t.name], t.name
        # the Python reader agrees, with the contract's exact Arrow schema
        table = rundir.read_table(d, t.name)
        assert table.schema == t.arrow_schema()
        assert [tuple(r.values()) for r in table.to_pylist()] == expected[t.name]
    types = dict(duckdb.sql(f"select column_name, column_type from (describe select * from read_parquet('{d}/layer_grads.parquet'))").fetchall())
    assert types == {"run_id": "VARCHAR", "step": "BIGINT", "layer": "VARCHAR", "depth": "INTEGER", "grad_norm": "DOUBLE"}


def test_hand_written_run_following_the_readme(tmp_path: Path) -> None:
    """The minimal pyarrow example of schemas/README.md produces a valid run."""
    text = (ROOT / "schemas" / "README.md").read_text()
    start = text.index("```python\n", text.index("## Writing logs by hand")) + len("```python\n")
    code = text[start: text.index("```", start)]
    ns: dict = {"__name__": "readme_example"}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "schemas/README.md", "exec"), ns)  # noqa: S102 - our own documentation
    finally:
        os.chdir(cwd)
    runs = find_run_dirs([tmp_path])
    assert len(runs) == 1
    assert validate_run(runs[0]) == []
    steps = rundir.read_table(runs[0], "steps")
    assert steps.num_rows > 0 and math.isnan(steps.column("loss").to_pylist()[-1])
    assert json.loads((runs[0] / "run.json").read_text())["status"] == "diverged"
    nan_rows = duckdb.sql(f"select count(*) from read_parquet('{runs[0]}/steps.parquet') where isnan(loss)").fetchall()
    assert nan_rows == [(1,)]


def test_empty_tables_read_with_schema(tmp_path: Path) -> None:
    RunLogger(tmp_path, "empty", {"seed": 0}).finish()
    d = tmp_path / "empty"
    assert validate_run(d) == []
    for t in schemas.load().tables:
        table = rundir.read_table(d, t.name)
        assert table.num_rows == 0 and table.schema == t.arrow_schema()
    assert not (d / "predictions.parquet").exists()  # optional and never written
    assert duckdb.sql(f"select count(*) from read_parquet('{d}/evals.parquet')").fetchall() == [(0,)]
    assert isinstance(rundir.read_table(d, "steps"), pa.Table)
