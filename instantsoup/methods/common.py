"""The four primitives every method composes (train / score / select / merge), the run scaffolding, and
what a method is (:class:`Method`: its run, settings and plan; the list: :mod:`instantsoup.methods.registry`).

    train(ctx, model, opt, start, stop, ...)   Trainer.train: masked AdamW steps, schedule, evaluation
    score(model) -> {name: |w|}                magnitudes of the prunable weights (copies)
    select(source, sparsity, current) -> mask  exact global magnitude selection (instantsoup.magnitude_masks)
    merge(masks, rule, sparsity, scores)       superposition of masks (instantsoup.merge_masks)

:class:`Context` carries what a method needs (model, optimizer, trainer, run directory, plan) and
turns "save stage / resume from the last stage / finish into a Ticket" into one-liners.

A method's settings class holds the fields only it reads, on top of the groups methods share here:
:class:`Target` (``sparsity``), :class:`Rounds` (``step``: iterative pruning), :class:`ProtocolSettings`
(the denoisers' / ingredients' data subsets, lr multipliers and weight decays). Its plan starts from
:func:`budget`, the main model's budget and the checks every method shares.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from instantsoup import runs
from instantsoup.settings_base import SettingsError, setting
from instantsoup.masks import MaskSet
from instantsoup.ticket import Ticket
from instantsoup.train import Best, Cost, StepOrder, TaskData, Trainer, tensorboard_scalars

log = logging.getLogger(__name__)


def _api() -> Any:
    import instantsoup

    return instantsoup


# ---- primitives -------------------------------------------------------------------------------
def prunable(model: Any) -> dict[str, np.ndarray]:
    """Views of the prunable weights (name -> (out, in) float32)."""
    sd = model.state_dict()
    return {n: sd[n] for n in model.prunable_names}


def score(model_or_weights: Any) -> dict[str, np.ndarray]:
    """|w| of the prunable weights, as float32 copies."""
    w = prunable(model_or_weights) if hasattr(model_or_weights, "prunable_names") else model_or_weights
    return {n: np.abs(v).astype(np.float32) for n, v in w.items()}


def select(source: Any, sparsity: float, current: Mapping[str, np.ndarray] | None = None) -> Any:
    """Global magnitude mask at exactly ``sparsity`` among the weights kept by ``current``.

    ``source``: a model (its weights; its own masks as ``current`` unless given) or a mapping of
    scores/weights.
    """
    if hasattr(source, "prunable_names"):
        cur = current if current is not None else source.masks
        return _api().magnitude_masks(prunable(source), sparsity, current=cur)
    return _api().magnitude_masks(source, sparsity, current=current)


def merge(masks: Sequence[Any], rule: str, sparsity: float | None = None,
          scores: Mapping[str, np.ndarray] | None = None, current: Mapping[str, np.ndarray] | None = None) -> Any:
    """Merge masks by ``rule``; with ``sparsity``, reach exactly that sparsity ranking by ``scores``.

    ``union``: keep what any mask keeps, then the one-shot adjustment keeps the ``(1-s)·P`` highest
    scores among them. ``vote``: the weights kept by most masks, ties by score. ``intersection``:
    keep what all masks keep; when that is fewer than ``(1-s)·P``, fill up with the highest scores
    among the other weights ``current`` keeps.
    """
    api = _api()
    if sparsity is None:
        return api.merge_masks(list(masks), rule=rule)
    if rule == "intersection":
        inter = api.merge_masks(list(masks), rule="intersection")
        if mask_sparsity(inter) > sparsity:
            top = max(float(np.max(v)) for v in scores.values()) + 1.0
            boosted = {k: np.where(np.asarray(inter[k], bool), v + top, v).astype(np.float32)
                       for k, v in scores.items()}
            return api.magnitude_masks(boosted, sparsity, current=current)
    return api.merge_masks(list(masks), rule=rule, sparsity=sparsity, scores=scores)


def overlap(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict:
    """Overlap of the kept sets of two masks: Jaccard |a∧b|/|a∨b| and Hamming (fraction differing)."""
    o = (a if isinstance(a, MaskSet) else MaskSet(a)).overlap(b)
    return {"jaccard": o["jaccard"], "hamming": o["hamming_fraction"]}


def mask_sparsity(m: Mapping[str, np.ndarray]) -> float:
    kept = sum(int(np.count_nonzero(v)) for v in m.values())
    return 1.0 - kept / max(1, sum(int(np.size(v)) for v in m.values()))


def as_maskset(m: Mapping[str, np.ndarray]) -> Any:
    """A copy of ``m`` as a MaskSet (a plain dict if the class cannot be built from a mapping)."""
    copy = {k: np.array(v, dtype=np.uint8, copy=True) for k, v in m.items()}
    try:
        return _api().MaskSet(copy)
    except Exception:  # noqa: BLE001 - tolerate another constructor signature
        return copy


def set_weight_decay(opt: Any, wd: float) -> float:
    """Set the optimizer's weight decay; return the previous value."""
    prev = getattr(opt, "weight_decay")
    opt.weight_decay = wd
    return prev


@dataclass
class Protocol:
    """One denoiser's (or soup ingredient's) training protocol, drawn from (seed, round, index)."""

    seed: int
    lr_mult: float
    weight_decay: float
    subset: np.ndarray = field(repr=False)

    def record(self) -> dict:
        return {"seed": self.seed, "lr_mult": self.lr_mult, "weight_decay": self.weight_decay,
                "subset_size": int(len(self.subset))}


def draw_protocol(settings: Any, n_train: int, key: int, index: int) -> Protocol:
    pr, tr = settings.prune, settings.train
    rng = np.random.default_rng([tr.seed, 1009, key, index])
    seed = int(rng.integers(2**31 - 1))
    lr_mult = float(rng.uniform(pr.lr_mult_min, pr.lr_mult_max)) if pr.lr_mult_max > pr.lr_mult_min else pr.lr_mult_min
    wds = ProtocolSettings.of(pr).wd_list()
    wd = float(wds[int(rng.integers(len(wds)))]) if wds else tr.weight_decay
    return Protocol(seed, lr_mult, wd, StepOrder.subset(n_train, pr.subset_fraction, seed))


# ---- what a method is: its settings, its plan, its run -----------------------------------------
@dataclass(frozen=True)
class Method:
    """A pruning method, as the registry (:mod:`instantsoup.methods.registry`) lists it."""

    name: str  # ``--method NAME``; its runs are ``<out>/NAME-<hash>``
    run: Callable[..., Ticket]  # run(model, task, settings, *, run_dir=None, progress=True) -> Ticket
    settings: type  # a MethodSettings subclass: the fields it reads (only they enter its runs' hashes)
    plan: Callable[[Any, int], dict]  # plan(settings, steps_per_epoch): the budget check, the planned schedule
    description: str  # one line


@dataclass
class MethodSettings:
    """The settings a method reads (none: dense). A subclass declares its fields with ``setting(...)``
    and checks them in ``validate`` (calling ``super().validate()`` first)."""

    @classmethod
    def of(cls, prune: Any) -> Any:
        """These settings, from a PruneSettings (or any object holding these fields)."""
        return cls(**{f.name: getattr(prune, f.name) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        """Refuse bad values with a SettingsError (before any work is done)."""


@dataclass
class Target(MethodSettings):
    """Methods that prune to a target sparsity."""

    sparsity: float = setting(0.5, "target fraction of prunable weights set to zero, in [0, 1)")

    def validate(self) -> None:
        super().validate()
        if not (0.0 <= self.sparsity < 1.0) or not math.isfinite(self.sparsity):
            raise SettingsError(f"target sparsity must be in [0, 1), got {self.sparsity}")


@dataclass
class Rounds(Target):
    """Iterative pruning: every round removes ``step`` of the weights still kept."""

    step: float = setting(0.10, "fraction of the still-kept weights removed per pruning round "
                          "(paper: 0.10 BERT, 0.15 CLIP)")

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.step < 1.0:
            raise SettingsError(f"step must be in (0, 1), got {self.step}")

    def levels(self) -> list[float]:
        """The sparsity levels s_1 < s_2 < ... = S the rounds pass through (:func:`sparsity_levels`)."""
        return sparsity_levels(self.sparsity, self.step)


@dataclass
class ProtocolSettings(MethodSettings):
    """How the protocols of ISP's denoisers and IMS's ingredients are drawn (:func:`draw_protocol`)."""

    subset_fraction: float = setting(0.5, "ISP/IMS: fraction of the training set each denoiser/ingredient sees")
    lr_mult_min: float = setting(1.0, "ISP/IMS: smallest learning-rate multiplier drawn per denoiser")
    lr_mult_max: float = setting(1.0, "ISP/IMS: largest learning-rate multiplier drawn per denoiser")
    wd_choices: str = setting("", "ISP/IMS: comma-separated weight decays drawn per denoiser "
                              "('' = the main weight decay)")

    def wd_list(self) -> list[float]:
        """``wd_choices`` parsed (empty: use the main weight decay)."""
        return [float(x) for x in self.wd_choices.split(",") if x.strip()]

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.subset_fraction <= 1.0:
            raise SettingsError(f"subset_fraction must be in (0, 1], got {self.subset_fraction}")
        if not 0.0 < self.lr_mult_min <= self.lr_mult_max:
            raise SettingsError(f"need 0 < lr_mult_min <= lr_mult_max, got {self.lr_mult_min}, {self.lr_mult_max}")
        try:
            wds = self.wd_list()
        except ValueError:
            raise SettingsError(f"wd_choices must be comma-separated numbers, got {self.wd_choices!r}") from None
        if any(w < 0 for w in wds):
            raise SettingsError(f"weight decays must be >= 0, got {self.wd_choices!r}")


def sparsity_levels(target: float, step: float, margin: float = 0.0, start: float = 0.0) -> list[float]:
    """Levels from ``start`` towards ``target``, removing ``step`` of the kept weights each time.

    The sequence ends with ``target`` itself (the final exact prune); intermediate levels within
    ``margin`` of the target are skipped.
    """
    out: list[float] = []
    s = start
    while s < target - margin - 1e-12:
        s = min(target, 1.0 - (1.0 - s) * (1.0 - step))
        out.append(s)
        if len(out) > 10_000:  # pragma: no cover - guarded by validate()
            raise SettingsError("too many pruning rounds")
    if out and out[-1] != target and target - out[-1] <= margin + 1e-12:
        out[-1] = target
    elif target > start and (not out or out[-1] != target):
        out.append(target)
    return out


def budget(s: Any, steps_per_epoch: int, *, passes: int = 1, other_steps: int = 0) -> dict:
    """The start of every method's plan: the main model's budget T and the checks all methods share.

    The method's planned total of optimizer steps is ``passes·T + other_steps``: IMP K+1 passes less
    the K·r rewound steps (K pruning rounds, rewind step r); OMP of fine-tuned weights 2 passes; ISP
    and IMS the denoisers' / ingredients' steps on top; the others T. Without ``match_steps``, T comes
    from ``epochs`` / ``max_steps``; with ``match_steps = N``, T is set so that the planned total is N
    (or the nearest below it). Returns ``steps_per_epoch``, ``total_steps`` (T), ``warmup``,
    ``planned_steps`` (and ``match_steps`` when set).
    """
    tr = s.train
    if steps_per_epoch < 1:
        raise SettingsError("the training set is empty (0 steps per epoch)")
    total = tr.total_steps(steps_per_epoch) if tr.match_steps <= 0 else (tr.match_steps - other_steps) // passes
    if total < 1:
        raise SettingsError(f"--match-steps {tr.match_steps} leaves no steps for the main model of {s.prune.method} "
                            f"({max(0, other_steps)} steps go to denoisers/ingredients)")
    warm = tr.warmup(total)
    plan = {"steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup": warm,
            "planned_steps": passes * total + other_steps}
    if tr.match_steps > 0:
        plan["match_steps"] = tr.match_steps
    if warm >= total and warm > 0:
        raise SettingsError(f"warm-up ({warm} steps) does not fit in the budget of {total} steps")
    return plan


# ---- run scaffolding --------------------------------------------------------------------------
@dataclass
class Context:
    """What a method works with; built by :func:`setup`."""

    settings: Any  # instantsoup.Settings
    model: Any
    opt: Any
    task: TaskData
    trainer: Trainer
    run: runs.RunDir
    plan: dict
    keep_round_masks: bool = False
    round_masks: dict[str, Any] = field(default_factory=dict)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def history(self) -> list[dict]:
        return self.trainer.history

    @property
    def cost(self) -> Cost:
        return self.trainer.cost

    def log(self, record: dict) -> None:
        self.history.append(record)
        log.info("%s", {k: v for k, v in record.items() if not isinstance(v, (list, dict))})

    def new_optimizer(self, model: Any) -> Any:
        tr = self.settings.train
        return _api().AdamW(model, lr=tr.lr, weight_decay=tr.weight_decay)

    def save(self, name: str, step: int, extra: dict | None = None, **state: Any) -> None:
        """Checkpoint stage ``name`` (model + optimizer + history + cost + ``state``)."""
        self.run.save(name, self.model, self.opt,
                      {"step": step, "history": self.history, "cost": self.cost.to_dict(), **state}, extra)

    def restore(self, name: str) -> dict:
        """Load stage ``name`` into the model and optimizer; restore history and cost."""
        state = self.run.load(name, self.model, self.opt)
        self.trainer.history[:] = state.get("history", [])
        self.trainer.cost.stages = Cost.from_dict(state.get("cost", {})).stages
        return state

    def resume_point(self, names: list[str]) -> tuple[int, dict | None]:
        """Index after the last finished of ``names`` and its state (0, None when starting fresh)."""
        last = self.run.resume_from(names) if self.run else None
        if last is None:
            return 0, None
        return names.index(last) + 1, self.restore(last)

    def finetune(self, start: int, stop: int, stage: str = "finetune", **kw: Any) -> Best:
        """Train [start, stop) tracking the best validation score; load the best if asked."""
        best = Best()
        self.trainer.train(self.model, self.opt, start, stop, stage=stage, best=best, **kw)
        early = stop < self.trainer.total_steps and stop % self.trainer.eval_interval != 0
        if best.weights is None or early:  # no evaluation at the end of the range: evaluate now
            self.trainer._evaluate_and_track(self.model, stop, stage, best)
        if self.settings.train.select_best and best.weights is not None:
            self.model.load_state_dict(best.weights)
        return best

    def finish(self, best: Best | None = None, extra_metrics: dict | None = None) -> Ticket:
        """Evaluate the final model, build the Ticket and export it into the run directory."""
        tr = self.trainer
        metrics = {f"val_{k}": v for k, v in tr.evaluate(self.model, "validation").items()}
        metrics.update({f"test_{k}": v for k, v in tr.evaluate(self.model, "test").items()})
        if best is not None:
            metrics["best_step"] = best.step
        metrics.update(extra_metrics or {})
        metrics["wall_seconds"] = time.perf_counter() - self.t_start
        ticket = Ticket(method=self.settings.prune.method,
                        target_sparsity=self.settings.prune.sparsity if self.settings.prune.method != "ims" else 0.0,
                        masks=as_maskset(self.model.masks),
                        weights={k: np.array(v, copy=True) for k, v in self.model.state_dict().items()},
                        metrics=metrics, history=list(self.history), cost=self.cost,
                        settings=runs.to_jsonable(dataclasses.asdict(self.settings)),
                        base_model=self.settings.run.model or getattr(self.model, "source_path", None) or "",
                        tokenizer_dir=self.task.tokenizer_dir or getattr(self.model, "source_path", None),
                        round_masks=self.round_masks, label_names=list(getattr(self.task, "label_names", None) or []))
        self.history.append({"event": "done", **{k: v for k, v in metrics.items()}, "sparsity": ticket.sparsity})
        if self.run:  # history first: ticket.json marks the run finished
            ticket.history = list(self.history)
            self.run.write_history(self.history)
            runs.kill_point("history-written")
            ticket.export(runs.ticket_path(self.run.root), self.model)
            self.run.close()
        return ticket


def setup(model: Any, task: TaskData, settings: Any, run_dir: Any = None, *, method: Method,
          progress: bool = True, keep_round_masks: bool = False) -> Context:
    """Validate everything (before any work), plan the budget (``method.plan``), build optimizer and
    trainer.

    ``settings``: an instantsoup.Settings. ``method``: the method being run; it replaces
    ``settings.prune.method`` (calling ``methods.imp(model, task, Settings())`` runs, plans and labels
    IMP, not the default ISP).
    """
    if not all(dataclasses.is_dataclass(getattr(settings, p, None)) for p in ("train", "prune", "data", "run")):
        raise TypeError(f"settings: expected an instantsoup.Settings, got {type(settings).__name__}")
    missing = [a for a in ("train", "validation", "metric", "num_labels") if not hasattr(task, a)]
    if missing:
        raise TypeError(f"task: expected an instantsoup.TaskData (train/validation splits, metric, "
                        f"num_labels), got {type(task).__name__} without {', '.join(missing)}")
    if settings.prune.method != method.name:
        log.info("running %s (settings.prune.method was %r)", method.name, settings.prune.method)
        settings = dataclasses.replace(settings, prune=dataclasses.replace(settings.prune, method=method.name))
    settings.validate()
    check_task(model, task)
    if hasattr(model, "precision"):
        try:  # training, evaluation and clones (denoisers) run in the settings' precision
            model.precision = settings.train.precision
        except ValueError as e:  # INSTANTSOUP_ISA names a path this CPU lacks
            raise SettingsError(str(e)) from None
    trainer = Trainer(settings.train, task, progress=progress)
    plan = method.plan(settings, trainer.steps_per_epoch)
    trainer.total_steps = plan["total_steps"]
    trainer.warmup = plan["warmup"]
    run = run_dir if isinstance(run_dir, runs.RunDir) else runs.RunDir(
        run_dir, wait=settings.run.wait, fresh=not settings.run.resume)
    if run:
        identity = runs.to_jsonable(runs.run_identity(settings, getattr(model, "source_path", None)))
        ident = {"settings": runs.to_jsonable(dataclasses.asdict(settings)), "plan": plan, "identity": identity}
        if not runs.settings_path(run.root).exists():
            runs.write_json(runs.settings_path(run.root), ident)
        else:  # resuming (or rerunning): only the run these settings describe
            old = runs.read_json(runs.settings_path(run.root))
            for key in ("identity", "plan"):
                if key in old and old[key] != runs.to_jsonable(ident[key]):
                    diff = sorted(k for k in set(old[key]) | set(ident[key])
                                  if old[key].get(k) != runs.to_jsonable(ident[key]).get(k))
                    run.close()
                    raise SettingsError(f"run directory {run.root} holds a run with other settings "
                                        f"({key}: {', '.join(diff)} differ); use another run directory "
                                        "(or --out). resume=False (--no-resume) would DELETE that run's "
                                        "finished rounds and ticket")
    if run:
        trainer.scalars = tensorboard_scalars(run.root / "tensorboard")  # when tensorboard is installed
    ctx = Context(settings, model, None, task, trainer, run, plan, keep_round_masks)
    ctx.opt = ctx.new_optimizer(model)
    log.info("%s: plan %s", settings.prune.method, {k: v for k, v in plan.items() if k != "levels"})
    return ctx


def check_task(model: Any, task: TaskData) -> None:
    """Refuse a task that cannot run (before any work): no validation split, a ``main_metric`` its
    metric does not report, sequences longer than the model's positions or ids outside its
    vocabulary (BERT), another number of model outputs than the task's labels, or class labels
    outside [0, num_labels)."""
    if task.validation is None or len(task.validation) == 0:
        raise SettingsError(f"task {task.name!r} has no validation examples (model selection needs them)")
    keys = task.metric(np.asarray(task.validation.labels), np.asarray(task.validation.labels))
    if task.main_metric not in keys:
        raise SettingsError(f"task {task.name!r}: main_metric {task.main_metric!r} is not among its "
                            f"metric's keys {sorted(keys)}")
    cfg = getattr(model, "config", None)
    V, T = getattr(cfg, "vocab_size", None), getattr(cfg, "max_position_embeddings", None)
    for split in ("train", "validation", "test") if V and T else ():
        ids = getattr(getattr(task, split, None), "input_ids", None) or []
        for i, x in enumerate(ids):
            if len(x) > T:
                raise SettingsError(f"task {task.name!r}: {split} example {i} has {len(x)} tokens, more than "
                                    f"the model's max_position_embeddings {T} (tokenize with max_length <= {T})")
            if len(x) and (np.min(x) < 0 or np.max(x) >= V):
                raise SettingsError(f"task {task.name!r}: {split} example {i} has token ids outside the "
                                    f"model's vocabulary [0, {V})")
    nl = getattr(model, "num_labels", None)
    if nl is None:
        return
    if nl != task.num_labels:
        raise SettingsError(f"the model has {nl} outputs but task {task.name!r} has {task.num_labels} labels "
                            "(load the model with num_labels=task.num_labels; CLIP: set its head first)")
    if getattr(task, "is_regression", False):
        return
    for split in ("train", "validation", "test"):
        data = getattr(task, split, None)
        y = None if data is None else np.asarray(data.labels)
        if y is not None and y.size and (y.min() < 0 or y.max() >= nl):
            bad = y.min() if y.min() < 0 else y.max()
            raise SettingsError(f"task {task.name!r}: {split} label {bad} is outside [0, {nl})")


def finished_ticket(ctx: Context) -> Ticket | None:
    """The ticket of a finished run (weights loaded into the model), or None: reruns do no work."""
    if not ctx.run or not ctx.run.finished():
        return None
    t = Ticket.load(runs.ticket_path(ctx.run.root))
    if runs.read_history(ctx.run.root) != runs.to_jsonable(t.history):  # a kill in between (0.1)
        ctx.run.write_history(t.history)
    ctx.model.set_masks(t.masks)
    if t.weights is not None:
        # the exported checkpoint may hold more than the model trains (CLIP: the text tower, with
        # the head in a file of its own): load the model's own names, and the head from its file
        sd = ctx.model.state_dict()
        weights = {k: v for k, v in t.weights.items() if k in sd}
        head = runs.checkpoint_dir(runs.ticket_path(ctx.run.root)) / "instantsoup_head.safetensors"
        if hasattr(ctx.model, "set_head") and head.exists():
            h = runs.load_arrays(head)
            ctx.model.set_head(h["weight"], h["bias"])
            weights.update({k: v for k, v in sd.items() if k not in weights})  # the head just set
        ctx.model.load_state_dict(weights)
        t.weights = {k: np.array(v, copy=True) for k, v in ctx.model.state_dict().items()}
    log.info("run %s is finished; loaded its ticket (no training)", ctx.run.root)
    ctx.run.close()
    return t
