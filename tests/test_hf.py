"""The Hugging Face Trainer reader (trainer_state.json -> steps/evals + run.json-like dict)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import hf_history

from stabstat.errors import InputFormatError
from stabstat.ingest import ingest
from stabstat.ingest.discover import discover
from stabstat.ingest.sources.hf import hive_factors, parse_param, parse_value, read_hf_run
from stabstat.store import Store


def test_parse_value_and_hive_factors():
    assert [parse_value(v) for v in ("true", "False", "3", "-2", "2e-5", "0.1", "rte", "nan", "1e")] == [
        True, False, 3, -2, 2e-5, 0.1, "rte", "nan", "1e"]
    assert hive_factors("/x/task=rte/bias_correction=false/seed=3/lr=2e-5/out") == {
        "task": "rte", "bias_correction": False, "seed": 3, "lr": 2e-5}
    assert parse_param("model = bert") == ("model", "bert")
    with pytest.raises(InputFormatError, match="expected key=value"):
        parse_param("seed")


def test_training_and_eval_entries(make_hf_run):
    d = make_hf_run("sweep/seed=1")
    run = read_hf_run(d)
    steps = run.records("steps")
    assert [s["step"] for s in steps] == [10, 20, 30, 40, 50]
    assert steps[0] == {"run_id": run.run_id, "step": 10, "epoch": 0.1, "loss": 0.7, "lr": 2e-5,
                        "grad_norm": 1.5, "wall_time": None}
    evals = run.records("evals")
    # eval entries at steps 20 and 40; runtime/samples_per_second/steps_per_second skipped
    assert sorted({(e["split"], e["metric"]) for e in evals}) == [("eval", "accuracy"), ("eval", "loss")]
    assert [(e["step"], e["metric"], e["value"]) for e in evals if e["step"] == 40] == [
        (40, "accuracy", pytest.approx(0.63)), (40, "loss", pytest.approx(0.62))]
    assert run.run_json["status"] == "completed"  # the final train_runtime entry
    assert run.run_json["config"] == {"seed": 1}
    assert run.run_json["task"]["metrics"] == ["accuracy", "loss"]


def test_newest_checkpoint_wins_and_steps_are_not_duplicated(make_hf_run):
    hist = hf_history(6)
    d = make_hf_run("r", history=hist, checkpoints=(20, 40), own=False, max_steps=100)
    # an older checkpoint disagrees about step 20: the newest file's value is kept
    older = json.loads((d / "checkpoint-20" / "trainer_state.json").read_text())
    older["log_history"][1]["loss"] = 9.0
    (d / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(older))
    run = read_hf_run(d)
    steps = run.records("steps")
    assert [s["step"] for s in steps] == [10, 20, 30, 40]
    assert [s["loss"] for s in steps if s["step"] == 20] == [0.65]
    assert run.run_json["status"] == "interrupted"  # global_step 40 < max_steps 100, no final entry
    # a checkpoint folder given directly maps to the same run
    assert read_hf_run(d).run_id == run.run_id


def test_factors_from_folders_side_file_and_params(make_hf_run, tmp_path):
    d = make_hf_run("task=rte/bias_correction=false/seed=3",
                    side={"config": {"lr": 2e-5, "seed": 4, "nested": {"a": 1}},
                          "task": {"majority": {"accuracy": 0.53}}})
    run = read_hf_run(d, params={"model": "bert", "lr": 5e-5})
    assert run.run_json["config"] == {"task": "rte", "bias_correction": False, "seed": 4, "lr": 5e-5, "model": "bert"}
    assert run.run_json["task"]["majority"] == {"accuracy": 0.53}
    # a model config.json from save_pretrained is not a list of factors
    e = make_hf_run("m/seed=1")
    (e / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                               "hidden_size": 128, "_name_or_path": "bert-base-uncased"}))
    assert read_hf_run(e).run_json["config"] == {"seed": 1, "model": "bert-base-uncased"}


def test_run_id_is_deterministic_and_path_dependent(make_hf_run):
    a = make_hf_run("x/seed=1")
    b = make_hf_run("y/seed=1")
    assert read_hf_run(a).run_id == read_hf_run(a).run_id
    assert read_hf_run(a).run_id != read_hf_run(b).run_id
    assert read_hf_run(a).run_id.startswith("seed=1-")


def test_nonfinite_loss_means_diverged(make_hf_run):
    d = make_hf_run("div", history=hf_history(3, losses=[0.7, float("nan"), float("nan")], final=False))
    run = read_hf_run(d)
    assert run.run_json["status"] == "diverged"
    assert math.isnan(run.records("steps")[1]["loss"])


def test_bad_files_name_file_and_entry(tmp_path, make_hf_run):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "trainer_state.json").write_text('{"log_history": [{"loss": 0.5, "st')
    with pytest.raises(InputFormatError, match=r"broken/trainer_state.json: malformed JSON"):
        read_hf_run(d)
    e = make_hf_run("e", history=[{"loss": "high", "step": 1}])
    with pytest.raises(InputFormatError, match=r"log_history\[0\]\.loss: expected a number"):
        read_hf_run(e)
    f = make_hf_run("f", history=[{"loss": 0.5, "step": 1.5}])
    with pytest.raises(InputFormatError, match=r"log_history\[0\]\.step"):
        read_hf_run(f)
    g = tmp_path / "g"
    g.mkdir()
    (g / "trainer_state.json").write_text('{"global_step": 3}')
    with pytest.raises(InputFormatError, match="log_history: missing"):
        read_hf_run(g)


def test_discover_auto_mixes_formats(make_run, make_hf_run, tmp_path):
    make_run("ours", out_dir=tmp_path / "all")
    make_hf_run("all/hf/seed=1", checkpoints=(20,))
    found = discover([tmp_path / "all"])
    assert [(k, p.name) for k, p in found] == [("hf", "seed=1"), ("stabstat", "ours")]
    assert discover([tmp_path / "all"], "stabstat") == [("stabstat", tmp_path / "all" / "ours")]
    assert [k for k, _ in discover([tmp_path / "all"], "hf")] == ["hf"]
    # a checkpoint folder or a state file given directly means its run
    assert discover([tmp_path / "all/hf/seed=1/checkpoint-20"])[0][1].name == "seed=1"
    assert discover([tmp_path / "all/hf/seed=1/trainer_state.json"])[0][1].name == "seed=1"


def test_hf_runs_ingest_and_summarise(make_hf_run, tmp_path):
    for seed in (1, 2):
        make_hf_run(f"hf/bias_correction=true/seed={seed}", side={"task": {"majority": {"accuracy": 0.6}}})
    make_hf_run("hf/bias_correction=false/seed=1",
                history=hf_history(5, losses=[0.7, 0.69, float("inf"), 0.7, 0.7]))
    db = tmp_path / "hf.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, tmp_path / "hf", params={"task": "rte"})
        assert len(rep.added) == 3 and rep.ok
        assert store.factors() == {"bias_correction": "BOOLEAN", "seed": "BIGINT", "task": "VARCHAR"}
        assert ingest(store, tmp_path / "hf", params={"task": "rte"}).unchanged != []
        # a different --param changes the fingerprint: the runs are replaced
        assert len(ingest(store, tmp_path / "hf", params={"task": "mrpc"}).replaced) == 3
        s = store.summary(metric="accuracy")
        assert s.height == 3 and set(s["split"]) == {"eval"}
        assert sorted(s["final_step"].to_list()) == [40, 40, 40]
        assert s.filter(s["bias_correction"])["majority"].to_list() == [0.6, 0.6]
        assert s.filter(~s["bias_correction"])["diverged"].to_list() == [True]
        assert store.con.execute("SELECT count(*) FROM layer_grads").fetchall() == [(0,)]
        assert store.con.execute("SELECT DISTINCT source_format FROM runs").fetchall() == [("hf",)]

