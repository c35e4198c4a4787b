/*
 * soup.h -- superposing masks (union, intersection, vote, the one-shot adjustment), bit-packing
 * and weight averaging for model soups (soup.c). Conventions (flat masks, packed bit order,
 * selection order) as in prune.h.
 */
#ifndef ISP_SOUP_H
#define ISP_SOUP_H

#include <stdint.h>

#include "isp.h"
#include "maskbits.h"
#include "prune.h"

typedef enum { MERGE_UNION = 0, MERGE_INTERSECTION = 1 } merge_rule;

/*
 * out = OR (union) or AND (intersection) of the K masks in, all (P,) bytes or all packed
 * (ceil(P/8),). Unpacked inputs are checked to be 0/1. out may alias in[0].
 */
isp_status mask_combine(uint8_t *out, const uint8_t *const *in, int K, int64_t P, int packed,
                        merge_rule rule);

/* out (P,) = 1 where at least min_votes of the K masks keep the weight (majority: K/2 + 1). */
isp_status mask_vote_keep(uint8_t *out, const uint8_t *const *in, int K, int64_t P, int packed,
                          int min_votes);

/* hist (K+1,) = number of weights kept by exactly v of the K masks. */
isp_status mask_vote_hist(int64_t *hist, const uint8_t *const *in, int K, int64_t P, int packed);

/*
 * out (P,): keep exactly n_keep weights, those kept by the most masks; among weights with the
 * deciding vote count, by the key of tie_kind over x (SEL_ABS, SEL_SCORE or SEL_NONE), then by
 * position. A weight that no mask keeps is never kept (error if n_keep needs one).
 */
isp_status mask_vote_select(uint8_t *out, const uint8_t *const *in, int K, int packed,
                            sel_kind tie_kind, const float *const *x, const int64_t *n, int T,
                            int64_t n_keep);

/*
 * out (n,) = sum_k w[k] * in[k] (n,), accumulated in double in the order k = 0..K-1 and rounded
 * once; w == NULL means the uniform mean (sum / K). out may alias one of in only if it is in[0].
 */
isp_status soup_average(float *out, const float *const *in, const double *w, int K, int64_t n);

#endif /* ISP_SOUP_H */
