"""Instant Soup Pruning (Jaiswal et al., ICML 2023), DESIGN.md section 2.

    for round i = 0, 1, ..., k-1 (levels s_1 < ... < s_k = S):
        train the main model t·(i+1) steps (continuing; no rewinding)
        m_0 = select(main, s_{i+1})                               # the main model's own magnitude mask
        for n = 1..N:                                             # denoisers on ONE scratch model
            scratch <- main (weights, mask, optimizer state)
            train scratch C steps on its own data subset / seed / lr multiplier / weight decay
            m_n = select(scratch, s_{i+1})
        mask = merge(m_0..m_N, rule) cut to exactly s_{i+1} by the adjustment scores
        apply mask to the main model
    prune to exactly S (a no-op when the last level is S); fine-tune for the rest of the budget

Adjustment scores: ``adjust_scores="main"`` uses the main weights' magnitudes, as DESIGN.md
describes. Note that with ``merge="union"`` and ``merge_main=True`` this reproduces m_0 exactly (the
union contains m_0 and m_0 is the top-k of the main magnitudes), i.e. the denoisers then change
nothing. The default ``adjust_scores="soup"`` ranks the union by the mean |w| of the denoisers'
weights (the "soup" of the weak models), which is where the denoisers' evidence enters.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from instantsoup import runs
from instantsoup.config import Settings
from instantsoup.methods.common import (Context, draw_protocol, finished_ticket, mask_sparsity, merge,
                                        overlap, prunable, score, select, set_weight_decay, setup)
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData

log = logging.getLogger(__name__)


def instant_soup(model: Any, task: TaskData, settings: Settings, *, run_dir: Any = None,
                 progress: bool = True, keep_round_masks: bool = False) -> Ticket:
    """Draw a ticket at ``settings.prune.sparsity`` with ISP; see the module docstring.

    ``run_dir``: folder for resumable checkpoints (one per round) and the exported ticket, or None.
    ``keep_round_masks``: also keep every round's masks (main, denoisers, merged, final) in
    ``ticket.round_masks`` (memory: (N+3) masks per round).
    """
    ctx = setup(model, task, settings, run_dir, progress=progress, method="isp",
                keep_round_masks=keep_round_masks)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr = settings.prune
    levels, t = ctx.plan["levels"], ctx.plan["t"]
    names = [runs.round_name(i) for i in range(len(levels))]
    first, state = ctx.resume_point(names)
    step = state["step"] if state else 0
    if ctx.keep_round_masks:  # the rounds finished before a resume: their masks from the run directory
        from instantsoup.masks import MaskSet

        for i in range(first):
            for f in sorted(ctx.run.path(names[i]).glob("mask_*.safetensors")):
                ctx.round_masks[f"round_{i:03d}/{f.name.removesuffix('.safetensors')}"] = MaskSet.load(f)
    scratch = scratch_opt = None
    for i in range(first, len(levels)):
        # 1. train the main model t·(i+1) steps
        n = t * (i + 1)
        ctx.trainer.train(model, ctx.opt, step, step + n, stage="rounds", desc=f"ISP round {i}")
        step += n
        # 2. a denoised mask for the next level
        if scratch is None:
            scratch = model.clone()
            scratch_opt = ctx.new_optimizer(scratch)
        rec, extra = denoised_round(ctx, scratch, scratch_opt, i, levels[i], step)
        ctx.log(rec)
        ctx.save(names[i], step, extra=extra, round=i)
    # 3. exactly S, then fine-tune the rest of the budget
    if mask_sparsity(model.masks) != pr.sparsity:
        model.set_masks(select(model, pr.sparsity))
    del scratch, scratch_opt
    best = ctx.finetune(step, ctx.plan["total_steps"], stage="finetune", desc="ISP fine-tune")
    return ctx.finish(best)


def denoised_round(ctx: Context, scratch: Any, scratch_opt: Any, i: int, level: float,
                   step: int) -> tuple[dict, dict]:
    """Round i's mask at ``level``: main + N denoisers, merged and cut; applied to the main model.

    Returns the history record and the masks to store with the round.
    """
    s, model, pr = ctx.settings, ctx.model, ctx.settings.prune
    before = mask_sparsity(model.masks)
    m_main = select(model, level)
    masks = [m_main] if pr.merge_main or pr.denoisers == 0 else []
    soup = {k: np.zeros(v.shape, np.float32) for k, v in prunable(model).items()} if pr.adjust_scores == "soup" else None
    denoisers = []
    for n in range(pr.denoisers):
        proto = draw_protocol(s, len(ctx.task.train), 1 + i, n)
        scratch.copy_from(model)
        scratch_opt.copy_from(ctx.opt)
        set_weight_decay(scratch_opt, proto.weight_decay)
        order = ctx.trainer.make_order(proto.seed, pool=proto.subset)
        loss = ctx.trainer.train(scratch, scratch_opt, 0, pr.lookahead, stage="denoisers", order=order,
                                 lr_mult=proto.lr_mult, lr_offset=step, seed=proto.seed, evaluate=False,
                                 desc=f"ISP round {i} denoiser {n}")
        m_n = select(scratch, level)
        masks.append(m_n)
        if soup is not None:
            for k, v in prunable(scratch).items():
                soup[k] += np.abs(v)
        denoisers.append({"index": n, **proto.record(), "loss": loss, "sparsity": mask_sparsity(m_n),
                          "overlap_main": overlap(m_n, m_main)})
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
    extra = {}
    if ctx.keep_round_masks:
        extra = {"mask_main.safetensors": m_main, "mask_merged.safetensors": merged,
                 "mask_final.safetensors": final}
        extra.update({f"mask_denoiser_{n}.safetensors": m for n, m in
                      enumerate(masks[1:] if pr.merge_main or pr.denoisers == 0 else masks)})
        for k, v in extra.items():
            ctx.round_masks[f"round_{i:03d}/{k.removesuffix('.safetensors')}"] = v
    log.info("ISP round %d: level %.4f, merged %.4f, jaccard(final, main) %.4f", i, level,
             rec["merged"]["sparsity"], rec["mask"]["overlap_main"]["jaccard"])
    return rec, extra
