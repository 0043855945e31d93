/* The quantizer's serialized form (tsq_quantizer_save / tsq_quantizer_load),
 * written and read with core/codec.h. Version 1, all little-endian:
 *
 *    0  "TSQQ"           4  u32 version = 1     8  u32 bits
 *   12  u32 eps_mode    16  u32 hist_resolution 20  u32 reserved = 0
 *   24  i64 channels    32  f64 eps option      40  f64 sparsity
 *   48  per channel (max(1, channels) of them): f32 eps, f32 delta,
 *       both 0 for a channel without parameters
 *  end  u32 CRC-32 of every byte before it
 */
#include "quant/quantizer_internal.h"
#include "core/codec.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define FORMAT_VERSION 1u
#define HEADER_BYTES 48u
#define TRAILER_BYTES 4u

static uint64_t saved_size(int64_t nparams)
{
    return HEADER_BYTES + 8u * (uint64_t)nparams + TRAILER_BYTES;
}

tsq_status tsq_quantizer_save(tsq_quantizer *q, void *buf, uint64_t capacity, uint64_t *size)
{
    unsigned char *p = buf;
    uint64_t need;
    int64_t c;
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!size, &q->obj, TSQ_ERR_NULL, "quantizer_save: size is NULL");
    need = saved_size(q->nparams);
    *size = need;
    if (!buf) {
        tsq__clear(&q->obj);
        return TSQ_OK;
    }
    TSQ_RETURN_ERROR_IF(capacity < need, &q->obj, TSQ_ERR_TOO_SMALL,
                        "quantizer_save: buffer holds %llu bytes, %llu needed",
                        (unsigned long long)capacity, (unsigned long long)need);
    memcpy(p, "TSQQ", 4);
    tsq__le_put_u32(p + 4, FORMAT_VERSION);
    tsq__le_put_u32(p + 8, (uint32_t)q->bits);
    tsq__le_put_u32(p + 12, (uint32_t)q->eps_mode);
    tsq__le_put_u32(p + 16, (uint32_t)q->sub_bits);
    tsq__le_put_u32(p + 20, 0);
    tsq__le_put_u64(p + 24, (uint64_t)q->channels);
    tsq__le_put_f64(p + 32, q->eps_fixed);
    tsq__le_put_f64(p + 40, q->sparsity);
    for (c = 0; c < q->nparams; c++) {
        tsq__le_put_f32(p + HEADER_BYTES + 8 * c, q->eps[c]);
        tsq__le_put_f32(p + HEADER_BYTES + 8 * c + 4, q->delta[c]);
    }
    tsq__le_put_u32(p + need - TRAILER_BYTES, tsq__crc32(0, p, (size_t)(need - TRAILER_BYTES)));
    tsq__clear(&q->obj);
    return TSQ_OK;
}

/* Checks the framing: size, magic, version, channel count and checksum. */
static tsq_status check_frame(tsq_context *ctx, const unsigned char *p, uint64_t size,
                              int64_t *channels)
{
    static const char *where = "quantizer_load";
    uint64_t raw, need;
    uint32_t version;
    TSQ_RETURN_ERROR_IF(size < saved_size(1), &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: %llu bytes are fewer than the %llu of the smallest quantizer",
                        where, (unsigned long long)size, (unsigned long long)saved_size(1));
    TSQ_RETURN_ERROR_IF(memcmp(p, "TSQQ", 4) != 0, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: bad magic: not a libtsq quantizer", where);
    version = tsq__le_get_u32(p + 4);
    TSQ_RETURN_ERROR_IF(version != FORMAT_VERSION, &ctx->obj, TSQ_ERR_VERSION,
                        "%s: format version %u; this library reads version %u", where,
                        (unsigned)version, (unsigned)FORMAT_VERSION);
    raw = tsq__le_get_u64(p + 24);
    TSQ_RETURN_ERROR_IF(raw > (uint64_t)TSQ__QUANTIZER_MAX_CHANNELS, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: channel count %llu is out of range", where,
                        (unsigned long long)raw);
    need = saved_size(raw > 0 ? (int64_t)raw : 1);
    TSQ_RETURN_ERROR_IF(size != need, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: %llu bytes, but %llu channel(s) need exactly %llu", where,
                        (unsigned long long)size, (unsigned long long)raw,
                        (unsigned long long)need);
    TSQ_RETURN_ERROR_IF(tsq__le_get_u32(p + size - TRAILER_BYTES) !=
                            tsq__crc32(0, p, (size_t)(size - TRAILER_BYTES)),
                        &ctx->obj, TSQ_ERR_FORMAT, "%s: checksum mismatch (corrupt data)",
                        where);
    *channels = (int64_t)raw;
    return TSQ_OK;
}

/* Checks the fields inside a well-framed buffer. */
static tsq_status check_fields(tsq_context *ctx, const unsigned char *p, int64_t nparams)
{
    static const char *where = "quantizer_load";
    uint32_t bits = tsq__le_get_u32(p + 8), mode = tsq__le_get_u32(p + 12);
    uint32_t res = tsq__le_get_u32(p + 16);
    double eps = tsq__le_get_f64(p + 32), sparsity = tsq__le_get_f64(p + 40);
    int64_t c;
    TSQ_RETURN_ERROR_IF(bits < 1 || bits > 8, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: bits %u is outside 1..8", where, (unsigned)bits);
    TSQ_RETURN_ERROR_IF(mode < TSQ_EPS_FIXED || mode > TSQ_EPS_PLAIN, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: unknown eps mode %u", where, (unsigned)mode);
    TSQ_RETURN_ERROR_IF(res > TSQ__HIST_SUB_BITS_MAX, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: histogram resolution %u is outside 0..%d", where, (unsigned)res,
                        TSQ__HIST_SUB_BITS_MAX);
    TSQ_RETURN_ERROR_IF(tsq__le_get_u32(p + 20) != 0, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: reserved field is not 0", where);
    TSQ_RETURN_ERROR_IF(!(eps >= 0.0 && eps <= FLT_MAX) || !(sparsity >= 0.0 && sparsity <= 1.0),
                        &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: eps option %g or sparsity %g is out of range", where, eps,
                        sparsity);
    for (c = 0; c < nparams; c++) {
        float e = tsq__le_get_f32(p + HEADER_BYTES + 8 * c);
        float d = tsq__le_get_f32(p + HEADER_BYTES + 8 * c + 4);
        const char *problem;
        if (e == 0.0f && d == 0.0f && !signbit(e) && !signbit(d))
            continue; /* a channel without parameters */
        problem = tsq__q_param_problem(e, d, (1 << bits) - 1);
        TSQ_RETURN_ERROR_IF(problem, &ctx->obj, TSQ_ERR_FORMAT, "%s: channel %lld %s", where,
                            (long long)c, problem);
    }
    return TSQ_OK;
}

tsq_status tsq_quantizer_load(tsq_context *ctx, const void *buf, uint64_t size,
                              tsq_quantizer **out)
{
    const unsigned char *p = buf;
    tsq_quantizer *q = NULL;
    int64_t channels = 0, c;
    if (!ctx)
        return out ? (*out = NULL, TSQ_ERR_NULL) : TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!out, &ctx->obj, TSQ_ERR_NULL, "quantizer_load: out is NULL");
    *out = NULL;
    TSQ_RETURN_ERROR_IF(!buf, &ctx->obj, TSQ_ERR_NULL, "quantizer_load: buf is NULL");
    TSQ_FORWARD_IF_ERROR(check_frame(ctx, p, size, &channels));
    TSQ_FORWARD_IF_ERROR(check_fields(ctx, p, channels > 0 ? channels : 1));
    TSQ_FORWARD_IF_ERROR(tsq_quantizer_create(ctx, (int32_t)tsq__le_get_u32(p + 8), channels, &q));
    q->eps_mode = (int32_t)tsq__le_get_u32(p + 12);
    q->sub_bits = (int32_t)tsq__le_get_u32(p + 16);
    q->eps_fixed = tsq__le_get_f64(p + 32);
    q->sparsity = tsq__le_get_f64(p + 40);
    for (c = 0; c < q->nparams; c++) {
        float d = tsq__le_get_f32(p + HEADER_BYTES + 8 * c + 4);
        if (d > 0.0f)
            tsq__q_store_param(q, c, tsq__le_get_f32(p + HEADER_BYTES + 8 * c), d);
    }
    *out = q;
    return TSQ_OK;
}
