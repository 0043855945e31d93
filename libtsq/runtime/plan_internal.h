/*
 * Inside the inference plan: the stages tsq__plan_from_desc decides once
 * (plan_build.c) and tsq_plan_run executes (plan_run.c) without checking
 * again what the build guaranteed.
 *
 * The activation between stages is float, NCHW per sample (as the float
 * network computes), uint8 codes, NHWC per sample (rows of the low-bit
 * kernels' M x N output), or, between low-bit layers on the fused path,
 * the next kernel's operand: bit planes, the byte or the pair layout, padded NHWC
 * (kernels/bitplane.h, runtime/plan_bits.c).
 */
#ifndef TSQ_RUNTIME_PLAN_INTERNAL_H
#define TSQ_RUNTIME_PLAN_INTERNAL_H

#include "kernels/bitplane.h"
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
    OP_LOWBIT,   /* low-bit dense / conv on codes (or bit planes: bp_in) */
    OP_TOBP,     /* codes NHWC -> bit planes (bout) */
    OP_FRONT,    /* float NCHW -> [affine s, t] [relu] quantizer (qeps, qinv, maxcode) -> bout */
    OP_CONV_FRONT /* float NCHW -> direct conv (g, weight tap-major, bias), then as OP_FRONT */
};

typedef struct tsq__plan_stage {
    int32_t op;
    int64_t c, h, w;    /* input sample dims (vectors: c = F, h = w = 1) */
    int64_t oc, oh, ow; /* output sample dims */
    /* float conv / dense */
    tsq__conv_geom g;
    uint32_t cpu;         /* conv: the creating context's features (tsq__conv_direct_runs) */
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
    /* the bit-plane path (plan_bits.c) */
    int bp_in;           /* LOWBIT: reads bit planes `bin` (VPOPCNT kernel, fused thresholds) */
    int bp_bytes;        /* ... in the byte layout instead (VNNI kernel on `dec`) */
    int bp_avx2;         /* ... on the AVX2 kernels instead (no AVX-512 on the CPU) */
    int8_t *dec;         /* bp_bytes: the weights as decoded panels, once */
    int bp_inplace;      /* ... read in place (a window row is whole groups of 4 k) */
    int bp_amx;          /* bp_bytes on AMX-INT8 tiles (tsq__conv_amx on `amx`; dec freed) */
    int8_t *amx;         /* bp_amx: the panels re-laid for the tiles (tsq__amx_pack) */
    int64_t amx_kh, amx_seg; /* ... their window rows and bytes per row */
    int bp_pairs;        /* bp_avx2 in the pair layout: the pair kernel on `pairs` */
    uint8_t *pairs;      /* bp_pairs: the weights as pair panels (tsq__pair_panels) */
    int32_t pairs_flush; /* ... pairs of k its byte sums take (127 / largest pair sum) */
    int bp_out;          /* LOWBIT conv: writes bit planes `bout` instead of codes */
    int bp_pool;         /* ... max-pooled 2 x 2 on the way (oh, ow are the pooled dims) */
    tsq__bp_geom bin, bout;
    tsq__bp_window win;  /* LOWBIT conv with bp_in */
    int64_t band;        /* output rows per work item (conv with bp_in) */
    int relu;            /* FRONT */
    int short_form;      /* CONV_FRONT: tsq__front_short_form of qeps, qinv */
    float *qeps, *qinv;  /* FRONT: the quantizer's per-channel eps and 1 / delta */
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

/* ---- plan_bits.c ---- */
/* The layout a low-bit stage of these bit widths reads: 0 the codes (the
 * general path), TSQ__BP_BITS bit planes (VPOPCNT), TSQ__BP_BYTES the byte
 * layout (VNNI, or on a CPU with AVX2 but no AVX-512, the AVX2 kernels:
 * tsq__plan_bits_avx2; there the build may choose the pair layout for a
 * stage, bp_pairs). */
enum { TSQ__BP_BITS = 1, TSQ__BP_BYTES = 2 };
int tsq__plan_bits_layout(const tsq_plan *p, int conv, int32_t code_bits, int32_t weight_bits);
/* 1 if the byte layout runs on the AVX2 kernels in plan p (its CPU has
 * AVX2 and not the VNNI kernel's AVX-512). */
int tsq__plan_bits_avx2(const tsq_plan *p);
/* After the build: producers of bit-plane stages write bit planes (a
 * low-bit conv's epilogue, a 2 x 2 code pool fused into it) or get a
 * conversion stage. May reallocate p->stages. */
tsq_status tsq__plan_bits_link(tsq_context *ctx, tsq_plan *p);
/* Output and scratch bytes of a bit-plane stage (as above) for n images. */
void tsq__plan_bits_sizes(const tsq__plan_stage *s, int64_t n, int64_t threads, uint64_t *outb,
                          uint64_t *scratch);
/* Runs a bit-plane stage (OP_TOBP, OP_FRONT, OP_CONV_FRONT, or OP_LOWBIT
 * with bp_in). */
void tsq__plan_bits_run(int64_t threads, const tsq__plan_stage *s, const void *x, void *y,
                        int64_t n, uint8_t *scratch);

#endif /* TSQ_RUNTIME_PLAN_INTERNAL_H */
