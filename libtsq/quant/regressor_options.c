/*
 * The step-2 regressor's handle and its settings: create/destroy, the
 * option table (keys of the 0x0300 family, through core/options.h), the
 * weight alphabet and the output quantizer. Options are copied into a fit
 * when it begins.
 */
#include "regressor_fit.h"
#include "core/options.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

/* WEIGHT_BITS goes through the store hook: it also sets the alphabet. */
static tsq_status store_weight_bits(void *handle, const tsq__option *o, double value,
                                    const char *where)
{
    tsq_regressor *reg = handle;
    (void)o;
    (void)where;
    reg->weight_bits = (int32_t)value;
    tsq__alphabet_range(&reg->opt.alphabet, (1 << (reg->weight_bits - 1)) - 1);
    return TSQ_OK;
}

static void load_weight_bits(const void *handle, const tsq__option *o, double *value)
{
    (void)o;
    *value = ((const tsq_regressor *)handle)->weight_bits;
}

#define OPT(field) offsetof(tsq_regressor, opt.field)

static const tsq__option regressor_options[] = {
    {TSQ_REGRESSOR_WEIGHT_BITS, "weight_bits", 2, 8, 2, TSQ__OPT_HOOK, TSQ__OPT_INTEGER, 0, 0,
     NULL, 0},
    {TSQ_REGRESSOR_OFFSET, "offset", 0, 1, 1, TSQ__OPT_I32, 0, OPT(offset), 0, NULL, 0},
    {TSQ_REGRESSOR_LOSS, "loss", TSQ_LOSS_QUANTIZED, TSQ_LOSS_LINEAR, TSQ_LOSS_QUANTIZED,
     TSQ__OPT_I32, 0, OPT(loss), 0, NULL, 0},
    {TSQ_REGRESSOR_ROUNDS, "rounds", 0, 100000, 10, TSQ__OPT_I32, 0, OPT(rounds), 0, NULL, 0},
    {TSQ_REGRESSOR_LINEAR_ROUNDS, "linear_rounds", 0, 100000, 3, TSQ__OPT_I32, 0,
     OPT(linear_rounds), 0, NULL, 0},
    {TSQ_REGRESSOR_SWEEPS, "sweeps", 1, 10000, 8, TSQ__OPT_I32, 0, OPT(sweeps), 0, NULL, 0},
    {TSQ_REGRESSOR_LAMBDA0, "lambda0", 1e-12, 1e12, 0.1, TSQ__OPT_F64, 0, OPT(lambda0), 0, NULL,
     0},
    {TSQ_REGRESSOR_LAMBDA_GROWTH, "lambda_growth", 1, 1000, 1.1, TSQ__OPT_F64, 0, OPT(growth), 0,
     NULL, 0},
    {TSQ_REGRESSOR_TOLERANCE, "tolerance", 0, 1, 1e-4, TSQ__OPT_F64, 0, OPT(tol), 0, NULL, 0},
    {TSQ_REGRESSOR_BATCH_ROWS, "batch_rows", 16, 1048576, 1024, TSQ__OPT_I32, 0, OPT(batch_rows),
     0, NULL, 0},
    {TSQ_REGRESSOR_MARGIN, "margin", 0, 0.5, 0.5, TSQ__OPT_F64, 0, OPT(margin), 0, NULL, 0},
    {TSQ_REGRESSOR_POLISH, "polish", 0, 1000, 4, TSQ__OPT_I32, 0, OPT(polish), 0, NULL, 0},
    {TSQ_REGRESSOR_RESTARTS, "restarts", -1, 4, -1, TSQ__OPT_I32, 0, OPT(restarts), 0, NULL, 0},
};

#undef OPT

static const tsq__option_table regressor_table = {
    "regressor", 0x0300, (int32_t)(sizeof regressor_options / sizeof regressor_options[0]),
    regressor_options, store_weight_bits, load_weight_bits, NULL, NULL, " .. "};

tsq_status tsq_regressor_option_bounds(int32_t key, double *lo, double *hi)
{
    return tsq__option_bounds(&regressor_table, key, lo, hi);
}

tsq_status tsq_regressor_set_option(tsq_regressor *reg, int32_t key, double value)
{
    static const char *where = "regressor_set_option";
    const tsq__option *o = NULL;
    if (!reg)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(
        tsq__option_check(&regressor_table, &reg->obj, where, reg, key, value, &o));
    TSQ_RETURN_ERROR_IF(fit_running(reg), &reg->obj, TSQ_ERR_STATE,
                        "%s: a fit is in progress (options are read by begin)", where);
    (void)tsq__option_store(&regressor_table, o, reg, value, where); /* cannot fail */
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_get_option(const tsq_regressor *reg, int32_t key, double *value)
{
    if (!reg)
        return TSQ_ERR_NULL;
    return tsq__option_get(&regressor_table, &reg->obj, "regressor_get_option", reg, key, value);
}

void tsq__regressor_copy_options(tsq_regressor *dst, const tsq_regressor *src)
{
    dst->opt = src->opt;
    dst->weight_bits = src->weight_bits;
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
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "regressor_create: out is NULL");
    *out = NULL;
    reg = tsq__calloc(ctx, 1, sizeof *reg);
    if (!reg)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "regressor_create: out of memory");
    tsq__object_init(&reg->obj, ctx);
    (void)tsq__option_defaults(&regressor_table, reg); /* fields and bits: cannot fail */
    reg->shares = 1; /* every channel solved here */
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

