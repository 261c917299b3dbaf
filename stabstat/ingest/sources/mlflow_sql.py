"""How DuckDB reads MLflow metric files (the fast path of :mod:`stabstat.ingest.sources.mlflow`).

Metric files (``metrics/<key>``: lines ``<timestamp ms> <value> <step>``) are never parsed by
Python on the way in: the runs of a batch are staged by DuckDB's own CSV reader, every metric
file of the batch in one ``read_csv`` statement, through a :class:`~stabstat.store.load.JsonReader`
(the store's interface for files DuckDB reads itself; the name is historical, any reader works).

Where a metric goes is decided in Python, once per **layout**: the run's metric keys in sorted
order with their :class:`~stabstat.ingest.tags.Target` (the rules of
:func:`~stabstat.ingest.tags.map_tag`, ``--map`` first, the first claim winning, exactly as
:class:`~stabstat.ingest.tags.Collector` decides them). Runs of one sweep share a layout, so
they share one reader, and its SQL holds the layout as a literal table ``pos -> (table, name,
split, depth)``: the staged file's position among its run's files (``$pos``) is its key.

Two plans, the same rows (a test loads one store both ways):

- **wide** (layouts of at most :data:`WIDE_MAX_KEYS` keys, every sweep we have seen): one
  aggregation over the lines of the batch, grouped by ``(run, step)``, with one newest-value
  column per key (``arg_max(value, ts) FILTER (WHERE pos = i)``). That de-duplicates and
  pivots in one pass into a table a quarter the size (four keys), from which ``steps`` is a
  projection and ``evals`` one ``UNION ALL`` branch per key. A file's run and key are
  arithmetic on its index (``file_index // keys``, ``file_index % keys``), since the store
  hands the files run by run in the layout's order; a check on ``$runs``/``$pos`` makes a batch
  that breaks this fail (and be retried run by run) instead of mixing runs up.
- **long** (more keys, e.g. one per layer): one row per file and step (the newest value),
  joined to the small ``map``/``files`` tables; the wide plan's per-key filters would cost
  ``keys x lines`` there.

Measured (300 runs x 1,000 steps x 4 keys, 2 shared cores, staging + facts + inserts alone,
interleaved): long 1.51 s, wide 0.99 s (medians of 5 under a load average of ~5). Parsing the
1.2 M lines is ~0.25 s of CPU either way; the wide aggregation adds ~0.15 s to it.

Rules, the same as the Python reader (:func:`~stabstat.ingest.sources.mlflow.read_mlflow_run`,
which is the fallback): a line without a step is step 0; negative steps are skipped; for a
column and step the newest timestamp wins; ``steps`` rows exist where ``loss``, ``lr`` or
``grad_norm`` was logged; ``steps.wall_time`` is seconds since the run's first such value;
``evals.value``, ``steps.lr``/``epoch``/``wall_time`` keep finite values only. A line DuckDB
cannot read (a bad number, a fourth field) fails the batch; the ingest then loads the run alone
and, failing again, calls the fallback, which rejects it naming the file and line (or loads
what the Python reader makes of it).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import schemas
from stabstat.ingest.tags import EXTRA_SPLIT, Target, layer_depths
from stabstat.store.load import JsonReader

__all__ = ["WIDE_MAX_KEYS", "layout_reader"]

#: Layouts with at most this many metric keys use the wide plan (module docstring).
WIDE_MAX_KEYS = 24
_ROW_COLUMNS = ("loss", "lr", "grad_norm")
_READ_CSV = ("read_csv($files, delim = ' ', header = false, quote = '', escape = '', auto_detect = false, "
             "null_padding = true, columns = {'ts': 'BIGINT', 'value': 'DOUBLE', 'step': 'BIGINT'})")
#: A line without a timestamp or a value fails the statement (the Python reader names it); so
#: every staged value and timestamp is non-null and NULL means "not logged".
_LINE_OK = ("(p.ts IS NOT NULL AND p.value IS NOT NULL OR error('stabstat: an MLflow metric line without "
            "timestamp or value'))")
_CACHE: dict[str, JsonReader] = {}
_LOCK = threading.Lock()


def _lit(value: Any) -> str:
    """A SQL literal (text quoted with doubled quotes; None -> NULL)."""
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _select(table: str, exprs: Mapping[str, str], source: str) -> str:
    """SELECT of ``table``'s contract columns in order (a column without an expression is NULL)."""
    cols = schemas.load().table(table).column_names
    return f"SELECT {', '.join(exprs.get(c, 'NULL') + f' AS {c}' for c in cols)} FROM {source}"


def _long_sql(h: str, targets: Sequence[Target]) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str], str]:
    """``(stage, temp_tables, selects, facts)`` of the long plan of one layout.

    Staged: ``map`` (pos -> target), ``files`` (each file's index, run and pos) and ``last``
    (one row per file and step: the newest value and the newest timestamp; integers and
    doubles only, so a million lines stay small). The selects and facts join ``last`` with
    the two small tables."""
    m, fl, last = f"mlflow_{h}_map", f"mlflow_{h}_files", f"mlflow_{h}_last"
    depth = layer_depths(t.name for t in targets if t.table == "layer_grads")
    rows = ", ".join(
        f"({i}, {_lit(t.table)}, {_lit(t.name)}, {_lit(t.split or EXTRA_SPLIT if t.table == 'evals' else None)}, "
        f"{_lit(depth.get(t.name) if t.table == 'layer_grads' else None)})" for i, t in enumerate(targets))
    rowcols = ", ".join(_lit(c) for c in _ROW_COLUMNS)
    step = "coalesce(p.step, 0)"
    stage = (
        f"CREATE TEMP TABLE {m} AS SELECT * FROM (VALUES {rows}) v(pos, tbl, name, split, depth)",
        # file_index: the file's 0-based position in $files (DuckDB's multi-file readers)
        f"CREATE TEMP TABLE {fl} AS SELECT unnest($runs) AS run_id, unnest($pos) AS pos, "
        "generate_subscripts($runs, 1) - 1 AS fidx",
        f"CREATE TEMP TABLE {last} AS SELECT p.file_index AS fidx, {step} AS step, arg_max(p.value, p.ts) AS value, "
        f"max(p.ts) AS ts FROM {_READ_CSV} p WHERE {step} >= 0 AND {_LINE_OK} GROUP BY p.file_index, {step}",
    )
    joined = f"{last} l JOIN {fl} f USING (fidx) JOIN {m} m USING (pos)"
    fin = "CASE WHEN isfinite({0}) THEN {0} END".format
    steps_src = (
        "(SELECT run_id, step, wall - min(wall) OVER (PARTITION BY run_id) AS wall_s, epoch, loss, lr, grad_norm "
        f"FROM (SELECT f.run_id, l.step, max(l.ts) FILTER (WHERE m.name IN ({rowcols})) / 1000.0 AS wall, "
        + ", ".join(f"first(l.value) FILTER (WHERE m.name = {_lit(c)}) AS {c}" for c in ("epoch", *_ROW_COLUMNS))
        + f" FROM {joined} WHERE m.tbl = 'steps' GROUP BY f.run_id, l.step "
        f"HAVING count(*) FILTER (WHERE m.name IN ({rowcols})) > 0))"
    )
    selects = {
        # expressions by column name; _select puts them in the contract's order
        "steps": _select("steps", {"run_id": "run_id", "step": "step", "epoch": fin("epoch"), "loss": "loss",
                                   "wall_time": fin("wall_s"), "lr": fin("lr"), "grad_norm": "grad_norm"}, steps_src),
        "evals": _select("evals", {"run_id": "f.run_id", "step": "l.step", "split": "m.split", "metric": "m.name",
                                   "value": fin("l.value")}, f"{joined} WHERE m.tbl = 'evals'"),
    }
    if depth:
        selects["layer_grads"] = _select(
            "layer_grads", {"run_id": "f.run_id", "step": "l.step", "layer": "m.name", "depth": "m.depth",
                            "grad_norm": "l.value"}, f"{joined} WHERE m.tbl = 'layer_grads'")
    facts = (
        "SELECT f.run_id, max(l.ts) AS newest, "
        "bool_or(m.tbl = 'steps' AND m.name = 'loss' AND NOT isfinite(l.value)) AS diverged, "
        f"count(DISTINCT l.step) FILTER (WHERE m.tbl = 'steps' AND m.name IN ({rowcols})) AS n_steps, "
        "count(*) FILTER (WHERE m.tbl = 'evals') AS n_evals, count(*) FILTER (WHERE m.tbl = 'layer_grads') AS n_layers "
        f"FROM {joined} GROUP BY f.run_id"
    )
    return stage, (m, fl, last), selects, facts


def _wide_sql(h: str, targets: Sequence[Target]) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str], str]:
    """``(stage, temp_tables, selects, facts)`` of the wide plan of one layout.

    Staged: ``runs`` (run index -> run_id, with the check that file ``i`` is key ``i % keys``
    of run ``i // keys``) and ``wide``: one row per run index and step holding, per key
    position ``i``, the newest value ``v<i>`` (NULL: not logged at that step; lines without a
    value fail, :data:`_LINE_OK`), the newest timestamp of a training-row key (``wall``, ms;
    NULL: no ``steps`` row) and of any key (``ts``). Only these few aggregates: each one is
    evaluated for every line. ``steps`` has at most one key per column (the first claim
    wins), so its columns are projections; ``evals``/``layer_grads`` are one ``UNION ALL``
    branch per key."""
    rn, w = f"mlflow_{h}_runs", f"mlflow_{h}_wide"
    k = len(targets)
    depth = layer_depths(t.name for t in targets if t.table == "layer_grads")
    col = {t.name: i for i, t in enumerate(targets) if t.table == "steps"}
    rowpos = [col[c] for c in _ROW_COLUMNS if c in col]
    key = f"p.file_index % {k}"
    step = "coalesce(p.step, 0)"
    newest = ", ".join(f"arg_max(p.value, p.ts) FILTER (WHERE {key} = {i}) AS v{i}" for i in range(k))
    wall = f"max(p.ts) FILTER (WHERE {key} IN ({', '.join(map(str, rowpos))}))" if rowpos else "NULL::BIGINT"
    stage = (
        # the plan's one assumption about the files' order, checked (1 row per file: cheap)
        f"CREATE TEMP TABLE {rn} AS SELECT fidx // {k} AS ridx, CASE WHEN count(DISTINCT run_id) = 1 "
        f"AND bool_and(pos = fidx % {k}) AND count(*) = {k} THEN any_value(run_id) ELSE error('stabstat: MLflow "
        "metric files not grouped by run in layout order') END AS run_id FROM (SELECT unnest($runs) AS run_id, "
        "unnest($pos) AS pos, generate_subscripts($runs, 1) - 1 AS fidx) GROUP BY ridx",
        f"CREATE TEMP TABLE {w} AS SELECT p.file_index // {k} AS ridx, {step} AS step, {newest}, "
        f"{wall} AS wall, max(p.ts) AS ts FROM {_READ_CSV} p WHERE {step} >= 0 AND {_LINE_OK} "
        f"GROUP BY ridx, {step}",
    )
    fin = "CASE WHEN isfinite({0}) THEN {0} END".format
    v = {c: f"w.v{i}" for c, i in col.items()}
    src = f"{w} w JOIN {rn} r USING (ridx)"
    values = ", ".join(v.get(c, "NULL") + f" AS {c}" for c in ("epoch", *_ROW_COLUMNS))
    steps_src = (f"(SELECT r.run_id, w.step, w.wall / 1000.0 - min(w.wall / 1000.0) OVER (PARTITION BY w.ridx) "
                 f"AS wall_s, {values} FROM {src} WHERE w.wall IS NOT NULL)")
    selects = {
        "steps": _select("steps", {"run_id": "run_id", "step": "step", "epoch": fin("epoch"), "loss": "loss",
                                   "wall_time": fin("wall_s"), "lr": fin("lr"), "grad_norm": "grad_norm"}, steps_src),
    }
    evals = [(i, t) for i, t in enumerate(targets) if t.table == "evals"]
    layers = [(i, t) for i, t in enumerate(targets) if t.table == "layer_grads"]
    if evals:
        selects["evals"] = " UNION ALL ".join(_select("evals", {
            "run_id": "r.run_id", "step": "w.step", "split": _lit(t.split or EXTRA_SPLIT), "metric": _lit(t.name),
            "value": fin(f"w.v{i}")}, f"{src} WHERE w.v{i} IS NOT NULL") for i, t in evals)
    if layers:
        selects["layer_grads"] = " UNION ALL ".join(_select("layer_grads", {
            "run_id": "r.run_id", "step": "w.step", "layer": _lit(t.name), "depth": _lit(depth[t.name]),
            "grad_norm": f"w.v{i}"}, f"{src} WHERE w.v{i} IS NOT NULL") for i, t in layers)
    count = " + ".join(f"count(w.v{i})" for i, _ in evals) or "0"
    count_layers = " + ".join(f"count(w.v{i})" for i, _ in layers) or "0"
    diverged = f"bool_or(NOT isfinite({v['loss']}))" if "loss" in v else "false"
    facts = (
        f"SELECT r.run_id, f.newest, f.diverged, f.n_steps, f.n_evals, f.n_layers FROM (SELECT w.ridx, "
        f"max(w.ts) AS newest, {diverged} AS diverged, count(w.wall) AS n_steps, "
        f"{count} AS n_evals, {count_layers} AS n_layers FROM {w} w GROUP BY w.ridx) f JOIN {rn} r USING (ridx)"
    )
    return stage, (rn, w), selects, facts


def layout_reader(
    keys: Sequence[str], targets: Sequence[Target], *,
    finish: Callable[[Any, dict[str, Any]], None], fallback: Callable[[Any], None], tag: str,
) -> JsonReader:
    """The reader of runs whose sorted metric ``keys`` map to ``targets`` (cached per layout).

    ``finish``/``fallback``: the :class:`~stabstat.store.load.JsonReader` callbacks; ``tag``
    tells readers with different callbacks apart (it must change when they read differently,
    e.g. another ``--map``).
    """
    wide = len(targets) <= WIDE_MAX_KEYS
    layout = repr((tag, wide, list(keys), [(t.table, t.name, t.split) for t in targets]))
    h = hashlib.sha1(layout.encode()).hexdigest()[:12]
    with _LOCK:
        reader = _CACHE.get(h)
        if reader is None:
            stage, temps, selects, facts = (_wide_sql if wide else _long_sql)(h, targets)
            reader = JsonReader(name=f"mlflow:{h}", stage=stage, temp_tables=temps, selects=selects, facts=facts,
                                finish=finish, fallback=fallback)
            _CACHE[h] = reader
    return reader
