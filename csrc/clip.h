/*
 * clip.h -- CLIP-specific kernels: the vision tower's patch embedding (a matmul over image
 * patches, plus class token and position embeddings) and the cosine classification head
 * (zero-shot or linear probe on L2-normalised image features).
 *
 * Dimension letters (see isp.h) plus: IH, IW image height/width, PS patch size, GH, GW patch grid
 * (IH/PS, IW/PS), NP patches (GH*GW), T = NP + 1 tokens, K = 3*PS*PS values per patch,
 * D projection (feature) size, NL classes.
 */
#ifndef ISP_CLIP_H
#define ISP_CLIP_H

#include <stdint.h>

#include "isp.h"

/* Rearrange images into one row per patch, in the order of a (C, 3, PS, PS) conv weight.
 * cols is (B*NP, K), pix is (B,3,IH,IW). Patches run row-major over the grid. */
void patch_im2col(float *cols, const float *pix, int B, int IH, int IW, int PS);

/* Forward of CLIP's vision embeddings.
 * out is (B,T,C): out[b,0] = cls + pos[0]; out[b,1+n] = cols[b*NP+n] @ w^T + pos[1+n].
 * cols is (B*NP, K) scratch that is filled here (and kept for the backward pass),
 * pix is (B,3,IH,IW), w is (C,K), cls is (C), pos is (T,C). */
isp_status patch_embed_forward(float *out, float *cols, const float *pix, const float *w,
                               const float *cls, const float *pos, int B, int IH, int IW, int PS,
                               int C);

/* Backward: accumulates (+=) into dw (C,K), dcls (C), dpos (T,C) from dout (B,T,C) and the
 * cols (B*NP,K) of the forward pass; scratch is (B*NP,C). Pixels get no gradient. */
isp_status patch_embed_backward(float *dw, float *dcls, float *dpos, float *scratch,
                                const float *dout, const float *cols, int B, int NP, int K, int C);

/* Cosine head: fn = f / ||f|| per row, logits = fn @ w^T (+ bias).
 * logits is (B,NL); fn is (B,D) and inv_norm (B) are saved for the backward pass;
 * f is (B,D), w is (NL,D), bias is (NL) or NULL. Zero-norm features are an error. */
isp_status cosine_head_forward(float *logits, float *fn, float *inv_norm, const float *f,
                               const float *w, const float *bias, int B, int D, int NL);

/* Backward: df (B,D) is overwritten (not accumulated) with the gradient w.r.t. f; when dw/dbias
 * are non-NULL, the head's gradients are accumulated (+=): dw (NL,D), dbias (NL).
 * dlogits is (B,NL), fn (B,D) and inv_norm (B) from the forward pass, w is (NL,D). */
isp_status cosine_head_backward(float *df, float *dw, float *dbias, const float *dlogits,
                                const float *fn, const float *inv_norm, const float *w, int B,
                                int D, int NL);

#endif /* ISP_CLIP_H */
