/* The sparse activation quantizer (docs/method.md §2.1): the handle, its
 * options (through the option table of core/options.h), its per-channel
 * parameters and the argument checks the other quantizer files share
 * (quantizer_internal.h says which file owns what). */
#include "quant/quantizer_internal.h"
#include "core/options.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

static void computed_option(const void *handle, const tsq__option *o, double *value)
{
    const tsq_quantizer *q = handle;
    switch (o->key) {
    case TSQ_QUANTIZER_CHANNELS: *value = (double)q->channels; break;
    case TSQ_QUANTIZER_FITTED: *value = q->nset == q->nparams; break;
    default: *value = tsq__q_observed(q); break; /* TSQ_QUANTIZER_OBSERVED */
    }
}

/* Defaults: eps 0.32 is the 2-bit value on batch-normalised inputs, and
 * sparsity 0.63 what that eps zeroes of unit-Gaussian inputs
 * (docs/quantizer.md). bits' default is that of the net's conversion
 * option (TSQ_NET_TSQ_ACT_BITS); tsq_quantizer_create sets its own. */
static const tsq__option quantizer_options[] = {
    {TSQ_QUANTIZER_BITS, "bits", 1, 8, 2, TSQ__OPT_I32, 0, offsetof(tsq_quantizer, bits), 0,
     NULL, 0},
    {TSQ_QUANTIZER_EPS_MODE, "eps_mode", TSQ_EPS_FIXED, TSQ_EPS_PLAIN, TSQ_EPS_JOINT,
     TSQ__OPT_I32, 0, offsetof(tsq_quantizer, eps_mode), 0, NULL, 0},
    {TSQ_QUANTIZER_EPS, "eps", 0, FLT_MAX, 0.32, TSQ__OPT_F64, 0,
     offsetof(tsq_quantizer, eps_fixed), 0, NULL, 0},
    {TSQ_QUANTIZER_SPARSITY, "sparsity", 0, 1, 0.63, TSQ__OPT_F64, 0,
     offsetof(tsq_quantizer, sparsity), 0, NULL, 0},
    {TSQ_QUANTIZER_HIST_RESOLUTION, "hist_resolution", 0, TSQ__HIST_SUB_BITS_MAX, 0,
     TSQ__OPT_I32, 0, offsetof(tsq_quantizer, sub_bits), 0, NULL, 0},
    {TSQ_QUANTIZER_CHANNELS, "channels", 0, TSQ__QUANTIZER_MAX_CHANNELS, 0, TSQ__OPT_COMPUTED,
     TSQ__OPT_INTEGER, 0, 0, NULL, 0},
    {TSQ_QUANTIZER_FITTED, "fitted", 0, 1, 0, TSQ__OPT_COMPUTED, TSQ__OPT_INTEGER, 0, 0, NULL, 0},
    {TSQ_QUANTIZER_OBSERVED, "observed", 0, 9007199254740992.0 /* 2^53 */, 0, TSQ__OPT_COMPUTED,
     TSQ__OPT_INTEGER, 0, 0, NULL, 0},
};

const tsq__option_table tsq__quantizer_table = {
    "quantizer", 0x0200, (int32_t)(sizeof quantizer_options / sizeof quantizer_options[0]),
    quantizer_options, NULL, computed_option, NULL, NULL, " .. "};

static void clear_params(tsq_quantizer *q)
{
    memset(q->eps, 0, (size_t)q->nparams * sizeof *q->eps);
    memset(q->delta, 0, (size_t)q->nparams * sizeof *q->delta);
    memset(q->inv_delta, 0, (size_t)q->nparams * sizeof *q->inv_delta);
    q->nset = 0;
}

tsq_status tsq_quantizer_option_bounds(int32_t key, double *lo, double *hi)
{
    return tsq__option_bounds(&tsq__quantizer_table, key, lo, hi);
}

tsq_status tsq_quantizer_set_option(tsq_quantizer *q, int32_t key, double value)
{
    static const char *where = "quantizer_set_option";
    const tsq__option *o = NULL;
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(
        tsq__option_check(&tsq__quantizer_table, &q->obj, where, q, key, value, &o));
    if (key == TSQ_QUANTIZER_HIST_RESOLUTION && (int32_t)value != q->sub_bits) {
        TSQ_RETURN_ERROR_IF(tsq__q_observed(q) > 0.0, &q->obj, TSQ_ERR_STATE,
                            "%s: hist_resolution cannot change while statistics are held; "
                            "call tsq_quantizer_reset first", where);
        tsq__hist_destroy(q->obj.ctx, q->hist); /* an empty one of the old resolution */
        q->hist = NULL;
    }
    if (key == TSQ_QUANTIZER_BITS && (int32_t)value != q->bits)
        clear_params(q); /* parameters fitted for other levels */
    (void)tsq__option_store(&tsq__quantizer_table, o, q, value, where); /* a field */
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_get_option(const tsq_quantizer *q, int32_t key, double *value)
{
    if (!q)
        return TSQ_ERR_NULL;
    return tsq__option_get(&tsq__quantizer_table, &q->obj, "quantizer_get_option", q, key,
                           value);
}

/* ------------------------------------------------------------------ */
/* Handle                                                               */
/* ------------------------------------------------------------------ */

tsq_status tsq_quantizer_create(tsq_context *ctx, int32_t bits, int64_t channels,
                                tsq_quantizer **out)
{
    tsq_quantizer *q;
    size_t np;
    if (!ctx)
        return out ? (*out = NULL, TSQ_ERR_NULL) : TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!out, &ctx->obj, TSQ_ERR_NULL, "quantizer_create: out is NULL");
    *out = NULL;
    TSQ_RETURN_ERROR_IF(bits < 1 || bits > 8, &ctx->obj, TSQ_ERR_INVALID,
                        "quantizer_create: bits is %d, must be 1..8", (int)bits);
    TSQ_RETURN_ERROR_IF(channels < 0 || channels > TSQ__QUANTIZER_MAX_CHANNELS, &ctx->obj,
                        TSQ_ERR_INVALID,
                        "quantizer_create: channels is %lld, must be 0 (per tensor) .. %d",
                        (long long)channels, (int)TSQ__QUANTIZER_MAX_CHANNELS);
    np = (size_t)(channels > 0 ? channels : 1);
    q = tsq__calloc(ctx, 1, sizeof *q);
    TSQ_RETURN_ERROR_IF(!q, &ctx->obj, TSQ_ERR_NO_MEMORY, "quantizer_create: out of memory");
    tsq__object_init(&q->obj, ctx);
    q->eps = tsq__calloc(ctx, np, sizeof *q->eps);
    q->delta = tsq__calloc(ctx, np, sizeof *q->delta);
    q->inv_delta = tsq__calloc(ctx, np, sizeof *q->inv_delta);
    if (!q->eps || !q->delta || !q->inv_delta) {
        tsq_quantizer_destroy(q);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY,
                         "quantizer_create: out of memory for %llu channel(s)",
                         (unsigned long long)np);
    }
    (void)tsq__option_defaults(&tsq__quantizer_table, q); /* fields only: cannot fail */
    q->bits = bits;
    q->kern = tsq__eltwise_for(ctx->cpu);
    q->channels = channels;
    q->nparams = (int64_t)np;
    tsq__clear(&ctx->obj);
    *out = q;
    return TSQ_OK;
}

void tsq_quantizer_destroy(tsq_quantizer *q)
{
    tsq_context *ctx;
    if (!q)
        return;
    ctx = q->obj.ctx;
    tsq__hist_destroy(ctx, q->hist);
    tsq__free(ctx, q->eps);
    tsq__free(ctx, q->delta);
    tsq__free(ctx, q->inv_delta);
    tsq__free(ctx, q);
}

const char *tsq_quantizer_errmsg(const tsq_quantizer *q)
{
    return q ? q->obj.msg : "no quantizer";
}

double tsq__q_observed(const tsq_quantizer *q)
{
    return q->hist ? tsq__hist_total(q->hist) : 0.0;
}

int32_t tsq__q_hist_sub_bits(const tsq_quantizer *q)
{
    return q->sub_bits ? q->sub_bits : TSQ__HIST_SUB_BITS_AUTO(q->bits);
}

/* ------------------------------------------------------------------ */
/* Argument checks                                                      */
/* ------------------------------------------------------------------ */

tsq_status tsq__q_layout(const tsq_quantizer *q, const char *where, const char *name,
                         const tsq_tensor *t, tsq__qlayout *l)
{
    l->numel = t->numel;
    if (q->channels == 0) {
        l->outer = 1;
        l->inner = t->numel;
        return TSQ_OK;
    }
    TSQ_RETURN_ERROR_IF(t->ndim < 2, &q->obj, TSQ_ERR_SHAPE,
                        "%s: %s has %d dimension(s); a per-channel quantizer needs N x C "
                        "(x H x W)", where, name, (int)t->ndim);
    TSQ_RETURN_ERROR_IF(t->shape[1] != q->channels, &q->obj, TSQ_ERR_SHAPE,
                        "%s: %s has %lld channels (dimension 1), the quantizer has %lld",
                        where, name, (long long)t->shape[1], (long long)q->channels);
    l->outer = t->shape[0];
    l->inner = t->numel / (t->shape[0] * t->shape[1]);
    return TSQ_OK;
}

static void format_shape(const tsq_tensor *t, char *buf, size_t cap)
{
    int32_t i;
    size_t used = 0;
    buf[0] = '\0';
    for (i = 0; i < t->ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "x" : "",
                                 (long long)t->shape[i]);
}

static tsq_status same_shape(const tsq_quantizer *q, const char *where, const char *na,
                             const tsq_tensor *a, const char *nb, const tsq_tensor *b)
{
    char sa[64], sb[64];
    int32_t i;
    int same = a->ndim == b->ndim;
    for (i = 0; same && i < a->ndim; i++)
        same = a->shape[i] == b->shape[i];
    if (same)
        return TSQ_OK;
    format_shape(a, sa, sizeof sa);
    format_shape(b, sb, sizeof sb);
    return tsq__fail(&q->obj, TSQ_ERR_SHAPE, "%s: %s has shape %s but %s has shape %s", where,
                     na, sa, nb, sb);
}

tsq_status tsq__q_check_input(const tsq_quantizer *q, const char *where, const char *name,
                              const tsq_tensor *x, tsq__qlayout *l)
{
    int64_t bad;
    TSQ_FORWARD_IF_ERROR(tsq__expect_dtype(&q->obj, where, name, x, TSQ_DTYPE_F32));
    TSQ_FORWARD_IF_ERROR(tsq__q_layout(q, where, name, x, l));
    bad = q->kern->count_nonfinite((const float *)x->data, x->numel);
    TSQ_RETURN_ERROR_IF(bad != 0, &q->obj, TSQ_ERR_NOT_FINITE,
                        "%s: %lld of %lld samples of %s are NaN or Inf", where, (long long)bad,
                        (long long)x->numel, name);
    return TSQ_OK;
}

tsq_status tsq__q_check_like(const tsq_quantizer *q, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype, const char *xname,
                             const tsq_tensor *x)
{
    TSQ_FORWARD_IF_ERROR(tsq__expect_dtype(&q->obj, where, name, t, dtype));
    return same_shape(q, where, xname, x, name, t);
}

tsq_status tsq__q_require_fitted(const tsq_quantizer *q, const char *where)
{
    int64_t c;
    if (q->nset == q->nparams)
        return TSQ_OK;
    for (c = 0; c < q->nparams && q->delta[c] > 0.0f; c++)
        ;
    return tsq__fail(&q->obj, TSQ_ERR_STATE,
                     "%s: the quantizer is not fitted (channel %lld has no parameters); "
                     "fit it or set its channels first", where, (long long)c);
}

/* ------------------------------------------------------------------ */
/* Per-channel parameters                                               */
/* ------------------------------------------------------------------ */

const char *tsq__q_param_problem(float eps, float delta, int32_t maxcode)
{
    if (!isfinite(eps) || !isfinite(delta))
        return "is not finite";
    if (eps < 0.0f)
        return "has eps < 0";
    if (!(delta > 0.0f))
        return "has delta <= 0";
    if (!isfinite(1.0f / delta) || !isfinite((float)maxcode * delta))
        return "has a delta whose inverse or top level overflows float";
    return NULL;
}

void tsq__q_store_param(tsq_quantizer *q, int64_t c, float eps, float delta)
{
    if (!(q->delta[c] > 0.0f))
        q->nset++;
    q->eps[c] = eps;
    q->delta[c] = delta;
    q->inv_delta[c] = 1.0f / delta; /* in float, as quant_internal.h requires */
}

static tsq_status check_channel_index(const tsq_quantizer *q, const char *where, int64_t c)
{
    TSQ_RETURN_ERROR_IF(c < 0 || c >= q->nparams, &q->obj, TSQ_ERR_INVALID,
                        "%s: channel %lld is outside 0..%lld", where, (long long)c,
                        (long long)(q->nparams - 1));
    return TSQ_OK;
}

tsq_status tsq_quantizer_set_channel(tsq_quantizer *q, int64_t c, float eps, float delta)
{
    static const char *where = "quantizer_set_channel";
    const char *problem;
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(check_channel_index(q, where, c));
    problem = tsq__q_param_problem(eps, delta, tsq__qmax_code(q));
    TSQ_RETURN_ERROR_IF(problem, &q->obj,
                        isfinite(eps) && isfinite(delta) ? TSQ_ERR_INVALID : TSQ_ERR_NOT_FINITE,
                        "%s: (eps %g, delta %g) %s", where, (double)eps, (double)delta, problem);
    tsq__q_store_param(q, c, eps, delta);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_get_channel(const tsq_quantizer *q, int64_t c, float *eps,
                                     float *delta)
{
    static const char *where = "quantizer_get_channel";
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!eps || !delta, &q->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                        eps ? "delta" : "eps");
    TSQ_FORWARD_IF_ERROR(check_channel_index(q, where, c));
    TSQ_RETURN_ERROR_IF(!(q->delta[c] > 0.0f), &q->obj, TSQ_ERR_STATE,
                        "%s: channel %lld has no parameters yet", where, (long long)c);
    *eps = q->eps[c];
    *delta = q->delta[c];
    return TSQ_OK;
}

int64_t tsq__quantizer_nchannels(const struct tsq_quantizer *q)
{
    return q->channels;
}

tsq_status tsq__quantizer_channel(const struct tsq_quantizer *q, int64_t channel,
                                  int32_t *bits, float *eps, float *delta)
{
    int64_t c = q->channels == 0 ? 0 : channel;
    if (channel < 0 || (q->channels > 0 && channel >= q->channels))
        return TSQ_ERR_INVALID;
    if (q->nset != q->nparams)
        return TSQ_ERR_STATE;
    *bits = q->bits;
    *eps = q->eps[c];
    *delta = q->delta[c];
    return TSQ_OK;
}
