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
#include "blas.h"

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

/* The factorisation and the solves are cut into fixed blocks of rows (or
 * of right-hand sides) that do not depend on the thread count, so every
 * thread count computes the same floats: the threads only pick which
 * blocks they run. At d = 4,608 the d^3/3 factorisation on one thread
 * was 2.3 s of the bench's 16.6 s row 2 (docs/regressor.md). */
enum { DIAG_BLOCK = 64, ROW_BLOCK = 128, RHS_BLOCK = 64 };

typedef struct {
    double *a;       /* the d x d row-major matrix being factored */
    int64_t d, k, kb; /* the current diagonal block: rows/cols k .. k + kb - 1 */
    double *t;       /* the solves: d x C right-hand sides */
    int64_t C;
    const double *m; /* the copy: source and ridge */
    double rho;
} chol_job;

static int64_t blocks(int64_t n, int64_t size)
{
    return (n + size - 1) / size;
}

/* Spreads `n` blocks over the threads when the work (about `flops`) pays
 * for starting them; inline otherwise. The blocks are the same either way. */
static void run_blocks(int64_t threads, int64_t n, double flops, tsq__task_fn fn, chol_job *job)
{
    tsq__parallel_for(flops > 4e6 ? threads : 1, n, fn, job);
}

/* Rows [r0, r1) of the panel below the diagonal block: X L_kk^T = A. */
static void panel_task(void *arg, int64_t i)
{
    chol_job *j = arg;
    int64_t first = j->k + j->kb, rest = j->d - first, r0 = i * ROW_BLOCK;
    int64_t rows = rest - r0 < ROW_BLOCK ? rest - r0 : ROW_BLOCK;
    double *diag = j->a + j->k * j->d + j->k;
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int)rows,
                (int)j->kb, 1.0, diag, (int)j->d, diag + (j->kb + r0) * j->d, (int)j->d);
}

/* Rows [r0, r1) of the trailing matrix, lower triangle: A22 -= P P^T,
 * the columns left of the block by dgemm, its own square by dsyrk. */
static void trailing_task(void *arg, int64_t i)
{
    chol_job *j = arg;
    int64_t first = j->k + j->kb, rest = j->d - first, r0 = i * ROW_BLOCK;
    int64_t rows = rest - r0 < ROW_BLOCK ? rest - r0 : ROW_BLOCK;
    const double *panel = j->a + first * j->d + j->k;
    double *a22 = j->a + first * j->d + first;
    if (r0 > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)r0, (int)j->kb,
                    -1.0, panel + r0 * j->d, (int)j->d, panel, (int)j->d, 1.0, a22 + r0 * j->d,
                    (int)j->d);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)rows, (int)j->kb, -1.0,
                panel + r0 * j->d, (int)j->d, 1.0, a22 + r0 * j->d + r0, (int)j->d);
}

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
 * matrix): each diagonal block is factored in place, the panel below it
 * solved and the trailing matrix updated, both in row blocks. */
static int cholesky(chol_job *job, int64_t threads)
{
    int64_t d = job->d;
    for (job->k = 0; job->k < d; job->k += DIAG_BLOCK) {
        int64_t rest;
        job->kb = d - job->k < DIAG_BLOCK ? d - job->k : DIAG_BLOCK;
        rest = d - job->k - job->kb;
        if (!cholesky_block(job->a + job->k * d + job->k, job->kb, d))
            return 0;
        if (rest > 0) {
            double f = (double)rest * (double)job->kb;
            run_blocks(threads, blocks(rest, ROW_BLOCK), f * job->kb, panel_task, job);
            run_blocks(threads, blocks(rest, ROW_BLOCK), f * rest, trailing_task, job);
        }
    }
    return 1;
}

/* Columns [c0, c0 + RHS_BLOCK) of T: L L^T W = T, by two triangular solves. */
static void solve_task(void *arg, int64_t i)
{
    chol_job *j = arg;
    int64_t c0 = i * RHS_BLOCK, cols = j->C - c0 < RHS_BLOCK ? j->C - c0 : RHS_BLOCK;
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)j->d,
                (int)cols, 1.0, j->a, (int)j->d, j->t + c0, (int)j->C);
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, (int)j->d,
                (int)cols, 1.0, j->a, (int)j->d, j->t + c0, (int)j->C);
}

/* Rows [r0, r0 + ROW_BLOCK) of the copy M + rho I (on every thread: the
 * first touch of a fresh d x d buffer is page faults). */
static void copy_task(void *arg, int64_t i)
{
    chol_job *j = arg;
    int64_t r0 = i * ROW_BLOCK, rows = j->d - r0 < ROW_BLOCK ? j->d - r0 : ROW_BLOCK, r;
    memcpy(j->a + r0 * j->d, j->m + r0 * j->d, (size_t)(rows * j->d) * sizeof j->m[0]);
    for (r = r0; r < r0 + rows; r++)
        j->a[r * j->d + r] += j->rho;
}

int tsq__least_squares(const double *m, int64_t d, double *t, int64_t C, double *m_work,
                       int64_t threads)
{
    double maxdiag = 0.0, dd = (double)d;
    int64_t j;
    int ok = 0, saved;
    chol_job job = {.a = m_work, .d = d, .t = t, .C = C, .m = m};
    for (j = 0; j < d; j++)
        maxdiag = fmax(maxdiag, m[j * d + j]);
    if (!(maxdiag > 0.0)) { /* no variance at all: every weight is irrelevant */
        memset(t, 0, (size_t)(d * C) * sizeof t[0]);
        return 1;
    }
    /* The BLAS on one thread here too, not only inside the regions: a
     * threaded OpenBLAS rounds its triangular solves differently (seen with
     * its Haswell kernels), and the blocks would then give other floats
     * when they run inline. */
    saved = tsq__blas_single_begin();
    /* A ridge of 1e-10 of the largest diagonal keeps constant or duplicate
     * columns from breaking the factorisation; grown if it still fails. */
    for (job.rho = 1e-10 * maxdiag; job.rho <= 1e-2 * maxdiag && !ok; job.rho *= 1e3) {
        run_blocks(threads, blocks(d, ROW_BLOCK), dd * dd, copy_task, &job);
        ok = cholesky(&job, threads);
    }
    if (ok)
        run_blocks(threads, blocks(C, RHS_BLOCK), 2.0 * dd * dd * (double)C, solve_task, &job);
    tsq__blas_single_end(saved);
    return ok;
}
