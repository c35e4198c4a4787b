"""How close our GEMMs come to the CPU's matrix units: one core's instruction peak per bf16 path next
to our bf16 GEMM and OpenBLAS sgemm on the same shapes.

- ``peak``: the path's multiply-add instruction alone on register / tile-resident operands, no
  memory traffic (``_C_test.bf16_peak``): ``tdpbf16ps`` on 4 accumulator tiles (amx, the most
  the 8 tiles allow beside two A and two B tiles, as in our kernel), ``vdpbf16ps`` on 16 zmm
  accumulators (avx512bf16), fp32 FMA on 12 ymm accumulators (avx2bf16: it widens bf16 to fp32,
  so its peak is the AVX2 FMA peak);
- ``ours``: our bf16 GEMM on that path (packing, rounding and the update of C included);
- ``sgemm``: OpenBLAS fp32 on the same shapes, the fp32 engine's rate.

One thread. Shapes: a square product and the MiniLM B32 T128 step's linear-layer shapes
(forward, input gradient, weight gradient).

    python benchmarks/matrix_peak.py
"""
from __future__ import annotations

import os

import _checkout  # noqa: F401  (installed instantsoup, else this checkout's in-place build)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time

import numpy as np

import train_step as ts

# (name, M, N, K, trans_a, trans_b)
SHAPES = [("square", 2048, 2048, 2048, 0, 0),
          ("fc1 forward", 4096, 1536, 384, 0, 1),
          ("fc2 forward", 4096, 384, 1536, 0, 1),
          ("fc2 input grad", 4096, 1536, 384, 0, 0),
          ("fc2 weight grad", 384, 1536, 4096, 1, 0)]


def gemm_gflops(shape, bf16, seconds):
    from instantsoup import _C_test

    _, M, N, K, ta, tb = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    c = np.zeros((M, N), np.float32)
    kw = {"bf16": bf16} if bf16 else {}
    _C_test.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), **kw)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        _C_test.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), **kw)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * M * N * K / best / 1e9


def peak_gflops(path, seconds):
    from instantsoup import _C_test

    iters = 1000  # the first call also pays for AMX's tile state being granted
    while _C_test.bf16_peak(path, iters)[1] < seconds / 4:
        iters *= 4
    return max(f / t for f, t in (_C_test.bf16_peak(path, iters) for _ in range(3))) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement (best of the repeats)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    args = ap.parse_args(argv)

    import instantsoup

    instantsoup.set_num_threads(1)
    info = instantsoup.build_info()
    paths = [p for p in instantsoup.precision.available_isas() if p != "fp32"]
    print(f"cpu={ts.cpu_name()} blas_core={info['blas_corename']} paths={','.join(paths)} threads=1")
    rows = []
    sgemm = {s[0]: gemm_gflops(s, None, args.seconds) for s in SHAPES}
    for path in paths:
        peak = peak_gflops(path, args.seconds)
        for s in SHAPES:
            ours = gemm_gflops(s, path, args.seconds)
            rows.append(dict(path=path, shape=s[0], M=s[1], N=s[2], K=s[3], trans_a=s[4], trans_b=s[5],
                             peak_gflops=peak, ours_gflops=ours, sgemm_gflops=sgemm[s[0]]))
    print(f"{'path':11s} {'shape':16s} {'M x N x K':>16s} {'peak GF/s':>9s} {'ours GF/s':>9s} {'% of peak':>9s} "
          f"{'sgemm GF/s':>10s} {'ours/sgemm':>10s}")
    for r in rows:
        print(f"{r['path']:11s} {r['shape']:16s} {r['M']:>5d}x{r['N']:>4d}x{r['K']:>5d} {r['peak_gflops']:9.1f} "
              f"{r['ours_gflops']:9.1f} {100 * r['ours_gflops'] / r['peak_gflops']:8.1f}% {r['sgemm_gflops']:10.1f} "
              f"{r['ours_gflops'] / r['sgemm_gflops']:9.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cpu=ts.cpu_name(), blas_core=info["blas_corename"], rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
