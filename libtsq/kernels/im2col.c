/* The one convolution geometry and im2col (kernels/conv.h).
 *
 * Rows (tsq__im2col_rows): one row per output position, any element size
 * and layout, all or sampled positions: the regressor's rows, the codes'
 * patch matrix of the plan and of tsq_im2col_codes.
 *
 * Columns (tsq__im2col / tsq__col2im), the float GEMM path, one image:
 * row r = (c, i, j) of the k x ohw matrix holds, for every output position
 * (oy, ox), the input pixel x[c][oy*s - p + i][ox*s - p + j] (0 outside
 * the image); rows are `ld` floats apart, so that several images can sit
 * side by side in one matrix. The bounds of the valid output columns are
 * worked out once per row, so the inner loops are plain copies. */
#include "kernels/conv.h"
#include "kernels/vec.h"

#include <string.h>

void tsq__conv_geom_set(tsq__conv_geom *g, int64_t cin, int64_t cout, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w)
{
    memset(g, 0, sizeof *g);
    g->cin = cin;
    g->cout = cout;
    g->kh = kh;
    g->kw = kw;
    g->stride = stride_h;
    g->stride_w = stride_w;
    g->pad = pad_h;
    g->pad_w = pad_w;
    g->k = cin * kh * kw;
    g->group = 1;
}

/* The output of an h x w image; 0 if the window does not fit the padded
 * image. */
static int set_image(tsq__conv_geom *g, int64_t h, int64_t w)
{
    int64_t hp = h + 2 * g->pad, wp = w + 2 * g->pad_w;
    if (hp < g->kh || wp < g->kw)
        return 0;
    g->h = h;
    g->w = w;
    g->oh = (hp - g->kh) / g->stride + 1;
    g->ow = (wp - g->kw) / g->stride_w + 1;
    g->ohw = g->oh * g->ow;
    return 1;
}

int tsq__conv_geom_fit(tsq__conv_geom *g, int64_t h, int64_t w)
{
    if (!set_image(g, h, w))
        return 0;
    /* GEMMs narrower than ~128 columns run well below the BLAS's speed
     * (196 still runs at full speed, measured): put that many output
     * positions side by side (a property of the shape alone, so results do
     * not depend on the batch split). */
    g->group = g->ohw >= 128 ? 1 : (128 + g->ohw - 1) / g->ohw;
    if (g->group > 64)
        g->group = 64;
    g->direct = g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0 && g->group == 1;
    return 1;
}

int tsq__conv_geom_init(tsq__conv_geom *g, int64_t cin, int64_t h, int64_t w, int64_t cout,
                        int64_t kh, int64_t kw, int64_t stride, int64_t pad)
{
    tsq__conv_geom_set(g, cin, cout, kh, kw, stride, stride, pad, pad);
    return tsq__conv_geom_fit(g, h, w);
}

/* The output range [lo, hi) along one axis for which the input coordinate
 * o*s - p + t lies inside [0, n). */
static void valid_range(int64_t n, int64_t out, int64_t s, int64_t p, int64_t t, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = p - t;               /* need o*s >= a */
    int64_t b = n + p - t;           /* need o*s < b */
    int64_t l = a <= 0 ? 0 : s == 1 ? a : (a + s - 1) / s; /* no division at stride 1 */
    int64_t h = b <= 0 ? 0 : s == 1 ? b : (b + s - 1) / s;
    if (h > out)
        h = out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* Row r = (c, i, j) of the column matrix: where its plane starts in the
 * image, its kernel offsets, and the output rows [ylo, yhi) and columns
 * [xlo, xhi) whose input pixel lies inside the image (xlo = xhi or
 * ylo = yhi: none does). */
typedef struct patch_row {
    int64_t plane, i, j, ylo, yhi, xlo, xhi;
} patch_row;

/* Row 0 of the column matrix. */
static void patch_row_first(const tsq__conv_geom *g, patch_row *pr)
{
    pr->plane = pr->i = pr->j = 0;
    valid_range(g->h, g->oh, g->stride, g->pad, 0, &pr->ylo, &pr->yhi);
    valid_range(g->w, g->ow, g->stride, g->pad, 0, &pr->xlo, &pr->xhi);
}

/* From row r to row r + 1 (rows run over (c, i, j), j fastest): the
 * divisions of r by the kernel's sizes are not needed per row, and the
 * output rows' range changes only with i. */
static void patch_row_next(const tsq__conv_geom *g, patch_row *pr)
{
    if (++pr->j == g->kw) {
        pr->j = 0;
        if (++pr->i == g->kh) {
            pr->i = 0;
            pr->plane += g->h * g->w;
        }
        valid_range(g->h, g->oh, g->stride, g->pad, pr->i, &pr->ylo, &pr->yhi);
    }
    valid_range(g->w, g->ow, g->stride, g->pad, pr->j, &pr->xlo, &pr->xhi);
}

/* The image offset of the input pixel of output (oy, ox) in row pr. */
static int64_t pixel(const tsq__conv_geom *g, const patch_row *pr, int64_t oy, int64_t ox)
{
    return pr->plane + (oy * g->stride - g->pad + pr->i) * g->w + (ox * g->stride - g->pad + pr->j);
}

/* Zeroes a few floats (a row or two here: a libc call costs more). */
static void zero(float *p, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        p[i] = 0.0f;
}

/* Zeroes columns [0, xlo) and [xhi, ow) of output rows [y0, y1) of one
 * column-matrix row: the entries whose pixel falls outside the image. */
static void zero_outside(float *row, int64_t ow, int64_t y0, int64_t y1, int64_t xlo,
                         int64_t xhi)
{
    int64_t oy, ox;
    /* Column by column: a few columns (the padding) of many rows, and a
     * strided loop that compilers do not turn into one memset call per row. */
    for (ox = 0; ox < xlo; ox++)
        for (oy = y0; oy < y1; oy++)
            row[oy * ow + ox] = 0.0f;
    for (ox = xhi; ox < ow; ox++)
        for (oy = y0; oy < y1; oy++)
            row[oy * ow + ox] = 0.0f;
}

void tsq__im2col(const tsq__conv_geom *g, const float *x, float *col, int64_t ld)
{
    int64_t r, oy, ox;
    const int64_t s = g->stride, ow = g->ow;
    patch_row pr;
    patch_row_first(g, &pr);
    for (r = 0; r < g->k; r++, patch_row_next(g, &pr)) {
        float *row = col + r * ld;
        int64_t y0, y1;
        /* a kernel column that never meets the image has no valid rows */
        y0 = pr.xhi == pr.xlo ? 0 : pr.ylo;
        y1 = pr.xhi == pr.xlo ? 0 : pr.yhi;
        zero(row, y0 * ow);
        if (s == 1 && ow == g->w && y0 < y1) {
            /* Output and input rows have the same length, so the whole
             * valid block is one shifted copy; the columns that wrapped
             * around into a neighbouring row are zeroed afterwards. */
            int64_t first = y0 * ow + pr.xlo, last = (y1 - 1) * ow + pr.xhi;
            memcpy(row + first, x + pixel(g, &pr, y0, pr.xlo),
                   (size_t)(last - first) * sizeof(float));
            zero_outside(row, ow, y0, y1, pr.xlo, pr.xhi);
            y0 = y1; /* rows done */
        }
        zero_outside(row, ow, y0, y1, pr.xlo, pr.xhi);
        for (oy = y0; oy < y1; oy++) {
            const float *src = x + pixel(g, &pr, oy, pr.xlo);
            float *dst = row + oy * ow;
            if (s == 1) {
                memcpy(dst + pr.xlo, src, (size_t)(pr.xhi - pr.xlo) * sizeof(float));
            } else {
                for (ox = pr.xlo; ox < pr.xhi; ox++)
                    dst[ox] = src[(ox - pr.xlo) * s];
            }
        }
        zero(row + y1 * ow, (g->oh - y1) * ow);
    }
}

void tsq__col2im(const tsq__conv_geom *g, float *col, int64_t ld, float *x)
{
    int64_t r, oy, ox;
    const int64_t s = g->stride, ow = g->ow;
    patch_row pr;
    memset(x, 0, (size_t)(g->cin * g->h * g->w) * sizeof(float));
    patch_row_first(g, &pr);
    for (r = 0; r < g->k; r++, patch_row_next(g, &pr)) {
        float *row = col + r * ld;
        int64_t y0 = pr.ylo;
        if (s == 1 && ow == g->w && pr.ylo < pr.yhi && pr.xlo < pr.xhi) {
            /* As in im2col: one contiguous add, after zeroing the entries
             * that would wrap into a neighbouring row. */
            int64_t first = pr.ylo * ow + pr.xlo, last = (pr.yhi - 1) * ow + pr.xhi;
            zero_outside(row, ow, pr.ylo, pr.yhi, pr.xlo, pr.xhi);
            tsq__vec_add(x + pixel(g, &pr, pr.ylo, pr.xlo), row + first, last - first);
            y0 = pr.yhi;
        }
        for (oy = y0; oy < pr.yhi && pr.xlo < pr.xhi; oy++) {
            float *dst = x + pixel(g, &pr, oy, pr.xlo);
            const float *src = row + oy * ow + pr.xlo;
            if (s == 1) {
                tsq__vec_add(dst, src, pr.xhi - pr.xlo);
            } else {
                for (ox = 0; ox < pr.xhi - pr.xlo; ox++)
                    dst[ox * s] += src[ox];
            }
        }
    }
}

tsq_status tsq__conv_window_check(tsq__object *obj, const char *where, int64_t kh, int64_t kw,
                                  int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                  int64_t pad_w, int64_t lim)
{
    if (kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1 || kh > lim || kw > lim ||
        stride_h > lim || stride_w > lim)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: kernel %lld x %lld and stride %lld x %lld must be in 1..%lld",
                         where, (long long)kh, (long long)kw, (long long)stride_h,
                         (long long)stride_w, (long long)lim);
    if (pad_h < 0 || pad_w < 0 || pad_h >= kh || pad_w >= kw)
        return tsq__fail(obj, TSQ_ERR_INVALID,
                         "%s: pad %lld x %lld must be >= 0 and below the kernel %lld x %lld, "
                         "else a window could hold padding only",
                         where, (long long)pad_h, (long long)pad_w, (long long)kh, (long long)kw);
    return TSQ_OK;
}

tsq_status tsq__conv_geom_check(tsq__object *obj, const char *where, int64_t cin, int64_t h,
                                int64_t w, int64_t kh, int64_t kw, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                tsq__conv_geom *g)
{
    int64_t k;
    TSQ_FORWARD_IF_ERROR(tsq__conv_window_check(obj, where, kh, kw, stride_h, stride_w, pad_h,
                                                pad_w, INT64_C(1) << 20));
    if (h + 2 * pad_h < kh || w + 2 * pad_w < kw)
        return tsq__fail(obj, TSQ_ERR_SHAPE,
                         "%s: a %lld x %lld window does not fit a padded %lld x %lld image",
                         where, (long long)kh, (long long)kw, (long long)(h + 2 * pad_h),
                         (long long)(w + 2 * pad_w));
    if (!tsq__mul_i64(cin, kh * kw, &k))
        return tsq__fail(obj, TSQ_ERR_OVERFLOW, "%s: C_in kh kw overflows", where);
    tsq__conv_geom_set(g, cin, 0, kh, kw, stride_h, stride_w, pad_h, pad_w);
    set_image(g, h, w);
    return TSQ_OK;
}

/* One row: the window at output (oy, ox) of one image. */
static void window_row(const tsq__conv_geom *g, size_t es, int32_t layout,
                       const unsigned char *img, unsigned char *row, int64_t oy, int64_t ox)
{
    int64_t c, ky, kx;
    if (layout == TSQ__NHWC) {
        /* A window row is kw pixels of cin elements; where it lies inside
         * the image (and the stride along x is 1) they are one contiguous
         * run of kw * cin elements. */
        size_t run = (size_t)g->cin * es;
        int64_t x0 = ox * g->stride_w - g->pad_w;
        int inside_x = x0 >= 0 && x0 + g->kw <= g->w;
        for (ky = 0; ky < g->kh; ky++) {
            int64_t iy = oy * g->stride - g->pad + ky;
            if (iy < 0 || iy >= g->h) {
                memset(row, 0, run * (size_t)g->kw);
                row += run * (size_t)g->kw;
                continue;
            }
            if (inside_x) {
                memcpy(row, img + (size_t)(iy * g->w + x0) * run, run * (size_t)g->kw);
                row += run * (size_t)g->kw;
                continue;
            }
            for (kx = 0; kx < g->kw; kx++, row += run) {
                int64_t ix = x0 + kx;
                if (ix >= 0 && ix < g->w)
                    memcpy(row, img + (size_t)(iy * g->w + ix) * run, run);
                else
                    memset(row, 0, run);
            }
        }
        return;
    }
    for (c = 0; c < g->cin; c++) {
        const unsigned char *plane = img + (size_t)(c * g->h * g->w) * es;
        for (ky = 0; ky < g->kh; ky++) {
            int64_t iy = oy * g->stride - g->pad + ky;
            for (kx = 0; kx < g->kw; kx++, row += es) {
                int64_t ix = ox * g->stride_w - g->pad_w + kx;
                if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w)
                    memcpy(row, plane + (size_t)(iy * g->w + ix) * es, es);
                else
                    memset(row, 0, es);
            }
        }
    }
}

void tsq__im2col_rows(const tsq__conv_geom *g, size_t es, int32_t layout, const void *in,
                      void *out, int64_t b0, int64_t b1, const int64_t *positions,
                      int64_t npos)
{
    size_t img_bytes = (size_t)(g->cin * g->h * g->w) * es, row_bytes = (size_t)g->k * es;
    int64_t b, i;
    for (b = b0; b < b1; b++) {
        const unsigned char *img = (const unsigned char *)in + (size_t)b * img_bytes;
        unsigned char *rows = (unsigned char *)out + (size_t)(b * npos) * row_bytes;
        for (i = 0; i < npos; i++) {
            int64_t p = positions ? positions[b * npos + i] : i;
            window_row(g, es, layout, img, rows + (size_t)i * row_bytes, p / g->ow, p % g->ow);
        }
    }
}
