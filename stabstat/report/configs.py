"""What a "configuration" is when the report (or a chart) is not told ``--by``.

:func:`choose_configuration` finds the factors that vary among the selected runs (besides
``seed`` and ``task``). One factor: that is the configuration. Several that are perfectly
aliased (each level of one goes with exactly one level of every other, as a recipe's lr,
bias_correction and warmup_ratio do): one configuration named by all of them. Several that
vary independently: the report and the statistical charts need ``--by``; charts that only
draw runs (loss curves, gradient norms) take the combination of all of them.

:func:`combine_factors` turns such a list of factors into one column of the run set, named
``"a / b / c"`` with values ``"x / 1e-05 / false"``, so every builder downstream sees one
configuration factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stabstat._text import level
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.analysis import RunSet
    from stabstat.store import Store

__all__ = ["RUN_FIGURES", "choose_configuration", "combine_factors", "varying_factors"]

#: Figures that draw runs, not per-configuration statistics: they do not need ``--by``.
RUN_FIGURES = frozenset({"loss-curves", "layer-gradients", "gradient-heatmap"})
#: Joins the names (and levels) of factors combined into one configuration.
SEP = " / "


def varying_factors(store: Store, runs: pl.DataFrame) -> list[str]:
    """The factors besides seed and task that vary among ``runs`` (a frame with ``run_id``),
    in the store's column order."""
    import polars as pl

    ids = runs.get_column("run_id").to_list()
    cols = [f for f in store.factors() if f not in ("seed", "task")]
    if not cols:
        return []
    from stabstat.store import fetch_frame, quote_ident

    table = fetch_frame(store.con, "SELECT run_id, " + ", ".join(quote_ident(c) for c in cols)
                        + " FROM runs").filter(pl.col("run_id").is_in(ids))
    out = []
    for name in cols:
        k = table.get_column(name).n_unique()
        if 1 < k < table.height or (k == table.height == 2):
            out.append(name)
    return out


def _aliased(frame: pl.DataFrame, names: Sequence[str]) -> bool:
    """Whether every pair of ``names`` determines each other (as many distinct combinations as
    levels of each factor)."""
    combos = frame.select(list(names)).unique().height
    return all(frame.get_column(n).n_unique() == combos for n in names)


def choose_configuration(store: Store, runs: pl.DataFrame, only: Sequence[str] | None = None) -> list[str]:
    """The factor(s) whose levels are the configurations when ``--by`` is not given.

    Raises
    ------
    SelectionError
        No factor varies; or several vary independently and a wanted figure compares
        configurations (the message lists them and says to pass ``--by``).
    """
    import polars as pl

    varying = varying_factors(store, runs)
    if len(varying) == 1:
        return varying
    if not varying:
        raise SelectionError(
            "no factor besides seed and task varies among the selected runs; pass --by FACTOR "
            f"(factors: {', '.join(store.factors()) or 'none'})")
    ids = runs.get_column("run_id").to_list()
    from stabstat.store import fetch_frame, quote_ident

    table = fetch_frame(store.con, "SELECT run_id, " + ", ".join(quote_ident(c) for c in varying)
                        + " FROM runs").filter(pl.col("run_id").is_in(ids))
    if _aliased(table, varying) or (only is not None and set(only) <= RUN_FIGURES):
        return varying
    raise SelectionError(
        f"several factors vary among the selected runs ({', '.join(varying)}); pass --by FACTOR "
        "to choose the one to compare (and --filter to fix the others)")


def combine_factors(runset: RunSet, names: Sequence[str]) -> RunSet:
    """``runset`` (selected with ``by=names``) with one configuration column ``"a / b"``
    whose values are the levels of ``names`` joined (``"x / 1e-05"``; null when all are)."""
    import polars as pl

    from stabstat.analysis import RunSet

    if len(names) == 1:
        return runset
    col = SEP.join(names)
    labels = [SEP.join(level(v) for v in row) for row in runset.frame.select(list(names)).iter_rows()]
    frame = runset.frame.with_columns(pl.Series(col, labels, dtype=pl.String))
    return RunSet(frame, (col,), runset.settings, runset.warnings)
