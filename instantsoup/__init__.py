"""instantsoup: Instant Soup Pruning (ICML 2023) for pre-trained transformers, on a CPU.

Draws lottery tickets (sparse subnetworks as accurate as the dense model) from BERT-family text
models and CLIP's vision tower with C kernels on OpenBLAS. See README.md and docs/.
"""
from __future__ import annotations

import os as _os
import warnings as _warnings

from instantsoup._native import _C, available_cores
from instantsoup import precision

__version__ = "0.1.0"

# Environment variables that set the default thread count at import (the first one set wins).
THREAD_VARIABLES = ("INSTANTSOUP_NUM_THREADS", "OMP_NUM_THREADS")

__all__ = ["__version__", "set_num_threads", "get_num_threads", "default_num_threads", "build_info", "precision"]


def set_num_threads(n: int) -> None:
    """Set the thread count used by instantsoup's OpenMP kernels and by OpenBLAS (one setting).

    ``n`` must be >= 1 (ValueError otherwise); more threads than the cores this process may run on
    is allowed but warned about (oversubscribed threads wait for each other at every barrier).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: expected 1 <= n, got {n}")
    cores = available_cores()
    if n > cores:
        _warnings.warn(f"set_num_threads({n}): more threads than the {cores} core(s) available to "
                       "this process; expect slower, not faster, kernels", RuntimeWarning, stacklevel=2)
    _C.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count in use (default: the cores available to this process)."""
    return _C.get_num_threads()


def build_info() -> dict:
    """Facts about this build: BLAS library and version, OpenBLAS core type, threads, compiler,
    and the checkpoint ``model_type``s load_model supports."""
    info = dict(_C.build_info())
    info["model_types"] = ", ".join(supported_model_types())
    cfg = info.get("blas_config", "")
    info["blas_version"] = cfg.split()[1] if cfg.startswith("OpenBLAS ") and len(cfg.split()) > 1 else cfg
    info["instantsoup_version"] = __version__
    info["available_cores"] = available_cores()
    info["isa_available"] = ", ".join(precision.available_isas())
    try:
        info["isa"] = precision.get_isa()
    except ValueError as e:  # INSTANTSOUP_ISA names a path this CPU lacks
        info["isa"] = f"error: {e}"
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "INSTANTSOUP_ISA") + THREAD_VARIABLES:
        if var in _os.environ:
            info["env_" + var] = _os.environ[var]
    return info


def default_num_threads() -> int:
    """The thread count at import: ``INSTANTSOUP_NUM_THREADS``, else ``OMP_NUM_THREADS`` (its first
    entry when it lists nested levels, e.g. "4,2"), else the cores available to this process.
    A value that is not a positive integer is warned about and skipped."""
    for var in THREAD_VARIABLES:
        raw = _os.environ.get(var, "").strip()
        if not raw:
            continue
        first = raw.split(",")[0].strip()
        try:
            n = int(first)
        except ValueError:
            n = 0
        if n >= 1:
            return n
        _warnings.warn(f"{var}={raw!r} is not a positive integer; ignored", RuntimeWarning, stacklevel=2)
    return available_cores()


set_num_threads(default_num_threads())

# --- data (branch data, issue 5) ---------------------------------------------------------------
from instantsoup import data  # noqa: E402  (tokenization, GLUE/table loaders, batching, default task)

__all__ += ["data"]

# --- pruning: masks, selection, merges, soups (branch prune, issue 4) ---
from instantsoup.masks import (  # noqa: E402
    MaskSet,
    PackedMaskSet,
    average_weights,
    from_torch_amount,
    magnitude_masks,
    masked_count,
    merge_masks,
    random_masks,
    to_torch_amount,
)

__all__ += ["MaskSet", "PackedMaskSet", "magnitude_masks", "random_masks", "merge_masks",
            "average_weights", "masked_count", "to_torch_amount", "from_torch_amount"]

# ---- engine (issue 3): models and optimizer ---------------------------------------------------
from instantsoup.models import load_model, supported_model_types  # noqa: E402
from instantsoup.optim import AdamW  # noqa: E402

__all__ += ["load_model", "supported_model_types", "AdamW"]

# --- experiment layer: settings, trainer, methods, tickets (branch mainjob, issue 6) -----------
from instantsoup.config import (DataSettings, PruneSettings, RunSettings, Settings,  # noqa: E402
                                SettingsError, TrainSettings)
from instantsoup.ticket import Ticket, load_ticket  # noqa: E402
from instantsoup.train import TaskData, Trainer  # noqa: E402
from instantsoup import methods  # noqa: E402  (instant_soup, imp, one_shot, gmp, random_prune, dense, ...)

__all__ += ["Settings", "TrainSettings", "PruneSettings", "DataSettings", "RunSettings", "SettingsError",
            "Ticket", "load_ticket", "TaskData", "Trainer", "methods"]
