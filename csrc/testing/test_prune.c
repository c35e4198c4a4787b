/* test_prune.c -- test bindings of mask kernels the runtime does not call (vote histograms). */
#include "boundary.h"

#include <stdlib.h>

#include "soup.h"

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

PyDoc_STRVAR(mask_vote_hist_doc, "mask_vote_hist(masks, P, packed)\n--\n\n"
                                 "List (K+1,) of how many weights exactly v masks keep.");

static PyObject *py_mask_vote_hist(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"masks", "P", "packed", NULL};
    PyObject *masko;
    long long P;
    int packed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLp:mask_vote_hist", kwlist, &masko, &P,
                                     &packed))
        return NULL;
    if (P < 0) {
        PyErr_SetString(PyExc_ValueError, "P: expected >= 0");
        return NULL;
    }
    isp_arr_list ms;
    if (isp_arr_list_parse(masko, "masks", NPY_UINT8, NULL, 0, packed ? isp_packed_bytes(P) : P, &ms) < 0)
        return NULL;
    PyObject *ret = NULL;
    int64_t *hist = NULL;
    if (ms.count < 1 || ms.count > 255) {
        PyErr_Format(PyExc_ValueError, "masks: expected 1 to 255 masks, got %d", ms.count);
        goto error;
    }
    hist = calloc((size_t)ms.count + 1, sizeof(int64_t));
    if (hist == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = mask_vote_hist(hist, (const uint8_t *const *)ms.ptr, ms.count, (int64_t)P, packed);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        isp_raise(st);
        goto error;
    }
    ret = PyList_New(ms.count + 1);
    if (ret == NULL)
        goto error;
    for (int v = 0; v <= ms.count; v++) {
        PyObject *x = PyLong_FromLongLong(hist[v]);
        if (x == NULL) {
            Py_CLEAR(ret);
            goto error;
        }
        PyList_SET_ITEM(ret, v, x);
    }
error:
    free(hist);
    isp_arr_list_free(&ms);
    return ret;
}

PyMethodDef isp_test_prune_methods[] = {
    {"mask_vote_hist", KW(py_mask_vote_hist), mask_vote_hist_doc},
    {NULL, NULL, 0, NULL},
};
