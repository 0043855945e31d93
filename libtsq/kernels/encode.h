/*
 * The sparse activation quantizer's formula and its encode kernels, in the
 * one place every part of libtsq takes them from: the quantizer, the
 * regressor's loss, the layers, the thresholds and the inference plan
 * (docs/method.md §2.1).
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
#ifndef TSQ_KERNELS_ENCODE_H
#define TSQ_KERNELS_ENCODE_H

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

/* LSQ's derivative of the quantized value k(x) * delta by delta, with
 * round's derivative taken as 1 (docs/nn.md, learned delta): k - x / delta
 * inside (0, top), maxcode above, 0 below; top = (float)maxcode * delta as
 * in tsq__quant_passes, x / delta as x * inv_delta. */
static inline float tsq__lsq_term(float x, int32_t k, float inv_delta, float top,
                                  int32_t maxcode)
{
    float inside = (float)k - x * inv_delta;
    if (x > 0.0f && x < top)
        return inside;
    return x > 0.0f ? (float)maxcode : 0.0f;
}

/* One (eps, inv_delta) for the whole span: codes[i] = Q(x[i]); the C
 * oracle and (call only when the CPU features report TSQ_CPU_AVX2) the
 * AVX2 kernel, also reached through the table below. */
typedef void (*tsq__encode_span_fn)(const float *x, uint8_t *codes, int64_t n, float eps,
                                    float inv_delta, int32_t maxcode);
void tsq__encode_span_c(const float *x, uint8_t *codes, int64_t n, float eps, float inv_delta,
                        int32_t maxcode);
void tsq__encode_span_avx2(const float *x, uint8_t *codes, int64_t n, float eps,
                           float inv_delta, int32_t maxcode);

/* The element-wise kernels of one instruction set, so that a caller picks
 * them once (tsq__eltwise_for) instead of testing the CPU at each call. The
 * C set (encode.c) is the oracle of the AVX2 one (encode_avx2.c), which
 * must give the same bits. "span" takes one channel's parameters for n
 * elements, "row" channel i's for element i. */
typedef struct tsq__eltwise {
    /* codes[i] = Q(x[i]) */
    void (*encode_span)(const float *x, uint8_t *codes, int64_t n, float eps, float inv_delta,
                        int32_t maxcode);
    void (*encode_row)(const float *x, uint8_t *codes, int64_t n, const float *eps,
                       const float *inv_delta, int32_t maxcode);
    /* y = k(x) * delta */
    void (*fakequant_span)(const float *x, float *y, int64_t n, float eps, float inv_delta,
                           float delta, int32_t maxcode);
    void (*fakequant_row)(const float *x, float *y, int64_t n, const float *eps,
                          const float *inv_delta, const float *delta, int32_t maxcode);
    /* gi = go where 0 < x < maxcode * delta, else 0 (tsq__quant_passes) */
    void (*ste_span)(const float *x, const float *go, float *gi, int64_t n, float delta,
                     int32_t maxcode);
    void (*ste_row)(const float *x, const float *go, float *gi, int64_t n, const float *delta,
                    int32_t maxcode);
    /* the number of NaN or Inf values among x[0..n-1] */
    int64_t (*count_nonfinite)(const float *x, int64_t n);
    /* prod[i] = dy[i] * tsq__lsq_term(x[i], Q(x[i])) in double (a float
     * times a float: exact), the terms of a learned delta's gradient */
    void (*lsq_prod_span)(const float *x, const float *dy, double *prod, int64_t n, float eps,
                          float inv_delta, float top, int32_t maxcode);
} tsq__eltwise;

extern const tsq__eltwise tsq__eltwise_c;
extern const tsq__eltwise tsq__eltwise_avx2; /* only when the CPU has AVX2 */
/* The AVX2 set when the TSQ_CPU_* bits in cpu include AVX2, else the C one
 * (static tables: never NULL, never freed). */
const tsq__eltwise *tsq__eltwise_for(uint32_t cpu);

#endif /* TSQ_KERNELS_ENCODE_H */
