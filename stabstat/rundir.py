"""Reading one run directory of the run-log contract (``schemas/README.md``).

A run directory holds ``run.json`` and, per table, either the compacted ``<table>.parquet``
(after a clean finish) or a folder ``<table>.parts/`` of part files (while running, or after a
crash). Readers prefer the compacted file: leftover parts next to it are ignored.

Only pyarrow is needed here (no duckdb/polars), so the validator stays light.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schemas
from stabstat.errors import InputFormatError, SchemaError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "check_run_json",
    "effective_status",
    "parse_timestamp",
    "read_run_json",
    "read_table",
    "table_files",
]

DEFAULT_STALE_AFTER_S = 600.0
_PART_RE = re.compile(r"^part-(\d+)\.parquet$")


def _load_json_file(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise SchemaError(f"{path}: missing; a run directory needs a run.json (see schemas/README.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: cannot be read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg} "
            "(a truncated run.json means the writer was not atomic; rewrite it)"
        ) from exc


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO 8601 timestamp; a time without zone is taken as UTC.

    Raises ``ValueError`` if ``value`` is not an ISO 8601 string.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "string": (str,),
    "object": (dict,),
    "timestamp": (str,),
}
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "object": "a JSON object",
    "timestamp": "an ISO 8601 UTC timestamp string",
}


def check_run_json(data: Any) -> list[tuple[str | None, str]]:
    """Every contract problem of a parsed ``run.json`` as ``(field, message)`` pairs ([] if fine).

    Checks: is an object; required keys present; types of known keys (null allowed for optional
    ones); ``schema_version`` supported; ``status`` known; timestamps parse.
    """
    if not isinstance(data, dict):
        return [(None, f"must be a JSON object, got {type(data).__name__}")]
    problems: list[tuple[str | None, str]] = []
    version = data.get("schema_version")
    contract = schemas.load()
    if "schema_version" in data and (
        isinstance(version, bool) or not isinstance(version, int) or version not in schemas.SUPPORTED_VERSIONS
    ):
        problems.append((
            "schema_version",
            f"unknown schema_version {version!r}; this stabstat reads "
            f"{', '.join(map(str, schemas.SUPPORTED_VERSIONS))} (upgrade stabstat or rewrite the run)",
        ))
    specs = [(k, v, True) for k, v in contract.run_json_required.items()]
    specs += [(k, v, False) for k, v in contract.run_json_optional.items()]
    for key, spec, required in specs:
        if key not in data:
            if required:
                problems.append((key, f"missing required key {key!r} ({_TYPE_WORDS.get(spec['type'], spec['type'])}: {spec['meaning']})"))
            continue
        value = data[key]
        if value is None and not required:
            continue
        if key == "schema_version":
            continue  # reported above
        typ = spec["type"]
        ok = isinstance(value, _JSON_TYPES.get(typ, (object,))) and not isinstance(value, bool)
        if ok and typ == "float" and not math.isfinite(value):
            ok = False
        if not ok:
            problems.append((key, f"must be {_TYPE_WORDS.get(typ, typ)}, got {json.dumps(value)[:80]}"))
            continue
        if typ == "timestamp":
            try:
                parse_timestamp(value)
            except ValueError:
                problems.append((key, f"must be an ISO 8601 UTC timestamp, e.g. 2026-01-31T12:00:00+00:00; got {value!r}"))
    status = data.get("status")
    if isinstance(status, str) and status not in contract.statuses:
        problems.append(("status", f"unknown status {status!r}; expected one of {', '.join(contract.statuses)}"))
    if status == "stopped" and not isinstance(data.get("stopped"), dict):
        problems.append(("stopped", "a run with status 'stopped' needs a 'stopped' object (step, total_steps, reason, "
                                    "rule); write it with RunLogger.mark_stopped"))
    return problems


def read_run_json(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``run_dir/run.json``.

    Raises
    ------
    SchemaError
        If the file is missing or breaks the contract (all problems in one message).
    InputFormatError
        If the file is not valid JSON.
    """
    path = Path(run_dir) / "run.json"
    data = _load_json_file(path)
    problems = check_run_json(data)
    if problems:
        raise SchemaError(
            f"{path}: " + "; ".join(f"{f}: {m}" if f else m for f, m in problems)
            + " (run `stabstat validate` for details)"
        )
    assert isinstance(data, dict)
    return data


def effective_status(run_json: dict[str, Any], now: datetime | None = None) -> str:
    """The status to use at analysis time: a ``running`` run whose ``heartbeat_at`` (or
    ``started_at``) is older than ``stale_after_s`` (default 600 s) reads as ``interrupted``.

    ``now`` defaults to the current UTC time (a naive ``now`` is taken as UTC).
    """
    status = str(run_json.get("status"))
    if status != "running":
        return status
    beat = run_json.get("heartbeat_at") or run_json.get("started_at")
    try:
        last = parse_timestamp(beat)
    except ValueError as exc:
        raise SchemaError(
            f"run {run_json.get('run_id')!r}: run.json: heartbeat_at: not an ISO 8601 timestamp ({beat!r})"
        ) from exc
    stale = run_json.get("stale_after_s")
    stale_s = float(stale) if isinstance(stale, (int, float)) and not isinstance(stale, bool) else DEFAULT_STALE_AFTER_S
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return "interrupted" if (now - last).total_seconds() > stale_s else "running"


def table_files(run_dir: str | os.PathLike[str], table: str) -> list[Path]:
    """Files holding ``table``: ``[<table>.parquet]`` if it exists, else the sorted part files
    ``<table>.parts/part-<n>.parquet`` (temp files are skipped), else ``[]``.

    Raises ``KeyError`` for a table the contract does not define.
    """
    t = schemas.load().table(table)
    d = Path(run_dir)
    compacted = d / t.filename
    if compacted.exists():
        return [compacted]
    parts = d / t.parts_dir
    if not parts.is_dir():
        return []
    numbered = []
    for f in parts.iterdir():
        m = _PART_RE.match(f.name)
        if m:
            numbered.append((int(m.group(1)), f))
    return [f for _, f in sorted(numbered)]


#: Arrow type families a reader accepts for each contract type (then casts to the contract type).
def compatible_type(contract_type: str, arrow_type: pa.DataType, nullable: bool) -> bool:
    """Whether a Parquet column of ``arrow_type`` can be read as the contract type (widening allowed)."""
    import pyarrow.types as pat

    if pat.is_null(arrow_type):
        return nullable
    if contract_type in ("int64", "int32"):
        return bool(pat.is_integer(arrow_type))
    if contract_type == "float64":
        return bool(pat.is_floating(arrow_type) or pat.is_integer(arrow_type))
    if contract_type == "string":
        return bool(pat.is_string(arrow_type) or pat.is_large_string(arrow_type) or (
            hasattr(pat, "is_string_view") and pat.is_string_view(arrow_type)
        ))
    if contract_type == "bool":
        return bool(pat.is_boolean(arrow_type))
    return False  # pragma: no cover


def read_table(run_dir: str | os.PathLike[str], table: str) -> pa.Table:
    """The whole ``table`` of a run as one Arrow table with exactly the contract's columns and
    types (extra columns dropped; compatible types such as int32 for int64 or large_string
    for string are cast). An empty table with the contract schema when there are no files.

    Raises
    ------
    InputFormatError
        If a file is not readable Parquet (corrupt or truncated).
    SchemaError
        If a column is missing or has an incompatible type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = schemas.load().table(table)
    schema = t.arrow_schema()
    out = []
    for f in table_files(run_dir, table):
        try:
            data = pq.read_table(f)
        except (OSError, pa.ArrowException) as exc:
            raise InputFormatError(f"{f}: not a readable Parquet file ({exc}); re-write or delete it") from exc
        arrays = []
        for col in t.columns:
            if col.name not in data.column_names:
                raise SchemaError(f"{f}: {col.name}: missing column (expected {col.type}); see schemas/README.md")
            arr = data.column(col.name)
            if not compatible_type(col.type, arr.type, col.nullable):
                raise SchemaError(f"{f}: {col.name}: type {arr.type}, expected {col.type}")
            try:
                arrays.append(arr.cast(col.arrow_type()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{f}: {col.name}: cannot convert {arr.type} to {col.type}: {exc}") from exc
        # Build without the non-null field flags first; nulls in non-nullable columns are the
        # validator's job to report, not a reason for this reader to crash.
        out.append(pa.Table.from_arrays(arrays, names=t.column_names))
    if not out:
        return schema.empty_table()
    combined = pa.concat_tables(out)
    try:
        return combined.cast(schema)
    except (pa.ArrowInvalid, ValueError):
        return combined
