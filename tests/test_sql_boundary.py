"""The SQL boundary (issue 17, items 1-3): ``--where`` cannot widen ``--filter``, cannot read
files or the network, and factor names of any spelling reach SQL only quoted.

Everything runs on a real DuckDB file built by the real ingest from run directories written
by :class:`runner.logwriter.RunLogger` (``conftest.write_run``).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import write_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stabstat.cli import cli

FAST = ["--resamples", "200", "--seed", "1"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _build(tmp: Path, factor: str = "lr", values: tuple[Any, Any] = (1e-5, 1e-4), seeds: int = 4) -> str:
    """``2 x seeds`` runs over ``factor`` (and bias_correction), ingested into a fresh store."""
    from stabstat.ingest import ingest
    from stabstat.store import Store

    runs = tmp / "runs"
    i = 0
    for v in values:
        for s in range(seeds):
            acc = 0.527 if (s == 0 and v == values[0]) else 0.6 + 0.03 * s + 0.02 * (v == values[1])
            write_run(runs, f"r{i:02d}", config={"task": "rte", "seed": s, factor: v, "bias_correction": s % 2 == 0},
                      evals={20: {"accuracy": acc}}, task={"majority": {"accuracy": 0.527}}, seed=s)
            i += 1
    db = tmp / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [runs])
        assert rep.ok and len(rep.ingested) == 2 * seeds, rep.summary()
    return str(db)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build(tmp_path_factory.mktemp("sqlb"))


# ------------------------------------------------------------------ item 1: --where under --filter


def _n_runs(d: dict[str, Any]) -> int:
    return sum(g["n_runs"] for g in d["groups"])


def test_where_cannot_override_filter(db: str) -> None:
    base = run("compare", "--by", "lr", "--filter", "seed=0", "--db", db, "--format", "json", *FAST)
    assert base.exit_code == 0, base.output
    assert _n_runs(json.loads(base.output)) == 2
    # Before the fix this analysed all 8 runs: "(seed = ?) AND (1=0) OR (1=1)".
    r = run("compare", "--by", "lr", "--filter", "seed=0", "--where", "1=0) OR (1=1", "--db", db,
            "--format", "json", *FAST)
    assert r.exit_code == 2 and "unbalanced" in r.output and "Traceback" not in r.output
    # A balanced OR only narrows the filtered rows.
    r = run("compare", "--by", "lr", "--filter", "seed=0", "--where", "(1=0) OR (1=1)", "--db", db,
            "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    assert _n_runs(json.loads(r.output)) == 2


@pytest.mark.parametrize("where", ["seed = 1; DROP TABLE runs", "((seed = 1)", "seed = 1)) OR ((1=1"])
def test_where_must_be_one_expression(db: str, where: str) -> None:
    r = run("compare", "--by", "lr", "--where", where, "--db", db, *FAST)
    assert r.exit_code == 2 and "--where" in r.output and "Traceback" not in r.output


def test_where_brackets_in_strings_and_comments_do_not_count(db: str) -> None:
    r = run("compare", "--by", "lr", "--where", "task <> ')' -- a comment )", "--db", db, "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    assert _n_runs(json.loads(r.output)) == 8


def test_where_with_bound_params(db: str) -> None:
    r = run("compare", "--by", "bias_correction", "--where", "lr > ? AND seed >= ?", "--param", "2e-5",
            "--param", "2", "--db", db, "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert _n_runs(d) == 2 and d["settings"]["selection"]["params"] == [2e-5, 2]
    missing = run("compare", "--by", "lr", "--where", "lr > ?", "--db", db, *FAST)
    assert missing.exit_code == 2 and "--where" in missing.output
    alone = run("compare", "--by", "lr", "--param", "3", "--db", db, *FAST)
    assert alone.exit_code == 2 and "--param" in alone.output


# ------------------------------------------------------------------ item 2: no file or network access

SECRET = "stabstat-secret-content-42"

ESCAPES = [
    "task = (SELECT content FROM read_text('{f}'))",
    "task IN (SELECT column0 FROM read_csv('{f}', header=false))",
    "run_id IN (SELECT run_id FROM read_parquet('{d}/x.parquet'))",
    "EXISTS (SELECT * FROM glob('{d}/*'))",
    "task = (SELECT getvariable('x')) OR len((SELECT list(file) FROM glob('{d}/*'))) > 0",
]


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    f = tmp_path / "secret.txt"
    f.write_text(SECRET)
    return f


@pytest.mark.parametrize("template", ESCAPES)
def test_where_cannot_read_files(db: str, secret: Path, template: str) -> None:
    where = template.format(f=secret, d=secret.parent)
    for cmd in (["compare", "--by", "lr"], ["failure-rate", "--by", "lr"], ["variance"], ["gradients"]):
        r = run(*cmd, "--where", where, "--db", db, *FAST)
        assert r.exit_code == 2, (cmd, r.output)
        assert SECRET not in r.output and "Traceback" not in r.output
        assert "--where" in r.output


@pytest.mark.parametrize("statement", [
    "ATTACH '{d}/other.duckdb' AS o",
    "COPY runs TO '{d}/leak.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
])
def test_statements_are_refused(db: str, secret: Path, statement: str) -> None:
    """Statements cannot even be spliced in: the parenthesis/';' check refuses them, and the
    locked connection would refuse them too (checked directly below)."""
    r = run("compare", "--by", "lr", "--where", "1=1); " + statement.format(d=secret.parent) + "; SELECT (1",
            "--db", db, *FAST)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert not (secret.parent / "leak.csv").exists() and not (secret.parent / "other.duckdb").exists()


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_text('{f}')", "SELECT * FROM read_csv('{f}')", "SELECT * FROM read_parquet('{d}/x.parquet')",
    "ATTACH '{d}/other.duckdb' AS o", "COPY runs TO '{d}/leak.csv'", "INSTALL httpfs", "LOAD httpfs",
    "SET enable_external_access = true",
])
def test_restricted_store_refuses_external_access(db: str, secret: Path, statement: str) -> None:
    import duckdb

    from stabstat.store import Store

    with Store.open(db, external_access=False) as store:
        with pytest.raises(duckdb.Error) as info:
            store.con.execute(statement.format(f=secret, d=secret.parent)).fetchall()
        assert SECRET not in str(info.value)
        # ... while the database itself, temp tables included, still works.
        store.con.execute("CREATE OR REPLACE TEMP TABLE t AS SELECT run_id FROM runs")
        assert store.con.execute("SELECT count(*) FROM t").fetchall()[0][0] == 8
    assert not (secret.parent / "leak.csv").exists()


def test_claims_file_cannot_read_files(db: str, secret: Path, tmp_path: Path) -> None:
    claims = tmp_path / "c.toml"
    claims.write_text(f'[defaults]\nwhere = "task = (SELECT content FROM read_text(\'{secret}\'))"\n'
                      '[[claims]]\nkind = "max_failure_rate"\nvalue = 0.5\n')
    for cmd in (["check", str(claims)], ["report", "--by", "lr", "--claims", str(claims),
                                         "--out", str(tmp_path / "r.html")]):
        r = run(*cmd, "--db", db)
        assert r.exit_code == 2, r.output
        assert SECRET not in r.output and "Traceback" not in r.output and "reads files" in r.output
    assert not (tmp_path / "r.html").exists()


def test_every_analysis_works_with_external_access_off(db: str, tmp_path: Path) -> None:
    """The analysis commands, check, report (chart data and temp tables) and chart run on the
    locked connection (the CLI always opens it so)."""
    claims = tmp_path / "c.toml"
    claims.write_text('[[claims]]\nkind = "mean"\nfactor = "lr"\nhigher = 1e-4\nlower = 1e-5\n')
    for cmd in (["compare", "--by", "lr", "--stratify", "task"], ["failure-rate", "--by", "lr"],
                ["variance", "--by", "lr"], ["gradients", "--by", "lr"], ["check", str(claims)],
                ["report", "--by", "lr", "--claims", str(claims), "--out", str(tmp_path / "r.html")],
                ["chart", "loss-curves", "--by", "lr", "--out", str(tmp_path / "c.json")]):
        r = run(*cmd, "--db", db, *([] if cmd[0] == "check" else FAST))
        assert r.exit_code == 0, (cmd, r.output)
    assert (tmp_path / "r.html").stat().st_size > 0 and (tmp_path / "c.json").exists()


def test_query_keeps_read_access(db: str, secret: Path) -> None:
    r = run("query", f"SELECT content FROM read_text('{secret}')", "--db", db, "--format", "csv")
    assert r.exit_code == 0 and SECRET in r.output
    assert "read" in run("query", "--help").output.lower()


# ------------------------------------------------------------------ item 3: any factor name


def _reserved() -> set[str]:
    from stabstat.store.schema import RESERVED

    return {n.lower() for n in RESERVED} | {"seed", "task", "bias_correction"}


PARTS = [" ", '"', "'", "--", "é", "ß", "名", "select", "FROM", "order", ")", "(", ";", "\\", "%", "?", "$1",
         "x", "y", "1"]
names = st.lists(st.sampled_from(PARTS), min_size=1, max_size=5).map("".join).filter(
    lambda s: s.strip() != "" and s.strip() == s and s.lower() not in _reserved()
    and not s.startswith("__") and "/" not in s)
values = st.lists(st.sampled_from([*PARTS, *string.ascii_letters[:4]]), min_size=1, max_size=4).map("".join).filter(
    lambda s: s.strip() == s and s != "")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, v1=values, v2=values)
def test_factor_names_of_any_spelling(tmp_path_factory: pytest.TempPathFactory, name: str, v1: str,
                                      v2: str) -> None:
    """Factor names and values with spaces, quotes, unicode, keywords and ``--`` are ingested
    and every analysis command runs over them (before the fix ``--stratify "my factor"``
    crashed with a DuckDB traceback: the name was pasted as an alias)."""
    if v1 == v2:
        v2 = v1 + "b"
    tmp = tmp_path_factory.mktemp("names")
    db = _build(tmp, factor=name, values=(v1, v2), seeds=3)
    claims = tmp / "c.toml"
    claims.write_text(f"[[claims]]\nkind = \"failure_rate\"\nfactor = {json.dumps(name)}\n"
                      f"higher = {json.dumps(v1)}\nlower = {json.dumps(v2)}\n")
    cmds = [["compare", "--by", name], ["compare", "--by", "bias_correction", "--stratify", name],
            ["failure-rate", "--by", name], ["failure-rate", "--by", name, "--by", "bias_correction"],
            ["variance", "--by", name], ["gradients", "--by", name], ["check", str(claims)],
            ["compare", "--by", "bias_correction", "--filter", f"{name}={v1}"]]
    for cmd in cmds:
        r = run(*cmd, "--db", db, "--format", "json", *([] if cmd[0] == "check" else FAST))
        assert r.exit_code in (0, 1), (cmd, r.output)
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
        d = json.loads(r.output)
        if cmd[:3] == ["compare", "--by", name]:
            assert {g[name] for g in d["groups"]} == {v1, v2}


def test_claims_where_takes_params(db: str, tmp_path: Path) -> None:
    claims = tmp_path / "c.toml"
    claims.write_text('[defaults]\nwhere = "lr > ?"\nparams = [2e-5]\n'
                      '[[claims]]\nkind = "max_failure_rate"\nvalue = 0.5\n')
    r = run("check", str(claims), "--db", db, "--format", "json")
    assert r.exit_code in (0, 1), r.output
    assert json.loads(r.stdout)["tests"][0]["n"] == {"all": 4}  # the lr = 1e-4 runs only
    claims.write_text('[defaults]\nwhere = "lr > ?"\nparams = 2e-5\n[[claims]]\nkind = "max_failure_rate"\nvalue = 0.5\n')
    bad = run("check", str(claims), "--db", db)
    assert bad.exit_code == 2 and "params must be a list" in bad.output
