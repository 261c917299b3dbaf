"""``stabstat ingest | runs | query | schema``: the DuckDB store from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stabstat.cli._options import db_option, echo_frame, echo_json, format_option
from stabstat.cli._source_options import format_choice, format_help, prepare_options, source_options


class _PathOrURL(click.Path):
    """An existing local path, or an object-store URL (``s3://bucket/prefix``) passed as is."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "://" in value and not value.startswith("file://"):
            return value
        return super().convert(value, param, ctx)


class _ProgressBar:
    """The ingest's ``progress(done, total)`` callback as a click progress bar on stderr,
    opened at the first call (when the number of runs found is known)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="ingesting", file=sys.stderr)
            self.bar.__enter__()
        self.bar.length = total  # grows when a table file holds many runs
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=_PathOrURL(exists=True))
@db_option
@click.option(
    "--format", "fmt", type=format_choice(), default="auto", show_default=True, help=format_help(),
)
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Factor for every run ingested (repeatable), over the runs' own config; true/false, numbers "
         "and text are typed.",
)
@source_options
@click.option(
    "--validate", "validate", type=click.Choice(["fast", "full"]), default="fast", show_default=True,
    help="fast: contract checks without reading rows + database constraints; full: also duplicate keys and row order.",
)
@click.option(
    "--progress/--no-progress", default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--s3-endpoint", default=None, metavar="URL",
              help="S3-compatible endpoint for s3:// paths (default $AWS_ENDPOINT_URL, else AWS).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Local mirror of remote runs (default $STABSTAT_CACHE_DIR or ~/.cache/stabstat/remote).")
def ingest(
    paths: tuple[str, ...], db: str, fmt: str, params: tuple[str, ...], validate: str,
    progress: bool | None, as_json: bool, s3_endpoint: str | None = None, cache_dir: str | None = None,
    **source: Any,
) -> None:
    """Load run directories (or other tools' logs) into a DuckDB database.

    PATHS are run directories, folders searched recursively, or marker files:
    run.json, trainer_state.json (Hugging Face), events.out.tfevents.*
    (TensorBoard), metrics.csv (Lightning CSVLogger), mlruns/<exp>/<run>/meta.yaml
    (MLflow file store), wandb/run-*/ (W&B), mlflow+http://host:port/#experiment=NAME
    (an MLflow tracking server), or a table file
    (CSV/TSV/Parquet/JSONL holding many runs; read only when named, or with
    --format table under the folders named). Ingest is idempotent: unchanged runs are skipped,
    a run whose files changed is replaced as a whole, and each batch of runs is
    one transaction (a kill never leaves part of a run).

    A run that cannot be ingested (fails validation, corrupt Parquet, malformed
    JSON, a factor whose type conflicts with the stored column) is reported on
    stderr as one line and skipped; the other runs are still ingested.

    Runs of other tools take factors from key=value folder names on the path,
    from their own files (a run.json/config.json beside the logs, Lightning's
    hparams.yaml, TensorBoard's hparams) and from --param (every format).
    Logged names map to stabstat columns by documented rules (README: "Logs
    people already have"); --map overrides them. Unmapped names are kept as
    split 'train'. For a table file, the column roles inferred are printed.

    Exit code: 0 when every run was ingested or unchanged, 1 when any was
    rejected, 2 on an error (e.g. the database is in use).

    \b
    Example:
        stabstat ingest runs/
        stabstat ingest runs/ --db sweep.duckdb --progress
        stabstat ingest hf_out/ --format hf --param task=rte --param model=bert-base
        stabstat ingest lightning_logs/ --param task=rte
        stabstat ingest tb_runs/ --map acc=dev/accuracy --map Loss/train=steps/loss
        stabstat ingest results.csv --shape results --factor lr --factor seed
        stabstat ingest history.parquet --run-col run --step-col _step
        stabstat ingest s3://my-bucket/sweeps/bias --s3-endpoint http://minio:9000
        stabstat ingest mlruns/ wandb/                # MLflow file store, W&B run folders
        stabstat ingest 'mlflow+http://127.0.0.1:5000/#experiment=sweep'
    """
    from stabstat.ingest.remote import ingest_paths
    from stabstat.ingest.runinfo import parse_param
    from stabstat.remote import storage_options_for
    from stabstat.store import Store

    parsed = dict(parse_param(p) for p in params)
    inferred: list[str] = []  # what the table adapter inferred (printed after the ingest)
    options = prepare_options(source, inform=inferred.append)
    if progress is None:
        progress = sys.stderr.isatty()

    def on_rejected(rej: object) -> None:
        click.secho(str(rej), fg="yellow", err=True)

    bar = _ProgressBar() if progress else None
    created = db != ":memory:" and not Path(db).exists()
    report = None
    try:
        with Store.open(db, read_only=False) as store:
            # s3:// URLs are mirrored to a local cache first, then ingested like folders
            report = ingest_paths(
                store, list(paths), storage_options=storage_options_for("s3://", endpoint=s3_endpoint),
                cache_dir=cache_dir, fmt=fmt, params=parsed, options=options, progress=bar, validate=validate,
                on_rejected=None if as_json else on_rejected,
            )
    finally:
        if bar is not None:
            bar.close()
        if created and (report is None or not report.ingested):
            _remove_new_database(db)  # an empty database would later read as "no runs", exit 0
    for line in inferred:
        click.echo(line, err=True)
    if as_json:
        echo_json(report.to_dict())
    else:
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"{report.summary()} -> {db}")
    sys.exit(0 if report.ok else 1)


def _remove_new_database(db: str) -> None:
    """Delete a database file this ingest created but wrote no run into (and its WAL)."""
    for p in (Path(db), Path(db + ".wal")):
        p.unlink(missing_ok=True)


@click.command("runs")
@db_option
@format_option
@click.option("--all-columns", is_flag=True, help="Table format: also show columns that are the same for every run.")
def runs(db: str, fmt: str, all_columns: bool) -> None:
    """List ingested runs with their factors and final metrics.

    One row per run: run_id, status, every factor, train_loss_final (mean of the
    last 10 logged training losses), diverged, and the final value of every
    evaluated metric as a column SPLIT/METRIC (e.g. dev/accuracy). The table
    format leaves out factors that are the same for every run and lists them
    above the table (--all-columns keeps them); json and csv have every column.

    \b
    Example:
        stabstat runs
        stabstat runs --format csv > runs.csv
    """
    from stabstat.store import Store

    with Store.open(db, read_only=True) as store:
        frame = store.runs()
        factors = list(store.factors())
    if fmt == "table" and not all_columns and frame.height > 1:
        same = [c for c in [*factors, "source_format"] if c in frame.columns and frame[c].n_unique() == 1]
        if same:
            click.echo("same for all runs: " + ", ".join(f"{c}={frame[c][0]}" for c in same))
            frame = frame.drop(same)
    echo_frame(frame, fmt)


@click.command("query")
@click.argument("sql")
@db_option
@format_option
def query(sql: str, db: str, fmt: str) -> None:
    """Run one read-only SQL statement on the database.

    Tables: runs (one column per factor), steps, layer_grads, evals,
    predictions, majority, ingests; views: run_summary, run_training.
    Writing statements are refused. `stabstat schema` lists every column.
    This is your own SQL, so unlike --where of the analysis commands it keeps
    DuckDB's read access to files (read_parquet, read_csv, ...).

    \b
    Example:
        stabstat query "SELECT bias_correction, count(*) FROM runs GROUP BY ALL"
        stabstat query "SELECT * FROM run_summary WHERE metric = 'accuracy'" --format csv
        stabstat query "SELECT count(*) FROM read_parquet('runs/*/steps.parquet')"
    """
    from stabstat.store import Store

    with Store.open(db, read_only=True) as store:
        frame = store.query(sql)
    echo_frame(frame, fmt)


@click.command("schema")
@db_option
@format_option
def schema(db: str, fmt: str) -> None:
    """Show the database's tables and views with their columns and types.

    \b
    Example:
        stabstat schema
        stabstat schema --format json
    """
    from stabstat.store import Store

    with Store.open(db, read_only=True) as store:
        frame = store.schema()
    if fmt != "table":
        echo_frame(frame, fmt)
        return
    current = None
    for row in frame.iter_rows(named=True):
        if row["table"] != current:
            current = row["table"]
            rows = f", {row['rows']} rows" if row["rows"] is not None else ""
            click.echo(f"{current} ({row['kind']}{rows})")
        click.echo(f"  {row['column']:<24} {row['type']}")
