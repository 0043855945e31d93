/*
 * What the quantizer shares with the regressor and the layers: the
 * straight-through mask and the parameter accessors. The formula Q itself,
 * tsq__quant_code, lives with its encode kernels in kernels/encode.h.
 */
#ifndef TSQ_QUANT_INTERNAL_H
#define TSQ_QUANT_INTERNAL_H

#include "internal.h"
#include "kernels/encode.h" /* the formula, tsq__quant_code */

#include <math.h>

/* The straight-through mask of TSQ.md: the gradient passes where
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
int64_t tsq__quantizer_nchannels(const struct tsq_quantizer *q);
tsq_status tsq__quantizer_channel(const struct tsq_quantizer *q, int64_t channel,
                                  int32_t *bits, float *eps, float *delta);

#endif
