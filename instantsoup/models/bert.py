"""BERT (``BertForSequenceClassification``): the encoder family of the original engine.

Post-LN encoder, word + position + token type embeddings, a tanh pooler on the first token and a
linear classifier. ``BertConfig`` / ``BertModel`` are the family-neutral EncoderConfig /
EncoderClassifier (kept under their first names).
"""
from __future__ import annotations

from instantsoup.models.encoder import HEAD_TANH, EncoderClassifier, EncoderConfig, Family, register

__all__ = ["BERT", "BertConfig", "BertModel", "POST_LN_LAYER", "text_embeddings"]

# module names inside a BERT-style post-LN layer (BERT, RoBERTa, ELECTRA)
POST_LN_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm", "fc1": "intermediate.dense",
                 "fc2": "output.dense", "ln2": "output.LayerNorm"}


def text_embeddings(prefix: str, token_types: bool = True) -> dict[str, str]:
    """C tensor -> HF name of BERT-style embeddings under ``prefix`` (e.g. "bert.")."""
    e = prefix + "embeddings."
    out = {"wte": e + "word_embeddings.weight", "wpe": e + "position_embeddings.weight"}
    if token_types:
        out["wtt"] = e + "token_type_embeddings.weight"
    out.update(embln_w=e + "LayerNorm.weight", embln_b=e + "LayerNorm.bias")
    return out


BERT = register(Family(
    model_type="bert", architecture="BertForSequenceClassification", prefix="bert.",
    layer="bert.encoder.layer.{l}.", layer_names=POST_LN_LAYER, embeddings=text_embeddings("bert."),
    head={"poolw": "bert.pooler.dense.weight", "poolb": "bert.pooler.dense.bias",
          "clsw": "classifier.weight", "clsb": "classifier.bias"},
    options={"head": HEAD_TANH}, base_prefixes=("embeddings.", "encoder.", "pooler."),
    ignore=("cls.", "bert.cls.")))

BertConfig = EncoderConfig
BertModel = EncoderClassifier
