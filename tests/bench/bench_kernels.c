/* Low-bit kernels against cblas_sgemm / cblas_sgemv on the same shapes, in
 * the same process: ternary weights x 2-bit codes.
 *
 * Shapes: M = N = K = 1024; the Fashion-MNIST convolutions at batch 128 as
 * im2col GEMMs (conv2 M = 128*28*28, K = 32*9, N = 32; conv3 M = 128*14*14,
 * K = 288, N = 64; conv4 K = 576, N = 64); its dense layer (M = 128,
 * K = 3136, N = 256); and a GEMV (one row, 4096 x 4096). For each shape and
 * kernel (ref, avx2, vnni, vpopcnt, and auto with the kernel it picks): GOPS
 * (2*M*N*K / time) and the ratio to sgemm(v); the fused threshold epilogue;
 * packed weight bytes against fp32. Then, single-threaded, every kernel on
 * a GEMM (4096 x 576 x 64) and a GEMV (4096 x 4096) for code bits 1..8 and
 * weight bits 2..8: the table behind TSQ_KERNEL_AUTO; and the CPU's ceilings
 * (vpdpbusd and 512-bit FMA on registers, bench_peaks), with the plan's
 * three convolutions read in place by the VNNI kernel against the vpdpbusd
 * ceiling (bench_conv_in_place; TSQ_BENCH_IN_PLACE=1 runs only these).
 *
 * Threads: the program runs itself once per thread count in
 * TSQ_BENCH_THREADS (default "1 2"), each child with OPENBLAS_NUM_THREADS
 * set to the same count, since OpenBLAS reads it only at start-up. A single
 * count can also be run directly:
 *     OPENBLAS_NUM_THREADS=2 TSQ_BENCH_CHILD=2 build/.../bench/bench_kernels
 * Timings are medians of 5 or more runs. On each shape, sgemm and the SIMD
 * kernels are timed in interleaved rounds (one run of each per round), so
 * that load from other processes affects them alike. Single-threaded runs
 * are timed in thread CPU time (see clock_now), multi-threaded ones in wall
 * time. */
#define TSQ_EXPERIMENTAL 1 /* the kernel-level calls */
#include "bench.h"
#include "rng.h"
#include "blas.h"
#include "tsq/experimental.h"
#include "kernels/bitplane.h" /* the in-place convolution lines */

#include <spawn.h>
#include <stdint.h>
#include <sys/wait.h>

extern char **environ;

typedef struct {
    const char *name;
    int64_t m, k, n;
} shape;

static const shape shapes[] = {
    {"square1024", 1024, 1024, 1024},
    {"fmnist_conv2", 128 * 28 * 28, 32 * 9, 32},
    {"fmnist_conv3", 128 * 14 * 14, 288, 64},
    {"fmnist_conv4", 128 * 14 * 14, 576, 64},
    {"fmnist_fc", 128, 3136, 256},
    {"gemv4096", 1, 4096, 4096},
};

static const int32_t kernels[] = {TSQ_KERNEL_REF, TSQ_KERNEL_AVX2, TSQ_KERNEL_VNNI,
                                  TSQ_KERNEL_VPOPCNT, TSQ_KERNEL_AUTO};

static th_rng rng = {12345}; /* tests/support/rng.h */

/* The clock of the timings: with one thread, the calling thread's CPU time
 * (libtsq and OpenBLAS both run inline then), which leaves out the time
 * the thread waits for a core on a shared machine; with more threads, wall
 * time. */
static int use_thread_clock;

static double clock_now(void)
{
    struct timespec ts;
    if (!use_thread_clock)
        return bench_now();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, tsq_context *ctx)
{
    fprintf(stderr, "bench_kernels: %s failed: %s\n", what, ctx ? tsq_context_errmsg(ctx) : "");
    exit(1);
}

/* Median time of fn over at least 5 runs and about min_total seconds. */
typedef void (*run_fn)(void *);
static double time_median(run_fn fn, void *arg, double min_total)
{
    double t[64], start = bench_now();
    int n = 0;
    fn(arg); /* warm-up */
    while (n < 64 && (n < 5 || bench_now() - start < min_total)) {
        double t0 = clock_now();
        fn(arg);
        t[n++] = clock_now() - t0;
    }
    return bench_median(t, n);
}

/* Several methods timed in rounds (one run of each per round) until each
 * has at least 5 runs and the rounds took min_total seconds. */
typedef struct {
    const char *label;
    run_fn fn;
    void *arg;
    int32_t kernel;
    double t[64];
    int n;
    double median;
} method;

static void time_interleaved(method *m, int count, double min_total)
{
    double start;
    int i, r = 0;
    for (i = 0; i < count; i++) {
        m[i].fn(m[i].arg); /* warm-up */
        m[i].n = 0;
    }
    start = bench_now();
    while (r < 64 && (r < 5 || bench_now() - start < min_total)) {
        for (i = 0; i < count; i++) {
            double t0 = clock_now();
            m[i].fn(m[i].arg);
            m[i].t[m[i].n++] = clock_now() - t0;
        }
        r++;
    }
    for (i = 0; i < count; i++)
        m[i].median = bench_median(m[i].t, m[i].n);
}

typedef struct {
    const shape *s;
    float *a, *b, *c;
} sgemm_args;

static void run_sgemm(void *p)
{
    sgemm_args *g = p;
    if (g->s->m == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)g->s->k, (int)g->s->n, 1.0f, g->b,
                    (int)g->s->n, g->a, 1, 0.0f, g->c, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->s->m, (int)g->s->n,
                    (int)g->s->k, 1.0f, g->a, (int)g->s->k, g->b, (int)g->s->n, 0.0f, g->c,
                    (int)g->s->n);
}

typedef struct {
    tsq_context *ctx;
    tsq_packed_weights *pw;
    tsq_tensor *codes, *out;
    tsq_thresholds *th;
    int32_t kernel, code_bits;
    int32_t *acc;
    int64_t count;
    void *ws;
    uint64_t ws_bytes;
} lowbit_args;

static void run_lowbit(void *p)
{
    lowbit_args *g = p;
    if (tsq_lowbit_gemm(g->ctx, g->pw, g->codes, g->code_bits, g->kernel, g->acc, g->count,
                        g->ws, g->ws_bytes) != TSQ_OK)
        die("tsq_lowbit_gemm", g->ctx);
}

static void run_lowbit_threshold(void *p)
{
    lowbit_args *g = p;
    if (tsq_lowbit_gemm_threshold(g->ctx, g->pw, g->codes, 2, g->th, g->kernel, g->out, g->ws,
                                  g->ws_bytes) != TSQ_OK)
        die("tsq_lowbit_gemm_threshold", g->ctx);
}

static void bench_shape(tsq_context *ctx, const shape *s, int64_t threads)
{
    int64_t m = s->m, k = s->k, n = s->n, i;
    const int64_t cshape[2] = {m, k}, wshape[2] = {k, n}, oshape[2] = {m, n};
    double ops = 2.0 * (double)m * (double)n * (double)k, base_gops;
    const char *base_name = m == 1 ? "cblas_sgemv" : "cblas_sgemm";
    tsq_tensor *codes = NULL, *w = NULL, *out = NULL;
    tsq_packed_weights *pw = NULL;
    tsq_thresholds *th = NULL;
    sgemm_args sg;
    lowbit_args lbs[sizeof kernels / sizeof kernels[0]];
    int32_t chosen[sizeof kernels / sizeof kernels[0]];
    method meth[8];
    int nmeth, have_ref = 0;
    double ref_gops = 0;
    uint8_t *x;
    int8_t *wv;
    int32_t *want = NULL;
    int64_t packed;
    size_t ki;
    int have_want = 0;
    char name[160];
    float alpha_one = 0.05f, eps = 0.32f, delta = 0.65f;
    float *alpha = malloc((size_t)n * sizeof *alpha);

    if (tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, cshape, &codes) != TSQ_OK ||
        tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, wshape, &w) != TSQ_OK ||
        tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, oshape, &out) != TSQ_OK || !alpha)
        die("tensor_create", ctx);
    tsq_tensor_data(codes, (void **)&x);
    tsq_tensor_data(w, (void **)&wv);
    sg.s = s;
    sg.a = malloc((size_t)(m * k) * sizeof(float));
    sg.b = malloc((size_t)(k * n) * sizeof(float));
    sg.c = malloc((size_t)(m * n) * sizeof(float));
    if (!sg.a || !sg.b || !sg.c)
        die("malloc", NULL);
    /* Uniform 2-bit codes and ternary weights (the SIMD kernels do not care
     * about the values; the reference skips zero codes, so this is its
     * slowest case). */
    for (i = 0; i < m * k; i++) {
        x[i] = (uint8_t)(th_rng_next(&rng) & 3);
        sg.a[i] = (float)x[i];
    }
    for (i = 0; i < k * n; i++) {
        wv[i] = (int8_t)((int)(th_rng_next(&rng) % 3) - 1);
        sg.b[i] = (float)wv[i];
    }
    for (i = 0; i < n; i++)
        alpha[i] = alpha_one * (i % 2 ? 1.0f : -1.0f);
    if (tsq_packed_weights_create(ctx, w, 2, &pw) != TSQ_OK ||
        tsq_thresholds_create(ctx, n, alpha, NULL, 2, &eps, &delta, 1, &th) != TSQ_OK)
        die("packing", ctx);

    /* One lowbit_args per kernel (its own workspace), checked once against
     * the reference (single thread) or the first kernel, then timed. */
    nmeth = 0;
    meth[nmeth].label = base_name;
    meth[nmeth].fn = run_sgemm;
    meth[nmeth].arg = &sg;
    meth[nmeth++].kernel = -1;
    want = malloc((size_t)(m * n) * sizeof(int32_t));
    if (!want)
        die("malloc", NULL);
    for (ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        lowbit_args *g = &lbs[ki];
        int32_t avail;
        tsq_kernel_available(kernels[ki], &avail);
        if (!avail) {
            printf("{\"name\": \"%s_%s_t%lld_gops\", \"value\": 0, \"unit\": \"GOPS\", "
                   "\"skipped\": \"CPU lacks the kernel\"}\n",
                   s->name, tsq_kernel_name(kernels[ki]), (long long)threads);
            continue;
        }
        /* The reference is the oracle, far slower: once, single-threaded. */
        if (kernels[ki] == TSQ_KERNEL_REF && threads > 1)
            continue;
        memset(g, 0, sizeof *g);
        g->ctx = ctx;
        g->code_bits = 2;
        g->pw = pw;
        g->codes = codes;
        g->out = out;
        g->th = th;
        g->count = m * n;
        g->kernel = kernels[ki];
        g->acc = malloc((size_t)(m * n) * sizeof(int32_t));
        if (tsq_lowbit_kernel_select(ctx, pw, m, 2, g->kernel, &chosen[ki]) != TSQ_OK ||
            tsq_lowbit_workspace_size(ctx, pw, m, 2, g->kernel, &g->ws_bytes) != TSQ_OK)
            die("kernel query", ctx);
        g->ws = malloc((size_t)g->ws_bytes + 1);
        if (!g->acc || !g->ws)
            die("malloc", NULL);
        run_lowbit(g);
        if (!have_want) {
            memcpy(want, g->acc, (size_t)(m * n) * sizeof(int32_t));
            have_want = 1;
        } else if (memcmp(want, g->acc, (size_t)(m * n) * sizeof(int32_t)) != 0) {
            fprintf(stderr, "bench_kernels: %s differs from the reference on %s\n",
                    tsq_kernel_name(g->kernel), s->name);
            exit(1);
        }
        if (g->kernel == TSQ_KERNEL_REF) {
            /* Not interleaved: a handful of slow runs. */
            double t = time_median(run_lowbit, g, 0.0);
            snprintf(name, sizeof name, "%s_ref_t%lld_gops", s->name, (long long)threads);
            ref_gops = ops / t * 1e-9;
            have_ref = 1;
            continue;
        }
        meth[nmeth].label = tsq_kernel_name(g->kernel);
        meth[nmeth].fn = run_lowbit;
        meth[nmeth].arg = g;
        meth[nmeth++].kernel = (int32_t)ki;
        if (g->kernel == TSQ_KERNEL_AUTO) {
            /* The fused hidden layer: GEMM, then thresholds into u8 codes. */
            meth[nmeth].label = "auto_threshold";
            meth[nmeth].fn = run_lowbit_threshold;
            meth[nmeth].arg = g;
            meth[nmeth++].kernel = (int32_t)ki;
        }
    }
    /* Interleaved rounds, so that every method sees the same share of
     * whatever else the machine is doing; medians per method. */
    time_interleaved(meth, nmeth, 1.5);
    base_gops = ops / meth[0].median * 1e-9;
    snprintf(name, sizeof name, "%s_%s_t%lld_gops", s->name, base_name, (long long)threads);
    bench_line(name, base_gops, "GOPS");
    if (have_ref) {
        snprintf(name, sizeof name, "%s_ref_t%lld_gops", s->name, (long long)threads);
        bench_line_ratio(name, ref_gops, "GOPS", base_name, base_gops);
    }
    for (i = 1; i < nmeth; i++) {
        double gops = ops / meth[i].median * 1e-9;
        snprintf(name, sizeof name, "%s_%s_t%lld_gops", s->name, meth[i].label,
                 (long long)threads);
        if (strcmp(meth[i].label, "auto") == 0)
            printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"GOPS\", \"baseline\": "
                   "\"%s\", \"baseline_value\": %.6g, \"ratio\": %.4g, \"kernel\": \"%s\", "
                   "\"runs\": %d}\n",
                   name, gops, base_name, base_gops, gops / base_gops,
                   tsq_kernel_name(chosen[meth[i].kernel]), meth[i].n);
        else
            bench_line_ratio(name, gops, "GOPS", base_name, base_gops);
    }
    fflush(stdout);
    for (ki = 0; ki < sizeof kernels / sizeof kernels[0]; ki++) {
        free(lbs[ki].ws);
        free(lbs[ki].acc);
    }
    if (threads == 1) {
        tsq_packed_weights_get(pw, TSQ_PACKED_BYTES, &packed);
        snprintf(name, sizeof name, "%s_weight_bytes", s->name);
        bench_line_ratio(name, (double)packed, "bytes", "fp32 bytes", 4.0 * (double)(k * n));
    }
    free(want);
    free(sg.a);
    free(sg.b);
    free(sg.c);
    free(alpha);
    tsq_thresholds_destroy(th);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(out);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
}

/* Which kernel wins as the bit widths grow (the work of the bit-serial
 * kernel grows with code_bits * weight_bits, that of the byte kernels does
 * not): one conv-like shape, every kernel but the reference. This is the
 * table behind TSQ_KERNEL_AUTO. */
static void bench_bit_widths(tsq_context *ctx, int64_t threads, const char *tag, int64_t m,
                             int64_t k, int64_t n)
{
    static const int32_t cbits[] = {1, 2, 3, 4, 8}, wbits[] = {2, 3, 4, 8};
    const int64_t cshape[2] = {m, k}, wshape[2] = {k, n};
    double ops = 2.0 * (double)m * (double)n * (double)k;
    size_t a, b, ki;
    for (a = 0; a < sizeof cbits / sizeof cbits[0]; a++)
        for (b = 0; b < sizeof wbits / sizeof wbits[0]; b++) {
            tsq_tensor *codes = NULL, *w = NULL;
            tsq_packed_weights *pw = NULL;
            lowbit_args lb;
            uint8_t *x;
            int8_t *wv;
            int32_t lim = (1 << (wbits[b] - 1)) - 1, chosen = 0;
            int64_t i;
            if (tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, cshape, &codes) != TSQ_OK ||
                tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, wshape, &w) != TSQ_OK)
                die("tensor_create", ctx);
            tsq_tensor_data(codes, (void **)&x);
            tsq_tensor_data(w, (void **)&wv);
            for (i = 0; i < m * k; i++)
                x[i] = (uint8_t)(th_rng_next(&rng) & ((1u << cbits[a]) - 1));
            for (i = 0; i < k * n; i++)
                wv[i] = (int8_t)((int)(th_rng_next(&rng) % (uint64_t)(2 * lim + 1)) - lim);
            if (tsq_packed_weights_create(ctx, w, wbits[b], &pw) != TSQ_OK)
                die("packing", ctx);
            memset(&lb, 0, sizeof lb);
            lb.ctx = ctx;
            lb.pw = pw;
            lb.codes = codes;
            lb.code_bits = cbits[a];
            lb.count = m * n;
            lb.acc = malloc((size_t)(m * n) * sizeof(int32_t));
            if (!lb.acc)
                die("malloc", NULL);
            for (ki = 1; ki < sizeof kernels / sizeof kernels[0]; ki++) {
                int32_t avail;
                char name[128];
                double t;
                tsq_kernel_available(kernels[ki], &avail);
                if (!avail)
                    continue;
                lb.kernel = kernels[ki];
                if (tsq_lowbit_kernel_select(ctx, pw, m, cbits[a], lb.kernel, &chosen) !=
                        TSQ_OK ||
                    tsq_lowbit_workspace_size(ctx, pw, m, cbits[a], lb.kernel, &lb.ws_bytes) !=
                        TSQ_OK)
                    die("kernel query", ctx);
                lb.ws = malloc((size_t)lb.ws_bytes);
                if (!lb.ws)
                    die("malloc", NULL);
                t = time_median(run_lowbit, &lb, 0.1);
                snprintf(name, sizeof name, "%s_c%d_w%d_%s_t%lld_gops", tag, (int)cbits[a],
                         (int)wbits[b], tsq_kernel_name(lb.kernel), (long long)threads);
                if (lb.kernel == TSQ_KERNEL_AUTO)
                    printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"GOPS\", "
                           "\"kernel\": \"%s\"}\n", name, ops / t * 1e-9,
                           tsq_kernel_name(chosen));
                else
                    bench_line(name, ops / t * 1e-9, "GOPS");
                free(lb.ws);
            }
            free(lb.acc);
            tsq_packed_weights_destroy(pw);
            tsq_tensor_destroy(w);
            tsq_tensor_destroy(codes);
        }
}

static int run_child(const char *self, const char *count)
{
    char blas[64], child[64];
    char *argv[2];
    pid_t pid;
    int status;
    snprintf(blas, sizeof blas, "OPENBLAS_NUM_THREADS=%s", count);
    snprintf(child, sizeof child, "TSQ_BENCH_CHILD=%s", count);
    argv[0] = (char *)self;
    argv[1] = NULL;
    {
        /* The parent's environment plus the two settings. */
        size_t ne = 0, i, j = 0;
        char **env;
        while (environ[ne])
            ne++;
        env = malloc((ne + 3) * sizeof *env);
        if (!env)
            return 1;
        for (i = 0; i < ne; i++)
            if (strncmp(environ[i], "OPENBLAS_NUM_THREADS=", 21) != 0 &&
                strncmp(environ[i], "TSQ_BENCH_CHILD=", 16) != 0)
                env[j++] = environ[i];
        env[j++] = blas;
        env[j++] = child;
        env[j] = NULL;
        if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, env) != 0) {
            free(env);
            return 1;
        }
        free(env);
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
        return 1;
    return WEXITSTATUS(status);
}

/* The machine's own ceilings, in the GOPS of the lines above (2 operations
 * per multiply-add): 16 independent vpdpbusd (64 multiply-adds each) and 16
 * independent 512-bit FMAs (16 each) on registers, nothing loaded. A kernel's
 * GOPS over these says how close to the issue ports it runs (on CPUs that
 * issue vpdpbusd on one port and the FMA on two, they differ by 2x per
 * instruction). Medians of 5 runs of 2 x 10^8 instructions. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* The loop is written in assembly: compiled from intrinsics, gcc kept two
 * of the 16 accumulators on the stack (a store and a reload on their
 * chains every iteration) and moved the others between registers, so the
 * "ceiling" read 0.5-0.8 of what the kernels themselves reach. */
#define PEAK_BODY(op)                                                               \
    op " %%zmm17, %%zmm16, %%zmm0\n\t" op " %%zmm17, %%zmm16, %%zmm1\n\t"           \
    op " %%zmm17, %%zmm16, %%zmm2\n\t" op " %%zmm17, %%zmm16, %%zmm3\n\t"           \
    op " %%zmm17, %%zmm16, %%zmm4\n\t" op " %%zmm17, %%zmm16, %%zmm5\n\t"           \
    op " %%zmm17, %%zmm16, %%zmm6\n\t" op " %%zmm17, %%zmm16, %%zmm7\n\t"           \
    op " %%zmm17, %%zmm16, %%zmm8\n\t" op " %%zmm17, %%zmm16, %%zmm9\n\t"           \
    op " %%zmm17, %%zmm16, %%zmm10\n\t" op " %%zmm17, %%zmm16, %%zmm11\n\t"         \
    op " %%zmm17, %%zmm16, %%zmm12\n\t" op " %%zmm17, %%zmm16, %%zmm13\n\t"         \
    op " %%zmm17, %%zmm16, %%zmm14\n\t" op " %%zmm17, %%zmm16, %%zmm15\n\t"
/* Every register of the loop zeroed first (no denormal or NaN operands). */
#define PEAK_ZERO                                                                        \
    "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"                                                  \
    "vmovdqa64 %%zmm0, %%zmm1\n\tvmovdqa64 %%zmm0, %%zmm2\n\tvmovdqa64 %%zmm0, %%zmm3\n\t" \
    "vmovdqa64 %%zmm0, %%zmm4\n\tvmovdqa64 %%zmm0, %%zmm5\n\tvmovdqa64 %%zmm0, %%zmm6\n\t" \
    "vmovdqa64 %%zmm0, %%zmm7\n\tvmovdqa64 %%zmm0, %%zmm8\n\tvmovdqa64 %%zmm0, %%zmm9\n\t" \
    "vmovdqa64 %%zmm0, %%zmm10\n\tvmovdqa64 %%zmm0, %%zmm11\n\t"                       \
    "vmovdqa64 %%zmm0, %%zmm12\n\tvmovdqa64 %%zmm0, %%zmm13\n\t"                       \
    "vmovdqa64 %%zmm0, %%zmm14\n\tvmovdqa64 %%zmm0, %%zmm15\n\t"                       \
    "vmovdqa64 %%zmm0, %%zmm16\n\tvmovdqa64 %%zmm0, %%zmm17\n\t"
#define PEAK_CLOBBERS                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",    \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "cc"

/* n iterations of the register-only body of instruction insn. */
#define PEAK_LOOP(insn, n)                                                               \
    __asm__ volatile(PEAK_ZERO "1:\n\t" PEAK_BODY(insn) "dec %0\n\tjnz 1b"                 \
                     : "+r"(n)                                                           \
                     :                                                                   \
                     : PEAK_CLOBBERS)

__attribute__((target("avx512f,avx512vnni"))) static double peak_vnni_n(long count)
{
    long n = count / 16;
    double t0 = clock_now();
    PEAK_LOOP("vpdpbusd", n);
    t0 = clock_now() - t0;
    return (double)(count / 16) * 16 * 128 / t0 * 1e-9;
}

static double peak_vnni(void) { return peak_vnni_n(200000000); }

__attribute__((target("avx512f"))) static double peak_fma(void)
{
    long n = 200000000 / 16;
    double t0 = clock_now();
    PEAK_LOOP("vfmadd231ps", n);
    t0 = clock_now() - t0;
    return 200000000.0 / 16 * 16 * 32 / t0 * 1e-9;
}

static double bench_peaks(void)
{
    double v[5], f[5];
    int r;
    if (!__builtin_cpu_supports("avx512f"))
        return 0;
    for (r = 0; r < 5; r++)
        f[r] = peak_fma();
    bench_line("peak_fma512_f32", bench_median(f, 5), "GFLOPS");
    if (!__builtin_cpu_supports("avx512vnni"))
        return 0;
    for (r = 0; r < 5; r++)
        v[r] = peak_vnni();
    bench_line("peak_vpdpbusd", bench_median(v, 5), "GOPS");
    return bench_median(v, 5);
}
#else
static double bench_peaks(void) { return 0; }
static double peak_vnni_n(long count)
{
    (void)count;
    return 0;
}
#endif

/* The plan's three low-bit convolutions as the plan runs them on a CPU
 * with VNNI: the VNNI kernel reading each image's byte layout in place
 * (tsq__conv_vnni, bands of output rows, one row pointer per pixel), alone
 * ("conv_vnni_in_place_*") and followed by the threshold epilogue into the
 * next layer's byte layout, max-pooled where the network pools
 * ("conv_vnni_in_place_epi_*"). 64 images of 2-bit codes, ternary weights;
 * GOPS of the window's multiply-adds (2 * pixels * 9 C * N), and their
 * fraction of the vpdpbusd ceiling timed in alternation with them
 * ("peak_vpdpbusd_interleaved": the loop of peak_vnni, as many vpdpbusd as
 * the run's multiply-adds need). */
typedef struct {
    const char *name;
    int64_t c, hw, n, band;
    int pool;
} conv_shape;

typedef struct {
    const conv_shape *s;
    tsq__bp_geom g, og;
    tsq__bp_window win;
    uint8_t *img, *out;
    const uint8_t **rows;
    int8_t *dec;
    int32_t *acc;
    tsq_thresholds *th;
    int64_t images, ld;
    int epilogue;
} conv_args;

#define CONV_IMAGES 64

static void run_conv_in_place(void *p)
{
    conv_args *a = p;
    int64_t im, y0, oy, ox, ow = a->win.ow, oh = a->win.oh;
    for (im = 0; im < a->images; im++) {
        const uint8_t *img = a->img + im * a->g.image;
        for (y0 = 0; y0 < oh; y0 += a->s->band) {
            int64_t nr = oh - y0 < a->s->band ? oh - y0 : a->s->band, r = 0;
            for (oy = y0; oy < y0 + nr; oy++)
                for (ox = 0; ox < ow; ox++)
                    a->rows[r++] = img + oy * a->g.row + ox * a->g.cb;
            tsq__conv_vnni(a->rows, r, 3, 3 * a->g.cb, a->g.row, a->win.kwords * 8, a->dec, 0,
                           a->s->n, a->acc, a->ld);
            if (a->epilogue)
                tsq__bp_epilogue_bytes_avx512(a->th, a->acc, a->ld, y0, nr, ow, a->s->pool,
                                              &a->og, a->out + im * a->og.image);
        }
    }
}

static void bench_conv_in_place(tsq_context *ctx)
{
    static const conv_shape cs[] = {
        {"fmnist_conv2", 32, 28, 32, 4, 1},
        {"fmnist_conv3", 32, 14, 64, 8, 0},
        {"fmnist_conv4", 64, 14, 64, 8, 1},
    };
    size_t t;
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw"))
        return;
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        const conv_shape *s = &cs[t];
        conv_args a;
        float alpha[64], eps = 0.5f, delta = 1.0f;
        int64_t i, k, k4n, np, pixels, oh;
        uint8_t *codes;
        double ops, sec;
        char name[96];
        memset(&a, 0, sizeof a);
        a.s = s;
        a.images = CONV_IMAGES;
        tsq__bp_geom_bytes(&a.g, s->c, s->hw, s->hw, 1, 2);
        oh = s->pool ? s->hw / 2 : s->hw;
        tsq__bp_geom_bytes(&a.og, s->n, oh, oh, 1, 2);
        a.win.kh = a.win.kw = 3;
        a.win.stride = 1;
        a.win.oh = a.win.ow = s->hw;
        a.win.kwords = (9 * a.g.cb + 7) / 8;
        k = a.win.kwords * 8;
        k4n = tsq__k4n(k);
        np = (s->n + 15) / 16;
        a.ld = (s->n + 15) / 16 * 16;
        pixels = s->hw * s->hw;
        codes = malloc((size_t)(pixels * s->c));
        a.img = calloc(1, (size_t)(a.images * a.g.image + TSQ__BP_SLACK));
        a.out = calloc(1, (size_t)(a.images * a.og.image + TSQ__BP_SLACK));
        a.rows = malloc((size_t)(s->band * s->hw) * sizeof *a.rows);
        /* 64-byte aligned, as the plan allocates them (TSQ_ALIGN). */
        a.dec = aligned_alloc(64, (size_t)(np * k4n * 64));
        a.acc = aligned_alloc(64, (size_t)(s->band * s->hw * a.ld) * sizeof(int32_t));
        if (!codes || !a.img || !a.out || !a.rows || !a.dec || !a.acc)
            die("malloc", NULL);
        for (i = 0; i < a.images; i++) {
            int64_t j;
            for (j = 0; j < pixels * s->c; j++)
                codes[j] = (uint8_t)(th_rng_next(&rng) & 3);
            tsq__bp_bytes_from_codes(&a.g, codes, a.img + i * a.g.image);
        }
        for (i = 0; i < np * k4n * 64; i++)
            a.dec[i] = (int8_t)((int)(th_rng_next(&rng) % 3) - 1);
        for (i = 0; i < s->n; i++)
            alpha[i] = 0.05f * (i % 2 ? 1.0f : -1.0f);
        if (tsq_thresholds_create(ctx, s->n, alpha, NULL, 2, &eps, &delta, 1, &a.th) != TSQ_OK)
            die("thresholds", ctx);
        ops = 2.0 * (double)(a.images * pixels) * (double)(9 * s->c) * (double)s->n;
        for (a.epilogue = 0; a.epilogue <= 1; a.epilogue++) {
            /* Rounds of one run of the convolutions and one short run of the
             * ceiling's loop (about as long), so that both see the same
             * machine: on a shared VM the ceiling itself moves by 2x within
             * seconds. Medians of each. */
            double tc[64], pk[64];
            int n = 0;
            long count;
            run_conv_in_place(&a); /* warm-up */
            count = (long)(ops / 128.0) / 16 * 16 + 16; /* the same vpdpbusd count */
            while (n < 64) {
                double t0 = clock_now();
                run_conv_in_place(&a);
                tc[n] = clock_now() - t0;
                pk[n] = peak_vnni_n(count);
                n++;
            }
            sec = bench_median(tc, n);
            snprintf(name, sizeof name, "conv_vnni_in_place%s_%s", a.epilogue ? "_epi" : "",
                     s->name);
            bench_line_ratio(name, ops / sec * 1e-9, "GOPS", "peak_vpdpbusd_interleaved",
                             bench_median(pk, n));
        }
        tsq_thresholds_destroy(a.th);
        free(codes);
        free(a.img);
        free(a.out);
        free(a.rows);
        free(a.dec);
        free(a.acc);
    }
}

int main(int argc, char **argv)
{
    const char *child = getenv("TSQ_BENCH_CHILD");
    const char *only = getenv("TSQ_BENCH_IN_PLACE");
    int in_place_only = only && *only && strcmp(only, "0") != 0;
    tsq_context *ctx = NULL;
    size_t i;
    int64_t threads;
    (void)argc;
    if (!child) {
        /* Parent: one child per thread count. */
        const char *list = getenv("TSQ_BENCH_THREADS");
        char buf[64], *tok, *save = NULL;
        int rc = 0;
        bench_info("bench_kernels");
        snprintf(buf, sizeof buf, "%s", list ? list : "1 2");
        for (tok = strtok_r(buf, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save))
            rc |= run_child(argv[0], tok);
        return rc;
    }
    threads = atoll(child);
    if (threads < 1 || threads > 256)
        threads = 1;
    use_thread_clock = threads == 1;
    printf("{\"name\": \"clock_t%lld\", \"value\": 0, \"unit\": \"\", \"clock\": \"%s\"}\n",
           (long long)threads, use_thread_clock ? "thread CPU time" : "wall time");
    if (tsq_context_create(&ctx) != TSQ_OK ||
        tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads) != TSQ_OK)
        die("context", ctx);
    if (in_place_only) {
        /* TSQ_BENCH_IN_PLACE=1: only the ceilings and the in-place lines. */
        if (threads == 1) {
            bench_peaks();
            bench_conv_in_place(ctx);
        }
        tsq_context_destroy(ctx);
        return 0;
    }
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        bench_shape(ctx, &shapes[i], threads);
    if (threads == 1) {
        bench_peaks();
        bench_conv_in_place(ctx);
        bench_bit_widths(ctx, threads, "bits_gemm4096x576x64", 4096, 576, 64);
        bench_bit_widths(ctx, threads, "bits_gemv4096", 1, 4096, 4096);
    }
    tsq_context_destroy(ctx);
    return 0;
}
