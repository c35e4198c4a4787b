"""How to split a training step's matrix products over many threads: the question behind thread scaling.

The engine runs every linear-layer product as blocks of output rows, one single-threaded OpenBLAS
call per thread (``gemm_par`` in csrc/ops.c: OpenBLAS's own pthreads fighting our OpenMP pool made
steps several times slower). Each block packs the whole other operand (the weight matrix in the
forward pass), so at n threads that packing is done n times. This script measures, on the step's
GEMM shapes (train_step.py's sizes) and at each thread count, the GFLOP/s of

- ``blas``: one OpenBLAS call with n threads of its own (shared packing; the reference peak),
- ``rows``: gemm_par's split (n blocks of >= 16 rows, or fewer), one single-threaded call per block,
- ``grid RxC``: every other way of cutting the output into R x C = n blocks of >= 16 rows and
  columns, and the best of them,

the blocks run on n Python threads (the binding releases the GIL), OpenBLAS single-threaded inside.
On a 2-core machine only 1 and 2 threads mean anything; the 16-core device run decides whether the
engine should cut 2-D blocks at high thread counts.

    python benchmarks/gemm_split.py --size base --threads 1,2
"""
from __future__ import annotations

import os
import sys

import _checkout  # noqa: F401  (installed instantsoup, else this checkout's in-place build)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import train_step as ts


def cuts(n: int, parts: int) -> list[int]:
    """gemm_par's boundaries: ``parts`` blocks of n, each start rounded down to a multiple of 16."""
    return [(n * t // parts) & ~15 for t in range(parts)] + [n]


def blocks(M: int, N: int, r: int, c: int) -> list[tuple[int, int, int, int]]:
    rs, cs = cuts(M, r), cuts(N, c)
    return [(rs[i], rs[i + 1], cs[j], cs[j + 1]) for i in range(r) for j in range(c)]


def grids(M: int, N: int, n: int) -> list[tuple[int, int]]:
    """(R, C) with R * C = n and blocks of >= 16 rows and columns; (rows,) first as gemm_par cuts."""
    rows = max(1, min(n, M // 16))
    out = [(rows, 1)]
    for r in range(1, n + 1):
        if n % r == 0 and (r, n // r) != (rows, 1) and M // r >= 16 and N // (n // r) >= 16:
            out.append((r, n // r))
    return out


def time_blocks(pool, sgemm, a, b, c, ta, tb, bl, reps) -> float:
    def one(blk):
        r0, r1, c0, c1 = blk
        sgemm(a[:, r0:r1] if ta else a[r0:r1], b[c0:c1] if tb else b[:, c0:c1], c[r0:r1, c0:c1],
              trans_a=ta, trans_b=tb)

    best = math.inf
    for _ in range(reps + 1):  # the first run warms up
        t0 = time.perf_counter()
        if len(bl) == 1:
            one(bl[0])
        else:
            list(pool.map(one, bl))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="base", choices=sorted(ts.SIZES))
    ap.add_argument("--threads", type=ts.int_list, default=[1, 2])
    ap.add_argument("--reps", type=int, default=3, help="best of this many runs per shape and split")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    args = ap.parse_args(argv)

    import instantsoup
    from instantsoup import _C_test

    s = ts.SIZES[args.size]
    rng = np.random.default_rng(0)
    shapes = []
    for M, N, K, ta, tb, count in ts.gemm_shapes(s):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        shapes.append((M, N, K, bool(ta), bool(tb), count, a, b, np.zeros((M, N), np.float32)))
    flops = sum(2.0 * M * N * K * count for M, N, K, _, _, count, *_ in shapes)
    print(f"{args.size}: {len(shapes)} GEMM shapes of one step, {flops / 1e9:.1f} GFLOP; cpu={ts.cpu_name()} "
          f"cores={os.cpu_count()}")
    print(f"{'threads':>7s} {'blas GF/s':>9s} {'rows GF/s':>9s} {'best grid GF/s':>14s}  per shape: split (GF/s)")
    rows_out = []
    for n in args.threads:
        # blas: OpenBLAS's own n threads, one call per shape
        instantsoup.set_num_threads(n)
        t_blas = sum(time_blocks(None, _C_test.sgemm, a, b, c, ta, tb, [(0, M, 0, N)], args.reps) * count
                     for M, N, K, ta, tb, count, a, b, c in shapes)
        instantsoup.set_num_threads(1)
        t_rows, t_best, picks = 0.0, 0.0, []
        with ThreadPoolExecutor(max_workers=n) as pool:
            for M, N, K, ta, tb, count, a, b, c in shapes:
                times = {g: time_blocks(pool, _C_test.sgemm, a, b, c, ta, tb, blocks(M, N, *g), args.reps)
                         for g in grids(M, N, n)}
                first = next(iter(times))
                g = min(times, key=times.get)
                t_rows += times[first] * count
                t_best += times[g] * count
                picks.append(dict(M=M, N=N, K=K, rows=list(first), best=list(g),
                                  gflops={f"{r}x{c}": 2.0 * M * N * K / t / 1e9 for (r, c), t in times.items()}))
        row = dict(threads=n, blas_gflops=flops / t_blas / 1e9, rows_gflops=flops / t_rows / 1e9,
                   best_grid_gflops=flops / t_best / 1e9, shapes=picks)
        rows_out.append(row)
        detail = " ".join(f"{p['M']}x{p['N']}x{p['K']}:{p['best'][0]}x{p['best'][1]}" for p in picks)
        print(f"{n:7d} {row['blas_gflops']:9.1f} {row['rows_gflops']:9.1f} {row['best_grid_gflops']:14.1f}  {detail}",
              flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(size=args.size, cpu=ts.cpu_name(), rows=rows_out), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
