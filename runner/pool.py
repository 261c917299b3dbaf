"""The local process pool of a sweep, its progress display, and the end-of-sweep summary.

Used by ``stabstat-run`` (:mod:`runner.cli`) and by ``--launcher local``
(:class:`runner.launchers.LocalLauncher`); the Slurm and Ray launchers use
:func:`finish_sweep` too. Each run is :func:`runner.train.run_planned`.

* :func:`run_local`: ``jobs == 1`` runs in this process (:func:`run_serial`); otherwise a
  spawn-context ``ProcessPoolExecutor`` (:func:`run_pool`) whose workers ignore SIGINT (the
  parent decides), get ``PR_SET_PDEATHSIG`` (they die with the sweep) and report their steps
  through a manager queue.
* :class:`Progress`: runs done/total, and per running run its step, loss and ETA; a live
  ``rich`` display on a terminal, plain lines otherwise.
* :func:`allowed_cores`: the cores of this process's affinity mask (a Slurm task's cgroup), the
  default for torch threads per run.
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

__all__ = ["Progress", "allowed_cores", "final_summary", "finish_sweep", "run_local", "run_pool", "run_serial"]


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


def final_summary(out_dir: Path | str, run_id: str) -> str:
    """``accuracy 0.713 (majority 0.527)`` for the first task metric at the last evaluation.
    ``""`` for a run under an object-store URL (``out_dir`` given as text: not read back)."""
    if isinstance(out_dir, str):
        return ""
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


class Progress:
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


def allowed_cores() -> int:
    """The cores this process may run on (its affinity mask: under Slurm, the task's cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Running a list of runs
# --------------------------------------------------------------------------------------------


def run_serial(todo: Sequence[Any], out: Path | str, data_dir: str | None, threads: int, device: str | None,
               progress: Progress) -> dict[str, str]:
    """Run ``todo`` one after the other in this process; ``run_id -> final status``."""
    from runner.train import run_planned

    statuses: dict[str, str] = {}
    for p in todo:
        progress.start(p.run_id)
        status = run_planned(p, out, data_dir=data_dir, threads=threads, device=device, on_step=progress.step)
        statuses[p.run_id] = status
        progress.end(p.run_id, status, final_summary(out, p.run_id))
    return statuses


def run_pool(todo: Sequence[Any], out: Path | str, data_dir: str | None, threads: int, device: str | None,
             jobs: int, progress: Progress) -> dict[str, str]:
    """Run ``todo`` in ``jobs`` spawned worker processes; ``run_id -> final status``."""
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
                        progress.end(p.run_id, status, final_summary(out, p.run_id))
            except KeyboardInterrupt:
                for f in remaining:
                    f.cancel()
                raise
    return statuses


def run_local(todo: Sequence[Any], out: Path | str, data_dir: str | None, threads: int, device: str | None,
              jobs: int, progress: Progress) -> dict[str, str]:
    """Run ``todo`` on this machine, ``jobs`` at a time (``threads`` torch threads each)."""
    if jobs == 1:
        return run_serial(todo, out, data_dir, threads, device, progress)
    return run_pool(todo, out, data_dir, threads, device, jobs, progress)


def compute_saved(statuses: dict[str, str], out: Path | str) -> tuple[int, int, int] | None:
    """For the ``stopped`` runs of ``statuses`` (``--stop-doomed``) under a local ``out``:
    ``(stopped runs, optimiser steps not trained, steps planned over the runs of statuses that
    wrote a run.json)``; None when no run was stopped or ``out`` is a URL."""
    if not any(s == "stopped" for s in statuses.values()) or not isinstance(out, Path | str) \
            or "://" in str(out):
        return None
    n_stopped = saved = planned = 0
    for run_id in statuses:
        try:
            rj = json.loads((Path(out) / run_id / "run.json").read_text("utf-8"))
        except (OSError, ValueError):
            continue
        rec = rj.get("stopped") if rj.get("status") == "stopped" else None
        cfg = rj.get("config") or {}
        # steps planned: the stopped record's, else max_steps, else the steps a finished run logged
        total = (int(rec["total_steps"]) if isinstance(rec, dict)
                 else int(cfg.get("max_steps") or (rj.get("tables") or {}).get("steps") or 0))
        if isinstance(rec, dict):
            n_stopped += 1
            saved += total - int(rec["step"])
        planned += total
    return n_stopped, saved, planned


def finish_sweep(statuses: dict[str, str], out: Path | str | None = None) -> None:
    """Print the sweep's status counts (and, with ``out``, the compute ``--stop-doomed`` saved);
    exit 1 when a run failed or was interrupted (every launcher)."""
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    click.echo("done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    saved = compute_saved(statuses, out) if out is not None else None
    if saved is not None and saved[2] > 0:
        n, steps, planned = saved
        click.echo(f"--stop-doomed: {n} run(s) stopped early; {steps} of {planned} planned optimiser steps "
                   f"not trained ({100 * steps / planned:.1f}% of the sweep's compute saved)")
    if counts.get("failed") or counts.get("interrupted"):
        sys.exit(1)
