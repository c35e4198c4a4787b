"""The result of a pruning method: masks, final weights, metrics, per-round history and cost.

``Ticket.export(dir, model)`` writes the files a user keeps:

    dir/masks.safetensors     HF parameter names -> uint8 (1 = kept), metadata: method, target and
                              achieved sparsity, base model, seeds, instantsoup version
    dir/checkpoint/           config.json + model.safetensors (pruned weights exactly zero) +
                              the tokenizer files of the base model; loads with
                              transformers.AutoModelForSequenceClassification.from_pretrained
    dir/metrics.json          validation/test metrics, sparsity, cost
    dir/ticket.json           everything above in one record + the history
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instantsoup import runs
from instantsoup.digests import TOKENIZER_FILES
from instantsoup.train import Cost

log = logging.getLogger(__name__)


@dataclass
class Ticket:
    """A lottery ticket (or a dense result), as returned by every method.

    ``masks``: name -> (out, in) uint8, 1 = kept (all prunable weights; all ones for dense);
    ``weights``: the final state dict (float32, pruned entries exactly 0);
    ``metrics``: ``val_*`` (best/final on the validation split) and ``test_*``;
    ``history``: one record per event (evaluations, rounds with the denoisers' and merged masks'
    statistics); ``cost``: :class:`~instantsoup.train.Cost`; ``label_names``: the task's class names
    (id i is ``label_names[i]``), written to the exported config.json as ``id2label``/``label2id``.
    """

    method: str
    target_sparsity: float
    masks: Any
    weights: dict[str, np.ndarray] | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)
    settings: dict = field(default_factory=dict)
    base_model: str = ""
    tokenizer_dir: str | None = None
    round_masks: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Achieved sparsity: fraction of prunable weights masked (counted globally)."""
        kept = sum(int(np.count_nonzero(m)) for m in self.masks.values())
        total = sum(int(np.size(m)) for m in self.masks.values())
        return 1.0 - kept / max(1, total)

    def summary(self) -> dict:
        """One flat row for tables: method, sparsity, metrics, steps, FLOPs, seconds."""
        t = self.cost.total()
        return {"method": self.method, "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                **self.metrics, "steps": t.steps, "examples": t.examples, "flops": t.flops,
                "seconds": t.seconds}

    def _metadata(self) -> dict:
        import instantsoup

        seed = self.settings.get("train", {}).get("seed")
        # MaskSet.save's conventions: numbers and lists JSON-encoded (MaskSet.load decodes them)
        return {"method": self.method, "target_sparsity": float(self.target_sparsity),
                "sparsity": f"{self.sparsity:.6f}", "base_model": self.base_model,
                "seeds": [] if seed is None else [int(seed)],
                "precision": self.settings.get("train", {}).get("precision", "fp32"),
                "instantsoup_version": instantsoup.__version__}

    def save_masks(self, path: str | os.PathLike) -> Path:
        """The mask file: safetensors of uint8 masks with metadata (loads with ``safetensors`` alone)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(self.masks, "save"):
            self.masks.save(path, **self._metadata())
        else:
            runs.save_arrays(path, {k: np.asarray(v, np.uint8) for k, v in self.masks.items()}, self._metadata())
        return path

    def export(self, out_dir: str | os.PathLike, model: Any | None = None) -> Path:
        """Write masks, metrics and (given ``model`` of the same architecture) the pruned checkpoint.

        The export is written into a fresh temporary folder next to ``out_dir`` and renamed into
        place: ``out_dir`` is either the old export or the complete new one, never a mix. An existing
        ``out_dir`` is replaced only when it is empty or an earlier instantsoup export (it holds the
        marker file ``.instantsoup-export``); any other folder is refused (``RunDirError``) and left
        untouched. ``model``'s weights and masks are overwritten with the ticket's.
        """
        out = Path(out_dir)
        with runs.replacing_dir(out) as tmp:
            self.save_masks(tmp / "masks.safetensors")
            if model is not None and self.weights is not None:
                model.set_masks(self.masks)
                model.load_state_dict(self.weights)
                ck = runs.checkpoint_dir(tmp)
                model.save_pretrained(str(ck))
                name_labels(ck / "config.json", self.label_names)
                if self.tokenizer_dir:  # read before the old export (maybe the source) is replaced
                    for name in TOKENIZER_FILES:
                        src = Path(self.tokenizer_dir) / name
                        if src.is_file():
                            shutil.copyfile(src, ck / name)
            runs.write_json(tmp / "metrics.json", {"method": self.method, "sparsity": self.sparsity,
                                                   "target_sparsity": self.target_sparsity, **self.metrics,
                                                   "label_names": list(self.label_names),
                                                   "cost": self.cost.to_dict()})
            runs.write_json(tmp / "ticket.json", self.to_record())
        log.info("exported %s ticket to %s", self.method, out)
        return out

    def to_record(self) -> dict:
        return {"method": self.method, "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                "metrics": self.metrics, "history": self.history, "cost": self.cost.to_dict(),
                "settings": self.settings, "base_model": self.base_model,
                "tokenizer_dir": self.tokenizer_dir, "label_names": list(self.label_names),
                "layer_sparsity": layer_sparsity(self.masks)}

    @classmethod
    def load(cls, ticket_dir: str | os.PathLike, with_weights: bool = True) -> "Ticket":
        """Read an exported ticket (masks + record; weights from checkpoint/ when present)."""
        d = Path(ticket_dir)
        rec = runs.read_json(d / "ticket.json")
        masks = _load_masks(d / "masks.safetensors")
        weights = None
        ck = runs.checkpoint_dir(d) / "model.safetensors"
        if with_weights and ck.exists():
            weights = runs.load_arrays(ck)
        return cls(method=rec["method"], target_sparsity=rec["target_sparsity"], masks=masks,
                   weights=weights, metrics=rec.get("metrics", {}), history=rec.get("history", []),
                   cost=Cost.from_dict(rec.get("cost", {})), settings=rec.get("settings", {}),
                   base_model=rec.get("base_model", ""), tokenizer_dir=rec.get("tokenizer_dir"),
                   label_names=list(rec.get("label_names", [])))


def load_ticket(path: str | os.PathLike, seed: int = 0) -> Any:
    """The exported model of a ticket with its masks installed, ready for inference or further
    training (``AdamW`` keeps masked weights at exactly 0).

    ``path``: a ticket directory (masks.safetensors + checkpoint/), or a run directory holding one in
    ``ticket/``. The checkpoint keeps its head and label names (``model.label_names``).
    """
    from instantsoup.models import load_model

    d = Path(path)
    if not (d / "masks.safetensors").is_file() and (runs.ticket_path(d) / "masks.safetensors").is_file():
        d = runs.ticket_path(d)
    masks, ck = d / "masks.safetensors", runs.checkpoint_dir(d)
    for need in (masks, ck / "config.json"):
        if not need.exists():
            raise FileNotFoundError(f"{path}: not a ticket directory ({need} is missing; expected "
                                    "masks.safetensors and checkpoint/ as written by Ticket.export)")
    model = load_model(ck, seed=seed)
    try:
        model.set_masks(_load_masks(masks))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{masks}: does not fit the checkpoint in {ck}: {e}") from None
    return model


def name_labels(config_path: Path, label_names: list[str]) -> None:
    """Write ``id2label``/``label2id`` of ``label_names`` into a classifier's config.json (left as is
    when there are no names or the head has another number of outputs, e.g. CLIP's)."""
    if not label_names:
        return
    cfg = runs.read_json(config_path)
    n = cfg.get("num_labels", len(cfg.get("id2label") or {}))
    if n != len(label_names) or not str(cfg.get("architectures", [""])[0]).endswith("ForSequenceClassification"):
        return
    names = [str(x) for x in label_names]
    if len(set(names)) != len(names):
        raise ValueError(f"label names are not unique: {names}")
    cfg["id2label"] = {str(i): name for i, name in enumerate(names)}
    cfg["label2id"] = {name: i for i, name in enumerate(names)}
    runs.write_json(config_path, cfg)


def _load_masks(path: Path) -> Any:
    try:
        from instantsoup import MaskSet  # type: ignore[attr-defined]

        return MaskSet.load(path)
    except ImportError:  # pragma: no cover - before the pruning module exists
        return runs.load_arrays(path)


def layer_sparsity(masks: Any) -> dict[str, float]:
    """Fraction masked per prunable weight."""
    return {k: 1.0 - float(np.count_nonzero(v)) / max(1, np.size(v)) for k, v in masks.items()}
