"""The general SQL path that reads Hugging Face ``trainer_state.json`` files with DuckDB's JSON reader.

Most files take the typed path of :mod:`.hf_typed` (one typed pass over their entries); this
path reads the others, the files whose raw text shows something the typed read would get wrong
(a null loss, a string where a number belongs, another evaluation prefix, an escaped key...).
Its rules are those of :func:`stabstat.ingest.sources.hf.read_hf_run` (the Python reader, which
stays the reference, the fallback for files this SQL refuses, and what explains them): every
file it is given is read by one ``read_json`` statement and the rows never pass through
Python. Stages (temporary tables, see :class:`stabstat.store.load.JsonReader`):

``_hf_files``
    one row per state file: run number ``r`` (``$r``), run_id, ``pos`` (the adapter's order,
    which lists the run folder's own file last), the top-level scalars of the state and
    ``log_history`` as JSON[] (each entry as minified JSON text). The only pass over the files.
``_hf_ranks``
    per file its ``rank`` among its run's files (1 = oldest: by ``global_step``, a non-integer
    counting as -1, then by ``pos``, so the own file wins a tie).
``_hf_special``
    the few entries that may be evaluations or the final summary (picked by substring tests,
    then parsed): whether it is the summary (``train_runtime``) and its evaluation prefixes
    (``<prefix>_runtime`` keys other than ``train_runtime``, plus ``eval`` when a key starts
    with ``eval_``).
then the shared outputs (:data:`OUTPUTS`, filled by both paths)
    ``_hf_steps`` / ``_hf_evals``: the contract's rows, type-checked, the newest file's (then
    the later entry's) row kept per step / per (step, split, metric); the training entries are
    read straight from ``_hf_files`` into typed values (``json_transform``), guarded by a test
    of their text. ``_hf_runs``: per run its newest file, that file's scalars, and whether a
    file holds the summary entry.

A value of the wrong JSON type (a string loss, a fractional or negative step, a boolean, an
entry that is not an object, no ``log_history`` list) makes the statement fail through
``error()``: the batch is retried by halves and the failing run is read by the Python reader,
whose message names the file, the entry and the field. The text guard may also refuse a file
the Python reader accepts (a nested object with a key named like a training field holding a
string): such a run is loaded by the Python reader, with the same rows, only slower.

Hive partitioning is off: a folder named like a state field (``max_steps=500/``) would
otherwise replace that field's value with the folder's.
"""

from __future__ import annotations

__all__ = ["EVALS", "FACTS", "FILES", "GENERAL", "OUTPUTS", "RANKS", "RUNS", "SELECTS", "SPECIAL", "STATE_SCALARS",
           "STEPS", "TEMP_TABLES"]

#: Scalar fields of ``transformers.TrainerState`` kept in ``environment.trainer_state`` (read
#: as JSON, so any value type is accepted; non-scalars and nulls are left out).
STATE_SCALARS: tuple[str, ...] = (
    "epoch", "global_step", "max_steps", "logging_steps", "eval_steps", "save_steps", "train_batch_size",
    "num_train_epochs", "num_input_tokens_seen", "total_flos", "best_metric", "best_global_step",
    "best_model_checkpoint", "is_local_process_zero", "is_world_process_zero", "is_hyper_param_search",
    "trial_name",
)
#: Per-evaluation bookkeeping keys of the Trainer, not metrics (as the Python reader's _EVAL_SKIP).
EVAL_SKIP: tuple[str, ...] = (
    "runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch", "step",
)

#: The largest state file DuckDB reads (its default, 16 MiB, is ~150,000 logged steps); a larger
#: one is read by the Python reader.
MAX_STATE_BYTES = 2**30
_COLUMNS = "{" + ", ".join(f"{k}: 'JSON'" for k in STATE_SCALARS) + ", log_history: 'JSON[]'}"
_SCALARS = ", ".join(f"s.{k}" for k in STATE_SCALARS)
_INT = "('UBIGINT', 'BIGINT')"

FILES = f"""
CREATE OR REPLACE TEMP TABLE _hf_files AS
SELECT f.r, f.run_id, f.pos, s.filename, {_SCALARS},
       CASE WHEN s.log_history IS NULL THEN error('log_history: missing or not a list') ELSE s.log_history END
           AS log_history
FROM read_json($files, filename = true, format = 'unstructured', hive_partitioning = false,
               maximum_object_size = least($max_bytes, {MAX_STATE_BYTES}), columns = {_COLUMNS}) AS s
JOIN (SELECT unnest($files) AS filename, unnest($runs) AS run_id, unnest($r) AS r, unnest($pos) AS pos) AS f
    USING (filename)
"""

#: The files' ranks, apart from their entries: a window over ``_hf_files`` itself would sort
#: the entries with it (~15% of the read's time).
RANKS = f"""
CREATE OR REPLACE TEMP TABLE _hf_ranks AS
SELECT r, run_id, filename,
       row_number() OVER (
           PARTITION BY r
           ORDER BY CASE WHEN json_type(global_step) IN {_INT} THEN global_step::BIGINT ELSE -1 END, pos
       ) AS rank
FROM _hf_files
"""

#: Every entry of every file: the run's number ``r`` in the batch (an integer key: grouping by
#: it is cheaper than by run_id), the file's rank, the entry's 1-based index ``i`` and its
#: minified JSON text ``e``.
_ENTRIES = """(SELECT f.r, k.rank, generate_subscripts(f.log_history, 1) AS i, unnest(f.log_history) AS e
      FROM _hf_files AS f JOIN _hf_ranks AS k USING (r, filename))"""

# An element of a JSON[] column is minified text (DuckDB writes it back without spaces), so a
# top-level key ``k`` shows as ``"k":`` followed by its value's first character. Substring tests
# (cheap) pick the candidates; exact tests (a JSON parse) run only on those (a nested object's
# key can look like a top-level one).
_CANDIDATE = """(NOT starts_with(e, '{') OR contains(e, '_runtime":') OR contains(e, '"eval_'))"""

#: The few entries that may be evaluations or the final summary (and any entry that is not an
#: object, to fail on it): ``fin`` (a top-level ``train_runtime``) and the evaluation prefixes
#: (``<prefix>_runtime`` keys other than ``train_runtime``, plus ``eval`` when a key starts
#: with ``eval_``). Every other entry is a training entry or ignored.
SPECIAL = f"""
CREATE OR REPLACE TEMP TABLE _hf_special AS
SELECT r, rank, i, e,
       CASE WHEN contains(e, '"train_runtime":') THEN json_exists(e, '$.train_runtime') ELSE false END AS fin,
       list_sort(list_distinct(list_concat(
           list_transform(list_filter(json_keys(e), lambda x: suffix(x, '_runtime') AND x <> 'train_runtime'
                                                              AND length(x) > 8),
                          lambda x: x[1:length(x) - 8]),
           CASE WHEN len(list_filter(json_keys(e), lambda x: starts_with(x, 'eval_'))) > 0 THEN ['eval'] ELSE [] END
       ))) AS prefixes
FROM (
    SELECT r, rank, i,
           CASE WHEN starts_with(e, '{{') THEN e ELSE error('log_history entry: not an object') END AS e
    FROM {_ENTRIES}
    WHERE {_CANDIDATE}
)
"""


def _finite(x: str) -> str:
    """SQL: ``x`` with a non-finite value as NULL."""
    return f"CASE WHEN isfinite({x}) THEN {x} END"


#: A training entry whose text shows a checked field holding anything but a JSON number or
#: null (a string, a boolean, a container), or a ``step`` that is not digits alone (negative,
#: fractional: DuckDB writes every non-integer number with a ``.`` or an exponent, null, NaN).
#: A nested object's key matches too: then the run is read by the Python reader, which is exact.
#: (Checking the typed values instead is not possible: json_transform turns "0.5" and true into
#: numbers; typing each field as JSON text and casting cost ~0.07 s more per 300,000 entries.)
_BAD_TEXT = (r"""regexp_matches(e, '"(?:epoch|loss|learning_rate|grad_norm)":[^-0-9nNI]|"step":(?:[^0-9]|[0-9]+[.eE])')""")
#: The training fields, typed (DuckDB converts leniently: :data:`_BAD_TEXT` guards the types).
_TRAIN_TYPES = """'{"step": "UBIGINT", "epoch": "DOUBLE", "loss": "DOUBLE", "learning_rate": "DOUBLE", "grad_norm": "DOUBLE"}'"""
#: An entry (a candidate of :data:`_CANDIDATE`) that is neither the summary nor an evaluation
#: (the exact tests of :data:`SPECIAL`).
_PLAIN = ("(NOT json_exists(e, '$.train_runtime') AND len(list_filter(json_keys(e), lambda x: starts_with(x, 'eval_') "
          "OR (suffix(x, '_runtime') AND x <> 'train_runtime' AND length(x) > 8))) = 0)")
#: Orders a run's entries: newer file first, then later entry (rank and i are < 2^31).
_NEWEST = "rank * 2147483648 + i"

#: The training entries (a top-level ``loss`` key; not the summary, not an evaluation), one row
#: per step: the newest file's, then the later entry's (per column ``arg_max_null``: a null
#: value is kept). Read straight from ``_hf_files``, no copy of the entries' text; a candidate
#: of :data:`_CANDIDATE` is parsed to tell (rare), every other entry is only typed once.
STEPS = f"""
INSERT INTO _hf_steps
SELECT r, step, arg_max_null(v.epoch, {_NEWEST}) AS epoch, arg_max_null(v.loss, {_NEWEST}) AS loss,
       arg_max_null(v.learning_rate, {_NEWEST}) AS lr, arg_max_null(v.grad_norm, {_NEWEST}) AS grad_norm
FROM (
    SELECT r, rank, i, v, coalesce(v.step, error('step: not a non-negative integer')) AS step
    FROM (
        SELECT r, rank, i, e,
               CASE WHEN {_BAD_TEXT} THEN error('a training field is not a number (or step not an integer)')
                    ELSE json_transform(e, {_TRAIN_TYPES}) END AS v
        FROM {_ENTRIES}
        WHERE contains(e, '"loss":')
          AND CASE WHEN {_CANDIDATE} THEN {_PLAIN} ELSE true END
    )
    WHERE v.loss IS NOT NULL OR json_exists(e, '$.loss')
)
GROUP BY r, step
"""

_SKIP = ", ".join(f"'{m}'" for m in EVAL_SKIP)
#: An evaluation value: a number (or null) kept, a string or a container skipped (as the
#: Python reader), a boolean an error.
_VALUE = ("CASE WHEN json_type(val) IN ('ARRAY', 'OBJECT', 'VARCHAR', 'NULL') THEN NULL "
          "ELSE coalesce(TRY_CAST(val::VARCHAR AS DOUBLE), error('not a number')) END")

EVALS = f"""
INSERT INTO _hf_evals
SELECT r, step, split, metric, value FROM (
    SELECT r, rank, i, step, split, metric, {_VALUE} AS value,
           json_type(val) IN ('ARRAY', 'OBJECT', 'VARCHAR') AS skip
    FROM (
        SELECT r, rank, i, step, split, key[length(split) + 2:] AS metric,
               json_extract(e, '$."' || key || '"') AS val
        FROM (
            SELECT r, rank, i, e, step, split, unnest(json_keys(e)) AS key
            FROM (
                SELECT r, rank, i, e, json_extract(e, '$.step')::VARCHAR AS js,
                       CASE WHEN js IS NOT NULL AND ltrim(js, '0123456789') = '' THEN js::BIGINT
                            ELSE error('step: not a non-negative integer') END AS step,
                       unnest(prefixes) AS split
                FROM _hf_special
                WHERE NOT fin AND len(prefixes) > 0
            )
        )
        WHERE starts_with(key, split || '_') AND key[length(split) + 2:] NOT IN ({_SKIP})
    )
)
WHERE NOT skip
QUALIFY row_number() OVER (PARTITION BY r, step, split, metric ORDER BY rank DESC, i DESC) = 1
"""

#: Every file gave exactly one JSON value (an empty file gives none, two objects in a row give
#: two; Python's json.loads refuses both, and so does this).
ONE_VALUE_PER_FILE = """
SELECT CASE WHEN count(*) <> len($files) OR count(DISTINCT filename) <> count(*)
            THEN error('a state file holds no JSON value, or several') END
FROM _hf_files
"""

#: The newest file of each run (its scalars) and whether a file holds the summary entry.
RUNS = f"""
INSERT INTO _hf_runs
SELECT n.r, n.run_id, n.filename, {", ".join(f"n.{k}" for k in STATE_SCALARS)}, coalesce(e.finished, false)
FROM (SELECT k.r, k.run_id, k.filename, {", ".join(f"f.{k}" for k in STATE_SCALARS)}
      FROM _hf_ranks AS k JOIN _hf_files AS f USING (r, filename)
      QUALIFY row_number() OVER (PARTITION BY k.r ORDER BY k.rank DESC) = 1) AS n
LEFT JOIN (SELECT r, bool_or(fin) AS finished FROM _hf_special GROUP BY r) AS e USING (r)
"""

#: The temporary tables of this path and the shared outputs (dropped after each batch).
TEMP_TABLES: tuple[str, ...] = ("_hf_files", "_hf_ranks", "_hf_special", "_hf_steps", "_hf_evals", "_hf_runs",
                                 "_hf_entries", "_hf_dup")

#: The statements of this general path, in order: they fill the shared :data:`OUTPUTS` with
#: the rows of the files they are given.
GENERAL: tuple[str, ...] = (FILES, ONE_VALUE_PER_FILE, RANKS, SPECIAL, STEPS, EVALS, RUNS)

#: The staged rows both paths (this one and the typed one of :mod:`.hf_typed`) insert into:
#: per run number ``r`` its steps (one row per step, de-duplicated), its evaluations (one row
#: per step, split and metric) and its facts (run_id, newest file, its scalars, finished).
#: The typed path leaves the training rows of a run that needs no de-duplication in its
#: entries table (``_hf_entries``, kind ``train``) instead of copying them; those of the runs
#: that need it (``_hf_dup``) go de-duplicated into ``_hf_steps`` and leave ``_hf_entries``:
#: :data:`ALL_STEPS` is the union.
OUTPUTS: tuple[str, ...] = (
    "CREATE OR REPLACE TEMP TABLE _hf_steps "
    "(r BIGINT, step UBIGINT, epoch DOUBLE, loss DOUBLE, lr DOUBLE, grad_norm DOUBLE)",
    "CREATE OR REPLACE TEMP TABLE _hf_evals (r BIGINT, step BIGINT, split VARCHAR, metric VARCHAR, value DOUBLE)",
    "CREATE OR REPLACE TEMP TABLE _hf_runs (r BIGINT, run_id VARCHAR, state_file VARCHAR, "
    + ", ".join(f"{k} JSON" for k in STATE_SCALARS) + ", finished BOOLEAN)",
    "CREATE OR REPLACE TEMP TABLE _hf_entries (r BIGINT, kind VARCHAR, step UBIGINT, epoch DOUBLE, loss DOUBLE, "
    "lr DOUBLE, grad_norm DOUBLE)",
    "CREATE OR REPLACE TEMP TABLE _hf_dup (r BIGINT)",
)

#: Every staged training row, one per run and step (see :data:`OUTPUTS`).
ALL_STEPS = """(SELECT r, step, epoch, loss, lr, grad_norm FROM _hf_steps
      UNION ALL
      SELECT r, step, epoch, loss, lr, grad_norm FROM _hf_entries WHERE kind = 'train')"""

#: One row per run: the newest state file and its scalars, whether the summary entry was seen,
#: whether a logged loss is non-finite, the metric names and the row counts.
FACTS = f"""
SELECT n.run_id, n.state_file, {", ".join(f"n.{k}" for k in STATE_SCALARS)},
       n.finished, coalesce(s.diverged, false) AS diverged,
       coalesce(s.n, 0) AS n_steps, coalesce(v.n, 0) AS n_evals, coalesce(v.metrics, []) AS metrics
FROM _hf_runs AS n
LEFT JOIN (SELECT r, count(*) AS n, bool_or(NOT isfinite(loss)) AS diverged FROM {ALL_STEPS} GROUP BY r) AS s
    USING (r)
LEFT JOIN (SELECT r, count(*) AS n, list_sort(list_distinct(list(metric))) AS metrics FROM _hf_evals GROUP BY r)
    AS v USING (r)
"""

#: contract table -> SELECT of its columns in contract order
#: (epoch, lr and evaluation values are finite-only in the contract: non-finite -> NULL).
#: The run_id is looked up by run number (``$run_ids[r]``) rather than joined: a plain scan of
#: the staged rows is appended batch by batch, not a partly filled row group per thread (see
#: :class:`~stabstat.store.load.JsonReader`).
SELECTS: dict[str, str] = {
    "steps": f"SELECT $run_ids[r], step, {_finite('epoch')}, loss, {_finite('lr')}, grad_norm, "
             f"NULL::DOUBLE AS wall_time FROM {ALL_STEPS}",
    "evals": f"SELECT $run_ids[r], step, split, metric, {_finite('value')} FROM _hf_evals",
}
