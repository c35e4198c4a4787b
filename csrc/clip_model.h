/*
 * clip_model.h -- CLIP around the encoder stack (encoder.h):
 *
 *  - the vision tower as an image classifier, forward and backward: patch embedding (clip.h),
 *    pre-LN ("pre_layrnorm"), pre-LN encoder blocks (quick_gelu), post-LN on the class token,
 *    visual projection, cosine head (L2-normalised features @ head^T), cross-entropy;
 *  - the text tower, forward only: token + position embeddings, causal pre-LN encoder, final LN
 *    at the end-of-text token, text projection (to build zero-shot heads).
 *
 * Dimension legend: B, T tokens, C, IH image size, PS patch size, NP patches, K = 3*PS*PS,
 * D projection size, NL classes, V vocabulary, TP max text positions.
 *
 * Vision parameter buffer (float32, one allocation; gradients use the same layout):
 *   [ encoder (its 4 prunable tensors first) | patchw (C,K) | cls (C) | pos (T,C) |
 *     preln_w (C) | preln_b (C) | postln_w (C) | postln_b (C) | projw (D,C) |
 *     headw (NL,D) | headb (NL) ]            <- the head only when it is trainable (NL > 0)
 * A frozen head (zero-shot: normalised class text embeddings times exp(logit_scale)) lives
 * outside the buffer, so the optimizer never sees it.
 */
#include "isp.h"
#ifndef ISP_CLIP_MODEL_H
#define ISP_CLIP_MODEL_H

#include <stdint.h>

#include "clip.h"
#include "encoder.h"
#include "model.h"

typedef struct {
    encoder_config enc; /* prenorm = 1, causal = 0 */
    int IH, PS, D;
    int NL; /* classes of a trainable head in the buffer; 0 = the head is frozen (outside) */
} clipv_config;

#define CLIPV_NUM_EXTRA 10
typedef struct {
    encoder_params enc;
    float *patchw, *cls, *pos, *preln_w, *preln_b, *postln_w, *postln_b, *projw, *headw, *headb;
} clipv_params;

typedef struct {
    float *cols;                           /* (B*NP,K) patches */
    float *emb;                            /* (B,T,C) patch + class + position embeddings */
    float *x0, *pre_mean, *pre_rstd;       /* (B,T,C) encoder input, (B,T) LN stats */
    float *dio;                            /* (B,T,C) */
    float *clsh, *post_mean, *post_rstd;   /* (B,C) class token out of the encoder, (B) */
    float *pooled, *dpooled, *dclsh;       /* (B,C) */
    float *feat, *fn, *inv_norm, *dfeat;   /* (B,D), (B,D), (B), (B,D) */
    float *logits, *probs, *dlogits;       /* (B,NL) */
    encoder_acts enc;
} clipv_acts;

typedef struct {
    model_core core; /* first: parameters, gradients, masks, activations, RNG (model.h) */
    clipv_config cfg;
    clipv_params p, g;
    float *fhead_w, *fhead_b; /* frozen head (fNL,D), (fNL); NULL until set */
    int fNL;
    clipv_acts a;
} clipv_model;

/* Its tensor table ("qkvw", ..., "patchw", ...) and copies (the frozen head too). */
extern const model_family clipv_family;

isp_status clipv_init(clipv_model *m, const clipv_config *cfg);
void clipv_free(clipv_model *m);
/* Set the frozen head: w (NL,D) copied, b (NL) or NULL (zeros). Only when cfg.NL == 0. */
isp_status clipv_set_frozen_head(clipv_model *m, const float *w, const float *b, int NL);
/* Classes of the active head (trainable or frozen), 0 when there is none. */
int clipv_num_labels(const clipv_model *m);

/* pixel values (B,3,IH,IH): finite float32. */
isp_status clipv_check_pixels(const clipv_model *m, const float *pix, int B);
isp_status clipv_check_labels(const clipv_model *m, const int32_t *labels, int B);

/* Image features (B,D) (get_image_features): no head needed. */
isp_status clipv_encode(clipv_model *m, float *feat, const float *pix, int B);
/* logits (B,NL) (may be NULL). */
isp_status clipv_forward(clipv_model *m, float *logits, const float *pix, int B);
/* forward + cross-entropy + backward; grads zeroed first, masked gradients zeroed after. */
isp_status clipv_forward_backward(clipv_model *m, float *loss, float *logits, const float *pix,
                                  const int32_t *labels, int B, float smoothing);
/* forward_backward + clip + AdamW + re-mask */
isp_status clipv_train_step(clipv_model *m, float *loss, float *grad_norm, float *mom1,
                            float *mom2, const int64_t *seg, const uint8_t *decay, int S,
                            const adamw_hparams *hp, const float *pix, const int32_t *labels,
                            int B, float smoothing);

/* ---- text tower (forward only) ---- */

typedef struct {
    encoder_config enc; /* prenorm = 1, causal = 1 */
    int V, TP, D;
    int eos_id; /* pooling: first eos_id in each row; eos_id == 2 (legacy configs): argmax id */
} clipt_config;

#define CLIPT_NUM_EXTRA 5
typedef struct {
    encoder_params enc;
    float *wte, *wpe, *lnf_w, *lnf_b, *projw;
} clipt_params;

typedef struct {
    model_core core; /* first; forward-only: parameters and activations (model.h) */
    clipt_config cfg;
    clipt_params p;
} clipt_model;

/* Its tensor table ("qkvw", ..., "wte", ...). */
extern const model_family clipt_family;

isp_status clipt_init(clipt_model *m, const clipt_config *cfg);
void clipt_free(clipt_model *m);
/* feat (B,D) text features (get_text_features). ids (B,T) in [0,V); amask (B,T) or NULL. */
isp_status clipt_encode(clipt_model *m, float *feat, const int32_t *ids, const uint8_t *amask,
                        int B, int T);

#endif /* ISP_CLIP_MODEL_H */
