/*
 * Quantization-aware weights for dense and conv2d layers (joint QAT,
 * docs/method.md §5): with TSQ_LAYER_OPT_QAT_WEIGHT_BITS = b > 0, every
 * forward replaces the shadow weights W (cout rows of k) by
 * Wq_c = a_c q_c, q_c in -m..m (m = 2^(b-1) - 1), per output channel c,
 * and backward uses Wq for dx and hands dL/dWq to W unchanged (the
 * straight-through estimator).
 *
 * Scales: ternary (m = 1) with TSQ_LAYER_OPT_QAT_SCALE = 0 is TWN's rule,
 * threshold t = 0.7 mean|W_c|, a_c = mean of |W_c| over |W_c| > t; with 1
 * the exact least-squares optimum: over the supports made of the j largest
 * |W_c|, the one maximising (sum of them)^2 / j, a_c = that sum / j. k-bit
 * (m > 1): a = max|W_c| / m, then 4 least-squares steps
 * q = clamp(round(W/a)), a = <W, q> / <q, q>.
 */
#include "nn_internal.h"

#include <stdlib.h>
#include <string.h>

#define QAT_ALPHA_MIN 1e-12f

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Ternary codes and scale of one row. `tmp` holds n floats. */
static float ternary_row(const float *w, int64_t n, int exact, int8_t *q, float *tmp)
{
    double sum = 0, kept = 0, best = -1;
    float t, a;
    int64_t i, cnt = 0;
    if (exact) {
        for (i = 0; i < n; i++)
            tmp[i] = fabsf(w[i]);
        qsort(tmp, (size_t)n, sizeof(float), cmp_desc);
        t = tmp[0];
        for (i = 0; i < n; i++) {
            double score;
            sum += tmp[i];
            score = sum * sum / (double)(i + 1);
            if (score > best) {
                best = score;
                kept = sum / (double)(i + 1);
                t = tmp[i];
                cnt = i + 1;
            }
        }
        a = (float)kept;
        /* the support is the cnt largest: |w| >= t (ties widen it, which
         * can only happen with equal magnitudes, whose scores tie too) */
        for (i = 0; i < n; i++)
            q[i] = fabsf(w[i]) >= t && t > 0 ? (w[i] > 0 ? 1 : -1) : 0;
        return a > QAT_ALPHA_MIN ? a : QAT_ALPHA_MIN;
    }
    for (i = 0; i < n; i++)
        sum += fabsf(w[i]);
    t = (float)(0.7 * sum / (double)n);
    for (i = 0; i < n; i++) {
        int keep = fabsf(w[i]) > t;
        q[i] = keep ? (w[i] > 0 ? 1 : -1) : 0;
        if (keep) {
            kept += fabsf(w[i]);
            cnt++;
        }
    }
    a = cnt ? (float)(kept / (double)cnt) : 0.0f;
    return a > QAT_ALPHA_MIN ? a : QAT_ALPHA_MIN;
}

static float kbit_row(const float *w, int64_t n, int32_t m, int8_t *q)
{
    float a = 0.0f;
    int64_t i;
    int it;
    for (i = 0; i < n; i++)
        a = fabsf(w[i]) > a ? fabsf(w[i]) : a;
    a = a / (float)m;
    if (!(a > QAT_ALPHA_MIN))
        a = QAT_ALPHA_MIN;
    for (it = 0; it <= 4; it++) {
        double wq = 0, qq = 0;
        for (i = 0; i < n; i++) {
            q[i] = tsq__lowbit_code(w[i], a, m);
            wq += (double)w[i] * q[i];
            qq += (double)q[i] * q[i];
        }
        if (it == 4 || qq == 0 || !(wq > 0))
            break;
        a = (float)(wq / qq);
    }
    return a > QAT_ALPHA_MIN ? a : QAT_ALPHA_MIN;
}

tsq_status tsq__qat_codes(const tsq__qat *qat, tsq_layer *l, const float *w, int64_t rows,
                          int64_t k, int8_t *codes, float *alpha)
{
    int32_t m = (1 << (qat->bits - 1)) - 1;
    int64_t r;
    float *tmp = NULL;
    if (m == 1 && qat->exact_scale) {
        tmp = tsq__alloc(l->obj.ctx, (size_t)k * sizeof(float));
        if (!tmp)
            return tsq__fail(&l->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", l->ops->name);
    }
    for (r = 0; r < rows; r++)
        alpha[r] = m == 1 ? ternary_row(w + r * k, k, qat->exact_scale, codes + r * k, tmp)
                          : kbit_row(w + r * k, k, m, codes + r * k);
    tsq__free(l->obj.ctx, tmp);
    return TSQ_OK;
}

const float *tsq__qat_weights(tsq__qat *qat, tsq_layer *l, const float *w, int64_t rows,
                              int64_t k, tsq_status *st)
{
    size_t n = (size_t)(rows * k);
    int64_t r, i;
    *st = TSQ_OK;
    if (!qat->bits)
        return w;
    if (qat->cap < n) {
        float *wq = tsq__alloc(l->obj.ctx, n * sizeof(float));
        int8_t *c = tsq__alloc(l->obj.ctx, n);
        float *a = tsq__alloc(l->obj.ctx, (size_t)rows * sizeof(float));
        if (!wq || !c || !a) {
            tsq__free(l->obj.ctx, wq);
            tsq__free(l->obj.ctx, c);
            tsq__free(l->obj.ctx, a);
            *st = tsq__fail(&l->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", l->ops->name);
            return NULL;
        }
        tsq__qat_free(qat, l);
        qat->wq = wq;
        qat->codes = c;
        qat->alpha = a;
        qat->cap = n;
    }
    if ((*st = tsq__qat_codes(qat, l, w, rows, k, qat->codes, qat->alpha)) != TSQ_OK)
        return NULL;
    for (r = 0; r < rows; r++)
        for (i = 0; i < k; i++)
            qat->wq[r * k + i] = qat->alpha[r] * (float)qat->codes[r * k + i];
    return qat->wq;
}

/* Drops the workspace pointers (the settings stay). */
static void forget_workspace(tsq__qat *qat)
{
    qat->wq = qat->alpha = NULL;
    qat->codes = NULL;
    qat->cap = 0;
}

void tsq__qat_free(tsq__qat *qat, tsq_layer *l)
{
    tsq__free(l->obj.ctx, qat->wq);
    tsq__free(l->obj.ctx, qat->codes);
    tsq__free(l->obj.ctx, qat->alpha);
    forget_workspace(qat);
}

tsq_status tsq__qat_clone_extra(const tsq_layer *src, tsq_layer *dst)
{
    (void)src;
    forget_workspace(tsq__layer_qat(dst)); /* they were the source's */
    return TSQ_OK;
}

void tsq__qat_destroy_extra(tsq_layer *l)
{
    tsq__qat_free(tsq__layer_qat(l), l);
}

tsq_status tsq__qat_set_option(tsq__qat *qat, tsq_layer *l, int32_t key, double value)
{
    if (key == TSQ_LAYER_OPT_QAT_WEIGHT_BITS) {
        if (value == 1)
            return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                             "layer_set_option: QAT weight bits must be 0 (off) or 2..8");
        qat->bits = (int32_t)value;
    } else if (key == TSQ_LAYER_OPT_QAT_SCALE) {
        qat->exact_scale = (int32_t)value;
    } else {
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_set_option: key %d does not apply to a %s layer", (int)key,
                         l->ops->name);
    }
    tsq__clear(&l->obj);
    return TSQ_OK;
}

tsq_status tsq__qat_get_option(const tsq__qat *qat, const tsq_layer *l, int32_t key,
                               double *value)
{
    if (key == TSQ_LAYER_OPT_QAT_WEIGHT_BITS)
        *value = qat->bits;
    else if (key == TSQ_LAYER_OPT_QAT_SCALE)
        *value = qat->exact_scale;
    else
        return tsq__fail(&l->obj, TSQ_ERR_INVALID,
                         "layer_get_option: key %d does not apply to a %s layer", (int)key,
                         l->ops->name);
    return TSQ_OK;
}
