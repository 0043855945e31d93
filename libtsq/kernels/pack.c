/* Packed low-bit weights: int8 K x N -> two's-complement bit planes
 * (layout in kernels_internal.h), and back: to int8 for the reference
 * kernel and the round trip, and to decoded 16-column panels for the AVX2
 * and VNNI kernels. */
#include "kernels_internal.h"

#include <string.h>

static uint64_t *plane(const tsq_packed_weights *pw, int64_t g, int32_t j)
{
    return pw->planes + (size_t)((g * pw->bits + j) * pw->kwords) * TSQ__GROUP_COLS;
}

/* The first weight outside the b-bit alphabet, or -1. */
static int64_t find_bad_weight(const int8_t *w, int64_t count, int32_t bits)
{
    int32_t lim = tsq__max_weight(bits);
    int64_t i;
    for (i = 0; i < count; i++)
        if (w[i] > lim || w[i] < -lim)
            return i;
    return -1;
}

static void fill_planes(tsq_packed_weights *pw, const int8_t *w)
{
    int64_t k, c;
    int32_t j;
    for (k = 0; k < pw->k; k++) {
        int64_t kw = k / TSQ__KWORD;
        uint64_t bit = UINT64_C(1) << (k % TSQ__KWORD);
        for (c = 0; c < pw->n; c++) {
            /* The low b bits of the two's complement byte are the planes. */
            uint32_t u = (uint8_t)w[k * pw->n + c];
            for (j = 0; j < pw->bits; j++)
                if (u >> j & 1u)
                    plane(pw, c / TSQ__GROUP_COLS, j)[kw * TSQ__GROUP_COLS + c % TSQ__GROUP_COLS] |= bit;
        }
    }
}

tsq_status tsq_packed_weights_create(tsq_context *ctx, const tsq_tensor *w,
                                     int32_t weight_bits, tsq_packed_weights **out)
{
    static const char *where = "packed_weights_create";
    tsq_packed_weights *pw;
    int64_t k, n, bad, words;
    size_t bytes;
    tsq_status st;

    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *out = NULL;
    st = tsq__expect_dtype(&ctx->obj, where, "w", w, TSQ_DTYPE_I8);
    if (st != TSQ_OK)
        return st;
    if (w->ndim != 2)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: w has %d dimensions, expected 2 (K x N)",
                         where, (int)w->ndim);
    if (weight_bits < 2 || weight_bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: weight_bits %d is outside 2..8", where,
                         (int)weight_bits);
    k = w->shape[0];
    n = w->shape[1];
    if (k > INT32_MAX || n > INT32_MAX)
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: w is %lld x %lld, each side must be "
                         "below 2^31", where, (long long)k, (long long)n);
    bad = find_bad_weight(w->data, w->numel, weight_bits);
    if (bad >= 0)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: w[%lld][%lld] = %d is outside -%d..%d for %d-bit weights", where,
                         (long long)(bad / n), (long long)(bad % n),
                         (int)((const int8_t *)w->data)[bad], (int)tsq__max_weight(weight_bits),
                         (int)tsq__max_weight(weight_bits), (int)weight_bits);
    /* groups * bits * kwords * 8 words; each factor is below 2^31. */
    words = (n + TSQ__GROUP_COLS - 1) / TSQ__GROUP_COLS * weight_bits;
    if (!tsq__mul_i64(words, (k + TSQ__KWORD - 1) / TSQ__KWORD * TSQ__GROUP_COLS, &words) ||
        !tsq__mul_size((size_t)words, sizeof(uint64_t), &bytes))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: packed size overflows", where);
    pw = tsq__alloc(ctx, sizeof *pw);
    if (!pw)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the handle", where);
    memset(pw, 0, sizeof *pw);
    tsq__object_init(&pw->obj, ctx);
    pw->planes = tsq__calloc(ctx, (size_t)words, sizeof(uint64_t));
    if (!pw->planes) {
        tsq__free(ctx, pw);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for %llu bytes",
                         where, (unsigned long long)bytes);
    }
    pw->k = k;
    pw->n = n;
    pw->bits = weight_bits;
    pw->kwords = (k + TSQ__KWORD - 1) / TSQ__KWORD;
    pw->groups = (n + TSQ__GROUP_COLS - 1) / TSQ__GROUP_COLS;
    pw->bytes = (uint64_t)bytes;
    fill_planes(pw, w->data);
    tsq__clear(&ctx->obj);
    *out = pw;
    return TSQ_OK;
}

void tsq_packed_weights_destroy(tsq_packed_weights *pw)
{
    if (!pw)
        return;
    tsq__free(pw->obj.ctx, pw->planes);
    tsq__free(pw->obj.ctx, pw);
}

tsq_status tsq_packed_weights_get(const tsq_packed_weights *pw, int32_t key, int64_t *value)
{
    if (!pw || !value)
        return TSQ_ERR_NULL;
    switch (key) {
    case TSQ_PACKED_ROWS: *value = pw->k; return TSQ_OK;
    case TSQ_PACKED_COLS: *value = pw->n; return TSQ_OK;
    case TSQ_PACKED_WEIGHT_BITS: *value = pw->bits; return TSQ_OK;
    case TSQ_PACKED_BYTES: *value = (int64_t)pw->bytes; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}

/* Weight (k, c) from its planes. */
static int32_t weight_at(const tsq_packed_weights *pw, int64_t k, int64_t c)
{
    int64_t idx = k / TSQ__KWORD * TSQ__GROUP_COLS + c % TSQ__GROUP_COLS;
    int32_t j, v = 0;
    for (j = 0; j < pw->bits; j++) {
        int32_t bit = (int32_t)(plane(pw, c / TSQ__GROUP_COLS, j)[idx] >> (k % TSQ__KWORD) & 1u);
        v += j == pw->bits - 1 ? -(bit << j) : bit << j;
    }
    return v;
}

void tsq__unpack_weights(const tsq_packed_weights *pw, int8_t *w)
{
    int64_t k, c;
    for (k = 0; k < pw->k; k++)
        for (c = 0; c < pw->n; c++)
            w[k * pw->n + c] = (int8_t)weight_at(pw, k, c);
}

tsq_status tsq_packed_weights_unpack(const tsq_packed_weights *pw, tsq_tensor *w)
{
    tsq_status st;
    if (!pw || !w)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&w->obj, "packed_weights_unpack", "w", w, TSQ_DTYPE_I8);
    if (st != TSQ_OK)
        return st;
    if (w->ndim != 2 || w->shape[0] != pw->k || w->shape[1] != pw->n)
        return tsq__fail(&w->obj, TSQ_ERR_SHAPE,
                         "packed_weights_unpack: w must be %lld x %lld", (long long)pw->k,
                         (long long)pw->n);
    tsq__unpack_weights(pw, w->data);
    tsq__clear(&w->obj);
    return TSQ_OK;
}

/* Spreads the 8 bits of a byte to the lowest bit of 8 bytes: four bits at
 * a time, the multiplier places copies 7 bits apart so that bit i of copy i
 * lands on bit 8i and no two copies overlap. */
static uint64_t spread_byte(uint32_t byte)
{
    uint64_t lo = ((byte & 15u) * UINT64_C(0x00204081)) & UINT64_C(0x01010101);
    uint64_t hi = ((byte >> 4) * UINT64_C(0x00204081)) & UINT64_C(0x01010101);
    return lo | hi << 32;
}

/* Eight weights W[8q' .. 8q'+7][c] as int8 bytes of one uint64: plane j
 * contributes 2^j per set bit, the top plane -2^(b-1), i.e. 256 - 2^(b-1)
 * modulo 256; a byte's sum stays below 256, so bytes never carry. */
static uint64_t eight_weights(const tsq_packed_weights *pw, int64_t g, int64_t lane,
                              int64_t kw, int32_t shift)
{
    uint64_t v = 0;
    int32_t j;
    for (j = 0; j < pw->bits; j++) {
        uint64_t word = plane(pw, g, j)[kw * TSQ__GROUP_COLS + lane];
        uint64_t coef = j == pw->bits - 1 ? (uint64_t)(256 - (1 << j)) : (uint64_t)1 << j;
        v += spread_byte((uint32_t)(word >> shift) & 255u) * coef;
    }
    return v;
}

void tsq__decode_panels(const tsq_packed_weights *pw, int64_t p0, int64_t p1, int8_t *dec)
{
    int64_t k4n = tsq__k4n(pw->k), p, l, q;
    for (p = p0; p < p1; p++) {
        int8_t *panel = dec + (p - p0) * k4n * 64;
        for (l = 0; l < TSQ__PANEL_COLS; l++) {
            int64_t c = p * TSQ__PANEL_COLS + l;
            for (q = 0; q < k4n; q += 2) {
                /* k = 4q .. 4q+7: one byte of each plane word. */
                uint64_t v = 0;
                uint32_t lo, hi;
                if (c < pw->n)
                    v = eight_weights(pw, c / TSQ__GROUP_COLS, c % TSQ__GROUP_COLS,
                                      q / 16, (int32_t)(q % 16) * 4);
                lo = (uint32_t)v;
                hi = (uint32_t)(v >> 32);
                memcpy(panel + q * 64 + l * 4, &lo, 4);
                if (q + 1 < k4n)
                    memcpy(panel + (q + 1) * 64 + l * 4, &hi, 4);
            }
        }
    }
}

void tsq__pair_panels(const int8_t *w, int64_t k, int64_t n, uint8_t *out)
{
    int64_t kp = (k + 1) / 2, b, q, j;
    for (b = 0; b < (n + TSQ__PAIR_COLS - 1) / TSQ__PAIR_COLS; b++)
        for (q = 0; q < kp; q++)
            for (j = 0; j < TSQ__PAIR_COLS; j++) {
                int64_t c = b * TSQ__PAIR_COLS + j;
                int w0 = c < n ? w[2 * q * n + c] : 0;
                int w1 = c < n && 2 * q + 1 < k ? w[(2 * q + 1) * n + c] : 0;
                *out++ = (uint8_t)((w0 + 2) + 4 * (w1 + 2));
            }
}
