"""RoBERTa and XLM-RoBERTa (``RobertaForSequenceClassification``): BERT's encoder with position ids
offset by the padding index (pads sit at ``pad_token_id``, tokens at ``pad_token_id + 1 + i``; the
padding row of both embeddings gets no gradient) and a head of dropout, dense, tanh, dropout,
out_proj on the first token. No pooler (a base checkpoint's pooler is ignored)."""
from __future__ import annotations

from instantsoup.models.bert import POST_LN_LAYER, text_embeddings
from instantsoup.models.encoder import HEAD_TANH, Family, register

_HEAD = {"poolw": "classifier.dense.weight", "poolb": "classifier.dense.bias",
         "clsw": "classifier.out_proj.weight", "clsb": "classifier.out_proj.bias"}


def _family(model_type: str, architecture: str) -> Family:
    return Family(
        model_type=model_type, architecture=architecture, prefix="roberta.", layer="roberta.encoder.layer.{l}.",
        layer_names=POST_LN_LAYER, embeddings=text_embeddings("roberta."), head=_HEAD,
        options={"head": HEAD_TANH, "head_dropin": 1, "pad_positions": 1},
        defaults={"pad_token_id": 1},
        base_prefixes=("embeddings.", "encoder.", "pooler."), ignore=("lm_head.", "roberta.pooler."))


ROBERTA = register(_family("roberta", "RobertaForSequenceClassification"))
XLM_ROBERTA = register(_family("xlm-roberta", "XLMRobertaForSequenceClassification"))
