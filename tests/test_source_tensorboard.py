"""TensorBoard event files (stabstat.ingest.sources.tensorboard) and the shared tag rules
(stabstat.ingest.tags), on files written by the real writers: PyTorch's ``SummaryWriter``,
TensorBoard's own summary protos (tensor-encoded scalars, as TF2/Keras write them) and
Lightning's ``TensorBoardLogger``."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pytest

from stabstat.errors import InputFormatError
from stabstat.ingest.discover import walk
from stabstat.ingest.source import PrepareOptions
from stabstat.ingest.sources.tensorboard import TensorBoardSource, read_tensorboard_run
from stabstat.ingest.tags import Target, layer_depths, map_tag, parse_map, run_id_for
from stabstat.store import Store

pytest.importorskip("tensorboard")
tb_writer = pytest.importorskip("torch.utils.tensorboard")


def f32(x: float) -> float:
    """What TensorBoard stores for ``x`` (``simple_value`` is a float32)."""
    return float(np.float32(x))


# ------------------------------------------------------------------------------- tag rules


@pytest.mark.parametrize(("tag", "where"), [
    ("train/loss", "steps.loss"), ("train_loss", "steps.loss"), ("loss", "steps.loss"),
    ("Loss/train", "steps.loss"), ("train_loss_step", "steps.loss"),
    ("train/learning_rate", "steps.lr"), ("lr-AdamW", "steps.lr"), ("lr-Adam/pg1", "steps.lr"),
    ("lr-Adam/pg2", "evals:train/lr-Adam/pg2"), ("lr-Adam-momentum", "evals:train/lr-Adam-momentum"),
    ("train/grad_norm", "steps.grad_norm"), ("grad_2.0_norm_total", "steps.grad_norm"),
    ("epoch", "steps.epoch"), ("train/epoch", "steps.epoch"),
    ("eval/accuracy", "evals:eval/accuracy"), ("eval_loss", "evals:eval/loss"),
    ("val_acc", "evals:val/acc"), ("valid_f1", "evals:val/f1"), ("validation/loss", "evals:val/loss"),
    ("test_acc", "evals:test/acc"), ("test/acc", "evals:test/acc"), ("Accuracy/test", "evals:test/Accuracy"),
    ("val_acc_epoch", "evals:val/acc"), ("val_acc_step", "evals:val/acc_step"),
    ("train_loss_epoch", "evals:train/loss"), ("train_acc", "evals:train/acc"),
    ("train/train_runtime", "evals:train/train_runtime"), ("hp_metric", "evals:train/hp_metric"),
    ("grad_norm/encoder.layer.0", "layer_grads:encoder.layer.0"),
])
def test_tag_rules(tag, where):
    assert map_tag(tag).describe() == where


def test_custom_map_wins_and_is_checked():
    custom = parse_map(["acc=dev/accuracy", "my_loss=steps/loss", "a=b=c/d"])
    assert custom == {"acc": Target("evals", "accuracy", "dev"), "my_loss": Target("steps", "loss"),
                      "a=b": Target("evals", "d", "c")}
    assert map_tag("my_loss", custom).describe() == "steps.loss"
    with pytest.raises(InputFormatError, match="expected TAG=split/metric"):
        parse_map(["acc"])
    with pytest.raises(InputFormatError, match="steps/wall_time: expected one of steps/epoch"):
        parse_map(["t=steps/wall_time"])


def test_layer_depths_follow_the_contract():
    assert layer_depths(["classifier", "encoder.layer.1", "embeddings", "pooler", "encoder.layer.0", "zz"]) == {
        "embeddings": 0, "encoder.layer.0": 1, "encoder.layer.1": 2, "pooler": 3, "classifier": 4, "zz": 5}


def test_run_id_is_relative_to_the_root_and_stable(tmp_path):
    d = tmp_path / "sweep" / "lr=2e-5" / "version_0"
    d.mkdir(parents=True)
    rid = run_id_for(d, tmp_path / "sweep")
    assert rid.startswith("lr=2e-5_version_0-") and len(rid.rsplit("-", 1)[1]) == 8
    assert rid == run_id_for(d, tmp_path / "sweep") != run_id_for(tmp_path / "sweep" / "lr=2e-5", tmp_path)
    assert run_id_for(d).startswith("version_0-")


# ------------------------------------------------------------------------------- writers


def write_summarywriter_run(d: Path, *, steps: int = 20, start: int = 1) -> dict[str, list[tuple[int, float]]]:
    """A Hugging Face-style run written by PyTorch's SummaryWriter; returns what it was given."""
    given: dict[str, list[tuple[int, float]]] = {}

    def add(w, tag, value, step):
        w.add_scalar(tag, value, step)
        given.setdefault(tag, []).append((step, value))

    with tb_writer.SummaryWriter(str(d)) as w:
        for s in range(start, start + steps):
            add(w, "train/loss", 1.0 / s, s)
            add(w, "train/learning_rate", 2e-5 * (1 - s / 100), s)
            add(w, "train/grad_norm", 0.5 + s / 1000, s)
            add(w, "train/epoch", s / 10, s)
            if s % 5 == 0:
                add(w, "eval/accuracy", 0.5 + s / 100, s)
                add(w, "eval/loss", 0.7 - s / 100, s)
                add(w, "custom/thing", float(s), s)
        w.add_histogram("weights", np.arange(10.0), start)
        w.add_hparams({"lr": 2e-5, "seed": 3, "model": "bert", "bias_correction": False},
                      {"hparam/accuracy": 0.75})
    return given


def test_summarywriter_values_and_hparams(tmp_path):
    d = tmp_path / "task=rte" / "runs" / "Nov30_host"
    given = write_summarywriter_run(d)
    r = read_tensorboard_run(d, root=tmp_path, params={"seed": 4})
    assert r.status == "completed" and r.error is None and r.source_format == "tensorboard"
    assert r.run_id.startswith("task=rte_runs_Nov30_host-")
    steps = r.rows("steps")
    assert [s["step"] for s in steps] == [s for s, _ in given["train/loss"]]
    for row, (_, loss), (_, lr), (_, gn), (_, ep) in zip(
            steps, given["train/loss"], given["train/learning_rate"], given["train/grad_norm"],
            given["train/epoch"], strict=True):
        assert (row["loss"], row["lr"], row["grad_norm"], row["epoch"]) == (f32(loss), f32(lr), f32(gn), f32(ep))
        assert row["run_id"] == r.run_id and 0 <= row["wall_time"] < 60
    assert [s["wall_time"] for s in steps] == sorted(s["wall_time"] for s in steps)
    evals = {(e["step"], e["split"], e["metric"]): e["value"] for e in r.rows("evals")}
    expected = {(s, "eval", "accuracy"): f32(v) for s, v in given["eval/accuracy"]}
    expected |= {(s, "eval", "loss"): f32(v) for s, v in given["eval/loss"]}
    expected |= {(s, "train", "custom/thing"): f32(v) for s, v in given["custom/thing"]}  # an extra, kept
    expected[(0, "train", "hparam/accuracy")] = f32(0.75)  # add_hparams' metric (its own subfolder)
    assert evals == expected
    # factors: folder names < hparams plugin < --param
    assert r.factors == {"task": "rte", "lr": 2e-5, "seed": 4, "model": "bert", "bias_correction": False}
    assert r.task["metrics"] == ["accuracy", "loss"]
    assert r.environment["tags"]["train/loss"] == "steps.loss"
    assert any("weights" in n for n in r.notes)  # the histogram is named, not silently dropped
    assert r.started_at is not None and r.finished_at is not None and r.started_at <= r.finished_at
    assert "layer_grads" not in r.tables


def test_several_files_merge_by_step_newest_wins(tmp_path):
    d = tmp_path / "run"
    write_summarywriter_run(d, steps=10)
    with tb_writer.SummaryWriter(str(d)) as w:  # a resumed run rewrites steps 8..12
        for s in range(8, 13):
            w.add_scalar("train/loss", 10.0 + s, s)
    files = sorted(p.name for p in d.iterdir() if p.is_file())
    assert len(files) == 2
    r = read_tensorboard_run(d)
    losses = {row["step"]: row["loss"] for row in r.rows("steps")}
    assert sorted(losses) == list(range(1, 13))
    assert [losses[s] for s in range(8, 13)] == [10.0 + s for s in range(8, 13)]
    assert losses[7] == f32(1 / 7)


def test_tensor_encoded_scalars_as_tf2_writes_them(tmp_path):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    d = tmp_path / "keras"
    values = [0.25, 0.5, 0.125, math.nan]
    with tb_writer.SummaryWriter(str(d)) as w:
        for i, v in enumerate(values):
            pb = scalar_pb("epoch_loss", np.float32(v))
            if i:  # TF2 writes the plugin metadata with a tag's first value only
                value = summary_pb2.Summary.Value(tag="epoch_loss", tensor=pb.value[0].tensor)
                pb = summary_pb2.Summary(value=[value])
            w.file_writer.add_summary(pb, i + 1)
            w.file_writer.add_summary(scalar_pb("loss", np.float64(v)), i + 1)
    r = read_tensorboard_run(d)
    assert [row["loss"] for row in r.rows("steps")][:3] == values[:3]
    assert math.isnan(r.rows("steps")[3]["loss"])
    assert r.status == "diverged"
    extras = [(e["step"], e["value"]) for e in r.rows("evals") if e["metric"] == "epoch_loss"]
    assert extras == [(1, 0.25), (2, 0.5), (3, 0.125), (4, None)]  # evals.value is finite-only


def test_lightning_tensorboard_logger_with_python_tags(tmp_path):
    loggers = pytest.importorskip("pytorch_lightning.loggers")
    logger = loggers.TensorBoardLogger(str(tmp_path), name="lightning_logs")
    logger.log_hyperparams({"lr": 0.1, "seed": 7, "ns": argparse.Namespace(depth=2)})
    logger.log_metrics({"train_loss_step": 0.5, "lr-Adam": 0.1, "epoch": 0}, step=0)
    logger.log_metrics({"train_loss_step": 0.25, "lr-Adam": 0.05, "epoch": 0}, step=1)
    logger.log_metrics({"val_acc": 0.75, "val_loss": 0.375, "epoch": 0}, step=1)
    logger.finalize("success")
    run = tmp_path / "lightning_logs" / "version_0"
    assert "!!python/object" in (run / "hparams.yaml").read_text()
    found = walk([tmp_path], [TensorBoardSource()], expected="x")
    assert [d for _, d in found] == [run]
    r = read_tensorboard_run(run, root=tmp_path)
    assert [(s["step"], s["loss"], s["lr"], s["epoch"]) for s in r.rows("steps")] == [
        (0, 0.5, f32(0.1), 0.0), (1, 0.25, f32(0.05), 0.0)]
    evals = [(e["step"], e["split"], e["metric"], e["value"]) for e in r.rows("evals") if e["split"] == "val"]
    assert evals == [(1, "val", "acc", 0.75), (1, "val", "loss", 0.375)]
    assert r.factors["lr"] == 0.1 and r.factors["seed"] == 7
    assert r.config["ns"] == {"depth": 2}  # the Namespace read as plain data
    assert any("python/object:argparse.Namespace" in n and "not executed" in n for n in r.notes)


def test_keras_split_folders_and_nested_runs(tmp_path):
    d = tmp_path / "fit"
    for split, base in (("train", 0.5), ("validation", 0.75)):
        with tb_writer.SummaryWriter(str(d / split)) as w:
            for epoch in range(3):
                w.add_scalar("epoch_loss", base / (epoch + 1), epoch)
    src = TensorBoardSource()
    assert src.detect(d) == 2 and src.detect(d / "train") == 2
    assert [p for _, p in walk([tmp_path], [src], expected="x")] == [d]
    assert src.locate(_event_file(d / "validation")) == d
    r = read_tensorboard_run(d)
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in r.rows("evals")] == [
        (0, "train", "epoch_loss", 0.5), (0, "val", "epoch_loss", 0.75), (1, "train", "epoch_loss", 0.25),
        (1, "val", "epoch_loss", 0.375), (2, "train", "epoch_loss", f32(0.5 / 3)), (2, "val", "epoch_loss", 0.25)]
    with tb_writer.SummaryWriter(str(d)) as w:  # the folder gets its own events and a nested run
        w.add_scalar("loss", 1.0, 1)
    write_summarywriter_run(d / "other" / "deeper", steps=1)
    r = read_tensorboard_run(d)
    assert [s["loss"] for s in r.rows("steps")] == [1.0] and len(r.rows("evals")) == 6
    assert any("not read: event files in other/deeper" in n for n in r.notes)


def test_missing_extras_name_the_pip_install(tmp_path, monkeypatch):
    import sys

    from stabstat.errors import MissingExtraError
    from stabstat.ingest.sources.lightning import read_hparams_yaml

    d = tmp_path / "run"
    write_summarywriter_run(d, steps=1)
    (d / "hparams.yaml").write_text("lr: 0.1\n")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'stabstat\[tensorboard\]'"):
        read_tensorboard_run(d)
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'stabstat\[lightning\]'"):
        read_hparams_yaml(d / "hparams.yaml")


# ------------------------------------------------------------------------------- damage


def _event_file(d: Path) -> Path:
    return next(p for p in d.iterdir() if p.name.startswith("events.out.tfevents."))


def test_truncated_file_keeps_the_records_before_the_cut(tmp_path):
    d = tmp_path / "cut"
    write_summarywriter_run(d, steps=40)
    f = _event_file(d)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3 + 5])
    r = read_tensorboard_run(d)
    assert r.status == "interrupted"
    assert str(f) in r.error and "cut mid-record" in r.error and "\n" not in r.error
    steps = [s["step"] for s in r.rows("steps")]
    assert 0 < len(steps) < 40 and steps == list(range(1, len(steps) + 1))


def test_flipped_crc_byte_keeps_the_records_before_it(tmp_path):
    d = tmp_path / "crc"
    write_summarywriter_run(d, steps=40)
    f = _event_file(d)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    r = read_tensorboard_run(d)
    assert r.status == "interrupted" and "fails a CRC check" in r.error and str(f) in r.error
    assert 0 < len(r.rows("steps")) < 40


def test_no_scalars_is_a_failed_run_and_no_files_is_one_line(tmp_path):
    crashed = tmp_path / "crashed"
    tb_writer.SummaryWriter(str(crashed)).close()  # only the file header: crashed before logging
    r = read_tensorboard_run(crashed)
    assert r.status == "failed" and "no scalar values" in r.error
    assert r.rows("steps") == [] and r.rows("evals") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert TensorBoardSource().detect(empty) == 0
    with pytest.raises(InputFormatError, match=r"empty: no events\.out\.tfevents\.\* files here") as exc:
        read_tensorboard_run(empty)
    assert "\n" not in str(exc.value)


def test_adapter_rejects_in_one_line_and_other_runs_load(tmp_path):
    for trial in (1, 2):
        write_summarywriter_run(tmp_path / f"trial={trial}", steps=10)
    bad = tmp_path / "trial=3"
    write_summarywriter_run(bad, steps=10)
    f = _event_file(bad)
    f.write_bytes(f.read_bytes()[:200])  # cut inside the first records
    (tmp_path / "trial=4").mkdir()
    (tmp_path / "trial=4" / "hparams.yaml").write_text("lr: [1, 2\n")  # malformed beside events
    write_summarywriter_run(tmp_path / "trial=4", steps=3)

    from stabstat.ingest import ingest

    rejected = []
    with Store.open(tmp_path / "db.duckdb", read_only=False) as store:
        report = ingest(store, [tmp_path], fmt="tensorboard", on_rejected=rejected.append)
        rows = store.con.execute(
            "SELECT trial, status, source_format FROM runs ORDER BY trial").fetchall()
        n_steps = store.con.execute("SELECT count(*) FROM steps").fetchone()[0]
        n_evals = store.con.execute("SELECT count(*) FROM evals WHERE split = 'eval'").fetchone()[0]
    assert rows == [(1, "completed", "tensorboard"), (2, "completed", "tensorboard"),
                    (3, "interrupted", "tensorboard")]
    assert n_steps == 20 + len(read_tensorboard_run(bad).rows("steps")) and n_evals >= 8
    assert len(rejected) == 1 and "hparams.yaml" in str(rejected[0]) and "malformed YAML" in str(rejected[0])
    assert report is not None


def test_adapter_detects_layouts_and_locates_files(tmp_path):
    src = TensorBoardSource()
    for v in (0, 1):
        write_summarywriter_run(tmp_path / "lightning_logs" / f"version_{v}", steps=2)
    write_summarywriter_run(tmp_path / "out" / "runs" / "Nov30_host", steps=2)
    found = [d.relative_to(tmp_path).as_posix() for _, d in walk([tmp_path], [src], expected="x")]
    assert found == ["lightning_logs/version_0", "lightning_logs/version_1", "out/runs/Nov30_host"]
    run = tmp_path / "out" / "runs" / "Nov30_host"
    hp_file = next(p for p in run.rglob("events.out.tfevents.*") if p.parent != run)  # add_hparams' folder
    assert src.locate(hp_file) == run and src.locate(_event_file(run)) == run
    ri = src.prepare(run, PrepareOptions(params={"seed": 9}))
    assert ri.status == "completed" and ri.factors["seed"] == 9 and ri.tables["steps"].rows == 2
    assert ri.fingerprint == src.prepare(run, PrepareOptions(params={"seed": 9})).fingerprint
    assert ri.fingerprint != src.prepare(run, PrepareOptions(params={"seed": 8})).fingerprint
    os.utime(_event_file(run), ns=(1, 1))
    assert ri.fingerprint != src.prepare(run, PrepareOptions(params={"seed": 9})).fingerprint
