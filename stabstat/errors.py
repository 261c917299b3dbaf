"""One exception hierarchy for stabstat. Every message names the file, field or option and the fix."""

from __future__ import annotations


class StabstatError(Exception):
    """Base class of every error stabstat raises on purpose.

    The CLI turns these into a one-line message and a non-zero exit code, never a traceback.
    """

    exit_code = 2


class SchemaError(StabstatError):
    """A run directory does not follow the run-log contract (see ``schemas/README.md``)."""


class InputFormatError(StabstatError):
    """An input file could not be read: corrupt Parquet, malformed JSON, unknown format."""


class MissingExtraError(StabstatError):
    """An optional dependency is not installed; the message names the ``pip install`` extra."""


class TooFewSeedsError(StabstatError):
    """A statistic was asked of a group with too few runs to compute it at all."""


class SelectionError(StabstatError):
    """Unknown factor, metric or split, or an empty selection; the message lists what exists."""


class DatabaseInUseError(StabstatError):
    """Another process holds the DuckDB file open for writing."""


class ConfigError(StabstatError):
    """A sweep or claims file has an unknown key, a wrong type or an impossible value."""


def require(module: str, extra: str, feature: str):  # type: ignore[no-untyped-def]
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{feature} needs the optional package {module!r}: pip install 'stabstat[{extra}]'"
        ) from exc


class QueryError(StabstatError):
    """SQL given to ``stabstat query`` / ``Store.query`` failed: a syntax error, an unknown
    table or column, or a statement that would write (queries run on a read-only connection)."""


class StorageError(StabstatError):
    """Object storage (``s3://...``) could not be listed, read or written: unknown bucket, no
    permission, endpoint unreachable. The message names the URL; check ``AWS_ENDPOINT_URL`` /
    ``--s3-endpoint`` and the credentials."""
