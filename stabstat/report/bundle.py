"""The Vega, Vega-Lite and vega-embed script inlined into every report, cached on disk.

Built offline by ``vl_convert.javascript_bundle`` (a few seconds), so :func:`javascript_bundle`
keeps it in memory and under ``$STABSTAT_CACHE_DIR`` (else ``$XDG_CACHE_HOME/stabstat`` or
``~/.cache/stabstat``), keyed by the vl-convert and Vega-Lite versions.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from stabstat.errors import MissingExtraError

__all__ = ["cache_dir", "javascript_bundle", "vegalite_minor"]

#: First line of a cached bundle file: a file without it (truncated, foreign) is rebuilt.
_MAGIC = "/* stabstat vega bundle */"


def cache_dir() -> Path:
    """``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat``, else ``~/.cache/stabstat``."""
    if os.environ.get("STABSTAT_CACHE_DIR"):
        return Path(os.environ["STABSTAT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "stabstat"


def vegalite_minor() -> str:
    """The Vega-Lite version (``"6.4"``) Altair writes specs for, as vl-convert names it."""
    import altair as alt
    import vl_convert as vlc

    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    have = list(vlc.get_vegalite_versions())
    return want if want in have else have[-1]


@lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one self-contained script (about 0.9 MB).

    Built offline by ``vl_convert.javascript_bundle`` from the JavaScript that the installed
    ``vl-convert-python`` wheel ships, for the Vega-Lite version Altair targets. Building takes
    a few seconds, so the result is cached in memory and on disk
    (``$STABSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/stabstat`` or ``~/.cache/stabstat``),
    keyed by the vl-convert and Vega-Lite versions. A cache that cannot be written is skipped.
    """
    try:
        import vl_convert as vlc
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingExtraError(
            "the HTML report needs the package 'vl-convert-python': pip install vl-convert-python"
        ) from exc
    from importlib import metadata

    vl = vegalite_minor()
    name = f"vega-bundle-vlc{metadata.version('vl-convert-python')}-vl{vl}.js"
    path = cache_dir() / name
    try:
        text = path.read_text(encoding="utf-8")
        if text.startswith(_MAGIC):
            return text[len(_MAGIC + "\n"):]
    except OSError:
        pass
    bundle: str = vlc.javascript_bundle(vl_version=vl)  # type: ignore[call-arg]  # stub: snippet optional
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(_MAGIC + "\n" + bundle, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home is fine: we just rebuild next time
    return bundle
