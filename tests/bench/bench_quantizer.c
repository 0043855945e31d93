/* Benchmarks of the activation quantizer:
 *   - encoding 100M floats to codes through the public call (finite check
 *     included), the bare AVX2 kernel and the plain C kernel, against memcpy
 *     of the same 400 MB measured in the same run;
 *   - observing 10M samples, and fitting (eps, delta) from their statistics
 *     for several bit widths and eps modes;
 *   - docs/method.md §2.3's check table on 10^6 unit-Gaussian samples (values, not
 *     times: fitted delta, error and sparsity against the table).
 * Medians of 5 runs, one JSON object per line (bench.h). Sizes can be
 * scaled down with TSQ_BENCH_SCALE (e.g. 0.1) for a quick look. */
#include "bench.h"
#include "rng.h"

/* The kernels themselves, to show the finite check's share. */
#include "quant/activation_histogram.h"

#include <math.h>
#include <stdint.h>

#define RUNS 5

static double scale_factor(void)
{
    const char *s = getenv("TSQ_BENCH_SCALE");
    double f = s ? atof(s) : 1.0;
    return f > 0.0 && f <= 1.0 ? f : 1.0;
}

static void fill_gaussian(float *x, int64_t n, uint64_t seed)
{
    th_rng r = {seed};
    int64_t i;
    for (i = 0; i < n; i++)
        x[i] = (float)th_rng_normal(&r);
}

static int die(const char *what, tsq_status st)
{
    fprintf(stderr, "bench_quantizer: %s failed: %s\n", what, tsq_status_string(st));
    exit(1);
}

#define CHECK(what, expr)                                                                  \
    do {                                                                                   \
        tsq_status st_ = (expr);                                                           \
        if (st_ != TSQ_OK)                                                                 \
            die(what, st_);                                                                \
    } while (0)

static void bench_encode(tsq_context *ctx, int64_t n)
{
    float *x = malloc((size_t)n * sizeof *x), *copy = malloc((size_t)n * sizeof *x);
    uint8_t *codes = malloc((size_t)n);
    double t_memcpy[RUNS], t_api[RUNS], t_avx2[RUNS], t_c[RUNS], t_api2[RUNS];
    double bytes = (double)n * sizeof(float), gbs_memcpy, med;
    tsq_quantizer *q = NULL;
    tsq_tensor *tx = NULL, *tc = NULL;
    uint32_t cpu = 0;
    int r;
    char name[96];
    if (!x || !copy || !codes) {
        fprintf(stderr, "bench_quantizer: out of memory\n");
        exit(1);
    }
    fill_gaussian(x, n, 1);
    memset(copy, 0, (size_t)n * sizeof *x); /* fault the pages in before timing */
    memset(codes, 0, (size_t)n);
    tsq_context_cpu_features(ctx, &cpu);
    CHECK("create", tsq_quantizer_create(ctx, 2, 0, &q));
    CHECK("set_channel", tsq_quantizer_set_channel(q, 0, 0.326f, 0.652f));
    CHECK("wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, &n, x, (uint64_t)n * 4, &tx));
    CHECK("wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 1, &n, codes, (uint64_t)n, &tc));
    for (r = 0; r < RUNS; r++) {
        double t0 = bench_now();
        memcpy(copy, x, (size_t)n * sizeof *x);
        t_memcpy[r] = bench_now() - t0;
        t0 = bench_now();
        CHECK("encode", tsq_quantizer_encode(q, tx, tc));
        t_api[r] = bench_now() - t0;
        t0 = bench_now();
        tsq__encode_span_c(x, codes, n, 0.326f, 1.0f / 0.652f, 3);
        t_c[r] = bench_now() - t0;
        t_avx2[r] = 0;
        if (cpu & TSQ_CPU_AVX2) {
            t0 = bench_now();
            tsq__encode_span_avx2(x, codes, n, 0.326f, 1.0f / 0.652f, 3);
            t_avx2[r] = bench_now() - t0;
        }
    }
    gbs_memcpy = bytes / bench_median(t_memcpy, RUNS) * 1e-9;
    snprintf(name, sizeof name, "memcpy_%lldM_floats", (long long)(n / 1000000));
    bench_line(name, gbs_memcpy, "GB/s");
    med = bench_median(t_api, RUNS);
    snprintf(name, sizeof name, "quantizer_encode_%lldM_floats", (long long)(n / 1000000));
    bench_line_ratio(name, bytes / med * 1e-9, "GB/s", "memcpy", gbs_memcpy);
    if (cpu & TSQ_CPU_AVX2) {
        med = bench_median(t_avx2, RUNS);
        bench_line_ratio("encode_kernel_avx2_no_finite_check", bytes / med * 1e-9, "GB/s",
                         "memcpy", gbs_memcpy);
    }
    med = bench_median(t_c, RUNS);
    bench_line_ratio("encode_kernel_plain_c", bytes / med * 1e-9, "GB/s", "memcpy", gbs_memcpy);

    /* The same call with two threads (the machine's cores permitting). */
    CHECK("threads", tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 2));
    for (r = 0; r < RUNS; r++) {
        double t0 = bench_now();
        CHECK("encode", tsq_quantizer_encode(q, tx, tc));
        t_api2[r] = bench_now() - t0;
    }
    CHECK("threads", tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1));
    med = bench_median(t_api2, RUNS);
    bench_line_ratio("quantizer_encode_2_threads", bytes / med * 1e-9, "GB/s", "memcpy",
                     gbs_memcpy);

    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(tc);
    tsq_quantizer_destroy(q);
    free(x);
    free(copy);
    free(codes);
}

static void bench_fit(tsq_context *ctx, int64_t n)
{
    static const struct {
        int32_t bits, mode;
        const char *name;
    } cases[] = {
        {2, TSQ_EPS_JOINT, "fit_2bit_joint"},   {2, TSQ_EPS_FIXED, "fit_2bit_fixed"},
        {2, TSQ_EPS_SPARSITY, "fit_2bit_sparsity"}, {4, TSQ_EPS_PLAIN, "fit_4bit_plain"},
        {8, TSQ_EPS_JOINT, "fit_8bit_joint"},
    };
    float *x = malloc((size_t)n * sizeof *x);
    tsq_tensor *tx = NULL;
    double t[RUNS];
    char name[96];
    size_t c;
    int r;
    if (!x) {
        fprintf(stderr, "bench_quantizer: out of memory\n");
        exit(1);
    }
    fill_gaussian(x, n, 2);
    CHECK("wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, &n, x, (uint64_t)n * 4, &tx));
    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tsq_quantizer *q = NULL;
        CHECK("create", tsq_quantizer_create(ctx, cases[c].bits, 0, &q));
        CHECK("mode", tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, cases[c].mode));
        if (c == 0 || cases[c].bits == 8) { /* observing costs the same for every mode */
            for (r = 0; r < RUNS; r++) {
                double t0;
                CHECK("reset", tsq_quantizer_reset(q));
                t0 = bench_now();
                CHECK("observe", tsq_quantizer_observe(q, tx));
                t[r] = bench_now() - t0;
            }
            snprintf(name, sizeof name, "observe_%lldM_samples_%dbit", (long long)(n / 1000000),
                     (int)cases[c].bits);
            bench_line(name, (double)n / bench_median(t, RUNS) * 1e-6, "Msamples/s");
        } else {
            CHECK("observe", tsq_quantizer_observe(q, tx));
        }
        for (r = 0; r < RUNS; r++) {
            double t0 = bench_now();
            CHECK("fit", tsq_quantizer_fit(q));
            t[r] = bench_now() - t0;
        }
        snprintf(name, sizeof name, "%s_from_%lldM_sample_stats", cases[c].name,
                 (long long)(n / 1000000));
        bench_line(name, bench_median(t, RUNS) * 1e3, "ms");
        tsq_quantizer_destroy(q);
    }
    tsq_tensor_destroy(tx);
    free(x);
}

/* docs/method.md §2.3's check table on 10^6 unit-Gaussian samples (the test's seed):
 * fitted delta and error per row, against the table's quadrature values. */
static void table_rows(tsq_context *ctx)
{
    static const struct {
        int32_t bits, mode;
        double eps, delta, error;
        const char *name;
    } rows[] = {
        {1, TSQ_EPS_PLAIN, 0.0, 0.7979, 0.18169, "tsq_table_1bit_eps0"},
        {1, TSQ_EPS_FIXED, 0.32, 1.0121, 0.11637, "tsq_table_1bit_eps0.32"},
        {2, TSQ_EPS_PLAIN, 0.0, 0.5388, 0.04322, "tsq_table_2bit_eps0"},
        {2, TSQ_EPS_FIXED, 0.32, 0.6488, 0.02344, "tsq_table_2bit_eps0.32"},
        {3, TSQ_EPS_PLAIN, 0.0, 0.3217, 0.01020, "tsq_table_3bit_eps0"},
        {4, TSQ_EPS_PLAIN, 0.0, 0.1842, 0.00251, "tsq_table_4bit_eps0"},
        {2, TSQ_EPS_JOINT, 0.0, 0.652, 0.02343, "tsq_table_2bit_joint"},
    };
    int64_t n = 1000000;
    float *x = malloc((size_t)n * sizeof *x);
    tsq_tensor *tx = NULL;
    char name[96];
    size_t r;
    if (!x)
        exit(1);
    fill_gaussian(x, n, 20180618);
    CHECK("wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, &n, x, (uint64_t)n * 4, &tx));
    for (r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        tsq_quantizer *q = NULL;
        double err, sp;
        float eps, delta;
        CHECK("create", tsq_quantizer_create(ctx, rows[r].bits, 0, &q));
        CHECK("mode", tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, rows[r].mode));
        CHECK("eps", tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, rows[r].eps));
        CHECK("learn", tsq_learn_codes(q, tx, NULL, &err, &sp));
        CHECK("get", tsq_quantizer_get_channel(q, 0, &eps, &delta));
        snprintf(name, sizeof name, "%s_delta", rows[r].name);
        bench_line_ratio(name, delta, "", "method.md", rows[r].delta);
        snprintf(name, sizeof name, "%s_error", rows[r].name);
        bench_line_ratio(name, err, "", "method.md", rows[r].error);
        snprintf(name, sizeof name, "%s_sparsity", rows[r].name);
        bench_line(name, sp, "");
        tsq_quantizer_destroy(q);
    }
    tsq_tensor_destroy(tx);
    free(x);
}

int main(void)
{
    tsq_context *ctx = NULL;
    double f = scale_factor();
    bench_info("bench_quantizer");
    CHECK("context", tsq_context_create(&ctx));
    bench_encode(ctx, (int64_t)(100000000 * f));
    bench_fit(ctx, (int64_t)(10000000 * f));
    table_rows(ctx);
    tsq_context_destroy(ctx);
    return 0;
}
