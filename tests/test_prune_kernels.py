"""Pruning kernels against NumPy oracles (no torch): exact selection, random masks, merges,
bit-packing, overlap, soups, MaskSet I/O and error cases. Run by the sanitizer job (marker kernel)."""
import math

import numpy as np
import pytest

import instantsoup as isp
from instantsoup import _C

pytestmark = pytest.mark.kernel


# ----------------------------------------------------------------------------- oracles

def ref_select(keys, cand, n_keep):
    """Keep n_keep of the candidates: mask the smallest keys first, ties -> smaller position first."""
    keys = np.asarray(keys, np.float64)
    idx = np.flatnonzero(cand)
    order = idx[np.argsort(keys[idx], kind="stable")]
    out = cand.astype(np.uint8)
    out[order[: len(idx) - n_keep]] = 0
    return out


def flat(params):
    return np.concatenate([np.asarray(v).ravel() for v in params.values()])


def make_params(rng, shapes, kind="normal"):
    out = {}
    for i, s in enumerate(shapes):
        if kind == "normal":
            a = rng.standard_normal(s)
        elif kind == "ties":
            a = rng.integers(-3, 4, size=s)
        else:
            a = np.zeros(s)
        out[f"layer.{i}.weight"] = a.astype(np.float32)
    return out


SHAPE_MIXES = [
    [(7, 5)],
    [(33, 17), (5,), (0, 4), (64, 3)],
    [(130, 260), (1,), (40, 41, 3)],  # > one 16384-element block
]


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    old = isp.get_num_threads()
    isp.set_num_threads(request.param)
    yield request.param
    isp.set_num_threads(old)


# ----------------------------------------------------------------------------- selection

@pytest.mark.parametrize("shapes", SHAPE_MIXES)
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_global_magnitude_matches_oracle(rng, threads, shapes, kind):
    p = make_params(rng, shapes, kind)
    w = flat(p)
    P = w.size
    for s in (0.0, 0.1, 0.5, 0.731, 0.99):
        m = isp.magnitude_masks(p, s)
        assert m.num_masked == round(s * P)
        np.testing.assert_array_equal(m.flat, ref_select(np.abs(w), np.ones(P, bool), P - round(s * P)))
        assert list(m) == list(p) and all(m[n].shape == p[n].shape for n in p)
        assert all(m[n].dtype == np.uint8 for n in m)


@pytest.mark.parametrize("shapes", SHAPE_MIXES)
def test_monotone_rounds_match_oracle(rng, shapes):
    p = make_params(rng, shapes, "ties")
    w = flat(p)
    P = w.size
    cur = None
    for s in (0.2, 0.2, 0.36, 0.488, 0.9):
        m = isp.magnitude_masks(p, s, current=cur)
        cand = np.ones(P, bool) if cur is None else cur.flat.astype(bool)
        np.testing.assert_array_equal(m.flat, ref_select(np.abs(w), cand, P - round(s * P)))
        if cur is not None:
            assert m.is_subset_of(cur)
        cur = m


def test_layer_scope_matches_oracle(rng):
    p = make_params(rng, [(30, 20), (7,), (50, 51)], "ties")
    cur = None
    for s in (0.25, 0.5, 0.75):
        m = isp.magnitude_masks(p, s, scope="layer", current=cur)
        for n, a in p.items():
            cand = np.ones(a.size, bool) if cur is None else cur[n].ravel().astype(bool)
            exp = ref_select(np.abs(a.ravel()), cand, a.size - round(s * a.size))
            np.testing.assert_array_equal(m[n].ravel(), exp)
            assert a.size - m.counts[n] == round(s * a.size)
        cur = m


def test_exact_counts_and_rounding(rng):
    for P in (1, 2, 3, 10, 101, 1000, 16385):
        p = {"w": rng.standard_normal(P).astype(np.float32)}
        for s in np.concatenate([[0.0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.5, 0.55], np.linspace(0, 0.999, 17)]):
            m = isp.magnitude_masks(p, float(s))
            assert m.num_masked == round(float(s) * P) == isp.masked_count(float(s), P)
    # half-to-even rounding, like Python and torch
    assert isp.masked_count(0.5, 5) == 2 and isp.masked_count(0.5, 7) == 4
    m = isp.magnitude_masks({"w": np.arange(1, 6, dtype=np.float32)}, 0.5)
    np.testing.assert_array_equal(m["w"], [0, 0, 1, 1, 1])


def test_scores_instead_of_magnitude(rng):
    p = make_params(rng, [(20, 30), (11,)])
    sc = {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in p.items()}
    sc["layer.1.weight"][:5] = -0.0  # -0 and +0 are equal keys
    sc["layer.1.weight"][5:] = 0.0
    m = isp.magnitude_masks(p, 0.6, scores=sc)
    P = flat(p).size
    np.testing.assert_array_equal(m.flat, ref_select(flat(sc), np.ones(P, bool), P - round(0.6 * P)))
    assert m.metadata["scores"] == "external"


@pytest.mark.parametrize("gather", [True, False])
def test_in_place_select_on_current(rng, gather):
    w = np.round(rng.standard_normal(50000), 2).astype(np.float32)  # with ties
    cur0 = (rng.random(50000) < 0.6).astype(np.uint8)
    exp = ref_select(np.abs(w), cur0.astype(bool), 20000)
    cur = cur0.copy()
    _C.mask_select(cur, [50000], 20000, "abs", xs=[w], cur=cur, gather=gather)
    np.testing.assert_array_equal(cur, exp)


def test_monotone_errors_and_opt_out(rng):
    p = make_params(rng, [(20, 20)])
    m = isp.magnitude_masks(p, 0.5)
    with pytest.raises(ValueError, match="never unmasks"):
        isp.magnitude_masks(p, 0.3, current=m)
    with pytest.raises(ValueError, match="never unmasks"):
        isp.magnitude_masks(p, 0.3, current=m, scope="layer")
    fresh = isp.magnitude_masks(p, 0.3, current=m, monotone=False)
    np.testing.assert_array_equal(fresh.flat, isp.magnitude_masks(p, 0.3).flat)


def test_duck_typed_model(rng):
    class Tiny:
        def __init__(self):
            self._p = {"emb": rng.standard_normal((5, 4)).astype(np.float32),
                       "l.0.q.weight": rng.standard_normal((8, 8)).astype(np.float32),
                       "l.0.fc.weight": rng.standard_normal((16, 8)).astype(np.float32)}
            self.masks = {"l.0.q.weight": np.ones((8, 8), np.uint8),
                          "l.0.fc.weight": np.ones((16, 8), np.uint8)}

        def state_dict(self):
            return self._p

    model = Tiny()
    m = isp.magnitude_masks(model, 0.5)
    assert m.names == ["l.0.q.weight", "l.0.fc.weight"] and m.num_masked == 96
    model.masks = {k: np.array(v) for k, v in m.items()}  # the model's masks are `current`
    with pytest.raises(ValueError, match="never unmasks"):
        isp.magnitude_masks(model, 0.25)
    m2 = isp.magnitude_masks(model, 0.75)
    assert m2.is_subset_of(m) and m2.num_masked == 144
    r = isp.random_masks(model, 0.75, seed=3)
    assert r.is_subset_of(m) and r.num_masked == 144


def test_selection_errors(rng):
    p = make_params(rng, [(4, 5), (3,)])
    for bad in (-0.1, 1.0, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            isp.magnitude_masks(p, bad)
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            isp.random_masks(p, bad, seed=0)
    with pytest.raises(TypeError):
        isp.magnitude_masks(p, True)
    for v in (np.nan, np.inf, -np.inf):
        q = {k: a.copy() for k, a in p.items()}
        q["layer.1.weight"][2] = v
        with pytest.raises(ValueError, match=r"'layer.1.weight' element 2.*NaN or inf"):
            isp.magnitude_masks(q, 0.5)
        sc = {k: np.ones_like(a) for k, a in p.items()}
        sc["layer.0.weight"][1, 1] = v
        with pytest.raises(ValueError, match=r"'layer.0.weight' element 6.*NaN or inf"):
            isp.magnitude_masks(p, 0.5, scores=sc)
    with pytest.raises(TypeError, match="float32"):
        isp.magnitude_masks({k: a.astype(np.float64) for k, a in p.items()}, 0.5)
    bad_cur = {k: np.ones(a.shape, np.uint8) for k, a in p.items()}
    bad_cur["layer.0.weight"][0, 0] = 2
    with pytest.raises(ValueError, match="0 or 1"):
        isp.magnitude_masks(p, 0.5, current=bad_cur)
    with pytest.raises(ValueError, match="0 or 1"):
        isp.magnitude_masks(p, 0.5, current={k: np.full(a.shape, 0.5) for k, a in p.items()})
    with pytest.raises(ValueError, match="shape"):
        isp.magnitude_masks(p, 0.5, current={k: np.ones((2,), np.uint8) for k in p})
    with pytest.raises(ValueError, match="missing"):
        isp.magnitude_masks(p, 0.5, current={"layer.0.weight": np.ones((4, 5), np.uint8)})
    with pytest.raises(ValueError, match="unknown"):
        isp.magnitude_masks(p, 0.5, current={**{k: np.ones(a.shape, np.uint8) for k, a in p.items()},
                                              "x": np.ones(1, np.uint8)})
    with pytest.raises(ValueError, match="shape"):
        isp.magnitude_masks(p, 0.5, scores={k: np.ones(3, np.float32) for k in p})
    with pytest.raises(ValueError, match="scope"):
        isp.magnitude_masks(p, 0.5, scope="row")
    with pytest.raises(ValueError, match="no prunable"):
        isp.magnitude_masks({}, 0.5)


def test_kernel_argument_checks():
    out = np.empty(10, np.uint8)
    with pytest.raises(ValueError, match="expected 10 elements"):
        _C.mask_select(out, [10], 5, "abs", xs=[np.ones(9, np.float32)])
    with pytest.raises(TypeError, match="float32"):
        _C.mask_select(out, [10], 5, "abs", xs=[np.ones(10)])
    with pytest.raises(ValueError, match="cannot keep"):
        _C.mask_select(out, [10], 11, "random")
    with pytest.raises(ValueError, match="kind"):
        _C.mask_select(out, [10], 5, "median")
    with pytest.raises(ValueError, match="shape"):
        _C.mask_select(np.empty(9, np.uint8), [10], 5, "random")


# ----------------------------------------------------------------------------- random masks

def test_random_exact_deterministic_thread_independent(rng):
    p = make_params(rng, [(100, 300), (5,), (77, 13)])
    P = flat(p).size
    res = {}
    for nt in (1, 2, 3):
        old = isp.get_num_threads()
        isp.set_num_threads(nt)
        try:
            res[nt] = (isp.random_masks(p, 0.7, seed=42), isp.magnitude_masks(p, 0.7),
                       isp.random_masks(p, 0.4, seed=42, scope="layer"))
        finally:
            isp.set_num_threads(old)
    for nt in (2, 3):
        for a, b in zip(res[1], res[nt]):
            assert a == b
    r = res[1][0]
    assert r.num_masked == round(0.7 * P)
    assert isp.random_masks(p, 0.7, seed=42) == r
    other = isp.random_masks(p, 0.7, seed=43)
    assert other != r and other.num_masked == r.num_masked
    # roughly uniform: each tensor near 70% masked, overlap of two seeds near chance
    for n, sp in r.layer_sparsity().items():
        if p[n].size > 1000:
            assert abs(sp - 0.7) < 0.02
    ov = r.overlap(other)
    assert abs(ov["kept_both"] / P - 0.09) < 0.01
    lay = res[1][2]
    for n, a in p.items():
        assert a.size - lay.counts[n] == round(0.4 * a.size)
    # per-layer streams differ between equally sized tensors
    q = {"a": np.zeros((50, 50), np.float32), "b": np.zeros((50, 50), np.float32)}
    lq = isp.random_masks(q, 0.5, seed=1, scope="layer")
    assert not np.array_equal(lq["a"], lq["b"])


def test_random_monotone(rng):
    p = make_params(rng, [(60, 70)])
    cur = isp.random_masks(p, 0.3, seed=1)
    r = isp.random_masks(p, 0.6, seed=2, current=cur)
    assert r.is_subset_of(cur) and r.num_masked == round(0.6 * 4200)
    with pytest.raises(ValueError, match="never unmasks"):
        isp.random_masks(p, 0.2, seed=2, current=cur)
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            isp.random_masks(p, 0.5, seed=bad)


# ----------------------------------------------------------------------------- merges

def ref_merge(masks, rule, n_keep=None, keys=None):
    A = np.stack([m.flat for m in masks]).astype(np.int64)
    K, P = A.shape
    votes = A.sum(0)
    if rule == "union":
        base = votes >= 1
    elif rule == "intersection":
        base = votes == K
    elif n_keep is None:
        base = 2 * votes > K
    if rule != "vote":
        if n_keep is None:
            return base.astype(np.uint8)
        return ref_select(keys, base, n_keep)
    if n_keep is None:
        return base.astype(np.uint8)
    kk = np.zeros(P) if keys is None else np.asarray(keys, np.float64)
    order = np.lexsort((np.arange(P), kk, votes))  # ascending votes, then key, then position
    out = np.ones(P, np.uint8)
    out[order[: P - n_keep]] = 0
    assert not (out.astype(bool) & (votes == 0)).any()
    return out


@pytest.mark.parametrize("K", range(1, 17))
@pytest.mark.parametrize("packed", [False, True])
def test_merges_match_oracle(rng, K, packed):
    shapes = [(37, 29), (5,), (20, 100)]
    p = make_params(rng, shapes)
    names = list(p)
    P = flat(p).size
    masks = [isp.random_masks(p, float(rng.uniform(0.3, 0.8)), seed=int(s)) for s in rng.integers(0, 10**6, K)]
    ins = [m.pack() for m in masks] if packed else masks
    w = flat(p)
    sc = {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in p.items()}
    sc["layer.0.weight"][:3] = 0.25  # some tied scores
    for rule in ("union", "intersection", "vote"):
        got = isp.merge_masks(ins, rule)
        np.testing.assert_array_equal(got.flat, ref_merge(masks, rule), err_msg=rule)
        assert got.names == names
    n_union = int(ref_merge(masks, "union").sum())
    n_inter = int(ref_merge(masks, "intersection").sum())
    # one-shot adjustment by |w| (scores=model-like) and by external scores
    s_u = 1 - 0.8 * n_union / P
    n_keep = P - round(s_u * P)
    got = isp.merge_masks(ins, "union", sparsity=s_u, scores=_Model(p))
    np.testing.assert_array_equal(got.flat, ref_merge(masks, "union", n_keep, np.abs(w)))
    assert got.num_kept == n_keep
    if n_inter > 2:
        s_i = 1 - 0.5 * n_inter / P
        got = isp.merge_masks(ins, "intersection", sparsity=s_i, scores=sc)
        np.testing.assert_array_equal(got.flat, ref_merge(masks, "intersection", P - round(s_i * P), flat(sc)))
    # vote with an exact count, ties by scores, and by position only
    for frac in (0.0, 0.3, 0.9, 1.0):
        n_keep = int(frac * n_union)
        s_v = 1 - n_keep / P
        if s_v >= 1.0:
            continue
        n_keep = P - round(s_v * P)
        got = isp.merge_masks(ins, "vote", sparsity=s_v, scores=sc)
        np.testing.assert_array_equal(got.flat, ref_merge(masks, "vote", n_keep, flat(sc)))
        got = isp.merge_masks(ins, "vote", sparsity=s_v)
        np.testing.assert_array_equal(got.flat, ref_merge(masks, "vote", n_keep, None))
    # packed output
    pk = isp.merge_masks(ins, "union", packed=True)
    assert isinstance(pk, isp.PackedMaskSet)
    np.testing.assert_array_equal(pk.unpack().flat, ref_merge(masks, "union"))


class _Model:
    """Duck-typed engine model: state_dict() and masks."""

    def __init__(self, params, masks=None):
        self._p = params
        self.masks = masks if masks is not None else {n: np.ones(a.shape, np.uint8) for n, a in params.items()}

    def state_dict(self):
        return self._p


def test_merge_thread_independent(rng):
    p = make_params(rng, [(300, 300), (7,)])
    masks = [isp.random_masks(p, 0.5, seed=k) for k in range(5)]
    sc = {n: np.round(rng.standard_normal(a.shape), 1).astype(np.float32) for n, a in p.items()}
    outs = []
    for nt in (1, 2, 3):
        old = isp.get_num_threads()
        isp.set_num_threads(nt)
        try:
            outs.append([isp.merge_masks(masks, "vote", sparsity=0.6, scores=sc),
                         isp.merge_masks(masks, "union", sparsity=0.9, scores=sc)])
        finally:
            isp.set_num_threads(old)
    for o in outs[1:]:
        assert o[0] == outs[0][0] and o[1] == outs[0][1]


def test_merge_errors(rng):
    p = make_params(rng, [(10, 10), (4,)])
    a = isp.magnitude_masks(p, 0.5)
    b = isp.random_masks(p, 0.5, seed=1)
    with pytest.raises(ValueError, match="empty"):
        isp.merge_masks([], "union")
    with pytest.raises(TypeError, match="list of masks"):
        isp.merge_masks(a, "union")
    with pytest.raises(ValueError, match="rule"):
        isp.merge_masks([a, b], "xor")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        isp.merge_masks([a, b], "union", sparsity=1.0)
    with pytest.raises(ValueError, match="needs scores"):
        isp.merge_masks([a, b], "union", sparsity=0.7)
    with pytest.raises(ValueError, match="never unmasks|fewer"):
        isp.merge_masks([a, b], "intersection", sparsity=0.1, scores=_Model(p))
    with pytest.raises(ValueError, match="at least one mask"):
        isp.merge_masks([a, a], "vote", sparsity=0.1)
    bad = {k: np.array(v) for k, v in b.items()}
    bad["layer.1.weight"][0] = 3
    with pytest.raises(ValueError, match="0 or 1"):
        isp.merge_masks([a, bad], "union")
    with pytest.raises(ValueError, match="shape"):
        isp.merge_masks([a, {"layer.0.weight": np.ones((10, 9), np.uint8), "layer.1.weight": np.ones(4, np.uint8)}])
    with pytest.raises(ValueError, match="missing"):
        isp.merge_masks([a, {"layer.0.weight": np.ones((10, 10), np.uint8)}])
    sc = {k: np.ones(v.shape, np.float32) for k, v in p.items()}
    sc["layer.1.weight"][1] = np.nan
    with pytest.raises(ValueError, match="'layer.1.weight' element 1.*NaN"):
        isp.merge_masks([a, b], "union", sparsity=0.7, scores=sc)
    # monotone: an input keeping a weight `current` pruned
    cur = isp.magnitude_masks(p, 0.3)
    c2 = isp.magnitude_masks(p, 0.6, current=cur)
    isp.merge_masks([c2, isp.random_masks(p, 0.6, seed=3, current=cur)], "union", current=cur)
    with pytest.raises(ValueError, match=r"masks\[1\] keeps .* already pruned"):
        isp.merge_masks([c2, isp.random_masks(p, 0.6, seed=3)], "union", current=cur)


def test_merge_reorders_names(rng):
    p = make_params(rng, [(6, 7), (9,)])
    a = isp.random_masks(p, 0.5, seed=1)
    b = isp.random_masks(p, 0.5, seed=2)
    b_rev = {n: b[n] for n in reversed(b.names)}
    got = isp.merge_masks([a, b_rev], "union")
    assert got.names == a.names
    np.testing.assert_array_equal(got.flat, a.flat | b.flat)


# ----------------------------------------------------------------------------- packing, overlap

@pytest.mark.parametrize("P", [0, 1, 7, 8, 9, 1000, 65537])
def test_pack_unpack_matches_numpy(rng, P):
    m = (rng.random(P) < 0.4).astype(np.uint8)
    bits = np.empty((P + 7) // 8, np.uint8)
    _C.mask_pack(bits, m)
    np.testing.assert_array_equal(bits, np.packbits(m, bitorder="little"))
    back = np.empty(P, np.uint8)
    _C.mask_unpack(back, bits)
    np.testing.assert_array_equal(back, m)
    assert _C.mask_count(bits, P, True) == int(m.sum())
    if P:
        m[P // 2] = 2
        with pytest.raises(ValueError, match="0 or 1"):
            _C.mask_pack(bits, m)


def test_packed_maskset_and_memory(rng):
    p = make_params(rng, [(33, 31), (3,)])
    m = isp.random_masks(p, 0.5, seed=0)
    pk = m.pack()
    assert pk.nbytes == (m.numel + 7) // 8
    assert pk.unpack() == m and pk.sparsity == m.sparsity
    np.testing.assert_array_equal(pk.bits, np.packbits(m.flat, bitorder="little"))


def test_overlap_measures(rng):
    p = make_params(rng, [(40, 25)])
    a = isp.random_masks(p, 0.3, seed=1)
    b = isp.random_masks(p, 0.6, seed=2)
    x, y = a.flat.astype(bool), b.flat.astype(bool)
    ov = a.overlap(b)
    assert ov["jaccard"] == pytest.approx((x & y).sum() / (x | y).sum(), rel=1e-12)
    assert ov["hamming"] == int((x != y).sum())
    assert ov["hamming_fraction"] == pytest.approx((x != y).mean(), rel=1e-12)
    cos = float(x.astype(float) @ y.astype(float) / (np.linalg.norm(x.astype(float)) * np.linalg.norm(y.astype(float))))
    assert ov["cosine"] == pytest.approx(cos, rel=1e-12)
    assert a.pack().overlap(b.pack()) == ov
    assert a.overlap(a)["jaccard"] == 1.0 and a.overlap(a)["hamming"] == 0


# ----------------------------------------------------------------------------- soups

@pytest.mark.parametrize("K", [1, 2, 5, 16])
def test_average_weights_matches_numpy(rng, K):
    sds = [{"a": rng.standard_normal((17, 300)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32),
            "ids": np.arange(4)} for _ in range(K)]
    for sd in sds:
        sd["ids"] = np.arange(4)
    got = isp.average_weights(sds)
    for n in ("a", "b"):
        acc = np.zeros(sds[0][n].shape, np.float64)
        for sd in sds:
            acc += sd[n].astype(np.float64)
        np.testing.assert_array_equal(got[n], (acc / K).astype(np.float32))
        assert got[n].dtype == np.float32
    np.testing.assert_array_equal(got["ids"], np.arange(4))
    w = rng.uniform(0.1, 2.0, K)
    got = isp.average_weights(sds, weights=w)
    wn = w / w.sum()
    acc = wn[0] * sds[0]["a"].astype(np.float64)
    for k in range(1, K):
        acc += wn[k] * sds[k]["a"].astype(np.float64)
    np.testing.assert_array_equal(got["a"], acc.astype(np.float32))
    raw = isp.average_weights(sds, weights=-w, normalize=False)
    np.testing.assert_allclose(raw["b"], sum(-w[k] * sds[k]["b"].astype(np.float64) for k in range(K)), rtol=1e-6)


def test_average_weights_errors(rng):
    a = {"x": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match="empty"):
        isp.average_weights([])
    with pytest.raises(ValueError, match="missing|unknown"):
        isp.average_weights([a, {"y": np.ones(3, np.float32)}])
    with pytest.raises(ValueError, match="shape"):
        isp.average_weights([a, {"x": np.ones(4, np.float32)}])
    with pytest.raises(ValueError, match="expected 2 weights"):
        isp.average_weights([a, a], weights=[1.0])
    with pytest.raises(ValueError, match="finite"):
        isp.average_weights([a, a], weights=[1.0, np.nan])
    with pytest.raises(ValueError, match="non-negative"):
        isp.average_weights([a, a], weights=[1.0, -1.0])
    with pytest.raises(TypeError, match="float32"):
        isp.average_weights([{"x": np.ones(3)}, {"x": np.zeros(3)}])


# ----------------------------------------------------------------------------- MaskSet

def test_maskset_validation_and_facts(rng):
    m = isp.MaskSet({"a": np.array([[1, 0], [1, 1]], bool), "b": np.array([0.0, 1.0, 0.0])})
    assert m.names == ["a", "b"] and m["a"].dtype == np.uint8 and m.numel == 7
    assert m.num_kept == 4 and m.sparsity == pytest.approx(3 / 7) and m.density == pytest.approx(4 / 7)
    assert m.counts == {"a": 3, "b": 1}
    assert m.layer_sparsity() == pytest.approx({"a": 0.25, "b": 2 / 3})
    with pytest.raises(ValueError):
        m["a"][0, 0] = 0  # read-only views
    with pytest.raises(ValueError, match="'b'.*0 or 1"):
        isp.MaskSet({"b": np.array([0, 2], np.uint8)})
    with pytest.raises(ValueError, match="'b'.*0 or 1"):
        isp.MaskSet({"b": np.array([0.0, 0.5])})
    with pytest.raises(TypeError):
        isp.MaskSet([1, 0])
    groups = isp.MaskSet({"bert.encoder.layer.0.q.weight": np.ones(4, np.uint8),
                          "bert.encoder.layer.0.k.weight": np.zeros(4, np.uint8),
                          "bert.encoder.layer.1.q.weight": np.zeros(2, np.uint8)}).layer_sparsity(by="layer")
    assert groups == {"bert.encoder.layer.0": 0.5, "bert.encoder.layer.1": 1.0}
    params = {"a": np.ones((2, 2), np.float32), "b": np.ones(3, np.float32)}
    m.apply(params)
    np.testing.assert_array_equal(params["a"], [[1, 0], [1, 1]])


def test_maskset_save_load_roundtrip(rng, tmp_path):
    from safetensors.numpy import load_file
    from safetensors import safe_open

    p = make_params(rng, [(12, 13), (7,)])
    m = isp.magnitude_masks(p, 0.4)
    path = tmp_path / "masks.safetensors"
    m.save(path, base_model="bert-base-uncased", seeds=[1, 2, 3])
    raw = load_file(str(path))  # the safetensors package alone
    assert set(raw) == set(p)
    for n in p:
        assert raw[n].dtype == np.uint8
        np.testing.assert_array_equal(raw[n], m[n])
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    for key in ("method", "target_sparsity", "achieved_sparsity", "base_model", "seeds", "instantsoup_version"):
        assert key in meta, key
    back = isp.MaskSet.load(path)
    assert back == m and back.names == m.names
    assert back.metadata["method"] == "magnitude" and back.metadata["seeds"] == [1, 2, 3]
    assert back.metadata["target_sparsity"] == 0.4
    assert back.metadata["achieved_sparsity"] == pytest.approx(m.sparsity)
    assert back.metadata["base_model"] == "bert-base-uncased"


def test_sparsity_conversions():
    assert isp.to_torch_amount(0.5) == 0.5
    assert isp.to_torch_amount(0.6, 0.2) == pytest.approx(0.5)
    assert isp.from_torch_amount(0.5, 0.2) == pytest.approx(0.6)
    s = 0.0
    for _ in range(10):
        s = isp.from_torch_amount(0.2, s)
    assert s == pytest.approx(1 - 0.8 ** 10)
    with pytest.raises(ValueError, match="unmask"):
        isp.to_torch_amount(0.1, 0.5)
    assert math.isclose(isp.to_torch_amount(isp.from_torch_amount(0.3, 0.4), 0.4), 0.3)


def test_torch_amount_with_counts():
    P = 1000
    assert isp.to_torch_amount(0.2, 0.2, numel=P) == 0.0
    assert isp.to_torch_amount(0.5, 0.2, numel=P) == pytest.approx(300 / 800)
    with pytest.raises(ValueError, match="unmask"):
        isp.to_torch_amount(0.1, 0.2, numel=P)


def test_merge_limits_and_single_mask(rng):
    p = make_params(rng, [(4, 4)])
    a = isp.random_masks(p, 0.5, seed=1)
    with pytest.raises(ValueError, match="at most 255"):
        isp.merge_masks([a] * 256, "union")
    for rule in ("union", "intersection", "vote"):
        assert isp.merge_masks([a], rule) == a
    # packed and byte masks mixed: merged in packed form
    b = isp.random_masks(p, 0.5, seed=2)
    np.testing.assert_array_equal(isp.merge_masks([a.pack(), b], "union").flat, a.flat | b.flat)


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_both_threshold_paths_agree(rng, threads, kind):
    # gather=True sorts the deciding histogram bin; gather=False resolves it with a second
    # histogram pass and a tie fix-up; both must equal the oracle
    p = make_params(rng, [(130, 260), (3,), (200, 99)], kind)
    xs = list(p.values())
    sizes = [a.size for a in xs]
    w = flat(p)
    P = w.size
    cur = (rng.random(P) < 0.8).astype(np.uint8)
    for n_keep in (1, 1000, P // 3, int(cur.sum()) - 1):
        exp = ref_select(np.abs(w), cur.astype(bool), n_keep)
        for gather in (True, False):
            out = np.empty(P, np.uint8)
            _C.mask_select(out, sizes, n_keep, "abs", xs=xs, cur=cur, gather=gather)
            np.testing.assert_array_equal(out, exp, err_msg=f"gather={gather} n_keep={n_keep}")
    outs = []
    for gather in (True, False):
        out = np.empty(P, np.uint8)
        _C.mask_select(out, sizes, P // 2, "random", seed=5, gather=gather)
        assert out.sum() == P // 2
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_maskset_pickle_and_copy(rng):
    import copy
    import pickle

    m = isp.magnitude_masks(make_params(rng, [(5, 6), (4,)]), 0.5)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), m.copy()):
        assert other == m and other.metadata == m.metadata and other.names == m.names
        assert not other["layer.0.weight"].flags.writeable


def test_maskset_ones(rng):
    p = make_params(rng, [(3, 4), (5,)])
    d = isp.MaskSet.ones(p)
    assert d.sparsity == 0.0 and d.names == list(p) and d.shapes == {n: a.shape for n, a in p.items()}
    assert isp.magnitude_masks(p, 0.5, current=d) == isp.magnitude_masks(p, 0.5)
