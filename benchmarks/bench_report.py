"""Report benchmark: a report over 2,000 runs x 2,000 steps (layer gradients at every step).

The database is generated directly with DuckDB SQL into a real stabstat store (the schema of
``Store.open(read_only=False)``), which takes seconds instead of writing 2,000 run directories.
Measured, interleaved, medians over repeats:

* ``report build``: :func:`stabstat.report.build_report` + ``to_html`` (ours) against plain
  DuckDB SQL computing the aggregates the page shows (reference, :func:`_reference`): the
  per-run final metric, the loss bands, the per-layer gradient quartiles of per-run
  geometric means, the collapse table's per-run lower-layer norms and loss windows, fetched
  to Arrow. The ratio says how much the statistics, the chart building and the page cost on
  top of computing the page's aggregates. A second row keeps the first passes' reference
  (each table read once, not the page's aggregates) for comparison.
* ``page size``: bytes of the HTML file, against the documented budget
  (:data:`stabstat.report.PAGE_BUDGET_BYTES`).
* ``browser render``: seconds until headless Chromium has drawn every chart (file://, network
  blocked), when ``/usr/bin/chromium`` exists; the reference is the same page's load with the
  chart script removed (bare HTML + the inlined Vega bundle). Every chart must report data
  marks in its scenegraph and a non-blank canvas (pixels read back), or the row fails.

The page's Vega specs are compiled from Vega-Lite when it is written, through a template cache
on disk (:mod:`stabstat.report.vega`); the build row is measured with the cache as the repeats
leave it, and its note gives one build with an empty template cache.

Run alone: ``python -m benchmarks.bench_report [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FULL = {"runs": 2000, "steps": 2000, "configs": 8, "layers": 9, "evals_every": 500}
QUICK = {"runs": 200, "steps": 500, "configs": 4, "layers": 9, "evals_every": 250}


def generate_db(path: Path, *, runs: int, steps: int, configs: int, layers: int,
                evals_every: int) -> Path:
    """Create a stabstat database at ``path`` with synthetic runs, all in DuckDB SQL.

    ``configs`` configurations (bias_correction x n_train) split the runs evenly; a run fails
    with a probability set by its configuration (loss flat at ln 2, lower layers' gradients
    1000x smaller, dev accuracy = majority). Values come from DuckDB's ``hash`` of the run and
    step, so the database is the same on every generation.
    """
    from stabstat.store import Store

    with Store.open(path, read_only=False) as store:
        con = store.con
        con.execute("SET enable_progress_bar = false")
        for name, typ in [("task", "VARCHAR"), ("seed", "BIGINT"), ("lr", "DOUBLE"),
                          ("bias_correction", "BOOLEAN"), ("n_train", "BIGINT"),
                          ("max_steps", "BIGINT")]:
            con.execute(f'ALTER TABLE runs ADD COLUMN IF NOT EXISTS "{name}" {typ}')
        # u(r, k): a uniform number in [0, 1) from the run index and a salt, via DuckDB's hash.
        con.execute("CREATE OR REPLACE MACRO u(a, b) AS (hash(a, b) % 1000003) / 1000003.0")
        con.execute(f"""
            CREATE TEMP TABLE gen AS
            SELECT r, 'run' || lpad(r::VARCHAR, 5, '0') AS run_id,
                   (r % {configs}) AS cfg,
                   (r % {configs}) % 2 = 1 AS bc,
                   CASE WHEN (r % {configs}) // 2 % 2 = 0 THEN 1000 ELSE 5000 END AS n_train,
                   r // {configs} AS seed,
                   u(r, 1) < CASE WHEN (r % {configs}) % 2 = 1 THEN 0.05
                                  WHEN (r % {configs}) // 2 % 2 = 0 THEN 0.5 ELSE 0.25 END
                       AS failed
            FROM range({runs}) t(r)
        """)
        con.execute(f"""
            INSERT INTO runs (run_id, status, status_written, started_at, finished_at,
                              schema_version, task_info, config, environment, source,
                              source_format, fingerprint, ingested_at,
                              task, seed, lr, bias_correction, n_train, max_steps)
            SELECT run_id, 'completed', 'completed',
                   TIMESTAMP '2026-01-01 00:00:00' + to_seconds(r),
                   TIMESTAMP '2026-01-01 01:00:00' + to_seconds(r), 1,
                   '{{"name": "rte", "majority": {{"accuracy": 0.527}},
                     "higher_is_better": {{"accuracy": true}}}}'::JSON,
                   json_object('task', 'rte', 'seed', seed, 'lr', 2e-5, 'bias_correction', bc,
                               'n_train', n_train, 'max_steps', {steps}),
                   '{{"device": "cpu"}}'::JSON, 'generated/' || run_id, 'stabstat',
                   md5(run_id), TIMESTAMP '2026-01-02 00:00:00',
                   'rte', seed, 2e-5, bc, n_train, {steps}
            FROM gen
        """)
        con.execute("INSERT INTO majority SELECT run_id, 'accuracy', 0.527 FROM gen")
        con.execute(f"""
            INSERT INTO steps
            SELECT run_id, s, s / {steps} * 3.0,
                   CASE WHEN failed THEN 0.6931 + 0.02 * (u(r, s) - 0.5)
                        ELSE 0.69 * exp(-s / {steps / 4}) + 0.05 * u(r, s) END,
                   2e-5, 1.0 + u(r, -s), s * 0.1
            FROM gen, range(1, {steps} + 1) t(s)
        """)
        con.execute(f"""
            INSERT INTO layer_grads
            SELECT run_id, s,
                   CASE WHEN d = 0 THEN 'embeddings'
                        WHEN d = {layers - 2} THEN 'pooler'
                        WHEN d = {layers - 1} THEN 'classifier'
                        ELSE 'encoder.layer.' || (d - 1) END,
                   d::INTEGER,
                   0.3 * (d + 1) * (0.8 + 0.4 * u(r * 64 + d, s))
                     * CASE WHEN failed AND d < {layers - 2} AND s > {steps // 5}
                            THEN 1e-3 ELSE 1.0 END
            FROM gen, range(1, {steps} + 1) t(s), range({layers}) l(d)
        """)
        con.execute(f"""
            INSERT INTO evals
            SELECT run_id, s, 'dev', 'accuracy',
                   CASE WHEN failed THEN 0.527
                        ELSE 0.62 + 0.03 * bc::INT + 0.08 * u(r, 7) END
            FROM gen, range({evals_every}, {steps} + 1, {evals_every}) t(s)
        """)
        con.execute("CHECKPOINT")
    return path


def _reference(db: Path) -> float:
    """Plain DuckDB SQL computing the aggregates the page shows, each fetched to Arrow.

    Written as anyone would write it (one statement per figure or table, nothing shared):
    the per-run final metric (the metric and failure figures, the statistics' input); the
    loss bands (each run's mean loss per 10-step bucket, then 10/50/90 % quantiles over runs
    per configuration); the per-layer gradient figures (each run's geometric-mean norm per
    layer and 20-step bucket, then quartiles over runs); the collapse table (the lower
    layers' combined norm per run and step, then its first value and median per run; the
    first and last 10 losses per run). The report also computes the statistics
    (bootstrap CIs, permutation tests), builds the charts and writes the page.
    """
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET enable_progress_bar = false")
    for sql in _REFERENCE_SQL:
        con.sql(sql).to_arrow_table()
    con.close()
    return time.perf_counter() - t0


_REFERENCE_SQL = [
    "SELECT * FROM run_summary WHERE split = 'dev' AND metric = 'accuracy'",
    """WITH per_run AS (SELECT run_id, (step - 1) // 10 AS b, avg(loss) AS loss
                       FROM steps GROUP BY ALL)
       SELECT r.bias_correction, p.b, quantile_cont(p.loss, [0.1, 0.5, 0.9])
       FROM per_run p JOIN runs r USING (run_id) GROUP BY ALL""",
    """WITH per_run AS (SELECT run_id, layer, (step - 1) // 20 AS b,
                              exp(avg(ln(grad_norm))) AS g
                       FROM layer_grads GROUP BY ALL)
       SELECT layer, b, quantile_cont(g, [0.25, 0.5, 0.75]) FROM per_run GROUP BY ALL""",
    """WITH lower AS (SELECT run_id, step, sqrt(sum(grad_norm * grad_norm)) AS norm
                     FROM layer_grads WHERE depth <= 2 GROUP BY ALL)
       SELECT run_id, arg_min(norm, step), median(norm) FROM lower GROUP BY run_id""",
    "SELECT run_id, min_by(loss, step, 10), max_by(loss, step, 10) FROM steps GROUP BY run_id",
]


def _reference_first_passes(db: Path) -> float:
    """The reference of issue 18's first two passes, kept for comparison: the final metric, the
    mean loss per (run, 10-step bucket) and the median raw norm per (layer, 20-step bucket):
    each table read once, but not the page's aggregates (no per-run gradient summaries, no
    collapse table)."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET enable_progress_bar = false")
    con.sql("SELECT * FROM run_summary WHERE split = 'dev' AND metric = 'accuracy'").to_arrow_table()
    con.sql("SELECT run_id, (step - 1) // 10 AS b, avg(loss) FROM steps GROUP BY ALL").to_arrow_table()
    con.sql("SELECT layer, (step - 1) // 20 AS b, median(grad_norm) FROM layer_grads "
            "GROUP BY ALL").to_arrow_table()
    con.close()
    return time.perf_counter() - t0


def _ours(db: Path, out: Path) -> float:
    from stabstat.report import build_report
    from stabstat.store import Store

    t0 = time.perf_counter()
    with Store.open(db) as store:
        rep = build_report(store, by="bias_correction")
        rep.write(out)
    return time.perf_counter() - t0


def _ours_cold_templates(db: Path, out: Path, cache: Path) -> float:
    """One build with an empty Vega template cache (the Vega bundle stays cached in memory)."""
    import os

    before = os.environ.get("STABSTAT_CACHE_DIR")
    os.environ["STABSTAT_CACHE_DIR"] = str(cache)
    try:
        return _ours(db, out)
    finally:
        if before is None:
            del os.environ["STABSTAT_CACHE_DIR"]
        else:
            os.environ["STABSTAT_CACHE_DIR"] = before


def run(quick: bool = False) -> list[dict[str, Any]]:
    from stabstat import report as report_mod

    sizes = QUICK if quick else FULL
    repeats = 2 if quick else 3
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stabstat-bench-report-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        generate_db(db, **sizes)
        gen_s = time.perf_counter() - t0
        out = Path(tmp) / "report.html"
        report_mod.javascript_bundle()  # built once and cached; not part of a report's cost
        ours, ref, ref_old = [], [], []
        for _ in range(repeats):
            ref.append(_reference(db))
            ours.append(_ours(db, out))
            ref_old.append(_reference_first_passes(db))
        size = out.stat().st_size
        label = f"{sizes['runs']} runs x {sizes['steps']} steps"
        note = (f"{sizes['configs']} configs, {sizes['layers']} layers at every step "
                f"({sizes['runs'] * sizes['steps'] * sizes['layers']:,} layer-grad rows); "
                f"db generated in {gen_s:.1f} s")
        cold = _ours_cold_templates(db, out, Path(tmp) / "empty-cache")
        note += f"; one build with an empty Vega template cache {cold:.2f} s"
        o, r = statistics.median(ours), statistics.median(ref)
        rows.append({"benchmark": f"report build, {label}", "ours": o, "reference": r,
                     "unit": "s", "ratio": o / r,
                     "target": "<= 2 (issue 18); reference = plain DuckDB SQL of the page's "
                               "aggregates",
                     "note": note})
        r_old = statistics.median(ref_old)
        rows.append({"benchmark": f"report build vs the first passes' reference, {label}",
                     "ours": o, "reference": r_old, "unit": "s", "ratio": o / r_old,
                     "target": "for comparison with issue 18's earlier figures",
                     "note": "reference: final metric, loss per (run, bucket), median raw norm "
                             "per (layer, bucket): each table once, not the page's aggregates"})
        budget = report_mod.PAGE_BUDGET_BYTES
        rows.append({"benchmark": f"report page size, {label}", "ours": size / 1e6,
                     "reference": budget / 1e6, "unit": "MB", "ratio": size / budget,
                     "target": "ratio <= 1 (page budget)",
                     "note": "of which the inlined Vega bundle "
                             f"{len(report_mod.javascript_bundle()) / 1e6:.2f} MB"})
        from stabstat._browser import find_chromium, render_report

        if find_chromium() is None:
            print("bench_report: no chromium, browser render not measured", file=sys.stderr)
            return rows
        bare = Path(tmp) / "bare.html"
        text = out.read_text(encoding="utf-8")
        # Same page without the render script: the cost of loading ~1 MB of HTML + JS alone.
        cut = text.rindex("<script>\n")
        bare.write_text(text[:cut] + "<script>window.stabstatReady = Promise.resolve({});"
                        "</script></body></html>\n", encoding="utf-8")
        rend, base = [], []
        for _ in range(repeats):
            b = render_report(bare)
            base.append(b.render_s)
            res = render_report(out, screenshot=Path(tmp) / "shot.png")
            if res.console_errors or res.page_errors or res.network_requests:
                raise RuntimeError(f"report did not render cleanly: {res}")
            if not res.marks or min(res.marks.values()) <= 0:
                raise RuntimeError(f"a chart drew nothing: {res.marks}")
            if min(res.painted.get(k, 0) for k in res.chart_ids) <= 1000:
                raise RuntimeError(f"a chart's canvas stayed blank: {res.painted}")
            rend.append(res.render_s)
        o, r = statistics.median(rend), statistics.median(base)
        rows.append({"benchmark": f"browser render, {label}", "ours": o, "reference": r,
                     "unit": "s", "ratio": o / r,
                     "target": "reference = same page without drawing the charts",
                     "note": f"{len(res.marks)} charts (canvas renderer, Vega compiled when the "
                             "page is written, dead invalid-value guards dropped, tooltips on "
                             "hover, a line or area per series instead of a facet subflow per "
                             "series, grid axes folded, no alias data sets), headless chromium, "
                             "file://, offline"})
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for row in run(quick=args.quick):
        print(row)
