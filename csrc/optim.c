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

#define ADAM_CHUNK 65536

/* AdamW on [i0,i1) with gradients scaled by gscale (clipping); with a mask (indexed from
   mask_off) masked entries become exactly 0 */
static void adam_range(float *params, float *m, float *v, float *grads, int64_t i0, int64_t i1,
                       const uint8_t *mask, int64_t mask_off, float gscale, float shrink, float b1,
                       float b2, float eps, float step_size, float bc2_sqrt)
{
    const float one_m_b1 = 1.0f - b1, one_m_b2 = 1.0f - b2;
    for (int64_t i = i0; i < i1; i++) {
        float g = grads[i] * gscale;
        grads[i] = g; /* the clipped gradient, as clip_grad_norm_ leaves it */
        float p = params[i] * shrink;
        float mi = m[i] + one_m_b1 * (g - m[i]); /* torch lerp */
        float vi = v[i] * b2 + one_m_b2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p = p - step_size * mi / denom;
        if (mask != NULL) {
            int keep = mask[i - mask_off] != 0;
            p = keep ? p : 0.0f;
            mi = keep ? mi : 0.0f;
            vi = keep ? vi : 0.0f;
        }
        params[i] = p;
        m[i] = mi;
        v[i] = vi;
    }
}

isp_status adamw_update(float *params, float *m, float *v, float *grads, int64_t N,
                        const int64_t *seg, const uint8_t *decay, int S, const uint8_t *mask,
                        int64_t mask_off, int64_t P, int grads_masked, const adamw_hparams *hp,
                        float *grad_norm)
{
    /* the bindings check these too; the kernel re-checks what would index out of bounds */
    if (S < 1 || seg[0] != 0 || seg[S] != N)
        return isp_fail(ISP_ERR_VALUE, "AdamW: segments must run from 0 to %lld", (long long)N);
    for (int s = 0; s < S; s++)
        if (seg[s + 1] < seg[s])
            return isp_fail(ISP_ERR_VALUE, "AdamW: segments must be non-decreasing (segment %d)",
                            s);
    if (mask != NULL && (mask_off < 0 || P < 0 || mask_off > N || P > N - mask_off))
        return isp_fail(ISP_ERR_VALUE, "AdamW: mask range [%lld, +%lld) outside the %lld parameters",
                        (long long)mask_off, (long long)P, (long long)N);
    if (mask != NULL && !grads_masked)
        mask_apply(grads + mask_off, mask, P);
    float norm = (float)vector_norm(grads, N);
    if (grad_norm != NULL)
        *grad_norm = norm;
    if (!isfinite(norm))
        return isp_fail(ISP_ERR_NONFINITE,
                        "the gradient norm is %s: a NaN or inf reached the gradients (check the "
                        "inputs, labels and learning rate); the parameters were not updated",
                        isnan(norm) ? "nan" : "inf");
    float coef = 1.0f;
    if (hp->max_norm > 0.0f) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, always applied */
        coef = hp->max_norm / (norm + 1e-6f);
        if (coef > 1.0f)
            coef = 1.0f;
    }
    const float b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, lr = hp->lr;
    const double bc1 = 1.0 - pow((double)b1, (double)hp->step);
    const double bc2 = 1.0 - pow((double)b2, (double)hp->step);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    for (int s = 0; s < S; s++) {
        const float shrink = decay[s] ? 1.0f - lr * hp->weight_decay : 1.0f;
        const int64_t i0 = seg[s], i1 = seg[s + 1];
        const int64_t nchunks = (i1 - i0 + ADAM_CHUNK - 1) / ADAM_CHUNK;
#pragma omp parallel for num_threads(NT) schedule(static) if (nchunks > 1)
        for (int64_t k = 0; k < nchunks; k++) {
            int64_t a0 = i0 + k * ADAM_CHUNK, a1 = a0 + ADAM_CHUNK < i1 ? a0 + ADAM_CHUNK : i1;
            /* split [a0,a1) into the parts outside and inside the masked range */
            int64_t m0 = mask != NULL ? mask_off : a1, m1 = mask != NULL ? mask_off + P : a1;
            m0 = m0 < a0 ? a0 : (m0 > a1 ? a1 : m0);
            m1 = m1 < m0 ? m0 : (m1 > a1 ? a1 : m1);
            adam_range(params, m, v, grads, a0, m0, NULL, 0, coef, shrink, b1, b2, eps, step_size,
                       bc2_sqrt);
            adam_range(params, m, v, grads, m0, m1, mask, mask_off, coef, shrink, b1, b2, eps,
                       step_size, bc2_sqrt);
            adam_range(params, m, v, grads, m1, a1, NULL, 0, coef, shrink, b1, b2, eps, step_size,
                       bc2_sqrt);
        }
    }
    return ISP_OK;
}
