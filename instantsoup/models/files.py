"""Reading Hugging Face checkpoint directories: config.json and the weights (single or sharded
safetensors, or a torch ``pytorch_model.bin``)."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["read_config", "read_checkpoint"]


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a Hugging Face checkpoint directory (ValueError if unusable)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a directory (expected a Hugging Face checkpoint directory "
                         "with config.json and model.safetensors)")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path!r} has no config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_path}: cannot read the config ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object")
    return cfg


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("reading model.safetensors needs the 'safetensors' package") from e
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: cannot read this safetensors file ({type(e).__name__}: {e}); "
                         "it may be truncated, corrupted or hold a dtype NumPy lacks (bfloat16: "
                         "convert it to float32 first)") from e


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ValueError(
            f"{path}: a pytorch_model.bin checkpoint can only be read with torch installed. Convert "
            "it once where torch is available: transformers.AutoModel.from_pretrained(dir)"
            ".save_pretrained(dir, safe_serialization=True) writes model.safetensors") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot load it with torch.load(weights_only=True) "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path}: entry {k!r} is not a tensor")
        out[k] = v.detach().to(torch.float32).contiguous().numpy() if v.is_floating_point() else v.numpy()
    return out


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The raw tensors of a checkpoint directory (single or sharded safetensors, or torch .bin)."""
    st = os.path.join(path, "model.safetensors")
    if os.path.isfile(st):
        return _read_safetensors(st)
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(idx):
        try:
            with open(idx, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{idx}: cannot read the shard index ({e})") from e
        out: dict[str, np.ndarray] = {}
        for name in files:
            out.update(_read_safetensors(os.path.join(path, name)))
        return out
    binp = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(binp):
        return _read_torch_bin(binp)
    raise ValueError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
