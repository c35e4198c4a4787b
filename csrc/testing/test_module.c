/*
 * test_module.c -- instantsoup._C_test: bindings of single kernels for the NumPy-oracle tests and
 * the sanitizer job (sgemm, also on each bf16 GEMM path, here; encoder ops in test_ops.c; CLIP
 * kernels in test_clip.c; vote histograms in test_prune.c). Never imported at run time.
 */
#define ISP_MODULE_MAIN
#include "boundary.h"

#include <string.h>
#include <time.h>

#include "blas.h"
#include "gemm_bf16.h"

/* row stride of a 2-D float32 array, in elements */
static int64_t row_stride(PyArrayObject *a)
{
    if (PyArray_DIM(a, 0) <= 1 || PyArray_SIZE(a) == 0)
        return PyArray_DIM(a, 1) > 1 ? PyArray_DIM(a, 1) : 1;
    return PyArray_STRIDE(a, 0) / (npy_intp)sizeof(float);
}

PyDoc_STRVAR(sgemm_doc,
             "sgemm(a, b, c, trans_a=False, trans_b=False, alpha=1.0, beta=0.0)\n--\n\n"
             "c = alpha * op(a) @ op(b) + beta * c in place, row-major float32 (OpenBLAS).\n"
             "a is (M,K) or (K,M) if trans_a; b is (K,N) or (N,K) if trans_b; c is (M,N).\n"
             "Rows may be strided (column slices) but each row must be contiguous.\n"
             "bf16=PATH ('fp32', 'avx2bf16', 'avx512bf16', 'amx') computes the product with\n"
             "bf16-rounded operands and fp32 accumulation on that path (it must be available).");

static PyObject *py_sgemm(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"a", "b", "c", "trans_a", "trans_b", "alpha", "beta", "bf16", NULL};
    PyObject *ao, *bo, *co;
    int ta = 0, tb = 0;
    float alpha = 1.0f, beta = 0.0f;
    const char *bf16 = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|ppffz:sgemm", kwlist, &ao, &bo, &co, &ta, &tb,
                                     &alpha, &beta, &bf16))
        return NULL;
    int isa = -1;
    if (bf16 != NULL && (isa = isp_isa_from_name(bf16, "sgemm")) < 0)
        return NULL;
    PyArrayObject *a = isp_arg_array(ao, "a", NPY_FLOAT32, 2, NULL, ISP_ARR_ROWS);
    if (!a)
        return NULL;
    PyArrayObject *b = isp_arg_array(bo, "b", NPY_FLOAT32, 2, NULL, ISP_ARR_ROWS);
    if (!b)
        return NULL;
    PyArrayObject *c = isp_arg_array(co, "c", NPY_FLOAT32, 2, NULL, ISP_ARR_ROWS | ISP_ARR_WRITE);
    if (!c)
        return NULL;
    int64_t M = ta ? PyArray_DIM(a, 1) : PyArray_DIM(a, 0);
    int64_t K = ta ? PyArray_DIM(a, 0) : PyArray_DIM(a, 1);
    int64_t Kb = tb ? PyArray_DIM(b, 1) : PyArray_DIM(b, 0);
    int64_t N = tb ? PyArray_DIM(b, 0) : PyArray_DIM(b, 1);
    if (K != Kb) {
        PyErr_Format(PyExc_ValueError,
                     "sgemm: inner dimensions differ: op(a) is (%lld, %lld) but op(b) is (%lld, %lld)",
                     (long long)M, (long long)K, (long long)Kb, (long long)N);
        return NULL;
    }
    if (PyArray_DIM(c, 0) != M || PyArray_DIM(c, 1) != N) {
        PyErr_Format(PyExc_ValueError, "sgemm: c: expected shape (%lld, %lld), got (%lld, %lld)",
                     (long long)M, (long long)N, (long long)PyArray_DIM(c, 0),
                     (long long)PyArray_DIM(c, 1));
        return NULL;
    }
    if (isp_overlaps(c, a) || isp_overlaps(c, b)) {
        PyErr_SetString(PyExc_ValueError, "sgemm: c must not share memory with a or b");
        return NULL;
    }
    isp_status st;
    const float *ap = PyArray_DATA(a), *bp = PyArray_DATA(b);
    float *cp = PyArray_DATA(c);
    int64_t lda = row_stride(a), ldb = row_stride(b), ldc = row_stride(c);
    Py_BEGIN_ALLOW_THREADS;
    st = blas_check_gemm(ta, tb, M, N, K, lda, ldb, ldc);
    if (st == ISP_OK && isa < 0)
        blas_sgemm_rm(ta, tb, (int)M, (int)N, (int)K, alpha, ap, (int)lda, bp, (int)ldb, beta, cp,
                      (int)ldc);
    else if (st == ISP_OK)
        gemm_bf16((isp_isa)isa, ta, tb, (int)M, (int)N, (int)K, alpha, ap, (int)lda, bp, (int)ldb,
                  beta, cp, (int)ldc);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}


PyDoc_STRVAR(bf16_peak_doc,
             "bf16_peak(path, iters) -> (flops, seconds)\n--\n\n"
             "The bf16 path's multiply-add instruction alone (no memory traffic), iters steps on\n"
             "this thread: tdpbf16ps (amx), vdpbf16ps (avx512bf16), fp32 FMA (avx2bf16).");

static PyObject *py_bf16_peak(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    long long iters;
    if (!PyArg_ParseTuple(args, "sL:bf16_peak", &name, &iters))
        return NULL;
    int isa = isp_isa_from_name(name, "bf16_peak");
    if (isa < 0)
        return NULL;
    if (isa == ISP_ISA_FP32 || !isp_isa_available((isp_isa)isa)) {
        PyErr_Format(PyExc_ValueError, "bf16_peak: path '%s' has no instruction of its own here", name);
        return NULL;
    }
    if (iters < 1) {
        PyErr_SetString(PyExc_ValueError, "bf16_peak: iters must be >= 1");
        return NULL;
    }
    double flops;
    struct timespec t0, t1;
    Py_BEGIN_ALLOW_THREADS;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    flops = gemm_bf16_peak((isp_isa)isa, (int64_t)iters);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(dd)", flops, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
}

static PyMethodDef test_core_methods[] = {
    {"sgemm", (PyCFunction)(void (*)(void))py_sgemm, METH_VARARGS | METH_KEYWORDS, sgemm_doc},
    {"bf16_peak", (PyCFunction)py_bf16_peak, METH_VARARGS, bf16_peak_doc},
    {NULL, NULL, 0, NULL},
};

extern PyMethodDef isp_test_ops_methods[], isp_test_clip_methods[], isp_test_prune_methods[];

static PyMethodDef *const test_tables[] = {test_core_methods, isp_test_ops_methods,
                                           isp_test_clip_methods, isp_test_prune_methods};

static struct PyModuleDef test_module = {
    PyModuleDef_HEAD_INIT, "instantsoup._C_test",
    "Test-only bindings of instantsoup's single kernels (NumPy-oracle tests, sanitizer job).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C_test(void)
{
    import_array();
    PyObject *m = PyModule_Create(&test_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof test_tables / sizeof test_tables[0]; i++) {
        if (PyModule_AddFunctions(m, test_tables[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
