/*
 * The TSQ conversion state attached to a net: its options, the step-2
 * regressor, the life cycle of a learn_codes / fit_transform session, its
 * progress and history, and the helpers both steps share.
 */
#include "convert_internal.h"
#include "core/options.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <string.h>

static const tsq__option_table conversion_table;

/* ------------------------------------------------------------------ */
/* Attaching the state to a net                                         */
/* ------------------------------------------------------------------ */

static void detach(tsq_net *net);
static tsq_status copy_settings(tsq_net *dst, const tsq_net *src);

static const tsq__net_attach_ops attach_ops = {detach, copy_settings};

tsq__conversion *tsq__cvt_of(const tsq_net *net)
{
    return net->attach_ops == &attach_ops ? (tsq__conversion *)net->attached : NULL;
}

tsq_status tsq__cvt_attach(tsq_net *net, const char *where, tsq__conversion **out)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *c = tsq__cvt_of(net);
    if (!c) {
        c = tsq__calloc(ctx, 1, sizeof *c);
        if (!c)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        (void)tsq__option_defaults(&conversion_table, c); /* fields only: cannot fail */
        net->attached = c;
        net->attach_ops = &attach_ops;
    }
    *out = c;
    return TSQ_OK;
}

tsq_status tsq__cvt_regressor(tsq_net *net, tsq__conversion *c)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_status st;
    if (c->reg)
        return TSQ_OK;
    st = tsq_regressor_create(ctx, &c->reg);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "net: %s", tsq_context_errmsg(ctx));
    return TSQ_OK;
}

static void detach(tsq_net *net)
{
    tsq__conversion *c = tsq__cvt_of(net);
    if (!c)
        return;
    tsq__cvt_end_session(net);
    tsq__cvt_free_units(net, c);
    tsq_regressor_destroy(c->reg);
    tsq__free(net->obj.ctx, c);
    net->attached = NULL;
    net->attach_ops = NULL;
}

static tsq_status copy_settings(tsq_net *dst, const tsq_net *src)
{
    const tsq__conversion *s = tsq__cvt_of(src);
    tsq__conversion *d = NULL; /* set by tsq__cvt_attach */
    if (!s)
        return TSQ_OK;
    if (tsq__cvt_attach(dst, "net_clone", &d) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    d->act_bits = s->act_bits;
    d->eps_mode = s->eps_mode;
    d->eps = s->eps;
    d->sparsity = s->sparsity;
    d->per_channel = s->per_channel;
    d->sequential = s->sequential;
    d->positions = s->positions;
    if (!s->reg)
        return TSQ_OK;
    if (tsq__cvt_regressor(dst, d) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    tsq__regressor_copy_options(d->reg, s->reg);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

#define CVT(field) offsetof(tsq__conversion, field)
#define LIKE(qkey) &tsq__quantizer_table, qkey

/* ACT_BITS, EPS_MODE, EPS and SPARSITY are options of the quantizers that
 * learn_codes makes: bounds, defaults and integrality are the quantizer's. */
static const tsq__option conversion_options[] = {
    {TSQ_NET_TSQ_ACT_BITS, "act_bits", 0, 0, 0, TSQ__OPT_I32, 0, CVT(act_bits), 0,
     LIKE(TSQ_QUANTIZER_BITS)},
    {TSQ_NET_TSQ_PER_CHANNEL, "per_channel", 0, 1, 0, TSQ__OPT_I32, 0, CVT(per_channel), 0, NULL,
     0},
    {TSQ_NET_TSQ_EPS_MODE, "eps_mode", 0, 0, 0, TSQ__OPT_I32, 0, CVT(eps_mode), 0,
     LIKE(TSQ_QUANTIZER_EPS_MODE)},
    {TSQ_NET_TSQ_EPS, "eps", 0, 0, 0, TSQ__OPT_F64, 0, CVT(eps), 0, LIKE(TSQ_QUANTIZER_EPS)},
    {TSQ_NET_TSQ_SPARSITY, "sparsity", 0, 0, 0, TSQ__OPT_F64, 0, CVT(sparsity), 0,
     LIKE(TSQ_QUANTIZER_SPARSITY)},
    {TSQ_NET_TSQ_POSITIONS, "positions", 0, 1048576, 0, TSQ__OPT_I64, 0, CVT(positions), 0, NULL,
     0},
    {TSQ_NET_TSQ_SEQUENTIAL, "sequential", 0, 1, 0, TSQ__OPT_I32, 0, CVT(sequential), 0, NULL, 0},
    {TSQ_NET_TSQ_KEEP_ROWS_MIB, "keep_rows_mib", 0, 1048576, 512, TSQ__OPT_I64, 0,
     CVT(keep_rows_mib), 0, NULL, 0},
    {TSQ_NET_TSQ_SHADOW_CLIP, "shadow_clip", 0, 0.49, 0.45, TSQ__OPT_F64, 0, CVT(shadow_clip), 0,
     NULL, 0},
};

#undef CVT
#undef LIKE

static const tsq__option_table conversion_table = {
    "net conversion", 0x0600,
    (int32_t)(sizeof conversion_options / sizeof conversion_options[0]), conversion_options,
    NULL, NULL, NULL, NULL, " .. "};

tsq_status tsq_net_conversion_option_bounds(int32_t key, double *lo, double *hi)
{
    return tsq__option_bounds(&conversion_table, key, lo, hi);
}

int tsq__cvt_running(const tsq_net *net)
{
    const tsq__conversion *c = tsq__cvt_of(net);
    return c && c->stage != TSQ_NET_TSQ_IDLE;
}

tsq_status tsq_net_set_conversion_option(tsq_net *net, int32_t key, double value)
{
    static const char *where = "net_set_conversion_option";
    const tsq__option *o = NULL;
    tsq__conversion *c = NULL; /* set by tsq__cvt_attach */
    if (!net)
        return TSQ_ERR_NULL;
    /* checked against no state: every option applies to every net */
    TSQ_FORWARD_IF_ERROR(
        tsq__option_check(&conversion_table, &net->obj, where, NULL, key, value, &o));
    TSQ_RETURN_ERROR_IF(tsq__cvt_running(net), &net->obj, TSQ_ERR_STATE,
                        "%s: a TSQ session is running", where);
    TSQ_FORWARD_IF_ERROR(tsq__cvt_attach(net, where, &c));
    (void)tsq__option_store(&conversion_table, o, c, value, where); /* a field */
    tsq__clear(&net->obj);
    return TSQ_OK;
}

/* Before the state is attached the values are the defaults. */
tsq_status tsq_net_get_conversion_option(const tsq_net *net, int32_t key, double *value)
{
    if (!net)
        return TSQ_ERR_NULL;
    return tsq__option_get(&conversion_table, &net->obj, "net_get_conversion_option",
                           tsq__cvt_of(net), key, value);
}

tsq_status tsq_net_tsq_regressor(tsq_net *net, tsq_regressor **reg)
{
    tsq__conversion *c = NULL; /* set by tsq__cvt_attach */
    tsq_status st;
    if (!net || !reg)
        return TSQ_ERR_NULL;
    st = tsq__cvt_attach(net, "net_tsq_regressor", &c);
    if (st == TSQ_OK)
        st = tsq__cvt_regressor(net, c);
    if (st == TSQ_OK)
        *reg = c->reg;
    return st;
}

/* ------------------------------------------------------------------ */
/* Sessions                                                             */
/* ------------------------------------------------------------------ */

tsq_status tsq__cvt_new_session(tsq_net *net, int stage)
{
    tsq__conversion *c = NULL; /* set by tsq__cvt_attach */
    tsq_status st = tsq__cvt_attach(net, "net", &c);
    if (st != TSQ_OK)
        return st;
    tsq__cvt_free_units(net, c);
    c->stage = stage;
    c->generation = net->generation;
    c->seed = net->obj.ctx->seed;
    c->batch_in_pass = 0;
    c->qcur = 0;
    return TSQ_OK;
}

/* Ends a session; finished units' histories stay readable. A unit cut
 * short gets its input quantizer back to values output, since its layer
 * stays in full precision (unless the caller changed the layers, when the
 * ordinals may no longer name the same layers). */
void tsq__cvt_end_session(tsq_net *net)
{
    tsq__conversion *c = tsq__cvt_of(net);
    if (!c)
        return;
    if (c->stage == TSQ_NET_TSQ_FITTING && c->cur < c->nunits && !c->units[c->cur].finished &&
        c->units[c->cur].in_quant_ord >= 0 && c->generation == net->generation) {
        int32_t q = tsq__cvt_find_ordinal(net, tsq__cvt_is_quant, c->units[c->cur].in_quant_ord);
        if (q >= 0)
            tsq_layer_set_option(net->layers[q], TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 0);
    }
    tsq__cvt_free_learning(net, c);
    tsq__cvt_free_rows(net, c);
    tsq_net_destroy(c->ref);
    c->ref = NULL;
    if (c->restore_loss && c->reg)
        tsq_regressor_set_option(c->reg, TSQ_REGRESSOR_LOSS, c->restore_loss);
    c->restore_loss = 0;
    c->stage = TSQ_NET_TSQ_IDLE;
}

tsq_status tsq__cvt_enter(tsq_net *net, const char *where, int stage, const tsq_tensor *x,
                          int32_t last, int32_t *done)
{
    tsq__conversion *c = tsq__cvt_of(net);
    if (!x || !done)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: %s is NULL", where, x ? "done" : "x");
    if (last != 0 && last != 1)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: last is %d, must be 0 or 1", where,
                         (int)last);
    if (!tsq__cvt_running(net))
        return TSQ_OK;
    if (c->stage != stage)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: a %s session is running", where,
                         c->stage == TSQ_NET_TSQ_LEARNING ? "learn_codes" : "fit_transform");
    if (c->generation != net->generation) {
        tsq__cvt_end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: the net's layers changed during the session; it is cancelled", where);
    }
    return TSQ_OK;
}

tsq_status tsq_net_tsq_cancel(tsq_net *net)
{
    if (!net)
        return TSQ_ERR_NULL;
    tsq__cvt_end_session(net);
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_tsq_progress(const tsq_net *net, int32_t *stage, int32_t *unit,
                                int32_t *units, int32_t *passes)
{
    const tsq__conversion *c;
    if (!net)
        return TSQ_ERR_NULL;
    c = tsq__cvt_of(net);
    if (stage)
        *stage = c ? c->stage : TSQ_NET_TSQ_IDLE;
    if (unit)
        *unit = c ? c->cur : 0;
    if (units)
        *units = c ? c->nunits : 0;
    if (passes)
        *passes = c && c->cur < c->nunits ? c->units[c->cur].passes : 0;
    return TSQ_OK;
}

tsq_status tsq_net_tsq_history(const tsq_net *net, int32_t unit, int32_t series, double *values,
                               int32_t capacity, int32_t *count, int32_t *layer_index)
{
    const tsq__object *obj;
    const tsq__conversion *c;
    const tsq__cvt_unit *u;
    if (!net || !count)
        return TSQ_ERR_NULL;
    obj = &net->obj;
    c = tsq__cvt_of(net);
    if (!c || unit < 0 || unit >= c->nunits)
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_tsq_history: no converted layer %d", (int)unit);
    if (series < TSQ_HISTORY_OBJECTIVE || series > TSQ_HISTORY_LAMBDA)
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_tsq_history: unknown series %d", (int)series);
    u = &c->units[unit];
    if (!u->finished)
        return tsq__fail(obj, TSQ_ERR_STATE, "net_tsq_history: layer %d is not converted yet",
                         (int)unit);
    *count = u->nhistory;
    if (layer_index)
        *layer_index = u->ref_layer;
    if (!values)
        return TSQ_OK;
    if (capacity < u->nhistory)
        return tsq__fail(obj, TSQ_ERR_TOO_SMALL, "net_tsq_history: capacity %d < %d",
                         (int)capacity, (int)u->nhistory);
    memcpy(values, u->history[series - TSQ_HISTORY_OBJECTIVE],
           (size_t)u->nhistory * sizeof(double));
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Helpers shared by the steps                                          */
/* ------------------------------------------------------------------ */

int tsq__cvt_is_weight(const tsq_layer *l)
{
    return tsq__layer_is(l, TSQ_LAYER_DENSE) || tsq__layer_is(l, TSQ_LAYER_CONV2D) ||
           tsq__layer_is_lowbit(l);
}

int tsq__cvt_is_quant(const tsq_layer *l)
{
    return tsq__layer_is_act_quant(l);
}

int32_t tsq__cvt_find_ordinal(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t ord)
{
    int32_t i, k = 0;
    for (i = 0; i < net->nlayers; i++)
        if (pred(net->layers[i]) && k++ == ord)
            return i;
    return -1;
}

int32_t tsq__cvt_ordinal_of(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t index)
{
    int32_t i, k = 0;
    for (i = 0; i < index; i++)
        k += pred(net->layers[i]) != 0;
    return k;
}

tsq_status tsq__cvt_wrap_batch(tsq_net *net, const char *where, float *data, int64_t n,
                               int32_t ndim, const int64_t *shape, tsq_tensor **t)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t full[4], numel = n;
    int32_t i;
    tsq_status st;
    full[0] = n;
    for (i = 0; i < ndim; i++) {
        full[i + 1] = shape[i];
        numel *= shape[i];
    }
    st = tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, ndim + 1, full, data, (uint64_t)numel * 4, t);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    return TSQ_OK;
}

tsq_status tsq__cvt_run_prefix(tsq_net *target, tsq_net *net, const char *where,
                               const tsq_tensor *x, int64_t n, int32_t upto)
{
    tsq_status st = tsq__net_reserve(target, n);
    if (st == TSQ_OK) {
        memcpy(target->act[0], x->data, (size_t)(n * target->in_numel) * sizeof(float));
        st = tsq__net_run(target, upto, n, 0);
    }
    if (st != TSQ_OK && target != net)
        return tsq__fail(&net->obj, st, "%s: step-1 net: %s", where, target->obj.msg);
    return st;
}

int32_t tsq__cvt_feeding_quantizer(const tsq_net *net, int32_t i)
{
    for (i = i - 1; i >= 0; i--) {
        const tsq_layer *l = net->layers[i];
        if (tsq__layer_is_act_quant(l))
            return i;
        if (!tsq__layer_is(l, TSQ_LAYER_MAXPOOL2D) && !tsq__layer_is(l, TSQ_LAYER_FLATTEN))
            return -1;
    }
    return -1;
}
