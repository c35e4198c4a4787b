"""The methods' registry (instantsoup.methods.registry) is the only list of methods, and moving each
method's settings and plan into its own module changed no run: the identities (run hashes), validation
errors and budget plans below were recorded from the code before the move (tests/data/method_pins.json)."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import instantsoup
from instantsoup import runs
from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings, check_budget

PINS = Path(__file__).parent / "data" / "method_pins.json"
METHOD_NAMES = ("isp", "imp", "omp", "gmp", "random", "dense", "ims")  # the methods when the pins were taken

# one non-default value per prune setting: which of them enter a method's hash
KNOBS = {"sparsity": 0.6, "step": 0.2, "t": 3, "t_fraction": 0.3, "denoisers": 2, "lookahead": 7,
         "variant": "released", "merge": "vote", "merge_main": False, "subset_fraction": 0.75, "lr_mult_min": 0.5,
         "lr_mult_max": 2.0, "wd_choices": "0,0.01", "margin": 0.02, "rewind_step": 5, "prune_after": "finetuned",
         "gmp_interval": 4, "gmp_end": 0.5, "soup_size": 3, "soup_steps": 20, "soup_sparsities": "same",
         "soup": "uniform"}
# budgets: (train settings, prune settings beyond the method, steps per epoch)
BUDGETS = [
    ({"epochs": 3.0}, {}, 40),
    ({"epochs": 1.0}, {"sparsity": 0.9}, 100),
    ({"max_steps": 200, "warmup_steps": 20}, {"sparsity": 0.7, "step": 0.25, "t": 5}, 10),
    ({"match_steps": 300}, {"sparsity": 0.7, "step": 0.3, "denoisers": 2, "lookahead": 5, "t": 4}, 25),
    ({"match_steps": 300}, {"sparsity": 0.7, "step": 0.3, "variant": "released", "lookahead": 5, "t": 4}, 25),
    ({"match_steps": 300}, {"sparsity": 0.5, "rewind_step": 10, "prune_after": "finetuned"}, 25),
    ({"match_steps": 40}, {"sparsity": 0.9, "soup_steps": 50}, 25),
    ({"epochs": 4.0, "warmup_ratio": 0.1}, {"sparsity": 0.95, "step": 0.1, "variant": "released"}, 6),
    ({"epochs": 4.0}, {"sparsity": 0.5, "step": 0.3, "variant": "paper", "denoisers": 0}, 6),
    ({"max_steps": 5}, {"sparsity": 0.9, "gmp_interval": 10}, 100),
    ({"max_steps": 50}, {"sparsity": 0.5, "rewind_step": 50}, 10),
    ({"epochs": 1.0, "warmup_steps": 100}, {}, 50),
    ({"epochs": 2.0}, {}, 0),
]


def identity_cases() -> dict[str, Settings]:
    out = {}
    for m in METHOD_NAMES:
        base = {"method": m, "sparsity": 0.0} if m == "dense" else {"method": m}
        out[f"{m}/defaults"] = Settings(prune=PruneSettings(**base))
        for k, v in KNOBS.items():
            if not (m == "dense" and k == "sparsity"):
                out[f"{m}/{k}"] = Settings(prune=PruneSettings(**{**base, k: v}))
        out[f"{m}/train"] = Settings(train=TrainSettings(lr=1e-4, match_steps=500, precision="bf16"),
                                     prune=PruneSettings(**base))
    return out


def prune_options() -> dict:
    """``instantsoup prune``'s options: flags, default, help, choices, type (their order aside)."""
    from instantsoup.cli import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices["prune"]
    return {a.dest: [a.option_strings, repr(a.default), a.help, list(a.choices) if a.choices else None,
                     getattr(a.type, "__name__", None), type(a).__name__] for a in parser._actions}


def record() -> dict:
    """What the pins hold, computed by the code at hand."""
    out: dict = {"identity": {}, "plan": {}, "prune_options": prune_options()}
    for name, s in identity_cases().items():
        ident = s.identity()
        out["identity"][name] = {"prune": runs.to_jsonable(ident["prune"]),
                                 "run_name": runs.run_name(s.prune.method, ident)}
    for m in METHOD_NAMES:
        for i, (tr, pr, spe) in enumerate(BUDGETS):
            pr = {**pr, "sparsity": 0.0} if m == "dense" else pr
            s = Settings(train=TrainSettings(**tr), prune=PruneSettings(method=m, **pr))
            try:
                s.validate()
                got = runs.to_jsonable(check_budget(s, spe))
            except SettingsError as e:
                got = {"error": str(e)}
            out["plan"][f"{m}/{i}"] = got
    return out


def test_identities_and_plans_are_those_recorded_before_the_registry():
    """Run hashes (so every run directory resumes), budget plans and their errors, for every method;
    the prune command's options (every README command and config file reads the same)."""
    assert record() == json.loads(PINS.read_text())


# ---- the registry is the only list of methods ---------------------------------------------------
TINY = '''"""A throwaway method (tests/test_method_registry.py): a few dense steps, one magnitude prune, fine-tune."""
from dataclasses import dataclass
from typing import Any

from instantsoup.methods.common import Method, Target, budget, finished_ticket, select, setup
from instantsoup.settings_base import SettingsError, setting


@dataclass
class TinySettings(Target):
    tiny_knob: int = setting(3, "TINY: dense steps before the prune")

    def validate(self) -> None:
        super().validate()
        if self.tiny_knob < 0:
            raise SettingsError(f"tiny_knob must be >= 0, got {self.tiny_knob}")


def plan(s: Any, steps_per_epoch: int) -> dict:
    out = budget(s, steps_per_epoch)
    if s.prune.tiny_knob >= out["total_steps"]:
        raise SettingsError(f"budget too small for TINY: {s.prune.tiny_knob} dense steps")
    out.update(prune_at=s.prune.tiny_knob)
    return out


def tiny(model: Any, task: Any, settings: Any, *, run_dir: Any = None, progress: bool = True) -> Any:
    ctx = setup(model, task, settings, run_dir, progress=progress, method=TINY)
    done = finished_ticket(ctx)
    if done is not None:
        return done
    at = ctx.plan["prune_at"]
    ctx.trainer.train(model, ctx.opt, 0, at, stage="dense", desc="TINY dense")
    model.set_masks(select(model, settings.prune.sparsity))
    return ctx.finish(ctx.finetune(at, ctx.plan["total_steps"], desc="TINY fine-tune"))


TINY = Method("tiny", tiny, TinySettings, plan, "a throwaway method of the registry test")
'''

CHILD = '''
import contextlib, dataclasses, io, json, sys
import instantsoup
from instantsoup import config, methods, runs, study
from instantsoup.cli import build_parser, main
from instantsoup.config import PruneSettings, Settings, SettingsError, TrainSettings, check_budget

out = {"file": instantsoup.__file__, "config_methods": list(config.METHODS), "run_methods": list(methods.METHODS)}
prune = next(a for a in build_parser()._subparsers._group_actions[0].choices["prune"]._actions if a.dest == "method")
out["choices"] = list(prune.choices)
help_text = build_parser()._subparsers._group_actions[0].choices["prune"].format_help()
out["help_has_knob"] = "--tiny-knob" in help_text and "TINY: dense steps before the prune" in help_text
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    main(["prune", "--method", "tiny", "--tiny-knob", "5", "--sparsity", "0.3", "--print-config"])
out["printed"] = json.loads(buf.getvalue())["prune"]
tiny = Settings(train=TrainSettings(max_steps=20), prune=PruneSettings(method="tiny", sparsity=0.3, tiny_knob=5))
out["identity"] = tiny.identity()["prune"]
out["isp_identity"] = Settings(prune=PruneSettings(method="isp", tiny_knob=5)).identity()["prune"]
out["isp_run_name"] = runs.run_name("isp", Settings().identity())
out["plan"] = check_budget(tiny, 10)
errors = []
for s in (dataclasses.replace(tiny, train=TrainSettings(max_steps=5)), Settings(prune=PruneSettings(method="tiny", tiny_knob=-1))):
    try:
        s.validate()
        check_budget(s, 10)
    except SettingsError as e:
        errors.append(str(e))
out["errors"] = errors
path = sys.argv[1] + "/tiny_study.json"
with open(path, "w") as f:
    json.dump({"name": "tiny", "sparsities": [0.3], "methods": [{"label": "t", "method": "tiny", "prune": {"tiny_knob": 2}}]}, f)
st = study.load_study(path)
out["study"] = study.cell_settings(st, st.methods[0], 0.3, 0).prune.tiny_knob
rc = main(["prune", "--method", "tiny", "--tiny-knob", "2", "--sparsity", "0.5", "--model", sys.argv[2], "--task",
           sys.argv[3], "--max-steps", "6", "--batch-size", "16", "--max-length", "16", "--threads", "1",
           "--no-progress", "--out", sys.argv[1] + "/runs"])
root = next(iter(__import__("pathlib").Path(sys.argv[1], "runs").glob("tiny-*")))
t = instantsoup.Ticket.load(runs.ticket_path(root))
out["run"] = [rc, t.method, round(t.sparsity, 3), [h["stage"] for h in t.history if h.get("event") == "train"][:1]]
print("RESULT " + json.dumps(out))
'''


def test_a_new_method_is_one_module_and_one_registry_line(tiny_bert_dir, tmp_path):
    """A copy of the package with one more module and its line in the registry: the method is then
    in --method's choices and --help, the flat settings (its option, config files), run hashes (its
    own fields only; ISP's hash unchanged), validation, check_budget, studies, and it runs from the
    CLI. Nothing else was edited, and the package under test is left as it was."""
    from instantsoup.methods.registry import REGISTRY

    from test_cli import write_table

    pkg = tmp_path / "pkg" / "instantsoup"
    shutil.copytree(os.path.dirname(instantsoup.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "methods" / "tiny.py").write_text(TINY)
    registry = (pkg / "methods" / "registry.py").read_text()
    assert registry.count("DENSE, IMS)}") == 1
    registry = registry.replace("DENSE, IMS)}", "DENSE, IMS, TINY)}")
    (pkg / "methods" / "registry.py").write_text(registry.replace("\nREGISTRY", "from instantsoup.methods.tiny import TINY"
                                                                  "\n\nREGISTRY", 1))
    table = tmp_path / "toy.csv"
    write_table(table, n=64)
    env = {**os.environ, "PYTHONPATH": str(pkg.parent), "INSTANTSOUP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(tiny_bert_dir), str(table)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    pins = json.loads(PINS.read_text())["identity"]
    assert out["file"].startswith(str(pkg))
    names = list(METHOD_NAMES) + ["tiny"]
    assert out["config_methods"] == out["run_methods"] == out["choices"] == names
    assert out["help_has_knob"]
    assert out["printed"]["method"] == "tiny" and out["printed"]["tiny_knob"] == 5
    assert out["identity"] == {"method": "tiny", "sparsity": 0.3, "tiny_knob": 5}
    assert out["isp_identity"] == pins["isp/defaults"]["prune"]
    assert out["isp_run_name"] == pins["isp/defaults"]["run_name"]
    assert out["plan"] == {"steps_per_epoch": 10, "total_steps": 20, "warmup": 0, "planned_steps": 20, "prune_at": 5}
    assert out["errors"] == ["budget too small for TINY: 5 dense steps", "tiny_knob must be >= 0, got -1"]
    assert out["study"] == 2
    assert out["run"] == [0, "tiny", 0.5, ["dense"]]
    assert "tiny" not in REGISTRY and not (Path(instantsoup.__file__).parent / "methods" / "tiny.py").exists()


def test_no_second_list_of_method_names():
    """No literal in the package lists more than half of the methods by name (the demo's three are a
    choice, not a list of methods): whatever needs them all reads the registry."""
    from instantsoup.methods.registry import REGISTRY

    names = set(REGISTRY)
    found = []
    for path in Path(instantsoup.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None) \
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else None
            strings = {n.value for n in items or () if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if len(strings & names) > len(names) / 2:
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_the_docs_list_the_registered_methods():
    """docs/experiments.md's table of methods: the registry's names, in its order, with their functions."""
    from instantsoup.methods.registry import REGISTRY

    text = (Path(__file__).parent.parent / "docs" / "experiments.md").read_text(encoding="utf-8")
    section = text.split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert [(a.strip(" `"), b.strip(" `")) for a, b in rows] == [(m.name, m.run.__name__) for m in REGISTRY.values()]


if __name__ == "__main__":  # regenerate the pins (only from code whose identities are known to be right)
    PINS.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {os.path.relpath(PINS)}")


def test_a_bad_value_of_another_methods_knob_is_still_refused():
    """Validation reads every registered method's fields, not only the running method's: a typo in an
    ISP knob of an IMP config file is refused before any work, as before the registry."""
    import pytest

    for method, bad in (("imp", {"merge": "nope"}), ("omp", {"variant": "nope"}), ("isp", {"rewind_step": -1}),
                        ("dense", {"gmp_end": 2.0}), ("gmp", {"soup": "nope"})):
        with pytest.raises(SettingsError):
            PruneSettings(method=method, sparsity=0.0 if method == "dense" else 0.5, **bad).validate()
        PruneSettings(method=method, sparsity=0.0 if method == "dense" else 0.5).validate()
