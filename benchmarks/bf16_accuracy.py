"""bf16 vs fp32 fine-tuning on the default task (pre-registered in docs/ARCHITECTURE.md, "Accuracy of bf16").

Dense fine-tuning of the default model on the default task with the demo's budget, for each seed
and both precisions, final weights (no best-checkpoint selection, so both precisions are compared
after the same number of steps). Reports validation and test accuracy per run, the bf16 - fp32
differences, and the Jaccard overlap of global magnitude masks at 50% and 90% sparsity drawn from
the bf16- and fp32-trained weights of the same seed.

    python benchmarks/bf16_accuracy.py --seeds 0,1,2 --threads 1 --json bf16_accuracy.json

Needs the demo's data packages (see README); runs as long as 2 x seeds demo fine-tunings.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def run(seed: int, precision: str, args) -> dict:
    import instantsoup
    from instantsoup import data as D
    from instantsoup.config import DataSettings, PruneSettings, Settings, TrainSettings
    from instantsoup.methods import dense
    from instantsoup.task import load_task

    s = Settings(train=TrainSettings(batch_size=16, lr=3e-4, epochs=args.epochs, seed=seed, max_length=48,
                                     warmup_ratio=0.06, select_best=False, precision=precision),
                 prune=PruneSettings(method="dense", sparsity=0.0),
                 data=DataSettings(task="default", max_train_examples=args.train_examples, max_eval_examples=300))
    model_dir = str(D.default_model_path())
    task = load_task(s.data, model_dir, s.train.max_length, seed)
    model = instantsoup.load_model(model_dir, num_labels=task.num_labels, seed=seed)
    t0 = time.perf_counter()
    ticket = dense(model, task, s, progress=False)
    out = {"seed": seed, "precision": precision, "isa": instantsoup.precision.get_isa() if precision == "bf16" else "",
           "val_accuracy": ticket.metrics["val_accuracy"], "test_accuracy": ticket.metrics["test_accuracy"],
           "seconds": time.perf_counter() - t0}
    out["masks"] = {f"{sp:.2f}": instantsoup.magnitude_masks(model, sp) for sp in (0.5, 0.9)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=float, default=1.5)
    ap.add_argument("--train-examples", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)

    import instantsoup

    instantsoup.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]
    rows, overl = [], []
    for seed in seeds:
        r = {p: run(seed, p, args) for p in ("fp32", "bf16")}
        o = {sp: r["bf16"]["masks"][sp].overlap(r["fp32"]["masks"][sp])["jaccard"] for sp in r["fp32"]["masks"]}
        for p in ("fp32", "bf16"):
            rows.append({k: v for k, v in r[p].items() if k != "masks"})
        overl.append({"seed": seed, **{f"jaccard_{sp}": v for sp, v in o.items()}})
        print(f"seed {seed}: fp32 val {r['fp32']['val_accuracy']:.4f} test {r['fp32']['test_accuracy']:.4f} "
              f"({r['fp32']['seconds']:.0f} s) | bf16[{r['bf16']['isa']}] val {r['bf16']['val_accuracy']:.4f} "
              f"test {r['bf16']['test_accuracy']:.4f} ({r['bf16']['seconds']:.0f} s) | "
              + " ".join(f"J@{sp}={v:.4f}" for sp, v in o.items()), flush=True)

    def col(p, k):
        return np.array([r[k] for r in rows if r["precision"] == p])

    for k in ("val_accuracy", "test_accuracy"):
        d = col("bf16", k) - col("fp32", k)
        sd = col("fp32", k).std(ddof=1) if len(seeds) > 1 else float("nan")
        print(f"{k}: fp32 {col('fp32', k).mean():.4f} (sd over seeds {sd:.4f}), bf16 {col('bf16', k).mean():.4f}, "
              f"bf16 - fp32 per seed {np.round(d, 4).tolist()}, mean {d.mean():+.4f}")
    for sp in ("0.50", "0.90"):
        j = np.array([o[f"jaccard_{sp}"] for o in overl])
        print(f"magnitude masks at {sp}: Jaccard(bf16, fp32) min {j.min():.4f} mean {j.mean():.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": rows, "overlap": overl, "settings": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
