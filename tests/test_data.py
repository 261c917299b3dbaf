"""runner.tasks: GLUE TSVs, custom files, metrics, majority baselines, subsampling; the synthetic task."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets")

from runner import tasks as rd  # noqa: E402
from runner.tasks.synthetic import generate, word_list  # noqa: E402
from stabstat.errors import ConfigError, InputFormatError  # noqa: E402

# ---------------------------------------------------------------------------- metrics


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for n in (1, 7, 50, 400):
        y = rng.integers(0, 2, n)
        out.append((y, rng.integers(0, 2, n)))
        out.append((y, y.copy()))
        out.append((y, np.zeros(n, dtype=np.int64)))  # constant prediction
        out.append((y, np.ones(n, dtype=np.int64)))
    return out


def test_metrics_match_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    import warnings

    for y, p in _cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns on undefined F1/MCC; both sides give 0
            assert rd.accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
            assert rd.f1(y, p) == pytest.approx(sk.f1_score(y, p, zero_division=0), abs=1e-12)
            assert rd.mcc(y, p) == pytest.approx(sk.matthews_corrcoef(y, p), abs=1e-12)


def test_metrics_hand_computed() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    # tp=3 fn=1 fp=1 tn=3
    assert rd.accuracy(y, p) == 6 / 8
    assert rd.f1(y, p) == pytest.approx(6 / 8)
    assert rd.mcc(y, p) == pytest.approx((9 - 1) / np.sqrt(4 * 4 * 4 * 4))
    assert rd.acc_f1(y, p) == pytest.approx((6 / 8 + 6 / 8) / 2)


def test_majority_scores() -> None:
    y = np.array([1, 1, 1, 0, 0])
    s = rd.majority_scores(["accuracy", "f1", "mcc", "acc_f1"], y)
    assert s == pytest.approx({"accuracy": 0.6, "f1": 0.75, "mcc": 0.0, "acc_f1": 0.675})
    assert rd.majority_class([0, 1, 1, 0]) == 0  # tie -> smallest id


# ---------------------------------------------------------------------------- GLUE


def test_glue_tasks_read_like_glue(glue_dir: Path) -> None:
    GLUE = glue_dir
    rte = rd.load_task({"task": "rte"}, data_dir=GLUE)
    assert (len(rte.train_a), len(rte.dev_a)) == (2490, 277)
    assert rte.train_b is not None and rte.label_names == ("entailment", "not_entailment")
    assert rte.info()["majority"]["accuracy"] == pytest.approx(146 / 277)
    assert rte.dev_labels.sum() == 131  # not_entailment = id 1

    mrpc = rd.load_task({"task": "MRPC"}, data_dir=GLUE)  # BOM header: "\ufeffQuality"
    assert (len(mrpc.train_a), len(mrpc.dev_a)) == (3668, 408)
    maj = mrpc.info()["majority"]
    assert maj["accuracy"] == pytest.approx(279 / 408)
    assert maj["f1"] == pytest.approx(2 * 279 / (2 * 279 + 129))
    assert maj["acc_f1"] == pytest.approx((maj["accuracy"] + maj["f1"]) / 2)

    cola = rd.load_task({"task": "cola"}, data_dir=GLUE)  # no header, no final newline
    assert (len(cola.train_a), len(cola.dev_a)) == (8551, 1043)
    assert cola.train_b is None and cola.metrics == ("mcc",)
    assert cola.info()["majority"] == {"mcc": 0.0}
    assert int(cola.dev_labels.sum()) == 721
    # text quotes are kept verbatim (quoting off)
    assert any('"' in t for t in mrpc.train_b or [])


def _fake_glue(tmp_path: Path, glue: Path, task: str = "RTE") -> Path:
    root = tmp_path / "glue"
    (root / task).mkdir(parents=True)
    shutil.copy(glue / task / "dev.tsv", root / task / "dev.tsv")
    shutil.copy(glue / task / "dev.tsv", root / task / "train.tsv")
    return root


def test_label_values_the_task_does_not_define(tmp_path: Path, glue_dir: Path) -> None:
    root = _fake_glue(tmp_path, glue_dir)
    train = root / "RTE" / "train.tsv"
    lines = train.read_text("utf-8").splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    train.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(InputFormatError, match=r"train\.tsv: column 'label': value\(s\) 'maybe'.*entailment"):
        rd.load_task({"task": "rte"}, data_dir=root)


def test_missing_files_name_the_path(tmp_path: Path, glue_dir: Path) -> None:
    root = _fake_glue(tmp_path, glue_dir)
    (root / "RTE" / "dev.tsv").unlink()
    with pytest.raises(InputFormatError, match=r"missing data file\(s\) .*RTE/dev\.tsv.*--data-dir"):
        rd.load_task({"task": "rte"}, data_dir=root)
    with pytest.raises(InputFormatError, match=r"MRPC/train\.tsv"):
        rd.load_task({"task": "mrpc"}, data_dir=root)


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match=r"task = 'rtx': unknown task .*rte, mrpc, cola, sst2, qnli, synthetic"):
        rd.load_task({"task": "rtx"}, data_dir="/nonexistent")


def test_offline_without_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rd.GLUE_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputFormatError, match="--data-dir"):
        rd.load_task({"task": "rte"})


# ---------------------------------------------------------------------------- own files


def test_custom_csv_and_jsonl(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text('text,other,label\n"hello, world",x,pos\nbad,y,neg\nfine,z,pos\n', "utf-8")
    dev = tmp_path / "dev.jsonl"
    dev.write_text("\n".join(json.dumps({"text": t, "other": "o", "label": lab})
                             for t, lab in [("a", "neg"), ("b", "pos")]) + "\n", "utf-8")
    d = rd.load_task({"task": "mine", "train_file": str(train), "dev_file": str(dev)})
    assert d.label_names == ("neg", "pos")  # sorted
    assert d.train_a[0] == "hello, world" and list(d.train_labels) == [1, 0, 1]
    assert list(d.dev_labels) == [0, 1] and d.metrics == ("accuracy",)

    pair = rd.load_task({"task": "mine", "train_file": str(train), "dev_file": str(dev),
                         "text_pair_column": "other", "label_values": ["pos", "neg"],
                         "metrics": ["accuracy", "f1"]})
    assert pair.train_b == ["x", "y", "z"] and list(pair.train_labels) == [0, 1, 0]

    with pytest.raises(InputFormatError, match=r"train\.csv: column 'label': value\(s\) 'pos'"):
        rd.load_task({"task": "mine", "train_file": str(train), "dev_file": str(dev), "label_values": ["neg", "x"]})
    with pytest.raises(InputFormatError, match=r"train\.csv: column 'sentence' not found"):
        rd.load_task({"task": "mine", "train_file": str(train), "dev_file": str(dev), "text_column": "sentence"})
    with pytest.raises(InputFormatError, match="nope.csv.*not found"):
        rd.load_task({"task": "mine", "train_file": str(tmp_path / "nope.csv"), "dev_file": str(dev)})


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,10\nb,2\nc,2\n", "utf-8")
    d = rd.load_task({"task": "num", "train_file": str(f), "dev_file": str(f)})
    assert d.label_names == ("2", "10") and list(d.train_labels) == [1, 0, 0]


# ---------------------------------------------------------------------------- subsampling


def _toy(n: int = 50) -> rd.TaskData:
    return rd.TaskData(
        name="toy", train_a=[f"t{i}" for i in range(n)], train_b=None, train_labels=np.arange(n) % 2,
        dev_a=["d"], dev_b=None, dev_labels=np.array([0]), label_names=("0", "1"),
        metrics=("accuracy",), source="toy",
    )


def test_subsample_depends_only_on_data_seed() -> None:
    d = _toy()
    a = rd.subsample(d, 10, data_seed=3)
    b = rd.subsample(d, 10, data_seed=3)
    c = rd.subsample(d, 10, data_seed=4)
    assert a.train_a == b.train_a and a.train_a != c.train_a
    assert len(a.train_a) == 10 and len(set(a.train_a)) == 10
    idx = [int(t[1:]) for t in a.train_a]
    assert idx == sorted(idx) and list(a.train_labels) == [i % 2 for i in idx]
    assert rd.subsample(d, None, data_seed=0) is d
    with pytest.raises(ConfigError, match="n_train = 51: task toy has 50"):
        rd.subsample(d, 51, data_seed=0)


# ---------------------------------------------------------------------------- synthetic


def _vocab() -> dict[str, int]:
    words = [f"{a}{b}{c}" for a in "bcdfghk" for b in "aeiou" for c in "lmnprstvz"]
    vocab = {w: i + 1000 for i, w in enumerate(words * 1)}
    vocab.update({"[PAD]": 0, "[CLS]": 101, "##ing": 5, "Caps": 7, "a1b": 8})
    return vocab


def test_synthetic_is_deterministic_whatever_the_vocab_order() -> None:
    v = _vocab()
    items = list(v.items())
    random.Random(1).shuffle(items)
    a = generate(v, n_fillers=200, n_train=100, n_dev=50)
    b = generate(dict(items), n_fillers=200, n_train=100, n_dev=50)
    assert a.train_a == b.train_a and a.dev_a == b.dev_a and a.source == b.source
    assert np.array_equal(a.train_labels, b.train_labels)
    assert a.info()["majority"]["accuracy"] == pytest.approx(0.6)
    assert a.train_labels.mean() == pytest.approx(0.4)
    assert all(w in v for t in a.train_a for w in t.split())
    assert "##ing" not in word_list(v) and "Caps" not in word_list(v)
    assert generate(v, n_fillers=200, seed=1).train_a != generate(v, n_fillers=200).train_a


def test_synthetic_with_minilm_vocab_fits_24_tokens() -> None:
    from runner.models import load_tokenizer

    tok = load_tokenizer("minilm")
    d = generate(tok.get_vocab())
    assert (len(d.train_a), len(d.dev_a)) == (1000, 300)
    lengths = [len(tok(t)["input_ids"]) for t in d.dev_a]
    assert max(lengths) <= 19  # 8-16 fillers + 1 cue + [CLS] + [SEP]: every word is one token
    assert d.info()["majority"]["accuracy"] == pytest.approx(0.6)
