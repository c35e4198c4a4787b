"""Model loading: ``load_model(path)`` dispatches on ``model_type`` in the checkpoint's config.json."""
from __future__ import annotations

import json
import os
from typing import Any

from instantsoup.models.bert import BertConfig, BertModel
from instantsoup.precision import check_precision

__all__ = ["load_model", "BertModel", "BertConfig"]

_LOADERS = {"bert": BertModel.from_pretrained}

# --- vision (issue 7): CLIP ---
from instantsoup.models.clip import CLIPModel, load_clip  # noqa: E402

_LOADERS["clip"] = load_clip
__all__ += ["CLIPModel", "load_clip"]



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


def load_model(path: str | os.PathLike, num_labels: int | None = None, seed: int = 0, precision: str = "fp32"):
    """Load a Hugging Face checkpoint directory into an instantsoup engine model.

    Args:
        path: directory with config.json and model.safetensors (or pytorch_model.bin, read
            through torch with ``weights_only=True`` when torch is installed).
        num_labels: labels of the classification head (1 = regression with MSE). Default: from
            the config. A head of another size in the checkpoint is re-initialised.
        seed: seed for the weights the checkpoint lacks (classifier, pooler), initialised like
            transformers does: normal(0, initializer_range) weights, zero biases.
        precision: "fp32" (default) or "bf16": the precision of the model's matrix products
            (bf16 operands, fp32 accumulation; weights, gradients and everything else stay fp32;
            see instantsoup.precision). Settable later as ``model.precision``.

    Returns:
        a model object (``model.kind`` says which: "bert").
    """
    check_precision(precision)
    cfg = read_config(path)
    mt = cfg.get("model_type")
    if mt not in _LOADERS:
        raise ValueError(f"{os.fspath(path)}: model_type {mt!r} is not supported "
                         f"(supported: {', '.join(sorted(_LOADERS))})")
    model = _LOADERS[mt](path, num_labels=num_labels, seed=seed)
    model.precision = precision
    return model
