"""Mixed precision on whole models: BERT in bf16 against transformers with every matrix product in
the same semantics (bf16-rounded operands, fp32 sums; an independent torch reference), masks and
fp32 state under bf16 training, the precision API, settings, hash, ticket and CLI."""
import numpy as np
import pytest

import instantsoup
from instantsoup import _C
from test_bf16 import ALL_ISAS, bf16_numpy

torch = pytest.importorskip("torch")


def r16(x):
    return x.to(torch.bfloat16).to(torch.float32)


class _MM(torch.autograd.Function):
    """a @ b with bf16-rounded operands and fp32 sums, in the forward and both backward products."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return r16(a) @ r16(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return r16(g) @ r16(b).transpose(-1, -2), r16(a).transpose(-1, -2) @ r16(g)


def bf16_linear(x, w, b=None):
    y = _MM.apply(x, w.t())
    return y if b is None else y + b


@pytest.fixture
def bf16_torch(monkeypatch):
    """transformers' BERT with every matrix product in our bf16 semantics (independent of our code)."""
    import transformers.models.bert.modeling_bert as mb

    monkeypatch.setattr(torch.nn.functional, "linear", bf16_linear)
    monkeypatch.setattr(mb.torch, "matmul", lambda a, b: _MM.apply(a, b))


@pytest.fixture
def use_isa():
    """Select a bf16 path for the test, restore the previous one after."""
    prev = _C.get_isa()
    yield lambda name: instantsoup.precision.set_isa(name)
    _C.set_isa(prev)


def _relerr(x, y):
    return float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_bert_bf16_matches_bf16_operand_reference(tmp_path, bf16_torch, use_isa, isa):
    from test_engine_parity import CONFIGS, assert_grads_close, hf_loss, make_batch, make_hf

    use_isa(isa)
    hf, d = make_hf(tmp_path, **CONFIGS["odd-gelu-cls3"])
    model = instantsoup.load_model(d, precision="bf16")
    assert model.precision == "bf16"
    rng = np.random.default_rng(1)
    batch, y = make_batch(rng, num_labels=3)
    loss_t, logits_t = hf_loss(hf, batch, y)
    loss_t.backward()
    logits = model.forward(batch)
    # the same semantics up to fp32 summation order (which can flip a rare bf16 rounding)
    assert _relerr(logits, logits_t.detach().numpy()) < 2e-3
    loss = model.forward_backward(batch, y)
    assert abs(loss - loss_t.item()) <= 2e-3 * max(1.0, abs(loss_t.item()))
    assert_grads_close(model, hf, rtol=2e-2)
    # and it is really not fp32: the fp32 engine differs from the bf16 reference by more
    model.precision = "fp32"
    assert _relerr(model.forward(batch), logits_t.detach().numpy()) > 5 * _relerr(logits, logits_t.detach().numpy())


def test_bf16_training_keeps_masks_exact_and_state_fp32(make_model, one_thread):
    m = make_model()
    m.precision = "bf16"
    masks = instantsoup.magnitude_masks(m, 0.6)
    m.set_masks(masks)
    opt = instantsoup.AdamW(m, lr=1e-3)
    rng = np.random.default_rng(0)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    for step in range(3):
        ids = rng.integers(5, 60, (4, 12)).astype(np.int32)
        am = np.ones((4, 12), np.int32)
        am[1, 7:] = 0
        loss = opt.train_step({"input_ids": ids, "attention_mask": am}, rng.integers(0, 2, 4))
        assert np.isfinite(loss)
    off = m.param_offsets()
    for name, mk in m.masks.items():
        w = m.state_dict()[name]
        assert w.dtype == np.float32
        assert np.all(w[mk == 0] == 0.0), name
        o, shape = off[name]
        n = int(np.prod(shape))
        assert np.all(opt.exp_avg[o:o + n].reshape(shape)[mk == 0] == 0.0)
        assert np.all(opt.exp_avg_sq[o:o + n].reshape(shape)[mk == 0] == 0.0)
    # fp32 master weights: updates smaller than a bf16 ulp of the weight survive
    w = m.state_dict()["classifier.weight"]
    changed = w != before["classifier.weight"]
    assert changed.any() and not np.array_equal(w, bf16_numpy(w))


def test_precision_api(make_model, one_thread):
    m = make_model()
    assert m.precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        m.precision = "fp16"
    with pytest.raises(ValueError, match="precision"):
        instantsoup.AdamW(m, precision="half")
    m.precision = "bf16"
    assert m.clone().precision == "bf16"
    batch = {"input_ids": np.arange(5, 17, dtype=np.int32).reshape(2, 6)}
    lo16 = m.forward(batch)
    m.precision = "fp32"
    lo32 = m.forward(batch)
    assert not np.array_equal(lo16, lo32) and np.allclose(lo16, lo32, atol=5e-2)
    assert _C.get_autocast() == 0  # the switch is restored after each call
    # AdamW(precision=...) runs train_step in that precision whatever the model's
    a, b = make_model(), make_model()
    b.precision = "bf16"
    ya = instantsoup.AdamW(a, precision="bf16").train_step(batch, np.array([0, 1]))
    yb = instantsoup.AdamW(b).train_step(batch, np.array([0, 1]))
    assert ya == yb and a.precision == "fp32"
    np.testing.assert_array_equal(a.flat_parameters(), b.flat_parameters())


def test_bf16_same_result_at_any_thread_count(make_model):
    batch = {"input_ids": np.random.default_rng(3).integers(5, 60, (40, 16)).astype(np.int32)}
    prev = instantsoup.get_num_threads()
    outs = []
    try:
        for nt in (1, 2, 3):
            instantsoup.set_num_threads(nt)
            m = make_model()
            m.precision = "bf16"
            outs.append(m.forward(batch))
    finally:
        instantsoup.set_num_threads(prev)
    if _C.get_isa() != "fp32":  # our own kernels reduce in a fixed order (OpenBLAS may not)
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])


def test_bf16_training_step_same_bits_at_any_thread_count(tmp_path):
    """A bf16 AdamW step at 1, 2 and 3 threads: the same loss and weights to the bit. With 40 tokens
    and an intermediate size of 256, fc1's forward (B transposed), fc2's input gradient and fc2's
    weight gradient (B plain) have N > M and are split by columns over the threads, the other
    products by rows."""
    from conftest import build_tiny_bert

    d = build_tiny_bert(tmp_path / "wide", intermediate=256)
    rng = np.random.default_rng(4)
    batch = {"input_ids": rng.integers(5, 60, (5, 8)).astype(np.int32)}
    y = rng.integers(0, 2, 5)
    prev = instantsoup.get_num_threads()
    results = []
    try:
        for nt in (1, 2, 3):
            instantsoup.set_num_threads(nt)
            m = instantsoup.load_model(str(d), num_labels=2, seed=0)
            m.precision = "bf16"
            loss = instantsoup.AdamW(m, lr=1e-3).train_step(batch, y)
            results.append((loss, m.flat_parameters().copy()))
    finally:
        instantsoup.set_num_threads(prev)
    if _C.get_isa() != "fp32":  # our own kernels reduce in a fixed order (OpenBLAS may not)
        for loss, w in results[1:]:
            assert loss == results[0][0]
            np.testing.assert_array_equal(w, results[0][1])


def test_precision_setting_enters_hash_only_when_bf16_and_reaches_the_ticket(make_model, tmp_path, one_thread):
    import dataclasses

    from conftest import make_tiny_task
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from instantsoup import runs
    from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings
    from instantsoup.methods import instant_soup

    fp = Settings()
    assert "precision" not in fp.identity()["train"]  # runs made before the setting keep their hashes
    bf = dataclasses.replace(fp, train=dataclasses.replace(fp.train, precision="bf16"))
    assert bf.identity()["train"]["precision"] == "bf16"
    assert runs.run_name("isp", bf.identity()) != runs.run_name("isp", fp.identity())
    with pytest.raises(SettingsError, match="precision"):
        dataclasses.replace(fp, train=dataclasses.replace(fp.train, precision="fp16")).validate()

    s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=1, precision="bf16"),
                 prune=PruneSettings(method="isp", sparsity=0.6, step=0.3, t=2, denoisers=2, lookahead=3))
    model = make_model()
    ticket = instant_soup(model, make_tiny_task(vocab=60), s, run_dir=tmp_path / "run", progress=False)
    assert model.precision == "bf16" and ticket.settings["train"]["precision"] == "bf16"
    tdir = tmp_path / "run" / "ticket"
    with safe_open(str(tdir / "masks.safetensors"), framework="np") as f:
        assert f.metadata()["precision"] == "bf16"
        masks = {k: f.get_tensor(k) for k in f.keys()}
    weights = load_file(str(tdir / "checkpoint" / "model.safetensors"))
    for k, m in masks.items():
        assert np.all(weights[k][m == 0] == 0.0), k
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    assert abs(kept - 0.4 * sum(m.size for m in masks.values())) <= 1


def test_cli_precision_flag(tmp_path):
    from instantsoup.cli import build_parser

    args = build_parser().parse_args(["prune", "--precision", "bf16"])
    assert args.precision == "bf16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--precision", "fp16"])
    assert build_parser().parse_args(["eval", "x", "--precision", "bf16"]).precision == "bf16"


def assert_masks_stay_exact(model, batch, y):
    """Two bf16 AdamW steps on half-masked weights: finite losses, masked weights still exactly 0."""
    model.train()
    model.set_masks(instantsoup.magnitude_masks(model, 0.5))
    opt = instantsoup.AdamW(model, lr=1e-3)
    for _ in range(2):
        assert np.isfinite(opt.train_step(batch, y))
    for name, mk in model.masks.items():
        assert np.all(model.state_dict()[name][mk == 0] == 0.0), name


def test_clip_vision_tower_in_bf16(tmp_path, one_thread):
    """CLIP's vision tower goes through the same products: bf16 logits near fp32, masks exact, clone."""
    from clip_helpers import tiny_clip

    from instantsoup.models.clip import load_clip

    tiny_clip(tmp_path)
    model = load_clip(tmp_path, num_labels=3, seed=0).train()
    rng = np.random.default_rng(0)
    s = model.config.vision.image_size
    px = {"pixel_values": rng.standard_normal((4, 3, s, s)).astype(np.float32)}
    y = np.array([0, 2, 1, 0])
    model.eval()
    lo32 = model.forward(px)
    model.precision = "bf16"
    assert model.clone().precision == "bf16"
    lo16 = model.forward(px)
    assert not np.array_equal(lo16, lo32) and np.allclose(lo16, lo32, atol=3e-2 * np.abs(lo32).max())
    assert_masks_stay_exact(model, px, y)


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "distilbert", "electra", "vit"])
def test_every_encoder_family_runs_in_bf16(tmp_path, one_thread, family):
    """precision lives on EngineModel: every family's products go bf16 (logits near fp32, not equal),
    model(**batch) too, clone and pickle keep it, and masks stay exact through AdamW."""
    import pickle

    from family_helpers import make_batch, make_family

    make_family(family, tmp_path)
    model = instantsoup.load_model(tmp_path, precision="bf16").eval()
    batch, y = make_batch(family, np.random.default_rng(0))
    lo16 = model.forward(batch)
    assert np.array_equal(model(**batch).logits, lo16) and _C.get_autocast() == 0
    for other in (model.clone(), pickle.loads(pickle.dumps(model, protocol=5))):
        assert other.precision == "bf16" and np.array_equal(other.forward(batch), lo16)
    model.precision = "fp32"
    lo32 = model.forward(batch)
    assert not np.array_equal(lo16, lo32) and np.allclose(lo16, lo32, atol=3e-2 * np.abs(lo32).max())
    model.precision = "bf16"
    assert_masks_stay_exact(model, batch, y)
