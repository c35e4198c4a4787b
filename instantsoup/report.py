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
                     "layer_sparsity": rec.get("layer_sparsity", {}),
                     "seed": rec.get("settings", {}).get("train", {}).get("seed"),
                     "group": _group_key(rec.get("settings", {}))})
    return rows


def _group_key(settings: dict) -> str:
    """The settings that make a run what it is, except the seed and where/how it ran."""
    import json

    keep = {k: dict(v) for k, v in settings.items() if k in ("train", "prune", "data")}
    keep.get("train", {}).pop("seed", None)
    keep["model"] = settings.get("run", {}).get("model", "")
    return json.dumps(keep, sort_keys=True, default=str)


def group_by_seed(rows: list[dict]) -> list[dict]:
    """One row per group of runs that differ only in seed: numbers averaged, ``<metric>_ci`` the
    95 % t half-width over seeds, ``seeds`` and ``n`` the runs; groups in first-seen order."""
    from instantsoup.stats import mean_ci

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("group") or r["path"], []).append(r)
    out = []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
        g = {"method": rs[0]["method"], "target_sparsity": rs[0]["target_sparsity"], "run": rs[0]["run"],
             "path": rs[0]["path"], "layer_sparsity": rs[0].get("layer_sparsity", {}), "n": len(rs),
             "seeds": ",".join(str(r.get("seed")) for r in rs), "paths": [r["path"] for r in rs]}
        keys = [k for k in rs[0] if isinstance(rs[0][k], (int, float)) and not isinstance(rs[0][k], bool)
                and k not in g and k != "seed"]
        for k in keys:
            vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
            g[k], half = mean_ci(vals)
            if k.startswith(("test_", "val_")):
                g[k + "_ci"] = half
        out.append(g)
    return out


def test_majority(rows: list[dict]) -> float | None:
    """Accuracy of always answering the test split's most frequent label, when every row's run has
    the same data settings (read from the first ticket's settings; None when that fails)."""
    import json

    datas = {json.dumps(_ticket_settings(r).get("data", {}), sort_keys=True) for r in rows}
    if len(datas) != 1 or not rows:
        return None
    try:
        from instantsoup.config import DataSettings
        from instantsoup.task import load_task

        st = _ticket_settings(rows[0])
        model = st.get("run", {}).get("model") or ""
        if not model:
            from instantsoup.data import default_model_path

            model = str(default_model_path())
        task = load_task(DataSettings(**st["data"]), model, st["train"]["max_length"], st["train"]["seed"])
        labels = np.asarray(task.test.labels)
        return float(np.bincount(labels).max() / len(labels)) if labels.size and not task.is_regression else None
    except Exception as e:  # noqa: BLE001 - a reference line is optional
        log.info("no majority-class line: %s", e)
        return None


def _ticket_settings(row: dict) -> dict:
    try:
        return runs.read_json(Path(row["path"]) / "ticket.json").get("settings", {})
    except (OSError, ValueError):
        return {}


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
    grouped = any("n" in r for r in rows)
    cols = columns or ["method", "run", *(["n", "seeds"] if grouped else []), "sparsity",
                       *([metric] if metric else []), *([metric + "_ci"] if grouped and metric else []),
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

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in rows:
        if r["method"] == "dense" and np.isfinite(r.get(metric, np.nan)):
            ax.axhline(r[metric], color="k", lw=1, label=f"dense {r[metric]:.3f}" + (
                f" (n={r['n']})" if "n" in r else ""))
            if np.isfinite(r.get(metric + "_ci", np.nan)):
                ax.axhspan(r[metric] - r[metric + "_ci"], r[metric] + r[metric + "_ci"], color="k", alpha=0.08)
            break
    majority = test_majority(rows) if metric.startswith("test_") else None
    if majority is not None:
        ax.axhline(majority, color="gray", ls="--", lw=1, label=f"majority class {majority:.3f}")
    for m in methods:
        if m == "dense":
            continue
        pts = sorted((r["sparsity"], r.get(metric, np.nan), r.get(metric + "_ci", np.nan))
                     for r in rows if r["method"] == m)
        x, y, h = (np.array([p[i] for p in pts], dtype=float) for i in range(3))
        line, = ax.plot(x, y, "o-", label=m)
        if np.isfinite(h).any():
            ax.fill_between(x, y - np.nan_to_num(h), y + np.nan_to_num(h), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("sparsity (fraction of prunable weights zero)")
    ax.set_ylabel(metric + (" (mean ± 95 % CI over seeds)" if any("n" in r for r in rows) else ""))
    ax.set_title("accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
        off = J[~np.eye(len(J), dtype=bool)]
        lo, hi = float(off.min()), float(max(off.max(), off.min() + 1e-3))  # the scale spans the pairs' values
        im = ax.imshow(J, vmin=lo, vmax=hi, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{J[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="k" if (J[i, j] - lo) / (hi - lo) > 0.6 else "w")
        fig.colorbar(im, ax=ax, label="Jaccard overlap of kept weights")
        ax.set_title(f"mask overlap (colour scale {lo:.3f}-{hi:.3f})")
        fig.tight_layout()
        files.append(out / "mask_overlap.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    lab = [f"{r['method']}\n{r['sparsity']:.2f}" for r in rows]
    axs[0].bar(lab, [r["steps"] for r in rows])
    axs[0].set_ylabel("optimizer steps (all stages)")
    axs[1].bar(lab, [r["flops"] / 1e12 for r in rows])
    axs[1].set_ylabel("training TFLOPs (dense count)")
    minutes = max(r["seconds"] for r in rows) >= 120
    axs[2].bar(lab, [r["seconds"] / (60 if minutes else 1) for r in rows])
    axs[2].set_ylabel(f"training wall time ({'minutes' if minutes else 'seconds'})")
    for a in axs:
        a.tick_params(axis="x", labelsize=7)
    fig.suptitle("cost")
    fig.tight_layout()
    files.append(out / "cost.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    log.info("wrote %s", ", ".join(map(str, files)))
    return files




# ---- studies: results files of `instantsoup study` ---------------------------------------------
def is_results_file(path: str | os.PathLike) -> bool:
    """A study's results file (``*.jsonl``), as opposed to run or ticket directories."""
    return Path(path).suffix == ".jsonl" and Path(path).is_file()


def study_groups(records: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Records by (label, target sparsity), each list sorted by seed; labels in file order, each
    label's sparsities ascending (an IMP run records its own level before the lower ones)."""
    out: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        out.setdefault((r["label"], round(float(r["target_sparsity"]), 6)), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    rank = {label: i for i, label in enumerate(dict.fromkeys(label for label, _ in out))}
    return {k: out[k] for k in sorted(out, key=lambda k: (rank[k[0]], k[1]))}


def _correct(r: dict, split: str = "test"):
    from instantsoup.stats import unpack_bits

    return unpack_bits(r[f"{split}_correct"], int(r[f"{split}_n"]))


def study_summary(records: list[dict]) -> list[dict]:
    """One row per (label, target sparsity): seeds, mean ± 95 % CI of test/val accuracy, costs."""
    from instantsoup.stats import mean_ci

    rows = []
    for (label, sp), rs in study_groups(records).items():
        acc, acc_ci = mean_ci([100 * r["test_accuracy"] for r in rs])
        val, val_ci = mean_ci([100 * r["val_accuracy"] for r in rs])
        rows.append({"label": label, "method": rs[0]["method"], "target_sparsity": sp,
                     "sparsity": float(np.mean([r["sparsity"] for r in rs])), "seeds": [r["seed"] for r in rs],
                     "test": acc, "test_ci": acc_ci, "val": val, "val_ci": val_ci,
                     "steps": float(np.mean([r["steps"] for r in rs])),
                     "tflops": float(np.mean([r["flops"] for r in rs])) / 1e12,
                     "wall_minutes": float(np.mean([r.get("run_wall_seconds") or r.get("cell_seconds", 0.0)
                                                    for r in rs])) / 60,
                     "majority": 100 * float(rs[0].get("test_majority", np.nan))})
    return rows


def seed_count(rows: list[dict]) -> str:
    """How many seeds the summary rows have: "3", or "1-3" while a grid has fewer at some points."""
    ns = sorted({len(r["seeds"]) for r in rows})
    return f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def study_pairs(records: list[dict], reference: str = "imp", margin: float = 1.0, n_boot: int = 10_000,
                min_seeds: int = 3) -> list[dict]:
    """Paired differences (label - reference) of test accuracy in points, per target sparsity.

    Only seeds both have are used. The interval is the two-level bootstrap of
    :func:`instantsoup.stats.paired_bootstrap`; ``seed_sd`` is the standard deviation over seeds
    of the per-seed differences (the study adds seeds when it exceeds 1.5 points). A pair with
    fewer than ``min_seeds`` seeds (the design's count) is ``provisional``: its interval then holds
    the test examples' noise but not the seeds'.
    """
    from instantsoup.stats import paired_bootstrap, verdict

    groups = study_groups(records)
    out = []
    for (label, sp), rs in groups.items():
        ref = {r["seed"]: r for r in groups.get((reference, sp), [])}
        if label == reference or not ref:
            continue
        both = [r for r in rs if r["seed"] in ref]
        if not both:
            continue
        diffs = [100.0 * (_correct(r).astype(np.int8) - _correct(ref[r["seed"]]).astype(np.int8)) for r in both]
        est, lo, hi = paired_bootstrap(diffs, n_boot=n_boot)
        per_seed = [float(d.mean()) for d in diffs]
        out.append({"label": label, "reference": reference, "target_sparsity": sp,
                    "seeds": [r["seed"] for r in both], "diff": est, "lo": lo, "hi": hi,
                    "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
                    "per_seed": per_seed, "verdict": verdict(lo, hi, margin), "margin": margin,
                    "provisional": len(both) < min_seeds, "min_seeds": min_seeds,
                    "step_ratio": float(np.mean([r["steps"] for r in both]) /
                                        np.mean([ref[r["seed"]]["steps"] for r in both]))})
    return out


def _pm(m: float, h: float, digits: int = 1) -> str:
    if not np.isfinite(m):
        return "-"
    return f"{m:.{digits}f}" + (f" ± {h:.{digits}f}" if np.isfinite(h) else " (1 seed)")


def _provisional(p: dict) -> str:
    n = len(p["seeds"])
    return f" (provisional: {n} of {p['min_seeds']} seeds)" if p["provisional"] else ""


def study_markdown(records: list[dict], reference: str = "imp", margin: float = 1.0, n_boot: int = 10_000,
                   min_seeds: int = 3) -> str:
    """Docs-ready Markdown: the summary table and the paired differences vs ``reference``."""
    rows = study_summary(records)
    pairs = study_pairs(records, reference, margin, n_boot, min_seeds)
    lines = ["| method | target sparsity | achieved | seeds | test acc. % (mean ± 95 % CI) | val acc. % | "
             "optimizer steps | training TFLOPs | wall min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['target_sparsity']:.3f} | {r['sparsity']:.4f} | "
                     f"{','.join(map(str, r['seeds']))} | {_pm(r['test'], r['test_ci'])} | "
                     f"{_pm(r['val'], r['val_ci'])} | {r['steps']:.0f} | {r['tflops']:.1f} | {r['wall_minutes']:.1f} |")
    maj = [r["majority"] for r in rows if np.isfinite(r["majority"])]
    if maj:
        lines.append("")
        lines.append(f"Always answering the majority class scores {maj[0]:.1f} % on the test set.")
    lines += ["", f"Paired differences vs `{reference}` (test accuracy points, same seed and sparsity; 95 % "
              f"bootstrap over seeds then test examples, {n_boot} resamples; equivalence margin ±{margin:g}):", "",
              f"| method | target sparsity | seeds | Δ vs {reference} | 95 % CI | seed SD of Δ | steps / {reference}'s "
              "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        sd = f"{p['seed_sd']:.2f}" if np.isfinite(p["seed_sd"]) else "-"
        lines.append(f"| {p['label']} | {p['target_sparsity']:.3f} | {','.join(map(str, p['seeds']))} | "
                     f"{p['diff']:+.2f} | [{p['lo']:+.2f}, {p['hi']:+.2f}] | {sd} | {p['step_ratio']:.2f} | "
                     f"{p['verdict']}{_provisional(p)} |")
    if not pairs:
        lines.append(f"| (no cell shares a sparsity and a seed with `{reference}` yet) | | | | | | | |")
    return "\n".join(lines) + "\n"


def study_overlaps(records: list[dict], runs_root: str | os.PathLike = ".") -> list[dict]:
    """How alike the tickets of different methods are: for every two labels at one target sparsity,
    the Jaccard overlap |A∩B| / |A∪B| of their kept weights in each seed both have, read from the
    cells' run directories (``runs_root``/run_dir/ticket/masks.safetensors, run_dir as recorded,
    relative to where the study ran). A cell without its mask file, or whose ticket holds another
    sparsity than the cell's (IMP's lower levels come from the run whose ticket is its last round), is
    left out. One dict per pair: label_a, label_b, target_sparsity, seeds, jaccard (per seed)."""
    masks: dict[str, Any] = {}
    by_cell: dict[tuple[str, float, int], Any] = {}
    for r in records:
        path = runs.masks_file(runs.ticket_path(Path(runs_root) / r.get("run_dir", "")))
        if not r.get("run_dir") or not path.is_file():
            continue
        key = str(path.resolve())
        if key not in masks:
            masks[key] = MaskSet.load(path).pack()
        m = masks[key]
        if abs(m.sparsity - float(r["sparsity"])) > 1e-3:  # another level's ticket
            continue
        by_cell[(r["label"], round(float(r["target_sparsity"]), 6), int(r["seed"]))] = m
    labels = list(dict.fromkeys(r["label"] for r in records))
    out = []
    for sp in sorted({k[1] for k in by_cell}):
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                seeds = sorted(k[2] for k in by_cell if k[:2] == (a, sp) and (b, sp, k[2]) in by_cell)
                if seeds:
                    out.append({"label_a": a, "label_b": b, "target_sparsity": sp, "seeds": seeds,
                                "jaccard": [by_cell[(a, sp, s)].overlap(by_cell[(b, sp, s)])["jaccard"]
                                            for s in seeds]})
    return out


def study_overlaps_markdown(pairs: list[dict]) -> str:
    """One table per target sparsity: the mean Jaccard overlap over seeds (their number in brackets)."""
    if not pairs:
        return "No two cells with mask files in their run directories share a sparsity and a seed.\n"
    lines = []
    for sp in sorted({p["target_sparsity"] for p in pairs}):
        mine = [p for p in pairs if p["target_sparsity"] == sp]
        labels = list(dict.fromkeys([p["label_a"] for p in mine] + [p["label_b"] for p in mine]))
        cell = {(p["label_a"], p["label_b"]): p for p in mine}
        lines += [f"Mask overlap at target sparsity {sp:.3f} (Jaccard of the kept weights, mean over seeds; "
                  "seeds in brackets):", "", "| | " + " | ".join(labels[1:]) + " |",
                  "|---|" + "---|" * (len(labels) - 1)]
        for i, a in enumerate(labels[:-1]):
            row = []
            for j, b in enumerate(labels[1:], start=1):
                p = cell.get((a, b)) or cell.get((b, a))
                row.append("" if j <= i or p is None else f"{np.mean(p['jaccard']):.3f} ({len(p['seeds'])})")
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def study_plots(records: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """study_accuracy_vs_sparsity.png (CI bands, dense and majority lines) and study_cost.png
    (test accuracy vs optimizer steps, training FLOPs and wall time); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = study_summary(records)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    files = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _reference_lines(ax, rows)
    for lab in labels:
        pts = sorted((r for r in rows if r["label"] == lab and r["target_sparsity"] > 0), key=lambda r: r["sparsity"])
        if not pts:
            continue
        x = np.array([r["sparsity"] for r in pts])
        y = np.array([r["test"] for r in pts])
        h = np.array([r["test_ci"] for r in pts])
        ax.plot(x, y, "o-", color=colors[lab], label=f"{lab} (n={seed_count(pts)})")
        if np.isfinite(h).any():
            ax.fill_between(x, y - np.nan_to_num(h), y + np.nan_to_num(h), color=colors[lab], alpha=0.15)
    ax.set_xlabel("sparsity (fraction of prunable encoder weights zero)")
    ax.set_ylabel("test accuracy % (mean ± 95 % CI over seeds)")
    ax.set_title("accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    files.append(out / "study_accuracy_vs_sparsity.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, axs = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    marks = {sp: m for sp, m in zip(sorted({r["target_sparsity"] for r in rows}), "osD^v<>px")}
    for ax, key, name in zip(axs, ("steps", "tflops", "wall_minutes"),
                             ("optimizer steps (all stages)", "training TFLOPs (dense count)", "wall time (minutes)")):
        _reference_lines(ax, rows)
        for r in rows:
            ax.errorbar(r[key], r["test"], yerr=None if not np.isfinite(r["test_ci"]) else r["test_ci"],
                        fmt=marks[r["target_sparsity"]], color=colors[r["label"]], capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axs[0].set_ylabel("test accuracy % (mean ± 95 % CI)")
    handles = [plt.Line2D([], [], color=colors[lab], marker="o", ls="", label=lab) for lab in labels]
    handles += [plt.Line2D([], [], color="gray", marker=m, ls="", label=f"sparsity {sp:.3f}") for sp, m in marks.items()]
    axs[2].legend(handles=handles, fontsize=7, loc="lower right")
    fig.suptitle("accuracy vs cost (each marker: one method at one sparsity, mean over seeds)")
    fig.tight_layout()
    files.append(out / "study_cost.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files


def _reference_lines(ax: Any, rows: list[dict]) -> None:
    """Dense (mean ± CI band) and majority-class horizontal lines of summary rows."""
    dense = [r for r in rows if r["method"] == "dense"]
    if dense:
        d = dense[0]
        ax.axhline(d["test"], color="k", lw=1, label=f"dense {d['test']:.1f}")
        if np.isfinite(d["test_ci"]):
            ax.axhspan(d["test"] - d["test_ci"], d["test"] + d["test_ci"], color="k", alpha=0.08)
    maj = [r["majority"] for r in rows if np.isfinite(r.get("majority", np.nan))]
    if maj:
        ax.axhline(maj[0], color="gray", ls="--", lw=1, label=f"majority class {maj[0]:.1f}")
