"""Name-checked copies into the NumPy views of an engine model's C buffers (shared by BERT and CLIP)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def load_views(views: Mapping[str, np.ndarray], state: Mapping[str, Any], strict: bool = True) -> None:
    """Copy ``state`` (name -> float array) into ``views`` by name; validate everything first.

    strict: every name of ``views`` must be present and none unknown. Shapes must match exactly;
    floating-point dtypes only; NaN/inf refused.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"load_state_dict: expected a mapping, got {type(state).__name__}")
    unknown = [k for k in state if k not in views]
    if unknown and strict:
        raise ValueError(f"load_state_dict: unknown names: {', '.join(sorted(unknown)[:10])}"
                         + (" ..." if len(unknown) > 10 else ""))
    missing = [k for k in views if k not in state]
    if missing and strict:
        raise ValueError(f"load_state_dict: missing names: {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
    arrays = {}
    for k, v in state.items():
        if k not in views:
            continue
        a = np.asarray(v)
        if a.dtype.kind != "f":
            raise TypeError(f"load_state_dict: {k}: expected a floating-point array, got {a.dtype}")
        if a.shape != views[k].shape:
            raise ValueError(f"load_state_dict: {k}: expected shape {views[k].shape}, got {a.shape}")
        if a.dtype != np.float32:  # float64 values beyond float32's range would become inf
            with np.errstate(over="ignore"):
                a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"load_state_dict: {k}: contains NaN or inf (or values beyond float32's range)")
        arrays[k] = a
    for k, a in arrays.items():
        np.copyto(views[k], a, casting="same_kind")


def set_mask_views(mask_views: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray],
                   masks: Mapping[str, Any]) -> None:
    """Copy ``masks`` (name -> 0/1 array, 1 = kept) into ``mask_views`` by name; validate first."""
    if not isinstance(masks, Mapping):
        raise TypeError(f"set_masks: expected a mapping name -> array, got {type(masks).__name__}")
    checked = {}
    for k, v in masks.items():
        if k not in mask_views:
            hint = " (not a prunable weight)" if k in views else ""
            raise ValueError(f"set_masks: unknown mask name {k!r}{hint}")
        a = np.asarray(v)
        if a.shape != mask_views[k].shape:
            raise ValueError(f"set_masks: {k}: expected shape {mask_views[k].shape}, got {a.shape}")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"set_masks: {k}: expected a 0/1 array, got dtype {a.dtype}")
        if a.dtype != np.bool_ and not np.all((a == 0) | (a == 1)):
            raise ValueError(f"set_masks: {k}: values must be 0 or 1")
        checked[k] = a
    for k, a in checked.items():
        np.copyto(mask_views[k], a, casting="unsafe")
