"""How ``compare`` shares its bootstrap draws (issue 18, fourth pass; stabstat/analysis/compare.py).

* a level's rows use the level's own count matrix, the one ``bootstrap_statistics`` draws from
  the level's generator: the level rows equal the plain call, to the last bit;
* every pair statistic equals the stats function called with the matrices the sharing says
  (the two levels' own matrices; the one matrix of the paired differences of that size; the
  successful runs' matrices), so each interval is an ordinary bootstrap of its own data;
* the two levels of a pair are resampled independently (different generators, uncorrelated
  replicates), and levels of the same size still get different matrices;
* ``bootstrap_diff(..., _replicates=...)`` equals the counts path to the last bit;
* the same seed gives the same output, another seed another;
* coverage by simulation of the pair intervals (mean difference paired and unpaired,
  probability of improvement, SD ratio) at the nominal level with the shared draws;
* the paired permutation tests of one size share one matrix of swaps, the one the test itself
  would draw from that generator.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import polars as pl
import pytest

from stabstat import stats as S
from stabstat.analysis import RunSet, Settings, compare_frame
from stabstat.analysis.results import MeanDifference, ProbabilityOfImprovement, SdRatio


def _runset(groups: dict[str, np.ndarray], *, failed: dict[str, np.ndarray] | None = None,
            paired: bool = True) -> RunSet:
    """A frame-only RunSet: factor ``cfg``, one row per run; seeds 0..n-1 per level when
    ``paired`` (levels then pair by seed), distinct seeds per level otherwise."""
    rows: dict[str, list[Any]] = {"cfg": [], "seed": [], "value": [], "failed": []}
    offset = 0
    for name, vals in groups.items():
        fl = failed[name] if failed else np.zeros(vals.size, dtype=bool)
        rows["cfg"] += [name] * vals.size
        rows["seed"] += [int(s) + (0 if paired else offset) for s in range(vals.size)]
        rows["value"] += vals.tolist()
        rows["failed"] += fl.tolist()
        offset += 1000
    return RunSet(pl.DataFrame(rows), ("cfg",), {})


def _data(rng: np.random.Generator, sizes: tuple[int, ...] = (30, 30, 24)) -> dict[str, np.ndarray]:
    return {f"l{i}": rng.normal(0.8 + 0.01 * i, 0.02 + 0.01 * i, n) for i, n in enumerate(sizes)}


def test_level_rows_are_the_plain_bootstrap_of_each_level() -> None:
    groups = _data(np.random.default_rng(1))
    cfg = Settings(resamples=2000, seed=7)
    res = compare_frame(_runset(groups), settings=cfg)
    for gi, (row, vals) in enumerate(zip(res.groups, groups.values(), strict=True)):
        plain = S.bootstrap_statistics(vals, ("mean", "std", "median", "iqm", "max"), resamples=2000,
                                       rng=cfg.rng(1, gi))
        for stat in ("mean", "std", "median", "iqm", "max"):
            iv = getattr(row, stat)
            assert (iv.estimate, iv.ci_low, iv.ci_high) == (plain[stat].estimate, plain[stat].ci_low,
                                                           plain[stat].ci_high)


def test_pair_statistics_use_the_levels_own_matrices() -> None:
    rng = np.random.default_rng(2)
    groups = _data(rng, (30, 30, 24))
    failed = {k: rng.random(v.size) < 0.2 for k, v in groups.items()}
    failed["l0"][:] = False  # a level without failures: its successful runs reuse its own matrix
    cfg = Settings(resamples=1500, seed=3)
    res = compare_frame(_runset(groups, failed=failed), settings=cfg)
    vals = list(groups.values())
    succ = [v[~failed[k]] for k, v in groups.items()]
    level = [S.draw_counts(cfg.rng(1, i), 1500, v.size) for i, v in enumerate(vals)]
    ok = [level[i] if succ[i].size == vals[i].size else S.draw_counts(cfg.rng(5, i), 1500, succ[i].size)
          for i in range(3)]
    means = [t for t in res.tests if isinstance(t, MeanDifference)]
    pois = [t for t in res.tests if isinstance(t, ProbabilityOfImprovement)]
    ratios = {(t.a, t.b, t.runs): t for t in res.tests if isinstance(t, SdRatio)}
    for k, (i, j) in enumerate(itertools.combinations(range(3), 2)):
        a, b = vals[i], vals[j]
        paired = a.size == b.size  # same seeds 0..n-1: paired by seed
        assert means[k].paired is paired
        counts = (S.draw_counts(cfg.rng(2, a.size), 1500, a.size),) * 2 if paired else (level[i], level[j])
        d = S.bootstrap_diff(a, b, paired=paired, resamples=1500, _counts=counts)
        assert (means[k].diff.ci_low, means[k].diff.ci_high) == (d.ci_low, d.ci_high)
        poi = S.probability_of_improvement(a, b, resamples=1500, _counts=(level[i], level[j]))
        assert (pois[k].poi.ci_low, pois[k].poi.ci_high) == (poi.ci_low, poi.ci_high)
        for runs, xa, xb, c in (("all", a, b, (level[i], level[j])), ("successful", succ[i], succ[j], (ok[i], ok[j]))):
            sr = S.bootstrap_diff(xa, xb, statistic="std", op="ratio", resamples=1500, _counts=c)
            got = ratios[(f"l{i}", f"l{j}", runs)].ratio
            assert (got.estimate, got.ci_low, got.ci_high) == (sr.estimate, sr.ci_low, sr.ci_high)


def test_the_levels_of_a_pair_are_resampled_independently() -> None:
    cfg = Settings(seed=0)
    x = np.random.default_rng(4).normal(size=40)
    ca, cb = S.draw_counts(cfg.rng(1, 0), 10_000, 40), S.draw_counts(cfg.rng(1, 1), 10_000, 40)
    assert not np.array_equal(ca, cb)
    # Replicates of the same values under the two matrices: uncorrelated (SE of r ~ 0.01).
    ra, rb = x @ ca / 40, x @ cb / 40
    assert abs(np.corrcoef(ra, rb)[0, 1]) < 0.04
    # ... and each an exact multinomial resample: columns sum to n, counts' mean 1, variance 1 - 1/n.
    for c in (ca, cb):
        assert np.all(c.sum(axis=0) == 40)
        assert abs(c.var() - (1 - 1 / 40)) < 0.02


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("statistic,op", [("mean", "diff"), ("std", "ratio"), ("median", "diff")])
def test_replicates_path_equals_counts_path(paired: bool, statistic: str, op: str) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=25), rng.normal(0.3, 1.5, size=25)
    ca = S.draw_counts(1, 800, 25)
    cb = ca if paired else S.draw_counts(2, 800, 25)
    via_counts = S.bootstrap_diff(a, b, statistic=statistic, op=op, paired=paired, resamples=800, _counts=(ca, cb))
    reps = (S.bootstrap_replicates(a, ca, statistic=statistic, by_position=paired),
            S.bootstrap_replicates(b, cb, statistic=statistic, by_position=paired))
    via_reps = S.bootstrap_diff(a, b, statistic=statistic, op=op, paired=paired, resamples=800, _replicates=reps)
    assert via_counts == via_reps


def test_same_seed_same_output_other_seed_other_output() -> None:
    rs = _runset(_data(np.random.default_rng(6)))
    one = compare_frame(rs, settings=Settings(resamples=1000, seed=11)).to_dict()
    two = compare_frame(rs, settings=Settings(resamples=1000, seed=11)).to_dict()
    other = compare_frame(rs, settings=Settings(resamples=1000, seed=12)).to_dict()
    assert str(one) == str(two)
    assert str(one) != str(other)


def test_paired_permutation_tests_share_one_matrix_of_swaps_per_size() -> None:
    groups = _data(np.random.default_rng(8), (20, 20, 20))
    cfg = Settings(resamples=3000, seed=5)
    res = compare_frame(_runset(groups), settings=cfg)
    swaps = S.draw_swaps(cfg.rng(4, 20), 3000, 20)
    vals = list(groups.values())
    means = [t for t in res.tests if isinstance(t, MeanDifference)]
    for t, (i, j) in zip(means, itertools.combinations(range(3), 2), strict=True):
        assert t.paired
        assert t.p_value == S.permutation_test(vals[i], vals[j], paired=True, resamples=3000, _swaps=swaps).p_value
    # _swaps is exactly what the test draws itself from a generator (so p-values stay exact tests)
    a, b = vals[0], vals[1] + 0.01
    for seed in range(5):
        own = S.permutation_test(a, b, paired=True, resamples=999, rng=seed)
        given = S.permutation_test(a, b, paired=True, resamples=999,
                                   _swaps=S.draw_swaps(np.random.default_rng(seed), 999, a.size))
        assert own == given
        for stat in ("median", "std"):
            assert (S.permutation_test(a, b, statistic=stat, paired=True, resamples=999, rng=seed)
                    == S.permutation_test(a, b, statistic=stat, paired=True, resamples=999,
                                          _swaps=S.draw_swaps(np.random.default_rng(seed), 999, a.size)))


@pytest.mark.slow
def test_pair_intervals_cover_at_the_nominal_level_with_shared_draws() -> None:
    """4 levels x 30 seeds, Normal with known means and SDs, 120 simulated experiments, 6 pairs
    each: the shared draws leave every pair interval's coverage where an interval with its own
    draws has it (BCa, 95%: 720 intervals per statistic, Monte-Carlo SD ~0.008)."""
    mu, sd = np.array([0.80, 0.81, 0.83, 0.80]), np.array([0.02, 0.03, 0.025, 0.04])
    hits: dict[str, list[bool]] = {"paired mean": [], "unpaired mean": [], "poi": [], "sd ratio": []}
    rng = np.random.default_rng(2026)
    for rep in range(120):
        common = rng.normal(0, 0.01, 30)  # a seed effect shared by the levels: pairing matters
        groups = {f"l{i}": mu[i] + common + rng.normal(0, sd[i], 30) for i in range(4)}
        indep = {f"l{i}": mu[i] + rng.normal(0, math.hypot(sd[i], 0.01), 30) for i in range(4)}
        cfg = Settings(resamples=1000, seed=rep)
        for key, data, paired in (("paired mean", groups, True), ("unpaired mean", indep, False)):
            res = compare_frame(_runset(data, paired=paired), settings=cfg, paired=paired)
            for t in res.tests:
                if not isinstance(t, (MeanDifference, ProbabilityOfImprovement, SdRatio)):
                    continue
                i, j = int(t.a[1]), int(t.b[1])
                if isinstance(t, MeanDifference):
                    hits[key].append(t.diff.ci_low <= mu[i] - mu[j] <= t.diff.ci_high)
                if key == "unpaired mean" and isinstance(t, ProbabilityOfImprovement):
                    s = math.hypot(math.hypot(sd[i], 0.01), math.hypot(sd[j], 0.01))
                    true = 0.5 * math.erfc(-(mu[i] - mu[j]) / s / math.sqrt(2))
                    hits["poi"].append(t.poi.ci_low <= true <= t.poi.ci_high)
                if key == "unpaired mean" and isinstance(t, SdRatio) and t.runs == "all":
                    true = math.hypot(sd[i], 0.01) / math.hypot(sd[j], 0.01)
                    hits["sd ratio"].append(t.ratio.ci_low <= true <= t.ratio.ci_high)
    for key, h in hits.items():
        assert len(h) == 720, key
        cov = float(np.mean(h))
        # BCa at n = 30 on Normal data covers ~0.93-0.95; the SD ratio a little less (~0.92).
        assert 0.89 <= cov <= 0.985, (key, cov)


def test_matrices_drawn_again_past_the_memory_budget_give_the_same_output(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    compare_module = importlib.import_module("stabstat.analysis.compare")
    rs = _runset(_data(np.random.default_rng(9)))
    cached = compare_frame(rs, settings=Settings(resamples=800, seed=4)).to_dict()
    monkeypatch.setattr(compare_module._Draws, "BUDGET", 0)  # nothing kept: every matrix drawn on each use
    assert str(compare_frame(rs, settings=Settings(resamples=800, seed=4)).to_dict()) == str(cached)
