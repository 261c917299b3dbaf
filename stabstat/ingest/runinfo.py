"""What every log reader shares about a run it did not write itself: run ids made from paths,
factors from hive-style folder names and from Hugging Face side files, and ``--param`` values.

Used by the HF, TensorBoard, Lightning and table adapters (and the CLI's ``--param``); it
imports no adapter, so none of them depends on another.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stabstat.errors import InputFormatError
from stabstat.store.schema import parse_value

__all__ = ["hive_factors", "make_run_id", "parse_param", "side_factors"]

#: keys of a model configuration (config.json of a checkpoint), not of a run's factors
_MODEL_CONFIG_KEYS = {"architectures", "model_type", "transformers_version"}


def parse_param(item: str) -> tuple[str, bool | int | float | str]:
    """Split ``key=value`` (a ``--param``) into the key and the parsed value.

    Raises
    ------
    InputFormatError
        If there is no ``=`` or the key is empty.
    """
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise InputFormatError(f"--param {item!r}: expected key=value, e.g. --param seed=3")
    return key.strip(), parse_value(value.strip())


def hive_factors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Factors from hive-style folder names ``key=value`` on ``path`` (inner folders win).

    >>> hive_factors("sweep/bias_correction=false/seed=3")
    {'bias_correction': False, 'seed': 3}
    """
    out: dict[str, Any] = {}
    for part in Path(path).parts:
        key, sep, value = part.partition("=")
        if sep and key and not key.startswith("."):
            out[key] = parse_value(value)
    return out


def make_run_id(run_dir: Path, *, resolved: Path | None = None) -> str:
    """Deterministic run id from the run directory's absolute path: ``<folder>-<8 hex>``
    (``resolved``: ``run_dir.resolve()`` when the caller has it; resolving costs a ``stat``
    per path component)."""
    absolute = resolved if resolved is not None else run_dir.resolve()
    digest = hashlib.sha1(str(absolute).encode("utf-8")).hexdigest()[:8]
    return f"{absolute.name}-{digest}"


def side_factors(
    run_dir: Path, newest: Path | None, *, beside: str = "trainer_state.json"
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Path]]:
    """Factors and task facts from a Hugging Face ``run.json`` / ``config.json`` in ``run_dir``
    (and in ``newest``'s folder, the newest checkpoint); ``beside`` names what they sit beside
    in messages. Returns ``(factors, task, files read)``; a model configuration
    (``architectures``, ``model_type``) contributes only its ``_name_or_path`` as ``model``."""
    factors: dict[str, Any] = {}
    task: dict[str, Any] | None = None
    used: list[Path] = []
    folders = [run_dir]
    if newest is not None and newest.parent != run_dir:
        folders.append(newest.parent)
    for folder in folders:
        for name in ("config.json", "run.json"):  # run.json is read last: it wins
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputFormatError(f"{path}: malformed JSON beside {beside}: {exc}; fix or remove it") from exc
            if not isinstance(data, dict):
                raise InputFormatError(f"{path}: expected a JSON object of factors beside {beside}")
            used.append(path)
            if name == "config.json" and _MODEL_CONFIG_KEYS & set(data):
                # A model configuration (hidden_size, vocab_size, ...), not the run's factors.
                if isinstance(data.get("_name_or_path"), str) and data["_name_or_path"]:
                    factors.setdefault("model", data["_name_or_path"])
                continue
            cfg: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else data
            for k, v in cfg.items():
                if v is None or isinstance(v, (bool, int, float, str)):
                    factors[k] = v
            if isinstance(data.get("task"), dict):
                task = data["task"]
    return factors, task, used
