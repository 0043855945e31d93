/*
 * What the quantizer shares with the regressor and the layers: the
 * parameter accessors. The formula Q (tsq__quant_code) and the
 * straight-through mask (tsq__quant_passes) live with their kernels in
 * kernels/encode.h.
 */
#ifndef TSQ_QUANT_INTERNAL_H
#define TSQ_QUANT_INTERNAL_H

#include "internal.h"
#include "kernels/encode.h" /* the formula, tsq__quant_code */

#include <math.h>

/* Quantizer parameters as the other components read them (implemented in
 * quant/quantizer.c). A per-tensor quantizer has nchannels == 0 and answers
 * every channel index with its single set of parameters.
 * tsq__quantizer_channel returns TSQ_ERR_STATE if the quantizer is not
 * fitted yet and TSQ_ERR_INVALID for a channel out of range. */
struct tsq_quantizer;
struct tsq__option_table;
/* The quantizer's option table (core/options.h): its keys, bounds and
 * defaults, for handles that offer quantizer options of their own (the
 * net's conversion options point into it). */
extern const struct tsq__option_table tsq__quantizer_table;
/* Copies src's options and weight alphabet into dst (a cloned net's
 * conversion regressor); dst must not be fitting. */
struct tsq_regressor;
void tsq__regressor_copy_options(struct tsq_regressor *dst, const struct tsq_regressor *src);
int64_t tsq__quantizer_nchannels(const struct tsq_quantizer *q);
tsq_status tsq__quantizer_channel(const struct tsq_quantizer *q, int64_t channel,
                                  int32_t *bits, float *eps, float *delta);

#endif
