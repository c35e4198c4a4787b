/*
 * maskbits.c -- bit operations on masks (maskbits.h): packing, per-weight votes, kept counts,
 * overlaps. Integer loops only, so results do not depend on the thread count.
 */
#include <string.h>

#include "isp.h"
#include "maskbits.h"

#define MB_PAR_MIN (1 << 14) /* loops over fewer elements run on one thread */
#define MB_NT(n) ((n) >= MB_PAR_MIN ? isp_get_num_threads() : 1)

isp_status mask_pack(uint8_t *bits, const uint8_t *m, int64_t P)
{
    if (P < 0)
        return isp_fail(ISP_ERR_VALUE, "mask_pack: negative size");
    const int64_t nbytes = (P + 7) / 8;
    int64_t bad = 0;
#pragma omp parallel for num_threads(MB_NT(P)) reduction(+ : bad) schedule(static)
    for (int64_t j = 0; j < nbytes; j++) {
        const uint8_t *s = m + 8 * j;
        const int64_t cnt = P - 8 * j < 8 ? P - 8 * j : 8;
        uint8_t v = 0, acc = 0;
        for (int64_t b = 0; b < cnt; b++) {
            acc |= s[b];
            v |= (uint8_t)((s[b] & 1u) << b);
        }
        bits[j] = v;
        bad += (acc & 0xFEu) != 0;
    }
    if (bad)
        return isp_fail(ISP_ERR_VALUE, "mask_pack: mask values must be 0 or 1");
    return ISP_OK;
}

isp_status mask_unpack(uint8_t *m, const uint8_t *bits, int64_t P)
{
    if (P < 0)
        return isp_fail(ISP_ERR_VALUE, "mask_unpack: negative size");
    const int64_t nbytes = (P + 7) / 8;
#pragma omp parallel for num_threads(MB_NT(P)) schedule(static)
    for (int64_t j = 0; j < nbytes; j++) {
        uint8_t *d = m + 8 * j;
        const int64_t cnt = P - 8 * j < 8 ? P - 8 * j : 8;
        const uint8_t v = bits[j];
        for (int64_t b = 0; b < cnt; b++)
            d[b] = (uint8_t)((v >> b) & 1u);
    }
    return ISP_OK;
}

/* spread[b]: byte i of the (little-endian) uint64 is bit i of b -- adds 8 packed votes at once */
#define SP1(b)                                                                                     \
    ((uint64_t)((b) & 1) | ((uint64_t)(((b) >> 1) & 1) << 8) |                                   \
     ((uint64_t)(((b) >> 2) & 1) << 16) | ((uint64_t)(((b) >> 3) & 1) << 24) |                    \
     ((uint64_t)(((b) >> 4) & 1) << 32) | ((uint64_t)(((b) >> 5) & 1) << 40) |                    \
     ((uint64_t)(((b) >> 6) & 1) << 48) | ((uint64_t)(((b) >> 7) & 1) << 56))
#define SP4(n) SP1(n), SP1((n) + 1), SP1((n) + 2), SP1((n) + 3)
#define SP16(n) SP4(n), SP4((n) + 4), SP4((n) + 8), SP4((n) + 12)
#define SP64(n) SP16(n), SP16((n) + 16), SP16((n) + 32), SP16((n) + 48)
static const uint64_t spread[256] = {SP64(0), SP64(64), SP64(128), SP64(192)};

int mask_votes(uint8_t *v, const uint8_t *const *in, int K, int packed, int64_t p0, int64_t len)
{
    uint8_t acc = 0;
    memset(v, 0, (size_t)len);
    for (int k = 0; k < K; k++) {
        if (!packed) {
            const uint8_t *m = in[k] + p0;
            for (int64_t i = 0; i < len; i++) {
                acc |= m[i];
                v[i] = (uint8_t)(v[i] + m[i]);
            }
            continue;
        }
        int64_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if ((p0 & 7) == 0) {
            /* byte-aligned: 8 votes per uint64 add (counts <= K <= 255 never carry) */
            const uint8_t *m = in[k] + p0 / 8;
            const int64_t nfull = len / 8;
            for (int64_t j = 0; j < nfull; j++) {
                uint64_t x;
                memcpy(&x, v + 8 * j, sizeof x);
                x += spread[m[j]];
                memcpy(v + 8 * j, &x, sizeof x);
            }
            i = nfull * 8;
        }
#endif
        const uint8_t *m = in[k];
        for (; i < len; i++) {
            const int64_t p = p0 + i;
            v[i] = (uint8_t)(v[i] + ((m[p >> 3] >> (p & 7)) & 1u));
        }
    }
    return (acc & 0xFEu) != 0;
}

isp_status mask_overlap(int64_t *na, int64_t *nb, int64_t *nab, const uint8_t *a, const uint8_t *b,
                        int64_t P, int packed)
{
    int64_t sa = 0, sb = 0, sab = 0, bad = 0;
    const int nt = MB_NT(P);
    if (packed) {
        const int64_t nbytes = (P + 7) / 8;
        const uint8_t last = (uint8_t)((P & 7) ? ((1u << (P & 7)) - 1u) : 0xffu);
#pragma omp parallel for num_threads(nt) reduction(+ : sa, sb, sab) schedule(static)
        for (int64_t j = 0; j < nbytes; j++) {
            const uint8_t keep = j == nbytes - 1 ? last : 0xffu;
            const unsigned x = a[j] & keep, y = b[j] & keep;
            sa += __builtin_popcount(x);
            sb += __builtin_popcount(y);
            sab += __builtin_popcount(x & y);
        }
    } else {
#pragma omp parallel for num_threads(nt) reduction(+ : sa, sb, sab, bad) schedule(static)
        for (int64_t j = 0; j < P; j++) {
            sa += a[j];
            sb += b[j];
            sab += a[j] & b[j];
            bad += (a[j] | b[j]) > 1u;
        }
    }
    if (bad)
        return isp_fail(ISP_ERR_VALUE, "mask_overlap: mask values must be 0 or 1");
    *na = sa;
    *nb = sb;
    *nab = sab;
    return ISP_OK;
}

isp_status mask_count(int64_t *kept, const uint8_t *m, int64_t P, int packed)
{
    if (P < 0)
        return isp_fail(ISP_ERR_VALUE, "mask_count: negative size");
    const int nt = MB_NT(P);
    int64_t total = 0, bad = 0;
    if (packed) {
        const int64_t nbytes = (P + 7) / 8;
        const uint8_t last = (uint8_t)((P & 7) ? ((1u << (P & 7)) - 1u) : 0xffu);
#pragma omp parallel for num_threads(nt) reduction(+ : total) schedule(static)
        for (int64_t j = 0; j < nbytes; j++) {
            uint8_t v = j == nbytes - 1 ? (uint8_t)(m[j] & last) : m[j];
            total += __builtin_popcount(v);
        }
    } else {
#pragma omp parallel for num_threads(nt) reduction(+ : total, bad) schedule(static)
        for (int64_t j = 0; j < P; j++) {
            total += m[j];
            bad += m[j] > 1u;
        }
        if (bad)
            return isp_fail(ISP_ERR_VALUE, "mask has %lld values other than 0/1", (long long)bad);
    }
    *kept = total;
    return ISP_OK;
}
