"""BERT-family sequence classifiers on the C engine.

The model keeps every parameter in one float32 buffer owned by C (layout: csrc/bert.h); this module
parses and validates Hugging Face configs, maps Hugging Face parameter names onto zero-copy NumPy
views of that buffer, reads and writes checkpoints, and turns batches into the arrays the C side
expects. Shapes: B batch, T tokens, C hidden size, NL labels.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from instantsoup._native import _C
from instantsoup.models.views import load_views, set_mask_views
from instantsoup.precision import PrecisionMixin, autocast

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


@dataclasses.dataclass
class BertConfig:
    """The fields of a Hugging Face BERT config.json that the engine uses.

    Every other key of the original config is kept in ``extra`` (and written back by
    ``to_dict``) after checking it does not change the maths.
    """

    vocab_size: int
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
    extra: dict = dataclasses.field(default_factory=dict)

    _INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")
    _PROBS = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_labels: int | None = None) -> "BertConfig":
        """Parse and validate a config dict; raise ValueError for anything that changes the maths."""
        d = dict(d)
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"config: model_type {d.get('model_type')!r} is not 'bert'")
        if "vocab_size" not in d:
            raise ValueError("config: vocab_size is missing")
        pet = d.get("position_embedding_type", "absolute")
        if pet not in (None, "absolute"):
            raise ValueError(f"config: position_embedding_type={pet!r} is not supported (only 'absolute')")
        for key in ("is_decoder", "add_cross_attention"):
            if d.get(key):
                raise ValueError(f"config: {key}=True is not supported (encoder-only models)")
        if d.get("pruned_heads"):
            raise ValueError("config: pruned_heads is not supported (heads of unequal sizes)")
        if d.get("embedding_size") not in (None, d.get("hidden_size", 768)):
            raise ValueError("config: embedding_size != hidden_size is not supported")
        act = d.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act={act!r} is not supported "
                             f"(supported: {', '.join(sorted(ACTIVATIONS))})")
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
        for k in self._INTS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"config: {k} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"config: hidden_size ({self.hidden_size}) is not a multiple of "
                             f"num_attention_heads ({self.num_attention_heads})")
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
        if self.pad_token_id is not None and (isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int)
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

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config dict (original keys kept; labels and problem type updated)."""
        d = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                d[f.name] = getattr(self, f.name)
        d["model_type"] = "bert"
        d["architectures"] = ["BertForSequenceClassification"]
        d.pop("torch_dtype", None)  # the weights are written as float32: say so (a float16 source
        d["dtype"] = "float32"      # config would make transformers load the export in half precision)
        id2label = d.get("id2label")
        if not isinstance(id2label, dict) or len(id2label) != self.num_labels:
            d["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            d["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        d.pop("num_labels", None)  # transformers derives it from id2label
        d["num_labels"] = self.num_labels
        return d


# ---------------------------------------------------------------------------------------------
# name mapping: Hugging Face names <-> (offset, shape) in the C parameter buffer


def _layout(cfg: BertConfig, tensors: list[tuple[str, int, int]]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """HF name -> (offset in floats, shape), in the order of transformers' state_dict."""
    span = {name: (off, size) for name, off, size in tensors}
    C, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    NL = cfg.num_labels
    out: dict[str, tuple[int, tuple[int, ...]]] = {}
    e = "bert.embeddings."
    out[e + "word_embeddings.weight"] = (span["wte"][0], (V, C))
    out[e + "position_embeddings.weight"] = (span["wpe"][0], (cfg.max_position_embeddings, C))
    out[e + "token_type_embeddings.weight"] = (span["wtt"][0], (cfg.type_vocab_size, C))
    out[e + "LayerNorm.weight"] = (span["embln_w"][0], (C,))
    out[e + "LayerNorm.bias"] = (span["embln_b"][0], (C,))
    for l in range(L):
        p = f"bert.encoder.layer.{l}."
        for i, part in enumerate(("query", "key", "value")):
            out[p + f"attention.self.{part}.weight"] = (span["enc.qkvw"][0] + (l * 3 + i) * C * C, (C, C))
            out[p + f"attention.self.{part}.bias"] = (span["enc.qkvb"][0] + (l * 3 + i) * C, (C,))
        out[p + "attention.output.dense.weight"] = (span["enc.attprojw"][0] + l * C * C, (C, C))
        out[p + "attention.output.dense.bias"] = (span["enc.attprojb"][0] + l * C, (C,))
        out[p + "attention.output.LayerNorm.weight"] = (span["enc.ln1w"][0] + l * C, (C,))
        out[p + "attention.output.LayerNorm.bias"] = (span["enc.ln1b"][0] + l * C, (C,))
        out[p + "intermediate.dense.weight"] = (span["enc.fcw"][0] + l * F * C, (F, C))
        out[p + "intermediate.dense.bias"] = (span["enc.fcb"][0] + l * F, (F,))
        out[p + "output.dense.weight"] = (span["enc.fcprojw"][0] + l * C * F, (C, F))
        out[p + "output.dense.bias"] = (span["enc.fcprojb"][0] + l * C, (C,))
        out[p + "output.LayerNorm.weight"] = (span["enc.ln2w"][0] + l * C, (C,))
        out[p + "output.LayerNorm.bias"] = (span["enc.ln2b"][0] + l * C, (C,))
    out["bert.pooler.dense.weight"] = (span["poolw"][0], (C, C))
    out["bert.pooler.dense.bias"] = (span["poolb"][0], (C,))
    out["classifier.weight"] = (span["clsw"][0], (NL, C))
    out["classifier.bias"] = (span["clsb"][0], (NL,))
    return out


PRUNABLE_SUFFIXES = ("attention.self.query.weight", "attention.self.key.weight",
                     "attention.self.value.weight", "attention.output.dense.weight",
                     "intermediate.dense.weight", "output.dense.weight")


def _is_prunable(name: str) -> bool:
    return name.startswith("bert.encoder.layer.") and name.endswith(PRUNABLE_SUFFIXES)


def default_no_decay(name: str) -> bool:
    """Hugging Face Trainer's grouping: no weight decay on biases and LayerNorm weights."""
    return name.endswith(".bias") or "LayerNorm" in name


def _normalise_key(key: str) -> str | None:
    """Checkpoint key -> our HF name (None: a known buffer or pre-training head to ignore)."""
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    if key.endswith("embeddings.position_ids") or key.endswith("embeddings.token_type_ids"):
        return None
    if key.startswith("cls.") or key.startswith("bert.cls."):
        return None
    return key


# ---------------------------------------------------------------------------------------------
# checkpoint reading


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


# ---------------------------------------------------------------------------------------------
# the model


class BertModel(PrecisionMixin):
    """A BERT sequence classifier (BertForSequenceClassification maths) on the C engine.

    Parameters live in one float32 C buffer; ``state_dict()``, ``grads`` and ``masks`` are NumPy
    views of it under the Hugging Face names. Not thread-safe: use ``clone()`` per thread.
    """

    kind = "bert"

    def __init__(self, config: BertConfig):
        if not isinstance(config, BertConfig):
            raise TypeError(f"config: expected a BertConfig, got {type(config).__name__}")
        self.config = config
        c = config
        if c.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act={c.hidden_act!r} is not supported "
                             f"(supported: {', '.join(sorted(ACTIVATIONS))})")
        self._h = _C.bert_new(c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.num_labels,
                              c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                              c.intermediate_size, ACTIVATIONS[c.hidden_act], float(c.layer_norm_eps),
                              float(c.hidden_dropout_prob), float(c.attention_probs_dropout_prob),
                              float(c.classifier_dropout_prob),
                              -1 if c.pad_token_id is None else int(c.pad_token_id))
        self._params, self._grads, self._mask_buf = _C.bert_buffers(self._h)
        self._layout = _layout(c, _C.bert_tensors(self._h))
        self._state = {k: self._params[o:o + math.prod(s)].reshape(s) for k, (o, s) in self._layout.items()}
        self._grad_views = {k: self._grads[o:o + math.prod(s)].reshape(s) for k, (o, s) in self._layout.items()}
        self.prunable_names = [k for k in self._layout if _is_prunable(k)]
        self._mask_views = {k: self._mask_buf[o:o + math.prod(s)].reshape(s)
                            for k, (o, s) in self._layout.items() if k in self.prunable_names}
        self._training = False
        self._seed = 0
        self.source_path: str | None = None  # the checkpoint directory it was loaded from
        _C.bert_set_training(self._h, False)

    # -- basic facts --------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def problem_type(self) -> str:
        return self.config.problem_type

    @property
    def num_parameters(self) -> int:
        return int(self._params.size)

    @property
    def training(self) -> bool:
        return self._training

    def __repr__(self) -> str:
        c = self.config
        return (f"BertModel(layers={c.num_hidden_layers}, hidden={c.hidden_size}, heads={c.num_attention_heads}, "
                f"intermediate={c.intermediate_size}, num_labels={c.num_labels}, params={self.num_parameters:,}, "
                f"training={self._training})")

    # -- parameters ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the parameter buffer (writes go into the model)."""
        return dict(self._state)

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the gradient buffer (filled by forward_backward)."""
        return dict(self._grad_views)

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """prunable name -> uint8 view of the mask buffer (1 = kept)."""
        return dict(self._mask_views)

    def param_offsets(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (offset in the flat buffer, shape)."""
        return dict(self._layout)

    def flat_parameters(self) -> np.ndarray:
        """The whole parameter buffer, (num_parameters,) float32 view."""
        return self._params

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy tensors in by name. strict: every name must be present and none unknown.

        Masked weights are zeroed again afterwards (the masks stay).
        """
        load_views(self._state, state, strict)
        self._apply_masks()

    def _apply_masks(self) -> None:
        n = self._mask_buf.size
        self._params[:n] *= self._mask_buf
        self._grads[:n] *= self._mask_buf

    def set_masks(self, masks: Mapping[str, Any]) -> None:
        """Set masks (name -> 0/1 array, 1 = kept) of some or all prunable weights; zero the masked weights."""
        set_mask_views(self._mask_views, self._state, masks)
        self._apply_masks()

    # -- modes and randomness ---------------------------------------------------------------

    def train(self, mode: bool = True) -> "BertModel":
        """Dropout on (True) or off (False); returns self."""
        self._training = bool(mode)
        _C.bert_set_training(self._h, self._training)
        return self

    def eval(self) -> "BertModel":
        return self.train(False)

    def seed(self, s: int) -> None:
        """Seed the dropout RNG (and restart its step counter)."""
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < 2**64:
            raise ValueError(f"seed: expected an integer in [0, 2**64), got {s!r}")
        self._seed = int(s)
        _C.bert_rng(self._h, self._seed, 0)

    def rng_state(self) -> tuple[int, int]:
        """(seed, step) of the dropout RNG."""
        return tuple(_C.bert_rng_state(self._h))

    def set_rng_state(self, state: tuple[int, int]) -> None:
        _C.bert_rng(self._h, int(state[0]), int(state[1]))

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
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a dict of arrays, got {type(batch).__name__}")
        if "input_ids" not in batch:
            raise ValueError("batch: 'input_ids' is missing")
        c = self.config
        ids = self._int32(batch["input_ids"], "input_ids", c.vocab_size)
        if ids.ndim != 2:
            raise ValueError(f"input_ids: expected a 2-D (batch, seq_len) array, got shape {ids.shape}")
        tt = batch.get("token_type_ids")
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
        """Logits (B, num_labels) float32 for a batch dict (input_ids (B,T), attention_mask, token_type_ids)."""
        ids, tt, am = self._batch(batch)
        with autocast(self.precision):
            return _C.bert_forward(self._h, ids, tt, am)

    __call__ = forward

    def forward_backward(self, batch: Mapping[str, Any], labels: Any, label_smoothing: float = 0.0) -> float:
        """Mean loss (cross-entropy, or MSE when num_labels == 1); overwrites ``grads``."""
        ids, tt, am = self._batch(batch)
        y = self._labels(labels, ids.shape[0])
        with autocast(self.precision):
            loss, self.last_logits = _C.bert_forward_backward(self._h, ids, tt, am, y, float(label_smoothing))
        return loss

    # -- copies -------------------------------------------------------------------------------

    def clone(self) -> "BertModel":
        """An independent model: same config, parameters and masks copied, same mode and seed."""
        other = BertModel(copy.deepcopy(self.config))
        other.copy_from(self)
        other.source_path = self.source_path
        other.precision = self.precision
        other.train(self._training)
        other.set_rng_state(self.rng_state())
        return other

    def copy_from(self, other: "BertModel") -> None:
        """Copy parameters and masks from a model with the same config (no allocation)."""
        if not isinstance(other, BertModel):
            raise TypeError(f"copy_from: expected a BertModel, got {type(other).__name__}")
        _C.bert_copy(self._h, other._h)

    # -- checkpoints --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_labels: int | None = None, seed: int = 0) -> "BertModel":
        """Load a Hugging Face BERT checkpoint directory (see instantsoup.load_model)."""
        from instantsoup.models import read_config

        path = os.fspath(path)
        cfg = BertConfig.from_dict(read_config(path), num_labels=num_labels)
        raw = read_checkpoint(path)
        model = cls(cfg)
        model._load_checkpoint(raw, path, seed, explicit_labels=num_labels is not None)
        model.source_path = path
        return model

    def _load_checkpoint(self, raw: Mapping[str, np.ndarray], where: str, seed: int, explicit_labels: bool) -> None:
        tensors: dict[str, np.ndarray] = {}
        ignored = []
        for key, arr in raw.items():
            name = _normalise_key(key)
            if name is None:
                ignored.append(key)
                continue
            if name in tensors:
                raise ValueError(f"{where}: tensor {name!r} appears twice in the checkpoint")
            tensors[name] = arr
        if ignored:
            log.info("%s: ignoring %d buffers / pre-training head tensors (%s%s)", where, len(ignored),
                     ", ".join(ignored[:3]), " ..." if len(ignored) > 3 else "")
        unknown = sorted(k for k in tensors if k not in self._state)
        if unknown:
            raise ValueError(f"{where}: unexpected tensors in the checkpoint (not part of a BERT "
                             f"classifier): {', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else ""))
        rng = np.random.default_rng(seed)
        std = float(self.config.initializer_range)
        head = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias")
        cls_shape_ok = all(k in tensors and tensors[k].shape == self._state[k].shape
                           for k in ("classifier.weight", "classifier.bias"))
        if explicit_labels and not cls_shape_ok and "classifier.weight" in tensors:
            log.warning("%s: the checkpoint's classifier has %s outputs; re-initialising it for num_labels=%d",
                        where, tensors["classifier.weight"].shape[:1], self.num_labels)
            tensors.pop("classifier.weight", None)
            tensors.pop("classifier.bias", None)
        missing = [k for k in self._state if k not in tensors and k not in head]
        if missing:
            raise ValueError(f"{where}: tensors missing from the checkpoint: {', '.join(missing[:8])}"
                             + (" ..." if len(missing) > 8 else ""))
        for k, a in tensors.items():
            if a.shape != self._state[k].shape:
                raise ValueError(f"{where}: tensor {k!r} has shape {tuple(a.shape)}, the config implies "
                                 f"{self._state[k].shape}")
            if a.dtype.kind != "f":
                raise ValueError(f"{where}: tensor {k!r} has dtype {a.dtype}, expected floating point")
            np.copyto(self._state[k], a, casting="same_kind")
            if not np.all(np.isfinite(self._state[k])):
                raise ValueError(f"{where}: tensor {k!r} contains NaN or inf")
        for prefix in ("bert.pooler.dense", "classifier"):
            w, b = prefix + ".weight", prefix + ".bias"
            if w not in tensors:
                log.info("%s: %s not in the checkpoint; initialised normal(0, %g) with seed %d", where, prefix, std, seed)
                self._state[w][...] = rng.normal(0.0, std, size=self._state[w].shape).astype(np.float32)
                self._state[b][...] = 0.0
            elif b not in tensors:
                self._state[b][...] = 0.0

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors that transformers' AutoModelForSequenceClassification loads."""
        from safetensors.numpy import save_file

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._state.items()}
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
