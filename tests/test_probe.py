"""runner.probe: the forgetting probe (Mosbach et al. 2021, section 4).

The "pre-trained" model is a tiny random ``BertForMaskedLM`` saved with MiniLM's tokenizer to a
temp folder; the fine-tuned one is a sequence classifier loaded from it and trained a few steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from runner import probe, sweep  # noqa: E402
from stabstat.errors import ConfigError  # noqa: E402

LAYERS = 3
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "old", "dogs", "ran", "far", "into", "green", "hills", "under", "grey", "skies", "and", "people", "read", "long", "books", "about", "rivers", "stones", "music", "cities"]


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 25)))) for _ in range(n)]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForMaskedLM (3 layers, hidden 32) + MiniLM's tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertForMaskedLM

    from runner.models import load_tokenizer

    d = tmp_path_factory.mktemp("tiny-mlm")
    torch.manual_seed(1234)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)  # type: ignore[call-arg]
    BertForMaskedLM(cfg).save_pretrained(d)
    load_tokenizer("minilm").save_pretrained(d)
    return d


def _finetuned(path: Path, steps: int = 5) -> Any:
    """A classifier from ``path`` trained ``steps`` steps with a large lr, so every layer moves."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(_texts(16, 1), padding=True, return_tensors="pt")
    labels = torch.arange(16) % 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _sample(path: Path, n: int = 12, seed: int = 0) -> probe.MaskedSample:
    from transformers import AutoTokenizer

    return probe.mask_texts(AutoTokenizer.from_pretrained(path), _texts(n, 7), max_length=32, seed=seed)


def _reference_logits(model: Any, sample: probe.MaskedSample) -> Any:
    """Full forward of an independent model, logits at the chosen positions."""
    with torch.no_grad():
        out = model(input_ids=sample.input_ids, attention_mask=sample.attention_mask,
                    token_type_ids=sample.token_type_ids).logits
    return out[sample.labels != -100]


def _state(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_k_L_is_the_pretrained_model_and_k_0_the_finetuned_encoder(pretrained_dir: Path) -> None:
    from transformers import BertForMaskedLM

    fine = _finetuned(pretrained_dir)
    fine_state = _state(fine)
    sample = _sample(pretrained_dir)
    mlm = probe.load_pretrained_mlm(str(pretrained_dir))
    seen: list[int] = []
    logits: dict[int, Any] = {}
    states: dict[int, dict[str, Any]] = {}
    for k, model in probe.probed_models(fine, mlm):
        assert model is mlm  # changed in place: one extra model, never a second copy
        seen.append(k)
        logits[k] = probe.masked_logits(model, sample, "cpu")
        states[k] = _state(model)
    assert seen == [LAYERS, 2, 1, 0]

    pre = BertForMaskedLM.from_pretrained(pretrained_dir).eval()
    # k = L: the pre-trained checkpoint itself, bit for bit, and its logits
    assert all(torch.equal(states[LAYERS][n], v) for n, v in pre.state_dict().items())
    torch.testing.assert_close(logits[LAYERS], _reference_logits(pre, sample), rtol=1e-5, atol=1e-5)
    # k = 0: the fine-tuned encoder (embeddings and every layer) under the pre-trained head
    ref = BertForMaskedLM.from_pretrained(pretrained_dir).eval()
    ref.bert.load_state_dict({n[len("bert."):]: v for n, v in fine.state_dict().items()
                              if n.startswith("bert.") and not n.startswith("bert.pooler.")})
    assert all(torch.equal(states[0][n], v) for n, v in ref.state_dict().items())
    torch.testing.assert_close(logits[0], _reference_logits(ref, sample), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0], logits[LAYERS])  # fine-tuning did change the encoder
    # in between: layer i is pre-trained exactly when i >= L - k; embeddings fine-tuned for k < L
    for k in (1, 2):
        for i in range(LAYERS):
            src = pre if i >= LAYERS - k else ref
            name = f"bert.encoder.layer.{i}.attention.self.query.weight"
            assert torch.equal(states[k][name], src.state_dict()[name]), (k, i)
        emb = "bert.embeddings.word_embeddings.weight"
        assert torch.equal(states[k][emb], ref.state_dict()[emb])
        # the tied output matrix follows the embeddings; the head's own weights stay pre-trained
        assert torch.equal(states[k]["cls.predictions.decoder.weight"], states[k][emb])
        head = "cls.predictions.transform.dense.weight"
        assert torch.equal(states[k][head], pre.state_dict()[head])
    # the fine-tuned model is not touched
    assert all(torch.equal(fine.state_dict()[n], v) for n, v in fine_state.items())


def test_scores_are_the_mean_cross_entropy_over_the_masked_tokens(pretrained_dir: Path) -> None:
    from transformers import BertForMaskedLM

    sample = _sample(pretrained_dir, n=20)
    pre = BertForMaskedLM.from_pretrained(pretrained_dir).eval()
    scores = probe.mlm_scores(pre, sample, "cpu")
    with torch.no_grad():  # HF's own MLM loss: mean CE over labels != -100
        hf_loss = float(pre(input_ids=sample.input_ids, attention_mask=sample.attention_mask,
                            token_type_ids=sample.token_type_ids, labels=sample.labels).loss)
    assert scores["mlm_loss"] == pytest.approx(hf_loss, rel=1e-5)
    assert scores["mlm_perplexity"] == pytest.approx(np.exp(hf_loss), rel=1e-5)
    z = _reference_logits(pre, sample)
    acc = float((z.argmax(-1) == sample.labels[sample.labels != -100]).float().mean())
    assert scores["mlm_accuracy"] == pytest.approx(acc)


def test_masks_follow_berts_80_10_10_rule_and_repeat_across_processes(pretrained_dir: Path) -> None:
    from transformers import AutoTokenizer

    texts = _texts(1500, 3)
    tok_a = AutoTokenizer.from_pretrained(pretrained_dir)
    tok_b = AutoTokenizer.from_pretrained(pretrained_dir)  # a fresh tokenizer, as in another run
    s1 = probe.mask_texts(tok_a, texts, max_length=64, seed=0)
    s2 = probe.mask_texts(tok_b, texts, max_length=64, seed=0)
    for name in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(getattr(s1, name), getattr(s2, name)), name
    s3 = probe.mask_texts(tok_a, texts, max_length=64, seed=1)
    assert not torch.equal(s1.labels, s3.labels)

    original = tok_a(texts, truncation=True, max_length=64, padding="longest", return_tensors="pt",
                     return_special_tokens_mask=True)
    chosen = s1.labels != -100
    special = original["special_tokens_mask"].bool() | (original["attention_mask"] == 0)
    assert not (chosen & special).any()  # [CLS], [SEP] and padding are never chosen
    assert torch.equal(s1.labels[chosen], original["input_ids"][chosen])
    per_text = chosen.sum(1)
    eligible = (~special).sum(1)
    expected = torch.clamp(torch.round(eligible.double() * 0.15), min=1).long()
    # Python's round (half to even) vs torch's round (half to even) agree
    assert torch.equal(per_text, expected)
    n = int(chosen.sum())
    masked = int((s1.input_ids[chosen] == tok_a.mask_token_id).sum())
    same = int((s1.input_ids[chosen] == original["input_ids"][chosen]).sum())
    other = n - masked - same
    # 80 / 10 / 10 within 4 binomial SEs (a random token equal to the original counts as "same")
    for count, p in ((masked, 0.8), (same, 0.1), (other, 0.1)):
        se = (p * (1 - p) / n) ** 0.5
        assert abs(count / n - p) < 4 * se + 1 / n, (count, n, p)
    assert torch.equal(s1.input_ids[~chosen], original["input_ids"][~chosen])


def test_a_model_without_an_mlm_head_gets_one_line_and_nothing_is_logged() -> None:
    from runner.models import load_model, load_tokenizer

    tok = load_tokenizer("minilm")
    logged: list[Any] = []
    lines: list[str] = []

    class Logger:
        def log_eval(self, *args: Any) -> None:
            logged.append(args)

    for name in ("minilm", "tiny"):
        model = load_model(name, num_labels=2)
        out = probe.run_probes(["forgetting"], model=model, pretrained=name, tokenizer=tok,
                               texts=(_texts(4, 0), None), logger=Logger(), step=10, max_length=32,
                               say=lines.append)
        assert out is None
    assert logged == []
    assert len(lines) == 2 and all("\n" not in ln for ln in lines)
    assert lines[0].startswith("probe forgetting: skipped: model 'minilm' has no pre-trained MLM head")
    assert "*ForMaskedLM" in lines[0]
    assert "'tiny' is random" in lines[1]


def test_a_probe_that_raises_keeps_the_run(monkeypatch: pytest.MonkeyPatch, pretrained_dir: Path) -> None:
    from transformers import AutoTokenizer

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    monkeypatch.setattr(probe, "forgetting_probe", boom)
    lines: list[str] = []
    out = probe.run_probes(["forgetting"], model=None, pretrained=str(pretrained_dir),
                           tokenizer=AutoTokenizer.from_pretrained(pretrained_dir), texts=(_texts(3, 0), None),
                           logger=None, step=1, max_length=16, say=lines.append)
    assert out is None
    assert lines == ["probe forgetting: failed: RuntimeError: CUDA out of memory. (the run itself is kept)"]


def test_sweep_keys_are_checked_and_absent_keys_keep_run_ids(tmp_path: Path) -> None:
    base = {"task": "synthetic", "model": "tiny"}
    plain = sweep.plan({"config": base})[0]
    assert not set(sweep.PROBE_KEYS) & set(plain.config)
    assert sweep.plan({"config": {**base, "probe": [], "probe_seed": None}})[0].run_id == plain.run_id
    text = tmp_path / "probe.txt"
    text.write_text("one text\n\nanother text\n")
    p = sweep.plan({"config": {**base, "probe": ["forgetting"], "probe_file": str(text)}})[0]
    assert p.config["probe"] == ["forgetting"] and p.run_id != plain.run_id
    assert probe.read_probe_file(text) == ["one text", "another text"]
    with pytest.raises(ConfigError, match=r"probe 'forgeting' is unknown \(did you mean 'forgetting'\?\)"):
        sweep.plan({"config": {**base, "probe": ["forgeting"]}})
    with pytest.raises(ConfigError, match="probe_file = .*missing.txt.*cannot read"):
        sweep.plan({"config": {**base, "probe": ["forgetting"], "probe_file": str(tmp_path / "missing.txt")}})
    with pytest.raises(ConfigError, match=r"probe_seed is set but no probe is asked for; add probe = \[\"forgetting\"\]"):
        sweep.plan({"config": {**base, "probe_seed": 3}})
    with pytest.raises(ConfigError, match="probe_max_texts = 0 is below the minimum 1"):
        sweep.plan({"config": {**base, "probe": ["forgetting"], "probe_max_texts": 0}})


@pytest.mark.slow
def test_a_run_without_an_mlm_head_says_so_and_completes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    from runner import train
    from stabstat.validate import validate_run

    torch.set_num_threads(1)
    p = sweep.plan({"config": {"task": "synthetic", "model": "minilm", "max_length": 16, "n_train": 32,
                               "max_steps": 2, "batch_size": 16, "probe": ["forgetting"]}})[0]
    assert train.run_planned(p, tmp_path, threads=1) == "completed"
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("probe forgetting")]
    assert len(err) == 1 and "no pre-trained MLM head" in err[0]
    assert validate_run(tmp_path / p.run_id) == []
    splits = set(pq.read_table(tmp_path / p.run_id / "evals.parquet").column("split").to_pylist())
    assert splits == {"dev"}


@pytest.mark.slow
def test_hf_callback_runs_the_probe_at_train_end(tmp_path: Path, pretrained_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForMaskedLM

    from runner.hf_callback import StabstatCallback
    from stabstat.validate import validate_run

    class Data(torch.utils.data.Dataset):  # type: ignore[misc]
        def __init__(self, n: int) -> None:
            self.x = torch.randint(1000, 2000, (n, 12), generator=torch.Generator().manual_seed(n))

        def __len__(self) -> int:
            return int(self.x.shape[0])

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.x[i], "attention_mask": torch.ones(12, dtype=torch.long),
                    "labels": self.x[i, 0] % 2}

    torch.set_num_threads(1)
    texts = _texts(30, 11)
    with pytest.raises(ConfigError, match="probe_texts="):
        StabstatCallback(tmp_path / "runs", probe=["forgetting"])
    cb = StabstatCallback(tmp_path / "runs", config={"task": "toy"}, probe=["forgetting"], probe_texts=texts,
                          probe_pretrained=str(pretrained_dir), probe_max_length=32)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(pretrained_dir, num_labels=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=3, disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=Data(32), callbacks=[cb]).train()
    d = tmp_path / "runs" / cb.run_id
    assert validate_run(d) == []
    rows = [r for r in pq.read_table(d / "evals.parquet").to_pylist() if r["split"].startswith("probe.k")]
    assert {r["split"] for r in rows} == {f"probe.k{k}" for k in range(LAYERS + 1)} and {r["step"] for r in rows} == {4}
    # k = L: the pre-trained model's scores on the same masks, computed independently here
    sample = probe.mask_texts(AutoTokenizer.from_pretrained(pretrained_dir), texts, max_length=32, seed=0)
    ref = probe.mlm_scores(BertForMaskedLM.from_pretrained(pretrained_dir).eval(), sample, "cpu")
    at_l = {r["metric"]: r["value"] for r in rows if r["split"] == f"probe.k{LAYERS}"}
    assert at_l == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("arch", ["roberta", "distilbert", "electra"])
def test_other_architectures_k_L_and_k_0(arch: str, tmp_path: Path) -> None:
    """The same two identities for models laid out like BERT but with other heads (RoBERTa's
    one-module ``lm_head``; DistilBERT's and ELECTRA's several head modules: full forward)."""
    import transformers as tr

    small = {"vocab_size": 30522, "max_position_embeddings": 64}
    cfg = {
        "roberta": tr.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    pad_token_id=0, **small),
        "distilbert": tr.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **small),
        "electra": tr.ElectraConfig(embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, **small),
    }[arch]
    torch.manual_seed(3)
    tr.AutoModelForMaskedLM.from_config(cfg).save_pretrained(tmp_path)
    pre = tr.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    fine = tr.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    with torch.no_grad():  # stand-in for fine-tuning: every encoder weight moves
        for prm in fine.base_model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    sample = _sample_for(tmp_path, arch)
    logits = {k: probe.masked_logits(m, sample, "cpu")
              for k, m in probe.probed_models(fine, probe.load_pretrained_mlm(str(tmp_path)))}
    torch.testing.assert_close(logits[2], _reference_logits(pre, sample), rtol=1e-5, atol=1e-5)
    ref = tr.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    emb_r, layers_r = ref.base_model.embeddings, probe._stack(ref, "ref")[1]
    emb_f, layers_f = fine.base_model.embeddings, probe._stack(fine, "fine")[1]
    emb_r.load_state_dict(emb_f.state_dict())
    for lr_, lf in zip(layers_r, layers_f, strict=True):
        lr_.load_state_dict(lf.state_dict())
    torch.testing.assert_close(logits[0], _reference_logits(ref, sample), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits[0], logits[2])


def _sample_for(path: Path, arch: str) -> probe.MaskedSample:
    from runner.models import load_tokenizer

    tok = load_tokenizer("minilm")  # BERT ids (< 30522) serve every tiny model here
    s = probe.mask_texts(tok, _texts(8, 5), max_length=32, seed=0)
    if arch == "distilbert":  # no token types
        s = probe.MaskedSample(s.input_ids, s.attention_mask, None, s.labels)
    elif arch == "roberta":  # a single token type
        s = probe.MaskedSample(s.input_ids, s.attention_mask, torch.zeros_like(s.input_ids), s.labels)
    return s


def test_length_batching_keeps_order_and_left_padding(pretrained_dir: Path) -> None:
    """Batches cut to their longest text give the full-width logits, in the original order; a
    left-padded sample (some tokenizers pad on the left) is not cut."""
    from transformers import BertForMaskedLM

    pre = BertForMaskedLM.from_pretrained(pretrained_dir).eval()
    s = _sample(pretrained_dir, n=40)
    assert len(set(s.attention_mask.sum(1).tolist())) > 5  # lengths vary: batches are cut
    torch.testing.assert_close(probe.masked_logits(pre, s, "cpu", batch_size=7), _reference_logits(pre, s),
                               rtol=1e-5, atol=1e-5)
    shift = (s.attention_mask == 0).sum(1)
    def left(t: Any) -> Any:
        return torch.stack([torch.roll(r, int(k)) for r, k in zip(t, shift, strict=True)])
    ls = probe.MaskedSample(left(s.input_ids), left(s.attention_mask), left(s.token_type_ids), left(s.labels))
    assert (ls.attention_mask[:, 0] == 0).any()
    torch.testing.assert_close(probe.masked_logits(pre, ls, "cpu", batch_size=7), _reference_logits(pre, ls),
                               rtol=1e-5, atol=1e-5)
