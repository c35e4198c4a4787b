"""Pruning methods: one module each (settings, plan, run) over the primitives of
:mod:`instantsoup.methods.common`; :mod:`instantsoup.methods.registry` lists them.

Every method takes ``(model, task, settings, *, run_dir=None, progress=True)`` and returns a
:class:`~instantsoup.ticket.Ticket`.
"""
from __future__ import annotations

from typing import Any, Callable

from instantsoup.methods.gmp import gmp
from instantsoup.methods.imp import imp
from instantsoup.methods.ims import instant_model_soup
from instantsoup.methods.isp import instant_soup
from instantsoup.methods.omp import dense, one_shot, random_prune
from instantsoup.methods.registry import REGISTRY, get

METHODS: dict[str, Callable[..., Any]] = {name: m.run for name, m in REGISTRY.items()}

__all__ = ["instant_soup", "imp", "one_shot", "gmp", "random_prune", "dense", "instant_model_soup",
           "METHODS", "REGISTRY", "run_method"]


def run_method(model: Any, task: Any, settings: Any, **kw: Any) -> Any:
    """Dispatch on ``settings.prune.method``."""
    return get(getattr(getattr(settings, "prune", None), "method", None)).run(model, task, settings, **kw)
