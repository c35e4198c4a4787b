"""IMP with rewinding against a hand-computed schedule: rewinding to step r retrains steps r..T at the
schedule position and data order of step r; every round's ticket is evaluated and recorded."""
import numpy as np
import pytest

from conftest import make_tiny_task
from instantsoup.config import PruneSettings, Settings, TrainSettings
from instantsoup.methods import imp
from instantsoup.methods.imp import level_records
from instantsoup.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(rewind_step, sparsity=0.6):
    return Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=1, warmup_steps=3),
                    prune=PruneSettings(method="imp", sparsity=sparsity, step=0.3, rewind_step=rewind_step))


@pytest.mark.parametrize("r", [0, 5])
def test_imp_rewinds_to_step_r_and_records_every_round(r, make_model, monkeypatch, tmp_path):
    calls = []
    orig = Trainer.train
    lr_seen = []

    def recording(self, model, opt, start, stop, **kw):
        sd = model.state_dict()
        calls.append({"start": start, "stop": stop, "opt_steps": opt.step_count, "order": kw.get("order"),
                      "schedule_total": kw.get("schedule_total"), "lr_offset": kw.get("lr_offset", 0),
                      "w": {n: np.array(sd[n]) for n in model.prunable_names},
                      "masks": {n: np.array(m) for n, m in model.masks.items()}})
        out = orig(self, model, opt, start, stop, **kw)
        calls[-1]["w_end"] = {n: np.array(v) for n, v in model.state_dict().items() if n in model.prunable_names}
        lr_seen.append([self.lr(k + kw.get("lr_offset", 0), kw.get("schedule_total")) for k in range(start, stop)])
        return out

    monkeypatch.setattr(Trainer, "train", recording)
    task = make_tiny_task(vocab=60)
    model = make_model()
    pre = {n: np.array(v) for n, v in model.state_dict().items() if n in model.prunable_names}
    t = imp(model, task, settings(r), run_dir=tmp_path / "run", progress=False)
    T = 18  # 3 epochs of ceil(86/16) = 6 steps
    levels = [0.3, 0.51, 0.6]  # 1-(1-0.3)^k, the last clipped to S
    # the hand-computed schedule: round 0 runs 0..T (split at r), rounds 1..3 retrain r..T
    expected = ([(0, r), (r, T)] if r else [(0, T)]) + [(r, T)] * 3
    assert [(c["start"], c["stop"]) for c in calls] == expected
    assert all(c["order"] is None and c["schedule_total"] is None and c["lr_offset"] == 0 for c in calls)
    # the learning rate of step k is the one schedule's (warm-up 3, linear decay to 0 at T), every round
    ref = Trainer(settings(r).train, task)
    for (a, b), lrs in zip(expected, lr_seen):
        assert lrs == [ref.lr(k) for k in range(a, b)]
    rewind = pre if r == 0 else calls[0]["w_end"]
    for c in calls[len(expected) - 3:]:  # rounds 1..3: fresh optimizer, kept weights = the step-r weights
        assert c["opt_steps"] == 0
        for n, m in c["masks"].items():
            np.testing.assert_array_equal(c["w"][n], np.where(m.astype(bool), rewind[n], 0))
    recs = level_records(t.history)
    assert [x["round"] for x in recs] == [0, 1, 2, 3]
    assert [x["sparsity"] for x in recs] == pytest.approx([0.0] + levels, abs=1e-3)
    assert [x["cost"]["steps"] for x in recs] == [T + k * (T - r) for k in range(4)]
    assert all("val_accuracy" in x and "test_accuracy" in x and x["cost"]["flops"] > 0 for x in recs)
    assert recs[-1]["val_accuracy"] == t.metrics["val_accuracy"]
    assert recs[-1]["test_accuracy"] == t.metrics["test_accuracy"]
    assert t.cost.total().steps == T + 3 * (T - r)
    # the records reach the run directory's history (the study reads them there or from ticket.json)
    from instantsoup import runs

    assert level_records(runs.read_history(tmp_path / "run")) == recs


def test_imp_round_tickets_use_their_best_validation_checkpoint(make_model):
    t = imp(make_model(), make_tiny_task(vocab=60), settings(0), progress=False)
    evals = [h for h in t.history if h["event"] == "eval"]
    for rec in level_records(t.history)[:-1]:
        stage = [h for h in evals if h["stage"] == f"imp_{rec['round']:02d}"]
        best = max(stage, key=lambda h: h["val_accuracy"])
        assert rec["best_step"] == best["step"] and rec["val_accuracy"] == best["val_accuracy"]


@pytest.mark.parametrize("method, knobs, expected", [
    ("dense", {}, 40), ("omp", {}, 40), ("omp", {"prune_after": "finetuned"}, 40), ("random", {}, 40),
    ("gmp", {}, 40), ("isp", {"variant": "soup"}, 40), ("isp", {"variant": "paper"}, 40),
    ("isp", {"variant": "released"}, 40), ("isp", {"variant": "soup", "denoisers": 0}, 40),
    ("isp", {"variant": "released", "denoisers": 0}, 40), ("imp", {}, 40), ("imp", {"rewind_step": 2}, 38),
    ("ims", {}, 40),
])
def test_match_steps_gives_every_method_the_same_total(method, knobs, expected, make_model):
    """--match-steps N: main budget + denoisers / ingredients / IMP rounds / OMP's dense stage = N (IMP
    with rewinding: the nearest total below N its integer schedule allows)."""
    from instantsoup.methods import METHODS
    from instantsoup.train import training_cost

    kw = dict(step=0.3, t=2, denoisers=2, lookahead=3, soup_size=2, soup_steps=3, margin=0.05)
    kw.update(knobs)
    s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=1, seed=1, match_steps=40),
                 prune=PruneSettings(method=method, sparsity=0.0 if method == "dense" else 0.6, **kw))
    t = METHODS[method](make_model(), make_tiny_task(vocab=60), s, progress=False)
    assert training_cost(t.cost)["steps"] == expected
    if method == "isp" and knobs.get("denoisers", 2):
        assert t.cost.stages["denoisers"].steps > 0
    assert abs(t.sparsity - (0.0 if method in ("dense", "ims") else 0.6)) < 2e-3
