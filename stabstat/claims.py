"""``stabstat check``: declarative stability claims (TOML) tested against the store.

A claims file has an optional ``[defaults]`` table (selection and statistics settings for
every claim) and a list of ``[[claims]]``. Each claim gets a one-sided p-value *for* the
claim (null hypothesis: the claim is false) and one *against* it; both families are
Holm-adjusted across the claims of the file (``correction = "bh"`` or ``"none"`` on
request). Verdicts:

* ``PASS``: the adjusted p-value for the claim is below ``alpha``;
* ``FAIL``: the adjusted p-value against the claim is below ``alpha`` (the data show the
  opposite with confidence);
* ``INCONCLUSIVE``: neither (too few runs, or no real difference).

Kinds (``kind = ...``):

``failure_rate``  ``factor``, ``higher``, ``lower``: the failure rate at level ``higher`` is
    above that at ``lower``. Newcombe CI of the difference, Fisher exact one-sided p.
``mean``, ``median``, ``iqm``, ``max``  same fields: the statistic of the metric is higher at
    ``higher``. Bootstrap CI of the difference (paired by seed when possible),
    one-sided permutation p. ``successful_only = true`` leaves failed runs out.
``std``  same fields: the SD is higher at ``higher``. Bootstrap CI of the SD ratio,
    Brown-Forsythe p halved in the direction of the estimate.
``aso``  same fields, optional ``value`` (0.2): ASO eps_min of higher over lower is below it.
``failure_trend``  ``factor``, ``direction = "increasing" | "decreasing"``: failure rises
    or falls with a numeric factor (logistic regression, log2 for sizes; one-sided Wald p,
    or a permutation trend test under separation). Fix other factors with ``filter``.
``max_failure_rate``  ``value``: the failure rate of the selection is below ``value``
    (exact binomial test; Wilson / Clopper-Pearson CI).
``seeds_needed``  ``value`` (seeds), ``delta``, optional ``power`` (0.8) and ``factor``:
    ``value`` seeds per configuration are enough to detect a difference in mean of ``delta``
    (two-sided, ``alpha``) with that power. The estimate is the analytic n with its range over
    the CI of the runs' SD (pooled within the levels of ``factor``); the p-values are the
    chi-square test of that SD against the largest SD for which ``value`` seeds are enough
    (normal approximation; :func:`stabstat.analysis.plan.seeds_needed_test`).
``--sequential`` (``check(..., sequential=True)``): confidence sequences instead of fixed-n
tests for ``failure_rate``, ``mean`` (optional ``bounds = [low, high]``) and
``max_failure_rate``; Bonferroni across the claims (:mod:`stabstat.analysis.sequential`).
``variance_share``  ``component`` (a seed factor, or ``residual``), ``value`` (a share),
    ``direction = "above" | "below"``, optional ``successful_only``: the component's share of
    the metric's variance in the selection (one configuration: use ``filter``) is above /
    below ``value`` (``stabstat decompose``; pigeonhole-bootstrap CI, one-sided bootstrap p).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat import __version__
from stabstat import stats as S
from stabstat.analysis import RunSet, Selection, Settings, select_runs
from stabstat.analysis.examples import aso_claim
from stabstat.analysis.levels import metric_values, pair_by_seed
from stabstat.errors import ConfigError, StabstatError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["KINDS", "CheckResult", "ClaimResult", "check", "claims_settings", "load_claims"]

KINDS = ("failure_rate", "mean", "median", "iqm", "max", "std", "failure_trend", "max_failure_rate", "seeds_needed",
         "variance_share", "aso")
_SELECTION_KEYS = ("metric", "split", "at", "filter", "where", "params", "baseline", "fail_below",
                   "include_incomplete")
_SETTINGS_KEYS = ("alpha", "correction", "resamples", "seed", "ci_method", "confidence")
_CLAIM_KEYS = {"name", "kind", "factor", "higher", "lower", "direction", "value", "successful_only",
               "transform", "delta", "power", "component", "bounds", *_SELECTION_KEYS}
_REQUIRED = {
    "failure_rate": ("factor", "higher", "lower"),
    "mean": ("factor", "higher", "lower"),
    "median": ("factor", "higher", "lower"),
    "iqm": ("factor", "higher", "lower"),
    "max": ("factor", "higher", "lower"),
    "std": ("factor", "higher", "lower"),
    "aso": ("factor", "higher", "lower"),
    "failure_trend": ("factor", "direction"),
    "max_failure_rate": ("value",),
    "seeds_needed": ("value", "delta"),
    "variance_share": ("component", "value", "direction"),
}


@dataclass
class ClaimResult:
    """One claim's verdict and evidence. ``n`` maps level (or ``all``) to the runs used."""

    name: str
    kind: str
    verdict: str
    estimate: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_value: float
    p_adjusted: float
    p_against: float
    p_against_adjusted: float
    p_method: str
    n: dict[str, int]
    detail: str
    warnings: list[str] = field(default_factory=list)
    #: ``check --sequential`` only: the confidence sequence (boundary, decided_at, lows, highs)
    sequence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"test": "claim", **asdict(self)}
        if d["sequence"] is None:
            del d["sequence"]
        return d


@dataclass
class CheckResult:
    """All claims of a file; ``ok`` is False when any claim FAILed."""

    path: str
    claims: list[ClaimResult]
    settings: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not any(c.verdict == "FAIL" for c in self.claims)

    def counts(self) -> dict[str, int]:
        out = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0}
        for c in self.claims:
            out[c.verdict] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"analysis": "check", "groups": [], "tests": [c.to_dict() for c in self.claims],
                "settings": self.settings, "summary": self.counts(), "warnings": []}

    def to_frame(self) -> Any:
        import polars as pl

        rows = [{k: v for k, v in c.to_dict().items() if k not in ("n", "warnings", "sequence")} for c in self.claims]
        return pl.DataFrame(rows, infer_schema_length=None)


# --------------------------------------------------------------------------- loading


def load_claims(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read and validate a claims file; returns (defaults, claims).

    Raises
    ------
    ConfigError
        Unreadable TOML, an unknown key or kind, a missing field; the message names the
        file, the claim and the field.
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such claims file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    unknown_top = set(doc) - {"defaults", "claims"}
    if unknown_top:
        raise ConfigError(f"{p}: unknown top-level key(s) {sorted(unknown_top)}; use [defaults] and [[claims]]")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{p}: [defaults] must be a table")
    bad = set(defaults) - set(_SELECTION_KEYS) - set(_SETTINGS_KEYS)
    if bad:
        raise ConfigError(f"{p}: [defaults]: unknown key(s) {sorted(bad)}; allowed: "
                          f"{', '.join(_SELECTION_KEYS + _SETTINGS_KEYS)}")
    claims = doc.get("claims", [])
    if not isinstance(claims, list) or not claims:
        raise ConfigError(f"{p}: no claims; add at least one [[claims]] table with a kind")
    for i, c in enumerate(claims, 1):
        where = f"{p}: claim {i}" + (f" ({c.get('name')!r})" if isinstance(c, dict) and c.get("name") else "")
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: must be a table ([[claims]])")
        kind = c.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        extra = set(c) - _CLAIM_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(_CLAIM_KEYS))}")
        for key in _REQUIRED[kind]:
            if key not in c:
                raise ConfigError(f"{where}: kind {kind!r} needs the field {key!r}")
        if kind == "failure_trend" and c["direction"] not in ("increasing", "decreasing"):
            raise ConfigError(f"{where}: direction must be 'increasing' or 'decreasing', got {c['direction']!r}")
        if kind == "max_failure_rate" and not (isinstance(c["value"], (int, float)) and 0 < c["value"] < 1):
            raise ConfigError(f"{where}: value must be a rate between 0 and 1, got {c['value']!r}")
        if kind in ("seeds_needed", "variance_share"):
            _check_planning_claim(c, where)
    return defaults, claims


def _check_planning_claim(c: Mapping[str, Any], where: str) -> None:
    """The fields of ``seeds_needed`` and ``variance_share`` claims."""
    v = c["value"]
    if c["kind"] == "seeds_needed":
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
            raise ConfigError(f"{where}: value must be a number of seeds >= 2, got {v!r}")
        if not (isinstance(c["delta"], (int, float)) and not isinstance(c["delta"], bool) and c["delta"] != 0):
            raise ConfigError(f"{where}: delta must be a non-zero difference in the metric, got {c['delta']!r}")
        pw = c.get("power", 0.8)
        if not (isinstance(pw, (int, float)) and 0 < pw < 1):
            raise ConfigError(f"{where}: power must be between 0 and 1, got {pw!r}")
        return
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
        raise ConfigError(f"{where}: value must be a share between 0 and 1, got {v!r}")
    if c["direction"] not in ("above", "below"):
        raise ConfigError(f"{where}: direction must be 'above' or 'below', got {c['direction']!r}")
    if not isinstance(c["component"], str):
        raise ConfigError(f"{where}: component must be a seed factor's name or 'residual', got {c['component']!r}")


#: The statistics settings a claims file's ``[defaults]`` may set and a command line may override.
_MERGED = ("resamples", "seed", "ci_method", "confidence", "correction")


def claims_settings(defaults: Mapping[str, Any], *, settings: Settings | None = None,
                    overrides: Mapping[str, int | float | str | None] | None = None,
                    correction: str | None = None) -> Settings:
    """The statistics settings the claims of a file are evaluated with: the one place where a
    claims file's ``[defaults]`` and the caller's settings are merged, by one rule.

    Field by field (``resamples``, ``seed``, ``ci_method``, ``confidence``,
    ``correction``): the command line (``overrides[name]`` when not None; ``correction``
    also as the argument) > the file's ``[defaults]`` > :class:`Settings`' default.
    ``stabstat check`` and ``stabstat report --claims`` both pass exactly the options given
    on their command line, so ``check c.toml --seed 3`` and ``report --claims c.toml --seed 3``
    use the same settings (seed 3, the file's resamples).

    ``settings`` (Python API): a whole :class:`Settings` that replaces the file's values
    (``correction`` given here still wins).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if correction is not None:
        given["correction"] = correction
    unknown = set(given) - set(_MERGED)
    if unknown:
        raise ValueError(f"claims_settings: unknown override(s) {sorted(unknown)}; allowed: {', '.join(_MERGED)}")
    default = Settings()
    base = {k: getattr(settings, k) if settings is not None else defaults.get(k, getattr(default, k))
            for k in _MERGED}
    merged = base | given
    return Settings(resamples=int(merged["resamples"]), seed=int(merged["seed"]),
                    ci_method=str(merged["ci_method"]), confidence=float(merged["confidence"]),
                    correction=str(merged["correction"]))


def _selection(defaults: Mapping[str, Any], claim: Mapping[str, Any], where: str) -> Selection:
    merged = {k: defaults[k] for k in _SELECTION_KEYS if k in defaults}
    for k in _SELECTION_KEYS:
        if k in claim and k != "filter":
            merged[k] = claim[k]
    filters: dict[str, Any] = {}
    for src in (defaults.get("filter"), claim.get("filter")):
        if src is None:
            continue
        if isinstance(src, dict):
            filters.update(src)
        elif isinstance(src, list):
            for item in src:
                k, sep, v = str(item).partition("=")
                if not sep:
                    raise ConfigError(f"{where}: filter item {item!r} must be key=value")
                filters[k] = v
        else:
            raise ConfigError(f"{where}: filter must be a table {{key = value}} or a list of 'key=value'")
    # Values written as TOML strings are parsed like --filter for non-text factors.
    params = merged.get("params", [])
    if not isinstance(params, list):
        raise ConfigError(f"{where}: params must be a list of values for the ? of where, e.g. params = [2e-5]")
    return Selection(filters=filters, where=merged.get("where"), metric=merged.get("metric"),
                     split=merged.get("split"), at=merged.get("at", "final"), baseline=merged.get("baseline"),
                     fail_below=merged.get("fail_below"), include_incomplete=bool(merged.get("include_incomplete", False)),
                     params=tuple(params))


def _level_frame(runset: RunSet, factor: str, level: Any, where: str, field_name: str) -> pl.DataFrame:
    import polars as pl

    from stabstat.store import parse_value

    col = runset.frame[factor]
    present = col.unique().to_list()
    candidates = [level]
    if isinstance(level, str):
        candidates.append(parse_value(level))
    for cand in candidates:
        for v in present:
            if _same_level(v, cand):
                return runset.frame.filter(pl.col(factor) == v)
    raise ConfigError(f"{where}: {field_name} = {level!r} is not a level of {factor!r}; levels: "
                      f"{', '.join(map(str, sorted(present, key=str)))}")


def _label(v: Any) -> str:
    """A level as the CLI and the page spell it: ``true``/``false`` (TOML's spelling, not
    Python's ``True``), numbers shortest, text as is (as :func:`stabstat._text.level`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _same_level(v: Any, c: Any) -> bool:
    """Equal as factor levels: booleans only match booleans, numbers match numbers."""
    if isinstance(v, bool) or isinstance(c, bool):
        return isinstance(v, bool) and isinstance(c, bool) and v == c
    if isinstance(v, (int, float)) and isinstance(c, (int, float)):
        return float(v) == float(c)
    return bool(v == c)


# --------------------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class _Evidence:
    """One claim's evidence before the family-wise adjustment: the estimate with its CI,
    the one-sided p-values for and against the claim (``test`` names the method), the runs
    used (level or ``all`` -> count), a one-line detail and the warnings."""

    estimate: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_for: float
    p_against: float
    test: str
    n: dict[str, int]
    detail: str
    warnings: list[str]


def _evaluate(store: Store, claim: Mapping[str, Any], sel: Selection, cfg: Settings, where: str,
              index: int) -> _Evidence:
    """Evidence for claim number ``index`` (which salts its generators: ``[seed, 100, index]``
    and ``[seed, 101, index]``)."""
    kind = claim["kind"]
    if kind in ("seeds_needed", "variance_share"):
        return _planning_claim(store, claim, sel, cfg, index)
    factor = claim.get("factor")
    runset = select_runs(store, [factor] if factor else [], selection=sel)
    factor = runset.by[0] if runset.by else None
    warnings = list(runset.warnings)
    if kind == "max_failure_rate":
        return _max_failure_rate(runset, claim, cfg, warnings)
    assert factor is not None
    if kind == "failure_trend":
        return _failure_trend(runset, factor, claim, cfg, where, index, warnings)
    hi = _level_frame(runset, factor, claim["higher"], where, "higher")
    lo = _level_frame(runset, factor, claim["lower"], where, "lower")
    label = f"{factor}={_label(claim['higher'])} vs {factor}={_label(claim['lower'])}"
    if kind == "failure_rate":
        return _failure_rate(hi, lo, claim, cfg, label, warnings)
    if kind == "aso":
        return _Evidence(**aso_claim(hi, lo, claim, cfg, label, index, warnings))
    return _metric_statistic(hi, lo, claim, cfg, label, index, warnings)


def _planning_claim(store: Store, claim: Mapping[str, Any], sel: Selection, cfg: Settings, index: int) -> _Evidence:
    """``seeds_needed`` (chi-square test of the runs' SD) and ``variance_share`` (decompose's
    pigeonhole bootstrap; one-sided bootstrap p-values), salted ``[seed, 102, index]``."""
    from stabstat.analysis.decompose import SEED_FACTORS, component_shares
    from stabstat.analysis.plan import seeds_needed_test

    if claim["kind"] == "seeds_needed":
        factor = claim.get("factor")
        runset = select_runs(store, [factor] if factor else [], selection=sel)
        t = seeds_needed_test(runset, runset.by[0] if runset.by else None, seeds=int(claim["value"]),
                              delta=float(claim["delta"]), power=float(claim.get("power", 0.8)),
                              confidence=cfg.confidence)
        n_needed, n_low, n_high = (math.nan if n is None else float(n) for n in (t.n_needed, t.n_low, t.n_high))
        return _Evidence(n_needed, n_low, n_high, "normal approximation, SD chi-square CI",
                         t.p_for, t.p_against, "chi-square test of the SD, one-sided", {"all": t.df + 1},
                         detail=f"seeds needed to detect {t.delta:g} with power {float(claim.get('power', 0.8)):g}: "
                                f"SD {t.sd:.3g} (df {t.df}) vs at most {t.sd_max:.3g} for {t.seeds} seeds",
                         warnings=list(runset.warnings))
    known = store.factors()
    runset = select_runs(store, selection=sel, extra=[f for f in SEED_FACTORS if f in known])
    res = component_shares(runset, successful_only=bool(claim.get("successful_only", False)), settings=cfg,
                           salt=(102, index))
    name, value, above = str(claim["component"]), float(claim["value"]), claim["direction"] == "above"
    names = [c.name for c in res.components]
    if name not in names:
        raise ConfigError(f"claim {claim.get('name', index)!r}: component {name!r} is not among {', '.join(names)}")
    c = res.component(name)
    return _Evidence(c.share, c.share_ci_low, c.share_ci_high, f"percentile, pigeonhole bootstrap ({res.method})",
                     res.share_p_value(name, value, above=above), res.share_p_value(name, value, above=not above),
                     "bootstrap, one-sided", {"all": res.n},
                     detail=f"share of the variance from {name}; claim: {claim['direction']} {value:g}",
                     warnings=list(runset.warnings) + list(res.warnings))


def _max_failure_rate(runset: RunSet, claim: Mapping[str, Any], cfg: Settings, warnings: list[str]) -> _Evidence:
    """The selection's failure rate is below ``value``: exact binomial test."""
    from scipy.stats import binomtest

    known = runset.frame["failed"].drop_nulls()
    k, n = int(known.sum()), known.len()
    rate = S.rate_interval(k, n, confidence=cfg.confidence)
    limit = float(claim["value"])
    return _Evidence(rate.rate, rate.ci_low, rate.ci_high, rate.method,
                     p_for=float(binomtest(k, n, limit, alternative="less").pvalue) if n else math.nan,
                     p_against=float(binomtest(k, n, limit, alternative="greater").pvalue) if n else math.nan,
                     test="exact binomial, one-sided", n={"all": n},
                     detail=f"{k}/{n} failed; claim: failure rate < {limit:g}",
                     warnings=warnings + list(rate.warnings))


def _failure_trend(runset: RunSet, factor: str, claim: Mapping[str, Any], cfg: Settings, where: str, index: int,
                   warnings: list[str]) -> _Evidence:
    """Failure rises or falls with a numeric factor: one-sided Wald p of the logistic
    trend, or permutation trend tests under separation."""
    import polars as pl
    from scipy.stats import norm

    frame = runset.frame.filter(pl.col("failed").is_not_null() & pl.col(factor).is_not_null())
    if not frame[factor].dtype.is_numeric():
        raise ConfigError(f"{where}: factor {factor!r} is not numeric; failure_trend needs a numeric factor")
    xs = frame[factor].to_numpy().astype(np.float64)
    y = frame["failed"].to_numpy().astype(bool)
    tf = claim.get("transform", "auto")
    if tf == "auto":
        tf = "log2" if xs.size and np.all(xs > 0) and xs.max() / xs.min() >= 4 else "none"
    fit = S.logistic_trend(xs, y, factor=factor, transform=tf, confidence=cfg.confidence)
    decreasing = claim["direction"] == "decreasing"
    if fit.separation:
        if np.unique(xs).size < 2 or y.all() or not y.any():
            p_for = p_against = math.nan
        else:
            xt = np.log2(xs) if tf == "log2" else xs
            p_for = S.trend_permutation_test(xt, y, alternative=claim["direction"], resamples=cfg.resamples,
                                             rng=cfg.rng(100, index)).p_value
            p_against = S.trend_permutation_test(xt, y, alternative="increasing" if decreasing else "decreasing",
                                                 resamples=cfg.resamples, rng=cfg.rng(101, index)).p_value
        test = "permutation trend test (separation)"
    else:
        z = fit.coef / fit.se
        p_for = float(norm.cdf(z) if decreasing else norm.sf(z))
        p_against = float(norm.sf(z) if decreasing else norm.cdf(z))
        test = "logistic regression, one-sided Wald"
    levels = {f"{lv:g}": r.n for lv, r in fit.levels}
    per = "doubling" if tf == "log2" else "unit"
    return _Evidence(fit.odds_ratio, fit.or_ci_low, fit.or_ci_high, "GLM Wald (odds ratio)", p_for, p_against, test,
                     n=levels, detail=f"odds ratio of failure per {per} of {factor}; claim: {claim['direction']}; "
                     + ", ".join(f"{lv:g}: {r.k}/{r.n}" for lv, r in fit.levels),
                     warnings=warnings + list(fit.warnings))


def _failure_rate(hi: pl.DataFrame, lo: pl.DataFrame, claim: Mapping[str, Any], cfg: Settings, label: str,
                  warnings: list[str]) -> _Evidence:
    """The failure rate at ``higher`` is above that at ``lower``: Newcombe CI, Fisher p."""
    ka, na = int(hi["failed"].drop_nulls().sum()), hi["failed"].drop_nulls().len()
    kb, nb = int(lo["failed"].drop_nulls().sum()), lo["failed"].drop_nulls().len()
    d = S.newcombe_diff(ka, na, kb, nb, confidence=cfg.confidence)
    return _Evidence(d.estimate, d.ci_low, d.ci_high, "newcombe",
                     p_for=S.fisher_exact(ka, na, kb, nb, alternative="greater"),
                     p_against=S.fisher_exact(ka, na, kb, nb, alternative="less"), test="fisher exact, one-sided",
                     n={_label(claim["higher"]): na, _label(claim["lower"]): nb},
                     detail=f"failure rate {label}: {ka}/{na} vs {kb}/{nb}",
                     warnings=warnings + S.seed_warnings(min(na, nb), purpose="a failure-rate comparison"))


def _metric_statistic(hi: pl.DataFrame, lo: pl.DataFrame, claim: Mapping[str, Any], cfg: Settings, label: str, index: int,
                      warnings: list[str]) -> _Evidence:
    """The statistic ``kind`` of the metric is higher at ``higher``: a bootstrap CI of the
    SD ratio with a Brown-Forsythe p (``std``), else of the difference with permutation p's."""
    kind = claim["kind"]
    succ = bool(claim.get("successful_only", False))
    a, b = metric_values(hi, successful_only=succ), metric_values(lo, successful_only=succ)
    sizes = {_label(claim["higher"]): int(a.size), _label(claim["lower"]): int(b.size)}
    if min(a.size, b.size) < 2:
        return _Evidence(math.nan, math.nan, math.nan, cfg.ci_method, math.nan, math.nan, "none", sizes,
                         f"{kind} {label}: too few runs", warnings + ["fewer than 2 runs in a group"])
    rng = cfg.rng(100, index)
    if kind == "std":
        ratio = S.sd_ratio_ci(a, b, method=cfg.ci_method, resamples=cfg.resamples, confidence=cfg.confidence,
                              rng=rng)
        bf = S.brown_forsythe(a, b)
        half = bf.p_value / 2
        up = ratio.estimate > 1
        return _Evidence(ratio.estimate, ratio.ci_low, ratio.ci_high, ratio.method,
                         p_for=half if up else 1 - half, p_against=1 - half if up else half,
                         test="Brown-Forsythe, one-sided", n=sizes,
                         detail=f"SD ratio {label}" + (" (successful runs)" if succ else ""),
                         warnings=warnings + list(ratio.warnings))
    # Paired by seed when both levels have the same seeds once each (as compare does).
    import polars as pl

    ok = pl.col("failed").not_() if succ else pl.lit(True)
    pa_, pb_, paired = pair_by_seed(hi.filter(ok), lo.filter(ok), "auto")
    if paired:
        a, b = pa_, pb_
    diff = S.bootstrap_diff(a, b, statistic=kind, paired=paired, method=cfg.ci_method, resamples=cfg.resamples,
                            confidence=cfg.confidence, rng=rng)
    p_for = S.permutation_test(a, b, statistic=kind, paired=paired, alternative="greater",
                               resamples=cfg.resamples, rng=cfg.rng(101, index)).p_value
    p_against = S.permutation_test(a, b, statistic=kind, paired=paired, alternative="less",
                                   resamples=cfg.resamples, rng=cfg.rng(101, index)).p_value
    return _Evidence(diff.estimate, diff.ci_low, diff.ci_high, diff.method, p_for, p_against,
                     "permutation, one-sided", sizes,
                     detail=f"{kind} difference {label}" + (" (paired by seed)" if paired else "")
                     + (" (successful runs)" if succ else ""),
                     warnings=warnings + list(diff.warnings))


def _evaluate_sequential(store: Store, claim: Mapping[str, Any], sel: Selection, confidence: float,
                         where: str) -> tuple[_Evidence, dict[str, Any]]:
    """``check --sequential``: a claim's evidence and sequence at ``confidence`` (1 - alpha / m)."""
    from stabstat.analysis.sequential import sequential_evidence

    factor = claim.get("factor") if claim["kind"] != "max_failure_rate" else None
    runset = select_runs(store, [factor] if factor else [], selection=sel)
    hi, lo, labels = runset.frame, None, ("all", "")
    if runset.by and claim["kind"] != "max_failure_rate":
        hi = _level_frame(runset, runset.by[0], claim["higher"], where, "higher")
        lo = _level_frame(runset, runset.by[0], claim["lower"], where, "lower")
        labels = (_label(claim["higher"]), _label(claim["lower"]))
    e = sequential_evidence(claim, hi, lo, confidence=confidence, metric=runset.settings.get("metric"),
                            labels=labels, where=where)
    seq = {"boundary": e.boundary, "decided_at": e.decided_at, "lows": list(e.lows), "highs": list(e.highs)}
    return _Evidence(e.estimate, e.ci_low, e.ci_high, e.ci_method, e.p_for, e.p_against, e.test, e.n, e.detail,
                     list(runset.warnings) + e.warnings), seq


def check(store: Store, path: str | Path, *, settings: Settings | None = None, alpha: float | None = None,
          correction: str | None = None,
          overrides: Mapping[str, int | float | str | None] | None = None, sequential: bool = False) -> CheckResult:
    """Evaluate every claim of the file at ``path`` (see the module docstring).

    ``sequential``: confidence sequences instead of fixed-n tests (kinds ``failure_rate``,
    ``mean``, ``max_failure_rate``; :mod:`stabstat.analysis.sequential`): each claim's sequence
    at level ``alpha / m`` for ``m`` claims (Bonferroni: the verdicts of all claims hold
    together, at every number of seeds at once), PASS/FAIL as soon as it excludes the boundary.

    ``settings`` (whole), ``overrides`` (field by field; what a command line gave),
    ``alpha`` and ``correction`` given here override the file's defaults
    (:func:`claims_settings` has the rule).
    """
    defaults, claims = load_claims(path)
    cfg = claims_settings(defaults, settings=settings, overrides=overrides, correction=correction)
    a = float(alpha if alpha is not None else defaults.get("alpha", 0.05))
    if not 0 < a < 1:
        raise ConfigError(f"{path}: alpha must be in (0, 1), got {a}")
    from stabstat.analysis.sequential import SEQUENTIAL_RULE as _SEQ_RULE

    evidence, sequences = [], []
    for i, claim in enumerate(claims, 1):
        where = f"{path}: claim {i}" + (f" ({claim.get('name')!r})" if claim.get("name") else "")
        sel = _selection(defaults, claim, where)
        try:
            if sequential:
                e, seq = _evaluate_sequential(store, claim, sel, 1 - a / len(claims), where)
                evidence.append(e)
                sequences.append(seq)
            else:
                evidence.append(_evaluate(store, claim, sel, cfg, where, i))
        except ConfigError:
            raise
        except StabstatError as exc:
            raise type(exc)(f"{where}: {exc}") from None
    if sequential:  # Bonferroni: the correction that matches each claim's sequence at alpha / m
        cfg = dataclasses.replace(cfg, correction="bonferroni")
        adj_for = np.minimum(1.0, np.array([e.p_for for e in evidence]) * len(evidence))
        adj_against = np.minimum(1.0, np.array([e.p_against for e in evidence]) * len(evidence))
    else:
        adj_for = S.adjust_pvalues([e.p_for for e in evidence], cfg.correction)
        adj_against = S.adjust_pvalues([e.p_against for e in evidence], cfg.correction)
    results = []
    for i, (claim, e) in enumerate(zip(claims, evidence, strict=True)):
        pf, pa = float(adj_for[i]), float(adj_against[i])
        verdict = "PASS" if pf < a else "FAIL" if pa < a else "INCONCLUSIVE"
        results.append(ClaimResult(
            name=str(claim.get("name", f"claim {i + 1}")), kind=claim["kind"], verdict=verdict,
            estimate=float(e.estimate), ci_low=float(e.ci_low), ci_high=float(e.ci_high),
            ci_method=e.ci_method, p_value=float(e.p_for), p_adjusted=pf, p_against=float(e.p_against),
            p_against_adjusted=pa, p_method=e.test, n=e.n, detail=e.detail,
            warnings=list(dict.fromkeys(e.warnings)), sequence=sequences[i] if sequential else None,
        ))
    settings_out = {"analysis": "check", "claims_file": str(path), "alpha": a, **cfg.describe(),
                    "defaults": {k: v for k, v in defaults.items() if k in _SELECTION_KEYS},
                    "verdict_rule": "PASS: adjusted one-sided p for the claim < alpha; FAIL: adjusted p against "
                                    "< alpha; else INCONCLUSIVE" + (_SEQ_RULE if sequential else ""),
                    **({"sequential": True} if sequential else {}),
                    "stabstat_version": __version__, "database": str(store.path)}
    return CheckResult(str(path), results, settings_out)
