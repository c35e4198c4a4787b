/*
 * py_model.c -- the one model handle: a capsule over any family's model (model.h), and the
 * bindings every family shares through it (tensor table, buffers, training flag, RNG, copies,
 * AdamW). A family's own binding (py_encoder.c, py_clip_model.c) adds its constructor and its
 * forward / backward / fused step.
 */
#include "boundary.h"

#include <math.h>
#include <stdlib.h>

#include "model.h"

#define CAPSULE_NAME "instantsoup.model"

static void handle_destroy(PyObject *cap)
{
    isp_model_handle *h = PyCapsule_GetPointer(cap, CAPSULE_NAME);
    if (h != NULL) {
        h->m->fam->free(h->m);
        free(h->m);
        free(h);
    }
}

PyObject *isp_model_capsule(model_core *m)
{
    isp_model_handle *h = calloc(1, sizeof *h);
    PyObject *cap = h != NULL ? PyCapsule_New(h, CAPSULE_NAME, handle_destroy) : NULL;
    if (cap == NULL) {
        m->fam->free(m);
        free(m);
        free(h);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    h->m = m;
    return cap;
}

isp_model_handle *isp_model_get(PyObject *cap, const model_family *fam, int use)
{
    isp_model_handle *h = PyCapsule_GetPointer(cap, CAPSULE_NAME);
    if (h == NULL)
        return NULL;
    if (fam != NULL && h->m->fam != fam) {
        PyErr_Format(PyExc_TypeError, "expected a %s model, got a %s model", fam->name,
                     h->m->fam->name);
        return NULL;
    }
    if (use && h->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this model is in use by another thread (a model is not thread-safe; "
                        "use model.clone() per thread)");
        return NULL;
    }
    return h;
}

int isp_check_smoothing(float s)
{
    if (!(s >= 0.0f && s <= 1.0f)) {
        PyErr_Format(PyExc_ValueError, "label_smoothing: expected a value in [0, 1], got %g",
                     (double)s);
        return 0;
    }
    return 1;
}

int isp_parse_adamw(const model_core *mc, PyObject *mo, PyObject *vo, PyObject *sego,
                    PyObject *deco, double lr, double b1, double b2, double eps, double wd,
                    long long step, double max_norm, isp_adamw_args *o)
{
    npy_intp n[1] = {(npy_intp)mc->num_params};
    PyArrayObject *m =
        isp_arg_array(mo, "exp_avg", NPY_FLOAT32, 1, n, ISP_ARR_CONTIG | ISP_ARR_WRITE);
    if (m == NULL)
        return 0;
    PyArrayObject *v =
        isp_arg_array(vo, "exp_avg_sq", NPY_FLOAT32, 1, n, ISP_ARR_CONTIG | ISP_ARR_WRITE);
    if (v == NULL)
        return 0;
    if (isp_overlaps(m, v)) {
        PyErr_SetString(PyExc_ValueError, "exp_avg and exp_avg_sq must not share memory");
        return 0;
    }
    PyArrayObject *dec = isp_arg_array(deco, "decay", NPY_UINT8, 1, NULL, ISP_ARR_CONTIG);
    if (dec == NULL)
        return 0;
    npy_intp sn[1] = {PyArray_DIM(dec, 0) + 1};
    PyArrayObject *seg = isp_arg_array(sego, "segments", NPY_INT64, 1, sn, ISP_ARR_CONTIG);
    if (seg == NULL)
        return 0;
    const int64_t *s = PyArray_DATA(seg);
    int S = (int)PyArray_DIM(dec, 0);
    if (S < 1 || s[0] != 0 || s[S] != mc->num_params) {
        PyErr_SetString(PyExc_ValueError, "segments must run from 0 to the number of parameters");
        return 0;
    }
    for (int i = 0; i < S; i++)
        if (s[i + 1] < s[i]) {
            PyErr_SetString(PyExc_ValueError, "segments must be non-decreasing");
            return 0;
        }
    if (!(lr >= 0.0 && isfinite(lr)) || !(b1 >= 0.0 && b1 < 1.0) || !(b2 >= 0.0 && b2 < 1.0) ||
        !(eps >= 0.0 && isfinite(eps)) || !(wd >= 0.0 && isfinite(wd)) || step < 1 ||
        max_norm != max_norm) {
        PyErr_Format(PyExc_ValueError,
                     "AdamW: invalid hyperparameters lr=%g betas=(%g, %g) eps=%g "
                     "weight_decay=%g step=%lld max_grad_norm=%g",
                     lr, b1, b2, eps, wd, step, max_norm);
        return 0;
    }
    o->m = PyArray_DATA(m);
    o->v = PyArray_DATA(v);
    o->seg = s;
    o->decay = PyArray_DATA(dec);
    o->S = S;
    o->hp.lr = (float)lr;
    o->hp.beta1 = (float)b1;
    o->hp.beta2 = (float)b2;
    o->hp.eps = (float)eps;
    o->hp.weight_decay = (float)wd;
    o->hp.step = step;
    o->hp.max_norm = (float)max_norm;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */

static PyObject *py_model_family(PyObject *self, PyObject *cap)
{
    (void)self;
    isp_model_handle *h = isp_model_get(cap, NULL, 0);
    return h == NULL ? NULL : PyUnicode_FromString(h->m->fam->name);
}

static PyObject *py_model_tensors(PyObject *self, PyObject *cap)
{
    (void)self;
    isp_model_handle *h = isp_model_get(cap, NULL, 0);
    if (h == NULL)
        return NULL;
    const model_family *f = h->m->fam;
    PyObject *out = PyList_New(f->num_tensors);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < f->num_tensors; i++) {
        int64_t off, size;
        model_tensor_span(h->m, i, &off, &size);
        PyObject *t = Py_BuildValue("(sLL)", f->tensor_name(i), (long long)off, (long long)size);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *py_model_buffers(PyObject *self, PyObject *cap)
{
    (void)self;
    isp_model_handle *h = isp_model_get(cap, NULL, 0);
    if (h == NULL)
        return NULL;
    if (h->m->grads == NULL) /* forward-only */
        return Py_BuildValue("(NOO)", isp_view_1d(cap, h->m->params, h->m->num_params, NPY_FLOAT32),
                             Py_None, Py_None);
    return isp_buffer_views(cap, h->m->params, h->m->grads, h->m->masks, h->m->num_params,
                            h->m->num_prunable);
}

static PyObject *py_model_set_training(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap;
    int mode;
    if (!PyArg_ParseTuple(args, "Op:model_set_training", &cap, &mode))
        return NULL;
    isp_model_handle *h = isp_model_get(cap, NULL, 1);
    if (h == NULL)
        return NULL;
    h->m->training = mode;
    Py_RETURN_NONE;
}

static PyObject *py_model_rng(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap;
    unsigned long long seed, step;
    if (!PyArg_ParseTuple(args, "OO&O&:model_rng", &cap, isp_conv_u64, &seed, isp_conv_u64,
                          &step))
        return NULL;
    isp_model_handle *h = isp_model_get(cap, NULL, 1);
    if (h == NULL)
        return NULL;
    h->m->seed = seed;
    h->m->step = step;
    Py_RETURN_NONE;
}

static PyObject *py_model_rng_state(PyObject *self, PyObject *cap)
{
    (void)self;
    isp_model_handle *h = isp_model_get(cap, NULL, 0);
    if (h == NULL)
        return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)h->m->seed, (unsigned long long)h->m->step);
}

static PyObject *py_model_copy(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dcap, *scap;
    if (!PyArg_ParseTuple(args, "OO:model_copy", &dcap, &scap))
        return NULL;
    isp_model_handle *d = isp_model_get(dcap, NULL, 1);
    if (d == NULL)
        return NULL;
    isp_model_handle *s = isp_model_get(scap, NULL, 1);
    if (s == NULL)
        return NULL;
    if (d == s)
        Py_RETURN_NONE;
    isp_status st;
    d->busy = s->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = model_copy(d->m, s->m);
    Py_END_ALLOW_THREADS;
    d->busy = s->busy = 0;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_model_adamw(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *mo, *vo, *sego, *deco;
    double lr, b1, b2, eps, wd, max_norm;
    long long step;
    if (!PyArg_ParseTuple(args, "OOOOOdddddLd:model_adamw", &cap, &mo, &vo, &sego, &deco, &lr,
                          &b1, &b2, &eps, &wd, &step, &max_norm))
        return NULL;
    isp_model_handle *h = isp_model_get(cap, NULL, 1);
    if (h == NULL)
        return NULL;
    isp_adamw_args o;
    if (!isp_parse_adamw(h->m, mo, vo, sego, deco, lr, b1, b2, eps, wd, step, max_norm, &o))
        return NULL;
    float norm = 0.0f;
    isp_status st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = model_adamw(h->m, o.m, o.v, o.seg, o.decay, o.S, &o.hp, 0, &norm);
    Py_END_ALLOW_THREADS;
    h->busy = 0;
    if (st != ISP_OK)
        return isp_raise(st);
    return PyFloat_FromDouble(norm);
}

PyMethodDef isp_model_methods[] = {
    {"model_family", py_model_family, METH_O, "the family name of a model handle"},
    {"model_tensors", py_model_tensors, METH_O, "[(name, offset, size)] of the parameter layout"},
    {"model_buffers", py_model_buffers, METH_O,
     "(params, grads, masks) views of the model's buffers (grads, masks None: forward-only)"},
    {"model_set_training", py_model_set_training, METH_VARARGS, "dropout on/off"},
    {"model_rng", py_model_rng, METH_VARARGS, "model_rng(handle, seed, step): set the dropout RNG"},
    {"model_rng_state", py_model_rng_state, METH_O, "(seed, step) of the dropout RNG"},
    {"model_copy", py_model_copy, METH_VARARGS,
     "model_copy(dst, src): params, masks (and CLIP's frozen head)"},
    {"model_adamw", py_model_adamw, METH_VARARGS,
     "masked AdamW step on the model's grads -> grad norm"},
    {NULL, NULL, 0, NULL},
};
