/* The layer handle: allocation, parameters and states, options, clone,
 * destruction, and the helpers every layer kind shares. */
#include "nn_internal.h"
#include "core/options.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const tsq__option_table layer_table;

tsq_status tsq__layer_alloc(tsq_context *ctx, const tsq__layer_ops *ops, const char *where,
                            tsq_layer **out)
{
    tsq_layer *l = tsq__alloc(ctx, ops->size);
    if (!l)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the layer", where);
    memset(l, 0, ops->size);
    tsq__object_init(&l->obj, ctx);
    l->ops = ops;
    /* The options' defaults, before the kind fills its fields: the store
     * hooks of the kinds only set fields of the zeroed struct. */
    (void)tsq__option_defaults(&layer_table, l);
    *out = l;
    return TSQ_OK;
}

tsq_status tsq__layer_create_begin(tsq_context *ctx, const char *where, tsq_layer **out)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *out = NULL;
    return TSQ_OK;
}

tsq_status tsq__layer_create_plain(tsq_context *ctx, const tsq__layer_ops *ops,
                                   const char *where, tsq_layer **out)
{
    TSQ_FORWARD_IF_ERROR(tsq__layer_create_begin(ctx, where, out));
    TSQ_FORWARD_IF_ERROR(tsq__layer_alloc(ctx, ops, where, out));
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

static tsq_status new_tensor(tsq_layer *l, const char *where, int32_t dtype, int32_t ndim,
                             const int64_t *shape, tsq_tensor **t)
{
    tsq_context *ctx = l->obj.ctx;
    tsq_status st = tsq_tensor_create(ctx, dtype, ndim, shape, t);
    if (st != TSQ_OK) {
        /* The tensor's message is on the context too: copy it first. */
        char why[TSQ_MSG_CAP];
        memcpy(why, ctx->obj.msg, sizeof why);
        return tsq__fail(&ctx->obj, st, "%s: %s", where, why);
    }
    return TSQ_OK;
}

tsq_status tsq__layer_add_param(tsq_layer *l, const char *where, const char *name, int decay,
                                int32_t ndim, const int64_t *shape, float **data)
{
    tsq__param *p = &l->params[l->nparams];
    tsq_status st = new_tensor(l, where, TSQ_DTYPE_F32, ndim, shape, &p->value);
    if (st == TSQ_OK)
        st = new_tensor(l, where, TSQ_DTYPE_F32, ndim, shape, &p->grad);
    if (st != TSQ_OK) {
        tsq_tensor_destroy(p->value);
        p->value = NULL;
        return st;
    }
    p->name = name;
    p->decay = decay;
    l->nparams++;
    if (data)
        *data = (float *)p->value->data;
    return TSQ_OK;
}

tsq_status tsq__layer_add_state(tsq_layer *l, const char *where, const char *name,
                                int32_t dtype, int32_t ndim, const int64_t *shape,
                                void **data)
{
    tsq__param *p = &l->states[l->nstates];
    tsq_status st = new_tensor(l, where, dtype, ndim, shape, &p->value);
    if (st != TSQ_OK)
        return st;
    p->name = name;
    l->nstates++;
    if (data)
        *data = p->value->data;
    return TSQ_OK;
}

void tsq__layer_free(tsq_layer *l)
{
    int32_t i;
    tsq_context *ctx;
    if (!l)
        return;
    ctx = l->obj.ctx;
    if (l->ops->destroy_extra)
        l->ops->destroy_extra(l);
    for (i = 0; i < l->nparams; i++) {
        tsq_tensor_destroy(l->params[i].value);
        tsq_tensor_destroy(l->params[i].grad);
    }
    for (i = 0; i < l->nstates; i++)
        tsq_tensor_destroy(l->states[i].value);
    tsq__free(ctx, l->ws);
    tsq__free(ctx, l);
}

tsq_status tsq__layer_clone(const tsq_layer *src, tsq_layer **out)
{
    tsq_context *ctx = src->obj.ctx;
    tsq_layer *l;
    tsq_status st = TSQ_OK;
    int32_t i;
    *out = NULL;
    l = tsq__alloc(ctx, src->ops->size);
    if (!l)
        return TSQ_ERR_NO_MEMORY;
    memcpy(l, src, src->ops->size);
    tsq__object_init(&l->obj, ctx);
    l->owner = NULL;
    l->ws = NULL;
    l->ws_floats = 0;
    /* Detach every pointer first, so that a failure part-way frees only
     * what this copy owns. */
    for (i = 0; i < TSQ__LAYER_MAX_PARAMS; i++)
        l->params[i].value = l->params[i].grad = NULL;
    for (i = 0; i < TSQ__LAYER_MAX_STATES; i++)
        l->states[i].value = NULL;
    /* The kind's copy runs first: it replaces every pointer it owns (the
     * byte copy still points into src) before anything can fail. */
    if (src->ops->clone_extra)
        st = src->ops->clone_extra(src, l);
    for (i = 0; i < src->nparams && st == TSQ_OK; i++) {
        st = tsq__tensor_dup(ctx, src->params[i].value, &l->params[i].value);
        if (st == TSQ_OK)
            st = tsq__tensor_dup(ctx, src->params[i].grad, &l->params[i].grad);
    }
    for (i = 0; i < src->nstates && st == TSQ_OK; i++)
        st = tsq__tensor_dup(ctx, src->states[i].value, &l->states[i].value);
    if (st != TSQ_OK) {
        tsq__layer_free(l);
        return st;
    }
    *out = l;
    return TSQ_OK;
}

tsq_status tsq__layer_workspace(tsq_layer *l, const char *where, size_t n)
{
    float *p;
    if (n <= l->ws_floats)
        return TSQ_OK;
    p = tsq__alloc(l->obj.ctx, n * sizeof(float));
    if (!p)
        return tsq__fail(&l->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for %zu floats of workspace",
                         where, n);
    tsq__free(l->obj.ctx, l->ws);
    l->ws = p;
    l->ws_floats = n;
    return TSQ_OK;
}

float *tsq__param_data(const tsq_layer *l, int32_t i)
{
    return (float *)l->params[i].value->data;
}

float *tsq__param_grad(const tsq_layer *l, int32_t i)
{
    return (float *)l->params[i].grad->data;
}

void *tsq__state_data(const tsq_layer *l, int32_t i)
{
    return l->states[i].value->data;
}

int64_t tsq__layer_threads(const tsq_layer *l)
{
    return l->obj.ctx->threads;
}

int tsq__layer_is(const tsq_layer *l, int32_t kind)
{
    return l && l->ops->kind == kind;
}

const char *tsq__shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t used = 0;
    int32_t i;
    buf[0] = '\0';
    for (i = 0; i < ndim && used < cap; i++) {
        int n = snprintf(buf + used, cap - used, "%s%lld", i ? "," : "(", (long long)shape[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (used < cap)
        snprintf(buf + used, cap - used, ")");
    return buf;
}

void tsq__init_he_normal(tsq_context *ctx, float *w, int64_t n, int64_t fan_in)
{
    tsq__rng rng;
    double sd = sqrt(2.0 / (double)fan_in);
    int64_t i;
    tsq__rng_from_context(ctx, &rng);
    for (i = 0; i < n; i++)
        w[i] = (float)(sd * tsq__rng_normal(&rng));
}

/* ------------------------------------------------------------------ */
/* Public calls                                                         */
/* ------------------------------------------------------------------ */

void tsq_layer_destroy(tsq_layer *layer)
{
    if (!layer || layer->owner)
        return;
    tsq__layer_free(layer);
}

const char *tsq_layer_errmsg(const tsq_layer *layer)
{
    return layer ? layer->obj.msg : "no layer";
}

tsq_status tsq_layer_kind(const tsq_layer *layer, int32_t *kind)
{
    if (!layer || !kind)
        return TSQ_ERR_NULL;
    *kind = layer->ops->kind;
    return TSQ_OK;
}

const char *tsq_layer_kind_name(int32_t kind)
{
    static const char *const names[] = {
        "unknown", "dense", "conv2d", "batchnorm", "relu", "act_quant", "maxpool2d",
        "global_avgpool", "flatten", "lowbit_dense", "lowbit_conv2d",
    };
    if (kind < 1 || kind >= (int32_t)(sizeof names / sizeof names[0]))
        return names[0];
    return names[kind];
}

tsq_status tsq_layer_info(const tsq_layer *layer, int32_t key, int64_t *value)
{
    const tsq__object *obj;
    if (!layer || !value)
        return TSQ_ERR_NULL;
    obj = &layer->obj;
    if (!layer->ops->info)
        return tsq__fail(obj, TSQ_ERR_INVALID, "layer_info: a %s layer has no key %d",
                         layer->ops->name, (int)key);
    return layer->ops->info(layer, key, value);
}

tsq_status tsq_layer_sample_shapes(const tsq_layer *layer, int64_t *in_shape,
                                   int32_t *in_ndim, int64_t *out_shape, int32_t *out_ndim,
                                   int32_t capacity)
{
    const tsq__object *obj;
    if (!layer || !in_shape || !in_ndim || !out_shape || !out_ndim)
        return TSQ_ERR_NULL;
    obj = &layer->obj;
    if (!layer->is_setup)
        return tsq__fail(obj, TSQ_ERR_STATE, "layer_sample_shapes: the %s layer is not in a net yet",
                         layer->ops->name);
    if (capacity < layer->in_ndim || capacity < layer->out_ndim)
        return tsq__fail(obj, TSQ_ERR_TOO_SMALL, "layer_sample_shapes: capacity %d is too small",
                         (int)capacity);
    memcpy(in_shape, layer->in_shape, (size_t)layer->in_ndim * sizeof(int64_t));
    memcpy(out_shape, layer->out_shape, (size_t)layer->out_ndim * sizeof(int64_t));
    *in_ndim = layer->in_ndim;
    *out_ndim = layer->out_ndim;
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

/* Scope bits: the kinds an option applies to. */
#define KIND(k) (1u << (k))
#define BN KIND(TSQ_LAYER_BATCHNORM)
#define AQ KIND(TSQ_LAYER_ACT_QUANT)
#define WEIGHTS (KIND(TSQ_LAYER_DENSE) | KIND(TSQ_LAYER_CONV2D))
#define LOWBIT (KIND(TSQ_LAYER_LOWBIT_DENSE) | KIND(TSQ_LAYER_LOWBIT_CONV2D))
/* the layers network-level TSQ can select: quantizer positions and the
 * layers it converts */
#define SELECTABLE (KIND(TSQ_LAYER_RELU) | AQ | WEIGHTS)

/* Options of every kind are fields of the handle; the others go through
 * the kind's set_option / get_option, which also refuse combinations (a
 * quantizer cannot learn delta and output codes). */
static const tsq__option layer_options[] = {
    {TSQ_LAYER_OPT_TRAINABLE, "trainable", 0, 1, 1, TSQ__OPT_INT, 0,
     offsetof(tsq_layer, trainable), 0, NULL, 0},
    {TSQ_LAYER_OPT_BN_MOMENTUM, "bn_momentum", DBL_MIN, 1, 0.1, TSQ__OPT_HOOK, 0, 0, BN, NULL, 0},
    {TSQ_LAYER_OPT_BN_EPS, "bn_eps", 1e-12, 1, 1e-5, TSQ__OPT_HOOK, 0, 0, BN, NULL, 0},
    {TSQ_LAYER_OPT_BN_FROZEN, "bn_frozen", 0, 1, 0, TSQ__OPT_HOOK, TSQ__OPT_INTEGER, 0, BN, NULL,
     0},
    {TSQ_LAYER_OPT_AQ_OUTPUT_CODES, "aq_output_codes", 0, 1, 0, TSQ__OPT_HOOK, TSQ__OPT_INTEGER,
     0, AQ, NULL, 0},
    {TSQ_LAYER_OPT_TSQ_SELECT, "tsq_select", -1, 1, -1, TSQ__OPT_INT, 0,
     offsetof(tsq_layer, tsq_select), SELECTABLE, NULL, 0},
    {TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, "lowbit_train_alpha", 0, 1, 0, TSQ__OPT_HOOK,
     TSQ__OPT_INTEGER, 0, LOWBIT, NULL, 0},
    {TSQ_LAYER_OPT_QAT_WEIGHT_BITS, "qat_weight_bits", 0, 8, 0, TSQ__OPT_HOOK, TSQ__OPT_INTEGER,
     0, WEIGHTS, NULL, 0},
    {TSQ_LAYER_OPT_QAT_SCALE, "qat_scale", 0, 1, 0, TSQ__OPT_HOOK, TSQ__OPT_INTEGER, 0, WEIGHTS,
     NULL, 0},
    {TSQ_LAYER_OPT_AQ_LEARN_DELTA, "aq_learn_delta", 0, 1, 0, TSQ__OPT_HOOK, TSQ__OPT_INTEGER, 0,
     AQ, NULL, 0},
};

static tsq_status store_option(void *handle, const tsq__option *o, double value,
                               const char *where)
{
    tsq_layer *l = handle;
    (void)where;
    return l->ops->set_option(l, o->key, value);
}

static void load_option(const void *handle, const tsq__option *o, double *value)
{
    const tsq_layer *l = handle;
    (void)l->ops->get_option(l, o->key, value); /* the scope matched: cannot fail */
}

static uint32_t layer_scope(const void *handle)
{
    return KIND(((const tsq_layer *)handle)->ops->kind);
}

static void describe(const void *handle, char *buf, size_t cap)
{
    const char *name = ((const tsq_layer *)handle)->ops->name;
    snprintf(buf, cap, "%s %s layer", strchr("aeiou", name[0]) ? "an" : "a", name);
}

static const tsq__option_table layer_table = {
    "layer option", 0x0400, (int32_t)(sizeof layer_options / sizeof layer_options[0]),
    layer_options, store_option, load_option, layer_scope, describe, " .. "};

#undef KIND
#undef BN
#undef AQ
#undef WEIGHTS
#undef LOWBIT
#undef SELECTABLE

tsq_status tsq_layer_option_bounds(int32_t key, double *lo, double *hi)
{
    return tsq__option_bounds(&layer_table, key, lo, hi);
}

tsq_status tsq_layer_set_option(tsq_layer *layer, int32_t key, double value)
{
    if (!layer)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(
        tsq__option_set(&layer_table, &layer->obj, "layer_set_option", layer, key, value));
    tsq__clear(&layer->obj);
    return TSQ_OK;
}

tsq_status tsq_layer_get_option(const tsq_layer *layer, int32_t key, double *value)
{
    if (!layer)
        return TSQ_ERR_NULL;
    return tsq__option_get(&layer_table, &layer->obj, "layer_get_option", layer, key, value);
}

tsq_status tsq_layer_param_count(const tsq_layer *layer, int32_t *count)
{
    if (!layer || !count)
        return TSQ_ERR_NULL;
    *count = layer->nparams;
    return TSQ_OK;
}

tsq_status tsq_layer_param(tsq_layer *layer, int32_t index, tsq_tensor **value,
                           tsq_tensor **grad, const char **name)
{
    if (!layer)
        return TSQ_ERR_NULL;
    if (index < 0 || index >= layer->nparams)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "layer_param: index %d outside 0..%d of a %s layer", (int)index,
                         (int)layer->nparams - 1, layer->ops->name);
    if (value)
        *value = layer->params[index].value;
    if (grad)
        *grad = layer->params[index].grad;
    if (name)
        *name = layer->params[index].name;
    return TSQ_OK;
}

tsq_status tsq_layer_state_count(const tsq_layer *layer, int32_t *count)
{
    if (!layer || !count)
        return TSQ_ERR_NULL;
    *count = layer->nstates;
    return TSQ_OK;
}

tsq_status tsq_layer_state(tsq_layer *layer, int32_t index, tsq_tensor **value,
                           const char **name)
{
    if (!layer)
        return TSQ_ERR_NULL;
    if (index < 0 || index >= layer->nstates)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "layer_state: index %d outside 0..%d of a %s layer", (int)index,
                         (int)layer->nstates - 1, layer->ops->name);
    if (value)
        *value = layer->states[index].value;
    if (name)
        *name = layer->states[index].name;
    return TSQ_OK;
}
