/*
 * bench_regressor: speed and memory of TSQ's step 2 (tsq_fit_transform),
 * and the quality figures of docs/regressor.md.
 *
 * Speed, three rows (docs/regressor.md, "Speed"): ternary fits of sparse
 * 2-bit codes without W_init or P, 10 rounds, at the current defaults and
 * at the previous ones (4 restarts, no polish), each against one
 * cblas_sgemm of the same N x d x C shape:
 *   row 1  N = 100,000, d = 576, C = 64 (a 3x3 convolution over 64 channels)
 *   row 2  N = 20,000, d = 4,608, C = 512 (a ResNet-18 3x3 convolution)
 *   row 3  fmnist-cnn's four quantized layers at the demo's calibration
 * then the time against d (576 .. 4,608) and C (64 .. 512) with the fitted
 * exponents. Memory: the context's allocator counts the library's bytes
 * in row 1; X and Y belong to the caller and are not counted.
 *
 * Environment: TSQ_BENCH_THREADS (default: 2, or 1 on one CPU),
 * TSQ_BENCH_QUICK=1 (smaller rows and quality part), TSQ_BENCH_GRID=1
 * (also the margin / lambda0 / growth grid, ~1 min), TSQ_BENCH_ROWS (the
 * speed parts to run: any of 1, 2, 3, g), TSQ_BENCH_OLD=0 (no fits at the
 * previous defaults), TSQ_BENCH_SPEED_ONLY=1 (no quality part). Set
 * OPENBLAS_NUM_THREADS=1: libtsq spreads the work itself.
 */
#include "bench.h"
#include "reference.h"
#include "rng.h"

#include "blas.h" /* libtsq/core/blas.h: the build's CBLAS header */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

/* ---- a counting allocator: live and peak bytes ---- */
typedef struct counter {
    int64_t live, peak;
} counter;

typedef struct block_header {
    uint64_t size;
    void *base;
} block_header;

static void *count_alloc(void *user, uint64_t size, uint64_t alignment)
{
    counter *c = user;
    unsigned char *base, *p;
    if (alignment < 16)
        alignment = 16;
    base = malloc((size_t)(size + alignment + sizeof(block_header)));
    if (!base)
        return NULL;
    p = (unsigned char *)(((uintptr_t)base + sizeof(block_header) + alignment - 1) &
                          ~(uintptr_t)(alignment - 1));
    ((block_header *)p)[-1].size = size;
    ((block_header *)p)[-1].base = base;
    c->live += (int64_t)size;
    if (c->live > c->peak)
        c->peak = c->live;
    return p;
}

static void count_free(void *user, void *ptr)
{
    counter *c = user;
    block_header *h = (block_header *)ptr - 1;
    c->live -= (int64_t)h->size;
    free(h->base);
}

/* ---- data ---- */
/* The generator and the quantizer formula of tests/support. */
static th_rng rng = {12345};

/* A layer: sparse 2-bit input codes (60% zeros, like post-quantizer
 * activations), Gaussian full-precision weights, P = X W + b + noise, and
 * Y = Q(P) on a 2-bit quantizer (eps 0.33, delta 0.65). */
typedef struct layer {
    int64_t n, d, C;
    uint8_t *x, *y;
    float *p, *w;
} layer;

static void layer_make(layer *L, int64_t n, int64_t d, int64_t C, double noise)
{
    int64_t i, j, c;
    double *acc = malloc((size_t)C * sizeof *acc);
    L->n = n;
    L->d = d;
    L->C = C;
    L->x = malloc((size_t)(n * d));
    L->y = malloc((size_t)(n * C));
    L->p = malloc((size_t)(n * C) * sizeof(float));
    L->w = malloc((size_t)(d * C) * sizeof(float));
    for (i = 0; i < n * d; i++) {
        double u = th_rng_uniform(&rng);
        L->x[i] = u < 0.6 ? 0 : u < 0.8 ? 1 : u < 0.92 ? 2 : 3;
    }
    for (i = 0; i < d * C; i++)
        L->w[i] = (float)(th_rng_normal(&rng) * 1.3 / sqrt((double)d));
    for (i = 0; i < n; i++) {
        for (c = 0; c < C; c++)
            acc[c] = -0.3;
        for (j = 0; j < d; j++) {
            double xv = L->x[i * d + j];
            if (xv != 0.0)
                for (c = 0; c < C; c++)
                    acc[c] += xv * L->w[j * C + c];
        }
        for (c = 0; c < C; c++) {
            L->p[i * C + c] = (float)(acc[c] + noise * th_rng_normal(&rng));
            L->y[i * C + c] = (uint8_t)th_ref_code(L->p[i * C + c], 0.33f, 0.65f, 3);
        }
    }
    free(acc);
}

static void layer_free(layer *L)
{
    free(L->x);
    free(L->y);
    free(L->p);
    free(L->w);
}

typedef struct run_result {
    double seconds, cpu_seconds, objective, start, after_linear;
    int32_t iterates;
} run_result;

/* CPU time of the whole process (all its threads). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fit_with(tsq_context *ctx, const layer *L, int use_p, int use_w, int rounds,
                    int linear, double tol, double lambda0, double growth, double margin,
                    run_result *out);

static int fit(tsq_context *ctx, const layer *L, int use_p, int use_w, int rounds, int linear,
               double tol, run_result *out)
{
    return fit_with(ctx, L, use_p, use_w, rounds, linear, tol, 0.1, 1.1, 0.5, out);
}

static int fit_with(tsq_context *ctx, const layer *L, int use_p, int use_w, int rounds,
                    int linear, double tol, double lambda0, double growth, double margin,
                    run_result *out)
{
    int64_t sx[2] = {L->n, L->d}, sy[2] = {L->n, L->C}, sw[2] = {L->d, L->C}, sc = L->C;
    tsq_tensor *X = NULL, *Y = NULL, *P = NULL, *W0 = NULL, *W = NULL, *A = NULL, *B = NULL;
    tsq_regressor *reg = NULL;
    double h[256], t0;
    int32_t n = 0;
    tsq_status st = TSQ_OK;
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sx, L->x, (uint64_t)(L->n * L->d), &X);
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sy, L->y, (uint64_t)(L->n * L->C), &Y);
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, sy, L->p, (uint64_t)(L->n * L->C) * 4, &P);
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, sw, L->w, (uint64_t)(L->d * L->C) * 4, &W0);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, sw, &W);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &A);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &B);
    st |= tsq_regressor_create(ctx, &reg);
    if (st == TSQ_OK) {
        tsq_regressor_set_levels(reg, 2, 0.33f, 0.65f);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, rounds);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_LINEAR_ROUNDS, linear);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_TOLERANCE, tol);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_LAMBDA0, lambda0);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_LAMBDA_GROWTH, growth);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_MARGIN, margin);
        double c0 = cpu_now();
        t0 = bench_now();
        st = tsq_fit_transform(reg, X, Y, use_w ? W0 : NULL, use_p ? P : NULL, W, A, B,
                               &out->objective);
        out->seconds = bench_now() - t0;
        out->cpu_seconds = cpu_now() - c0;
        if (st != TSQ_OK)
            fprintf(stderr, "fit: %s\n", tsq_regressor_errmsg(reg));
        tsq_regressor_history(reg, TSQ_HISTORY_OBJECTIVE, h, 256, &n);
        out->iterates = n;
        out->start = n > 0 ? h[0] : 0.0;
        out->after_linear = n > linear ? h[linear] : out->start;
    }
    tsq_regressor_destroy(reg);
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(Y);
    tsq_tensor_destroy(P);
    tsq_tensor_destroy(W0);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(A);
    tsq_tensor_destroy(B);
    return st == TSQ_OK;
}

/* ---- Step 2 at the width of real networks ----
 * Each row: a layer of sparse 2-bit codes (layer_make, no W_init, no P),
 * 10 rounds, fitted with the current defaults and with the previous ones
 * (4 restarted descents per round, no polish), against one cblas_sgemm of
 * the same N x d x C shape. One run each (the wide rows take minutes);
 * the load average is printed beside, since the machine may be shared. */

typedef struct timed {
    double seconds, cpu, objective;
} timed;

static int fit_defaults(tsq_context *ctx, const layer *L, int old, timed *out)
{
    int64_t sx[2] = {L->n, L->d}, sy[2] = {L->n, L->C}, sw[2] = {L->d, L->C}, sc = L->C;
    tsq_tensor *X = NULL, *Y = NULL, *W = NULL, *A = NULL, *B = NULL;
    tsq_regressor *reg = NULL;
    tsq_status st = TSQ_OK;
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sx, L->x, (uint64_t)(L->n * L->d), &X);
    st |= tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sy, L->y, (uint64_t)(L->n * L->C), &Y);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, sw, &W);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &A);
    st |= tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &B);
    st |= tsq_regressor_create(ctx, &reg);
    if (st == TSQ_OK) {
        double t0, c0;
        tsq_regressor_set_levels(reg, 2, 0.33f, 0.65f);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 10);
        if (old) {
            tsq_regressor_set_option(reg, TSQ_REGRESSOR_RESTARTS, 4);
            tsq_regressor_set_option(reg, TSQ_REGRESSOR_POLISH, 0);
        }
        c0 = cpu_now();
        t0 = bench_now();
        st = tsq_fit_transform(reg, X, Y, NULL, NULL, W, A, B, &out->objective);
        out->seconds = bench_now() - t0;
        out->cpu = cpu_now() - c0;
        if (st != TSQ_OK)
            fprintf(stderr, "fit: %s\n", tsq_regressor_errmsg(reg));
    }
    tsq_regressor_destroy(reg);
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(Y);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(A);
    tsq_tensor_destroy(B);
    return st == TSQ_OK;
}

/* One cblas_sgemm of the shape (N x d) (d x C), in seconds. */
static double sgemm_seconds(const layer *L)
{
    int64_t i, n = L->n, d = L->d, C = L->C;
    float *a = malloc((size_t)(n * d) * sizeof *a), *c = malloc((size_t)(n * C) * sizeof *c);
    double t0, t;
    for (i = 0; i < n * d; i++)
        a[i] = L->x[i];
    t0 = bench_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)C, (int)d, 1.0f, a,
                (int)d, L->w, (int)C, 0.0f, c, (int)C);
    t = bench_now() - t0;
    free(a);
    free(c);
    return t;
}

static void loadavg(char *buf, size_t size)
{
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = 0;
    if (f) {
        if (!fgets(buf, (int)size, f))
            buf[0] = 0;
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
}

/* Fits L with the current and the previous defaults; prints one line. */
static double speed_row(tsq_context *ctx, const char *name, const layer *L, double target,
                        int64_t threads, int with_old)
{
    timed now, old = {0, 0, 0};
    double gemm = sgemm_seconds(L);
    char load[128];
    if (!fit_defaults(ctx, L, 0, &now) || (with_old && !fit_defaults(ctx, L, 1, &old)))
        return 0.0;
    loadavg(load, sizeof load);
    printf("{\"name\": \"step 2 %s N=%lld d=%lld C=%lld\", \"value\": %.4g, \"unit\": \"s\", "
           "\"target\": %.4g, \"threads\": %lld, \"cpu_per_wall\": %.3g, \"objective\": %.8g, "
           "\"sgemm_s\": %.4g, \"ratio_to_sgemm\": %.4g, \"old_defaults_s\": %.4g, "
           "\"old_objective\": %.8g, \"speedup_vs_old\": %.3g, \"loadavg\": \"%s\"}\n",
           name, (long long)L->n, (long long)L->d, (long long)L->C, now.seconds, target,
           (long long)threads, now.cpu / now.seconds, now.objective, gemm, now.seconds / gemm,
           old.seconds, old.objective, with_old ? old.seconds / now.seconds : 0.0, load);
    fflush(stdout);
    return now.seconds;
}

/* Time against d (C = 64) and against C (d = 576) at N = 20,000: the
 * fitted exponents of t ~ d^p and t ~ C^q. */
static void growth(tsq_context *ctx, int64_t threads, int quick)
{
    static const int64_t ds[4] = {576, 1152, 2304, 4608}, cs[4] = {64, 128, 256, 512};
    int64_t n = quick ? 4000 : 20000;
    double lx[4], ly[4];
    int k, axis;
    for (axis = 0; axis < 2; axis++) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0, p;
        for (k = 0; k < 4; k++) {
            layer L;
            char name[64];
            int64_t d = axis ? 576 : ds[k], C = axis ? cs[k] : 64;
            rng.s = 7;
            layer_make(&L, n, d, C, 0.1);
            snprintf(name, sizeof name, "growth in %s", axis ? "C" : "d");
            ly[k] = log(speed_row(ctx, name, &L, 0.0, threads, 0));
            lx[k] = log((double)(axis ? C : d));
            layer_free(&L);
            sx += lx[k];
            sy += ly[k];
            sxx += lx[k] * lx[k];
            sxy += lx[k] * ly[k];
        }
        p = (4 * sxy - sx * sy) / (4 * sxx - sx * sx);
        printf("{\"name\": \"step 2 time grows as %s^p (N=%lld, %s)\", \"value\": %.3g, "
               "\"unit\": \"p\"}\n", axis ? "C" : "d", (long long)n,
               axis ? "d=576, C=64..512" : "C=64, d=576..4608", p);
        fflush(stdout);
    }
}

/* TSQ_BENCH_ROWS: which speed parts run, as digits (1, 2, 3 the rows, g
 * the growth); TSQ_BENCH_OLD=0 skips the previous defaults; TSQ_BENCH_SPEED_ONLY=1
 * skips the quality part. For profiling one row at a time. */
static int wants(const char *what)
{
    const char *rows = getenv("TSQ_BENCH_ROWS");
    return !rows || strstr(rows, what) != NULL;
}

static int with_old(void)
{
    const char *o = getenv("TSQ_BENCH_OLD");
    return !o || atoi(o) != 0;
}

static void speed_rows(int64_t threads, int quick)
{
    /* fmnist-cnn's quantized layers with the demo's calibration: 4096
     * images, 64 positions per image for the convolutions. */
    static const int64_t fm[4][3] = {{262144, 288, 32}, {262144, 288, 64}, {262144, 576, 64},
                                     {4096, 3136, 256}};
    tsq_context *ctx = NULL;
    counter cnt = {0, 0};
    layer L;
    double total = 0.0;
    int k;
    if (tsq_context_create_with_allocator(&ctx, count_alloc, count_free, &cnt) != TSQ_OK)
        return;
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    if (wants("1")) {
        rng.s = 1;
        layer_make(&L, quick ? 20000 : 100000, 576, 64, 0.1);
        speed_row(ctx, "row 1", &L, quick ? 0.0 : 0.6, threads, with_old());
        bench_line_ratio("step 2 row 1 peak library memory", (double)cnt.peak, "bytes",
                         "8 (d^2 + d C)", 8.0 * (double)(L.d * L.d + L.d * L.C));
        layer_free(&L);
    }
    if (wants("2")) {
        rng.s = 2;
        layer_make(&L, quick ? 4000 : 20000, quick ? 2304 : 4608, quick ? 256 : 512, 0.1);
        speed_row(ctx, "row 2", &L, quick ? 0.0 : 60.0, threads, with_old());
        layer_free(&L);
    }
    for (k = 0; k < 4 && wants("3"); k++) {
        rng.s = 3 + (uint64_t)k;
        layer_make(&L, quick ? fm[k][0] / 8 : fm[k][0], fm[k][1], fm[k][2], 0.1);
        total += speed_row(ctx, "row 3 fmnist-cnn layer", &L, 0.0, threads, with_old());
        layer_free(&L);
    }
    if (wants("3"))
        printf("{\"name\": \"step 2 row 3 fmnist-cnn, the four layers\", \"value\": %.4g, "
           "\"unit\": \"s\", \"target\": %.4g}\n", total, quick ? 0.0 : 40.0);
    fflush(stdout);
    if (wants("g"))
        growth(ctx, threads, quick);
    tsq_context_destroy(ctx);
}

/* Quality: objectives reached (the table of docs/regressor.md). */
static void quality_line(const char *what, const run_result *r, double fp)
{
    printf("{\"name\": \"quality %s\", \"value\": %.6g, \"unit\": \"objective\", "
           "\"start\": %.6g, \"after_linear\": %.6g, \"fp_weights\": %.6g, \"iterates\": %d, "
           "\"seconds\": %.3g}\n",
           what, r->objective, r->start, r->after_linear, fp, (int)r->iterates, r->seconds);
    fflush(stdout);
}

/* The objective of the full-precision weights themselves. */
static double fp_objective(const layer *L)
{
    double s = 0.0;
    int64_t i, j, c;
    for (i = 0; i < L->n; i++)
        for (c = 0; c < L->C; c++) {
            double v = -0.3;
            int k;
            for (j = 0; j < L->d; j++)
                v += L->x[i * L->d + j] * L->w[j * L->C + c];
            k = th_ref_code((float)v, 0.33f, 0.65f, 3) - L->y[i * L->C + c];
            s += 0.65 * 0.65 * k * k;
        }
    return s;
}

static void quality(int64_t threads, int quick)
{
    tsq_context *ctx = NULL;
    const double noises[2] = {0.05, 0.3};
    int k, mode;
    if (tsq_context_create(&ctx) != TSQ_OK)
        return;
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    for (k = 0; k < 2; k++) {
        layer L;
        double fp;
        rng.s = 100 + (uint64_t)k;
        layer_make(&L, quick ? 5000 : 20000, 144, 16, noises[k]);
        fp = fp_objective(&L);
        for (mode = 0; mode < 4; mode++) {
            static const char *names[4] = {"P given", "W_init only", "codes only",
                                           "codes only, 30 rounds"};
            run_result r;
            char what[128];
            if (!fit(ctx, &L, mode == 0, mode == 1, mode == 3 ? 30 : 10, 3, 1e-4, &r))
                return;
            snprintf(what, sizeof what, "random layer N=%lld d=144 C=16 noise %.2f, %s",
                     (long long)L.n, noises[k], names[mode]);
            quality_line(what, &r, fp);
        }
        layer_free(&L);
    }
    tsq_context_destroy(ctx);
}

/* A planted ternary layer as in tests/test_regressor.c: X 2-bit codes,
 * alpha* on a delta/4 grid and b* an eighth off it, so that every output is
 * at least delta/8 from a level boundary; Y = Q(alpha* X w* + b*), exact. */
typedef struct planted {
    int64_t n, d, C;
    uint8_t *x, *y;
    float *p, *w0;
    int8_t *w;
} planted;

static void planted_make(planted *pl, int64_t n, int64_t d, int64_t C)
{
    int64_t i, j, c;
    float *alpha = malloc((size_t)C * sizeof *alpha), *b = malloc((size_t)C * sizeof *b);
    pl->n = n;
    pl->d = d;
    pl->C = C;
    pl->x = malloc((size_t)(n * d));
    pl->y = malloc((size_t)(n * C));
    pl->p = malloc((size_t)(n * C) * sizeof(float));
    pl->w0 = malloc((size_t)(d * C) * sizeof(float));
    pl->w = malloc((size_t)(d * C));
    for (i = 0; i < n * d; i++)
        pl->x[i] = (uint8_t)(th_rng_next(&rng) % 4);
    for (c = 0; c < C; c++) {
        double mean = 0.0;
        for (j = 0; j < d; j++) {
            pl->w[j * C + c] = (int8_t)((int)(th_rng_next(&rng) % 3) - 1);
            mean += pl->w[j * C + c] * 1.5;
        }
        alpha[c] = 0.25f * (float)(1 + c % 2);
        b[c] = 1.125f - 0.25f * (float)floor(mean * alpha[c] / 0.25);
    }
    for (j = 0; j < d * C; j++)
        pl->w0[j] = alpha[j % C] * ((float)pl->w[j] + 0.2f * (float)th_rng_normal(&rng));
    for (i = 0; i < n; i++)
        for (c = 0; c < C; c++) {
            int32_t u = 0;
            for (j = 0; j < d; j++)
                u += pl->x[i * d + j] * pl->w[j * C + c];
            pl->p[i * C + c] = alpha[c] * (float)u + b[c];
            pl->y[i * C + c] = (uint8_t)th_ref_code(pl->p[i * C + c], 0.5f, 1.0f, 3);
        }
    free(alpha);
    free(b);
}

static void planted_free(planted *pl)
{
    free(pl->x);
    free(pl->y);
    free(pl->p);
    free(pl->w0);
    free(pl->w);
}

/* One planted fit; prints (what != NULL) the objective reached and the
 * wrong weights; returns the objective. */
static double planted_fit_lambda(tsq_context *ctx, const planted *pl, const char *what,
                                 int use_p, int use_w, int rounds, double lambda0,
                                 double growth, double margin)
{
    int64_t sx[2] = {pl->n, pl->d}, sy[2] = {pl->n, pl->C}, sw[2] = {pl->d, pl->C}, sc = pl->C;
    tsq_tensor *X = NULL, *Y = NULL, *P = NULL, *W0 = NULL, *W = NULL, *A = NULL, *B = NULL;
    tsq_regressor *reg = NULL;
    double obj = -1.0, h[64];
    int32_t n = 0;
    int64_t j, wrong = 0;
    int8_t *w = NULL;
    tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sx, pl->x, (uint64_t)(pl->n * pl->d), &X);
    tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sy, pl->y, (uint64_t)(pl->n * pl->C), &Y);
    tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, sy, pl->p, (uint64_t)(pl->n * pl->C) * 4, &P);
    tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, sw, pl->w0, (uint64_t)(pl->d * pl->C) * 4, &W0);
    tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, sw, &W);
    tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &A);
    tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &B);
    tsq_regressor_create(ctx, &reg);
    tsq_regressor_set_levels(reg, 2, 0.5f, 1.0f);
    tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, rounds);
    tsq_regressor_set_option(reg, TSQ_REGRESSOR_LAMBDA0, lambda0);
    tsq_regressor_set_option(reg, TSQ_REGRESSOR_LAMBDA_GROWTH, growth);
    tsq_regressor_set_option(reg, TSQ_REGRESSOR_MARGIN, margin);
    if (tsq_fit_transform(reg, X, Y, use_w ? W0 : NULL, use_p ? P : NULL, W, A, B, &obj) ==
            TSQ_OK &&
        what) {
        tsq_tensor_data(W, (void **)&w);
        for (j = 0; j < pl->d * pl->C; j++)
            wrong += w[j] != pl->w[j];
        tsq_regressor_history(reg, TSQ_HISTORY_OBJECTIVE, h, 64, &n);
        printf("{\"name\": \"quality planted N=%lld d=%lld C=%lld, %s\", \"value\": %.6g, "
               "\"unit\": \"objective\", \"start\": %.6g, \"wrong_weights\": %lld, "
               "\"iterates\": %d}\n",
               (long long)pl->n, (long long)pl->d, (long long)pl->C, what, obj, n ? h[0] : 0.0,
               (long long)wrong, (int)n);
        fflush(stdout);
    }
    tsq_regressor_destroy(reg);
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(Y);
    tsq_tensor_destroy(P);
    tsq_tensor_destroy(W0);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(A);
    tsq_tensor_destroy(B);
    return obj;
}

static double planted_fit(tsq_context *ctx, const planted *pl, const char *what, int use_p,
                          int use_w, int rounds, double growth, double margin)
{
    return planted_fit_lambda(ctx, pl, what, use_p, use_w, rounds, 0.1, growth, margin);
}

static void quality_planted(int64_t threads, int quick)
{
    tsq_context *ctx = NULL;
    planted pl;
    const double margins[3] = {0.0, 0.25, 0.5};
    int k;
    char what[128];
    if (tsq_context_create(&ctx) != TSQ_OK)
        return;
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    rng.s = 11;
    planted_make(&pl, quick ? 6000 : 20000, 24, 6);
    planted_fit(ctx, &pl, "P given, defaults", 1, 0, 10, 1.1, 0.5);
    planted_fit(ctx, &pl, "codes only, defaults (10 rounds)", 0, 0, 10, 1.1, 0.5);
    for (k = 0; k < 3; k++) {
        snprintf(what, sizeof what, "codes only, 40 rounds, growth 1, margin %.2f", margins[k]);
        planted_fit(ctx, &pl, what, 0, 0, 40, 1.0, margins[k]);
    }
    planted_fit(ctx, &pl, "W_init (weights + 20% noise), 40 rounds, growth 1", 0, 1, 40, 1.0, 0.5);
    planted_free(&pl);
    tsq_context_destroy(ctx);
}

static void quality_brute_force(void)
{
    tsq_context *ctx = NULL;
    const int64_t n = 200, C = 10;
    int fit_no, within = 0, start_within = 0, exact = 0;
    double worst = 1.0, sum_ratio = 0.0;
    if (tsq_context_create(&ctx) != TSQ_OK)
        return;
    rng.s = 7;
    for (fit_no = 0; fit_no < 10; fit_no++) {
        int d = 4 + fit_no % 6;
        int64_t sx[2] = {n, d}, sp[2] = {n, C}, sw[2] = {d, C}, sc = C, i, j, c;
        uint8_t *x = malloc((size_t)(n * d));
        float *p = malloc((size_t)(n * C) * sizeof *p);
        double start[10], got[10], wt[9];
        tsq_tensor *X = NULL, *P = NULL, *W = NULL, *A = NULL, *B = NULL;
        tsq_regressor *reg = NULL;
        for (i = 0; i < n * d; i++)
            x[i] = (uint8_t)(th_rng_next(&rng) % 4);
        for (c = 0; c < C; c++) {
            for (j = 0; j < d; j++)
                wt[j] = th_rng_normal(&rng);
            for (i = 0; i < n; i++) {
                double v = 0.7;
                for (j = 0; j < d; j++)
                    v += x[i * d + j] * wt[j];
                p[i * C + c] = (float)(v + 0.5 * th_rng_normal(&rng));
            }
        }
        tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, sx, x, (uint64_t)(n * d), &X);
        tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, sp, p, (uint64_t)(n * C) * 4, &P);
        tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, sw, &W);
        tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &A);
        tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &sc, &B);
        tsq_regressor_create(ctx, &reg);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_LOSS, TSQ_LOSS_LINEAR);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 0);
        tsq_fit_transform(reg, X, NULL, NULL, P, W, A, B, NULL);
        tsq_regressor_channel_objectives(reg, start, C);
        tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 10);
        tsq_fit_transform(reg, X, NULL, NULL, P, W, A, B, NULL);
        tsq_regressor_channel_objectives(reg, got, C);
        for (c = 0; c < C; c++) {
            double opt = th_ref_best_ternary(x, p, n, d, C, c), ratio = got[c] / opt;
            within += ratio <= 1.01;
            exact += ratio <= 1.0 + 1e-9;
            start_within += start[c] / opt <= 1.01;
            worst = ratio > worst ? ratio : worst;
            sum_ratio += ratio;
        }
        tsq_regressor_destroy(reg);
        tsq_tensor_destroy(X);
        tsq_tensor_destroy(P);
        tsq_tensor_destroy(W);
        tsq_tensor_destroy(A);
        tsq_tensor_destroy(B);
        free(x);
        free(p);
    }
    printf("{\"name\": \"quality brute force, 100 ternary instances d=4..9 N=200, linear loss\", "
           "\"value\": %d, \"unit\": \"instances within 1%% of the optimum\", \"exact\": %d, "
           "\"start_within\": %d, \"mean_ratio\": %.6g, \"worst_ratio\": %.6g}\n",
           within, exact, start_within, sum_ratio / 100.0, worst);
    fflush(stdout);
    tsq_context_destroy(ctx);
}

/* The grid behind the defaults of margin, lambda0 and growth
 * (TSQ_BENCH_GRID=1): the random layer with noise 0.05, codes only and P
 * given, 10 rounds; the planted layer, codes only 10 and 40 rounds, and
 * W_init with 20% noise, 40 rounds. */
static void quality_grid(int64_t threads)
{
    static const double margins[3] = {0.0, 0.25, 0.5}, lambdas[3] = {0.1, 1.0, 10.0},
                        growths[2] = {1.1, 1.25};
    tsq_context *ctx = NULL;
    layer L;
    planted pl;
    int a, b, g;
    if (tsq_context_create(&ctx) != TSQ_OK)
        return;
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    rng.s = 100;
    layer_make(&L, 20000, 144, 16, 0.05);
    rng.s = 11;
    planted_make(&pl, 20000, 24, 6);
    for (a = 0; a < 3; a++)
        for (b = 0; b < 3; b++)
            for (g = 0; g < 2; g++) {
                run_result codes, pre;
                double p10, p40, w40;
                fit_with(ctx, &L, 0, 0, 10, 3, 1e-4, lambdas[b], growths[g], margins[a], &codes);
                fit_with(ctx, &L, 1, 0, 10, 3, 1e-4, lambdas[b], growths[g], margins[a], &pre);
                p10 = planted_fit_lambda(ctx, &pl, NULL, 0, 0, 10, lambdas[b], growths[g],
                                         margins[a]);
                p40 = planted_fit_lambda(ctx, &pl, NULL, 0, 0, 40, lambdas[b], growths[g],
                                         margins[a]);
                w40 = planted_fit_lambda(ctx, &pl, NULL, 0, 1, 40, lambdas[b], growths[g],
                                         margins[a]);
                printf("{\"name\": \"grid margin %.2f lambda0 %g growth %g\", \"value\": %.6g, "
                       "\"unit\": \"objective, random codes only\", \"random_P\": %.6g, "
                       "\"planted_10\": %.6g, \"planted_40\": %.6g, \"planted_w_init_40\": "
                       "%.6g}\n",
                       margins[a], lambdas[b], growths[g], codes.objective, pre.objective, p10,
                       p40, w40);
                fflush(stdout);
            }
    layer_free(&L);
    planted_free(&pl);
    tsq_context_destroy(ctx);
}

int main(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = getenv("TSQ_BENCH_THREADS") ? atoll(getenv("TSQ_BENCH_THREADS"))
                                                  : (cpus > 0 ? (cpus < 2 ? cpus : 2) : 1);
    int runs = getenv("TSQ_BENCH_RUNS") ? atoi(getenv("TSQ_BENCH_RUNS")) : 5;
    int quick = getenv("TSQ_BENCH_QUICK") != NULL;
    if (runs < 1 || runs > 64)
        runs = 5;
    bench_info("bench_regressor");
    (void)runs;
    speed_rows(threads, quick);
    if (getenv("TSQ_BENCH_SPEED_ONLY"))
        return 0;
    quality(threads, quick);
    quality_planted(threads, quick);
    quality_brute_force();
    if (getenv("TSQ_BENCH_GRID"))
        quality_grid(threads);
    return 0;
}
