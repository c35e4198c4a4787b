"""Iterative magnitude pruning with rewinding (the lottery ticket baseline, LTH / IMP).

    round 0: fine-tune the dense model over the budget, steps 0..T (keep the weights at step r)
    round k = 1..K: prune ``step`` of the kept weights by magnitude (level s_k = 1-(1-step)^k, the last
             one clipped to S), rewind the kept weights to their values at step r (r = ``rewind_step``;
             0 = the pre-trained weights), a fresh optimizer, and retrain steps r..T: the learning-rate
             schedule and the data order resume at their step-r positions (Frankle et al. 2020, "linear
             mode connectivity and the lottery ticket hypothesis"; Renda et al. 2020, weight rewinding)

Every round's ticket (round 0: dense) is evaluated when its training ends: the checkpoint with the
best validation score of that round (when ``select_best``), its validation and test metrics, its
sparsity and the training cost so far are one ``{"event": "level"}`` record of the history
(:func:`level_records` reads them back), so one IMP run gives the whole accuracy-vs-sparsity curve
at its natural levels. The returned ticket is the last round's, at exactly S.
Cost: T + K·(T − r) optimizer steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instantsoup import runs
from instantsoup.methods.common import Context, Method, Rounds, budget, finished_ticket, mask_sparsity, select, setup
from instantsoup.settings_base import SettingsError, setting
from instantsoup.ticket import Ticket
from instantsoup.train import Best, TaskData, copy_weights, correct_bits, training_cost


@dataclass
class IMPSettings(Rounds):
    rewind_step: int = setting(0, "IMP: rewind kept weights to their values after this many steps "
                               "(0 = the pre-trained weights)")

    def validate(self) -> None:
        super().validate()
        if self.rewind_step < 0:
            raise SettingsError(f"rewind_step must be >= 0, got {self.rewind_step}")


def plan(s: Any, steps_per_epoch: int) -> dict:
    """T + K·(T − r) steps: the dense round, then K rounds over steps r..T; r must lie inside T."""
    pr = IMPSettings.of(s.prune)
    levels = pr.levels()
    k = len(levels)
    out = budget(s, steps_per_epoch, passes=k + 1, other_steps=-k * pr.rewind_step)
    if pr.rewind_step >= out["total_steps"]:
        raise SettingsError(f"rewind_step {pr.rewind_step} is not inside the budget of {out['total_steps']} steps")
    out.update(levels=levels, rounds=k)
    return out


def imp(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
        progress: bool = True) -> Ticket:
    """Lottery ticket by IMP with rewinding; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=IMP)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr = ctx.settings.prune
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
        last = r == len(levels)
        stage = f"imp_{r:02d}"
        desc = f"IMP round {r}"
        if r > 0:  # rewind the kept weights, a fresh optimizer, resume schedule and data order at r
            masks = {k: v.copy() for k, v in model.masks.items()}
            model.load_state_dict(rewind)
            model.set_masks(masks)
            ctx.opt.reset()
        elif r_step > 0:
            ctx.trainer.train(model, ctx.opt, 0, r_step, stage=stage, desc=desc)
            rewind = copy_weights(model)
        if r == 0 and ctx.run:
            _save_rewind(ctx, rewind)
        if last:
            best = ctx.finetune(r_step, total, stage=stage, desc=desc)
            ctx.log(level_record(ctx, r, best))
        else:
            best = Best()
            ctx.trainer.train(model, ctx.opt, r_step, total, stage=stage, best=best, desc=desc)
            ctx.log(level_record(ctx, r, best))
            model.set_masks(select(model, levels[r]))
            ctx.log({"event": "round", "round": r, "level": levels[r], "steps": total - (r_step if r else 0),
                     "cost_steps": ctx.cost.total().steps})
            ctx.save(names[r], total, round=r)
    return ctx.finish(best)


def level_record(ctx: Context, r: int, best: Best) -> dict:
    """Round r's ticket: metrics of its best validation checkpoint (the weights it ended with when
    ``select_best`` is off or no evaluation happened), its sparsity and the training cost so far.
    The model's weights are left as they were."""
    model, tr = ctx.model, ctx.trainer
    current = None
    if ctx.settings.train.select_best and best.weights is not None:
        current = copy_weights(model)
        model.load_state_dict(best.weights)
    rec = {"event": "level", "round": r, "sparsity": mask_sparsity(model.masks), "best_step": best.step}
    rec.update({f"val_{k}": v for k, v in tr.evaluate(model, "validation").items()})
    rec.update({f"test_{k}": v for k, v in tr.evaluate(model, "test").items()})
    if not ctx.task.is_regression:  # per-example correctness: paired statistics over rounds (instantsoup study)
        rec.update({f"{p}_correct": correct_bits(model, ctx.task, split) for p, split in
                    (("val", "validation"), ("test", "test")) if getattr(ctx.task, split) is not None})
    rec["cost"] = training_cost(ctx.cost)
    if current is not None:
        model.load_state_dict(current)
    return rec


def level_records(history: list[dict]) -> list[dict]:
    """The per-round tickets of an IMP run (``ticket.history`` or ``runs.read_history(run_dir)``)."""
    return [h for h in history if h.get("event") == "level"]


def _save_rewind(ctx: Any, weights: dict) -> None:
    if ctx.run.done("rewind"):
        return
    with runs.atomic_dir(ctx.run.path("rewind")) as tmp:
        runs.save_arrays(runs.weights_file(tmp), weights)


IMP = Method("imp", imp, IMPSettings, plan, "iterative magnitude pruning with rewinding (lottery tickets), every "
             "round's ticket recorded")
