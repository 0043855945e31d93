/*
 * Step 1 of TSQ on a network (docs/method.md §2): tsq_net_learn_codes. A
 * tsq_quantizer observes the input of every selected ReLU (or quantizer
 * layer) over the caller's batches, is fitted, and is installed as a
 * quantizer layer in place of the ReLU.
 *
 * Two orders: all quantizers observe one pass of the FP32 net (the
 * default), or, with TSQ_NET_TSQ_SEQUENTIAL, one quantizer per pass in
 * network order, each observing its input with the earlier quantizers
 * already in place, so that it is fitted to what it will see in training.
 */
#include "convert_internal.h"

#include <string.h>

void tsq__cvt_free_learning(tsq_net *net, tsq__conversion *c)
{
    int32_t i;
    for (i = 0; i < c->npos; i++)
        tsq_quantizer_destroy(c->quant[i]);
    tsq__free(net->obj.ctx, c->quant);
    tsq__free(net->obj.ctx, c->pos);
    c->quant = NULL;
    c->pos = NULL;
    c->npos = 0;
}

static int is_position(const tsq_layer *l)
{
    return (tsq__layer_is(l, TSQ_LAYER_RELU) || tsq__layer_is_act_quant(l)) &&
           l->tsq_select != 0;
}

/* A quantizer with the session's settings (the net's conversion options,
 * already checked against the quantizer's bounds when they were set). */
static tsq_status new_quantizer(tsq_net *net, const tsq__conversion *c, int64_t channels,
                                tsq_quantizer **out)
{
    tsq_status st = tsq_quantizer_create(net->obj.ctx, c->act_bits, channels, out);
    if (st == TSQ_OK)
        st = tsq_quantizer_set_option(*out, TSQ_QUANTIZER_EPS_MODE, c->eps_mode);
    if (st == TSQ_OK)
        st = tsq_quantizer_set_option(*out, TSQ_QUANTIZER_EPS, c->eps);
    if (st == TSQ_OK)
        st = tsq_quantizer_set_option(*out, TSQ_QUANTIZER_SPARSITY, c->sparsity);
    return st;
}

static tsq_status begin_learning(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *c;
    int32_t i, n = 0;
    tsq_status st = tsq__cvt_new_session(net, TSQ_NET_TSQ_LEARNING);
    if (st != TSQ_OK)
        return st;
    c = tsq__cvt_of(net);
    for (i = 0; i < net->nlayers; i++)
        n += is_position(net->layers[i]);
    if (n == 0) {
        tsq__cvt_end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no ReLU or quantizer layer is selected",
                         where);
    }
    c->pos = tsq__calloc(ctx, (size_t)n, sizeof *c->pos);
    c->quant = tsq__calloc(ctx, (size_t)n, sizeof *c->quant);
    if (!c->pos || !c->quant) {
        tsq__cvt_end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    for (i = 0; i < net->nlayers; i++) {
        tsq_layer *l = net->layers[i];
        int64_t channels = c->per_channel ? l->in_shape[0] : 0;
        tsq_quantizer *q = NULL;
        if (!is_position(l))
            continue;
        st = new_quantizer(net, c, channels, &q);
        if (st == TSQ_OK) {
            c->pos[c->npos] = i;
            c->quant[c->npos++] = q;
        } else {
            tsq__fail(&net->obj, st, "%s: quantizer for layer %d: %s", where, (int)i,
                      q ? tsq_quantizer_errmsg(q) : tsq_context_errmsg(ctx));
            tsq_quantizer_destroy(q);
            tsq__cvt_end_session(net);
            return st;
        }
    }
    return TSQ_OK;
}

/* Adds one batch to every observing quantizer, or to none: the
 * documentation promises that a failed call does not count the batch. So
 * every allocation and the finiteness check come before the first
 * observation; the only allocation left, the histograms made by each
 * quantizer's first observation, happens on the first batch of a pass,
 * where a failure is undone by clearing the quantizers that observed it. */
static tsq_status observe_batch(tsq_net *net, const char *where, const tsq_tensor *x)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *c = tsq__cvt_of(net);
    int32_t lo = c->sequential ? c->qcur : 0, hi = c->sequential ? c->qcur + 1 : c->npos;
    tsq_tensor **t = NULL;
    int64_t n;
    int32_t i, j;
    tsq_status st = tsq__net_check_input(net, where, x, &n);
    if (st == TSQ_OK)
        st = tsq__cvt_run_prefix(net, net, where, x, n, c->pos[hi - 1]);
    if (st == TSQ_OK && !(t = tsq__calloc(ctx, (size_t)c->npos, sizeof *t)))
        st = tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    for (i = lo; st == TSQ_OK && i < hi; i++) {
        const tsq_layer *l = net->layers[c->pos[i]];
        st = tsq__cvt_wrap_batch(net, where, net->act[c->pos[i]], n, l->in_ndim, l->in_shape,
                                 &t[i]);
        if (st == TSQ_OK && !tsq__all_finite(net->act[c->pos[i]], t[i]->numel))
            st = tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                           "%s: layer %d: its input holds NaN or Inf", where, (int)c->pos[i]);
    }
    for (i = lo; st == TSQ_OK && i < hi; i++)
        if ((st = tsq_quantizer_observe(c->quant[i], t[i])) != TSQ_OK) {
            tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)c->pos[i],
                      tsq_quantizer_errmsg(c->quant[i]));
            for (j = lo; j < i && c->batch_in_pass == 0; j++)
                tsq_quantizer_reset(c->quant[j]);
        }
    if (st == TSQ_OK)
        c->batch_in_pass++;
    for (i = 0; t && i < c->npos; i++)
        tsq_tensor_destroy(t[i]);
    tsq__free(ctx, t);
    return st;
}

/* Copies a fitted quantizer's parameters into an existing quantizer layer. */
static tsq_status refit_layer(tsq_layer *l, const tsq_quantizer *q)
{
    double bits = 0, channels = 0;
    float eps, delta;
    int64_t ch;
    tsq_status st;
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, &bits);
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_CHANNELS, &channels);
    if (channels == 0) {
        st = tsq_quantizer_get_channel(q, 0, &eps, &delta);
        return st == TSQ_OK ? tsq_layer_act_quant_set_channel(l, -1, 0, (int32_t)bits, eps, delta)
                            : st;
    }
    for (ch = 0; ch < (int64_t)channels; ch++) {
        st = tsq_quantizer_get_channel(q, ch, &eps, &delta);
        if (st == TSQ_OK)
            st = tsq_layer_act_quant_set_channel(l, ch, (int64_t)channels, (int32_t)bits, eps,
                                                 delta);
        if (st != TSQ_OK)
            return st;
    }
    return TSQ_OK;
}

/* Fits quantizers [lo, hi) and installs them: a ReLU is replaced by a new
 * quantizer layer, an existing quantizer layer takes the new parameters.
 * The new layers are made first, so that running out of memory changes
 * nothing. */
static tsq_status install(tsq_net *net, const char *where, int32_t lo, int32_t hi)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *c = tsq__cvt_of(net);
    tsq_layer **fresh;
    tsq_status st = TSQ_OK;
    int32_t i;
    TSQ_FORWARD_IF_ERROR(
        tsq__progress(&net->obj, TSQ_PROGRESS_NET_LEARN_CODES, lo, c->npos, where));
    for (i = lo; i < hi && st == TSQ_OK; i++) {
        if ((st = tsq_quantizer_fit(c->quant[i])) != TSQ_OK)
            return tsq__fail(&net->obj, st, "%s: fitting the quantizer of layer %d: %s", where,
                             (int)c->pos[i], tsq_quantizer_errmsg(c->quant[i]));
        TSQ_FORWARD_IF_ERROR(
            tsq__progress(&net->obj, TSQ_PROGRESS_NET_LEARN_CODES, i + 1, c->npos, where));
    }
    fresh = tsq__calloc(ctx, (size_t)c->npos, sizeof *fresh);
    if (!fresh)
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    for (i = lo; i < hi && st == TSQ_OK; i++)
        if (tsq__layer_is(net->layers[c->pos[i]], TSQ_LAYER_RELU))
            if ((st = tsq_layer_act_quant_create_from(ctx, c->quant[i], &fresh[i])) != TSQ_OK)
                tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    for (i = lo; i < hi && st == TSQ_OK; i++) {
        tsq_layer *l = net->layers[c->pos[i]];
        if (fresh[i]) {
            st = tsq__net_replace(net, where, c->pos[i], fresh[i]);
            if (st == TSQ_OK)
                fresh[i] = NULL;
        } else if ((st = refit_layer(l, c->quant[i])) != TSQ_OK) {
            tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)c->pos[i],
                      tsq_layer_errmsg(l));
        }
    }
    for (i = 0; i < c->npos; i++)
        tsq_layer_destroy(fresh[i]);
    tsq__free(ctx, fresh);
    c->generation = net->generation; /* our own change */
    return st;
}

static void log_progress(tsq_net *net, const tsq__conversion *c, int32_t lo, int32_t hi)
{
    int32_t i;
    for (i = lo; i < hi; i++) {
        float eps = 0, delta = 0;
        tsq_quantizer_get_channel(c->quant[i], 0, &eps, &delta);
        tsq__log(net->obj.ctx, 3 /* info */,
                 "net_learn_codes: quantizer %d/%d at layer %d fitted: eps %.4g, delta %.4g "
                 "(channel 0)", (int)i + 1, (int)c->npos, (int)c->pos[i], (double)eps,
                 (double)delta);
    }
}

tsq_status tsq_net_learn_codes(tsq_net *net, const tsq_tensor *x, int32_t last, int32_t *done)
{
    static const char *where = "net_learn_codes";
    tsq__conversion *c;
    tsq_status st;
    int32_t lo, hi;
    if (!net)
        return TSQ_ERR_NULL;
    st = tsq__cvt_enter(net, where, TSQ_NET_TSQ_LEARNING, x, last, done);
    if (st != TSQ_OK)
        return st;
    *done = 0;
    if (!tsq__cvt_running(net) && (st = begin_learning(net, where)) != TSQ_OK)
        return st;
    c = tsq__cvt_of(net);
    st = observe_batch(net, where, x);
    if (st != TSQ_OK || !last)
        return st == TSQ_OK ? (tsq__clear(&net->obj), TSQ_OK) : st;
    lo = c->sequential ? c->qcur : 0;
    hi = c->sequential ? c->qcur + 1 : c->npos;
    st = install(net, where, lo, hi);
    if (st == TSQ_OK)
        log_progress(net, c, lo, hi);
    c->batch_in_pass = 0;
    c->qcur = hi;
    if (st != TSQ_OK || hi == c->npos) {
        tsq__cvt_end_session(net);
        if (st == TSQ_OK)
            *done = 1;
    }
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}
