"""The analysis side stays light: no torch/transformers/datasets, and a fast ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

TRAINING = ["torch", "transformers", "datasets"]
HEAVY = ["duckdb", "polars", "statsmodels", "altair", "scipy", "vl_convert"]


def _modules_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the top-level modules it imported."""
    probe = textwrap.dedent(
        """
        import json, sys
        try:
        {code}
        except SystemExit:
            pass
        print("\\n@@" + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
        """
    ).format(code=textwrap.indent(textwrap.dedent(code), "    "))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.rsplit("@@", 1)[1]))


def test_import_stabstat_does_not_import_training_stack() -> None:
    mods = _modules_after("import stabstat, stabstat.errors, schemas; schemas.load()")
    assert not mods & set(TRAINING)
    assert not mods & set(HEAVY)


def test_help_is_light() -> None:
    mods = _modules_after("from stabstat.cli import cli\ncli(['--help'])")
    assert "click" in mods  # the probe really ran the CLI
    assert not mods & set(TRAINING), mods & set(TRAINING)
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_validate_and_rundir_do_not_import_training_stack_or_duckdb() -> None:
    mods = _modules_after(
        "import stabstat.validate, stabstat.rundir\n"
        "from stabstat.cli import cli\ncli(['validate', '--help'])"
    )
    assert not mods & set(TRAINING)
    assert not mods & {"duckdb", "polars", "statsmodels", "altair"}


def test_logwriter_does_not_import_torch() -> None:
    mods = _modules_after("import runner, runner.logwriter")
    assert not mods & set(TRAINING)


@pytest.mark.parametrize("cmd", [["--help"], ["validate", "--help"]])
def test_console_script_help_runs(cmd: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from stabstat.cli import main; main()", *cmd],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Example:" in out.stdout
