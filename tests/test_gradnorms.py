"""LayerGradNorms against a naive per-parameter computation on tiny random models."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runner.gradnorms import LayerGradNorms, layer_of  # noqa: E402


def _tiny_bert(num_layers: int = 3, seed: int = 0) -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=2,
    )
    # transformers initialises weights from the global generator: seed it inside fork_rng so the
    # test leaves global RNG state alone.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return transformers.BertForSequenceClassification(cfg).eval()  # eval: no dropout randomness


def _backward(model: torch.nn.Module, seed: int = 1, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (4, 10), generator=g)
    labels = torch.randint(0, 2, (4,), generator=g)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels)
    (out.loss * scale).backward()


def _naive(model: torch.nn.Module, mapping: dict[str, str]) -> tuple[dict[str, float], float]:
    sums: dict[str, float] = {}
    total = 0.0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        sq = float((p.grad.double() ** 2).sum())
        sums[mapping[name]] = sums.get(mapping[name], 0.0) + sq
        total += sq
    return {k: math.sqrt(v) for k, v in sums.items()}, math.sqrt(total)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_names_and_depths_of_bert() -> None:
    model = _tiny_bert(3)
    gn = LayerGradNorms(model)
    assert gn.layers == ["embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2", "pooler", "classifier"]
    assert gn.depths == [0, 1, 2, 3, 4, 5]
    m = gn.param_layers()
    assert m["bert.embeddings.word_embeddings.weight"] == "embeddings"
    assert m["bert.encoder.layer.2.output.dense.weight"] == "encoder.layer.2"
    assert m["bert.pooler.dense.bias"] == "pooler"
    assert m["classifier.weight"] == "classifier"
    assert len(m) == len(list(model.parameters()))


def test_matches_naive_computation() -> None:
    model = _tiny_bert(2)
    gn = LayerGradNorms(model)
    _backward(model)
    layers, depths, norms, total = gn.compute()
    expected, expected_total = _naive(model, gn.param_layers())
    assert layers == gn.layers and depths == gn.depths
    assert norms == pytest.approx([expected[la] for la in layers], rel=1e-5)
    assert total == pytest.approx(expected_total, rel=1e-5)
    assert total == pytest.approx(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])), rel=1e-5)
    assert all(n > 0 for n in norms)


def test_fused_clipping_matches_clip_grad_norm() -> None:
    a, b = _tiny_bert(2), _tiny_bert(2)
    _backward(a, scale=50.0)
    _backward(b, scale=50.0)
    before = LayerGradNorms(a).compute(max_norm=1.0).total
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
    assert before == pytest.approx(float(ref), rel=1e-5) and before > 1.0
    for pa_, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa_.grad, pb.grad, rtol=1e-5, atol=1e-8)
    after = LayerGradNorms(a).compute().total
    assert after == pytest.approx(1.0, rel=1e-4)


def test_params_without_grad_are_skipped() -> None:
    model = _tiny_bert(2)
    for p in model.bert.pooler.parameters():
        p.requires_grad_(False)  # frozen: not even in the grouping
    gn = LayerGradNorms(model)
    assert "pooler" not in gn.layers
    assert gn.depths[gn.layers.index("classifier")] == 4  # classifier keeps depth N + 2
    _backward(model)
    for p in model.bert.encoder.layer[1].parameters():
        p.grad = None  # e.g. unused this step
    res = gn.compute()
    assert "encoder.layer.1" not in res.layers
    expected, expected_total = _naive(model, gn.param_layers())
    assert dict(zip(res.layers, res.norms, strict=True)) == pytest.approx(expected, rel=1e-5)
    assert res.total == pytest.approx(expected_total, rel=1e-5)
    model.zero_grad(set_to_none=True)
    assert gn.compute() == ([], [], [], 0.0)


def test_non_finite_gradients_show_up() -> None:
    model = _tiny_bert(1)
    gn = LayerGradNorms(model)
    _backward(model)
    model.classifier.weight.grad[0, 0] = float("nan")
    res = gn.compute()
    assert math.isnan(res.norms[res.layers.index("classifier")]) and math.isnan(res.total)
    assert math.isfinite(res.norms[res.layers.index("embeddings")])


@pytest.mark.parametrize(
    ("name", "base", "layer"),
    [
        ("roberta.encoder.layer.11.attention.self.query.weight", "roberta", "encoder.layer.11"),
        ("classifier.out_proj.weight", "roberta", "classifier"),
        ("distilbert.transformer.layer.5.ffn.lin1.weight", "distilbert", "encoder.layer.5"),
        ("distilbert.embeddings.word_embeddings.weight", "distilbert", "embeddings"),
        ("pre_classifier.weight", "distilbert", "pre_classifier"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight", "albert", "encoder.layer.0"),
        ("albert.encoder.embedding_hidden_mapping_in.weight", "albert", "embeddings"),
        ("albert.pooler.weight", "albert", "pooler"),
        ("deberta.encoder.rel_embeddings.weight", "deberta", "encoder.rel_embeddings"),
        ("embeddings.word_embeddings.weight", None, "embeddings"),  # a bare BertModel
        ("encoder.layer.3.output.dense.bias", None, "encoder.layer.3"),
        ("transformer.h.7.mlp.c_fc.weight", "transformer", "encoder.layer.7"),
    ],
)
def test_layer_names(name: str, base: str | None, layer: str) -> None:
    assert layer_of(name, base) == layer


@pytest.mark.parametrize(
    ("cls", "cfg_cls", "kwargs", "expected"),
    [
        ("RobertaForSequenceClassification", "RobertaConfig",
         {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32},
         (["embeddings", "encoder.layer.0", "encoder.layer.1", "classifier"], [0, 1, 2, 4])),
        ("DistilBertForSequenceClassification", "DistilBertConfig",
         {"dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32},
         (["embeddings", "encoder.layer.0", "encoder.layer.1", "classifier", "pre_classifier"], [0, 1, 2, 4, 5])),
        ("AlbertForSequenceClassification", "AlbertConfig",
         {"hidden_size": 16, "embedding_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32},
         (["embeddings", "encoder.layer.0", "pooler", "classifier"], [0, 1, 2, 3])),
    ],
)
def test_other_families(cls: str, cfg_cls: str, kwargs: dict, expected: tuple[list[str], list[int]]) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(transformers, cls)(getattr(transformers, cfg_cls)(vocab_size=64, **kwargs)).eval()
    gn = LayerGradNorms(model)
    assert (gn.layers, gn.depths) == expected
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    res = gn.compute()
    want, want_total = _naive(model, gn.param_layers())
    assert dict(zip(res.layers, res.norms, strict=True)) == pytest.approx(want, rel=1e-5)
    assert res.total == pytest.approx(want_total, rel=1e-5)


def test_logger_accepts_the_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from runner.logwriter import RunLogger
    from stabstat import rundir
    from stabstat.validate import validate_run

    model = _tiny_bert(2)
    gn = LayerGradNorms(model)
    with RunLogger(tmp_path, "g", {"seed": 0}) as log:
        for step in (1, 2):
            _backward(model, seed=step)
            layers, depths, norms, total = gn.compute(max_norm=1.0)
            log.log_step(step, loss=0.5, grad_norm=total)
            log.log_layer_grads(step, layers, depths, norms)
    assert validate_run(tmp_path / "g") == []
    t = rundir.read_table(tmp_path / "g", "layer_grads")
    assert t.num_rows == 2 * len(gn.layers)
