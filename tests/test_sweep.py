"""runner.sweep: sweep files -> planned runs, presets, factors, run ids, errors, pending."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from runner import sweep as sw
from stabstat.errors import ConfigError


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, "utf-8")
    return p


BASIC = """
name = "demo"
seeds = 2
[config]
model = "tiny"
task = "rte"
max_steps = 5
[grid]
lr = [1e-5, 2e-5]
bias_correction = [true, false]
"""


def test_grid_times_seeds(tmp_path: Path) -> None:
    runs = sw.plan(_write(tmp_path, BASIC))
    assert len(runs) == 2 * 2 * 2
    assert len({r.run_id for r in runs}) == 8
    # seed-major order: all configurations of seed 0 first
    assert [r.seed for r in runs] == [0] * 4 + [1] * 4
    assert {(r.config["lr"], r.config["bias_correction"]) for r in runs[:4]} == {
        (1e-5, True), (1e-5, False), (2e-5, True), (2e-5, False)}
    r = runs[0]
    assert r.run_id.startswith("rte-") and len(r.run_id) == len("rte-") + 10
    assert r.config["epochs"] is None and r.config["max_steps"] == 5  # max_steps wins
    assert set(sw.KEYS) <= set(r.config)
    assert pickle.loads(pickle.dumps(r)) == r


def test_run_id_is_deterministic_and_depends_on_everything(tmp_path: Path) -> None:
    a = sw.plan(_write(tmp_path, BASIC))
    b = sw.plan(_write(tmp_path, BASIC.replace("seeds = 2", "seeds = [0, 1]"), "other.toml"))
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert sw.make_run_id(a[0].config) == a[0].run_id
    changed = dict(a[0].config, warmup_ratio=0.2)
    assert sw.make_run_id(changed) != a[0].run_id
    # int and float spellings of the same number are the same run
    c = sw.plan({"config": {"task": "rte", "max_steps": 5, "lr": 1}})
    d = sw.plan({"config": {"task": "rte", "max_steps": 5, "lr": 1.0}})
    assert c[0].run_id == d[0].run_id


def test_presets_exactly_as_the_paper(tmp_path: Path) -> None:
    dev = sw.plan({"preset": "devlin2019", "config": {"task": "rte"}})[0].config
    assert {k: dev[k] for k in ("bias_correction", "lr", "epochs", "warmup_ratio", "batch_size",
                                "weight_decay", "max_grad_norm", "adam_eps")} == {
        "bias_correction": False, "lr": 2e-5, "epochs": 3.0, "warmup_ratio": 0.1, "batch_size": 16,
        "weight_decay": 0.01, "max_grad_norm": 1.0, "adam_eps": 1e-6}
    assert dev["recipe"] == "devlin2019"
    mos = sw.plan({"preset": "mosbach2021", "config": {"task": "rte"}})[0].config
    assert {k: mos[k] for k in mos if mos[k] != dev[k]} == {
        "bias_correction": True, "epochs": 20.0, "recipe": "mosbach2021"}


def test_arms_layering(tmp_path: Path) -> None:
    text = """
seeds = 3
[config]
task = "synthetic"
max_steps = 200
max_length = 24
[[arms]]
name = "no-bc"
preset = "devlin2019"
lr = 1e-4
warmup_ratio = 0.0
[[arms]]
preset = "mosbach2021"
"""
    runs = sw.plan(_write(tmp_path, text))
    assert len(runs) == 6
    a, b = runs[0].config, runs[1].config
    assert (a["recipe"], a["lr"], a["bias_correction"], a["warmup_ratio"]) == ("no-bc", 1e-4, False, 0.0)
    assert (b["recipe"], b["lr"], b["bias_correction"], b["warmup_ratio"]) == ("mosbach2021", 2e-5, True, 0.1)
    assert a["max_steps"] == b["max_steps"] == 200 and a["epochs"] is None


def test_yaml_same_as_toml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    text = """
seeds: [0, 1]
config: {model: tiny, task: rte, max_steps: 5}
grid:
  lr: [1e-5, 2e-5]      # YAML 1.1 reads these as strings; numbers are accepted
  bias_correction: [true, false]
"""
    runs = sw.plan(_write(tmp_path, text, "s.yaml"))
    toml = sw.plan(_write(tmp_path, BASIC))
    assert [r.run_id for r in runs] == [r.run_id for r in toml]


def test_user_factors_must_be_declared(tmp_path: Path) -> None:
    ok = BASIC + '[factors]\nannotator = "alice"\nlayers_frozen = 0\n'
    runs = sw.plan(_write(tmp_path, ok))
    assert runs[0].config["annotator"] == "alice" and runs[0].config["layers_frozen"] == 0
    grid = ok.replace("bias_correction = [true, false]", "layers_frozen = [0, 2]")
    runs = sw.plan(_write(tmp_path, grid, "g.toml"))
    assert {r.config["layers_frozen"] for r in runs} == {0, 2}
    with pytest.raises(ConfigError, match=r"g2\.toml: \[grid\]\.layers_frozen\[1\]: factor layers_frozen was declared as int"):
        sw.plan(_write(tmp_path, grid.replace("[0, 2]", '[0, "two"]'), "g2.toml"))


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (("max_steps = 5", "max_step = 5"), r"\[config\]\.max_step: unknown key 'max_step' \(did you mean 'max_steps'\?\)"),
        (("[grid]", "[grid]\nwarmup = [0.1]"), r"\[grid\]\.warmup: unknown key 'warmup' \(did you mean 'warmup_ratio'\?\)"),
        (("max_steps = 5", 'max_steps = "5"'), r"\[config\]\.max_steps: max_steps must be an integer, got str '5'"),
        (("max_steps = 5", "max_steps = 5.5"), r"\[config\]\.max_steps: max_steps must be an integer, got float"),
        (("bias_correction = [true, false]", "bias_correction = [1, 0]"), r"\[grid\]\.bias_correction\[0\]: bias_correction must be true/false"),
        (("lr = [1e-5, 2e-5]", "lr = 1e-5"), r"\[grid\]\.lr: must be a non-empty list"),
        (("lr = [1e-5, 2e-5]", "lr = [1e-5, -1.0]"), r"\[grid\]\.lr\[1\]: lr = -1.0 is below the minimum 0"),
        (("name = \"demo\"", "nmae = \"demo\""), r"unknown top-level key 'nmae' \(did you mean 'name'\?\)"),
        (("name = \"demo\"", "lr = 1e-5"), r"unknown top-level key 'lr'; run settings go under \[config\]"),
        (("seeds = 2", "seeds = 0"), r"seeds: the number of seeds must be >= 1"),
        (("seeds = 2", "seeds = true"), r"seeds: expected a count"),
        (('task = "rte"', 'task = "rte"\nseed = 3'), r"set seeds with the top-level `seeds`"),
        (("name = \"demo\"", 'preset = "devlin"'), r"preset 'devlin': unknown \(built in: devlin2019, mosbach2021"),
        (('task = "rte"', ""), r"no task"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, edit: tuple[str, str], pattern: str) -> None:
    assert edit[0] in BASIC
    p = _write(tmp_path, BASIC.replace(*edit), "bad.toml")
    with pytest.raises(ConfigError, match=pattern) as info:
        sw.plan(p)
    assert str(p) in str(info.value)


def test_other_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x\.toml: sweep file not found"):
        sw.plan(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        sw.plan(_write(tmp_path, "seeds = [", "broken.toml"))
    with pytest.raises(ConfigError, match=r"unknown sweep file type '\.json'"):
        sw.plan(_write(tmp_path, "{}", "s.json"))
    with pytest.raises(ConfigError, match=r"\[factors\]\.lr: 'lr' is a built-in key"):
        sw.plan(_write(tmp_path, BASIC + "[factors]\nlr = 1.0\n", "f.toml"))
    dup = "[config]\ntask='rte'\nmax_steps=3\n[[arms]]\nname='a'\nlr=1e-5\n[[arms]]\nname='a'\nlr=1e-5\n"
    with pytest.raises(ConfigError, match="same run as"):
        sw.plan(_write(tmp_path, dup, "dup.toml"))
    with pytest.raises(ConfigError, match="--seeds: cannot read 'a-b'"):
        sw.plan(_write(tmp_path, BASIC), seeds="a-b")


def test_parse_seeds() -> None:
    assert sw.parse_seeds(3) == [0, 1, 2]
    assert sw.parse_seeds("2-4") == [2, 3, 4]
    assert sw.parse_seeds("5,1") == [5, 1]
    assert sw.parse_seeds("4") == [0, 1, 2, 3]
    assert sw.parse_seeds([7, 3]) == [7, 3]
    with pytest.raises(ConfigError, match="repeated"):
        sw.parse_seeds([1, 1])


def test_cli_seeds_override(tmp_path: Path) -> None:
    runs = sw.plan(_write(tmp_path, BASIC), seeds="3-5")
    assert sorted({r.seed for r in runs}) == [3, 4, 5] and len(runs) == 12


def test_pending(tmp_path: Path) -> None:
    runs = sw.plan(_write(tmp_path, BASIC))
    out = tmp_path / "runs"
    statuses = ["completed", "diverged", "running", "interrupted", "failed"]
    for r, status in zip(runs, statuses, strict=False):
        (out / r.run_id).mkdir(parents=True)
        (out / r.run_id / "run.json").write_text(json.dumps({"status": status}), "utf-8")
    (out / runs[5].run_id).mkdir()
    (out / runs[5].run_id / "run.json").write_text("{broken", "utf-8")
    todo = sw.pending(runs, out)
    assert [r.run_id for r in todo] == [r.run_id for r in runs[2:]]
    assert sw.run_status(out, runs[0].run_id) == "completed"
    assert sw.run_status(out, "nope") is None
