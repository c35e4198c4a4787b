/*
 * classifier.h -- one encoder classifier for every family (BERT, RoBERTa / XLM-RoBERTa,
 * DistilBERT, ELECTRA, ViT): embeddings, the encoder stack (encoder.h), a head on the first
 * token, cross-entropy or MSE. The families differ only in the options of clf_config:
 *
 *   family       emb      token types  positions        encoder  final LN  head
 *   BERT         tokens   TV >= 1      0..T-1           post-LN  -         tanh pooler, drop, out
 *   RoBERTa      tokens   TV >= 1      from pad_id      post-LN  -         drop, dense, tanh, drop, out
 *   DistilBERT   tokens   TV = 0       0..T-1           post-LN  -         dense, relu, drop, out
 *   ELECTRA      tokens   TV >= 1      0..T-1           post-LN  -         drop, dense, gelu, drop, out
 *   ViT          patches  -            0..T-1 (+cls)    pre-LN   yes       out
 *
 * Dimension legend: B, T, C, V vocabulary, TP positions, TV token types, NL labels, IH image
 * size, PS patch size, NP = (IH/PS)^2 patches, K = 3*PS*PS.
 *
 * Parameter buffer (float32, one allocation; gradients use the same layout; absent tensors have
 * size 0 and a NULL pointer):
 *   [ encoder (encoder.h; its 4 prunable tensors first) | wte (V,E) | wpe (TP,E) | wtt (TV,E) |
 *     embln_w (E) | embln_b (E) | embprojw (C,E) | embprojb (C) | patchw (C,K) | patchb (C) |
 *     cls (C) | lnf_w (C) | lnf_b (C) | poolw (C,C) | poolb (C) | clsw (NL,C) | clsb (NL) ]
 * (E = C and no embprojw/embprojb unless the config sets another embedding size.)
 * Text models have wte..embln_b; ViT has wpe (T,C), patchw, patchb, cls, lnf_w, lnf_b. The head
 * dense (poolw, poolb) exists unless head == CLF_HEAD_LINEAR.
 * Masks: one uint8 per prunable weight, over [0, P) of the buffer.
 */
#ifndef ISP_CLASSIFIER_H
#define ISP_CLASSIFIER_H

#include <stdint.h>

#include "encoder.h"
#include "model.h"

typedef enum { CLF_EMB_TOKENS = 0, CLF_EMB_PATCHES = 1 } clf_emb;

/* What the head does between the first token and the output layer. */
typedef enum {
    CLF_HEAD_LINEAR = 0, /* nothing (ViT) */
    CLF_HEAD_TANH = 1,   /* dense + tanh (BERT's pooler, RoBERTa) */
    CLF_HEAD_GELU = 2,   /* dense + GELU (ELECTRA) */
    CLF_HEAD_RELU = 3,   /* dense + ReLU (DistilBERT's pre_classifier) */
} clf_head;

typedef struct {
    clf_emb emb;
    int V, TP, TV;     /* tokens: vocabulary, positions, token types (0: none) */
    int IH, PS;        /* patches: image size and patch size (3 channels) */
    int E;             /* tokens: embedding size when it differs from C (ELECTRA's
                          embeddings_project after LN + dropout); 0: C, no projection */
    int pad_id;        /* tokens: word embedding row that gets no gradient; -1: none */
    int pad_positions; /* RoBERTa: position ids pad_id + cumsum(id != pad_id), pads at pad_id */
    int final_ln;      /* a LayerNorm after the stack (ViT) */
    clf_head head;
    int head_dropin; /* dropout p_cls on the first token before the head dense too */
    int NL;
    float p_cls; /* dropout before the output layer */
    encoder_config enc;
} clf_config;

#define CLF_NUM_EXTRA 16
typedef struct {
    encoder_params enc;
    float *wte, *wpe, *wtt, *embln_w, *embln_b, *embprojw, *embprojb, *patchw, *patchb, *cls,
        *lnf_w, *lnf_b, *poolw, *poolb, *clsw, *clsb;
} clf_params;

typedef struct {
    float *emb, *emb_mean, *emb_rstd; /* (B,T,C) sum of embeddings, LN stats (B,T) */
    float *x0;                        /* (B,T,C) encoder input */
    float *pooled, *pooled_d;         /* (B,C) head activation output, after dropout */
    float *logits, *probs, *dlogits;  /* (B,NL) */
    float *dpooled, *dpre;            /* (B,C) */
    float *dio;                       /* (B,T,C) */
    uint8_t *amask;                   /* (B,T) */
    /* beyond BERT (size 0 when unused) */
    int32_t *pos;                        /* (B,T) position ids (pad_positions) */
    float *cols;                         /* (B*NP,K) image patches */
    float *clsh, *lnf, *lnf_mean, *lnf_rstd; /* (B,C) first token, after the final LN, (B) */
    float *xin;                          /* (B,C) first token after the head's input dropout */
    float *pre;                          /* (B,C) head dense output before GELU / ReLU */
    float *dsrc;                         /* (B,C) gradient w.r.t. the head's input */
    float *pemb, *pln, *pd;              /* (B,T,E) embeddings, after LN + dropout, gradient */
    encoder_acts enc;
} clf_acts;

typedef struct {
    model_core core; /* first: parameters, gradients, masks, activations, RNG (model.h) */
    clf_config cfg;
    clf_params p, g;
    clf_acts a;
} clf_model;

extern const model_family clf_family;

/* A batch: token ids (B,T) with optional types and attention mask, or pixels (B,3,IH,IH). */
typedef struct {
    const int32_t *ids, *types;
    const uint8_t *amask;
    const float *pix;
    int B, T;
} clf_batch;

/* The tensor table (names "enc.qkvw", ..., "wte", ..., offsets, sizes) is clf_family's. */
isp_status clf_config_check(const clf_config *cfg);
isp_status clf_init(clf_model *m, const clf_config *cfg);
void clf_free(clf_model *m);
/* Tokens per example: T of a text batch, NP + 1 for images. */
int clf_num_tokens(const clf_config *cfg, int T);

/* Validate a batch against the config (ids / types in range, pixels finite). */
isp_status clf_check_inputs(const clf_model *m, const clf_batch *x);
/* Labels: int32 in [0,NL) for classification, finite float32 for regression (NL == 1). */
isp_status clf_check_labels(const clf_model *m, const void *labels, int B);

/* logits (B,NL) out (may be NULL: kept inside). */
isp_status clf_forward(clf_model *m, float *logits, const clf_batch *x);
/* forward + loss + backward; grads are zeroed first, masked gradients zeroed after. */
isp_status clf_forward_backward(clf_model *m, float *loss, float *logits, const clf_batch *x,
                                const void *labels, float smoothing);
/* forward_backward + clip + AdamW + re-mask */
isp_status clf_train_step(clf_model *m, float *loss, float *grad_norm, float *mom1, float *mom2,
                          const int64_t *seg, const uint8_t *decay, int S, const adamw_hparams *hp,
                          const clf_batch *x, const void *labels, float smoothing);

#endif /* ISP_CLASSIFIER_H */
