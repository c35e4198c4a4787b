"""Iterative magnitude pruning with rewinding (the lottery ticket baseline, LTH / IMP).

    round 0: fine-tune the dense model for the full budget (E epochs)
    round r = 1..k: prune ``step`` of the kept weights by magnitude (level s_r), rewind the kept weights
             to the pre-trained values (or to their values after ``rewind_step`` steps), reset the
             optimizer, fine-tune E epochs again (the schedule restarts)
The ticket is the model of the last round (at exactly S). Cost: (k+1)·E epochs.
"""
from __future__ import annotations

from typing import Any

from instantsoup import runs
from instantsoup.config import Settings
from instantsoup.methods.common import finished_ticket, select, setup
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData, copy_weights


def imp(model: Any, task: TaskData, settings: Settings, *, run_dir: Any = None,
        progress: bool = True) -> Ticket:
    """Lottery ticket by IMP with rewinding; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method="imp")
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr = settings.prune
    levels = ctx.plan["levels"]
    total = ctx.plan["total_steps"]
    r_step = pr.rewind_step
    names = [runs.round_name(r) for r in range(len(levels))]  # round r done = trained + pruned to levels[r]
    first, state = ctx.resume_point(names)
    rewind = None
    if first > 0:
        rewind = runs.load_arrays(runs.weights_file(ctx.run.path("rewind")))
    elif r_step == 0:
        rewind = copy_weights(model)
    best = None
    for r in range(first, len(levels) + 1):
        if r > 0:  # rewind the kept weights, reset the optimizer
            masks = {k: v.copy() for k, v in model.masks.items()}
            model.load_state_dict(rewind)
            model.set_masks(masks)
            ctx.opt.reset()
        last = r == len(levels)
        stage = f"imp_{r:02d}"
        if r == 0 and r_step > 0:
            ctx.trainer.train(model, ctx.opt, 0, r_step, stage=stage, schedule_total=total, desc="IMP round 0")
            rewind = copy_weights(model)
            ctx.trainer.train(model, ctx.opt, r_step, total, stage=stage, schedule_total=total, desc="IMP round 0")
        elif last:
            best = ctx.finetune(0, total, stage=stage, schedule_total=total, desc=f"IMP round {r}")
        else:
            ctx.trainer.train(model, ctx.opt, 0, total, stage=stage, schedule_total=total, desc=f"IMP round {r}")
        if r == 0 and ctx.run:
            _save_rewind(ctx, rewind)
        if not last:
            model.set_masks(select(model, levels[r]))
            ctx.log({"event": "round", "round": r, "level": levels[r], "steps": total,
                     "cost_steps": ctx.cost.total().steps})
            ctx.save(names[r], total, round=r)
    return ctx.finish(best)


def _save_rewind(ctx: Any, weights: dict) -> None:
    if ctx.run.done("rewind"):
        return
    with runs.atomic_dir(ctx.run.path("rewind")) as tmp:
        runs.save_arrays(runs.weights_file(tmp), weights)
