"""Instant Soup Pruning (Jaiswal et al., ICML 2023) in three named variants (docs/experiments.md).

``paper`` and ``soup`` (levels s_1 < ... < s_k = S, each an exact cut)::

    for round i = 0, 1, ..., k-1:
        train the main model t·(i+1) steps (continuing; no rewinding)
        m_0 = select(main, s_{i+1})                               # the main model's own magnitude mask
        for n = 1..N:                                             # denoisers on ONE scratch model
            scratch <- main (weights, mask, optimizer state)
            train scratch C steps on its own data subset / seed / lr multiplier / weight decay
            m_n = select(scratch, s_{i+1})
        mask = merge(m_0..m_N, rule) cut to exactly s_{i+1} by the adjustment scores
        apply mask to the main model
    prune to exactly S (a no-op when the last level is S); fine-tune for the rest of the budget

``paper`` cuts by the main weights' magnitudes (Algorithm 2 read literally). With ``merge="union"``
and ``merge_main=True`` this reproduces m_0 exactly (the union contains m_0 and m_0 is the top-k of
the main magnitudes): the denoisers change nothing, it is magnitude pruning on ISP's schedule.
``soup`` cuts by the mean |w| of the denoisers' weights after their look-ahead.

``released`` (the authors' released CLIP script ``isp_dynamic.py``)::

    round i = 0, 1, ...:
        train the main model t·(i+1) steps (continuing)
        stop if S - sparsity(main) < margin (or the next round would not fit in the budget)
        for n = 1..N:
            scratch <- main weights and mask; a FRESH AdamW whose warm-up restarts, peak = main's current lr
            train scratch C steps on its own data subset / seed / protocol
            m_n = the scratch's mask with a further ``step`` of its kept weights pruned by magnitude
        mask = union of m_1..m_N (the main mask not included; no cut: the sparsity lags)
    one global magnitude prune of the main weights to exactly S; fine-tune for the rest of the budget
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator

import numpy as np

from instantsoup import runs
from instantsoup.masks import MERGE_RULES
from instantsoup.methods.common import (Context, Method, ProtocolSettings, Rounds, budget, draw_protocol,
                                        finished_ticket, mask_sparsity, merge, overlap, prunable, score, select,
                                        set_weight_decay, setup, sparsity_levels)
from instantsoup.settings_base import SettingsError, setting
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData, Trainer

log = logging.getLogger(__name__)


# the released script's denoisers decay their learning rate linearly to 0 at this step (a constant there)
RELEASED_DENOISER_HORIZON = 1000
VARIANTS = ("released", "paper", "soup")
RELEASED_MARGIN = 0.05  # the authors' released script stops its rounds within 5 points of the target
DEFAULT_MARGIN = 0.005


@dataclasses.dataclass
class ISPSettings(ProtocolSettings, Rounds):
    t: int = setting(0, "ISP: steps per round unit (round i trains t*(i+1) steps); 0 = t_fraction of an epoch")
    t_fraction: float = setting(0.10, "ISP: t as a fraction of an epoch when --t is 0")
    denoisers: int = setting(4, "ISP: denoisers N per round (paper: 4 BERT, 5 CLIP)")
    lookahead: int = setting(30, "ISP: look-ahead steps C of each denoiser (paper: 30 BERT, 50 CLIP)")
    variant: str = setting("soup", "ISP: 'released' (the authors' released CLIP script: denoisers prune a further "
                           "--step, a weight goes only if every denoiser prunes it, no exact cut per round), 'paper' "
                           "(Algorithm 2 literally: union with the main mask cut by the main magnitudes = magnitude "
                           "pruning on ISP's schedule) or 'soup' (union with the main mask cut by the mean |w| of the "
                           "denoisers); see docs/experiments.md", choices=VARIANTS)
    merge: str = setting("union", "ISP: how the masks of a round are merged", choices=MERGE_RULES)
    merge_main: bool = setting(True, "ISP paper/soup: merge the main model's own magnitude mask with the denoisers'")
    margin: float = setting(-1.0, "ISP: stop the rounds when within this sparsity of the target; -1 = the "
                            f"variant's own ({RELEASED_MARGIN} released, {DEFAULT_MARGIN} paper/soup)")

    def validate(self) -> None:
        super().validate()
        if self.merge not in MERGE_RULES:
            raise SettingsError(f"unknown merge rule {self.merge!r}; choose one of {', '.join(MERGE_RULES)}")
        if self.variant not in VARIANTS:
            raise SettingsError(f"unknown ISP variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.t < 0 or not 0.0 < self.t_fraction <= 10.0:
            raise SettingsError(f"t must be >= 0 and t_fraction in (0, 10], got t={self.t}, "
                                f"t_fraction={self.t_fraction}")
        if self.denoisers < 0 or self.lookahead < 0:
            raise SettingsError(f"denoisers and lookahead must be >= 0, got {self.denoisers}, {self.lookahead}")
        if self.denoisers > 0 and self.lookahead == 0:
            raise SettingsError("ISP with denoisers needs lookahead >= 1 (or set denoisers 0)")
        if not (0.0 <= self.margin < 0.5 or self.margin == -1.0):
            raise SettingsError(f"margin must be in [0, 0.5) or -1 (the variant's own), got {self.margin}")

    def isp_margin(self) -> float:
        """ISP's margin: the one set, or the variant's own when -1."""
        if self.margin != -1.0:
            return self.margin
        return RELEASED_MARGIN if self.variant == "released" else DEFAULT_MARGIN

    def levels(self) -> list[float]:
        """The levels of the paper and soup variants: ISP stops as soon as it is within ``margin`` of
        the target."""
        return sparsity_levels(self.sparsity, self.step, self.isp_margin())


def released_levels(target: float, step: float, margin: float) -> list[float]:
    """The fewest pruning rounds of the released ISP: sparsities after each round if every round removed
    exactly ``step`` of the kept weights (capped at ``target``), until within ``margin`` of ``target``.

    The real rounds lag behind (a weight goes only if every denoiser prunes it), so a run usually
    needs more rounds; this lower bound is what the budget check can promise.
    """
    out: list[float] = []
    s = 0.0
    while target - s >= margin and s < target:
        s = min(target, 1.0 - (1.0 - s) * (1.0 - step))
        out.append(s)
    return out


def plan(s: Any, steps_per_epoch: int) -> dict:
    """The main budget plus N·C denoiser steps per round; the main model's rounds, t·(1+2+...+k) steps,
    must leave at least one step of final fine-tuning."""
    pr = ISPSettings.of(s.prune)
    released = pr.variant == "released"
    levels = released_levels(pr.sparsity, pr.step, pr.isp_margin()) if released else pr.levels()
    out = budget(s, steps_per_epoch, other_steps=len(levels) * pr.denoisers * pr.lookahead)
    total = out["total_steps"]
    t = pr.t if pr.t > 0 else max(1, int(round(pr.t_fraction * steps_per_epoch)))
    if released:
        phases = len(levels) + 1  # the main trains before every pruning round and once more before it stops
        need = t * phases * (phases + 1) // 2
        max_rounds = len(levels)  # the most rounds whose main phases t·(1+…+k) leave a fine-tuning step
        while t * (max_rounds + 1) * (max_rounds + 2) // 2 < total:
            max_rounds += 1
        out.update(t=t, levels=levels, rounds=len(levels), max_rounds=max_rounds)
        if need >= total:
            raise SettingsError(
                f"budget too small for ISP (released): at least {len(levels)} pruning rounds to come within "
                f"{pr.isp_margin()} of sparsity {pr.sparsity} with step {pr.step}; the main model trains "
                f"t*(1+...+{phases}) = {need} steps (t={t}) before the final fine-tuning, but the budget is "
                f"{total} steps ({steps_per_epoch} per epoch); raise --epochs, lower --t / --t-fraction or raise "
                "--step")
        return out
    rounds = len(levels)  # one denoised pruning round per level; the last one reaches S
    need = sum(t * (i + 1) for i in range(rounds))
    out.update(t=t, levels=levels, rounds=rounds, round_steps=[t * (i + 1) for i in range(rounds)])
    if need >= total and rounds > 0:
        raise SettingsError(
            f"budget too small for ISP: {rounds} rounds to reach sparsity {pr.sparsity} with step "
            f"{pr.step} need t*(1+...+{rounds}) = {need} steps (t={t}) before the final fine-tuning, "
            f"but the budget is {total} steps ({steps_per_epoch} per epoch); raise --epochs, lower "
            "--t / --t-fraction or raise --step")
    return out


def instant_soup(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
                 progress: bool = True, keep_round_masks: bool = False, variant: str | None = None) -> Ticket:
    """Draw a ticket at ``settings.prune.sparsity`` with ISP; see the module docstring.

    ``variant``: 'released', 'paper' or 'soup' (default: ``settings.prune.variant``).
    ``run_dir``: folder for resumable checkpoints (one per round) and the exported ticket, or None.
    ``keep_round_masks``: also keep every round's masks (main, denoisers, merged, final) in
    ``ticket.round_masks`` (memory: (N+3) masks per round).
    """
    if variant is not None:
        settings = dataclasses.replace(settings, prune=dataclasses.replace(settings.prune, variant=variant))
    ctx = setup(model, task, settings, run_dir, progress=progress, method=ISP, keep_round_masks=keep_round_masks)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr = ISPSettings.of(ctx.settings.prune)
    released = pr.variant == "released"
    n_rounds = ctx.plan["max_rounds"] if released else len(ctx.plan["levels"])
    names = [runs.round_name(i) for i in range(n_rounds)]
    first, state = ctx.resume_point(names)
    step = state["step"] if state else 0
    if ctx.keep_round_masks:  # the rounds finished before a resume: their masks from the run directory
        from instantsoup.masks import MaskSet

        for i in range(first):
            for f in sorted(ctx.run.path(names[i]).glob("mask_*.safetensors")):
                ctx.round_masks[f"round_{i:03d}/{f.name.removesuffix('.safetensors')}"] = MaskSet.load(f)
    scratch = model.clone() if pr.denoisers > 0 and not ctx.settings.run.ray else None  # Ray: each task has its own
    scratch_opt = ctx.new_optimizer(scratch) if scratch is not None else None
    t, total = ctx.plan["t"], ctx.plan["total_steps"]
    for i in range(first, n_rounds + released):  # released: the last i always stops for the budget
        # 1. train the main model t·(i+1) steps
        n = t * (i + 1)
        if released and step + n + _over_plan(ctx, pr.denoisers * pr.lookahead) >= total:
            # the lagging rounds ran out of budget: prune to S now
            ctx.log({"event": "budget_stop", "round": i, "step": step, "sparsity": mask_sparsity(model.masks)})
            break
        ctx.trainer.train(model, ctx.opt, step, step + n, stage="rounds", desc=f"ISP round {i}")
        step += n
        if released and pr.sparsity - mask_sparsity(model.masks) < pr.isp_margin():
            break
        # 2. a denoised mask for the next level
        if released:
            rec, extra = released_round(ctx, scratch, scratch_opt, i, step)
        else:
            rec, extra = denoised_round(ctx, scratch, scratch_opt, i, ctx.plan["levels"][i], step)
        ctx.log(rec)
        ctx.save(names[i], step, extra=extra, round=i)
    # 3. exactly S, then fine-tune the rest of the budget
    if mask_sparsity(model.masks) != pr.sparsity:
        model.set_masks(select(model, pr.sparsity))
    del scratch, scratch_opt
    stop = total - _over_plan(ctx)  # --match-steps: lagging rounds beyond the plan shorten the fine-tuning
    if stop < total:
        ctx.log({"event": "match_steps", "extra_denoiser_steps": total - stop, "finetune_stop": stop})
    best = ctx.finetune(step, stop, stage="finetune", desc="ISP fine-tune")
    return ctx.finish(best)


def _over_plan(ctx: Context, more: int = 0) -> int:
    """With ``match_steps``: denoiser steps (done + ``more``) beyond those planned, else 0."""
    if ctx.settings.train.match_steps <= 0:
        return 0
    planned = ctx.plan["planned_steps"] - ctx.plan["total_steps"]
    return max(0, ctx.cost.stage("denoisers").steps + more - planned)


def _keep_masks(ctx: Context, i: int, masks: dict[str, Any]) -> dict[str, Any]:
    """Round i's masks as files to store with the round (and in ``ctx.round_masks``), if asked."""
    if not ctx.keep_round_masks:
        return {}
    extra = {f"mask_{k}.safetensors": v for k, v in masks.items()}
    for k, v in extra.items():
        ctx.round_masks[f"round_{i:03d}/{k.removesuffix('.safetensors')}"] = v
    return extra


def released_round(ctx: Context, scratch: Any, scratch_opt: Any, i: int, step: int) -> tuple[dict, dict]:
    """Round i of the released script: N denoisers each prune a further ``step`` of the kept weights
    after their look-ahead; a weight is pruned only if every denoiser prunes it (``merge`` rule over
    the denoisers' masks, union by default; the main mask is not merged; no cut to a level)."""
    s, model, pr, tr = ctx.settings, ctx.model, ctx.settings.prune, ctx.settings.train
    before = mask_sparsity(model.masks)
    level = min(pr.sparsity, 1.0 - (1.0 - before) * (1.0 - pr.step))  # each denoiser's own sparsity
    peak = ctx.trainer.lr(step) / tr.lr  # the denoisers' peak lr: the main model's current lr
    masks, denoisers = [], []
    jobs = []
    for n in range(pr.denoisers):  # a fresh AdamW each, its warm-up restarted
        proto = draw_protocol(s, len(ctx.task.train), 1 + i, n)
        jobs.append(Denoiser(n, proto, level, pr.lookahead, proto.lr_mult * peak, 0, RELEASED_DENOISER_HORIZON,
                             fresh_optimizer=True, soup=False, desc=f"ISP round {i} denoiser {n}"))
    for job, out in zip(jobs, run_denoisers(ctx, scratch, scratch_opt, jobs)):
        m_n = out["mask"]
        masks.append(m_n)
        denoisers.append({"index": job.index, **job.proto.record(), "loss": out["loss"],
                          "sparsity": mask_sparsity(m_n)})
    # no denoisers: the main model's own magnitudes remove ``step`` (ISP with 0 denoisers, a control)
    final = merge(masks, pr.merge) if len(masks) > 1 else masks[0] if masks else select(model, level)
    model.set_masks(final)
    rec = {"event": "round", "round": i, "step": step, "sparsity_before": before, "level": level,
           "denoisers": denoisers, "merged": {"rule": pr.merge, "sparsity": mask_sparsity(final)},
           "sparsity_after": mask_sparsity(model.masks), "cost_steps": ctx.cost.total().steps}
    extra = _keep_masks(ctx, i, {"final": final, **{f"denoiser_{n}": m for n, m in enumerate(masks)}})
    log.info("ISP (released) round %d: sparsity %.4f -> %.4f (denoisers at %.4f)", i, before,
             rec["sparsity_after"], level)
    return rec, extra


def denoised_round(ctx: Context, scratch: Any, scratch_opt: Any, i: int, level: float,
                   step: int) -> tuple[dict, dict]:
    """Round i's mask at ``level``: main + N denoisers, merged and cut; applied to the main model.

    Returns the history record and the masks to store with the round.
    """
    s, model, pr = ctx.settings, ctx.model, ctx.settings.prune
    before = mask_sparsity(model.masks)
    m_main = select(model, level)
    masks = [m_main] if pr.merge_main or pr.denoisers == 0 else []
    soup = {k: np.zeros(v.shape, np.float32) for k, v in prunable(model).items()} if pr.variant == "soup" else None
    denoisers = []
    jobs = []
    for n in range(pr.denoisers):  # each starts from the main model's weights, masks and AdamW state
        proto = draw_protocol(s, len(ctx.task.train), 1 + i, n)
        jobs.append(Denoiser(n, proto, level, pr.lookahead, proto.lr_mult, step, None, fresh_optimizer=False,
                             soup=soup is not None, desc=f"ISP round {i} denoiser {n}"))
    for job, out in zip(jobs, run_denoisers(ctx, scratch, scratch_opt, jobs)):
        m_n = out["mask"]
        masks.append(m_n)
        if soup is not None:  # summed in denoiser order, whichever process ran them
            for k, v in out["abs"].items():
                soup[k] += v
        denoisers.append({"index": job.index, **job.proto.record(), "loss": out["loss"],
                          "sparsity": mask_sparsity(m_n), "overlap_main": overlap(m_n, m_main)})
    if soup is not None and pr.denoisers > 0:
        scores = {k: v / pr.denoisers for k, v in soup.items()}
    else:
        scores = score(model)
    merged = merge(masks, pr.merge) if len(masks) > 1 else masks[0]
    final = merge(masks, pr.merge, sparsity=level, scores=scores, current=model.masks) if len(masks) > 1 \
        else masks[0]
    rec = {"event": "round", "round": i, "step": step, "sparsity_before": before, "level": level,
           "denoisers": denoisers,
           "merged": {"rule": pr.merge, "sparsity": mask_sparsity(merged), "overlap_main": overlap(merged, m_main)},
           "mask": {"sparsity": mask_sparsity(final), "overlap_main": overlap(final, m_main),
                    "overlap_merged": overlap(final, merged)},
           "cost_steps": ctx.cost.total().steps}
    model.set_masks(final)
    rec["sparsity_after"] = mask_sparsity(model.masks)
    denoiser_masks = masks[1:] if pr.merge_main or pr.denoisers == 0 else masks
    extra = _keep_masks(ctx, i, {"main": m_main, "merged": merged, "final": final,
                                 **{f"denoiser_{n}": m for n, m in enumerate(denoiser_masks)}})
    log.info("ISP round %d: level %.4f, merged %.4f, jaccard(final, main) %.4f", i, level,
             rec["merged"]["sparsity"], rec["mask"]["overlap_main"]["jaccard"])
    return rec, extra


# ---- the denoisers of one round: in this process, or as Ray tasks (settings.run.ray) ----------------
@dataclasses.dataclass
class Denoiser:
    """One denoiser of a round: its protocol, the level its mask is cut at, its learning-rate schedule
    and whether its AdamW starts fresh (released) or from the main model's state (paper, soup)."""

    index: int
    proto: Any
    level: float
    lookahead: int
    lr_mult: float
    lr_offset: int
    schedule_total: int | None
    fresh_optimizer: bool
    soup: bool
    desc: str


def denoise(trainer: Trainer, scratch: Any, scratch_opt: Any, job: Denoiser) -> dict:
    """Train ``scratch`` (holding the main model's weights and masks; its optimizer prepared) for the
    look-ahead and return its mask at ``job.level``, its mean loss and, for the soup, its |weights|."""
    set_weight_decay(scratch_opt, job.proto.weight_decay)
    order = trainer.make_order(job.proto.seed, pool=job.proto.subset)
    loss = trainer.train(scratch, scratch_opt, 0, job.lookahead, stage="denoisers", order=order,
                         lr_mult=job.lr_mult, lr_offset=job.lr_offset, schedule_total=job.schedule_total,
                         seed=job.proto.seed, evaluate=False, desc=job.desc)
    return {"mask": select(scratch, job.level), "loss": loss,
            "abs": {k: np.abs(v) for k, v in prunable(scratch).items()} if job.soup else None}


def run_denoisers(ctx: Context, scratch: Any, scratch_opt: Any, jobs: list[Denoiser]) -> Iterator[dict]:
    """Every denoiser of a round, in order: one after another on ``scratch`` or, with
    ``settings.run.ray``, as parallel Ray tasks (the main model, its AdamW state and the task go
    through the object store, each task sends back its bit-packed mask, loss, |weights| for the soup
    and cost). Same seed and threads per task: bitwise the same masks either way."""
    if ctx.settings.run.ray and jobs:
        yield from _ray_denoisers(ctx, jobs)
        return
    for job in jobs:  # one at a time: the caller consumes each result before the next denoiser runs
        scratch.copy_from(ctx.model)
        if job.fresh_optimizer:
            scratch_opt.reset()
        else:
            scratch_opt.copy_from(ctx.opt)
        yield denoise(ctx.trainer, scratch, scratch_opt, job)


def _ray_denoisers(ctx: Context, jobs: list[Denoiser]) -> list[dict]:
    import instantsoup
    from instantsoup import parallel

    opt = ctx.opt
    opt_state = None if all(j.fresh_optimizer for j in jobs) else {
        "step": opt.step_count, "exp_avg": opt.exp_avg, "exp_avg_sq": opt.exp_avg_sq, "lr": opt.lr,
        "betas": opt.betas, "eps": opt.eps, "weight_decay": opt.weight_decay}
    tr = ctx.trainer
    outs = parallel.ray_map(_denoise_task, jobs, threads=instantsoup.get_num_threads(),
                            address=ctx.settings.run.ray,
                            shared=(ctx.model, opt_state, ctx.task, (tr.s, tr.total_steps, tr.warmup)))
    st = ctx.cost.stage("denoisers")
    for out in outs:
        for f in dataclasses.fields(st):
            setattr(st, f.name, getattr(st, f.name) + getattr(out["cost"], f.name))
        out["mask"] = out["mask"].unpack()
    return outs


def _denoise_task(model: Any, opt_state: dict | None, task: TaskData, schedule: tuple, job: Denoiser) -> dict:
    """A Ray task: ``model`` arrived as this task's own copy (the scratch model)."""
    from instantsoup.optim import AdamW
    from instantsoup.train import Trainer

    train_settings, total_steps, warmup = schedule
    trainer = Trainer(train_settings, task, progress=False)
    trainer.total_steps, trainer.warmup = total_steps, warmup
    opt = AdamW(model, lr=train_settings.lr, weight_decay=train_settings.weight_decay)
    if opt_state is not None and not job.fresh_optimizer:
        opt.load_state_dict(opt_state)
    out = denoise(trainer, model, opt, job)
    out["mask"] = out["mask"].pack()
    out["cost"] = trainer.cost.stage("denoisers")
    return out


ISP = Method("isp", instant_soup, ISPSettings, plan, "Instant Soup Pruning (Jaiswal et al., ICML 2023) in the "
             "variant chosen (--variant)")
