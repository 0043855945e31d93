/* Layers and training speed on the Fashion-MNIST network of the demo
 * ("fmnist-cnn", padding 1 on every conv, batch 128):
 *
 *   conv3x3-32, BN, ReLU -> conv3x3-32, BN, ReLU -> max-pool 2 ->
 *   conv3x3-64, BN, ReLU -> conv3x3-64, BN, ReLU -> max-pool 2 ->
 *   fc-256, BN, ReLU -> fc-10
 *
 * 1. For each conv layer: forward+backward GFLOP/s through the layer (its
 *    forward and backward called directly, as the net calls them, so that
 *    the net's input/output copies of a one-layer net do not count), and
 *    the same GEMMs (the shapes the layer issues: per image W.col, dy.col^T
 *    and W^T.dy, on the layer's own y and dy buffers) run bare through
 *    cblas_sgemm in the same process, split over the same threads. The
 *    ratio is layer / bare GEMMs (1.0 = no overhead beyond the GEMMs).
 *    The first conv computes no input gradient, as in training.
 * 2. Whole-network training (tsq_net_train_step, SGD momentum) in images/s.
 * "tN" lines use N libtsq threads (TSQ_CONTEXT_THREADS) and a one-thread
 * BLAS (libtsq's "workers" mode for N > 1); the "t1_blasN" line leaves the
 * threading to an N-thread BLAS instead. The BLAS thread count is set with
 * openblas_set_num_threads, looked up at run time (no effect on other BLAS).
 * Medians of >= 5 timed runs after a warm-up. */
#define _GNU_SOURCE 1
#include "bench.h"
#include "rng.h"

#include "blas.h"
#include "nn/nn_internal.h" /* to time a layer alone, without the net's copies */

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define BATCH 128

typedef void (*set_threads_fn)(int);

/* OpenBLAS's thread count, if this process runs OpenBLAS; 0 otherwise. */
static int set_blas_threads(int n)
{
    void *sym = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    set_threads_fn fn;
    if (!sym)
        return 0;
    memcpy(&fn, &sym, sizeof fn);
    fn(n);
    return 1;
}

static void check(tsq_status st, const char *what, const char *msg)
{
    if (st != TSQ_OK) {
        fprintf(stderr, "bench_nn: %s failed: %s (%s)\n", what, tsq_status_string(st), msg);
        exit(1);
    }
}

static void fill(float *p, int64_t n, uint64_t seed)
{
    th_rng r = {seed};
    int64_t i;
    for (i = 0; i < n; i++)
        p[i] = (float)(th_rng_uniform(&r) - 0.5);
}

static tsq_tensor *tensor(tsq_context *ctx, int32_t nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t shape[4] = {a, b, c, d};
    tsq_tensor *t = NULL;
    void *p;
    uint64_t nb;
    check(tsq_tensor_create(ctx, TSQ_DTYPE_F32, nd, shape, &t), "tensor", tsq_context_errmsg(ctx));
    tsq_tensor_data(t, &p);
    tsq_tensor_nbytes(t, &nb);
    fill(p, (int64_t)(nb / 4), 12345 + (uint64_t)nb);
    return t;
}

typedef struct {
    const char *name;
    int64_t cin, cout, hw;
    int first; /* no input gradient */
} conv_case;

static const conv_case convs[] = {
    {"conv1_1x32_28", 1, 32, 28, 1},
    {"conv2_32x32_28", 32, 32, 28, 0},
    {"conv3_32x64_14", 32, 64, 14, 0},
    {"conv4_64x64_14", 64, 64, 14, 0},
};

/* The bare GEMMs of one forward+backward of a conv layer for images
 * [first, BATCH) step `step`, on the same operands as the layer: outputs
 * written to (and dy read from) the batch-sized y / dy buffers, image by
 * image; the patch matrix and its gradient reuse one cache-resident buffer
 * per thread, as the layer's do. */
typedef struct {
    const conv_case *c;
    const float *W, *col, *dy;
    float *y, *dW, *dcol;
    int first, step;
} gemm_job;

static void *run_gemms(void *arg)
{
    const gemm_job *g = arg;
    const conv_case *c = g->c;
    int K = (int)(c->cin * 9), M = (int)c->cout, P = (int)(c->hw * c->hw);
    int n;
    for (n = g->first; n < BATCH; n += g->step) /* forward: y = W col */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, P, K, 1.0f, g->W, K, g->col, P,
                    0.0f, g->y + (size_t)n * M * P, P);
    for (n = g->first; n < BATCH; n += g->step) { /* backward: dW += dy col^T; dcol = W^T dy */
        const float *d = g->dy + (size_t)n * M * P;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, P, 1.0f, d, P, g->col, P, 1.0f,
                    g->dW, K);
        if (!c->first)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, M, 1.0f, g->W, K, d, P, 0.0f,
                        g->dcol, P);
    }
    return NULL;
}

static double time_gemms(gemm_job *jobs, int threads)
{
    pthread_t tid[2];
    double t0 = bench_now();
    int t;
    for (t = 1; t < threads; t++)
        pthread_create(&tid[t], NULL, run_gemms, &jobs[t]);
    run_gemms(&jobs[0]);
    for (t = 1; t < threads; t++)
        pthread_join(tid[t], NULL);
    return bench_now() - t0;
}

static void bench_conv(const conv_case *c, int threads, int runs)
{
    tsq_context *ctx = NULL;
    tsq_layer *l = NULL;
    tsq_net *net = NULL;
    int64_t in[3] = {c->cin, c->hw, c->hw};
    int64_t K = c->cin * 9, P = c->hw * c->hw;
    tsq_tensor *x, *y, *dy, *dx;
    double tl[16], tg[16], flops, layer, bare;
    float *xd, *yd, *dyd, *dxd, *W, *buf[2][3];
    gemm_job jobs[2];
    char name[128];
    int r, t;
    check(tsq_context_create(&ctx), "context", "");
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    check(tsq_layer_conv2d_create(ctx, c->cin, c->cout, 3, 3, 1, 1, &l), "conv", tsq_context_errmsg(ctx));
    check(tsq_net_create(ctx, 3, in, &net), "net", tsq_context_errmsg(ctx));
    check(tsq_net_append(net, l), "append", tsq_net_errmsg(net));
    x = tensor(ctx, 4, BATCH, c->cin, c->hw, c->hw);
    y = tensor(ctx, 4, BATCH, c->cout, c->hw, c->hw);
    dy = tensor(ctx, 4, BATCH, c->cout, c->hw, c->hw);
    dx = tensor(ctx, 4, BATCH, c->cin, c->hw, c->hw);
    tsq_tensor_data(x, (void **)&xd);
    tsq_tensor_data(y, (void **)&yd);
    tsq_tensor_data(dy, (void **)&dyd);
    tsq_tensor_data(dx, (void **)&dxd);
    W = malloc((size_t)(c->cout * K) * 4);
    fill(W, c->cout * K, 1);
    for (t = 0; t < threads; t++) {
        buf[t][0] = malloc((size_t)(K * P) * 4);          /* col */
        buf[t][1] = malloc((size_t)(c->cout * K) * 4);    /* dW */
        buf[t][2] = malloc((size_t)(K * P) * 4);          /* dcol */
        fill(buf[t][0], K * P, 2 + (uint64_t)t);
        fill(buf[t][1], c->cout * K, 4);
        fill(buf[t][2], K * P, 5);
        jobs[t].c = c;
        jobs[t].W = W;
        jobs[t].col = buf[t][0];
        jobs[t].dW = buf[t][1];
        jobs[t].dcol = buf[t][2];
        jobs[t].y = yd;
        jobs[t].dy = dyd;
        jobs[t].first = t;
        jobs[t].step = threads;
    }
    for (r = -1; r < runs; r++) {
        double t0 = bench_now();
        check(l->ops->forward(l, xd, yd, BATCH, 1), "forward", tsq_layer_errmsg(l));
        check(l->ops->backward(l, xd, yd, dyd, c->first ? NULL : dxd, BATCH), "backward",
              tsq_layer_errmsg(l));
        if (r >= 0)
            tl[r] = bench_now() - t0;
        t0 = time_gemms(jobs, threads);
        if (r >= 0)
            tg[r] = t0;
    }
    flops = 2.0 * (double)c->cout * (double)K * (double)P * BATCH * (c->first ? 2 : 3);
    layer = flops / bench_median(tl, runs) / 1e9;
    bare = flops / bench_median(tg, runs) / 1e9;
    snprintf(name, sizeof name, "nn_%s_fwd_bwd_b%d_t%d", c->name, BATCH, threads);
    bench_line_ratio(name, layer, "GFLOP/s", "cblas_sgemm_same_shapes", bare);
    free(W);
    for (t = 0; t < threads; t++)
        for (r = 0; r < 3; r++)
            free(buf[t][r]);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_tensor_destroy(dx);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
}

static void add(tsq_net *net, tsq_layer **l, tsq_context *ctx, tsq_status st)
{
    check(st, "layer", tsq_context_errmsg(ctx));
    check(tsq_net_append(net, *l), "append", tsq_net_errmsg(net));
    *l = NULL;
}

static tsq_net *fmnist_cnn(tsq_context *ctx)
{
    const int64_t in[3] = {1, 28, 28};
    const int64_t ch[4][2] = {{1, 32}, {32, 32}, {32, 64}, {64, 64}};
    tsq_net *net = NULL;
    tsq_layer *l;
    int i;
    check(tsq_net_create(ctx, 3, in, &net), "net", tsq_context_errmsg(ctx));
    for (i = 0; i < 4; i++) {
        l = NULL;
        add(net, &l, ctx, tsq_layer_conv2d_create(ctx, ch[i][0], ch[i][1], 3, 3, 1, 1, &l));
        add(net, &l, ctx, tsq_layer_batchnorm_create(ctx, ch[i][1], &l));
        add(net, &l, ctx, tsq_layer_relu_create(ctx, &l));
        if (i % 2 == 1)
            add(net, &l, ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &l));
    }
    add(net, &l, ctx, tsq_layer_flatten_create(ctx, &l));
    add(net, &l, ctx, tsq_layer_dense_create(ctx, 64 * 7 * 7, 256, &l));
    add(net, &l, ctx, tsq_layer_batchnorm_create(ctx, 256, &l));
    add(net, &l, ctx, tsq_layer_relu_create(ctx, &l));
    add(net, &l, ctx, tsq_layer_dense_create(ctx, 256, 10, &l));
    return net;
}

static void bench_training(int threads, int runs, const char *suffix)
{
    tsq_context *ctx = NULL;
    tsq_net *net;
    tsq_tensor *x;
    int32_t labels[BATCH];
    double t[16];
    char name[128];
    int r, i;
    check(tsq_context_create(&ctx), "context", "");
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads);
    net = fmnist_cnn(ctx);
    check(tsq_net_set_optimizer_sgd(net, 0.01, 0.9, 1, 5e-4), "sgd", tsq_net_errmsg(net));
    x = tensor(ctx, 4, BATCH, 1, 28, 28);
    for (i = 0; i < BATCH; i++)
        labels[i] = i % 10;
    for (r = -1; r < runs; r++) {
        double t0 = bench_now();
        check(tsq_net_train_step(net, x, labels, BATCH, NULL, NULL), "train_step",
              tsq_net_errmsg(net));
        if (r >= 0)
            t[r] = bench_now() - t0;
    }
    snprintf(name, sizeof name, "nn_fmnist_cnn_train_b%d_t%d%s", BATCH, threads, suffix);
    bench_line(name, BATCH / bench_median(t, runs), "images/s");
    tsq_tensor_destroy(x);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
}

int main(void)
{
    const char *mode = getenv("BENCH_NN_MODE");
    int runs = 7, threads, blas;
    size_t i;
    bench_info("bench_nn");
    if (mode) { /* exploration: "libtsq threads,BLAS threads" */
        int a = 1, b = 1;
        sscanf(mode, "%d,%d", &a, &b);
        set_blas_threads(b);
        for (i = 0; i < sizeof convs / sizeof convs[0]; i++)
            bench_conv(&convs[i], a, runs);
        bench_training(a, runs, "_explore");
        return 0;
    }
    blas = set_blas_threads(1);
    for (threads = 1; threads <= 2; threads++) {
        for (i = 0; i < sizeof convs / sizeof convs[0]; i++)
            bench_conv(&convs[i], threads, runs);
        bench_training(threads, runs, "");
    }
    if (blas) {
        set_blas_threads(2);
        bench_training(1, runs, "_blas2");
    }
    return 0;
}
