"""``compare``: the levels of one factor side by side.

Per level (:class:`~stabstat.analysis.results.CompareGroup`): failures with a Wilson /
Clopper-Pearson interval and the metric's mean, SD, median, IQM and max with bootstrap CIs.
Per pair of levels: mean difference (bootstrap CI, permutation p), probability of
improvement, failure-rate difference (Newcombe, Fisher), SD ratios; p-values adjusted per
family over the pairs. Over all levels: Brown-Forsythe tests of equal spread.

RNG salts (``Settings.rng``): ``(1, level)`` the level's count matrix, ``(2, n)`` the one
matrix of every paired difference of n seeds, ``(3, i, j)`` an unpaired pair's permutations,
``(4, n)`` the swaps of every paired permutation test of n seeds, ``(5, level)`` the count
matrix of the level's successful runs, ``10`` stratified bootstrap.

How the bootstrap draws are shared (issue 18, fourth pass: at most 2K + 1 count matrices for K
levels of one size, 13 instead of 66 for 6 levels). Each level draws one ``(n, R)`` count
matrix (rows attached to its sorted values); its own statistics use it, and so does every pair
the level is in, for whatever resamples the two levels independently (a mean difference that is
not paired, the probability of improvement, the SD ratio of all runs); the successful runs of a
level have a second matrix (the first when no run failed), for the SD ratio of successful runs.
Paired (by-seed) mean differences of n seeds all use one matrix of n seeds, and their paired
permutation tests one ``(R, n)`` matrix of swaps (the same reasoning: each test's permutation
distribution is exact, the pairs' Monte-Carlo errors are correlated). A level's
replicates of a statistic under its matrix are computed once and reused by each of its pairs
(``bootstrap_diff(..., _replicates=...)``, the same numbers as from the counts). Why this is
still exact: within a pair, its two levels' matrices come from
different generators, so they are independent, and each is an exact multinomial resample of its
own level; a paired difference resamples seeds with an exact multinomial matrix. Every interval
therefore has the bootstrap distribution it had with its own draws; only the Monte-Carlo errors
of different intervals are now correlated (common random numbers, as the statistics of one
level already were), which no single interval, p-value or coverage depends on
(tests/test_compare_draws.py checks the reuse, the independence within a pair and the
coverage by simulation). The same ``--seed`` gives the same draws, whatever is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    import numpy as np
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
    draws = _Draws(cfg, per_level)
    groups: list[CompareGroup] = []
    for gi, (lv, f) in enumerate(per_level):
        group, notes = _group(by, lv, f, gi, cfg, stratify, draws)
        groups.append(group)
        if notes:
            warnings.append(f"{by}={lv}: {notes[0]}")
    mean_tests, rate_tests, other_tests, pair_notes = _pair_tests(per_level, paired, cfg, draws)
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


class _Draws:
    """The count matrices of one ``compare`` (see the module docstring), drawn on first use.

    ``level(i)``: ``(n_i, R)`` for level i's finite values (sorted order), from
    ``cfg.rng(1, i)``: the very matrix ``bootstrap_statistics(..., rng=cfg.rng(1, i))`` draws
    first, so the level rows are what they were before the sharing. ``successful(i)``: the same
    for its successful runs, from ``cfg.rng(5, i)`` (``level(i)`` itself when no run failed).
    ``paired(n)``: ``(n, R)`` rows attached to the seeds in seed order, from ``cfg.rng(2, n)``;
    ``swaps(n)``: the paired permutation tests' swaps, from ``cfg.rng(4, n)``. Kept while they fit in :attr:`BUDGET`
    bytes (20 MB per level of 1,000 runs at 10,000 resamples); past it a matrix is drawn again
    when asked (a fresh generator of the same salt gives the same matrix), so memory stays
    bounded for many large levels, at the cost of drawing again.
    """

    BUDGET = 256 * 2**20

    def __init__(self, cfg: Settings, per_level: Sequence[_Level]) -> None:
        self.cfg = cfg
        self.per_level = per_level
        self._cache: dict[tuple[int, ...], Any] = {}
        self._bytes = 0
        self._reps: dict[tuple[str, int, str], Any] = {}

    def _keep(self, salt: tuple[int, ...], draw: Callable[[np.random.Generator], Any]) -> Any:
        """``draw(self.cfg.rng(*salt))``, kept while the budget allows (see the class)."""
        hit = self._cache.get(salt)
        if hit is None:
            hit = draw(self.cfg.rng(*salt))
            if self._bytes + hit.nbytes <= self.BUDGET:
                self._cache[salt] = hit
                self._bytes += hit.nbytes
        return hit

    def _get(self, salt: tuple[int, ...], n: int) -> Any:
        """The ``(n, R)`` count matrix of ``salt``; None below 2 values."""
        if n < 2:
            return None
        return self._keep(salt, lambda rng: S.draw_counts(rng, self.cfg.resamples, n))

    def level(self, i: int) -> Any:
        return self._get((1, i), self.per_level[i][1].values.size)

    def successful(self, i: int) -> Any:
        f = self.per_level[i][1]
        if f.successful.size == f.values.size:
            # No failed run: the successful runs are the level's values (the same multiset), and
            # the level's own matrix is an exact bootstrap of them (independent of every other level's).
            return self.level(i)
        return self._get((5, i), f.successful.size)

    def paired(self, n: int) -> Any:
        return self._get((2, n), n)

    def swaps(self, n: int) -> Any:
        """``(R, n)`` 0/1 swaps shared by the paired permutation tests of n seeds."""
        return self._keep((4, n), lambda rng: S.draw_swaps(rng, self.cfg.resamples, n))

    def replicates(self, kind: str, i: int, statistic: str) -> Any:
        """Level i's :func:`~stabstat.stats.bootstrap_replicates` of ``statistic`` (with the
        jackknife): ``kind`` ``"level"`` (its values, :meth:`level`), ``"successful"``
        (:meth:`successful`) or ``"paired"`` (its values in seed order, :meth:`paired`). A
        level is in K - 1 pairs: computed once, not once per pair. None below 2 values."""
        key = (kind, i, statistic)
        if key not in self._reps:
            f = self.per_level[i][1]
            if kind == "paired":
                x, counts = f.by_seed, (self.paired(f.by_seed.size) if f.by_seed is not None else None)
            elif kind == "successful":
                x, counts = f.successful, self.successful(i)
            else:
                x, counts = f.values, self.level(i)
            self._reps[key] = None if counts is None or x is None else S.bootstrap_replicates(
                x, counts, statistic=statistic, by_position=kind == "paired")
        return self._reps[key]

    def pair(self, kind: str, i: int, j: int, statistic: str) -> Any:
        """Both levels' :meth:`replicates`, or None when either has none."""
        ra, rb = self.replicates(kind, i, statistic), self.replicates(kind, j, statistic)
        return (ra, rb) if ra is not None and rb is not None else None


def _group(by: str, lv: Any, f: LevelArrays, gi: int, cfg: Settings, stratify: str | None, draws: _Draws
           ) -> tuple[CompareGroup, list[str]]:
    """One level's row and the notes of its mean's bootstrap (in their order: the result's
    warnings quote the first; the row lists them sorted). ``gi``, the level's index, salts
    its generators."""
    vals = f.values
    boot = S.bootstrap_statistics(vals, GROUP_STATISTICS, method=cfg.ci_method, resamples=cfg.resamples,
                                  confidence=cfg.confidence, rng=cfg.rng(1, gi), _counts=draws.level(gi))
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


def _pair_tests(per_level: Sequence[_Level], paired: bool | str, cfg: Settings, draws: _Draws
                ) -> tuple[list[MeanDifference], list[FailureRateDifference], list[Row], list[str]]:
    """Tests of every pair of levels (a before b in level order): the mean differences and
    the failure-rate differences (two families to adjust), the other rows in pair order
    (probability of improvement, SD ratio of all runs, of successful runs), and why an SD
    ratio has no interval (a warning each). The bootstrap counts come from ``draws``."""
    mean_tests: list[MeanDifference] = []
    rate_tests: list[FailureRateDifference] = []
    other: list[Row] = []
    notes: list[str] = []
    for (i, (la, fa)), (j, (lb, fb)) in combinations(enumerate(per_level), 2):
        a, b, is_paired = pair_arrays(fa, fb, paired)
        if a.size == 0 or b.size == 0:
            continue
        # The two levels' own matrices (independent of each other) serve every statistic that
        # resamples them independently; a paired difference takes the shared matrix of its size.
        # None where a level has < 2 values: the statistics then have no interval to draw for.
        ga, gb = draws.level(i), draws.level(j)
        unpaired_counts = (ga, gb) if ga is not None and gb is not None else None
        d = S.bootstrap_diff(a, b, statistic="mean", paired=is_paired, method=cfg.ci_method,
                             resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.seed,
                             _replicates=draws.pair("paired" if is_paired else "level", i, j, "mean"))
        p = S.permutation_test(a, b, statistic="mean", paired=is_paired, resamples=cfg.resamples,
                               rng=cfg.rng(3, i, j), _swaps=draws.swaps(a.size) if is_paired else None)
        mean_tests.append(MeanDifference(la, lb, Interval.of(d), d.method, is_paired, int(a.size), int(b.size),
                                         p.p_value, "permutation" + (" (paired sign-flip)" if is_paired else "")))
        poi = S.probability_of_improvement(a, b, method=cfg.ci_method, resamples=cfg.resamples,
                                           confidence=cfg.confidence, rng=cfg.seed, _counts=unpaired_counts)
        other.append(ProbabilityOfImprovement(la, lb, Interval.of(poi), poi.method))
        ra, rb = fa.rate(cfg.confidence), fb.rate(cfg.confidence)
        if ra.n and rb.n:
            nd = S.newcombe_diff(ra.k, ra.n, rb.k, rb.n, confidence=cfg.confidence)
            rate_tests.append(FailureRateDifference(la, lb, Interval(nd.estimate, nd.ci_low, nd.ci_high),
                                                    ra.n, rb.n, nd.p_value))
        for runs_label, xa, xb in (("all", a, b), ("successful", fa.successful, fb.successful)):
            if xa.size >= 2 and xb.size >= 2:
                sr = S.bootstrap_diff(xa, xb, statistic="std", op="ratio", method=cfg.ci_method,
                                      resamples=cfg.resamples, confidence=cfg.confidence, rng=cfg.seed,
                                      _replicates=draws.pair("level" if runs_label == "all" else "successful",
                                                             i, j, "std"))
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
