"""Single engine kernels against NumPy oracles (no torch: the sanitizer job runs these)."""
import math

import numpy as np
import pytest

from instantsoup import _C_test as _T  # test-only bindings of single kernels

pytestmark = pytest.mark.kernel

erf = np.vectorize(math.erf, otypes=[np.float64])


def test_exp_erf_accuracy():
    x = np.linspace(-80, 80, 20001).astype(np.float32)
    e, _ = _T.op_math(x)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - ref) / ref) < 5e-7
    x = np.linspace(-6, 6, 20001).astype(np.float32)
    _, r = _T.op_math(x)
    assert np.max(np.abs(r - erf(x.astype(np.float64)))) < 5e-7
    e, r = _T.op_math(np.array([np.nan, -np.inf, -1000.0, 1000.0], np.float32))
    assert np.isnan(e[0]) and np.isnan(r[0])
    assert 0 <= e[2] < 1e-37


def test_layernorm(rng):
    N, C = 37, 50
    x = rng.normal(1.0, 2.0, (N, C)).astype(np.float32)
    w = rng.normal(1.0, 0.2, C).astype(np.float32)
    b = rng.normal(0.0, 0.2, C).astype(np.float32)
    out, mean, rstd = _T.op_layernorm(x, w, b, 1e-5)
    xd = x.astype(np.float64)
    m = xd.mean(1, keepdims=True)
    v = xd.var(1, keepdims=True)
    xh = (xd - m) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(out, xh * w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, m[:, 0], rtol=1e-6, atol=1e-6)
    dout = rng.normal(size=(N, C)).astype(np.float32)
    dx, dw, db = _T.op_layernorm_backward(dout, x, w, mean, rstd)
    dxh = dout * w
    ref = (dxh - dxh.mean(1, keepdims=True) - xh * (dxh * xh).mean(1, keepdims=True)) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(dx, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, (dout * xh).sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, dout.sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.0, 0.25])
@pytest.mark.parametrize("N,C", [(37, 50), (701, 29), (3, 1)])
def test_residual_layernorm_is_dropout_add_layernorm(rng, N, C, p):
    """The fused pass equals dropout, the residual add and LayerNorm run one after the other, bit
    for bit (odd shapes, several row tasks, 1 and 2 threads), and LN of the sum in float64."""
    import instantsoup

    y = rng.normal(size=(N, C)).astype(np.float32)
    x = rng.normal(1.0, 2.0, (N, C)).astype(np.float32)
    w = rng.normal(1.0, 0.2, C).astype(np.float32)
    b = rng.normal(0.0, 0.2, C).astype(np.float32)
    dropped = _T.op_dropout(y.ravel(), p, 5, 2, 7).reshape(N, C) if p > 0 else y
    res_ref = dropped + x  # float32, the kernel's one rounding
    out_ref, mean_ref, rstd_ref = _T.op_layernorm(res_ref, w, b, 1e-5)
    prev = instantsoup.get_num_threads()
    try:
        for nt in (1, 2):
            instantsoup.set_num_threads(nt)
            out, mean, rstd, res = _T.op_layernorm(x, w, b, 1e-5, y, p, 5, 2, 7)
            np.testing.assert_array_equal(res, res_ref)
            np.testing.assert_array_equal(out, out_ref)
            np.testing.assert_array_equal(mean, mean_ref)
            np.testing.assert_array_equal(rstd, rstd_ref)
    finally:
        instantsoup.set_num_threads(prev)
    rd = res_ref.astype(np.float64)
    m, v = rd.mean(1, keepdims=True), rd.var(1, keepdims=True)
    np.testing.assert_allclose(out, (rd - m) / np.sqrt(v + 1e-5) * w + b, rtol=1e-5, atol=1e-5)
    if p > 0:
        kept = dropped != 0
        assert abs(kept.mean() - 0.75) < 0.1


def act_ref(x, act):
    x = x.astype(np.float64)
    if act == 0:
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    if act == 1:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if act == 2:
        return np.maximum(x, 0)
    return x / (1 + np.exp(-1.702 * x))


@pytest.mark.parametrize("act", [0, 1, 2, 3])
def test_activations(act):
    x = np.linspace(-9, 9, 40001).astype(np.float32)
    x = x[np.abs(x) > 1e-3]  # relu's kink
    y, d = _T.op_act(x, act)
    ref = act_ref(x, act)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=3e-7)
    h = 1e-4
    num = (act_ref(x.astype(np.float64) + h, act) - act_ref(x.astype(np.float64) - h, act)) / (2 * h)
    np.testing.assert_allclose(d, num, rtol=1e-4, atol=3e-6)


def attention_ref(qkv, am, NH, causal):
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // NH
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, NH, HS).transpose(0, 2, 1, 3).astype(np.float64)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HS)
    vis = np.ones((B, 1, T, T), bool)
    if am is not None:
        vis &= am[:, None, None, :].astype(bool)
    if causal:
        vis &= np.tril(np.ones((T, T), bool))
    s = np.where(vis, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return o, p, (q, k, v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention(rng, causal):
    B, T, C, NH = 3, 7, 12, 3
    qkv = rng.normal(size=(B, T, 3 * C)).astype(np.float32)
    am = np.ones((B, T), np.uint8)
    am[1, 5:] = 0
    am[2, 2:] = 0
    out, att = _T.op_attention(qkv, am, NH, causal, 0.0, 0)
    ref, p, (q, k, v) = attention_ref(qkv, am, NH, causal)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(att, p, rtol=1e-5, atol=1e-7)
    assert np.all(att[~np.broadcast_to(am[:, None, None, :].astype(bool), att.shape)] == 0)
    # backward against the analytic gradient
    dout = rng.normal(size=(B, T, C)).astype(np.float32)
    dq = _T.op_attention_backward(dout, qkv, att, am, NH, causal, 0.0, 0)
    HS = C // NH
    do = dout.reshape(B, T, NH, HS).transpose(0, 2, 1, 3).astype(np.float64)
    dv = p.transpose(0, 1, 3, 2) @ do
    dp = do @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) / math.sqrt(HS)
    dqr = ds @ k
    dkr = ds.transpose(0, 1, 3, 2) @ q
    ref = np.concatenate([z.transpose(0, 2, 1, 3).reshape(B, T, C) for z in (dqr, dkr, dv)], -1)
    np.testing.assert_allclose(dq, ref, rtol=1e-4, atol=1e-5)


def test_attention_all_masked_row_is_uniform(rng):
    qkv = rng.normal(size=(1, 4, 12)).astype(np.float32)
    out, att = _T.op_attention(qkv, np.zeros((1, 4), np.uint8), 2, False, 0.0, 0)
    np.testing.assert_allclose(att, 0.25)
    assert np.all(np.isfinite(out))


def test_attention_dropout_gradient(rng):
    """With dropout, backward matches finite differences of the same (seeded) forward."""
    B, T, C, NH = 2, 5, 8, 2
    qkv = rng.normal(size=(B, T, 3 * C)).astype(np.float64)
    dout = rng.normal(size=(B, T, C)).astype(np.float32)
    key = 12345

    def f(x):
        o, _ = _T.op_attention(x.astype(np.float32), None, NH, False, 0.3, key)
        return float((o.astype(np.float64) * dout).sum())

    _, att = _T.op_attention(qkv.astype(np.float32), None, NH, False, 0.3, key)
    g = _T.op_attention_backward(dout, qkv.astype(np.float32), att, None, NH, False, 0.3, key)
    d = rng.normal(size=qkv.shape)
    eps = 1e-2
    fd = (f(qkv + eps * d) - f(qkv - eps * d)) / (2 * eps)
    an = float((g * d).sum())
    assert abs(fd - an) < 1e-2 * abs(an) + 1e-3


def test_dropout_rng():
    x = np.ones(200_000, np.float32)
    y = _T.op_dropout(x, 0.25, 1, 0, 3)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.005
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    np.testing.assert_array_equal(y, _T.op_dropout(x, 0.25, 1, 0, 3))
    for other in [(2, 0, 3), (1, 1, 3), (1, 0, 4)]:  # seed, step, site each change the mask
        z = _T.op_dropout(x, 0.25, *other)
        assert 0.5 < ((z != 0) == kept).mean() < 0.7  # independent masks agree ~62.5%
    np.testing.assert_array_equal(_T.op_dropout(x, 0.0, 1, 0, 3), x)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_crossentropy(rng, smoothing):
    B, NL = 6, 4
    logits = rng.normal(0, 3, (B, NL)).astype(np.float32)
    y = rng.integers(0, NL, B).astype(np.int32)
    loss, probs, dl = _T.op_crossentropy(logits, y, smoothing)
    ld = logits.astype(np.float64)
    logp = ld - ld.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    target = np.full((B, NL), smoothing / NL)
    target[np.arange(B), y] += 1 - smoothing
    assert abs(loss - float(-(target * logp).sum(1).mean())) < 1e-6
    np.testing.assert_allclose(dl, (np.exp(logp) - target) / B, rtol=1e-5, atol=1e-7)


def adamw_ref(p, g, m, v, decay, mask, lr, b1, b2, eps, wd, step, max_norm):
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    g = g * mask
    norm = np.sqrt((g * g).sum())
    if max_norm > 0:
        g = g * min(1.0, max_norm / (norm + 1e-6))
    p = p * np.where(decay, 1 - lr * wd, 1.0)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr / (1 - b1 ** step) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** step) + eps)
    return p * mask, m * mask, v * mask, norm


def test_adamw_masked(rng):
    n = 1000
    p = rng.normal(size=n).astype(np.float32)
    g = rng.normal(size=n).astype(np.float32)
    m = np.zeros(n, np.float32)
    v = np.zeros(n, np.float32)
    seg = np.array([0, 300, 700, n], np.int64)
    dec = np.array([1, 0, 1], np.uint8)
    decay = np.repeat(dec.astype(bool), np.diff(seg))
    mask = np.ones(n, np.uint8)
    mask[100:500] = rng.random(400) > 0.5
    p *= mask
    rp, rm, rv = p.copy(), m.copy(), v.copy()
    for step in range(1, 6):
        gg = (g * (1 + 0.1 * step)).astype(np.float32)
        norm = _T.op_adamw(p, gg.copy(), m, v, seg, dec, mask[100:500].copy(), 100, 1e-2, 0.9, 0.99, 1e-8, 0.1,
                           step, 5.0)
        full = mask.astype(np.float64)
        rp, rm, rv, rnorm = adamw_ref(rp, gg, rm, rv, decay, full, 1e-2, 0.9, 0.99, 1e-8, 0.1, step, 5.0)
        assert abs(norm - rnorm) < 1e-4 * rnorm
    np.testing.assert_allclose(p, rp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m, rm, rtol=1e-5, atol=1e-7)
    off = mask == 0
    assert np.all(p[off] == 0) and np.all(m[off] == 0) and np.all(v[off] == 0)


def test_adamw_nonfinite_gradient_leaves_state(rng):
    p = rng.normal(size=10).astype(np.float32)
    g = np.zeros(10, np.float32)
    g[3] = np.nan
    m = np.zeros(10, np.float32)
    v = np.zeros(10, np.float32)
    before = p.copy()
    with pytest.raises(ValueError, match="nan"):
        _T.op_adamw(p, g, m, v, np.array([0, 10], np.int64), np.array([1], np.uint8), None, 0, 1e-3, 0.9,
                    0.999, 1e-8, 0.0, 1, 0.0)
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("prenorm,causal,act", [(False, False, 0), (True, True, 3), (True, False, 1)])
def test_encoder_stack_gradient_finite_differences(rng, prenorm, causal, act):
    """The whole stack (post-LN BERT / pre-LN CLIP, masks, dropout on) against finite differences."""
    L, B, T, C, NH, F = 2, 2, 5, 8, 2, 12
    n = L * (4 * C * C + 2 * C * F + 9 * C + F)
    params = rng.normal(0, 0.3, n).astype(np.float32)
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    dout = rng.normal(size=(B, T, C)).astype(np.float32)
    am = np.ones((B, T), np.uint8)
    am[1, 3:] = 0
    args = (L, NH, act, prenorm, causal, 1e-5, 0.2, 0.2, True, 7, 3)
    y, dx, g = _T.op_encoder(params, x, am, dout, *args)
    y2, dx2, g2 = _T.op_encoder(params, x, am, dout, *args)
    np.testing.assert_array_equal(y, y2)  # same seed and step: same dropout masks
    np.testing.assert_array_equal(g, g2)

    def f(p, xx):
        out, _, _ = _T.op_encoder(p.astype(np.float32), xx.astype(np.float32), am, dout, *args)
        return float((out.astype(np.float64) * dout).sum())

    eps = 1e-2
    for which in ("x", "params"):
        d = rng.normal(size=x.shape if which == "x" else params.shape)
        if which == "x":
            fd = (f(params, x + eps * d) - f(params, x - eps * d)) / (2 * eps)
            an = float((dx * d).sum())
        else:
            fd = (f(params + eps * d, x) - f(params - eps * d, x)) / (2 * eps)
            an = float((g * d).sum())
        assert abs(fd - an) <= 2e-2 * abs(an) + 1e-3, (which, fd, an)


# the elementwise kernels are compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time
# (INSTANTSOUP_SIMD lowers the pick); every variant must give the same bits
SIMD_PROBE = """
import hashlib, numpy as np
from instantsoup import _C_test as T
rng = np.random.default_rng(3)
h = hashlib.sha256()
for prenorm, causal, act in [(False, False, 0), (True, True, 3), (True, False, 1), (False, False, 2)]:
    L, B, T_, C, NH, F = 2, 3, 37, 48, 4, 80   # odd lengths: vector tails on every path
    n = L * (4 * C * C + 2 * C * F + 9 * C + F)
    params = rng.normal(0, 0.3, n).astype(np.float32)
    x = rng.normal(size=(B, T_, C)).astype(np.float32)
    dout = rng.normal(size=(B, T_, C)).astype(np.float32)
    am = np.ones((B, T_), np.uint8)
    am[1, 20:] = 0
    for out in T.op_encoder(params, x, am, dout, L, NH, act, prenorm, causal, 1e-5, 0.1, 0.1, True, 11, 2):
        h.update(np.ascontiguousarray(out).tobytes())
n = 3001
p = rng.normal(size=n).astype(np.float32); m = np.zeros(n, np.float32); v = np.zeros(n, np.float32)
mask = (rng.random(n) > 0.4).astype(np.uint8); p *= mask
for step in range(1, 4):
    norm = T.op_adamw(p, rng.normal(size=n).astype(np.float32), m, v, np.array([0, 1000, n], np.int64),
                      np.array([1, 0], np.uint8), mask.copy(), 0, 1e-2, 0.9, 0.99, 1e-8, 0.1, step, 5.0)
    h.update(np.float64(norm).tobytes())
for a in (p, m, v):
    h.update(a.tobytes())
logits, y = rng.normal(0, 3, (9, 5)).astype(np.float32), rng.integers(0, 5, 9).astype(np.int32)
loss, probs, dl = T.op_crossentropy(logits, y, 0.1)
h.update(np.float64(loss).tobytes() + probs.tobytes() + dl.tobytes())
print(h.hexdigest())
"""


def test_simd_variants_give_the_same_bits():
    import subprocess
    import sys

    from conftest import package_parent, subprocess_env

    def run(level):
        env = subprocess_env()
        env.pop("INSTANTSOUP_SIMD", None)
        if level:
            env["INSTANTSOUP_SIMD"] = level
        code = "import instantsoup\n" + SIMD_PROBE + "print(instantsoup.build_info()['simd'])\n"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=300, cwd=package_parent())
        assert out.returncode == 0, out.stderr
        digest, ran = out.stdout.strip().splitlines()[-2:]
        return digest, ran

    order = ["base", "avx2", "avx512"]
    best_digest, best = run(None)
    levels = order[:order.index(best) + 1]  # every variant this CPU can run
    got = {lv: run(lv) for lv in levels}
    assert all(ran == lv for lv, (_, ran) in got.items()), got  # the forced variant really ran
    assert {d for d, _ in got.values()} == {best_digest}, got
