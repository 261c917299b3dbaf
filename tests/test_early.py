"""stabstat early: features agree with the runner's rule format, held-out scoring on a generated
set and on the recorded runs (no successful run flagged at the chosen K, the reported saving equal
to a direct count), the printed rule flags the same runs through schemas.stop_rule, the bootstrap
interval's coverage by simulation, and the CLI / chart / report figure wiring."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from schemas import stop_rule
from stabstat.analysis import Settings
from stabstat.analysis.early import FEATURES, EarlyResult, _bootstrap, early, early_features
from stabstat.cli import cli
from stabstat.errors import SelectionError
from stabstat.ingest import ingest
from stabstat.store import Store

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "examples" / "recorded" / "runs"
MAJORITY = 0.6
TOTAL = 60
TASK = {"name": "gen", "num_labels": 2, "n_train": 500, "n_dev": 200, "metrics": ["accuracy"],
        "majority": {"accuracy": MAJORITY}, "higher_is_better": {"accuracy": True}}


def _series(rng: np.random.Generator, failed: bool, total: int) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """Losses (total,), lowest-layer norms (total,) and dev accuracy by eval step of one run."""
    s = np.arange(1, total + 1)
    if failed:  # stuck at the class-balance loss, lower layers' gradients collapse
        loss = 0.673 + rng.normal(0, 0.02, total)
        low = np.exp(-s / 8.0) * rng.uniform(0.5, 1.5) + 1e-3
        dev = dict.fromkeys((20, 40, 60), MAJORITY)
    else:  # learns at its own pace; some slowly
        rate = rng.uniform(15, 60)
        loss = 0.7 * np.exp(-s / rate) + 0.1 + rng.normal(0, 0.02, total)
        low = rng.uniform(0.5, 1.5) * (1 + 0.1 * rng.normal(size=total)) ** 2
        dev = {k: min(0.95, MAJORITY + 0.3 * (1 - math.exp(-k / rate))) for k in (20, 40, 60)}
    return loss, low, dev


def _write_generated(out: Path, n_configs: int = 3, seeds: int = 10) -> dict[str, bool]:
    """Write runs with the real writer; run_id -> failed (by design)."""
    from runner.logwriter import RunLogger

    truth = {}
    for c in range(n_configs):
        for seed in range(seeds):
            rng = np.random.default_rng([c, seed])
            failed = bool(rng.random() < 0.35)
            run_id = f"gen-c{c}-s{seed}"
            loss, low, dev = _series(rng, failed, TOTAL)
            cfg = {"task": "gen", "seed": seed, "lr": [1e-4, 5e-5, 2e-5][c], "max_steps": TOTAL}
            with RunLogger(out, run_id, cfg, task=TASK) as log:
                log.log_eval(0, "dev", {"accuracy": MAJORITY})
                for step in range(1, TOTAL + 1):
                    log.log_step(step, loss=float(loss[step - 1]), lr=1e-4, grad_norm=1.0)
                    log.log_layer_grads(step, ["embeddings", "encoder.layer.0"], [0, 1],
                                        [float(low[step - 1]), 1.0])
                    if step in dev:
                        log.log_eval(step, "dev", {"accuracy": dev[step]})
            truth[run_id] = failed
    return truth


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bool]]:
    pytest.importorskip("pyarrow")
    tmp = tmp_path_factory.mktemp("early")
    truth = _write_generated(tmp / "runs")
    db = tmp / "gen.duckdb"
    with Store.open(db, read_only=False) as store:
        ingest(store, [tmp / "runs"])
    return tmp / "runs", db, truth


def _direct_saving(res: EarlyResult, method: str, k: int) -> tuple[float, int]:
    runs = res.runs.filter((res.runs["method"] == method) & (res.runs["step"] == k))
    flagged = runs["flagged"].to_numpy()
    total = runs["total_steps"].to_numpy().astype(float)
    return float(np.sum(np.where(flagged, total - k, 0)) / total.sum()), int((flagged & ~runs["failed"].to_numpy()).sum())


def _check_every_k(res: EarlyResult, target: float) -> None:
    for r in res.rows:
        saving, false_flags = _direct_saving(res, r.method, r.step)
        assert r.saving.estimate == pytest.approx(saving)
        assert r.flagged_successful == false_flags
        if r.flagged:
            tp = r.flagged - r.flagged_successful
            assert r.precision.estimate == pytest.approx(tp / r.flagged)
            assert r.recall.estimate == pytest.approx(tp / r.n_failed)
            assert r.precision.ci_low <= r.precision.estimate <= r.precision.ci_high
    for method, k in res.chosen.items():
        rows = sorted((r for r in res.rows if r.method == method and r.flagged), key=lambda r: r.step)
        if k is None:  # no K qualifies: at every K some later K (or itself) misses the target
            assert all(any(later.precision.estimate < target for later in rows[i:]) for i in range(len(rows)))
        else:
            assert all(r.precision.estimate >= target for r in rows if r.step >= k)
            assert all(any(later.precision.estimate < target for later in rows[i:])
                       for i in range(len(rows)) if rows[i].step < k)


# ----------------------------------------------------------------------------- features


def test_features_agree_with_the_runner_rule_format() -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 15))
        losses = rng.uniform(0.1, 1.0, n)
        if trial % 7 == 0:
            losses[rng.integers(n)] = np.nan
        grads = rng.uniform(0.0, 2.0, n) if trial % 3 else None
        dev = float(rng.normal()) if trial % 2 else math.nan
        h = stop_rule.majority_loss(0.6, 2)
        ours = early_features(losses, grads, dev, h if trial % 5 else math.nan)
        ref = stop_rule.features(list(losses), lower_grads=None if grads is None else list(grads),
                                 dev_minus_majority=None if math.isnan(dev) else dev,
                                 majority_loss_nats=h if trial % 5 else None)
        for name, _ in FEATURES:
            a, b = ours[name], ref[name]
            if b is None:
                assert math.isnan(a), (trial, name)
            else:
                assert a == pytest.approx(b, rel=1e-12), (trial, name)
    assert [n for n, _ in FEATURES] == list(stop_rule.FEATURES) and stop_rule.WINDOW == 5


# ----------------------------------------------------------------------------- held out


def test_generated_set_held_out_never_flags_a_successful_run_at_the_chosen_k(generated: Any) -> None:
    _, db, truth = generated
    target = 0.95
    with Store.open(db) as store:
        res = early(store, settings=Settings(resamples=500), target=target, folds="config")
    assert res.settings["folds"] == "leave-one-configuration-out (3 configurations)"
    assert res.rows[0].n_runs == len(truth) and res.rows[0].n_failed == sum(truth.values())
    _check_every_k(res, target)
    for method in ("threshold", "logit"):
        k = res.chosen[method]
        assert k is not None, method  # the generated failures are visible early
        row = res.row(method, k)
        assert row.flagged_successful == 0 and row.precision.estimate >= target and row.recall.estimate > 0.5
        assert 0 < row.saving.estimate < 1
    # the rule printed at the chosen K, applied by the runner's parser to the raw per-step logs,
    # flags exactly the runs the analysis fitted it to flag (all of them: fitted on every run)
    r = res.row("threshold", res.chosen["threshold"])
    assert r.rule is not None
    rule = stop_rule.parse(r.rule)
    assert rule.at == r.step
    import polars as pl

    with Store.open(db) as store:
        steps = store.query("SELECT run_id, step, loss FROM steps ORDER BY run_id, step")
        grads = store.query("SELECT run_id, step, grad_norm FROM layer_grads WHERE depth = 0 ORDER BY run_id, step")
        devs = store.query("SELECT run_id, step, value FROM evals WHERE step > 0 ORDER BY run_id, step")
    h = stop_rule.majority_loss(MAJORITY, 2)
    flagged_by_runner = set()
    for rid in truth:
        ls = steps.filter((pl.col("run_id") == rid) & (pl.col("step") <= rule.at))["loss"].to_list()
        gs = grads.filter((pl.col("run_id") == rid) & (pl.col("step") <= rule.at))["grad_norm"].to_list()
        dv = devs.filter((pl.col("run_id") == rid) & (pl.col("step") <= rule.at))["value"].to_list()
        feats = stop_rule.features(ls, lower_grads=gs, dev_minus_majority=(dv[-1] - MAJORITY) if dv else None,
                                   majority_loss_nats=h)
        if rule.doomed(feats):
            flagged_by_runner.add(rid)
    assert flagged_by_runner and all(truth[rid] for rid in flagged_by_runner)


def test_held_out_means_held_out(generated: Any, tmp_path: Path) -> None:
    """Every failure in one configuration: leaving it out leaves no failure to learn from, so none
    of its runs is flagged, although a threshold fitted on all runs (the printed rule) flags them."""
    runs, _, truth = generated
    keep = [r for r in truth if r.startswith("gen-c0-") or not truth[r]]
    assert any(truth[r] for r in keep)
    for rid in keep:
        shutil.copytree(runs / rid, tmp_path / "runs" / rid)
    with Store.open(tmp_path / "s.duckdb", read_only=False) as store:
        ingest(store, [tmp_path / "runs"])
        res = early(store, settings=Settings(resamples=200), folds="config", steps=[20, 30])
    c0 = res.runs.filter(res.runs["run_id"].str.starts_with("gen-c0-"))
    assert c0.height and not c0["flagged"].any()
    assert all(r.recall.estimate == 0 for r in res.rows)
    assert any(r.rule is not None for r in res.rows if r.method == "threshold")


def test_recorded_runs_saving_and_choice(tmp_path: Path) -> None:
    with Store.open(tmp_path / "rec.duckdb", read_only=False) as store:
        ingest(store, [RECORDED])
        res = early(store, settings=Settings(resamples=500))
    _check_every_k(res, 0.95)
    for method, k in res.chosen.items():
        if k is not None:  # at the target precision with < 20 flags: no successful run flagged
            row = res.row(method, k)
            assert row.precision.estimate >= 0.95
            assert row.flagged >= 20 or row.flagged_successful == 0


def test_too_few_runs_is_a_one_line_error(tmp_path: Path) -> None:
    from runner.logwriter import RunLogger

    for seed in range(3):
        with RunLogger(tmp_path / "runs", f"r{seed}", {"seed": seed}, task=TASK) as log:
            log.log_step(1, loss=0.5)
            log.log_eval(1, "dev", {"accuracy": 0.9})
    with Store.open(tmp_path / "s.duckdb", read_only=False) as store:
        ingest(store, [tmp_path / "runs"])
        with pytest.raises(SelectionError, match="needs failed and successful runs"):
            early(store)


# ----------------------------------------------------------------------------- interval


def test_bootstrap_interval_coverage_by_simulation() -> None:
    """Percentile intervals of recall and precision over runs cover the population value in
    about 95% of repeated samples (n = 80 runs; 300 samples; >= 0.88 allows Monte-Carlo error
    and the percentile method's known small-sample shortfall)."""
    rng = np.random.default_rng(11)
    p_fail, p_flag_fail, p_flag_ok = 0.3, 0.7, 0.05
    true_recall = p_flag_fail
    true_precision = p_fail * p_flag_fail / (p_fail * p_flag_fail + (1 - p_fail) * p_flag_ok)
    hits = np.zeros(2)
    reps = 300
    for _ in range(reps):
        y = rng.random(80) < p_fail
        flagged = np.where(y, rng.random(80) < p_flag_fail, rng.random(80) < p_flag_ok)
        total = np.full(80, 100.0)
        p, r, _ = _bootstrap(flagged, y, np.where(flagged, 50.0, 0.0), total, 500, 0.95, rng)
        hits += [p.ci_low <= true_precision <= p.ci_high, r.ci_low <= true_recall <= r.ci_high]
    cover = hits / reps
    assert (cover >= 0.88).all() and (cover <= 0.995).all(), cover


# ----------------------------------------------------------------------------- CLI, chart, report


def test_cli_table_json_and_rule(generated: Any, tmp_path: Path) -> None:
    _, db, _ = generated
    res = CliRunner().invoke(cli, ["early", "--db", str(db), "--resamples", "300", "--folds", "config",
                                   "--chart", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "precision [95%]" in res.output and "compute saved [95%]" in res.output
    line = next(ln for ln in res.output.splitlines() if "--stop-doomed" in ln)
    rule = line.split("--stop-doomed ", 1)[1].strip().strip('"')
    stop_rule.parse(rule)  # what is printed is what the runner reads
    spec = json.loads((tmp_path / "e.json").read_text())
    assert "facet" in spec
    js = CliRunner().invoke(cli, ["early", "--db", str(db), "--resamples", "300", "--format", "json",
                                  "--method", "threshold", "--steps", "10,20"])
    assert js.exit_code == 0, js.output
    d = json.loads(js.output)
    assert [r["step"] for r in d["rows"]] == [10, 20] and set(d["chosen"]) == {"threshold"}
    bad = CliRunner().invoke(cli, ["early", "--db", str(db), "--steps", "ten"])
    assert bad.exit_code != 0 and "--steps 'ten'" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(cli, ["early", "--db", str(db), "--folds", "1"])
    assert bad.exit_code != 0 and "--folds '1'" in bad.output
    helptext = CliRunner().invoke(cli, ["early", "--help"]).output
    assert "Example:" in helptext and "stabstat early --steps" in helptext


def test_report_figure_only_when_asked_or_stopped_runs(generated: Any, tmp_path: Path) -> None:
    from stabstat.report import build_report

    _, db, _ = generated
    with Store.open(db) as store:
        full = build_report(store, settings=Settings(resamples=200))
        only = build_report(store, settings=Settings(resamples=200), only=["early"])
    assert "early" not in [f.id for f in full.figures]  # no stopped runs: the page is unchanged
    assert [f.id for f in only.figures] == ["early"]
    out = tmp_path / "early.svg"
    res = CliRunner().invoke(cli, ["chart", "early", "--db", str(db), "--out", str(out), "--resamples", "200"])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<svg")
