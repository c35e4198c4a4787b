"""Running a method from Settings, as the CLI, the demo and studies do: the model with a head for
the task, the thread count, the run directory named from the run's identity."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from instantsoup.config import Settings, SettingsError, check_model_dir

log = logging.getLogger("instantsoup")


def default_model() -> str:
    """The path of the embedded demo model (the default ``--model``)."""
    from instantsoup import data

    return str(data.default_model_path())


def max_threads() -> int:
    """The most threads worth running: the cores this process may use (more only oversubscribe
    them; 1000 threads ran 140x slower)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


def set_threads(n: int) -> None:
    """Use ``n`` threads (0: leave the default), capped at the available cores with a warning."""
    if n > 0:
        import instantsoup

        cap = max_threads()
        if n > cap:
            log.warning("--threads %d is more than the %d cores available; using %d", n, cap, cap)
            n = cap
        instantsoup.set_num_threads(n)


def fit_max_length(model_dir: str, max_length: int) -> int:
    """``max_length`` capped at the longest input the model's position table allows (longer inputs
    are truncated there rather than refused in the middle of training)."""
    from instantsoup.models import read_config
    from instantsoup.models.encoder import encoder_families, family_of

    config = read_config(model_dir)
    model_type = config.get("model_type")
    if model_type in encoder_families():
        limit = family_of(model_type).max_tokens(config)
    else:  # CLIP: the position table is in text_config, and prompts are encoded to its length
        limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and 0 < limit < max_length:
        log.warning("max_length %d exceeds the %d tokens the model's position table allows; truncating at %d",
                    max_length, limit, limit)
        return limit
    return max_length


def load_for_task(model_dir: str, task, seed: int = 0):
    """The model with a head for ``task``: a classifier of ``num_labels`` (BERT), or CLIP's frozen
    zero-shot head from the task's class names and prompt templates (as the paper does)."""
    import instantsoup
    from instantsoup.models import read_config

    if read_config(model_dir).get("model_type") == "clip":
        model = instantsoup.load_model(model_dir, seed=seed)
        if not task.info.get("classnames"):
            raise SettingsError("a CLIP model needs an image task (class names for its zero-shot head)")
        model.zero_shot_head(task.info["classnames"], task.info["templates"])
        return model
    return instantsoup.load_model(model_dir, num_labels=task.num_labels, seed=seed)


def run_settings(settings: Settings, *, model_dir: str | None = None, fresh: bool = False,
                 keep_round_masks: bool = False, quiet: bool = False):
    """Validate, load model and task, name the run directory, run the method; return (ticket, run dir)."""
    from instantsoup import runs
    from instantsoup.methods import run_method
    from instantsoup.task import load_task

    settings.validate()  # refuses bad settings before any work
    model_dir = model_dir or settings.run.model or default_model()
    check_model_dir(model_dir)
    set_threads(settings.run.threads)
    task = load_task(settings.data, model_dir, fit_max_length(model_dir, settings.train.max_length),
                     settings.train.seed)
    root = Path(settings.run.out) / runs.run_name(settings.prune.method, runs.run_identity(settings, model_dir))
    model = load_for_task(model_dir, task, settings.train.seed)
    settings = dataclasses.replace(settings, run=dataclasses.replace(settings.run, model=model_dir,
                                                                     resume=settings.run.resume and not fresh))
    log.info("run directory %s", root)
    kw = {"keep_round_masks": True} if keep_round_masks and settings.prune.method == "isp" else {}
    ticket = run_method(model, task, settings, run_dir=root, progress=settings.run.progress and not quiet, **kw)
    return ticket, root
