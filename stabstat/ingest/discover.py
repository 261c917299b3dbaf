"""Finding runs under the paths a user gave: the one walker, driven by the adapters' ``detect``.

Each path may be a marker file (``run.json``, ``trainer_state.json``) or a folder inside a
run (``checkpoint-500/``; the adapters' ``locate``), a run folder, or a folder searched
recursively. Every folder is offered to the adapters; the strongest ``detect`` claims it, and a
run folder is not searched further. Hidden folders (``.submitit``) and part folders
(``steps.parts``) are skipped. ``stabstat ingest`` uses :func:`discover`, ``stabstat validate``
:func:`validate_path` (:func:`find_run_dirs`, then :func:`stabstat.validate.check_run` per run).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from stabstat.errors import InputFormatError
from stabstat.ingest import registry
from stabstat.ingest.source import SourceAdapter
from stabstat.ingest.sources.stabstat import StabstatSource
from stabstat.validate import RunReport, check_run

__all__ = ["discover", "find_run_dirs", "validate_path", "walk"]


def walk(
    paths: Iterable[str | os.PathLike[str]], adapters: Sequence[SourceAdapter], *, expected: str
) -> list[tuple[SourceAdapter, Path]]:
    """Runs under ``paths`` as ``(adapter, run)`` pairs, sorted by path text, each run once
    (the first spelling of a resolved path is kept).

    ``expected`` completes the message for a file no adapter claims:
    ``"<file>: expected <expected>"``.

    Raises
    ------
    InputFormatError
        A path does not exist, or is a file that no adapter claims.
    """
    found: dict[Path, tuple[SourceAdapter, Path]] = {}

    def add(adapter: SourceAdapter, d: Path) -> None:
        found.setdefault(d.resolve(), (adapter, d))

    def claim(path: Path) -> bool:
        for adapter in adapters:
            run = adapter.locate(path)
            if run is not None:
                add(adapter, run)
                return True
        return False

    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InputFormatError(f"{path}: no such file or directory")
        if path.is_file():
            if not claim(path):
                raise InputFormatError(f"{path}: expected {expected}")
            continue
        if claim(path):
            continue
        for root, dirs, _files in os.walk(path):
            rp = Path(root)
            best = _strongest(adapters, rp)
            if best is not None:
                add(best, rp)
                dirs[:] = []  # a run directory holds no further runs
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".parts"))
    return sorted(found.values(), key=lambda kv: str(kv[1]))


def _strongest(adapters: Sequence[SourceAdapter], d: Path) -> SourceAdapter | None:
    """The adapter with the highest ``detect(d)`` (the first registered on a tie), or None."""
    best, best_score = None, 0
    for adapter in adapters:
        score = adapter.detect(d)
        if score > best_score:
            best, best_score = adapter, score
    return best


def discover(paths: Iterable[str | os.PathLike[str]], fmt: str = "auto") -> list[tuple[str, Path]]:
    """Runs under ``paths`` as ``(format, run_dir)`` pairs, sorted, without duplicates.

    ``fmt``: a registered format (``stabstat``: folders with run.json or table files; ``hf``:
    folders with ``trainer_state.json`` here or in ``checkpoint-*/``), or ``auto``: per
    folder, stabstat when it holds stabstat table files, else hf when it holds a trainer
    state, else stabstat when it holds a run.json. A run folder is not searched further.

    Raises
    ------
    InputFormatError
        If a path does not exist or ``fmt`` is unknown.
    """
    adapters = registry.resolve(fmt)
    markers = [f"a {m}" for a in registry.adapters() for m in a.marker_files]
    expected = "a run directory, a folder of runs, " + registry.join_words(markers, "or")
    return [(a.name, d) for a, d in walk(paths, adapters, expected=expected)]


def find_run_dirs(
    paths: Iterable[str | os.PathLike[str]], *, include_incomplete: bool = False
) -> list[Path]:
    """Stabstat run directories under ``paths``: each path may be a run directory, a
    ``run.json`` file, or a folder searched recursively. Sorted, without duplicates.

    ``include_incomplete`` also returns folders that hold a table file or parts folder but no
    ``run.json`` (so the validator can report the missing file).

    Raises
    ------
    InputFormatError
        If a path does not exist.
    """
    adapter = StabstatSource(require_run_json=not include_incomplete)
    found = walk(paths, [adapter], expected="a run directory, a folder of runs or a run.json file")
    return sorted(d for _, d in found)


def validate_path(paths: list[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[RunReport]:
    """Find run directories under ``paths`` (recursively) and validate each.

    Folders that hold table files but no ``run.json`` are included (and reported).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [check_run(d) for d in find_run_dirs(paths, include_incomplete=True)]
