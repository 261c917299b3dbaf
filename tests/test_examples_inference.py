"""``compare --resample seeds,examples`` and ``--test aso`` end to end: real run directories
(RunLogger with per-example predictions), real ingest into DuckDB, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from runner.tasks.metrics import accuracy, mcc
from stabstat.cli import cli

J = 80
FAST = ["--resamples", "300", "--seed", "2"]


def _write(out: Path, recipe: str, seed: int, labels: np.ndarray, p_right: float, with_preds: bool) -> float:
    from runner.logwriter import RunLogger

    rng = np.random.default_rng([seed, int(p_right * 100)])
    preds = np.where(rng.random(J) < p_right, labels, 1 - labels)
    log = RunLogger(out, f"{recipe}-{seed}", {"task": "rte", "seed": seed, "recipe": recipe},
                    environment={"device": "cpu"})
    log.log_step(1, loss=0.5, lr=1e-5, grad_norm=1.0, epoch=1.0, wall_time=0.1)
    log.log_eval(1, "dev", {"accuracy": accuracy(labels, preds), "mcc": mcc(labels, preds)})
    if with_preds:
        log.log_predictions(1, "dev", np.arange(J), labels, preds, rng.random(J))
    log.finish("completed")
    return accuracy(labels, preds)


def _db(tmp: Path, *, preds_a: bool = True, preds_b: bool = True) -> tuple[str, dict[str, list[float]]]:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    labels = np.random.default_rng(1).integers(0, 2, J)
    acc: dict[str, list[float]] = {"a": [], "b": []}
    for seed in range(6):
        acc["a"].append(_write(tmp / "runs", "a", seed, labels, 0.85, preds_a))
        acc["b"].append(_write(tmp / "runs", "b", seed, labels, 0.6, preds_b))
    db = tmp / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [tmp / "runs"]).ok
    return str(db), acc


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[float]]]:
    return _db(tmp_path_factory.mktemp("ex"))


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_seeds_examples_json(db: tuple[str, dict[str, list[float]]]) -> None:
    path, acc = db
    r = run("compare", "--by", "recipe", "--resample", "seeds,examples", "--db", path, "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    ex = {g["level"]: g for g in d["examples"]}
    # The recomputed metric equals the runner's logged accuracy (an independent computation).
    for lv in ("a", "b"):
        assert ex[lv]["estimate"] == pytest.approx(np.mean(acc[lv]), abs=1e-12)
        assert ex[lv]["ci_low"] <= ex[lv]["estimate"] <= ex[lv]["ci_high"]
        assert ex[lv]["runs"] == 6 and ex[lv]["examples"] == J and 0 <= ex[lv]["share_examples"] <= 1
    (pair,) = d["examples_pairs"]
    assert pair["pairing"] == "examples and seeds" and pair["ci_low"] > 0
    assert d["settings"]["resample"] == "seeds,examples"
    again = run("compare", "--by", "recipe", "--resample", "seeds,examples", "--db", path, "--format", "json", *FAST)
    assert again.output == r.output


def test_aso_and_tables(db: tuple[str, dict[str, list[float]]]) -> None:
    path, _ = db
    r = run("compare", "--by", "recipe", "--test", "aso", "--resample", "seeds,examples", "--db", path, *FAST)
    assert r.exit_code == 0, r.output
    assert "almost stochastic order" in r.output and "seeds x examples bootstrap" in r.output
    j = json.loads(run("compare", "--by", "recipe", "--test", "aso", "--db", path, "--format", "json", *FAST).output)
    rows = {(t["a"], t["b"]): t for t in j["aso"]}
    assert rows[("a", "b")]["eps_min"] < 0.2 < 0.5 < rows[("b", "a")]["eps_min"]
    assert "examples" not in j


def test_default_output_has_no_example_sections(db: tuple[str, dict[str, list[float]]]) -> None:
    d = json.loads(run("compare", "--by", "recipe", "--db", db[0], "--format", "json", *FAST).output)
    assert "examples" not in d and "aso" not in d and "resample" not in d["settings"]


def test_missing_predictions_is_one_line(tmp_path: Path) -> None:
    path, _ = _db(tmp_path, preds_b=False)
    r = run("compare", "--by", "recipe", "--resample", "seeds,examples", "--db", path, *FAST)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "recipe=b has no per-example predictions" in r.output


def test_metric_not_recomputable(db: tuple[str, dict[str, list[float]]]) -> None:
    r = run("compare", "--by", "recipe", "--resample", "seeds,examples", "--metric", "mcc", "--db", db[0],
            "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    # MCC recomputed from predictions = the mean of the MCC the runner logged.
    for g, e in zip(d["groups"], d["examples"], strict=True):
        assert e["estimate"] == pytest.approx(g["mean"], abs=1e-12)
    r = run("compare", "--by", "recipe", "--resample", "seeds,examples", "--split", "dev", "--metric", "loss",
            "--db", db[0], *FAST)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_aso_claim(db: tuple[str, dict[str, list[float]]], tmp_path: Path) -> None:
    from stabstat.claims import check
    from stabstat.store import Store

    claims = tmp_path / "claims.toml"
    claims.write_text("[defaults]\nresamples = 300\n"
                      "[[claims]]\nname = 'a beats b'\nkind = 'aso'\nfactor = 'recipe'\nhigher = 'a'\nlower = 'b'\n"
                      "[[claims]]\nname = 'b beats a'\nkind = 'aso'\nfactor = 'recipe'\nhigher = 'b'\nlower = 'a'\n")
    with Store.open(db[0]) as store:
        res = check(store, claims)
    verdicts = {c.name: c.verdict for c in res.claims}
    assert verdicts == {"a beats b": "PASS", "b beats a": "FAIL"}
    r = run("check", str(claims), "--db", db[0])
    assert "a beats b" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_hf_callback_writes_predictions(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import pyarrow.parquet as pq

    from runner.hf_callback import StabstatCallback
    from runner.models import load_model
    from stabstat.validate import validate_run

    g = torch.Generator().manual_seed(2)
    x = torch.randint(1000, 2000, (20, 12), generator=g)
    y = (x[:, 0] % 2).long()
    data = [{"input_ids": x[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": y[i]} for i in range(20)]

    def my_metrics(ev: Any) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.argmax(ev.predictions, axis=1) == ev.label_ids))}

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_model("tiny", num_labels=2)
    cb = StabstatCallback(tmp_path / "runs", config={"task": "toy"}, write_predictions=True)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "o"), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=1, eval_strategy="steps", eval_steps=2, save_strategy="no", report_to=[], use_cpu=True,
        seed=7, dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data[:16] * 3, eval_dataset=data,
                                   compute_metrics=cb.wrap_compute_metrics(my_metrics), callbacks=[cb])
    trainer.train()
    d = tmp_path / "runs" / cb.run_id
    assert validate_run(d) == []
    rows = pq.read_table(d / "predictions.parquet").to_pylist()
    assert sorted({r["step"] for r in rows}) == [2, 4] and len(rows) == 40
    last = [r for r in rows if r["step"] == 4]
    assert [r["example_id"] for r in last] == list(range(20))
    assert [r["label"] for r in last] == y.tolist()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    assert [r["prediction"] for r in last] == logits.argmax(-1).tolist()
    np.testing.assert_allclose([r["probability"] for r in last], logits.softmax(-1).max(-1).values.numpy(),
                               rtol=1e-5)
    evals = pq.read_table(d / "evals.parquet").to_pylist()
    acc = next(e["value"] for e in evals if e["step"] == 4 and e["metric"] == "accuracy")
    assert acc == pytest.approx(accuracy(np.array([r["label"] for r in last]),
                                         np.array([r["prediction"] for r in last])))


def _figure(path: str):  # type: ignore[no-untyped-def]
    from stabstat.analysis import Settings
    from stabstat.report.context import build_context
    from stabstat.report.figures import examples_uncertainty
    from stabstat.store import Store

    with Store.open(path) as store:
        ctx = build_context(store, by="recipe", selection=None, settings=Settings(resamples=300), only=None)
        return examples_uncertainty(ctx), ctx.notes


def test_report_figure(db: tuple[str, dict[str, list[float]]], tmp_path: Path) -> None:
    fig, _ = _figure(db[0])
    assert fig is not None and fig.id == "examples-uncertainty"
    values = fig.spec()["data"]["values"]
    assert {(v["config"], v["source"]) for v in values} == {
        (c, s) for c in ("a", "b") for s in ("seeds only", "examples only", "seeds x examples")}
    # Without any predictions: no figure and no note (the golden reports have none).
    none, notes = _figure(_db(tmp_path / "none", preds_a=False, preds_b=False)[0])
    assert none is None and notes == []
    part, notes = _figure(_db(tmp_path / "part", preds_b=False)[0])
    assert part is None and "config=b has no per-example predictions" in notes[0]
