"""The runner's tasks: what a run trains and evaluates on.

One module per concept, imported one way (loaders -> synthetic -> taskdata -> metrics):

* :mod:`runner.tasks.taskdata` -- :class:`TaskData` (train/dev texts and label ids of one task)
  and :func:`subsample` (the ``n_train`` subset);
* :mod:`runner.tasks.loaders` -- :func:`load_task`: GLUE TSVs, the hub, your own CSV/TSV/JSONL
  (and ``task = "synthetic"``);
* :mod:`runner.tasks.synthetic` -- the task generated from a tokenizer's vocabulary;
* :mod:`runner.tasks.metrics` -- accuracy, F1, MCC, acc_f1 and the majority-class baselines.

The names below are re-exported for ``from runner.tasks import load_task, TaskData``. Loading a
task needs the ``[runner]`` extra (``datasets``); importing this package needs only numpy.
"""

from __future__ import annotations

from runner.tasks.loaders import (
    GLUE_ENV,
    GLUE_TASKS,
    TaskSpec,
    canonical_task,
    known_tasks,
    load_task,
    resolve_data_dir,
)
from runner.tasks.metrics import (
    METRICS,
    acc_f1,
    accuracy,
    compute_metrics,
    f1,
    majority_class,
    majority_scores,
    mcc,
)
from runner.tasks.synthetic import GENERATOR_VERSION, generate, generate_from_tokenizer, word_list
from runner.tasks.taskdata import TaskData, subsample

__all__ = [
    "GENERATOR_VERSION",
    "GLUE_ENV",
    "GLUE_TASKS",
    "METRICS",
    "TaskData",
    "TaskSpec",
    "acc_f1",
    "accuracy",
    "canonical_task",
    "compute_metrics",
    "f1",
    "generate",
    "generate_from_tokenizer",
    "known_tasks",
    "load_task",
    "majority_class",
    "majority_scores",
    "mcc",
    "resolve_data_dir",
    "subsample",
    "word_list",
]
