/*
 * profile.h -- an opt-in profile of the training step by kernel call site (wall and CPU time).
 *
 * Off by default: each wrapped call then costs two loads and branches. `_C.set_profile(True)`
 * zeroes the table and turns it on, `_C.set_profile(False)` stops it, `_C.get_profile()` reads it
 * (benchmarks/profile_step.py prints it).
 * Sites are timed on the calling thread around whole kernel calls (each may run its own OpenMP
 * region inside), never inside a parallel region, in wall time and in the process's CPU time (the
 * latter is what a loaded machine distorts least); the table is process-wide, so profile one model
 * step at a time.
 */
#ifndef ISP_PROFILE_H
#define ISP_PROFILE_H

#include "isp.h"

#define ISP_PROF_SITES(X)                                                                          \
    X(EMB_FWD, "embeddings fwd (gather + LN + dropout)")                                           \
    X(QKV_FWD, "linear qkv fwd")                                                                   \
    X(ATT_FWD, "attention fwd (QK^T, mask, softmax, dropout, PV)")                                 \
    X(PROJ_FWD, "linear attn-out fwd")                                                             \
    X(RES_LN_FWD, "dropout + residual add + layernorm fwd (one pass)")                             \
    X(RES_FWD, "dropout + residual add fwd (pre-LN output)")                                       \
    X(LN_FWD, "layernorm fwd (pre-LN input)")                                                      \
    X(FC_FWD, "linear fc1 fwd")                                                                    \
    X(ACT_FWD, "activation fwd")                                                                   \
    X(FCPROJ_FWD, "linear fc2 fwd")                                                                \
    X(HEAD, "classifier head fwd and bwd, loss")                                                   \
    X(LN_BWD, "layernorm bwd")                                                                     \
    X(RES_BWD, "dropout bwd + residual adds")                                                      \
    X(ACT_BWD, "activation recompute + bwd")                                                       \
    X(FCPROJ_BWD, "linear fc2 bwd (dx, dW, db)")                                                   \
    X(FC_BWD, "linear fc1 bwd (dx, dW, db)")                                                       \
    X(PROJ_BWD, "linear attn-out bwd (dx, dW, db)")                                                \
    X(ATT_BWD, "attention bwd")                                                                    \
    X(QKV_BWD, "linear qkv bwd (dx, dW, db)")                                                      \
    X(EMB_BWD, "embeddings bwd")                                                                   \
    X(GRADS, "zero grads + mask grads")                                                            \
    X(ADAMW, "AdamW (norm, clip, update, mask)")

#define ISP_PROF_ENUM(id, name) ISP_PROF_##id,
typedef enum { ISP_PROF_SITES(ISP_PROF_ENUM) ISP_PROF_NUM } isp_prof_site;
#undef ISP_PROF_ENUM

/* a point in time: wall clock and the CPU time of the whole process (all its threads) */
typedef struct {
    double wall, cpu;
} isp_prof_mark;

extern int isp_prof_on;
isp_prof_mark isp_prof_now(void);
void isp_prof_add(isp_prof_site site, isp_prof_mark t0);
/* on: zero the table and start recording; off: stop (the table is kept) */
void isp_prof_set(int on);
/* site i: its name, accumulated wall and CPU seconds and calls; NULL name past the end */
const char *isp_prof_read(int i, double *wall, double *cpu, int64_t *calls);

/* time the statement(s) at SITE when profiling is on */
#define PROF(site, ...)                                                                            \
    do {                                                                                           \
        isp_prof_mark prof_t0_ = {0.0, 0.0};                                                       \
        if (isp_prof_on)                                                                           \
            prof_t0_ = isp_prof_now();                                                             \
        __VA_ARGS__;                                                                               \
        if (isp_prof_on)                                                                           \
            isp_prof_add(ISP_PROF_##site, prof_t0_);                                               \
    } while (0)

#endif /* ISP_PROFILE_H */
