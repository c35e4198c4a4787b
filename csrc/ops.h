/*
 * ops.h -- transformer building blocks as forward/backward pairs (after llm.c).
 *
 * Dimension legend: B batch, T tokens, C channels, NH heads, HS head size (C/NH), F feed-forward
 * size, V vocabulary, NL labels, N any number of rows, OC output channels.
 *
 * Conventions: outputs first, then inputs, then sizes. Backward passes ACCUMULATE (+=) into
 * parameter gradients (the caller zeroes them); activation gradients are OVERWRITTEN unless the
 * comment says otherwise. Every kernel is deterministic and (except the sgemm blocks of gemm_par)
 * independent of the thread count: each output element is reduced in a fixed order by one thread.
 */
#ifndef ISP_OPS_H
#define ISP_OPS_H

#include <stdint.h>

#include "isp.h"

/* The SIMD variant the elementwise kernels run: "avx512", "avx2" or "base" (chosen from CPUID at
 * first use; INSTANTSOUP_SIMD=avx2|base lowers it). Every variant gives the same bits. */
const char *ops_simd_name(void);

/* Activation functions of the feed-forward block (HF hidden_act names in brackets). */
typedef enum {
    ACT_GELU = 0,       /* exact erf GELU ["gelu"] */
    ACT_GELU_TANH = 1,  /* tanh approximation ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"] */
    ACT_RELU = 2,       /* ["relu"] */
    ACT_QUICK_GELU = 3, /* x * sigmoid(1.702 x) ["quick_gelu", CLIP] */
} isp_act;

/* ---- dropout: a counter-based RNG, so masks depend on (seed, step, site, index) only ---- */

/* A 64-bit key for one dropout site of one training step. */
uint64_t rng_key(uint64_t seed, uint64_t step, uint64_t site);
/* Uniform float in [0,1) (24 bits) for element idx under key. */
float rng_uniform(uint64_t key, uint64_t idx);

/* out = inp * keep / (1-p), keep = rng_uniform(key, i) >= p. out may alias inp. p in [0,1). */
void dropout_forward(float *out, const float *inp, int64_t N, float p, uint64_t key);
/* dinp = dout * keep / (1-p), the same mask. dinp may alias dout. */
void dropout_backward(float *dinp, const float *dout, int64_t N, float p, uint64_t key);

/* ---- layer normalisation over the last axis ---- */

/* out, inp are (N,C); mean, rstd are (N); weight, bias are (C). out may not alias inp. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps);
/* The residual sum and its LayerNorm in one pass over the rows: res = y' + x with y' = y, or
   with p > 0 y dropped out as dropout_forward(y, p, key) does; then out = LN(res) as
   layernorm_forward. Bitwise the same as dropout_forward, an add, and layernorm_forward. res may
   alias y. */
void residual_layernorm_forward(float *res, float *out, float *mean, float *rstd, const float *y,
                                const float *x, const float *weight, const float *bias, int64_t N,
                                int C, float eps, float p, uint64_t key);
/* dinp (N,C) is overwritten (may alias dout); dweight, dbias (C) accumulate. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean, const float *rstd,
                        int64_t N, int C);

/* ---- activations (elementwise over N values) ---- */

/* out = act(inp); out may alias inp. */
void act_forward(float *out, const float *inp, int64_t N, isp_act act);
/* dinp = dout * act'(inp); dinp may alias dout. */
void act_backward(float *dinp, const float *inp, const float *dout, int64_t N, isp_act act);

/* out = tanh(inp), dinp = dout * (1 - out^2) (uses the forward output). */
void tanh_forward(float *out, const float *inp, int64_t N);
void tanh_backward(float *dinp, const float *out, const float *dout, int64_t N);

/* ---- softmax over rows ---- */

/* probs, logits are (N,V). */
void softmax_forward(float *probs, const float *logits, int64_t N, int V);

/* ---- linear layers through sgemm ---- */

/* sgemm (row-major, as blas_sgemm_rm) with the rows of C split over our threads */
void gemm_par(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC; may be NULL). inp rows have stride ldi. */
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int C, int OC, int ldi);
/*
 * dinp (N,C) = dout @ weight (or += if accumulate; dinp may be NULL to skip);
 * dweight (OC,C) += dout^T @ inp; dbias (OC) += column sums of dout (may be NULL).
 * dout is (N,OC); inp rows have stride ldi.
 */
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int ldi, int accumulate);

/* ---- multi-head self-attention ---- */

/* Floats of per-thread scratch attention_forward/backward need. */
int64_t attention_scratch_size(int T, int C, int NH, int nthreads);
/*
 * out (B,T,C): softmax(Q K^T / sqrt(HS) + masks) V per head, heads concatenated.
 * att (B,NH,T,T): the probabilities (before dropout), saved for the backward pass.
 * qkv (B,T,3C): Q | K | V along the channels, head h at columns h*HS.. of each part.
 * amask (B,T) or NULL: 1 = a real token, 0 = padding (keys with 0 are never attended to;
 * a row with no key left attends uniformly, as adding finfo.min in PyTorch does).
 * causal: key j > query i is masked. p_drop: dropout on the probabilities (key: its RNG key).
 */
void attention_forward(float *out, float *att, const float *qkv, const uint8_t *amask, int B, int T,
                       int C, int NH, int causal, float p_drop, uint64_t key, float *scratch);
/* dqkv (B,T,3C) overwritten; dout (B,T,C). */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                        const uint8_t *amask, int B, int T, int C, int NH, int causal, float p_drop,
                        uint64_t key, float *scratch);

/* ---- embeddings: word + position + token type ---- */

/*
 * out (B,T,C) = wte[ids] + wpe[pos] + wtt[types]; ids, types, pos (B,T). types NULL: type 0;
 * pos NULL: position t; wtt NULL: no token types.
 */
void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                        const float *wte, const float *wpe, const float *wtt, int B, int T, int C);
/* dwte (V,C), dwpe (TP,C), dwtt (TV,C; NULL: none) accumulate dout (B,T,C). */
void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                         const int32_t *ids, const int32_t *types, const int32_t *pos, int B,
                         int T, int C);

/* ---- losses (mean over the batch) ---- */

/*
 * Cross-entropy with label smoothing eps (torch semantics: (1-eps) * nll + eps * mean_c(-logp)).
 * probs (B,NL) out; logits (B,NL); labels (B). Returns the mean loss.
 */
float crossentropy_forward(float *probs, const float *logits, const int32_t *labels, int B, int NL,
                           float smoothing);
/* dlogits (B,NL) = (probs - target) / B. */
void crossentropy_backward(float *dlogits, const float *probs, const int32_t *labels, int B, int NL,
                           float smoothing);
/* Mean squared error of preds (B) against targets (B); dpreds = 2 (preds - targets) / B. */
float mse_forward(const float *preds, const float *targets, int B);
void mse_backward(float *dpreds, const float *preds, const float *targets, int B);

/* The vectorisable exp and erf the kernels use (|rel err| ~ 2e-7, |abs err| ~ 2e-7), for tests. */
float ops_expf(float x);
float ops_erff(float x);

#endif /* ISP_OPS_H */
