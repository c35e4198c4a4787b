"""The result of a pruning method: masks, final weights, metrics, per-round history and cost.

``Ticket.export(dir, model)`` writes the files a user keeps (DESIGN.md section 5):

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
from instantsoup.train import Cost

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "added_tokens.json", "preprocessor_config.json")


@dataclass
class Ticket:
    """A lottery ticket (or a dense result), as returned by every method.

    ``masks``: name -> (out, in) uint8, 1 = kept (all prunable weights; all ones for dense);
    ``weights``: the final state dict (float32, pruned entries exactly 0);
    ``metrics``: ``val_*`` (best/final on the validation split) and ``test_*``;
    ``history``: one record per event (evaluations, rounds with the denoisers' and merged masks'
    statistics); ``cost``: :class:`~instantsoup.train.Cost`.
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

        ``model``'s weights and masks are overwritten with the ticket's.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.save_masks(out / "masks.safetensors")
        if model is not None and self.weights is not None:
            model.set_masks(self.masks)
            model.load_state_dict(self.weights)
            ck = runs.checkpoint_dir(out)
            if ck.exists():
                shutil.rmtree(ck)
            tmp = out / ".tmp-checkpoint"
            if tmp.exists():
                shutil.rmtree(tmp)
            model.save_pretrained(str(tmp))
            if self.tokenizer_dir:
                for name in TOKENIZER_FILES:
                    src = Path(self.tokenizer_dir) / name
                    if src.exists():
                        shutil.copy2(src, tmp / name)
            os.replace(tmp, ck)
        runs.write_json(out / "metrics.json", {"method": self.method, "sparsity": self.sparsity,
                                               "target_sparsity": self.target_sparsity, **self.metrics,
                                               "cost": self.cost.to_dict()})
        runs.write_json(out / "ticket.json", self.to_record())
        log.info("exported %s ticket to %s", self.method, out)
        return out

    def to_record(self) -> dict:
        return {"method": self.method, "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                "metrics": self.metrics, "history": self.history, "cost": self.cost.to_dict(),
                "settings": self.settings, "base_model": self.base_model,
                "tokenizer_dir": self.tokenizer_dir, "layer_sparsity": layer_sparsity(self.masks)}

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
                   base_model=rec.get("base_model", ""), tokenizer_dir=rec.get("tokenizer_dir"))


def _load_masks(path: Path) -> Any:
    try:
        from instantsoup import MaskSet  # type: ignore[attr-defined]

        return MaskSet.load(path)
    except ImportError:  # pragma: no cover - before the pruning module exists
        return runs.load_arrays(path)


def layer_sparsity(masks: Any) -> dict[str, float]:
    """Fraction masked per prunable weight."""
    return {k: 1.0 - float(np.count_nonzero(v)) / max(1, np.size(v)) for k, v in masks.items()}
