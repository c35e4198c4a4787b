/*
 * py_clip_model.c -- bindings of the CLIP models (clip_model.c) on the one model handle
 * (py_model.c): constructors of the vision model (with its frozen head) and the forward-only text
 * model, their forward / backward / fused train step. Validation with the GIL held; kernels
 * without it.
 */
#include "boundary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip_model.h"


/* the vision model of a handle (NULL with an exception set) */
static clipv_model *vmodel(PyObject *cap)
{
    isp_model_handle *h = isp_model_get(cap, &clipv_family, 1);
    return h == NULL ? NULL : (clipv_model *)h->m;
}

/* run a kernel on a handle with the GIL released, marking it busy */
#define WITHOUT_GIL(cap, stmt)                                                                     \
    do {                                                                                           \
        isp_model_handle *h_ = isp_model_get(cap, NULL, 0);                                        \
        h_->busy = 1;                                                                              \
        Py_BEGIN_ALLOW_THREADS;                                                                    \
        stmt;                                                                                      \
        Py_END_ALLOW_THREADS;                                                                      \
        h_->busy = 0;                                                                              \
    } while (0)

/* ---------------------------------------------------------------- vision model */

static PyObject *py_clipv_new(PyObject *self, PyObject *args)
{
    (void)self;
    clipv_config c;
    memset(&c, 0, sizeof c);
    PyObject *act;
    if (!PyArg_ParseTuple(args, "iiiiOffiiii:clipv_new", &c.enc.L, &c.enc.C, &c.enc.NH, &c.enc.F,
                          &act, &c.enc.eps, &c.enc.p_attn, &c.IH, &c.PS, &c.D, &c.NL))
        return NULL;
    if (!isp_parse_act(act, &c.enc.act))
        return NULL;
    c.enc.p_hidden = 0.0f; /* CLIP has no hidden dropout */
    clipv_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return PyErr_NoMemory();
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = clipv_init(m, &c);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        free(m);
        return isp_raise(st);
    }
    return isp_model_capsule(&m->core);
}

static PyObject *py_clipv_set_head(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *wo, *bo;
    if (!PyArg_ParseTuple(args, "OOO:clipv_set_head", &cap, &wo, &bo))
        return NULL;
    clipv_model *m = vmodel(cap);
    if (m == NULL)
        return NULL;
    npy_intp ws[2] = {ISP_ANY, m->cfg.D};
    PyArrayObject *w = isp_arg_array(wo, "head weight", NPY_FLOAT32, 2, ws, ISP_ARR_CONTIG);
    if (w == NULL)
        return NULL;
    npy_intp NL = PyArray_DIM(w, 0);
    if (NL < 1 || NL > (1 << 24)) {
        PyErr_Format(PyExc_ValueError, "head weight: expected 1..2^24 classes, got %lld",
                     (long long)NL);
        return NULL;
    }
    const float *bp = NULL;
    if (bo != Py_None) {
        npy_intp bs[1] = {NL};
        PyArrayObject *b = isp_arg_array(bo, "head bias", NPY_FLOAT32, 1, bs, ISP_ARR_CONTIG);
        if (b == NULL)
            return NULL;
        bp = PyArray_DATA(b);
    }
    isp_status st = clipv_set_frozen_head(m, PyArray_DATA(w), bp, (int)NL);
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_clipv_head(PyObject *self, PyObject *cap)
{
    (void)self;
    isp_model_handle *hd = isp_model_get(cap, &clipv_family, 0);
    if (hd == NULL)
        return NULL;
    clipv_model *m = (clipv_model *)hd->m;
    int NL = clipv_num_labels(m);
    if (NL < 1)
        Py_RETURN_NONE;
    const float *w = m->cfg.NL > 0 ? m->p.headw : m->fhead_w;
    const float *b = m->cfg.NL > 0 ? m->p.headb : m->fhead_b;
    npy_intp ws[2] = {NL, m->cfg.D}, bs[1] = {NL};
    PyObject *wa = PyArray_SimpleNew(2, ws, NPY_FLOAT32), *ba = PyArray_SimpleNew(1, bs, NPY_FLOAT32);
    if (wa == NULL || ba == NULL) {
        Py_XDECREF(wa);
        Py_XDECREF(ba);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)wa), w, sizeof(float) * (size_t)NL * m->cfg.D);
    memcpy(PyArray_DATA((PyArrayObject *)ba), b, sizeof(float) * (size_t)NL);
    return Py_BuildValue("(NN)", wa, ba);
}

/* pixel values (B,3,IH,IH) float32 C-contiguous, finite */
static const float *parse_pixels(clipv_model *m, PyObject *po, int *B)
{
    int IH = m->cfg.IH;
    PyArrayObject *px = isp_arg_array(po, "pixel_values", NPY_FLOAT32, 4, NULL, ISP_ARR_CONTIG);
    if (px == NULL)
        return NULL;
    if (PyArray_DIM(px, 1) != 3 || PyArray_DIM(px, 2) != IH || PyArray_DIM(px, 3) != IH) {
        PyErr_Format(PyExc_ValueError,
                     "pixel_values: expected shape (B, 3, %d, %d) for this model, got (%lld, "
                     "%lld, %lld, %lld)",
                     IH, IH, (long long)PyArray_DIM(px, 0), (long long)PyArray_DIM(px, 1),
                     (long long)PyArray_DIM(px, 2), (long long)PyArray_DIM(px, 3));
        return NULL;
    }
    if (PyArray_DIM(px, 0) < 1 || PyArray_DIM(px, 0) > (1 << 24)) {
        PyErr_Format(PyExc_ValueError, "pixel_values: batch of %lld images",
                     (long long)PyArray_DIM(px, 0));
        return NULL;
    }
    *B = (int)PyArray_DIM(px, 0);
    const float *p = PyArray_DATA(px);
    isp_status st = clipv_check_pixels(m, p, *B);
    if (st != ISP_OK) {
        isp_raise(st);
        return NULL;
    }
    return p;
}

/* a checked malloc'd copy of the labels (B,) (caller frees): another thread cannot change them
   after the range check while the GIL is released */
static int32_t *parse_labels(clipv_model *m, PyObject *lo, int B)
{
    npy_intp ls[1] = {B};
    PyArrayObject *l = isp_arg_array(lo, "labels", NPY_INT32, 1, ls, ISP_ARR_CONTIG);
    if (l == NULL)
        return NULL;
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B + 1);
    if (y == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(y, PyArray_DATA(l), sizeof(int32_t) * (size_t)B);
    isp_status st = clipv_check_labels(m, y, B);
    if (st != ISP_OK) {
        free(y);
        isp_raise(st);
        return NULL;
    }
    return y;
}

static PyObject *py_clipv_encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *po;
    if (!PyArg_ParseTuple(args, "OO:clipv_encode", &cap, &po))
        return NULL;
    clipv_model *m = vmodel(cap);
    if (m == NULL)
        return NULL;
    int B;
    const float *pix = parse_pixels(m, po, &B);
    if (pix == NULL)
        return NULL;
    npy_intp dims[2] = {B, m->cfg.D};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL)
        return NULL;
    float *fp = PyArray_DATA((PyArrayObject *)out);
    isp_status st;
    WITHOUT_GIL(cap, st = clipv_encode(m, fp, pix, B));
    if (st != ISP_OK) {
        Py_DECREF(out);
        return isp_raise(st);
    }
    return out;
}

static int check_head(clipv_model *m)
{
    if (clipv_num_labels(m) < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "the model has no classification head yet: call "
                        "model.zero_shot_head(classnames, templates) or load it with num_labels");
        return 0;
    }
    return 1;
}

static PyObject *py_clipv_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *po;
    if (!PyArg_ParseTuple(args, "OO:clipv_forward", &cap, &po))
        return NULL;
    clipv_model *m = vmodel(cap);
    if (m == NULL || !check_head(m))
        return NULL;
    int B;
    const float *pix = parse_pixels(m, po, &B);
    if (pix == NULL)
        return NULL;
    npy_intp dims[2] = {B, clipv_num_labels(m)};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL)
        return NULL;
    float *lp = PyArray_DATA((PyArrayObject *)out);
    isp_status st;
    WITHOUT_GIL(cap, st = clipv_forward(m, lp, pix, B));
    if (st != ISP_OK) {
        Py_DECREF(out);
        return isp_raise(st);
    }
    return out;
}

static PyObject *py_clipv_forward_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *po, *lo;
    float smoothing;
    if (!PyArg_ParseTuple(args, "OOOf:clipv_forward_backward", &cap, &po, &lo, &smoothing))
        return NULL;
    clipv_model *m = vmodel(cap);
    if (m == NULL || !check_head(m) || !isp_check_smoothing(smoothing))
        return NULL;
    int B;
    const float *pix = parse_pixels(m, po, &B);
    if (pix == NULL)
        return NULL;
    int32_t *y = parse_labels(m, lo, B);
    if (y == NULL)
        return NULL;
    npy_intp dims[2] = {B, clipv_num_labels(m)};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL) {
        free(y);
        return NULL;
    }
    float *lp = PyArray_DATA((PyArrayObject *)out);
    float loss = 0.0f;
    isp_status st;
    WITHOUT_GIL(cap, st = clipv_forward_backward(m, &loss, lp, pix, y, B, smoothing));
    free(y);
    if (st != ISP_OK) {
        Py_DECREF(out);
        return isp_raise(st);
    }
    return Py_BuildValue("(dN)", (double)loss, out);
}

static PyObject *py_clipv_train_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *mo, *vo, *sego, *deco, *po, *lo;
    double lr, b1, b2, eps, wd, max_norm;
    long long step;
    float smoothing;
    if (!PyArg_ParseTuple(args, "OOOOOdddddLdOOf:clipv_train_step", &cap, &mo, &vo, &sego, &deco,
                          &lr, &b1, &b2, &eps, &wd, &step, &max_norm, &po, &lo, &smoothing))
        return NULL;
    clipv_model *m = vmodel(cap);
    if (m == NULL || !check_head(m) || !isp_check_smoothing(smoothing))
        return NULL;
    isp_adamw_args o;
    if (!isp_parse_adamw(&m->core, mo, vo, sego, deco, lr, b1, b2, eps, wd, step, max_norm, &o))
        return NULL;
    int B;
    const float *pix = parse_pixels(m, po, &B);
    if (pix == NULL)
        return NULL;
    int32_t *y = parse_labels(m, lo, B);
    if (y == NULL)
        return NULL;
    float loss = 0.0f, norm = 0.0f;
    isp_status st;
    WITHOUT_GIL(cap, st = clipv_train_step(m, &loss, &norm, o.m, o.v, o.seg, o.decay, o.S, &o.hp, pix, y, B,
                          smoothing));
    free(y);
    if (st != ISP_OK)
        return isp_raise(st);
    return Py_BuildValue("(dd)", (double)loss, (double)norm);
}

/* ---------------------------------------------------------------- text model */

static PyObject *py_clipt_new(PyObject *self, PyObject *args)
{
    (void)self;
    clipt_config c;
    memset(&c, 0, sizeof c);
    PyObject *act;
    if (!PyArg_ParseTuple(args, "iiiiOfiiii:clipt_new", &c.enc.L, &c.enc.C, &c.enc.NH, &c.enc.F,
                          &act, &c.enc.eps, &c.V, &c.TP, &c.D, &c.eos_id))
        return NULL;
    if (!isp_parse_act(act, &c.enc.act))
        return NULL;
    clipt_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return PyErr_NoMemory();
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = clipt_init(m, &c);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        free(m);
        return isp_raise(st);
    }
    return isp_model_capsule(&m->core);
}

static PyObject *py_clipt_encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *ido, *amo;
    if (!PyArg_ParseTuple(args, "OOO:clipt_encode", &cap, &ido, &amo))
        return NULL;
    isp_model_handle *hd = isp_model_get(cap, &clipt_family, 1);
    if (hd == NULL)
        return NULL;
    clipt_model *m = (clipt_model *)hd->m;
    PyArrayObject *ids = isp_arg_array(ido, "input_ids", NPY_INT32, 2, NULL, ISP_ARR_CONTIG);
    if (ids == NULL)
        return NULL;
    if (PyArray_DIM(ids, 0) > (1 << 24) || PyArray_DIM(ids, 1) > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "input_ids: too large");
        return NULL;
    }
    int B = (int)PyArray_DIM(ids, 0), T = (int)PyArray_DIM(ids, 1);
    const uint8_t *am = NULL;
    if (amo != Py_None) {
        npy_intp shp[2] = {B, T};
        PyArrayObject *a = isp_arg_array(amo, "attention_mask", NPY_UINT8, 2, shp, ISP_ARR_CONTIG);
        if (a == NULL)
            return NULL;
        am = PyArray_DATA(a);
        for (npy_intp i = 0; i < (npy_intp)B * T; i++)
            if (am[i] > 1) {
                PyErr_Format(PyExc_ValueError, "attention_mask: expected 0/1 values, got %d",
                             (int)am[i]);
                return NULL;
            }
    }
    /* the kernel range-checks the ids with the GIL released: give it a copy no other thread
       can change between the check and the lookups */
    const size_t BT = (size_t)B * (size_t)T;
    int32_t *ip = malloc(sizeof(int32_t) * BT + 1);
    if (ip == NULL)
        return PyErr_NoMemory();
    memcpy(ip, PyArray_DATA(ids), sizeof(int32_t) * BT);
    npy_intp dims[2] = {B, m->cfg.D};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL) {
        free(ip);
        return NULL;
    }
    float *fp = PyArray_DATA((PyArrayObject *)out);
    isp_status st;
    WITHOUT_GIL(cap, st = clipt_encode(m, fp, ip, am, B, T));
    free(ip);
    if (st != ISP_OK) {
        Py_DECREF(out);
        return isp_raise(st);
    }
    return out;
}

PyMethodDef isp_clip_model_methods[] = {
    {"clipv_new", py_clipv_new, METH_VARARGS,
     "clipv_new(L, C, NH, F, act, eps, p_attn, image_size, patch_size, D, NL) -> handle"},
    {"clipv_set_head", py_clipv_set_head, METH_VARARGS, "set the frozen head (NL,D), bias|None"},
    {"clipv_head", py_clipv_head, METH_O, "(weight, bias) copies of the active head, or None"},
    {"clipv_encode", py_clipv_encode, METH_VARARGS, "image features (B,D)"},
    {"clipv_forward", py_clipv_forward, METH_VARARGS, "logits (B,NL)"},
    {"clipv_forward_backward", py_clipv_forward_backward, METH_VARARGS,
     "(loss, logits); fills grads"},
    {"clipv_train_step", py_clipv_train_step, METH_VARARGS, "fused step -> (loss, grad norm)"},
    {"clipt_new", py_clipt_new, METH_VARARGS,
     "clipt_new(L, C, NH, F, act, eps, V, TP, D, eos_id) -> handle"},
    {"clipt_encode", py_clipt_encode, METH_VARARGS, "text features (B,D)"},
    {NULL, NULL, 0, NULL},
};
