"""Time one training step (forward + backward + AdamW) in instantsoup and in PyTorch.

Same config, batch, sequence length and thread count on every side, all measured in one run; random
weights and tokens (no download), dropout 0.1. Columns: PyTorch fp32, PyTorch with
``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward pass, ours in each ``--precision``,
ratios torch / ours, our GFLOP/s (matmul FLOPs of the step), the peaks measured on the step's
linear-layer GEMM shapes (OpenBLAS sgemm, and our bf16 GEMM on the path this CPU selects; both
through the test-only instantsoup._C_test.sgemm, our threads), our peak RSS, and the load average
(shared machines).

    python benchmarks/train_step.py --sizes tiny,minilm --steps 5 --threads 2 --precision fp32,bf16
"""
from __future__ import annotations

import os
import sys

import _checkout  # noqa: E402,F401  (installed instantsoup, else this checkout's in-place build)

# Both sides get the same OpenMP wait policy (instantsoup defaults to PASSIVE, see
# instantsoup/_native.py); it must be set before torch or instantsoup load libgomp.
for _i, _a in enumerate(sys.argv):
    if _a.startswith("--wait-policy"):
        _v = _a.split("=", 1)[1] if "=" in _a else sys.argv[_i + 1]
        if _v.lower() != "default":
            os.environ["OMP_WAIT_POLICY"] = _v.upper()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import tempfile
import time

import numpy as np

SIZES = {
    "tiny": dict(layers=2, hidden=64, heads=4, inter=128, batch=32, seq=64),
    "minilm": dict(layers=6, hidden=384, heads=12, inter=1536, batch=32, seq=128),
    "base": dict(layers=12, hidden=768, heads=12, inter=3072, batch=16, seq=128),
}
VOCAB = 30522


def train_flops(s) -> float:
    """Matmul FLOPs of one training step (forward x3), embeddings/elementwise excluded."""
    B, T, C, F, L = s["batch"], s["seq"], s["hidden"], s["inter"], s["layers"]
    per_layer = 2 * B * T * (4 * C * C + 2 * C * F) + 2 * 2 * B * T * T * C
    return 3 * L * per_layer


def gemm_shapes(s):
    """(M, N, K, trans_a, trans_b, count) of the linear-layer GEMMs of one step."""
    B, T, C, F, L = s["batch"], s["seq"], s["hidden"], s["inter"], s["layers"]
    N = B * T
    out = []
    for oc, ic in ((3 * C, C), (C, C), (F, C), (C, F)):
        out.append((N, oc, ic, 0, 1, L))   # forward
        out.append((N, ic, oc, 0, 0, L))   # d input
        out.append((oc, ic, N, 1, 0, L))   # d weight
    return out


def sgemm_gflops(s, reps=3, bf16=None) -> float:
    """GFLOP/s on the step's linear-layer GEMM shapes, best of reps per shape: OpenBLAS sgemm, or
    with ``bf16=path`` our bf16 GEMM (rounded operands, fp32 sums) on that path."""
    from instantsoup import _C_test as _T

    total_flops, total_t = 0.0, 0.0
    rng = np.random.default_rng(0)
    for M, Nn, K, ta, tb, count in gemm_shapes(s):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((Nn, K) if tb else (K, Nn), dtype=np.float32)
        c = np.zeros((M, Nn), np.float32)
        _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), bf16=bf16)
        dt = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), bf16=bf16)
            dt = min(dt, time.perf_counter() - t0)
        total_flops += 2.0 * M * Nn * K * count
        total_t += dt * count
    return total_flops / total_t / 1e9


def make_checkpoint(s, d):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"], intermediate_size=s["inter"],
                                  max_position_embeddings=512, num_labels=2, hidden_dropout_prob=0.1,
                                  attention_probs_dropout_prob=0.1)
    hf = transformers.BertForSequenceClassification(cfg)
    hf.save_pretrained(d)
    return hf


def batch_for(s, rng):
    B, T = s["batch"], s["seq"]
    ids = rng.integers(1000, VOCAB, (B, T))
    am = np.ones((B, T), np.int64)
    for b in range(B):
        am[b, rng.integers(T // 2, T + 1):] = 0
    return dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros((B, T), np.int64)), rng.integers(0, 2, B)


def bench_torch(hf, batch, y, steps, warmup, bf16=False):
    import contextlib

    import torch

    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=2e-5, weight_decay=0.01)
    tb = {k: torch.tensor(v) for k, v in batch.items()}
    ty = torch.tensor(y)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = hf(**tb, labels=ty).loss
        loss.float().backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_ours(d, batch, y, steps, warmup, precision="fp32"):
    import instantsoup

    model = instantsoup.load_model(d, precision=precision).train()
    opt = instantsoup.AdamW(model, lr=2e-5, weight_decay=0.01)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.train_step(batch, y)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,minilm", help=f"comma-separated, from {','.join(SIZES)}")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    ap.add_argument("--seq", type=int, default=None, help="override the sequence length")
    ap.add_argument("--precision", default="fp32,bf16", help="our precisions to time: fp32, bf16 or both")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-torch-bf16", action="store_true",
                    help="no torch bf16 autocast column (on CPUs without bf16 arithmetic one such step takes minutes)")
    ap.add_argument("--wait-policy", default="passive", help="OMP_WAIT_POLICY for both sides: passive, active, default")
    args = ap.parse_args(argv)
    precisions = [p for p in args.precision.split(",") if p]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        ap.error(f"--precision: expected fp32, bf16 or fp32,bf16, got {args.precision!r}")

    import torch

    import instantsoup

    torch.set_num_threads(args.threads)
    instantsoup.set_num_threads(args.threads)
    info = instantsoup.build_info()
    isa = instantsoup.precision.get_isa()
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} threads={args.threads} torch={torch.__version__} "
          f"blas={info['blas']} {info['blas_version']} core={info['blas_corename']} bf16 path={isa} "
          f"(available: {info['isa_available']})")
    head = f"{'size':7s} {'B':>3s} {'T':>4s} {'torch32 ms':>10s} {'torch16 ms':>10s}"
    for p in precisions:
        head += f" {'ours ' + p + ' ms':>12s} {'t32/ours':>8s} {'t16/ours':>8s} {'GF/s':>6s}"
    head += f" {'sgemm GF/s':>10s} {'bf16 GF/s':>9s} {'RSS MB':>7s} {'load':>9s}"
    print(head)
    rng = np.random.default_rng(0)
    for name in args.sizes.split(","):
        s = dict(SIZES[name])
        if args.batch:
            s["batch"] = args.batch
        if args.seq:
            s["seq"] = args.seq
        batch, y = batch_for(s, rng)
        load0 = os.getloadavg()[0]
        ours = {}
        with tempfile.TemporaryDirectory() as d:
            hf = make_checkpoint(s, d)
            for p in precisions:
                ours[p] = bench_ours(d, batch, y, args.steps, args.warmup, p)
        rss = peak_rss_mb()  # ours only: torch has not run a step in this process yet
        nan = float("nan")
        t32 = nan if args.skip_torch else bench_torch(hf, batch, y, args.steps, args.warmup)
        t16 = nan if args.skip_torch or args.skip_torch_bf16 else bench_torch(hf, batch, y, args.steps, args.warmup, bf16=True)
        del hf
        fl = train_flops(s)
        sg = sgemm_gflops(s)
        bg = sgemm_gflops(s, bf16=isa) if "bf16" in precisions else nan
        row = f"{name:7s} {s['batch']:3d} {s['seq']:4d} {t32 * 1e3:10.1f} {t16 * 1e3:10.1f}"
        for p in precisions:
            row += f" {ours[p] * 1e3:12.1f} {t32 / ours[p]:8.2f} {t16 / ours[p]:8.2f} {fl / ours[p] / 1e9:6.1f}"
        row += f" {sg:10.1f} {bg:9.1f} {rss:7.0f} {load0:4.1f}-{os.getloadavg()[0]:<4.1f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
