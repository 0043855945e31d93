/* Softmax cross-entropy, averaged over the batch:
 *   loss = -(1/N) sum_i log softmax(z_i)[y_i]
 *        = (1/N) sum_i (logsumexp(z_i) - z_i[y_i]),
 *   d loss / d z_i = (softmax(z_i) - onehot(y_i)) / N.
 * The log-sum-exp subtracts the row maximum first and sums in double. */
#include "nn_internal.h"

#include <math.h>

/* Distillation from a teacher's logits t (docs/training-loop.md):
 *   loss = (1 - w) CE(z, y) + w T^2 (1/N) sum_i KL(softmax(t_i/T) || softmax(z_i/T)),
 *   d loss / d z_i = (1 - w) dCE + w T (softmax(z_i/T) - softmax(t_i/T)) / N.
 * Scales the cross-entropy's loss and gradient already in *loss and dlogits
 * and adds the soft-target term. */
void tsq__distill_add(const float *logits, const float *teacher, int64_t batch,
                      int64_t classes, double T, double w, double *loss, float *dlogits)
{
    double total = 0.0;
    int64_t i, k;
    for (i = 0; i < batch; i++) {
        const float *z = logits + i * classes, *t = teacher + i * classes;
        double zmax = z[0], tmax = t[0], zs = 0, ts = 0, zl, tl, kl = 0;
        for (k = 1; k < classes; k++) {
            zmax = z[k] > zmax ? z[k] : zmax;
            tmax = t[k] > tmax ? t[k] : tmax;
        }
        for (k = 0; k < classes; k++) {
            zs += exp(((double)z[k] - zmax) / T);
            ts += exp(((double)t[k] - tmax) / T);
        }
        zl = zmax / T + log(zs); /* log-sum-exp of z/T */
        tl = tmax / T + log(ts);
        for (k = 0; k < classes; k++) {
            double lp = (double)z[k] / T - zl, lq = (double)t[k] / T - tl, q = exp(lq);
            kl += q * (lq - lp);
            if (dlogits)
                dlogits[i * classes + k] =
                    (float)((1.0 - w) * dlogits[i * classes + k] +
                            w * T * (exp(lp) - q) / (double)batch);
        }
        total += kl;
    }
    *loss = (1.0 - w) * *loss + w * T * T * total / (double)batch;
}

void tsq__softmax_xent(const float *logits, const int32_t *labels, int64_t batch,
                       int64_t classes, double *loss, int64_t *correct, int32_t *pred,
                       float *dlogits)
{
    double total = 0.0;
    int64_t hits = 0, i, k;
    for (i = 0; i < batch; i++) {
        const float *z = logits + i * classes;
        double sum = 0.0, lse;
        int64_t arg = 0;
        for (k = 1; k < classes; k++)
            if (z[k] > z[arg])
                arg = k;
        for (k = 0; k < classes; k++)
            sum += exp((double)z[k] - (double)z[arg]);
        lse = (double)z[arg] + log(sum);
        if (labels) {
            total += lse - (double)z[labels[i]];
            hits += arg == labels[i];
        }
        if (pred)
            pred[i] = (int32_t)arg;
        if (dlogits) {
            float *d = dlogits + i * classes;
            for (k = 0; k < classes; k++)
                d[k] = (float)(exp((double)z[k] - lse) / (double)batch);
            d[labels[i]] -= (float)(1.0 / (double)batch);
        }
    }
    if (loss)
        *loss = total / (double)batch;
    if (correct)
        *correct = hits;
}

tsq_status tsq_nn_softmax_cross_entropy(tsq_context *ctx, const tsq_tensor *logits,
                                        const int32_t *labels, int64_t n, double *loss,
                                        int64_t *correct, tsq_tensor *dlogits)
{
    static const char *where = "nn_softmax_cross_entropy";
    tsq_status st;
    int64_t N, K, i;
    if (!ctx)
        return TSQ_ERR_NULL;
    st = tsq__expect_dtype(&ctx->obj, where, "logits", logits, TSQ_DTYPE_F32);
    if (st != TSQ_OK)
        return st;
    if (!labels)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: labels is NULL", where);
    if (logits->ndim != 2)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: logits must be (N, K), has %d dimensions",
                         where, (int)logits->ndim);
    N = logits->shape[0];
    K = logits->shape[1];
    if (n != N)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: %lld labels for a batch of %lld",
                         where, (long long)n, (long long)N);
    for (i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= K)
            return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                             "%s: label %d of sample %lld is outside 0..%lld", where,
                             (int)labels[i], (long long)i, (long long)K - 1);
    if (dlogits) {
        st = tsq__expect_dtype(&ctx->obj, where, "dlogits", dlogits, TSQ_DTYPE_F32);
        if (st != TSQ_OK)
            return st;
        if (dlogits->numel != logits->numel)
            return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                             "%s: dlogits has %lld elements, logits %lld", where,
                             (long long)dlogits->numel, (long long)logits->numel);
    }
    if (!tsq__all_finite(logits->data, logits->numel))
        return tsq__fail(&ctx->obj, TSQ_ERR_NOT_FINITE, "%s: logits hold NaN or Inf", where);
    tsq__softmax_xent(logits->data, labels, N, K, loss, correct, NULL,
                      dlogits ? (float *)dlogits->data : NULL);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
