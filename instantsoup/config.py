"""Settings of a pruning run, as dataclasses (after open_lth's hparams).

Every field carries its help text in ``metadata["help"]``; :func:`add_arguments` generates the
``instantsoup prune`` command-line options from these classes and :func:`from_namespace` reads them
back, so the CLI and the Python API can never disagree. ``validate()`` refuses bad settings with a
:class:`SettingsError` *before* any work is done; :func:`check_budget` repeats the budget checks once
the size of the training set (steps per epoch) is known.

Fields with ``metadata["hash"] = False`` (progress bars, thread counts, paths of outputs) do not
change what a run computes and stay out of the run directory's hash. Fields added after runs were
made carry ``metadata["hash"] = ("omit_if", v)`` with v the behaviour before they existed: they
enter the hash only when their value is not v, so those runs keep their hashes (and a run that
computes something else gets another one). Fields of
:class:`PruneSettings` list the methods they apply to in ``metadata["methods"]``; only those enter the
hash of a run of that method, so tuning an ISP knob never invalidates a finished IMP run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from typing import Any

METHODS = ("isp", "imp", "omp", "gmp", "random", "dense", "ims")
MERGE_RULES = ("union", "intersection", "vote")
SCHEDULES = ("linear", "cosine", "constant")
VARIANTS = ("released", "paper", "soup")  # ISP variants (docs/experiments.md)
RELEASED_MARGIN = 0.05  # the authors' released script stops its rounds within 5 points of the target
DEFAULT_MARGIN = 0.005
PRECISIONS = ("fp32", "bf16")  # of the matrix products (see instantsoup.precision)


# Table 1 of the paper (Jaiswal et al., ICML 2023): BERT on GLUE, CLIP ViT-B/32 on image tasks
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper-bert": {"train": {"lr": 2e-5, "epochs": 10.0, "weight_decay": 0.0, "batch_size": 128,
                             "warmup_steps": 500, "max_grad_norm": 1.0},
                   "prune": {"step": 0.10, "lookahead": 30, "denoisers": 4}},
    "paper-clip": {"train": {"lr": 1e-5, "epochs": 22.0, "weight_decay": 0.1, "batch_size": 128,
                             "warmup_steps": 500, "max_grad_norm": 1.0},
                   "prune": {"step": 0.15, "lookahead": 50, "denoisers": 5}},
}
# what a CLIP run without a preset takes from paper-clip: the method's hyperparameters, not its budget
CLIP_DEFAULTS = ("lr", "weight_decay", "step", "lookahead", "denoisers")


class SettingsError(ValueError):
    """Settings that cannot produce a sensible run; raised before any work is done."""


def _f(default: Any, help: str, *, methods: tuple[str, ...] | None = None, hash: bool | tuple = True,
       choices: tuple | None = None, flag: str | None = None, aliases: tuple[str, ...] = ()) -> Any:
    meta = {"help": help, "hash": hash, "aliases": aliases}
    if methods is not None:
        meta["methods"] = methods
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

    batch_size: int = _f(32, "examples per optimizer step", aliases=("--per-device-train-batch-size",))
    lr: float = _f(2e-5, "peak learning rate of AdamW", aliases=("--learning-rate",))
    warmup_steps: int = _f(0, "linear warm-up steps (overrides --warmup-ratio when > 0)")
    warmup_ratio: float = _f(0.0, "linear warm-up as a fraction of the training budget")
    schedule: str = _f("linear", "learning-rate decay after warm-up (to 0 at the end of the budget)",
                       choices=SCHEDULES)
    weight_decay: float = _f(0.0, "decoupled weight decay of AdamW (not on biases / LayerNorm)")
    max_grad_norm: float = _f(1.0, "global gradient-norm clipping; 0 disables it")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss")
    epochs: float = _f(3.0, "training budget in epochs (fractions allowed); for IMP: per round",
                       aliases=("--num-train-epochs",))
    max_steps: int = _f(0, "training budget in optimizer steps; overrides --epochs when > 0")
    match_steps: int = _f(0, "total optimizer steps of the whole method (main model, ISP's denoisers, IMS's "
                          "ingredients, every IMP round, OMP's dense stage): each method's main budget is set so "
                          "that its total is this (at most); overrides --epochs / --max-steps when > 0")
    eval_every: int = _f(0, "evaluate every N steps; 0 = once per epoch")
    seed: int = _f(0, "seed of data order, dropout, subsets, random masks and protocols")
    max_length: int = _f(128, "maximum tokens per example (longer inputs are truncated)")
    select_best: bool = _f(True, "keep the weights with the best validation score of the final stage")
    length_buckets: int = _f(16, "text: sort windows of this many batches by length before cutting them, "
                             "then shuffle the batches (less padding); 0 = plain shuffled batches",
                             hash=("omit_if", 0))
    precision: str = _f("fp32", "precision of the matrix products in training and evaluation: 'fp32', or "
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


ISP, IMP, OMP, GMP, RND, DENSE, IMS = METHODS
_PRUNED = (ISP, IMP, OMP, GMP, RND)


@dataclass
class PruneSettings:
    """Which method, which target, and every method's knobs (the methods: docs/experiments.md)."""

    method: str = _f("isp", "pruning method", choices=METHODS)
    sparsity: float = _f(0.5, "target fraction of prunable weights set to zero, in [0, 1)",
                         methods=_PRUNED + (IMS,))
    step: float = _f(0.10, "fraction of the still-kept weights removed per pruning round "
                     "(paper: 0.10 BERT, 0.15 CLIP)", methods=(ISP, IMP, GMP))
    t: int = _f(0, "ISP: steps per round unit (round i trains t*(i+1) steps); 0 = t_fraction of an epoch",
                methods=(ISP,))
    t_fraction: float = _f(0.10, "ISP: t as a fraction of an epoch when --t is 0", methods=(ISP,))
    denoisers: int = _f(4, "ISP: denoisers N per round (paper: 4 BERT, 5 CLIP)", methods=(ISP,))
    lookahead: int = _f(30, "ISP: look-ahead steps C of each denoiser (paper: 30 BERT, 50 CLIP)",
                        methods=(ISP,))
    variant: str = _f("soup", "ISP: 'released' (the authors' released CLIP script: denoisers prune a further "
                      "--step, a weight goes only if every denoiser prunes it, no exact cut per round), 'paper' "
                      "(Algorithm 2 literally: union with the main mask cut by the main magnitudes = magnitude "
                      "pruning on ISP's schedule) or 'soup' (union with the main mask cut by the mean |w| of the "
                      "denoisers); see docs/experiments.md", choices=VARIANTS, methods=(ISP,))
    merge: str = _f("union", "ISP: how the masks of a round are merged", choices=MERGE_RULES,
                    methods=(ISP,))
    merge_main: bool = _f(True, "ISP paper/soup: merge the main model's own magnitude mask with the denoisers'",
                          methods=(ISP,))
    subset_fraction: float = _f(0.5, "ISP/IMS: fraction of the training set each denoiser/ingredient sees",
                                methods=(ISP, IMS))
    lr_mult_min: float = _f(1.0, "ISP/IMS: smallest learning-rate multiplier drawn per denoiser",
                            methods=(ISP, IMS))
    lr_mult_max: float = _f(1.0, "ISP/IMS: largest learning-rate multiplier drawn per denoiser",
                            methods=(ISP, IMS))
    wd_choices: str = _f("", "ISP/IMS: comma-separated weight decays drawn per denoiser "
                         "('' = the main weight decay)", methods=(ISP, IMS))
    margin: float = _f(-1.0, "ISP: stop the rounds when within this sparsity of the target; -1 = the "
                       f"variant's own ({RELEASED_MARGIN} released, {DEFAULT_MARGIN} paper/soup)", methods=(ISP,))
    rewind_step: int = _f(0, "IMP: rewind kept weights to their values after this many steps "
                          "(0 = the pre-trained weights)", methods=(IMP,))
    prune_after: str = _f("pretrained", "OMP: prune the 'pretrained' weights or the 'finetuned' ones "
                          "(after one budget of dense fine-tuning)", choices=("pretrained", "finetuned"),
                          methods=(OMP,))
    gmp_interval: int = _f(0, "GMP: steps between pruning events; 0 = spread the events over the first "
                           "gmp_end of the budget", methods=(GMP,))
    gmp_end: float = _f(0.75, "GMP: fraction of the budget by which the target is reached", methods=(GMP,))
    soup_size: int = _f(4, "IMS: weak models K in the soup", methods=(IMS,))
    soup_steps: int = _f(100, "IMS: training steps of each weak model", methods=(IMS,))
    soup_sparsities: str = _f("spread", "IMS: the ingredients' sparsities: 'spread' (evenly spaced up to "
                              "--sparsity: S/K, 2S/K, ..., S), 'same' (all at --sparsity) or K comma-separated "
                              "values", methods=(IMS,))
    soup: str = _f("greedy", "IMS: 'greedy' (ingredients by validation score, each kept only if the soup's "
                   "validation score does not drop) or 'uniform' soup", choices=("uniform", "greedy"), methods=(IMS,))

    def ingredient_sparsities(self) -> list[float]:
        """IMS: the sparsity of each of the ``soup_size`` ingredients (see ``soup_sparsities``)."""
        if self.soup_sparsities == "same":
            return [self.sparsity] * self.soup_size
        if self.soup_sparsities == "spread":
            return [self.sparsity * (k + 1) / self.soup_size for k in range(self.soup_size)]
        return [float(x) for x in self.soup_sparsities.split(",")]

    def wd_list(self) -> list[float]:
        """``wd_choices`` parsed (empty: use the main weight decay)."""
        return [float(x) for x in self.wd_choices.split(",") if x.strip()]

    def validate(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (0.0 <= self.sparsity < 1.0) or not math.isfinite(self.sparsity):
            raise SettingsError(f"target sparsity must be in [0, 1), got {self.sparsity}")
        if self.method in (ISP, IMP, GMP) and not 0.0 < self.step < 1.0:
            raise SettingsError(f"step must be in (0, 1), got {self.step}")
        if self.merge not in MERGE_RULES:
            raise SettingsError(f"unknown merge rule {self.merge!r}; choose one of {', '.join(MERGE_RULES)}")
        if self.variant not in VARIANTS:
            raise SettingsError(f"unknown ISP variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.t < 0 or not 0.0 < self.t_fraction <= 10.0:
            raise SettingsError(f"t must be >= 0 and t_fraction in (0, 10], got t={self.t}, "
                                f"t_fraction={self.t_fraction}")
        if self.denoisers < 0 or self.lookahead < 0:
            raise SettingsError(f"denoisers and lookahead must be >= 0, got {self.denoisers}, {self.lookahead}")
        if self.method == ISP and self.denoisers > 0 and self.lookahead == 0:
            raise SettingsError("ISP with denoisers needs lookahead >= 1 (or set denoisers 0)")
        if not 0.0 < self.subset_fraction <= 1.0:
            raise SettingsError(f"subset_fraction must be in (0, 1], got {self.subset_fraction}")
        if not 0.0 < self.lr_mult_min <= self.lr_mult_max:
            raise SettingsError(f"need 0 < lr_mult_min <= lr_mult_max, got {self.lr_mult_min}, {self.lr_mult_max}")
        try:
            wds = self.wd_list()
        except ValueError:
            raise SettingsError(f"wd_choices must be comma-separated numbers, got {self.wd_choices!r}") from None
        if any(w < 0 for w in wds):
            raise SettingsError(f"weight decays must be >= 0, got {self.wd_choices!r}")
        if not (0.0 <= self.margin < 0.5 or self.margin == -1.0):
            raise SettingsError(f"margin must be in [0, 0.5) or -1 (the variant's own), got {self.margin}")
        if self.rewind_step < 0:
            raise SettingsError(f"rewind_step must be >= 0, got {self.rewind_step}")
        if self.prune_after not in ("pretrained", "finetuned"):
            raise SettingsError(f"prune_after must be 'pretrained' or 'finetuned', got {self.prune_after!r}")
        if self.gmp_interval < 0 or not 0.0 < self.gmp_end <= 1.0:
            raise SettingsError(f"gmp_interval must be >= 0 and gmp_end in (0, 1], got "
                                f"{self.gmp_interval}, {self.gmp_end}")
        if self.soup_size < 1 or self.soup_steps < 1:
            raise SettingsError(f"soup_size and soup_steps must be >= 1, got {self.soup_size}, {self.soup_steps}")
        try:
            ing = self.ingredient_sparsities()
        except ValueError:
            raise SettingsError(f"soup_sparsities must be 'spread', 'same' or comma-separated numbers, got "
                                f"{self.soup_sparsities!r}") from None
        if len(ing) != self.soup_size or not all(0.0 <= x < 1.0 for x in ing):
            raise SettingsError(f"soup_sparsities: need {self.soup_size} values in [0, 1) (one per ingredient), "
                                f"got {self.soup_sparsities!r}")
        if self.soup not in ("uniform", "greedy"):
            raise SettingsError(f"soup must be 'uniform' or 'greedy', got {self.soup!r}")

    def levels(self) -> list[float]:
        """The sparsity levels s_1 < s_2 < ... = S an iterative method passes through.

        Each level removes ``step`` of the weights still kept, the last one is clipped to the target.
        ISP stops as soon as it is within ``margin`` of the target (see :func:`sparsity_levels`).
        """
        margin = self.isp_margin() if self.method == ISP else 0.0
        return sparsity_levels(self.sparsity, self.step, margin)

    def isp_margin(self) -> float:
        """ISP's margin: the one set, or the variant's own when -1."""
        if self.margin != -1.0:
            return self.margin
        return RELEASED_MARGIN if self.variant == "released" else DEFAULT_MARGIN


def sparsity_levels(target: float, step: float, margin: float = 0.0, start: float = 0.0) -> list[float]:
    """Levels from ``start`` towards ``target``, removing ``step`` of the kept weights each time.

    The sequence ends with ``target`` itself (the final exact prune); intermediate levels within
    ``margin`` of the target are skipped.
    """
    out: list[float] = []
    s = start
    while s < target - margin - 1e-12:
        s = min(target, 1.0 - (1.0 - s) * (1.0 - step))
        out.append(s)
        if len(out) > 10_000:  # pragma: no cover - guarded by validate()
            raise SettingsError("too many pruning rounds")
    if out and out[-1] != target and target - out[-1] <= margin + 1e-12:
        out[-1] = target
    elif target > start and (not out or out[-1] != target):
        out.append(target)
    return out


def main_budget(s: Settings, steps_per_epoch: int) -> tuple[int, int]:
    """(T, planned): the main model's budget T in optimizer steps and the planned total of all steps.

    Without ``match_steps``, T comes from ``epochs`` / ``max_steps``. With ``match_steps = N``, T is set
    so that the method's planned total is N (or the nearest below it): IMP T + K·(T − r) (K pruning
    rounds, rewind step r); OMP of fine-tuned weights 2·T; ISP T + rounds·N·C (the released variant
    plans its fewest rounds: more lagging rounds are paid for by stopping the fine-tuning early); IMS
    T + K·soup_steps; the others T.
    """
    tr, pr = s.train, s.prune
    if pr.method == ISP:
        rounds = len(released_levels(pr.sparsity, pr.step, pr.isp_margin()) if pr.variant == "released"
                     else pr.levels())
        extra = rounds * pr.denoisers * pr.lookahead
    else:
        extra = pr.soup_size * pr.soup_steps if pr.method == IMS else 0
    k = len(pr.levels()) if pr.method == IMP else 0
    if tr.match_steps <= 0:
        T = tr.total_steps(steps_per_epoch)
    elif pr.method == IMP:
        T = (tr.match_steps + k * pr.rewind_step) // (k + 1)
    elif pr.method == OMP and pr.prune_after == "finetuned":
        T = tr.match_steps // 2
    else:
        T = tr.match_steps - extra
    if T < 1:
        raise SettingsError(f"--match-steps {tr.match_steps} leaves no steps for the main model of {pr.method} "
                            f"({extra} steps go to denoisers/ingredients)")
    if pr.method == IMP:
        planned = T + k * (T - pr.rewind_step)
    elif pr.method == OMP and pr.prune_after == "finetuned":
        planned = 2 * T
    else:
        planned = T + extra
    return T, planned


def released_levels(target: float, step: float, margin: float) -> list[float]:
    """The fewest pruning rounds of the released ISP: sparsities after each round if every round removed
    exactly ``step`` of the kept weights (capped at ``target``), until within ``margin`` of ``target``.

    The real rounds lag behind (a weight goes only if every denoiser prunes it), so a run usually
    needs more rounds; this lower bound is what the budget check can promise.
    """
    out: list[float] = []
    s = 0.0
    while target - s >= margin and s < target:
        s = min(target, 1.0 - (1.0 - s) * (1.0 - step))
        out.append(s)
    return out


@dataclass
class DataSettings:
    """Which task and data."""

    task: str = _f("default", "GLUE task name (sst2, mrpc, ...), 'default' (the embedded demo task), "
                   "a table file (.csv/.tsv/.jsonl/.parquet), a dataset folder (datasets' save_to_disk or a "
                   "Parquet export with train/validation/test files), or an image task for CLIP (cifar10, cifar100, "
                   "mnist, svhn, gtsrb, eurosat, image_folder, ...; with --data-dir)")
    data_dir: str = _f("", "directory holding the GLUE task's files")
    text_column: str = _f("sentence", "table: column with the text")
    text_pair_column: str = _f("", "table: column with the second text of a pair ('' = none)")
    label_column: str = _f("label", "table: column with the label")
    train_file: str = _f("", "your own training table (.csv/.tsv/.jsonl/.parquet); same as --task FILE")
    validation_file: str = _f("", "your own validation table ('' = held out of the training data)")
    test_file: str = _f("", "your own test table ('' = held out of the training data)")
    num_labels: int = _f(0, "number of classes when integer label ids do not all occur in the training data "
                         "(0 = the distinct labels, which must then be 0..K-1)")
    val_fraction: float = _f(0.1, "fraction of the training set held out for validation when the task "
                             "has no labelled split apart from the one used as test")
    max_train_examples: int = _f(0, "use at most this many training examples (0 = all)")
    max_eval_examples: int = _f(0, "use at most this many validation/test examples (0 = all)")

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


@dataclass
class RunSettings:
    """Where and how a run executes (none of these change its results, except ``model``)."""

    model: str = _f("", "Hugging Face checkpoint directory (config.json + model.safetensors); "
                    "'' = the embedded default model")
    out: str = _f("runs", "directory holding the run directories", hash=False, aliases=("--output-dir",))
    threads: int = _f(0, "threads for kernels and BLAS (0 = the default: INSTANTSOUP_NUM_THREADS, "
                      "else OMP_NUM_THREADS, else all available cores)", hash=False)
    resume: bool = _f(True, "continue an interrupted run from its last finished round (--no-resume: "
                      "DELETE the run directory, finished rounds and ticket included, and start over)", hash=False)
    progress: bool = _f(True, "show progress bars", hash=False)
    wait: bool = _f(True, "when another process works in the same run directory, wait for it "
                    "(--no-wait: refuse at once)", hash=False)
    preset: str = _f("", "start from Table 1 of the paper: 'paper-bert' (lr 2e-5, 10 epochs, step 0.10, "
                     "look-ahead 30, wd 0, 4 denoisers) or 'paper-clip' (lr 1e-5, 22 epochs, step 0.15, look-ahead "
                     "50, wd 0.1, 5 denoisers), both batch 128, warm-up 500, clipping 1.0; options given "
                     "explicitly win. Without a preset a CLIP model gets paper-clip's lr, weight decay, step, "
                     "look-ahead and denoisers", hash=False, choices=("",) + tuple(PRESETS))
    ray: str = _f("", "ISP: run each round's denoisers as parallel Ray tasks on the cluster at this address "
                  "('auto': the cluster started on this machine; 'local': start one; needs instantsoup[ray]; "
                  "same results as without)", hash=False)

    def validate(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise SettingsError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.model:
            check_model_dir(self.model)
        if self.threads < 0:
            raise SettingsError(f"threads must be >= 0, got {self.threads}")
        if self.ray:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise SettingsError("ray: needs Ray: pip install 'instantsoup[ray]' (here and on every node)")


def with_values(settings: Settings, values: dict[str, dict[str, Any]], keep: Any = ()) -> Settings:
    """``settings`` with ``values`` ({"train": {...}, "prune": {...}}) set, except the fields in ``keep``."""
    parts = {part: dataclasses.replace(getattr(settings, part), **{k: v for k, v in vals.items() if k not in keep})
             for part, vals in values.items()}
    return dataclasses.replace(settings, **parts)


def with_preset(settings: Settings, preset: str, keep: Any = ()) -> Settings:
    """``settings`` with a preset's values (``PRESETS``), except the fields named in ``keep`` (the
    options a user gave explicitly); the preset's name is recorded in ``settings.run.preset``."""
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = with_values(settings, PRESETS[preset], keep)
    return dataclasses.replace(out, run=dataclasses.replace(out.run, preset=preset))


def with_family_defaults(settings: Settings, model_type: str | None, keep: Any = ()) -> Settings:
    """A CLIP model without a preset: paper-clip's lr, weight decay, step, look-ahead and denoisers
    (``CLIP_DEFAULTS``) replace the defaults, which are BERT's; fields in ``keep`` stay."""
    if model_type != "clip" or settings.run.preset:
        return settings
    vals = {part: {k: v for k, v in d.items() if k in CLIP_DEFAULTS} for part, d in PRESETS["paper-clip"].items()}
    return with_values(settings, vals, keep)


def check_types(obj: Any) -> None:
    """Refuse fields of the wrong type (``epochs="3"``, ``denoisers=2.0``) with a SettingsError.

    An int is accepted where a float is expected; a bool is never taken for a number.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        typ, v = hints[f.name], getattr(obj, f.name)
        ok = (isinstance(v, bool) if typ is bool
              else isinstance(v, numbers.Real) and not isinstance(v, bool) if typ is float
              else isinstance(v, numbers.Integral) and not isinstance(v, bool) if typ is int
              else isinstance(v, typ))
        if not ok:
            raise SettingsError(f"{type(obj).__name__}.{f.name}: expected {typ.__name__}, "
                                f"got {type(v).__name__} {v!r}")


def check_model_dir(path: str) -> None:
    """Refuse a model path that is not a Hugging Face checkpoint directory."""
    if not os.path.isdir(path):
        raise SettingsError(f"model path {path!r} is not a directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SettingsError(f"model path {path!r} has no config.json (expected a Hugging Face checkpoint "
                            "directory: config.json + model.safetensors)")


@dataclass
class Settings:
    """Everything a run needs; ``Settings.validate()`` checks all of it."""

    train: TrainSettings = field(default_factory=TrainSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    data: DataSettings = field(default_factory=DataSettings)
    run: RunSettings = field(default_factory=RunSettings)

    def validate(self) -> None:
        for part in (self.train, self.prune, self.data, self.run):
            check_types(part)
            part.validate()
        if self.prune.method == DENSE and self.prune.sparsity != 0.0:
            raise SettingsError("method 'dense' does not prune; leave sparsity at 0")

    def identity(self) -> dict:
        """The settings that determine a run's results (its hash input)."""
        return {"train": hashable(self.train), "prune": hashable(self.prune, self.prune.method),
                "data": hashable(self.data), "model": self.run.model}


def hashable(obj: Any, method: str | None = None) -> dict:
    """Fields of a settings object that enter the run hash (see module docstring)."""
    out = {}
    for f in dataclasses.fields(obj):
        h = f.metadata.get("hash", True)
        if not h or (isinstance(h, tuple) and getattr(obj, f.name) == h[1]):
            continue
        ms = f.metadata.get("methods")
        if method is not None and ms is not None and method not in ms:
            continue
        out[f.name] = getattr(obj, f.name)
    return out


def check_budget(s: Settings, steps_per_epoch: int) -> dict:
    """Refuse a budget too small for the method's schedule; return the planned schedule.

    Called once the training set's size is known (before any training). Returns a dict with
    ``total_steps``, ``warmup``, and for ISP ``t``, ``levels`` and ``round_steps``.
    """
    tr, pr = s.train, s.prune
    if steps_per_epoch < 1:
        raise SettingsError("the training set is empty (0 steps per epoch)")
    total, planned = main_budget(s, steps_per_epoch)
    warm = tr.warmup(total)
    plan = {"steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup": warm, "planned_steps": planned}
    if tr.match_steps > 0:
        plan["match_steps"] = tr.match_steps
    if warm >= total and warm > 0:
        raise SettingsError(f"warm-up ({warm} steps) does not fit in the budget of {total} steps")
    if pr.method == ISP and pr.variant == "released":
        t = pr.t if pr.t > 0 else max(1, int(round(pr.t_fraction * steps_per_epoch)))
        levels = released_levels(pr.sparsity, pr.step, pr.isp_margin())
        phases = len(levels) + 1  # the main trains before every pruning round and once more before it stops
        need = t * phases * (phases + 1) // 2
        max_rounds = len(levels)  # the most rounds whose main phases t·(1+…+k) leave a fine-tuning step
        while t * (max_rounds + 1) * (max_rounds + 2) // 2 < total:
            max_rounds += 1
        plan.update(t=t, levels=levels, rounds=len(levels), max_rounds=max_rounds)
        if need >= total:
            raise SettingsError(
                f"budget too small for ISP (released): at least {len(levels)} pruning rounds to come within "
                f"{pr.isp_margin()} of sparsity {pr.sparsity} with step {pr.step}; the main model trains "
                f"t*(1+...+{phases}) = {need} steps (t={t}) before the final fine-tuning, but the budget is "
                f"{total} steps ({steps_per_epoch} per epoch); raise --epochs, lower --t / --t-fraction or raise "
                "--step")
    elif pr.method == ISP:
        t = pr.t if pr.t > 0 else max(1, int(round(pr.t_fraction * steps_per_epoch)))
        levels = pr.levels()
        rounds = len(levels)  # one denoised pruning round per level; the last one reaches S
        need = sum(t * (i + 1) for i in range(rounds))
        plan.update(t=t, levels=levels, rounds=rounds, round_steps=[t * (i + 1) for i in range(rounds)])
        if need >= total and rounds > 0:
            raise SettingsError(
                f"budget too small for ISP: {rounds} rounds to reach sparsity {pr.sparsity} with step "
                f"{pr.step} need t*(1+...+{rounds}) = {need} steps (t={t}) before the final fine-tuning, "
                f"but the budget is {total} steps ({steps_per_epoch} per epoch); raise --epochs, lower "
                "--t / --t-fraction or raise --step")
    elif pr.method == GMP:
        levels = pr.levels()
        end = int(pr.gmp_end * total)
        interval = pr.gmp_interval if pr.gmp_interval > 0 else max(1, end // max(1, len(levels)))
        if interval * len(levels) > total:
            raise SettingsError(f"budget too small for GMP: {len(levels)} pruning events every {interval} "
                                f"steps need {interval * len(levels)} steps, the budget is {total}")
        plan.update(levels=levels, interval=interval)
    elif pr.method == IMP:
        levels = pr.levels()
        if pr.rewind_step >= total:
            raise SettingsError(f"rewind_step {pr.rewind_step} is not inside the budget of {total} steps")
        plan.update(levels=levels, rounds=len(levels))
    return plan


# ----------------------------------------------------------------------------------------------
# the command line, generated from the dataclasses

def _type_of(f: dataclasses.Field, owner: type) -> type:
    hints = typing.get_type_hints(owner)
    return hints[f.name]


def _recording(base: type) -> type:
    """An argparse action class that also records its dest in ``namespace.explicit`` (options given)."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            super().__call__(parser, namespace, values, option_string)
            if not hasattr(namespace, "explicit"):
                namespace.explicit = set()
            namespace.explicit.add(self.dest)

    return Recording


_STORE = _recording(argparse._StoreAction)
_BOOL = _recording(argparse.BooleanOptionalAction)


def explicit_options(ns: argparse.Namespace) -> set[str]:
    """Fields whose options were given on the command line (parsed by :func:`add_arguments`'s options)."""
    return set(getattr(ns, "explicit", set()))


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--field-name`` option per field of the settings dataclass ``cls`` (plus its aliases,
    e.g. transformers' Trainer names such as ``--learning-rate``); choices are listed in ``--help``;
    the options given are recorded, see :func:`explicit_options`."""
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = _type_of(f, cls)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flags = [f.metadata.get("flag") or "--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        help_ = f.metadata.get("help", "") + f" (default: {default!r})"
        if typ is bool:
            group.add_argument(*flags, dest=f.name, action=_BOOL, default=default,
                               help=help_)
        else:
            choices = f.metadata.get("choices")
            group.add_argument(*flags, dest=f.name, action=_STORE, type=typ, default=default,
                               metavar=None if choices else typ.__name__.upper(), choices=choices, help=help_)


SECTIONS = {"train": TrainSettings, "prune": PruneSettings, "data": DataSettings, "run": RunSettings}


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a TOML or JSON file as ``{field: value}``.

    The file holds sections ``[train]``, ``[prune]``, ``[data]``, ``[run]`` (as ``--print-config``
    prints them), or a run's ``settings.json`` (its ``"settings"`` record), or top-level field
    names. Unknown sections or fields and values of the wrong type are a SettingsError.
    """
    import json

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise SettingsError(f"config file {p!r} does not exist")
    try:
        if p.endswith(".toml"):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            with open(p, "rb") as fh:
                raw = tomllib.load(fh)
        elif p.endswith(".json"):
            with open(p, encoding="utf-8") as fh:
                raw = json.load(fh)
        else:
            raise SettingsError(f"config file {p!r}: expected a .toml or .json file")
    except (ValueError, OSError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(e, SettingsError):
            raise
        raise SettingsError(f"config file {p}: {e}") from None
    if isinstance(raw, dict) and isinstance(raw.get("settings"), dict):
        raw = raw["settings"]  # a run's settings.json
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {p}: expected a table of settings")
    owner = {f.name: cls for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(SECTIONS[key])}
            unknown = sorted(set(value) - known)
            if unknown:
                raise SettingsError(f"config file {p}: unknown {key} setting(s) {', '.join(unknown)}")
            out.update(value)
        elif key in owner:
            out[key] = value
        else:
            raise SettingsError(f"config file {p}: unknown setting or section {key!r}")
    for key, value in out.items():
        cls = owner[key]
        try:
            check_types(cls(**{key: value}))
        except SettingsError as e:
            raise SettingsError(f"config file {p}: {e}") from None
    return out


def settings_dict(s: Settings) -> dict[str, dict[str, Any]]:
    """``{"train": {...}, "prune": {...}, "data": {...}, "run": {...}}``: what ``--print-config`` shows
    and ``--config`` reads back."""
    return {name: dataclasses.asdict(getattr(s, name)) for name in SECTIONS}


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    """Build a settings object of class ``cls`` from parsed arguments (missing fields: defaults)."""
    kw = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    return cls(**kw)


def settings_from_dict(d: dict) -> Settings:
    """Inverse of ``dataclasses.asdict(settings)`` (unknown keys are an error)."""
    parts = {}
    for name, cls in (("train", TrainSettings), ("prune", PruneSettings), ("data", DataSettings),
                      ("run", RunSettings)):
        sub = dict(d.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(sub) - known
        if unknown:
            raise SettingsError(f"unknown {name} settings: {', '.join(sorted(unknown))}")
        parts[name] = cls(**sub)
    return Settings(**parts)
