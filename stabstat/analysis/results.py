"""Typed results of the analyses: one frozen dataclass per kind of row, and the container.

Every row class is a read-only :class:`~collections.abc.Mapping` over its ``to_dict()``
(``row["n_runs"]`` and ``{**row}`` keep working for code written against the plain dicts:
the Python API's users and the tests index rows by key). The project's own code (the CLI,
the report) reads the attributes (``row.n_runs``). ``to_dict()`` fixes the JSON of
``--format json`` and of the report: key names, their order and the values are part of the
interface, so each ``to_dict`` spells them out once, here.

A row that belongs to a level of the grouping factor(s) carries ``key``: factor name ->
level (``{"bias_correction": False}``; empty when the analysis is not split), which comes
first in its dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import polars as pl

    from stabstat import stats as S
    from stabstat.analysis.selection import RunSet, Settings

__all__ = [
    "AnalysisResult", "BrownForsythe", "CollapseVsFailure", "CompareGroup", "Correlation", "FailureCount",
    "FailureRateDifference", "FailureRateGroup", "GradientGroup", "GradientRun", "Interval", "LayerRatio",
    "Log10RatioMedianDifference", "LogisticTrend", "MeanDifference", "OlsSlope", "ProbabilityOfImprovement",
    "Row", "SdRatio", "Stratified", "VarianceBin", "VarianceFit", "VarianceGroup", "result_settings",
    "with_adjusted",
]


class Row(Mapping[str, Any]):
    """Base of every result row: a read-only mapping over :meth:`to_dict`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval (bounds NaN when not computable)."""

    estimate: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, r: S.BootstrapResult) -> Interval:
        return cls(r.estimate, r.ci_low, r.ci_high)

    def fields(self, prefix: str) -> dict[str, Any]:
        """``{prefix, prefix_ci_low, prefix_ci_high}``, the flat spelling of the JSON."""
        return {prefix: self.estimate, f"{prefix}_ci_low": self.ci_low, f"{prefix}_ci_high": self.ci_high}


@dataclass(frozen=True)
class FailureCount:
    """Failures of a group with the interval of the rate. ``n_failed`` and ``ci_method`` are
    None when no run of the group has a known failure status (no baseline): unknown, not 0."""

    n_failed: int | None
    rate: float
    ci_low: float
    ci_high: float
    ci_method: str | None

    @classmethod
    def of(cls, r: S.RateResult) -> FailureCount:
        return cls(r.k if r.n else None, r.rate, r.ci_low, r.ci_high, r.method if r.n else None)

    def to_dict(self) -> dict[str, Any]:
        return {"n_failed": self.n_failed, "failure_rate": self.rate, "failure_ci_low": self.ci_low,
                "failure_ci_high": self.ci_high, "failure_ci_method": self.ci_method}


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Stratified:
    """Mean and IQM of a level with a bootstrap stratified by ``compare``'s ``stratify``."""

    mean: Interval
    iqm: Interval
    n_strata: int


@dataclass(frozen=True)
class CompareGroup(Row):
    """One level of ``compare``: failures, the metric's statistics with CIs (all runs with
    a value), mean and SD of the successful runs (NaN when too few)."""

    key: Mapping[str, Any]
    n_runs: int
    n_valid: int
    failures: FailureCount
    mean: Interval
    std: Interval
    median: Interval
    iqm: Interval
    max: Interval
    stratified: Stratified | None
    mean_successful: float
    std_successful: float
    warnings: tuple[str, ...] = ()

    @property
    def level(self) -> Any:
        """The level of the (single) compared factor."""
        return next(iter(self.key.values()))

    def to_dict(self) -> dict[str, Any]:
        d = {**self.key, "n_runs": self.n_runs, "n_valid": self.n_valid, **self.failures.to_dict(),
             "mean": self.mean.estimate, "ci_low": self.mean.ci_low, "ci_high": self.mean.ci_high,
             **self.std.fields("std"), **self.median.fields("median"), **self.iqm.fields("iqm"),
             **self.max.fields("max")}
        if self.stratified is not None:
            d.update({**self.stratified.mean.fields("mean_stratified"),
                      **self.stratified.iqm.fields("iqm_stratified"), "n_strata": self.stratified.n_strata})
        d.update({"mean_successful": self.mean_successful, "std_successful": self.std_successful,
                  "warnings": list(self.warnings)})
        return d


@dataclass(frozen=True)
class MeanDifference(Row):
    """Mean of level ``a`` minus mean of ``b``: bootstrap CI, permutation p (Holm-adjusted
    over the pairs: ``p_adjusted`` / ``correction``, set by :func:`with_adjusted`)."""

    a: Any
    b: Any
    diff: Interval
    ci_method: str
    paired: bool
    n_a: int
    n_b: int
    p_value: float
    p_method: str
    p_adjusted: float | None = None
    correction: str | None = None

    test = "mean_difference"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "a": self.a, "b": self.b, "estimate": self.diff.estimate,
                "ci_low": self.diff.ci_low, "ci_high": self.diff.ci_high, "ci_method": self.ci_method,
                "paired": self.paired, "n_a": self.n_a, "n_b": self.n_b, "p_value": self.p_value,
                "p_method": self.p_method, **_adjusted(self.p_adjusted, self.correction)}


@dataclass(frozen=True)
class ProbabilityOfImprovement(Row):
    """P(a run of level ``a`` beats one of ``b``) with a bootstrap CI."""

    a: Any
    b: Any
    poi: Interval
    ci_method: str

    test = "probability_of_improvement"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "a": self.a, "b": self.b, "estimate": self.poi.estimate,
                "ci_low": self.poi.ci_low, "ci_high": self.poi.ci_high, "ci_method": self.ci_method}


@dataclass(frozen=True)
class FailureRateDifference(Row):
    """Failure rate of ``a`` minus that of ``b``: Newcombe interval, Fisher exact p."""

    a: Any
    b: Any
    diff: Interval
    n_a: int
    n_b: int
    p_value: float
    p_adjusted: float | None = None
    correction: str | None = None

    test = "failure_rate_difference"
    ci_method = "newcombe"
    p_method = "fisher exact"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "a": self.a, "b": self.b, "estimate": self.diff.estimate,
                "ci_low": self.diff.ci_low, "ci_high": self.diff.ci_high, "ci_method": self.ci_method,
                "n_a": self.n_a, "n_b": self.n_b, "p_value": self.p_value, "p_method": self.p_method,
                **_adjusted(self.p_adjusted, self.correction)}


@dataclass(frozen=True)
class SdRatio(Row):
    """SD of ``a`` over SD of ``b`` with a bootstrap CI; ``runs``: ``all`` or ``successful``."""

    runs: str
    a: Any
    b: Any
    ratio: Interval
    ci_method: str
    n_a: int
    n_b: int

    test = "sd_ratio"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "runs": self.runs, "a": self.a, "b": self.b, "estimate": self.ratio.estimate,
                "ci_low": self.ratio.ci_low, "ci_high": self.ratio.ci_high, "ci_method": self.ci_method,
                "n_a": self.n_a, "n_b": self.n_b}


@dataclass(frozen=True)
class BrownForsythe(Row):
    """Brown-Forsythe test of equal spread over all levels; ``runs``: ``all`` or ``successful``."""

    runs: str
    statistic: float
    p_value: float
    df: tuple[float, ...] | None
    n: tuple[int, ...]
    warnings: tuple[str, ...] = ()

    test = "brown_forsythe"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "runs": self.runs, "statistic": self.statistic, "p_value": self.p_value,
                "df": list(self.df) if self.df else None, "n": list(self.n), "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- failure rate


@dataclass(frozen=True)
class FailureRateGroup(Row):
    """One level (one factor) or cell (two factors) of ``failure_rate``."""

    key: Mapping[str, Any]
    n_runs: int
    failures: FailureCount
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "n_runs": self.n_runs, **self.failures.to_dict(), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class LogisticTrend(Row):
    """Logistic trend of failure in ``factor`` (``fit``), over all runs (``at`` empty) or at
    one level of the other factor. Under separation with both outcomes present, ``p_value``
    is a permutation trend test's instead of the fit's Wald p (``p_method`` says which)."""

    factor: str
    at: Mapping[str, Any]
    fit: S.TrendResult
    per: str
    p_value: float
    p_method: str
    direction: str | None
    p_adjusted: float | None = None
    correction: str | None = None

    test = "logistic_trend"

    def to_dict(self) -> dict[str, Any]:
        d = self.fit.to_dict()
        levels = d.pop("levels")
        out = {"test": self.test, "factor": self.factor, "at": dict(self.at), **d, "per": self.per,
               "p_method": self.p_method, "levels": levels}
        out["p_value"] = self.p_value
        out["direction"] = self.direction
        return {**out, **_adjusted(self.p_adjusted, self.correction)}


# --------------------------------------------------------------------------- variance


@dataclass(frozen=True)
class VarianceFit:
    """Correlations and slope of the metric on ``against`` within one group, and the pooled
    SD of the metric within bins of nearly equal ``against``."""

    pearson: Interval
    spearman: Interval
    slope: Interval
    r_squared: float
    within_bin_sd: float
    within_to_total_sd: float


@dataclass(frozen=True)
class VarianceGroup(Row):
    """One group of ``variance`` (successful runs); ``fit`` is None below 3 runs."""

    key: Mapping[str, Any]
    n_runs: int
    metric_sd: float
    fit: VarianceFit | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {**self.key, "n_runs": self.n_runs, "metric_sd": self.metric_sd}
        if self.fit is not None:
            f = self.fit
            d.update({**f.pearson.fields("pearson"), **f.spearman.fields("spearman"), **f.slope.fields("slope"),
                      "r_squared": f.r_squared, "within_bin_sd": f.within_bin_sd,
                      "within_to_total_sd": f.within_to_total_sd})
        return d


@dataclass(frozen=True)
class Correlation(Row):
    """Pearson or Spearman correlation (``kind``) of the metric and ``against`` with a
    bootstrap CI (pairs resampled)."""

    kind: str
    key: Mapping[str, Any]
    r: Interval
    ci_method: str
    n: int

    @property
    def test(self) -> str:
        return f"{self.kind}_correlation"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, **self.key, "estimate": self.r.estimate, "ci_low": self.r.ci_low,
                "ci_high": self.r.ci_high, "ci_method": self.ci_method, "n": self.n}


@dataclass(frozen=True)
class OlsSlope(Row):
    """OLS slope of the metric on ``against`` (metric units per unit) with a t interval."""

    key: Mapping[str, Any]
    slope: Interval
    p_value: float
    r_squared: float
    n: int

    test = "ols_slope"
    ci_method = "OLS t"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, **self.key, "estimate": self.slope.estimate, "ci_low": self.slope.ci_low,
                "ci_high": self.slope.ci_high, "p_value": self.p_value, "r_squared": self.r_squared,
                "n": self.n, "ci_method": self.ci_method}


@dataclass(frozen=True)
class VarianceBin(Row):
    """One equal-count bin of runs ordered by ``against`` (``x_min`` .. ``x_max``): the
    metric's mean, range and SD in it. The JSON names the bounds ``<against>_min/_max``."""

    key: Mapping[str, Any]
    bin: int
    n_runs: int
    against: str
    x_min: float
    x_max: float
    metric_mean: float
    metric_min: float
    metric_max: float
    metric_sd: float

    @property
    def metric_range(self) -> float:
        return self.metric_max - self.metric_min

    def to_dict(self) -> dict[str, Any]:
        return {**self.key, "bin": self.bin, "n_runs": self.n_runs, f"{self.against}_min": self.x_min,
                f"{self.against}_max": self.x_max, "metric_mean": self.metric_mean,
                "metric_min": self.metric_min, "metric_max": self.metric_max, "metric_range": self.metric_range,
                "metric_sd": self.metric_sd}


# --------------------------------------------------------------------------- gradients


@dataclass(frozen=True)
class GradientGroup(Row):
    """Failed (True), successful (False) or unknown (None) runs, per level of ``key``:
    collapse count and rate (Wilson / Clopper-Pearson), norm ratio median and quartiles."""

    failed: bool | None
    key: Mapping[str, Any]
    n_runs: int
    collapsed: FailureCount
    median_ratio: float
    ratio_q25: float
    ratio_q75: float
    median_loss_ratio: float

    def to_dict(self) -> dict[str, Any]:
        c = self.collapsed
        return {"failed": self.failed, **self.key, "n_runs": self.n_runs, "n_collapsed": c.n_failed,
                "collapse_rate": c.rate, "collapse_ci_low": c.ci_low, "collapse_ci_high": c.ci_high,
                "median_ratio": self.median_ratio, "ratio_q25": self.ratio_q25, "ratio_q75": self.ratio_q75,
                "median_loss_ratio": self.median_loss_ratio}


@dataclass(frozen=True)
class CollapseVsFailure(Row):
    """Collapse rate of failed minus successful runs, Fisher exact p."""

    estimate: float
    p_value: float
    n_a: int
    n_b: int

    test = "collapse_vs_failure"
    a = "failed"
    b = "successful"
    p_method = "fisher exact"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "a": self.a, "b": self.b, "estimate": self.estimate, "p_value": self.p_value,
                "p_method": self.p_method, "n_a": self.n_a, "n_b": self.n_b}


@dataclass(frozen=True)
class Log10RatioMedianDifference(Row):
    """Median log10 norm ratio of failed minus successful runs with a bootstrap CI."""

    diff: Interval
    ci_method: str
    n_a: int
    n_b: int

    test = "log10_ratio_median_difference"
    a = "failed"
    b = "successful"

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "a": self.a, "b": self.b, "estimate": self.diff.estimate,
                "ci_low": self.diff.ci_low, "ci_high": self.diff.ci_high, "ci_method": self.ci_method,
                "n_a": self.n_a, "n_b": self.n_b}


@dataclass(frozen=True)
class GradientRun(Row):
    """One run of ``gradients``: ``source`` ``layers`` (lower layers' combined norm) or
    ``total`` (the steps' grad_norm); norms over ``n_steps`` steps, losses start/end."""

    run_id: str
    key: Mapping[str, Any]
    failed: bool | None
    source: str
    n_steps: int
    first_norm: float | None
    median_norm: float | None
    ratio: float | None
    loss_start: float | None
    loss_end: float | None
    loss_ratio: float | None
    collapsed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.key, "failed": self.failed, "source": self.source,
                "n_steps": self.n_steps, "first_norm": self.first_norm, "median_norm": self.median_norm,
                "ratio": self.ratio, "loss_start": self.loss_start, "loss_end": self.loss_end,
                "loss_ratio": self.loss_ratio, "collapsed": self.collapsed}


@dataclass(frozen=True)
class LayerRatio(Row):
    """Median over runs of one layer's norm ratio (median / first), per failure status."""

    depth: int
    layer: str
    failed: bool | None
    n_runs: int
    median_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "layer": self.layer, "failed": self.failed, "n_runs": self.n_runs,
                "median_ratio": self.median_ratio}


# --------------------------------------------------------------------------- container


@dataclass
class AnalysisResult:
    """The result of one analysis.

    * ``groups``: one row per level of the factor(s) (:class:`CompareGroup`, ...);
    * ``tests``: one row per test or between-group estimate (its ``test`` names it);
    * ``settings``: the provenance (selection, metric, split, failure rule, CI method,
      resamples, seed, confidence, correction, package version);
    * ``sections``: extra tables (``bins`` for variance, ``runs`` and ``layers`` for gradients);
    * ``warnings``: plain-language caveats (too few seeds, pooled tasks, separation, ...).

    ``to_dict()`` gives ``{"analysis", "by", "groups", "tests", "settings", "warnings",
    **sections}`` (what ``--format json`` prints); ``to_frame()`` a table as polars.
    """

    analysis: str
    by: tuple[str, ...]
    groups: Sequence[Row]
    tests: Sequence[Row]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    sections: dict[str, Sequence[Row]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "by": list(self.by), "groups": _dicts(self.groups),
                "tests": _dicts(self.tests), "settings": self.settings, "warnings": self.warnings,
                **{name: _dicts(rows) for name, rows in self.sections.items()}}

    def to_frame(self, section: str = "groups") -> pl.DataFrame:
        """``groups`` (default), ``tests`` or a section as a polars DataFrame."""
        import polars as pl

        rows = self.groups if section == "groups" else self.tests if section == "tests" else self.sections[section]
        flat = [{k: _flat(v) for k, v in r.to_dict().items()} for r in rows]
        if not flat:
            return pl.DataFrame()
        try:
            return pl.DataFrame(flat, infer_schema_length=None)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            # Columns mixing types (e.g. a factor level and a label): fall back to text.
            return pl.DataFrame([{k: None if v is None else str(v) for k, v in r.items()} for r in flat],
                                infer_schema_length=None)


def _dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in rows]


def _flat(v: Any) -> Any:
    """A table cell: lists of scalars joined with ", ", nested values as JSON text."""
    if isinstance(v, dict) or (isinstance(v, (list, tuple)) and any(isinstance(x, (dict, list)) for x in v)):
        return json.dumps(v, default=str, sort_keys=True)
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return v


def _adjusted(p_adjusted: float | None, correction: str | None) -> dict[str, Any]:
    # Rows of a corrected family always have both; a row built outside one has neither.
    return {} if correction is None else {"p_adjusted": p_adjusted, "correction": correction}


_Adjustable = TypeVar("_Adjustable", MeanDifference, FailureRateDifference, LogisticTrend)


def with_adjusted(family: Sequence[_Adjustable], correction: str) -> list[_Adjustable]:
    """The rows of one family of tests with their p-values adjusted together (``correction``:
    ``holm``, ``bh`` or ``none``)."""
    from stabstat import stats as S

    adj = S.adjust_pvalues([t.p_value for t in family], correction)
    return [replace(t, p_adjusted=float(pa), correction=correction) for t, pa in zip(family, adj, strict=True)]


def result_settings(runset: RunSet, settings: Settings, analysis: str, **more: Any) -> dict[str, Any]:
    """The provenance of a result: the analysis, the selection's settings, the statistics'
    settings and the analysis' own parameters (``more``), in that order."""
    return {"analysis": analysis, "by": list(runset.by), **runset.settings, **settings.describe(), **more}
