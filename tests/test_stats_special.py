"""stabstat.stats.special against scipy.special over wide grids, extremes included.

The largest relative errors measured on these grids (2026-11-30): ndtr 5.7e-14 (in the deep
tail, |x| > 30, where the rounding of x / sqrt(2) alone moves erfc by ~x^2 eps; scipy's own
value is off from mpmath by as much there) and 2.5e-15 for |x| <= 8, ndtri 1.0e-15, gammaln
1.3e-15 (absolute near its roots 1 and 2), betainc 8.3e-13 (6.4e-14 for integer parameters up to
40), betaincinv 1.0e-13, Clopper-Pearson quantiles 3.7e-13 (n up to 100,000), fdtrc 6.0e-13. The
bounds below sit just above those figures: a regression in any of them fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special as sp

from stabstat.stats import special as ss


def _max_rel(ours: np.ndarray, ref: np.ndarray, floor: float = 1e-300) -> float:
    ours, ref = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    ok = np.isfinite(ref)
    diff = np.abs(ours[ok] - ref[ok])
    diff[ours[ok] == ref[ok]] = 0.0
    return float((diff / np.maximum(np.abs(ref[ok]), floor)).max())


def _beta_params(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.exp(rng.uniform(np.log(0.05), np.log(5000), n)), np.exp(rng.uniform(np.log(0.05), np.log(5000), n)))


def test_ndtr_matches_scipy() -> None:
    x = np.concatenate([np.linspace(-37, 37, 7401), -np.logspace(-300, 1.5, 400), np.logspace(-300, 1.5, 400)])
    keep = sp.ndtr(x) > 1e-300  # scipy flushes the subnormal tail (x < -37.5) to 0
    assert _max_rel(ss.ndtr(x[keep]), sp.ndtr(x[keep])) <= 1e-13
    central = np.abs(x) <= 8
    assert _max_rel(ss.ndtr(x[central]), sp.ndtr(x[central])) <= 5e-15
    assert ss.ndtr(0.0) == 0.5 and ss.ndtr(np.inf) == 1.0 and ss.ndtr(-np.inf) == 0.0
    assert np.isnan(ss.ndtr(np.nan)) and isinstance(ss.ndtr(1.0), float)
    assert ss.ndtr(np.zeros((2, 3))).shape == (2, 3)


def test_ndtri_matches_scipy_and_inverts_ndtr() -> None:
    p = np.concatenate([np.linspace(0, 1, 10001), np.logspace(-300, -1, 1500), 1 - np.logspace(-16, -1, 1500),
                        0.5 + np.logspace(-17, -2, 500), 0.5 - np.logspace(-17, -2, 500)])
    assert _max_rel(ss.ndtri(p), sp.ndtri(p)) <= 5e-15
    assert ss.ndtri(0.0) == -np.inf and ss.ndtri(1.0) == np.inf
    assert np.all(np.isnan(ss.ndtri(np.array([-0.1, 1.1, np.nan]))))
    x = np.linspace(-30, 0, 3001)  # the lower tail, where Phi(x) keeps its relative precision
    np.testing.assert_allclose(ss.ndtri(ss.ndtr(x)), x, rtol=1e-12, atol=1e-14)


def test_gammaln_matches_scipy() -> None:
    x = np.concatenate([np.linspace(0.01, 50, 5000), np.logspace(-10, 6, 2000), np.linspace(-9.9, -0.1, 499)])
    # Relative where |value| >= 1, absolute near the roots at 1 and 2.
    assert _max_rel(ss.gammaln(x), sp.gammaln(x), floor=1.0) <= 5e-15
    assert ss.gammaln(0.0) == np.inf and ss.gammaln(-3.0) == np.inf and ss.gammaln(1.0) == 0.0


def test_betainc_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = _beta_params(rng, 6000)
    x = rng.uniform(0, 1, a.size)
    # Near the mean too, where the continued fraction is slowest and the prefactor largest.
    m = a / (a + b)
    near = np.clip(m + 3 * rng.standard_normal(a.size) * np.sqrt(m * (1 - m) / (a + b + 1)), 1e-300, 1 - 1e-16)
    for xs in (x, near):
        ref = sp.betainc(a, b, xs)
        keep = ref > 1e-250  # scipy returns 0 below ~1e-268; ours keeps the tiny value
        assert _max_rel(ss.betainc(a[keep], b[keep], xs[keep]), ref[keep]) <= 2e-12
        assert np.all(ss.betainc(a[~keep], b[~keep], xs[~keep]) < 1e-200)
    # Small integer parameters (Clopper-Pearson, F tails) on a fine x grid, both tails.
    aa, bb, xx = np.meshgrid(np.arange(1, 41.0), np.arange(1, 41.0), np.linspace(0.001, 0.999, 50))
    assert _max_rel(ss.betainc(aa, bb, xx), sp.betainc(aa, bb, xx)) <= 1e-13
    assert ss.betainc(2.0, 3.0, 0.0) == 0.0 and ss.betainc(2.0, 3.0, 1.0) == 1.0
    assert np.all(np.isnan(ss.betainc(np.array([0.0, 1.0, 1.0]), np.array([1.0, -1.0, 1.0]), np.array([0.5, 0.5, 2.0]))))


def test_betaincinv_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = _beta_params(rng, 4000)
    p = np.exp(rng.uniform(np.log(1e-12), np.log(0.5), a.size))
    p = np.where(rng.random(a.size) < 0.5, p, 1 - p)
    assert _max_rel(ss.betaincinv(a, b, p), sp.betaincinv(a, b, p)) <= 1e-12
    assert ss.betaincinv(2.0, 3.0, 0.0) == 0.0 and ss.betaincinv(2.0, 3.0, 1.0) == 1.0
    assert np.isnan(ss.betaincinv(2.0, 3.0, 1.5))


@pytest.mark.parametrize("alpha", [0.05, 0.01, 1e-6])
def test_clopper_pearson_quantiles_match_scipy(alpha: float) -> None:
    k, n = [], []
    for total in [*range(1, 301), 500, 1000, 5000, 10_000, 100_000]:
        for j in range(0, total + 1, max(1, total // 40)):
            k.append(j)
            n.append(total)
    ka, na = np.array(k, dtype=float), np.array(n, dtype=float)
    low, high = ka > 0, ka < na
    assert _max_rel(ss.betaincinv(ka[low], na[low] - ka[low] + 1, alpha / 2),
                    sp.betaincinv(ka[low], na[low] - ka[low] + 1, alpha / 2)) <= 1e-12
    assert _max_rel(ss.betaincinv(ka[high] + 1, na[high] - ka[high], 1 - alpha / 2),
                    sp.betaincinv(ka[high] + 1, na[high] - ka[high], 1 - alpha / 2)) <= 1e-12


def test_fdtrc_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    d1 = rng.integers(1, 50, 6000).astype(float)
    d2 = rng.integers(1, 5000, 6000).astype(float)
    f = np.exp(rng.uniform(-8, 5, 6000))
    ref = sp.fdtrc(d1, d2, f)
    keep = ref > 1e-250
    assert _max_rel(ss.fdtrc(d1[keep], d2[keep], f[keep]), ref[keep]) <= 2e-12
    assert ss.fdtrc(3.0, 10.0, 0.0) == 1.0 and ss.fdtrc(3.0, 10.0, np.inf) == 0.0
    assert np.isnan(ss.fdtrc(3.0, 10.0, -1.0)) and np.isnan(ss.fdtrc(0.0, 10.0, 1.0))
