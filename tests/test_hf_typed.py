"""The typed HF path (issue 18, fourth pass: stabstat.ingest.sources.hf_typed).

Plain state files are read with ``json_transform`` into typed entries after a scan of their
raw text; every other file goes through the general JSON-text path, and a file either path
refuses goes to the Python reader. Whatever the path, the stored rows, status, task and
environment must equal the Python reader's (:func:`assert_same_as_python`), a file the Python
reader refuses must be refused with its one-line message, and the tests check which path each
run took, so a guard that stops tripping (or trips on every file) fails here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import hf_history
from test_hf_duckdb import (
    assert_ingested_as_python,
    assert_only_bad_rejected,
    assert_same_as_python,
)

import stabstat.ingest.sources.hf as hf_mod
from stabstat.ingest import ingest
from stabstat.ingest.runinfo import make_run_id
from stabstat.ingest.sources import hf_typed
from stabstat.ingest.sources.hf import read_hf_run
from stabstat.store import Store


def _paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Record, per run_id, the path it took: ``typed``, ``general`` (the scan refused a file),
    ``python`` (DuckDB's SQL failed for it: the Python reader read or rejected it)."""
    seen: dict[str, set[str]] = {"typed": set(), "general": set(), "python": set()}
    real_plain = hf_typed.plain_runs
    batch_ids: list[dict[int, str]] = []

    def plain_runs(scan: list[tuple[int, bool, list[str]]]) -> tuple[set[int], list[str]]:
        fast, keys = real_plain(scan)
        ids = batch_ids[-1]
        for r, _, _ in scan:
            seen["typed" if r in fast else "general"].add(ids[r])
        return fast, keys

    real_stage = hf_typed.stage

    def stage(con: Any, params: dict[str, Any]) -> None:
        batch_ids.append(dict(zip(params["r"], params["runs"], strict=True)))
        real_stage(con, params)

    real_fallback = hf_mod.READER.fallback

    def fallback(run: Any) -> None:
        seen["python"].add(run.run_id)
        real_fallback(run)

    monkeypatch.setattr(hf_typed, "plain_runs", plain_runs)
    monkeypatch.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, stage=stage, fallback=fallback))
    return seen


def _rid(d: Path) -> str:
    return make_run_id(d)


def _plain_history() -> list[dict[str, Any]]:
    """Every shape the typed path reads itself: a step logged twice in one file (the later entry
    wins), numbers of every JSON shape, NaN/inf (an inf loss: diverged), an evaluation with a
    string, a list and a NaN metric (skipped, skipped, null), an entry with neither loss nor an
    evaluation key (ignored), nested objects holding numbers, a key with a quote and a space."""
    return [
        {"epoch": 0, "grad_norm": 12, "learning_rate": 1e-05, "loss": 1, "step": 0},
        {"epoch": -0.0, "grad_norm": 1.5e-300, "learning_rate": 2.5e+3, "loss": -3.25, "step": 7},
        {"epoch": 0.1, "grad_norm": None, "learning_rate": float("nan"), "loss": 0.5, "step": 7},
        {"epoch": 1e400, "learning_rate": float("-inf"), "loss": 123456789012345678901234567890, "step": 12345678901},
        {"epoch": 0.5, "loss": 0.5, "step": 14, "extra": {"loss": 1, "step": 2}},
        {"epoch": 0.5, "step": 15, "note": "no loss: not a training entry"},
        {"epoch": 0.5, "eval_accuracy": 0.7, "eval_it's a metric": 3, "eval_note": "x", "eval_confusion": [[1, 2]],
         "eval_f1": float("nan"), "eval_big": 1e400, "eval_runtime": 1.0, "eval_samples_per_second": 3.0, "step": 14},
        {"epoch": 0.6, "eval_accuracy": 0.75, "step": 14},  # the same step evaluated again: later wins
        {"epoch": 0.6, "eval_runtime": 1.0, "loss": 0.9, "step": 16},  # an evaluation, not a step
        {"epoch": 0.7, "grad_norm": 1.0, "learning_rate": 1e-5, "loss": float("inf"), "step": 20},
        {"step": 20, "train_runtime": 3.0, "train_loss": 0.5, "loss": 0.1},  # the summary, even with a loss
    ]


def test_plain_files_load_typed_with_the_python_readers_rows(make_hf_run, tmp_path, monkeypatch):
    paths = _paths(monkeypatch)
    odd = make_hf_run("hf/seed=1", history=_plain_history(), max_steps=100)
    ckpt = make_hf_run("hf/seed=2", history=hf_history(6), checkpoints=(20, 40), max_steps=100)
    older = json.loads((ckpt / "checkpoint-20" / "trainer_state.json").read_text())
    older["log_history"][1]["loss"] = 9.0  # an older checkpoint disagrees: the newest file wins
    (ckpt / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(older))
    empty = make_hf_run("hf/seed=3", history=[], global_step=0, max_steps=10)
    plain = make_hf_run("hf/seed=4")
    # a checkpoint with the run folder's own global_step: the own file wins the tie
    tie = make_hf_run("hf/seed=5", history=hf_history(4, final=False), checkpoints=(40,))
    tied = json.loads((tie / "checkpoint-40" / "trainer_state.json").read_text())
    next(e for e in tied["log_history"] if e["step"] == 40 and "grad_norm" in e)["loss"] = 7.0
    (tie / "checkpoint-40" / "trainer_state.json").write_text(json.dumps(tied))
    runs = (odd, ckpt, empty, plain, tie)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == len(runs), rep.summary()
        assert_ingested_as_python(store, runs)
        temps = store.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        assert temps == []
    assert paths["typed"] == {_rid(d) for d in runs} and not paths["general"] and not paths["python"]
    ref = read_hf_run(odd)
    assert ref.run_json["status"] == "diverged"
    assert [r["step"] for r in ref.records("steps")] == [0, 7, 14, 20, 12345678901]
    assert {r["metric"] for r in ref.records("evals")} == {"accuracy", "it's a metric", "f1", "big"}
    assert 7.0 not in [r["loss"] for r in read_hf_run(tie).records("steps")]


#: One change to an otherwise plain file -> whether the Python reader accepts it. Each trips
#: one guard of the scan: the run goes through the general path (and to Python when that
#: path's SQL refuses it), the plain runs of the same batch stay typed.
_NOT_PLAIN: list[tuple[str, dict[str, Any], bool]] = [
    ("null loss", {"loss": None}, True),
    ("string loss", {"loss": "0.5"}, False),
    ("boolean epoch", {"epoch": True}, False),
    ("string lr", {"learning_rate": "1e-5"}, False),
    ("list grad_norm", {"grad_norm": [1.0]}, False),
    ("fractional step", {"step": 20.0}, False),
    ("exponent step", {"step": 2e1}, False),
    ("negative step", {"step": -20}, False),
    ("string step", {"step": "20"}, False),
    ("null eval value", {"eval_accuracy": None, "eval_runtime": 1.0}, True),
    ("null train_runtime", {"train_runtime": None}, True),
    ("other evaluation prefix", {"test_accuracy": 0.5, "test_runtime": 1.0}, True),
    ("keys differing in case", {"eval_Acc": 0.5, "eval_acc": 0.6, "eval_runtime": 1.0}, True),
    ("an escaped key (a backslash)", {"eval_caf\u00e9": 0.5, "eval_runtime": 1.0}, True),
    ("nested string under a training key", {"extra": {"loss": "nested"}}, True),
]


@pytest.mark.parametrize(("change", "accepted"), [(c, a) for _, c, a in _NOT_PLAIN], ids=[n for n, _, _ in _NOT_PLAIN])
def test_each_guard_sends_only_its_run_off_the_typed_path(make_hf_run, tmp_path, monkeypatch, change, accepted):
    paths = _paths(monkeypatch)
    good = [make_hf_run(f"hf/seed={s}") for s in (1, 2)]
    hist = hf_history(3)
    hist[1] = {**hist[1], **change}  # hist[1] is the second training entry (step 20)
    odd = make_hf_run("hf/seed=9", history=hist, global_step=30)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        for d in good:
            assert_same_as_python(store, d)
        if accepted:
            assert rep.ok and len(rep.added) == 3, rep.summary()
            assert_same_as_python(store, odd)
        else:
            with pytest.raises(Exception) as err:  # the Python reader's own message
                read_hf_run(odd)
            assert [r.source for r in rep.rejected] == [str(odd)]
            line = str(rep.rejected[0])
            assert "\n" not in line and str(err.value) in line and "log_history[1]." in line
    assert {_rid(d) for d in good} <= paths["typed"]
    assert _rid(odd) in paths["general"] and _rid(odd) not in paths["typed"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"log_history": [5]}), r"log_history\[0\]: expected an object"),
        (json.dumps({"log_history": [{"loss": 0.5, "step": 1}, None]}), r"log_history\[1\]: expected an object"),
        (json.dumps({"log_history": [{"eval_acc": True, "eval_runtime": 1, "step": 3}]}),
         r"log_history\[0\]\.eval_acc: expected a number"),
        (json.dumps({"log_history": [{"loss": 0.5}]}), r"log_history\[0\]\.step: expected a non-negative integer"),
        (json.dumps({"global_step": 3}), "log_history: missing or not a list"),
        (json.dumps([{"log_history": []}]), "log_history: missing or not a list"),
        ('{"log_history": []}\n{"log_history": []}', "malformed JSON at line 2 column 1"),
        ("", "malformed JSON at line 1 column 1"),
    ],
)
def test_files_the_scan_passes_but_python_refuses_are_rejected_in_its_words(make_hf_run, tmp_path, monkeypatch,
                                                                             content, message):
    """These pass every text guard (the scan calls them plain), so the typed SQL itself must
    refuse them: the run is then read by the Python reader, whose one-line message names the
    file and entry, while the good runs of the batch load typed."""
    paths = _paths(monkeypatch)
    good = [make_hf_run(f"hf/seed={s}") for s in (1, 2, 3)]
    bad = tmp_path / "hf" / "seed=9"
    bad.mkdir(parents=True)
    (bad / "trainer_state.json").write_text(content)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert_only_bad_rejected(rep, good, bad / "trainer_state.json", message)
        assert [r.source for r in rep.rejected] == [str(bad)]
        for d in good:
            assert_same_as_python(store, d)
    assert {_rid(d) for d in good} <= paths["typed"]


def test_an_entry_with_none_of_the_read_keys_loads_through_python(make_hf_run, tmp_path, monkeypatch):
    """``{}`` reads like a non-object entry in a typed struct: the typed SQL refuses it and the
    Python reader, which ignores an empty entry, loads the run with the same rows."""
    paths = _paths(monkeypatch)
    hist = hf_history(3)
    hist.insert(1, {})
    d = make_hf_run("hf/seed=1", history=hist)
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and rep.added == [_rid(d)]
        assert_same_as_python(store, d)
    assert paths["python"] == {_rid(d)}


def test_runs_spelling_a_metric_in_different_cases_take_the_general_path(make_hf_run, tmp_path, monkeypatch):
    """A typed struct cannot hold ``eval_Acc`` and ``eval_acc``: when two runs of a batch spell
    a key differently, the batch goes through the general path, with the same rows."""
    paths = _paths(monkeypatch)
    runs = []
    for s, key in ((1, "eval_Acc"), (2, "eval_acc")):
        hist = hf_history(2)
        hist.insert(1, {"epoch": 0.1, key: 0.5, "eval_runtime": 1.0, "step": 10})
        runs.append(make_hf_run(f"hf/seed={s}", history=hist))
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 2
        for d in runs:
            assert_same_as_python(store, d)
    assert paths["general"] == {_rid(d) for d in runs} and not paths["typed"]


def test_plain_runs_skip_the_step_deduplication_only_when_their_steps_are_unique(make_hf_run, tmp_path):
    """``_hf_dup`` holds the runs with several state files or a step logged twice: only those go
    through the per-step GROUP BY; the rows are the Python reader's either way."""
    once = make_hf_run("hf/seed=1")
    hist = hf_history(3)
    hist.append({**hist[0], "loss": 0.123})  # step 10 logged again, later: wins
    twice = make_hf_run("hf/seed=2", history=hist)
    ckpt = make_hf_run("hf/seed=3", history=hf_history(4), checkpoints=(20,))
    dup: list[list[str]] = []
    real = hf_typed.stage

    def spy(con: Any, params: dict[str, Any]) -> None:
        real(con, params)
        ids = dict(zip(params["r"], params["runs"], strict=True))
        dup.append(sorted(ids[r] for (r,) in con.execute("SELECT r FROM _hf_dup").fetchall()))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_mod, "READER", dataclasses.replace(hf_mod.READER, stage=spy))
        with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
            rep = ingest(store, tmp_path / "hf")
            assert rep.ok and len(rep.added) == 3
            for d in (once, twice, ckpt):
                assert_same_as_python(store, d)
    assert dup == [sorted([_rid(twice), _rid(ckpt)])]


def test_a_statement_gets_exactly_the_parameters_it_names():
    """``$r`` (the run numbers) is a prefix of ``$runs``: each must reach only the statements
    that name it (DuckDB refuses a parameter a statement does not use)."""
    from stabstat.store.load import statement_params

    params = {"files": ["a"], "files0": ["a"], "runs": ["x"], "r": [1], "max_bytes": 2**24}
    assert set(statement_params("SELECT unnest($runs), unnest($files0)", params)) == {"runs", "files0"}
    assert set(statement_params("SELECT unnest($r), unnest($files)", params)) == {"r", "files"}
    assert statement_params("SELECT 1", params) == {}


def test_a_key_written_twice_keeps_its_first_value_on_every_path(make_hf_run, tmp_path, monkeypatch):
    """A hand-edited object holding a key twice (a loss, an evaluation metric, the state's
    ``global_step``) is read alike by the typed path, the general path and the Python reader:
    the first value counts, as DuckDB's reader reads it. (``read_json`` of the general path
    refuses a top-level key written twice: such a run is read by the Python reader.)"""
    paths = _paths(monkeypatch)
    runs = {}
    for seed, extra in ((1, None), (2, {"note": "back\\slash"}), (3, {})):  # typed, general, python
        hist = hf_history(3, final=False)
        if extra is not None:
            hist.insert(1, extra)
        d = make_hf_run(f"hf/seed={seed}", history=hist, max_steps=100)
        state = d / "trainer_state.json"
        text = json.dumps(json.loads(state.read_text()))
        text = text.replace('"loss": 0.7', '"loss": 0.7, "loss": 9.5', 1)
        text = text.replace('"eval_accuracy": ', '"eval_accuracy": 0.125, "eval_accuracy": ', 1)
        if seed != 2:  # 100 first: the run reached max_steps (the status says which value counted)
            text = text.replace('"global_step": ', '"global_step": 100, "global_step": ', 1)
        assert text.count('"loss": 9.5') == 1 and text.count('"eval_accuracy": 0.125') == 1
        state.write_text(text)
        runs[seed] = d
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "hf")
        assert rep.ok and len(rep.added) == 3, rep.summary()
        for d in runs.values():
            assert_same_as_python(store, d)
            rid = _rid(d)
            assert store.con.execute("SELECT count(*) FROM steps WHERE run_id = ? AND loss = 9.5", [rid]).fetchall() == [(0,)]
            assert store.con.execute("SELECT count(*) FROM evals WHERE run_id = ? AND value = 0.125",
                                     [rid]).fetchall() == [(1,)]
            status = store.con.execute("SELECT status FROM runs WHERE run_id = ?", [rid]).fetchall()
            assert status == [("interrupted" if d == runs[2] else "completed",)]
    assert paths["python"] == {_rid(runs[3])}
    assert _rid(runs[2]) in paths["general"] and _rid(runs[1]) in paths["typed"]


def test_hf_and_stabstat_runs_in_one_batch(make_run, make_hf_run, tmp_path):
    """One transaction holding both formats: the HF rows (staged, run_id looked up by run
    number) and the Parquet rows land side by side, each run's exactly."""
    import pyarrow.parquet as pq

    ours = [make_run(f"ours-{i}", out_dir=tmp_path / "all", config={"seed": i}) for i in range(2)]
    hf = [make_hf_run(f"all/hf/seed={s}", history=hf_history(4 + s)) for s in range(3)]
    with Store.open(tmp_path / "x.duckdb", read_only=False) as store:
        rep = ingest(store, tmp_path / "all")
        assert rep.ok and len(rep.added) == 5, rep.summary()
        for d in hf:
            assert_same_as_python(store, d)
        for d in ours:
            for table in ("steps", "evals"):
                got = store.con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [d.name]).fetchall()
                assert got == [(pq.read_metadata(d / f"{table}.parquet").num_rows,)]
