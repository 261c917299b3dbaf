"""Tidy tables (stabstat.ingest.sources.table): long, history (tracker export) and results
(one row per run) shapes in CSV, TSV, Parquet and JSONL written by pandas and polars."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from stabstat.errors import InputFormatError
from stabstat.ingest.source import PrepareOptions, Reject
from stabstat.ingest.sources.table import TableOptions, TableSource, read_table


def long_frame() -> pl.DataFrame:
    rows = []
    for run, lr, seed in (("a", 2e-5, 1), ("b", 1e-4, 2)):
        for step in (10, 20):
            rows += [(run, step, "train_loss", 1.0 / step, lr, seed, "rte"),
                     (run, step, "eval/accuracy", 0.5 + step / 100 + seed / 1000, lr, seed, "rte")]
        rows.append((run, 20, "my_extra", 3.0, lr, seed, "rte"))
    return pl.DataFrame(rows, schema=["run", "step", "metric", "value", "lr", "seed", "task"], orient="row")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_long_table_every_file_type(tmp_path, suffix):
    df = long_frame()
    path = tmp_path / f"runs{suffix}"
    if suffix == ".csv":
        df.to_pandas().to_csv(path, index=False)  # pandas, as most exports are written
    elif suffix == ".tsv":
        df.write_csv(path, separator="\t")
    elif suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_ndjson(path)
    read = read_table(path)
    assert read.shape == "long" and [r.source_format for r in read.runs] == ["table", "table"]
    a, b = read.runs
    assert a.run_id.startswith("a-") and b.run_id.startswith("b-") and a.run_id != b.run_id
    assert a.factors == {"lr": 2e-5, "seed": 1, "task": "rte"} and b.factors["lr"] == 1e-4
    assert [(s["step"], s["loss"]) for s in a.rows("steps")] == [(10, 0.1), (20, 0.05)]
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in b.rows("evals")] == [
        (10, "eval", "accuracy", 0.5 + 0.1 + 0.002), (20, "eval", "accuracy", 0.5 + 0.2 + 0.002),
        (20, "train", "my_extra", 3.0)]
    assert a.status == "completed" and a.task["metrics"] == ["accuracy"]
    assert "  run column: run" in read.summary and "  factors (inferred): lr, seed, task" in read.summary


def test_long_table_with_split_column_and_roles(tmp_path):
    df = pl.DataFrame({"name": ["x"] * 3, "iter": [1, 1, 2], "part": ["train", "mnli_m", "mnli_m"],
                       "what": ["loss", "acc", "acc"], "v": [0.5, 0.25, 0.75], "note": ["p", "q", "r"]})
    path = tmp_path / "t.csv"
    df.write_csv(path)
    opts = TableOptions(run_col="name", step_col="iter", metric_col="what", value_col="v", split_col="part")
    (run,) = read_table(path, opts).runs
    assert [(s["step"], s["loss"]) for s in run.rows("steps")] == [(1, 0.5)]
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in run.rows("evals")] == [
        (1, "mnli_m", "acc", 0.25), (2, "mnli_m", "acc", 0.75)]
    assert run.factors == {}  # "note" varies within the run: not a factor, and said so
    assert any("ignored" in line and "note" in line for line in read_table(path, opts).summary)
    with pytest.raises(InputFormatError, match="--run-col 'nope': no such column; columns: name, iter"):
        read_table(path, TableOptions(run_col="nope"))
    with pytest.raises(InputFormatError, match="--factor 'note': varies within a run"):
        read_table(path, TableOptions(**{**opts.__dict__, "factors": ("note",)}))


def test_history_table_like_a_tracker_export(tmp_path):
    df = pl.DataFrame({"run_name": ["r1", "r1", "r2", "r2"], "_step": [1, 2, 1, 2],
                       "train/loss": [0.5, 0.25, 0.75, None], "eval/f1": [None, 0.5, None, 0.625],
                       "lr": [0.1, 0.1, 0.2, 0.2], "optimizer": ["adam"] * 4})
    path = tmp_path / "export.parquet"
    df.write_parquet(path)
    read = read_table(path, params={"task": "sst2"})
    assert read.shape == "history"
    r1, r2 = read.runs
    assert r1.factors == {"lr": 0.1, "optimizer": "adam", "task": "sst2"}
    assert [(s["step"], s["loss"]) for s in r2.rows("steps")] == [(1, 0.75)]  # null cells: not logged
    assert [(e["step"], e["metric"], e["value"]) for e in r1.rows("evals")] == [(2, "f1", 0.5)]
    assert "  metric columns: train/loss, eval/f1" in read.summary


def test_results_table_one_row_per_run(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("lr,seed,bias_correction,accuracy,test_f1\n2e-5,1,true,0.71,0.62\n2e-5,2,true,0.52,0.5\n"
                    "1e-4,1,false,0.68,0.61\n")
    read = read_table(path)
    assert read.shape == "results" and len(read.runs) == 3
    first = read.runs[0]
    assert first.factors == {"lr": 2e-5, "seed": 1, "bias_correction": True}
    assert first.run_id.startswith("lr=2e-05_seed=1_bias_correction=True-")
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in first.rows("evals")] == [
        (0, "dev", "accuracy", 0.71), (0, "test", "f1", 0.62)]
    assert first.rows("steps") == [] and first.task["metrics"] == ["accuracy", "f1"]
    assert len({r.run_id for r in read.runs}) == 3
    assert read_table(path).runs[2].run_id == read.runs[2].run_id  # stable
    assert any("step 0" in line for line in read.summary)
    pct = tmp_path / "pct.csv"
    pct.write_text("seed,accuracy\n1,71.2\n1,70.1\n")
    read = read_table(pct, TableOptions(split="eval"))
    assert [r.rows("evals")[0]["split"] for r in read.runs] == ["eval", "eval"]
    assert [r.run_id.split("-")[0] for r in read.runs] == ["row1", "row2"]  # factors do not tell rows apart
    assert any("accuracy exceed 1: percent?" in line for line in read.summary)


def test_ragged_and_bad_files(tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("run,step,metric,value\na,1,loss,0.5\na,2,loss,0.25,9\n")
    with pytest.raises(InputFormatError, match=r"r\.csv: line 3: 5 cells, the header has 4") as exc:
        read_table(ragged)
    assert "\n" not in str(exc.value)
    short = tmp_path / "s.csv"
    short.write_text("run,step,metric,value\na,1,loss\n")
    with pytest.raises(InputFormatError, match=r"s\.csv: line 2: 3 cells"):
        read_table(short)
    text = tmp_path / "v.csv"
    text.write_text("run,step,metric,value\na,1,loss,high\n")
    with pytest.raises(InputFormatError, match="column 'value': expected numbers, got 'high'"):
        read_table(text)
    with pytest.raises(InputFormatError, match=r"unknown table type \.txt"):
        read_table(tmp_path / "x.txt")
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(InputFormatError, match=r"b\.parquet: cannot be read as a parquet table"):
        read_table(broken)


def test_adapter(tmp_path):
    path = tmp_path / "runs.csv"
    long_frame().write_csv(path)
    src = TableSource()
    assert src.detect(tmp_path) == 0 and src.locate(path) == path and src.locate(tmp_path) is None
    summary: list[str] = []
    runs = src.prepare_many(path, PrepareOptions(params={"seed": 9}, inform=summary.append))
    assert [r.factors["seed"] for r in runs] == [9, 9] and runs[0].tables["evals"].rows == 3
    assert len({r.fingerprint for r in runs}) == 2
    assert runs[0].fingerprint == src.prepare_many(path, PrepareOptions(params={"seed": 9}))[0].fingerprint
    assert summary and summary[0].startswith("runs.csv: 10 rows read as long")
    with pytest.raises(Reject, match="holds 2 runs"):
        src.prepare(path, PrepareOptions())
    one = tmp_path / "one.csv"
    one.write_text("step,metric,value\n1,loss,0.5\n")
    assert src.prepare(one, PrepareOptions()).run_id.startswith("one-")
    with pytest.raises(Reject, match="line 3"):
        bad = Path(tmp_path / "bad.csv")
        bad.write_text("step,metric,value\n1,loss,0.5\n2\n")
        src.prepare_many(bad, PrepareOptions())
