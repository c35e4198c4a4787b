/*
 * module.c -- the CPython/NumPy boundary: module init, shared argument checks, threads, build
 * information and the sgemm binding. Kernel families bind in py_<family>.c.
 */
#define ISP_MODULE_MAIN
#include "boundary.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

const char *isp_typename(int typenum)
{
    switch (typenum) {
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_FLOAT16: return "float16";
    case NPY_UINT8: return "uint8";
    case NPY_INT8: return "int8";
    case NPY_INT32: return "int32";
    case NPY_INT64: return "int64";
    case NPY_UINT32: return "uint32";
    case NPY_UINT64: return "uint64";
    case NPY_BOOL: return "bool";
    default: break;
    }
    PyArray_Descr *d = PyArray_DescrFromType(typenum);
    if (d == NULL) {
        PyErr_Clear();
        return "?";
    }
    const char *s = d->typeobj->tp_name;
    Py_DECREF(d);
    return s;
}

PyArrayObject *isp_arg_array(PyObject *obj, const char *name, int typenum, int ndim,
                             const npy_intp *shape, int flags)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a numpy.ndarray of dtype %s, got %s", name,
                     isp_typename(typenum), Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != typenum) {
        PyErr_Format(PyExc_TypeError, "%s: expected dtype %s, got %s", name,
                     isp_typename(typenum), isp_typename(PyArray_TYPE(a)));
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-D array, got %d-D", name, ndim,
                     PyArray_NDIM(a));
        return NULL;
    }
    if (shape != NULL) {
        for (int i = 0; i < ndim; i++) {
            if (shape[i] != ISP_ANY && PyArray_DIM(a, i) != shape[i]) {
                char want[256] = "(", got[256] = "(";
                for (int j = 0; j < ndim; j++) {
                    char buf[32];
                    if (shape[j] == ISP_ANY)
                        snprintf(buf, sizeof buf, "%s*", j ? ", " : "");
                    else
                        snprintf(buf, sizeof buf, "%s%lld", j ? ", " : "", (long long)shape[j]);
                    strncat(want, buf, sizeof want - strlen(want) - 2);
                    snprintf(buf, sizeof buf, "%s%lld", j ? ", " : "",
                             (long long)PyArray_DIM(a, j));
                    strncat(got, buf, sizeof got - strlen(got) - 2);
                }
                strcat(want, ")");
                strcat(got, ")");
                PyErr_Format(PyExc_ValueError, "%s: expected shape %s, got %s", name, want, got);
                return NULL;
            }
        }
    }
    if ((flags & ISP_ARR_CONTIG) && !PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expected a C-contiguous array (use numpy.ascontiguousarray)", name);
        return NULL;
    }
    if ((flags & ISP_ARR_ROWS) && PyArray_SIZE(a) > 0) {
        int isz = (int)PyArray_ITEMSIZE(a);
        if (PyArray_NDIM(a) != 2) {
            PyErr_Format(PyExc_ValueError, "%s: expected a 2-D array", name);
            return NULL;
        }
        if ((PyArray_DIM(a, 1) > 1 && PyArray_STRIDE(a, 1) != isz) ||
            (PyArray_DIM(a, 0) > 1 &&
             (PyArray_STRIDE(a, 0) < isz * (npy_intp)PyArray_DIM(a, 1) ||
              PyArray_STRIDE(a, 0) % isz != 0))) {
            PyErr_Format(PyExc_ValueError,
                         "%s: expected rows with unit element stride and a positive row stride "
                         "(a row-major matrix or a column slice of one), got strides (%lld, %lld)",
                         name, (long long)PyArray_STRIDE(a, 0), (long long)PyArray_STRIDE(a, 1));
            return NULL;
        }
    }
    if ((flags & ISP_ARR_WRITE) && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a writeable array", name);
        return NULL;
    }
    return a;
}

PyObject *isp_raise(isp_status status)
{
    const char *msg = isp_last_error();
    if (msg == NULL || msg[0] == '\0')
        msg = "instantsoup kernel failed";
    switch (status) {
    case ISP_ERR_NOMEM:
        PyErr_Format(PyExc_MemoryError, "%s", msg);
        break;
    case ISP_ERR_VALUE:
    case ISP_ERR_NONFINITE:
        PyErr_Format(PyExc_ValueError, "%s", msg);
        break;
    default:
        PyErr_Format(PyExc_RuntimeError, "internal error (please report): %s", msg);
    }
    isp_clear_error();
    return NULL;
}

int isp_conv_u64(PyObject *obj, void *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int in [0, 2**64), got %s", Py_TYPE(obj)->tp_name);
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_OverflowError, "expected an int in [0, 2**64)");
        return 0;
    }
    *(unsigned long long *)out = v;
    return 1;
}

/* Do the memory extents of a and b (non-negative strides) overlap? Conservative. */
int isp_overlaps(PyArrayObject *a, PyArrayObject *b)
{
    if (PyArray_SIZE(a) == 0 || PyArray_SIZE(b) == 0)
        return 0;
    char *a0 = PyArray_BYTES(a), *b0 = PyArray_BYTES(b);
    char *a1 = a0 + PyArray_ITEMSIZE(a), *b1 = b0 + PyArray_ITEMSIZE(b);
    for (int i = 0; i < PyArray_NDIM(a); i++)
        a1 += (PyArray_DIM(a, i) - 1) * PyArray_STRIDE(a, i);
    for (int i = 0; i < PyArray_NDIM(b); i++)
        b1 += (PyArray_DIM(b, i) - 1) * PyArray_STRIDE(b, i);
    return a0 < b1 && b0 < a1;
}

PyObject *isp_view_1d(PyObject *owner, void *data, int64_t n, int typenum)
{
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_SimpleNewFromData(1, dims, typenum, data);
    if (arr == NULL)
        return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, owner) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

PyObject *isp_buffer_views(PyObject *owner, float *params, float *grads, uint8_t *masks,
                           int64_t num_params, int64_t num_prunable)
{
    PyObject *p = isp_view_1d(owner, params, num_params, NPY_FLOAT32);
    PyObject *g = isp_view_1d(owner, grads, num_params, NPY_FLOAT32);
    PyObject *k = isp_view_1d(owner, masks, num_prunable, NPY_UINT8);
    if (p == NULL || g == NULL || k == NULL) {
        Py_XDECREF(p);
        Py_XDECREF(g);
        Py_XDECREF(k);
        return NULL;
    }
    return Py_BuildValue("(NNN)", p, g, k);
}

/* row stride of a 2-D float32 array, in elements */
static int64_t row_stride(PyArrayObject *a)
{
    if (PyArray_DIM(a, 0) <= 1 || PyArray_SIZE(a) == 0)
        return PyArray_DIM(a, 1) > 1 ? PyArray_DIM(a, 1) : 1;
    return PyArray_STRIDE(a, 0) / (npy_intp)sizeof(float);
}

/* The ISA path named `name` (must be available), or -1 with ValueError. */
static int isa_from_name(const char *name, const char *who)
{
    for (int i = 0; i < ISP_NUM_ISA; i++)
        if (strcmp(name, isp_isa_name((isp_isa)i)) == 0) {
            if (!isp_isa_available((isp_isa)i)) {
                PyErr_Format(PyExc_ValueError, "%s: ISA path '%s' is not available on this CPU",
                             who, name);
                return -1;
            }
            return i;
        }
    PyErr_Format(PyExc_ValueError,
                 "%s: unknown ISA path '%s' (expected fp32, avx2bf16, avx512bf16 or amx)", who,
                 name);
    return -1;
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
    if (bf16 != NULL && (isa = isa_from_name(bf16, "sgemm")) < 0)
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

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > 4096) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected 1 <= n <= 4096, got %ld", n);
        return NULL;
    }
    isp_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong(isp_get_num_threads());
}

static PyObject *py_build_info(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
#ifdef _OPENMP
    int omp_version = _OPENMP, omp_max = omp_get_max_threads();
#else
    int omp_version = 0, omp_max = 1;
#endif
#ifdef __VERSION__
    const char *compiler = "gcc-compatible " __VERSION__;
#else
    const char *compiler = "unknown";
#endif
#ifdef ISP_CFLAGS
    const char *cflags = ISP_CFLAGS;
#else
    const char *cflags = "";
#endif
    return Py_BuildValue("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:s,s:I}", "blas", blas_vendor(),
                         "blas_config", blas_config(), "blas_corename", blas_corename(),
                         "blas_num_threads", blas_get_num_threads(), "num_threads",
                         isp_get_num_threads(), "openmp", omp_version, "openmp_max_threads",
                         omp_max, "compiler", compiler, "cflags", cflags, "numpy_abi_version",
                         (unsigned int)NPY_ABI_VERSION);
}

static PyObject *py_isa_available(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *out = PyList_New(0);
    for (int i = 0; out != NULL && i < ISP_NUM_ISA; i++) {
        if (!isp_isa_available((isp_isa)i))
            continue;
        PyObject *n = PyUnicode_FromString(isp_isa_name((isp_isa)i));
        if (n == NULL || PyList_Append(out, n) < 0) {
            Py_XDECREF(n);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(n);
    }
    return out;
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL)
        return NULL;
    int isa = isa_from_name(name, "set_isa");
    if (isa < 0)
        return NULL;
    isp_status st = isp_isa_set((isp_isa)isa);
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_get_isa(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(isp_isa_name(isp_isa_get()));
}

static PyObject *py_set_autocast(PyObject *self, PyObject *arg)
{
    (void)self;
    long p = PyLong_AsLong(arg);
    if (p == -1 && PyErr_Occurred())
        return NULL;
    if (p != ISP_PREC_FP32 && p != ISP_PREC_BF16) {
        PyErr_Format(PyExc_ValueError, "set_autocast: expected 0 (fp32) or 1 (bf16), got %ld", p);
        return NULL;
    }
    isp_autocast_set((isp_precision)p);
    Py_RETURN_NONE;
}

static PyObject *py_get_autocast(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyLong_FromLong((long)isp_autocast_get());
}

PyMethodDef isp_core_methods[] = {
    {"isa_available", py_isa_available, METH_NOARGS,
     "The bf16 GEMM paths this CPU runs (names, always including 'fp32')."},
    {"set_isa", py_set_isa, METH_O, "Select the bf16 GEMM path by name (must be available)."},
    {"get_isa", py_get_isa, METH_NOARGS, "The selected bf16 GEMM path (the best one by default)."},
    {"set_autocast", py_set_autocast, METH_O,
     "This thread's precision of engine matrix products: 0 fp32, 1 bf16 operands."},
    {"get_autocast", py_get_autocast, METH_NOARGS, "This thread's autocast precision (0 or 1)."},
    {"sgemm", (PyCFunction)(void (*)(void))py_sgemm, METH_VARARGS | METH_KEYWORDS, sgemm_doc},
    {"set_num_threads", py_set_num_threads, METH_O, "Set our OpenMP and OpenBLAS thread count."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "The thread count in use."},
    {"build_info", py_build_info, METH_NOARGS, "BLAS, OpenMP and compiler facts (a dict)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef isp_module = {
    PyModuleDef_HEAD_INIT, "instantsoup._C",
    "instantsoup's C kernels (CPython + NumPy C API, OpenBLAS, OpenMP).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

/* Families register their tables in families.inc; each py_<family>.c defines one. */
#define ISP_FAMILY(name) extern PyMethodDef isp_##name##_methods[];
#include "families.inc"
#undef ISP_FAMILY
#define ISP_FAMILY(name) isp_##name##_methods,
static PyMethodDef *const isp_method_tables[] = {
    isp_core_methods,
#include "families.inc"
};
#undef ISP_FAMILY

PyMODINIT_FUNC PyInit__C(void)
{
    import_array();
    PyObject *m = PyModule_Create(&isp_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof isp_method_tables / sizeof isp_method_tables[0]; i++) {
        if (PyModule_AddFunctions(m, isp_method_tables[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
