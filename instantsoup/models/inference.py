"""Inference conveniences shared by the engine models: ``model(**batch)`` like transformers'
(``.logits`` as NumPy, ``.loss`` when labels are given) and ``model.predict(texts, tokenizer)``.

A model class mixes in :class:`InferenceMixin` and provides ``forward(batch) -> logits``,
``num_labels`` and ``config``; nothing here touches gradients or optimizer state.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["InferenceMixin", "ClassifierOutput", "Predictions", "classifier_loss"]

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


@dataclass
class ClassifierOutput:
    """What ``model(**batch)`` returns: ``logits`` (B, num_labels) float32 NumPy; ``loss`` (a float:
    mean cross-entropy, or MSE for one output) when labels were given, else None."""

    logits: np.ndarray
    loss: float | None = None

    def __getitem__(self, key: str) -> Any:  # output["logits"], as with transformers' ModelOutput
        return getattr(self, key)


@dataclass
class Predictions:
    """``model.predict(texts, ...)``: ``logits`` (N, num_labels), ``ids`` (N,) arg-max class ids (the
    scores themselves for regression) and ``labels``: the class names of ``ids`` (from the config's
    ``id2label``; the ids as strings when it has none)."""

    logits: np.ndarray
    ids: np.ndarray
    labels: list


def classifier_loss(logits: np.ndarray, labels: Any) -> float:
    """transformers' loss of a sequence classifier: cross-entropy (mean over the batch) for K >= 2
    outputs, mean squared error for one output; computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.shape[1] == 1:
        return float(np.mean((z[:, 0] - y.reshape(-1).astype(np.float64)) ** 2))
    if y.dtype.kind not in "iu" or y.shape != (z.shape[0],):
        raise ValueError(f"labels: expected ({z.shape[0]},) integer class ids, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels: ids must be in [0, {z.shape[1]})")
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y]))


class InferenceMixin:
    """``__call__`` and ``predict`` for a model with ``forward(batch)``."""

    def __call__(self, batch: Mapping[str, Any] | None = None, /, **inputs: Any) -> ClassifierOutput:
        """``model(**batch)`` or ``model(batch)``: input_ids / attention_mask / token_type_ids (or
        pixel_values) as NumPy arrays (or CPU tensors), optional ``labels``. Runs ``forward`` in the
        model's current mode (call ``model.eval()`` first for deterministic outputs)."""
        args = {**(dict(batch) if batch is not None else {}), **inputs}
        labels = args.pop("labels", None)
        unknown = sorted(set(args) - set(_INPUTS))
        if unknown:
            raise TypeError(f"unexpected model inputs {unknown}; expected some of {list(_INPUTS)} and labels")
        args = {k: _numpy(v) for k, v in args.items() if v is not None}
        logits = self.forward(args)
        return ClassifierOutput(logits, None if labels is None else classifier_loss(logits, _numpy(labels)))

    @property
    def label_names(self) -> list[str]:
        """Class names in id order: the config's ``id2label`` (LABEL_i when it has none)."""
        cfg = getattr(self, "config", None)
        extra = getattr(cfg, "extra", None) or {}
        id2label = extra.get("id2label") if isinstance(extra, dict) else None
        n = int(self.num_labels)
        if isinstance(id2label, dict) and len(id2label) == n:
            return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
        return [f"LABEL_{i}" for i in range(n)]

    def predict(self, texts: Sequence[Any], tokenizer: Any = None, batch_size: int = 32,
                max_length: int | None = None) -> Predictions:
        """Classify ``texts`` (strings or (a, b) pairs) in batches of ``batch_size``, in eval mode.

        ``tokenizer``: an instantsoup ``Tokenizer``, a transformers tokenizer, or a model directory
        (default: the directory the model was loaded from). ``max_length``: default the model's
        ``max_position_embeddings``.
        """
        from instantsoup.task import Split

        if isinstance(texts, (str, tuple)):
            raise TypeError("predict: expected a list of texts (or of (a, b) pairs), not a single one")
        texts = list(texts)
        if len({isinstance(t, str) for t in texts}) > 1:
            raise TypeError("predict: give all texts as strings or all as (a, b) pairs, not a mix")
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
        tok = _tokenizer(tokenizer if tokenizer is not None else getattr(self, "source_path", None))
        cfg = getattr(self, "config", None)
        max_length = max_length or int(getattr(cfg, "max_position_embeddings", 512) or 512)
        was_training = bool(getattr(self, "training", False))
        self.train(False)
        logits = np.zeros((len(texts), int(self.num_labels)), dtype=np.float32)
        try:
            if _is_hf_tokenizer(tok):
                for i in range(0, len(texts), batch_size):
                    chunk = texts[i:i + batch_size]
                    pairs = [t for t in chunk if not isinstance(t, str)]
                    enc = (tok([a for a, _ in chunk], [b for _, b in chunk], padding=True, truncation=True,
                               max_length=max_length, return_tensors="np") if pairs
                           else tok(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="np"))
                    logits[i:i + len(chunk)] = self.forward({k: enc[k] for k in _INPUTS if k in enc})
            else:
                enc = tok.encode(texts, max_length=max_length)
                split = Split([np.asarray(x, np.int64) for x in enc.input_ids], np.zeros(len(texts), np.int64),
                              [np.asarray(x, np.int64) for x in enc.token_type_ids])
                order = np.argsort([len(x) for x in split.input_ids], kind="stable")  # little padding
                pad = int(getattr(tok, "pad_token_id", 0) or 0)
                for i in range(0, len(order), batch_size):
                    idx = order[i:i + batch_size]
                    batch, _ = split.collate(idx, pad)
                    logits[idx] = self.forward(batch)
        finally:
            self.train(was_training)
        if logits.shape[1] == 1:
            ids = logits[:, 0].copy()
            return Predictions(logits, ids, [float(x) for x in ids])
        ids = np.argmax(logits, axis=1)
        names = self.label_names
        return Predictions(logits, ids, [names[i] for i in ids])


def _numpy(x: Any) -> Any:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _is_hf_tokenizer(tok: Any) -> bool:
    return callable(tok) and hasattr(tok, "pad_token_id") and hasattr(tok, "batch_decode")


def _tokenizer(tok: Any) -> Any:
    if tok is None:
        raise ValueError("predict: pass a tokenizer (the model was not loaded from a directory)")
    if isinstance(tok, (str, os.PathLike)):
        from instantsoup.data import Tokenizer

        return Tokenizer.from_pretrained(os.fspath(tok))
    return tok
