/* The sequential network: building, shape inference, forward/backward over
 * a batch, parameter access, cloning and layer-list rewrites. The loss, the
 * train step and evaluation are in net_train.c. */
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

static void free_buffers(tsq_net *net)
{
    tsq_context *ctx = net->obj.ctx;
    int32_t i;
    if (net->act) {
        for (i = 0; i <= net->nlayers; i++)
            tsq__free(ctx, net->act[i]);
        tsq__free(ctx, net->act);
    }
    net->act = NULL;
    net->act_cap = 0;
    tsq__free(ctx, net->grad_a);
    tsq__free(ctx, net->grad_b);
    net->grad_a = net->grad_b = NULL;
    net->grad_cap = 0;
    net->have_forward = 0;
    net->act_valid = -1;
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
    free_buffers(net);
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
    free_buffers(net);
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
    free_buffers(net); /* act[] is sized by the layer count */
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
    free_buffers(net);
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
    free_buffers(net);
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

tsq_status tsq_net_append(tsq_net *net, tsq_layer *layer)
{
    static const char *where = "net_append";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: layer is NULL", where);
    st = check_new_layer(net, where, layer);
    if (st == TSQ_OK)
        st = tsq__net_insert(net, where, net->nlayers, layer);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

tsq_status tsq_net_insert_layer(tsq_net *net, int32_t index, tsq_layer *layer)
{
    static const char *where = "net_insert_layer";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: layer is NULL", where);
    if (index < 0 || index > net->nlayers)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: index %d is outside 0..%d", where,
                         (int)index, (int)net->nlayers);
    st = check_new_layer(net, where, layer);
    if (st == TSQ_OK)
        st = tsq__net_insert(net, where, index, layer);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

tsq_status tsq_net_replace_layer(tsq_net *net, int32_t index, tsq_layer *layer)
{
    static const char *where = "net_replace_layer";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    if (!layer)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: layer is NULL", where);
    if (index < 0 || index >= net->nlayers)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: index %d is outside 0..%d", where,
                         (int)index, (int)net->nlayers - 1);
    st = check_new_layer(net, where, layer);
    if (st == TSQ_OK)
        st = tsq__net_replace(net, where, index, layer);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
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

static int64_t out_numel(const tsq_net *net)
{
    return net->nlayers ? net->layers[net->nlayers - 1]->out_numel : net->in_numel;
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
                   (size_t)a->states[j].value->numel * tsq__dtype_size(a->states[j].value->dtype));
    }
    tsq__clear(&dst->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Forward and backward                                                 */
/* ------------------------------------------------------------------ */

tsq_status tsq__net_reserve(tsq_net *net, int64_t n)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t maxn = net->in_numel;
    size_t g;
    int32_t i;
    if (n <= net->act_cap && net->act)
        return TSQ_OK;
    free_buffers(net);
    net->act = tsq__calloc(ctx, (size_t)net->nlayers + 1, sizeof *net->act);
    if (!net->act)
        goto oom;
    net->act[0] = tsq__alloc(ctx, (size_t)(n * net->in_numel) * sizeof(float));
    if (!net->act[0])
        goto oom;
    for (i = 0; i < net->nlayers; i++) {
        int64_t m = net->layers[i]->out_numel;
        if (m > maxn)
            maxn = m;
        net->act[i + 1] = tsq__alloc(ctx, (size_t)(n * m) * sizeof(float));
        if (!net->act[i + 1])
            goto oom;
    }
    g = (size_t)(n * maxn);
    net->grad_a = tsq__alloc(ctx, g * sizeof(float));
    net->grad_b = tsq__alloc(ctx, g * sizeof(float));
    if (!net->grad_a || !net->grad_b)
        goto oom;
    net->grad_cap = g;
    net->act_cap = n;
    return TSQ_OK;
oom:
    free_buffers(net);
    return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY,
                     "net: out of memory for the activations of %lld samples", (long long)n);
}

tsq_status tsq__net_check_input(tsq_net *net, const char *where, const tsq_tensor *x,
                                int64_t *n)
{
    tsq_status st = tsq__expect_dtype(&net->obj, where, "x", x, TSQ_DTYPE_F32);
    int64_t N;
    char a[64];
    if (st != TSQ_OK)
        return st;
    if (net->nlayers == 0)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: the net has no layers", where);
    N = x->shape[0];
    if (x->ndim < 2 || x->numel != N * net->in_numel)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: x must be (N, ...) with N samples of %s = %lld elements; it has "
                         "%d dimensions and %lld elements for N = %lld",
                         where, tsq__shape_str(a, sizeof a, net->in_ndim, net->in_shape),
                         (long long)net->in_numel, (int)x->ndim, (long long)x->numel,
                         (long long)N);
    if (N > (INT64_C(1) << 31) - 1)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE, "%s: batch of %lld is above 2^31", where,
                         (long long)N);
    if (!tsq__all_finite(x->data, x->numel))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: x holds NaN or Inf", where);
    *n = N;
    return TSQ_OK;
}

tsq_status tsq__net_run(tsq_net *net, int32_t upto, int64_t n, int train)
{
    int32_t i;
    net->have_forward = 0;
    net->act_valid = 0;
    net->batch = n;
    for (i = 0; i < upto; i++) {
        tsq_layer *l = net->layers[i];
        tsq_status st = l->ops->forward(l, net->act[i], net->act[i + 1], n, train);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "net: layer %d (%s): %s", (int)i, l->ops->name,
                             l->obj.msg);
        l->last_train = train;
        net->act_valid = i + 1;
    }
    net->have_forward = upto == net->nlayers;
    return TSQ_OK;
}

/* Validates and runs a forward; the output stays in act[nlayers]. */
tsq_status tsq__net_forward(tsq_net *net, const char *where, const tsq_tensor *x,
                                   int train, int64_t *n)
{
    tsq_status st = tsq__net_check_input(net, where, x, n);
    if (st == TSQ_OK)
        st = tsq__net_reserve(net, *n);
    if (st != TSQ_OK)
        return st;
    memcpy(net->act[0], x->data, (size_t)(*n * net->in_numel) * sizeof(float));
    return tsq__net_run(net, net->nlayers, *n, train);
}

tsq_status tsq_net_forward(tsq_net *net, const tsq_tensor *x, tsq_tensor *y, int32_t train)
{
    static const char *where = "net_forward";
    tsq_status st;
    int64_t n, m;
    if (!net)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&net->obj, where, "y", y, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    if (train != 0 && train != 1)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: train is %d, must be 0 or 1", where,
                         (int)train);
    if (x && x->dtype == TSQ_DTYPE_F32 && net->nlayers > 0) {
        m = out_numel(net);
        if (y->shape[0] != x->shape[0] || y->numel != x->shape[0] * m)
            return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                             "%s: y must hold N = %lld samples of %lld outputs; it has first "
                             "dimension %lld and %lld elements",
                             where, (long long)x->shape[0], (long long)m,
                             (long long)y->shape[0], (long long)y->numel);
    }
    st = tsq__net_forward(net, where, x, train, &n);
    if (st != TSQ_OK)
        return st;
    memcpy(y->data, net->act[net->nlayers], (size_t)y->numel * sizeof(float));
    tsq__clear(&net->obj);
    return TSQ_OK;
}

/* Backward from the gradient in grad_a (of the net output); dx may be NULL. */
tsq_status tsq__net_backward(tsq_net *net, float *dx_out)
{
    float *dy = net->grad_a, *dx = net->grad_b, *t;
    int32_t i, first = net->nlayers;
    /* Below the first layer with parameters, input gradients are only
     * needed if the caller asked for dx. */
    for (i = 0; i < net->nlayers; i++)
        if (net->layers[i]->nparams > 0) {
            first = i;
            break;
        }
    for (i = net->nlayers - 1; i >= 0; i--) {
        tsq_layer *l = net->layers[i];
        int want = dx_out || i > first;
        float *target = want ? (i == 0 && dx_out ? dx_out : dx) : NULL;
        tsq_status st;
        if (!want && l->nparams == 0)
            break;
        st = l->ops->backward(l, net->act[i], net->act[i + 1], dy, target, net->batch);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "net_backward: layer %d (%s): %s", (int)i,
                             l->ops->name, l->obj.msg);
        t = dy;
        dy = dx;
        dx = t;
    }
    return TSQ_OK;
}

tsq_status tsq_net_backward(tsq_net *net, const tsq_tensor *dy, tsq_tensor *dx)
{
    static const char *where = "net_backward";
    tsq_status st;
    int64_t m;
    if (!net)
        return TSQ_ERR_NULL;
    if (!net->have_forward)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no forward since the net last changed",
                         where);
    st = tsq__expect_dtype(&net->obj, where, "dy", dy, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    m = out_numel(net);
    if (dy->numel != net->batch * m || dy->shape[0] != net->batch)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: dy has %lld elements (first dimension %lld); the last forward "
                         "gave %lld samples of %lld",
                         where, (long long)dy->numel, (long long)dy->shape[0],
                         (long long)net->batch, (long long)m);
    if (dx) {
        st = tsq__expect_dtype(&net->obj, where, "dx", dx, TSQ_DTYPE_F32);
        if (st != TSQ_OK)
            return st;
        if (dx->numel != net->batch * net->in_numel || dx->shape[0] != net->batch)
            return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                             "%s: dx has %lld elements, the input had %lld samples of %lld",
                             where, (long long)dx->numel, (long long)net->batch,
                             (long long)net->in_numel);
    }
    if (!tsq__all_finite(dy->data, dy->numel))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: dy holds NaN or Inf", where);
    memcpy(net->grad_a, dy->data, (size_t)dy->numel * sizeof(float));
    st = tsq__net_backward(net, dx ? (float *)dx->data : NULL);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
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
