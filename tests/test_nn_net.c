/* Networks and the caller-driven loop: learning separable tasks to 100%,
 * determinism, optimiser and schedule formulas, clone/copy, rewrites,
 * parameter access, every bad-input path, and allocation failures. */
#include "nn_testutil.h"

#include <stdio.h>

/* ---- data: images 1x8x8 with a bright 3x3 square in one of 4 quadrants ---- */
static void make_quadrant_images(th_rng *r, float *x, int32_t *labels, int64_t n)
{
    int64_t i, p;
    for (i = 0; i < n; i++) {
        int32_t c = (int32_t)(th_rng_next(r) % 4);
        int64_t oy = (c / 2) * 4 + (int64_t)(th_rng_uniform(r) * 2);
        int64_t ox = (c % 2) * 4 + (int64_t)(th_rng_uniform(r) * 2);
        int64_t a, b;
        float *img = x + i * 64;
        for (p = 0; p < 64; p++)
            img[p] = (float)(0.3 * th_rng_normal(r));
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++)
                img[(oy + a) * 8 + ox + b] += 1.5f;
        labels[i] = c;
    }
}

/* conv-BN-relu-pool-conv-BN-relu-gap-dense: a small CNN. */
static tsq_net *small_cnn(tsq_context *ctx)
{
    const int64_t in[3] = {1, 8, 8};
    tsq_layer *L[10] = {NULL};
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &L[1]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[3]));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 4, 8, 3, 3, 1, 1, &L[4]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &L[5]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[6]));
    TH_OK(ctx, tsq_layer_global_avgpool_create(ctx, &L[7]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 8, 4, &L[8]));
    return nt_net(ctx, 3, in, L);
}

/* Accuracy (in %) of net on n samples, evaluated in batches of 50. */
static double accuracy(tsq_context *ctx, tsq_net *net, const float *x, const int32_t *labels,
                       int64_t n, int64_t sample)
{
    int64_t hits = 0, i;
    for (i = 0; i < n; i += 50) {
        int64_t b = n - i < 50 ? n - i : 50, c = 0;
        int64_t shape[2] = {b, sample};
        tsq_tensor *xt = NULL;
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, shape, (void *)(x + i * sample),
                                   (uint64_t)(b * sample) * 4, &xt));
        ck_assert_msg(tsq_net_evaluate(net, xt, labels + i, b, NULL, &c, NULL) == TSQ_OK, "%s",
                      tsq_net_errmsg(net));
        hits += c;
        tsq_tensor_destroy(xt);
    }
    return 100.0 * (double)hits / (double)n;
}

/* The host's loop: epochs of shuffled mini-batches, one train step each. */
static void train_epochs(tsq_context *ctx, tsq_net *net, const float *x, const int32_t *labels,
                         int64_t n, int64_t sample, int64_t batch, int epochs, th_rng *r)
{
    int64_t *order = malloc((size_t)n * sizeof *order), i, e;
    float *bx = malloc((size_t)(batch * sample) * sizeof(float));
    int32_t *by = malloc((size_t)batch * sizeof(int32_t));
    int64_t shape[2] = {batch, sample};
    tsq_tensor *xt = NULL;
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, shape, bx, (uint64_t)(batch * sample) * 4, &xt));
    for (i = 0; i < n; i++)
        order[i] = i;
    for (e = 0; e < epochs; e++) {
        for (i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(th_rng_next(r) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (i = 0; i + batch <= n; i += batch) {
            double loss;
            int64_t k;
            for (k = 0; k < batch; k++) {
                memcpy(bx + k * sample, x + order[i + k] * sample, (size_t)sample * sizeof(float));
                by[k] = labels[order[i + k]];
            }
            ck_assert_msg(tsq_net_train_step(net, xt, by, batch, &loss, NULL) == TSQ_OK, "%s",
                          tsq_net_errmsg(net));
        }
    }
    tsq_tensor_destroy(xt);
    free(order);
    free(bx);
    free(by);
}

START_TEST(test_cnn_learns_quadrants)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {11};
    const int64_t n = 400, nt = 200;
    float *x = malloc((size_t)(n + nt) * 64 * sizeof(float));
    int32_t *y = malloc((size_t)(n + nt) * sizeof(int32_t));
    tsq_net *net;
    double acc_train, acc_test, lr;
    TH_OK(ctx, tsq_context_set_seed(ctx, 5));
    make_quadrant_images(&r, x, y, n + nt);
    net = small_cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.1, 0.9, 1, 1e-4));
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, 8 * (n / 20), 0.001));
    train_epochs(ctx, net, x, y, n, 64, 20, 8, &r);
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(fabs(lr - 0.001) < 1e-12); /* the cosine schedule ran out */
    acc_train = accuracy(ctx, net, x, y, n, 64);
    acc_test = accuracy(ctx, net, x + n * 64, y + n, nt, 64);
    ck_assert_msg(acc_train == 100.0 && acc_test == 100.0, "train %.1f%%, test %.1f%%", acc_train,
                  acc_test);
    tsq_net_destroy(net);
    free(x);
    free(y);
    th_context_done(ctx, &st);
}
END_TEST

/* Three Gaussian blobs in 6-d, an MLP with Adam and a step schedule. */
START_TEST(test_mlp_learns_blobs)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {12};
    const int64_t n = 300, nt = 150, in[1] = {6};
    float *x = malloc((size_t)(n + nt) * 6 * sizeof(float));
    int32_t *y = malloc((size_t)(n + nt) * sizeof(int32_t));
    tsq_layer *L[5] = {NULL};
    tsq_net *net;
    int64_t i, k;
    double acc_train, acc_test;
    for (i = 0; i < n + nt; i++) {
        y[i] = (int32_t)(i % 3);
        for (k = 0; k < 6; k++)
            x[i * 6 + k] = (float)(th_rng_normal(&r) + (k % 3 == y[i] ? 3.0 : 0.0));
    }
    TH_OK(ctx, tsq_layer_dense_create(ctx, 6, 16, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 16, &L[1]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 16, 3, &L[3]));
    net = nt_net(ctx, 1, in, L);
    TH_OK(ctx, tsq_net_set_optimizer_adam(net, 0.01, 0.9, 0.999, 1e-8, 0.0));
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 100, 0.5));
    train_epochs(ctx, net, x, y, n, 6, 30, 20, &r);
    acc_train = accuracy(ctx, net, x, y, n, 6);
    acc_test = accuracy(ctx, net, x + n * 6, y + n, nt, 6);
    ck_assert_msg(acc_train == 100.0 && acc_test == 100.0, "train %.1f%%, test %.1f%%", acc_train,
                  acc_test);
    tsq_net_destroy(net);
    free(x);
    free(y);
    th_context_done(ctx, &st);
}
END_TEST

/* Copies every parameter and state of a net into one malloc'd buffer. */
static unsigned char *snapshot(tsq_context *ctx, tsq_net *net, size_t *size)
{
    unsigned char *buf = NULL;
    size_t used = 0;
    int32_t nl, i, k, np, ns;
    TH_OK(ctx, tsq_net_layer_count(net, &nl));
    for (i = 0; i < nl; i++) {
        tsq_layer *l = NULL;
        TH_OK(ctx, tsq_net_layer(net, i, &l));
        TH_OK(ctx, tsq_layer_param_count(l, &np));
        TH_OK(ctx, tsq_layer_state_count(l, &ns));
        for (k = 0; k < np + ns; k++) {
            tsq_tensor *t = NULL;
            uint64_t nb = 0;
            if (k < np)
                TH_OK(ctx, tsq_layer_param(l, k, &t, NULL, NULL));
            else
                TH_OK(ctx, tsq_layer_state(l, k - np, &t, NULL));
            TH_OK(ctx, tsq_tensor_nbytes(t, &nb));
            buf = realloc(buf, used + nb);
            TH_OK(ctx, tsq_tensor_copy_out(t, buf + used, nb));
            used += nb;
        }
    }
    *size = used;
    return buf;
}

static unsigned char *train_run(uint64_t seed, int64_t threads, size_t *size)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {13};
    float x[200 * 64];
    int32_t y[200];
    tsq_net *net;
    unsigned char *snap;
    TH_OK(ctx, tsq_context_set_seed(ctx, seed));
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
    make_quadrant_images(&r, x, y, 200);
    net = small_cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_adam(net, 0.01, 0.9, 0.999, 1e-8, 1e-4));
    train_epochs(ctx, net, x, y, 200, 64, 50, 3, &r);
    snap = snapshot(ctx, net, size);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
    return snap;
}

START_TEST(test_determinism)
{
    size_t a, b, c, d, e;
    unsigned char *s1 = train_run(7, 1, &a), *s2 = train_run(7, 1, &b);
    unsigned char *s3 = train_run(7, 2, &c), *s4 = train_run(7, 2, &d);
    unsigned char *s5 = train_run(8, 2, &e);
    ck_assert_uint_eq(a, b);
    ck_assert_mem_eq(s1, s2, a); /* same seed, same threads: bit-identical */
    ck_assert_uint_eq(c, d);
    ck_assert_mem_eq(s3, s4, c);
    ck_assert_uint_eq(c, e);
    ck_assert(memcmp(s3, s5, c) != 0); /* another seed: other weights */
    free(s1);
    free(s2);
    free(s3);
    free(s4);
    free(s5);
}
END_TEST

/* One dense 2 -> 1 layer; gradients written by the host, update by hand. */
START_TEST(test_optimizer_formulas)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t in[1] = {2};
    tsq_layer *l = NULL;
    tsq_net *net;
    tsq_tensor *w = NULL, *gw = NULL, *b = NULL, *gb = NULL;
    int32_t np, li;
    const char *name;
    int64_t t;
    int variant;
    TH_OK(ctx, tsq_layer_dense_create(ctx, 2, 1, &l));
    net = nt_net(ctx, 1, in, (tsq_layer *[]){l, NULL});
    ck_assert_int_eq(tsq_net_update(net), TSQ_ERR_STATE);
    TH_OK(ctx, tsq_net_param_count(net, &np));
    ck_assert_int_eq(np, 2);
    TH_OK(ctx, tsq_net_param(net, 0, &w, &gw, &li, &name));
    ck_assert_str_eq(name, "weight");
    ck_assert_int_eq(li, 0);
    TH_OK(ctx, tsq_net_param(net, 1, &b, &gb, &li, &name));
    ck_assert_str_eq(name, "bias");
    for (variant = 0; variant < 3; variant++) {
        /* Reference state in double. */
        double W = 0.5, B = -0.25, vW = 0, vB = 0, mW = 0, mB = 0, sW = 0, sB = 0;
        double lr = 0.1, mu = 0.9, wd = 0.01;
        int step;
        nt_data(w)[0] = (float)W;
        nt_data(w)[1] = 0.0f;
        nt_data(b)[0] = (float)B;
        if (variant == 0)
            TH_OK(ctx, tsq_net_set_optimizer_sgd(net, lr, mu, 0, wd));
        else if (variant == 1)
            TH_OK(ctx, tsq_net_set_optimizer_sgd(net, lr, mu, 1, wd));
        else
            TH_OK(ctx, tsq_net_set_optimizer_adam(net, lr, 0.9, 0.99, 1e-8, wd));
        for (step = 1; step <= 3; step++) {
            double g = 0.3 * step, gB = -0.2 * step;
            nt_data(gw)[0] = (float)g;
            nt_data(gw)[1] = 0.0f;
            nt_data(gb)[0] = (float)gB;
            TH_OK(ctx, tsq_net_update(net));
            g += wd * W; /* weight decay on weights only */
            if (variant < 2) {
                vW = mu * vW + g;
                vB = mu * vB + gB;
                W -= lr * (variant == 1 ? g + mu * vW : vW);
                B -= lr * (variant == 1 ? gB + mu * vB : vB);
            } else {
                mW = 0.9 * mW + 0.1 * g;
                mB = 0.9 * mB + 0.1 * gB;
                sW = 0.99 * sW + 0.01 * g * g;
                sB = 0.99 * sB + 0.01 * gB * gB;
                W -= lr * (mW / (1 - pow(0.9, step))) / (sqrt(sW / (1 - pow(0.99, step))) + 1e-8);
                B -= lr * (mB / (1 - pow(0.9, step))) / (sqrt(sB / (1 - pow(0.99, step))) + 1e-8);
            }
            ck_assert_msg(fabs(nt_data(w)[0] - W) < 1e-5 && fabs(nt_data(b)[0] - B) < 1e-5,
                          "variant %d step %d: w %g vs %g, b %g vs %g", variant, step,
                          (double)nt_data(w)[0], W, (double)nt_data(b)[0], B);
        }
        TH_OK(ctx, tsq_net_step_count(net, &t));
        ck_assert_int_eq(t, 3);
    }
    /* A frozen layer is left alone. */
    {
        float keep = nt_data(w)[0];
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_TRAINABLE, 0));
        nt_data(gw)[0] = 1.0f;
        TH_OK(ctx, tsq_net_update(net));
        ck_assert(nt_data(w)[0] == keep);
    }
    /* A NaN gradient stops the update. */
    nt_data(gw)[0] = NAN;
    ck_assert_int_eq(tsq_net_update(net), TSQ_ERR_NOT_FINITE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "gradient of 'weight'"));
    /* Argument bounds. */
    ck_assert_int_eq(tsq_net_set_optimizer_sgd(net, 0.0, 0.9, 0, 0), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_optimizer_sgd(net, 0.1, 1.0, 0, 0), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_optimizer_sgd(net, 0.1, 0.0, 1, 0), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_optimizer_adam(net, 0.1, 0.9, 1.0, 1e-8, 0), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_optimizer_adam(net, 0.1, 0.9, 0.99, 0.0, 0), TSQ_ERR_INVALID);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA: by default an update moves the shadow
 * weights and offsets of a low-bit layer but not its scales; with the
 * option set, alpha moves by exactly -lr * its gradient (plain SGD). */
START_TEST(test_lowbit_alpha_option)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t in[1] = {3};
    tsq_layer *l = NULL, *dense = NULL;
    tsq_net *net;
    tsq_tensor *v[3], *g[3];
    int32_t np, li, i;
    const char *name;
    double on = -1, lo, hi;
    float before[3];
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 3, 2, 2, &l));
    net = nt_net(ctx, 1, in, (tsq_layer *[]){l, NULL});
    TH_OK(ctx, tsq_net_param_count(net, &np));
    ck_assert_int_eq(np, 3);
    for (i = 0; i < 3; i++)
        TH_OK(ctx, tsq_net_param(net, i, &v[i], &g[i], &li, &name));
    ck_assert_str_eq(name, "bias");
    TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, &on));
    ck_assert(on == 0);
    TH_OK(ctx, tsq_layer_option_bounds(TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, &lo, &hi));
    ck_assert(lo == 0 && hi == 1);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.1, 0.0, 0, 0.0));
    for (i = 0; i < 3; i++) {
        nt_data(g[i])[0] = 0.5f;
        before[i] = nt_data(v[i])[0];
    }
    TH_OK(ctx, tsq_net_update(net));
    ck_assert(nt_data(v[0])[0] == before[0] - 0.05f); /* shadow weight */
    ck_assert(nt_data(v[1])[0] == before[1]);         /* alpha held */
    ck_assert(nt_data(v[2])[0] == before[2] - 0.05f); /* bias */
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, 1));
    TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, &on));
    ck_assert(on == 1);
    before[1] = nt_data(v[1])[0];
    TH_OK(ctx, tsq_net_update(net));
    ck_assert(nt_data(v[1])[0] == before[1] - 0.05f);
    /* Not a flag value; not a low-bit layer: refused, state kept. */
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, 0.5),
                     TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, &on));
    ck_assert(on == 1);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 2, 2, &dense));
    ck_assert_int_eq(tsq_layer_set_option(dense, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, 1),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_layer_errmsg(dense), "does not apply to a dense layer"));
    ck_assert_int_eq(tsq_layer_get_option(dense, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, &on),
                     TSQ_ERR_INVALID);
    tsq_layer_destroy(dense);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_schedules)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t in[1] = {2};
    tsq_layer *l = NULL;
    tsq_net *net;
    double lr;
    TH_OK(ctx, tsq_layer_dense_create(ctx, 2, 1, &l));
    net = nt_net(ctx, 1, in, (tsq_layer *[]){l, NULL});
    ck_assert_int_eq(tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 10, 0.5), TSQ_ERR_STATE);
    ck_assert_int_eq(tsq_net_get_lr(net, &lr), TSQ_ERR_STATE);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.8, 0.0, 0, 0.0));
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 10, 0.5));
    TH_OK(ctx, tsq_net_set_step_count(net, 9));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(lr == 0.8);
    TH_OK(ctx, tsq_net_set_step_count(net, 25));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(fabs(lr - 0.2) < 1e-15);
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, 100, 0.1));
    TH_OK(ctx, tsq_net_set_step_count(net, 0));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(fabs(lr - 0.8) < 1e-15);
    TH_OK(ctx, tsq_net_set_step_count(net, 50));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(fabs(lr - 0.45) < 1e-12);
    TH_OK(ctx, tsq_net_set_step_count(net, 500));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(fabs(lr - 0.1) < 1e-15);
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_CONSTANT, 0, 0));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(lr == 0.8);
    ck_assert_int_eq(tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 0, 0.5), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 5, 1.5), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, 5, 0.9), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_lr_schedule(net, 7, 5, 0.1), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_step_count(net, -1), TSQ_ERR_INVALID);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_clone_and_copy)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {14};
    float x[100 * 64];
    int32_t y[100];
    int64_t shape[4] = {100, 1, 8, 8};
    tsq_tensor *xt = NULL, *o1 = nt_tensor(ctx, 2, 100, 4, 0, 0), *o2 = nt_tensor(ctx, 2, 100, 4, 0, 0);
    tsq_net *net, *copy = NULL;
    size_t s1, s2;
    unsigned char *a, *b;
    make_quadrant_images(&r, x, y, 100);
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, shape, x, sizeof x, &xt));
    net = small_cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.05, 0.9, 0, 0));
    train_epochs(ctx, net, x, y, 100, 64, 25, 1, &r);
    TH_OK(ctx, tsq_net_clone(net, &copy));
    TH_OK(ctx, tsq_net_forward(net, xt, o1, 0));
    TH_OK(ctx, tsq_net_forward(copy, xt, o2, 0));
    ck_assert_mem_eq(nt_data(o1), nt_data(o2), 400 * sizeof(float));
    /* The clone carries the optimiser: the same steps give the same weights. */
    train_epochs(ctx, net, x, y, 100, 64, 25, 1, &(th_rng){99});
    train_epochs(ctx, copy, x, y, 100, 64, 25, 1, &(th_rng){99});
    a = snapshot(ctx, net, &s1);
    b = snapshot(ctx, copy, &s2);
    ck_assert_uint_eq(s1, s2);
    ck_assert_mem_eq(a, b, s1);
    free(b);
    /* Training the copy alone leaves the original alone; copy_params syncs. */
    train_epochs(ctx, copy, x, y, 100, 64, 25, 1, &r);
    b = snapshot(ctx, net, &s2);
    ck_assert_mem_eq(a, b, s1);
    free(b);
    TH_OK(ctx, tsq_net_copy_params(copy, net));
    b = snapshot(ctx, copy, &s2);
    ck_assert_mem_eq(a, b, s1);
    free(a);
    free(b);
    tsq_net_destroy(copy);
    tsq_net_destroy(net);
    tsq_tensor_destroy(xt);
    tsq_tensor_destroy(o1);
    tsq_tensor_destroy(o2);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_rewrites)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = small_cnn(ctx);
    tsq_layer *q = NULL, *lb = NULL, *d = NULL, *got = NULL;
    int32_t n, np, kind;
    int64_t a[3], b[3];
    int32_t na, nb;
    TH_OK(ctx, tsq_net_param_count(net, &np));
    ck_assert_int_eq(np, 10);
    /* Quantizer instead of the first ReLU. */
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.3f, 0.6f, &q));
    TH_OK(ctx, tsq_net_insert_layer(net, 2, q));
    TH_OK(ctx, tsq_net_remove_layer(net, 3));
    TH_OK(ctx, tsq_net_layer(net, 2, &got));
    TH_OK(ctx, tsq_layer_kind(got, &kind));
    ck_assert_int_eq(kind, TSQ_LAYER_ACT_QUANT);
    TH_OK(ctx, tsq_layer_sample_shapes(got, a, &na, b, &nb, 3));
    ck_assert_int_eq(na, 3);
    ck_assert_int_eq(a[0], 4);
    ck_assert_int_eq(a[1], 8);
    /* A low-bit conv replaces the second conv. */
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 4, 8, 3, 3, 1, 1, 2, &lb));
    TH_OK(ctx, tsq_net_replace_layer(net, 4, lb));
    TH_OK(ctx, tsq_net_param_count(net, &np));
    ck_assert_int_eq(np, 11);
    /* Errors: a shape-changing layer cannot be inserted in the middle, a
     * pool cannot be removed, a wrong-shaped replacement is refused, and
     * the caller keeps what was refused. */
    TH_OK(ctx, tsq_layer_dense_create(ctx, 8, 8, &d));
    ck_assert_int_eq(tsq_net_insert_layer(net, 1, d), TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_net_replace_layer(net, 4, d), TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_net_insert_layer(net, 99, d), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_remove_layer(net, 3), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "maxpool2d"));
    ck_assert_int_eq(tsq_net_remove_layer(net, -1), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_replace_layer(net, 0, lb), TSQ_ERR_STATE); /* owned already */
    tsq_layer_destroy(lb); /* owned by the net: a no-op */
    tsq_layer_destroy(d);
    TH_OK(ctx, tsq_net_layer_count(net, &n));
    ck_assert_int_eq(n, 9);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* Every bad input: status, message, and nothing changed. */
START_TEST(test_bad_inputs)
{
    th_alloc_stats st, st2;
    tsq_context *ctx = th_context(&st), *other = th_context(&st2);
    th_rng r = {15};
    const int64_t in1[1] = {64}, in3[3] = {1, 8, 8};
    tsq_layer *d = NULL, *c = NULL, *f = NULL;
    tsq_net *mlp = NULL, *net;
    tsq_tensor *x = nt_tensor(ctx, 4, 10, 1, 8, 8), *y = nt_tensor(ctx, 2, 10, 4, 0, 0);
    tsq_tensor *dy = nt_tensor(ctx, 2, 9, 4, 0, 0), *xu = NULL, *xs = nt_tensor(ctx, 4, 10, 1, 8, 7);
    tsq_tensor *w = NULL;
    int32_t labels[10] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1};
    double loss = 123.0;
    int64_t correct = -5;
    size_t s1, s2;
    unsigned char *before, *after;
    int64_t ushape[4] = {10, 1, 8, 8};

    /* Shape mismatch between layers. */
    TH_OK(ctx, tsq_net_create(ctx, 1, in1, &mlp));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 100, 10, &d));
    ck_assert_int_eq(tsq_net_append(mlp, d), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(mlp), "expects 100 input features, gets 64"));
    tsq_layer_destroy(d); /* refused: still ours */
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 3, 4, 3, 3, 1, 1, &c));
    net = small_cnn(ctx);
    ck_assert_int_eq(tsq_net_append(net, c), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "expects (C,H,W) samples, gets (4)"));
    tsq_layer_destroy(c);
    c = NULL;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 3, 4, 3, 3, 1, 1, &c));
    {
        tsq_net *n2 = NULL;
        TH_OK(ctx, tsq_net_create(ctx, 3, in3, &n2));
        ck_assert_int_eq(tsq_net_append(n2, c), TSQ_ERR_SHAPE);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(n2), "input has 1 channels, layer expects 3"));
        TH_OK(ctx, tsq_layer_dense_create(ctx, 64, 4, &d));
        ck_assert_int_eq(tsq_net_append(n2, d), TSQ_ERR_SHAPE);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(n2), "add a flatten layer"));
        tsq_layer_destroy(d);
        /* Empty net: nothing to run. */
        ck_assert_int_eq(tsq_net_forward(n2, x, y, 0), TSQ_ERR_STATE);
        tsq_net_destroy(n2);
    }
    tsq_layer_destroy(c);
    /* A layer from another context, and one already in a net. */
    TH_OK(other, tsq_layer_flatten_create(other, &f));
    ck_assert_int_eq(tsq_net_append(mlp, f), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(mlp), "another context"));
    tsq_layer_destroy(f);
    {
        tsq_layer *first = NULL;
        TH_OK(ctx, tsq_net_layer(net, 0, &first));
        ck_assert_int_eq(tsq_net_append(mlp, first), TSQ_ERR_STATE);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(mlp), "already belongs"));
    }

    nt_fill_normal(x, &r, 1.0);
    before = snapshot(ctx, net, &s1);
    /* Train step before an optimiser is set. */
    ck_assert_int_eq(tsq_net_train_step(net, x, labels, 10, &loss, &correct), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "no optimiser set"));
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.1, 0.9, 0, 0));
    /* Wrong batch size: labels, y, dy. */
    ck_assert_int_eq(tsq_net_train_step(net, x, labels, 9, &loss, &correct), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "9 labels for a batch of 10"));
    {
        tsq_tensor *y9 = nt_tensor(ctx, 2, 9, 4, 0, 0);
        ck_assert_int_eq(tsq_net_forward(net, x, y9, 0), TSQ_ERR_SHAPE);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "N = 10 samples of 4 outputs"));
        tsq_tensor_destroy(y9);
    }
    ck_assert_int_eq(tsq_net_backward(net, dy, NULL), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "no forward"));
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    ck_assert_int_eq(tsq_net_backward(net, dy, NULL), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "the last forward gave 10 samples of 4"));
    /* Labels out of range. */
    labels[3] = 4;
    ck_assert_int_eq(tsq_net_train_step(net, x, labels, 10, &loss, &correct), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "label 4 of sample 3 is outside 0..3"));
    labels[3] = -1;
    ck_assert_int_eq(tsq_net_evaluate(net, x, labels, 10, &loss, &correct, NULL), TSQ_ERR_INVALID);
    labels[3] = 3;
    ck_assert_int_eq(tsq_net_evaluate(net, x, NULL, 10, &loss, NULL, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_train_step(net, x, NULL, 10, &loss, NULL), TSQ_ERR_NULL);
    /* Wrong sample shape and dtype. */
    ck_assert_int_eq(tsq_net_train_step(net, xs, labels, 10, &loss, &correct), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "samples of (1,8,8)"));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, ushape, &xu));
    ck_assert_int_eq(tsq_net_train_step(net, xu, labels, 10, &loss, &correct), TSQ_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "x has dtype u8, expected f32"));
    /* NaN in the input. */
    nt_data(x)[17] = NAN;
    ck_assert_int_eq(tsq_net_train_step(net, x, labels, 10, &loss, &correct), TSQ_ERR_NOT_FINITE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "x holds NaN or Inf"));
    ck_assert_int_eq(tsq_net_forward(net, x, y, 0), TSQ_ERR_NOT_FINITE);
    nt_data(x)[17] = INFINITY;
    ck_assert_int_eq(tsq_net_evaluate(net, x, labels, 10, &loss, &correct, NULL), TSQ_ERR_NOT_FINITE);
    nt_data(x)[17] = 0.5f;
    /* Nothing was trained by the failed calls; outputs untouched. */
    ck_assert(loss == 123.0 && correct == -5);
    after = snapshot(ctx, net, &s2);
    /* (the successful train-mode forward above moved the BN running stats:
     * compare the parameters of the first conv, which no call changed) */
    ck_assert_mem_eq(before, after, 40 * sizeof(float));
    free(after);
    /* NaN in a parameter. */
    TH_OK(ctx, tsq_net_param(net, 4, &w, NULL, NULL, NULL));
    nt_data(w)[3] = NAN;
    ck_assert_int_eq(tsq_net_train_step(net, x, labels, 10, &loss, &correct), TSQ_ERR_NOT_FINITE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "parameter 'weight' of layer 4 (conv2d)"));
    ck_assert_int_eq(tsq_net_evaluate(net, x, labels, 10, &loss, &correct, NULL), TSQ_ERR_NOT_FINITE);
    ck_assert(loss == 123.0 && correct == -5);
    after = snapshot(ctx, net, &s2);
    ck_assert_mem_eq(before, after, 40 * sizeof(float));
    free(after);
    nt_data(w)[3] = 0.1f;
    /* Now a good step works, and outputs are written. */
    TH_OK(ctx, tsq_net_train_step(net, x, labels, 10, &loss, &correct));
    ck_assert(loss > 0 && loss < 100 && correct >= 0 && correct <= 10);
    ck_assert_str_eq(tsq_net_errmsg(net), "");
    /* A non-finite loss: huge inputs make the logits overflow. */
    {
        int64_t i;
        for (i = 0; i < 640; i++)
            nt_data(x)[i] = 3e38f;
        TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.1, 0.0, 0, 0));
        free(before);
        before = snapshot(ctx, net, &s1);
        ck_assert_int_eq(tsq_net_train_step(net, x, labels, 10, &loss, &correct), TSQ_ERR_NOT_FINITE);
        after = snapshot(ctx, net, &s2);
        ck_assert_mem_eq(before, after, 40 * sizeof(float));
        free(after);
    }
    free(before);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(xs);
    tsq_tensor_destroy(xu);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_net_destroy(mlp);
    tsq_net_destroy(net);
    ck_assert_str_eq(tsq_net_errmsg(NULL), "no net");
    tsq_net_destroy(NULL);
    th_context_done(ctx, &st);
    th_context_done(other, &st2);
}
END_TEST

/* Every allocation of building, training and cloning a net fails once in
 * turn: the call reports TSQ_ERR_NO_MEMORY and nothing leaks. */
START_TEST(test_allocation_failures)
{
    int64_t k, failures = 0;
    for (k = 1; k < 400; k++) {
        th_alloc_stats st;
        tsq_context *ctx = th_context(&st);
        const int64_t in[3] = {1, 8, 8}, xs[4] = {4, 1, 8, 8};
        tsq_layer *a = NULL, *b = NULL, *c = NULL;
        tsq_net *net = NULL, *copy = NULL;
        tsq_tensor *x = NULL;
        int32_t labels[4] = {0, 1, 0, 1};
        tsq_status s;
        float data[256] = {0};
        int done = 0;
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, xs, data, sizeof data, &x));
        st.fail_at = st.total_allocs + k;
        s = tsq_net_create(ctx, 3, in, &net);
        if (s == TSQ_OK)
            s = tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 1, 1, &a);
        if (s == TSQ_OK && (s = tsq_net_append(net, a)) != TSQ_OK)
            tsq_layer_destroy(a);
        if (s == TSQ_OK)
            s = tsq_layer_batchnorm_create(ctx, 2, &b);
        if (s == TSQ_OK && (s = tsq_net_append(net, b)) != TSQ_OK)
            tsq_layer_destroy(b);
        if (s == TSQ_OK)
            s = tsq_layer_global_avgpool_create(ctx, &c);
        if (s == TSQ_OK && (s = tsq_net_append(net, c)) != TSQ_OK)
            tsq_layer_destroy(c);
        if (s == TSQ_OK)
            s = tsq_net_set_optimizer_sgd(net, 0.1, 0.9, 0, 0);
        if (s == TSQ_OK)
            s = tsq_net_train_step(net, x, labels, 4, NULL, NULL);
        if (s == TSQ_OK)
            s = tsq_net_clone(net, &copy);
        if (s == TSQ_OK)
            s = tsq_net_fold_batchnorm(copy, NULL);
        if (s == TSQ_OK)
            done = 1;
        else {
            ck_assert_int_eq(s, TSQ_ERR_NO_MEMORY);
            failures++;
        }
        tsq_net_destroy(copy);
        tsq_net_destroy(net);
        tsq_tensor_destroy(x);
        th_context_done(ctx, &st);
        if (done && st.failures == 0)
            break; /* k is past the last allocation */
    }
    ck_assert_int_gt(failures, 10);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_net");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cnn_learns_quadrants);
    tcase_add_test(tc, test_mlp_learns_blobs);
    tcase_add_test(tc, test_determinism);
    tcase_add_test(tc, test_optimizer_formulas);
    tcase_add_test(tc, test_lowbit_alpha_option);
    tcase_add_test(tc, test_schedules);
    tcase_add_test(tc, test_clone_and_copy);
    tcase_add_test(tc, test_rewrites);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_allocation_failures);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
