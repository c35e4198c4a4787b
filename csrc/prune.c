/*
 * prune.c -- exact, deterministic top-k selection over a list of tensors without sorting and
 * without concatenating them: a two-level radix select over 32-bit keys.
 *
 * Keys. |w| of a finite float is ordered like its bit pattern with the sign bit cleared; a signed
 * score maps to an order-preserving uint32 by flipping all bits of negatives and the sign bit of
 * positives (-0 is folded onto +0). Random keys are a counter-based hash of (seed, position).
 *
 * Passes over the data (weights are read in blocks of SEL_BLOCK elements, keys computed into a
 * small per-thread buffer, so nothing of size P is allocated):
 *   1. histogram of the top 16 key bits of the candidates (+ validation: NaN/inf, mask bytes);
 *      the bin b1 holding the m-th smallest candidate (m = candidates to mask) follows;
 *   2. usual case, bin b1 holds few candidates (<= max(65536, P/64)): write the mask (above b1
 *      kept, below masked, inside b1 kept for now) while gathering b1's candidates as (key,
 *      position); sort them and mask the first m - (count below b1). Two passes in all.
 *   Otherwise (heavy ties, e.g. many exact zeros):
 *   2'. histogram of the low 16 bits of the candidates in bin b1 -> the exact threshold key tau
 *      and r = how many candidates with key == tau are masked;
 *   3'. write the mask (key > tau kept, key < tau masked, key == tau kept for now) and count the
 *      tau-ties per block; a serial scan over the blocks assigns the r masked ties to the first
 *      blocks in position order, and a fix-up pass over those few blocks masks them.
 * Histograms are per thread and summed, ties are resolved by position: the result is the same for
 * any thread count. Extra memory: nthreads * (65536 * 8 + SEL_BLOCK * 5) bytes + 16 B per block
 * (+ 16 B per gathered candidate, at most P/4 bytes).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define SEL_TID() omp_get_thread_num()
#else
#define SEL_TID() 0
#endif

#include "isp.h"
#include "maskbits.h"
#include "mix.h"
#include "prune.h"

#define SEL_BLOCK 16384
#define SEL_BINS 65536

typedef struct {
    int32_t t;    /* tensor */
    int64_t i0;   /* first index in the tensor */
    int64_t len;  /* elements in the block */
    int64_t pos0; /* global position of element i0 */
} sel_block;

enum { CLS_MASKED = 0, CLS_KEPT = 1, CLS_CAND = 2 };

/* a candidate of the deciding histogram bin, gathered in mode 3 */
typedef struct {
    uint32_t key;
    int64_t pos;
} sel_item;

/*
 * Append the candidates of block keys key (len,) (classes cls, or all candidates if NULL) whose
 * high key half is b1 to items[at..n_in); returns the new fill. Matches are rare (~1 in 1000), so
 * 64-element chunks are first tested with a vectorizable OR and skipped when empty.
 */
static int64_t gather_bin(sel_item *items, int64_t at, int64_t n_in, const uint32_t *key,
                          const uint8_t *cls, int64_t len, uint32_t b1, int64_t pos0)
{
    for (int64_t c0 = 0; c0 < len; c0 += 64) {
        const int64_t c1 = c0 + 64 < len ? c0 + 64 : len;
        uint32_t any = 0;
        for (int64_t i = c0; i < c1; i++)
            any |= (uint32_t)((key[i] >> 16) == b1);
        if (!any)
            continue;
        for (int64_t i = c0; i < c1 && at < n_in; i++)
            if ((key[i] >> 16) == b1 && (cls == NULL || cls[i] == CLS_CAND)) {
                items[at].key = key[i];
                items[at].pos = pos0 + i;
                at++;
            }
    }
    return at;
}

static int item_cmp(const void *a, const void *b)
{
    const sel_item *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The random key of global position pos under seed: the pos-th output of a splitmix64 stream. */
static inline uint32_t random_key(uint64_t skey, int64_t pos)
{
    return (uint32_t)(mix64(skey + ((uint64_t)pos + 1u) * 0x9E3779B97F4A7C15ULL) >> 32);
}

/*
 * Keys and classes of block b: key is (len,), cls is (len,) in {CLS_MASKED, CLS_KEPT, CLS_CAND}.
 * Returns -1, or the block offset of the first invalid element with *why = 1 (NaN/inf key source)
 * or 2 (mask byte other than 0/1).
 */
static int64_t block_keys(const sel_source *s, const sel_block *b, uint32_t *key, uint8_t *cls,
                          int *why)
{
    const int64_t len = b->len, pos0 = b->pos0;
    int64_t bad = -1;
    /* classes */
    if (s->vm != NULL) {
        if (mask_votes(cls, s->vm, s->K, s->packed, pos0, len)) {
            for (int64_t i = 0; i < len && bad < 0; i++)
                for (int k = 0; k < s->K; k++)
                    if (s->vm[k][pos0 + i] > 1u) {
                        bad = i;
                        break;
                    }
            *why = 2;
            return bad;
        }
        const uint8_t vs = (uint8_t)s->vstar;
        for (int64_t i = 0; i < len; i++) /* > vs: CLS_KEPT, == vs: CLS_CAND, else CLS_MASKED */
            cls[i] = (uint8_t)((cls[i] > vs) | ((cls[i] == vs) << 1));
    } else if (s->cur != NULL) {
        const uint8_t *c = s->cur + pos0;
        uint8_t acc = 0;
        for (int64_t i = 0; i < len; i++) {
            acc |= c[i];
            cls[i] = (uint8_t)(c[i] << 1); /* 1 -> CLS_CAND, 0 -> CLS_MASKED */
        }
        if (acc & 0xFEu) {
            for (int64_t i = 0; i < len; i++)
                if (c[i] > 1u) {
                    *why = 2;
                    return i;
                }
        }
    } else {
        memset(cls, CLS_CAND, (size_t)len);
    }
    /* keys */
    switch (s->kind) {
    case SEL_ABS: {
        const float *x = s->x[b->t] + b->i0;
        uint32_t worst = 0;
        for (int64_t i = 0; i < len; i++) {
            uint32_t u = f2u(x[i]) & 0x7fffffffu;
            key[i] = u;
            worst = u > worst ? u : worst;
        }
        if (worst >= 0x7f800000u)
            bad = 0;
        break;
    }
    case SEL_SCORE: {
        const float *x = s->x[b->t] + b->i0;
        uint32_t worst = 0;
        for (int64_t i = 0; i < len; i++) {
            uint32_t u = f2u(x[i]), a = u & 0x7fffffffu;
            worst = a > worst ? a : worst;
            key[i] = a == 0 ? 0x80000000u : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
        }
        if (worst >= 0x7f800000u)
            bad = 0;
        break;
    }
    case SEL_RANDOM: {
        const uint64_t skey = mix64(s->seed ^ 0x6a09e667f3bcc909ULL);
        for (int64_t i = 0; i < len; i++)
            key[i] = random_key(skey, pos0 + i);
        break;
    }
    default:
        memset(key, 0, sizeof(uint32_t) * (size_t)len);
        break;
    }
    if (bad == 0) { /* locate the first NaN/inf */
        const float *x = s->x[b->t] + b->i0;
        for (int64_t i = 0; i < len; i++)
            if ((f2u(x[i]) & 0x7fffffffu) >= 0x7f800000u) {
                *why = 1;
                return i;
            }
    }
    return -1;
}

static isp_status select_error(const sel_source *s, const sel_block *blocks, int64_t nb,
                               int64_t bad_pos, int why, const int64_t *n, int T)
{
    (void)blocks;
    (void)nb;
    int64_t off = 0;
    int t = 0;
    for (t = 0; t < T; t++) {
        if (bad_pos < off + n[t])
            break;
        off += n[t];
    }
    if (why == 1)
        return isp_fail(ISP_ERR_NONFINITE,
                        "tensor #%d element %lld: %s is NaN or inf (scores must be finite)", t,
                        (long long)(bad_pos - off), s->kind == SEL_ABS ? "weight" : "score");
    return isp_fail(ISP_ERR_VALUE, "mask value other than 0/1 at tensor #%d element %lld", t,
                    (long long)(bad_pos - off));
}

isp_status mask_select(uint8_t *out, const sel_source *src, const int64_t *n, int T, int64_t n_keep)
{
    if (out == NULL || src == NULL || (T > 0 && n == NULL) || T < 0)
        return isp_fail(ISP_ERR_INTERNAL, "mask_select: NULL argument");
    if ((src->kind == SEL_ABS || src->kind == SEL_SCORE) && T > 0 && src->x == NULL)
        return isp_fail(ISP_ERR_INTERNAL, "mask_select: key source needs tensors");
    if (src->vm != NULL && (src->K < 1 || src->K > 255 || src->vstar < 0 || src->vstar > src->K))
        return isp_fail(ISP_ERR_INTERNAL, "mask_select: bad vote parameters");
    int64_t P = 0, nb = 0;
    for (int t = 0; t < T; t++) {
        if (n[t] < 0)
            return isp_fail(ISP_ERR_VALUE, "tensor #%d: negative size %lld", t, (long long)n[t]);
        P += n[t];
        nb += (n[t] + SEL_BLOCK - 1) / SEL_BLOCK;
    }
    if (n_keep < 0 || n_keep > P)
        return isp_fail(ISP_ERR_VALUE, "cannot keep %lld of %lld weights", (long long)n_keep,
                        (long long)P);
    if (P == 0)
        return ISP_OK;

    isp_status st = ISP_OK;
    const int all_cand = src->vm == NULL && src->cur == NULL;
    sel_item *items = NULL;
    int64_t n_got = 0;
    int nt = isp_get_num_threads();
    if (nt > nb) /* at least one block per thread: waking threads for tiny inputs costs more */
        nt = (int)nb;
    if (nt < 1)
        nt = 1;
    sel_block *blocks = malloc(sizeof(sel_block) * (size_t)nb);
    int64_t *hist = calloc((size_t)nt * SEL_BINS, sizeof(int64_t));
    uint32_t *keybuf = malloc(sizeof(uint32_t) * (size_t)nt * SEL_BLOCK);
    uint8_t *clsbuf = malloc((size_t)nt * SEL_BLOCK);
    int64_t *ties = calloc((size_t)nb, sizeof(int64_t));
    int64_t *tcount = calloc((size_t)nt * 2, sizeof(int64_t)); /* (nt, 2): fixed kept, cands */
    if (!blocks || !hist || !keybuf || !clsbuf || !ties || !tcount) {
        st = isp_fail(ISP_ERR_NOMEM, "mask_select: out of memory for %d thread buffers", nt);
        goto done;
    }
    {
        int64_t bi = 0, pos = 0;
        for (int t = 0; t < T; t++) {
            for (int64_t i0 = 0; i0 < n[t]; i0 += SEL_BLOCK) {
                blocks[bi].t = t;
                blocks[bi].i0 = i0;
                blocks[bi].len = n[t] - i0 < SEL_BLOCK ? n[t] - i0 : SEL_BLOCK;
                blocks[bi].pos0 = pos + i0;
                bi++;
            }
            pos += n[t];
        }
    }

    /* pass 1: validate, count, histogram of the high 16 key bits of the candidates */
    int64_t bad_pos = INT64_MAX;
    int bad_why = 0;
#pragma omp parallel num_threads(nt)
    {
        const int tid = SEL_TID();
        int64_t *h = hist + (size_t)tid * SEL_BINS;
        uint32_t *key = keybuf + (size_t)tid * SEL_BLOCK;
        uint8_t *cls = clsbuf + (size_t)tid * SEL_BLOCK;
        int64_t nkept = 0, ncand = 0;
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nb; bi++) {
            const sel_block *b = &blocks[bi];
            int why = 0;
            int64_t off = block_keys(src, b, key, cls, &why);
            if (off >= 0) {
#pragma omp critical(sel_bad)
                {
                    if (b->pos0 + off < bad_pos) {
                        bad_pos = b->pos0 + off;
                        bad_why = why;
                    }
                }
                continue;
            }
            const int64_t len = b->len;
            if (all_cand) { /* no current mask, no votes: every weight is a candidate */
                for (int64_t i = 0; i < len; i++)
                    h[key[i] >> 16]++;
                ncand += len;
                continue;
            }
            for (int64_t i = 0; i < len; i++) {
                const int64_t c = cls[i] == CLS_CAND;
                h[key[i] >> 16] += c;
                nkept += cls[i] == CLS_KEPT;
                ncand += c;
            }
        }
        tcount[2 * tid] = nkept;
        tcount[2 * tid + 1] = ncand;
    }
    if (bad_why != 0) {
        st = select_error(src, blocks, nb, bad_pos, bad_why, n, T);
        goto done;
    }
    int64_t n_fixed = 0, n_cand = 0;
    for (int th = 0; th < nt; th++) {
        n_fixed += tcount[2 * th];
        n_cand += tcount[2 * th + 1];
    }
    if (n_keep < n_fixed) {
        st = isp_fail(ISP_ERR_VALUE,
                      "cannot keep only %lld weights: %lld are kept regardless of scores",
                      (long long)n_keep, (long long)n_fixed);
        goto done;
    }
    if (n_keep - n_fixed > n_cand) {
        st = isp_fail(ISP_ERR_VALUE,
                      "cannot keep %lld weights: only %lld are candidates (still kept)%s",
                      (long long)n_keep, (long long)(n_cand + n_fixed),
                      src->vm ? "" : "; monotone pruning never unmasks a pruned weight");
        goto done;
    }
    const int64_t n_prune = n_cand - (n_keep - n_fixed); /* candidates to mask */

    /* mode 0: keep every candidate; 1: mask every candidate; 2: threshold tau with r masked ties;
       3: the bin b1 is small -- gather its candidates while writing and sort them (no pass 2) */
    int mode = n_prune == 0 ? 0 : (n_prune == n_cand ? 1 : 2);
    uint32_t tau = 0, b1 = 0;
    int64_t r = 0, cum = 0, n_in = 0;
    if (mode == 2) {
        for (int th = 1; th < nt; th++)
            for (int j = 0; j < SEL_BINS; j++)
                hist[j] += hist[(size_t)th * SEL_BINS + j];
        while (cum + hist[b1] < n_prune)
            cum += hist[b1++];
        n_in = hist[b1];
        const int64_t gather_limit = P / 64 > 65536 ? P / 64 : 65536; /* <= 0.25 byte per weight */
        if (n_in <= gather_limit && !src->no_gather) {
            items = malloc(sizeof(sel_item) * (size_t)n_in);
            if (items != NULL)
                mode = 3;
        }
    }
    if (mode == 2) {
        /* pass 2: low 16 bits inside bin b1 */
        memset(hist, 0, sizeof(int64_t) * (size_t)nt * SEL_BINS);
#pragma omp parallel num_threads(nt)
        {
            const int tid = SEL_TID();
            int64_t *h = hist + (size_t)tid * SEL_BINS;
            uint32_t *key = keybuf + (size_t)tid * SEL_BLOCK;
            uint8_t *cls = clsbuf + (size_t)tid * SEL_BLOCK;
#pragma omp for schedule(static)
            for (int64_t bi = 0; bi < nb; bi++) {
                int why = 0;
                block_keys(src, &blocks[bi], key, cls, &why);
                /* few keys fall in bin b1: a predictable branch beats touching the whole table */
                for (int64_t i = 0; i < blocks[bi].len; i++)
                    if ((key[i] >> 16) == b1 && cls[i] == CLS_CAND)
                        h[key[i] & 0xffffu]++;
            }
        }
        for (int th = 1; th < nt; th++)
            for (int j = 0; j < SEL_BINS; j++)
                hist[j] += hist[(size_t)th * SEL_BINS + j];
        uint32_t lo = 0;
        while (cum + hist[lo] < n_prune)
            cum += hist[lo++];
        tau = (b1 << 16) | lo;
        r = n_prune - cum; /* 1 <= r <= hist[lo] */
    }

    /* pass 3: write; key == tau kept for now, ties counted per block */
#pragma omp parallel num_threads(nt)
    {
        const int tid = SEL_TID();
        uint32_t *key = keybuf + (size_t)tid * SEL_BLOCK;
        uint8_t *cls = clsbuf + (size_t)tid * SEL_BLOCK;
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nb; bi++) {
            const sel_block *b = &blocks[bi];
            int why = 0;
            block_keys(src, b, key, cls, &why);
            uint8_t *restrict o = out + b->pos0;
            const uint8_t *restrict cl = cls;
            const uint32_t *restrict ky = key;
            const int64_t len = b->len;
            const uint8_t cand_keep = mode == 0;
            /* branch-free (classes and key comparisons are unpredictable) */
            if (mode == 3 && all_cand) {
                int64_t nb1 = 0;
                for (int64_t i = 0; i < len; i++) {
                    const uint32_t hi = ky[i] >> 16;
                    o[i] = (uint8_t)(hi >= b1);
                    nb1 += hi == b1;
                }
                if (nb1 > 0) {
                    int64_t at;
#pragma omp atomic capture
                    {
                        at = n_got;
                        n_got += nb1;
                    }
                    at = gather_bin(items, at, n_in, ky, NULL, len, b1, b->pos0);
                }
            } else if (mode == 3) {
                int64_t nb1 = 0;
                for (int64_t i = 0; i < len; i++) {
                    const uint8_t c = cl[i] == CLS_CAND;
                    const uint32_t hi = ky[i] >> 16;
                    o[i] = (uint8_t)((cl[i] == CLS_KEPT) | (c & (hi >= b1)));
                    nb1 += c & (hi == b1);
                }
                if (nb1 > 0) {
                    int64_t at;
#pragma omp atomic capture
                    {
                        at = n_got;
                        n_got += nb1;
                    }
                    at = gather_bin(items, at, n_in, ky, cl, len, b1, b->pos0);
                }
            } else if (mode != 2) {
                for (int64_t i = 0; i < len; i++)
                    o[i] = (uint8_t)((cl[i] == CLS_KEPT) | ((cl[i] == CLS_CAND) & cand_keep));
            } else {
                int64_t nt_ties = 0;
                for (int64_t i = 0; i < len; i++) {
                    const uint8_t c = cl[i] == CLS_CAND;
                    o[i] = (uint8_t)((cl[i] == CLS_KEPT) | (c & (ky[i] >= tau)));
                    nt_ties += c & (ky[i] == tau);
                }
                ties[bi] = nt_ties;
            }
        }
    }
    if (mode == 3) {
        /* mask the n_prune - cum smallest (key, position) of bin b1 */
        if (n_got != n_in) {
            st = isp_fail(ISP_ERR_INTERNAL, "mask_select: gathered %lld of %lld", (long long)n_got,
                          (long long)n_in);
            goto done;
        }
        /* no sort: a histogram of the low key halves finds the threshold key; only the items
           equal to it are ordered (by position) */
        const int64_t r1 = n_prune - cum; /* 1 <= r1 <= n_in */
        int64_t *h = hist;
        memset(h, 0, sizeof(int64_t) * SEL_BINS);
        for (int64_t j = 0; j < n_in; j++)
            h[items[j].key & 0xffffu]++;
        uint32_t lo = 0;
        int64_t below = 0;
        while (below + h[lo] < r1)
            below += h[lo++];
        const uint32_t t_key = (b1 << 16) | lo;
        int64_t n_eq = 0;
        for (int64_t j = 0; j < n_in; j++) {
            if (items[j].key < t_key)
                out[items[j].pos] = 0;
            else if (items[j].key == t_key)
                items[n_eq++] = items[j]; /* n_eq <= j: compacting in place is safe */
        }
        qsort(items, (size_t)n_eq, sizeof(sel_item), item_cmp);
        for (int64_t j = 0; j < r1 - below; j++)
            out[items[j].pos] = 0;
    }
    if (mode == 2) {
        /* the r masked ties are the first r in position order */
        int64_t rem = r;
        for (int64_t bi = 0; bi < nb; bi++) {
            int64_t q = ties[bi] < rem ? ties[bi] : rem;
            ties[bi] = q;
            rem -= q;
        }
        if (rem != 0) {
            st = isp_fail(ISP_ERR_INTERNAL, "mask_select: %lld ties left over", (long long)rem);
            goto done;
        }
#pragma omp parallel num_threads(nt)
        {
            const int tid = SEL_TID();
            uint32_t *key = keybuf + (size_t)tid * SEL_BLOCK;
            uint8_t *cls = clsbuf + (size_t)tid * SEL_BLOCK;
#pragma omp for schedule(dynamic, 1)
            for (int64_t bi = 0; bi < nb; bi++) {
                int64_t q = ties[bi];
                if (q == 0)
                    continue;
                int why = 0;
                block_keys(src, &blocks[bi], key, cls, &why);
                uint8_t *o = out + blocks[bi].pos0;
                for (int64_t i = 0; i < blocks[bi].len && q > 0; i++)
                    if (cls[i] == CLS_CAND && key[i] == tau) {
                        o[i] = 0;
                        q--;
                    }
            }
        }
    }

done:
    free(items);
    free(blocks);
    free(hist);
    free(keybuf);
    free(clsbuf);
    free(ties);
    free(tcount);
    return st;
}
