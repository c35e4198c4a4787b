"""Tables and PNG plots from run directories (or tickets): accuracy vs sparsity, per-layer sparsity,
mask overlap between methods, cost."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from instantsoup import runs
from instantsoup.masks import MaskSet

log = logging.getLogger(__name__)


def find_tickets(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Ticket folders under ``paths`` (a run dir, a ticket dir, or a folder of run dirs)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "ticket.json").exists():
            out.append(p)
        elif (runs.ticket_path(p) / "ticket.json").exists():
            out.append(runs.ticket_path(p))
        else:
            out.extend(sorted(q.parent for q in p.glob("*/ticket/ticket.json")))
    return out


def load_rows(ticket_dirs: Iterable[Path]) -> list[dict]:
    """One summary row per ticket (method, sparsity, metrics, steps, FLOPs, seconds) + its path."""
    rows = []
    for d in ticket_dirs:
        rec = runs.read_json(Path(d) / "ticket.json")
        tot = rec.get("cost", {}).get("total", {})
        rows.append({"method": rec["method"], "target_sparsity": rec["target_sparsity"],
                     "sparsity": rec["sparsity"], **rec.get("metrics", {}), "steps": tot.get("steps", 0),
                     "examples": tot.get("examples", 0), "flops": tot.get("flops", 0.0),
                     "seconds": tot.get("seconds", 0.0), "path": str(d),
                     "run": Path(d).parent.name if Path(d).name == "ticket" else Path(d).name,
                     "layer_sparsity": rec.get("layer_sparsity", {})})
    return rows


def main_metric(rows: list[dict], split: str = "test") -> str | None:
    """The metric column shown (``test_accuracy`` if present, else the first ``test_*``/``val_*``)."""
    for pre in (split, "val"):
        keys = [k for r in rows for k in r if k.startswith(pre + "_")]
        if f"{pre}_accuracy" in keys:
            return f"{pre}_accuracy"
        if keys:
            return keys[0]
    return None


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table (fixed-width) of the summary rows."""
    metric = main_metric(rows)
    val = main_metric(rows, "val")
    cols = columns or ["method", "run", "sparsity", *([metric] if metric else []),
                       *([val] if val and val != metric else []), "steps", "flops", "seconds"]

    def fmt(c: str, v: Any) -> str:
        if v is None:
            return "-"
        if c == "flops":
            return f"{float(v):.3g}"
        if c == "seconds":
            return f"{float(v):.1f}"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cells = [[fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def _layer_key(name: str) -> str:
    m = re.search(r"layer[s]?\.(\d+)\.(.*)\.weight$", name)
    if not m:
        return name
    part = m.group(2).replace("attention.self.", "").replace("attention.output.dense", "attn_out")
    part = part.replace("intermediate.dense", "fc1").replace("output.dense", "fc2")
    return f"L{m.group(1)}.{part}"


_PARTS = ("query", "key", "value", "attn_out", "fc1", "fc2", "q_proj", "k_proj", "v_proj", "out_proj")


def _layer_order(name: str) -> tuple:
    m = re.search(r"layers?\.(\d+)\.", name)
    part = _layer_key(name).split(".", 1)[-1]
    return (int(m.group(1)) if m else -1, _PARTS.index(part) if part in _PARTS else len(_PARTS), name)


def plot(rows: list[dict], out_dir: str | os.PathLike, overlaps: bool = True) -> list[Path]:
    """Write accuracy_vs_sparsity.png, layer_sparsity.png, mask_overlap.png, cost.png; return paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    metric = main_metric(rows) or "sparsity"
    methods = sorted({r["method"] for r in rows})

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in methods:
        pts = sorted((r["sparsity"], r.get(metric, np.nan)) for r in rows if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
    ax.set_xlabel("sparsity (fraction of prunable weights zero)")
    ax.set_ylabel(metric)
    ax.set_title("accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    files.append(out / "accuracy_vs_sparsity.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    pruned = [r for r in rows if r.get("layer_sparsity") and r["sparsity"] > 0]
    if pruned:
        names = sorted(pruned[0]["layer_sparsity"], key=_layer_order)
        fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names)), 4))
        w = 0.8 / len(pruned)
        for j, r in enumerate(pruned):
            ax.bar(np.arange(len(names)) + j * w, [r["layer_sparsity"].get(n, np.nan) for n in names], w,
                   label=f"{r['method']} {r['sparsity']:.2f}")
        ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2)
        ax.set_xticklabels([_layer_key(n) for n in names], rotation=90, fontsize=7)
        ax.set_ylabel("sparsity")
        ax.set_title("per-layer sparsity")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(out / "layer_sparsity.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

    if overlaps and len(pruned) > 1:
        labels = [f"{r['method']} {r['sparsity']:.2f}" for r in pruned]
        masks = [MaskSet(runs.load_arrays(Path(r["path"]) / "masks.safetensors")) for r in pruned]
        J = np.array([[a.overlap(b)["jaccard"] for b in masks] for a in masks])
        fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.0 * len(labels) + 1.5))
        im = ax.imshow(J, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{J[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="k" if J[i, j] > 0.6 else "w")
        fig.colorbar(im, ax=ax, label="Jaccard overlap of kept weights")
        ax.set_title("mask overlap")
        fig.tight_layout()
        files.append(out / "mask_overlap.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

    fig, axs = plt.subplots(1, 2, figsize=(9, 3.5))
    lab = [f"{r['method']}\n{r['sparsity']:.2f}" for r in rows]
    axs[0].bar(lab, [r["steps"] for r in rows])
    axs[0].set_ylabel("optimizer steps (all stages)")
    axs[1].bar(lab, [r["flops"] / 1e12 for r in rows])
    axs[1].set_ylabel("training TFLOPs (dense count)")
    for a in axs:
        a.tick_params(axis="x", labelsize=7)
    fig.suptitle("cost")
    fig.tight_layout()
    files.append(out / "cost.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    log.info("wrote %s", ", ".join(map(str, files)))
    return files


