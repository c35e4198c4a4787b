"""The C CLIP model against the NumPy reference (tests/clip_reference.py), without torch:
features of both towers, logits, a finite-difference gradient check, an optimizer step. Marked
``kernel`` so the sanitizer job runs clip_model.c too."""
import numpy as np
import pytest

from instantsoup.models.clip import CLIPModel
from instantsoup.models.clip_config import CLIPConfig, clip_param_shapes
import clip_reference as R

pytestmark = pytest.mark.kernel

CFG = {"model_type": "clip", "projection_dim": 7, "logit_scale_init_value": 2.0,
       "vision_config": {"hidden_size": 12, "intermediate_size": 19, "num_hidden_layers": 2,
                         "num_attention_heads": 3, "image_size": 12, "patch_size": 4},
       "text_config": {"hidden_size": 8, "intermediate_size": 13, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "vocab_size": 30, "max_position_embeddings": 9, "eos_token_id": 29, "hidden_act": "gelu"}}


def make(rng, num_labels=None):
    cfg = CLIPConfig.from_dict(CFG)
    sd = {k: (rng.standard_normal(s) * (0.3 if len(s) > 1 else 1.0)).astype(np.float32)
          for k, s in clip_param_shapes(cfg).items()}
    for k in sd:
        if k.endswith(("layer_norm1.weight", "layer_norm2.weight", "layrnorm.weight", "layernorm.weight",
                       "final_layer_norm.weight")):
            sd[k] = (1 + 0.1 * rng.standard_normal(sd[k].shape)).astype(np.float32)
    model = CLIPModel(cfg, num_labels)
    model.load_state_dict({k: sd[k] for k in model.state_dict() if k in sd}, strict=False)
    model.text.load(sd)
    return model, cfg, sd


def test_features_and_logits_match_numpy(rng):
    model, cfg, sd = make(rng)
    px = rng.standard_normal((3, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(model.encode_image(px), R.vision_features(sd, cfg, px), rtol=1e-5, atol=1e-5)
    ids = rng.integers(0, 28, (2, 6))
    ids[0, 3] = 29
    ids[1, 5] = 29
    np.testing.assert_allclose(model.encode_text(ids), R.text_features(sd, cfg, ids), rtol=1e-5, atol=1e-5)
    head = rng.standard_normal((4, 7)).astype(np.float32)
    model.set_head(head)
    f = R.vision_features(sd, cfg, px)
    want = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ head.T.astype(np.float64)
    np.testing.assert_allclose(model.forward({"pixel_values": px}), want, rtol=1e-5, atol=1e-5)


def _loss64(sd, cfg, px, head, labels):
    f = R.vision_features(sd, cfg, px)
    z = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ head.T.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())


def test_gradients_by_finite_differences(rng):
    model, cfg, sd = make(rng)
    px = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    head = (3 * rng.standard_normal((3, 7))).astype(np.float32)
    model.set_head(head)
    labels = np.array([2, 0])
    loss = model.forward_backward({"pixel_values": px}, labels)
    assert loss == pytest.approx(_loss64(sd, cfg, px, head, labels), rel=1e-5)
    eps = 1e-3
    for name in ["vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
                 "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight",
                 "vision_model.encoder.layers.0.self_attn.q_proj.weight", "vision_model.encoder.layers.1.mlp.fc2.bias",
                 "vision_model.post_layernorm.bias", "visual_projection.weight"]:
        g = model.grads[name].reshape(-1)
        flat = sd[name].reshape(-1)
        for j in rng.choice(flat.size, 2, replace=False):
            plus, minus = dict(sd), dict(sd)
            plus[name] = flat.astype(np.float64).copy()
            minus[name] = flat.astype(np.float64).copy()
            plus[name][j] += eps
            minus[name][j] -= eps
            plus[name] = plus[name].reshape(sd[name].shape)
            minus[name] = minus[name].reshape(sd[name].shape)
            fd = (_loss64(plus, cfg, px, head, labels) - _loss64(minus, cfg, px, head, labels)) / (2 * eps)
            assert g[j] == pytest.approx(fd, rel=2e-2, abs=2e-4), (name, j)


def test_optimizer_step_and_masks(rng):
    from instantsoup.optim import AdamW

    model, cfg, sd = make(rng, num_labels=3)
    masks = {k: (rng.random(m.shape) > 0.5).astype(np.uint8) for k, m in model.masks.items()}
    model.set_masks(masks)
    opt = AdamW(model, lr=1e-2, weight_decay=0.1)
    px = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    before = model.state_dict()["classifier.weight"].copy()
    losses = [opt.train_step({"pixel_values": px}, np.array([0, 1, 2, 1]), max_grad_norm=1.0) for _ in range(5)]
    assert losses[-1] < losses[0]
    assert not np.array_equal(before, model.state_dict()["classifier.weight"])  # the probe trains
    for k, m in masks.items():
        assert (model.state_dict()[k][m == 0] == 0).all()
    twin = model.clone()
    np.testing.assert_array_equal(twin.forward({"pixel_values": px}), model.forward({"pixel_values": px}))
