"""Coverage of stabstat's intervals: do nominal 95% intervals contain the truth 95% of the time?

* Bootstrap CI of the mean (BCa, and percentile for contrast) by simulation, on
  - ``lognormal``: LogNormal(0, 1), true mean exp(1/2) (skewed);
  - ``failure-mixture``: 85% of runs N(0.70, 0.03) and 15% failed runs exactly at the
    majority baseline 0.527 (the fine-tuning shape), true mean 0.85 * 0.70 + 0.15 * 0.527;
  at n = 25 and 50 seeds.
* Failure-rate intervals (Wilson, Clopper-Pearson at 0 or n, as ``stats.rate_interval``)
  computed *exactly* by summing binomial probabilities over k, at n = 10/25/50 on a grid
  of p; Wald shown for contrast. Newcombe's interval for a difference, exactly, on a grid
  of (p_a, p_b); the BCa CI of a difference of means by simulation.

* Small samples (n = 3..10, :func:`small_n_table`): coverage of BCa and percentile CIs of
  the mean and of the SD on normal, lognormal and failure-mixture data: the measurement
  behind ``stabstat.stats.default_ci_method`` (which interval a statistic gets at n).

Run: ``python -m benchmarks.coverage`` (``--quick`` for fewer repetitions; ``--small-n``
for the small-sample table only). The slow test in ``tests/test_stats.py`` calls the same
functions with few repetitions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from scipy.stats import binom

from stabstat import stats

FAILED_VALUE = 0.527
TRUE_MEAN = {"lognormal": float(np.exp(0.5)), "failure-mixture": 0.85 * 0.70 + 0.15 * FAILED_VALUE,
             "normal": 0.70}
#: True SDs: lognormal sqrt((e - 1) e); the mixture's from the law of total variance.
TRUE_SD = {"lognormal": float(np.sqrt((np.e - 1.0) * np.e)),
           "failure-mixture": float(np.sqrt(0.85 * 0.03**2 + 0.85 * 0.15 * (0.70 - FAILED_VALUE) ** 2)),
           "normal": 0.03}


def _sample(dist: str, rng: np.random.Generator, reps: int, n: int) -> np.ndarray:
    if dist == "lognormal":
        return rng.lognormal(0.0, 1.0, size=(reps, n))
    if dist == "failure-mixture":
        ok = rng.normal(0.70, 0.03, size=(reps, n))
        return np.where(rng.random((reps, n)) < 0.15, FAILED_VALUE, ok)
    if dist == "normal":
        return rng.normal(0.70, 0.03, size=(reps, n))
    raise ValueError(f"unknown distribution {dist!r}")


def bca_coverage(dist: str, *, n: int, reps: int, resamples: int = 2000, seed: int = 0,
                 method: str = "bca", chunk: int = 100, statistic: str = "mean") -> float:
    """Fraction of ``reps`` simulated data sets whose CI of ``statistic`` (``mean`` or
    ``std``) contains the true value. A data set whose interval is undefined (NaN, e.g. all
    values equal) counts as a miss."""
    ss = np.random.SeedSequence(seed)
    data_rng, boot_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    hits = 0
    done = 0
    while done < reps:
        m = min(chunk, reps - done)
        x = _sample(dist, data_rng, m, n)
        res = stats.bootstrap_groups(x, statistic=statistic, method=method, resamples=resamples, rng=boot_rng)
        truth = (TRUE_MEAN if statistic == "mean" else TRUE_SD)[dist]
        hits += sum(r.ci_low <= truth <= r.ci_high for r in res)
        done += m
    return hits / reps


def wilson_coverage(n: int, ps: Sequence[float] | np.ndarray, *, wald: bool = False) -> list[float]:
    """Exact coverage of ``stats.rate_interval`` (or Wald) at each true p, for n runs."""
    ks = np.arange(n + 1)
    if wald:
        ph = ks / n
        half = 1.959963984540054 * np.sqrt(ph * (1 - ph) / n)
        lo, hi = ph - half, ph + half
    else:
        ivs = [stats.rate_interval(int(k), n) for k in ks]
        lo = np.array([r.ci_low for r in ivs])
        hi = np.array([r.ci_high for r in ivs])
    out = []
    for p in ps:
        covered = (lo <= p) & (p <= hi)
        out.append(float(binom.pmf(ks, n, p)[covered].sum()))
    return out


def newcombe_coverage(n_a: int, n_b: int, pairs: Sequence[tuple[float, float]]) -> list[float]:
    """Exact coverage of ``stats.newcombe_diff`` for the difference p_a - p_b at each pair."""
    ka, kb = np.arange(n_a + 1), np.arange(n_b + 1)
    lo = np.empty((ka.size, kb.size))
    hi = np.empty_like(lo)
    for i in ka:
        for j in kb:
            r = stats.newcombe_diff(int(i), n_a, int(j), n_b)
            lo[i, j], hi[i, j] = r.ci_low, r.ci_high
    out = []
    for pa, pb in pairs:
        prob = binom.pmf(ka, n_a, pa)[:, None] * binom.pmf(kb, n_b, pb)[None, :]
        d = pa - pb
        out.append(float(prob[(lo <= d) & (d <= hi)].sum()))
    return out


def diff_coverage(*, n: int, reps: int, resamples: int = 2000, seed: int = 0) -> float:
    """Coverage of the BCa CI of a difference of means, failure mixture vs shifted normal."""
    ss = np.random.SeedSequence(seed)
    data_rng, boot_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    truth = TRUE_MEAN["failure-mixture"] - 0.68
    hits = 0
    for _ in range(reps):
        a = _sample("failure-mixture", data_rng, 1, n)[0]
        b = data_rng.normal(0.68, 0.03, n)
        r = stats.bootstrap_diff(a, b, resamples=resamples, rng=boot_rng)
        hits += r.ci_low <= truth <= r.ci_high
    return hits / reps


SMALL_N = tuple(range(3, 11))
SMALL_N_DISTS = ("normal", "lognormal", "failure-mixture")


def small_n_table(*, reps: int, resamples: int, ns: Sequence[int] = SMALL_N,
                  dists: Sequence[str] = SMALL_N_DISTS) -> dict[tuple[str, str, int, str], float]:
    """Coverage of BCa and percentile CIs of the mean and the SD at small n.

    Returns ``{(statistic, dist, n, method): coverage}``; each cell simulates ``reps`` data
    sets (both methods see the same data: same data seed, independent bootstrap draws).
    """
    out: dict[tuple[str, str, int, str], float] = {}
    for statistic in ("mean", "std"):
        for dist in dists:
            for n in ns:
                for method in ("bca", "percentile"):
                    out[(statistic, dist, n, method)] = bca_coverage(
                        dist, n=n, reps=reps, resamples=resamples, seed=1000 + n, method=method,
                        statistic=statistic)
    return out


def print_small_n(reps: int, resamples: int) -> None:
    """Print :func:`small_n_table` as the README's table (BCa / percentile per cell)."""
    table = small_n_table(reps=reps, resamples=resamples)
    print(f"Small samples, nominal 95%: {reps} data sets per cell, {resamples} resamples; BCa / percentile")
    header = "".join(f"{n:>13}" for n in SMALL_N)
    print(f"{'statistic':<6}{'distribution':<17}{header}")
    for statistic in ("mean", "std"):
        for dist in SMALL_N_DISTS:
            cells = "".join(f"  {table[(statistic, dist, n, 'bca')]:.3f}/{table[(statistic, dist, n, 'percentile')]:.3f}"
                            for n in SMALL_N)
            print(f"{statistic:<6}{dist:<17}{cells}")


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    quick = "--quick" in args
    if "--small-n" in args:
        print_small_n(reps=400 if quick else 2000, resamples=2000)
        return
    reps = 400 if quick else 2000
    resamples = 2000 if quick else 4000
    print(f"Bootstrap CI of the mean, nominal 95%: {reps} data sets per cell, {resamples} resamples each")
    print(f"{'distribution':<18}{'n':>4}{'BCa':>8}{'percentile':>12}   (Monte-Carlo SD ~{np.sqrt(0.95 * 0.05 / reps):.3f})")
    for dist in ("lognormal", "failure-mixture"):
        for n in (25, 50):
            b = bca_coverage(dist, n=n, reps=reps, resamples=resamples, seed=n)
            p = bca_coverage(dist, n=n, reps=reps, resamples=resamples, seed=n, method="percentile")
            print(f"{dist:<18}{n:>4}{b:>8.3f}{p:>12.3f}")
    ps = np.round(np.linspace(0.02, 0.5, 25), 3)
    print("\nFailure-rate interval, nominal 95%, exact coverage over p in [0.02, 0.5] (25 points)")
    print(f"{'n':>4}{'ours min':>10}{'ours mean':>11}{'Wald min':>10}{'Wald mean':>11}")
    for n in (10, 25, 50):
        c = wilson_coverage(n, ps)
        w = wilson_coverage(n, ps, wald=True)
        print(f"{n:>4}{min(c):>10.3f}{np.mean(c):>11.3f}{min(w):>10.3f}{np.mean(w):>11.3f}")
    grid = [(pa, pb) for pa in (0.05, 0.15, 0.3, 0.5) for pb in (0.0, 0.05, 0.15, 0.3, 0.5)]
    print("\nNewcombe interval for a difference of failure rates, nominal 95%, exact coverage, 20 (p_a, p_b) pairs")
    for n in (10, 25, 50):
        c = newcombe_coverage(n, n, grid)
        print(f"  n={n:<3} per arm: min {min(c):.3f}, mean {np.mean(c):.3f}")
    d_reps = 200 if quick else 1000
    print(f"\nBCa CI of a difference of means (failure mixture vs normal), {d_reps} data sets:")
    for n in (25, 50):
        print(f"  n={n} per arm: {diff_coverage(n=n, reps=d_reps, resamples=resamples, seed=n):.3f}")
    print("\nper p (ours, n=10/25/50):")
    for p, a, b, c in zip(ps, wilson_coverage(10, ps), wilson_coverage(25, ps), wilson_coverage(50, ps), strict=True):
        print(f"  p={p:<6} {a:.3f} {b:.3f} {c:.3f}")


if __name__ == "__main__":
    main()
