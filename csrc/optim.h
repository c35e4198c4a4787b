/*
 * optim.h -- masked AdamW with torch.optim.AdamW semantics and global gradient-norm clipping with
 * torch.nn.utils.clip_grad_norm_ semantics, over one flat parameter buffer (llm.c style).
 *
 * N parameters; the buffer is split into S consecutive segments [seg[s], seg[s+1]) each with a
 * weight-decay flag (HF Trainer: no decay on biases and LayerNorm weights). An optional uint8 mask
 * covers the prunable range [mask_off, mask_off + P): where it is 0 the parameter, its gradient
 * and both moments are kept at exactly 0.
 */
#ifndef ISP_OPTIM_H
#define ISP_OPTIM_H

#include <stdint.h>

#include "isp.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step;   /* the step being taken, >= 1 (bias correction) */
    float max_norm; /* clip the global gradient norm to this; <= 0: no clipping */
} adamw_hparams;

/* Global L2 norm of x (N), summed in double over fixed chunks: thread-count independent. */
double vector_norm(const float *x, int64_t N);
/* x[i] = 0 where mask[i] == 0; x and mask are (P). */
void mask_apply(float *x, const uint8_t *mask, int64_t P);

/*
 * One optimizer step: grads are masked (unless grads_masked says they already are) and clipped in
 * place (when hp->max_norm > 0), then AdamW updates
 * params, m, v (all (N)); masked entries are zeroed. *grad_norm gets the norm before clipping
 * (after masking). Returns ISP_ERR_NONFINITE, leaving every buffer unchanged, when that norm
 * is not finite.
 */
isp_status adamw_update(float *params, float *m, float *v, float *grads, int64_t N,
                        const int64_t *seg, const uint8_t *decay, int S, const uint8_t *mask,
                        int64_t mask_off, int64_t P, int grads_masked, const adamw_hparams *hp,
                        float *grad_norm);

#endif /* ISP_OPTIM_H */
