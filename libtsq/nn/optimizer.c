/* Built-in optimisers over the net's trainable parameters.
 *
 * SGD (momentum mu, Nesterov optional, L2 weight decay wd on weights):
 *     g = grad + wd w;  v = mu v + g;  w -= lr (nesterov ? g + mu v : v)
 * Adam (Kingma & Ba 2015), t counted from 1:
 *     g = grad + wd w;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *     w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * lr comes from the schedule (schedule.c). Parameters of layers whose
 * TSQ_LAYER_OPT_TRAINABLE is 0 are left alone (their moments too). */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

void tsq__optimizer_free_state(tsq_net *net)
{
    tsq_context *ctx = net->obj.ctx;
    int32_t i;
    for (i = 0; i < net->opt.nstate; i++) {
        if (net->opt.m)
            tsq__free(ctx, net->opt.m[i]);
        if (net->opt.v)
            tsq__free(ctx, net->opt.v[i]);
    }
    tsq__free(ctx, net->opt.m);
    tsq__free(ctx, net->opt.v);
    net->opt.m = net->opt.v = NULL;
    net->opt.nstate = 0;
}

static int needs_m(const tsq__optimizer *o)
{
    return o->kind == TSQ__OPT_ADAM || (o->kind == TSQ__OPT_SGD && o->momentum > 0.0);
}

tsq_status tsq__optimizer_prepare(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__optimizer *o = &net->opt;
    int32_t i;
    if (o->nstate == net->nparams && (o->m || !needs_m(o)))
        return TSQ_OK;
    tsq__optimizer_free_state(net);
    if (net->nparams == 0 || !needs_m(o))
        return TSQ_OK;
    o->m = tsq__calloc(ctx, (size_t)net->nparams, sizeof *o->m);
    if (o->kind == TSQ__OPT_ADAM)
        o->v = tsq__calloc(ctx, (size_t)net->nparams, sizeof *o->v);
    if (!o->m || (o->kind == TSQ__OPT_ADAM && !o->v))
        goto oom;
    o->nstate = net->nparams;
    for (i = 0; i < net->nparams; i++) {
        size_t bytes = (size_t)net->params[i]->value->numel * sizeof(float);
        o->m[i] = tsq__alloc(ctx, bytes);
        if (!o->m[i])
            goto oom;
        memset(o->m[i], 0, bytes);
        if (o->v) {
            o->v[i] = tsq__alloc(ctx, bytes);
            if (!o->v[i])
                goto oom;
            memset(o->v[i], 0, bytes);
        }
    }
    return TSQ_OK;
oom:
    tsq__optimizer_free_state(net);
    return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for the optimiser state",
                     where);
}

static void sgd_update(const tsq__optimizer *o, float lr, const tsq__param *p, float *v)
{
    float *w = p->value->data;
    const float *g = p->grad->data;
    float wd = p->decay ? (float)o->weight_decay : 0.0f, mu = (float)o->momentum;
    int64_t i, n = p->value->numel;
    for (i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        if (v) {
            v[i] = mu * v[i] + gi;
            gi = o->nesterov ? gi + mu * v[i] : v[i];
        }
        w[i] -= lr * gi;
    }
}

static void adam_update(const tsq__optimizer *o, float lr, int64_t t, const tsq__param *p,
                        float *m, float *v)
{
    float *w = p->value->data;
    const float *g = p->grad->data;
    float wd = p->decay ? (float)o->weight_decay : 0.0f;
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    float c1 = (float)(1.0 - pow(o->beta1, (double)t)), c2 = (float)(1.0 - pow(o->beta2, (double)t));
    int64_t i, n = p->value->numel;
    for (i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
    }
}

void tsq__optimizer_update(tsq_net *net)
{
    tsq__optimizer *o = &net->opt;
    float lr = (float)tsq__schedule_lr(o, o->t);
    int32_t i;
    for (i = 0; i < net->nparams; i++) {
        if (!net->layers[net->param_layer[i]]->trainable || net->params[i]->frozen)
            continue;
        if (o->kind == TSQ__OPT_SGD)
            sgd_update(o, lr, net->params[i], o->m ? o->m[i] : NULL);
        else
            adam_update(o, lr, o->t + 1, net->params[i], o->m[i], o->v[i]);
    }
    o->t++;
}

tsq_status tsq__optimizer_copy(tsq_net *dst, const tsq_net *src)
{
    tsq_status st;
    int32_t i;
    tsq__optimizer_free_state(dst);
    dst->opt = src->opt;
    dst->opt.m = dst->opt.v = NULL;
    dst->opt.nstate = 0;
    if (!src->opt.m)
        return TSQ_OK;
    st = tsq__optimizer_prepare(dst, "net_clone");
    if (st != TSQ_OK)
        return st;
    for (i = 0; i < dst->opt.nstate; i++) {
        size_t bytes = (size_t)dst->params[i]->value->numel * sizeof(float);
        memcpy(dst->opt.m[i], src->opt.m[i], bytes);
        if (src->opt.v)
            memcpy(dst->opt.v[i], src->opt.v[i], bytes);
    }
    return TSQ_OK;
}

static int in_range(double v, double lo, double hi)
{
    return v >= lo && v <= hi;
}

static void set_common(tsq_net *net, int32_t kind, double lr, double wd)
{
    tsq__optimizer_free_state(net);
    net->opt.kind = kind;
    net->opt.lr = lr;
    net->opt.weight_decay = wd;
    net->opt.schedule = TSQ_LR_CONSTANT;
    net->opt.t = 0;
}

tsq_status tsq_net_set_optimizer_sgd(tsq_net *net, double lr, double momentum,
                                     int32_t nesterov, double weight_decay)
{
    static const char *where = "net_set_optimizer_sgd";
    if (!net)
        return TSQ_ERR_NULL;
    if (!(lr > 0.0 && lr <= 1e3) || !in_range(momentum, 0.0, 0.999999) ||
        !in_range(weight_decay, 0.0, 1.0) || (nesterov != 0 && nesterov != 1) ||
        (nesterov && momentum <= 0.0))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                         "%s: lr %g (0, 1e3], momentum %g [0, 1), nesterov %d (0/1, needs "
                         "momentum), weight decay %g [0, 1]: out of range",
                         where, lr, momentum, (int)nesterov, weight_decay);
    set_common(net, TSQ__OPT_SGD, lr, weight_decay);
    net->opt.momentum = momentum;
    net->opt.nesterov = nesterov;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_set_optimizer_adam(tsq_net *net, double lr, double beta1, double beta2,
                                      double eps, double weight_decay)
{
    static const char *where = "net_set_optimizer_adam";
    if (!net)
        return TSQ_ERR_NULL;
    if (!(lr > 0.0 && lr <= 1e3) || !in_range(beta1, 0.0, 0.999999) ||
        !in_range(beta2, 0.0, 0.999999999) || !(eps > 0.0 && eps <= 1.0) ||
        !in_range(weight_decay, 0.0, 1.0))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                         "%s: lr %g (0, 1e3], beta1 %g, beta2 %g [0, 1), eps %g (0, 1], weight "
                         "decay %g [0, 1]: out of range",
                         where, lr, beta1, beta2, eps, weight_decay);
    set_common(net, TSQ__OPT_ADAM, lr, weight_decay);
    net->opt.beta1 = beta1;
    net->opt.beta2 = beta2;
    net->opt.eps = eps;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_update(tsq_net *net)
{
    static const char *where = "net_update";
    tsq_status st;
    int32_t i;
    if (!net)
        return TSQ_ERR_NULL;
    if (net->opt.kind == TSQ__OPT_NONE)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no optimiser set", where);
    for (i = 0; i < net->nparams; i++)
        if (!tsq__all_finite(net->params[i]->grad->data, net->params[i]->grad->numel))
            return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                             "%s: the gradient of '%s' of layer %d is NaN or Inf", where,
                             net->params[i]->name, (int)net->param_layer[i]);
    st = tsq__optimizer_prepare(net, where);
    if (st != TSQ_OK)
        return st;
    tsq__optimizer_update(net);
    tsq__clear(&net->obj);
    return TSQ_OK;
}
