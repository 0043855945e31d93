/*
 * Rows of the regressor's X (and of Y, P) for a convolution: im2col over an
 * NCHW tensor, at every output position or at a sampled subset of them, so
 * that a layer with many positions per image can be fitted on a bounded N.
 * Column order (c_in, i, j) matches a weight C_out x C_in x kh x kw
 * reshaped to C_out x (C_in kh kw).
 */
#include "regressor_internal.h"
#include "kernels/conv.h"

#include <string.h>

/* The geometry is kernels/conv.h's one (cin, h, w: the tensor's C, H, W;
 * oh x ow: the positions per image); n is the tensor's N. */
typedef struct rows_job {
    const tsq__conv_geom *g;
    int64_t n;
    const tsq_tensor *src;
    tsq_tensor *dst;
    const int64_t *positions;    /* NULL: all */
    int64_t npos;                /* rows per image */
} rows_job;

static int64_t position_of(const rows_job *job, int64_t n, int64_t k)
{
    return job->positions ? job->positions[n * job->npos + k] : k;
}

/* One image's rows of X, by the one im2col (kernels/conv.h). */
static void im2col_image(void *arg, int64_t n)
{
    const rows_job *job = arg;
    tsq__im2col_rows(job->g, tsq__dtype_size(job->src->dtype), TSQ__NCHW, job->src->data,
                     job->dst->data, n, n + 1, job->positions, job->npos);
}

/* One image's rows of an output tensor: the C channels at each position. */
static void output_image(void *arg, int64_t n)
{
    const rows_job *job = arg;
    const tsq__conv_geom *g = job->g;
    int64_t k, c, plane = g->h * g->w;
    size_t es = tsq__dtype_size(job->src->dtype);
    const unsigned char *in = (const unsigned char *)job->src->data;
    unsigned char *out = (unsigned char *)job->dst->data;
    for (k = 0; k < job->npos; k++) {
        int64_t p = position_of(job, n, k);
        for (c = 0; c < g->cin; c++)
            memcpy(out + (size_t)((n * job->npos + k) * g->cin + c) * es,
                   in + (size_t)((n * g->cin + c) * plane + p) * es, es);
    }
}

/* An NCHW tensor's N (*n) and C, H, W (g, the rest zero). */
static tsq_status check_nchw(tsq_context *ctx, const char *where, const tsq_tensor *t,
                             tsq__conv_geom *g, int64_t *n)
{
    if (!t)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: the tensor is NULL", where);
    if (t->dtype != TSQ_DTYPE_U8 && t->dtype != TSQ_DTYPE_F32)
        return tsq__fail(&ctx->obj, TSQ_ERR_DTYPE, "%s: the tensor must be u8 codes or f32",
                         where);
    if (t->ndim != 4)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE, "%s: the tensor has %d dimensions, "
                         "expected 4 (N x C x H x W)", where, (int)t->ndim);
    memset(g, 0, sizeof *g);
    *n = t->shape[0];
    g->cin = t->shape[1];
    g->h = t->shape[2];
    g->w = t->shape[3];
    return TSQ_OK;
}

static tsq_status check_positions(tsq_context *ctx, const char *where, const rows_job *job,
                                  const int64_t *positions, int64_t *npos)
{
    int64_t i, total = job->g->oh * job->g->ow, count;
    if (!positions) {
        *npos = total;
        return TSQ_OK;
    }
    if (*npos < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: npos is %lld, must be >= 1", where,
                         (long long)*npos);
    if (!tsq__mul_i64(job->n, *npos, &count))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: N x npos overflows", where);
    for (i = 0; i < count; i++)
        if (positions[i] < 0 || positions[i] >= total)
            return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                             "%s: positions[%lld] = %lld is outside 0..%lld", where,
                             (long long)i, (long long)positions[i], (long long)total - 1);
    return TSQ_OK;
}

/* Creates the rows x cols output and fills it image by image. */
static tsq_status make_rows(tsq_context *ctx, const char *where, rows_job *job, int64_t cols,
                            tsq__task_fn fill, tsq_tensor **out)
{
    int64_t shape[2];
    tsq_status st;
    if (!tsq__mul_i64(job->n, job->npos, &shape[0]))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: the row count overflows", where);
    shape[1] = cols;
    st = tsq_tensor_create(ctx, job->src->dtype, 2, shape, out);
    if (st != TSQ_OK)
        return st; /* message already on ctx */
    job->dst = *out;
    tsq__parallel_for(ctx->threads, job->n, fill, job);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_im2col_rows(tsq_context *ctx, const tsq_tensor *input, int32_t kh,
                                     int32_t kw, int32_t stride_h, int32_t stride_w,
                                     int32_t pad_h, int32_t pad_w, const int64_t *positions,
                                     int64_t npos, tsq_tensor **out)
{
    const char *where = "regressor_im2col_rows";
    const int32_t lim = 1 << 20;
    tsq__conv_geom g;
    rows_job job;
    int64_t d;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *out = NULL;
    st = check_nchw(ctx, where, input, &g, &job.n);
    if (st != TSQ_OK)
        return st;
    /* Not tsq__conv_window_check: this call's published contract takes any
     * padding up to 2^20, a padding as wide as the kernel included. */
    if (kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0 ||
        kh > lim || kw > lim || stride_h > lim || stride_w > lim || pad_h > lim || pad_w > lim)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: kernel %dx%d, stride %dx%d, padding %dx%d: need kernel and stride "
                         ">= 1, padding >= 0 (all <= 2^20)", where, (int)kh, (int)kw,
                         (int)stride_h, (int)stride_w, (int)pad_h, (int)pad_w);
    if (g.h + 2 * (int64_t)pad_h < kh || g.w + 2 * (int64_t)pad_w < kw)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: a %dx%d kernel does not fit the padded %lldx%lld input", where,
                         (int)kh, (int)kw, (long long)(g.h + 2 * pad_h),
                         (long long)(g.w + 2 * pad_w));
    if (!tsq__mul_i64(g.cin, (int64_t)kh * kw, &d))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: C_in kh kw overflows", where);
    tsq__conv_geom_set(&g, g.cin, 0, kh, kw, stride_h, stride_w, pad_h, pad_w);
    tsq__conv_geom_fit(&g, input->shape[2], input->shape[3]); /* fits: checked above */
    job.g = &g;
    st = check_positions(ctx, where, &job, positions, &npos);
    if (st != TSQ_OK)
        return st;
    job.src = input;
    job.positions = positions;
    job.npos = npos;
    return make_rows(ctx, where, &job, d, im2col_image, out);
}

tsq_status tsq_regressor_im2col_output_rows(tsq_context *ctx, const tsq_tensor *output,
                                            const int64_t *positions, int64_t npos,
                                            tsq_tensor **out)
{
    const char *where = "regressor_im2col_output_rows";
    tsq__conv_geom g;
    rows_job job;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    *out = NULL;
    st = check_nchw(ctx, where, output, &g, &job.n);
    if (st != TSQ_OK)
        return st;
    g.oh = g.h;
    g.ow = g.w;
    job.g = &g;
    st = check_positions(ctx, where, &job, positions, &npos);
    if (st != TSQ_OK)
        return st;
    job.src = output;
    job.positions = positions;
    job.npos = npos;
    return make_rows(ctx, where, &job, g.cin, output_image, out);
}

tsq_status tsq_regressor_im2col_sample_positions(tsq_context *ctx, int64_t images,
                                                 int64_t total, int64_t npos,
                                                 int64_t *positions)
{
    const char *where = "regressor_im2col_sample_positions";
    tsq__rng rng;
    int64_t n, i, count;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!positions)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: positions is NULL", where);
    if (images < 1 || total < 1 || npos < 1 || npos > total)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID,
                         "%s: images %lld, total %lld, npos %lld: need images, total >= 1 and "
                         "1 <= npos <= total", where, (long long)images, (long long)total,
                         (long long)npos);
    if (!tsq__mul_i64(images, npos, &count))
        return tsq__fail(&ctx->obj, TSQ_ERR_OVERFLOW, "%s: images x npos overflows", where);
    tsq__rng_from_context(ctx, &rng);
    /* Selection sampling (Knuth's algorithm S): position i is taken with
     * probability (still needed) / (still left), which gives a uniform
     * subset, already in ascending order. */
    for (n = 0; n < images; n++) {
        int64_t *dst = positions + n * npos, need = npos;
        for (i = 0; i < total && need > 0; i++)
            if ((int64_t)tsq__rng_below(&rng, (uint64_t)(total - i)) < need)
                dst[npos - need--] = i;
    }
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
