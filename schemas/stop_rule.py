"""The early-stopping rule format shared by ``stabstat early`` (which prints one) and
``stabstat-run --stop-doomed`` (which applies one). Pure Python, no imports of the project.

A rule is one line: the step at which it is checked, then thresholds that must *all* hold
for the run to be judged doomed::

    at=40 loss_ratio>=0.9 loss_vs_majority>=0.95

Features (computed identically by the analysis side and by the runner, see :func:`features`):

``loss_ratio``
    mean training loss over the last ``window`` steps up to the check step divided by the mean
    over the first ``window`` steps (dimensionless; ~1 = the loss has not moved).
``loss_vs_majority``
    the same recent mean loss divided by the loss of predicting the label distribution of a
    majority-class share ``p`` over ``k`` labels (``-p ln p - (1-p) ln((1-p)/(k-1))`` nats);
    >= 1 means the model knows no more than the class balance.
``lower_grad_ratio``
    gradient norm of the lowest layer (smallest depth) at the check step divided by its median
    over the first ``window`` steps; a collapse shows as a ratio far below 1.
``dev_vs_majority``
    the last dev evaluation at or before the check step (step > 0) minus the majority-class
    score (metric units); <= 0 means no better than the majority class.

A threshold on a feature that a run does not have (no layer norms, no evaluation yet) does
not hold, so a rule never stops a run on missing evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_RULE", "FEATURES", "WINDOW", "StopRule", "features", "majority_loss", "parse"]

#: Steps averaged at the start and before the check step (loss) or at the start (grad norms).
WINDOW = 5
#: The feature names a rule may use.
FEATURES = ("loss_ratio", "loss_vs_majority", "lower_grad_ratio", "dev_vs_majority")
#: ``--stop-doomed default``: after 30% of training the lowest layer's gradient norm has fallen to
#: a tenth of its start (the vanishing gradients of Mosbach et al., 2021) and the loss is still
#: no better than 0.9x the class-balance loss. Both must hold: a slow learner keeps its lower
#: layers' gradients and a fast one has left the class-balance loss behind. On 88 MiniLM CPU runs
#: (the earlier demo's 24, a 24-run pilot, the 20 in examples/recorded and the 20 of a measured
#: demo; lr 2e-5 to 2e-4, with and without bias correction) it stopped no run that ended
#: successful, but with a thin margin: three slow starters that ended successful had ratios of
#: 0.11, 0.12 and 0.16 (loss still at the class-balance loss), the failed runs it stopped 0.071 at most.
#: Live, in 100 runs of the demo (examples/demo), it stopped 44, one with bias correction, which
#: trained again without the rule ended at the majority class too.
#: The loss alone is not enough: a rule on ``loss_ratio``/``loss_vs_majority`` only (the previous
#: default) stopped slow but successful runs (warm-up, small lr).
#: A rule needs the features it names: logs without per-layer gradient norms never match it.
DEFAULT_RULE = "at=30% lower_grad_ratio<=0.1 loss_vs_majority>=0.9"

_TERM = re.compile(r"^([a-z_]+)(>=|<=)(-?[0-9.eE+-]+)$")


@dataclass(frozen=True)
class StopRule:
    """A parsed rule: check at ``at`` steps (or ``at_fraction`` of the run's total steps) that
    every ``(feature, op, value)`` holds."""

    at: int | None
    at_fraction: float | None
    terms: tuple[tuple[str, str, float], ...]

    def check_step(self, total_steps: int) -> int:
        """The optimiser step (1-based) at which the rule is checked for a run of ``total_steps``."""
        if self.at is not None:
            return max(1, min(self.at, total_steps))
        return max(1, min(total_steps, math.ceil(float(self.at_fraction or 0.0) * total_steps)))

    def doomed(self, feats: Mapping[str, float | None]) -> bool:
        """True when every threshold holds; a missing or non-finite feature never holds."""
        for name, op, value in self.terms:
            x = feats.get(name)
            if x is None or not math.isfinite(x):
                return False
            if not (x >= value if op == ">=" else x <= value):
                return False
        return True

    def reason(self, feats: Mapping[str, float | None]) -> str:
        """The thresholds with the run's values, e.g. ``loss_ratio=0.99>=0.95``."""
        def val(n: str) -> float:
            x = feats.get(n)
            return math.nan if x is None else float(x)

        return " ".join(f"{n}={val(n):.4g}{op}{v:g}" for n, op, v in self.terms)

    def text(self) -> str:
        """The rule in the format :func:`parse` reads."""
        at = f"{self.at}" if self.at is not None else f"{float(self.at_fraction or 0) * 100:g}%"
        return " ".join([f"at={at}"] + [f"{n}{op}{v:g}" for n, op, v in self.terms])


def parse(text: str) -> StopRule:
    """Parse a rule line (``default`` is :data:`DEFAULT_RULE`).

    Raises
    ------
    ValueError
        With one line naming the bad term and the expected form.
    """
    src = DEFAULT_RULE if text.strip() == "default" else text
    at: int | None = None
    frac: float | None = None
    terms: list[tuple[str, str, float]] = []
    for tok in src.replace(",", " ").split():
        if tok.startswith("at="):
            v = tok[3:]
            try:
                if v.endswith("%"):
                    frac = float(v[:-1]) / 100.0
                    if not 0 < frac <= 1:
                        raise ValueError
                else:
                    at = int(v)
                    if at < 1:
                        raise ValueError
            except ValueError:
                raise ValueError(f"stop rule {text!r}: bad {tok!r}; expected at=STEPS (>= 1) or at=PERCENT% "
                                 "(e.g. at=40 or at=30%)") from None
            continue
        m = _TERM.match(tok)
        if m is None or m.group(1) not in FEATURES:
            raise ValueError(f"stop rule {text!r}: bad term {tok!r}; expected FEATURE>=VALUE or FEATURE<=VALUE "
                             f"with FEATURE one of {', '.join(FEATURES)}")
        try:
            value = float(m.group(3))
        except ValueError:
            raise ValueError(f"stop rule {text!r}: bad number in {tok!r}") from None
        terms.append((m.group(1), m.group(2), value))
    if at is None and frac is None:
        raise ValueError(f"stop rule {text!r}: no check step; start it with at=STEPS or at=PERCENT%")
    if not terms:
        raise ValueError(f"stop rule {text!r}: no thresholds; add e.g. loss_ratio>=0.95")
    return StopRule(at=at, at_fraction=frac, terms=tuple(terms))


def majority_loss(majority: float | None, num_labels: int | None) -> float | None:
    """Cross-entropy (nats) of predicting a label distribution with majority share ``majority``
    over ``num_labels`` labels (the rest equal); None when unknown or degenerate."""
    if majority is None or not num_labels or num_labels < 2 or not 0 < majority < 1:
        return None
    p, k = float(majority), int(num_labels)
    return -p * math.log(p) - (1 - p) * math.log((1 - p) / (k - 1))


def _mean(xs: Sequence[float]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else None


def features(losses: Sequence[float], *, lower_grads: Sequence[float] | None = None,
             dev_minus_majority: float | None = None, majority_loss_nats: float | None = None,
             window: int = WINDOW) -> dict[str, float | None]:
    """The rule's features at the last step of ``losses`` (per-step training losses, step 1
    first, shape (K,)); ``lower_grads`` the lowest layer's norm per step (same shape) when
    logged. Features that cannot be computed are None."""
    w = max(1, min(window, len(losses)))
    start = _mean(losses[:w])
    recent = _mean(losses[-w:])
    out: dict[str, float | None] = dict.fromkeys(FEATURES)
    if start is not None and recent is not None and start > 0:
        out["loss_ratio"] = recent / start
    if recent is not None and majority_loss_nats:
        out["loss_vs_majority"] = recent / majority_loss_nats
    if lower_grads is not None and len(lower_grads) > 0:
        g0 = sorted(x for x in lower_grads[:w] if x is not None and math.isfinite(x))
        last = lower_grads[-1]
        if g0 and g0[len(g0) // 2] > 0 and last is not None and math.isfinite(last):
            out["lower_grad_ratio"] = last / g0[len(g0) // 2]
    out["dev_vs_majority"] = dev_minus_majority
    return out
