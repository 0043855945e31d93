/* Learning-rate schedules over optimiser steps t (the number of updates
 * made so far). The host converts epochs to steps; libtsq never sees them. */
#include "nn_internal.h"

#include <math.h>

/* Far below INT64_MAX, so that counting updates (t + 1) cannot overflow. */
#define MAX_STEP_COUNT (INT64_C(1) << 62)

double tsq__schedule_lr(const tsq__optimizer *opt, int64_t t)
{
    switch (opt->schedule) {
    case TSQ_LR_STEP:
        return opt->lr * pow(opt->schedule_param, (double)(t / opt->schedule_steps));
    case TSQ_LR_COSINE: {
        double T = (double)opt->schedule_steps;
        double u = (double)(t < opt->schedule_steps ? t : opt->schedule_steps) / T;
        return opt->schedule_param +
               (opt->lr - opt->schedule_param) * 0.5 * (1.0 + cos(3.14159265358979323846 * u));
    }
    default:
        return opt->lr;
    }
}

tsq_status tsq_net_set_lr_schedule(tsq_net *net, int32_t kind, int64_t steps, double param)
{
    static const char *where = "net_set_lr_schedule";
    if (!net)
        return TSQ_ERR_NULL;
    if (net->opt.kind == TSQ__OPT_NONE)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: set an optimiser first", where);
    switch (kind) {
    case TSQ_LR_CONSTANT:
        break;
    case TSQ_LR_STEP:
        if (steps < 1 || !(param > 0.0 && param <= 1.0))
            return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                             "%s: step schedule needs steps >= 1 (got %lld) and gamma in (0, 1] "
                             "(got %g)", where, (long long)steps, param);
        break;
    case TSQ_LR_COSINE:
        if (steps < 1 || !(param >= 0.0 && param <= net->opt.lr))
            return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                             "%s: cosine schedule needs steps >= 1 (got %lld) and a final lr in "
                             "[0, %g] (got %g)", where, (long long)steps, net->opt.lr, param);
        break;
    default:
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: unknown schedule %d", where, (int)kind);
    }
    net->opt.schedule = kind;
    net->opt.schedule_steps = steps;
    net->opt.schedule_param = param;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_get_lr(const tsq_net *net, double *lr)
{
    if (!net || !lr)
        return TSQ_ERR_NULL;
    if (net->opt.kind == TSQ__OPT_NONE)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "net_get_lr: no optimiser set");
    *lr = tsq__schedule_lr(&net->opt, net->opt.t);
    return TSQ_OK;
}

tsq_status tsq_net_step_count(const tsq_net *net, int64_t *steps)
{
    if (!net || !steps)
        return TSQ_ERR_NULL;
    *steps = net->opt.t;
    return TSQ_OK;
}

tsq_status tsq_net_set_step_count(tsq_net *net, int64_t steps)
{
    if (!net)
        return TSQ_ERR_NULL;
    if (steps < 0 || steps > MAX_STEP_COUNT)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                         "net_set_step_count: %lld is outside 0..2^62", (long long)steps);
    net->opt.t = steps;
    tsq__clear(&net->obj);
    return TSQ_OK;
}
