"""``stabstat validate``: check run directories against the run-log contract."""

from __future__ import annotations

import sys
from collections import Counter

import click

from stabstat.cli._options import echo_json


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output format: one line per problem, or JSON for scripts.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the summary line.")
def validate(paths: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """Check run directories against the run-log contract (schemas/README.md).

    PATHS are run directories or folders searched recursively for them. Every
    problem is printed as FILE: COLUMN: MESSAGE. A run still marked running whose
    heartbeat is stale counts as interrupted (not a problem: its flushed rows are data).

    Exit code 0 when every run is valid, 1 when any problem was found.

    \b
    Example:
        stabstat validate runs/
        stabstat validate runs/rte-s1 runs/rte-s2 --format json
    """
    from stabstat.ingest.discover import validate_path

    reports = validate_path(list(paths))
    n_bad = sum(not r.ok for r in reports)
    if fmt == "json":
        echo_json({
            "runs": [r.to_dict() for r in reports],
            "n_runs": len(reports),
            "n_ok": len(reports) - n_bad,
            "n_with_problems": n_bad,
        })
    else:
        for r in reports:
            if r.ok:
                if not quiet:
                    click.echo(f"OK   {r.run_dir} ({r.effective_status})")
                continue
            click.echo(f"FAIL {r.run_dir}")
            for p in r.problems:
                click.echo(f"  {p}")
        if not reports:
            click.echo(f"no run directories (folders with a run.json) found under {', '.join(paths)}")
        else:
            statuses = Counter(r.effective_status or "unknown" for r in reports if r.ok)
            detail = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
            summary = f"{len(reports) - n_bad} runs OK" + (f" ({detail})" if detail else "")
            if n_bad:
                summary += f", {n_bad} with problems"
            click.echo(summary)
    sys.exit(1 if (n_bad or not reports) else 0)
