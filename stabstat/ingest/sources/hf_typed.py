"""The typed read of plain ``trainer_state.json`` files, and the staging of a batch of them.

The general path of :mod:`.hf_duckdb` reads every entry of every file as JSON text and parses
it again to type it: exact, but about twice the work. Reading the entries typed in one pass
(``json_transform`` of each file's text into a list of structs) is not exact by itself: DuckDB
converts leniently (``"0.5"`` and ``true`` become numbers, ``2.5`` becomes step 2, an entry
that is not an object becomes a struct of nulls), a struct keeps only the keys it names (an
evaluation metric's key must be known before the read), and ``"loss": null`` reads like no
``loss`` key at all. So the batch's files are first scanned as raw text (``read_text``; each
test below is anchored on a literal key, so RE2 jumps from one occurrence to the next, ~5 ms
per 50 MB each) and a file is *plain* when none of the following shows:

* a training field (``epoch``, ``loss``, ``learning_rate``, ``grad_norm``) followed by anything
  but a JSON number (``null`` is allowed except for ``loss``, whose presence makes an entry a
  training entry), or a ``step`` that is not a run of digits alone (sign, fraction, exponent,
  string, boolean, null);
* a ``null`` under an ``eval_*`` key or ``train_runtime`` (their presence counts);
* a ``<prefix>_runtime`` key other than ``eval_runtime`` and ``train_runtime`` (another
  evaluation prefix), two ``eval_*`` keys differing only in case, or any backslash (an
  escaped key could spell a field's name).

These tests see nested keys too, so they may call a file not plain that the typed read would
get right (it then takes the general path: exact, slower), never the other way round. The runs
whose files are all plain are read typed: the training fields as the reference benchmark types
them, each ``eval_*`` key found in the batch's text as JSON (so its value's type can still be
told: a string or a container is skipped, a boolean refused); their top-level scalars come from
the scan (``json_extract``: one parse of the text). Every other run goes through
:data:`.hf_duckdb.GENERAL`. Both paths fill the same staged tables (:data:`.hf_duckdb.OUTPUTS`),
so the facts and the final inserts do not know which path a run took. A run with one state file
whose training steps are unique (the usual case) skips the per-step de-duplication, and its
training rows go from ``_hf_entries`` straight into ``steps``.

What the scan cannot see the typed SQL refuses with ``error()``: an entry that is not an object
(or an object with none of the keys read, e.g. ``{}``), a missing ``step``, a missing or
non-list ``log_history``, a boolean evaluation value, malformed JSON. The batch is then retried
by halves and the run is read by the Python reader, which loads it (``{}`` is fine) or names
the file, entry and field. An object holding the same key twice keeps its first value, here,
on the general path and in the Python reader alike.

``read_text`` reads all its files in one thread (their rows fill one chunk), so the files are
split over one ``read_text`` call per DuckDB thread, joined by ``UNION ALL``.
"""

from __future__ import annotations

import json
from typing import Any

from stabstat.ingest.source import Reject
from stabstat.ingest.sources import hf_duckdb
from stabstat.ingest.sources.hf_duckdb import EVAL_SKIP, STATE_SCALARS
from stabstat.store.load import statement_params

__all__ = ["MAX_PARTS", "TEMP_TABLES", "plain_runs", "scan_sql", "stage", "typed_statements"]

#: A training field followed by anything but a JSON number (or null: not for ``loss``).
_NOT_A_NUMBER = {
    "epoch": r"[^-0-9nNI\s]", "loss": r"[^-0-9NI\s]", "learning_rate": r"[^-0-9nNI\s]", "grad_norm": r"[^-0-9nNI\s]",
}
#: The tests that make a file not plain (any one true). Each is anchored on a literal (RE2
#: then jumps from one occurrence to the next): one alternation of all of them is ~4x slower.
_GUARDS = [
    # a training field holding a string, a boolean, a container (or a null loss)
    *(f"""regexp_matches(t.content, '"{k}"\\s*:\\s*{v}')""" for k, v in _NOT_A_NUMBER.items()),
    # a step that is not digits alone: sign, fraction, exponent, string, boolean, null, NaN
    r"""regexp_matches(t.content, '"step"\s*:\s*(?:[^0-9\s]|[0-9]+[.eE])')""",
    # a null whose key's presence counts (a typed struct reads it as absent)
    r"""regexp_matches(t.content, '"eval_[^"]*"\s*:\s*n')""",
    r"""regexp_matches(t.content, '"train_runtime"\s*:\s*n')""",
    # a <prefix>_runtime key other than eval_runtime / train_runtime: another evaluation prefix
    r"""len(regexp_extract_all(t.content, '_runtime"'))
        <> len(regexp_extract_all(t.content, '"eval_runtime"')) + len(regexp_extract_all(t.content, '"train_runtime"'))""",
    # escaped text: "lo\u0073s" is the key loss, which no literal above would see
    r"""contains(t.content, '\')""",
]
_PATHS = "[" + ", ".join(f"'$.{k}'" for k in STATE_SCALARS) + "]"

#: The most ``read_text`` calls a batch's files are split over. One call reads every file in
#: one thread (its rows fill one chunk, so everything downstream of it runs in that thread);
#: a ``UNION ALL`` of one call per DuckDB thread lets the threads share the files.
MAX_PARTS = 8

#: A plain file's ``global_step`` for ranking its run's files (a non-integer counts as -1).
_GS = f"scalars[{STATE_SCALARS.index('global_step') + 1}]"
_GLOBAL_STEP = f"CASE WHEN json_type({_GS}) IN ('UBIGINT', 'BIGINT') THEN {_GS}::BIGINT ELSE -1 END"


def _texts(parts: int) -> str:
    """``read_text`` of the files ``$files0`` ... ``$files<parts-1>`` (see :data:`MAX_PARTS`)."""
    return " UNION ALL ".join(f"SELECT filename, content FROM read_text($files{j})" for j in range(parts))


def _split(files: list[str], threads: int) -> dict[str, list[str]]:
    """``files`` as the parameters of :func:`_texts`: one part per thread (at most
    :data:`MAX_PARTS`, at most one per file)."""
    parts = max(1, min(threads, MAX_PARTS, len(files)))
    return {f"files{j}": files[j * len(files) // parts:(j + 1) * len(files) // parts] for j in range(parts)}


def scan_sql(parts: int) -> str:
    """The statement that reads the batch's files as text (``$files0`` ... ``$files<parts-1>``,
    the batch's files split in ``parts``): one row per file of the batch with its run number,
    run_id, whether it is plain, the ``eval_*`` keys its text holds, (plain files) the top-level
    scalars as JSON (a list in :data:`STATE_SCALARS` order), and its ``rank`` among its run's
    files (1 = oldest: by ``global_step``, then by position, as the general path ranks them)."""
    return f"""
CREATE OR REPLACE TEMP TABLE _hf_scan AS
SELECT f.r, f.run_id, t.filename, t.plain, t.keys, t.scalars,
       row_number() OVER (PARTITION BY f.r ORDER BY {_GLOBAL_STEP}, f.pos) AS rank
FROM (SELECT filename, plain, keys, CASE WHEN plain THEN json_extract(content, {_PATHS}) END AS scalars
      FROM (SELECT t.filename, t.content, NOT ({' OR '.join(_GUARDS)}) AS plain,
                   list_distinct(regexp_extract_all(t.content, '"(eval_[^"\\\\]*)"\\s*:', 1)) AS keys
            FROM ({_texts(parts)}) AS t)) AS t
JOIN (SELECT unnest($files) AS filename, unnest($runs) AS run_id, unnest($r) AS r, unnest($pos) AS pos) AS f
    USING (filename)
"""


TEMP_TABLES: tuple[str, ...] = ("_hf_scan",)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def plain_runs(scan: list[tuple[int, bool, list[str]]]) -> tuple[set[int], list[str]]:
    """The run numbers whose every file is plain (``scan``: ``(r, plain, keys)`` per file),
    and the ``eval_*`` keys of their files (sorted). A file whose keys differ only in case is
    not plain (DuckDB's struct fields are case-insensitive)."""
    bad: set[int] = set()
    keys: dict[int, set[str]] = {}
    for r, plain, file_keys in scan:
        lower = {k.lower() for k in file_keys}
        if not plain or len(lower) != len(file_keys):
            bad.add(r)
        keys.setdefault(r, set()).update(file_keys)
    fast = set(keys) - bad
    union = sorted({k for r in fast for k in keys[r]})
    if len({k.lower() for k in union}) != len(union):  # two runs spell a key differently: general path for
        return set(), []  # all of them (rare; a struct cannot hold both)
    return fast, union


def typed_statements(keys: list[str], parts: int = 1) -> tuple[str, ...]:
    """The typed path's statements for a batch whose plain files hold the ``eval_*`` ``keys``:
    the entries (``_hf_entries``), the runs whose steps need de-duplication (``_hf_dup``: several
    files, or a step logged twice), their steps de-duplicated into ``_hf_steps`` and their
    training entries removed from ``_hf_entries`` (these two only when ``_hf_dup`` has rows,
    see :func:`stage`), then the inserts into ``_hf_evals`` and ``_hf_runs``."""
    fields = {"step": "UBIGINT", "epoch": "DOUBLE", "loss": "DOUBLE", "learning_rate": "DOUBLE",
              "grad_norm": "DOUBLE", "train_runtime": "JSON", **{k: "JSON" for k in keys}}
    structure = _literal(json.dumps({"log_history": [fields]}))
    all_null = " AND ".join(f"e.{_ident(k)} IS NULL" for k in fields)
    is_eval = " OR ".join(f"e.{_ident(k)} IS NOT NULL" for k in keys) or "false"
    metrics = [k for k in keys if k[5:] not in EVAL_SKIP]
    entries = f"""
CREATE OR REPLACE TEMP TABLE _hf_entries AS
SELECT r, rank, i, kind,
       CASE WHEN kind <> 'fin' AND e.step IS NULL THEN error('step: not a non-negative integer') ELSE e.step END
           AS step,
       e.epoch, e.loss, e.learning_rate AS lr, e.grad_norm,
       CASE WHEN kind = 'eval' THEN [{", ".join(f"e.{_ident(k)}" for k in metrics)}]::JSON[] END AS vals
FROM (
    SELECT r, rank, i, e,
           CASE WHEN e IS NULL OR ({all_null}) THEN error('log_history entry: not an object, or none of its keys read')
                WHEN e.train_runtime IS NOT NULL THEN 'fin'
                WHEN {is_eval} THEN 'eval'
                WHEN e.loss IS NOT NULL THEN 'train' END AS kind
    FROM (
        SELECT f.r, f.rank, generate_subscripts(s.log_history, 1) AS i,
               unnest(CASE WHEN s.log_history IS NULL THEN error('log_history: missing or not a list')
                           ELSE s.log_history END) AS e
        FROM (SELECT filename, json_transform(content, {structure}).log_history AS log_history
              FROM ({_texts(parts)}) AS t) AS s
        JOIN _hf_scan AS f USING (filename)
    )
)
WHERE kind IS NOT NULL
"""
    dup = """
CREATE OR REPLACE TEMP TABLE _hf_dup AS
SELECT r FROM _hf_entries WHERE kind = 'train' GROUP BY r HAVING max(rank) > 1 OR count(*) <> count(DISTINCT step)
"""
    newest = "rank * 2147483648 + i"  # newer file first, then later entry (both < 2^31)
    steps = f"""
INSERT INTO _hf_steps
SELECT r, step, arg_max_null(epoch, {newest}), arg_max_null(loss, {newest}), arg_max_null(lr, {newest}),
       arg_max_null(grad_norm, {newest})
FROM _hf_entries SEMI JOIN _hf_dup USING (r)
WHERE kind = 'train'
GROUP BY r, step
"""
    undup = "DELETE FROM _hf_entries WHERE kind = 'train' AND r IN (SELECT r FROM _hf_dup)"
    names = "[" + ", ".join(_literal(k[5:]) for k in metrics) + "]::VARCHAR[]"
    evals = f"""
INSERT INTO _hf_evals
SELECT r, step, 'eval', metric,
       CASE WHEN json_type(val) = 'BOOLEAN' THEN error('an evaluation value is a boolean') ELSE val::DOUBLE END
FROM (
    SELECT r, rank, i, step::BIGINT AS step, unnest({names}) AS metric, unnest(vals) AS val
    FROM _hf_entries WHERE kind = 'eval'
)
WHERE val IS NOT NULL AND json_type(val) NOT IN ('VARCHAR', 'ARRAY', 'OBJECT')
QUALIFY row_number() OVER (PARTITION BY r, step, metric ORDER BY rank DESC, i DESC) = 1
"""
    runs = f"""
INSERT INTO _hf_runs
SELECT n.r, n.run_id, n.filename, {", ".join(f"n.scalars[{j + 1}]" for j in range(len(STATE_SCALARS)))},
       coalesce(e.finished, false)
FROM (SELECT * FROM _hf_scan WHERE list_contains($r, r)
      QUALIFY row_number() OVER (PARTITION BY r ORDER BY rank DESC) = 1) AS n
LEFT JOIN (SELECT DISTINCT r, true AS finished FROM _hf_entries WHERE kind = 'fin') AS e USING (r)
"""
    return entries, dup, steps, undup, evals, runs


def _subset(params: dict[str, Any], keep: set[int]) -> dict[str, Any]:
    """``params`` restricted to the files of the runs numbered ``keep``."""
    idx = [j for j, r in enumerate(params["r"]) if r in keep]
    out = dict(params)
    for name in ("files", "runs", "r", "pos"):
        out[name] = [params[name][j] for j in idx]
    return out


def stage(con: Any, params: dict[str, Any]) -> None:
    """Stage a batch of HF runs (the :class:`~stabstat.store.load.JsonReader` ``stage``
    callable): scan the files' text, read the plain runs typed and the others through the
    general path, both into :data:`.hf_duckdb.OUTPUTS`."""
    for sql in hf_duckdb.OUTPUTS:
        con.execute(sql)
    files = params["files"]
    threads = int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    split = _split(files, threads)
    scan = scan_sql(len(split))
    con.execute(scan, statement_params(scan, {**params, **split}))
    rows = con.execute("SELECT filename, r, plain, keys FROM _hf_scan").fetchall()
    if len(rows) != len(files) or len({row[0] for row in rows}) != len(rows):
        # read_text globs: a path matching no file, or several (the general path refuses it too)
        raise Reject("a state file path matches no file, or several")
    fast, keys = plain_runs([(int(r), bool(p), list(k)) for _, r, p, k in rows])
    rest = set(params["r"]) - fast
    if rest:
        general = _subset(params, rest)
        for sql in hf_duckdb.GENERAL:
            con.execute(sql, statement_params(sql, general))
    if fast:
        typed = _subset(params, fast)
        split = _split(typed["files"], threads)
        entries, dup, steps, undup, evals, runs = typed_statements(keys, len(split))
        con.execute(entries, statement_params(entries, {**typed, **split}))
        con.execute(dup)
        if con.execute("SELECT count(*) FROM _hf_dup").fetchall()[0][0]:  # rare: skip two passes
            con.execute(steps)
            con.execute(undup)
        for sql in (evals, runs):
            con.execute(sql, statement_params(sql, typed))

