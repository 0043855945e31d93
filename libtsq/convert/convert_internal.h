/*
 * Internals of the network-level TSQ conversion (docs/method.md §2, §3): the
 * state that tsq_net_learn_codes and tsq_net_fit_transform keep between the
 * caller's batches, attached to the net through nn's attach hooks so that nn
 * never depends on this folder.
 *
 *   session.c       the attached state: options, the step-2 regressor, the
 *                   life cycle of a session, progress and history;
 *   learn_codes.c   step 1: fitting and installing activation quantizers;
 *   fit_transform.c step 2: converting layers to low-bit, one at a time;
 *   qat.c           joint QAT: turning quantization-aware layers into
 *                   ordinary low-bit ones (docs/method.md §5).
 */
#ifndef TSQ_CONVERT_INTERNAL_H
#define TSQ_CONVERT_INTERNAL_H

#include "nn/nn_internal.h"

enum { TSQ__CVT_HIST_SERIES = 4 };

/* fit_transform's rows of one calibration batch of the current unit, kept
 * from pass to pass (fit_transform.c). */
typedef struct tsq__cvt_rows {
    float *x;                 /* a copy of the batch the rows came from */
    int64_t n;                /* its samples */
    tsq_tensor *X, *P, *Y;    /* owned; Y NULL without an output quantizer */
} tsq__cvt_rows;

/* One layer that fit_transform converts. */
typedef struct tsq__cvt_unit {
    int32_t ref_layer, ref_bn, ref_out_quant; /* indices in the reference net (-1: none) */
    int32_t weight_ord;                      /* ordinal among the weight layers */
    int32_t in_quant_ord;                    /* ordinal of the quantizer feeding it, or -1 */
    int32_t passes;
    int finished;
    double *history[TSQ__CVT_HIST_SERIES];
    int32_t nhistory;
} tsq__cvt_unit;

typedef struct tsq__conversion {
    /* Settings (copied into clones): the TSQ_NET_TSQ_* options, stored
     * through session.c's option table. act_bits, eps_mode, eps and
     * sparsity are the options of the quantizers learn_codes makes; their
     * bounds and defaults are read from the quantizer's table. */
    int32_t act_bits, eps_mode;
    double eps, sparsity;
    int32_t per_channel, sequential;
    int64_t positions;
    int64_t keep_rows_mib; /* TSQ_NET_TSQ_KEEP_ROWS_MIB */
    double shadow_clip;    /* TSQ_NET_TSQ_SHADOW_CLIP */
    tsq_regressor *reg;
    /* The running or last session. */
    int stage;
    uint64_t generation;
    uint64_t seed;
    int64_t batch_in_pass;
    /* learn_codes: one quantizer per position; in sequential mode
     * `qcur` is the one being observed. */
    int32_t npos, qcur;
    int32_t *pos;
    tsq_quantizer **quant;
    /* fit_transform */
    tsq_net *ref;
    tsq__cvt_unit *units;
    int32_t nunits, cur;
    tsq__cvt_rows *rows;      /* by batch index in the pass; nrows slots */
    int64_t nrows, rows_bytes;
    int restore_loss; /* the regressor's loss option to put back, or 0 */
} tsq__conversion;

/* session.c */
/* The net's conversion state, or NULL when none is attached yet. */
tsq__conversion *tsq__cvt_of(const tsq_net *net);
/* Attaches the state if needed (errors on the net). */
tsq_status tsq__cvt_attach(tsq_net *net, const char *where, tsq__conversion **out);
tsq_status tsq__cvt_regressor(tsq_net *net, tsq__conversion *c);
int tsq__cvt_running(const tsq_net *net);
/* Starts a session of `stage` (the units of the last one are dropped). */
tsq_status tsq__cvt_new_session(tsq_net *net, int stage);
void tsq__cvt_end_session(tsq_net *net);
/* Entry checks: arguments, no other session, the net not changed under it. */
tsq_status tsq__cvt_enter(tsq_net *net, const char *where, int stage, const tsq_tensor *x,
                          int32_t last, int32_t *done);
/* A borrowed f32 tensor (n, sample shape) over activation memory. */
tsq_status tsq__cvt_wrap_batch(tsq_net *net, const char *where, float *data, int64_t n,
                               int32_t ndim, const int64_t *shape, tsq_tensor **t);
/* Runs `target` on x up to layer `upto` (exclusive), eval mode. */
tsq_status tsq__cvt_run_prefix(tsq_net *target, tsq_net *net, const char *where,
                               const tsq_tensor *x, int64_t n, int32_t upto);
int tsq__cvt_is_weight(const tsq_layer *l);
int tsq__cvt_is_quant(const tsq_layer *l);
/* Index of the ord-th layer that `pred` accepts, or -1; and the inverse. */
int32_t tsq__cvt_find_ordinal(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t ord);
int32_t tsq__cvt_ordinal_of(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t index);

/* The quantizer whose codes reach layer i unchanged (through max-pools and
 * flattens only), or -1. */
int32_t tsq__cvt_feeding_quantizer(const tsq_net *net, int32_t i);

/* learn_codes.c, fit_transform.c */
void tsq__cvt_free_learning(tsq_net *net, tsq__conversion *c);
void tsq__cvt_free_units(tsq_net *net, tsq__conversion *c);
/* Drops the rows fit_transform kept for the current unit. */
void tsq__cvt_free_rows(tsq_net *net, tsq__conversion *c);

#endif
