/* Folding a batch-norm into the dense, conv or low-bit layer before it.
 *
 * In eval mode a batch-norm is the per-channel affine z = s y + t with
 *     s = gamma / sqrt(running_var + eps),  t = beta - s running_mean
 * (tsq__batchnorm_eval_affine). After y = W x + b it folds exactly into
 *     W'_c = s_c W_c,   b'_c = s_c b_c + t_c,
 * and after a low-bit layer y = alpha (.) (x . w) + b into
 *     alpha'_c = |s_c| alpha_c,  w'_c = sign(s_c) w_c,  b'_c = s_c b_c + t_c
 * (tsq__lowbit_fold_affine), so codes stay codes. Eval outputs are the same
 * up to float rounding. */
#include "nn_internal.h"

#include <string.h>

static int foldable(const tsq_layer *l)
{
    return tsq__layer_is(l, TSQ_LAYER_DENSE) || tsq__layer_is(l, TSQ_LAYER_CONV2D) ||
           tsq__layer_is_lowbit(l);
}

static void fold_linear(tsq_layer *l, const float *s, const float *t)
{
    float *w = tsq__param_data(l, 0), *b = tsq__param_data(l, 1);
    int64_t out = l->params[1].value->numel, per = l->params[0].value->numel / out, c, j;
    for (c = 0; c < out; c++) {
        for (j = 0; j < per; j++)
            w[c * per + j] *= s[c];
        b[c] = s[c] * b[c] + t[c];
    }
}

tsq_status tsq_net_fold_batchnorm(tsq_net *net, int32_t *folded)
{
    static const char *where = "net_fold_batchnorm";
    tsq_context *ctx;
    int32_t i, count = 0;
    if (!net)
        return TSQ_ERR_NULL;
    ctx = net->obj.ctx;
    for (i = 0; i + 1 < net->nlayers; i++) {
        tsq_layer *l = net->layers[i], *bn = net->layers[i + 1];
        int64_t C;
        float *s;
        tsq_status st;
        if (!foldable(l) || !tsq__layer_is(bn, TSQ_LAYER_BATCHNORM))
            continue;
        C = tsq__batchnorm_channels(bn);
        s = tsq__alloc(ctx, (size_t)(2 * C) * sizeof(float));
        if (!s)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        tsq__batchnorm_eval_affine(bn, s, s + C);
        /* Remove first: if that fails (memory), nothing has been changed. */
        st = tsq__net_remove(net, i + 1);
        if (st != TSQ_OK) {
            tsq__free(ctx, s);
            return tsq__fail(&net->obj, st, "%s: out of memory", where);
        }
        if (tsq__layer_is_lowbit(l))
            tsq__lowbit_fold_affine(l, s, s + C);
        else
            fold_linear(l, s, s + C);
        tsq__free(ctx, s);
        count++;
    }
    if (folded)
        *folded = count;
    tsq__clear(&net->obj);
    return TSQ_OK;
}
