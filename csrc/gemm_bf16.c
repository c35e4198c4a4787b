/*
 * gemm_bf16.c -- bf16 GEMM with fp32 accumulation on four paths, CPUID dispatch, the autocast
 * switch. See gemm_bf16.h for the semantics.
 *
 * One blocked driver (GotoBLAS loop order: N blocks of NC, K blocks of KC, M blocks of MC) packs
 * bf16-rounded operand blocks into the layout of the chosen path and runs its micro-kernel over
 * MR x NR tiles of C; a tile's fp32 sums are added into C once per K block. Each path's kernel
 * is compiled for its ISA with a target attribute (the build stays portable; no -march) and is
 * only called after CPUID said the CPU has it.
 *
 * Packed layouts (u16 = bf16 bits; panels are zero-padded to full tiles and to the K unit):
 *   fp32     A block (mc,kc) and B block (kc,nc) as row-major fp32 of the rounded values (sgemm)
 *   avx2     A panel [kc][6] fp32, B panel [kc][16] fp32 (rounded values, widened when packed)
 *   avx512   A panel [kc/2][8][2] u16, B panel [kc/2][32][2] u16 (vdpbf16ps takes k-pairs)
 *   amx      A panel [32][kc] u16 (two 16x32 tiles per K step of 32), B panel [kc/2][32][2] u16
 *            (two 16-pair x 16-column tiles per K step; the "VNNI" layout tdpbf16ps reads)
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "gemm_bf16.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define ISP_X86 1
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* rounding                                                                                    */

static inline uint32_t rne_bits(uint32_t u);

uint16_t bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(rne_bits(u) >> 16);
}

static inline float bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

float bf16_round(float x)
{
    return bf16_to_f32(bf16_bits(x));
}

/* ------------------------------------------------------------------------------------------ */
/* CPUID, the selected path, autocast                                                          */

static const char *const isa_names[ISP_NUM_ISA] = {"fp32", "avx2bf16", "avx512bf16", "amx"};

const char *isp_isa_name(isp_isa isa)
{
    return (int)isa >= 0 && (int)isa < ISP_NUM_ISA ? isa_names[isa] : "?";
}

#ifdef ISP_X86
static uint64_t xcr0(void)
{
    uint32_t a, d;
    __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return ((uint64_t)d << 32) | a;
}

static int amx_permitted = -1;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_request(void)
{
#if defined(__linux__)
    /* Linux keeps the 8 KB tile state off until a process asks (ARCH_REQ_XCOMP_PERM, feature 18) */
    amx_permitted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    amx_permitted = 0;
#endif
}
#endif

int isp_isa_available(isp_isa isa)
{
    if (isa == ISP_ISA_FP32)
        return 1;
#ifdef ISP_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return 0;
    const int fma = (c >> 12) & 1;
    uint64_t x = xcr0();
    unsigned b7 = 0, d7 = 0, a71 = 0, t;
    if (!__get_cpuid_count(7, 0, &t, &b7, &c, &d7))
        return 0;
    __get_cpuid_count(7, 1, &a71, &t, &c, &d);
    switch (isa) {
    case ISP_ISA_AVX2BF16:
        return fma && ((b7 >> 5) & 1) && (x & 0x6) == 0x6;
    case ISP_ISA_AVX512BF16:
        return ((b7 >> 16) & 1) && ((a71 >> 5) & 1) && (x & 0xe6) == 0xe6;
    case ISP_ISA_AMX:
        if (!((d7 >> 22) & 1) || !((d7 >> 24) & 1) || (x & 0x60000) != 0x60000)
            return 0;
        pthread_once(&amx_once, amx_request);
        return amx_permitted == 1;
    default:
        return 0;
    }
#else
    return 0;
#endif
}

isp_isa isp_isa_best(void)
{
    for (int i = ISP_NUM_ISA - 1; i > 0; i--)
        if (isp_isa_available((isp_isa)i))
            return (isp_isa)i;
    return ISP_ISA_FP32;
}

static int isa_selected = -1; /* -1: not chosen yet (the best one on first use) */

isp_status isp_isa_set(isp_isa isa)
{
    if ((int)isa < 0 || (int)isa >= ISP_NUM_ISA)
        return isp_fail(ISP_ERR_VALUE, "unknown ISA path %d", (int)isa);
    if (!isp_isa_available(isa))
        return isp_fail(ISP_ERR_VALUE, "ISA path '%s' is not available on this CPU",
                        isp_isa_name(isa));
    __atomic_store_n(&isa_selected, (int)isa, __ATOMIC_RELAXED);
    return ISP_OK;
}

isp_isa isp_isa_get(void)
{
    int s = __atomic_load_n(&isa_selected, __ATOMIC_RELAXED);
    if (s < 0) {
        s = (int)isp_isa_best();
        __atomic_store_n(&isa_selected, s, __ATOMIC_RELAXED);
    }
    return (isp_isa)s;
}

static _Thread_local int autocast_prec = ISP_PREC_FP32;

void isp_autocast_set(isp_precision p)
{
    autocast_prec = p;
}

isp_precision isp_autocast_get(void)
{
    return (isp_precision)autocast_prec;
}

/* ------------------------------------------------------------------------------------------ */
/* blocking and packing                                                                        */

typedef struct {
    int mr, nr, kc, mc, nc, kunit, esize; /* esize: bytes per packed element */
} blocking;

/*
 * The amx path takes K in as few blocks as it can (at most 1024 each, all blocks the same size up
 * to the K unit), so each element of C is updated once per K block; the A and B blocks are then
 * sized to stay in L2 (B <= 1 MB, A <= 512 KB). The blocking depends on K only, never on M or N,
 * so a product split into row blocks sums every element in the same order.
 */
static blocking blocking_of(isp_isa isa, int K)
{
    switch (isa) {
    case ISP_ISA_AVX2BF16:
        return (blocking){6, 16, 256, 96, 512, 1, 4};
    case ISP_ISA_AVX512BF16:
        return (blocking){8, 32, 512, 48, 1024, 2, 2};
    case ISP_ISA_AMX: {
        const int nblk = (K + 1023) / 1024, kc = ((K + nblk - 1) / nblk + 31) / 32 * 32;
        int nc = (int)((1 << 20) / (2 * kc)) / 32 * 32, mc = (int)((1 << 19) / (2 * kc)) / 32 * 32;
        nc = nc < 32 ? 32 : nc > 512 ? 512 : nc;
        mc = mc < 32 ? 32 : mc > 128 ? 128 : mc;
        return (blocking){32, 32, kc, mc, nc, 32, 2};
    }
    default:
        return (blocking){1, 1, 512, 256, 1024, 1, 4};
    }
}

#define OPA(i, k) (ta ? A[(int64_t)(k) * lda + (i)] : A[(int64_t)(i) * lda + (k)])
#define OPB(k, j) (tb ? B[(int64_t)(j) * ldb + (k)] : B[(int64_t)(k) * ldb + (j)])

/* bf16 rounding on the bits, branch-free (vectorises): RNE, NaN kept quiet */
static inline uint32_t rne_bits(uint32_t u)
{
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) & 0xffff0000u : r;
}

/* Where element (x, k) of a panel of width w goes, per layout (see the top of the file). */
typedef enum {
    FMT_KW_F32,   /* [k][w] fp32 */
    FMT_XK_F32,   /* [x][kcp] fp32 */
    FMT_XK_BF16,  /* [x][kcp + XK_PAD] bf16 (the amx A panel; rows padded, see XK_PAD) */
    FMT_PAIR_BF16 /* [k/2][w][2] bf16 */
} pack_fmt;

/*
 * The amx A panel's rows are kcp + XK_PAD elements apart: with kcp a multiple of 2048 the rows
 * would sit a multiple of 4 KB apart, and packing a transposed A (one element per row per step)
 * would hit one L1 set with every write.
 */
#define XK_PAD 32

static inline int64_t panel_row(pack_fmt fmt, int kcp)
{
    return fmt == FMT_XK_BF16 ? (int64_t)kcp + XK_PAD : kcp;
}

/* Zero what no element of an (nx, kc) block fills: K beyond kc in every panel of width w, the
 * missing columns of the last one. */
static void zero_padding(void *dst, pack_fmt fmt, int nx, int kc, int kcp, int w)
{
    const size_t esz = fmt == FMT_KW_F32 || fmt == FMT_XK_F32 ? 4 : 2;
    const int64_t pel = (int64_t)w * panel_row(fmt, kcp);
    const int npanels = (nx + w - 1) / w;
    for (int p = kcp > kc ? 0 : nx % w ? npanels - 1 : npanels; p < npanels; p++)
        memset((char *)dst + (size_t)(p * pel) * esz, 0, (size_t)pel * esz);
}

/*
 * Pack the rounded (nx, kc) operand block src[x*sx + k*sk] into panels of width w (the last one
 * zero-padded), each panel w * kcp elements, K zero-padded to kcp. The loop runs along whichever
 * axis is contiguous in the source.
 */
static inline __attribute__((always_inline)) void pack(void *dst, pack_fmt fmt, const float *src,
                                                        int64_t sx, int64_t sk, int nx, int kc,
                                                        int kcp, int w)
{
    const int64_t rs = panel_row(fmt, kcp), pel = (int64_t)w * rs;
    const int npanels = (nx + w - 1) / w;
    zero_padding(dst, fmt, nx, kc, kcp, w);
#define PUT(p, x, k, v)                                                                            \
    do {                                                                                           \
        uint32_t u_;                                                                               \
        float v_ = (v);                                                                            \
        memcpy(&u_, &v_, 4);                                                                       \
        u_ = rne_bits(u_);                                                                         \
        float *df_ = (float *)dst + (int64_t)(p) * pel;                                            \
        uint16_t *dh_ = (uint16_t *)dst + (int64_t)(p) * pel;                                      \
        switch (fmt) {                                                                             \
        case FMT_KW_F32:                                                                           \
            memcpy(df_ + (int64_t)(k) * w + (x), &u_, 4);                                          \
            break;                                                                                 \
        case FMT_XK_F32:                                                                           \
            memcpy(df_ + (int64_t)(x) * kcp + (k), &u_, 4);                                        \
            break;                                                                                 \
        case FMT_XK_BF16:                                                                          \
            dh_[(int64_t)(x) * rs + (k)] = (uint16_t)(u_ >> 16);                                   \
            break;                                                                                 \
        default:                                                                                   \
            dh_[((int64_t)((k) >> 1) * w + (x)) * 2 + ((k) & 1)] = (uint16_t)(u_ >> 16);           \
        }                                                                                          \
    } while (0)
    if (sk == 1) { /* a source row per x: along k */
        for (int x = 0; x < nx; x++) {
            const float *s = src + (int64_t)x * sx;
            for (int k = 0; k < kc; k++)
                PUT(x / w, x % w, k, s[k]);
        }
    } else { /* a source row per k: along x over every panel, so the source streams */
        for (int k = 0; k < kc; k++) {
            const float *s = src + (int64_t)k * sk;
            if (k + 16 < kc) /* each source row lies in its own page: no hardware prefetch */
                for (int x = 0; x < nx; x += 16)
                    __builtin_prefetch(s + 16 * sk + (int64_t)x * sx);
            for (int p = 0; p < npanels; p++) {
                const int x0 = p * w, xn = nx - x0 < w ? nx - x0 : w;
                for (int x = 0; x < xn; x++)
                    PUT(p, x, k, s[(int64_t)(x0 + x) * sx]);
            }
        }
    }
#undef PUT
}

/* pack() with the layout as a constant (pack is inlined once per layout) */
static void pack_block(void *dst, pack_fmt fmt, const float *src, int64_t sx, int64_t sk, int nx,
                       int kc, int kcp, int w)
{
    switch (fmt) {
    case FMT_KW_F32:
        pack(dst, FMT_KW_F32, src, sx, sk, nx, kc, kcp, w);
        break;
    case FMT_XK_F32:
        pack(dst, FMT_XK_F32, src, sx, sk, nx, kc, kcp, w);
        break;
    case FMT_XK_BF16:
        pack(dst, FMT_XK_BF16, src, sx, sk, nx, kc, kcp, w);
        break;
    default:
        pack(dst, FMT_PAIR_BF16, src, sx, sk, nx, kc, kcp, w);
    }
}

#ifdef ISP_X86
/*
 * 16-lane loads and stores under a lane mask, plain when the mask is full: on the AMD Zen 5 this
 * was written on, a zero-masked 512-bit load with a full mask made the operand packers 2-3x
 * slower than a plain load (docs/ARCHITECTURE.md, "Speed of bf16").
 */
__attribute__((target("avx512f"))) static inline __m512 load16(__mmask16 m, const float *p)
{
    return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

__attribute__((target("avx512f"))) static inline void store16(float *p, __mmask16 m, __m512 v)
{
    if (m == 0xffff)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}

/* rne_bits on 16 lanes: each lane's bf16 in its upper half, the lower half zero */
__attribute__((target("avx512f"))) static inline __m512i rne16(__m512 v)
{
    const __m512i u = _mm512_castps_si512(v);
    __m512i r = _mm512_add_epi32(
        u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                            _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
}

/* rne_bits on 16 lanes, narrowed to the 16 bf16 halves */
__attribute__((target("avx512f,avx512bw"))) static inline __m256i bf16x16(__m512 v)
{
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rne16(v), 16));
}

/* r[j] = column j of the 16 x 16 block r[0..15] (rows) */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + c], 128-bit lane L = rows 4g..4g+3 of column 4L + c */
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xee);
        const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/*
 * The amx A panel (FMT_XK_BF16) from a source whose rows run along K (src[k * sk + x]): 16 x 16
 * blocks transposed in registers, 16 k-values stored per panel row. Same values as pack().
 */
__attribute__((target("avx512f,avx512bw"))) static void
pack_xk_transposed(uint16_t *dst, const float *src, int64_t sk, int nx, int kc, int kcp, int w)
{
    const int64_t rs = panel_row(FMT_XK_BF16, kcp), pel = (int64_t)w * rs;
    for (int x0 = 0; x0 < nx; x0 += 16) {
        const int xn = nx - x0 < 16 ? nx - x0 : 16;
        const __mmask16 m = (__mmask16)((1u << xn) - 1);
        uint16_t *d = dst + (int64_t)(x0 / w) * pel + (int64_t)(x0 % w) * rs;
        for (int k0 = 0; k0 < kc; k0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = k0 + i < kc ? load16(m, src + (int64_t)(k0 + i) * sk + x0)
                                   : _mm512_setzero_ps();
            transpose16(r);
            for (int j = 0; j < xn; j++)
                _mm256_storeu_si256((__m256i *)(d + (int64_t)j * rs + k0), bf16x16(r[j]));
        }
    }
}

/* 32 consecutive floats as 32 bf16 values: 16 lanes of (bf16 x[2i+1] << 16 | bf16 x[2i]) */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i
bf16x32(const float *x, __mmask16 m0, __mmask16 m1)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(bf16x16(load16(m0, x))),
                              bf16x16(load16(m1, x + 16)), 1);
}

/*
 * Store the 16 pair units v (columns x0..x0+15 of pair `pair`; units past nx are zero) into the
 * k-pair panels of width w (a multiple of 8, so 8 units never straddle two panels): one 16-unit
 * store when w is a multiple of 16, else one 8-unit store per half that holds a column.
 */
__attribute__((target("avx512f"))) static inline void
store_pair_units(uint16_t *dst, int64_t pel, int w, int x0, int nx, int64_t pair, __m512i v)
{
    if (w % 16 == 0) {
        _mm512_storeu_si512((void *)(dst + (int64_t)(x0 / w) * pel + (pair * w + x0 % w) * 2), v);
        return;
    }
    for (int h = 0; h < 2 && x0 + 8 * h < nx; h++) {
        const int xs = x0 + 8 * h;
        _mm256_storeu_si256((__m256i *)(dst + (int64_t)(xs / w) * pel + (pair * w + xs % w) * 2),
                            _mm512_extracti64x4_epi64(v, h));
    }
}

/*
 * The k-pair layout (FMT_PAIR_BF16, w a multiple of 8) with AVX-512: a pair of bf16 values is one
 * 32-bit unit, so a source with rows along K (sk == 1) is a 16 x 16 transpose of pairs, and a
 * source with rows along x (sx == 1) interleaves two rows. Same values as pack(); the columns
 * past nx in the last panel, zero there already, are written with zeros.
 */
__attribute__((target("avx512f,avx512bw"))) static void
pack_pairs(uint16_t *dst, const float *src, int64_t sx, int64_t sk, int nx, int kc, int kcp, int w)
{
    const int64_t pel = (int64_t)w * kcp;
    if (sk == 1) {
        for (int x0 = 0; x0 < nx; x0 += 16) {
            const int xn = nx - x0 < 16 ? nx - x0 : 16;
            for (int k0 = 0; k0 < kc; k0 += 32) {
                const int kn = kc - k0 < 32 ? kc - k0 : 32;
                const __mmask16 m0 = (__mmask16)(kn >= 16 ? 0xffff : (1u << kn) - 1);
                const __mmask16 m1 = (__mmask16)(kn >= 32  ? 0xffff
                                                 : kn > 16 ? (1u << (kn - 16)) - 1
                                                           : 0);
                __m512 r[16];
                /* the next 16 rows' block at this k0 is read kc/32 blocks from now: fetch it */
                for (int i = 16; i < 32 && x0 + i < nx; i++) {
                    __builtin_prefetch(src + (int64_t)(x0 + i) * sx + k0);
                    __builtin_prefetch(src + (int64_t)(x0 + i) * sx + k0 + kn - 1);
                }
                for (int i = 0; i < 16; i++)
                    r[i] = i < xn ? _mm512_castsi512_ps(
                                        bf16x32(src + (int64_t)(x0 + i) * sx + k0, m0, m1))
                                  : _mm512_setzero_ps();
                transpose16(r); /* r[j]: pair k0/2 + j of the 16 columns */
                for (int j = 0; j < 16 && 2 * j < kn; j++)
                    store_pair_units(dst, pel, w, x0, nx, k0 / 2 + j, _mm512_castps_si512(r[j]));
            }
        }
    } else {
        /* 16 source rows (8 pairs) at a time, each row read along x: column strips of a row-major
         * source would put every row of a strip in the same few L1 sets */
        for (int k0 = 0; k0 < kc; k0 += 16) {
            const int kn = kc - k0 < 16 ? kc - k0 : 16;
            for (int x0 = 0; x0 < nx; x0 += 16) {
                const int xn = nx - x0 < 16 ? nx - x0 : 16;
                const __mmask16 m = (__mmask16)((1u << xn) - 1);
                for (int k = k0; k < k0 + kn; k += 2) {
                    const float *r0 = src + (int64_t)k * sk + x0;
                    __builtin_prefetch(r0 + 128);
                    const __m512i e = _mm512_srli_epi32(rne16(load16(m, r0)), 16);
                    __m512i o = _mm512_setzero_si512();
                    if (k + 1 < kc) {
                        __builtin_prefetch(r0 + sk + 128);
                        o = rne16(load16(m, r0 + sk));
                    }
                    store_pair_units(dst, pel, w, x0, nx, k / 2, _mm512_or_si512(e, o));
                }
            }
        }
    }
}

/* pack_block compiled for AVX-512 (the vectoriser then packs 16 values per instruction) */
__attribute__((target("avx512f,avx512bw"))) static void
pack_block_avx512(void *dst, pack_fmt fmt, const float *src, int64_t sx, int64_t sk, int nx, int kc,
                  int kcp, int w)
{
    switch (fmt) {
    case FMT_XK_BF16:
        if (sx == 1 && w % 16 == 0) {
            zero_padding(dst, fmt, nx, kc, kcp, w);
            pack_xk_transposed((uint16_t *)dst, src, sk, nx, kc, kcp, w);
        } else {
            pack(dst, FMT_XK_BF16, src, sx, sk, nx, kc, kcp, w);
        }
        break;
    default:
        if ((sk == 1 || sx == 1) && w % 8 == 0) {
            zero_padding(dst, fmt, nx, kc, kcp, w);
            pack_pairs((uint16_t *)dst, src, sx, sk, nx, kc, kcp, w);
        } else {
            pack(dst, FMT_PAIR_BF16, src, sx, sk, nx, kc, kcp, w);
        }
    }
}
#endif

/*
 * op(A)[i0:i0+mc, k0:k0+kc] (is_b = 0) or op(B)^T[j0:j0+nc, k0:k0+kc] (is_b = 1, i0 = j0, mc = nc)
 * into dst in the layout of isa; kcp = kc rounded up to the path's K unit. The fp32 path packs
 * whole row-major blocks (A (mc,kc), B (kc,nc)) for sgemm, the others panels of width mr / nr.
 */
static void pack_operand(void *dst, isp_isa isa, const blocking *bl, int is_b, int trans,
                         const float *X, int ldx, int i0, int mc, int k0, int kc, int kcp)
{
    /* element (x, k) of the block: op(A)[x][k] = A[x][k] or A[k][x] (trans); op(B)[k][x] likewise */
    const int rows_are_x = is_b ? trans : !trans;
    const float *src = rows_are_x ? X + (int64_t)i0 * ldx + k0 : X + (int64_t)k0 * ldx + i0;
    const int64_t sx = rows_are_x ? ldx : 1, sk = rows_are_x ? 1 : ldx;
    pack_fmt fmt;
    int w = is_b ? bl->nr : bl->mr;
    if (isa == ISP_ISA_FP32) {
        fmt = is_b ? FMT_KW_F32 : FMT_XK_F32;
        w = mc;
        kcp = kc;
    } else if (isa == ISP_ISA_AVX2BF16) {
        fmt = FMT_KW_F32;
    } else if (isa == ISP_ISA_AMX && !is_b) {
        fmt = FMT_XK_BF16;
    } else {
        fmt = FMT_PAIR_BF16;
    }
#ifdef ISP_X86
    if (isa == ISP_ISA_AVX512BF16 || isa == ISP_ISA_AMX) {
        pack_block_avx512(dst, fmt, src, sx, sk, mc, kc, kcp, w);
        return;
    }
#endif
    pack_block(dst, fmt, src, sx, sk, mc, kc, kcp, w);
}

/* ------------------------------------------------------------------------------------------ */
/* micro-kernels: tile (mr x nr, row stride nr) = the fp32 sums over one packed K block        */

#ifdef ISP_X86
__attribute__((target("avx2,fma"))) static void micro_avx2(int kc, const float *a, const float *b,
                                                           float *tile)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++, a += 6, b += 16) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), x;
        x = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    _mm256_storeu_ps(tile + 0, c00);
    _mm256_storeu_ps(tile + 8, c01);
    _mm256_storeu_ps(tile + 16, c10);
    _mm256_storeu_ps(tile + 24, c11);
    _mm256_storeu_ps(tile + 32, c20);
    _mm256_storeu_ps(tile + 40, c21);
    _mm256_storeu_ps(tile + 48, c30);
    _mm256_storeu_ps(tile + 56, c31);
    _mm256_storeu_ps(tile + 64, c40);
    _mm256_storeu_ps(tile + 72, c41);
    _mm256_storeu_ps(tile + 80, c50);
    _mm256_storeu_ps(tile + 88, c51);
}

/* vdpbf16ps: lane j += a[2p] b[2p][j] + a[2p+1] b[2p+1][j] for each k-pair p */
__attribute__((target("avx512f,avx512bf16"))) static void
micro_avx512bf16(int kcp, const uint16_t *a, const uint16_t *b, float *tile)
{
    __m512 c[8][2];
    for (int r = 0; r < 8; r++)
        c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kcp / 2; p++, a += 16, b += 64) {
        __m512i b0 = _mm512_loadu_si512((const void *)b), b1 = _mm512_loadu_si512((const void *)(b + 32));
        for (int r = 0; r < 8; r++) {
            int32_t pair;
            memcpy(&pair, a + 2 * r, 4);
            __m512i x = _mm512_set1_epi32(pair);
            c[r][0] = _mm512_dpbf16_ps(c[r][0], (__m512bh)x, (__m512bh)b0);
            c[r][1] = _mm512_dpbf16_ps(c[r][1], (__m512bh)x, (__m512bh)b1);
        }
    }
    for (int r = 0; r < 8; r++) {
        _mm512_storeu_ps(tile + r * 32, c[r][0]);
        _mm512_storeu_ps(tile + r * 32 + 16, c[r][1]);
    }
}

/*
 * The tile configuration: palette 1, tmm0..7 all 16 rows x 64 bytes. It lives in static memory:
 * GCC 12's _tile_loadconfig tells the compiler it reads only the first 8 bytes of its operand, so
 * a configuration built in a local variable lost its colsb/rows stores to dead-store elimination
 * and ldtilecfg raised #GP (SIGSEGV) on the garbage.
 */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

static const amx_tilecfg amx_cfg __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

__attribute__((target("amx-tile"))) static void amx_begin(void)
{
    _tile_loadconfig(&amx_cfg);
}

__attribute__((target("amx-tile"))) static void amx_end(void)
{
    _tile_release();
}

/*
 * tmm0..3: the 32x32 fp32 block as 2x2 tiles; tmm4/5: rows 0-15 / 16-31 of A (16 x 32 bf16);
 * tmm6/7: columns 0-15 / 16-31 of B (16 k-pairs x 16 columns x 2).
 */
__attribute__((target("amx-tile,amx-bf16"))) static void
micro_amx(int kcp, int64_t rs, const uint16_t *a, const uint16_t *b, float *tile)
{
    const long sa = (long)rs * 2; /* bytes between A panel rows */
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int kb = 0; kb < kcp / 32; kb++) {
        const uint16_t *ak = a + kb * 32, *bk = b + (int64_t)kb * 16 * 64;
        _tile_loadd(4, ak, sa);
        _tile_loadd(5, ak + (int64_t)16 * rs, sa);
        _tile_loadd(6, bk, 128);
        _tile_loadd(7, bk + 32, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, tile, 128);
    _tile_stored(1, tile + 16, 128);
    _tile_stored(2, tile + 16 * 32, 128);
    _tile_stored(3, tile + 16 * 32 + 16, 128);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* driver                                                                                      */

/* C (mr, nr) = alpha tile + beta C (beta == 0: overwrite) */
static void tile_update(float *C, int ldc, const float *tile, int ts, int mr, int nr, float alpha,
                        float beta)
{
    for (int i = 0; i < mr; i++) {
        float *c = C + (int64_t)i * ldc;
        const float *t = tile + (int64_t)i * ts;
        if (beta == 0.0f)
            for (int j = 0; j < nr; j++)
                c[j] = alpha * t[j];
        else
            for (int j = 0; j < nr; j++)
                c[j] = alpha * t[j] + beta * c[j];
    }
}

#ifdef ISP_X86
/* tile_update on AVX-512 (the avx512bf16 and amx paths): rows of up to 32 columns as two masked
 * 16-lane halves, so a partial tile is updated by the same arithmetic as a full one */
__attribute__((target("avx512f"))) static void tile_update_avx512(float *C, int ldc,
                                                                  const float *tile, int ts, int mr,
                                                                  int nr, float alpha, float beta)
{
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xffff : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < mr; i++) {
        float *c = C + (int64_t)i * ldc;
        const float *t = tile + (int64_t)i * ts;
        __m512 t0 = _mm512_mul_ps(va, load16(m0, t));
        __m512 t1 = _mm512_mul_ps(va, load16(m1, t + 16));
        if (beta != 0.0f) {
            t0 = _mm512_add_ps(t0, _mm512_mul_ps(vb, load16(m0, c)));
            t1 = _mm512_add_ps(t1, _mm512_mul_ps(vb, load16(m1, c + 16)));
        }
        store16(c, m0, t0);
        store16(c + 16, m1, t1);
    }
}

#endif

/* The unpacked loop of the same semantics, for when no scratch can be had. */
static void gemm_bf16_loop(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                           int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += bf16_round(OPA(i, k)) * bf16_round(OPB(k, j));
            float *c = C + (int64_t)i * ldc + j;
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
}

/* per-thread packing scratch, grown on demand and kept (one per thread that ran a bf16 product) */
static _Thread_local void *scratch_buf;
static _Thread_local size_t scratch_cap;

static void *scratch_get(size_t bytes)
{
    if (bytes <= scratch_cap)
        return scratch_buf;
    bytes = (bytes + 4095) & ~(size_t)4095;
    void *p = aligned_alloc(64, bytes);
    if (p == NULL)
        return NULL;
    free(scratch_buf);
    scratch_buf = p;
    scratch_cap = bytes;
    return p;
}

void gemm_bf16(isp_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int i = 0; i < M; i++) /* op(A) op(B) is zero: C = beta C */
            for (int j = 0; j < N; j++)
                C[(int64_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(int64_t)i * ldc + j];
        return;
    }
#ifndef ISP_X86
    isa = ISP_ISA_FP32;
#endif
    const blocking bl = blocking_of(isa, K);
    const int kcmax = K < bl.kc ? K : bl.kc, kcpmax = (kcmax + bl.kunit - 1) / bl.kunit * bl.kunit;
    const int mcmax = M < bl.mc ? M : bl.mc, ncmax = N < bl.nc ? N : bl.nc;
    const int64_t mcp = (int64_t)(mcmax + bl.mr - 1) / bl.mr * bl.mr;
    const int64_t ncp = (int64_t)(ncmax + bl.nr - 1) / bl.nr * bl.nr;
    const size_t abytes = ((size_t)(mcp * (kcpmax + XK_PAD)) * (size_t)bl.esize + 63) & ~(size_t)63;
    const size_t bbytes = (size_t)(ncp * kcpmax) * (size_t)bl.esize;
    const size_t tbytes = sizeof(float) * (size_t)bl.mr * (size_t)bl.nr;
    char *buf = scratch_get(abytes + bbytes + tbytes + 64);
    if (buf == NULL) {
        gemm_bf16_loop(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    void *Ap = buf, *Bp = buf + abytes;
    float *tile = (float *)(buf + abytes + ((bbytes + 63) & ~(size_t)63));
#ifdef ISP_X86
    if (isa == ISP_ISA_AMX)
        amx_begin();
#endif
    for (int jc = 0; jc < N; jc += bl.nc) {
        const int nc = N - jc < bl.nc ? N - jc : bl.nc;
        for (int pc = 0; pc < K; pc += bl.kc) {
            const int kc = K - pc < bl.kc ? K - pc : bl.kc;
            const int kcp = (kc + bl.kunit - 1) / bl.kunit * bl.kunit;
            const float bet = pc == 0 ? beta : 1.0f;
            pack_operand(Bp, isa, &bl, 1, tb, B, ldb, jc, nc, pc, kc, kcp);
            for (int ic = 0; ic < M; ic += bl.mc) {
                const int mc = M - ic < bl.mc ? M - ic : bl.mc;
                pack_operand(Ap, isa, &bl, 0, ta, A, lda, ic, mc, pc, kc, kcp);
                float *Cb = C + (int64_t)ic * ldc + jc;
                if (isa == ISP_ISA_FP32) {
                    blas_sgemm_rm(0, 0, mc, nc, kc, alpha, Ap, kc, Bp, nc, bet, Cb, ldc);
                    continue;
                }
#ifdef ISP_X86
                for (int jr = 0; jr < nc; jr += bl.nr) {
                    const int nr = nc - jr < bl.nr ? nc - jr : bl.nr;
                    for (int ir = 0; ir < mc; ir += bl.mr) {
                        const int mr = mc - ir < bl.mr ? mc - ir : bl.mr;
                        const int64_t ars = isa == ISP_ISA_AMX ? (int64_t)kcp + XK_PAD : kcp;
                        const int64_t ao = (int64_t)ir * ars, bo = (int64_t)jr * kcp;
                        float *Ct = Cb + (int64_t)ir * ldc + jr;
                        /* C is far bigger than L2 in the model's products: fetch the tile's
                         * rows while the micro-kernel runs (the last line of an unaligned row) */
                        for (int i = 0; i < mr; i++) {
                            __builtin_prefetch(Ct + (int64_t)i * ldc, 1, 3);
                            __builtin_prefetch(Ct + (int64_t)i * ldc + nr - 1, 1, 3);
                            if (nr > 16)
                                __builtin_prefetch(Ct + (int64_t)i * ldc + 16, 1, 3);
                        }
                        if (isa == ISP_ISA_AVX2BF16)
                            micro_avx2(kcp, (const float *)Ap + ao, (const float *)Bp + bo, tile);
                        else if (isa == ISP_ISA_AVX512BF16)
                            micro_avx512bf16(kcp, (const uint16_t *)Ap + ao,
                                             (const uint16_t *)Bp + bo, tile);
                        else
                            micro_amx(kcp, ars, (const uint16_t *)Ap + ao,
                                      (const uint16_t *)Bp + bo, tile);
                        if (isa == ISP_ISA_AVX2BF16)
                            tile_update(Ct, ldc, tile, bl.nr, mr, nr, alpha, bet);
                        else
                            tile_update_avx512(Ct, ldc, tile, bl.nr, mr, nr, alpha, bet);
                    }
                }
#endif
            }
        }
    }
#ifdef ISP_X86
    if (isa == ISP_ISA_AMX)
        amx_end();
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* peak: the path's multiply-add instruction alone                                             */

#ifdef ISP_X86
__attribute__((target("amx-tile,amx-bf16"))) static void peak_amx(int64_t iters, float *sink)
{
    static const uint16_t zeros[16 * 32] __attribute__((aligned(64)));
    amx_begin();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, zeros, 64);
    _tile_loadd(5, zeros, 64);
    _tile_loadd(6, zeros, 64);
    _tile_loadd(7, zeros, 64);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, sink, 64);
    amx_end();
}

__attribute__((target("avx512f,avx512bf16"))) static void peak_avx512bf16(int64_t iters,
                                                                          float *sink)
{
    __m512 c[16];
    for (int r = 0; r < 16; r++)
        c[r] = _mm512_setzero_ps();
    __m512i ai = _mm512_set1_epi32(0x3f803f80); /* bf16 1.0 pairs */
    __asm__("" : "+v"(ai));                     /* opaque to the compiler: the loop must run */
    const __m512bh a = (__m512bh)ai, b = a;
    for (int64_t i = 0; i < iters; i++)
        for (int r = 0; r < 16; r++)
            c[r] = _mm512_dpbf16_ps(c[r], a, b);
    for (int r = 1; r < 16; r++)
        c[0] = _mm512_add_ps(c[0], c[r]);
    _mm512_storeu_ps(sink, c[0]);
}

__attribute__((target("avx2,fma"))) static void peak_fma(int64_t iters, float *sink)
{
    __m256 c[12];
    for (int r = 0; r < 12; r++)
        c[r] = _mm256_setzero_ps();
    __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-7f);
    __asm__("" : "+v"(a), "+v"(b)); /* opaque to the compiler: the loop must run */
    for (int64_t i = 0; i < iters; i++)
        for (int r = 0; r < 12; r++)
            c[r] = _mm256_fmadd_ps(a, b, c[r]);
    for (int r = 1; r < 12; r++)
        c[0] = _mm256_add_ps(c[0], c[r]);
    _mm256_storeu_ps(sink, c[0]);
}
#endif

static volatile float peak_result; /* a use of the sums, so that no loop is optimised away */

double gemm_bf16_peak(isp_isa isa, int64_t iters)
{
    float sink[16 * 16];
#ifdef ISP_X86
    double flops = 0.0;
    switch (isa) {
    case ISP_ISA_AMX:
        peak_amx(iters, sink);
        flops = (double)iters * 4 * 16 * 16 * 32 * 2;
        break;
    case ISP_ISA_AVX512BF16:
        peak_avx512bf16(iters, sink);
        flops = (double)iters * 16 * 16 * 2 * 2;
        break;
    case ISP_ISA_AVX2BF16:
        peak_fma(iters, sink);
        flops = (double)iters * 12 * 8 * 2;
        break;
    default:
        return 0.0;
    }
    peak_result = sink[0];
    return flops;
#endif
    (void)isa;
    (void)iters;
    (void)sink;
    return 0.0;
}
