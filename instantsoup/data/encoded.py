"""The tokenizer's output (:class:`Encoded`): what the text side produces and batching consumes."""
from __future__ import annotations

from typing import List, NamedTuple

import numpy as np

__all__ = ["Encoded"]


class Encoded(NamedTuple):
    """Token ids of a list of examples (unpadded). ``ids, types = tokenizer.encode(texts)`` works.

    input_ids:      list of N id lists, each ``[CLS] a... [SEP] (b... [SEP])``
    token_type_ids: list of N lists of the same lengths (0 for the first segment, 1 for the second)
    """

    input_ids: List[List[int]]
    token_type_ids: List[List[int]]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 number of tokens of each example (special tokens included)."""
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))
