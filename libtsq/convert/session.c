/*
 * The TSQ conversion state attached to a net: its options, the step-2
 * regressor, the life cycle of a learn_codes / fit_transform session, its
 * progress and history, and the helpers both steps share.
 */
#include "convert_internal.h"

#include <math.h>
#include <string.h>

/* The activation bits of new quantizers when the caller sets none. */
#define DEFAULT_ACT_BITS 2

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
    tsq_status st;
    if (!c) {
        c = tsq__calloc(ctx, 1, sizeof *c);
        if (!c)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        st = tsq_quantizer_create(ctx, DEFAULT_ACT_BITS, 0, &c->act);
        if (st != TSQ_OK) {
            tsq__free(ctx, c);
            return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
        }
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
    tsq_quantizer_destroy(c->act);
    tsq__free(net->obj.ctx, c);
    net->attached = NULL;
    net->attach_ops = NULL;
}

static tsq_status copy_settings(tsq_net *dst, const tsq_net *src)
{
    const tsq__conversion *s = tsq__cvt_of(src);
    tsq__conversion *d;
    int32_t key, values[256], count = 0;
    double v, w;
    if (!s)
        return TSQ_OK;
    if (tsq__cvt_attach(dst, "net_clone", &d) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    for (key = TSQ_QUANTIZER_BITS; key <= TSQ_QUANTIZER_SPARSITY; key++)
        if (tsq_quantizer_get_param(s->act, key, &v) == TSQ_OK)
            tsq_quantizer_set_param(d->act, key, v);
    d->per_channel = s->per_channel;
    d->sequential = s->sequential;
    d->positions = s->positions;
    if (!s->reg)
        return TSQ_OK;
    if (tsq__cvt_regressor(dst, d) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    for (key = TSQ_REGRESSOR_WEIGHT_BITS; key <= TSQ_REGRESSOR_MARGIN; key++)
        if (tsq_regressor_get_param(s->reg, key, &v) == TSQ_OK &&
            !(key == TSQ_REGRESSOR_WEIGHT_BITS && v == 0) &&
            tsq_regressor_get_param(d->reg, key, &w) == TSQ_OK && v != w)
            tsq_regressor_set_param(d->reg, key, v);
    if (tsq_regressor_get_param(s->reg, TSQ_REGRESSOR_WEIGHT_BITS, &v) == TSQ_OK && v == 0 &&
        tsq_regressor_get_alphabet(s->reg, values, 256, &count) == TSQ_OK)
        tsq_regressor_set_alphabet(d->reg, values, count);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

/* Each net option either stands for a quantizer option of the quantizers
 * learn_codes makes (qkey: bounds, default and checks are the quantizer's)
 * or is the net's own (lo, hi, integral, default 0). */
typedef struct opt_spec {
    int32_t key, qkey;
    double lo, hi;
} opt_spec;

static const opt_spec specs[] = {
    {TSQ_NET_TSQ_ACT_BITS, TSQ_QUANTIZER_BITS, 0, 0},
    {TSQ_NET_TSQ_PER_CHANNEL, 0, 0, 1},
    {TSQ_NET_TSQ_EPS_MODE, TSQ_QUANTIZER_EPS_MODE, 0, 0},
    {TSQ_NET_TSQ_EPS, TSQ_QUANTIZER_EPS, 0, 0},
    {TSQ_NET_TSQ_SPARSITY, TSQ_QUANTIZER_SPARSITY, 0, 0},
    {TSQ_NET_TSQ_POSITIONS, 0, 0, 1048576},
    {TSQ_NET_TSQ_SEQUENTIAL, 0, 0, 1},
};

static const opt_spec *find_spec(int32_t key)
{
    size_t i;
    for (i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (specs[i].key == key)
            return &specs[i];
    return NULL;
}

static double own_value(const tsq__conversion *c, int32_t key)
{
    if (key == TSQ_NET_TSQ_PER_CHANNEL)
        return c->per_channel;
    if (key == TSQ_NET_TSQ_SEQUENTIAL)
        return c->sequential;
    return (double)c->positions;
}

tsq_status tsq_net_tsq_option_bounds(int32_t key, double *lo, double *hi)
{
    const opt_spec *s = find_spec(key);
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (!s)
        return TSQ_ERR_INVALID;
    if (s->qkey)
        return tsq_quantizer_param_bounds(s->qkey, lo, hi);
    *lo = s->lo;
    *hi = s->hi;
    return TSQ_OK;
}

int tsq__cvt_running(const tsq_net *net)
{
    const tsq__conversion *c = tsq__cvt_of(net);
    return c && c->stage != TSQ_NET_TSQ_IDLE;
}

tsq_status tsq_net_set_tsq_option(tsq_net *net, int32_t key, double value)
{
    static const char *where = "net_set_tsq_option";
    const opt_spec *s;
    tsq__conversion *c = NULL; /* set by tsq__cvt_attach */
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!(s = find_spec(key)))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: unknown key %d", where, (int)key);
    if (!s->qkey && (!(value >= s->lo && value <= s->hi) || value != floor(value)))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                         "%s: value %g of key %d is outside [%g, %g] or not integral", where,
                         value, (int)key, s->lo, s->hi);
    if (tsq__cvt_running(net))
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: a TSQ session is running", where);
    if ((st = tsq__cvt_attach(net, where, &c)) != TSQ_OK)
        return st;
    if (s->qkey) {
        st = tsq_quantizer_set_param(c->act, s->qkey, value);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "%s: key %d: %s", where, (int)key,
                             tsq_quantizer_errmsg(c->act));
    } else if (key == TSQ_NET_TSQ_PER_CHANNEL) {
        c->per_channel = (int32_t)value;
    } else if (key == TSQ_NET_TSQ_SEQUENTIAL) {
        c->sequential = (int32_t)value;
    } else {
        c->positions = (int64_t)value;
    }
    tsq__clear(&net->obj);
    return TSQ_OK;
}

/* Before anything is attached the values are the defaults: the net's own
 * options are 0, the others those of a new quantizer (read from one). */
tsq_status tsq_net_get_tsq_option(const tsq_net *net, int32_t key, double *value)
{
    const tsq__object *obj;
    const opt_spec *s;
    tsq__conversion *c = NULL;
    tsq_quantizer *q = NULL;
    tsq_status st;
    if (!net || !value)
        return TSQ_ERR_NULL;
    obj = &net->obj;
    if (!(s = find_spec(key)))
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_get_tsq_option: unknown key %d", (int)key);
    c = tsq__cvt_of(net);
    if (!s->qkey) {
        *value = c ? own_value(c, key) : 0;
        return TSQ_OK;
    }
    if (c)
        return tsq_quantizer_get_param(c->act, s->qkey, value);
    st = tsq_quantizer_create(net->obj.ctx, DEFAULT_ACT_BITS, 0, &q);
    if (st != TSQ_OK)
        return tsq__fail(obj, st, "net_get_tsq_option: %s", tsq_context_errmsg(net->obj.ctx));
    st = tsq_quantizer_get_param(q, s->qkey, value);
    tsq_quantizer_destroy(q);
    return st;
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
    tsq_net_destroy(c->ref);
    c->ref = NULL;
    if (c->restore_loss && c->reg)
        tsq_regressor_set_param(c->reg, TSQ_REGRESSOR_LOSS, c->restore_loss);
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
