"""Cost of the forgetting probe (runner.probe) at the end of a run, CPU.

"ours": :func:`runner.probe.forgetting_probe`, i.e. the L + 1 probed models (k = L..0, one
fine-tuned layer copied in place per k) each scored on the masked sample, where only the chosen
(masked) positions go through the MLM head and texts are batched by length, each batch cut to
its longest text. "reference": the straightforward way, the same L + 1 models scored with the
Hugging Face model's own forward and loss (``model(**inputs, labels=labels)``, batches of 32 in
text order padded to the longest text of the sample, logits at every position). Both from the same loaded
checkpoint; the variants alternate, medians of ``repeats`` runs.

Model: a MiniLM-L6-shaped ``BertForMaskedLM`` (6 layers, hidden 384, vocabulary 30522; MiniLM's
config with a randomly initialised MLM head, because the offline MiniLM has none: the cost does
not depend on the weights). Text: the first 256 RTE dev pairs (the probe's default
``probe_max_texts``), ``max_length`` 128, ``torch.set_num_threads(2)``. Target: ours <= the
reference (ratio <= 1).

Run: ``python -m benchmarks.bench_probe`` (``--quick``: 32 texts, one repeat).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _texts(n: int) -> tuple[list[str], list[str] | None]:
    from runner.tasks import load_task

    glue = os.environ.get("STABSTAT_GLUE_DIR", "/work/shared/data/glue")
    try:
        data = load_task({"task": "rte"}, data_dir=glue)
        return data.dev_a[:n], None if data.dev_b is None else data.dev_b[:n]
    except Exception:  # no GLUE here: generated sentences of the same length
        words = ["the", "model", "reads", "long", "sentences", "about", "cities", "rivers", "and", "people", "who", "travel", "far"]
        return [" ".join(words[(i + j) % len(words)] for j in range(60)) for i in range(n)], None


def _reference(finetuned: Any, mlm: Any, sample: Any) -> list[float]:
    import torch

    from runner.probe import probed_models

    losses = []
    with torch.no_grad():
        for _, model in probed_models(finetuned, mlm):
            tot, cnt = 0.0, 0
            for s in range(0, int(sample.input_ids.shape[0]), 32):
                sl = slice(s, s + 32)
                lab = sample.labels[sl]
                n = int((lab != -100).sum())
                out = model(input_ids=sample.input_ids[sl], attention_mask=sample.attention_mask[sl],
                            token_type_ids=sample.token_type_ids[sl], labels=lab)
                tot, cnt = tot + float(out.loss) * n, cnt + n
            losses.append(tot / cnt)
    return losses


def run(quick: bool = False) -> list[dict[str, object]]:
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from runner.models import load_model, minilm_path
    from runner.probe import forgetting_probe, load_pretrained_mlm, mask_texts

    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    n_texts, repeats = (32, 1) if quick else (256, 3)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BertConfig.from_pretrained(minilm_path())
        torch.manual_seed(0)
        BertForMaskedLM(cfg).save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(minilm_path())
        a, b = _texts(n_texts)
        sample = mask_texts(tok, a, b, max_length=128, seed=0)
        finetuned = load_model(tmp, num_labels=2).eval()
        ours, ref = [], []
        for _ in range(repeats):
            mlm = load_pretrained_mlm(str(Path(tmp)))
            t0 = time.perf_counter()
            rows = forgetting_probe(finetuned, mlm, sample)
            ours.append(time.perf_counter() - t0)
            mlm = load_pretrained_mlm(str(Path(tmp)))
            t0 = time.perf_counter()
            ref_losses = _reference(finetuned, mlm, sample)
            ref.append(time.perf_counter() - t0)
        # the same numbers both ways (k = L..0 in the reference, 0..L in ours)
        ours_losses = [r[1]["mlm_loss"] for r in rows][::-1]
        assert all(abs(x - y) < 1e-4 * max(1.0, abs(y)) for x, y in zip(ours_losses, ref_losses, strict=True))
    o, r = statistics.median(ours), statistics.median(ref)
    layers = cfg.num_hidden_layers
    return [{
        "benchmark": f"forgetting probe, MiniLM-L6 shape, {n_texts} RTE dev pairs x {layers + 1} k, "
                     f"{sample.n_masked} masked tokens",
        "ours": o, "reference": r, "unit": "s per probe", "ratio": o / r, "target": "<= 1",
        "note": f"per k: {o / (layers + 1):.2f} s; load of the pre-trained model excluded",
    }]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
