/* Joint QAT (docs/method.md §5): quantization-aware dense/conv2d weights
 * (TWN and exact ternary scales against brute force, k-bit against its
 * definition; the straight-through gradient against finite differences of
 * the layer with the quantized weights), the learned delta of a quantizer
 * layer (its LSQ gradient against finite differences), and a joint-trained
 * net converted by tsq_net_convert_qat: same outputs, a model-file round
 * trip and an inference plan that agree with it. */
#include "nn_testutil.h"

#include <stdio.h>

/* ---- the weight quantizer ---- */

static tsq_layer *dense_with(tsq_context *ctx, int64_t in, int64_t out, const float *w)
{
    tsq_layer *l = NULL;
    tsq_tensor *t = NULL;
    TH_OK(ctx, tsq_layer_dense_create(ctx, in, out, &l));
    ck_assert_int_eq(tsq_layer_param(l, 0, &t, NULL, NULL), TSQ_OK);
    memcpy(nt_data(t), w, (size_t)(in * out) * sizeof(float));
    return l;
}

/* The weights a (bias-free) dense layer's forward uses, read through a
 * batch of unit vectors: output j of input e_i is W[j][i]. The layer goes
 * into a net that is destroyed here, with it. */
static void effective_weights(tsq_context *ctx, tsq_layer *l, int64_t in, int64_t out, float *we)
{
    const int64_t shape[1] = {in};
    tsq_layer *L[2] = {l, NULL};
    tsq_net *net = nt_net(ctx, 1, shape, L);
    tsq_tensor *x = nt_tensor(ctx, 2, in, in, 0, 0), *y = nt_tensor(ctx, 2, in, out, 0, 0);
    float *xd = nt_data(x);
    int64_t i, j;
    memset(xd, 0, (size_t)(in * in) * sizeof(float));
    for (i = 0; i < in; i++)
        xd[i * in + i] = 1.0f;
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    for (i = 0; i < in; i++)
        for (j = 0; j < out; j++)
            we[j * in + i] = nt_data(y)[i * out + j];
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_net_destroy(net);
}

/* Brute force: the least-squares ternary approximation of w (n <= 12). */
static double best_ternary_error(const float *w, int n)
{
    double best = 1e300, total = 0;
    int mask, i;
    for (i = 0; i < n; i++)
        total += (double)w[i] * w[i];
    for (mask = 0; mask < (1 << n); mask++) {
        double s = 0;
        int k = 0;
        for (i = 0; i < n; i++)
            if (mask >> i & 1) {
                s += fabs(w[i]);
                k++;
            }
        if (k && total - s * s / k < best)
            best = total - s * s / k;
    }
    return best;
}

START_TEST(test_weight_quantizer)
{
    tsq_context *ctx = NULL;
    th_rng r = {7};
    enum { IN = 10, OUT = 6 };
    float w[OUT * IN], we[OUT * IN];
    int64_t i, c;
    double v = -1;
    TH_OK(ctx, tsq_context_create(&ctx));
    for (i = 0; i < OUT * IN; i++)
        w[i] = (float)th_rng_normal(&r);
    /* TWN: threshold 0.7 mean|w|, scale the mean of the kept |w| */
    {
        tsq_layer *l = dense_with(ctx, IN, OUT, w);
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 2));
        TH_OK(ctx, tsq_layer_get_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, &v));
        ck_assert(v == 2);
        effective_weights(ctx, l, IN, OUT, we);
        for (c = 0; c < OUT; c++) {
            double m = 0, kept = 0;
            int cnt = 0;
            for (i = 0; i < IN; i++)
                m += fabs(w[c * IN + i]);
            m = 0.7 * m / IN;
            for (i = 0; i < IN; i++)
                if (fabs(w[c * IN + i]) > m) {
                    kept += fabs(w[c * IN + i]);
                    cnt++;
                }
            for (i = 0; i < IN; i++) {
                double want = fabs(w[c * IN + i]) > m ? (w[c * IN + i] > 0 ? 1 : -1) * kept / cnt : 0;
                NT_REQUIRE(fabs(we[c * IN + i] - want) <= 1e-5, "TWN [%lld,%lld]: %g, want %g",
                           (long long)c, (long long)i, (double)we[c * IN + i], want);
            }
        }
    }
    /* exact scale: the brute-force optimum */
    {
        tsq_layer *l = dense_with(ctx, IN, OUT, w);
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 2));
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_SCALE, 1));
        effective_weights(ctx, l, IN, OUT, we);
        for (c = 0; c < OUT; c++) {
            double err = 0, best = best_ternary_error(w + c * IN, IN);
            for (i = 0; i < IN; i++)
                err += (double)(w[c * IN + i] - we[c * IN + i]) * (w[c * IN + i] - we[c * IN + i]);
            NT_REQUIRE(fabs(err - best) <= 1e-5 * (1 + best), "channel %lld: error %g, optimum %g",
                       (long long)c, err, best);
        }
    }
    /* 4-bit: every effective weight is a_c q with q in -7..7, the codes are
     * the rounding of w / a_c, and a_c is a least-squares fixed point */
    {
        tsq_layer *l = dense_with(ctx, IN, OUT, w);
        TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 4));
        effective_weights(ctx, l, IN, OUT, we);
        for (c = 0; c < OUT; c++) {
            double a = 0;
            for (i = 0; i < IN; i++)
                a = fabs(we[c * IN + i]) > a ? fabs(we[c * IN + i]) : a;
            a /= 7; /* the largest |w| keeps code 7 */
            for (i = 0; i < IN; i++) {
                double q = we[c * IN + i] / a;
                NT_REQUIRE(fabs(q - rint(q)) < 1e-3 && fabs(q) <= 7 + 1e-3,
                           "4-bit [%lld,%lld]: %g / %g not a code", (long long)c, (long long)i,
                           (double)we[c * IN + i], a);
            }
        }
    }
    /* bad values */
    {
        tsq_layer *l = dense_with(ctx, IN, OUT, w), *relu = NULL;
        ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 1), TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 9), TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_SCALE, 0.5), TSQ_ERR_INVALID);
        TH_OK(ctx, tsq_layer_relu_create(ctx, &relu));
        ck_assert_int_eq(tsq_layer_set_option(relu, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 2),
                         TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 1), TSQ_ERR_INVALID);
        tsq_layer_destroy(relu);
        tsq_layer_destroy(l);
    }
    tsq_context_destroy(ctx);
}
END_TEST

/* The straight-through gradient: the QAT layer's dx and its shadow-weight
 * gradient are those of a plain layer holding the quantized weights, and
 * that layer's gradients match finite differences. */
static void ste_case(int conv)
{
    tsq_context *ctx = NULL;
    th_rng r = {11};
    const int64_t img[3] = {3, 6, 6}, vec[1] = {12};
    tsq_layer *q = NULL, *p = NULL, *L[2] = {NULL, NULL};
    tsq_net *nq, *np;
    tsq_tensor *x, *y, *dy, *dxq, *dxp, *wq = NULL, *wp = NULL, *gq = NULL, *gp = NULL, *bq, *bp;
    int64_t n = 4, on, i, nw;
    TH_OK(ctx, tsq_context_create(&ctx));
    if (conv) {
        TH_OK(ctx, tsq_layer_conv2d_create(ctx, 3, 5, 3, 3, 1, 1, &q));
        TH_OK(ctx, tsq_layer_conv2d_create(ctx, 3, 5, 3, 3, 1, 1, &p));
        x = nt_tensor(ctx, 4, n, 3, 6, 6);
        on = 5 * 36;
    } else {
        TH_OK(ctx, tsq_layer_dense_create(ctx, 12, 7, &q));
        TH_OK(ctx, tsq_layer_dense_create(ctx, 12, 7, &p));
        x = nt_tensor(ctx, 2, n, 12, 0, 0);
        on = 7;
    }
    TH_OK(ctx, tsq_layer_set_option(q, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 2));
    L[0] = q;
    nq = nt_net(ctx, conv ? 3 : 1, conv ? img : vec, L);
    L[0] = p;
    np = nt_net(ctx, conv ? 3 : 1, conv ? img : vec, L);
    nt_fill_normal(x, &r, 1.0);
    y = nt_tensor(ctx, 2, n, on, 0, 0);
    dy = nt_tensor(ctx, 2, n, on, 0, 0);
    dxq = nt_tensor(ctx, 2, n, nt_numel(x) / n, 0, 0);
    dxp = nt_tensor(ctx, 2, n, nt_numel(x) / n, 0, 0);
    nt_fill_normal(dy, &r, 1.0);
    ck_assert_int_eq(tsq_layer_param(q, 0, &wq, &gq, NULL), TSQ_OK);
    ck_assert_int_eq(tsq_layer_param(p, 0, &wp, &gp, NULL), TSQ_OK);
    ck_assert_int_eq(tsq_layer_param(q, 1, &bq, NULL, NULL), TSQ_OK);
    ck_assert_int_eq(tsq_layer_param(p, 1, &bp, NULL, NULL), TSQ_OK);
    nw = nt_numel(wq);
    nt_fill_normal(bq, &r, 0.5);
    memcpy(nt_data(bp), nt_data(bq), (size_t)nt_numel(bq) * sizeof(float));
    TH_OK(ctx, tsq_net_forward(nq, x, y, 1));
    {
        /* the plain layer gets TWN's weights of the shadow weights, derived
         * here; equal outputs below show the QAT forward used them */
        int64_t rows = conv ? 5 : 7, k = nw / rows, c;
        const float *w = nt_data(wq);
        float *we = nt_data(wp);
        for (c = 0; c < rows; c++) {
            double m = 0, kept = 0;
            int cnt = 0;
            for (i = 0; i < k; i++)
                m += fabs(w[c * k + i]);
            m = 0.7 * m / k;
            for (i = 0; i < k; i++)
                if (fabs(w[c * k + i]) > m) {
                    kept += fabs(w[c * k + i]);
                    cnt++;
                }
            for (i = 0; i < k; i++)
                we[c * k + i] = fabs(w[c * k + i]) > m
                                    ? (float)((w[c * k + i] > 0 ? 1 : -1) * kept / cnt)
                                    : 0.0f;
        }
    }
    TH_OK(ctx, tsq_net_backward(nq, dy, dxq));
    {
        tsq_tensor *yp = nt_tensor(ctx, 2, n, on, 0, 0);
        float *a, *b;
        TH_OK(ctx, tsq_net_forward(np, x, yp, 1));
        a = nt_data(y);
        b = nt_data(yp);
        for (i = 0; i < n * on; i++)
            NT_REQUIRE(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(b[i])), "y[%lld] %g vs %g",
                       (long long)i, (double)a[i], (double)b[i]);
        TH_OK(ctx, tsq_net_backward(np, dy, dxp));
        a = nt_data(dxq);
        b = nt_data(dxp);
        for (i = 0; i < nt_numel(dxq); i++)
            NT_REQUIRE(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(b[i])), "dx[%lld]", (long long)i);
        a = nt_data(gq);
        b = nt_data(gp);
        for (i = 0; i < nw; i++)
            NT_REQUIRE(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(b[i])),
                       "straight-through dW[%lld] %g, dWq %g", (long long)i, (double)a[i],
                       (double)b[i]);
        /* and dWq is the true gradient of the quantized layer */
        nt_fd_check(np, x, yp, nt_data(dy), 1, nt_data(wp), nt_data(gp), nw, 30, 1e-2, 2e-3,
                    2e-3, "dWq");
        /* dx of the QAT layer: finite differences of the QAT layer itself */
        nt_fd_check(nq, x, yp, nt_data(dy), 1, nt_data(x), nt_data(dxq), nt_numel(x), 30, 1e-2,
                    2e-3, 2e-3, "dx");
        tsq_tensor_destroy(yp);
    }
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_tensor_destroy(dxq);
    tsq_tensor_destroy(dxp);
    tsq_net_destroy(nq);
    tsq_net_destroy(np);
    tsq_context_destroy(ctx);
}

START_TEST(test_ste_dense) { ste_case(0); }
END_TEST
START_TEST(test_ste_conv) { ste_case(1); }
END_TEST

/* ---- the learned delta ---- */

START_TEST(test_learned_delta)
{
    tsq_context *ctx = NULL;
    th_rng r = {5};
    const int64_t shape[1] = {16};
    const float eps0 = 0.25f, delta0 = 0.5f;
    tsq_layer *q = NULL, *L[2] = {NULL, NULL};
    tsq_net *net;
    tsq_tensor *x, *y, *dy, *dx, *dv = NULL, *dg = NULL;
    int32_t count = 0, region;
    int64_t n = 8, i;
    float eps, delta;
    TH_OK(ctx, tsq_context_create(&ctx));
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, eps0, delta0, &q));
    L[0] = q;
    net = nt_net(ctx, 1, shape, L);
    TH_OK(ctx, tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 1));
    TH_OK(ctx, tsq_net_param_count(net, &count));
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(tsq_layer_param(q, 0, &dv, &dg, NULL), TSQ_OK);
    ck_assert_int_eq(tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_layer_act_quant_set_channel(q, -1, 0, 2, 0.1f, 0.2f), TSQ_ERR_STATE);
    x = nt_tensor(ctx, 2, n, 16, 0, 0);
    y = nt_tensor(ctx, 2, n, 16, 0, 0);
    dy = nt_tensor(ctx, 2, n, 16, 0, 0);
    dx = nt_tensor(ctx, 2, n, 16, 0, 0);
    nt_fill_normal(dy, &r, 1.0);
    /* region 0: every x above the top level 3 delta (y = 3 delta: the true
     * derivative); region 1: x below 0 (y = 0); region 2: x inside, away
     * from every code boundary, against finite differences of the
     * rounding-relaxed y = delta (k + x/delta - x/delta0) (k = round(x/delta0),
     * the code there), whose derivative
     * at delta0 is k - x/delta0 */
    for (region = 0; region < 3; region++) {
        float *xd = nt_data(x), g;
        double L0 = 0, Lp = 0, Lm = 0, h = 1e-3, fd, scale = 1.0 / sqrt(16.0 * 3.0);
        for (i = 0; i < n * 16; i++) {
            if (region == 0)
                xd[i] = 1.6f + (float)th_rng_uniform(&r);
            else if (region == 1)
                xd[i] = -(float)th_rng_uniform(&r);
            else /* inside (eps, top), codes 1 or 2, away from the rounding boundaries */
                xd[i] = delta0 * ((float)(1 + th_rng_next(&r) % 2) + 0.4f * ((float)th_rng_uniform(&r) - 0.5f));
        }
        nt_data(dv)[0] = delta0;
        TH_OK(ctx, tsq_net_forward(net, x, y, 1));
        TH_OK(ctx, tsq_net_backward(net, dy, dx));
        g = nt_data(dg)[0];
        if (region < 2) {
            for (i = 0; i < 2; i++) {
                nt_data(dv)[0] = (float)(delta0 + (i ? -h : h));
                L0 = nt_loss(net, x, y, nt_data(dy), 1);
                if (i)
                    Lm = L0;
                else
                    Lp = L0;
            }
            fd = (Lp - Lm) / (2 * h) * scale;
        } else {
            const float *dd = nt_data(dy);
            double d;
            for (i = 0, Lp = Lm = 0; i < n * 16; i++) {
                double k = rint(xd[i] / delta0);
                for (d = -h; d <= h; d += 2 * h) {
                    double v = (delta0 + d) * (k + xd[i] / (delta0 + d) - xd[i] / delta0);
                    if (d < 0)
                        Lm += dd[i] * v;
                    else
                        Lp += dd[i] * v;
                }
            }
            fd = (Lp - Lm) / (2 * h) * scale;
        }
        NT_REQUIRE(fabs(fd - g) <= 1e-3 * (1 + fabs(fd)), "region %d: d delta %g, fd %g",
                   (int)region, (double)g, fd);
    }
    /* the forward keeps eps tied to delta; turning learning off keeps them */
    nt_data(dv)[0] = 0.8f;
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    TH_OK(ctx, tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 0));
    TH_OK(ctx, tsq_layer_act_quant_get_channel(q, -1, NULL, NULL, &eps, &delta));
    ck_assert(delta == 0.8f && fabsf(eps - 0.4f) < 1e-6f);
    TH_OK(ctx, tsq_net_param_count(net, &count));
    ck_assert_int_eq(count, 0);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_tensor_destroy(dx);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
}
END_TEST

/* ---- a joint-trained net, converted ---- */

static void append(tsq_net *net, tsq_layer *l)
{
    ck_assert_msg(tsq_net_append(net, l) == TSQ_OK, "%s", tsq_net_errmsg(net));
}

static tsq_net *small_cnn(tsq_context *ctx)
{
    const int64_t in[3] = {1, 8, 8};
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    TH_OK(ctx, tsq_net_create(ctx, 3, in, &net));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 8, 3, 3, 1, 1, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 8, 8, 3, 3, 1, 1, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_maxpool2d_create(ctx, 2, 2, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 128, 16, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 16, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 16, 4, &l));
    append(net, l);
    return net;
}

START_TEST(test_joint_convert)
{
    tsq_context *ctx = NULL;
    th_rng r = {3};
    enum { N = 64 };
    tsq_net *net, *loaded = NULL;
    tsq_tensor *x, *y1, *y2, *y3;
    tsq_plan *plan = NULL;
    int32_t labels[N], done = 0, count = 0, i, converted = 0, step;
    int64_t j;
    void *buf;
    uint64_t size = 0;
    TH_OK(ctx, tsq_context_create(&ctx));
    net = small_cnn(ctx);
    x = nt_tensor(ctx, 4, N, 1, 8, 8);
    y1 = nt_tensor(ctx, 2, N, 4, 0, 0);
    y2 = nt_tensor(ctx, 2, N, 4, 0, 0);
    y3 = nt_tensor(ctx, 2, N, 4, 0, 0);
    nt_fill_normal(x, &r, 1.0);
    for (i = 0; i < N; i++)
        labels[i] = (int32_t)(th_rng_next(&r) % 4);
    /* quantizers fitted in network order, then QAT on the hidden layers */
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_SEQUENTIAL, 1));
    for (i = 0; i < 5 && !done; i++)
        ck_assert_msg(tsq_net_learn_codes(net, x, 1, &done) == TSQ_OK, "%s", tsq_net_errmsg(net));
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(i, 3); /* one pass per quantizer */
    TH_OK(ctx, tsq_net_layer_count(net, &count));
    for (i = 0; i < count; i++) {
        tsq_layer *l = NULL;
        int32_t kind = 0;
        TH_OK(ctx, tsq_net_layer(net, i, &l));
        TH_OK(ctx, tsq_layer_kind(l, &kind));
        if ((kind == TSQ_LAYER_CONV2D && i > 0) || (kind == TSQ_LAYER_DENSE && i < count - 1))
            TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 2));
        if (kind == TSQ_LAYER_ACT_QUANT)
            TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 1));
    }
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.02, 0.9, 0, 0.0));
    for (step = 0; step < 20; step++)
        ck_assert_msg(tsq_net_train_step(net, x, labels, N, NULL, NULL) == TSQ_OK, "%s",
                      tsq_net_errmsg(net));
    TH_OK(ctx, tsq_net_forward(net, x, y1, 0));
    ck_assert_msg(tsq_net_convert_qat(net, &converted) == TSQ_OK, "%s", tsq_net_errmsg(net));
    ck_assert_int_eq(converted, 2);
    TH_OK(ctx, tsq_net_layer_count(net, &i));
    ck_assert_int_eq(i, count - 2); /* two batch-norms folded */
    TH_OK(ctx, tsq_net_forward(net, x, y2, 0));
    for (j = 0; j < N * 4; j++)
        NT_REQUIRE(fabsf(nt_data(y1)[j] - nt_data(y2)[j]) <= 2e-3f * (1 + fabsf(nt_data(y1)[j])),
                   "converted output %lld: %g, QAT %g", (long long)j, (double)nt_data(y2)[j],
                   (double)nt_data(y1)[j]);
    /* model file round trip: the same outputs */
    ck_assert_int_eq(tsq_net_save(net, NULL, 0, &size), TSQ_OK);
    buf = malloc(size);
    ck_assert_msg(tsq_net_save(net, buf, size, &size) == TSQ_OK, "%s", tsq_net_errmsg(net));
    TH_OK(ctx, tsq_net_load(ctx, buf, size, &loaded));
    free(buf);
    TH_OK(ctx, tsq_net_forward(loaded, x, y3, 0));
    ck_assert(memcmp(nt_data(y2), nt_data(y3), N * 4 * sizeof(float)) == 0);
    /* the plan of the loaded net agrees with its float forward */
    TH_OK(ctx, tsq_plan_create(ctx, loaded, &plan));
    TH_OK(ctx, tsq_plan_run(ctx, plan, x, y3, NULL, 0));
    for (j = 0; j < N * 4; j++)
        NT_REQUIRE(fabsf(nt_data(y3)[j] - nt_data(y2)[j]) <= 1e-4f * (1 + fabsf(nt_data(y2)[j])),
                   "plan output %lld: %g, net %g", (long long)j, (double)nt_data(y3)[j],
                   (double)nt_data(y2)[j]);
    tsq_plan_destroy(plan);
    tsq_net_destroy(loaded);
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y1);
    tsq_tensor_destroy(y2);
    tsq_tensor_destroy(y3);
    ck_assert_int_eq(tsq_net_convert_qat(NULL, NULL), TSQ_ERR_NULL);
    tsq_context_destroy(ctx);
}
END_TEST

/* ---- distillation ---- */

/* The mixed loss's gradient against central differences of the loss that
 * tsq_net_train_step_distill reports (an SGD step of lr 1e-30 leaves the
 * weights as they are); w = 0 gives plain cross-entropy; a teacher equal
 * to the student gives zero soft-target loss. */
START_TEST(test_distillation)
{
    tsq_context *ctx = NULL;
    th_rng r = {13};
    enum { N = 4, IN = 6, K = 5 };
    const int64_t shape[1] = {IN};
    tsq_layer *l = NULL, *L[2] = {NULL, NULL};
    tsq_net *net;
    tsq_tensor *x, *t, *w = NULL, *g = NULL, *y;
    int32_t labels[N] = {0, 3, 4, 1};
    double loss = 0, lp, lm, ce = 0, h = 1e-3;
    float keep, *gd;
    int64_t i;
    TH_OK(ctx, tsq_context_create(&ctx));
    TH_OK(ctx, tsq_layer_dense_create(ctx, IN, K, &l));
    L[0] = l;
    net = nt_net(ctx, 1, shape, L);
    x = nt_tensor(ctx, 2, N, IN, 0, 0);
    t = nt_tensor(ctx, 2, N, K, 0, 0);
    y = nt_tensor(ctx, 2, N, K, 0, 0);
    nt_fill_normal(x, &r, 1.0);
    nt_fill_normal(t, &r, 2.0);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 1e-30, 0.0, 0, 0.0));
    ck_assert_int_eq(tsq_net_train_step_distill(net, x, labels, N, t, &loss, NULL), TSQ_ERR_STATE);
    ck_assert_int_eq(tsq_net_set_distillation(net, 0.01, 0.5), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_net_set_distillation(net, 2, 1.5), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_net_set_distillation(net, 3.0, 0.7));
    ck_assert_int_eq(tsq_net_train_step_distill(net, x, labels, N, NULL, &loss, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_train_step_distill(net, x, labels, N, x, &loss, NULL),
                     TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_layer_param(l, 0, &w, &g, NULL), TSQ_OK);
    TH_OK(ctx, tsq_net_train_step_distill(net, x, labels, N, t, &loss, NULL));
    gd = malloc((size_t)(IN * K) * sizeof(float));
    memcpy(gd, nt_data(g), (size_t)(IN * K) * sizeof(float));
    for (i = 0; i < IN * K; i++) {
        keep = nt_data(w)[i];
        nt_data(w)[i] = (float)(keep + h);
        TH_OK(ctx, tsq_net_train_step_distill(net, x, labels, N, t, &lp, NULL));
        nt_data(w)[i] = (float)(keep - h);
        TH_OK(ctx, tsq_net_train_step_distill(net, x, labels, N, t, &lm, NULL));
        nt_data(w)[i] = keep;
        NT_REQUIRE(fabs((lp - lm) / (2 * h) - gd[i]) <= 2e-3 * (1 + fabs(gd[i])),
                   "dW[%lld]: analytic %g, finite difference %g", (long long)i, (double)gd[i],
                   (lp - lm) / (2 * h));
    }
    free(gd);
    /* w = 0: the cross-entropy of train_step */
    TH_OK(ctx, tsq_net_set_distillation(net, 3.0, 0.0));
    TH_OK(ctx, tsq_net_train_step_distill(net, x, labels, N, t, &loss, NULL));
    TH_OK(ctx, tsq_net_train_step(net, x, labels, N, &ce, NULL));
    ck_assert(fabs(loss - ce) <= 1e-12 * (1 + ce));
    /* w = 1 with the student's own logits as the teacher: no loss */
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    TH_OK(ctx, tsq_net_set_distillation(net, 2.0, 1.0));
    TH_OK(ctx, tsq_net_train_step_distill(net, x, labels, N, y, &loss, NULL));
    ck_assert_msg(fabs(loss) <= 1e-6, "self-distillation loss %g", loss);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(t);
    tsq_tensor_destroy(y);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_qat");
    TCase *tc = tcase_create("qat");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_weight_quantizer);
    tcase_add_test(tc, test_ste_dense);
    tcase_add_test(tc, test_ste_conv);
    tcase_add_test(tc, test_learned_delta);
    tcase_add_test(tc, test_joint_convert);
    tcase_add_test(tc, test_distillation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
