"""stabstat.analysis over a real store built from run directories written by RunLogger."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

MAJORITY = 0.527
LAYERS = ["embeddings", "encoder.layer.0", "encoder.layer.1", "pooler", "classifier"]
N_TRAINS = (250, 500, 1000, 2000)


def fails(bc: bool, seed: int) -> bool:
    """Deterministic failures: none with bias correction; without it, more at small n_train
    (n_train 250: 3/3, 500: 2/3, 1000: 1/3, 2000: 0/3 over the 12 seeds)."""
    if bc:
        return False
    level = seed % 4  # index into N_TRAINS
    return (seed // 4) < (3 - level)


def build_runs(out_dir: Path, *, seeds: int = 12, steps: int = 30) -> list[str]:
    """bias_correction x seeds runs; n_train = N_TRAINS[seed % 4], max_steps = (100, 400)[seed % 2].

    A failed run sits exactly at the majority accuracy, its loss stalls near ln 2 and its
    lower layers' gradient norms fall 1000x after step 5; a successful run learns, and its
    dev accuracy falls with its final training loss plus seeded noise.
    """
    from runner.logwriter import RunLogger

    ids = []
    for bc in (False, True):
        for seed in range(seeds):
            rng = np.random.default_rng([seed, int(bc)])
            failed = fails(bc, seed)
            run_id = f"rte-bc{int(bc)}-s{seed:02d}"
            config = {"task": "rte", "seed": seed, "bias_correction": bc, "lr": 1e-4,
                      "n_train": N_TRAINS[seed % 4], "max_steps": (100, 400)[seed % 2]}
            task = {"name": "rte", "metrics": ["accuracy", "f1"], "majority": {"accuracy": MAJORITY, "f1": 0.0}}
            final_loss = 0.05 + 0.3 * rng.random()
            with RunLogger(out_dir, run_id, config, task=task, environment={"device": "cpu"},
                           flush_every_steps=10**6) as log:
                for step in range(1, steps + 1):
                    if failed:
                        loss = math.log(2) + 0.01 * rng.standard_normal()
                    else:
                        loss = final_loss + (0.69 - final_loss) * math.exp(-step / 5)
                    log.log_step(step, loss=loss, lr=1e-4, grad_norm=1.0 + rng.random(), wall_time=0.1 * step)
                    norms = [0.3 * (d + 1) * math.exp(0.1 * rng.standard_normal()) for d in range(len(LAYERS))]
                    if failed and step > 5:
                        norms = [n * (1e-3 if d <= 2 else 1.0) for d, n in enumerate(norms)]
                    log.log_layer_grads(step, LAYERS, list(range(len(LAYERS))), norms)
                acc = MAJORITY if failed else 0.75 - 0.3 * final_loss + 0.01 * rng.standard_normal()
                log.log_eval(steps // 2, "dev", {"accuracy": MAJORITY, "f1": 0.0})
                log.log_eval(steps, "dev", {"accuracy": acc, "f1": 0.0 if failed else acc - 0.02})
            ids.append(run_id)
    return ids


def build_db(tmp: Path) -> Path:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    build_runs(tmp / "runs")
    db = tmp / "stabstat.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [tmp / "runs"])
        assert rep.ok, rep.summary()
    return db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("analysis"))


@pytest.fixture
def store(db: Path):  # type: ignore[no-untyped-def]
    from stabstat.store import Store

    with Store.open(db) as s:
        yield s


FAST = None  # set below, after the import


def fast():  # type: ignore[no-untyped-def]
    from stabstat.analysis import Settings

    return Settings(resamples=500, seed=1)


def test_select_runs_failure_rule(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import select_runs

    rs = select_runs(store, ["bias_correction"])
    f = rs.frame
    assert f.height == 24
    assert rs.settings["metric"] == "accuracy" and rs.settings["split"] == "dev"
    expected = {f"rte-bc{int(bc)}-s{s:02d}": fails(bc, s) for bc in (False, True) for s in range(12)}
    assert dict(zip(f["run_id"].to_list(), f["failed"].to_list(), strict=True)) == expected
    assert "majority" in rs.settings["failure_rule"]


def test_select_runs_baseline_and_fail_below(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import Selection, select_runs

    high = select_runs(store, [], selection=Selection(baseline=0.99)).frame
    assert high["failed"].all()
    below = select_runs(store, [], selection=Selection(fail_below=MAJORITY)).frame
    # Strictly below: the runs exactly at the majority do not fail under --fail-below.
    assert not below["failed"].any()


def test_selection_errors(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import Selection, select_runs
    from stabstat.errors import QueryError, SelectionError

    with pytest.raises(SelectionError, match="unknown factor 'nope'.*bias_correction"):
        select_runs(store, ["nope"])
    with pytest.raises(SelectionError, match="unknown metric 'bleu'.*accuracy, f1"):
        select_runs(store, [], selection=Selection(metric="bleu"))
    with pytest.raises(SelectionError, match="matched no runs"):
        select_runs(store, [], selection=Selection(filters=("task=mrpc",)))
    with pytest.raises(QueryError, match="--where"):
        select_runs(store, [], selection=Selection(where="no_such_column > 1"))
    with pytest.raises(SelectionError, match="unknown split"):
        select_runs(store, [], selection=Selection(split="test"))


def test_compare_groups_and_tests(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import compare
    from stabstat.stats import iqm

    res = compare(store, "bias_correction", settings=fast())
    d = res.to_dict()
    assert [g["bias_correction"] for g in d["groups"]] == [False, True]
    g0, g1 = d["groups"]
    assert (g0["n_runs"], g0["n_failed"], g1["n_failed"]) == (12, 6, 0)
    assert g0["failure_rate"] == 0.5 and g0["failure_ci_method"] == "wilson"
    assert g1["failure_ci_method"] == "clopper-pearson" and g1["failure_ci_low"] == 0.0
    vals = np.array(store.query("SELECT final_value FROM run_summary s JOIN runs r USING (run_id) "
                                "WHERE metric='accuracy' AND NOT r.bias_correction")["final_value"])
    assert g0["mean"] == pytest.approx(vals.mean()) and g0["iqm"] == pytest.approx(iqm(vals))
    assert g0["ci_low"] <= g0["mean"] <= g0["ci_high"]
    kinds = [t["test"] for t in d["tests"]]
    for k in ("mean_difference", "failure_rate_difference", "sd_ratio", "brown_forsythe",
              "probability_of_improvement"):
        assert k in kinds
    md = next(t for t in d["tests"] if t["test"] == "mean_difference")
    assert md["paired"] is True  # both levels have seeds 0..11 once each
    assert md["estimate"] == pytest.approx(g0["mean"] - g1["mean"])
    assert md["p_adjusted"] >= md["p_value"]
    fr = next(t for t in d["tests"] if t["test"] == "failure_rate_difference")
    assert fr["estimate"] == 0.5 and fr["ci_low"] > 0
    s = d["settings"]
    # The default interval is "auto" since issue 17 (item 9): BCa, percentile for the SD below 20 runs.
    assert s["resamples"] == 500 and s["seed"] == 1 and s["ci_method"] == "auto" and s["correction"] == "holm"
    json.dumps(d, default=str)
    assert res.to_frame().height == 2


def test_compare_is_deterministic(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import compare

    a = compare(store, "bias_correction", settings=fast()).to_dict()
    b = compare(store, "bias_correction", settings=fast()).to_dict()
    assert json.dumps(a, default=str) == json.dumps(b, default=str)


def test_failure_rate_one_and_two_factors(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import Selection, failure_rate

    sel = Selection(filters=("bias_correction=false",))
    res = failure_rate(store, "n_train", selection=sel, settings=fast())
    rates = {g["n_train"]: (g["n_failed"], g["n_runs"]) for g in res.groups}
    assert rates == {250: (3, 3), 500: (2, 3), 1000: (1, 3), 2000: (0, 3)}
    trend = [t for t in res.tests if t["test"] == "logistic_trend"]
    assert len(trend) == 1 and trend[0]["transform"] == "log2" and trend[0]["per"] == "doubling"
    assert trend[0]["separation"] is False and trend[0]["odds_ratio"] < 1
    assert any("fewer than 10 runs" in w for w in res.warnings)
    two = failure_rate(store, ["n_train", "max_steps"], selection=sel, settings=fast())
    assert {tuple(g[k] for k in ("n_train", "max_steps")) for g in two.groups} == {
        (250, 100), (500, 400), (1000, 100), (2000, 400)}
    assert {t["factor"] for t in two.tests if t["test"] == "logistic_trend"} == {"n_train", "max_steps"}


def test_failure_rate_separation_warns(store) -> None:  # type: ignore[no-untyped-def]
    """Perfect separation in a numeric factor (every run at n_train 250 fails, none at 2000):
    the logistic fit has no finite MLE, so the result warns and the p-value comes from the
    permutation trend test (issue 17: this test used to fit no trend at all)."""
    from stabstat.analysis import Selection, failure_rate

    sel = Selection(filters={"bias_correction": False}, where="n_train IN (250, 2000)")
    res = failure_rate(store, "n_train", selection=sel, settings=fast())
    assert [(g["n_train"], g["n_failed"], g["n_runs"]) for g in res.groups] == [(250, 3, 3), (2000, 0, 3)]
    (trend,) = [t for t in res.tests if t["test"] == "logistic_trend"]
    assert trend["separation"] is True
    assert trend["p_method"].startswith("permutation trend test") and trend["direction"] == "decreasing"
    # 6 runs, 3 failed, all at one size: two of the C(6, 3) = 20 labellings are as extreme
    # (two-sided); 500 permutations put the Monte-Carlo SD at ~0.013.
    assert trend["p_value"] == pytest.approx(2 / 20, abs=0.04)
    assert any(w.startswith("trend of failure in n_train: ") and "separation" in w for w in res.warnings)
    # Without separation (both factors' levels mixed) the same call fits a Wald test, no warning.
    mixed = failure_rate(store, "n_train", selection=Selection(filters={"bias_correction": False}), settings=fast())
    (t2,) = [t for t in mixed.tests if t["test"] == "logistic_trend"]
    assert t2["separation"] is False and t2["p_method"] == "GLM Wald z"
    assert not any("trend of failure" in w for w in mixed.warnings)


def test_variance_against_train_loss(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import variance

    res = variance(store, bins=3, settings=fast())
    (g,) = res.groups
    assert g["n_runs"] == 18  # successful runs only
    # Accuracy falls with the final training loss by construction.
    assert g["pearson"] < -0.8 and g["pearson_ci_high"] < 0
    assert g["slope"] == pytest.approx(-0.3, abs=0.05)
    bins = res.to_dict()["bins"]
    assert [b["bin"] for b in bins] == [1, 2, 3] and sum(b["n_runs"] for b in bins) == 18
    assert all(b["train_loss_min"] <= b["train_loss_max"] for b in bins)
    assert res.settings["n_failed_left_out"] == 6


def test_gradients_flags_collapsed_failed_runs(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import gradients

    res = gradients(store, settings=fast())
    by_failed = {g["failed"]: g for g in res.groups}
    assert by_failed[True]["n_collapsed"] == 6 and by_failed[False]["n_collapsed"] == 0
    assert by_failed[True]["median_ratio"] < 0.01 < by_failed[False]["median_ratio"]
    t = next(t for t in res.tests if t["test"] == "collapse_vs_failure")
    assert t["p_value"] < 0.01
    layers = res.to_dict()["layers"]
    assert {r["layer"] for r in layers} == set(LAYERS)
    runs = res.to_dict()["runs"]
    assert len(runs) == 24 and all(r["source"] == "layers" for r in runs)


def test_gradients_fallback_to_total_norm(tmp_path: Path) -> None:
    from conftest import write_run

    from stabstat.analysis import Settings, gradients
    from stabstat.ingest import ingest
    from stabstat.store import Store

    for s in range(3):
        write_run(tmp_path / "runs", f"hf-{s}", config={"task": "rte", "seed": s}, layers=None, seed=s,
                  task={"majority": {"accuracy": 0.5}})
    with Store.open(tmp_path / "db.duckdb", read_only=False) as st:
        ingest(st, [tmp_path / "runs"])
        res = gradients(st, settings=Settings(resamples=200))
    assert {r["source"] for r in res.sections["runs"]} == {"total"}
    assert any("total grad_norm" in w for w in res.warnings)


def test_excluded_statuses_and_missing_values(tmp_path: Path) -> None:
    from conftest import write_run

    from stabstat.analysis import Selection, compare
    from stabstat.ingest import ingest
    from stabstat.store import Store

    maj = {"majority": {"accuracy": 0.5}}
    write_run(tmp_path / "runs", "ok-1", config={"seed": 1, "arm": "a"}, task=maj, evals={20: {"accuracy": 0.8}})
    write_run(tmp_path / "runs", "ok-2", config={"seed": 2, "arm": "a"}, task=maj, evals={20: {"accuracy": 0.7}})
    write_run(tmp_path / "runs", "div", config={"seed": 3, "arm": "a"}, task=maj,
              losses=[0.7, float("nan")], evals={1: {"accuracy": 0.6}})
    write_run(tmp_path / "runs", "b-1", config={"seed": 1, "arm": "b"}, task=maj, evals={20: {"accuracy": 0.5}})
    write_run(tmp_path / "runs", "b-2", config={"seed": 2, "arm": "b"}, task=maj, status="interrupted")
    with Store.open(tmp_path / "db.duckdb", read_only=False) as st:
        ingest(st, [tmp_path / "runs"])
        res = compare(st, "arm", settings=Settings_fast())
        a, b = res.groups
        assert (a["n_runs"], a["n_failed"]) == (3, 1)  # diverged counts as failed
        assert (b["n_runs"], b["n_failed"]) == (1, 1)  # at the majority: failed; interrupted left out
        assert res.settings["excluded"] == {"interrupted": 1}
        assert any("--include-incomplete" in w for w in res.warnings)
        inc = compare(st, "arm", selection=Selection(include_incomplete=True), settings=Settings_fast())
        assert inc.groups[1]["n_runs"] == 2


def Settings_fast():  # type: ignore[no-untyped-def]  # noqa: N802
    from stabstat.analysis import Settings

    return Settings(resamples=300)


def test_compare_stratified(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import compare
    from stabstat.errors import SelectionError

    res = compare(store, "bias_correction", settings=fast(), stratify="n_train")
    g = res.groups[0]
    assert g["n_strata"] == 4
    assert g["mean_stratified"] == pytest.approx(g["mean"])
    assert g["mean_stratified_ci_low"] <= g["mean"] <= g["mean_stratified_ci_high"]
    # Within-stratum resampling removes the between-n_train spread: a narrower interval here.
    assert g["mean_stratified_ci_high"] - g["mean_stratified_ci_low"] < g["ci_high"] - g["ci_low"]
    assert res.settings["stratify"] == "n_train"
    with pytest.raises(SelectionError, match="unknown factor"):
        compare(store, "bias_correction", settings=fast(), stratify="nope")


def test_failure_rule_text_forms() -> None:
    from stabstat.analysis import Selection, failure_rule_text

    # The short form is settings["failure_rule"]; the sentence is the report's methods text.
    assert failure_rule_text(Selection(), "accuracy", True) == (
        "accuracy at or below the run's majority-class baseline, or diverged, or no value")
    assert failure_rule_text(Selection(baseline=0.5), "f1", True) == (
        "f1 at or below 0.5 (--baseline), or diverged, or no value")
    assert failure_rule_text(Selection(fail_below=0.25), "mse", False) == (
        "mse above 0.25 (--fail-below), or diverged, or no value")
    assert failure_rule_text(Selection(), "accuracy", True, sentence=True) == (
        "its accuracy is at or below the majority-class baseline of its task, when its training "
        "diverged, or when it has no accuracy value")
    assert failure_rule_text(Selection(fail_below=0.25), "mse", False, sentence=True) == (
        "its mse is above 0.25, when its training diverged, or when it has no mse value")


def test_result_rows_are_typed_and_read_like_their_json(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import compare
    from stabstat.analysis.results import CompareGroup, MeanDifference

    res = compare(store, "bias_correction", settings=fast())
    d = res.to_dict()
    g = res.groups[0]
    assert isinstance(g, CompareGroup) and g.level is False
    assert dict(g) == g.to_dict() == d["groups"][0]
    assert (g["n_runs"], g["n_failed"], g["ci_low"]) == (g.n_runs, g.failures.n_failed, g.mean.ci_low)
    md = next(t for t in res.tests if isinstance(t, MeanDifference))
    assert md["p_adjusted"] == md.p_adjusted and md.correction == "holm"
    assert [t.to_dict() for t in res.tests] == d["tests"]


def test_factor_names_resolve_case_insensitively(store) -> None:  # type: ignore[no-untyped-def]
    from stabstat.analysis import gradients, resolve_factor, variance

    assert resolve_factor(store, "BIAS_CORRECTION") == "bias_correction"
    var = variance(store, by="Bias_Correction", bins=2, settings=fast())
    assert var.by == ("bias_correction",) and [g["bias_correction"] for g in var.groups] == [False, True]
    grad = gradients(store, by="N_TRAIN", settings=fast())
    assert grad.by == ("n_train",) and all("n_train" in g for g in grad.groups)
