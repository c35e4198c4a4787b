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
