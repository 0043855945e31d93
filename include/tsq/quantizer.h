/*
 * libtsq - quantizer.h: Step 1 of TSQ, the sparse activation quantizer and
 * tsq_learn_codes (docs/method.md §2; docs/quantizer.md for this library).
 *
 * For n-bit activations (n = 1..8) the quantizer maps x to the code
 *
 *     k(x) = 0                                                 if !(x > eps)
 *          = clamp(floor(x * inv_delta + 0.5f), 1, 2^n - 1)    otherwise,
 *     inv_delta = 1.0f / delta,
 *
 * every operation in float, in this order: inv_delta is rounded to float
 * once, the product x * inv_delta is rounded to float, then 0.5f is added
 * (no fused multiply-add). This is not always floor(x / delta + 1/2): for
 * x within an ulp or two of a level boundary the rounded reciprocal can put
 * x on the other side. Every path (the C and SIMD kernels, the layers, the
 * integer thresholds of an inference plan) computes exactly this, so they
 * agree bit for bit. The level is k * delta, rounded to float. eps >= 0 is the threshold below which an
 * activation becomes 0 (eps above delta/2 makes the output sparser than
 * rounding would), delta > 0 the step between levels. A quantizer is either
 * per tensor (one (eps, delta)) or per channel (one pair per channel along
 * axis 1 of an N x C x ... tensor: NCHW images, N x C matrices, N x C x L).
 *
 * Typical use by a host framework:
 *
 *     tsq_quantizer_create(ctx, 2, 0, &q);             2-bit, per tensor
 *     for each batch: tsq_quantizer_observe(q, x);     streaming statistics
 *     tsq_quantizer_fit(q);                            fit eps and delta
 *     tsq_quantizer_encode(q, x, codes);               uint8 codes
 *     tsq_quantizer_backward(q, x, dy, dx);            straight-through mask
 *
 * or, in one call, tsq_learn_codes(q, x, codes, &error, &sparsity).
 *
 * Fitting. delta minimises the squared quantization error over the positive
 * samples, sum over x > 0 of (x - k(x) delta)^2, for a given eps. eps comes
 * from the TSQ_QUANTIZER_EPS_MODE option:
 *   TSQ_EPS_FIXED     eps = the TSQ_QUANTIZER_EPS option;
 *   TSQ_EPS_SPARSITY  eps = the smallest eps >= 0 for which the fraction of
 *                     all samples with x <= eps reaches TSQ_QUANTIZER_SPARSITY;
 *   TSQ_EPS_JOINT     eps and delta minimise the error together, which gives
 *                     eps = delta / 2 exactly (the default);
 *   TSQ_EPS_PLAIN     eps = 0, the non-sparse quantizer TSQ compares against.
 * The statistics are a histogram per channel with a bounded size (see
 * TSQ_QUANTIZER_HIST_RESOLUTION), never the samples themselves, so the
 * result of a fit does not depend on how the data were split into batches
 * (up to floating-point rounding of the sums).
 *
 * Error and sparsity, as reported by tsq_learn_codes: error is
 * (1/N) * sum over samples with x > 0 of (x - k(x) delta)^2, where N counts
 * all samples (as docs/method.md §2.3 counts it); sparsity is the fraction of all
 * N samples whose code is 0. For per-channel quantizers both are taken over
 * all channels together.
 *
 * Threads: a quantizer must not be used by two threads at once; distinct
 * quantizers may. Fitting uses the context's TSQ_CONTEXT_THREADS threads.
 * Every call validates all its arguments before it writes anything: when it
 * fails, its outputs, the caller's tensors and the quantizer are unchanged
 * (tsq_quantizer_errmsg() then says what was wrong).
 */
#ifndef TSQ_QUANTIZER_H
#define TSQ_QUANTIZER_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsq_quantizer tsq_quantizer;

/* Ways to choose eps: values of the TSQ_QUANTIZER_EPS_MODE option. */
enum {
    TSQ_EPS_FIXED = 1,    /* eps is the TSQ_QUANTIZER_EPS option */
    TSQ_EPS_SPARSITY = 2, /* eps reaches the TSQ_QUANTIZER_SPARSITY zero fraction */
    TSQ_EPS_JOINT = 3,    /* eps and delta minimise the error together: eps = delta/2 */
    TSQ_EPS_PLAIN = 4     /* eps = 0 */
};

/* Option keys of tsq_quantizer_set_option / get_option / option_bounds: the
 * quantizer family, 0x0200 (a key of another family is refused).
 * Values are doubles; integer options take integral values. */
enum {
    /* Activation bits n, 1..8 (codes 0 .. 2^n - 1). Default: the value given
     * to tsq_quantizer_create. Changing it clears the fitted parameters (the
     * statistics stay). */
    TSQ_QUANTIZER_BITS = 0x0201,
    /* How the next fit chooses eps: TSQ_EPS_FIXED, TSQ_EPS_SPARSITY,
     * TSQ_EPS_JOINT or TSQ_EPS_PLAIN. Default TSQ_EPS_JOINT. */
    TSQ_QUANTIZER_EPS_MODE = 0x0202,
    /* eps used by TSQ_EPS_FIXED, 0 .. 3.4e38 (FLT_MAX); a negative value is
     * refused. Default 0.32, the value of TSQ's 2-bit demo on
     * batch-normalised inputs. (This is the option; the eps a fit chose
     * for a channel is read with tsq_quantizer_get_channel.) */
    TSQ_QUANTIZER_EPS = 0x0203,
    /* Target fraction of zero codes for TSQ_EPS_SPARSITY, 0 .. 1.
     * Default 0.63 (what eps = 0.32 gives on unit-Gaussian inputs). */
    TSQ_QUANTIZER_SPARSITY = 0x0204,
    /* Histogram resolution r: 2^r bins per octave (relative bin width
     * 2^-r), 1 .. 10, or 0 (the default) for automatic: r = max(7, bits + 1),
     * chosen when the histogram is made (first observation). Each channel's
     * histogram has 17 * 2^r bins of 24 bytes: 52 KiB at r = 7, 209 KiB at
     * r = 9 (8 bits). Can only be changed while no statistics are held
     * (TSQ_ERR_STATE otherwise: reset first). */
    TSQ_QUANTIZER_HIST_RESOLUTION = 0x0205,
    /* Read-only: the number of channels (0 for a per-tensor quantizer). */
    TSQ_QUANTIZER_CHANNELS = 0x0206,
    /* Read-only: 1 when every channel has parameters (fitted or set), else 0. */
    TSQ_QUANTIZER_FITTED = 0x0207,
    /* Read-only: the number of samples observed since the last reset. */
    TSQ_QUANTIZER_OBSERVED = 0x0208
};

/*! tsq_quantizer_create() :
 *  Creates an unfitted quantizer with `bits` activation bits (1..8) and
 *  default options. channels = 0 makes a per-tensor quantizer; channels =
 *  C >= 1 one with parameters per channel along axis 1 (tensors of shape
 *  N x C, N x C x L or N x C x H x W). At most 2^31 - 1 channels.
 *  No statistics memory is allocated until the first observation.
 *  *out receives the quantizer, or NULL on failure (message on ctx).
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx or out), TSQ_ERR_INVALID (bits or
 *  channels out of range), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_quantizer_create(tsq_context *ctx, int32_t bits, int64_t channels,
                                        tsq_quantizer **out);

/*! tsq_quantizer_destroy() : frees the quantizer and its statistics.
 *  Accepts NULL. */
TSQ_API void tsq_quantizer_destroy(tsq_quantizer *q);

/*! tsq_quantizer_errmsg() :
 *  @return the message of the last failed call on q ("" after a call that
 *  succeeded), owned by q and valid until its next call; a static
 *  "no quantizer" for NULL. */
TSQ_API const char *tsq_quantizer_errmsg(const tsq_quantizer *q);

/*! tsq_quantizer_set_option() :
 *  Sets option `key` (TSQ_QUANTIZER_*) to `value`.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown or read-only key,
 *  a value outside tsq_quantizer_option_bounds(), not integral where it must
 *  be, or NaN), TSQ_ERR_STATE (TSQ_QUANTIZER_HIST_RESOLUTION while
 *  statistics are held). */
TSQ_API tsq_status tsq_quantizer_set_option(tsq_quantizer *q, int32_t key, double value);

/*! tsq_quantizer_get_option() : writes option `key`'s value to *value.
 *  @return TSQ_OK, TSQ_ERR_NULL (q, or value: with a message on q),
 *  TSQ_ERR_INVALID (unknown key, or a key of another family). */
TSQ_API tsq_status tsq_quantizer_get_option(const tsq_quantizer *q, int32_t key, double *value);

/*! tsq_quantizer_option_bounds() :
 *  Writes the inclusive range of option `key`'s values (read-only keys
 *  included) to *lo and *hi. Needs no quantizer. Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_quantizer_option_bounds(int32_t key, double *lo, double *hi);

/*! tsq_quantizer_observe() :
 *  Adds the samples of x (f32) to the statistics. Per tensor, x may have any
 *  shape; per channel, x must have 2 to 4 dimensions with dimension 1 equal
 *  to the channel count. Memory: the first call allocates the histograms
 *  (see TSQ_QUANTIZER_HIST_RESOLUTION); later calls allocate nothing.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE (x not f32), TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE (a NaN or Inf sample: nothing is added),
 *  TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_quantizer_observe(tsq_quantizer *q, const tsq_tensor *x);

/*! tsq_quantizer_reset() : drops the statistics (keeps the options and the
 *  current parameters). @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_quantizer_reset(tsq_quantizer *q);

/*! tsq_quantizer_fit() :
 *  Fits (eps, delta) of every channel from the observed statistics with the
 *  current options, and marks the quantizer fitted. The statistics stay, so
 *  more batches can be observed and the fit repeated. A channel none of
 *  whose samples exceeds eps gets delta = 1 (any delta gives the same codes
 *  there).
 *  Reports TSQ_PROGRESS_QUANTIZER_FIT to the context's progress callback.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_DATA (nothing observed),
 *  TSQ_ERR_NO_MEMORY, TSQ_ERR_CANCELLED (by the progress callback);
 *  on failure the parameters are unchanged. */
TSQ_API tsq_status tsq_quantizer_fit(tsq_quantizer *q);

/*! tsq_quantizer_set_channel() :
 *  Sets channel c's parameters by hand (per-tensor quantizers: c = 0). The
 *  quantizer is fitted once every channel has parameters.
 *  eps must be finite and >= 0; delta finite and > 0 with 1/delta and
 *  (2^n - 1) * delta finite in float.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (c out of range, eps < 0,
 *  bad delta), TSQ_ERR_NOT_FINITE (eps or delta NaN or Inf). */
TSQ_API tsq_status tsq_quantizer_set_channel(tsq_quantizer *q, int64_t c, float eps,
                                             float delta);

/*! tsq_quantizer_get_channel() :
 *  Writes channel c's parameters to *eps and *delta (per tensor: c = 0).
 *  @return TSQ_OK, TSQ_ERR_NULL (q; eps or delta with a message on q),
 *  TSQ_ERR_INVALID (c out of range),
 *  TSQ_ERR_STATE (the channel has no parameters yet). */
TSQ_API tsq_status tsq_quantizer_get_channel(const tsq_quantizer *q, int64_t c, float *eps,
                                             float *delta);

/*! tsq_quantizer_forward() :
 *  y = k(x) * delta, elementwise: the quantized activation as a float.
 *  x and y are f32 tensors of the same shape (per channel: as for observe).
 *  y may be the very same tensor or memory as x (in place); partially
 *  overlapping memory is not allowed. Uses AVX2 when the CPU has it (bit
 *  for bit the plain C result) and the context's threads for large tensors.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE (x holds NaN or Inf), TSQ_ERR_STATE (not fitted). */
TSQ_API tsq_status tsq_quantizer_forward(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *y);

/*! tsq_quantizer_encode() :
 *  codes = k(x), elementwise: x f32, codes u8 of the same shape, in
 *  0 .. 2^n - 1. Uses AVX2 when the CPU has it; the result is bit-identical
 *  to the plain C formula. Uses the context's threads for large tensors.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE, TSQ_ERR_STATE (not fitted). */
TSQ_API tsq_status tsq_quantizer_encode(tsq_quantizer *q, const tsq_tensor *x,
                                        tsq_tensor *codes);

/*! tsq_quantizer_decode() :
 *  y = codes * delta, elementwise: codes u8, y f32 of the same shape.
 *  For every code k with k * delta > eps (always so when eps < delta, as
 *  in the joint and plain modes) encode(decode(k)) == k exactly.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_INVALID (a code above 2^n - 1), TSQ_ERR_STATE (not fitted). */
TSQ_API tsq_status tsq_quantizer_decode(tsq_quantizer *q, const tsq_tensor *codes,
                                        tsq_tensor *y);

/*! tsq_quantizer_backward() :
 *  The straight-through estimator (docs/method.md §2.2): grad_in = grad_out
 *  where 0 < x < (2^n - 1) * delta (the product rounded to float), and +0
 *  elsewhere. All three are f32 tensors of
 *  the same shape. grad_in may be the very same tensor or memory as
 *  grad_out or x (in place); partially overlapping memory is not allowed.
 *  grad_out is passed through as is (NaN included); x must be finite.
 *  AVX2 and threads as for tsq_quantizer_forward().
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE (x), TSQ_ERR_STATE (not fitted). */
TSQ_API tsq_status tsq_quantizer_backward(tsq_quantizer *q, const tsq_tensor *x,
                                          const tsq_tensor *grad_out, tsq_tensor *grad_in);

/*! tsq_learn_codes() :
 *  Step 1 of TSQ as one call: fits (eps, delta) with the current options,
 *  writes the codes and reports how good they are.
 *  - x non-NULL: the fit uses the samples of x only (through a temporary
 *    histogram; the observed statistics are neither used nor changed).
 *    codes, if non-NULL, receives k(x) (u8, same shape as x). *error and
 *    *sparsity are exact over the samples of x.
 *  - x NULL: the fit uses the observed statistics; codes must be NULL;
 *    *error and *sparsity are estimated from the histogram (exact except
 *    for the one bin each level boundary cuts).
 *  error and sparsity may be NULL; see the top of this file for their
 *  definitions. On success the quantizer is fitted with the new parameters.
 *  Reports TSQ_PROGRESS_QUANTIZER_FIT to the context's progress callback.
 *  @return TSQ_OK, TSQ_ERR_NULL (q), TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE, TSQ_ERR_INVALID (codes given without x),
 *  TSQ_ERR_NO_DATA (x NULL and nothing observed), TSQ_ERR_NO_MEMORY,
 *  TSQ_ERR_CANCELLED (by the progress callback; nothing written). */
TSQ_API tsq_status tsq_learn_codes(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *codes,
                                   double *error, double *sparsity);

/*! tsq_quantizer_save() :
 *  Serializes the quantizer's bits, options and per-channel parameters (not
 *  the statistics) to buf: little-endian, magic "TSQQ", format version 1,
 *  CRC-32 at the end. With buf NULL only *size is written (the bytes
 *  needed). The quantizer need not be fitted.
 *  @return TSQ_OK, TSQ_ERR_NULL (q; size with a message on q),
 *  TSQ_ERR_TOO_SMALL (capacity <
 *  the size; *size is still written, buf is not). */
TSQ_API tsq_status tsq_quantizer_save(tsq_quantizer *q, void *buf, uint64_t capacity,
                                      uint64_t *size);

/*! tsq_quantizer_load() :
 *  Creates a quantizer from `size` bytes written by tsq_quantizer_save().
 *  Every field is checked; malformed input is refused, never trusted.
 *  The caller keeps buf. *out receives the quantizer or NULL (message on
 *  ctx). The new quantizer has no statistics.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_FORMAT (bad magic, size, checksum
 *  or field), TSQ_ERR_VERSION (a format version this library cannot read),
 *  TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_quantizer_load(tsq_context *ctx, const void *buf, uint64_t size,
                                      tsq_quantizer **out);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_QUANTIZER_H */
