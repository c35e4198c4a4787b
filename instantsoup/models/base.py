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

__all__ = ["EngineModel"]


class EngineModel(abc.ABC):
    """An engine model: a classifier whose parameters, gradients and masks live in C buffers.

    Attributes every model has: ``kind`` (its family's ``model_type``), ``config``,
    ``prunable_names`` (the weights pruning acts on, in layout order), ``source_path`` (the
    checkpoint it was loaded from, or None).
    """

    kind: str
    prunable_names: list[str]
    source_path: str | None

    # -- parameters ----------------------------------------------------------------------------
    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the parameter buffer (writes go into the model)."""

    @property
    @abc.abstractmethod
    def grads(self) -> dict[str, np.ndarray]:
        """name -> float32 view of the gradient buffer (filled by forward_backward)."""

    @property
    @abc.abstractmethod
    def masks(self) -> dict[str, np.ndarray]:
        """prunable name -> uint8 view of the mask buffer (1 = kept)."""

    @abc.abstractmethod
    def set_masks(self, masks: Mapping[str, Any]) -> None:
        """Set masks of some or all prunable weights; zero the masked weights."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy tensors in by name (masked weights are zeroed again)."""

    @abc.abstractmethod
    def param_offsets(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """name -> (offset in the flat buffer, shape)."""

    @property
    @abc.abstractmethod
    def num_parameters(self) -> int:
        """Floats in the parameter buffer."""

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
    @abc.abstractmethod
    def train(self, mode: bool = True) -> "EngineModel":
        """Dropout on (True) or off (False); returns self."""

    def eval(self) -> "EngineModel":
        return self.train(False)

    @property
    @abc.abstractmethod
    def training(self) -> bool:
        """Is dropout on?"""

    @abc.abstractmethod
    def seed(self, s: int) -> None:
        """Seed the dropout RNG (and restart its step counter)."""

    @abc.abstractmethod
    def rng_state(self) -> tuple[int, int]:
        """(seed, step) of the dropout RNG."""

    @abc.abstractmethod
    def set_rng_state(self, state: tuple[int, int]) -> None:
        """Restore a state from rng_state()."""

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
    @abc.abstractmethod
    def _adamw_step(self, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, seg: np.ndarray, decay: np.ndarray,
                    *hp: float) -> float:
        """One masked AdamW step on ``grads`` -> gradient norm before clipping."""

    @abc.abstractmethod
    def _train_step(self, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, seg: np.ndarray, decay: np.ndarray,
                    hp: tuple, batch: Mapping[str, Any], labels: Any, label_smoothing: float) -> tuple[float, float]:
        """Fused forward + backward + clip + AdamW + re-mask -> (loss, gradient norm)."""

    # -- copies and checkpoints --------------------------------------------------------------------
    @abc.abstractmethod
    def clone(self) -> "EngineModel":
        """An independent model: same config, parameters and masks, same mode and RNG state."""

    @abc.abstractmethod
    def copy_from(self, other: "EngineModel") -> None:
        """Copy parameters and masks from a model of the same config (no allocation)."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a checkpoint directory transformers loads."""
