"""``stabstat-run`` (also ``python -m runner``): run a sweep file, resumably.

The command only parses options, plans, checks the inputs and drives the runs; the work is in
:func:`runner.sweep.plan`, :meth:`runner.rundirs.RunDirs.pending`, :mod:`runner.pool` (the
local process pool and progress display) or :mod:`runner.launchers` (Slurm, Ray), and
:func:`runner.train.run_planned`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from runner.launchers import launcher_options
from runner.pool import Progress, allowed_cores, finish_sweep, run_local
from schemas.stop_rule import DEFAULT_RULE
from stabstat.errors import StabstatError

__all__ = ["main", "run_cmd"]


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _varying_keys(planned: Sequence[Any]) -> list[str]:
    keys: list[str] = []
    for k in planned[0].config:
        vals = {json.dumps(p.config.get(k), sort_keys=True) for p in planned}
        if len(vals) > 1 and k != "seed":
            keys.append(k)
    return keys


def _dry_run(planned: Sequence[Any], todo_ids: set[str], out: Path | str) -> None:
    from runner.rundirs import RunDirs

    dirs = RunDirs.for_out(out)
    keys = _varying_keys(planned)
    cfg0 = planned[0].config
    fixed = {k: cfg0[k] for k in ("model", "task", "max_steps", "epochs", "n_train", "max_length", "batch_size")
             if k not in keys}
    click.echo(f"{len(planned)} runs planned, {len(todo_ids)} to run, output {out}")
    click.echo("shared: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    header = ["run_id", "status", "seed", *keys]
    rows = [[p.run_id, dirs.status(p.run_id) or "-", str(p.seed), *[str(p.config.get(k)) for k in keys]]
            for p in planned]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def check_inputs(planned: Sequence[Any], data_dir: str | None) -> None:
    """Load every distinct task (and tokenizer) the runs need, so that a missing file, an unknown
    task or a bad label fails before any training starts."""
    from runner.models import load_tokenizer, resolve_model_path
    from runner.tasks import load_task, subsample

    data_keys = ("task", "train_file", "dev_file", "text_column", "text_pair_column", "label_column",
                 "label_values", "metrics")
    seen: dict[str, Any] = {}
    for p in planned:
        cfg = p.config
        resolve_model_path(cfg["model"])
        key = json.dumps([cfg.get(k) for k in data_keys] + [cfg["model"] if cfg["task"] == "synthetic" else None])
        if key not in seen:
            tok = load_tokenizer(cfg["model"]) if str(cfg["task"]).lower() == "synthetic" else None
            seen[key] = load_task(cfg, data_dir=data_dir, tokenizer=tok)
        if cfg.get("n_train") is not None:
            data_seed = cfg["seed"] if cfg.get("data_seed") == "seed" else int(cfg.get("data_seed") or 0)
            # checks n_train against the data size; the subset itself is cheap to redo per run
            subsample(seen[key], cfg["n_train"], data_seed=data_seed)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=str, default="runs", show_default=True,
              help="Folder receiving one run directory per run, or an object-store URL (s3://bucket/prefix).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="GLUE folder holding <TASK>/{train,dev}.tsv (default $STABSTAT_GLUE_DIR, else the hub).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once (processes); each gets max(1, cores // jobs) torch threads.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per run (default: cores // jobs).")
@click.option("--seeds", default=None, help="Replace the file's seeds: a count (8), a range (0-7) or a list (1,2,3).")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--dry-run", is_flag=True, help="Print the planned runs and their status; train nothing.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "rich", "plain"]), default="auto",
              show_default=True, help="Live display on a terminal, plain lines otherwise.")
@click.option("--until-decided", "until_decided", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="CLAIMS.toml",
              help="Run seeds in rounds of --batch, ingest and `stabstat check --sequential` after each, stop when "
                   "every claim is PASS or FAIL (or --max-seeds are used).")
@click.option("--max-seeds", type=click.IntRange(min=1), default=None,
              help="--until-decided: the budget of seeds per configuration [default: the sweep's seeds].")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="--until-decided: seeds added per round (also the first round's).")
@click.option("--db", "db", default=None,
              help="--until-decided: the store to ingest into [default: OUT/stabstat.duckdb].")
@click.option("--stop-doomed", "stop_doomed", default=None, metavar="RULE",
              help="Stop a run its rule predicts to fail, at the rule's check step (status `stopped`, done on "
                   "resume): a rule printed by `stabstat early` (e.g. 'at=40 loss_ratio>=0.9') or `default` "
                   f"('{DEFAULT_RULE}').")
@launcher_options
def run_cmd(sweep_file: Path, out: Any, data_dir: str | None, jobs: int, threads: int | None,
            seeds: str | None, device: str | None, dry_run: bool, progress_mode: str,
            until_decided: Path | None, max_seeds: int | None, batch: int, db: str | None,
            stop_doomed: str | None, **launch: Any) -> None:
    """Run every (configuration, seed) of SWEEP_FILE into OUT/<run_id>/.

    Re-running the same command resumes: completed (and diverged, and
    --stop-doomed stopped) runs are skipped, killed, interrupted or failed ones
    are deleted and redone. All
    inputs (keys, types, tasks, data files, labels) are checked before any
    training starts. Exit code 0 when every run completed or diverged, 1 when
    a run failed, 2 on bad input.

    \b
    Example:
        stabstat-run examples/cpu_failure/sweep.toml --out runs --jobs 2
        stabstat-run sweep.toml --data-dir glue_data --seeds 0-9 --dry-run
        python -m runner sweep.yaml --out runs
        stabstat-run sweep.toml --launcher slurm --partition gpu --max-parallel 50 --out /shared/runs
        stabstat-run sweep.toml --launcher ray --ray-address auto --out s3://bucket/runs
        stabstat-run sweep.toml --until-decided claims.toml --max-seeds 40 --batch 4 --out runs
        stabstat-run sweep.toml --out runs --stop-doomed default
        stabstat-run sweep.toml --out runs --stop-doomed "at=40 loss_ratio>=0.9 loss_vs_majority>=0.97"
    """
    from runner.launchers import launch_cli, prepare_cli
    from runner.rundirs import RunDirs
    from runner.sweep import plan

    if stop_doomed is not None:  # checked before anything runs; the runs read it from the environment
        from runner.stop_doomed import ENV
        from schemas.stop_rule import parse

        try:
            parse(stop_doomed)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}; print a fitted one with `stabstat early`",
                                     param_hint="--stop-doomed") from None
        os.environ[ENV] = stop_doomed
    out = prepare_cli(out, launch)  # s3://... stays a URL; --s3-endpoint goes to the environment
    if until_decided is not None and not dry_run:  # runner.until_decided: rounds of seeds + sequential check
        from runner.until_decided import until_decided_cli

        until_decided_cli(sweep_file, until_decided, out, seeds_opt=seeds, max_seeds=max_seeds, batch=batch, db=db,
                          data_dir=data_dir, threads=threads, device=device, jobs=jobs, launch=launch,
                          check_inputs=check_inputs)
        return
    planned = plan(sweep_file, seeds=seeds)
    todo = RunDirs.for_out(out).pending(planned)
    if dry_run:
        _dry_run(planned, {p.run_id for p in todo}, out)
        return
    if not todo:
        click.echo(f"all {len(planned)} runs already done in {out}")
        return
    check_inputs(todo, data_dir)
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
    if launch.get("launcher", "local") != "local":  # slurm / ray: runner.launchers
        launch_cli(sweep_file, planned, todo, out, data_dir=data_dir, threads=threads, device=device, **launch)
        return
    jobs = min(jobs, len(todo))
    n_threads = threads or max(1, allowed_cores() // jobs)
    use_rich = progress_mode == "rich" or (progress_mode == "auto" and sys.stdout.isatty())
    click.echo(f"{len(planned)} runs planned, {len(planned) - len(todo)} already done, {len(todo)} to run "
               f"({jobs} at a time, {n_threads} thread(s) each) -> {out}")
    progress = Progress(len(planned), len(planned) - len(todo), jobs, rich=use_rich)
    try:
        statuses = run_local(todo, out, data_dir, n_threads, device, jobs, progress)
    finally:
        progress.close()
    finish_sweep(statuses, out)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: library errors become one line and exit code 2."""
    try:
        run_cmd.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StabstatError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: re-run the same command to resume", err=True)
        sys.exit(130)
