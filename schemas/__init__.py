"""The run-log contract: one loader for the machine-readable schema in this folder.

Both the writer (:mod:`runner.logwriter`) and the reader (:mod:`stabstat`) load the
contract from here; no other module spells out a column list.

Examples
--------
>>> import schemas
>>> s = schemas.load()
>>> s.version
1
>>> [c.name for c in s.table("evals").columns]
['run_id', 'step', 'split', 'metric', 'value']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow is imported lazily: loading the contract must stay cheap
    import pyarrow as pa

__all__ = [
    "CURRENT_VERSION",
    "DONE_STATUSES",
    "SUPPORTED_VERSIONS",
    "Column",
    "RunLogSchema",
    "Table",
    "load",
]

CURRENT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

#: Final statuses of a run that need not be run again: its logs are the result (a diverged run
#: is data, not a crash; a run ``stopped`` by its early-stopping rule was judged doomed, and
#: redoing it would only spend the compute the rule saved). The other final statuses (failed,
#: interrupted) are redone on resume. A subset of ``load().final_statuses``
#: (``tests/test_schema.py`` checks it); kept here rather than in ``run_log_v1.json`` because it
#: is a rule for writers that resume, not a file format.
DONE_STATUSES: tuple[str, ...] = ("completed", "diverged", "stopped")

#: Contract type name -> pyarrow type factory name.
_ARROW_TYPES = {
    "string": "string",
    "int64": "int64",
    "int32": "int32",
    "float64": "float64",
    "bool": "bool_",
}


@dataclass(frozen=True)
class Column:
    """One column of a run-log table."""

    name: str
    type: str  #: contract type: string, int64, int32, float64, bool
    nullable: bool
    finite: bool  #: whether NaN/inf are forbidden (only meaningful for float columns)
    unit: str | None
    meaning: str

    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        return getattr(pa, _ARROW_TYPES[self.type])()


@dataclass(frozen=True)
class Table:
    """One Parquet table of a run directory (``<name>.parquet``)."""

    name: str
    required: bool
    meaning: str
    key: tuple[str, ...]
    order: str  #: column that must never decrease within a run
    columns: tuple[Column, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}.parquet"

    @property
    def parts_dir(self) -> str:
        """Folder of part files written while the run is in progress (``<name>.parts``)."""
        return f"{self.name}.parts"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema(
            [pa.field(c.name, c.arrow_type(), nullable=c.nullable) for c in self.columns]
        )


@dataclass(frozen=True)
class RunLogSchema:
    """The whole contract of one version."""

    version: int
    statuses: dict[str, str]
    final_statuses: tuple[str, ...]
    run_json_required: dict[str, dict[str, Any]]
    run_json_optional: dict[str, dict[str, Any]]
    tables: tuple[Table, ...]
    raw: dict[str, Any]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]


@cache
def load(version: int = CURRENT_VERSION) -> RunLogSchema:
    """Load the contract of ``version`` from ``schemas/run_log_v<version>.json``.

    Raises
    ------
    ValueError
        If the version is not one this installation knows.
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"unknown run-log schema_version {version!r}; this stabstat reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Upgrade stabstat."
        )
    text = resources.files(__name__).joinpath(f"run_log_v{version}.json").read_text("utf-8")
    raw = json.loads(text)
    tables = []
    for tname, t in raw["tables"].items():
        cols = tuple(
            Column(
                name=cname,
                type=c["type"],
                nullable=bool(c["nullable"]),
                finite=bool(c.get("finite", False)),
                unit=c.get("unit"),
                meaning=c["meaning"],
            )
            for cname, c in t["columns"].items()
        )
        tables.append(
            Table(
                name=tname,
                required=bool(t["required"]),
                meaning=t["meaning"],
                key=tuple(t["key"]),
                order=t["order"],
                columns=cols,
            )
        )
    return RunLogSchema(
        version=raw["schema_version"],
        statuses=dict(raw["statuses"]),
        final_statuses=tuple(raw["final_statuses"]),
        run_json_required=dict(raw["run_json"]["required"]),
        run_json_optional=dict(raw["run_json"]["optional"]),
        tables=tuple(tables),
        raw=raw,
    )
