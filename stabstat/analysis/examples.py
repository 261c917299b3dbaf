"""Example-level inference for ``compare``: the seeds x examples bootstrap and ASO.

Predictions come from the store's ``predictions`` table: per run, the rows of the selected
split at the run's latest step that has predictions (the final evaluation). The metric is
recomputed from predictions and labels (:func:`stabstat.stats.multibootstrap.example_metric`:
accuracy, F1, MCC, acc_f1). A level's runs must share the dev set (same example ids and
labels). Pairing, stated in each row: over examples when two levels share the dev set, over
seeds when they have the same seeds.

RNG salts (``Settings.rng``): 20 the multibootstrap, 21 ASO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat.analysis.levels import levels, subset
from stabstat.analysis.results import Row
from stabstat.errors import SelectionError
from stabstat.stats.aso import aso_matrix
from stabstat.stats.multibootstrap import EXAMPLE_METRICS, multibootstrap

if TYPE_CHECKING:
    from stabstat.analysis.selection import RunSet, Settings
    from stabstat.store import Store

__all__ = ["AsoRow", "ExampleDiff", "ExampleGroup", "example_sections", "load_predictions"]

#: Resamples of the seeds x examples bootstrap (each is a full metric recomputation).
EXAMPLE_RESAMPLES = 1000


class _FlatRow(Row):
    """A row whose fields are its ``to_dict()`` as they are (no nesting)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ExampleGroup(_FlatRow):
    """One level: metric on all examples (mean over runs), joint percentile CI, CI widths
    with only seeds / only examples resampled, the examples' share of the variance."""

    level: Any
    runs: int
    examples: int
    estimate: float
    ci_low: float
    ci_high: float
    width_seeds: float
    width_examples: float
    share_examples: float


@dataclass(frozen=True)
class ExampleDiff(_FlatRow):
    """Difference a - b of the multibootstrap means and how the pair was paired."""

    a: Any
    b: Any
    estimate: float
    ci_low: float
    ci_high: float
    pairing: str


@dataclass(frozen=True)
class AsoRow(_FlatRow):
    """ASO of a over b on the runs' metric values: eps_min < 0.5 (stricter: < 0.2) says a is
    almost stochastically larger; ``p_adjusted``: H0 eps >= threshold, multiplicity-corrected."""

    a: Any
    b: Any
    eps_min: float
    violation_ratio: float
    confidence: float
    threshold: float
    p_adjusted: float
    correction: str


def load_predictions(store: Store, run_ids: list[str], split: str) -> dict[str, tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]]:
    """``run_id -> (example_id (J,), label (J,), prediction (J,))`` sorted by example id, at
    each run's latest step with predictions of ``split``; runs without any are absent."""
    if not run_ids:
        return {}
    ph = ", ".join("?" for _ in run_ids)
    frame = store.query(
        "SELECT p.run_id, p.example_id, p.label, p.prediction FROM predictions p "
        "JOIN (SELECT run_id, max(step) AS step FROM predictions WHERE split = ? "
        f"AND run_id IN ({ph}) GROUP BY run_id) l ON p.run_id = l.run_id AND p.step = l.step "
        "WHERE p.split = ? ORDER BY p.run_id, p.example_id", [split, *run_ids, split])
    out = {}
    for (rid,), part in frame.group_by(["run_id"], maintain_order=True):
        out[str(rid)] = (part["example_id"].to_numpy(), part["label"].to_numpy(), part["prediction"].to_numpy())
    return out


def _level_arrays(lv: Any, rows: Any, preds: dict[str, Any], by: str, split: str, metric: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """(predictions (R, J), labels (J,), seeds (R,) or None, runs without predictions)."""
    have = [r for r in rows.iter_rows(named=True) if r["run_id"] in preds]
    if not have:
        raise SelectionError(
            f"{by}={lv} has no per-example predictions for split {split!r} (predictions.parquet in the run "
            "directories: stabstat-run writes them, the HF callback with write_predictions=True); select runs "
            "that have them, or leave out --resample seeds,examples")
    ids, labels, _ = preds[have[0]["run_id"]]
    for r in have[1:]:
        i2, y2, _ = preds[r["run_id"]]
        if not (np.array_equal(i2, ids) and np.array_equal(y2, labels)):
            raise SelectionError(f"{by}={lv}: runs {have[0]['run_id']} and {r['run_id']} were evaluated on different "
                                 f"examples of split {split!r}; select runs that share one dev set")
    p = np.vstack([preds[r["run_id"]][2] for r in have])
    seeds = None
    if "seed" in rows.columns:
        s = [r["seed"] for r in have]
        if None not in s and len(set(s)) == len(s):
            seeds = np.asarray(s)
    return p, labels, seeds, rows.height - len(have)


def example_sections(store: Store, runset: RunSet, cfg: Settings, *, resample: bool, test_aso: bool,
                     resamples: int = EXAMPLE_RESAMPLES) -> tuple[dict[str, list[Row]], list[str]]:
    """The ``examples`` / ``examples_pairs`` sections (seeds x examples bootstrap) and the ``aso``
    section (ASO of every ordered pair, corrected by ``cfg.correction``: holm, else Bonferroni)."""
    (by,) = runset.by
    split, metric = runset.settings["split"], runset.settings["metric"]
    frame = runset.frame
    lvls = levels(frame, by)
    sections: dict[str, list[Row]] = {}
    warnings: list[str] = []
    if resample:
        if metric not in EXAMPLE_METRICS:
            raise SelectionError(f"--resample seeds,examples: metric {metric!r} cannot be recomputed from "
                                 f"predictions; use --metric {' | '.join(EXAMPLE_METRICS)}")
        preds = load_predictions(store, frame["run_id"].to_list(), split)
        arrays = [_level_arrays(lv, subset(frame, by, lv), preds, by, split, metric) for lv in lvls]
        for lv, (_, _, _, missing) in zip(lvls, arrays, strict=True):
            if missing:
                warnings.append(f"{by}={lv}: {missing} run(s) without predictions left out of the seeds x examples "
                                "bootstrap")
        seeds = [a[2] for a in arrays]
        mb = multibootstrap([a[0] for a in arrays], [a[1] for a in arrays],
                            seeds=None if any(s is None for s in seeds) else seeds,  # type: ignore[arg-type]
                            metric=metric, resamples=resamples, confidence=cfg.confidence, rng=cfg.rng(20))
        sections["examples"] = [
            ExampleGroup(lv, int(a[0].shape[0]), int(a[0].shape[1]), float(mb.estimate[i]), float(mb.ci_low[i]),
                         float(mb.ci_high[i]), float(mb.width_seeds[i]), float(mb.width_examples[i]),
                         float(mb.share_examples[i])) for i, (lv, a) in enumerate(zip(lvls, arrays, strict=True))]
        sections["examples_pairs"] = [
            ExampleDiff(lvls[i], lvls[j], est, lo, hi,
                        " and ".join(w for w, f in (("examples", pe), ("seeds", ps)) if f) or "unpaired")
            for i, j, est, lo, hi, pe, ps in mb.diffs]
    if test_aso:
        from stabstat.analysis.levels import metric_values

        samples = [metric_values(subset(frame, by, lv)) for lv in lvls]
        # ASO's p-values come from a normal approximation: Holm or none as asked, else Bonferroni.
        corr = {"holm": "holm", "none": "none"}.get(cfg.correction, "bonferroni")
        eps, padj, res = aso_matrix(samples, confidence=cfg.confidence, correction=corr, rng=cfg.rng(21))
        sections["aso"] = [AsoRow(lvls[i], lvls[j], float(eps[i, j]), r.violation_ratio, r.confidence, r.threshold,
                                  float(padj[i, j]), corr)
                           for r, (i, j) in zip(res, [(i, j) for i in range(len(lvls))
                                                      for j in range(len(lvls)) if i != j], strict=True)]
    return sections, warnings


def aso_claim(hi: Any, lo: Any, claim: Any, cfg: Settings, label: str, index: int,
              warnings: list[str]) -> dict[str, Any]:
    """The fields of a ``check`` claim of kind ``aso`` (``stabstat.claims``): the metric at
    ``higher`` is almost stochastically larger than at ``lower``. Estimate: eps_min of higher
    over lower (interval: [violation ratio, eps_min]); p for: H0 eps >= ``value`` (default
    0.2) of higher over lower; p against: the same of lower over higher (the data show the
    opposite order). Generators salted ``[seed, 102, index]``."""
    from stabstat.analysis.levels import metric_values
    from stabstat.stats.aso import ASO_THRESHOLD, aso

    succ = bool(claim.get("successful_only", False))
    a, b = metric_values(hi, successful_only=succ), metric_values(lo, successful_only=succ)
    tau = float(claim.get("value", ASO_THRESHOLD))
    fwd = aso(a, b, confidence=cfg.confidence, threshold=tau, rng=cfg.rng(102, index))
    back = aso(b, a, confidence=cfg.confidence, threshold=tau, rng=cfg.rng(102, index))
    return {"estimate": fwd.eps_min, "ci_low": fwd.violation_ratio, "ci_high": fwd.eps_min,
            "ci_method": f"ASO upper bound at {fwd.confidence:g}", "p_for": fwd.p_value, "p_against": back.p_value,
            "test": f"ASO, H0 eps_min >= {tau:g}",
            "n": {str(claim["higher"]): int(a.size), str(claim["lower"]): int(b.size)},
            "detail": f"ASO eps_min {label}" + (" (successful runs)" if succ else ""),
            "warnings": warnings + list(fwd.warnings)}


def uncertainty_frame(rows: list[Row]) -> Any:
    """The ``examples`` section as the frame of :func:`stabstat.charts.uncertainty_sources`:
    one row per (config, source) with the CI ``width`` and ``share_examples``."""
    import polars as pl

    out = []
    for r in rows:
        g = r.to_dict()
        for source, width in (("seeds only", g["width_seeds"]), ("examples only", g["width_examples"]),
                              ("seeds x examples", g["ci_high"] - g["ci_low"])):
            out.append({"config": str(g["level"]), "source": source, "width": float(width),
                        "share_examples": float(g["share_examples"])})
    return pl.DataFrame(out)


def has_predictions(store: Store, run_ids: list[str], split: str) -> bool:
    """Whether any of the runs has per-example predictions of ``split``."""
    if not run_ids:
        return False
    ph = ", ".join("?" for _ in run_ids)
    got = store.query(f"SELECT count(*) AS n FROM predictions WHERE split = ? AND run_id IN ({ph})",
                      [split, *run_ids])
    return bool(got["n"][0])
