"""Issue 17: no tracebacks, honest statistics at small n, the small usability fixes.

The stores are built by the real ingest from run directories written by RunLogger; the
statistics are checked against scipy where a reference exists.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats as ss
from click.testing import CliRunner, Result
from conftest import write_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stabstat import stats as S
from stabstat.cli import COMMANDS, cli

FAST = ["--resamples", "200", "--seed", "1"]


def run(*args: str, **kw: Any) -> Result:
    return CliRunner().invoke(cli, list(args), **kw)


def _ingest(runs: Path, db: Path) -> str:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [runs])
        assert rep.ok, rep.summary()
    return str(db)


def _small_db(tmp: Path, seeds: int = 3, aliased: bool = False) -> str:
    """2 recipes x ``seeds``: with ``aliased`` the recipe's lr and bias_correction move with
    it (as in the demo); otherwise lr varies independently of the recipe."""
    runs = tmp / "runs"
    for r, recipe in enumerate(("a", "b")):
        for s in range(seeds):
            lr = (1e-4, 2e-5)[r] if aliased else (1e-4, 2e-5)[s % 2]
            acc = 0.527 if (r == 0 and s == 0) else 0.62 + 0.02 * s + 0.05 * r
            write_run(runs, f"{recipe}-s{s}", config={"task": "rte", "seed": s, "recipe": recipe, "lr": lr,
                                                     "bias_correction": r == 1},
                      evals={20: {"accuracy": acc}}, task={"majority": {"accuracy": 0.527}}, seed=s)
    return _ingest(runs, tmp / "s.duckdb")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _small_db(tmp_path_factory.mktemp("hard"))


# ------------------------------------------------------------------ item 4: one line, never a traceback


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(db: str, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    import stabstat.analysis as A

    def boom(*a: Any, **k: Any) -> Any:
        raise ValueError("something odd\nsecond line")

    monkeypatch.setattr(A, "compare", boom)
    r = run("compare", "--by", "recipe", "--db", db)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert r.output.strip() == ("Error: ValueError: something odd (unexpected; rerun with --debug or "
                                "STABSTAT_DEBUG=1 for the traceback, and please report it)")
    d = run("--debug", "compare", "--by", "recipe", "--db", db)
    assert isinstance(d.exception, ValueError)  # re-raised: click prints the traceback
    monkeypatch.setenv("STABSTAT_DEBUG", "1")
    assert isinstance(run("compare", "--by", "recipe", "--db", db).exception, ValueError)


def test_duckdb_and_os_errors_are_one_line(db: str, tmp_path: Path) -> None:
    import duckdb

    from stabstat.cli import error_message

    try:
        duckdb.sql("SELECT nope")
    except duckdb.Error as exc:
        assert error_message(exc).startswith("database error: Binder Error")
    assert error_message(PermissionError(13, "Permission denied", "/x/y.html")) == "/x/y.html: Permission denied"
    # A report into a "folder" that is a file: the system refuses; one line naming the path.
    (tmp_path / "f").write_text("")
    r = run("report", "--by", "recipe", "--db", db, "--out", str(tmp_path / "f" / "r.html"), *FAST)
    assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def _option_names(cmd: str) -> list[str]:
    command = cli.get_command(None, cmd)  # type: ignore[arg-type]
    assert command is not None
    return [o for p in command.params for o in p.opts if o.startswith("--") and o not in ("--help", "--db")]


VALUES = st.sampled_from(["recipe", "lr", "seed", "task", "x", "", "0", "-1", "1e9", "nan", "2e-5", "true",
                          "a=b", "recipe=a", "lr=abc", "'", '"', "1=1) OR (1=1", "lr > ?", "--", "é",
                          "read_text('/etc/hostname')", "out.png", "out.svg", "o.json", "none", "bca"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_arguments_never_give_a_traceback(db: str, tmp_path_factory: pytest.TempPathFactory,
                                                    monkeypatch: pytest.MonkeyPatch, data: st.DataObject) -> None:
    """Every command with generated options and values: exit code 0, 1 or 2, no traceback, no
    exception other than the exit (issue 17 item 4)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("fuzz"))
    cmd = data.draw(st.sampled_from([c for c in COMMANDS if c not in ("ingest", "validate")]))
    opts = _option_names(cmd)
    args: list[str] = [cmd]
    if cmd == "query":
        args.append(data.draw(st.sampled_from(["SELECT 1", "SELECT * FROM nope", "DROP TABLE runs", "x"])))
    elif cmd in ("check", "chart"):
        args.append(data.draw(st.sampled_from(["metric-by-config", "loss-curves", "nope.toml", "forest"])))
    for _ in range(data.draw(st.integers(0, 4))):
        args += [data.draw(st.sampled_from(opts)), data.draw(VALUES)]
    r = run(*args, "--db", db, "--resamples", "100")
    assert r.exit_code in (0, 1, 2), (args, r.output)
    assert "Traceback" not in r.output, (args, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))


# ------------------------------------------------------------------ items 5 and 6


def test_failed_ingest_leaves_no_database(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    db = tmp_path / "x.duckdb"
    r = run("ingest", str(tmp_path / "empty"), "--db", str(db))
    assert r.exit_code == 2 and "no runs found" in r.output
    assert not db.exists() and not Path(str(db) + ".wal").exists()
    r = run("runs", "--db", str(db))
    assert r.exit_code == 2 and "no such database" in r.output


def test_failed_ingest_keeps_an_existing_database(db: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    size = Path(db).stat().st_size
    r = run("ingest", str(tmp_path / "empty"), "--db", db)
    assert r.exit_code == 2 and Path(db).stat().st_size == size


def test_chart_refuses_a_format_that_contradicts_the_suffix(db: str, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    r = run("chart", "metric-by-config", "--by", "recipe", "--format", "svg", "--out", str(out), "--db", db, *FAST)
    assert r.exit_code == 2 and "--format svg" in r.output and ".svg" in r.output
    assert not out.exists()
    ok = run("chart", "metric-by-config", "--by", "recipe", "--format", "json", "--out", str(tmp_path / "f.json"),
             "--db", db, *FAST)
    assert ok.exit_code == 0, ok.output
    json.loads((tmp_path / "f.json").read_text())


# ------------------------------------------------------------------ item 7: degenerate cases


def test_brown_forsythe_with_two_runs_per_group_is_undefined() -> None:
    # Before: W = 8e29, p < 1e-4 (rounding in a 0/0 ratio).
    r = S.brown_forsythe([0.61, 0.72], [0.55, 0.70], [0.66, 0.69])
    assert math.isnan(r.statistic) and math.isnan(r.p_value) and "undefined" in r.warnings[0]
    # One group of 3 runs with spread: defined again, equal to scipy's.
    a, b = [0.61, 0.72, 0.70], [0.55, 0.70]
    ref = ss.levene(a, b, center="median")
    r2 = S.brown_forsythe(a, b)
    assert r2.statistic == pytest.approx(ref.statistic) and r2.p_value == pytest.approx(ref.pvalue)


def test_compare_by_seed_reports_spread_test_as_undefined(db: str) -> None:
    r = run("compare", "--by", "seed", "--db", db, *FAST)
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("Brown-Forsythe (all runs)"))
    assert "undefined" in line and "<1e-4" not in line
    assert "Brown-Forsythe (all runs): undefined" in r.stderr
    j = json.loads(run("compare", "--by", "seed", "--db", db, "--format", "json", *FAST).stdout)
    (bf,) = [t for t in j["tests"] if t["test"] == "brown_forsythe" and t["runs"] == "all"]
    assert bf["statistic"] is None and bf["p_value"] is None


@pytest.mark.parametrize("case", ["n0", "n1", "zero_variance", "all_failed", "none_failed"])
def test_every_test_is_honest_in_degenerate_cases(case: str) -> None:
    """n < 2, zero variance, all failed, none failed: no test reports significance, no
    interval is invented, every result says why."""
    if case in ("n0", "n1"):
        x = [] if case == "n0" else [0.7]
        assert math.isnan(S.bootstrap_ci(x, resamples=100).ci_low)
        assert math.isnan(S.bootstrap_diff(x, [0.6, 0.7], resamples=100).ci_low)
        p = S.permutation_test(x, [0.6, 0.7], resamples=100).p_value
        assert math.isnan(p) or p >= 0.5
        assert math.isnan(S.brown_forsythe(x, [0.6, 0.7, 0.8]).p_value)
        assert math.isnan(S.bootstrap_correlation(x, x, resamples=100).estimate)
        r = S.rate_interval(len(x), len(x))
        assert (math.isnan(r.rate) and r.warnings) if not x else (r.ci_low < 0.05 and r.ci_high == 1.0)
    elif case == "zero_variance":
        c = [0.7, 0.7, 0.7, 0.7]
        b = S.bootstrap_ci(c, statistic="std", resamples=100)
        assert b.estimate == 0 and b.ci_low == b.ci_high == 0
        assert S.permutation_test(c, c, resamples=100).p_value == 1.0
        bf = S.brown_forsythe(c, c)
        assert not bf.p_value < 0.05 and bf.warnings
        ratio = S.sd_ratio_ci([0.6, 0.7, 0.8], c, resamples=100)
        assert math.isinf(ratio.estimate) or math.isnan(ratio.estimate)
        assert math.isnan(ratio.ci_low) and any("undefined" in w for w in ratio.warnings)
        corr = S.bootstrap_correlation([1, 2, 3, 4], c, resamples=100)
        assert math.isnan(corr.estimate) and corr.warnings
    else:
        k = 6 if case == "all_failed" else 0
        assert S.fisher_exact(k, 6, k, 6) == pytest.approx(1.0)
        d = S.newcombe_diff(k, 6, k, 6)
        assert d.estimate == 0 and d.ci_low < 0 < d.ci_high and d.p_value == pytest.approx(1.0)
        r = S.rate_interval(k, 6)
        assert r.method == "clopper-pearson"
        ref = ss.binomtest(k, 6).proportion_ci(method="exact")
        assert (r.ci_low, r.ci_high) == pytest.approx((ref.low, ref.high))
        y = np.full(6, k == 6)
        fit = S.logistic_trend(np.array([1.0, 1, 2, 2, 4, 4]), y, factor="n")
        assert fit.separation and math.isnan(fit.p_value)
        pt = S.trend_permutation_test(np.array([1.0, 1, 2, 2, 4, 4]), y, resamples=100)
        assert pt.p_value == 1.0


# ------------------------------------------------------------------ items 8 and 9: small n


def test_every_analysis_warns_about_few_seeds(db: str) -> None:
    for cmd in (["compare", "--by", "recipe"], ["failure-rate", "--by", "recipe"], ["variance", "--by", "recipe"],
                ["variance"]):
        j = json.loads(run(*cmd, "--db", db, "--format", "json", *FAST).stdout)
        assert any(re.search(r"(only \d seeds|fewer than 10 runs)", w) for w in j["warnings"]), (cmd, j["warnings"])


def test_auto_interval_follows_the_coverage_table() -> None:
    assert [S.default_ci_method("std", n) for n in (3, 5, 19, 20, 50)] == [
        "percentile", "percentile", "percentile", "bca", "bca"]
    assert [S.default_ci_method("mean", n) for n in (2, 3, 4, 10)] == ["percentile", "percentile", "bca", "bca"]
    x = [0.70, 0.71, 0.69, 0.527, 0.72]
    auto = S.bootstrap_statistics(x, ("mean", "std"), method="auto", resamples=2000, rng=0)
    assert auto["mean"].method == "bca" and auto["std"].method == "percentile"
    # The case: BCa's SD interval at n = 5 hugs the estimate; auto's does not.
    bca = S.bootstrap_ci(x, statistic="std", method="bca", resamples=2000, rng=0)
    assert auto["std"].ci_low < bca.ci_low
    assert S.bootstrap_diff(x, x[:4], statistic="std", op="ratio", method="auto", resamples=200).method == "percentile"


@pytest.mark.slow
def test_small_n_coverage_measurement_backs_the_choice() -> None:
    """A reduced run of the README's table: on the failure mixture at n = 5 the percentile SD
    interval covers more often than BCa (the measured gap is 12 points)."""
    from benchmarks.coverage import bca_coverage

    pct = bca_coverage("failure-mixture", n=5, reps=300, resamples=1000, seed=5, method="percentile",
                       statistic="std")
    bca = bca_coverage("failure-mixture", n=5, reps=300, resamples=1000, seed=5, method="bca", statistic="std")
    assert pct > bca + 0.03


# ------------------------------------------------------------------ item 10: footers name the method


@pytest.mark.parametrize(("cmd", "must", "must_not"), [
    (["failure-rate", "--by", "recipe"], "Wilson (Clopper-Pearson at 0 or all)", "bootstrap"),
    (["gradients"], "collapsed share 95% Wilson", "intervals: 95% bca"),
    (["compare", "--by", "recipe"], "95% bootstrap (BCa; percentile", "intervals: 95% auto"),
    (["compare", "--by", "recipe", "--ci-method", "percentile"], "95% bootstrap percentile", "BCa"),
    (["variance"], "slope: OLS t interval", "Wilson"),
])
def test_footers_state_the_method_used(db: str, cmd: list[str], must: str, must_not: str) -> None:
    r = run(*cmd, "--db", db, *FAST)
    assert r.exit_code == 0, r.output
    footer = next(ln for ln in r.stdout.splitlines() if ln.startswith("intervals: "))
    assert must in footer and must_not not in footer


# ------------------------------------------------------------------ item 11: one precedence rule


def test_claims_settings_precedence_is_the_same_for_check_and_report(db: str, tmp_path: Path) -> None:
    claims = tmp_path / "c.toml"
    claims.write_text('[defaults]\nresamples = 300\nseed = 5\ncorrection = "bh"\n'
                      '[[claims]]\nkind = "mean"\nfactor = "recipe"\nhigher = "b"\nlower = "a"\n')
    c = json.loads(run("check", str(claims), "--seed", "3", "--db", db, "--format", "json").stdout)["settings"]
    out = tmp_path / "r.html"
    r = run("report", "--by", "recipe", "--claims", str(claims), "--seed", "3", "--out", str(out), "--db", db)
    assert r.exit_code == 0, r.output
    blob = re.search(r'id="stabstat-data">(.*?)</script>', out.read_text(), re.S)
    assert blob is not None
    rep = json.loads(blob.group(1))["claims"]["settings"]
    for s in (c, rep):  # CLI seed, the file's resamples and correction, the default interval
        assert (s["seed"], s["resamples"], s["correction"], s["ci_method"]) == (3, 300, "bh", "auto")
    c2 = json.loads(run("check", str(claims), "--correction", "none", "--db", db, "--format", "json").stdout)
    assert (c2["settings"]["seed"], c2["settings"]["correction"]) == (5, "none")


# ------------------------------------------------------------------ items 13 and 14: the report


def test_aliased_factors_are_one_configuration(tmp_path: Path) -> None:
    db = _small_db(tmp_path, aliased=True)
    out = tmp_path / "r.html"
    r = run("report", "--out", str(out), "--db", db, *FAST)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "recipe / lr / bias_correction" in page and "a / 0.0001 / false" in page
    for kind in ("loss-curves", "layer-gradients", "metric-by-config"):
        c = run("chart", kind, "--out", str(tmp_path / f"{kind}.json"), "--db", db, *FAST)
        assert c.exit_code == 0, (kind, c.output)


def test_charts_of_runs_do_not_need_by(db: str, tmp_path: Path) -> None:
    """Independent factors (recipe and lr): the report needs --by; loss and gradient charts
    do not (they draw runs, coloured by the combination)."""
    r = run("report", "--out", str(tmp_path / "r.html"), "--db", db, *FAST)
    assert r.exit_code == 2 and "several factors vary" in r.output
    for kind in ("loss-curves", "layer-gradients"):
        c = run("chart", kind, "--out", str(tmp_path / f"{kind}.json"), "--db", db, *FAST)
        assert c.exit_code == 0, (kind, c.output)
    bad = run("chart", "forest", "--out", str(tmp_path / "f.json"), "--db", db, *FAST)
    assert bad.exit_code == 2 and "pass --by" in bad.output


def test_page_says_why_a_number_has_no_interval() -> None:
    from stabstat.report.sections import ci_or_why

    why = ["only 3 seeds (< 10) ...", "some resamples give an undefined std ratio (e.g. a zero denominator); "
                                       "no interval"]
    assert ci_or_why(2.5, math.nan, math.nan, why) == (
        "2.5000 (no interval: some resamples give an undefined std ratio (e.g. a zero denominator); no interval)")
    assert ci_or_why(0.5, 0.4, 0.6, why) == "0.5000 [0.4000, 0.6000]"
    assert ci_or_why(0.7, math.nan, math.nan, (), "fewer than 2 runs") == "0.7000 (no interval: fewer than 2 runs)"


def test_report_claims_spell_booleans_lower_case(db: str, tmp_path: Path) -> None:
    claims = tmp_path / "c.toml"
    claims.write_text('[[claims]]\nkind = "std"\nfactor = "bias_correction"\nhigher = false\nlower = true\n')
    out = tmp_path / "r.html"
    r = run("report", "--by", "recipe", "--claims", str(claims), "--out", str(out), "--db", db, *FAST)
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "bias_correction=false vs bias_correction=true" in page and "=False" not in page
    c = run("check", str(claims), "--db", db)
    assert "false: 3, true: 3" in c.output and "False" not in c.output


def test_output_into_a_closed_pipe_stops_quietly(db: str) -> None:
    """``stabstat compare ... | head``: the reader leaves; no error message, no traceback,
    status 1 (as click's own handling of ``--help | head``)."""
    import subprocess
    import sys

    for args in (["compare", "--by", "recipe", "--db", db, "--resamples", "200"], ["--help"]):
        proc = subprocess.Popen([sys.executable, "-m", "stabstat", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1, err
        assert err == "", err
