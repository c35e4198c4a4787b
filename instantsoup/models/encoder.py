"""Encoder classifiers on the C engine: one model class for every family (BERT, RoBERTa,
XLM-RoBERTa, DistilBERT, ELECTRA, ViT).

The C side (csrc/classifier.h) is one encoder classifier whose embeddings, LayerNorm placement and
head are options. A family (instantsoup/models/<family>.py) is a :class:`Family`: its Hugging Face
config keys, parameter names, C options and export class. This module parses and validates configs,
maps Hugging Face names onto zero-copy NumPy views of the C buffer, reads and writes checkpoints and
turns batches into the arrays the C side expects. Shapes: B batch, T tokens, C hidden size, NL labels.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from instantsoup._native import _C
from instantsoup.models.base import EngineModel
from instantsoup.models.files import read_checkpoint, read_config
from instantsoup.models.inference import InferenceMixin
from instantsoup.precision import autocast

log = logging.getLogger(__name__)

# hidden_act -> C activation code (csrc/ops.h isp_act)
ACTIVATIONS = {
    "gelu": 0,
    "gelu_python": 0,
    "gelu_new": 1,
    "gelu_pytorch_tanh": 1,
    "gelu_fast": 1,
    "relu": 2,
    "quick_gelu": 3,
}

PROBLEM_TYPES = ("single_label_classification", "regression")

# head kinds of csrc/classifier.h (clf_head)
HEAD_LINEAR, HEAD_TANH, HEAD_GELU, HEAD_RELU = 0, 1, 2, 3

# the encoder layer's parts, in the order a layer's names are listed: name -> C tensor (weight)
_LAYER_PARTS = ("q", "k", "v", "o", "ln1", "fc1", "fc2", "ln2")


@dataclasses.dataclass(frozen=True)
class Family:
    """What makes one encoder family: names, config keys, C options, export class.

    model_type:   config.json's model_type (and the key of the registry in models/__init__.py).
    architecture: the transformers class an export names (``architectures``).
    layer:        prefix of encoder layer l, with ``{l}``.
    layer_names:  part (q k v o ln1 fc1 fc2 ln2) -> module name inside a layer (weights and
                  biases are ``<module>.weight`` / ``.bias``).
    embeddings:   C tensor -> Hugging Face name, in checkpoint order (text: wte wpe wtt embln_w
                  embln_b; images: cls wpe patchw patchb).
    head:         C tensor -> Hugging Face name (lnf_w lnf_b poolw poolb clsw clsb as present).
    options:      keyword options of _C.clf_new (head, head_dropin, pad_positions, final_ln,
                  prenorm, patches).
    renames:      config.json key -> EncoderConfig field (DistilBERT's dim, n_layers, ...).
    defaults:     EncoderConfig field -> the family's default where config.json lacks it.
    base_prefixes: top-level names of a base-model checkpoint that lack the model prefix.
    ignore:       checkpoint key prefixes to drop (pre-training heads, unused poolers).
    check:        extra config refusals: dict -> None (raises ValueError).
    image:        True: the model takes pixel_values (B, 3, H, W); else input_ids.
    absent:       EncoderConfig fields the family's config.json does not have (not exported).
    embedding_size: the config's embedding_size may differ from hidden_size (ELECTRA: the
                  embeddings are projected to hidden_size by ``embeddings_project``).
    aliases:      (new, old) name fragments: checkpoints written by newer transformers that renamed
                  modules load under the published (older) names, which we write back.
    """

    model_type: str
    architecture: str
    prefix: str
    layer: str
    layer_names: Mapping[str, str]
    embeddings: Mapping[str, str]
    head: Mapping[str, str]
    options: Mapping[str, int]
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    base_prefixes: tuple[str, ...] = ("embeddings.", "encoder.")
    ignore: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any]], None] | None = None
    image: bool = False
    absent: tuple[str, ...] = ("image_size", "patch_size")
    aliases: tuple[tuple[str, str], ...] = ()
    embedding_size: bool = False

    def max_tokens(self, config: Mapping[str, Any]) -> int | None:
        """The longest input (in tokens) config.json's position table allows: RoBERTa's positions
        start after the padding index (``pad_token_id + 1``), so 514 rows give 512 tokens."""
        limit = config.get("max_position_embeddings")
        if self.image or not isinstance(limit, int):
            return None
        if self.options.get("pad_positions"):
            limit -= int(config.get("pad_token_id", self.defaults.get("pad_token_id", 0))) + 1
        return limit


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family to the registry of encoder classifiers (models/__init__.py imports them)."""
    _REGISTRY[family.model_type] = family
    return family


def encoder_families() -> list[str]:
    """The model_types of the registered encoder classifier families."""
    return sorted(_REGISTRY)


def family_of(model_type: str) -> Family:
    if model_type not in _REGISTRY:
        raise ValueError(f"config: model_type {model_type!r} is not an encoder classifier family "
                         f"(supported: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[model_type]


@dataclasses.dataclass
class EncoderConfig:
    """The fields of a Hugging Face encoder config.json that the engine uses (BERT's names; a
    family's own keys are mapped by ``Family.renames``).

    Every other key of the original config is kept in ``extra`` (and written back by ``to_dict``)
    after checking it does not change the maths.
    """

    vocab_size: int = 0
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    pad_token_id: int | None = 0
    num_labels: int = 2
    problem_type: str = "single_label_classification"
    image_size: int = 0
    patch_size: int = 0
    model_type: str = "bert"
    extra: dict = dataclasses.field(default_factory=dict)

    _PROBS = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    @property
    def family(self) -> Family:
        return family_of(self.model_type)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_labels: int | None = None,
                  model_type: str | None = None) -> "EncoderConfig":
        """Parse and validate a config dict; raise ValueError for anything that changes the maths.

        model_type: the family expected (default: the dict's own, else "bert").
        """
        d = dict(d)
        mt = d.get("model_type", model_type or "bert")
        if model_type is not None and mt != model_type:
            raise ValueError(f"config: model_type {mt!r} is not {model_type!r}")
        fam = family_of(mt)
        d["model_type"] = mt
        for hf, ours in fam.renames.items():
            if hf in d:
                d[ours] = d.pop(hf)
        for k, v in fam.defaults.items():
            d.setdefault(k, v)
        if not fam.image and "vocab_size" not in d:
            raise ValueError("config: vocab_size is missing")
        pet = d.get("position_embedding_type", "absolute")
        if pet not in (None, "absolute"):
            raise ValueError(f"config: position_embedding_type={pet!r} is not supported (only 'absolute')")
        for key in ("is_decoder", "add_cross_attention"):
            if d.get(key):
                raise ValueError(f"config: {key}=True is not supported (encoder-only models)")
        if d.get("pruned_heads"):
            raise ValueError("config: pruned_heads is not supported (heads of unequal sizes)")
        es = d.get("embedding_size")
        if fam.embedding_size and es is not None and (isinstance(es, bool) or not isinstance(es, int) or es < 1):
            raise ValueError(f"config: embedding_size must be a positive integer, got {es!r}")
        if not fam.embedding_size and es not in (None, d.get("hidden_size", 768)):
            raise ValueError(f"config: embedding_size != hidden_size is not supported for {mt}")
        act = d.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act={act!r} is not supported "
                             f"(supported: {', '.join(sorted(ACTIVATIONS))})")
        if fam.check is not None:
            fam.check(d)
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: d.pop(k) for k in list(d) if k in fields}
        # num_labels: argument > config num_labels > len(id2label) > 2
        if num_labels is None:
            if "num_labels" in kw:
                num_labels = kw["num_labels"]
            elif isinstance(d.get("id2label"), dict):
                num_labels = len(d["id2label"])
            else:
                num_labels = 2
        elif isinstance(d.get("id2label"), dict) and len(d["id2label"]) != num_labels:
            d.pop("id2label", None)
            d.pop("label2id", None)
        kw["num_labels"] = num_labels
        cfg = cls(**kw, extra=d)
        cfg._validate(explicit_problem="problem_type" in kw and kw["problem_type"] is not None)
        return cfg

    def _validate(self, explicit_problem: bool) -> None:
        ints = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_labels"]
        ints += ["image_size", "patch_size"] if self.family.image else ["vocab_size", "max_position_embeddings"]
        for k in ints + ["type_vocab_size"]:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "type_vocab_size" else 1):
                raise ValueError(f"config: {k} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"config: hidden_size ({self.hidden_size}) is not a multiple of "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.family.image and self.image_size % self.patch_size:
            raise ValueError(f"config: image_size ({self.image_size}) is not a multiple of patch_size "
                             f"({self.patch_size})")
        for k in self._PROBS + ("classifier_dropout",):
            v = getattr(self, k)
            if v is None and k == "classifier_dropout":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ValueError(f"config: {k} must be a number in [0, 1), got {v!r}")
        for k in ("layer_norm_eps", "initializer_range"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"config: {k} must be a positive number, got {v!r}")
        if self.pad_token_id is not None and not self.family.image and (
                isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int)
                or not 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"config: pad_token_id {self.pad_token_id!r} is outside the vocabulary")
        default_problem = "regression" if self.num_labels == 1 else "single_label_classification"
        if self.problem_type is None or not explicit_problem:
            self.problem_type = default_problem
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"config: problem_type={self.problem_type!r} is not supported "
                             f"(supported: {', '.join(PROBLEM_TYPES)})")
        if self.problem_type != default_problem:
            raise ValueError(f"config: problem_type={self.problem_type!r} does not fit num_labels="
                             f"{self.num_labels} (regression needs exactly 1 label, classification >= 2)")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def classifier_dropout_prob(self) -> float:
        return self.hidden_dropout_prob if self.classifier_dropout is None else float(self.classifier_dropout)

    @property
    def embedding_size(self) -> int:
        """Width of the token embeddings: embedding_size (ELECTRA) or hidden_size."""
        return int(self.extra.get("embedding_size") or self.hidden_size) if self.family.embedding_size \
            else self.hidden_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image of a ViT (patches + class token); 0 for text models."""
        return (self.image_size // self.patch_size) ** 2 + 1 if self.family.image else 0

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config dict (original keys kept; labels and problem type updated)."""
        fam = self.family
        d = dict(self.extra)
        back = {ours: hf for hf, ours in fam.renames.items()}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "model_type") and f.name not in fam.absent:
                d[back.get(f.name, f.name)] = getattr(self, f.name)
        d["model_type"] = fam.model_type
        d["architectures"] = [fam.architecture]
        d.pop("torch_dtype", None)  # the weights are written as float32: say so (a float16 source
        d["dtype"] = "float32"      # config would make transformers load the export in half precision)
        id2label = d.get("id2label")
        if not isinstance(id2label, dict) or len(id2label) != self.num_labels:
            d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        d["num_labels"] = self.num_labels
        return d


# ---------------------------------------------------------------------------------------------
# name mapping: Hugging Face names <-> (offset, shape) in the C parameter buffer


def _layout(cfg: EncoderConfig, tensors: list[tuple[str, int, int]]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """HF name -> (offset in floats, shape), in the order of transformers' state_dict."""
    fam = cfg.family
    span = {name: (off, size) for name, off, size in tensors}
    C, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    NL, P, E = cfg.num_labels, cfg.patch_size, cfg.embedding_size
    shapes = {"wte": (cfg.vocab_size, E), "wtt": (cfg.type_vocab_size, E), "embln_w": (E,), "embln_b": (E,),
              "embprojw": (C, E), "embprojb": (C,),
              "wpe": (1, cfg.num_tokens, C) if fam.image else (cfg.max_position_embeddings, E),
              "patchw": (C, 3, P, P), "patchb": (C,), "cls": (1, 1, C), "lnf_w": (C,), "lnf_b": (C,),
              "poolw": (C, C), "poolb": (C,), "clsw": (NL, C), "clsb": (NL,)}
    out: dict[str, tuple[int, tuple[int, ...]]] = {}
    for t, name in fam.embeddings.items():
        if span[t][1] > 0:  # (ELECTRA's projection exists only when embedding_size != hidden_size)
            out[name] = (span[t][0], shapes[t])
    # part -> (weight tensor, per-layer weight offset and shape, bias tensor, bias offset and shape)
    parts = {"q": ("enc.qkvw", 0, (C, C), "enc.qkvb", 0, C), "k": ("enc.qkvw", 1, (C, C), "enc.qkvb", 1, C),
             "v": ("enc.qkvw", 2, (C, C), "enc.qkvb", 2, C), "o": ("enc.attprojw", 0, (C, C), "enc.attprojb", 0, C),
             "ln1": ("enc.ln1w", 0, (C,), "enc.ln1b", 0, C), "fc1": ("enc.fcw", 0, (F, C), "enc.fcb", 0, F),
             "fc2": ("enc.fcprojw", 0, (C, F), "enc.fcprojb", 0, C), "ln2": ("enc.ln2w", 0, (C,), "enc.ln2b", 0, C)}
    for l in range(L):
        p = fam.layer.format(l=l)
        for part in _LAYER_PARTS:
            wt, wi, wshape, bt, bi, bsize = parts[part]
            per_w = math.prod(wshape) * (3 if wt == "enc.qkvw" else 1)
            per_b = bsize * (3 if bt == "enc.qkvb" else 1)
            name = p + fam.layer_names[part]
            out[name + ".weight"] = (span[wt][0] + l * per_w + wi * math.prod(wshape), wshape)
            out[name + ".bias"] = (span[bt][0] + l * per_b + bi * bsize, (bsize,))
    for t, name in fam.head.items():
        out[name] = (span[t][0], shapes[t])
    return out


def _normalise_key(fam: Family, key: str) -> str | None:
    """Checkpoint key -> our HF name (None: a known buffer or pre-training head to ignore)."""
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    for new, old in fam.aliases:
        key = key.replace(new, old)
    if key.startswith(fam.base_prefixes):
        key = fam.prefix + key
    if key.endswith("embeddings.position_ids") or key.endswith("embeddings.token_type_ids"):
        return None
    if key.startswith(fam.ignore):
        return None
    return key


# ---------------------------------------------------------------------------------------------
# the model


class EncoderClassifier(InferenceMixin, EngineModel):
    """A sequence (or image) classifier of one encoder family on the C engine, with the maths of
    its ``...ForSequenceClassification`` (``ViTForImageClassification``) class in transformers.

    Parameters live in one float32 C buffer; ``state_dict()``, ``grads`` and ``masks`` are NumPy
    views of it under the Hugging Face names. Not thread-safe: use ``clone()`` per thread.
    ``model(**batch)`` returns ``.logits`` (and ``.loss`` given ``labels``) as transformers does;
    ``model.predict(texts, tokenizer)`` classifies raw texts (see :mod:`instantsoup.models.inference`).
    """

    def __init__(self, config: EncoderConfig):
        if not isinstance(config, EncoderConfig):
            raise TypeError(f"config: expected an EncoderConfig, got {type(config).__name__}")
        self.config = config
        c = config
        fam = c.family
        self.kind = fam.model_type
        if c.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act={c.hidden_act!r} is not supported "
                             f"(supported: {', '.join(sorted(ACTIVATIONS))})")
        opts = dict(fam.options)
        if fam.image:
            opts.update(image_size=int(c.image_size), patch_size=int(c.patch_size))
        if fam.embedding_size:
            opts.update(embedding_size=c.embedding_size)
        self._h = _C.clf_new(int(c.vocab_size), int(c.max_position_embeddings), int(c.type_vocab_size),
                               c.num_labels, c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                               c.intermediate_size, ACTIVATIONS[c.hidden_act], float(c.layer_norm_eps),
                               float(c.hidden_dropout_prob), float(c.attention_probs_dropout_prob),
                               float(c.classifier_dropout_prob),
                               -1 if c.pad_token_id is None or fam.image else int(c.pad_token_id), **opts)
        self._params, self._grads, self._mask_buf = _C.model_buffers(self._h)
        tensors = _C.model_tensors(self._h)
        self._layout = _layout(c, tensors)
        self._views = {k: self._params[o:o + math.prod(s)].reshape(s) for k, (o, s) in self._layout.items()}
        self._gviews = {k: self._grads[o:o + math.prod(s)].reshape(s) for k, (o, s) in self._layout.items()}
        n_mask = self._mask_buf.size
        self.prunable_names = [k for k, (o, s) in self._layout.items() if o < n_mask and len(s) == 2
                               and o + math.prod(s) <= n_mask]
        self._mviews = {k: self._mask_buf[o:o + math.prod(s)].reshape(s)
                            for k, (o, s) in self._layout.items() if k in self.prunable_names}
        ln = [span for name, *span in tensors if name in ("enc.ln1w", "enc.ln2w", "embln_w", "lnf_w")]
        self._ln_ranges = [(o, o + n) for o, n in ln if n > 0]
        self._training = False
        self._seed = 0
        self.source_path: str | None = None  # the checkpoint directory it was loaded from
        _C.model_set_training(self._h, False)

    # -- basic facts --------------------------------------------------------------------------

    @property
    def family(self) -> Family:
        return self.config.family

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def problem_type(self) -> str:
        return self.config.problem_type

    @property
    def num_tokens(self) -> int:
        """Tokens per image (ViT: patches + class token), for cost accounting; 0 for text."""
        return self.config.num_tokens

    def cost_dims(self) -> dict:
        c = self.config
        return {"L": c.num_hidden_layers, "H": c.hidden_size, "I": c.intermediate_size, "K": c.num_labels}

    def default_no_decay(self, name: str) -> bool:
        """Hugging Face Trainer's grouping: no weight decay on biases and LayerNorm weights."""
        if name.endswith(".bias"):
            return True
        off = self._layout[name][0] if name in self._layout else -1
        return any(a <= off < b for a, b in self._ln_ranges)

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}({c.model_type}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}, intermediate={c.intermediate_size}, num_labels={c.num_labels}, "
                f"params={self.num_parameters:,}, training={self._training})")

    # -- parameters ---------------------------------------------------------------------------

    # -- batches ------------------------------------------------------------------------------

    def _int32(self, a: Any, name: str, upper: int) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
        if a.dtype != np.int32 and a.size:
            lo, hi = a.min(), a.max()
            if lo < 0 or hi >= upper:
                bad = int(lo) if lo < 0 else int(hi)
                pos = np.argwhere(a == bad)[0].tolist()
                raise ValueError(f"{name}: value {bad} at {pos} is outside [0, {upper})")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _batch(self, batch: Mapping[str, Any]):
        """(inputs, token types, attention mask) as the C side takes them."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a dict of arrays, got {type(batch).__name__}")
        c = self.config
        if c.family.image:
            if "pixel_values" not in batch:
                raise ValueError(f"batch: 'pixel_values' is missing (keys: {sorted(batch)}); "
                                 f"a {c.model_type} model classifies images")
            from instantsoup.data.vision import check_pixel_values

            px = check_pixel_values(batch["pixel_values"], c.image_size)
            return np.ascontiguousarray(px), None, None
        if "input_ids" not in batch:
            raise ValueError("batch: 'input_ids' is missing")
        ids = self._int32(batch["input_ids"], "input_ids", c.vocab_size)
        if ids.ndim != 2:
            raise ValueError(f"input_ids: expected a 2-D (batch, seq_len) array, got shape {ids.shape}")
        tt = batch.get("token_type_ids") if c.type_vocab_size > 0 else None  # DistilBERT has none
        if tt is not None:
            tt = self._int32(tt, "token_type_ids", c.type_vocab_size)
            if tt.shape != ids.shape:
                raise ValueError(f"token_type_ids: expected shape {ids.shape} (as input_ids), got {tt.shape}")
        am = batch.get("attention_mask")
        if am is not None:
            am = np.asarray(am)
            if am.dtype.kind not in "biuf":
                raise TypeError(f"attention_mask: expected a 0/1 array, got dtype {am.dtype}")
            if am.shape != ids.shape:
                raise ValueError(f"attention_mask: expected shape {ids.shape} (as input_ids), got {am.shape}")
            if am.dtype != np.bool_ and not np.all((am == 0) | (am == 1)):
                raise ValueError("attention_mask: values must be 0 or 1")
            am = np.ascontiguousarray(am, dtype=np.uint8)
        return ids, tt, am

    def _labels(self, labels: Any, B: int) -> np.ndarray:
        y = np.asarray(labels)
        if self.num_labels == 1:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.dtype.kind not in "iuf":
                raise TypeError(f"labels: regression targets must be numbers, got dtype {y.dtype}")
            y = np.ascontiguousarray(y, dtype=np.float32)
        else:
            if y.dtype.kind not in "iu":
                raise TypeError(f"labels: expected integer class ids for {self.num_labels}-way "
                                f"classification, got dtype {y.dtype}")
            if y.dtype != np.int32 and y.size:
                lo, hi = y.min(), y.max()
                if lo < 0 or hi >= self.num_labels:
                    bad = int(lo) if lo < 0 else int(hi)
                    raise ValueError(f"labels: label {bad} is outside [0, num_labels = {self.num_labels})")
            y = np.ascontiguousarray(y, dtype=np.int32)
        if y.shape != (B,):
            raise ValueError(f"labels: expected shape ({B},) to match the batch, got {y.shape}")
        return y

    # -- compute ------------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Logits (B, num_labels) float32 for a batch dict: input_ids (B,T), attention_mask,
        token_type_ids; or pixel_values (B,3,H,W) for an image model."""
        x, tt, am = self._batch(batch)
        with autocast(self.precision):
            return _C.clf_forward(self._h, x, tt, am)

    def forward_backward(self, batch: Mapping[str, Any], labels: Any, label_smoothing: float = 0.0) -> float:
        """Mean loss (cross-entropy, or MSE when num_labels == 1); overwrites ``grads``."""
        x, tt, am = self._batch(batch)
        y = self._labels(labels, x.shape[0])
        with autocast(self.precision):
            loss, self.last_logits = _C.clf_forward_backward(self._h, x, tt, am, y, float(label_smoothing))
        return loss

    def _train_step(self, exp_avg, exp_avg_sq, seg, decay, hp, batch, labels, label_smoothing):
        x, tt, am = self._batch(batch)
        y = self._labels(labels, x.shape[0])
        return _C.clf_train_step(self._h, exp_avg, exp_avg_sq, seg, decay, *hp, x, tt, am, y,
                                   float(label_smoothing))

    # -- copies -------------------------------------------------------------------------------

    def clone(self) -> "EncoderClassifier":
        """An independent model: same config, parameters and masks copied, same mode and seed."""
        other = type(self)(copy.deepcopy(self.config))
        other.copy_from(self)
        other.source_path = self.source_path
        other.precision = self.precision
        other.train(self._training)
        other.set_rng_state(self.rng_state())
        return other

    def _rebuild(self) -> tuple[tuple, dict[str, Any]]:
        return (self.config,), {"source_path": self.source_path}

    # -- checkpoints --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_labels: int | None = None,
                        seed: int = 0) -> "EncoderClassifier":
        """Load a Hugging Face checkpoint directory of any registered family (see instantsoup.load_model)."""
        path = os.fspath(path)
        cfg = EncoderConfig.from_dict(read_config(path), num_labels=num_labels)
        raw = read_checkpoint(path)
        model = cls(cfg)
        model._load_checkpoint(raw, path, seed, explicit_labels=num_labels is not None)
        model.source_path = path
        return model

    def _load_checkpoint(self, raw: Mapping[str, np.ndarray], where: str, seed: int, explicit_labels: bool) -> None:
        fam = self.family
        tensors: dict[str, np.ndarray] = {}
        ignored = []
        for key, arr in raw.items():
            name = _normalise_key(fam, key)
            if name is None:
                ignored.append(key)
                continue
            if name in tensors:
                raise ValueError(f"{where}: tensor {name!r} appears twice in the checkpoint")
            tensors[name] = arr
        if ignored:
            log.info("%s: ignoring %d buffers / pre-training head tensors (%s%s)", where, len(ignored),
                     ", ".join(ignored[:3]), " ..." if len(ignored) > 3 else "")
        unknown = sorted(k for k in tensors if k not in self._views)
        if unknown:
            raise ValueError(f"{where}: unexpected tensors in the checkpoint (not part of a {fam.architecture}): "
                             f"{', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else ""))
        rng = np.random.default_rng(seed)
        std = float(self.config.initializer_range)
        # the head's linear layers (weight, bias) that a base checkpoint may lack, in init order
        layers = [(fam.head[w], fam.head[b]) for w, b in (("poolw", "poolb"), ("clsw", "clsb")) if w in fam.head]
        head = {n for pair in layers for n in pair}
        out_w, out_b = layers[-1]
        cls_shape_ok = all(k in tensors and tensors[k].shape == self._views[k].shape for k in (out_w, out_b))
        if explicit_labels and not cls_shape_ok and out_w in tensors:
            log.warning("%s: the checkpoint's classifier has %s outputs; re-initialising it for num_labels=%d",
                        where, tensors[out_w].shape[:1], self.num_labels)
            tensors.pop(out_w, None)
            tensors.pop(out_b, None)
        missing = [k for k in self._views if k not in tensors and k not in head]
        if missing:
            raise ValueError(f"{where}: tensors missing from the checkpoint: {', '.join(missing[:8])}"
                             + (" ..." if len(missing) > 8 else ""))
        for k, a in tensors.items():
            if a.shape != self._views[k].shape:
                raise ValueError(f"{where}: tensor {k!r} has shape {tuple(a.shape)}, the config implies "
                                 f"{self._views[k].shape}")
            if a.dtype.kind != "f":
                raise ValueError(f"{where}: tensor {k!r} has dtype {a.dtype}, expected floating point")
            np.copyto(self._views[k], a, casting="same_kind")
            if not np.all(np.isfinite(self._views[k])):
                raise ValueError(f"{where}: tensor {k!r} contains NaN or inf")
        for w, b in layers:
            if w not in tensors:
                log.info("%s: %s not in the checkpoint; initialised normal(0, %g) with seed %d", where,
                         w[: -len(".weight")], std, seed)
                self._views[w][...] = rng.normal(0.0, std, size=self._views[w].shape).astype(np.float32)
                self._views[b][...] = 0.0
            elif b not in tensors:
                self._views[b][...] = 0.0

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors that transformers' AutoModelFor...Classification loads."""
        from safetensors.numpy import save_file

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._views.items()}
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"format": "pt"})
            os.replace(tmp, os.path.join(directory, "model.safetensors"))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        cfg = self.config.to_dict()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(directory, "config.json"))
