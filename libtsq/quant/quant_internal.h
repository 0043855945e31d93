/*
 * The sparse activation quantizer's formula (docs/method.md §2.1), in the one
 * place every part of libtsq takes it from: the quantizer, the regressor's
 * loss, the layers and the threshold derivation of the inference plan.
 *
 *   Q(x) = 0                                     if x <= eps
 *        = clamp(floor(x * inv_delta + 0.5), 1, maxcode)  otherwise
 *
 * with maxcode = 2^bits - 1 and inv_delta = 1.0f / delta computed once in
 * float. Every path (scalar, SIMD, threshold form) must reproduce exactly
 * these float operations, so that they agree bit for bit: ties at a level
 * boundary round up; x == eps gives 0; NaN gives 0 (callers reject NaN
 * before quantizing).
 */
#ifndef TSQ_QUANT_INTERNAL_H
#define TSQ_QUANT_INTERNAL_H

#include "internal.h"

#include <math.h>

static inline int32_t tsq__quant_code(float x, float eps, float inv_delta, int32_t maxcode)
{
    float k;
    if (!(x > eps))
        return 0;
    k = floorf(x * inv_delta + 0.5f);
    if (k < 1.0f)
        return 1;
    if (k > (float)maxcode)
        return maxcode;
    return (int32_t)k;
}

/* The straight-through mask (docs/method.md §2.2): the gradient passes where
 * 0 < x < maxcode * delta, and is zero elsewhere. */
static inline int tsq__quant_passes(float x, float delta, int32_t maxcode)
{
    return x > 0.0f && x < (float)maxcode * delta;
}

/* Quantizer parameters as the other components read them (implemented in
 * quant/quantizer.c). A per-tensor quantizer has nchannels == 0 and answers
 * every channel index with its single set of parameters.
 * tsq__quantizer_channel returns TSQ_ERR_STATE if the quantizer is not
 * fitted yet and TSQ_ERR_INVALID for a channel out of range. */
struct tsq_quantizer;
struct tsq__option_table;
/* The quantizer's option table (core/options.h): its keys, bounds and
 * defaults, for handles that offer quantizer options of their own. */
const struct tsq__option_table *tsq__quantizer_options(void);
int64_t tsq__quantizer_nchannels(const struct tsq_quantizer *q);
tsq_status tsq__quantizer_channel(const struct tsq_quantizer *q, int64_t channel,
                                  int32_t *bits, float *eps, float *delta);

#endif
