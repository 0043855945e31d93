/* The layer handle: allocation, parameters and states, options, clone,
 * destruction, and the helpers every layer kind shares. */
#include "nn_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

tsq_status tsq__layer_alloc(tsq_context *ctx, const tsq__layer_ops *ops, const char *where,
                            tsq_layer **out)
{
    tsq_layer *l = tsq__alloc(ctx, ops->size);
    if (!l)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the layer", where);
    memset(l, 0, ops->size);
    tsq__object_init(&l->obj, ctx);
    l->ops = ops;
    l->trainable = 1;
    l->tsq_select = -1;
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

static tsq_status dup_tensor(tsq_context *ctx, const tsq_tensor *src, tsq_tensor **out)
{
    tsq_status st;
    *out = NULL;
    if (!src)
        return TSQ_OK;
    st = tsq_tensor_create(ctx, src->dtype, src->ndim, src->shape, out);
    if (st != TSQ_OK)
        return st;
    memcpy((*out)->data, src->data, (size_t)src->numel * tsq__dtype_size(src->dtype));
    return TSQ_OK;
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
        st = dup_tensor(ctx, src->params[i].value, &l->params[i].value);
        if (st == TSQ_OK)
            st = dup_tensor(ctx, src->params[i].grad, &l->params[i].grad);
    }
    for (i = 0; i < src->nstates && st == TSQ_OK; i++)
        st = dup_tensor(ctx, src->states[i].value, &l->states[i].value);
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

/* Bounds of every option, whatever the kind; the kinds check applicability. */
static int option_range(int32_t key, double *lo, double *hi)
{
    switch (key) {
    case TSQ_LAYER_OPT_TRAINABLE:
    case TSQ_LAYER_OPT_BN_FROZEN:
    case TSQ_LAYER_OPT_AQ_OUTPUT_CODES:
    case TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA:
    case TSQ_LAYER_OPT_QAT_SCALE:
    case TSQ_LAYER_OPT_AQ_LEARN_DELTA: *lo = 0; *hi = 1; return 1;
    case TSQ_LAYER_OPT_QAT_WEIGHT_BITS: *lo = 0; *hi = 8; return 1;
    case TSQ_LAYER_OPT_BN_MOMENTUM: *lo = DBL_MIN; *hi = 1; return 1;
    case TSQ_LAYER_OPT_BN_EPS: *lo = 1e-12; *hi = 1; return 1;
    case TSQ_LAYER_OPT_TSQ_SELECT: *lo = -1; *hi = 1; return 1;
    default: return 0;
    }
}

/* Layers that network-level TSQ can select: quantizer positions and the
 * layers it converts. */
static int selectable(const tsq_layer *l)
{
    int32_t k = l->ops->kind;
    return k == TSQ_LAYER_RELU || k == TSQ_LAYER_ACT_QUANT || k == TSQ_LAYER_DENSE ||
           k == TSQ_LAYER_CONV2D;
}

static int is_flag(int32_t key)
{
    return key == TSQ_LAYER_OPT_TRAINABLE || key == TSQ_LAYER_OPT_BN_FROZEN ||
           key == TSQ_LAYER_OPT_AQ_OUTPUT_CODES || key == TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA ||
           key == TSQ_LAYER_OPT_QAT_SCALE || key == TSQ_LAYER_OPT_AQ_LEARN_DELTA;
}

tsq_status tsq_layer_option_bounds(int32_t key, double *lo, double *hi)
{
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    return option_range(key, lo, hi) ? TSQ_OK : TSQ_ERR_INVALID;
}

tsq_status tsq_layer_set_option(tsq_layer *layer, int32_t key, double value)
{
    double lo, hi;
    if (!layer)
        return TSQ_ERR_NULL;
    if (!option_range(key, &lo, &hi))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID, "layer_set_option: unknown key %d", (int)key);
    if (!(value >= lo && value <= hi) || (is_flag(key) && value != 0 && value != 1))
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "layer_set_option: value %g of key %d is outside [%g, %g]", value,
                         (int)key, lo, hi);
    if (key == TSQ_LAYER_OPT_TRAINABLE) {
        layer->trainable = value != 0;
        tsq__clear(&layer->obj);
        return TSQ_OK;
    }
    if (key == TSQ_LAYER_OPT_TSQ_SELECT) {
        if (!selectable(layer))
            return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                             "layer_set_option: a %s layer cannot be selected for TSQ",
                             layer->ops->name);
        if (value != -1 && value != 0 && value != 1)
            return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                             "layer_set_option: TSQ selection %g must be -1, 0 or 1", value);
        layer->tsq_select = (int)value;
        tsq__clear(&layer->obj);
        return TSQ_OK;
    }
    if (!layer->ops->set_option)
        return tsq__fail(&layer->obj, TSQ_ERR_INVALID,
                         "layer_set_option: key %d does not apply to a %s layer", (int)key,
                         layer->ops->name);
    return layer->ops->set_option(layer, key, value);
}

tsq_status tsq_layer_get_option(const tsq_layer *layer, int32_t key, double *value)
{
    const tsq__object *obj;
    double lo, hi;
    if (!layer || !value)
        return TSQ_ERR_NULL;
    obj = &layer->obj;
    if (!option_range(key, &lo, &hi))
        return tsq__fail(obj, TSQ_ERR_INVALID, "layer_get_option: unknown key %d", (int)key);
    if (key == TSQ_LAYER_OPT_TRAINABLE) {
        *value = layer->trainable;
        return TSQ_OK;
    }
    if (key == TSQ_LAYER_OPT_TSQ_SELECT) {
        *value = layer->tsq_select;
        return TSQ_OK;
    }
    if (!layer->ops->get_option)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "layer_get_option: key %d does not apply to a %s layer", (int)key,
                         layer->ops->name);
    return layer->ops->get_option(layer, key, value);
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
