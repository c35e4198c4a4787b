"""CLIP checkpoints: configuration, parameter names and shapes, weight files.

Names are those of transformers' ``CLIPModel`` state dict (``vision_model.encoder.layers.0.
self_attn.q_proj.weight``, ``visual_projection.weight``, ``logit_scale``...), so masks and exported
checkpoints line up with what Hugging Face users already have.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import numpy as np

__all__ = ["CLIPTowerConfig", "CLIPConfig", "vision_param_shapes", "text_param_shapes", "clip_param_shapes",
           "vision_prunable_names", "read_checkpoint", "write_checkpoint"]

_ACTS = ("quick_gelu", "gelu")


@dataclass
class CLIPTowerConfig:
    """One tower (vision or text) of a CLIP model (HF ``vision_config`` / ``text_config`` keys)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    # vision
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    # text
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    eos_token_id: int = 49407
    bos_token_id: int = 49406
    pad_token_id: int = 1
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], kind: str) -> "CLIPTowerConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        need = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"CLIP {kind}_config: missing {', '.join(missing)}")
        kw = {k: d[k] for k in names if k in d and d[k] is not None}
        for k in ("image_size", "patch_size"):
            if isinstance(kw.get(k), (list, tuple)):
                a, b = kw[k]
                if a != b:
                    raise ValueError(f"CLIP {kind}_config: non-square {k} {kw[k]} is not supported")
                kw[k] = a
        if isinstance(kw.get("eos_token_id"), (list, tuple)):
            kw["eos_token_id"] = kw["eos_token_id"][0]
        cfg = cls(**kw, extra={k: v for k, v in d.items() if k not in names})
        cfg.validate(kind)
        return cfg

    def validate(self, kind: str) -> None:
        if self.hidden_act not in _ACTS:
            raise ValueError(f"CLIP {kind}_config: hidden_act {self.hidden_act!r} not supported (one of {_ACTS})")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIP {kind}_config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if kind == "vision":
            if self.num_channels != 3:
                raise ValueError(f"CLIP vision_config: num_channels must be 3, got {self.num_channels}")
            if self.image_size % self.patch_size:
                raise ValueError(f"CLIP vision_config: image_size {self.image_size} is not a multiple of "
                                 f"patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


@dataclass
class CLIPConfig:
    """A ``CLIPModel`` config.json: both towers, projection size and the initial logit scale."""

    vision: CLIPTowerConfig
    text: CLIPTowerConfig
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config.json") -> "CLIPConfig":
        mt = d.get("model_type")
        if mt != "clip":
            raise ValueError(f"{where}: model_type is {mt!r}, expected 'clip'")
        for key in ("vision_config", "text_config"):
            if not isinstance(d.get(key), Mapping):
                raise ValueError(f"{where}: a CLIP checkpoint needs a {key} (found keys: {sorted(d)})")
        vision = CLIPTowerConfig.from_dict(d["vision_config"], "vision")
        text = CLIPTowerConfig.from_dict(d["text_config"], "text")
        known = {"vision_config", "text_config", "projection_dim", "logit_scale_init_value"}
        return cls(vision, text, int(d.get("projection_dim", 512)), float(d.get("logit_scale_init_value", 2.6592)),
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "CLIPConfig":
        p = os.path.join(os.fspath(path), "config.json")
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{path}: no config.json")
        with open(p, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), p)

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": self.projection_dim,
                  "logit_scale_init_value": self.logit_scale_init_value,
                  "vision_config": {**self.vision.to_dict(), "model_type": "clip_vision_model",
                                    "projection_dim": self.projection_dim},
                  "text_config": {**self.text.to_dict(), "model_type": "clip_text_model",
                                  "projection_dim": self.projection_dim}})
        for k in ("vocab_size", "max_position_embeddings", "eos_token_id", "bos_token_id", "pad_token_id"):
            d["vision_config"].pop(k, None)
        for k in ("image_size", "patch_size", "num_channels"):
            d["text_config"].pop(k, None)
        for sub in (d, d["vision_config"], d["text_config"]):  # the weights are written as float32
            sub.pop("torch_dtype", None)
            sub["dtype"] = "float32"
        return d


def _layer_shapes(prefix: str, C: int, F: int) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
        s[f"{prefix}.self_attn.{p}.weight"] = (C, C)
        s[f"{prefix}.self_attn.{p}.bias"] = (C,)
    s[f"{prefix}.layer_norm1.weight"] = (C,)
    s[f"{prefix}.layer_norm1.bias"] = (C,)
    s[f"{prefix}.mlp.fc1.weight"] = (F, C)
    s[f"{prefix}.mlp.fc1.bias"] = (F,)
    s[f"{prefix}.mlp.fc2.weight"] = (C, F)
    s[f"{prefix}.mlp.fc2.bias"] = (C,)
    s[f"{prefix}.layer_norm2.weight"] = (C,)
    s[f"{prefix}.layer_norm2.bias"] = (C,)
    return s


def vision_param_shapes(cfg: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Vision tower + visual projection, in a fixed order (HF names -> shapes)."""
    v = cfg.vision
    C, P = v.hidden_size, v.patch_size
    s: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (C,),
        "vision_model.embeddings.patch_embedding.weight": (C, 3, P, P),
        "vision_model.embeddings.position_embedding.weight": (v.num_patches + 1, C),
        "vision_model.pre_layrnorm.weight": (C,),
        "vision_model.pre_layrnorm.bias": (C,),
    }
    for i in range(v.num_hidden_layers):
        s.update(_layer_shapes(f"vision_model.encoder.layers.{i}", C, v.intermediate_size))
    s["vision_model.post_layernorm.weight"] = (C,)
    s["vision_model.post_layernorm.bias"] = (C,)
    s["visual_projection.weight"] = (cfg.projection_dim, C)
    return s


def text_param_shapes(cfg: CLIPConfig) -> dict[str, tuple[int, ...]]:
    """Text tower + text projection + logit scale (HF names -> shapes)."""
    t = cfg.text
    C = t.hidden_size
    s: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (t.vocab_size, C),
        "text_model.embeddings.position_embedding.weight": (t.max_position_embeddings, C),
    }
    for i in range(t.num_hidden_layers):
        s.update(_layer_shapes(f"text_model.encoder.layers.{i}", C, t.intermediate_size))
    s["text_model.final_layer_norm.weight"] = (C,)
    s["text_model.final_layer_norm.bias"] = (C,)
    s["text_projection.weight"] = (cfg.projection_dim, C)
    s["logit_scale"] = ()
    return s


def clip_param_shapes(cfg: CLIPConfig) -> dict[str, tuple[int, ...]]:
    return {**vision_param_shapes(cfg), **text_param_shapes(cfg)}


def vision_prunable_names(cfg: CLIPConfig) -> list[str]:
    """q/k/v/out projections and fc1/fc2 weights of every vision encoder layer."""
    out = []
    for i in range(cfg.vision.num_hidden_layers):
        p = f"vision_model.encoder.layers.{i}"
        out += [f"{p}.self_attn.{x}.weight" for x in ("q_proj", "k_proj", "v_proj", "out_proj")]
        out += [f"{p}.mlp.fc1.weight", f"{p}.mlp.fc2.weight"]
    return out


_IGNORED = ("position_ids",)  # non-persistent buffers some checkpoints carry


def read_checkpoint(path: str | os.PathLike, cfg: CLIPConfig) -> dict[str, np.ndarray]:
    """Read a CLIPModel checkpoint directory's weights as float32 arrays, checked against ``cfg``.

    ``model.safetensors`` (or sharded ``model-*.safetensors`` with an index) is read with the
    safetensors package; ``pytorch_model.bin`` only through ``torch.load(weights_only=True)``.
    Missing tensors or wrong shapes raise ValueError naming the tensor.
    """
    path = os.fspath(path)
    sd: dict[str, np.ndarray] = {}
    st = os.path.join(path, "model.safetensors")
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(st) or os.path.isfile(idx):
        from safetensors.numpy import load_file

        files = [st] if os.path.isfile(st) else sorted(set(json.load(open(idx))["weight_map"].values()))
        for f in files:
            sd.update(load_file(os.path.join(path, os.path.basename(f))))
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        import torch

        raw = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu", weights_only=True)
        sd = {k: v.float().numpy() for k, v in raw.items()}
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
    sd = {(k[len("clip."):] if k.startswith("clip.") else k): v for k, v in sd.items()}
    shapes = clip_param_shapes(cfg)
    has_text = any(k.startswith("text_model.") for k in sd)
    has_vision = any(k.startswith("vision_model.") for k in sd)
    if not has_vision:
        raise ValueError(f"{path}: the checkpoint has no vision tower (no vision_model.* tensors)")
    if not has_text:
        raise ValueError(f"{path}: the checkpoint has no text tower (no text_model.* tensors); "
                         "zero-shot heads need it")
    out = {}
    for name, shape in shapes.items():
        if name not in sd:
            raise ValueError(f"{path}: missing tensor {name} (expected shape {shape})")
        a = np.asarray(sd[name])
        if tuple(a.shape) != shape:
            raise ValueError(f"{path}: tensor {name} has shape {tuple(a.shape)}, config says {shape}")
        out[name] = np.array(a, dtype=np.float32, order="C")  # keeps 0-d logit_scale 0-d
    return out


def write_checkpoint(path: str | os.PathLike, cfg: CLIPConfig, tensors: Mapping[str, np.ndarray]) -> None:
    """Write config.json + model.safetensors of a CLIPModel directory (atomic renames)."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, ".model.safetensors.tmp")
    save_file({k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}, tmp,
              metadata={"format": "pt"})
    os.replace(tmp, os.path.join(path, "model.safetensors"))
    tmp = os.path.join(path, ".config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=2)
    os.replace(tmp, os.path.join(path, "config.json"))
