"""stabstat.stats against independent references (scipy, statsmodels) and by simulation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from stabstat import stats as S
from stabstat.stats.resampling import _intervals

B_REF = 20_000  # resamples for the reference comparisons


def _ref_stat(name: str):  # type: ignore[no-untyped-def]
    return {
        "mean": np.mean,
        "median": np.median,
        "std": lambda a, axis=-1: np.std(a, ddof=1, axis=axis),
        "iqm": lambda a, axis=-1: ss.trim_mean(a, 0.25, axis=axis),
        "max": np.max,
    }[name]


def _close_to_scipy(ours: S.BootstrapResult, ref, frac: float) -> None:  # type: ignore[no-untyped-def]
    """Endpoints agree within ``frac`` of the CI width (Monte-Carlo error of two runs)."""
    lo, hi = float(ref.confidence_interval.low), float(ref.confidence_interval.high)
    width = hi - lo
    assert width > 0
    assert abs(ours.ci_low - lo) <= frac * width, (ours, lo, hi)
    assert abs(ours.ci_high - hi) <= frac * width, (ours, lo, hi)


# With B=20,000 the endpoints' Monte-Carlo SD is ~1% (percentile) to ~2% (BCa) of the
# width; the difference of two independent runs has sqrt(2) times that. 8% is > 4 SD.
@pytest.mark.parametrize("statistic", ["mean", "median", "std", "iqm"])
@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_one_sample_matches_scipy(statistic: str, method: str) -> None:
    x = np.random.default_rng(11).lognormal(size=30)
    ours = S.bootstrap_ci(x, statistic=statistic, method=method, resamples=B_REF, rng=1)
    ref = ss.bootstrap((x,), _ref_stat(statistic), method=method, n_resamples=B_REF, rng=2)
    assert ours.estimate == pytest.approx(float(_ref_stat(statistic)(x)), rel=1e-12)
    _close_to_scipy(ours, ref, 0.08)
    assert ours.method == method and ours.resamples == B_REF and ours.seed == 1 and ours.n == 30


def test_max_matches_scipy() -> None:
    # The max's bootstrap distribution is discrete: endpoints are data values.
    x = np.random.default_rng(3).normal(size=40)
    ours = S.bootstrap_ci(x, statistic="max", method="percentile", resamples=B_REF)
    ref = ss.bootstrap((x,), np.max, method="percentile", n_resamples=B_REF, rng=2)
    assert ours.ci_high == pytest.approx(x.max())
    assert ours.ci_low in set(np.sort(x)[-6:]) or abs(ours.ci_low - ref.confidence_interval.low) < 0.2


@pytest.mark.parametrize("statistic", ["mean", "median", "std", "iqm"])
@pytest.mark.parametrize("paired", [False, True])
def test_difference_matches_scipy(statistic: str, paired: bool) -> None:
    rng = np.random.default_rng(5)
    a = rng.lognormal(size=28)
    b = 0.5 * a + rng.lognormal(size=28) * 0.7 if paired else rng.lognormal(size=33) * 0.8
    f = _ref_stat(statistic)
    ours = S.bootstrap_diff(a, b, statistic=statistic, paired=paired, resamples=B_REF, rng=3)
    ref = ss.bootstrap((a, b), lambda x, y, axis=-1: f(x, axis=axis) - f(y, axis=axis),
                       paired=paired, method="BCa", n_resamples=B_REF, rng=4)
    assert ours.estimate == pytest.approx(float(f(a) - f(b)))
    _close_to_scipy(ours, ref, 0.1)


def test_sd_ratio_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 2, 30), rng.normal(0, 1, 25)
    ours = S.sd_ratio_ci(a, b, resamples=B_REF)
    ref = ss.bootstrap((a, b), lambda x, y, axis=-1: np.std(x, ddof=1, axis=axis) / np.std(y, ddof=1, axis=axis),
                       n_resamples=B_REF, rng=4)
    assert ours.estimate == pytest.approx(np.std(a, ddof=1) / np.std(b, ddof=1))
    _close_to_scipy(ours, ref, 0.08)


def test_probability_of_improvement_matches_mann_whitney_and_scipy() -> None:
    rng = np.random.default_rng(9)
    a = np.round(rng.normal(0.7, 0.05, 20), 2)  # rounding makes ties, which count 1/2
    b = np.round(rng.normal(0.68, 0.05, 22), 2)
    ours = S.probability_of_improvement(a, b, resamples=B_REF)
    u = ss.mannwhitneyu(a, b).statistic
    assert ours.estimate == pytest.approx(u / (20 * 22))

    def poi(x, y, axis=-1):  # type: ignore[no-untyped-def]
        return ((x[..., :, None] > y[..., None, :]) + 0.5 * (x[..., :, None] == y[..., None, :])).mean(axis=(-1, -2))

    ref = ss.bootstrap((a, b), poi, n_resamples=B_REF, rng=4, batch=2000)
    _close_to_scipy(ours, ref, 0.08)


def test_ragged_groups_equal_one_at_a_time_estimates() -> None:
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=n) for n in (12, 30, 12, 7)]
    res = S.bootstrap_groups(groups, statistic="iqm", resamples=2000)
    assert [r.n for r in res] == [12, 30, 12, 7]
    for g, r in zip(groups, res, strict=True):
        assert r.estimate == pytest.approx(ss.trim_mean(g, 0.25))
        assert r.ci_low <= r.estimate <= r.ci_high
    assert res[3].warnings and "only 7 seeds" in res[3].warnings[0]
    assert not res[1].warnings


def test_same_seed_same_output_and_generator_seed_is_none() -> None:
    x = np.random.default_rng(0).normal(size=25)
    r1 = S.bootstrap_ci(x, statistic="median", resamples=3000, rng=42)
    r2 = S.bootstrap_ci(x, statistic="median", resamples=3000, rng=42)
    r3 = S.bootstrap_ci(x, statistic="mean", resamples=3000, rng=43)
    r4 = S.bootstrap_ci(x, statistic="mean", resamples=3000, rng=42)
    assert r1 == r2
    assert r1.seed == 42
    g = S.bootstrap_ci(x, resamples=3000, rng=np.random.default_rng(42))
    assert g.seed is None
    assert (r4.ci_low, r4.ci_high) != (r3.ci_low, r3.ci_high)


def test_degenerate_constant_sample_gives_point_interval_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for stat in S.STATISTICS:
            r = S.bootstrap_ci(np.full(15, 0.527), statistic=stat, resamples=500)
            expect = 0.0 if stat == "std" else 0.527
            assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((expect, expect, expect))
        d = S.bootstrap_diff(np.full(12, 0.5), np.full(12, 0.5), resamples=500)
        assert (d.ci_low, d.ci_high) == (0.0, 0.0)


def test_bca_falls_back_to_percentile_when_undefined() -> None:
    # Every replicate above the estimate: z0 = -inf, BCa undefined -> percentile + a note.
    theta_hat = np.array([0.0])
    theta_b = np.linspace(1.0, 2.0, 1001)[None, :]
    jack = [np.array([[0.1, -0.1, 0.2]])]
    low, high, notes, used = _intervals(theta_hat, theta_b, jack, "bca", 0.95)
    assert used == ["percentile"] and "BCa undefined" in notes[0][0]
    assert (low[0], high[0]) == pytest.approx(np.percentile(theta_b[0], [2.5, 97.5]))
    # A discrete statistic with many ties at the estimate stays BCa (mid-rank z0).
    x = np.array([0.0] * 19 + [1.0])
    r = S.bootstrap_ci(x, statistic="max", resamples=2000)
    assert r.method == "bca" and r.ci_low <= r.estimate <= r.ci_high


def test_tiny_groups() -> None:
    r = S.bootstrap_ci([0.7], resamples=100)
    assert r.estimate == 0.7 and math.isnan(r.ci_low)
    assert r.warnings
    r0 = S.bootstrap_groups([[]], resamples=100)[0]
    assert math.isnan(r0.estimate)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="unknown statistic"):
        S.bootstrap_ci([1.0, 2.0], statistic="mode")
    with pytest.raises(ValueError, match="NaN"):
        S.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(TypeError, match="Generator"):
        S.bootstrap_ci([1.0, 2.0], rng="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal lengths"):
        S.bootstrap_diff([1.0, 2.0], [1.0], paired=True)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=25),
    st.sampled_from(S.STATISTICS),
    st.sampled_from(["bca", "percentile"]),
    st.integers(0, 2**31),
)
def test_property_interval_contains_estimate(values: list[float], stat: str, method: str, seed: int) -> None:
    r = S.bootstrap_ci(values, statistic=stat, method=method, resamples=200, rng=seed)
    if stat in ("mean", "median", "iqm", "max") or np.std(values) > 0:
        # Percentile intervals need not contain the estimate in general, but every
        # endpoint is a resampled statistic, hence inside the data's range.
        assert min(values) - 1e-9 <= r.ci_low <= r.ci_high <= max(values) + 1e-9 or stat == "std"
    assert r.ci_low <= r.ci_high
    if method == "bca" and r.method == "bca":
        # BCa shifts the percentiles to the estimate's own position in the bootstrap
        # distribution, so the estimate lies inside (also past the formula's pole, see stats).
        tol = 1e-9 * (1 + abs(r.estimate))
        assert r.ci_low - tol <= r.estimate <= r.ci_high + tol


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 30), st.integers(1, 30))
def test_property_rate_interval(k: int, n: int) -> None:
    k = min(k, n)
    r = S.rate_interval(k, n)
    assert 0.0 <= r.ci_low <= r.rate <= r.ci_high <= 1.0


# ---------------------------------------------------------------- stratified


def test_stratified_pool_equals_rliable_definition_and_mean_combine() -> None:
    rng = np.random.default_rng(4)
    scores = rng.beta(5, 2, size=(20, 5))  # (seeds, tasks)
    pooled = S.stratified_bootstrap(scores, statistic="iqm", combine="pool", resamples=4000)
    assert pooled.estimate == pytest.approx(ss.trim_mean(scores.ravel(), 0.25))
    assert pooled.n == (20,) * 5
    mean_comb = S.stratified_bootstrap(scores, statistic="median", combine="mean", resamples=4000)
    assert mean_comb.estimate == pytest.approx(np.median(scores, axis=0).mean())
    for r in (pooled, mean_comb):
        assert r.ci_low <= r.estimate <= r.ci_high


def test_stratified_percentile_matches_explicit_resampling() -> None:
    # Reference: resample seeds within each task with plain numpy indexing.
    rng = np.random.default_rng(6)
    scores = rng.normal(0.7, 0.05, size=(15, 4))
    ref_rng = np.random.default_rng(99)
    b = 20_000
    idx = ref_rng.integers(0, 15, size=(b, 15, 4))
    res = np.take_along_axis(np.broadcast_to(scores, (b, 15, 4)), idx, axis=1)
    vals = ss.trim_mean(res.reshape(b, -1), 0.25, axis=1)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    ours = S.stratified_bootstrap(scores, statistic="iqm", method="percentile", resamples=b, rng=1)
    width = hi - lo
    assert abs(ours.ci_low - lo) < 0.06 * width and abs(ours.ci_high - hi) < 0.06 * width


def test_stratified_groups_ragged_tasks() -> None:
    rng = np.random.default_rng(2)
    g1 = [rng.normal(size=10), rng.normal(size=12)]
    g2 = [rng.normal(size=10), rng.normal(size=12)]
    g3 = [rng.normal(size=8), rng.normal(size=12)]
    res = S.stratified_bootstrap_groups([g1, g2, g3], statistic="mean", combine="mean", resamples=1000)
    assert [r.n for r in res] == [(10, 12), (10, 12), (8, 12)]
    assert res[2].estimate == pytest.approx((g3[0].mean() + g3[1].mean()) / 2)


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize("k,n", [(3, 10), (1, 25), (12, 25), (24, 25), (7, 50)])
def test_wilson_matches_statsmodels(k: int, n: int) -> None:
    from statsmodels.stats.proportion import proportion_confint

    r = S.rate_interval(k, n)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert r.method == "wilson"
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 10), (25, 25), (0, 1)])
def test_clopper_pearson_at_the_boundary(k: int, n: int) -> None:
    from statsmodels.stats.proportion import proportion_confint

    r = S.rate_interval(k, n)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    assert r.method == "clopper-pearson"
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_failure_rate_from_booleans() -> None:
    r = S.failure_rate([True, False, False, True, False])
    assert (r.k, r.n, r.rate) == (2, 5, 0.4)
    assert r.warnings  # 5 seeds


@pytest.mark.parametrize("counts", [(7, 17, 0, 8), (3, 25, 9, 25), (0, 10, 0, 12), (10, 10, 2, 10)])
def test_newcombe_matches_statsmodels(counts: tuple[int, int, int, int]) -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    k1, n1, k2, n2 = counts
    r = S.newcombe_diff(k1, n1, k2, n2)
    lo, hi = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-10)
    assert r.p_value == pytest.approx(ss.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


# ---------------------------------------------------------------- regression


def test_logistic_trend_matches_statsmodels_glm() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(7)
    n_train = np.repeat([250, 500, 1000, 2000, 4000], 12)
    p = 1 / (1 + np.exp(-(2.0 - 0.8 * (np.log2(n_train) - 8))))
    failed = rng.random(n_train.size) < p
    r = S.logistic_trend(n_train, failed, factor="n_train", transform="log2")
    fit = sm.GLM(failed.astype(float), sm.add_constant(np.log2(n_train)), family=sm.families.Binomial()).fit()
    assert r.coef == pytest.approx(fit.params[1])
    assert r.odds_ratio == pytest.approx(math.exp(fit.params[1]))
    lo, hi = np.exp(fit.conf_int()[1])
    assert (r.or_ci_low, r.or_ci_high) == pytest.approx((lo, hi))
    assert r.p_value == pytest.approx(fit.pvalues[1])
    assert not r.separation and len(r.levels) == 5
    assert r.odds_ratio < 1  # failure falls with more data in this simulation


def test_logistic_two_factors_adjusts() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    n_train = np.tile(np.repeat([500, 1000, 2000], 10), 2)
    steps = np.repeat([300, 1200], 30)
    p = 1 / (1 + np.exp(-(1.0 - 1.2 * (np.log2(steps) - 9))))
    failed = rng.random(60) < p
    res = S.logistic_regression({"n_train": n_train, "max_steps": steps}, failed,
                                transforms={"n_train": "log2", "max_steps": "log2"})
    x = sm.add_constant(np.column_stack([np.log2(n_train), np.log2(steps)]))
    fit = sm.GLM(failed.astype(float), x, family=sm.families.Binomial()).fit()
    assert [r.factor for r in res] == ["n_train", "max_steps"]
    assert res[0].coef == pytest.approx(fit.params[1]) and res[1].coef == pytest.approx(fit.params[2])
    assert res[0].adjusted_for == ("max_steps",)


def test_logistic_perfect_separation_falls_back_to_levels() -> None:
    x = np.repeat([100, 200, 400, 800], 5)
    failed = x <= 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = S.logistic_trend(x, failed, factor="n_train", transform="log2")
    assert r.separation and math.isnan(r.odds_ratio)
    assert any("separation" in w for w in r.warnings)
    assert [lv for lv, _ in r.levels] == [100, 200, 400, 800]
    assert r.levels[0][1].rate == 1.0 and r.levels[0][1].method == "clopper-pearson"


def test_logistic_no_failures() -> None:
    r = S.logistic_trend([1, 2, 3, 4], [False] * 4)
    assert r.separation and "no run failed" in r.warnings[0]


# ---------------------------------------------------------------- variance, p-values


def test_brown_forsythe_matches_scipy_levene_median() -> None:
    rng = np.random.default_rng(1)
    groups = [rng.lognormal(size=20), rng.lognormal(size=25) * 2, rng.lognormal(size=18)]
    r = S.brown_forsythe(*groups)
    ref = ss.levene(*groups, center="median")
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.df == (2.0, 60.0)


def test_brown_forsythe_degenerate() -> None:
    r = S.brown_forsythe([0.5] * 5, [0.5] * 6)
    assert r.p_value == 1.0
    r = S.brown_forsythe([0.5], [0.1, 0.2])
    assert math.isnan(r.p_value)


@pytest.mark.parametrize("method,sm_method", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjustments_match_multipletests(method: str, sm_method: str) -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.random(rng.integers(1, 12)) ** 2
        ours = S.adjust_pvalues(p, method)
        ref = multipletests(p, method=sm_method)[1]
        np.testing.assert_allclose(ours, ref, rtol=1e-12)
    p = np.array([0.01, np.nan, 0.04, 0.03])
    np.testing.assert_allclose(S.holm(p)[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])
    assert math.isnan(S.holm(p)[1])


def test_permutation_test_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1, 20), rng.normal(0, 1, 24)
    ours = S.permutation_test(a, b, resamples=20_000)
    ref = ss.permutation_test((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                              n_resamples=20_000, rng=1).pvalue
    assert abs(ours.p_value - ref) < 0.02
    paired = S.permutation_test(a[:20], b[:20], paired=True, resamples=20_000)
    ref_p = ss.permutation_test((a[:20], b[:20]), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                                permutation_type="samples", n_resamples=20_000, rng=1).pvalue
    assert abs(paired.p_value - ref_p) < 0.02


def test_seed_warnings() -> None:
    assert S.seed_warnings(25) == []
    assert "only 5 seeds" in S.seed_warnings(5)[0]
    assert S.seed_warnings(1)


# ---------------------------------------------------------------- coverage (slow)


@pytest.mark.slow
def test_coverage_simulation_bca_and_wilson() -> None:
    """Few repetitions, broad tolerance: catches a broken interval, not a 1% miss.

    ``benchmarks/coverage.py`` runs the fuller simulation and prints the table.
    """
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
        sys.path.insert(0, root)
    from benchmarks.coverage import bca_coverage, newcombe_coverage, wilson_coverage

    cov_logn = bca_coverage("lognormal", n=25, reps=150, resamples=1000, seed=1)
    cov_mix = bca_coverage("failure-mixture", n=25, reps=150, resamples=1000, seed=2)
    # Nominal 0.95; with 150 reps the Monte-Carlo SD is ~0.02. On LogNormal(0, 1) at n=25
    # every bootstrap interval undercovers: BCa ~0.89 in the long run (scipy's BCa alike).
    assert 0.80 <= cov_logn <= 0.98
    assert 0.87 <= cov_mix <= 0.995
    for n in (10, 25, 50):
        covs = wilson_coverage(n, np.linspace(0.05, 0.5, 10))
        assert min(covs) >= 0.82 and np.mean(covs) >= 0.93
    # Newcombe, exact: near-nominal on a grid that includes a zero rate.
    covs = newcombe_coverage(25, 25, [(0.05, 0.0), (0.3, 0.05), (0.5, 0.3), (0.15, 0.15)])
    assert min(covs) >= 0.9 and np.mean(covs) >= 0.93


# ---------------------------------------------------------------- correlation, trend, one-sided


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_bootstrap_correlation_matches_scipy(kind: str) -> None:
    rng = np.random.default_rng(12)
    x = np.round(rng.normal(size=35), 1)  # rounding makes ties for Spearman's mid-ranks
    y = np.round(0.6 * x + rng.normal(size=35), 1)

    def rank_corr(a, b, axis=-1):  # type: ignore[no-untyped-def]
        if kind == "pearson":
            ra, rb = a, b
        else:
            ra, rb = ss.rankdata(a, axis=-1), ss.rankdata(b, axis=-1)
        ra = ra - ra.mean(-1, keepdims=True)
        rb = rb - rb.mean(-1, keepdims=True)
        return (ra * rb).sum(-1) / np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))

    ours = S.bootstrap_correlation(x, y, kind=kind, resamples=B_REF)
    ref_est = ss.pearsonr(x, y).statistic if kind == "pearson" else ss.spearmanr(x, y).statistic
    assert ours.estimate == pytest.approx(ref_est)
    ref = ss.bootstrap((x, y), rank_corr, paired=True, n_resamples=B_REF, rng=5)
    _close_to_scipy(ours, ref, 0.08)


def test_trend_permutation_test_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    x = np.log2(np.repeat([250, 500, 1000, 2000], 8))
    failed = rng.random(x.size) < np.repeat([0.7, 0.5, 0.3, 0.1], 8)
    ours = S.trend_permutation_test(x, failed, alternative="decreasing", resamples=20_000)
    ref = ss.permutation_test((failed.astype(float),), lambda f, axis=-1: ((x - x.mean()) * f).mean(axis=axis),
                              permutation_type="pairings", alternative="less", n_resamples=20_000, rng=1)
    assert abs(ours.p_value - ref.pvalue) < 0.01
    two = S.trend_permutation_test(x, failed, resamples=20_000)
    assert two.p_value >= ours.p_value


def test_one_sided_permutation_tests_are_complementary() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.5, 1, 20), rng.normal(0, 1, 20)
    g = S.permutation_test(a, b, alternative="greater", resamples=5000)
    lo = S.permutation_test(a, b, alternative="less", resamples=5000)
    assert g.p_value < 0.5 < lo.p_value
    assert g.p_value + lo.p_value == pytest.approx(1.0, abs=0.01)


def test_bootstrap_statistics_shares_draws_with_bootstrap_ci() -> None:
    x = np.random.default_rng(5).normal(size=30)
    multi = S.bootstrap_statistics(x, S.STATISTICS, resamples=2000, rng=9)
    for stat in S.STATISTICS:
        assert multi[stat] == S.bootstrap_ci(x, statistic=stat, resamples=2000, rng=9)


def test_fisher_exact_matches_scipy_for_every_alternative() -> None:
    """Our log-gamma hypergeometric tail against scipy.stats.fisher_exact on a grid of tables."""
    for n_a, n_b in [(5, 5), (12, 12), (10, 25), (1, 7)]:
        for k_a in range(n_a + 1):
            for k_b in range(0, n_b + 1, max(1, n_b // 5)):
                table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
                for alt in ("two-sided", "greater", "less"):
                    ref = ss.fisher_exact(table, alternative=alt).pvalue
                    assert S.fisher_exact(k_a, n_a, k_b, n_b, alternative=alt) == pytest.approx(
                        ref, rel=1e-9, abs=1e-12), (table, alt)


@pytest.mark.parametrize("seed", range(5))
def test_clopper_pearson_inside_matches_statsmodels(seed: int) -> None:
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    k = int(rng.integers(1, n))
    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    assert S.clopper_pearson_interval(k, n) == pytest.approx((lo, hi), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_brown_forsythe_matches_scipy_on_mixtures(seed: int) -> None:
    """Failed-run mixtures (a point mass at the majority score plus a spread) and 2-4 groups."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.integers(3, 30))
        x = rng.normal(0.8, 0.05, n)
        x[rng.random(n) < 0.3] = 0.6
        groups.append(x)
    r = S.brown_forsythe(*groups)
    ref = ss.levene(*groups, center="median")
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
