"""Masks over the prunable weights: exact magnitude / random selection, merges, soups, I/O.

Conventions
-----------
* A mask is a ``uint8`` array of the weight's shape, **1 = kept, 0 = masked (pruned)**, keyed by
  the Hugging Face parameter name (``"bert.encoder.layer.0.attention.self.query.weight"``).
* ``sparsity`` is always the **absolute** fraction of *all* prunable weights that are masked:
  ``sparsity = masked / P`` with ``P`` the number of prunable weights. A target sparsity ``s``
  masks exactly ``round(s * P)`` weights (Python's ``round``: half to even, like
  ``torch.nn.utils.prune``). With ``scope="layer"`` each tensor ``t`` gets ``round(s * n_t)``.
* ``torch.nn.utils.prune``'s ``amount`` is a fraction of the weights that are **still kept**:
  going from sparsity ``s0`` to ``s`` is ``amount = (s - s0) / (1 - s0)``, see
  :func:`to_torch_amount` / :func:`from_torch_amount`. Ten rounds of ``amount=0.2`` reach
  ``1 - 0.8**10 = 0.893`` sparsity, not 2.0.
* Pruning is **monotone** by default: weights already masked stay masked; new weights are chosen
  among the ones still kept. Asking for fewer masked weights than are already masked is an error.
* Selection order: the smallest keys (``|w|``, a score, a random number) are masked first; equal
  keys are broken by global position -- the earlier tensor (in the order of the mapping) and the
  smaller flat index is masked first, as a stable ascending sort would do. Results do not depend
  on the number of threads.

Merges take up to 255 masks. Everything heavy runs in C (``instantsoup._C``): a two-level radix select over the float bit
patterns, multi-threaded, without sorting and without concatenating the weights (extra memory is
a few hundred KB per thread, plus the result mask: 1 byte per weight).

Using a saved mask without instantsoup (``torch.nn.utils.prune``)::

    from safetensors.numpy import load_file
    import torch
    import torch.nn.utils.prune as prune

    masks = load_file("masks.safetensors")          # {HF name: uint8 array, 1 = kept}
    for name, m in masks.items():
        module_name, param = name.rsplit(".", 1)
        prune.custom_from_mask(model.get_submodule(module_name), param, torch.from_numpy(m))
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from instantsoup._native import _C
from instantsoup.fileio import save_arrays

log = logging.getLogger(__name__)

__all__ = [
    "MaskSet",
    "PackedMaskSet",
    "magnitude_masks",
    "random_masks",
    "merge_masks",
    "average_weights",
    "masked_count",
    "to_torch_amount",
    "from_torch_amount",
]

MERGE_RULES = ("union", "intersection", "vote")
_FORMAT = "instantsoup.masks"


# --------------------------------------------------------------------------------------------
# small helpers


def _version() -> str:
    try:
        from instantsoup import __version__

        return __version__
    except ImportError:  # pragma: no cover - partial import during package init
        return "unknown"


def _check_sparsity(sparsity: Any, what: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}: expected a number in [0, 1), got {type(sparsity).__name__}")
    s = float(sparsity)
    if not math.isfinite(s) or s < 0.0 or s >= 1.0:
        raise ValueError(f"{what}: expected a fraction in [0, 1), got {sparsity!r}")
    return s


def masked_count(sparsity: float, numel: int) -> int:
    """How many of ``numel`` weights a target ``sparsity`` masks: ``round(sparsity * numel)``
    (half to even, as Python and ``torch.nn.utils.prune`` round)."""
    s = _check_sparsity(sparsity)
    if isinstance(numel, bool) or not isinstance(numel, (int, np.integer)) or numel < 0:
        raise ValueError(f"numel: expected a non-negative int, got {numel!r}")
    return int(round(s * int(numel)))


def to_torch_amount(sparsity: float, current_sparsity: float = 0.0, numel: int | None = None) -> float:
    """The ``amount`` for ``torch.nn.utils.prune`` that goes from ``current_sparsity`` to
    ``sparsity`` (both absolute fractions masked): ``(sparsity - current) / (1 - current)``.

    With ``numel`` (the number of weights P) both sparsities are first turned into the counts we
    mask, ``round(s * P)``, and the amount is ``(m - m0) / (P - m0)``: torch then masks exactly
    the same number of weights as :func:`magnitude_masks` (a repeated target gives 0, not a
    negative amount from rounding). For a count torch cannot misround, pass the integer
    ``masked_count(sparsity, P) - already_masked`` as ``amount`` instead.
    """
    s = _check_sparsity(sparsity)
    s0 = _check_sparsity(current_sparsity, "current_sparsity")
    if numel is not None:
        P = int(numel)
        m, m0 = int(round(s * P)), int(round(s0 * P))
        if m < m0:
            raise ValueError(f"to_torch_amount: sparsity {s} masks {m} of {P} weights, fewer than the "
                             f"{m0} already masked; pruning cannot unmask")
        return (m - m0) / (P - m0) if P > m0 else 0.0
    if s < s0:
        raise ValueError(
            f"to_torch_amount: sparsity {s} is below the current sparsity {s0}; pruning cannot unmask"
        )
    return (s - s0) / (1.0 - s0)


def from_torch_amount(amount: float, current_sparsity: float = 0.0) -> float:
    """The absolute sparsity reached by ``torch.nn.utils.prune`` with a fractional ``amount``
    applied at ``current_sparsity``: ``current + amount * (1 - current)``."""
    s0 = _check_sparsity(current_sparsity, "current_sparsity")
    a = float(amount)
    if not math.isfinite(a) or a < 0.0 or a > 1.0:
        raise ValueError(f"from_torch_amount: amount must be in [0, 1], got {amount!r}")
    return s0 + a * (1.0 - s0)


def _to_numpy(a: Any) -> np.ndarray:
    """ndarray or torch tensor (duck-typed, no torch import) -> ndarray without copying."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _float32(name: str, a: Any, what: str = "weights") -> np.ndarray:
    arr = _to_numpy(a)
    if arr.dtype != np.float32:
        raise TypeError(
            f"{what} {name!r}: expected float32, got {arr.dtype} (convert explicitly, e.g. "
            ".astype(np.float32))"
        )
    return np.ascontiguousarray(arr)


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "state_dict") and hasattr(obj, "masks") and not isinstance(obj, Mapping)


def _resolve_params(model_or_params: Any, fn: str) -> tuple[list[str], list[np.ndarray], Any]:
    """(names, float32 arrays, the model's current masks or None)."""
    if _is_model(model_or_params):
        masks = model_or_params.masks
        names = list(masks)
        sd = model_or_params.state_dict()
        missing = [n for n in names if n not in sd]
        if missing:
            raise ValueError(f"{fn}: model.masks names not in model.state_dict(): {missing[:5]}")
        arrays = [_float32(n, sd[n]) for n in names]
        return names, arrays, masks
    if isinstance(model_or_params, Mapping):
        names = list(model_or_params)
        arrays = [_float32(n, model_or_params[n]) for n in names]
        return names, arrays, None
    raise TypeError(
        f"{fn}: expected a model (with .state_dict() and .masks) or a mapping name -> float32 array, "
        f"got {type(model_or_params).__name__}"
    )


def _named_errors(names: Sequence[str], fn: str, call: Callable, *args, **kwargs):
    """Run a _C call; name tensors in its error messages ("tensor #3" -> the parameter name)."""
    try:
        return call(*args, **kwargs)
    except ValueError as e:
        msg = re.sub(r"tensor #(\d+)", lambda m: f"{names[int(m.group(1))]!r}", str(e))
        raise ValueError(f"{fn}: {msg}") from None


def _score_source(scores: Any, names: Sequence[str], shapes: Sequence[tuple], fn: str
                  ) -> tuple[str, list[np.ndarray]]:
    """scores -> (kind, arrays): a model gives |w| ('abs'); a mapping gives raw scores ('score')."""
    if _is_model(scores):
        sd = scores.state_dict()
        src, kind, what = sd, "abs", "weights"
    elif isinstance(scores, Mapping):
        src, kind, what = scores, "score", "scores"
    else:
        raise TypeError(
            f"{fn}: scores must be a mapping name -> float32 array (larger = more important) or a "
            f"model (its |w| is used), got {type(scores).__name__}"
        )
    missing = [n for n in names if n not in src]
    if missing:
        raise ValueError(f"{fn}: {what} missing for {len(missing)} tensors, e.g. {missing[:3]}")
    out = []
    for n, shp in zip(names, shapes):
        a = _float32(n, src[n], what)
        if tuple(a.shape) != tuple(shp):
            raise ValueError(f"{fn}: {what} {n!r}: expected shape {tuple(shp)}, got {tuple(a.shape)}")
        out.append(a)
    return kind, out


def _check_layout(names: Sequence[str], shapes: Sequence[tuple], other_names: Iterable[str],
                  what: str) -> None:
    other = list(other_names)
    if set(other) != set(names):
        missing = [n for n in names if n not in set(other)]
        extra = [n for n in other if n not in set(names)]
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if extra:
            parts.append(f"unknown {len(extra)} (e.g. {extra[:3]})")
        raise ValueError(f"{what}: names differ from the weights': " + "; ".join(parts))


# --------------------------------------------------------------------------------------------
# MaskSet


class MaskSet(Mapping):
    """A validated, immutable set of masks: ``Mapping[str, np.ndarray]`` of uint8, 1 = kept.

    All masks live in one flat uint8 buffer (``.flat``, shape ``(P,)``) in the order of
    ``.names``; the values are read-only views of it. Build one from any mapping of 0/1 arrays
    (bool, integer or float dtypes, or torch tensors): ``MaskSet(model.masks)`` snapshots a
    model's masks.

    Attributes: ``names``, ``shapes``, ``numel`` (P), ``num_kept``, ``num_masked``, ``sparsity``
    (masked / P), ``density`` (kept / P), ``counts`` ({name: kept}), ``metadata`` (dict).
    """

    __slots__ = ("_names", "_shapes", "_sizes", "_offsets", "_flat", "_views", "metadata",
                 "_num_kept")

    def __init__(self, masks: Mapping[str, Any], *, names: Sequence[str] | None = None,
                 shapes: Sequence[tuple] | None = None, metadata: Mapping[str, Any] | None = None):
        if not isinstance(masks, Mapping):
            raise TypeError(f"MaskSet: expected a mapping name -> mask array, got {type(masks).__name__}")
        if isinstance(masks, PackedMaskSet):  # pragma: no cover - PackedMaskSet is not a Mapping
            raise TypeError("MaskSet: use PackedMaskSet.unpack()")
        order = list(masks) if names is None else list(names)
        if names is not None:
            _check_layout(order, [], masks.keys(), "MaskSet")
        arrays = []
        for i, n in enumerate(order):
            a = _to_numpy(masks[n])
            if shapes is not None and tuple(a.shape) != tuple(shapes[i]):
                raise ValueError(f"mask {n!r}: expected shape {tuple(shapes[i])}, got {tuple(a.shape)}")
            if a.dtype != np.uint8:
                if a.dtype == np.bool_:
                    a = a.view(np.uint8)
                elif np.issubdtype(a.dtype, np.number):
                    ok = (a == 0) | (a == 1)
                    if not ok.all():
                        bad = a[~ok].ravel()[0]
                        raise ValueError(f"mask {n!r}: values must be 0 or 1, found {bad!r}")
                    a = a.astype(np.uint8)
                else:
                    raise TypeError(f"mask {n!r}: expected a numeric 0/1 array, got dtype {a.dtype}")
            arrays.append(a)
        sizes = [int(a.size) for a in arrays]
        flat = np.empty(sum(sizes), np.uint8)
        off = 0
        for a, sz in zip(arrays, sizes):
            flat[off:off + sz] = a.reshape(-1)
            off += sz
        self._init(order, [tuple(a.shape) for a in arrays], flat, metadata)
        try:
            self._num_kept = int(_C.mask_count(flat, flat.size, False))
        except ValueError:
            for n, v in self._views.items():
                if v.size and int(v.max()) > 1:
                    raise ValueError(f"mask {n!r}: values must be 0 or 1, found {int(v.max())}") from None
            raise

    def _init(self, names, shapes, flat, metadata, num_kept=None):
        self._names = tuple(names)
        if len(set(self._names)) != len(self._names):
            raise ValueError("MaskSet: duplicate names")
        self._shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        self._sizes = tuple(int(np.prod(s, dtype=np.int64)) for s in self._shapes)
        self._offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(self._sizes, dtype=np.int64)])[:-1])
        if flat.size != sum(self._sizes):
            raise ValueError("MaskSet: flat buffer size does not match the shapes")
        flat.flags.writeable = False
        self._flat = flat
        self._views = {
            n: flat[o:o + sz].reshape(shp)
            for n, o, sz, shp in zip(self._names, self._offsets, self._sizes, self._shapes)
        }
        self.metadata = dict(metadata or {})
        self._num_kept = num_kept

    @classmethod
    def ones(cls, model_or_params: Any) -> "MaskSet":
        """The dense mask set (everything kept) over a model's prunable weights (``model.masks``)
        or over the arrays of a mapping name -> array (only names and shapes are used)."""
        src = model_or_params.masks if _is_model(model_or_params) else model_or_params
        if not isinstance(src, Mapping):
            raise TypeError(f"MaskSet.ones: expected a model or a mapping, got {type(src).__name__}")
        names = list(src)
        shapes = [tuple(_to_numpy(src[n]).shape) for n in names]
        P = sum(int(np.prod(sh, dtype=np.int64)) for sh in shapes)
        return cls._from_flat(names, shapes, np.ones(P, np.uint8), {"method": "dense"}, num_kept=P)

    @classmethod
    def _from_flat(cls, names, shapes, flat, metadata=None, num_kept=None) -> "MaskSet":
        """Wrap a flat (P,) 0/1 uint8 buffer produced by our kernels (no copy, no check)."""
        self = cls.__new__(cls)
        self._init(names, shapes, flat, metadata, num_kept)
        return self

    def __reduce__(self):
        """Pickling (processes, run directories, Ray): the one flat buffer as it is (protocol 5
        writes it once, or hands it out of band without a copy)."""
        return (_maskset_from_state, (self._names, self._shapes, self._flat, self.metadata))

    # Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._views

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskSet):
            return NotImplemented
        if set(self._names) != set(other._names):
            return False
        if self._names == other._names and self._shapes == other._shapes:
            return bool(np.array_equal(self._flat, other._flat))
        return all(self[n].shape == other[n].shape and np.array_equal(self[n], other[n])
                   for n in self._names)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"MaskSet({len(self)} tensors, {self.numel} weights, sparsity={self.sparsity:.4f}"
                + (f", method={self.metadata['method']!r}" if "method" in self.metadata else "") + ")")

    # facts
    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def shapes(self) -> dict[str, tuple]:
        return dict(zip(self._names, self._shapes))

    @property
    def flat(self) -> np.ndarray:
        """All masks as one read-only (P,) uint8 vector, tensors in ``names`` order."""
        return self._flat

    @property
    def numel(self) -> int:
        return int(self._flat.size)

    @property
    def num_kept(self) -> int:
        if self._num_kept is None:
            self._num_kept = int(_C.mask_count(self._flat, self._flat.size, False))
        return self._num_kept

    @property
    def num_masked(self) -> int:
        return self.numel - self.num_kept

    @property
    def sparsity(self) -> float:
        """Fraction of all weights in the set that are masked (0 for an empty set)."""
        return self.num_masked / self.numel if self.numel else 0.0

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    @property
    def counts(self) -> dict[str, int]:
        """Kept weights per tensor."""
        return {n: int(np.count_nonzero(v)) for n, v in self._views.items()}

    def layer_sparsity(self, by: str = "tensor") -> dict[str, float]:
        """Sparsity (fraction masked) per tensor (``by="tensor"``) or per encoder layer
        (``by="layer"``: names grouped by their ``layer.<i>`` / ``layers.<i>`` component)."""
        if by == "tensor":
            return {n: 1.0 - (c / v.size if v.size else 1.0)
                    for (n, c), v in zip(self.counts.items(), self._views.values())}
        if by != "layer":
            raise ValueError(f"layer_sparsity: by must be 'tensor' or 'layer', got {by!r}")
        groups: dict[str, list[int]] = {}
        for n, c in self.counts.items():
            m = re.search(r"(.*?layers?\.\d+)\.", n)
            key = m.group(1) if m else n
            g = groups.setdefault(key, [0, 0])
            g[0] += c
            g[1] += self._views[n].size
        return {k: 1.0 - (kept / total if total else 1.0) for k, (kept, total) in groups.items()}

    # conversions
    def copy(self) -> "MaskSet":
        return MaskSet._from_flat(self._names, self._shapes, self._flat.copy(), self.metadata,
                                  self._num_kept)

    def reordered(self, names: Sequence[str]) -> "MaskSet":
        """The same masks laid out in another tensor order (copies unless the order is the same)."""
        if tuple(names) == self._names:
            return self
        return MaskSet(self, names=names, metadata=self.metadata)

    def pack(self) -> "PackedMaskSet":
        """Bit-packed copy (1 bit per weight, ``numpy.packbits(..., bitorder="little")`` order)."""
        bits = np.empty((self.numel + 7) // 8, np.uint8)
        _C.mask_pack(bits, self._flat)
        return PackedMaskSet(self._names, self._shapes, bits, self.metadata)

    def apply(self, params: Mapping[str, np.ndarray]) -> None:
        """Zero, in place, the masked entries of the arrays in ``params`` (same names/shapes)."""
        for n, m in self._views.items():
            a = params[n]
            if tuple(a.shape) != m.shape:
                raise ValueError(f"apply: {n!r}: expected shape {m.shape}, got {tuple(a.shape)}")
            np.copyto(a, 0, where=(m == 0))

    def is_subset_of(self, other: Mapping[str, Any]) -> bool:
        """True if every weight kept here is kept by ``other`` (monotone pruning)."""
        o = _coerce_maskset(other, self._names, self._shapes, "is_subset_of")
        na, _, nab = _C.mask_overlap(self._flat, o._flat, self.numel, False)
        return na == nab

    def overlap(self, other: Mapping[str, Any]) -> dict[str, float]:
        """Overlap with another mask set of the same layout.

        Returns ``jaccard`` (|A∩B| / |A∪B| of kept weights; 1 if both keep nothing), ``hamming``
        (number of weights where the masks differ), ``hamming_fraction`` (hamming / P), ``cosine``
        (cosine similarity of the 0/1 mask vectors, |A∩B| / sqrt(|A||B|), as in the ISP paper),
        and the counts ``kept_a``, ``kept_b``, ``kept_both``.
        """
        o = _coerce_maskset(other, self._names, self._shapes, "overlap")
        na, nb, nab = _C.mask_overlap(self._flat, o._flat, self.numel, False)
        return _overlap_dict(na, nb, nab, self.numel)

    # files
    def save(self, path: str | os.PathLike, **metadata: Any) -> None:
        """Write a safetensors file: one uint8 tensor per HF name (1 = kept) and metadata
        (method, target/achieved sparsity, base model, seeds, ... plus anything in ``metadata``;
        non-string values are JSON-encoded). Written atomically (temp file + rename) and
        reproducibly (the same masks and metadata give the same bytes). The file loads with
        ``safetensors.numpy.load_file`` alone."""
        meta: dict[str, Any] = dict(self.metadata)
        meta.update(metadata)
        meta.update(format=_FORMAT, convention="1 = kept, 0 = masked",
                    instantsoup_version=_version(), achieved_sparsity=self.sparsity,
                    numel=self.numel, num_kept=self.num_kept, names=list(self._names))
        if "target_sparsity" in meta and meta["target_sparsity"] is None:
            del meta["target_sparsity"]
        str_meta: dict[str, str] = {}
        json_keys = []
        for k, v in meta.items():
            if isinstance(v, str):
                str_meta[str(k)] = v
            else:
                str_meta[str(k)] = json.dumps(v, sort_keys=True)
                json_keys.append(str(k))
        str_meta["instantsoup_json_keys"] = json.dumps(sorted(json_keys))
        save_arrays(path, self._views, str_meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MaskSet":
        """Read a mask file written by :meth:`save` (or any safetensors file of 0/1 tensors)."""
        from safetensors import safe_open

        path = os.fspath(path)
        try:
            with safe_open(path, framework="numpy") as f:
                raw = dict(f.metadata() or {})
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except OSError:
            raise
        except Exception as e:  # safetensors' own error type for truncated / foreign files
            raise ValueError(f"{path}: not a readable safetensors mask file ({e})") from e
        meta: dict[str, Any] = dict(raw)
        meta.pop("instantsoup_json_keys", None)
        try:
            json_keys = json.loads(raw.get("instantsoup_json_keys", "[]"))
            if not isinstance(json_keys, list):
                raise ValueError("instantsoup_json_keys is not a list")
            for k in json_keys:
                if isinstance(k, str) and k in meta:
                    meta[k] = json.loads(meta[k])
        except ValueError as e:
            raise ValueError(f"{path}: corrupt instantsoup metadata ({e})") from e
        names = meta.pop("names", None)
        if not names or set(names) != set(arrays):
            names = list(arrays)
        for k in ("format", "convention", "numel", "num_kept"):
            meta.pop(k, None)
        return cls(arrays, names=names, metadata=meta)

    # torch interop (torch imported lazily; optional)
    def to_torch_prune(self, module: Any, name_map: Mapping[str, str] | Callable[[str], str] | None = None):
        """Attach the masks to a torch module with ``torch.nn.utils.prune.custom_from_mask``.

        ``module`` is e.g. ``transformers.BertForSequenceClassification`` (names match as is) or a
        ``BertModel`` (the leading ``bert.`` is dropped automatically); ``name_map`` maps our names
        to the module's parameter names (dict or callable) when they differ otherwise. Existing
        pruning is combined (the product of the masks). Returns ``module``.
        """
        import torch
        from torch.nn.utils import prune

        for n in self._names:
            target = _resolve_torch_name(module, n, name_map)
            mod_name, pname = target.rsplit(".", 1) if "." in target else ("", target)
            sub = module.get_submodule(mod_name)
            param = getattr(sub, pname)
            if tuple(param.shape) != self._views[n].shape:
                raise ValueError(f"to_torch_prune: {n!r}: mask shape {self._views[n].shape} differs "
                                 f"from the module's {tuple(param.shape)}")
            mask = torch.from_numpy(np.array(self._views[n], copy=True)).to(dtype=param.dtype,
                                                                             device=param.device)
            prune.custom_from_mask(sub, pname, mask)
        return module

    @classmethod
    def from_torch_prune(cls, module: Any, name_map: Mapping[str, str] | Callable[[str], str] | None = None,
                         prefix: str = "") -> "MaskSet":
        """Collect the ``<param>_mask`` buffers that ``torch.nn.utils.prune`` left on ``module``.

        Names are ``prefix + <module path>.<param>``, or ``name_map(torch_name)`` when given.
        """
        out = {}
        for bname, buf in module.named_buffers():
            if not bname.endswith("_mask"):
                continue
            tname = bname[: -len("_mask")]
            if name_map is None:
                name = prefix + tname
            elif callable(name_map):
                name = name_map(tname)
            else:
                name = name_map.get(tname, prefix + tname)
            out[name] = buf.detach().cpu().numpy()
        if not out:
            raise ValueError("from_torch_prune: the module has no pruning masks (no *_mask buffers)")
        return cls(out, metadata={"method": "torch_prune"})


def _maskset_from_state(names, shapes, flat, metadata) -> MaskSet:
    return MaskSet._from_flat(names, shapes, flat, metadata)


def _resolve_torch_name(module: Any, name: str, name_map) -> str:
    if name_map is not None:
        return name_map(name) if callable(name_map) else name_map.get(name, name)
    parts = name.split(".")
    params = dict(module.named_parameters())
    for i in range(len(parts)):
        cand = ".".join(parts[i:])
        if cand in params or cand + "_orig" in params.keys() or _has_attr_path(module, cand):
            return cand
    raise KeyError(f"to_torch_prune: no parameter for {name!r} in {type(module).__name__}; pass name_map")


def _has_attr_path(module: Any, dotted: str) -> bool:
    mod_name, _, pname = dotted.rpartition(".")
    try:
        sub = module.get_submodule(mod_name)
    except AttributeError:
        return False
    return hasattr(sub, pname)


def _overlap_dict(na: int, nb: int, nab: int, P: int) -> dict[str, float]:
    union = na + nb - nab
    jac = nab / union if union else 1.0
    if na and nb:
        cos = nab / math.sqrt(na * nb)
    else:
        cos = 1.0 if na == nb else 0.0
    ham = na + nb - 2 * nab
    return {"jaccard": jac, "hamming": int(ham), "hamming_fraction": ham / P if P else 0.0,
            "cosine": cos, "kept_a": int(na), "kept_b": int(nb), "kept_both": int(nab)}


class PackedMaskSet:
    """Bit-packed masks: 1 bit per weight (``bits``, ``ceil(P/8)`` uint8, weight p is bit p % 8 of
    byte p // 8 of the flat layout, tensors in ``names`` order). 16 masks of BERT-base take
    ~170 MB instead of 1.4 GB. :func:`merge_masks` accepts them directly."""

    __slots__ = ("names", "_shapes", "bits", "numel", "metadata")

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple], bits: np.ndarray,
                 metadata: Mapping[str, Any] | None = None):
        self.names = list(names)
        self._shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        self.numel = int(sum(int(np.prod(s, dtype=np.int64)) for s in self._shapes))
        bits = np.ascontiguousarray(_to_numpy(bits))
        if bits.dtype != np.uint8 or bits.ndim != 1 or bits.size != (self.numel + 7) // 8:
            raise ValueError(f"PackedMaskSet: bits must be uint8 of shape ({(self.numel + 7) // 8},), "
                             f"got {bits.dtype} {bits.shape}")
        self.bits = bits
        self.metadata = dict(metadata or {})

    @property
    def shapes(self) -> dict[str, tuple]:
        return dict(zip(self.names, self._shapes))

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    @property
    def num_kept(self) -> int:
        return int(_C.mask_count(self.bits, self.numel, True))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.num_kept / self.numel if self.numel else 0.0

    def unpack(self) -> MaskSet:
        flat = np.empty(self.numel, np.uint8)
        _C.mask_unpack(flat, self.bits)
        return MaskSet._from_flat(self.names, self._shapes, flat, self.metadata)

    def overlap(self, other: "PackedMaskSet | MaskSet") -> dict[str, float]:
        """Same measures as :meth:`MaskSet.overlap`, computed on the packed bits."""
        o = other if isinstance(other, PackedMaskSet) else _coerce_maskset(
            other, self.names, self._shapes, "overlap").pack()
        if o.names != self.names or o._shapes != self._shapes:
            raise ValueError("overlap: the packed mask sets have different layouts")
        na, nb, nab = _C.mask_overlap(self.bits, o.bits, self.numel, True)
        return _overlap_dict(na, nb, nab, self.numel)

    def __repr__(self) -> str:
        return f"PackedMaskSet({len(self.names)} tensors, {self.numel} weights, {self.nbytes} bytes)"


def _coerce_maskset(m: Any, names: Sequence[str], shapes: Sequence[tuple], what: str) -> MaskSet:
    """A MaskSet laid out exactly as (names, shapes); copies only when needed."""
    if isinstance(m, PackedMaskSet):
        m = m.unpack()
    if isinstance(m, MaskSet) and m._names == tuple(names) and m._shapes == tuple(
            tuple(s) for s in shapes):
        return m
    if not isinstance(m, Mapping):
        raise TypeError(f"{what}: expected a mask mapping (MaskSet, dict name -> 0/1 array), "
                        f"got {type(m).__name__}")
    _check_layout(names, shapes, m.keys(), what)
    try:
        return MaskSet(m, names=names, shapes=shapes)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


# --------------------------------------------------------------------------------------------
# selection


def magnitude_masks(model_or_params: Any, sparsity: float, scope: str = "global",
                    current: Mapping[str, Any] | None = None, scores: Mapping[str, Any] | None = None,
                    monotone: bool = True) -> MaskSet:
    """Magnitude pruning to an exact sparsity.

    Args:
        model_or_params: an engine model (its ``state_dict()`` restricted to ``model.masks``; the
            model's masks are the default ``current``) or a mapping name -> float32 array (all
            prunable; the mapping's order is the tie-break order).
        sparsity: target fraction of **all** prunable weights masked, in [0, 1). Exactly
            ``round(sparsity * P)`` weights end up masked (per tensor with ``scope="layer"``).
        scope: ``"global"`` (one threshold over all tensors, like
            ``torch.nn.utils.prune.global_unstructured``) or ``"layer"`` (each tensor separately,
            like ``l1_unstructured`` per tensor).
        current: masks already in force (1 = kept). With ``monotone=True`` they stay masked and
            the new ones are chosen among the kept weights; a target below the current sparsity
            is an error.
        scores: optional mapping name -> float32 importance (larger = kept first) used instead of
            ``|w|``; must be finite.
        monotone: ``False`` ignores ``current`` and selects among all weights.

    Returns:
        MaskSet with metadata ``method="magnitude"``, ``scope``, ``target_sparsity``.
    """
    fn = "magnitude_masks"
    s = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"{fn}: scope must be 'global' or 'layer', got {scope!r}")
    names, arrays, model_current = _resolve_params(model_or_params, fn)
    if not names:
        raise ValueError(f"{fn}: no prunable weights")
    shapes = [a.shape for a in arrays]
    if current is None:
        current = model_current
    cur = None
    if current is not None:
        cur = _coerce_maskset(current, names, shapes, f"{fn}: current")
    kind, xs = ("abs", arrays) if scores is None else _score_source(scores, names, shapes, fn)
    meta = {"method": "magnitude", "scope": scope, "target_sparsity": s,
            "scores": "magnitude" if scores is None else "external", "monotone": bool(monotone)}
    return _select(names, shapes, xs, kind, s, scope, cur if monotone else None, 0, meta, fn)


def random_masks(model_or_params: Any, sparsity: float, seed: int,
                 current: Mapping[str, Any] | None = None, scope: str = "global") -> MaskSet:
    """Random pruning to an exact sparsity: ``round(sparsity * P)`` weights masked (per tensor
    with ``scope="layer"``), new ones drawn uniformly among the weights ``current`` keeps.

    The draw is a counter-based hash of (seed, position): the same seed gives the same mask at
    any thread count. ``model_or_params`` as in :func:`magnitude_masks` (only names and shapes are
    used; the model's masks are the default ``current``).
    """
    fn = "random_masks"
    s = _check_sparsity(sparsity)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"{fn}: seed must be an int in [0, 2**64), got {seed!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"{fn}: scope must be 'global' or 'layer', got {scope!r}")
    if _is_model(model_or_params):
        names, arrays, model_current = _resolve_params(model_or_params, fn)
    elif isinstance(model_or_params, Mapping):
        names = list(model_or_params)
        arrays = [_to_numpy(model_or_params[n]) for n in names]
        model_current = None
    else:
        raise TypeError(f"{fn}: expected a model or a mapping name -> array, got "
                        f"{type(model_or_params).__name__}")
    if not names:
        raise ValueError(f"{fn}: no prunable weights")
    shapes = [tuple(a.shape) for a in arrays]
    if current is None:
        current = model_current
    cur = None if current is None else _coerce_maskset(current, names, shapes, f"{fn}: current")
    meta = {"method": "random", "scope": scope, "target_sparsity": s, "seeds": [int(seed)]}
    return _select(names, shapes, None, "random", s, scope, cur, int(seed), meta, fn)


def _select(names, shapes, xs, kind, s, scope, cur: MaskSet | None, seed, meta, fn) -> MaskSet:
    sizes = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    P = sum(sizes)
    out = np.empty(P, np.uint8)
    cur_flat = None if cur is None else cur.flat
    if scope == "global":
        n_mask = int(round(s * P))
        if cur is not None and cur.num_masked > n_mask:
            raise ValueError(
                f"{fn}: sparsity {s} masks {n_mask} of {P} weights but the current mask already masks "
                f"{cur.num_masked} (sparsity {cur.sparsity:.6f}); monotone pruning never unmasks a "
                "pruned weight" + (" (pass monotone=False to select from scratch)" if kind != "random" else ""))
        _named_errors(names, fn, _C.mask_select, out, sizes, P - n_mask, kind, xs=xs,
                      cur=cur_flat, seed=seed)
        n_kept = P - n_mask
    else:
        off = 0
        n_kept = 0
        for t, (n, sz) in enumerate(zip(names, sizes)):
            n_mask = int(round(s * sz))
            c = None if cur_flat is None else cur_flat[off:off + sz]
            if c is not None:
                already = sz - int(np.count_nonzero(c))
                if already > n_mask:
                    raise ValueError(
                        f"{fn}: {n!r}: sparsity {s} masks {n_mask} of {sz} weights but the current "
                        f"mask already masks {already}; monotone pruning never unmasks a pruned weight")
            # a different random stream per tensor (positions restart at 0 in each call)
            seed_t = (seed + (t + 1) * 0xD1B54A32D192ED03) % 2**64 if kind == "random" else 0
            _named_errors([n], fn, _C.mask_select, out[off:off + sz], [sz], sz - n_mask, kind,
                          xs=None if xs is None else [xs[t]], cur=c, seed=seed_t)
            off += sz
            n_kept += sz - n_mask
    ms = MaskSet._from_flat(names, shapes, out, meta, num_kept=n_kept)
    ms.metadata["achieved_sparsity"] = ms.sparsity
    log.debug("%s: %s", fn, ms)
    return ms


# --------------------------------------------------------------------------------------------
# merges


def merge_masks(list_of_masks: Iterable[Any], rule: str = "union", sparsity: float | None = None,
                scores: Any = None, *, current: Mapping[str, Any] | None = None,
                packed: bool = False) -> MaskSet | PackedMaskSet:
    """Superpose K masks (MaskSet, PackedMaskSet or mappings of 0/1 arrays, same names/shapes).

    Rules (on kept weights):
        ``"union"``: kept by any mask (ISP's default); ``"intersection"``: kept by all;
        ``"vote"``: without ``sparsity`` kept by a strict majority (> K/2); with ``sparsity``
        exactly ``P - round(sparsity * P)`` weights kept, those kept by the most masks, ties by
        ``scores`` then position (a weight no mask keeps is never kept).

    With ``sparsity`` and rule union/intersection: the **one-shot adjustment** -- the merged mask
    is re-pruned to exactly ``round(sparsity * P)`` masked weights by ``scores`` (among its kept
    weights; an error if it already masks more).

    Args:
        scores: mapping name -> float32 importance (larger = kept first), or a model (its ``|w|``,
            e.g. the main model in ISP). Needed by the adjustment; optional for vote ties.
        current: if given, every input must keep only weights ``current`` keeps (monotone
            pruning); otherwise an error names the offending mask.
        packed: return a :class:`PackedMaskSet` instead of a :class:`MaskSet`.

    Inputs that are all :class:`PackedMaskSet` are merged in packed form (1 bit per weight).
    """
    fn = "merge_masks"
    if isinstance(list_of_masks, (Mapping, MaskSet, PackedMaskSet)):
        raise TypeError(f"{fn}: expected a list of masks, got a single {type(list_of_masks).__name__}")
    items = list(list_of_masks)
    if not items:
        raise ValueError(f"{fn}: the list of masks is empty")
    if rule not in MERGE_RULES:
        raise ValueError(f"{fn}: rule must be one of {MERGE_RULES}, got {rule!r}")
    s = None if sparsity is None else _check_sparsity(sparsity)
    K = len(items)
    if K > 255:
        raise ValueError(f"{fn}: at most 255 masks can be merged, got {K}")
    first = items[0]
    if isinstance(first, PackedMaskSet):
        names, shapes = list(first.names), list(first._shapes)
    else:
        if not isinstance(first, MaskSet):
            if not isinstance(first, Mapping):
                raise TypeError(f"{fn}: masks[0]: expected a MaskSet, PackedMaskSet or mapping, "
                                f"got {type(first).__name__}")
            try:
                first = MaskSet(first)
            except ValueError as e:
                raise ValueError(f"{fn}: masks[0]: {e}") from None
            items[0] = first
        names, shapes = first.names, list(first._shapes)
    use_packed = any(isinstance(m, PackedMaskSet) for m in items)
    flats = []
    for k, m in enumerate(items):
        what = f"{fn}: masks[{k}]"
        if isinstance(m, PackedMaskSet):
            if m.names != names or m._shapes != tuple(shapes):
                if set(m.names) != set(names):
                    _check_layout(names, shapes, m.names, what)
                m = m.unpack()  # same names, other order or shapes: go through the checks below
            else:
                flats.append(m.bits)
                continue
        ms = _coerce_maskset(m, names, shapes, what)
        flats.append(ms.pack().bits if use_packed else ms.flat)
    sizes = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    P = sum(sizes)
    if current is not None:
        cur = _coerce_maskset(current, names, shapes, f"{fn}: current")
        cur_f = cur.pack().bits if use_packed else cur.flat
        for k, f in enumerate(flats):
            na, _, nab = _C.mask_overlap(f, cur_f, P, use_packed)
            if na != nab:
                raise ValueError(
                    f"{fn}: masks[{k}] keeps {na - nab} weights that `current` has already pruned; "
                    "monotone pruning never unmasks a pruned weight")
    kind, xs = None, None
    if scores is not None:
        kind, xs = _score_source(scores, names, shapes, fn)
    meta: dict[str, Any] = {"method": "merge", "rule": rule, "num_masks": K}
    if s is not None:
        meta["target_sparsity"] = s

    out = np.empty(P, np.uint8)
    if rule in ("union", "intersection"):
        if s is None and packed and use_packed:
            bits = np.empty_like(flats[0])
            _C.mask_combine(bits, flats, P, True, rule)
            return PackedMaskSet(names, shapes, bits, meta)
        if use_packed:
            bits = np.empty((P + 7) // 8, np.uint8)
            _C.mask_combine(bits, flats, P, True, rule)
            _C.mask_unpack(out, bits)
            del bits
        else:
            _C.mask_combine(out, flats, P, False, rule)
        if s is not None:
            n_keep = P - int(round(s * P))
            kept = int(_C.mask_count(out, P, False))
            if kept < n_keep:
                raise ValueError(
                    f"{fn}: the {rule} keeps {kept} weights, fewer than the {n_keep} that sparsity {s} "
                    "keeps; the adjustment only re-prunes (never unmasks)")
            if kept > n_keep:
                if xs is None:
                    raise ValueError(
                        f"{fn}: re-pruning the {rule} to sparsity {s} needs scores (e.g. scores=model "
                        "for the current weights' magnitudes)")
                _named_errors(names, fn, _C.mask_select, out, sizes, n_keep, kind, xs=xs, cur=out)
    else:  # vote
        if s is None:
            _C.mask_vote_keep(out, flats, P, use_packed, K // 2 + 1)
        else:
            n_keep = P - int(round(s * P))
            _named_errors(names, fn, _C.mask_vote_select, out, flats, use_packed, sizes, n_keep,
                          tie=kind or "none", xs=xs)
    ms = MaskSet._from_flat(names, shapes, out, meta)
    ms.metadata["achieved_sparsity"] = ms.sparsity
    return ms.pack() if packed else ms


# --------------------------------------------------------------------------------------------
# soups


def average_weights(list_of_state_dicts: Iterable[Any], weights: Sequence[float] | None = None,
                    normalize: bool = True) -> dict[str, np.ndarray]:
    """Average K parameter sets (model soups): ``sum_k w_k * params_k``, per tensor, in C.

    Args:
        list_of_state_dicts: mappings name -> array (numpy or torch), or models (``state_dict()``
            is used); all with the same names and shapes.
        weights: None for the uniform mean; else K finite numbers, normalized to sum 1 unless
            ``normalize=False`` (then used as given, e.g. for task arithmetic).

    Returns:
        dict name -> new float32 array (accumulated in float64, rounded once). Non-float32 entries
        (e.g. integer buffers) must be equal in all sets and are copied from the first.
    """
    fn = "average_weights"
    sds = []
    for i, sd in enumerate(list_of_state_dicts):
        if _is_model(sd) or (hasattr(sd, "state_dict") and not isinstance(sd, Mapping)):
            sd = sd.state_dict()
        if not isinstance(sd, Mapping):
            raise TypeError(f"{fn}: item {i}: expected a mapping name -> array or a model, got "
                            f"{type(sd).__name__}")
        sds.append(sd)
    if not sds:
        raise ValueError(f"{fn}: the list of parameter sets is empty")
    K = len(sds)
    names = list(sds[0])
    for i, sd in enumerate(sds[1:], 1):
        if set(sd) != set(names):
            _check_layout(names, [], sd.keys(), f"{fn}: item {i}")
    w = None
    if weights is not None:
        w = np.asarray(list(weights), dtype=np.float64)
        if w.ndim != 1 or w.size != K:
            raise ValueError(f"{fn}: expected {K} weights, got {w.size}")
        if not np.isfinite(w).all():
            raise ValueError(f"{fn}: weights must be finite, got {w.tolist()}")
        if normalize:
            if (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"{fn}: weights must be non-negative with a positive sum to normalize, "
                                 f"got {w.tolist()} (or pass normalize=False)")
            w = w / w.sum()
    out: dict[str, np.ndarray] = {}
    for n in names:
        arrs = [_to_numpy(sd[n]) for sd in sds]
        shp = arrs[0].shape
        for i, a in enumerate(arrs):
            if a.shape != shp:
                raise ValueError(f"{fn}: {n!r}: item {i} has shape {a.shape}, item 0 has {shp}")
        if arrs[0].dtype != np.float32 or any(a.dtype != np.float32 for a in arrs):
            if all(a.dtype == arrs[0].dtype for a in arrs) and all(np.array_equal(a, arrs[0]) for a in arrs):
                out[n] = np.array(arrs[0], copy=True)
                continue
            raise TypeError(f"{fn}: {n!r}: only float32 tensors are averaged; got dtypes "
                            f"{sorted({str(a.dtype) for a in arrs})} with differing values")
        res = np.empty(shp, np.float32)
        _C.soup_average(res, [np.ascontiguousarray(a) for a in arrs], w)
        out[n] = res
    return out
