/*
 * libtsq - plan.h: packed low-bit inference.
 *
 * A converted network compiled once into a plan that runs it with integer
 * kernels: low-bit weights packed into bit planes, activation codes between
 * the layers, each hidden layer's affine and quantizer as integer
 * thresholds (docs/method.md §6). docs/kernels.md describes the plan, the
 * kernels and their measured speed. The kernel-level calls (packed
 * weights, thresholds, the low-bit GEMMs, im2col on codes) are
 * experimental: tsq/experimental.h, declared only with TSQ_EXPERIMENTAL.
 */
#ifndef TSQ_PLAN_H
#define TSQ_PLAN_H

#include "core.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The network of nn.h is only passed by pointer here, as struct tsq_net,
 * so that this header does not need nn.h. */
struct tsq_net;

/* ------------------------------------------------------------------ */
/* The inference plan: a converted network as integer layers            */
/* ------------------------------------------------------------------ */

/* A converted tsq_net (low-bit conv / dense layers fed by activation
 * quantizers in codes mode, as tsq_net_fit_transform leaves it) compiled
 * for inference: hidden low-bit layers hold packed weights, activations
 * between them are uint8 codes (NHWC for images), and each low-bit layer's
 * affine (alpha, b) with the quantizer after it becomes integer thresholds
 * (docs/kernels.md, "The inference plan"). Float layers before the first and after the
 * last low-bit layer run in float, as tsq_net_forward computes them in
 * eval mode. docs/kernels.md, "The inference plan", lists the rules.
 *
 * Immutable after creation: one plan may be run by any number of threads
 * at once, each passing its own context (errors are reported there) and
 * its own workspace. The plan copies what it needs: the net may be changed
 * or destroyed afterwards. */
typedef struct tsq_plan tsq_plan;

/*! tsq_plan_create() :
 *  Compiles `net` (read, not changed: its shapes must be set up, i.e. its
 *  layers appended) into a plan allocated through ctx, which must outlive
 *  it. Supported layers: dense, conv2d, batch-norm, ReLU, max-pool,
 *  flatten, activation quantizers and low-bit dense / conv2d. A low-bit
 *  layer must be fed by a codes-mode quantizer (possibly through max-pools
 *  and a flatten); a quantizer right after it (one bit width for all its
 *  channels) is fused into thresholds, otherwise its output alpha*acc+b is
 *  computed in float. *out receives the plan, or NULL on failure.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, net or out), TSQ_ERR_STATE (the net
 *  has no layers or no low-bit layer, i.e. it is not converted),
 *  TSQ_ERR_UNSUPPORTED (a layer kind the plan cannot run, a low-bit layer
 *  not fed by codes, mixed bit widths in a fused quantizer: the message
 *  names the layer), TSQ_ERR_OVERFLOW (an accumulator could overflow
 *  int32), TSQ_ERR_NO_MEMORY, or a status of tsq_packed_weights_create /
 *  tsq_thresholds_create (e.g. TSQ_ERR_NOT_FINITE), TSQ_ERR_CANCELLED (by
 *  the context's progress callback, which sees TSQ_PROGRESS_PLAN_CREATE).
 *  Errors on ctx. */
TSQ_API tsq_status tsq_plan_create(tsq_context *ctx, struct tsq_net *net, tsq_plan **out);

/*! tsq_plan_load() :
 *  Compiles the model file bytes buf[0 .. size-1] (the .tsq format of
 *  docs/format.md, as tsq_net_save writes it) into a plan, without
 *  building a tsq_net: the call the inference-only library
 *  (libtsq_runtime.a, docs/kernels.md) runs models with. The plan is the
 *  one tsq_plan_create would make from tsq_net_load of the same bytes, and
 *  computes the same bits. buf is only read and may be freed afterwards.
 *  *out receives the plan, or NULL on failure.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, buf or out), TSQ_ERR_FORMAT (not a
 *  model file, a checksum mismatch, a malformed or out-of-range value: the
 *  message names the section, the layer and the field), TSQ_ERR_VERSION
 *  (a newer format), or a status of tsq_plan_create (TSQ_ERR_STATE without
 *  a low-bit layer, TSQ_ERR_UNSUPPORTED, TSQ_ERR_NO_MEMORY,
 *  TSQ_ERR_CANCELLED...). Errors on ctx. */
TSQ_API tsq_status tsq_plan_load(tsq_context *ctx, const void *buf, uint64_t size,
                                 tsq_plan **out);

/*! tsq_plan_destroy() : frees the plan. Accepts NULL. No thread may be
 *  running it. */
TSQ_API void tsq_plan_destroy(tsq_plan *plan);

/*! tsq_plan_workspace_size() :
 *  Writes to *bytes the workspace tsq_plan_run needs for `batch` samples
 *  with ctx's current TSQ_CONTEXT_THREADS. Thread-safe for plan.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (batch < 1),
 *  TSQ_ERR_OVERFLOW (the size does not fit, or the batch's input or output
 *  floats would not). Errors on ctx. */
TSQ_API tsq_status tsq_plan_workspace_size(tsq_context *ctx, const tsq_plan *plan,
                                           int64_t batch, uint64_t *bytes);

/*! tsq_plan_run() :
 *  y = the network's eval-mode output for the batch x. x: f32 tensor whose
 *  first dimension is the batch N and whose element count is N times the
 *  net's input sample size (e.g. N x 1 x 28 x 28); y: f32 tensor with first
 *  dimension N and N times the output sample size elements (e.g. N x 10).
 *  workspace: a caller buffer (any alignment) of workspace_bytes >=
 *  tsq_plan_workspace_size(batch) bytes, then the call allocates nothing;
 *  or NULL (workspace_bytes ignored) to allocate it through ctx for this
 *  call (a large block is then fresh memory each call, measurably slower
 *  than a kept workspace: docs/kernels.md). Uses ctx's TSQ_CONTEXT_THREADS threads. Thread-safety: plan may
 *  be shared; y and workspace must be this call's own; ctx may be shared
 *  by threads running plans only if its allocator is thread-safe (the
 *  default one is), and then the message of a failed call may be
 *  overwritten by another thread's (the returned status is reliable).
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, plan, x or y), TSQ_ERR_DTYPE,
 *  TSQ_ERR_SHAPE (x or y does not fit the plan's sample shapes),
 *  TSQ_ERR_NOT_FINITE (x holds NaN or Inf), TSQ_ERR_TOO_SMALL (workspace
 *  smaller than needed), TSQ_ERR_NO_MEMORY. Errors on ctx; y is untouched
 *  on failure. */
TSQ_API tsq_status tsq_plan_run(tsq_context *ctx, const tsq_plan *plan, const tsq_tensor *x,
                                tsq_tensor *y, void *workspace, uint64_t workspace_bytes);

/* Keys of tsq_plan_get(). */
enum {
    TSQ_PLAN_LOWBIT_LAYERS = 0x0701,     /* low-bit layers run on packed weights */
    TSQ_PLAN_FUSED_THRESHOLDS = 0x0702,  /* of them, those with a fused quantizer */
    TSQ_PLAN_PACKED_BYTES = 0x0703,      /* bytes of packed low-bit weights (padding included) */
    TSQ_PLAN_PACKED_FP32_BYTES = 0x0704, /* the same weights stored as fp32 */
    TSQ_PLAN_FLOAT_BYTES = 0x0705,       /* bytes of the float layers' weights and biases */
    TSQ_PLAN_INPUT_SIZE = 0x0706,        /* elements of one input sample */
    TSQ_PLAN_OUTPUT_SIZE = 0x0707,       /* elements of one output sample */
    TSQ_PLAN_STAGES = 0x0708             /* steps the plan runs per batch */
};

/*! tsq_plan_get() : one property (a TSQ_PLAN_* key) into *value.
 *  Thread-safe. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown
 *  key). The plan records no message (it is shared): a status only. */
TSQ_API tsq_status tsq_plan_get(const tsq_plan *plan, int32_t key, int64_t *value);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_PLAN_H */
