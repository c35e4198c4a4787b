/*
 * isp.h -- the one public C header of instantsoup: status codes, error reporting, threads,
 * and the headers of every kernel family. No Python objects below module.c / py_*.c.
 *
 * Dimension legend used in every kernel file:
 *   B batch, T tokens (sequence length), C channels (hidden size), NH heads, HS head size (C/NH),
 *   F feed-forward (intermediate) size, V vocabulary, L layers, NL labels, P prunable weights.
 */
#ifndef ISP_H
#define ISP_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ISP_OK = 0,
    ISP_ERR_NOMEM = 1,     /* -> MemoryError */
    ISP_ERR_VALUE = 2,     /* -> ValueError  */
    ISP_ERR_NONFINITE = 3, /* -> FloatingPointError-like ValueError: NaN or inf met */
    ISP_ERR_INTERNAL = 4,  /* -> RuntimeError: a bug, please report */
} isp_status;

/* A thread-local message that goes with a non-OK status. Kernels fill it; the boundary reads it. */
isp_status isp_fail(isp_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *isp_last_error(void);
void isp_clear_error(void);

/* Threads: one setting for our OpenMP loops and for OpenBLAS. */
void isp_set_num_threads(int n);
int isp_get_num_threads(void);

#include "blas.h"
#include "soup.h" /* prune.h + soup.h: selection, masks, merges, soups */
#include "gemm_bf16.h" /* bf16 GEMM paths, CPUID dispatch, autocast */
#include "ops.h"     /* engine kernels */
#include "encoder.h" /* engine encoder stack; bert.h and optim.h are included by their users */
#include "clip.h" /* CLIP: patch embedding, cosine head */

#endif /* ISP_H */
