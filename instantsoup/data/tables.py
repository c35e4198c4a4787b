"""Reading tabular text files (CSV / TSV / JSON Lines / Parquet) with errors that name file + line,
and :func:`load_table`, the generic text-classification loader.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from instantsoup.data import hf
from instantsoup.data.errors import DataError
from instantsoup.data.text import TextDataset

__all__ = ["load_table", "read_text_file", "read_delimited", "read_jsonl", "read_parquet", "Record",
           "infer_format"]

log = logging.getLogger(__name__)

# (line number or None, row index, {column: value})
Record = Tuple[Optional[int], int, Dict[str, Any]]

csv.field_size_limit(min(2**31 - 1, 1 << 30))


def read_text_file(path: "str | os.PathLike[str]") -> str:
    """The file's text: UTF-8 (a BOM is dropped). Empty file or bad bytes -> :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    data = p.read_bytes()
    if not data.strip():
        raise DataError(p, None, "the file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(p, line, f"invalid UTF-8 byte 0x{data[e.start]:02x} at column {col} "
                                 f"(byte offset {e.start}); the file must be UTF-8 "
                                 f"(e.g. convert it with `iconv -f latin1 -t utf-8`)") from None


def read_delimited(path: "str | os.PathLike[str]", delimiter: str = ",", *, quoting: int = csv.QUOTE_MINIMAL,
                   header: bool = True, column_names: Optional[Sequence[str]] = None
                   ) -> Tuple[List[str], List[Tuple[int, List[str]]]]:
    """Split a CSV/TSV file into (column names, [(line number, fields), ...]).

    Blank lines are skipped. Without a header, columns are ``column_names`` or "0", "1", ...
    Line numbers are 1-based and point at the line where a record starts.
    """
    text = read_text_file(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    rows: List[Tuple[int, List[str]]] = []
    prev = 0
    try:
        for fields in reader:
            start = prev + 1
            prev = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            rows.append((start, fields))
    except csv.Error as e:
        raise DataError(path, prev + 1, f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {e}") from None
    if header:
        if not rows:
            raise DataError(path, None, "the file is empty")
        line, names = rows[0]
        names = [n.strip() for n in names]
        rows = rows[1:]
        if not rows:
            raise DataError(path, line, "the file has a header but no data rows")
    else:
        width = max(len(f) for _, f in rows) if rows else 0
        names = list(column_names) if column_names is not None else [str(i) for i in range(width)]
        if not rows:
            raise DataError(path, None, "the file is empty")
    return names, rows


def read_jsonl(path: "str | os.PathLike[str]") -> List[Tuple[int, Dict[str, Any]]]:
    """[(line number, object), ...] of a JSON Lines file (one JSON object per line)."""
    text = read_text_file(path)
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, i, f"invalid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise DataError(path, i, f"expected a JSON object per line, got {type(obj).__name__}")
        out.append((i, obj))
    if not out:
        raise DataError(path, None, "the file is empty")
    return out


def read_parquet(path: "str | os.PathLike[str]", columns: Optional[Sequence[str]] = None) -> Dict[str, list]:
    """{column: list of values} of a Parquet file (needs ``pyarrow``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(p, None, "the file is empty")
    try:
        pf = pq.ParquetFile(str(p))
    except Exception as e:
        raise DataError(p, None, f"not a readable Parquet file: {e}") from None
    names = pf.schema_arrow.names
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(p, None, f"missing column(s) {missing}; the file has columns {names}")
    table = pf.read(columns=list(columns) if columns is not None else None)
    if table.num_rows == 0:
        raise DataError(p, None, "the file has no rows")
    return table.to_pydict()


def infer_format(path: "str | os.PathLike[str]") -> str:
    name = os.fspath(path).lower()
    for suffix in (".gz", ".bz2", ".xz"):
        if name.endswith(suffix):
            raise ValueError(f"{path}: compressed files are not read directly; decompress first")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise DataError(path, None, "cannot tell the format from the extension; pass format="
                    "'csv' | 'tsv' | 'jsonl' | 'parquet'")


def iter_records(path, fmt: str, *, needed: Sequence[str], delimiter: Optional[str] = None,
                 quoting: Optional[int] = None, header: bool = True,
                 column_names: Optional[Sequence[str]] = None) -> List[Record]:
    """Read a file into records with the ``needed`` columns checked (missing -> DataError)."""
    records: List[Record] = []
    if fmt in ("csv", "tsv"):
        delim = delimiter or ("," if fmt == "csv" else "\t")
        quote = quoting if quoting is not None else (csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
        names, rows = read_delimited(path, delim, quoting=quote, header=header, column_names=column_names)
        missing = [c for c in needed if c not in names]
        if missing:
            raise DataError(path, 1 if header else None,
                            f"missing column(s) {missing}; the file has columns {names}")
        index = {n: i for i, n in enumerate(names)}
        for r, (line, fields) in enumerate(rows):
            if len(fields) != len(names):
                raise DataError(path, line, f"expected {len(names)} fields ({delim!r}-separated), "
                                            f"found {len(fields)}")
            records.append((line, r, {c: fields[index[c]] for c in needed}))
    elif fmt == "jsonl":
        for r, (line, obj) in enumerate(read_jsonl(path)):
            missing = [c for c in needed if c not in obj]
            if missing:
                raise DataError(path, line, f"missing key(s) {missing}; this record has keys {sorted(obj)}")
            records.append((line, r, {c: obj[c] for c in needed}))
    elif fmt == "parquet":
        cols = read_parquet(path, columns=list(needed))
        n = len(cols[needed[0]]) if needed else 0
        for r in range(n):
            records.append((None, r, {c: cols[c][r] for c in needed}))
    else:
        raise ValueError(f"unknown format {fmt!r}; use 'csv', 'tsv', 'jsonl' or 'parquet'")
    return records


def _err(path, rec: Record, reason: str) -> DataError:
    line, row, _ = rec
    return DataError(path, line, reason, row=None if line is not None else row)


def _where(rec: Record) -> str:
    return f"line {rec[0]}" if rec[0] is not None else f"row {rec[1]}"


def _text(path, rec: Record, column: str) -> str:
    v = rec[2][column]
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        raise _err(path, rec, f"missing text in column {column!r}")
    raise _err(path, rec, f"column {column!r} should hold text, found {type(v).__name__} {v!r:.40}")


def _label_kind(v) -> Tuple[str, Any]:
    """('int'|'float'|'str'|'missing', parsed value) of one raw label value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing", None
    if isinstance(v, bool):
        return "int", int(v)
    if isinstance(v, (int, np.integer)):
        return "int", int(v)
    if isinstance(v, (float, np.floating)):
        return ("int", int(v)) if float(v).is_integer() else ("float", float(v))
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return "missing", None
        try:
            return "int", int(s)
        except ValueError:
            pass
        try:
            f = float(s)
            if math.isfinite(f):
                return ("int", int(f)) if f.is_integer() else ("float", f)
        except ValueError:
            pass
        return "str", s
    return "other", v


# a column with more distinct labels than this is almost surely the wrong column (or ids that are
# not class ids); pass num_labels to allow more. MAX_NUM_LABELS bounds an explicit num_labels: the
# classifier head holds hidden_size x num_labels weights (+ optimizer state).
MAX_INFERRED_LABELS = 1000
MAX_NUM_LABELS = 100_000


def check_num_labels(num_labels: Optional[int]) -> None:
    """Refuse an explicit class count that is not in [2, MAX_NUM_LABELS] (ValueError)."""
    if num_labels is None:
        return
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) \
            or not 2 <= num_labels <= MAX_NUM_LABELS:
        raise ValueError(f"num_labels must be an integer in [2, {MAX_NUM_LABELS}], got {num_labels!r}")


def parse_labels(path, records: List[Record], column: str, *, label_names: Optional[Sequence[str]] = None,
                 regression: bool = False, num_labels: Optional[int] = None) -> Tuple[np.ndarray, List[str]]:
    """Label ids (or float scores) of ``records[*][column]`` and the label names kept.

    With ``label_names``: values are names (or integer ids in range). Without: text labels are
    mapped to ids in sorted order; integer labels are class ids and must be exactly 0..K-1, K the
    number of distinct ids (a gap such as {0, 1, 5}, 1-based ids or a stray huge id is an error at
    the first offending line), unless ``num_labels`` says how many classes there are (ids in
    [0, num_labels), names "0".."num_labels-1"). More than :data:`MAX_INFERRED_LABELS` distinct
    labels need an explicit ``num_labels``. Mixed text/number columns, unknown names, non-integer
    numbers without ``regression``, and missing values are DataErrors.
    """
    if regression:
        out = np.empty(len(records), dtype=np.float32)
        for i, rec in enumerate(records):
            kind, val = _label_kind(rec[2][column])
            if kind not in ("int", "float"):
                raise _err(path, rec, f"label column {column!r} must hold numbers for a regression "
                                      f"task, found {rec[2][column]!r:.40}")
            out[i] = val
        return out, []
    check_num_labels(num_labels)
    if label_names is None and num_labels is not None:
        label_names = [str(i) for i in range(num_labels)]
    if label_names is not None:
        names = [str(n) for n in label_names]
        lookup = {n: i for i, n in enumerate(names)}
        ids = np.empty(len(records), dtype=np.int64)
        for i, rec in enumerate(records):
            raw = rec[2][column]
            key = raw.strip() if isinstance(raw, str) else raw
            if isinstance(key, str) and key in lookup:
                ids[i] = lookup[key]
                continue
            kind, val = _label_kind(raw)
            if kind == "int" and 0 <= val < len(names):
                ids[i] = val
                continue
            if kind == "missing":
                raise _err(path, rec, f"missing label in column {column!r}")
            known = names if len(names) <= 20 else names[:20] + ["..."]
            raise _err(path, rec, f"unknown label {raw!r:.40} in column {column!r}; known labels: {known}")
        return ids, names
    parsed = []
    first: Optional[Tuple[str, Record]] = None
    for rec in records:
        kind, val = _label_kind(rec[2][column])
        if kind == "missing":
            raise _err(path, rec, f"missing label in column {column!r}")
        if kind == "other":
            raise _err(path, rec, f"label column {column!r} holds {type(val).__name__} values; "
                                  "expected text or integers")
        family = "text" if kind == "str" else "number"
        if first is None:
            first = (family, rec)
        elif family != first[0]:
            raise _err(path, rec, f"label column {column!r} mixes types: {_where(first[1])} has "
                                  f"{first[1][2][column]!r:.40} ({first[0]}) but this {_where(rec)} has "
                                  f"{rec[2][column]!r:.40} ({family}); pass label_names=[...] to map them")
        if kind == "float":
            raise _err(path, rec, f"label {rec[2][column]!r:.40} in column {column!r} is not an integer "
                                  "class id; pass regression=True for a regression task")
        parsed.append(val)
    distinct = sorted(set(parsed))
    if len(distinct) > MAX_INFERRED_LABELS:
        raise DataError(path, None, f"label column {column!r} has {len(distinct)} distinct labels, more than "
                                    f"{MAX_INFERRED_LABELS}; is it the right column? Pass num_labels "
                                    f"(--num-labels) to allow up to {MAX_NUM_LABELS} classes")
    if first[0] == "text":
        lookup = {n: i for i, n in enumerate(distinct)}
        return np.array([lookup[v] for v in parsed], dtype=np.int64), distinct
    ids = np.array(parsed, dtype=np.int64)
    k = len(distinct)
    bad = np.flatnonzero((ids < 0) | (ids >= k))
    if bad.size:
        rec = records[int(bad[0])]
        shown = distinct if k <= 10 else distinct[:5] + ["..."] + distinct[-3:]
        hint = (" (1-based ids? class ids start at 0)" if distinct[0] == 1 and distinct[-1] == k else "")
        raise _err(path, rec, f"label {ids[bad[0]]} in column {column!r} is not a class id: the column has {k} "
                              f"distinct integer labels {shown}, so ids must be 0..{k - 1} with no gaps{hint}; "
                              "pass num_labels (--num-labels N) if some classes do not occur in this file, "
                              "or use text labels")
    return ids, [str(i) for i in range(k)]


def load_table(path: "str | os.PathLike[str]", text_column: Union[str, int], label_column: Union[str, int, None],
               text_pair_column: Union[str, int, None] = None, *, label_names: Optional[Sequence[str]] = None,
               regression: bool = False, format: Optional[str] = None, delimiter: Optional[str] = None,
               quoting: Optional[int] = None, header: bool = True, column_names: Optional[Sequence[str]] = None,
               metric_names: Optional[Sequence[str]] = None, task: Optional[str] = None,
               num_labels: Optional[int] = None) -> TextDataset:
    """Load a text-classification (or regression) table.

    path:             .csv / .tsv / .jsonl (.json, .ndjson) / .parquet (or ``format=``), or a
                      Hugging Face ``datasets.Dataset`` (its ClassLabel names are kept)
    text_column:      column with the text (a header name, or an index for header-less CSV/TSV)
    text_pair_column: optional second text column -> examples are (a, b) pairs
    label_column:     column with labels (names or integer ids); None -> unlabeled (labels=None)
    label_names:      fixes the id of each name (pass ``train.label_names`` when loading the other
                      splits so ids agree); without it: the names of a ClassLabel column (a
                      Dataset, or Parquet written by ``datasets``), else text labels get ids in
                      sorted order and integer labels are class ids 0..K-1
    num_labels:       the number of classes when integer ids do not all occur in this file (ids
                      must be in [0, num_labels)); without it integer ids must be exactly 0..K-1
    regression:       float labels, metrics Pearson + Spearman
    quoting:          csv quoting for CSV/TSV (default: RFC-4180 quotes for CSV, none for TSV)
    header:           CSV/TSV has a header row (else columns are ``column_names`` or "0", "1", ...)
    """
    if not header and column_names is None:
        # integer column selectors address header-less files
        text_column, label_column, text_pair_column = (None if c is None else str(c)
                                                       for c in (text_column, label_column, text_pair_column))
    needed = [str(c) for c in (text_column, text_pair_column, label_column) if c is not None]
    lc = None if label_column is None else str(label_column)
    if hf.is_dataset(path):
        records = hf.dataset_records(path, needed, lc)
        names_found = hf.class_label_names(path, lc)
        source, path = hf.describe(path), hf.describe(path)
        default_name = "dataset"
    else:
        fmt = format or infer_format(path)
        records = iter_records(path, fmt, needed=needed, delimiter=delimiter, quoting=quoting,
                               header=header, column_names=column_names)
        names_found = hf.parquet_label_names(path, lc) if fmt == "parquet" else None
        source = os.fspath(path)
        default_name = Path(source).stem
    if label_names is None and num_labels is None and not regression:
        label_names = names_found
    tc, pc = str(text_column), (None if text_pair_column is None else str(text_pair_column))
    if pc is None:
        texts: list = [_text(path, r, tc) for r in records]
    else:
        texts = [(_text(path, r, tc), _text(path, r, pc)) for r in records]
    labels, names = (None, list(label_names or []))
    if label_column is not None:
        labels, names = parse_labels(path, records, lc, label_names=label_names,
                                     regression=regression, num_labels=num_labels)
    if metric_names is None:
        metric_names = ("pearson", "spearmanr") if regression else ("accuracy",)
    ds = TextDataset(texts, labels, names, task or default_name, regression, tuple(metric_names), source)
    log.info("loaded %s: %d examples, labels %s", path, len(ds), names if not regression else "regression")
    return ds
