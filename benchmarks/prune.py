"""Benchmark: global magnitude selection and mask merges at BERT-base scale.

Prunable weights of BERT-base: 12 x [3 x 768x768 (q, k, v) + 768x768 (attention output)
+ 768x3072 + 3072x768 (feed-forward)] = 84,934,656 float32 weights (340 MB).

For each method, in a fresh subprocess (so peaks do not mix): wall time (best of --repeat) and
peak extra memory = peak RSS during the call - RSS before it (Linux: VmHWM reset through
/proc/self/clear_refs), plus the peak of Python/NumPy allocations seen by tracemalloc. The result
mask itself (1 byte per weight for instantsoup, a float mask per tensor for torch) is included in
"extra"; "scratch" subtracts instantsoup's result mask.

Methods:
  instantsoup   instantsoup.magnitude_masks(params, s)            (C radix select, no concatenation)
  torch         torch.nn.utils.prune.global_unstructured(L1Unstructured, amount=s)
  argpartition  numpy.argpartition(|concatenated weights|, round(s*P))
  merges        instantsoup.merge_masks of 5 and 16 masks (byte and bit-packed)

Usage: python benchmarks/prune.py [--scale 1.0] [--threads N] [--repeat 3] [--sparsity 0.5]
       [--only instantsoup,torch,argpartition,merges]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import _checkout  # noqa: E402,F401  (installed instantsoup, else this checkout's in-place build)

HIDDEN, FFN, LAYERS = 768, 3072, 12


def shapes(scale: float) -> list[tuple[int, int]]:
    h = max(8, int(round(HIDDEN * scale ** 0.5)))
    f = 4 * h
    one = [(h, h)] * 4 + [(f, h), (h, f)]
    return one * LAYERS


def make_params(scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = ["query", "key", "value", "attention_output", "intermediate", "output"]
    out = {}
    for i, s in enumerate(shapes(scale)):
        out[f"bert.encoder.layer.{i // 6}.{names[i % 6]}.weight"] = rng.standard_normal(s, dtype=np.float32) * 0.02
    return out


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn, repeat: int) -> dict:
    times = []
    extra = tm_peak = 0
    for r in range(repeat):
        base = rss()
        ok = reset_peak()
        tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        _, tpk = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if ok:
            extra = max(extra, peak_rss() - base)
        tm_peak = max(tm_peak, tpk)
        del out
    return {"time_s": min(times), "times": times, "peak_extra_bytes": extra, "tracemalloc_peak_bytes": tm_peak}


def run_method(method: str, args) -> dict:
    params = make_params(args.scale)
    P = sum(a.size for a in params.values())
    s = args.sparsity
    res = {"method": method, "P": P, "sparsity": s}
    if method == "instantsoup":
        import instantsoup as isp

        isp.set_num_threads(args.threads)
        # no warm-up: the first call's scratch allocations count towards the peak
        res.update(measure(lambda: isp.magnitude_masks(params, s), args.repeat))
        res["num_masked"] = isp.magnitude_masks(params, s).num_masked
        res["scratch_bytes"] = res["peak_extra_bytes"] - P  # minus the 1-byte-per-weight result
    elif method == "torch":
        import torch
        from torch.nn.utils import prune

        torch.set_num_threads(args.threads)

        class Holder(torch.nn.Module):
            def __init__(self, a):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.from_numpy(a), requires_grad=False)

        def once():
            mods = [Holder(a) for a in params.values()]
            prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=s)
            n = sum(int((m.weight_mask == 0).sum()) for m in mods)
            for m in mods:
                prune.remove(m, "weight")  # restores a plain parameter (pruned values zeroed in place)
            return n

        # keep the original weights: global_unstructured + remove write zeros into them
        backup = {k: v.copy() for k, v in params.items()}
        res["num_masked"] = once()
        for k in params:
            params[k][...] = backup[k]
        del backup
        res.update(measure(once, 1))  # ~40 s per call at full scale
    elif method == "argpartition":
        k = int(round(s * P))

        def once():
            flat = np.abs(np.concatenate([a.ravel() for a in params.values()]))
            idx = np.argpartition(flat, k)[:k]
            mask = np.ones(P, np.uint8)
            mask[idx] = 0
            return mask

        res["num_masked"] = int(P - once().sum())
        res.update(measure(once, min(args.repeat, 2)))
    elif method == "merges":
        import instantsoup as isp

        isp.set_num_threads(args.threads)
        rng = np.random.default_rng(1)
        names = list(params)
        shp = [params[n].shape for n in names]
        nbytes = (P + 7) // 8

        def packed_mask():
            return isp.PackedMaskSet(names, shp, rng.integers(0, 256, nbytes, dtype=np.uint8))

        out = {}
        for K in (5, 16):
            pk = [packed_mask() for _ in range(K)]
            out[f"union_packed_K{K}"] = measure(lambda: isp.merge_masks(pk, "union", packed=True), args.repeat)
            out[f"union_packed_to_bytes_K{K}"] = measure(lambda: isp.merge_masks(pk, "union"), args.repeat)
            out[f"vote_exact_packed_K{K}"] = measure(
                lambda: isp.merge_masks(pk, "vote", sparsity=0.5, scores=params), 1)
            out[f"union_adjust_packed_K{K}"] = measure(
                lambda: isp.merge_masks(pk, "union", sparsity=0.9, scores=_AbsModel(params)), 1)
            out[f"inputs_bytes_packed_K{K}"] = sum(m.nbytes for m in pk)
            if K == 5:
                by = [m.unpack() for m in pk]
                out["union_bytes_K5"] = measure(lambda: isp.merge_masks(by, "union"), args.repeat)
                out["vote_exact_bytes_K5"] = measure(lambda: isp.merge_masks(by, "vote", sparsity=0.5, scores=params), 1)
                out["union_adjust_bytes_K5"] = measure(
                    lambda: isp.merge_masks(by, "union", sparsity=0.9, scores=_AbsModel(params)), 1)
                out["inputs_bytes_K5"] = sum(m.numel for m in by)
                del by
            del pk
        res["merges"] = out
    else:
        raise ValueError(method)
    return res


class _AbsModel:
    """Duck-typed model so merge_masks uses |w| of these weights."""

    def __init__(self, params):
        self._p = params
        self.masks = {}

    def state_dict(self):
        return self._p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of BERT-base's prunable weights")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--only", default="instantsoup,torch,argpartition,merges")
    ap.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args(argv)
    if args.method:
        print(json.dumps(run_method(args.method, args)))
        return
    results = []
    for m in args.only.split(","):
        print(f"running {m} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--method", m, "--scale", str(args.scale), "--threads", str(args.threads),
               "--repeat", str(args.repeat), "--sparsity", str(args.sparsity)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{m}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mb = 1 / 2**20
    print(f"global magnitude selection, P = {results[0]['P'] if results else '?'} weights, "
          f"sparsity {args.sparsity}, {args.threads} threads")
    base = {r["method"]: r for r in results}
    for r in results:
        if r["method"] == "merges":
            continue
        line = (f"  {r['method']:<13} {r['time_s']:8.3f} s   peak extra {r['peak_extra_bytes'] * mb:8.1f} MB "
                f"({r['peak_extra_bytes'] / r['P']:.2f} B/weight)   tracemalloc {r['tracemalloc_peak_bytes'] * mb:8.1f} MB"
                f"   masked {r['num_masked']}")
        if "scratch_bytes" in r:
            line += f"   scratch {r['scratch_bytes'] * mb:.1f} MB ({r['scratch_bytes'] / r['P']:.3f} B/weight)"
        print(line)
    if "instantsoup" in base:
        t0 = base["instantsoup"]["time_s"]
        for m in ("torch", "argpartition"):
            if m in base:
                print(f"  speed-up vs {m}: {base[m]['time_s'] / t0:.1f}x")
    if "merges" in base:
        print("merges:")
        for k, v in base["merges"]["merges"].items():
            if isinstance(v, dict):
                print(f"  {k:<28} {v['time_s']:8.3f} s   peak extra {v['peak_extra_bytes'] * mb:8.1f} MB")
            else:
                print(f"  {k:<28} {v * mb:8.1f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
