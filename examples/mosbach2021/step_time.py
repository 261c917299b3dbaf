"""Time one training step of the runner for a BERT-large-sized model, to size a sweep.

Measures what ``runner.train`` does per optimiser step -- forward, cross-entropy, backward,
per-layer gradient norms with clipping (``runner.gradnorms``), our AdamW (``runner.optim``) and
the two host synchronisations -- for a randomly initialised model with BERT-large's shape
(24 layers, hidden 1024, 16 heads, 335 M parameters; RoBERTa-large and ALBERT-large-v2 do the
same arithmetic per token), batch 16, at several padded sequence lengths. Nothing is downloaded.

    python examples/mosbach2021/step_time.py                    # cuda if available, else cpu
    python examples/mosbach2021/step_time.py --lengths 32,128 --steps 10 --device cuda

Prints one line per length: seconds per step (median of ``--steps`` timed steps after 3
warm-up steps). Multiply by the steps of a run (examples/mosbach2021/README.md) for its time.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--lengths", default="32,64,96,128", help="padded sequence lengths to time")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per length")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from runner.gradnorms import LayerGradNorms
    from runner.optim import AdamW

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096)  # 2 labels: the default
        model = BertForSequenceClassification(config)
        model.to(device)  # type: ignore[arg-type]
    model.train()
    grads = LayerGradNorms(model)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                lr=2e-5, eps=1e-6, bias_correction=False)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; {n_params / 1e6:.0f} M parameters; batch {args.batch_size}; fp32 "
          f"(TF32 matmul: {torch.backends.cuda.matmul.allow_tf32})")

    def one_step(length: int) -> float:
        ids = torch.randint(1000, config.vocab_size, (args.batch_size, length), generator=gen)
        labels = torch.randint(0, 2, (args.batch_size,), generator=gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        # as runner.train: inputs moved per step, two host syncs (norms, loss value)
        logits = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels.to(device))
        loss.backward()
        grads.compute(max_norm=1.0)
        float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for length in (int(x) for x in args.lengths.split(",")):
        for _ in range(3):
            one_step(length)
        times = [one_step(length) for _ in range(args.steps)]
        tokens = args.batch_size * length
        flops = 6 * n_params * tokens  # forward + backward, dense part
        med = statistics.median(times)
        print(f"length {length:4d}: {med:.4f} s/step  ({flops / med / 1e12:.1f} TFLOP/s dense-equivalent)")


if __name__ == "__main__":
    main()
