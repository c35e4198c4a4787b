"""Model loading: ``load_model(path)`` dispatches on ``model_type`` in the checkpoint's config.json.

The registry below has one line per family. Encoder classifier families (BERT, RoBERTa, ...) are
:class:`~instantsoup.models.encoder.Family` specs in their own modules, all loaded by
``EncoderClassifier.from_pretrained``; CLIP has its own model class.
"""
from __future__ import annotations

import os
from typing import Any

# the encoder families: importing a family module registers it (instantsoup.models.encoder.register)
from instantsoup.models import bert, distilbert, electra, roberta, vit  # noqa: F401
from instantsoup.models.base import EngineModel
from instantsoup.models.bert import BertConfig, BertModel
from instantsoup.models.clip import CLIPModel, load_clip
from instantsoup.models.encoder import EncoderClassifier, EncoderConfig, encoder_families
from instantsoup.models.files import read_checkpoint, read_config
from instantsoup.precision import check_precision

__all__ = ["load_model", "read_config", "supported_model_types", "EngineModel", "EncoderClassifier",
           "EncoderConfig", "BertModel", "BertConfig", "CLIPModel", "load_clip"]

_LOADERS = {mt: EncoderClassifier.from_pretrained for mt in encoder_families()}
_LOADERS["clip"] = load_clip


def supported_model_types() -> list[str]:
    """The config.json ``model_type`` values load_model accepts."""
    return sorted(_LOADERS)


def load_model(path: str | os.PathLike, num_labels: int | None = None, seed: int = 0,
               precision: str = "fp32") -> EngineModel:
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
        an :class:`EngineModel` (``model.kind`` is its ``model_type``: one of
        :func:`supported_model_types`).
    """
    check_precision(precision)
    cfg = read_config(path)
    mt = cfg.get("model_type")
    if mt not in _LOADERS:
        raise ValueError(f"{os.fspath(path)}: model_type {mt!r} is not supported "
                         f"(supported: {', '.join(supported_model_types())})")
    model = _LOADERS[mt](path, num_labels=num_labels, seed=seed)
    model.precision = precision
    return model
