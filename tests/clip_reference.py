"""A plain NumPy CLIP forward pass (both towers) over a HF-named state dict.

This is the reference the C implementation is tested against, and it is fast enough to encode
the prompts of a zero-shot head (a few thousand short sequences). Dimension letters as in csrc:
B batch, T tokens, C channels, NH heads, HS head size, D projection size.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from instantsoup.models.clip_config import CLIPConfig, CLIPTowerConfig

__all__ = ["vision_features", "text_features", "eos_positions", "layer_norm", "activation"]


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if kind == "gelu":
        try:
            from scipy.special import erf
        except ImportError:  # pragma: no cover
            erf = np.vectorize(math.erf)
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    raise ValueError(f"unknown activation {kind!r}")


def _linear(x, sd, name):
    y = x @ sd[name + ".weight"].T
    b = sd.get(name + ".bias")
    return y if b is None else y + b


def _encoder(x: np.ndarray, sd: Mapping[str, np.ndarray], prefix: str, cfg: CLIPTowerConfig,
             mask: np.ndarray | None) -> np.ndarray:
    """Pre-LN encoder. x is (B,T,C); mask (B,1,T,T) additive or None."""
    B, T, C = x.shape
    NH = cfg.num_attention_heads
    HS = C // NH
    for i in range(cfg.num_hidden_layers):
        p = f"{prefix}.layers.{i}"
        h = layer_norm(x, sd[p + ".layer_norm1.weight"], sd[p + ".layer_norm1.bias"], cfg.layer_norm_eps)
        q = _linear(h, sd, p + ".self_attn.q_proj").reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
        k = _linear(h, sd, p + ".self_attn.k_proj").reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
        v = _linear(h, sd, p + ".self_attn.v_proj").reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
        att = (q @ k.transpose(0, 1, 3, 2)) * (HS ** -0.5)
        if mask is not None:
            att = att + mask
        att = att - att.max(-1, keepdims=True)
        att = np.exp(att)
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + _linear(o, sd, p + ".self_attn.out_proj")
        h = layer_norm(x, sd[p + ".layer_norm2.weight"], sd[p + ".layer_norm2.bias"], cfg.layer_norm_eps)
        h = activation(_linear(h, sd, p + ".mlp.fc1"), cfg.hidden_act)
        x = x + _linear(h, sd, p + ".mlp.fc2")
    return x


def vision_features(sd: Mapping[str, np.ndarray], cfg: CLIPConfig, pixel_values: np.ndarray,
                    dtype=np.float64, project: bool = True) -> np.ndarray:
    """Image features (B, D) = visual_projection(post_layernorm(class token)), like transformers'
    ``get_image_features``; ``project=False`` gives the pooled (B, C) output."""
    v = cfg.vision
    sd = {k: np.asarray(a, dtype=dtype) for k, a in sd.items() if k.startswith(("vision_model.", "visual_"))}
    x = np.asarray(pixel_values, dtype=dtype)
    B, _, H, W = x.shape
    P, C = v.patch_size, v.hidden_size
    GH, GW = H // P, W // P
    patches = x.reshape(B, 3, GH, P, GW, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, GH * GW, 3 * P * P)
    emb = patches @ sd["vision_model.embeddings.patch_embedding.weight"].reshape(C, -1).T
    cls = np.broadcast_to(sd["vision_model.embeddings.class_embedding"], (B, 1, C))
    h = np.concatenate([cls, emb], axis=1) + sd["vision_model.embeddings.position_embedding.weight"]
    h = layer_norm(h, sd["vision_model.pre_layrnorm.weight"], sd["vision_model.pre_layrnorm.bias"], v.layer_norm_eps)
    h = _encoder(h, sd, "vision_model.encoder", v, None)
    pooled = layer_norm(h[:, 0], sd["vision_model.post_layernorm.weight"], sd["vision_model.post_layernorm.bias"],
                        v.layer_norm_eps)
    return pooled @ sd["visual_projection.weight"].T if project else pooled


def eos_positions(input_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """Pooling position per sequence, as transformers' CLIPTextModel picks it: the first
    ``eos_token_id`` (or, for legacy configs with eos_token_id == 2, the largest id)."""
    ids = np.asarray(input_ids)
    if eos_token_id == 2:
        return ids.argmax(-1)
    hit = ids == eos_token_id
    if not hit.any(-1).all():
        bad = int(np.flatnonzero(~hit.any(-1))[0])
        raise ValueError(f"input_ids row {bad} has no end-of-text token (id {eos_token_id}); "
                         "tokenize with the CLIP tokenizer, which appends it")
    return hit.argmax(-1)


def text_features(sd: Mapping[str, np.ndarray], cfg: CLIPConfig, input_ids: np.ndarray,
                  attention_mask: np.ndarray | None = None, dtype=np.float64, project: bool = True) -> np.ndarray:
    """Text features (B, D) = text_projection(final_layer_norm(h)[end-of-text]), like
    transformers' ``get_text_features`` (causal attention; padding keys masked)."""
    t = cfg.text
    ids = np.asarray(input_ids)
    B, T = ids.shape
    if T > t.max_position_embeddings:
        raise ValueError(f"input_ids: {T} tokens, the text tower has {t.max_position_embeddings} positions")
    if ids.min() < 0 or ids.max() >= t.vocab_size:
        raise ValueError(f"input_ids: ids must be in 0..{t.vocab_size - 1}")
    sd = {k: np.asarray(a, dtype=dtype) for k, a in sd.items() if k.startswith(("text_model.", "text_"))}
    h = sd["text_model.embeddings.token_embedding.weight"][ids] + \
        sd["text_model.embeddings.position_embedding.weight"][:T]
    neg = np.finfo(dtype).min
    mask = np.triu(np.full((T, T), neg, dtype=dtype), k=1)[None, None]
    if attention_mask is not None:
        keep = np.asarray(attention_mask).astype(bool)[:, None, None, :]
        mask = np.where(keep, mask, neg)
        mask = np.broadcast_to(mask, (B, 1, T, T)).copy()
        # a fully masked row (a padding query) attends nowhere; keep it finite like torch's sdpa
        dead = (mask == neg).all(-1, keepdims=True)
        mask = np.where(dead, 0.0, mask)
    h = _encoder(h, sd, "text_model.encoder", t, mask)
    h = layer_norm(h, sd["text_model.final_layer_norm.weight"], sd["text_model.final_layer_norm.bias"], t.layer_norm_eps)
    pooled = h[np.arange(B), eos_positions(ids, t.eos_token_id)]
    return pooled @ sd["text_projection.weight"].T if project else pooled
