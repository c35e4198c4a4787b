"""IMS: ingredients at spread sparsities, each with a warm-up scaled to its own steps, pruned entries
refilled with the pre-trained values, greedy soup on validation by default."""
import numpy as np
import pytest

from conftest import make_tiny_task
from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings
from instantsoup.methods import instant_model_soup
from instantsoup.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ims_ingredients_by_hand(make_model, monkeypatch):
    calls, lrs = [], []
    orig = Trainer.train

    def recording(self, model, opt, start, stop, **kw):
        kept = sum(int(np.count_nonzero(m)) for m in model.masks.values())
        calls.append({"stage": kw.get("stage"), "density": kept / sum(m.size for m in model.masks.values())})
        lrs.append([self.lr(k, kw.get("schedule_total"), kw.get("warmup")) * kw.get("lr_mult", 1.0)
                    for k in range(start, stop)])
        return orig(self, model, opt, start, stop, **kw)

    monkeypatch.setattr(Trainer, "train", recording)
    s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=1, warmup_steps=6),
                 prune=PruneSettings(method="ims", sparsity=0.6, soup_size=2, soup_steps=6))
    model = make_model()
    pre = {k: np.array(v) for k, v in model.state_dict().items()}
    t = instant_model_soup(model, make_tiny_task(vocab=60), s, progress=False)
    ing = [c for c, _ in zip(calls, lrs) if c["stage"] == "ingredients"]
    assert [c["density"] for c in ing] == pytest.approx([0.7, 0.4], abs=1e-3)  # spread: S/2, S
    # warm-up 6 of 18 main steps -> 2 of the ingredient's 6; then linear decay to 0 at step 6
    for lr in lrs[:2]:
        assert lr == pytest.approx([5e-3 * x for x in (1 / 2, 2 / 2, 4 / 4, 3 / 4, 2 / 4, 1 / 4)])
    soup = [h for h in t.history if h["event"] == "soup"][0]
    assert soup["rule"] == "greedy" and t.sparsity == 0.0
    assert [h["sparsity"] for h in t.history if h["event"] == "ingredient"] == pytest.approx([0.3, 0.6])


def test_ims_ingredient_refills_pruned_entries_with_pretrained_values(make_model, monkeypatch):
    import instantsoup
    import instantsoup.methods.ims as ims

    trained, souped = [], []
    copy, average = ims.copy_weights, instantsoup.average_weights

    def spy_copy(model):
        w = copy(model)
        trained.append(({k: np.array(v, bool) for k, v in model.masks.items()}, w))
        return w

    def spy_average(ws):
        souped.append([{k: np.array(v) for k, v in w.items()} for w in ws])
        return average(ws)

    monkeypatch.setattr(ims, "copy_weights", spy_copy)
    monkeypatch.setattr(instantsoup, "average_weights", spy_average)
    s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=1, seed=1),
                 prune=PruneSettings(method="ims", sparsity=0.6, soup_size=2, soup_steps=3, soup="uniform",
                                     soup_sparsities="same"))
    model = make_model()
    pre = {k: np.array(v) for k, v in model.state_dict().items()}
    instant_model_soup(model, make_tiny_task(vocab=60), s, progress=False)
    (_, pre_copy), *after = trained  # the first copy is of the pre-trained weights
    assert len(after) == 2 and len(souped) == 1
    for (masks, w), ingredient in zip(after, souped[0]):
        assert any(not m.all() for m in masks.values())
        for n, m in masks.items():  # kept entries: trained; pruned entries: pre-trained, refilled
            np.testing.assert_array_equal(ingredient[n][m], w[n][m])
            np.testing.assert_array_equal(ingredient[n][~m], pre[n][~m])
    with pytest.raises(SettingsError, match="soup_sparsities"):
        PruneSettings(method="ims", soup_size=2, soup_sparsities="0.1").validate()
    with pytest.raises(SettingsError, match="soup_sparsities"):
        PruneSettings(method="ims", soup_size=2, soup_sparsities="a,b").validate()
