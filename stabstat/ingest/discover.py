"""Finding runs under the paths a user gave: the one walker, driven by the adapters' ``detect``.

Each path may be a marker file (``run.json``, ``trainer_state.json``) or a folder inside a
run (``checkpoint-500/``; the adapters' ``locate``), a run folder, or a folder searched
recursively. Every folder is offered to the adapters; the strongest ``detect`` claims it, and a
run folder is not searched further. Hidden folders (``.submitit``) and part folders
(``steps.parts``) are skipped. Adapters whose runs are files (tables) are offered files: the
ones named, and with their format forced, every file under the folders named. ``stabstat
ingest`` uses :func:`find_runs` (each run with the folder it was found under), ``stabstat validate``
:func:`validate_path` (:func:`find_run_dirs`, then :func:`stabstat.validate.check_run` per run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from stabstat.errors import InputFormatError
from stabstat.ingest import registry
from stabstat.ingest.source import SourceAdapter
from stabstat.ingest.sources.lightning import logger_twins
from stabstat.ingest.sources.stabstat import StabstatSource
from stabstat.validate import RunReport, check_run

__all__ = ["FoundRun", "discover", "find_run_dirs", "find_runs", "validate_path", "walk", "walk_runs"]


class FoundRun(NamedTuple):
    """One run found by the walker: its adapter, its path (a folder, or a file for adapters
    whose runs are files), and the folder the user named that it was found under (None when
    the user named the run's marker file itself)."""

    adapter: SourceAdapter
    path: Path
    root: Path | None


def walk(
    paths: Iterable[str | os.PathLike[str]], adapters: Sequence[SourceAdapter], *, expected: str
) -> list[tuple[SourceAdapter, Path]]:
    """Runs under ``paths`` as ``(adapter, run)`` pairs, sorted by path text, each run once
    (the first spelling of a resolved path is kept); :func:`walk_runs` with the roots left out.

    Raises
    ------
    InputFormatError
        A path does not exist, or is a file that no adapter claims.
    """
    return [(f.adapter, f.path) for f in walk_runs(paths, adapters, expected=expected)]


def walk_runs(
    paths: Iterable[str | os.PathLike[str]], adapters: Sequence[SourceAdapter], *, expected: str,
    search_files: bool = False,
) -> list[FoundRun]:
    """Runs under ``paths``, sorted by path text, each run once (the first spelling of a
    resolved path is kept).

    ``expected`` completes the message for a file no adapter claims:
    ``"<file>: expected <expected>"``. ``search_files``: also offer every file of the folders
    searched to the adapters whose runs are files (``runs_are_files``, the table adapter):
    only when the user forced that format, so a stray CSV never becomes runs under ``auto``.

    Raises
    ------
    InputFormatError
        A path does not exist, or is a file that no adapter claims.
    """
    found: dict[Path, FoundRun] = {}
    file_adapters = [a for a in adapters if getattr(a, "runs_are_files", False)] if search_files else []

    def add(adapter: SourceAdapter, d: Path, root: Path | None) -> None:
        found.setdefault(d.resolve(), FoundRun(adapter, d, root))

    def claim(path: Path, root: Path | None, among: Sequence[SourceAdapter] = adapters) -> bool:
        for adapter in among:
            run = adapter.locate(path)
            if run is not None:
                add(adapter, run, root)
                return True
        return False

    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InputFormatError(f"{path}: no such file or directory")
        if path.is_file():
            if not claim(path, None):
                raise InputFormatError(f"{path}: expected {expected}")
            continue
        if claim(path, path):
            continue
        for root, dirs, files in os.walk(path):
            rp = Path(root)
            best = _strongest(adapters, rp)
            if best is not None:
                add(best, rp, path)
                dirs[:] = []  # a run directory holds no further runs
                continue
            for name in sorted(files) if file_adapters else ():
                claim(rp / name, path, file_adapters)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".parts"))
    return sorted(found.values(), key=lambda f: str(f.path))


def _strongest(adapters: Sequence[SourceAdapter], d: Path) -> SourceAdapter | None:
    """The adapter with the highest ``detect(d)`` (the first registered on a tie), or None."""
    best, best_score = None, 0
    for adapter in adapters:
        score = adapter.detect(d)
        if score > best_score:
            best, best_score = adapter, score
    return best


def find_runs(
    paths: Iterable[str | os.PathLike[str]], fmt: str = "auto", *, inform: Callable[[str], None] | None = None
) -> list[FoundRun]:
    """Runs under ``paths`` with their adapters and roots, sorted, without duplicates.

    ``fmt``: a registered format, or ``auto``: per folder, the adapter whose ``detect`` is
    strongest (stabstat table files 3 > trainer state / event files 2 > bare run.json /
    Lightning ``metrics.csv`` 1). A run folder is not searched further. Table files are read
    only when named, or, with ``fmt="table"``, found under the folders named. A Lightning
    CSVLogger folder that repeats a TensorBoardLogger folder (one ``Trainer`` with both
    loggers: :func:`~stabstat.ingest.sources.lightning.logger_twins`) is left out, and
    ``inform`` is told which.

    Raises
    ------
    InputFormatError
        If a path does not exist or ``fmt`` is unknown.
    MissingExtraError
        Runs of a format were found whose reader is not installed (``pip install
        'stabstat[tensorboard]'``).
    """
    adapters = registry.resolve(fmt)
    markers = [f"a {m}" for a in registry.adapters() for m in a.marker_files]
    expected = "a run directory, a folder of runs, " + registry.join_words(markers, "or")
    found = walk_runs(paths, adapters, expected=expected, search_files=fmt != "auto")
    twins = logger_twins([f.path for f in found if f.adapter.name == "tensorboard"],
                         [f.path for f in found if f.adapter.name == "lightning"])
    if twins:
        found = [f for f in found if f.path not in twins]
        if inform is not None:
            pairs = sorted(twins.items())
            shown = ", ".join(f"{c.name} (= {t.name})" for c, t in pairs[:4]) + (" ..." if len(pairs) > 4 else "")
            inform(f"note: {len(twins)} Lightning CSVLogger folder(s) repeat a TensorBoardLogger folder beside them "
                   f"(same Trainer, both loggers; same hparams.yaml): read from the event files only: {shown}")
    # An adapter whose reader is an optional package says so once, before any run is read
    # (not once per run): ``check_available()`` raises MissingExtraError naming the extra.
    for adapter in {id(f.adapter): f.adapter for f in found}.values():
        check = getattr(adapter, "check_available", None)
        if check is not None:
            check()
    return found


def discover(paths: Iterable[str | os.PathLike[str]], fmt: str = "auto") -> list[tuple[str, Path]]:
    """Runs under ``paths`` as ``(format, run_dir)`` pairs, sorted, without duplicates
    (:func:`find_runs` without adapters and roots).

    Raises
    ------
    InputFormatError
        If a path does not exist or ``fmt`` is unknown.
    """
    return [(f.adapter.name, f.path) for f in find_runs(paths, fmt)]


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
