"""Mixed precision: the precision of the engine's matrix products and the bf16 GEMM path.

``precision="bf16"`` (on ``load_model``, a model's ``precision`` attribute, or ``AdamW``) runs every
matrix product of the model's forward and backward passes with bfloat16-rounded operands and fp32
accumulation -- the semantics of ``torch.autocast("cpu", dtype=torch.bfloat16)`` around a linear
layer or a matmul. Everything else stays fp32: master weights, gradients, AdamW moments, the loss,
softmax, LayerNorm statistics, GELU, dropout. Masks stay exact (a masked weight is 0 in both
formats). ``"fp32"`` is the default.

The bf16 products run on one of four paths (same rounding, fp32 sums; they differ only in the
order of the additions), chosen at run time from CPUID:

=============== ==============================================================================
``amx``         Intel AMX tiles (``tdpbf16ps``), Sapphire Rapids and later
``avx512bf16``  AVX512-BF16 (``vdpbf16ps``), e.g. Intel Cooper Lake, AMD Zen 4/5
``avx2bf16``    AVX2 + FMA: bf16 panels widened to fp32 (any x86-64 of the last decade)
``fp32``        rounded operand copies through OpenBLAS sgemm (any CPU)
=============== ==============================================================================

The best available path is the default; ``INSTANTSOUP_ISA=<path>`` in the environment or
:func:`set_isa` forces one, and forcing a path the CPU lacks is a ``ValueError``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from instantsoup._native import _C
from instantsoup.settings_base import PRECISIONS

__all__ = ["PRECISIONS", "ISAS", "check_precision", "available_isas", "get_isa", "set_isa", "autocast",
           "PrecisionMixin"]

ISAS = ("fp32", "avx2bf16", "avx512bf16", "amx")
_env_applied = False


def check_precision(precision: object) -> str:
    """``precision`` if it is "fp32" or "bf16", else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(precision)


def available_isas() -> list[str]:
    """The bf16 GEMM paths this CPU runs, e.g. ``['fp32', 'avx2bf16']``."""
    return list(_C.isa_available())


def set_isa(name: str) -> None:
    """Force the bf16 GEMM path for this process (ValueError if unknown or not on this CPU)."""
    global _env_applied
    if name not in ISAS:
        raise ValueError(f"unknown ISA path {name!r} (expected one of {', '.join(ISAS)})")
    if name not in available_isas():
        raise ValueError(f"ISA path {name!r} is not available on this CPU "
                         f"(available: {', '.join(available_isas())})")
    _C.set_isa(name)
    _env_applied = True


def _apply_env() -> None:
    """Honour INSTANTSOUP_ISA once, before the first bf16 product."""
    global _env_applied
    if _env_applied:
        return
    name = os.environ.get("INSTANTSOUP_ISA", "").strip().lower()
    if name:
        try:
            set_isa(name)
        except ValueError as e:
            raise ValueError(f"INSTANTSOUP_ISA={name}: {e}") from None
    _env_applied = True


def get_isa() -> str:
    """The bf16 GEMM path in use (INSTANTSOUP_ISA if set, else the best this CPU has)."""
    _apply_env()
    return str(_C.get_isa())


@contextmanager
def autocast(precision: str) -> Iterator[None]:
    """Run the engine calls inside with this precision of matrix products (this thread only)."""
    p = check_precision(precision)
    if p == "bf16":
        _apply_env()
    old = _C.get_autocast()
    _C.set_autocast(1 if p == "bf16" else 0)
    try:
        yield
    finally:
        _C.set_autocast(old)


class PrecisionMixin:
    """``model.precision`` ("fp32" default or "bf16"): the precision of the model's matrix products."""

    _precision = "fp32"

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        value = check_precision(value)
        if value == "bf16":
            _apply_env()
        self._precision = value
