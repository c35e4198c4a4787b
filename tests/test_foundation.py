"""Foundation: build facts, threads and the row-major sgemm wrapper against NumPy."""
import subprocess
import sys

import numpy as np
import pytest

import instantsoup
from instantsoup import _C_test as _T  # test-only bindings of single kernels

pytestmark = pytest.mark.kernel


def test_build_info_fields():
    info = instantsoup.build_info()
    for key in ("blas", "blas_version", "blas_corename", "num_threads", "blas_num_threads",
                "compiler", "cflags", "instantsoup_version", "openmp"):
        assert key in info, key
    assert info["instantsoup_version"] == instantsoup.__version__
    assert info["openmp"] > 0


def test_threads_one_setting():
    old = instantsoup.get_num_threads()
    try:
        instantsoup.set_num_threads(1)
        assert instantsoup.get_num_threads() == 1
        assert instantsoup.build_info()["blas_num_threads"] == 1
        instantsoup.set_num_threads(2)
        assert instantsoup.get_num_threads() == 2
        assert instantsoup.build_info()["blas_num_threads"] == 2
    finally:
        instantsoup.set_num_threads(old)
    with pytest.raises(ValueError, match="1 <= n"):
        instantsoup.set_num_threads(0)
    with pytest.raises(TypeError):
        instantsoup.set_num_threads(1.5)


def test_cli_info_runs(tmp_path):
    from conftest import subprocess_env

    out = subprocess.run([sys.executable, "-m", "instantsoup", "info"], capture_output=True,
                         text=True, cwd=tmp_path, env=subprocess_env())
    assert out.returncode == 0, out.stderr
    assert "blas_corename" in out.stdout


def _ref(a, b, c, ta, tb, alpha, beta):
    A = a.T if ta else a
    B = b.T if tb else b
    return alpha * (A.astype(np.float64) @ B.astype(np.float64)) + beta * c.astype(np.float64)


SHAPES = [(1, 1, 1), (7, 13, 5), (5, 7, 13), (0, 3, 4), (3, 0, 4), (3, 4, 0), (64, 33, 17),
          (128, 96, 257)]


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)])
def test_sgemm_matches_numpy(rng, m, n, k, ta, tb, alpha, beta):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    want = _ref(a, b, c, ta, tb, alpha, beta)
    _T.sgemm(a, b, c, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5 * max(1, k))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_sgemm_strided_leading_dims(rng, ta, tb):
    # column slices of wider matrices: rows are contiguous, row stride > row length
    m, n, k = 6, 9, 11
    abig = rng.standard_normal((k + 3, m + 5) if ta else (m + 2, k + 7)).astype(np.float32)
    bbig = rng.standard_normal((n + 1, k + 4) if tb else (k + 2, n + 6)).astype(np.float32)
    cbig = rng.standard_normal((m + 1, n + 8)).astype(np.float32)
    a = abig[1:1 + k, 2:2 + m] if ta else abig[1:1 + m, 3:3 + k]
    b = bbig[:n, 1:1 + k] if tb else bbig[2:2 + k, 4:4 + n]
    c = cbig[1:, 3:3 + n]
    before = cbig.copy()
    want = _ref(a, b, c, ta, tb, 1.5, 0.5)
    _T.sgemm(a, b, c, trans_a=ta, trans_b=tb, alpha=1.5, beta=0.5)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-4)
    # nothing outside the view was touched
    mask = np.ones_like(cbig, dtype=bool)
    mask[1:, 3:3 + n] = False
    np.testing.assert_array_equal(cbig[mask], before[mask])


def test_sgemm_beta_zero_ignores_nan_in_c(rng):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    c = np.full((4, 5), np.nan, np.float32)
    _T.sgemm(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-6)


def test_sgemm_bad_arguments(rng):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    c = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match=r"a: expected dtype float32, got float64"):
        _T.sgemm(a.astype(np.float64), b, c)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _T.sgemm(a.tolist(), b, c)
    with pytest.raises(ValueError, match=r"inner dimensions differ"):
        _T.sgemm(a, b.T.copy(), c)
    with pytest.raises(ValueError, match=r"c: expected shape \(4, 5\), got \(5, 4\)"):
        _T.sgemm(a, b, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="unit element stride"):
        _T.sgemm(np.asfortranarray(rng.standard_normal((4, 3)).astype(np.float32)[:, ::2]), b[:2], c)
    with pytest.raises(ValueError, match="unit element stride"):
        _T.sgemm(a, b, np.zeros((4, 10), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="2-D"):
        _T.sgemm(a[0], b, c)
    ro = c.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _T.sgemm(a, b, ro)
    big = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        _T.sgemm(big, big[:, :4], big)
