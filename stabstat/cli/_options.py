"""Options and output helpers shared by many commands.

The one home of what several command modules share (command modules never import each
other): ``--db`` and ``--format``, the selection and statistics options of the analysis,
report and chart commands with the builders of :class:`stabstat.analysis.Selection` /
:class:`stabstat.analysis.Settings` from them, opening the store, and JSON / frame output.

Imports only click and :mod:`stabstat._text` at module level: ``stabstat --help`` must not
load polars, numpy or DuckDB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from stabstat._text import json_safe

if TYPE_CHECKING:
    from stabstat.analysis import Selection, Settings
    from stabstat.store import Store

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


def selection_options(f: F) -> F:
    """--filter, --where, --param, --metric, --split, --at, --baseline, --fail-below,
    --include-incomplete."""
    opts = [
        click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
                     help="Keep runs whose factor KEY equals VALUE (repeatable; all must hold)."),
        click.option("--where", "where", metavar="SQL",
                     help="Extra condition over the runs table's columns, e.g. \"lr <= 1e-4\"; it only "
                          "narrows --filter, and cannot read files. Values may be ? placeholders "
                          "bound with --param."),
        click.option("--param", "where_params", multiple=True, metavar="VALUE",
                     help="Value of the next ? in --where (repeatable, in order; numbers and "
                          "true/false are typed, e.g. --where \"lr > ?\" --param 2e-5)."),
        click.option("--metric", help="Metric to analyse [default: accuracy if evaluated, else the task's "
                                      "first metric]."),
        click.option("--split", help="Evaluation split [default: dev, or the only split]."),
        click.option("--at", "at", type=click.Choice(["final", "best"]), default="final", show_default=True,
                     help="The metric at the last evaluation, or the best over evaluations."),
        click.option("--baseline", type=float, metavar="VALUE",
                     help="Fail runs at or below VALUE instead of their stored majority-class baseline."),
        click.option("--fail-below", "fail_below", type=float, metavar="VALUE",
                     help="Fail runs strictly below VALUE instead (not with --baseline)."),
        click.option("--include-incomplete", is_flag=True,
                     help="Keep running, interrupted and crashed (status failed) runs."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def stat_options(f: F) -> F:
    """--resamples, --seed, --ci-method, --confidence, --correction."""
    opts = [
        click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
                     help="Bootstrap resamples (and permutations for p-values)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the resampling: the same data and seed give the same output."),
        click.option("--ci-method", "ci_method", type=click.Choice(["auto", "bca", "percentile"]), default="auto",
                     show_default=True,
                     help="Bootstrap interval. auto: BCa, but percentile for the SD (and SD ratios) below 20 runs "
                          "and for any statistic at 3 runs or fewer, where it covers better (README, Statistics)."),
        click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
                     help="Confidence level of the intervals."),
        click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default="holm", show_default=True,
                     help="Multiple-comparison adjustment across the p-values of one command."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def selection_from(kw: dict[str, Any]) -> Selection:
    """The :class:`~stabstat.analysis.Selection` of the :func:`selection_options` in ``kw``."""
    from stabstat.analysis import Selection
    from stabstat.store import parse_value

    return Selection(filters=tuple(kw["filters"]), where=kw["where"], metric=kw["metric"], split=kw["split"],
                     at=kw["at"], baseline=kw["baseline"], fail_below=kw["fail_below"],
                     include_incomplete=kw["include_incomplete"],
                     params=tuple(parse_value(v) for v in kw.get("where_params", ())))


def settings_from(kw: dict[str, Any]) -> Settings:
    """The :class:`~stabstat.analysis.Settings` of the :func:`stat_options` in ``kw``."""
    from stabstat.analysis import Settings

    return Settings(resamples=kw["resamples"], seed=kw["seed"], ci_method=kw["ci_method"],
                    confidence=kw["confidence"], correction=kw["correction"])


def open_store(db: str) -> Store:
    """The store at ``db`` (read-only, no file or network access), for a ``with`` block."""
    from stabstat.store import Store

    # Locked to the database: a --where or a claims file cannot read files or the network.
    return Store.open(db, external_access=False)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON; NaN/inf become null so every JSON parser accepts it."""
    click.echo(json.dumps(json_safe(obj), indent=2, default=str))


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


def print_rows(title: str | None, rows: list[dict[str, str]]) -> None:
    """A plain-text table of ``rows`` (cells already formatted): the columns of every row in
    first-seen order, left-aligned, a dashed rule under the header, a blank line after;
    nothing for no rows. ``title`` (if any) is printed above it."""
    if not rows:
        return
    cols = list(dict.fromkeys(c for r in rows for c in r))
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    if title is not None:
        click.echo(title)
    click.echo("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    click.echo("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        click.echo("  ".join(r.get(c, "").ljust(widths[c]) for c in cols).rstrip())
    click.echo()


#: Formats a ``--chart FILE`` can be written in (by its suffix).
CHART_FORMATS = ("png", "svg", "json")


def chart_format(path: str, option: str = "--chart") -> str:
    """The export format of chart file ``path``, from its suffix; called before any work is
    done, so a bad name fails at once.

    Raises
    ------
    SelectionError
        If the suffix is not one of :data:`CHART_FORMATS`.
    """
    from pathlib import Path

    from stabstat.errors import SelectionError

    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in CHART_FORMATS:
        raise SelectionError(f"{option} {path}: cannot tell the format from the suffix; use one of "
                             f"{', '.join('.' + f for f in CHART_FORMATS)}")
    return fmt
