/* test_clip.c -- test bindings of the CLIP kernels (clip.c): validate, release the GIL, call. */
#include "boundary.h"

#include <stdlib.h>

#include "clip.h"

#define ARR(var, obj, name, nd, shp, fl)                                                          \
    PyArrayObject *var = isp_arg_array(obj, name, NPY_FLOAT32, nd, shp, fl);                    \
    if (var == NULL)                                                                               \
        return NULL;

#define RW (ISP_ARR_CONTIG | ISP_ARR_WRITE)

static int int_dim(npy_intp d, const char *what)
{
    if (d <= 0 || d > 0x7fffffff) {
        PyErr_Format(PyExc_ValueError, "%s: size %lld out of range 1..2^31-1", what, (long long)d);
        return -1;
    }
    return (int)d;
}

PyDoc_STRVAR(patch_embed_forward_doc,
             "patch_embed_forward(out, cols, pixel_values, weight, class_embedding, "
             "position_embedding, patch_size)\n--\n\n"
             "CLIP vision embeddings in place: out (B,T,C) = [cls; patches @ weight^T] + pos.\n"
             "cols (B*NP, 3*P*P) receives the patches; pixel_values (B,3,H,W); weight (C,3*P*P);\n"
             "class_embedding (C,); position_embedding (T,C); T = NP + 1, NP = (H/P)*(W/P).");

static PyObject *py_patch_embed_forward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oo, *co, *po, *wo, *clo, *pso;
    int P;
    if (!PyArg_ParseTuple(args, "OOOOOOi:patch_embed_forward", &oo, &co, &po, &wo, &clo, &pso, &P))
        return NULL;
    ARR(pix, po, "pixel_values", 4, NULL, ISP_ARR_CONTIG);
    ARR(w, wo, "weight", 2, NULL, ISP_ARR_CONTIG);
    int B = int_dim(PyArray_DIM(pix, 0), "pixel_values batch");
    int C = int_dim(PyArray_DIM(w, 0), "weight rows");
    if (B < 0 || C < 0)
        return NULL;
    int IH = (int)PyArray_DIM(pix, 2), IW = (int)PyArray_DIM(pix, 3);
    if (PyArray_DIM(pix, 1) != 3) {
        PyErr_Format(PyExc_ValueError, "pixel_values: expected 3 channels (B,3,H,W), got %lld",
                     (long long)PyArray_DIM(pix, 1));
        return NULL;
    }
    if (P <= 0 || IH < P || IW < P || IH % P || IW % P) {
        PyErr_Format(PyExc_ValueError,
                     "pixel_values: image %dx%d is not a multiple of the patch size %d", IH, IW, P);
        return NULL;
    }
    const npy_intp NP = (npy_intp)(IH / P) * (IW / P), K = 3 * (npy_intp)P * P;
    const npy_intp wshape[2] = {C, K}, cshape[2] = {(npy_intp)B * NP, K},
                   oshape[3] = {B, NP + 1, C}, clshape[1] = {C}, pshape[2] = {NP + 1, C};
    if (isp_arg_array(wo, "weight", NPY_FLOAT32, 2, wshape, ISP_ARR_CONTIG) == NULL)
        return NULL;
    ARR(out, oo, "out", 3, oshape, RW);
    ARR(cols, co, "cols", 2, cshape, RW);
    ARR(cls, clo, "class_embedding", 1, clshape, ISP_ARR_CONTIG);
    ARR(pos, pso, "position_embedding", 2, pshape, ISP_ARR_CONTIG);
    if (isp_overlaps(out, cols) || isp_overlaps(out, pix) || isp_overlaps(cols, pix)) {
        PyErr_SetString(PyExc_ValueError, "patch_embed_forward: out, cols and pixel_values must not share memory");
        return NULL;
    }
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = patch_embed_forward(PyArray_DATA(out), PyArray_DATA(cols), PyArray_DATA(pix),
                             PyArray_DATA(w), PyArray_DATA(cls), PyArray_DATA(pos), B, IH, IW, P, C);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(patch_embed_backward_doc,
             "patch_embed_backward(dweight, dclass_embedding, dposition_embedding, dout, cols)\n--\n\n"
             "Accumulates (+=) the gradients of the CLIP vision embeddings: dweight (C,K),\n"
             "dclass_embedding (C,), dposition_embedding (T,C) from dout (B,T,C) and the forward's\n"
             "cols (B*NP,K), NP = T - 1.");

static PyObject *py_patch_embed_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dwo, *dco, *dpo, *doo, *co;
    if (!PyArg_ParseTuple(args, "OOOOO:patch_embed_backward", &dwo, &dco, &dpo, &doo, &co))
        return NULL;
    ARR(dout, doo, "dout", 3, NULL, ISP_ARR_CONTIG);
    int B = int_dim(PyArray_DIM(dout, 0), "dout batch");
    int T = int_dim(PyArray_DIM(dout, 1), "dout tokens");
    int C = int_dim(PyArray_DIM(dout, 2), "dout channels");
    if (B < 0 || T < 0 || C < 0)
        return NULL;
    if (T < 2) {
        PyErr_SetString(PyExc_ValueError, "dout: expected at least 2 tokens (class + patches)");
        return NULL;
    }
    ARR(cols, co, "cols", 2, NULL, ISP_ARR_CONTIG);
    int K = int_dim(PyArray_DIM(cols, 1), "cols width");
    if (K < 0)
        return NULL;
    const npy_intp cshape[2] = {(npy_intp)B * (T - 1), K}, wshape[2] = {C, K}, clshape[1] = {C},
                   pshape[2] = {T, C};
    if (isp_arg_array(co, "cols", NPY_FLOAT32, 2, cshape, ISP_ARR_CONTIG) == NULL)
        return NULL;
    ARR(dw, dwo, "dweight", 2, wshape, RW);
    ARR(dcls, dco, "dclass_embedding", 1, clshape, RW);
    ARR(dpos, dpo, "dposition_embedding", 2, pshape, RW);
    float *scratch = malloc(sizeof(float) * (size_t)B * (T - 1) * C);
    if (scratch == NULL)
        return PyErr_NoMemory();
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = patch_embed_backward(PyArray_DATA(dw), PyArray_DATA(dcls), PyArray_DATA(dpos), scratch,
                              PyArray_DATA(dout), PyArray_DATA(cols), B, T - 1, K, C);
    Py_END_ALLOW_THREADS;
    free(scratch);
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cosine_head_forward_doc,
             "cosine_head_forward(logits, fn, inv_norm, features, weight, bias=None)\n--\n\n"
             "logits (B,NL) = normalize(features) @ weight^T (+ bias); fn (B,D) and inv_norm (B,)\n"
             "receive the normalised features and 1/||f|| for the backward pass.");

static PyObject *py_cosine_head_forward(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"logits", "fn", "inv_norm", "features", "weight", "bias", NULL};
    PyObject *lo, *fno, *io, *fo, *wo, *bo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|O:cosine_head_forward", kwlist, &lo, &fno,
                                     &io, &fo, &wo, &bo))
        return NULL;
    ARR(f, fo, "features", 2, NULL, ISP_ARR_CONTIG);
    ARR(w, wo, "weight", 2, NULL, ISP_ARR_CONTIG);
    int B = int_dim(PyArray_DIM(f, 0), "features rows");
    int D = int_dim(PyArray_DIM(f, 1), "features width");
    int NL = int_dim(PyArray_DIM(w, 0), "weight rows");
    if (B < 0 || D < 0 || NL < 0)
        return NULL;
    const npy_intp wshape[2] = {NL, D}, lshape[2] = {B, NL}, fshape[2] = {B, D}, ishape[1] = {B},
                   bshape[1] = {NL};
    if (isp_arg_array(wo, "weight", NPY_FLOAT32, 2, wshape, ISP_ARR_CONTIG) == NULL)
        return NULL;
    ARR(logits, lo, "logits", 2, lshape, RW);
    ARR(fn, fno, "fn", 2, fshape, RW);
    ARR(inv, io, "inv_norm", 1, ishape, RW);
    const float *bias = NULL;
    if (bo != Py_None) {
        ARR(b, bo, "bias", 1, bshape, ISP_ARR_CONTIG);
        bias = PyArray_DATA(b);
    }
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = cosine_head_forward(PyArray_DATA(logits), PyArray_DATA(fn), PyArray_DATA(inv),
                             PyArray_DATA(f), PyArray_DATA(w), bias, B, D, NL);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(cosine_head_backward_doc,
             "cosine_head_backward(dfeatures, dweight, dbias, dlogits, fn, inv_norm, weight)\n--\n\n"
             "dfeatures (B,D) is overwritten; dweight (NL,D) and dbias (NL,) accumulate (+=) and\n"
             "may be None (a frozen head).");

static PyObject *py_cosine_head_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *dfo, *dwo, *dbo, *dlo, *fno, *io, *wo;
    if (!PyArg_ParseTuple(args, "OOOOOOO:cosine_head_backward", &dfo, &dwo, &dbo, &dlo, &fno, &io,
                          &wo))
        return NULL;
    ARR(dl, dlo, "dlogits", 2, NULL, ISP_ARR_CONTIG);
    ARR(fn, fno, "fn", 2, NULL, ISP_ARR_CONTIG);
    int B = int_dim(PyArray_DIM(dl, 0), "dlogits rows");
    int NL = int_dim(PyArray_DIM(dl, 1), "dlogits width");
    int D = int_dim(PyArray_DIM(fn, 1), "fn width");
    if (B < 0 || NL < 0 || D < 0)
        return NULL;
    const npy_intp fshape[2] = {B, D}, ishape[1] = {B}, wshape[2] = {NL, D}, bshape[1] = {NL};
    if (isp_arg_array(fno, "fn", NPY_FLOAT32, 2, fshape, ISP_ARR_CONTIG) == NULL)
        return NULL;
    ARR(inv, io, "inv_norm", 1, ishape, ISP_ARR_CONTIG);
    ARR(w, wo, "weight", 2, wshape, ISP_ARR_CONTIG);
    ARR(df, dfo, "dfeatures", 2, fshape, RW);
    float *dw = NULL, *db = NULL;
    if (dwo != Py_None) {
        ARR(a, dwo, "dweight", 2, wshape, RW);
        dw = PyArray_DATA(a);
    }
    if (dbo != Py_None) {
        ARR(a, dbo, "dbias", 1, bshape, RW);
        db = PyArray_DATA(a);
    }
    isp_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = cosine_head_backward(PyArray_DATA(df), dw, db, PyArray_DATA(dl), PyArray_DATA(fn),
                              PyArray_DATA(inv), PyArray_DATA(w), B, D, NL);
    Py_END_ALLOW_THREADS;
    if (st != ISP_OK)
        return isp_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef isp_test_clip_methods[] = {
    {"patch_embed_forward", py_patch_embed_forward, METH_VARARGS, patch_embed_forward_doc},
    {"patch_embed_backward", py_patch_embed_backward, METH_VARARGS, patch_embed_backward_doc},
    {"cosine_head_forward", (PyCFunction)(void (*)(void))py_cosine_head_forward,
     METH_VARARGS | METH_KEYWORDS, cosine_head_forward_doc},
    {"cosine_head_backward", py_cosine_head_backward, METH_VARARGS, cosine_head_backward_doc},
    {NULL, NULL, 0, NULL},
};
