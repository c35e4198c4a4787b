"""Engine API: checkpoints, validation of inputs and configs, masks, copies, optimizer state, memory."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import instantsoup
from instantsoup.models.bert import BertConfig, BertModel

# NumPy-only (no torch), so the sanitizer job runs the whole engine path through these as well
pytestmark = pytest.mark.kernel

CFG = dict(model_type="bert", vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=24, max_position_embeddings=12, type_vocab_size=2, hidden_act="gelu",
           hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12,
           initializer_range=0.02, pad_token_id=0)


def random_state(cfg, rng, num_labels=2):
    m = BertModel(BertConfig.from_dict(cfg, num_labels=num_labels))
    out = {}
    for k, v in m.state_dict().items():
        a = rng.normal(0, 0.1, v.shape).astype(np.float32)
        if "LayerNorm.weight" in k:
            a += 1
        out[k] = a
    return out


def write_ckpt(d, cfg, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    return str(d)


@pytest.fixture
def ckpt(tmp_path, rng):
    return write_ckpt(tmp_path / "m", CFG, random_state(CFG, rng))


def batch(rng, B=3, T=6, V=40):
    ids = rng.integers(1, V, (B, T))
    am = np.ones((B, T), np.int64)
    am[1, 4:] = 0
    return dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros((B, T), np.int64))


def test_views_and_names(ckpt, rng):
    m = instantsoup.load_model(ckpt)
    assert m.kind == "bert" and m.num_labels == 2 and m.problem_type == "single_label_classification"
    sd = m.state_dict()
    assert list(sd)[0] == "bert.embeddings.word_embeddings.weight" and list(sd)[-1] == "classifier.bias"
    assert len(m.prunable_names) == 6 * 2 and set(m.masks) == set(m.prunable_names)
    assert all(v.dtype == np.uint8 and v.all() for v in m.masks.values())
    assert set(m.grads) == set(sd)
    # views: writes reach the model
    b = batch(rng)
    before = m.forward(b)
    sd["classifier.bias"][:] += 1.0
    np.testing.assert_allclose(m.forward(b), before + 1.0, rtol=1e-5, atol=1e-6)
    assert sum(v.size for v in sd.values()) == m.num_parameters
    # forward alone keeps one layer's activations; the result is the same as with all layers kept
    logits = m.forward(b)
    m.forward_backward(b, np.array([0, 1, 1]))
    np.testing.assert_array_equal(logits, m.last_logits)


def test_base_checkpoint_without_prefix_gets_seeded_head(tmp_path, rng):
    full = random_state(CFG, rng)
    base = {k[len("bert."):]: v for k, v in full.items() if k.startswith("bert.") and "pooler" not in k}
    base["embeddings.position_ids"] = np.arange(12, dtype=np.int64)[None]
    base["cls.predictions.bias"] = np.zeros(40, np.float32)  # a pre-training head: ignored
    d = write_ckpt(tmp_path / "base", CFG, base)
    m1 = instantsoup.load_model(d, num_labels=3, seed=5)
    m2 = instantsoup.load_model(d, num_labels=3, seed=5)
    m3 = instantsoup.load_model(d, num_labels=3, seed=6)
    w1 = m1.state_dict()["classifier.weight"]
    assert w1.shape == (3, 16)
    np.testing.assert_array_equal(w1, m2.state_dict()["classifier.weight"])
    assert not np.array_equal(w1, m3.state_dict()["classifier.weight"])
    assert np.all(m1.state_dict()["classifier.bias"] == 0) and np.all(m1.state_dict()["bert.pooler.dense.bias"] == 0)
    assert 0.01 < m1.state_dict()["bert.pooler.dense.weight"].std() < 0.03
    np.testing.assert_array_equal(m1.state_dict()["bert.embeddings.word_embeddings.weight"],
                                  full["bert.embeddings.word_embeddings.weight"])


def test_save_pretrained_roundtrip(ckpt, tmp_path, rng):
    m = instantsoup.load_model(ckpt)
    m.set_masks({m.prunable_names[0]: (rng.random((16, 16)) > 0.5)})
    m.save_pretrained(tmp_path / "out")
    cfg = json.load(open(tmp_path / "out" / "config.json"))
    assert cfg["architectures"] == ["BertForSequenceClassification"] and len(cfg["id2label"]) == 2
    t = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(t) == set(m.state_dict())
    m2 = instantsoup.load_model(tmp_path / "out")
    b = batch(rng)
    np.testing.assert_array_equal(m.forward(b), m2.forward(b))


def test_export_of_a_half_precision_config_says_float32(tmp_path, rng):
    # the weights are written as float32; a source config saying float16 would make transformers
    # load the export in half precision (different logits)
    cfg = dict(CFG, torch_dtype="float16", dtype="float16")
    m = instantsoup.load_model(write_ckpt(tmp_path / "m", cfg, random_state(CFG, rng)))
    m.save_pretrained(tmp_path / "out")
    out = json.load(open(tmp_path / "out" / "config.json"))
    assert out["dtype"] == "float32" and "torch_dtype" not in out


def test_regression_head(tmp_path, rng):
    cfg = dict(CFG, problem_type="regression", num_labels=1)
    d = write_ckpt(tmp_path / "r", cfg, random_state(cfg, rng, num_labels=1))
    m = instantsoup.load_model(d)
    assert m.num_labels == 1 and m.problem_type == "regression"
    loss = m.forward_backward(batch(rng), np.array([0.5, -1.0, 2.0]))
    assert loss > 0
    with pytest.raises(ValueError, match="not finite"):
        m.forward_backward(batch(rng), np.array([0.5, np.nan, 2.0], np.float32))


@pytest.mark.parametrize("change,match", [
    (dict(hidden_size=15), "multiple of num_attention_heads"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(is_decoder=True), "is_decoder"),
    (dict(problem_type="multi_label_classification"), "problem_type"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(layer_norm_eps=-1), "layer_norm_eps"),
    (dict(model_type="gpt2"), "model_type"),
])
def test_bad_configs(tmp_path, rng, change, match):
    d = write_ckpt(tmp_path / "c", dict(CFG, **change), {"x": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match=match):
        instantsoup.load_model(d)


def test_bad_checkpoints(tmp_path, rng):
    full = random_state(CFG, rng)
    missing = dict(full)
    del missing["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match="missing.*layer.1.output.dense.weight"):
        instantsoup.load_model(write_ckpt(tmp_path / "a", CFG, missing))
    extra = dict(full, **{"bert.encoder.layer.2.output.dense.weight": np.zeros((16, 24), np.float32)})
    with pytest.raises(ValueError, match="unexpected.*layer.2"):
        instantsoup.load_model(write_ckpt(tmp_path / "b", CFG, extra))
    bad = dict(full, **{"bert.embeddings.word_embeddings.weight": np.zeros((41, 16), np.float32)})
    with pytest.raises(ValueError, match=r"word_embeddings.*\(41, 16\)"):
        instantsoup.load_model(write_ckpt(tmp_path / "c", CFG, bad))
    nan = dict(full)
    nan["bert.pooler.dense.bias"] = np.full(16, np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        instantsoup.load_model(write_ckpt(tmp_path / "n", CFG, nan))
    # truncated safetensors
    d = write_ckpt(tmp_path / "t", CFG, full)
    p = os.path.join(d, "model.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        instantsoup.load_model(d)
    open(p, "wb").write(b"\x00\x01")
    with pytest.raises(ValueError, match="safetensors"):
        instantsoup.load_model(d)
    os.remove(p)
    with pytest.raises(ValueError, match="no model.safetensors"):
        instantsoup.load_model(d)
    with pytest.raises(ValueError, match="not a directory"):
        instantsoup.load_model(tmp_path / "nowhere")


def test_bad_inputs(ckpt, rng):
    m = instantsoup.load_model(ckpt)
    b = batch(rng)
    y = np.array([0, 1, 1])
    cases = [
        (dict(b, input_ids=np.full((3, 6), 40)), ValueError, "outside"),
        (dict(b, input_ids=np.full((3, 6), -1)), ValueError, "outside"),
        (dict(b, input_ids=b["input_ids"].astype(np.float32)), TypeError, "integer"),
        (dict(b, input_ids=b["input_ids"][0]), ValueError, "2-D"),
        (dict(b, token_type_ids=np.full((3, 6), 2)), ValueError, "token_type_ids"),
        (dict(b, token_type_ids=np.zeros((3, 5), np.int64)), ValueError, "token_type_ids"),
        (dict(b, attention_mask=np.full((3, 6), 2)), ValueError, "attention_mask"),
        (dict(b, attention_mask=np.ones((2, 6))), ValueError, "attention_mask"),
        (dict(input_ids=np.ones((2, 13), np.int64)), ValueError, "max_position_embeddings"),
        (dict(input_ids=np.ones((0, 4), np.int64)), ValueError, "non-empty"),
        ({"attention_mask": b["attention_mask"]}, ValueError, "input_ids"),
        ([1, 2, 3], TypeError, "dict"),
    ]
    for bb, exc, match in cases:
        with pytest.raises(exc, match=match):
            m.forward(bb)
        with pytest.raises(exc, match=match):
            m.forward_backward(bb, y[: len(np.atleast_2d(bb["input_ids"]))] if isinstance(bb, dict) and "input_ids" in bb else y)
    with pytest.raises(ValueError, match="label 2"):
        m.forward_backward(b, np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="label -1"):
        m.forward_backward(b, np.array([0, -1, 1], np.int32))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        m.forward_backward(b, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer class ids"):
        m.forward_backward(b, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        m.forward_backward(b, y, label_smoothing=1.5)
    # the model still works after all that
    assert np.isfinite(m.forward_backward(b, y))


def test_masks(ckpt, rng):
    m = instantsoup.load_model(ckpt)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    mask = (rng.random((24, 16)) > 0.5).astype(np.uint8)
    m.set_masks({name: mask})
    assert np.all(m.state_dict()[name][mask == 0] == 0)
    np.testing.assert_array_equal(m.masks[name], mask)
    m.forward_backward(batch(rng), np.array([0, 1, 1]))
    assert np.all(m.grads[name][mask == 0] == 0) and np.any(m.grads[name][mask == 1] != 0)
    with pytest.raises(ValueError, match="not a prunable"):
        m.set_masks({"classifier.weight": np.ones((2, 16))})
    with pytest.raises(ValueError, match="unknown"):
        m.set_masks({"nope": np.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        m.set_masks({name: np.ones((16, 24))})
    with pytest.raises(ValueError, match="0 or 1"):
        m.set_masks({name: np.full((24, 16), 2)})
    # load_state_dict keeps masked weights at zero
    sd = {k: v.copy() + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    assert np.all(m.state_dict()[name][mask == 0] == 0)
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict({"classifier.bias": np.zeros(2)})
    with pytest.raises(ValueError, match="unknown"):
        m.load_state_dict(dict(sd, extra=np.zeros(1)))
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict({"classifier.bias": np.zeros(3)}, strict=False)


def test_clone_and_copy_from(ckpt, rng):
    m = instantsoup.load_model(ckpt)
    c = m.clone()
    b = batch(rng)
    np.testing.assert_array_equal(m.forward(b), c.forward(b))
    c.state_dict()["classifier.bias"][:] = 5
    assert not np.array_equal(m.forward(b), c.forward(b))
    m.set_masks({m.prunable_names[2]: np.zeros((16, 16))})
    c.copy_from(m)
    np.testing.assert_array_equal(m.forward(b), c.forward(b))
    np.testing.assert_array_equal(c.masks[m.prunable_names[2]], 0)
    other = BertModel(BertConfig.from_dict(dict(CFG, intermediate_size=20)))
    with pytest.raises(ValueError, match="config"):
        other.copy_from(m)


def test_optimizer_state_resume(ckpt, rng):
    bs = [(batch(rng), rng.integers(0, 2, 3)) for _ in range(5)]

    def run(m, opt, items):
        return [opt.train_step(b, y, lr=1e-3, max_grad_norm=1.0) for b, y in items]

    m1 = instantsoup.load_model(ckpt).train()
    m1.seed(3)
    o1 = instantsoup.AdamW(m1, lr=1e-3, weight_decay=0.01)
    run(m1, o1, bs[:3])
    snap_model, snap_opt, snap_rng = {k: v.copy() for k, v in m1.state_dict().items()}, o1.state_dict(), m1.rng_state()
    tail1 = run(m1, o1, bs[3:])

    m2 = instantsoup.load_model(ckpt).train()
    m2.load_state_dict(snap_model)
    m2.set_rng_state(snap_rng)
    o2 = instantsoup.AdamW(m2, lr=1e-3, weight_decay=0.01)
    o2.load_state_dict(snap_opt)
    assert o2.step_count == 3
    tail2 = run(m2, o2, bs[3:])
    assert tail1 == tail2
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(v, m2.state_dict()[k])
    o3 = instantsoup.AdamW(m2)
    o3.copy_from(o1)
    np.testing.assert_array_equal(o3.exp_avg, o1.exp_avg)
    o3.reset()
    assert o3.step_count == 0 and not o3.exp_avg.any()
    with pytest.raises(ValueError):
        o3.load_state_dict({"step": 1, "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros(3)})
    with pytest.raises(ValueError, match="max_grad_norm"):
        o3.step(max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="lr"):
        instantsoup.AdamW(m2, lr=-1.0)
    # decay groups: biases and LayerNorm excluded by default; custom rules
    assert "classifier.bias" not in o1.decay_names and "classifier.weight" in o1.decay_names
    assert not any("LayerNorm" in n for n in o1.decay_names)
    o4 = instantsoup.AdamW(m2, no_decay=["embeddings"])
    assert "classifier.bias" in o4.decay_names and "bert.embeddings.LayerNorm.weight" not in o4.decay_names


def test_same_thread_count_is_bitwise_deterministic(rng):
    """Same seed + same thread count -> identical losses and weights (GEMMs big enough to be split)."""
    cfg = dict(CFG, vocab_size=100, hidden_size=64, num_attention_heads=4, intermediate_size=128,
               max_position_embeddings=64)
    b = dict(input_ids=rng.integers(1, 100, (8, 32)))
    y = rng.integers(0, 2, 8)
    init = None
    n0 = instantsoup.get_num_threads()
    results = {}
    try:
        for run, nt in enumerate((1, 2, 1, 2)):
            instantsoup.set_num_threads(nt)
            m = BertModel(BertConfig.from_dict(cfg)).train()
            if init is None:
                init = np.random.default_rng(1).normal(0, 0.05, m.num_parameters).astype(np.float32)
            m.flat_parameters()[:] = init
            m.seed(3)
            opt = instantsoup.AdamW(m, lr=1e-3)
            losses = [opt.train_step(b, y, max_grad_norm=1.0) for _ in range(3)]
            results.setdefault(nt, []).append((losses, m.flat_parameters().copy()))
    finally:
        instantsoup.set_num_threads(n0)
    for nt, ((l1, p1), (l2, p2)) in results.items():
        assert l1 == l2, nt
        np.testing.assert_array_equal(p1, p2)
    # across thread counts only the GEMM block splits differ: the last bits, nothing more
    np.testing.assert_allclose(results[1][0][1], results[2][0][1], rtol=0, atol=1e-6)


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="ASan's quarantine grows RSS")
def test_no_memory_growth(ckpt, rng):
    m = instantsoup.load_model(ckpt).train()
    opt = instantsoup.AdamW(m, lr=1e-4)
    bs = [batch(rng, B=2, T=t) for t in (3, 6)]
    y = np.array([0, 1])
    for i in range(100):
        opt.train_step(bs[i % 2], y)
    r0 = rss_mb()
    for i in range(1000):
        opt.train_step(bs[i % 2], y, max_grad_norm=1.0)
        if i % 100 == 0:
            m.forward(bs[0])
            m.forward_backward(bs[1], y)
            opt.step()
            m.clone()
    assert rss_mb() - r0 < 5.0


def test_threads_train_separate_models_concurrently(ckpt, rng):
    """The GIL is released during steps: two Python threads, two models, same results as in turn."""
    import threading

    bs = [(batch(rng, B=4, T=8), rng.integers(0, 2, 4)) for _ in range(4)]

    def run(out, key):
        m = instantsoup.load_model(ckpt).train()
        m.seed(1)
        opt = instantsoup.AdamW(m, lr=1e-3)
        out[key] = [opt.train_step(b, y) for _ in range(5) for b, y in bs]

    seq, par = {}, {}
    run(seq, 0)
    threads = [threading.Thread(target=run, args=(par, k)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert par[0] == seq[0] and par[1] == seq[0]
