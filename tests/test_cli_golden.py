"""The CLI's table and CSV outputs are pinned byte for byte (``tests/golden/cli/``).

The store is ``test_analysis.build_db`` (24 runs written by RunLogger, deterministic); the
options fix the resamples and the seed, so the output is a pure function of the code and of
the numeric packages. A change of output must be deliberate: record it again with::

    STABSTAT_UPDATE_GOLDEN=1 python -m pytest tests/test_cli_golden.py

and review the diff of ``tests/golden/cli/``. Like the report's golden test, this one skips
when the installed versions of the packages that shape the numbers differ from those
recorded (a new numpy can move a bootstrap endpoint in the last digit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_analysis import build_db

from stabstat.cli import cli

GOLDEN = Path(__file__).resolve().parent / "golden" / "cli"
FAST = ["--resamples", "300", "--seed", "2"]
UPDATE = os.environ.get("STABSTAT_UPDATE_GOLDEN") == "1"

CASES: dict[str, list[str]] = {
    "compare": ["compare", "--by", "bias_correction", *FAST],
    "compare_n_train": ["compare", "--by", "n_train", "--filter", "bias_correction=false", *FAST],
    "compare_by_seed": ["compare", "--by", "seed", "--filter", "n_train=250", *FAST],
    "failure_rate": ["failure-rate", "--by", "n_train", *FAST],
    "failure_rate_two": ["failure-rate", "--by", "n_train", "--by", "max_steps", *FAST],
    "variance": ["variance", "--bins", "3", *FAST],
    "variance_by": ["variance", "--by", "n_train", *FAST],
    "gradients": ["gradients", *FAST],
}


def _versions() -> dict[str, str]:
    import duckdb
    import numpy
    import polars
    import scipy
    import statsmodels

    return {"duckdb": duckdb.__version__, "numpy": numpy.__version__, "polars": polars.__version__,
            "scipy": scipy.__version__, "statsmodels": statsmodels.__version__}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_db(tmp_path_factory.mktemp("golden_cli")))


@pytest.fixture(scope="module")
def recorded_versions() -> dict[str, str]:
    path = GOLDEN / "versions.json"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_versions(), indent=2, sort_keys=True) + "\n")
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_cli_output_matches_golden(db: str, name: str, fmt: str, recorded_versions: dict[str, str]) -> None:
    if recorded_versions != _versions():
        pytest.skip(f"golden CLI outputs recorded with {recorded_versions}, installed {_versions()}; "
                    "record again with STABSTAT_UPDATE_GOLDEN=1")
    r = CliRunner().invoke(cli, [*CASES[name], "--db", db, "--format", fmt])
    assert r.exit_code == 0, r.output
    text = f"$ stabstat {' '.join(CASES[name])} --format {fmt}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
    path = GOLDEN / f"{name}.{fmt}.txt"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; record it with STABSTAT_UPDATE_GOLDEN=1"
    assert text == path.read_text()
