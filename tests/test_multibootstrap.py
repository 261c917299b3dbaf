"""Seeds x examples bootstrap: against a slow reference loop (sklearn metrics on index
resamples drawn from the same generator in the documented order) and coverage by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from stabstat.errors import SelectionError
from stabstat.stats.multibootstrap import example_metric, multibootstrap

_SK = {"accuracy": accuracy_score, "f1": lambda y, p: f1_score(y, p, zero_division=0.0),
       "mcc": matthews_corrcoef,
       "acc_f1": lambda y, p: (accuracy_score(y, p) + f1_score(y, p, zero_division=0.0)) / 2}


def _reference(preds: list[np.ndarray], labels: np.ndarray, metric: str, b: int, seed: int) -> np.ndarray:
    """(G, B) replicates by loops: all configs share the dev set and seed set (one draw each)."""
    rng = np.random.default_rng(seed)
    r, j = preds[0].shape
    ex = rng.integers(0, j, size=(j, b))
    rn = rng.integers(0, r, size=(r, b))
    out = np.empty((len(preds), b))
    for g, p in enumerate(preds):
        for k in range(b):
            vals = [_SK[metric](labels[ex[:, k]], p[ri, ex[:, k]]) for ri in rn[:, k]]
            out[g, k] = np.mean(vals)
    return out


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc", "acc_f1"])
def test_matches_reference_loop(metric: str) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 15)
    preds = [np.where(rng.random((4, 15)) < q, labels, 1 - labels) for q in (0.6, 0.8)]
    seeds = [np.arange(4), np.arange(4)]
    res = multibootstrap(preds, [labels, labels], seeds=seeds, metric=metric, resamples=40, rng=11)
    ref = _reference(preds, labels, metric, 40, 11)
    np.testing.assert_allclose(res.replicates, ref, rtol=1e-12, atol=1e-12)
    assert res.diffs[0][5] and res.diffs[0][6]  # paired over examples and seeds


def test_multiclass_mcc_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 40)
    p = rng.integers(0, 3, (3, 40))
    got = example_metric("mcc", p, y, np.ones((40, 1)))[:, 0]
    np.testing.assert_allclose(got, [matthews_corrcoef(y, row) for row in p], atol=1e-12)


def test_width_share_and_pairing_flags() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    hard = np.where(rng.random(200) < 0.3, 0.2, 0.97)  # per-example chance to be right
    same = np.where(rng.random((10, 200)) < hard, y, 1 - y)
    res = multibootstrap([same, same], [y, y], seeds=[np.arange(10), np.arange(10) + 100], resamples=300, rng=1)
    assert res.diffs[0][5] and not res.diffs[0][6]
    assert np.all(res.ci_low <= res.estimate) and np.all(res.estimate <= res.ci_high)
    # Example difficulty shared by all runs, runs exchangeable: the examples dominate.
    assert 0.5 < res.share_examples[0] <= 1.0


def test_seed_dominated_share_and_unpaired_dev_sets() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2000)
    # Runs differ a lot (accuracy 0.55 .. 0.95) on a large dev set: the seeds dominate.
    skill = np.linspace(0.55, 0.95, 8)[:, None]
    p = np.where(rng.random((8, 2000)) < skill, y, 1 - y)
    y2 = rng.integers(0, 2, 2000)
    res = multibootstrap([p, p], [y, y2], seeds=[np.arange(8), np.arange(8)], resamples=300, rng=3)
    assert res.share_examples[0] < 0.1 and res.width_seeds[0] > 3 * res.width_examples[0]
    assert not res.diffs[0][5] and res.diffs[0][6]  # different dev sets: not paired over examples
    with pytest.raises(SelectionError, match="not recomputable"):
        multibootstrap([p], [y], metric="bleu")


def test_coverage_seed_and_example_effects() -> None:
    """Known DGP: correct[r, j] ~ Bernoulli(logistic(mu + a_r + b_j)), a_r ~ N(0, 0.5),
    b_j ~ N(0, 1.5). Target: E over seeds and examples; nominal 95% must cover within MC error
    (the joint bootstrap is known to be slightly conservative)."""
    rng = np.random.default_rng(2024)
    big = rng.normal(0, 0.5, 4000)[:, None] + rng.normal(0, 1.5, 4000)[None, :] + 1.0
    truth = float(np.mean(1 / (1 + np.exp(-big))))
    reps, hits = 300, 0
    for _ in range(reps):
        eta = 1.0 + rng.normal(0, 0.5, 20)[:, None] + rng.normal(0, 1.5, 100)[None, :]
        correct = rng.random((20, 100)) < 1 / (1 + np.exp(-eta))
        labels = np.ones(100, dtype=np.int64)
        res = multibootstrap([correct.astype(np.int64)], [labels], resamples=400, rng=rng)
        hits += int(res.ci_low[0] <= truth <= res.ci_high[0])
    cover = hits / reps
    se = np.sqrt(0.95 * 0.05 / reps)
    assert 0.95 - 3 * se <= cover <= 0.995, cover
