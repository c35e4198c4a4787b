"""Thread count at import (INSTANTSOUP_NUM_THREADS > OMP_NUM_THREADS > cores) and set_num_threads checks."""
import json
import subprocess
import sys
import warnings

import pytest

import instantsoup
from conftest import package_parent, subprocess_env

pytestmark = pytest.mark.kernel

PROBE = ("import json, warnings, instantsoup\n"
         "print(json.dumps([instantsoup.get_num_threads(), instantsoup.build_info()['blas_num_threads']]))")


def _threads_at_import(**env_vars):
    env = subprocess_env()
    for var in instantsoup.THREAD_VARIABLES:
        env.pop(var, None)
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                         cwd=package_parent())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_omp_num_threads_one_at_import():
    (n, blas_n), _ = _threads_at_import(OMP_NUM_THREADS="1")
    assert n == 1 and blas_n == 1


def test_instantsoup_variable_wins_over_omp():
    (n, blas_n), _ = _threads_at_import(OMP_NUM_THREADS="1", INSTANTSOUP_NUM_THREADS="2")
    assert n == 2 and blas_n == 2
    (n, _), _ = _threads_at_import(OMP_NUM_THREADS="2,1")  # nested levels: the outer one
    assert n == 2


def test_no_variable_means_available_cores():
    (n, _), _ = _threads_at_import()
    assert n == instantsoup.available_cores()


def test_bad_variable_is_warned_and_skipped():
    (n, _), err = _threads_at_import(INSTANTSOUP_NUM_THREADS="zero", OMP_NUM_THREADS="1")
    assert n == 1
    assert "INSTANTSOUP_NUM_THREADS='zero' is not a positive integer" in err


def test_default_num_threads_reads_the_environment(monkeypatch):
    for var in instantsoup.THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert instantsoup.default_num_threads() == instantsoup.available_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert instantsoup.default_num_threads() == 3
    monkeypatch.setenv("INSTANTSOUP_NUM_THREADS", "1")
    assert instantsoup.default_num_threads() == 1
    monkeypatch.setenv("INSTANTSOUP_NUM_THREADS", "-2")
    with pytest.warns(RuntimeWarning, match="INSTANTSOUP_NUM_THREADS"):
        assert instantsoup.default_num_threads() == 3


def test_set_num_threads_refuses_zero_and_negative():
    old = instantsoup.get_num_threads()
    for bad in (0, -1, -(2**70)):
        with pytest.raises(ValueError, match="1 <= n"):
            instantsoup.set_num_threads(bad)
    assert instantsoup.get_num_threads() == old


def test_set_num_threads_warns_above_available_cores():
    old = instantsoup.get_num_threads()
    cores = instantsoup.available_cores()
    try:
        with pytest.warns(RuntimeWarning, match="more threads than"):
            instantsoup.set_num_threads(cores + 1)
        assert instantsoup.get_num_threads() == cores + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            instantsoup.set_num_threads(cores)
    finally:
        instantsoup.set_num_threads(old)
