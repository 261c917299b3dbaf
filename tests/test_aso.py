"""Almost stochastic order: against deepsig's ``aso`` (same samples and seeds; deepsig's grid
via ``dt``), against a slow reference of the exact integral, and its properties."""

from __future__ import annotations

import numpy as np
import pytest

from stabstat.stats.aso import aso, aso_matrix, violation_ratio


def _slow_ratio(a: np.ndarray, b: np.ndarray, grid: int = 200_000) -> float:
    """The violation ratio by brute-force midpoint quadrature of the empirical quantiles."""
    t = (np.arange(grid) + 0.5) / grid
    fa = np.sort(a)[np.clip(np.ceil(a.size * t).astype(int) - 1, 0, a.size - 1)]
    gb = np.sort(b)[np.clip(np.ceil(b.size * t).astype(int) - 1, 0, b.size - 1)]
    d = gb - fa
    return float(np.sum(np.where(d > 0, d**2, 0)) / np.sum(d**2))


@pytest.mark.parametrize(("n", "m", "shift"), [(50, 50, 0.0), (30, 45, 0.4), (7, 11, -0.3)])
def test_exact_ratio_matches_brute_force(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n + m)
    a, b = rng.normal(shift, 1, n), rng.normal(0, 1, m)
    assert violation_ratio(a, b) == pytest.approx(_slow_ratio(a, b), abs=1e-4)


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.8, -0.4])
def test_matches_deepsig(shift: float) -> None:
    deepsig = pytest.importorskip("deepsig")
    rng = np.random.default_rng(int(shift * 10) + 7)
    a, b = rng.normal(shift, 1, 50), rng.normal(0, 1, 50)
    theirs = float(deepsig.aso(a, b, seed=3, show_progress=False, num_bootstrap_iterations=1000))
    ours = aso(a, b, dt=0.005, resamples=1000, rng=3).eps_min
    assert ours == pytest.approx(theirs, abs=0.02)
    # The exact integral differs from deepsig's grid only where the lowest quantile weighs.
    assert aso(a, b, rng=3).eps_min == pytest.approx(theirs, abs=0.06)


def test_properties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1, 40), rng.normal(0, 1, 40)
    r = aso(a, b, rng=1)
    assert 0 <= r.violation_ratio <= r.eps_min <= 1 and r.eps_min < 0.2 and r.p_value < 0.05
    assert aso(b, a, rng=1).eps_min > 0.5
    assert violation_ratio(a, b) + violation_ratio(b, a) == pytest.approx(1.0)
    # Bonferroni over more comparisons only widens the bound.
    assert aso(a, b, comparisons=6, rng=1).eps_min >= r.eps_min
    assert aso(a, b, rng=1) == aso(a, b, rng=1)


def test_matrix_corrections() -> None:
    rng = np.random.default_rng(3)
    xs = [rng.normal(mu, 1, 30) for mu in (0.0, 0.5, 1.5)]
    eps_b, p_b, _ = aso_matrix(xs, correction="bonferroni", rng=2)
    eps_h, p_h, _ = aso_matrix(xs, correction="holm", rng=2)
    eps_n, p_n, _ = aso_matrix(xs, correction="none", rng=2)
    off = ~np.eye(3, dtype=bool)
    assert np.all(eps_b[off] >= eps_n[off] - 1e-12) and np.all(np.isnan(np.diag(eps_b)))
    assert np.all(p_h[off] >= p_n[off] - 1e-12) and np.all(p_b[off] >= p_h[off] - 1e-12)
    assert eps_n[2, 0] < 0.2 and eps_n[0, 2] > 0.5
