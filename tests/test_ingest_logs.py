"""Logs people already have, tried as a new user would (issue 12): folders written by the real
writers (a Lightning ``Trainer`` with ``TensorBoardLogger`` + ``CSVLogger``, ``CSVLogger`` alone,
``SummaryWriter``, the HF Trainer's TensorBoard callback, a paper's per-seed results table) ->
``stabstat ingest`` -> ``stabstat compare`` / ``report``; every ingested value checked against
what the writer was given. Also the wiring: ``--format`` from the registry, ``--map``,
``--param`` on every format, table options and their printed summary, the default split."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from stabstat.cli import cli
from stabstat.store import Store

pl_loggers = pytest.importorskip("pytorch_lightning.loggers")
tb_writer = pytest.importorskip("torch.utils.tensorboard")


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with Store.open(db) as store:
        return store.con.execute(sql).fetchall()


def f32(x: float) -> float:
    """What TensorBoard stores for ``x`` (``simple_value`` is a float32)."""
    return float(np.float32(x))


def no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


# ------------------------------------------------------------------ Lightning, both loggers


def _lightning_fit(root: Path, lr: float, seed: int, loggers: list[Any]) -> float:
    """Train a tiny model for 2 epochs with the real Trainer; returns the last logged val_acc."""
    import pytorch_lightning as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float, seed: int) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch: Any, _i: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, _i: int) -> None:
            x, y = batch
            self.log("val_acc", (self.layer(x).argmax(1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    pl.seed_everything(seed, verbose=False)
    g = torch.Generator().manual_seed(100 + seed)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=str(root), logger=loggers, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         accelerator="cpu")
    trainer.fit(Tiny(lr, seed), loader, loader)
    return float(trainer.callback_metrics["val_acc"].item())


@pytest.mark.slow
def test_lightning_logs_with_both_loggers_compare_and_report(tmp_path):
    pytest.importorskip("tensorboard")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    given: dict[tuple[float, int], float] = {}
    for lr in (0.05, 0.5):
        for seed in range(3):
            given[(lr, seed)] = _lightning_fit(tmp_path, lr, seed, [pl_loggers.TensorBoardLogger(str(tmp_path)),
                                                                  pl_loggers.CSVLogger(str(tmp_path))])
    logs = tmp_path / "lightning_logs"
    assert len(list(logs.glob("version_*/metrics.csv"))) == 6 and len(list(logs.glob("version_*/events.*"))) == 6
    db = tmp_path / "s.duckdb"

    r = invoke("ingest", logs, "--db", db)
    assert r.exit_code == 0, r.output
    no_traceback(r)
    # one Trainer, two loggers = every run written twice: each is ingested once, and the user is told
    assert r.stdout.startswith("6 ingested (6 new, 0 replaced), 0 unchanged, 0 rejected")
    assert "6 Lightning CSVLogger folder(s) repeat a TensorBoardLogger folder" in r.stderr
    got = rows(db, "SELECT r.lr, r.seed, r.source_format, e.final_value FROM runs r JOIN run_summary e USING (run_id) "
                   "WHERE e.split = 'val' AND e.metric = 'acc' ORDER BY 1, 2")
    assert [(lr, seed, fmt) for lr, seed, fmt, _ in got] == [(lr, s, "tensorboard") for lr in (0.05, 0.5) for s in range(3)]
    assert all(v == pytest.approx(given[(lr, seed)], rel=1e-6) for lr, seed, _, v in got)

    r = invoke("compare", "--by", "lr", "--db", db)
    assert r.exit_code == 0, r.output
    no_traceback(r)
    table = [line.split() for line in r.stdout.splitlines()]
    assert r.stdout.startswith("acc by lr") and table[3][:2] == ["0.0500", "3"] and table[4][:2] == ["0.5000", "3"]
    assert "metric: val/acc (final)" in r.stdout  # the default split is val, not the train extras

    page = tmp_path / "page.html"
    r = invoke("report", "--by", "lr", "--db", db, "--out", page)
    assert r.exit_code == 0, r.output
    no_traceback(r)
    assert page.stat().st_size > 10_000 and "<html" in page.read_text()[:2000].lower()

    r = invoke("ingest", logs, "--db", db)  # idempotent
    assert r.exit_code == 0 and r.stdout.startswith("0 ingested (0 new, 0 replaced), 6 unchanged, 0 rejected")


# ------------------------------------------------------------ Lightning CSVLogger, bad inputs


def test_csvlogger_folder_with_bad_runs_good_runs_kept(tmp_path):
    logs = tmp_path / "lightning_logs"
    given = {}
    for i, (lr, seed) in enumerate((lr, s) for lr in (0.01, 0.1) for s in (1, 2)):
        logger = pl_loggers.CSVLogger(str(tmp_path), name="lightning_logs", version=i)
        logger.log_hyperparams({})  # many real hparams.yaml files are {}: --param labels them
        losses = [1.0 / (step + 1 + seed) for step in range(4)]
        for step, loss in enumerate(losses):
            logger.log_metrics({"train_loss_step": loss, "epoch": 0}, step=step)
        given[i] = (lr, seed, losses, 0.5 + lr + seed / 100)
        logger.log_metrics({"val_acc": given[i][3], "epoch": 0}, step=3)
        logger.save()
        (logs / f"version_{i}" / "hparams.yaml").write_text(f"lr: {lr}\nseed: {seed}\n")
    bad = logs / "version_9"
    bad.mkdir()
    (bad / "metrics.csv").write_text("epoch,step,train_loss\n0,1,0.5\n0,2\n0,3,0.25\n")  # ragged row
    unsafe = logs / "version_8"
    unsafe.mkdir()
    (unsafe / "metrics.csv").write_text("epoch,step,val_acc\n0,1,0.5\n")
    (unsafe / "hparams.yaml").write_text("lr: 0.3\nseed: 1\nargs: !!python/object/apply:os.system ['touch pwned']\n")
    db = tmp_path / "s.duckdb"

    r = invoke("ingest", logs, "--db", db, "--param", "task=toy", "--progress")
    assert r.exit_code == 1, r.output
    no_traceback(r)
    problems = [line for line in r.stderr.splitlines() if "version_9" in line]
    assert len(problems) == 1 and "metrics.csv: line 3: 2 cells, the header has 3" in problems[0]
    assert "ingesting" in r.stderr  # the progress bar
    assert r.stdout.startswith("5 ingested (5 new, 0 replaced), 0 unchanged, 1 rejected")
    assert not (Path.cwd() / "pwned").exists()
    got = rows(db, "SELECT lr, seed, task, status, run_id FROM runs ORDER BY lr, seed")
    assert [g[:4] for g in got] == [(0.01, 1, "toy", "completed"), (0.01, 2, "toy", "completed"),
                                    (0.1, 1, "toy", "completed"), (0.1, 2, "toy", "completed"),
                                    (0.3, 1, "toy", "completed")]
    for i, (lr, seed, losses, acc) in given.items():
        run_id = next(g[4] for g in got if g[:2] == (lr, seed))
        assert run_id.startswith(f"version_{i}-")
        assert rows(db, f"SELECT step, loss FROM steps WHERE run_id = '{run_id}' ORDER BY step") == list(enumerate(losses))
        assert rows(db, f"SELECT split, metric, value FROM evals WHERE run_id = '{run_id}'") == [("val", "acc", acc)]
    r = invoke("compare", "--by", "lr", "--db", db, "--where", "lr < 0.2")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("acc by lr")


# ------------------------------------------------------------------- SummaryWriter folders


def _summarywriter_run(d: Path, *, lr: float, seed: int, steps: int = 6) -> dict[str, list[tuple[int, float]]]:
    rng = np.random.default_rng(seed)
    given: dict[str, list[tuple[int, float]]] = {"train/loss": [], "eval/accuracy": [], "custom/thing": []}
    with tb_writer.SummaryWriter(str(d)) as w:
        for step in range(1, steps + 1):
            given["train/loss"].append((step, float(rng.uniform(0.1, 1.0))))
            given["custom/thing"].append((step, float(step * lr)))
            if step % 3 == 0:
                given["eval/accuracy"].append((step, float(0.5 + lr + rng.uniform(0, 0.1))))
        for tag, points in given.items():
            for step, v in points:
                w.add_scalar(tag, v, step)
    return given


def test_summarywriter_folders_map_param_progress_and_damage(tmp_path):
    pytest.importorskip("tensorboard")
    runs = tmp_path / "runs"
    given = {}
    for lr in (0.001, 0.01):
        for seed in (1, 2, 3):
            given[(lr, seed)] = _summarywriter_run(runs / f"lr={lr}" / f"seed={seed}", lr=lr, seed=seed)
    crashed = runs / "lr=0.01" / "seed=4"
    tb_writer.SummaryWriter(str(crashed)).close()  # a run that died before its first log
    cut = runs / "lr=0.001" / "seed=5"
    _summarywriter_run(cut, lr=0.001, seed=5)
    f = next(cut.glob("events.out.tfevents.*"))
    f.write_bytes(f.read_bytes()[:-7])  # cut inside the last record
    db = tmp_path / "s.duckdb"

    r = invoke("ingest", runs, "--db", db, "--param", "model=tiny")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("8 ingested (8 new, 0 replaced)")
    got = dict(((lr, seed), (status, model)) for lr, seed, status, model in rows(
        db, "SELECT lr, seed, status, model FROM runs"))
    assert got[(0.01, 4)] == ("failed", "tiny") and got[(0.001, 5)] == ("interrupted", "tiny")
    assert all(got[k] == ("completed", "tiny") for k in given)
    for (lr, seed), tags in given.items():
        steps = rows(db, f"SELECT s.step, s.loss FROM steps s JOIN runs r USING (run_id) WHERE r.lr = {lr} "
                         f"AND r.seed = {seed} ORDER BY 1")
        assert steps == [(s, f32(v)) for s, v in tags["train/loss"]]
        evals = rows(db, f"SELECT e.split, e.metric, e.step, e.value FROM evals e JOIN runs r USING (run_id) "
                         f"WHERE r.lr = {lr} AND r.seed = {seed} ORDER BY 1, 2, 3")
        assert evals == ([("eval", "accuracy", s, f32(v)) for s, v in tags["eval/accuracy"]]
                         + [("train", "custom/thing", s, f32(v)) for s, v in tags["custom/thing"]])

    # splits eval + train (the unmapped tag): the default split is eval
    r = invoke("compare", "--by", "lr", "--db", db)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("accuracy by lr") and "metric: eval/accuracy (final)" in r.stdout

    # --map: the unmapped tag becomes an evaluation; re-ingest replaces every run (the mapping changed)
    r = invoke("ingest", runs, "--db", db, "--param", "model=tiny", "--map", "custom/thing=dev/thing")
    assert r.exit_code == 0 and r.stdout.startswith("8 ingested (0 new, 8 replaced)"), r.output
    assert rows(db, "SELECT DISTINCT split, metric FROM evals ORDER BY 1") == [("dev", "thing"), ("eval", "accuracy")]
    r = invoke("ingest", runs, "--db", db, "--param", "model=tiny", "--map", "custom/thing=dev/thing")
    assert r.stdout.startswith("0 ingested (0 new, 0 replaced), 8 unchanged"), r.output
    r = invoke("ingest", runs, "--db", db, "--map", "custom/thing")
    assert r.exit_code != 0 and "--map 'custom/thing': expected TAG=split/metric" in r.output
    no_traceback(r)


def test_missing_tensorboard_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    _summarywriter_run(tmp_path / "runs" / "a", lr=0.1, seed=1)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto.event_pb2", None)
    db = tmp_path / "s.duckdb"
    r = invoke("ingest", tmp_path / "runs", "--db", db)
    assert r.exit_code != 0
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'stabstat[tensorboard]'" in lines[0], r.output
    assert not db.exists()


# ---------------------------------------------------------- HF Trainer's TensorBoard callback


class _Data:
    def __init__(self, n: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1000, 2000, (n, 12), generator=g)
        self.y = (self.x[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {"input_ids": self.x[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.y[i]}


@pytest.mark.slow
def test_hf_trainer_tensorboard_callback(tmp_path):
    pytest.importorskip("tensorboard")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from runner.models import load_model

    torch.set_num_threads(1)
    histories = {}
    for lr in (1e-3, 1e-4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = load_model("tiny", num_labels=2)
        out = tmp_path / "hf_out" / f"lr={lr}"
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=4, per_device_train_batch_size=8,
            learning_rate=lr, logging_steps=1, eval_strategy="steps", eval_steps=2, save_strategy="no",
            report_to=["tensorboard"], use_cpu=True, seed=7, dataloader_num_workers=0, disable_tqdm=True)

        def accuracy(p: Any) -> dict[str, float]:
            return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

        trainer = transformers.Trainer(model=model, args=args, train_dataset=_Data(32, 1), eval_dataset=_Data(16, 2),
                                       compute_metrics=accuracy)
        trainer.train()
        histories[lr] = trainer.state.log_history
    db = tmp_path / "s.duckdb"
    r = invoke("ingest", tmp_path / "hf_out", "--db", db)
    assert r.exit_code == 0 and r.stdout.startswith("2 ingested"), r.output
    assert rows(db, "SELECT DISTINCT source_format FROM runs") == [("tensorboard",)]
    for lr, history in histories.items():
        train = [(h["step"], h["loss"], h["learning_rate"], h["grad_norm"]) for h in history if "loss" in h]
        steps = rows(db, f"SELECT s.step, s.loss, s.lr, s.grad_norm FROM steps s JOIN runs r USING (run_id) "
                         f"WHERE r.lr = {lr} ORDER BY 1")
        assert steps == [(s, f32(loss), f32(rate), f32(gn)) for s, loss, rate, gn in train]
        evals = [(h["step"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
        got = rows(db, f"SELECT e.step, e.value FROM evals e JOIN runs r USING (run_id) WHERE r.lr = {lr} "
                       "AND e.split = 'eval' AND e.metric = 'accuracy' ORDER BY 1")
        assert got == [(s, f32(v)) for s, v in evals] and len(got) == 2
    r = invoke("compare", "--by", "lr", "--db", db, "--metric", "accuracy")
    assert r.exit_code == 0 and "metric: eval/accuracy" in r.stdout, r.output


# ------------------------------------------------------------------------------- tables


def test_results_table_of_a_paper_and_table_discovery(tmp_path):
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(0)
    lrs = [2e-5] * 5 + [1e-4] * 5
    table = pl.DataFrame({"lr": lrs, "seed": list(range(5)) * 2,
                          "accuracy": [float(v) for v in rng.uniform(0.6, 0.9, 10)],
                          "test_f1": [float(v) for v in rng.uniform(0.5, 0.8, 10)]})
    results = tmp_path / "paper" / "results.csv"
    results.parent.mkdir()
    table.write_csv(results)
    db = tmp_path / "s.duckdb"

    r = invoke("ingest", results, "--db", db)
    assert r.exit_code == 0 and r.stdout.startswith("10 ingested (10 new"), r.output
    assert "results.csv: 10 rows read as results (one row per run)" in r.stderr
    assert "  factors (inferred): lr, seed" in r.stderr and "  scores: accuracy, test_f1" in r.stderr
    got = rows(db, "SELECT r.lr, r.seed, e.split, e.metric, e.value FROM evals e JOIN runs r USING (run_id) "
                   "ORDER BY 1, 2, 3")
    want = sorted([(row["lr"], row["seed"], "dev", "accuracy", row["accuracy"]) for row in table.iter_rows(named=True)]
                  + [(row["lr"], row["seed"], "test", "f1", row["test_f1"]) for row in table.iter_rows(named=True)])
    assert got == want
    r = invoke("compare", "--by", "lr", "--db", db)
    assert r.exit_code == 0 and r.stdout.startswith("accuracy by lr"), r.output
    assert "metric: dev/accuracy (final)" in r.stdout

    # a CSV inside a run folder never hijacks auto; with --format table a folder is searched
    logs = tmp_path / "logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch,step,val_acc\n0,1,0.5\n")
    (logs / "predictions.csv").write_text("step,metric,value\n1,loss,0.5\n")
    r = invoke("ingest", tmp_path / "logs", "--db", tmp_path / "auto.duckdb")
    assert r.exit_code == 0 and r.stdout.startswith("1 ingested"), r.output
    assert rows(tmp_path / "auto.duckdb", "SELECT source_format FROM runs") == [("lightning",)]
    r = invoke("ingest", tmp_path / "paper", "--db", tmp_path / "t.duckdb", "--format", "table",
               "--shape", "results", "--factor", "lr", "--factor", "seed", "--score-split", "test")
    assert r.exit_code == 0 and r.stdout.startswith("10 ingested"), r.output
    assert rows(tmp_path / "t.duckdb", "SELECT DISTINCT split, metric FROM evals ORDER BY 2") == [
        ("test", "accuracy"), ("test", "f1")]
    r = invoke("ingest", tmp_path / "paper", "--db", tmp_path / "none.duckdb")
    assert r.exit_code != 0 and "no runs found" in r.output


def test_long_table_many_runs_progress_and_roles(tmp_path):
    pl = pytest.importorskip("polars")
    from stabstat.ingest import PrepareOptions, ingest
    from stabstat.ingest.source import TableOptions

    frame = pl.DataFrame({"name": ["a", "a", "b", "b", "c"], "it": [1, 2, 1, 2, 1],
                          "key": ["loss", "loss", "loss", "acc", "loss"], "v": [0.5, 0.25, 0.75, 0.5, 1.0],
                          "lr": [0.1, 0.1, 0.2, 0.2, 0.3]})
    path = tmp_path / "export.parquet"
    frame.write_parquet(path)
    calls: list[tuple[int, int]] = []
    inferred: list[str] = []
    opts = PrepareOptions(table=TableOptions(run_col="name", step_col="it", metric_col="key", value_col="v"),
                          inform=inferred.append)
    with Store.open(tmp_path / "s.duckdb", read_only=False) as store:
        report = ingest(store, [path], options=opts, progress=lambda done, total: calls.append((done, total)))
        got = store.con.execute("SELECT r.lr, s.step, s.loss FROM steps s JOIN runs r USING (run_id) ORDER BY 1, 2").fetchall()
    assert len(report.added) == 3 and calls[0] == (0, 1) and calls[-1] == (3, 3)  # the total grew with the runs
    assert got == [(0.1, 1, 0.5), (0.1, 2, 0.25), (0.2, 1, 0.75), (0.3, 1, 1.0)]
    assert "  run column: name" in inferred and any(line.startswith("export.parquet: 5 rows") for line in inferred)


# ---------------------------------------------------------------- --param on every format


def test_param_applies_to_stabstat_runs(make_run, tmp_path):
    make_run("a", config={"seed": 1, "task": "rte"}, evals={20: {"accuracy": 0.8}})
    make_run("b", config={"seed": 2, "task": "rte"}, evals={20: {"accuracy": 0.7}})
    db = tmp_path / "s.duckdb"
    r = invoke("ingest", tmp_path / "runs", "--db", db)
    assert r.exit_code == 0, r.output
    r = invoke("ingest", tmp_path / "runs", "--db", db, "--param", "sweep=old", "--param", "seed=9")
    assert r.exit_code == 0 and r.stdout.startswith("2 ingested (0 new, 2 replaced)"), r.output
    assert rows(db, "SELECT run_id, sweep, seed, config->>'$.sweep' FROM runs ORDER BY 1") == [
        ("a", "old", 9, "old"), ("b", "old", 9, "old")]
    r = invoke("ingest", tmp_path / "runs", "--db", db, "--param", "sweep=old", "--param", "seed=9")
    assert r.stdout.startswith("0 ingested (0 new, 0 replaced), 2 unchanged"), r.output
    r = invoke("ingest", tmp_path / "runs", "--db", db, "--param", "sweep=new", "--param", "seed=9")
    assert r.stdout.startswith("2 ingested (0 new, 2 replaced)"), r.output


# ------------------------------------------------------------------------ default split


def test_default_split_skips_train_extras(tmp_path):
    from stabstat.analysis import Selection, select_runs
    from stabstat.errors import SelectionError

    logs = tmp_path / "logs"
    for seed in (1, 2):
        d = logs / f"seed={seed}"
        d.mkdir(parents=True)
        (d / "metrics.csv").write_text(f"epoch,step,train_loss,train_acc,val_acc\n0,1,0.5,0.6,\n0,1,,,0.{6 + seed}\n")
    db = tmp_path / "s.duckdb"
    assert invoke("ingest", logs, "--db", db).exit_code == 0
    with Store.open(db) as store:
        runset = select_runs(store, ["seed"])
        assert sorted(runset.frame["value"].to_list()) == [0.7, 0.8]
        assert select_runs(store, ["seed"], selection=Selection(split="train", metric="acc")).frame["value"].to_list() == [0.6, 0.6]
    (logs / "seed=1" / "metrics.csv").write_text("epoch,step,train_loss,val_acc,test_acc\n0,1,0.5,,\n0,1,,0.7,0.5\n")
    assert invoke("ingest", logs, "--db", db).exit_code == 0
    with Store.open(db) as store, pytest.raises(SelectionError, match=r"several splits and none is 'dev'.*test, train, val"):
        select_runs(store, ["seed"])


def test_side_file_errors_name_the_logs_not_trainer_state(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.csv").write_text("epoch,step,train_loss\n0,1,0.5\n")
    (d / "config.json").write_text("{not json")
    r = invoke("ingest", tmp_path, "--db", tmp_path / "s.duckdb")
    assert r.exit_code == 1
    line = next(line for line in r.stderr.splitlines() if "config.json" in line)
    assert "malformed JSON beside the logs" in line and "trainer_state" not in line


def test_logger_twins_need_neighbours_with_the_same_hparams(tmp_path):
    from stabstat.ingest.sources.lightning import logger_twins

    def folder(name: str, hparams: str | None) -> Path:
        d = tmp_path / name
        d.mkdir(parents=True)
        if hparams is not None:
            (d / "hparams.yaml").write_text(hparams)
        return d

    tb = [folder("a/version_0", "lr: 0.1\n"), folder("a/version_2", "lr: 0.2\n"), folder("b/version_5", "lr: 0.1\n"),
          folder("c/version_0", "{}\n")]
    csv = [folder("a/version_1", "lr: 0.1\n"),  # twin of a/version_0
           folder("a/version_3", "lr: 0.3\n"),  # neighbour, other hparams: a run of its own
           folder("b/version_7", "lr: 0.1\n"),  # same hparams, not a neighbour
           folder("c/version_1", None),  # no hparams.yaml
           folder("d/version_1", "lr: 0.1\n")]  # another parent
    assert logger_twins(tb, csv) == {tmp_path / "a/version_1": tmp_path / "a/version_0"}
    # a TensorBoard folder pairs with one CSV folder at most (loggers [CSV, TB, CSV] with equal hparams)
    both = [folder("e/version_0", "x: 1\n"), folder("e/version_2", "x: 1\n")]
    assert logger_twins([folder("e/version_1", "x: 1\n")], both) == {tmp_path / "e/version_0": tmp_path / "e/version_1"}


def test_format_choice_and_help_come_from_the_registry():
    from stabstat.ingest import registry

    r = invoke("ingest", "--help")
    assert r.exit_code == 0 and "Example:" in r.stdout
    flat = " ".join(r.stdout.split())
    assert "[auto|" + "|".join(registry.names()) + "]" in flat.replace(" ", "")
    assert all(f"{name}: " in flat for name in registry.names())
    assert {"tensorboard", "lightning", "table"} <= set(registry.names())
    assert registry.names().index("tensorboard") > registry.names().index("hf")
    assert registry.names().index("table") > registry.names().index("lightning")
