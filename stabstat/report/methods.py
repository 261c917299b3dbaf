"""The report's methods paragraph (to be quoted in a paper), its references, and the names of
the CI method and the p-value correction as the page writes them (the failure rule's text is
:func:`stabstat.analysis.failure_rule_text`'s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stabstat import __version__
from stabstat._text import level
from stabstat.stats import PERCENTILE_AT_MOST, SD_PERCENTILE_BELOW

if TYPE_CHECKING:
    from stabstat.analysis import Settings
    from stabstat.report.context import Level, ReportContext

__all__ = ["REFERENCES", "ci_name", "correction_name", "methods_text"]

#: Works the methods paragraph cites.
REFERENCES = (
    "Mosbach, M., Andriushchenko, M., Klakow, D. (2021). On the Stability of Fine-tuning BERT: "
    "Misconceptions, Explanations, and Strong Baselines. ICLR 2021. arXiv:2006.04884.",
    "Efron, B. (1987). Better bootstrap confidence intervals. JASA 82(397):171-185.",
    "Wilson, E. B. (1927). Probable inference, the law of succession, and statistical "
    "inference. JASA 22(158):209-212.",
    "Newcombe, R. G. (1998). Interval estimation for the difference between independent "
    "proportions. Statistics in Medicine 17(8):873-890.",
    "Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian "
    "Journal of Statistics 6(2):65-70.",
)


def methods_text(ctx: ReportContext, *, versions: Mapping[str, str], n_claims: int) -> str:
    """The methods paragraph of the report over ``ctx`` (``n_claims`` claims tested)."""
    from stabstat.analysis import failure_rule_text

    rs = ctx.run_settings
    return _methods_text(
        n_runs=ctx.frame.height, by=ctx.by, levels=ctx.levels, n_seeds=ctx.n_seeds,
        tasks=ctx.tasks, metric=ctx.metric, split=ctx.split, at=rs["at"],
        rule=failure_rule_text(ctx.selection, ctx.metric, rs["higher_is_better"], sentence=True),
        cfg=ctx.settings, versions=versions, n_claims=n_claims, multi_task=ctx.multi_task,
        per_config=[cg.stats.n_runs for cg in ctx.config_groups],
    )


def _methods_text(*, n_runs: int, by: str, levels: list[str], n_seeds: int | None,
                  tasks: list[Level], metric: str, split: str, at: str, rule: str, cfg: Settings,
                  versions: Mapping[str, str], n_claims: int, multi_task: bool,
                  per_config: Sequence[int] = ()) -> str:
    conf = f"{int(round(cfg.confidence * 100))}%"
    method = {"bca": "bias-corrected and accelerated (BCa)", "percentile": "percentile",
              "auto": "bias-corrected and accelerated (BCa; percentile for the standard deviation "
                      f"below {SD_PERCENTILE_BELOW} runs and for any statistic at {PERCENTILE_AT_MOST} runs or "
                      "fewer, where a coverage simulation favoured it)"}.get(cfg.ci_method, cfg.ci_method)
    seeds = f" over {n_seeds} random seeds" if n_seeds else ""
    task = (f" on {len(tasks)} tasks ({', '.join(level(t) for t in tasks)}), analysed "
            "separately" if multi_task else "")
    each = ""
    if per_config:
        lo, hi = min(per_config), max(per_config)
        each = f"; {lo} runs each" if lo == hi else f"; {lo} to {hi} runs each"
    parts = [
        f"We analysed {n_runs} fine-tuning runs{seeds}{task}, in {len(levels)} configurations "
        f"of {by} ({', '.join(levels)}{each}).",
        f"Each run is scored by its {at} {split} {metric}. Following Mosbach et al. (2021), a "
        f"run counts as failed when {rule}.",
        f"Per configuration we report the mean, standard deviation, median, interquartile mean "
        f"and maximum over runs, each with a {conf} {method} bootstrap confidence interval "
        f"({cfg.resamples:,} resamples, seed {cfg.seed}; Efron, 1987).",
        "Failure rates carry Wilson score intervals (Clopper-Pearson when no run or every run "
        "failed).",
        "Differences in mean between configurations have bootstrap intervals (resampling runs "
        "paired by seed when both configurations share the same seeds) and permutation-test "
        "p-values; differences in failure rate have Newcombe's hybrid score intervals and "
        f"Fisher exact p-values; p-values are adjusted with the {correction_name(cfg)} "
        "across the pairs.",
    ]
    if n_claims:
        parts.append(f"{n_claims} pre-stated claim(s) were tested with one-sided tests at the "
                     "level given in the claims file, adjusted across claims.")
    parts.append(
        f"Computed with stabstat {versions.get('stabstat', __version__)} (DuckDB "
        f"{versions.get('duckdb', '?')}, NumPy {versions.get('numpy', '?')}, SciPy "
        f"{versions.get('scipy', '?')}, statsmodels {versions.get('statsmodels', '?')})."
    )
    return " ".join(parts)


def ci_name(cfg: Settings) -> str:
    """The bootstrap CI method's short name (``BCa``, ``percentile``)."""
    return {"bca": "BCa", "percentile": "percentile", "auto": "BCa/percentile"}.get(cfg.ci_method,
                                                                                 str(cfg.ci_method))


def correction_name(cfg: Settings) -> str:
    """The p-value correction as the methods paragraph names it."""
    return {"holm": "Holm (1979) method", "bh": "Benjamini-Hochberg (1995) method",
            "none": "no correction (unadjusted)"}.get(cfg.correction, cfg.correction)
