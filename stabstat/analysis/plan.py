"""``plan``: how many seeds per configuration, from pilot runs.

Three targets (any of them; each gives a power table and the smallest n):

* ``mean``: detect a difference in mean with power ``1 - beta`` at ``alpha`` (two-sided).
  With ``delta``, per configuration: the pilot runs against themselves shifted by ``delta``
  (the pilot's shape, failed runs included, is kept). Without, per pair of configurations:
  their observed difference. Bootstrap power (experiments drawn from the pilot runs, tested
  with ``compare``'s permutation test: exact up to 6 runs per arm, Welch's t-test -- its
  large-sample equivalent -- beyond) beside the analytic normal approximation.
* ``failure_rate``: detect a difference in failure rate with Fisher's exact test (exact power).
  With ``rate_diff``, per configuration ``p`` against ``max(p - rate_diff, 0)``; without, per
  pair, the observed rates.
* ``width``: a t interval of the mean narrower than ``width``.

The pilot's own size limits what it can say: the analytic n is also given for the ends of the
chi-square interval of the pilot's SD (``n_needed_low`` / ``n_needed_high``), and every
bootstrap power has its Monte-Carlo error.

RNG salts (``Settings.rng``): 30 bootstrap power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.levels import levels, metric_values, subset
from stabstat.analysis.results import AnalysisResult, Row, result_settings
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["DEFAULT_NS", "PlanRow", "PowerPoint", "SeedsTest", "plan", "plan_frame", "seeds_needed_test"]

#: Candidate numbers of seeds per configuration.
DEFAULT_NS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200)


@dataclass(frozen=True)
class PlanRow(Row):
    """The answer for one target and configuration (``a``) or pair (``a`` vs ``b``).

    ``n_needed``: smallest candidate n whose (bootstrap, or exact for failure rates) power
    reaches the target (None when none does); ``n_needed_normal``: the analytic n;
    ``n_needed_low`` / ``n_needed_high``: the analytic n at the ends of the pilot SD's CI."""

    target: str
    a: Any
    b: Any
    effect: float
    pilot_n: int
    sd: float
    n_needed: int | None
    power_at_n: float
    n_needed_normal: int | None
    n_needed_low: int | None
    n_needed_high: int | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "a": self.a, "b": self.b, "effect": self.effect, "pilot_n": self.pilot_n,
                "sd": self.sd, "n_needed": self.n_needed, "power_at_n": self.power_at_n,
                "n_needed_normal": self.n_needed_normal, "n_needed_low": self.n_needed_low,
                "n_needed_high": self.n_needed_high, "note": self.note}


@dataclass(frozen=True)
class PowerPoint(Row):
    """Power (or, for ``width``, the expected CI width) at n seeds per configuration."""

    target: str
    a: Any
    b: Any
    n: int
    power: float
    mc_se: float | None
    normal: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "a": self.a, "b": self.b, "n": self.n, "power": self.power,
                "mc_se": self.mc_se, "normal": self.normal}


def plan(store: Store, *, by: str | None = None, selection: Selection | None = None,
         settings: Settings | None = None, delta: float | None = None, rate_diff: float | None = None,
         width: float | None = None, alpha: float = 0.05, power: float = 0.8,
         ns: Sequence[int] = DEFAULT_NS, test: str = "welch") -> AnalysisResult:
    """Seeds needed per configuration (level of ``by``) for the targets asked (see the module).

    ``settings.resamples`` simulated experiments per candidate n (the CLI's default is 2,000).
    """
    runset = select_runs(store, [by] if by else [], selection=selection)
    return plan_frame(runset, by=runset.by[0] if by else None, settings=settings, delta=delta, rate_diff=rate_diff,
                      width=width, alpha=alpha, power=power, ns=ns, test=test)


def plan_frame(runset: RunSet, *, by: str | None, settings: Settings | None = None, delta: float | None = None,
               rate_diff: float | None = None, width: float | None = None, alpha: float = 0.05,
               power: float = 0.8, ns: Sequence[int] = DEFAULT_NS, test: str = "welch") -> AnalysisResult:
    """:func:`plan` on an already selected :class:`RunSet`."""
    cfg = settings or Settings()
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SelectionError(f"--alpha and --power must be in (0, 1), got {alpha} and {power}")
    if width is not None and width <= 0:
        raise SelectionError(f"--width must be > 0, got {width}")
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 2:
        raise SelectionError("--n: candidate numbers of seeds must be >= 2")
    frame = runset.frame
    per_level = [(lv, subset(frame, by, lv)) for lv in levels(frame, by)] if by else [("all", frame)]
    if delta is None and len(per_level) < 2 and rate_diff is None and width is None:
        raise SelectionError("nothing to plan: give --delta (a difference in mean to detect), --rate-diff, "
                             "--width, or --by with two or more configurations (their observed difference)")
    warnings = list(runset.warnings)
    rows: list[PlanRow] = []
    points: list[PowerPoint] = []
    ctx = _Ctx(cfg, alpha, power, ns, test)
    if delta is not None or len(per_level) >= 2:
        r, p = _mean_targets(per_level, delta, ctx)
        rows += r
        points += p
    if rate_diff is not None or len(per_level) >= 2:
        r, p = _rate_targets(per_level, rate_diff, ctx)
        rows += r
        points += p
    if width is not None:
        r, p = _width_targets(per_level, width, ctx)
        rows += r
        points += p
    pilot = min((int(metric_values(f).size) for _, f in per_level), default=0)
    warnings.append(f"pilot runs per configuration: {pilot}. The n needed scales with the variance, which a pilot "
                    "of that size knows only roughly: n_needed_low..n_needed_high is the analytic n at the ends "
                    f"of the {int(cfg.confidence * 100)}% interval of the pilot's SD")
    return AnalysisResult("plan", (by,) if by else (), rows, [],
                          result_settings(runset, cfg, "plan", alpha=alpha, power=power, delta=delta,
                                          rate_diff=rate_diff, width=width, candidate_n=list(ns),
                                          test="permutation test of the mean difference: exact up to "
                                               f"{S.EXACT_MAX_N} runs per arm, then "
                                               + ("Welch's t-test (its large-sample equivalent)" if test == "welch"
                                                  else "199 random permutations"),
                                          failure_test="Fisher exact (two-sided)"),
                          warnings, {"power": points})


@dataclass(frozen=True)
class _Ctx:
    cfg: Settings
    alpha: float
    power: float
    ns: Sequence[int]
    test: str


def _first_n(ns: Sequence[int], pw: np.ndarray, target: float) -> tuple[int | None, float]:
    hit = np.nonzero(pw >= target)[0]
    return (int(ns[hit[0]]), float(pw[hit[0]])) if hit.size else (None, math.nan)


def _sd_range_n(effect: float, sd: float, m: int, ctx: _Ctx) -> tuple[int | None, int | None]:
    lo, hi = S.pilot_sd_interval(sd, m, confidence=ctx.cfg.confidence)
    if not math.isfinite(lo):
        return None, None
    return (S.normal_n(effect, lo, lo, alpha=ctx.alpha, power=ctx.power),
            S.normal_n(effect, hi, hi, alpha=ctx.alpha, power=ctx.power))


def _mean_targets(per_level: Sequence[tuple[Any, pl.DataFrame]], delta: float | None, ctx: _Ctx
                  ) -> tuple[list[PlanRow], list[PowerPoint]]:
    rows, points = [], []
    if delta is not None:
        cases = [(lv, None, x, x + delta) for lv, f in per_level for x in [metric_values(f)]]
    else:
        cases = [(la, lb, metric_values(fa), metric_values(fb))
                 for (la, fa), (lb, fb) in combinations(per_level, 2)]
    for ci, (la, lb, xa, xb) in enumerate(cases):
        if xa.size < 2 or xb.size < 2:
            rows.append(PlanRow("mean", la, lb, math.nan, int(min(xa.size, xb.size)), math.nan, None, math.nan,
                                None, None, None, "fewer than 2 pilot runs with a value"))
            continue
        effect = float(xa.mean() - xb.mean()) if delta is None else -float(delta)
        sd_a, sd_b = float(xa.std(ddof=1)), float(xb.std(ddof=1))
        pw = S.bootstrap_power(xa, xb, ctx.ns, alpha=ctx.alpha, resamples=ctx.cfg.resamples, test=ctx.test,
                               rng=ctx.cfg.rng(30, ci))
        normal = S.normal_power(effect, sd_a, sd_b, ctx.ns, alpha=ctx.alpha)
        n, p_at = _first_n(ctx.ns, pw, ctx.power)
        sd = math.sqrt((sd_a**2 + sd_b**2) / 2)
        lo_n, hi_n = _sd_range_n(effect, sd, int(min(xa.size, xb.size)), ctx) if effect else (None, None)
        note = "" if n is not None else f"power {ctx.power:g} not reached by n = {ctx.ns[-1]}"
        rows.append(PlanRow("mean", la, lb, abs(effect), int(min(xa.size, xb.size)), sd, n, p_at,
                            S.normal_n(effect, sd_a, sd_b, alpha=ctx.alpha, power=ctx.power), lo_n, hi_n, note))
        points += [PowerPoint("mean", la, lb, int(m), float(p), math.sqrt(p * (1 - p) / ctx.cfg.resamples),
                              float(q)) for m, p, q in zip(ctx.ns, pw, normal, strict=True)]
    return rows, points


def _rate(f: pl.DataFrame) -> tuple[int, int]:
    known = f["failed"].drop_nulls()
    return int(known.sum()), int(known.len())


def _rate_targets(per_level: Sequence[tuple[Any, pl.DataFrame]], rate_diff: float | None, ctx: _Ctx
                  ) -> tuple[list[PlanRow], list[PowerPoint]]:
    rows, points = [], []
    rates = [(lv, *_rate(f)) for lv, f in per_level]
    if rate_diff is not None:
        cases = [(lv, None, k / n, max(k / n - rate_diff, 0.0), n) for lv, k, n in rates if n]
    else:
        cases = [(la, lb, ka / na, kb / nb, min(na, nb)) for (la, ka, na), (lb, kb, nb) in combinations(rates, 2)
                 if na and nb]
    for la, lb, pa, pb, m in cases:
        if pa == pb:
            rows.append(PlanRow("failure_rate", la, lb, 0.0, m, math.nan, None, math.nan, None, None, None,
                                "equal failure rates: no difference to detect"))
            continue
        pw = S.fisher_power(pa, pb, ctx.ns, alpha=ctx.alpha)
        n, p_at = _first_n(ctx.ns, pw, ctx.power)
        note = "" if n is not None else f"power {ctx.power:g} not reached by n = {ctx.ns[-1]}"
        rows.append(PlanRow("failure_rate", la, lb, abs(pa - pb), m, math.nan, n, p_at, None, None, None,
                            note or f"failure rates {pa:.3g} vs {pb:.3g} (exact power of Fisher's test)"))
        points += [PowerPoint("failure_rate", la, lb, int(k), float(p), None, None)
                   for k, p in zip(ctx.ns, pw, strict=True)]
    return rows, points


def _width_targets(per_level: Sequence[tuple[Any, pl.DataFrame]], width: float, ctx: _Ctx
                   ) -> tuple[list[PlanRow], list[PowerPoint]]:
    from stabstat.stats.power import t_quantile

    rows, points = [], []
    for lv, f in per_level:
        x = metric_values(f)
        if x.size < 2:
            continue
        sd = float(x.std(ddof=1))
        n, w = S.ci_width_n(sd, width, confidence=ctx.cfg.confidence)
        lo, hi = S.pilot_sd_interval(sd, int(x.size), confidence=ctx.cfg.confidence)
        n_lo = S.ci_width_n(lo, width, confidence=ctx.cfg.confidence)[0] if math.isfinite(lo) else None
        n_hi = S.ci_width_n(hi, width, confidence=ctx.cfg.confidence)[0] if math.isfinite(hi) else None
        rows.append(PlanRow("width", lv, None, width, int(x.size), sd, n, math.nan, n, n_lo, n_hi,
                            f"expected {int(ctx.cfg.confidence * 100)}% t-interval width {w:.3g} at n = {n}"
                            if n else "not reached by 10,000 runs"))
        q = 1 - (1 - ctx.cfg.confidence) / 2
        points += [PowerPoint("width", lv, None, int(m), float(2 * t_quantile(q, m - 1) * sd / math.sqrt(m)),
                              None, None) for m in ctx.ns]
    return rows, points


@dataclass(frozen=True)
class SeedsTest:
    """Is ``seeds`` runs per configuration enough to detect ``delta`` with ``power``?

    Under the normal approximation that holds exactly when the SD is at most ``sd_max``; the
    pilot's SD ``sd`` (pooled within configurations, ``df`` degrees of freedom) is tested
    against it with the chi-square test of a variance: ``p_for`` is small when the pilot shows
    the SD is below ``sd_max`` (enough seeds), ``p_against`` when above. ``n_needed`` is the
    analytic n at ``sd``, ``n_low`` / ``n_high`` at the ends of the SD's CI."""

    seeds: int
    delta: float
    sd: float
    df: int
    sd_max: float
    n_needed: int | None
    n_low: int | None
    n_high: int | None
    p_for: float
    p_against: float


def seeds_needed_test(runset: RunSet, by: str | None, *, seeds: int, delta: float, alpha: float = 0.05,
                      power: float = 0.8, confidence: float = 0.95) -> SeedsTest:
    """The chi-square test behind ``stabstat check``'s ``seeds_needed`` claims (see :class:`SeedsTest`);
    the SD is pooled over the levels of ``by`` (each configuration's runs around its own mean)."""
    from scipy.special import chdtr

    groups = [metric_values(f) for _, f in ([(lv, subset(runset.frame, by, lv)) for lv in levels(runset.frame, by)]
                                            if by else [(None, runset.frame)])]
    groups = [g for g in groups if g.size >= 2]
    df = sum(g.size - 1 for g in groups)
    if not df or delta == 0 or seeds < 2:
        raise SelectionError("seeds_needed needs >= 2 runs with a value, delta != 0 and value >= 2 seeds")
    sd = math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / df)
    lo_sd, hi_sd = 0.0, max(abs(delta), sd) * 100
    for _ in range(100):  # power at n = seeds falls as the SD grows: bisect for the largest SD that is enough
        mid = (lo_sd + hi_sd) / 2
        ok = float(S.normal_power(delta, mid, mid, seeds, alpha=alpha)) >= power
        lo_sd, hi_sd = (mid, hi_sd) if ok else (lo_sd, mid)
    sd_max = lo_sd
    stat = df * sd**2 / sd_max**2 if sd_max > 0 else math.inf
    p_for = float(chdtr(df, stat))  # P(chi2_df <= stat): small when the SD is clearly below sd_max
    lo, hi = S.pilot_sd_interval(sd, df + 1, confidence=confidence)
    return SeedsTest(seeds, delta, sd, df, sd_max, S.normal_n(delta, sd, sd, alpha=alpha, power=power),
                     S.normal_n(delta, lo, lo, alpha=alpha, power=power), S.normal_n(delta, hi, hi, alpha=alpha,
                                                                                   power=power),
                     p_for, 1.0 - p_for)

