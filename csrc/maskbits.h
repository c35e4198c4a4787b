/*
 * maskbits.h -- bit operations on flat masks (maskbits.c): packing, per-weight votes, kept counts,
 * overlaps. Masks are (P,) bytes 0/1 or bit-packed, ceil(P/8) bytes, bit i of byte j = weight
 * 8j+i (numpy.packbits bitorder="little"). The bottom of the pruning units: prune.c selects with
 * votes, soup.c merges; neither is needed here.
 */
#ifndef ISP_MASKBITS_H
#define ISP_MASKBITS_H

#include <stdint.h>

#include "isp.h"

/* bits (ceil(P/8),) <- m (P,) 0/1 bytes; tail bits of the last byte are zero. */
isp_status mask_pack(uint8_t *bits, const uint8_t *m, int64_t P);
/* m (P,) <- bits (ceil(P/8),) */
isp_status mask_unpack(uint8_t *m, const uint8_t *bits, int64_t P);

/*
 * v (len,) = how many of the K masks (K <= 255) keep weights p0 .. p0+len-1. Returns nonzero if an
 * unpacked mask holds a byte other than 0/1.
 */
int mask_votes(uint8_t *v, const uint8_t *const *in, int K, int packed, int64_t p0, int64_t len);

/* na, nb = kept counts of a and b; nab = kept by both. a, b are (P,) or packed (tail ignored). */
isp_status mask_overlap(int64_t *na, int64_t *nb, int64_t *nab, const uint8_t *a, const uint8_t *b,
                        int64_t P, int packed);

/* Count of weights kept by mask m (P,) (or packed), with a 0/1 check for unpacked masks. */
isp_status mask_count(int64_t *kept, const uint8_t *m, int64_t P, int packed);

#endif /* ISP_MASKBITS_H */
