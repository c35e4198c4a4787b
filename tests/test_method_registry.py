"""The methods' registry (instantsoup.methods.registry) is the only list of methods, and moving each
method's settings and plan into its own module changed no run: the identities (run hashes), validation
errors and budget plans below were recorded from the code before the move (tests/data/method_pins.json)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

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


def record() -> dict:
    """What the pins hold, computed by the code at hand."""
    out: dict = {"identity": {}, "plan": {}}
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
    """Run hashes (so every run directory resumes), budget plans and their errors, for every method."""
    assert record() == json.loads(PINS.read_text())


if __name__ == "__main__":  # regenerate the pins (only from code whose identities are known to be right)
    PINS.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {os.path.relpath(PINS)}")
