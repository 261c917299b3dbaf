"""End-of-run probes; ``forgetting``: Mosbach et al. (2021, section 4)'s catastrophic-forgetting test.

After fine-tuning, for k = 0..L (L encoder layers) the probe builds the model whose top k
encoder layers come from the pre-trained checkpoint and whose lower L - k layers are the
fine-tuned ones, puts the pre-trained masked-language-model head on top and measures its MLM
loss on a fixed masked sample of text. A run whose damage is confined to the top layers
recovers the pre-trained perplexity once those layers are reset.

Definitions (README, "The forgetting probe"):

* k counts encoder layers from the top. The embeddings go with the bottom layer: they are the
  fine-tuned ones for k < L and the pre-trained ones at k = L, so k = L *is* the pre-trained
  model and k = 0 is the fine-tuned encoder under the pre-trained head (both exactly; tested).
* The MLM head is the pre-trained checkpoint's. In BERT-like models its output matrix is tied
  to the word embeddings, so it follows the embeddings (fine-tuned for k < L).
* Text: the task's dev texts (pairs stay pairs, as in BERT's pre-training input) or the lines
  of ``probe_file``; the first ``probe_max_texts`` of them, truncated to ``max_length`` tokens.
* Masks: BERT's rule -- 15% of the non-special tokens of each text (at least one) are chosen;
  of those 80% become ``[MASK]``, 10% a random token, 10% stay -- drawn from
  ``numpy.random.default_rng(probe_seed)``, so every run of a task is probed on the same
  masked tokens.
* Scores over all chosen tokens: ``mlm_loss`` (mean cross-entropy, nats per token),
  ``mlm_perplexity`` = exp(mlm_loss), ``mlm_accuracy`` (share predicted exactly).

Logged as evaluations of the run-log contract v1 (schemas/README.md, "Probe evaluations"):
split ``probe.k<k>``, step = the run's final step, one row per score.

Memory: one extra model (the pre-trained MLM model); it is turned into each probed model in
place, from k = L down to 0, copying one fine-tuned layer per k, so no pre-trained weights
are needed twice and nothing else is copied.

A model without a pre-trained MLM head (the offline MiniLM sentence encoder, ``tiny``, a
checkpoint of ``*Model`` only) or without per-layer weights (ALBERT shares one layer across
depths) cannot be probed: :func:`run_probes` says so in one line on stderr and the run goes on.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stabstat.errors import ConfigError, InputFormatError

__all__ = [
    "DEFAULT_MAX_TEXTS",
    "MASK_RATE",
    "PROBES",
    "MaskedSample",
    "ProbeUnavailable",
    "check_probe_file",
    "forgetting_probe",
    "load_pretrained_mlm",
    "mask_texts",
    "mlm_scores",
    "probe_split",
    "probe_texts_of",
    "probed_models",
    "read_probe_file",
    "run_probes",
]

#: Probes a run may ask for (sweep key ``probe``).
PROBES = ("forgetting",)
#: Evaluation split of the forgetting probe at k: ``probe.k<k>``.
SPLIT_PREFIX = "probe.k"
#: Share of the non-special tokens chosen for prediction (BERT).
MASK_RATE = 0.15
#: Of the chosen tokens: this share becomes [MASK], the next 10% a random token, the rest stay.
MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.8, 0.1
#: Texts probed when ``probe_max_texts`` is not set (the first ones of the dev split or file).
DEFAULT_MAX_TEXTS = 256
#: Logits in memory at once are at most about this many floats (batch x length x vocabulary).
_MAX_LOGIT_FLOATS = 64 * 1024 * 1024


class ProbeUnavailable(ConfigError):
    """The model cannot be probed (no pre-trained MLM head, no per-layer weights); the run goes on."""


def probe_split(k: int) -> str:
    """The evaluation split of the forgetting probe with the top ``k`` layers reset."""
    return f"{SPLIT_PREFIX}{int(k)}"


# --------------------------------------------------------------------------- text and masks


@dataclass(frozen=True)
class MaskedSample:
    """A masked probe sample. Tensors of shape ``(n_texts, length)``: ``input_ids`` (masked),
    ``attention_mask``, ``token_type_ids`` (None for models without), ``labels`` (the original
    token id at chosen positions, -100 elsewhere, as HF's MLM loss expects)."""

    input_ids: Any
    attention_mask: Any
    token_type_ids: Any
    labels: Any

    @property
    def n_masked(self) -> int:
        """Number of chosen (predicted) tokens."""
        return int((self.labels != -100).sum())


def read_probe_file(path: str | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a UTF-8 text file (one text per line).

    Raises
    ------
    InputFormatError
        Missing, unreadable or empty file (naming ``probe_file`` and the fix).
    """
    p = Path(path).expanduser()
    try:
        lines = [ln.strip() for ln in p.read_text("utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"probe_file = {str(path)!r}: cannot read ({exc}); give a UTF-8 text file, "
                               "one text per line") from None
    texts = [ln for ln in lines if ln]
    if not texts:
        raise InputFormatError(f"probe_file = {str(path)!r}: no text in it; give one text per line")
    return texts


def check_probe_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputFormatError` unless ``path`` is a readable, non-empty text file."""
    read_probe_file(path)


def mask_texts(tokenizer: Any, a: Sequence[str], b: Sequence[str] | None = None, *, max_length: int,
               seed: int, rate: float = MASK_RATE) -> MaskedSample:
    """Tokenise ``a`` (and pairs ``b``) and mask them with BERT's 80/10/10 rule.

    Per text, ``max(1, round(rate * m))`` of its ``m`` non-special tokens are chosen (BERT's
    pre-training data picks a fixed share per sequence); each chosen token becomes the mask
    token with probability 0.8, a uniformly random vocabulary id with 0.1, and stays with 0.1.
    The draws come from ``numpy.random.default_rng(seed)`` only, so the same texts,
    tokenizer and seed give the same sample in every process.
    """
    import torch

    if tokenizer.mask_token_id is None:
        raise ProbeUnavailable("the tokenizer has no mask token; the forgetting probe needs an MLM tokenizer")
    enc = tokenizer(list(a), None if b is None else list(b), truncation=True, max_length=max_length,
                    padding="longest", return_special_tokens_mask=True, return_tensors="np")
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    attn = np.asarray(enc["attention_mask"], dtype=np.int64)
    candidates = (attn == 1) & (np.asarray(enc["special_tokens_mask"]) == 0)
    rng = np.random.default_rng(seed)
    labels = np.full_like(ids, -100)
    masked = ids.copy()
    vocab = len(tokenizer)
    for i in range(ids.shape[0]):  # per text: its own count of chosen tokens
        pos = np.flatnonzero(candidates[i])
        if pos.size == 0:
            continue
        chosen = np.sort(rng.choice(pos, size=max(1, round(rate * pos.size)), replace=False))
        u = rng.random(chosen.size)
        random_ids = rng.integers(0, vocab, size=chosen.size)
        labels[i, chosen] = ids[i, chosen]
        to_mask = u < MASK_TOKEN_SHARE
        to_random = (u >= MASK_TOKEN_SHARE) & (u < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
        masked[i, chosen[to_mask]] = tokenizer.mask_token_id
        masked[i, chosen[to_random]] = random_ids[to_random]
    tt = enc.get("token_type_ids")
    return MaskedSample(torch.from_numpy(masked), torch.from_numpy(attn),
                        None if tt is None else torch.from_numpy(np.asarray(tt, dtype=np.int64)),
                        torch.from_numpy(labels))


# --------------------------------------------------------------------------- models


def load_pretrained_mlm(name: str) -> Any:
    """The pre-trained ``*ForMaskedLM`` model of ``name`` (a run config's ``model``), in eval mode.

    Raises
    ------
    ProbeUnavailable
        ``tiny`` (random weights), a model type without an MLM class, or a checkpoint that does
        not hold the MLM head's weights (e.g. the offline MiniLM sentence encoder).
    """
    import transformers
    from transformers import AutoModelForMaskedLM

    from runner.models import resolve_model_path

    if name == "tiny":
        raise ProbeUnavailable("model 'tiny' is random: there is no pre-trained checkpoint to reset layers to")
    path = resolve_model_path(name)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the loading report is ours to judge below
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (ValueError, KeyError) as exc:  # a model type with no *ForMaskedLM class
        raise ProbeUnavailable(f"model {name!r} has no masked-LM class ({str(exc).splitlines()[0]})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    base = model.base_model_prefix
    missing = sorted(info.get("missing_keys", ()))
    head = [k for k in missing if not k.startswith(f"{base}.")]
    if head:
        raise ProbeUnavailable(f"model {name!r} has no pre-trained MLM head (checkpoint lacks {head[0]}, "
                               f"{len(head)} head weights); use a *ForMaskedLM checkpoint such as "
                               "bert-base-uncased")
    if missing:  # a random encoder weight would make k = L something else than the pre-trained model
        raise ProbeUnavailable(f"model {name!r}: the checkpoint lacks {missing[0]} ({len(missing)} encoder "
                               "weights), so it is not the pre-trained model the run started from")
    return model.eval()


def _stack(model: Any, what: str) -> tuple[Any, Any]:
    """``(embeddings, layers)`` of a model's encoder: its ModuleList of L layers."""
    base = model.base_model
    encoder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(encoder, "layer", None)
    embeddings = getattr(base, "embeddings", None)
    if layers is None or embeddings is None or len(layers) == 0:
        raise ProbeUnavailable(f"the {what} model ({type(model).__name__}) has no per-layer encoder weights "
                               "(encoder.layer.<i>); ALBERT-style shared layers cannot be reset one by one")
    return embeddings, layers


def probed_models(finetuned: Any, mlm: Any) -> Iterator[tuple[int, Any]]:
    """Turn ``mlm`` (the pre-trained MLM model) into each probed model in place; yield
    ``(k, mlm)`` for k = L, L-1, ..., 0 (top k layers pre-trained, the rest from ``finetuned``).

    At k = L it is untouched; going from k to k - 1 copies the fine-tuned layer L - k (and,
    at k = L - 1, the fine-tuned embeddings) into it. ``mlm`` is left as the k = 0 model.
    """
    import torch

    emb_ft, layers_ft = _stack(finetuned, "fine-tuned")
    emb_pt, layers_pt = _stack(mlm, "pre-trained")
    n = len(layers_pt)
    if len(layers_ft) != n:
        raise ProbeUnavailable(f"the fine-tuned model has {len(layers_ft)} layers, the pre-trained {n}")
    yield n, mlm
    with torch.no_grad():
        for k in range(n - 1, -1, -1):
            i = n - k - 1  # the layer that turns fine-tuned at this k
            if i == 0:
                # copy_ into the same Parameters: a tied output matrix follows the word embeddings
                emb_pt.load_state_dict(emb_ft.state_dict())
            layers_pt[i].load_state_dict(layers_ft[i].state_dict())
            yield k, mlm


def _head(mlm: Any) -> Any | None:
    """The MLM head as one module over hidden states (BERT ``cls``, RoBERTa ``lm_head``), or None."""
    heads = [m for name, m in mlm.named_children() if name != mlm.base_model_prefix]
    return heads[0] if len(heads) == 1 else None


def masked_logits(mlm: Any, sample: MaskedSample, device: Any, *, batch_size: int = 32) -> Any:
    """Logits at the chosen positions, shape ``(n_masked, vocabulary)`` (float32, on CPU), in
    row-major order of the positions. Only the chosen positions go through the head.

    Texts are batched by length and each batch is cut to its longest text (right padding only),
    so short texts do not pay for the longest one; the order of the result does not change.
    """
    import torch

    head = _head(mlm)
    n, width = (int(x) for x in sample.input_ids.shape)
    vocab = int(mlm.get_output_embeddings().weight.shape[0])
    if head is None:  # the full model's logits: bound the rows so they fit
        batch_size = max(1, min(batch_size, _MAX_LOGIT_FLOATS // max(1, width * vocab)))
    lengths = sample.attention_mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    per_row: list[Any] = [None] * n
    mlm.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            w = int(lengths[idx].max())
            if not bool((sample.attention_mask[idx, :w].sum(dim=1) == lengths[idx]).all()):
                w = width  # left padding somewhere: keep the full width
            inputs = {"input_ids": sample.input_ids[idx, :w].to(device),
                      "attention_mask": sample.attention_mask[idx, :w].to(device)}
            if sample.token_type_ids is not None:
                inputs["token_type_ids"] = sample.token_type_ids[idx, :w].to(device)
            chosen = sample.labels[idx, :w] != -100
            if head is not None:
                hidden = mlm.base_model(**inputs)[0]
                out = head(hidden[chosen.to(device)]).float().cpu()
            else:
                out = mlm(**inputs).logits[chosen.to(device)].float().cpu()
            for row, part in zip(idx.tolist(), out.split(chosen.sum(dim=1).tolist()), strict=True):
                per_row[row] = part
    parts = [p for p in per_row if p is not None]
    return torch.cat(parts) if parts else torch.zeros((0, vocab))


def mlm_scores(mlm: Any, sample: MaskedSample, device: Any) -> dict[str, float | None]:
    """``mlm_loss`` (mean cross-entropy over the chosen tokens, nats), ``mlm_perplexity``
    (exp of it; None when it overflows) and ``mlm_accuracy`` (share of chosen tokens whose
    arg-max logit is the original token)."""
    import torch

    logits = masked_logits(mlm, sample, device).double()
    target = sample.labels[sample.labels != -100]
    if target.numel() == 0:
        return {"mlm_loss": None, "mlm_perplexity": None, "mlm_accuracy": None}
    loss = float(torch.nn.functional.cross_entropy(logits, target))
    ppl = math.exp(loss) if math.isfinite(loss) and loss < 700 else None
    acc = float((logits.argmax(dim=-1) == target).double().mean())
    return {"mlm_loss": loss if math.isfinite(loss) else None, "mlm_perplexity": ppl, "mlm_accuracy": acc}


def forgetting_probe(finetuned: Any, pretrained: str | Any, sample: MaskedSample, *, device: Any = "cpu"
                     ) -> list[tuple[int, dict[str, float | None]]]:
    """The scores of every probed model, ``[(k, scores), ...]`` for k = 0..L in that order.

    ``pretrained``: a model name for :func:`load_pretrained_mlm`, or an already loaded
    ``*ForMaskedLM`` model (changed in place). ``finetuned`` is not changed.
    """
    was_training = finetuned.training
    finetuned.eval()
    try:
        mlm = load_pretrained_mlm(pretrained) if isinstance(pretrained, str) else pretrained
        mlm.to(device)
        rows = [(k, mlm_scores(model, sample, device)) for k, model in probed_models(finetuned, mlm)]
    finally:
        finetuned.train(was_training)
    return sorted(rows, key=lambda r: r[0])


# --------------------------------------------------------------------------- entry point


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_probes(probes: Sequence[str], *, model: Any, pretrained: str, tokenizer: Any,
               texts: tuple[Sequence[str], Sequence[str] | None], logger: Any, step: int,
               max_length: int, seed: int = 0, max_texts: int | None = None, device: Any = "cpu",
               say: Callable[[str], None] = _say) -> dict[str, Any] | None:
    """Run the requested probes on a fine-tuned ``model`` and log them at ``step``.

    ``texts``: ``(a, b)`` with ``b`` None for single texts; the first ``max_texts`` are used.
    Logged per k: ``logger.log_eval(step, "probe.k<k>", scores)``. When the model cannot be
    probed (or the probe raises, e.g. out of memory), one line goes to ``say`` (stderr) and
    nothing is logged; the caller goes on, so a trained run is never lost to its probe.
    Returns ``{"seconds", "n_texts", "n_masked", "layers"}`` of the forgetting probe, or None.
    """
    if "forgetting" not in probes:
        return None
    a, b = texts
    if max_texts is not None:
        a, b = a[:max_texts], None if b is None else b[:max_texts]
    t0 = time.perf_counter()
    try:
        sample = mask_texts(tokenizer, a, b, max_length=max_length, seed=seed)
        rows = forgetting_probe(model, pretrained, sample, device=device)
    except ProbeUnavailable as exc:
        say(f"probe forgetting: skipped: {exc}")
        return None
    except Exception as exc:  # e.g. out of memory: the trained run is kept, without probe rows
        first = (str(exc).strip().splitlines() or [""])[0]
        say(f"probe forgetting: failed: {type(exc).__name__}: {first} (the run itself is kept)")
        return None
    for k, scores in rows:
        logger.log_eval(step, probe_split(k), scores)
    return {"seconds": time.perf_counter() - t0, "n_texts": len(a), "n_masked": sample.n_masked,
            "layers": len(rows) - 1}


def probe_texts_of(config: Mapping[str, Any], dev_a: Sequence[str], dev_b: Sequence[str] | None
                   ) -> tuple[Sequence[str], Sequence[str] | None]:
    """The probe's texts for a run config: ``probe_file``'s lines, else the dev texts."""
    if config.get("probe_file"):
        return read_probe_file(str(config["probe_file"])), None
    return dev_a, dev_b
