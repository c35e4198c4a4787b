"""Settings of a pruning run, as dataclasses (after open_lth's hparams).

Every field carries its help text in ``metadata["help"]``; :func:`add_arguments` generates the
``instantsoup prune`` command-line options from these classes and :func:`from_namespace` reads them
back, so the CLI and the Python API can never disagree. ``validate()`` refuses bad settings with a
:class:`SettingsError` *before* any work is done; :func:`check_budget` repeats the budget checks once
the size of the training set (steps per epoch) is known.

The fields and the hash rule (``metadata["hash"]``) are those of :mod:`instantsoup.settings_base`,
where the train and data settings live. :class:`PruneSettings` is put together from the methods'
registry (:mod:`instantsoup.methods.registry`): ``method``, then every field a registered method's
settings class declares, flat, as ``instantsoup prune`` and the ``[prune]`` section of a config file
show them. Only the fields of the run's own method enter the hash of its run (so tuning an ISP knob
never invalidates a finished IMP run), and its ``plan`` is the budget check; every field is validated.
"""
from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from instantsoup.methods.registry import REGISTRY, get as get_method
from instantsoup.settings_base import (PRECISIONS, DataSettings, SettingsError,  # noqa: F401 (re-exported)
                                       TrainSettings, setting)

METHODS = tuple(REGISTRY)  # the registered methods' names, in the registry's order

# Table 1 of the paper (Jaiswal et al., ICML 2023): BERT on GLUE, CLIP ViT-B/32 on image tasks
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper-bert": {"train": {"lr": 2e-5, "epochs": 10.0, "weight_decay": 0.0, "batch_size": 128,
                             "warmup_steps": 500, "max_grad_norm": 1.0},
                   "prune": {"step": 0.10, "lookahead": 30, "denoisers": 4}},
    "paper-clip": {"train": {"lr": 1e-5, "epochs": 22.0, "weight_decay": 0.1, "batch_size": 128,
                             "warmup_steps": 500, "max_grad_norm": 1.0},
                   "prune": {"step": 0.15, "lookahead": 50, "denoisers": 5}},
}
# what a CLIP run without a preset takes from paper-clip: the method's hyperparameters, not its budget
CLIP_DEFAULTS = ("lr", "weight_decay", "step", "lookahead", "denoisers")


class _Prune:
    """What every PruneSettings does; its fields come from the registry (:func:`_prune_settings`)."""

    def own(self) -> Any:
        """The settings of this run's method alone: an instance of its settings class."""
        return get_method(self.method).settings.of(self)

    def validate(self) -> None:
        """Check every field: the method's own settings first, then the other methods' (a typo in a
        knob the method does not read is still a mistake in the user's file, and refused)."""
        own = self.own()
        own.validate()
        for m in REGISTRY.values():
            if m.name != self.method:
                m.settings.of(self).validate()
        if not hasattr(own, "sparsity") and self.sparsity != 0.0:
            raise SettingsError(f"method {self.method!r} does not prune; leave sparsity at 0")


def _prune_settings() -> type:
    """PruneSettings: ``method`` (the first registered method by default), then the fields of every
    registered method's settings class in registry order (a field two methods share, once)."""
    fields = [("method", str, setting(next(iter(REGISTRY)), "pruning method", choices=METHODS))]
    for m in REGISTRY.values():
        hints = typing.get_type_hints(m.settings)
        for f in dataclasses.fields(m.settings):
            if f.name not in {name for name, _, _ in fields}:
                fields.append((f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory,
                                                            metadata=f.metadata)))
    doc = "Which method, which target, and every method's knobs (the methods: docs/experiments.md)."
    cls = dataclasses.make_dataclass("PruneSettings", fields, bases=(_Prune,), namespace={"__doc__": doc})
    cls.__module__ = __name__  # pickles (Ray) as instantsoup.config.PruneSettings
    return cls


PruneSettings = _prune_settings()


@dataclass
class RunSettings:
    """Where and how a run executes (none of these change its results, except ``model``)."""

    model: str = setting("", "Hugging Face checkpoint directory (config.json + model.safetensors); "
                         "'' = the embedded default model")
    out: str = setting("runs", "directory holding the run directories", hash=False, aliases=("--output-dir",))
    threads: int = setting(0, "threads for kernels and BLAS (0 = the default: INSTANTSOUP_NUM_THREADS, "
                           "else OMP_NUM_THREADS, else all available cores)", hash=False)
    resume: bool = setting(True, "continue an interrupted run from its last finished round (--no-resume: "
                           "DELETE the run directory, finished rounds and ticket included, and start over)", hash=False)
    progress: bool = setting(True, "show progress bars", hash=False)
    wait: bool = setting(True, "when another process works in the same run directory, wait for it "
                         "(--no-wait: refuse at once)", hash=False)
    preset: str = setting("", "start from Table 1 of the paper: 'paper-bert' (lr 2e-5, 10 epochs, step 0.10, "
                          "look-ahead 30, wd 0, 4 denoisers) or 'paper-clip' (lr 1e-5, 22 epochs, step 0.15, look-ahead "
                          "50, wd 0.1, 5 denoisers), both batch 128, warm-up 500, clipping 1.0; options given "
                          "explicitly win. Without a preset a CLIP model gets paper-clip's lr, weight decay, step, "
                          "look-ahead and denoisers", hash=False, choices=("",) + tuple(PRESETS))
    ray: str = setting("", "ISP: run each round's denoisers as parallel Ray tasks on the cluster at this address "
                       "('auto': the cluster started on this machine; 'local': start one; needs instantsoup[ray]; "
                       "same results as without)", hash=False)

    def validate(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise SettingsError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.model:
            check_model_dir(self.model)
        if self.threads < 0:
            raise SettingsError(f"threads must be >= 0, got {self.threads}")
        if self.ray:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise SettingsError("ray: needs Ray: pip install 'instantsoup[ray]' (here and on every node)")


def with_values(settings: Settings, values: dict[str, dict[str, Any]], keep: Any = ()) -> Settings:
    """``settings`` with ``values`` ({"train": {...}, "prune": {...}}) set, except the fields in ``keep``."""
    parts = {part: dataclasses.replace(getattr(settings, part), **{k: v for k, v in vals.items() if k not in keep})
             for part, vals in values.items()}
    return dataclasses.replace(settings, **parts)


def with_preset(settings: Settings, preset: str, keep: Any = ()) -> Settings:
    """``settings`` with a preset's values (``PRESETS``), except the fields named in ``keep`` (the
    options a user gave explicitly); the preset's name is recorded in ``settings.run.preset``."""
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = with_values(settings, PRESETS[preset], keep)
    return dataclasses.replace(out, run=dataclasses.replace(out.run, preset=preset))


def with_family_defaults(settings: Settings, model_type: str | None, keep: Any = ()) -> Settings:
    """A CLIP model without a preset: paper-clip's lr, weight decay, step, look-ahead and denoisers
    (``CLIP_DEFAULTS``) replace the defaults, which are BERT's; fields in ``keep`` stay."""
    if model_type != "clip" or settings.run.preset:
        return settings
    vals = {part: {k: v for k, v in d.items() if k in CLIP_DEFAULTS} for part, d in PRESETS["paper-clip"].items()}
    return with_values(settings, vals, keep)


def check_types(obj: Any) -> None:
    """Refuse fields of the wrong type (``epochs="3"``, ``denoisers=2.0``) with a SettingsError.

    An int is accepted where a float is expected; a bool is never taken for a number.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        typ, v = hints[f.name], getattr(obj, f.name)
        ok = (isinstance(v, bool) if typ is bool
              else isinstance(v, numbers.Real) and not isinstance(v, bool) if typ is float
              else isinstance(v, numbers.Integral) and not isinstance(v, bool) if typ is int
              else isinstance(v, typ))
        if not ok:
            raise SettingsError(f"{type(obj).__name__}.{f.name}: expected {typ.__name__}, "
                                f"got {type(v).__name__} {v!r}")


def check_model_dir(path: str) -> None:
    """Refuse a model path that is not a Hugging Face checkpoint directory."""
    if not os.path.isdir(path):
        raise SettingsError(f"model path {path!r} is not a directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SettingsError(f"model path {path!r} has no config.json (expected a Hugging Face checkpoint "
                            "directory: config.json + model.safetensors)")


@dataclass
class Settings:
    """Everything a run needs; ``Settings.validate()`` checks all of it."""

    train: TrainSettings = field(default_factory=TrainSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    data: DataSettings = field(default_factory=DataSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def validate(self) -> None:
        for part in (self.train, self.prune, self.data, self.run):
            check_types(part)
            part.validate()

    def identity(self) -> dict:
        """The settings that determine a run's results (its hash input)."""
        return {"train": hashable(self.train), "prune": hashable(self.prune, prune_fields(self.prune.method)),
                "data": hashable(self.data), "model": self.run.model}




def hashable(obj: Any, names: typing.Collection[str] | None = None) -> dict:
    """Fields of a settings object that enter the run hash (see :mod:`instantsoup.settings_base`),
    among ``names`` when given."""
    out = {}
    for f in dataclasses.fields(obj):
        h = f.metadata.get("hash", True)
        if not h or (isinstance(h, tuple) and getattr(obj, f.name) == h[1]):
            continue
        if names is None or f.name in names:
            out[f.name] = getattr(obj, f.name)
    return out


def prune_fields(name: str) -> set[str]:
    """The PruneSettings fields of method ``name``'s runs: ``method`` and those of its settings class."""
    return {"method"} | ({f.name for f in dataclasses.fields(REGISTRY[name].settings)} if name in REGISTRY else set())


def check_budget(s: Settings, steps_per_epoch: int) -> dict:
    """Refuse a budget too small for the method's schedule; return the planned schedule.

    Called once the training set's size is known (before any training): the method's own ``plan``.
    The dict holds ``steps_per_epoch``, ``total_steps``, ``warmup``, ``planned_steps`` and what the
    method plans (ISP: ``t``, ``levels``, ``rounds``, ...).
    """
    return get_method(s.prune.method).plan(s, steps_per_epoch)


# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# the command line, generated from the dataclasses

def _type_of(f: dataclasses.Field, owner: type) -> type:
    hints = typing.get_type_hints(owner)
    return hints[f.name]


def _recording(base: type) -> type:
    """An argparse action class that also records its dest in ``namespace.explicit`` (options given)."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            super().__call__(parser, namespace, values, option_string)
            if not hasattr(namespace, "explicit"):
                namespace.explicit = set()
            namespace.explicit.add(self.dest)

    return Recording


_STORE = _recording(argparse._StoreAction)
_BOOL = _recording(argparse.BooleanOptionalAction)


def explicit_options(ns: argparse.Namespace) -> set[str]:
    """Fields whose options were given on the command line (parsed by :func:`add_arguments`'s options)."""
    return set(getattr(ns, "explicit", set()))


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--field-name`` option per field of the settings dataclass ``cls`` (plus its aliases,
    e.g. transformers' Trainer names such as ``--learning-rate``); choices are listed in ``--help``;
    the options given are recorded, see :func:`explicit_options`."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = _type_of(f, cls)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flags = [f.metadata.get("flag") or "--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        help_ = f.metadata.get("help", "") + f" (default: {default!r})"
        if typ is bool:
            group.add_argument(*flags, dest=f.name, action=_BOOL, default=default,
                               help=help_)
        else:
            choices = f.metadata.get("choices")
            group.add_argument(*flags, dest=f.name, action=_STORE, type=typ, default=default,
                               metavar=None if choices else typ.__name__.upper(), choices=choices, help=help_)


SECTIONS = {"train": TrainSettings, "prune": PruneSettings, "data": DataSettings, "run": RunSettings}


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a TOML or JSON file as ``{field: value}``.

    The file holds sections ``[train]``, ``[prune]``, ``[data]``, ``[run]`` (as ``--print-config``
    prints them), or a run's ``settings.json`` (its ``"settings"`` record), or top-level field
    names. Unknown sections or fields and values of the wrong type are a SettingsError.
    """
    import json

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise SettingsError(f"config file {p!r} does not exist")
    try:
        if p.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            with open(p, "rb") as fh:
                raw = tomllib.load(fh)
        elif p.endswith(".json"):
            with open(p, encoding="utf-8") as fh:
                raw = json.load(fh)
        else:
            raise SettingsError(f"config file {p!r}: expected a .toml or .json file")
    except (ValueError, OSError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(e, SettingsError):
            raise
        raise SettingsError(f"config file {p}: {e}") from None
    if isinstance(raw, dict) and isinstance(raw.get("settings"), dict):
        raw = raw["settings"]  # a run's settings.json
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {p}: expected a table of settings")
    owner = {f.name: cls for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(SECTIONS[key])}
            unknown = sorted(set(value) - known)
            if unknown:
                raise SettingsError(f"config file {p}: unknown {key} setting(s) {', '.join(unknown)}")
            out.update(value)
        elif key in owner:
            out[key] = value
        else:
            raise SettingsError(f"config file {p}: unknown setting or section {key!r}")
    for key, value in out.items():
        cls = owner[key]
        try:
            check_types(cls(**{key: value}))
        except SettingsError as e:
            raise SettingsError(f"config file {p}: {e}") from None
    return out


def settings_dict(s: Settings) -> dict[str, dict[str, Any]]:
    """``{"train": {...}, "prune": {...}, "data": {...}, "run": {...}}``: what ``--print-config`` shows
    and ``--config`` reads back."""
    return {name: dataclasses.asdict(getattr(s, name)) for name in SECTIONS}


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    """Build a settings object of class ``cls`` from parsed arguments (missing fields: defaults)."""
    kw = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    return cls(**kw)


def settings_from_dict(d: dict) -> Settings:
    """Inverse of ``dataclasses.asdict(settings)`` (unknown keys are an error)."""
    parts = {}
    for name, cls in (("train", TrainSettings), ("prune", PruneSettings), ("data", DataSettings),
                      ("run", RunSettings)):
        sub = dict(d.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(sub) - known
        if unknown:
            raise SettingsError(f"unknown {name} settings: {', '.join(sorted(unknown))}")
        parts[name] = cls(**sub)
    return Settings(**parts)
