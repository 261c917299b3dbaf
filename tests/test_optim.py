"""runner.optim.AdamW against torch.optim.AdamW and against the closed-form update."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runner.optim import AdamW  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randn(64, 3, generator=g, dtype=torch.float64)
    w0 = torch.randn(10, 3, generator=g, dtype=torch.float64)
    return x, y, w0


def _train(opt_cls, steps: int, seed: int, **kw) -> list[torch.Tensor]:
    """A small non-convex regression (tanh layer): returns the weights after every step."""
    x, y, w0 = _problem(seed)
    w = w0.clone().requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([w, b], **kw)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((torch.tanh(x @ w + b) - y) ** 2).mean()
        loss.backward()
        opt.step()
        out.append(torch.cat([w.detach().flatten(), b.detach()]).clone())
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("lr", [1e-3, 2e-2])
def test_bias_correction_on_matches_torch_adamw(lr: float, weight_decay: float) -> None:
    kw = {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": weight_decay}
    ours = _train(AdamW, 100, seed=1, bias_correction=True, **kw)
    ref = _train(torch.optim.AdamW, 100, seed=1, **kw)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True), start=1):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), f"step {t}: max diff {(a - b).abs().max()}"
    # the problem must actually move the weights, or agreement would prove nothing
    assert (ours[-1] - ours[0]).abs().max() > 100 * lr * 0.1


def test_bias_correction_off_matches_closed_form() -> None:
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-6, 0.01
    x, y, w0 = _problem(2)
    w = w0.clone().requires_grad_(True)
    opt = AdamW([w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, bias_correction=False)
    # independent numpy reference of the uncorrected update
    p = w0.numpy().copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    xn, yn = x.numpy(), y.numpy()
    for t in range(1, 101):
        opt.zero_grad()
        loss = ((torch.tanh(x @ w) - y) ** 2).mean()
        loss.backward()
        opt.step()
        # gradient of mean((tanh(xW) - y)^2) at the numpy weights
        h = np.tanh(xn @ p)
        g = xn.T @ (2.0 * (h - yn) * (1.0 - h**2)) / h.size
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(w.detach().numpy(), p, rtol=0, atol=1e-9, err_msg=f"step {t}")


def test_off_differs_from_on_early_by_the_missing_factor() -> None:
    """First step: corrected update = lr*sign(g) (m/sqrt(v) = g/|g|); uncorrected = lr*(1-b1)/sqrt(1-b2) * sign(g)."""
    lr, b1, b2 = 1e-3, 0.9, 0.999
    steps = {}
    for bc in (True, False):
        w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
        opt = AdamW([w], lr=lr, betas=(b1, b2), eps=0.0, bias_correction=bc)
        w.grad = torch.tensor([1.0, -2.0, 3.0, -0.5, 0.25], dtype=torch.float64)
        opt.step()
        steps[bc] = w.detach().clone()
    assert torch.allclose(steps[True], -lr * torch.sign(torch.tensor([1.0, -2, 3, -0.5, 0.25], dtype=torch.float64)))
    ratio = (steps[False] / steps[True]).numpy()
    np.testing.assert_allclose(ratio, (1 - b1) / np.sqrt(1 - b2), rtol=1e-12)


def test_bad_arguments() -> None:
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="lr"):
        AdamW([w], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW([w], betas=(1.0, 0.9))
