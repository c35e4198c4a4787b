/*
 * py_prune.c -- bindings of the pruning family (prune.c, soup.c): selection, masks, merges, soups.
 * Masks cross the boundary as flat 1-D uint8 arrays over all P prunable weights (or bit-packed,
 * ceil(P/8) bytes); weights and scores as a list of float32 C-contiguous arrays, one per tensor,
 * never concatenated.
 */
#include "boundary.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "maskbits.h"
#include "prune.h"
#include "soup.h"

/* A sequence of non-negative ints -> malloc'd int64 array; returns count or -1. */
static int parse_sizes(PyObject *obj, int64_t **out, int64_t *total)
{
    *out = NULL;
    PyObject *seq = PySequence_Fast(obj, "sizes: expected a sequence of ints");
    if (seq == NULL)
        return -1;
    Py_ssize_t cnt = PySequence_Fast_GET_SIZE(seq);
    if (cnt > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "sizes: too many tensors");
        Py_DECREF(seq);
        return -1;
    }
    int64_t *n = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(int64_t));
    if (n == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    *total = 0;
    for (Py_ssize_t i = 0; i < cnt; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            free(n);
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "sizes[%zd]: expected >= 0, got %lld", i, v);
            free(n);
            Py_DECREF(seq);
            return -1;
        }
        if (v > INT64_MAX - *total) {
            PyErr_Format(PyExc_ValueError, "sizes: the total overflows int64 at sizes[%zd]", i);
            free(n);
            Py_DECREF(seq);
            return -1;
        }
        n[i] = v;
        *total += v;
    }
    Py_DECREF(seq);
    *out = n;
    return (int)cnt;
}

static int parse_kind(const char *s, sel_kind *kind)
{
    if (strcmp(s, "abs") == 0)
        *kind = SEL_ABS;
    else if (strcmp(s, "score") == 0)
        *kind = SEL_SCORE;
    else if (strcmp(s, "random") == 0)
        *kind = SEL_RANDOM;
    else if (strcmp(s, "none") == 0)
        *kind = SEL_NONE;
    else {
        PyErr_Format(PyExc_ValueError,
                     "kind: expected 'abs', 'score', 'random' or 'none', got '%s'", s);
        return -1;
    }
    return 0;
}

static PyArrayObject *mask_arg(PyObject *obj, const char *name, int64_t len, int write)
{
    npy_intp shape[1] = {(npy_intp)len};
    return isp_arg_array(obj, name, NPY_UINT8, 1, len >= 0 ? shape : NULL,
                         ISP_ARR_CONTIG | (write ? ISP_ARR_WRITE : 0));
}

static int out_overlaps_list(PyArrayObject *out, isp_arr_list *L, int allow_first_equal)
{
    for (int k = 0; k < L->count; k++) {
        PyArrayObject *a = (PyArrayObject *)PyTuple_GET_ITEM(L->tup, k);
        if (k == 0 && allow_first_equal && PyArray_DATA(a) == PyArray_DATA(out) &&
            PyArray_NBYTES(a) == PyArray_NBYTES(out))
            continue;
        if (isp_overlaps(out, a)) {
            PyErr_Format(PyExc_ValueError, "out must not share memory with input %d", k);
            return 1;
        }
    }
    return 0;
}

/* P, the number of weights a mask covers, as passed from Python: 0 on success (P >= 0). */
static int check_P(long long P)
{
    if (P < 0) {
        PyErr_SetString(PyExc_ValueError, "P: expected >= 0");
        return -1;
    }
    return 0;
}

/*
 * masks: a list of 1 to max_count uint8 arrays of len bytes each, none sharing memory with out
 * (the first may be out itself where first_may_be_out). On failure the caller frees ms.
 */
static int parse_masks(PyObject *masko, PyArrayObject *out, int64_t len, int max_count,
                       int first_may_be_out, isp_arr_list *ms)
{
    if (isp_arr_list_parse(masko, "masks", NPY_UINT8, NULL, 0, len, ms) < 0)
        return -1;
    if (ms->count < 1 && max_count == INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "masks: the list of masks is empty");
        return -1;
    }
    if (ms->count < 1 || ms->count > max_count) {
        PyErr_Format(PyExc_ValueError, "masks: expected 1 to %d masks, got %d", max_count, ms->count);
        return -1;
    }
    return out_overlaps_list(out, ms, first_may_be_out) ? -1 : 0;
}

/*
 * xs, the tensors whose values are the keys of kind 'abs' and 'score' (what: the argument that
 * named the kind); left empty for the kinds that read none. On failure the caller frees xs.
 */
static int parse_keys(PyObject *xso, sel_kind kind, const char *what, const int64_t *n, int T,
                      isp_arr_list *xs)
{
    if (kind != SEL_ABS && kind != SEL_SCORE)
        return 0;
    if (xso == Py_None) {
        PyErr_Format(PyExc_ValueError, "xs: %s 'abs' and 'score' need the tensors", what);
        return -1;
    }
    return isp_arr_list_parse(xso, "xs", NPY_FLOAT32, n, T, -1, xs) < 0 ? -1 : 0;
}

PyDoc_STRVAR(mask_select_doc,
             "mask_select(out, sizes, n_keep, kind, xs=None, cur=None, seed=0, gather=True)\n--\n\n"
             "Write into out (P,) uint8 the mask keeping exactly n_keep weights of the tensors of\n"
             "sizes (T,): the largest keys among candidates (cur == 1, or all if cur is None);\n"
             "ties: the smaller global position is masked first. kind: 'abs' (|xs|), 'score' (xs),\n"
             "'random' (hash of seed and position), 'none'. xs: list of T float32 C-contiguous\n"
             "arrays, never concatenated. out may be cur (in place). gather=False forces the\n"
             "two-histogram path for the deciding bin (for tests; same result).");

static PyObject *py_mask_select(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"out", "sizes", "n_keep", "kind", "xs", "cur", "seed", "gather", NULL};
    PyObject *outo, *sizeso, *xso = Py_None, *curo = Py_None;
    long long n_keep;
    const char *kinds;
    unsigned long long seed = 0;
    int gather = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLs|OOKp:mask_select", kwlist, &outo, &sizeso,
                                     &n_keep, &kinds, &xso, &curo, &seed, &gather))
        return NULL;
    sel_kind kind;
    if (parse_kind(kinds, &kind) < 0)
        return NULL;
    int64_t *n = NULL, P = 0;
    isp_arr_list xs = {0};
    PyObject *ret = NULL;
    int T = parse_sizes(sizeso, &n, &P);
    if (T < 0)
        return NULL;
    PyArrayObject *out = mask_arg(outo, "out", P, 1);
    if (out == NULL)
        goto error;
    const uint8_t *cur = NULL;
    if (curo != Py_None) {
        PyArrayObject *c = mask_arg(curo, "cur", P, 0);
        if (c == NULL)
            goto error;
        if (isp_overlaps(out, c) && PyArray_DATA(c) != PyArray_DATA(out)) {
            PyErr_SetString(PyExc_ValueError, "out must be cur itself or not share memory with it");
            goto error;
        }
        cur = PyArray_DATA(c);
    }
    if (parse_keys(xso, kind, "kind", n, T, &xs) < 0)
        goto error;
    sel_source src = {.kind = kind, .x = (const float *const *)xs.ptr, .cur = cur, .seed = seed,
                      .vm = NULL, .K = 0, .packed = 0, .vstar = 0, .no_gather = !gather};
    uint8_t *op = PyArray_DATA(out);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_select(op, &src, n, T, (int64_t)n_keep);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = Py_NewRef(Py_None);
error:
    isp_arr_list_free(&xs);
    free(n);
    return ret;
}

PyDoc_STRVAR(mask_vote_select_doc,
             "mask_vote_select(out, masks, packed, sizes, n_keep, tie='none', xs=None)\n--\n\n"
             "out (P,) keeps exactly n_keep weights, those kept by the most of the K masks\n"
             "(each (P,) or packed (ceil(P/8),)); ties by the key of tie ('abs', 'score', 'none')\n"
             "over xs, then by position. A weight no mask keeps is never kept.");

static PyObject *py_mask_vote_select(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"out", "masks", "packed", "sizes", "n_keep", "tie", "xs", NULL};
    PyObject *outo, *masko, *sizeso, *xso = Py_None;
    int packed;
    long long n_keep;
    const char *ties = "none";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOpOL|sO:mask_vote_select", kwlist, &outo,
                                     &masko, &packed, &sizeso, &n_keep, &ties, &xso))
        return NULL;
    sel_kind kind;
    if (parse_kind(ties, &kind) < 0)
        return NULL;
    if (kind == SEL_RANDOM) {
        PyErr_SetString(PyExc_ValueError, "tie: expected 'abs', 'score' or 'none'");
        return NULL;
    }
    int64_t *n = NULL, P = 0;
    isp_arr_list xs = {0}, ms = {0};
    PyObject *ret = NULL;
    int T = parse_sizes(sizeso, &n, &P);
    if (T < 0)
        return NULL;
    PyArrayObject *out = mask_arg(outo, "out", P, 1);
    if (out == NULL)
        goto error;
    if (parse_masks(masko, out, packed ? isp_packed_bytes(P) : P, 255, 0, &ms) < 0 ||
        parse_keys(xso, kind, "tie", n, T, &xs) < 0)
        goto error;
    uint8_t *op = PyArray_DATA(out);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_vote_select(op, (const uint8_t *const *)ms.ptr, ms.count, packed, kind,
                          (const float *const *)xs.ptr, n, T, (int64_t)n_keep);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = Py_NewRef(Py_None);
error:
    isp_arr_list_free(&xs);
    isp_arr_list_free(&ms);
    free(n);
    return ret;
}

PyDoc_STRVAR(mask_combine_doc,
             "mask_combine(out, masks, packed, rule)\n--\n\n"
             "out = union ('union') or intersection ('intersection') of the masks, all of out's\n"
             "length; byte masks (0/1 checked) or packed (then P gives the valid bits).");

static PyObject *py_mask_combine(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"out", "masks", "P", "packed", "rule", NULL};
    PyObject *outo, *masko;
    long long P;
    int packed;
    const char *rules;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLps:mask_combine", kwlist, &outo, &masko, &P,
                                     &packed, &rules))
        return NULL;
    merge_rule rule;
    if (strcmp(rules, "union") == 0)
        rule = MERGE_UNION;
    else if (strcmp(rules, "intersection") == 0)
        rule = MERGE_INTERSECTION;
    else {
        PyErr_Format(PyExc_ValueError, "rule: expected 'union' or 'intersection', got '%s'", rules);
        return NULL;
    }
    if (check_P(P) < 0)
        return NULL;
    int64_t len = packed ? isp_packed_bytes(P) : P;
    PyArrayObject *out = mask_arg(outo, "out", len, 1);
    if (out == NULL)
        return NULL;
    isp_arr_list ms = {0};
    PyObject *ret = NULL;
    if (parse_masks(masko, out, len, INT_MAX, 1, &ms) < 0)
        goto error;
    uint8_t *op = PyArray_DATA(out);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_combine(op, (const uint8_t *const *)ms.ptr, ms.count, (int64_t)P, packed, rule);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = Py_NewRef(Py_None);
error:
    isp_arr_list_free(&ms);
    return ret;
}

PyDoc_STRVAR(mask_vote_keep_doc,
             "mask_vote_keep(out, masks, P, packed, min_votes)\n--\n\n"
             "out (P,) = 1 where at least min_votes of the masks keep the weight.");

static PyObject *py_mask_vote_keep(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"out", "masks", "P", "packed", "min_votes", NULL};
    PyObject *outo, *masko;
    long long P;
    int packed, min_votes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLpi:mask_vote_keep", kwlist, &outo, &masko,
                                     &P, &packed, &min_votes))
        return NULL;
    if (check_P(P) < 0)
        return NULL;
    if (min_votes < 0) {
        PyErr_Format(PyExc_ValueError, "min_votes: expected >= 0, got %d", min_votes);
        return NULL;
    }
    PyArrayObject *out = mask_arg(outo, "out", P, 1);
    if (out == NULL)
        return NULL;
    isp_arr_list ms = {0};
    PyObject *ret = NULL;
    if (parse_masks(masko, out, packed ? isp_packed_bytes(P) : P, 255, 0, &ms) < 0)
        goto error;
    uint8_t *op = PyArray_DATA(out);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_vote_keep(op, (const uint8_t *const *)ms.ptr, ms.count, (int64_t)P, packed,
                        min_votes);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = Py_NewRef(Py_None);
error:
    isp_arr_list_free(&ms);
    return ret;
}

/* mask_pack(bits, mask) and mask_unpack(mask, bits): the output first, the other one read. */
static PyObject *mask_bits_call(PyObject *args, int unpack)
{
    PyObject *outo, *ino;
    if (!PyArg_ParseTuple(args, unpack ? "OO:mask_unpack" : "OO:mask_pack", &outo, &ino))
        return NULL;
    PyArrayObject *m = mask_arg(unpack ? outo : ino, "mask", -1, unpack);
    if (m == NULL)
        return NULL;
    int64_t P = (int64_t)PyArray_SIZE(m);
    PyArrayObject *b = mask_arg(unpack ? ino : outo, "bits", isp_packed_bytes(P), !unpack);
    if (b == NULL)
        return NULL;
    if (isp_overlaps(b, m)) {
        PyErr_SetString(PyExc_ValueError, "bits must not share memory with mask");
        return NULL;
    }
    uint8_t *mp = PyArray_DATA(m), *bp = PyArray_DATA(b);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = unpack ? mask_unpack(mp, bp, P) : mask_pack(bp, mp, P);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_mask_pack(PyObject *self, PyObject *args)
{
    (void)self;
    return mask_bits_call(args, 0);
}

static PyObject *py_mask_unpack(PyObject *self, PyObject *args)
{
    (void)self;
    return mask_bits_call(args, 1);
}

static PyObject *py_mask_overlap(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"a", "b", "P", "packed", NULL};
    PyObject *ao, *bo;
    long long P;
    int packed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLp:mask_overlap", kwlist, &ao, &bo, &P,
                                     &packed))
        return NULL;
    if (check_P(P) < 0)
        return NULL;
    int64_t len = packed ? isp_packed_bytes(P) : P;
    PyArrayObject *a = mask_arg(ao, "a", len, 0);
    if (a == NULL)
        return NULL;
    PyArrayObject *b = mask_arg(bo, "b", len, 0);
    if (b == NULL)
        return NULL;
    const uint8_t *ap = PyArray_DATA(a), *bp = PyArray_DATA(b);
    int64_t na = 0, nb = 0, nab = 0;
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_overlap(&na, &nb, &nab, ap, bp, (int64_t)P, packed);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    return Py_BuildValue("(LLL)", (long long)na, (long long)nb, (long long)nab);
}

static PyObject *py_mask_count(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"m", "P", "packed", NULL};
    PyObject *mo;
    long long P;
    int packed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLp:mask_count", kwlist, &mo, &P, &packed))
        return NULL;
    if (check_P(P) < 0)
        return NULL;
    PyArrayObject *m = mask_arg(mo, "m", packed ? isp_packed_bytes(P) : P, 0);
    if (m == NULL)
        return NULL;
    const uint8_t *mp = PyArray_DATA(m);
    int64_t kept = 0;
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_count(&kept, mp, (int64_t)P, packed);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    return PyLong_FromLongLong(kept);
}

PyDoc_STRVAR(soup_average_doc,
             "soup_average(out, xs, weights=None)\n--\n\n"
             "out = sum_k weights[k] * xs[k] (uniform mean if weights is None), accumulated in\n"
             "double in order k = 0..K-1. All float32 C-contiguous with out's size.");

static PyObject *py_soup_average(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"out", "xs", "weights", NULL};
    PyObject *outo, *xso, *wo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:soup_average", kwlist, &outo, &xso, &wo))
        return NULL;
    PyArrayObject *out = isp_arg_array(outo, "out", NPY_FLOAT32, -1, NULL,
                                       ISP_ARR_CONTIG | ISP_ARR_WRITE);
    if (out == NULL)
        return NULL;
    int64_t n = (int64_t)PyArray_SIZE(out);
    isp_arr_list xs;
    if (isp_arr_list_parse(xso, "xs", NPY_FLOAT32, NULL, 0, -1, &xs) < 0)
        return NULL;
    PyObject *ret = NULL;
    double *w = NULL;
    if (xs.count < 1) {
        PyErr_SetString(PyExc_ValueError, "xs: the list of parameter sets is empty");
        goto error;
    }
    for (int k = 0; k < xs.count; k++)
        if (xs.n[k] != n) {
            PyErr_Format(PyExc_ValueError, "xs[%d]: expected %lld elements, got %lld", k,
                         (long long)n, (long long)xs.n[k]);
            goto error;
        }
    if (out_overlaps_list(out, &xs, 1))
        goto error;
    if (wo != Py_None) {
        PyArrayObject *wa = isp_arg_array(wo, "weights", NPY_FLOAT64, 1, NULL, ISP_ARR_CONTIG);
        if (wa == NULL)
            goto error;
        if (PyArray_DIM(wa, 0) != xs.count) {
            PyErr_Format(PyExc_ValueError, "weights: expected %d weights, got %lld", xs.count,
                         (long long)PyArray_DIM(wa, 0));
            goto error;
        }
        w = malloc(sizeof(double) * (size_t)xs.count);
        if (w == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        memcpy(w, PyArray_DATA(wa), sizeof(double) * (size_t)xs.count);
        for (int k = 0; k < xs.count; k++)
            if (!isfinite(w[k])) {
                PyErr_Format(PyExc_ValueError, "weights[%d]: expected a finite value, got %g", k,
                             w[k]);
                goto error;
            }
    }
    float *op = PyArray_DATA(out);
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = soup_average(op, (const float *const *)xs.ptr, w, xs.count, n);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = Py_NewRef(Py_None);
error:
    free(w);
    isp_arr_list_free(&xs);
    return ret;
}

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

PyMethodDef isp_prune_methods[] = {
    {"mask_select", KW(py_mask_select), mask_select_doc},
    {"mask_vote_select", KW(py_mask_vote_select), mask_vote_select_doc},
    {"mask_combine", KW(py_mask_combine), mask_combine_doc},
    {"mask_vote_keep", KW(py_mask_vote_keep), mask_vote_keep_doc},
    {"mask_pack", py_mask_pack, METH_VARARGS,
     "mask_pack(bits, mask): bits (ceil(P/8),) <- mask (P,) 0/1 (numpy.packbits little order)."},
    {"mask_unpack", py_mask_unpack, METH_VARARGS,
     "mask_unpack(mask, bits): mask (P,) <- bits (ceil(P/8),)."},
    {"mask_overlap", KW(py_mask_overlap),
     "mask_overlap(a, b, P, packed) -> (kept_a, kept_b, kept_both)."},
    {"mask_count", KW(py_mask_count), "mask_count(m, P, packed) -> kept weights (0/1 checked)."},
    {"soup_average", KW(py_soup_average), soup_average_doc},
    {NULL, NULL, 0, NULL},
};
