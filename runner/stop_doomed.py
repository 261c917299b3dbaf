"""``stabstat-run --stop-doomed RULE``: stop a run that its early-stopping rule predicts to fail.

The rule format and its features are :mod:`schemas.stop_rule` (shared with ``stabstat early``,
which prints rules fitted on earlier runs; the runner may not import the analysis side). The
rule reaches every run through the environment variable ``STABSTAT_STOP_DOOMED`` (set by the
CLI), so the local pool's spawned workers and launchers that keep the environment apply it
without a change to their call signatures.

:class:`DoomWatch` collects, per step, what the features need (the training loss, the lowest
layer's gradient norm, the last dev evaluation minus the majority score) and says at the rule's
check step whether the run is doomed. A run is checked once: at the first step at or after
the check step where :meth:`DoomWatch.verdict` is asked (``stabstat-run`` asks every step; the HF
callback at logging steps, where the Trainer's loss is known).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from schemas import stop_rule

__all__ = ["ENV", "DoomWatch", "rule_from_env"]

#: The environment variable carrying the rule text to the training processes.
ENV = "STABSTAT_STOP_DOOMED"


def rule_from_env() -> stop_rule.StopRule | None:
    """The rule of ``$STABSTAT_STOP_DOOMED`` (None when unset or empty)."""
    text = os.environ.get(ENV, "").strip()
    return stop_rule.parse(text) if text else None


class DoomWatch:
    """Evidence of one run for its stop rule.

    ``task``: the run's task facts (``run.json`` ``task``: ``majority``, ``num_labels``,
    ``metrics``); ``total_steps``: the steps planned.
    """

    def __init__(self, rule: stop_rule.StopRule, task: Mapping[str, Any], total_steps: int) -> None:
        self.rule = rule
        self.total_steps = int(total_steps)
        self.check_step = rule.check_step(self.total_steps)
        metrics = list(task.get("metrics") or [])
        self.metric = "accuracy" if "accuracy" in metrics else (metrics[0] if metrics else None)
        majority = (task.get("majority") or {}).get(self.metric) if self.metric else None
        self.majority = None if majority is None else float(majority)
        acc_major = (task.get("majority") or {}).get("accuracy")
        self.majority_loss = stop_rule.majority_loss(acc_major, task.get("num_labels"))
        self.losses: list[float] = []
        self.lower_grads: list[float] = []
        self.dev_minus_majority: float | None = None
        self.checked = False

    def step(self, step: int, loss: float | None, norms: Sequence[float]) -> None:
        """Record optimiser step ``step``'s loss (nats; None when not logged at this step) and
        layer norms (depth order: the first is the lowest layer)."""
        if not self.checked:
            if loss is not None:
                self.losses.append(float(loss))
            if norms:
                self.lower_grads.append(float(norms[0]))

    def evaluated(self, step: int, values: Mapping[str, float]) -> None:
        """Record a dev evaluation at ``step`` (step 0, before training, is not evidence)."""
        if step > 0 and not self.checked and self.metric is not None and self.metric in values \
                and self.majority is not None:
            self.dev_minus_majority = float(values[self.metric]) - self.majority

    def verdict(self, step: int) -> str | None:
        """The first time ``step`` >= the check step (and before the last step): the reason when
        the run is doomed, else None; None at every other call."""
        if self.checked or step < self.check_step or step >= self.total_steps:
            return None
        self.checked = True
        if not self.losses:
            return None
        feats = stop_rule.features(
            self.losses, lower_grads=self.lower_grads or None,
            dev_minus_majority=self.dev_minus_majority, majority_loss_nats=self.majority_loss)
        return self.rule.reason(feats) if self.rule.doomed(feats) else None
