"""The README's demo pipeline end to end (sweep -> ingest -> compare -> check -> report), reduced.

Runs ``examples/demo/run.sh`` itself, with the demo's sweep file shrunk (tiny random model,
few steps and examples, 2 seeds) so it takes seconds; everything else is the real script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _reduced_sweep(path: Path) -> Path:
    """The demo sweep with a tiny model and 20 steps; arms, presets and factors unchanged."""
    sweep = tomllib.loads((ROOT / "examples/demo/sweep.toml").read_text())
    config = {**sweep["config"], "model": "tiny", "max_steps": 20, "eval_every": 10, "n_train": 64}
    lines = ['name = "demo_reduced"', "seeds = 2"]
    lines += [f"preset = {json.dumps(sweep['preset'])}"] if "preset" in sweep else []
    lines += ["", "[config]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    for arm in sweep["arms"]:
        lines += ["", "[[arms]]"] + [f"{k} = {json.dumps(v)}" for k, v in arm.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    env = {
        **os.environ,
        "STABSTAT_VENV": str(Path(sys.executable).parent.parent),
        "DEMO_OUT": str(out),
        "DEMO_SWEEP": str(_reduced_sweep(tmp_path / "sweep.toml")),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(["bash", str(ROOT / "examples/demo/run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report.html"
    assert report.exists() and report.stat().st_size > 100_000
    assert f"Report: {out.resolve()}/report.html" in proc.stdout
    # The times of the phases and what to do next (issue 14).
    assert "(set-up 0 s, training " in proc.stdout and "Next steps" in proc.stdout
    assert f"stabstat runs --db {out}/stabstat.duckdb" in proc.stdout
    # 4 runs trained and ingested, and every claim of the demo's claims file got a verdict.
    assert len(list((out / "runs").glob("*/run.json"))) == 4
    n_claims = len(tomllib.loads((ROOT / "examples/demo/claims.toml").read_text())["claims"])
    verdicts = [w for w in ("PASS", "FAIL", "INCONCLUSIVE") for _ in range(proc.stdout.count(w))]
    assert len(verdicts) >= n_claims, proc.stdout
    html = report.read_text()
    for claim in tomllib.loads((ROOT / "examples/demo/claims.toml").read_text())["claims"]:
        assert claim["name"] in html
