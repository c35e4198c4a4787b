"""Stand-ins for the engine and pruning APIs (API.md), used only while those are not merged.

A tiny NumPy model with the engine's interface (mean-pooled embeddings -> L tanh layers -> linear
classifier; the layer weights carry BERT's prunable names) and exact NumPy versions of the pruning
primitives. Tests prefer the real ``instantsoup.load_model`` / ``magnitude_masks`` when present.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class FakeConfig:
    vocab_size: int = 50
    hidden_size: int = 16
    num_hidden_layers: int = 2
    intermediate_size: int = 16
    num_labels: int = 2

    def to_dict(self):
        return asdict(self)


class FakeModel:
    kind = "fake"

    def __init__(self, config: FakeConfig, seed: int = 0):
        self.config = config
        H, V, K = config.hidden_size, config.vocab_size, config.num_labels
        rng = np.random.default_rng(seed)
        shapes = {"bert.embeddings.word_embeddings.weight": (V, H)}
        for l in range(config.num_hidden_layers):
            shapes[f"bert.encoder.layer.{l}.intermediate.dense.weight"] = (H, H)
            shapes[f"bert.encoder.layer.{l}.intermediate.dense.bias"] = (H,)
        shapes["classifier.weight"] = (K, H)
        shapes["classifier.bias"] = (K,)
        self._p = {k: (rng.standard_normal(s) * (0.5 if len(s) == 2 else 0.0)).astype(np.float32)
                   for k, s in shapes.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self._p.items()}
        self.prunable_names = [k for k in shapes if ".encoder." in k and k.endswith("weight")]
        self.masks = {k: np.ones(self._p[k].shape, np.uint8) for k in self.prunable_names}
        self.num_labels = K
        self.problem_type = "single_label_classification"
        self.training = True
        self._seed = 0

    def state_dict(self):
        return self._p

    def load_state_dict(self, d, strict=True):
        if strict and set(d) != set(self._p):
            raise KeyError(f"state dict keys differ: {set(d) ^ set(self._p)}")
        for k, v in d.items():
            self._p[k][...] = v

    def set_masks(self, masks):
        for k in self.prunable_names:
            self.masks[k][...] = np.asarray(masks[k], np.uint8)
            self._p[k] *= self.masks[k]

    def train(self, mode=True):
        self.training = mode

    def seed(self, s):
        self._seed = s

    def _fwd(self, batch):
        ids = batch["input_ids"]
        am = batch.get("attention_mask", np.ones_like(ids)).astype(np.float32)
        E = self._p["bert.embeddings.word_embeddings.weight"]
        x = (E[ids] * am[..., None]).sum(1) / am.sum(1, keepdims=True)
        acts = [x]
        for l in range(self.config.num_hidden_layers):
            W = self._p[f"bert.encoder.layer.{l}.intermediate.dense.weight"]
            b = self._p[f"bert.encoder.layer.{l}.intermediate.dense.bias"]
            x = np.tanh(x @ W.T + b)
            acts.append(x)
        logits = x @ self._p["classifier.weight"].T + self._p["classifier.bias"]
        return logits.astype(np.float32), acts, am

    def forward(self, batch):
        return self._fwd(batch)[0]

    def forward_backward(self, batch, labels, label_smoothing=0.0):
        logits, acts, am = self._fwd(batch)
        B, K = logits.shape
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        y = np.full((B, K), label_smoothing / K, np.float32)
        y[np.arange(B), labels] += 1 - label_smoothing
        loss = float(-(y * np.log(p + 1e-12)).sum() / B)
        g = (p - y) / B
        for v in self.grads.values():
            v[...] = 0
        self.grads["classifier.weight"][...] = g.T @ acts[-1]
        self.grads["classifier.bias"][...] = g.sum(0)
        gx = g @ self._p["classifier.weight"]
        for l in reversed(range(self.config.num_hidden_layers)):
            gz = gx * (1 - acts[l + 1] ** 2)
            self.grads[f"bert.encoder.layer.{l}.intermediate.dense.weight"][...] = gz.T @ acts[l]
            self.grads[f"bert.encoder.layer.{l}.intermediate.dense.bias"][...] = gz.sum(0)
            gx = gz @ self._p[f"bert.encoder.layer.{l}.intermediate.dense.weight"]
        ids = batch["input_ids"]
        ge = gx[:, None, :] * (am / am.sum(1, keepdims=True))[..., None]
        np.add.at(self.grads["bert.embeddings.word_embeddings.weight"], ids, ge)
        for k in self.prunable_names:
            self.grads[k] *= self.masks[k]
        return loss

    def clone(self):
        m = FakeModel(self.config)
        m.copy_from(self)
        return m

    def copy_from(self, other):
        for k in self._p:
            self._p[k][...] = other._p[k]
        for k in self.masks:
            self.masks[k][...] = other.masks[k]

    def save_pretrained(self, d):
        from safetensors.numpy import save_file

        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": "fake", **self.config.to_dict()}, f)
        save_file({k: v.copy() for k, v in self._p.items()}, os.path.join(d, "model.safetensors"))


class FakeAdamW:
    def __init__(self, model, lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.model, self.lr, self.betas, self.eps, self.weight_decay = model, lr, betas, eps, weight_decay
        self.reset()

    def reset(self):
        self.step_count = 0
        self.m = {k: np.zeros_like(v) for k, v in self.model.state_dict().items()}
        self.v = {k: np.zeros_like(v) for k, v in self.model.state_dict().items()}

    def step(self, lr=None, max_grad_norm=None):
        lr = self.lr if lr is None else lr
        g = self.model.grads
        norm = float(np.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in g.values())))
        scale = min(1.0, max_grad_norm / (norm + 1e-6)) if max_grad_norm else 1.0
        self.step_count += 1
        b1, b2 = self.betas
        for k, p in self.model.state_dict().items():
            gk = g[k] * scale
            self.m[k] = b1 * self.m[k] + (1 - b1) * gk
            self.v[k] = b2 * self.v[k] + (1 - b2) * gk * gk
            mh = self.m[k] / (1 - b1 ** self.step_count)
            vh = self.v[k] / (1 - b2 ** self.step_count)
            wd = self.weight_decay if k.endswith("weight") and "LayerNorm" not in k else 0.0
            p *= 1 - lr * wd
            p -= (lr * mh / (np.sqrt(vh) + self.eps)).astype(np.float32)
            if k in self.model.masks:
                p *= self.model.masks[k]
                self.m[k] *= self.model.masks[k]
                self.v[k] *= self.model.masks[k]
        return norm

    def train_step(self, batch, labels, lr=None, max_grad_norm=None, label_smoothing=0.0):
        loss = self.model.forward_backward(batch, labels, label_smoothing)
        self.step(lr, max_grad_norm)
        return loss

    def state_dict(self):
        return {"step": self.step_count, "m": {k: v.copy() for k, v in self.m.items()},
                "v": {k: v.copy() for k, v in self.v.items()}}

    def load_state_dict(self, d):
        self.step_count = int(d["step"])
        for k in self.m:
            self.m[k][...] = d["m"][k]
            self.v[k][...] = d["v"][k]

    def copy_from(self, other):
        self.load_state_dict(other.state_dict())


class FakeMaskSet(dict):
    @property
    def sparsity(self):
        kept = sum(int(np.count_nonzero(v)) for v in self.values())
        return 1 - kept / sum(v.size for v in self.values())

    def save(self, path, **metadata):
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v, np.uint8) for k, v in self.items()}, str(path),
                  metadata={k: str(v) for k, v in metadata.items()})

    @classmethod
    def load(cls, path):
        from safetensors.numpy import load_file

        return cls(load_file(str(path)))


def _params(src):
    if hasattr(src, "prunable_names"):
        sd = src.state_dict()
        return {k: sd[k] for k in src.prunable_names}, src.masks
    return src, None


def magnitude_masks(src, sparsity, scope="global", current=None, scores=None, monotone=True):
    params, cur = _params(src)
    cur = current if current is not None else cur
    names = list(params)
    flat = np.concatenate([np.abs(np.asarray(params[k], np.float64)).ravel() for k in names])
    alive = (np.concatenate([np.asarray(cur[k]).ravel() for k in names]).astype(bool)
             if cur is not None else np.ones(flat.size, bool))
    keep = int(round((1 - sparsity) * flat.size))
    if keep > alive.sum():
        raise ValueError("cannot keep more than the current mask keeps")
    score = np.where(alive, flat, -1.0)
    order = np.lexsort((np.arange(flat.size), -score))  # by score desc, index asc
    m = np.zeros(flat.size, np.uint8)
    m[order[:keep]] = 1
    out, o = FakeMaskSet(), 0
    for k in names:
        n = params[k].size
        out[k] = m[o:o + n].reshape(params[k].shape)
        o += n
    return out


def random_masks(src, sparsity, seed, current=None):
    params, cur = _params(src)
    rng = np.random.default_rng(seed)
    return magnitude_masks({k: rng.random(v.shape).astype(np.float32) + 1e-3 for k, v in params.items()},
                           sparsity, current=current if current is not None else cur)


def merge_masks(masks, rule="union", sparsity=None, scores=None):
    keys = list(masks[0])
    if rule == "union":
        out = FakeMaskSet({k: np.any([m[k] for m in masks], 0).astype(np.uint8) for k in keys})
    elif rule == "intersection":
        out = FakeMaskSet({k: np.all([m[k] for m in masks], 0).astype(np.uint8) for k in keys})
    elif rule == "vote" and sparsity is None:
        return FakeMaskSet({k: (np.sum([m[k] for m in masks], 0) * 2 > len(masks)).astype(np.uint8) for k in keys})
    elif rule == "vote":
        votes = {k: np.sum([m[k] for m in masks], 0).astype(np.float64) for k in keys}
        mx = max(float(np.abs(scores[k]).max()) for k in keys) + 1
        return magnitude_masks({k: votes[k] * mx + np.abs(scores[k]) for k in keys}, sparsity)
    else:
        raise ValueError(rule)
    if sparsity is not None:
        return magnitude_masks({k: np.abs(scores[k]) + out[k] * 1e6 for k in keys}, sparsity)
    return out


def average_weights(sds, weights=None):
    w = np.ones(len(sds)) / len(sds) if weights is None else np.asarray(weights) / np.sum(weights)
    return {k: sum(wi * sd[k] for wi, sd in zip(w, sds)).astype(np.float32) for k in sds[0]}


FAKES = {"AdamW": FakeAdamW, "MaskSet": FakeMaskSet, "magnitude_masks": magnitude_masks,
         "random_masks": random_masks, "merge_masks": merge_masks, "average_weights": average_weights}
