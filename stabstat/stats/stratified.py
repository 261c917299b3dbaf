"""Bootstrap stratified over tasks: seeds are resampled within each task, never across.

A group (configuration) is, per task, a ``(n_t,)`` array of per-seed values, or a
``(seeds, tasks)`` matrix as rliable takes. The aggregate is the statistic over all runs
of all tasks pooled (``combine='pool'``, rliable's aggregate IQM) or the mean of the
per-task statistics (``combine='mean'``). Groups with the same task layout (sizes per
task) share one count matrix, drawn task-major by
:func:`stabstat.stats.resampling._draw_counts`.

References
----------
Agarwal et al. (2021), Deep RL at the edge of the statistical precipice, NeurIPS (IQM,
stratified bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stabstat.stats._common import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    CIMethod,
    FloatArray,
    RNGLike,
    Statistic,
    _as_1d,
    _as_rng,
    _check_common,
    resolve_method,
    seed_warnings,
)
from stabstat.stats.resampling import (
    _draw_counts,
    _intervals,
    _jackknife_counts,
    _result,
    _stat_from_counts,
    compute_statistic,
)
from stabstat.stats.results import BootstrapResult

# Per group of one layout: estimates (G,), replicates (G, R), jackknife values per task
# ((G, n_t) each; None unless BCa).
_Replicates = tuple[FloatArray, FloatArray, list[FloatArray] | None]


def _task_arrays(group: Sequence[ArrayLike] | NDArray[Any], gi: int) -> list[FloatArray]:
    if isinstance(group, np.ndarray) and group.ndim == 2:
        return [_as_1d(group[:, t], f"group {gi} task {t}") for t in range(group.shape[1])]
    return [_as_1d(t, f"group {gi} task {j}") for j, t in enumerate(group)]


def stratified_bootstrap_groups(
    groups: Sequence[Sequence[ArrayLike] | NDArray[Any]],
    *,
    statistic: Statistic | str = "iqm",
    combine: Literal["pool", "mean"] | str = "pool",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> list[BootstrapResult]:
    """Stratified bootstrap over tasks for several groups (configurations).

    groups: per group, either a sequence of per-task 1-D arrays (``(n_t,)`` each, sizes
    may differ) or a ``(seeds, tasks)`` matrix as rliable takes. Seeds are resampled
    within each task, never across tasks. ``combine='pool'`` computes the statistic over
    all runs of all tasks pooled (rliable's aggregate IQM); ``combine='mean'`` averages
    the per-task statistics. BCa's acceleration treats each task as a separate sample.
    Groups with the same task layout (sizes per task) share the random draws.
    """
    _check_common(statistic, method, resamples, confidence)
    if combine not in ("pool", "mean"):
        raise ValueError(f"combine must be 'pool' or 'mean', got {combine!r}")
    gen, seed = _as_rng(rng)
    tasks = [_task_arrays(g, i) for i, g in enumerate(groups)]
    layouts: dict[tuple[int, ...], list[int]] = {}
    for i, ts in enumerate(tasks):
        layouts.setdefault(tuple(t.size for t in ts), []).append(i)
    out: list[BootstrapResult | None] = [None] * len(tasks)
    label = f"{statistic} (stratified, {'pooled' if combine == 'pool' else 'mean over tasks'})"
    # Fixed order of layouts so the same data and seed always consume the stream alike.
    requested = method
    for layout in sorted(layouts):
        idx = layouts[layout]
        sizes = np.array(layout)
        method = resolve_method(requested, statistic, int(sizes.sum()))
        if len(layout) == 0 or sizes.min() < 2:
            for i in idx:
                out[i] = _result(math.nan, math.nan, math.nan, label, method, resamples, seed,
                                 confidence, layout, ["every task needs at least 2 seeds"])
            continue
        all_counts = _draw_counts(gen, resamples, layout)  # (N, R), task-major item order
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        group_tasks = [tasks[i] for i in idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            if combine == "mean":
                theta_hat, theta_b, jack = _replicates_mean(
                    statistic, group_tasks, layout, all_counts, offsets, method, resamples)
            else:
                theta_hat, theta_b, jack = _replicates_pooled(
                    statistic, group_tasks, layout, all_counts, offsets, method, resamples)
        low, high, notes, used = _intervals(theta_hat, theta_b, jack, method, confidence)
        for j, i in enumerate(idx):
            w = seed_warnings(int(sizes.min()), purpose=f"a stratified CI of the {statistic}") + notes[j]
            out[i] = _result(theta_hat[j], low[j], high[j], label, used[j], resamples, seed,
                             confidence, layout, w)
    return [r for r in out if r is not None]


def _replicates_mean(
    statistic: str,
    group_tasks: list[list[FloatArray]],
    layout: tuple[int, ...],
    all_counts: NDArray[Any],
    offsets: NDArray[Any],
    method: str,
    resamples: int,
) -> _Replicates:
    """``combine='mean'``: the mean over tasks of each task's statistic.

    group_tasks: per group (G of them, all with task sizes ``layout``), per task ``(n_t,)``
    values. all_counts: ``(N, R)`` task-major counts; offsets: ``(tasks + 1,)`` row
    offsets of each task in it.
    """
    per_task_counts = [all_counts[offsets[t]: offsets[t + 1]] for t in range(len(layout))]
    g = len(group_tasks)
    # Per task, counts attach to sorted positions (seeds are exchangeable).
    theta_b = np.zeros((g, resamples))
    theta_hat = np.zeros(g)
    jack_t: list[FloatArray] = []
    per_task_hat = []
    for t, m in enumerate(layout):
        xs = np.sort(np.stack([ts[t] for ts in group_tasks]), axis=1)
        theta_b += _stat_from_counts(statistic, xs, per_task_counts[t], int(m))
        h = np.asarray(compute_statistic(statistic, xs, axis=1), dtype=np.float64)
        theta_hat += h
        per_task_hat.append(h)
        if method == "bca":
            jack_t.append(_stat_from_counts(statistic, xs, _jackknife_counts(int(m)), int(m) - 1))
    n_tasks = len(layout)
    theta_b /= n_tasks
    theta_hat /= n_tasks
    jack = None
    if method == "bca":
        # Leaving one seed of task t out changes only that task's term of the mean.
        jack = [(theta_hat * n_tasks - per_task_hat[t])[:, None] / n_tasks + jack_t[t] / n_tasks
                for t in range(n_tasks)]
    return theta_hat, theta_b, jack


def _replicates_pooled(
    statistic: str,
    group_tasks: list[list[FloatArray]],
    layout: tuple[int, ...],
    all_counts: NDArray[Any],
    offsets: NDArray[Any],
    method: str,
    resamples: int,
) -> _Replicates:
    """``combine='pool'``: the statistic over all runs of all tasks pooled.

    Shapes as :func:`_replicates_mean`. The pooled values are sorted once per group and the
    task-major counts permuted alike; the jackknife leaves one run out of the pool and is
    split back by task for BCa's acceleration.
    """
    counts = all_counts
    total = int(np.array(layout).sum())
    g = len(group_tasks)
    theta_b = np.empty((g, resamples))
    theta_hat = np.empty(g)
    jack_rows: list[list[FloatArray]] = [[] for _ in layout]
    jk_all = _jackknife_counts(total) if method == "bca" else None
    for j, ts in enumerate(group_tasks):
        pooled = np.concatenate(ts)
        order = np.argsort(pooled, kind="stable")
        xs = pooled[order][None, :]
        theta_hat[j] = float(compute_statistic(statistic, pooled))
        theta_b[j] = _stat_from_counts(statistic, xs, counts[order], total)[0]
        if jk_all is not None:
            jv = _stat_from_counts(statistic, xs, jk_all[order], total - 1)[0]
            for t in range(len(layout)):
                jack_rows[t].append(jv[offsets[t]: offsets[t + 1]])
    jack = [np.stack(rows) for rows in jack_rows] if method == "bca" else None
    return theta_hat, theta_b, jack


def stratified_bootstrap(
    group: Sequence[ArrayLike] | NDArray[Any],
    *,
    statistic: Statistic | str = "iqm",
    combine: Literal["pool", "mean"] | str = "pool",
    method: CIMethod | str = "bca",
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: RNGLike = DEFAULT_SEED,
) -> BootstrapResult:
    """Stratified bootstrap CI for one group; see :func:`stratified_bootstrap_groups`."""
    return stratified_bootstrap_groups([group], statistic=statistic, combine=combine, method=method,
                                       resamples=resamples, confidence=confidence, rng=rng)[0]
