/* The plain C element-wise quantizer kernels (kernels/encode.h): encode,
 * fake-quant and the straight-through mask; the oracle of the SIMD ones in
 * encode_avx2.c. Also the one choice between the two sets
 * (tsq__eltwise_for). */
#include "kernels/encode.h"

#include <string.h>

void tsq__encode_span_c(const float *x, uint8_t *codes, int64_t n, float eps, float inv_delta,
                        int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        codes[i] = (uint8_t)tsq__quant_code(x[i], eps, inv_delta, maxcode);
}

void tsq__encode_row_c(const float *x, uint8_t *codes, int64_t n, const float *eps,
                       const float *inv_delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        codes[i] = (uint8_t)tsq__quant_code(x[i], eps[i], inv_delta[i], maxcode);
}

int64_t tsq__count_nonfinite_c(const float *x, int64_t n)
{
    int64_t i, count = 0;
    for (i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        count += (bits & 0x7F800000u) == 0x7F800000u; /* exponent all ones */
    }
    return count;
}

void tsq__fakequant_span_c(const float *x, float *y, int64_t n, float eps, float inv_delta,
                           float delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        y[i] = (float)tsq__quant_code(x[i], eps, inv_delta, maxcode) * delta;
}

void tsq__fakequant_row_c(const float *x, float *y, int64_t n, const float *eps,
                          const float *inv_delta, const float *delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        y[i] = (float)tsq__quant_code(x[i], eps[i], inv_delta[i], maxcode) * delta[i];
}

void tsq__ste_span_c(const float *x, const float *go, float *gi, int64_t n, float delta,
                     int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        gi[i] = tsq__quant_passes(x[i], delta, maxcode) ? go[i] : 0.0f;
}

void tsq__ste_row_c(const float *x, const float *go, float *gi, int64_t n, const float *delta,
                    int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        gi[i] = tsq__quant_passes(x[i], delta[i], maxcode) ? go[i] : 0.0f;
}

static const tsq__eltwise eltwise_c = {
    tsq__encode_span_c, tsq__encode_row_c, tsq__fakequant_span_c, tsq__fakequant_row_c,
    tsq__ste_span_c,    tsq__ste_row_c,    tsq__count_nonfinite_c,
};

static const tsq__eltwise eltwise_avx2 = {
    tsq__encode_span_avx2, tsq__encode_row_avx2, tsq__fakequant_span_avx2,
    tsq__fakequant_row_avx2, tsq__ste_span_avx2, tsq__ste_row_avx2, tsq__count_nonfinite_avx2,
};

const tsq__eltwise *tsq__eltwise_for(uint32_t cpu)
{
    return (cpu & TSQ_CPU_AVX2) ? &eltwise_avx2 : &eltwise_c;
}
