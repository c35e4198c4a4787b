/*
 * soup.c -- mask superposition (bit-packed or byte masks), votes, overlap counts and weight
 * averaging for model soups. Every loop is elementwise or a reduction of integers, so results do
 * not depend on the thread count. Legend: K masks / parameter sets, P weights, n elements.
 */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define SOUP_TID() omp_get_thread_num()
#else
#define SOUP_TID() 0
#endif

#include "isp.h"
#include "maskbits.h"
#include "prune.h"
#include "soup.h"

#define SOUP_BLOCK 8192 /* weights per block in vote loops (a multiple of 8) */
#define SOUP_PAR_MIN (1 << 14) /* loops over fewer elements run on one thread */
#define SOUP_NT(n) ((n) >= SOUP_PAR_MIN ? isp_get_num_threads() : 1)

isp_status mask_combine(uint8_t *out, const uint8_t *const *in, int K, int64_t P, int packed,
                        merge_rule rule)
{
    if (K < 1)
        return isp_fail(ISP_ERR_VALUE, "mask_combine: no masks to merge");
    if (P < 0)
        return isp_fail(ISP_ERR_VALUE, "mask_combine: negative size");
    const int64_t nbytes = packed ? (P + 7) / 8 : P;
    const int64_t CH = 1 << 14;
    const int64_t nch = (nbytes + CH - 1) / CH;
    int64_t bad = 0;
#pragma omp parallel for num_threads(SOUP_NT(nbytes)) reduction(+ : bad) schedule(static)
    for (int64_t c = 0; c < nch; c++) {
        const int64_t j0 = c * CH, j1 = j0 + CH < nbytes ? j0 + CH : nbytes;
        uint8_t acc = 0;
        /* in[0] is read first, so out may alias it */
        for (int64_t j = j0; j < j1; j++) {
            acc |= in[0][j];
            out[j] = in[0][j];
        }
        for (int k = 1; k < K; k++) {
            const uint8_t *s = in[k];
            if (rule == MERGE_UNION)
                for (int64_t j = j0; j < j1; j++) {
                    acc |= s[j];
                    out[j] |= s[j];
                }
            else
                for (int64_t j = j0; j < j1; j++) {
                    acc |= s[j];
                    out[j] &= s[j];
                }
        }
        bad += !packed && (acc & 0xFEu);
    }
    if (bad)
        return isp_fail(ISP_ERR_VALUE, "mask_combine: mask values must be 0 or 1");
    if (packed && (P & 7))
        out[nbytes - 1] &= (uint8_t)((1u << (P & 7)) - 1u);
    return ISP_OK;
}

isp_status mask_vote_keep(uint8_t *out, const uint8_t *const *in, int K, int64_t P, int packed,
                          int min_votes)
{
    if (K < 1 || K > 255)
        return isp_fail(ISP_ERR_VALUE, "mask_vote_keep: expected 1 <= K <= 255 masks, got %d", K);
    const int64_t nch = (P + SOUP_BLOCK - 1) / SOUP_BLOCK;
    const int nt = SOUP_NT(P);
    uint8_t *vbuf = malloc((size_t)SOUP_BLOCK * (size_t)nt);
    if (vbuf == NULL)
        return isp_fail(ISP_ERR_NOMEM, "mask_vote_keep: out of memory");
    int64_t bad = 0;
#pragma omp parallel num_threads(nt) reduction(+ : bad)
    {
        uint8_t *v = vbuf + (size_t)SOUP_TID() * SOUP_BLOCK;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nch; c++) {
            const int64_t p0 = c * SOUP_BLOCK, len = P - p0 < SOUP_BLOCK ? P - p0 : SOUP_BLOCK;
            bad += mask_votes(v, in, K, packed, p0, len);
            for (int64_t i = 0; i < len; i++)
                out[p0 + i] = (uint8_t)(v[i] >= min_votes);
        }
    }
    free(vbuf);
    if (bad)
        return isp_fail(ISP_ERR_VALUE, "mask_vote_keep: mask values must be 0 or 1");
    return ISP_OK;
}

isp_status mask_vote_hist(int64_t *hist, const uint8_t *const *in, int K, int64_t P, int packed)
{
    if (K < 1 || K > 255)
        return isp_fail(ISP_ERR_VALUE, "mask_vote_hist: expected 1 <= K <= 255 masks, got %d", K);
    const int64_t nch = (P + SOUP_BLOCK - 1) / SOUP_BLOCK;
    const int nt = SOUP_NT(P);
    uint8_t *vbuf = malloc((size_t)SOUP_BLOCK * (size_t)nt);
    /* 8 sub-histograms per thread: consecutive increments of the same few bins would otherwise
       wait on each other through memory */
    int64_t *th = calloc((size_t)nt * 8 * (size_t)(K + 1), sizeof(int64_t));
    if (vbuf == NULL || th == NULL) {
        free(vbuf);
        free(th);
        return isp_fail(ISP_ERR_NOMEM, "mask_vote_hist: out of memory");
    }
    int64_t bad = 0;
#pragma omp parallel num_threads(nt) reduction(+ : bad)
    {
        const int tid = SOUP_TID();
        uint8_t *v = vbuf + (size_t)tid * SOUP_BLOCK;
        int64_t *h = th + (size_t)tid * 8 * (size_t)(K + 1);
        const int64_t stride = K + 1;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nch; c++) {
            const int64_t p0 = c * SOUP_BLOCK, len = P - p0 < SOUP_BLOCK ? P - p0 : SOUP_BLOCK;
            bad += mask_votes(v, in, K, packed, p0, len);
            for (int64_t i = 0; i < len; i++)
                if (v[i] <= K) /* more votes than masks: a value > 1, reported below */
                    h[(i & 7) * stride + v[i]]++;
        }
    }
    for (int v = 0; v <= K; v++) {
        hist[v] = 0;
        for (int t = 0; t < nt * 8; t++)
            hist[v] += th[(size_t)t * (size_t)(K + 1) + (size_t)v];
    }
    free(vbuf);
    free(th);
    if (bad)
        return isp_fail(ISP_ERR_VALUE, "mask_vote_hist: mask values must be 0 or 1");
    return ISP_OK;
}

isp_status mask_vote_select(uint8_t *out, const uint8_t *const *in, int K, int packed,
                            sel_kind tie_kind, const float *const *x, const int64_t *n, int T,
                            int64_t n_keep)
{
    int64_t P = 0;
    for (int t = 0; t < T; t++)
        P += n[t];
    if (n_keep < 0 || n_keep > P)
        return isp_fail(ISP_ERR_VALUE, "cannot keep %lld of %lld weights", (long long)n_keep,
                        (long long)P);
    int64_t *hist = malloc(sizeof(int64_t) * (size_t)(K + 1));
    if (hist == NULL)
        return isp_fail(ISP_ERR_NOMEM, "mask_vote_select: out of memory");
    isp_status st = mask_vote_hist(hist, in, K, P, packed);
    if (st != ISP_OK) {
        free(hist);
        return st;
    }
    /* the deciding vote count: weights with more votes are all kept */
    int vstar = K;
    int64_t above = 0;
    while (vstar > 0 && above + hist[vstar] < n_keep)
        above += hist[vstar--];
    free(hist);
    if (vstar == 0 && n_keep > above)
        return isp_fail(ISP_ERR_VALUE,
                        "vote: cannot keep %lld weights: only %lld are kept by at least one mask",
                        (long long)n_keep, (long long)above);
    sel_source src = {.kind = tie_kind, .x = x, .cur = NULL, .seed = 0, .vm = in, .K = K,
                      .packed = packed, .vstar = vstar, .no_gather = 0};
    return mask_select(out, &src, n, T, n_keep);
}

isp_status soup_average(float *out, const float *const *in, const double *w, int K, int64_t n)
{
    if (K < 1)
        return isp_fail(ISP_ERR_VALUE, "soup_average: no parameter sets to average");
    const int64_t CH = 4096;
    const int64_t nch = (n + CH - 1) / CH;
#pragma omp parallel num_threads(SOUP_NT(n))
    {
        double acc[4096];
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nch; c++) {
            const int64_t i0 = c * CH, len = n - i0 < CH ? n - i0 : CH;
            for (int64_t i = 0; i < len; i++)
                acc[i] = w ? w[0] * (double)in[0][i0 + i] : (double)in[0][i0 + i];
            for (int k = 1; k < K; k++) {
                const float *s = in[k] + i0;
                if (w)
                    for (int64_t i = 0; i < len; i++)
                        acc[i] += w[k] * (double)s[i];
                else
                    for (int64_t i = 0; i < len; i++)
                        acc[i] += (double)s[i];
            }
            for (int64_t i = 0; i < len; i++)
                out[i0 + i] = w ? (float)acc[i] : (float)(acc[i] / (double)K);
        }
    }
    return ISP_OK;
}
