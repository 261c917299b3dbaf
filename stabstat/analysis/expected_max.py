"""``expected-max``: the expected best dev score among k runs, k = 1..n, per configuration.

Per level of ``by``: :func:`stabstat.stats.expected_max_curve` over the runs with a value
(failed runs included: they are draws too, which is what makes the curve honest), with the
unbiased estimator (Tang et al. 2020) by default or Dodge et al. (2019)'s plug-in, and a
percentile bootstrap band (runs resampled; at most :data:`BAND_RESAMPLES`), at every k up to
50 runs and at about 50 log-spaced k beyond (:func:`k_grid`). With a cost per run (``final_step x batch_size``
when both are known), the expected maximum within compute budgets: ``k = floor(budget /
mean cost)`` runs of each configuration fit (Dodge et al. 2019 plot the same against budget).

RNG salts (``Settings.rng``): 40 bands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.analysis.levels import levels, metric_values, subset
from stabstat.analysis.results import AnalysisResult, Row, result_settings
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError
from stabstat.stats.expected_max import ESTIMATORS

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["BAND_RESAMPLES", "MAX_POINTS", "BudgetPoint", "ExpectedMaxGroup", "ExpectedMaxPoint", "expected_max",
           "expected_max_frame", "k_grid"]

#: The curve has every k up to this many runs, then about this many k spaced evenly on a log scale.
MAX_POINTS = 50
#: Bands take at most this many resamples (each costs one pass over n x resamples per k).
BAND_RESAMPLES = 2000


def k_grid(n: int, max_points: int = MAX_POINTS) -> list[int]:
    """k = 1..n when n <= ``max_points``; else 1..10 and log-spaced k up to n (n included)."""
    if n <= max_points:
        return list(range(1, n + 1))
    spaced = np.unique(np.round(np.geomspace(10, n, max_points - 10)).astype(int))
    return sorted({*range(1, 11), *spaced.tolist(), n})


@dataclass(frozen=True)
class ExpectedMaxGroup(Row):
    """One configuration: runs, best observed value, expected max of 1 and of all n runs,
    and the mean cost per run (``final_step x batch_size``; NaN when unknown)."""

    key: Mapping[str, Any]
    n_runs: int
    best: float
    expected_max_1: float
    expected_max_n: float
    cost_per_run: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "n_runs": self.n_runs, "best": self.best, "expected_max_1": self.expected_max_1,
                "expected_max_n": self.expected_max_n, "cost_per_run": self.cost_per_run}


@dataclass(frozen=True)
class ExpectedMaxPoint(Row):
    """Expected maximum of k runs of a configuration with its bootstrap band."""

    key: Mapping[str, Any]
    k: int
    estimate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "k": self.k, "expected_max": self.estimate, "ci_low": self.ci_low,
                "ci_high": self.ci_high}


@dataclass(frozen=True)
class BudgetPoint(Row):
    """Expected maximum within a compute budget (``k`` runs fit; NaN when k is 0 or above n)."""

    key: Mapping[str, Any]
    budget: float
    k: int
    estimate: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "budget": self.budget, "k": self.k, "expected_max": self.estimate}


def expected_max(store: Store, *, by: str | None = None, selection: Selection | None = None,
                 settings: Settings | None = None, estimator: str = "unbiased",
                 budgets: Sequence[float] | None = None) -> AnalysisResult:
    """Expected maximum of k runs per configuration (level of ``by``), k = 1..n, with bands;
    and within compute ``budgets`` (default: 1..n x the cheapest configuration's cost)."""
    extra = [c for c in ("batch_size",) if c in store.factors()]
    runset = select_runs(store, [by] if by else [], selection=selection, extra=extra)
    return expected_max_frame(runset, by=runset.by[0] if by else None, settings=settings, estimator=estimator,
                              budgets=budgets)


def expected_max_frame(runset: RunSet, *, by: str | None, settings: Settings | None = None,
                       estimator: str = "unbiased", budgets: Sequence[float] | None = None) -> AnalysisResult:
    """:func:`expected_max` on an already selected :class:`RunSet`."""
    cfg = settings or Settings()
    if estimator not in ESTIMATORS:
        raise SelectionError(f"--estimator {estimator!r}: choose {' or '.join(ESTIMATORS)}")
    frame = runset.frame
    warnings = list(runset.warnings)
    groups: list[ExpectedMaxGroup] = []
    points: list[ExpectedMaxPoint] = []
    per_level = [(lv, subset(frame, by, lv)) for lv in levels(frame, by)] if by else [(None, frame)]
    costs: list[tuple[Mapping[str, Any], np.ndarray, np.ndarray]] = []
    higher = bool(runset.settings.get("higher_is_better", True))
    for gi, (lv, f) in enumerate(per_level):
        key = {by: lv} if by else {}
        x = metric_values(f) if higher else -metric_values(f)
        if x.size == 0:
            warnings.append(f"{by}={lv}: no run with a value" if by else "no run with a value")
            continue
        res = S.expected_max_curve(x, k=k_grid(int(x.size)), estimator=estimator,
                                   resamples=min(cfg.resamples, BAND_RESAMPLES), confidence=cfg.confidence,
                                   rng=cfg.rng(40, gi))
        sign = 1.0 if higher else -1.0
        est, lo, hi = sign * res.estimate, sign * (res.ci_low if higher else res.ci_high), \
            sign * (res.ci_high if higher else res.ci_low)
        cost = _costs(f)
        groups.append(ExpectedMaxGroup(key, int(x.size), float(sign * x.max()), float(est[0]), float(est[-1]),
                                       float(cost.mean()) if cost.size == x.size else math.nan))
        points += [ExpectedMaxPoint(key, int(k), float(e), float(a), float(b))
                   for k, e, a, b in zip(res.k, est, lo, hi, strict=True)]
        if cost.size == x.size:
            costs.append((key, x, cost))
        if x.size < 5:
            warnings.append(f"{by}={lv}: {x.size} runs: the curve stops at k = {x.size}" if by
                            else f"{x.size} runs: the curve stops at k = {x.size}")
    budget_rows = _budgets(costs, budgets, estimator, higher)
    if not budget_rows and any(g.cost_per_run != g.cost_per_run for g in groups):
        warnings.append("no cost per run (needs final_step and batch_size): no expected max within a budget")
    if not higher:
        warnings.append("lower is better for this metric: the expected *minimum* of k runs is reported")
    return AnalysisResult("expected_max", (by,) if by else (), groups, [],
                          result_settings(runset, cfg, "expected_max", estimator=estimator,
                                          estimator_reference="Tang et al. 2020 (unbiased)" if estimator == "unbiased"
                                          else "Dodge et al. 2019 (plug-in)",
                                          band="percentile bootstrap, runs resampled",
                                          band_resamples=min(cfg.resamples, BAND_RESAMPLES),
                                          k="every k up to 50 runs, then 1..10 and about 40 log-spaced k",
                                          cost="final_step x batch_size"),
                          warnings, {"curve": points, "budget": budget_rows})


def _costs(f: pl.DataFrame) -> np.ndarray:
    """Cost of each run with a value (``final_step x batch_size``); empty when unknown."""
    import polars as pl

    if "batch_size" not in f.columns:
        return np.empty(0)
    ok = f.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
    c = (ok["final_step"].cast(pl.Float64) * ok["batch_size"].cast(pl.Float64)).to_numpy()
    return c if c.size and np.all(np.isfinite(c)) and np.all(c > 0) else np.empty(0)


def _budgets(costs: Sequence[tuple[Mapping[str, Any], np.ndarray, np.ndarray]], budgets: Sequence[float] | None,
             estimator: str, higher: bool) -> list[BudgetPoint]:
    if not costs:
        return []
    if budgets is None:
        cheapest = min(float(c.mean()) for _, _, c in costs)
        most = max(x.size for _, x, _ in costs)
        budgets = [cheapest * k for k in range(1, most + 1)]
    out = []
    for key, x, c in costs:
        ks, est = S.expected_max_budget(x, c, budgets, estimator=estimator)
        out += [BudgetPoint(key, float(b), int(k), float(e if higher else -e))
                for b, k, e in zip(budgets, ks, est, strict=True)]
    return out
