/*
 * model.h -- the model core every engine model is built on (llm.c style): parameters, gradients
 * and masks in one layout, the activation buffer, the dropout RNG (seed, step), the training flag,
 * copies and the optimizer step, written once. A family (classifier.h, clip_model.h) puts a
 * model_core first in its model struct and supplies a model_family: its tensor table, config
 * and any state of its own to copy or free.
 *
 * Layout: params and grads are (num_params) floats, the family's tensors consecutive in the order
 * of its tensor table; the prunable weights come first, so masks are one uint8 range
 * [0, num_prunable). AdamW moments (kept by the caller) use the same layout.
 */
#include "isp.h"
#ifndef ISP_MODEL_H
#define ISP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "optim.h"

struct model_core;

typedef struct model_family {
    const char *name;
    int num_tensors;
    const char *(*tensor_name)(int i);
    /* sizes (floats) of the num_tensors tensors, in layout order, for the config cfg */
    void (*tensor_sizes)(const void *cfg, int64_t *sizes);
    size_t config_size; /* bytes of the config at model_core.cfg (models copy only between equal ones) */
    int forward_only;   /* no gradients and no masks (CLIP's text tower) */
    /* copy the family's own state beyond params and masks (CLIP's frozen head); NULL: none */
    isp_status (*copy_extra)(struct model_core *dst, const struct model_core *src);
    /* free everything the family model owns, the core included (not the struct itself) */
    void (*free)(struct model_core *m);
} model_family;

typedef struct model_core {
    const model_family *fam;
    const void *cfg; /* the family's config, inside its model struct */
    int64_t num_params, num_prunable;
    float *params, *grads;
    uint8_t *masks; /* 1 = kept */
    float *acts_mem;
    int64_t acts_cap; /* floats */
    uint64_t seed, step; /* dropout RNG: step counts training-mode forward passes */
    int training;
} model_core;

#define MODEL_MAX_TENSORS 64

/* Offset and size (floats) of tensor i of m (its family's tensor_sizes laid end to end). */
void model_tensor_span(const model_core *m, int i, int64_t *offset, int64_t *size);

/* Allocate zeroed params and grads and all-ones masks (params only for a forward-only family).
   On failure everything is freed. */
isp_status model_init(model_core *m, const model_family *fam, const void *cfg, int64_t num_params,
                      int64_t num_prunable);
void model_free(model_core *m);
/* Grow the activation buffer to at least `floats` (no allocation otherwise); `batch` names the
   batch in the out-of-memory message ("a batch of 8 x 128 tokens"). */
isp_status model_reserve_acts(model_core *m, int64_t floats, const char *batch);
/* The 64-bit dropout key of one site of the current step. */
uint64_t model_key(const model_core *m, uint64_t site);
/* Before a backward pass: zero the gradients; after it: zero the masked ones and count the step. */
void model_zero_grads(model_core *m);
void model_finish_backward(model_core *m);
/* After a forward pass: count the step when training (dropout masks differ per step). */
void model_advance(model_core *m);
/* Copy params, masks and the family's own state; the two models must share family and config. */
isp_status model_copy(model_core *dst, const model_core *src);
/* Masked AdamW on the model's grads (optim.h); grads_masked: they already are (a fused step). */
isp_status model_adamw(model_core *m, float *mom1, float *mom2, const int64_t *seg,
                       const uint8_t *decay, int S, const adamw_hparams *hp, int grads_masked,
                       float *grad_norm);

/* x[0..n) = 0 in fixed chunks over our threads (gradient buffers reach 10^8 floats). */
void zero_floats(float *x, int64_t n);

#endif /* ISP_MODEL_H */
