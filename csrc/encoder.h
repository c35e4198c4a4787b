/*
 * encoder.h -- a stack of transformer encoder blocks (BERT post-LN or CLIP/ViT pre-LN), its
 * parameter layout, forward and backward. Embeddings and task heads live elsewhere (classifier.c), so
 * another model (CLIP's vision tower) can put its own patch embedding and pooling around it.
 *
 * Dimension legend: B batch, T tokens, C channels, NH heads, HS = C/NH, F feed-forward, L layers.
 *
 * Parameter layout (llm.c style: the tensors are consecutive in ONE float buffer, each stacked
 * over the L layers; gradients and optimizer moments use the same layout):
 *
 *   qkvw     (L, 3C, C)  rows [0,C) query, [C,2C) key, [2C,3C) value   -- prunable --+
 *   attprojw (L, C, C)   attention output dense                         -- prunable   | one
 *   fcw      (L, F, C)   intermediate dense                             -- prunable   | range
 *   fcprojw  (L, C, F)   output dense                                   -- prunable --+
 *   qkvb (L,3C)  attprojb (L,C)  ln1w ln1b (L,C)  fcb (L,F)  fcprojb (L,C)  ln2w ln2b (L,C)
 *
 * The four prunable tensors come first, so their masks are one contiguous uint8 range.
 *
 * Block, post-LN (BERT):  a = LN1(x + drop(proj(attn(x))));   y = LN2(a + drop(fc2(act(fc1(a)))))
 * Block, pre-LN (CLIP):   a = x + drop(proj(attn(LN1(x))));   y = a + drop(fc2(act(fc1(LN2(a)))))
 */
#ifndef ISP_ENCODER_H
#define ISP_ENCODER_H

#include <stdint.h>

#include "isp.h"

#include "ops.h"

typedef struct {
    int L, C, NH, F;
    isp_act act;
    int prenorm;    /* 0: post-LN (BERT), 1: pre-LN (CLIP, ViT) */
    int causal;     /* causal self-attention (CLIP's text tower) */
    float eps;      /* layer_norm_eps */
    float p_hidden; /* dropout after the attention output and the feed-forward output */
    float p_attn;   /* dropout on the attention probabilities */
} encoder_config;

#define ENC_NUM_TENSORS 12
#define ENC_NUM_PRUNABLE 4

typedef struct {
    float *qkvw, *attprojw, *fcw, *fcprojw; /* prunable weights, in this order */
    float *qkvb, *attprojb, *ln1w, *ln1b, *fcb, *fcprojb, *ln2w, *ln2b;
} encoder_params;

/* Names of the tensors in layout order ("qkvw", ...) and their sizes. */
extern const char *const encoder_tensor_names[ENC_NUM_TENSORS];

/* Check sizes, activation, eps and dropout rates; messages start with `what` ("config"). */
isp_status encoder_config_check(const encoder_config *cfg, const char *what);

void encoder_tensor_sizes(int64_t sizes[ENC_NUM_TENSORS], const encoder_config *cfg);
int64_t encoder_num_params(const encoder_config *cfg);
int64_t encoder_num_prunable(const encoder_config *cfg);
/* Point p's tensors into base (encoder_num_params floats). */
void encoder_point_params(encoder_params *p, float *base, const encoder_config *cfg);

/* Saved activations for one (B,T), each stacked over layers (see encoder.c for their meaning). */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* (L,B,T,C), (L,B,T), (L,B,T) */
    float *qkv;                       /* (L,B,T,3C) */
    float *att;                       /* (L,B,NH,T,T) */
    float *atty;                      /* (L,B,T,C) */
    float *res1;                      /* (L,B,T,C) */
    float *ln2, *ln2_mean, *ln2_rstd; /* (L,B,T,C), (L,B,T), (L,B,T) */
    float *fch;                       /* (L,B,T,F) before the activation */
    float *res2;                      /* (L,B,T,C) */
    /* scratch shared by the layers */
    float *hact, *dhact;          /* (B,T,F): act(fch) and its gradient */
    float *tmp, *tmp2;            /* (B,T,C) */
    float *dqkv;                  /* (B,T,3C) */
    float *attn_scratch;          /* attention_scratch_size(T, C, NH, nthreads) */
    int shared;                   /* 1: every layer uses the same slot (forward only) */
} encoder_acts;

/* Floats of saved activations and scratch for (B,T) (everything the backward pass needs). */
int64_t encoder_acts_size(const encoder_config *cfg, int B, int T, int nthreads);
void encoder_point_acts(encoder_acts *a, float *base, const encoder_config *cfg, int B, int T);
/*
 * The same with a choice: forward_only = 1 keeps one layer's activations (all layers write the
 * same slot: enough for inference, L times smaller; encoder_backward must not be called then).
 */
int64_t encoder_acts_size_mode(const encoder_config *cfg, int B, int T, int nthreads,
                               int forward_only);
void encoder_point_acts_mode(encoder_acts *a, float *base, const encoder_config *cfg, int B, int T,
                             int forward_only);

/* Dropout state for one pass: keys derive from (seed, step, site_base + 3*layer + k). */
typedef struct {
    int training;
    uint64_t seed, step, site_base;
} encoder_rng;

/* The output of the stack, (B,T,C), inside acts. */
float *encoder_output(const encoder_acts *a, const encoder_config *cfg, int B, int T);

/* inp (B,T,C); amask (B,T) or NULL (1 = real token). */
void encoder_forward(encoder_acts *a, const encoder_params *p, const encoder_config *cfg,
                     const float *inp, const uint8_t *amask, int B, int T, const encoder_rng *rng);
/*
 * dio (B,T,C): in: gradient of the loss w.r.t. the stack's output; out: w.r.t. its input.
 * g accumulates the parameter gradients. inp and amask as given to the forward pass.
 */
void encoder_backward(float *dio, encoder_params *g, const encoder_params *p, const encoder_acts *a,
                      const encoder_config *cfg, const float *inp, const uint8_t *amask, int B,
                      int T, const encoder_rng *rng);

#endif /* ISP_ENCODER_H */
