/* The inference plan against the float simulation of the same converted
 * network on the Fashion-MNIST network of the demo
 * ("fmnist-cnn", padding 1 on every conv, batch 128), as TSQ converts it:
 *
 *   conv3x3-32, BN, Q(codes) -> lbconv3x3-32, Q(codes) -> max-pool 2 ->
 *   lbconv3x3-64, Q(codes) -> lbconv3x3-64, Q(codes) -> max-pool 2 ->
 *   flatten -> lbfc-256, Q(values) -> fc-10
 *
 * Hidden layers ternary (2-bit weights), 2-bit activations; the weights are
 * random (speed does not depend on their values). Lines:
 *   plan_images_per_s_tN     tsq_plan_run, caller workspace, N libtsq threads,
 *                            baseline tsq_net_forward (eval) of the same net
 *   plan_weight_bytes_hidden packed bytes of the low-bit layers, baseline
 *                            the same weights in fp32 (target ratio <= 1/12)
 *   plan_weight_bytes_total  all the plan's weights (float layers included)
 *                            against the whole net in fp32
 * "tN": N libtsq threads (TSQ_CONTEXT_THREADS) and a one-thread BLAS (set
 * through openblas_set_num_threads when present). Medians of 7 timed runs
 * after a warm-up. */
#define _GNU_SOURCE 1
#pragma GCC diagnostic ignored "-Wcomment" /* bench.h's first comment */
#include "bench.h"
#include "rng.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>

#define BATCH 128
#define RUNS 7

typedef void (*set_threads_fn)(int);

static void set_blas_threads(int n)
{
    void *sym = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    set_threads_fn fn;
    if (!sym)
        return;
    memcpy(&fn, &sym, sizeof fn);
    fn(n);
}

static void check(tsq_status st, const char *what, tsq_context *ctx)
{
    if (st != TSQ_OK) {
        fprintf(stderr, "bench_plan: %s failed: %s (%s)\n", what, tsq_status_string(st),
                tsq_context_errmsg(ctx));
        exit(1);
    }
}

static th_rng rng = {12345}; /* tests/support/rng.h */

static tsq_tensor *tensor(tsq_context *ctx, int32_t dtype, int32_t ndim, int64_t d0, int64_t d1,
                          int64_t d2, int64_t d3)
{
    int64_t shape[4] = {d0, d1, d2, d3};
    tsq_tensor *t = NULL;
    check(tsq_tensor_create(ctx, dtype, ndim, shape, &t), "tensor_create", ctx);
    return t;
}

static void *data(tsq_tensor *t)
{
    void *p = NULL;
    tsq_tensor_data(t, &p);
    return p;
}

static void append(tsq_context *ctx, tsq_net *net, tsq_layer *l)
{
    if (tsq_net_append(net, l) != TSQ_OK) {
        fprintf(stderr, "bench_plan: append: %s\n", tsq_net_errmsg(net));
        exit(1);
    }
    (void)ctx;
}

static void quant(tsq_context *ctx, tsq_net *net, int codes)
{
    tsq_layer *l = NULL;
    check(tsq_layer_act_quant_create(ctx, 2, 0.3f, 0.5f, &l), "act_quant", ctx);
    if (codes)
        check(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1.0), "option", ctx);
    append(ctx, net, l);
}

/* tsq_layer_lowbit_set takes the codes in the layer's weight shape only
 * (outputs first): give a flat codes tensor that shape. */
static tsq_status weight_shaped(tsq_layer *l, tsq_tensor *codes)
{
    tsq_tensor *w = NULL;
    int64_t shape[TSQ_MAX_DIMS];
    int32_t nd = 0;
    tsq_status st = tsq_layer_param(l, 0, &w, NULL, NULL);
    if (st == TSQ_OK)
        st = tsq_tensor_shape(w, shape, TSQ_MAX_DIMS, &nd);
    return st == TSQ_OK ? tsq_tensor_reshape(codes, nd, shape) : st;
}

static void lowbit(tsq_context *ctx, tsq_net *net, tsq_layer *l, int64_t out, int64_t in)
{
    tsq_tensor *codes = tensor(ctx, TSQ_DTYPE_I8, 1, out * in, 0, 0, 0);
    tsq_tensor *alpha = tensor(ctx, TSQ_DTYPE_F32, 1, out, 0, 0, 0);
    tsq_tensor *bias = tensor(ctx, TSQ_DTYPE_F32, 1, out, 0, 0, 0);
    int8_t *c = data(codes);
    float *a = data(alpha), *b = data(bias);
    int64_t i;
    for (i = 0; i < out * in; i++)
        c[i] = (int8_t)((int)(th_rng_uniform(&rng) * 3.0) - 1);
    for (i = 0; i < out; i++) {
        a[i] = (float)((0.5 + th_rng_uniform(&rng)) / sqrt((double)in));
        b[i] = (float)(th_rng_uniform(&rng) - 0.5);
    }
    check(weight_shaped(l, codes), "reshape", ctx);
    check(tsq_layer_lowbit_set(l, codes, alpha, bias), "lowbit_set", ctx);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    append(ctx, net, l);
}

static tsq_net *fmnist_converted(tsq_context *ctx)
{
    int64_t shape[3] = {1, 28, 28};
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    check(tsq_net_create(ctx, 3, shape, &net), "net_create", ctx);
    check(tsq_layer_conv2d_create(ctx, 1, 32, 3, 3, 1, 1, &l), "conv", ctx);
    append(ctx, net, l);
    check(tsq_layer_batchnorm_create(ctx, 32, &l), "bn", ctx);
    append(ctx, net, l);
    quant(ctx, net, 1);
    check(tsq_layer_lowbit_conv2d_create(ctx, 32, 32, 3, 3, 1, 1, 2, &l), "lbconv", ctx);
    lowbit(ctx, net, l, 32, 32 * 9);
    quant(ctx, net, 1);
    check(tsq_layer_maxpool2d_create(ctx, 2, 2, &l), "pool", ctx);
    append(ctx, net, l);
    check(tsq_layer_lowbit_conv2d_create(ctx, 32, 64, 3, 3, 1, 1, 2, &l), "lbconv", ctx);
    lowbit(ctx, net, l, 64, 32 * 9);
    quant(ctx, net, 1);
    check(tsq_layer_lowbit_conv2d_create(ctx, 64, 64, 3, 3, 1, 1, 2, &l), "lbconv", ctx);
    lowbit(ctx, net, l, 64, 64 * 9);
    quant(ctx, net, 1);
    check(tsq_layer_maxpool2d_create(ctx, 2, 2, &l), "pool", ctx);
    append(ctx, net, l);
    check(tsq_layer_flatten_create(ctx, &l), "flatten", ctx);
    append(ctx, net, l);
    check(tsq_layer_lowbit_dense_create(ctx, 64 * 7 * 7, 256, 2, &l), "lbdense", ctx);
    lowbit(ctx, net, l, 256, 64 * 7 * 7);
    quant(ctx, net, 0);
    check(tsq_layer_dense_create(ctx, 256, 10, &l), "dense", ctx);
    append(ctx, net, l);
    return net;
}

static double time_net(tsq_net *net, tsq_tensor *x, tsq_tensor *y, tsq_context *ctx)
{
    double t[RUNS];
    int r;
    check(tsq_net_forward(net, x, y, 0), "net_forward", ctx);
    for (r = 0; r < RUNS; r++) {
        double t0 = bench_now();
        check(tsq_net_forward(net, x, y, 0), "net_forward", ctx);
        t[r] = bench_now() - t0;
    }
    return bench_median(t, RUNS);
}

static double time_plan(const tsq_plan *plan, tsq_tensor *x, tsq_tensor *y, tsq_context *ctx)
{
    double t[RUNS];
    uint64_t bytes = 0;
    void *ws;
    int r;
    check(tsq_plan_workspace_size(ctx, plan, BATCH, &bytes), "workspace_size", ctx);
    ws = malloc(bytes);
    if (!ws)
        exit(1);
    check(tsq_plan_run(ctx, plan, x, y, ws, bytes), "plan_run", ctx);
    for (r = 0; r < RUNS; r++) {
        double t0 = bench_now();
        check(tsq_plan_run(ctx, plan, x, y, ws, bytes), "plan_run", ctx);
        t[r] = bench_now() - t0;
    }
    free(ws);
    return bench_median(t, RUNS);
}

int main(void)
{
    tsq_context *ctx = NULL;
    tsq_net *net;
    tsq_plan *plan = NULL;
    tsq_tensor *x, *y, *yp;
    int64_t packed = 0, fp32 = 0, fbytes = 0, i, agree = 0;
    int threads;
    bench_info("bench_plan");
    set_blas_threads(1);
    check(tsq_context_create(&ctx), "context_create", NULL);
    net = fmnist_converted(ctx);
    x = tensor(ctx, TSQ_DTYPE_F32, 4, BATCH, 1, 28, 28);
    y = tensor(ctx, TSQ_DTYPE_F32, 2, BATCH, 10, 0, 0);
    yp = tensor(ctx, TSQ_DTYPE_F32, 2, BATCH, 10, 0, 0);
    for (i = 0; i < BATCH * 28 * 28; i++)
        ((float *)data(x))[i] = (float)th_rng_uniform(&rng);
    check(tsq_plan_create(ctx, net, &plan), "plan_create", ctx);
    for (threads = 1; threads <= 2; threads++) {
        char name[64];
        double tn, tp;
        check(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads), "threads", ctx);
        tn = time_net(net, x, y, ctx);
        tp = time_plan(plan, x, yp, ctx);
        snprintf(name, sizeof name, "plan_images_per_s_t%d", threads);
        bench_line_ratio(name, BATCH / tp, "images/s", "net_forward_eval", BATCH / tn);
    }
    /* sanity: the outputs agree (the test asserts it; this guards the bench) */
    for (i = 0; i < BATCH * 10; i++)
        agree += fabsf(((float *)data(y))[i] - ((float *)data(yp))[i]) <=
                 1e-4f * fabsf(((float *)data(y))[i]);
    if (agree != BATCH * 10)
        fprintf(stderr, "bench_plan: %lld of %d logits differ\n",
                (long long)(BATCH * 10 - agree), BATCH * 10);
    check(tsq_plan_get(plan, TSQ_PLAN_PACKED_BYTES, &packed), "get", ctx);
    check(tsq_plan_get(plan, TSQ_PLAN_PACKED_FP32_BYTES, &fp32), "get", ctx);
    check(tsq_plan_get(plan, TSQ_PLAN_FLOAT_BYTES, &fbytes), "get", ctx);
    bench_line_ratio("plan_weight_bytes_hidden", (double)packed, "bytes", "fp32_bytes",
                     (double)fp32);
    bench_line_ratio("plan_weight_bytes_total", (double)(packed + fbytes), "bytes",
                     "fp32_bytes", (double)(fp32 + fbytes));
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(yp);
    tsq_context_destroy(ctx);
    return 0;
}
