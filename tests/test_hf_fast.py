"""The fast HF ingest path (issue 18, third pass): typed training values behind a text guard,
``read_json``'s object size fitted to the batch, hive partitioning off.

The Python reader (:func:`read_hf_run`) stays the reference: what DuckDB loads must equal what
it reads, what it refuses must be refused with its one-line message, and what the text guard
refuses by mistake must still load (through the Python reader) with the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import hf_history
from test_hf_duckdb import assert_only_bad_rejected, assert_same_as_python

import stabstat.ingest.sources.hf as hf_mod
from stabstat.ingest import ingest
from stabstat.ingest.sources.hf import read_hf_run
from stabstat.store import Store


def _no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the Python fallback fail the test: every run must load through DuckDB."""
    def no_fallback(run: Any) -> None:
        raise AssertionError(f"{run.source}: fell back to the Python reader")

    monkeypatch.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, fallback=no_fallback))


def _count_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the runs the Python reader loads (the fallback still runs)."""
    seen: list[str] = []
    real = hf_mod.READER.fallback

    def counting(run: Any) -> None:
        seen.append(run.source)
        real(run)

    monkeypatch.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, fallback=counting))
    return seen


def test_folders_named_like_state_fields_do_not_replace_them(make_hf_run, tmp_path, monkeypatch):
    """Regression: with DuckDB's hive partitioning on (its default for key=value folders), a
    folder ``max_steps=500/`` replaced the file's max_steps by the folder's 500 (an integer,
    not JSON text), which changed the status and broke the facts row."""
    _no_fallback(monkeypatch)
    a = make_hf_run("hf/max_steps=500/epoch=9/seed=1", history=hf_history(3, final=False), max_steps=30)
    b = make_hf_run("hf/max_steps=500/epoch=9/seed=2", history=hf_history(3, final=False), max_steps=100)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 2, rep.summary()
        for d in (a, b):
            assert_same_as_python(store, d)
        statuses = dict(store.con.execute("SELECT seed, status FROM runs").fetchall())
    # a: global_step 30 reached max_steps 30 (the folder says 500); b: 30 of 100
    assert statuses == {1: "completed", 2: "interrupted"}


def _numbers_history() -> list[dict[str, Any]]:
    """Training entries with every JSON number shape the guard must let through."""
    return [
        {"epoch": 0, "grad_norm": 12, "learning_rate": 1e-05, "loss": 1, "step": 0},
        {"epoch": -0.0, "grad_norm": 1.5e-300, "learning_rate": 2.5e+3, "loss": -3.25, "step": 7},
        {"epoch": 1e400, "grad_norm": None, "learning_rate": float("nan"), "loss": 123456789012345678901234567890,
         "step": 12345678901},
        {"loss": None, "step": 13},  # a null loss is still a training entry (Python: "loss" in entry)
        {"epoch": 0.5, "loss": 0.5, "step": 14, "extra": {"loss": 1, "step": 2.5}},
        {"epoch": 0.5, "loss": 0.25, "step": 15, "num_input_tokens_seen": 640, "note": "text elsewhere is fine"},
        {"epoch": 0.5, "step": 16, "tag": {"loss": "nested"}},  # no top-level loss: not a training entry
        {"eval_loss": 0.4, "eval_runtime": 1.0, "loss": 0.9, "step": 16},  # an evaluation, not a step
    ]


def test_number_shapes_load_through_duckdb_as_the_python_reader_reads_them(make_hf_run, tmp_path, monkeypatch):
    """Integers, exponents, -0.0, huge integers, overflow to inf, NaN, nulls, nested keys named
    like training fields (numbers): DuckDB alone, the Python reader's rows."""
    _no_fallback(monkeypatch)
    hist = _numbers_history()
    hist[4] = {"epoch": 0.5, "loss": 0.5, "step": 14, "extra": {"loss": 1, "step": 2}}  # nested numbers pass
    hist[6] = {"epoch": 0.5, "step": 16, "tag": {"loss": 3}}
    d = make_hf_run("hf/seed=1", history=hist)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and rep.added, rep.summary()
        assert_same_as_python(store, d)
        steps = [r[0] for r in store.con.execute("SELECT step FROM steps ORDER BY step").fetchall()]
    assert steps == [0, 7, 13, 14, 15, 12345678901]


def test_guard_false_positive_loads_the_same_rows_through_python(make_hf_run, tmp_path, monkeypatch):
    """A nested object holding a string or a fraction under a training field's name trips the
    text guard (a substring test cannot tell nesting): the run is read by the Python reader, which
    accepts it, and loads the same rows; the other runs of the batch stay on DuckDB."""
    seen = _count_fallbacks(monkeypatch)
    odd = make_hf_run("hf/seed=1", history=_numbers_history())
    plain = [make_hf_run(f"hf/seed={s}") for s in (2, 3)]
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 3, rep.summary()
        for d in (odd, *plain):
            assert_same_as_python(store, d)
    assert str(odd) in seen and not {str(d) for d in plain} & set(seen)


_BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"epoch": "1"}, r"log_history\[1\]\.epoch: expected a number, got \"1\""),
    ({"learning_rate": True}, r"log_history\[1\]\.learning_rate: expected a number, got true"),
    ({"grad_norm": [1.0]}, r"log_history\[1\]\.grad_norm: expected a number, got \[1\.0\]"),
    ({"grad_norm": {"total": 1.0}}, r"log_history\[1\]\.grad_norm: expected a number"),
    ({"loss": False}, r"log_history\[1\]\.loss: expected a number, got false"),
    ({"step": 2.0}, r"log_history\[1\]\.step: expected a non-negative integer, got 2\.0"),
    ({"step": 1e3}, r"log_history\[1\]\.step: expected a non-negative integer, got 1000\.0"),
    ({"step": None}, r"log_history\[1\]\.step: expected a non-negative integer, got null"),
    ({"step": float("nan")}, r"log_history\[1\]\.step: expected a non-negative integer, got NaN"),
    ({"step": "20"}, r"log_history\[1\]\.step: expected a non-negative integer, got \"20\""),
    ({"step": -20}, r"log_history\[1\]\.step: expected a non-negative integer, got -20"),
    ({"step": False}, r"log_history\[1\]\.step: expected a non-negative integer, got false"),
]


@pytest.mark.parametrize(("change", "message"), _BAD_FIELDS, ids=[json.dumps(c) for c, _ in _BAD_FIELDS])
def test_each_bad_training_field_rejected_in_one_line_while_good_runs_load(make_hf_run, tmp_path, change, message):
    good = [make_hf_run(f"hf/seed={s}") for s in (1, 2, 3)]
    hist = hf_history(3)
    hist[1] = {**hist[1], **change}  # hist[1] is the second training entry (step 20)
    assert "loss" in hist[1] and "eval_runtime" not in hist[1]
    bad = make_hf_run("hf/seed=9", history=hist, global_step=30)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert_only_bad_rejected(rep, good, bad / "trainer_state.json", message)
        assert store.con.execute("SELECT count(DISTINCT run_id) FROM steps").fetchall() == [(3,)]
        for d in good:
            assert_same_as_python(store, d)


def test_training_entry_without_step_is_rejected(make_hf_run, tmp_path):
    hist = hf_history(2)
    del hist[0]["step"]
    bad = make_hf_run("hf/seed=9", history=hist)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
    assert len(rep.rejected) == 1 and rep.added == []
    assert re.search(r"log_history\[0\]\.step: expected a non-negative integer, got null", str(rep.rejected[0]))
    assert str(bad / "trainer_state.json") in str(rep.rejected[0])


def _ingest_seeing_max_bytes(store: Store, root: Path) -> tuple[Any, list[int]]:
    """``ingest(store, root)`` with every ``$max_bytes`` parameter a statement receives recorded."""
    seen: list[int] = []

    class Spy:
        def __init__(self, con: Any) -> None:
            self._con = con

        def execute(self, sql: str, params: Any = None) -> Any:
            if isinstance(params, dict) and "max_bytes" in params:
                seen.append(params["max_bytes"])
            return self._con.execute(sql, params) if params is not None else self._con.execute(sql)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

    real = store.con
    store.con = Spy(real)  # type: ignore[assignment]
    try:
        return ingest(store, root), seen
    finally:
        store.con = real


def test_object_size_fits_the_batch(make_hf_run, tmp_path, monkeypatch):
    """``$max_bytes`` is twice the batch's largest state file, at least DuckDB's 16 MiB default
    (a 1 GiB limit for every batch cost ~0.2 s per 300 files: DuckDB sizes its buffers by it).
    Only the general path calls ``read_json`` (the typed path of plain files reads their text
    with ``read_text``, which has no object size): every run is sent there."""
    import stabstat.store.load as load_mod
    from stabstat.ingest.sources import hf_typed

    monkeypatch.setattr(hf_typed, "plain_runs", lambda scan: (set(), []))

    small = make_hf_run("hf/seed=1")
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep, seen = _ingest_seeing_max_bytes(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 1
    size = (small / "trainer_state.json").stat().st_size
    assert size < 2**23 and seen and set(seen) == {2**24}
    assert load_mod._DUCKDB_JSON_OBJECT == 2**24
    # a large file raises the limit to twice its size
    hist = [{"epoch": s / 1000, "grad_norm": 1.0, "learning_rate": 1e-5, "loss": 0.5, "step": s}
            for s in range(1, 150_001)]
    big = make_hf_run("hf2/big", history=hist)
    big_size = (big / "trainer_state.json").stat().st_size
    assert big_size > 2**23
    with Store.open(tmp_path / "y.duckdb", read_only=False) as store:
        rep, seen = _ingest_seeing_max_bytes(store, tmp_path / "hf2")
        assert rep.ok and store.con.execute("SELECT count(*) FROM steps").fetchall() == [(150_000,)]
    assert seen and set(seen) == {2 * big_size}


def _count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch transaction tried (committed or rolled back)."""
    from stabstat.ingest import batch as batch_mod

    sizes: list[int] = []
    real = batch_mod._Ingest._try_load

    def counting(self: Any, runs: list[Any]) -> Any:
        sizes.append(len(runs))
        return real(self, runs)

    monkeypatch.setattr(batch_mod._Ingest, "_try_load", counting)
    return sizes


def test_one_corrupt_run_costs_a_few_transactions_not_one_per_run(make_hf_run, tmp_path, monkeypatch):
    """A batch of 25 with one corrupt file: halves are retried (13 | 12, then the failing half's
    halves, ...), not 25 single-run transactions; the 24 good runs load, the bad one is
    rejected in one line."""
    sizes = _count_transactions(monkeypatch)
    good = [make_hf_run(f"hf/seed={s}", history=hf_history(3)) for s in range(24)]
    hist = hf_history(3)
    hist[0] = {**hist[0], "loss": "high"}
    bad = make_hf_run("hf/seed=99", history=hist)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf", batch_runs=25)
        assert sorted(rep.added) == sorted(read_hf_run(d).run_id for d in good)
        assert [r.source for r in rep.rejected] == [str(bad)]
        assert "log_history[0].loss: expected a number" in str(rep.rejected[0])
        assert store.con.execute("SELECT count(*), count(DISTINCT run_id) FROM steps").fetchall() == [(72, 24)]
    assert sizes[0] == 25 and len(sizes) <= 12, sizes  # run by run would be 1 + 25


def test_every_run_corrupt_reads_each_at_most_three_times(make_hf_run, tmp_path, monkeypatch):
    """When both halves fail, bad runs are many: the halves go run by run (no deeper halving),
    so each file is tried at most three times (batch, half, alone)."""
    sizes = _count_transactions(monkeypatch)
    for s in range(8):
        hist = hf_history(3)
        hist[1] = {**hist[1], "step": -1}
        make_hf_run(f"hf/seed={s}", history=hist, global_step=30)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf", batch_runs=8)
        assert rep.added == [] and len(rep.rejected) == 8
        assert all("log_history[1].step: expected a non-negative integer" in str(r) for r in rep.rejected)
    assert sorted(sizes, reverse=True) == [8, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1], sizes



def test_insertion_order_is_set_inside_and_put_back_without_hiding_a_failure(tmp_path):
    """``insertion_order`` (a JSON reader's SELECTs keep the order: a scan of staged rows is
    then appended batch by batch, not in a partly filled row group per thread) puts back the
    setting the ingest chose, after an error too; inside a transaction a failed statement
    blocks the restore until ROLLBACK, and the failure itself is what propagates."""
    import duckdb

    from stabstat.store.load import insertion_order

    con = duckdb.connect(str(tmp_path / "x.duckdb"))

    def current() -> bool:
        return bool(con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0])

    for before in (False, True):
        con.execute(f"SET preserve_insertion_order = {str(before).lower()}")
        for keep in (False, True):
            with insertion_order(con, keep=keep):
                assert current() is keep
            assert current() is before
        with pytest.raises(duckdb.CatalogException), insertion_order(con, keep=True):
            con.execute("SELECT * FROM no_such_table")
        assert current() is before
    con.execute("CREATE TABLE t (x INTEGER CHECK (x > 0))")
    con.execute("BEGIN")
    with pytest.raises(duckdb.ConstraintException), insertion_order(con, keep=False):
        con.execute("INSERT INTO t VALUES (-1)")
    con.execute("ROLLBACK")


def test_a_failed_batch_leaves_the_ingest_setting(make_hf_run, tmp_path, monkeypatch):
    """Every batch transaction starts with the ingest's insertion order, also after a batch
    failed inside a JSON reader's ordered insert; the setting before the ingest comes back."""
    import stabstat.ingest.batch as batch_mod
    import stabstat.store.load as load_mod

    for s in range(4):
        make_hf_run(f"hf/seed={s}", history=hf_history(3))
    seen: list[bool] = []
    real_try, real_insert = batch_mod._Ingest._try_load, load_mod.insert_columns
    failed = []

    def try_load(self: Any, runs: Any) -> Any:
        seen.append(bool(self.store.con.execute(
            "SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]))
        return real_try(self, runs)

    def insert_columns(store: Any, table: str, *args: Any) -> None:  # the batch's ingests log: after the
        if table == "ingests" and not failed:  # ordered inserts, fail the first batch's once
            failed.append(True)
            store.con.execute("SET preserve_insertion_order = true")  # as if left by a failed insert
            store.con.execute("SELECT error('boom')")
        real_insert(store, table, *args)

    monkeypatch.setattr(batch_mod._Ingest, "_try_load", try_load)
    monkeypatch.setattr(load_mod, "insert_columns", insert_columns)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 4
        assert store.con.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]
    assert failed and len(seen) > 1 and not any(seen), seen
