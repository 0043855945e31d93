/* AVX2 versions of the encode, fake-quant and straight-through kernels and
 * of the finite check (the C oracles are in encode.c). Each vector
 * step performs exactly the float operations of tsq__quant_code
 * (kernels/encode.h): x * inv_delta, + 0.5f, floor, clamp to [1, maxcode],
 * and 0 where !(x > eps); multiply and add stay separate instructions (no
 * FMA), so the codes are bit-identical to the plain C kernels. Compiled
 * with -mavx2 -mfma by the Makefile's naming rule; called only when the CPU
 * detection reports AVX2. Tails shorter than a vector go through a padded
 * copy, so no scalar formula is compiled here. */
#include "kernels/encode.h"
#include "kernels/encode_avx2.h"

#include <immintrin.h>
#include <string.h>

#define BLOCK 32 /* floats per step: four vectors give one 32-byte store */

/* Eight codes as floats, as int32 lanes, and 4 x 8 of them packed: the
 * formulas live in kernels/encode_avx2.h. */
#define levels8(x, eps, inv, top) tsq__levels8_avx2(x, eps, inv, top, 1)
#define codes8(x, eps, inv, top) _mm256_cvttps_epi32(levels8(x, eps, inv, top))
#define pack32 tsq__pack32_avx2

static inline void encode_block(const float *x, uint8_t *codes, __m256 eps, __m256 inv,
                                __m256 top)
{
    __m256i c0 = codes8(_mm256_loadu_ps(x), eps, inv, top);
    __m256i c1 = codes8(_mm256_loadu_ps(x + 8), eps, inv, top);
    __m256i c2 = codes8(_mm256_loadu_ps(x + 16), eps, inv, top);
    __m256i c3 = codes8(_mm256_loadu_ps(x + 24), eps, inv, top);
    _mm256_storeu_si256((__m256i *)codes, pack32(c0, c1, c2, c3));
}

void tsq__encode_span_avx2(const float *x, uint8_t *codes, int64_t n, float eps,
                           float inv_delta, int32_t maxcode)
{
    const __m256 ve = _mm256_set1_ps(eps), vi = _mm256_set1_ps(inv_delta);
    const __m256 top = _mm256_set1_ps((float)maxcode);
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        encode_block(x + i, codes + i, ve, vi, top);
    if (i < n) {
        float xt[BLOCK] = {0};
        uint8_t ct[BLOCK];
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        encode_block(xt, ct, ve, vi, top);
        memcpy(codes + i, ct, (size_t)(n - i));
    }
}

static inline void encode_row_block(const float *x, uint8_t *codes, const float *eps,
                                    const float *inv, __m256 top)
{
    __m256i c[4];
    int j;
    for (j = 0; j < 4; j++)
        c[j] = codes8(_mm256_loadu_ps(x + 8 * j), _mm256_loadu_ps(eps + 8 * j),
                      _mm256_loadu_ps(inv + 8 * j), top);
    _mm256_storeu_si256((__m256i *)codes, pack32(c[0], c[1], c[2], c[3]));
}

static void encode_row_avx2(const float *x, uint8_t *codes, int64_t n, const float *eps,
                            const float *inv_delta, int32_t maxcode)
{
    const __m256 top = _mm256_set1_ps((float)maxcode);
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK)
        encode_row_block(x + i, codes + i, eps + i, inv_delta + i, top);
    if (i < n) {
        /* Padding lanes get x = 0, eps = 0, inv = 1: code 0, discarded. */
        float xt[BLOCK] = {0}, et[BLOCK] = {0}, it[BLOCK];
        uint8_t ct[BLOCK];
        int j;
        for (j = 0; j < BLOCK; j++)
            it[j] = 1.0f;
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        memcpy(et, eps + i, (size_t)(n - i) * sizeof *eps);
        memcpy(it, inv_delta + i, (size_t)(n - i) * sizeof *inv_delta);
        encode_row_block(xt, ct, et, it, top);
        memcpy(codes + i, ct, (size_t)(n - i));
    }
}

static int64_t count_nonfinite_avx2(const float *x, int64_t n)
{
    /* A float is NaN or Inf when its exponent bits are all ones. Lanes
     * count in int32 (minus the all-ones compare mask), flushed to the
     * int64 total before they could overflow. */
    const __m256i expo = _mm256_set1_epi32(0x7F800000);
    const int64_t flush = (int64_t)1 << 28;
    int64_t i = 0, total = 0;
    while (i + 8 <= n) {
        __m256i acc = _mm256_setzero_si256();
        int64_t end = n - i > flush ? i + flush : n;
        int32_t lanes[8];
        int j;
        for (; i + 8 <= end; i += 8) {
            __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), expo);
            acc = _mm256_sub_epi32(acc, _mm256_cmpeq_epi32(b, expo));
        }
        _mm256_storeu_si256((__m256i *)lanes, acc);
        for (j = 0; j < 8; j++)
            total += lanes[j];
    }
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        total += (b & 0x7F800000u) == 0x7F800000u;
    }
    return total;
}

/* ---- fake-quant: y = (float)k(x) * delta. k is an exact small integer in
 * float, so k * delta is the C kernel's (float)code * delta, bit for bit
 * (0 * delta is +0 in both, delta being positive and finite). ---- */

static void fakequant_span_avx2(const float *x, float *y, int64_t n, float eps, float inv_delta,
                                float delta, int32_t maxcode)
{
    const __m256 ve = _mm256_set1_ps(eps), vi = _mm256_set1_ps(inv_delta);
    const __m256 vd = _mm256_set1_ps(delta), top = _mm256_set1_ps((float)maxcode);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(levels8(_mm256_loadu_ps(x + i), ve, vi, top), vd));
    if (i < n) {
        float xt[8] = {0}, yt[8];
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        _mm256_storeu_ps(yt, _mm256_mul_ps(levels8(_mm256_loadu_ps(xt), ve, vi, top), vd));
        memcpy(y + i, yt, (size_t)(n - i) * sizeof *y);
    }
}

static inline __m256 fakequant_row8(const float *x, const float *eps, const float *inv,
                                    const float *delta, __m256 top)
{
    __m256 k = levels8(_mm256_loadu_ps(x), _mm256_loadu_ps(eps), _mm256_loadu_ps(inv), top);
    return _mm256_mul_ps(k, _mm256_loadu_ps(delta));
}

static void fakequant_row_avx2(const float *x, float *y, int64_t n, const float *eps,
                               const float *inv_delta, const float *delta, int32_t maxcode)
{
    const __m256 top = _mm256_set1_ps((float)maxcode);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, fakequant_row8(x + i, eps + i, inv_delta + i, delta + i, top));
    if (i < n) {
        /* Padding lanes: x = 0, eps = 0, inv = delta = 1, discarded. */
        float xt[8] = {0}, et[8] = {0}, it[8], dt[8], yt[8];
        int j;
        for (j = 0; j < 8; j++)
            it[j] = dt[j] = 1.0f;
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        memcpy(et, eps + i, (size_t)(n - i) * sizeof *eps);
        memcpy(it, inv_delta + i, (size_t)(n - i) * sizeof *inv_delta);
        memcpy(dt, delta + i, (size_t)(n - i) * sizeof *delta);
        _mm256_storeu_ps(yt, fakequant_row8(xt, et, it, dt, top));
        memcpy(y + i, yt, (size_t)(n - i) * sizeof *y);
    }
}

/* ---- straight-through: gi = go where 0 < x < maxcode * delta, else +0.
 * The window's top is the C kernel's float product (float)maxcode * delta;
 * masking go with the comparison keeps its bits (NaN included). ---- */

static inline __m256 ste8(__m256 x, __m256 go, __m256 top)
{
    __m256 in = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ),
                              _mm256_cmp_ps(x, top, _CMP_LT_OQ));
    return _mm256_and_ps(go, in);
}

static void ste_span_avx2(const float *x, const float *go, float *gi, int64_t n, float delta,
                          int32_t maxcode)
{
    const __m256 top = _mm256_set1_ps((float)maxcode * delta);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gi + i, ste8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(go + i), top));
    if (i < n) {
        float xt[8] = {0}, gt[8] = {0}, rt[8];
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        memcpy(gt, go + i, (size_t)(n - i) * sizeof *go);
        _mm256_storeu_ps(rt, ste8(_mm256_loadu_ps(xt), _mm256_loadu_ps(gt), top));
        memcpy(gi + i, rt, (size_t)(n - i) * sizeof *gi);
    }
}

static void ste_row_avx2(const float *x, const float *go, float *gi, int64_t n,
                         const float *delta, int32_t maxcode)
{
    const __m256 m = _mm256_set1_ps((float)maxcode);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gi + i, ste8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(go + i),
                                      _mm256_mul_ps(m, _mm256_loadu_ps(delta + i))));
    if (i < n) {
        float xt[8] = {0}, gt[8] = {0}, dt[8] = {0}, rt[8];
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        memcpy(gt, go + i, (size_t)(n - i) * sizeof *go);
        memcpy(dt, delta + i, (size_t)(n - i) * sizeof *delta);
        _mm256_storeu_ps(rt, ste8(_mm256_loadu_ps(xt), _mm256_loadu_ps(gt),
                                  _mm256_mul_ps(m, _mm256_loadu_ps(dt))));
        memcpy(gi + i, rt, (size_t)(n - i) * sizeof *gi);
    }
}

/* ---- a learned delta's gradient terms: dy * tsq__lsq_term in double ---- */

static inline void lsq_prod8(const float *x, const float *dy, double *prod, __m256 eps,
                             __m256 inv, __m256 mc, __m256 top)
{
    __m256 v = _mm256_loadu_ps(x), k = levels8(v, eps, inv, mc);
    __m256 inside = _mm256_sub_ps(k, _mm256_mul_ps(v, inv));
    __m256 pos = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ); /* false for NaN */
    __m256 in = _mm256_and_ps(pos, _mm256_cmp_ps(v, top, _CMP_LT_OQ));
    __m256 t = _mm256_blendv_ps(_mm256_and_ps(mc, pos), inside, in);
    __m256 d = _mm256_loadu_ps(dy);
    _mm256_storeu_pd(prod, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(d)),
                                         _mm256_cvtps_pd(_mm256_castps256_ps128(t))));
    _mm256_storeu_pd(prod + 4, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(d, 1)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1))));
}

static void lsq_prod_span_avx2(const float *x, const float *dy, double *prod, int64_t n,
                               float eps, float inv_delta, float top, int32_t maxcode)
{
    const __m256 ve = _mm256_set1_ps(eps), vi = _mm256_set1_ps(inv_delta);
    const __m256 mc = _mm256_set1_ps((float)maxcode), vt = _mm256_set1_ps(top);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        lsq_prod8(x + i, dy + i, prod + i, ve, vi, mc, vt);
    if (i < n) {
        float xt[8] = {0}, dt[8] = {0};
        double pt[8];
        memcpy(xt, x + i, (size_t)(n - i) * sizeof *x);
        memcpy(dt, dy + i, (size_t)(n - i) * sizeof *dy);
        lsq_prod8(xt, dt, pt, ve, vi, mc, vt);
        memcpy(prod + i, pt, (size_t)(n - i) * sizeof *prod);
    }
}

const tsq__eltwise tsq__eltwise_avx2 = {
    tsq__encode_span_avx2, encode_row_avx2,      fakequant_span_avx2, fakequant_row_avx2,
    ste_span_avx2,         ste_row_avx2,         count_nonfinite_avx2, lsq_prod_span_avx2,
};
