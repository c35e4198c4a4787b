"""ISP's three variants pinned on a tiny model: every round's mask recomputed by hand from the masks and
weights the round saw (docs/experiments.md, "ISP variants")."""
import numpy as np
import pytest

from conftest import make_tiny_task
from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings, check_budget
from instantsoup.methods import instant_soup
from instantsoup.methods.isp import RELEASED_DENOISER_HORIZON
from instantsoup.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(variant, sparsity=0.6, epochs=3, **prune):
    kw = dict(step=0.3, t=2, denoisers=2, lookahead=3) if variant != "released" else dict(step=0.5, t=1, denoisers=2,
                                                                                          lookahead=3)
    kw.update(prune)
    return Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=epochs, seed=1, warmup_steps=4),
                    prune=PruneSettings(method="isp", sparsity=sparsity, variant=variant, **kw))


def spy(monkeypatch):
    """Record every Trainer.train call: its stage, kwargs, optimizer step count before, and for the
    denoisers the prunable weights after the look-ahead."""
    calls = []
    orig = Trainer.train

    def recording(self, model, opt, start, stop, **kw):
        rec = {"stage": kw.get("stage"), "start": start, "stop": stop, "opt_steps": opt.step_count,
               "opt_wd": opt.weight_decay, **{k: kw.get(k) for k in ("lr_mult", "lr_offset", "schedule_total")}}
        out = orig(self, model, opt, start, stop, **kw)
        if kw.get("stage") == "denoisers":
            sd = model.state_dict()
            rec["weights"] = {n: np.array(sd[n]) for n in model.prunable_names}
        calls.append(rec)
        return out

    monkeypatch.setattr(Trainer, "train", recording)
    return calls


def kept(m):
    return sum(int(np.count_nonzero(v)) for v in m.values())


def size(m):
    return sum(v.size for v in m.values())


def flat(m, names):
    return np.concatenate([np.asarray(m[n], dtype=np.float64).ravel() for n in names])


def test_paper_is_magnitude_pruning_on_isp_schedule(make_model):
    """Algorithm 2 literally: union with m_main, cut by the main magnitudes = m_main; the denoisers change
    nothing, so the ticket equals ISP with 0 denoisers bit for bit."""
    task = make_tiny_task(vocab=60)
    a = instant_soup(make_model(), task, settings("paper"), progress=False, keep_round_masks=True)
    b = instant_soup(make_model(), task, settings("paper", denoisers=0), progress=False)
    rounds = [h for h in a.history if h["event"] == "round"]
    assert len(rounds) == 3
    for r in rounds:
        i = r["round"]
        for n in a.masks:
            np.testing.assert_array_equal(a.round_masks[f"round_{i:03d}/mask_final"][n],
                                          a.round_masks[f"round_{i:03d}/mask_main"][n])
    for n in a.weights:
        np.testing.assert_array_equal(a.weights[n], b.weights[n])
    for n in a.masks:
        np.testing.assert_array_equal(a.masks[n], b.masks[n])


def test_soup_cuts_the_union_by_the_mean_magnitude_of_the_denoisers(make_model, monkeypatch):
    calls = spy(monkeypatch)
    t = instant_soup(make_model(), make_tiny_task(vocab=60), settings("soup"), progress=False, keep_round_masks=True)
    names = sorted(t.masks)
    den = [c for c in calls if c["stage"] == "denoisers"]
    main = [c for c in calls if c["stage"] == "rounds"]
    assert len(den) == 6 and len(main) == 3
    for i, level in enumerate(settings("soup").prune.own().levels()):
        rm = {k.split("/")[1].removeprefix("mask_"): v for k, v in t.round_masks.items() if k.startswith(f"round_{i:03d}/")}
        union = np.maximum.reduce([flat(rm[k], names) for k in ("main", "denoiser_0", "denoiser_1")])
        score = (np.abs(flat(den[2 * i]["weights"], names)) + np.abs(flat(den[2 * i + 1]["weights"], names))) / 2
        final = flat(rm["final"], names)
        k = int(round((1 - level) * len(final)))
        assert abs(final.sum() - k) <= 1 and np.all(final <= union)  # exact level, inside the union
        # by hand: the kept ones are the highest soup scores of the union
        assert score[(final == 1)].min() >= score[(union == 1) & (final == 0)].max()


def test_soup_denoisers_continue_main_optimizer_and_schedule(make_model, monkeypatch):
    calls = spy(monkeypatch)
    instant_soup(make_model(), make_tiny_task(vocab=60), settings("soup"), progress=False)
    step = 0
    for c in calls:
        if c["stage"] == "rounds":
            step = c["stop"]
            main_opt_steps = c["opt_steps"] + (c["stop"] - c["start"])
        elif c["stage"] == "denoisers":
            assert c["lr_offset"] == step and c["opt_steps"] == main_opt_steps and c["schedule_total"] is None


def test_released_rounds_by_hand(make_model, monkeypatch):
    """Each denoiser: main weights and mask, a fresh AdamW, restarted warm-up peaking at the main model's
    current lr, a further ``step`` pruned; union of the denoisers' kept sets (no cut); rounds until within
    margin of S, then one magnitude prune of the main weights to S."""
    calls = spy(monkeypatch)
    s = settings("released", epochs=4)
    t = instant_soup(make_model(), make_tiny_task(vocab=60), s, progress=False, keep_round_masks=True)
    names = sorted(t.masks)
    P = size(t.masks)
    rounds = [h for h in t.history if h["event"] == "round"]
    assert rounds and abs(t.sparsity - 0.6) * P <= 1
    tr = Trainer(s.train, make_tiny_task(vocab=60))
    tr.total_steps = check_budget(s, tr.steps_per_epoch)["total_steps"]
    prev = np.ones(P)
    den = [c for c in calls if c["stage"] == "denoisers"]
    for i, r in enumerate(rounds):
        rm = {k.split("/")[1].removeprefix("mask_"): v for k, v in t.round_masks.items() if k.startswith(f"round_{i:03d}/")}
        d0, d1, final = (flat(rm[k], names) for k in ("denoiser_0", "denoiser_1", "final"))
        assert r["sparsity_before"] == pytest.approx(1 - prev.sum() / P)
        assert 0.6 - r["sparsity_before"] >= 0.05  # the stop rule was not met yet
        level = min(0.6, 1 - (1 - r["sparsity_before"]) * 0.5)
        for d in (d0, d1):  # a further 50% of the kept weights, among the kept ones
            assert np.all(d <= prev) and abs(d.sum() - (1 - level) * P) <= 1
        np.testing.assert_array_equal(final, np.maximum(d0, d1))  # union of the denoisers, main not included
        assert r["sparsity_after"] <= level + 1e-12  # no cut: the sparsity lags
        for c in den[2 * i:2 * i + 2]:
            assert c["opt_steps"] == 0 and not c["lr_offset"] and c["schedule_total"] == RELEASED_DENOISER_HORIZON
            assert c["lr_mult"] == pytest.approx(tr.lr(r["step"]) / s.train.lr)  # peak: the main's current lr
        prev = final
    # stopped because within the margin (the main model trained once more before checking)
    assert 0.6 - rounds[-1]["sparsity_after"] < 0.05
    main = [c for c in calls if c["stage"] == "rounds"]
    assert [c["stop"] - c["start"] for c in main][:len(rounds) + 1] == [i + 1 for i in range(len(rounds) + 1)]
    # the final prune to S is magnitude pruning of the main weights inside the last round's mask
    assert np.all(flat(t.masks, names) <= prev)


def test_released_with_no_denoisers_prunes_step_of_the_main_weights(make_model):
    t = instant_soup(make_model(), make_tiny_task(vocab=60), settings("released", epochs=4, denoisers=0, step=0.3,
                                                                      t=1), progress=False)
    rounds = [h for h in t.history if h["event"] == "round"]
    levels = [0.3, 0.51, 0.6]
    assert [r["sparsity_after"] for r in rounds] == pytest.approx(levels, abs=2e-3)  # no lag without denoisers
    assert abs(t.sparsity - 0.6) < 2e-3


def test_released_margin_defaults_to_the_authors_five_points():
    s = settings("released").prune
    assert s.own().isp_margin() == 0.05 and settings("soup").prune.own().isp_margin() == 0.005
    assert settings("released", margin=0.01).prune.own().isp_margin() == 0.01
    plan = check_budget(settings("released", epochs=4, step=0.3), 6)  # 24 steps
    assert plan["levels"] == pytest.approx([0.3, 0.51, 0.6])  # rounds until within 0.05 of 0.6 without lag
    # 3 rounds + the phase before stopping: 1+2+3+4 = 10 main steps; up to 6 rounds fit (1+...+6 = 21 < 24)
    assert plan["max_rounds"] == 6
    with pytest.raises(SettingsError, match="budget too small for ISP \\(released\\)"):
        check_budget(settings("released", sparsity=0.95, step=0.1), 6)


def test_variant_argument_and_cli_option(make_model, tmp_path):
    from instantsoup.cli import build_parser

    t = instant_soup(make_model(), make_tiny_task(vocab=60), settings("soup", epochs=4, step=0.5, t=1), progress=False,
                     variant="released")
    assert t.settings["prune"]["variant"] == "released"
    args = build_parser().parse_args(["prune", "--variant", "paper"])
    assert args.variant == "paper"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--variant", "nope"])
    a, b = settings("soup"), settings("released")
    assert a.identity() != b.identity()  # the variant enters the run hash


@pytest.mark.parametrize("extra", [
    ["--variant", "released"], ["--variant", "paper"], ["--variant", "soup"],
    ["--variant", "soup", "--denoisers", "0"],  # control: what the denoisers add
    ["--method", "gmp", "--match-steps", "30"],  # control: GMP given ISP's step count
    ["--method", "omp", "--prune-after", "finetuned"],  # control: OMP of the fine-tuned weights
])
def test_cli_variants_and_controls_run_on_a_tiny_model(extra, tiny_bert_dir, tmp_path, capsys):
    import csv
    import json

    from instantsoup.cli import main

    rng = np.random.default_rng(0)
    table = tmp_path / "toy.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for _ in range(120):
            toks = rng.integers(0, 40, size=int(rng.integers(3, 9)))
            w.writerow([" ".join(f"w{t}" for t in toks), int((toks >= 20).sum() * 2 > len(toks))])
    argv = ["prune", "--method", "isp", "--model", str(tiny_bert_dir), "--task", str(table), "--sparsity", "0.5",
            "--step", "0.4", "--t", "1", "--denoisers", "2", "--lookahead", "2", "--epochs", "3",
            "--batch-size", "16", "--lr", "1e-3", "--out", str(tmp_path / "runs"), "--no-progress",
            "--max-length", "16", "--threads", "1", *extra]
    assert main(argv) == 0, capsys.readouterr().err
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "ticket").is_dir()]
    rec = json.loads((run / "ticket" / "ticket.json").read_text())
    assert abs(rec["sparsity"] - 0.5) < 1e-3
    if "--variant" in extra:
        assert rec["settings"]["prune"]["variant"] == extra[1]
    if "--match-steps" in extra:
        assert rec["cost"]["total"]["steps"] == 30


def test_released_run_resumes_to_the_same_ticket(make_model, tmp_path):
    import shutil

    task, s = make_tiny_task(vocab=60), settings("released", epochs=4)
    full = instant_soup(make_model(), task, s, run_dir=tmp_path / "run", progress=False)
    rounds = sorted(d.name for d in (tmp_path / "run").iterdir() if d.name.startswith("round_"))
    for d in (tmp_path / "run").iterdir():  # an interruption after the first round kept on disk
        if d.is_dir() and rounds and d.name != rounds[0] or d.name == "ticket":
            shutil.rmtree(d)
    again = instant_soup(make_model(), task, s, run_dir=tmp_path / "run", progress=False)
    for n in full.masks:
        np.testing.assert_array_equal(full.masks[n], again.masks[n])
    for n in full.weights:
        np.testing.assert_array_equal(full.weights[n], again.weights[n])
