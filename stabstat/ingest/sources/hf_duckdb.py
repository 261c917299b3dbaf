"""The SQL that reads Hugging Face ``trainer_state.json`` files with DuckDB's JSON reader.

The rules are those of :func:`stabstat.ingest.sources.hf.read_hf_run` (the Python reader, which
stays the reference, the fallback for files this SQL refuses, and what explains them); here
every file of a batch is read by one ``read_json`` statement and the rows never pass through
Python. Stages (temporary tables, see :class:`stabstat.store.load.JsonReader`):

``_hf_files``
    one row per state file: run_id, ``rank`` (1 = oldest: by ``global_step``, a non-integer
    counting as -1, then by the adapter's order, which lists the run folder's own file last so
    that it wins a tie), the top-level scalars of the state and ``log_history`` as JSON[].
``_hf_entries``
    one row per ``log_history`` entry: its keys, whether it is the final summary
    (``train_runtime``), and its evaluation prefixes (``<prefix>_runtime`` keys other than
    ``train_runtime``, plus ``eval`` when a key starts with ``eval_``).
``_hf_steps`` / ``_hf_evals``
    the contract's rows, type-checked, the newest file's (then the later entry's) row kept
    per step / per (step, split, metric).

A value of the wrong JSON type (a string loss, a fractional or negative step, a boolean, an
entry that is not an object, no ``log_history`` list) makes the statement fail through
``error()``: the batch is retried run by run and the failing run is read by the Python reader,
whose message names the file, the entry and the field.
"""

from __future__ import annotations

__all__ = ["EVALS", "FACTS", "FILES", "STATE_SCALARS", "STEPS", "STAGE", "TEMP_TABLES"]

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
SELECT f.run_id, s.filename,
       row_number() OVER (
           PARTITION BY f.run_id
           ORDER BY CASE WHEN json_type(s.global_step) IN {_INT} THEN s.global_step::BIGINT ELSE -1 END, f.pos
       ) AS rank,
       {_SCALARS},
       CASE WHEN s.log_history IS NULL THEN error('log_history: missing or not a list') ELSE s.log_history END
           AS log_history
FROM read_json($files, filename = true, format = 'unstructured', maximum_object_size = {MAX_STATE_BYTES},
               columns = {_COLUMNS}) AS s
JOIN (SELECT unnest($files) AS filename, unnest($runs) AS run_id, unnest($pos) AS pos) AS f USING (filename)
"""

# An element of a JSON[] column is minified text, so a top-level key ``k`` shows as ``"k":``.
# Substring tests (cheap) pick the candidates; the exact tests (a JSON parse) run only on those
# (a nested object's key can look like a top-level one).
ENTRIES = """
CREATE OR REPLACE TEMP TABLE _hf_entries AS
SELECT run_id, rank, i, e,
       CASE WHEN contains(e, '"train_runtime":') THEN json_exists(e, '$.train_runtime') ELSE false END AS fin,
       CASE WHEN contains(e, '_runtime":') OR contains(e, '"eval_') THEN list_sort(list_distinct(list_concat(
           list_transform(list_filter(json_keys(e), lambda x: suffix(x, '_runtime') AND x <> 'train_runtime'
                                                              AND length(x) > 8),
                          lambda x: x[1:length(x) - 8]),
           CASE WHEN len(list_filter(json_keys(e), lambda x: starts_with(x, 'eval_'))) > 0 THEN ['eval'] ELSE [] END
       ))) ELSE [] END AS prefixes
FROM (
    SELECT run_id, rank, i,
           CASE WHEN starts_with(e, '{') THEN e ELSE error('log_history entry: not an object') END AS e
    FROM (SELECT run_id, rank, generate_subscripts(log_history, 1) AS i, unnest(log_history) AS e FROM _hf_files)
)
"""


def _num(x: str) -> str:
    """SQL: JSON text ``x`` (from ``json_transform`` to JSON: SQL NULL for a missing key or a
    JSON null) as DOUBLE; a boolean, a string or a container is an error (a string's text
    starts with a quote, a boolean's is true/false: neither casts to DOUBLE)."""
    return f"CASE WHEN {x} IS NULL THEN NULL ELSE coalesce(TRY_CAST({x}::VARCHAR AS DOUBLE), error('not a number')) END"


def _finite(x: str) -> str:
    """SQL: ``x`` with a non-finite value as NULL."""
    return f"CASE WHEN isfinite({x}) THEN {x} END"


# A non-negative integer: digits only (DuckDB's cast alone would round 1.5 and accept 1e3).
_STEP = ("CASE WHEN v.step IS NOT NULL AND ltrim(v.step::VARCHAR, '0123456789') = '' THEN v.step::VARCHAR::BIGINT "
         "ELSE error('step: not a non-negative integer') END")
#: Orders a run's entries: newer file first, then later entry (rank and i are < 2^31).
_NEWEST = "rank * 2147483648 + i"

STEPS = f"""
CREATE OR REPLACE TEMP TABLE _hf_steps AS
SELECT run_id, step, r.epoch AS epoch, r.loss AS loss, r.lr AS lr, r.grad_norm AS grad_norm
FROM (
    SELECT run_id, step, arg_max({{'epoch': epoch, 'loss': loss, 'lr': lr, 'grad_norm': grad_norm}}, newest) AS r
    FROM (
        SELECT run_id, {_NEWEST} AS newest, {_STEP} AS step, {_num('v.epoch')} AS epoch, {_num('v.loss')} AS loss,
               {_num('v.learning_rate')} AS lr, {_num('v.grad_norm')} AS grad_norm
        FROM (
            SELECT run_id, rank, i, e,
                   json_transform(e, '{{"step": "JSON", "epoch": "JSON", "loss": "JSON", "learning_rate": "JSON",
                                        "grad_norm": "JSON"}}') AS v
            FROM _hf_entries
            WHERE NOT fin AND len(prefixes) = 0 AND contains(e, '"loss":')
        )
        WHERE CASE WHEN v.loss IS NOT NULL THEN true ELSE json_exists(e, '$.loss') END
    )
    GROUP BY run_id, step
)
"""

_SKIP = ", ".join(f"'{m}'" for m in EVAL_SKIP)

EVALS = f"""
CREATE OR REPLACE TEMP TABLE _hf_evals AS
SELECT run_id, step, split, metric, value FROM (
    SELECT run_id, rank, i, step, split, metric,
           CASE WHEN json_type(val) IN ('ARRAY', 'OBJECT', 'VARCHAR', 'NULL') THEN NULL
                ELSE {_num('val')} END AS value,
           json_type(val) IN ('ARRAY', 'OBJECT', 'VARCHAR') AS skip
    FROM (
        SELECT run_id, rank, i, step, split, key[length(split) + 2:] AS metric,
               json_extract(e, '$."' || key || '"') AS val
        FROM (
            SELECT run_id, rank, i, e, step, split, unnest(json_keys(e)) AS key
            FROM (
                SELECT run_id, rank, i, e, json_extract(e, '$.step')::VARCHAR AS js,
                       CASE WHEN js IS NOT NULL AND ltrim(js, '0123456789') = '' THEN js::BIGINT
                            ELSE error('step: not a non-negative integer') END AS step,
                       unnest(prefixes) AS split
                FROM _hf_entries
                WHERE NOT fin AND len(prefixes) > 0
            )
        )
        WHERE starts_with(key, split || '_') AND key[length(split) + 2:] NOT IN ({_SKIP})
    )
)
WHERE NOT skip
QUALIFY row_number() OVER (PARTITION BY run_id, step, split, metric ORDER BY rank DESC, i DESC) = 1
"""

#: Every file gave exactly one JSON value (an empty file gives none, two objects in a row give
#: two; Python's json.loads refuses both, and so does this).
ONE_VALUE_PER_FILE = """
SELECT CASE WHEN count(*) <> len($files) OR count(DISTINCT filename) <> count(*)
            THEN error('a state file holds no JSON value, or several') END
FROM _hf_files
"""

STAGE: tuple[str, ...] = (FILES, ONE_VALUE_PER_FILE, ENTRIES, STEPS, EVALS)
TEMP_TABLES: tuple[str, ...] = ("_hf_files", "_hf_entries", "_hf_steps", "_hf_evals")

#: One row per run: the newest state file and its scalars, whether the summary entry was seen,
#: whether a logged loss is non-finite, the metric names and the row counts.
FACTS = f"""
SELECT n.run_id, n.filename AS state_file, {", ".join(f"n.{k}" for k in STATE_SCALARS)},
       coalesce(e.finished, false) AS finished, coalesce(s.diverged, false) AS diverged,
       coalesce(s.n, 0) AS n_steps, coalesce(v.n, 0) AS n_evals, coalesce(v.metrics, []) AS metrics
FROM (SELECT * FROM _hf_files QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY rank DESC) = 1) AS n
LEFT JOIN (SELECT run_id, bool_or(fin) AS finished FROM _hf_entries GROUP BY run_id) AS e USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n, bool_or(NOT isfinite(loss)) AS diverged FROM _hf_steps GROUP BY run_id)
    AS s USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n, list_sort(list_distinct(list(metric))) AS metrics FROM _hf_evals
           GROUP BY run_id) AS v USING (run_id)
"""

#: contract table -> SELECT of its columns in contract order
#: (epoch, lr and evaluation values are finite-only in the contract: non-finite -> NULL)
SELECTS: dict[str, str] = {
    "steps": f"SELECT run_id, step, {_finite('epoch')}, loss, {_finite('lr')}, grad_norm, NULL::DOUBLE AS wall_time "
             "FROM _hf_steps",
    "evals": f"SELECT run_id, step, split, metric, {_finite('value')} FROM _hf_evals",
}
