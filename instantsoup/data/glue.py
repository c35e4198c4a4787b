"""GLUE tasks from the files as GLUE distributes them (TSV) or as Hugging Face ``datasets`` saves
them (Parquet), with each task's official metrics.

TSV quirks handled: CoLA's train/dev have no header row (test has one); quotes are literal
characters in every GLUE TSV (MRPC, QQP, STS-B ... contain unbalanced ``"``), so fields are split
on tabs only; MRPC's header may start with a UTF-8 BOM; MNLI has 12 (train), 16 (dev) or 10 (test)
columns and is read by header name (``sentence1``, ``sentence2``, ``gold_label``); QQP's train file
has a few malformed rows, which are skipped with a warning (as transformers' GLUE processor does);
test splits have no labels (``labels is None``).

Label ids follow Hugging Face ``datasets``' GLUE ClassLabels, so TSV and Parquet agree:
MNLI entailment/neutral/contradiction = 0/1/2, QNLI and RTE entailment/not_entailment = 0/1,
WNLI not_entailment/entailment = 0/1, the 0/1 tasks as in the files.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from instantsoup.data.errors import DataError
from instantsoup.data.tables import parse_labels, read_delimited, read_parquet
from instantsoup.data.text import TextDataset

__all__ = ["load_glue", "GLUE_TASKS", "GlueTask", "glue_task"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueTask:
    name: str                      # canonical lower-case name, e.g. "sst2"
    dirname: str                   # directory name in GLUE's download, e.g. "SST-2"
    tsv_text: Tuple[str, ...]      # TSV header names of the text column(s)
    tsv_label: Optional[str]       # TSV header name of the label column
    hf_text: Tuple[str, ...]       # Parquet (HF datasets) column names of the text(s)
    label_names: Tuple[str, ...]   # () for regression
    metrics: Tuple[str, ...]       # official metrics; the first is the one to select by
    headerless_train_dev: Tuple[str, ...] = ()   # CoLA: column names of the header-less files
    skip_malformed: bool = False   # QQP

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def is_pair(self) -> bool:
        return len(self.hf_text) == 2


GLUE_TASKS: Dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), "label", ("sentence",), ("unacceptable", "acceptable"),
             ("matthews_correlation",),
             headerless_train_dev=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", ("sentence",), "label", ("sentence",), ("negative", "positive"), ("accuracy",)),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"),
             ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2"),
             ("not_duplicate", "duplicate"), ("f1", "accuracy"), skip_malformed=True),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"), (),
             ("pearson", "spearmanr")),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
             ("entailment", "neutral", "contradiction"), ("accuracy",)),
    GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("question", "sentence"),
             ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
             ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
             ("not_entailment", "entailment"), ("accuracy",)),
]}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "sts": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli",
            "mnli-mm": "mnli", "mnli_mismatched": "mnli"}


def glue_task(task: str) -> GlueTask:
    """The :class:`GlueTask` for a name like "SST-2", "sst2", "MNLI", "mnli-mm" (case-insensitive)."""
    key = task.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _canonical_split(task: str, t: GlueTask, split: str) -> str:
    s = split.strip().lower().replace("-", "_")
    s = {"dev": "validation", "val": "validation", "valid": "validation", "eval": "validation"}.get(s, s)
    s = s.replace("dev_", "validation_")
    if t.name == "mnli":
        tl = task.strip().lower()
        default = "mismatched" if tl in ("mnli-mm", "mnli_mismatched") else "matched"
        if s in ("validation", "test"):
            s = f"{s}_{default}"
        if s not in ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"):
            raise ValueError(f"MNLI split {split!r}: use 'train', 'validation_matched', "
                             "'validation_mismatched', 'test_matched' or 'test_mismatched'")
    elif s not in ("train", "validation", "test"):
        raise ValueError(f"{t.name}: unknown split {split!r}; use 'train', 'validation' (or 'dev') or 'test'")
    return s


def _tsv_name(split: str) -> str:
    return split.replace("validation", "dev") + ".tsv"


def _find(t: GlueTask, data_dir: Path, split: str) -> Tuple[str, List[Path]]:
    """('tsv'|'parquet', files) for the split, looking in data_dir and its task sub-directories."""
    dirs = [data_dir]
    for sub in (t.dirname, t.name, t.dirname.lower(), t.dirname.replace("-", "")):
        for cand in (data_dir / sub, data_dir / sub / "data"):
            if cand.is_dir() and cand not in dirs:
                dirs.append(cand)
    if (data_dir / "data").is_dir():
        dirs.append(data_dir / "data")
    for d in dirs:
        tsv = d / _tsv_name(split)
        if tsv.is_file():
            return "tsv", [tsv]
        pq = sorted(set(d.glob(f"{split}.parquet")) | set(d.glob(f"{split}-*.parquet")))
        if pq:
            return "parquet", pq
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"GLUE {t.name} {split}: found neither {_tsv_name(split)} nor {split}.parquet / "
                            f"{split}-*.parquet in {looked}")


def _load_tsv(t: GlueTask, path: Path, split: str):
    is_test = split.startswith("test")
    headerless = bool(t.headerless_train_dev) and not is_test
    names, rows = read_delimited(path, "\t", quoting=csv.QUOTE_NONE, header=not headerless,
                                 column_names=t.headerless_train_dev if headerless else None)
    cols = list(t.tsv_text) + ([] if is_test else [t.tsv_label])
    missing = [c for c in cols if c not in names]
    if missing:
        raise DataError(path, None if headerless else 1,
                        f"missing column(s) {missing} for GLUE {t.name}; the file has columns {names}")
    index = {n: i for i, n in enumerate(names)}
    records = []
    skipped: List[int] = []
    for r, (line, fields) in enumerate(rows):
        if len(fields) != len(names):
            if t.skip_malformed:
                skipped.append(line)
                continue
            raise DataError(path, line, f"expected {len(names)} tab-separated fields for GLUE {t.name}, "
                                        f"found {len(fields)}")
        records.append((line, r, {c: fields[index[c]] for c in cols}))
    if skipped:
        log.warning("%s: skipped %d malformed row(s) (first at line %d), as GLUE's reference code does",
                    path, len(skipped), skipped[0])
    if not records:
        raise DataError(path, None, "no usable rows")
    if t.is_pair:
        texts = [(rec[2][t.tsv_text[0]], rec[2][t.tsv_text[1]]) for rec in records]
    else:
        texts = [rec[2][t.tsv_text[0]] for rec in records]
    labels = None
    if not is_test:
        labels, _ = parse_labels(path, records, t.tsv_label, regression=t.is_regression,
                                 label_names=None if t.is_regression else t.label_names)
    return texts, labels, {"skipped_rows": len(skipped)}


def _load_parquet(t: GlueTask, files: Sequence[Path], split: str):
    texts: list = []
    labels: list = []
    has_label = True
    for path in files:
        import pyarrow.parquet as pq  # read_parquet raised a clear ImportError already if missing
        names = pq.ParquetFile(str(path)).schema_arrow.names
        want = list(t.hf_text) + (["label"] if "label" in names else [])
        cols = read_parquet(path, columns=want)
        n = len(cols[t.hf_text[0]])
        for c in t.hf_text:
            for r, v in enumerate(cols[c]):
                if not isinstance(v, str):
                    raise DataError(path, None, f"column {c!r} should hold text, found {v!r:.40}", row=r)
        if t.is_pair:
            texts.extend(zip(cols[t.hf_text[0]], cols[t.hf_text[1]]))
        else:
            texts.extend(cols[t.hf_text[0]])
        if "label" not in cols:
            has_label = False
            continue
        lab = cols["label"]
        for r, v in enumerate(lab):
            if v is None:
                raise DataError(path, None, "missing label", row=r)
            if not t.is_regression and (not isinstance(v, (int, np.integer)) or not -1 <= v < len(t.label_names)):
                raise DataError(path, None, f"label {v!r} is not a class id of {t.name} "
                                            f"(0..{len(t.label_names) - 1}, -1 = unlabeled)", row=r)
        labels.extend(lab[:n])
    if not has_label:
        return texts, None, {}
    arr = np.asarray(labels, dtype=np.float32 if t.is_regression else np.int64)
    if split.startswith("test") or (not t.is_regression and len(arr) and np.all(arr == -1)):
        return texts, None, {}    # HF stores -1 for GLUE's hidden test labels
    if not t.is_regression and np.any(arr < 0):
        raise DataError(files[0], None, "mix of labeled and unlabeled (-1) rows")
    return texts, arr, {}


def load_glue(task: str, data_dir: "str | os.PathLike[str]", split: str = "train") -> TextDataset:
    """Load one split of a GLUE task.

    task:     cola, sst2 (SST-2), mrpc, qqp, stsb (STS-B), mnli (also "mnli-mm" -> mismatched
              validation/test by default), qnli, rte, wnli — case-insensitive
    data_dir: the task directory (with train.tsv / dev.tsv / test.tsv, or <split>.parquet /
              <split>-00000-of-0000N.parquet), or a parent holding GLUE's task directories
              ("glue_data/SST-2") or Hugging Face's ("glue/sst2")
    split:    "train", "validation" (= "dev"), "test"; MNLI: "validation_matched",
              "validation_mismatched", "test_matched", "test_mismatched"
    returns   :class:`TextDataset` with ``texts`` (str or (str, str)), ``labels`` ((N,) int64 ids,
              float32 for STS-B, None for test splits), ``label_names`` and ``metric(preds)``
              with the official GLUE metrics.
    """
    t = glue_task(task)
    s = _canonical_split(task, t, split)
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"load_glue: {root} is not a directory")
    fmt, files = _find(t, root, s)
    if fmt == "tsv":
        texts, labels, extra = _load_tsv(t, files[0], s)
    else:
        texts, labels, extra = _load_parquet(t, files, s)
    info = {"split": s, "format": fmt, "files": [str(f) for f in files], **extra}
    name = t.name if t.name != "mnli" or s == "train" else ("mnli-mm" if "mismatched" in s else "mnli-m")
    ds = TextDataset(texts, labels, list(t.label_names), name, t.is_regression, t.metrics,
                     str(files[0]), info)
    log.info("GLUE %s %s: %d examples from %s", t.name, s, len(ds), files[0])
    return ds
