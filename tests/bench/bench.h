/*
 * Benchmark support shared by the programs in tests/bench/. Every benchmark
 * prints one JSON object per line with at least "name", "value" and "unit", plus
 * "baseline" and "ratio" where a baseline was measured in the same process.
 * Timings are medians of several runs. The first line of each program is an
 * "info" object naming the BLAS and its kernel, since a benchmark against
 * OpenBLAS's generic fallback kernel would be meaningless.
 */
#ifndef TSQ_BENCH_H
#define TSQ_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tsq.h"

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (n <= 64); reorders the array. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Escapes nothing: names and units are plain ASCII chosen by the benchmarks. */
static inline void bench_line(const char *name, double value, const char *unit)
{
    printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n", name, value, unit);
    fflush(stdout);
}

/* ratio = value / baseline (so higher is better for throughputs). */
static inline void bench_line_ratio(const char *name, double value, const char *unit,
                                    const char *baseline_name, double baseline)
{
    printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", \"baseline\": \"%s\", "
           "\"baseline_value\": %.6g, \"ratio\": %.4g}\n",
           name, value, unit, baseline_name, baseline, baseline > 0 ? value / baseline : 0.0);
    fflush(stdout);
}

/* The first line of every benchmark program. */
static inline void bench_info(const char *program)
{
    tsq_context *ctx = NULL;
    const char *blas = "?", *core = "?", *cpu = "?";
    char b[256], k[128];
    if (tsq_context_create(&ctx) == TSQ_OK) {
        tsq_context_info(ctx, TSQ_INFO_BLAS, &blas);
        snprintf(b, sizeof b, "%s", blas);
        tsq_context_info(ctx, TSQ_INFO_BLAS_CORE, &core);
        snprintf(k, sizeof k, "%s", core);
        tsq_context_info(ctx, TSQ_INFO_CPU, &cpu);
        printf("{\"name\": \"info\", \"program\": \"%s\", \"value\": 0, \"unit\": \"\", "
               "\"blas\": \"%s\", \"blas_kernel\": \"%s\", \"cpu\": \"%s\"}\n",
               program, b, k, cpu);
        tsq_context_destroy(ctx);
    }
    fflush(stdout);
}

#endif
