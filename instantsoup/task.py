"""From DataSettings to a tokenized :class:`TaskData` (adapter over instantsoup.data).

Splits: model selection always uses a *validation* split that is never reported as the test score.
A GLUE task's public "validation" (dev) split has labels, its test split does not, so the dev split
becomes ``test`` and ``val_fraction`` of the training set is held out (seeded) as ``validation``. Your
own data (:func:`from_tables`, ``--train-file/--validation-file/--test-file``, a table file or a
dataset folder as ``--task``) keeps the splits you give; each missing one is held out of train the
same way (test first, then validation).

Label names travel with the task (``TaskData.label_names``) into the ticket, the exported
config.json (``id2label``/``label2id``) and ``eval``, which maps a file's labels through a
checkpoint's names.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from instantsoup.settings_base import DataSettings, SettingsError
from instantsoup.data.metrics import accuracy_metric
from instantsoup.data.sources import is_table_source
from instantsoup.data.vision import is_vision_task

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Tokenized examples of one split: ragged token ids (+ token types) and labels (N,)."""

    input_ids: list[np.ndarray]
    labels: np.ndarray
    token_type_ids: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, idx: np.ndarray) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split([self.input_ids[i] for i in idx], self.labels[idx],
                     None if self.token_type_ids is None else [self.token_type_ids[i] for i in idx])

    def collate(self, idx: np.ndarray, pad_id: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Batch ``idx`` padded to its longest example: input_ids/attention_mask/token_type_ids (B,T)."""
        rows = [self.input_ids[i] for i in idx]
        T = max(len(r) for r in rows)
        B = len(rows)
        ids = np.full((B, T), pad_id, dtype=np.int64)
        am = np.zeros((B, T), dtype=np.int64)
        tt = np.zeros((B, T), dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = r
            am[b, :len(r)] = 1
            if self.token_type_ids is not None:
                tt[b, :len(r)] = self.token_type_ids[idx[b]]
        return {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}, self.labels[np.asarray(idx)]


@dataclass
class TaskData:
    """A tokenized task: train / validation (model selection) / test (reported only) splits.

    ``metric(preds, labels) -> dict`` with preds (N,) class ids (or floats for regression);
    ``main_metric`` names the key used for model selection (higher is better). Build one from your
    own data with :meth:`from_tables` or :func:`load_task`.
    """

    name: str
    train: Split
    validation: Split
    metric: Callable[[np.ndarray, np.ndarray], dict]
    num_labels: int
    main_metric: str = "accuracy"
    test: Split | None = None
    is_regression: bool = False
    pad_id: int = 0
    tokenizer_dir: str | None = None
    identity: str = ""
    info: dict = field(default_factory=dict)  # e.g. classnames/templates of an image task (zero-shot head)
    label_names: list[str] = field(default_factory=list)  # label_names[i] names class id i ([] = unnamed)

    @classmethod
    def from_tables(cls, train: Any, validation: Any = None, test: Any = None, **kw: Any) -> "TaskData":
        """Your own splits (files, ``datasets`` objects, TextDatasets): see :func:`from_tables`."""
        return from_tables(train, validation, test, **kw)


def encode(tokenizer: Any, dataset: Any, max_length: int) -> Split:
    """Tokenize a TextDataset (``texts``: list of str or of (a, b) pairs; ``labels``)."""
    enc = tokenizer.encode(list(dataset.texts), max_length=max_length)
    ids, types = _ids_and_types(enc)
    labels = np.asarray(dataset.labels)
    labels = labels.astype(np.float32 if getattr(dataset, "is_regression", False) else np.int64)
    return Split([np.asarray(x, np.int64) for x in ids], labels,
                 None if types is None else [np.asarray(x, np.int64) for x in types])


def _ids_and_types(enc: Any) -> tuple[list, list | None]:
    if isinstance(enc, tuple) and len(enc) == 2:
        return enc[0], enc[1]
    if isinstance(enc, dict):
        return enc["input_ids"], enc.get("token_type_ids")
    if hasattr(enc, "input_ids"):
        return enc.input_ids, getattr(enc, "token_type_ids", None)
    return enc, None


def metric_for(dataset: Any) -> Any:
    """``metric(preds, labels) -> dict``: the official metrics of a dataset (its ``metric_names``,
    e.g. a TextDataset from ``load_glue``/``load_table``), or of a sequence of metric names."""
    names = tuple(dataset) if isinstance(dataset, (list, tuple)) else tuple(getattr(dataset, "metric_names",
                                                                                      ("accuracy",)))

    def metric(preds: np.ndarray, labels: np.ndarray) -> dict:
        from instantsoup.data import metrics as M

        return M.compute(names, np.asarray(preds), np.asarray(labels))

    return metric


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held_out) with ``round(fraction·n)`` (at least 1) examples held out, seeded."""
    n = len(split)
    k = max(1, int(round(fraction * n)))
    perm = np.random.default_rng([seed, 4242]).permutation(n)
    return split.take(np.sort(perm[k:])), split.take(np.sort(perm[:k]))


def _cap(split: Split, n: int, seed: int) -> Split:
    if n <= 0 or len(split) <= n:
        return split
    return split.take(np.sort(np.random.default_rng([seed, 99]).choice(len(split), n, replace=False)))


def _concat(parts: list) -> Any:
    """One TextDataset from the parts of a split stored in several files (same label names)."""
    if len(parts) == 1:
        return parts[0]
    from instantsoup.data import TextDataset

    first = parts[0]
    labels = None if first.labels is None else np.concatenate([p.labels for p in parts])
    return TextDataset([t for p in parts for t in p.texts], labels, first.label_names, first.task,
                       first.is_regression, first.metric_names, first.source)


def _read_split(source: Any, columns: dict, label_names: list | None, num_labels: int | None) -> Any:
    """A TextDataset from a file, a list of files (one split of a Parquet export), a Dataset, or a
    TextDataset (returned as is)."""
    from instantsoup import data as D

    if isinstance(source, D.TextDataset):
        return _relabel(source, label_names)
    if isinstance(source, (list, tuple)):
        parts = []
        for f in source:
            parts.append(_read_split(f, columns, label_names, num_labels))
            label_names = label_names or parts[0].label_names or None
        return _concat(parts)
    return D.load_table(source, columns["text"], columns["label"], columns["pair"], label_names=label_names,
                        num_labels=num_labels)


def _relabel(ds: Any, label_names: list | None) -> Any:
    """``ds`` with its label ids renumbered to ``label_names`` (by name)."""
    if label_names is None or ds.labels is None or ds.is_regression or not ds.label_names \
            or list(ds.label_names) == list(label_names):
        return ds
    from instantsoup.data import TextDataset

    lookup = {str(n): i for i, n in enumerate(label_names)}
    unknown = sorted(set(ds.label_names) - set(lookup))
    if unknown:
        raise SettingsError(f"{ds.task}: labels {unknown} are not among {list(label_names)}")
    new = np.array([lookup[str(n)] for n in ds.label_names], dtype=np.int64)[ds.labels]
    return TextDataset(ds.texts, new, list(label_names), ds.task, False, ds.metric_names, ds.source, dict(ds.info))


def _table_sources(train: Any, validation: Any, test: Any) -> dict:
    """{split: source} from the user's train/validation/test sources: a DatasetDict or a dataset
    folder as ``train`` brings its own splits; explicit ``validation``/``test`` sources win."""
    from instantsoup.data import hf

    out = {"train": train}
    if hf.is_dataset_dict(train):
        out = {hf.SPLIT_ALIASES.get(k, k): train[k] for k in train.keys()}
    elif isinstance(train, (str, os.PathLike)) and os.path.isdir(train):
        out = hf.split_sources(train)
    unknown = sorted(set(out) - set(hf.SPLITS))
    if unknown:
        raise SettingsError(f"splits {unknown} are not train/validation/test")
    if "train" not in out:
        raise SettingsError(f"no train split among {sorted(out)}")
    for k, v in (("validation", validation), ("test", test)):
        if v is not None and not (isinstance(v, str) and not v):
            out[k] = v
    return out


def from_tables(train: Any, validation: Any = None, test: Any = None, *, tokenizer: Any,
                text_column: str = "sentence", label_column: str = "label", text_pair_column: str | None = None,
                label_names: list | None = None, num_labels: int | None = None, max_length: int = 128,
                val_fraction: float = 0.1, seed: int = 0, max_train_examples: int = 0,
                max_eval_examples: int = 0, name: str | None = None) -> TaskData:
    """A tokenized :class:`TaskData` from your own splits (also ``TaskData.from_tables``).

    train / validation / test: a table file (.csv/.tsv/.jsonl/.parquet), a Hugging Face
    ``datasets.Dataset``, a :class:`~instantsoup.data.TextDataset`, or for ``train`` also a
    ``DatasetDict`` or a dataset folder (``save_to_disk`` or a Parquet export) holding its own
    splits. A missing validation split is held out of train (``val_fraction``, seeded), a missing
    test split likewise (before the validation hold-out). Label ids follow ``label_names`` when
    given, else the train split's names (text labels sorted, a ClassLabel's names, or integer ids
    0..K-1, see ``load_table``); the other splits are mapped through them and a label train does
    not know is an error. ``tokenizer``: an instantsoup Tokenizer or a model directory.
    """
    from instantsoup import data as D

    tokenizer_dir = None
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer_dir = os.fspath(tokenizer)
        tokenizer = D.Tokenizer.from_pretrained(tokenizer_dir)
    columns = {"text": text_column, "label": label_column, "pair": text_pair_column or None}
    sources = _table_sources(train, validation, test)
    train_ds = _read_split(sources["train"], columns, label_names, num_labels)
    names = list(train_ds.label_names)
    if not train_ds.is_regression and len(names) < 2:
        raise SettingsError(f"the training data has {len(names)} class(es) {names}; a classifier needs at least 2 "
                            "(pass --num-labels / num_labels if the other classes are missing from it)")
    dev = {k: _read_split(sources[k], columns, names, None) for k in ("validation", "test") if k in sources}
    task_name = name or (os.path.basename(os.path.normpath(train)) if isinstance(train, (str, os.PathLike))
                         else train_ds.task)
    return _assemble(task_name, tokenizer, train_ds, dev.get("validation"), dev.get("test"), max_length=max_length,
                     val_fraction=val_fraction, seed=seed, max_train_examples=max_train_examples,
                     max_eval_examples=max_eval_examples, tokenizer_dir=tokenizer_dir)


def _assemble(name: str, tok: Any, train_ds: Any, val_ds: Any, test_ds: Any, *, max_length: int,
              val_fraction: float, seed: int, max_train_examples: int, max_eval_examples: int,
              tokenizer_dir: str | None) -> TaskData:
    """Tokenize the splits, hold out the missing ones, cap the sizes."""
    train = encode(tok, train_ds, max_length)
    test = None if test_ds is None else encode(tok, test_ds, max_length)
    if test is None:
        train, test = split_off(train, val_fraction, seed + 1)
    if val_ds is None:
        train, val = split_off(train, val_fraction, seed)
    else:
        val = encode(tok, val_ds, max_length)
    train = _cap(train, max_train_examples, seed)
    val, test = _cap(val, max_eval_examples, seed), _cap(test, max_eval_examples, seed)
    regression = bool(getattr(train_ds, "is_regression", False))
    pad = getattr(tok, "pad_token_id", None)
    log.info("task %s: %d train / %d validation / %d test examples, %d labels", name, len(train), len(val),
             len(test), train_ds.num_labels)
    return TaskData(name=name, train=train, validation=val, test=test, metric=metric_for(train_ds),
                    num_labels=int(train_ds.num_labels), main_metric=train_ds.primary_metric,
                    is_regression=regression, pad_id=0 if pad is None else int(pad), tokenizer_dir=tokenizer_dir,
                    label_names=[] if regression else list(train_ds.label_names))


def load_task(data: DataSettings | str = "default", model_dir: str | os.PathLike | None = None,
              max_length: int = 128, seed: int = 0, *, label_names: list | None = None, **fields: Any) -> TaskData:
    """Load, split and tokenize a task with the tokenizer of ``model_dir`` (default: the embedded model).

    ``data``: a :class:`DataSettings`, or a task (GLUE name, 'default', a table file, a dataset
    folder) with DataSettings fields as keywords, e.g.
    ``load_task("train.csv", model_dir, test_file="test.csv", text_column="review")``.
    ``label_names``: map the data's labels through these (a checkpoint's id2label; ``eval`` does).
    """
    from instantsoup import data as D

    if not isinstance(data, DataSettings):
        data = DataSettings(task=os.fspath(data), **fields)
    elif fields:
        raise TypeError("load_task: pass either a DataSettings or keyword fields, not both")
    data.validate()
    if model_dir is None:
        model_dir = str(D.default_model_path())
    model_dir = os.fspath(model_dir)
    name = data.task
    if is_vision_task(name):
        return load_image_task(data, model_dir, seed)
    caps = dict(max_length=max_length, val_fraction=data.val_fraction, seed=seed,
                max_train_examples=data.max_train_examples, max_eval_examples=data.max_eval_examples)
    num_labels = data.num_labels or None
    if data.train_file or is_table_source(name):
        return from_tables(data.train_file or name, data.validation_file or None, data.test_file or None,
                           tokenizer=model_dir, text_column=data.text_column, label_column=data.label_column,
                           text_pair_column=data.text_pair_column or None, label_names=label_names,
                           num_labels=num_labels, **caps)
    tok = D.Tokenizer.from_pretrained(model_dir)
    if name == "default":
        t = D.default_task(train_size=data.max_train_examples or None,
                           validation_size=data.max_eval_examples or None, seed=seed)
        train_ds, dev_ds = t.train, t.validation
    else:
        train_ds = D.load_glue(name, data.data_dir, "train")
        dev_ds = D.load_glue(name, data.data_dir, "validation")
    check_label_names(name, train_ds, label_names)
    # the task's public dev split is the test split; validation is held out of train
    return _assemble(name, tok, train_ds, None, dev_ds, tokenizer_dir=model_dir, **caps)


def check_label_names(name: str, dataset: Any, label_names: list | None) -> None:
    """Refuse a checkpoint's labels (``label_names``) that do not fit a task with fixed labels by their
    count; other names (not LABEL_i) get a warning that ids are compared (id i = the task's label i)."""
    if label_names is None or dataset.is_regression:
        return
    own = list(dataset.label_names)
    if len(label_names) != len(own):
        raise SettingsError(f"the checkpoint's head has {len(label_names)} labels {list(label_names)} but task "
                            f"{name!r} has {len(own)} {own}")
    generic = all(str(n) in (f"LABEL_{i}", str(i)) for i, n in enumerate(label_names))
    if not generic and list(map(str, label_names)) != own:
        log.warning("the checkpoint's labels %s are not task %r's labels %s; scoring by id (%s)", list(label_names),
                    name, own, ", ".join(f"{a} = {b}" for a, b in zip(label_names, own)))


def load_image_task(data: DataSettings, model_dir: str, seed: int = 0) -> TaskData:
    """An image classification task (CIFAR-10, ..., or a class-per-folder tree) for CLIP's vision tower.

    The published train split is split into train / validation; the published test split is the test.
    ``info`` carries class names and prompt templates for the zero-shot head.
    """
    from instantsoup.data import vision as V

    if not data.data_dir:
        raise SettingsError(f"image task {data.task!r} needs --data-dir")
    train_ds = V.load_vision_dataset(data.task, data.data_dir, "train")
    test_ds = V.load_vision_dataset(data.task, data.data_dir, "test")
    proc = V.ImageProcessor.from_pretrained(model_dir)
    train, test = V.ImageSplit(train_ds, proc), V.ImageSplit(test_ds, proc)
    train, val = split_off(train, data.val_fraction, seed)
    train = _cap(train, data.max_train_examples, seed)
    val, test = _cap(val, data.max_eval_examples, seed), _cap(test, data.max_eval_examples, seed)
    log.info("task %s: %d train / %d validation / %d test images, %d classes", data.task, len(train), len(val),
             len(test), len(train_ds.classnames))
    return TaskData(name=data.task, train=train, validation=val, test=test, metric=accuracy_metric,
                    num_labels=len(train_ds.classnames), main_metric="accuracy", tokenizer_dir=model_dir,
                    info={"classnames": list(train_ds.classnames), "templates": list(train_ds.templates)})

