"""Check run directories against the run-log contract and list every problem.

Each :class:`Problem` names the file (and the column or run.json key) and says what is wrong
and, where it helps, how to fix it. The contract comes from ``schemas.load()``.

Example
-------
>>> from stabstat.validate import validate_run
>>> for p in validate_run("runs/rte-s1"):  # doctest: +SKIP
...     print(p)
runs/rte-s1/steps.parquet: loss: type string, expected float64
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schemas
from stabstat import rundir
from stabstat.errors import InputFormatError, SchemaError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Problem", "RunReport", "check_run", "validate_run"]

#: How many offending rows a message quotes at most.
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    """One contract violation: ``path`` (file), ``column`` (table column or run.json key, or
    None for the whole file) and a ``message``."""

    path: str
    column: str | None
    message: str

    def __str__(self) -> str:
        if self.column:
            return f"{self.path}: {self.column}: {self.message}"
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunReport:
    """The validation result of one run directory."""

    run_dir: str
    run_id: str | None
    status: str | None  #: as written in run.json
    effective_status: str | None  #: running + stale heartbeat -> interrupted
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "run_id": self.run_id,
            "status": self.status,
            "effective_status": self.effective_status,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
        }


def validate_run(run_dir: str | os.PathLike[str]) -> list[Problem]:
    """Every contract problem of one run directory ([] when it is valid)."""
    return check_run(run_dir).problems


def check_run(run_dir: str | os.PathLike[str]) -> RunReport:
    """Validate one run directory and return a :class:`RunReport` with every problem."""
    d = Path(run_dir)
    report = RunReport(run_dir=str(d), run_id=None, status=None, effective_status=None)
    problems = report.problems
    if not d.is_dir():
        problems.append(Problem(str(d), None, "not a directory"))
        return report

    # -- run.json ---------------------------------------------------------------------------
    rj_path = d / "run.json"
    data: Any = None
    try:
        data = rundir._load_json_file(rj_path)
    except (SchemaError, InputFormatError) as exc:
        msg = str(exc)
        prefix = f"{rj_path}: "
        problems.append(Problem(str(rj_path), None, msg[len(prefix):] if msg.startswith(prefix) else msg))
    if data is not None:
        for key, msg in rundir.check_run_json(data):
            problems.append(Problem(str(rj_path), key, msg))
    run_id = d.name
    final = None
    if isinstance(data, dict):
        rid = data.get("run_id")
        if isinstance(rid, str):
            report.run_id = rid
            if rid != d.name:
                problems.append(Problem(
                    str(rj_path), "run_id",
                    f"run_id {rid!r} differs from the directory name {d.name!r}; rename one of them",
                ))
            run_id = rid
        status = data.get("status")
        if isinstance(status, str):
            report.status = status
            try:
                report.effective_status = rundir.effective_status(data)
            except SchemaError:
                report.effective_status = status
            final = status in schemas.load().final_statuses
        version = data.get("schema_version")
        if "schema_version" in data and version not in schemas.SUPPORTED_VERSIONS:
            # Without a known contract the tables cannot be checked.
            return report

    # -- tables -----------------------------------------------------------------------------
    counts: dict[str, int] = {}
    for t in schemas.load().tables:
        files = rundir.table_files(d, t.name)
        if not files:
            # A running (or crashed) run has no file for a table until its first flush.
            if t.required and final is not False:
                problems.append(Problem(
                    str(d / t.filename), None,
                    f"missing required table file (and no {t.parts_dir}/); write it even when empty",
                ))
            continue
        n = _check_table(t, files, run_id, problems)
        if n is not None:
            counts[t.name] = n

    # -- row counts promised by run.json -----------------------------------------------------
    if isinstance(data, dict) and isinstance(data.get("tables"), dict):
        for name, n in data["tables"].items():
            if name in counts and isinstance(n, int) and n != counts[name]:
                problems.append(Problem(
                    str(rj_path), "tables",
                    f"says {name} has {n} rows but {name} files hold {counts[name]}",
                ))
    return report


def _check_table(t: schemas.Table, files: list[Path], run_id: str, problems: list[Problem]) -> int | None:
    """Check every file of one table; then keys and order across files.

    Returns the table's row count, or None when a file could not be read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    good: list[tuple[Path, pa.Table]] = []
    n_rows: int | None = 0
    for f in files:
        try:
            data = pq.read_table(f)
        except (OSError, pa.ArrowException) as exc:
            problems.append(Problem(
                str(f), None, f"not a readable Parquet file (corrupt or truncated: {exc}); re-write or delete it",
            ))
            n_rows = None
            continue
        if n_rows is not None:
            n_rows += data.num_rows
        file_ok = True
        arrays: dict[str, pa.ChunkedArray] = {}
        for col in t.columns:
            if col.name not in data.column_names:
                problems.append(Problem(str(f), col.name, f"missing column (expected type {col.type})"))
                file_ok = False
                continue
            arr = data.column(col.name)
            if not rundir.compatible_type(col.type, arr.type, col.nullable):
                problems.append(Problem(str(f), col.name, f"type {arr.type}, expected {col.type}"))
                file_ok = False
                continue
            try:
                arr = arr.cast(col.arrow_type())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problems.append(Problem(str(f), col.name, f"cannot convert {arr.type} to {col.type}: {exc}"))
                file_ok = False
                continue
            arrays[col.name] = arr
            _check_values(f, col, arr, run_id, problems)
        if file_ok:
            good.append((f, pa.table(arrays)))

    if good:
        _check_keys_and_order(t, good, problems)
    return n_rows


def _first_rows(mask: Any) -> list[int]:
    import numpy as np

    return [int(i) for i in np.flatnonzero(mask)[:_MAX_EXAMPLES]]


def _check_values(f: Path, col: schemas.Column, arr: pa.ChunkedArray, run_id: str, problems: list[Problem]) -> None:
    import numpy as np
    import pyarrow.compute as pc

    if not col.nullable and arr.null_count:
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        problems.append(Problem(
            str(f), col.name,
            f"{arr.null_count} null value(s) in a non-nullable column (rows {_first_rows(mask)})",
        ))
    if col.type == "float64" and col.finite and len(arr):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values) & ~arr.is_null().to_numpy(zero_copy_only=False)
        if bad.any():
            problems.append(Problem(
                str(f), col.name,
                f"{int(bad.sum())} non-finite value(s) (NaN/inf) where only finite numbers or null are "
                f"allowed (rows {_first_rows(bad)}); write null for an undefined value",
            ))
    if col.name == "run_id" and len(arr):
        wrong = pc.fill_null(pc.not_equal(arr, run_id), False).to_numpy(zero_copy_only=False)
        if wrong.any():
            others = sorted({str(v) for v in pc.unique(arr.filter(pc.not_equal(arr, run_id))).to_pylist()})[:_MAX_EXAMPLES]
            problems.append(Problem(
                str(f), col.name,
                f"{int(wrong.sum())} row(s) with run_id {', '.join(map(repr, others))}, expected {run_id!r} "
                f"(the run's id in run.json and its directory name)",
            ))
    if col.type in ("int64", "int32") and col.name == "step" and len(arr):
        neg = pc.fill_null(pc.less(arr, 0), False).to_numpy(zero_copy_only=False)
        if neg.any():
            problems.append(Problem(str(f), col.name, f"{int(neg.sum())} negative step(s) (rows {_first_rows(neg)})"))


def _check_keys_and_order(t: schemas.Table, good: list[tuple[Path, pa.Table]], problems: list[Problem]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    where = str(good[0][0]) if len(good) == 1 else f"{good[0][0].parent}/ ({len(good)} part files)"
    combined = pa.concat_tables([tab for _, tab in good])

    # Order: the order column must never decrease (within a file and across part files).
    order = combined.column(t.order)
    if len(order) > 1 and not order.null_count:
        v = order.to_numpy()
        dec = np.flatnonzero(v[1:] < v[:-1])
        if len(dec):
            i = int(dec[0]) + 1
            problems.append(Problem(
                where, t.order,
                f"{t.order} goes backwards {len(dec)} time(s), first at row {i} ({int(v[i - 1])} -> {int(v[i])}); "
                "rows must be written in training order",
            ))

    # Keys: each key combination at most once.
    key = list(t.key)
    if combined.num_rows and not any(combined.column(k).null_count for k in key):
        counts = combined.group_by(key).aggregate([([], "count_all")])
        dups = counts.filter(pc.greater(counts.column("count_all"), 1))
        if dups.num_rows:
            examples = ", ".join(
                "(" + ", ".join(f"{k}={r[k]!r}" for k in key) + f") x{r['count_all']}"
                for r in dups.slice(0, _MAX_EXAMPLES).to_pylist()
            )
            problems.append(Problem(
                where, ", ".join(key),
                f"{dups.num_rows} duplicate key(s) ({', '.join(key)}) must be unique: {examples}",
            ))
