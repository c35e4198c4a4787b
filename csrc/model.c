/* model.c -- the model core shared by every engine model family (see model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"

void zero_floats(float *x, int64_t n)
{
    const int64_t chunk = 1 << 16, nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(isp_get_num_threads()) schedule(static) if (nchunks > 4)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * chunk, b = a + chunk < n ? a + chunk : n;
        memset(x + a, 0, sizeof(float) * (size_t)(b - a));
    }
}

void model_tensor_span(const model_core *m, int i, int64_t *offset, int64_t *size)
{
    int64_t s[MODEL_MAX_TENSORS], off = 0;
    m->fam->tensor_sizes(m->cfg, s);
    for (int k = 0; k < i; k++)
        off += s[k];
    *offset = off;
    *size = s[i];
}

isp_status model_init(model_core *m, const model_family *fam, const void *cfg, int64_t num_params,
                      int64_t num_prunable)
{
    memset(m, 0, sizeof *m);
    m->fam = fam;
    m->cfg = cfg;
    m->num_params = num_params;
    m->num_prunable = fam->forward_only ? 0 : num_prunable;
    m->params = calloc((size_t)num_params, sizeof(float));
    if (!fam->forward_only) {
        m->grads = calloc((size_t)num_params, sizeof(float));
        m->masks = malloc((size_t)num_prunable + 1);
    }
    if (m->params == NULL || (!fam->forward_only && (m->grads == NULL || m->masks == NULL))) {
        model_free(m);
        return isp_fail(ISP_ERR_NOMEM, "out of memory allocating %lld parameters",
                        (long long)num_params);
    }
    if (m->masks != NULL)
        memset(m->masks, 1, (size_t)m->num_prunable);
    return ISP_OK;
}

void model_free(model_core *m)
{
    free(m->params);
    free(m->grads);
    free(m->masks);
    free(m->acts_mem);
    m->params = m->grads = m->acts_mem = NULL;
    m->masks = NULL;
    m->acts_cap = 0;
}

isp_status model_reserve_acts(model_core *m, int64_t floats, const char *batch)
{
    if (floats <= m->acts_cap)
        return ISP_OK;
    free(m->acts_mem);
    m->acts_cap = 0;
    m->acts_mem = malloc((size_t)floats * sizeof(float));
    if (m->acts_mem == NULL)
        return isp_fail(ISP_ERR_NOMEM,
                        "out of memory allocating activations for %s (%.1f MB); use smaller "
                        "batches",
                        batch, (double)floats * 4.0 / 1e6);
    m->acts_cap = floats;
    return ISP_OK;
}

uint64_t model_key(const model_core *m, uint64_t site)
{
    return rng_key(m->seed, m->step, site);
}

void model_zero_grads(model_core *m)
{
    zero_floats(m->grads, m->num_params);
}

void model_advance(model_core *m)
{
    if (m->training)
        m->step++;
}

void model_finish_backward(model_core *m)
{
    mask_apply(m->grads, m->masks, m->num_prunable);
    model_advance(m);
}

isp_status model_copy(model_core *dst, const model_core *src)
{
    if (dst == src)
        return ISP_OK;
    if (dst->fam != src->fam || memcmp(dst->cfg, src->cfg, src->fam->config_size) != 0)
        return isp_fail(ISP_ERR_VALUE, "copy_from: the two models have different configs");
    if (src->fam->copy_extra != NULL) {
        isp_status st = src->fam->copy_extra(dst, src);
        if (st != ISP_OK)
            return st;
    }
    memcpy(dst->params, src->params, sizeof(float) * (size_t)src->num_params);
    if (src->num_prunable > 0)
        memcpy(dst->masks, src->masks, (size_t)src->num_prunable);
    return ISP_OK;
}

isp_status model_adamw(model_core *m, float *mom1, float *mom2, const int64_t *seg,
                       const uint8_t *decay, int S, const adamw_hparams *hp, int grads_masked,
                       float *grad_norm)
{
    if (m->grads == NULL)
        return isp_fail(ISP_ERR_VALUE, "a %s model is forward-only (no gradients)", m->fam->name);
    return adamw_update(m->params, mom1, mom2, m->grads, m->num_params, seg, decay, S, m->masks, 0,
                        m->num_prunable, grads_masked, hp, grad_norm);
}
