/*
 * ops.c -- transformer building blocks, forward/backward pairs. See ops.h for the conventions.
 *
 * Dimension legend: B batch, T tokens, C channels, NH heads, HS head size (C/NH), F feed-forward
 * size, V vocabulary, NL labels, N rows, OC output channels.
 *
 * Determinism: every reduction runs in a fixed order inside one thread (rows, columns or (b,h)
 * pairs are distributed over threads, never the terms of one sum), so our kernels' results do
 * not depend on the thread count (gemm_par's sgemm blocks may, in the last bits). exp and erf are our own vectorisable polynomials (ops_expf / ops_erff).
 */
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "blas.h"
#include "gemm_bf16.h"
#include "mix.h"
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

/*
 * SIMD dispatch: hot loops are written once in plain C and compiled three times, for AVX-512, AVX2
 * and the baseline x86-64 (SSE2), choosing at run time; the build itself stays portable (no
 * -march). All variants do the same arithmetic in the same order (no FMA contraction, no
 * reassociation), so the results are bitwise identical whichever is picked.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ISP_NO_DISPATCH)
#define SIMD_FN(name, params, ...)                                                                 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), noinline)) static void            \
        name##_avx512 params                                                                       \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }                                                                                              \
    __attribute__((target("avx2"), noinline)) static void name##_avx2 params                       \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }                                                                                              \
    __attribute__((noinline)) static void name##_base params                                       \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define SIMD_CALL(name)                                                                            \
    (simd_level() == 2 ? name##_avx512 : simd_level() == 1 ? name##_avx2 : name##_base)

/* 2: AVX-512 (F, BW, VL, DQ), 1: AVX2, 0: baseline; the best the CPU has, or a lower level named
 * by INSTANTSOUP_SIMD=avx512|avx2|base (read once; tests compare the variants' bits with it) */
static int simd_level(void)
{
    static int level = -1;
    int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (l >= 0)
        return l;
    __builtin_cpu_init();
    l = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
            ? 2
        : __builtin_cpu_supports("avx2") ? 1
                                         : 0;
    const char *want = getenv("INSTANTSOUP_SIMD");
    if (want != NULL) {
        const int w = strcmp(want, "avx512") == 0 ? 2 : strcmp(want, "avx2") == 0 ? 1
                      : strcmp(want, "base") == 0  ? 0
                                                   : l;
        l = w < l ? w : l; /* never a level the CPU lacks */
    }
    __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    return l;
}

const char *ops_simd_name(void)
{
    static const char *const names[3] = {"base", "avx2", "avx512"};
    return names[simd_level()];
}
#else
#define SIMD_FN(name, params, ...)                                                                 \
    static void name params                                                                        \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define SIMD_CALL(name) name
const char *ops_simd_name(void)
{
    return "base";
}
#endif

/* elementwise loops run over fixed chunks of this many elements, one thread per chunk */
#define CHUNK 16384
#define NCHUNKS(n) (((n) + CHUNK - 1) / CHUNK)
#define CHUNK_LEN(n, k) ((n) - (k) * CHUNK < CHUNK ? (n) - (k) * CHUNK : CHUNK)

/* ------------------------------------------------------------------------------------------ */
/* elementary functions                                                                        */

static inline float f32_from_bits(int32_t i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* exp with Cody-Waite range reduction and a degree-7 polynomial; relative error ~2e-7.
   Branch-free so that loops calling it vectorise; NaN in -> NaN out (via x - x). */
static inline float fexp(float x)
{
    float xc = x > -87.0f ? x : -87.0f;
    xc = xc < 88.0f ? xc : 88.0f;
    float t = xc * 1.44269504088896341f;
    int32_t n = (int32_t)(t + 128.5f) - 128; /* round to nearest, t in [-126, 127] */
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
    return p * f32_from_bits((n + 127) << 23) + (x - x);
}

/* erf after Abramowitz & Stegun 7.1.26; absolute error below 5e-7 in float. */
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
    return copysignf(1.0f - y * fexp(-ax * ax), x);
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

uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site)
{
    return mix64(mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) ^ (step * 0xD1B54A32D192ED03ULL)) ^
                 (site + 0x8CB92BA72F3D8DD7ULL));
}

/* murmur3's 32-bit finaliser: a bijection with good avalanche, vectorisable (32-bit lanes) */
static inline uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* two keyed rounds over the element index (the high half of idx goes into the second key) */
static inline float rng_u(uint64_t key, uint64_t idx)
{
    uint32_t h = fmix32((uint32_t)idx ^ (uint32_t)key);
    h = fmix32(h + ((uint32_t)(key >> 32) ^ ((uint32_t)(idx >> 32) * 0x9E3779B9u)));
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

float rng_uniform(uint64_t key, uint64_t idx)
{
    return rng_u(key, idx);
}

SIMD_FN(
    dropout_chunk, (float *out, const float *inp, int64_t i0, int64_t n, float p, uint64_t key),
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) {
        float u = rng_u(key, (uint64_t)(i0 + i));
        out[i] = u >= p ? inp[i] * scale : 0.0f;
    })

void dropout_forward(float *out, const float *inp, int64_t N, float p, uint64_t key)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (NCHUNKS(N) > 1)
    for (int64_t k = 0; k < NCHUNKS(N); k++)
        SIMD_CALL(dropout_chunk)(out + k * CHUNK, inp + k * CHUNK, k * CHUNK, CHUNK_LEN(N, k), p,
                                 key);
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

/* one row: o = LN(x), its mean and 1/std into *mean, *rstd */
static inline void layernorm_row(float *o, float *mean, float *rstd, const float *x,
                                 const float *weight, const float *bias, int C, float eps)
{
    float m = sum_f(x, C) / (float)C;
    float v = sqdev_f(x, m, C) / (float)C;
    float s = 1.0f / sqrtf(v + eps);
    for (int c = 0; c < C; c++)
        o[c] = (x[c] - m) * s * weight[c] + bias[c];
    *mean = m;
    *rstd = s;
}

SIMD_FN(
    layernorm_rows,
    (float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
     int64_t n0, int64_t n1, int C, float eps),
    for (int64_t n = n0; n < n1; n++)
        layernorm_row(out + n * C, mean + n, rstd + n, inp + n * C, weight, bias, C, eps);)

#define ROWS 64 /* rows per task */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps)
{
    int64_t ntask = (N + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int64_t k = 0; k < ntask; k++)
        SIMD_CALL(layernorm_rows)(out, mean, rstd, inp, weight, bias, k * ROWS,
                                  (k + 1) * ROWS < N ? (k + 1) * ROWS : N, C, eps);
}

/* rows [n0,n1): res = drop(y) + x (dropout_chunk's arithmetic and indices when p > 0), then
   out = LN(res), row by row while the row is in cache */
SIMD_FN(
    residual_layernorm_rows,
    (float *res, float *out, float *mean, float *rstd, const float *y, const float *x,
     const float *weight, const float *bias, int64_t n0, int64_t n1, int C, float eps, float p,
     uint64_t key),
    const float scale = 1.0f / (1.0f - p);
    for (int64_t n = n0; n < n1; n++) {
        float *r = res + n * C;
        const float *yr = y + n * C, *xr = x + n * C;
        if (p > 0.0f) {
            for (int c = 0; c < C; c++) {
                float u = rng_u(key, (uint64_t)(n * C + c));
                r[c] = (u >= p ? yr[c] * scale : 0.0f) + xr[c];
            }
        } else {
            for (int c = 0; c < C; c++)
                r[c] = yr[c] + xr[c];
        }
        layernorm_row(out + n * C, mean + n, rstd + n, r, weight, bias, C, eps);
    })

void residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *y,
                                const float *x, const float *weight, const float *bias, int64_t N,
                                int C, float eps, float p, uint64_t key)
{
    int64_t ntask = (N + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int64_t k = 0; k < ntask; k++)
        SIMD_CALL(residual_layernorm_rows)(res, out, mean, rstd, y, x, weight, bias, k * ROWS,
                                           (k + 1) * ROWS < N ? (k + 1) * ROWS : N, C, eps, p,
                                           key);
}

/* columns [c0,c1) of dweight/dbias: a fixed order over rows for every column */
SIMD_FN(
    layernorm_backward_params,
    (float *dweight, float *dbias, const float *dout, const float *inp, const float *mean,
     const float *rstd, int64_t N, int C, int c0, int c1),
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *d = dout + n * C;
        float m = mean[n], s = rstd[n];
        for (int c = c0; c < c1; c++) {
            dweight[c] += d[c] * ((x[c] - m) * s);
            dbias[c] += d[c];
        }
    })

SIMD_FN(
    layernorm_backward_rows,
    (float *dinp, const float *dout, const float *inp, const float *weight, const float *mean,
     const float *rstd, int64_t n0, int64_t n1, int C),
    for (int64_t n = n0; n < n1; n++) {
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
    })

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean, const float *rstd,
                        int64_t N, int C)
{
    /* parameter gradients first: dinp may alias dout */
    int nchunks = (C + 63) / 64;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int k = 0; k < nchunks; k++) {
        int c0 = k * 64, c1 = c0 + 64 < C ? c0 + 64 : C;
        SIMD_CALL(layernorm_backward_params)(dweight, dbias, dout, inp, mean, rstd, N, C, c0, c1);
    }
    int64_t ntask = (N + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG(N * C))
    for (int64_t k = 0; k < ntask; k++)
        SIMD_CALL(layernorm_backward_rows)(dinp, dout, inp, weight, mean, rstd, k * ROWS,
                                           (k + 1) * ROWS < N ? (k + 1) * ROWS : N, C);
}

/* ------------------------------------------------------------------------------------------ */
/* activations                                                                                 */

#define GELU_K 0.70710678118654752f /* 1/sqrt(2) */
#define GELU_P 0.39894228040143268f /* 1/sqrt(2 pi) */
#define TANH_K 0.79788456080286536f /* sqrt(2/pi) */
#define TANH_C 0.044715f

static inline float gelu_f(float x)
{
    return x * (0.5f * (1.0f + ferf(x * GELU_K)));
}

static inline float gelu_d(float x)
{
    return 0.5f * (1.0f + ferf(x * GELU_K)) + x * GELU_P * fexp(-0.5f * x * x);
}

static inline float gelu_tanh_f(float x)
{
    return 0.5f * x * (1.0f + ftanh(TANH_K * (x + TANH_C * x * x * x)));
}

static inline float gelu_tanh_d(float x)
{
    float th = ftanh(TANH_K * (x + TANH_C * x * x * x));
    return 0.5f * (1.0f + th) +
           0.5f * x * (1.0f - th * th) * TANH_K * (1.0f + 3.0f * TANH_C * x * x);
}

static inline float relu_f(float x)
{
    return x > 0.0f ? x : 0.0f;
}

static inline float relu_d(float x)
{
    return x > 0.0f ? 1.0f : 0.0f;
}

static inline float quick_gelu_f(float x)
{
    return x * (1.0f / (1.0f + fexp(-1.702f * x)));
}

static inline float quick_gelu_d(float x)
{
    float sg = 1.0f / (1.0f + fexp(-1.702f * x));
    return sg + x * 1.702f * sg * (1.0f - sg);
}

/* one branch-free loop per (activation, mode) so that each vectorises */
#define ACT_CASES(A, F, D)                                                                         \
    case (A) * 2 + 0:                                                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            out[i] = F(inp[i]);                                                                    \
        break;                                                                                     \
    case (A) * 2 + 1:                                                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            deriv[i] = dout[i] * D(inp[i]);                                                        \
        break;

/* mode 0: out = act(x); 1: deriv = dout * act'(x) */
SIMD_FN(
    act_chunk,
    (float *out, float *deriv, const float *inp, const float *dout, int64_t n, int act, int mode),
    switch (act * 2 + mode) {
        ACT_CASES(ACT_GELU, gelu_f, gelu_d)
        ACT_CASES(ACT_GELU_TANH, gelu_tanh_f, gelu_tanh_d)
        ACT_CASES(ACT_RELU, relu_f, relu_d)
        ACT_CASES(ACT_QUICK_GELU, quick_gelu_f, quick_gelu_d)
    default:
        break;
    })

static void act_run(float *out, float *deriv, const float *inp, const float *dout, int64_t N,
                    isp_act act, int mode)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (NCHUNKS(N) > 1)
    for (int64_t k = 0; k < NCHUNKS(N); k++) {
        int64_t o = k * CHUNK;
        SIMD_CALL(act_chunk)(out != NULL ? out + o : NULL, deriv != NULL ? deriv + o : NULL,
                             inp + o, dout != NULL ? dout + o : NULL, CHUNK_LEN(N, k), (int)act,
                             mode);
    }
}

void act_forward(float *out, const float *inp, int64_t N, isp_act act)
{
    act_run(out, NULL, inp, NULL, N, act, 0);
}

void act_backward(float *dinp, const float *inp, const float *dout, int64_t N, isp_act act)
{
    act_run(NULL, dinp, inp, dout, N, act, 1);
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

/*
 * C (M,N) = alpha op(A) op(B) + beta C with the rows of C split over our OpenMP threads, each
 * block one single-threaded sgemm. One thread pool (ours) does all the work: OpenBLAS's own
 * pthreads would otherwise spin against our OpenMP threads between calls. Every element of C
 * is computed by one sgemm over the full K; OpenBLAS may still pick other kernel paths for other
 * block heights, so different thread counts can differ in the last bits (same count: identical).
 */
/* one single-threaded product: OpenBLAS sgemm (isa < 0), or bf16 operands on path isa */
static void gemm_on(int isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (isa < 0)
        blas_sgemm_rm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        gemm_bf16((isp_isa)isa, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* the path of this thread's products, read on the calling thread (autocast is thread-local) */
#define PRODUCT_ISA() (isp_autocast_get() == ISP_PREC_BF16 ? (int)isp_isa_get() : -1)

void gemm_par(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    const int nt = NT, isa = PRODUCT_ISA();
    if (nt <= 1 || M < 32 || (int64_t)M * N * K < ((int64_t)1 << 18)) {
        if (nt > 1)
            blas_set_num_threads(1);
        gemm_on(isa, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        if (nt > 1)
            blas_set_num_threads(nt);
        return;
    }
    if (isa >= 0 && N > M && N >= 64) {
        /* bf16: each block packs the other operand whole, so split the wider side. Every element
         * is still one kernel's sum over the full K in the same order: the bits do not depend
         * on the split (the fp32 path keeps row blocks: OpenBLAS's kernels depend on shapes) */
        int nb = nt < N / 32 ? nt : N / 32; /* blocks of whole 32-column tiles */
#pragma omp parallel for num_threads(nb) schedule(static)
        for (int t = 0; t < nb; t++) {
            int n0 = (int)(((int64_t)N * t / nb) & ~(int64_t)31);
            int n1 = t == nb - 1 ? N : (int)(((int64_t)N * (t + 1) / nb) & ~(int64_t)31);
            const float *Bb = tb ? B + (int64_t)n0 * ldb : B + n0;
            gemm_on(isa, ta, tb, M, n1 - n0, K, alpha, A, lda, Bb, ldb, beta, C + n0, ldc);
        }
        return;
    }
    int nb = nt < M / 16 ? nt : M / 16; /* blocks of at least 16 rows */
    blas_set_num_threads(1);
#pragma omp parallel for num_threads(nb) schedule(static)
    for (int t = 0; t < nb; t++) {
        int m0 = (int)(((int64_t)M * t / nb) & ~(int64_t)15);
        int m1 = t == nb - 1 ? M : (int)(((int64_t)M * (t + 1) / nb) & ~(int64_t)15);
        const float *Ab = ta ? A + m0 : A + (int64_t)m0 * lda;
        gemm_on(isa, ta, tb, m1 - m0, N, K, alpha, Ab, lda, B, ldb, beta, C + (int64_t)m0 * ldc,
                ldc);
    }
    blas_set_num_threads(nt);
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int C, int OC, int ldi)
{
    if (bias != NULL) {
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)N * OC))
        for (int n = 0; n < N; n++)
            memcpy(out + (int64_t)n * OC, bias, sizeof(float) * (size_t)OC);
    }
    gemm_par(0, 1, N, OC, C, 1.0f, inp, ldi, weight, C, bias != NULL ? 1.0f : 0.0f, out, OC);
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

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int ldi, int accumulate)
{
    if (dinp != NULL)
        gemm_par(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, accumulate ? 1.0f : 0.0f, dinp, C);
    gemm_par(1, 0, OC, C, N, 1.0f, dout, OC, inp, ldi, 1.0f, dweight, C);
    if (dbias != NULL)
        colsum_acc(dbias, dout, N, OC);
}

/* ------------------------------------------------------------------------------------------ */
/* attention                                                                                   */

/*
 * Attention runs one (b,h) pair per task, spread over our threads; inside a task the three
 * products per pass are single-threaded sgemm calls (OpenBLAS is switched to one thread for the
 * duration, so the pools do not fight), the softmax and dropout are our vectorised loops.
 * Per-thread scratch: two (T,T) blocks and one row.
 */
#define ATT_PER(T) (2 * (int64_t)(T) * (T) + (int64_t)(T) + 64)


int64_t attention_scratch_size(int T, int C, int NH, int nthreads)
{
    (void)C;
    (void)NH;
    return (int64_t)nthreads * ATT_PER(T);
}

/*
 * rows of scores s (T,T) -> probabilities in place; vis (T) 1 = key visible. With pd != NULL the
 * same pass also writes the dropped-out probabilities (dropout_chunk's arithmetic and indices:
 * element (i,j) of the tile is RNG index blk + i*T + j), so the tile is not swept again.
 */
SIMD_FN(
    softmax_rows, (float *s, const float *vis, int T, int causal, float *pd, float p_drop,
                   uint64_t key, int64_t blk),
    const float dscale = pd != NULL ? 1.0f / (1.0f - p_drop) : 0.0f;
    for (int i = 0; i < T; i++) {
        float *p = s + (int64_t)i * T;
        const int jn = causal ? i + 1 : T; /* keys beyond jn are masked */
        float mx = -INFINITY;
        for (int j = 0; j < jn; j++) {
            float sj = vis[j] != 0.0f ? p[j] : -INFINITY;
            mx = sj > mx ? sj : mx;
        }
        float *q = pd != NULL ? pd + (int64_t)i * T : NULL;
        const int64_t r0 = blk + (int64_t)i * T;
        if (mx == -INFINITY) { /* every key masked: uniform, as adding finfo.min does */
            for (int j = 0; j < T; j++)
                p[j] = 1.0f / (float)T;
        } else {
            for (int j = 0; j < jn; j++)
                p[j] = vis[j] != 0.0f ? fexp(p[j] - mx) : 0.0f;
            float sum = sum_f(p, jn);
            for (int j = 0; j < jn; j++)
                p[j] = p[j] / sum;
            for (int j = jn; j < T; j++)
                p[j] = 0.0f;
        }
        if (q != NULL)
            for (int j = 0; j < T; j++)
                q[j] = rng_u(key, (uint64_t)(r0 + j)) >= p_drop ? p[j] * dscale : 0.0f;
    })

/* ds (T,T) = p * (dp - rowsum(p * dp)) * scale, in place over dp */
SIMD_FN(
    softmax_rows_backward, (float *dp, const float *p, int T, float scale),
    for (int i = 0; i < T; i++) {
        const float *pi = p + (int64_t)i * T;
        float *di = dp + (int64_t)i * T;
        float dot = dot_f(pi, di, T);
        for (int j = 0; j < T; j++)
            di[j] = pi[j] * (di[j] - dot) * scale;
    })

static void attention_head_forward(float *out, float *att, const float *qkv, const uint8_t *am,
                                   int b, int h, int T, int C, int NH, int causal, float p_drop,
                                   uint64_t key, float *scratch, int isa)
{
    const int HS = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    float *pd = scratch, *vis = scratch + 2 * (int64_t)T * T;
    const float *q = qkv + (int64_t)b * T * C3 + h * HS, *k = q + C, *v = q + 2 * C;
    int64_t blk = ((int64_t)b * NH + h) * T * T;
    float *s = att + blk;
    for (int j = 0; j < T; j++)
        vis[j] = (am == NULL || am[j]) ? 1.0f : 0.0f;
    gemm_on(isa, 0, 1, T, T, HS, scale, q, C3, k, C3, 0.0f, s, T);
    SIMD_CALL(softmax_rows)(s, vis, T, causal, p_drop > 0.0f ? pd : NULL, p_drop, key, blk);
    const float *pp = p_drop > 0.0f ? pd : s;
    gemm_on(isa, 0, 0, T, HS, T, 1.0f, pp, T, v, C3, 0.0f, out + (int64_t)b * T * C + h * HS, C);
}

static void attention_head_backward(float *dqkv, const float *dout, const float *qkv,
                                    const float *att, int b, int h, int T, int C, int NH,
                                    float p_drop, uint64_t key, float *scratch, int isa)
{
    const int HS = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    float *pd = scratch, *dp = scratch + (int64_t)T * T;
    const int64_t off = (int64_t)b * T * C3 + h * HS;
    const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
    float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
    const float *dob = dout + (int64_t)b * T * C + h * HS;
    int64_t blk = ((int64_t)b * NH + h) * T * T;
    const float *p = att + blk, *pp = p;
    if (p_drop > 0.0f) {
        SIMD_CALL(dropout_chunk)(pd, p, blk, (int64_t)T * T, p_drop, key);
        pp = pd;
    }
    /* dV = P_dropped^T dO;  dP_dropped = dO V^T, then back through the dropout */
    gemm_on(isa, 1, 0, T, HS, T, 1.0f, pp, T, dob, C, 0.0f, dv, C3);
    gemm_on(isa, 0, 1, T, T, HS, 1.0f, dob, C, v, C3, 0.0f, dp, T);
    if (p_drop > 0.0f)
        SIMD_CALL(dropout_chunk)(dp, dp, blk, (int64_t)T * T, p_drop, key);
    SIMD_CALL(softmax_rows_backward)(dp, p, T, scale);
    /* dQ = dS K;  dK = dS^T Q */
    gemm_on(isa, 0, 0, T, HS, T, 1.0f, dp, T, k, C3, 0.0f, dq, C3);
    gemm_on(isa, 1, 0, T, HS, T, 1.0f, dp, T, q, C3, 0.0f, dk, C3);
}

void attention_forward(float *out, float *att, const float *qkv, const uint8_t *amask, int B, int T,
                       int C, int NH, int causal, float p_drop, uint64_t key, float *scratch)
{
    const int64_t per = ATT_PER(T);
    const int nt = NT, isa = PRODUCT_ISA();
    if (nt > 1)
        blas_set_num_threads(1);
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            attention_head_forward(out, att, qkv, amask != NULL ? amask + (int64_t)b * T : NULL, b,
                                   h, T, C, NH, causal, p_drop, key, scratch + per * THREAD_ID(),
                                   isa);
    if (nt > 1)
        blas_set_num_threads(nt);
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        const uint8_t *amask, int B, int T, int C, int NH, int causal, float p_drop,
                        uint64_t key, float *scratch)
{
    const int64_t per = ATT_PER(T);
    const int nt = NT, isa = PRODUCT_ISA();
    (void)amask;
    (void)causal; /* masked keys have probability 0 in att, so they get no gradient */
    if (nt > 1)
        blas_set_num_threads(1);
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            attention_head_backward(dqkv, dout, qkv, att, b, h, T, C, NH, p_drop, key,
                                    scratch + per * THREAD_ID(), isa);
    if (nt > 1)
        blas_set_num_threads(nt);
}

/* ------------------------------------------------------------------------------------------ */
/* embeddings                                                                                  */

void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                        const float *wte, const float *wpe, const float *wtt, int B, int T, int C)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)B * T * C))
    for (int64_t bt = 0; bt < (int64_t)B * T; bt++) {
        int t = pos != NULL ? pos[bt] : (int)(bt % T);
        const float *w = wte + (int64_t)ids[bt] * C, *p = wpe + (int64_t)t * C;
        float *o = out + bt * C;
        if (wtt == NULL) {
            for (int c = 0; c < C; c++)
                o[c] = w[c] + p[c];
            continue;
        }
        const float *y = wtt + (int64_t)(types != NULL ? types[bt] : 0) * C;
        for (int c = 0; c < C; c++)
            o[c] = (w[c] + y[c]) + p[c];
    }
}

void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                         const int32_t *ids, const int32_t *types, const int32_t *pos, int B,
                         int T, int C)
{
    int nchunks = (C + 31) / 32;
#pragma omp parallel for num_threads(NT) schedule(static) if (BIG((int64_t)B * T * C))
    for (int k = 0; k < nchunks; k++) {
        int c0 = k * 32, c1 = c0 + 32 < C ? c0 + 32 : C;
        for (int64_t bt = 0; bt < (int64_t)B * T; bt++) {
            int t = pos != NULL ? pos[bt] : (int)(bt % T);
            const float *d = dout + bt * C;
            float *w = dwte + (int64_t)ids[bt] * C, *p = dwpe + (int64_t)t * C;
            for (int c = c0; c < c1; c++) {
                w[c] += d[c];
                p[c] += d[c];
            }
            if (dwtt == NULL)
                continue;
            float *y = dwtt + (int64_t)(types != NULL ? types[bt] : 0) * C;
            for (int c = c0; c < c1; c++)
                y[c] += d[c];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* losses                                                                                      */

float crossentropy_forward(float *probs, const float *logits, const int32_t *labels, int B, int NL,
                           float smoothing)
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

void crossentropy_backward(float *dlogits, const float *probs, const int32_t *labels, int B, int NL,
                           float smoothing)
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
