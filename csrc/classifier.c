/*
 * classifier.c -- the encoder classifier of every family around the encoder stack (layout and
 * options: classifier.h). Dimension legend: B, T, C, V, TP, TV, NL, IH, PS, NP, K.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "clip.h" /* the patch embedding ViT shares with CLIP */
#include "profile.h"

#define NT isp_get_num_threads()

/* dropout sites: 0 embeddings, 1 before the output layer, 2 + 3l + k encoder layer l,
   2 + 3L the head's input dropout */
#define SITE_EMB 0
#define SITE_CLS 1
#define SITE_ENC 2

static const char *const extra_names[CLF_NUM_EXTRA] = {
    "wte",    "wpe",    "wtt", "embln_w", "embln_b", "embprojw", "embprojb", "patchw",
    "patchb", "cls",    "lnf_w", "lnf_b", "poolw",  "poolb",    "clsw",     "clsb",
};

/* ELECTRA: embeddings of size E projected to C */
static int projects(const clf_config *cfg)
{
    return cfg->emb == CLF_EMB_TOKENS && cfg->E > 0 && cfg->E != cfg->enc.C;
}

/* the embedding size */
static int emb_size(const clf_config *cfg)
{
    return projects(cfg) ? cfg->E : cfg->enc.C;
}

static int num_patches(const clf_config *cfg)
{
    return cfg->emb == CLF_EMB_PATCHES ? (cfg->IH / cfg->PS) * (cfg->IH / cfg->PS) : 0;
}

int clf_num_tokens(const clf_config *cfg, int T)
{
    return cfg->emb == CLF_EMB_PATCHES ? num_patches(cfg) + 1 : T;
}

static void extra_sizes(int64_t s[CLF_NUM_EXTRA], const clf_config *cfg)
{
    int64_t C = cfg->enc.C, E = emb_size(cfg), text = cfg->emb == CLF_EMB_TOKENS, img = !text;
    int64_t dense = cfg->head != CLF_HEAD_LINEAR, lnf = cfg->final_ln != 0, proj = projects(cfg);
    s[0] = text * cfg->V * E;
    s[1] = text ? cfg->TP * E : (num_patches(cfg) + 1) * C;
    s[2] = text * cfg->TV * E;
    s[3] = s[4] = text * E;
    s[5] = proj * C * E;
    s[6] = proj * C;
    s[7] = img * C * 3 * cfg->PS * cfg->PS;
    s[8] = s[9] = img * C;
    s[10] = s[11] = lnf * C;
    s[12] = dense * C * C;
    s[13] = dense * C;
    s[14] = (int64_t)cfg->NL * C;
    s[15] = cfg->NL;
}

static const char *tensor_name(int i)
{
    static const char *const enc_names[ENC_NUM_TENSORS] = {
        "enc.qkvw", "enc.attprojw", "enc.fcw", "enc.fcprojw", "enc.qkvb", "enc.attprojb",
        "enc.ln1w", "enc.ln1b",     "enc.fcb", "enc.fcprojb", "enc.ln2w", "enc.ln2b",
    };
    if (i < 0 || i >= ENC_NUM_TENSORS + CLF_NUM_EXTRA)
        return NULL;
    return i < ENC_NUM_TENSORS ? enc_names[i] : extra_names[i - ENC_NUM_TENSORS];
}

_Static_assert(ENC_NUM_TENSORS + CLF_NUM_EXTRA <= MODEL_MAX_TENSORS, "tensor table too long");

static void tensor_sizes(const void *cfg, int64_t *s)
{
    encoder_tensor_sizes(s, &((const clf_config *)cfg)->enc);
    extra_sizes(s + ENC_NUM_TENSORS, cfg);
}

static void family_free(model_core *m)
{
    clf_free((clf_model *)m);
}

const model_family clf_family = {
    .name = "encoder classifier",
    .num_tensors = ENC_NUM_TENSORS + CLF_NUM_EXTRA,
    .tensor_name = tensor_name,
    .tensor_sizes = tensor_sizes,
    .config_size = sizeof(clf_config),
    .copy_extra = NULL,
    .free = family_free,
};

static void point_params(clf_params *p, float *base, const clf_config *cfg)
{
    encoder_point_params(&p->enc, base, &cfg->enc);
    base += encoder_num_params(&cfg->enc);
    int64_t s[CLF_NUM_EXTRA];
    extra_sizes(s, cfg);
    float **ptrs[CLF_NUM_EXTRA] = {&p->wte,    &p->wpe,      &p->wtt,      &p->embln_w,
                                   &p->embln_b, &p->embprojw, &p->embprojb, &p->patchw,
                                   &p->patchb, &p->cls,      &p->lnf_w,    &p->lnf_b,
                                   &p->poolw,  &p->poolb,    &p->clsw,     &p->clsb};
    for (int i = 0; i < CLF_NUM_EXTRA; i++) {
        *ptrs[i] = s[i] > 0 ? base : NULL;
        base += s[i];
    }
}

isp_status clf_config_check(const clf_config *c)
{
    const encoder_config *e = &c->enc;
    if (c->emb == CLF_EMB_TOKENS) {
        if (c->V < 1 || c->TP < 1 || c->TV < 0 || c->NL < 1)
            return isp_fail(ISP_ERR_VALUE,
                            "config: vocab_size, max_position_embeddings and num_labels must be "
                            ">= 1, type_vocab_size >= 0 (got %d, %d, %d, %d)",
                            c->V, c->TP, c->NL, c->TV);
        if (c->pad_id < -1 || c->pad_id >= c->V)
            return isp_fail(ISP_ERR_VALUE,
                            "config: pad_token_id %d outside the vocabulary [0, %d)", c->pad_id,
                            c->V);
        if (c->pad_positions && (c->pad_id < 0 || c->pad_id + 1 >= c->TP))
            return isp_fail(ISP_ERR_VALUE,
                            "config: position ids offset by pad_token_id %d need "
                            "max_position_embeddings (%d) > pad_token_id + 1",
                            c->pad_id, c->TP);
        if (c->E < 0 || c->E > (1 << 24))
            return isp_fail(ISP_ERR_VALUE, "config: embedding_size %d out of range", c->E);
        if ((int64_t)c->V * emb_size(c) > ((int64_t)1 << 40))
            return isp_fail(ISP_ERR_VALUE, "config: sizes too large");
    } else if (c->emb == CLF_EMB_PATCHES) {
        if (c->NL < 1)
            return isp_fail(ISP_ERR_VALUE, "config: num_labels must be >= 1 (got %d)", c->NL);
        if (c->PS < 1 || c->IH < c->PS || c->IH % c->PS != 0)
            return isp_fail(ISP_ERR_VALUE,
                            "config: image_size %d is not a positive multiple of patch_size %d",
                            c->IH, c->PS);
        if ((int64_t)(c->IH / c->PS) * (c->IH / c->PS) + 1 > (1 << 20) ||
            (int64_t)e->C * 3 * c->PS * c->PS > (1 << 30))
            return isp_fail(ISP_ERR_VALUE, "config: image sizes too large");
    } else {
        return isp_fail(ISP_ERR_VALUE, "config: unknown embedding kind %d", (int)c->emb);
    }
    if ((int)c->head < CLF_HEAD_LINEAR || (int)c->head > CLF_HEAD_RELU)
        return isp_fail(ISP_ERR_VALUE, "config: unknown head kind %d", (int)c->head);
    if (!(c->p_cls >= 0.0f && c->p_cls < 1.0f))
        return isp_fail(ISP_ERR_VALUE, "config: dropout probabilities must be in [0, 1), got %g",
                        c->p_cls);
    return encoder_config_check(e, "config");
}

isp_status clf_init(clf_model *m, const clf_config *cfg)
{
    memset(m, 0, sizeof *m);
    isp_status st = clf_config_check(cfg);
    if (st != ISP_OK)
        return st;
    m->cfg = *cfg;
    int64_t s[CLF_NUM_EXTRA], n = encoder_num_params(&cfg->enc);
    extra_sizes(s, cfg);
    for (int i = 0; i < CLF_NUM_EXTRA; i++)
        n += s[i];
    st = model_init(&m->core, &clf_family, &m->cfg, n, encoder_num_prunable(&cfg->enc));
    if (st != ISP_OK)
        return st;
    point_params(&m->p, m->core.params, cfg);
    point_params(&m->g, m->core.grads, cfg);
    return ISP_OK;
}

void clf_free(clf_model *m)
{
    model_free(&m->core);
    memset(m, 0, sizeof *m);
}

/* the head reads the first token straight from the stack's output (BERT, DistilBERT) */
static int head_reads_stack(const clf_config *cfg)
{
    return !cfg->final_ln && !cfg->head_dropin && cfg->head != CLF_HEAD_LINEAR;
}

/* floats of the activations beyond the ones BERT has (0 for BERT) */
static int64_t family_acts_size(const clf_config *cfg, int B, int T)
{
    int64_t BT = (int64_t)B * T, BC = (int64_t)B * cfg->enc.C, n = 0;
    if (cfg->pad_positions)
        n += BT;
    if (cfg->emb == CLF_EMB_PATCHES)
        n += (int64_t)B * num_patches(cfg) * 3 * cfg->PS * cfg->PS;
    if (cfg->final_ln)
        n += 2 * BC + 2 * B;
    if (cfg->head_dropin || cfg->final_ln)
        n += BC; /* clsh */
    if (cfg->head_dropin)
        n += BC;
    if (cfg->head == CLF_HEAD_GELU || cfg->head == CLF_HEAD_RELU)
        n += BC;
    if (!head_reads_stack(cfg))
        n += BC;
    if (projects(cfg))
        n += 3 * BT * cfg->E;
    return n;
}

/* floats of clf_acts beyond the encoder's; amask is stored in floats' space too */
static int64_t head_acts_size(const clf_config *cfg, int B, int T)
{
    int64_t BT = (int64_t)B * T, C = cfg->enc.C, NL = cfg->NL;
    return 3 * BT * C + 2 * BT + 4 * (int64_t)B * C + 3 * (int64_t)B * NL + (BT + 3) / 4 + 64 +
           family_acts_size(cfg, B, T);
}

/* Point the activations at (B,T), growing the buffer when needed (no allocation otherwise). */
static isp_status ensure_acts(clf_model *m, int B, int T, int forward_only)
{
    const clf_config *cfg = &m->cfg;
    int nt = NT;
    int64_t need =
        encoder_acts_size_mode(&cfg->enc, B, T, nt, forward_only) + head_acts_size(cfg, B, T);
    char batch[64];
    snprintf(batch, sizeof batch, "a batch of %d x %d tokens", B, T);
    isp_status st = model_reserve_acts(&m->core, need, batch);
    if (st != ISP_OK)
        return st;
    int64_t BT = (int64_t)B * T, C = cfg->enc.C, NL = cfg->NL, BC = (int64_t)B * C;
    float *p = m->core.acts_mem;
    clf_acts *a = &m->a;
    a->emb = p, p += BT * C;
    a->emb_mean = p, p += BT;
    a->emb_rstd = p, p += BT;
    a->x0 = p, p += BT * C;
    a->dio = p, p += BT * C;
    a->pooled = p, p += BC;
    a->pooled_d = p, p += BC;
    a->dpooled = p, p += BC;
    a->dpre = p, p += BC;
    a->logits = p, p += (int64_t)B * NL;
    a->probs = p, p += (int64_t)B * NL;
    a->dlogits = p, p += (int64_t)B * NL;
    a->amask = (uint8_t *)p, p += (BT + 3) / 4 + 16;
#define TAKE(field, type, n, when)                                                                 \
    do {                                                                                           \
        a->field = (when) ? (type *)p : NULL;                                                      \
        p += (when) ? (n) : 0;                                                                     \
    } while (0)
    TAKE(pos, int32_t, BT, cfg->pad_positions);
    TAKE(cols, float, (int64_t)B * num_patches(cfg) * 3 * cfg->PS * cfg->PS,
         cfg->emb == CLF_EMB_PATCHES);
    TAKE(clsh, float, BC, cfg->head_dropin || cfg->final_ln);
    TAKE(lnf, float, BC, cfg->final_ln);
    TAKE(lnf_mean, float, B, cfg->final_ln);
    TAKE(lnf_rstd, float, B, cfg->final_ln);
    TAKE(xin, float, BC, cfg->head_dropin);
    TAKE(pre, float, BC, cfg->head == CLF_HEAD_GELU || cfg->head == CLF_HEAD_RELU);
    TAKE(dsrc, float, BC, !head_reads_stack(cfg));
    TAKE(pemb, float, BT * cfg->E, projects(cfg));
    TAKE(pln, float, BT * cfg->E, projects(cfg));
    TAKE(pd, float, BT * cfg->E, projects(cfg));
#undef TAKE
    encoder_point_acts_mode(&a->enc, p, &cfg->enc, B, T, forward_only);
    return ISP_OK;
}

isp_status clf_check_inputs(const clf_model *m, const clf_batch *x)
{
    const clf_config *c = &m->cfg;
    const int B = x->B, T = x->T;
    if (c->emb == CLF_EMB_PATCHES) {
        if (B < 1)
            return isp_fail(ISP_ERR_VALUE, "pixel_values: empty batch");
        if ((int64_t)B * (num_patches(c) + 1) > (1 << 30))
            return isp_fail(ISP_ERR_VALUE, "pixel_values: batch too large (%d images)", B);
        int64_t n = (int64_t)B * 3 * c->IH * c->IH;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x->pix[i]))
                return isp_fail(ISP_ERR_NONFINITE,
                                "pixel_values: value %g of image %lld is not finite",
                                (double)x->pix[i], (long long)(i / (3 * (int64_t)c->IH * c->IH)));
        return ISP_OK;
    }
    if (B < 1 || T < 1)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: expected a non-empty (batch, seq_len) array, got (%d, %d)", B,
                        T);
    if (c->pad_positions && T > c->TP - c->pad_id - 1)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: sequence length %d exceeds max_position_embeddings - "
                        "pad_token_id - 1 = %d (positions start after the padding index)",
                        T, c->TP - c->pad_id - 1);
    if (T > c->TP)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: sequence length %d exceeds max_position_embeddings = %d", T,
                        c->TP);
    if ((int64_t)B * T > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "input_ids: batch too large (%d x %d)", B, T);
    if (x->types != NULL && c->TV == 0)
        return isp_fail(ISP_ERR_VALUE, "token_type_ids: this model has no token types");
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        if (x->ids[i] < 0 || x->ids[i] >= c->V)
            return isp_fail(ISP_ERR_VALUE,
                            "input_ids: id %d at [%lld, %lld] is outside the vocabulary [0, %d)",
                            x->ids[i], (long long)(i / T), (long long)(i % T), c->V);
        if (x->types != NULL && (x->types[i] < 0 || x->types[i] >= c->TV))
            return isp_fail(
                ISP_ERR_VALUE,
                "token_type_ids: %d at [%lld, %lld] is outside [0, type_vocab_size = %d)",
                x->types[i], (long long)(i / T), (long long)(i % T), c->TV);
    }
    return ISP_OK;
}

isp_status clf_check_labels(const clf_model *m, const void *labels, int B)
{
    if (m->cfg.NL == 1) {
        const float *y = labels;
        for (int b = 0; b < B; b++)
            if (!isfinite(y[b]))
                return isp_fail(ISP_ERR_VALUE, "labels: regression target %d is %g (not finite)", b,
                                (double)y[b]);
    } else {
        const int32_t *y = labels;
        for (int b = 0; b < B; b++)
            if (y[b] < 0 || y[b] >= m->cfg.NL)
                return isp_fail(ISP_ERR_VALUE,
                                "labels: label %d at [%d] is outside [0, num_labels = %d)", y[b], b,
                                m->cfg.NL);
    }
    return ISP_OK;
}

static uint64_t key_of(const clf_model *m, uint64_t site)
{
    return model_key(&m->core, site);
}

static uint64_t site_head_in(const clf_config *cfg)
{
    return SITE_ENC + 3 * (uint64_t)cfg->enc.L;
}

/* RoBERTa's position ids: pad_id + running count of non-pad tokens; pads stay at pad_id */
static void pad_positions(int32_t *pos, const int32_t *ids, int B, int T, int pad)
{
    for (int b = 0; b < B; b++) {
        int n = 0;
        for (int t = 0; t < T; t++) {
            int64_t i = (int64_t)b * T + t;
            n += ids[i] != pad;
            pos[i] = ids[i] != pad ? pad + n : pad;
        }
    }
}

/* embeddings -> a->x0 (B,T,C) */
static void embed_forward(clf_model *m, const clf_batch *x, int T)
{
    const clf_config *cfg = &m->cfg;
    const int C = cfg->enc.C, B = x->B, BT = B * T;
    clf_acts *a = &m->a;
    float p_hid = m->core.training ? cfg->enc.p_hidden : 0.0f;
    if (cfg->emb == CLF_EMB_PATCHES) {
        patch_embed_forward(a->emb, a->cols, x->pix, m->p.patchw, m->p.cls, m->p.wpe, B, cfg->IH,
                            cfg->IH, cfg->PS, C);
        for (int b = 0; b < B; b++)
            for (int t = 1; t < T; t++) {
                float *o = a->emb + ((int64_t)b * T + t) * C;
                for (int c = 0; c < C; c++)
                    o[c] += m->p.patchb[c];
            }
        memcpy(a->x0, a->emb, sizeof(float) * (size_t)BT * C);
    } else {
        if (cfg->pad_positions)
            pad_positions(a->pos, x->ids, B, T, cfg->pad_id);
        if (projects(cfg)) { /* LN and dropout in size E, then embeddings_project */
            const int E = cfg->E;
            embeddings_forward(a->pemb, x->ids, x->types, a->pos, m->p.wte, m->p.wpe, m->p.wtt, B,
                               T, E);
            layernorm_forward(a->pln, a->emb_mean, a->emb_rstd, a->pemb, m->p.embln_w,
                              m->p.embln_b, BT, E, cfg->enc.eps);
            if (p_hid > 0.0f)
                dropout_forward(a->pln, a->pln, (int64_t)BT * E, p_hid, key_of(m, SITE_EMB));
            linear_forward(a->x0, a->pln, m->p.embprojw, m->p.embprojb, BT, E, C, E);
            return;
        }
        embeddings_forward(a->emb, x->ids, x->types, a->pos, m->p.wte, m->p.wpe, m->p.wtt, B, T,
                           C);
        layernorm_forward(a->x0, a->emb_mean, a->emb_rstd, a->emb, m->p.embln_w, m->p.embln_b, BT,
                          C, cfg->enc.eps);
    }
    if (p_hid > 0.0f)
        dropout_forward(a->x0, a->x0, (int64_t)BT * C, p_hid, key_of(m, SITE_EMB));
}

/* the forward pass; leaves logits in m->a.logits */
static void forward(clf_model *m, const clf_batch *x, int T)
{
    const clf_config *cfg = &m->cfg;
    const int C = cfg->enc.C, B = x->B, BT = B * T;
    clf_acts *a = &m->a;
    const uint8_t *amask = NULL;
    if (x->amask != NULL) {
        memcpy(a->amask, x->amask, (size_t)BT);
        amask = a->amask;
    }
    float p_cls = m->core.training ? cfg->p_cls : 0.0f;
    PROF(EMB_FWD, embed_forward(m, x, T));
    encoder_rng rng = {m->core.training, m->core.seed, m->core.step, SITE_ENC};
    encoder_forward(&a->enc, &m->p.enc, &cfg->enc, a->x0, amask, B, T, &rng);
    isp_prof_mark t_head = {0.0, 0.0};
    if (isp_prof_on)
        t_head = isp_prof_now();
    const float *h = encoder_output(&a->enc, &cfg->enc, B, T);
    /* the head's input: the first token of each sequence, rows of h with stride T*C */
    const float *src = h;
    int ld = T * C;
    if (!head_reads_stack(cfg)) {
        for (int b = 0; b < B; b++)
            memcpy(a->clsh + (int64_t)b * C, h + (int64_t)b * T * C, sizeof(float) * (size_t)C);
        src = a->clsh;
        ld = C;
    }
    if (cfg->final_ln) {
        layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->clsh, m->p.lnf_w, m->p.lnf_b, B, C,
                          cfg->enc.eps);
        src = a->lnf;
    }
    if (cfg->head_dropin) {
        if (p_cls > 0.0f)
            dropout_forward(a->xin, src, (int64_t)B * C, p_cls, key_of(m, site_head_in(cfg)));
        else
            memcpy(a->xin, src, sizeof(float) * (size_t)B * C);
        src = a->xin;
    }
    if (cfg->head == CLF_HEAD_LINEAR) {
        memcpy(a->pooled_d, src, sizeof(float) * (size_t)B * C);
    } else {
        if (cfg->head == CLF_HEAD_TANH) {
            linear_forward(a->pooled, src, m->p.poolw, m->p.poolb, B, C, C, ld);
            tanh_forward(a->pooled, a->pooled, (int64_t)B * C);
        } else {
            linear_forward(a->pre, src, m->p.poolw, m->p.poolb, B, C, C, ld);
            act_forward(a->pooled, a->pre, (int64_t)B * C,
                        cfg->head == CLF_HEAD_GELU ? ACT_GELU : ACT_RELU);
        }
        if (p_cls > 0.0f)
            dropout_forward(a->pooled_d, a->pooled, (int64_t)B * C, p_cls, key_of(m, SITE_CLS));
        else
            memcpy(a->pooled_d, a->pooled, sizeof(float) * (size_t)B * C);
    }
    linear_forward(a->logits, a->pooled_d, m->p.clsw, m->p.clsb, B, C, cfg->NL, C);
    if (isp_prof_on)
        isp_prof_add(ISP_PROF_HEAD, t_head);
}

static void embed_backward(clf_model *m, const clf_batch *x, int T);

static void backward(clf_model *m, const clf_batch *x, int T)
{
    const clf_config *cfg = &m->cfg;
    const int C = cfg->enc.C, B = x->B, BT = B * T;
    const int64_t BC = (int64_t)B * C;
    clf_acts *a = &m->a;
    const uint8_t *amask = x->amask != NULL ? a->amask : NULL;
    float p_cls = m->core.training ? cfg->p_cls : 0.0f;
    isp_prof_mark t_head = {0.0, 0.0};
    if (isp_prof_on)
        t_head = isp_prof_now();
    const float *h = encoder_output(&a->enc, &cfg->enc, B, T);
    /* output layer */
    linear_backward(a->dpooled, m->g.clsw, m->g.clsb, a->dlogits, a->pooled_d, m->p.clsw, B, C,
                    cfg->NL, C, 0);
    memset(a->dio, 0, sizeof(float) * (size_t)BT * C);
    if (head_reads_stack(cfg)) {
        if (p_cls > 0.0f)
            dropout_backward(a->dpooled, a->dpooled, BC, p_cls, key_of(m, SITE_CLS));
        if (cfg->head == CLF_HEAD_TANH)
            tanh_backward(a->dpre, a->pooled, a->dpooled, BC);
        else
            act_backward(a->dpre, a->pre, a->dpooled, BC, cfg->head == CLF_HEAD_GELU ? ACT_GELU
                                                                                      : ACT_RELU);
        /* only the first token of each sequence gets a gradient */
        linear_backward(NULL, m->g.poolw, m->g.poolb, a->dpre, h, m->p.poolw, B, C, C, T * C, 0);
        gemm_par(0, 0, B, C, C, 1.0f, a->dpre, C, m->p.poolw, C, 0.0f, a->dio, T * C);
    } else {
        float *d = a->dpooled; /* gradient w.r.t. the head's current input */
        if (cfg->head != CLF_HEAD_LINEAR) {
            if (p_cls > 0.0f)
                dropout_backward(a->dpooled, a->dpooled, BC, p_cls, key_of(m, SITE_CLS));
            if (cfg->head == CLF_HEAD_TANH)
                tanh_backward(a->dpre, a->pooled, a->dpooled, BC);
            else
                act_backward(a->dpre, a->pre, a->dpooled, BC,
                             cfg->head == CLF_HEAD_GELU ? ACT_GELU : ACT_RELU);
            const float *in = cfg->head_dropin ? a->xin : cfg->final_ln ? a->lnf : a->clsh;
            linear_backward(a->dsrc, m->g.poolw, m->g.poolb, a->dpre, in, m->p.poolw, B, C, C, C,
                            0);
            d = a->dsrc;
        }
        if (cfg->head_dropin && p_cls > 0.0f)
            dropout_backward(d, d, BC, p_cls, key_of(m, site_head_in(cfg)));
        if (cfg->final_ln) {
            layernorm_backward(a->dsrc, m->g.lnf_w, m->g.lnf_b, d, a->clsh, m->p.lnf_w,
                               a->lnf_mean, a->lnf_rstd, B, C);
            d = a->dsrc;
        }
        for (int b = 0; b < B; b++)
            memcpy(a->dio + (int64_t)b * T * C, d + (int64_t)b * C, sizeof(float) * (size_t)C);
    }
    if (isp_prof_on)
        isp_prof_add(ISP_PROF_HEAD, t_head);
    /* encoder */
    encoder_rng rng = {m->core.training, m->core.seed, m->core.step, SITE_ENC};
    encoder_backward(a->dio, &m->g.enc, &m->p.enc, &a->enc, &cfg->enc, a->x0, amask, B, T, &rng);
    PROF(EMB_BWD, embed_backward(m, x, T));
}

/* the gradients of the embeddings from a->dio (ELECTRA's projected ones drop out before the
   projection) */
static void embed_backward(clf_model *m, const clf_batch *x, int T)
{
    const clf_config *cfg = &m->cfg;
    const int C = cfg->enc.C, B = x->B, BT = B * T;
    clf_acts *a = &m->a;
    float p_hid = m->core.training ? cfg->enc.p_hidden : 0.0f;
    if (p_hid > 0.0f && !projects(cfg))
        dropout_backward(a->dio, a->dio, (int64_t)BT * C, p_hid, key_of(m, SITE_EMB));
    if (cfg->emb == CLF_EMB_PATCHES) {
        const int NP = T - 1;
        for (int b = 0; b < B; b++)
            for (int t = 1; t < T; t++) {
                const float *d = a->dio + ((int64_t)b * T + t) * C;
                for (int c = 0; c < C; c++)
                    m->g.patchb[c] += d[c];
            }
        /* a->emb (B,T,C) is no longer needed: it is the gather scratch (B*NP,C) */
        patch_embed_backward(m->g.patchw, m->g.cls, m->g.wpe, a->emb, a->dio, a->cols, B, NP,
                             3 * cfg->PS * cfg->PS, C);
        return;
    }
    const int E = emb_size(cfg);
    const float *emb = a->emb;
    float *d = a->dio;
    if (projects(cfg)) {
        linear_backward(a->pd, m->g.embprojw, m->g.embprojb, a->dio, a->pln, m->p.embprojw, BT, E,
                        C, E, 0);
        if (p_hid > 0.0f)
            dropout_backward(a->pd, a->pd, (int64_t)BT * E, p_hid, key_of(m, SITE_EMB));
        emb = a->pemb;
        d = a->pd;
    }
    layernorm_backward(d, m->g.embln_w, m->g.embln_b, d, emb, m->p.embln_w, a->emb_mean,
                       a->emb_rstd, BT, E);
    embeddings_backward(m->g.wte, m->g.wpe, m->g.wtt, d, x->ids, x->types, a->pos, B, T, E);
    if (cfg->pad_id >= 0) /* nn.Embedding(padding_idx=pad_token_id): that row is never trained */
        memset(m->g.wte + (int64_t)cfg->pad_id * E, 0, sizeof(float) * (size_t)E);
    if (cfg->pad_positions) /* RoBERTa's position embedding has padding_idx too */
        memset(m->g.wpe + (int64_t)cfg->pad_id * E, 0, sizeof(float) * (size_t)E);
}

isp_status clf_forward(clf_model *m, float *logits, const clf_batch *x)
{
    const int T = clf_num_tokens(&m->cfg, x->T);
    isp_status st = ensure_acts(m, x->B, T, 1); /* no backward follows: one layer's activations */
    if (st != ISP_OK)
        return st;
    forward(m, x, T);
    if (logits != NULL)
        memcpy(logits, m->a.logits, sizeof(float) * (size_t)x->B * m->cfg.NL);
    model_advance(&m->core);
    return ISP_OK;
}

isp_status clf_forward_backward(clf_model *m, float *loss, float *logits, const clf_batch *x,
                                const void *labels, float smoothing)
{
    const int T = clf_num_tokens(&m->cfg, x->T), B = x->B;
    isp_status st = ensure_acts(m, B, T, 0);
    if (st != ISP_OK)
        return st;
    forward(m, x, T);
    clf_acts *a = &m->a;
    int NL = m->cfg.NL;
    PROF(HEAD, if (NL == 1) {
        *loss = mse_forward(a->logits, labels, B);
        mse_backward(a->dlogits, a->logits, labels, B);
    } else {
        *loss = crossentropy_forward(a->probs, a->logits, labels, B, NL, smoothing);
        crossentropy_backward(a->dlogits, a->probs, labels, B, NL, smoothing);
    });
    if (logits != NULL)
        memcpy(logits, a->logits, sizeof(float) * (size_t)B * NL);
    PROF(GRADS, model_zero_grads(&m->core));
    backward(m, x, T);
    PROF(GRADS, model_finish_backward(&m->core));
    return ISP_OK;
}

isp_status clf_train_step(clf_model *m, float *loss, float *grad_norm, float *mom1, float *mom2,
                          const int64_t *seg, const uint8_t *decay, int S, const adamw_hparams *hp,
                          const clf_batch *x, const void *labels, float smoothing)
{
    isp_status st = clf_forward_backward(m, loss, NULL, x, labels, smoothing);
    if (st != ISP_OK)
        return st;
    PROF(ADAMW, st = model_adamw(&m->core, mom1, mom2, seg, decay, S, hp, 1, grad_norm));
    return st;
}
