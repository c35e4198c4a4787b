"""Settings validation, schedules, data order, run directories (no engine needed)."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from instantsoup import runs
from instantsoup.config import (DataSettings, PruneSettings, RunSettings, Settings, SettingsError, TrainSettings,
                                check_budget, settings_from_dict)
from instantsoup.methods.common import sparsity_levels
from instantsoup.train import Cost, StepOrder, lr_at


# ---- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    ({"prune": PruneSettings(sparsity=1.0)}, "sparsity must be in \\[0, 1\\)"),
    ({"prune": PruneSettings(sparsity=-0.1)}, "sparsity must be in \\[0, 1\\)"),
    ({"prune": PruneSettings(method="snip")}, "unknown method 'snip'"),
    ({"prune": PruneSettings(merge="average")}, "unknown merge rule 'average'"),
    ({"train": TrainSettings(schedule="step")}, "unknown schedule"),
    ({"train": TrainSettings(epochs=0)}, "epochs must be > 0"),
    ({"prune": PruneSettings(lr_mult_min=2, lr_mult_max=1)}, "lr_mult_min"),
    ({"prune": PruneSettings(wd_choices="0.1,x")}, "wd_choices"),
    ({"data": DataSettings(task="sst3")}, "unknown task 'sst3'"),
    ({"data": DataSettings(task="sst2")}, "needs --data-dir"),
    ({"data": DataSettings(task="/nonexistent/x.csv")}, "does not exist"),
])
def test_bad_settings_are_refused(kw, msg):
    with pytest.raises(SettingsError, match=msg):
        Settings(**kw).validate()


def test_model_path_without_config_json(tmp_path):
    with pytest.raises(SettingsError, match="no config.json"):
        Settings(run=RunSettings(model=str(tmp_path))).validate()
    with pytest.raises(SettingsError, match="not a directory"):
        Settings(run=RunSettings(model=str(tmp_path / "nope"))).validate()
    (tmp_path / "config.json").write_text("{}")
    Settings(run=RunSettings(model=str(tmp_path))).validate()


def test_budget_too_small_for_isp():
    s = Settings(train=TrainSettings(epochs=1.0), prune=PruneSettings(method="isp", sparsity=0.9, step=0.1, t=10))
    s.validate()
    with pytest.raises(SettingsError, match="budget too small for ISP"):
        check_budget(s, steps_per_epoch=100)
    plan = check_budget(dataclasses.replace(s, train=TrainSettings(epochs=30.0)), steps_per_epoch=100)
    assert plan["rounds"] == len(plan["levels"]) == 22 and plan["levels"][-1] == 0.9
    assert plan["round_steps"][:3] == [10, 20, 30]
    with pytest.raises(SettingsError, match="warm-up"):
        check_budget(Settings(train=TrainSettings(epochs=1.0, warmup_steps=100)), steps_per_epoch=50)
    with pytest.raises(SettingsError, match="GMP"):
        check_budget(Settings(train=TrainSettings(max_steps=5), prune=PruneSettings(method="gmp", sparsity=0.9,
                                                                                     gmp_interval=10)), 100)


def test_sparsity_levels():
    lv = sparsity_levels(0.5, 0.1)
    assert lv[-1] == 0.5 and len(lv) == 7
    assert all(b > a for a, b in zip(lv, lv[1:]))
    assert lv[0] == pytest.approx(0.1) and lv[1] == pytest.approx(0.19)
    assert sparsity_levels(0.0, 0.1) == []
    # a level within the margin of the target becomes the target
    assert sparsity_levels(0.1 + 1e-3, 0.1, margin=0.005) == [0.1 + 1e-3]
    assert PruneSettings(sparsity=0.19, step=0.1).own().levels() == pytest.approx([0.1, 0.19])


def test_identity_only_holds_relevant_fields():
    a = Settings(prune=PruneSettings(method="imp"))
    b = Settings(prune=PruneSettings(method="imp", denoisers=9, lookahead=3), run=RunSettings(out="x", threads=3))
    assert runs.run_name("imp", a.identity()) == runs.run_name("imp", b.identity())
    c = Settings(prune=PruneSettings(method="isp", denoisers=9))
    assert runs.run_name("isp", c.identity()) != runs.run_name("isp", Settings().identity())
    d = settings_from_dict(json.loads(json.dumps(dataclasses.asdict(c))))
    assert d == c
    with pytest.raises(SettingsError, match="unknown train settings"):
        settings_from_dict({"train": {"lrr": 1}})


def test_cli_is_generated_from_dataclasses():
    from instantsoup.cli import build_parser, _settings

    p = build_parser()
    args = p.parse_args(["prune", "--method", "gmp", "--sparsity", "0.7", "--lr", "3e-5", "--no-select-best",
                         "--task", "sst2", "--epochs", "0.5", "--no-progress"])
    s = _settings(args)
    assert s.prune.method == "gmp" and s.prune.sparsity == 0.7 and s.train.lr == 3e-5
    assert s.train.select_best is False and s.train.epochs == 0.5 and s.run.progress is False
    assert s.data.task == "sst2"
    defaults = _settings(p.parse_args(["prune"]))
    assert defaults == Settings()


# ---- schedules and data order -------------------------------------------------------------------
def test_lr_schedules():
    assert lr_at(0, lr=1.0, total=10, warmup=2) == 0.5
    assert lr_at(1, lr=1.0, total=10, warmup=2) == 1.0
    assert lr_at(2, lr=1.0, total=10, warmup=2) == 1.0
    assert lr_at(6, lr=1.0, total=10, warmup=2) == 0.5
    assert lr_at(10, lr=1.0, total=10, warmup=2) == 0.0
    assert lr_at(6, lr=1.0, total=10, warmup=2, schedule="cosine") == pytest.approx(0.5)
    assert lr_at(3, lr=1.0, total=10, warmup=2, schedule="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))
    assert lr_at(9, lr=2.0, total=10, warmup=0, schedule="constant") == 2.0
    assert lr_at(0, lr=1.0, total=10, warmup=0) == 1.0


def test_step_order_is_a_pure_function_of_seed_and_step():
    a = StepOrder(10, 4, seed=3)
    assert a.steps_per_epoch == 3
    epoch0 = np.concatenate([a.indices(k) for k in range(3)])
    assert sorted(epoch0.tolist()) == list(range(10))
    seq = [a.indices(k).tolist() for k in range(9)]
    b = StepOrder(10, 4, seed=3)
    assert [b.indices(k).tolist() for k in (7, 2, 5)] == [seq[7], seq[2], seq[5]]
    assert seq[:3] != seq[3:6]  # new permutation each epoch
    sub = StepOrder.subset(10, 0.5, seed=1)
    assert len(sub) == 5 and np.all(np.diff(sub) > 0)
    c = StepOrder(10, 2, seed=0, pool=sub)
    assert set(np.concatenate([c.indices(k) for k in range(3)]).tolist()) == set(sub.tolist())


def test_cost_roundtrip():
    c = Cost()
    c.stage("a").steps += 3
    c.stage("b").flops += 2.5
    d = Cost.from_dict(json.loads(json.dumps(c.to_dict())))
    assert d.total().steps == 3 and d.total().flops == 2.5


# ---- run directories ----------------------------------------------------------------------------
def test_atomic_dir(tmp_path):
    final = tmp_path / "round_000"
    with pytest.raises(RuntimeError):
        with runs.atomic_dir(final) as tmp:
            (tmp / "x").write_text("1")
            raise RuntimeError("killed")
    assert not final.exists() and not list(tmp_path.iterdir())
    with runs.atomic_dir(final) as tmp:
        (tmp / "x").write_text("2")
    assert (final / "x").read_text() == "2"
    os.makedirs(tmp_path / ".tmp-round_001-abc")  # a leftover of a killed writer
    assert runs.clean_temporaries(tmp_path) == 1


def test_flatten_state_roundtrip(tmp_path):
    state = {"step": 7, "m": {"a.w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "lst": [np.ones(2), 3.5]}
    arrays, skel = runs.flatten_state(state)
    runs.save_arrays(tmp_path / "o.safetensors", arrays)
    runs.write_json(tmp_path / "o.json", skel)
    back = runs.unflatten_state(runs.load_arrays(tmp_path / "o.safetensors"), runs.read_json(tmp_path / "o.json"))
    assert back["step"] == 7 and back["lst"][1] == 3.5
    np.testing.assert_array_equal(back["m"]["a.w"], state["m"]["a.w"])
    np.testing.assert_array_equal(back["lst"][0], state["lst"][0])


def test_identity_digests(tmp_path):
    (tmp_path / "config.json").write_text('{"a": 1}')
    a = runs.model_identity(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"xyz")
    b = runs.model_identity(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    assert a != b and runs.model_identity(tmp_path) == b


def test_forward_flops_formula():
    from instantsoup.train import forward_flops

    dims = {"L": 2, "H": 4, "I": 8, "K": 3}
    # matmuls 2·B·T·L·(4H²+2HI) + attention 4·B·L·T²·H + head 2·B·(H²+HK)
    assert forward_flops(dims, 1, 5) == 2 * 5 * 2 * (64 + 64) + 4 * 2 * 25 * 4 + 2 * (16 + 12)
    assert forward_flops(dims, 3, 5) == 3 * forward_flops(dims, 1, 5)
    half = forward_flops(dims, 1, 5, density=0.5)
    assert half == forward_flops(dims, 1, 5) - 5 * 2 * (64 + 64)
