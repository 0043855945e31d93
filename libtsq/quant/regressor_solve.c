/*
 * The solver of step 2 on sufficient statistics (X^T X, X^T z, sums),
 * never on data rows (docs/method.md §3):
 *   b given alpha, w, z   tsq__profile_offset (§3.2)
 *   the objective         tsq__linear_objective
 *   the start             tsq__least_squares (§3.5)
 * The alpha and w updates (§3.2, §3.3) are regressor_sweep.c's.
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

static double dot_w(const int8_t *w, const double *x, int64_t d)
{
    double s = 0.0;
    int64_t j;
    for (j = 0; j < d; j++)
        s += (double)w[j] * x[j];
    return s;
}

/* docs/method.md §3.2, the offset profiled out:
 * b = zbar - alpha mu^T w, mu = s / N. */
double tsq__profile_offset(const tsq__gram *g, double zsum, const int8_t *w, double alpha)
{
    if (!g->offset)
        return 0.0;
    return (zsum - alpha * dot_w(w, g->colsum, g->d)) / g->rows;
}

/* sum (z - alpha X w - b)^2 expanded over the statistics. With offsets M is
 * centred, so the centred form avoids cancellation against large means:
 *   (zsq - N zbar^2) - 2 alpha w^T t_c + alpha^2 w^T M w
 *   + N (zbar - alpha mu^T w - b)^2.                                   */
double tsq__linear_objective(const tsq__gram *g, const double *xtz, double zsum, double zsq,
                             const int8_t *w, double wmw, double alpha, double b)
{
    double n = g->rows, sw = dot_w(w, g->colsum, g->d), wx = dot_w(w, xtz, g->d), f;
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
