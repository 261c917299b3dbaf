"""The ``stabstat`` command line: a thin click layer over the Python API.

Sub-commands live in one module per area and are imported only when called, so
``stabstat --help`` stays fast (no duckdb, polars, statsmodels or altair import).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from stabstat import __version__
from stabstat.errors import StabstatError

#: command name -> ("module:attribute", one-line help shown by ``stabstat --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("stabstat.cli.validate_cmd:validate", "Check run directories against the run-log contract."),
    "ingest": ("stabstat.cli.store_cmds:ingest", "Load run directories (or HF Trainer logs) into DuckDB."),
    "runs": ("stabstat.cli.store_cmds:runs", "List ingested runs with their factors and final metrics."),
    "query": ("stabstat.cli.store_cmds:query", "Run read-only SQL on the database."),
    "schema": ("stabstat.cli.store_cmds:schema", "Show the database's tables and columns."),
    "compare": ("stabstat.cli.analysis_cmds:compare", "Compare configurations with bootstrap CIs and tests."),
    "failure-rate": ("stabstat.cli.analysis_cmds:failure_rate", "Failure rate per level of one or two factors."),
    "variance": ("stabstat.cli.analysis_cmds:variance", "Dev metric against final training loss (generalisation)."),
    "gradients": ("stabstat.cli.analysis_cmds:gradients", "Per-layer gradient norms: the vanishing-gradient signature."),
    "check": ("stabstat.cli.analysis_cmds:check", "Evaluate declarative claims (TOML); exit 1 on FAIL."),
    "report": ("stabstat.cli.report_cmds:report", "Write a self-contained HTML report."),
    "chart": ("stabstat.cli.report_cmds:chart", "Export one chart as PNG, SVG or Vega-Lite JSON."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the area is not built yet in this checkout
                return None
            raise
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the stored one-liners instead of importing every command module.
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StabstatError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stabstat")
def cli() -> None:
    """stabstat: is this fine-tuning recipe stable, and how sure are we?

    Ingest run logs into DuckDB, compare configurations with bootstrap
    confidence intervals, test stability claims and write reports.

    \b
    Example:
        stabstat ingest runs/
        stabstat compare --by bias_correction
        stabstat report --by bias_correction --out report.html
    """


def main() -> None:  # console-script entry point
    cli()
