/*
 * The updates of TSQ's step 2 (TSQ.md, "Step 2: transformation learning"),
 * each in one function:
 *   alpha, b given w, z   refit_alpha, tsq__profile_offset
 *   w given alpha, z      sweep, descend, tsq__channel_round (coordinate
 *                         descent over the shared Gram matrix)
 *   z given alpha, b, w   tsq__zstep_coded (regressor_internal.h), its bins
 *                         tsq__zstep_bins, run over rows by tsq__zrows_run
 * plus the weight alphabet, the statistics-only objective and the least
 * squares start. Apart from tsq__zrows_run, everything here works on
 * sufficient statistics (X^T X, X^T z, sums), never on the data rows:
 * regressor.c accumulates those.
 */
#include "regressor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------ */
/* The weight alphabet                                                 */
/* ------------------------------------------------------------------ */

void tsq__alphabet_range(tsq__alphabet *a, int32_t L)
{
    int32_t i;
    a->count = 2 * L + 1;
    a->symmetric = 1;
    a->range = L;
    for (i = 0; i < a->count; i++)
        a->values[i] = i - L;
}

int tsq__alphabet_custom(tsq__alphabet *a, const int32_t *values, int32_t count)
{
    unsigned char seen[256];
    int32_t i, n = 0;
    memset(seen, 0, sizeof seen);
    for (i = 0; i < count; i++) {
        if (values[i] < -128 || values[i] > 127)
            return 0;
        seen[values[i] + 128] = 1;
    }
    for (i = 0; i < 256; i++)
        if (seen[i])
            a->values[n++] = i - 128;
    if (n < 2)
        return 0;
    a->count = n;
    a->symmetric = 1;
    for (i = 0; i < n; i++)
        if (a->values[i] == -128 || !seen[-a->values[i] + 128])
            a->symmetric = 0;
    /* {-L .. L} gets the closed-form nearest element. */
    a->range = (a->symmetric && a->values[n - 1] - a->values[0] == n - 1) ? a->values[n - 1] : 0;
    return 1;
}

int32_t tsq__alphabet_nearest(const tsq__alphabet *a, double u)
{
    int32_t lo, hi;
    if (u != u)
        u = 0.0;
    if (a->range) {
        /* ceil(|u| - 1/2): ties (|u| = m + 1/2) go to the smaller magnitude. */
        double m = fabs(u);
        int32_t k = m < (double)a->range + 0.5 ? (int32_t)ceil(m - 0.5) : a->range;
        return u < 0 ? -k : k;
    }
    /* Binary search for the first value >= u, then compare with its left. */
    lo = 0;
    hi = a->count;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if ((double)a->values[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return a->values[0];
    if (lo == a->count)
        return a->values[a->count - 1];
    {
        double dl = u - a->values[lo - 1], dh = a->values[lo] - u;
        if (dl < dh)
            return a->values[lo - 1];
        if (dh < dl)
            return a->values[lo];
        return abs(a->values[lo - 1]) < abs(a->values[lo]) ? a->values[lo - 1] : a->values[lo];
    }
}

/* ------------------------------------------------------------------ */
/* The output quantizer and the z-step                                 */
/* ------------------------------------------------------------------ */

int tsq__outq_init(tsq__outq *q, int32_t bits, float eps, float delta)
{
    if (bits < 1 || bits > 8 || !isfinite(eps) || !isfinite(delta) || eps < 0.0f ||
        !(delta > 0.0f))
        return 0;
    q->bits = bits;
    q->maxcode = (1 << bits) - 1;
    q->eps = eps;
    q->delta = delta;
    q->inv_delta = 1.0f / delta;
    if (!isfinite(q->inv_delta) || !isfinite((float)q->maxcode * delta))
        return 0;
    return 1;
}

/* Bin m of Q (TSQ.md "Step 1"), closed: I_0 = (-inf, eps],
 * I_m = [max(eps, (m - 1/2) delta), (m + 1/2) delta] for 1 <= m < maxcode
 * (bin 1 starts at eps itself), and the top bin is unbounded above.
 * Each finite end is then moved inward by `margin` (a length; a bin
 * narrower than two margins shrinks to its midpoint). Returns 0 for a bin
 * that eps has swallowed. */
static int bin_bounds(const tsq__outq *q, int32_t m, double margin, double *lo, double *hi)
{
    double delta = q->delta;
    if (m == 0) {
        *lo = -HUGE_VAL;
        *hi = q->eps;
    } else {
        *lo = m == 1 ? (double)q->eps : fmax((double)q->eps, (m - 0.5) * delta);
        *hi = m == q->maxcode ? HUGE_VAL : (m + 0.5) * delta;
        if (!(*lo < *hi))
            return 0;
    }
    if (margin > 0.0) {
        double a = isfinite(*lo) ? *lo + margin : *lo, b = isfinite(*hi) ? *hi - margin : *hi;
        if (a > b) /* both ends are finite here */
            a = b = 0.5 * (*lo + *hi);
        *lo = a;
        *hi = b;
    }
    return 1;
}

/* The bins as the z-step uses them (see tsq__zstep in the header). */
void tsq__zstep_bins(const tsq__outq *q, double margin, float *lo, float *hi)
{
    int32_t m;
    for (m = 0; m <= q->maxcode; m++) {
        double a, b;
        if (bin_bounds(q, m, margin, &a, &b)) {
            lo[m] = (float)a;
            hi[m] = (float)b;
        } else { /* swallowed by eps: no v has this code */
            lo[m] = 1.0f;
            hi[m] = 0.0f;
        }
    }
}

/* One sample of tsq__zrows: the plain C definition. */
static void zrows_one(const tsq__zrows *a, int64_t i, int64_t c)
{
    const tsq__outq *q = &a->q[c];
    float v = a->alpha[c] * a->xw[i * a->C + c] + a->b[c], z;
    int32_t y = a->y[i * a->C + c], k = tsq__quant_code(v, q->eps, q->inv_delta, q->maxcode);
    a->err[c] += (double)((y - k) * (y - k));
    if (!a->zstep)
        return;
    z = tsq__zstep_coded(q, a->lo + c * a->nbins, a->hi + c * a->nbins, v, k, y, a->lambda,
                         &a->zcost[c]);
    a->z[i * a->C + c] = z;
    a->zsum[c] += z;
    a->zsq[c] += (double)z * z;
}

#if defined(__SSE2__)
/* Four channels c .. c+3 of row i, branch-free where the scalar code
 * branches on data. Bit-identical to zrows_one: the same float operations
 * in the same order (v = alpha x + b; t = v inv + 1/2; for v > eps >= 0,
 * t > 0, so floor(t) = trunc(t), and clamping t to [1, maxcode] before
 * truncating equals clamping the floor, the bounds being integers); the
 * own-bin fast path of tsq__zstep_coded; lanes off that path go through
 * the scalar function; the double sums are added per channel in row order
 * as in zrows_one. */
static void zrows_four(const tsq__zrows *a, int64_t i, int64_t c)
{
    const int64_t at = i * a->C + c;
    __m128 v = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(a->alpha + c), _mm_loadu_ps(a->xw + at)),
                          _mm_loadu_ps(a->b + c));
    __m128 t = _mm_add_ps(_mm_mul_ps(v, _mm_loadu_ps(a->inv_delta + c)), _mm_set1_ps(0.5f));
    __m128 above = _mm_cmpgt_ps(v, _mm_loadu_ps(a->eps + c));
    __m128i k, y, e;
    __m128 ef;
    int32_t kk[4], yy[4];
    int lane;
    t = _mm_max_ps(_mm_min_ps(t, _mm_loadu_ps(a->top + c)), _mm_set1_ps(1.0f));
    k = _mm_and_si128(_mm_cvttps_epi32(t), _mm_castps_si128(above));
    {
        int32_t packed;
        memcpy(&packed, a->y + at, 4);
        y = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(packed), _mm_setzero_si128()),
                               _mm_setzero_si128());
    }
    e = _mm_sub_epi32(y, k);
    ef = _mm_cvtepi32_ps(e);
    ef = _mm_mul_ps(ef, ef); /* exact: |e| <= 255 */
    _mm_storeu_pd(a->err + c, _mm_add_pd(_mm_loadu_pd(a->err + c), _mm_cvtps_pd(ef)));
    _mm_storeu_pd(a->err + c + 2,
                  _mm_add_pd(_mm_loadu_pd(a->err + c + 2), _mm_cvtps_pd(_mm_movehl_ps(ef, ef))));
    if (!a->zstep)
        return;
    _mm_storeu_si128((__m128i *)kk, k);
    _mm_storeu_si128((__m128i *)yy, y);
    {
        const int32_t nb = a->nbins;
        __m128 lo = _mm_setr_ps(a->lo[c * nb + kk[0]], a->lo[(c + 1) * nb + kk[1]],
                                a->lo[(c + 2) * nb + kk[2]], a->lo[(c + 3) * nb + kk[3]]);
        __m128 hi = _mm_setr_ps(a->hi[c * nb + kk[0]], a->hi[(c + 1) * nb + kk[1]],
                                a->hi[(c + 2) * nb + kk[2]], a->hi[(c + 3) * nb + kk[3]]);
        __m128 below_lo = _mm_cmplt_ps(v, lo), above_hi = _mm_cmpgt_ps(v, hi);
        /* z = v < lo ? lo : v > hi ? hi : v */
        __m128 z = _mm_or_ps(_mm_and_ps(above_hi, hi), _mm_andnot_ps(above_hi, v));
        __m128 dz, cost, fast;
        float zz[4], vv[4];
        z = _mm_or_ps(_mm_and_ps(below_lo, lo), _mm_andnot_ps(below_lo, z));
        dz = _mm_sub_ps(z, v);
        cost = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(a->lambda), dz), dz);
        fast = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, y)),
                          _mm_cmplt_ps(cost, _mm_loadu_ps(a->delta2 + c)));
        _mm_storeu_ps(zz, z);
        _mm_storeu_ps(vv, v);
        if (_mm_movemask_ps(fast) != 0xF)
            for (lane = 0; lane < 4; lane++)
                if (!((_mm_movemask_ps(fast) >> lane) & 1))
                    zz[lane] = tsq__zstep_coded(&a->q[c + lane], a->lo + (c + lane) * nb,
                                                a->hi + (c + lane) * nb, vv[lane], kk[lane],
                                                yy[lane], a->lambda, &a->zcost[c + lane]);
        z = _mm_loadu_ps(zz);
        _mm_storeu_ps(a->z + at, z);
        {
            __m128d z01 = _mm_cvtps_pd(z), z23 = _mm_cvtps_pd(_mm_movehl_ps(z, z));
            _mm_storeu_pd(a->zsum + c, _mm_add_pd(_mm_loadu_pd(a->zsum + c), z01));
            _mm_storeu_pd(a->zsum + c + 2, _mm_add_pd(_mm_loadu_pd(a->zsum + c + 2), z23));
            _mm_storeu_pd(a->zsq + c, _mm_add_pd(_mm_loadu_pd(a->zsq + c), _mm_mul_pd(z01, z01)));
            _mm_storeu_pd(a->zsq + c + 2,
                          _mm_add_pd(_mm_loadu_pd(a->zsq + c + 2), _mm_mul_pd(z23, z23)));
        }
    }
}
#endif

void tsq__zrows_run(const tsq__zrows *a, int simd)
{
    int64_t i, c, c4 = 0;
#if defined(__SSE2__)
    if (simd)
        c4 = a->C & ~(int64_t)3;
#else
    (void)simd;
#endif
    for (i = 0; i < a->rows; i++) {
#if defined(__SSE2__)
        for (c = 0; c < c4; c += 4)
            zrows_four(a, i, c);
#endif
        for (c = c4; c < a->C; c++)
            zrows_one(a, i, c);
    }
}

/* ------------------------------------------------------------------ */
/* alpha, b and w given a fixed target (statistics only)               */
/* ------------------------------------------------------------------ */

void tsq__centre_target(const tsq__gram *g, const double *xtz, double zsum, double *t)
{
    int64_t j;
    double zbar = zsum / g->rows;
    for (j = 0; j < g->d; j++)
        t[j] = g->offset ? xtz[j] - g->colsum[j] * zbar : xtz[j];
}

/* r = M w, adding one row of M per nonzero weight (w is sparse when
 * ternary, and M is symmetric so rows are columns). */
static void gram_times(const tsq__gram *g, const int8_t *w, double *r)
{
    int64_t d = g->d, k;
    memset(r, 0, (size_t)d * sizeof r[0]);
    for (k = 0; k < d; k++)
        if (w[k])
            cblas_daxpy((int)d, (double)w[k], g->m + k * d, 1, r, 1);
}

static double dot_w(const int8_t *w, const double *x, int64_t d)
{
    double s = 0.0;
    int64_t j;
    for (j = 0; j < d; j++)
        s += (double)w[j] * x[j];
    return s;
}

/* TSQ.md "Step 2", update 1: alpha = w^T t / w^T M w (t, M centred when the
 * offset is profiled out). alpha must stay positive: with a symmetric
 * alphabet a negative fit flips w instead (same objective); otherwise, and
 * when w^T M w = 0, alpha is kept. */
static int64_t refit_alpha(const tsq__gram *g, const double *t, const tsq__alphabet *a,
                           int8_t *w, double *r, double *alpha)
{
    int64_t d = g->d, j, flipped = 0;
    double wt = dot_w(w, t, d), wmw = dot_w(w, r, d);
    if (!(wmw > 0.0))
        return 0;
    if (wt < 0.0 && a->symmetric) {
        for (j = 0; j < d; j++) {
            flipped += w[j] != 0;
            w[j] = (int8_t)-w[j];
            r[j] = -r[j];
        }
        wt = -wt;
    }
    if (wt > 0.0)
        *alpha = wt / wmw;
    return flipped;
}

/* TSQ.md "Step 2", update 2: one cyclic pass of exact coordinate descent on
 * f(w) = alpha^2 w^T M w - 2 alpha w^T t. With the others fixed, coordinate
 * j's best real value is (t_j / alpha - (r_j - M_jj w_j)) / M_jj, and its
 * best value in S the nearest element (f is a parabola in w_j). r = M w is
 * kept up to date with one row of M per change. Returns the changes. */
static int64_t sweep(const tsq__gram *g, const double *t, const tsq__alphabet *a, double alpha,
                     double diag_floor, int8_t *w, double *r)
{
    int64_t d = g->d, j, changed = 0;
    int32_t zero = tsq__alphabet_nearest(a, 0.0);
    for (j = 0; j < d; j++) {
        const double *row = g->m + j * d;
        double mjj = row[j];
        int32_t target;
        if (mjj > diag_floor)
            target = tsq__alphabet_nearest(a, (t[j] / alpha - (r[j] - mjj * w[j])) / mjj);
        else
            target = zero; /* a column without variance: its weight does nothing */
        if (target != w[j]) {
            cblas_daxpy((int)d, (double)(target - w[j]), row, 1, r, 1);
            w[j] = (int8_t)target;
            changed++;
        }
    }
    return changed;
}

/* f(alpha, w) = alpha^2 w^T M w - 2 alpha w^T t, the objective of the w
 * step up to a constant (r = M w). */
static double round_objective(const int8_t *w, const double *r, const double *t, int64_t d,
                              double alpha)
{
    return alpha * alpha * dot_w(w, r, d) - 2.0 * alpha * dot_w(w, t, d);
}

/* Coordinate sweeps, each followed by an alpha refit, until a sweep
 * changes nothing or `sweeps` ran. r = M w on entry and exit. */
static int64_t descend(const tsq__gram *g, const double *t, const tsq__alphabet *a,
                       int32_t sweeps, double diag_floor, int8_t *w, double *alpha, double *r)
{
    int64_t total = refit_alpha(g, t, a, w, r, alpha);
    int32_t s;
    for (s = 0; s < sweeps; s++) {
        int64_t changed = sweep(g, t, a, *alpha, diag_floor, w, r);
        total += changed + refit_alpha(g, t, a, w, r, alpha);
        if (!changed)
            break;
    }
    return total;
}

int64_t tsq__channel_round(const tsq__gram *g, const double *t, const tsq__alphabet *a,
                           int32_t sweeps, int8_t *w, double *alpha, double *r, int8_t *w_try)
{
    /* Coordinate descent stops at a point no single weight can improve,
     * for the alpha it converged with. Descents restarted from the same w
     * at other scales of alpha reach other such points; the best is kept
     * (only a strictly better one replaces w, so the round never loses). */
    static const double scales[] = {0.5, 0.7, 1.4, 2.0};
    int64_t d = g->d, j, total;
    double maxdiag = 0.0, best, *r_try = r + d;
    size_t k;
    for (j = 0; j < d; j++)
        maxdiag = fmax(maxdiag, g->m[j * d + j]);
    gram_times(g, w, r); /* fresh each round: no drift from the updates */
    total = descend(g, t, a, sweeps, 1e-12 * maxdiag, w, alpha, r);
    best = round_objective(w, r, t, d, *alpha);
    for (k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        double alpha_try = *alpha * scales[k], f;
        memcpy(w_try, w, (size_t)d);
        memcpy(r_try, r, (size_t)d * sizeof r[0]);
        /* a sweep first: at the scaled alpha, before any refit */
        sweep(g, t, a, alpha_try, 1e-12 * maxdiag, w_try, r_try);
        descend(g, t, a, sweeps, 1e-12 * maxdiag, w_try, &alpha_try, r_try);
        f = round_objective(w_try, r_try, t, d, alpha_try);
        if (f < best) {
            for (j = 0; j < d; j++)
                total += w_try[j] != w[j];
            best = f;
            *alpha = alpha_try;
            memcpy(w, w_try, (size_t)d);
            memcpy(r, r_try, (size_t)d * sizeof r[0]);
        }
    }
    return total;
}

/* TSQ.md "Step 2", update 1 with the offset profiled out:
 * b = zbar - alpha mu^T w, mu = s / N. */
double tsq__profile_offset(const tsq__gram *g, double zsum, const int8_t *w, double alpha)
{
    if (!g->offset)
        return 0.0;
    return (zsum - alpha * dot_w(w, g->colsum, g->d)) / g->rows;
}

/* w^T M w over the nonzero weights. */
static double quad_form(const tsq__gram *g, const int8_t *w)
{
    int64_t d = g->d, i, k;
    double s = 0.0;
    for (i = 0; i < d; i++) {
        double row = 0.0;
        if (!w[i])
            continue;
        for (k = 0; k < d; k++)
            row += g->m[i * d + k] * (double)w[k];
        s += (double)w[i] * row;
    }
    return s;
}

/* sum (z - alpha X w - b)^2 expanded over the statistics. With offsets M is
 * centred, so the centred form avoids cancellation against large means:
 *   (zsq - N zbar^2) - 2 alpha w^T t_c + alpha^2 w^T M w
 *   + N (zbar - alpha mu^T w - b)^2.                                   */
double tsq__linear_objective(const tsq__gram *g, const double *xtz, double zsum, double zsq,
                             const int8_t *w, double alpha, double b)
{
    double n = g->rows, sw = dot_w(w, g->colsum, g->d), wx = dot_w(w, xtz, g->d);
    double wmw = quad_form(g, w), f;
    if (g->offset) {
        double zbar = zsum / n, mean_gap = zbar - alpha * sw / n - b;
        f = (zsq - zsum * zbar) - 2.0 * alpha * (wx - sw * zbar) + alpha * alpha * wmw +
            n * mean_gap * mean_gap;
    } else {
        f = zsq - 2.0 * alpha * wx + alpha * alpha * wmw - 2.0 * b * (zsum - alpha * sw) +
            n * b * b;
    }
    return f > 0.0 ? f : 0.0;
}

/* ------------------------------------------------------------------ */
/* Least squares: the start when no W_init is given                    */
/* ------------------------------------------------------------------ */

/* Cholesky of an n x n diagonal block (lower, leading dimension ld). */
static int cholesky_block(double *a, int64_t n, int64_t ld)
{
    int64_t i, j, k;
    for (j = 0; j < n; j++) {
        double s = a[j * ld + j];
        for (k = 0; k < j; k++)
            s -= a[j * ld + k] * a[j * ld + k];
        if (!(s > 0.0))
            return 0;
        s = sqrt(s);
        a[j * ld + j] = s;
        for (i = j + 1; i < n; i++) {
            double v = a[i * ld + j];
            for (k = 0; k < j; k++)
                v -= a[i * ld + k] * a[j * ld + k];
            a[i * ld + j] = v / s;
        }
    }
    return 1;
}

/* Right-looking blocked Cholesky (lower triangle of a d x d row-major
 * matrix): each diagonal block is factored in place, the panel below it is
 * solved with dtrsm and the trailing matrix updated with dsyrk. */
static int cholesky(double *a, int64_t d)
{
    const int64_t nb = 64;
    int64_t k;
    for (k = 0; k < d; k += nb) {
        int64_t kb = d - k < nb ? d - k : nb, rest = d - k - kb;
        if (!cholesky_block(a + k * d + k, kb, d))
            return 0;
        if (rest > 0) {
            double *panel = a + (k + kb) * d + k;
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                        (int)rest, (int)kb, 1.0, a + k * d + k, (int)d, panel, (int)d);
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)rest, (int)kb, -1.0,
                        panel, (int)d, 1.0, panel + kb, (int)d);
        }
    }
    return 1;
}

int tsq__least_squares(const double *m, int64_t d, double *t, int64_t C, double *m_work)
{
    double maxdiag = 0.0, rho;
    int64_t j;
    for (j = 0; j < d; j++)
        maxdiag = fmax(maxdiag, m[j * d + j]);
    if (!(maxdiag > 0.0)) { /* no variance at all: every weight is irrelevant */
        memset(t, 0, (size_t)(d * C) * sizeof t[0]);
        return 1;
    }
    /* A ridge of 1e-10 of the largest diagonal keeps constant or duplicate
     * columns from breaking the factorisation; grown if it still fails. */
    for (rho = 1e-10 * maxdiag; rho <= 1e-2 * maxdiag; rho *= 1e3) {
        memcpy(m_work, m, (size_t)(d * d) * sizeof m[0]);
        for (j = 0; j < d; j++)
            m_work[j * d + j] += rho;
        if (cholesky(m_work, d)) {
            cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit,
                        (int)d, (int)C, 1.0, m_work, (int)d, t, (int)C);
            cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit,
                        (int)d, (int)C, 1.0, m_work, (int)d, t, (int)C);
            return 1;
        }
    }
    return 0;
}
