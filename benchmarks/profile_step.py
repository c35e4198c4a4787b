"""Where one training step goes: our fp32 step (forward + backward + AdamW, dropout 0.1, random BERT
weights as in train_step.py) timed by kernel call site with the engine's opt-in profile
(``instantsoup._C.set_profile`` / ``get_profile``: wall time on the calling thread around whole
kernel calls; off, it costs one branch per call).

Columns: calls per step; wall ms per step and share of the step's wall time; CPU ms (the process's
CPU time, all threads) and share of the step's CPU time, which a machine shared with other jobs
distorts less; for the sites that are matrix products their GFLOP/s (wall) next to OpenBLAS sgemm's
on the same shapes (best of 3, our threads, measured right after; on a loaded machine compare
shares, not absolute times).

    python benchmarks/profile_step.py --size minilm --batch 32 --seq 64 --threads 1 --steps 2
"""
from __future__ import annotations

import os
import sys

import _checkout  # noqa: F401  (installed instantsoup, else this checkout's in-place build)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import tempfile
import time

import numpy as np

import train_step as ts

# site -> its sgemm shapes per layer: (M, N, K, trans_a, trans_b); linear sites only
def site_shapes(s):
    N, C, F = s["batch"] * s["seq"], s["hidden"], s["inter"]
    def fwd(oc, ic):
        return [(N, oc, ic, 0, 1)]
    def bwd(oc, ic):
        return [(N, ic, oc, 0, 0), (oc, ic, N, 1, 0)]
    return {
        "linear qkv fwd": fwd(3 * C, C), "linear attn-out fwd": fwd(C, C),
        "linear fc1 fwd": fwd(F, C), "linear fc2 fwd": fwd(C, F),
        "linear qkv bwd (dx, dW, db)": bwd(3 * C, C), "linear attn-out bwd (dx, dW, db)": bwd(C, C),
        "linear fc1 bwd (dx, dW, db)": bwd(F, C), "linear fc2 bwd (dx, dW, db)": bwd(C, F),
    }


def attention_flops(s, backward):
    B, T, C = s["batch"], s["seq"], s["hidden"]
    return (4 if backward else 2) * 2 * B * T * T * C


def sgemm_seconds(shapes, reps=3, bf16=None):
    """Best-of-reps seconds of the shapes through OpenBLAS sgemm, or our bf16 GEMM on path ``bf16``."""
    from instantsoup import _C_test

    kw = {"bf16": bf16} if bf16 else {}

    rng = np.random.default_rng(0)
    total = 0.0
    for M, N, K, ta, tb in shapes:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        c = np.zeros((M, N), np.float32)
        _C_test.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), **kw)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            _C_test.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), **kw)
            best = min(best, time.perf_counter() - t0)
        total += best
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="minilm", choices=sorted(ts.SIZES))
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="profiled steps (after one warm-up step)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="the model's precision; with bf16 the last column is our bf16 GEMM on the same shapes")
    args = ap.parse_args(argv)

    import instantsoup
    from instantsoup import _C

    instantsoup.set_num_threads(args.threads)
    s = dict(ts.SIZES[args.size])
    s["batch"] = args.batch or s["batch"]
    s["seq"] = args.seq or s["seq"]
    batch, y = ts.batch_for(s, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as d:
        ts.make_checkpoint(s, d)
        model = instantsoup.load_model(d, precision=args.precision).train()
    opt = instantsoup.AdamW(model, lr=2e-5, weight_decay=0.01, precision=args.precision)
    opt.train_step(batch, y)
    load0 = os.getloadavg()[0]
    _C.set_profile(True)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        opt.train_step(batch, y)
    step = (time.perf_counter() - t0) / args.steps
    step_cpu = (time.process_time() - c0) / args.steps
    prof = _C.get_profile()
    _C.set_profile(False)
    load1 = os.getloadavg()[0]

    L = s["layers"]
    shapes = site_shapes(s)
    flops = {k: L * sum(2.0 * M * N * K for M, N, K, _, _ in v) for k, v in shapes.items()}
    isa = instantsoup.precision.get_isa() if args.precision == "bf16" else None
    peak = {k: L * sgemm_seconds(v, bf16=isa) for k, v in shapes.items()}
    for name, bwd in (("attention fwd (QK^T, mask, softmax, dropout, PV)", False), ("attention bwd", True)):
        flops[name] = L * attention_flops(s, bwd)
    mode = f"{args.precision} ({isa})" if isa else args.precision
    print(f"{args.size} B{s['batch']} T{s['seq']}, {mode}, {args.threads} thread(s): {step * 1e3:.0f} ms/step wall, "
          f"{step_cpu * 1e3:.0f} ms CPU (mean of {args.steps}), {ts.train_flops(s) / step / 1e9:.1f} GF/s; "
          f"load {load0:.1f}-{load1:.1f}")
    peak_name = f"our {isa} GEMM" if isa else "sgemm"
    print("| site | calls/step | wall ms/step | share of wall | CPU ms/step | share of CPU | GF/s (wall) | "
          f"{peak_name} GF/s (same shapes) |")
    print("|---|---|---|---|---|---|---|---|")
    wall_sum = cpu_sum = 0.0
    for name, (wall, cpu, calls) in prof.items():
        if calls == 0:
            continue
        wall, cpu = wall / args.steps, cpu / args.steps
        wall_sum, cpu_sum = wall_sum + wall, cpu_sum + cpu
        gf = f"{flops[name] / wall / 1e9:.1f}" if name in flops else ""
        pk = f"{flops[name] / peak[name] / 1e9:.1f}" if name in peak else ""
        print(f"| {name} | {calls // args.steps} | {wall * 1e3:.1f} | {100 * wall / step:.1f}% | {cpu * 1e3:.1f} | "
              f"{100 * cpu / step_cpu:.1f}% | {gf} | {pk} |")
    print(f"| not attributed (Python, batch checks, copies) | | {(step - wall_sum) * 1e3:.1f} | "
          f"{100 * (step - wall_sum) / step:.1f}% | {(step_cpu - cpu_sum) * 1e3:.1f} | "
          f"{100 * (step_cpu - cpu_sum) / step_cpu:.1f}% | | |")

if __name__ == "__main__":
    main()
