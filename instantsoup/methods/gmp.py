"""Gradual (progressive) magnitude pruning during one fine-tuning pass, without rewinding.

Every ``interval`` steps the kept weights are pruned by magnitude to the next level (each level
removes ``step`` of the kept weights; the last is S); after the last event training continues to the
end of the budget, tracking the best validation score at S.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instantsoup import runs
from instantsoup.methods.common import Method, Rounds, budget, finished_ticket, select, setup
from instantsoup.settings_base import SettingsError, setting
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData


@dataclass
class GMPSettings(Rounds):
    gmp_interval: int = setting(0, "GMP: steps between pruning events; 0 = spread the events over the first "
                                "gmp_end of the budget")
    gmp_end: float = setting(0.75, "GMP: fraction of the budget by which the target is reached")

    def validate(self) -> None:
        super().validate()
        if self.gmp_interval < 0 or not 0.0 < self.gmp_end <= 1.0:
            raise SettingsError(f"gmp_interval must be >= 0 and gmp_end in (0, 1], got "
                                f"{self.gmp_interval}, {self.gmp_end}")


def plan(s: Any, steps_per_epoch: int) -> dict:
    """One pass over the budget; a pruning event every ``interval`` steps must fit in it."""
    pr = GMPSettings.of(s.prune)
    out = budget(s, steps_per_epoch)
    levels, total = pr.levels(), out["total_steps"]
    end = int(pr.gmp_end * total)
    interval = pr.gmp_interval if pr.gmp_interval > 0 else max(1, end // max(1, len(levels)))
    if interval * len(levels) > total:
        raise SettingsError(f"budget too small for GMP: {len(levels)} pruning events every {interval} "
                            f"steps need {interval * len(levels)} steps, the budget is {total}")
    out.update(levels=levels, interval=interval)
    return out


def gmp(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
        progress: bool = True) -> Ticket:
    """Gradual magnitude pruning; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=GMP)
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


GMP = Method("gmp", gmp, GMPSettings, plan, "gradual magnitude pruning in one fine-tuning pass")
