/* The sequential network's structure: creation and destruction, the layer
 * list and its edits (each one re-runs shape inference), cloning, and
 * parameter access. Running it over a batch is net_run.c; the loss, the
 * train step and evaluation are net_train.c. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Creation and destruction                                             */
/* ------------------------------------------------------------------ */

tsq_status tsq_net_create(tsq_context *ctx, int32_t ndim, const int64_t *sample_shape,
                          tsq_net **out)
{
    static const char *where = "net_create";
    tsq_net *net;
    int64_t n = 1;
    int32_t i;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out || !sample_shape)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         out ? "sample_shape" : "out");
    *out = NULL;
    if (ndim < 1 || ndim > TSQ__MAX_SAMPLE_DIMS)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: sample ndim %d is outside 1..3", where,
                         (int)ndim);
    for (i = 0; i < ndim; i++) {
        if (sample_shape[i] < 1)
            return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: sample dimension %d is %lld", where,
                             (int)i, (long long)sample_shape[i]);
        if (!tsq__mul_i64(n, sample_shape[i], &n) || n > (INT64_C(1) << 31) - 1)
            return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: sample size above 2^31", where);
    }
    net = tsq__calloc(ctx, 1, sizeof *net);
    if (!net)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    tsq__object_init(&net->obj, ctx);
    net->in_ndim = ndim;
    memcpy(net->in_shape, sample_shape, (size_t)ndim * sizeof(int64_t));
    net->in_numel = n;
    net->act_valid = -1;
    tsq__clear(&ctx->obj);
    *out = net;
    return TSQ_OK;
}

void tsq_net_destroy(tsq_net *net)
{
    tsq_context *ctx;
    int32_t i;
    if (!net)
        return;
    ctx = net->obj.ctx;
    if (net->attach_ops)
        net->attach_ops->destroy(net);
    tsq__net_free_buffers(net);
    tsq__optimizer_free_state(net);
    for (i = 0; i < net->nlayers; i++) {
        net->layers[i]->owner = NULL;
        tsq__layer_free(net->layers[i]);
    }
    tsq__free(ctx, net->layers);
    tsq__free(ctx, net->params);
    tsq__free(ctx, net->param_layer);
    tsq__free(ctx, net);
}

const char *tsq_net_errmsg(const tsq_net *net)
{
    return net ? net->obj.msg : "no net";
}

/* ------------------------------------------------------------------ */
/* Structure                                                            */
/* ------------------------------------------------------------------ */

static void layer_input_shape(const tsq_net *net, int32_t index, int32_t *ndim,
                              const int64_t **shape)
{
    if (index == 0) {
        *ndim = net->in_ndim;
        *shape = net->in_shape;
    } else {
        *ndim = net->layers[index - 1]->out_ndim;
        *shape = net->layers[index - 1]->out_shape;
    }
}

static int64_t numel_of(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    int32_t i;
    for (i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* Runs the layer's setup for the given input shape; the message names the
 * layer's position. */
static tsq_status setup_layer(tsq_net *net, const char *where, int32_t index, tsq_layer *l,
                              int32_t in_ndim, const int64_t *in_shape)
{
    int64_t out_shape[TSQ__MAX_SAMPLE_DIMS];
    int32_t out_ndim = 0, i;
    int64_t n = 1;
    tsq_status st = l->ops->setup(l, in_ndim, in_shape, &out_ndim, out_shape);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)index, l->obj.msg);
    for (i = 0; i < out_ndim; i++)
        if (!tsq__mul_i64(n, out_shape[i], &n) || n > (INT64_C(1) << 31) - 1)
            return tsq__fail(&net->obj, TSQ_ERR_OVERFLOW,
                             "%s: layer %d (%s): output sample above 2^31 elements", where,
                             (int)index, l->ops->name);
    l->in_ndim = in_ndim;
    memcpy(l->in_shape, in_shape, (size_t)in_ndim * sizeof(int64_t));
    l->in_numel = numel_of(in_ndim, in_shape);
    l->out_ndim = out_ndim;
    memcpy(l->out_shape, out_shape, (size_t)out_ndim * sizeof(int64_t));
    l->out_numel = n;
    l->is_setup = 1;
    tsq__clear(&l->obj);
    return TSQ_OK;
}

static int same_shape(int32_t na, const int64_t *a, int32_t nb, const int64_t *b)
{
    return na == nb && memcmp(a, b, (size_t)na * sizeof(int64_t)) == 0;
}

tsq_status tsq__net_structure_changed(tsq_net *net)
{
    tsq_context *ctx = net->obj.ctx;
    int32_t i, j, count = 0;
    tsq__param **params = NULL;
    int32_t *owner = NULL;
    net->generation++;
    tsq__net_free_buffers(net);
    tsq__optimizer_free_state(net);
    for (i = 0; i < net->nlayers; i++)
        count += net->layers[i]->nparams;
    if (count > 0 && count <= net->nparams) {
        /* No more parameters than before: reuse the lists, so that removing
         * a layer cannot fail (fit_transform's and fold's rewrites rely on it). */
        params = net->params;
        owner = net->param_layer;
    } else if (count > 0) {
        params = tsq__alloc(ctx, (size_t)count * sizeof *params);
        owner = tsq__alloc(ctx, (size_t)count * sizeof *owner);
        if (!params || !owner) {
            tsq__free(ctx, params);
            tsq__free(ctx, owner);
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "net: out of memory for the parameter list");
        }
    }
    count = 0;
    for (i = 0; i < net->nlayers; i++)
        for (j = 0; j < net->layers[i]->nparams; j++) {
            params[count] = &net->layers[i]->params[j];
            owner[count++] = i;
        }
    if (params != net->params) {
        tsq__free(ctx, net->params);
        tsq__free(ctx, net->param_layer);
    }
    net->params = params;
    net->param_layer = owner;
    net->nparams = count;
    return TSQ_OK;
}

static tsq_status grow_layers(tsq_net *net)
{
    tsq_layer **p;
    int32_t cap;
    if (net->nlayers < net->cap)
        return TSQ_OK;
    cap = net->cap ? 2 * net->cap : 16;
    p = tsq__alloc(net->obj.ctx, (size_t)cap * sizeof *p);
    if (!p)
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "net: out of memory for the layer list");
    if (net->nlayers)
        memcpy(p, net->layers, (size_t)net->nlayers * sizeof *p);
    tsq__free(net->obj.ctx, net->layers);
    net->layers = p;
    net->cap = cap;
    return TSQ_OK;
}

/* The layer-list edits. Each one runs the new layer's setup against its
 * input shape first, and rebuilds the parameter list before committing, so
 * that a failure (shape or memory) leaves the net as it was and the caller
 * still owning the layer it passed. */
tsq_status tsq__net_insert(tsq_net *net, const char *where, int32_t index, tsq_layer *layer)
{
    int32_t in_ndim;
    const int64_t *in_shape;
    tsq_status st;
    layer_input_shape(net, index, &in_ndim, &in_shape);
    st = setup_layer(net, where, index, layer, in_ndim, in_shape);
    if (st != TSQ_OK)
        return st;
    if (index < net->nlayers &&
        !same_shape(layer->out_ndim, layer->out_shape, in_ndim, in_shape)) {
        char a[64], b[64];
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: a %s layer inserted at %d must keep the shape %s, gives %s", where,
                         layer->ops->name, (int)index, tsq__shape_str(a, sizeof a, in_ndim, in_shape),
                         tsq__shape_str(b, sizeof b, layer->out_ndim, layer->out_shape));
    }
    st = grow_layers(net);
    if (st != TSQ_OK)
        return st;
    tsq__net_free_buffers(net); /* act[] is sized by the layer count */
    memmove(net->layers + index + 1, net->layers + index,
            (size_t)(net->nlayers - index) * sizeof *net->layers);
    net->layers[index] = layer;
    net->nlayers++;
    st = tsq__net_structure_changed(net);
    if (st != TSQ_OK) { /* undo: the old parameter list is still intact */
        memmove(net->layers + index, net->layers + index + 1,
                (size_t)(net->nlayers - index - 1) * sizeof *net->layers);
        net->nlayers--;
        return st;
    }
    layer->owner = net;
    return TSQ_OK;
}

tsq_status tsq__net_remove(tsq_net *net, int32_t index)
{
    tsq_layer *l = net->layers[index];
    tsq_status st;
    tsq__net_free_buffers(net);
    memmove(net->layers + index, net->layers + index + 1,
            (size_t)(net->nlayers - index - 1) * sizeof *net->layers);
    net->nlayers--;
    st = tsq__net_structure_changed(net);
    if (st != TSQ_OK) {
        memmove(net->layers + index + 1, net->layers + index,
                (size_t)(net->nlayers - index) * sizeof *net->layers);
        net->layers[index] = l;
        net->nlayers++;
        return st;
    }
    l->owner = NULL;
    tsq__layer_free(l);
    return TSQ_OK;
}

tsq_status tsq__net_replace(tsq_net *net, const char *where, int32_t index, tsq_layer *layer)
{
    tsq_layer *old = net->layers[index];
    tsq_status st = setup_layer(net, where, index, layer, old->in_ndim, old->in_shape);
    if (st != TSQ_OK)
        return st;
    if (!same_shape(layer->out_ndim, layer->out_shape, old->out_ndim, old->out_shape)) {
        char a[64], b[64];
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: layer %d gives %s, the %s it replaces gave %s", where, (int)index,
                         tsq__shape_str(a, sizeof a, layer->out_ndim, layer->out_shape),
                         old->ops->name,
                         tsq__shape_str(b, sizeof b, old->out_ndim, old->out_shape));
    }
    tsq__net_free_buffers(net);
    net->layers[index] = layer;
    st = tsq__net_structure_changed(net);
    if (st != TSQ_OK) {
        net->layers[index] = old;
        return st;
    }
    layer->owner = net;
    old->owner = NULL;
    tsq__layer_free(old);
    return TSQ_OK;
}

static tsq_status check_new_layer(tsq_net *net, const char *where, const tsq_layer *layer)
{
    if (layer->owner)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: the %s layer already belongs to a net",
                         where, layer->ops->name);
    if (layer->obj.ctx != net->obj.ctx)
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: the %s layer was made from another context", where,
                         layer->ops->name);
    return TSQ_OK;
}

typedef tsq_status (*edit_fn)(tsq_net *net, const char *where, int32_t index, tsq_layer *layer);

/* The public edits that put a layer in: the checks (a layer that belongs to
 * no net, from the net's context, at an index in 0..last), then the edit. */
static tsq_status put_layer(tsq_net *net, const char *where, int32_t index, int32_t last,
                            tsq_layer *layer, edit_fn edit)
{
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: layer is NULL", where);
    if (index < 0 || index > last)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: index %d is outside 0..%d", where,
                         (int)index, (int)last);
    st = check_new_layer(net, where, layer);
    if (st == TSQ_OK)
        st = edit(net, where, index, layer);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

tsq_status tsq_net_append(tsq_net *net, tsq_layer *layer)
{
    int32_t n = net ? net->nlayers : 0;
    return put_layer(net, "net_append", n, n, layer, tsq__net_insert);
}

tsq_status tsq_net_insert_layer(tsq_net *net, int32_t index, tsq_layer *layer)
{
    return put_layer(net, "net_insert_layer", index, net ? net->nlayers : 0, layer,
                     tsq__net_insert);
}

tsq_status tsq_net_replace_layer(tsq_net *net, int32_t index, tsq_layer *layer)
{
    return put_layer(net, "net_replace_layer", index, net ? net->nlayers - 1 : 0, layer,
                     tsq__net_replace);
}

tsq_status tsq_net_remove_layer(tsq_net *net, int32_t index)
{
    static const char *where = "net_remove_layer";
    tsq_layer *l;
    if (!net)
        return TSQ_ERR_NULL;
    if (index < 0 || index >= net->nlayers)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: index %d is outside 0..%d", where,
                         (int)index, (int)net->nlayers - 1);
    l = net->layers[index];
    if (!same_shape(l->in_ndim, l->in_shape, l->out_ndim, l->out_shape)) {
        char a[64], b[64];
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: layer %d (%s) maps %s to %s; only shape-keeping layers can go",
                         where, (int)index, l->ops->name,
                         tsq__shape_str(a, sizeof a, l->in_ndim, l->in_shape),
                         tsq__shape_str(b, sizeof b, l->out_ndim, l->out_shape));
    }
    if (tsq__net_remove(net, index) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_layer_count(const tsq_net *net, int32_t *count)
{
    if (!net || !count)
        return TSQ_ERR_NULL;
    *count = net->nlayers;
    return TSQ_OK;
}

tsq_status tsq_net_layer(tsq_net *net, int32_t index, tsq_layer **layer)
{
    if (!net || !layer)
        return TSQ_ERR_NULL;
    if (index < 0 || index >= net->nlayers)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "net_layer: index %d is outside 0..%d",
                         (int)index, (int)net->nlayers - 1);
    *layer = net->layers[index];
    return TSQ_OK;
}

void tsq__net_output_shape(const tsq_net *net, int32_t *ndim, const int64_t **shape)
{
    layer_input_shape(net, net->nlayers, ndim, shape);
}

tsq_status tsq_net_output_shape(const tsq_net *net, int64_t *shape, int32_t capacity,
                                int32_t *ndim)
{
    const int64_t *s;
    int32_t n;
    if (!net || !shape || !ndim)
        return TSQ_ERR_NULL;
    tsq__net_output_shape(net, &n, &s);
    if (capacity < n)
        return tsq__fail(&net->obj, TSQ_ERR_TOO_SMALL,
                         "net_output_shape: capacity %d < ndim %d", (int)capacity, (int)n);
    memcpy(shape, s, (size_t)n * sizeof(int64_t));
    *ndim = n;
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Clone                                                                */
/* ------------------------------------------------------------------ */

tsq_status tsq_net_clone(const tsq_net *net, tsq_net **copy)
{
    const tsq__object *obj;
    tsq_net *c = NULL;
    tsq_status st;
    int32_t i;
    if (!net || !copy)
        return TSQ_ERR_NULL;
    obj = &net->obj;
    *copy = NULL;
    st = tsq_net_create(net->obj.ctx, net->in_ndim, net->in_shape, &c);
    if (st != TSQ_OK)
        return tsq__fail(obj, st, "net_clone: %s", tsq_context_errmsg(net->obj.ctx));
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++) {
        tsq_layer *l = NULL;
        st = grow_layers(c);
        if (st == TSQ_OK && tsq__layer_clone(net->layers[i], &l) != TSQ_OK)
            st = TSQ_ERR_NO_MEMORY;
        if (st == TSQ_OK) {
            l->owner = c;
            c->layers[c->nlayers++] = l;
        }
    }
    if (st == TSQ_OK)
        st = tsq__net_structure_changed(c);
    if (st == TSQ_OK)
        st = tsq__optimizer_copy(c, net);
    c->kd_temperature = net->kd_temperature;
    c->kd_weight = net->kd_weight;
    if (st == TSQ_OK && net->attach_ops)
        st = net->attach_ops->copy_settings(c, net);
    if (st != TSQ_OK) {
        tsq_net_destroy(c);
        return tsq__fail(obj, TSQ_ERR_NO_MEMORY, "net_clone: out of memory");
    }
    tsq__clear(obj);
    *copy = c;
    return TSQ_OK;
}

static int same_tensor_shape(const tsq_tensor *a, const tsq_tensor *b)
{
    return a->dtype == b->dtype && a->numel == b->numel &&
           same_shape(a->ndim, a->shape, b->ndim, b->shape);
}

tsq_status tsq_net_copy_params(tsq_net *dst, const tsq_net *src)
{
    int32_t i, j;
    if (!dst)
        return TSQ_ERR_NULL;
    if (!src)
        return tsq__fail(&dst->obj, TSQ_ERR_NULL, "net_copy_params: src is NULL");
    if (src->nlayers != dst->nlayers)
        return tsq__fail(&dst->obj, TSQ_ERR_SHAPE, "net_copy_params: %d layers into %d",
                         (int)src->nlayers, (int)dst->nlayers);
    for (i = 0; i < src->nlayers; i++) {
        const tsq_layer *a = src->layers[i];
        tsq_layer *b = dst->layers[i];
        int ok = a->ops == b->ops && a->nparams == b->nparams && a->nstates == b->nstates;
        for (j = 0; ok && j < a->nparams; j++)
            ok = same_tensor_shape(a->params[j].value, b->params[j].value);
        for (j = 0; ok && j < a->nstates; j++)
            ok = same_tensor_shape(a->states[j].value, b->states[j].value);
        if (!ok)
            return tsq__fail(&dst->obj, TSQ_ERR_SHAPE,
                             "net_copy_params: layer %d differs (%s vs %s, or tensor shapes)",
                             (int)i, a->ops->name, b->ops->name);
    }
    for (i = 0; i < src->nlayers; i++) {
        const tsq_layer *a = src->layers[i];
        tsq_layer *b = dst->layers[i];
        for (j = 0; j < a->nparams; j++)
            memcpy(b->params[j].value->data, a->params[j].value->data,
                   (size_t)a->params[j].value->numel * sizeof(float));
        for (j = 0; j < a->nstates; j++)
            memcpy(b->states[j].value->data, a->states[j].value->data,
                   (size_t)tsq__tensor_bytes(a->states[j].value));
    }
    tsq__clear(&dst->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Parameters                                                           */
/* ------------------------------------------------------------------ */

tsq_status tsq_net_param_count(const tsq_net *net, int32_t *count)
{
    if (!net || !count)
        return TSQ_ERR_NULL;
    *count = net->nparams;
    return TSQ_OK;
}

tsq_status tsq_net_param(tsq_net *net, int32_t index, tsq_tensor **value, tsq_tensor **grad,
                         int32_t *layer_index, const char **name)
{
    if (!net)
        return TSQ_ERR_NULL;
    if (index < 0 || index >= net->nparams)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "net_param: index %d is outside 0..%d",
                         (int)index, (int)net->nparams - 1);
    if (value)
        *value = net->params[index]->value;
    if (grad)
        *grad = net->params[index]->grad;
    if (layer_index)
        *layer_index = net->param_layer[index];
    if (name)
        *name = net->params[index]->name;
    return TSQ_OK;
}
