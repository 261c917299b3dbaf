"""``stabstat-run`` (also ``python -m runner``): run a sweep file, resumably.

The command only parses options, plans, checks the inputs and drives the runs; the work is in
:func:`runner.sweep.plan`, :func:`runner.sweep.pending` and :func:`runner.train.run_planned`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from runner.launchers import launcher_options
from stabstat.errors import StabstatError

__all__ = ["main", "run_cmd"]


# --------------------------------------------------------------------------------------------
# Progress display
# --------------------------------------------------------------------------------------------


def _fmt_s(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _final_summary(out_dir: Path, run_id: str) -> str:
    """``accuracy 0.713 (majority 0.527)`` for the first task metric at the last evaluation."""
    try:
        import pyarrow.parquet as pq

        info = json.loads((out_dir / run_id / "run.json").read_text("utf-8"))
        if info.get("status") == "failed":
            return f"error: {str(info.get('error'))[:200]}"
        task = info.get("task") or {}
        metric = (task.get("metrics") or ["accuracy"])[0]
        ev = pq.read_table(out_dir / run_id / "evals.parquet").to_pylist()
        rows = [r for r in ev if r["metric"] == metric and r["split"] == "dev"]
        if not rows:
            return ""
        last = max(rows, key=lambda r: r["step"])
        maj = (task.get("majority") or {}).get(metric)
        val = "null" if last["value"] is None else f"{last['value']:.3f}"
        return f"dev {metric} {val}" + (f" (majority {maj:.3f})" if maj is not None else "")
    except Exception:  # the summary is cosmetic; never let it stop a sweep
        return ""


class _Progress:
    """Runs done/total, and per running run its step, loss and ETA; rich on a TTY, plain lines otherwise."""

    def __init__(self, total: int, done: int, jobs: int, *, rich: bool, plain_every_s: float = 30.0) -> None:
        self.total, self.done, self.jobs = total, done, jobs
        self.durations: list[float] = []
        self.active: dict[str, dict[str, Any]] = {}
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._live: Any = None
        if rich:
            with contextlib.suppress(ImportError):
                from rich.live import Live

                self._live = Live(self._render(), refresh_per_second=4, transient=True)
                self._live.__enter__()

    def _sweep_eta(self) -> float | None:
        if not self.durations:
            return None
        per_run = sum(self.durations) / len(self.durations)
        remaining = self.total - self.done
        running_left = sum(max(0.0, per_run - (time.monotonic() - a["t0"])) for a in self.active.values())
        queued = max(0, remaining - len(self.active))
        return (running_left + queued * per_run) / max(1, self.jobs)

    def _run_line(self, run_id: str, a: dict[str, Any]) -> str:
        step, steps, loss = a.get("step", 0), a.get("steps"), a.get("loss")
        if not step:
            return f"  {run_id}: starting"
        elapsed = time.monotonic() - a["t_first"]
        eta = elapsed / max(1, step - 1) * (steps - step) if steps and step > 1 else None
        loss_s = "?" if loss is None else f"{loss:.4f}"
        return f"  {run_id}: step {step}/{steps}  loss {loss_s}  eta {_fmt_s(eta)}"

    def _render(self) -> Any:
        from rich.text import Text

        lines = [f"runs {self.done}/{self.total} done  sweep eta {_fmt_s(self._sweep_eta())}"]
        lines += [self._run_line(r, a) for r, a in self.active.items()]
        return Text("\n".join(lines))

    def _refresh(self, force_plain: bool = False) -> None:
        if self._live is not None:
            self._live.update(self._render())
        elif force_plain or time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            for r, a in self.active.items():
                if a.get("step"):
                    click.echo(f"[{self.done}/{self.total}]{self._run_line(r, a)}  (sweep eta {_fmt_s(self._sweep_eta())})")

    def echo(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text)

    def start(self, run_id: str) -> None:
        now = time.monotonic()
        self.active[run_id] = {"t0": now, "t_first": now}
        self._refresh()

    def step(self, run_id: str, step: int, steps: int, loss: float) -> None:
        a = self.active.setdefault(run_id, {"t0": time.monotonic(), "t_first": time.monotonic()})
        if step == 1:
            a["t_first"] = time.monotonic()
        a.update(step=step, steps=steps, loss=loss)
        self._refresh()

    def end(self, run_id: str, status: str, summary: str) -> None:
        a = self.active.pop(run_id, None)
        seconds = time.monotonic() - a["t0"] if a else None
        self.done += 1
        if seconds is not None and status in ("completed", "diverged"):
            self.durations.append(seconds)
        self.echo(f"[{self.done}/{self.total}] {run_id} {status} in {_fmt_s(seconds)}  {summary}".rstrip())
        self._refresh()

    def close(self) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker when the sweep process dies
    (otherwise a killed sweep leaves workers writing into directories a re-run deletes)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_init() -> None:
    import signal

    # Ctrl-C goes to the whole process group: let the parent decide, workers see SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _worker(planned: Any, out: str, data_dir: str | None, threads: int, device: str | None, q: Any) -> tuple[str, str]:
    from runner.train import run_planned

    last = [0.0]

    def on_step(run_id: str, step: int, steps: int, loss: float) -> None:
        now = time.monotonic()
        if step == 1 or step == steps or now - last[0] >= 0.5:
            last[0] = now
            q.put(("step", run_id, step, steps, loss))

    q.put(("start", planned.run_id))
    status = run_planned(planned, out, data_dir=data_dir, threads=threads, device=device, on_step=on_step)
    return planned.run_id, status


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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


def _dry_run(planned: Sequence[Any], todo_ids: set[str], out: Path) -> None:
    from runner.sweep import run_status

    keys = _varying_keys(planned)
    cfg0 = planned[0].config
    fixed = {k: cfg0[k] for k in ("model", "task", "max_steps", "epochs", "n_train", "max_length", "batch_size")
             if k not in keys}
    click.echo(f"{len(planned)} runs planned, {len(todo_ids)} to run, output {out}")
    click.echo("shared: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    header = ["run_id", "status", "seed", *keys]
    rows = [[p.run_id, run_status(out, p.run_id) or "-", str(p.seed), *[str(p.config.get(k)) for k in keys]]
            for p in planned]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def _run_serial(todo: Sequence[Any], out: Path, data_dir: str | None, threads: int, device: str | None,
                progress: _Progress) -> dict[str, str]:
    from runner.train import run_planned

    statuses: dict[str, str] = {}
    for p in todo:
        progress.start(p.run_id)
        status = run_planned(p, out, data_dir=data_dir, threads=threads, device=device, on_step=progress.step)
        statuses[p.run_id] = status
        progress.end(p.run_id, status, _final_summary(out, p.run_id))
    return statuses


def _run_pool(todo: Sequence[Any], out: Path, data_dir: str | None, threads: int, device: str | None,
              jobs: int, progress: _Progress) -> dict[str, str]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # forking a process that has started torch threads can hang
    statuses: dict[str, str] = {}
    with ctx.Manager() as manager:
        q = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(_worker, p, str(out), data_dir, threads, device, q): p for p in todo}
            remaining = set(futures)
            try:
                while remaining:
                    done, remaining = wait(remaining, timeout=0.5, return_when=FIRST_COMPLETED)
                    while True:
                        try:
                            msg = q.get_nowait()
                        except queue.Empty:
                            break
                        if msg[0] == "start":
                            progress.start(msg[1])
                        else:
                            progress.step(*msg[1:])
                    for f in done:
                        p = futures[f]
                        try:
                            _, status = f.result()
                        except Exception as exc:  # a worker died (e.g. out of memory)
                            status = "failed"
                            progress.echo(f"{p.run_id}: worker error: {exc}")
                        statuses[p.run_id] = status
                        progress.end(p.run_id, status, _final_summary(out, p.run_id))
            except KeyboardInterrupt:
                for f in remaining:
                    f.cancel()
                raise
    return statuses


def check_inputs(planned: Sequence[Any], data_dir: str | None) -> None:
    """Load every distinct task (and tokenizer) the runs need, so that a missing file, an unknown
    task or a bad label fails before any training starts."""
    from runner.data import load_task, subsample
    from runner.models import load_tokenizer, resolve_model_path

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
@launcher_options
def run_cmd(sweep_file: Path, out: Any, data_dir: str | None, jobs: int, threads: int | None,
            seeds: str | None, device: str | None, dry_run: bool, progress_mode: str,
            **launch: Any) -> None:
    """Run every (configuration, seed) of SWEEP_FILE into OUT/<run_id>/.

    Re-running the same command resumes: completed (and diverged) runs are
    skipped, killed, interrupted or failed ones are deleted and redone. All
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
    """
    from runner.launchers import launch_cli, prepare_cli
    from runner.sweep import pending, plan

    out = prepare_cli(out, launch)  # s3://... stays a URL; --s3-endpoint goes to the environment
    planned = plan(sweep_file, seeds=seeds)
    todo = pending(planned, out)
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
    n_threads = threads or max(1, _cores() // jobs)
    use_rich = progress_mode == "rich" or (progress_mode == "auto" and sys.stdout.isatty())
    click.echo(f"{len(planned)} runs planned, {len(planned) - len(todo)} already done, {len(todo)} to run "
               f"({jobs} at a time, {n_threads} thread(s) each) -> {out}")
    progress = _Progress(len(planned), len(planned) - len(todo), jobs, rich=use_rich)
    try:
        if jobs == 1:
            statuses = _run_serial(todo, out, data_dir, n_threads, device, progress)
        else:
            statuses = _run_pool(todo, out, data_dir, n_threads, device, jobs, progress)
    finally:
        progress.close()
    finish_sweep(statuses)


def finish_sweep(statuses: dict[str, str]) -> None:
    """Print the sweep's status counts; exit 1 when a run failed or was interrupted (every launcher)."""
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    click.echo("done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("failed") or counts.get("interrupted"):
        sys.exit(1)


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
