"""Hugging Face ``datasets`` as a source of tables: in-memory ``Dataset`` / ``DatasetDict`` objects,
``save_to_disk`` folders, and Parquet exports (``train-00000-of-00001.parquet``, ``data/train-*.parquet``,
``<config>/train/0000.parquet``), with the names of ``ClassLabel`` features kept.

``datasets`` is optional (``pip install 'instantsoup[datasets]'``): objects are recognised by their
attributes without importing it, Parquet exports are read with pyarrow alone (the ClassLabel names
are in the file's ``huggingface`` schema metadata), and only ``save_to_disk`` folders need it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from instantsoup.data.errors import DataError

__all__ = ["is_dataset", "is_dataset_dict", "dataset_records", "class_label_names", "parquet_label_names",
           "is_saved_dataset", "load_from_disk", "split_sources", "SPLITS", "SPLIT_ALIASES"]

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "dev": "validation", "test": "test"}


def is_dataset(obj: Any) -> bool:
    """A ``datasets.Dataset`` (duck-typed: features, column_names, select_columns, no ``keys``)."""
    return all(hasattr(obj, a) for a in ("features", "column_names", "select_columns")) and not hasattr(obj, "keys")


def is_dataset_dict(obj: Any) -> bool:
    """A ``datasets.DatasetDict`` (a mapping of split name -> Dataset)."""
    return hasattr(obj, "keys") and hasattr(obj, "column_names") and all(is_dataset(obj[k]) for k in obj.keys())


def describe(ds: Any) -> str:
    """How errors name an in-memory Dataset (its split when it has one)."""
    split = getattr(ds, "split", None)
    return f"<datasets.Dataset{' ' + str(split) if split else ''}>"


def dataset_records(ds: Any, needed: Sequence[str], label_column: Optional[str] = None) -> List[tuple]:
    """Records ``(None, row, {column: value})`` of a Dataset (missing columns -> DataError).

    A ClassLabel's -1 ("no label") becomes a missing value, which the label parser reports.
    """
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataError(describe(ds), None, f"missing column(s) {missing}; the dataset has columns "
                                            f"{list(ds.column_names)}")
    cols: Dict[str, list] = ds.select_columns(list(needed)).to_dict() if needed else {}
    n = len(ds)
    unlabeled = label_column is not None and class_label_names(ds, label_column) is not None
    records = []
    for r in range(n):
        rec = {c: cols[c][r] for c in needed}
        if unlabeled and rec[label_column] == -1:
            rec[label_column] = None
        records.append((None, r, rec))
    return records


def class_label_names(ds: Any, column: Optional[str]) -> Optional[List[str]]:
    """The names of a ClassLabel column of a Dataset (None when it is not a ClassLabel)."""
    if column is None:
        return None
    feat = getattr(ds, "features", {}).get(column)
    names = getattr(feat, "names", None)
    return [str(n) for n in names] if names else None


def parquet_label_names(path: "str | os.PathLike[str]", column: Optional[str]) -> Optional[List[str]]:
    """ClassLabel names of ``column`` from the ``huggingface`` metadata of a Parquet file written by
    ``datasets`` (``Dataset.to_parquet``, the hub's Parquet exports); None when absent."""
    if column is None:
        return None
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(os.fspath(path)).schema_arrow.metadata or {}
        info = json.loads(meta[b"huggingface"]) if b"huggingface" in meta else {}
    except Exception:  # noqa: BLE001 - unreadable metadata: read_parquet reports the file itself
        return None
    feats = info.get("info", {}).get("features", {})
    feat = feats.get(column) if isinstance(feats, dict) else None
    if isinstance(feat, dict) and feat.get("_type") == "ClassLabel" and feat.get("names"):
        return [str(n) for n in feat["names"]]
    return None


def is_saved_dataset(path: "str | os.PathLike[str]") -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def load_from_disk(path: "str | os.PathLike[str]") -> Any:
    """``datasets.load_from_disk(path)`` (a DataError naming the extra when datasets is missing)."""
    try:
        import datasets
    except ImportError:
        raise DataError(path, None, "a Hugging Face datasets folder (save_to_disk); reading it needs datasets: "
                                    "pip install 'instantsoup[datasets]'") from None
    return datasets.load_from_disk(os.fspath(path))


_SPLIT_FILE = re.compile(r"^(train|validation|valid|val|dev|test)(-\d+(-of-\d+)?)?\.parquet$")


def _split_of(name: str) -> Optional[str]:
    m = _SPLIT_FILE.match(name)
    return SPLIT_ALIASES[m.group(1)] if m else None


def split_sources(path: "str | os.PathLike[str]") -> Dict[str, Any]:
    """{"train"/"validation"/"test": source} of a dataset folder.

    A ``save_to_disk`` folder gives Datasets; a Parquet export gives lists of files: files named
    ``<split>.parquet`` / ``<split>-*.parquet`` (also under ``data/``), or ``<split>/*.parquet``
    (also under one config folder such as ``default/``). Splits named ``dev``/``valid``/``val``
    count as validation. DataError when nothing is found.
    """
    p = Path(path)
    if is_saved_dataset(p):
        obj = load_from_disk(p)
        if is_dataset(obj):
            return {"train": obj}
        out = {}
        for k in obj.keys():
            s = SPLIT_ALIASES.get(k)
            if s is None:
                raise DataError(p, None, f"split {k!r} is not train/validation/test (splits: {list(obj.keys())})")
            out[s] = obj[k]
        return out
    found: Dict[str, List[Path]] = {}
    candidates = [p, p / "data"] + [d for d in sorted(p.iterdir()) if d.is_dir() and d.name != "data"]
    for d in candidates:
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.parquet")):
            s = _split_of(f.name)
            if s is not None:
                found.setdefault(s, []).append(f)
        for sub in sorted(x for x in d.iterdir() if x.is_dir() and x.name in SPLIT_ALIASES):
            files = sorted(sub.glob("*.parquet"))
            if files:
                found.setdefault(SPLIT_ALIASES[sub.name], []).extend(files)
        if found:
            break
    if not found:
        raise DataError(p, None, "neither a datasets save_to_disk folder (dataset_dict.json / state.json) nor a "
                                 "Parquet export (train.parquet, train-00000-of-00001.parquet, data/train-*.parquet "
                                 "or train/*.parquet)")
    if "train" not in found:
        raise DataError(p, None, f"no train split (found {sorted(found)})")
    return found
