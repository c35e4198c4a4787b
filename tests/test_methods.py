"""Every method end to end on a tiny model and task: exact sparsity, exports, history, resume.

A tiny generated BERT (conftest.build_tiny_bert: 2 layers, hidden 32, vocab 60) on a generated
token-id task (conftest.make_tiny_task), single-threaded.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_tiny_task, subprocess_env
from instantsoup import runs
from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings
from instantsoup.methods import METHODS, instant_soup
from instantsoup.train import Trainer

HERE = os.path.dirname(__file__)
pytestmark = pytest.mark.usefixtures("one_thread")


def settings(method, sparsity=0.6, **prune):
    kw = dict(step=0.3, t=2, denoisers=2, lookahead=3, soup_size=2, soup_steps=3)
    kw.update(prune)
    return Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=1),
                    prune=PruneSettings(method=method, sparsity=0.0 if method == "dense" else sparsity, **kw))


def kept_expected(masks, sparsity):
    total = sum(m.size for m in masks.values())
    return total, (1 - sparsity) * total


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_end_to_end(method, make_model, tmp_path):
    task = make_tiny_task(vocab=60)
    s = settings(method)
    model = make_model()
    ticket = METHODS[method](model, task, s, run_dir=tmp_path / "run", progress=False)
    target = 0.0 if method in ("dense", "ims") else 0.6
    total, expected = kept_expected(ticket.masks, target)
    kept = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
    assert abs(kept - expected) <= 1, (kept, expected)  # exact count (rounding of (1-S)·P)
    assert ticket.metrics["val_accuracy"] >= 0 and "test_accuracy" in ticket.metrics
    assert ticket.cost.total().steps > 0 and ticket.cost.total().flops > 0
    # exports: masks loadable with safetensors alone, masked weights exactly zero in the checkpoint
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tdir = tmp_path / "run" / "ticket"
    with safe_open(str(tdir / "masks.safetensors"), framework="np") as f:
        meta = f.metadata()
        masks = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["method"] == method and float(meta["sparsity"]) == pytest.approx(ticket.sparsity)
    assert set(masks) == set(model.prunable_names) and all(m.dtype == np.uint8 for m in masks.values())
    weights = load_file(str(tdir / "checkpoint" / "model.safetensors"))
    for k, m in masks.items():
        assert np.all(weights[k][m == 0] == 0), k
    assert (tdir / "checkpoint" / "config.json").exists()


def test_isp_history_shows_rounds_denoisers_and_merged_masks(make_model, tmp_path):
    task = make_tiny_task(vocab=60)
    s = settings("isp")
    ticket = instant_soup(make_model(), task, s, run_dir=tmp_path / "run", progress=False, keep_round_masks=True)
    rounds = [h for h in ticket.history if h["event"] == "round"]
    levels = s.prune.own().levels()
    assert [r["round"] for r in rounds] == list(range(len(levels))) and len(levels) == 3
    for r, level in zip(rounds, levels):
        assert r["level"] == pytest.approx(level)
        assert len(r["denoisers"]) == 2
        assert all(abs(d["sparsity"] - level) < 0.01 for d in r["denoisers"])
        assert r["merged"]["sparsity"] <= level + 1e-9  # the union keeps at least as many
        assert abs(r["mask"]["sparsity"] - level) < 0.01 and r["sparsity_after"] == r["mask"]["sparsity"]
        assert 0 < r["mask"]["overlap_main"]["jaccard"] <= 1
    keys = set(ticket.round_masks)
    for i in range(len(levels)):
        for part in ("main", "merged", "final", "denoiser_0", "denoiser_1"):
            assert f"round_{i:03d}/mask_{part}" in keys
            assert (tmp_path / "run" / f"round_{i:03d}" / f"mask_{part}.safetensors").exists()
    assert [h["step"] for h in rounds] == [2, 6, 12]  # t·(i+1) steps per round, continuing


def test_isp_union_with_main_scores_equals_magnitude_pruning(make_model):
    """Documented property: union ⊇ m_main and m_main = top-k(main) ⇒ adjust by main gives m_main."""
    ticket = instant_soup(make_model(), make_tiny_task(vocab=60), settings("isp", variant="paper"),
                          progress=False)
    for r in (h for h in ticket.history if h["event"] == "round"):
        assert r["mask"]["overlap_main"]["jaccard"] == 1.0


def test_rerun_of_a_finished_run_does_no_training(make_model, tmp_path, monkeypatch):
    task = make_tiny_task(vocab=60)
    a = METHODS["isp"](make_model(), task, settings("isp"), run_dir=tmp_path / "run", progress=False)

    def no_training(*a, **k):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(Trainer, "train", no_training)
    model = make_model()
    b = METHODS["isp"](model, task, settings("isp"), run_dir=tmp_path / "run", progress=False)
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
        np.testing.assert_array_equal(model.masks[k], a.masks[k])
    assert b.metrics == a.metrics


def test_bad_budget_refused_before_any_training(make_model, monkeypatch):
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SettingsError, match="budget too small"):
        instant_soup(make_model(), make_tiny_task(vocab=60), settings("isp", sparsity=0.95, t=5), progress=False)


def _child(run_dir, model_dir, slow):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "isp_child.py"), str(run_dir), str(model_dir),
                             "1" if slow else "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())


def test_killed_isp_run_resumes_to_the_same_mask(tmp_path, tiny_bert_dir):
    ref = _child(tmp_path / "ref", tiny_bert_dir, False)
    victim = _child(tmp_path / "run", tiny_bert_dir, True)
    deadline = time.time() + 60
    while not (tmp_path / "run" / "round_000").exists():  # wait until round 1 is under way
        assert victim.poll() is None, victim.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.08)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "run" / "ticket").exists() and not (tmp_path / "run" / "round_002").exists()
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err
    resumed = _child(tmp_path / "run", tiny_bert_dir, False)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    a = runs.load_arrays(tmp_path / "ref" / "ticket" / "masks.safetensors")
    b = runs.load_arrays(tmp_path / "run" / "ticket" / "masks.safetensors")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    wa = runs.load_arrays(tmp_path / "ref" / "ticket" / "checkpoint" / "model.safetensors")
    wb = runs.load_arrays(tmp_path / "run" / "ticket" / "checkpoint" / "model.safetensors")
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
    hist = runs.read_history(tmp_path / "run")
    assert [h["round"] for h in hist if h["event"] == "round"] == [0, 1, 2]


@pytest.mark.parametrize("rule", ["union", "intersection", "vote"])
@pytest.mark.parametrize("variant", ["paper", "soup"])
def test_isp_merge_rules_reach_each_level_exactly(rule, variant, make_model):
    ticket = instant_soup(make_model(), make_tiny_task(vocab=60), settings("isp", merge=rule, variant=variant,
                                                                          merge_main=rule != "union"),
                          progress=False)
    rounds = [h for h in ticket.history if h["event"] == "round"]
    total = sum(m.size for m in ticket.masks.values())
    for r in rounds:
        assert abs((1 - r["mask"]["sparsity"]) * total - (1 - r["level"]) * total) <= 1
        if rule == "intersection":
            assert r["merged"]["sparsity"] >= r["level"] - 1e-9
    assert abs(ticket.sparsity - 0.6) * total <= 1


def test_trainer_evaluates_every_n_steps_and_selects_on_validation_only(make_model):
    import dataclasses

    s = settings("dense")
    s = dataclasses.replace(s, train=dataclasses.replace(s.train, eval_every=2))
    ticket = METHODS["dense"](make_model(), make_tiny_task(vocab=60), s, progress=False)
    evals = [h for h in ticket.history if h["event"] == "eval"]
    total = 3 * 6  # 3 epochs of ceil(96·0.9/16) = 6 steps
    assert [h["step"] for h in evals] == list(range(2, total + 1, 2))
    assert all(not any(k.startswith("test_") for k in h) for h in evals)  # test split never looked at
    best = max(evals, key=lambda h: h["val_accuracy"])  # first maximum wins (strict improvement)
    assert ticket.metrics["best_step"] == best["step"]
    assert ticket.metrics["val_accuracy"] == pytest.approx(best["val_accuracy"])


def test_resume_false_starts_over(make_model, tmp_path, monkeypatch):
    import dataclasses

    task = make_tiny_task(vocab=60)
    s = settings("omp")
    METHODS["omp"](make_model(), task, s, run_dir=tmp_path / "run", progress=False)
    calls = []
    orig = Trainer.train

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(Trainer, "train", counting)
    s2 = dataclasses.replace(s, run=dataclasses.replace(s.run, resume=False))
    METHODS["omp"](make_model(), task, s2, run_dir=tmp_path / "run", progress=False)
    assert calls and (tmp_path / "run" / "ticket" / "ticket.json").exists()


@pytest.mark.parametrize("method, knobs", [
    ("imp", {"rewind_step": 2}),
    ("omp", {"prune_after": "finetuned"}),
    ("ims", {"soup": "greedy", "lr_mult_min": 0.5, "lr_mult_max": 2.0, "wd_choices": "0,0.1"}),
    ("isp", {"lr_mult_min": 0.5, "lr_mult_max": 2.0, "wd_choices": "0,0.1", "subset_fraction": 0.3}),
    ("gmp", {"gmp_interval": 3}),
])
def test_method_variants(method, knobs, make_model, tmp_path):
    task = make_tiny_task(vocab=60)
    ticket = METHODS[method](make_model(), task, settings(method, **knobs), run_dir=tmp_path / "run", progress=False)
    target = 0.0 if method == "ims" else 0.6
    total = sum(m.size for m in ticket.masks.values())
    assert abs(ticket.sparsity - target) * total <= 1
    if method == "isp":
        protos = [d for h in ticket.history if h["event"] == "round" for d in h["denoisers"]]
        assert len({d["lr_mult"] for d in protos}) == len(protos)  # drawn per denoiser
        assert {d["weight_decay"] for d in protos} <= {0.0, 0.1}
        assert all(d["subset_size"] == round(0.3 * len(task.train)) for d in protos)
    if method == "omp":
        assert ticket.cost.stages["dense"].steps == ticket.cost.stages["finetune"].steps  # two budgets
    if method == "imp":
        assert (tmp_path / "run" / "rewind").is_dir()


def test_python_api_ticket_names_its_base_model_and_copies_the_tokenizer(make_model, tiny_bert_dir, tmp_path):
    # a TaskData built in Python has no tokenizer_dir and Settings() no run.model: the ticket
    # falls back to the directory the model was loaded from
    from safetensors import safe_open

    METHODS["omp"](make_model(), make_tiny_task(vocab=60), settings("omp"), run_dir=tmp_path / "run",
                   progress=False)
    tdir = tmp_path / "run" / "ticket"
    with safe_open(str(tdir / "masks.safetensors"), framework="np") as f:
        assert f.metadata()["base_model"] == str(tiny_bert_dir)
    from instantsoup import MaskSet

    meta = MaskSet.load(tdir / "masks.safetensors").metadata  # the ticket's metadata fields
    assert meta["method"] == "omp" and meta["target_sparsity"] == 0.6 and meta["seeds"] == [1]
    assert meta["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3) and meta["instantsoup_version"]
    assert (tdir / "checkpoint" / "vocab.txt").read_text() == (tiny_bert_dir / "vocab.txt").read_text()


def test_resume_false_never_deletes_a_folder_that_is_not_a_run(make_model, tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained"))
    keep = tmp_path / "results" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    s = settings("omp")
    s = dataclasses.replace(s, run=dataclasses.replace(s.run, resume=False))
    with pytest.raises(SettingsError, match="not a run directory"):
        METHODS["omp"](make_model(), make_tiny_task(vocab=60), s, run_dir=tmp_path / "results", progress=False)
    assert keep.read_text() == "precious"


def test_each_method_function_runs_its_own_method_whatever_settings_say(make_model, monkeypatch):
    # Settings() defaults to method "isp": one_shot must still plan, run and label a one-shot ticket
    from instantsoup import methods

    s = settings("isp", sparsity=0.5)
    t = methods.one_shot(make_model(), make_tiny_task(vocab=60), s, progress=False)
    assert t.method == "omp" and abs(t.sparsity - 0.5) < 1e-3
    assert not any(h.get("event") == "round" for h in t.history)


@pytest.mark.parametrize("bad, msg", [
    (lambda s: setattr(s.train, "epochs", "3"), "TrainSettings.epochs: expected float"),
    (lambda s: setattr(s.prune, "denoisers", 2.0), "PruneSettings.denoisers: expected int"),
    (lambda s: setattr(s.prune, "method", "snip"), "unknown method 'snip'"),
])
def test_bad_settings_types_are_refused_with_a_message(bad, msg, make_model, monkeypatch):
    from instantsoup.methods import run_method

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained"))
    s = settings("isp")
    bad(s)
    with pytest.raises(SettingsError, match=msg):
        run_method(make_model(), make_tiny_task(vocab=60), s, progress=False)


def test_a_task_the_model_head_does_not_fit_is_refused_before_work(make_model, tiny_bert_dir, monkeypatch):
    import instantsoup

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained"))
    task = make_tiny_task(vocab=60)
    with pytest.raises(SettingsError, match="3 outputs but task 'tiny' has 2 labels"):
        instant_soup(instantsoup.load_model(str(tiny_bert_dir), num_labels=3), task, settings("isp"),
                     progress=False)
    task.validation.labels[3] = 2
    with pytest.raises(SettingsError, match="validation label 2 is outside"):
        instant_soup(make_model(), task, settings("isp"), progress=False)
    import dataclasses

    with pytest.raises(SettingsError, match="outside the model's vocabulary"):
        instant_soup(make_model(), make_tiny_task(vocab=80), settings("isp"), progress=False)
    long = make_tiny_task(vocab=60)
    long.test.input_ids[5] = np.ones(70, np.int64)
    with pytest.raises(SettingsError, match="test example 5 has 70 tokens"):
        instant_soup(make_model(), long, settings("isp"), progress=False)
    with pytest.raises(SettingsError, match="main_metric 'f1' is not among"):
        instant_soup(make_model(), dataclasses.replace(make_tiny_task(vocab=60), main_metric="f1"),
                     settings("isp"), progress=False)
    with pytest.raises(TypeError, match="expected an instantsoup.Settings"):
        instant_soup(make_model(), task, {"sparsity": 0.5}, progress=False)


def test_a_run_dir_of_other_settings_is_refused_not_resumed(make_model, tmp_path, monkeypatch):
    # the Python API takes any run_dir: the 0.5 ticket must not come back for a 0.7 request
    task = make_tiny_task(vocab=60)
    METHODS["omp"](make_model(), task, settings("omp", sparsity=0.5), run_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SettingsError, match="other settings .*prune"):
        METHODS["omp"](make_model(), task, settings("omp", sparsity=0.7), run_dir=tmp_path / "run",
                       progress=False)
    t = METHODS["omp"](make_model(), task, settings("omp", sparsity=0.5), run_dir=tmp_path / "run",
                       progress=False)  # the same settings: the finished ticket, no work
    assert abs(t.sparsity - 0.5) < 1e-3


def test_isp_without_denoisers_stores_no_denoiser_masks(make_model):
    s = settings("isp", denoisers=0, merge_main=False)
    t = instant_soup(make_model(), make_tiny_task(vocab=60), s, progress=False, keep_round_masks=True)
    assert t.round_masks and not [k for k in t.round_masks if "denoiser" in k]


def test_resumed_isp_ticket_keeps_the_round_masks_of_earlier_rounds(make_model, tmp_path):
    import shutil

    task, s = make_tiny_task(vocab=60), settings("isp")
    full = instant_soup(make_model(), task, s, run_dir=tmp_path / "run", progress=False, keep_round_masks=True)
    # an interruption after round 0: later rounds and the ticket never written
    for d in (tmp_path / "run").iterdir():
        if d.is_dir() and d.name not in ("round_000",):
            shutil.rmtree(d)
    resumed = instant_soup(make_model(), task, s, run_dir=tmp_path / "run", progress=False, keep_round_masks=True)
    assert set(resumed.round_masks) == set(full.round_masks) and any(k.startswith("round_000/") for k in full.round_masks)
    for k, m in full.round_masks.items():
        for n in m:
            np.testing.assert_array_equal(resumed.round_masks[k][n], m[n])
