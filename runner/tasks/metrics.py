"""Task metrics and majority-class baselines, computed with numpy.

Metrics (GLUE's): ``accuracy`` for RTE, SST-2, QNLI; ``f1`` (of class 1), ``accuracy`` and their
mean ``acc_f1`` for MRPC; ``mcc`` (Matthews correlation) for CoLA. All take int label and
prediction arrays of shape (n,) and return fractions, not percent; all are higher-is-better.
The majority-class scores are what ``run.json``'s ``task.majority`` records: the analysis calls
a run failed when its final dev score is no better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BINARY_ONLY",
    "METRICS",
    "acc_f1",
    "accuracy",
    "compute_metrics",
    "f1",
    "majority_class",
    "majority_scores",
    "mcc",
]


def _counts(labels: np.ndarray, preds: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum((preds == 1) & (labels == 1)))
    tn = int(np.sum((preds == 0) & (labels == 0)))
    fp = int(np.sum((preds == 1) & (labels == 0)))
    fn = int(np.sum((preds == 0) & (labels == 1)))
    return tp, tn, fp, fn


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Share of ``preds == labels``; both int arrays of shape (n,)."""
    return float(np.mean(np.asarray(labels) == np.asarray(preds)))


def f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """F1 of class 1 (binary labels 0/1); 0.0 when there is no true positive (as sklearn)."""
    tp, _, fp, fn = _counts(np.asarray(labels), np.asarray(preds))
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def mcc(labels: np.ndarray, preds: np.ndarray) -> float:
    """Matthews correlation of binary 0/1 labels; 0.0 when a row or column of the confusion
    matrix is empty (constant predictions), as sklearn and GLUE report it."""
    tp, tn, fp, fn = _counts(np.asarray(labels), np.asarray(preds))
    denom = float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / np.sqrt(denom))


def acc_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean of accuracy and F1 (GLUE's MRPC score)."""
    return (accuracy(labels, preds) + f1(labels, preds)) / 2.0


#: metric name -> function(labels, predictions) -> float; all higher-is-better.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "acc_f1": acc_f1,
}
#: metrics defined for two labels only
BINARY_ONLY = frozenset({"f1", "mcc", "acc_f1"})


def compute_metrics(metrics: Sequence[str], labels: Any, preds: Any) -> dict[str, float]:
    """Each metric of ``metrics`` for label/prediction int arrays of shape (n,)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    return {m: METRICS[m](y, p) for m in metrics}


def majority_class(labels: Any) -> int:
    """The most frequent label id (the smallest id on a tie)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return int(np.argmax(counts))


def majority_scores(metrics: Sequence[str], dev_labels: Any) -> dict[str, float]:
    """Score of the classifier that predicts the dev set's majority class for every example."""
    y = np.asarray(dev_labels, dtype=np.int64)
    return compute_metrics(metrics, y, np.full_like(y, majority_class(y)))
