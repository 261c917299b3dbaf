"""``stabstat ingest`` options for logs of other tools: ``--format`` choices, ``--map``, table roles.

The ``--format`` choice and its help are built from :mod:`stabstat.ingest.registry`, so a
format registered there (one line) is offered here without touching the CLI. Imports only
click and the registry (light: no DuckDB, polars or pyarrow) at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from stabstat.ingest import registry

if TYPE_CHECKING:
    from stabstat.ingest.source import PrepareOptions

__all__ = ["format_choice", "format_help", "prepare_options", "source_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: Option name -> TableOptions field, for the column-role options.
_ROLE_OPTIONS = {"run_col": "--run-col", "step_col": "--step-col", "metric_col": "--metric-col",
                 "value_col": "--value-col", "split_col": "--split-col"}


def format_choice() -> click.Choice:
    """``auto`` and every registered format, in registration order."""
    return click.Choice(["auto", *registry.names()])


def format_help() -> str:
    """``--format`` help: each registered format with the files that mark its runs."""
    listed = "; ".join(f"{a.name}: {', '.join(a.marker_files[:3])}{' ...' if len(a.marker_files) > 3 else ''}"
                       for a in registry.adapters())
    return (f"Input format. auto: detect per folder (a table file is read only when named, or "
            f"with --format table under the folders named). {listed}")


def source_options(f: F) -> F:
    """``--map`` and the table options (``--run-col`` ... ``--shape``) of ``stabstat ingest``."""
    options = [
        click.option("--map", "maps", multiple=True, metavar="TAG=SPLIT/METRIC",
                     help="Where a logged name goes (repeatable), over the built-in rules: "
                          "--map acc=dev/accuracy (an evaluation), --map my_loss=steps/loss (a steps column)."),
        click.option("--run-col", default=None, metavar="COL", help="Table files: the column naming the run."),
        click.option("--step-col", default=None, metavar="COL", help="Table files: the step column."),
        click.option("--metric-col", default=None, metavar="COL", help="Long tables: the metric-name column."),
        click.option("--value-col", default=None, metavar="COL", help="Long tables: the value column."),
        click.option("--split-col", default=None, metavar="COL", help="Long tables: the split column (dev, test, ...)."),
        click.option("--factor", "factors", multiple=True, metavar="COL",
                     help="Table files: a factor column (repeatable); default: inferred (the summary says which)."),
        click.option("--shape", type=click.Choice(["auto", "long", "history", "results"]), default="auto",
                     show_default=True,
                     help="Table files: long (run, step, metric, value), history (a column per metric), "
                          "results (one row per run: a paper's per-seed table)."),
        click.option("--score-split", default="dev", show_default=True, metavar="SPLIT",
                     help="Results tables: split of score columns whose name has no split prefix."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def prepare_options(source: dict[str, Any], inform: Callable[[str], None] | None = None) -> PrepareOptions:
    """The ingest's :class:`~stabstat.ingest.source.PrepareOptions` from the options of
    :func:`source_options` (``source``: their values by parameter name).

    Raises
    ------
    InputFormatError
        A malformed ``--map``.
    """
    from stabstat.ingest.source import PrepareOptions, TableOptions
    from stabstat.ingest.tags import parse_map

    table = TableOptions(**{k: source.get(k) for k in _ROLE_OPTIONS},
                         factors=tuple(source["factors"]) if source.get("factors") else None,
                         shape=source.get("shape") or "auto", split=source.get("score_split") or "dev")
    return PrepareOptions(tag_map=parse_map(source.get("maps") or ()), table=table, inform=inform)
