"""What every batch iterator over a fixed list of examples knows about its size (text
:class:`~instantsoup.data.batching.Batches` and :class:`~instantsoup.data.vision.ImageBatches`).

A subclass sets ``_indices`` ((N,) the examples it draws from), ``batch_size`` and ``drop_last``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class EpochSizes:
    _indices: np.ndarray
    batch_size: int
    drop_last: bool

    @property
    def num_examples(self) -> int:
        return len(self._indices)

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self._indices), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def num_steps(self, epochs: float) -> int:
        """Steps in ``epochs`` epochs (fractions allowed: 0.1 epoch = 10% of the batches, rounded; at
        least 1 when epochs > 0)."""
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        steps = int(round(float(epochs) * self.steps_per_epoch))
        return max(steps, 1) if epochs > 0 else 0

    @property
    def indices(self) -> np.ndarray:
        """(N,) the example indices (into the whole encoded list / dataset) these batches draw from."""
        return self._indices

    def stop_step(self, num_steps: Optional[int], start: int, epochs: Optional[float]) -> Optional[int]:
        """Where ``iter_steps(num_steps, start, epochs=epochs)`` stops: after ``num_steps`` steps from
        ``start``, or at ``num_steps(epochs)`` counted from step 0, whichever comes first (None:
        neither given, endless)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        stop = None
        if epochs is not None:
            stop = self.num_steps(epochs)
        if num_steps is not None:
            stop = start + int(num_steps) if stop is None else min(stop, start + int(num_steps))
        return stop
