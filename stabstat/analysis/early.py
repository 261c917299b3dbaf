"""``early``: predict from the first K steps of a run whether it will end failed.

Features at step K (the same definitions as the runner's ``--stop-doomed`` rules,
``schemas/stop_rule.py``; ``tests/test_early.py`` checks both agree on the same numbers; the
analysis side may not import that module, so the formulas are written here once more, vectorised):

``loss_ratio``        mean of the last ``WINDOW`` logged training losses up to K / mean of the
                      first ``WINDOW`` (non-finite losses left out of the means).
``loss_vs_majority``  the same recent mean / the loss of predicting the class balance
                      (``-p ln p - (1-p) ln((1-p)/(k-1))``, p = the stored majority-class accuracy,
                      k = ``num_labels``); needs both stored.
``lower_grad_ratio``  lowest layer's (smallest depth) gradient norm at the last logged step <= K /
                      its median (upper median) over the first ``WINDOW`` logged steps.
``dev_vs_majority``   the last dev evaluation in (0, K] of the selection's metric minus the
                      majority-class score.

A run that lacks a feature (no layer norms, no evaluation by K: HF logs) is never flagged on it.
A run whose last logged step is <= K cannot be stopped at K: never flagged, saves nothing.

Two predictors, each fitted on training runs only and scored on held-out runs
(leave-one-configuration-out, a configuration being the run's config without its seeds, or
stratified k-fold over runs):

* ``threshold``: the single feature threshold with the highest training recall among those
  that flag no successful training run (threshold halfway between the worst successful run and
  the next failed one). Printed as a ``--stop-doomed`` rule, ``at=K feature>=value``.
* ``logit``: an L1-penalised logistic regression (statsmodels ``Logit.fit_regularized``) on the
  standardised features every training run has; flags a run whose predicted probability is above
  the threshold halfway between the highest of the successful training runs and the next failed one.

Per K and predictor: precision, recall, runs flagged and the compute stopping the flagged runs at
K would have saved (sum of their steps after K / sum of all runs' steps), with percentile bootstrap
intervals over runs (the held-out predictions are kept fixed: the interval is for which runs were
sampled, not for refitting). The chosen K is the earliest at which the held-out precision is at
least ``target`` and stays so at every later K that flags a run.

RNG salts (``Settings.rng``): 31 fold assignment, 32 + index of K the bootstrap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stabstat.analysis.selection import Selection, Settings, select_runs
from stabstat.errors import SelectionError

if TYPE_CHECKING:
    import polars as pl

    from stabstat.store import Store

__all__ = ["FEATURES", "WINDOW", "EarlyResult", "EarlyRow", "early", "early_features"]

#: Feature names and the direction in which a run looks doomed (``>=``: high values).
FEATURES: tuple[tuple[str, str], ...] = (
    ("loss_ratio", ">="), ("loss_vs_majority", ">="), ("lower_grad_ratio", "<="), ("dev_vs_majority", "<="),
)
#: Logged steps averaged at the start and before K (``schemas.stop_rule.WINDOW``).
WINDOW = 5
#: L1 penalty weight of the logit (statsmodels' ``alpha``, on standardised features): keeps the
#: fit finite when the features separate the runs perfectly.
ALPHA = 0.1
#: Config keys that vary between seeds of one configuration.
_SEED_KEYS = frozenset({"seed", "init_seed", "order_seed", "dropout_seed", "data_seed"})


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (NaN when undefined, e.g. nothing flagged)."""

    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class EarlyRow:
    """One predictor at one K, scored on held-out runs. ``saving``: share of all runs' optimiser
    steps after K in the flagged runs (0..1); ``rule``: the ``threshold`` predictor fitted on
    every run at K as a ``--stop-doomed`` rule (None for ``logit`` or when no threshold separates)."""

    method: str
    step: int
    n_runs: int
    n_failed: int
    flagged: int
    flagged_successful: int
    precision: Estimate
    recall: Estimate
    saving: Estimate
    rule: str | None


@dataclass
class EarlyResult:
    """Rows per (method, K); ``chosen``: method -> the chosen K (None when no K qualifies);
    ``runs``: per run at every K, ``run_id, config, failed, total_steps, step, method, flagged``."""

    rows: list[EarlyRow]
    chosen: dict[str, int | None]
    runs: pl.DataFrame
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def row(self, method: str, step: int) -> EarlyRow:
        return next(r for r in self.rows if r.method == method and r.step == step)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "chosen": self.chosen,
                "settings": self.settings, "warnings": list(self.warnings)}

    def to_frame(self) -> pl.DataFrame:
        import polars as pl

        out = []
        for r in self.rows:
            d: dict[str, Any] = {k: v for k, v in asdict(r).items() if not isinstance(v, dict)}
            for name in ("precision", "recall", "saving"):
                e = getattr(r, name)
                d.update({name: e.estimate, f"{name}_low": e.ci_low, f"{name}_high": e.ci_high})
            out.append(d)
        return pl.DataFrame(out)


# --------------------------------------------------------------------------- data


def _series(store: Store, ids: list[str], max_k: int, split: str, metric: str) -> dict[str, pl.DataFrame]:
    """Per-step losses, lowest-layer norms and dev values of ``ids`` up to ``max_k``; per-run facts."""
    from stabstat.store import fetch_frame

    con = store.con
    p = [ids, int(max_k)]
    return {
        "loss": fetch_frame(con, """SELECT run_id, step, loss FROM steps WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
            AND step <= ? AND loss IS NOT NULL ORDER BY run_id, step""", p),
        "grad": fetch_frame(con, """SELECT run_id, step, arg_min(grad_norm, depth) AS g FROM layer_grads
            WHERE run_id IN (SELECT unnest(?::VARCHAR[])) AND step <= ? GROUP BY run_id, step
            ORDER BY run_id, step""", p),
        "dev": fetch_frame(con, """SELECT run_id, step, value FROM evals WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
            AND step <= ? AND step > 0 AND split = ? AND metric = ? AND value IS NOT NULL ORDER BY run_id, step""",
            [*p, split, metric]),
        "facts": fetch_frame(con, """SELECT r.run_id, CAST(r.config AS VARCHAR) AS config,
                TRY_CAST(json_extract(r.task_info, '$.num_labels') AS INTEGER) AS num_labels,
                (SELECT max(value) FROM majority m WHERE m.run_id = r.run_id AND m.metric = 'accuracy') AS majority_acc,
                (SELECT max(step) FROM steps s WHERE s.run_id = r.run_id) AS total_steps
            FROM runs r WHERE r.run_id IN (SELECT unnest(?::VARCHAR[]))""", [ids]),
    }


def _majority_loss(p: float | None, k: int | None) -> float:
    if p is None or k is None or k < 2 or not 0 < p < 1 or (isinstance(p, float) and math.isnan(p)):
        return math.nan
    return -p * math.log(p) - (1 - p) * math.log((1 - p) / (k - 1))


def _mean_finite(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def early_features(losses: np.ndarray, grads: np.ndarray | None, dev_minus_majority: float,
                   majority_loss: float, window: int = WINDOW) -> dict[str, float]:
    """The four features of one run at K from its logged losses (shape (L,), steps <= K, step
    order), lowest-layer norms (shape (G,)) and dev score minus majority; NaN when unknown."""
    out = dict.fromkeys([f for f, _ in FEATURES], math.nan)
    if losses.size:
        w = max(1, min(window, losses.size))
        start, recent = _mean_finite(losses[:w]), _mean_finite(losses[-w:])
        if math.isfinite(start) and start > 0 and math.isfinite(recent):
            out["loss_ratio"] = recent / start
        if math.isfinite(recent) and math.isfinite(majority_loss) and majority_loss > 0:
            out["loss_vs_majority"] = recent / majority_loss
    if grads is not None and grads.size:
        w = max(1, min(window, grads.size))
        g0 = np.sort(grads[:w][np.isfinite(grads[:w])])
        if g0.size and g0[g0.size // 2] > 0 and math.isfinite(grads[-1]):
            out["lower_grad_ratio"] = float(grads[-1] / g0[g0.size // 2])
    out["dev_vs_majority"] = dev_minus_majority
    return out


def _feature_matrix(data: dict[str, pl.DataFrame], ids: list[str], baseline: dict[str, float], k: int) -> np.ndarray:
    """Features of every run at K: shape (runs, 4), NaN where unknown."""
    import polars as pl

    facts = {r["run_id"]: r for r in data["facts"].iter_rows(named=True)}
    by = {name: {str(key[0]): g for key, g in data[name].filter(pl.col("step") <= k).group_by("run_id")}
          for name in ("loss", "grad", "dev")}
    x = np.full((len(ids), len(FEATURES)), np.nan)
    for i, rid in enumerate(ids):
        f = facts[rid]
        loss = by["loss"].get(rid)
        grad = by["grad"].get(rid)
        dev = by["dev"].get(rid)
        dvm = math.nan
        if dev is not None and dev.height and baseline.get(rid) is not None:
            dvm = float(dev.sort("step")["value"][-1]) - float(baseline[rid])
        feats = early_features(
            loss.sort("step")["loss"].to_numpy().astype(float) if loss is not None else np.empty(0),
            grad.sort("step")["g"].to_numpy().astype(float) if grad is not None else None,
            dvm, _majority_loss(f["majority_acc"], f["num_labels"]))
        x[i] = [feats[n] for n, _ in FEATURES]
    return x


def _config_key(config: str | None) -> str:
    try:
        cfg = json.loads(config or "{}")
    except ValueError:
        return str(config)
    return json.dumps({k: v for k, v in cfg.items() if k not in _SEED_KEYS}, sort_keys=True, default=str)


# --------------------------------------------------------------------------- predictors


def _badness(x: np.ndarray) -> np.ndarray:
    """Features turned so that high = doomed (shape like x)."""
    sign = np.array([1.0 if op == ">=" else -1.0 for _, op in FEATURES])
    return x * sign


def fit_threshold(x: np.ndarray, y: np.ndarray) -> tuple[int, float] | None:
    """(feature index, threshold on badness) of the best single-feature rule that flags no
    successful training run; None when none flags a failed one. x (n, 4), y bool (n,)."""
    b = _badness(x)
    best: tuple[int, float, int] | None = None
    for j in range(b.shape[1]):
        col = b[:, j]
        ok = np.isfinite(col)
        succ, fail = col[ok & ~y], col[ok & y]
        if succ.size == 0 or fail.size == 0:
            continue  # no successful run to bound the precision with, or nothing to catch
        top = succ.max()
        above = fail[fail > top]
        if above.size == 0:
            continue
        thr = (top + above.min()) / 2.0
        if best is None or above.size > best[2]:
            best = (j, float(thr), int(above.size))
    return None if best is None else (best[0], best[1])


def _apply_threshold(x: np.ndarray, rule: tuple[int, float] | None) -> np.ndarray:
    if rule is None:
        return np.zeros(x.shape[0], dtype=bool)
    col = _badness(x)[:, rule[0]]
    return np.isfinite(col) & (col >= rule[1])


def rule_text(k: int, rule: tuple[int, float], x: np.ndarray, y: np.ndarray) -> str:
    """The threshold rule as a ``--stop-doomed`` rule; the printed value keeps the same flags."""
    name, op = FEATURES[rule[0]]
    thr = rule[1] if op == ">=" else -rule[1]
    text = f"{thr:.6g}"
    if not np.array_equal(_apply_threshold(x, (rule[0], float(text) * (1 if op == ">=" else -1))),
                          _apply_threshold(x, rule)):
        text = repr(thr)
    return f"at={k} {name}{op}{text}"


def _fit_logit(x: np.ndarray, y: np.ndarray) -> Any:
    """(columns, mean, sd, params, threshold) of the penalised logit, or None."""
    import warnings

    import statsmodels.api as sm

    cols = [j for j in range(x.shape[1]) if np.isfinite(x[:, j]).all() and np.nanstd(x[:, j]) > 0]
    if not cols or y.all() or not y.any():
        return None
    z = x[:, cols]
    mu, sd = z.mean(axis=0), z.std(axis=0)
    design = sm.add_constant((z - mu) / sd, has_constant="add")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation / convergence notes: the penalty keeps it finite
        fit = sm.Logit(y.astype(float), design).fit_regularized(method="l1", alpha=ALPHA, disp=0)
    p = np.asarray(fit.predict(design))
    top = float(p[~y].max())
    above = p[y & (p > top)]
    if above.size == 0:
        return None  # no failed training run is told apart from every successful one
    # halfway between the most doomed-looking successful run and the next failed one, as the threshold rule
    return cols, mu, sd, np.asarray(fit.params), (top + float(above.min())) / 2.0


def _apply_logit(x: np.ndarray, model: Any) -> np.ndarray:
    if model is None:
        return np.zeros(x.shape[0], dtype=bool)
    cols, mu, sd, params, thr = model
    z = (x[:, cols] - mu) / sd
    ok = np.isfinite(z).all(axis=1)
    eta = params[0] + np.where(ok[:, None], z, 0.0) @ params[1:]
    return ok & (1.0 / (1.0 + np.exp(-eta)) > thr)


_METHODS = {"threshold": (fit_threshold, _apply_threshold), "logit": (_fit_logit, _apply_logit)}


def _folds(groups: list[str], y: np.ndarray, folds: str | int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Fold index per run and its description: one per configuration, or stratified k-fold."""
    levels = sorted(set(groups))
    if folds == "config":
        if len(levels) < 2:
            raise SelectionError("early --folds config: the runs hold one configuration; use --folds N "
                                 "(k-fold over runs)")
        return np.array([levels.index(g) for g in groups]), f"leave-one-configuration-out ({len(levels)} configurations)"
    k = int(folds)
    idx = np.empty(len(groups), dtype=int)
    for cls in (True, False):  # stratified: failures and successes dealt round-robin after a shuffle
        members = rng.permutation(np.flatnonzero(y == cls))
        idx[members] = np.arange(members.size) % k
    return idx, f"stratified {k}-fold over runs"


def _held_out(x: np.ndarray, y: np.ndarray, fold: np.ndarray, method: str) -> np.ndarray:
    fit, apply = _METHODS[method]
    flagged = np.zeros(y.size, dtype=bool)
    for f in np.unique(fold):
        test = fold == f
        flagged[test] = apply(x[test], fit(x[~test], y[~test]))
    return flagged


def _bootstrap(flagged: np.ndarray, y: np.ndarray, saved: np.ndarray, total: np.ndarray, resamples: int,
               confidence: float, rng: np.random.Generator) -> tuple[Estimate, Estimate, Estimate]:
    """Precision, recall and saving with percentile intervals over runs resampled with replacement."""
    n = y.size
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)  # (B, n)
    tp, fp = (flagged & y).astype(float), (flagged & ~y).astype(float)
    a = (1 - confidence) / 2

    def est(num: np.ndarray, den: np.ndarray) -> Estimate:
        point = float(num.sum() / den.sum()) if den.sum() > 0 else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ num) / (counts @ den)
        boot = boot[np.isfinite(boot)]
        if not math.isfinite(point) or boot.size == 0:
            return Estimate(point, math.nan, math.nan)
        lo, hi = np.quantile(boot, [a, 1 - a])
        return Estimate(point, float(lo), float(hi))

    return est(tp, tp + fp), est(tp, y.astype(float)), est(saved, total)


# --------------------------------------------------------------------------- the analysis


def _default_steps(total: np.ndarray) -> list[int]:
    t = float(np.median(total))
    return sorted({max(2, int(round(f * t))) for f in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)})


def _choose(rows: list[EarlyRow], method: str, target: float) -> int | None:
    mine = sorted((r for r in rows if r.method == method and r.flagged > 0), key=lambda r: r.step)
    for i, r in enumerate(mine):
        if all(later.precision.estimate >= target for later in mine[i:]):
            return r.step
    return None


def _labelled_runs(store: Store, selection: Selection | None) -> tuple[pl.DataFrame, dict[str, Any], list[str]]:
    """Selected runs with a known outcome (stopped runs left out: the rule decided them)."""
    import polars as pl

    rs = select_runs(store, [], selection=selection)
    warnings = list(rs.warnings)
    frame = rs.frame
    n_stopped = int((frame["status"] == "stopped").sum())
    if n_stopped:
        warnings.append(f"{n_stopped} stopped run(s) left out: stopped early, their outcome is unknown")
    frame = frame.filter((pl.col("status") != "stopped") & pl.col("failed").is_not_null())
    if frame.height < 4 or frame["failed"].sum() == 0 or frame["failed"].all():
        raise SelectionError(f"early: needs failed and successful runs ({frame.height} runs, "
                             f"{int(frame['failed'].sum())} failed); widen --filter or train more seeds")
    return frame, rs.settings, warnings


def early(store: Store, *, selection: Selection | None = None, settings: Settings | None = None,
          steps: Sequence[int] | None = None, target: float = 0.95, folds: str | int = "auto",
          methods: Sequence[str] = ("threshold", "logit")) -> EarlyResult:
    """Predict failed runs from their first K steps; score held-out; choose K (module docstring).

    ``steps``: the K to try (default 5..50% of the median run length); ``folds``: ``config``
    (leave one configuration out), an int k (stratified k-fold over runs) or ``auto`` (``config``
    with >= 3 configurations, else 5-fold).
    """
    cfg = settings or Settings()
    frame, sel_settings, warnings = _labelled_runs(store, selection)
    ids = frame["run_id"].to_list()
    y = frame["failed"].to_numpy().astype(bool)
    base = dict(zip(ids, frame["baseline"].to_list(), strict=True))
    data = _series(store, ids, 10**12 if steps is None else max(steps), sel_settings["split"], sel_settings["metric"])
    facts = {r["run_id"]: r for r in data["facts"].iter_rows(named=True)}
    total = np.array([float(facts[r]["total_steps"] or 0) for r in ids])
    ks = sorted({int(k) for k in steps}) if steps else _default_steps(total)
    groups = [_config_key(facts[r]["config"]) for r in ids]
    if folds == "auto":
        folds = "config" if len(set(groups)) >= 3 else min(5, int(min(y.sum(), (~y).sum())))
    if folds != "config" and int(folds) < 2:
        raise SelectionError("early --folds: give config or a number >= 2 (and train at least 2 failed "
                             "and 2 successful runs)")
    fold, fold_text = _folds(groups, y, folds, cfg.rng(31))
    rows: list[EarlyRow] = []
    per_run: list[dict[str, Any]] = []
    for ki, k in enumerate(ks):
        x = _feature_matrix(data, ids, base, k)
        can_stop = total > k
        x[~can_stop] = np.nan  # a run over by K cannot be stopped at K
        for method in methods:
            flagged = _held_out(x, y, fold, method) & can_stop
            saved = np.where(flagged, total - k, 0.0)
            p, r, s = _bootstrap(flagged, y, saved, total, cfg.resamples, cfg.confidence, cfg.rng(32 + ki))
            full = fit_threshold(x, y) if method == "threshold" else None
            rows.append(EarlyRow(method, k, len(ids), int(y.sum()), int(flagged.sum()), int((flagged & ~y).sum()),
                                 p, r, s, None if full is None else rule_text(k, full, x, y)))
            per_run.extend({"run_id": rid, "config": g, "failed": bool(yy), "total_steps": int(tt), "step": k,
                            "method": method, "flagged": bool(ff)}
                           for rid, g, yy, tt, ff in zip(ids, groups, y, total, flagged, strict=True))
    import polars as pl

    chosen = {m: _choose(rows, m, target) for m in methods}
    settings_out = {**sel_settings, **cfg.describe(), "target": target, "folds": fold_text, "window": WINDOW,
                    "steps": ks, "methods": list(methods)}
    return EarlyResult(rows, chosen, pl.DataFrame(per_run), settings_out, warnings)
