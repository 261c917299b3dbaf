"""Run fingerprints: what makes re-ingest idempotent.

A run whose fingerprint is stored is skipped; a run whose fingerprint changed is replaced as a
whole. A fingerprint changes whenever what would be loaded may change (a file rewritten, the
reader's output changed), and never because the files were only read. The values are stored
in ``runs.fingerprint``: changing how one is computed re-ingests every run once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stabstat.store.schema import STORE_VERSION

__all__ = ["hf_fingerprint", "stabstat_fingerprint"]


def stabstat_fingerprint(run_dir: Path, run_json_bytes: bytes, status: str, files: Iterable[Path]) -> str:
    """Fingerprint of a stabstat run directory: its resolved path, the effective status, the
    bytes of run.json and the (name, size, mtime) of every table file. Any rewrite of a file
    (a still-running run that flushed again, a re-run) changes it; reading them does not.

    Raises ``OSError`` when a file vanished meanwhile (a running run compacting its parts).
    """
    h = hashlib.sha256()
    h.update(json.dumps([STORE_VERSION, str(run_dir.resolve()), status]).encode())
    h.update(hashlib.sha256(run_json_bytes).digest())
    for f in files:
        st = os.stat(f)
        # parent/name: "steps.parquet" under the run, or "steps.parts/part-000001.parquet"
        h.update(f"{f.parent.name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def hf_fingerprint(
    reader_version: int, run_dir: Path, params: Mapping[str, Any] | None, files: Iterable[Path],
    *, resolved: Path | None = None,
) -> str:
    """Fingerprint of a Hugging Face run: the reader's version, the resolved run directory, the
    ``--param`` factors and the path, size and mtime of every file read (state files and side
    files, in any order). The Trainer rewrites a state file whenever it saves, which changes
    its mtime; the files' contents are not read (hashing them cost more than DuckDB's reading).
    ``resolved``: ``run_dir.resolve()`` when the caller has it."""
    absolute = resolved if resolved is not None else run_dir.resolve()
    h = hashlib.sha256()
    h.update(json.dumps([reader_version, str(absolute), sorted((params or {}).items(), key=str)],
                        default=str).encode())
    for f in sorted(files):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
