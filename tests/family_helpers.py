"""Tiny random checkpoints of every encoder family, made with transformers (no hub), and batches
for them. Used by tests/test_families.py."""
from __future__ import annotations

import warnings

import numpy as np

VOCAB, MAXPOS, IMAGE, PATCH = 60, 24, 16, 4

# family -> (transformers config class, model class, config kwargs); sizes are odd on purpose
FAMILIES = {
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification",
                dict(vocab_size=VOCAB, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=50, max_position_embeddings=MAXPOS + 2, type_vocab_size=1,
                     pad_token_id=1, hidden_act="gelu")),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification",
                    dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=40, max_position_embeddings=MAXPOS + 4, type_vocab_size=1,
                         pad_token_id=3, hidden_act="gelu_new", layer_norm_eps=1e-5)),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification",
                   dict(vocab_size=VOCAB, dim=36, n_layers=2, n_heads=3, hidden_dim=50,
                        max_position_embeddings=MAXPOS, activation="gelu", pad_token_id=0)),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification",
                dict(vocab_size=VOCAB, embedding_size=24, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=MAXPOS,
                     type_vocab_size=2, hidden_act="gelu")),
    "vit": ("ViTConfig", "ViTForImageClassification",
            dict(image_size=IMAGE, patch_size=PATCH, num_channels=3, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, hidden_act="gelu")),
}

DROPOUT_KEYS = {"distilbert": ("dropout", "attention_dropout", "seq_classif_dropout")}


def make_family(family: str, path, num_labels: int = 3, seed: int = 0, dropout: float = 0.0):
    """Save a random ``<Family>For...Classification`` to ``path``; returns the torch model (eval)."""
    import torch
    import transformers

    cfg_cls, model_cls, kw = FAMILIES[family]
    kw = dict(kw, num_labels=num_labels)
    for k in DROPOUT_KEYS.get(family, ("hidden_dropout_prob", "attention_probs_dropout_prob")):
        kw[k] = dropout
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = getattr(transformers, cfg_cls)(attn_implementation="eager", **kw)
        hf = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # random, non-trivial LayerNorm parameters and biases
        for n, p in hf.named_parameters():
            if is_layernorm(n) and n.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif n.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif n.endswith(("cls_token", "position_embeddings")):
                p.normal_(0.0, 0.1)
    hf.save_pretrained(str(path))
    return hf


# transformers 5 renamed ViT's modules; the published checkpoints (and the engine) use these names
_VIT_LEGACY = (("vit.layers.", "vit.encoder.layer."), ("attention.q_proj", "attention.attention.query"),
               ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
               ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
               ("mlp.fc2", "output.dense"))


def published_name(name: str) -> str:
    """A parameter name of the installed transformers -> its name in published checkpoints."""
    for new, old in _VIT_LEGACY:
        name = name.replace(new, old)
    return "encoder.layer." + name[len("layers."):] if name.startswith("layers.") else name


def named_parameters(hf) -> dict:
    """Published name -> parameter of a transformers model."""
    return {published_name(n): p for n, p in hf.named_parameters()}


def is_layernorm(name: str) -> bool:
    return "layernorm" in name.lower() or "layer_norm" in name.lower()


def make_batch(family: str, rng, num_labels: int = 3, B: int = 4, T: int = 9):
    """(batch dict of NumPy arrays, labels) with padding (text) or random images (ViT)."""
    y = rng.normal(size=B).astype(np.float32) if num_labels == 1 else rng.integers(0, num_labels, B)
    if family == "vit":
        return {"pixel_values": rng.normal(size=(B, 3, IMAGE, IMAGE)).astype(np.float32)}, y
    pad = FAMILIES[family][2]["pad_token_id"] if "pad_token_id" in FAMILIES[family][2] else 0
    ids = rng.integers(0, VOCAB, (B, T))
    ids[ids == pad] = pad + 1  # pads only where the mask says so
    am = np.ones((B, T), np.int64)
    for b, n in enumerate([T, T - 3, 4, 2][:B]):
        am[b, n:] = 0
        ids[b, n:] = pad
    batch = dict(input_ids=ids, attention_mask=am)
    if family == "electra":
        tt = np.zeros((B, T), np.int64)
        tt[:, T // 2:] = 1
        batch["token_type_ids"] = tt * am
    return batch, y


def hf_logits_loss(hf, batch, y):
    import torch

    out = hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(y))
    return out.loss, out.logits
