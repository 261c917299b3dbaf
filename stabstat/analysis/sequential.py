"""Anytime-valid evidence for a claim: confidence sequences over the runs in seed order.

``stabstat check --sequential`` (:func:`stabstat.claims.check` with ``sequential=True``) asks
this module for each claim's evidence. The runs of an arm are taken in seed order (the order a
sweep produces them: :func:`runner.sweep.plan` is seed-major), so re-checking after every new
batch of seeds sees the same prefix again plus the new runs, and the confidence sequence's
guarantee (valid at every n at once) covers every look.

Kinds with a confidence sequence (:data:`SEQUENTIAL_KINDS`):

* ``failure_rate``: difference of the failure rates at ``higher`` and ``lower``; the i-th runs
  (by seed) of the two levels form pair i; betting CS of the paired differences
  (:func:`stabstat.stats.betting_diff_cs`). Boundary 0.
* ``mean``: difference of the mean metric, same pairing, metric rescaled from its bounds
  (:func:`metric_bounds`: ``[-1, 1]`` for ``mcc``, ``[0, 1]`` for every other metric
  unless the claim states ``bounds``). Boundary 0.
* ``max_failure_rate``: the failure rate of the selection (:func:`stabstat.stats.rate_cs`)
  against ``value``.

p-values are the anytime-valid ones of :func:`stabstat.stats.betting_p_values` (``2 / sup K``),
their bets tuned for ``confidence``; the interval is the CS at ``confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import stats as S
from stabstat.errors import ConfigError
from stabstat.stats.sequential import paired_unit

if TYPE_CHECKING:
    import polars as pl

__all__ = ["SEQUENTIAL_KINDS", "SEQUENTIAL_RULE", "SequentialEvidence", "metric_bounds", "sequential_evidence"]

SEQUENTIAL_KINDS = ("failure_rate", "mean", "max_failure_rate")
#: What ``check --sequential`` adds to the verdict rule, in words (JSON settings).
SEQUENTIAL_RULE = ("; sequential: each claim's betting confidence sequence (Waudby-Smith & Ramdas 2023) at "
                   "alpha / claims (Bonferroni), p = 2 / max wealth x claims; valid however often it is re-run "
                   "as seeds arrive")


@dataclass(frozen=True)
class SequentialEvidence:
    """One claim's sequential evidence. ``lows``/``highs``: the running intersection after
    1..n runs (pairs, for two levels), in the claim's units; ``boundary``: the value the claim
    must exclude; ``decided_at``: the first n from which the sequence excludes it (None: not
    yet); ``p_for``/``p_against``: anytime-valid one-sided p-values (unadjusted)."""

    estimate: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_for: float
    p_against: float
    test: str
    n: dict[str, int]
    detail: str
    boundary: float
    decided_at: int | None
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    warnings: list[str] = field(default_factory=list)


def metric_bounds(metric: str | None, given: Any = None, *, where: str = "claim") -> tuple[float, float]:
    """The range a metric's values are assumed to lie in: ``given`` (a claim's ``bounds =
    [low, high]``), else ``[-1, 1]`` for MCC and ``[0, 1]`` for every other metric (accuracy,
    F1, ...: the task metrics the runner logs are all proportions)."""
    if given is not None:
        ok = (isinstance(given, Sequence) and not isinstance(given, str) and len(given) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given)
              and float(given[0]) < float(given[1]))
        if not ok:
            raise ConfigError(f"{where}: bounds must be [low, high] with low < high, got {given!r}")
        return float(given[0]), float(given[1])
    return (-1.0, 1.0) if (metric or "").lower() == "mcc" else (0.0, 1.0)


def _ordered(frame: pl.DataFrame, column: str, *, successful_only: bool = False) -> np.ndarray:
    """``column`` of the runs in seed order (run_id breaks ties; null/non-finite values left out)."""
    import polars as pl

    f = frame.filter(pl.col(column).is_not_null())
    if successful_only:
        f = f.filter(pl.col("failed").is_not_null() & pl.col("failed").not_())
    keys = [k for k in ("seed", "run_id") if k in f.columns]
    f = f.sort(keys) if keys else f
    v = f[column].to_numpy().astype(np.float64)
    return v[np.isfinite(v)]


def sequential_evidence(claim: Mapping[str, Any], hi: pl.DataFrame, lo: pl.DataFrame | None, *,
                        confidence: float, metric: str | None, labels: tuple[str, str] = ("a", "b"),
                        where: str = "claim") -> SequentialEvidence:
    """The confidence-sequence evidence of one claim (see the module docstring).

    ``hi``/``lo``: the runs at ``higher`` and ``lower`` (``lo`` None for ``max_failure_rate``,
    whose runs are ``hi``); ``confidence``: 1 - the per-claim level (Bonferroni across the
    file's claims is the caller's); ``labels``: how the two levels are named in ``n``.
    """
    kind = claim["kind"]
    if kind not in SEQUENTIAL_KINDS:
        raise ConfigError(f"{where}: kind {kind!r} has no confidence sequence; --sequential supports "
                          f"{', '.join(SEQUENTIAL_KINDS)} (check this claim without --sequential)")
    warnings: list[str] = []
    if "seed" not in hi.columns:
        warnings.append("no seed factor: runs taken in run_id order")
    if kind == "max_failure_rate":
        x = _ordered(hi, "failed")
        if x.size == 0:
            return _empty(claim, {"all": 0}, warnings)
        value = float(claim["value"])
        cs = S.rate_cs(x, confidence=confidence)
        p_up, p_down = S.betting_p_values(x, value, confidence=confidence)
        return _evidence(cs, float(p_down[-1]), float(p_up[-1]), value, {"all": int(x.size)},
                         f"{int(x.sum())}/{x.size} failed; claim: failure rate < {value:g}", warnings)
    assert lo is not None
    if kind == "failure_rate":
        a, b, bounds, what = _ordered(hi, "failed"), _ordered(lo, "failed"), (0.0, 1.0), "failure rate"
    else:
        succ = bool(claim.get("successful_only", False))
        bounds = metric_bounds(metric, claim.get("bounds"), where=where)
        a, b = _ordered(hi, "value", successful_only=succ), _ordered(lo, "value", successful_only=succ)
        what = f"mean {metric or 'metric'} in [{bounds[0]:g}, {bounds[1]:g}]"
    sizes = {labels[0]: int(a.size), labels[1]: int(b.size)}
    if min(a.size, b.size) == 0:
        return _empty(claim, sizes, warnings)
    try:
        cs = S.betting_diff_cs(a, b, bounds=bounds, confidence=confidence)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (the claim's bounds = [low, high])") from None
    d = paired_unit(a, b, bounds)
    p_up, p_down = S.betting_p_values(d, 0.5, confidence=confidence)
    if a.size != b.size:
        warnings.append(f"{abs(a.size - b.size)} run(s) of the larger level wait for a partner (pairs in seed order)")
    return _evidence(cs, float(p_up[-1]), float(p_down[-1]), 0.0, sizes,
                     f"{what} difference {labels[0]} - {labels[1]} over {cs.n} pairs in seed order", warnings)


def _evidence(cs: S.ConfidenceSequence, p_for: float, p_against: float, boundary: float, n: dict[str, int],
              detail: str, warnings: list[str]) -> SequentialEvidence:
    return SequentialEvidence(cs.estimate, cs.ci_low, cs.ci_high,
                              f"{cs.method}, {cs.confidence:.4g} time-uniform", p_for, p_against,
                              "anytime-valid betting p (2 / max wealth)", n, detail, boundary,
                              cs.excludes_from(boundary), cs.lows, cs.highs, warnings + list(cs.warnings))


def _empty(claim: Mapping[str, Any], n: dict[str, int], warnings: list[str]) -> SequentialEvidence:
    return SequentialEvidence(math.nan, math.nan, math.nan, "none", 1.0, 1.0, "none", n,
                              f"{claim['kind']}: no runs yet", 0.0, None, (), (), warnings + ["no runs in a group"])
