"""DistilBERT (``DistilBertForSequenceClassification``): post-LN encoder without token types or
pooler; head pre_classifier + ReLU + dropout (seq_classif_dropout) + classifier on the first token.
Its config keys (dim, n_layers, ...) map onto the engine's by ``renames``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from instantsoup.models.encoder import HEAD_RELU, Family, register


def _check(d: Mapping[str, Any]) -> None:
    if d.get("sinusoidal_pos_embds"):
        raise ValueError("config: sinusoidal_pos_embds=True is not supported (frozen sinusoidal positions)")


DISTILBERT = register(Family(
    model_type="distilbert", architecture="DistilBertForSequenceClassification", prefix="distilbert.",
    layer="distilbert.transformer.layer.{l}.",
    layer_names={"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin", "o": "attention.out_lin",
                 "ln1": "sa_layer_norm", "fc1": "ffn.lin1", "fc2": "ffn.lin2", "ln2": "output_layer_norm"},
    embeddings={"wte": "distilbert.embeddings.word_embeddings.weight",
                "wpe": "distilbert.embeddings.position_embeddings.weight",
                "embln_w": "distilbert.embeddings.LayerNorm.weight", "embln_b": "distilbert.embeddings.LayerNorm.bias"},
    head={"poolw": "pre_classifier.weight", "poolb": "pre_classifier.bias",
          "clsw": "classifier.weight", "clsb": "classifier.bias"},
    options={"head": HEAD_RELU},
    renames={"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
             "hidden_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
             "attention_dropout": "attention_probs_dropout_prob", "activation": "hidden_act",
             "seq_classif_dropout": "classifier_dropout"},
    defaults={"type_vocab_size": 0, "layer_norm_eps": 1e-12, "hidden_size": 768, "num_hidden_layers": 6,
              "intermediate_size": 3072, "classifier_dropout": 0.2},
    base_prefixes=("embeddings.", "transformer."),
    ignore=("vocab_transform.", "vocab_layer_norm.", "vocab_projector."), check=_check,
    absent=("image_size", "patch_size", "type_vocab_size", "layer_norm_eps")))
