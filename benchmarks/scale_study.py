"""Wall time of one small study run three ways: sequentially, with `--jobs 2`, on a two-node Ray cluster on
loopback (docs/SCALE.md), and of one ISP run with 4 denoisers per round sequentially and with its denoisers
as Ray tasks. Checks that the results files hold the same records (wall times aside) and that the two ISP
runs wrote the same mask file.

    python benchmarks/scale_study.py --out /tmp/scale-bench

The study: 8 cells (dense, omp, random, gmp x seeds 0, 1) of a small random BERT (2 layers, hidden 64,
the default model's vocabulary) on the default task (Rotten Tomatoes, 256 training snippets, 1 epoch),
one thread per cell. The Ray cluster (one CPU per node) is started before and stopped after its timed
run: its start-up is reported separately. Runs from a source checkout (build in place first) or an
installed instantsoup; Ray comes from `pip install 'instantsoup[ray]' psutil`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback cluster helper of the Ray tests

VOLATILE = {"cell_seconds", "wall_seconds", "run_wall_seconds", "train_seconds", "score_seconds", "finished",
            "run_dir", "host"}


def make_model(out: Path) -> Path:
    import shutil

    from instantsoup import data
    from instantsoup.models.bert import BertConfig, BertModel

    d = out / "model"
    if (d / "model.safetensors").exists():
        return d
    src = data.default_model_path()
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    m = BertModel(BertConfig.from_dict(cfg, num_labels=2))
    rng = np.random.default_rng(0)
    for name, v in m.state_dict().items():
        v[...] = 1.0 if name.endswith("LayerNorm.weight") else 0.0 if name.endswith("bias") else \
            rng.normal(0, 0.02, v.shape)
    m.save_pretrained(d)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d


def write_study(out: Path, model: Path, name: str) -> tuple[Path, Path]:
    results = out / name / "results.jsonl"
    study = {"name": "scale", "seeds": [0, 1], "sparsities": [0.5], "threads": 1,
             "results": str(results), "runs": str(out / name / "runs"),
             "settings": {"train": {"batch_size": 16, "lr": 1e-3, "epochs": 1, "max_length": 32},
                          "data": {"task": "default", "max_train_examples": 256},
                          "run": {"model": str(model)}},
             "methods": [{"label": "dense", "method": "dense"}, {"label": "omp", "method": "omp"},
                         {"label": "random", "method": "random"},
                         {"label": "gmp", "method": "gmp", "prune": {"step": 0.25}}]}
    path = out / f"{name}.json"
    path.write_text(json.dumps(study))
    return path, results


def env() -> dict:
    import instantsoup

    e = dict(os.environ)
    root = str(Path(instantsoup.__file__).resolve().parent.parent)
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("RAY_ADDRESS", None)
    return e


def timed_study(path: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "instantsoup", "study", str(path), *extra], env=env(), check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_isp(out: Path, model: Path | None, name: str, *extra: str) -> tuple[float, dict]:
    """ISP (soup, 4 denoisers of 8 look-ahead steps per round, 3 rounds) with one thread; its masks.
    ``model`` None: the default model (MiniLM-L6)."""
    from safetensors.numpy import load_file

    cmd = [sys.executable, "-m", "instantsoup", "prune", "--method", "isp", "--task", "default",
           "--max-train-examples", "256", "--epochs", "2", "--batch-size", "16", "--max-length", "32",
           "--lr", "1e-3", "--sparsity", "0.5", "--step", "0.25", "--t", "2", "--denoisers", "4", "--lookahead",
           "8", "--threads", "1", "--no-progress", "--out", str(out / name), *extra]
    if model is not None:
        cmd += ["--model", str(model)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env(), check=True, stdout=subprocess.DEVNULL, cwd=out)
    secs = time.perf_counter() - t0
    (mask_file,) = (out / name).glob("isp-*/ticket/masks.safetensors")
    return secs, load_file(str(mask_file))


def records(path: Path) -> dict:
    from instantsoup.study import read_records

    out = {}
    for r in read_records(path):
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["settings"]["run"].pop("out")
        out[r["cell"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="scratch folder (emptied runs are reused: give a new one)")
    ap.add_argument("--isp-model", choices=("small", "default"), default="small",
                    help="ISP run: the study's small random BERT, or the default model (MiniLM-L6, slower)")
    ap.add_argument("--isp-only", action="store_true", help="skip the study runs")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = make_model(out)
    rows = []
    if not args.isp_only:
        seq, seq_results = write_study(out, model, "sequential")
        rows.append(("sequential", timed_study(seq), seq_results))
        par, par_results = write_study(out, model, "jobs2")
        rows.append(("--jobs 2", timed_study(par, "--jobs", "2"), par_results))
    from ray_cluster import LoopbackRay

    t0 = time.perf_counter()
    cluster = LoopbackRay(env())
    startup = time.perf_counter() - t0
    isp_model = model if args.isp_model == "small" else None
    try:
        if not args.isp_only:
            ray, ray_results = write_study(out, model, "ray")
            rows.append((f"Ray, 2 nodes x 1 CPU on loopback (cluster start {startup:.0f} s, not counted)",
                         timed_study(ray, "--ray", cluster.address), ray_results))
        isp_seq = timed_isp(out, isp_model, "isp-sequential")
        isp_ray = timed_isp(out, isp_model, "isp-ray", "--ray", cluster.address)
    finally:
        cluster.stop()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} on {os.cpu_count()} cores\n")
    if rows:
        want = records(rows[0][2])
        print("8 cells, 1 thread each\n")
        print("| run | wall time (s) | speed-up | records equal to sequential |")
        print("|---|---|---|---|")
    for name, secs, res in rows:
        got = records(res)
        print(f"| {name} | {secs:.1f} | {rows[0][1] / secs:.2f}x | {'yes' if got == want else 'NO'} ({len(got)} cells) |")
    same = isp_seq[1].keys() == isp_ray[1].keys() and all(np.array_equal(isp_seq[1][k], isp_ray[1][k])
                                                           for k in isp_seq[1])
    print(f"\nISP (soup) on the {args.isp_model} model, 4 denoisers x 8 look-ahead steps per round, 3 rounds, "
          "1 thread per process\n")
    print("| run | wall time (s) | speed-up | mask file equal to sequential |")
    print("|---|---|---|---|")
    print(f"| sequential | {isp_seq[0]:.1f} | 1.00x | (reference) |")
    print(f"| denoisers as Ray tasks, 2 nodes x 1 CPU | {isp_ray[0]:.1f} | {isp_seq[0] / isp_ray[0]:.2f}x | "
          f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
