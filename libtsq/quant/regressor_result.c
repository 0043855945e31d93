/*
 * The results of a fit (tsq_regressor_result, the history, the
 * per-channel objectives) and tsq_fit_transform, which runs the pass
 * protocol on in-memory data.
 */
#include "regressor_fit.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

/* Two tensors whose elements share memory (the same tensor twice, or two
 * wraps of one buffer): writing one would overwrite the other. */
static int overlap(const tsq_tensor *a, const tsq_tensor *b)
{
    const unsigned char *pa = a->data, *pb = b->data;
    size_t na = (size_t)tsq__tensor_bytes(a);
    size_t nb = (size_t)tsq__tensor_bytes(b);
    return a == b || (na && nb && pa < pb + nb && pb < pa + na);
}

/* C is the layer's width as the caller's other arguments give it (`c_from`
 * names where it came from, for the messages). */
static tsq_status check_outputs(tsq_regressor *reg, const char *where, tsq_tensor *W_out,
                                tsq_tensor *alpha_out, tsq_tensor *b_out, int64_t d, int64_t C,
                                const char *c_from)
{
    tsq_status st;
    if (!W_out || !alpha_out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         W_out ? "alpha_out" : "W_out");
    st = tsq__expect_dtype(&reg->obj, where, "W_out", W_out, TSQ_DTYPE_I8);
    if (st == TSQ_OK && (W_out->ndim != 2 || W_out->shape[0] != d || W_out->shape[1] != C))
        st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                       "%s: W_out must be d x C = %lld x %lld (C from %s), got %s%lld x %lld",
                       where, (long long)d, (long long)C, c_from,
                       W_out->ndim != 2 ? "a non-matrix " : "", (long long)W_out->shape[0],
                       (long long)(W_out->ndim > 1 ? W_out->shape[1] : 1));
    if (st == TSQ_OK)
        st = tsq__expect_dtype(&reg->obj, where, "alpha_out", alpha_out, TSQ_DTYPE_F32);
    if (st == TSQ_OK && (alpha_out->ndim != 1 || alpha_out->shape[0] != C))
        st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                       "%s: alpha_out must be a vector of C = %lld (C from %s)", where,
                       (long long)C, c_from);
    if (st == TSQ_OK && b_out) {
        st = tsq__expect_dtype(&reg->obj, where, "b_out", b_out, TSQ_DTYPE_F32);
        if (st == TSQ_OK && (b_out->ndim != 1 || b_out->shape[0] != C))
            st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                           "%s: b_out must be a vector of C = %lld (C from %s)", where,
                           (long long)C, c_from);
    }
    if (st == TSQ_OK && (overlap(W_out, alpha_out) || (b_out && overlap(W_out, b_out))))
        st = tsq__fail(&reg->obj, TSQ_ERR_INVALID, "%s: W_out shares memory with %s", where,
                       overlap(W_out, alpha_out) ? "alpha_out" : "b_out");
    if (st == TSQ_OK && b_out && overlap(alpha_out, b_out))
        st = tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                       "%s: alpha_out and b_out share memory (they need distinct tensors)",
                       where);
    return st;
}

/* The layer's width C: from Y, else P, else W_init, else alpha_out (W_out
 * is what is checked against it, so a wrong W_out is named as such). */
static int64_t layer_width(const tsq_tensor *Y, const tsq_tensor *P, const tsq_tensor *W_init,
                           const tsq_tensor *alpha_out, const tsq_tensor *W_out,
                           const char **from)
{
    const tsq_tensor *src[4] = {Y, P, W_init, alpha_out};
    static const char *const names[4] = {"Y", "P", "W_init", "alpha_out"};
    int i;
    for (i = 0; i < 4; i++)
        if (src[i] && src[i]->ndim == (i == 3 ? 1 : 2)) {
            *from = names[i];
            return src[i]->shape[src[i]->ndim - 1];
        }
    *from = "W_out";
    return W_out->ndim == 2 ? W_out->shape[1] : 0;
}

static double best_total(const fit_state *f)
{
    double s = 0.0;
    int64_t c;
    for (c = 0; c < f->C; c++)
        s += f->best_obj[c];
    return s;
}

static void write_results(const fit_state *f, tsq_tensor *W_out, tsq_tensor *alpha_out,
                          tsq_tensor *b_out, double *objective)
{
    int64_t d = f->d, C = f->C, c, j;
    int8_t *w = W_out->data;
    float *a = alpha_out->data, *b = b_out ? b_out->data : NULL;
    for (c = 0; c < C; c++) {
        for (j = 0; j < d; j++)
            w[j * C + c] = f->best_w[c * d + j];
        a[c] = (float)f->best_alpha[c];
        if (b)
            b[c] = (float)f->best_b[c];
    }
    if (objective)
        *objective = best_total(f);
}

/* alpha and b are computed in double: with inputs of extreme magnitude
 * (e.g. denormal X, where alpha ~ 1/|X|) they may not fit in float. Refuse
 * rather than hand out an infinite scale. */
static tsq_status check_results_fit_float(tsq_regressor *reg, const char *where)
{
    const fit_state *f = reg->fit;
    int64_t c;
    for (c = 0; c < f->C; c++)
        if (!(fabs(f->best_alpha[c]) <= FLT_MAX) || !(fabs(f->best_b[c]) <= FLT_MAX))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                             "%s: channel %lld: alpha %g or b %g overflows float (inputs of "
                             "extreme magnitude?)",
                             where, (long long)c, f->best_alpha[c], f->best_b[c]);
    return TSQ_OK;
}


tsq_status tsq_regressor_result(tsq_regressor *reg, tsq_tensor *W_out, tsq_tensor *alpha_out,
                                tsq_tensor *b_out, double *objective)
{
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!fit_done(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "regressor_result: no finished fit");
    st = check_outputs(reg, "regressor_result", W_out, alpha_out, b_out, reg->fit->d,
                       reg->fit->C, "the fit");
    if (st == TSQ_OK)
        st = check_results_fit_float(reg, "regressor_result");
    if (st != TSQ_OK)
        return st;
    write_results(reg->fit, W_out, alpha_out, b_out, objective);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_history(const tsq_regressor *reg, int32_t series, double *values,
                                 int32_t capacity, int32_t *count)
{
    const fit_state *f;
    const double *src;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!count)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_history: count is NULL");
    f = reg->fit;
    switch (series) {
    case TSQ_HISTORY_OBJECTIVE: src = f ? f->h_obj : NULL; break;
    case TSQ_HISTORY_BEST: src = f ? f->h_best : NULL; break;
    case TSQ_HISTORY_RELAXED: src = f ? f->h_relax : NULL; break;
    case TSQ_HISTORY_LAMBDA: src = f ? f->h_lambda : NULL; break;
    default:
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_history: unknown series %d", (int)series);
    }
    *count = f ? f->h_count : 0;
    if (!values || *count == 0)
        return TSQ_OK;
    if (capacity < *count)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_history: capacity %d < %d entries", (int)capacity,
                         (int)*count);
    memcpy(values, src, (size_t)*count * sizeof values[0]);
    return TSQ_OK;
}

tsq_status tsq_regressor_channel_objectives(const tsq_regressor *reg, double *out, int64_t count)
{
    if (!reg)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_channel_objectives: out is NULL");
    if (!fit_done(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "regressor_channel_objectives: no finished fit");
    if (count != reg->fit->C)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_channel_objectives: count %lld, the layer has C = %lld",
                         (long long)count, (long long)reg->fit->C);
    memcpy(out, reg->fit->best_obj, (size_t)count * sizeof out[0]);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* tsq_fit_transform                                                   */
/* ------------------------------------------------------------------ */

tsq_status tsq_fit_transform(tsq_regressor *reg, const tsq_tensor *X, const tsq_tensor *Y,
                             const tsq_tensor *W_init, const tsq_tensor *P, tsq_tensor *W_out,
                             tsq_tensor *alpha_out, tsq_tensor *b_out, double *objective)
{
    const char *where = "fit_transform";
    fit_state *fresh = NULL, *previous;
    int64_t d, C;
    const char *c_from = "W_out";
    int32_t done = 0;
    batch bt;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: a streamed fit is in progress on this regressor", where);
    if (!X)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: X is NULL", where);
    if (!W_out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: W_out is NULL", where);
    if (X->ndim != 2)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X has %d dimensions, expected 2 (N x d)",
                         where, (int)X->ndim);
    d = X->shape[1];
    C = layer_width(Y, P, W_init, alpha_out, W_out, &c_from);
    st = check_outputs(reg, where, W_out, alpha_out, b_out, d, C, c_from);
    if (st == TSQ_OK)
        st = tsq__reg_check_w_init(reg, where, W_init, d, C);
    if (st != TSQ_OK)
        return st;
    /* The batch checks read the new fit's channel quantizers: check with
     * it in place, and put the previous fit back if the data are refused. */
    st = tsq__reg_begin_fit(reg, where, d, C, W_init, P != NULL, &fresh);
    if (st != TSQ_OK)
        return st;
    previous = reg->fit;
    reg->fit = fresh;
    st = tsq__reg_check_batch(reg, where, X, Y, P, &bt);
    if (st == TSQ_OK && tsq__reg_cache_init(reg->obj.ctx, fresh, &bt) != TSQ_OK)
        st = tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY,
                       "%s: out of memory for the products kept across passes", where);
    if (st != TSQ_OK) {
        tsq__reg_fit_free(reg->obj.ctx, fresh);
        reg->fit = previous;
        return st;
    }
    tsq__reg_fit_free(reg->obj.ctx, previous); /* every pass brings bt's rows */
    while (!done) {
        tsq__reg_feed_rows(reg->fit, &bt);
        bt.p = NULL;
        st = tsq__reg_end_pass(reg, where, &done);
        if (st != TSQ_OK)
            return st; /* tsq__reg_end_pass abandoned the fit */
    }
    st = check_results_fit_float(reg, where);
    if (st != TSQ_OK)
        return st;
    write_results(reg->fit, W_out, alpha_out, b_out, objective);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}
