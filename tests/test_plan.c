/* The inference plan: on small converted nets built directly
 * (float conv + BN + codes quantizer, low-bit convs and dense layers with
 * random codes, per-tensor and per-channel quantizers, a fused values-mode
 * quantizer before a float classifier, or a low-bit last layer with float
 * output), the plan's outputs equal tsq_net_forward's eval-mode float
 * simulation: identical predictions and every logit within 1e-4 relative;
 * a plan shared by 4 threads gives bit-identical outputs; every error path
 * returns its status and message and leaves y untouched. */
#define TSQ_EXPERIMENTAL 1 /* the kernel-level calls */
#include "nn_testutil.h"
#include "tsq/experimental.h"
#include "runtime/plan_internal.h" /* the stage list and ctx->cpu, for the bit-plane path */

#include <pthread.h>
#include <stdio.h>

#define IMG 8

static tsq_layer *quant(tsq_context *ctx, int32_t bits, float eps, float delta, int codes)
{
    tsq_layer *l = NULL;
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, bits, eps, delta, &l));
    if (codes)
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1.0));
    return l;
}

/* variant 0: conv-BN-Q | lbconv-Q(per channel)-pool | lbconv-Q-flatten |
 *            lbdense(3-bit)-Q(values) | dense   (3 low-bit, all fused)
 * variant 1: the same with a low-bit last layer (float output) and a
 *            values-mode quantizer feeding a float dense in the middle. */
static tsq_net *make_net(tsq_context *ctx, int variant, uint64_t seed)
{
    th_rng r = {seed};
    int64_t shape[3] = {1, IMG, IMG};
    tsq_layer *L[16] = {0};
    tsq_net *net;
    tsq_tensor *v = NULL;
    int n = 0, c;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &L[n]));
    nt_randomize_float(ctx, L[n++], &r);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &L[n]));
    nt_randomize_float(ctx, L[n], &r);
    TH_OK(ctx, tsq_layer_state(L[n], 1, &v, NULL)); /* running_var */
    for (c = 0; c < 4; c++)
        nt_data(v)[c] = (float)(0.5 + th_rng_uniform(&r));
    n++;
    L[n++] = quant(ctx, 2, 0.3f, 0.4f, 1);
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 4, 6, 3, 3, 1, 1, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 6, 36, 2, &r);
    L[n] = quant(ctx, 2, 0.2f, 0.5f, 1);
    for (c = 0; c < 6; c++)
        TH_OK(ctx, tsq_layer_act_quant_set_channel(L[n], c, 6, 2, 0.1f + 0.05f * (float)c,
                                                   0.3f + 0.1f * (float)c));
    n++;
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 6, 8, 3, 3, 1, 1, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], 8, 54, 2, &r);
    L[n++] = quant(ctx, 2, 0.25f, 0.45f, 1);
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[n++]));
    if (variant == 0) {
        TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 128, 16, 3, &L[n]));
        nt_set_lowbit(ctx, L[n++], 16, 128, 3, &r);
        L[n++] = quant(ctx, 2, 0.3f, 0.5f, 0);
        TH_OK(ctx, tsq_layer_dense_create(ctx, 16, 5, &L[n]));
        nt_randomize_float(ctx, L[n++], &r);
    } else {
        TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 128, 16, 2, &L[n]));
        nt_set_lowbit(ctx, L[n++], 16, 128, 2, &r);
        L[n++] = quant(ctx, 2, 0.3f, 0.5f, 0);
        TH_OK(ctx, tsq_layer_dense_create(ctx, 16, 12, &L[n]));
        nt_randomize_float(ctx, L[n++], &r);
        TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
        L[n++] = quant(ctx, 2, 0.2f, 0.5f, 1);
        TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 12, 5, 2, &L[n]));
        nt_set_lowbit(ctx, L[n++], 5, 12, 2, &r);
    }
    L[n] = NULL;
    net = nt_net(ctx, 3, shape, L);
    return net;
}

static void compare(const float *plan, const float *ref, int64_t batch, int64_t classes)
{
    int64_t i, c;
    for (i = 0; i < batch; i++) {
        int64_t ap = 0, ar = 0;
        for (c = 0; c < classes; c++) {
            float a = plan[i * classes + c], b = ref[i * classes + c];
            NT_REQUIRE(fabsf(a - b) <= 1e-4f * fabsf(b) + 1e-30f,
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

static void check_equivalence(int variant, int32_t threads)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t batch = th_quick() ? 16 : 64, classes = 5, lowbit = 0, fused = 0, v;
    tsq_net *net;
    tsq_plan *plan = NULL;
    tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG);
    tsq_tensor *yref = nt_tensor(ctx, 2, batch, classes, 0, 0);
    tsq_tensor *y = nt_tensor(ctx, 2, batch, classes, 0, 0);
    th_rng r = {77 + (uint64_t)variant};
    uint64_t bytes = 0;
    void *ws;
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
    net = make_net(ctx, variant, 1000 + (uint64_t)variant);
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_net_forward(net, x, yref, 0));
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_LOWBIT_LAYERS, &lowbit));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_FUSED_THRESHOLDS, &fused));
    ck_assert_int_eq(lowbit, variant == 0 ? 3 : 4);
    ck_assert_int_eq(fused, 3);
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_INPUT_SIZE, &v));
    ck_assert_int_eq(v, IMG * IMG);
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_OUTPUT_SIZE, &v));
    ck_assert_int_eq(v, classes);
    /* the plan copies what it needs: the net can go */
    tsq_net_destroy(net);
    TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, batch, &bytes));
    ws = malloc(bytes + 3);
    ck_assert_ptr_nonnull(ws);
    /* an unaligned caller workspace of exactly the size asked for */
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, (char *)ws + 3, bytes));
    compare(nt_data(y), nt_data(yref), batch, classes);
    /* and with the plan's own allocation */
    memset(nt_data(y), 0, (size_t)(batch * classes) * sizeof(float));
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
    compare(nt_data(y), nt_data(yref), batch, classes);
    free(ws);
    tsq_plan_destroy(plan);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(yref);
    th_context_done(ctx, &st);
}

START_TEST(test_equivalence_fused)
{
    check_equivalence(0, 1);
}
END_TEST

START_TEST(test_equivalence_float_last)
{
    check_equivalence(1, 1);
}
END_TEST

START_TEST(test_equivalence_two_threads)
{
    check_equivalence(0, 2);
    check_equivalence(1, 2);
}
END_TEST

/* A net converted by TSQ itself (tsq_net_learn_codes, tsq_net_fit_transform
 * on random calibration images; untrained weights): whatever the
 * conversion leaves (BN folded into alpha and b, quantizers switched to
 * codes, the last dense in float after a values-mode quantizer), the plan
 * agrees with the net's eval forward. */
static void check_fit_transformed(int per_channel)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t shape[3] = {1, IMG, IMG}, batch = 32, lowbit = 0;
    tsq_layer *L[16] = {0};
    tsq_net *net;
    tsq_plan *plan = NULL;
    tsq_regressor *reg = NULL;
    tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG);
    tsq_tensor *y = nt_tensor(ctx, 2, batch, 4, 0, 0);
    tsq_tensor *yref = nt_tensor(ctx, 2, batch, 4, 0, 0);
    th_rng r = {31 + (uint64_t)per_channel};
    int32_t done = 0;
    int n = 0, passes = 0;
    TH_OK(ctx, tsq_context_set_seed(ctx, 5));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 8, 3, 3, 1, 1, &L[n++]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &L[n++]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 8, 8, 3, 3, 1, 1, &L[n++]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &L[n++]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 128, 16, &L[n++]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 16, &L[n++]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 16, 4, &L[n++]));
    net = nt_net(ctx, 3, shape, L);
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_PER_CHANNEL, per_channel));
    nt_fill_normal(x, &r, 1.0);
    ck_assert_msg(tsq_net_learn_codes(net, x, 1, &done) == TSQ_OK, "%s", tsq_net_errmsg(net));
    TH_OK(ctx, tsq_net_tsq_regressor(net, &reg));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 2));
    done = 0;
    while (!done) {
        ck_assert_msg(tsq_net_fit_transform(net, x, 1, &done) == TSQ_OK, "%s",
                      tsq_net_errmsg(net));
        ck_assert_int_lt(++passes, 100);
    }
    nt_fill_normal(x, &r, 1.0); /* fresh inputs */
    TH_OK(ctx, tsq_net_forward(net, x, yref, 0));
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_LOWBIT_LAYERS, &lowbit));
    ck_assert_int_eq(lowbit, 2);
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
    compare(nt_data(y), nt_data(yref), batch, 4);
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(yref);
    th_context_done(ctx, &st);
}

START_TEST(test_equivalence_fit_transformed)
{
    check_fit_transformed(0);
    check_fit_transformed(1);
}
END_TEST

/* ---- a plan shared by 4 threads ---- */

typedef struct {
    const tsq_plan *plan;
    const tsq_tensor *x;
    int64_t batch, classes;
    float *out;
    int use_null_ws;
    tsq_status st;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    tsq_context *ctx = NULL;
    tsq_tensor *y = NULL;
    int64_t shape[2] = {w->batch, w->classes};
    uint64_t bytes = 0;
    void *ws = NULL;
    int rep;
    w->st = tsq_context_create(&ctx);
    if (w->st != TSQ_OK)
        return NULL;
    w->st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, &y);
    if (w->st == TSQ_OK)
        w->st = tsq_plan_workspace_size(ctx, w->plan, w->batch, &bytes);
    if (w->st == TSQ_OK && !w->use_null_ws) {
        ws = malloc(bytes);
        if (!ws)
            w->st = TSQ_ERR_NO_MEMORY;
    }
    for (rep = 0; rep < 3 && w->st == TSQ_OK; rep++)
        w->st = tsq_plan_run(ctx, w->plan, w->x, y, ws, bytes);
    if (w->st == TSQ_OK)
        w->st = tsq_tensor_copy_out(y, w->out,
                                    (uint64_t)(w->batch * w->classes) * sizeof(float));
    free(ws);
    tsq_tensor_destroy(y);
    tsq_context_destroy(ctx);
    return NULL;
}

START_TEST(test_shared_by_four_threads)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t batch = 32, classes = 5, i;
    tsq_net *net = make_net(ctx, 0, 5);
    tsq_plan *plan = NULL;
    tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG);
    tsq_tensor *y = nt_tensor(ctx, 2, batch, classes, 0, 0);
    th_rng r = {9};
    worker w[4];
    pthread_t t[4];
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
    for (i = 0; i < 4; i++) {
        w[i].plan = plan;
        w[i].x = x;
        w[i].batch = batch;
        w[i].classes = classes;
        w[i].out = calloc((size_t)(batch * classes), sizeof(float));
        w[i].use_null_ws = i == 3;
        w[i].st = TSQ_ERR_INTERNAL;
        ck_assert_int_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    for (i = 0; i < 4; i++) {
        ck_assert_msg(w[i].st == TSQ_OK, "thread %d: %s", (int)i,
                      tsq_status_string(w[i].st));
        ck_assert_msg(memcmp(w[i].out, nt_data(y), (size_t)(batch * classes) * sizeof(float)) ==
                          0,
                      "thread %d differs from the single-threaded run", (int)i);
        free(w[i].out);
    }
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    th_context_done(ctx, &st);
}
END_TEST

/* ---- errors ---- */

static void expect(tsq_context *ctx, tsq_status got, tsq_status want, const char *needle)
{
    ck_assert_msg(got == want, "got %s, want %s (%s)", tsq_status_string(got),
                  tsq_status_string(want), tsq_context_errmsg(ctx));
    if (needle)
        ck_assert_msg(strstr(tsq_context_errmsg(ctx), needle) != NULL,
                      "message \"%s\" lacks \"%s\"", tsq_context_errmsg(ctx), needle);
}

static void require_untouched(tsq_tensor *y)
{
    int64_t i, n = nt_numel(y);
    for (i = 0; i < n; i++)
        NT_REQUIRE(nt_data(y)[i] == 7.0f, "y[%lld] was written", (long long)i);
}

START_TEST(test_create_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t shape[3] = {1, IMG, IMG};
    tsq_layer *L[8] = {0};
    tsq_net *net;
    tsq_plan *plan = (tsq_plan *)ctx; /* must become NULL */

    ck_assert_int_eq(tsq_plan_create(NULL, NULL, &plan), TSQ_ERR_NULL);
    expect(ctx, tsq_plan_create(ctx, NULL, &plan), TSQ_ERR_NULL, "net is NULL");

    /* an unconverted net: float layers only */
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[1]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 4 * IMG * IMG, 3, &L[3]));
    net = nt_net(ctx, 3, shape, L);
    expect(ctx, tsq_plan_create(ctx, net, &plan), TSQ_ERR_STATE, "no low-bit layer");
    ck_assert_ptr_null(plan);
    tsq_net_destroy(net);

    /* an empty net */
    TH_OK(ctx, tsq_net_create(ctx, 3, shape, &net));
    expect(ctx, tsq_plan_create(ctx, net, &plan), TSQ_ERR_STATE, "no layers");
    tsq_net_destroy(net);

    /* a low-bit layer fed by floats, not codes */
    memset(L, 0, sizeof L);
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 4, 4, 3, 3, 1, 1, 2, &L[1]));
    net = nt_net(ctx, 3, shape, L);
    expect(ctx, tsq_plan_create(ctx, net, &plan), TSQ_ERR_UNSUPPORTED,
           "low-bit layer 1 is not fed by a codes-mode quantizer");
    ck_assert_ptr_null(plan);
    tsq_net_destroy(net);

    /* a layer kind the plan does not run */
    memset(L, 0, sizeof L);
    L[0] = quant(ctx, 2, 0.3f, 0.4f, 1);
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, 2, &L[1]));
    TH_OK(ctx, tsq_layer_global_avgpool_create(ctx, &L[2]));
    net = nt_net(ctx, 3, shape, L);
    expect(ctx, tsq_plan_create(ctx, net, &plan), TSQ_ERR_UNSUPPORTED, "layer 2 (");
    ck_assert_ptr_null(plan);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_run_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t batch = 4, v = 0, shape[4] = {batch, 1, IMG, IMG};
    tsq_net *net = make_net(ctx, 0, 3);
    tsq_plan *plan = NULL;
    tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG);
    tsq_tensor *x3 = nt_tensor(ctx, 4, batch, 1, IMG, IMG - 1);
    tsq_tensor *y = nt_tensor(ctx, 2, batch, 5, 0, 0);
    tsq_tensor *y6 = nt_tensor(ctx, 2, batch, 6, 0, 0);
    tsq_tensor *yb = nt_tensor(ctx, 2, batch + 1, 5, 0, 0);
    tsq_tensor *xu8 = NULL;
    th_rng r = {4};
    uint64_t bytes = 0, b1 = 0;
    void *ws;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, shape, &xu8));
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, batch, &bytes));
    TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, 1, &b1));
    ck_assert_uint_gt(bytes, b1);
    ws = malloc(bytes);
    TH_OK(ctx, tsq_tensor_fill(y, 7.0));

    ck_assert_int_eq(tsq_plan_run(NULL, plan, x, y, NULL, 0), TSQ_ERR_NULL);
    expect(ctx, tsq_plan_run(ctx, NULL, x, y, NULL, 0), TSQ_ERR_NULL, "plan is NULL");
    expect(ctx, tsq_plan_run(ctx, plan, NULL, y, NULL, 0), TSQ_ERR_NULL, "x is NULL");
    expect(ctx, tsq_plan_run(ctx, plan, x, NULL, NULL, 0), TSQ_ERR_NULL, "y is NULL");
    expect(ctx, tsq_plan_run(ctx, plan, xu8, y, NULL, 0), TSQ_ERR_DTYPE, "x");
    require_untouched(y);
    /* a batch shape that does not fit */
    expect(ctx, tsq_plan_run(ctx, plan, x3, y, NULL, 0), TSQ_ERR_SHAPE, "plan expects N x 64");
    require_untouched(y);
    expect(ctx, tsq_plan_run(ctx, plan, x, y6, NULL, 0), TSQ_ERR_SHAPE, "expected 4 x 5");
    expect(ctx, tsq_plan_run(ctx, plan, x, yb, NULL, 0), TSQ_ERR_SHAPE, "expected 4 x 5");
    /* a workspace that is too small */
    expect(ctx, tsq_plan_run(ctx, plan, x, y, ws, bytes - 1), TSQ_ERR_TOO_SMALL, "needed");
    expect(ctx, tsq_plan_run(ctx, plan, x, y, ws, b1), TSQ_ERR_TOO_SMALL, "for batch 4");
    require_untouched(y);
    /* non-finite input */
    nt_data(x)[5] = NAN;
    expect(ctx, tsq_plan_run(ctx, plan, x, y, ws, bytes), TSQ_ERR_NOT_FINITE, "NaN");
    require_untouched(y);
    nt_data(x)[5] = 0.0f;
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, ws, bytes));
    ck_assert_str_eq(tsq_context_errmsg(ctx), "");

    expect(ctx, tsq_plan_workspace_size(ctx, plan, 0, &bytes), TSQ_ERR_INVALID, "batch 0");
    expect(ctx, tsq_plan_workspace_size(ctx, plan, 1, NULL), TSQ_ERR_NULL, "bytes");
    ck_assert_int_eq(tsq_plan_get(plan, 999, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_plan_get(NULL, TSQ_PLAN_STAGES, &v), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_plan_get(plan, TSQ_PLAN_STAGES, NULL), TSQ_ERR_NULL);
    tsq_plan_destroy(NULL);

    free(ws);
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(x3);
    tsq_tensor_destroy(xu8);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(y6);
    tsq_tensor_destroy(yb);
    th_context_done(ctx, &st);
}
END_TEST

/* Packed weights: 2 bits per ternary weight against 32 (padding aside). */
START_TEST(test_weight_bytes)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx, 1, 8);
    tsq_plan *plan = NULL;
    int64_t packed = 0, fp32 = 0;
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_PACKED_BYTES, &packed));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_PACKED_FP32_BYTES, &fp32));
    ck_assert_int_eq(fp32, 4 * (6 * 36 + 8 * 54 + 16 * 128 + 5 * 12));
    ck_assert_int_gt(packed, 0);
    /* every ternary weight takes at least its 2 bits */
    ck_assert_int_ge(packed * 16, fp32);
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* tsq_plan_load reads the model file into the same plan tsq_plan_create
 * makes from tsq_net_load of it: outputs equal bit for bit, at batch 1, 7
 * and 257 and with two threads. */
static void *save_model(tsq_context *ctx, tsq_net *net, uint64_t *size)
{
    void *buf;
    TH_OK(ctx, tsq_net_save(net, NULL, 0, size));
    buf = malloc(*size);
    ck_assert_ptr_nonnull(buf);
    TH_OK(ctx, tsq_net_save(net, buf, *size, size));
    return buf;
}

static void run_both(tsq_context *ctx, tsq_plan *a, tsq_plan *b, int64_t batch, uint64_t seed)
{
    tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG);
    tsq_tensor *ya = nt_tensor(ctx, 2, batch, 5, 0, 0), *yb = nt_tensor(ctx, 2, batch, 5, 0, 0);
    th_rng r = {seed};
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_plan_run(ctx, a, x, ya, NULL, 0));
    TH_OK(ctx, tsq_plan_run(ctx, b, x, yb, NULL, 0));
    ck_assert_msg(memcmp(nt_data(ya), nt_data(yb), (size_t)(batch * 5) * sizeof(float)) == 0,
                  "batch %lld: the loaded plan differs", (long long)batch);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(ya);
    tsq_tensor_destroy(yb);
}

START_TEST(test_plan_load_same_bits)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int variant, threads;
    for (variant = 0; variant < 2; variant++)
        for (threads = 1; threads <= 2; threads++) {
            tsq_net *net = make_net(ctx, variant, 2000 + (uint64_t)variant), *back = NULL;
            tsq_plan *a = NULL, *b = NULL;
            uint64_t size = 0;
            void *buf = save_model(ctx, net, &size);
            int64_t va = 0, vb = 0;
            int32_t key;
            TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
            TH_OK(ctx, tsq_net_load(ctx, buf, size, &back));
            TH_OK(ctx, tsq_plan_create(ctx, back, &a));
            TH_OK(ctx, tsq_plan_load(ctx, buf, size, &b));
            for (key = TSQ_PLAN_LOWBIT_LAYERS; key <= TSQ_PLAN_STAGES; key++) {
                TH_OK(ctx, tsq_plan_get(a, key, &va));
                TH_OK(ctx, tsq_plan_get(b, key, &vb));
                ck_assert_int_eq(va, vb);
            }
            run_both(ctx, a, b, 1, 11);
            run_both(ctx, a, b, 7, 12);
            if (!th_quick())
                run_both(ctx, a, b, 257, 13);
            tsq_plan_destroy(a);
            tsq_plan_destroy(b);
            tsq_net_destroy(back);
            tsq_net_destroy(net);
            free(buf);
        }
    th_context_done(ctx, &st);
}
END_TEST

/* A corrupt or cut file is refused with a message, never read past its
 * end; every allocation failure is reported and leaks nothing. */
START_TEST(test_plan_load_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx, 0, 3000);
    tsq_plan *p = NULL;
    uint64_t size = 0, i;
    uint8_t *buf = save_model(ctx, net, &size), *cut;
    int64_t fail;
    tsq_net_destroy(net);
    ck_assert_int_eq(tsq_plan_load(ctx, NULL, size, &p), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_plan_load(ctx, buf, size, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_plan_load(NULL, buf, size, &p), TSQ_ERR_NULL);
    for (i = 0; i < size; i += 1 + i / 64) { /* flip a bit: a CRC catches it */
        tsq_status s;
        buf[i] ^= 0x10;
        s = tsq_plan_load(ctx, buf, size, &p);
        ck_assert_msg(s == TSQ_ERR_FORMAT || s == TSQ_ERR_VERSION, "byte %llu: %s",
                      (unsigned long long)i, tsq_status_string(s));
        ck_assert_ptr_null(p);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "plan_load"));
        buf[i] ^= 0x10;
    }
    for (i = 0; i < size; i += 1 + i / 256) { /* cut: a copy of exactly i bytes */
        cut = malloc(i ? i : 1);
        memcpy(cut, buf, i);
        ck_assert_int_eq(tsq_plan_load(ctx, cut, i, &p), TSQ_ERR_FORMAT);
        free(cut);
    }
    for (fail = 1;; fail++) {
        tsq_status s;
        st.fail_at = st.total_allocs + fail;
        s = tsq_plan_load(ctx, buf, size, &p);
        st.fail_at = 0;
        if (s == TSQ_OK) {
            tsq_plan_destroy(p);
            break;
        }
        ck_assert_int_eq(s, TSQ_ERR_NO_MEMORY);
        ck_assert_ptr_null(p);
    }
    ck_assert_int_gt(fail, 5);
    free(buf);
    th_context_done(ctx, &st);
}
END_TEST

/* A sample's output does not depend on the batch around it: the plan runs
 * a large batch in tiles (on one thread each) and a small one whole (its
 * stages split over the threads), and every row must equal the same image
 * run alone, up to the float first and last layers' BLAS, whose summation
 * order may follow the GEMM's shape (so the same tolerance as against the
 * net). The workspace of a large batch stays that of a few tiles. */
START_TEST(test_batch_independent)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t batch = th_quick() ? 70 : 257, i;
    int32_t threads;
    for (threads = 1; threads <= 2; threads++) {
        tsq_net *net = make_net(ctx, threads - 1, 4000);
        tsq_plan *plan = NULL;
        tsq_tensor *x = nt_tensor(ctx, 4, batch, 1, IMG, IMG), *y = nt_tensor(ctx, 2, batch, 5, 0, 0);
        tsq_tensor *x1 = nt_tensor(ctx, 4, 1, 1, IMG, IMG), *y1 = nt_tensor(ctx, 2, 1, 5, 0, 0);
        uint64_t big = 0, small = 0, bound = 0;
        th_rng r = {99};
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
        nt_fill_normal(x, &r, 1.0);
        TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
        for (i = 0; i < batch; i++) {
            memcpy(nt_data(x1), nt_data(x) + i * IMG * IMG, IMG * IMG * sizeof(float));
            TH_OK(ctx, tsq_plan_run(ctx, plan, x1, y1, NULL, 0));
            compare(nt_data(y1), nt_data(y) + i * 5, 1, 5);
        }
        /* Bounded by the tiles, not the batch: a tile holds at most 64
         * images, so no batch needs more than the largest of batches 1 to
         * 256 (tiles of every size, on up to two threads). */
        for (i = 1; i <= 256; i++) {
            TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, i, &small));
            bound = small > bound ? small : bound;
        }
        TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, batch, &big));
        ck_assert_uint_le(big, bound);
        TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, 64 * batch, &big));
        ck_assert_uint_le(big, bound);
        TH_OK(ctx, tsq_plan_workspace_size(ctx, plan, INT64_C(1) << 40, &big));
        ck_assert_uint_le(big, bound);
        tsq_plan_destroy(plan);
        tsq_net_destroy(net);
        tsq_tensor_destroy(x);
        tsq_tensor_destroy(y);
        tsq_tensor_destroy(x1);
        tsq_tensor_destroy(y1);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* The bit-plane and byte-layout paths (runtime/plan_bits.c: VNNI, VPOPCNT,
 * and the AVX2 kernels on the bytes) against the portable C path, bit for bit,
 * on odd shapes: 5, 12, 36 and 17 channels (no multiple of 8), K = 45, 108,
 * 324 (no multiple of 64), a 1-bit layer between 2-bit ones, an odd image
 * side (floor pooling), and batches 1, 7 and 257 on 1 and 2 threads. The
 * 12 -> 36 convolution reads its input in place in full VNNI tiles of 8
 * pixels x 32 channels and a partial panel. */
/* A low-bit 3 x 3 conv (padding 1) of random ternary weights at L[*n],
 * then a codes-mode quantizer of qbits (qbits 0: none). */
static void add_lbconv(tsq_context *ctx, tsq_layer **L, int *n, int64_t cin, int64_t cout,
                       int32_t qbits, float eps, float delta, th_rng *r)
{
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, cin, cout, 3, 3, 1, 1, 2, &L[*n]));
    nt_set_lowbit(ctx, L[(*n)++], cout, cin * 9, 2, r);
    if (qbits)
        L[(*n)++] = quant(ctx, qbits, eps, delta, 1);
}

/* The test nets' end: 2 x 2 pool, flatten, a low-bit dense of `in` ->
 * `hidden` with a values-mode quantizer, a float dense to 5; the net. */
static tsq_net *pooled_tail(tsq_context *ctx, tsq_layer **L, int n, int64_t in, int64_t hidden,
                            int64_t shape[3], th_rng *r)
{
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[n++]));
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, in, hidden, 2, &L[n]));
    nt_set_lowbit(ctx, L[n++], hidden, in, 2, r);
    L[n++] = quant(ctx, 2, 0.3f, 0.5f, 0);
    TH_OK(ctx, tsq_layer_dense_create(ctx, hidden, 5, &L[n]));
    nt_randomize_float(ctx, L[n++], r);
    L[n] = NULL;
    return nt_net(ctx, 3, shape, L);
}

static tsq_net *make_bits_net(tsq_context *ctx, int64_t img, uint64_t seed)
{
    th_rng r = {seed};
    int64_t shape[3] = {1, img, img}, hw = (img / 2) / 2, c;
    tsq_layer *L[20] = {0};
    tsq_tensor *v = NULL;
    int n = 0;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 5, 3, 3, 1, 1, &L[n]));
    nt_randomize_float(ctx, L[n++], &r);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 5, &L[n]));
    nt_randomize_float(ctx, L[n], &r);
    TH_OK(ctx, tsq_layer_state(L[n], 1, &v, NULL));
    for (c = 0; c < 5; c++)
        nt_data(v)[c] = (float)(0.5 + th_rng_uniform(&r));
    n++;
    if (img % 2) /* the float front with and without a ReLU */
        TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
    L[n++] = quant(ctx, 2, 0.3f, 0.4f, 1);
    add_lbconv(ctx, L, &n, 5, 12, 0, 0.0f, 0.0f, &r);
    L[n] = quant(ctx, 2, 0.2f, 0.5f, 1);
    for (c = 0; c < 12; c++)
        TH_OK(ctx, tsq_layer_act_quant_set_channel(L[n], c, 12, 2, 0.1f + 0.03f * (float)c,
                                                   0.3f + 0.05f * (float)c));
    n++;
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    add_lbconv(ctx, L, &n, 12, 36, 1, 0.1f, 0.5f, &r);
    add_lbconv(ctx, L, &n, 36, 17, 2, 0.25f, 0.45f, &r);
    return pooled_tail(ctx, L, n, 17 * hw * hw, 16, shape, &r);
}

/* y of a plan created and run with the CPU features `cpu`; *bit_stages
 * counts its low-bit stages on the fused path, plus 10 per one reading
 * bytes and 100 per float front (into either layout). */
static void run_with_cpu(tsq_context *ctx, tsq_net *net, uint32_t cpu, const tsq_tensor *x,
                         tsq_tensor *y, int *bit_stages)
{
    uint32_t saved = ctx->cpu;
    tsq_plan *plan = NULL;
    int32_t i;
    ctx->cpu = cpu;
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    *bit_stages = 0;
    for (i = 0; i < plan->nstages; i++)
        *bit_stages += plan->stages[i].bp_in + 10 * plan->stages[i].bp_bytes +
                       100 * (plan->stages[i].op == OP_FRONT ||
                              plan->stages[i].op == OP_CONV_FRONT);
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
    tsq_plan_destroy(plan);
    ctx->cpu = saved;
}

START_TEST(test_bitplane_path_exact)
{
    static const int64_t batches[] = {1, 7, 257}, imgs[] = {8, 9};
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    uint32_t full = ctx->cpu, no_vnni = full & ~(uint32_t)TSQ_CPU_AVX512VNNI;
    uint32_t avx2 = no_vnni & ~(uint32_t)TSQ_CPU_AVX512VPOPCNTDQ;
    size_t bi, ii;
    int32_t threads;
    for (ii = 0; ii < 2; ii++)
        for (threads = 1; threads <= 2; threads++)
            for (bi = 0; bi < 3; bi++) {
                int64_t b = batches[bi], img = imgs[ii];
                size_t bytes = (size_t)(b * 5) * sizeof(float);
                tsq_net *net = make_bits_net(ctx, img, 500 + ii);
                tsq_tensor *x = nt_tensor(ctx, 4, b, 1, img, img);
                tsq_tensor *yv = nt_tensor(ctx, 2, b, 5, 0, 0), *yp = nt_tensor(ctx, 2, b, 5, 0, 0);
                tsq_tensor *ya = nt_tensor(ctx, 2, b, 5, 0, 0), *yc = nt_tensor(ctx, 2, b, 5, 0, 0);
                tsq_tensor *yr = nt_tensor(ctx, 2, b, 5, 0, 0);
                th_rng r = {31 + (uint64_t)b};
                int nv = 0, np = 0, na = 0, nc = 0;
                TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
                nt_fill_normal(x, &r, 1.0);
                TH_OK(ctx, tsq_net_forward(net, x, yr, 0));
                run_with_cpu(ctx, net, full, x, yv, &nv);
                run_with_cpu(ctx, net, no_vnni, x, yp, &np);
                run_with_cpu(ctx, net, avx2, x, ya, &na);
                run_with_cpu(ctx, net, 0, x, yc, &nc);
                if (tsq__kernel_runs(TSQ_KERNEL_VNNI, full))
                    ck_assert_int_eq(nv, 134); /* convs on bytes, the dense on bit planes */
                if (tsq__kernel_runs(TSQ_KERNEL_VPOPCNT, no_vnni))
                    ck_assert_int_eq(np, 104); /* on bit planes, and the front */
                if (tsq__kernel_runs(TSQ_KERNEL_AVX2, avx2))
                    ck_assert_int_eq(na, 144); /* every low-bit stage on bytes, the conv front */
                else
                    ck_assert_int_eq(na, 0);
                ck_assert_int_eq(nc, 0);
                NT_REQUIRE(memcmp(nt_data(yv), nt_data(yc), bytes) == 0,
                           "img %lld batch %lld threads %d: byte layout differs from C",
                           (long long)img, (long long)b, (int)threads);
                NT_REQUIRE(memcmp(nt_data(yp), nt_data(yc), bytes) == 0,
                           "img %lld batch %lld threads %d: bit planes differ from C",
                           (long long)img, (long long)b, (int)threads);
                NT_REQUIRE(memcmp(nt_data(ya), nt_data(yc), bytes) == 0,
                           "img %lld batch %lld threads %d: AVX2 path differs from C",
                           (long long)img, (long long)b, (int)threads);
                compare(nt_data(yv), nt_data(yr), b, 5);
                tsq_net_destroy(net);
                tsq_tensor_destroy(x);
                tsq_tensor_destroy(yv);
                tsq_tensor_destroy(yp);
                tsq_tensor_destroy(ya);
                tsq_tensor_destroy(yc);
                tsq_tensor_destroy(yr);
            }
    th_context_done(ctx, &st);
}
END_TEST

/* A net whose wider stages take the pair layout on AVX2: conv front,
 * lbconv 6 -> 64 (bytes: fed by the front), pool, lbconv 64 -> 66 and
 * 66 -> 70 (pairs: 1-bit codes in the second, channel and column counts
 * not multiples of 8 or of the 64-column tile), pool, lbdense -> 64
 * (pairs, one row per image), dense. */
static tsq_net *make_pairs_net(tsq_context *ctx, int64_t img, uint64_t seed)
{
    th_rng r = {seed};
    int64_t shape[3] = {1, img, img}, hw = (img / 2) / 2;
    tsq_layer *L[20] = {0};
    int n = 0;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 6, 3, 3, 1, 1, &L[n]));
    nt_randomize_float(ctx, L[n++], &r);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[n++]));
    L[n++] = quant(ctx, 2, 0.3f, 0.4f, 1);
    add_lbconv(ctx, L, &n, 6, 64, 2, 0.2f, 0.5f, &r);
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &L[n++]));
    add_lbconv(ctx, L, &n, 64, 66, 1, 0.1f, 0.5f, &r);
    add_lbconv(ctx, L, &n, 66, 70, 2, 0.25f, 0.45f, &r);
    return pooled_tail(ctx, L, n, 70 * hw * hw, 64, shape, &r);
}

/* The pair layout (two codes a byte, the AVX2 table kernel) gives the C
 * plan's logits bit for bit, at batches 1, 7 and 257 on one and two
 * threads; three stages take it. Its creation fails cleanly at every
 * allocation. */
START_TEST(test_pair_layout_exact)
{
    static const int64_t batches[] = {1, 7, 257}, imgs[] = {8, 9};
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    uint32_t avx2 = ctx->cpu & ~(uint32_t)(TSQ_CPU_AVX512VNNI | TSQ_CPU_AVX512VPOPCNTDQ);
    size_t bi, ii;
    int32_t threads;
    if (!tsq__kernel_runs(TSQ_KERNEL_AVX2, avx2)) {
        printf("test_pair_layout_exact: SKIP kernel 'avx2': this CPU lacks its instructions\n");
        th_context_done(ctx, &st);
        return;
    }
    for (ii = 0; ii < 2; ii++)
        for (threads = 1; threads <= 2; threads++)
            for (bi = 0; bi < 3; bi++) {
                int64_t b = batches[bi], img = imgs[ii];
                tsq_net *net = make_pairs_net(ctx, img, 700 + ii);
                tsq_tensor *x = nt_tensor(ctx, 4, b, 1, img, img);
                tsq_tensor *ya = nt_tensor(ctx, 2, b, 5, 0, 0), *yc = nt_tensor(ctx, 2, b, 5, 0, 0);
                th_rng r = {41 + (uint64_t)b};
                tsq_plan *plan = NULL;
                uint32_t saved = ctx->cpu;
                int32_t i, pairs = 0;
                int nc = 0;
                TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
                nt_fill_normal(x, &r, 1.0);
                ctx->cpu = avx2;
                TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
                for (i = 0; i < plan->nstages; i++)
                    pairs += plan->stages[i].bp_pairs;
                TH_OK(ctx, tsq_plan_run(ctx, plan, x, ya, NULL, 0));
                tsq_plan_destroy(plan);
                ctx->cpu = saved;
                ck_assert_int_eq(pairs, 3);
                run_with_cpu(ctx, net, 0, x, yc, &nc);
                NT_REQUIRE(memcmp(nt_data(ya), nt_data(yc), (size_t)(b * 5) * sizeof(float)) == 0,
                           "img %lld batch %lld threads %d: pair layout differs from C",
                           (long long)img, (long long)b, (int)threads);
                tsq_net_destroy(net);
                tsq_tensor_destroy(x);
                tsq_tensor_destroy(ya);
                tsq_tensor_destroy(yc);
            }
    { /* every allocation of that plan's creation refused in turn: a clean
       * "out of memory" and nothing leaked (th_context_done) */
        tsq_net *net = make_pairs_net(ctx, 8, 700);
        tsq_plan *plan = NULL;
        uint32_t saved = ctx->cpu;
        int64_t before, count, k;
        ctx->cpu = avx2;
        before = st.total_allocs;
        TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
        count = st.total_allocs - before;
        tsq_plan_destroy(plan);
        for (k = 1; k <= count; k++) {
            plan = NULL;
            st.fail_at = st.total_allocs + k;
            ck_assert_int_eq(tsq_plan_create(ctx, net, &plan), TSQ_ERR_NO_MEMORY);
            ck_assert_ptr_null(plan);
            st.fail_at = 0;
        }
        ctx->cpu = saved;
        tsq_net_destroy(net);
    }
    th_context_done(ctx, &st);
}
END_TEST

static Suite *plan_suite(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_equivalence_fused);
    tcase_add_test(tc, test_equivalence_float_last);
    tcase_add_test(tc, test_equivalence_two_threads);
    tcase_add_test(tc, test_equivalence_fit_transformed);
    tcase_add_test(tc, test_shared_by_four_threads);
    tcase_add_test(tc, test_create_errors);
    tcase_add_test(tc, test_run_errors);
    tcase_add_test(tc, test_weight_bytes);
    tcase_add_test(tc, test_plan_load_same_bits);
    tcase_add_test(tc, test_batch_independent);
    tcase_add_test(tc, test_plan_load_errors);
    tcase_add_test(tc, test_bitplane_path_exact);
    tcase_add_test(tc, test_pair_layout_exact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(plan_suite()); }
