/*
 * clip_model.c -- CLIP's vision tower as a classifier (forward + backward) and its text tower
 * (forward) around the encoder stack. Layouts: clip_model.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_model.h"

#define NT isp_get_num_threads()
#define SITE_ENC 2 /* dropout sites of encoder layer l: 2 + 3l + k (as in classifier.c) */

/* ================================ vision ================================ */

static const char *const clipv_extra_names[CLIPV_NUM_EXTRA] = {
    "patchw", "cls", "pos", "preln_w", "preln_b", "postln_w", "postln_b", "projw", "headw", "headb",
};

static void clipv_extra_sizes(int64_t s[CLIPV_NUM_EXTRA], const clipv_config *cfg)
{
    int64_t C = cfg->enc.C, G = cfg->IH / cfg->PS, T = G * G + 1;
    s[0] = C * 3 * cfg->PS * cfg->PS;
    s[1] = C;
    s[2] = T * C;
    s[3] = s[4] = s[5] = s[6] = C;
    s[7] = (int64_t)cfg->D * C;
    s[8] = (int64_t)cfg->NL * cfg->D;
    s[9] = cfg->NL;
}

static const char *clipv_tensor_name(int i)
{
    if (i < 0 || i >= ENC_NUM_TENSORS + CLIPV_NUM_EXTRA)
        return NULL;
    return i < ENC_NUM_TENSORS ? encoder_tensor_names[i] : clipv_extra_names[i - ENC_NUM_TENSORS];
}

_Static_assert(ENC_NUM_TENSORS + CLIPV_NUM_EXTRA <= MODEL_MAX_TENSORS &&
                   ENC_NUM_TENSORS + CLIPT_NUM_EXTRA <= MODEL_MAX_TENSORS,
               "tensor table too long");

static void clipv_tensor_sizes(const void *cfg, int64_t *s)
{
    encoder_tensor_sizes(s, &((const clipv_config *)cfg)->enc);
    clipv_extra_sizes(s + ENC_NUM_TENSORS, cfg);
}

/* model_copy: the frozen head goes with the parameters */
static isp_status clipv_copy_head(model_core *dst, const model_core *src)
{
    clipv_model *d = (clipv_model *)dst;
    const clipv_model *s = (const clipv_model *)src;
    if (s->fNL > 0 && d->fNL != s->fNL)
        return clipv_set_frozen_head(d, s->fhead_w, s->fhead_b, s->fNL);
    if (s->fNL > 0) {
        memcpy(d->fhead_w, s->fhead_w, sizeof(float) * (size_t)s->fNL * s->cfg.D);
        memcpy(d->fhead_b, s->fhead_b, sizeof(float) * (size_t)s->fNL);
    }
    return ISP_OK;
}

static void clipv_family_free(model_core *m)
{
    clipv_free((clipv_model *)m);
}

const model_family clipv_family = {
    .name = "CLIP vision",
    .num_tensors = ENC_NUM_TENSORS + CLIPV_NUM_EXTRA,
    .tensor_name = clipv_tensor_name,
    .tensor_sizes = clipv_tensor_sizes,
    .config_size = sizeof(clipv_config),
    .copy_extra = clipv_copy_head,
    .free = clipv_family_free,
};

static void clipv_point_params(clipv_params *p, float *base, const clipv_config *cfg)
{
    encoder_point_params(&p->enc, base, &cfg->enc);
    base += encoder_num_params(&cfg->enc);
    int64_t s[CLIPV_NUM_EXTRA];
    clipv_extra_sizes(s, cfg);
    float **ptrs[CLIPV_NUM_EXTRA] = {&p->patchw,  &p->cls,      &p->pos,   &p->preln_w, &p->preln_b,
                                     &p->postln_w, &p->postln_b, &p->projw, &p->headw,   &p->headb};
    for (int i = 0; i < CLIPV_NUM_EXTRA; i++) {
        *ptrs[i] = s[i] > 0 ? base : NULL;
        base += s[i];
    }
}

isp_status clipv_init(clipv_model *m, const clipv_config *cfg)
{
    memset(m, 0, sizeof *m);
    isp_status st = encoder_config_check(&cfg->enc, "vision config");
    if (st != ISP_OK)
        return st;
    if (cfg->PS < 1 || cfg->IH < cfg->PS || cfg->IH % cfg->PS != 0)
        return isp_fail(ISP_ERR_VALUE,
                        "vision config: image_size %d is not a positive multiple of patch_size %d",
                        cfg->IH, cfg->PS);
    if (cfg->D < 1 || cfg->NL < 0)
        return isp_fail(ISP_ERR_VALUE, "vision config: projection_dim %d / num_labels %d", cfg->D,
                        cfg->NL);
    int64_t T = (int64_t)(cfg->IH / cfg->PS) * (cfg->IH / cfg->PS) + 1;
    if (T > (1 << 20) || (int64_t)cfg->enc.C * 3 * cfg->PS * cfg->PS > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "vision config: sizes too large");
    m->cfg = *cfg;
    m->cfg.enc.prenorm = 1;
    m->cfg.enc.causal = 0;
    int64_t s[CLIPV_NUM_EXTRA], n = encoder_num_params(&cfg->enc);
    clipv_extra_sizes(s, cfg);
    for (int i = 0; i < CLIPV_NUM_EXTRA; i++)
        n += s[i];
    st = model_init(&m->core, &clipv_family, &m->cfg, n, encoder_num_prunable(&cfg->enc));
    if (st != ISP_OK)
        return st;
    clipv_point_params(&m->p, m->core.params, &m->cfg);
    clipv_point_params(&m->g, m->core.grads, &m->cfg);
    return ISP_OK;
}

void clipv_free(clipv_model *m)
{
    model_free(&m->core);
    free(m->fhead_w);
    free(m->fhead_b);
    memset(m, 0, sizeof *m);
}

isp_status clipv_set_frozen_head(clipv_model *m, const float *w, const float *b, int NL)
{
    if (m->cfg.NL > 0)
        return isp_fail(ISP_ERR_VALUE,
                        "this model has a trainable head of %d classes; set its weights instead",
                        m->cfg.NL);
    if (NL < 1)
        return isp_fail(ISP_ERR_VALUE, "head: expected at least one class, got %d", NL);
    int64_t nw = (int64_t)NL * m->cfg.D;
    for (int64_t i = 0; i < nw; i++)
        if (!isfinite(w[i]))
            return isp_fail(ISP_ERR_NONFINITE, "head: weight %lld is not finite", (long long)i);
    float *hw = malloc(sizeof(float) * (size_t)nw), *hb = calloc((size_t)NL, sizeof(float));
    if (hw == NULL || hb == NULL) {
        free(hw);
        free(hb);
        return isp_fail(ISP_ERR_NOMEM, "out of memory for a head of %d classes", NL);
    }
    memcpy(hw, w, sizeof(float) * (size_t)nw);
    if (b != NULL)
        memcpy(hb, b, sizeof(float) * (size_t)NL);
    free(m->fhead_w);
    free(m->fhead_b);
    m->fhead_w = hw;
    m->fhead_b = hb;
    m->fNL = NL;
    return ISP_OK;
}

int clipv_num_labels(const clipv_model *m)
{
    return m->cfg.NL > 0 ? m->cfg.NL : m->fNL;
}

static const float *head_w(const clipv_model *m)
{
    return m->cfg.NL > 0 ? m->p.headw : m->fhead_w;
}

static const float *head_b(const clipv_model *m)
{
    return m->cfg.NL > 0 ? m->p.headb : m->fhead_b;
}

static isp_status clipv_ensure_acts(clipv_model *m, int B)
{
    const clipv_config *cfg = &m->cfg;
    const int G = cfg->IH / cfg->PS, NP = G * G, T = NP + 1, C = cfg->enc.C, D = cfg->D;
    const int64_t K = 3 * (int64_t)cfg->PS * cfg->PS, BT = (int64_t)B * T;
    const int NL = clipv_num_labels(m) > 0 ? clipv_num_labels(m) : 1;
    if (BT > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "pixel_values: batch too large (%d images)", B);
    int64_t head = (int64_t)B * NP * K + 3 * BT * C + 2 * BT + 4 * (int64_t)B * C + 2 * B +
                   3 * (int64_t)B * D + B + 3 * (int64_t)B * NL + 64;
    int64_t need = encoder_acts_size(&cfg->enc, B, T, NT) + head;
    char batch[64];
    snprintf(batch, sizeof batch, "a batch of %d images", B);
    isp_status st = model_reserve_acts(&m->core, need, batch);
    if (st != ISP_OK)
        return st;
    float *p = m->core.acts_mem;
    clipv_acts *a = &m->a;
    a->cols = p, p += (int64_t)B * NP * K;
    a->emb = p, p += BT * C;
    a->x0 = p, p += BT * C;
    a->dio = p, p += BT * C;
    a->pre_mean = p, p += BT;
    a->pre_rstd = p, p += BT;
    a->clsh = p, p += (int64_t)B * C;
    a->pooled = p, p += (int64_t)B * C;
    a->dpooled = p, p += (int64_t)B * C;
    a->dclsh = p, p += (int64_t)B * C;
    a->post_mean = p, p += B;
    a->post_rstd = p, p += B;
    a->feat = p, p += (int64_t)B * D;
    a->fn = p, p += (int64_t)B * D;
    a->dfeat = p, p += (int64_t)B * D;
    a->inv_norm = p, p += B;
    a->logits = p, p += (int64_t)B * NL;
    a->probs = p, p += (int64_t)B * NL;
    a->dlogits = p, p += (int64_t)B * NL;
    encoder_point_acts(&a->enc, p, &cfg->enc, B, T);
    return ISP_OK;
}

isp_status clipv_check_pixels(const clipv_model *m, const float *pix, int B)
{
    if (B < 1)
        return isp_fail(ISP_ERR_VALUE, "pixel_values: empty batch");
    int64_t n = (int64_t)B * 3 * m->cfg.IH * m->cfg.IH;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(pix[i]))
            return isp_fail(ISP_ERR_NONFINITE, "pixel_values: value %g at flat index %lld of "
                            "image %lld is not finite", (double)pix[i], (long long)i,
                            (long long)(i / (3 * (int64_t)m->cfg.IH * m->cfg.IH)));
    return ISP_OK;
}

isp_status clipv_check_labels(const clipv_model *m, const int32_t *labels, int B)
{
    int NL = clipv_num_labels(m);
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= NL)
            return isp_fail(ISP_ERR_VALUE, "labels: label %d at [%d] is outside [0, %d classes)",
                            labels[b], b, NL);
    return ISP_OK;
}

/* image -> features (a->feat); leaves every activation the backward pass needs */
static void clipv_features(clipv_model *m, const float *pix, int B)
{
    const clipv_config *cfg = &m->cfg;
    const int G = cfg->IH / cfg->PS, T = G * G + 1, C = cfg->enc.C, D = cfg->D;
    const int64_t BT = (int64_t)B * T;
    clipv_acts *a = &m->a;
    patch_embed_forward(a->emb, a->cols, pix, m->p.patchw, m->p.cls, m->p.pos, B, cfg->IH,
                        cfg->IH, cfg->PS, C);
    layernorm_forward(a->x0, a->pre_mean, a->pre_rstd, a->emb, m->p.preln_w, m->p.preln_b, BT, C,
                      cfg->enc.eps);
    encoder_rng rng = {m->core.training, m->core.seed, m->core.step, SITE_ENC};
    encoder_forward(&a->enc, &m->p.enc, &cfg->enc, a->x0, NULL, B, T, &rng);
    const float *h = encoder_output(&a->enc, &cfg->enc, B, T);
    for (int b = 0; b < B; b++)
        memcpy(a->clsh + (int64_t)b * C, h + (int64_t)b * T * C, sizeof(float) * (size_t)C);
    layernorm_forward(a->pooled, a->post_mean, a->post_rstd, a->clsh, m->p.postln_w,
                      m->p.postln_b, B, C, cfg->enc.eps);
    linear_forward(a->feat, a->pooled, m->p.projw, NULL, B, C, D, C);
}

static isp_status clipv_logits(clipv_model *m, int B)
{
    return cosine_head_forward(m->a.logits, m->a.fn, m->a.inv_norm, m->a.feat, head_w(m),
                               head_b(m), B, m->cfg.D, clipv_num_labels(m));
}

isp_status clipv_encode(clipv_model *m, float *feat, const float *pix, int B)
{
    isp_status st = clipv_ensure_acts(m, B);
    if (st != ISP_OK)
        return st;
    clipv_features(m, pix, B);
    memcpy(feat, m->a.feat, sizeof(float) * (size_t)B * m->cfg.D);
    model_advance(&m->core);
    return ISP_OK;
}

isp_status clipv_forward(clipv_model *m, float *logits, const float *pix, int B)
{
    if (clipv_num_labels(m) < 1)
        return isp_fail(ISP_ERR_VALUE, "the model has no classification head yet: call "
                        "zero_shot_head(classnames, templates) or load it with num_labels");
    isp_status st = clipv_ensure_acts(m, B);
    if (st != ISP_OK)
        return st;
    clipv_features(m, pix, B);
    st = clipv_logits(m, B);
    if (st != ISP_OK)
        return st;
    if (logits != NULL)
        memcpy(logits, m->a.logits, sizeof(float) * (size_t)B * clipv_num_labels(m));
    model_advance(&m->core);
    return ISP_OK;
}

static void clipv_backward(clipv_model *m, int B)
{
    const clipv_config *cfg = &m->cfg;
    const int G = cfg->IH / cfg->PS, NP = G * G, T = NP + 1, C = cfg->enc.C, D = cfg->D;
    const int64_t BT = (int64_t)B * T, K = 3 * (int64_t)cfg->PS * cfg->PS;
    const int NL = clipv_num_labels(m), trainable = cfg->NL > 0;
    clipv_acts *a = &m->a;
    cosine_head_backward(a->dfeat, trainable ? m->g.headw : NULL, trainable ? m->g.headb : NULL,
                         a->dlogits, a->fn, a->inv_norm, head_w(m), B, D, NL);
    linear_backward(a->dpooled, m->g.projw, NULL, a->dfeat, a->pooled, m->p.projw, B, C, D, C, 0);
    layernorm_backward(a->dclsh, m->g.postln_w, m->g.postln_b, a->dpooled, a->clsh,
                       m->p.postln_w, a->post_mean, a->post_rstd, B, C);
    memset(a->dio, 0, sizeof(float) * (size_t)(BT * C));
    for (int b = 0; b < B; b++)
        memcpy(a->dio + (int64_t)b * T * C, a->dclsh + (int64_t)b * C, sizeof(float) * (size_t)C);
    encoder_rng rng = {m->core.training, m->core.seed, m->core.step, SITE_ENC};
    encoder_backward(a->dio, &m->g.enc, &m->p.enc, &a->enc, &cfg->enc, a->x0, NULL, B, T, &rng);
    layernorm_backward(a->dio, m->g.preln_w, m->g.preln_b, a->dio, a->emb, m->p.preln_w,
                       a->pre_mean, a->pre_rstd, BT, C);
    /* a->emb (B,T,C) is no longer needed: it is the gather scratch (B*NP,C) */
    patch_embed_backward(m->g.patchw, m->g.cls, m->g.pos, a->emb, a->dio, a->cols, B, NP, (int)K, C);
}

isp_status clipv_forward_backward(clipv_model *m, float *loss, float *logits, const float *pix,
                                  const int32_t *labels, int B, float smoothing)
{
    int NL = clipv_num_labels(m);
    if (NL < 1)
        return isp_fail(ISP_ERR_VALUE, "the model has no classification head yet: call "
                        "zero_shot_head(classnames, templates) or load it with num_labels");
    isp_status st = clipv_ensure_acts(m, B);
    if (st != ISP_OK)
        return st;
    clipv_features(m, pix, B);
    st = clipv_logits(m, B);
    if (st != ISP_OK)
        return st;
    clipv_acts *a = &m->a;
    *loss = crossentropy_forward(a->probs, a->logits, labels, B, NL, smoothing);
    crossentropy_backward(a->dlogits, a->probs, labels, B, NL, smoothing);
    if (logits != NULL)
        memcpy(logits, a->logits, sizeof(float) * (size_t)B * NL);
    model_zero_grads(&m->core);
    clipv_backward(m, B);
    model_finish_backward(&m->core);
    return ISP_OK;
}

isp_status clipv_train_step(clipv_model *m, float *loss, float *grad_norm, float *mom1,
                            float *mom2, const int64_t *seg, const uint8_t *decay, int S,
                            const adamw_hparams *hp, const float *pix, const int32_t *labels,
                            int B, float smoothing)
{
    isp_status st = clipv_forward_backward(m, loss, NULL, pix, labels, B, smoothing);
    if (st != ISP_OK)
        return st;
    return model_adamw(&m->core, mom1, mom2, seg, decay, S, hp, 1, grad_norm);
}

/* ================================ text ================================ */

static const char *const clipt_extra_names[CLIPT_NUM_EXTRA] = {"wte", "wpe", "lnf_w", "lnf_b",
                                                               "projw"};

static void clipt_extra_sizes(int64_t s[CLIPT_NUM_EXTRA], const clipt_config *cfg)
{
    int64_t C = cfg->enc.C;
    s[0] = (int64_t)cfg->V * C;
    s[1] = (int64_t)cfg->TP * C;
    s[2] = s[3] = C;
    s[4] = (int64_t)cfg->D * C;
}

static const char *clipt_tensor_name(int i)
{
    if (i < 0 || i >= ENC_NUM_TENSORS + CLIPT_NUM_EXTRA)
        return NULL;
    return i < ENC_NUM_TENSORS ? encoder_tensor_names[i] : clipt_extra_names[i - ENC_NUM_TENSORS];
}

static void clipt_tensor_sizes(const void *cfg, int64_t *s)
{
    encoder_tensor_sizes(s, &((const clipt_config *)cfg)->enc);
    clipt_extra_sizes(s + ENC_NUM_TENSORS, cfg);
}

static void clipt_family_free(model_core *m)
{
    clipt_free((clipt_model *)m);
}

const model_family clipt_family = {
    .name = "CLIP text",
    .num_tensors = ENC_NUM_TENSORS + CLIPT_NUM_EXTRA,
    .tensor_name = clipt_tensor_name,
    .tensor_sizes = clipt_tensor_sizes,
    .config_size = sizeof(clipt_config),
    .forward_only = 1,
    .copy_extra = NULL,
    .free = clipt_family_free,
};

isp_status clipt_init(clipt_model *m, const clipt_config *cfg)
{
    memset(m, 0, sizeof *m);
    isp_status st = encoder_config_check(&cfg->enc, "text config");
    if (st != ISP_OK)
        return st;
    if (cfg->V < 1 || cfg->TP < 1 || cfg->D < 1)
        return isp_fail(ISP_ERR_VALUE, "text config: vocab_size %d, max_position_embeddings %d, "
                        "projection_dim %d must be >= 1", cfg->V, cfg->TP, cfg->D);
    m->cfg = *cfg;
    m->cfg.enc.prenorm = 1;
    m->cfg.enc.causal = 1;
    int64_t s[CLIPT_NUM_EXTRA], n = encoder_num_params(&cfg->enc);
    clipt_extra_sizes(s, cfg);
    for (int i = 0; i < CLIPT_NUM_EXTRA; i++)
        n += s[i];
    st = model_init(&m->core, &clipt_family, &m->cfg, n, 0);
    if (st != ISP_OK)
        return st;
    encoder_point_params(&m->p.enc, m->core.params, &m->cfg.enc);
    float *base = m->core.params + encoder_num_params(&cfg->enc);
    float **ptrs[CLIPT_NUM_EXTRA] = {&m->p.wte, &m->p.wpe, &m->p.lnf_w, &m->p.lnf_b, &m->p.projw};
    for (int i = 0; i < CLIPT_NUM_EXTRA; i++) {
        *ptrs[i] = base;
        base += s[i];
    }
    return ISP_OK;
}

void clipt_free(clipt_model *m)
{
    model_free(&m->core);
    memset(m, 0, sizeof *m);
}

isp_status clipt_encode(clipt_model *m, float *feat, const int32_t *ids, const uint8_t *amask,
                        int B, int T)
{
    const clipt_config *cfg = &m->cfg;
    const int C = cfg->enc.C, D = cfg->D;
    if (B < 1 || T < 1)
        return isp_fail(ISP_ERR_VALUE, "input_ids: expected a non-empty (batch, seq_len) array");
    if (T > cfg->TP)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: sequence length %d exceeds max_position_embeddings = %d", T,
                        cfg->TP);
    const int64_t BT = (int64_t)B * T;
    if (BT > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "input_ids: batch too large (%d x %d)", B, T);
    for (int64_t i = 0; i < BT; i++)
        if (ids[i] < 0 || ids[i] >= cfg->V)
            return isp_fail(ISP_ERR_VALUE,
                            "input_ids: id %d at [%lld, %lld] is outside the vocabulary [0, %d)",
                            ids[i], (long long)(i / T), (long long)(i % T), cfg->V);
    /* pooling positions, as transformers' CLIPTextModel picks them */
    int *pos = malloc(sizeof(int) * (size_t)B);
    if (pos == NULL)
        return isp_fail(ISP_ERR_NOMEM, "out of memory");
    for (int b = 0; b < B; b++) {
        const int32_t *r = ids + (int64_t)b * T;
        int k = -1;
        if (cfg->eos_id == 2) { /* legacy configs: the largest id (first occurrence) */
            k = 0;
            for (int t = 1; t < T; t++)
                if (r[t] > r[k])
                    k = t;
        } else {
            for (int t = 0; t < T && k < 0; t++)
                if (r[t] == cfg->eos_id)
                    k = t;
        }
        if (k < 0) {
            free(pos);
            return isp_fail(ISP_ERR_VALUE,
                            "input_ids row %d has no end-of-text token (id %d); tokenize with the "
                            "CLIP tokenizer, which appends it",
                            b, cfg->eos_id);
        }
        pos[b] = k;
    }
    int64_t need = encoder_acts_size(&cfg->enc, B, T, NT) + 2 * BT * C + C + 4 * (int64_t)B * C +
                   2 * B + (BT + 3) / 4 + 64;
    char batch[64];
    snprintf(batch, sizeof batch, "a text batch of %d x %d tokens", B, T);
    if (model_reserve_acts(&m->core, need, batch) != ISP_OK) {
        free(pos);
        return ISP_ERR_NOMEM;
    }
    float *p = m->core.acts_mem;
    float *x0 = p;
    p += BT * C;
    float *zero = p; /* the (absent) token-type row */
    p += C;
    float *sel = p, *lnout = p + (int64_t)B * C, *mean = p + 2 * (int64_t)B * C,
          *rstd = mean + B;
    p += 2 * (int64_t)B * C + 2 * B;
    uint8_t *am = (uint8_t *)p;
    p += (BT + 3) / 4 + 16;
    encoder_acts acts;
    encoder_point_acts(&acts, p, &cfg->enc, B, T);
    memset(zero, 0, sizeof(float) * (size_t)C);
    const uint8_t *amask_c = NULL;
    if (amask != NULL) {
        memcpy(am, amask, (size_t)BT);
        amask_c = am;
    }
    embeddings_forward(x0, ids, NULL, NULL, m->p.wte, m->p.wpe, zero, B, T, C);
    encoder_rng rng = {0, 0, 0, SITE_ENC};
    encoder_forward(&acts, &m->p.enc, &cfg->enc, x0, amask_c, B, T, &rng);
    const float *h = encoder_output(&acts, &cfg->enc, B, T);
    for (int b = 0; b < B; b++)
        memcpy(sel + (int64_t)b * C, h + ((int64_t)b * T + pos[b]) * C, sizeof(float) * (size_t)C);
    free(pos);
    layernorm_forward(lnout, mean, rstd, sel, m->p.lnf_w, m->p.lnf_b, B, C, cfg->enc.eps);
    linear_forward(feat, lnout, m->p.projw, NULL, B, C, D, C);
    return ISP_OK;
}
