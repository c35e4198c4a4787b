"""One-shot magnitude pruning (OMP), random pruning and dense fine-tuning: prune once, fine-tune."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instantsoup.methods.common import (Method, MethodSettings, Target, _api, budget, finished_ticket, prunable,
                                        select, setup)
from instantsoup.settings_base import SettingsError, setting
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData


@dataclass
class OMPSettings(Target):
    prune_after: str = setting("pretrained", "OMP: prune the 'pretrained' weights or the 'finetuned' ones "
                               "(after one budget of dense fine-tuning)", choices=("pretrained", "finetuned"))

    def validate(self) -> None:
        super().validate()
        if self.prune_after not in ("pretrained", "finetuned"):
            raise SettingsError(f"prune_after must be 'pretrained' or 'finetuned', got {self.prune_after!r}")


def plan(s: Any, steps_per_epoch: int) -> dict:
    """One budget of fine-tuning; two when the fine-tuned weights are pruned."""
    return budget(s, steps_per_epoch, passes=2 if s.prune.prune_after == "finetuned" else 1)


def one_shot(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
             progress: bool = True) -> Ticket:
    """Prune the pre-trained weights (or, with ``prune_after="finetuned"``, the weights after one
    budget of dense fine-tuning) to exactly S by global magnitude, then fine-tune one budget."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=OMP)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    total = ctx.plan["total_steps"]
    if settings.prune.prune_after == "finetuned":
        first, _ = ctx.resume_point(["dense"])
        if first == 0:
            ctx.trainer.train(model, ctx.opt, 0, total, stage="dense", desc="OMP dense")
            ctx.save("dense", total)
        ctx.opt.reset()
    model.set_masks(select(model, settings.prune.sparsity))
    ctx.log({"event": "prune", "level": settings.prune.sparsity, "source": settings.prune.prune_after})
    best = ctx.finetune(0, total, desc="OMP fine-tune")
    return ctx.finish(best)


def random_prune(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
                 progress: bool = True) -> Ticket:
    """Prune a uniformly random (1 - S) share of the prunable weights (seeded), then fine-tune."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=RANDOM)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    model.set_masks(_api().random_masks(prunable(model), settings.prune.sparsity, seed=settings.train.seed,
                                        current=model.masks))
    ctx.log({"event": "prune", "level": settings.prune.sparsity, "source": "random"})
    best = ctx.finetune(0, ctx.plan["total_steps"], desc="random fine-tune")
    return ctx.finish(best)


def dense(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
          progress: bool = True) -> Ticket:
    """Plain fine-tuning (no pruning) with the same optimizer, schedule and accounting."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=DENSE)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    best = ctx.finetune(0, ctx.plan["total_steps"], desc="dense fine-tune")
    return ctx.finish(best)


OMP = Method("omp", one_shot, OMPSettings, plan, "one-shot magnitude pruning of the pre-trained (or fine-tuned) "
             "weights, then fine-tuning")
RANDOM = Method("random", random_prune, Target, budget, "a seeded random mask, then fine-tuning")
DENSE = Method("dense", dense, MethodSettings, budget, "fine-tuning without pruning")
