/* optim.c -- masked AdamW and gradient-norm clipping (see optim.h). */
#include <math.h>

#include "optim.h"

#define NT isp_get_num_threads()
#define NORM_CHUNK 65536

double vector_norm(const float *x, int64_t N)
{
    int64_t nchunks = (N + NORM_CHUNK - 1) / NORM_CHUNK;
    double total = 0.0;
    /* each chunk is summed by one thread; chunks are combined in order */
#pragma omp parallel for num_threads(NT) schedule(static) ordered if (N >= 4 * NORM_CHUNK)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t i0 = k * NORM_CHUNK, i1 = i0 + NORM_CHUNK < N ? i0 + NORM_CHUNK : N;
        double acc[4] = {0, 0, 0, 0};
        int64_t i = i0;
        for (; i + 4 <= i1; i += 4)
            for (int j = 0; j < 4; j++)
                acc[j] += (double)x[i + j] * x[i + j];
        for (; i < i1; i++)
            acc[0] += (double)x[i] * x[i];
        double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
#pragma omp ordered
        total += s;
    }
    return sqrt(total);
}

void mask_apply(float *x, const uint8_t *mask, int64_t P)
{
#pragma omp parallel for num_threads(NT) schedule(static) if (P >= 65536)
    for (int64_t i = 0; i < P; i++)
        x[i] = mask[i] ? x[i] : 0.0f;
}

isp_status adamw_update(float *params, float *m, float *v, float *grads, int64_t N,
                        const int64_t *seg, const uint8_t *decay, int S, const uint8_t *mask,
                        int64_t mask_off, int64_t P, const adamw_hparams *hp, float *grad_norm)
{
    if (mask != NULL)
        mask_apply(grads + mask_off, mask, P);
    float norm = (float)vector_norm(grads, N);
    if (grad_norm != NULL)
        *grad_norm = norm;
    if (!isfinite(norm))
        return isp_fail(ISP_ERR_NONFINITE,
                        "the gradient norm is %s: a NaN or inf reached the gradients (check the "
                        "inputs, labels and learning rate); the parameters were not updated",
                        isnan(norm) ? "nan" : "inf");
    if (hp->max_norm > 0.0f) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, always applied */
        float coef = hp->max_norm / (norm + 1e-6f);
        if (coef > 1.0f)
            coef = 1.0f;
#pragma omp parallel for num_threads(NT) schedule(static) if (N >= 65536)
        for (int64_t i = 0; i < N; i++)
            grads[i] *= coef;
    }
    const float b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, lr = hp->lr;
    const double bc1 = 1.0 - pow((double)b1, (double)hp->step);
    const double bc2 = 1.0 - pow((double)b2, (double)hp->step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float one_m_b1 = 1.0f - b1, one_m_b2 = 1.0f - b2;
    for (int s = 0; s < S; s++) {
        const float shrink = decay[s] ? 1.0f - lr * hp->weight_decay : 1.0f;
        const int64_t i0 = seg[s], i1 = seg[s + 1];
#pragma omp parallel for num_threads(NT) schedule(static) if (i1 - i0 >= 65536)
        for (int64_t i = i0; i < i1; i++) {
            if (mask != NULL && i >= mask_off && i < mask_off + P && !mask[i - mask_off]) {
                params[i] = 0.0f;
                m[i] = 0.0f;
                v[i] = 0.0f;
                continue;
            }
            float g = grads[i];
            float p = params[i] * shrink;
            float mi = m[i] + one_m_b1 * (g - m[i]); /* torch lerp */
            float vi = v[i] * b2 + one_m_b2 * g * g;
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            params[i] = p - step_size * mi / denom;
            m[i] = mi;
            v[i] = vi;
        }
    }
    return ISP_OK;
}
