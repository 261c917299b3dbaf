"""Pure, vectorised statistics over groups x seeds.

Everything here is a function of numpy arrays (no store, no I/O) and takes an explicit
random generator (``rng``: a :class:`numpy.random.Generator` or an ``int`` seed; never
global state). Results are small frozen dataclasses that carry their provenance
(method, resamples, seed, confidence, n) and have ``to_dict()``.

Shapes
------
A *group* is a 1-D array of per-seed values (one value per run), shape ``(n,)``.
Groups may have different sizes (ragged); functions over several groups take a
sequence of such arrays. Stratified functions take, per group, a sequence of per-task
arrays (``(n_t,)`` each) or a 2-D ``(seeds, tasks)`` matrix as rliable does.

Modules
-------
One concept each; import from the package (``from stabstat import stats as S``):

* ``_common``     type aliases (``RNGLike``, ``Statistic``, ...), defaults (``DEFAULT_*``,
  ``MIN_SEEDS``, ``STATISTICS``), RNG coercion, input checks, :func:`seed_warnings`
* ``results``     the result dataclasses
* ``special``     ndtr, ndtri, gammaln, betainc, betaincinv, fdtrc without scipy (CLI start-up)
* ``resampling``  the bootstrap machinery: count matrices, statistics from counts,
  jackknife, percentile/BCa intervals (how the bootstrap is vectorised is told there)
* ``bootstrap``   bootstrap CIs for one sample, two samples, correlations
* ``stratified``  bootstrap stratified over tasks (rliable's aggregate IQM)
* ``permutation`` permutation tests: two samples, trend of failure in a factor
* ``proportions`` failure rates: Wilson, Clopper-Pearson, Fisher exact, Newcombe
* ``trends``      logistic regression of failure on factors
* ``variance``    Brown-Forsythe test, SD ratio CI
* ``multiple``    Holm and Benjamini-Hochberg adjustments
* ``components``  variance components over crossed seed factors (ANOVA / REML, pigeonhole bootstrap)
* ``power``       how many seeds: bootstrap and analytic power, Fisher power, CI width
* ``expected_max`` expected maximum of k runs (Tang et al. 2020 unbiased; Dodge et al. 2019 plug-in)
* ``multibootstrap`` seeds x examples bootstrap from per-example predictions (Sellam et al. 2022)
* ``aso``         almost stochastic order, eps_min (Dror et al. 2019; del Barrio et al. 2018)
* ``sequential``  confidence sequences valid at every number of seeds: betting (Waudby-Smith &
  Ramdas 2023) for bounded metrics, failure rates and their differences; asymptotic (WS et al. 2024)

Imports point one way: ``_common`` and ``results`` import nothing of the project;
``resampling`` imports them; the other modules import those (``resampling`` only where they
resample) plus, for ``variance``, ``bootstrap`` and, for ``trends``, ``proportions``.
Importing the package imports numpy, ``_common`` and ``results`` only; every other name
loads its module on first use (``S.bootstrap_ci`` imports ``bootstrap``, which imports no
scipy at all: the normal, beta and F functions of ``compare``'s statistics are in ``special``);
scipy and statsmodels are imported on first use by the statistics that need them (power,
trends' fit, aso, expected_max's log-gamma).

References
----------
Efron (1987), Better bootstrap confidence intervals, JASA 82:171-185 (BCa).
Wilson (1927), JASA 22:209-212. Clopper & Pearson (1934), Biometrika 26:404-413.
Newcombe (1998), Statistics in Medicine 17:873-890 (method 10, hybrid score).
Holm (1979), Scand. J. Statist. 6:65-70. Benjamini & Hochberg (1995), JRSS-B 57:289-300.
Brown & Forsythe (1974), JASA 69:364-367.
Waudby-Smith & Ramdas (2023), Estimating means of bounded random variables by betting, JRSS-B 86:1-27.
Waudby-Smith, Arnold, Wu, Wang & Ramdas (2024), Time-uniform central limit theory and asymptotic
confidence sequences, Ann. Statist. 52 (confidence sequences).
Sellam et al. (2022), The MultiBERTs: BERT reproductions for robustness analysis, ICLR (multibootstrap).
Dror, Shlomov & Reichart (2019), Deep dominance, ACL; del Barrio, Cuesta-Albertos & Matran (2018),
An optimal transportation approach for assessing almost stochastic order (ASO).
Agarwal et al. (2021), Deep RL at the edge of the statistical precipice, NeurIPS (IQM,
stratified bootstrap, probability of improvement).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabstat._lazy import lazy_package
from stabstat.stats._common import (
    AUTO_TEXT,
    CI_METHODS,
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_SEEDS,
    PERCENTILE_AT_MOST,
    SD_PERCENTILE_BELOW,
    STATISTICS,
    default_ci_method,
    seed_warnings,
)
from stabstat.stats.results import (
    BootstrapResult,
    RateDiffResult,
    RateResult,
    TestResult,
    TrendResult,
)

if TYPE_CHECKING:  # the names below load with their module on first use (__getattr__)
    from stabstat.stats.aso import ASO_THRESHOLD, AsoResult, aso, aso_matrix, violation_ratio
    from stabstat.stats.bootstrap import (
        bootstrap_ci,
        bootstrap_correlation,
        bootstrap_diff,
        bootstrap_groups,
        bootstrap_replicates,
        bootstrap_statistics,
        probability_of_improvement,
    )
    from stabstat.stats.components import ComponentsResult, VarianceComponent, variance_components
    from stabstat.stats.expected_max import (
        ExpectedMaxResult,
        expected_max,
        expected_max_budget,
        expected_max_curve,
    )
    from stabstat.stats.multibootstrap import (
        EXAMPLE_METRICS,
        MultibootResult,
        example_metric,
        multibootstrap,
    )
    from stabstat.stats.multiple import adjust_pvalues, benjamini_hochberg, holm
    from stabstat.stats.permutation import draw_swaps, permutation_test, trend_permutation_test
    from stabstat.stats.power import (
        EXACT_MAX_N,
        bootstrap_power,
        ci_width_n,
        fisher_power,
        normal_n,
        normal_power,
        pilot_sd_interval,
    )
    from stabstat.stats.proportions import (
        clopper_pearson_interval,
        failure_rate,
        fisher_exact,
        newcombe_diff,
        rate_interval,
        wilson_interval,
    )
    from stabstat.stats.resampling import compute_statistic, draw_counts, iqm
    from stabstat.stats.sequential import (
        ConfidenceSequence,
        asymptotic_cs,
        asymptotic_diff_cs,
        betting_cs,
        betting_diff_cs,
        betting_p_values,
        rate_cs,
    )
    from stabstat.stats.stratified import stratified_bootstrap, stratified_bootstrap_groups
    from stabstat.stats.trends import logistic_regression, logistic_trend
    from stabstat.stats.variance import brown_forsythe, sd_ratio_ci

#: Public name -> the submodule that defines it, imported on first access (PEP 562): a
#: command loads only the statistics it uses (``compare`` does not load aso, components,
#: power, expected_max, sequential, multibootstrap, trends or stratified: ~20-40 ms of CLI
#: start-up).
_LAZY: dict[str, str] = {
    "ASO_THRESHOLD": "aso",
    "AsoResult": "aso",
    "aso": "aso",
    "aso_matrix": "aso",
    "violation_ratio": "aso",
    "ExpectedMaxResult": "expected_max",
    "expected_max": "expected_max",
    "expected_max_budget": "expected_max",
    "expected_max_curve": "expected_max",
    "EXAMPLE_METRICS": "multibootstrap",
    "MultibootResult": "multibootstrap",
    "example_metric": "multibootstrap",
    "multibootstrap": "multibootstrap",
    "bootstrap_ci": "bootstrap",
    "bootstrap_correlation": "bootstrap",
    "bootstrap_diff": "bootstrap",
    "bootstrap_groups": "bootstrap",
    "bootstrap_replicates": "bootstrap",
    "bootstrap_statistics": "bootstrap",
    "probability_of_improvement": "bootstrap",
    "ComponentsResult": "components",
    "VarianceComponent": "components",
    "variance_components": "components",
    "adjust_pvalues": "multiple",
    "benjamini_hochberg": "multiple",
    "holm": "multiple",
    "draw_swaps": "permutation",
    "permutation_test": "permutation",
    "trend_permutation_test": "permutation",
    "EXACT_MAX_N": "power",
    "bootstrap_power": "power",
    "ci_width_n": "power",
    "fisher_power": "power",
    "normal_n": "power",
    "normal_power": "power",
    "pilot_sd_interval": "power",
    "clopper_pearson_interval": "proportions",
    "failure_rate": "proportions",
    "fisher_exact": "proportions",
    "newcombe_diff": "proportions",
    "rate_interval": "proportions",
    "wilson_interval": "proportions",
    "compute_statistic": "resampling",
    "draw_counts": "resampling",
    "iqm": "resampling",
    "ConfidenceSequence": "sequential",
    "asymptotic_cs": "sequential",
    "asymptotic_diff_cs": "sequential",
    "betting_cs": "sequential",
    "betting_diff_cs": "sequential",
    "betting_p_values": "sequential",
    "rate_cs": "sequential",
    "stratified_bootstrap": "stratified",
    "stratified_bootstrap_groups": "stratified",
    "logistic_regression": "trends",
    "logistic_trend": "trends",
    "brown_forsythe": "variance",
    "sd_ratio_ci": "variance",
}


lazy_package(__name__, _LAZY)


__all__ = [
    "ASO_THRESHOLD",
    "AUTO_TEXT",
    "CI_METHODS",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "EXACT_MAX_N",
    "EXAMPLE_METRICS",
    "MIN_SEEDS",
    "PERCENTILE_AT_MOST",
    "SD_PERCENTILE_BELOW",
    "STATISTICS",
    "AsoResult",
    "BootstrapResult",
    "ComponentsResult",
    "ConfidenceSequence",
    "ExpectedMaxResult",
    "MultibootResult",
    "RateDiffResult",
    "RateResult",
    "TestResult",
    "TrendResult",
    "VarianceComponent",
    "adjust_pvalues",
    "aso",
    "aso_matrix",
    "asymptotic_cs",
    "asymptotic_diff_cs",
    "benjamini_hochberg",
    "bootstrap_ci",
    "bootstrap_correlation",
    "bootstrap_diff",
    "bootstrap_groups",
    "bootstrap_power",
    "bootstrap_replicates",
    "bootstrap_statistics",
    "betting_cs",
    "betting_diff_cs",
    "betting_p_values",
    "brown_forsythe",
    "ci_width_n",
    "clopper_pearson_interval",
    "compute_statistic",
    "default_ci_method",
    "draw_counts",
    "draw_swaps",
    "example_metric",
    "expected_max",
    "expected_max_budget",
    "expected_max_curve",
    "failure_rate",
    "fisher_exact",
    "fisher_power",
    "holm",
    "iqm",
    "logistic_regression",
    "logistic_trend",
    "multibootstrap",
    "newcombe_diff",
    "normal_n",
    "normal_power",
    "permutation_test",
    "pilot_sd_interval",
    "probability_of_improvement",
    "rate_cs",
    "rate_interval",
    "sd_ratio_ci",
    "seed_warnings",
    "stratified_bootstrap",
    "stratified_bootstrap_groups",
    "trend_permutation_test",
    "variance_components",
    "violation_ratio",
    "wilson_interval",
]
