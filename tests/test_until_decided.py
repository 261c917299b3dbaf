"""``stabstat-run SWEEP --until-decided CLAIMS.toml``: rounds of seeds until the claims are decided.

End to end with the tiny random BERT on the generated task (real training, real run
directories, the real ``stabstat ingest`` / ``check --sequential`` / ``plan`` subprocesses):

* arms that differ strongly (one arm's learning rate makes every run diverge, a diverged run
  is a failed run) stop before ``--max-seeds`` with the claim PASSed;
* identical arms run to the budget and end INCONCLUSIVE (through the Slurm launcher, with
  submitit's in-process ``debug`` executor: the loop is launcher-agnostic).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stabstat.errors import ConfigError

SWEEP = """
seeds = 2
[config]
model = "tiny"
task = "synthetic"
max_length = 32
n_train = 32
max_steps = 2
batch_size = 8
log_predictions = false
[factors]
arm = "a"
[[arms]]
arm = "{a}"
lr = {lr_a}
[[arms]]
arm = "{b}"
lr = 1e-5
"""

CLAIMS = """
[defaults]
fail_below = -1.0   # only divergence fails a run here
[[claims]]
name = "arm {a} fails more often than arm {b}"
kind = "failure_rate"
factor = "arm"
higher = "{a}"
lower = "{b}"
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _files(tmp_path: Path, *, a: str, b: str, lr_a: str) -> tuple[Path, Path]:
    sweep, claims = tmp_path / "sweep.toml", tmp_path / "claims.toml"
    sweep.write_text(SWEEP.format(a=a, b=b, lr_a=lr_a), "utf-8")
    claims.write_text(CLAIMS.format(a=a, b=b), "utf-8")
    return sweep, claims


def _run(*args: str) -> tuple[int, str]:
    from runner.cli import run_cmd

    r = CliRunner().invoke(run_cmd, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def _check_json(db: Path, claims: Path) -> dict:  # type: ignore[type-arg]
    from stabstat.claims import check
    from stabstat.store import Store

    with Store.open(db) as store:
        return check(store, claims, sequential=True).to_dict()


def test_strongly_different_arms_stop_early_with_the_claim_decided(tmp_path: Path) -> None:
    sweep, claims = _files(tmp_path, a="bad", b="good", lr_a="1e30")
    out = tmp_path / "runs"
    code, text = _run(str(sweep), "--out", str(out), "--until-decided", str(claims), "--max-seeds", "24",
                      "--batch", "4")
    assert code == 0, text
    stopped = [ln for ln in text.splitlines() if ln.startswith("stopped:")]
    assert len(stopped) == 1 and "every claim decided after" in stopped[0]
    used = int(stopped[0].split("after ")[1].split()[0])
    assert used < 24 and used % 4 == 0
    # exactly `used` seeds per arm were trained, every one finished
    dirs = [d for d in out.iterdir() if (d / "run.json").exists()]
    assert len(dirs) == 2 * used
    assert {json.loads((d / "run.json").read_text())["status"] for d in dirs} == {"completed", "diverged"}
    res = _check_json(out / "stabstat.duckdb", claims)
    (t,) = res["tests"]
    assert t["verdict"] == "PASS" and t["n"] == {"bad": used, "good": used}
    assert t["sequence"]["decided_at"] is not None and used - 4 < t["sequence"]["decided_at"] <= used
    assert f"PASS         arm bad fails more often than arm good: seeds used {used} per configuration" in text
    assert "fixed-n design (stabstat plan" in text
    # re-running resumes: nothing new is trained, the same decision comes back
    code, text2 = _run(str(sweep), "--out", str(out), "--until-decided", str(claims), "--max-seeds", "24",
                       "--batch", "4")
    assert code == 0 and f"every claim decided after {used} seeds" in text2
    assert f"round 1: {used} seeds, {2 * used} runs planned, 0 to run" in text2
    assert len([d for d in out.iterdir() if (d / "run.json").exists()]) == 2 * used


def test_identical_arms_run_to_the_budget_and_stay_inconclusive(tmp_path: Path) -> None:
    sweep, claims = _files(tmp_path, a="x", b="y", lr_a="1e-5")
    out = tmp_path / "runs"
    code, text = _run(str(sweep), "--out", str(out), "--until-decided", str(claims), "--max-seeds", "4",
                      "--batch", "2", "--launcher", "slurm", "--submitit-cluster", "debug",
                      "--db", str(tmp_path / "s.duckdb"))
    assert code == 0, text
    assert "stopped: budget spent: 4 seeds (--max-seeds), undecided claims are INCONCLUSIVE" in text
    assert "round 2: 4 seeds" in text and "round 3" not in text
    assert "INCONCLUSIVE arm x fails more often than arm y: seeds used 4" in text
    (t,) = _check_json(tmp_path / "s.duckdb", claims)["tests"]
    assert t["verdict"] == "INCONCLUSIVE" and t["n"] == {"x": 4, "y": 4}


def test_seed_rounds() -> None:
    from runner.until_decided import seed_rounds

    assert seed_rounds([0, 1, 2, 3, 4, 5, 6], first=3, batch=2) == [[0, 1, 2], [0, 1, 2, 3, 4],
                                                                     [0, 1, 2, 3, 4, 5, 6]]
    assert seed_rounds([0, 1], first=4, batch=4) == [[0, 1]]
    with pytest.raises(ConfigError, match="--batch"):
        seed_rounds([0, 1], first=1, batch=0)


def test_bad_claims_file_is_one_line_before_training(tmp_path: Path) -> None:
    sweep, _ = _files(tmp_path, a="x", b="y", lr_a="1e-5")
    with pytest.raises(ConfigError, match=r"nope.toml: no such claims file"):  # runner.cli.main: one line, exit 2
        _run(str(sweep), "--out", str(tmp_path / "runs"), "--until-decided", str(tmp_path / "nope.toml"))
    assert not (tmp_path / "runs").exists()
