"""Our own format: run directories of the run-log contract (``schemas/README.md``).

The zero-copy path: a run's table files are checked without reading a row -- run.json against
the contract, every Parquet footer (a truncated or corrupt file fails here), column names and
types, and from the row-group statistics the run_id column and the order column -- and then
handed to the store as files, which DuckDB reads itself (``read_parquet``). Values (nulls,
non-finite numbers) are checked by the database's constraints while loading; ``--validate
full`` adds the row-level validator (:mod:`stabstat.validate`), run by the ingest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import schemas
from stabstat import rundir
from stabstat.errors import SchemaError, StabstatError
from stabstat.ingest.fingerprint import stabstat_fingerprint
from stabstat.ingest.source import PrepareOptions, Reject, RunInput, TableData, scalar_factors
from stabstat.store.connection import first_line

if TYPE_CHECKING:
    from pyarrow.parquet import FileMetaData

__all__ = ["RUN_JSON", "StabstatSource", "has_table_files"]

RUN_JSON = "run.json"


def has_table_files(d: Path) -> bool:
    """Whether folder ``d`` holds a contract table file or parts folder."""
    return any((d / t.filename).exists() or (d / t.parts_dir).is_dir() for t in schemas.load().tables)


class StabstatSource:
    """Source adapter for stabstat run directories (``--format stabstat``).

    A folder with table files is a run (strength 3: it beats a trainer state beside it); a
    folder with only a run.json is one too (strength 1: beside a trainer state it is HF's
    side file of factors). ``require_run_json=True`` counts only folders with a run.json
    (what :func:`stabstat.ingest.discover.find_run_dirs` lists by default).
    """

    name: str = "stabstat"
    marker_files: tuple[str, ...] = (RUN_JSON,)

    def __init__(self, *, require_run_json: bool = False) -> None:
        self.require_run_json = require_run_json

    def detect(self, path: Path) -> int:
        if not self.require_run_json and has_table_files(path):
            return 3
        return 1 if (path / RUN_JSON).is_file() else 0

    def locate(self, path: Path) -> Path | None:
        return path.parent if path.name == RUN_JSON and path.is_file() else None

    def prepare(self, path: Path, options: PrepareOptions) -> RunInput:
        """Read and check one run directory without reading its rows (see the module docstring)."""
        return prepare_run_dir(path, known=options.known)


def prepare_run_dir(run_dir: Path, *, known: Any = None) -> RunInput:
    """:meth:`StabstatSource.prepare`; ``known``: run_id -> stored fingerprint (or None)."""
    run_json_bytes, rj = _read_run_json(run_dir)
    run_id = rj["run_id"]
    if run_id != run_dir.name:
        raise Reject(
            f"{run_dir / RUN_JSON}: run_id: {run_id!r} differs from the directory name "
            f"{run_dir.name!r}; rename one of them"
        )
    try:
        status = rundir.effective_status(rj)
    except SchemaError as exc:
        raise Reject(str(exc)) from None

    run = RunInput(
        run_id=run_id, source=str(run_dir), source_format=StabstatSource.name, run_json=rj, status=status,
        fingerprint="", factors=scalar_factors(rj.get("config") or {}),
        metadata_file=str(run_dir / RUN_JSON), validate_dir=run_dir,
    )
    listing = [(t, rundir.table_files(run_dir, t.name)) for t in schemas.load().tables]
    all_files = [f for _, files in listing for f in files]
    try:
        run.fingerprint = stabstat_fingerprint(run_dir, run_json_bytes, status, all_files)
    except OSError as exc:  # a file vanished while we looked (a running run compacting)
        raise Reject(f"{run_dir}: changed while being read ({exc}); ingest again") from None
    if known is not None and known.get(run_id) == run.fingerprint:
        run.unchanged = True
        return run
    final = rj["status"] in schemas.load().final_statuses
    for t, files in listing:
        if not files:
            if t.required and final:
                raise Reject(
                    f"{run_dir / t.filename}: missing required table file (the run says {rj['status']}); "
                    "re-write the run or delete its directory"
                )
            continue
        run.tables[t.name] = _check_files(t, files, run_id)
    return run


def _read_run_json(run_dir: Path) -> tuple[bytes, dict[str, Any]]:
    """run.json's bytes (for the fingerprint) and its checked content."""
    try:
        run_json_bytes = (run_dir / RUN_JSON).read_bytes()
    except FileNotFoundError:
        raise Reject(
            f"{run_dir / RUN_JSON}: missing; a run directory needs a run.json "
            "(a run whose writer never started, or not a stabstat run: try --format hf)"
        ) from None
    try:
        rj = json.loads(run_json_bytes)
        if not isinstance(rj, dict) or rundir.check_run_json(rj):
            raise ValueError("not a valid run.json")
    except ValueError:
        # let the reader produce its message (file, key, fix)
        try:
            rj = rundir.read_run_json(run_dir)
        except StabstatError as exc:
            raise Reject(f"{exc}") from None
    return run_json_bytes, rj


def _check_files(t: schemas.Table, files: list[Path], run_id: str) -> TableData:
    """Footers, columns and row-group statistics of one table's files (no row is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = TableData(files=[str(f) for f in files])
    prev_max: Any = None
    for f in files:
        try:
            md = pq.read_metadata(f)
            arrow_schema = md.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as exc:
            raise Reject(
                f"{f}: not a readable Parquet file (corrupt or truncated: {first_line(exc)}); "
                "re-write it or delete the run directory"
            ) from None
        names = arrow_schema.names
        for col in t.columns:
            if col.name not in names:
                raise Reject(f"{f}: {col.name}: missing column (expected type {col.type}); see schemas/README.md")
            typ = arrow_schema.field(col.name).type
            if not rundir.compatible_type(col.type, typ, col.nullable):
                raise Reject(f"{f}: {col.name}: type {typ}, expected {col.type}; see schemas/README.md")
        if not any(arrow_schema.equals(x) for x in data.file_schemas):
            data.file_schemas.append(arrow_schema)
        data.rows += md.num_rows
        prev_max = _check_row_groups(t, f, md, run_id, prev_max)
    return data


def _check_row_groups(t: schemas.Table, f: Path, md: FileMetaData, run_id: str, prev_max: Any) -> Any:
    """Row-group statistics: every run_id is the run's, and the order column never goes back
    (across the files of a table too: ``prev_max`` is the previous maximum; returns the new one)."""
    idx = {md.schema.column(i).name: i for i in range(md.num_columns)}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows == 0:
            continue
        st = rg.column(idx["run_id"]).statistics
        if st is not None and st.has_min_max and (st.min != run_id or st.max != run_id):
            other = st.min if st.min != run_id else st.max
            raise Reject(
                f"{f}: run_id: rows with run_id {other!r}, expected {run_id!r} "
                "(the run's id in run.json and its directory name)"
            )
        st = rg.column(idx[t.order]).statistics
        if st is not None and st.has_min_max:
            if prev_max is not None and st.min < prev_max:
                raise Reject(
                    f"{f}: {t.order}: goes backwards ({prev_max} -> {st.min}); "
                    "rows must be written in training order"
                )
            prev_max = st.max
    return prev_max
