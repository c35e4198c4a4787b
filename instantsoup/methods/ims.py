"""Instant Model Soup (IMS): a dense-to-dense variant of ISP.

    for k = 1..K: start from the pre-trained weights, magnitude-prune them to the ingredient's sparsity
             s_k (``soup_sparsities``: spread S/K, 2S/K, ..., S by default), train the sparse copy
             ``soup_steps`` steps on its own data subset and protocol, with a schedule of its own (warm-up
             = the main warm-up's share of the budget, times soup_steps; decay to 0 at soup_steps); fill its
             pruned entries back with the pre-trained values (the ingredient)
    soup = greedy (default: ingredients sorted by validation score, each added only if the soup's
           validation score does not drop) or the uniform average of the ingredients
    fine-tune the (dense) soup for the budget
The ticket is dense (sparsity 0); ``sparsity`` is the sparsest ingredient's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from instantsoup import runs
from instantsoup.methods.common import (Method, ProtocolSettings, Target, _api, budget, draw_protocol,
                                        finished_ticket, select, set_weight_decay, setup)
from instantsoup.settings_base import SettingsError, setting
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData, copy_weights


@dataclass
class IMSSettings(ProtocolSettings, Target):
    soup_size: int = setting(4, "IMS: weak models K in the soup")
    soup_steps: int = setting(100, "IMS: training steps of each weak model")
    soup_sparsities: str = setting("spread", "IMS: the ingredients' sparsities: 'spread' (evenly spaced up to "
                                   "--sparsity: S/K, 2S/K, ..., S), 'same' (all at --sparsity) or K comma-separated "
                                   "values")
    soup: str = setting("greedy", "IMS: 'greedy' (ingredients by validation score, each kept only if the soup's "
                        "validation score does not drop) or 'uniform' soup", choices=("uniform", "greedy"))

    def ingredient_sparsities(self) -> list[float]:
        """The sparsity of each of the ``soup_size`` ingredients (see ``soup_sparsities``)."""
        if self.soup_sparsities == "same":
            return [self.sparsity] * self.soup_size
        if self.soup_sparsities == "spread":
            return [self.sparsity * (k + 1) / self.soup_size for k in range(self.soup_size)]
        return [float(x) for x in self.soup_sparsities.split(",")]

    def validate(self) -> None:
        super().validate()
        if self.soup_size < 1 or self.soup_steps < 1:
            raise SettingsError(f"soup_size and soup_steps must be >= 1, got {self.soup_size}, {self.soup_steps}")
        try:
            ing = self.ingredient_sparsities()
        except ValueError:
            raise SettingsError(f"soup_sparsities must be 'spread', 'same' or comma-separated numbers, got "
                                f"{self.soup_sparsities!r}") from None
        if len(ing) != self.soup_size or not all(0.0 <= x < 1.0 for x in ing):
            raise SettingsError(f"soup_sparsities: need {self.soup_size} values in [0, 1) (one per ingredient), "
                                f"got {self.soup_sparsities!r}")
        if self.soup not in ("uniform", "greedy"):
            raise SettingsError(f"soup must be 'uniform' or 'greedy', got {self.soup!r}")


def plan(s: Any, steps_per_epoch: int) -> dict:
    """The main budget, plus K·soup_steps steps of the ingredients."""
    return budget(s, steps_per_epoch, other_steps=s.prune.soup_size * s.prune.soup_steps)


def instant_model_soup(model: Any, task: TaskData, settings: Any, *, run_dir: Any = None,
                       progress: bool = True) -> Ticket:
    """IMS; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method=IMS)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr, tr = IMSSettings.of(settings.prune), settings.train
    pre = copy_weights(model)
    ones = {k: np.ones_like(v) for k, v in model.masks.items()}
    names = [f"ingredient_{k:02d}" for k in range(pr.soup_size)]
    levels = pr.ingredient_sparsities()
    warmup = round(ctx.plan["warmup"] * pr.soup_steps / ctx.plan["total_steps"])
    ingredients, scores = [], []
    for k, name in enumerate(names):
        if ctx.run and ctx.run.done(name):
            w = runs.load_arrays(runs.weights_file(ctx.run.path(name)))
            st = runs.read_json(runs.state_file(ctx.run.path(name)))
            ctx.trainer.history[:] = st["history"]
            ctx.trainer.cost.stages = type(ctx.cost).from_dict(st["cost"]).stages
            ingredients.append(w)
            scores.append(st["score"])
            continue
        proto = draw_protocol(settings, len(task.train), 0, k)
        model.set_masks(ones)
        model.load_state_dict(pre)
        mask = select(model, levels[k])
        model.set_masks(mask)
        ctx.opt.reset()
        prev_wd = set_weight_decay(ctx.opt, proto.weight_decay)
        order = ctx.trainer.make_order(proto.seed, pool=proto.subset)
        ctx.trainer.train(model, ctx.opt, 0, pr.soup_steps, stage="ingredients", order=order,
                          lr_mult=proto.lr_mult, seed=proto.seed, evaluate=False,
                          schedule_total=pr.soup_steps, warmup=warmup, desc=f"IMS ingredient {k}")
        set_weight_decay(ctx.opt, prev_wd)
        w = copy_weights(model)
        for n, m in mask.items():  # pruned entries: back to the pre-trained values
            w[n] = np.where(np.asarray(m, bool), w[n], pre[n])
        model.set_masks(ones)
        model.load_state_dict(w)
        sc = ctx.trainer.evaluate(model, "validation")[task.main_metric]
        ingredients.append(w)
        scores.append(sc)
        ctx.log({"event": "ingredient", "index": k, **proto.record(), "sparsity": levels[k], "warmup": warmup,
                 "val_score": sc})
        ctx.save(name, 0, score=sc, index=k)
    model.set_masks(ones)
    if pr.soup == "uniform":
        soup = _api().average_weights(ingredients)
        chosen = list(range(len(ingredients)))
    else:
        rank = sorted(range(len(ingredients)), key=lambda i: -scores[i])
        chosen, soup, best = [rank[0]], ingredients[rank[0]], scores[rank[0]]
        for i in rank[1:]:
            cand = _api().average_weights([ingredients[j] for j in chosen + [i]])
            model.load_state_dict(cand)
            sc = ctx.trainer.evaluate(model, "validation")[task.main_metric]
            if sc >= best:
                chosen, soup, best = chosen + [i], cand, sc
    model.load_state_dict(soup)
    ctx.log({"event": "soup", "rule": pr.soup, "chosen": chosen,
             "val_score": ctx.trainer.evaluate(model, "validation")[task.main_metric]})
    ctx.opt.reset()
    best = ctx.finetune(0, ctx.plan["total_steps"], desc="IMS fine-tune")
    return ctx.finish(best)


IMS = Method("ims", instant_model_soup, IMSSettings, plan, "Instant Model Soup: a greedy soup of sparse weak models, "
             "fine-tuned dense")
