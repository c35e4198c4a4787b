/*
 * boundary.c -- shared helpers of the CPython/NumPy boundary (boundary.h): argument checks,
 * status -> exception, views of C buffers. Compiled into both extensions (_C and _C_test).
 */
#include "boundary.h"

#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"

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

int isp_parse_act(PyObject *o, isp_act *act)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return 0;
    if (v < ACT_GELU || v > ACT_QUICK_GELU) {
        PyErr_Format(PyExc_ValueError, "unknown activation code %ld", v);
        return 0;
    }
    *act = (isp_act)v;
    return 1;
}

int isp_isa_from_name(const char *name, const char *who)
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

/* ceil(P / 8) without the overflow of (P + 7) / 8 near INT64_MAX */
int64_t isp_packed_bytes(int64_t P)
{
    return P / 8 + (P % 8 != 0);
}

void isp_arr_list_free(isp_arr_list *L)
{
    Py_XDECREF(L->tup);
    free(L->ptr);
    free(L->n);
    memset(L, 0, sizeof *L);
}

/*
 * Parse a sequence of C-contiguous arrays of dtype typenum. With sizes != NULL, array t must have
 * sizes[t] elements (count must be nsizes); with len >= 0 every array must be 1-D of length len.
 */
int isp_arr_list_parse(PyObject *obj, const char *name, int typenum, const int64_t *sizes,
                          int nsizes, int64_t len, isp_arr_list *L)
{
    memset(L, 0, sizeof *L);
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a list of numpy arrays, got %s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    L->tup = PySequence_Tuple(obj);
    if (L->tup == NULL)
        return -1;
    Py_ssize_t cnt = PyTuple_GET_SIZE(L->tup);
    if (cnt > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many arrays", name);
        goto fail;
    }
    L->count = (int)cnt;
    if (sizes != NULL && L->count != nsizes) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d arrays, got %d", name, nsizes, L->count);
        goto fail;
    }
    L->ptr = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(void *));
    L->n = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(int64_t));
    if (L->ptr == NULL || L->n == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < cnt; i++) {
        char item[96];
        snprintf(item, sizeof item, "%s[%zd]", name, i);
        PyArrayObject *a = isp_arg_array(PyTuple_GET_ITEM(L->tup, i), item, typenum,
                                         len >= 0 ? 1 : -1, NULL, ISP_ARR_CONTIG);
        if (a == NULL)
            goto fail;
        L->ptr[i] = PyArray_DATA(a);
        L->n[i] = (int64_t)PyArray_SIZE(a);
        if (sizes != NULL && L->n[i] != sizes[i]) {
            PyErr_Format(PyExc_ValueError, "%s: expected %lld elements, got %lld", item,
                         (long long)sizes[i], (long long)L->n[i]);
            goto fail;
        }
        if (len >= 0 && L->n[i] != len) {
            PyErr_Format(PyExc_ValueError, "%s: expected length %lld, got %lld", item,
                         (long long)len, (long long)L->n[i]);
            goto fail;
        }
    }
    return 0;
fail:
    isp_arr_list_free(L);
    return -1;
}
