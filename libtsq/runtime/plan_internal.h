/*
 * Inside the inference plan: the stages tsq__plan_from_desc decides once
 * (plan_build.c) and tsq_plan_run executes (plan_run.c) without checking
 * again what the build guaranteed.
 *
 * The activation between stages is either float, NCHW per sample (as the
 * float network computes), or uint8 codes, NHWC per sample (rows of the
 * low-bit kernels' M x N output).
 */
#ifndef TSQ_RUNTIME_PLAN_INTERNAL_H
#define TSQ_RUNTIME_PLAN_INTERNAL_H

#include "kernels/conv.h"
#include "kernels/encode.h"
#include "kernels/kernels_internal.h"
#include "kernels/vec.h"

enum {
    OP_CONV = 1, /* float conv2d (NCHW) */
    OP_DENSE,    /* float dense */
    OP_AFFINE,   /* batch-norm in eval mode: per channel s x + t */
    OP_RELU,     /* float max(x, 0) */
    OP_FPOOL,    /* float max-pool (NCHW) */
    OP_ENCODE,   /* float NCHW -> codes NHWC (the quantizer's code) */
    OP_DECODE,   /* codes NHWC -> float NCHW, times a per-channel scale */
    OP_CPOOL,    /* max-pool on NHWC codes */
    OP_LOWBIT    /* low-bit dense / conv on codes */
};

typedef struct tsq__plan_stage {
    int32_t op;
    int64_t c, h, w;    /* input sample dims (vectors: c = F, h = w = 1) */
    int64_t oc, oh, ow; /* output sample dims */
    /* float conv / dense */
    tsq__conv_geom g;
    float *weight, *bias; /* dense: out x in */
    /* per channel: affine (s, t), encode (eps, inv_delta), decode (scale) */
    float *s, *t;
    int32_t *maxcode;
    tsq__encode_span_fn encode; /* chosen at create from the context's CPU */
    /* pooling */
    int64_t k, stride;
    /* low-bit */
    int conv;
    int64_t kh, kw, pad; /* and stride above */
    int32_t code_bits;   /* of the input codes */
    tsq_packed_weights *pw;
    tsq_thresholds *th;  /* NULL: float output alpha * acc + b */
    float *alpha, *beta; /* for the float output */
} tsq__plan_stage;

struct tsq_plan {
    tsq__object obj; /* ctx for freeing; the message is unused (shared) */
    tsq__plan_stage *stages;
    int32_t nstages;
    uint32_t cpu;    /* the creating context's CPU features */
    int64_t in_numel, out_numel;
    double macs;     /* multiply-adds per sample (products of every stage) */
    int64_t lowbit, fused, packed_bytes, packed_fp32, float_bytes;
};

#define TSQ__PLAN_ALIGN 64

#endif /* TSQ_RUNTIME_PLAN_INTERNAL_H */
