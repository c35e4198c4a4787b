"""sha256 of the masks and weights of short, seeded BERT and CLIP runs (ISP with dropout on, two
threads), so a refactor of the engine can prove it changes no bit: tests/test_bitwise.py compares
them with the values recorded in tests/data/bitwise_sha256.json on the commit before the refactor.

Run as a script to print the record for this machine: ``python tests/bitwise_runs.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
if __name__ == "__main__":  # a source checkout with the extension built in place
    sys.path.insert(1, os.path.dirname(_HERE))


def _digest(masks, weights) -> str:
    h = hashlib.sha256()
    for k in sorted(masks):
        h.update(k.encode())
        h.update(np.ascontiguousarray(masks[k], dtype=np.uint8).tobytes())
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def machine_key() -> str:
    import instantsoup

    info = instantsoup.build_info()
    return f"{info['blas_corename']}"


def run_all(threads: int = 2) -> dict[str, str]:
    """The digests: ``bert_isp`` and ``clip_isp`` with plain shuffled batches (``length_buckets=0``,
    the data order the record was made with), ``bert_isp_buckets`` with the trainer's default
    length-bucketed batches (CLIP's images have no lengths: one run)."""
    import instantsoup
    from instantsoup import methods
    from instantsoup.config import PruneSettings, Settings, TrainSettings

    from clip_helpers import tiny_clip
    from conftest import build_tiny_bert, make_tiny_task
    from test_clip_isp import colour_task

    prev = instantsoup.get_num_threads()
    instantsoup.set_num_threads(threads)
    out = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "bert").mkdir()
            build_tiny_bert(d / "bert")
            for key, buckets in (("bert_isp", 0), ("bert_isp_buckets", TrainSettings.length_buckets)):
                model = instantsoup.load_model(d / "bert", num_labels=2, seed=0)
                s = Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=2, seed=1, length_buckets=buckets),
                             prune=PruneSettings(method="isp", sparsity=0.5, step=0.5, t=2, denoisers=2,
                                                 lookahead=2))
                t = methods.instant_soup(model, make_tiny_task(), s, progress=False)
                out[key] = _digest(t.masks, model.state_dict())
            (d / "clip").mkdir()
            tiny_clip(d / "clip", tokenizer=False)  # (a trained BPE vocabulary varies run to run)
            ds, task = colour_task(np.random.default_rng(1234))
            model = instantsoup.load_model(d / "clip", num_labels=3, seed=0)  # a linear-probe head
            s = Settings(train=TrainSettings(batch_size=16, lr=1e-3, epochs=2, seed=1),
                         prune=PruneSettings(method="isp", sparsity=0.5, step=0.5, t=2, denoisers=2, lookahead=2))
            t = methods.instant_soup(model, task, s, progress=False)
            out["clip_isp"] = _digest(t.masks, model.state_dict())
    finally:
        instantsoup.set_num_threads(prev)
    return out


if __name__ == "__main__":
    print(json.dumps({machine_key(): run_all()}, indent=2))
