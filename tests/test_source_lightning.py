"""Lightning CSVLogger runs (stabstat.ingest.sources.lightning), written by Lightning itself:
the logger alone, a real ``Trainer.fit`` (sparse rows, ``*_step``/``*_epoch``), plus the
older column order, a CSV without training loss, damaged files and unsafe YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stabstat.errors import InputFormatError
from stabstat.ingest.discover import walk
from stabstat.ingest.source import PrepareOptions, Reject
from stabstat.ingest.sources.lightning import LightningSource, read_hparams_yaml, read_lightning_run
from stabstat.ingest.tags import parse_map

loggers = pytest.importorskip("pytorch_lightning.loggers")


def test_csvlogger_values_merge_by_step(tmp_path):
    logger = loggers.CSVLogger(str(tmp_path / "lr=0.01"), name="exp")
    logger.log_hyperparams({"lr": 0.01, "seed": 3, "model": "tiny", "ns": argparse.Namespace(depth=2)})
    given_train = [(0, 0.75, 0.01), (1, 0.5, 0.005), (2, 0.25, 0.0025)]
    for step, loss, lr in given_train:
        logger.log_metrics({"train_loss_step": loss, "epoch": 0}, step=step)
        logger.log_metrics({"lr-Adam": lr}, step=step)  # LearningRateMonitor: its own row, no epoch
    logger.log_metrics({"val_acc": 0.625, "val_loss": 0.375, "epoch": 0}, step=2)
    logger.log_metrics({"train_loss_epoch": 0.5, "train_acc": 0.5, "epoch": 0}, step=2)
    logger.log_metrics({"test_acc": 0.6875, "epoch": 1}, step=3)
    logger.finalize("success")
    run = tmp_path / "lr=0.01" / "exp" / "version_0"
    assert "!!python/object:argparse.Namespace" in (run / "hparams.yaml").read_text()

    r = read_lightning_run(run, root=tmp_path, params={"seed": 5})
    assert r.status == "completed" and r.error is None and r.source_format == "lightning"
    assert r.run_id.startswith("lr=0.01_exp_version_0-")
    assert [(s["step"], s["loss"], s["lr"], s["epoch"], s["grad_norm"], s["wall_time"]) for s in r.rows("steps")] == [
        (step, loss, lr, 0.0, None, None) for step, loss, lr in given_train]
    assert [(e["step"], e["split"], e["metric"], e["value"]) for e in r.rows("evals")] == [
        (2, "train", "acc", 0.5), (2, "train", "loss", 0.5), (2, "val", "acc", 0.625), (2, "val", "loss", 0.375),
        (3, "test", "acc", 0.6875)]
    assert r.factors == {"lr": 0.01, "seed": 5, "model": "tiny"}  # --param over hparams.yaml
    assert r.config["ns"] == {"depth": 2}
    assert r.task["metrics"] == ["acc", "loss"]
    assert any("argparse.Namespace" in n and "not executed" in n for n in r.notes)


def test_trainer_fit_sparse_rows(tmp_path):
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("pytorch_lightning")
    logged: dict[int, float] = {}

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, _i):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            logged[self.global_step] = loss.item()
            return loss

        def validation_step(self, batch, _i):
            x, y = batch
            self.log("val_acc", (self.layer(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(max_epochs=2, logger=loggers.CSVLogger(str(tmp_path), name="fit"), log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         accelerator="cpu")
    trainer.fit(Tiny(), loader, loader)
    run = tmp_path / "fit" / "version_0"
    r = read_lightning_run(run)
    steps = r.rows("steps")
    assert len(steps) == 8 and all(s["loss"] == pytest.approx(logged[s["step"]], rel=1e-6) for s in steps)
    assert [s["epoch"] for s in steps] == [0.0] * 4 + [1.0] * 4
    val = [(e["step"], e["metric"]) for e in r.rows("evals") if e["split"] == "val"]
    assert val == [(3, "acc"), (7, "acc")]
    assert [(e["step"], e["metric"]) for e in r.rows("evals") if e["split"] == "train"] == [(3, "loss"), (7, "loss")]
    assert r.factors == {"lr": 0.1}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


def test_old_column_order_and_no_training_loss(tmp_path):
    old = write(tmp_path / "old" / "metrics.csv", "train_loss,val_acc,epoch,step\n0.5,,0,9\n,0.75,0,9\n0.25,,1,19\n")
    r = read_lightning_run(old)
    assert [(s["step"], s["loss"], s["epoch"]) for s in r.rows("steps")] == [(9, 0.5, 0.0), (19, 0.25, 1.0)]
    assert [(e["step"], e["metric"], e["value"]) for e in r.rows("evals")] == [(9, "acc", 0.75)]
    evals_only = write(tmp_path / "evals" / "metrics.csv", "epoch,step,val_acc,val_f1\n0,10,0.5,0.25\n1,20,0.75,0.5\n")
    r = read_lightning_run(evals_only)
    assert r.rows("steps") == [] and r.status == "completed"
    assert [(e["step"], e["metric"], e["value"]) for e in r.rows("evals")] == [
        (10, "acc", 0.5), (10, "f1", 0.25), (20, "acc", 0.75), (20, "f1", 0.5)]


def test_custom_map_and_nan_loss(tmp_path):
    d = write(tmp_path / "r" / "metrics.csv", "step,my_loss,score\n1,0.5,\n2,nan,\n2,,0.875\n")
    r = read_lightning_run(d, tag_map=parse_map(["my_loss=steps/loss", "score=dev/accuracy"]))
    assert r.status == "diverged"
    assert [e["split"] + "/" + e["metric"] for e in r.rows("evals")] == ["dev/accuracy"]


def test_ragged_rows(tmp_path):
    mid = write(tmp_path / "mid" / "metrics.csv", "epoch,step,train_loss\n0,1,0.5\n0,2\n0,3,0.25\n")
    with pytest.raises(InputFormatError, match=r"metrics\.csv: line 3: 2 cells, the header has 3") as exc:
        read_lightning_run(mid)
    assert "\n" not in str(exc.value)
    cut = write(tmp_path / "cut" / "metrics.csv", "epoch,step,train_loss\n0,1,0.5\n0,2,0.25\n0,3")
    r = read_lightning_run(cut)
    assert r.status == "interrupted" and "cut mid-write" in r.error
    assert [s["step"] for s in r.rows("steps")] == [1, 2]
    bad = write(tmp_path / "bad" / "metrics.csv", "step,train_loss\n1,abc\n")
    with pytest.raises(InputFormatError, match=r"line 2: column 'train_loss': expected a number, got 'abc'"):
        read_lightning_run(bad)
    with pytest.raises(Reject, match="no 'step' column"):
        LightningSource().prepare(write(tmp_path / "nostep" / "metrics.csv", "a,b\n1,2\n"), PrepareOptions())


def test_yaml_python_tags_never_execute(tmp_path):
    marker = tmp_path / "pwned"
    hp = tmp_path / "hparams.yaml"
    hp.write_text(
        f"lr: 0.1\nrun: !!python/object/apply:os.system ['touch {marker}']\n"
        "tup: !!python/tuple [1, 2]\nfn: !!python/name:os.getcwd ''\nlocal: !mytag 5\n")
    data, notes = read_hparams_yaml(hp)
    assert not marker.exists()
    assert data["lr"] == 0.1 and data["tup"] == [1, 2] and data["local"] == "5"
    assert data["run"] == [f"touch {marker}"] and data["fn"] == ""
    assert len(notes) == 4 and all("not executed" in n for n in notes)
    hp.write_text("lr: [0.1\n")
    with pytest.raises(InputFormatError, match=r"hparams\.yaml: malformed YAML at line \d+"):
        read_hparams_yaml(hp)


def test_adapter_detects_and_locates(tmp_path):
    src = LightningSource()
    a = write(tmp_path / "logs" / "version_0" / "metrics.csv", "epoch,step,train_loss\n0,1,0.5\n")
    write(tmp_path / "logs" / "version_1" / "metrics.csv", "epoch,step,train_loss\n0,1,0.25\n")
    write(tmp_path / "other" / "metrics.csv", "name,score\nx,1\n")  # not a Lightning file
    found = [d.relative_to(tmp_path).as_posix() for _, d in walk([tmp_path], [src], expected="x")]
    assert found == ["logs/version_0", "logs/version_1"]
    assert src.locate(a / "metrics.csv") == a and src.locate(a) is None
    ri = src.prepare(a, PrepareOptions(params={"seed": 1}))
    assert ri.source_format == "lightning" and ri.factors == {"seed": 1} and ri.tables["steps"].rows == 1
    assert ri.run_json["schema_version"] == 1 and ri.tables["evals"].columns["run_id"] == []


def test_ingest_into_the_store(tmp_path):
    from stabstat.ingest import ingest
    from stabstat.store import Store

    write(tmp_path / "logs" / "seed=1" / "metrics.csv", "epoch,step,train_loss,val_acc\n0,1,0.5,\n0,1,,0.75\n")
    write(tmp_path / "logs" / "seed=2" / "metrics.csv", "epoch,step,val_acc\n0,1,0.625\n")  # no training loss
    write(tmp_path / "logs" / "seed=3" / "metrics.csv", "epoch,step,val_acc\n0,1\n0,2,0.5\n")  # ragged
    write(tmp_path / "logs" / "seed=4" / "version_0" / "hparams.yaml", "lr: 0.1\n")  # stopped before a save
    rejected = []
    with Store.open(tmp_path / "db.duckdb", read_only=False) as store:
        ingest(store, [tmp_path / "logs"], fmt="lightning", on_rejected=rejected.append)
        runs = store.con.execute("SELECT seed, status FROM runs ORDER BY seed").fetchall()
        evals = store.con.execute(
            "SELECT r.seed, e.split, e.metric, e.value FROM evals e JOIN runs r USING (run_id) ORDER BY 1").fetchall()
        steps = store.con.execute("SELECT step, loss FROM steps").fetchall()
    assert runs == [(1, "completed"), (2, "completed"), (4, "failed")]
    assert evals == [(1, "val", "acc", 0.75), (2, "val", "acc", 0.625)]
    assert steps == [(1, 0.5)]
    assert len(rejected) == 1 and "seed=3" in str(rejected[0]) and "line 2: 2 cells" in str(rejected[0])
