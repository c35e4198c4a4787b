import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    try:
        import instantsoup

        info = instantsoup.build_info()
        return (f"instantsoup {info['instantsoup_version']} from {os.path.dirname(instantsoup.__file__)}; "
                f"BLAS {info['blas']} {info['blas_version']} core={info['blas_corename']}; "
                f"threads={info['num_threads']}")
    except Exception as e:  # pragma: no cover
        return f"instantsoup import failed: {e}"


# ---- shared fixtures of the method tests -----------------------------------------------------
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


def make_tiny_task(n_train=96, n_val=48, n_test=48, vocab=50, seed=0, pad_id=0):
    """A learnable toy task: label 1 iff the sequence has more 'high' tokens (>= vocab/2) than low."""
    from instantsoup.train import Split, TaskData, accuracy_metric

    rng = np.random.default_rng(seed)

    def split(n):
        ids, labels = [], []
        for _ in range(n):
            L = int(rng.integers(4, 12))
            x = rng.integers(1, vocab, size=L)
            ids.append(x.astype(np.int64))
            labels.append(int((x >= vocab // 2).sum() * 2 > L))
        return Split(ids, np.array(labels, np.int64), [np.zeros(len(x), np.int64) for x in ids])

    return TaskData("tiny", split(n_train), split(n_val), accuracy_metric, 2, test=split(n_test), pad_id=pad_id)


@pytest.fixture
def fake_api(monkeypatch):
    """The real engine/pruning API where merged, the NumPy stand-ins of tests/fakes.py elsewhere."""
    import instantsoup
    import fakes

    for name, obj in fakes.FAKES.items():
        if not hasattr(instantsoup, name):
            monkeypatch.setattr(instantsoup, name, obj, raising=False)
    return fakes
