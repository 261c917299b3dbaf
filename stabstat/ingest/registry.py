"""Format name -> source adapter (``--format``).

The built-in adapters, in registration order (the order ``--format`` lists them and breaks
``detect`` ties in): ``stabstat`` (our run directories; strength 3 with table files, 1 with a
bare run.json), ``hf`` (Hugging Face ``trainer_state.json``, 2), ``tensorboard`` (a folder of
``events.out.tfevents.*``, 2), ``lightning`` (CSVLogger ``metrics.csv`` with a ``step``
column, 1: a TensorBoardLogger folder beside it is the same run and wins), ``table`` (tidy
CSV/TSV/Parquet/JSONL tables of many runs: never detected in a folder, only read when a file
is named or ``--format table`` is forced, so a stray CSV never becomes runs), ``mlflow`` (an
MLflow file-store run folder, 2) and ``wandb`` (a W&B run folder, 2). A format is one
:func:`register` line; the CLI builds its ``--format`` choice from :func:`names`. ``auto``
means every registered adapter, the strongest ``detect`` winning each folder (see
:mod:`stabstat.ingest.source`).
"""

from __future__ import annotations

from stabstat.errors import InputFormatError
from stabstat.ingest.source import SourceAdapter
from stabstat.ingest.sources.hf import HFSource
from stabstat.ingest.sources.lightning import LightningSource
from stabstat.ingest.sources.mlflow import MlflowSource
from stabstat.ingest.sources.stabstat import StabstatSource
from stabstat.ingest.sources.table import TableSource
from stabstat.ingest.sources.tensorboard import TensorBoardSource
from stabstat.ingest.sources.wandb import WandbSource

__all__ = ["adapters", "get", "join_words", "names", "register", "resolve"]

_ADAPTERS: dict[str, SourceAdapter] = {}


def register(adapter: SourceAdapter) -> None:
    """Add (or replace) the adapter for ``adapter.name``."""
    _ADAPTERS[adapter.name] = adapter


register(StabstatSource())
register(HFSource())
register(TensorBoardSource())
register(LightningSource())
register(TableSource())
register(MlflowSource())  # MLflow file stores (servers: mlflow+http:// URLs, ingest/remote.py)
register(WandbSource())


def names() -> list[str]:
    """Registered format names, in registration order."""
    return list(_ADAPTERS)


def adapters() -> list[SourceAdapter]:
    """Registered adapters, in registration order."""
    return list(_ADAPTERS.values())


def get(name: str) -> SourceAdapter:
    """The adapter called ``name`` (``KeyError`` if none)."""
    return _ADAPTERS[name]


def join_words(words: list[str], last: str) -> str:
    """``a, b <last> c``: ``join_words(["auto", "stabstat", "hf"], "or")`` -> ``auto, stabstat or hf``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} {words[-1]}"


def resolve(fmt: str) -> list[SourceAdapter]:
    """The adapters ``--format fmt`` uses: all of them for ``auto``, else the one named.

    Raises
    ------
    InputFormatError
        ``fmt`` is neither ``auto`` nor a registered format.
    """
    if fmt == "auto":
        return adapters()
    if fmt not in _ADAPTERS:
        raise InputFormatError(f"--format {fmt!r}: expected {join_words(['auto', *names()], 'or')}")
    return [_ADAPTERS[fmt]]
