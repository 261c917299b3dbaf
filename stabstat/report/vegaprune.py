"""Drop the invalid-value guards of compiled Vega that the page's own data prove dead.

Vega-Lite guards every encoded field against null/NaN values it cannot know are absent: a
filter transform per quantitative field (``isValid(datum["f"]) && isFinite(+datum["f"])``),
a ``defined`` test on every line and area vertex, and a null/array test around every nominal
field of a tooltip. The browser evaluates each of them once per data row and mark item
(issue 18: tens of thousands of evaluations on a 2,000-run page). The page's data are inline,
so Python can check them when the page is written: :func:`prune` removes a guard only where
every value that reaches it is a finite number (number guards) or a string (tooltip text
guards), in which case the guard passes every row and drawing the chart without it gives the
same items, the same scales and the same tooltip text. Anything it cannot trace (a formula it
does not recognise, a stack, a lookup) keeps its guards.

Tracing, per named data set: the fields of inline ``values`` are classified from the values;
a ``source`` inherits its parent's classes; ``toNumber(datum["f"])`` and ``datum['f']``
formulas carry ``f``'s class to their output, any other formula output is unknown; a filter
keeps the classes (it only removes rows); an aggregate keeps its group-by fields and makes
``min``/``max``/``q1``/``q3``/``median``/``mean`` of a finite-number field finite; any other
transform makes everything unknown. Facets (``from.facet``) inherit their data's classes.

:func:`tooltips_on_hover` moves each mark's tooltip from the ``update`` encoding (evaluated for
every item when the chart is drawn: an object and up to 5 number formats per item, ~5% of the
2,000-run page's drawing) to the ``hover`` encoding, evaluated for the one item under the
pointer when it enters it (the page's vega-embed runs with ``hover: true``): the same text,
computed when it is shown.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["copy_spec", "prune", "tooltips_on_hover"]

NUM, STR = "number", "string"
_F = r'datum\["((?:[^"\\]|\\.)+)"\]'
_GUARD = re.compile(r'isValid\(' + _F + r'\) && isFinite\(\+datum\["\1"\]\)')
_GUARDS = re.compile(r'^' + _GUARD.pattern + r'(?: && ' + _GUARD.pattern.replace(r"\1", r"\2")
                     + r')*$')
_TIP = re.compile(r'isValid\(' + _F + r'\) \? isArray\(datum\["\1"\]\) \? '
                  r'join\(datum\["\1"\], \'\\n\'\) : datum\["\1"\] : ""\+datum\["\1"\]')
_COPY = re.compile(r'^(?:toNumber\(' + _F + r'\)|datum\[\'([^\'\\]+)\'\])$')
_SAFE_AGG = {"min", "max", "q1", "q3", "median", "mean"}

Classes = dict[str, str]


def prune(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the Vega ``spec`` without the invalid-value guards its data make dead.

    Returns ``spec`` unchanged (as a copy) when it is not Vega (e.g. a Vega-Lite fallback).
    The inline value lists are shared with ``spec``, not copied.
    """
    if "data" not in spec or "marks" not in spec:
        return dict(spec)
    out = copy_spec(spec)
    classes: dict[str, Classes] = {}
    for entry in out["data"]:
        known = _data_classes(entry, classes)
        if "name" in entry:
            classes[entry["name"]] = known
    _prune_marks(out.get("marks", []), classes)
    return out


def copy_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the Vega ``spec`` whose data entries share their inline value lists
    with it (the rewrites of the page's Vega change the spec, never the rows)."""
    out = copy.deepcopy({k: v for k, v in spec.items() if k != "data"})
    if "data" in spec:
        out["data"] = [{k: (v if k == "values" else copy.deepcopy(v)) for k, v in d.items()}
                       for d in spec["data"]]
    return out


def _value_classes(rows: Any) -> Classes:
    """Fields whose every row holds a finite number (NUM) or a string (STR)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return {}
    out: Classes = {}
    for name in rows[0]:
        vals = [r.get(name) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in vals):
            out[name] = NUM
        elif all(isinstance(v, str) for v in vals):
            out[name] = STR
    return out


def _data_classes(entry: dict[str, Any], known: Mapping[str, Classes]) -> Classes:
    """Classes of a data entry's output rows; removes the filters they make dead."""
    if isinstance(entry.get("source"), str):  # (Vega-Lite also writes "values": [] there)
        cls = dict(known.get(entry["source"], {}))
    elif "values" in entry and _plain(entry.get("format")):
        cls = _value_classes(entry["values"])
    else:
        cls = {}
    kept = []
    for tr in entry.get("transform", []):
        kind = tr.get("type")
        if kind == "filter" and _dead_filter(tr.get("expr"), cls):
            continue
        kept.append(tr)
        cls = _after(tr, cls)
    if "transform" in entry:
        if kept:
            entry["transform"] = kept
        else:
            del entry["transform"]
    return cls


def _plain(fmt: Any) -> bool:
    """A data format that leaves inline JSON values as they are (no parse, no other type)."""
    return fmt is None or (isinstance(fmt, dict) and "parse" not in fmt
                           and fmt.get("type", "json") == "json")


def _after(tr: Mapping[str, Any], cls: Classes) -> Classes:
    """The classes of the rows that come out of the transform ``tr``."""
    kind = tr.get("type")
    if kind == "filter":
        return cls
    if kind == "formula" and isinstance(tr.get("as"), str):
        out = {k: v for k, v in cls.items() if k != tr["as"]}
        m = _COPY.match(str(tr.get("expr", "")))
        if m is not None:
            src = m.group(1) or m.group(2)
            # toNumber("7") is a number: only a finite number stays what it was
            if src in cls and not (m.group(1) and cls[src] != NUM):
                out[tr["as"]] = cls[src]
        return out
    if kind == "aggregate":
        out = {g: cls[g] for g in tr.get("groupby", []) if isinstance(g, str) and g in cls}
        ops, fields = tr.get("ops", []), tr.get("fields", [])
        for op, f, name in zip(ops, fields, tr.get("as", []), strict=False):
            if op in _SAFE_AGG and cls.get(f) == NUM:
                out[name] = NUM
        return out
    return {}


def _dead_filter(expr: Any, cls: Classes) -> bool:
    """True for a filter made only of number guards on fields known finite."""
    if not isinstance(expr, str) or not _GUARDS.match(expr):
        return False
    return all(cls.get(f) == NUM for f in _GUARD.findall(expr))


def _prune_marks(marks: Iterable[Any], classes: Mapping[str, Classes]) -> None:
    """Prune the encodings of ``marks`` (and their children) in place; ``classes``: the data
    sets visible to them, by name."""
    for mark in marks:
        if not isinstance(mark, dict):
            continue
        src = mark.get("from") or {}
        scope = dict(classes)
        cls: Classes = {}
        if isinstance(src.get("facet"), dict):
            facet = src["facet"]
            scope[facet.get("name", "")] = dict(classes.get(facet.get("data", ""), {}))
        elif isinstance(src.get("data"), str):
            cls = classes.get(src["data"], {})
        for entry in mark.get("data", []) if isinstance(mark.get("data"), list) else []:
            # a group's own data sets (they shadow outer names inside the group)
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                scope[entry["name"]] = _data_classes(entry, scope)
        update = (mark.get("encode") or {}).get("update") or {}
        _prune_encode(update, cls)
        _prune_marks(mark.get("marks", []), scope)


def _prune_encode(update: dict[str, Any], cls: Classes) -> None:
    """Drop a dead ``defined`` test; unguard tooltip text of fields known to be strings."""
    defined = update.get("defined")
    if isinstance(defined, dict) and _dead_filter(defined.get("signal"), cls):
        del update["defined"]  # Vega's default: every point is defined
    tip = update.get("tooltip")
    if isinstance(tip, dict) and isinstance(tip.get("signal"), str):
        tip["signal"] = _TIP.sub(
            lambda m: m.group(0) if cls.get(m.group(1)) != STR else f'datum["{m.group(1)}"]',
            tip["signal"])


def tooltips_on_hover(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` (Vega, as :func:`prune` returns it) with every mark's ``update.tooltip`` moved to
    its ``hover`` encode set; changed in place and returned. Not Vega: returned unchanged.

    Vega re-encodes ``update`` when the pointer leaves an item, which does not touch the
    tooltip, so an item keeps its text once shown; vega-tooltip shows it on the next pointer
    move over the item.
    """
    out = dict(spec)
    if "marks" in out:
        _hover_marks(out["marks"])
    return out


def _hover_marks(marks: Iterable[Any]) -> None:
    for mark in marks:
        if not isinstance(mark, dict):
            continue
        encode = mark.get("encode")
        if isinstance(encode, dict) and isinstance(encode.get("update"), dict):
            tip = encode["update"].pop("tooltip", None)
            if tip is not None:
                encode.setdefault("hover", {})["tooltip"] = tip
        _hover_marks(mark.get("marks", []))
