"""The ``stabstat`` command line: a thin click layer over the Python API.

Sub-commands live in one module per area and are imported only when called, so
``stabstat --help`` stays fast (no duckdb, polars, statsmodels or altair import).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from stabstat import __version__
from stabstat.errors import StabstatError

#: Set to 1 to see the traceback of an error instead of its one-line message (as --debug).
DEBUG_ENV = "STABSTAT_DEBUG"

#: command name -> ("module:attribute", one-line help shown by ``stabstat --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("stabstat.cli.validate_cmd:validate", "Check run directories against the run-log contract."),
    "ingest": ("stabstat.cli.store_cmds:ingest", "Load runs (ours, HF, TensorBoard, Lightning, tables) into DuckDB."),
    "runs": ("stabstat.cli.store_cmds:runs", "List ingested runs with their factors and final metrics."),
    "query": ("stabstat.cli.store_cmds:query", "Run read-only SQL on the database."),
    "schema": ("stabstat.cli.store_cmds:schema", "Show the database's tables and columns."),
    "compare": ("stabstat.cli.analysis_cmds:compare", "Compare configurations with bootstrap CIs and tests."),
    "failure-rate": ("stabstat.cli.analysis_cmds:failure_rate", "Failure rate per level of one or two factors."),
    "variance": ("stabstat.cli.analysis_cmds:variance", "Dev metric against final training loss (generalisation)."),
    "gradients": ("stabstat.cli.analysis_cmds:gradients", "Per-layer gradient norms: the vanishing-gradient signature."),
    "forgetting": ("stabstat.cli.forgetting_cmd:forgetting", "Forgetting probe: MLM perplexity with the top layers reset."),
    "early": ("stabstat.cli.early_cmd:early", "Predict failed runs from their first K steps; the --stop-doomed rule."),
    "check": ("stabstat.cli.analysis_cmds:check", "Evaluate declarative claims (TOML); exit 1 on FAIL."),
    "decompose": ("stabstat.cli.planning_cmds:decompose", "Variance components over seed factors (init, order, ...)."),
    "plan": ("stabstat.cli.planning_cmds:plan", "How many seeds: power against seeds from pilot runs."),
    "expected-max": ("stabstat.cli.planning_cmds:expected_max", "Expected best score among k runs (and budgets)."),
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
        # The one place where exceptions become messages: a StabstatError is already one
        # line naming the option and the fix; anything else (DuckDB, a ValueError from a
        # library) is a bug or an unforeseen input, shown as one line too. --debug (or
        # STABSTAT_DEBUG=1) re-raises so the traceback is printed.
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own usage errors and exits print themselves
        except BrokenPipeError:
            _pipe_closed()
        except StabstatError as exc:
            if _debug(ctx):
                raise
            _fail(str(exc), exc.exit_code)
        except Exception as exc:
            if _debug(ctx):
                raise
            _fail(error_message(exc), 2)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def _fail(message: str, code: int) -> None:
    # One line whatever the exception's text held (DuckDB's messages run over several).
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    click.secho(f"Error: {lines[0] if lines else 'unknown error'}", fg="red", err=True)
    sys.exit(code)


def error_message(exc: BaseException) -> str:
    """One line for an exception that is not a :class:`StabstatError` (a file the system
    refused, a DuckDB error, or a bug), with the hint to rerun with ``--debug``."""
    text = (str(exc).strip().splitlines() or [""])[0].strip()
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or text}"
    kind = "database error" if type(exc).__module__.split(".")[0].lstrip("_") == "duckdb" else type(exc).__name__
    return (f"{kind}: {text or 'no message'} (unexpected; rerun with --debug or {DEBUG_ENV}=1 "
            "for the traceback, and please report it)")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stabstat")
@click.option("--debug", is_flag=True, help=f"Show the traceback of an error (also ${DEBUG_ENV}=1).")
def cli(debug: bool) -> None:
    """stabstat: is this fine-tuning recipe stable, and how sure are we?

    Ingest run logs into DuckDB, compare configurations with bootstrap
    confidence intervals, test stability claims and write reports.

    \b
    Example:
        stabstat ingest runs/
        stabstat compare --by bias_correction
        stabstat report --by bias_correction --out report.html
        stabstat --debug compare --by lr      # an error with its traceback
    """


def _pipe_closed() -> None:
    """The reader of stdout went away (``stabstat compare ... | head``): stop quietly, with
    status 1 as click does when its own output hits a closed pipe (``--help | head``), instead
    of an error message; stdout is pointed at /dev/null first so that the interpreter's final
    flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def main() -> None:  # console-script entry point
    cli()
