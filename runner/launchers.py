"""Launchers: execute the planned runs of a sweep on this machine, on Slurm or on Ray.

One small interface, :meth:`Launcher.launch`, three implementations; no scheduler of our own:

* :class:`LocalLauncher` -- ``--launcher local`` (default): the process pool of
  ``stabstat-run --jobs N`` (:mod:`runner.pool`).
* :class:`SlurmLauncher` -- ``--launcher slurm``: one Slurm job array per sweep through
  submitit's ``AutoExecutor.map_array`` (one array task per run), ``--max-parallel`` becomes the
  array's concurrency limit (``%N``). A preempted or timed-out task is requeued by submitit and
  starts its run again from scratch. Extra ``[slurm]``.
* :class:`RayLauncher` -- ``--launcher ray``: one Ray task per run, with one GPU each when the
  cluster has GPUs; ``--ray-address`` joins a running cluster, otherwise Ray starts locally.
  Extra ``[ray]``.

Every launcher calls :func:`runner.train.run_planned` once per run, which is idempotent: a run
already ``completed``/``diverged`` under the output is skipped, anything else there (the
leftover of a killed job) is deleted and redone. So the resume rule is the same everywhere:
submit the same sweep again and exactly the unfinished runs run, each in its own directory.
The output may be a shared folder or an object-store URL (``s3://bucket/prefix``,
:mod:`runner.rundirs`).

Cluster settings can live in the sweep file (command-line options win)::

    [launcher]
    partition = "gpu"        # Slurm partition
    time = 240               # minutes per run (Slurm time limit)
    gpus_per_run = 1
    cpus_per_run = 4         # also the torch threads of each run
    mem_gb = 32
    max_parallel = 50        # runs at once (Slurm array %N, Ray tasks in flight)
    account = "my-lab"       # optional Slurm extras
    qos = "normal"
    constraint = "a100"
    setup = ["module load cuda/12.4", "source ~/venvs/stabstat/bin/activate"]
    ray_address = "auto"     # join a running Ray cluster
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabstat.errors import ConfigError, require

if TYPE_CHECKING:
    from runner.sweep import PlannedRun

__all__ = [
    "LAUNCHERS",
    "LAUNCHER_KEYS",
    "Launcher",
    "LocalLauncher",
    "RayLauncher",
    "SlurmLauncher",
    "make_launcher",
    "read_launcher_table",
]

LAUNCHERS = ("local", "slurm", "ray")

#: ``on_done(run_id, status)``: called in the launching process as each run ends.
DoneCallback = Callable[[str, str], None]

#: Keys of a sweep file's ``[launcher]`` table: accepted types and meaning.
LAUNCHER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "partition": ((str,), "Slurm partition"),
    "time": ((int,), "time limit per run in minutes (Slurm)"),
    "gpus_per_run": ((int,), "GPUs per run (Slurm --gpus-per-node; Ray num_gpus); Ray default: 1 if the cluster has GPUs"),
    "cpus_per_run": ((int,), "CPU cores per run; also its torch threads"),
    "mem_gb": ((int, float), "memory per run in GB (Slurm)"),
    "max_parallel": ((int,), "runs at once: the Slurm array's %N, Ray tasks in flight"),
    "account": ((str,), "Slurm account"),
    "qos": ((str,), "Slurm QOS"),
    "constraint": ((str,), "Slurm node constraint"),
    "setup": ((list,), "shell lines run before each Slurm task (module load, activate a venv)"),
    "folder": ((str,), "submitit's folder for job scripts and logs (default <out>/.submitit)"),
    "ray_address": ((str,), "address of a running Ray cluster ('auto' or host:port)"),
}


def read_launcher_table(sweep: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``[launcher]`` table of a sweep file ({} when it has none).

    Raises :class:`~stabstat.errors.ConfigError` naming the file and key for an unknown key or
    a wrong type.
    """
    if isinstance(sweep, Mapping):
        data, source = dict(sweep), "<dict>"
    else:
        from runner.sweep import read_sweep_file

        data, _ = read_sweep_file(Path(sweep))
        source = str(sweep)
    table = data.get("launcher", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [launcher] must be a table of key = value")
    out: dict[str, Any] = {}
    for k, v in table.items():
        if k not in LAUNCHER_KEYS:
            import difflib

            close = difflib.get_close_matches(k, list(LAUNCHER_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: [launcher].{k}: unknown key{hint}; known keys: {', '.join(LAUNCHER_KEYS)}")
        types, meaning = LAUNCHER_KEYS[k]
        if isinstance(v, bool) or not isinstance(v, types):
            raise ConfigError(f"{source}: [launcher].{k}: expected {' or '.join(t.__name__ for t in types)} ({meaning}), got {v!r}")
        if isinstance(v, (int, float)) and v <= 0:
            raise ConfigError(f"{source}: [launcher].{k}: must be > 0, got {v!r}")
        if k == "setup" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigError(f"{source}: [launcher].setup: must be a list of shell lines (strings)")
        out[k] = v
    return out


class Launcher:
    """Executes planned runs; each run writes ``<out>/<run_id>/``.

    Subclasses implement :meth:`launch`. ``planned_runs`` are the runs still to do (what
    :func:`runner.sweep.pending` returns); the result maps each run_id to its final status
    (completed, diverged, failed, interrupted; ``submitted`` when not waited for).
    """

    name = "base"

    def launch(
        self,
        planned_runs: Sequence[PlannedRun],
        out: str | os.PathLike[str],
        *,
        data_dir: str | None = None,
        threads: int | None = None,
        device: str | None = None,
        on_done: DoneCallback | None = None,
    ) -> dict[str, str]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# local
# --------------------------------------------------------------------------------------------


class LocalLauncher(Launcher):
    """This machine: ``jobs`` runs at once in spawned processes (the pool of ``stabstat-run``)."""

    name = "local"

    def __init__(self, *, jobs: int = 1) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs

    def launch(self, planned_runs: Sequence[PlannedRun], out: str | os.PathLike[str], *,
               data_dir: str | None = None, threads: int | None = None, device: str | None = None,
               on_done: DoneCallback | None = None) -> dict[str, str]:
        from runner.pool import Progress, allowed_cores, run_local
        from runner.rundirs import RunDirs

        todo = list(planned_runs)
        if not todo:
            return {}
        jobs = min(self.jobs, len(todo))
        n_threads = threads or max(1, allowed_cores() // jobs)
        dest = RunDirs.for_out(out).location
        progress = Progress(len(todo), 0, jobs, rich=False)
        if on_done is not None:
            end = progress.end

            def _end(run_id: str, status: str, summary: str) -> None:
                end(run_id, status, summary)
                on_done(run_id, status)

            progress.end = _end  # type: ignore[method-assign]
        try:
            return run_local(todo, dest, data_dir, n_threads, device, jobs, progress)
        finally:
            progress.close()


# --------------------------------------------------------------------------------------------
# slurm (submitit)
# --------------------------------------------------------------------------------------------


class _RunJob:
    """The picklable callable of one array task: ``run_planned(planned, out, ...)``.

    Having ``checkpoint`` makes submitit requeue a preempted or timed-out task (the run restarts
    from scratch: :func:`runner.train.run_planned` deletes the unfinished attempt).
    """

    def __init__(self, out: str, data_dir: str | None, threads: int | None, device: str | None) -> None:
        self.out, self.data_dir, self.threads, self.device = out, data_dir, threads, device

    def __call__(self, planned: PlannedRun) -> str:
        from runner.pool import allowed_cores
        from runner.train import run_planned

        # default: the cores Slurm's cgroup gives this task
        return run_planned(planned, self.out, data_dir=self.data_dir,
                           threads=self.threads or allowed_cores(), device=self.device)

    def checkpoint(self, planned: PlannedRun) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, planned)


def _check_slurm() -> None:
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError(
            f"--launcher slurm: the {' and '.join(missing)} command{'s were' if len(missing) > 1 else ' was'} "
            "not found; run stabstat-run on a Slurm login node, or use --launcher local / ray"
        )


class SlurmLauncher(Launcher):
    """One Slurm job array per sweep through submitit (``AutoExecutor.map_array``).

    ``cluster`` is submitit's executor: ``"slurm"`` (default), or for tests ``"local"`` (real
    subprocesses with the same job files, no concurrency limit) and ``"debug"`` (in this process).
    With ``wait`` false, :meth:`launch` returns after submission (statuses ``submitted``).
    """

    name = "slurm"

    def __init__(self, *, cluster: str = "slurm", folder: str | os.PathLike[str] | None = None,
                 max_parallel: int | None = None, partition: str | None = None,
                 time: int | None = None, gpus_per_run: int | None = None,
                 cpus_per_run: int | None = None, mem_gb: float | None = None,
                 account: str | None = None, qos: str | None = None, constraint: str | None = None,
                 setup: Sequence[str] | None = None, job_name: str = "stabstat",
                 wait: bool = True, poll_s: float | None = None) -> None:
        self.cluster = cluster
        self.folder = folder
        self.max_parallel = max_parallel
        self.partition, self.time, self.gpus_per_run = partition, time, gpus_per_run
        self.cpus_per_run, self.mem_gb = cpus_per_run, mem_gb
        self.account, self.qos, self.constraint = account, qos, constraint
        self.setup = list(setup or [])
        self.job_name = job_name
        self.wait = wait
        self.poll_s = poll_s if poll_s is not None else (15.0 if cluster == "slurm" else 0.5)
        self.jobs: list[Any] = []  #: the submitit jobs of the last launch

    def _folder(self, out: str) -> str:
        from runner.rundirs import RunDirs

        if self.folder is not None:
            base = os.fspath(self.folder)
        elif RunDirs.for_out(out).remote:
            base = os.path.join("submitit_logs")
        else:
            base = os.path.join(out, ".submitit")  # hidden: readers skip dot-folders
        return os.path.join(base, "%j")

    def executor(self, out: str) -> Any:
        """The configured ``submitit.AutoExecutor`` (exposed for inspection and tests)."""
        submitit = require("submitit", "slurm", "--launcher slurm")
        if self.cluster == "slurm":
            _check_slurm()
        try:
            ex = submitit.AutoExecutor(folder=self._folder(out), cluster=self.cluster)
        except RuntimeError as exc:  # submitit's own detection of the cluster
            raise ConfigError(f"--launcher slurm: {exc}; use --launcher local or ray") from exc
        params: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": self.time,
            "gpus_per_node": self.gpus_per_run,
            "cpus_per_task": self.cpus_per_run,
            "mem_gb": self.mem_gb,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if self.cluster == "slurm":
            extra: dict[str, Any] = {}
            if self.account:
                extra["account"] = self.account
            if self.qos:
                extra["qos"] = self.qos
            if self.constraint:
                extra["constraint"] = self.constraint
            params.update(
                slurm_partition=self.partition,
                slurm_array_parallelism=self.max_parallel,
                slurm_setup=self.setup or None,
                slurm_additional_parameters=extra or None,
            )
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex

    def launch(self, planned_runs: Sequence[PlannedRun], out: str | os.PathLike[str], *,
               data_dir: str | None = None, threads: int | None = None, device: str | None = None,
               on_done: DoneCallback | None = None) -> dict[str, str]:
        todo = list(planned_runs)
        if not todo:
            return {}
        out_s = os.fspath(out)
        ex = self.executor(out_s)
        fn = _RunJob(out_s, data_dir, threads or self.cpus_per_run, device)
        self.jobs = jobs = ex.map_array(fn, todo)
        by_job = {id(j): p.run_id for j, p in zip(jobs, todo, strict=True)}
        if jobs and self.cluster != "debug":
            array_id = str(jobs[0].job_id).split("_")[0]
            print(f"submitted {len(jobs)} runs as job array {array_id} "
                  f"(logs: {self._folder(out_s).replace('%j', '<job id>')})", file=sys.stderr)
        if not self.wait:
            return {p.run_id: "submitted" for p in todo}
        statuses: dict[str, str] = {}
        remaining = list(jobs)
        try:
            while remaining:
                still = []
                for j in remaining:
                    # debug jobs run inside result(); others are polled without blocking
                    if self.cluster == "debug" or j.done():
                        run_id = by_job[id(j)]
                        statuses[run_id] = self._result(j, run_id)
                        if on_done is not None:
                            on_done(run_id, statuses[run_id])
                    else:
                        still.append(j)
                remaining = still
                if remaining:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            if self.cluster == "slurm":
                print("stopped waiting; the job array keeps running (squeue; scancel to stop it). "
                      "Submit the same sweep again once it has ended to redo unfinished runs.",
                      file=sys.stderr)
            raise
        return statuses

    @staticmethod
    def _result(job: Any, run_id: str) -> str:
        from submitit.core.utils import UncompletedJobError

        try:
            return str(job.result())
        except UncompletedJobError as exc:  # killed, cancelled, timed out and not requeued
            print(f"{run_id}: job {job.job_id} did not finish: {str(exc).splitlines()[0]}", file=sys.stderr)
            return "interrupted"
        except Exception as exc:  # the job raised outside the run (import error, out of memory ...)
            print(f"{run_id}: job {job.job_id} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                  f" (log: {job.paths.stderr})", file=sys.stderr)
            return "failed"


# --------------------------------------------------------------------------------------------
# ray
# --------------------------------------------------------------------------------------------

#: Environment variables a Ray worker on another node needs to write like this process.
_RAY_ENV_PREFIXES = ("AWS_", "STABSTAT_", "HF_", "TRANSFORMERS_", "FSSPEC_")


def _ray_run(planned: PlannedRun, out: str, data_dir: str | None, threads: int | None,
             device: str | None) -> str:
    from runner.train import run_planned

    return run_planned(planned, out, data_dir=data_dir, threads=threads, device=device)


class RayLauncher(Launcher):
    """One Ray task per run: ``num_gpus = gpus_per_run`` (default 1 when the cluster has GPUs,
    else 0), ``num_cpus = cpus_per_run`` (default 1; also the run's torch threads), at most
    ``max_parallel`` in flight. ``address`` joins a running cluster (``"auto"``,
    ``"ray://host:10001"``); otherwise Ray starts on this machine (``init_kwargs`` go to
    ``ray.init``, e.g. ``{"num_cpus": 2}``). A Ray session started here is shut down after.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, max_parallel: int | None = None,
                 gpus_per_run: int | None = None, cpus_per_run: int | None = None,
                 max_retries: int = 1, init_kwargs: Mapping[str, Any] | None = None) -> None:
        self.address = address
        self.max_parallel = max_parallel
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.max_retries = max_retries
        self.init_kwargs = dict(init_kwargs or {})

    def launch(self, planned_runs: Sequence[PlannedRun], out: str | os.PathLike[str], *,
               data_dir: str | None = None, threads: int | None = None, device: str | None = None,
               on_done: DoneCallback | None = None) -> dict[str, str]:
        ray = require("ray", "ray", "--launcher ray")
        todo = list(planned_runs)
        if not todo:
            return {}
        started = False
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(_RAY_ENV_PREFIXES)}
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": True, **self.init_kwargs}
            if env:
                kwargs.setdefault("runtime_env", {"env_vars": env})
            ray.init(**kwargs)
            started = True
        try:
            gpus = self.gpus_per_run
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            cpus = self.cpus_per_run or 1
            task = ray.remote(_ray_run).options(num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries)
            out_s = os.fspath(out)
            limit = self.max_parallel or len(todo)
            queue = list(todo)
            in_flight: dict[Any, str] = {}
            statuses: dict[str, str] = {}
            while queue or in_flight:
                while queue and len(in_flight) < limit:
                    p = queue.pop(0)
                    ref = task.remote(p, out_s, data_dir, threads or cpus, device)
                    in_flight[ref] = p.run_id
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    run_id = in_flight.pop(ref)
                    try:
                        statuses[run_id] = str(ray.get(ref))
                    except Exception as exc:  # the worker died even after retries
                        print(f"{run_id}: ray task failed: {str(exc).splitlines()[0]}", file=sys.stderr)
                        statuses[run_id] = "failed"
                    if on_done is not None:
                        on_done(run_id, statuses[run_id])
            return statuses
        finally:
            if started:
                ray.shutdown()


# --------------------------------------------------------------------------------------------
# construction from CLI options + the sweep file's [launcher] table
# --------------------------------------------------------------------------------------------


def make_launcher(name: str, *, table: Mapping[str, Any] | None = None, jobs: int = 1,
                  **options: Any) -> Launcher:
    """Build launcher ``name`` from the sweep file's ``[launcher]`` table overridden by
    ``options`` (None values are ignored): max_parallel, partition, time, gpus_per_run,
    cpus_per_run, mem_gb, ray_address, folder, wait, cluster (submitit's executor)."""
    merged = {**dict(table or {}), **{k: v for k, v in options.items() if v is not None}}
    if name == "local":
        return LocalLauncher(jobs=jobs)
    if name == "slurm":
        keys = ("cluster", "folder", "max_parallel", "partition", "time", "gpus_per_run", "cpus_per_run",
                "mem_gb", "account", "qos", "constraint", "setup", "wait", "poll_s")
        return SlurmLauncher(**{k: merged[k] for k in keys if k in merged})
    if name == "ray":
        return RayLauncher(address=merged.get("ray_address"), max_parallel=merged.get("max_parallel"),
                           gpus_per_run=merged.get("gpus_per_run"), cpus_per_run=merged.get("cpus_per_run"),
                           init_kwargs=merged.get("init_kwargs"))
    raise ConfigError(f"--launcher: unknown launcher {name!r}; choose one of {', '.join(LAUNCHERS)}")


# --------------------------------------------------------------------------------------------
# stabstat-run options (used by runner.cli; this module never imports it)
# --------------------------------------------------------------------------------------------


def launcher_options(f: Any) -> Any:
    """The ``stabstat-run`` options of this module: --launcher, cluster resources, --s3-endpoint."""
    import click

    opts = [
        click.option("--launcher", type=click.Choice(LAUNCHERS), default="local", show_default=True,
                     help="Where runs execute: this machine (--jobs), a Slurm job array (submitit), or Ray tasks."),
        click.option("--max-parallel", type=click.IntRange(min=1), default=None,
                     help="slurm/ray: runs at once (the array's %N; Ray tasks in flight). Default: all."),
        click.option("--partition", default=None, help="slurm: partition (or [launcher] partition)."),
        click.option("--time", "time", type=click.IntRange(min=1), default=None,
                     help="slurm: time limit per run in minutes (or [launcher] time)."),
        click.option("--gpus-per-run", type=click.IntRange(min=0), default=None,
                     help="slurm/ray: GPUs per run (ray default: 1 when the cluster has GPUs, else 0)."),
        click.option("--cpus-per-run", type=click.IntRange(min=1), default=None,
                     help="slurm/ray: CPU cores per run, also its torch threads."),
        click.option("--mem-gb", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="slurm: memory per run in GB."),
        click.option("--ray-address", default=None,
                     help="ray: join this cluster ('auto', 'ray://head:10001'); default: start Ray here."),
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="slurm: wait for the job array and report each run (--no-wait: submit and exit)."),
        click.option("--s3-endpoint", default=None, metavar="URL",
                     help="S3-compatible endpoint for an s3:// --out (sets AWS_ENDPOINT_URL for every worker)."),
        # submitit's executor: 'local' / 'debug' run the same job files without Slurm (tests, trials)
        click.option("--submitit-cluster", "cluster", type=click.Choice(["slurm", "local", "debug"]),
                     default=None, hidden=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def prepare_cli(out: str, launch: Mapping[str, Any]) -> Any:
    """``--out`` as a Path (local folder) or the URL text (``s3://...``); applies --s3-endpoint."""
    from runner.rundirs import RunDirs

    # fail before loading any data when the chosen engine is not there
    if launch.get("launcher") == "slurm":
        require("submitit", "slurm", "--launcher slurm")
        if launch.get("cluster") in (None, "slurm"):
            _check_slurm()
    elif launch.get("launcher") == "ray":
        require("ray", "ray", "--launcher ray")
    endpoint = launch.get("s3_endpoint")
    if endpoint:
        # The environment reaches every worker (spawned processes, Slurm jobs, Ray runtime_env).
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    dirs = RunDirs.for_out(out)
    if dirs.remote:
        dirs.check()  # fail now, with the extra's name, when fsspec/s3fs are missing
        return out.rstrip("/")
    return dirs.location


def launch_cli(sweep_file: Any, planned: Sequence[PlannedRun], todo: Sequence[PlannedRun], out: Any, *,
               data_dir: str | None, threads: int | None, device: str | None,
               launcher: str, wait: bool = True, **options: Any) -> None:
    """``stabstat-run --launcher slurm|ray``: launch ``todo``, print one line per finished run
    and a summary; exit code 1 when a run failed or was interrupted."""
    import click

    options.pop("s3_endpoint", None)
    table = read_launcher_table(sweep_file)
    extra: dict[str, Any] = {"wait": wait} if launcher == "slurm" else {}
    lch = make_launcher(launcher, table=table, **options, **extra)
    done = [len(planned) - len(todo)]

    def on_done(run_id: str, status: str) -> None:
        done[0] += 1
        click.echo(f"[{done[0]}/{len(planned)}] {run_id} {status}")

    click.echo(f"{len(planned)} runs planned, {len(planned) - len(todo)} already done, {len(todo)} to run "
               f"on {launcher} -> {out}")
    statuses = lch.launch(todo, out, data_dir=data_dir, threads=threads, device=device, on_done=on_done)
    from runner.pool import finish_sweep

    finish_sweep(statuses, out)  # with out: also the compute --stop-doomed saved
