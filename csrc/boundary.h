/*
 * boundary.h -- shared helpers for the CPython/NumPy boundary (module.c and py_*.c).
 *
 * Every binding follows the same shape (after pydata/bottleneck):
 *   parse arguments -> validate dtype, contiguity, shapes, ranges (isp_arg_array & co)
 *   -> Py_BEGIN_ALLOW_THREADS -> kernel -> Py_END_ALLOW_THREADS
 *   -> isp_raise(status) on failure -> one error: label that releases references.
 * Each py_<family>.c exports a PyMethodDef table that module.c adds to the module.
 */
#ifndef ISP_BOUNDARY_H
#define ISP_BOUNDARY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL instantsoup_ARRAY_API
#ifndef ISP_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "isp.h"
#include "ops.h" /* isp_act */

/* Flags for isp_arg_array */
#define ISP_ARR_CONTIG 0x1 /* C-contiguous */
#define ISP_ARR_ROWS 0x2   /* 2-D with unit stride along the last axis; rows may be strided */
#define ISP_ARR_WRITE 0x4  /* writeable */
#define ISP_ANY (-1)        /* wildcard in a shape */

/*
 * Check that obj is an ndarray of the given dtype (exactly; no silent casting), ndim and shape
 * (entries ISP_ANY match anything; shape may be NULL), with the layout flags above.
 * Returns a borrowed PyArrayObject* or NULL with TypeError/ValueError naming `name`.
 */
PyArrayObject *isp_arg_array(PyObject *obj, const char *name, int typenum, int ndim,
                             const npy_intp *shape, int flags);

/* Turn a non-OK status (and isp_last_error()) into a Python exception; returns NULL. */
PyObject *isp_raise(isp_status status);

/* Do two arrays' memory extents overlap (conservative; for output-aliasing checks)? */
int isp_overlaps(PyArrayObject *a, PyArrayObject *b);

/* PyArg "O&" converter: a Python int in [0, 2^64) -> unsigned long long (no silent wrapping of
   negative or huge values, unlike "K"); raises OverflowError / TypeError. */
int isp_conv_u64(PyObject *obj, void *out);

/* A 1-D NumPy view of n elements of typenum at data that keeps `owner` alive (new reference). */
PyObject *isp_view_1d(PyObject *owner, void *data, int64_t n, int typenum);

/*
 * The (params, grads, masks) NumPy views of a model handle's C buffers: 1-D float32 views of
 * num_params elements and a uint8 view of num_prunable, each keeping `owner` (the handle's
 * capsule) alive. Returns a new 3-tuple or NULL with an exception set.
 */
PyObject *isp_buffer_views(PyObject *owner, float *params, float *grads, uint8_t *masks,
                           int64_t num_params, int64_t num_prunable);

/* ---- the one model handle (py_model.c): a capsule over any family's model (model.h) ---- */
#include "model.h"

typedef struct {
    model_core *m; /* the family's model struct (model_core first), malloc'd */
    int busy;      /* a call with the GIL released is using the buffers */
} isp_model_handle;

/* A new capsule owning m (freed with m->fam->free and free); on failure m is freed too. */
PyObject *isp_model_capsule(model_core *m);
/* The handle of a capsule; fam != NULL: it must be a model of that family; use: refuse a busy
   model (RuntimeError). NULL with an exception set otherwise. */
isp_model_handle *isp_model_get(PyObject *cap, const model_family *fam, int use);

typedef struct {
    float *m, *v;
    const int64_t *seg;
    const uint8_t *decay;
    int S;
    adamw_hparams hp;
} isp_adamw_args;

/* AdamW's arguments for a model: moments (num_params) float32, segments/decay flags, checked
   hyperparameters. */
int isp_parse_adamw(const model_core *m, PyObject *mo, PyObject *vo, PyObject *sego,
                    PyObject *deco, double lr, double b1, double b2, double eps, double wd,
                    long long step, double max_norm, isp_adamw_args *o);
int isp_check_smoothing(float s);

/* ceil(P / 8) without the overflow of (P + 7) / 8 near INT64_MAX: bytes of a packed mask */
int64_t isp_packed_bytes(int64_t P);

/* A validated list of arrays: a tuple holding the references and the data pointers. */
typedef struct {
    PyObject *tup;
    void **ptr;
    int64_t *n;
    int count;
} isp_arr_list;

void isp_arr_list_free(isp_arr_list *L);
/*
 * Parse a sequence of C-contiguous arrays of dtype typenum. With sizes != NULL, array t must have
 * sizes[t] elements (count must be nsizes); with len >= 0 every array must be 1-D of length len.
 */
int isp_arr_list_parse(PyObject *obj, const char *name, int typenum, const int64_t *sizes,
                       int nsizes, int64_t len, isp_arr_list *L);

/* An activation code (csrc/ops.h isp_act) from a Python int; 0 with ValueError if unknown. */
int isp_parse_act(PyObject *o, isp_act *act);

/* The bf16 GEMM path (csrc/gemm_bf16.h isp_isa) named `name`; it must be available on this CPU.
   -1 with ValueError naming `who` otherwise. */
int isp_isa_from_name(const char *name, const char *who);

/* dtype name for messages */
const char *isp_typename(int typenum);

/* Method tables of the kernel families, added to the module in module.c. */
extern PyMethodDef isp_core_methods[];

#endif /* ISP_BOUNDARY_H */
