/* The caller-driven loop's calls on a net: the loss and its gradient
 * (cross-entropy, optionally mixed with a teacher's soft targets), the
 * train step, evaluation, and reading a layer's activations. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Loss, train step, evaluation                                         */
/* ------------------------------------------------------------------ */

/* The output must be a vector of K >= 1 scores per sample. */
static tsq_status classes(tsq_net *net, const char *where, int64_t *k)
{
    int32_t nd;
    const int64_t *s;
    char a[64];
    tsq__net_output_shape(net, &nd, &s);
    if (nd != 1)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: the output must be a vector of class scores per sample, is %s",
                         where, tsq__shape_str(a, sizeof a, nd, s));
    *k = s[0];
    return TSQ_OK;
}

static tsq_status check_labels(tsq_net *net, const char *where, const int32_t *labels,
                               int64_t n, int64_t batch, int64_t k)
{
    int64_t i;
    if (!labels)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: labels is NULL", where);
    if (n != batch)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: %lld labels for a batch of %lld",
                         where, (long long)n, (long long)batch);
    for (i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                             "%s: label %d of sample %lld is outside 0..%lld", where,
                             (int)labels[i], (long long)i, (long long)k - 1);
    return TSQ_OK;
}

static tsq_status check_params_finite(tsq_net *net, const char *where)
{
    int32_t i, j;
    for (i = 0; i < net->nlayers; i++) {
        const tsq_layer *l = net->layers[i];
        for (j = 0; j < l->nparams; j++)
            if (!tsq__all_finite(l->params[j].value->data, l->params[j].value->numel))
                return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                                 "%s: parameter '%s' of layer %d (%s) holds NaN or Inf", where,
                                 l->params[j].name, (int)i, l->ops->name);
        for (j = 0; j < l->nstates; j++)
            if (l->states[j].value->dtype == TSQ_DTYPE_F32 &&
                !tsq__all_finite(l->states[j].value->data, l->states[j].value->numel))
                return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                                 "%s: state '%s' of layer %d (%s) holds NaN or Inf", where,
                                 l->states[j].name, (int)i, l->ops->name);
    }
    return TSQ_OK;
}

static tsq_status check_grads_finite(tsq_net *net, const char *where)
{
    int32_t i;
    for (i = 0; i < net->nparams; i++)
        if (!tsq__all_finite(net->params[i]->grad->data, net->params[i]->grad->numel))
            return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                             "%s: the gradient of '%s' of layer %d is NaN or Inf; nothing updated",
                             where, net->params[i]->name, (int)net->param_layer[i]);
    return TSQ_OK;
}

/* Loss of the current output against labels, and its gradient in grad_a. */
static tsq_status loss_and_grad(tsq_net *net, const char *where, const int32_t *labels,
                                int64_t k, const float *teacher, double *loss,
                                int64_t *correct)
{
    const float *z = net->act[net->nlayers];
    double l;
    int64_t c;
    if (!tsq__all_finite(z, net->batch * k))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                         "%s: the network output holds NaN or Inf (diverged?)", where);
    tsq__softmax_xent(z, labels, net->batch, k, &l, &c, NULL, net->grad_a);
    if (teacher)
        tsq__distill_add(z, teacher, net->batch, k, net->kd_temperature, net->kd_weight, &l,
                         net->grad_a);
    if (!isfinite(l))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: the loss is not finite", where);
    if (loss)
        *loss = l;
    if (correct)
        *correct = c;
    return TSQ_OK;
}

tsq_status tsq_net_loss_backward(tsq_net *net, const int32_t *labels, int64_t n, double *loss,
                                 int64_t *correct)
{
    static const char *where = "net_loss_backward";
    tsq_status st;
    int64_t k = 0; /* set by classes(); gcc -O3 cannot see it */
    if (!net)
        return TSQ_ERR_NULL;
    if (!net->have_forward)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no forward since the net last changed",
                         where);
    st = classes(net, where, &k);
    if (st == TSQ_OK)
        st = check_labels(net, where, labels, n, net->batch, k);
    if (st == TSQ_OK)
        st = loss_and_grad(net, where, labels, k, NULL, loss, correct);
    if (st == TSQ_OK)
        st = tsq__net_backward(net, NULL);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

static tsq_status train_step(tsq_net *net, const char *where, const tsq_tensor *x,
                             const int32_t *labels, int64_t n, const tsq_tensor *teacher,
                             double *loss, int64_t *correct);

tsq_status tsq_net_train_step(tsq_net *net, const tsq_tensor *x, const int32_t *labels,
                              int64_t n, double *loss, int64_t *correct)
{
    return train_step(net, "train_step", x, labels, n, NULL, loss, correct);
}

tsq_status tsq_net_set_distillation(tsq_net *net, double temperature, double weight)
{
    if (!net)
        return TSQ_ERR_NULL;
    if (!(temperature >= 0.05 && temperature <= 100) || !(weight >= 0 && weight <= 1))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID,
                         "net_set_distillation: temperature %g must be in [0.05, 100] and "
                         "weight %g in [0, 1]", temperature, weight);
    net->kd_temperature = temperature;
    net->kd_weight = weight;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_train_step_distill(tsq_net *net, const tsq_tensor *x, const int32_t *labels,
                                      int64_t n, const tsq_tensor *teacher_logits, double *loss,
                                      int64_t *correct)
{
    static const char *where = "train_step_distill";
    if (!net)
        return TSQ_ERR_NULL;
    if (!teacher_logits)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: teacher_logits is NULL", where);
    if (net->kd_weight == 0 && net->kd_temperature == 0)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: call tsq_net_set_distillation first",
                         where);
    return train_step(net, where, x, labels, n, teacher_logits, loss, correct);
}

static tsq_status train_step(tsq_net *net, const char *where, const tsq_tensor *x,
                             const int32_t *labels, int64_t n, const tsq_tensor *teacher,
                             double *loss, int64_t *correct)
{
    tsq_status st;
    int64_t k = 0, N; /* k: set by classes() */
    if (!net)
        return TSQ_ERR_NULL;
    if (net->opt.kind == TSQ__OPT_NONE)
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: no optimiser set (call tsq_net_set_optimizer_sgd or _adam first)",
                         where);
    if (!x)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: x is NULL", where);
    if (net->nlayers == 0)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: the net has no layers", where);
    st = classes(net, where, &k);
    if (st == TSQ_OK)
        st = check_labels(net, where, labels, n, x->ndim >= 1 ? x->shape[0] : -1, k);
    if (st == TSQ_OK)
        st = check_params_finite(net, where);
    if (st == TSQ_OK)
        st = tsq__optimizer_prepare(net, where);
    if (st == TSQ_OK && teacher) {
        if (teacher->dtype != TSQ_DTYPE_F32)
            st = tsq__fail(&net->obj, TSQ_ERR_DTYPE, "%s: teacher_logits must be f32", where);
        else if (teacher->numel != n * k)
            st = tsq__fail(&net->obj, TSQ_ERR_SHAPE, "%s: teacher_logits has %lld elements, "
                           "not %lld x %lld", where, (long long)teacher->numel, (long long)n,
                           (long long)k);
        else if (!tsq__all_finite(teacher->data, teacher->numel))
            st = tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: teacher_logits hold NaN or Inf",
                           where);
    }
    if (st == TSQ_OK)
        st = tsq__net_forward(net, where, x, 1, &N);
    if (st == TSQ_OK)
        st = loss_and_grad(net, where, labels, k, teacher ? (const float *)teacher->data : NULL,
                           loss, correct);
    if (st == TSQ_OK)
        st = tsq__net_backward(net, NULL);
    if (st == TSQ_OK)
        st = check_grads_finite(net, where);
    if (st != TSQ_OK)
        return st;
    tsq__optimizer_update(net);
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_evaluate(tsq_net *net, const tsq_tensor *x, const int32_t *labels, int64_t n,
                            double *loss, int64_t *correct, int32_t *predictions)
{
    static const char *where = "evaluate";
    tsq_status st;
    int64_t k = 0, N; /* k: set by classes() */
    double l;
    int64_t c;
    if (!net)
        return TSQ_ERR_NULL;
    if (!x)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: x is NULL", where);
    if (net->nlayers == 0)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: the net has no layers", where);
    if (!labels && (loss || correct))
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: loss and correct need labels", where);
    st = classes(net, where, &k);
    if (st == TSQ_OK && labels)
        st = check_labels(net, where, labels, n, x->ndim >= 1 ? x->shape[0] : -1, k);
    if (st == TSQ_OK)
        st = check_params_finite(net, where);
    if (st == TSQ_OK)
        st = tsq__net_forward(net, where, x, 0, &N);
    if (st != TSQ_OK)
        return st;
    if (!tsq__all_finite(net->act[net->nlayers], N * k))
        return tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE, "%s: the network output holds NaN or Inf",
                         where);
    tsq__softmax_xent(net->act[net->nlayers], labels, N, k, &l, &c, predictions, NULL);
    if (loss)
        *loss = l;
    if (correct)
        *correct = c;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_layer_output(tsq_net *net, int32_t index, tsq_tensor *out)
{
    static const char *where = "net_layer_output";
    tsq_status st;
    int64_t m;
    if (!net)
        return TSQ_ERR_NULL;
    if (index < -1 || index >= net->nlayers)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: index %d is outside -1..%d", where,
                         (int)index, (int)net->nlayers - 1);
    if (!net->act || net->act_valid < index + 1)
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: no forward reached layer %d since the net last changed", where,
                         (int)index);
    st = tsq__expect_dtype(&net->obj, where, "out", out, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    m = index < 0 ? net->in_numel : net->layers[index]->out_numel;
    if (out->numel != net->batch * m)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE,
                         "%s: out has %lld elements; %lld samples of %lld are needed", where,
                         (long long)out->numel, (long long)net->batch, (long long)m);
    memcpy(out->data, net->act[index + 1], (size_t)out->numel * sizeof(float));
    tsq__clear(&net->obj);
    return TSQ_OK;
}

