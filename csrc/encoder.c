/*
 * encoder.c -- the transformer encoder stack: parameter layout, forward, backward.
 * Layout and block equations: see encoder.h. Dimension legend: B, T, C, NH, HS, F, L.
 *
 * Saved activations of layer l (x is the layer input: the stack input for l = 0, else the output
 * of layer l-1):
 *   post-LN (BERT)                          pre-LN (CLIP/ViT)
 *   qkv  = x W_qkv + b                      ln1 = LN1(x); qkv = ln1 W_qkv + b
 *   atty = attention(qkv)                   atty = attention(qkv)
 *   res1 = x + drop(atty W_o + b)           res1 = x + drop(atty W_o + b)
 *   ln1  = LN1(res1)                        ln2 = LN2(res1)
 *   fch  = ln1 W_1 + b                      fch = ln2 W_1 + b
 *   res2 = ln1 + drop(act(fch) W_2 + b)     res2 = res1 + drop(act(fch) W_2 + b)   = output
 *   ln2  = LN2(res2)            = output
 * act(fch) is recomputed in the backward pass instead of being saved per layer.
 * Forward-only passes may use a shared layout (one slot for all layers, see encoder_acts).
 */
#include <math.h>
#include <string.h>

#include "encoder.h"
#include "profile.h"

#define NT isp_get_num_threads()

const char *const encoder_tensor_names[ENC_NUM_TENSORS] = {
    "qkvw", "attprojw", "fcw", "fcprojw", "qkvb", "attprojb",
    "ln1w", "ln1b",     "fcb", "fcprojb", "ln2w", "ln2b",
};

isp_status encoder_config_check(const encoder_config *e, const char *tower)
{
    if (e->L < 1 || e->C < 1 || e->NH < 1 || e->F < 1)
        return isp_fail(ISP_ERR_VALUE,
                        "%s: num_hidden_layers, hidden_size, num_attention_heads and "
                        "intermediate_size must be >= 1 (got %d, %d, %d, %d)",
                        tower, e->L, e->C, e->NH, e->F);
    if (e->C % e->NH != 0)
        return isp_fail(ISP_ERR_VALUE,
                        "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d)",
                        tower, e->C, e->NH);
    if ((int)e->act < ACT_GELU || (int)e->act > ACT_QUICK_GELU)
        return isp_fail(ISP_ERR_VALUE, "%s: unknown activation %d", tower, (int)e->act);
    if (!(e->eps > 0.0f) || !isfinite(e->eps))
        return isp_fail(ISP_ERR_VALUE, "%s: layer_norm_eps must be > 0, got %g", tower,
                        (double)e->eps);
    if (!(e->p_hidden >= 0.0f && e->p_hidden < 1.0f) || !(e->p_attn >= 0.0f && e->p_attn < 1.0f))
        return isp_fail(ISP_ERR_VALUE, "%s: dropout probabilities must be in [0, 1)",
                        tower);
    if ((int64_t)e->C * 3 > (1 << 30) || (int64_t)e->F > (1 << 30))
        return isp_fail(ISP_ERR_VALUE, "%s: sizes too large", tower);
    /* the int64 parameter counts must not overflow: at most 2^40 encoder parameters */
    const double L = e->L, C = e->C, F = e->F;
    if (L * (4.0 * C * C + 2.0 * C * F + 9.0 * C + F) > 1099511627776.0)
        return isp_fail(ISP_ERR_VALUE, "%s: %d layers of hidden size %d and intermediate "
                        "size %d is too many parameters", tower, e->L, e->C, e->F);
    return ISP_OK;
}

void encoder_tensor_sizes(int64_t s[ENC_NUM_TENSORS], const encoder_config *cfg)
{
    int64_t L = cfg->L, C = cfg->C, F = cfg->F;
    s[0] = L * 3 * C * C; /* qkvw */
    s[1] = L * C * C;     /* attprojw */
    s[2] = L * F * C;     /* fcw */
    s[3] = L * C * F;     /* fcprojw */
    s[4] = L * 3 * C;     /* qkvb */
    s[5] = L * C;         /* attprojb */
    s[6] = L * C;         /* ln1w */
    s[7] = L * C;         /* ln1b */
    s[8] = L * F;         /* fcb */
    s[9] = L * C;         /* fcprojb */
    s[10] = L * C;        /* ln2w */
    s[11] = L * C;        /* ln2b */
}

int64_t encoder_num_params(const encoder_config *cfg)
{
    int64_t s[ENC_NUM_TENSORS], n = 0;
    encoder_tensor_sizes(s, cfg);
    for (int i = 0; i < ENC_NUM_TENSORS; i++)
        n += s[i];
    return n;
}

int64_t encoder_num_prunable(const encoder_config *cfg)
{
    int64_t s[ENC_NUM_TENSORS], n = 0;
    encoder_tensor_sizes(s, cfg);
    for (int i = 0; i < ENC_NUM_PRUNABLE; i++)
        n += s[i];
    return n;
}

void encoder_point_params(encoder_params *p, float *base, const encoder_config *cfg)
{
    int64_t s[ENC_NUM_TENSORS];
    encoder_tensor_sizes(s, cfg);
    float **ptrs[ENC_NUM_TENSORS] = {&p->qkvw, &p->attprojw, &p->fcw,  &p->fcprojw,
                                     &p->qkvb, &p->attprojb, &p->ln1w, &p->ln1b,
                                     &p->fcb,  &p->fcprojb,  &p->ln2w, &p->ln2b};
    for (int i = 0; i < ENC_NUM_TENSORS; i++) {
        *ptrs[i] = base;
        base += s[i];
    }
}

/* floats per token per layer of saved activations, excluding att */
static int64_t per_token(const encoder_config *cfg)
{
    int64_t C = cfg->C, F = cfg->F;
    return C /* ln1 */ + 2 /* stats */ + 3 * C /* qkv */ + C /* atty */ + C /* res1 */ +
           C /* ln2 */ + 2 /* stats */ + F /* fch */ + C /* res2 */;
}

int64_t encoder_acts_size_mode(const encoder_config *cfg, int B, int T, int nthreads,
                               int forward_only)
{
    int64_t BT = (int64_t)B * T, L = forward_only ? 1 : cfg->L, C = cfg->C, F = cfg->F;
    return L * BT * per_token(cfg) + L * (int64_t)B * cfg->NH * T * T + 2 * BT * F + 2 * BT * C +
           3 * BT * C + attention_scratch_size(T, cfg->C, cfg->NH, nthreads);
}

void encoder_point_acts_mode(encoder_acts *a, float *base, const encoder_config *cfg, int B, int T,
                             int forward_only)
{
    int64_t BT = (int64_t)B * T, L = forward_only ? 1 : cfg->L, C = cfg->C, F = cfg->F;
    float *p = base;
#define TAKE(field, n)                                                                             \
    do {                                                                                           \
        a->field = p;                                                                              \
        p += (n);                                                                                  \
    } while (0)
    TAKE(ln1, L * BT * C);
    TAKE(ln1_mean, L * BT);
    TAKE(ln1_rstd, L * BT);
    TAKE(qkv, L * BT * 3 * C);
    TAKE(att, L * (int64_t)B * cfg->NH * T * T);
    TAKE(atty, L * BT * C);
    TAKE(res1, L * BT * C);
    TAKE(ln2, L * BT * C);
    TAKE(ln2_mean, L * BT);
    TAKE(ln2_rstd, L * BT);
    TAKE(fch, L * BT * F);
    TAKE(res2, L * BT * C);
    TAKE(hact, BT * F);
    TAKE(dhact, BT * F);
    TAKE(tmp, BT * C);
    TAKE(tmp2, BT * C);
    TAKE(dqkv, BT * 3 * C);
    a->attn_scratch = p;
    a->shared = forward_only;
#undef TAKE
}

int64_t encoder_acts_size(const encoder_config *cfg, int B, int T, int nthreads)
{
    return encoder_acts_size_mode(cfg, B, T, nthreads, 0);
}

void encoder_point_acts(encoder_acts *a, float *base, const encoder_config *cfg, int B, int T)
{
    encoder_point_acts_mode(a, base, cfg, B, T, 0);
}

/* The per-layer slices of the saved activations. */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *res1, *ln2, *ln2_mean, *ln2_rstd, *fch,
        *res2;
} layer_acts;

static layer_acts layer_slice(const encoder_acts *a, const encoder_config *cfg, int B, int T, int l)
{
    /* In the shared (forward-only) layout every layer writes slot 0. That is safe: a layer reads
       its input x (the previous output, in the same slot) only before it writes that output. */
    if (a->shared)
        l = 0;
    int64_t BT = (int64_t)B * T, C = cfg->C, F = cfg->F;
    layer_acts la = {
        .ln1 = a->ln1 + l * BT * C,
        .ln1_mean = a->ln1_mean + l * BT,
        .ln1_rstd = a->ln1_rstd + l * BT,
        .qkv = a->qkv + l * BT * 3 * C,
        .att = a->att + l * (int64_t)B * cfg->NH * T * T,
        .atty = a->atty + l * BT * C,
        .res1 = a->res1 + l * BT * C,
        .ln2 = a->ln2 + l * BT * C,
        .ln2_mean = a->ln2_mean + l * BT,
        .ln2_rstd = a->ln2_rstd + l * BT,
        .fch = a->fch + l * BT * F,
        .res2 = a->res2 + l * BT * C,
    };
    return la;
}

float *encoder_output(const encoder_acts *a, const encoder_config *cfg, int B, int T)
{
    layer_acts la = layer_slice(a, cfg, B, T, cfg->L - 1);
    return cfg->prenorm ? la.res2 : la.ln2;
}

/* The parameters of layer l (pointers into the stacked tensors). */
static encoder_params layer_params(const encoder_params *p, const encoder_config *cfg, int l)
{
    int64_t C = cfg->C, F = cfg->F;
    encoder_params q = {
        .qkvw = p->qkvw + l * 3 * C * C,
        .attprojw = p->attprojw + l * C * C,
        .fcw = p->fcw + l * F * C,
        .fcprojw = p->fcprojw + l * C * F,
        .qkvb = p->qkvb + l * 3 * C,
        .attprojb = p->attprojb + l * C,
        .ln1w = p->ln1w + l * C,
        .ln1b = p->ln1b + l * C,
        .fcb = p->fcb + l * F,
        .fcprojb = p->fcprojb + l * C,
        .ln2w = p->ln2w + l * C,
        .ln2b = p->ln2b + l * C,
    };
    return q;
}

static void add_inplace(float *y, const float *x, int64_t n)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (n >= 16384)
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

static uint64_t site_key(const encoder_rng *rng, int l, int k)
{
    return rng_key(rng->seed, rng->step, rng->site_base + 3 * (uint64_t)l + (uint64_t)k);
}

void encoder_forward(encoder_acts *a, const encoder_params *p, const encoder_config *cfg,
                     const float *inp, const uint8_t *amask, int B, int T, const encoder_rng *rng)
{
    const int C = cfg->C, F = cfg->F, BT = B * T;
    const int64_t BTC = (int64_t)BT * C;
    const float p_attn = rng->training ? cfg->p_attn : 0.0f;
    const float p_hid = rng->training ? cfg->p_hidden : 0.0f;
    const float *x = inp;
    for (int l = 0; l < cfg->L; l++) {
        layer_acts la = layer_slice(a, cfg, B, T, l);
        encoder_params w = layer_params(p, cfg, l);
        const float *qkv_in = x;
        if (cfg->prenorm) {
            PROF(LN_FWD, layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, x, w.ln1w, w.ln1b, BT,
                                           C, cfg->eps));
            qkv_in = la.ln1;
        }
        PROF(QKV_FWD, linear_forward(la.qkv, qkv_in, w.qkvw, w.qkvb, BT, C, 3 * C, C));
        PROF(ATT_FWD, attention_forward(la.atty, la.att, la.qkv, amask, B, T, C, cfg->NH,
                                        cfg->causal, p_attn,
                                        p_attn > 0.0f ? site_key(rng, l, 0) : 0, a->attn_scratch));
        PROF(PROJ_FWD, linear_forward(la.res1, la.atty, w.attprojw, w.attprojb, BT, C, C, C));
        /* res1 = x + drop(res1) and its LayerNorm (LN2 pre-LN, LN1 post-LN) in one pass */
        const uint64_t key1 = p_hid > 0.0f ? site_key(rng, l, 1) : 0;
        float *fc_in, *ffn_res;
        if (cfg->prenorm) {
            PROF(RES_LN_FWD, residual_layernorm_forward(la.res1, la.ln2, la.ln2_mean, la.ln2_rstd,
                                                        la.res1, x, w.ln2w, w.ln2b, BT, C,
                                                        cfg->eps, p_hid, key1));
            fc_in = la.ln2;
            ffn_res = la.res1;
        } else {
            PROF(RES_LN_FWD, residual_layernorm_forward(la.res1, la.ln1, la.ln1_mean, la.ln1_rstd,
                                                        la.res1, x, w.ln1w, w.ln1b, BT, C,
                                                        cfg->eps, p_hid, key1));
            fc_in = la.ln1;
            ffn_res = la.ln1;
        }
        PROF(FC_FWD, linear_forward(la.fch, fc_in, w.fcw, w.fcb, BT, C, F, C));
        PROF(ACT_FWD, act_forward(a->hact, la.fch, (int64_t)BT * F, cfg->act));
        PROF(FCPROJ_FWD, linear_forward(la.res2, a->hact, w.fcprojw, w.fcprojb, BT, F, C, F));
        const uint64_t key2 = p_hid > 0.0f ? site_key(rng, l, 2) : 0;
        if (!cfg->prenorm) { /* res2 = ln1 + drop(res2), ln2 = LN2(res2): the layer's output */
            PROF(RES_LN_FWD, residual_layernorm_forward(la.res2, la.ln2, la.ln2_mean, la.ln2_rstd,
                                                        la.res2, ffn_res, w.ln2w, w.ln2b, BT, C,
                                                        cfg->eps, p_hid, key2));
            x = la.ln2;
        } else { /* res2 = res1 + drop(res2): the layer's output */
            PROF(RES_FWD, if (p_hid > 0.0f) dropout_forward(la.res2, la.res2, BTC, p_hid, key2);
                 add_inplace(la.res2, ffn_res, BTC));
            x = la.res2;
        }
    }
}

void encoder_backward(float *dio, encoder_params *g, const encoder_params *p, const encoder_acts *a,
                      const encoder_config *cfg, const float *inp, const uint8_t *amask, int B,
                      int T, const encoder_rng *rng)
{
    const int C = cfg->C, F = cfg->F, BT = B * T;
    const int64_t BTC = (int64_t)BT * C, BTF = (int64_t)BT * F;
    const float p_attn = rng->training ? cfg->p_attn : 0.0f;
    const float p_hid = rng->training ? cfg->p_hidden : 0.0f;
    for (int l = cfg->L - 1; l >= 0; l--) {
        layer_acts la = layer_slice(a, cfg, B, T, l);
        encoder_params w = layer_params(p, cfg, l), gw = layer_params(g, cfg, l);
        const float *x;
        if (l == 0)
            x = inp;
        else {
            layer_acts prev = layer_slice(a, cfg, B, T, l - 1);
            x = cfg->prenorm ? prev.res2 : prev.ln2;
        }
        /* ---- feed-forward half; dio holds d(output) ---- */
        if (!cfg->prenorm) /* d res2 */
            PROF(LN_BWD, layernorm_backward(dio, gw.ln2w, gw.ln2b, dio, la.res2, w.ln2w,
                                            la.ln2_mean, la.ln2_rstd, BT, C));
        const float *dffn = dio;
        if (p_hid > 0.0f) {
            PROF(RES_BWD, dropout_backward(a->tmp, dio, BTC, p_hid, site_key(rng, l, 2)));
            dffn = a->tmp;
        }
        /* act(fch) again for fc2's weight gradient, then d fch = d act * act'(fch) in one pass
           (the same products as saving act'(fch) in a second buffer and multiplying after) */
        PROF(ACT_BWD, act_forward(a->hact, la.fch, BTF, cfg->act));
        PROF(FCPROJ_BWD, linear_backward(a->dhact, gw.fcprojw, gw.fcprojb, dffn, a->hact,
                                         w.fcprojw, BT, F, C, F, 0));
        PROF(ACT_BWD, act_backward(a->dhact, la.fch, a->dhact, BTF, cfg->act));
        if (!cfg->prenorm) {
            /* d ln1 = d res2 (residual) + dfch W_1; then through LN1 to d res1 */
            PROF(FC_BWD,
                 linear_backward(dio, gw.fcw, gw.fcb, a->dhact, la.ln1, w.fcw, BT, C, F, C, 1));
            PROF(LN_BWD, layernorm_backward(dio, gw.ln1w, gw.ln1b, dio, la.res1, w.ln1w,
                                            la.ln1_mean, la.ln1_rstd, BT, C));
        } else {
            /* d res1 = d res2 (residual) + LN2'(dfch W_1) */
            PROF(FC_BWD, linear_backward(a->tmp2, gw.fcw, gw.fcb, a->dhact, la.ln2, w.fcw, BT, C,
                                         F, C, 0));
            PROF(LN_BWD, layernorm_backward(a->tmp2, gw.ln2w, gw.ln2b, a->tmp2, la.res1, w.ln2w,
                                            la.ln2_mean, la.ln2_rstd, BT, C));
            PROF(RES_BWD, add_inplace(dio, a->tmp2, BTC));
        }
        /* ---- attention half; dio holds d res1 ---- */
        const float *dproj = dio;
        if (p_hid > 0.0f) {
            PROF(RES_BWD, dropout_backward(a->tmp, dio, BTC, p_hid, site_key(rng, l, 1)));
            dproj = a->tmp;
        }
        PROF(PROJ_BWD, linear_backward(a->tmp2, gw.attprojw, gw.attprojb, dproj, la.atty,
                                       w.attprojw, BT, C, C, C, 0));
        PROF(ATT_BWD, attention_backward(a->dqkv, a->tmp2, la.qkv, la.att, amask, B, T, C, cfg->NH,
                                         cfg->causal, p_attn,
                                         p_attn > 0.0f ? site_key(rng, l, 0) : 0,
                                         a->attn_scratch));
        if (!cfg->prenorm) {
            PROF(QKV_BWD,
                 linear_backward(dio, gw.qkvw, gw.qkvb, a->dqkv, x, w.qkvw, BT, C, 3 * C, C, 1));
        } else {
            PROF(QKV_BWD, linear_backward(a->tmp2, gw.qkvw, gw.qkvb, a->dqkv, la.ln1, w.qkvw, BT,
                                          C, 3 * C, C, 0));
            PROF(LN_BWD, layernorm_backward(a->tmp2, gw.ln1w, gw.ln1b, a->tmp2, x, w.ln1w,
                                            la.ln1_mean, la.ln1_rstd, BT, C));
            PROF(RES_BWD, add_inplace(dio, a->tmp2, BTC));
        }
    }
}
