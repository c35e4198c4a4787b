/*
 * clip.c -- CLIP's vision embeddings (patch embedding as a matmul over patches, class token,
 * position embeddings) and the cosine classification head, forward and backward.
 * Dimension letters: see clip.h.
 */
#include <math.h>
#include <string.h>

#include "clip.h"
#include "ops.h"

void patch_im2col(float *cols, const float *pix, int B, int IH, int IW, int PS)
{
    // cols is (B*NP, K), pix is (B,3,IH,IW)
    const int GH = IH / PS, GW = IW / PS, NP = GH * GW, K = 3 * PS * PS;
    const int64_t rows = (int64_t)B * NP;
#pragma omp parallel for num_threads(isp_get_num_threads()) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int b = (int)(r / NP), n = (int)(r % NP);
        const int gy = n / GW, gx = n % GW;
        float *row = cols + r * K;
        for (int c = 0; c < 3; c++) {
            const float *plane = pix + ((int64_t)b * 3 + c) * IH * IW;
            for (int py = 0; py < PS; py++) {
                const float *src = plane + (int64_t)(gy * PS + py) * IW + gx * PS;
                memcpy(row + (c * PS + py) * PS, src, (size_t)PS * sizeof(float));
            }
        }
    }
}

isp_status patch_embed_forward(float *out, float *cols, const float *pix, const float *w,
                               const float *cls, const float *pos, int B, int IH, int IW, int PS,
                               int C)
{
    // out is (B,T,C), cols is (B*NP,K), pix is (B,3,IH,IW), w is (C,K), cls is (C), pos is (T,C)
    if (B <= 0 || PS <= 0 || C <= 0 || IH < PS || IW < PS || IH % PS || IW % PS)
        return isp_fail(ISP_ERR_VALUE,
                        "patch_embed_forward: image %dx%d is not a positive multiple of the patch "
                        "size %d (B=%d, C=%d)",
                        IH, IW, PS, B, C);
    const int NP = (IH / PS) * (IW / PS), T = NP + 1, K = 3 * PS * PS;
    patch_im2col(cols, pix, B, IH, IW, PS);
    // one GEMM for all patches, written to rows 1..B*NP of out viewed as (B*T, C) ...
    gemm_par(0, 1, B * NP, C, K, 1.0f, cols, K, w, K, 0.0f, out + C, C);
    // ... then each image's rows move down by b to make room for the class tokens. Row r goes
    // from 1+r to 1+r+b; walking r downwards never overwrites a row still to be moved.
    for (int b = B - 1; b > 0; b--) {
        float *src = out + (1 + (int64_t)b * NP) * C;
        memmove(src + (int64_t)b * C, src, sizeof(float) * (size_t)NP * C);
    }
#pragma omp parallel for num_threads(isp_get_num_threads()) schedule(static)
    for (int b = 0; b < B; b++) {
        float *ob = out + (int64_t)b * T * C;
        for (int i = 0; i < C; i++)
            ob[i] = cls[i] + pos[i];
        for (int t = 1; t < T; t++) {
            float *o = ob + (int64_t)t * C;
            const float *p = pos + (int64_t)t * C;
            for (int i = 0; i < C; i++)
                o[i] += p[i];
        }
    }
    return ISP_OK;
}

isp_status patch_embed_backward(float *dw, float *dcls, float *dpos, float *scratch,
                                const float *dout, const float *cols, int B, int NP, int K, int C)
{
    // dw is (C,K), dcls is (C), dpos is (T,C), scratch is (B*NP,C), dout is (B,T,C),
    // cols is (B*NP,K)
    if (B <= 0 || NP <= 0 || K <= 0 || C <= 0)
        return isp_fail(ISP_ERR_VALUE, "patch_embed_backward: bad sizes B=%d NP=%d K=%d C=%d", B,
                        NP, K, C);
    const int T = NP + 1;
    // gather the patch rows of dout, then dw += dpatches^T (C,B*NP) @ cols (B*NP,K)
#pragma omp parallel for num_threads(isp_get_num_threads()) schedule(static)
    for (int b = 0; b < B; b++)
        memcpy(scratch + (int64_t)b * NP * C, dout + ((int64_t)b * T + 1) * C,
               sizeof(float) * (size_t)NP * C);
    gemm_par(1, 0, C, K, B * NP, 1.0f, scratch, C, cols, K, 1.0f, dw, K);
    // position / class gradients: sums over the batch, parallel over channels (deterministic)
#pragma omp parallel for num_threads(isp_get_num_threads()) schedule(static)
    for (int i = 0; i < C; i++) {
        for (int t = 0; t < T; t++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++)
                s += dout[((int64_t)b * T + t) * C + i];
            dpos[(int64_t)t * C + i] += s;
            if (t == 0)
                dcls[i] += s;
        }
    }
    return ISP_OK;
}

isp_status cosine_head_forward(float *logits, float *fn, float *inv_norm, const float *f,
                               const float *w, const float *bias, int B, int D, int NL)
{
    // logits is (B,NL), fn is (B,D), inv_norm is (B), f is (B,D), w is (NL,D), bias is (NL)|NULL
    if (B <= 0 || D <= 0 || NL <= 0)
        return isp_fail(ISP_ERR_VALUE, "cosine_head_forward: bad sizes B=%d D=%d NL=%d", B, D, NL);
    int bad = -1;
    for (int b = 0; b < B; b++) {
        const float *x = f + (int64_t)b * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++)
            ss += (double)x[i] * x[i];
        if (!(ss > 0.0) || !isfinite(ss)) {
            bad = b;
            break;
        }
        const float inv = (float)(1.0 / sqrt(ss));
        inv_norm[b] = inv;
        float *y = fn + (int64_t)b * D;
        for (int i = 0; i < D; i++)
            y[i] = x[i] * inv;
    }
    if (bad >= 0)
        return isp_fail(ISP_ERR_NONFINITE,
                        "cosine_head_forward: image feature %d has a zero or non-finite norm", bad);
    gemm_par(0, 1, B, NL, D, 1.0f, fn, D, w, D, 0.0f, logits, NL);
    if (bias != NULL) {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < NL; j++)
                logits[(int64_t)b * NL + j] += bias[j];
    }
    return ISP_OK;
}

isp_status cosine_head_backward(float *df, float *dw, float *dbias, const float *dlogits,
                                const float *fn, const float *inv_norm, const float *w, int B,
                                int D, int NL)
{
    // df is (B,D), dw is (NL,D)|NULL, dbias is (NL)|NULL, dlogits is (B,NL), fn is (B,D),
    // inv_norm is (B), w is (NL,D)
    if (B <= 0 || D <= 0 || NL <= 0)
        return isp_fail(ISP_ERR_VALUE, "cosine_head_backward: bad sizes B=%d D=%d NL=%d", B, D,
                        NL);
    if (dw != NULL) // dw += dlogits^T (NL,B) @ fn (B,D)
        gemm_par(1, 0, NL, D, B, 1.0f, dlogits, NL, fn, D, 1.0f, dw, D);
    if (dbias != NULL) {
        for (int j = 0; j < NL; j++) {
            float s = 0.0f;
            for (int b = 0; b < B; b++)
                s += dlogits[(int64_t)b * NL + j];
            dbias[j] += s;
        }
    }
    // dfn = dlogits @ w (B,D); df = (dfn - fn * <fn, dfn>) / ||f||
    gemm_par(0, 0, B, D, NL, 1.0f, dlogits, NL, w, D, 0.0f, df, D);
    for (int b = 0; b < B; b++) {
        float *g = df + (int64_t)b * D;
        const float *y = fn + (int64_t)b * D;
        float dot = 0.0f;
        for (int i = 0; i < D; i++)
            dot += y[i] * g[i];
        for (int i = 0; i < D; i++)
            g[i] = (g[i] - y[i] * dot) * inv_norm[b];
    }
    return ISP_OK;
}
