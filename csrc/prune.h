/*
 * prune.h -- exact top-k selection over a list of tensors: magnitude, external-score and random
 * masks (prune.c). Merges and soups are in soup.h.
 *
 * Legend: T tensors, n[t] elements of tensor t, P = sum n[t] (all prunable weights),
 *         K masks being merged. A mask is one flat uint8 vector over the P weights (global position
 *         = offset of tensor t + index in t), 1 = kept, 0 = masked, or its bit-packed form
 *         (ceil(P/8) bytes, weight p is bit p%8 of byte p/8 -- numpy.packbits(bitorder="little")).
 *
 * Selection order (the one rule every selection kernel follows): candidates are ranked by their key
 * (|w|, a score, a random number); the smallest are masked first; among equal keys, the weight
 * with the smaller global position (tensor order, then index) is masked first -- exactly what a
 * stable ascending sort followed by "mask the first m" does. The result does not depend on the
 * thread count.
 */
#ifndef ISP_PRUNE_H
#define ISP_PRUNE_H

#include <stdint.h>

#include "isp.h"

typedef enum {
    SEL_ABS = 0,    /* key = |x|; x must be finite */
    SEL_SCORE = 1,  /* key = x (signed, larger = more important); x must be finite */
    SEL_RANDOM = 2, /* key = counter-based hash of (seed, global position) */
    SEL_NONE = 3,   /* all keys equal: ties broken by position only */
} sel_kind;

/* Where the keys and the candidate set of a selection come from. */
typedef struct {
    sel_kind kind;
    const float *const *x; /* (T,) tensors, tensor t is (n[t],); for SEL_ABS / SEL_SCORE */
    const uint8_t *cur;    /* (P,) current mask or NULL: only weights with cur == 1 are candidates,
                              weights with cur == 0 stay masked */
    uint64_t seed;         /* SEL_RANDOM */
    /* vote mode (vm != NULL): votes[p] = sum_k mask_k[p]; votes > vstar -> kept, votes < vstar ->
       masked, votes == vstar -> candidate (cur is ignored) */
    const uint8_t *const *vm; /* (K,) masks, each (P,) or packed (ceil(P/8),) */
    int K;
    int packed;
    int vstar;
    int no_gather; /* 1: always take the histogram path for the deciding bin (tests) */
} sel_source;

/*
 * out (P,): the mask that keeps exactly n_keep weights: every fixed-kept weight, plus the
 * largest-key candidates (ties: larger position kept first, see above). out may alias src->cur.
 * Errors: ISP_ERR_NONFINITE for NaN/inf keys, ISP_ERR_VALUE for a mask byte other than 0/1 or for an
 * n_keep that cannot be reached (fewer candidates than needed, or more weights fixed-kept).
 */
isp_status mask_select(uint8_t *out, const sel_source *src, const int64_t *n, int T, int64_t n_keep);

#endif /* ISP_PRUNE_H */
