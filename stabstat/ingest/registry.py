"""Format name -> source adapter (``--format``).

The built-in adapters are ``stabstat`` (our run directories) and ``hf`` (Hugging Face Trainer
logs); :func:`register` adds one. ``auto`` means every registered adapter, the strongest
``detect`` winning each folder (see :mod:`stabstat.ingest.source`).
"""

from __future__ import annotations

from stabstat.errors import InputFormatError
from stabstat.ingest.source import SourceAdapter
from stabstat.ingest.sources.hf import HFSource
from stabstat.ingest.sources.stabstat import StabstatSource

__all__ = ["adapters", "get", "join_words", "names", "register", "resolve"]

_ADAPTERS: dict[str, SourceAdapter] = {}


def register(adapter: SourceAdapter) -> None:
    """Add (or replace) the adapter for ``adapter.name``."""
    _ADAPTERS[adapter.name] = adapter


register(StabstatSource())
register(HFSource())


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
