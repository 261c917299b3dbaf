"""Fewer Vega operators for the same picture (issue 18): a line or area per series without a
facet subflow per series, grid axes folded into labelled axes, no alias data sets.

Vega-Lite draws a line or area mark with a colour, dash or detail field as a "path group": a
group mark faceted by that field (one group item, with a dataflow of its own, per series) that
holds the one line or area. Vega builds that subflow for every series when the chart is drawn:
on the 2,000-run page 52 of them (36 in the per-layer gradient chart's nine cells), each
parsing its operators and compiling its encoders again. With :func:`merge_grid_axes` and
:func:`drop_aliases` (their docstrings), the page's Vega runs 4,105 operators instead of
4,530 and instantiates 59 subflows instead of 105 (``tests/test_report_flat.py``; README,
"Benchmarks").

:func:`flatten_pathgroups` replaces such a group, where the page's inline data allow it, by one
copy of its line or area per series, in the order Vega creates the series, each fed by a filter
of the same rows on the series' key (one filter per series, shared by the area and the line of
a series). The path group's items drew nothing of their own (no fill, no stroke, no offset, no
clip: their size only repeats the enclosing group's), so the chart draws the same paths with
the same pixels, and every item keeps its datum and its tooltip (``tests/test_report_flat.py``
compares the pictures pixel by pixel and the items' tooltips, with negative controls). Where
the enclosing group has legends, Vega places them by the bounds of its group items only: there
the copies go into one plain group (one item and one subflow instead of one per series), whose
item has the bounds the path group's items had together.

When it applies, per path group (anything else is left as it is):

* the group has exactly one child mark, a ``line``, ``area`` or ``trail`` fed by the facet,
  and nothing else (no axes, legends, title, data, signals, scales, sort, facet aggregate);
  its ``encode`` sets only ``width``/``height`` to the enclosing group's;
* the child refers to no group field and no ``parent``, and neither the group's nor the
  child's name nor the facet's is used anywhere else in the spec (signals, events);
* the rows reaching the facet are known: inline JSON values, through ``source`` entries,
  filters, formulas that do not write a grouping field, and enclosing facets (a subset);
* every grouping field holds a string or an integer in every row and the keys are at most
  :data:`MAX_SERIES`; Vega's facet creates the series in the order it first meets their keys,
  which Python knows when the facet sees all the rows; where it may see a subset (after a
  filter, inside a cell), each key's rows must be contiguous, so that every subset meets the
  keys in the same order.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from stabstat.report.vegaprune import copy_spec

__all__ = ["MAX_SERIES", "drop_aliases", "flatten_pathgroups", "merge_grid_axes"]

#: Series per path group up to which the group is replaced by copies of its mark.
MAX_SERIES = 24
_PATHS = {"line", "area", "trail"}
_SIZE = {"width": {"field": {"group": "width"}}, "height": {"field": {"group": "height"}}}

#: The rows of a data set as Python knows them: the rows (in Vega's order), the fields formulas
#: (re)wrote (unknown in Python) and whether Vega may see only some of them (a filter or an
#: enclosing facet ran: a subset, in the same order); None: rows not known.
Rows = tuple[list[dict[str, Any]], frozenset[str], bool] | None


def flatten_pathgroups(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the Vega ``spec`` with each path group it can flatten replaced by one mark per
    series (module docstring). Not Vega (a Vega-Lite fallback): returned unchanged (a copy).
    Inline value lists are shared with ``spec``, not copied."""
    if "data" not in spec or "marks" not in spec:
        return dict(spec)
    out = copy_spec(spec)
    text = _spec_text(out)
    scope = _data_rows(out["data"], {})
    _flatten(out, out["data"], scope, text)
    return out


def _spec_text(spec: Mapping[str, Any]) -> str:
    """The spec as JSON text without its inline rows: where its names can be looked up."""
    return json.dumps({k: v for k, v in spec.items() if k != "data"}) + json.dumps(
        [{k: v for k, v in d.items() if k != "values"} for d in spec["data"]])


def _uses(name: str, text: str) -> int:
    """How often ``name`` occurs in ``text`` as a whole word (its definition included)."""
    return len(re.findall(r"(?<![\w])" + re.escape(name) + r"(?![\w])", text))


def _data_rows(entries: list[dict[str, Any]], outer: Mapping[str, Rows]) -> dict[str, Rows]:
    """Rows of each named data entry, where Python can know them (in order, as Vega sees them,
    up to filters: a superset, in the same order)."""
    scope = dict(outer)
    for d in entries:
        name = d.get("name")
        if not isinstance(name, str):
            continue
        rows: Rows = None
        if isinstance(d.get("source"), str):
            rows = scope.get(d["source"])
        elif (isinstance(d.get("values"), list) and "format" not in d and "url" not in d
              and all(isinstance(r, dict) for r in d["values"])):
            rows = (d["values"], frozenset(), False)
        for tr in d.get("transform", []):
            if rows is None:
                break
            if tr.get("type") == "formula" and isinstance(tr.get("as"), str):
                rows = (rows[0], rows[1] | {tr["as"]}, rows[2])
            elif tr.get("type") == "filter":  # a filter only removes rows
                rows = (rows[0], rows[1], True)
            else:
                rows = None
        scope[name] = rows
    return scope


def _flatten(group: dict[str, Any], data: list[dict[str, Any]], scope: Mapping[str, Rows],
             text: str) -> None:
    """Flatten the path groups among ``group``'s marks (recursively); new data entries go to
    ``data`` (the list that defines names for ``group``'s marks)."""
    marks = group.get("marks")
    if not isinstance(marks, list):
        return
    new_marks: list[Any] = []
    made: dict[tuple[str, str], str] = {}  # (source, test) -> the data set made for it here
    for mark in marks:
        series = _series(mark, scope, text) if isinstance(mark, dict) else None
        if series is None:
            new_marks.append(mark)
            if isinstance(mark, dict) and mark.get("type") == "group":
                _descend(mark, scope, text)
            continue
        child = mark["marks"][0]
        facet = mark["from"]["facet"]
        copies: list[Any] = new_marks
        if group.get("legends"):
            # Vega's layout places this group's legends by the bounds of its group items only,
            # so the copies go into one plain group (one item, one subflow, no facet) whose
            # bounds are those the path group's items had together.
            wrapper = {k: v for k, v in mark.items() if k in ("type", "name", "encode")}
            wrapper["marks"] = copies = []
            new_marks.append(wrapper)
        for i, key in enumerate(series):
            test = " && ".join(f"datum[{json.dumps(f)}]==={json.dumps(v)}"
                               for f, v in zip(facet["groupby"], key, strict=True))
            name = made.get((facet["data"], test))
            if name is None:  # (an area and a line of the same series share their rows)
                name = made[(facet["data"], test)] = f"{facet['name']}__{i}"
                data.append({"name": name, "source": facet["data"],
                             "transform": [{"type": "filter", "expr": test}]})
            one = copy.deepcopy(child)
            one["from"] = {"data": name}
            if isinstance(child.get("name"), str):
                one["name"] = f"{child['name']}__{i}"
            copies.append(one)
    group["marks"] = new_marks


def _descend(mark: dict[str, Any], scope: Mapping[str, Rows], text: str) -> None:
    """Into a group mark: its facet (a subset of its data's rows) and its own data entries."""
    inner = dict(scope)
    facet = (mark.get("from") or {}).get("facet")
    if isinstance(facet, dict) and isinstance(facet.get("name"), str):
        # a facet by groupby holds subsets of its data's rows, in their order
        rows = scope.get(facet.get("data", "")) if "groupby" in facet else None
        inner[facet["name"]] = None if rows is None else (rows[0], rows[1], True)
    own = mark.get("data")
    if own is None:
        mark["data"] = own = []
    if not isinstance(own, list):
        return
    inner = _data_rows(own, inner)
    _flatten(mark, own, inner, text)
    if not own:
        del mark["data"]


def _series(mark: dict[str, Any], scope: Mapping[str, Rows], text: str) -> list[tuple[Any, ...]] | None:
    """The keys of a flattenable path group's series, in Vega's order; None if it is not one."""
    facet = (mark.get("from") or {}).get("facet")
    children = mark.get("marks")
    if (mark.get("type") != "group" or not isinstance(facet, dict)
            or set(facet) != {"data", "groupby", "name"} or not isinstance(children, list)
            or len(children) != 1 or not isinstance(children[0], dict)):
        return None
    if set(mark) - {"type", "name", "from", "encode", "marks"}:
        return None  # axes, legends, title, data, sort, clip, ... : not a bare path group
    if mark.get("encode", {"update": _SIZE}) != {"update": _SIZE}:
        return None
    child = children[0]
    fields = facet["groupby"]
    if (child.get("type") not in _PATHS or child.get("from") != {"data": facet["name"]}
            or not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
        return None
    child_text = json.dumps(child)
    if '"group"' in child_text or "parent" in child_text:
        return None
    for name in (facet["name"], mark.get("name"), child.get("name")):
        # used only where it is defined (the facet's name: also as the child's data), also
        # not inside an expression string (data("..."), event selectors)
        uses = _uses(name, text) if isinstance(name, str) else 0
        if uses > 1 + (name == facet["name"]):
            return None
    rows = scope.get(facet["data"])
    if rows is None or set(fields) & rows[1]:
        return None
    return _keys(rows[0], fields, contiguous=rows[2])


def _keys(rows: list[dict[str, Any]], fields: list[str], *,
          contiguous: bool) -> list[tuple[Any, ...]] | None:
    """Distinct keys of ``rows`` in order of first appearance (the order Vega's facet creates
    its groups in: its aggregate's cells in the order it meets them), when every value is a
    string or an int and Vega's joined string keys are distinct. ``contiguous``: Vega may see
    a subset of ``rows``; then each key's rows must be contiguous, so that every subset meets
    the keys in this order."""
    order: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    last: tuple[Any, ...] | None = None
    for r in rows:
        key = tuple(r.get(f) for f in fields)
        if key != last:
            if key in seen:
                if contiguous:
                    return None
                continue
            if not all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
                       for v in key):
                return None
            seen.add(key)
            order.append(key)
            last = key
    joined = {"|".join(str(v) for v in k) for k in order}
    if len(joined) != len(order) or not order or len(order) > MAX_SERIES:
        return None
    return order


# --------------------------------------------------------------------------- grid axes

#: Keys a grid-only axis of Vega-Lite may have (anything else: left alone).
_GRID_ONLY = {"aria", "domain", "grid", "gridScale", "labels", "maxExtent", "minExtent",
              "orient", "scale", "tickCount", "ticks", "values", "zindex"}
#: Keys that decide where an axis puts its ticks (and so its grid lines): must agree.
_TICKS = ("scale", "orient", "zindex", "tickCount", "values", "tickMinStep", "bandPosition",
          "translate", "tickBand", "tickOffset", "tickRound", "offset", "position")


def merge_grid_axes(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the Vega ``spec`` with a grid-only axis folded into the labelled axis of the
    same scale and side, where that draws the same pixels: one axis (ticks, a data join, a
    group item, its layout) fewer per chart.

    Vega-Lite writes the grid as an axis of its own (no ticks, labels or domain) before the
    labelled axes, so the grid lies under them; an axis with ``grid: true`` draws its grid
    first, then ticks, labels and domain. Folding grid axis ``g`` into the later axis ``a``
    moves ``g``'s lines after the axes between them; only grid-only axes may stand there
    (e.g. the other direction's grid), whose lines have the same default style: crossing
    crisp lines of one colour give the same pixels in either order. The two axes must agree
    on everything that places ticks (:data:`_TICKS`), and the spec's config may not style
    axes (the default grid style is what both draw with). Not Vega: returned unchanged.
    """
    out = copy_spec(spec)
    config = out.get("config") or {}
    if "marks" not in out or any(str(k).startswith("axis") for k in config):
        return out
    _merge_in(out)
    return out


def _merge_in(group: dict[str, Any]) -> None:
    axes = group.get("axes")
    if isinstance(axes, list):
        group["axes"] = _merged(axes)
    for mark in group.get("marks", []) or []:
        if isinstance(mark, dict) and mark.get("type") == "group":
            _merge_in(mark)


def _is_grid(axis: Any) -> bool:
    return (isinstance(axis, dict) and set(axis) <= _GRID_ONLY and axis.get("grid") is True
            and axis.get("labels") is False and axis.get("ticks") is False
            and axis.get("domain") is False and axis.get("minExtent") == 0
            and axis.get("maxExtent") == 0)


def _merged(axes: list[Any]) -> list[Any]:
    """``axes`` with each grid-only axis folded into the first later labelled axis of its
    scale and side, when only grid-only axes stand between them."""
    out = list(axes)
    i = 0
    while i < len(out):
        g = out[i]
        if not _is_grid(g):
            i += 1
            continue
        j = i + 1
        while j < len(out) and _is_grid(out[j]):
            j += 1
        a = out[j] if j < len(out) else None
        if (isinstance(a, dict) and not a.get("grid") and "gridScale" not in a
                and not any(str(k).startswith("grid") and k != "grid" for k in a)
                and all(a.get(k) == g.get(k) for k in _TICKS)):
            merged = dict(a)
            merged["grid"] = True
            if "gridScale" in g:
                merged["gridScale"] = g["gridScale"]
            out[j] = merged
            del out[i]
            continue
        i += 1
    return out


# --------------------------------------------------------------------------- data aliases


def drop_aliases(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the Vega ``spec`` in which marks and scales read a top-level data set that is
    only another name for its source (``{"name": a, "source": b}``, nothing else: Vega-Lite
    writes one per layer) from the source itself, and the alias is gone: the same rows in the
    same order, one data set (and its operators) fewer.

    An alias stays where its name is used other than as the ``data``/``source`` of an entry,
    a mark, a facet or a scale domain (e.g. inside an expression), or where a group defines a
    data set (or facet) of its name or of its source's name (inside that group the name means
    another data set). Not Vega: returned unchanged.
    """
    out = copy_spec(spec)
    if "data" not in out or "marks" not in out:
        return out
    aliases = {d["name"]: d["source"] for d in out["data"]
               if set(d) == {"name", "source"} and isinstance(d["name"], str)
               and isinstance(d["source"], str)}
    text = _spec_text(out)
    shadowed = set(_group_data_names(out.get("marks", [])))
    for name in list(aliases):
        # every use is `"data": "name"` or `"source": "name"`, plus its definition
        uses = _uses(name, text)
        plain = len(re.findall(r'"(?:data|source)": ' + re.escape(json.dumps(name)), text))
        if name in shadowed or uses != plain + 1:
            del aliases[name]

    def target(name: str) -> str:
        seen = set()
        while name in aliases and name not in seen:
            seen.add(name)
            name = aliases[name]
        return name

    # a group's own data set of the target's name would shadow it for the group's marks
    while any(target(a) in shadowed for a in aliases):
        aliases = {a: b for a, b in aliases.items() if target(a) not in shadowed}
    if not aliases:
        return out
    out["data"] = [d for d in out["data"] if d.get("name") not in aliases]
    _retarget(out, {a: target(a) for a in aliases})
    return out


def _group_data_names(marks: list[Any]) -> list[str]:
    names: list[str] = []
    for m in marks:
        if isinstance(m, dict):
            for d in m.get("data", []) if isinstance(m.get("data"), list) else []:
                if isinstance(d, dict) and isinstance(d.get("name"), str):
                    names.append(d["name"])
            facet = (m.get("from") or {}).get("facet")
            if isinstance(facet, dict) and isinstance(facet.get("name"), str):
                names.append(facet["name"])
            names += _group_data_names(m.get("marks", []))
    return names


def _retarget(node: Any, names: Mapping[str, str]) -> None:
    """Replace ``"data": alias`` and ``"source": alias`` values in place, everywhere."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("data", "source") and isinstance(v, str) and v in names:
                node[k] = names[v]
            elif k != "values":
                _retarget(v, names)
    elif isinstance(node, list):
        for v in node:
            _retarget(v, names)
