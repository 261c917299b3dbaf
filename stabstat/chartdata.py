"""Chart data aggregated in DuckDB, so that a page never carries millions of rows.

Every function takes the store (or a DuckDB connection) and a *runs frame* - one row per
selected run with at least ``run_id``, ``config`` (str label) and ``failed`` (bool) - and returns
the small polars frame that the matching function of :mod:`stabstat.charts` draws.

Downsampling rules (also in the README, "Large sweeps: what reaches the page"):

* **Steps are bucketed**, never thinned by taking every k-th row: with ``S`` the largest step
  among the selected runs and ``P`` the points wanted per curve, a bucket is
  ``w = ceil(S / P)`` consecutive steps; bucket ``b`` covers steps ``b*w+1 .. (b+1)*w`` and is
  drawn at its first step. A run's value in a bucket is the mean of its finite losses there
  (a diverged run's NaN/inf steps are left out; its curve stops where the loss blew up).
* **Loss curves**: with at most ``max_runs`` runs (default 200) each run is drawn, at
  ``P = clamp(row_budget // runs, 20, points)`` points (default ``points`` 200, ``row_budget``
  20,000 rows in all). With more runs, each (configuration, failed/successful) pair is drawn
  as a band: the 10 %, 50 % and 90 % quantiles over runs of the per-run bucket means.
* **Layer gradients**: ``P`` = 100 buckets; per (run, layer, bucket) the geometric mean of the
  run's positive, finite norms there; then per (failed/successful, layer, bucket) the 25 %,
  50 % and 75 % quantiles of those over runs (each run weighs the same).
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from stabstat.errors import SelectionError

__all__ = [
    "DEFAULT_GRAD_POINTS",
    "DEFAULT_LOSS_POINTS",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_ROW_BUDGET",
    "bucket_width",
    "layer_gradients_data",
    "loss_curves_data",
]

DEFAULT_LOSS_POINTS = 200
DEFAULT_MAX_RUNS = 200
DEFAULT_ROW_BUDGET = 20_000
DEFAULT_GRAD_POINTS = 100


def _con(store: Any) -> Any:
    return getattr(store, "con", store)


def _frame(con: Any, sql: str) -> pl.DataFrame:
    """Run ``sql`` and fetch the whole result as a polars frame (leaves no open result)."""
    from stabstat.store import fetch_frame

    return fetch_frame(con, sql)


def bucket_width(max_step: int | None, points: int) -> int:
    """Steps per bucket so that ``max_step`` steps give at most ``points`` buckets (>= 1)."""
    if not max_step or max_step <= 0:
        return 1
    return max(1, math.ceil(max_step / max(1, points)))


class _Registered:
    """The runs frame as a temporary DuckDB table for one query.

    A temp table works on read-only connections; registering an Arrow table would make DuckDB
    import pandas (see docs/architecture.md). Besides ``run_id``, ``config`` and ``failed`` it
    holds ``k``, the run's row number: the big aggregates group by that integer instead of
    the ``run_id`` string (measured ~10% less time for the per-run buckets of 36 M rows).
    ``whole`` says whether the table holds every run of the store (see :func:`_max_step`).
    """

    def __init__(self, con: Any, runs: pl.DataFrame, name: str) -> None:
        self.con, self.name = con, name
        frame = runs.select(
            pl.col("run_id").cast(pl.String),
            pl.col("config").cast(pl.String),
            pl.col("failed").cast(pl.Boolean).fill_null(False),
        )
        self.columns = [frame.get_column(c).to_list() for c in frame.columns]
        self.whole = False

    def __enter__(self) -> str:
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {self.name} AS SELECT "
            "unnest(?::VARCHAR[]) AS run_id, unnest(?::VARCHAR[]) AS config, "
            "unnest(?::BOOLEAN[]) AS failed, "
            "unnest(range(len(?::VARCHAR[])))::INTEGER AS k",
            [*self.columns, self.columns[0]],
        )
        self.whole = _covers_store(self.con, self.name)
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {self.name}")


def _covers_store(con: Any, sel: str) -> bool:
    """Whether the temp table ``sel`` names every run of the store's ``runs`` table (2,000
    rows against 2,000: milliseconds); False on a database without one (a bare connection)."""
    import duckdb

    try:
        missing = _frame(
            con, f"SELECT count(*) AS n FROM runs WHERE run_id NOT IN (SELECT run_id FROM {sel})"
        ).item()
    except duckdb.CatalogException:
        return False
    return bool(missing == 0)


def _max_step(con: Any, table: str, sel: _Registered) -> int | None:
    """The largest ``step`` of ``table`` among the runs of ``sel``.

    When ``sel`` holds every run of the store this is the whole table's maximum, which DuckDB
    answers from its column statistics without reading a row (0.3 s less over 36 M layer
    rows): the store's tables hold rows of the runs in ``runs`` only (the ingest inserts and
    deletes a run in every table in one transaction).
    """
    if sel.whole:
        sql = f"SELECT max(step) AS m FROM {table}"
    else:
        sql = f"SELECT max(t.step) AS m FROM {table} t JOIN {sel.name} r USING (run_id)"
    m = _frame(con, sql).item()
    return None if m is None else int(m)


def _check_runs(runs: pl.DataFrame, what: str) -> None:
    missing = [c for c in ("run_id", "config", "failed") if c not in runs.columns]
    if missing:
        raise SelectionError(f"{what}: the runs frame lacks {', '.join(missing)}")


def loss_curves_data(
    store: Any,
    runs: pl.DataFrame,
    *,
    points: int = DEFAULT_LOSS_POINTS,
    max_runs: int = DEFAULT_MAX_RUNS,
    row_budget: int = DEFAULT_ROW_BUDGET,
) -> pl.DataFrame:
    """Training-loss curves, bucketed (see the module docstring for the rule).

    Returns
    -------
    With ``runs.height <= max_runs``: one row per (run, bucket) with ``run_id``, ``config``,
    ``failed``, ``step`` (bucket's first step), ``loss`` (mean of finite losses, nats) -
    for :func:`stabstat.charts.loss_curves`. Otherwise one row per (config, status, bucket)
    with ``config``, ``status``, ``step``, ``q10``, ``median``, ``q90``, ``runs`` - for
    :func:`stabstat.charts.loss_bands`. Sorted, so the result is deterministic.
    """
    _check_runs(runs, "loss_curves_data")
    con = _con(store)
    n = runs.height
    if n == 0:
        return pl.DataFrame()
    reg = _Registered(con, runs, "_stabstat_sel_runs")
    with reg as sel:
        max_step = _max_step(con, "steps", reg)
        if max_step is None:
            return pl.DataFrame()
        if n <= max_runs:
            p = max(20, min(points, row_budget // max(1, n)))
            w = bucket_width(max_step, p)
            sql = f"""
                SELECT s.run_id, r.config, r.failed,
                       ((s.step - 1) // {w}) * {w} + 1 AS step,
                       favg(s.loss) FILTER (WHERE isfinite(s.loss)) AS loss
                FROM steps s JOIN {sel} r USING (run_id)
                WHERE s.loss IS NOT NULL
                GROUP BY ALL
                HAVING loss IS NOT NULL
                ORDER BY s.run_id, step
            """
        else:
            w = bucket_width(max_step, points)
            sql = f"""
                WITH per_run AS (
                    SELECT r.k, (s.step - 1) // {w} AS b,
                           favg(s.loss) FILTER (WHERE isfinite(s.loss)) AS loss
                    FROM steps s JOIN {sel} r USING (run_id)
                    WHERE s.loss IS NOT NULL
                    GROUP BY r.k, (s.step - 1) // {w}
                )
                SELECT config, status, step, q[1] AS q10, q[2] AS median, q[3] AS q90, runs
                FROM (
                    SELECT r.config,
                           CASE WHEN r.failed THEN 'failed' ELSE 'successful' END AS status,
                           p.b * {w} + 1 AS step,
                           quantile_cont(p.loss, [0.1, 0.5, 0.9]) AS q,
                           count(*) AS runs
                    FROM per_run p JOIN {sel} r USING (k) WHERE p.loss IS NOT NULL
                    GROUP BY ALL
                )
                ORDER BY config, status, step
            """
        return _frame(con, sql)


def layer_gradients_data(
    store: Any,
    runs: pl.DataFrame,
    *,
    points: int = DEFAULT_GRAD_POINTS,
) -> pl.DataFrame:
    """Per-layer gradient norms, failed vs successful, bucketed over steps.

    Returns
    -------
    One row per (status, layer, bucket): ``status`` ("failed"/"successful"), ``layer``,
    ``depth``, ``step`` (bucket's first step), ``q25``, ``median``, ``q75`` (quantiles over
    runs of each run's geometric-mean norm in the bucket), ``runs`` (runs contributing).
    Sorted.
    Empty when no layer gradients were logged.
    """
    _check_runs(runs, "layer_gradients_data")
    con = _con(store)
    if runs.height == 0:
        return pl.DataFrame()
    reg = _Registered(con, runs, "_stabstat_sel_runs")
    with reg as sel:
        max_step = _max_step(con, "layer_grads", reg)
        if max_step is None:
            return pl.DataFrame()
        w = bucket_width(max_step, points)
        # Two stages: a geometric mean per (run, layer, bucket) - norms span orders of
        # magnitude, and every run then weighs the same however many steps it logged - and
        # quantiles over runs. Quantiles over all 36M raw rows of a big sweep cost 10x more.
        # The three quartiles come from one quantile_cont call (one sort per group, the same
        # interpolated values as three calls; 30% less time for this stage). Stage one
        # groups by the run's integer ``k`` and the bucket's index (the join replaces an IN
        # filter that hashed every row's run_id anyway): 1.8 M groups of small keys.
        sql = f"""
            WITH per_run AS (
                SELECT r.k, g.layer, min(g.depth) AS depth, (g.step - 1) // {w} AS b,
                       exp(favg(ln(g.grad_norm))) AS norm
                FROM layer_grads g JOIN {sel} r USING (run_id)
                WHERE isfinite(g.grad_norm) AND g.grad_norm > 0
                GROUP BY r.k, g.layer, (g.step - 1) // {w}
            )
            SELECT status, layer, depth, step, q[1] AS q25, q[2] AS median, q[3] AS q75, runs
            FROM (
                SELECT CASE WHEN r.failed THEN 'failed' ELSE 'successful' END AS status,
                       p.layer, min(p.depth) AS depth, p.b * {w} + 1 AS step,
                       quantile_cont(p.norm, [0.25, 0.5, 0.75]) AS q,
                       count(*) AS runs
                FROM per_run p JOIN {sel} r USING (k)
                GROUP BY status, p.layer, p.b
            )
            ORDER BY status, depth, layer, step
        """
        return _frame(con, sql)
