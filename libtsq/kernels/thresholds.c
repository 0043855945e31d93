/* Integer thresholds for "affine, then quantize" (docs/method.md §6.1).
 * For one channel, f(acc) = Q(fl(fl((float)acc * alpha) + b))
 * is a monotone step function of the integer acc: every float operation in
 * it (int to float, the product, the sum, the quantizer's scaling, floor,
 * clamp) is monotone, non-decreasing for alpha > 0 and non-increasing for
 * alpha < 0 (alpha = 0 makes it constant). So
 *
 *     f(acc) >= m   <=>   acc >= T_m       (alpha > 0)
 *
 * with T_m the smallest int32 at which f reaches m, found by binary search
 * on the exact float formula (tsq__affine_code), which makes the
 * equivalence exact at every int32, ties included. For alpha < 0 the same
 * search runs on a = ~acc = -acc - 1 (a strictly decreasing bijection of
 * int32, unlike -acc, which overflows at INT32_MIN).
 *
 * Codes that no int32 reaches get T_m = INT32_MAX and the count is capped
 * by the channel's top code (reached at a = INT32_MAX), so
 *
 *     code = min(#{m : a >= T_m}, top)
 *
 * holds for every a, INT32_MAX included; codes every int32 reaches get
 * T_m = INT32_MIN. */
#include "kernels_internal.h"
#include "kernels/encode.h"

#include <math.h>
#include <string.h>

int32_t tsq__affine_code(int32_t acc, float alpha, float bias, float eps, float inv_delta,
                         int32_t maxcode)
{
    /* Two statements, so that no compiler contracts them into one fused
     * multiply-add: the product is rounded to float before the sum. */
    float scaled = (float)acc * alpha;
    float v = scaled + bias;
    return tsq__quant_code(v, eps, inv_delta, maxcode);
}

typedef struct {
    float alpha, bias, eps, inv_delta;
    int32_t maxcode;
    int32_t flip; /* 0: a = acc; -1: a = ~acc */
} channel_fn;

/* f as a non-decreasing function of a. */
static int32_t eval(const channel_fn *f, int32_t a)
{
    return tsq__affine_code(a ^ f->flip, f->alpha, f->bias, f->eps, f->inv_delta, f->maxcode);
}

/* The smallest a in (INT32_MIN, INT32_MAX] with eval(a) >= m, given
 * eval(INT32_MIN) < m <= eval(INT32_MAX). */
static int32_t first_reaching(const channel_fn *f, int32_t m)
{
    int64_t lo = INT32_MIN, hi = INT32_MAX; /* eval(lo) < m <= eval(hi) */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (eval(f, (int32_t)mid) >= m)
            hi = mid;
        else
            lo = mid;
    }
    return (int32_t)hi;
}

static void derive_channel(tsq_thresholds *th, int64_t c, float alpha, float bias, float eps,
                           float delta)
{
    channel_fn f;
    int32_t low, top, m;
    f.alpha = alpha;
    f.bias = bias;
    f.eps = eps;
    f.inv_delta = 1.0f / delta; /* as the quantizer computes it, once in float */
    f.maxcode = th->maxcode;
    f.flip = alpha < 0.0f ? -1 : 0;
    low = eval(&f, INT32_MIN);
    top = eval(&f, INT32_MAX);
    for (m = 1; m <= th->maxcode; m++) {
        int32_t t;
        if (m <= low)
            t = INT32_MIN;
        else if (m > top)
            t = INT32_MAX;
        else
            t = first_reaching(&f, m);
        th->t[(m - 1) * th->padded + c] = t;
    }
    th->flip[c] = f.flip;
    th->top[c] = top;
}

static const char *first_nonfinite(int64_t channels, const float *alpha, const float *bias,
                                   const float *eps, const float *delta, int64_t qparams,
                                   int64_t *index)
{
    int64_t i;
    for (i = 0; i < channels; i++) {
        *index = i;
        if (!isfinite(alpha[i]))
            return "alpha";
        if (bias && !isfinite(bias[i]))
            return "bias";
    }
    for (i = 0; i < qparams; i++) {
        *index = i;
        if (!isfinite(eps[i]))
            return "eps";
        if (!isfinite(delta[i]))
            return "delta";
    }
    return NULL;
}

static tsq_status check_args(tsq_context *ctx, int64_t channels, const float *alpha,
                             const float *bias, int32_t code_bits, const float *eps,
                             const float *delta, int64_t qparams)
{
    static const char *where = "thresholds_create";
    const char *bad;
    int64_t i;
    if (!alpha || !eps || !delta)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         !alpha ? "alpha" : !eps ? "eps" : "delta");
    if (channels < 1 || channels > INT32_MAX)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: channels %lld is outside 1..2^31-1",
                         where, (long long)channels);
    if (code_bits < 1 || code_bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: code_bits %d is outside 1..8", where,
                         (int)code_bits);
    if (qparams != 1 && qparams != channels)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: qparams %lld must be 1 or channels (%lld)", where,
                         (long long)qparams, (long long)channels);
    bad = first_nonfinite(channels, alpha, bias, eps, delta, qparams, &i);
    if (bad)
        return tsq__fail(&ctx->obj, TSQ_ERR_NOT_FINITE, "%s: %s[%lld] is not finite", where,
                         bad, (long long)i);
    for (i = 0; i < qparams; i++)
        if (!(delta[i] > 0.0f))
            return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: delta[%lld] = %g must be > 0",
                             where, (long long)i, (double)delta[i]);
    return TSQ_OK;
}

static void free_thresholds(tsq_context *ctx, tsq_thresholds *th)
{
    tsq__free(ctx, th->t);
    tsq__free(ctx, th->flip);
    tsq__free(ctx, th->top);
    tsq__free(ctx, th);
}

tsq_status tsq_thresholds_create(tsq_context *ctx, int64_t channels, const float *alpha,
                                 const float *bias, int32_t code_bits, const float *eps,
                                 const float *delta, int64_t qparams, tsq_thresholds **out)
{
    tsq_thresholds *th;
    int64_t c, padded;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "thresholds_create: out is NULL");
    *out = NULL;
    st = check_args(ctx, channels, alpha, bias, code_bits, eps, delta, qparams);
    if (st != TSQ_OK)
        return st;
    th = tsq__calloc(ctx, 1, sizeof *th);
    if (!th)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "thresholds_create: out of memory");
    tsq__object_init(&th->obj, ctx);
    padded = (channels + 15) / 16 * 16;
    th->channels = channels;
    th->padded = padded;
    th->bits = code_bits;
    th->maxcode = tsq__max_code(code_bits);
    th->t = tsq__calloc(ctx, (size_t)(th->maxcode * padded), sizeof(int32_t));
    th->flip = tsq__calloc(ctx, (size_t)padded, sizeof(int32_t));
    th->top = tsq__calloc(ctx, (size_t)padded, sizeof(int32_t));
    if (!th->t || !th->flip || !th->top) {
        free_thresholds(ctx, th);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "thresholds_create: out of memory");
    }
    for (c = 0; c < channels; c++) {
        int64_t q = qparams == 1 ? 0 : c;
        derive_channel(th, c, alpha[c], bias ? bias[c] : 0.0f, eps[q], delta[q]);
    }
    /* Padding channels: top 0, so their (never stored) code is 0. */
    for (; c < padded; c++) {
        int32_t m;
        for (m = 0; m < th->maxcode; m++)
            th->t[m * padded + c] = INT32_MAX;
    }
    tsq__clear(&ctx->obj);
    *out = th;
    return TSQ_OK;
}

void tsq_thresholds_destroy(tsq_thresholds *th)
{
    if (th)
        free_thresholds(th->obj.ctx, th);
}

tsq_status tsq_thresholds_get(const tsq_thresholds *th, int32_t key, int64_t *value)
{
    if (!th || !value)
        return TSQ_ERR_NULL;
    switch (key) {
    case TSQ_THRESHOLDS_CHANNELS: *value = th->channels; return TSQ_OK;
    case TSQ_THRESHOLDS_CODE_BITS: *value = th->bits; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}

tsq_status tsq_thresholds_channel(const tsq_thresholds *th, int64_t channel,
                                  int32_t *direction, int32_t *top, int32_t *t,
                                  int64_t capacity)
{
    int32_t m;
    if (!th || !direction || !top || !t)
        return TSQ_ERR_NULL;
    if (channel < 0 || channel >= th->channels)
        return TSQ_ERR_INVALID;
    if (capacity < th->maxcode)
        return TSQ_ERR_TOO_SMALL;
    *direction = th->flip[channel] ? -1 : 1;
    *top = th->top[channel];
    for (m = 0; m < th->maxcode; m++)
        t[m] = th->t[m * th->padded + channel];
    return TSQ_OK;
}

void tsq__thresholds_apply_ref(const tsq_thresholds *th, const int32_t *acc, int64_t ldacc,
                               int64_t rows, int64_t c0, int64_t c1, uint8_t *out,
                               int64_t ldo)
{
    int64_t r, c;
    int32_t m;
    for (r = 0; r < rows; r++)
        for (c = c0; c < c1; c++) {
            int32_t a = acc[r * ldacc + c] ^ th->flip[c], count = 0;
            for (m = 0; m < th->maxcode; m++)
                count += a >= th->t[m * th->padded + c];
            out[r * ldo + c] = (uint8_t)(count < th->top[c] ? count : th->top[c]);
        }
}
