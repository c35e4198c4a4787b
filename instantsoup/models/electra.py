"""ELECTRA discriminator (``ElectraForSequenceClassification``): BERT's embeddings and encoder, no
pooler, and its own head: dropout, dense, GELU, dropout, out_proj on the first token. When
embedding_size differs from hidden_size (electra-small), the embeddings (LayerNorm and dropout in
that size) are projected to hidden_size by ``embeddings_project``."""
from __future__ import annotations

from instantsoup.models.bert import POST_LN_LAYER, text_embeddings
from instantsoup.models.encoder import HEAD_GELU, Family, register

ELECTRA = register(Family(
    model_type="electra", architecture="ElectraForSequenceClassification", prefix="electra.",
    layer="electra.encoder.layer.{l}.", layer_names=POST_LN_LAYER,
    embeddings={**text_embeddings("electra."), "embprojw": "electra.embeddings_project.weight",
                "embprojb": "electra.embeddings_project.bias"},
    head={"poolw": "classifier.dense.weight", "poolb": "classifier.dense.bias",
          "clsw": "classifier.out_proj.weight", "clsb": "classifier.out_proj.bias"},
    options={"head": HEAD_GELU, "head_dropin": 1},
    defaults={"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4, "embedding_size": 128},
    base_prefixes=("embeddings.", "encoder.", "embeddings_project."),
    ignore=("discriminator_predictions.", "generator_predictions.", "generator_lm_head."), embedding_size=True))
