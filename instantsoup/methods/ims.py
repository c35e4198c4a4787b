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

from typing import Any

import numpy as np

from instantsoup import runs
from instantsoup.config import Settings
from instantsoup.methods.common import (_api, draw_protocol, finished_ticket, select, set_weight_decay,
                                        setup)
from instantsoup.ticket import Ticket
from instantsoup.train import TaskData, copy_weights


def instant_model_soup(model: Any, task: TaskData, settings: Settings, *, run_dir: Any = None,
                       progress: bool = True) -> Ticket:
    """IMS; see the module docstring."""
    ctx = setup(model, task, settings, run_dir, progress=progress, method="ims")
    done = finished_ticket(ctx)
    if done is not None:
        return done
    pr, tr = settings.prune, settings.train
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
