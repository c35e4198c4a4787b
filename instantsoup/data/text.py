"""Text side of the data pipeline: a BERT WordPiece tokenizer (Hugging Face ``tokenizers``) and
:class:`TextDataset`, the container every loader returns.

The tokenizer is built from a model directory the way ``transformers`` builds
``BertTokenizerFast``: from ``tokenizer.json`` when present, otherwise from ``vocab.txt`` with the
lower-casing / accent stripping / CJK settings of ``tokenizer_config.json`` (or ``config.json``),
assembling the BERT pipeline (BertNormalizer, BertPreTokenizer, WordPiece, ``[CLS] A [SEP] B [SEP]``
template with token types 0/1) with the ``tokenizers`` API. Ids are identical to ``transformers``'
(tests/test_data_tokenizer.py checks this on accents, CJK, punctuation, long words, empty strings).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from instantsoup.data.batching import Batches, subset_size
from instantsoup.data.encoded import Encoded

__all__ = ["Tokenizer", "Encoded", "TextDataset", "TextInput"]

log = logging.getLogger(__name__)

TextInput = Union[str, Tuple[str, str]]
_SPECIAL_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_SPECIAL_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                     "cls_token": "[CLS]", "mask_token": "[MASK]"}
# tokenizer_config.json sometimes carries this sentinel for "no limit"
_HUGE = int(1e29)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_str(value) -> Optional[str]:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


def load_vocab(path: "str | os.PathLike[str]") -> Dict[str, int]:
    """Read a WordPiece ``vocab.txt`` (one token a line, id = line index; like transformers)."""
    vocab: Dict[str, int] = {}
    with open(path, "r", encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    if not vocab:
        from instantsoup.data.errors import DataError
        raise DataError(path, None, "the vocabulary file is empty")
    return vocab


class Tokenizer:
    """A BERT WordPiece tokenizer backed by a Hugging Face ``tokenizers.Tokenizer``.

    Build it with :meth:`from_pretrained` (a model directory) or :meth:`from_vocab`.
    :meth:`encode` returns unpadded ids + token types; padding happens per batch in
    :class:`instantsoup.data.Batches`.
    """

    def __init__(self, backend, *, pad_token: str = "[PAD]", cls_token: str = "[CLS]",
                 sep_token: str = "[SEP]", unk_token: str = "[UNK]", mask_token: str = "[MASK]",
                 model_max_length: int = 512, do_lower_case: Optional[bool] = None,
                 pad_token_id: Optional[int] = None, source: Optional[str] = None):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.pad_token, self.cls_token, self.sep_token = pad_token, cls_token, sep_token
        self.unk_token, self.mask_token = unk_token, mask_token
        self.model_max_length = int(model_max_length)
        self.do_lower_case = do_lower_case
        self.source = source
        pid = backend.token_to_id(pad_token)
        self.pad_token_id = int(pid if pid is not None else (pad_token_id if pad_token_id is not None else 0))
        self.cls_token_id = backend.token_to_id(cls_token)
        self.sep_token_id = backend.token_to_id(sep_token)
        self.unk_token_id = backend.token_to_id(unk_token)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_vocab(cls, vocab: "str | os.PathLike[str] | Mapping[str, int]", *, do_lower_case: bool = True,
                   strip_accents: Optional[bool] = None, tokenize_chinese_chars: bool = True,
                   unk_token: str = "[UNK]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                   cls_token: str = "[CLS]", mask_token: str = "[MASK]", model_max_length: int = 512,
                   max_input_chars_per_word: int = 100, source: Optional[str] = None) -> "Tokenizer":
        """Assemble the BERT WordPiece pipeline from a vocabulary (path to vocab.txt or a dict).

        ``strip_accents=None`` follows ``do_lower_case`` (as in BERT/transformers).
        """
        from tokenizers import Tokenizer as _Backend, normalizers, pre_tokenizers, processors, decoders
        from tokenizers.models import WordPiece

        if not isinstance(vocab, Mapping):
            source = source or os.fspath(vocab)
            vocab = load_vocab(vocab)
        vocab = dict(vocab)
        for name, tok in (("unk_token", unk_token), ("cls_token", cls_token), ("sep_token", sep_token)):
            if tok not in vocab:
                raise ValueError(f"Tokenizer.from_vocab: {name} {tok!r} is not in the vocabulary"
                                 + (f" ({source})" if source else ""))
        backend = _Backend(WordPiece(vocab, unk_token=unk_token,
                                     max_input_chars_per_word=max_input_chars_per_word))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=bool(tokenize_chinese_chars),
            strip_accents=strip_accents, lowercase=bool(do_lower_case))
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])])
        backend.decoder = decoders.WordPiece(prefix="##")
        specials = [t for t in (pad_token, unk_token, cls_token, sep_token, mask_token) if t in vocab]
        backend.add_special_tokens(specials)
        return cls(backend, pad_token=pad_token, cls_token=cls_token, sep_token=sep_token,
                   unk_token=unk_token, mask_token=mask_token, model_max_length=model_max_length,
                   do_lower_case=bool(do_lower_case), source=source)

    @classmethod
    def from_pretrained(cls, model_dir: "str | os.PathLike[str]", *, use_tokenizer_json: bool = True) -> "Tokenizer":
        """Load from a Hugging Face model directory.

        Uses ``tokenizer.json`` when present (and ``use_tokenizer_json``), else ``vocab.txt`` with
        ``do_lower_case`` / ``strip_accents`` / ``tokenize_chinese_chars`` from
        ``tokenizer_config.json``, then ``config.json``; when neither says, lower-casing is inferred
        from the vocabulary (no upper-case word pieces -> uncased), and logged.
        """
        d = Path(model_dir)
        if not d.is_dir():
            raise FileNotFoundError(f"Tokenizer.from_pretrained: {d} is not a directory")
        tcfg = _read_json(d / "tokenizer_config.json")
        mcfg = _read_json(d / "config.json")
        smap = _read_json(d / "special_tokens_map.json")
        specials = {}
        for key in _SPECIAL_KEYS:
            specials[key] = (_token_str(tcfg.get(key)) or _token_str(smap.get(key))
                             or _SPECIAL_DEFAULTS[key])
        max_len = tcfg.get("model_max_length")
        if not isinstance(max_len, (int, float)) or max_len >= _HUGE or max_len <= 0:
            max_len = None
        mpe = mcfg.get("max_position_embeddings")
        candidates = [int(v) for v in (max_len, mpe) if isinstance(v, (int, float)) and v > 0]
        model_max_length = min(candidates) if candidates else 512

        tj = d / "tokenizer.json"
        vt = d / "vocab.txt"
        if use_tokenizer_json and tj.is_file():
            from tokenizers import Tokenizer as _Backend
            backend = _Backend.from_file(str(tj))
            lower = tcfg.get("do_lower_case")
            norm = backend.normalizer
            if lower is None and norm is not None:
                try:
                    lower = json.loads(norm.__getstate__()).get("lowercase")
                except Exception:  # pragma: no cover - other normalizer kinds
                    lower = None
            return cls(backend, model_max_length=model_max_length, do_lower_case=lower,
                       pad_token_id=mcfg.get("pad_token_id"), source=str(tj), **specials)
        if not vt.is_file():
            raise FileNotFoundError(
                f"Tokenizer.from_pretrained: {d} has neither tokenizer.json nor vocab.txt")
        vocab = load_vocab(vt)
        lower = tcfg.get("do_lower_case", mcfg.get("do_lower_case"))
        if lower is None:
            cased = sum(1 for t in vocab if not (t.startswith("[") and t.endswith("]"))
                        and any(c.isupper() for c in t))
            # uncased vocabularies still hold a few symbols Python calls upper-case (e.g. "ℝ")
            lower = cased <= 0.001 * len(vocab)
            log.info("%s: no do_lower_case in tokenizer_config.json/config.json; vocabulary has %d "
                     "upper-case pieces of %d -> do_lower_case=%s", d, cased, len(vocab), lower)
        strip = tcfg.get("strip_accents", mcfg.get("strip_accents"))
        chinese = tcfg.get("tokenize_chinese_chars", mcfg.get("tokenize_chinese_chars", True))
        return cls.from_vocab(vocab, do_lower_case=bool(lower), strip_accents=strip,
                              tokenize_chinese_chars=bool(chinese if chinese is not None else True),
                              model_max_length=model_max_length, source=str(vt), **specials)

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str) -> List[str]:
        """Word pieces of one text, without special tokens (debugging aid)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def encode(self, texts: "TextInput | Sequence[TextInput]", max_length: Optional[int] = None,
               *, truncation: bool = True) -> Encoded:
        """Tokenize N single texts or N ``(a, b)`` pairs; returns unpadded :class:`Encoded`.

        max_length: cap in tokens including ``[CLS]``/``[SEP]`` (default ``model_max_length``).
        Pairs are truncated longest-first (one token at a time from the longer segment), like
        transformers' ``truncation=True``.
        """
        if isinstance(texts, str) or (isinstance(texts, tuple) and len(texts) == 2
                                      and all(isinstance(t, str) for t in texts)):
            texts = [texts]
        items = list(texts)
        if not items:
            return Encoded([], [])
        is_pair = not isinstance(items[0], str)
        for i, item in enumerate(items):
            if is_pair:
                ok = (isinstance(item, (tuple, list)) and len(item) == 2
                      and isinstance(item[0], str) and isinstance(item[1], str))
            else:
                ok = isinstance(item, str)
            if not ok:
                kind = "a (str, str) pair" if is_pair else "a str"
                raise TypeError(f"Tokenizer.encode: example {i} is {type(item).__name__} "
                                f"({item!r:.60}); expected {kind} like example 0")
        if max_length is None:
            max_length = self.model_max_length
        max_length = int(max_length)
        minimum = 3 if is_pair else 2
        if truncation and max_length < minimum:
            raise ValueError(f"Tokenizer.encode: max_length={max_length} leaves no room for text "
                             f"(needs at least {minimum} for the special tokens)")
        if truncation:
            self.backend.enable_truncation(max_length, strategy="longest_first")
        try:
            encs = self.backend.encode_batch([tuple(x) for x in items] if is_pair else items)
        finally:
            self.backend.no_truncation()
        return Encoded([e.ids for e in encs], [e.type_ids for e in encs])

    __call__ = encode

    def save_pretrained(self, directory: "str | os.PathLike[str]") -> None:
        """Write tokenizer.json + tokenizer_config.json (readable by transformers' AutoTokenizer)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(d / "tokenizer.json"))
        cfg = {"tokenizer_class": "BertTokenizer", "model_max_length": self.model_max_length,
               "unk_token": self.unk_token, "sep_token": self.sep_token, "pad_token": self.pad_token,
               "cls_token": self.cls_token, "mask_token": self.mask_token}
        if self.do_lower_case is not None:
            cfg["do_lower_case"] = bool(self.do_lower_case)
        with open(d / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length}, source={self.source!r})")


@dataclass
class TextDataset:
    """Examples of one split of a text-classification (or regression) task.

    texts:        N strings, or N ``(a, b)`` string pairs
    labels:       (N,) int64 class ids, or float32 scores when ``is_regression``; None when the
                  split has no labels (GLUE test sets)
    label_names:  class names, ``label_names[i]`` is the name of id i (empty for regression)
    metric:       ``metric(predictions) -> dict`` with the task's official metrics; predictions are
                  (N,) class ids, (N, C) logits (arg-maxed), or (N,) / (N, 1) regression scores
    """

    texts: List[TextInput]
    labels: Optional[np.ndarray]
    label_names: List[str] = field(default_factory=list)
    task: str = "text"
    is_regression: bool = False
    metric_names: Tuple[str, ...] = ("accuracy",)
    source: Optional[str] = None
    info: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.float32 if self.is_regression else np.int64)
            if self.labels.shape != (len(self.texts),):
                raise ValueError(f"TextDataset: labels shape {self.labels.shape} does not match "
                                 f"{len(self.texts)} texts")
            if not self.is_regression and self.label_names and len(self.labels) \
                    and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
                raise ValueError(f"TextDataset: label ids must be in [0, {len(self.label_names)})")
        self.label_names = list(self.label_names)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int):
        return self.texts[i], (None if self.labels is None else self.labels[i])

    @property
    def is_pair(self) -> bool:
        return bool(self.texts) and not isinstance(self.texts[0], str)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def num_labels(self) -> int:
        """1 for regression, else the number of classes."""
        if self.is_regression:
            return 1
        if self.label_names:
            return len(self.label_names)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0

    @property
    def primary_metric(self) -> str:
        """The metric to select models by (the first of ``metric_names``)."""
        return self.metric_names[0]

    def select(self, indices: Sequence[int]) -> "TextDataset":
        """A new dataset with the examples at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return TextDataset([self.texts[i] for i in idx],
                           None if self.labels is None else self.labels[idx],
                           list(self.label_names), self.task, self.is_regression, self.metric_names,
                           self.source, dict(self.info))

    def sample(self, n: "int | float", seed: int) -> "TextDataset":
        """A seeded random subset of n examples (or a fraction 0 < n <= 1), in random order."""
        k = subset_size(n, len(self))
        idx = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A3D])).permutation(len(self))[:k]
        return self.select(idx)

    def label_counts(self) -> Dict[str, int]:
        if self.labels is None or self.is_regression:
            return {}
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        names = self.label_names or [str(i) for i in range(len(counts))]
        return {names[i]: int(c) for i, c in enumerate(counts)}

    # ------------------------------------------------------------------ evaluation
    def metric(self, predictions) -> Dict[str, float]:
        """The task's metrics of ``predictions`` against ``labels`` (see class docstring)."""
        from instantsoup.data import metrics as M
        if self.labels is None:
            raise ValueError(f"{self.task}: this split has no labels (a test split?); cannot score it")
        preds = np.asarray(predictions)
        if self.is_regression:
            preds = preds.reshape(len(preds), -1)
            if preds.shape[1] != 1:
                raise ValueError(f"{self.task}: regression predictions must be (N,) or (N, 1), got "
                                 f"{np.asarray(predictions).shape}")
            preds = preds[:, 0].astype(np.float64)
        else:
            if preds.ndim == 2:
                preds = preds.argmax(axis=1)
            elif preds.ndim != 1:
                raise ValueError(f"{self.task}: predictions must be (N,) ids or (N, C) logits, "
                                 f"got shape {preds.shape}")
        if len(preds) != len(self.labels):
            raise ValueError(f"{self.task}: {len(preds)} predictions for {len(self.labels)} examples")
        return M.compute(self.metric_names, preds, self.labels)

    # ------------------------------------------------------------------ encoding / batching
    def encode(self, tokenizer: Tokenizer, max_length: Optional[int] = None) -> Encoded:
        return tokenizer.encode(self.texts, max_length)

    def batches(self, tokenizer: Tokenizer, batch_size: int, *, max_length: Optional[int] = 128,
                seed: int = 0, shuffle: bool = True, bucket: bool = True, **kwargs):
        """Tokenize and wrap in :class:`instantsoup.data.Batches` (labels included when present)."""
        return Batches(self.encode(tokenizer, max_length), self.labels, batch_size, seed=seed,
                       shuffle=shuffle, bucket=bucket, pad_id=tokenizer.pad_token_id, **kwargs)

    def __repr__(self) -> str:
        kind = "pairs" if self.is_pair else "texts"
        lab = "regression" if self.is_regression else f"labels={self.label_names}"
        return f"TextDataset(task={self.task!r}, n={len(self)} {kind}, {lab}, metrics={list(self.metric_names)})"
