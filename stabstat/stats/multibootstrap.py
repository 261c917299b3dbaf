"""Seeds x examples bootstrap ("multibootstrap", Sellam et al. 2022, The MultiBERTs, ICLR).

A configuration's score has two sources of randomness: the training seed (which run) and
the finite evaluation set (which examples). The multibootstrap resamples both jointly: in
each resample, runs are drawn with replacement and the metric of each drawn run is
recomputed on the same resample of examples drawn with replacement; the statistic is the
mean over the drawn runs.

Shapes: ``predictions`` is ``(R, J)`` int (R runs x J examples, the same examples in the
same column order for every run); ``labels`` is ``(J,)`` int. Count matrices are item-major,
``(J, B)`` for examples and ``(R, B)`` for runs (B resamples), as in ``resampling``.

Vectorised: every metric is a function of the weighted confusion counts, and the weighted
counts of all runs and resamples are one matrix product ``indicator (R, J) @ counts (J, B)``.

Pairing: configurations evaluated on the same dev set (same example ids and labels) share
one example count matrix (paired over examples); configurations with the same seeds share
one run count matrix, rows aligned by seed (paired over seeds). Differences are taken
replicate by replicate, so a shared matrix removes that source's noise from a difference.

Random draws, in this order from one generator: the example counts of each distinct dev set
(in order of first use), then the run counts of each distinct seed set (in order of first
use): each ``rng.integers(0, n, size=(n, B))`` turned into counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stabstat.errors import SelectionError
from stabstat.stats._common import DEFAULT_CONFIDENCE, RNGLike, _as_rng

__all__ = ["EXAMPLE_METRICS", "MultibootResult", "example_metric", "multibootstrap", "multiboot_replicates"]

#: Metrics recomputed from predictions and labels (the runner's: GLUE definitions).
EXAMPLE_METRICS = ("accuracy", "f1", "mcc", "acc_f1")

FloatArray = NDArray[np.float64]


def _counts_from_index(idx: NDArray[Any], n: int) -> NDArray[np.float64]:
    """``(n, B)`` counts from ``(n, B)`` draws of item indices (column b: resample b)."""
    b = idx.shape[1]
    flat = (idx + n * np.arange(b)[None, :]).ravel(order="F")
    return np.bincount(flat, minlength=n * b).reshape(b, n).T.astype(np.float64)


def _draw(rng: np.random.Generator, n: int, resamples: int) -> NDArray[np.float64]:
    return _counts_from_index(rng.integers(0, n, size=(n, resamples)), n)


def example_metric(metric: str, predictions: NDArray[Any], labels: NDArray[Any],
                   weights: NDArray[Any]) -> FloatArray:
    """The metric of every run under every example weighting.

    predictions ``(R, J)`` int, labels ``(J,)`` int, weights ``(J, B)`` (bootstrap counts,
    or ones ``(J, 1)`` for the plain metric). Returns ``(R, B)``. F1 is of class 1 (0 when
    there is no true positive), MCC the multiclass Matthews correlation (Gorodkin 2004; the
    binary one for 0/1 labels; 0 when undefined), as the runner and sklearn compute them.
    """
    if metric not in EXAMPLE_METRICS:
        raise SelectionError(f"--metric {metric!r}: not recomputable from predictions; use one of "
                             f"{', '.join(EXAMPLE_METRICS)}")
    p = np.asarray(predictions)
    y = np.asarray(labels)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=0)[None, :]
    correct = (p == y[None, :]).astype(np.float64) @ w
    if metric == "accuracy":
        return correct / total
    if metric in ("f1", "acc_f1"):
        tp = ((p == 1) & (y[None, :] == 1)).astype(np.float64) @ w
        pred_pos = (p == 1).astype(np.float64) @ w
        true_pos = (y == 1).astype(np.float64) @ w
        denom = pred_pos + true_pos[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(tp > 0, 2 * tp / denom, 0.0)
        return f1 if metric == "f1" else (f1 + correct / total) / 2
    classes = np.union1d(np.unique(p), np.unique(y))
    cov_py = correct * total
    sum_pt = np.zeros_like(correct)
    sum_pp = np.zeros_like(correct)
    sum_tt = np.zeros_like(total)
    for k in classes:
        pk = (p == k).astype(np.float64) @ w
        tk = (y == k).astype(np.float64) @ w
        sum_pt += pk * tk[None, :]
        sum_pp += pk**2
        sum_tt = sum_tt + tk[None, :] ** 2
    denom = (total**2 - sum_pp) * (total**2 - sum_tt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (cov_py - sum_pt) / np.sqrt(denom), 0.0)


def multiboot_replicates(metric: str, predictions: NDArray[Any], labels: NDArray[Any],
                         example_counts: NDArray[Any] | None, run_counts: NDArray[Any] | None) -> FloatArray:
    """``(B,)`` replicates of the mean over runs of the metric: runs weighted by
    ``run_counts`` ``(R, B)`` and examples by ``example_counts`` ``(J, B)``; None for
    either keeps that source fixed (all runs once / all examples once)."""
    r, j = np.asarray(predictions).shape
    if example_counts is None:
        per_run = example_metric(metric, predictions, labels, np.ones((j, 1)))  # (R, 1)
        if run_counts is None:
            return per_run.mean(axis=0)
        return (np.asarray(run_counts, dtype=np.float64) * per_run).sum(axis=0) / r
    per_run = example_metric(metric, predictions, labels, example_counts)  # (R, B)
    if run_counts is None:
        return per_run.mean(axis=0)
    return (np.asarray(run_counts, dtype=np.float64) * per_run).sum(axis=0) / r


@dataclass(frozen=True)
class MultibootResult:
    """Multibootstrap of G configurations (arrays indexed by configuration).

    ``estimate``: mean over runs of the metric on all examples; ``ci_low/ci_high``: the
    percentile interval of the joint (seeds x examples) bootstrap; ``width_seeds`` /
    ``width_examples``: interval widths with only seeds / only examples resampled;
    ``share_examples``: the examples' share of the bootstrap variance,
    ``var_examples / (var_examples + var_seeds)`` (the seeds' share is one minus it).
    ``diffs``: ``(i, j, estimate, ci_low, ci_high, paired_examples, paired_seeds)`` for i < j
    (difference i - j). ``replicates``: ``(G, B)`` joint replicates.
    """

    metric: str
    estimate: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    width_seeds: FloatArray
    width_examples: FloatArray
    share_examples: FloatArray
    diffs: tuple[tuple[int, int, float, float, float, bool, bool], ...]
    replicates: FloatArray
    resamples: int
    confidence: float
    seed: int | None
    method: str = "percentile"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "estimate": self.estimate.tolist(), "ci_low": self.ci_low.tolist(),
                "ci_high": self.ci_high.tolist(), "width_seeds": self.width_seeds.tolist(),
                "width_examples": self.width_examples.tolist(), "share_examples": self.share_examples.tolist(),
                "diffs": [list(d) for d in self.diffs], "resamples": self.resamples,
                "confidence": self.confidence, "seed": self.seed, "method": self.method}


def _key(x: NDArray[Any]) -> tuple[Any, ...]:
    return tuple(np.asarray(x).tolist())


def multibootstrap(predictions: Sequence[NDArray[Any]], labels: Sequence[NDArray[Any]], *,
                   seeds: Sequence[NDArray[Any]] | None = None, metric: str = "accuracy",
                   resamples: int = 1000, confidence: float = DEFAULT_CONFIDENCE,
                   rng: RNGLike = None) -> MultibootResult:
    """Seeds x examples bootstrap of G configurations.

    predictions: per configuration ``(R_g, J_g)`` int; labels: per configuration ``(J_g,)``
    int (configurations with equal labels arrays are taken to share the dev set and are
    paired over examples: pass example-aligned columns); seeds: per configuration ``(R_g,)``
    seed of each row (configurations with the same set of seeds are paired over seeds; rows
    are aligned by seed); None: no seed pairing. Returns :class:`MultibootResult`.
    """
    gen, seed = _as_rng(rng)
    g = len(predictions)
    if g == 0 or len(labels) != g or (seeds is not None and len(seeds) != g):
        raise SelectionError("multibootstrap: one labels array (and one seeds array) per configuration")
    preds = [np.asarray(p) for p in predictions]
    ex_keys = [_key(y) for y in labels]
    # Without seeds every configuration draws its own run counts; with seeds, rows are put in
    # seed order and configurations with the same seed set share one draw (paired over seeds).
    seed_keys: list[Any] = [("own", i) for i in range(g)]
    if seeds is not None:
        preds = [p[np.argsort(np.asarray(s), kind="stable")] for p, s in zip(preds, seeds, strict=True)]
        seed_keys = [("s", _key(np.sort(np.asarray(s)))) for s in seeds]
    ex_draws: dict[Any, NDArray[np.float64]] = {}
    for k, y in zip(ex_keys, labels, strict=True):
        if k not in ex_draws:
            ex_draws[k] = _draw(gen, len(y), resamples)
    run_draws: dict[Any, NDArray[np.float64]] = {}
    for k, p in zip(seed_keys, preds, strict=True):
        if k not in run_draws:
            run_draws[k] = _draw(gen, p.shape[0], resamples)
    a = (1 - confidence) / 2
    est, lo, hi, ws, we, share, reps = [], [], [], [], [], [], []
    for i in range(g):
        y = np.asarray(labels[i])
        rc, ec = run_draws[seed_keys[i]], ex_draws[ex_keys[i]]
        joint = multiboot_replicates(metric, preds[i], y, ec, rc)
        only_s = multiboot_replicates(metric, preds[i], y, None, rc)
        only_e = multiboot_replicates(metric, preds[i], y, ec, None)
        est.append(float(multiboot_replicates(metric, preds[i], y, None, None)[0]))
        ql, qh = np.quantile(joint, [a, 1 - a])
        lo.append(ql)
        hi.append(qh)
        ws.append(float(np.subtract(*np.quantile(only_s, [1 - a, a]))))
        we.append(float(np.subtract(*np.quantile(only_e, [1 - a, a]))))
        ve, vs = float(only_e.var()), float(only_s.var())
        share.append(ve / (ve + vs) if ve + vs > 0 else np.nan)
        reps.append(joint)
    rep = np.vstack(reps)
    diffs = []
    for i in range(g):
        for j in range(i + 1, g):
            d = rep[i] - rep[j]
            dl, dh = np.quantile(d, [a, 1 - a])
            diffs.append((i, j, est[i] - est[j], float(dl), float(dh), ex_keys[i] == ex_keys[j],
                          seed_keys[i] == seed_keys[j]))
    return MultibootResult(metric, np.array(est), np.array(lo), np.array(hi), np.array(ws), np.array(we),
                           np.array(share), tuple(diffs), rep, resamples, confidence, seed)
