"""stabstat from Python: polars frames, bootstrap comparisons, failure rates, claims and charts.

A notebook-style script: each ``# %%`` cell runs on its own in VS Code, PyCharm or Jupyter
(jupytext), or run the whole file::

    python examples/api_example.py

It reads the pre-recorded CPU demo runs in ``examples/recorded/runs/`` (MiniLM, BERT's recipe
without bias correction at lr 1e-4 against the mosbach2021 recipe), ingests them into a DuckDB
file and writes its charts to ``api-example-out/``. Environment variables change the inputs:

=============================  ==========================================================
``STABSTAT_EXAMPLE_RUNS``      folder of run directories (default ``examples/recorded/runs``)
``STABSTAT_EXAMPLE_OUT``       output folder for the database and charts (default ``api-example-out``)
``STABSTAT_EXAMPLE_BY``        factor to compare (default ``bias_correction``)
``STABSTAT_EXAMPLE_CLAIMS``    claims file to check (default ``examples/demo/claims.toml``; empty: skip)
``STABSTAT_EXAMPLE_RESAMPLES`` bootstrap resamples (default 10,000)
=============================  ==========================================================
"""

# %% [markdown]
# ## Set-up
# Only the analysis side is needed here (`pip install stabstat`): no torch, no GPU.

# %%
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

import stabstat
import stabstat.ingest
from stabstat import charts
from stabstat.analysis import Selection, Settings, compare, failure_rate, select_runs
from stabstat.claims import check

# In a notebook there is no __file__: paths are then relative to the repository root.
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path("examples")
RUNS = Path(os.environ.get("STABSTAT_EXAMPLE_RUNS", HERE / "recorded" / "runs"))
OUT = Path(os.environ.get("STABSTAT_EXAMPLE_OUT", "api-example-out"))
BY = os.environ.get("STABSTAT_EXAMPLE_BY", "bias_correction")
CLAIMS = os.environ.get("STABSTAT_EXAMPLE_CLAIMS", str(HERE / "demo" / "claims.toml"))
RESAMPLES = int(os.environ.get("STABSTAT_EXAMPLE_RESAMPLES", "10000"))

if not RUNS.is_dir():
    raise SystemExit(f"{RUNS}: no such folder of run directories; set STABSTAT_EXAMPLE_RUNS "
                     "to the --out folder of a stabstat-run sweep")
OUT.mkdir(parents=True, exist_ok=True)
DB = OUT / "api_example.duckdb"

# %% [markdown]
# ## Ingest
# `stabstat.ingest.ingest` validates every run directory and loads it into DuckDB in one transaction per
# batch. It is idempotent: running this cell again reports the runs as unchanged.

# %%
with stabstat.open(str(DB), read_only=False) as store:
    ingest = stabstat.ingest.ingest(store, [RUNS])
print(ingest.summary())
for rejected in ingest.rejected:
    print("rejected:", rejected)

# %% [markdown]
# ## Runs and summaries are polars DataFrames
# `store.runs()`: one row per run with its factors (every scalar config key) and the final value
# of every metric as a `<split>/<metric>` column. `store.summary()`: one row per run x split x
# metric with the final and best value, the majority-class baseline and the training outcome.

# %%
store = stabstat.open(str(DB))  # read-only: many processes may read at once
runs = store.runs()
print(runs.select("run_id", "status", BY, "seed", "train_loss_final", pl.selectors.starts_with("dev/")))

summary = store.summary(split="dev", metric="accuracy")
# The failure rule by hand (Mosbach et al. 2021): final dev accuracy at or below the majority.
by_hand = (
    summary.filter(pl.col("status").is_in(["completed", "diverged"]))
    .with_columns(failed=(pl.col("final_value") <= pl.col("majority") + 1e-9).fill_null(True) | pl.col("diverged"))
    .group_by(BY)
    .agg(runs=pl.len(), failed=pl.col("failed").sum(), mean_accuracy=pl.col("final_value").mean())
    .sort(BY)
)
print(by_hand)

# Plain SQL works too, on the same tables (read-only); the result is a polars frame.
print(store.query("SELECT status, count(*) AS runs FROM runs GROUP BY status ORDER BY status"))

# %% [markdown]
# ## Compare the levels of a factor
# Bootstrap CIs (BCa, fixed seed: the same data give the same numbers), failure rates with Wilson
# intervals, pairwise differences with permutation p-values (Holm-adjusted) and spread tests.

# %%
settings = Settings(resamples=RESAMPLES, seed=0)
result = compare(store, BY, selection=Selection(split="dev", metric="accuracy"), settings=settings)
groups = result.to_frame()
print(groups.select(BY, "n_runs", "n_failed", "failure_rate", "mean", "ci_low", "ci_high", "std", "median"))
tests = result.to_frame("tests")
print(tests.select("test", "a", "b", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted"))
for warning in result.warnings:
    print("warning:", warning)
# Everything `stabstat compare --format json` prints, provenance included:
assert result.to_dict()["settings"]["resamples"] == RESAMPLES

# %% [markdown]
# ## Failure rate

# %%
rates = failure_rate(store, BY, settings=settings)
rate_frame = rates.to_frame()
print(rate_frame.select(BY, "n_runs", "n_failed", "failure_rate", "failure_ci_low", "failure_ci_high",
                        "failure_ci_method"))
# The hand-made count above and the library agree.
assert rate_frame.sort(BY)["n_failed"].to_list() == by_hand["failed"].to_list()

# %% [markdown]
# ## Charts (Altair)
# Every run's dev accuracy per configuration with the mean's CI and the majority line (the
# paper's Figure 1 view), and the failure rate with its interval. Charts render inline in
# Jupyter; `chart.save("x.html")` writes a page that loads Vega from a CDN (add `inline=True`
# for a self-contained page), `charts.save` writes SVG or PNG offline through vl-convert.

# %%
runset = select_runs(store, [BY], selection=Selection(split="dev", metric="accuracy"))
per_run = runset.frame.select(
    pl.col(BY).cast(pl.String).alias("config"), "run_id", "value", "failed", "majority"
)
intervals = groups.select(
    pl.col(BY).cast(pl.String).alias("config"), pl.col("mean").alias("point"), "ci_low", "ci_high"
)
figure = charts.metric_by_config(per_run, intervals, metric="dev accuracy", config_title=BY,
                                 title=f"dev accuracy by {BY}")
figure.save(str(OUT / "metric_by_config.html"))
charts.save(figure, str(OUT / "metric_by_config.svg"))

failures = charts.failure_rate(
    rate_frame.select(pl.col(BY).alias("level"), pl.col("n_runs").alias("n"),
                      pl.col("n_failed").alias("failures"), pl.col("failure_rate").alias("rate"),
                      pl.col("failure_ci_low").alias("ci_low"), pl.col("failure_ci_high").alias("ci_high")),
    factor=BY,
)
charts.save(failures, str(OUT / "failure_rate.svg"))
print("charts:", ", ".join(sorted(p.name for p in OUT.iterdir() if p.suffix in (".html", ".svg"))))

# %% [markdown]
# ## Claims
# A claims file states what should hold; each claim gets PASS, FAIL or INCONCLUSIVE with its
# evidence. INCONCLUSIVE is the honest answer when a handful of seeds cannot decide.

# %%
if CLAIMS:
    verdicts = check(store, CLAIMS, settings=settings)
    print(verdicts.to_frame().select("verdict", "name", "estimate", "ci_low", "ci_high", "p_adjusted"))
    print(verdicts.counts())

# %%
store.close()
