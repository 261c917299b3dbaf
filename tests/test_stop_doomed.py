"""stabstat-run --stop-doomed: the rule format (schemas.stop_rule), stopped runs on a tiny-model
sweep (status, run.json record, valid logs, resume does not restart them, compute saved), the
logger's contract for the new status, and the analysis counting stopped runs as failed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from schemas import DONE_STATUSES, stop_rule

# ----------------------------------------------------------------------------- rule format (no torch)


def test_rule_round_trips_and_default_parses() -> None:
    r = stop_rule.parse("at=40 loss_ratio>=0.9 lower_grad_ratio<=0.05")
    assert r.at == 40 and r.terms == (("loss_ratio", ">=", 0.9), ("lower_grad_ratio", "<=", 0.05))
    assert stop_rule.parse(r.text()) == r
    d = stop_rule.parse("default")
    assert d == stop_rule.parse(stop_rule.DEFAULT_RULE) and d.at_fraction == pytest.approx(0.3)
    assert d.check_step(200) == 60 and d.check_step(1) == 1
    assert stop_rule.parse("at=500 loss_ratio>=1").check_step(100) == 100


RECORDED = Path(__file__).resolve().parents[1] / "examples" / "recorded" / "runs"


@pytest.mark.skipif(not RECORDED.is_dir(), reason="examples/recorded/runs/ is not in this checkout")
def test_default_rule_replayed_on_the_recorded_runs_stops_no_successful_run() -> None:
    """The runner's own DoomWatch, fed each recorded run's logged steps in order (loss and
    layer norms by depth, dev evaluations), with ``--stop-doomed default``: no run that ended
    above the majority baseline would have been stopped, and most collapsed runs would."""
    import polars as pl

    from runner.stop_doomed import DoomWatch

    rule = stop_rule.parse("default")
    stopped_ok, stopped_failed, n_failed = [], [], 0
    for run in sorted(p for p in RECORDED.iterdir() if (p / "run.json").is_file()):
        meta = json.loads((run / "run.json").read_text())
        total = int(meta["config"]["max_steps"])
        steps = pl.read_parquet(run / "steps.parquet").sort("step")
        grads = pl.read_parquet(run / "layer_grads.parquet").sort("step", "depth")
        evals = pl.read_parquet(run / "evals.parquet").filter((pl.col("split") == "dev")
                                                              & (pl.col("metric") == "accuracy")).sort("step")
        norms = {s: g["grad_norm"].to_list() for (s,), g in grads.group_by("step")}
        dev = dict(zip(evals["step"].to_list(), evals["value"].to_list(), strict=True))
        watch = DoomWatch(rule, meta["task"], total)
        reason = None
        for step, loss in zip(steps["step"].to_list(), steps["loss"].to_list(), strict=True):
            watch.step(step, loss, norms.get(step, []))
            if step in dev:
                watch.evaluated(step, {"accuracy": dev[step]})
            reason = reason or watch.verdict(step)
        failed = evals["value"][-1] <= meta["task"]["majority"]["accuracy"] + 1e-9
        n_failed += failed
        if reason is not None:
            (stopped_failed if failed else stopped_ok).append(run.name)
    assert n_failed >= 5, "the recorded runs should hold collapsed runs"
    assert stopped_ok == []
    assert len(stopped_failed) >= n_failed // 2


@pytest.mark.parametrize(("text", "match"), [
    ("loss_ratio>=0.9", "no check step"),
    ("at=0 loss_ratio>=0.9", "bad 'at=0'"),
    ("at=10", "no thresholds"),
    ("at=10 accuracy>=0.5", "bad term 'accuracy>=0.5'"),
    ("at=10 loss_ratio>0.5", "bad term"),
])
def test_bad_rules_are_one_line_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stop_rule.parse(text)


def test_rule_needs_every_term_and_never_fires_on_missing_evidence() -> None:
    r = stop_rule.parse("at=10 loss_ratio>=0.9 dev_vs_majority<=0")
    assert r.doomed({"loss_ratio": 0.95, "dev_vs_majority": 0.0})
    assert not r.doomed({"loss_ratio": 0.85, "dev_vs_majority": -0.1})
    assert not r.doomed({"loss_ratio": 0.95, "dev_vs_majority": None})
    assert not r.doomed({"loss_ratio": math.nan, "dev_vs_majority": -1.0})


def test_features_against_a_hand_computation() -> None:
    losses = [0.70, 0.69, 0.71, 0.70, 0.70, 0.6, 0.5, 0.4, 0.35, 0.30]
    grads = [1.0, 2.0, 3.0, 4.0, 5.0, 1, 1, 1, 1, 0.3]
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert stop_rule.majority_loss(0.6, 2) == pytest.approx(h)
    # three classes, majority 0.5: the rest 0.25 each
    assert stop_rule.majority_loss(0.5, 3) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    f = stop_rule.features(losses, lower_grads=grads, dev_minus_majority=0.05, majority_loss_nats=h, window=5)
    assert f["loss_ratio"] == pytest.approx((0.6 + 0.5 + 0.4 + 0.35 + 0.3) / 5 / 0.70)
    assert f["loss_vs_majority"] == pytest.approx(0.43 / h)
    assert f["lower_grad_ratio"] == pytest.approx(0.3 / 3.0)  # last / median of the first five
    assert f["dev_vs_majority"] == 0.05
    assert stop_rule.features([0.7], majority_loss_nats=None)["loss_vs_majority"] is None


def test_stopped_is_final_and_done() -> None:
    import schemas

    assert "stopped" in schemas.load().final_statuses and "stopped" in DONE_STATUSES


# ----------------------------------------------------------------------------- logger contract


def test_logger_writes_a_valid_stopped_run(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from runner.logwriter import RunLogger
    from stabstat.validate import validate_run

    with RunLogger(tmp_path, "r1", {"seed": 0, "max_steps": 10}) as log:
        for s in (1, 2, 3):
            log.log_step(s, loss=0.7, lr=1e-4, grad_norm=1.0)
        log.mark_stopped(3, 10, "loss_ratio=1>=0.9", "at=3 loss_ratio>=0.9")
    rj = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert rj["status"] == "stopped"
    assert rj["stopped"] == {"step": 3, "total_steps": 10, "reason": "loss_ratio=1>=0.9", "rule": "at=3 loss_ratio>=0.9"}
    assert validate_run(tmp_path / "r1") == []
    # a stopped run.json without its record is refused with the key named
    rj.pop("stopped")
    (tmp_path / "r1" / "run.json").write_text(json.dumps(rj))
    problems = validate_run(tmp_path / "r1")
    assert any("stopped" in str(p) and "mark_stopped" in str(p) for p in problems), problems
    with RunLogger(tmp_path, "r2", {"seed": 0}) as log2, pytest.raises(ValueError, match="mark_stopped"):
        log2.finish("stopped")


# ----------------------------------------------------------------------------- tiny-model sweep

SWEEP = """
seeds = [0, 1]

[config]
task = "synthetic"
model = "tiny"
max_length = 32
n_train = 64
max_steps = 12
eval_every = 4
batch_size = 16

[grid]
lr = [1e-4]
"""


def _invoke(*args: Any) -> Any:
    from click.testing import CliRunner

    from runner.cli import run_cmd

    return CliRunner().invoke(run_cmd, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_stop_doomed_sweep_resume_and_analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from runner import sweep
    from runner.stop_doomed import ENV
    from stabstat.analysis import select_runs
    from stabstat.ingest import ingest
    from stabstat.store import Store
    from stabstat.validate import validate_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # "" reads as unset and makes monkeypatch remove what the CLI sets in os.environ (for its
    # worker processes) at teardown, so later tests in this process train without the rule
    monkeypatch.setenv(ENV, "")
    f = tmp_path / "sweep.toml"
    f.write_text(SWEEP)
    out = tmp_path / "runs"
    bad = _invoke(f, "--out", out, "--stop-doomed", "at=5 accuracy>=1")
    assert bad.exit_code == 2 and "--stop-doomed" in bad.output and "bad term" in bad.output
    # loss_ratio >= 0 holds for every run that has a loss: both seeds are stopped at step 5
    res = _invoke(f, "--out", out, "--threads", 1, "--progress", "plain", "--stop-doomed", "at=5 loss_ratio>=0")
    assert res.exit_code == 0, res.output
    assert "done: 2 stopped" in res.output
    assert "14 of 24 planned optimiser steps not trained (58.3% of the sweep's compute saved)" in res.output
    planned = sweep.plan(f)
    stopped_at: dict[str, str] = {}
    for p in planned:
        d = out / p.run_id
        assert validate_run(d) == [], p.run_id
        rj = json.loads((d / "run.json").read_text())
        assert rj["status"] == "stopped"
        assert rj["stopped"]["step"] == 5 and rj["stopped"]["total_steps"] == 12
        assert rj["stopped"]["rule"] == "at=5 loss_ratio>=0" and rj["stopped"]["reason"].startswith("loss_ratio=")
        assert rj["tables"]["steps"] == 5
        stopped_at[p.run_id] = rj["started_at"]
    from click.testing import CliRunner

    from stabstat.cli import cli

    val = CliRunner().invoke(cli, ["validate", str(out)])
    assert val.exit_code == 0, val.output
    assert "2 stopped" in val.output
    # resume with more seeds and no rule: the stopped runs are done, seeds 2-3 train to the end
    # "" reads as unset and makes monkeypatch remove what the CLI sets in os.environ (for its
    # worker processes) at teardown, so later tests in this process train without the rule
    monkeypatch.setenv(ENV, "")
    again = _invoke(f, "--out", out, "--threads", 1, "--progress", "plain", "--seeds", "0-3")
    assert again.exit_code == 0, again.output
    assert "2 already done, 2 to run" in again.output and "done: 2 completed" in again.output
    for p in planned:
        assert json.loads((out / p.run_id / "run.json").read_text())["started_at"] == stopped_at[p.run_id]
    db = tmp_path / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        ingest(store, [out])
        rs = select_runs(store, ["seed"])
    frame = rs.frame.sort("seed")
    assert frame["status"].to_list() == ["stopped", "stopped", "completed", "completed"]
    assert frame["failed"].to_list()[:2] == [True, True]
    assert any("2 run(s) stopped early" in w and "counted as failed" in w for w in rs.warnings)


@pytest.mark.slow
def test_hf_callback_stops_a_doomed_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from runner.hf_callback import StabstatCallback
    from stabstat.errors import ConfigError
    from stabstat.validate import validate_run
    from tests.test_hf_callback import _train

    with pytest.raises(ConfigError, match="stop_doomed"):
        StabstatCallback(tmp_path / "runs", stop_doomed="at=2")
    task = {"name": "toy", "num_labels": 2, "metrics": ["loss"], "majority": {"accuracy": 0.5}}
    cb = StabstatCallback(tmp_path / "runs", config={"task": "toy"}, task=task, stop_doomed="at=2 loss_ratio>=0")
    trainer, _ = _train(tmp_path, "stop", [cb])
    d = tmp_path / "runs" / cb.run_id
    rj = json.loads((d / "run.json").read_text())
    assert rj["status"] == "stopped" and rj["stopped"]["step"] == 2 and rj["stopped"]["total_steps"] == 6
    assert trainer.state.global_step == 2  # the Trainer stopped right after the check step
    assert validate_run(d) == []
    # a rule that never holds leaves the run alone
    cb2 = StabstatCallback(tmp_path / "runs2", config={"task": "toy"}, task=task, stop_doomed="at=2 loss_ratio<=-1")
    _train(tmp_path, "go", [cb2])
    assert json.loads((tmp_path / "runs2" / cb2.run_id / "run.json").read_text())["status"] == "completed"
