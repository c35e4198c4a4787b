"""CLIP's text tokenizer through the ``tokenizers`` library (no transformers needed).

CLIP tokenizes with byte-level BPE whose word-final pieces carry a ``</w>`` suffix: the text is
NFC-normalised, runs of whitespace become one space, everything is lower-cased; it is split into
contractions, letter runs, single digits and runs of other symbols; then wrapped as
``<|startoftext|> ... <|endoftext|>``. The result equals transformers' ``CLIPTokenizerFast`` on the
same files. A checkpoint provides either ``tokenizer.json`` (used as is) or ``vocab.json`` +
``merges.txt`` (the pipeline above is built around them).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["CLIPTokenizer"]

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# contractions | letter runs | one digit | runs of anything else that is not whitespace
_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _token_str(v: Any) -> str | None:
    """A special token from a tokenizer config: a string or an AddedToken dict."""
    if v is None:
        return None
    if isinstance(v, dict):
        return v.get("content")
    return str(v)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_merges(path: str) -> list[tuple[str, str]]:
    merges = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if ln == 1 and line.startswith("#version"):
                continue
            if not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{path}:{ln}: a merge must be two space-separated tokens, got {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


class CLIPTokenizer:
    """CLIP tokenizer: ``encode(texts)`` -> padded ``input_ids`` / ``attention_mask`` (B, T) int64.

    Use :meth:`from_pretrained` on a checkpoint directory. ``model_max_length`` (77 for CLIP) is the
    default truncation length, counting the start and end tokens.
    """

    def __init__(self, tokenizer: Any, bos_token: str = BOS, eos_token: str = EOS, pad_token: str = EOS,
                 model_max_length: int = 77):
        self._tok = tokenizer
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        ids = {}
        for name, tok in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
            i = tokenizer.token_to_id(tok)
            if i is None:
                raise ValueError(f"CLIPTokenizer: the {name} token {tok!r} is not in the vocabulary")
            ids[name] = i
        self.bos_token_id, self.eos_token_id, self.pad_token_id = ids["bos"], ids["eos"], ids["pad"]
        self.model_max_length = int(model_max_length)
        self._tok.no_padding()
        self._tok.no_truncation()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_file: str, merges_file: str, unk_token: str = EOS, bos_token: str = BOS,
                   eos_token: str = EOS, pad_token: str = EOS, model_max_length: int = 77) -> "CLIPTokenizer":
        """Build CLIP's tokenization pipeline around ``vocab.json`` and ``merges.txt``."""
        from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import BPE

        vocab = _read_json(vocab_file)
        if not vocab:
            raise ValueError(f"{vocab_file}: empty or missing vocabulary")
        merges = _read_merges(merges_file)
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                            fuse_unk=False, unk_token=unk_token))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
        tok.decoder = decoders.ByteLevel()
        specials = []
        for t in (bos_token, eos_token, pad_token, unk_token):
            if t not in specials:
                specials.append(t)
        tok.add_special_tokens(specials)
        for t in specials:
            if tok.token_to_id(t) is None:  # pragma: no cover - add_special_tokens adds missing ones
                raise ValueError(f"CLIPTokenizer: special token {t!r} missing from {vocab_file}")
        tok.post_processor = processors.RobertaProcessing(
            (eos_token, tok.token_to_id(eos_token)), (bos_token, tok.token_to_id(bos_token)),
            trim_offsets=False, add_prefix_space=False)
        return cls(tok, bos_token, eos_token, pad_token, model_max_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "CLIPTokenizer":
        """From a checkpoint directory with ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``
        (special tokens and ``model_max_length`` from ``tokenizer_config.json`` /
        ``special_tokens_map.json`` when present)."""
        path = os.fspath(path)
        cfg = _read_json(os.path.join(path, "tokenizer_config.json"))
        smap = _read_json(os.path.join(path, "special_tokens_map.json"))

        def special(key: str, default: str) -> str:
            return _token_str(cfg.get(key)) or _token_str(smap.get(key)) or default

        bos, eos = special("bos_token", BOS), special("eos_token", EOS)
        pad, unk = special("pad_token", EOS), special("unk_token", EOS)
        mml = cfg.get("model_max_length", 77)
        if not isinstance(mml, int) or mml > 1_000_000:  # HF writes a huge sentinel when unset
            mml = 77
        mcfg = _read_json(os.path.join(path, "config.json"))
        tcfg = mcfg.get("text_config") or {}
        if "max_position_embeddings" in tcfg:
            mml = min(mml, int(tcfg["max_position_embeddings"]))
        tj = os.path.join(path, "tokenizer.json")
        if os.path.isfile(tj):
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_file(tj)
            except Exception as e:
                raise ValueError(f"{tj}: not a readable tokenizers file ({e})") from e
            return cls(tok, bos, eos, pad, mml)
        vf, mf = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        if not (os.path.isfile(vf) and os.path.isfile(mf)):
            raise FileNotFoundError(f"{path}: no tokenizer.json and no vocab.json + merges.txt (CLIP tokenizer files)")
        return cls.from_files(vf, mf, unk, bos, eos, pad, mml)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (loadable by transformers)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self._tok.save(os.path.join(path, "tokenizer.json"))
        with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "CLIPTokenizer", "bos_token": self.bos_token, "eos_token": self.eos_token,
                       "pad_token": self.pad_token, "unk_token": self.eos_token,
                       "model_max_length": self.model_max_length}, f, indent=2)

    # -- use ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text, with start/end tokens, truncated to ``max_length`` (default
        ``model_max_length``; the end token is kept)."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i}: expected str, got {type(t).__name__}")
        n = self.model_max_length if max_length is None else int(max_length)
        if n < 2:
            raise ValueError(f"max_length must be >= 2 (start and end tokens), got {n}")
        self._tok.enable_truncation(n)
        try:
            encs = self._tok.encode_batch(list(texts), add_special_tokens=True)
        finally:
            self._tok.no_truncation()
        return [e.ids for e in encs]

    def encode(self, texts: Sequence[str] | str, max_length: int | None = None,
               padding: str = "longest") -> dict[str, np.ndarray]:
        """Texts -> ``{"input_ids": (B, T) int64, "attention_mask": (B, T) int64}``, right-padded
        with the pad token to the longest text (``padding="longest"``) or to ``max_length``
        (``padding="max_length"``)."""
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        ids = self.tokenize(texts, max_length)
        if not ids:
            raise ValueError("encode: no texts")
        T = max(len(x) for x in ids)
        if padding == "max_length":
            T = self.model_max_length if max_length is None else int(max_length)
        input_ids = np.full((len(ids), T), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), T), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    __call__ = encode

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text (``</w>`` word ends become spaces)."""
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return text.replace("</w>", " ").strip()
