"""stabstat.stats.expected_max: expected best score of k runs (Dodge et al. 2019; Tang et al. 2020).

The unbiased estimator must equal the average of the maximum over every k-subset (brute force)
and the plug-in the average over every k-tuple drawn with replacement; on a skewed
distribution the unbiased one's bias must be smaller than the plug-in's.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from stabstat import stats as S


def test_unbiased_equals_the_mean_maximum_over_all_k_subsets() -> None:
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(0.7, 0.1, 9), 2)
    v[4] = v[1]  # a tie
    est = S.expected_max(v)
    for k in range(1, v.size + 1):
        brute = np.mean([max(s) for s in itertools.combinations(v, k)])
        assert est[k - 1] == pytest.approx(brute, rel=1e-12, abs=1e-15)
    assert est[0] == pytest.approx(v.mean()) and est[-1] == pytest.approx(v.max())


def test_plugin_equals_the_mean_maximum_over_all_k_draws_with_replacement() -> None:
    v = np.array([0.5, 0.9, 0.7, 0.7, 0.6])
    est = S.expected_max(v, [1, 2, 3, 4], estimator="plugin")
    for k in (1, 2, 3, 4):
        brute = np.mean([max(t) for t in itertools.product(v, repeat=k)])
        assert est[k - 1] == pytest.approx(brute, rel=1e-12)


def test_unbiased_has_less_bias_than_plugin_on_a_skewed_distribution() -> None:
    from scipy import integrate
    from scipy.stats import lognorm

    dist = lognorm(s=0.9)
    n, k = 10, 8
    # true E[max of k] = int x k F(x)^(k-1) f(x) dx
    truth = integrate.quad(lambda x: x * k * dist.cdf(x) ** (k - 1) * dist.pdf(x), 0, np.inf, limit=200)[0]
    rng = np.random.default_rng(7)
    reps = 3000
    samples = dist.rvs(size=(reps, n), random_state=rng)
    unbiased = np.array([S.expected_max(s, [k])[0] for s in samples])
    plugin = np.array([S.expected_max(s, [k], estimator="plugin")[0] for s in samples])
    bias_u, bias_p = unbiased.mean() - truth, plugin.mean() - truth
    se_u = unbiased.std(ddof=1) / math.sqrt(reps)
    assert abs(bias_u) < 3 * se_u  # unbiased within Monte-Carlo error
    assert bias_p < 0 and abs(bias_p) > 3 * abs(bias_u) + 3 * se_u


def test_curve_band_and_budget() -> None:
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(0.85, 0.02, 15), np.full(5, 0.6)])  # a quarter of the runs failed
    res = S.expected_max_curve(v, resamples=2000, rng=1)
    assert res.k.tolist() == list(range(1, 21))
    assert np.all(np.diff(res.estimate) >= -1e-12)  # more runs, higher expected best
    assert np.all(res.ci_low <= res.estimate + 1e-12) and np.all(res.estimate <= res.ci_high + 1e-12)
    again = S.expected_max_curve(v, resamples=2000, rng=1)
    assert np.array_equal(again.ci_low, res.ci_low)  # the same seed gives the same band
    d = res.to_dict()
    assert d["estimator"] == "unbiased" and len(d["ci_high"]) == 20
    # budgets: runs costing 100 each -> floor(budget / 100) runs fit
    ks, em = S.expected_max_budget(v, np.full(20, 100.0), [50, 100, 250, 2000, 2500])
    assert ks.tolist() == [0, 1, 2, 20, 25]
    assert math.isnan(em[0]) and math.isnan(em[-1])
    assert em[1:4] == pytest.approx(res.estimate[[0, 1, 19]])


def test_band_from_counts_equals_resamples_built_by_hand() -> None:
    # The band's replicates come from count matrices summed by parts; the estimator on the
    # resample built by repeating each run c times must give the same numbers (min and max
    # of 6 replicates: the ends of a ~100% band).
    rng = np.random.default_rng(12)
    v = np.sort(np.round(rng.normal(0.8, 0.05, 9), 3))
    counts = S.draw_counts(np.random.default_rng(4), 6, v.size)
    for estimator in ("unbiased", "plugin"):
        res = S.expected_max_curve(v, resamples=6, confidence=1 - 1e-12, estimator=estimator,
                                   rng=np.random.default_rng(4))
        by_hand = np.array([S.expected_max(np.repeat(v, counts[:, b]), estimator=estimator) for b in range(6)])
        assert res.ci_low == pytest.approx(by_hand.min(axis=0), abs=1e-9)
        assert res.ci_high == pytest.approx(by_hand.max(axis=0), abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="k = 4 is outside 1..3"):
        S.expected_max([1.0, 2.0, 3.0], [4])
    assert S.expected_max([1.0, 2.0, 3.0], [4], estimator="plugin")[0] > 2.0  # plug-in extrapolates
    with pytest.raises(ValueError, match="unknown estimator"):
        S.expected_max([1.0, 2.0], estimator="dodge")
    with pytest.raises(ValueError, match="costs must be > 0"):
        S.expected_max_budget([1.0, 2.0], [1.0, 0.0], [5.0])
