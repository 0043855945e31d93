/*
 * The start of a fit and the validation of what it is fed: the fit
 * state's memory layout (two arenas laid out once: `work`, freed when the
 * fit is done, and `keep`, which stays queryable), the checks of W_init,
 * the output quantizer and every batch (X, Y, P), and tsq_regressor_begin.
 */
#include "regressor_fit.h"

#include "kernels/kernels_internal.h" /* the integer kernel's panel sizes */

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Fit state: two arenas, laid out once                                */
/* ------------------------------------------------------------------ */

void tsq__reg_fit_free(tsq_context *ctx, fit_state *f)
{
    if (!f)
        return;
    tsq__reg_cache_free(ctx, f);
    tsq__free(ctx, f->work);
    tsq__free(ctx, f->keep);
    tsq__free(ctx, f);
}



/* Lays the arrays out from `base` (or, with base NULL, only measures).
 * Sizes were checked against overflow by the caller. */
#define CARVE(field, count)                                                   \
    do {                                                                      \
        size_t at_ = align64(off);                                            \
        off = at_ + (size_t)(count) * sizeof *(f->field);                     \
        if (base)                                                             \
            f->field = (void *)(base + at_);                                  \
    } while (0)

/* What tsq__gemm_vnni needs of the CPU (kernels/dispatch.c checks the same). */
#define VNNI_NEEDS                                                                             \
    (TSQ_CPU_AVX2 | TSQ_CPU_FMA | TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW | TSQ_CPU_AVX512VL |     \
     TSQ_CPU_AVX512VNNI)

#define AVX512_NEEDS (TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW | TSQ_CPU_AVX512VL)

/* The integer products' right operand: X's piece (K = chunk, N = d) or the
 * weights (K = d, N = C) in the kernel's panels. */
static size_t dec_bytes(fit_state *f)
{
    size_t a = (size_t)tsq__panels(f->d) * (size_t)tsq__k4n(f->chunk) * 64;
    size_t b = (size_t)tsq__panels(f->C) * (size_t)tsq__k4n(f->d) * 64;
    size_t y = (size_t)tsq__panels(f->C) * (size_t)tsq__k4n(f->chunk) * 64;
    f->decy = (int64_t)align64(a);
    return (align64(a) + y) > b ? align64(a) + y : b;
}

static size_t layout_work(fit_state *f, unsigned char *base, int have_w_init)
{
    size_t off = 0, d = (size_t)f->d, C = (size_t)f->C, n = (size_t)f->chunk;
    size_t gf = d * d > d * C ? d * d : d * C;
    CARVE(q, C);
    CARVE(gram, d * d);
    CARVE(colsum, d);
    CARVE(g0, d * C);
    CARVE(z0sum, C);
    CARVE(z0sq, C);
    CARVE(ysum, C);
    CARVE(w_init, have_w_init ? d * C : 0);
    CARVE(obj, C);
    CARVE(g, d * C);
    CARVE(zsum, C);
    CARVE(zsq, C);
    CARVE(zcost, C);
    CARVE(lin, C);
    CARVE(w, C * d);
    CARVE(alpha, C);
    CARVE(b, C);
    CARVE(af, C);
    CARVE(bf, C);
    CARVE(wf, d * C);
    CARVE(qeps, C);
    CARVE(qinv, C);
    CARVE(qtop, C);
    CARVE(qdelta2, C);
    CARVE(zlo, C * (size_t)f->nbins);
    CARVE(zhi, C * (size_t)f->nbins);
    CARVE(yc, n * C);
    CARVE(t, C * d);
    CARVE(r, C * d * 2);
    CARVE(w_try, C * d);
    CARVE(tt, d * C);
    CARVE(wd, d * C);
    CARVE(dw, 64 * C);
    CARVE(alpha_try, C);
    CARVE(sbest, C);
    CARVE(alpha_prev, C);
    CARVE(b_prev, C);
    CARVE(changes, C);
    CARVE(count, C);
    CARVE(tries, C);
    CARVE(active, C);
    CARVE(wmw, C);
    CARVE(part, (size_t)MAX_BLOCKS * PART_STRIDE * C);
    CARVE(hist, f->opt.polish ? C * (size_t)f->nbins * (size_t)f->hbins : 0);
    CARVE(hlo, C);
    CARVE(hscale, C);
    CARVE(ubar, C);
    CARVE(wlo, C * (size_t)f->nw);
    CARVE(wscale, C);
    CARVE(wedge, C * (size_t)f->nw);
    CARVE(wused, C * (size_t)f->nw);
    CARVE(ph, C);
    CARVE(pg, C);
    CARVE(hscratch, f->opt.polish ? C * 5 * (size_t)f->hbins : 0);
    CARVE(cand, (size_t)TSQ__POLISH_CAND * C);
    CARVE(cad, (size_t)TSQ__POLISH_CAND * C);
    CARVE(cbd, (size_t)TSQ__POLISH_CAND * C);
    CARVE(caf, (size_t)TSQ__POLISH_CAND * C);
    CARVE(cbf, (size_t)TSQ__POLISH_CAND * C);
    CARVE(moved, C);
    CARVE(xf, n * d);
    CARVE(vf, n * C);
    CARVE(zf, n * C);
    CARVE(gf, gf);
    CARVE(xd, (n < DOUBLE_ROWS ? n : DOUBLE_ROWS) * d);
    CARVE(td, n * C);
    CARVE(xt, f->vnni ? d * n : 0);
    CARVE(dec, f->vnni ? dec_bytes(f) : 0);
    CARVE(accy, f->vnni ? d * C : 0);
    return off;
}

static size_t layout_keep(fit_state *f, unsigned char *base)
{
    size_t off = 0, d = (size_t)f->d, C = (size_t)f->C, h = (size_t)f->opt.rounds + 1 + (size_t)f->opt.polish;
    CARVE(best_w, C * d);
    CARVE(best_alpha, C);
    CARVE(best_b, C);
    CARVE(best_obj, C);
    CARVE(h_obj, h);
    CARVE(h_best, h);
    CARVE(h_relax, h);
    CARVE(h_lambda, h);
    return off;
}

#undef CARVE

/* Rejects sizes whose arrays could overflow size_t (or not fit in the
 * int-sized dimensions BLAS takes). */
static int sizes_ok(int64_t d, int64_t C, int64_t chunk)
{
    const int64_t lim = (int64_t)1 << 30;
    size_t x;
    if (d > lim || C > lim)
        return 0;
    return tsq__mul_size((size_t)d, (size_t)d, &x) && x <= SIZE_MAX / 64 &&
           tsq__mul_size((size_t)d, (size_t)C, &x) && x <= SIZE_MAX / 64 &&
           tsq__mul_size((size_t)chunk, (size_t)(d > C ? d : C), &x) && x <= SIZE_MAX / 64 &&
           d * C < lim * 2;
}

/* ------------------------------------------------------------------ */
/* begin                                                               */
/* ------------------------------------------------------------------ */

tsq_status tsq__reg_check_matrix(tsq_regressor *reg, const char *where, const char *name,
                               const tsq_tensor *t, int64_t rows, int64_t cols)
{
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        if (t->ndim != 2)
            return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: %s has %d dimensions, expected 2",
                             where, name, (int)t->ndim);
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: %s is %lld x %lld, expected %lld x %lld",
                         where, name, (long long)t->shape[0], (long long)t->shape[1],
                         (long long)rows, (long long)cols);
    }
    return TSQ_OK;
}

tsq_status tsq__reg_check_w_init(tsq_regressor *reg, const char *where, const tsq_tensor *W,
                               int64_t d, int64_t C)
{
    tsq_status st;
    if (!W)
        return TSQ_OK;
    st = tsq__expect_dtype(&reg->obj, where, "W_init", W, TSQ_DTYPE_F32);
    if (st == TSQ_OK)
        st = tsq__reg_check_matrix(reg, where, "W_init (d x C)", W, d, C);
    if (st == TSQ_OK && !tsq__all_finite(W->data, W->numel))
        st = tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: W_init holds NaN or Inf", where);
    return st;
}

/* The quantizer is needed by the quantized loss, and by the linear loss
 * when its target is delta * Y. */
static tsq_status check_quantizer(tsq_regressor *reg, const char *where, int64_t C, int needed)
{
    if (!needed)
        return TSQ_OK;
    if (!reg->q_set)
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: no output quantizer (tsq_regressor_set_quantizer or "
                         "tsq_regressor_set_levels)%s", where,
                         reg->opt.loss == TSQ_LOSS_LINEAR ? "; the linear loss needs one when "
                                                            "neither P nor W_init is given" : "");
    if (reg->q_channels && reg->q_channels != C)
        return tsq__fail(&reg->obj, TSQ_ERR_STATE,
                         "%s: the output quantizer has %lld channels, the layer %lld outputs",
                         where, (long long)reg->q_channels, (long long)C);
    return TSQ_OK;
}

/* z0 (and the linear loss's target): P, else X W_init, else delta Y. */
static int32_t pick_target(int with_preact, int have_w_init)
{
    if (with_preact)
        return TARGET_PREACT;
    return have_w_init ? TARGET_XW : TARGET_CODES;
}

static int needs_quantizer(const fit_options *o, int32_t target)
{
    return o->loss == TSQ_LOSS_QUANTIZED || target == TARGET_CODES;
}

void tsq__reg_reset_pass_sums(fit_state *f)
{
    size_t C = (size_t)f->C;
    f->rows = 0.0;
    memset(f->obj, 0, C * sizeof f->obj[0]);
    memset(f->g, 0, C * (size_t)f->d * sizeof f->g[0]);
    memset(f->zsum, 0, C * sizeof f->zsum[0]);
    memset(f->zsq, 0, C * sizeof f->zsq[0]);
    memset(f->zcost, 0, C * sizeof f->zcost[0]);
    memset(f->cand, 0, C * TSQ__POLISH_CAND * sizeof f->cand[0]);
    if (f->pstage == POLISH_HIST || f->pstage == POLISH_WINDOW)
        memset(f->hist, 0, C * (size_t)f->nbins * (size_t)f->hbins * sizeof f->hist[0]);
}

/* Makes a new fit state in *out (reg->fit is left alone). */
tsq_status tsq__reg_begin_fit(tsq_regressor *reg, const char *where, int64_t d, int64_t C,
                            const tsq_tensor *W_init, int32_t with_preact, fit_state **out)
{
    tsq_context *ctx = reg->obj.ctx;
    fit_state *f;
    size_t work_bytes, keep_bytes;
    int64_t c;
    int32_t target = pick_target(with_preact, W_init != NULL);
    tsq_status st;

    if (d < 1 || C < 1)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                         "%s: d = %lld and C = %lld, need at least 1 input and 1 output", where,
                         (long long)d, (long long)C);
    if (!sizes_ok(d, C, reg->opt.batch_rows))
        return tsq__fail(&reg->obj, TSQ_ERR_OVERFLOW, "%s: d = %lld, C = %lld is too large",
                         where, (long long)d, (long long)C);
    st = tsq__reg_check_w_init(reg, where, W_init, d, C);
    if (st == TSQ_OK)
        st = check_quantizer(reg, where, C, needs_quantizer(&reg->opt, target));
    if (st != TSQ_OK)
        return st;

    f = tsq__calloc(ctx, 1, sizeof *f);
    if (!f)
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    f->d = d;
    f->C = C;
    f->opt = reg->opt;
    f->target = target;
    f->with_preact = with_preact;
    f->chunk = reg->opt.batch_rows;
    f->threads = (int32_t)ctx->threads;
    f->shares = 1;
    f->c1 = C;
    f->vnni = (ctx->cpu & VNNI_NEEDS) == VNNI_NEEDS;
    f->int_xw = f->vnni;
    f->avx512 = (ctx->cpu & AVX512_NEEDS) == AVX512_NEEDS;
    f->nbins = 1;
    for (c = 0; reg->q_set && c < (reg->q_channels ? reg->q_channels : 1); c++) {
        const tsq__outq *q = reg->q_channels ? &reg->q_channel[c] : &reg->q_tensor;
        if (q->maxcode + 1 > f->nbins)
            f->nbins = q->maxcode + 1;
    }
    f->hbins = TSQ__POLISH_CELLS / f->nbins < 16 ? 16 : TSQ__POLISH_CELLS / f->nbins;
    f->nw = f->nbins > 1 ? f->nbins - 1 : 1;
    f->fb = TSQ__POLISH_CELLS / (f->nw * f->nbins);
    if (f->fb < 8) /* too many codes for fine windows: the compass refines */
        f->fb = 0;
    work_bytes = layout_work(f, NULL, W_init != NULL);
    keep_bytes = layout_keep(f, NULL);
    f->work = tsq__alloc(ctx, work_bytes);
    f->keep = tsq__alloc(ctx, keep_bytes);
    if (!f->work || !f->keep) {
        tsq__reg_fit_free(ctx, f);
        return tsq__fail(&reg->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory for %llu bytes",
                         where, (unsigned long long)(work_bytes + keep_bytes));
    }
    memset(f->work, 0, work_bytes);
    memset(f->keep, 0, keep_bytes);
    layout_work(f, f->work, W_init != NULL);
    layout_keep(f, f->keep);
    if (!W_init)
        f->w_init = NULL;
    else
        memcpy(f->w_init, W_init->data, (size_t)(d * C) * sizeof(float));
    for (c = 0; c < C; c++) {
        if (reg->q_set) {
            f->q[c] = reg->q_channels ? reg->q_channel[c] : reg->q_tensor;
            f->qeps[c] = f->q[c].eps;
            f->qinv[c] = f->q[c].inv_delta;
            f->qtop[c] = (float)f->q[c].maxcode;
            f->qdelta2[c] = f->q[c].delta * f->q[c].delta;
        }
        f->best_obj[c] = HUGE_VAL;
    }
    f->status = FIT_RUNNING;
    f->pass = 0;
    *out = f;
    return TSQ_OK;
}

tsq_status tsq_regressor_begin(tsq_regressor *reg, int64_t d, int64_t C,
                               const tsq_tensor *W_init, int32_t with_preact)
{
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (with_preact != 0 && with_preact != 1)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "regressor_begin: with_preact is %d, must be 0 or 1", (int)with_preact);
    fit_state *f = NULL;
    st = tsq__reg_begin_fit(reg, "regressor_begin", d, C, W_init, with_preact, &f);
    if (st != TSQ_OK)
        return st;
    /* The shares split the solves of the quantized loss's passes; the
     * linear loss solves in pass 0 alone, so every share solves it all. */
    f->share = reg->share;
    f->shares = reg->shares;
    if (f->opt.loss == TSQ_LOSS_QUANTIZED)
        tsq__reg_share_range(C, f->share, f->shares, &f->c0, &f->c1);
    tsq__reg_fit_free(reg->obj.ctx, reg->fit);
    reg->fit = f;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Validation of a batch                                               */
/* ------------------------------------------------------------------ */



static tsq_status check_codes(tsq_regressor *reg, const char *where, const fit_state *f,
                              const tsq_tensor *Y)
{
    int64_t i, C = f->C;
    for (i = 0; i < Y->numel; i++) {
        double v = Y->dtype == TSQ_DTYPE_U8 ? (double)((const uint8_t *)Y->data)[i]
                                            : (double)((const float *)Y->data)[i];
        int32_t top = f->q[i % C].maxcode;
        if (v != v || !isfinite(v))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: Y[%lld, %lld] is NaN or Inf",
                             where, (long long)(i / C), (long long)(i % C));
        if (v != floor(v) || v < 0.0)
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: Y[%lld, %lld] = %g is not a code (a non-negative integer)",
                             where, (long long)(i / C), (long long)(i % C), v);
        if (v > top)
            return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                             "%s: Y[%lld, %lld] = %g is above the top code %d of the %d-bit "
                             "output quantizer", where, (long long)(i / C), (long long)(i % C),
                             v, (int)top, (int)f->q[i % C].bits);
    }
    return TSQ_OK;
}

static tsq_status check_f32_finite(tsq_regressor *reg, const char *where, const char *name,
                                   const tsq_tensor *t)
{
    const float *v = t->data;
    int64_t i, cols = t->shape[1];
    for (i = 0; i < t->numel; i++)
        if (!isfinite(v[i]))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE, "%s: %s[%lld, %lld] is NaN or Inf",
                             where, name, (long long)(i / cols), (long long)(i % cols));
    return TSQ_OK;
}

static tsq_status check_x(tsq_regressor *reg, const char *where, const tsq_tensor *X, int64_t d)
{
    if (!X)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: X is NULL", where);
    if (X->dtype != TSQ_DTYPE_U8 && X->dtype != TSQ_DTYPE_F32)
        return tsq__fail(&reg->obj, TSQ_ERR_DTYPE, "%s: X must be u8 codes or f32", where);
    if (X->ndim != 2)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X has %d dimensions, expected 2 (N x d)",
                         where, (int)X->ndim);
    if (X->shape[1] != d)
        return tsq__fail(&reg->obj, TSQ_ERR_SHAPE, "%s: X has %lld columns, the layer d = %lld",
                         where, (long long)X->shape[1], (long long)d);
    if (X->dtype == TSQ_DTYPE_F32)
        return check_f32_finite(reg, where, "X", X);
    return TSQ_OK;
}

/* Checks (X, Y, P) against the fit's current pass and fills *bt. */
tsq_status tsq__reg_check_batch(tsq_regressor *reg, const char *where, const tsq_tensor *X,
                              const tsq_tensor *Y, const tsq_tensor *P, batch *bt)
{
    const fit_state *f = reg->fit;
    int64_t n;
    tsq_status st = check_x(reg, where, X, f->d);
    if (st != TSQ_OK)
        return st;
    n = X->shape[0];
    memset(bt, 0, sizeof *bt);
    bt->x = X->data;
    bt->xdt = X->dtype;
    bt->n = n;
    if (needs_codes(f)) {
        if (!Y)
            return tsq__fail(&reg->obj, TSQ_ERR_NULL, "%s: Y (the step-1 codes) is NULL", where);
        if (Y->dtype != TSQ_DTYPE_U8 && Y->dtype != TSQ_DTYPE_F32)
            return tsq__fail(&reg->obj, TSQ_ERR_DTYPE, "%s: Y must be u8 codes (or f32 codes)",
                             where);
        if (Y->ndim != 2 || Y->shape[0] != n || Y->shape[1] != f->C)
            return tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                             "%s: Y must be N x C = %lld x %lld (X has %lld rows), "
                             "got %s%lld x %lld",
                             where, (long long)n, (long long)f->C, (long long)n,
                             Y->ndim != 2 ? "a non-matrix " : "", (long long)Y->shape[0],
                             (long long)(Y->ndim > 1 ? Y->shape[1] : 1));
        st = check_codes(reg, where, f, Y);
        if (st != TSQ_OK)
            return st;
        bt->y = Y->data;
        bt->ydt = Y->dtype;
    }
    if (f->pass == 0 && f->with_preact) {
        if (!P)
            return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                             "%s: P is NULL, but the fit began with with_preact = 1", where);
        st = tsq__expect_dtype(&reg->obj, where, "P", P, TSQ_DTYPE_F32);
        if (st == TSQ_OK && (P->ndim != 2 || P->shape[0] != n || P->shape[1] != f->C))
            st = tsq__fail(&reg->obj, TSQ_ERR_SHAPE,
                           "%s: P must be N x C = %lld x %lld (X has %lld rows)", where,
                           (long long)n, (long long)f->C, (long long)n);
        if (st == TSQ_OK)
            st = check_f32_finite(reg, where, "P", P);
        if (st != TSQ_OK)
            return st;
        bt->p = P->data;
    } else if (f->pass == 0 && P) {
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID,
                         "%s: P given, but the fit began with with_preact = 0", where);
    }
    return TSQ_OK;
}

