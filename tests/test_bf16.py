"""Mixed precision kernels: every bf16 GEMM path against a float64 NumPy product of the bf16-rounded
inputs, against the fp32 product within bf16 error, and against each other; path selection.

Every path this CPU has is tested; the others are skipped with the reason. The kernel tests
(marker ``kernel``) use NumPy only, so the sanitizer job runs them. Whole models: test_bf16_models.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import instantsoup
from conftest import package_parent
from instantsoup import _C_test as _T  # test-only bindings of single kernels
from instantsoup.precision import ISAS, available_isas

HAVE = available_isas()


def isa_param(name):
    why = f"this CPU has no {name} path (available: {', '.join(HAVE)})"
    return pytest.param(name, marks=pytest.mark.skipif(name not in HAVE, reason=why), id=name)


ALL_ISAS = [isa_param(n) for n in ISAS]


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
    _T.sgemm(a, one, c, bf16=isa)
    want = bf16_numpy(vals)
    if isa in ("avx512bf16", "amx"):  # these instructions flush denormal inputs to zero
        want[np.abs(vals) < 2.0**-126] = 0.0
    np.testing.assert_array_equal(c[:, 0], want)
    # the same values through every packing of each operand: A transposed, B plain and transposed
    c = np.zeros((a.shape[0], 1), np.float32)
    _T.sgemm(a.T.copy(), one, c, trans_a=True, bf16=isa)
    np.testing.assert_array_equal(c[:, 0], want)
    for tb in (False, True):
        c = np.zeros((1, a.shape[0]), np.float32)
        _T.sgemm(one, a.copy() if tb else a.T.copy(), c, trans_b=tb, bf16=isa)
        np.testing.assert_array_equal(c[0], want)
    # NaN stays NaN
    c2 = np.zeros((1, 1), np.float32)
    _T.sgemm(np.full((1, 1), np.nan, np.float32), one, c2, bf16=isa)
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
            _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), alpha=alpha, beta=beta, bf16=isa)
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
    _T.sgemm(a, b, c, trans_b=True, bf16=isa)
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
    _T.sgemm(a, b, c32)
    _T.sgemm(a, b, c16, bf16=isa)
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
        _T.sgemm(a, b, c, trans_b=True, bf16=isa)
        outs[isa] = c
    ref = outs["fp32"]
    mag = np.abs(bf16_numpy(a)) @ np.abs(bf16_numpy(b)).T
    for isa, c in outs.items():
        assert np.all(np.abs(c - ref) <= 2 * 82 * 2.0**-24 * mag), isa


@pytest.mark.kernel
def test_unknown_or_unavailable_path_is_an_error():
    with pytest.raises(ValueError, match="unknown ISA path"):
        _T.sgemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), bf16="avx9")
    with pytest.raises(ValueError, match="unknown ISA path"):
        instantsoup.precision.set_isa("sse")
    missing = [n for n in ISAS if n not in HAVE]
    if not missing:
        pytest.skip("this CPU has every path")
    with pytest.raises(ValueError, match="not available on this CPU"):
        instantsoup.precision.set_isa(missing[0])
    with pytest.raises(ValueError, match="not available on this CPU"):
        _T.sgemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32),
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
                             cwd=package_parent())
        assert out.returncode == 0, out.stderr
        if name in HAVE:
            assert out.stdout.strip() == name
        else:
            assert out.stdout.startswith("ERR INSTANTSOUP_ISA=" + name) and "not available" in out.stdout


@pytest.mark.kernel
@pytest.mark.parametrize("isa", ALL_ISAS)
def test_instruction_peak_probe(isa):
    """benchmarks/matrix_peak.py's probe: each path's multiply-add loop runs (AMX: the tile state is
    granted) and counts its work; the fp32 path has no instruction of its own."""
    if isa == "fp32":
        with pytest.raises(ValueError, match="no instruction of its own"):
            _T.bf16_peak(isa, 10)
        return
    per_iter = {"amx": 4 * 16 * 16 * 32 * 2, "avx512bf16": 16 * 16 * 2 * 2, "avx2bf16": 12 * 8 * 2}[isa]
    flops, seconds = _T.bf16_peak(isa, 1000)
    assert flops == 1000 * per_iter and seconds > 0
    with pytest.raises(ValueError, match="iters"):
        _T.bf16_peak(isa, 0)
