"""Time one training step (forward + backward + AdamW) in instantsoup and in PyTorch.

Same config, batch, sequence length and thread count on every side, all measured in one run; random
weights and tokens (no download), dropout 0.1. Columns: PyTorch fp32, PyTorch with
``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward pass, ours in each ``--precision``,
ratios torch / ours, our GFLOP/s (matmul FLOPs of the step), the peaks measured on the step's
linear-layer GEMM shapes (OpenBLAS sgemm, and our bf16 GEMM on the path this CPU selects; both
through the test-only instantsoup._C_test.sgemm, our threads) with the bf16 GEMM's relative error
against sgemm on those shapes (a check that the timed path computes the product), our peak RSS (our
steps run in a spawned child process that never imports torch, so its peak is ours alone), and the
load average (shared machines).

``--threads`` takes a list (``1,2,4,8,16``): every size is timed at every count in one process, then a
scaling table gives each column's speed-up over the smallest count. ``--torch-cuda`` adds PyTorch's
bf16-autocast step on the GPU (the device machine's reference). ``--json PATH`` writes every row.

    python benchmarks/train_step.py --sizes tiny,minilm --steps 5 --threads 2 --precision fp32,bf16
    python benchmarks/train_step.py --sizes minilm,base --threads 1,2,4,8,16 --json scaling.json
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
import json
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


def sgemm_gflops(s, reps=3, bf16=None) -> tuple[float, float]:
    """GFLOP/s on the step's linear-layer GEMM shapes, best of reps per shape: OpenBLAS sgemm, or
    with ``bf16=path`` our bf16 GEMM (rounded operands, fp32 sums) on that path. Second: with
    ``bf16``, the worst relative error ||C_bf16 - C_sgemm||_F / ||C_sgemm||_F over the shapes, the
    check that the timed path computes the product (bf16 rounding of random operands gives ~3e-3;
    a broken kernel gives ~1), else NaN."""
    from instantsoup import _C_test as _T

    total_flops, total_t, worst = 0.0, 0.0, float("nan") if bf16 is None else 0.0
    rng = np.random.default_rng(0)
    for M, Nn, K, ta, tb, count in gemm_shapes(s):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((Nn, K) if tb else (K, Nn), dtype=np.float32)
        c = np.zeros((M, Nn), np.float32)
        _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), bf16=bf16)
        if bf16 is not None:
            ref = np.zeros_like(c)
            _T.sgemm(a, b, ref, trans_a=bool(ta), trans_b=bool(tb))
            worst = max(worst, float(np.linalg.norm(c - ref) / np.linalg.norm(ref)))
        dt = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            _T.sgemm(a, b, c, trans_a=bool(ta), trans_b=bool(tb), bf16=bf16)
            dt = min(dt, time.perf_counter() - t0)
        total_flops += 2.0 * M * Nn * K * count
        total_t += dt * count
    return total_flops / total_t / 1e9, worst


def make_checkpoint(s, d):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"], intermediate_size=s["inter"],
                                  max_position_embeddings=512, num_labels=2, hidden_dropout_prob=0.1,
                                  attention_probs_dropout_prob=0.1)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)


def batch_for(s, rng):
    B, T = s["batch"], s["seq"]
    ids = rng.integers(1000, VOCAB, (B, T))
    am = np.ones((B, T), np.int64)
    for b in range(B):
        am[b, rng.integers(T // 2, T + 1):] = 0
    return dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros((B, T), np.int64)), rng.integers(0, 2, B)


def bench_torch(hf, batch, y, steps, warmup, bf16=False, device="cpu"):
    import contextlib

    import torch

    hf.to(device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=2e-5, weight_decay=0.01)
    tb = {k: torch.tensor(v, device=device) for k, v in batch.items()}
    ty = torch.tensor(y, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = hf(**tb, labels=ty).loss
        loss.float().backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    hf.to("cpu")
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


def _ours_child(job):
    """In a fresh process (no torch imported): our step time and the process's peak RSS in MB."""
    import resource

    import instantsoup

    d, batch, y, steps, warmup, precision, threads = job
    instantsoup.set_num_threads(threads)
    t = bench_ours(d, batch, y, steps, warmup, precision)
    # VmHWM is this address space's peak. ru_maxrss is not ours alone: Linux carries the parent's
    # peak across the fork + exec that starts a spawned child, so a parent that already held a
    # larger torch model reported its own peak here.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return t, int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ours_in_child(d, batch, y, steps, warmup, precision, threads):
    """bench_ours in a spawned child, so that its peak RSS is ours alone (this process holds torch)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_ours_child, ((d, batch, y, steps, warmup, precision, threads),))


def int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts >= 1 like 1,2,4, got {text!r}")
    return out


def scaling_table(rows, columns) -> list[str]:
    """Each column's speed-up over the smallest thread count of its size: t(min threads) / t(n)."""
    lines = [f"{'size':7s} {'threads':>7s} " + " ".join(f"{c:>12s}" for c in columns)]
    for size in dict.fromkeys(r["size"] for r in rows):
        mine = sorted((r for r in rows if r["size"] == size), key=lambda r: r["threads"])
        base = mine[0]
        for r in mine:
            cells = [base[c] / r[c] if r[c] == r[c] and base[c] == base[c] else float("nan") for c in columns]
            lines.append(f"{size:7s} {r['threads']:7d} " + " ".join(f"{v:11.2f}x" for v in cells))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,minilm", help=f"comma-separated, from {','.join(SIZES)}")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int_list, default=[2],
                    help="thread count, or a list (1,2,4,8,16): a scaling table")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    ap.add_argument("--seq", type=int, default=None, help="override the sequence length")
    ap.add_argument("--precision", default="fp32,bf16", help="our precisions to time: fp32, bf16 or both")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-torch-bf16", action="store_true",
                    help="no torch bf16 autocast column (on CPUs without bf16 arithmetic one such step takes minutes)")
    ap.add_argument("--torch-cuda", action="store_true", help="add PyTorch's bf16-autocast step on the GPU")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every row (and the machine) as JSON")
    ap.add_argument("--wait-policy", default="passive", help="OMP_WAIT_POLICY for both sides: passive, active, default")
    args = ap.parse_args(argv)
    precisions = [p for p in args.precision.split(",") if p]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        ap.error(f"--precision: expected fp32, bf16 or fp32,bf16, got {args.precision!r}")
    sizes = [n for n in args.sizes.split(",") if n]
    if not sizes or any(n not in SIZES for n in sizes):
        ap.error(f"--sizes: expected names from {','.join(SIZES)}, got {args.sizes!r}")

    import torch
    import transformers

    import instantsoup

    transformers.utils.logging.disable_progress_bar()
    if args.torch_cuda and not torch.cuda.is_available():
        ap.error("--torch-cuda: PyTorch sees no GPU here")
    info = instantsoup.build_info()
    isa = instantsoup.precision.get_isa()
    machine = dict(OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY"), torch=torch.__version__, blas=info["blas"],
                   blas_version=info["blas_version"], blas_core=info["blas_corename"], bf16_path=isa,
                   isa_available=info["isa_available"], cpu=cpu_name(), cores=os.cpu_count(),
                   gpu=torch.cuda.get_device_name(0) if args.torch_cuda else None)
    print(" ".join(f"{k}={v}" for k, v in machine.items() if v is not None))
    head = f"{'size':7s} {'thr':>3s} {'B':>3s} {'T':>4s} {'torch32 ms':>10s} {'torch16 ms':>10s}"
    for p in precisions:
        head += f" {'ours ' + p + ' ms':>12s} {'t32/ours':>8s} {'t16/ours':>8s} {'GF/s':>6s}"
    head += f" {'sgemm GF/s':>10s} {'bf16 GF/s':>9s} {'bf16 err':>8s} {'RSS MB':>7s} {'load':>9s}"
    if args.torch_cuda:
        head += f" {'cuda16 ms':>9s}"
    rng = np.random.default_rng(0)
    nan = float("nan")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        shapes = {}
        for name in sizes:
            s = dict(SIZES[name])
            if args.batch:
                s["batch"] = args.batch
            if args.seq:
                s["seq"] = args.seq
            batch, y = batch_for(s, rng)
            d = os.path.join(root, name)
            make_checkpoint(s, d)
            shapes[name] = (s, batch, y, d)
        print(head)
        for threads in args.threads:
            torch.set_num_threads(threads)
            instantsoup.set_num_threads(threads)
            for name in sizes:
                s, batch, y, d = shapes[name]
                load0 = os.getloadavg()[0]
                got = {p: ours_in_child(d, batch, y, args.steps, args.warmup, p, threads) for p in precisions}
                ours = {p: t for p, (t, _) in got.items()}
                rss = max(r for _, r in got.values())
                hf = transformers.BertForSequenceClassification.from_pretrained(d)
                t32 = nan if args.skip_torch else bench_torch(hf, batch, y, args.steps, args.warmup)
                t16 = (nan if args.skip_torch or args.skip_torch_bf16
                       else bench_torch(hf, batch, y, args.steps, args.warmup, bf16=True))
                cuda = (bench_torch(hf, batch, y, args.steps, args.warmup, bf16=True, device="cuda")
                        if args.torch_cuda else nan)
                del hf
                fl = train_flops(s)
                sg = sgemm_gflops(s)[0]
                bg, berr = sgemm_gflops(s, bf16=isa) if "bf16" in precisions else (nan, nan)
                r = dict(size=name, threads=threads, batch=s["batch"], seq=s["seq"], torch_fp32=t32, torch_bf16=t16,
                         torch_cuda_bf16=cuda, **{f"ours_{p}": ours[p] for p in precisions}, sgemm_gflops=sg,
                         bf16_gflops=bg, bf16_gemm_rel_err=berr, rss_mb=rss, load=(load0, os.getloadavg()[0]))
                rows.append(r)
                line = f"{name:7s} {threads:3d} {s['batch']:3d} {s['seq']:4d} {t32 * 1e3:10.1f} {t16 * 1e3:10.1f}"
                for p in precisions:
                    line += (f" {ours[p] * 1e3:12.1f} {t32 / ours[p]:8.2f} {t16 / ours[p]:8.2f}"
                             f" {fl / ours[p] / 1e9:6.1f}")
                line += f" {sg:10.1f} {bg:9.1f} {berr:8.1e} {rss:7.0f} {load0:4.1f}-{os.getloadavg()[0]:<4.1f}"
                if args.torch_cuda:
                    line += f" {cuda * 1e3:9.2f}"
                print(line, flush=True)
                if args.json:  # after every row: a run stopped at a time limit keeps what it measured
                    write_json(args.json, machine, args, rows)
    if len(args.threads) > 1:
        columns = ["torch_fp32", "torch_bf16"] + [f"ours_{p}" for p in precisions]
        print("\nspeed-up over the fewest threads (time at the fewest / time at n):")
        print("\n".join(scaling_table(rows, columns)))


def write_json(path, machine, args, rows):
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    with open(path, "w") as f:  # NaN (a column not timed) as null: strict JSON
        json.dump(dict(machine=machine, steps=args.steps, warmup=args.warmup, rows=clean), f, indent=1)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
