"""The one list of pruning methods (after open_lth's ``pruning/registry.py``).

A method is one module of ``instantsoup/methods/`` holding its settings class (the fields only it
reads, with their defaults, help and checks), its ``plan(settings, steps_per_epoch)`` (the budget
check and the planned schedule) and its run function, bundled as a
:class:`~instantsoup.methods.common.Method`. Everything that names methods derives from this list:
``--method`` and its choices, the flat ``PruneSettings`` (CLI options and the ``[prune]`` section of
config files), which fields enter a run's hash, ``check_budget``, validation, studies, ``run_method``.
Its order is the order of ``--help`` and of the settings; the first method is the default.
"""
from __future__ import annotations

from instantsoup.methods.common import Method
from instantsoup.methods.gmp import GMP
from instantsoup.methods.imp import IMP
from instantsoup.methods.ims import IMS
from instantsoup.methods.isp import ISP
from instantsoup.methods.omp import DENSE, OMP, RANDOM
from instantsoup.settings_base import SettingsError

REGISTRY = {m.name: m for m in (ISP, IMP, OMP, GMP, RANDOM, DENSE, IMS)}


def get(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in REGISTRY:
        raise SettingsError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
