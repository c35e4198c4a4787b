"""Adversarial boundary tests: every public _C function and the model / optimizer / mask entry
points get bad arguments (wrong types, None, float64, non-contiguous, wrong shapes, empty or
zero-size-with-huge-dims arrays, NaN/inf, out-of-range ids/labels, huge sizes) and must raise a
Python exception, never crash or write out of bounds. Run under ASan+UBSan by .ci/sanitize."""
import math

import numpy as np
import pytest

from instantsoup._native import _C
from instantsoup import _C_test as _T  # test-only bindings of single kernels

pytestmark = pytest.mark.kernel

ERR = (TypeError, ValueError, MemoryError, IndexError, RuntimeError, OverflowError)
f32, i32, u8, i64 = np.float32, np.int32, np.uint8, np.int64
BIG = 2**62


def bad(fn, *args, **kw):
    with pytest.raises(ERR) as ei:
        fn(*args, **kw)
    assert str(ei.value), "the error must say what is wrong"
    return ei.value


def zeros_huge(*shape, dtype=f32):
    """A zero-size array whose other dimensions are huge (no memory behind it)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * len(shape))


def junk(shape, dtype=f32):
    """Variants of a valid (shape, dtype) array argument that must all be rejected."""
    good = np.zeros(shape, dtype)
    yield None
    yield 3.0
    yield good.tolist()
    yield good.astype(np.float64 if dtype != np.float64 else np.float32)
    yield np.zeros(shape + (1,), dtype)
    if len(shape) >= 1 and shape[-1] > 1:
        yield np.zeros(shape[:-1] + (shape[-1] * 2,), dtype)[..., ::2]  # non-contiguous
    if len(shape) >= 1:
        yield np.zeros((shape[0] + 1,) + shape[1:], dtype)


# ---- core ---------------------------------------------------------------------------------

def test_sgemm_bad_arguments():
    a, b, c = np.ones((3, 4), f32), np.ones((4, 5), f32), np.zeros((3, 5), f32)
    for j in junk((3, 4)):
        bad(_T.sgemm, j, b, c)
    for j in junk((4, 5)):
        bad(_T.sgemm, a, j, c)
    for j in junk((3, 5)):
        bad(_T.sgemm, a, b, j)
    bad(_T.sgemm, a, b, c[::-1])
    bad(_T.sgemm, a, b, c, True)
    ro = c.copy()
    ro.flags.writeable = False
    bad(_T.sgemm, a, b, ro)
    bad(_T.sgemm, a, b, c[:, :4])
    x = np.ones((4, 4), f32)
    bad(_T.sgemm, x, x[:, :], x)  # aliasing
    _T.sgemm(np.zeros((0, 4), f32), b, np.zeros((0, 5), f32))  # empty is fine
    _T.sgemm(np.zeros((3, 0), f32), np.zeros((0, 5), f32), c)
    assert (c == 0).all()
    bad(_C.set_num_threads, 0)
    bad(_C.set_num_threads, -1)
    bad(_C.set_num_threads, 2**70)
    bad(_C.set_num_threads, "2")
    bad(_C.set_num_threads, None)


# ---- pruning family -------------------------------------------------------------------------

def test_mask_select_bad_arguments():
    out = np.zeros(10, u8)
    xs = [np.ones(4, f32), np.ones(6, f32)]
    ok = dict(xs=xs)
    _C.mask_select(out, [4, 6], 5, "abs", **ok)
    assert out.sum() == 5
    for j in junk((10,), u8):
        bad(_C.mask_select, j, [4, 6], 5, "abs", **ok)
    bad(_C.mask_select, out, None, 5, "abs", **ok)
    bad(_C.mask_select, out, [4, -6], 5, "abs", **ok)
    bad(_C.mask_select, out, [4, 6.5], 5, "abs", **ok)
    bad(_C.mask_select, out, [4, 7], 5, "abs", **ok)
    bad(_C.mask_select, out, [4, 6], -1, "abs", **ok)
    bad(_C.mask_select, out, [4, 6], 11, "abs", **ok)
    bad(_C.mask_select, out, [4, 6], 2**70, "abs", **ok)
    bad(_C.mask_select, out, [4, 6], 5, "bogus", **ok)
    bad(_C.mask_select, out, [4, 6], 5, "abs")
    bad(_C.mask_select, out, [4, 6], 5, "abs", xs=[xs[0]])
    bad(_C.mask_select, out, [4, 6], 5, "abs", xs=[xs[0], xs[1].astype(np.float64)])
    bad(_C.mask_select, out, [4, 6], 5, "abs", xs=[xs[1], xs[0]])
    bad(_C.mask_select, out, [4, 6], 5, "abs", xs=[xs[0], None])
    bad(_C.mask_select, out, [4, 6], 5, "abs", xs="ab")
    bad(_C.mask_select, out, [4, 6], 5, "score", xs=[xs[0], np.full(6, np.nan, f32)])
    bad(_C.mask_select, out, [4, 6], 5, "random", cur=np.zeros(9, u8))
    bad(_C.mask_select, out, [4, 6], 5, "random", cur=np.full(10, 2, u8))
    bad(_C.mask_select, out, [4, 6], 5, "random", cur=np.zeros(10, u8))  # n_keep > candidates
    bad(_C.mask_select, out, [4, 6], 5, "random", cur=out[::-1])
    # sizes whose sum overflows int64 (or wraps to out's length) must not reach the kernel
    for sizes in ([2**63 - 1, 2], [2**62] * 4 + [10], [BIG, BIG, BIG, BIG, 10]):
        bad(_C.mask_select, out, sizes, 1, "random")
        bad(_C.mask_select, out, sizes, 1, "none")
        bad(_C.mask_vote_select, out, [out.copy()], False, sizes, 1)
    bad(_C.mask_select, out, [2**64], 1, "random")


def test_mask_family_bad_arguments():
    P = 20
    m = [np.ones(P, u8), np.zeros(P, u8)]
    out = np.zeros(P, u8)
    for fn, extra in ((_C.mask_combine, ("union",)), ):
        bad(fn, out, m, P, False, "bogus")
        bad(fn, out, m, -1, False, *extra)
        bad(fn, out, m, 2**70, False, *extra)
        bad(fn, out, [], P, False, *extra)
        bad(fn, out, m + [np.full(P, 3, u8)], P, False, *extra)
        bad(fn, out, [m[0], m[1][:-1]], P, False, *extra)
        bad(fn, out, [m[0], None], P, False, *extra)
        bad(fn, out, m, P + 1, False, *extra)
        bad(fn, out, m, P, True, *extra)
        bad(fn, m[1], m, P, False, *extra)
    bad(_C.mask_vote_keep, out, m, P, False, -5)
    bad(_C.mask_vote_keep, out, m, P, False, 2**40)
    bad(_C.mask_vote_keep, out, [m[0]] * 256, P, False, 1)
    bad(_C.mask_vote_keep, out, [np.full(P, 7, u8)], P, False, 1)
    bad(_C.mask_vote_keep, out, m, -3, False, 1)
    bad(_T.mask_vote_hist, m, -3, False)
    bad(_T.mask_vote_hist, [], P, False)
    bad(_T.mask_vote_hist, [np.full(P, 9, u8)], P, False)
    bad(_T.mask_vote_hist, m, P, True)
    bad(_C.mask_vote_select, out, m, False, [10, 10], -1)
    bad(_C.mask_vote_select, out, m, False, [10, 10], P + 1)
    bad(_C.mask_vote_select, out, m, False, [10, 10], 5, "random")
    bad(_C.mask_vote_select, out, m, False, [10, 10], 5, "abs")
    bad(_C.mask_vote_select, out, m, False, [10, 10], 5, "abs", [np.ones(10, f32)])
    bad(_C.mask_vote_select, out, m, False, [10, 10], 5, "score",
        [np.ones(10, f32), np.full(10, np.inf, f32)])
    bad(_C.mask_vote_select, out, [], False, [10, 10], 5)
    bad(_C.mask_vote_select, m[0], m, False, [10, 10], 5)
    bits = np.zeros(3, u8)
    bad(_C.mask_pack, bits, np.full(P, 2, u8))
    bad(_C.mask_pack, bits[:2], m[0])
    bad(_C.mask_pack, bits, m[0].astype(bool))
    bad(_C.mask_pack, m[0][:3], m[0])
    bad(_C.mask_unpack, out, bits[:2])
    bad(_C.mask_unpack, out[::2], bits)
    bad(_C.mask_unpack, out, None)
    bad(_C.mask_overlap, m[0], m[1][:-1], P, False)
    bad(_C.mask_overlap, m[0], m[1], -1, False)
    bad(_C.mask_overlap, m[0], np.full(P, 5, u8), P, False)
    bad(_C.mask_count, m[0], P + 1, False)
    bad(_C.mask_count, np.full(P, 5, u8), P, False)
    bad(_C.mask_count, m[0], 2**63 - 1, True)
    bad(_C.mask_count, m[0], -(2**63), False)
    bad(_C.mask_combine, out, m, 2**63 - 1, True, "union")


def test_soup_average_bad_arguments():
    out = np.zeros(6, f32)
    xs = [np.ones(6, f32), np.full(6, 3, f32)]
    _C.soup_average(out, xs)
    assert (out == 2).all()
    for j in list(junk((6,)))[:4]:
        bad(_C.soup_average, j, xs)
    bad(_C.soup_average, np.zeros(12, f32)[::2], xs)
    bad(_C.soup_average, np.zeros(7, f32), xs)
    bad(_C.soup_average, out, [])
    bad(_C.soup_average, out, [xs[0], xs[1][:5]])
    bad(_C.soup_average, out, [xs[0], xs[1].astype(np.float64)])
    bad(_C.soup_average, out, xs, np.ones(3))
    bad(_C.soup_average, out, xs, np.ones(2, f32))
    bad(_C.soup_average, out, xs, [0.5, 0.5])
    bad(_C.soup_average, out, xs, np.array([np.nan, 1.0]))
    bad(_C.soup_average, xs[1], xs)


# ---- encoder family -------------------------------------------------------------------------

def _bert(NL=3):
    return _C.clf_new(50, 8, 2, NL, 1, 8, 2, 16, 0, 1e-12, 0.1, 0.1, 0.1, 0)


def test_model_new_bad_configs():
    good = [50, 8, 2, 3, 1, 8, 2, 16, 0, 1e-12, 0.1, 0.1, 0.1, 0]
    # type_vocab_size 0 is valid (DistilBERT has no token types)
    for i, vals in enumerate([(0, -1, 2**31), (0, -5), (-1, -3), (0, -2), (0, -1), (0, -8, 7), (0, 3, -2),
                              (0, -1), (-1, 99, None, "gelu"), (0.0, -1.0, math.nan, math.inf),
                              (1.0, -0.1, math.nan), (1.0, 2.0), (1.0, math.nan), (-2, 50, 2**40)]):
        for v in vals:
            args = list(good)
            args[i] = v
            bad(_C.clf_new, *args)
    bad(_C.clf_new, 2**30, 2**30, 2, 3, 2**20, 2**15, 2, 2**20, 0, 1e-12, 0.1, 0.1, 0.1, 0)
    # family options: unknown head, image sizes, position offsets that do not fit
    for kw in ({"head": 4}, {"head": -1}, {"patches": True, "image_size": 10, "patch_size": 4},
               {"patches": True, "image_size": 0, "patch_size": 0}, {"patches": True, "image_size": 2**20, "patch_size": 1},
               {"pad_positions": True, "pad_id": 7}, {"pad_positions": True, "pad_id": -1}, {"nope": 1}):
        args = list(good)
        if "pad_id" in kw:
            args[13] = kw.pop("pad_id")
        bad(_C.clf_new, *args, **kw)
    h = _C.clf_new(*good, patches=True, image_size=8, patch_size=4)
    bad(_C.clf_forward, h, np.zeros((2, 3, 8, 8), np.float64), None, None)
    bad(_C.clf_forward, h, np.zeros((2, 3, 4, 4), f32), None, None)
    bad(_C.clf_forward, h, np.full((2, 3, 8, 8), np.nan, f32), None, None)
    bad(_C.clf_forward, h, np.zeros((2, 3, 8, 8), f32), np.zeros((2, 5), np.int32), None)
    assert _C.clf_forward(h, np.zeros((2, 3, 8, 8), f32), None, None).shape == (2, 3)
    # every family's path forward and backward (the sanitizer job runs this file): RoBERTa
    # positions + head dropout, ELECTRA's projected embeddings, DistilBERT's ReLU head, ViT
    y3 = np.array([0, 2], np.int32)
    ids = np.array([[0, 5, 7, 1], [0, 9, 1, 1]], np.int32)
    for kw in ({"pad_positions": True, "head_dropin": True}, {"embedding_size": 4, "head": 2, "head_dropin": True},
               {"head": 3}, {"patches": True, "image_size": 8, "patch_size": 4, "prenorm": True, "final_ln": True,
                             "head": 0}):
        args = list(good)
        args[13] = 1
        h = _C.clf_new(*args, **kw)
        _C.model_set_training(h, True)
        x = np.ones((2, 3, 8, 8), f32) if kw.get("patches") else ids
        loss, logits = _C.clf_forward_backward(h, x, None, None, y3, 0.1)
        assert np.isfinite(loss) and np.isfinite(logits).all() and np.isfinite(_C.model_buffers(h)[1]).all()
    h = _C.clf_new(*good[:2], 0, *good[3:])  # no token types
    bad(_C.clf_forward, h, np.ones((2, 4), np.int32), np.zeros((2, 4), np.int32), None)
    assert _C.clf_forward(h, np.ones((2, 4), np.int32), None, None).shape == (2, 3)


def _opt_args(h, n):
    return [np.zeros(n, f32), np.zeros(n, f32), np.array([0, n], i64), np.ones(1, u8)]


def test_bert_bad_calls():
    h = _bert()
    params, grads, masks = _C.model_buffers(h)
    n = params.size
    ids = np.ones((2, 4), i32)
    tt = np.zeros((2, 4), i32)
    am = np.ones((2, 4), u8)
    y = np.array([0, 2], i32)
    _C.clf_forward(h, ids, tt, am)
    _C.clf_forward_backward(h, ids, None, None, y, 0.0)
    for j in junk((2, 4), i32):
        bad(_C.clf_forward, h, j, tt, am)
    for j in list(junk((2, 4), i32))[1:]:
        bad(_C.clf_forward, h, ids, j, am)
    for j in list(junk((2, 4), u8))[1:]:
        bad(_C.clf_forward, h, ids, tt, j)
    for arr in (np.zeros((0, 4), i32), np.zeros((2, 0), i32), zeros_huge(0, 2**40, dtype=i32),
                zeros_huge(2**40, 0, dtype=i32), np.zeros((1, 9), i32), np.full((2, 4), 50, i32),
                np.full((2, 4), -1, i32), np.full((2, 4), 2**31 - 1, i32)):
        bad(_C.clf_forward, h, arr, None, None)
    bad(_C.clf_forward, h, ids, np.full((2, 4), 2, i32), None)
    bad(_C.clf_forward, h, ids, np.full((2, 4), -1, i32), None)
    bad(_C.clf_forward, h, ids, None, np.full((2, 4), 2, u8))
    bad(_C.clf_forward, None, ids, None, None)
    bad(_C.clf_forward, "capsule", ids, None, None)
    bad(_C.clf_forward, _C.clipt_new if False else object(), ids, None, None)
    for yb in (np.array([0, 3], i32), np.array([-1, 0], i32), np.array([0], i32), y.astype(np.int64),
               y.astype(f32), None, [0, 1], np.array([0, 1, 2], i32)[::2].copy()[:1]):
        bad(_C.clf_forward_backward, h, ids, None, None, yb, 0.0)
    for s in (-0.1, 1.5, math.nan, math.inf):
        bad(_C.clf_forward_backward, h, ids, None, None, y, s)
    hr = _bert(NL=1)
    bad(_C.clf_forward_backward, hr, ids, None, None, np.array([0, np.nan], f32), 0.0)
    bad(_C.clf_forward_backward, hr, ids, None, None, np.array([0, np.inf], f32), 0.0)
    bad(_C.clf_forward_backward, hr, ids, None, None, y, 0.0)
    # AdamW / train step
    m, v, seg, dec = _opt_args(h, n)
    hp = [1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 1.0]
    _C.model_adamw(h, m, v, seg, dec, *hp)
    variants = [
        (m[:-1], v, seg, dec), (m, v[:-1], seg, dec), (m, m, seg, dec), (m, v, seg[:1], dec),
        (m, v, np.array([0, n + 1], i64), dec), (m, v, np.array([1, n], i64), dec),
        (m, v, np.array([0, n, n], i64), np.ones(2, u8)) if False else (m, v, seg, np.ones(2, u8)),
        (m, v, np.array([0, n + 5, n], i64), np.ones(2, u8)), (m, v, np.array([0, -5, n], i64), np.ones(2, u8)),
        (m, v, np.zeros(1, i64), np.zeros(0, u8)), (m, v, seg.astype(i32), dec), (m.astype(np.float64), v, seg, dec),
        (None, v, seg, dec), (m, v, seg, None),
    ]
    for var in variants:
        bad(_C.model_adamw, h, *var, *hp)
        bad(_C.clf_train_step, h, *var, *hp, ids, None, None, y, 0.0)
    for i, vals in enumerate([(-1, math.nan), (1.0, -0.1, math.nan), (1.0, math.nan), (-1, math.nan), (-1, math.nan),
                              (0, -1), (math.nan,)]):
        for val in vals:
            h2 = list(hp)
            h2[i] = val
            bad(_C.model_adamw, h, m, v, seg, dec, *h2)
            bad(_C.clf_train_step, h, m, v, seg, dec, *h2, ids, None, None, y, 0.0)
    bad(_C.clf_train_step, h, m, v, seg, dec, *hp, np.full((2, 4), 99, i32), None, None, y, 0.0)
    bad(_C.clf_train_step, h, m, v, seg, dec, *hp, ids, None, None, np.array([7, 0], i32), 0.0)
    bad(_C.clf_train_step, h, m, v, seg, dec, *hp, ids, None, None, y, 2.0)
    # copy between different configs / wrong capsules
    bad(_C.model_copy, h, hr)
    bad(_C.model_copy, h, None)
    for seed in (-1, 2**64, 1.5, None):
        bad(_C.model_rng, h, seed, 0)
        bad(_C.model_rng, h, 0, seed)
        bad(_C.model_rng, _clipv(), seed, 0)
    _C.model_rng(h, 2**64 - 1, 3)
    assert _C.model_rng_state(h) == (2**64 - 1, 3)
    bad(_C.model_tensors, None)
    bad(_C.model_buffers, 3)


def test_op_bindings_bad_arguments():
    x = np.ones((3, 4), f32)
    w = np.ones(4, f32)
    for j in list(junk((3, 4)))[:-1]:
        bad(_T.op_layernorm, j, w, w, 1e-5)
    bad(_T.op_layernorm, x, w[:3], w, 1e-5)
    bad(_T.op_layernorm, x, w, None, 1e-5)
    bad(_T.op_layernorm_backward, x[:2], x, w, np.ones(3, f32), np.ones(3, f32))
    bad(_T.op_layernorm_backward, x, x, w, np.ones(2, f32), np.ones(3, f32))
    bad(_T.op_act, np.ones(3, f32), 99)
    bad(_T.op_act, np.ones(3, f32), -1)
    bad(_T.op_act, np.ones((3, 1), f32), 0)
    bad(_T.op_math, np.ones(3))
    q = np.ones((2, 3, 12), f32)
    bad(_T.op_attention, q, None, 0, False, 0.0, 0)
    bad(_T.op_attention, q, None, 3, False, 0.0, 0)
    bad(_T.op_attention, q[:, :, :11].copy(), None, 1, False, 0.0, 0)
    bad(_T.op_attention, q, None, 2, False, 1.0, 0)
    bad(_T.op_attention, q, None, 2, False, math.nan, 0)
    bad(_T.op_attention, q, np.ones((2, 2), u8), 2, False, 0.0, 0)
    for q0 in (zeros_huge(0, 2**40, 12), zeros_huge(2**40, 0, 12)):  # empty: no error, no crash
        try:
            _T.op_attention(q0, None, 2, False, 0.0, 0)
        except ERR:
            pass
    out, att = _T.op_attention(q, None, 2, False, 0.0, 0)
    bad(_T.op_attention_backward, out[:1], q, att, None, 2, False, 0.0, 0)
    bad(_T.op_attention_backward, out, q, att[:, :1], None, 2, False, 0.0, 0)
    bad(_T.op_dropout, np.ones(3, f32), 1.0, 0, 0, 0)
    bad(_T.op_dropout, np.ones(3, f32), -0.5, 0, 0, 0)
    logits = np.ones((2, 3), f32)
    bad(_T.op_crossentropy, logits, np.array([0, 3], i32), 0.0)
    bad(_T.op_crossentropy, logits, np.array([0, -1], i32), 0.0)
    bad(_T.op_crossentropy, logits, np.array([0], i32), 0.0)
    n = 10
    p, g, m, v = (np.zeros(n, f32) for _ in range(4))
    seg, dec = np.array([0, n], i64), np.ones(1, u8)
    hp = [1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 1.0]
    _T.op_adamw(p, g, m, v, seg, dec, None, 0, *hp)
    bad(_T.op_adamw, p, g, m, v, np.array([0, 1000, n], i64), np.ones(2, u8), None, 0, *hp)
    bad(_T.op_adamw, p, g, m, v, np.array([0, -4, n], i64), np.ones(2, u8), None, 0, *hp)
    bad(_T.op_adamw, p, g, m, v, seg, dec, np.ones(4, u8), 2**63 - 2, *hp)
    bad(_T.op_adamw, p, g, m, v, seg, dec, np.ones(4, u8), 8, *hp)
    bad(_T.op_adamw, p, g, m, v, seg, dec, np.ones(4, u8), -1, *hp)
    bad(_T.op_adamw, p, g, m, v, seg, dec, None, 0, *hp[:5], 0, 1.0)
    bad(_T.op_adamw, p, g[:-1], m, v, seg, dec, None, 0, *hp)
    xe = np.ones((1, 2, 8), f32)
    bad(_T.op_encoder, np.ones(10, f32), xe, None, xe, 1, 2, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, np.ones(10, f32), xe, None, xe, 0, 2, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, np.ones(10, f32), zeros_huge(0, 1, 2**31), None, zeros_huge(0, 1, 2**31), 1, 1, 0,
        False, False, 1e-5, 0.0, 0.0, False, 0, 0)


# ---- CLIP kernels ---------------------------------------------------------------------------

def test_clip_kernels_bad_arguments():
    B, P, C, H = 2, 4, 8, 8
    NP, K = (H // P) ** 2, 3 * P * P
    pix = np.ones((B, 3, H, H), f32)
    w = np.ones((C, K), f32)
    cls = np.ones(C, f32)
    pos = np.ones((NP + 1, C), f32)
    out = np.zeros((B, NP + 1, C), f32)
    cols = np.zeros((B * NP, K), f32)
    _T.patch_embed_forward(out, cols, pix, w, cls, pos, P)
    for Pv in (0, -4, 3, 16, 2**31 - 1):
        bad(_T.patch_embed_forward, out, cols, pix, w, cls, pos, Pv)
    for j in junk((B, 3, H, H)):
        bad(_T.patch_embed_forward, out, cols, j, w, cls, pos, P)
    bad(_T.patch_embed_forward, out, cols, np.zeros((0, 3, H, H), f32), w, cls, pos, P)
    bad(_T.patch_embed_forward, out, cols, zeros_huge(0, 3, 2**29, 2**29), w, cls, pos, P)
    bad(_T.patch_embed_forward, out, cols, zeros_huge(1, 3, 0, 2**29), w, cls, pos, P)
    bad(_T.patch_embed_forward, out, cols, np.ones((B, 2, H, H), f32), w, cls, pos, P)
    bad(_T.patch_embed_forward, out, out, pix, w, cls, pos, P)
    bad(_T.patch_embed_forward, out, cols, pix, w, cls[:-1], pos, P)
    bad(_T.patch_embed_forward, out, cols, pix, w, cls, pos[:-1], P)
    dw, dcls, dpos = np.zeros_like(w), np.zeros_like(cls), np.zeros_like(pos)
    _T.patch_embed_backward(dw, dcls, dpos, out, cols)
    bad(_T.patch_embed_backward, dw, dcls, dpos, out[:, :1].copy(), cols[:2])
    bad(_T.patch_embed_backward, dw, dcls, dpos, out, cols[:-1])
    bad(_T.patch_embed_backward, dw[:-1], dcls, dpos, out, cols)
    bad(_T.patch_embed_backward, dw, dcls, dpos, np.zeros((0, NP + 1, C), f32), cols)
    bad(_T.patch_embed_backward, dw, dcls, dpos, zeros_huge(0, 2**40, C), cols)
    f = np.ones((3, 5), f32)
    hw = np.ones((4, 5), f32)
    logits, fn, inv = np.zeros((3, 4), f32), np.zeros((3, 5), f32), np.zeros(3, f32)
    _T.cosine_head_forward(logits, fn, inv, f, hw)
    bad(_T.cosine_head_forward, logits, fn, inv, f, hw, np.ones(3, f32))
    bad(_T.cosine_head_forward, logits, fn, inv, f[:, :4].copy(), hw)
    bad(_T.cosine_head_forward, logits, fn, inv[:2], f, hw)
    bad(_T.cosine_head_forward, logits, fn, inv, np.zeros((0, 5), f32), hw)
    bad(_T.cosine_head_forward, logits, fn, inv, f, np.zeros((0, 5), f32))
    bad(_T.cosine_head_forward, logits, fn, inv, np.full((3, 5), np.nan, f32), hw)
    bad(_T.cosine_head_backward, fn, None, None, logits[:, :3].copy(), fn, inv, hw)
    bad(_T.cosine_head_backward, fn, np.zeros((4, 4), f32), None, logits, fn, inv, hw)
    bad(_T.cosine_head_backward, fn, None, np.zeros(3, f32), logits, fn, inv, hw)
    bad(_T.cosine_head_backward, fn, None, None, logits, fn, inv[:2], hw)


def test_huge_configs_are_refused():
    # parameter counts that overflow int64 must be a clear error, not a wrapped allocation
    for L, C, F in ((2**31 - 1, 2**28, 2**30), (2**24, 2**20, 2**20), (2**31 - 1, 2**15, 2**15)):
        bad(_C.clf_new, 50, 8, 2, 3, L, C, 1, F, 0, 1e-12, 0.1, 0.1, 0.1, 0)
        bad(_C.clipv_new, L, C, 1, F, 0, 1e-5, 0.0, 8, 4, 4, 0)
        bad(_C.clipt_new, L, C, 1, F, 0, 1e-5, 50, 8, 4, 1)


# ---- CLIP models ----------------------------------------------------------------------------

def _clipv(NL=3):
    return _C.clipv_new(1, 8, 2, 16, 0, 1e-5, 0.0, 8, 4, 6, NL)


def test_clip_models_bad_calls():
    good = [1, 8, 2, 16, 0, 1e-5, 0.0, 8, 4, 6, 3]
    for i, vals in enumerate([(0, -1), (0, 7), (0, 3), (0, -1), (-1, 9), (0.0, -1.0, math.nan, math.inf),
                              (1.0, -0.5, math.nan), (0, 6, 3, -8), (0, -4, 3, 16), (0, -1), (-1,)]):
        for v in vals:
            args = list(good)
            args[i] = v
            bad(_C.clipv_new, *args)
    h = _clipv()
    p = _C.model_buffers(h)[0]
    p[:] = np.random.default_rng(0).normal(0, 0.1, p.size)
    px = np.zeros((2, 3, 8, 8), f32)
    y = np.array([0, 2], i32)
    _C.clipv_forward(h, px)
    for j in list(junk((2, 3, 8, 8)))[:-1]:
        bad(_C.clipv_forward, h, j)
        bad(_C.clipv_encode, h, j)
        bad(_C.clipv_forward_backward, h, j, y, 0.0)
    for pv in (np.zeros((0, 3, 8, 8), f32), zeros_huge(0, 3, 8, 8), np.zeros((2, 3, 4, 4), f32),
               np.full((2, 3, 8, 8), np.nan, f32), np.full((2, 3, 8, 8), np.inf, f32)):
        bad(_C.clipv_forward, h, pv)
        bad(_C.clipv_encode, h, pv)
    for yb in (np.array([0, 3], i32), np.array([-1, 0], i32), y[:1], y.astype(i64), None):
        bad(_C.clipv_forward_backward, h, px, yb, 0.0)
    for s in (-1.0, 2.0, math.nan):
        bad(_C.clipv_forward_backward, h, px, y, s)
    h0 = _clipv(NL=0)
    bad(_C.clipv_forward, h0, px)
    bad(_C.clipv_forward_backward, h0, px, y, 0.0)
    bad(_C.clipv_set_head, h0, np.ones((3, 5), f32), None)
    bad(_C.clipv_set_head, h0, np.ones((0, 6), f32), None)
    bad(_C.clipv_set_head, h0, np.full((3, 6), np.nan, f32), None)
    bad(_C.clipv_set_head, h0, np.ones((3, 6), f32), np.ones(2, f32))
    bad(_C.clipv_set_head, h, np.ones((3, 6), f32), None)  # trainable head
    _C.clipv_set_head(h0, np.ones((2, 6), f32), None)
    bad(_C.clipv_forward_backward, h0, px, np.array([0, 2], i32), 0.0)
    bad(_C.model_copy, h, h0)
    bad(_C.model_copy, h, _bert())
    bad(_C.clf_forward, h, np.ones((1, 2), i32), None, None)  # a capsule of the wrong kind
    n = _C.model_buffers(h)[0].size
    m, v, seg, dec = _opt_args(h, n)
    hp = [1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 1.0]
    _C.model_adamw(h, m, v, seg, dec, *hp)
    for var in ((m[:-1], v, seg, dec), (m, m, seg, dec), (m, v, np.array([0, n + 3, n], i64), np.ones(2, u8)),
                (m, v, np.array([1, n], i64), dec), (m, v, seg, None)):
        bad(_C.model_adamw, h, *var, *hp)
        bad(_C.clipv_train_step, h, *var, *hp, px, y, 0.0)
    bad(_C.model_adamw, h, m, v, seg, dec, math.nan, *hp[1:])
    bad(_C.model_adamw, h, m, v, seg, dec, math.inf, *hp[1:])
    bad(_C.model_adamw, h, m, v, seg, dec, *hp[:4], math.inf, *hp[5:])
    bad(_C.clipv_train_step, h, m, v, seg, dec, *hp, px, np.array([5, 0], i32), 0.0)
    # text tower
    good = [1, 8, 2, 16, 0, 1e-5, 50, 6, 4, 1]
    for i, vals in enumerate([(0,), (0, 7), (0, 3), (0,), (-1, 9), (0.0, math.nan), (0, -1), (0, -1), (0, -1)]):
        for v_ in vals:
            args = list(good)
            args[i] = v_
            bad(_C.clipt_new, *args)
    t = _C.clipt_new(*good)
    ids = np.array([[3, 4, 1], [5, 1, 0]], i32)
    _C.clipt_encode(t, ids, None)
    for j in junk((2, 3), i32):
        bad(_C.clipt_encode, t, j, None)
    for arr in (np.zeros((0, 3), i32), np.zeros((2, 0), i32), zeros_huge(0, 2**40, dtype=i32),
                np.ones((1, 7), i32), np.full((2, 3), 50, i32), np.full((2, 3), -1, i32)):
        bad(_C.clipt_encode, t, arr, None)
    bad(_C.clipt_encode, t, ids, np.full((2, 3), 2, u8))
    bad(_C.clipt_encode, t, ids, np.ones((2, 2), u8))
    bad(_C.clipt_encode, h, ids, None)
    bad(_C.model_adamw, t, *_opt_args(t, _C.model_buffers(t)[0].size), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 0.0)
    params, grads, masks = _C.model_buffers(t)  # the text tower is forward-only
    assert params.size > 0 and grads is None and masks is None
    bad(_C.clipv_forward, t, np.zeros((1, 3, 8, 8), f32))  # a text handle is not a vision model


# ---- Python entry points (models, optimizer, masks) -----------------------------------------

def _bert_model(NL=3):
    from instantsoup.models.bert import BertConfig, BertModel

    cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=8, num_labels=NL)
    return BertModel(cfg)


def test_bert_model_bad_batches():
    from instantsoup.models.bert import BertConfig, BertModel

    model = _bert_model()
    ids = np.ones((2, 4), np.int64)
    model.forward({"input_ids": ids})
    for batch in (None, [], {"x": ids}, {"input_ids": None}, {"input_ids": ids.astype(float)},
                  {"input_ids": np.full((2, 4), 2**40)}, {"input_ids": np.full((2, 4), -1)},
                  {"input_ids": np.ones(4, np.int64)}, {"input_ids": np.ones((2, 9), np.int64)},
                  {"input_ids": np.ones((0, 4), np.int64)}, {"input_ids": np.ones((2, 0), np.int64)},
                  {"input_ids": np.array([["a"]])}, {"input_ids": ids, "attention_mask": np.full((2, 4), np.nan)},
                  {"input_ids": ids, "attention_mask": np.ones((2, 3))}, {"input_ids": ids, "attention_mask": "x"},
                  {"input_ids": ids, "token_type_ids": np.full((2, 4), 5)},
                  {"input_ids": ids, "token_type_ids": np.ones((4, 2), np.int64)},
                  {"input_ids": np.full((2, 4), 2**63 - 1, np.uint64)}):
        bad(model.forward, batch)
    for y in (None, [0, 3], [0, -1], [0.5, 1.0], [0], [[0, 1]], np.array([2**40, 0]), "ab"):
        bad(model.forward_backward, {"input_ids": ids}, y)
    for s in (-1, 2, math.nan, "x", None):
        bad(model.forward_backward, {"input_ids": ids}, [0, 1], s)
    reg = _bert_model(NL=1)
    bad(reg.forward_backward, {"input_ids": ids}, [0.0, math.nan])
    bad(reg.forward_backward, {"input_ids": ids}, [0.0, math.inf])
    bad(reg.forward_backward, {"input_ids": ids}, ["a", "b"])
    bad(model.load_state_dict, {"nope": np.zeros(3)})
    sd = {k: v.copy() for k, v in model.state_dict().items()}
    k0 = next(iter(sd))
    for val in (np.zeros(3, f32), None, "x", sd[k0].astype(complex), np.full(sd[k0].shape, np.nan),
                np.full(sd[k0].shape, 1e39)):
        bad(model.load_state_dict, {**{k: v + 1 for k, v in sd.items()}, k0: val})
        for k, v in model.state_dict().items():  # a refused state changes nothing
            assert np.array_equal(v, sd[k])
    name = model.prunable_names[0]
    shape = model.masks[name].shape
    for val in (np.full(shape, 2), np.zeros((1,) + shape), np.full(shape, np.nan), None):
        bad(model.set_masks, {name: val})
    bad(model.set_masks, {"nope": np.ones(3)})
    bad(model.copy_from, reg)
    bad(model.copy_from, None)
    for cfg_kw in ({"vocab_size": 0}, {"hidden_size": 7, "num_attention_heads": 2}, {"hidden_dropout_prob": 1.5},
                   {"num_hidden_layers": -1}, {"layer_norm_eps": math.nan}, {"hidden_act": "nope"},
                   {"num_labels": 0}, {"pad_token_id": 99}):
        kw = dict(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=8)
        kw.update(cfg_kw)
        with pytest.raises(ERR):
            BertModel(BertConfig(**kw))
    bad(BertModel, None)


def test_adamw_bad_arguments():
    from instantsoup.optim import AdamW

    model = _bert_model()
    bad(AdamW, None)
    bad(AdamW, object())
    for kw in ({"lr": -1}, {"lr": math.nan}, {"lr": "x"}, {"betas": (1.0, 0.9)}, {"betas": (0.9,)},
               {"betas": (math.nan, 0.9)}, {"eps": -1}, {"weight_decay": math.inf}, {"weight_decay": -0.1},
               {"lr": math.inf}, {"eps": math.inf}):
        bad(AdamW, model, **kw)
    opt = AdamW(model, lr=1e-3)
    ids = np.ones((2, 4), np.int64)
    model.forward_backward({"input_ids": ids}, [0, 1])
    opt.step()
    for kw in ({"lr": -1}, {"lr": math.nan}, {"max_grad_norm": math.nan}, {"lr": "x"}):
        bad(opt.step, **kw)
    bad(opt.train_step, {"input_ids": np.full((2, 4), 99)}, [0, 1])
    bad(opt.train_step, {"input_ids": ids}, [0, 7])
    model._grads[0] = np.nan
    bad(opt.step)
    st = opt.state_dict()
    for k in ("step", "exp_avg", "exp_avg_sq"):
        bad(opt.load_state_dict, {kk: vv for kk, vv in st.items() if kk != k})
    before = (opt.exp_avg.copy(), opt.step_count, opt.lr)
    for k, val in (("lr", math.nan), ("lr", "x"), ("eps", -1.0), ("betas", (0.9,)), ("betas", (2.0, 0.9)),
                   ("weight_decay", math.inf), ("step", -1), ("exp_avg", st["exp_avg"][:-1])):
        bad(opt.load_state_dict, {**st, "exp_avg": st["exp_avg"] + 1, k: val})
        assert (opt.exp_avg == before[0]).all() and opt.step_count == before[1] and opt.lr == before[2]
    model._grads[:] = 0.0
    opt.step(max_grad_norm=math.inf)  # inf: no clipping
    bad(opt.load_state_dict, None)
    bad(opt.load_state_dict, {**st, **{k: "x" for k in st}})


def test_masks_bad_arguments():
    from instantsoup import masks as M

    model = _bert_model()
    params = {k: v for k, v in model.state_dict().items() if k in model.prunable_names}
    for s in (-0.1, 1.5, math.nan, math.inf, "x", None):
        bad(M.magnitude_masks, params, s)
        bad(M.random_masks, params, s, seed=0)
    bad(M.magnitude_masks, params, 0.5, scope="nope")
    bad(M.magnitude_masks, None, 0.5)
    bad(M.magnitude_masks, {"a": np.zeros(3, np.float64) + np.nan}, 0.5)
    bad(M.magnitude_masks, {"a": np.array(["x"])}, 0.5)
    bad(M.random_masks, params, 0.5, seed=-1)
    bad(M.random_masks, params, 0.5, seed="x")
    ms = M.magnitude_masks(params, 0.5)
    bad(M.MaskSet, None)
    bad(M.MaskSet, {"a": np.full(3, 2)})
    bad(M.MaskSet, {"a": np.full(3, np.nan)})
    bad(M.MaskSet, {"a": np.array(["1"])})
    bad(M.merge_masks, [])
    bad(M.merge_masks, [ms], rule="nope")
    bad(M.merge_masks, [ms, {"x": np.ones(3, u8)}])
    bad(M.merge_masks, [ms, ms], sparsity=2.0)
    bad(M.merge_masks, [ms] * 300, rule="vote")
    bad(M.merge_masks, None)
    bad(M.average_weights, [])
    bad(M.average_weights, [params, {k: v[:1] for k, v in params.items()}])
    bad(M.average_weights, [params, params], weights=[math.nan, 1.0])
    bad(M.average_weights, [params, params], weights=[1.0])
    bad(ms.overlap, {"x": np.ones(3, u8)})
    bad(ms.reordered, ["nope"])
    bad(M.masked_count, 2.0, 10)
    bad(M.masked_count, 0.5, -1)
    bad(M.to_torch_amount, math.nan)


def test_error_paths_keep_reference_counts():
    """Failing calls must not leak (or steal) references to their arguments."""
    import gc
    import sys

    out = np.zeros(10, u8)
    xs = [np.ones(4, f32), np.ones(6, f32)]
    masks = [np.ones(10, u8), np.full(10, 9, u8)]
    h = _bert()
    ids = np.full((2, 4), 99, i32)
    y = np.array([0, 1], i32)
    objs = [out, xs, xs[0], xs[1], masks, masks[0], masks[1], h, ids, y]
    gc.collect()
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(50):
        bad(_C.mask_select, out, [4, 6], 5, "abs", xs=[xs[0], None])
        bad(_C.mask_select, out, [4, 7], 5, "abs", xs=xs)
        bad(_T.mask_vote_hist, masks, 10, False)
        bad(_C.mask_vote_select, out, masks, False, [4, 6], 3)
        bad(_C.mask_combine, out, masks, 10, False, "union")
        bad(_C.soup_average, np.zeros(4, f32), xs)
        bad(_C.clf_forward, h, ids, None, None)
        bad(_C.clf_forward_backward, h, np.ones((2, 4), i32), None, None, y[:1], 0.0)
        _C.clf_forward_backward(h, np.ones((2, 4), i32), None, None, y, 0.0)
        _C.model_buffers(h)
        _C.model_tensors(h)
    gc.collect()  # pytest.raises keeps tracebacks (frames -> arguments) in reference cycles
    assert [sys.getrefcount(o) for o in objs] == before


def test_empty_but_valid_calls_do_not_crash():
    """Zero-size inputs are legal where the maths allows them; they must not touch memory."""
    e8, ef = np.zeros(0, u8), np.zeros(0, f32)
    for sizes in ([], [0], [0, 0]):
        _C.mask_select(e8, sizes, 0, "abs", xs=[ef] * len(sizes))
        _C.mask_select(e8, sizes, 0, "random")
        bad(_C.mask_select, e8, sizes, 1, "random")
        _C.mask_vote_select(e8, [e8], False, sizes, 0)
    _C.mask_combine(e8, [e8, e8], 0, False, "union")
    _C.mask_combine(e8, [e8], 0, True, "intersection")
    _C.mask_vote_keep(e8, [e8], 0, False, 1)
    assert _T.mask_vote_hist([e8, e8], 0, False) == [0, 0, 0]
    assert _C.mask_overlap(e8, e8, 0, True) == (0, 0, 0)
    assert _C.mask_count(e8, 0, False) == 0
    _C.mask_pack(e8, e8)
    _C.mask_unpack(e8, e8)
    _C.soup_average(ef, [ef, ef], np.array([0.5, 0.5]))
    bad(_T.sgemm, zeros_huge(2**31, 0), np.zeros((0, 0), f32), zeros_huge(2**31, 0))
    _T.sgemm(np.zeros((0, 0), f32), np.zeros((0, 0), f32), np.zeros((0, 0), f32))


def test_op_encoder_odd_arguments():
    xe = np.ones((2, 3, 8), f32)
    p = np.random.default_rng(0).normal(0, 0.1, 600).astype(f32)  # L=1, C=8, F=16
    _T.op_encoder(p, xe, None, xe, 1, 2, 0, False, False, 1e-5, 0.1, 0.1, True, 0, 0)
    for ph, pa in ((1.0, 0.0), (0.0, 1.0), (-0.5, 0.0), (0.0, math.nan), (2.0, 2.0)):
        bad(_T.op_encoder, p, xe, None, xe, 1, 2, 0, False, False, 1e-5, ph, pa, True, 0, 0)
    for eps in (0.0, -1.0, math.nan, math.inf):
        bad(_T.op_encoder, p, xe, None, xe, 1, 2, 0, False, False, eps, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, p, xe, np.full((2, 3), 7, u8), xe, 1, 2, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, p, xe, None, xe, 1, 16, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, p, xe, None, xe[:1], 1, 2, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, p, xe, None, xe, 2, 2, 0, False, False, 1e-5, 0.0, 0.0, False, 0, 0)
    bad(_T.op_encoder, p, xe, None, xe, 1, 2, 7, False, False, 1e-5, 0.0, 0.0, False, 0, 0)


def test_mask_file_errors(tmp_path):
    from safetensors.numpy import save_file

    from instantsoup.masks import MaskSet

    ms = MaskSet({"a": np.ones(5, u8), "b": np.zeros((2, 3), u8)})
    ms.save(tmp_path / "m.safetensors")
    assert MaskSet.load(tmp_path / "m.safetensors").num_kept == 5
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[:-3])
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 40)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    one = {"a": np.ones(5, u8)}
    save_file(one, str(tmp_path / "badjson.safetensors"), metadata={"instantsoup_json_keys": '["x"]', "x": "{no"})
    save_file(one, str(tmp_path / "badkeys.safetensors"), metadata={"instantsoup_json_keys": "5"})
    save_file({"a": np.full(5, 3, u8)}, str(tmp_path / "badval.safetensors"))
    for name in ("trunc", "garbage", "empty", "badjson", "badkeys", "badval"):
        e = bad(MaskSet.load, tmp_path / f"{name}.safetensors")
        assert isinstance(e, ValueError), (name, e)
    with pytest.raises(FileNotFoundError):
        MaskSet.load(tmp_path / "missing.safetensors")


def _clip_model(num_labels=None):
    from instantsoup.models.clip import CLIPModel
    from instantsoup.models.clip_config import CLIPConfig

    cfg = CLIPConfig.from_dict({
        "model_type": "clip", "projection_dim": 6,
        "vision_config": dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4),
        "text_config": dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=40, max_position_embeddings=6, eos_token_id=1)})
    m = CLIPModel(cfg, num_labels=num_labels)
    rng = np.random.default_rng(0)
    m.flat_parameters()[:] = rng.normal(0, 0.1, m.flat_parameters().size)
    m.text._views["text_projection.weight"][...] = rng.normal(0, 0.1, (6, 8))
    return m


def test_clip_model_wrappers_bad_arguments():
    m = _clip_model()
    px = np.zeros((2, 3, 8, 8), f32)
    m.encode_image(px)
    bad(m.forward, {"pixel_values": px})  # no head yet
    m.set_head(np.ones((3, 6), f32))
    m.forward({"pixel_values": px})
    with pytest.raises(KeyError, match="pixel_values"):
        m.forward({})
    for b in (None, {"pixel_values": None}, {"pixel_values": px[:, :2]}, {"pixel_values": px[:0]},
              {"pixel_values": np.full_like(px, np.nan)}, {"pixel_values": px.astype(complex)},
              {"pixel_values": np.zeros((2, 3, 16, 16), f32)}, {"pixel_values": "x"}):
        bad(m.forward, b)
    for y in (None, [0, 3], [-1, 0], [0.5, 1], [0], "ab"):
        bad(m.forward_backward, {"pixel_values": px}, y)
    bad(m.forward_backward, {"pixel_values": px}, [0, 1], label_smoothing=2.0)
    for w, b in ((np.ones((3, 5), f32), None), (np.ones((0, 6), f32), None), (np.full((3, 6), np.nan), None),
                 (np.ones((3, 6), f32), np.ones(2, f32)), ("x", None)):
        bad(m.set_head, w, b)
    ids = np.array([[3, 4, 1], [5, 1, 0]])
    m.encode_text(ids)
    for bad_ids in (ids.astype(float), ids[0], np.full((2, 3), 40), np.full((2, 3), -1), np.ones((1, 7), int),
                    np.zeros((0, 3), int), np.array([[2**40]])):
        bad(m.encode_text, bad_ids)
    for am in (np.full((2, 3), 0.5), np.full((2, 3), np.nan), np.full((2, 3), -1), np.ones((2, 2)), np.full((2, 3), 2)):
        bad(m.encode_text, ids, am)
    sd = {k: v.copy() for k, v in m.text.state_dict().items()}
    k0 = next(iter(sd))
    for val in (None, np.zeros(3), np.full(sd[k0].shape, np.nan)):
        bad(m.text.load, {**{k: v + 1 for k, v in sd.items()}, k0: val})
        for k, v in m.text.state_dict().items():
            assert np.array_equal(v, sd[k])
    probe = _clip_model(num_labels=3)
    w0 = probe.head()[0].copy()
    for w, b in ((np.ones((3, 6), f32), np.ones(2, f32)), (np.full((3, 6), np.inf, f32), None),
                 (np.ones((3, 6), f32), np.full(3, np.nan, f32)), (np.ones((4, 6), f32), None)):
        bad(probe.set_head, w, b)
        assert np.array_equal(probe.head()[0], w0)  # a refused head changes nothing
