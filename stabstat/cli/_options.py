"""Options and output helpers shared by many commands."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DB_ENV = "STABSTAT_DB"
DEFAULT_DB = "stabstat.duckdb"


def default_db() -> str:
    """The database path: ``$STABSTAT_DB`` or ``./stabstat.duckdb``."""
    return os.environ.get(DB_ENV, DEFAULT_DB)


def db_option(f: F) -> F:
    """``--db FILE`` (default ``$STABSTAT_DB`` or ``./stabstat.duckdb``)."""
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False),
        default=default_db,
        show_default="$STABSTAT_DB or ./stabstat.duckdb",
        help="DuckDB database file.",
    )(f)


def format_option(f: F) -> F:
    """``--format table|json|csv``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default="table",
        show_default=True,
        help="Output format: a readable table, or json/csv for scripts.",
    )(f)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON; NaN/inf become null so every JSON parser accepts it."""
    click.echo(json.dumps(_json_safe(obj), indent=2, default=str))


def _json_safe(obj: Any) -> Any:
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def echo_frame(frame: Any, fmt: str) -> None:
    """Print a polars DataFrame as a table, JSON records or CSV."""
    if fmt == "json":
        echo_json(frame.to_dicts())
    elif fmt == "csv":
        click.echo(frame.write_csv(), nl=False)
    else:
        import polars as pl

        with pl.Config(
            tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60,
            tbl_hide_dataframe_shape=True,
        ):
            click.echo(str(frame))
