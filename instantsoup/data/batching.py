"""Mini-batches of tokenized text: dynamic padding, length bucketing, seeded shuffling, fractional
epochs, seeded subsets, and random access by global step (so an interrupted run resumes exactly).

The order of epoch e depends only on (seed, e) and the examples: the batches of a global step are
the same whether the run got there in one go or resumed from a checkpoint.

Batch format (the engine's input): ``batch = {"input_ids", "attention_mask", "token_type_ids"}``,
each an int64 array (B, T) where T is the longest example of that batch (optionally rounded up to a
multiple); ``labels`` is (B,) int64 class ids, or float32 for regression, or None.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from instantsoup.data.encoded import Encoded
from instantsoup.data.epochs import EpochSizes

__all__ = ["Batches"]

Batch = Dict[str, np.ndarray]


def subset_size(n: "int | float", total: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
        raise TypeError(f"subset size must be an int count or a float fraction, got {type(n).__name__}")
    if isinstance(n, (float, np.floating)):
        if not 0.0 < n <= 1.0:
            raise ValueError(f"subset fraction must be in (0, 1], got {n}")
        return max(1, int(round(float(n) * total)))
    n = int(n)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be in [1, {total}], got {n}")
    return n


class _Store:
    """The tokenized examples as flat int32 arrays + offsets (shared by a Batches and its subsets)."""

    def __init__(self, encoded) -> None:
        if isinstance(encoded, Encoded) or (
                isinstance(encoded, tuple) and len(encoded) == 2 and len(encoded[0]) > 0
                and not isinstance(encoded[0][0], (int, np.integer))):
            ids, types = encoded
        else:
            ids, types = encoded, None
        ids = list(ids)
        if types is not None:
            types = list(types)
            if len(types) != len(ids):
                raise ValueError(f"Batches: {len(ids)} id lists but {len(types)} token-type lists")
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if len(ids) and self.lengths.min() == 0:
            raise ValueError(f"Batches: example {int(np.argmin(self.lengths))} has no tokens")
        self.offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        total = int(self.offsets[-1])
        self.ids = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=total).astype(np.int32)
        if types is None:
            self.types = np.zeros(total, dtype=np.int8)
        else:
            tl = np.fromiter((len(x) for x in types), dtype=np.int64, count=len(types))
            if not np.array_equal(tl, self.lengths):
                bad = int(np.flatnonzero(tl != self.lengths)[0])
                raise ValueError(f"Batches: example {bad} has {self.lengths[bad]} ids but {tl[bad]} token types")
            self.types = np.fromiter((t for x in types for t in x), dtype=np.int64, count=total).astype(np.int8)

    def __len__(self) -> int:
        return len(self.lengths)


class Batches(EpochSizes):
    """Batches over tokenized examples (see module docstring).

    encoded:      :class:`Encoded` (or ``(input_ids, token_type_ids)``, or just the id lists)
    labels:       (N,) class ids / regression targets, or None
    batch_size:   examples per batch (the last batch of an epoch may be smaller unless drop_last)
    seed:         the shuffling seed; epoch e's order is a function of (seed, e) alone
    shuffle:      shuffle every epoch; without it, examples keep their order (or, with ``bucket``,
                  are sorted by length for the least padding — use :meth:`collect` to get outputs
                  back in example order)
    bucket:       sort windows of ``bucket_batches * batch_size`` shuffled examples by length before
                  cutting batches, then shuffle the batches (less padding, still random)
    pad_id:       the tokenizer's pad id
    pad_to_multiple_of: round T up to a multiple (e.g. 8); None = exact
    """

    def __init__(self, encoded, labels=None, batch_size: int = 32, seed: int = 0, shuffle: bool = True,
                 bucket: bool = True, *, pad_id: int = 0, drop_last: bool = False, bucket_batches: int = 50,
                 pad_to_multiple_of: Optional[int] = None, _store: Optional[_Store] = None,
                 _indices: Optional[np.ndarray] = None, _labels_all: Optional[np.ndarray] = None) -> None:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"Batches: batch_size must be >= 1, got {batch_size}")
        if int(bucket_batches) < 1:
            raise ValueError(f"Batches: bucket_batches must be >= 1, got {bucket_batches}")
        self._store = _store if _store is not None else _Store(encoded)
        n_all = len(self._store)
        if _labels_all is None and labels is not None:
            lab = np.asarray(labels)
            if lab.shape != (n_all,):
                raise ValueError(f"Batches: labels shape {lab.shape} does not match {n_all} examples")
            _labels_all = lab.astype(np.float32 if np.issubdtype(lab.dtype, np.floating) else np.int64)
        self._labels_all = _labels_all
        self._indices = np.arange(n_all, dtype=np.int64) if _indices is None else _indices
        if len(self._indices) == 0:
            raise ValueError("Batches: no examples")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.bucket = bool(bucket)
        self.pad_id = int(pad_id)
        self.drop_last = bool(drop_last)
        self.bucket_batches = int(bucket_batches)
        self.pad_to_multiple_of = None if not pad_to_multiple_of else int(pad_to_multiple_of)
        if self.drop_last and len(self._indices) < self.batch_size:
            raise ValueError(f"Batches: drop_last with {len(self._indices)} examples < batch_size "
                             f"{self.batch_size} leaves no batch")
        self._plan_cache: Tuple[int, List[np.ndarray]] = (-1, [])

    # ----------------------- sizes (num_examples, steps_per_epoch, num_steps, indices): EpochSizes
    @property
    def labels(self) -> Optional[np.ndarray]:
        """(N,) labels of :attr:`indices` in that order (None when unlabeled)."""
        return None if self._labels_all is None else self._labels_all[self._indices]

    @property
    def lengths(self) -> np.ndarray:
        return self._store.lengths[self._indices]

    # ------------------------------------------------------------------ order
    def _epoch_plan(self, epoch: int) -> List[np.ndarray]:
        if self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        n, b = len(self._indices), self.batch_size
        lengths = self._store.lengths[self._indices]
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), 0xBA7C]))
            order = rng.permutation(n)
        else:
            rng = None
            order = np.arange(n)
        if self.bucket:
            if self.shuffle:
                window = b * self.bucket_batches
                chunks = [order[i:i + window] for i in range(0, n, window)]
                order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks])
            else:
                order = order[np.argsort(-lengths, kind="stable")]
        batches = [order[i:i + b] for i in range(0, n, b)]
        if self.drop_last and len(batches[-1]) < b:
            batches.pop()
        if self.shuffle and self.bucket:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        plan = [self._indices[x] for x in batches]
        self._plan_cache = (int(epoch), plan)
        return plan

    def batch_indices(self, step: int) -> np.ndarray:
        """(B,) example indices of global step ``step`` (epoch = step // steps_per_epoch)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(int(step), self.steps_per_epoch)
        return self._epoch_plan(epoch)[k]

    # ------------------------------------------------------------------ batches
    def collate(self, indices: Sequence[int]) -> Tuple[Batch, Optional[np.ndarray]]:
        """Pad the examples at ``indices`` into one batch: (batch dict of (B, T) int64, labels)."""
        idx = np.asarray(indices, dtype=np.int64)
        st = self._store
        lens = st.lengths[idx]
        T = int(lens.max())
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(idx)
        input_ids = np.full((B, T), self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros((B, T), dtype=np.int64)
        attention_mask = (np.arange(T)[None, :] < lens[:, None]).astype(np.int64)
        for r, i in enumerate(idx):
            a, e = st.offsets[i], st.offsets[i + 1]
            input_ids[r, : e - a] = st.ids[a:e]
            token_type_ids[r, : e - a] = st.types[a:e]
        labels = None if self._labels_all is None else self._labels_all[idx]
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": token_type_ids}, labels

    def batch(self, step: int) -> Tuple[Batch, Optional[np.ndarray]]:
        """(batch, labels) of global step ``step``."""
        return self.collate(self.batch_indices(step))

    def epoch(self, epoch: int = 0) -> Iterator[Tuple[Batch, Optional[np.ndarray]]]:
        """The batches of one epoch, in order."""
        for k in range(self.steps_per_epoch):
            yield self.batch(epoch * self.steps_per_epoch + k)

    def __iter__(self) -> Iterator[Tuple[Batch, Optional[np.ndarray]]]:
        """One pass: the batches of epoch 0 (use :meth:`iter_steps` to train across epochs)."""
        return self.epoch(0)

    def iter_steps(self, num_steps: Optional[int] = None, start: int = 0, *, epochs: Optional[float] = None,
                   with_step: bool = False) -> Iterator:
        """Batches of global steps ``start``, ``start + 1``, ... (crossing epochs).

        num_steps: how many (None and no ``epochs`` = endless); epochs: alternatively a (fractional)
        number of epochs counted from step 0, i.e. the iterator stops at ``num_steps(epochs)``.
        Resuming a run at step s with ``start=s`` yields exactly the batches the run would have seen.
        Yields (batch, labels), or (step, batch, labels) with ``with_step``.
        """
        stop = self.stop_step(num_steps, start, epochs)
        s = int(start)
        while stop is None or s < stop:
            b, y = self.batch(s)
            yield (s, b, y) if with_step else (b, y)
            s += 1

    # ------------------------------------------------------------------ derived
    def subset(self, n: "int | float", seed: int, **overrides) -> "Batches":
        """A seeded random subset of these examples (n examples or a fraction in (0, 1]).

        The subset's own shuffling uses ``seed`` too (override any constructor option by keyword,
        e.g. ``batch_size=``). Denoisers draw their data subsets this way.
        """
        k = subset_size(n, len(self._indices))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B5B]))
        chosen = np.sort(self._indices[rng.permutation(len(self._indices))[:k]])
        opts = dict(batch_size=self.batch_size, seed=int(seed), shuffle=self.shuffle, bucket=self.bucket,
                    pad_id=self.pad_id, drop_last=self.drop_last and k >= self.batch_size,
                    bucket_batches=self.bucket_batches, pad_to_multiple_of=self.pad_to_multiple_of)
        opts.update(overrides)
        return Batches(None, None, _store=self._store, _indices=chosen, _labels_all=self._labels_all, **opts)

    def take(self, indices: Sequence[int], **overrides) -> "Batches":
        """Batches over the examples ``indices`` (into the original encoded list, e.g. a denoiser's
        data subset), with the same options unless overridden by keyword."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= len(self._store):
            raise ValueError(f"take: expected a non-empty 1-D array of example indices in [0, {len(self._store)})")
        opts = dict(batch_size=self.batch_size, seed=self.seed, shuffle=self.shuffle, bucket=self.bucket,
                    pad_id=self.pad_id, drop_last=self.drop_last, bucket_batches=self.bucket_batches,
                    pad_to_multiple_of=self.pad_to_multiple_of)
        opts.update(overrides)
        return Batches(None, None, _store=self._store, _indices=idx, _labels_all=self._labels_all, **opts)

    def with_options(self, **overrides) -> "Batches":
        """The same examples with other options (e.g. ``shuffle=False`` for evaluation)."""
        opts = dict(batch_size=self.batch_size, seed=self.seed, shuffle=self.shuffle, bucket=self.bucket,
                    pad_id=self.pad_id, drop_last=self.drop_last, bucket_batches=self.bucket_batches,
                    pad_to_multiple_of=self.pad_to_multiple_of)
        opts.update(overrides)
        return Batches(None, None, _store=self._store, _indices=self._indices,
                       _labels_all=self._labels_all, **opts)

    def collect(self, fn: Callable[[Batch], np.ndarray]) -> np.ndarray:
        """Apply ``fn`` (e.g. ``model.forward``) to every batch of one pass and return the outputs
        stacked in the order of :attr:`indices` (the dataset order): (N, ...) array."""
        if self.drop_last and len(self._indices) % self.batch_size:
            raise ValueError("collect: drop_last leaves examples out; use with_options(drop_last=False)")
        out = None
        pos = {int(i): r for r, i in enumerate(self._indices)}
        for k in range(self.steps_per_epoch):
            idx = self.batch_indices(k)
            batch, _ = self.collate(idx)
            y = np.asarray(fn(batch))
            if y.shape[0] != len(idx):
                raise ValueError(f"collect: fn returned {y.shape[0]} rows for a batch of {len(idx)}")
            if out is None:
                out = np.empty((len(self._indices),) + y.shape[1:], dtype=y.dtype)
            out[[pos[int(i)] for i in idx]] = y
        return out

    def padding_fraction(self, epoch: int = 0) -> float:
        """Share of pad tokens over one epoch (how well bucketing works)."""
        real = padded = 0
        for idx in self._epoch_plan(epoch):
            lens = self._store.lengths[idx]
            real += int(lens.sum())
            padded += int(lens.max()) * len(idx)
        return 1.0 - real / padded if padded else 0.0

    def __repr__(self) -> str:
        return (f"Batches(n={self.num_examples}, batch_size={self.batch_size}, "
                f"steps_per_epoch={self.steps_per_epoch}, seed={self.seed}, shuffle={self.shuffle}, "
                f"bucket={self.bucket})")
