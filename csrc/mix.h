/* mix.h -- the 64-bit finaliser of splitmix64, the one integer hash of every counter-based RNG
   (dropout keys in ops.c, random pruning keys in prune.c). */
#ifndef ISP_MIX_H
#define ISP_MIX_H

#include <stdint.h>

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#endif /* ISP_MIX_H */
