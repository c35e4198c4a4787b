"""From DataSettings to a tokenized :class:`~instantsoup.train.TaskData` (adapter over instantsoup.data).

Splits: model selection always uses a *validation* split that is never reported as the test score.
A GLUE task's public "validation" (dev) split has labels, its test split does not, so the dev split
becomes ``test`` and ``val_fraction`` of the training set is held out (seeded) as ``validation``. A
single table file is split the same way into train / validation / test.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from instantsoup.config import DataSettings, SettingsError
from instantsoup.data.vision import is_vision_task
from instantsoup.train import Split, TaskData

log = logging.getLogger(__name__)


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


def _metric_fn(dataset: Any) -> Any:
    """``metric(preds, labels) -> dict``: the task's official metrics (``dataset.metric_names``)."""
    names = tuple(getattr(dataset, "metric_names", ("accuracy",)))

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


def load_task(data: DataSettings, model_dir: str, max_length: int, seed: int = 0) -> TaskData:
    """Load, split and tokenize the task of ``data`` with the tokenizer of ``model_dir``."""
    from instantsoup import data as D  # the data module (issue 5)

    name = data.task
    if is_vision_task(name):
        return load_image_task(data, model_dir, seed)
    tok = D.Tokenizer.from_pretrained(model_dir)
    if name == "default":
        t = D.default_task(train_size=data.max_train_examples or None,
                           validation_size=data.max_eval_examples or None, seed=seed)
        train_ds, dev_ds = t.train, t.validation
    elif os.path.splitext(name)[1]:
        full = D.load_table(name, data.text_column, data.label_column,
                            text_pair_column=data.text_pair_column or None)
        train_ds, dev_ds = full, None
    else:
        if not data.data_dir:
            raise SettingsError(f"GLUE task {name!r} needs --data-dir")
        train_ds = D.load_glue(name, data.data_dir, "train")
        dev_ds = D.load_glue(name, data.data_dir, "validation")
    train = encode(tok, train_ds, max_length)
    if dev_ds is None:
        train, test = split_off(train, data.val_fraction, seed + 1)
    else:
        test = encode(tok, dev_ds, max_length)
    train, val = split_off(train, data.val_fraction, seed)
    train = _cap(train, data.max_train_examples, seed)
    val, test = _cap(val, data.max_eval_examples, seed), _cap(test, data.max_eval_examples, seed)
    regression = bool(getattr(train_ds, "is_regression", False))
    num_labels = int(train_ds.num_labels)
    metric = _metric_fn(train_ds)
    main = train_ds.primary_metric
    pad = getattr(tok, "pad_token_id", None)
    log.info("task %s: %d train / %d validation / %d test examples, %d labels", name, len(train), len(val),
             len(test), num_labels)
    return TaskData(name=name, train=train, validation=val, test=test, metric=metric, num_labels=num_labels,
                    main_metric=main, is_regression=regression, pad_id=0 if pad is None else int(pad),
                    tokenizer_dir=model_dir)


def load_image_task(data: DataSettings, model_dir: str, seed: int = 0) -> TaskData:
    """An image classification task (CIFAR-10, ..., or a class-per-folder tree) for CLIP's vision tower.

    The published train split is split into train / validation; the published test split is the test.
    ``info`` carries class names and prompt templates for the zero-shot head.
    """
    from instantsoup.data import vision as V
    from instantsoup.train import accuracy_metric

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


def data_identity(data: DataSettings) -> str:
    """Digest of the data a run reads (files' contents), for the run's hash."""
    from instantsoup import runs

    if data.task == "default":
        import instantsoup

        return f"default@{instantsoup.__version__}"
    if os.path.splitext(data.task)[1]:
        return runs.file_digest(data.task)
    return f"{data.task}:" + runs.dir_identity(data.data_dir, ("*",))
