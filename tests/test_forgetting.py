"""stabstat.analysis.forgetting, `stabstat forgetting` and the report's forgetting figure.

Unit tests read run directories written by the project's own writer (RunLogger, via conftest's
``write_run``) with probe evaluations whose values are drawn from a seeded generator; the
statistics are checked against numpy/scipy. The slow test trains a tiny sweep with the probe
end to end: runner -> validate -> ingest -> `stabstat forgetting` -> table, JSON and chart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_run

from stabstat.cli import cli

LAYERS = 4
MAJORITY = 0.53
PRETRAINED_PPL = 8.0
N_PER_ARM = 8


def _ppl(failed: bool, k: int, rng: np.random.Generator) -> float:
    """Failed runs: high perplexity until the top 3 layers are reset; successful: until the top 1."""
    if k == LAYERS:
        return PRETRAINED_PPL  # the pre-trained model: the same for every run
    need = 3 if failed else 1
    gap = 40.0 if failed else 3.0
    return PRETRAINED_PPL * (1.0 + (0.0 if k >= need else gap * (need - k) / need)) * float(rng.uniform(0.95, 1.05))


def _build(tmp: Path) -> tuple[Path, dict[str, dict[int, float]], dict[str, bool]]:
    from stabstat.ingest import ingest
    from stabstat.store import Store

    rng = np.random.default_rng(7)
    values: dict[str, dict[int, float]] = {}
    failed: dict[str, bool] = {}
    for bc in (False, True):
        for s in range(N_PER_ARM):
            run_id = f"rte-bc{int(bc)}-s{s}"
            fails = (s % 2 == 0) if not bc else (s % 4 == 0)
            acc = 0.5 if fails else 0.8
            ppl = {k: _ppl(fails, k, rng) for k in range(LAYERS + 1)}
            evals: list[tuple[int, str, dict[str, float | None]]] = [(20, "dev", {"accuracy": acc})]
            evals += [(20, f"probe.k{k}", {"mlm_perplexity": v, "mlm_loss": float(np.log(v)), "mlm_accuracy": 0.1})
                      for k, v in ppl.items()]
            write_run(tmp / "runs", run_id, config={"task": "rte", "seed": s, "bias_correction": bc},
                      evals=evals, task={"majority": {"accuracy": MAJORITY}}, seed=s)
            values[run_id], failed[run_id] = ppl, fails
    write_run(tmp / "runs", "rte-noprobe", config={"task": "rte", "seed": 99, "bias_correction": True},
              evals={20: {"accuracy": 0.8}}, task={"majority": {"accuracy": MAJORITY}})
    db = tmp / "stabstat.duckdb"
    with Store.open(db, read_only=False) as store:
        rep = ingest(store, [tmp / "runs"])
        assert rep.ok, rep.summary()
    return db, values, failed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[int, float]], dict[str, bool]]:
    return _build(tmp_path_factory.mktemp("forgetting"))


def _settings(**kw: Any) -> Any:
    from stabstat.analysis import Settings

    return Settings(**{"resamples": 2000, "seed": 3, **kw})


def test_bands_are_the_statistic_over_runs_per_k_and_outcome(built: Any) -> None:
    from stabstat.analysis import forgetting
    from stabstat.store import Store

    db, values, failed = built
    with Store.open(db) as store:
        res = forgetting(store, settings=_settings())
    assert res.analysis == "forgetting"
    points = {(p.outcome, p.k): p for p in res.groups}
    assert set(points) == {(o, k) for o in ("failed", "successful") for k in range(LAYERS + 1)}
    for (outcome, k), p in points.items():
        xs = np.array([v[k] for r, v in values.items() if failed[r] == (outcome == "failed")])
        assert p.n_runs == xs.size and p.layers == LAYERS
        assert p.value.estimate == pytest.approx(float(np.median(xs)))
        if k < LAYERS:
            assert p.value.ci_low <= p.value.estimate <= p.value.ci_high
    assert points[("failed", LAYERS)].value.estimate == pytest.approx(PRETRAINED_PPL)
    assert any("no probe results" in w for w in res.warnings)  # rte-noprobe
    # recovery (within 10%): failed runs need the top 3 layers reset, successful ones the top 1
    rec = {r.outcome: r for r in res.sections["recovery"]}
    assert rec["failed"].recovered_at == 3 and rec["successful"].recovered_at == 1
    assert rec["failed"].pretrained == pytest.approx(PRETRAINED_PPL)
    assert rec["failed"].at_k0 == pytest.approx(points[("failed", 0)].value.estimate)
    # failed - successful: the difference of the medians at each k
    diffs = {t.k: t for t in res.tests}
    for k, t in diffs.items():
        a = np.array([v[k] for r, v in values.items() if failed[r]])
        b = np.array([v[k] for r, v in values.items() if not failed[r]])
        assert t.diff.estimate == pytest.approx(float(np.median(a) - np.median(b)))
        assert (t.n_a, t.n_b) == (a.size, b.size)
    assert diffs[0].diff.ci_low > 0  # failed runs are far worse with nothing reset
    d = res.to_dict()
    assert {"groups", "tests", "recovery", "runs", "settings"} <= set(d)
    assert len(d["runs"]) == 2 * N_PER_ARM * (LAYERS + 1)


def test_percentile_band_matches_scipy(built: Any) -> None:
    from scipy import stats as sps

    from stabstat.analysis import forgetting
    from stabstat.store import Store

    db, values, failed = built
    with Store.open(db) as store:
        res = forgetting(store, metric="mlm_loss", statistic="mean",
                         settings=_settings(ci_method="percentile", resamples=20000))
    p = next(p for p in res.groups if p.outcome == "successful" and p.k == 0)
    xs = np.log([v[0] for r, v in values.items() if not failed[r]])
    ref = sps.bootstrap((xs,), np.mean, method="percentile", n_resamples=20000, rng=np.random.default_rng(0))
    assert p.value.estimate == pytest.approx(xs.mean())
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert p.value.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert p.value.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)


def test_by_factor_and_errors(built: Any) -> None:
    from stabstat.analysis import Selection, forgetting
    from stabstat.errors import SelectionError
    from stabstat.store import Store

    db, values, failed = built
    with Store.open(db) as store:
        res = forgetting(store, by="bias_correction", settings=_settings(resamples=500))
        keys = {(p.key["bias_correction"], p.outcome) for p in res.groups}
        assert keys == {(bc, o) for bc in (False, True) for o in ("failed", "successful")}
        n = {(p.key["bias_correction"], p.outcome): p.n_runs for p in res.groups if p.k == 0}
        assert n[(False, "failed")] == 4 and n[(True, "failed")] == 2
        with pytest.raises(SelectionError, match="not a probe score"):
            forgetting(store, metric="accuracy")
        with pytest.raises(SelectionError, match="--within nan: give a relative distance >= 0"):
            forgetting(store, within=float("nan"))
        with pytest.raises(SelectionError, match=r"no forgetting-probe results .*probe = \[\"forgetting\"\]"):
            forgetting(store, selection=Selection(filters=("seed=99",)))


def test_cli_table_json_and_chart(built: Any, tmp_path: Path) -> None:
    db = str(built[0])
    fast = ["--resamples", "300", "--seed", "1"]
    r = CliRunner().invoke(cli, ["forgetting", "--db", db, *fast])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("median mlm_perplexity [CI] (runs)")
    assert lines[1].split()[:3] == ["k", "failed", "successful"]
    assert [ln.split()[0] for ln in lines[3:3 + LAYERS + 1]] == [str(k) for k in range(LAYERS + 1)]
    assert "recovered from k (within 10%)" in r.output and "failed - successful" in r.output
    out = tmp_path / "f.json"
    r = CliRunner().invoke(cli, ["forgetting", "--db", db, "--format", "json", "--chart", str(out), *fast])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["analysis"] == "forgetting" and d["settings"]["probe_metric"] == "mlm_perplexity"
    spec = json.loads(out.read_text())
    values = next(iter(spec["datasets"].values()))
    assert {v["status"] for v in values} == {"failed", "successful"} and len(values) == 2 * (LAYERS + 1)
    r = CliRunner().invoke(cli, ["forgetting", "--db", db, "--chart", "x.pdf"])
    assert r.exit_code != 0 and "--chart x.pdf" in r.output and "Traceback" not in r.output


def test_report_has_the_figure_only_with_probe_results(built: Any) -> None:
    from stabstat.analysis import Selection
    from stabstat.report import build_report
    from stabstat.store import Store

    with Store.open(built[0]) as store:
        rep = build_report(store, by="bias_correction", only=["forgetting"])
        assert [f.id for f in rep.figures] == ["forgetting"]
        none = build_report(store, by="bias_correction", only=["forgetting"],
                            selection=Selection(filters=("seed=99",)))
        assert none.figures == [] and any("forgetting" in n for n in none.notes)


@pytest.mark.slow
def test_tiny_sweep_with_the_probe_end_to_end(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq
    from transformers import BertConfig, BertForMaskedLM

    from runner import sweep, train
    from runner.models import load_tokenizer
    from stabstat.ingest import ingest
    from stabstat.store import Store
    from stabstat.validate import validate_run

    torch.set_num_threads(1)
    pre = tmp_path / "tiny-mlm"
    torch.manual_seed(5)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(pre)  # type: ignore[call-arg]
    load_tokenizer("minilm").save_pretrained(pre)
    planned = sweep.plan({"seeds": 2, "config": {"task": "synthetic", "model": str(pre), "max_length": 24,
                                                 "n_train": 32, "max_steps": 4, "batch_size": 16, "lr": 1e-3,
                                                 "probe": ["forgetting"], "probe_max_texts": 40},
                          "grid": {"bias_correction": [True, False]}})
    assert len(planned) == 4
    runs = tmp_path / "runs"
    for p in planned:
        assert train.run_planned(p, runs, threads=1) == "completed"
        assert validate_run(runs / p.run_id) == []
    at_l = []
    for p in planned:
        ev = pq.read_table(runs / p.run_id / "evals.parquet").to_pylist()
        probe = [e for e in ev if e["split"].startswith("probe.k")]
        assert {(e["split"], e["metric"]) for e in probe} == {
            (f"probe.k{k}", m) for k in range(3) for m in ("mlm_loss", "mlm_perplexity", "mlm_accuracy")}
        assert {e["step"] for e in probe} == {4}
        at_l.append({e["metric"]: e["value"] for e in probe if e["split"] == "probe.k2"})
        k0 = {e["metric"]: e["value"] for e in probe if e["split"] == "probe.k0"}
        assert k0["mlm_loss"] != at_l[-1]["mlm_loss"]
    # k = L is the pre-trained model on the same masks: identical in every run
    assert all(v == at_l[0] for v in at_l)
    db = tmp_path / "s.duckdb"
    with Store.open(db, read_only=False) as store:
        assert ingest(store, [runs]).ok
    r = CliRunner().invoke(cli, ["forgetting", "--db", str(db), "--resamples", "200", "--chart",
                                 str(tmp_path / "f.svg")])
    assert r.exit_code == 0, r.output
    assert "median mlm_perplexity" in r.output and (tmp_path / "f.svg").read_text().startswith("<svg")


def test_help_has_an_example() -> None:
    r = CliRunner().invoke(cli, ["forgetting", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "stabstat forgetting --by bias_correction" in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert "forgetting" in r.output and "Forgetting probe" in r.output
