"""Mixed precision: bf16 GEMM paths against NumPy oracles, and bf16 models against a torch reference
with the same semantics (bf16-rounded operands of every matrix product, fp32 accumulation).

Every path this CPU has is tested; the others are skipped with the reason. The kernel tests
(marker ``kernel``) use NumPy only, so the sanitizer job runs them.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import instantsoup
from instantsoup import _C
from instantsoup.precision import ISAS, available_isas

HAVE = available_isas()


def isa_param(name):
    why = f"this CPU has no {name} path (available: {', '.join(HAVE)})"
    return pytest.param(name, marks=pytest.mark.skipif(name not in HAVE, reason=why), id=name)


ALL_ISAS = [isa_param(n) for n in ISAS]


@pytest.fixture
def use_isa(request):
    """Select a bf16 path for the test, restore the previous one after."""
    prev = _C.get_isa()
    yield lambda name: instantsoup.precision.set_isa(name)
    _C.set_isa(prev)


def bf16_numpy(x):
    """Independent oracle of the rounding: round to nearest even to 8 significant bits, in float64
    arithmetic (quantum 2**(e-8) for |x| in [2**(e-1), 2**e), fixed 2**-133 in the subnormal range)."""
    x = np.asarray(x, dtype=np.float32)
    v = x.astype(np.float64)
    finite = np.isfinite(v) & (v != 0)
    _, e = np.frexp(np.where(finite, v, 1.0))
    q = np.ldexp(1.0, np.maximum(e, -125) - 8)
    r = np.where(finite, v, 0.0) / q
    res = np.round(r) * q  # numpy rounds halves to even
    res = np.where(np.abs(res) >= 2.0**128, np.copysign(np.inf, v), res)
    return np.where(finite, res, v).astype(np.float32)


# ---- kernels ------------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_rounding_through_each_path(isa):
    rng = np.random.default_rng(0)
    vals = np.concatenate([
        rng.standard_normal(200).astype(np.float32) * np.float32(3.0),
        np.array([1.0, -1.0, 0.0, -0.0, 1.00390625, 1.01171875, 1.0 + 2.0**-8 + 2.0**-20,  # ties, near-ties
                  3.0e38, 3.4028235e38, -3.4028235e38, 1e-38, 2.0**-130, np.inf, -np.inf], dtype=np.float32),
        (1.0 + rng.integers(0, 2**16, 50) * 2.0**-23).astype(np.float32),  # ties to even on every kind of tail
    ])
    a = vals.reshape(-1, 1).copy()
    one = np.ones((1, 1), np.float32)
    c = np.zeros((a.shape[0], 1), np.float32)
    _C.sgemm(a, one, c, bf16=isa)
    want = bf16_numpy(vals)
    if isa in ("avx512bf16", "amx"):  # these instructions flush denormal inputs to zero
        want[np.abs(vals) < 2.0**-126] = 0.0
    np.testing.assert_array_equal(c[:, 0], want)
    # NaN stays NaN
    c2 = np.zeros((1, 1), np.float32)
    _C.sgemm(np.full((1, 1), np.nan, np.float32), one, c2, bf16=isa)
    assert np.isnan(c2[0, 0])


SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 9), (7, 33, 5), (17, 31, 2), (33, 65, 31), (64, 64, 64),
          (100, 77, 300), (130, 19, 513), (6, 16, 256), (97, 530, 1)]


def oracle(a, b, c, ta, tb, alpha, beta):
    ar = bf16_numpy(a).astype(np.float64)
    br = bf16_numpy(b).astype(np.float64)
    opa, opb = (ar.T if ta else ar), (br.T if tb else br)
    exact = alpha * (opa @ opb) + beta * c.astype(np.float64)
    # fp32 accumulation in any order: |error| <= gamma_(K+2) (|alpha| |A||B| + |beta C|)
    K = opa.shape[1]
    bound = (K + 2) * 2.0**-24 * (abs(alpha) * (np.abs(opa) @ np.abs(opb)) + abs(beta) * np.abs(c)) + 1e-30
    return exact, bound


@pytest.mark.kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_against_float64_of_rounded_inputs(isa, ta, tb):
    rng = np.random.default_rng(ta * 2 + tb)
    for M, N, K in SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        for alpha, beta in [(1.0, 0.0), (0.37, 1.0), (-2.0, 0.5)]:
            c0 = rng.standard_normal((M, N)).astype(np.float32)
            c = c0.copy()
            if beta == 0.0:
                c[...] = np.nan  # beta == 0 overwrites (NaN must not propagate)
            _C.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), alpha=alpha, beta=beta, bf16=isa)
            exact, bound = oracle(a, b, c0, ta, tb, alpha, beta)
            err = np.abs(c - exact)
            assert np.all(err <= bound), (isa, M, N, K, ta, tb, alpha, beta, float((err - bound).max()))


@pytest.mark.kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_gemm_strided_rows_and_big_k(isa):
    """Column slices (row stride > width) and K over several K blocks."""
    rng = np.random.default_rng(5)
    M, N, K = 37, 45, 1100
    abig = rng.standard_normal((M, K + 13)).astype(np.float32)
    bbig = rng.standard_normal((N, K + 7)).astype(np.float32)
    a, b = abig[:, 5:5 + K], bbig[:, 3:3 + K]
    cbig = np.zeros((M, N + 9), np.float32)
    c = cbig[:, 4:4 + N]
    _C.sgemm(a, b, c, trans_b=True, bf16=isa)
    exact, bound = oracle(np.ascontiguousarray(a), np.ascontiguousarray(b), np.zeros((M, N), np.float32), 0, 1, 1.0, 0.0)
    assert np.all(np.abs(c - exact) <= bound)
    assert np.all(cbig[:, :4] == 0) and np.all(cbig[:, 4 + N:] == 0)


@pytest.mark.kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_gemm_close_to_fp32_within_bf16_error(isa):
    rng = np.random.default_rng(7)
    M, N, K = 70, 90, 200
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    c32 = np.zeros((M, N), np.float32)
    c16 = np.zeros((M, N), np.float32)
    _C.sgemm(a, b, c32)
    _C.sgemm(a, b, c16, bf16=isa)
    mag = np.abs(a) @ np.abs(b)
    # each operand carries a relative error <= 2**-9, a product <= 2**-8 (plus fp32 sums)
    assert np.all(np.abs(c16 - c32) <= 2.0**-8 * 1.01 * mag + 1e-4)
    assert np.abs(c16 - c32).max() > 0  # bf16 really was used


@pytest.mark.kernel
def test_paths_agree_with_each_other():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((50, 80)).astype(np.float32)
    b = rng.standard_normal((60, 80)).astype(np.float32)
    outs = {}
    for isa in HAVE:
        c = np.zeros((50, 60), np.float32)
        _C.sgemm(a, b, c, trans_b=True, bf16=isa)
        outs[isa] = c
    ref = outs["fp32"]
    mag = np.abs(bf16_numpy(a)) @ np.abs(bf16_numpy(b)).T
    for isa, c in outs.items():
        assert np.all(np.abs(c - ref) <= 2 * 82 * 2.0**-24 * mag), isa


@pytest.mark.kernel
def test_unknown_or_unavailable_path_is_an_error():
    with pytest.raises(ValueError, match="unknown ISA path"):
        _C.sgemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), bf16="avx9")
    with pytest.raises(ValueError, match="unknown ISA path"):
        instantsoup.precision.set_isa("sse")
    missing = [n for n in ISAS if n not in HAVE]
    if not missing:
        pytest.skip("this CPU has every path")
    with pytest.raises(ValueError, match="not available on this CPU"):
        instantsoup.precision.set_isa(missing[0])
    with pytest.raises(ValueError, match="not available on this CPU"):
        _C.sgemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32),
                 bf16=missing[0])


def test_forced_path_from_the_environment():
    env = dict(os.environ)
    code = ("import instantsoup as isp, sys\n"
            "try:\n"
            "    print(isp.precision.get_isa())\n"
            "except ValueError as e:\n"
            "    print('ERR', e)\n")
    for name in ISAS:
        env["INSTANTSOUP_ISA"] = name
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode == 0, out.stderr
        if name in HAVE:
            assert out.stdout.strip() == name
        else:
            assert out.stdout.startswith("ERR INSTANTSOUP_ISA=" + name) and "not available" in out.stdout


# ---- models ---------------------------------------------------------------------------------------

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
