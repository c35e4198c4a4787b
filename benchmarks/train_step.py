"""Time one training step (forward + backward + AdamW) in instantsoup and in PyTorch.

Same config, batch, sequence length and thread count on both sides; random weights and tokens
(no download). Prints ms/step for both, the ratio, our GFLOP/s, and the sgemm GFLOP/s that
OpenBLAS reaches on the same GEMM shapes (through _T.sgemm).

    python benchmarks/train_step.py --sizes tiny,minilm --steps 5 --threads 2
"""
from __future__ import annotations

import os
import sys

# run from a source checkout (after build_ext --inplace) as well as against an installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def sgemm_gflops(s, reps=3) -> float:
    """OpenBLAS (its own threads) on the step's linear-layer GEMM shapes; best of reps per shape."""
    from instantsoup import _C_test as _T

    total_flops, total_t = 0.0, 0.0
    rng = np.random.default_rng(0)
    for M, Nn, K, ta, tb, count in gemm_shapes(s):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((Nn, K) if tb else (K, Nn), dtype=np.float32)
        c = np.zeros((M, Nn), np.float32)
        _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb))
        dt = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb))
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


def bench_torch(hf, batch, y, steps, warmup):
    import torch

    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=2e-5, weight_decay=0.01)
    tb = {k: torch.tensor(v) for k, v in batch.items()}
    ty = torch.tensor(y)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = hf(**tb, labels=ty).loss
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_ours(d, batch, y, steps, warmup):
    import instantsoup

    model = instantsoup.load_model(d).train()
    opt = instantsoup.AdamW(model, lr=2e-5, weight_decay=0.01)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.train_step(batch, y)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,minilm", help=f"comma-separated, from {','.join(SIZES)}")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    ap.add_argument("--seq", type=int, default=None, help="override the sequence length")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--wait-policy", default="passive", help="OMP_WAIT_POLICY for both sides: passive, active, default")
    args = ap.parse_args(argv)

    import torch

    import instantsoup

    torch.set_num_threads(args.threads)
    instantsoup.set_num_threads(args.threads)
    info = instantsoup.build_info()
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} threads={args.threads} torch={torch.__version__} blas={info['blas']} {info['blas_version']} "
          f"core={info['blas_corename']}")
    print(f"{'size':8s} {'B':>3s} {'T':>4s} {'torch ms':>9s} {'ours ms':>9s} {'ratio':>6s} "
          f"{'our GF/s':>9s} {'torch GF/s':>10s} {'sgemm GF/s':>10s}")
    rng = np.random.default_rng(0)
    for name in args.sizes.split(","):
        s = dict(SIZES[name])
        if args.batch:
            s["batch"] = args.batch
        if args.seq:
            s["seq"] = args.seq
        batch, y = batch_for(s, rng)
        with tempfile.TemporaryDirectory() as d:
            hf = make_checkpoint(s, d)
            ours = bench_ours(d, batch, y, args.steps, args.warmup)
        tt = float("nan") if args.skip_torch else bench_torch(hf, batch, y, args.steps, args.warmup)
        del hf
        fl = train_flops(s)
        sg = sgemm_gflops(s)
        print(f"{name:8s} {s['batch']:3d} {s['seq']:4d} {tt * 1e3:9.1f} {ours * 1e3:9.1f} {tt / ours:6.2f} "
              f"{fl / ours / 1e9:9.1f} {fl / tt / 1e9:10.1f} {sg:10.1f}", flush=True)


if __name__ == "__main__":
    main()
