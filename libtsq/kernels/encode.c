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

static void encode_row_c(const float *x, uint8_t *codes, int64_t n, const float *eps,
                         const float *inv_delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        codes[i] = (uint8_t)tsq__quant_code(x[i], eps[i], inv_delta[i], maxcode);
}

static int64_t count_nonfinite_c(const float *x, int64_t n)
{
    int64_t i, count = 0;
    for (i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        count += (bits & 0x7F800000u) == 0x7F800000u; /* exponent all ones */
    }
    return count;
}

static void fakequant_span_c(const float *x, float *y, int64_t n, float eps, float inv_delta,
                             float delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        y[i] = (float)tsq__quant_code(x[i], eps, inv_delta, maxcode) * delta;
}

static void fakequant_row_c(const float *x, float *y, int64_t n, const float *eps,
                            const float *inv_delta, const float *delta, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        y[i] = (float)tsq__quant_code(x[i], eps[i], inv_delta[i], maxcode) * delta[i];
}

static void ste_span_c(const float *x, const float *go, float *gi, int64_t n, float delta,
                       int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        gi[i] = tsq__quant_passes(x[i], delta, maxcode) ? go[i] : 0.0f;
}

static void ste_row_c(const float *x, const float *go, float *gi, int64_t n, const float *delta,
                      int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++)
        gi[i] = tsq__quant_passes(x[i], delta[i], maxcode) ? go[i] : 0.0f;
}

static void lsq_prod_span_c(const float *x, const float *dy, double *prod, int64_t n, float eps,
                            float inv_delta, float top, int32_t maxcode)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        int32_t k = tsq__quant_code(x[i], eps, inv_delta, maxcode);
        prod[i] = (double)dy[i] * (double)tsq__lsq_term(x[i], k, inv_delta, top, maxcode);
    }
}

const tsq__eltwise tsq__eltwise_c = {
    tsq__encode_span_c, encode_row_c, fakequant_span_c,  fakequant_row_c,
    ste_span_c,         ste_row_c,    count_nonfinite_c, lsq_prod_span_c,
};

const tsq__eltwise *tsq__eltwise_for(uint32_t cpu)
{
    return (cpu & TSQ_CPU_AVX2) ? &tsq__eltwise_avx2 : &tsq__eltwise_c;
}
