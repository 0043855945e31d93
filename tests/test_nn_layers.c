/* Layers: finite-difference gradient checks of every layer on inputs and
 * parameters, conv2d against a direct convolution over strides, paddings
 * and odd sizes, batch-norm statistics and folding, the quantizer layer's
 * formula and straight-through gradient, the loss, and argument errors. */
#include "nn_testutil.h"

#include "quant/quant_internal.h"

#include <stdio.h>

static void fill_away_from_zero(tsq_tensor *t, th_rng *r)
{
    float *d = nt_data(t);
    int64_t i, n = nt_numel(t);
    for (i = 0; i < n; i++) {
        double v = 0.05 + th_rng_uniform(r);
        d[i] = (float)(th_rng_uniform(r) < 0.5 ? -v : v);
    }
}

START_TEST(test_grad_dense)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {1};
    const int64_t in[1] = {6};
    int threads;
    /* 2 threads: the rows are split over libtsq's threads. */
    for (threads = 1; threads <= 2; threads++) {
        tsq_layer *l = NULL;
        tsq_net *net;
        tsq_tensor *x = nt_tensor(ctx, 2, 4, 6, 0, 0);
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        TH_OK(ctx, tsq_layer_dense_create(ctx, 6, 5, &l));
        net = nt_net(ctx, 1, in, (tsq_layer *[]){l, NULL});
        nt_fill_normal(x, &r, 1.0);
        nt_gradcheck(ctx, net, x, 1, &r, 1e-2, 2e-3, 2e-3, NULL);
        tsq_tensor_destroy(x);
        tsq_net_destroy(net);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* conv configurations: cin, cout, kh, kw, stride, pad, h, w, batch */
static const int64_t conv_cases[][9] = {
    {2, 3, 3, 3, 1, 1, 7, 6, 3},  /* same-padding, odd sizes */
    {3, 2, 2, 3, 2, 0, 9, 8, 2},  /* rectangular kernel, stride 2 */
    {4, 5, 1, 1, 1, 0, 5, 7, 2},  /* 1x1: no im2col */
    {2, 3, 3, 3, 2, 2, 5, 5, 3},  /* pad 2, small output: image groups */
    {1, 2, 5, 5, 3, 1, 11, 10, 2},/* large kernel, stride 3 */
};

START_TEST(test_grad_conv)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {2};
    size_t c;
    for (c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++) {
        const int64_t *k = conv_cases[c];
        const int64_t in[3] = {k[0], k[6], k[7]};
        tsq_layer *l = NULL;
        tsq_net *net;
        tsq_tensor *x = nt_tensor(ctx, 4, k[8], k[0], k[6], k[7]);
        TH_OK(ctx, tsq_layer_conv2d_create(ctx, k[0], k[1], k[2], k[3], k[4], k[5], &l));
        net = nt_net(ctx, 3, in, (tsq_layer *[]){l, NULL});
        nt_fill_normal(x, &r, 1.0);
        nt_gradcheck(ctx, net, x, 1, &r, 1e-2, 3e-3, 3e-3, NULL);
        tsq_tensor_destroy(x);
        tsq_net_destroy(net);
    }
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_grad_batchnorm)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {3};
    int dims, train;
    for (dims = 1; dims <= 3; dims += 2)
        for (train = 0; train <= 1; train++) {
            const int64_t in3[3] = {3, 4, 5}, in1[1] = {3};
            tsq_layer *l = NULL;
            tsq_net *net;
            tsq_tensor *x = dims == 3 ? nt_tensor(ctx, 4, 4, 3, 4, 5) : nt_tensor(ctx, 2, 6, 3, 0, 0);
            tsq_tensor *g = NULL, *rv = NULL;
            float *gd, *rvd;
            int i;
            TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 3, &l));
            /* Non-trivial gamma and running statistics. */
            TH_OK(ctx, tsq_layer_param(l, 0, &g, NULL, NULL));
            TH_OK(ctx, tsq_layer_state(l, 1, &rv, NULL));
            gd = nt_data(g);
            rvd = nt_data(rv);
            for (i = 0; i < 3; i++) {
                gd[i] = 0.5f + (float)i;
                rvd[i] = 0.7f + 0.5f * (float)i;
            }
            net = nt_net(ctx, dims, dims == 3 ? in3 : in1, (tsq_layer *[]){l, NULL});
            nt_fill_normal(x, &r, 2.0);
            nt_gradcheck(ctx, net, x, train, &r, 5e-3, 3e-3, 1e-2, NULL);
            tsq_tensor_destroy(x);
            tsq_net_destroy(net);
        }
    th_context_done(ctx, &st);
}
END_TEST

/* A batch-norm followed by a ReLU runs as one step in a net (the ReLU's
 * mask recomputed from the batch-norm's input). Against the same two
 * layers kept apart by a flatten (a copy, so the same math, unpaired):
 * the output, the batch-norm's output, dx and the parameter gradients are
 * the same bits, in training (batch statistics), eval and frozen modes,
 * 1-d and 2-d, on 1 and 2 threads (each layer's gradient is checked
 * against finite differences on its own above and below). Sizes with remainders: 9 samples (not a multiple of 4 rows),
 * 5 x 7 positions (35: a tail past the blocks of 8). */
static void bn_relu_net(tsq_context *ctx, int dims, int frozen, tsq_net **paired,
                        tsq_net **apart)
{
    const int64_t in3[3] = {6, 5, 7}, in1[1] = {6};
    int k;
    for (k = 0; k < 2; k++) {
        tsq_layer *bn = NULL, *relu = NULL, *flat = NULL;
        tsq_tensor *g = NULL, *b = NULL, *rv = NULL;
        int i;
        TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 6, &bn));
        TH_OK(ctx, tsq_layer_relu_create(ctx, &relu));
        TH_OK(ctx, tsq_layer_param(bn, 0, &g, NULL, NULL));
        TH_OK(ctx, tsq_layer_param(bn, 1, &b, NULL, NULL));
        TH_OK(ctx, tsq_layer_state(bn, 1, &rv, NULL));
        for (i = 0; i < 6; i++) { /* one channel with gamma < 0, one all but cut off */
            nt_data(g)[i] = i == 2 ? -0.8f : 0.4f + 0.3f * (float)i;
            nt_data(b)[i] = i == 4 ? -3.0f : 0.2f * (float)(i - 2);
            nt_data(rv)[i] = 0.5f + 0.25f * (float)i;
        }
        if (frozen)
            TH_OK(ctx, tsq_layer_set_option(bn, TSQ_LAYER_OPT_BN_FROZEN, 1));
        if (k == 1)
            TH_OK(ctx, tsq_layer_flatten_create(ctx, &flat));
        *(k == 0 ? paired : apart) =
            nt_net(ctx, dims, dims == 3 ? in3 : in1,
                   k == 0 ? (tsq_layer *[]){bn, relu, NULL} : (tsq_layer *[]){bn, flat, relu, NULL});
    }
}

static void same_floats(const tsq_tensor *a, const tsq_tensor *b)
{
    ck_assert_int_eq(nt_numel(a), nt_numel(b));
    ck_assert_int_eq(memcmp(nt_data((tsq_tensor *)a), nt_data((tsq_tensor *)b),
                            (size_t)nt_numel(a) * sizeof(float)),
                     0);
}

START_TEST(test_batchnorm_relu_pair)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {29};
    int dims, mode, threads;
    for (threads = 1; threads <= 2; threads++)
        for (dims = 1; dims <= 3; dims += 2)
            for (mode = 0; mode < 3; mode++) { /* train, eval, frozen (train) */
                int32_t train = mode != 1, np, i;
                int64_t n = 9, m = dims == 3 ? 6 * 5 * 7 : 6;
                tsq_net *a = NULL, *b = NULL;
                tsq_tensor *x = dims == 3 ? nt_tensor(ctx, 4, n, 6, 5, 7) : nt_tensor(ctx, 2, n, 6, 0, 0);
                tsq_tensor *ya = nt_tensor(ctx, 2, n, m, 0, 0), *yb = nt_tensor(ctx, 2, n, m, 0, 0);
                tsq_tensor *dy = nt_tensor(ctx, 2, n, m, 0, 0);
                tsq_tensor *dxa = NULL, *dxb = NULL, *ha = NULL, *hb = NULL;
                TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
                bn_relu_net(ctx, dims, mode == 2, &a, &b);
                dxa = dims == 3 ? nt_tensor(ctx, 4, n, 6, 5, 7) : nt_tensor(ctx, 2, n, 6, 0, 0);
                dxb = dims == 3 ? nt_tensor(ctx, 4, n, 6, 5, 7) : nt_tensor(ctx, 2, n, 6, 0, 0);
                nt_fill_normal(x, &r, 1.5);
                nt_fill_normal(dy, &r, 1.0);
                nt_data(x)[3] = 0.0f;
                ck_assert_int_eq(tsq_net_forward(a, x, ya, train), TSQ_OK);
                ck_assert_int_eq(tsq_net_forward(b, x, yb, train), TSQ_OK);
                same_floats(ya, yb);
                /* the batch-norm's own output (the ReLU's input) is kept too */
                ha = dims == 3 ? nt_tensor(ctx, 4, n, 6, 5, 7) : nt_tensor(ctx, 2, n, 6, 0, 0);
                hb = dims == 3 ? nt_tensor(ctx, 4, n, 6, 5, 7) : nt_tensor(ctx, 2, n, 6, 0, 0);
                ck_assert_int_eq(tsq_net_layer_output(a, 0, ha), TSQ_OK);
                ck_assert_int_eq(tsq_net_layer_output(b, 0, hb), TSQ_OK);
                same_floats(ha, hb);
                ck_assert_int_eq(tsq_net_backward(a, dy, dxa), TSQ_OK);
                ck_assert_int_eq(tsq_net_backward(b, dy, dxb), TSQ_OK);
                same_floats(dxa, dxb);
                TH_OK(ctx, tsq_net_param_count(a, &np));
                ck_assert_int_eq(np, 2);
                for (i = 0; i < np; i++) {
                    tsq_tensor *ga = NULL, *gb = NULL;
                    TH_OK(ctx, tsq_net_param(a, i, NULL, &ga, NULL, NULL));
                    TH_OK(ctx, tsq_net_param(b, i, NULL, &gb, NULL, NULL));
                    same_floats(ga, gb);
                }
                tsq_tensor_destroy(x);
                tsq_tensor_destroy(ya);
                tsq_tensor_destroy(yb);
                tsq_tensor_destroy(dy);
                tsq_tensor_destroy(dxa);
                tsq_tensor_destroy(dxb);
                tsq_tensor_destroy(ha);
                tsq_tensor_destroy(hb);
                tsq_net_destroy(a);
                tsq_net_destroy(b);
            }
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_grad_relu_pool_flatten)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {4};
    const int64_t in[3] = {2, 7, 9};
    int variant;
    for (variant = 0; variant < 4; variant++) {
        tsq_layer *a = NULL, *b = NULL, *c = NULL;
        tsq_net *net;
        tsq_tensor *x = nt_tensor(ctx, 4, 3, 2, 7, 9);
        float *xd = nt_data(x);
        int64_t i, n = nt_numel(x);
        if (variant == 0)
            TH_OK(ctx, tsq_layer_relu_create(ctx, &a));
        else if (variant == 1)
            TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &a));
        else if (variant == 2)
            TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 3, 2, &a)); /* overlapping windows */
        else
            TH_OK(ctx, tsq_layer_global_avgpool_create(ctx, &a));
        TH_OK(ctx, tsq_layer_flatten_create(ctx, &b));
        net = nt_net(ctx, 3, in, (tsq_layer *[]){a, b, NULL});
        (void)c;
        /* Distinct values 0.05 apart, far from 0 and from each other
         * compared with the probe step, so no probe crosses a kink. */
        for (i = 0; i < n; i++)
            xd[i] = (float)(0.05 * (double)((i * 37) % n) - 0.05 * (double)(n / 2) + 0.025);
        nt_gradcheck(ctx, net, x, 1, &r, 5e-3, 2e-3, 2e-3, NULL);
        fill_away_from_zero(x, &r);
        if (variant == 0 || variant == 3)
            nt_gradcheck(ctx, net, x, 0, &r, 1e-2, 2e-3, 2e-3, NULL);
        tsq_tensor_destroy(x);
        tsq_net_destroy(net);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Sets a low-bit layer's codes (random in -m..m), alpha and bias. */
static void set_lowbit_random(tsq_context *ctx, tsq_layer *l, int64_t n, int64_t out, int m,
                              th_rng *r)
{
    int64_t shape[1] = {n}, oshape[1] = {out}, i;
    tsq_tensor *codes = NULL, *alpha = nt_tensor(ctx, 1, out, 0, 0, 0), *bias;
    int8_t *cd;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, shape, &codes));
    bias = nt_tensor(ctx, 1, out, 0, 0, 0);
    ck_assert_int_eq(tsq_tensor_data(codes, (void **)&cd), TSQ_OK);
    for (i = 0; i < n; i++)
        cd[i] = (int8_t)((int)(th_rng_uniform(r) * (2 * m + 1)) - m);
    for (i = 0; i < out; i++) {
        nt_data(alpha)[i] = (float)(0.2 + th_rng_uniform(r));
        nt_data(bias)[i] = (float)th_rng_normal(r);
    }
    (void)oshape;
    TH_OK(ctx, nt_weight_shaped(l, codes));
    ck_assert_msg(tsq_layer_lowbit_set(l, codes, alpha, bias) == TSQ_OK, "%s", tsq_layer_errmsg(l));
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
}

/* The low-bit layers: dx, alpha and b by finite differences; the shadow
 * gradient is the straight-through one, which equals the weight gradient
 * of the full-precision layer with weights alpha * codes, masked where
 * |S / alpha| > m + 1/2. */
START_TEST(test_grad_lowbit)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {5};
    int conv, bits;
    for (conv = 0; conv <= 1; conv++)
        for (bits = 2; bits <= 4; bits += 2) {
            /* 4-bit layers run on 2 threads (workers mode). */
            TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, bits == 4 ? 2 : 1));
            const int64_t in1[1] = {7}, in3[3] = {2, 6, 5};
            int m = (1 << (bits - 1)) - 1;
            tsq_layer *q = NULL, *f = NULL;
            tsq_net *nq, *nf;
            tsq_tensor *x = conv ? nt_tensor(ctx, 4, 3, 2, 6, 5) : nt_tensor(ctx, 2, 3, 7, 0, 0);
            tsq_tensor *sv = NULL, *sg = NULL, *av = NULL, *bv = NULL, *fw = NULL, *fg = NULL,
                       *fb = NULL, *y, *dy;
            int64_t nw, out = 4, i, masked = 0;
            float *S;
            if (conv) {
                TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 2, 4, 3, 3, 1, 1, bits, &q));
                TH_OK(ctx, tsq_layer_conv2d_create(ctx, 2, 4, 3, 3, 1, 1, &f));
            } else {
                TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 7, 4, bits, &q));
                TH_OK(ctx, tsq_layer_dense_create(ctx, 7, 4, &f));
            }
            nw = conv ? 4 * 2 * 9 : 4 * 7;
            set_lowbit_random(ctx, q, nw, out, m, &r);
            nq = nt_net(ctx, conv ? 3 : 1, conv ? in3 : in1, (tsq_layer *[]){q, NULL});
            nf = nt_net(ctx, conv ? 3 : 1, conv ? in3 : in1, (tsq_layer *[]){f, NULL});
            /* Integer input codes, as from a quantizer in codes mode. */
            for (i = 0; i < nt_numel(x); i++)
                nt_data(x)[i] = (float)(int)(th_rng_uniform(&r) * 4);
            nt_gradcheck(ctx, nq, x, 1, &r, 1e-2, 3e-3, 3e-3, "weight");
            /* The same layer in full precision. */
            TH_OK(ctx, tsq_layer_param(q, 0, &sv, &sg, NULL));
            TH_OK(ctx, tsq_layer_param(q, 1, &av, NULL, NULL));
            TH_OK(ctx, tsq_layer_param(q, 2, &bv, NULL, NULL));
            TH_OK(ctx, tsq_layer_param(f, 0, &fw, &fg, NULL));
            TH_OK(ctx, tsq_layer_param(f, 1, &fb, NULL, NULL));
            S = nt_data(sv);
            /* Push some shadow weights beyond the clamp, to test the mask. */
            for (i = 0; i < nw; i += 5)
                S[i] = (float)(m + 0.75 + th_rng_uniform(&r)) * nt_data(av)[i / (nw / out)];
            for (i = 0; i < nw; i++) {
                float a = nt_data(av)[i / (nw / out)];
                float c = rintf(S[i] / a);
                c = c > (float)m ? (float)m : c < (float)-m ? (float)-m : c;
                nt_data(fw)[i] = a * c;
            }
            memcpy(nt_data(fb), nt_data(bv), (size_t)out * sizeof(float));
            y = nt_tensor(ctx, 2, 3, conv ? 4 * 30 : 4, 0, 0);
            dy = nt_tensor(ctx, 2, 3, conv ? 4 * 30 : 4, 0, 0);
            nt_fill_normal(dy, &r, 1.0);
            TH_OK(ctx, tsq_net_forward(nq, x, y, 1));
            TH_OK(ctx, tsq_net_backward(nq, dy, NULL));
            TH_OK(ctx, tsq_net_forward(nf, x, y, 1));
            TH_OK(ctx, tsq_net_backward(nf, dy, NULL));
            for (i = 0; i < nw; i++) {
                float a = nt_data(av)[i / (nw / out)];
                int clipped = fabsf(S[i] / a) > (float)m + 0.5f;
                float want = clipped ? 0.0f : nt_data(fg)[i];
                masked += clipped;
                NT_REQUIRE(fabsf(nt_data(sg)[i] - want) <= 1e-4f * (1.0f + fabsf(want)),
                           "shadow grad %lld: %g vs %g", (long long)i, (double)nt_data(sg)[i],
                           (double)want);
            }
            ck_assert_int_gt(masked, 0);
            tsq_tensor_destroy(x);
            tsq_tensor_destroy(y);
            tsq_tensor_destroy(dy);
            tsq_net_destroy(nq);
            tsq_net_destroy(nf);
        }
    th_context_done(ctx, &st);
}
END_TEST

/* Forward equals tsq__quant_code(x) * delta (or the code), per tensor and
 * per channel; backward passes dy exactly where 0 < x < maxcode delta. */
START_TEST(test_act_quant_layer)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {6};
    const int64_t in[3] = {3, 4, 5};
    int per_channel, codes;
    for (per_channel = 0; per_channel <= 1; per_channel++)
        for (codes = 0; codes <= 1; codes++) {
            tsq_layer *q = NULL;
            tsq_net *net;
            tsq_tensor *x = nt_tensor(ctx, 4, 2, 3, 4, 5), *y = nt_tensor(ctx, 4, 2, 3, 4, 5);
            tsq_tensor *dy = nt_tensor(ctx, 4, 2, 3, 4, 5), *dx = nt_tensor(ctx, 4, 2, 3, 4, 5);
            int32_t bits[3] = {2, 1, 3};
            float eps[3] = {0.32f, 0.0f, 0.1f}, delta[3] = {0.6487f, 1.0121f, 0.3217f};
            int64_t i, nch = 0, pass = 0, block = 0;
            TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.32f, 0.6487f, &q));
            if (per_channel)
                for (i = 0; i < 3; i++)
                    TH_OK(ctx, tsq_layer_act_quant_set_channel(q, i, 3, bits[i], eps[i], delta[i]));
            TH_OK(ctx, tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, codes));
            TH_OK(ctx, tsq_layer_act_quant_get_channel(q, per_channel ? 2 : 0, &nch, NULL, NULL, NULL));
            ck_assert_int_eq(nch, per_channel ? 3 : 0);
            net = nt_net(ctx, 3, in, (tsq_layer *[]){q, NULL});
            nt_fill_normal(x, &r, 1.5);
            /* Exact boundaries too: eps, and the top level. */
            nt_data(x)[0] = 0.32f;
            nt_data(x)[1] = 3 * 0.6487f;
            nt_fill_normal(dy, &r, 1.0);
            TH_OK(ctx, tsq_net_forward(net, x, y, 1));
            TH_OK(ctx, tsq_net_backward(net, dy, dx));
            for (i = 0; i < 120; i++) {
                int c = per_channel ? (int)((i / 20) % 3) : 0;
                int32_t b = per_channel ? bits[c] : 2;
                float e = per_channel ? eps[c] : 0.32f, d = per_channel ? delta[c] : 0.6487f;
                int32_t mc = (1 << b) - 1;
                int32_t k = tsq__quant_code(nt_data(x)[i], e, 1.0f / d, mc);
                float want = codes ? (float)k : (float)k * d;
                float g = tsq__quant_passes(nt_data(x)[i], d, mc) ? nt_data(dy)[i] : 0.0f;
                if (codes)
                    g = tsq__quant_passes(nt_data(x)[i], d, mc) ? nt_data(dy)[i] * (1.0f / d) : 0.0f;
                NT_REQUIRE(nt_data(y)[i] == want, "y[%lld] = %g, want %g", (long long)i,
                           (double)nt_data(y)[i], (double)want);
                NT_REQUIRE(nt_data(dx)[i] == g, "dx[%lld] = %g, want %g", (long long)i,
                           (double)nt_data(dx)[i], (double)g);
                pass += g != 0.0f;
                block += g == 0.0f;
            }
            ck_assert_int_gt(pass, 10);
            ck_assert_int_gt(block, 10);
            if (!per_channel)
                ck_assert(nt_data(y)[0] == 0.0f); /* x == eps gives 0 */
            tsq_tensor_destroy(x);
            tsq_tensor_destroy(y);
            tsq_tensor_destroy(dy);
            tsq_tensor_destroy(dx);
            tsq_net_destroy(net);
        }
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_act_quant_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t in[3] = {3, 2, 2};
    tsq_layer *q = NULL, *relu = NULL;
    tsq_net *net = NULL;
    int32_t bits = 0;
    float e = 0, d = 0;
    ck_assert_int_eq(tsq_layer_act_quant_create(ctx, 0, 0.1f, 0.5f, &q), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_act_quant_create(ctx, 2, -0.1f, 0.5f, &q), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_act_quant_create(ctx, 2, 0.1f, 0.0f, &q), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_act_quant_create(ctx, 2, NAN, 0.5f, &q), TSQ_ERR_NOT_FINITE);
    ck_assert_ptr_null(q);
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.1f, 0.5f, &q));
    ck_assert_int_eq(tsq_layer_act_quant_set_channel(q, 4, 4, 2, 0.1f, 0.5f), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_layer_act_quant_set_channel(q, 1, 4, 3, 0.2f, 0.25f));
    ck_assert_int_eq(tsq_layer_act_quant_set_channel(q, 1, 5, 3, 0.2f, 0.25f), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_layer_errmsg(q), "has 4 channels"));
    TH_OK(ctx, tsq_layer_act_quant_get_channel(q, 1, NULL, &bits, &e, &d));
    ck_assert_int_eq(bits, 3);
    ck_assert(e == 0.2f && d == 0.25f);
    TH_OK(ctx, tsq_layer_act_quant_get_channel(q, 0, NULL, &bits, &e, &d));
    ck_assert_int_eq(bits, 2);
    /* 4 channels do not fit an input of 3. */
    TH_OK(ctx, tsq_net_create(ctx, 3, in, &net));
    ck_assert_int_eq(tsq_net_append(net, q), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "4 channels gets 3"));
    /* Back to per tensor: fits. */
    TH_OK(ctx, tsq_layer_act_quant_set_channel(q, -1, 0, 2, 0.1f, 0.5f));
    TH_OK(ctx, tsq_net_append(net, q));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &relu));
    ck_assert_int_eq(tsq_layer_act_quant_set_channel(relu, 0, 3, 2, 0.1f, 0.5f), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_layer_errmsg(relu), "not a quantizer"));
    tsq_layer_destroy(relu);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* Direct convolution in double, and its gradients. */
static void naive_conv(const int64_t *k, const float *x, const float *w, const float *b,
                       const double *dy, double *y, double *dw, double *db, double *dx, int64_t oh,
                       int64_t ow)
{
    int64_t cin = k[0], cout = k[1], kh = k[2], kw = k[3], s = k[4], p = k[5], H = k[6], W = k[7];
    int64_t N = k[8], n, co, ci, i, j, oy, ox;
    memset(dw, 0, (size_t)(cout * cin * kh * kw) * sizeof(double));
    memset(db, 0, (size_t)cout * sizeof(double));
    memset(dx, 0, (size_t)(N * cin * H * W) * sizeof(double));
    for (n = 0; n < N; n++)
        for (co = 0; co < cout; co++)
            for (oy = 0; oy < oh; oy++)
                for (ox = 0; ox < ow; ox++) {
                    double acc = b[co];
                    double g = dy[((n * cout + co) * oh + oy) * ow + ox];
                    db[co] += g;
                    for (ci = 0; ci < cin; ci++)
                        for (i = 0; i < kh; i++)
                            for (j = 0; j < kw; j++) {
                                int64_t yy = oy * s - p + i, xx = ox * s - p + j;
                                int64_t wi = ((co * cin + ci) * kh + i) * kw + j;
                                int64_t xi = ((n * cin + ci) * H + yy) * W + xx;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W)
                                    continue;
                                acc += (double)w[wi] * x[xi];
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                    y[((n * cout + co) * oh + oy) * ow + ox] = acc;
                }
}

static void expect_close(const float *got, const double *want, int64_t n, double tol,
                         const char *what, int64_t c)
{
    int64_t i;
    for (i = 0; i < n; i++)
        NT_REQUIRE(fabs((double)got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                   "case %lld %s[%lld]: %.7g vs %.7g", (long long)c, what, (long long)i,
                   (double)got[i], want[i]);
}

START_TEST(test_conv_vs_direct)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {7};
    int c, threads, ncases = th_quick() ? 40 : 120;
    for (threads = 1; threads <= 2; threads++) {
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        for (c = 0; c < ncases; c++) {
            int64_t k[9];
            int64_t oh, ow, nw, nx, ny;
            tsq_layer *l = NULL;
            tsq_net *net;
            tsq_tensor *x, *y, *dy, *dx, *w = NULL, *b = NULL, *gw = NULL, *gb = NULL;
            double *ry, *rdw, *rdb, *rdx;
            k[0] = 1 + (int64_t)(th_rng_uniform(&r) * 4);
            k[1] = 1 + (int64_t)(th_rng_uniform(&r) * 5);
            k[2] = 1 + (int64_t)(th_rng_uniform(&r) * 5);
            k[3] = 1 + (int64_t)(th_rng_uniform(&r) * 5);
            k[4] = 1 + (int64_t)(th_rng_uniform(&r) * 3);
            k[5] = (int64_t)(th_rng_uniform(&r) * (double)(k[2] < k[3] ? k[2] : k[3]));
            k[6] = 1 + (int64_t)(th_rng_uniform(&r) * 13);
            k[7] = 1 + (int64_t)(th_rng_uniform(&r) * 13);
            k[8] = 1 + (int64_t)(th_rng_uniform(&r) * 5);
            if (c == 0) { /* a 1x1 direct case and a large-output case, always */
                int64_t d[9] = {3, 4, 1, 1, 1, 0, 17, 19, 3};
                memcpy(k, d, sizeof d);
            } else if (c == 1) {
                int64_t d[9] = {2, 3, 3, 3, 1, 1, 20, 17, 2};
                memcpy(k, d, sizeof d);
            }
            if (k[6] + 2 * k[5] < k[2] || k[7] + 2 * k[5] < k[3])
                continue; /* kernel larger than the padded image: rejected by setup */
            oh = (k[6] + 2 * k[5] - k[2]) / k[4] + 1;
            ow = (k[7] + 2 * k[5] - k[3]) / k[4] + 1;
            nw = k[1] * k[0] * k[2] * k[3];
            nx = k[8] * k[0] * k[6] * k[7];
            ny = k[8] * k[1] * oh * ow;
            {
                const int64_t in[3] = {k[0], k[6], k[7]};
                TH_OK(ctx, tsq_layer_conv2d_create(ctx, k[0], k[1], k[2], k[3], k[4], k[5], &l));
                net = nt_net(ctx, 3, in, (tsq_layer *[]){l, NULL});
            }
            x = nt_tensor(ctx, 4, k[8], k[0], k[6], k[7]);
            y = nt_tensor(ctx, 4, k[8], k[1], oh, ow);
            dy = nt_tensor(ctx, 4, k[8], k[1], oh, ow);
            dx = nt_tensor(ctx, 4, k[8], k[0], k[6], k[7]);
            nt_fill_normal(x, &r, 1.0);
            nt_fill_normal(dy, &r, 1.0);
            TH_OK(ctx, tsq_layer_param(l, 0, &w, &gw, NULL));
            TH_OK(ctx, tsq_layer_param(l, 1, &b, &gb, NULL));
            nt_fill_normal(b, &r, 1.0);
            TH_OK(ctx, tsq_net_forward(net, x, y, 1));
            TH_OK(ctx, tsq_net_backward(net, dy, dx));
            ry = malloc((size_t)ny * sizeof(double));
            rdw = malloc((size_t)nw * sizeof(double));
            rdb = malloc((size_t)k[1] * sizeof(double));
            rdx = malloc((size_t)nx * sizeof(double));
            {
                double *dyd = malloc((size_t)ny * sizeof(double));
                int64_t i;
                for (i = 0; i < ny; i++)
                    dyd[i] = nt_data(dy)[i];
                naive_conv(k, nt_data(x), nt_data(w), nt_data(b), dyd, ry, rdw, rdb, rdx, oh, ow);
                free(dyd);
            }
            expect_close(nt_data(y), ry, ny, 1e-5, "y", c);
            expect_close(nt_data(gw), rdw, nw, 1e-4, "dw", c);
            expect_close(nt_data(gb), rdb, k[1], 1e-4, "db", c);
            expect_close(nt_data(dx), rdx, nx, 1e-5, "dx", c);
            free(ry);
            free(rdw);
            free(rdb);
            free(rdx);
            tsq_tensor_destroy(x);
            tsq_tensor_destroy(y);
            tsq_tensor_destroy(dy);
            tsq_tensor_destroy(dx);
            tsq_net_destroy(net);
        }
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Train mode: per-channel output mean beta and variance gamma^2 (biased),
 * running statistics (1-m) old + m batch (unbiased variance); eval mode:
 * the running statistics' affine map. */
START_TEST(test_batchnorm_statistics)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {8};
    const int64_t in[3] = {2, 3, 4};
    const int64_t N = 5, S = 12, M = N * S;
    tsq_layer *l = NULL;
    tsq_net *net;
    tsq_tensor *x = nt_tensor(ctx, 4, N, 2, 3, 4), *y = nt_tensor(ctx, 4, N, 2, 3, 4);
    tsq_tensor *g = NULL, *be = NULL, *rm = NULL, *rv = NULL;
    double opt;
    int c;
    int64_t n, p;
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 2, &l));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_MOMENTUM, 0.25));
    TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_BN_MOMENTUM, &opt));
    ck_assert(opt == 0.25);
    TH_OK(ctx, tsq_layer_param(l, 0, &g, NULL, NULL));
    TH_OK(ctx, tsq_layer_param(l, 1, &be, NULL, NULL));
    TH_OK(ctx, tsq_layer_state(l, 0, &rm, NULL));
    TH_OK(ctx, tsq_layer_state(l, 1, &rv, NULL));
    nt_data(g)[0] = 2.0f;
    nt_data(g)[1] = 0.5f;
    nt_data(be)[0] = 1.0f;
    nt_data(be)[1] = -3.0f;
    net = nt_net(ctx, 3, in, (tsq_layer *[]){l, NULL});
    nt_fill_normal(x, &r, 1.0);
    for (n = 0; n < N; n++)
        for (p = 0; p < S; p++)
            nt_data(x)[(n * 2 + 1) * S + p] = 4.0f * nt_data(x)[(n * 2 + 1) * S + p] + 7.0f;
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    for (c = 0; c < 2; c++) {
        double mx = 0, vx = 0, my = 0, vy = 0;
        for (n = 0; n < N; n++)
            for (p = 0; p < S; p++) {
                mx += nt_data(x)[(n * 2 + c) * S + p];
                my += nt_data(y)[(n * 2 + c) * S + p];
            }
        mx /= M;
        my /= M;
        for (n = 0; n < N; n++)
            for (p = 0; p < S; p++) {
                double a = nt_data(x)[(n * 2 + c) * S + p] - mx;
                double b = nt_data(y)[(n * 2 + c) * S + p] - my;
                vx += a * a;
                vy += b * b;
            }
        vx /= M;
        vy /= M;
        ck_assert(fabs(my - nt_data(be)[c]) < 1e-5);
        ck_assert(fabs(vy - (double)nt_data(g)[c] * nt_data(g)[c] * vx / (vx + 1e-5)) < 1e-4);
        ck_assert(fabs(nt_data(rm)[c] - 0.25 * mx) < 1e-5);
        ck_assert(fabs(nt_data(rv)[c] - (0.75 + 0.25 * vx * M / (M - 1))) < 1e-5);
    }
    /* Eval mode uses the running statistics. */
    TH_OK(ctx, tsq_net_forward(net, x, y, 0));
    for (c = 0; c < 2; c++) {
        double s = nt_data(g)[c] / sqrt((double)nt_data(rv)[c] + 1e-5);
        for (n = 0; n < N; n++)
            for (p = 0; p < S; p++) {
                int64_t i = (n * 2 + c) * S + p;
                double want = s * (nt_data(x)[i] - nt_data(rm)[c]) + nt_data(be)[c];
                NT_REQUIRE(fabs(nt_data(y)[i] - want) < 1e-4 * (1 + fabs(want)), "eval y[%lld]",
                           (long long)i);
            }
    }
    /* Frozen: train mode behaves as eval and keeps the statistics. */
    {
        float keep = nt_data(rm)[1];
        tsq_tensor *y2 = nt_tensor(ctx, 4, N, 2, 3, 4);
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_FROZEN, 1));
        TH_OK(ctx, tsq_net_forward(net, x, y2, 1));
        ck_assert(nt_data(rm)[1] == keep);
        ck_assert_mem_eq(nt_data(y), nt_data(y2), (size_t)(N * 24) * sizeof(float));
        tsq_tensor_destroy(y2);
    }
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* Random BN parameters and running statistics (negative gamma included). */
static void randomise_bn(tsq_context *ctx, tsq_layer *l, th_rng *r)
{
    tsq_tensor *t = NULL;
    int64_t i, n;
    int k;
    for (k = 0; k < 2; k++) {
        TH_OK(ctx, tsq_layer_param(l, k, &t, NULL, NULL));
        n = nt_numel(t);
        for (i = 0; i < n; i++)
            nt_data(t)[i] = (float)(k == 0 ? (i % 3 == 2 ? -1 : 1) * (0.5 + th_rng_uniform(r))
                                           : th_rng_normal(r));
    }
    for (k = 0; k < 2; k++) {
        TH_OK(ctx, tsq_layer_state(l, k, &t, NULL));
        n = nt_numel(t);
        for (i = 0; i < n; i++)
            nt_data(t)[i] = (float)(k == 0 ? th_rng_normal(r) : 0.3 + 2 * th_rng_uniform(r));
    }
}

START_TEST(test_fold_batchnorm)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {9};
    const int64_t in[3] = {2, 6, 6};
    tsq_layer *L[9] = {NULL};
    tsq_net *net;
    tsq_tensor *x = nt_tensor(ctx, 4, 4, 2, 6, 6), *y0 = nt_tensor(ctx, 2, 4, 3, 0, 0);
    tsq_tensor *y1 = nt_tensor(ctx, 2, 4, 3, 0, 0);
    int32_t folded = 0, count = 0;
    int64_t i;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 2, 4, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &L[1]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 4, 3, 3, 3, 2, 1, 2, &L[3]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 3, &L[4]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[5]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 27, 3, &L[6]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 3, &L[7]));
    set_lowbit_random(ctx, L[3], 3 * 4 * 9, 3, 1, &r);
    randomise_bn(ctx, L[1], &r);
    randomise_bn(ctx, L[4], &r);
    randomise_bn(ctx, L[7], &r);
    net = nt_net(ctx, 3, in, L);
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_net_forward(net, x, y0, 0));
    TH_OK(ctx, tsq_net_fold_batchnorm(net, &folded));
    ck_assert_int_eq(folded, 3);
    TH_OK(ctx, tsq_net_layer_count(net, &count));
    ck_assert_int_eq(count, 5);
    TH_OK(ctx, tsq_net_forward(net, x, y1, 0));
    for (i = 0; i < 12; i++)
        ck_assert_msg(fabsf(nt_data(y0)[i] - nt_data(y1)[i]) <= 1e-4f * (1 + fabsf(nt_data(y0)[i])),
                      "output %lld: %g before folding, %g after", (long long)i,
                      (double)nt_data(y0)[i], (double)nt_data(y1)[i]);
    /* The folded low-bit layer still holds codes in -1..1 and alpha > 0. */
    {
        tsq_layer *q = NULL;
        tsq_tensor *codes = NULL, *alpha = NULL;
        int8_t *cd;
        TH_OK(ctx, tsq_net_layer(net, 2, &q));
        TH_OK(ctx, tsq_layer_state(q, 0, &codes, NULL));
        TH_OK(ctx, tsq_layer_param(q, 1, &alpha, NULL, NULL));
        ck_assert_int_eq(tsq_tensor_data(codes, (void **)&cd), TSQ_OK);
        for (i = 0; i < 108; i++)
            ck_assert(cd[i] >= -1 && cd[i] <= 1);
        for (i = 0; i < 3; i++)
            ck_assert(nt_data(alpha)[i] > 0.0f);
    }
    TH_OK(ctx, tsq_net_fold_batchnorm(net, &folded)); /* nothing left */
    ck_assert_int_eq(folded, 0);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y0);
    tsq_tensor_destroy(y1);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_softmax_cross_entropy)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {10};
    tsq_tensor *z = nt_tensor(ctx, 2, 3, 4, 0, 0), *dz = nt_tensor(ctx, 2, 3, 4, 0, 0);
    int32_t labels[3] = {0, 3, 2}, bad[3] = {0, 4, 2};
    double loss = 0, want = 0, lp, lm;
    int64_t correct = -1, i, k;
    nt_fill_normal(z, &r, 3.0);
    nt_data(z)[2 * 4 + 2] = 10.0f; /* sample 2 is right */
    for (i = 0; i < 3; i++) {
        double s = 0;
        for (k = 0; k < 4; k++)
            s += exp((double)nt_data(z)[i * 4 + k]);
        want += log(s) - nt_data(z)[i * 4 + labels[i]];
    }
    want /= 3;
    TH_OK(ctx, tsq_nn_softmax_cross_entropy(ctx, z, labels, 3, &loss, &correct, dz));
    ck_assert(fabs(loss - want) < 1e-9 * (1 + want));
    ck_assert_int_ge(correct, 1);
    for (i = 0; i < 12; i++) {
        float keep = nt_data(z)[i];
        nt_data(z)[i] = keep + 1e-3f;
        TH_OK(ctx, tsq_nn_softmax_cross_entropy(ctx, z, labels, 3, &lp, NULL, NULL));
        nt_data(z)[i] = keep - 1e-3f;
        TH_OK(ctx, tsq_nn_softmax_cross_entropy(ctx, z, labels, 3, &lm, NULL, NULL));
        nt_data(z)[i] = keep;
        ck_assert(fabs((lp - lm) / 2e-3 - nt_data(dz)[i]) < 1e-4);
    }
    loss = 42;
    ck_assert_int_eq(tsq_nn_softmax_cross_entropy(ctx, z, bad, 3, &loss, NULL, NULL), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "label 4 of sample 1"));
    ck_assert(loss == 42);
    ck_assert_int_eq(tsq_nn_softmax_cross_entropy(ctx, z, labels, 2, &loss, NULL, NULL), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "2 labels for a batch of 3"));
    nt_data(z)[5] = NAN;
    ck_assert_int_eq(tsq_nn_softmax_cross_entropy(ctx, z, labels, 3, &loss, NULL, NULL),
                     TSQ_ERR_NOT_FINITE);
    ck_assert(loss == 42);
    tsq_tensor_destroy(z);
    tsq_tensor_destroy(dz);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_layer_arguments)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_layer *l = (tsq_layer *)&st;
    double lo, hi, v;
    int64_t info;
    int32_t kind, n;
    const char *name;
    tsq_tensor *t;
    ck_assert_int_eq(tsq_layer_dense_create(ctx, 0, 3, &l), TSQ_ERR_INVALID);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "dense_create"));
    ck_assert_int_eq(tsq_layer_dense_create(NULL, 2, 3, &l), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_layer_dense_create(ctx, 2, 3, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 0, 1, &l), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 1, 3, &l), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "pad 3"));
    ck_assert_int_eq(tsq_layer_conv2d_create(ctx, 0, 2, 3, 3, 1, 1, &l), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_batchnorm_create(ctx, 0, &l), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_maxpool2d_create(ctx, 0, 1, &l), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_lowbit_dense_create(ctx, 3, 3, 1, &l), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_lowbit_conv2d_create(ctx, 1, 2, 3, 3, 1, 1, 9, &l), TSQ_ERR_INVALID);
    ck_assert_ptr_null(l);

    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 3, 8, 5, 3, 2, 1, &l));
    TH_OK(ctx, tsq_layer_kind(l, &kind));
    ck_assert_int_eq(kind, TSQ_LAYER_CONV2D);
    ck_assert_str_eq(tsq_layer_kind_name(kind), "conv2d");
    ck_assert_str_eq(tsq_layer_kind_name(99), "unknown");
    TH_OK(ctx, tsq_layer_info(l, TSQ_LAYER_INFO_KERNEL_H, &info));
    ck_assert_int_eq(info, 5);
    TH_OK(ctx, tsq_layer_info(l, TSQ_LAYER_INFO_PAD, &info));
    ck_assert_int_eq(info, 1);
    ck_assert_int_eq(tsq_layer_info(l, TSQ_LAYER_INFO_WEIGHT_BITS, &info), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_layer_param_count(l, &n));
    ck_assert_int_eq(n, 2);
    TH_OK(ctx, tsq_layer_param(l, 0, &t, NULL, &name));
    ck_assert_str_eq(name, "weight");
    ck_assert_int_eq(tsq_layer_param(l, 2, &t, NULL, &name), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_layer_errmsg(l), "index 2"));
    TH_OK(ctx, tsq_layer_state_count(l, &n));
    ck_assert_int_eq(n, 0);
    /* He initialisation: variance 2 / fan_in (fan_in = 45, 360 weights). */
    {
        double s2 = 0;
        int64_t i;
        for (i = 0; i < 360; i++)
            s2 += (double)nt_data(t)[i] * nt_data(t)[i];
        ck_assert(fabs(s2 / 360 - 2.0 / 45) < 0.3 * 2.0 / 45);
    }
    /* Options: bounds, applicability. */
    TH_OK(ctx, tsq_layer_option_bounds(TSQ_LAYER_OPT_BN_EPS, &lo, &hi));
    ck_assert(lo == 1e-12 && hi == 1);
    ck_assert_int_eq(tsq_layer_option_bounds(77, &lo, &hi), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_EPS, 1e-3), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_layer_errmsg(l), "does not apply to a conv2d"));
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_TRAINABLE, 0.5), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_TRAINABLE, 0));
    TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_TRAINABLE, &v));
    ck_assert(v == 0);
    {
        int64_t a[3], b[3];
        int32_t na, nb;
        ck_assert_int_eq(tsq_layer_sample_shapes(l, a, &na, b, &nb, 3), TSQ_ERR_STATE);
    }
    tsq_layer_destroy(l);
    tsq_layer_destroy(NULL);
    ck_assert_str_eq(tsq_layer_errmsg(NULL), "no layer");
    th_context_done(ctx, &st);
}
END_TEST

/* tsq_layer_lowbit_set takes one shape: the layer's weight shape, outputs
 * first. A flat or transposed tensor of the right size is refused with a
 * message naming the expected shape, and the layer keeps its values. */
START_TEST(test_lowbit_set_shape)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int conv;
    for (conv = 0; conv <= 1; conv++) {
        /* dense: in 3, out 2; conv: cin 2, cout 3, 1x2 kernel. */
        const int64_t good_d[2] = {2, 3}, bad_d[3][4] = {{6}, {3, 2}, {1, 2, 3}};
        const int64_t good_c[4] = {3, 2, 1, 2}, bad_c[3][4] = {{12}, {3, 4}, {2, 3, 1, 2}};
        const int32_t bad_nd_d[3] = {1, 2, 3}, bad_nd_c[3] = {1, 2, 4};
        const char *want = conv ? "(3,2,1,2) (cout, cin, kh, kw)" : "(2,3) (out, in)";
        int64_t out = conv ? 3 : 2, n = conv ? 12 : 6, i;
        tsq_layer *l = NULL;
        tsq_tensor *codes = NULL, *alpha = nt_tensor(ctx, 1, out, 0, 0, 0), *sv = NULL;
        int8_t *cd;
        int b;
        if (conv)
            TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 2, 3, 1, 2, 1, 0, 2, &l));
        else
            TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 3, 2, 2, &l));
        TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, conv ? 4 : 2, conv ? good_c : good_d,
                                     &codes));
        ck_assert_int_eq(tsq_tensor_data(codes, (void **)&cd), TSQ_OK);
        for (i = 0; i < n; i++)
            cd[i] = (int8_t)(i % 3 - 1);
        for (i = 0; i < out; i++)
            nt_data(alpha)[i] = 0.5f;
        TH_OK(ctx, tsq_layer_lowbit_set(l, codes, alpha, NULL));
        TH_OK(ctx, tsq_layer_param(l, 0, &sv, NULL, NULL));
        for (b = 0; b < 3; b++) {
            const int64_t *shape = conv ? bad_c[b] : bad_d[b];
            int32_t nd = conv ? bad_nd_c[b] : bad_nd_d[b];
            TH_OK(ctx, tsq_tensor_reshape(codes, nd, shape));
            for (i = 0; i < n; i++)
                cd[i] = 1;
            ck_assert_int_eq(tsq_layer_lowbit_set(l, codes, alpha, NULL), TSQ_ERR_SHAPE);
            ck_assert_msg(strstr(tsq_layer_errmsg(l), want) != NULL, "%s", tsq_layer_errmsg(l));
            /* Nothing changed: the shadow weights are still alpha * the old codes. */
            for (i = 0; i < n; i++)
                ck_assert(nt_data(sv)[i] == 0.5f * (float)(i % 3 - 1));
        }
        tsq_tensor_destroy(codes);
        tsq_tensor_destroy(alpha);
        tsq_layer_destroy(l);
    }
    th_context_done(ctx, &st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_layers");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_dense);
    tcase_add_test(tc, test_grad_conv);
    tcase_add_test(tc, test_grad_batchnorm);
    tcase_add_test(tc, test_batchnorm_relu_pair);
    tcase_add_test(tc, test_grad_relu_pool_flatten);
    tcase_add_test(tc, test_grad_lowbit);
    tcase_add_test(tc, test_lowbit_set_shape);
    tcase_add_test(tc, test_act_quant_layer);
    tcase_add_test(tc, test_act_quant_errors);
    tcase_add_test(tc, test_conv_vs_direct);
    tcase_add_test(tc, test_batchnorm_statistics);
    tcase_add_test(tc, test_fold_batchnorm);
    tcase_add_test(tc, test_softmax_cross_entropy);
    tcase_add_test(tc, test_layer_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
