"""stabstat: is this fine-tuning recipe stable, and how sure are we?

The analysis side of stabstat. It never imports torch, transformers or datasets; the
training side lives in the separate ``runner`` package (``pip install 'stabstat[runner]'``).
Heavy modules (duckdb, polars, statsmodels, altair) are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from stabstat.errors import (  # noqa: E402  (errors are cheap and always needed)
    ConfigError,
    DatabaseInUseError,
    InputFormatError,
    MissingExtraError,
    SchemaError,
    SelectionError,
    StabstatError,
    TooFewSeedsError,
)

__all__ = [
    "ConfigError",
    "DatabaseInUseError",
    "InputFormatError",
    "MissingExtraError",
    "SchemaError",
    "SelectionError",
    "StabstatError",
    "TooFewSeedsError",
    "__version__",
    "open",
]


def open(path: str | None = None, *, read_only: bool = True) -> Any:  # noqa: A001
    """Open a stabstat DuckDB database and return a :class:`stabstat.store.Store`."""
    from stabstat.store import Store

    return Store.open(path, read_only=read_only)
