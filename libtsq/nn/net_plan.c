/* The bridge from a tsq_net to the runtime: describes the net as the
 * runtime's plain stage list (runtime/desc.h) and hands it to the plan
 * builder. This is the only file that knows both a layer's insides and the
 * runtime; the runtime never sees a layer. The low-bit weights go over as
 * the layer's effective codes (tsq__lowbit_code), alpha already clamped, so
 * the plan computes what the layer computes. */
#include "nn_internal.h"
#include "kernels/kernels_internal.h" /* tsq__max_weight */
#include "runtime/desc.h"

#include <string.h>

static int64_t info(const tsq_layer *l, int32_t key)
{
    int64_t v = 0;
    (void)tsq_layer_info(l, key, &v);
    return v;
}

static void set_dims(tsq__stage_desc *d, const tsq_layer *l)
{
    d->in_c = l->in_shape[0];
    d->in_h = l->in_ndim == 3 ? l->in_shape[1] : 1;
    d->in_w = l->in_ndim == 3 ? l->in_shape[2] : 1;
    d->out_c = l->out_shape[0];
    d->out_h = l->out_ndim == 3 ? l->out_shape[1] : 1;
    d->out_w = l->out_ndim == 3 ? l->out_shape[2] : 1;
}

static int describe_quant(tsq__arena *a, const tsq_layer *l, tsq__stage_desc *d)
{
    int64_t c, n = tsq__act_quant_nchannels(l) > 0 ? d->in_c : 1;
    int32_t *bits = tsq__arena_alloc(a, (size_t)n * sizeof *bits);
    float *eps = tsq__arena_alloc(a, (size_t)n * sizeof *eps);
    float *delta = tsq__arena_alloc(a, (size_t)n * sizeof *delta);
    double codes = 0.0;
    if (!bits || !eps || !delta)
        return 0;
    for (c = 0; c < n; c++)
        tsq__act_quant_channel(l, c, &bits[c], &eps[c], &delta[c]);
    (void)tsq_layer_get_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, &codes);
    d->kind = TSQ__STAGE_QUANT;
    d->nq = n;
    d->bits = bits;
    d->eps = eps;
    d->delta = delta;
    d->codes_out = codes != 0.0;
    return 1;
}

static int describe_lowbit(tsq__arena *a, tsq_layer *l, tsq__stage_desc *d)
{
    const float *S = tsq__param_data(l, 0), *alpha_in = tsq__param_data(l, 1);
    int32_t bits = (int32_t)info(l, TSQ_LAYER_INFO_WEIGHT_BITS), m = tsq__max_weight(bits);
    int64_t out = info(l, TSQ_LAYER_INFO_OUT_CHANNELS), in, o, i;
    float *alpha;
    int8_t *w;
    d->kind = TSQ__STAGE_LOWBIT;
    d->conv = tsq__layer_is(l, TSQ_LAYER_LOWBIT_CONV2D);
    in = d->in_c * d->in_h * d->in_w;
    if (d->conv) {
        if (!tsq__conv_geom_init(&d->geom, d->in_c, d->in_h, d->in_w, out,
                                 info(l, TSQ_LAYER_INFO_KERNEL_H), info(l, TSQ_LAYER_INFO_KERNEL_W),
                                 info(l, TSQ_LAYER_INFO_STRIDE), info(l, TSQ_LAYER_INFO_PAD)))
            return 0;
        in = d->geom.k;
    }
    alpha = tsq__arena_alloc(a, (size_t)out * sizeof *alpha);
    w = tsq__arena_alloc(a, (size_t)(out * in));
    if (!alpha || !w)
        return 0;
    for (o = 0; o < out; o++) {
        alpha[o] = alpha_in[o] >= TSQ__LOWBIT_ALPHA_MIN ? alpha_in[o] : TSQ__LOWBIT_ALPHA_MIN;
        for (i = 0; i < in; i++)
            w[o * in + i] = tsq__lowbit_code(S[o * in + i], alpha[o], m);
    }
    d->weight_bits = bits;
    d->alpha = alpha;
    d->wcodes = w;
    d->bias = tsq__param_data(l, 2);
    return 1;
}

/* One layer; returns 0 when out of memory (unsupported kinds are passed
 * on with kind 0, for the builder's message). */
static int describe_layer(tsq__arena *a, tsq_layer *l, tsq__stage_desc *d)
{
    set_dims(d, l);
    d->name = l->ops->name;
    if (tsq__layer_is_lowbit(l))
        return describe_lowbit(a, l, d);
    if (tsq__layer_is_act_quant(l))
        return describe_quant(a, l, d);
    if (tsq__layer_is(l, TSQ_LAYER_FLATTEN)) {
        d->kind = TSQ__STAGE_FLATTEN;
    } else if (tsq__layer_is(l, TSQ_LAYER_MAXPOOL2D)) {
        d->kind = TSQ__STAGE_MAXPOOL;
        d->k = info(l, TSQ_LAYER_INFO_KERNEL_H);
        d->stride = info(l, TSQ_LAYER_INFO_STRIDE);
    } else if (tsq__layer_is(l, TSQ_LAYER_RELU)) {
        d->kind = TSQ__STAGE_RELU;
    } else if (tsq__layer_is(l, TSQ_LAYER_BATCHNORM)) {
        int64_t n = tsq__batchnorm_channels(l);
        float *s = tsq__arena_alloc(a, (size_t)n * sizeof *s), *t = tsq__arena_alloc(a, (size_t)n * sizeof *t);
        if (!s || !t)
            return 0;
        tsq__batchnorm_eval_affine(l, s, t);
        d->kind = TSQ__STAGE_AFFINE;
        d->scale = s;
        d->shift = t;
    } else if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
        d->kind = TSQ__STAGE_CONV;
        d->geom = *tsq__conv2d_geom(l);
        d->weight = tsq__param_data(l, 0);
        d->bias = tsq__param_data(l, 1);
    } else if (tsq__layer_is(l, TSQ_LAYER_DENSE)) {
        d->kind = TSQ__STAGE_DENSE;
        d->weight = tsq__param_data(l, 0);
        d->bias = tsq__param_data(l, 1);
    }
    return 1;
}

tsq_status tsq_plan_create(tsq_context *ctx, tsq_net *net, tsq_plan **out)
{
    tsq__net_desc d;
    tsq__arena a = {NULL, NULL, 0, 0}; /* the description's arrays, freed after building */
    tsq_status st;
    int32_t i;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!net || !out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_create: %s is NULL",
                         !net ? "net" : "out");
    *out = NULL;
    if (net->nlayers < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_STATE, "plan_create: the net has no layers");
    memset(&d, 0, sizeof d);
    a.ctx = ctx;
    d.in_ndim = net->in_ndim;
    for (i = 0; i < net->in_ndim && i < 3; i++)
        d.in_shape[i] = net->in_shape[i];
    d.nstages = net->nlayers;
    d.stages = tsq__calloc(ctx, (size_t)net->nlayers, sizeof *d.stages);
    st = d.stages ? TSQ_OK : TSQ_ERR_NO_MEMORY;
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++) {
        d.stages[i].layer = i;
        if (!describe_layer(&a, net->layers[i], &d.stages[i]))
            st = TSQ_ERR_NO_MEMORY;
    }
    if (st == TSQ_OK)
        st = tsq__plan_from_desc(ctx, &d, out);
    else
        st = tsq__fail(&ctx->obj, st, "plan_create: out of memory");
    tsq__arena_free(&a);
    tsq__free(ctx, d.stages);
    return st;
}
