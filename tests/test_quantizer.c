/* The sparse activation quantizer: the reference table of fits on 10^6
 * unit-Gaussian samples, brute-force optimality of the fitted delta on small
 * discrete sets and on raw continuous samples, target sparsity, streaming
 * equivalence, the straight-through mask at its boundaries, exact round
 * trips, SIMD against the plain C formula, per-channel parameters, the
 * serialized form against corruption, and every error path. */
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Internal pieces tested directly: the encode kernels and the CRC. */
#include "quant/quantizer_internal.h"
#include "core/codec.h"
#include "core/options.h"

static tsq_tensor *wrap(tsq_context *ctx, int32_t dtype, int32_t ndim, const int64_t *shape,
                        void *data)
{
    tsq_tensor *t = NULL;
    int64_t n = 1;
    int32_t i;
    for (i = 0; i < ndim; i++)
        n *= shape[i];
    TH_OK(ctx, tsq_tensor_wrap(ctx, dtype, ndim, shape, data,
                               (uint64_t)n * (dtype == TSQ_DTYPE_F32 ? 4u : 1u), &t));
    return t;
}

static tsq_tensor *wrap1(tsq_context *ctx, int32_t dtype, int64_t n, void *data)
{
    return wrap(ctx, dtype, 1, &n, data);
}

static tsq_quantizer *make_q(tsq_context *ctx, int32_t bits, int64_t channels, int32_t mode,
                             double eps)
{
    tsq_quantizer *q = NULL;
    TH_OK(ctx, tsq_quantizer_create(ctx, bits, channels, &q));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, mode));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, eps));
    return q;
}

#define Q_OK(q, expr)                                                                     \
    do {                                                                                  \
        tsq_status q_st_ = (expr);                                                        \
        ck_assert_msg(q_st_ == TSQ_OK, "%s -> %s (%s)", #expr, tsq_status_string(q_st_), \
                      tsq_quantizer_errmsg(q));                                           \
    } while (0)

#define Q_FAILS(q, expr, status, substring)                                                \
    do {                                                                                   \
        tsq_status q_st_ = (expr);                                                         \
        ck_assert_msg(q_st_ == (status), "%s -> %s, expected %s (%s)", #expr,              \
                      tsq_status_string(q_st_), tsq_status_string(status),                 \
                      tsq_quantizer_errmsg(q));                                            \
        ck_assert_msg(strstr(tsq_quantizer_errmsg(q), substring) != NULL,                  \
                      "message \"%s\" lacks \"%s\"", tsq_quantizer_errmsg(q), substring);  \
    } while (0)

/* Exact error sum over x > 0 of the quantizer's levels, via forward. */
static double error_sum_of(tsq_context *ctx, tsq_quantizer *q, const float *x, int64_t n)
{
    float *y = malloc((size_t)n * sizeof *y);
    tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, n, (void *)x), *ty = wrap1(ctx, TSQ_DTYPE_F32, n, y);
    double e = 0.0;
    int64_t i;
    Q_OK(q, tsq_quantizer_forward(q, tx, ty));
    for (i = 0; i < n; i++)
        if (x[i] > 0.0f)
            e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(ty);
    free(y);
    return e;
}

/* The same sum straight from the formula of quant_internal.h, for
 * exhaustive searches (no API round trip per candidate). */
static double error_sum_formula(const float *x, int64_t n, float eps, float delta,
                                int32_t maxcode)
{
    float inv = 1.0f / delta;
    double e = 0.0;
    int64_t i;
    for (i = 0; i < n; i++)
        if (x[i] > 0.0f) {
            double d = (double)x[i] -
                       (double)((float)tsq__quant_code(x[i], eps, inv, maxcode) * delta);
            e += d * d;
        }
    return e;
}

/* ------------------------------------------------------------------ */

START_TEST(test_crc32_known_values)
{
    const char *s = "123456789";
    ck_assert_uint_eq(tsq__crc32(0, s, 9), 0xCBF43926u); /* the standard check value */
    ck_assert_uint_eq(tsq__crc32(tsq__crc32(0, s, 4), s + 4, 5), 0xCBF43926u);
    ck_assert_uint_eq(tsq__crc32(0, s, 0), 0u);
}
END_TEST

/* The reference table (docs/quantizer.md): n, eps (or joint), delta, error
 * over x > 0 per sample. */
typedef struct table_row {
    int32_t bits;
    int32_t mode;
    double eps, delta, error;
} table_row;

static const table_row tsq_table[] = {
    {1, TSQ_EPS_PLAIN, 0.0, 0.7979, 0.18169},
    {1, TSQ_EPS_FIXED, 0.32, 1.0121, 0.11637},
    {2, TSQ_EPS_PLAIN, 0.0, 0.5388, 0.04322},
    {2, TSQ_EPS_FIXED, 0.32, 0.6488, 0.02344},
    {3, TSQ_EPS_PLAIN, 0.0, 0.3217, 0.01020},
    {4, TSQ_EPS_PLAIN, 0.0, 0.1842, 0.00251},
    {2, TSQ_EPS_JOINT, 0.33, 0.652, 0.02343},
};

START_TEST(test_tsq_table)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t n = 1000000;
    float *x = th_gaussian(n, 20180618);
    uint8_t *codes = malloc((size_t)n);
    tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, n, x), *tc = wrap1(ctx, TSQ_DTYPE_U8, n, codes);
    size_t r;
    for (r = 0; r < sizeof tsq_table / sizeof tsq_table[0]; r++) {
        const table_row *row = &tsq_table[r];
        tsq_quantizer *q = make_q(ctx, row->bits, 0, row->mode, row->eps);
        double err, sp, err_stats, sp_stats, zeros = 0;
        float eps, delta, eps2, delta2;
        int64_t i;
        Q_OK(q, tsq_learn_codes(q, tx, tc, &err, &sp));
        Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert_msg(fabs(delta - row->delta) <= 0.01 * row->delta,
                      "row %zu: delta %.5f, table %.4f", r, delta, row->delta);
        ck_assert_msg(fabs(err - row->error) <= 0.02 * row->error,
                      "row %zu: error %.6f, table %.5f", r, err, row->error);
        if (row->mode == TSQ_EPS_JOINT) {
            ck_assert(eps == 0.5f * delta); /* the joint optimum is eps = delta / 2 */
            ck_assert_msg(fabs(eps - row->eps) <= 0.01, "joint eps %.4f", eps);
        } else {
            ck_assert(eps == (float)row->eps);
        }
        /* The reported error and sparsity are those of the written codes. */
        ck_assert(fabs(err * n - error_sum_of(ctx, q, x, n)) <= 1e-9 * err * n);
        for (i = 0; i < n; i++)
            zeros += codes[i] == 0;
        ck_assert(sp == zeros / n);
        /* The statistics path fits the same parameters and estimates the
         * same error and sparsity. */
        Q_OK(q, tsq_quantizer_observe(q, tx));
        Q_OK(q, tsq_learn_codes(q, NULL, NULL, &err_stats, &sp_stats));
        Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps2, &delta2));
        ck_assert(eps2 == eps && delta2 == delta);
        ck_assert_msg(fabs(err_stats - err) <= 0.002 * err, "row %zu: estimate %.6f, exact %.6f",
                      r, err_stats, err);
        ck_assert_msg(fabs(sp_stats - sp) <= 1e-4, "row %zu: sparsity %.6f vs %.6f", r,
                      sp_stats, sp);
        tsq_quantizer_destroy(q);
    }
    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(tc);
    free(x);
    free(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* The fitted delta against an exhaustive grid on small discrete sets. */
START_TEST(test_bruteforce_small_discrete)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    enum { MAXN = 160 };
    const double grid = 0.0005;
    const int32_t modes[3] = {TSQ_EPS_FIXED, TSQ_EPS_PLAIN, TSQ_EPS_JOINT};
    int trials = th_quick() ? 3 : 8, trial, b, m;
    th_rng r = {77};
    float x[MAXN];
    for (trial = 0; trial < trials; trial++) {
        int64_t n = 0;
        int j;
        /* 4..14 distinct values on a 0.05 grid in (0, 3], repeated 1..6
         * times, plus a few non-positive samples. */
        int distinct = 4 + (int)(th_rng_next(&r) % 11);
        for (j = 0; j < distinct; j++) {
            float v = 0.05f * (float)(1 + th_rng_next(&r) % 60);
            int reps = 1 + (int)(th_rng_next(&r) % 6), k;
            for (k = 0; k < reps && n < MAXN; k++)
                x[n++] = v;
        }
        for (j = 0; j < 5 && n < MAXN; j++)
            x[n++] = -0.1f * (float)j;
        for (b = 1; b <= 3; b++)
            for (m = 0; m < 3; m++) {
                tsq_quantizer *q = make_q(ctx, b, 0, modes[m], 0.3);
                tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, n, x);
                float eps, delta;
                double best = HUGE_VAL, best_d = 0, e_fit, d;
                Q_OK(q, tsq_learn_codes(q, tx, NULL, NULL, NULL));
                Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps, &delta));
                e_fit = error_sum_of(ctx, q, x, n);
                for (d = grid; d <= 3.5; d += grid) {
                    float e = modes[m] == TSQ_EPS_FIXED ? 0.3f
                              : modes[m] == TSQ_EPS_PLAIN ? 0.0f : 0.5f * (float)d;
                    double ed = error_sum_formula(x, n, e, (float)d, (1 << b) - 1);
                    if (ed < best - 1e-12) {
                        best = ed;
                        best_d = d;
                    }
                }
                /* At least as good as the grid, and next to its minimiser. */
                ck_assert_msg(e_fit <= best * (1 + 1e-6) + 1e-9,
                              "trial %d bits %d mode %d: fit delta %.5f error %.8f, grid "
                              "delta %.5f error %.8f", trial, b, modes[m], delta, e_fit,
                              best_d, best);
                ck_assert_msg(fabs(delta - best_d) <= grid || e_fit < best - 1e-9,
                              "trial %d bits %d mode %d: delta %.5f, grid %.5f", trial, b,
                              modes[m], delta, best_d);
                tsq_tensor_destroy(tx);
                tsq_quantizer_destroy(q);
            }
    }
    th_context_done(ctx, &st);
}
END_TEST

/* On raw continuous samples with a long tail (which makes the histogram
 * range grow while streaming), no delta near the fitted one does better. */
START_TEST(test_fit_optimal_on_raw_samples)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t n = th_quick() ? 20000 : 100000, batch = 1000;
    float *x = malloc((size_t)n * sizeof *x);
    th_rng r = {5};
    int32_t bits;
    int64_t i;
    for (i = 0; i < n; i++) /* log-normal above 0, a third of it negative */
        x[i] = (float)(i % 3 == 0 ? -th_rng_uniform(&r) : exp(1.2 * th_rng_normal(&r)));
    for (bits = 1; bits <= 8; bits += 1 + (bits >= 4)) {
        tsq_quantizer *q = make_q(ctx, bits, 0, TSQ_EPS_JOINT, 0);
        float eps, delta;
        double e_fit, k;
        for (i = 0; i < n; i += batch) {
            tsq_tensor *tb = wrap1(ctx, TSQ_DTYPE_F32, batch, x + i);
            Q_OK(q, tsq_quantizer_observe(q, tb));
            tsq_tensor_destroy(tb);
        }
        Q_OK(q, tsq_quantizer_fit(q));
        Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        e_fit = error_sum_of(ctx, q, x, n);
        for (k = -0.1; k <= 0.1; k += 0.0025) {
            float d = delta * (float)(1.0 + k);
            double e = error_sum_formula(x, n, 0.5f * d, d, (1 << bits) - 1);
            ck_assert_msg(e_fit <= e * (1 + 2e-4), "bits %d: delta %.5f error %.6g, but "
                          "%.5f gives %.6g", bits, delta, e_fit, d, e);
        }
        tsq_quantizer_destroy(q);
    }
    free(x);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_target_sparsity)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t n = 1000000;
    float *x = th_gaussian(n, 99);
    tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, n, x);
    const double targets[5] = {0.501, 0.55, 0.63, 0.8, 0.97};
    int i;
    for (i = 0; i < 5; i++) {
        tsq_quantizer *q = make_q(ctx, 2, 0, TSQ_EPS_SPARSITY, 0);
        double sp, sp_est;
        float eps, delta;
        Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, targets[i]));
        Q_OK(q, tsq_learn_codes(q, tx, NULL, NULL, &sp));
        ck_assert_msg(fabs(sp - targets[i]) <= 0.005, "target %.3f reached %.4f", targets[i],
                      sp);
        Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert(eps > 0.0f);
        /* From streamed statistics too. */
        Q_OK(q, tsq_quantizer_observe(q, tx));
        Q_OK(q, tsq_learn_codes(q, NULL, NULL, NULL, &sp_est));
        ck_assert_msg(fabs(sp_est - targets[i]) <= 0.005, "stats: %.4f", sp_est);
        tsq_quantizer_destroy(q);
    }
    { /* Below the fraction of x <= 0 it stops at eps = 0. */
        tsq_quantizer *q = make_q(ctx, 2, 0, TSQ_EPS_SPARSITY, 0);
        double sp;
        float eps, delta;
        Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 0.3));
        Q_OK(q, tsq_learn_codes(q, tx, NULL, NULL, &sp));
        Q_OK(q, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert(eps == 0.0f);
        ck_assert(fabs(sp - 0.5) < 0.005);
        tsq_quantizer_destroy(q);
    }
    tsq_tensor_destroy(tx);
    free(x);
    th_context_done(ctx, &st);
}
END_TEST

/* 100 batches give the same fit as one, per tensor and per channel, also
 * when the range grows batch after batch. */
START_TEST(test_streaming_matches_one_batch)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t n = 1000000, nb = 100, per = n / nb;
    float *x = th_gaussian(n, 1234), *sorted = malloc((size_t)n * sizeof *x);
    const int32_t modes[4] = {TSQ_EPS_FIXED, TSQ_EPS_SPARSITY, TSQ_EPS_JOINT, TSQ_EPS_PLAIN};
    int m, pass;
    int64_t i, b;
    /* A growing-range order: batch b holds samples scaled by 2^(b/10), so
     * the histogram's range doubles about ten times while streaming. */
    for (i = 0; i < n; i++)
        sorted[i] = x[i] * (float)exp2((double)(i / per) / 10.0);
    for (pass = 0; pass < 2; pass++) {
        float *data = pass ? sorted : x;
        for (m = 0; m < 4; m++) {
            tsq_quantizer *one = make_q(ctx, 3, 0, modes[m], 0.2);
            tsq_quantizer *many = make_q(ctx, 3, 0, modes[m], 0.2);
            tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, n, data);
            double obs;
            float e1, d1, e2, d2;
            Q_OK(one, tsq_quantizer_observe(one, tx));
            for (b = nb - 1; b >= 0; b--) { /* reverse order, for good measure */
                tsq_tensor *tb = wrap1(ctx, TSQ_DTYPE_F32, per, data + b * per);
                Q_OK(many, tsq_quantizer_observe(many, tb));
                tsq_tensor_destroy(tb);
            }
            Q_OK(many, tsq_quantizer_get_option(many, TSQ_QUANTIZER_OBSERVED, &obs));
            ck_assert(obs == (double)n);
            Q_OK(one, tsq_quantizer_fit(one));
            Q_OK(many, tsq_quantizer_fit(many));
            Q_OK(one, tsq_quantizer_get_channel(one, 0, &e1, &d1));
            Q_OK(many, tsq_quantizer_get_channel(many, 0, &e2, &d2));
            ck_assert_msg(fabs(d1 - d2) <= 1e-6 * d1 && fabs(e1 - e2) <= 1e-6 * d1,
                          "pass %d mode %d: (%.8g, %.8g) vs (%.8g, %.8g)", pass, modes[m], e1,
                          d1, e2, d2);
            tsq_tensor_destroy(tx);
            tsq_quantizer_destroy(one);
            tsq_quantizer_destroy(many);
        }
    }
    { /* Per channel: N x C x H x W in one batch or one image at a time. */
        const int64_t shape[4] = {100, 4, 50, 50}, one_shape[4] = {1, 4, 50, 50};
        tsq_quantizer *one = make_q(ctx, 2, 4, TSQ_EPS_JOINT, 0);
        tsq_quantizer *many = make_q(ctx, 2, 4, TSQ_EPS_JOINT, 0);
        tsq_tensor *tx = wrap(ctx, TSQ_DTYPE_F32, 4, shape, x);
        int64_t c;
        Q_OK(one, tsq_quantizer_observe(one, tx));
        for (b = 0; b < 100; b++) {
            tsq_tensor *tb = wrap(ctx, TSQ_DTYPE_F32, 4, one_shape, x + b * 10000);
            Q_OK(many, tsq_quantizer_observe(many, tb));
            tsq_tensor_destroy(tb);
        }
        Q_OK(one, tsq_quantizer_fit(one));
        Q_OK(many, tsq_quantizer_fit(many));
        for (c = 0; c < 4; c++) {
            float e1, d1, e2, d2;
            Q_OK(one, tsq_quantizer_get_channel(one, c, &e1, &d1));
            Q_OK(many, tsq_quantizer_get_channel(many, c, &e2, &d2));
            ck_assert(fabs(d1 - d2) <= 1e-6 * d1 && fabs(e1 - e2) <= 1e-6 * d1);
            ck_assert(fabs(d1 - 0.652) < 0.02); /* each channel is unit-Gaussian */
        }
        tsq_tensor_destroy(tx);
        tsq_quantizer_destroy(one);
        tsq_quantizer_destroy(many);
    }
    free(x);
    free(sorted);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_ste_mask_boundaries)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = make_q(ctx, 2, 0, TSQ_EPS_FIXED, 0);
    /* delta 0.5, three levels: the gradient passes for 0 < x < 1.5. */
    float x[12] = {-1.0f, -0.0f, 0.0f, FLT_TRUE_MIN, 0.2f, 0.25f, 0.75f,
                   nextafterf(1.5f, 0.0f), 1.5f, nextafterf(1.5f, 2.0f), 7.0f, FLT_MAX};
    const int pass[12] = {0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    float g[12], gi[12];
    tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, 12, x), *tg = wrap1(ctx, TSQ_DTYPE_F32, 12, g);
    tsq_tensor *tgi = wrap1(ctx, TSQ_DTYPE_F32, 12, gi);
    int i;
    for (i = 0; i < 12; i++)
        g[i] = (float)(i + 1);
    Q_OK(q, tsq_quantizer_set_channel(q, 0, 0.3f, 0.5f));
    Q_OK(q, tsq_quantizer_backward(q, tx, tg, tgi));
    for (i = 0; i < 12; i++)
        ck_assert_msg(gi[i] == (pass[i] ? g[i] : 0.0f), "x = %a: grad %g", (double)x[i],
                      (double)gi[i]);
    /* In place on grad_out gives the same. */
    Q_OK(q, tsq_quantizer_backward(q, tx, tg, tg));
    ck_assert_mem_eq(g, gi, sizeof g);
    /* The mask does not depend on eps: the region (0, eps] passes too. */
    ck_assert(pass[4] && x[4] < 0.3f);
    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(tg);
    tsq_tensor_destroy(tgi);
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_codes_levels_roundtrip)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng r = {3};
    uint8_t codes[256], back[256];
    float levels[256], again[256];
    int32_t bits;
    int trial;
    for (bits = 1; bits <= 8; bits++)
        for (trial = 0; trial < 20; trial++) {
            int64_t n = (int64_t)1 << bits, i;
            tsq_quantizer *q = make_q(ctx, bits, 0, TSQ_EPS_JOINT, 0);
            tsq_tensor *tc = wrap1(ctx, TSQ_DTYPE_U8, n, codes);
            tsq_tensor *tb = wrap1(ctx, TSQ_DTYPE_U8, n, back);
            tsq_tensor *tl = wrap1(ctx, TSQ_DTYPE_F32, n, levels);
            tsq_tensor *ta = wrap1(ctx, TSQ_DTYPE_F32, n, again);
            float delta = (float)exp(8.0 * th_rng_uniform(&r) - 4.0); /* 0.018 .. 55 */
            float eps = (float)(th_rng_uniform(&r) * 0.999) * delta;  /* eps < delta */
            for (i = 0; i < n; i++)
                codes[i] = (uint8_t)i;
            Q_OK(q, tsq_quantizer_set_channel(q, 0, eps, delta));
            Q_OK(q, tsq_quantizer_decode(q, tc, tl));
            Q_OK(q, tsq_quantizer_encode(q, tl, tb));
            ck_assert_mem_eq(codes, back, (size_t)n);
            Q_OK(q, tsq_quantizer_forward(q, tl, ta)); /* levels are fixed points */
            ck_assert_mem_eq(levels, again, (size_t)n * sizeof(float));
            for (i = 0; i < n; i++)
                ck_assert(levels[i] == (float)i * delta);
            tsq_tensor_destroy(tc);
            tsq_tensor_destroy(tb);
            tsq_tensor_destroy(tl);
            tsq_tensor_destroy(ta);
            tsq_quantizer_destroy(q);
        }
    { /* eps >= k delta: such a level is below the threshold and encodes to 0. */
        tsq_quantizer *q = make_q(ctx, 3, 0, TSQ_EPS_FIXED, 0);
        tsq_tensor *tc = wrap1(ctx, TSQ_DTYPE_U8, 8, codes);
        tsq_tensor *tb = wrap1(ctx, TSQ_DTYPE_U8, 8, back);
        tsq_tensor *tl = wrap1(ctx, TSQ_DTYPE_F32, 8, levels);
        const uint8_t expect[8] = {0, 0, 0, 3, 4, 5, 6, 7};
        int i;
        for (i = 0; i < 8; i++)
            codes[i] = (uint8_t)i;
        Q_OK(q, tsq_quantizer_set_channel(q, 0, 2.0f, 1.0f));
        Q_OK(q, tsq_quantizer_decode(q, tc, tl));
        Q_OK(q, tsq_quantizer_encode(q, tl, tb));
        ck_assert_mem_eq(back, expect, 8);
        tsq_tensor_destroy(tc);
        tsq_tensor_destroy(tb);
        tsq_tensor_destroy(tl);
        tsq_quantizer_destroy(q);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Hard inputs for the formula: ties at every boundary, eps itself, zeros,
 * subnormals, huge values, Inf (encode kernels must agree even there). */
static void fill_hard(float *x, int64_t n, float eps, float delta, th_rng *r)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        uint64_t kind = th_rng_next(r) % 8;
        float k = (float)(th_rng_next(r) % 300);
        switch (kind) {
        case 0: x[i] = (k + 0.5f) * delta; break;
        case 1: x[i] = nextafterf((k + 0.5f) * delta, 0.0f); break;
        case 2: x[i] = eps; break;
        case 3: x[i] = nextafterf(eps, 1.0f); break;
        case 4: x[i] = (th_rng_next(r) & 1) ? -0.0f : FLT_TRUE_MIN * k; break;
        case 5: x[i] = (th_rng_next(r) & 1) ? FLT_MAX : -INFINITY; break;
        case 6: x[i] = (th_rng_next(r) & 1) ? INFINITY : -FLT_MAX; break;
        default: x[i] = (float)(th_rng_normal(r) * 100.0 * delta); break;
        }
    }
}

START_TEST(test_simd_bit_exact)
{
    uint32_t cpu = 0;
    th_rng r = {11};
    enum { N = 1000 };
    float x[N], eps_row[N], inv_row[N];
    uint8_t c_ref[N + 1], c_simd[N + 1];
    int64_t n;
    int32_t bits;
    cpu = tsq__cpu_detect();
    if (!(cpu & TSQ_CPU_AVX2))
        return; /* nothing to compare on this CPU */
    for (bits = 1; bits <= 8; bits++)
        for (n = 0; n <= N; n += (n < 80 ? 1 : 97)) {
            int32_t maxcode = (1 << bits) - 1;
            float delta = (float)exp(6.0 * th_rng_uniform(&r) - 3.0);
            float eps = (float)(th_rng_uniform(&r) * 2.0) * delta, inv = 1.0f / delta;
            int64_t i;
            fill_hard(x, n, eps, delta, &r);
            c_ref[n] = c_simd[n] = 0xEE; /* canary past the end */
            tsq__eltwise_c.encode_span(x, c_ref, n, eps, inv, maxcode);
            tsq__eltwise_avx2.encode_span(x, c_simd, n, eps, inv, maxcode);
            ck_assert_mem_eq(c_ref, c_simd, (size_t)n + 1);
            for (i = 0; i < n; i++) {
                ck_assert_int_eq(c_ref[i], tsq__quant_code(x[i], eps, inv, maxcode));
                eps_row[i] = (float)(th_rng_uniform(&r) * 2.0) * delta;
                inv_row[i] = 1.0f / (delta * (float)(0.5 + th_rng_uniform(&r)));
            }
            tsq__eltwise_c.encode_row(x, c_ref, n, eps_row, inv_row, maxcode);
            tsq__eltwise_avx2.encode_row(x, c_simd, n, eps_row, inv_row, maxcode);
            ck_assert_mem_eq(c_ref, c_simd, (size_t)n + 1);
            ck_assert_uint_eq(c_ref[n], 0xEE);
            /* NaN and Inf counting. */
            for (i = 0; i < n; i++)
                if (th_rng_next(&r) % 5 == 0)
                    x[i] = (th_rng_next(&r) & 1) ? NAN : -INFINITY;
            ck_assert_int_eq(tsq__eltwise_avx2.count_nonfinite(x, n),
                             tsq__eltwise_c.count_nonfinite(x, n));
        }
}
END_TEST

/* Fake-quant forward and the straight-through backward: AVX2 against C,
 * bit for bit (hard inputs, every tail length, span and row forms), and
 * both against the references written from the header's formula. */
START_TEST(test_fakequant_ste_simd_bit_exact)
{
    uint32_t cpu = 0;
    th_rng r = {12};
    enum { N = 600 };
    float x[N], go[N], eps_row[N], inv_row[N], d_row[N];
    float y_ref[N + 1], y_simd[N + 1], g_ref[N + 1], g_simd[N + 1];
    int64_t n, i;
    int32_t bits;
    cpu = tsq__cpu_detect();
    for (bits = 1; bits <= 8; bits++)
        for (n = 0; n <= N; n += (n < 40 ? 1 : 61)) {
            int32_t maxcode = (1 << bits) - 1;
            float delta = (float)exp(6.0 * th_rng_uniform(&r) - 3.0);
            float eps = (float)(th_rng_uniform(&r) * 2.0) * delta, inv = 1.0f / delta;
            fill_hard(x, n, eps, delta, &r);
            for (i = 0; i < n; i++) {
                if (!isfinite(x[i]))
                    x[i] = (float)maxcode * delta; /* the STE window's top, exactly */
                go[i] = i % 17 == 3 ? NAN : (float)th_rng_normal(&r);
                eps_row[i] = (float)(th_rng_uniform(&r) * 2.0) * delta;
                d_row[i] = delta * (float)(0.5 + th_rng_uniform(&r));
                inv_row[i] = 1.0f / d_row[i];
            }
            y_ref[n] = y_simd[n] = g_ref[n] = g_simd[n] = -7.0f; /* canaries */
            tsq__eltwise_c.fakequant_span(x, y_ref, n, eps, inv, delta, maxcode);
            tsq__eltwise_c.ste_span(x, go, g_ref, n, delta, maxcode);
            for (i = 0; i < n; i++) {
                ck_assert(y_ref[i] == (float)th_ref_code(x[i], eps, delta, maxcode) * delta);
                if (th_ref_ste_passes(x[i], delta, maxcode))
                    ck_assert_mem_eq(&g_ref[i], &go[i], sizeof(float));
                else
                    ck_assert_mem_eq(&g_ref[i], &(float){0.0f}, sizeof(float));
            }
            if (cpu & TSQ_CPU_AVX2) {
                tsq__eltwise_avx2.fakequant_span(x, y_simd, n, eps, inv, delta, maxcode);
                tsq__eltwise_avx2.ste_span(x, go, g_simd, n, delta, maxcode);
                ck_assert_mem_eq(y_ref, y_simd, (size_t)(n + 1) * sizeof(float));
                ck_assert_mem_eq(g_ref, g_simd, (size_t)(n + 1) * sizeof(float));
            }
            tsq__eltwise_c.fakequant_row(x, y_ref, n, eps_row, inv_row, d_row, maxcode);
            tsq__eltwise_c.ste_row(x, go, g_ref, n, d_row, maxcode);
            if (cpu & TSQ_CPU_AVX2) {
                tsq__eltwise_avx2.fakequant_row(x, y_simd, n, eps_row, inv_row, d_row, maxcode);
                tsq__eltwise_avx2.ste_row(x, go, g_simd, n, d_row, maxcode);
                ck_assert_mem_eq(y_ref, y_simd, (size_t)(n + 1) * sizeof(float));
                ck_assert_mem_eq(g_ref, g_simd, (size_t)(n + 1) * sizeof(float));
            }
            ck_assert(y_ref[n] == -7.0f && g_ref[n] == -7.0f);
        }
}
END_TEST

/* A learned delta's gradient terms (the LSQ derivative of nn/activation_quant.c):
 * the C kernel against the formula written out here (k - x/delta inside
 * (0, maxcode delta), maxcode above, 0 at or below 0 and for NaN), the AVX2
 * kernel against the C one bit for bit, on values at every boundary, NaN,
 * infinities and odd lengths. */
START_TEST(test_lsq_prod_simd_bit_exact)
{
    uint32_t cpu = tsq__cpu_detect();
    th_rng r = {13};
    enum { N = 300 };
    float x[N], dy[N];
    double ref[N + 1], simd[N + 1];
    int64_t n, i;
    int32_t bits;
    for (bits = 1; bits <= 8; bits++)
        for (n = 0; n <= N; n += (n < 40 ? 1 : 37)) {
            int32_t maxcode = (1 << bits) - 1;
            float delta = (float)exp(6.0 * th_rng_uniform(&r) - 3.0);
            float eps = (float)(th_rng_uniform(&r) * 2.0) * delta, inv = 1.0f / delta;
            float top = (float)maxcode * delta;
            fill_hard(x, n, eps, delta, &r);
            for (i = 0; i < n; i++) {
                if (i % 23 == 5)
                    x[i] = top; /* the window's top, exactly: above */
                else if (i % 29 == 7)
                    x[i] = 0.0f;
                dy[i] = i % 19 == 4 ? -0.0f : (float)th_rng_normal(&r);
            }
            ref[n] = simd[n] = -7.0; /* canaries */
            tsq__eltwise_c.lsq_prod_span(x, dy, ref, n, eps, inv, top, maxcode);
            for (i = 0; i < n; i++) {
                float v = x[i], t;
                int32_t k = th_ref_code(v, eps, delta, maxcode);
                if (v > 0.0f && v < top)
                    t = (float)k - v * inv;
                else
                    t = v > 0.0f ? (float)maxcode : 0.0f;
                ck_assert_mem_eq(&ref[i], &(double){(double)dy[i] * (double)t}, sizeof(double));
            }
            if (cpu & TSQ_CPU_AVX2) {
                tsq__eltwise_avx2.lsq_prod_span(x, dy, simd, n, eps, inv, top, maxcode);
                ck_assert_mem_eq(ref, simd, (size_t)(n + 1) * sizeof(double));
            }
            ck_assert(ref[n] == -7.0);
        }
}
END_TEST

/* The code is floor(x * (1.0f / delta) + 0.5f) in float, as quantizer.h
 * says, and not floor(x / delta + 1/2): at values within 2 ulp of a level
 * boundary the two differ, and encode follows the header. */
START_TEST(test_formula_at_boundaries)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    enum { N = 1 << 14 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *codes = malloc(N);
    tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, N, x), *ty = wrap1(ctx, TSQ_DTYPE_F32, N, y);
    tsq_tensor *tc = wrap1(ctx, TSQ_DTYPE_U8, N, codes);
    th_rng r = {31};
    int64_t differ_from_division = 0;
    int trial, threads;
    for (threads = 1; threads <= 2; threads++) {
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        for (trial = 0; trial < 8; trial++) {
            int32_t bits = 1 + trial % 8, maxcode = (1 << bits) - 1;
            tsq_quantizer *q = make_q(ctx, bits, 0, TSQ_EPS_FIXED, 0);
            float delta = (float)exp(4.0 * th_rng_uniform(&r) - 2.0), eps = 0.5f * delta;
            int64_t i;
            for (i = 0; i < N; i++) {
                /* the boundary between codes k and k + 1, moved by -2..2 ulp */
                float b = ((float)(1 + th_rng_below(&r, maxcode)) - 0.5f) * delta;
                int ulps = (int)th_rng_below(&r, 5) - 2;
                for (; ulps < 0; ulps++)
                    b = nextafterf(b, 0.0f);
                for (; ulps > 0; ulps--)
                    b = nextafterf(b, FLT_MAX);
                x[i] = b;
            }
            Q_OK(q, tsq_quantizer_set_channel(q, 0, eps, delta));
            Q_OK(q, tsq_quantizer_encode(q, tx, tc));
            Q_OK(q, tsq_quantizer_forward(q, tx, ty));
            for (i = 0; i < N; i++) {
                int32_t want = th_ref_code(x[i], eps, delta, maxcode);
                double by_division = floor((double)x[i] / (double)delta + 0.5);
                ck_assert_msg(codes[i] == want, "x = %a, delta = %a: code %d, formula %d",
                              (double)x[i], (double)delta, codes[i], want);
                ck_assert(y[i] == (float)want * delta);
                if (x[i] > eps && by_division >= 1 && by_division <= maxcode &&
                    by_division != want)
                    differ_from_division++;
            }
            tsq_quantizer_destroy(q);
        }
    }
    /* The test means something: the exact quotient rounds otherwise for some. */
    ck_assert_int_gt(differ_from_division, 0);
    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(ty);
    tsq_tensor_destroy(tc);
    free(x);
    free(y);
    free(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* Forward and backward split large tensors over threads like encode; the
 * result does not depend on the thread count (per tensor, NCHW, N x C). */
START_TEST(test_fakequant_threads_agree)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shapes[3][2] = {{1, 0}, {4, 3}, {1 << 13, 40}};
    int s;
    for (s = 0; s < 3; s++) {
        int64_t C = shapes[s][1], n = 40 * 8192, i, shape[4];
        int32_t ndim;
        float *x = th_gaussian(n, 5 + (uint64_t)s), *g = th_gaussian(n, 9);
        float *y[2], *gi[2];
        tsq_quantizer *q = make_q(ctx, 2, C, TSQ_EPS_JOINT, 0);
        tsq_tensor *tx, *tg, *ty, *tgi;
        int t;
        if (C == 0) {
            ndim = 1;
            shape[0] = n;
        } else if (s == 1) {
            ndim = 4;
            shape[0] = 4; shape[1] = C; shape[2] = 160; shape[3] = n / (4 * C * 160);
            n = shape[0] * shape[1] * shape[2] * shape[3];
        } else {
            ndim = 2;
            shape[0] = n / C;
            shape[1] = C;
        }
        tx = wrap(ctx, TSQ_DTYPE_F32, ndim, shape, x);
        tg = wrap(ctx, TSQ_DTYPE_F32, ndim, shape, g);
        for (i = 0; i < (C ? C : 1); i++)
            Q_OK(q, tsq_quantizer_set_channel(q, i, 0.3f + 0.01f * (float)i,
                                              0.6f + 0.02f * (float)i));
        for (t = 0; t < 2; t++) {
            y[t] = malloc((size_t)n * sizeof(float));
            gi[t] = malloc((size_t)n * sizeof(float));
            ty = wrap(ctx, TSQ_DTYPE_F32, ndim, shape, y[t]);
            tgi = wrap(ctx, TSQ_DTYPE_F32, ndim, shape, gi[t]);
            TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1 + 2 * t));
            Q_OK(q, tsq_quantizer_forward(q, tx, ty));
            Q_OK(q, tsq_quantizer_backward(q, tx, tg, tgi));
            tsq_tensor_destroy(ty);
            tsq_tensor_destroy(tgi);
        }
        ck_assert_mem_eq(y[0], y[1], (size_t)n * sizeof(float));
        ck_assert_mem_eq(gi[0], gi[1], (size_t)n * sizeof(float));
        for (i = 0; i < n; i += 997) { /* and they are the formula */
            int64_t c = C == 0 ? 0 : (ndim == 2 ? i % C : (i / (shape[2] * shape[3])) % C);
            float e = 0.3f + 0.01f * (float)c, d = 0.6f + 0.02f * (float)c;
            ck_assert(y[0][i] == (float)th_ref_code(x[i], e, d, 3) * d);
            ck_assert(gi[0][i] == (th_ref_ste_passes(x[i], d, 3) ? g[i] : 0.0f));
        }
        for (t = 0; t < 2; t++) {
            free(y[t]);
            free(gi[t]);
        }
        tsq_tensor_destroy(tx);
        tsq_tensor_destroy(tg);
        tsq_quantizer_destroy(q);
        free(x);
        free(g);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* A NULL output pointer is TSQ_ERR_NULL with a message on the quantizer
 * (core.h); a key of another family is refused, not taken for another. */
START_TEST(test_null_outputs_and_key_families)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = make_q(ctx, 2, 0, TSQ_EPS_JOINT, 0);
    float e;
    double v, lo, hi;
    Q_FAILS(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, NULL), TSQ_ERR_NULL, "value");
    Q_OK(q, tsq_quantizer_set_channel(q, 0, 0.25f, 0.5f));
    Q_FAILS(q, tsq_quantizer_get_channel(q, 0, &e, NULL), TSQ_ERR_NULL, "delta");
    Q_FAILS(q, tsq_quantizer_get_channel(q, 0, NULL, &e), TSQ_ERR_NULL, "eps");
    Q_FAILS(q, tsq_quantizer_save(q, NULL, 0, NULL), TSQ_ERR_NULL, "size");
    ck_assert_int_eq(TSQ_QUANTIZER_BITS, 0x0201);
    ck_assert_int_eq(TSQ_QUANTIZER_OBSERVED, 0x0208);
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_CONTEXT_THREADS, 2), TSQ_ERR_INVALID,
            "context key");
    Q_FAILS(q, tsq_quantizer_get_option(q, TSQ_CONTEXT_LOG_LEVEL, &v), TSQ_ERR_INVALID,
            "context key");
    Q_FAILS(q, tsq_quantizer_set_option(q, 0x0200, 2), TSQ_ERR_INVALID, "unknown key");
    Q_FAILS(q, tsq_quantizer_set_option(q, 0x0209, 2), TSQ_ERR_INVALID, "unknown key");
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_CONTEXT_THREADS, &lo, &hi), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_INFO_VERSION, &lo, &hi), TSQ_ERR_INVALID);
    /* The table other handles read the quantizer's defaults from. */
    ck_assert_int_eq(tsq__option_get(&tsq__quantizer_table, &ctx->obj, "defaults", NULL,
                                     TSQ_QUANTIZER_EPS, &v),
                     TSQ_OK);
    ck_assert(v == 0.32);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_SPARSITY, &lo));
    ck_assert_int_eq(tsq__option_get(&tsq__quantizer_table, &ctx->obj, "defaults", NULL,
                                     TSQ_QUANTIZER_SPARSITY, &v),
                     TSQ_OK);
    ck_assert(v == lo);
    /* The quantizer was not touched by the refusals. */
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, &v));
    ck_assert(v == 2);
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST

/* The public encode, forward and decode agree with the formula, on the
 * per-tensor, per-channel NCHW and per-channel N x C paths, with threads. */
START_TEST(test_encode_paths_agree)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shapes[3][4] = {{3, 37, 1, 1}, {5, 3, 17, 19}, {2, 40, 73, 97}};
    const int32_t ndims[3] = {2, 4, 4};
    th_rng r = {8};
    int s, threads;
    for (threads = 1; threads <= 2; threads++) {
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        for (s = 0; s < 3; s++) {
            int64_t C = shapes[s][1], n = shapes[s][0] * C * shapes[s][2] * shapes[s][3], i;
            int64_t inner = n / (shapes[s][0] * C);
            float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4), *z = malloc((size_t)n * 4);
            uint8_t *codes = malloc((size_t)n);
            int per_channel;
            for (per_channel = 0; per_channel < 2; per_channel++) {
                tsq_quantizer *q = make_q(ctx, 3, per_channel ? C : 0, TSQ_EPS_FIXED, 0);
                tsq_tensor *tx = wrap(ctx, TSQ_DTYPE_F32, ndims[s], shapes[s], x);
                tsq_tensor *ty = wrap(ctx, TSQ_DTYPE_F32, ndims[s], shapes[s], y);
                tsq_tensor *tz = wrap(ctx, TSQ_DTYPE_F32, ndims[s], shapes[s], z);
                tsq_tensor *tc = wrap(ctx, TSQ_DTYPE_U8, ndims[s], shapes[s], codes);
                int64_t c, wrong = 0;
                for (c = 0; c < (per_channel ? C : 1); c++)
                    Q_OK(q, tsq_quantizer_set_channel(q, c, (float)(0.1 * (c % 7)),
                                                      (float)(0.2 + 0.05 * (c % 5))));
                fill_hard(x, n, 0.3f, 0.25f, &r);
                for (i = 0; i < n; i++)
                    if (!isfinite(x[i]))
                        x[i] = 1e30f;
                Q_OK(q, tsq_quantizer_encode(q, tx, tc));
                Q_OK(q, tsq_quantizer_forward(q, tx, ty));
                Q_OK(q, tsq_quantizer_decode(q, tc, tz));
                ck_assert_mem_eq(y, z, (size_t)n * 4);
                /* (Check's assertions cost a system call each: count, then assert.) */
                for (i = 0; i < n; i++) {
                    int64_t ch = per_channel ? (i / inner) % C : 0;
                    float e = (float)(0.1 * (ch % 7)), d = (float)(0.2 + 0.05 * (ch % 5));
                    wrong += codes[i] != tsq__quant_code(x[i], e, 1.0f / d, 7);
                }
                ck_assert_int_eq(wrong, 0);
                tsq_tensor_destroy(tx);
                tsq_tensor_destroy(ty);
                tsq_tensor_destroy(tz);
                tsq_tensor_destroy(tc);
                tsq_quantizer_destroy(q);
            }
            free(x);
            free(y);
            free(z);
            free(codes);
        }
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Per-channel fits follow each channel's scale; a 2-D N x C tensor works. */
START_TEST(test_per_channel_scales)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t N = 100000, C = 3, shape[2] = {100000, 3};
    const double scale[3] = {0.01, 1.0, 300.0};
    float *x = malloc((size_t)(N * C) * sizeof *x);
    th_rng r = {21};
    tsq_quantizer *q = make_q(ctx, 2, C, TSQ_EPS_JOINT, 0);
    tsq_tensor *tx = wrap(ctx, TSQ_DTYPE_F32, 2, shape, x);
    int64_t i, c;
    double ch;
    for (i = 0; i < N * C; i++)
        x[i] = (float)(th_rng_normal(&r) * scale[i % C]);
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 2));
    Q_OK(q, tsq_learn_codes(q, tx, NULL, NULL, NULL));
    for (c = 0; c < C; c++) {
        float e, d;
        Q_OK(q, tsq_quantizer_get_channel(q, c, &e, &d));
        ck_assert_msg(fabs(d / scale[c] - 0.652) < 0.01, "channel %lld: delta %g", (long long)c,
                      (double)d);
    }
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_CHANNELS, &ch));
    ck_assert(ch == 3.0);
    tsq_tensor_destroy(tx);
    tsq_quantizer_destroy(q);
    free(x);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_defaults_and_bounds)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = NULL;
    double v, lo, hi;
    TH_OK(ctx, tsq_quantizer_create(ctx, 4, 0, &q));
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, &v));
    ck_assert(v == 4);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_EPS_MODE, &v));
    ck_assert(v == TSQ_EPS_JOINT);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_EPS, &v));
    ck_assert(v == 0.32);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_SPARSITY, &v));
    ck_assert(v == 0.63);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, &v));
    ck_assert(v == 0); /* automatic */
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &v));
    ck_assert(v == 0);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &v));
    ck_assert(v == 0);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_BITS, &lo, &hi), TSQ_OK);
    ck_assert(lo == 1 && hi == 8);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_EPS_MODE, &lo, &hi), TSQ_OK);
    ck_assert(lo == TSQ_EPS_FIXED && hi == TSQ_EPS_PLAIN);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_EPS, &lo, &hi), TSQ_OK);
    ck_assert(lo == 0 && hi == FLT_MAX);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_SPARSITY, &lo, &hi), TSQ_OK);
    ck_assert(lo == 0 && hi == 1);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_HIST_RESOLUTION, &lo, &hi),
                     TSQ_OK);
    ck_assert(lo == 0 && hi == 10);
    ck_assert_int_eq(tsq_quantizer_option_bounds(999, &lo, &hi), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_quantizer_option_bounds(TSQ_QUANTIZER_BITS, NULL, &hi), TSQ_ERR_NULL);
    /* Every bound is accepted; changing bits drops the parameters. */
    Q_OK(q, tsq_quantizer_set_channel(q, 0, 0.1f, 0.2f));
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &v));
    ck_assert(v == 1);
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, 8));
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &v));
    ck_assert(v == 0);
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, 1));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, FLT_MAX));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 1));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 10));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 1));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 0));
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST

/* Degenerate data: all non-positive, a constant, one sample; every
 * resolution gives a valid quantizer. */
START_TEST(test_degenerate_data)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    float neg[4] = {-1.0f, 0.0f, -3.0f, -0.0f}, same[5] = {2.5f, 2.5f, 2.5f, 2.5f, 2.5f};
    float single = 1e-30f, e, d;
    double err, sp;
    tsq_quantizer *q = make_q(ctx, 2, 0, TSQ_EPS_JOINT, 0);
    tsq_tensor *tn = wrap1(ctx, TSQ_DTYPE_F32, 4, neg), *ts = wrap1(ctx, TSQ_DTYPE_F32, 5, same);
    tsq_tensor *t1 = wrap1(ctx, TSQ_DTYPE_F32, 1, &single);
    int32_t res, mode;
    Q_OK(q, tsq_learn_codes(q, tn, NULL, &err, &sp));
    Q_OK(q, tsq_quantizer_get_channel(q, 0, &e, &d));
    ck_assert(d == 1.0f && err == 0.0 && sp == 1.0);
    for (mode = TSQ_EPS_FIXED; mode <= TSQ_EPS_PLAIN; mode++)
        for (res = 0; res <= 10; res += 2) {
            Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, mode));
            Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, res));
            Q_OK(q, tsq_learn_codes(q, ts, NULL, &err, &sp));
            Q_OK(q, tsq_quantizer_get_channel(q, 0, &e, &d));
            if (mode != TSQ_EPS_SPARSITY) { /* 0.63 of a constant zeroes it all */
                ck_assert_msg(err < 1e-10, "mode %d res %d: error %g (delta %g)", mode, res,
                              err, (double)d);
                ck_assert(sp == 0.0);
            }
            Q_OK(q, tsq_learn_codes(q, t1, NULL, &err, &sp));
            Q_OK(q, tsq_quantizer_get_channel(q, 0, &e, &d));
            ck_assert(d > 0.0f && isfinite(1.0f / d));
        }
    tsq_tensor_destroy(tn);
    tsq_tensor_destroy(ts);
    tsq_tensor_destroy(t1);
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST

static uint8_t *saved(tsq_quantizer *q, uint64_t *size)
{
    uint8_t *buf;
    Q_OK(q, tsq_quantizer_save(q, NULL, 0, size));
    buf = malloc((size_t)*size);
    Q_OK(q, tsq_quantizer_save(q, buf, *size, size));
    return buf;
}

/* Rewrites the CRC after a deliberate field change. */
static void reseal(uint8_t *buf, uint64_t size)
{
    uint32_t crc = tsq__crc32(0, buf, (size_t)(size - 4));
    buf[size - 4] = (uint8_t)crc;
    buf[size - 3] = (uint8_t)(crc >> 8);
    buf[size - 2] = (uint8_t)(crc >> 16);
    buf[size - 1] = (uint8_t)(crc >> 24);
}

static void expect_load_fails(tsq_context *ctx, const uint8_t *buf, uint64_t size,
                              tsq_status status, const char *substring)
{
    tsq_quantizer *q = (tsq_quantizer *)&q; /* must become NULL */
    tsq_status got = tsq_quantizer_load(ctx, buf, size, &q);
    ck_assert_msg(got == status, "load -> %s, expected %s (%s)", tsq_status_string(got),
                  tsq_status_string(status), tsq_context_errmsg(ctx));
    ck_assert_ptr_null(q);
    ck_assert_msg(strstr(tsq_context_errmsg(ctx), substring) != NULL, "\"%s\" lacks \"%s\"",
                  tsq_context_errmsg(ctx), substring);
}

START_TEST(test_save_load)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = make_q(ctx, 3, 5, TSQ_EPS_SPARSITY, 0.125), *back = NULL;
    uint8_t *buf, *bad, small[8];
    uint64_t size, i, size2;
    double v;
    int64_t c;
    int bit;
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 0.7));
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 9));
    for (c = 0; c < 5; c++)
        Q_OK(q, tsq_quantizer_set_channel(q, c, 0.1f * (float)c, 0.3f + (float)c));
    buf = saved(q, &size);
    ck_assert_uint_eq(size, 48 + 5 * 8 + 4);
    ck_assert_mem_eq(buf, "TSQQ", 4);
    TH_OK(ctx, tsq_quantizer_load(ctx, buf, size, &back));
    for (c = 0; c < 5; c++) {
        float e1, d1, e2, d2;
        Q_OK(q, tsq_quantizer_get_channel(q, c, &e1, &d1));
        Q_OK(back, tsq_quantizer_get_channel(back, c, &e2, &d2));
        ck_assert(e1 == e2 && d1 == d2);
    }
    Q_OK(back, tsq_quantizer_get_option(back, TSQ_QUANTIZER_EPS_MODE, &v));
    ck_assert(v == TSQ_EPS_SPARSITY);
    Q_OK(back, tsq_quantizer_get_option(back, TSQ_QUANTIZER_EPS, &v));
    ck_assert(v == 0.125);
    Q_OK(back, tsq_quantizer_get_option(back, TSQ_QUANTIZER_SPARSITY, &v));
    ck_assert(v == 0.7);
    Q_OK(back, tsq_quantizer_get_option(back, TSQ_QUANTIZER_HIST_RESOLUTION, &v));
    ck_assert(v == 9);
    Q_OK(back, tsq_quantizer_get_option(back, TSQ_QUANTIZER_BITS, &v));
    ck_assert(v == 3);
    { /* The loaded copy saves to the same bytes. */
        uint8_t *again = saved(back, &size2);
        ck_assert_uint_eq(size, size2);
        ck_assert_mem_eq(buf, again, (size_t)size);
        free(again);
    }
    tsq_quantizer_destroy(back);

    /* Too small a buffer: size reported, nothing written. */
    memset(small, 0x5A, sizeof small);
    Q_FAILS(q, tsq_quantizer_save(q, small, sizeof small, &size2), TSQ_ERR_TOO_SMALL,
            "8 bytes");
    ck_assert_uint_eq(size2, size);
    for (i = 0; i < sizeof small; i++)
        ck_assert_uint_eq(small[i], 0x5A);

    /* Every flipped bit and every truncation is refused without harm. */
    bad = malloc((size_t)size);
    for (i = 0; i < size; i++)
        for (bit = 0; bit < 8; bit++) {
            tsq_quantizer *t = NULL;
            tsq_status s;
            memcpy(bad, buf, (size_t)size);
            bad[i] ^= (uint8_t)(1u << bit);
            s = tsq_quantizer_load(ctx, bad, size, &t);
            ck_assert_msg(s == TSQ_ERR_FORMAT || s == TSQ_ERR_VERSION,
                          "byte %llu bit %d: %s", (unsigned long long)i, bit,
                          tsq_status_string(s));
            ck_assert_ptr_null(t);
        }
    for (i = 0; i < size; i++)
        expect_load_fails(ctx, buf, i, TSQ_ERR_FORMAT, "");
    memcpy(bad, buf, (size_t)size);
    expect_load_fails(ctx, bad, size - 1, TSQ_ERR_FORMAT, "bytes");
    bad[0] = 'X';
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "magic");
    /* Fields that pass the checksum but not the checks. */
    memcpy(bad, buf, (size_t)size);
    bad[4] = 2;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_VERSION, "version 2");
    memcpy(bad, buf, (size_t)size);
    bad[8] = 9;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "bits 9");
    memcpy(bad, buf, (size_t)size);
    bad[12] = 7;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "eps mode 7");
    memcpy(bad, buf, (size_t)size);
    bad[16] = 11;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "resolution 11");
    memcpy(bad, buf, (size_t)size);
    bad[21] = 1;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "reserved");
    memcpy(bad, buf, (size_t)size);
    bad[24] = 6; /* 6 channels in a 5-channel buffer */
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "6 channel(s)");
    memcpy(bad, buf, (size_t)size);
    bad[31] = 0x80; /* a negative channel count */
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "channel count");
    memcpy(bad, buf, (size_t)size);
    bad[47] = 0xFF; /* sparsity's sign and exponent: NaN */
    bad[46] = 0xFF;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "sparsity");
    memcpy(bad, buf, (size_t)size);
    bad[48 + 8 + 7] |= 0x80; /* channel 1's delta negative */
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "channel 1 has delta <= 0");
    memcpy(bad, buf, (size_t)size);
    bad[48 + 16 + 3] |= 0x80; /* channel 2's eps negative */
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "channel 2 has eps < 0");
    memcpy(bad, buf, (size_t)size);
    bad[48 + 3] = 0x7F; /* channel 0's eps: 0x7F..... with the top mantissa set: NaN */
    bad[48 + 2] = 0xC0;
    reseal(bad, size);
    expect_load_fails(ctx, bad, size, TSQ_ERR_FORMAT, "not finite");
    ck_assert_int_eq(tsq_quantizer_load(ctx, NULL, size, &back), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_load(ctx, buf, size, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_load(NULL, buf, size, &back), TSQ_ERR_NULL);
    free(bad);
    free(buf);
    tsq_quantizer_destroy(q);

    { /* An unfitted per-tensor quantizer round-trips as unfitted. */
        tsq_quantizer *u = NULL;
        TH_OK(ctx, tsq_quantizer_create(ctx, 8, 0, &u));
        buf = saved(u, &size);
        ck_assert_uint_eq(size, 48 + 8 + 4);
        tsq_quantizer_destroy(u);
        TH_OK(ctx, tsq_quantizer_load(ctx, buf, size, &u));
        Q_OK(u, tsq_quantizer_get_option(u, TSQ_QUANTIZER_FITTED, &v));
        ck_assert(v == 0);
        tsq_quantizer_destroy(u);
        free(buf);
    }
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_bad_input)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = NULL, *pc = NULL;
    float x[8] = {0.1f, 0.5f, 1.0f, 2.0f, -1.0f, 3.0f, 0.7f, 0.2f}, y[8], e, d;
    float fbuf[8];
    uint8_t codes[8], ref[8];
    int8_t i8[8];
    double v, err = -7.0, sp = -7.0;
    const int64_t s24[2] = {2, 4}, s42[2] = {4, 2};
    tsq_tensor *tx, *ty, *tc, *ti8, *tf, *t24, *t42, *tc7;
    int i;

    /* Constructor arguments. */
    ck_assert_int_eq(tsq_quantizer_create(ctx, 0, 0, &q), TSQ_ERR_INVALID);
    ck_assert_ptr_null(q);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "bits is 0"));
    ck_assert_int_eq(tsq_quantizer_create(ctx, 9, 0, &q), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "1..8"));
    ck_assert_int_eq(tsq_quantizer_create(ctx, 2, -1, &q), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "channels is -1"));
    ck_assert_int_eq(tsq_quantizer_create(NULL, 2, 0, &q), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_create(ctx, 2, 0, NULL), TSQ_ERR_NULL);

    q = make_q(ctx, 2, 0, TSQ_EPS_JOINT, 0);
    TH_OK(ctx, tsq_quantizer_create(ctx, 2, 4, &pc));
    tx = wrap1(ctx, TSQ_DTYPE_F32, 8, x);
    ty = wrap1(ctx, TSQ_DTYPE_F32, 8, y);
    tc = wrap1(ctx, TSQ_DTYPE_U8, 8, codes);
    ti8 = wrap1(ctx, TSQ_DTYPE_I8, 8, i8);
    tf = wrap1(ctx, TSQ_DTYPE_F32, 8, fbuf);
    tc7 = wrap1(ctx, TSQ_DTYPE_U8, 7, codes);
    t24 = wrap(ctx, TSQ_DTYPE_F32, 2, s24, x);
    t42 = wrap(ctx, TSQ_DTYPE_F32, 2, s42, x);

    /* Options. */
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, -0.1), TSQ_ERR_INVALID,
            "eps = -0.1");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, NAN), TSQ_ERR_INVALID, "eps");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, 0), TSQ_ERR_INVALID, "bits");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, 9), TSQ_ERR_INVALID, "1 .. 8");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, 2.5), TSQ_ERR_INVALID,
            "integer");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 1.5), TSQ_ERR_INVALID,
            "sparsity");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, 0), TSQ_ERR_INVALID,
            "eps_mode");
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_CHANNELS, 3), TSQ_ERR_INVALID,
            "read-only");
    Q_FAILS(q, tsq_quantizer_set_option(q, 12345, 1), TSQ_ERR_INVALID, "unknown key");
    ck_assert_int_eq(tsq_quantizer_get_option(q, 12345, &v), TSQ_ERR_INVALID);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_EPS_MODE, &v));
    ck_assert(v == TSQ_EPS_JOINT); /* unchanged by the failures */

    /* Not fitted yet: nothing written. */
    memset(codes, 0xEE, sizeof codes);
    memcpy(ref, codes, sizeof ref);
    Q_FAILS(q, tsq_quantizer_encode(q, tx, tc), TSQ_ERR_STATE, "not fitted");
    ck_assert_mem_eq(codes, ref, sizeof ref);
    Q_FAILS(q, tsq_quantizer_forward(q, tx, ty), TSQ_ERR_STATE, "not fitted");
    Q_FAILS(q, tsq_quantizer_get_channel(q, 0, &e, &d), TSQ_ERR_STATE, "no parameters");
    Q_FAILS(q, tsq_quantizer_fit(q), TSQ_ERR_NO_DATA, "no samples");
    Q_FAILS(q, tsq_learn_codes(q, NULL, NULL, &err, &sp), TSQ_ERR_NO_DATA, "no samples");
    ck_assert(err == -7.0 && sp == -7.0);
    { int32_t b; float fe, fd;
      ck_assert_int_eq(tsq__quantizer_channel(q, 0, &b, &fe, &fd), TSQ_ERR_STATE); }

    /* NaN and Inf samples: nothing observed, fitted or written. */
    x[3] = NAN;
    Q_FAILS(q, tsq_quantizer_observe(q, tx), TSQ_ERR_NOT_FINITE, "1 of 8 samples");
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &v));
    ck_assert(v == 0);
    Q_FAILS(q, tsq_learn_codes(q, tx, tc, &err, &sp), TSQ_ERR_NOT_FINITE, "NaN or Inf");
    ck_assert_mem_eq(codes, ref, sizeof ref);
    ck_assert(err == -7.0 && sp == -7.0);
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &v));
    ck_assert(v == 0);
    x[3] = -INFINITY;
    x[5] = INFINITY;
    Q_FAILS(q, tsq_quantizer_observe(q, tx), TSQ_ERR_NOT_FINITE, "2 of 8 samples");
    x[3] = 2.0f;
    x[5] = 3.0f;

    /* Parameters by hand. */
    Q_FAILS(q, tsq_quantizer_set_channel(q, 0, -0.5f, 1.0f), TSQ_ERR_INVALID, "eps < 0");
    Q_FAILS(q, tsq_quantizer_set_channel(q, 0, 0.5f, 0.0f), TSQ_ERR_INVALID, "delta <= 0");
    Q_FAILS(q, tsq_quantizer_set_channel(q, 0, NAN, 1.0f), TSQ_ERR_NOT_FINITE, "not finite");
    Q_FAILS(q, tsq_quantizer_set_channel(q, 0, 0.1f, INFINITY), TSQ_ERR_NOT_FINITE,
            "not finite");
    Q_FAILS(q, tsq_quantizer_set_channel(q, 0, 0.1f, 1e-39f), TSQ_ERR_INVALID, "overflows");
    Q_FAILS(q, tsq_quantizer_set_channel(q, 1, 0.1f, 1.0f), TSQ_ERR_INVALID, "channel 1");
    Q_FAILS(pc, tsq_quantizer_set_channel(pc, 4, 0.1f, 1.0f), TSQ_ERR_INVALID, "0..3");
    Q_FAILS(pc, tsq_quantizer_set_channel(pc, -1, 0.1f, 1.0f), TSQ_ERR_INVALID, "channel -1");

    /* Wrong dtypes and shapes, once fitted: nothing written. */
    Q_OK(q, tsq_learn_codes(q, tx, NULL, NULL, NULL));
    Q_FAILS(q, tsq_quantizer_encode(q, tx, tf), TSQ_ERR_DTYPE, "codes has dtype f32");
    Q_FAILS(q, tsq_quantizer_encode(q, tx, ti8), TSQ_ERR_DTYPE, "expected u8");
    Q_FAILS(q, tsq_learn_codes(q, tx, ti8, &err, &sp), TSQ_ERR_DTYPE, "codes has dtype i8");
    ck_assert(err == -7.0 && sp == -7.0);
    Q_FAILS(q, tsq_quantizer_encode(q, tc, tc), TSQ_ERR_DTYPE, "x has dtype u8");
    Q_FAILS(q, tsq_quantizer_observe(q, tc), TSQ_ERR_DTYPE, "x has dtype u8");
    Q_FAILS(q, tsq_quantizer_encode(q, tx, tc7), TSQ_ERR_SHAPE, "shape 8 but codes has shape 7");
    Q_FAILS(q, tsq_quantizer_encode(q, t24, tc), TSQ_ERR_SHAPE, "shape 2x4");
    ck_assert_mem_eq(codes, ref, sizeof ref);
    Q_FAILS(q, tsq_quantizer_decode(q, tx, ty), TSQ_ERR_DTYPE, "codes has dtype f32");
    Q_FAILS(q, tsq_quantizer_backward(q, tx, tc, ty), TSQ_ERR_DTYPE, "grad_out");
    Q_FAILS(q, tsq_quantizer_backward(q, tx, tx, tc), TSQ_ERR_DTYPE, "grad_in");
    Q_FAILS(q, tsq_learn_codes(q, NULL, tc, NULL, NULL), TSQ_ERR_INVALID, "no x");
    Q_FAILS(pc, tsq_quantizer_observe(pc, tx), TSQ_ERR_SHAPE, "1 dimension(s)");
    Q_FAILS(pc, tsq_quantizer_observe(pc, t42), TSQ_ERR_SHAPE, "2 channels");
    Q_OK(pc, tsq_quantizer_observe(pc, t24));

    /* A code above the top one: nothing decoded. */
    for (i = 0; i < 8; i++)
        codes[i] = (uint8_t)(i % 4);
    codes[6] = 4;
    memset(y, 0, sizeof y);
    Q_FAILS(q, tsq_quantizer_decode(q, tc, ty), TSQ_ERR_INVALID, "code 4 at index 6");
    for (i = 0; i < 8; i++)
        ck_assert(y[i] == 0.0f);
    /* NaN in forward / backward input. */
    x[0] = NAN;
    Q_FAILS(q, tsq_quantizer_forward(q, tx, ty), TSQ_ERR_NOT_FINITE, "x are NaN");
    Q_FAILS(q, tsq_quantizer_backward(q, tx, ty, ty), TSQ_ERR_NOT_FINITE, "x are NaN");
    Q_FAILS(q, tsq_quantizer_encode(q, tx, tc), TSQ_ERR_NOT_FINITE, "1 of 8");
    x[0] = 0.1f;

    /* Resolution is frozen while statistics are held. */
    Q_OK(q, tsq_quantizer_observe(q, tx));
    Q_FAILS(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 5), TSQ_ERR_STATE,
            "reset");
    Q_OK(q, tsq_quantizer_reset(q));
    Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &v));
    ck_assert(v == 0);
    Q_OK(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 5));
    ck_assert_str_eq(tsq_quantizer_errmsg(q), "");

    /* NULL handles and pointers. */
    tsq_quantizer_destroy(NULL);
    ck_assert_str_eq(tsq_quantizer_errmsg(NULL), "no quantizer");
    ck_assert_int_eq(tsq_quantizer_set_option(NULL, 1, 1), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_get_option(NULL, 1, &v), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_get_option(q, 1, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_observe(NULL, tx), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_observe(q, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_fit(NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_reset(NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_set_channel(NULL, 0, 0, 1), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_get_channel(q, 0, NULL, &d), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_encode(NULL, tx, tc), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_encode(q, NULL, tc), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_encode(q, tx, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_forward(q, tx, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_decode(q, NULL, ty), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_quantizer_backward(q, tx, NULL, ty), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_learn_codes(NULL, tx, NULL, NULL, NULL), TSQ_ERR_NULL);
    {
        uint64_t size = 0;
        ck_assert_int_eq(tsq_quantizer_save(NULL, NULL, 0, &size), TSQ_ERR_NULL);
    }
    ck_assert_int_eq(tsq_quantizer_save(q, NULL, 0, NULL), TSQ_ERR_NULL);

    tsq_tensor_destroy(tx);
    tsq_tensor_destroy(ty);
    tsq_tensor_destroy(tc);
    tsq_tensor_destroy(ti8);
    tsq_tensor_destroy(tf);
    tsq_tensor_destroy(tc7);
    tsq_tensor_destroy(t24);
    tsq_tensor_destroy(t42);
    tsq_quantizer_destroy(q);
    tsq_quantizer_destroy(pc);
    th_context_done(ctx, &st);
}
END_TEST

/* Every allocation failure reports TSQ_ERR_NO_MEMORY, leaks nothing and
 * leaves the quantizer as it was. */
START_TEST(test_allocation_failures)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    float x[64];
    int64_t k, baseline = st.live_blocks; /* the context itself */
    th_rng r = {4};
    for (k = 0; k < 64; k++)
        x[k] = (float)th_rng_normal(&r);
    for (k = 1; k < 40; k++) {
        tsq_quantizer *q = NULL;
        tsq_tensor *tx = wrap1(ctx, TSQ_DTYPE_F32, 64, x);
        uint8_t *buf;
        uint64_t size;
        tsq_status s;
        double v;
        st.fail_at = st.total_allocs + k;
        st.fail_every_after = 1;
        s = tsq_quantizer_create(ctx, 2, 0, &q);
        if (s == TSQ_OK) {
            s = tsq_quantizer_observe(q, tx);
            if (s == TSQ_OK)
                s = tsq_quantizer_fit(q);
            else {
                ck_assert_int_eq(s, TSQ_ERR_NO_MEMORY);
                Q_OK(q, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &v));
                ck_assert(v == 0);
            }
            if (s == TSQ_OK)
                s = tsq_learn_codes(q, tx, NULL, NULL, NULL);
            if (s != TSQ_OK)
                ck_assert_int_eq(s, TSQ_ERR_NO_MEMORY);
            Q_OK(q, tsq_quantizer_save(q, NULL, 0, &size));
            buf = malloc((size_t)size);
            Q_OK(q, tsq_quantizer_save(q, buf, size, &size));
            tsq_quantizer_destroy(q);
            q = NULL;
            s = tsq_quantizer_load(ctx, buf, size, &q);
            ck_assert(s == TSQ_OK || s == TSQ_ERR_NO_MEMORY);
            tsq_quantizer_destroy(q);
            free(buf);
        } else {
            ck_assert_int_eq(s, TSQ_ERR_NO_MEMORY);
            ck_assert_ptr_null(q);
        }
        st.fail_at = 0;
        st.fail_every_after = 0;
        tsq_tensor_destroy(tx);
        ck_assert_int_eq(st.live_blocks, baseline);
    }
    th_context_done(ctx, &st);
}
END_TEST

static Suite *quantizer_suite(void)
{
    Suite *s = suite_create("quantizer");
    TCase *tc = tcase_create("quantizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_crc32_known_values);
    tcase_add_test(tc, test_tsq_table);
    tcase_add_test(tc, test_bruteforce_small_discrete);
    tcase_add_test(tc, test_fit_optimal_on_raw_samples);
    tcase_add_test(tc, test_target_sparsity);
    tcase_add_test(tc, test_streaming_matches_one_batch);
    tcase_add_test(tc, test_ste_mask_boundaries);
    tcase_add_test(tc, test_codes_levels_roundtrip);
    tcase_add_test(tc, test_simd_bit_exact);
    tcase_add_test(tc, test_encode_paths_agree);
    tcase_add_test(tc, test_per_channel_scales);
    tcase_add_test(tc, test_defaults_and_bounds);
    tcase_add_test(tc, test_degenerate_data);
    tcase_add_test(tc, test_save_load);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_allocation_failures);
    tcase_add_test(tc, test_fakequant_ste_simd_bit_exact);
    tcase_add_test(tc, test_lsq_prod_simd_bit_exact);
    tcase_add_test(tc, test_formula_at_boundaries);
    tcase_add_test(tc, test_fakequant_threads_agree);
    tcase_add_test(tc, test_null_outputs_and_key_families);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(quantizer_suite()); }
