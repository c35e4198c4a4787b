/*
 * test_ops.c -- thin bindings of single engine kernels (ops.h, encoder.h, optim.h) for the
 * NumPy-oracle tests (tests/test_engine_kernels.py, tests/test_engine_parity.py).
 */
#include "boundary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoder.h"
#include "ops.h"
#include "optim.h"

/* ------------------------------------------------------------------------------------------ */
/* single kernels, for the NumPy-oracle tests (tests/test_engine_kernels.py)                  */

static PyObject *new_f32(int nd, const npy_intp *dims)
{
    return PyArray_ZEROS(nd, (npy_intp *)dims, NPY_FLOAT32, 0);
}

/* op_layernorm(x, w, b, eps) -> (LN(x), mean, rstd); with the residual arguments
   op_layernorm(x, w, b, eps, y, p, seed, step, site) -> (LN(res), mean, rstd, res),
   res = drop(y) + x, in one pass (residual_layernorm_forward) */
static PyObject *py_op_layernorm(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *xo, *wo, *bo, *yo = NULL;
    float eps, p = 0.0f;
    unsigned long long seed = 0, step = 0, site = 0;
    if (!PyArg_ParseTuple(args, "OOOf|OfKKK", &xo, &wo, &bo, &eps, &yo, &p, &seed, &step, &site))
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        PyErr_SetString(PyExc_ValueError, "p must be in [0, 1)");
        return NULL;
    }
    PyArrayObject *x = isp_arg_array(xo, "inp", NPY_FLOAT32, 2, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    npy_intp N = PyArray_DIM(x, 0), C = PyArray_DIM(x, 1), cs[1] = {C}, ns[1] = {N};
    PyArrayObject *w = isp_arg_array(wo, "weight", NPY_FLOAT32, 1, cs, ISP_ARR_CONTIG);
    PyArrayObject *b = w ? isp_arg_array(bo, "bias", NPY_FLOAT32, 1, cs, ISP_ARR_CONTIG) : NULL;
    if (!b)
        return NULL;
    PyArrayObject *y = NULL;
    if (yo != NULL) {
        y = isp_arg_array(yo, "y", NPY_FLOAT32, 2, PyArray_DIMS(x), ISP_ARR_CONTIG);
        if (!y)
            return NULL;
    }
    PyObject *out = new_f32(2, PyArray_DIMS(x)), *mean = new_f32(1, ns), *rstd = new_f32(1, ns),
             *res = y != NULL ? new_f32(2, PyArray_DIMS(x)) : NULL;
    if (!out || !mean || !rstd || (y != NULL && !res))
        goto fail;
    float *o = PyArray_DATA((PyArrayObject *)out), *m = PyArray_DATA((PyArrayObject *)mean),
          *r = PyArray_DATA((PyArrayObject *)rstd);
    if (y == NULL) {
        layernorm_forward(o, m, r, PyArray_DATA(x), PyArray_DATA(w), PyArray_DATA(b), N, (int)C,
                          eps);
        return Py_BuildValue("(NNN)", out, mean, rstd);
    }
    residual_layernorm_forward(PyArray_DATA((PyArrayObject *)res), o, m, r, PyArray_DATA(y),
                               PyArray_DATA(x), PyArray_DATA(w), PyArray_DATA(b), N, (int)C, eps, p,
                               rng_key(seed, step, site));
    return Py_BuildValue("(NNNN)", out, mean, rstd, res);
fail:
    Py_XDECREF(out);
    Py_XDECREF(mean);
    Py_XDECREF(rstd);
    Py_XDECREF(res);
    return NULL;
}

static PyObject *py_op_layernorm_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dso, *xo, *wo, *mo, *ro;
    if (!PyArg_ParseTuple(args, "OOOOO", &dso, &xo, &wo, &mo, &ro))
        return NULL;
    PyArrayObject *x = isp_arg_array(xo, "inp", NPY_FLOAT32, 2, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    npy_intp N = PyArray_DIM(x, 0), C = PyArray_DIM(x, 1), cs[1] = {C}, ns[1] = {N};
    PyArrayObject *d = isp_arg_array(dso, "dout", NPY_FLOAT32, 2, PyArray_DIMS(x), ISP_ARR_CONTIG);
    PyArrayObject *w = d ? isp_arg_array(wo, "weight", NPY_FLOAT32, 1, cs, ISP_ARR_CONTIG) : NULL;
    PyArrayObject *m = w ? isp_arg_array(mo, "mean", NPY_FLOAT32, 1, ns, ISP_ARR_CONTIG) : NULL;
    PyArrayObject *r = m ? isp_arg_array(ro, "rstd", NPY_FLOAT32, 1, ns, ISP_ARR_CONTIG) : NULL;
    if (!r)
        return NULL;
    PyObject *dx = new_f32(2, PyArray_DIMS(x)), *dw = new_f32(1, cs), *db = new_f32(1, cs);
    if (!dx || !dw || !db) {
        Py_XDECREF(dx);
        Py_XDECREF(dw);
        Py_XDECREF(db);
        return NULL;
    }
    layernorm_backward(PyArray_DATA((PyArrayObject *)dx), PyArray_DATA((PyArrayObject *)dw),
                       PyArray_DATA((PyArrayObject *)db), PyArray_DATA(d), PyArray_DATA(x),
                       PyArray_DATA(w), PyArray_DATA(m), PyArray_DATA(r), N, (int)C);
    return Py_BuildValue("(NNN)", dx, dw, db);
}

static PyObject *py_op_act(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *xo, *acto;
    if (!PyArg_ParseTuple(args, "OO", &xo, &acto))
        return NULL;
    isp_act act;
    if (!isp_parse_act(acto, &act))
        return NULL;
    PyArrayObject *x = isp_arg_array(xo, "x", NPY_FLOAT32, 1, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    PyObject *y = new_f32(1, PyArray_DIMS(x)), *d = new_f32(1, PyArray_DIMS(x));
    if (!y || !d) {
        Py_XDECREF(y);
        Py_XDECREF(d);
        return NULL;
    }
    int64_t n = PyArray_DIM(x, 0);
    float *dp = PyArray_DATA((PyArrayObject *)d);
    for (int64_t i = 0; i < n; i++)
        dp[i] = 1.0f;
    act_forward(PyArray_DATA((PyArrayObject *)y), PyArray_DATA(x), n, act);
    act_backward(dp, PyArray_DATA(x), dp, n, act); /* in place, as the encoder's backward does */
    /* (act(x), act'(x)) */
    return Py_BuildValue("(NN)", y, d);
}

static PyObject *py_op_math(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *xo;
    if (!PyArg_ParseTuple(args, "O", &xo))
        return NULL;
    PyArrayObject *x = isp_arg_array(xo, "x", NPY_FLOAT32, 1, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    PyObject *e = new_f32(1, PyArray_DIMS(x)), *r = new_f32(1, PyArray_DIMS(x));
    if (!e || !r) {
        Py_XDECREF(e);
        Py_XDECREF(r);
        return NULL;
    }
    const float *xp = PyArray_DATA(x);
    float *ep = PyArray_DATA((PyArrayObject *)e), *rp = PyArray_DATA((PyArrayObject *)r);
    for (npy_intp i = 0; i < PyArray_DIM(x, 0); i++) {
        ep[i] = ops_expf(xp[i]);
        rp[i] = ops_erff(xp[i]);
    }
    return Py_BuildValue("(NN)", e, r);
}

static int parse_amask(PyObject *amo, int B, int T, const uint8_t **am)
{
    *am = NULL;
    if (amo == Py_None)
        return 1;
    npy_intp s[2] = {B, T};
    PyArrayObject *a = isp_arg_array(amo, "attention_mask", NPY_UINT8, 2, s, ISP_ARR_CONTIG);
    if (!a)
        return 0;
    const uint8_t *m = PyArray_DATA(a);
    for (npy_intp i = 0; i < (npy_intp)B * T; i++)
        if (m[i] > 1) {
            PyErr_Format(PyExc_ValueError, "attention_mask: expected 0/1 values, got %d", (int)m[i]);
            return 0;
        }
    *am = m;
    return 1;
}

/* qkv (B, T, 3C) float32 with C divisible by NH and a dropout probability in [0, 1); sets B, T, C. */
static PyArrayObject *parse_qkv(PyObject *qo, int NH, float p, const char *fn, int *B, int *T, int *C)
{
    PyArrayObject *q = isp_arg_array(qo, "qkv", NPY_FLOAT32, 3, NULL, ISP_ARR_CONTIG);
    if (!q)
        return NULL;
    *B = (int)PyArray_DIM(q, 0), *T = (int)PyArray_DIM(q, 1), *C = (int)PyArray_DIM(q, 2) / 3;
    if (NH < 1 || *C % NH != 0 || PyArray_DIM(q, 2) % 3 != 0 || !(p >= 0.0f && p < 1.0f)) {
        PyErr_Format(PyExc_ValueError, "%s: bad sizes", fn);
        return NULL;
    }
    return q;
}

static PyObject *py_op_attention(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *qo, *amo;
    int NH, causal;
    float p;
    unsigned long long key;
    if (!PyArg_ParseTuple(args, "OOipfK", &qo, &amo, &NH, &causal, &p, &key))
        return NULL;
    int B, T, C;
    PyArrayObject *q = parse_qkv(qo, NH, p, "op_attention", &B, &T, &C);
    if (!q)
        return NULL;
    const uint8_t *am;
    if (!parse_amask(amo, B, T, &am))
        return NULL;
    npy_intp od[3] = {B, T, C}, ad[4] = {B, NH, T, T};
    PyObject *out = new_f32(3, od), *att = new_f32(4, ad);
    float *scratch =
        malloc(sizeof(float) * (size_t)attention_scratch_size(T, C, NH, isp_get_num_threads()));
    if (!out || !att || !scratch) {
        Py_XDECREF(out);
        Py_XDECREF(att);
        free(scratch);
        return PyErr_NoMemory();
    }
    attention_forward(PyArray_DATA((PyArrayObject *)out), PyArray_DATA((PyArrayObject *)att),
                      PyArray_DATA(q), am, B, T, C, NH, causal, p, key, scratch);
    free(scratch);
    return Py_BuildValue("(NN)", out, att);
}

static PyObject *py_op_attention_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dso, *qo, *ato, *amo;
    int NH, causal;
    float p;
    unsigned long long key;
    if (!PyArg_ParseTuple(args, "OOOOipfK", &dso, &qo, &ato, &amo, &NH, &causal, &p, &key))
        return NULL;
    int B, T, C;
    PyArrayObject *q = parse_qkv(qo, NH, p, "op_attention_backward", &B, &T, &C);
    if (!q)
        return NULL;
    npy_intp od[3] = {B, T, C}, ad[4] = {B, NH, T, T};
    PyArrayObject *d = isp_arg_array(dso, "dout", NPY_FLOAT32, 3, od, ISP_ARR_CONTIG);
    PyArrayObject *a = d ? isp_arg_array(ato, "att", NPY_FLOAT32, 4, ad, ISP_ARR_CONTIG) : NULL;
    if (!a)
        return NULL;
    const uint8_t *am;
    if (!parse_amask(amo, B, T, &am))
        return NULL;
    PyObject *dq = new_f32(3, PyArray_DIMS(q));
    float *scratch =
        malloc(sizeof(float) * (size_t)attention_scratch_size(T, C, NH, isp_get_num_threads()));
    if (!dq || !scratch) {
        Py_XDECREF(dq);
        free(scratch);
        return PyErr_NoMemory();
    }
    attention_backward(PyArray_DATA((PyArrayObject *)dq), PyArray_DATA(d), PyArray_DATA(q),
                       PyArray_DATA(a), am, B, T, C, NH, causal, p, key, scratch);
    free(scratch);
    return dq;
}

static PyObject *py_op_dropout(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *xo;
    float p;
    unsigned long long seed, step, site;
    if (!PyArg_ParseTuple(args, "OfKKK", &xo, &p, &seed, &step, &site))
        return NULL;
    PyArrayObject *x = isp_arg_array(xo, "x", NPY_FLOAT32, 1, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        PyErr_SetString(PyExc_ValueError, "p must be in [0, 1)");
        return NULL;
    }
    PyObject *y = new_f32(1, PyArray_DIMS(x));
    if (!y)
        return NULL;
    dropout_forward(PyArray_DATA((PyArrayObject *)y), PyArray_DATA(x), PyArray_DIM(x, 0), p,
                    rng_key(seed, step, site));
    return y;
}

static PyObject *py_op_crossentropy(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *lo, *yo;
    float eps;
    if (!PyArg_ParseTuple(args, "OOf", &lo, &yo, &eps))
        return NULL;
    PyArrayObject *l = isp_arg_array(lo, "logits", NPY_FLOAT32, 2, NULL, ISP_ARR_CONTIG);
    if (!l)
        return NULL;
    npy_intp bs[1] = {PyArray_DIM(l, 0)};
    PyArrayObject *y = isp_arg_array(yo, "labels", NPY_INT32, 1, bs, ISP_ARR_CONTIG);
    if (!y)
        return NULL;
    int B = (int)PyArray_DIM(l, 0), NL = (int)PyArray_DIM(l, 1);
    const int32_t *yp = PyArray_DATA(y);
    for (int b = 0; b < B; b++)
        if (yp[b] < 0 || yp[b] >= NL) {
            PyErr_SetString(PyExc_ValueError, "labels out of range");
            return NULL;
        }
    PyObject *pr = new_f32(2, PyArray_DIMS(l)), *dl = new_f32(2, PyArray_DIMS(l));
    if (!pr || !dl) {
        Py_XDECREF(pr);
        Py_XDECREF(dl);
        return NULL;
    }
    float loss =
        crossentropy_forward(PyArray_DATA((PyArrayObject *)pr), PyArray_DATA(l), yp, B, NL, eps);
    crossentropy_backward(PyArray_DATA((PyArrayObject *)dl), PyArray_DATA((PyArrayObject *)pr), yp,
                          B, NL, eps);
    return Py_BuildValue("(dNN)", (double)loss, pr, dl);
}

static PyObject *py_op_adamw(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *po, *go, *mo, *vo, *sego, *deco, *masko;
    long long mask_off, step;
    double lr, b1, b2, eps, wd, max_norm;
    if (!PyArg_ParseTuple(args, "OOOOOOOLdddddLd", &po, &go, &mo, &vo, &sego, &deco, &masko,
                          &mask_off, &lr, &b1, &b2, &eps, &wd, &step, &max_norm))
        return NULL;
    PyArrayObject *p =
        isp_arg_array(po, "params", NPY_FLOAT32, 1, NULL, ISP_ARR_CONTIG | ISP_ARR_WRITE);
    if (!p)
        return NULL;
    npy_intp n[1] = {PyArray_DIM(p, 0)};
    PyArrayObject *g =
        isp_arg_array(go, "grads", NPY_FLOAT32, 1, n, ISP_ARR_CONTIG | ISP_ARR_WRITE);
    PyArrayObject *m =
        g ? isp_arg_array(mo, "m", NPY_FLOAT32, 1, n, ISP_ARR_CONTIG | ISP_ARR_WRITE) : NULL;
    PyArrayObject *v =
        m ? isp_arg_array(vo, "v", NPY_FLOAT32, 1, n, ISP_ARR_CONTIG | ISP_ARR_WRITE) : NULL;
    PyArrayObject *dec =
        v ? isp_arg_array(deco, "decay", NPY_UINT8, 1, NULL, ISP_ARR_CONTIG) : NULL;
    if (!dec)
        return NULL;
    npy_intp sn[1] = {PyArray_DIM(dec, 0) + 1};
    PyArrayObject *seg = isp_arg_array(sego, "segments", NPY_INT64, 1, sn, ISP_ARR_CONTIG);
    if (!seg)
        return NULL;
    const int64_t *s = PyArray_DATA(seg);
    int S = (int)PyArray_DIM(dec, 0);
    if (S < 1 || s[0] != 0 || s[S] != n[0]) {
        PyErr_SetString(PyExc_ValueError, "segments must run from 0 to N");
        return NULL;
    }
    const uint8_t *mask = NULL;
    int64_t P = 0;
    if (masko != Py_None) {
        PyArrayObject *k = isp_arg_array(masko, "mask", NPY_UINT8, 1, NULL, ISP_ARR_CONTIG);
        if (!k)
            return NULL;
        P = PyArray_DIM(k, 0);
        if (mask_off < 0 || mask_off > n[0] - P) {
            PyErr_SetString(PyExc_ValueError, "mask range outside the parameters");
            return NULL;
        }
        mask = PyArray_DATA(k);
    }
    adamw_hparams hp = {(float)lr, (float)b1, (float)b2,      (float)eps,
                        (float)wd, step,      (float)max_norm};
    if (step < 1) {
        PyErr_SetString(PyExc_ValueError, "step must be >= 1");
        return NULL;
    }
    float norm = 0.0f;
    isp_status st = adamw_update(PyArray_DATA(p), PyArray_DATA(m), PyArray_DATA(v), PyArray_DATA(g),
                                 n[0], s, PyArray_DATA(dec), S, mask, mask_off, P, 0, &hp, &norm);
    if (st != ISP_OK)
        return isp_raise(st);
    return PyFloat_FromDouble(norm);
}

/* the encoder stack alone (post- or pre-LN), forward and backward; allocates per call */
static PyObject *py_op_encoder(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *po, *xo, *amo, *dso, *acto;
    encoder_config c;
    memset(&c, 0, sizeof c);
    int training;
    unsigned long long seed, step;
    if (!PyArg_ParseTuple(args, "OOOOiiOppfffpKK", &po, &xo, &amo, &dso, &c.L, &c.NH, &acto,
                          &c.prenorm, &c.causal, &c.eps, &c.p_hidden, &c.p_attn, &training, &seed,
                          &step))
        return NULL;
    if (!isp_parse_act(acto, &c.act))
        return NULL;
    PyArrayObject *x = isp_arg_array(xo, "x", NPY_FLOAT32, 3, NULL, ISP_ARR_CONTIG);
    if (!x)
        return NULL;
    int B = (int)PyArray_DIM(x, 0), T = (int)PyArray_DIM(x, 1);
    c.C = (int)PyArray_DIM(x, 2);
    PyArrayObject *p = isp_arg_array(po, "params", NPY_FLOAT32, 1, NULL, ISP_ARR_CONTIG);
    if (!p)
        return NULL;
    if (c.L < 1 || c.NH < 1 || c.C % c.NH != 0) {
        PyErr_SetString(PyExc_ValueError, "op_encoder: bad sizes");
        return NULL;
    }
    if (!(c.p_hidden >= 0.0f && c.p_hidden < 1.0f) || !(c.p_attn >= 0.0f && c.p_attn < 1.0f) ||
        !(c.eps > 0.0f && isfinite(c.eps))) {
        PyErr_Format(PyExc_ValueError,
                     "op_encoder: dropout probabilities must be in [0, 1) and eps > 0, got "
                     "p_hidden=%g p_attn=%g eps=%g",
                     (double)c.p_hidden, (double)c.p_attn, (double)c.eps);
        return NULL;
    }
    /* F from the parameter count: n = L (4C^2 + 2CF + 9C + F) */
    int64_t n = PyArray_DIM(p, 0), C = c.C, per = n / c.L;
    int64_t num = per - 4 * C * C - 9 * C, den = 2 * C + 1;
    if (n % c.L != 0 || num <= 0 || num % den != 0) {
        PyErr_SetString(PyExc_ValueError, "op_encoder: parameter count does not match a config");
        return NULL;
    }
    c.F = (int)(num / den);
    PyArrayObject *d = isp_arg_array(dso, "dout", NPY_FLOAT32, 3, PyArray_DIMS(x), ISP_ARR_CONTIG);
    if (!d)
        return NULL;
    const uint8_t *am;
    if (!parse_amask(amo, B, T, &am))
        return NULL;
    int64_t asz = encoder_acts_size(&c, B, T, isp_get_num_threads());
    float *acts = malloc(sizeof(float) * (size_t)asz);
    PyObject *y = new_f32(3, PyArray_DIMS(x)), *dx = new_f32(3, PyArray_DIMS(x));
    npy_intp gn[1] = {(npy_intp)n};
    PyObject *g = new_f32(1, gn);
    if (!acts || !y || !dx || !g) {
        free(acts);
        Py_XDECREF(y);
        Py_XDECREF(dx);
        Py_XDECREF(g);
        return PyErr_NoMemory();
    }
    encoder_params ep, gp;
    encoder_acts ea;
    encoder_point_params(&ep, PyArray_DATA(p), &c);
    encoder_point_params(&gp, PyArray_DATA((PyArrayObject *)g), &c);
    encoder_point_acts(&ea, acts, &c, B, T);
    encoder_rng rng = {training, seed, step, 0};
    Py_BEGIN_ALLOW_THREADS;
    encoder_forward(&ea, &ep, &c, PyArray_DATA(x), am, B, T, &rng);
    memcpy(PyArray_DATA((PyArrayObject *)y), encoder_output(&ea, &c, B, T),
           sizeof(float) * (size_t)B * T * c.C);
    float *dio = PyArray_DATA((PyArrayObject *)dx);
    memcpy(dio, PyArray_DATA(d), sizeof(float) * (size_t)B * T * c.C);
    encoder_backward(dio, &gp, &ep, &ea, &c, PyArray_DATA(x), am, B, T, &rng);
    Py_END_ALLOW_THREADS;
    free(acts);
    return Py_BuildValue("(NNN)", y, dx, g);
}

PyMethodDef isp_test_ops_methods[] = {
    {"op_layernorm", py_op_layernorm, METH_VARARGS, "test binding"},
    {"op_layernorm_backward", py_op_layernorm_backward, METH_VARARGS, "test binding"},
    {"op_act", py_op_act, METH_VARARGS, "test binding"},
    {"op_math", py_op_math, METH_VARARGS, "test binding: (exp, erf)"},
    {"op_attention", py_op_attention, METH_VARARGS, "test binding"},
    {"op_attention_backward", py_op_attention_backward, METH_VARARGS, "test binding"},
    {"op_dropout", py_op_dropout, METH_VARARGS, "test binding"},
    {"op_crossentropy", py_op_crossentropy, METH_VARARGS, "test binding"},
    {"op_adamw", py_op_adamw, METH_VARARGS, "test binding"},
    {"op_encoder", py_op_encoder, METH_VARARGS, "test binding: encoder stack fwd+bwd"},
    {NULL, NULL, 0, NULL},
};
