/*
 * ops.c -- transformer building blocks, forward/backward pairs. See ops.h for the conventions.
 *
 * Dimension legend: B batch, T tokens, C channels, NH heads, HS head size (C/NH), F feed-forward
 * size, V vocabulary, NL labels, N rows, OC output channels.
 *
 * Determinism: every reduction runs in a fixed order inside one thread (rows, columns or (b,h)
 * pairs are distributed over threads, never the terms of one sum), so results do not depend on
 * the thread count. exp and erf are our own vectorisable polynomials (ops_expf / ops_erff).
 */
#include <math.h>
#include <string.h>

#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#else
#define THREAD_ID() 0
#endif

#define NT isp_get_num_threads()
/* parallelise a loop only when it has enough work to pay for the fork */
#define BIG(n) ((int64_t)(n) >= 16384)

/* ------------------------------------------------------------------------------------------ */
/* elementary functions                                                                        */

static inline float f32_from_bits(int32_t i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* exp with Cody-Waite range reduction and a degree-7 polynomial; relative error ~2e-7. */
static inline float fexp(float x)
{
    float xc = x > -87.0f ? x : -87.0f; /* NaN -> -87, restored below */
    xc = xc < 88.0f ? xc : 88.0f;
    float t = xc * 1.44269504088896341f;
    int32_t n = (int32_t)(t + (t >= 0.0f ? 0.5f : -0.5f));
    float fn = (float)n;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    float y = p * f32_from_bits((n + 127) << 23);
    return x == x ? y : x;
}

/* erf after Abramowitz & Stegun 7.1.26; absolute error below 2e-7. */
static inline float ferf(float x)
{
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = y * t;
    float e = 1.0f - y * fexp(-ax * ax);
    return x < 0.0f ? -e : e;
}

/* tanh through exp; absolute error ~1e-7 */
static inline float ftanh(float x)
{
    float e = fexp(2.0f * x);
    return 1.0f - 2.0f / (e + 1.0f);
}

float ops_expf(float x)
{
    return fexp(x);
}

float ops_erff(float x)
{
    return ferf(x);
}

/* ------------------------------------------------------------------------------------------ */
/* dropout                                                                                     */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site)
{
    return mix64(mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) ^ (step * 0xD1B54A32D192ED03ULL)) ^
                 (site + 0x8CB92BA72F3D8DD7ULL));
}

float rng_uniform(uint64_t key, uint64_t idx)
{
    return (float)(mix64(key + idx * 0x9E3779B97F4A7C15ULL) >> 40) * (1.0f / 16777216.0f);
}

void dropout_forward(float *out, const float *inp, int64_t N, float p, uint64_t key)
{
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
    for (int64_t i = 0; i < N; i++)
        out[i] = rng_uniform(key, (uint64_t)i) >= p ? inp[i] * scale : 0.0f;
}

void dropout_backward(float *dinp, const float *dout, int64_t N, float p, uint64_t key)
{
    dropout_forward(dinp, dout, N, p, key);
}

/* ------------------------------------------------------------------------------------------ */
/* sums in 8 fixed lanes (vectorisable without reassociation flags, order independent of threads) */

static inline float sum_f(const float *x, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += x[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += x[i];
    return s;
}

static inline float dot_f(const float *x, const float *y, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += x[i + k] * y[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* sum of (x - m)^2 */
static inline float sqdev_f(const float *x, float m, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float d = x[i + k] - m;
            acc[k] += d * d;
        }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += (x[i] - m) * (x[i] - m);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* layernorm                                                                                   */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int64_t N, int C, float eps)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float m = sum_f(x, C) / (float)C;
        float v = sqdev_f(x, m, C) / (float)C;
        float s = 1.0f / sqrtf(v + eps);
        float *o = out + n * C;
        for (int c = 0; c < C; c++)
            o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

/* columns [c0,c1) of dweight/dbias: a fixed order over rows for every column */
static void layernorm_backward_params(float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *mean, const float *rstd,
                                      int64_t N, int C, int c0, int c1)
{
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *d = dout + n * C;
        float m = mean[n], s = rstd[n];
        for (int c = c0; c < c1; c++) {
            dweight[c] += d[c] * ((x[c] - m) * s);
            dbias[c] += d[c];
        }
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int64_t N, int C)
{
    /* parameter gradients first: dinp may alias dout */
    int nchunks = (C + 63) / 64;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int k = 0; k < nchunks; k++) {
        int c0 = k * 64, c1 = c0 + 64 < C ? c0 + 64 : C;
        layernorm_backward_params(dweight, dbias, dout, inp, mean, rstd, N, C, c0, c1);
    }
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *d = dout + n * C;
        float m = mean[n], s = rstd[n];
        float acc_a[8] = {0}, acc_b[8] = {0};
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int k = 0; k < 8; k++) {
                float dn = weight[c + k] * d[c + k];
                acc_a[k] += dn;
                acc_b[k] += dn * ((x[c + k] - m) * s);
            }
        float sa = ((acc_a[0] + acc_a[4]) + (acc_a[1] + acc_a[5])) +
                   ((acc_a[2] + acc_a[6]) + (acc_a[3] + acc_a[7]));
        float sb = ((acc_b[0] + acc_b[4]) + (acc_b[1] + acc_b[5])) +
                   ((acc_b[2] + acc_b[6]) + (acc_b[3] + acc_b[7]));
        for (; c < C; c++) {
            float dn = weight[c] * d[c];
            sa += dn;
            sb += dn * ((x[c] - m) * s);
        }
        float ma = sa / (float)C, mb = sb / (float)C;
        float *di = dinp + n * C;
        for (c = 0; c < C; c++) {
            float xh = (x[c] - m) * s;
            di[c] = (weight[c] * d[c] - ma - xh * mb) * s;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* activations                                                                                 */

#define GELU_K 0.70710678118654752f  /* 1/sqrt(2) */
#define GELU_P 0.39894228040143268f  /* 1/sqrt(2 pi) */
#define TANH_K 0.79788456080286536f  /* sqrt(2/pi) */
#define TANH_C 0.044715f

void act_forward(float *out, const float *inp, int64_t N, isp_act act)
{
    switch (act) {
    case ACT_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + ferf(x * GELU_K));
        }
        break;
    case ACT_GELU_TANH:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + ftanh(TANH_K * (x + TANH_C * x * x * x)));
        }
        break;
    case ACT_RELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++)
            out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
        break;
    case ACT_QUICK_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = x / (1.0f + fexp(-1.702f * x));
        }
        break;
    }
}

void act_forward_deriv(float *out, float *deriv, const float *inp, int64_t N, isp_act act)
{
    switch (act) {
    case ACT_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float cdf = 0.5f * (1.0f + ferf(x * GELU_K));
            out[i] = x * cdf;
            deriv[i] = cdf + x * GELU_P * fexp(-0.5f * x * x);
        }
        break;
    case ACT_GELU_TANH:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float th = ftanh(TANH_K * (x + TANH_C * x * x * x));
            out[i] = 0.5f * x * (1.0f + th);
            deriv[i] = 0.5f * (1.0f + th) +
                       0.5f * x * (1.0f - th * th) * TANH_K * (1.0f + 3.0f * TANH_C * x * x);
        }
        break;
    case ACT_RELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
            deriv[i] = inp[i] > 0.0f ? 1.0f : 0.0f;
        }
        break;
    case ACT_QUICK_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float s = 1.0f / (1.0f + fexp(-1.702f * x));
            out[i] = x * s;
            deriv[i] = s + x * 1.702f * s * (1.0f - s);
        }
        break;
    }
}

void act_backward(float *dinp, const float *inp, const float *dout, int64_t N, isp_act act)
{
    switch (act) {
    case ACT_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float cdf = 0.5f * (1.0f + ferf(x * GELU_K));
            dinp[i] = dout[i] * (cdf + x * GELU_P * fexp(-0.5f * x * x));
        }
        break;
    case ACT_GELU_TANH:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float th = ftanh(TANH_K * (x + TANH_C * x * x * x));
            dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * TANH_K *
                                                          (1.0f + 3.0f * TANH_C * x * x));
        }
        break;
    case ACT_RELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++)
            dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
        break;
    case ACT_QUICK_GELU:
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N))
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float s = 1.0f / (1.0f + fexp(-1.702f * x));
            dinp[i] = dout[i] * (s + x * 1.702f * s * (1.0f - s));
        }
        break;
    }
}

void tanh_forward(float *out, const float *inp, int64_t N)
{
    for (int64_t i = 0; i < N; i++)
        out[i] = tanhf(inp[i]);
}

void tanh_backward(float *dinp, const float *out, const float *dout, int64_t N)
{
    for (int64_t i = 0; i < N; i++)
        dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* softmax                                                                                     */

void softmax_forward(float *probs, const float *logits, int64_t N, int V)
{
    for (int64_t n = 0; n < N; n++) {
        const float *l = logits + n * V;
        float *p = probs + n * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++)
            mx = l[v] > mx ? l[v] : mx;
        double s = 0.0;
        for (int v = 0; v < V; v++) {
            p[v] = expf(l[v] - mx);
            s += p[v];
        }
        for (int v = 0; v < V; v++)
            p[v] = (float)(p[v] / s);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* linear                                                                                      */

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC, int ldi)
{
    if (bias != NULL) {
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)N * OC))
        for (int n = 0; n < N; n++)
            memcpy(out + (int64_t)n * OC, bias, sizeof(float) * (size_t)OC);
    }
    blas_sgemm_rm(0, 1, N, OC, C, 1.0f, inp, ldi, weight, C, bias != NULL ? 1.0f : 0.0f, out, OC);
}

/* dbias[j] += sum_n dout[n, j], columns split into fixed chunks */
static void colsum_acc(float *dbias, const float *dout, int N, int OC)
{
    int nchunks = (OC + 63) / 64;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)N * OC))
    for (int k = 0; k < nchunks; k++) {
        int c0 = k * 64, c1 = c0 + 64 < OC ? c0 + 64 : OC;
        float acc[64];
        for (int c = c0; c < c1; c++)
            acc[c - c0] = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *d = dout + (int64_t)n * OC;
            for (int c = c0; c < c1; c++)
                acc[c - c0] += d[c];
        }
        for (int c = c0; c < c1; c++)
            dbias[c] += acc[c - c0];
    }
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC, int ldi,
                     int accumulate)
{
    if (dinp != NULL)
        blas_sgemm_rm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, accumulate ? 1.0f : 0.0f, dinp,
                      C);
    blas_sgemm_rm(1, 0, OC, C, N, 1.0f, dout, OC, inp, ldi, 1.0f, dweight, C);
    if (dbias != NULL)
        colsum_acc(dbias, dout, N, OC);
}

/* ------------------------------------------------------------------------------------------ */
/* attention                                                                                   */

int64_t attention_scratch_size(int T, int C, int NH, int nthreads)
{
    int HS = C / NH;
    return (int64_t)nthreads * ((int64_t)HS * T + 3 * (int64_t)T + 16);
}

/* y[0:n] += a * x[0:n] */
static inline void axpy(float *restrict y, float a, const float *restrict x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Is key j visible from query i of sequence b? */
static inline int key_visible(const uint8_t *am, int i, int j, int causal)
{
    return (am == NULL || am[j]) && (!causal || j <= i);
}

void attention_forward(float *out, float *att, const float *qkv, const uint8_t *amask, int B,
                       int T, int C, int NH, int causal, float p_drop, uint64_t key,
                       float *scratch)
{
    const int HS = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const float dscale = p_drop > 0.0f ? 1.0f / (1.0f - p_drop) : 1.0f;
    const int64_t per = (int64_t)HS * T + 3 * (int64_t)T + 16;
#pragma omp parallel for num_threads(NT) schedule(static) collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float *kt = scratch + per * THREAD_ID(); /* (HS,T) K^T of this head */
            const float *base = qkv + (int64_t)b * T * C3;
            const uint8_t *am = amask != NULL ? amask + (int64_t)b * T : NULL;
            for (int j = 0; j < T; j++) {
                const float *kj = base + (int64_t)j * C3 + C + h * HS;
                for (int k = 0; k < HS; k++)
                    kt[(int64_t)k * T + j] = kj[k];
            }
            for (int i = 0; i < T; i++) {
                const float *qi = base + (int64_t)i * C3 + h * HS;
                float *p = att + (((int64_t)b * NH + h) * T + i) * T;
                for (int j = 0; j < T; j++)
                    p[j] = 0.0f;
                for (int k = 0; k < HS; k++)
                    axpy(p, qi[k], kt + (int64_t)k * T, T);
                float mx = -INFINITY;
                int nvis = 0;
                for (int j = 0; j < T; j++) {
                    p[j] *= scale;
                    if (key_visible(am, i, j, causal)) {
                        mx = p[j] > mx ? p[j] : mx;
                        nvis++;
                    }
                }
                if (nvis == 0) { /* every key masked: uniform, like adding finfo.min everywhere */
                    for (int j = 0; j < T; j++)
                        p[j] = 1.0f / (float)T;
                } else {
                    float s = 0.0f;
                    for (int j = 0; j < T; j++) {
                        p[j] = key_visible(am, i, j, causal) ? fexp(p[j] - mx) : 0.0f;
                        s += p[j];
                    }
                    for (int j = 0; j < T; j++)
                        p[j] = p[j] / s;
                }
                float *o = out + ((int64_t)b * T + i) * C + h * HS;
                for (int k = 0; k < HS; k++)
                    o[k] = 0.0f;
                uint64_t row = (((uint64_t)b * NH + h) * T + i) * T;
                for (int j = 0; j < T; j++) {
                    float pj = p[j];
                    if (p_drop > 0.0f)
                        pj = rng_uniform(key, row + j) >= p_drop ? pj * dscale : 0.0f;
                    if (pj != 0.0f)
                        axpy(o, pj, base + (int64_t)j * C3 + 2 * C + h * HS, HS);
                }
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        const uint8_t *amask, int B, int T, int C, int NH, int causal,
                        float p_drop, uint64_t key, float *scratch)
{
    const int HS = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const float dscale = p_drop > 0.0f ? 1.0f / (1.0f - p_drop) : 1.0f;
    const int64_t per = (int64_t)HS * T + 3 * (int64_t)T + 16;
    (void)amask;
    (void)causal; /* masked keys have probability 0, so they get no gradient */
#pragma omp parallel for num_threads(NT) schedule(static) collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float *vt = scratch + per * THREAD_ID(); /* (HS,T) V^T */
            float *dp = vt + (int64_t)HS * T;      /* (T) */
            float *ks = dp + T;                    /* (T) dropout scale per key */
            float *ds = ks + T;                    /* (T) */
            const float *base = qkv + (int64_t)b * T * C3;
            float *dbase = dqkv + (int64_t)b * T * C3;
            for (int j = 0; j < T; j++) {
                const float *vj = base + (int64_t)j * C3 + 2 * C + h * HS;
                for (int k = 0; k < HS; k++)
                    vt[(int64_t)k * T + j] = vj[k];
                float *d = dbase + (int64_t)j * C3 + h * HS;
                for (int k = 0; k < HS; k++)
                    d[k] = d[C + k] = d[2 * C + k] = 0.0f;
            }
            for (int i = 0; i < T; i++) {
                const float *p = att + (((int64_t)b * NH + h) * T + i) * T;
                const float *doi = dout + ((int64_t)b * T + i) * C + h * HS;
                const float *qi = base + (int64_t)i * C3 + h * HS;
                float *dqi = dbase + (int64_t)i * C3 + h * HS;
                uint64_t row = (((uint64_t)b * NH + h) * T + i) * T;
                for (int j = 0; j < T; j++)
                    ks[j] = p_drop > 0.0f ? (rng_uniform(key, row + j) >= p_drop ? dscale : 0.0f)
                                          : 1.0f;
                /* dP_dropped = dO V^T; dV += P_dropped^T dO */
                for (int j = 0; j < T; j++)
                    dp[j] = 0.0f;
                for (int k = 0; k < HS; k++)
                    axpy(dp, doi[k], vt + (int64_t)k * T, T);
                for (int j = 0; j < T; j++) {
                    float pj = p[j] * ks[j];
                    if (pj != 0.0f)
                        axpy(dbase + (int64_t)j * C3 + 2 * C + h * HS, pj, doi, HS);
                }
                /* softmax backward: dS = P * (dP - sum(P dP)), times the score scale */
                float dot = 0.0f;
                for (int j = 0; j < T; j++) {
                    dp[j] *= ks[j];
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j < T; j++)
                    ds[j] = p[j] * (dp[j] - dot) * scale;
                for (int j = 0; j < T; j++) {
                    float d = ds[j];
                    if (d != 0.0f) {
                        const float *kj = base + (int64_t)j * C3 + C + h * HS;
                        axpy(dqi, d, kj, HS);
                        axpy(dbase + (int64_t)j * C3 + C + h * HS, d, qi, HS);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* embeddings                                                                                  */

void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const float *wte,
                        const float *wpe, const float *wtt, int B, int T, int C)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)B * T * C))
    for (int64_t bt = 0; bt < (int64_t)B * T; bt++) {
        int t = (int)(bt % T);
        const float *w = wte + (int64_t)ids[bt] * C, *p = wpe + (int64_t)t * C;
        const float *y = wtt + (int64_t)(types != NULL ? types[bt] : 0) * C;
        float *o = out + bt * C;
        for (int c = 0; c < C; c++)
            o[c] = (w[c] + y[c]) + p[c];
    }
}

void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                         const int32_t *ids, const int32_t *types, int B, int T, int C)
{
    int nchunks = (C + 31) / 32;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)B * T * C))
    for (int k = 0; k < nchunks; k++) {
        int c0 = k * 32, c1 = c0 + 32 < C ? c0 + 32 : C;
        for (int64_t bt = 0; bt < (int64_t)B * T; bt++) {
            int t = (int)(bt % T);
            const float *d = dout + bt * C;
            float *w = dwte + (int64_t)ids[bt] * C, *p = dwpe + (int64_t)t * C;
            float *y = dwtt + (int64_t)(types != NULL ? types[bt] : 0) * C;
            for (int c = c0; c < c1; c++) {
                w[c] += d[c];
                p[c] += d[c];
                y[c] += d[c];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* losses                                                                                      */

float crossentropy_forward(float *probs, const float *logits, const int32_t *labels, int B,
                           int NL, float smoothing)
{
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *l = logits + (int64_t)b * NL;
        float *p = probs + (int64_t)b * NL;
        float mx = -INFINITY;
        for (int c = 0; c < NL; c++)
            mx = l[c] > mx ? l[c] : mx;
        double s = 0.0;
        for (int c = 0; c < NL; c++)
            s += exp((double)l[c] - mx);
        double lse = log(s) + mx, sum_logp = 0.0;
        for (int c = 0; c < NL; c++) {
            double lp = (double)l[c] - lse;
            p[c] = (float)exp(lp);
            sum_logp += lp;
        }
        double nll = lse - (double)l[labels[b]];
        total += (1.0 - smoothing) * nll - smoothing * sum_logp / NL;
    }
    return (float)(total / B);
}

void crossentropy_backward(float *dlogits, const float *probs, const int32_t *labels, int B,
                           int NL, float smoothing)
{
    float inv = 1.0f / (float)B, off = smoothing / (float)NL;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (int64_t)b * NL;
        float *d = dlogits + (int64_t)b * NL;
        for (int c = 0; c < NL; c++)
            d[c] = (p[c] - off - (c == labels[b] ? 1.0f - smoothing : 0.0f)) * inv;
    }
}

float mse_forward(const float *preds, const float *targets, int B)
{
    double s = 0.0;
    for (int b = 0; b < B; b++) {
        double d = (double)preds[b] - targets[b];
        s += d * d;
    }
    return (float)(s / B);
}

void mse_backward(float *dpreds, const float *preds, const float *targets, int B)
{
    for (int b = 0; b < B; b++)
        dpreds[b] = 2.0f * (preds[b] - targets[b]) / (float)B;
}
