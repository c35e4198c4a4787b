"""One training step of a CLIP ViT-B/32-sized vision tower: instantsoup (C) vs PyTorch.

The step is what ISP runs thousands of times: forward through the vision tower, cosine logits
against a frozen zero-shot head, cross-entropy, backward, gradient clipping, masked AdamW.
Weights are random (same in both), so no checkpoint is needed.

    python benchmarks/train_step_clip.py --batch 16 --steps 3 [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

import _checkout  # noqa: E402,F401  (installed instantsoup, else this checkout's in-place build)


def build(args):
    import torch
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel as HFModel

    from instantsoup.models.clip import CLIPModel
    from instantsoup.models.clip_config import CLIPConfig

    v = dict(hidden_size=args.width, intermediate_size=4 * args.width, num_hidden_layers=args.layers,
             num_attention_heads=args.width // 64, image_size=args.image_size, patch_size=args.patch)
    t = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, vocab_size=100,
             max_position_embeddings=16, eos_token_id=1, bos_token_id=0)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hc = HFConfig(vision_config=v, text_config=t, projection_dim=512)
        hf = HFModel(hc)
    cfg = CLIPConfig.from_dict(hc.to_dict())
    ours = CLIPModel(cfg)
    sd = {k: p.detach().numpy() for k, p in hf.state_dict().items()}
    ours.load_state_dict({k: sd[k] for k in ours.state_dict()})
    rng = np.random.default_rng(0)
    head = rng.standard_normal((args.classes, 512)).astype(np.float32)
    head *= 100.0 / np.linalg.norm(head, axis=1, keepdims=True)
    ours.set_head(head)
    return hf, ours, head


def bench_ours(ours, px, labels, steps, sparsity):
    rng = np.random.default_rng(1)
    if sparsity > 0:
        ours.set_masks({k: (rng.random(m.shape) >= sparsity).astype(np.uint8) for k, m in ours.masks.items()})
    seg, dec = ours._optim_segments()
    m1 = np.zeros(ours.num_parameters, np.float32)
    m2 = np.zeros(ours.num_parameters, np.float32)
    ours.train()
    times = []
    for s in range(1, steps + 2):  # the first step allocates; not timed
        t0 = time.perf_counter()
        ours._train_step(m1, m2, seg, dec, (1e-5, 0.9, 0.999, 1e-8, 0.1, s, 1.0), {"pixel_values": px}, labels, 0.0)
        times.append(time.perf_counter() - t0)
    return times[1:]


def bench_torch(hf, head, px, labels, steps, threads):
    import torch

    torch.set_num_threads(threads)
    params = [p for k, p in hf.named_parameters() if k.startswith(("vision_model.", "visual_projection."))]
    for k, p in hf.named_parameters():
        p.requires_grad_(k.startswith(("vision_model.", "visual_projection.")))
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)
    H = torch.from_numpy(head)
    X = torch.from_numpy(px)
    Y = torch.from_numpy(labels.astype(np.int64))
    hf.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        f = hf.get_image_features(pixel_values=X).pooler_output
        logits = (f / f.norm(dim=-1, keepdim=True)) @ H.T
        loss = torch.nn.functional.cross_entropy(logits, Y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--sparsity", type=float, default=0.0, help="random masks at this sparsity (same cost: dense kernels)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import instantsoup

    threads = args.threads or instantsoup.get_num_threads()
    instantsoup.set_num_threads(threads)
    hf, ours, head = build(args)
    rng = np.random.default_rng(2)
    px = rng.standard_normal((args.batch, 3, args.image_size, args.image_size)).astype(np.float32)
    labels = rng.integers(0, args.classes, args.batch)
    res = {"model": f"ViT width {args.width}, {args.layers} layers, patch {args.patch}, image {args.image_size}",
           "batch": args.batch, "threads": threads, "params_vision": ours.num_parameters,
           "blas": instantsoup.build_info().get("blas_corename")}
    t = bench_ours(ours, px, labels, args.steps, args.sparsity)
    res["instantsoup_s_per_step"] = float(np.median(t))
    res["instantsoup_images_per_s"] = args.batch / float(np.median(t))
    if not args.skip_torch:
        tt = bench_torch(hf, head, px, labels, args.steps, threads)
        res["torch_s_per_step"] = float(np.median(tt))
        res["torch_images_per_s"] = args.batch / float(np.median(tt))
        res["speedup_vs_torch"] = res["torch_s_per_step"] / res["instantsoup_s_per_step"]
        import torch

        res["torch_version"] = torch.__version__
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
