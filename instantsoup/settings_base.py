"""The building blocks of the settings, below every other module of instantsoup (after open_lth's
``foundations/hparams.py``): :func:`setting` (a dataclass field with its help text, choices and hash
rule), :class:`SettingsError`, and the settings of training and of the data, which the trainer and the
task loaders read. The settings of the methods live in their modules (``instantsoup/methods/``); the
whole :class:`~instantsoup.config.Settings` is put together in :mod:`instantsoup.config`.

Fields with ``metadata["hash"] = False`` (progress bars, thread counts, paths of outputs) do not
change what a run computes and stay out of the run directory's hash. Fields added after runs were
made carry ``metadata["hash"] = ("omit_if", v)`` with v the behaviour before they existed: they
enter the hash only when their value is not v, so those runs keep their hashes (and a run that
computes something else gets another one).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")  # of the matrix products (see instantsoup.precision)


class SettingsError(ValueError):
    """Settings that cannot produce a sensible run; raised before any work is done."""


def setting(default: Any, help: str, *, hash: bool | tuple = True, choices: tuple | None = None,
            flag: str | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A settings field: its default, its help text (``--help``), the values it may take, whether it
    enters the run hash (module docstring), and its command-line flag if not ``--field-name``."""
    meta = {"help": help, "hash": hash, "aliases": aliases}
    if choices is not None:
        meta["choices"] = choices
    if flag is not None:
        meta["flag"] = flag
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainSettings:
    """How the model is fine-tuned (shared by every method, denoisers included)."""

    batch_size: int = setting(32, "examples per optimizer step", aliases=("--per-device-train-batch-size",))
    lr: float = setting(2e-5, "peak learning rate of AdamW", aliases=("--learning-rate",))
    warmup_steps: int = setting(0, "linear warm-up steps (overrides --warmup-ratio when > 0)")
    warmup_ratio: float = setting(0.0, "linear warm-up as a fraction of the training budget")
    schedule: str = setting("linear", "learning-rate decay after warm-up (to 0 at the end of the budget)",
                            choices=SCHEDULES)
    weight_decay: float = setting(0.0, "decoupled weight decay of AdamW (not on biases / LayerNorm)")
    max_grad_norm: float = setting(1.0, "global gradient-norm clipping; 0 disables it")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy loss")
    epochs: float = setting(3.0, "training budget in epochs (fractions allowed); for IMP: per round",
                            aliases=("--num-train-epochs",))
    max_steps: int = setting(0, "training budget in optimizer steps; overrides --epochs when > 0")
    match_steps: int = setting(0, "total optimizer steps of the whole method (main model, ISP's denoisers, IMS's "
                               "ingredients, every IMP round, OMP's dense stage): each method's main budget is set so "
                               "that its total is this (at most); overrides --epochs / --max-steps when > 0")
    eval_every: int = setting(0, "evaluate every N steps; 0 = once per epoch")
    seed: int = setting(0, "seed of data order, dropout, subsets, random masks and protocols")
    max_length: int = setting(128, "maximum tokens per example (longer inputs are truncated)")
    select_best: bool = setting(True, "keep the weights with the best validation score of the final stage")
    length_buckets: int = setting(16, "text: sort windows of this many batches by length before cutting them, "
                                  "then shuffle the batches (less padding); 0 = plain shuffled batches",
                                  hash=("omit_if", 0))
    precision: str = setting("fp32", "precision of the matrix products in training and evaluation: 'fp32', or "
                             "'bf16' (bf16 operands, fp32 accumulation; fp32 weights, moments, loss, softmax and "
                             "LayerNorm statistics)", choices=PRECISIONS, hash=("omit_if", "fp32"))

    def validate(self) -> None:
        if self.batch_size < 1:
            raise SettingsError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SettingsError(f"lr must be a positive finite number, got {self.lr}")
        if self.warmup_steps < 0:
            raise SettingsError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SettingsError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.schedule not in SCHEDULES:
            raise SettingsError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.weight_decay < 0:
            raise SettingsError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm < 0:
            raise SettingsError(f"max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise SettingsError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_steps < 0 or self.match_steps < 0:
            raise SettingsError(f"max_steps and match_steps must be >= 0, got {self.max_steps}, {self.match_steps}")
        if self.max_steps == 0 and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise SettingsError(f"epochs must be > 0 (or set max_steps), got {self.epochs}")
        if self.eval_every < 0:
            raise SettingsError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.max_length < 2:
            raise SettingsError(f"max_length must be >= 2, got {self.max_length}")
        if self.length_buckets < 0:
            raise SettingsError(f"length_buckets must be >= 0, got {self.length_buckets}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The budget in optimizer steps."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, int(round(self.epochs * steps_per_epoch)))

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps for a budget of ``total_steps``."""
        if self.warmup_steps > 0:
            return self.warmup_steps
        return int(self.warmup_ratio * total_steps)



@dataclass
class DataSettings:
    """Which task and data."""

    task: str = setting("default", "GLUE task name (sst2, mrpc, ...), 'default' (the embedded demo task), "
                        "a table file (.csv/.tsv/.jsonl/.parquet), a dataset folder (datasets' save_to_disk or a "
                        "Parquet export with train/validation/test files), or an image task for CLIP (cifar10, cifar100, "
                        "mnist, svhn, gtsrb, eurosat, image_folder, ...; with --data-dir)")
    data_dir: str = setting("", "directory holding the GLUE task's files")
    text_column: str = setting("sentence", "table: column with the text")
    text_pair_column: str = setting("", "table: column with the second text of a pair ('' = none)")
    label_column: str = setting("label", "table: column with the label")
    train_file: str = setting("", "your own training table (.csv/.tsv/.jsonl/.parquet); same as --task FILE")
    validation_file: str = setting("", "your own validation table ('' = held out of the training data)")
    test_file: str = setting("", "your own test table ('' = held out of the training data)")
    num_labels: int = setting(0, "number of classes when integer label ids do not all occur in the training data "
                              "(0 = the distinct labels, which must then be 0..K-1)")
    val_fraction: float = setting(0.1, "fraction of the training set held out for validation when the task "
                                  "has no labelled split apart from the one used as test")
    max_train_examples: int = setting(0, "use at most this many training examples (0 = all)")
    max_eval_examples: int = setting(0, "use at most this many validation/test examples (0 = all)")

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise SettingsError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_train_examples < 0 or self.max_eval_examples < 0:
            raise SettingsError("max_train_examples and max_eval_examples must be >= 0")
        if os.path.splitext(self.task)[1] and not os.path.exists(self.task):
            raise SettingsError(f"data file {self.task!r} does not exist")
        for name in ("train_file", "validation_file", "test_file"):
            f = getattr(self, name)
            if f and not os.path.exists(f):
                raise SettingsError(f"{name} {f!r} does not exist")
        if self.num_labels:
            from instantsoup.data.tables import check_num_labels

            try:
                check_num_labels(self.num_labels)
            except ValueError as e:
                raise SettingsError(str(e)) from None
        from instantsoup.data.sources import is_table_source

        own = self.train_file or is_table_source(self.task)
        if self.train_file and self.task not in ("default", self.train_file):
            raise SettingsError(f"--train-file {self.train_file!r} and --task {self.task!r} both name the "
                                "training data; give one")
        if (self.validation_file or self.test_file) and not own:
            raise SettingsError("--validation-file / --test-file need your own training data (--train-file, "
                                "or a table file or dataset folder as --task)")
        if own:
            return
        if self.data_dir and not os.path.isdir(self.data_dir):
            raise SettingsError(f"data_dir {self.data_dir!r} is not a directory")
        from instantsoup.data.vision import is_vision_task

        if is_vision_task(self.task):
            if not self.data_dir:
                raise SettingsError(f"image task {self.task!r} needs --data-dir (the folder with its files)")
        elif self.task != "default":
            from instantsoup.data import GLUE_TASKS
            from instantsoup.data.glue import glue_task

            try:
                glue_task(self.task)
            except (KeyError, ValueError):
                raise SettingsError(f"unknown task {self.task!r}: a GLUE task ({', '.join(sorted(GLUE_TASKS))}), "
                                    "'default', a table file (.csv/.tsv/.jsonl/.parquet) or a dataset folder")
            if not self.data_dir:
                raise SettingsError(f"GLUE task {self.task!r} needs --data-dir (the folder with its files)")

