"""Content digests: of files and folders, of a checkpoint (model identity) and of the data a run
reads (data identity). A run's identity is built from these, never from a path spelling."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from instantsoup.settings_base import DataSettings
from instantsoup.data.sources import is_table_source
from instantsoup.fileio import atomic_write_text

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "added_tokens.json", "preprocessor_config.json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex), always read from disk."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


_DIGESTS: dict[str, str] = {}


def _digest_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "instantsoup" / "digests.json"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), cached by (real path, size, mtime, inode) in memory and in
    ``$XDG_CACHE_HOME/instantsoup/digests.json`` so that large checkpoints are hashed once."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    if key in _DIGESTS:
        return _DIGESTS[key]
    cache = _digest_cache_file()
    if not _DIGESTS:
        with contextlib.suppress(OSError, ValueError):
            _DIGESTS.update({k: v for k, v in json.loads(cache.read_text()).items() if isinstance(v, str)})
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = _DIGESTS[key] = sha256_file(real)
    if st.st_size >= 1 << 20:  # worth remembering across processes; a read-only home is fine
        with contextlib.suppress(OSError):
            atomic_write_text(cache, json.dumps(_DIGESTS, sort_keys=True))
    return digest


def dir_identity(path: str | os.PathLike, patterns: tuple[str, ...] = ("**/*",)) -> str:
    """sha256 over the relative names and contents of the files under ``path`` matching ``patterns``
    (hidden files and folders excluded); of the file's contents when ``path`` is a file."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    h = hashlib.sha256()
    files = sorted({f for pat in patterns for f in p.glob(pat)
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)})
    for f in files:
        h.update(f.relative_to(p).as_posix().encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def model_identity(path: str | os.PathLike) -> str:
    """Identity of a checkpoint directory: its config.json, weight files and tokenizer files."""
    return dir_identity(path, ("config.json", "*.safetensors", "*.bin", *TOKENIZER_FILES))


def data_identity(data: DataSettings) -> str:
    """Digest of the data a run reads (files' contents), for the run's hash."""
    files = [f for f in (data.train_file, data.validation_file, data.test_file) if f]
    if files:  # the split each file is stays in the identity (run_identity keeps which fields are set)
        return "files:" + ",".join(dir_identity(f) for f in files)
    if data.task == "default":
        import instantsoup

        return f"default@{instantsoup.__version__}"
    if is_table_source(data.task):
        return dir_identity(data.task)
    return f"{data.task}:" + dir_identity(data.data_dir)
