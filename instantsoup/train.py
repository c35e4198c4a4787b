"""Fine-tuning: schedules, a step-indexed data order, evaluation, best checkpoints, cost accounting.

The :class:`Trainer` owns *how* a model is trained (TrainSettings) on a :class:`TaskData`; methods
decide *how long* and *on what* (start/stop step, data subset, learning-rate multiplier). Every batch
is a pure function of (seed, step), so a run restarted at step k sees exactly the batches an
uninterrupted run sees from step k on.

FLOPs (written down once): for a BERT-style encoder with L layers, hidden H, intermediate I, a
batch of B sequences padded to T tokens and K labels, one forward pass costs

    2·B·T·L·(4·H² + 2·H·I)          the six weight matrices of each layer (q, k, v, o, fc1, fc2)
  + 2·B·L·2·T²·H                     attention scores Q·Kᵀ and the weighted sum P·V
  + 2·B·(H² + H·K)                   pooler and classifier

(embeddings, LayerNorm, softmax, GELU and biases are O(B·T·H) and left out). A training step costs
3× a forward pass (forward + backward for activations and weights). Pruned weights are still
multiplied (dense kernels), so the count is the dense count; ``Cost`` also reports the work of
the kept weights alone (``sparse_flops``) for comparison with papers that count it that way.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from instantsoup.settings_base import TrainSettings
from instantsoup.data.metrics import accuracy_metric  # noqa: F401 - public here too
from instantsoup.task import Split, TaskData  # noqa: F401 - public here too (their home: instantsoup.task)

log = logging.getLogger(__name__)


# ---- learning-rate schedule -------------------------------------------------------------------
def lr_at(step: int, *, lr: float, total: int, warmup: int, schedule: str = "linear") -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a budget of ``total`` steps.

    Linear warm-up from 0 over ``warmup`` steps (step k uses lr·(k+1)/warmup), then ``linear`` decay
    to 0 at ``total``, ``cosine`` decay to 0, or ``constant``.
    """
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    span = max(1, total - warmup)
    frac = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "linear":
        return lr * (1.0 - frac)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {schedule!r}")


class StepOrder:
    """The examples of optimizer step k: epoch e = k // steps_per_epoch is a seeded permutation.

    ``indices(k)`` is a pure function of (seed, k), so data order resumes exactly at any step. The
    last batch of an epoch may be smaller. ``pool`` restricts the order to a subset (denoisers).
    ``lengths``: a length-bucketed :class:`instantsoup.data.Batches` over the whole split; its
    epoch plan (over ``pool``, with this seed) gives the batches instead of the plain permutation.
    """

    def __init__(self, n: int, batch_size: int, seed: int, pool: np.ndarray | None = None,
                 lengths: Any = None):
        self.pool = np.arange(n, dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
        if len(self.pool) == 0:
            raise ValueError("StepOrder: empty data")
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(self.pool) / batch_size)
        self._epoch = -1
        self._perm: np.ndarray | None = None
        self._bucketed = None if lengths is None else lengths.take(self.pool, batch_size=batch_size, seed=seed)

    def indices(self, step: int) -> np.ndarray:
        if self._bucketed is not None:
            return self._bucketed.batch_indices(step)
        e, j = divmod(step, self.steps_per_epoch)
        if e != self._epoch:
            self._perm = self.pool[np.random.default_rng([self.seed, e]).permutation(len(self.pool))]
            self._epoch = e
        return self._perm[j * self.batch_size:(j + 1) * self.batch_size]

    @staticmethod
    def subset(n: int, fraction: float, seed: int) -> np.ndarray:
        """A sorted random subset of ``round(fraction·n)`` (at least 1) of range(n)."""
        k = max(1, int(round(fraction * n)))
        return np.sort(np.random.default_rng([seed, 7]).choice(n, size=k, replace=False))


# ---- cost -------------------------------------------------------------------------------------
def model_dims(model: Any) -> dict:
    """L, H, I, K of the trained encoder (``model.cost_dims()`` if the model has it, else its config)."""
    if hasattr(model, "cost_dims"):
        return dict(model.cost_dims())
    cfg = model.config
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    return {"L": int(d.get("num_hidden_layers", 0)), "H": int(d.get("hidden_size", 0)),
            "I": int(d.get("intermediate_size", 0)), "K": int(getattr(model, "num_labels", 2))}


def batch_shape(model: Any, batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(B, T): sequences and tokens per sequence of a batch (images: the model's patches + 1)."""
    if "input_ids" in batch:
        B, T = batch["input_ids"].shape
        return int(B), int(T)
    return int(batch["pixel_values"].shape[0]), int(getattr(model, "num_tokens", 1))


def forward_flops(dims: Mapping[str, int], batch: int, tokens: int, density: float = 1.0) -> float:
    """FLOPs of one forward pass over a (batch, tokens) batch (see the module docstring)."""
    L, H, I, K = dims["L"], dims["H"], dims["I"], dims["K"]
    matmul = 2.0 * batch * tokens * L * (4 * H * H + 2 * H * I) * density
    attn = 2.0 * batch * L * 2 * tokens * tokens * H
    head = 2.0 * batch * (H * H + H * K)
    return matmul + attn + head


@dataclass
class StageCost:
    steps: int = 0
    examples: int = 0
    tokens: int = 0
    flops: float = 0.0
    sparse_flops: float = 0.0
    eval_flops: float = 0.0
    seconds: float = 0.0


@dataclass
class Cost:
    """Work done, per stage ("finetune", "round_003", "denoisers", "eval", ...) and in total."""

    stages: dict[str, StageCost] = field(default_factory=dict)

    def stage(self, name: str) -> StageCost:
        return self.stages.setdefault(name, StageCost())

    def total(self) -> StageCost:
        t = StageCost()
        for s in self.stages.values():
            for f in dataclasses.fields(StageCost):
                setattr(t, f.name, getattr(t, f.name) + getattr(s, f.name))
        return t

    def to_dict(self) -> dict:
        return {"total": dataclasses.asdict(self.total()),
                "stages": {k: dataclasses.asdict(v) for k, v in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Cost":
        return cls({k: StageCost(**v) for k, v in d.get("stages", {}).items()})


def training_cost(cost: Cost) -> dict:
    """Training work so far, evaluation left out: optimizer steps, examples, FLOPs, seconds."""
    t = StageCost()
    for name, s in cost.stages.items():
        if name != "eval":
            for f in ("steps", "examples", "tokens", "flops", "sparse_flops", "seconds"):
                setattr(t, f, getattr(t, f) + getattr(s, f))
    return {"steps": t.steps, "examples": t.examples, "flops": t.flops, "seconds": t.seconds}


# ---- the trainer ------------------------------------------------------------------------------
@dataclass
class Best:
    """Best validation score seen (of one stage) and its weights."""

    score: float = -math.inf
    step: int = -1
    metrics: dict = field(default_factory=dict)
    weights: dict[str, np.ndarray] | None = None


class Trainer:
    """Trains a model on ``task`` with ``settings``; the schedule spans ``total_steps``.

    Methods call :meth:`train` for a range of global steps; the learning rate follows the one
    schedule of the whole budget (ISP is one pass), evaluation happens every epoch (or every
    ``eval_every`` steps) on the validation split, and all costs land in ``self.cost``.
    """

    def __init__(self, settings: TrainSettings, task: TaskData, *, total_steps: int | None = None,
                 progress: bool = True, cost: Cost | None = None):
        self.s = settings
        self.task = task
        self._lengths = None  # text: one length-bucketed Batches over the training split
        if settings.length_buckets > 0 and isinstance(task.train, Split):  # images (ImageSplit): no lengths
            from instantsoup.data import Batches

            tr = task.train
            self._lengths = Batches(tr.input_ids if tr.token_type_ids is None else (tr.input_ids, tr.token_type_ids),
                                    None, settings.batch_size, settings.seed, bucket=True,
                                    bucket_batches=settings.length_buckets, pad_id=task.pad_id)
        self.order = self.make_order(settings.seed)
        self.steps_per_epoch = self.order.steps_per_epoch
        self.total_steps = total_steps if total_steps is not None else settings.total_steps(self.steps_per_epoch)
        self.warmup = settings.warmup(self.total_steps)
        self.eval_interval = settings.eval_every if settings.eval_every > 0 else self.steps_per_epoch
        self.progress = progress
        self.cost = cost if cost is not None else Cost()
        self.history: list[dict] = []
        self.eval_batch_size = max(64, settings.batch_size)
        self.scalars: Callable[[dict], None] | None = None  # e.g. a TensorBoard writer (methods.common)

    def make_order(self, seed: int, pool: np.ndarray | None = None) -> StepOrder:
        """The step-indexed data order over the training split (or its subset ``pool``): length-
        bucketed for text when ``length_buckets`` > 0, else a plain seeded permutation."""
        return StepOrder(len(self.task.train), self.s.batch_size, seed, pool=pool, lengths=self._lengths)

    # schedule
    def lr(self, step: int, total: int | None = None, warmup: int | None = None) -> float:
        return lr_at(step, lr=self.s.lr, total=self.total_steps if total is None else total,
                     warmup=self.warmup if warmup is None else warmup, schedule=self.s.schedule)

    def train(self, model: Any, opt: Any, start: int, stop: int, *, stage: str = "finetune",
              order: StepOrder | None = None, lr_mult: float = 1.0, lr_offset: int = 0,
              schedule_total: int | None = None, warmup: int | None = None, seed: int | None = None,
              evaluate: bool = True, best: Best | None = None, desc: str | None = None) -> float:
        """Train global steps [start, stop); return the mean loss.

        ``order``: the data order (default: the whole training set); ``lr_offset`` shifts the step
        used for the schedule (denoisers use the main model's step); ``schedule_total`` overrides
        the schedule length and ``warmup`` its warm-up steps (IMS's ingredients have schedules of
        their own); ``seed`` seeds dropout for this call
        (default: derived from the settings' seed and ``start``); ``best``: track the best
        validation score into it.
        """
        if stop <= start:
            return float("nan")
        order = order or self.order
        dims = model_dims(model)
        model.train(True)
        model.seed(int(np.random.default_rng([self.s.seed, start, 1]).integers(2**31)) if seed is None else seed)
        st = self.cost.stage(stage)
        mgn = self.s.max_grad_norm if self.s.max_grad_norm > 0 else None
        losses = []
        density = _density(model)  # masks are fixed within one call
        bar = _bar(stop - start, desc or stage, self.progress, leave=evaluate)  # stage bars stay, look-aheads go
        t0 = time.perf_counter()
        log_from, log_t0, lr = 0, t0, 0.0  # the training record covers losses[log_from:]
        try:
            for step in range(start, stop):
                idx = order.indices(step)
                batch, labels = self.task.train.collate(idx, self.task.pad_id)
                lr = self.lr(step + lr_offset, schedule_total, warmup) * lr_mult
                loss = opt.train_step(batch, labels, lr=lr, max_grad_norm=mgn,
                                      label_smoothing=self.s.label_smoothing)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"{stage}: loss is {loss} at step {step} (lr {lr:.3g})")
                losses.append(loss)
                B, T = batch_shape(model, batch)
                st.steps += 1
                st.examples += B
                st.tokens += B * T
                f = forward_flops(dims, B, T)
                st.flops += 3 * f
                st.sparse_flops += 3 * forward_flops(dims, B, T, density=density)
                bar.update(1)
                if len(losses) % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", lr=f"{lr:.2e}", refresh=False)
                due = (step + 1) % self.eval_interval == 0 or step + 1 == self.total_steps
                if evaluate and (due or step + 1 == stop):
                    self._log_training(stage, step + 1, losses[log_from:], lr, B, log_t0)
                    log_from, log_t0 = len(losses), time.perf_counter()
                if evaluate and due:
                    st.seconds += time.perf_counter() - t0
                    self._evaluate_and_track(model, step + 1, stage, best)
                    t0 = time.perf_counter()
                    model.train(True)
        finally:
            st.seconds += time.perf_counter() - t0
            bar.close()
        return float(np.mean(losses))

    def _log_training(self, stage: str, step: int, losses: list[float], lr: float, batch: int, t0: float) -> None:
        """A ``train`` record in the history: mean training loss of the steps since the last record,
        the learning rate of the last step, and throughput (steps and examples per second; an
        evaluation in between is not counted)."""
        if not losses:
            return
        dt = max(time.perf_counter() - t0, 1e-9)
        rec = {"event": "train", "stage": stage, "step": step, "epoch": step / self.steps_per_epoch,
               "loss": float(np.mean(losses)), "lr": float(lr), "steps": len(losses),
               "steps_per_second": len(losses) / dt, "examples_per_second": len(losses) * batch / dt}
        self.history.append(rec)
        if self.scalars is not None:
            self.scalars(rec)

    def _evaluate_and_track(self, model: Any, step: int, stage: str, best: Best | None) -> dict:
        metrics = self.evaluate(model, "validation")
        rec = {"event": "eval", "stage": stage, "step": step, "epoch": step / self.steps_per_epoch,
               "sparsity": _sparsity(model), **{f"val_{k}": v for k, v in metrics.items()}}
        self.history.append(rec)
        if self.scalars is not None:
            self.scalars(rec)
        log.info("%s step %d: %s", stage, step, metrics)
        if best is not None:
            score = metrics[self.task.main_metric]
            if score > best.score:
                best.score, best.step, best.metrics = score, step, dict(metrics)
                best.weights = {k: v.copy() for k, v in model.state_dict().items()}
        return metrics

    def evaluate(self, model: Any, split: str = "validation") -> dict:
        """The task metric on a split (``validation`` or ``test``); the model is left in eval mode."""
        data: Split | None = getattr(self.task, split)
        if data is None or len(data) == 0:
            return {}
        t0 = time.perf_counter()
        st = self.cost.stage("eval")
        dims = model_dims(model)

        def count(batch: Mapping[str, np.ndarray]) -> None:
            st.eval_flops += forward_flops(dims, *batch_shape(model, batch))

        preds = predict(model, data, self.eval_batch_size, self.task.pad_id, self.task.is_regression, count)
        st.seconds += time.perf_counter() - t0
        return {k: float(v) for k, v in self.task.metric(preds, data.labels).items()}


def predict(model: Any, data: Split, batch_size: int = 64, pad_id: int = 0,
            regression: bool = False, on_batch: Callable[[dict], None] | None = None) -> np.ndarray:
    """Predictions (N,) of ``model`` on ``data`` (class ids, or values for regression).

    Text is batched by length (little padding); ``on_batch(batch)`` sees every batch run.
    """
    model.train(False)
    order = np.argsort([len(r) for r in data.input_ids], kind="stable")  # pad little
    out = np.empty(len(data), dtype=np.float32 if regression else np.int64)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch, _ = data.collate(idx, pad_id)
        if on_batch is not None:
            on_batch(batch)
        logits = model.forward(batch)
        out[idx] = logits[:, 0] if regression else np.argmax(logits, axis=1)
    return out


def correct_bits(model: Any, task: TaskData, split: str, batch_size: int = 64) -> str:
    """Per-example correctness (prediction == label) of a classifier on a split of ``task``, packed
    (:func:`instantsoup.stats.pack_bits`): what paired statistics over runs need."""
    from instantsoup.stats import pack_bits

    data = getattr(task, split)
    return pack_bits(predict(model, data, batch_size, task.pad_id) == np.asarray(data.labels))


def _density(model: Any) -> float:
    masks = getattr(model, "masks", None)
    if not masks:
        return 1.0
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    total = sum(m.size for m in masks.values())
    return kept / max(1, total)


def _sparsity(model: Any) -> float:
    return 1.0 - _density(model)


def tensorboard_scalars(log_dir: Any) -> Callable[[dict], None] | None:
    """A ``Trainer.scalars`` hook writing the history's ``train`` and ``eval`` records as TensorBoard
    scalars (``<stage>/train_loss``, ``<stage>/lr``, ``<stage>/examples_per_second``,
    ``<stage>/val_<metric>``) into an event file in ``log_dir``; None when the ``tensorboard``
    package is missing. Each record is appended and the file closed again (no writer thread)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        return None
    import os
    import socket
    from pathlib import Path

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    path = Path(log_dir) / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{id(log_dir)}"

    def append(event: Any) -> None:
        with open(path, "ab") as f:
            RecordWriter(f).write(event.SerializeToString())

    append(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(rec: dict) -> None:
        stage = rec.get("stage", "train")
        if rec["event"] == "train":
            values = {"train_loss": rec["loss"], "lr": rec["lr"], "examples_per_second": rec["examples_per_second"]}
        else:
            values = {k: v for k, v in rec.items() if k.startswith("val_") and isinstance(v, (int, float))}
        summary = Summary(value=[Summary.Value(tag=f"{stage}/{k}", simple_value=float(v)) for k, v in values.items()])
        append(Event(wall_time=time.time(), step=int(rec["step"]), summary=summary))

    return write


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, desc: str, enabled: bool, leave: bool = True) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=leave)


def copy_weights(model: Any) -> dict[str, np.ndarray]:
    """A copy (not views) of the model's weights."""
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
