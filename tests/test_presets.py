"""--preset paper-bert / paper-clip (Table 1 of the paper), CLIP's own defaults, and the README's prune
commands pass the budget check on SST-2's size."""
import json
import math
import os
import re
import shlex

import pytest

from instantsoup.cli import _settings, build_parser
from instantsoup.config import PRESETS, Settings, SettingsError, check_budget, with_preset

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def parse(*argv):
    return _settings(build_parser().parse_args(["prune", *argv]))


def test_paper_presets_are_table_1():
    b, c = parse("--preset", "paper-bert"), parse("--preset", "paper-clip")
    assert (b.train.lr, b.train.epochs, b.prune.step, b.prune.lookahead, b.train.weight_decay, b.prune.denoisers) \
        == (2e-5, 10.0, 0.10, 30, 0.0, 4)
    assert (c.train.lr, c.train.epochs, c.prune.step, c.prune.lookahead, c.train.weight_decay, c.prune.denoisers) \
        == (1e-5, 22.0, 0.15, 50, 0.1, 5)
    for s in (b, c):
        assert (s.train.batch_size, s.train.warmup_steps, s.train.max_grad_norm) == (128, 500, 1.0)
    assert c.run.preset == "paper-clip"


def test_explicit_options_win_over_the_preset():
    s = parse("--preset", "paper-clip", "--lr", "3e-5", "--denoisers", "2", "--no-select-best")
    assert s.train.lr == 3e-5 and s.prune.denoisers == 2 and s.train.select_best is False
    assert s.train.epochs == 22.0 and s.prune.lookahead == 50
    # the Python API: the same, keep= names the fields set by hand
    p = with_preset(Settings(), "paper-bert", keep={"epochs"})
    assert p.train.epochs == 3.0 and p.train.batch_size == 128
    with pytest.raises(SettingsError, match="unknown preset"):
        with_preset(Settings(), "paper-gpt")


def test_a_clip_model_without_preset_gets_clip_values_not_berts(tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    s = parse("--model", str(clip), "--denoisers", "2")
    clip_vals = {**PRESETS["paper-clip"]["train"], **PRESETS["paper-clip"]["prune"]}
    assert (s.train.lr, s.train.weight_decay, s.prune.step, s.prune.lookahead) == tuple(
        clip_vals[k] for k in ("lr", "weight_decay", "step", "lookahead"))
    assert s.prune.denoisers == 2  # given explicitly
    assert s.train.epochs == 3.0 and s.train.batch_size == 32  # the budget stays the product's default
    bert = parse()
    assert (bert.train.lr, bert.prune.step, bert.prune.lookahead, bert.prune.denoisers) == (2e-5, 0.10, 30, 4)
    assert parse("--model", str(clip), "--preset", "paper-bert").train.lr == 2e-5  # a preset wins


def test_readme_prune_commands_pass_the_budget_check_on_sst2():
    text = open(README, encoding="utf-8").read()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    cmds = [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("instantsoup prune")]
    assert len(cmds) >= 2
    for cmd in cmds:
        argv = shlex.split(cmd.split("#")[0])[2:]
        if "--config" in argv:  # its settings come from a run's settings.json (already budget-checked)
            continue
        s = parse(*argv)
        s.prune.validate()
        s.train.validate()
        # SST-2: 67,349 training sentences, 10% held out for validation
        plan = check_budget(s, math.ceil(round(67349 * 0.9) / s.train.batch_size))
        assert plan["total_steps"] > sum(plan.get("round_steps", []))
