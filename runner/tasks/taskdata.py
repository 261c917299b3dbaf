"""``TaskData``: the train and dev examples of one task, as every task loader returns them.

Its own module so that the file loaders (:mod:`runner.tasks.loaders`) and the generated task
(:mod:`runner.tasks.synthetic`) both build it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from runner.tasks.metrics import majority_class, majority_scores
from stabstat.errors import ConfigError

__all__ = ["TaskData", "subsample"]


@dataclass(frozen=True)
class TaskData:
    """Train and dev examples of one task, labels as ids.

    ``*_a``/``*_b``: lists of texts of length n (``*_b`` None for single-text tasks);
    ``*_labels``: int64 arrays of shape (n,), values in ``range(len(label_names))``.
    """

    name: str
    train_a: list[str]
    train_b: list[str] | None
    train_labels: np.ndarray
    dev_a: list[str]
    dev_b: list[str] | None
    dev_labels: np.ndarray
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    source: str  #: where the data came from (paths or hub id), for run.json
    generated: bool = False

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def info(self) -> dict[str, Any]:
        """Task facts for ``run.json`` (``task`` object of the run-log contract)."""
        majority = majority_scores(self.metrics, self.dev_labels)
        return {
            "name": self.name,
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
            "n_train": len(self.train_a),
            "n_dev": len(self.dev_a),
            "metrics": list(self.metrics),
            "majority": majority,
            "majority_class": majority_class(self.dev_labels),
            "higher_is_better": {**dict.fromkeys(self.metrics, True), "loss": False},
            "source": self.source,
            "generated": self.generated,
        }


def subsample(data: TaskData, n_train: int | None, *, data_seed: int) -> TaskData:
    """Keep ``n_train`` training examples drawn without replacement with ``data_seed``.

    The subset depends only on ``data_seed`` (not on the training seed), so every training seed
    sees the same examples; their original order is kept. ``None`` keeps everything.
    """
    if n_train is None:
        return data
    n = len(data.train_a)
    if not 1 <= n_train <= n:
        raise ConfigError(f"n_train = {n_train}: task {data.name} has {n} training examples; use 1..{n}")
    if n_train == n:
        return data
    rng = np.random.default_rng(data_seed)
    idx = np.sort(rng.choice(n, size=n_train, replace=False))
    return replace(
        data,
        train_a=[data.train_a[i] for i in idx],
        train_b=None if data.train_b is None else [data.train_b[i] for i in idx],
        train_labels=data.train_labels[idx],
    )
