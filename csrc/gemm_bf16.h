/*
 * gemm_bf16.h -- mixed precision: bf16 matrix products with fp32 accumulation, dispatched at run
 * time by CPUID, and the thread-local precision switch (torch autocast semantics) that makes the
 * engine's matrix products use them.
 *
 * Semantics of every path: each operand element is rounded to bfloat16 (round to nearest even;
 * NaN stays NaN), products of two bf16 values are exact in fp32, and the sums are fp32. The paths
 * differ only in the order of the fp32 additions:
 *   ISP_ISA_FP32        rounded fp32 copies of the operand blocks through OpenBLAS sgemm (any CPU)
 *   ISP_ISA_AVX2BF16    own packed kernel: bf16 panels widened to fp32, AVX2 FMA (6x16 tiles)
 *   ISP_ISA_AVX512BF16  own packed kernel: vdpbf16ps on k-pairs (8x32 tiles)
 *   ISP_ISA_AMX         own packed kernel: tdpbf16ps on 16x16 tiles (32x32 blocks), Linux asks the
 *                       kernel for the tile state once per process (arch_prctl)
 * The default is the best path the CPU has; INSTANTSOUP_ISA (read by the Python layer) or
 * isp_isa_set forces one, and forcing a path the CPU lacks is an error, never SIGILL.
 */
#ifndef ISP_GEMM_BF16_H
#define ISP_GEMM_BF16_H

#include <stdint.h>

#include "isp.h"

typedef enum {
    ISP_ISA_FP32 = 0,
    ISP_ISA_AVX2BF16 = 1,
    ISP_ISA_AVX512BF16 = 2,
    ISP_ISA_AMX = 3,
} isp_isa;
#define ISP_NUM_ISA 4

typedef enum {
    ISP_PREC_FP32 = 0,
    ISP_PREC_BF16 = 1,
} isp_precision;

const char *isp_isa_name(isp_isa isa);
/* 1 if this CPU (and OS) can run the path; for AMX this also asks Linux for the tile state. */
int isp_isa_available(isp_isa isa);
/* The best available path (AMX > AVX512-BF16 > AVX2 > fp32). */
isp_isa isp_isa_best(void);
/* Select the path used by bf16 products in this process; ISP_ERR_VALUE if unavailable. */
isp_status isp_isa_set(isp_isa isa);
isp_isa isp_isa_get(void);

/* The precision of this thread's engine matrix products (like torch.autocast, thread-local). */
void isp_autocast_set(isp_precision p);
isp_precision isp_autocast_get(void);

/* bfloat16 rounding of one value (round to nearest even), returned as fp32 / as its 16 bits. */
float bf16_round(float x);
uint16_t bf16_bits(float x);

/*
 * C (M,N) = alpha op(A) op(B) + beta C, operands rounded to bf16, fp32 accumulation, row-major
 * like blas_sgemm_rm; single-threaded, on the given path (must be available). beta == 0
 * overwrites C. Falls back to an unpacked loop (same semantics) if scratch cannot be allocated.
 */
void gemm_bf16(isp_isa isa, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/*
 * The path's multiply-add instruction alone, on register / tile-resident operands (no memory):
 * iters steps of tdpbf16ps on 4 tiles (amx), vdpbf16ps on 16 zmm (avx512bf16) or fp32 FMA on 12
 * ymm (avx2bf16, the fp32 FMA peak). Returns the floating-point operations done (0 for the fp32
 * path, which is OpenBLAS's). The path must be available. For benchmarks/matrix_peak.py.
 */
double gemm_bf16_peak(isp_isa isa, int64_t iters);

#endif /* ISP_GEMM_BF16_H */
