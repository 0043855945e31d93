/*
 * The step-2 regressor's handle and its settings: create/destroy, the
 * option table (keys of the 0x0300 family), the weight alphabet and the
 * output quantizer. Options are copied into a fit when it begins.
 */
#include "regressor_fit.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct param_info {
    int32_t key;
    double lo, hi, dflt;
    int integral;
} param_info;

static const param_info params[] = {
    {TSQ_REGRESSOR_WEIGHT_BITS, 2, 8, 2, 1},
    {TSQ_REGRESSOR_OFFSET, 0, 1, 1, 1},
    {TSQ_REGRESSOR_LOSS, TSQ_LOSS_QUANTIZED, TSQ_LOSS_LINEAR, TSQ_LOSS_QUANTIZED, 1},
    {TSQ_REGRESSOR_ROUNDS, 0, 100000, 10, 1},
    {TSQ_REGRESSOR_LINEAR_ROUNDS, 0, 100000, 3, 1},
    {TSQ_REGRESSOR_SWEEPS, 1, 10000, 8, 1},
    {TSQ_REGRESSOR_LAMBDA0, 1e-12, 1e12, 0.1, 0},
    {TSQ_REGRESSOR_LAMBDA_GROWTH, 1, 1000, 1.1, 0},
    {TSQ_REGRESSOR_TOLERANCE, 0, 1, 1e-4, 0},
    {TSQ_REGRESSOR_BATCH_ROWS, 16, 1048576, 1024, 1},
    {TSQ_REGRESSOR_MARGIN, 0, 0.5, 0.5, 0},
    {TSQ_REGRESSOR_POLISH, 0, 1000, 4, 1},
    {TSQ_REGRESSOR_RESTARTS, -1, 4, -1, 1},
};

/* Regressor keys are 0x0301 ..: a key of another family (a quantizer's
 * 0x02xx, a context's 0x01xx) is refused by name, never taken as another
 * option. */
#define KEY_FAMILY 0x0300

static const char *family_note(int32_t key)
{
    return (key & ~0xFF) == KEY_FAMILY ? "" : " (not a regressor key: those are 0x0301 ..)";
}

static const param_info *find_param(int32_t key)
{
    size_t i;
    for (i = 0; i < sizeof params / sizeof params[0]; i++)
        if (params[i].key == key)
            return &params[i];
    return NULL;
}

tsq_status tsq_regressor_param_bounds(int32_t key, double *lo, double *hi)
{
    const param_info *p = find_param(key);
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (!p)
        return TSQ_ERR_INVALID;
    *lo = p->lo;
    *hi = p->hi;
    return TSQ_OK;
}


tsq_status tsq_regressor_set_param(tsq_regressor *reg, int32_t key, double value)
{
    const param_info *p;
    fit_options *o;
    if (!reg)
        return TSQ_ERR_NULL;
    p = find_param(key);
    if (!p)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_set_param: unknown key 0x%04x%s",
                         (unsigned)key, family_note(key));
    if (!(value >= p->lo && value <= p->hi) || (p->integral && value != floor(value)))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_param: key 0x%04x: %g is not %s in %g .. %g", (unsigned)key,
                         value, p->integral ? "an integer" : "a value", p->lo, p->hi);
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_set_param: a fit is in progress (options are read by begin)");
    o = &reg->opt;
    switch (key) {
    case TSQ_REGRESSOR_WEIGHT_BITS:
        reg->weight_bits = (int32_t)value;
        tsq__alphabet_range(&o->alphabet, (1 << (reg->weight_bits - 1)) - 1);
        break;
    case TSQ_REGRESSOR_OFFSET: o->offset = (int32_t)value; break;
    case TSQ_REGRESSOR_LOSS: o->loss = (int32_t)value; break;
    case TSQ_REGRESSOR_ROUNDS: o->rounds = (int32_t)value; break;
    case TSQ_REGRESSOR_LINEAR_ROUNDS: o->linear_rounds = (int32_t)value; break;
    case TSQ_REGRESSOR_SWEEPS: o->sweeps = (int32_t)value; break;
    case TSQ_REGRESSOR_LAMBDA0: o->lambda0 = value; break;
    case TSQ_REGRESSOR_LAMBDA_GROWTH: o->growth = value; break;
    case TSQ_REGRESSOR_TOLERANCE: o->tol = value; break;
    case TSQ_REGRESSOR_MARGIN: o->margin = value; break;
    case TSQ_REGRESSOR_POLISH: o->polish = (int32_t)value; break;
    case TSQ_REGRESSOR_RESTARTS: o->restarts = (int32_t)value; break;
    default: o->batch_rows = (int32_t)value; break;
    }
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_get_param(const tsq_regressor *reg, int32_t key, double *value)
{
    const fit_options *o;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!value)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_get_param: value is NULL");
    o = &reg->opt;
    switch (key) {
    case TSQ_REGRESSOR_WEIGHT_BITS: *value = reg->weight_bits; break;
    case TSQ_REGRESSOR_OFFSET: *value = o->offset; break;
    case TSQ_REGRESSOR_LOSS: *value = o->loss; break;
    case TSQ_REGRESSOR_ROUNDS: *value = o->rounds; break;
    case TSQ_REGRESSOR_LINEAR_ROUNDS: *value = o->linear_rounds; break;
    case TSQ_REGRESSOR_SWEEPS: *value = o->sweeps; break;
    case TSQ_REGRESSOR_LAMBDA0: *value = o->lambda0; break;
    case TSQ_REGRESSOR_LAMBDA_GROWTH: *value = o->growth; break;
    case TSQ_REGRESSOR_TOLERANCE: *value = o->tol; break;
    case TSQ_REGRESSOR_BATCH_ROWS: *value = o->batch_rows; break;
    case TSQ_REGRESSOR_MARGIN: *value = o->margin; break;
    case TSQ_REGRESSOR_POLISH: *value = o->polish; break;
    case TSQ_REGRESSOR_RESTARTS: *value = o->restarts; break;
    default:
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_get_param: unknown key 0x%04x%s", (unsigned)key,
                         family_note(key));
    }
    return TSQ_OK;
}

tsq_status tsq_regressor_set_alphabet(tsq_regressor *reg, const int32_t *values, int32_t count)
{
    tsq__alphabet a;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!values)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_set_alphabet: values is NULL");
    if (count < 1)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_set_alphabet: count is %d",
                         (int)count);
    if (!tsq__alphabet_custom(&a, values, count))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_alphabet: need at least 2 distinct values in -128..127");
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_set_alphabet: a fit is in progress");
    reg->opt.alphabet = a;
    reg->weight_bits = 0;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_get_alphabet(const tsq_regressor *reg, int32_t *values,
                                      int32_t capacity, int32_t *count)
{
    if (!reg)
        return TSQ_ERR_NULL;
    if (!count)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_get_alphabet: count is NULL");
    *count = reg->opt.alphabet.count;
    if (!values)
        return TSQ_OK;
    if (capacity < *count)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_get_alphabet: capacity %d < %d values", (int)capacity,
                         (int)*count);
    memcpy(values, reg->opt.alphabet.values, (size_t)*count * sizeof values[0]);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* The output quantizer                                                */
/* ------------------------------------------------------------------ */

tsq_status tsq_regressor_set_levels(tsq_regressor *reg, int32_t bits, float eps, float delta)
{
    tsq__outq q;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!isfinite(eps) || !isfinite(delta))
        return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                         "regressor_set_levels: eps %g and delta %g must be finite", eps, delta);
    if (!tsq__outq_init(&q, bits, eps, delta))
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_set_levels: need bits in 1..8, eps >= 0, delta > 0 "
                         "(got %d, %g, %g)", (int)bits, eps, delta);
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_set_levels: a fit is in progress");
    tsq__free(reg->obj.ctx, reg->q_channel);
    reg->q_channel = NULL;
    reg->q_channels = 0;
    reg->q_tensor = q;
    reg->q_set = 1;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_set_quantizer(tsq_regressor *reg, const tsq_quantizer *quant)
{
    int64_t n, c, count;
    tsq__outq *qs;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!quant)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_set_quantizer: quantizer is NULL");
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_set_quantizer: a fit is in progress");
    n = tsq__quantizer_nchannels(quant);
    count = n > 0 ? n : 1;
    qs = tsq__calloc(reg->obj.ctx, (size_t)count, sizeof *qs);
    if (!qs)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY,
                         "regressor_set_quantizer: out of memory for %lld channels",
                         (long long)count);
    for (c = 0; c < count; c++) {
        int32_t bits;
        float eps, delta;
        tsq_status st = tsq__quantizer_channel(quant, c, &bits, &eps, &delta);
        if (st != TSQ_OK || !tsq__outq_init(&qs[c], bits, eps, delta)) {
            tsq__free(reg->obj.ctx, qs);
            if (st == TSQ_ERR_STATE)
                return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                                 "regressor_set_quantizer: the quantizer is not fitted");
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "regressor_set_quantizer: channel %lld has unusable parameters",
                             (long long)c);
        }
    }
    tsq__free(reg->obj.ctx, reg->q_channel);
    if (n > 0) {
        reg->q_channel = qs;
        reg->q_channels = n;
    } else {
        reg->q_tensor = qs[0];
        reg->q_channel = NULL;
        reg->q_channels = 0;
        tsq__free(reg->obj.ctx, qs);
    }
    reg->q_set = 1;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Handle                                                              */
/* ------------------------------------------------------------------ */


tsq_status tsq_regressor_create(tsq_context *ctx, tsq_regressor **out)
{
    tsq_regressor *reg;
    size_t i;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "regressor_create: out is NULL");
    *out = NULL;
    reg = tsq__calloc(ctx, 1, sizeof *reg);
    if (!reg)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "regressor_create: out of memory");
    tsq__object_init(&reg->obj, ctx);
    for (i = 0; i < sizeof params / sizeof params[0]; i++)
        tsq_regressor_set_param(reg, params[i].key, params[i].dflt);
    tsq__clear(&ctx->obj);
    *out = reg;
    return TSQ_OK;
}

void tsq_regressor_destroy(tsq_regressor *reg)
{
    if (!reg)
        return;
    tsq__reg_fit_free(reg->obj.ctx, reg->fit);
    tsq__free(reg->obj.ctx, reg->q_channel);
    tsq__free(reg->obj.ctx, reg);
}

const char *tsq_regressor_errmsg(const tsq_regressor *reg)
{
    return reg ? reg->obj.msg : "no regressor";
}

