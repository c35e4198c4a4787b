"""ViT (``ViTForImageClassification``): patch embedding (a conv with bias) + class token + position
embeddings, pre-LN encoder, a final LayerNorm and a linear classifier on the class token (no
pooler). Takes ``pixel_values`` (B, 3, H, W) like CLIP's vision tower; image tasks as for CLIP."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from instantsoup.models.encoder import HEAD_LINEAR, Family, register


def _check(d: Mapping[str, Any]) -> None:
    if d.get("num_channels", 3) != 3:
        raise ValueError(f"config: num_channels={d.get('num_channels')} is not supported (RGB images: 3)")
    if not d.get("qkv_bias", True):
        raise ValueError("config: qkv_bias=False is not supported")
    for k in ("image_size", "patch_size"):
        if not isinstance(d.get(k, 0), int):
            raise ValueError(f"config: non-square {k} {d.get(k)!r} is not supported")


VIT = register(Family(
    model_type="vit", architecture="ViTForImageClassification", prefix="vit.", layer="vit.encoder.layer.{l}.",
    layer_names={"q": "attention.attention.query", "k": "attention.attention.key",
                 "v": "attention.attention.value", "o": "attention.output.dense", "ln1": "layernorm_before",
                 "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "layernorm_after"},
    embeddings={"cls": "vit.embeddings.cls_token", "wpe": "vit.embeddings.position_embeddings",
                "patchw": "vit.embeddings.patch_embeddings.projection.weight",
                "patchb": "vit.embeddings.patch_embeddings.projection.bias"},
    head={"lnf_w": "vit.layernorm.weight", "lnf_b": "vit.layernorm.bias",
          "clsw": "classifier.weight", "clsb": "classifier.bias"},
    options={"head": HEAD_LINEAR, "final_ln": 1, "prenorm": 1, "patches": 1},
    defaults={"image_size": 224, "patch_size": 16, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
              "type_vocab_size": 0, "vocab_size": 0, "max_position_embeddings": 0, "pad_token_id": None},
    base_prefixes=("embeddings.", "encoder.", "layernorm."), ignore=("vit.pooler.", "pooler."), check=_check, image=True,
    # transformers 5 renamed ViT's modules; the published checkpoints (and our exports) use the old names
    aliases=(("vit.layers.", "vit.encoder.layer."), ("layers.", "encoder.layer."),
             ("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
             ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")),
    absent=("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "classifier_dropout")))
