/*
 * bert.c -- BERT sequence classification around the encoder stack (layout: bert.h).
 * Dimension legend: B, T, C, V, TP max positions, TV token types, NL labels.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"

#define NT isp_get_num_threads()

/* dropout sites: 0 embeddings, 1 classifier, 2 + 3l + k encoder layer l */
#define SITE_EMB 0
#define SITE_CLS 1
#define SITE_ENC 2

static const char *const extra_names[BERT_NUM_EXTRA] = {
    "wte", "wpe", "wtt", "embln_w", "embln_b", "poolw", "poolb", "clsw", "clsb",
};

static void extra_sizes(int64_t s[BERT_NUM_EXTRA], const bert_config *cfg)
{
    int64_t C = cfg->enc.C;
    s[0] = (int64_t)cfg->V * C;
    s[1] = (int64_t)cfg->TP * C;
    s[2] = (int64_t)cfg->TV * C;
    s[3] = C;
    s[4] = C;
    s[5] = C * C;
    s[6] = C;
    s[7] = (int64_t)cfg->NL * C;
    s[8] = cfg->NL;
}

int bert_num_tensors(void)
{
    return ENC_NUM_TENSORS + BERT_NUM_EXTRA;
}

const char *bert_tensor_name(int i)
{
    static const char *const enc_names[ENC_NUM_TENSORS] = {
        "enc.qkvw", "enc.attprojw", "enc.fcw", "enc.fcprojw", "enc.qkvb", "enc.attprojb",
        "enc.ln1w", "enc.ln1b",     "enc.fcb", "enc.fcprojb", "enc.ln2w", "enc.ln2b",
    };
    if (i < 0 || i >= bert_num_tensors())
        return NULL;
    return i < ENC_NUM_TENSORS ? enc_names[i] : extra_names[i - ENC_NUM_TENSORS];
}

void bert_tensor_span(const bert_config *cfg, int i, int64_t *offset, int64_t *size)
{
    int64_t s[ENC_NUM_TENSORS + BERT_NUM_EXTRA];
    encoder_tensor_sizes(s, &cfg->enc);
    extra_sizes(s + ENC_NUM_TENSORS, cfg);
    layout_span(s, i, offset, size);
}

static void point_params(bert_params *p, float *base, const bert_config *cfg)
{
    encoder_point_params(&p->enc, base, &cfg->enc);
    base += encoder_num_params(&cfg->enc);
    int64_t s[BERT_NUM_EXTRA];
    extra_sizes(s, cfg);
    float **ptrs[BERT_NUM_EXTRA] = {&p->wte,   &p->wpe,   &p->wtt,  &p->embln_w, &p->embln_b,
                                    &p->poolw, &p->poolb, &p->clsw, &p->clsb};
    for (int i = 0; i < BERT_NUM_EXTRA; i++) {
        *ptrs[i] = base;
        base += s[i];
    }
}

isp_status bert_config_check(const bert_config *c)
{
    const encoder_config *e = &c->enc;
    if (c->V < 1 || c->TP < 1 || c->TV < 1 || c->NL < 1)
        return isp_fail(ISP_ERR_VALUE,
                        "config: vocab_size, max_position_embeddings, type_vocab_size and "
                        "num_labels must be >= 1 (got %d, %d, %d, %d)",
                        c->V, c->TP, c->TV, c->NL);
    if (e->L < 1 || e->C < 1 || e->NH < 1 || e->F < 1)
        return isp_fail(ISP_ERR_VALUE,
                        "config: num_hidden_layers, hidden_size, num_attention_heads and "
                        "intermediate_size must be >= 1 (got %d, %d, %d, %d)",
                        e->L, e->C, e->NH, e->F);
    if (e->C % e->NH != 0)
        return isp_fail(ISP_ERR_VALUE,
                        "config: hidden_size (%d) is not a multiple of num_attention_heads (%d)",
                        e->C, e->NH);
    if (c->pad_id < -1 || c->pad_id >= c->V)
        return isp_fail(ISP_ERR_VALUE, "config: pad_token_id %d outside the vocabulary [0, %d)",
                        c->pad_id, c->V);
    if ((int)e->act < ACT_GELU || (int)e->act > ACT_QUICK_GELU)
        return isp_fail(ISP_ERR_VALUE, "config: unknown activation %d", (int)e->act);
    if (!(e->eps > 0.0f) || !isfinite(e->eps))
        return isp_fail(ISP_ERR_VALUE, "config: layer_norm_eps must be > 0, got %g", e->eps);
    float ps[3] = {e->p_hidden, e->p_attn, c->p_cls};
    for (int i = 0; i < 3; i++)
        if (!(ps[i] >= 0.0f && ps[i] < 1.0f))
            return isp_fail(ISP_ERR_VALUE,
                            "config: dropout probabilities must be in [0, 1), got %g", ps[i]);
    /* the stack uses int row counts for sgemm */
    if ((int64_t)e->C * 3 > (1 << 30) || (int64_t)e->F > (1 << 30) ||
        (int64_t)c->V * e->C > ((int64_t)1 << 40))
        return isp_fail(ISP_ERR_VALUE, "config: sizes too large");
    /* the int64 parameter counts must not overflow: at most 2^40 encoder parameters */
    const double L = e->L, C = e->C, F = e->F;
    if (L * (4.0 * C * C + 2.0 * C * F + 9.0 * C + F) > 1099511627776.0)
        return isp_fail(ISP_ERR_VALUE, "config: %d layers of hidden size %d and intermediate size "
                        "%d is too many parameters", e->L, e->C, e->F);
    return ISP_OK;
}

isp_status bert_init(bert_model *m, const bert_config *cfg)
{
    memset(m, 0, sizeof *m);
    isp_status st = bert_config_check(cfg);
    if (st != ISP_OK)
        return st;
    m->cfg = *cfg;
    int64_t s[BERT_NUM_EXTRA], n = encoder_num_params(&cfg->enc);
    extra_sizes(s, cfg);
    for (int i = 0; i < BERT_NUM_EXTRA; i++)
        n += s[i];
    m->num_params = n;
    m->num_prunable = encoder_num_prunable(&cfg->enc);
    m->params = calloc((size_t)n, sizeof(float));
    m->grads = calloc((size_t)n, sizeof(float));
    m->masks = malloc((size_t)m->num_prunable);
    if (m->params == NULL || m->grads == NULL || m->masks == NULL) {
        bert_free(m);
        return isp_fail(ISP_ERR_NOMEM, "out of memory allocating %lld parameters", (long long)n);
    }
    memset(m->masks, 1, (size_t)m->num_prunable);
    point_params(&m->p, m->params, cfg);
    point_params(&m->g, m->grads, cfg);
    return ISP_OK;
}

void bert_free(bert_model *m)
{
    free(m->params);
    free(m->grads);
    free(m->masks);
    free(m->acts_mem);
    memset(m, 0, sizeof *m);
}

/* floats of bert_acts beyond the encoder's; amask is stored in floats' space too */
static int64_t head_acts_size(const bert_config *cfg, int B, int T)
{
    int64_t BT = (int64_t)B * T, C = cfg->enc.C, NL = cfg->NL;
    return 3 * BT * C + 2 * BT + 4 * (int64_t)B * C + 3 * (int64_t)B * NL + (BT + 3) / 4 + 64;
}

/* Point the activations at (B,T), growing the buffer when needed (no allocation otherwise). */
static isp_status ensure_acts(bert_model *m, int B, int T, int forward_only)
{
    const bert_config *cfg = &m->cfg;
    int nt = NT;
    int64_t need =
        encoder_acts_size_mode(&cfg->enc, B, T, nt, forward_only) + head_acts_size(cfg, B, T);
    if (need > m->acts_cap) {
        free(m->acts_mem);
        m->acts_cap = 0;
        m->acts_mem = malloc((size_t)need * sizeof(float));
        if (m->acts_mem == NULL)
            return isp_fail(ISP_ERR_NOMEM,
                            "out of memory allocating activations for a batch of %d x %d tokens "
                            "(%.1f MB); use smaller batches",
                            B, T, (double)need * 4.0 / 1e6);
        m->acts_cap = need;
    }
    int64_t BT = (int64_t)B * T, C = cfg->enc.C, NL = cfg->NL;
    float *p = m->acts_mem;
    bert_acts *a = &m->a;
    a->emb = p, p += BT * C;
    a->emb_mean = p, p += BT;
    a->emb_rstd = p, p += BT;
    a->x0 = p, p += BT * C;
    a->dio = p, p += BT * C;
    a->pooled = p, p += (int64_t)B * C;
    a->pooled_d = p, p += (int64_t)B * C;
    a->dpooled = p, p += (int64_t)B * C;
    a->dpre = p, p += (int64_t)B * C;
    a->logits = p, p += (int64_t)B * NL;
    a->probs = p, p += (int64_t)B * NL;
    a->dlogits = p, p += (int64_t)B * NL;
    a->amask = (uint8_t *)p, p += (BT + 3) / 4 + 16;
    encoder_point_acts_mode(&a->enc, p, &cfg->enc, B, T, forward_only);
    return ISP_OK;
}

isp_status bert_check_inputs(const bert_model *m, const int32_t *ids, const int32_t *types, int B,
                             int T)
{
    const bert_config *c = &m->cfg;
    if (B < 1 || T < 1)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: expected a non-empty (batch, seq_len) array, got (%d, %d)", B,
                        T);
    if (T > c->TP)
        return isp_fail(ISP_ERR_VALUE,
                        "input_ids: sequence length %d exceeds max_position_embeddings = %d", T,
                        c->TP);
    if ((int64_t)B * T > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "input_ids: batch too large (%d x %d)", B, T);
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        if (ids[i] < 0 || ids[i] >= c->V)
            return isp_fail(ISP_ERR_VALUE,
                            "input_ids: id %d at [%lld, %lld] is outside the vocabulary [0, %d)",
                            ids[i], (long long)(i / T), (long long)(i % T), c->V);
        if (types != NULL && (types[i] < 0 || types[i] >= c->TV))
            return isp_fail(
                ISP_ERR_VALUE,
                "token_type_ids: %d at [%lld, %lld] is outside [0, type_vocab_size = %d)", types[i],
                (long long)(i / T), (long long)(i % T), c->TV);
    }
    return ISP_OK;
}

isp_status bert_check_labels(const bert_model *m, const void *labels, int B)
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

static void zero_parallel(float *x, int64_t n)
{
    const int64_t chunk = 1 << 20, nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(NT) schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++)
        memset(x + k * chunk, 0,
               sizeof(float) * (size_t)(n - k * chunk < chunk ? n - k * chunk : chunk));
}

static uint64_t key_of(const bert_model *m, uint64_t site)
{
    return rng_key(m->seed, m->step, site);
}

/* the forward pass; leaves logits in m->a.logits */
static void forward(bert_model *m, const int32_t *ids, const int32_t *types,
                    const uint8_t *amask_in, int B, int T)
{
    const bert_config *cfg = &m->cfg;
    const int C = cfg->enc.C, BT = B * T;
    bert_acts *a = &m->a;
    const uint8_t *amask = NULL;
    if (amask_in != NULL) {
        memcpy(a->amask, amask_in, (size_t)BT);
        amask = a->amask;
    }
    float p_hid = m->training ? cfg->enc.p_hidden : 0.0f;
    float p_cls = m->training ? cfg->p_cls : 0.0f;
    embeddings_forward(a->emb, ids, types, m->p.wte, m->p.wpe, m->p.wtt, B, T, C);
    layernorm_forward(a->x0, a->emb_mean, a->emb_rstd, a->emb, m->p.embln_w, m->p.embln_b, BT, C,
                      cfg->enc.eps);
    if (p_hid > 0.0f)
        dropout_forward(a->x0, a->x0, (int64_t)BT * C, p_hid, key_of(m, SITE_EMB));
    encoder_rng rng = {m->training, m->seed, m->step, SITE_ENC};
    encoder_forward(&a->enc, &m->p.enc, &cfg->enc, a->x0, amask, B, T, &rng);
    const float *h = encoder_output(&a->enc, &cfg->enc, B, T);
    /* pooler on the first token of each sequence: rows of h with stride T*C */
    linear_forward(a->pooled, h, m->p.poolw, m->p.poolb, B, C, C, T * C);
    tanh_forward(a->pooled, a->pooled, (int64_t)B * C);
    if (p_cls > 0.0f)
        dropout_forward(a->pooled_d, a->pooled, (int64_t)B * C, p_cls, key_of(m, SITE_CLS));
    else
        memcpy(a->pooled_d, a->pooled, sizeof(float) * (size_t)B * C);
    linear_forward(a->logits, a->pooled_d, m->p.clsw, m->p.clsb, B, C, cfg->NL, C);
}

static void backward(bert_model *m, const int32_t *ids, const int32_t *types,
                     const uint8_t *has_mask, int B, int T)
{
    const bert_config *cfg = &m->cfg;
    const int C = cfg->enc.C, BT = B * T;
    bert_acts *a = &m->a;
    const uint8_t *amask = has_mask != NULL ? a->amask : NULL;
    float p_hid = m->training ? cfg->enc.p_hidden : 0.0f;
    float p_cls = m->training ? cfg->p_cls : 0.0f;
    const float *h = encoder_output(&a->enc, &cfg->enc, B, T);
    /* classifier */
    linear_backward(a->dpooled, m->g.clsw, m->g.clsb, a->dlogits, a->pooled_d, m->p.clsw, B, C,
                    cfg->NL, C, 0);
    if (p_cls > 0.0f)
        dropout_backward(a->dpooled, a->dpooled, (int64_t)B * C, p_cls, key_of(m, SITE_CLS));
    tanh_backward(a->dpre, a->pooled, a->dpooled, (int64_t)B * C);
    /* pooler: only the first token of each sequence gets a gradient */
    memset(a->dio, 0, sizeof(float) * (size_t)BT * C);
    linear_backward(NULL, m->g.poolw, m->g.poolb, a->dpre, h, m->p.poolw, B, C, C, T * C, 0);
    gemm_par(0, 0, B, C, C, 1.0f, a->dpre, C, m->p.poolw, C, 0.0f, a->dio, T * C);
    /* encoder */
    encoder_rng rng = {m->training, m->seed, m->step, SITE_ENC};
    encoder_backward(a->dio, &m->g.enc, &m->p.enc, &a->enc, &cfg->enc, a->x0, amask, B, T, &rng);
    /* embeddings */
    if (p_hid > 0.0f)
        dropout_backward(a->dio, a->dio, (int64_t)BT * C, p_hid, key_of(m, SITE_EMB));
    layernorm_backward(a->dio, m->g.embln_w, m->g.embln_b, a->dio, a->emb, m->p.embln_w,
                       a->emb_mean, a->emb_rstd, BT, C);
    embeddings_backward(m->g.wte, m->g.wpe, m->g.wtt, a->dio, ids, types, B, T, C);
    if (cfg->pad_id >= 0) /* nn.Embedding(padding_idx=pad_token_id): that row is never trained */
        memset(m->g.wte + (int64_t)cfg->pad_id * C, 0, sizeof(float) * (size_t)C);
}

isp_status bert_forward(bert_model *m, float *logits, const int32_t *ids, const int32_t *types,
                        const uint8_t *amask, int B, int T)
{
    isp_status st = ensure_acts(m, B, T, 1); /* no backward follows: one layer's activations */
    if (st != ISP_OK)
        return st;
    forward(m, ids, types, amask, B, T);
    if (logits != NULL)
        memcpy(logits, m->a.logits, sizeof(float) * (size_t)B * m->cfg.NL);
    if (m->training)
        m->step++;
    return ISP_OK;
}

isp_status bert_forward_backward(bert_model *m, float *loss, float *logits, const int32_t *ids,
                                 const int32_t *types, const uint8_t *amask, const void *labels,
                                 int B, int T, float smoothing)
{
    isp_status st = ensure_acts(m, B, T, 0);
    if (st != ISP_OK)
        return st;
    forward(m, ids, types, amask, B, T);
    bert_acts *a = &m->a;
    int NL = m->cfg.NL;
    if (NL == 1) {
        *loss = mse_forward(a->logits, labels, B);
        mse_backward(a->dlogits, a->logits, labels, B);
    } else {
        *loss = crossentropy_forward(a->probs, a->logits, labels, B, NL, smoothing);
        crossentropy_backward(a->dlogits, a->probs, labels, B, NL, smoothing);
    }
    if (logits != NULL)
        memcpy(logits, a->logits, sizeof(float) * (size_t)B * NL);
    zero_parallel(m->grads, m->num_params);
    backward(m, ids, types, amask, B, T);
    mask_apply(m->grads, m->masks, m->num_prunable);
    if (m->training)
        m->step++;
    return ISP_OK;
}

isp_status bert_train_step(bert_model *m, float *loss, float *grad_norm, float *mom1, float *mom2,
                           const int64_t *seg, const uint8_t *decay, int S, const adamw_hparams *hp,
                           const int32_t *ids, const int32_t *types, const uint8_t *amask,
                           const void *labels, int B, int T, float smoothing)
{
    isp_status st =
        bert_forward_backward(m, loss, NULL, ids, types, amask, labels, B, T, smoothing);
    if (st != ISP_OK)
        return st;
    return adamw_update(m->params, mom1, mom2, m->grads, m->num_params, seg, decay, S, m->masks, 0,
                        m->num_prunable, 1, hp, grad_norm);
}
