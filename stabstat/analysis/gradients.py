"""``gradients``: the vanishing-gradient signature of failed runs (Mosbach et al. 2021, §5).

The SQL over ``layer_grads`` / ``steps`` lives here (:func:`_norm_tables`): per run the
lower layers' combined norm per step (or the total ``grad_norm`` when a run has no
per-layer norms), its first value and median, the loss at the start and end of training,
and each layer's own median / first ratio. The selected runs go in as a temp table.

RNG salts (``Settings.rng``): 9 the log10-ratio median difference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from stabstat import stats as S
from stabstat.analysis.results import (
    AnalysisResult,
    CollapseVsFailure,
    FailureCount,
    GradientGroup,
    GradientRun,
    Interval,
    LayerRatio,
    Log10RatioMedianDifference,
    Row,
    result_settings,
)
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from stabstat.store import Store

__all__ = ["gradients", "gradients_frame"]


def gradients(store: Store, *, by: str | None = None, selection: Selection | None = None,
              settings: Settings | None = None, max_depth: int = 2, steps: int | None = None,
              collapse_factor: float = 10.0, plateau: float = 0.8) -> AnalysisResult:
    """The vanishing-gradient signature of failed runs (Mosbach et al. 2021, section 5).

    Per run: the *lower layers* are those with ``depth <= max_depth`` (0 = embeddings,
    1 = first encoder layer, ...); their combined norm per step is
    ``sqrt(sum of squared layer norms)``. ``ratio`` = median of that norm over the first
    ``steps`` logged steps (all when None) divided by its value at the first logged step.
    A run is *collapsed* when ``ratio <= 1 / collapse_factor`` while its training loss
    plateaus: the mean of its last logged losses is at least ``plateau`` times the mean of
    its first ones (windows: a quarter of the logged losses, at most 10 each). Runs without per-layer norms (e.g. HF Trainer logs) use the total
    ``grad_norm`` of the steps table instead (``source = "total"``).
    """
    runset = select_runs(store, [by] if by else [], selection=selection)
    return gradients_frame(store, runset, by=runset.by[0] if by else None, settings=settings,
                           max_depth=max_depth, steps=steps, collapse_factor=collapse_factor, plateau=plateau)


def gradients_frame(store: Store | duckdb.DuckDBPyConnection, runset: RunSet, *, by: str | None = None,
                    settings: Settings | None = None,
                    max_depth: int = 2, steps: int | None = None, collapse_factor: float = 10.0,
                    plateau: float = 0.8, per_layer: bool = True, ratio_test: bool = True) -> AnalysisResult:
    """:func:`gradients` of an already selected ``runset`` (``by``: one of its factors, or None
    to group by failure status only; ``store`` may also be a DuckDB connection to the store's
    database, e.g. a cursor of another thread). ``per_layer=False`` skips the per-layer section
    (``sections["layers"]`` empty; it reads every layer's norms, the costliest query) and
    ``ratio_test=False`` the bootstrap of the log10-ratio median difference: the report
    shows neither. The other rows are the same either way.
    """
    import polars as pl

    cfg = settings or Settings()
    frame = runset.frame
    con: duckdb.DuckDBPyConnection = store.con if hasattr(store, "con") else store
    t = _norm_tables(con, frame["run_id"].to_list(), max_depth, steps, per_layer=per_layer)
    norms = pl.concat([t.layer, t.total], how="vertical_relaxed") if t.total.height else t.layer
    if norms.height == 0:
        raise SelectionError("the selected runs have neither per-layer gradient norms (layer_grads) nor a "
                             "total grad_norm in their steps; nothing to analyse")
    keep = ["run_id", "failed", *([by] if by else [])]
    runs = (frame.select(keep).join(norms, on="run_id", how="inner").join(t.losses, on="run_id", how="left")
            .with_columns(ratio=pl.col("median_norm") / pl.col("first_norm"),
                          loss_ratio=pl.col("loss_end") / pl.col("loss_start")))
    runs = runs.with_columns(
        plateau=(pl.col("loss_ratio") >= plateau).fill_null(False),
        collapsed=((pl.col("ratio") <= 1.0 / collapse_factor) & (pl.col("loss_ratio") >= plateau)).fill_null(False),
    ).sort("run_id")
    warnings = list(runset.warnings)
    missing = frame.height - runs.height
    if missing:
        warnings.append(f"{missing} run(s) have no gradient norms and are left out")
    if t.total.height:
        warnings.append(f"{t.total.height} run(s) have no per-layer norms: their total grad_norm is used")
    return AnalysisResult("gradients", (by,) if by else (), _groups(runs, by, cfg.confidence),
                          _tests(runs, cfg, ratio_test=ratio_test),
                          result_settings(runset, cfg, "gradients", max_depth=max_depth, steps=steps,
                                          collapse_factor=collapse_factor, plateau=plateau,
                                          lower_layers=f"depth <= {max_depth}"),
                          warnings, {"runs": _run_rows(runs, by), "layers": _layer_rows(t.per_depth, frame)})


_PER_DEPTH_EMPTY = "SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS layer, NULL::INTEGER AS depth, " \
                   "NULL::DOUBLE AS ratio LIMIT 0"


class _NormTables(NamedTuple):
    layer: pl.DataFrame  #: run_id, first_norm, median_norm, n_steps, source ('layers')
    total: pl.DataFrame  #: the same from steps.grad_norm for runs without layer_grads ('total')
    losses: pl.DataFrame  #: run_id, loss_start, loss_end
    per_depth: pl.DataFrame  #: run_id, layer, depth, ratio (median / first norm of that layer)


def _norm_tables(con: duckdb.DuckDBPyConnection, ids: list[str], max_depth: int, steps: int | None, *,
                 per_layer: bool = True) -> _NormTables:
    """The per-run gradient-norm and loss summaries of the runs ``ids`` (first ``steps`` steps);
    ``per_depth`` is left empty unless ``per_layer``."""
    from stabstat.store import fetch_frame

    step_cap = "" if steps is None else f" AND step <= {int(steps)}"
    # ``k``: the run's integer key, which the per-step aggregate groups by instead of the
    # run_id string (4 M (run, step) groups of a big sweep: a third faster).
    con.execute("CREATE OR REPLACE TEMP TABLE __sel_ids AS SELECT unnest(?::VARCHAR[]) AS run_id, "
                "unnest(range(len(?::VARCHAR[])))::INTEGER AS k", [ids, ids])
    try:
        # The first norm (arg_min by step) and the median come from one aggregate per run over
        # its per-step lower-layer norms; steps are unique there, so arg_min has no ties.
        layer = fetch_frame(con, f"""
            WITH lower AS (SELECT s.k, g.step, sqrt(sum(g.grad_norm * g.grad_norm)) AS norm
                           FROM layer_grads g JOIN __sel_ids s USING (run_id)
                           WHERE g.depth <= ?{step_cap.replace("step", "g.step")}
                           GROUP BY s.k, g.step),
            per_run AS (SELECT k, arg_min(norm, step) AS first_norm, median(norm) AS median_norm,
                               count(*) AS n_steps
                        FROM lower GROUP BY k)
            SELECT s.run_id, p.first_norm, p.median_norm, p.n_steps, 'layers' AS source
            FROM per_run p JOIN __sel_ids s USING (k)""", [max_depth])
        # Runs without per-layer norms fall back on the total grad_norm. When every run has
        # lower-layer rows there are none, and the scan of all layer run_ids is skipped.
        total = _total_norms(con, layer.height < len(ids), step_cap)
        # Start and end windows: the first and last quarter of the logged losses, at most 10
        # each (HF Trainer logs have few points; the windows must not overlap). min_by/max_by
        # keep the 10 first/last losses per run inside the aggregate (no sort of every step,
        # as run_training; 20x faster than two row_number() windows), then the first k of each
        # are averaged, latest step first: the summation order of the windowed avg() it
        # replaced, so the values are the same to the last bit.
        losses = fetch_frame(con, """
            WITH l AS (SELECT run_id, count(*) AS n, min_by(loss, step, 10) AS first10,
                              max_by(loss, step, 10) AS last10
                       FROM steps WHERE run_id IN (SELECT run_id FROM __sel_ids) AND loss IS NOT NULL
                       GROUP BY run_id)
            SELECT run_id, list_avg(list_reverse(first10[1:greatest(1, least(10, n // 4))])) AS loss_start,
                   list_avg(last10[1:greatest(1, least(10, n // 4))]) AS loss_end
            FROM l""", None)
        if not per_layer:
            return _NormTables(layer, total, losses, fetch_frame(con, _PER_DEPTH_EMPTY, None))
        per_depth = fetch_frame(con, f"""
            WITH lg AS (SELECT * FROM layer_grads WHERE run_id IN (SELECT run_id FROM __sel_ids){step_cap}),
            firsts AS (SELECT run_id, layer, depth, arg_min(grad_norm, step) AS first_norm
                       FROM lg GROUP BY run_id, layer, depth)
            SELECT lg.run_id, lg.layer, lg.depth, median(lg.grad_norm) / nullif(f.first_norm, 0) AS ratio
            FROM lg JOIN firsts f USING (run_id, layer, depth)
            GROUP BY lg.run_id, lg.layer, lg.depth, f.first_norm""", None)
    finally:
        con.execute("DROP TABLE IF EXISTS __sel_ids")
    return _NormTables(layer, total, losses, per_depth)


def _total_norms(con: duckdb.DuckDBPyConnection, needed: bool, step_cap: str) -> pl.DataFrame:
    """First and median total ``grad_norm`` of the runs of ``__sel_ids`` without any
    ``layer_grads`` row (``run_id, first_norm, median_norm, n_steps, source='total'``); the
    query is run only when ``needed`` (an empty frame of the same columns otherwise)."""
    from stabstat.store import fetch_frame

    only_if = "" if needed else " AND false"
    return fetch_frame(con, f"""
        WITH st AS (SELECT run_id, step, grad_norm AS norm FROM steps
                    WHERE run_id IN (SELECT run_id FROM __sel_ids){only_if}
                      AND run_id NOT IN (SELECT DISTINCT run_id FROM layer_grads)
                      AND grad_norm IS NOT NULL AND isfinite(grad_norm){step_cap}),
        firsts AS (SELECT run_id, arg_min(norm, step) AS first_norm FROM st GROUP BY run_id)
        SELECT s.run_id, f.first_norm, median(s.norm) AS median_norm, count(*) AS n_steps, 'total' AS source
        FROM st s JOIN firsts f USING (run_id) GROUP BY s.run_id, f.first_norm""", None)


def _groups(runs: pl.DataFrame, by: str | None, confidence: float) -> list[GradientGroup]:
    """One row per failure status (x level of ``by``), sorted by the keys as text."""
    group_cols = (["failed"] + ([by] if by else []))
    groups = []
    for key, part in sorted(runs.group_by(group_cols), key=lambda kv: tuple(str(v) for v in kv[0])):
        ratio = part["ratio"].drop_nulls().to_numpy()
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        coll = S.rate_interval(int(part["collapsed"].sum()), part.height, confidence=confidence)
        groups.append(GradientGroup(
            key[0], dict(zip(group_cols[1:], key[1:], strict=True)), part.height, FailureCount.of(coll),
            median_ratio=float(np.median(ratio)) if ratio.size else math.nan,
            ratio_q25=float(np.quantile(ratio, 0.25)) if ratio.size else math.nan,
            ratio_q75=float(np.quantile(ratio, 0.75)) if ratio.size else math.nan,
            median_loss_ratio=_median(part["loss_ratio"].drop_nulls().to_numpy())))
    return groups


def _tests(runs: pl.DataFrame, cfg: Settings, *, ratio_test: bool = True) -> list[Row]:
    """Failed against successful runs: collapse (Fisher exact), median log10 ratio (bootstrap,
    unless not ``ratio_test``)."""
    import polars as pl

    tests: list[Row] = []
    known = runs.filter(pl.col("failed").is_not_null())
    fa = known.filter(pl.col("failed"))
    su = known.filter(pl.col("failed").not_())
    if fa.height and su.height:
        ka, kb = int(fa["collapsed"].sum()), int(su["collapsed"].sum())
        p = S.fisher_exact(ka, fa.height, kb, su.height)
        tests.append(CollapseVsFailure(ka / fa.height - kb / su.height, p, fa.height, su.height))
        la = np.log10(fa["ratio"].drop_nulls().to_numpy())
        lb = np.log10(su["ratio"].drop_nulls().to_numpy())
        la, lb = la[np.isfinite(la)], lb[np.isfinite(lb)]
        if ratio_test and la.size >= 2 and lb.size >= 2:
            d = S.bootstrap_diff(la, lb, statistic="median", method=cfg.ci_method, resamples=cfg.resamples,
                                 confidence=cfg.confidence, rng=cfg.rng(9))
            tests.append(Log10RatioMedianDifference(Interval.of(d), d.method, int(la.size), int(lb.size)))
    return tests


def _run_rows(runs: pl.DataFrame, by: str | None) -> list[GradientRun]:
    cols = ["run_id", *([by] if by else []), "failed", "source", "n_steps", "first_norm", "median_norm", "ratio",
            "loss_start", "loss_end", "loss_ratio", "collapsed"]
    return [GradientRun(d["run_id"], {by: d[by]} if by else {}, d["failed"], d["source"], d["n_steps"],
                        d["first_norm"], d["median_norm"], d["ratio"], d["loss_start"], d["loss_end"],
                        d["loss_ratio"], d["collapsed"])
            for d in runs.select(cols).to_dicts()]


def _layer_rows(per_depth: pl.DataFrame, frame: pl.DataFrame) -> list[LayerRatio]:
    """Per (depth, layer, failure status): runs and the median of the layer's ratio."""
    import polars as pl

    if not per_depth.height:
        return []
    pdj = per_depth.join(frame.select("run_id", "failed"), on="run_id", how="inner")
    agg = (pdj.group_by(["depth", "layer", "failed"])
           .agg(pl.len().alias("n_runs"), pl.col("ratio").median().alias("median_ratio"))
           .sort(["depth", "layer", "failed"], nulls_last=True))
    return [LayerRatio(**d) for d in agg.to_dicts()]


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan
