"""CLIP for pruning: the vision tower trained as an image classifier through a cosine head.

``load_clip(path)`` reads a Hugging Face ``CLIPModel`` directory (``model_type: "clip"``). The
vision tower (patch embedding, class token, position embeddings, pre-LN, pre-LN encoder blocks
with quick_gelu, post-LN on the class token, visual projection) runs forward and backward in C;
the text tower runs forward in C (causal attention, end-of-text pooling, text projection) to
build zero-shot heads::

    model = instantsoup.load_model("clip-vit-base-patch32")
    model.zero_shot_head(dataset.classnames, dataset.templates)    # frozen, as the paper does
    logits = model.forward({"pixel_values": px})                   # (B, NL) scaled cosines
    loss = model.forward_backward({"pixel_values": px}, labels)    # fills model.grads

Image logits are ``exp(logit_scale) * cos(image feature, class embedding)``: image features are
L2-normalised, the head holds the normalised, template-averaged, renormalised class text
embeddings times ``exp(logit_scale)``. With ``num_labels`` the head is instead a trainable linear
probe (weight (NL, D) + bias on the normalised features; ``zero_shot_head`` can initialise it).

Parameter names are transformers' ``CLIPModel`` names; the prunable weights are the q/k/v/out
projections and fc1/fc2 of every vision encoder layer.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from instantsoup._native import _C
from instantsoup.models.base import EngineModel
from instantsoup.precision import autocast
from instantsoup.data.vision import check_pixel_values
from instantsoup.models.clip_config import (CLIPConfig, read_checkpoint, text_param_shapes, vision_param_shapes,
                                            vision_prunable_names, write_checkpoint)

logger = logging.getLogger(__name__)

__all__ = ["CLIPModel", "load_clip", "CLIPTextTower"]

_ACT_CODES = {"gelu": 0, "gelu_new": 1, "gelu_pytorch_tanh": 1, "relu": 2, "quick_gelu": 3}
HEAD_WEIGHT, HEAD_BIAS = "classifier.weight", "classifier.bias"
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "preprocessor_config.json")


def _encoder_views(buf: np.ndarray, table: Mapping[str, tuple[int, int]], prefix: str, L: int, C: int,
                   F: int) -> dict[str, np.ndarray]:
    """HF names -> views of the engine's fused encoder tensors (qkv stacked, layers stacked)."""
    def t(name: str, shape: tuple[int, ...]) -> np.ndarray:
        off, size = table[name]
        return buf[off:off + size].reshape(shape)

    qkvw, qkvb = t("qkvw", (L, 3, C, C)), t("qkvb", (L, 3, C))
    proj, projb = t("attprojw", (L, C, C)), t("attprojb", (L, C))
    fcw, fcb = t("fcw", (L, F, C)), t("fcb", (L, F))
    fc2w, fc2b = t("fcprojw", (L, C, F)), t("fcprojb", (L, C))
    ln1w, ln1b, ln2w, ln2b = (t(n, (L, C)) for n in ("ln1w", "ln1b", "ln2w", "ln2b"))
    out: dict[str, np.ndarray] = {}
    for i in range(L):
        p = f"{prefix}.layers.{i}"
        for k, nm in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{p}.self_attn.{nm}.weight"] = qkvw[i, k]
            out[f"{p}.self_attn.{nm}.bias"] = qkvb[i, k]
        out[f"{p}.self_attn.out_proj.weight"] = proj[i]
        out[f"{p}.self_attn.out_proj.bias"] = projb[i]
        out[f"{p}.layer_norm1.weight"] = ln1w[i]
        out[f"{p}.layer_norm1.bias"] = ln1b[i]
        out[f"{p}.mlp.fc1.weight"] = fcw[i]
        out[f"{p}.mlp.fc1.bias"] = fcb[i]
        out[f"{p}.mlp.fc2.weight"] = fc2w[i]
        out[f"{p}.mlp.fc2.bias"] = fc2b[i]
        out[f"{p}.layer_norm2.weight"] = ln2w[i]
        out[f"{p}.layer_norm2.bias"] = ln2b[i]
    return out


def _table(entries: Iterable[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    return {name: (int(off), int(size)) for name, off, size in entries}


def _vision_views(buf: np.ndarray, table: Mapping[str, tuple[int, int]], cfg: CLIPConfig,
                  num_labels: int) -> dict[str, np.ndarray]:
    v = cfg.vision
    C, P, D = v.hidden_size, v.patch_size, cfg.projection_dim
    T = v.num_patches + 1

    def t(name: str, shape: tuple[int, ...]) -> np.ndarray:
        off, size = table[name]
        return buf[off:off + size].reshape(shape)

    out = {
        "vision_model.embeddings.class_embedding": t("cls", (C,)),
        "vision_model.embeddings.patch_embedding.weight": t("patchw", (C, 3, P, P)),
        "vision_model.embeddings.position_embedding.weight": t("pos", (T, C)),
        "vision_model.pre_layrnorm.weight": t("preln_w", (C,)),
        "vision_model.pre_layrnorm.bias": t("preln_b", (C,)),
    }
    out.update(_encoder_views(buf, table, "vision_model.encoder", v.num_hidden_layers, C, v.intermediate_size))
    out["vision_model.post_layernorm.weight"] = t("postln_w", (C,))
    out["vision_model.post_layernorm.bias"] = t("postln_b", (C,))
    out["visual_projection.weight"] = t("projw", (D, C))
    if num_labels > 0:
        out[HEAD_WEIGHT] = t("headw", (num_labels, D))
        out[HEAD_BIAS] = t("headb", (num_labels,))
    return out


class CLIPTextTower:
    """CLIP's text tower in C (forward only): ``encode(input_ids, attention_mask) -> (B, D)``."""

    def __init__(self, cfg: CLIPConfig):
        t = cfg.text
        self.config = cfg
        self._h = _C.clipt_new(t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.intermediate_size,
                               _ACT_CODES[t.hidden_act], float(t.layer_norm_eps), t.vocab_size,
                               t.max_position_embeddings, cfg.projection_dim, int(t.eos_token_id))
        buf = self._params = _C.model_buffers(self._h)[0]  # forward-only: no gradients or masks
        table = _table(_C.model_tensors(self._h))
        C = t.hidden_size

        def v(name: str, shape: tuple[int, ...]) -> np.ndarray:
            off, size = table[name]
            return buf[off:off + size].reshape(shape)

        views = {"text_model.embeddings.token_embedding.weight": v("wte", (t.vocab_size, C)),
                 "text_model.embeddings.position_embedding.weight": v("wpe", (t.max_position_embeddings, C))}
        views.update(_encoder_views(buf, table, "text_model.encoder", t.num_hidden_layers, C, t.intermediate_size))
        views["text_model.final_layer_norm.weight"] = v("lnf_w", (C,))
        views["text_model.final_layer_norm.bias"] = v("lnf_b", (C,))
        views["text_projection.weight"] = v("projw", (cfg.projection_dim, C))
        self._views = views

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self._views)

    def __reduce__(self):
        """Pickling: the config and the parameter buffer as it is (see EngineModel.__reduce__)."""
        return (_unpickle_text, (self.config, self._params))

    def load(self, sd: Mapping[str, np.ndarray]) -> None:
        """Copy every text-tower tensor in by name; all are checked before any is written."""
        arrays = {}
        for name, view in self._views.items():
            if name not in sd:
                raise ValueError(f"text tower: {name} is missing")
            a = np.asarray(sd[name])
            if a.shape != view.shape or a.dtype.kind != "f":
                raise ValueError(f"text tower: {name}: expected float {view.shape}, got {a.dtype} {a.shape}")
            with np.errstate(over="ignore"):
                a = a.astype(np.float32, copy=False)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"text tower: {name}: contains NaN or inf")
            arrays[name] = a
        for name, a in arrays.items():
            self._views[name][...] = a

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Text features (B, D) float32 — transformers' ``get_text_features``."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"input_ids: expected an integer array (B, T), got {ids.dtype} {ids.shape}")
        am = None
        if attention_mask is not None:
            am = np.asarray(attention_mask)
            if am.dtype.kind not in "biuf" or (am.dtype != np.bool_ and not np.all((am == 0) | (am == 1))):
                raise ValueError("attention_mask: values must be 0 or 1")
            am = np.ascontiguousarray(am, dtype=np.uint8)
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.text.vocab_size):
            raise ValueError(f"input_ids: ids must be in [0, {self.config.text.vocab_size})")
        return _C.clipt_encode(self._h, np.ascontiguousarray(ids, dtype=np.int32), am)


class CLIPModel(EngineModel):
    """A CLIP checkpoint set up to fine-tune and prune its vision tower (see module docstring).

    Parameters live in one C buffer; :meth:`state_dict`, :attr:`grads` and :attr:`masks` are views
    under transformers' ``CLIPModel`` names (plus ``classifier.weight``/``classifier.bias`` for a
    trainable head).
    """

    kind = "clip"
    problem_type = "single_label_classification"

    def __init__(self, config: CLIPConfig, num_labels: int | None = None, seed: int = 0,
                 logit_scale: float | None = None, text: CLIPTextTower | None = None):
        v = config.vision
        if v.hidden_act not in _ACT_CODES:
            raise ValueError(f"vision hidden_act {v.hidden_act!r} not supported")
        self.config = config
        nl = int(num_labels or 0)
        if nl < 0:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self._h = _C.clipv_new(v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.intermediate_size,
                               _ACT_CODES[v.hidden_act], float(v.layer_norm_eps), float(v.attention_dropout),
                               v.image_size, v.patch_size, config.projection_dim, nl)
        self._trainable_head = nl
        self._num_labels = nl
        params, grads, masks = _C.model_buffers(self._h)
        self._params, self._grads, self._mask_buf = params, grads, masks
        self._table = _table(_C.model_tensors(self._h))
        self._views = _vision_views(params, self._table, config, nl)
        self._gviews = _vision_views(grads, self._table, config, nl)
        self.prunable_names = vision_prunable_names(config)
        self._mviews = self._make_mask_views()
        self.logit_scale = float(config.logit_scale_init_value if logit_scale is None else logit_scale)
        self.text = text if text is not None else CLIPTextTower(config)
        self.tokenizer = None
        self.source_path: str | None = None
        self.classnames: list[str] | None = None
        self._training = False
        self._seed = int(seed)
        self.last_logits: np.ndarray | None = None
        _C.model_rng(self._h, self._seed, 0)
        if nl > 0:  # a linear probe starts small and centred; zero_shot_head() can overwrite it
            rng = np.random.default_rng(seed)
            self._views[HEAD_WEIGHT][...] = rng.normal(0.0, 0.02, self._views[HEAD_WEIGHT].shape)
            self._views[HEAD_BIAS][...] = 0.0

    # -- layout -------------------------------------------------------------------------------------
    def _make_mask_views(self) -> dict[str, np.ndarray]:
        """Mask views: the mask buffer covers the encoder's prunable tensors, same layout."""
        v = self.config.vision
        L, C, F = v.num_hidden_layers, v.hidden_size, v.intermediate_size
        buf = self._mask_buf
        out = {}
        for name, (off, size) in self._table.items():
            if name not in ("qkvw", "attprojw", "fcw", "fcprojw"):
                continue
            if name == "qkvw":
                qkv = buf[off:off + size].reshape(L, 3, C, C)
            elif name == "attprojw":
                proj = buf[off:off + size].reshape(L, C, C)
            elif name == "fcw":
                fc1 = buf[off:off + size].reshape(L, F, C)
            else:
                fc2 = buf[off:off + size].reshape(L, C, F)
        for i in range(L):
            p = f"vision_model.encoder.layers.{i}"
            for k, nm in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{p}.self_attn.{nm}.weight"] = qkv[i, k]
            out[f"{p}.self_attn.out_proj.weight"] = proj[i]
            out[f"{p}.mlp.fc1.weight"] = fc1[i]
            out[f"{p}.mlp.fc2.weight"] = fc2[i]
        return {n: out[n] for n in self.prunable_names}

    # -- API shared with the BERT engine -----------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Classes of the head (0 until a head is set)."""
        return self._num_labels

    @property
    def num_tokens(self) -> int:
        """Tokens per image in the vision tower (patches + class token), for cost accounting."""
        return self.config.vision.num_patches + 1

    def cost_dims(self) -> dict:
        """L, H, I, K of the trained tower (the vision encoder) for FLOPs accounting."""
        v = self.config.vision
        return {"L": v.num_hidden_layers, "H": v.hidden_size, "I": v.intermediate_size, "K": self.num_labels}

    @staticmethod
    def default_no_decay(name: str) -> bool:
        """Hugging Face Trainer's grouping for CLIP: no weight decay on biases and LayerNorm weights."""
        return name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name or "layernorm" in name

    def _pixels(self, batch: Mapping[str, Any] | np.ndarray) -> np.ndarray:
        if isinstance(batch, Mapping):
            if "pixel_values" not in batch:
                raise KeyError(f"batch has no 'pixel_values' (keys: {sorted(batch)}); a CLIP model "
                               "classifies images")
            px = batch["pixel_values"]
        else:
            px = batch
        check_pixel_values(px, self.config.vision.image_size)
        return np.ascontiguousarray(px)

    def forward(self, batch: Mapping[str, Any]) -> np.ndarray:
        """batch {"pixel_values": (B, 3, H, W) float32} -> logits (B, num_labels) float32."""
        with autocast(self.precision):
            return _C.clipv_forward(self._h, self._pixels(batch))

    __call__ = forward

    def forward_backward(self, batch: Mapping[str, Any], labels: np.ndarray, label_smoothing: float = 0.0) -> float:
        """Mean cross-entropy of the batch; ``grads`` are overwritten (masked entries zero)."""
        px = self._pixels(batch)
        y = self._labels(labels, px.shape[0])
        with autocast(self.precision):
            loss, self.last_logits = _C.clipv_forward_backward(self._h, px, y, float(label_smoothing))
        return float(loss)

    def _labels(self, labels: np.ndarray, B: int) -> np.ndarray:
        y = np.asarray(labels)
        if y.shape != (B,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels: expected integer class ids of shape ({B},), got {y.dtype} {y.shape}")
        nl = self.num_labels
        if y.size and (y.min() < 0 or y.max() >= nl):
            raise ValueError(f"labels: ids must be in [0, {nl}), got {y.min()}..{y.max()}")
        return np.ascontiguousarray(y, dtype=np.int32)

    # -- CLIP specifics -----------------------------------------------------------------------------
    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """Image features (B, D) float32 — transformers' ``get_image_features``."""
        with autocast(self.precision):
            return _C.clipv_encode(self._h, self._pixels(pixel_values))

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Text features (B, D) float32 — transformers' ``get_text_features``."""
        return self.text.encode(input_ids, attention_mask)

    def _tokenizer(self):
        if self.tokenizer is None:
            if self.source_path is None:
                raise ValueError("no tokenizer: set model.tokenizer (instantsoup.data.CLIPTokenizer) or pass one")
            from instantsoup.data.clip_tokenizer import CLIPTokenizer

            self.tokenizer = CLIPTokenizer.from_pretrained(self.source_path)
        return self.tokenizer

    def class_embeddings(self, classnames: Sequence[str], templates: Sequence[str], tokenizer=None,
                         batch_size: int = 256) -> np.ndarray:
        """(NL, D) float32: per class, the mean of its L2-normalised prompt embeddings, renormalised."""
        if not classnames:
            raise ValueError("zero_shot_head: no class names")
        if not templates:
            raise ValueError("zero_shot_head: no templates")
        for t in templates:
            if t.count("{}") != 1:
                raise ValueError(f"zero_shot_head: template {t!r} must contain exactly one '{{}}'")
        tok = tokenizer if tokenizer is not None else self._tokenizer()
        prompts = [t.format(c) for c in classnames for t in templates]
        feats = np.empty((len(prompts), self.config.projection_dim), dtype=np.float32)
        for s in range(0, len(prompts), batch_size):
            enc = tok.encode(prompts[s:s + batch_size], max_length=self.config.text.max_position_embeddings)
            feats[s:s + batch_size] = self.text.encode(enc["input_ids"], enc["attention_mask"])
        f = feats.astype(np.float64)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        f = f.reshape(len(classnames), len(templates), -1).mean(axis=1)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        return f.astype(np.float32)

    def zero_shot_head(self, classnames: Sequence[str], templates: Sequence[str], tokenizer=None,
                       batch_size: int = 256) -> np.ndarray:
        """Build the zero-shot head: class embeddings (:meth:`class_embeddings`) times
        ``exp(logit_scale)``. Frozen (outside the trainable buffer) unless the model was loaded
        with ``num_labels`` (a linear probe), which it then initialises (bias 0). Returns (NL, D)."""
        w = (self.class_embeddings(classnames, templates, tokenizer, batch_size).astype(np.float64)
             * np.exp(self.logit_scale)).astype(np.float32)
        self.set_head(w)
        self.classnames = list(classnames)
        return w

    def set_head(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Set the head's weight (NL, D) (and bias (NL,)); logits = normalize(f) @ weight.T + bias."""
        w = np.ascontiguousarray(weight, dtype=np.float32)
        b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        if self._trainable_head:
            if w.shape != self._views[HEAD_WEIGHT].shape:
                raise ValueError(f"head: weight of shape {w.shape} given, the linear probe has "
                                 f"{self._views[HEAD_WEIGHT].shape}")
            if b is not None and b.shape != self._views[HEAD_BIAS].shape:
                raise ValueError(f"head: bias of shape {b.shape} given, expected {self._views[HEAD_BIAS].shape}")
            if not np.all(np.isfinite(w)) or (b is not None and not np.all(np.isfinite(b))):
                raise ValueError("head: weight and bias must be finite")
            self._views[HEAD_WEIGHT][...] = w
            self._views[HEAD_BIAS][...] = 0.0 if b is None else b
        else:
            _C.clipv_set_head(self._h, w, b)
            self._num_labels = int(w.shape[0])

    def head(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Copies of the active head's (weight (NL, D), bias (NL,)), or None."""
        return _C.clipv_head(self._h)

    @property
    def head_trainable(self) -> bool:
        return bool(self._trainable_head)

    # -- copies --------------------------------------------------------------------------------------
    def clone(self) -> "CLIPModel":
        """An independent model with the same config, parameters, masks and head (text tower shared,
        it is never trained)."""
        m = CLIPModel(self.config, self._trainable_head or None, self._seed, self.logit_scale, self.text)
        m.copy_from(self)
        m.tokenizer, m.source_path, m.classnames = self.tokenizer, self.source_path, self.classnames
        m.precision = self.precision
        m.train(self._training)
        m.set_rng_state(self.rng_state())
        return m

    def _rebuild(self) -> tuple[tuple, dict[str, Any]]:
        frozen = None if self._trainable_head else self.head()
        return ((self.config, self._trainable_head or None, self._seed, self.logit_scale, self.text),
                {"tokenizer": self.tokenizer, "source_path": self.source_path, "classnames": self.classnames,
                 "frozen_head": frozen})

    def _restore(self, attrs: dict[str, Any]) -> None:
        attrs = dict(attrs)
        frozen = attrs.pop("frozen_head")
        if frozen is not None:
            self.set_head(*frozen)
        super()._restore(attrs)

    def copy_from(self, other: "CLIPModel") -> None:
        """Copy parameters, masks and head from a model with the same config (no allocation)."""
        super().copy_from(other)
        self._num_labels = other._num_labels

    # -- optimizer hooks (used by instantsoup.AdamW) ------------------------------------------------
    def _optim_segments(self, no_decay=None) -> tuple[np.ndarray, np.ndarray]:
        """(segments (S+1,) int64, decay (S,) uint8) over the buffer; ``no_decay(name) -> bool``
        on HF names (the fused tensors decide by their first HF name)."""
        no_decay = no_decay or self.default_no_decay
        names = {}
        for hf, view in self._views.items():
            off = (view.__array_interface__["data"][0] - self._params.__array_interface__["data"][0]) // 4
            names.setdefault(off, hf)
        bounds, decay = [0], []
        cur = None
        for name, (off, size) in sorted(self._table.items(), key=lambda kv: kv[1][0]):
            if size == 0:
                continue
            hf = names.get(off, name)
            d = 0 if no_decay(hf) else 1
            if cur is None or d != cur:
                if cur is not None:
                    bounds.append(off)
                    decay.append(cur)
                cur = d
        bounds.append(self.num_parameters)
        decay.append(cur)
        return np.asarray(bounds, dtype=np.int64), np.asarray(decay, dtype=np.uint8)

    def _train_step(self, exp_avg, exp_avg_sq, seg, decay, hp, batch, labels, label_smoothing=0.0) -> tuple[float, float]:
        """Fused forward + backward + clip + AdamW + re-mask (instantsoup.AdamW's entry point) -> (loss, norm)."""
        lr, beta1, beta2, eps, weight_decay, step, max_norm = hp
        px = self._pixels(batch)
        y = self._labels(labels, px.shape[0])
        return _C.clipv_train_step(self._h, exp_avg, exp_avg_sq, seg, decay, float(lr), float(beta1),
                                   float(beta2), float(eps), float(weight_decay), int(step), float(max_norm),
                                   px, y, float(label_smoothing))

    # -- export ----------------------------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, np.ndarray]:
        """Every tensor of the HF ``CLIPModel`` (vision from the C buffer, text, logit_scale)."""
        sd = {k: v for k, v in self._views.items() if k not in (HEAD_WEIGHT, HEAD_BIAS)}
        sd.update(self.text.state_dict())
        sd["logit_scale"] = np.asarray(self.logit_scale, dtype=np.float32)
        return sd

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a ``CLIPModel`` directory transformers loads (config.json, model.safetensors with
        the pruned zeros), the tokenizer/preprocessor files of the source checkpoint, and the
        classification head in ``instantsoup_head.safetensors`` (+ class names)."""
        path = os.fspath(path)
        write_checkpoint(path, self.config, self.full_state_dict())
        if self.source_path and os.path.abspath(self.source_path) != os.path.abspath(path):
            for f in _TOKENIZER_FILES:
                src = os.path.join(self.source_path, f)
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(path, f))
        head = self.head()
        if head is not None:
            from safetensors.numpy import save_file

            save_file({"weight": head[0], "bias": head[1]}, os.path.join(path, "instantsoup_head.safetensors"),
                      metadata={"trainable": str(self.head_trainable),
                                "classnames": json.dumps(self.classnames or [])})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, num_labels: int | None = None, seed: int = 0) -> "CLIPModel":
        """Load a HF CLIPModel directory (see :func:`load_clip`)."""
        return load_clip(path, num_labels=num_labels, seed=seed)

    def __repr__(self) -> str:
        v = self.config.vision
        return (f"CLIPModel(vision {v.num_hidden_layers}x{v.hidden_size}, patch {v.patch_size}, image "
                f"{v.image_size}, D={self.config.projection_dim}, head={self.num_labels} "
                f"{'trainable' if self.head_trainable else 'frozen'})")


def load_clip(path: str | os.PathLike, num_labels: int | None = None, seed: int = 0) -> CLIPModel:
    """Load a HF ``CLIPModel`` directory (config.json with ``model_type: "clip"`` + weights).

    ``num_labels`` = None: the head is set later by :meth:`CLIPModel.zero_shot_head` (frozen);
    an int: a trainable linear-probe head with that many classes.
    """
    path = os.fspath(path)
    cfg = CLIPConfig.from_pretrained(path)
    sd = read_checkpoint(path, cfg)
    model = CLIPModel(cfg, num_labels, seed, logit_scale=float(sd["logit_scale"]))
    model.load_state_dict({k: sd[k] for k in vision_param_shapes(cfg) if k in sd}, strict=False)
    model.text.load({k: sd[k] for k in text_param_shapes(cfg) if k != "logit_scale"})
    model.source_path = path
    return model


def _unpickle_text(config: CLIPConfig, params: np.ndarray) -> CLIPTextTower:
    t = CLIPTextTower(config)
    t._params[...] = params
    return t
