"""CLIP kernels (csrc/clip.c) against NumPy oracles: patch embedding and the cosine head."""
import numpy as np
import pytest

from instantsoup import _C_test as _T  # test-only bindings of single kernels

pytestmark = pytest.mark.kernel


def ref_patch_embed(pix, w, cls, pos, P):
    """A conv with stride = kernel = P, written as explicit patch sums (float64)."""
    B, _, H, W = pix.shape
    C = w.shape[0]
    GH, GW = H // P, W // P
    wk = w.reshape(C, 3, P, P).astype(np.float64)
    out = np.zeros((B, GH * GW + 1, C))
    for gy in range(GH):
        for gx in range(GW):
            patch = pix[:, :, gy * P:(gy + 1) * P, gx * P:(gx + 1) * P].astype(np.float64)
            out[:, 1 + gy * GW + gx] = np.einsum("bchw,ochw->bo", patch, wk)
    out[:, 0] = cls
    return out + pos


@pytest.mark.parametrize("B,H,W,P,C", [(2, 8, 8, 4, 5), (3, 12, 6, 3, 7), (1, 4, 4, 4, 3), (2, 10, 15, 5, 9)])
def test_patch_embed_forward_backward(rng, B, H, W, P, C):
    pix = rng.standard_normal((B, 3, H, W), dtype=np.float32)
    K = 3 * P * P
    NP = (H // P) * (W // P)
    w = rng.standard_normal((C, K), dtype=np.float32)
    cls = rng.standard_normal(C, dtype=np.float32)
    pos = rng.standard_normal((NP + 1, C), dtype=np.float32)
    out = np.full((B, NP + 1, C), np.nan, np.float32)
    cols = np.full((B * NP, K), np.nan, np.float32)
    _T.patch_embed_forward(out, cols, pix, w, cls, pos, P)
    np.testing.assert_allclose(out, ref_patch_embed(pix, w, cls, pos, P), rtol=1e-5, atol=1e-5)
    # backward: d/dparams of sum(out * g)
    g = rng.standard_normal(out.shape, dtype=np.float32)
    dw = np.ones_like(w)  # accumulates
    dcls = np.ones_like(cls)
    dpos = np.ones_like(pos)
    _T.patch_embed_backward(dw, dcls, dpos, g, cols)
    gw = np.einsum("bnc,bnk->ck", g[:, 1:].astype(np.float64), cols.reshape(B, NP, K).astype(np.float64))
    np.testing.assert_allclose(dw, 1 + gw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dcls, 1 + g[:, 0].sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dpos, 1 + g.sum(0), rtol=1e-5, atol=1e-5)
    # the patch layout matches the conv weight: a finite difference on one weight entry
    eps = 1e-2
    w2 = w.copy()
    w2[C // 2, K - 1] += eps
    out2 = np.empty_like(out)
    _T.patch_embed_forward(out2, cols, pix, w2, cls, pos, P)
    fd = ((out2.astype(np.float64) - out) * g).sum() / eps
    assert fd == pytest.approx(gw[C // 2, K - 1], rel=1e-2, abs=1e-2)


def test_patch_embed_errors(rng):
    pix = np.zeros((2, 3, 8, 8), np.float32)
    w = np.zeros((4, 48), np.float32)
    cls, pos = np.zeros(4, np.float32), np.zeros((5, 4), np.float32)
    out, cols = np.zeros((2, 5, 4), np.float32), np.zeros((8, 48), np.float32)
    with pytest.raises(ValueError, match="multiple of the patch size 3"):
        _T.patch_embed_forward(out, cols, pix, np.zeros((4, 27), np.float32), cls, pos, 3)
    with pytest.raises(TypeError, match="pixel_values: expected dtype float32, got uint8"):
        _T.patch_embed_forward(out, cols, pix.astype(np.uint8), w, cls, pos, 4)
    with pytest.raises(ValueError, match="3 channels"):
        _T.patch_embed_forward(out, cols, np.zeros((2, 1, 8, 8), np.float32), w, cls, pos, 4)
    with pytest.raises(ValueError, match=r"position_embedding: expected shape \(5, 4\), got \(4, 4\)"):
        _T.patch_embed_forward(out, cols, pix, w, cls, pos[:4], 4)
    with pytest.raises(ValueError, match="weight"):
        _T.patch_embed_forward(out, cols, pix, w[:, :40].copy(), cls, pos, 4)
    with pytest.raises(ValueError, match="cols"):
        _T.patch_embed_backward(w.copy(), cls.copy(), pos.copy(), out, cols[:7])


def ref_cosine(f, w, b):
    f = f.astype(np.float64)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    return fn @ w.T.astype(np.float64) + (0 if b is None else b)


@pytest.mark.parametrize("with_bias", [False, True])
def test_cosine_head(rng, with_bias):
    B, D, NL = 5, 7, 3
    f = rng.standard_normal((B, D), dtype=np.float32)
    w = rng.standard_normal((NL, D), dtype=np.float32)
    b = rng.standard_normal(NL, dtype=np.float32) if with_bias else None
    logits, fn, inv = np.empty((B, NL), np.float32), np.empty((B, D), np.float32), np.empty(B, np.float32)
    _T.cosine_head_forward(logits, fn, inv, f, w, b)
    np.testing.assert_allclose(logits, ref_cosine(f, w, b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv, 1 / np.linalg.norm(f, axis=1), rtol=1e-6)
    g = rng.standard_normal((B, NL), dtype=np.float32)
    df = np.full((B, D), np.nan, np.float32)
    dw = np.zeros_like(w) + 0.5
    db = np.zeros(NL, np.float32) if with_bias else None
    _T.cosine_head_backward(df, dw, db, g, fn, inv, w)
    # analytic oracle in float64
    f64 = f.astype(np.float64)
    n = np.linalg.norm(f64, axis=1, keepdims=True)
    y = f64 / n
    dy = g @ w.astype(np.float64)
    want = (dy - y * (y * dy).sum(1, keepdims=True)) / n
    np.testing.assert_allclose(df, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, 0.5 + g.T.astype(np.float64) @ y, rtol=1e-5, atol=1e-6)
    if with_bias:
        np.testing.assert_allclose(db, g.sum(0), rtol=1e-5, atol=1e-6)
    # finite differences of sum(logits * g) w.r.t. f
    eps = 1e-3
    for (i, j) in [(0, 0), (B - 1, D - 1), (2, 3)]:
        fp, fm = f64.copy(), f64.copy()
        fp[i, j] += eps
        fm[i, j] -= eps
        fd = ((ref_cosine(fp, w, b) - ref_cosine(fm, w, b)) * g).sum() / (2 * eps)
        assert df[i, j] == pytest.approx(fd, rel=1e-3, abs=1e-5)
    # frozen head: no weight gradients
    _T.cosine_head_backward(df, None, None, g, fn, inv, w)
    np.testing.assert_allclose(df, want, rtol=1e-5, atol=1e-6)


def test_cosine_head_zero_feature():
    f = np.zeros((2, 4), np.float32)
    f[0, 0] = 1
    with pytest.raises(ValueError, match="feature 1 has a zero"):
        _T.cosine_head_forward(np.empty((2, 3), np.float32), np.empty((2, 4), np.float32),
                               np.empty(2, np.float32), f, np.ones((3, 4), np.float32))
