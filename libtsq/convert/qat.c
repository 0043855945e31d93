/*
 * The end of joint QAT (docs/method.md §5): tsq_net_convert_qat turns every
 * dense/conv2d layer trained with quantization-aware weights into the
 * low-bit layer that computes what its forward computed, and then shapes
 * the net as tsq_net_fit_transform leaves it: the quantizer feeding a
 * converted layer outputs codes (its delta moves into alpha), and the
 * batch-norm after it is folded into alpha and b.
 */
#include "convert_internal.h"

#include <string.h>

static int is_qat(tsq_layer *l)
{
    tsq__qat *q = tsq__layer_qat(l);
    return q && q->bits > 0;
}

/* The low-bit layer holding the codes and scales of QAT layer l. */
static tsq_status lowbit_of(tsq_net *net, const char *where, tsq_layer *l, tsq_layer **out)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__qat *q = tsq__layer_qat(l);
    const float *w = tsq__param_data(l, 0);
    int64_t rows, k, cshape[2], vshape[1];
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL;
    tsq_layer *nl = NULL;
    tsq_status st;
    if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
        const tsq__conv_geom *g = tsq__conv2d_geom(l);
        rows = g->cout;
        k = g->k;
        st = tsq_layer_lowbit_conv2d_create(ctx, g->cin, g->cout, g->kh, g->kw, g->stride, g->pad,
                                            q->bits, &nl);
    } else {
        rows = l->out_numel;
        k = l->in_numel;
        st = tsq_layer_lowbit_dense_create(ctx, k, rows, q->bits, &nl);
    }
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    if (!tsq__all_finite(w, rows * k)) {
        tsq_layer_destroy(nl);
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: a %s layer's weights hold NaN or Inf",
                         where, l->ops->name);
    }
    cshape[0] = rows;
    cshape[1] = k;
    vshape[0] = rows;
    st = tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, cshape, &codes);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &alpha);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &bias);
    if (st != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    if (st == TSQ_OK && (st = tsq__qat_codes(q, l, w, rows, k, codes->data, alpha->data)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(l));
    if (st == TSQ_OK) {
        memcpy(bias->data, tsq__param_data(l, 1), (size_t)rows * sizeof(float));
        if ((st = tsq__lowbit_shape_codes(nl, codes)) != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: %s", where, tsq_tensor_errmsg(codes));
        else if ((st = tsq_layer_lowbit_set(nl, codes, alpha, bias)) != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(nl));
    }
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    if (st != TSQ_OK) {
        tsq_layer_destroy(nl);
        return st;
    }
    nl->trainable = l->trainable;
    *out = nl;
    return TSQ_OK;
}

/* alpha and the shadow weights of low-bit layer l times s (> 0), so that
 * the codes stay what they are: the layer now takes codes where it took
 * codes * s. */
static void scale_alpha(tsq_layer *l, float s)
{
    int32_t i;
    for (i = 0; i < l->nparams; i++)
        if (strcmp(l->params[i].name, "weight") == 0 || strcmp(l->params[i].name, "alpha") == 0) {
            float *p = tsq__param_data(l, i);
            int64_t j, n = l->params[i].value->numel;
            for (j = 0; j < n; j++)
                p[j] *= s;
        }
}

/* Codes input and folded batch-norm for the converted layer at index i. */
static tsq_status finish_layer(tsq_net *net, const char *where, int32_t i)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_layer *l = net->layers[i];
    int32_t q = tsq__cvt_feeding_quantizer(net, i);
    tsq_status st = TSQ_OK;
    if (q >= 0 && tsq__act_quant_nchannels(net->layers[q]) == 0) {
        int32_t bits;
        float eps, delta;
        tsq__act_quant_channel(net->layers[q], 0, &bits, &eps, &delta);
        st = tsq_layer_set_option(net->layers[q], TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1);
        if (st != TSQ_OK)
            return tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(net->layers[q]));
        scale_alpha(l, delta);
    }
    if (i + 1 < net->nlayers && tsq__layer_is(net->layers[i + 1], TSQ_LAYER_BATCHNORM)) {
        int64_t C = tsq__batchnorm_channels(net->layers[i + 1]);
        float *s = tsq__alloc(ctx, (size_t)(2 * C) * sizeof(float));
        if (!s)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        tsq__batchnorm_eval_affine(net->layers[i + 1], s, s + C);
        tsq__lowbit_fold_affine(l, s, s + C);
        tsq__free(ctx, s);
        st = tsq__net_remove(net, i + 1);
    }
    return st;
}

tsq_status tsq_net_convert_qat(tsq_net *net, int32_t *converted)
{
    static const char *where = "net_convert_qat";
    tsq_context *ctx = net ? net->obj.ctx : NULL;
    tsq_layer **fresh;
    int32_t i, n = 0;
    tsq_status st = TSQ_OK;
    if (!net)
        return TSQ_ERR_NULL;
    if (tsq__cvt_running(net))
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: a TSQ session is running", where);
    /* Every new layer first, so that a failure leaves the net unchanged. */
    fresh = tsq__calloc(ctx, (size_t)(net->nlayers > 0 ? net->nlayers : 1), sizeof *fresh);
    if (!fresh)
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++)
        if (is_qat(net->layers[i]))
            st = lowbit_of(net, where, net->layers[i], &fresh[i]);
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++) {
        if (!fresh[i])
            continue;
        if ((st = tsq__net_replace(net, where, i, fresh[i])) == TSQ_OK) {
            /* the slot now only marks a converted layer */
            fresh[i] = (tsq_layer *)net;
            n++;
        }
    }
    for (i = 0; i < net->nlayers; i++)
        if (fresh[i] != (tsq_layer *)net)
            tsq_layer_destroy(fresh[i]);
    /* Learned steps become fixed parameters again. */
    for (i = 0; i < net->nlayers && st == TSQ_OK; i++)
        if (tsq__layer_is_act_quant(net->layers[i]))
            if ((st = tsq_layer_set_option(net->layers[i], TSQ_LAYER_OPT_AQ_LEARN_DELTA, 0)) != TSQ_OK)
                tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(net->layers[i]));
    /* From the end, so that removing a batch-norm moves no layer still to do. */
    for (i = net->nlayers - 1; i >= 0 && st == TSQ_OK; i--)
        if (fresh[i] == (tsq_layer *)net)
            st = finish_layer(net, where, i);
    tsq__free(ctx, fresh);
    if (st != TSQ_OK)
        return st;
    if (converted)
        *converted = n;
    tsq__clear(&net->obj);
    return TSQ_OK;
}
