"""``compare``: the levels of one factor side by side.

Per level (:class:`~stabstat.analysis.results.CompareGroup`): failures with a Wilson /
Clopper-Pearson interval and the metric's mean, SD, median, IQM and max with bootstrap CIs.
Per pair of levels: mean difference (bootstrap CI, permutation p), probability of
improvement, failure-rate difference (Newcombe, Fisher), SD ratios; p-values adjusted per
family over the pairs. Over all levels: Brown-Forsythe tests of equal spread.

RNG salts (``Settings.rng``): 1 group statistics, 2 a pair's shared resampling counts,
3 permutations, 5 SD ratios, 10 stratified bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from stabstat import stats as S
from stabstat.analysis.levels import (
    LevelArrays,
    level_arrays,
    level_arrays_from_columns,
    levels,
    metric_values,
    pair_arrays,
    subset,
)
from stabstat.analysis.results import (
    AnalysisResult,
    BrownForsythe,
    CompareGroup,
    FailureCount,
    FailureRateDifference,
    Interval,
    MeanDifference,
    ProbabilityOfImprovement,
    Row,
    SdRatio,
    Stratified,
    result_settings,
    with_adjusted,
)
from stabstat.analysis.selection import RunSet, Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["GROUP_STATISTICS", "compare", "compare_frame"]

#: Statistics reported per group by ``compare``.
GROUP_STATISTICS = ("mean", "std", "median", "iqm", "max")

#: A level of the compared factor and its runs' arrays (taken from the frame once per level).
_Level = tuple[Any, LevelArrays]


def compare(store: Store, by: str, *, selection: Selection | None = None, settings: Settings | None = None,
            paired: bool | str = "auto", stratify: str | None = None, resample: str = "seeds",
            test: str | None = None) -> AnalysisResult:
    """Compare the levels of factor ``by``: per-level statistics with CIs and failure
    rates, pairwise differences with p-values (corrected), spread tests.

    paired: ``"auto"`` pairs two levels by ``seed`` when both have exactly the same seeds
    once each; ``True`` requires it; ``False`` never pairs.
    stratify: a factor (usually ``task``): each level also gets the mean and IQM over all
    its runs with a *stratified* bootstrap CI (seeds resampled within each stratum, as
    rliable): fields ``mean_stratified``, ``iqm_stratified`` and their ``_ci_low/_ci_high``.
    resample: ``"seeds"`` (default) or ``"seeds,examples"``: also the seeds x examples bootstrap
    from the stored predictions (sections ``examples``, ``examples_pairs``;
    :mod:`stabstat.analysis.examples`). test: ``"aso"`` adds the ``aso`` section.
    """
    runset = select_runs(store, [by], selection=selection, extra=[stratify] if stratify else [])
    cfg = settings or Settings()
    result = compare_frame(runset, settings=cfg, paired=paired, stratify=stratify)
    if resample not in ("seeds", "seeds,examples") or test not in (None, "aso"):
        raise SelectionError(f"--resample {resample!r} / --test {test!r}: use --resample seeds|seeds,examples "
                             "and --test aso")
    if resample == "seeds" and test is None:
        return result
    from dataclasses import replace

    from stabstat.analysis.examples import EXAMPLE_RESAMPLES, example_sections

    sections, notes = example_sections(store, runset, cfg, resample=resample == "seeds,examples",
                                       test_aso=test == "aso")
    return replace(result, sections={**result.sections, **sections}, warnings=[*result.warnings, *notes],
                   settings={**result.settings, "resample": resample, "test": test,
                             "example_resamples": EXAMPLE_RESAMPLES if resample != "seeds" else None})


def compare_frame(runset: RunSet, *, settings: Settings | None = None, paired: bool | str = "auto",
                  stratify: str | None = None) -> AnalysisResult:
    """:func:`compare` on an already selected :class:`RunSet` (one ``by`` factor)."""
    cfg = settings or Settings()
    if stratify is not None and stratify not in runset.frame.columns:
        raise SelectionError(f"--stratify {stratify!r}: not a column of the selected runs")
    (by,) = runset.by
    warnings = list(runset.warnings)
    # The levels' arrays straight from the selection's numpy columns when it has them (no
    # polars import: ~0.1 s of a compare); the frame for a stratified bootstrap, which groups
    # each level's frame by the stratum, and for a RunSet made from a frame.
    per_level = (level_arrays_from_columns(runset.columns, by)
                 if runset.columns is not None and stratify is None else None)
    if per_level is None:
        frame = runset.frame
        per_level = [(lv, level_arrays(subset(frame, by, lv))) for lv in levels(frame, by)]
    groups: list[CompareGroup] = []
    for gi, (lv, f) in enumerate(per_level):
        group, notes = _group(by, lv, f, gi, cfg, stratify)
        groups.append(group)
        if notes:
            warnings.append(f"{by}={lv}: {notes[0]}")
    mean_tests, rate_tests, other_tests, pair_notes = _pair_tests(per_level, paired, cfg)
    warnings += pair_notes
    spread = _spread_tests(per_level)
    warnings += [f"Brown-Forsythe ({t.runs} runs): {w}" for t in spread for w in t.warnings]
    tests: list[Row] = [*with_adjusted(mean_tests, cfg.correction), *with_adjusted(rate_tests, cfg.correction),
                        *other_tests, *spread]
    return AnalysisResult("compare", (by,), groups, tests,
                          result_settings(runset, cfg, "compare", paired=str(paired), stratify=stratify,
                                          p_value_method="permutation test of the mean difference "
                                                         f"({cfg.resamples} permutations)"),
                          warnings)


def _group(by: str, lv: Any, f: LevelArrays, gi: int, cfg: Settings, stratify: str | None
           ) -> tuple[CompareGroup, list[str]]:
    """One level's row and the notes of its mean's bootstrap (in their order: the result's
    warnings quote the first; the row lists them sorted). ``gi``, the level's index, salts
    its generators."""
    vals = f.values
    boot = S.bootstrap_statistics(vals, GROUP_STATISTICS, method=cfg.ci_method, resamples=cfg.resamples,
                                  confidence=cfg.confidence, rng=cfg.rng(1, gi))
    notes = list(boot["mean"].warnings)
    ok = f.successful
    group = CompareGroup(
        key={by: lv}, n_runs=f.n_runs, n_valid=int(vals.size), failures=FailureCount.of(f.rate(cfg.confidence)),
        mean=Interval.of(boot["mean"]), std=Interval.of(boot["std"]), median=Interval.of(boot["median"]),
        iqm=Interval.of(boot["iqm"]), max=Interval.of(boot["max"]),
        stratified=_stratified(f.frame, gi, cfg, stratify) if stratify is not None and f.frame is not None else None,
        mean_successful=float(ok.mean()) if ok.size else math.nan,
        std_successful=float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
        warnings=tuple(sorted(set(notes))),
    )
    return group, notes


def _stratified(f: pl.DataFrame, gi: int, cfg: Settings, stratify: str) -> Stratified:
    """Mean and IQM of one level with the bootstrap resampling within each ``stratify`` level."""
    import polars as pl

    strata = [metric_values(part) for _, part in sorted(
        f.filter(pl.col(stratify).is_not_null()).group_by(stratify), key=lambda kv: str(kv[0]))]
    strata = [x for x in strata if x.size]
    mean, iqm = [Interval.of(S.stratified_bootstrap(strata, statistic=stat, combine="pool", method=cfg.ci_method,
                                                    resamples=cfg.resamples, confidence=cfg.confidence,
                                                    rng=cfg.rng(10, gi, k)))
                 for k, stat in enumerate(("mean", "iqm"))]
    return Stratified(mean, iqm, len(strata))


def _pair_tests(per_level: Sequence[_Level], paired: bool | str, cfg: Settings
                ) -> tuple[list[MeanDifference], list[FailureRateDifference], list[Row], list[str]]:
    """Tests of every pair of levels (a before b in level order): the mean differences and
    the failure-rate differences (two families to adjust), the other rows in pair order
    (probability of improvement, SD ratio of all runs, of successful runs), and why an SD
    ratio has no interval (a warning each)."""
    mean_tests: list[MeanDifference] = []
    rate_tests: list[FailureRateDifference] = []
    other: list[Row] = []
    notes: list[str] = []
    for (i, (la, fa)), (j, (lb, fb)) in combinations(enumerate(per_level), 2):
        a, b, is_paired = pair_arrays(fa, fb, paired)
        if a.size == 0 or b.size == 0:
            continue
        # One set of draws per pair serves the mean difference, the SD ratio (all runs) and
        # the probability of improvement (common random numbers).
        pair_rng = cfg.rng(2, i, j)
        ca = S.draw_counts(pair_rng, cfg.resamples, a.size)
        cb = ca if is_paired else S.draw_counts(pair_rng, cfg.resamples, b.size)
        d = S.bootstrap_diff(a, b, statistic="mean", paired=is_paired, method=cfg.ci_method,
                             resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.seed, _counts=(ca, cb))
        p = S.permutation_test(a, b, statistic="mean", paired=is_paired, resamples=cfg.resamples,
                               rng=cfg.rng(3, i, j))
        mean_tests.append(MeanDifference(la, lb, Interval.of(d), d.method, is_paired, int(a.size), int(b.size),
                                         p.p_value, "permutation" + (" (paired sign-flip)" if is_paired else "")))
        unpaired_counts = (ca, cb) if not is_paired else (ca, S.draw_counts(pair_rng, cfg.resamples, b.size))
        poi = S.probability_of_improvement(a, b, method=cfg.ci_method, resamples=cfg.resamples,
                                           confidence=cfg.confidence, rng=cfg.seed, _counts=unpaired_counts)
        other.append(ProbabilityOfImprovement(la, lb, Interval.of(poi), poi.method))
        ra, rb = fa.rate(cfg.confidence), fb.rate(cfg.confidence)
        if ra.n and rb.n:
            nd = S.newcombe_diff(ra.k, ra.n, rb.k, rb.n, confidence=cfg.confidence)
            rate_tests.append(FailureRateDifference(la, lb, Interval(nd.estimate, nd.ci_low, nd.ci_high),
                                                    ra.n, rb.n, nd.p_value))
        for k, (runs_label, xa, xb) in enumerate((("all", a, b),
                                                  ("successful", fa.successful, fb.successful))):
            if xa.size >= 2 and xb.size >= 2:
                sr = S.bootstrap_diff(xa, xb, statistic="std", op="ratio", method=cfg.ci_method,
                                      resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.rng(5, i, j, k),
                                      _counts=unpaired_counts if k == 0 else None)
                other.append(SdRatio(runs_label, la, lb, Interval.of(sr), sr.method, int(xa.size), int(xb.size)))
                if math.isfinite(sr.estimate) and math.isnan(sr.ci_low):
                    why = next((w for w in sr.warnings if "undefined" in w), "no interval")
                    notes.append(f"sd ratio {la} / {lb} ({runs_label} runs): no interval: {why}")
    return mean_tests, rate_tests, other, notes


def _spread_tests(per_level: Sequence[_Level]) -> list[BrownForsythe]:
    """Brown-Forsythe over the levels with >= 2 values, of all runs and of successful runs."""
    out = []
    for runs_label, succ in (("all", False), ("successful", True)):
        arrays = [f.successful if succ else f.values for _, f in per_level]
        if sum(x.size >= 2 for x in arrays) >= 2:
            bf = S.brown_forsythe(*arrays)
            out.append(BrownForsythe(runs_label, bf.statistic, bf.p_value, bf.df, bf.n, tuple(bf.warnings)))
    return out
