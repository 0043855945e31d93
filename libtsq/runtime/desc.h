/*
 * The narrow description of an inference network that the runtime reads
 * (and nothing else: the runtime never sees a layer). Whoever produces a
 * network fills one: the nn bridge (nn/net_plan.c) from a tsq_net, a model
 * loader from file bytes. Every pointer is borrowed for the duration of
 * tsq__plan_from_desc, which copies what it keeps.
 *
 * A description is a list of stages over one activation, each with its
 * input and output sample dims (C, H, W; a vector of F features is F x 1 x
 * 1). Orders follow the float network: a conv's weights are cout x (cin,
 * ky, kx), a dense layer's out x in over the input's (C, H, W) order.
 */
#ifndef TSQ_RUNTIME_DESC_H
#define TSQ_RUNTIME_DESC_H

#include "internal.h"
#include "kernels/conv.h"

enum {
    TSQ__STAGE_CONV = 1, /* float conv2d: geom, weight, bias */
    TSQ__STAGE_DENSE,    /* float dense: weight (out x in), bias */
    TSQ__STAGE_AFFINE,   /* per channel y = scale * x + shift (eval batch-norm) */
    TSQ__STAGE_RELU,     /* max(x, 0) */
    TSQ__STAGE_MAXPOOL,  /* k x k windows, stride, no padding */
    TSQ__STAGE_FLATTEN,  /* (C, H, W) -> (C H W) */
    TSQ__STAGE_QUANT,    /* activation quantizer: codes, or values code * delta */
    TSQ__STAGE_LOWBIT    /* low-bit conv (conv = 1, geom) or dense on codes */
};

typedef struct tsq__stage_desc {
    int32_t kind;
    int32_t layer;      /* index in the source network, for messages */
    const char *name;   /* the source's name of the kind, for messages */
    int64_t in_c, in_h, in_w, out_c, out_h, out_w;
    int conv;                /* LOWBIT: a convolution (geom) rather than dense */
    tsq__conv_geom geom;     /* CONV, LOWBIT conv */
    const float *weight;     /* CONV, DENSE: cout x k or out x in */
    const float *bias;       /* CONV, DENSE, LOWBIT: one per output channel */
    const float *scale;      /* AFFINE: per channel */
    const float *shift;      /* AFFINE: per channel */
    int64_t k, stride;       /* MAXPOOL */
    int64_t nq;              /* QUANT: 1 (shared) or in_c parameter sets */
    const int32_t *bits;     /* QUANT: nq code widths, 1..8 */
    const float *eps;        /* QUANT: nq thresholds */
    const float *delta;      /* QUANT: nq level spacings, > 0 */
    int codes_out;           /* QUANT: 1 outputs codes, 0 outputs code * delta */
    const int8_t *wcodes;    /* LOWBIT: out x in weight codes (the float order above) */
    int32_t weight_bits;     /* LOWBIT: 2..8 */
    const float *alpha;      /* LOWBIT: out scales, each > 0 */
} tsq__stage_desc;

typedef struct tsq__net_desc {
    int32_t in_ndim;          /* 1 (F) or 3 (C, H, W) */
    int64_t in_shape[3];
    int32_t nstages;
    tsq__stage_desc *stages;
} tsq__net_desc;

/* The plan of a description (runtime/plan_build.c). Fails with
 * TSQ_ERR_STATE when no stage is low-bit, TSQ_ERR_UNSUPPORTED for a stage
 * the plan cannot run (message with its layer index and name), or a
 * status of the packing / thresholds. Errors on ctx. */
tsq_status tsq__plan_from_desc(tsq_context *ctx, const tsq__net_desc *d, tsq_plan **out);

#endif /* TSQ_RUNTIME_DESC_H */
