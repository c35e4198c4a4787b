"""Load the C extension after its OpenBLAS.

The extension links against the OpenBLAS of the scipy-openblas32 wheel; importing that package
loads the library into the process (RTLD_GLOBAL) before ``instantsoup._C`` needs it.
"""
from __future__ import annotations

import os

# All engine work runs on one OpenMP thread pool (OpenBLAS is called single-threaded inside it).
# Idle OpenMP threads should sleep, not spin: on a busy or shared machine a spinning thread steals
# the core its partner needs and every parallel region then waits for a descheduled thread
# (measured: 6x slower steps at 2 threads under load). Must be set before libgomp loads; a value
# the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # the default build; a system-OpenBLAS build does not need it
    import scipy_openblas32 as _sob  # noqa: F401
except ImportError:  # pragma: no cover - system BLAS builds
    _sob = None

try:
    from instantsoup import _C  # noqa: E402
except ImportError as e:  # pragma: no cover - build problems
    raise ImportError(
        "instantsoup's C extension could not be loaded "
        f"({e}). Build it with `pip install .` (or `python setup.py build_ext --inplace` in a "
        "source checkout)."
    ) from e


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
