"""The HTML report's bytes are pinned: refactors must not change a single byte of it.

The report is a pure function of the database, the options and the versions of the packages
that shape the numbers and the page (``stabstat.report.package_versions()``). The hashes in
``tests/golden/report_sha256.json`` were recorded with the versions stored beside them; when the
installed versions differ (a new duckdb or Vega release), the test skips and says how to record
them again::

    STABSTAT_UPDATE_GOLDEN=1 python -m pytest tests/test_report_golden.py

The page's provenance prints the database's absolute path: the temp folder is replaced by ``TMP``
before hashing, so the hash does not depend on where pytest put it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_fixtures import make_runs

from stabstat.cli import cli
from stabstat.report import package_versions

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "report_sha256.json"
RECORDED = ROOT / "examples" / "recorded" / "runs"
CLAIMS = ROOT / "examples" / "demo" / "claims.toml"
FIXED_TIME = "2026-01-02T03:04:05+00:00"

# name -> (runs source, report options)
CASES: dict[str, tuple[str, list[str]]] = {
    "recorded": ("recorded", ["--by", "bias_correction", "--resamples", "400"]),
    "recorded_claims": ("recorded", ["--by", "bias_correction", "--resamples", "400",
                                     "--claims", "claims.toml"]),
    "fixture": ("fixture", ["--by", "bias_correction", "--resamples", "400"]),
    "fixture_n_train": ("fixture", ["--by", "n_train", "--resamples", "400", "--seed", "3"]),
}


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output


def _build_all(tmp: Path) -> dict[str, str]:
    """Build every case's report under ``tmp`` (as the working directory); name -> sha256."""
    shutil.copytree(RECORDED, tmp / "recorded")
    make_runs(tmp / "fixture", seeds=6, steps=40, n_trains=(1000, 4000))
    for path in (tmp / "fixture").glob("*/run.json"):  # the writer's clock would show in the page
        run = json.loads(path.read_text())
        run.update({k: FIXED_TIME for k in ("started_at", "finished_at", "heartbeat_at")})
        path.write_text(json.dumps(run))
    shutil.copy(CLAIMS, tmp / "claims.toml")
    for source in ("recorded", "fixture"):
        _run(["ingest", source, "--db", f"{source}.duckdb"])
    out = {}
    for name, (source, opts) in CASES.items():
        _run(["report", "--db", f"{source}.duckdb", "--out", f"{name}.html", *opts])
        page = (tmp / f"{name}.html").read_bytes().replace(str(tmp.resolve()).encode(), b"TMP")
        out[name] = hashlib.sha256(page).hexdigest()
    return out


@pytest.mark.slow
def test_report_bytes_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = package_versions()
    monkeypatch.chdir(tmp_path)
    if os.environ.get("STABSTAT_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"versions": versions, "sha256": _build_all(tmp_path)},
                                     indent=2, sort_keys=True) + "\n")
        pytest.skip(f"recorded {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    if golden["versions"] != versions:
        changed = sorted(k for k in set(versions) | set(golden["versions"])
                         if versions.get(k) != golden["versions"].get(k))
        pytest.skip(f"package versions differ from the recorded ones ({', '.join(changed)}); "
                    "record again with STABSTAT_UPDATE_GOLDEN=1")
    assert _build_all(tmp_path) == golden["sha256"]
