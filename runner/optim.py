"""AdamW with a switch for Adam's bias correction.

The original BERT optimiser (``BertAdam`` in Devlin et al. 2019's code, and the Hugging Face
``AdamW(correct_bias=False)`` that copied it) leaves out Adam's bias correction. Mosbach et al.
(ICLR 2021) trace part of BERT's fine-tuning instability to that omission: without the
correction the early updates are larger by the factor ``(1 - beta1^t) / sqrt(1 - beta2^t)``
relative to the corrected ones (~6.6 near t=15 for betas (0.9, 0.999)), so a small learning rate
acts like a much larger one at the start of training.

Update for parameter ``p`` with gradient ``g`` at step ``t`` (1-based), decoupled weight decay
as in :class:`torch.optim.AdamW` (applied to the parameter before the Adam update)::

    p   <- p * (1 - lr * weight_decay)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    bias_correction=True : p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    bias_correction=False: p <- p - lr * m / (sqrt(v) + eps)

With ``bias_correction=True`` this is :class:`torch.optim.AdamW` (non-amsgrad); the tests check
agreement within 1e-6 over 100 steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["AdamW"]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay and an optional bias correction.

    Parameters
    ----------
    params
        Parameters or parameter groups (as for any :class:`torch.optim.Optimizer`).
    lr
        Learning rate (per step; the scheduler in :mod:`runner.train` overwrites ``group["lr"]``).
    betas
        Decay rates of the first and second moment estimates.
    eps
        Added to ``sqrt(v)`` (after the bias correction when that is on), as in torch.
    weight_decay
        Decoupled weight decay per unit learning rate.
    bias_correction
        ``True``: Adam's ``1/(1-beta^t)`` corrections (= ``torch.optim.AdamW``);
        ``False``: the BERT / ``BertAdam`` variant without them.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"AdamW: lr must be >= 0, got {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise ValueError(f"AdamW: eps must be >= 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"AdamW: weight_decay must be >= 0, got {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "bias_correction": bool(bias_correction),
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update; returns the closure's loss when a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr: float = group["lr"]
            beta1, beta2 = group["betas"]
            eps: float = group["eps"]
            wd: float = group["weight_decay"]
            correct: bool = group["bias_correction"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t: int = state["step"]
                m: torch.Tensor = state["exp_avg"]
                v: torch.Tensor = state["exp_avg_sq"]

                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                m.lerp_(grad, 1.0 - beta1)  # m <- beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if correct:
                    step_size = lr / (1.0 - beta1**t)
                    denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)
                else:
                    step_size = lr
                    denom = v.sqrt().add_(eps)
                p.addcdiv_(m, denom, value=-step_size)
        return loss
