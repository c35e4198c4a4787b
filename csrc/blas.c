/* blas.c -- the sgemm wrapper: row-major helpers over OpenBLAS cblas_sgemm. */
#include <limits.h>
#include <string.h>

#include "isp.h"

#if defined(ISP_BLAS_SCIPY_OPENBLAS)
#include <cblas.h> /* scipy-openblas32 ships a cblas.h whose symbols carry the scipy_ prefix */
#define ISP_CBLAS_SGEMM scipy_cblas_sgemm
#define ISP_OB_SET_THREADS scipy_openblas_set_num_threads
#define ISP_OB_GET_THREADS scipy_openblas_get_num_threads
#define ISP_OB_CONFIG scipy_openblas_get_config
#define ISP_OB_CORENAME scipy_openblas_get_corename
#define ISP_BLAS_VENDOR "scipy-openblas32"
#else
#include <cblas.h>
#define ISP_CBLAS_SGEMM cblas_sgemm
#define ISP_OB_SET_THREADS openblas_set_num_threads
#define ISP_OB_GET_THREADS openblas_get_num_threads
#define ISP_OB_CONFIG openblas_get_config
#define ISP_OB_CORENAME openblas_get_corename
#define ISP_BLAS_VENDOR "system openblas"
#endif

void blas_sgemm_rm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        /* op(A) @ op(B) is all zeros: C = beta * C */
        for (int i = 0; i < M; i++) {
            float *c = C + (int64_t)i * ldc;
            if (beta == 0.0f)
                memset(c, 0, sizeof(float) * (size_t)N);
            else
                for (int j = 0; j < N; j++)
                    c[j] *= beta;
        }
        return;
    }
    ISP_CBLAS_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc);
}

isp_status blas_check_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                           int64_t lda, int64_t ldb, int64_t ldc)
{
    if (M < 0 || N < 0 || K < 0)
        return isp_fail(ISP_ERR_VALUE, "sgemm: negative size M=%lld N=%lld K=%lld", (long long)M,
                        (long long)N, (long long)K);
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return isp_fail(ISP_ERR_VALUE, "sgemm: size over the 32-bit BLAS limit (%d)", INT_MAX);
    int64_t acols = trans_a ? M : K, bcols = trans_b ? K : N;
    if (lda < (acols > 1 ? acols : 1))
        return isp_fail(ISP_ERR_VALUE, "sgemm: lda=%lld but A has %lld columns", (long long)lda,
                        (long long)acols);
    if (ldb < (bcols > 1 ? bcols : 1))
        return isp_fail(ISP_ERR_VALUE, "sgemm: ldb=%lld but B has %lld columns", (long long)ldb,
                        (long long)bcols);
    if (ldc < (N > 1 ? N : 1))
        return isp_fail(ISP_ERR_VALUE, "sgemm: ldc=%lld but C has %lld columns", (long long)ldc,
                        (long long)N);
    return ISP_OK;
}

isp_status blas_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                      int64_t ldc)
{
    isp_status st = blas_check_gemm(trans_a, trans_b, M, N, K, lda, ldb, ldc);
    if (st != ISP_OK)
        return st;
    blas_sgemm_rm(trans_a, trans_b, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta,
                  C, (int)ldc);
    return ISP_OK;
}

void blas_set_num_threads(int n)
{
    ISP_OB_SET_THREADS(n);
}

int blas_get_num_threads(void)
{
    return ISP_OB_GET_THREADS();
}

const char *blas_config(void)
{
    return ISP_OB_CONFIG();
}

const char *blas_corename(void)
{
    return ISP_OB_CORENAME();
}

const char *blas_vendor(void)
{
    return ISP_BLAS_VENDOR;
}
