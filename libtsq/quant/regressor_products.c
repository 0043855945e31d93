/*
 * The products u = X w that every later pass needs, kept across passes
 * when that is exact. tsq_fit_transform brings all the rows in one feed
 * per pass; with u8 codes X and integer weights every product is an
 * integer, exact in float while d maxcode max|S| <= 2^24. A pass then
 * recomputes only the channels whose w changed since the previous pass:
 * a few changed weights by adding their column of X (sparse), many by a
 * product over those channels only (dense). The polish's passes, whose w
 * is fixed, need no product at all. Because every value is exact, the
 * cached products are bit for bit those of a fresh product, so a fit
 * gives the same result with and without the cache.
 *
 * Also here: those products, and pass 0's X^T X, in integers on CPUs with
 * AVX-512 VNNI (the kernel of libtsq/kernels/gemm_vnni.c: u8 times int8
 * summed in int32, exact), where they are several times the speed of the
 * float BLAS.
 */
#include "regressor_fit.h"
#include "blas.h"

#include "kernels/kernels_internal.h" /* tsq__gemm_vnni and its panels */

#include <string.h>

/* A channel with at most d / share changed weights is updated by adding
 * columns of X (a few cycles per row and change); above that, a product
 * over its row of w is cheaper: about d / 4 cycles per row in float SIMD
 * (share 8), d / 64 with the integer kernel's 64 products per instruction
 * (share 128). */
#define SPARSE_SHARE_FLOAT 8
#define SPARSE_SHARE_INT 128

static int32_t alphabet_maxabs(const tsq__alphabet *a)
{
    int32_t i, m = 0;
    for (i = 0; i < a->count; i++) {
        int32_t v = a->values[i] < 0 ? -a->values[i] : a->values[i];
        if (v > m)
            m = v;
    }
    return m;
}

tsq_status tsq__reg_cache_init(tsq_context *ctx, fit_state *f, const batch *bt)
{
    const uint8_t *x = bt->x;
    int64_t i, n = bt->n * f->d, d = f->d, C = f->C, cap = C * (d / SPARSE_SHARE_FLOAT + 1);
    int32_t top = 0;
    size_t off = 0, at[6];
    unsigned char *base;
    if (bt->xdt != TSQ_DTYPE_U8 || f->opt.loss != TSQ_LOSS_QUANTIZED || bt->n < 1)
        return TSQ_OK;
    for (i = 0; i < n; i++)
        if (x[i] > top)
            top = x[i];
    if ((double)d * top * alphabet_maxabs(&f->opt.alphabet) > 16777216.0)
        return TSQ_OK; /* not exact in float: every pass computes its products */
    at[0] = off, off = align64(off + (size_t)(bt->n * C) * sizeof(float));
    at[1] = off, off = align64(off + (size_t)(C * d));
    at[2] = off, off = align64(off + (size_t)cap * sizeof(int32_t));
    at[3] = off, off = align64(off + (size_t)cap * sizeof(int32_t));
    at[4] = off, off = align64(off + (size_t)cap * sizeof(float));
    at[5] = off, off = align64(off + (size_t)C * sizeof(int32_t));
    base = tsq__alloc(ctx, off + (size_t)(d * C) * sizeof(float));
    /* Without it the fit would give the same result, only slower; but a
     * refused allocation is reported, never absorbed: a caller whose
     * allocator enforces a budget learns that this call needs more. */
    if (!base)
        return TSQ_ERR_NO_MEMORY;
    f->cache = base;
    f->vcache = (float *)(base + at[0]);
    f->wcache = (int8_t *)(base + at[1]);
    f->dj = (int32_t *)(base + at[2]);
    f->dc = (int32_t *)(base + at[3]);
    f->dv = (float *)(base + at[4]);
    f->dense = (int32_t *)(base + at[5]);
    f->wg = (float *)(base + off);
    f->vrows = bt->n;
    f->vvalid = 0;
    return TSQ_OK;
}

void tsq__reg_cache_free(tsq_context *ctx, fit_state *f)
{
    tsq__free(ctx, f->cache);
    f->cache = NULL;
    f->vcache = NULL;
    f->vvalid = 0;
}

int tsq__reg_products_plan(fit_state *f)
{
    int64_t c, j, k, d = f->d, C = f->C;
    int64_t share = f->int_xw ? SPARSE_SHARE_INT : SPARSE_SHARE_FLOAT;
    f->ndelta = 0;
    f->ndense = 0;
    if (!f->vvalid)
        return PRODUCTS_ALL;
    for (c = 0; c < C; c++) {
        const int8_t *w = f->w + c * d, *old = f->wcache + c * d;
        int64_t changed = 0;
        for (j = 0; j < d; j++)
            changed += w[j] != old[j];
        if (changed * share > d) {
            f->dense[f->ndense++] = (int32_t)c;
            continue;
        }
        for (j = 0; j < d && changed; j++)
            if (w[j] != old[j]) {
                f->dj[f->ndelta] = (int32_t)j;
                f->dc[f->ndelta] = (int32_t)c;
                f->dv[f->ndelta++] = (float)(w[j] - old[j]);
                changed--;
            }
    }
    if (f->ndense * 2 > C) { /* most channels moved: one product over all */
        f->ndense = f->ndelta = 0;
        return PRODUCTS_ALL;
    }
    if (f->int_xw && f->ndense)
        tsq__reg_panels_weights(f->w, d, f->dense, f->ndense, f->dec);
    else
        for (j = 0; j < d; j++)
            for (k = 0; k < f->ndense; k++)
                f->wg[j * f->ndense + k] = f->wf[j * C + f->dense[k]];
    return f->ndelta || f->ndense ? PRODUCTS_UPDATE : PRODUCTS_NONE;
}

void tsq__reg_panels_codes(const uint8_t *x, int64_t n, int64_t d, int64_t p0, int64_t p1,
                           int8_t *dec)
{
    int64_t k4n = tsq__k4n(n), p, q, i, l;
    for (p = p0; p < p1; p++)
        for (q = 0; q < k4n; q++) {
            int8_t *out = dec + (p * k4n + q) * 64;
            for (i = 0; i < 4; i++) {
                int64_t kk = 4 * q + i;
                for (l = 0; l < 16; l++) {
                    int64_t jj = 16 * p + l;
                    out[l * 4 + i] = kk < n && jj < d ? (int8_t)x[kk * d + jj] : 0;
                }
            }
        }
}

void tsq__reg_panels_weights(const int8_t *w, int64_t d, const int32_t *list, int64_t count,
                             int8_t *dec)
{
    int64_t k4n = tsq__k4n(d), p, q, i, l, np = tsq__panels(count);
    for (p = 0; p < np; p++)
        for (l = 0; l < 16; l++) {
            int64_t k = 16 * p + l;
            const int8_t *row = k < count ? w + (list ? list[k] : k) * d : NULL;
            for (q = 0; q < k4n; q++)
                for (i = 0; i < 4; i++) {
                    int64_t kk = 4 * q + i;
                    dec[(p * k4n + q) * 64 + l * 4 + i] = row && kk < d ? row[kk] : 0;
                }
        }
}

void tsq__reg_int_products(const uint8_t *x, int64_t rows, int64_t d, const int8_t *dec,
                           int64_t count, int32_t *acc, float *out, int64_t ldo,
                           const int32_t *list)
{
    int64_t i, k;
    tsq__gemm_vnni(x, d, rows, d, dec, 0, count, acc, count);
    for (i = 0; i < rows; i++)
        for (k = 0; k < count; k++)
            out[i * ldo + (list ? list[k] : k)] = (float)acc[i * count + k];
}

void tsq__reg_xtz_rows(const uint8_t *x, int64_t ldx, int64_t rows, int64_t j0, int64_t j1,
                       const float *z, int64_t C, float *g)
{
    int64_t i, j, c;
    memset(g, 0, (size_t)((j1 - j0) * C) * sizeof *g);
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * ldx;
        const float *zi = z + i * C;
        for (j = j0; j < j1; j++) {
            float xv = (float)xi[j], *gj = g + (j - j0) * C;
            if (!xi[j])
                continue; /* codes are mostly 0: their products add nothing */
            for (c = 0; c < C; c++)
                gj[c] += xv * zi[c];
        }
    }
}

void tsq__reg_products_update(const fit_state *f, const uint8_t *x, const float *xf, int64_t rows,
                              float *v, float *scratch)
{
    int64_t i, k, e, d = f->d, C = f->C, m = f->ndense;
    if (m && f->int_xw) {
        tsq__reg_int_products(x, rows, d, f->dec, m, (int32_t *)scratch, v, C, f->dense);
    } else if (m) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)m, (int)d, 1.0f,
                    xf, (int)d, f->wg, (int)m, 0.0f, scratch, (int)m);
        for (i = 0; i < rows; i++)
            for (k = 0; k < m; k++)
                v[i * C + f->dense[k]] = scratch[i * m + k];
    }
    for (i = 0; i < rows; i++) {
        const uint8_t *xi = x + i * d;
        float *vi = v + i * C;
        for (e = 0; e < f->ndelta; e++)
            vi[f->dc[e]] += f->dv[e] * (float)xi[f->dj[e]];
    }
}

void tsq__reg_products_done(fit_state *f)
{
    memcpy(f->wcache, f->w, (size_t)(f->C * f->d));
    f->vvalid = 1;
}
