/* The AMX-INT8 kernel (kernels/gemm_amx.c) against the VNNI kernel and a
 * scalar product, bit for bit: convolution windows read in place with
 * channel counts whose window rows are under, at and past 64 bytes (and
 * not multiples of it), output rows of 1 to 28 pixels (partial and
 * overlapping row groups), strides 1 and 2, 1 to 64 output channels
 * (partial panels), codes and weights at their extremes; dense products of
 * 1 to 96 rows. The image ends at a page the process may not read, so a
 * tile load past the window would fault (ASan does not see tile loads).
 * Then the plan: AMX-INT8 chosen when present and permitted, VNNI when the
 * feature is masked, the same outputs. On a CPU without AMX (or when
 * Linux refuses the permission) the kernel cases are skipped with the
 * reason, and the plan is checked to have stayed on VNNI. */
#include "harness.h"
#include "kernels/bitplane.h"
#include "kernels/kernels_internal.h"
#include "nn_testutil.h"
#include "runtime/plan_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 1 if the AMX kernel may run here; otherwise says why, once per test. */
static int amx_here(const char *test)
{
    uint32_t f = tsq__cpu_detect();
    if (!(f & TSQ_CPU_AMXINT8)) {
        printf("%s: SKIP the AMX-INT8 kernel: this CPU (or its OS) lacks AMX-INT8\n", test);
        return 0;
    }
    if (!tsq__amx_permit()) {
        printf("%s: SKIP the AMX-INT8 kernel: Linux refused the tile-data permission\n", test);
        return 0;
    }
    return 1;
}

/* n bytes whose last byte is followed by an unreadable page. */
typedef struct {
    uint8_t *base, *p;
    size_t total;
} fenced;

static uint8_t *fence_alloc(fenced *f, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), body = (n + page - 1) / page * page;
    void *v = NULL;
    ck_assert_int_eq(posix_memalign(&v, page, body + page), 0);
    f->base = v;
    f->total = body + page;
    ck_assert_int_eq(mprotect(f->base + body, page, PROT_NONE), 0);
    f->p = f->base + body - n;
    return f->p;
}

static void fence_free(fenced *f)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    ck_assert_int_eq(mprotect(f->base + f->total - page, page, PROT_READ | PROT_WRITE), 0);
    free(f->base);
}

/* Decoded panels (kernels_internal.h's layout) of the K x N weights W. */
static int8_t *panels_of(const int8_t *w, int64_t k, int64_t n)
{
    int64_t k4n = tsq__k4n(k), np = tsq__panels(n), p, q, l, e;
    int8_t *dec = calloc((size_t)(np * k4n * 64), 1);
    for (p = 0; p < np; p++)
        for (q = 0; q < k4n; q++)
            for (l = 0; l < 16 && 16 * p + l < n; l++)
                for (e = 0; e < 4 && 4 * q + e < k; e++)
                    dec[(p * k4n + q) * 64 + 4 * l + e] = w[(4 * q + e) * n + 16 * p + l];
    return dec;
}

static int8_t *amx_weights(const int8_t *dec, int64_t k, int64_t n, int64_t kh, int64_t seg)
{
    int64_t np = tsq__panels(n);
    int8_t *a = malloc((size_t)(np * tsq__amx_panel_bytes(kh, seg)));
    tsq__amx_pack(dec, k, kh, seg, np, a);
    return a;
}

/* Weight of mode: 0 ternary at random, 1 all +1, 2 all -1, 3 int8 at
 * random with the extremes often. */
static int8_t weight(th_rng *r, int mode)
{
    switch (mode) {
    case 1: return 1;
    case 2: return -1;
    case 3: {
        uint64_t v = th_rng_below(r, 4);
        return (int8_t)(v == 0 ? -128 : v == 1 ? 127 : (int)th_rng_below(r, 256) - 128);
    }
    default: return (int8_t)((int)th_rng_below(r, 3) - 1);
    }
}

/* Code of mode: 2-bit codes (0: random, 1, 2: all 3); mode 3 any byte. */
static uint8_t code(th_rng *r, int mode)
{
    if (mode == 3)
        return th_rng_below(r, 2) ? 255 : (uint8_t)th_rng_below(r, 256);
    return mode ? 3 : (uint8_t)th_rng_below(r, 4);
}

#define LD 80      /* acc row stride: wider than any n, to see stray writes */
#define SENTINEL 0x5a5a5a5a

static void check_rows(const int32_t *ref, const int32_t *got, int64_t rows, int64_t n,
                       const char *what, const char *shape)
{
    int64_t i, c;
    for (i = 0; i < rows; i++) {
        for (c = 0; c < n; c++)
            ck_assert_msg(ref[i * LD + c] == got[i * LD + c],
                          "%s, %s: row %lld column %lld: %d, expected %d", what, shape,
                          (long long)i, (long long)c, got[i * LD + c], ref[i * LD + c]);
        for (c = n; c < LD; c++)
            ck_assert_msg(got[i * LD + c] == SENTINEL, "%s, %s: column %lld written", what,
                          shape, (long long)c);
    }
}

START_TEST(test_amx_conv_in_place)
{
    static const int64_t cbs[] = {4, 8, 12, 16, 20, 32, 36, 64, 68, 132};
    static const int64_t ows[] = {1, 7, 14, 15, 16, 17, 28};
    static const int64_t ns[] = {1, 10, 17, 33, 64};
    th_rng r = {2027};
    size_t ci, oi;
    int64_t kw, stride, combo = 0;
    if (!amx_here("test_amx_conv_in_place"))
        return;
    for (ci = 0; ci < sizeof cbs / sizeof cbs[0]; ci++)
        for (kw = 1; kw <= 3; kw += 2)
            for (oi = 0; oi < sizeof ows / sizeof ows[0]; oi++)
                for (stride = 1; stride <= 2; stride++, combo++) {
                    int64_t cb = cbs[ci], ow = ows[oi], kh = kw, pad = kw / 2, oh = 3;
                    int64_t n = ns[combo % 5], wmode = combo % 4, cmode = (combo / 4) % 4;
                    int64_t w = (ow - 1) * stride + kw - 2 * pad, h = (oh - 1) * stride + kh - 2 * pad;
                    int64_t seg = kw * cb, k, i, oy, ox, ky, b, c, m = oh * ow;
                    tsq__bp_geom g;
                    tsq__bp_window win;
                    uint8_t *img;
                    int8_t *wk, *dec, *wa;
                    const uint8_t **rows;
                    int32_t *ref, *vnni, *amx;
                    fenced fence;
                    char shape[128];
                    if (cmode == 3 && wmode != 3)
                        cmode = 0; /* any byte only with int8 weights (both kernels take it) */
                    snprintf(shape, sizeof shape,
                             "cb %lld kw %lld ow %lld stride %lld n %lld modes %lld/%lld",
                             (long long)cb, (long long)kw, (long long)ow, (long long)stride,
                             (long long)n, (long long)wmode, (long long)cmode);
                    tsq__bp_geom_bytes(&g, cb, h, w, pad, 2);
                    win.kh = kh;
                    win.kw = kw;
                    win.stride = stride;
                    win.oh = oh;
                    win.ow = ow;
                    win.kwords = (kh * seg + 7) / 8;
                    k = win.kwords * 8;
                    /* The whole padded image as codes (the border too: the
                     * kernels do not care what a border holds). */
                    img = fence_alloc(&fence, (size_t)g.image);
                    for (i = 0; i < g.image; i++)
                        img[i] = code(&r, (int)cmode);
                    wk = malloc((size_t)(k * n));
                    for (i = 0; i < k * n; i++) /* rows past kh * seg too: never read */
                        wk[i] = weight(&r, (int)wmode);
                    dec = panels_of(wk, k, n);
                    wa = amx_weights(dec, k, n, kh, seg);
                    ref = malloc((size_t)(m * LD) * sizeof(int32_t));
                    vnni = malloc((size_t)(m * LD) * sizeof(int32_t));
                    amx = malloc((size_t)(m * LD) * sizeof(int32_t));
                    rows = malloc((size_t)m * sizeof *rows);
                    for (i = 0; i < m * LD; i++)
                        ref[i] = vnni[i] = amx[i] = SENTINEL;
                    for (oy = 0; oy < oh; oy++)
                        for (ox = 0; ox < ow; ox++) {
                            const uint8_t *p = img + oy * stride * g.row + ox * stride * cb;
                            rows[oy * ow + ox] = p;
                            for (c = 0; c < n; c++) {
                                int32_t s = 0;
                                for (ky = 0; ky < kh; ky++)
                                    for (b = 0; b < seg; b++)
                                        s += (int32_t)p[ky * g.row + b] *
                                             (int32_t)wk[(ky * seg + b) * n + c];
                                ref[(oy * ow + ox) * LD + c] = s;
                            }
                        }
                    tsq__conv_vnni(rows, m, kh, seg, g.row, k, dec, 0, n, vnni, LD);
                    tsq__conv_amx(img, oh, stride * g.row, ow, stride * cb, kh, seg, g.row, wa,
                                  n, amx, LD);
                    check_rows(ref, vnni, m, n, "VNNI", shape);
                    check_rows(ref, amx, m, n, "AMX", shape);
                    fence_free(&fence);
                    free(wk);
                    free(dec);
                    free(wa);
                    free(ref);
                    free(vnni);
                    free(amx);
                    free(rows);
                }
}
END_TEST

/* Dense products (one set of m rows, kh = 1, seg = k), as the plan's dense
 * stages and gathered convolutions call it. */
START_TEST(test_amx_dense)
{
    static const int64_t ms[] = {1, 7, 15, 16, 17, 33, 96};
    static const int64_t ks[] = {8, 60, 64, 72, 200, 448, 3136};
    static const int64_t ns[] = {1, 10, 17, 33, 64};
    th_rng r = {77};
    size_t mi, ki;
    int64_t combo = 0;
    if (!amx_here("test_amx_dense"))
        return;
    for (mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
        for (ki = 0; ki < sizeof ks / sizeof ks[0]; ki++, combo++) {
            int64_t m = ms[mi], k = ks[ki], n = ns[combo % 5], wmode = combo % 4, i, c, q;
            int64_t ldx = k + 4 * (combo % 3); /* rows packed or apart */
            uint8_t *x;
            int8_t *wk, *dec, *wa;
            int32_t *ref, *vnni, *amx;
            fenced fence;
            char shape[96];
            snprintf(shape, sizeof shape, "m %lld k %lld ldx %lld n %lld mode %lld",
                     (long long)m, (long long)k, (long long)ldx, (long long)n, (long long)wmode);
            x = fence_alloc(&fence, (size_t)((m - 1) * ldx + k));
            for (i = 0; i < (m - 1) * ldx + k; i++)
                x[i] = code(&r, wmode == 3 ? 3 : (int)(combo / 4 % 3));
            wk = malloc((size_t)(k * n));
            for (i = 0; i < k * n; i++)
                wk[i] = weight(&r, (int)wmode);
            dec = panels_of(wk, k, n);
            wa = amx_weights(dec, k, n, 1, k);
            ref = malloc((size_t)(m * LD) * sizeof(int32_t));
            vnni = malloc((size_t)(m * LD) * sizeof(int32_t));
            amx = malloc((size_t)(m * LD) * sizeof(int32_t));
            for (i = 0; i < m * LD; i++)
                ref[i] = vnni[i] = amx[i] = SENTINEL;
            for (i = 0; i < m; i++)
                for (c = 0; c < n; c++) {
                    int32_t s = 0;
                    for (q = 0; q < k; q++)
                        s += (int32_t)x[i * ldx + q] * (int32_t)wk[q * n + c];
                    ref[i * LD + c] = s;
                }
            tsq__gemm_vnni(x, ldx, m, k, dec, 0, n, vnni, LD);
            tsq__conv_amx(x, 1, 0, m, ldx, 1, k, 0, wa, n, amx, LD);
            check_rows(ref, vnni, m, n, "VNNI", shape);
            check_rows(ref, amx, m, n, "AMX", shape);
            fence_free(&fence);
            free(wk);
            free(dec);
            free(wa);
            free(ref);
            free(vnni);
            free(amx);
        }
}
END_TEST

/* ---- the plan ---------------------------------------------------------- */

static tsq_layer *quant(tsq_context *ctx, int32_t bits, float eps, float delta)
{
    tsq_layer *l = NULL;
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, bits, eps, delta, &l));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1.0));
    return l;
}

/* The demo's shape, smaller: a float conv and front into bytes, then
 * low-bit convs of 32 -> 32 (28 wide: two overlapping row groups), a pool,
 * 32 -> 64 and 64 -> 20 (14 wide, window rows of 96 and 192 bytes), a
 * pool, a low-bit dense and a float classifier. */
static tsq_net *make_net(tsq_context *ctx, uint64_t seed)
{
    th_rng r = {seed};
    int64_t shape[3] = {1, 28, 28};
    tsq_layer *L[20] = {0};
    int n = 0;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 32, 3, 3, 1, 1, &L[n]));
    nt_randomize_float(ctx, L[n++], &r);
    L[n++] = quant(ctx, 2, 0.1f, 0.4f);
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 32, 32, 3, 3, 1, 1, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 32, 288, 2, &r);
    L[n++] = quant(ctx, 2, 0.2f, 0.5f);
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 32, 64, 3, 3, 1, 1, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 64, 288, 2, &r);
    L[n++] = quant(ctx, 2, 0.2f, 0.5f);
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 64, 20, 3, 3, 1, 1, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 20, 576, 2, &r);
    L[n++] = quant(ctx, 2, 0.2f, 0.5f);
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 20 * 7 * 7, 24, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 24, 20 * 7 * 7, 2, &r);
    L[n++] = quant(ctx, 2, 0.3f, 0.5f);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 24, 10, &L[n]));
    nt_randomize_float(ctx, L[n++], &r);
    L[n] = NULL;
    return nt_net(ctx, 3, shape, L);
}

/* y of a plan made with the CPU features `cpu` (a subset of the detected
 * ones, kept through the public TSQ_CONTEXT_CPU_MASK); *amx and *vnni
 * count its stages on tiles and on VNNI. */
static void run_with_cpu(tsq_context *ctx, tsq_net *net, uint32_t cpu, const tsq_tensor *x,
                         tsq_tensor *y, int *amx, int *vnni)
{
    tsq_plan *plan = NULL;
    uint32_t used = 0;
    int32_t i;
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, (double)cpu));
    TH_OK(ctx, tsq_context_cpu_features(ctx, &used));
    ck_assert_uint_eq(used, cpu);
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    *amx = *vnni = 0;
    for (i = 0; i < plan->nstages; i++) {
        *amx += plan->stages[i].bp_amx;
        *vnni += plan->stages[i].bp_bytes && !plan->stages[i].bp_amx;
    }
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
    tsq_plan_destroy(plan);
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, 4294967295.0));
}

/* Same predictions, every logit within 1e-4 of the sample's largest (the
 * float net's summation order depends on the BLAS kernels, e.g. under
 * valgrind, and a logit near 0 has no relative precision to compare). */
static void compare(const float *plan, const float *ref, int64_t batch, int64_t classes)
{
    int64_t i, c;
    for (i = 0; i < batch; i++) {
        int64_t ap = 0, ar = 0;
        float top = 0;
        for (c = 0; c < classes; c++)
            top = fabsf(ref[i * classes + c]) > top ? fabsf(ref[i * classes + c]) : top;
        for (c = 0; c < classes; c++) {
            float a = plan[i * classes + c], b = ref[i * classes + c];
            NT_REQUIRE(fabsf(a - b) <= 1e-4f * top + 1e-30f,
                       "sample %lld logit %lld: plan %.9g, net %.9g", (long long)i,
                       (long long)c, (double)a, (double)b);
            if (plan[i * classes + c] > plan[i * classes + ap])
                ap = c;
            if (ref[i * classes + c] > ref[i * classes + ar])
                ar = c;
        }
        NT_REQUIRE(ap == ar, "sample %lld: plan predicts %lld, net %lld", (long long)i,
                   (long long)ap, (long long)ar);
    }
}

/* The log line of the stage's kernel, at info level. */
static void find_amx(void *user, int32_t level, const char *message)
{
    (void)level;
    if (strstr(message, "AMX-INT8 tiles"))
        ++*(int *)user;
}

START_TEST(test_amx_plan)
{
    static const int64_t batches[] = {1, 7, 257};
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    uint32_t full = ctx->cpu, masked = full & ~(uint32_t)TSQ_CPU_AMXINT8;
    int here = (full & TSQ_CPU_AMXINT8) && tsq__amx_permit(), logged = 0;
    size_t bi;
    int32_t threads;
    tsq_net *net = make_net(ctx, 91);
    if (!here)
        printf("test_amx_plan: the AMX-INT8 plan is not available here (%s): checking the "
               "fallback only\n",
               full & TSQ_CPU_AMXINT8 ? "permission refused" : "no AMX-INT8");
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_LOG_LEVEL, 3));
    TH_OK(ctx, tsq_context_set_log(ctx, find_amx, &logged));
    for (threads = 1; threads <= 2; threads++)
        for (bi = 0; bi < 3; bi++) {
            int64_t b = batches[bi];
            size_t bytes = (size_t)(b * 10) * sizeof(float);
            tsq_tensor *x = nt_tensor(ctx, 4, b, 1, 28, 28);
            tsq_tensor *ya = nt_tensor(ctx, 2, b, 10, 0, 0), *yv = nt_tensor(ctx, 2, b, 10, 0, 0);
            tsq_tensor *yr = nt_tensor(ctx, 2, b, 10, 0, 0);
            th_rng r = {5 + (uint64_t)b};
            int amx_full = 0, vnni_full = 0, amx_masked = 0, vnni_masked = 0;
            TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
            nt_fill_normal(x, &r, 1.0);
            TH_OK(ctx, tsq_net_forward(net, x, yr, 0));
            run_with_cpu(ctx, net, full, x, ya, &amx_full, &vnni_full);
            run_with_cpu(ctx, net, masked, x, yv, &amx_masked, &vnni_masked);
            ck_assert_int_eq(amx_masked, 0); /* masked: back to VNNI */
            if (tsq__kernel_runs(TSQ_KERNEL_VNNI, full)) {
                /* the three convs on bytes (the dense on bit planes here) */
                ck_assert_int_eq(here ? amx_full : vnni_full, 3);
                ck_assert_int_eq(here ? vnni_full : amx_full, 0);
                ck_assert_int_eq(vnni_masked, 3);
            }
            NT_REQUIRE(memcmp(nt_data(ya), nt_data(yv), bytes) == 0,
                       "batch %lld threads %d: the AMX plan differs from the VNNI plan",
                       (long long)b, (int)threads);
            compare(nt_data(ya), nt_data(yr), b, 10);
            tsq_tensor_destroy(x);
            tsq_tensor_destroy(ya);
            tsq_tensor_destroy(yv);
            tsq_tensor_destroy(yr);
        }
    ck_assert_int_eq(logged > 0, here); /* the stage list says which kernel */
    TH_OK(ctx, tsq_context_set_log(ctx, NULL, NULL));
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* Without VPOPCNTDQ the dense layer reads bytes too: on tiles, one set of
 * up to 96 rows, with kh = 1 over its whole input. */
START_TEST(test_amx_plan_dense_bytes)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    uint32_t full = ctx->cpu & ~(uint32_t)TSQ_CPU_AVX512VPOPCNTDQ;
    uint32_t masked = full & ~(uint32_t)TSQ_CPU_AMXINT8;
    int here = (full & TSQ_CPU_AMXINT8) && tsq__amx_permit();
    tsq_net *net = make_net(ctx, 92);
    int64_t b = 257;
    tsq_tensor *x = nt_tensor(ctx, 4, b, 1, 28, 28);
    tsq_tensor *ya = nt_tensor(ctx, 2, b, 10, 0, 0), *yv = nt_tensor(ctx, 2, b, 10, 0, 0);
    th_rng r = {17};
    int amx_full = 0, vnni_full = 0, amx_masked = 0, vnni_masked = 0;
    nt_fill_normal(x, &r, 1.0);
    run_with_cpu(ctx, net, full, x, ya, &amx_full, &vnni_full);
    run_with_cpu(ctx, net, masked, x, yv, &amx_masked, &vnni_masked);
    if (tsq__kernel_runs(TSQ_KERNEL_VNNI, full)) {
        ck_assert_int_eq(here ? amx_full : vnni_full, 4);
        ck_assert_int_eq(vnni_masked, 4);
    }
    ck_assert_int_eq(amx_masked, 0);
    ck_assert_int_eq(memcmp(nt_data(ya), nt_data(yv), (size_t)(b * 10) * sizeof(float)), 0);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(ya);
    tsq_tensor_destroy(yv);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

static Suite *amx_suite(void)
{
    Suite *s = suite_create("amx");
    TCase *tc = tcase_create("amx");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_amx_conv_in_place);
    tcase_add_test(tc, test_amx_dense);
    tcase_add_test(tc, test_amx_plan);
    tcase_add_test(tc, test_amx_plan_dense_bytes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(amx_suite()); }
