"""Text formatting shared by the command line and the HTML report, and JSON-safe cleaning.

The one home of how a number, an interval, a percentage, a p-value, a factor level or a
true/false value is written as text, and of how results are made JSON-safe.

Two dialects exist today and both are kept byte for byte (making them one is a separate,
behaviour-changing decision):

* **page** (the HTML report, :mod:`stabstat.report`): a missing value is an en dash
  (:data:`PAGE_MISSING`), inf is missing too, levels are shortest floats (``2e-05``), table
  cells write booleans as ``yes``/``no``. Functions: :func:`number`, :func:`ci`,
  :func:`percent_ci`, :func:`p_value`, :func:`level`, :func:`cell`.
* **cli** (the tables of ``stabstat compare`` and friends): a missing value is a hyphen
  (:data:`CLI_MISSING`), inf prints as ``inf``, booleans as ``true``/``false``, float levels
  with the number rule. Functions: :func:`number_cli`, :func:`ci_cli`, :func:`p_value_cli`,
  :func:`level_cli`.

Imports only the standard library (no polars, numpy or project module): the CLI imports it
before any command runs, and the library's layers below the CLI may all use it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "CLI_MISSING",
    "PAGE_MISSING",
    "cell",
    "ci",
    "ci_cli",
    "json_safe",
    "level",
    "level_cli",
    "number",
    "number_cli",
    "p_value",
    "p_value_cli",
    "percent_ci",
    "round_floats",
    "truth",
]

#: A missing value in the report (en dash).
PAGE_MISSING = "\u2013"
#: A missing value in the command line's tables (ASCII hyphen: terminals, copy-paste).
CLI_MISSING = "-"


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _fixed_or_short(x: float, digits: int) -> str:
    """``digits`` decimals, or 3 significant digits for tiny (< 1e-3) and huge (>= 1e5) values,
    which fixed decimals would show as 0.0000 or as a long run of digits."""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


# --------------------------------------------------------------------------- page dialect


def number(x: Any, digits: int = 4) -> str:
    """A number for the page: floats as :func:`_fixed_or_short`, None/NaN/inf as an en dash,
    anything else ``str()`` (so ``True`` is ``"True"``)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return PAGE_MISSING
    if isinstance(x, float):
        return _fixed_or_short(x, digits)
    return str(x)


def ci(est: Any, lo: Any, hi: Any, digits: int = 4) -> str:
    """``est [lo, hi]`` for the page; just ``est`` without a lower bound, a dash without ``est``."""
    if est is None or _is_nan(est):
        return PAGE_MISSING
    if lo is None or _is_nan(lo):
        return number(est, digits)
    return f"{number(est, digits)} [{number(lo, digits)}, {number(hi, digits)}]"


def percent_ci(rate: Any, lo: Any, hi: Any) -> str:
    """A rate in [0, 1] with its interval as whole percentages: ``25% [9, 53]``."""
    if rate is None or _is_nan(rate):
        return PAGE_MISSING
    return f"{rate * 100:.0f}% [{lo * 100:.0f}, {hi * 100:.0f}]"


def p_value(p: Any, *, missing: str = PAGE_MISSING) -> str:
    """A p-value with 4 decimals, ``<1e-4`` below that; ``missing`` for None/NaN."""
    if p is None or _is_nan(p):
        return missing
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def level(v: Any) -> str:
    """A factor level as text: booleans lower-case, floats shortest (``2e-05``), None "null"."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def truth(v: bool) -> str:
    """A table cell's boolean: ``yes`` / ``no``."""
    return "yes" if v else "no"


def cell(v: Any, digits: int = 4) -> str:
    """A table cell from a frame value: floats to ``digits`` decimals (NaN, inf, -inf spelled
    out), booleans yes/no, None an en dash."""
    if v is None:
        return PAGE_MISSING
    if isinstance(v, bool):
        return truth(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


# --------------------------------------------------------------------------- CLI dialect


def number_cli(x: Any, digits: int = 4) -> str:
    """A number for the command line: like :func:`number` but None/NaN are a hyphen, inf is
    ``inf`` and booleans ``true``/``false``."""
    if x is None:
        return CLI_MISSING
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        if math.isnan(x):
            return CLI_MISSING
        return _fixed_or_short(x, digits)
    return str(x)


def ci_cli(est: Any, lo: Any, hi: Any) -> str:
    """``est [lo, hi]`` for the command line (4 decimals, :func:`number_cli`)."""
    if est is None or _is_nan(est):
        return CLI_MISSING
    if lo is None or _is_nan(lo):
        return number_cli(est)
    return f"{number_cli(est)} [{number_cli(lo)}, {number_cli(hi)}]"


def p_value_cli(p: Any) -> str:
    """:func:`p_value` with the command line's hyphen for a missing value."""
    return p_value(p, missing=CLI_MISSING)


def level_cli(v: Any) -> str:
    """A group's level for the command line: a dict of factors as ``k=v, ...`` (``all`` when
    empty), None "null", booleans and floats as :func:`number_cli`."""
    if isinstance(v, dict):
        return ", ".join(f"{k}={level_cli(x)}" for k, x in v.items()) or "all"
    return "null" if v is None else number_cli(v) if isinstance(v, (bool, float)) else str(v)


# --------------------------------------------------------------------------- JSON


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, dict keys as str, tuples as lists and numpy
    scalars as Python numbers (recursively), so that every JSON parser accepts its dump."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def round_floats(obj: Any, digits: int = 10) -> Any:
    """Finite floats to ``digits`` significant digits, recursively (dicts, lists, tuples ->
    lists); NaN/inf are kept (:func:`json_safe` nulls them). Embedded results then do not
    depend on the last bits of a BLAS reduction, which may vary with the thread count."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj
