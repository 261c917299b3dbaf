"""The third speed pass of issue 18 (``compare`` without polars) against independent references.

* ``select_runs`` applies the selection's filters and the failure rule to numpy columns: its
  ``RunSet.frame`` (built from them) equals the query's ``fetch_frame`` with the rule written as
  polars expressions (the code before this pass), column for column, dtypes included, and so do
  its warnings, over a store with every status, null factors, missing values and baselines, each
  factor type, pooled tasks, ``--baseline``, ``--fail-below`` and ``--include-incomplete``;
* the levels' arrays read from those columns equal ``level_arrays(subset(frame, ...))`` of the frame;
* ``compare`` on the columns = ``compare_frame`` on a frame-only RunSet, to the last bit;
* the paired permutation test of the mean (one matrix-vector product) = the swapped-arrays
  reference with the same draws, p-value for p-value;
* ``stabstat.stats`` and ``stabstat.analysis`` load their modules lazily, yet every public name
  resolves to the same object, and a ``compare`` process imports neither polars, pyarrow nor
  scipy (issue 18, fourth pass);
* a read-only store reads the runs table's columns once (a writable one every time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from stabstat import stats as S
from stabstat.analysis import RunSet, Selection, Settings, compare_frame, select_runs
from stabstat.analysis.levels import level_arrays, level_arrays_from_columns, levels, subset
from stabstat.analysis.selection import (
    BASELINE_TOLERANCE,
    STATUSES_EXCLUDED,
    _selected_ids_sql,
    _selection_sql,
)
from stabstat.store import Store, fetch_frame

STATUSES = ["completed"] * 8 + ["running", "interrupted", "failed", "diverged", "stopped"]


@pytest.fixture(scope="module")
def tricky_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store written with DuckDB SQL: 3 tasks x 4 recipes (one NULL) x 12 seeds, every
    status, runs without a dev value or a majority baseline, factors of each type."""
    db = tmp_path_factory.mktemp("compare_fast") / "tricky.duckdb"
    rng = np.random.default_rng(11)
    with Store.open(db, read_only=False) as store:
        con = store.con
        for name, typ in [("task", "VARCHAR"), ("seed", "BIGINT"), ("lr", "DOUBLE"), ("bc", "BOOLEAN"),
                          ("recipe", "VARCHAR")]:
            con.execute(f'ALTER TABLE runs ADD COLUMN "{name}" {typ}')
        i = 0
        for task in ("rte", "mrpc", "cola"):
            for r, recipe in enumerate(["a", "b", None, "c"]):
                for seed in range(12):
                    run_id = f"run{i:04d}"
                    status = STATUSES[int(rng.integers(len(STATUSES)))]
                    lr = [1e-5, 2e-5, 5e-5, 1e-4][(r + seed) % 4]
                    bc = None if seed == 5 else bool(seed % 2)
                    con.execute(
                        "INSERT INTO runs (run_id, status, status_written, schema_version, task_info, config, "
                        "environment, source, source_format, fingerprint, ingested_at, task, seed, lr, bc, recipe) "
                        "VALUES (?, ?, ?, 1, '{}'::JSON, '{}'::JSON, '{}'::JSON, ?, 'stabstat', ?, "
                        "TIMESTAMP '2026-01-02 00:00:00', ?, ?, ?, ?, ?)",
                        [run_id, status, status, f"gen/{run_id}", run_id, task, seed, lr, bc, recipe])
                    if i % 17 != 3:  # some runs have no majority baseline
                        con.execute("INSERT INTO majority VALUES (?, 'accuracy', 0.6)", [run_id])
                    if i % 13 != 7:  # some runs have no dev accuracy at all
                        for step in (10, 20):
                            u = rng.random()  # at the baseline, a rounding error above it, or above
                            value = 0.6 if u < 0.2 else 0.6 + 1e-12 if u < 0.3 else float(0.6 + 0.3 * rng.random())
                            con.execute("INSERT INTO evals VALUES (?, ?, 'dev', 'accuracy', ?)", [run_id, step, value])
                    i += 1
        con.execute("CHECKPOINT")
    return db


def _reference_frame(store: Store, by: list[str], sel: Selection) -> tuple[pl.DataFrame, list[str]]:
    """The selection as the code before this pass made it: ``fetch_frame`` of the same query,
    then the status filter and the failure rule as polars expressions."""
    from stabstat.analysis.selection import _resolve_split_metric

    ids_sql, params = _selected_ids_sql(store, sel)
    split, metric = _resolve_split_metric(store, sel, ids_sql, params)
    factors = store.factors()
    extra = [c for c in ("seed", "task") if c in factors and c not in by]
    frame = fetch_frame(store.con, _selection_sql(store, ids_sql, by, extra, sel.at), [*params, split, metric])
    warnings = []
    if not sel.include_incomplete:
        excluded = {st: int((frame["status"] == st).sum()) for st in STATUSES_EXCLUDED}
        excluded = {k: v for k, v in excluded.items() if v}
        frame = frame.filter(~pl.col("status").is_in(list(STATUSES_EXCLUDED)) | pl.col("status").is_null())
        if excluded:
            warnings.append("left out (status): " + ", ".join(f"{v} {k}" for k, v in excluded.items())
                            + "; include them with --include-incomplete")
    value = pl.col("value")
    if sel.fail_below is not None:
        base, bad = pl.lit(float(sel.fail_below)), value < float(sel.fail_below)
    else:
        base = pl.lit(float(sel.baseline)) if sel.baseline is not None else pl.col("majority")
        bad = value <= base + BASELINE_TOLERANCE
    frame = frame.with_columns(baseline=base.cast(pl.Float64))
    failed = (pl.when(pl.col("diverged").fill_null(False)).then(True)
              .when(pl.col("status") == "stopped").then(True)
              .when(value.is_null()).then(True)
              .when(pl.col("baseline").is_null()).then(None)
              .otherwise(bad))
    frame = frame.with_columns(failed=failed.cast(pl.Boolean))
    frame = frame.rename({f"__f{i}": c for i, c in enumerate(by)} | {f"__x{i}": c for i, c in enumerate(extra)})
    return frame, warnings


SELECTIONS = [Selection(), Selection(include_incomplete=True), Selection(baseline=0.7), Selection(fail_below=0.75),
              Selection(filters=("task=rte",)), Selection(where="seed < 6")]


@pytest.mark.parametrize("by", ["recipe", "task", "seed", "lr", "bc"])
@pytest.mark.parametrize("sel", SELECTIONS, ids=lambda s: repr(s.describe()))
def test_columns_frame_and_levels_equal_the_polars_reference(tricky_db: Path, by: str, sel: Selection) -> None:
    with Store.open(tricky_db) as store:
        rs = select_runs(store, [by], selection=sel)
        want, want_warnings = _reference_frame(store, [by], sel)
    assert rs.columns is not None
    got = rs.frame
    assert got.schema == want.schema
    assert got.equals(want, null_equal=True)
    assert [w for w in rs.warnings if w.startswith("left out")] == want_warnings
    # The levels' arrays from the columns = the frame path's, level for level.
    fast = level_arrays_from_columns(rs.columns, by)
    assert fast is not None
    assert [lv for lv, _ in fast] == levels(want, by)
    for lv, got_arrays in fast:
        ref = level_arrays(subset(want, by, lv))
        assert got_arrays.n_runs == ref.n_runs
        for field in ("values", "successful", "finite"):
            assert np.array_equal(getattr(got_arrays, field), getattr(ref, field)), (lv, field)
        assert (got_arrays.by_seed is None) == (ref.by_seed is None)
        if ref.by_seed is not None:
            assert np.array_equal(got_arrays.by_seed, ref.by_seed) and got_arrays.seeds == ref.seeds
        assert (got_arrays.has_seed, got_arrays.failed, got_arrays.known) == (ref.has_seed, ref.failed, ref.known)


def test_warnings_name_what_the_rule_found(tricky_db: Path) -> None:
    with Store.open(tricky_db) as store:
        rs = select_runs(store, ["recipe"])
    frame = rs.frame
    text = " | ".join(rs.warnings)
    assert f"{int((frame['status'] == 'stopped').sum())} run(s) stopped early" in text
    assert f"{int(frame['failed'].is_null().sum())} run(s) have no stored majority baseline" in text
    assert f"{int(frame['value'].is_null().sum())} run(s) have no dev/accuracy value" in text
    assert "the selection pools 3 tasks (cola, mrpc, rte)" in text


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


@pytest.mark.parametrize("by", ["recipe", "bc", "seed"])
def test_compare_on_columns_equals_compare_on_the_frame(tricky_db: Path, by: str) -> None:
    cfg = Settings(resamples=400, seed=3)
    with Store.open(tricky_db) as store:
        rs = select_runs(store, [by], selection=Selection(filters=("task=rte",)))
    fast = compare_frame(rs, settings=cfg)
    slow = compare_frame(RunSet(rs.frame, rs.by, rs.settings, list(rs.warnings)), settings=cfg)
    assert _plain(fast.to_dict()) == _plain(slow.to_dict())


def _paired_reference(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> float:
    """The paired sign-flip p-value as computed before: swapped arrays and their means."""
    gen = np.random.default_rng(seed)
    swap = gen.random((resamples, a.size)) < 0.5
    t_b = np.where(swap, b, a).mean(axis=1) - np.where(swap, a, b).mean(axis=1)
    t_obs = a.mean() - b.mean()
    tol = 1e-12 * max(1.0, abs(t_obs))
    return (1.0 + np.count_nonzero(np.abs(t_b) >= abs(t_obs) - tol)) / (1.0 + resamples)


@pytest.mark.parametrize("case", range(40))
def test_paired_permutation_p_value_equals_the_swapped_arrays(case: int) -> None:
    rng = np.random.default_rng(case)
    n = int(rng.integers(2, 60))
    a = rng.normal(size=n)
    # ties and exact zeros of the difference, the cases the tolerance is for
    b = a + rng.normal(scale=0.3, size=n) if case % 3 else np.round(a + rng.normal(size=n), 1)
    if case % 4 == 0:
        b[: n // 2] = a[: n // 2]
    r = S.permutation_test(a, b, paired=True, resamples=2000, rng=case)
    assert r.p_value == _paired_reference(a, b, 2000, case)


def test_stats_names_resolve_lazily_to_the_same_objects() -> None:
    import importlib

    for name in S.__all__:
        obj = getattr(S, name)
        assert obj is not None
        if callable(obj) and hasattr(obj, "__module__") and obj.__module__.startswith("stabstat.stats."):
            assert getattr(importlib.import_module(obj.__module__), name) is obj
    # a submodule that shares its name with a function does not shadow it
    import stabstat.stats.aso  # noqa: F401

    assert callable(S.aso) and callable(S.expected_max) and callable(S.multibootstrap)
    with pytest.raises(AttributeError):
        S.no_such_statistic  # noqa: B018


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_compare_process_imports_neither_polars_nor_pyarrow_nor_scipy(tricky_db: Path, fmt: str) -> None:
    """Issue 18, fourth pass: no scipy either (its normal, beta and F functions are
    stabstat.stats.special), and only the analysis and statistics modules compare uses."""
    code = ("import sys\nfrom stabstat.cli import cli\n"
            f"try:\n    cli(['compare', '--by', 'recipe', '--resamples', '200', '--format', {fmt!r}, "
            f"'--db', {str(tricky_db)!r}])\n"
            "except SystemExit:\n    pass\n"
            "print('@@', sorted({m.split('.')[0] for m in sys.modules} & {'polars', 'pyarrow', 'pandas', 'scipy',"
            " 'statsmodels'}))\n"
            "print('@@', sorted(m for m in sys.modules if m.startswith(('stabstat.stats.', 'stabstat.analysis.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    heavy, mods = [line.split("@@ ", 1)[1] for line in out.stdout.splitlines() if line.startswith("@@")]
    assert ("mean [CI]" if fmt == "table" else '"analysis": "compare"') in out.stdout  # the command really ran
    assert heavy == "[]"
    assert "stabstat.stats.special'" in mods and "stabstat.analysis.compare'" in mods
    for lazy in ("stats.power", "stats.sequential", "stats.trends", "stats.stratified", "stats.components",
                 "stats.aso", "stats.expected_max", "stats.multibootstrap", "analysis.decompose", "analysis.plan",
                 "analysis.gradients", "analysis.forgetting", "analysis.variance", "analysis.expected_max"):
        assert f"stabstat.{lazy}'" not in mods, lazy


def test_analysis_names_resolve_lazily_and_are_never_shadowed_by_their_modules() -> None:
    code = ("import importlib, sys\n"
            "importlib.import_module('stabstat.analysis.variance')\n"  # the submodule first, then the name
            "import stabstat.analysis as A\n"
            "from stabstat.analysis import compare, variance\n"
            "print('@@', callable(compare), callable(variance), callable(A.plan), callable(A.decompose),"
            " A.Settings.__name__, A.GROUP_STATISTICS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("@@ ", 1)[1].strip() == "True True True True Settings ('mean', 'std', 'median', 'iqm', 'max')"
    import stabstat.analysis as A

    assert set(A.__all__) <= set(dir(A))
    for name in A.__all__:
        assert getattr(A, name) is not None
    with pytest.raises(AttributeError):
        A.no_such_analysis  # noqa: B018


def test_factors_are_read_once_per_read_only_store_and_always_when_writable(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        store.con.execute('ALTER TABLE runs ADD COLUMN "lr" DOUBLE')
        assert "lr" in store.factors()
        store.con.execute('ALTER TABLE runs ADD COLUMN "seed" BIGINT')
        assert list(store.factors()) == ["lr", "seed"]  # a writable store never caches
    with Store.open(db) as store:
        queries = []
        real = store.con

        class Counting:
            def execute(self, sql: str, *args: Any) -> Any:
                queries.append(sql)
                return real.execute(sql, *args)

        store.con = Counting()  # type: ignore[assignment]
        for _ in range(3):
            assert store.factors() == {"lr": "DOUBLE", "seed": "BIGINT"}
        assert not any("information_schema" in q for q in queries)  # read when opened, then cached
    duck = tmp_path / "other.duckdb"
    import duckdb

    duckdb.connect(str(duck)).close()
    from stabstat.errors import InputFormatError

    with pytest.raises(InputFormatError, match="not a stabstat database"):
        Store.open(duck)
