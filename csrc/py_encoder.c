/*
 * py_encoder.c -- bindings of the encoder classifier (classifier.h; every text family and ViT):
 * its constructor and forward / backward / fused train step on the one model handle
 * (py_model.c).
 *
 * Every function validates its arguments with the GIL held, then releases it around the kernels.
 */
#include "boundary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "encoder.h"
#include "ops.h"
#include "optim.h"

/* ------------------------------------------------------------------------------------------ */

static PyObject *py_clf_new(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *names[] = {"V",      "TP",       "TV",          "NL",     "L",
                            "C",      "NH",       "F",           "act",    "eps",
                            "p_hidden", "p_attn", "p_cls",       "pad_id", "prenorm",
                            "patches", "image_size", "patch_size", "pad_positions", "final_ln",
                            "head",   "head_dropin", "embedding_size", NULL};
    clf_config c;
    memset(&c, 0, sizeof c);
    PyObject *acto;
    int prenorm = 0, patches = 0, head = CLF_HEAD_TANH;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiiiiiiOffffi|$ppiippipi:clf_new", names, &c.V,
                                     &c.TP, &c.TV, &c.NL, &c.enc.L, &c.enc.C, &c.enc.NH,
                                     &c.enc.F, &acto, &c.enc.eps, &c.enc.p_hidden, &c.enc.p_attn,
                                     &c.p_cls, &c.pad_id, &prenorm, &patches, &c.IH, &c.PS,
                                     &c.pad_positions, &c.final_ln, &head, &c.head_dropin, &c.E))
        return NULL;
    if (!isp_parse_act(acto, &c.enc.act))
        return NULL;
    c.enc.prenorm = prenorm;
    c.enc.causal = 0;
    c.emb = patches ? CLF_EMB_PATCHES : CLF_EMB_TOKENS;
    c.head = (clf_head)head;
    clf_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return PyErr_NoMemory();
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = clf_init(m, &c);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK) {
        free(m);
        return isp_raise(st);
    }
    return isp_model_capsule(&m->core);
}

/* ---- batches ---- */

typedef struct {
    clf_batch x;
    const void *labels;
    void *own; /* copies of inputs, types and labels: another thread cannot change them after the
                  range checks while the GIL is released */
} batch_args;

static void batch_free(batch_args *b)
{
    free(b->own);
    b->own = NULL;
}

/* xo: input_ids (B,T) int32, or pixel_values (B,3,IH,IH) float32 for an image model */
static int parse_batch(clf_model *m, PyObject *xo, PyObject *tto, PyObject *amo, PyObject *labo,
                       batch_args *b)
{
    const clf_config *cfg = &m->cfg;
    const int img = cfg->emb == CLF_EMB_PATCHES;
    npy_intp pshape[4] = {ISP_ANY, 3, cfg->IH, cfg->IH};
    PyArrayObject *x = img ? isp_arg_array(xo, "pixel_values", NPY_FLOAT32, 4, pshape, ISP_ARR_CONTIG)
                           : isp_arg_array(xo, "input_ids", NPY_INT32, 2, NULL, ISP_ARR_CONTIG);
    if (x == NULL)
        return 0;
    memset(b, 0, sizeof *b);
    if (PyArray_DIM(x, 0) > (1 << 30) || (!img && PyArray_DIM(x, 1) > (1 << 30))) {
        PyErr_SetString(PyExc_ValueError, img ? "pixel_values: too large" : "input_ids: too large");
        return 0;
    }
    b->x.B = (int)PyArray_DIM(x, 0);
    b->x.T = img ? clf_num_tokens(cfg, 0) : (int)PyArray_DIM(x, 1);
    npy_intp shp[2] = {PyArray_DIM(x, 0), img ? 0 : PyArray_DIM(x, 1)};
    if (img && (tto != Py_None || amo != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "an image model takes no token_type_ids or attention_mask");
        return 0;
    }
    PyArrayObject *t = NULL;
    if (tto != Py_None) {
        t = isp_arg_array(tto, "token_type_ids", NPY_INT32, 2, shp, ISP_ARR_CONTIG);
        if (t == NULL)
            return 0;
    }
    /* one buffer: inputs (B*T ids or the pixels), types (B*T), labels (B), then the attention
       mask (B*T bytes) */
    const size_t BT = (size_t)shp[0] * (size_t)shp[1], nB = (size_t)shp[0];
    const size_t nx = img ? (size_t)PyArray_SIZE(x) : BT;
    char *own = malloc(sizeof(int32_t) * (nx + BT + nB) + BT + 1);
    if (own == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->own = own;
    int32_t *ttc = (int32_t *)own + nx, *labc = ttc + BT;
    uint8_t *amc = (uint8_t *)(labc + nB);
    memcpy(own, PyArray_DATA(x), 4 * nx); /* int32 ids or float32 pixels: 4 bytes */
    if (img)
        b->x.pix = (const float *)own;
    else
        b->x.ids = (const int32_t *)own;
    if (t != NULL) {
        memcpy(ttc, PyArray_DATA(t), sizeof(int32_t) * BT);
        b->x.types = ttc;
    }
    if (amo != Py_None) {
        PyArrayObject *a = isp_arg_array(amo, "attention_mask", NPY_UINT8, 2, shp, ISP_ARR_CONTIG);
        if (a == NULL)
            goto fail;
        memcpy(amc, PyArray_DATA(a), BT);
        for (size_t i = 0; i < BT; i++)
            if (amc[i] > 1) {
                PyErr_Format(PyExc_ValueError,
                             "attention_mask: expected 0/1 values, got %d at [%lld, %lld]",
                             (int)amc[i], (long long)(i / (size_t)shp[1]),
                             (long long)(i % (size_t)shp[1]));
                goto fail;
            }
        b->x.amask = amc;
    }
    isp_status st = clf_check_inputs(m, &b->x);
    if (st != ISP_OK) {
        isp_raise(st);
        goto fail;
    }
    if (labo != NULL) {
        npy_intp ls[1] = {shp[0]};
        int want = cfg->NL == 1 ? NPY_FLOAT32 : NPY_INT32;
        PyArrayObject *l = isp_arg_array(labo, "labels", want, 1, ls, ISP_ARR_CONTIG);
        if (l == NULL)
            goto fail;
        memcpy(labc, PyArray_DATA(l), sizeof(int32_t) * nB); /* int32 and float32: 4 bytes */
        b->labels = labc;
        st = clf_check_labels(m, b->labels, b->x.B);
        if (st != ISP_OK) {
            isp_raise(st);
            goto fail;
        }
    }
    return 1;
fail:
    batch_free(b);
    return 0;
}

/* The logits (B, NL) of one batch; with loss != NULL also the loss (into *loss) and the gradients
   (clf_forward_backward, labels labo), else the forward pass alone. */
static PyObject *clf_run(PyObject *cap, PyObject *ido, PyObject *tto, PyObject *amo, PyObject *labo,
                         float smoothing, float *loss)
{
    isp_model_handle *h = isp_model_get(cap, &clf_family, 1);
    if (h == NULL)
        return NULL;
    clf_model *m = (clf_model *)h->m;
    if (loss != NULL && !isp_check_smoothing(smoothing))
        return NULL;
    batch_args b;
    if (!parse_batch(m, ido, tto, amo, loss != NULL ? labo : NULL, &b))
        return NULL;
    npy_intp dims[2] = {b.x.B, m->cfg.NL};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL) {
        batch_free(&b);
        return NULL;
    }
    float *lp = PyArray_DATA((PyArrayObject *)out);
    isp_status st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = loss != NULL ? clf_forward_backward(m, loss, lp, &b.x, b.labels, smoothing)
                      : clf_forward(m, lp, &b.x);
    Py_END_ALLOW_THREADS;
    h->busy = 0;
    batch_free(&b);
    if (st != ISP_OK) {
        Py_DECREF(out);
        return isp_raise(st);
    }
    return out;
}

static PyObject *py_clf_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *ido, *tto, *amo;
    if (!PyArg_ParseTuple(args, "OOOO:clf_forward", &cap, &ido, &tto, &amo))
        return NULL;
    return clf_run(cap, ido, tto, amo, NULL, 0.0f, NULL);
}

static PyObject *py_clf_forward_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *ido, *tto, *amo, *labo;
    float smoothing;
    if (!PyArg_ParseTuple(args, "OOOOOf:clf_forward_backward", &cap, &ido, &tto, &amo, &labo,
                          &smoothing))
        return NULL;
    float loss = 0.0f;
    PyObject *out = clf_run(cap, ido, tto, amo, labo, smoothing, &loss);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("(dN)", (double)loss, out);
}

static PyObject *py_clf_train_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *mo, *vo, *sego, *deco, *ido, *tto, *amo, *labo;
    double lr, b1, b2, eps, wd, max_norm;
    long long step;
    float smoothing;
    if (!PyArg_ParseTuple(args, "OOOOOdddddLdOOOOf:clf_train_step", &cap, &mo, &vo, &sego, &deco,
                          &lr, &b1, &b2, &eps, &wd, &step, &max_norm, &ido, &tto, &amo, &labo,
                          &smoothing))
        return NULL;
    isp_model_handle *h = isp_model_get(cap, &clf_family, 1);
    if (h == NULL)
        return NULL;
    clf_model *m = (clf_model *)h->m;
    isp_adamw_args o;
    if (!isp_parse_adamw(h->m, mo, vo, sego, deco, lr, b1, b2, eps, wd, step, max_norm, &o))
        return NULL;
    if (!isp_check_smoothing(smoothing))
        return NULL;
    batch_args b;
    if (!parse_batch(m, ido, tto, amo, labo, &b))
        return NULL;
    float loss = 0.0f, norm = 0.0f;
    isp_status st;
    h->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = clf_train_step(m, &loss, &norm, o.m, o.v, o.seg, o.decay, o.S, &o.hp, &b.x, b.labels,
                        smoothing);
    Py_END_ALLOW_THREADS;
    h->busy = 0;
    batch_free(&b);
    if (st != ISP_OK)
        return isp_raise(st);
    return Py_BuildValue("(dd)", (double)loss, (double)norm);
}

PyMethodDef isp_encoder_methods[] = {
    {"clf_new", (PyCFunction)(void (*)(void))py_clf_new, METH_VARARGS | METH_KEYWORDS,
     "clf_new(V, TP, TV, NL, L, C, NH, F, act, eps, p_hidden, p_attn, p_cls, pad_id, *, "
     "prenorm, patches, image_size, patch_size, pad_positions, final_ln, head, head_dropin, "
     "embedding_size) -> "
     "model handle of an encoder classifier (csrc/classifier.h)"},
    {"clf_forward", py_clf_forward, METH_VARARGS,
     "clf_forward(handle, input_ids or pixel_values, token_type_ids, attention_mask) -> logits (B,NL)"},
    {"clf_forward_backward", py_clf_forward_backward, METH_VARARGS,
     "clf_forward_backward(handle, inputs, types, amask, labels, smoothing) -> (loss, logits); fills grads"},
    {"clf_train_step", py_clf_train_step, METH_VARARGS, "fused step -> (loss, grad norm)"},
    {NULL, NULL, 0, NULL},
};
