/*
 * bert.h -- a BERT sequence classifier around the encoder stack: embeddings (word + position +
 * token type, LayerNorm, dropout), the post-LN encoder (encoder.h), pooler (tanh dense on the
 * first token), dropout, classifier, cross-entropy or MSE. Owns its buffers.
 *
 * Dimension legend: B, T, C, V vocabulary, TP max positions, TV token types, NL labels.
 *
 * Parameter buffer (float32, one allocation; gradients use the same layout):
 *   [ encoder (encoder.h; its 4 prunable tensors first) | wte (V,C) | wpe (TP,C) | wtt (TV,C) |
 *     embln_w (C) | embln_b (C) | poolw (C,C) | poolb (C) | clsw (NL,C) | clsb (NL) ]
 * Masks: one uint8 per prunable weight, over [0, P) of the buffer.
 */
#ifndef ISP_BERT_H
#define ISP_BERT_H

#include <stdint.h>

#include "encoder.h"
#include "optim.h"

typedef struct {
    int V, TP, TV, NL;
    float p_cls; /* dropout before the classifier */
    int pad_id;  /* word embedding row that gets no gradient (torch padding_idx); -1: none */
    encoder_config enc;
} bert_config;

#define BERT_NUM_EXTRA 9
typedef struct {
    encoder_params enc;
    float *wte, *wpe, *wtt, *embln_w, *embln_b, *poolw, *poolb, *clsw, *clsb;
} bert_params;

typedef struct {
    float *emb, *emb_mean, *emb_rstd; /* (B,T,C) sum of embeddings, LN stats (B,T) */
    float *x0;                        /* (B,T,C) encoder input */
    float *pooled, *pooled_d;         /* (B,C) tanh output, after dropout */
    float *logits, *probs, *dlogits;  /* (B,NL) */
    float *dpooled, *dpre;            /* (B,C) */
    float *dio;                       /* (B,T,C) */
    uint8_t *amask;                   /* (B,T) */
    encoder_acts enc;
} bert_acts;

typedef struct {
    bert_config cfg;
    int64_t num_params, num_prunable;
    float *params, *grads;
    uint8_t *masks;
    bert_params p, g;
    float *acts_mem;
    int64_t acts_cap; /* floats */
    bert_acts a;
    uint64_t seed, step; /* dropout RNG: step counts training-mode forward passes */
    int training;
} bert_model;

/* Tensor table: names ("enc.qkvw", ..., "wte", ...), offsets and sizes in layout order. */
int bert_num_tensors(void);
const char *bert_tensor_name(int i);
void bert_tensor_span(const bert_config *cfg, int i, int64_t *offset, int64_t *size);

isp_status bert_config_check(const bert_config *cfg);
isp_status bert_init(bert_model *m, const bert_config *cfg);
void bert_free(bert_model *m);

/* Validate a batch (ids (B,T), types (B,T) or NULL) against the config. */
isp_status bert_check_inputs(const bert_model *m, const int32_t *ids, const int32_t *types, int B,
                             int T);
/* Labels: int32 in [0,NL) for classification, finite float32 for regression (NL == 1). */
isp_status bert_check_labels(const bert_model *m, const void *labels, int B);

/* logits (B,NL) out (may be NULL: kept inside). amask (B,T) or NULL. */
isp_status bert_forward(bert_model *m, float *logits, const int32_t *ids, const int32_t *types,
                        const uint8_t *amask, int B, int T);
/* forward + loss + backward; grads are zeroed first, masked gradients zeroed after. */
isp_status bert_forward_backward(bert_model *m, float *loss, float *logits, const int32_t *ids,
                                 const int32_t *types, const uint8_t *amask, const void *labels,
                                 int B, int T, float smoothing);
/* forward_backward + clip + AdamW + re-mask */
isp_status bert_train_step(bert_model *m, float *loss, float *grad_norm, float *mom1, float *mom2,
                           const int64_t *seg, const uint8_t *decay, int S, const adamw_hparams *hp,
                           const int32_t *ids, const int32_t *types, const uint8_t *amask,
                           const void *labels, int B, int T, float smoothing);

#endif /* ISP_BERT_H */
