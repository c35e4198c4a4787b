/*
 * module.c -- the runtime extension instantsoup._C: module init (the one exported symbol),
 * threads, build information, the bf16 GEMM path and the thread's autocast switch. Shared argument checks live in boundary.c; kernel families
 * bind in py_<family>.c; test-only bindings are in csrc/testing (instantsoup._C_test).
 */
#define ISP_MODULE_MAIN
#include "boundary.h"

#include "blas.h"
#include "gemm_bf16.h"
#include "profile.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

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
    isp_set_num_threads((int)n); /* our OpenMP loops */
    blas_set_num_threads((int)n); /* and OpenBLAS */
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
    return Py_BuildValue("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:s,s:I,s:s}", "blas", blas_vendor(),
                         "blas_config", blas_config(), "blas_corename", blas_corename(),
                         "blas_num_threads", blas_get_num_threads(), "num_threads",
                         isp_get_num_threads(), "openmp", omp_version, "openmp_max_threads",
                         omp_max, "compiler", compiler, "cflags", cflags, "numpy_abi_version",
                         (unsigned int)NPY_ABI_VERSION, "simd", ops_simd_name());
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
    int isa = isp_isa_from_name(name, "set_isa");
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

static PyObject *py_set_profile(PyObject *self, PyObject *arg)
{
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    isp_prof_set(on);
    Py_RETURN_NONE;
}

static PyObject *py_get_profile(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    double wall, cpu;
    int64_t calls;
    const char *name;
    for (int i = 0; (name = isp_prof_read(i, &wall, &cpu, &calls)) != NULL; i++) {
        PyObject *v = Py_BuildValue("(ddL)", wall, cpu, (long long)calls);
        if (v == NULL || PyDict_SetItemString(out, name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
    }
    return out;
}

PyMethodDef isp_core_methods[] = {
    {"set_profile", py_set_profile, METH_O,
     "Turn the per-site step profile on (zeroing it: True) or off (keeping it: False)."},
    {"get_profile", py_get_profile, METH_NOARGS,
     "The step profile: {site: (wall s, process CPU s, calls)} since set_profile(True)."},
    {"isa_available", py_isa_available, METH_NOARGS,
     "The bf16 GEMM paths this CPU runs (names, always including 'fp32')."},
    {"set_isa", py_set_isa, METH_O, "Select the bf16 GEMM path by name (must be available)."},
    {"get_isa", py_get_isa, METH_NOARGS, "The selected bf16 GEMM path (the best one by default)."},
    {"set_autocast", py_set_autocast, METH_O,
     "This thread's precision of engine matrix products: 0 fp32, 1 bf16 operands."},
    {"get_autocast", py_get_autocast, METH_NOARGS, "This thread's autocast precision (0 or 1)."},
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
