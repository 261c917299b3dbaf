"""How often would the demo decide its claims? Simulated repeats of the demo from runs already made.

    stabstat ingest examples/recorded/runs --db recorded.duckdb
    python examples/demo/repeat_rate.py --db recorded.duckdb                  # the demo's seeds
    python examples/demo/repeat_rate.py --db recorded.duckdb --seeds 6 --seeds 10 --seeds 14

A repeat of the demo with another seed range is a fresh sample of runs from each arm. This script
draws ``--repeats`` such samples of ``--seeds`` runs per level from the runs in the database: per
repeat and level a failure probability from its Jeffreys posterior given the recorded failures
(``--plug-in``: the observed rate itself), a failed flag per run, and a final dev score resampled
from the recorded runs with the same outcome. It evaluates every claim of the claims file the way
``stabstat check`` does (the same tests, the same Holm adjustment across the
claims, the same alpha) and prints, per claim, the share of repeats ending PASS / FAIL /
INCONCLUSIVE. Below that, the headline failure-rate claim is computed exactly (binomial
enumeration, no resampling) at the observed failure rate of the failing arm and at the ends of
its Wilson interval, with the Bonferroni bound alpha/m (Holm's strictest threshold): how much of
the answer depends on the failure rate being estimated from few runs.

Claim kinds simulated: ``failure_rate`` (Fisher exact, one-sided), ``std`` (Brown-Forsythe,
one-sided by the direction of the SD ratio), ``max_failure_rate`` (exact binomial, one-sided) and
``mean`` / ``median`` (permutation test, one-sided, paired by seed as ``check`` pairs the demo's
arms, which share their seeds: the i-th draws of the two levels form a pair; ``--resamples``
permutations); others are refused with a message.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIMULATED = ("failure_rate", "std", "max_failure_rate", "mean", "median")


@dataclass(frozen=True)
class Arm:
    """The recorded runs of one level: ``failed`` (n,) bool and ``value`` (n,) final dev score."""

    failed: np.ndarray
    value: np.ndarray


def _label(x: Any) -> str:
    """A factor level as ``stabstat check`` spells it (TOML ``true`` -> ``"true"``)."""
    return str(x).lower() if isinstance(x, bool) else str(x)


def load_arms(db: Path, factor: str, filters: Sequence[str] = ()) -> dict[str, Arm]:
    """Per level of ``factor``: the runs' failed flags and final scores (the analysis' selection,
    narrowed by ``filters``, ``key=value`` strings as ``--filter`` of the CLI)."""
    from stabstat.analysis import Selection, select_runs
    from stabstat.store import Store

    with Store.open(db) as store:
        runset = select_runs(store, [factor], selection=Selection(filters=tuple(filters)))
    frame = runset.frame.filter(runset.frame["failed"].is_not_null())
    col = runset.by[0]
    arms: dict[str, Arm] = {}
    for level in frame[col].unique().sort().to_list():
        sub = frame.filter(frame[col] == level).sort("seed")  # same seed order in every level: pairs
        arms[_label(level)] = Arm(sub["failed"].to_numpy().astype(bool), sub["value"].to_numpy().astype(float))
    return arms


def claim_pvalues(claim: Mapping[str, Any], sample: Mapping[str, Arm], resamples: int = 2000,
                  rng: np.random.Generator | None = None) -> tuple[float, float]:
    """(p for, p against) of one claim on one simulated sample, as ``stabstat check`` computes them."""
    from scipy.stats import binomtest

    from stabstat import stats as S

    kind = claim["kind"]
    if kind == "max_failure_rate":
        filt = dict(claim.get("filter") or {})
        arm = sample[_label(next(iter(filt.values())))] if filt else _pooled(sample)
        k, n, limit = int(arm.failed.sum()), arm.failed.size, float(claim["value"])
        return (float(binomtest(k, n, limit, alternative="less").pvalue),
                float(binomtest(k, n, limit, alternative="greater").pvalue))
    hi, lo = sample[_label(claim["higher"])], sample[_label(claim["lower"])]
    if kind == "failure_rate":
        ka, na, kb, nb = int(hi.failed.sum()), hi.failed.size, int(lo.failed.sum()), lo.failed.size
        return (S.fisher_exact(ka, na, kb, nb, alternative="greater"),
                S.fisher_exact(ka, na, kb, nb, alternative="less"))
    if kind in ("mean", "median"):
        paired = hi.value.size == lo.value.size
        gen = rng if rng is not None else np.random.default_rng(0)

        def perm(alternative: str) -> float:
            return S.permutation_test(hi.value, lo.value, statistic=kind, paired=paired, alternative=alternative,
                                      resamples=resamples, rng=gen).p_value

        return perm("greater"), perm("less")
    # std: Brown-Forsythe's two-sided p halved toward the observed direction of the SD ratio.
    sd_a, sd_b = np.std(hi.value, ddof=1), np.std(lo.value, ddof=1)
    p = S.brown_forsythe(hi.value, lo.value).p_value
    if not math.isfinite(p):
        return math.nan, math.nan
    up = (sd_a / sd_b > 1) if sd_b > 0 else sd_a > 0
    return (p / 2, 1 - p / 2) if up else (1 - p / 2, p / 2)


def _pooled(sample: Mapping[str, Arm]) -> Arm:
    return Arm(np.concatenate([a.failed for a in sample.values()]), np.concatenate([a.value for a in sample.values()]))


def verdicts(claims: Sequence[Mapping[str, Any]], sample: Mapping[str, Arm], alpha: float,
             correction: str, resamples: int = 2000, rng: np.random.Generator | None = None) -> list[str]:
    """The verdict of every claim on one sample (the adjustment across the claims as in check)."""
    from stabstat import stats as S

    ps = [claim_pvalues(c, sample, resamples, rng) for c in claims]
    # A NaN p (no test possible) is never a decision: as check, it adjusts to NaN.
    adj_for = S.adjust_pvalues([p for p, _ in ps], correction)
    adj_against = S.adjust_pvalues([q for _, q in ps], correction)
    return ["PASS" if pf < alpha else "FAIL" if pa < alpha else "INCONCLUSIVE"
            for pf, pa in zip(adj_for, adj_against, strict=True)]


def simulate(claims: Sequence[Mapping[str, Any]], arms: Mapping[str, Arm], seeds: int, repeats: int,
             alpha: float, correction: str, rng: np.random.Generator, resamples: int = 2000,
             plug_in: bool = False) -> np.ndarray:
    """(repeats, claims) array of verdict strings, one row per simulated repeat of the demo.

    Each repeat draws, per level, a failure probability ``q`` from the Jeffreys posterior
    Beta(k + 1/2, n - k + 1/2) of that level's k failed out of n recorded runs (``plug_in``:
    ``q = k / n``), then ``seeds`` runs: each fails with probability ``q`` and takes the final
    score of a recorded run of the same outcome (of that level, else of any level). The
    posterior draw is what keeps 0 of 12 recorded failures from promising 0 failures forever.
    """
    failed_all = np.concatenate([a.failed for a in arms.values()])
    value_all = np.concatenate([a.value for a in arms.values()])
    pools = {level: {o: (arm.value[arm.failed == o] if (arm.failed == o).any() else value_all[failed_all == o])
                     for o in (False, True)} for level, arm in arms.items()}
    counts = {level: (int(arm.failed.sum()), arm.failed.size) for level, arm in arms.items()}
    out = np.empty((repeats, len(claims)), dtype=object)
    for r in range(repeats):
        sample = {}
        for level, (k, n) in counts.items():
            q = k / n if plug_in else rng.beta(k + 0.5, n - k + 0.5)
            failed = rng.random(seeds) < q
            value = np.empty(seeds)
            for o in (False, True):
                pool = pools[level][o]
                m = failed == o
                if m.any():
                    value[m] = pool[rng.integers(0, pool.size, size=int(m.sum()))]
            sample[level] = Arm(failed, value)
        out[r] = verdicts(claims, sample, alpha, correction, resamples, rng)
    return out


def exact_headline(p_fail: float, p_other: float, seeds: int, threshold: float) -> float:
    """P(one-sided Fisher p < ``threshold``) for ``seeds`` runs per arm failing independently
    with probabilities ``p_fail`` and ``p_other`` (exact: a sum over both binomials)."""
    from scipy.stats import binom

    from stabstat import stats as S

    total = 0.0
    for ka in range(seeds + 1):
        for kb in range(seeds + 1):
            w = binom.pmf(ka, seeds, p_fail) * binom.pmf(kb, seeds, p_other)
            if w > 0 and S.fisher_exact(ka, seeds, kb, seeds, alternative="greater") < threshold:
                total += w
    return float(total)


def _sweep_seeds(sweep: Path) -> int:
    seeds = tomllib.loads(sweep.read_text())["seeds"]
    return seeds if isinstance(seeds, int) else len(seeds)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="a stabstat database with runs of the demo's design")
    ap.add_argument("--claims", type=Path, default=HERE / "claims.toml", help="claims file (default: the demo's)")
    ap.add_argument("--seeds", type=int, action="append",
                    help="runs per level in one repeat (repeatable; default: the demo sweep's seeds)")
    ap.add_argument("--repeats", type=int, default=10_000, help="simulated repeats (default 10,000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    ap.add_argument("--resamples", type=int, default=2000,
                    help="permutations per mean/median test in each repeat (default 2,000)")
    ap.add_argument("--plug-in", action="store_true",
                    help="use the observed failure rates as they are (no posterior draw): optimistic")
    ap.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="use only these runs of the database (repeatable), e.g. --filter lr=0.0002")
    args = ap.parse_args(argv)

    spec = tomllib.loads(args.claims.read_text())
    claims = spec["claims"]
    defaults = spec.get("defaults", {})
    alpha, correction = float(defaults.get("alpha", 0.05)), str(defaults.get("correction", "holm"))
    bad = [c.get("name", c["kind"]) for c in claims if c["kind"] not in SIMULATED]
    if bad:
        print(f"repeat_rate.py: {args.claims}: cannot simulate claim(s) {', '.join(map(repr, bad))} "
              f"(kinds simulated: {', '.join(SIMULATED)})", file=sys.stderr)
        return 2
    factors = {c["factor"] for c in claims if "factor" in c} | {k for c in claims for k in (c.get("filter") or {})}
    if len(factors) != 1:
        print(f"repeat_rate.py: the claims must use one factor; found {sorted(factors)}", file=sys.stderr)
        return 2
    factor = factors.pop()
    arms = load_arms(args.db, factor, args.filter)
    for level, arm in arms.items():
        print(f"{factor}={level}: {int(arm.failed.sum())}/{arm.failed.size} recorded runs failed")
    seeds_list = args.seeds or [_sweep_seeds(HERE / "sweep.toml")]
    rng = np.random.default_rng(args.seed)
    for seeds in seeds_list:
        v = simulate(claims, arms, seeds, args.repeats, alpha, correction, rng, args.resamples,
                     plug_in=args.plug_in)
        how = "observed failure rates" if args.plug_in else "failure rates drawn from their Jeffreys posteriors"
        print(f"\n{seeds} seeds per level, {args.repeats:,} simulated repeats ({how}; {correction}, alpha {alpha:g}):")
        for j, c in enumerate(claims):
            share = {k: float(np.mean(v[:, j] == k)) for k in ("PASS", "FAIL", "INCONCLUSIVE")}
            print(f"  {share['PASS']:6.1%} PASS  {share['FAIL']:5.1%} FAIL  {share['INCONCLUSIVE']:6.1%} inconclusive"
                  f"  {c.get('name', c['kind'])}")
    head = next((c for c in claims if c["kind"] == "failure_rate"), None)
    if head is not None:
        from stabstat import stats as S

        fa, fb = arms[_label(head["higher"])].failed, arms[_label(head["lower"])].failed
        ci = S.rate_interval(int(fa.sum()), fa.size)
        p_other = float(fb.mean())
        threshold = alpha / len(claims) if correction != "none" else alpha
        print(f"\nHeadline claim, exact, at threshold alpha/m = {threshold:.4g} (Holm's strictest): P(PASS) with "
              f"failure rates {factor}={_label(head['higher'])} p and {factor}={_label(head['lower'])} {p_other:.2f}")
        for seeds in seeds_list:
            cells = [f"p={p:.2f}: {exact_headline(p, p_other, seeds, threshold):.1%}"
                     for p in (ci.ci_low, ci.rate, ci.ci_high)]
            print(f"  {seeds} seeds: " + ", ".join(cells) + f"  (p: Wilson {ci.ci_low:.2f}-{ci.ci_high:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
