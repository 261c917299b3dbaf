"""One entry point for every benchmark: ``python -m benchmarks.run [--quick] [--only AREA] [--markdown FILE]``.

Each ``benchmarks/bench_<area>.py`` measures stabstat side by side with its reference in the same
process (interleaved, medians) and returns rows
``{"benchmark", "ours", "reference", "unit", "ratio", "target", "note"}``.
CPU timings on a shared machine are noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

AREAS = ["gradnorms", "ingest", "stats", "cli", "report", "sources", "trackers", "planning", "probe", "early", "examples", "sequential"]


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--only", action="append", choices=AREAS, help="run only these areas")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = ap.parse_args(argv)

    rows: list[dict[str, object]] = []
    for area in args.only or AREAS:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.bench_{area}")
        except ModuleNotFoundError as exc:
            print(f"[{area}] skipped: {exc}", file=sys.stderr)
            continue
        print(f"[{area}] running ...", file=sys.stderr, flush=True)
        for row in mod.run(quick=args.quick):
            rows.append({"area": area, **row})
        print(f"[{area}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    cols = ["area", "benchmark", "ours", "reference", "unit", "ratio", "target", "note"]
    table = [cols] + [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    print(f"machine: {_machine()}")
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if args.markdown:
        lines = [f"Machine: {_machine()}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
