"""Pruning methods: one function each, over the primitives of :mod:`instantsoup.methods.common`.

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

METHODS: dict[str, Callable[..., Any]] = {
    "isp": instant_soup, "imp": imp, "omp": one_shot, "gmp": gmp, "random": random_prune,
    "dense": dense, "ims": instant_model_soup,
}

__all__ = ["instant_soup", "imp", "one_shot", "gmp", "random_prune", "dense", "instant_model_soup",
           "METHODS", "run_method"]


def run_method(model: Any, task: Any, settings: Any, **kw: Any) -> Any:
    """Dispatch on ``settings.prune.method``."""
    method = getattr(getattr(settings, "prune", None), "method", None)
    if method not in METHODS:
        from instantsoup.config import SettingsError

        raise SettingsError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](model, task, settings, **kw)
