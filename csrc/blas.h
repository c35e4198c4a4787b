/*
 * blas.h -- the sgemm wrapper (row-major) over OpenBLAS's cblas.
 *
 * Built against the scipy-openblas32 wheel (symbols prefixed "scipy_") by default, or against a
 * system OpenBLAS (ISP_BLAS_SYSTEM). Only blas.c touches cblas directly.
 */
#ifndef ISP_BLAS_H
#define ISP_BLAS_H

#include <stdint.h>

#include "isp.h"

/*
 * C = alpha * op(A) @ op(B) + beta * C, all row-major.
 *   op(A) is (M,K): A is (M,K) with row stride lda, or (K,M) if trans_a.
 *   op(B) is (K,N): B is (K,N) with row stride ldb, or (N,K) if trans_b.
 *   C is (M,N) with row stride ldc. With beta == 0, C is overwritten (NaNs in C do not propagate).
 * Returns ISP_ERR_VALUE for a leading dimension too small or a size over the 32-bit BLAS limit.
 */
isp_status blas_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                      int64_t ldc);

/* The checks of blas_sgemm alone (sizes, leading dimensions, the 32-bit limit). */
isp_status blas_check_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                           int64_t lda, int64_t ldb, int64_t ldc);

/* Unchecked fast path for kernels that already know their shapes are valid. */
void blas_sgemm_rm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc);

void blas_set_num_threads(int n);
int blas_get_num_threads(void);
const char *blas_config(void);   /* OpenBLAS build configuration string */
const char *blas_corename(void); /* the CPU kernel OpenBLAS picked at run time */
const char *blas_vendor(void);   /* "scipy-openblas32" or "system openblas" */

#endif /* ISP_BLAS_H */
