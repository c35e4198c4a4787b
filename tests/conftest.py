import os

import numpy as np
import pytest


def subprocess_env():
    """Environment for a child Python that must import the same instantsoup as this process.

    The package under test may be installed (CI) or built in place (a source checkout); a child
    started with cwd elsewhere finds it through PYTHONPATH either way, and never picks up a
    source tree without its compiled extension.
    """
    import instantsoup

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(instantsoup.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


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
