/*
 * The solver of step 2 on sufficient statistics (X^T X, X^T z, sums),
 * never on data rows (docs/method.md §3):
 *   alpha, b given w, z   refit_alpha, tsq__profile_offset (§3.2)
 *   w given alpha, z      sweep, descend, tsq__channel_round: coordinate
 *                         descent over the shared Gram matrix (§3.3)
 * plus the statistics-only objective and the least-squares start (§3.5).
 * The drivers (regressor_pass.c) call in; nothing here calls out.
 */
#include "regressor_internal.h"

#include <math.h>
#include <string.h>

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

/* docs/method.md §3.2: alpha = w^T t / w^T M w (t, M centred when the
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

/* docs/method.md §3.3: one cyclic pass of exact coordinate descent on
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
                           int32_t sweeps, int32_t restarts, int8_t *w, double *alpha,
                           double *r, int8_t *w_try)
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
    for (k = 0; k < sizeof scales / sizeof scales[0] && (int32_t)k < restarts; k++) {
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

/* docs/method.md §3.2, the offset profiled out:
 * b = zbar - alpha mu^T w, mu = s / N. */
double tsq__profile_offset(const tsq__gram *g, double zsum, const int8_t *w, double alpha)
{
    if (!g->offset)
        return 0.0;
    return (zsum - alpha * dot_w(w, g->colsum, g->d)) / g->rows;
}

/* w^T M w over the nonzero weights. */
double tsq__quad_form(const tsq__gram *g, const int8_t *w)
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
    double wmw = tsq__quad_form(g, w), f;
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
