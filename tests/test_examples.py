"""The files under ``examples/`` stay usable: every sweep plans, every claims file parses and
selects real levels of runs shaped like the ones its sweeps produce, and the API example runs.

No training: the runs are written with the project's own writer (``conftest.write_run``) from
the planned configs of the sweeps, with made-up dev scores.
"""

from __future__ import annotations

import runpy
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import find_glue_dir, write_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MOSBACH = EXAMPLES / "mosbach2021"

#: What the runner records for each GLUE task: metrics and majority-class dev scores.
TASKS: dict[str, dict[str, Any]] = {
    "rte": {"metrics": ["accuracy"], "majority": {"accuracy": 0.527}},
    "mrpc": {"metrics": ["accuracy", "f1", "acc_f1"], "majority": {"accuracy": 0.684, "f1": 0.812, "acc_f1": 0.748}},
    "cola": {"metrics": ["mcc"], "majority": {"mcc": 0.0}},
    "qnli": {"metrics": ["accuracy"], "majority": {"accuracy": 0.505}},
    "synthetic": {"metrics": ["accuracy"], "majority": {"accuracy": 0.6}},
}


def _files(*patterns: str) -> list[Path]:
    """Example files, leaving out run directories (recorded logs, sweep outputs)."""
    found = {p for pat in patterns for p in EXAMPLES.rglob(pat)}
    return sorted(p for p in found if not {"runs", "recorded"} & set(p.relative_to(EXAMPLES).parts))


def _is_claims(path: Path) -> bool:
    return "claims" in tomllib.loads(path.read_text("utf-8"))


SWEEPS = [p for p in _files("*.toml") if not _is_claims(p)] + _files("*.yaml", "*.yml")
CLAIMS = [p for p in _files("*.toml") if _is_claims(p)]
RECORDED = EXAMPLES / "recorded" / "runs"


def _id(p: Path) -> str:
    return str(p.relative_to(EXAMPLES))


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize("path", SWEEPS, ids=_id)
def test_every_example_sweep_plans(path: Path) -> None:
    from runner.launchers import read_launcher_table
    from runner.sweep import plan

    planned = plan(path)
    assert planned, f"{path}: plans no runs"
    assert len({p.run_id for p in planned}) == len(planned)
    read_launcher_table(path)  # the [launcher] table, when present, has only known keys


@pytest.mark.parametrize(
    ("name", "expected"),
    [("main.toml", 3 * 3 * 2 * 25), ("ablation_rte.toml", 3 * 3 * 2 * 25), ("downsample.toml", 3 * 3 * 25)],
)
def test_mosbach2021_sweep_sizes(name: str, expected: int) -> None:
    from runner.sweep import plan

    planned = plan(MOSBACH / name)
    assert len(planned) == expected
    assert {p.seed for p in planned} == set(range(25))


def test_mosbach2021_main_is_the_paper_design() -> None:
    from runner.sweep import plan

    planned = plan(MOSBACH / "main.toml", seeds=1)
    cells = {(p.config["model"], p.config["task"], p.config["recipe"]) for p in planned}
    assert cells == {(m, t, r) for m in ("bert-large-uncased", "roberta-large", "albert-large-v2")
                     for t in ("rte", "mrpc", "cola") for r in ("devlin2019", "mosbach2021")}
    for p in planned:
        c = p.config
        # The two recipes differ in bias correction and length only.
        assert (c["bias_correction"], c["epochs"]) == ((False, 3.0) if c["recipe"] == "devlin2019" else (True, 20.0))
        assert (c["lr"], c["warmup_ratio"], c["batch_size"], c["weight_decay"]) == (2e-5, 0.1, 16, 0.01)


def test_downsample_matched_steps_equal_three_full_epochs() -> None:
    """max_steps of the matched arm = 3 epochs of the full training set, as the runner counts
    steps (ceil(n / batch) per epoch); GLUE training-set sizes."""
    from runner.sweep import plan

    train_sizes = {"mrpc": 3668, "cola": 8551, "qnli": 104743}
    glue = find_glue_dir()[0]
    for task, folder in (("mrpc", "MRPC"), ("cola", "CoLA")):
        f = (glue or Path("/nonexistent")) / folder / "train.tsv"
        if f.is_file():  # check the constant against the data when it is here
            lines = f.read_text("utf-8").splitlines()
            assert len(lines) - (task != "cola") == train_sizes[task]
    planned = plan(MOSBACH / "downsample.toml", seeds=1)
    by_arm = {p.config["recipe"]: p.config for p in planned}
    for task, n in train_sizes.items():
        full, short, matched = by_arm[f"{task}-full-3ep"], by_arm[f"{task}-1k-3ep"], by_arm[f"{task}-1k-matched"]
        assert full["n_train"] is None and full["epochs"] == 3.0
        assert short["n_train"] == 1000 and short["epochs"] == 3.0 and short["max_steps"] is None
        assert matched["n_train"] == 1000 and matched["max_steps"] == 3 * -(-n // 16)
        assert (full["schedule"], short["schedule"], matched["schedule"]) == ("full-data", "3-epochs", "matched-steps")


# --------------------------------------------------------------------------- claims


@pytest.mark.parametrize("path", CLAIMS, ids=_id)
def test_every_example_claims_file_parses(path: Path) -> None:
    from stabstat.claims import load_claims

    _, claims = load_claims(path)
    assert claims


def _score(config: dict[str, Any], metric: str, failed: bool, rng: np.random.Generator) -> float:
    majority = TASKS[config["task"]]["majority"][metric]
    if failed:
        return majority
    return float(majority + 0.05 + 0.1 * rng.random()) if metric != "mcc" else float(0.4 + 0.2 * rng.random())


def _write_planned(out: Path, planned: list[Any], fails: Any) -> None:
    """One short run directory per planned run; ``fails(config)`` says whether it collapses."""
    for p in planned:
        cfg = dict(p.config)
        rng = np.random.default_rng([p.seed, len(p.run_id), sum(map(ord, p.run_id))])
        info = TASKS[cfg["task"]]
        failed = bool(fails(cfg))
        metrics = {m: _score(cfg, m, failed, rng) for m in info["metrics"]}
        task = {"name": cfg["task"], "metrics": info["metrics"], "majority": info["majority"],
                "higher_is_better": dict.fromkeys(info["metrics"], True)}
        write_run(out, p.run_id, config=cfg, losses=[0.69, 0.6 if not failed else 0.69], evals={2: metrics},
                  layers=None, task=task, seed=p.seed)


def _mosbach_fails(cfg: dict[str, Any]) -> bool:
    # Seed 0 collapses under the BERT recipe / without bias correction / with 3 epochs on 1k.
    if cfg["seed"] != 0:
        return False
    if cfg.get("study") == "main":
        return cfg["recipe"] == "devlin2019"
    if cfg.get("study") == "ablation":
        return not cfg["bias_correction"]
    return cfg.get("schedule") == "3-epochs"


@pytest.mark.slow
def test_mosbach2021_claims_select_runs_of_the_sweeps(tmp_path: Path) -> None:
    """Every claim of claims.toml names factors and levels that the three sweeps produce, and
    is evaluated (2 seeds per configuration: the verdicts themselves mean nothing here)."""
    from runner.sweep import plan
    from stabstat.analysis import Settings
    from stabstat.claims import check
    from stabstat.ingest import ingest
    from stabstat.store import Store

    planned = [p for name in ("main.toml", "ablation_rte.toml", "downsample.toml")
               for p in plan(MOSBACH / name, seeds=2)]
    _write_planned(tmp_path / "runs", planned, _mosbach_fails)
    db = tmp_path / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        report = ingest(store, [tmp_path / "runs"])
        assert report.ok and len(report.ingested) == len(planned), report.summary()
    with Store.open(db) as store:
        result = check(store, MOSBACH / "claims.toml", settings=Settings(resamples=200))
    assert len(result.claims) == 16
    for c in result.claims:
        assert c.verdict in ("PASS", "FAIL", "INCONCLUSIVE")
        assert c.n and all(v > 0 for v in c.n.values()), (c.name, c.n)
        assert np.isfinite(c.estimate) or c.kind == "failure_trend", (c.name, c.detail)
    # Spot checks that the selection is the intended one.
    by_name = {c.name: c for c in result.claims}
    rte = by_name["RTE: BERT's recipe fails more often than the paper's (3 models)"]
    assert rte.n == {"devlin2019": 6, "mosbach2021": 6}  # 3 models x 2 seeds per recipe
    assert "3/6 vs 0/6" in rte.detail
    std = by_name["CoLA, BERT-large: the SD of MCC over seeds is lower with the paper's recipe"]
    assert std.n == {"devlin2019": 2, "mosbach2021": 2}
    pooled = by_name["MRPC+QNLI, 1,000 examples: 3 epochs fail more often than matched steps"]
    assert pooled.n == {"3-epochs": 4, "matched-steps": 4}
    bc = by_name["RTE ablation: at 3 epochs, runs without bias correction fail more often"]
    assert bc.n == {"false": 6, "true": 6}  # 3 learning rates x 2 seeds at epochs = 3 (TOML spelling, issue 17)


DEMO_SWEEP = EXAMPLES / "demo" / "sweep.toml"


def _demo_planned(seeds: int) -> list[Any]:
    """The CPU demo's sweep (examples/demo/sweep.toml when present, else its design: one factor,
    bias correction on/off as two [[arms]], everything else equal) with ``seeds`` seeds."""
    from runner.sweep import plan

    if DEMO_SWEEP.is_file():
        return plan(DEMO_SWEEP, seeds=seeds)
    return plan({
        "seeds": seeds,
        "preset": "devlin2019",
        "config": {"model": "minilm", "task": "synthetic", "lr": 2e-4, "warmup_ratio": 0.0, "max_steps": 80,
                   "max_length": 24},
        "arms": [{"name": "adamw-no-bias-correction", "bias_correction": False},
                 {"name": "adamw-bias-correction", "bias_correction": True}],
    })


def _demo_fails(cfg: dict[str, Any]) -> bool:
    return not cfg["bias_correction"] and cfg["seed"] % 2 == 0


@pytest.fixture
def demo_runs(tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    _write_planned(out, _demo_planned(10), _demo_fails)
    return out


def test_demo_sweep_is_one_factor() -> None:
    """The demo compares bias correction on/off with everything else equal (issue 14): the two
    arms' configs differ in bias_correction (and the recipe label) only."""
    planned = _demo_planned(1)
    assert len(planned) == 2
    a, b = (dict(p.config) for p in planned)
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ == {"bias_correction", "recipe"}
    assert a["warmup_ratio"] == 0.0


@pytest.mark.slow
def test_demo_claims_on_demo_shaped_runs(demo_runs: Path, tmp_path: Path) -> None:
    """5/10 collapsed runs without bias correction against 0/10: every claim of the demo passes
    (Fisher p = 0.016 for the failure rate, Holm across the three claims) and none fails."""
    from stabstat.analysis import Settings
    from stabstat.claims import check
    from stabstat.ingest import ingest
    from stabstat.store import Store

    db = tmp_path / "demo.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [demo_runs]).ok
    with Store.open(db) as store:
        result = check(store, EXAMPLES / "demo" / "claims.toml", settings=Settings(resamples=500))
    verdicts = {c.name: c for c in result.claims}
    assert result.ok
    rate = verdicts["without bias correction, runs fail more often"]
    assert rate.n == {"false": 10, "true": 10}  # TOML spelling (issue 17)
    from scipy.stats import binomtest, hypergeom

    # Fisher's one-sided p: all 5 failures among the 10 runs without bias correction.
    assert rate.p_value == pytest.approx(hypergeom(20, 5, 10).sf(4), rel=1e-9)
    assert rate.verdict == "PASS"
    bound = verdicts["with bias correction, fewer than half of the runs fail"]
    assert bound.n == {"all": 10}
    assert bound.p_value == pytest.approx(binomtest(0, 10, 0.5, alternative="less").pvalue, rel=1e-9)
    assert [c.verdict for c in result.claims] == ["PASS"] * 3


def _repeat_rate() -> Any:
    return runpy.run_path(str(EXAMPLES / "demo" / "repeat_rate.py"), run_name="repeat_rate")


@pytest.mark.slow
def test_repeat_rate_verdicts_match_check(demo_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/demo/repeat_rate.py judges one sample as `stabstat check` does: the same
    p-values for the exact tests, the same verdicts, on the demo-shaped runs."""
    from stabstat.analysis import Settings
    from stabstat.claims import check
    from stabstat.ingest import ingest
    from stabstat.store import Store

    rr = _repeat_rate()
    db = tmp_path / "demo.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [demo_runs]).ok
    with Store.open(db) as store:
        result = check(store, EXAMPLES / "demo" / "claims.toml", settings=Settings(resamples=2000))
    claims = tomllib.loads((EXAMPLES / "demo" / "claims.toml").read_text())["claims"]
    arms = rr["load_arms"](db, "bias_correction")
    assert {k: int(a.failed.sum()) for k, a in arms.items()} == {"false": 5, "true": 0}
    for claim, res in zip(claims, result.claims, strict=True):
        p_for, _ = rr["claim_pvalues"](claim, arms, 2000, np.random.default_rng(1))
        if claim["kind"] in ("failure_rate", "max_failure_rate"):
            assert p_for == pytest.approx(res.p_value, rel=1e-9)
        else:  # a permutation p: another random stream, the same answer within Monte-Carlo error
            assert p_for == pytest.approx(res.p_value, abs=0.01)
    assert rr["verdicts"](claims, arms, 0.05, "holm", 2000, np.random.default_rng(1)) == \
        [c.verdict for c in result.claims]
    # The script as a user runs it.
    assert rr["main"](["--db", str(db), "--repeats", "40", "--resamples", "200", "--seeds", "6"]) == 0
    out = capsys.readouterr().out
    assert "bias_correction=false: 5/10 recorded runs failed" in out and "6 seeds per level, 40 simulated" in out
    assert out.count("% PASS") == len(claims)


def test_repeat_rate_exact_headline_against_simulation() -> None:
    """The exact P(PASS) of the headline (a sum over two binomials) against a direct simulation
    with scipy's Fisher test."""
    from scipy.stats import fisher_exact

    exact = _repeat_rate()["exact_headline"](0.5, 0.05, 8, 0.05)
    rng = np.random.default_rng(3)
    ka, kb = rng.binomial(8, 0.5, 4000), rng.binomial(8, 0.05, 4000)
    hits = [fisher_exact([[a, 8 - a], [b, 8 - b]], alternative="greater").pvalue < 0.05 for a, b in zip(ka, kb, strict=True)]
    assert exact == pytest.approx(np.mean(hits), abs=0.025)
    assert 0.2 < exact < 0.8


def test_repeat_rate_simulation_follows_the_failure_rates() -> None:
    """Every recorded run of one arm failed and none of the other: with the observed rates
    (plug-in) every repeat passes the headline; with the Jeffreys posterior of 4 runs each,
    fewer do (the few recorded runs leave the rates uncertain)."""
    rr = _repeat_rate()
    arm = rr["Arm"]
    arms = {"false": arm(np.ones(4, bool), np.full(4, 0.6)), "true": arm(np.zeros(4, bool), np.linspace(0.85, 0.95, 4))}
    claims = [{"kind": "failure_rate", "factor": "bias_correction", "higher": False, "lower": True}]
    plug = rr["simulate"](claims, arms, 8, 200, 0.05, "holm", np.random.default_rng(0), plug_in=True)
    post = rr["simulate"](claims, arms, 8, 400, 0.05, "holm", np.random.default_rng(0))
    assert (plug[:, 0] == "PASS").all()
    assert 0.5 < np.mean(post[:, 0] == "PASS") < 1.0


# --------------------------------------------------------------------------- API example


@pytest.mark.slow
def test_api_example_runs(demo_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("STABSTAT_EXAMPLE_RUNS", str(demo_runs))
    monkeypatch.setenv("STABSTAT_EXAMPLE_OUT", str(out))
    monkeypatch.setenv("STABSTAT_EXAMPLE_RESAMPLES", "300")
    monkeypatch.delenv("STABSTAT_EXAMPLE_BY", raising=False)
    monkeypatch.delenv("STABSTAT_EXAMPLE_CLAIMS", raising=False)
    ns = runpy.run_path(str(EXAMPLES / "api_example.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "20 ingested (20 new, 0 replaced), 0 unchanged, 0 rejected" in printed
    assert {p.name for p in out.iterdir()} >= {"api_example.duckdb", "metric_by_config.html",
                                               "metric_by_config.svg", "failure_rate.svg"}
    assert (out / "metric_by_config.svg").read_text("utf-8").lstrip().startswith("<svg")
    groups = ns["groups"].sort("bias_correction")
    assert groups["n_failed"].to_list() == [5, 0]
    assert ns["verdicts"].counts()["FAIL"] == 0
    # Ingesting again is a no-op (the example can be re-run).
    runpy.run_path(str(EXAMPLES / "api_example.py"), run_name="__main__")
    assert "0 ingested (0 new, 0 replaced), 20 unchanged" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not RECORDED.is_dir(), reason="examples/recorded/runs/ is not in this checkout")
def test_api_example_runs_on_the_recorded_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The example's defaults: the committed demo runs and the demo's claims file."""
    monkeypatch.delenv("STABSTAT_EXAMPLE_RUNS", raising=False)
    monkeypatch.delenv("STABSTAT_EXAMPLE_BY", raising=False)
    monkeypatch.delenv("STABSTAT_EXAMPLE_CLAIMS", raising=False)
    monkeypatch.setenv("STABSTAT_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("STABSTAT_EXAMPLE_RESAMPLES", "300")
    ns = runpy.run_path(str(EXAMPLES / "api_example.py"), run_name="__main__")
    assert ", 0 rejected" in capsys.readouterr().out
    assert ns["groups"]["bias_correction"].sort().to_list() == [False, True]
    assert (tmp_path / "out" / "metric_by_config.svg").is_file()
    assert len(ns["verdicts"].claims) == 3


def test_api_example_names_a_missing_runs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABSTAT_EXAMPLE_RUNS", str(tmp_path / "nope"))
    monkeypatch.setenv("STABSTAT_EXAMPLE_OUT", str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="nope: no such folder of run directories"):
        runpy.run_path(str(EXAMPLES / "api_example.py"), run_name="__main__")
