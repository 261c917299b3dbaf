"""``stabstat-run SWEEP --until-decided CLAIMS.toml``: run seeds in batches until the claims are decided.

Round r runs the sweep with the first ``first + (r - 1) * batch`` seeds (the resume machinery
skips what is done: :meth:`runner.rundirs.RunDirs.pending`, any launcher), ingests the output
into the store and evaluates the claims with ``stabstat check --sequential``; it stops as soon
as every claim is PASS or FAIL, or when ``--max-seeds`` seeds are used. The sequential check
uses confidence sequences (valid however often they are looked at), so stopping on the data
does not inflate the error (:mod:`stabstat.analysis.sequential`). At the end it prints the
seeds used beside the fixed-n design ``stabstat plan`` would choose from the runs collected.

Why subprocesses: the runner may import only ``stabstat.errors`` and ``stabstat.remote`` of the
analysis side (``tests/test_layering.py``), so the ingest, the check and the plan run as the
commands a user would type (``python -m stabstat ingest|check|plan ... --format json``) and
their JSON is read back. This also keeps torch (loaded by training in this process) apart
from the analysis process, and works the same for a local folder and an ``s3://`` output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabstat.errors import ConfigError

__all__ = ["Round", "UntilDecided", "analyse", "fixed_n_design", "run_until_decided", "seed_rounds"]

#: Runs a list of planned runs, returns ``run_id -> status`` (a launcher's ``launch``).
RunBatch = Callable[[Sequence[Any]], Mapping[str, str]]


@dataclass(frozen=True)
class Round:
    """One round: the seeds used so far and each claim's verdict (name -> PASS/FAIL/INCONCLUSIVE)."""

    seeds: int
    verdicts: dict[str, str]


@dataclass
class UntilDecided:
    """What :func:`run_until_decided` did: the rounds, the last check's JSON, why it stopped."""

    rounds: list[Round] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=dict)
    stopped: str = ""
    failed_runs: int = 0

    @property
    def seeds_used(self) -> int:
        return self.rounds[-1].seeds if self.rounds else 0

    @property
    def decided(self) -> bool:
        return bool(self.rounds) and all(v != "INCONCLUSIVE" for v in self.rounds[-1].verdicts.values())


def seed_rounds(seeds: Sequence[int], *, first: int, batch: int) -> list[list[int]]:
    """Cumulative seed lists of the rounds: the first ``first`` seeds, then ``batch`` more each round."""
    if first < 1 or batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    ends = list(range(min(first, len(seeds)), len(seeds), batch)) + [len(seeds)]
    return [list(seeds[:e]) for e in dict.fromkeys(ends) if e > 0]


def _stabstat(args: Sequence[str], python: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "stabstat", *args], capture_output=True, text=True, check=False)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def analyse(out: Path | str, claims: Path, db: Path, *, python: str = sys.executable) -> dict[str, Any]:
    """Ingest ``out`` into ``db`` and return ``stabstat check --sequential``'s JSON."""
    ing = _stabstat(["ingest", str(out), "--db", str(db)], python)
    if ing.returncode != 0:
        raise ConfigError(f"--until-decided: stabstat ingest {out} failed: {_last_line(ing)}")
    chk = _stabstat(["check", str(claims), "--sequential", "--db", str(db), "--format", "json"], python)
    if chk.returncode not in (0, 1):  # 1: a claim FAILed, which is a decision
        raise ConfigError(f"--until-decided: stabstat check --sequential {claims} failed: {_last_line(chk)}")
    try:
        result: dict[str, Any] = json.loads(chk.stdout)
    except json.JSONDecodeError:
        raise ConfigError(f"--until-decided: stabstat check printed no JSON: {_last_line(chk)}") from None
    return result


def _claims_file(claims: Path) -> list[dict[str, Any]]:
    import tomllib

    try:
        doc = tomllib.loads(claims.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--until-decided {claims}: cannot read the claims file: {exc}") from None
    defaults = doc.get("defaults", {})
    return [{**{k: v for k, v in defaults.items() if k in ("filter", "where", "metric", "fail_below",
                                                              "baseline", "alpha")}, **c}
            for c in doc.get("claims", [])]


def fixed_n_design(claims: Path, db: Path, *, python: str = sys.executable) -> dict[str, int | None]:
    """Per two-level claim (``failure_rate``, ``mean``): the seeds per configuration that
    ``stabstat plan --by FACTOR`` chooses from the runs in ``db`` for the observed difference
    (power 0.8 at the claim's alpha; None when no candidate n reaches it or plan cannot say)."""
    out: dict[str, int | None] = {}
    for i, c in enumerate(_claims_file(claims), 1):
        if c.get("kind") not in ("failure_rate", "mean") or "factor" not in c:
            continue
        args = ["plan", "--by", str(c["factor"]), "--db", str(db), "--format", "json", "--resamples", "500",
                "--alpha", str(c.get("alpha", 0.05))]
        flt = c.get("filter") or {}
        items = [f"{k}={v}" for k, v in flt.items()] if isinstance(flt, dict) else [str(x) for x in flt]
        for item in items:
            args += ["--filter", item.replace("True", "true").replace("False", "false")]
        for key, opt in (("where", "--where"), ("metric", "--metric"), ("fail_below", "--fail-below"),
                         ("baseline", "--baseline")):
            if key in c:
                args += [opt, str(c[key])]
        proc = _stabstat(args, python)
        name = str(c.get("name", f"claim {i}"))
        out[name] = None
        if proc.returncode != 0:
            continue
        target = "failure_rate" if c["kind"] == "failure_rate" else "mean"
        pair = {str(c["higher"]).lower(), str(c["lower"]).lower()}
        for row in json.loads(proc.stdout).get("groups", []):
            if row.get("target") == target and {str(row.get("a")).lower(), str(row.get("b")).lower()} == pair:
                out[name] = row.get("n_needed")
    return out


def run_until_decided(planned_for: Callable[[list[int]], Sequence[Any]], pending: Callable[[Sequence[Any]], list[Any]],
                      run_batch: RunBatch, *, seeds: Sequence[int], first: int, batch: int, out: Path | str,
                      claims: Path, db: Path, echo: Callable[[str], None], python: str = sys.executable
                      ) -> UntilDecided:
    """The loop (see the module docstring). ``planned_for(seeds)``: the sweep's planned runs for
    those seeds; ``pending(planned)``: those not done yet; ``run_batch(todo)``: run them
    (``run_id -> status``)."""
    res = UntilDecided()
    # resume: the seeds whose runs are all done already count (the store holds them, so the
    # check sees them); the first round starts there
    todo_seeds = {int(p.config["seed"]) for p in pending(planned_for(list(seeds)))}
    done = next((i for i, s in enumerate(seeds) if s in todo_seeds), len(seeds))
    rounds = seed_rounds(seeds, first=max(first, done), batch=batch)
    for r, used in enumerate(rounds, 1):
        planned = planned_for(used)
        todo = pending(planned)
        echo(f"round {r}: {len(used)} seeds, {len(planned)} runs planned, {len(todo)} to run")
        statuses = run_batch(todo) if todo else {}
        res.failed_runs += sum(s in ("failed", "interrupted") for s in statuses.values())
        res.check = analyse(out, claims, db, python=python)
        verdicts = {t["name"]: t["verdict"] for t in res.check.get("tests", [])}
        res.rounds.append(Round(len(used), verdicts))
        echo(f"round {r}: " + "; ".join(f"{v} {n}" for n, v in verdicts.items()))
        if res.failed_runs:
            res.stopped = f"{res.failed_runs} run(s) failed: fix them and re-run the same command to resume"
            return res
        if res.decided:
            res.stopped = f"every claim decided after {len(used)} seeds"
            return res
    res.stopped = f"budget spent: {res.seeds_used} seeds (--max-seeds), undecided claims are INCONCLUSIVE"
    return res


def until_decided_cli(sweep_file: Path, claims: Path, out: Any, *, seeds_opt: str | None, max_seeds: int | None,
                      batch: int, db: str | None, data_dir: str | None, threads: int | None, device: str | None,
                      jobs: int, launch: Mapping[str, Any], check_inputs: Callable[[Sequence[Any], str | None], None]
                      ) -> None:
    """``stabstat-run SWEEP --until-decided CLAIMS``: the loop with this command's launcher;
    prints each round, the stopping reason and seeds used vs the fixed-n design; exit code 1
    when a claim FAILed or a run failed. ``check_inputs``: :func:`runner.cli.check_inputs`
    (passed in: this module is imported by :mod:`runner.cli`)."""
    import click

    from runner.launchers import make_launcher, read_launcher_table
    from runner.rundirs import RunDirs
    from runner.sweep import parse_seeds, plan, read_sweep_file

    if not claims.is_file():
        raise ConfigError(f"--until-decided {claims}: no such claims file")
    data, _ = read_sweep_file(sweep_file)
    seeds = parse_seeds(seeds_opt if seeds_opt is not None else data.get("seeds", 1),
                        where="--seeds" if seeds_opt is not None else f"{sweep_file}: seeds")
    if max_seeds is not None:
        seeds = (seeds + [max(seeds) + 1 + i for i in range(max_seeds)])[:max_seeds]
    db_path = Path(db) if db else (Path(out) / "stabstat.duckdb" if isinstance(out, Path) else Path("stabstat.duckdb"))
    name = str(launch.get("launcher", "local"))
    opts = {k: v for k, v in launch.items() if k not in ("launcher", "s3_endpoint")}
    extra: dict[str, Any] = {"wait": True} if name == "slurm" else {}
    opts.pop("wait", None)
    launcher = make_launcher(name, table=read_launcher_table(sweep_file), jobs=jobs, **opts, **extra)
    dirs = RunDirs.for_out(out)
    checked: set[str] = set()

    def run_batch(todo: Sequence[Any]) -> Mapping[str, str]:
        new = [p for p in todo if p.run_id not in checked]
        if new:
            check_inputs(new, data_dir)
            checked.update(p.run_id for p in new)
        if isinstance(out, Path):
            out.mkdir(parents=True, exist_ok=True)
        return launcher.launch(todo, out, data_dir=data_dir, threads=threads, device=device,
                               on_done=lambda run_id, status: click.echo(f"  {run_id} {status}"))

    click.echo(f"until decided: {claims}, up to {len(seeds)} seeds, {batch} per round, store {db_path}")
    res = run_until_decided(lambda s: plan(sweep_file, seeds=s), dirs.pending, run_batch, seeds=seeds, first=batch,
                            batch=batch, out=out, claims=claims, db=db_path, echo=click.echo)
    click.echo(f"stopped: {res.stopped}")
    design = fixed_n_design(claims, db_path)
    for n, v in res.rounds[-1].verdicts.items() if res.rounds else []:
        fixed = design.get(n)
        fixed_s = "-" if n not in design else (f"{fixed}" if fixed is not None else "more than plan's largest n")
        click.echo(f"{v:<12} {n}: seeds used {res.seeds_used} per configuration; fixed-n design (stabstat plan, "
                   f"power 0.8, observed difference): {fixed_s}")
    if res.failed_runs or any(v == "FAIL" for v in (res.rounds[-1].verdicts.values() if res.rounds else [])):
        sys.exit(1)

