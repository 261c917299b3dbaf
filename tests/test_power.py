"""stabstat.stats.power: how many seeds.

References: scipy's Fisher exact test (every table), statsmodels' NormalIndPower, scipy's t
quantiles; and simulation: the n that ``plan`` picks for power 0.8 must give 0.75..0.85 over
1,000 experiments drawn from the true distribution and tested with compare's permutation test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stabstat import stats as S
from stabstat.stats.power import fisher_pvalues


def test_fisher_pvalues_equal_scipy_for_every_table() -> None:
    from scipy.stats import fisher_exact

    p = fisher_pvalues(7, 5)
    for ka in range(8):
        for kb in range(6):
            ref = fisher_exact([[ka, 7 - ka], [kb, 5 - kb]]).pvalue
            assert p[ka, kb] == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_fisher_power_is_the_exact_sum_and_matches_simulation() -> None:
    from scipy.stats import binom, fisher_exact

    n, pa, pb = 9, 0.5, 0.1
    brute = sum(binom.pmf(ka, n, pa) * binom.pmf(kb, n, pb)
                for ka in range(n + 1) for kb in range(n + 1)
                if fisher_exact([[ka, n - ka], [kb, n - kb]]).pvalue <= 0.05)
    assert S.fisher_power(pa, pb, n)[0] == pytest.approx(brute, rel=1e-10)
    rng = np.random.default_rng(0)
    sims = 4000
    ka, kb = rng.binomial(20, 0.4, sims), rng.binomial(20, 0.1, sims)
    table = fisher_pvalues(20, 20)
    simulated = float(np.mean(table[ka, kb] <= 0.05))
    exact = S.fisher_power(0.4, 0.1, 20)[0]
    assert abs(simulated - exact) < 3 * math.sqrt(exact * (1 - exact) / sims)


def test_normal_power_and_n_match_statsmodels() -> None:
    from statsmodels.stats.power import NormalIndPower

    ref = NormalIndPower()
    for delta, sd, n in ((0.02, 0.03, 10), (0.5, 1.0, 40), (0.1, 0.05, 3)):
        assert S.normal_power(delta, sd, sd, n) == pytest.approx(ref.power(delta / sd, n, 0.05, ratio=1), rel=1e-9)
    for delta, sd, power in ((0.02, 0.03, 0.8), (0.5, 1.0, 0.9)):
        need = ref.solve_power(delta / sd, None, 0.05, power, ratio=1)
        assert S.normal_n(delta, sd, sd, power=power) == max(2, math.ceil(need))
    assert S.normal_n(0.0, 1.0, 1.0) is None


def test_ci_width_n_and_pilot_sd_interval() -> None:
    from scipy.stats import chi2
    from scipy.stats import t as student_t

    n, w = S.ci_width_n(0.1, 0.08)
    assert w == pytest.approx(2 * student_t.ppf(0.975, n - 1) * 0.1 / math.sqrt(n))
    assert w < 0.08 <= 2 * student_t.ppf(0.975, n - 2) * 0.1 / math.sqrt(n - 1)
    lo, hi = S.pilot_sd_interval(0.1, 12)
    assert lo == pytest.approx(0.1 * math.sqrt(11 / chi2.ppf(0.975, 11)))
    assert hi == pytest.approx(0.1 * math.sqrt(11 / chi2.ppf(0.025, 11)))


def _population(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dev accuracies of a recipe: skewed successes, and 10% failed runs at the majority (0.6)."""
    ok = 0.86 - 0.03 * rng.gamma(2.0, 1.0, size)
    return np.where(rng.random(size) < 0.1, 0.6, ok)


def test_planned_power_is_achieved_in_simulated_experiments() -> None:
    delta = 0.05
    rng = np.random.default_rng(2024)
    pilot = _population(rng, 2000)  # the pilot stands for the population (its size error aside)
    ns = list(range(4, 41, 2))
    pw = S.bootstrap_power(pilot, pilot + delta, ns, resamples=2000, rng=1)
    n = ns[int(np.nonzero(pw >= 0.8)[0][0])]
    planned = float(pw[ns.index(n)])
    # 1,000 experiments from the population, tested with compare's test (permutation, two-sided)
    sims = 1000
    rejected = 0
    for i in range(sims):
        a, b = _population(rng, n), _population(rng, n) + delta
        rejected += S.permutation_test(a, b, statistic="mean", resamples=999, rng=i).p_value < 0.05
    simulated = rejected / sims
    assert 0.75 <= simulated <= 0.85, (n, planned, simulated)
    se = math.sqrt(planned * (1 - planned) / 2000 + simulated * (1 - simulated) / sims)
    assert abs(simulated - planned) < 3 * se + 0.01  # + the 0.01 a permutation p-value adds


def test_welch_and_permutation_give_the_same_power() -> None:
    rng = np.random.default_rng(5)
    pilot = _population(rng, 300)
    welch = S.bootstrap_power(pilot, pilot + 0.04, [8, 16], resamples=600, rng=2)
    perm = S.bootstrap_power(pilot, pilot + 0.04, [8, 16], resamples=600, test="permutation", rng=2)
    assert np.all(np.abs(welch - perm) < 3 * np.sqrt(welch * (1 - welch) / 600 * 2) + 0.01)


def test_small_n_is_tested_with_the_exact_permutation_test() -> None:
    from scipy.stats import permutation_test

    from stabstat.stats.power import _exact_permutation_reject

    rng = np.random.default_rng(9)
    a, b = rng.normal(0, 1, (30, 4)), rng.normal(1.2, 1, (30, 4))
    ref = np.array([permutation_test((x, y), lambda u, v: np.mean(u) - np.mean(v), permutation_type="independent",
                                     n_resamples=10**6).pvalue for x, y in zip(a, b, strict=True)])
    for alpha in (0.03, 0.06, 0.2):
        assert np.array_equal(_exact_permutation_reject(a, b, alpha), ref <= alpha + 1e-12)
    # Two failed runs (identical values) against two successful ones: a t-test rejects, the
    # permutation test of compare never can at n = 2 or 3 (smallest p: 1/3, then 1/10).
    failed_or_not = np.array([0.6] * 6 + [0.85, 0.86, 0.84, 0.87, 0.85, 0.86])
    ok = np.array([0.70, 0.71, 0.69, 0.72, 0.70, 0.71])
    assert S.bootstrap_power(failed_or_not, ok, [2, 3], resamples=500, rng=0).tolist() == [0.0, 0.0]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 pilot runs"):
        S.bootstrap_power([0.5], [0.6, 0.7], [5])
    with pytest.raises(ValueError, match="at least 2 runs per arm"):
        S.bootstrap_power([0.5, 0.6], [0.6, 0.7], [1])
    with pytest.raises(ValueError, match="unknown test"):
        S.bootstrap_power([0.5, 0.6], [0.6, 0.7], [5], test="t")
