"""``stabstat decompose | plan | expected-max`` end to end: run directories written by the
project's writer (a crossed init_seed x order_seed design with known components), the recorded
demo runs, and (slow) a 5 x 5 init x order sweep of the tiny model trained by the runner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_run

from stabstat.cli import cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--resamples", "400", "--seed", "3"]
MAJORITY = 0.6


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _ingest(runs: Path, db: Path) -> str:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    with Store.open(db, read_only=False) as store:
        report = ingest(store, [runs])
        assert report.ok, report.summary()
    return str(db)


@pytest.fixture(scope="module")
def crossed_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """2 recipes x 6 init seeds x 6 order seeds, accuracy = 0.8 + a[init] + b[order] + e;
    in recipe ``b`` 8 runs fail (stay at the majority-class accuracy)."""
    tmp = tmp_path_factory.mktemp("crossed")
    rng = np.random.default_rng(15)
    for recipe in ("a", "b"):
        a, b = rng.normal(0, 0.03, 6), rng.normal(0, 0.015, 6)
        failed = set(rng.choice(36, 8, replace=False).tolist()) if recipe == "b" else set()
        for i in range(6):
            for j in range(6):
                acc = MAJORITY if i * 6 + j in failed else 0.8 + a[i] + b[j] + rng.normal(0, 0.01)
                write_run(tmp / "runs", f"syn-{recipe}-{i}-{j}", n_steps=4, layers=None,
                          config={"task": "synthetic", "recipe": recipe, "seed": 0, "init_seed": i,
                                  "order_seed": j, "batch_size": 16, "max_steps": 4},
                          task={"majority": {"accuracy": MAJORITY}, "metrics": ["accuracy"]},
                          evals={4: {"accuracy": float(acc)}})
    return _ingest(tmp / "runs", tmp / "crossed.duckdb")


@pytest.fixture(scope="module")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _ingest(ROOT / "examples" / "recorded" / "runs", tmp_path_factory.mktemp("rec") / "rec.duckdb")


def _values(db: str, recipe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from stabstat.store import Store

    with Store.open(db) as store:
        rows = store.con.execute(
            "SELECT r.init_seed, r.order_seed, s.final_value FROM runs r JOIN run_summary s USING (run_id) "
            "WHERE s.metric = 'accuracy' AND r.recipe = ? ORDER BY 1, 2", [recipe]).fetchall()
    i, j, y = (np.array(c) for c in zip(*rows, strict=True))
    return i, j, y.astype(float)


def _reml(y: np.ndarray, i: np.ndarray, j: np.ndarray) -> list[float]:
    import pandas as pd
    import statsmodels.api as sm

    df = pd.DataFrame({"y": y, "init": i, "order": j, "one": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.MixedLM.from_formula("y ~ 1", groups="one", re_formula="0",
                                      vc_formula={"init": "0 + C(init)", "order": "0 + C(order)"},
                                      data=df).fit(reml=True)
    vc = dict(zip(fit.model.exog_vc.names, fit.vcomp, strict=True))
    return [float(vc["init"]), float(vc["order"]), float(fit.scale)]


def test_decompose_matches_statsmodels_with_and_without_failed_runs(crossed_db: str) -> None:
    r = run("decompose", "--by", "recipe", "--db", crossed_db, "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["analysis"] == "decompose" and d["by"] == ["recipe"]
    groups = {(g["recipe"], g["runs"]): g for g in d["groups"]}
    assert groups[("a", "all")]["method"] == "anova" and groups[("a", "all")]["balanced"] is True
    assert groups[("a", "all")]["factors"] == ["init_seed", "order_seed"]  # seed is constant: left out
    assert groups[("b", "successful")]["method"] == "reml" and groups[("b", "successful")]["n_runs"] == 28
    comps = {(c["recipe"], c["runs"], c["component"]): c for c in d["components"]}
    i, j, y = _values(crossed_db, "a")
    ref = _reml(y, i, j)
    got = [comps[("a", "all", n)]["variance"] for n in ("init_seed", "order_seed", "residual")]
    assert got == pytest.approx(ref, rel=2e-3)
    i, j, y = _values(crossed_db, "b")
    ok = y > MAJORITY
    got = [comps[("b", "successful", n)]["variance"] for n in ("init_seed", "order_seed", "residual")]
    assert got == pytest.approx(_reml(y[ok], i[ok], j[ok]), rel=2e-3)
    for c in d["components"]:
        assert c["ci_low"] <= c["variance"] <= c["ci_high"] and 0 <= c["share"] <= 1
    assert any("failed runs dominate the variance" in w and "recipe=b" in w for w in d["warnings"])
    assert not any("recipe=a: failed" in w for w in d["warnings"])
    assert d["settings"]["resamples"] == 400 and d["settings"]["factors"][:2] == ["init_seed", "order_seed"]


def test_decompose_table_csv_and_determinism(crossed_db: str) -> None:
    r = run("decompose", "--by", "recipe", "--db", crossed_db, *FAST)
    assert r.exit_code == 0, r.output
    assert "components (share of the total variance)" in r.output and "order_seed" in r.output
    c = run("decompose", "--by", "recipe", "--db", crossed_db, "--format", "csv", *FAST)
    assert c.output.splitlines()[0].startswith("recipe,runs,n_runs,n_failed")
    j1 = run("decompose", "--db", crossed_db, "--filter", "recipe=a", "--format", "json", *FAST)
    j2 = run("decompose", "--db", crossed_db, "--filter", "recipe=a", "--format", "json", *FAST)
    assert j1.exit_code == 0 and j1.output == j2.output


def test_plan_and_expected_max_on_crossed_runs(crossed_db: str) -> None:
    r = run("plan", "--by", "recipe", "--delta", "0.02", "--width", "0.02", "--db", crossed_db,
            "--format", "json", "--n", "4,8,16,32", "--seed", "1")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["settings"]["resamples"] == 2000 and d["settings"]["candidate_n"] == [4, 8, 16, 32]
    targets = {(g["target"], g["a"]) for g in d["groups"]}
    assert {("mean", "a"), ("mean", "b"), ("width", "a"), ("failure_rate", "a")} <= targets
    assert {p["n"] for p in d["power"]} == {4, 8, 16, 32}
    r = run("plan", "--by", "recipe", "--rate-diff", "0.2", "--db", crossed_db, "--format", "json", "--n", "10,40")
    rates = [g for g in json.loads(r.output)["groups"] if g["target"] == "failure_rate"]
    # recipe a never fails: nothing to detect; b: 8/36 against 0.022 (exact Fisher power)
    assert [(g["a"], g["b"]) for g in rates] == [("a", None), ("b", None)]
    assert rates[0]["n_needed"] is None and "equal failure rates" in rates[0]["note"]
    import stabstat.stats as S

    power_b = S.fisher_power(8 / 36, 8 / 36 - 0.2, [10, 40])
    got = [p["power"] for p in json.loads(r.output)["power"] if p["target"] == "failure_rate" and p["a"] == "b"]
    assert got == pytest.approx(power_b.tolist())
    e = run("expected-max", "--by", "recipe", "--db", crossed_db, "--format", "json", *FAST)
    assert e.exit_code == 0, e.output
    d = json.loads(e.output)
    assert [g["n_runs"] for g in d["groups"]] == [36, 36]
    assert d["groups"][0]["cost_per_run"] == 4 * 16
    assert len([p for p in d["curve"] if p["recipe"] == "a"]) == 36
    assert d["budget"][0]["budget"] == 64 and d["budget"][0]["k"] == 1


def test_every_command_runs_on_the_recorded_demo(recorded_db: str) -> None:
    for args in (["decompose", "--by", "recipe"], ["plan", "--by", "recipe", "--width", "0.05"],
                 ["expected-max", "--by", "recipe"]):
        for fmt in ("table", "json", "csv"):
            r = run(*args, "--db", recorded_db, "--format", fmt, *FAST)
            assert r.exit_code == 0, (args, fmt, r.output)
    d = json.loads(run("plan", "--by", "recipe", "--db", recorded_db, "--format", "json", *FAST).output)
    rate = next(g for g in d["groups"] if g["target"] == "failure_rate")
    assert {rate["a"], rate["b"]} == {"adamw-bias-correction", "adamw-no-bias-correction"}
    assert rate["n_needed"] is not None
    d = json.loads(run("decompose", "--by", "recipe", "--db", recorded_db, "--format", "json", *FAST).output)
    # one run per seed: nothing to split, all of the variance is residual
    assert {c["component"] for c in d["components"]} == {"residual"}
    # pooled over both arms (all failed against none failed), the failed runs dominate
    d = json.loads(run("decompose", "--db", recorded_db, "--format", "json", *FAST).output)
    assert any("failed runs dominate" in w for w in d["warnings"])


@pytest.mark.parametrize(("args", "message"), [
    (["plan"], "nothing to plan: give --delta"),
    (["plan", "--delta", "0.1", "--n", "1"], "not a number of seeds >= 2"),
    (["decompose", "--filter", "recipe=b", "--method", "anova"], "--method anova: the design of the successful runs is not balanced"),
    (["decompose", "--factor", "nope"], "nope"),
    (["expected-max", "--by", "nope"], "nope"),
])
def test_bad_input_is_one_line(crossed_db: str, args: list[str], message: str) -> None:
    r = run(*args, "--db", crossed_db, *FAST)
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
    if "Error:" in r.output and "Usage" not in r.output:
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


def test_report_figures_and_charts(recorded_db: str) -> None:
    import polars as pl

    from stabstat import charts
    from stabstat.analysis import Settings
    from stabstat.report import build_report
    from stabstat.store import Store

    with Store.open(recorded_db) as store:
        rep = build_report(store, by="recipe", settings=Settings(resamples=300),
                           only=["expected-max", "power-curve"])
    assert [f.id for f in rep.figures] == ["expected-max", "power-curve"]
    spec = rep.figures[0].chart.to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert {r["config"] for r in rows} == {"adamw-bias-correction", "adamw-no-bias-correction"} and len(rows) == 20
    # the expected maximum of k = 10 of 10 runs is the best run's final dev accuracy
    with Store.open(recorded_db) as store:
        best = store.query("SELECT max(value) FROM evals e WHERE split = 'dev' AND metric = 'accuracy' "
                           "AND step = (SELECT max(step) FROM evals f WHERE f.run_id = e.run_id)").item()
    assert max(r["expected_max"] for r in rows) == pytest.approx(best, abs=1e-6)  # rounded in the chart data
    power = rep.figures[1].chart.to_dict()
    assert any(r.get("power") == 0.8 for d in power["datasets"].values() for r in d)  # the target rule
    with pytest.raises(Exception, match="lacks column"):
        charts.expected_max_curves(pl.DataFrame({"k": [1]}))
    log = charts.expected_max_curves(pl.DataFrame({"config": ["a", "a"], "k": [1, 2], "expected_max": [0.7, 0.8],
                                                   "ci_low": [0.6, 0.7], "ci_high": [0.8, 0.9]}), log_x=True)
    assert "log" in str(log.to_dict())


CLAIMS = """
[defaults]
filter = { recipe = "a" }
[[claims]]
name = "init seeds carry most of the variance"
kind = "variance_share"
component = "init_seed"
value = 0.3
direction = "above"
[[claims]]
name = "20 seeds detect 0.02"
kind = "seeds_needed"
value = 20
delta = 0.02
"""


def test_check_seeds_needed_and_variance_share_claims(crossed_db: str, tmp_path: Path) -> None:
    from scipy.stats import chi2
    from statsmodels.stats.power import NormalIndPower

    path = tmp_path / "claims.toml"
    path.write_text(CLAIMS)
    r = run("check", str(path), "--db", crossed_db, "--format", "json", "--resamples", "1000", "--seed", "3")
    assert r.exit_code in (0, 1), r.output
    share, seeds = json.loads(r.output)["tests"]
    # the share is decompose's, on the same runs
    d = json.loads(run("decompose", "--db", crossed_db, "--filter", "recipe=a", "--format", "json",
                       "--resamples", "1000").output)
    dec = next(c for c in d["components"] if c["component"] == "init_seed" and c["runs"] == "all")
    assert share["estimate"] == pytest.approx(dec["share"])
    assert share["ci_low"] <= share["estimate"] <= share["ci_high"]
    assert share["verdict"] in ("PASS", "INCONCLUSIVE") and share["p_value"] < 0.5
    # seeds: the analytic n at the runs' SD, and the chi-square test of that SD
    _, _, y = _values(crossed_db, "a")
    sd = float(y.std(ddof=1))
    need = NormalIndPower().solve_power(0.02 / sd, None, 0.05, 0.8, ratio=1)
    assert seeds["estimate"] == max(2, int(np.ceil(need)))
    assert seeds["ci_low"] <= seeds["estimate"] <= seeds["ci_high"]
    df = y.size - 1
    d_min = NormalIndPower().solve_power(None, 20, 0.05, 0.8, ratio=1)  # smallest effect size 20 seeds detect
    sd_max = 0.02 / d_min  # the largest SD for which 20 seeds are enough
    assert seeds["p_value"] == pytest.approx(chi2.cdf(df * sd**2 / sd_max**2, df), rel=1e-4)
    assert seeds["verdict"] == ("FAIL" if need > 20 else "PASS")
    bad = tmp_path / "bad.toml"
    bad.write_text(CLAIMS.replace('direction = "above"', 'direction = "up"'))
    r = run("check", str(bad), "--db", crossed_db)
    assert r.exit_code == 2 and "direction must be 'above' or 'below'" in r.output


def test_help_has_examples() -> None:
    for cmd in ("decompose", "plan", "expected-max"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Example:" in r.output and "stabstat " + cmd in r.output


@pytest.mark.slow
def test_a_trained_5x5_init_x_order_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from runner import sweep, train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    # lr = 0: the weights never move, so the dev loss is the initial weights' alone -- init_seed
    # must carry all of its variance and order_seed none (the streams are separate end to end).
    planned = sweep.plan({"seeds": 1, "config": {"task": "synthetic", "model": "tiny", "max_length": 24,
                                                  "n_train": 48, "max_steps": 2, "eval_every": 100,
                                                  "batch_size": 16, "log_predictions": False, "lr": 0.0},
                          "grid": {"init_seed": [0, 1, 2, 3, 4], "order_seed": [0, 1, 2, 3, 4]}})
    for p in planned:
        assert train.run_planned(p, tmp_path / "runs", threads=1) == "completed"
    db = _ingest(tmp_path / "runs", tmp_path / "sweep.duckdb")
    r = run("decompose", "--db", db, "--metric", "loss", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["groups"][0]["method"] == "anova" and d["groups"][0]["factors"] == ["init_seed", "order_seed"]
    assert [c["component"] for c in d["components"][:3]] == ["init_seed", "order_seed", "residual"]
    shares = [c["share"] for c in d["components"][:3]]
    assert shares == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    for args in (["plan", "--delta", "0.01", "--metric", "loss"], ["expected-max", "--metric", "loss"]):
        r = run(*args, "--db", db, *FAST)
        assert r.exit_code == 0, (args, r.output)
