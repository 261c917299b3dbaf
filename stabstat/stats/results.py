"""Result types of the statistics package: small frozen dataclasses with ``to_dict()``.

Each carries its provenance (method, resamples, seed, confidence, n) so a number can be
reported with how it was obtained. Pure data: no numpy, nothing of the project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with a bootstrap confidence interval.

    ``n`` is the sample size (an int) or, for two-sample and stratified statistics, a
    tuple of sizes. ``method`` is the interval actually used: ``bca``, ``percentile``, or
    ``percentile`` with a warning when BCa was undefined for these data.
    ``seed`` is the int seed given, or ``None`` when a Generator was passed.
    """

    estimate: float
    ci_low: float
    ci_high: float
    statistic: str
    method: str
    resamples: int
    seed: int | None
    confidence: float
    n: int | tuple[int, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = list(self.n) if isinstance(self.n, tuple) else self.n
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class RateResult:
    """A proportion ``k / n`` with its interval (``wilson``, or ``clopper-pearson`` at 0 or n)."""

    k: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    method: str
    confidence: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class RateDiffResult:
    """Difference of two proportions ``rate_a - rate_b`` with Newcombe's hybrid score
    interval and a two-sided Fisher exact p-value."""

    k_a: int
    n_a: int
    k_b: int
    n_b: int
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    test: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TestResult:
    """A hypothesis test: its statistic and p-value (``df`` where it has degrees of freedom)."""

    name: str
    statistic: float
    p_value: float
    n: tuple[int, ...]
    df: tuple[float, ...] | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = list(self.n)
        d["df"] = None if self.df is None else list(self.df)
        d["warnings"] = list(self.warnings)
        return d


@dataclass(frozen=True)
class TrendResult:
    """Logistic-regression coefficient of failure on one (possibly transformed) factor.

    ``odds_ratio`` is per unit of the transformed factor: per doubling when
    ``transform == 'log2'``. When the data are separated (a level boundary splits
    failures from successes) the maximum-likelihood estimate does not exist: then
    ``separation`` is True, estimates are NaN and ``levels`` (per-level Wilson
    intervals) carry the evidence.
    """

    factor: str
    transform: str
    coef: float
    se: float
    odds_ratio: float
    or_ci_low: float
    or_ci_high: float
    p_value: float
    n: int
    n_failed: int
    separation: bool
    confidence: float
    adjusted_for: tuple[str, ...] = ()
    levels: tuple[tuple[Any, RateResult], ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "transform": self.transform,
            "coef": self.coef,
            "se": self.se,
            "odds_ratio": self.odds_ratio,
            "or_ci_low": self.or_ci_low,
            "or_ci_high": self.or_ci_high,
            "p_value": self.p_value,
            "n": self.n,
            "n_failed": self.n_failed,
            "separation": self.separation,
            "confidence": self.confidence,
            "adjusted_for": list(self.adjusted_for),
            "levels": [{"level": lv, **r.to_dict()} for lv, r in self.levels],
            "warnings": list(self.warnings),
        }
