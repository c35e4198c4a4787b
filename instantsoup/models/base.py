"""The contract every engine model meets (BERT, RoBERTa, DistilBERT, ELECTRA, ViT, CLIP).

The methods (ISP, IMP, ...), the trainer, AdamW, tickets and the CLI use models only through this
interface. Parameters live in one float32 C buffer per model; ``state_dict()``, ``grads`` and
``masks`` are NumPy views of it under the Hugging Face names.
"""
from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from instantsoup._native import _C
from instantsoup.models.views import load_views, set_mask_views
from instantsoup.precision import PrecisionMixin

__all__ = ["EngineModel"]


class EngineModel(PrecisionMixin, abc.ABC):
    """An engine model: a classifier whose parameters, gradients and masks live in C buffers.

    Attributes every model has: ``kind`` (its family's ``model_type``), ``config``,
    ``prunable_names`` (the weights pruning acts on, in layout order), ``source_path`` (the
    checkpoint it was loaded from, or None), ``precision`` (of its matrix products, "fp32" or
    "bf16": a subclass runs its C forward and backward calls inside ``autocast(self.precision)``;
    AdamW.train_step does so for the fused step).

    What every model does the same way is implemented here, on the one C model handle
    (csrc/py_model.c): a subclass sets ``_h`` (the handle), ``_params``, ``_grads``, ``_mask_buf``
    (``_C.model_buffers(_h)``) and the name -> view dicts ``_views``, ``_gviews`` (parameters and
    gradients) and ``_mviews`` (masks of the prunable weights), plus ``_training`` and ``_seed``.
    """

    kind: str
    prunable_names: list[str]
    source_path: str | None
    _h: Any
    _params: np.ndarray
    _grads: np.ndarray
    _mask_buf: np.ndarray
    _views: dict[str, np.ndarray]
    _gviews: dict[str, np.ndarray]
    _mviews: dict[str, np.ndarray]
    _training: bool = False
    _seed: int = 0

    # -- parameters ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the parameter buffer (writes go into the model)."""
        return dict(self._views)

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the gradient buffer (filled by forward_backward)."""
        return dict(self._gviews)

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """prunable name -> uint8 view of the mask buffer (1 = kept)."""
        return dict(self._mviews)

    def set_masks(self, masks: Mapping[str, Any]) -> None:
        """Set masks (name -> 0/1 array, 1 = kept) of some or all prunable weights; zero the masked weights."""
        set_mask_views(self._mviews, self._views, masks)
        self._apply_masks()

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy tensors in by name. strict: every name must be present and none unknown.

        Masked weights are zeroed again afterwards (the masks stay).
        """
        load_views(self._views, state, strict)
        self._apply_masks()

    def _apply_masks(self) -> None:
        n = self._mask_buf.size  # the masks cover the start of the buffer (the prunable tensors)
        self._params[:n] *= self._mask_buf
        self._grads[:n] *= self._mask_buf

    def param_offsets(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (offset in the flat buffer, shape)."""
        base = self._params.__array_interface__["data"][0]
        return {k: ((v.__array_interface__["data"][0] - base) // 4, tuple(v.shape)) for k, v in self._views.items()}

    def flat_parameters(self) -> np.ndarray:
        """The whole parameter buffer, (num_parameters,) float32 view."""
        return self._params

    @property
    def num_parameters(self) -> int:
        """Floats in the parameter buffer."""
        return int(self._params.size)

    @property
    @abc.abstractmethod
    def num_labels(self) -> int:
        """Outputs of the classification head."""

    @abc.abstractmethod
    def default_no_decay(self, name: str) -> bool:
        """Hugging Face Trainer's grouping: True for biases and LayerNorm weights (no decay)."""

    @abc.abstractmethod
    def cost_dims(self) -> dict:
        """L, H, I, K of the trained encoder, for FLOPs accounting."""

    # -- modes and randomness --------------------------------------------------------------------
    def train(self, mode: bool = True) -> "EngineModel":
        """Dropout on (True) or off (False); returns self."""
        self._training = bool(mode)
        _C.model_set_training(self._h, self._training)
        return self

    def eval(self) -> "EngineModel":
        return self.train(False)

    @property
    def training(self) -> bool:
        """Is dropout on?"""
        return self._training

    def seed(self, s: int) -> None:
        """Seed the dropout RNG (and restart its step counter)."""
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < 2**64:
            raise ValueError(f"seed: expected an integer in [0, 2**64), got {s!r}")
        self._seed = int(s)
        _C.model_rng(self._h, self._seed, 0)

    def rng_state(self) -> tuple[int, int]:
        """(seed, step) of the dropout RNG."""
        return tuple(_C.model_rng_state(self._h))

    def set_rng_state(self, state: tuple[int, int]) -> None:
        """Restore a state from rng_state()."""
        _C.model_rng(self._h, int(state[0]), int(state[1]))

    # -- compute ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Logits (B, num_labels) float32 of a batch dict (input_ids ... or pixel_values)."""

    def __call__(self, batch: Mapping[str, Any]) -> np.ndarray:
        return self.forward(batch)

    @abc.abstractmethod
    def forward_backward(self, batch: Mapping[str, Any], labels: Any, label_smoothing: float = 0.0) -> float:
        """Mean loss; overwrites ``grads``."""

    # AdamW's one entry point (instantsoup.optim.AdamW): the moments, the parameter segments and
    # their decay flags, then lr, beta1, beta2, eps, weight_decay, step, max_norm (0: no clipping).
    def _adamw_step(self, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, seg: np.ndarray, decay: np.ndarray,
                    *hp: float) -> float:
        """One masked AdamW step on ``grads`` -> gradient norm before clipping."""
        lr, beta1, beta2, eps, weight_decay, step, max_norm = hp
        return _C.model_adamw(self._h, exp_avg, exp_avg_sq, seg, decay, float(lr), float(beta1), float(beta2),
                              float(eps), float(weight_decay), int(step), float(max_norm))

    @abc.abstractmethod
    def _train_step(self, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, seg: np.ndarray, decay: np.ndarray,
                    hp: tuple, batch: Mapping[str, Any], labels: Any, label_smoothing: float) -> tuple[float, float]:
        """Fused forward + backward + clip + AdamW + re-mask -> (loss, gradient norm)."""

    # -- copies and checkpoints --------------------------------------------------------------------
    @abc.abstractmethod
    def clone(self) -> "EngineModel":
        """An independent model: same config, parameters and masks, same mode and RNG state."""

    def copy_from(self, other: "EngineModel") -> None:
        """Copy parameters and masks (and any state of the family's own, e.g. CLIP's frozen head)
        from a model of the same family and config (no allocation)."""
        if not isinstance(other, type(self)):
            raise TypeError(f"copy_from: expected a {type(self).__name__}, got {type(other).__name__}")
        _C.model_copy(self._h, other._h)

    @abc.abstractmethod
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a checkpoint directory transformers loads."""

    # -- pickling (processes, Ray's object store) ----------------------------------------------------
    @abc.abstractmethod
    def _rebuild(self) -> tuple[tuple, dict[str, Any]]:
        """(constructor arguments of an empty model like this one, attributes :meth:`_restore` sets)."""

    def _restore(self, attrs: dict[str, Any]) -> None:
        """Set what :meth:`_rebuild` recorded besides the constructor arguments."""
        for k, v in attrs.items():
            setattr(self, k, v)

    def __reduce__(self):
        """The constructor arguments, the parameter and mask buffers as they are (pickle protocol 5
        writes each buffer once, or hands it out of band without a copy; the new model copies it once
        into its own C buffer), mode, precision and dropout RNG state. Gradients are not carried (the
        new model's are zero)."""
        args, attrs = self._rebuild()
        attrs = {**attrs, "precision": self.precision}
        return (_unpickle_model, (type(self), args, attrs, self._params, self._mask_buf, self._training,
                                  self.rng_state()))


def _unpickle_model(cls: type, args: tuple, attrs: dict[str, Any], params: np.ndarray, masks: np.ndarray,
                    training: bool, rng_state: tuple[int, int]) -> EngineModel:
    m = cls(*args)
    m._params[...] = params
    m._mask_buf[...] = masks
    m._restore(attrs)
    m.train(training)
    m._seed = int(rng_state[0])
    m.set_rng_state(rng_state)
    return m
