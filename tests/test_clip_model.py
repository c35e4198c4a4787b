"""CLIP in C against transformers.CLIPModel on tiny random checkpoints: image and text features,
the zero-shot head, logits and loss, every vision-tower gradient, 10 masked AdamW steps, export."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clip_helpers import tiny_clip  # noqa: E402

import instantsoup  # noqa: E402

from instantsoup.data.clip_tokenizer import CLIPTokenizer  # noqa: E402
from instantsoup.models.clip import CLIPModel, load_clip  # noqa: E402
from instantsoup.models.clip_config import CLIPConfig  # noqa: E402
from instantsoup.optim import AdamW  # noqa: E402

CONFIGS = {
    # image 16, patch 4 (17 tokens), quick_gelu, odd intermediate
    "p4": dict(vision=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, image_size=16, patch_size=4)),
    # odd widths: hidden 30 / 3 heads, patch 6 on 18 pixels, exact gelu, projection 11
    "odd": dict(vision=dict(hidden_size=30, intermediate_size=41, num_attention_heads=3, image_size=18, patch_size=6,
                            hidden_act="gelu"),
                text=dict(hidden_size=18, num_attention_heads=3, intermediate_size=29), projection_dim=11),
    # one big patch per row of 2, three layers
    "p8": dict(vision=dict(hidden_size=24, intermediate_size=48, num_attention_heads=2, image_size=16, patch_size=8,
                           num_hidden_layers=3)),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def ckpt(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"clip_{request.param}")
    hf = tiny_clip(d, **CONFIGS[request.param])
    return d, hf


def _pixels(rng, hf, B=3):
    s = hf.config.vision_config.image_size
    return rng.standard_normal((B, 3, s, s)).astype(np.float32)


def _texts():
    return ["a photo of a cat.", "a blurry photo of the dog!", "i love my car", "satellite imagery of a river"]


def test_features_match_transformers(ckpt, rng):
    d, hf = ckpt
    model = instantsoup.load_model(d)
    assert model.kind == "clip"
    px = _pixels(rng, hf)
    tok = CLIPTokenizer.from_pretrained(d)
    enc = tok.encode(_texts())
    with torch.no_grad():
        fi = hf.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output.numpy()
        ft = hf.get_text_features(input_ids=torch.from_numpy(enc["input_ids"]),
                                  attention_mask=torch.from_numpy(enc["attention_mask"])).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_image(px), fi, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.encode_text(enc["input_ids"], enc["attention_mask"]), ft, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.encode_text(enc["input_ids"]), ft, rtol=1e-5, atol=1e-5)  # causal is enough
    assert model.logit_scale == pytest.approx(2.3)
    assert len(model.prunable_names) == 6 * hf.config.vision_config.num_hidden_layers


def _hf_head(hf, tok, classnames, templates):
    """The zero-shot head computed with transformers: mean of normalised prompt embeddings,
    renormalised, times exp(logit_scale)."""
    rows = []
    with torch.no_grad():
        for c in classnames:
            enc = tok.encode([t.format(c) for t in templates])
            f = hf.get_text_features(input_ids=torch.from_numpy(enc["input_ids"]),
                                     attention_mask=torch.from_numpy(enc["attention_mask"])).pooler_output
            f = f / f.norm(dim=-1, keepdim=True)
            m = f.mean(0)
            rows.append(m / m.norm())
        return torch.stack(rows) * hf.logit_scale.exp()


CLASSES = ["cat", "dog", "car", "river"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}.", "i love my {}!"]


def _torch_step(hf, head, px, labels, smoothing=0.0):
    img = hf.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output
    logits = (img / img.norm(dim=-1, keepdim=True)) @ head.T
    return logits, torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels), label_smoothing=smoothing)


def _vision_params(hf):
    return {k: p for k, p in hf.named_parameters() if k.startswith(("vision_model.", "visual_projection."))}


def _assert_grads(model, hf, tol=1e-4):
    params = _vision_params(hf)
    scale = max(float(p.grad.abs().max()) for p in params.values())
    assert set(model.grads) == set(params)
    for k, g in model.grads.items():
        want = params[k].grad.numpy()
        # relative to the tensor's own scale; gradients that are zero in exact arithmetic
        # (the key bias: softmax is shift invariant) are compared against the global scale
        denom = max(float(np.abs(want).max()), 1e-3 * scale)
        err = float(np.abs(g - want).max()) / denom
        assert err < tol, f"{k}: relative error {err:.2e}"


def test_zero_shot_head_logits_loss_and_gradients(ckpt, rng):
    d, hf = ckpt
    model = load_clip(d).train()
    tok = CLIPTokenizer.from_pretrained(d)
    w = model.zero_shot_head(CLASSES, TEMPLATES)
    head = _hf_head(hf, tok, CLASSES, TEMPLATES)
    np.testing.assert_allclose(w, head.numpy(), rtol=1e-5, atol=1e-4)
    assert model.num_labels == 4 and not model.head_trainable and model.classnames == CLASSES
    px = _pixels(rng, hf, 5)
    labels = np.array([0, 3, 1, 1, 2])
    hf.train()
    hf.zero_grad()
    logits, loss = _torch_step(hf, head.detach(), px, labels, smoothing=0.1)
    loss.backward()
    np.testing.assert_allclose(model.forward({"pixel_values": px}), logits.detach().numpy(), rtol=1e-5, atol=1e-4)
    ours = model.forward_backward({"pixel_values": px}, labels, label_smoothing=0.1)
    assert ours == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    _assert_grads(model, hf)
    # the frozen head is not a parameter: nothing named classifier, and it does not change
    assert "classifier.weight" not in model.state_dict()


def _no_decay(name):
    return name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name or "layernorm" in name


def test_masked_adamw_steps_match_torch(tmp_path, rng):
    hf = tiny_clip(tmp_path, vision=dict(hidden_size=30, intermediate_size=41, num_attention_heads=3,
                                         image_size=18, patch_size=6))
    model = load_clip(tmp_path).train()
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    model.zero_shot_head(CLASSES, TEMPLATES)
    head = _hf_head(hf, tok, CLASSES, TEMPLATES).detach()
    # random masks at 50% on every prunable weight, applied to both models
    masks = {k: (rng.random(v.shape) > 0.5).astype(np.uint8) for k, v in model.masks.items()}
    model.set_masks(masks)
    params = _vision_params(hf)
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(torch.from_numpy(m.astype(np.float32)))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, params[k].detach().numpy())
    lr, wd, clip = 3e-4, 0.1, 1.0
    start = {k: v.copy() for k, v in model.state_dict().items()}
    k_bias0 = {k: v.copy() for k, v in model.state_dict().items() if k.endswith("k_proj.bias")}
    decay = [p for k, p in params.items() if not _no_decay(k)]
    nodecay = [p for k, p in params.items() if _no_decay(k)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8)
    ours_opt = AdamW(model, lr=lr, weight_decay=wd)  # the default groups are HF Trainer's for CLIP
    assert set(ours_opt.decay_names) == {k for k in params if not _no_decay(k)}
    hf.train()
    for step in range(1, 11):
        px = _pixels(rng, hf, 4)
        labels = rng.integers(0, 4, 4)
        opt.zero_grad()
        _, loss = _torch_step(hf, head, px, labels)
        loss.backward()
        with torch.no_grad():
            for k, m in masks.items():
                params[k].grad.mul_(torch.from_numpy(m.astype(np.float32)))
        tnorm = torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        opt.step()
        with torch.no_grad():
            for k, m in masks.items():
                params[k].mul_(torch.from_numpy(m.astype(np.float32)))
        if step % 2:  # the fused C step
            ours_loss = ours_opt.train_step({"pixel_values": px}, labels, max_grad_norm=clip)
        else:  # forward_backward, then the optimizer on model.grads
            ours_loss = model.forward_backward({"pixel_values": px}, labels)
            ours_opt.step(max_grad_norm=clip)
        norm = ours_opt.last_grad_norm
        assert ours_loss == pytest.approx(loss.item(), rel=1e-4)
        assert norm == pytest.approx(float(tnorm), rel=1e-4)
    for k, v in model.state_dict().items():
        want = params[k].detach().numpy()
        if k.endswith("k_proj.bias"):
            # its gradient is 0 in exact arithmetic (softmax is shift invariant), so Adam only
            # normalises rounding noise: both sides move it by at most ~lr per step
            assert np.abs(v - k_bias0[k]).max() <= 10 * lr and np.abs(want - k_bias0[k]).max() <= 10 * lr
            continue
        err = np.abs(v - want).max() / max(np.abs(want).max(), 1e-6)
        # the patch-embedding gradient is one long reduction over every patch of the batch; Adam
        # turns its last-bit differences on near-zero entries into ~lr-sized steps, so the
        # summation order (thread count) moves it to ~1.3e-4 at worst (seen in full-suite runs)
        tol = 3e-4 if k.endswith("patch_embedding.weight") else 1e-4
        assert err < tol, f"{k}: {err:.2e}"
        moved = np.abs(v - start[k]).max() / max(np.abs(want).max(), 1e-6)
        assert moved > 30 * max(err, 1e-6), f"{k}: moved only {moved:.2e}"  # the steps did something
    for k, m in model.masks.items():
        assert (model.state_dict()[k][m == 0] == 0).all()
    assert abs(model.masks[next(iter(masks))].mean() - 0.5) < 0.2


def test_export_loads_in_transformers(tmp_path, rng):
    src = tmp_path / "src"
    src.mkdir()
    hf = tiny_clip(src)
    model = load_clip(src)
    model.zero_shot_head(CLASSES, TEMPLATES)
    masks = {k: (rng.random(v.shape) > 0.7).astype(np.uint8) for k, v in model.masks.items()}
    model.set_masks(masks)
    out = tmp_path / "out"
    model.save_pretrained(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.CLIPModel.from_pretrained(out).eval()
    px = _pixels(rng, hf)
    with torch.no_grad():
        f = back.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_image(px), f, rtol=1e-5, atol=1e-5)
    sd = back.state_dict()
    for k, m in masks.items():
        assert (sd[k].numpy()[m == 0] == 0).all()
    for k, v in hf.state_dict().items():
        if k.startswith("text_model.") or k == "logit_scale":
            np.testing.assert_array_equal(sd[k].numpy(), v.numpy())
    # tokenizer and head travel with the export; reloading gives the same logits
    again = load_clip(out)
    again.zero_shot_head(CLASSES, TEMPLATES)
    np.testing.assert_allclose(again.forward({"pixel_values": px}), model.forward({"pixel_values": px}),
                               rtol=1e-6, atol=1e-6)
    assert (out / "instantsoup_head.safetensors").exists()


def test_export_of_a_half_precision_config_loads_as_float32(tmp_path, rng):
    import json

    src = tmp_path / "src"
    src.mkdir()
    tiny_clip(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["dtype"] = cfg["vision_config"]["dtype"] = cfg["text_config"]["dtype"] = "float16"
    (src / "config.json").write_text(json.dumps(cfg))
    model = load_clip(src)
    model.zero_shot_head(CLASSES, TEMPLATES)
    model.save_pretrained(tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.CLIPModel.from_pretrained(tmp_path / "out")
    assert {p.dtype for p in back.parameters()} == {torch.float32}


def test_linear_probe_head(tmp_path, rng):
    hf = tiny_clip(tmp_path)
    model = load_clip(tmp_path, num_labels=4, seed=3).train()
    assert model.head_trainable and model.num_labels == 4
    assert model.state_dict()["classifier.weight"].shape == (4, 12)
    w = model.zero_shot_head(CLASSES, TEMPLATES)  # initialises the probe
    np.testing.assert_array_equal(model.state_dict()["classifier.weight"], w)
    bias = rng.standard_normal(4).astype(np.float32)
    model.state_dict()["classifier.bias"][...] = bias
    px = _pixels(rng, hf, 4)
    labels = np.array([1, 0, 3, 2])
    W = torch.tensor(w, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    hf.train()
    hf.zero_grad()
    img = hf.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output
    logits = (img / img.norm(dim=-1, keepdim=True)) @ W.T + b
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    assert model.forward_backward({"pixel_values": px}, labels) == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(model.grads["classifier.weight"], W.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.grads["classifier.bias"], b.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.grads["visual_projection.weight"], hf.visual_projection.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-6)


def test_clone_copy_and_masks(tmp_path, rng):
    tiny_clip(tmp_path)
    model = load_clip(tmp_path)
    model.zero_shot_head(CLASSES, TEMPLATES)
    twin = model.clone()
    px = _pixels(rng, type("H", (), {"config": type("C", (), {"vision_config": model.config.vision})})())
    np.testing.assert_array_equal(twin.forward({"pixel_values": px}), model.forward({"pixel_values": px}))
    twin.state_dict()["visual_projection.weight"][...] = 0.5
    assert not np.array_equal(model.state_dict()["visual_projection.weight"], 0.5)
    twin.copy_from(model)
    np.testing.assert_array_equal(twin.state_dict()["visual_projection.weight"],
                                  model.state_dict()["visual_projection.weight"])
    name = model.prunable_names[0]
    bad = dict(model.masks)
    bad[name] = np.full_like(bad[name], 2)
    with pytest.raises(ValueError, match="values must be 0 or 1"):
        model.set_masks(bad)
    with pytest.raises(ValueError, match="not a prunable weight"):
        model.set_masks({"visual_projection.weight": np.ones((12, 32), np.uint8)})
    with pytest.raises(ValueError, match="shape"):
        model.set_masks({name: np.ones((2, 2), np.uint8)})
    # a partial update: only that weight is masked, its zeros stay through load_state_dict
    m0 = np.zeros_like(model.masks[name])
    m0[0] = 1
    model.set_masks({name: m0})
    assert model.masks[model.prunable_names[1]].all()
    sd = {k: np.ones_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    assert model.state_dict()[name].sum() == m0.sum()
    offs = model.param_offsets()
    assert offs[name][0] == 0 and sum(int(np.prod(s)) for _, s in offs.values()) == model.num_parameters


def test_bad_inputs(tmp_path, rng):
    tiny_clip(tmp_path)
    model = load_clip(tmp_path)
    px = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="no classification head"):
        model.forward({"pixel_values": px})
    model.zero_shot_head(CLASSES, TEMPLATES)
    with pytest.raises(ValueError, match="expects 16x16"):
        model.forward({"pixel_values": rng.standard_normal((2, 3, 20, 20)).astype(np.float32)})
    with pytest.raises(ValueError, match="3 channels"):
        model.forward({"pixel_values": np.zeros((2, 1, 16, 16), np.float32)})
    with pytest.raises(TypeError, match="float32"):
        model.forward({"pixel_values": px.astype(np.float64)})
    with pytest.raises(TypeError, match="uint8"):
        model.forward({"pixel_values": (px * 0).astype(np.uint8)})
    with pytest.raises(KeyError, match="pixel_values"):
        model.forward({"input_ids": np.zeros((2, 3), np.int64)})
    with pytest.raises(ValueError, match=r"labels: ids must be in \[0, 4\)"):
        model.forward_backward({"pixel_values": px}, np.array([0, 4]))
    bad = px.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.forward({"pixel_values": bad})
    with pytest.raises(ValueError, match="end-of-text"):
        model.encode_text(np.array([[0, 5, 6]]))
    with pytest.raises(ValueError, match="one '{}'"):
        model.zero_shot_head(CLASSES, ["no slot"])
    # checkpoints without a tower, or not CLIP at all
    from safetensors.numpy import load_file, save_file

    sd = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in sd.items() if not k.startswith("text_model.")}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no text tower"):
        load_clip(tmp_path)
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        CLIPConfig.from_dict({"model_type": "bert"})
    with pytest.raises(ValueError, match="needs a vision_config"):
        CLIPConfig.from_dict({"model_type": "clip", "text_config": {}})


def test_legacy_eos_token_id_pools_at_the_largest_id(tmp_path, rng):
    hf = tiny_clip(tmp_path, text=dict(eos_token_id=2), tokenizer=False)
    model = load_clip(tmp_path)
    ids = rng.integers(3, 90, (3, 7))
    ids[:, 4] = 98  # the "end" token is the largest id
    with torch.no_grad():
        want = hf.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
    np.testing.assert_allclose(model.encode_text(ids), want, rtol=1e-5, atol=1e-5)


def test_pytorch_model_bin_checkpoint(tmp_path, rng):
    """Older checkpoints ship pytorch_model.bin (read with torch.load(weights_only=True))."""
    import shutil

    hf = tiny_clip(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(tmp_path / "config.json", bin_dir / "config.json")
    torch.save({k: v.clone() for k, v in hf.state_dict().items()}, bin_dir / "pytorch_model.bin")
    a = load_clip(tmp_path)
    b = load_clip(bin_dir)
    px = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(a.encode_image(px), b.encode_image(px))
    ids = np.array([[0, 5, 6, 1]])
    np.testing.assert_array_equal(a.encode_text(ids), b.encode_text(ids))
