"""AdamW for engine models: torch.optim.AdamW semantics, masks respected, fused training step.

The moments live in two float32 buffers with the model's parameter layout. ``train_step`` is one
C call (forward, backward, gradient clipping, AdamW, re-masking) with the GIL released.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from instantsoup.models.base import EngineModel
from instantsoup.precision import autocast, check_precision

__all__ = ["AdamW"]


def _check_float(name: str, v: Any, lo: float = 0.0, hi: float = math.inf, hi_open: bool = False,
                 allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    v = float(v)
    if not (lo <= v and (v < hi if hi_open else v <= hi)) or math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: {v} is outside [{lo}, {hi}{')' if hi_open else ']'}")
    return v


class AdamW:
    """AdamW (decoupled weight decay, bias correction) over an engine model's parameters.

    Args:
        model: an engine model (``instantsoup.load_model``).
        lr: learning rate (can be overridden per step).
        betas, eps, weight_decay: as torch.optim.AdamW.
        no_decay: which parameters get no weight decay: None (default: biases and LayerNorm
            weights, as the Hugging Face Trainer), a collection of name substrings, or a
            callable name -> bool.
        precision: the precision of ``train_step``'s matrix products: "fp32", "bf16" (bf16
            operands, fp32 accumulation) or None (default: the model's ``precision``). The
            moments and the update are fp32 in every case (fp32 master weights).

    Masked weights (model.masks == 0) stay exactly 0, with zero gradient and moments.
    """

    def __init__(self, model, lr: float = 2e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, no_decay: Iterable[str] | Callable[[str], bool] | None = None,
                 precision: str | None = None):
        if not isinstance(model, EngineModel):
            raise TypeError(f"AdamW: expected an instantsoup engine model, got {type(model).__name__}")
        self.model = model
        self.precision = None if precision is None else check_precision(precision)
        self.lr = _check_float("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair, got {betas!r}")
        self.betas = (_check_float("betas[0]", betas[0], 0.0, 1.0, True), _check_float("betas[1]", betas[1], 0.0, 1.0, True))
        self.eps = _check_float("eps", eps)
        self.weight_decay = _check_float("weight_decay", weight_decay)
        if no_decay is None:
            rule = model.default_no_decay
        elif callable(no_decay):
            rule = no_decay
        else:
            subs = [no_decay] if isinstance(no_decay, str) else list(no_decay)
            rule = lambda name: any(s in name for s in subs)  # noqa: E731
        self.decay_names = []
        spans = []
        for name, (off, shape) in model.param_offsets().items():
            d = not bool(rule(name))
            if d:
                self.decay_names.append(name)
            spans.append((off, off + math.prod(shape), d))
        spans.sort()
        bounds, flags = [0], []
        for a, b, d in spans:
            if a != bounds[-1]:
                raise RuntimeError("AdamW: the parameter layout has a gap (internal error)")
            if flags and flags[-1] == d:
                bounds[-1] = b
            else:
                bounds.append(b)
                flags.append(d)
        if bounds[-1] != model.num_parameters:
            raise RuntimeError("AdamW: the parameter layout does not cover the buffer (internal error)")
        self._seg = np.asarray(bounds, dtype=np.int64)
        self._decay = np.asarray(flags, dtype=np.uint8)
        n = model.num_parameters
        self.exp_avg = np.zeros(n, dtype=np.float32)
        self.exp_avg_sq = np.zeros(n, dtype=np.float32)
        self.step_count = 0
        self.last_grad_norm: float | None = None

    def _hp(self, lr: float | None, max_grad_norm: float | None):
        lr = self.lr if lr is None else _check_float("lr", lr)
        mg = 0.0 if max_grad_norm is None else _check_float("max_grad_norm", max_grad_norm, allow_inf=True)
        if max_grad_norm is not None and mg <= 0.0:
            raise ValueError(f"max_grad_norm: expected a positive number or None, got {max_grad_norm}")
        return (lr, self.betas[0], self.betas[1], self.eps, self.weight_decay, self.step_count + 1, mg)

    def step(self, lr: float | None = None, max_grad_norm: float | None = None) -> float:
        """Apply model.grads: clip (if max_grad_norm), AdamW, re-mask. Returns the norm before clipping."""
        norm = self.model._adamw_step(self.exp_avg, self.exp_avg_sq, self._seg, self._decay,
                                      *self._hp(lr, max_grad_norm))
        self.step_count += 1
        self.last_grad_norm = norm
        return norm

    def train_step(self, batch: Mapping[str, Any], labels: Any, lr: float | None = None,
                   max_grad_norm: float | None = None, label_smoothing: float = 0.0) -> float:
        """Forward + backward + clip + AdamW + re-mask in one C call. Returns the mean loss.

        The gradient norm before clipping is left in ``last_grad_norm``.
        """
        with autocast(self.precision or self.model.precision):
            loss, norm = self.model._train_step(self.exp_avg, self.exp_avg_sq, self._seg, self._decay,
                                                self._hp(lr, max_grad_norm), batch, labels, float(label_smoothing))
        self.step_count += 1
        self.last_grad_norm = norm
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Step count, hyperparameters and copies of the moments (for resumable runs)."""
        return {"step": self.step_count, "exp_avg": self.exp_avg.copy(), "exp_avg_sq": self.exp_avg_sq.copy(),
                "lr": self.lr, "betas": tuple(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            if k not in state:
                raise ValueError(f"AdamW.load_state_dict: {k!r} is missing")
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"AdamW.load_state_dict: step must be a non-negative int, got {step!r}")
        arrs = {}
        for k in ("exp_avg", "exp_avg_sq"):
            a = np.asarray(state[k])
            if a.shape != self.exp_avg.shape or a.dtype.kind != "f":
                raise ValueError(f"AdamW.load_state_dict: {k}: expected float shape {self.exp_avg.shape}, "
                                 f"got {a.dtype} {a.shape}")
            arrs[k] = a
        # validate every hyperparameter before changing anything (a bad state loses nothing)
        hps = {k: _check_float(f"AdamW.load_state_dict: {k}", state[k])
               for k in ("lr", "eps", "weight_decay") if k in state}
        if "betas" in state:
            b = state["betas"]
            if not isinstance(b, (tuple, list)) or len(b) != 2:
                raise ValueError(f"AdamW.load_state_dict: betas: expected a pair, got {b!r}")
            hps["betas"] = tuple(_check_float(f"AdamW.load_state_dict: betas[{i}]", b[i], 0.0, 1.0, True)
                                 for i in range(2))
        np.copyto(self.exp_avg, arrs["exp_avg"], casting="same_kind")
        np.copyto(self.exp_avg_sq, arrs["exp_avg_sq"], casting="same_kind")
        self.step_count = int(step)
        for k, v in hps.items():
            setattr(self, k, v)

    def copy_from(self, other: "AdamW") -> None:
        """Copy step count, hyperparameters and moments from another AdamW of the same size (no allocation)."""
        if not isinstance(other, AdamW) or other.exp_avg.shape != self.exp_avg.shape:
            raise ValueError("AdamW.copy_from: expected an AdamW over a model of the same size")
        np.copyto(self.exp_avg, other.exp_avg)
        np.copyto(self.exp_avg_sq, other.exp_avg_sq)
        self.step_count = other.step_count
        self.lr, self.betas, self.eps, self.weight_decay = other.lr, other.betas, other.eps, other.weight_decay

    def reset(self) -> None:
        """Zero the moments and the step count."""
        self.exp_avg.fill(0.0)
        self.exp_avg_sq.fill(0.0)
        self.step_count = 0
        self.last_grad_norm = None
