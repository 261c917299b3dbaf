"""The analysis commands through click's CliRunner: exit codes, formats, errors, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_analysis import build_db

from stabstat.cli import cli

FAST = ["--resamples", "300", "--seed", "2"]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_db(tmp_path_factory.mktemp("cli")))


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_compare_json_shape_and_determinism(db: str) -> None:
    r1 = run("compare", "--by", "bias_correction", "--db", db, "--format", "json", *FAST)
    assert r1.exit_code == 0, r1.output
    d = json.loads(r1.output)
    assert set(d) >= {"groups", "tests", "settings"}
    g = d["groups"][0]
    for k in ("bias_correction", "n_runs", "n_failed", "failure_rate", "failure_ci_low", "failure_ci_high",
              "mean", "ci_low", "ci_high", "std", "median", "iqm", "max", "iqm_ci_low", "max_ci_high"):
        assert k in g
    assert d["settings"]["resamples"] == 300 and d["settings"]["seed"] == 2
    assert d["settings"]["selection"]["filters"] == []
    r2 = run("compare", "--by", "bias_correction", "--db", db, "--format", "json", *FAST)
    assert r2.output == r1.output


def test_compare_table_and_csv(db: str) -> None:
    r = run("compare", "--by", "bias_correction", "--db", db, *FAST)
    assert r.exit_code == 0, r.output
    assert "failure rate [CI]" in r.output and "mean difference (paired)" in r.output
    assert "Brown-Forsythe" in r.output
    c = run("compare", "--by", "bias_correction", "--db", db, "--format", "csv", *FAST)
    header = c.output.splitlines()[0].split(",")
    assert header[:3] == ["bias_correction", "n_runs", "n_valid"]


def test_options_change_the_selection(db: str) -> None:
    r = run("compare", "--by", "bias_correction", "--db", db, "--format", "json", "--baseline", "0.99",
            "--filter", "task=rte", "--where", "lr > 0", "--ci-method", "percentile", "--correction", "bh", *FAST)
    d = json.loads(r.output)
    assert [g["n_failed"] for g in d["groups"]] == [12, 12]
    assert d["settings"]["ci_method"] == "percentile" and d["settings"]["correction"] == "bh"
    assert "0.99 (--baseline)" in d["settings"]["failure_rule"]


@pytest.mark.parametrize("args,message", [
    (["compare", "--by", "colour"], "unknown factor 'colour'"),
    (["compare", "--by", "seed", "--metric", "bleu"], "unknown metric 'bleu'"),
    (["compare", "--by", "seed", "--filter", "task=mrpc"], "matched no runs"),
    (["compare", "--by", "seed", "--where", "nonsense >"], "--where"),
    (["failure-rate", "--by", "seed", "--baseline", "0.5", "--fail-below", "0.5"], "either --baseline"),
])
def test_errors_are_one_line(db: str, args: list[str], message: str) -> None:
    r = run(*args, "--db", db, *FAST)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_missing_database(tmp_path: Path) -> None:
    r = run("compare", "--by", "x", "--db", str(tmp_path / "nope.duckdb"))
    assert r.exit_code == 2 and "no such database" in r.output


def test_failure_rate_two_factors_json(db: str) -> None:
    r = run("failure-rate", "--by", "n_train", "--by", "max_steps", "--filter", "bias_correction=false",
            "--db", db, "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["by"] == ["n_train", "max_steps"]
    assert all({"n_train", "max_steps", "n_runs", "n_failed", "failure_rate"} <= set(g) for g in d["groups"])
    assert any(t["test"] == "logistic_trend" for t in d["tests"])


def test_variance_and_gradients_tables(db: str) -> None:
    v = run("variance", "--against", "train_loss", "--bins", "3", "--db", db, *FAST)
    assert v.exit_code == 0, v.output
    assert "bins of nearly equal train_loss" in v.output
    g = run("gradients", "--db", db, *FAST)
    assert g.exit_code == 0, g.output
    assert "failed" in g.output and "collapse vs failure" in g.output
    gj = json.loads(run("gradients", "--db", db, "--format", "json", *FAST).output)
    assert {"groups", "tests", "settings", "runs", "layers"} <= set(gj)


def test_check_exit_codes(db: str, tmp_path: Path) -> None:
    ok = tmp_path / "ok.toml"
    ok.write_text("[[claims]]\nname='bc'\nkind='failure_rate'\nfactor='bias_correction'\nhigher=false\nlower=true\n")
    r = run("check", str(ok), "--db", db, "--resamples", "300")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "1 passed, 0 failed" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[[claims]]\nname='wrong'\nkind='failure_rate'\nfactor='bias_correction'\nhigher=true\nlower=false\n")
    r = run("check", str(bad), "--db", db, "--format", "json")
    assert r.exit_code == 1
    assert json.loads(r.output)["tests"][0]["verdict"] == "FAIL"
    r = run("check", str(tmp_path / "missing.toml"), "--db", db)
    assert r.exit_code == 2 and "no such claims file" in r.output


def test_every_analysis_command_has_help_with_example() -> None:
    for name in ("compare", "failure-rate", "variance", "gradients", "check"):
        r = run(name, "--help")
        assert r.exit_code == 0 and "Example:" in r.output, name


@pytest.mark.parametrize("cmd", [["failure-rate", "--by", "n_train"], ["gradients"], ["variance"],
                                 ["compare", "--by", "n_train"]])
def test_csv_output_for_every_command(db: str, cmd: list[str]) -> None:
    """The CSV holds the JSON's groups (one row each, same columns and values) and then its
    tests (issue 17: this test used to check only that the output was not empty)."""
    import io

    import polars as pl

    r = CliRunner().invoke(cli, [*cmd, "--db", db, "--format", "csv", *FAST])
    assert r.exit_code == 0, r.output
    j = json.loads(CliRunner().invoke(cli, [*cmd, "--db", db, "--format", "json", *FAST]).stdout)
    blocks = r.stdout.strip("\n").split("\n\n")
    assert len(blocks) == (2 if j["tests"] else 1)
    groups = pl.read_csv(io.StringIO(blocks[0]))
    assert groups.height == len(j["groups"]) > 0
    assert groups.columns == list(j["groups"][0])
    for col in ("n_runs", "n_failed"):
        if col in groups.columns:
            assert groups[col].to_list() == [g[col] for g in j["groups"]]
    if j["tests"]:
        tests = pl.read_csv(io.StringIO(blocks[1]), infer_schema_length=None)
        assert tests.height == len(j["tests"])
        assert tests["test"].to_list() == [t["test"] for t in j["tests"]]
    assert "Traceback" not in r.output
