/* Network-level TSQ: tsq_net_learn_codes puts quantizers in place of the
 * ReLUs from the caller's batches; tsq_net_fit_transform converts a trained
 * step-1 network layer by layer, and every converted layer's codes match its
 * step-1 codes on >= 90% of positions of the calibration data; fine-tuning
 * the converted net; the session's errors. */
#include "nn_testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NCAL 200
#define BATCH 50

/* Images 1x8x8 with a bright 3x3 square in one of 4 quadrants. */
static void make_images(th_rng *r, float *x, int32_t *labels, int64_t n)
{
    const double noise = 0.1;
    int64_t i, p, a, b;
    for (i = 0; i < n; i++) {
        int32_t c = (int32_t)(th_rng_next(r) % 4);
        int64_t oy = (c / 2) * 4 + (int64_t)(th_rng_uniform(r) * 2);
        int64_t ox = (c % 2) * 4 + (int64_t)(th_rng_uniform(r) * 2);
        float *img = x + i * 64;
        for (p = 0; p < 64; p++)
            img[p] = (float)(noise * th_rng_normal(r));
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++)
                img[(oy + a) * 8 + ox + b] += 1.5f;
        labels[i] = c;
    }
}

static void append(tsq_context *ctx, tsq_net *net, tsq_layer *l)
{
    ck_assert_msg(tsq_net_append(net, l) == TSQ_OK, "%s", tsq_net_errmsg(net));
    (void)ctx;
}

/* conv-BN-relu x2, pool, conv-BN-relu, flatten, fc-BN-relu, fc: the
 * Fashion-MNIST network's pattern at a smaller scale (inputs d of the
 * converted layers: 144, 288, 512). */
static tsq_net *cnn(tsq_context *ctx)
{
    const int64_t in[3] = {1, 8, 8};
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    TH_OK(ctx, tsq_net_create(ctx, 3, in, &net));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 32, 3, 3, 1, 1, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 32, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 32, 48, 3, 3, 1, 1, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 48, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 48, 48, 3, 3, 1, 1, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 48, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 768, 64, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 64, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(ctx, net, l);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 64, 4, &l));
    append(ctx, net, l);
    return net;
}

typedef struct {
    float x[NCAL * 64];
    int32_t y[NCAL];
    tsq_tensor *batch[NCAL / BATCH];
} dataset;

static void make_dataset(tsq_context *ctx, dataset *d, uint64_t seed)
{
    th_rng r = {seed};
    int64_t shape[4] = {BATCH, 1, 8, 8};
    int b;
    make_images(&r, d->x, d->y, NCAL);
    for (b = 0; b < NCAL / BATCH; b++)
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, shape, d->x + b * BATCH * 64,
                                   BATCH * 64 * 4, &d->batch[b]));
}

static void free_dataset(dataset *d)
{
    int b;
    for (b = 0; b < NCAL / BATCH; b++)
        tsq_tensor_destroy(d->batch[b]);
}

static void train(tsq_net *net, dataset *d, int epochs)
{
    int e, b;
    for (e = 0; e < epochs; e++)
        for (b = 0; b < NCAL / BATCH; b++)
            ck_assert_msg(tsq_net_train_step(net, d->batch[b], d->y + b * BATCH, BATCH, NULL,
                                             NULL) == TSQ_OK,
                          "%s", tsq_net_errmsg(net));
}

static double accuracy(tsq_net *net, dataset *d)
{
    int64_t hits = 0, c;
    int b;
    for (b = 0; b < NCAL / BATCH; b++) {
        ck_assert_msg(tsq_net_evaluate(net, d->batch[b], d->y + b * BATCH, BATCH, NULL, &c,
                                       NULL) == TSQ_OK,
                      "%s", tsq_net_errmsg(net));
        hits += c;
    }
    return 100.0 * (double)hits / NCAL;
}

static int count_kind(tsq_net *net, int32_t kind)
{
    int32_t n, i, k, c = 0;
    tsq_layer *l;
    ck_assert_int_eq(tsq_net_layer_count(net, &n), TSQ_OK);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(tsq_net_layer(net, i, &l), TSQ_OK);
        ck_assert_int_eq(tsq_layer_kind(l, &k), TSQ_OK);
        c += k == kind;
    }
    return c;
}

/* Index of the k-th layer of a kind, or -1. */
static int32_t nth_kind(tsq_net *net, int32_t kind, int nth)
{
    int32_t n, i, k;
    tsq_layer *l;
    ck_assert_int_eq(tsq_net_layer_count(net, &n), TSQ_OK);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(tsq_net_layer(net, i, &l), TSQ_OK);
        ck_assert_int_eq(tsq_layer_kind(l, &k), TSQ_OK);
        if (k == kind && nth-- == 0)
            return i;
    }
    return -1;
}

/* The codes of quantizer layer `qi` of net on batch b (values are divided
 * by delta; codes mode gives them directly). */
static void quantizer_codes(tsq_context *ctx, tsq_net *net, int32_t qi, dataset *d, int b,
                            int32_t *codes, int64_t *count)
{
    tsq_layer *q = NULL;
    tsq_tensor *out;
    int64_t in[3], out_shape[3], n = 1, i, per, nch;
    int32_t ind, ond, bits;
    float eps, delta;
    double mode;
    int32_t y[BATCH];
    TH_OK(ctx, tsq_net_layer(net, qi, &q));
    TH_OK(ctx, tsq_layer_sample_shapes(q, in, &ind, out_shape, &ond, 3));
    for (i = 0; i < ond; i++)
        n *= out_shape[i];
    out = nt_tensor(ctx, 2, BATCH, n, 0, 0);
    ck_assert_msg(tsq_net_evaluate(net, d->batch[b], NULL, 0, NULL, NULL, y) == TSQ_OK, "%s",
                  tsq_net_errmsg(net));
    TH_OK(ctx, tsq_net_layer_output(net, qi, out));
    TH_OK(ctx, tsq_layer_get_option(q, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, &mode));
    TH_OK(ctx, tsq_layer_act_quant_get_channel(q, 0, &nch, NULL, NULL, NULL));
    per = n / out_shape[0];
    {
        const float *o = nt_data(out);
        float *deltas = malloc((size_t)out_shape[0] * sizeof(float));
        for (i = 0; i < out_shape[0]; i++) {
            TH_OK(ctx, tsq_layer_act_quant_get_channel(q, nch > 0 ? i : 0, NULL, &bits, &eps,
                                                       &delta));
            deltas[i] = delta;
        }
        /* (no ck_assert in this loop: each one costs Check two writes) */
        for (i = 0; i < BATCH * n; i++) {
            float dl = deltas[(i / per) % out_shape[0]];
            codes[i] = mode == 1 ? (int32_t)o[i] : (int32_t)lrintf(o[i] / dl);
        }
        free(deltas);
    }
    *count = BATCH * n;
    tsq_tensor_destroy(out);
}

/* Runs step 1 (learn codes + training) and step 2 on the CNN; checks the
 * code agreement of every converted layer on the calibration data. */
static void run_pipeline(int per_channel, int64_t positions, int convert_last)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    static dataset d;
    tsq_net *net, *step1 = NULL;
    tsq_regressor *reg = NULL;
    int32_t done = 0, stage, unit, units, passes, total_passes = 0, layer_index, count;
    int b, k, nconv;
    double acc_fp, acc_s1, acc_s2, hist[64];
    TH_OK(ctx, tsq_context_set_seed(ctx, 3));
    make_dataset(ctx, &d, 21);
    net = cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.05, 0.9, 0, 1e-4));
    train(net, &d, 6);
    acc_fp = accuracy(net, &d);
    ck_assert_msg(acc_fp >= 95.0, "full precision %.1f%%", acc_fp);

    /* Step 1: quantizers in place of the four ReLUs. */
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_PER_CHANNEL, per_channel));
    for (b = 0; b < NCAL / BATCH; b++) {
        ck_assert_msg(tsq_net_learn_codes(net, d.batch[b], b == NCAL / BATCH - 1, &done) == TSQ_OK,
                      "%s", tsq_net_errmsg(net));
        ck_assert_int_eq(done, b == NCAL / BATCH - 1);
        if (b == 0) {
            TH_OK(ctx, tsq_net_tsq_progress(net, &stage, NULL, NULL, NULL));
            ck_assert_int_eq(stage, TSQ_NET_TSQ_LEARNING);
        }
    }
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_RELU), 0);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_ACT_QUANT), 4);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.02, 0.9, 0, 1e-4));
    train(net, &d, 4);
    acc_s1 = accuracy(net, &d);
    ck_assert_msg(acc_s1 >= 95.0, "step 1 %.1f%%", acc_s1);
    TH_OK(ctx, tsq_net_clone(net, &step1));

    /* Step 2. */
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_POSITIONS, (double)positions));
    if (convert_last) {
        tsq_layer *last = NULL;
        TH_OK(ctx, tsq_net_layer(net, nth_kind(net, TSQ_LAYER_DENSE, 1), &last));
        TH_OK(ctx, tsq_layer_set_option(last, TSQ_LAYER_OPT_TSQ_SELECT, 1));
    }
    TH_OK(ctx, tsq_net_tsq_regressor(net, &reg));
    /* Quick runs: fewer regressor rounds (about half the passes). */
    if (th_quick())
        TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 4));
    while (!done || total_passes == 0) {
        done = 0;
        for (b = 0; b < NCAL / BATCH; b++)
            ck_assert_msg(tsq_net_fit_transform(net, d.batch[b], b == NCAL / BATCH - 1, &done) ==
                              TSQ_OK,
                          "pass %d: %s", total_passes, tsq_net_errmsg(net));
        total_passes++;
        ck_assert_int_lt(total_passes, 100);
        if (!done) {
            TH_OK(ctx, tsq_net_tsq_progress(net, &stage, &unit, &units, &passes));
            ck_assert_int_eq(stage, TSQ_NET_TSQ_FITTING);
            ck_assert_int_eq(units, 3 + convert_last);
        }
    }
    TH_OK(ctx, tsq_net_tsq_progress(net, &stage, &unit, &units, NULL));
    ck_assert_int_eq(stage, TSQ_NET_TSQ_IDLE);
    ck_assert_int_eq(unit, units);
    ck_assert_int_ge(total_passes, units * 2);
    nconv = count_kind(net, TSQ_LAYER_LOWBIT_CONV2D);
    ck_assert_int_eq(nconv, 2);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_LOWBIT_DENSE), 1 + convert_last);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_CONV2D), 1);  /* the first stays */
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_BATCHNORM), 1); /* only the first's */
    /* The regressor's history of every converted layer. */
    for (k = 0; k < units; k++) {
        int32_t i;
        TH_OK(ctx, tsq_net_tsq_history(net, k, TSQ_HISTORY_BEST, hist, 64, &count, &layer_index));
        ck_assert_int_ge(count, 2);
        if (getenv("TSQ_TEST_VERBOSE"))
            fprintf(stderr, "unit %d (layer %d): best objective %g -> %g over %d iterates\n", k,
                    (int)layer_index, hist[0], hist[count - 1], (int)count);
        for (i = 1; i < count; i++)
            ck_assert(hist[i] <= hist[i - 1]);
    }
    /* Codes of every converted layer against step 1 (the quantizers 2..4
     * follow converted layers; quantizer 1 follows the full-precision one). */
    for (k = 1; k < 4; k++) {
        int32_t *c1 = malloc(sizeof(int32_t) * BATCH * 4096), *c2 = malloc(sizeof(int32_t) * BATCH * 4096);
        int64_t n1, n2, same = 0, total = 0, i;
        for (b = 0; b < NCAL / BATCH; b++) {
            quantizer_codes(ctx, step1, nth_kind(step1, TSQ_LAYER_ACT_QUANT, k), &d, b, c1, &n1);
            quantizer_codes(ctx, net, nth_kind(net, TSQ_LAYER_ACT_QUANT, k), &d, b, c2, &n2);
            ck_assert_int_eq(n1, n2);
            for (i = 0; i < n1; i++)
                same += c1[i] == c2[i];
            total += n1;
        }
        if (getenv("TSQ_TEST_VERBOSE"))
            fprintf(stderr, "pipeline(%d,%lld,%d): quantizer %d matches %.2f%%\n", per_channel,
                    (long long)positions, convert_last, k, 100.0 * (double)same / (double)total);
        ck_assert_msg(same >= 0.9 * (double)total,
                      "quantizer %d: codes match step 1 on %.1f%% of positions", k,
                      100.0 * (double)same / (double)total);
        free(c1);
        free(c2);
    }
    acc_s2 = accuracy(net, &d);
    ck_assert_msg(acc_s2 >= acc_s1 - 5.0, "step 2 %.1f%% vs step 1 %.1f%%", acc_s2, acc_s1);
    /* Fine-tune the converted net gently: it trains, codes stay ternary. */
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.002, 0.9, 0, 0));
    train(net, &d, 2);
    {
        tsq_layer *q = NULL;
        tsq_tensor *codes = NULL;
        int8_t *cd;
        int64_t i, n;
        TH_OK(ctx, tsq_net_layer(net, nth_kind(net, TSQ_LAYER_LOWBIT_CONV2D, 0), &q));
        TH_OK(ctx, tsq_layer_state(q, 0, &codes, NULL));
        TH_OK(ctx, tsq_tensor_numel(codes, &n));
        ck_assert_int_eq(tsq_tensor_data(codes, (void **)&cd), TSQ_OK);
        for (i = 0; i < n; i++)
            ck_assert(cd[i] >= -1 && cd[i] <= 1);
    }
    ck_assert_msg(accuracy(net, &d) >= acc_s1 - 5.0, "after fine-tuning");
    tsq_net_destroy(step1);
    tsq_net_destroy(net);
    free_dataset(&d);
    th_context_done(ctx, &st);
}

START_TEST(test_pipeline_per_tensor)
{
    run_pipeline(0, 0, 0);
}
END_TEST

START_TEST(test_pipeline_per_channel_sampled_last)
{
    run_pipeline(1, 20, 1);
}
END_TEST

START_TEST(test_session_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    static dataset d;
    tsq_net *net;
    tsq_layer *l = NULL;
    int32_t done = 7, n;
    double lo, hi, v;
    tsq_tensor *bad = nt_tensor(ctx, 4, 5, 1, 8, 7);
    make_dataset(ctx, &d, 22);
    net = cnn(ctx);
    /* Options. */
    TH_OK(ctx, tsq_net_conversion_option_bounds(TSQ_NET_TSQ_ACT_BITS, &lo, &hi));
    ck_assert(lo == 1 && hi == 8);
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_NET_TSQ_ACT_BITS, 9), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_NET_TSQ_ACT_BITS, 2.5), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_conversion_option(net, 99, 1), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_net_get_conversion_option(net, TSQ_NET_TSQ_EPS_MODE, &v));
    ck_assert(v == TSQ_EPS_JOINT);
    /* Bad arguments. */
    ck_assert_int_eq(tsq_net_learn_codes(net, d.batch[0], 2, &done), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_learn_codes(net, NULL, 0, &done), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_learn_codes(net, bad, 0, &done), TSQ_ERR_SHAPE);
    /* A learn_codes session blocks fit_transform and option changes. */
    TH_OK(ctx, tsq_net_learn_codes(net, d.batch[0], 0, &done));
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(tsq_net_fit_transform(net, d.batch[0], 0, &done), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "learn_codes session is running"));
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_NET_TSQ_ACT_BITS, 3), TSQ_ERR_STATE);
    /* Changing the layers cancels it. */
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    ck_assert_int_eq(tsq_net_learn_codes(net, d.batch[1], 1, &done), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "changed during the session"));
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_ACT_QUANT), 0);
    TH_OK(ctx, tsq_net_remove_layer(net, 15));
    /* fit_transform with nothing selected. */
    TH_OK(ctx, tsq_net_layer_count(net, &n));
    {
        int32_t i;
        for (i = 0; i < n; i++) {
            int32_t k;
            TH_OK(ctx, tsq_net_layer(net, i, &l));
            TH_OK(ctx, tsq_layer_kind(l, &k));
            if (k == TSQ_LAYER_CONV2D || k == TSQ_LAYER_DENSE)
                TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_TSQ_SELECT, 0));
        }
    }
    ck_assert_int_eq(tsq_net_fit_transform(net, d.batch[0], 1, &done), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "no dense or conv2d layer is selected"));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &l));
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_TSQ_SELECT, 1), TSQ_ERR_INVALID);
    tsq_layer_destroy(l);
    /* Cancel in the middle of a fit: the layer being fitted stays in full
     * precision and its input quantizer goes back to values. */
    {
        int32_t i;
        for (i = 0; i < n; i++) {
            TH_OK(ctx, tsq_net_layer(net, i, &l));
            tsq_layer_set_option(l, TSQ_LAYER_OPT_TSQ_SELECT, -1);
        }
        for (i = 0; i < NCAL / BATCH; i++)
            TH_OK(ctx, tsq_net_learn_codes(net, d.batch[i], i == NCAL / BATCH - 1, &done));
        ck_assert_int_eq(done, 1);
        TH_OK(ctx, tsq_net_fit_transform(net, d.batch[0], 0, &done));
        TH_OK(ctx, tsq_net_layer(net, nth_kind(net, TSQ_LAYER_ACT_QUANT, 0), &l));
        TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, &v));
        ck_assert(v == 1);
        TH_OK(ctx, tsq_net_tsq_cancel(net));
        TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, &v));
        ck_assert(v == 0);
        ck_assert_int_eq(count_kind(net, TSQ_LAYER_LOWBIT_CONV2D), 0);
        ck_assert_int_eq(tsq_net_tsq_history(net, 0, TSQ_HISTORY_BEST, NULL, 0, &n, NULL),
                         TSQ_ERR_STATE);
    }
    tsq_tensor_destroy(bad);
    tsq_net_destroy(net);
    free_dataset(&d);
    th_context_done(ctx, &st);
}
END_TEST

/* Option keys of one family are refused by the others; the net options
 * that stand for quantizer options have the quantizer's bounds and
 * defaults, before and after anything is attached to the net. */
START_TEST(test_option_families)
{
    tsq_context *ctx = NULL;
    tsq_net *net;
    tsq_layer *l = NULL;
    tsq_quantizer *q = NULL;
    double v = 0, w = 0, lo, hi, qlo, qhi;
    int32_t i;
    static const int32_t mirrored[4][2] = {
        {TSQ_NET_TSQ_ACT_BITS, TSQ_QUANTIZER_BITS},
        {TSQ_NET_TSQ_EPS_MODE, TSQ_QUANTIZER_EPS_MODE},
        {TSQ_NET_TSQ_EPS, TSQ_QUANTIZER_EPS},
        {TSQ_NET_TSQ_SPARSITY, TSQ_QUANTIZER_SPARSITY}};
    TH_OK(ctx, tsq_context_create(&ctx));
    net = cnn(ctx);
    TH_OK(ctx, tsq_net_layer(net, 0, &l));
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_LAYER_OPT_TRAINABLE, 1), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_get_conversion_option(net, TSQ_LAYER_INFO_BITS, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_NET_TSQ_ACT_BITS, 2), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_INFO_IN_CHANNELS, 1), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_option_bounds(TSQ_NET_TSQ_EPS, &lo, &hi), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_quantizer_create(ctx, 2, 0, &q));
    for (i = 0; i < 4; i++) {
        TH_OK(ctx, tsq_net_conversion_option_bounds(mirrored[i][0], &lo, &hi));
        TH_OK(ctx, tsq_quantizer_option_bounds(mirrored[i][1], &qlo, &qhi));
        ck_assert(lo == qlo && hi == qhi);
        TH_OK(ctx, tsq_net_get_conversion_option(net, mirrored[i][0], &v)); /* nothing attached */
        TH_OK(ctx, tsq_quantizer_get_option(q, mirrored[i][1], &w));
        ck_assert_msg(v == w, "key %#x: net default %g, quantizer's %g", (unsigned)mirrored[i][0],
                      v, w);
    }
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_EPS, 0.5));
    TH_OK(ctx, tsq_net_get_conversion_option(net, TSQ_NET_TSQ_EPS, &v));
    ck_assert(v == 0.5);
    TH_OK(ctx, tsq_net_get_conversion_option(net, TSQ_NET_TSQ_SPARSITY, &v)); /* attached now */
    TH_OK(ctx, tsq_quantizer_get_option(q, TSQ_QUANTIZER_SPARSITY, &w));
    ck_assert(v == w);
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_NET_TSQ_ACT_BITS, 9), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_conversion_option(net, TSQ_NET_TSQ_SEQUENTIAL, 2), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_SEQUENTIAL, 1));
    TH_OK(ctx, tsq_net_get_conversion_option(net, TSQ_NET_TSQ_SEQUENTIAL, &v));
    ck_assert(v == 1);
    tsq_quantizer_destroy(q);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
}
END_TEST

START_TEST(test_act_quant_from_quantizer)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = NULL;
    tsq_layer *l = NULL;
    int32_t bits;
    float eps, delta;
    int64_t nch;
    TH_OK(ctx, tsq_quantizer_create(ctx, 3, 2, &q));
    ck_assert_int_eq(tsq_layer_act_quant_create_from(ctx, q, &l), TSQ_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "not fitted"));
    TH_OK(ctx, tsq_quantizer_set_channel(q, 0, 0.1f, 0.25f));
    TH_OK(ctx, tsq_quantizer_set_channel(q, 1, 0.2f, 0.5f));
    TH_OK(ctx, tsq_layer_act_quant_create_from(ctx, q, &l));
    TH_OK(ctx, tsq_layer_act_quant_get_channel(l, 1, &nch, &bits, &eps, &delta));
    ck_assert_int_eq(nch, 2);
    ck_assert_int_eq(bits, 3);
    ck_assert(eps == 0.2f && delta == 0.5f);
    tsq_layer_destroy(l);
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST


/* The first layer converted too (its X is the float input: no quantizer
 * feeds it), on an MLP over Gaussian blobs; weights of 3 bits. */
START_TEST(test_convert_first_layer)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {31};
    const int64_t in[1] = {6}, shape[2] = {60, 6};
    float x[300 * 6];
    int32_t y[300], done = 0;
    tsq_tensor *bt[5];
    tsq_layer *L[8] = {NULL}, *first = NULL;
    tsq_regressor *reg = NULL;
    tsq_net *net;
    int64_t i, k, hits, c;
    int b, e, passes = 0;
    for (i = 0; i < 300; i++) {
        y[i] = (int32_t)(i % 3);
        for (k = 0; k < 6; k++)
            x[i * 6 + k] = (float)(th_rng_normal(&r) + (k % 3 == y[i] ? 3.0 : 0.0));
    }
    for (b = 0; b < 5; b++)
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, shape, x + b * 360, 360 * 4, &bt[b]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 6, 32, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 32, &L[1]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 32, 32, &L[3]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 32, &L[4]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[5]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 32, 3, &L[6]));
    net = nt_net(ctx, 1, in, L);
    TH_OK(ctx, tsq_net_set_optimizer_adam(net, 0.01, 0.9, 0.999, 1e-8, 0));
    for (e = 0; e < 10; e++)
        for (b = 0; b < 5; b++)
            TH_OK(ctx, tsq_net_train_step(net, bt[b], y + b * 60, 60, NULL, NULL));
    for (b = 0; b < 5; b++)
        TH_OK(ctx, tsq_net_learn_codes(net, bt[b], b == 4, &done));
    ck_assert_int_eq(done, 1);
    TH_OK(ctx, tsq_net_layer(net, 0, &first));
    TH_OK(ctx, tsq_layer_set_option(first, TSQ_LAYER_OPT_TSQ_SELECT, 1));
    TH_OK(ctx, tsq_net_tsq_regressor(net, &reg));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_WEIGHT_BITS, 3));
    for (done = 0; !done && passes < 100; passes++)
        for (b = 0; b < 5; b++)
            ck_assert_msg(tsq_net_fit_transform(net, bt[b], b == 4, &done) == TSQ_OK, "%s",
                          tsq_net_errmsg(net));
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_LOWBIT_DENSE), 2);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_DENSE), 1);
    ck_assert_int_eq(count_kind(net, TSQ_LAYER_BATCHNORM), 0);
    {
        tsq_layer *l = NULL;
        int64_t bits = 0;
        TH_OK(ctx, tsq_net_layer(net, 0, &l));
        TH_OK(ctx, tsq_layer_info(l, TSQ_LAYER_INFO_WEIGHT_BITS, &bits));
        ck_assert_int_eq(bits, 3);
    }
    for (hits = 0, b = 0; b < 5; b++) {
        TH_OK(ctx, tsq_net_evaluate(net, bt[b], y + b * 60, 60, NULL, &c, NULL));
        hits += c;
    }
    ck_assert_msg(hits >= 285, "accuracy %lld / 300 after converting every hidden layer",
                  (long long)hits);
    for (b = 0; b < 5; b++)
        tsq_tensor_destroy(bt[b]);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* The two nets give bit-identical outputs on every batch of d. */
static void same_outputs(tsq_context *ctx, tsq_net *a, tsq_net *b, dataset *d)
{
    static float out_a[BATCH * 4], out_b[BATCH * 4];
    const int64_t yshape[2] = {BATCH, 4};
    tsq_tensor *ya = NULL, *yb = NULL;
    int j;
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, yshape, out_a, sizeof out_a, &ya));
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, yshape, out_b, sizeof out_b, &yb));
    for (j = 0; j < NCAL / BATCH; j++) {
        TH_OK(ctx, tsq_net_forward(a, d->batch[j], ya, 0));
        TH_OK(ctx, tsq_net_forward(b, d->batch[j], yb, 0));
        ck_assert(memcmp(out_a, out_b, sizeof out_a) == 0);
    }
    tsq_tensor_destroy(ya);
    tsq_tensor_destroy(yb);
}

/* fit_transform keeps a batch's rows from pass to pass when the same
 * batch comes back: the result must be the one of making them again. Net A
 * is fed the same batches every pass (rows kept); net B, a clone, gets in
 * every other pass copies whose zero pixels are -0.0f: the same values to
 * every layer, but not the same bytes, so its rows are made again in every
 * pass. Both must end with the same regressor histories and outputs, bit
 * for bit. */
START_TEST(test_fit_rows_kept)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    static dataset d;
    static float neg[NCAL * 64];
    tsq_tensor *negb[NCAL / BATCH];
    tsq_net *a, *b = NULL, *c[2] = {NULL, NULL};
    tsq_regressor *reg = NULL;
    int64_t allocs[2];
    int64_t shape[4] = {BATCH, 1, 8, 8}, i;
    int32_t done_a = 0, done_b = 0, units = 0, k, na, nb, la, lb;
    int j, pass = 0, zeros = 0;
    double ha[64], hb[64];
    TH_OK(ctx, tsq_context_set_seed(ctx, 5));
    /* one thread: the property does not depend on it, and the test stays
     * quick on a busy machine */
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1));
    make_dataset(ctx, &d, 33);
    for (i = 0; i < NCAL * 64; i += 3) /* exact zeros, some of them in the bright squares */
        d.x[i] = 0.0f;
    for (i = 0; i < NCAL * 64; i++) {
        neg[i] = d.x[i] == 0.0f ? -0.0f : d.x[i];
        zeros += d.x[i] == 0.0f;
    }
    ck_assert(zeros > 0 && memcmp(neg, d.x, sizeof neg) != 0);
    for (j = 0; j < NCAL / BATCH; j++)
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, shape, neg + j * BATCH * 64,
                                   BATCH * 64 * 4, &negb[j]));
    a = cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(a, 0.05, 0.9, 0, 1e-4));
    train(a, &d, 2);
    for (j = 0; j < NCAL / BATCH; j++)
        TH_OK(ctx, tsq_net_learn_codes(a, d.batch[j], j == NCAL / BATCH - 1, &done_a));
    ck_assert_int_eq(done_a, 1);
    TH_OK(ctx, tsq_net_set_conversion_option(a, TSQ_NET_TSQ_POSITIONS, 16));
    TH_OK(ctx, tsq_net_tsq_regressor(a, &reg));
    /* 1 + (1 + 1) passes per layer, no polish: enough to come back to kept
     * rows, and quick under the sanitizers */
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 1));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_POLISH, 0));
    TH_OK(ctx, tsq_net_clone(a, &b));
    TH_OK(ctx, tsq_net_clone(a, &c[0]));
    TH_OK(ctx, tsq_net_clone(a, &c[1]));
    TH_OK(ctx, tsq_net_set_conversion_option(c[1], TSQ_NET_TSQ_KEEP_ROWS_MIB, 0));
    /* c[0] keeps rows, c[1] none: each fitted alone, the same results, and
     * keeping shows as fewer allocations (no rows made again) */
    for (k = 0; k < 2; k++) {
        int32_t done = 0;
        int64_t before = st.total_allocs;
        for (pass = 0; !done; pass++) {
            ck_assert_int_lt(pass, 100);
            for (j = 0; j < NCAL / BATCH; j++)
                TH_OK(ctx, tsq_net_fit_transform(c[k], d.batch[j], j == NCAL / BATCH - 1, &done));
        }
        allocs[k] = st.total_allocs - before;
    }
    ck_assert_msg(allocs[0] < allocs[1], "%lld allocations keeping rows, %lld without",
                  (long long)allocs[0], (long long)allocs[1]);
    pass = 0;
    done_a = done_b = 0;
    while (!done_a || !done_b) {
        for (j = 0; j < NCAL / BATCH; j++) {
            int last = j == NCAL / BATCH - 1;
            if (!done_a)
                ck_assert_msg(tsq_net_fit_transform(a, d.batch[j], last, &done_a) == TSQ_OK, "%s",
                              tsq_net_errmsg(a));
            if (!done_b)
                ck_assert_msg(tsq_net_fit_transform(b, pass % 2 ? negb[j] : d.batch[j], last,
                                                    &done_b) == TSQ_OK,
                              "%s", tsq_net_errmsg(b));
        }
        ck_assert_int_lt(++pass, 100);
    }
    TH_OK(ctx, tsq_net_tsq_progress(a, NULL, NULL, &units, NULL));
    ck_assert_int_eq(units, 3);
    for (k = 0; k < units; k++) {
        TH_OK(ctx, tsq_net_tsq_history(a, k, TSQ_HISTORY_OBJECTIVE, ha, 64, &na, &la));
        TH_OK(ctx, tsq_net_tsq_history(b, k, TSQ_HISTORY_OBJECTIVE, hb, 64, &nb, &lb));
        ck_assert_int_eq(na, nb);
        ck_assert_int_eq(la, lb);
        ck_assert(memcmp(ha, hb, (size_t)na * sizeof(double)) == 0);
        for (j = 0; j < 2; j++) {
            TH_OK(ctx, tsq_net_tsq_history(c[j], k, TSQ_HISTORY_OBJECTIVE, hb, 64, &nb, &lb));
            ck_assert_int_eq(na, nb);
            ck_assert(memcmp(ha, hb, (size_t)na * sizeof(double)) == 0);
        }
    }
    same_outputs(ctx, a, b, &d);
    for (j = 0; j < NCAL / BATCH; j++)
        tsq_tensor_destroy(negb[j]);
    tsq_net_destroy(a);
    tsq_net_destroy(b);
    tsq_net_destroy(c[0]);
    tsq_net_destroy(c[1]);
    free_dataset(&d);
    th_context_done(ctx, &st);
}
END_TEST

/* TSQ_NET_TSQ_SHADOW_CLIP: with 0 a converted layer's shadow weights are
 * alpha * code; with the default h the step-1 weights (batch-norm folded,
 * in code units) clipped into their codes' bins: the codes, alpha, b and
 * every output are the same, the weights inside a bin are proportional to
 * the step-1 weights per channel (the folding factor), the rest sit on
 * the bin's edge. */
START_TEST(test_shadow_start)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    static dataset d;
    tsq_net *a, *b = NULL, *s1 = NULL;
    tsq_regressor *reg = NULL;
    double h = 0;
    int32_t done = 0, k, kinds[3] = {TSQ_LAYER_LOWBIT_CONV2D, TSQ_LAYER_LOWBIT_CONV2D,
                                     TSQ_LAYER_LOWBIT_DENSE};
    int j, pass;
    TH_OK(ctx, tsq_context_set_seed(ctx, 7));
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1));
    make_dataset(ctx, &d, 41);
    a = cnn(ctx);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(a, 0.05, 0.9, 0, 1e-4));
    train(a, &d, 2);
    for (j = 0; j < NCAL / BATCH; j++)
        TH_OK(ctx, tsq_net_learn_codes(a, d.batch[j], j == NCAL / BATCH - 1, &done));
    TH_OK(ctx, tsq_net_get_conversion_option(a, TSQ_NET_TSQ_SHADOW_CLIP, &h));
    ck_assert(h == 0.45);
    TH_OK(ctx, tsq_net_tsq_regressor(a, &reg));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 1));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_POLISH, 0));
    TH_OK(ctx, tsq_net_set_conversion_option(a, TSQ_NET_TSQ_POSITIONS, 16));
    TH_OK(ctx, tsq_net_clone(a, &s1));
    TH_OK(ctx, tsq_net_clone(a, &b));
    TH_OK(ctx, tsq_net_set_conversion_option(b, TSQ_NET_TSQ_SHADOW_CLIP, 0));
    for (k = 0; k < 2; k++) {
        tsq_net *n = k ? b : a;
        done = 0;
        for (pass = 0; !done; pass++) {
            ck_assert_int_lt(pass, 100);
            for (j = 0; j < NCAL / BATCH; j++)
                TH_OK(ctx, tsq_net_fit_transform(n, d.batch[j], j == NCAL / BATCH - 1, &done));
        }
    }
    for (k = 0; k < 3; k++) {
        tsq_layer *la = NULL, *lb = NULL, *w1 = NULL, *bn = NULL;
        tsq_tensor *t[2][4] = {{NULL}};
        void *pa[4], *pb[4], *pw = NULL, *pg = NULL;
        const float *S, *Sb, *al, *W, *gamma;
        const int8_t *w;
        int64_t n, C, dd, c, i, inside = 0, edge = 0;
        int32_t li = nth_kind(a, kinds[k], k == 1);
        TH_OK(ctx, tsq_net_layer(a, li, &la));
        TH_OK(ctx, tsq_net_layer(b, li, &lb));
        for (i = 0; i < 3; i++) {
            TH_OK(ctx, tsq_layer_param(la, (int32_t)i, &t[0][i], NULL, NULL));
            TH_OK(ctx, tsq_layer_param(lb, (int32_t)i, &t[1][i], NULL, NULL));
        }
        TH_OK(ctx, tsq_layer_state(la, 0, &t[0][3], NULL));
        TH_OK(ctx, tsq_layer_state(lb, 0, &t[1][3], NULL));
        TH_OK(ctx, tsq_tensor_numel(t[0][3], &n));
        TH_OK(ctx, tsq_tensor_numel(t[0][1], &C));
        dd = n / C;
        for (i = 0; i < 4; i++) {
            TH_OK(ctx, tsq_tensor_data(t[0][i], &pa[i]));
            TH_OK(ctx, tsq_tensor_data(t[1][i], &pb[i]));
        }
        ck_assert(memcmp(pa[3], pb[3], (size_t)n) == 0);                     /* codes */
        ck_assert(memcmp(pa[1], pb[1], (size_t)C * sizeof(float)) == 0);      /* alpha */
        ck_assert(memcmp(pa[2], pb[2], (size_t)C * sizeof(float)) == 0);      /* b */
        S = pa[0];
        Sb = pb[0];
        al = pa[1];
        w = pa[3];
        /* the step-1 layer (conv/dense, then its batch-norm) at the same
         * place among the weight layers: index 3, 7 and 11 of cnn() */
        TH_OK(ctx, tsq_net_layer(s1, k == 0 ? 3 : k == 1 ? 7 : 11, &w1));
        TH_OK(ctx, tsq_net_layer(s1, k == 0 ? 4 : k == 1 ? 8 : 12, &bn));
        {
            tsq_tensor *wt = NULL, *gt = NULL;
            TH_OK(ctx, tsq_layer_param(w1, 0, &wt, NULL, NULL));
            TH_OK(ctx, tsq_layer_param(bn, 0, &gt, NULL, NULL));
            TH_OK(ctx, tsq_tensor_data(wt, &pw));
            TH_OK(ctx, tsq_tensor_data(gt, &pg));
            W = pw;
            gamma = pg;
        }
        for (c = 0; c < C; c++) {
            double ratio = 0;
            for (i = 0; i < dd; i++) {
                float centre = al[c] * (float)w[c * dd + i];
                double off = fabs((double)S[c * dd + i] - centre) / al[c];
                ck_assert(Sb[c * dd + i] == centre);
                ck_assert_msg(off <= 0.45 * (1 + 1e-5), "offset %g of the bin", off);
                if (off >= 0.45 * (1 - 1e-5)) {
                    edge++;
                } else if (W[c * dd + i] != 0) {
                    /* inside: s_c W delta_j; delta is one per tensor here */
                    double r = S[c * dd + i] / (double)W[c * dd + i];
                    ck_assert(r * gamma[c] > 0);
                    if (ratio == 0)
                        ratio = r;
                    ck_assert_msg(fabs(r / ratio - 1) < 1e-4, "channel %lld: ratio %g, %g",
                                  (long long)c, r, ratio);
                    inside++;
                }
            }
        }
        ck_assert_msg(inside > n / 4 && edge > 0, "layer %d: %lld inside, %lld on the edge of %lld",
                      (int)li, (long long)inside, (long long)edge, (long long)n);
    }
    same_outputs(ctx, a, b, &d);
    tsq_net_destroy(a);
    tsq_net_destroy(b);
    tsq_net_destroy(s1);
    free_dataset(&d);
    th_context_done(ctx, &st);
}
END_TEST

/* One test case per pipeline, so that each can run alone (CK_RUN_CASE),
 * e.g. under valgrind. */
static TCase *tcase(const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test);
    return tc;
}

static Suite *suite(void)
{
    Suite *s = suite_create("nn_tsq");
    TCase *tc = tcase("session", test_session_errors);
    tcase_add_test(tc, test_act_quant_from_quantizer);
    tcase_add_test(tc, test_option_families);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tcase("pipeline_tensor", test_pipeline_per_tensor));
    suite_add_tcase(s, tcase("pipeline_channel", test_pipeline_per_channel_sampled_last));
    suite_add_tcase(s, tcase("first_layer", test_convert_first_layer));
    suite_add_tcase(s, tcase("rows_kept", test_fit_rows_kept));
    suite_add_tcase(s, tcase("shadow_start", test_shadow_start));
    return s;
}

int main(void)
{
    return th_run(suite());
}
