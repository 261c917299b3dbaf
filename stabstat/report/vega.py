"""Vega-Lite -> Vega for the report page, compiled here instead of in the reader's browser.

vega-embed compiles a Vega-Lite spec in the browser before Vega can parse it: ~60-80 ms of the
2,000-run page's drawing (issue 18). :func:`compile_spec` does it when the page is written,
offline, with the Vega-Lite that ``vl-convert-python`` (already needed for the page's Vega
bundle) runs in its embedded V8 engine, for the Vega-Lite version the bundle ships; the page
carries Vega and the browser goes straight to Vega's parser. The result is exactly what
compiling the whole spec gives (``tests/test_report_vega.py``).

What keeps it cheap for the report build:

* the data do not travel: a spec is compiled with its inline ``datasets`` emptied (Vega-Lite's
  output does not depend on the values) and the values are put back into the Vega ``data``
  entries of the same names afterwards;
* the compiled data-less spec is a template cached on disk beside the Vega bundle
  (``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat`` or ``~/.cache/stabstat``, in
  ``vega-templates/``), keyed by the data-less spec
  with its dataset names replaced by positional aliases (the names are hashes of the data),
  the Vega-Lite version and the vl-convert version: a report whose charts have the same
  structure as an earlier one (the same sweep re-reported as runs arrive, a benchmark's
  repeats) never starts V8. A miss costs vl-convert's start (0.25-0.5 s of CPU, once per
  process) and ~5 ms per chart;
* a miss compiles on a worker thread (:func:`compile_async`, called by
  :func:`stabstat.report.figures.build_figures` as each figure is built): V8 runs without the
  GIL, beside the report's other work, not after it.

The page draws with Vega's canvas renderer, which exposes no per-mark ARIA attributes, so the
specs are compiled with Vega-Lite's ``config.aria = false``: no per-item description strings
(up to 7 number formats per point) are computed for nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stabstat.errors import MissingExtraError

__all__ = ["compile_async", "compile_spec"]

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_ALIAS = "stabstat-dataset-{:04d}"


def _vlc() -> Any:
    try:
        import vl_convert as vlc
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingExtraError(
            "the HTML report needs the package 'vl-convert-python': pip install vl-convert-python"
        ) from exc
    return vlc


def _worker() -> ThreadPoolExecutor:
    """One compile thread per process (vl-convert serialises its calls anyway)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="stabstat-vega")
        return _pool


def compile_async(spec: Mapping[str, Any]) -> Future[dict[str, Any]]:
    """:func:`compile_spec` of ``spec`` on the compile thread; ``spec`` must not change after."""
    return _worker().submit(compile_spec, spec)


def compile_spec(spec: Mapping[str, Any], *, cache: bool = True) -> dict[str, Any]:
    """One Vega-Lite spec (a dict, as Altair's ``to_dict()``) as the Vega spec of the page.

    ``config.aria`` is set to false (the canvas renderer has no use for ARIA descriptions).
    The inline ``datasets`` are compiled empty, under positional aliases, and the names and
    values are put back into the Vega ``data`` entries afterwards (the value lists are the
    same objects, not copies). When the compiled spec does not have exactly one empty entry
    per dataset (Vega-Lite drops a dataset no layer uses), the whole spec is compiled instead.
    ``cache=False`` neither reads nor writes the template cache.
    """
    from importlib import metadata

    from stabstat.report.bundle import cache_dir, vegalite_minor

    vl_version = vegalite_minor()
    vl = dict(spec)
    vl["config"] = {**vl.get("config", {}), "aria": False}
    datasets: dict[str, Any] = dict(vl.pop("datasets", None) or {})
    # Sorted aliases keep the names' order, should Vega-Lite ever order data by name.
    aliases = {name: _ALIAS.format(i) for i, name in enumerate(sorted(datasets))}
    vl["datasets"] = {aliases[name]: [] for name in datasets}
    text = _rename(json.dumps(vl, sort_keys=True, separators=(",", ":")), aliases)
    key = hashlib.sha256(
        f"{metadata.version('vl-convert-python')}\n{vl_version}\n{text}".encode()).hexdigest()
    path = cache_dir() / "vega-templates" / f"{key}.json"
    back = {a: n for n, a in aliases.items()}
    out = _load(_read(path), back) if cache else None
    if out is None:
        compiled = _vlc().vegalite_to_vega(json.loads(text), vl_version=vl_version)
        template = json.dumps(compiled, sort_keys=True, separators=(",", ":"))
        if cache:
            _write(path, template)
        out = _load(template, back)
        assert out is not None
    entries = {d.get("name"): d for d in out.get("data", []) if d.get("name") in datasets}
    if len(entries) != len(datasets) or any(d.get("values") != [] for d in entries.values()):
        vl["datasets"] = datasets  # an unexpected shape: compile it all, values included
        full: dict[str, Any] = _vlc().vegalite_to_vega(vl, vl_version=vl_version)
        return full
    for name, entry in entries.items():
        entry["values"] = datasets[name]
    return out


def _rename(text: str, names: Mapping[str, str]) -> str:
    """Replace each JSON string ``"old"`` of ``names`` by ``"new"`` in ``text``.

    Only whole quoted strings match; the names are dataset names (``data-<md5 of the data>``)
    and the aliases, which nothing else in a spec spells.
    """
    for old, new in names.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    return text


def _load(template: str | None, names: Mapping[str, str]) -> dict[str, Any] | None:
    """A template's Vega with the dataset names put back; None for a missing or foreign file."""
    if template is None:
        return None
    try:
        out = json.loads(_rename(template, names))
    except ValueError:
        return None
    return out if isinstance(out, dict) and isinstance(out.get("data", []), list) else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _write(path: Path, text: str) -> None:
    """Atomic (temp file + rename); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
