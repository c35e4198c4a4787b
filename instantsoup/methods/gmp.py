"""Gradual (progressive) magnitude pruning during one fine-tuning pass, without rewinding.

Every ``interval`` steps the kept weights are pruned by magnitude to the next level (each level
removes ``step`` of the kept weights; the last is S); after the last event training continues to the
end of the budget, tracking the best validation score at S.
"""
from __future__ import annotations

from typing import Any

from instantsoup import runs
from instantsoup.config import Settings
from instantsoup.methods.common import finished_ticket, select, setup
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData


def gmp(model: Any, task: TaskData, settings: Settings, *, run_dir: Any = None,
        progress: bool = True) -> Ticket:
    """Gradual magnitude pruning; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method="gmp")
    done = finished_ticket(ctx)
    if done is not None:
        return done
    levels, interval = ctx.plan["levels"], ctx.plan["interval"]
    names = [runs.round_name(j) for j in range(len(levels))]
    first, state = ctx.resume_point(names)
    step = state["step"] if state else 0
    for j in range(first, len(levels)):
        ctx.trainer.train(model, ctx.opt, step, (j + 1) * interval, stage="gmp", desc=f"GMP event {j}")
        step = (j + 1) * interval
        model.set_masks(select(model, levels[j]))
        ctx.log({"event": "round", "round": j, "step": step, "level": levels[j],
                 "cost_steps": ctx.cost.total().steps})
        ctx.save(names[j], step, round=j)
    best = ctx.finetune(step, ctx.plan["total_steps"], stage="finetune", desc="GMP fine-tune")
    return ctx.finish(best)
