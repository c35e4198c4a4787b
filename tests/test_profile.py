"""The engine's opt-in step profile (``_C.set_profile`` / ``_C.get_profile``, used by
benchmarks/profile_step.py): it counts every kernel call site of a training step, records nothing
when off, and shows that evaluation runs the forward pass only."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import instantsoup  # noqa: E402
from instantsoup import _C  # noqa: E402
from instantsoup.train import predict  # noqa: E402

from conftest import make_tiny_task  # noqa: E402

LAYERS = 2  # the tiny BERT of conftest.build_tiny_bert


def profiled(fn):
    _C.set_profile(True)
    try:
        fn()
        return _C.get_profile()
    finally:
        _C.set_profile(False)


def calls(prof):
    return {name: c for name, (_, _, c) in prof.items()}


def test_a_train_step_visits_every_site_once_per_layer(make_model):
    model = make_model().train()
    opt = instantsoup.AdamW(model, lr=1e-3)
    task = make_tiny_task()
    batch, y = task.train.collate(np.arange(8))
    prof = profiled(lambda: opt.train_step(batch, y))
    n = calls(prof)
    per_layer = ["linear qkv fwd", "attention fwd (QK^T, mask, softmax, dropout, PV)", "linear attn-out fwd",
                 "linear fc1 fwd", "activation fwd", "linear fc2 fwd", "linear fc2 bwd (dx, dW, db)",
                 "linear fc1 bwd (dx, dW, db)", "linear attn-out bwd (dx, dW, db)", "attention bwd",
                 "linear qkv bwd (dx, dW, db)"]
    for site in per_layer:
        assert n[site] == LAYERS, site
    # post-LN BERT: both residual sums of a layer go through the fused residual + LayerNorm pass
    assert n["dropout + residual add + layernorm fwd (one pass)"] == 2 * LAYERS
    assert n["layernorm fwd (pre-LN input)"] == 0 and n["dropout + residual add fwd (pre-LN output)"] == 0
    assert n["embeddings fwd (gather + LN + dropout)"] == 1 and n["embeddings bwd"] == 1
    assert n["AdamW (norm, clip, update, mask)"] == 1
    for wall, cpu, _ in prof.values():
        assert wall >= 0.0 and cpu >= 0.0
    # off: another step adds nothing to the table
    opt.train_step(batch, y)
    assert calls(_C.get_profile()) == n


def test_evaluation_runs_the_forward_pass_only(make_model):
    """predict (which Trainer.evaluate uses for validation and test) switches dropout off, draws no
    dropout numbers and runs no backward kernel."""
    model = make_model().train()
    task = make_tiny_task()
    rng_before = model.rng_state()
    batch_size = 16
    prof = profiled(lambda: predict(model, task.validation, batch_size=batch_size))
    n = calls(prof)
    batches = -(-len(task.validation) // batch_size)
    assert not model.training
    assert model.rng_state() == rng_before
    assert n["attention fwd (QK^T, mask, softmax, dropout, PV)"] == LAYERS * batches
    backward = [name for name in n if " bwd" in name and "head" not in name] + [
        "zero grads + mask grads", "AdamW (norm, clip, update, mask)"]
    assert len(backward) == 11
    assert all(n[name] == 0 for name in backward), n
