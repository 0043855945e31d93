/* Special numbers and size arithmetic at every public call that takes data
 * Input classes: NaN, +Inf, -Inf ("non-finite"), the denormal
 * 1e-40f, and the huge finite values FLT_MAX and 1e30. The contexts use a
 * counting allocator that refuses (and records) any request above 256 MiB,
 * so that a size computation gone wrong shows up as a recorded huge request
 * instead of a crash or an exhausted machine.
 *
 * call                          | input class                   | expected (documented) outcome
 * ------------------------------+-------------------------------+--------------------------------------------
 * tensor_wrap / copy_in         | NaN, Inf, denormal in data    | OK: data are not inspected; count_nonfinite counts them
 * tensor_fill                   | NaN, +-Inf                    | NOT_FINITE, data untouched
 * tensor_fill (f32)             | 1e300 (beyond FLT_MAX)        | INVALID, data untouched
 * tensor_fill (f32 / u8)        | 1e-40, FLT_MAX / 1e-40        | OK (exact float) / INVALID (not an integer)
 * tensor_create / wrap          | dims whose product or bytes   | OVERFLOW, no allocation; reshape: OVERFLOW
 *                               | overflow int64                |
 * context_set_option            | INT64_MAX, INT64_MIN          | INVALID
 * quantizer_set_option           | NaN, +-Inf                    | INVALID
 * quantizer_set_channel         | NaN, Inf eps/delta            | NOT_FINITE; denormal delta (1/delta = Inf): INVALID
 * quantizer_observe             | NaN, +-Inf sample             | NOT_FINITE, nothing added (OBSERVED unchanged)
 * quantizer_observe + fit       | denormals, FLT_MAX, 1e30      | OK, eps and delta finite, delta > 0
 * quantizer_encode / forward    | NaN, +-Inf                    | NOT_FINITE, output untouched
 * quantizer_encode              | denormal / FLT_MAX            | code 0 / top code
 * quantizer_backward            | NaN x / NaN grad_out          | NOT_FINITE / NaN passed through (documented)
 * learn_codes                   | NaN, +-Inf                    | NOT_FINITE, parameters and codes untouched
 * learn_codes                   | FLT_MAX, 1e30, denormals      | OK, error/sparsity/eps/delta finite
 * regressor_set_option           | NaN, +-Inf                    | INVALID
 * regressor_set_levels          | NaN, Inf eps/delta            | NOT_FINITE
 * fit_transform                 | NaN/Inf in X, Y, W_init, P    | NOT_FINITE, outputs untouched
 * fit_transform                 | X of 1e30 / denormals         | OK, alpha finite > 0 / NOT_FINITE (alpha overflows float), outputs untouched
 * regressor_begin / feed        | NaN W_init / NaN X            | NOT_FINITE
 * regressor_stats_import        | NaN, Inf                      | NOT_FINITE, nothing changed
 * act_quant_create/set_channel  | NaN, Inf eps/delta            | NOT_FINITE
 * act_quant_create              | denormal delta                | INVALID (1/delta overflows: same rule as quantizer)
 * lowbit_set                    | NaN alpha, Inf bias           | NOT_FINITE, layer unchanged
 * layer_set_option              | NaN, +-Inf                    | INVALID
 * net_set_conversion_option            | NaN, +-Inf                    | INVALID
 * set_optimizer_sgd / adam      | NaN, +-Inf, 1e30 lr/mu/wd/eps | INVALID; denormal lr: OK (in (0, 1e3])
 * set_lr_schedule               | NaN, Inf param                | INVALID
 * set_step_count                | INT64_MAX / 2^62              | INVALID (bound 2^62: updates cannot wrap t) / OK, lr finite
 * net_forward                   | NaN, +-Inf in x               | NOT_FINITE, y untouched
 * net_forward                   | denormal x                    | OK, finite output
 * net_forward                   | FLT_MAX / 1e30 x              | OK, finite outputs on this net (overflowing activations
 *                               |                               | are not checked in general: documented in nn.h)
 * net_forward / loss_backward   | NaN parameter                 | OK, not checked (documented) / NOT_FINITE logits
 * net_backward                  | NaN, Inf dy                   | NOT_FINITE, dx untouched
 * net_train_step                | NaN x / NaN parameter         | NOT_FINITE, parameters unchanged
 * net_train_step                | FLT_MAX / 1e30 x              | OK, or NOT_FINITE with parameters unchanged
 * net_evaluate                  | NaN x / NaN parameter         | NOT_FINITE, predictions untouched
 * net_update                    | NaN gradient                  | NOT_FINITE, nothing updated
 * softmax_cross_entropy         | NaN, +-Inf logits             | NOT_FINITE, nothing written
 * softmax_cross_entropy         | FLT_MAX, 1e30, denormals      | OK, finite loss and gradient
 * thresholds_create             | NaN, Inf alpha/bias/eps/delta | NOT_FINITE
 * plan_run                      | NaN, +-Inf in x               | NOT_FINITE, y untouched
 * plan_run                      | denormal / FLT_MAX x          | OK, finite output
 * sizes: dense/conv/BN/pool/quantizer/net/regressor/positions/workspace/thresholds_apply near
 *        INT64_MAX or with products beyond int64  | INVALID, SHAPE, OVERFLOW or TOO_SMALL; never a crash,
 *                                                   never an allocation request above 256 MiB.
 */
#define TSQ_EXPERIMENTAL 1 /* the kernel-level calls */
#include "nn_testutil.h"
#include "tsq/experimental.h"

#include <float.h>
#include <stdio.h>

#define BIG_LIMIT ((uint64_t)256 << 20)

/* The harness's allocator, refusing (and counting) any request above
 * BIG_LIMIT; th_context_done asserts there was none and nothing leaked. */
typedef th_alloc_stats guard_stats;

static tsq_context *gctx(guard_stats *g)
{
    tsq_context *ctx = th_context(g);
    g->refuse_above = BIG_LIMIT;
    return ctx;
}

static void gdone(tsq_context *ctx, guard_stats *g)
{
    th_context_done(ctx, g);
}

/* A status and a non-empty message (containing `sub` unless it is ""). */
#define EXPECT(expr, want, msg, sub)                                                  \
    do {                                                                              \
        tsq_status s_ = (expr);                                                       \
        const char *m_ = (msg);                                                       \
        ck_assert_msg(s_ == (want), "%s -> %s, expected %s (%s)", #expr,              \
                      tsq_status_string(s_), tsq_status_string(want), m_);            \
        if ((want) != TSQ_OK && (want) != TSQ_ERR_NULL) {                             \
            ck_assert_msg(m_ && m_[0], "%s: empty message", #expr);                   \
            ck_assert_msg(strstr(m_, (sub)) != NULL, "%s: message \"%s\" lacks \"%s\"", \
                          #expr, m_, (sub));                                          \
        }                                                                             \
    } while (0)

static const float nonfinite[3] = {NAN, INFINITY, -INFINITY};
static const char *const nf_name[3] = {"NaN", "+Inf", "-Inf"};
#define DENORMAL 1e-40f

static tsq_tensor *f32(tsq_context *ctx, int32_t ndim, int64_t d0, int64_t d1, int64_t d2,
                       int64_t d3)
{
    return nt_tensor(ctx, ndim, d0, d1, d2, d3);
}

static tsq_tensor *u8(tsq_context *ctx, int32_t ndim, const int64_t *shape)
{
    tsq_tensor *t = NULL;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, ndim, shape, &t));
    return t;
}

static void fill(tsq_tensor *t, float v)
{
    float *d = nt_data(t);
    int64_t i, n = nt_numel(t);
    for (i = 0; i < n; i++)
        d[i] = v;
}

static int all_finite(const float *x, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static int all_equal(const float *x, int64_t n, float v)
{
    int64_t i;
    for (i = 0; i < n; i++)
        if (memcmp(&x[i], &v, sizeof v) != 0)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Tensors and the context                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_tensor_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    float data[6] = {NAN, INFINITY, -INFINITY, DENORMAL, FLT_MAX, 1e30f};
    const int64_t shape[1] = {6};
    tsq_tensor *t = NULL, *c = NULL;
    int64_t count = -1;
    int i;
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, shape, data, sizeof data, &t));
    TH_OK(ctx, tsq_tensor_count_nonfinite(t, &count));
    ck_assert_int_eq(count, 3);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, shape, &c));
    TH_OK(ctx, tsq_tensor_copy_in(c, data, sizeof data));
    TH_OK(ctx, tsq_tensor_count_nonfinite(c, &count));
    ck_assert_int_eq(count, 3);
    for (i = 0; i < 3; i++) {
        EXPECT(tsq_tensor_fill(c, (double)nonfinite[i]), TSQ_ERR_NOT_FINITE, tsq_tensor_errmsg(c),
               "not finite");
        ck_assert(memcmp(nt_data(c), data, sizeof data) == 0);
    }
    EXPECT(tsq_tensor_fill(c, 1e300), TSQ_ERR_INVALID, tsq_tensor_errmsg(c), "overflows float");
    ck_assert(memcmp(nt_data(c), data, sizeof data) == 0);
    TH_OK(ctx, tsq_tensor_fill(c, 1e-40));
    ck_assert(all_equal(nt_data(c), 6, DENORMAL));
    TH_OK(ctx, tsq_tensor_fill(c, FLT_MAX));
    ck_assert(all_equal(nt_data(c), 6, FLT_MAX));
    {
        tsq_tensor *b = u8(ctx, 1, shape);
        EXPECT(tsq_tensor_fill(b, 1e-40), TSQ_ERR_INVALID, tsq_tensor_errmsg(b), "integer");
        EXPECT(tsq_tensor_fill(b, NAN), TSQ_ERR_NOT_FINITE, tsq_tensor_errmsg(b), "");
        tsq_tensor_destroy(b);
    }
    tsq_tensor_destroy(t);
    tsq_tensor_destroy(c);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_tensor_sizes)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    const int64_t big2[2] = {INT64_C(1) << 32, INT64_C(1) << 32};
    const int64_t max1[1] = {INT64_MAX};
    const int64_t half[1] = {INT64_MAX / 2};
    const int64_t quarter4[4] = {INT64_C(1) << 16, INT64_C(1) << 16, INT64_C(1) << 16,
                                 INT64_C(1) << 14};
    const int64_t max2[2] = {INT64_MAX, 2};
    uint8_t buf[64];
    tsq_tensor *t = (tsq_tensor *)0x1;
    int32_t dt;
    for (dt = TSQ_DTYPE_F32; dt <= TSQ_DTYPE_I8; dt++) {
        EXPECT(tsq_tensor_create(ctx, dt, 2, big2, &t), TSQ_ERR_OVERFLOW, tsq_context_errmsg(ctx),
               "overflow");
        ck_assert_ptr_null(t);
        EXPECT(tsq_tensor_create(ctx, dt, 2, max2, &t), TSQ_ERR_OVERFLOW, tsq_context_errmsg(ctx),
               "overflow");
        EXPECT(tsq_tensor_wrap(ctx, dt, 2, big2, buf, sizeof buf, &t), TSQ_ERR_OVERFLOW,
               tsq_context_errmsg(ctx), "overflow");
    }
    /* The element count fits, the byte count does not. */
    EXPECT(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, half, &t), TSQ_ERR_OVERFLOW,
           tsq_context_errmsg(ctx), "byte size");
    EXPECT(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 4, quarter4, &t), TSQ_ERR_OVERFLOW,
           tsq_context_errmsg(ctx), "byte size");
    /* A u8 tensor of INT64_MAX bytes is a valid request the allocator
     * refuses; wrapping it needs the caller's bytes first. */
    EXPECT(tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 1, max1, buf, sizeof buf, &t), TSQ_ERR_TOO_SMALL,
           tsq_context_errmsg(ctx), "");
    ck_assert_int_eq(g.refused_big, 0);
    {
        const int64_t s1[1] = {4};
        tsq_tensor *r = f32(ctx, 1, 4, 0, 0, 0);
        EXPECT(tsq_tensor_reshape(r, 2, big2), TSQ_ERR_OVERFLOW, tsq_tensor_errmsg(r), "");
        EXPECT(tsq_tensor_reshape(r, 2, max2), TSQ_ERR_OVERFLOW, tsq_tensor_errmsg(r), "");
        TH_OK(ctx, tsq_tensor_reshape(r, 1, s1));
        tsq_tensor_destroy(r);
    }
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_context_options)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    double v;
    EXPECT(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, (double)INT64_MAX), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "outside");
    EXPECT(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, DBL_MAX), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "outside");
    EXPECT(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, INT64_MIN), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "outside");
    EXPECT(tsq_context_set_option(ctx, TSQ_CONTEXT_LOG_LEVEL, INT64_MIN), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "outside");
    TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, &v));
    ck_assert_int_eq(v, 1);
    gdone(ctx, &g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Quantizer                                                           */
/* ------------------------------------------------------------------ */

START_TEST(test_quantizer_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    const int64_t shape[2] = {4, 8};
    tsq_quantizer *q = NULL;
    tsq_tensor *x = f32(ctx, 2, 4, 8, 0, 0), *y = f32(ctx, 2, 4, 8, 0, 0), *codes = u8(ctx, 2, shape);
    th_rng r = {3};
    double obs0, obs1, err, sp;
    float eps0, delta0, eps, delta;
    uint8_t *cd = NULL;
    int i, k;
    TH_OK(ctx, tsq_quantizer_create(ctx, 2, 0, &q));
    for (i = 0; i < 3; i++) {
        EXPECT(tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, (double)nonfinite[i]),
               TSQ_ERR_INVALID, tsq_quantizer_errmsg(q), "");
        EXPECT(tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, (double)nonfinite[i]),
               TSQ_ERR_INVALID, tsq_quantizer_errmsg(q), "");
        EXPECT(tsq_quantizer_set_option(q, TSQ_QUANTIZER_BITS, (double)nonfinite[i]),
               TSQ_ERR_INVALID, tsq_quantizer_errmsg(q), "");
        EXPECT(tsq_quantizer_set_channel(q, 0, nonfinite[i], 1.0f), TSQ_ERR_NOT_FINITE,
               tsq_quantizer_errmsg(q), "");
        EXPECT(tsq_quantizer_set_channel(q, 0, 0.5f, nonfinite[i]), TSQ_ERR_NOT_FINITE,
               tsq_quantizer_errmsg(q), "");
    }
    EXPECT(tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, 1e39), TSQ_ERR_INVALID,
           tsq_quantizer_errmsg(q), "");
    EXPECT(tsq_quantizer_set_channel(q, 0, 0.0f, DENORMAL), TSQ_ERR_INVALID,
           tsq_quantizer_errmsg(q), "");
    EXPECT(tsq_quantizer_set_channel(q, 0, 0.0f, FLT_MAX), TSQ_ERR_INVALID,
           tsq_quantizer_errmsg(q), ""); /* 3 * FLT_MAX overflows */
    TH_OK(ctx, tsq_quantizer_set_channel(q, 0, DENORMAL, 0.5f));
    /* Observation: a non-finite sample adds nothing. */
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_quantizer_observe(q, x));
    TH_OK(ctx, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &obs0));
    ck_assert(obs0 == 32);
    for (i = 0; i < 3; i++) {
        nt_data(x)[17] = nonfinite[i];
        EXPECT(tsq_quantizer_observe(q, x), TSQ_ERR_NOT_FINITE, tsq_quantizer_errmsg(q), "");
        TH_OK(ctx, tsq_quantizer_get_option(q, TSQ_QUANTIZER_OBSERVED, &obs1));
        ck_assert(obs1 == obs0);
        /* encode / forward / backward / learn_codes refuse it, outputs untouched */
        TH_OK(ctx, tsq_tensor_data(codes, (void **)&cd));
        memset(cd, 0x77, 32);
        EXPECT(tsq_quantizer_encode(q, x, codes), TSQ_ERR_NOT_FINITE, tsq_quantizer_errmsg(q), "");
        for (k = 0; k < 32; k++)
            ck_assert_int_eq(cd[k], 0x77);
        fill(y, 7.0f);
        EXPECT(tsq_quantizer_forward(q, x, y), TSQ_ERR_NOT_FINITE, tsq_quantizer_errmsg(q), "");
        ck_assert(all_equal(nt_data(y), 32, 7.0f));
        EXPECT(tsq_quantizer_backward(q, x, y, y), TSQ_ERR_NOT_FINITE, tsq_quantizer_errmsg(q), "");
        ck_assert(all_equal(nt_data(y), 32, 7.0f));
        TH_OK(ctx, tsq_quantizer_get_channel(q, 0, &eps0, &delta0));
        EXPECT(tsq_learn_codes(q, x, codes, &err, &sp), TSQ_ERR_NOT_FINITE,
               tsq_quantizer_errmsg(q), "");
        TH_OK(ctx, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert(eps == eps0 && delta == delta0);
        for (k = 0; k < 32; k++)
            ck_assert_int_eq(cd[k], 0x77);
        nt_data(x)[17] = 0.5f;
    }
    /* grad_out NaN is passed through as documented. */
    fill(y, NAN);
    TH_OK(ctx, tsq_quantizer_backward(q, x, y, y));
    /* Denormal and huge samples: accepted, the fit stays finite. */
    for (i = 0; i < 3; i++) {
        const float v[3] = {DENORMAL, FLT_MAX, 1e30f};
        nt_fill_normal(x, &r, 1.0);
        for (k = 0; k < 8; k++)
            nt_data(x)[k * 4] = v[i];
        TH_OK(ctx, tsq_quantizer_observe(q, x));
        TH_OK(ctx, tsq_quantizer_fit(q));
        TH_OK(ctx, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert_msg(isfinite(eps) && isfinite(delta) && delta > 0, "fit with %g: eps %g delta %g",
                      (double)v[i], (double)eps, (double)delta);
        TH_OK(ctx, tsq_learn_codes(q, x, codes, &err, &sp));
        TH_OK(ctx, tsq_quantizer_get_channel(q, 0, &eps, &delta));
        ck_assert_msg(isfinite(err) && isfinite(sp) && isfinite(eps) && isfinite(delta) &&
                          delta > 0 && isfinite(1.0f / delta),
                      "learn_codes with %g: error %g sparsity %g eps %g delta %g", (double)v[i],
                      err, sp, (double)eps, (double)delta);
        TH_OK(ctx, tsq_quantizer_forward(q, x, y));
        ck_assert(all_finite(nt_data(y), 32));
    }
    /* Encoding a denormal gives 0, FLT_MAX the top code. */
    TH_OK(ctx, tsq_quantizer_set_channel(q, 0, 0.25f, 0.5f));
    fill(x, DENORMAL);
    nt_data(x)[1] = FLT_MAX;
    TH_OK(ctx, tsq_quantizer_encode(q, x, codes));
    ck_assert_int_eq(cd[0], 0);
    ck_assert_int_eq(cd[1], 3);
    tsq_quantizer_destroy(q);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(codes);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_quantizer_sizes)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_quantizer *q = NULL;
    EXPECT(tsq_quantizer_create(ctx, 2, INT64_MAX, &q), TSQ_ERR_INVALID, tsq_context_errmsg(ctx),
           "");
    EXPECT(tsq_quantizer_create(ctx, 2, INT64_C(1) << 31, &q), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    EXPECT(tsq_quantizer_create(ctx, 2, -1, &q), TSQ_ERR_INVALID, tsq_context_errmsg(ctx), "");
    TH_OK(ctx, tsq_quantizer_create(ctx, 2, 3, &q));
    EXPECT(tsq_quantizer_set_channel(q, INT64_MAX, 0.1f, 1.0f), TSQ_ERR_INVALID,
           tsq_quantizer_errmsg(q), "");
    EXPECT(tsq_quantizer_set_channel(q, INT64_MIN, 0.1f, 1.0f), TSQ_ERR_INVALID,
           tsq_quantizer_errmsg(q), "");
    tsq_quantizer_destroy(q);
    gdone(ctx, &g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Regressor                                                           */
/* ------------------------------------------------------------------ */

#define RN 64
#define RD 6
#define RC 3

typedef struct {
    tsq_tensor *X, *Y, *W, *alpha, *b;
} rdata;

static void rdata_make(tsq_context *ctx, rdata *d, th_rng *r)
{
    const int64_t ys[2] = {RN, RC}, ws[2] = {RD, RC};
    uint8_t *y;
    int64_t i;
    d->X = f32(ctx, 2, RN, RD, 0, 0);
    nt_fill_normal(d->X, r, 1.0);
    d->Y = u8(ctx, 2, ys);
    TH_OK(ctx, tsq_tensor_data(d->Y, (void **)&y));
    for (i = 0; i < RN * RC; i++)
        y[i] = (uint8_t)(th_rng_next(r) % 4);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, ws, &d->W));
    d->alpha = f32(ctx, 1, RC, 0, 0, 0);
    d->b = f32(ctx, 1, RC, 0, 0, 0);
}

static void rdata_free(rdata *d)
{
    tsq_tensor_destroy(d->X);
    tsq_tensor_destroy(d->Y);
    tsq_tensor_destroy(d->W);
    tsq_tensor_destroy(d->alpha);
    tsq_tensor_destroy(d->b);
}

static void outputs_poison(rdata *d)
{
    void *w;
    TH_OK(NULL, tsq_tensor_data(d->W, &w));
    memset(w, 0x55, RD * RC);
    fill(d->alpha, 7.0f);
    fill(d->b, 7.0f);
}

static void outputs_untouched(rdata *d)
{
    int8_t *w;
    int i;
    TH_OK(NULL, tsq_tensor_data(d->W, (void **)&w));
    for (i = 0; i < RD * RC; i++)
        ck_assert_int_eq(w[i], 0x55);
    ck_assert(all_equal(nt_data(d->alpha), RC, 7.0f) && all_equal(nt_data(d->b), RC, 7.0f));
}

START_TEST(test_regressor_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_regressor *reg = NULL;
    rdata d;
    th_rng r = {9};
    tsq_tensor *Wi = f32(ctx, 2, RD, RC, 0, 0), *P = f32(ctx, 2, RN, RC, 0, 0),
               *Yf = f32(ctx, 2, RN, RC, 0, 0);
    double obj, lo, hi, stats[512];
    int64_t count = 0;
    int32_t done = 0;
    int i, key;
    rdata_make(ctx, &d, &r);
    nt_fill_normal(Wi, &r, 0.5);
    nt_fill_normal(P, &r, 1.0);
    TH_OK(ctx, tsq_regressor_create(ctx, &reg));
    for (i = 0; i < 3; i++) {
        for (key = TSQ_REGRESSOR_WEIGHT_BITS; key <= TSQ_REGRESSOR_MARGIN; key++)
            EXPECT(tsq_regressor_set_option(reg, key, (double)nonfinite[i]), TSQ_ERR_INVALID,
                   tsq_regressor_errmsg(reg), "");
        EXPECT(tsq_regressor_set_levels(reg, 2, nonfinite[i], 1.0f), TSQ_ERR_NOT_FINITE,
               tsq_regressor_errmsg(reg), "");
        EXPECT(tsq_regressor_set_levels(reg, 2, 0.5f, nonfinite[i]), TSQ_ERR_NOT_FINITE,
               tsq_regressor_errmsg(reg), "");
    }
    TH_OK(ctx, tsq_regressor_option_bounds(TSQ_REGRESSOR_LAMBDA0, &lo, &hi));
    EXPECT(tsq_regressor_set_option(reg, TSQ_REGRESSOR_LAMBDA0, 1e30), TSQ_ERR_INVALID,
           tsq_regressor_errmsg(reg), "");
    EXPECT(tsq_regressor_set_levels(reg, 2, 0.0f, DENORMAL), TSQ_ERR_INVALID,
           tsq_regressor_errmsg(reg), "");
    TH_OK(ctx, tsq_regressor_set_levels(reg, 2, 0.5f, 1.0f));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, 2));
    /* Non-finite X, W_init, P, f32 Y: refused, outputs untouched. */
    for (i = 0; i < 3; i++) {
        outputs_poison(&d);
        nt_data(d.X)[5] = nonfinite[i];
        EXPECT(tsq_fit_transform(reg, d.X, d.Y, NULL, NULL, d.W, d.alpha, d.b, &obj),
               TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg), "");
        nt_data(d.X)[5] = 0.25f;
        nt_data(Wi)[2] = nonfinite[i];
        EXPECT(tsq_fit_transform(reg, d.X, d.Y, Wi, NULL, d.W, d.alpha, d.b, &obj),
               TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg), "");
        EXPECT(tsq_regressor_begin(reg, RD, RC, Wi, 0), TSQ_ERR_NOT_FINITE,
               tsq_regressor_errmsg(reg), "");
        nt_data(Wi)[2] = 0.1f;
        nt_data(P)[7] = nonfinite[i];
        EXPECT(tsq_fit_transform(reg, d.X, d.Y, NULL, P, d.W, d.alpha, d.b, &obj),
               TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg), "");
        nt_data(P)[7] = 0.1f;
        fill(Yf, 1.0f);
        nt_data(Yf)[3] = nonfinite[i];
        EXPECT(tsq_fit_transform(reg, d.X, Yf, NULL, NULL, d.W, d.alpha, d.b, &obj),
               TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg), "");
        outputs_untouched(&d);
    }
    /* Streamed: a NaN batch is refused whole; a NaN stats array too. */
    TH_OK(ctx, tsq_regressor_begin(reg, RD, RC, NULL, 0));
    nt_data(d.X)[0] = NAN;
    EXPECT(tsq_regressor_feed(reg, d.X, d.Y, NULL), TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg),
           "");
    nt_data(d.X)[0] = 0.5f;
    TH_OK(ctx, tsq_regressor_feed(reg, d.X, d.Y, NULL));
    TH_OK(ctx, tsq_regressor_stats_size(reg, &count));
    ck_assert(count > 0 && count <= 512);
    TH_OK(ctx, tsq_regressor_stats_export(reg, stats, count));
    for (i = 0; i < 3; i++) {
        double keep = stats[1];
        stats[1] = (double)nonfinite[i];
        EXPECT(tsq_regressor_stats_import(reg, stats, count, TSQ_STATS_ADD), TSQ_ERR_NOT_FINITE,
               tsq_regressor_errmsg(reg), "");
        EXPECT(tsq_regressor_stats_import(reg, stats, count, TSQ_STATS_REPLACE),
               TSQ_ERR_NOT_FINITE, tsq_regressor_errmsg(reg), "");
        stats[1] = keep;
    }
    EXPECT(tsq_regressor_stats_export(reg, stats, INT64_MAX), TSQ_ERR_TOO_SMALL,
           tsq_regressor_errmsg(reg), "");
    while (!done) {
        TH_OK(ctx, tsq_regressor_end_pass(reg, &done));
        if (!done)
            TH_OK(ctx, tsq_regressor_feed(reg, d.X, d.Y, NULL));
    }
    /* Huge and denormal X: accepted, finite results. */
    fill(d.X, 1e30f);
    for (i = 0; i < RN; i++)
        nt_data(d.X)[i * RD + i % RD] = -1e30f;
    TH_OK(ctx, tsq_fit_transform(reg, d.X, d.Y, NULL, NULL, d.W, d.alpha, d.b, &obj));
    ck_assert_msg(all_finite(nt_data(d.alpha), RC) && all_finite(nt_data(d.b), RC) && isfinite(obj),
                  "X of 1e30: objective %g alpha %g %g %g b %g %g %g", obj,
                  (double)nt_data(d.alpha)[0], (double)nt_data(d.alpha)[1],
                  (double)nt_data(d.alpha)[2], (double)nt_data(d.b)[0], (double)nt_data(d.b)[1],
                  (double)nt_data(d.b)[2]);
    for (i = 0; i < RC; i++)
        ck_assert(nt_data(d.alpha)[i] > 0);
    nt_fill_normal(d.X, &r, 1e-40);
    {
        tsq_status st;
        outputs_poison(&d);
        st = tsq_fit_transform(reg, d.X, d.Y, NULL, NULL, d.W, d.alpha, d.b, &obj);
        /* alpha ~ 1/|X| overflows float: refused (fixed: it was +Inf). */
        ck_assert_msg(st == TSQ_OK || st == TSQ_ERR_NOT_FINITE, "denormal X: %s (%s)",
                      tsq_status_string(st), tsq_regressor_errmsg(reg));
        if (st == TSQ_ERR_NOT_FINITE) {
            ck_assert_ptr_nonnull(strstr(tsq_regressor_errmsg(reg), "overflows float"));
            outputs_untouched(&d);
        } else
            ck_assert_msg(all_finite(nt_data(d.alpha), RC) && all_finite(nt_data(d.b), RC) &&
                              isfinite(obj),
                          "denormal X: objective %g alpha %g %g %g b %g %g %g", obj,
                          (double)nt_data(d.alpha)[0], (double)nt_data(d.alpha)[1],
                          (double)nt_data(d.alpha)[2], (double)nt_data(d.b)[0],
                          (double)nt_data(d.b)[1], (double)nt_data(d.b)[2]);
    }
    tsq_regressor_destroy(reg);
    rdata_free(&d);
    tsq_tensor_destroy(Wi);
    tsq_tensor_destroy(P);
    tsq_tensor_destroy(Yf);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_regressor_sizes)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_regressor *reg = NULL;
    int64_t pos[4];
    TH_OK(ctx, tsq_regressor_create(ctx, &reg));
    TH_OK(ctx, tsq_regressor_set_levels(reg, 2, 0.5f, 1.0f));
    {
        tsq_status st = tsq_regressor_begin(reg, INT64_MAX, INT64_MAX, NULL, 0);
        ck_assert_msg(st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_SHAPE, "begin(INT64_MAX): %s (%s)",
                      tsq_status_string(st), tsq_regressor_errmsg(reg));
        st = tsq_regressor_begin(reg, INT64_C(1) << 31, INT64_C(1) << 31, NULL, 0);
        ck_assert_msg(st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_SHAPE || st == TSQ_ERR_NO_MEMORY,
                      "begin(2^31): %s (%s)", tsq_status_string(st), tsq_regressor_errmsg(reg));
        st = tsq_regressor_begin(reg, INT64_C(1) << 40, 1, NULL, 0);
        ck_assert_msg(st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_SHAPE || st == TSQ_ERR_NO_MEMORY,
                      "begin(2^40, 1): %s (%s)", tsq_status_string(st), tsq_regressor_errmsg(reg));
    }
    EXPECT(tsq_regressor_im2col_sample_positions(ctx, INT64_MAX, 10, 5, pos), TSQ_ERR_OVERFLOW,
           tsq_context_errmsg(ctx), "");
    EXPECT(tsq_regressor_im2col_sample_positions(ctx, INT64_C(1) << 32, INT64_C(1) << 33,
                                       INT64_C(1) << 32, pos),
           TSQ_ERR_OVERFLOW, tsq_context_errmsg(ctx), "");
    tsq_regressor_destroy(reg);
    gdone(ctx, &g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Layers and nets                                                     */
/* ------------------------------------------------------------------ */

/* input 1x4x4: conv 1->2 3x3 pad 1, BN, ReLU, flatten, dense 32->3 */
static tsq_net *small_net(tsq_context *ctx)
{
    const int64_t in[3] = {1, 4, 4};
    tsq_layer *L[6] = {NULL};
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 2, &L[1]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[2]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[3]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 32, 3, &L[4]));
    return nt_net(ctx, 3, in, L);
}

static int64_t params_copy(tsq_net *net, float *buf)
{
    int32_t np = 0, i;
    int64_t total = 0;
    TH_OK(NULL, tsq_net_param_count(net, &np));
    for (i = 0; i < np; i++) {
        tsq_tensor *v = NULL;
        TH_OK(NULL, tsq_net_param(net, i, &v, NULL, NULL, NULL));
        if (buf)
            memcpy(buf + total, nt_data(v), (size_t)nt_numel(v) * sizeof(float));
        total += nt_numel(v);
    }
    return total;
}

START_TEST(test_net_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_net *net = small_net(ctx);
    tsq_tensor *x = f32(ctx, 4, 4, 1, 4, 4), *y = f32(ctx, 2, 4, 3, 0, 0),
               *dy = f32(ctx, 2, 4, 3, 0, 0), *dx = f32(ctx, 4, 4, 1, 4, 4);
    const int32_t labels[4] = {0, 1, 2, 0};
    int32_t pred[4];
    float before[256], after[256];
    int64_t np = params_copy(net, NULL), correct;
    double loss;
    th_rng r = {5};
    int i, s;
    ck_assert(np <= 256);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.01, 0.9, 0, 0));
    nt_fill_normal(x, &r, 1.0);
    TH_OK(ctx, tsq_net_forward(net, x, y, 1));
    for (i = 0; i < 3; i++) {
        /* non-finite input */
        nt_data(x)[9] = nonfinite[i];
        fill(y, 7.0f);
        EXPECT(tsq_net_forward(net, x, y, 0), TSQ_ERR_NOT_FINITE, tsq_net_errmsg(net), "");
        ck_assert(all_equal(nt_data(y), 12, 7.0f));
        params_copy(net, before);
        EXPECT(tsq_net_train_step(net, x, labels, 4, &loss, NULL), TSQ_ERR_NOT_FINITE,
               tsq_net_errmsg(net), "");
        params_copy(net, after);
        ck_assert(memcmp(before, after, (size_t)np * sizeof(float)) == 0);
        for (s = 0; s < 4; s++)
            pred[s] = -7;
        EXPECT(tsq_net_evaluate(net, x, labels, 4, &loss, &correct, pred), TSQ_ERR_NOT_FINITE,
               tsq_net_errmsg(net), "");
        ck_assert(pred[0] == -7 && pred[3] == -7);
        nt_data(x)[9] = 0.3f;
        /* non-finite dy */
        TH_OK(ctx, tsq_net_forward(net, x, y, 1));
        nt_fill_normal(dy, &r, 1.0);
        nt_data(dy)[4] = nonfinite[i];
        fill(dx, 7.0f);
        EXPECT(tsq_net_backward(net, dy, dx), TSQ_ERR_NOT_FINITE, tsq_net_errmsg(net), "");
        ck_assert(all_equal(nt_data(dx), 64, 7.0f));
    }
    /* Denormal input: finite outputs and a finite training step. */
    fill(x, DENORMAL);
    TH_OK(ctx, tsq_net_forward(net, x, y, 0));
    ck_assert(all_finite(nt_data(y), 12));
    TH_OK(ctx, tsq_net_train_step(net, x, labels, 4, &loss, NULL));
    ck_assert(isfinite(loss));
    /* Huge input: forward either succeeds with finite outputs or refuses;
     * a train step either succeeds finitely or refuses with the parameters
     * unchanged. */
    for (i = 0; i < 2; i++) {
        const float v = i == 0 ? FLT_MAX : 1e30f;
        tsq_status st;
        nt_fill_normal(x, &r, 1.0);
        nt_data(x)[0] = v;
        nt_data(x)[20] = -v;
        fill(y, 7.0f);
        st = tsq_net_forward(net, x, y, 0);
        ck_assert_msg(st == TSQ_OK || st == TSQ_ERR_NOT_FINITE, "forward(%g): %s", (double)v,
                      tsq_status_string(st));
        if (st == TSQ_OK)
            ck_assert_msg(all_finite(nt_data(y), 12), "forward(%g) gave a non-finite output",
                          (double)v);
        else
            ck_assert(all_equal(nt_data(y), 12, 7.0f) && tsq_net_errmsg(net)[0]);
        params_copy(net, before);
        st = tsq_net_train_step(net, x, labels, 4, &loss, NULL);
        ck_assert_msg(st == TSQ_OK || st == TSQ_ERR_NOT_FINITE, "train_step(%g): %s", (double)v,
                      tsq_status_string(st));
        params_copy(net, after);
        if (st == TSQ_OK)
            ck_assert_msg(isfinite(loss) && all_finite(after, np), "train_step(%g): loss %g",
                          (double)v, loss);
        else
            ck_assert(memcmp(before, after, (size_t)np * sizeof(float)) == 0);
    }
    /* A NaN written into a parameter (the "set params" path). */
    {
        tsq_tensor *w = NULL, *gr = NULL;
        float keep;
        TH_OK(ctx, tsq_net_param(net, 0, &w, &gr, NULL, NULL));
        nt_fill_normal(x, &r, 1.0);
        keep = nt_data(w)[1];
        nt_data(w)[1] = NAN;
        params_copy(net, before);
        EXPECT(tsq_net_train_step(net, x, labels, 4, &loss, NULL), TSQ_ERR_NOT_FINITE,
               tsq_net_errmsg(net), "");
        params_copy(net, after);
        ck_assert(memcmp(before, after, (size_t)np * sizeof(float)) == 0);
        for (s = 0; s < 4; s++)
            pred[s] = -7;
        {
            tsq_status st = tsq_net_evaluate(net, x, labels, 4, &loss, &correct, pred);
            ck_assert_msg(st == TSQ_ERR_NOT_FINITE, "evaluate with a NaN weight: %s",
                          tsq_status_string(st));
            ck_assert(pred[0] == -7);
        }
        /* tsq_net_forward does not check the parameters (documented):
         * here the ReLU turns the NaN pre-activations into zeros, so the
         * logits are finite garbage; a NaN in the last layer reaches the
         * logits, which loss_backward refuses. */
        TH_OK(ctx, tsq_net_forward(net, x, y, 0));
        nt_data(w)[1] = keep;
        {
            tsq_tensor *wl = NULL;
            int32_t npar = 0;
            TH_OK(ctx, tsq_net_param_count(net, &npar));
            TH_OK(ctx, tsq_net_param(net, npar - 2, &wl, NULL, NULL, NULL)); /* dense weight */
            keep = nt_data(wl)[0];
            nt_data(wl)[0] = NAN;
            TH_OK(ctx, tsq_net_forward(net, x, y, 1));
            ck_assert(!all_finite(nt_data(y), 12));
            EXPECT(tsq_net_loss_backward(net, labels, 4, &loss, NULL), TSQ_ERR_NOT_FINITE,
                   tsq_net_errmsg(net), "");
            nt_data(wl)[0] = keep;
            keep = nt_data(w)[1];
        }
        nt_data(w)[1] = keep;
        /* NaN gradient: update refuses, nothing changes. */
        TH_OK(ctx, tsq_net_forward(net, x, y, 1));
        TH_OK(ctx, tsq_net_loss_backward(net, labels, 4, &loss, NULL));
        nt_data(gr)[0] = NAN;
        params_copy(net, before);
        EXPECT(tsq_net_update(net), TSQ_ERR_NOT_FINITE, tsq_net_errmsg(net), "");
        params_copy(net, after);
        ck_assert(memcmp(before, after, (size_t)np * sizeof(float)) == 0);
    }
    tsq_net_destroy(net);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_tensor_destroy(dx);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_net_options)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_net *net = small_net(ctx);
    tsq_layer *bn = NULL;
    double lr;
    int i, key;
    TH_OK(ctx, tsq_net_layer(net, 1, &bn));
    for (i = 0; i < 3; i++) {
        double v = (double)nonfinite[i];
        for (key = TSQ_LAYER_OPT_TRAINABLE; key <= TSQ_LAYER_OPT_TSQ_SELECT; key++)
            ck_assert_int_eq(tsq_layer_set_option(bn, key, v), TSQ_ERR_INVALID);
        for (key = TSQ_NET_TSQ_ACT_BITS; key <= TSQ_NET_TSQ_POSITIONS; key++)
            EXPECT(tsq_net_set_conversion_option(net, key, v), TSQ_ERR_INVALID, tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_sgd(net, v, 0.9, 0, 0), TSQ_ERR_INVALID, tsq_net_errmsg(net),
               "");
        EXPECT(tsq_net_set_optimizer_sgd(net, 0.1, v, 0, 0), TSQ_ERR_INVALID, tsq_net_errmsg(net),
               "");
        EXPECT(tsq_net_set_optimizer_sgd(net, 0.1, 0.9, 0, v), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_adam(net, v, 0.9, 0.999, 1e-8, 0), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_adam(net, 0.1, v, 0.999, 1e-8, 0), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_adam(net, 0.1, 0.9, v, 1e-8, 0), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_adam(net, 0.1, 0.9, 0.999, v, 0), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_optimizer_adam(net, 0.1, 0.9, 0.999, 1e-8, v), TSQ_ERR_INVALID,
               tsq_net_errmsg(net), "");
    }
    EXPECT(tsq_net_set_optimizer_sgd(net, 1e30, 0.9, 0, 0), TSQ_ERR_INVALID, tsq_net_errmsg(net),
           "");
    /* A denormal learning rate is inside (0, 1e3]. */
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 1e-40, 0.0, 0, 0));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert(lr == 1e-40);
    TH_OK(ctx, tsq_net_set_optimizer_sgd(net, 0.1, 0.9, 0, 0));
    for (i = 0; i < 3; i++) {
        EXPECT(tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 10, (double)nonfinite[i]),
               TSQ_ERR_INVALID, tsq_net_errmsg(net), "");
        EXPECT(tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, 10, (double)nonfinite[i]),
               TSQ_ERR_INVALID, tsq_net_errmsg(net), "");
    }
    EXPECT(tsq_net_set_lr_schedule(net, TSQ_LR_STEP, INT64_MAX, 1e-300), TSQ_OK,
           tsq_net_errmsg(net), "");
    /* Step counters at the end of int64: the schedules stay finite, and an
     * update refuses to wrap the counter. */
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, INT64_MAX, 0.01));
    EXPECT(tsq_net_set_step_count(net, INT64_MAX), TSQ_ERR_INVALID, tsq_net_errmsg(net),
           "outside");
    TH_OK(ctx, tsq_net_set_step_count(net, INT64_C(1) << 62));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert_msg(isfinite(lr) && lr >= 0.01 - 1e-12 && lr <= 0.1, "lr %g at t = 2^62", lr);
    TH_OK(ctx, tsq_net_set_lr_schedule(net, TSQ_LR_STEP, 1, 0.5));
    TH_OK(ctx, tsq_net_get_lr(net, &lr));
    ck_assert_msg(isfinite(lr) && lr >= 0, "lr %g", lr);
    {
        tsq_tensor *x = f32(ctx, 4, 2, 1, 4, 4), *y = f32(ctx, 2, 2, 3, 0, 0);
        const int32_t labels[2] = {0, 1};
        int64_t t;
        th_rng r = {1};
        nt_fill_normal(x, &r, 1.0);
        TH_OK(ctx, tsq_net_forward(net, x, y, 1));
        TH_OK(ctx, tsq_net_loss_backward(net, labels, 2, NULL, NULL));
        TH_OK(ctx, tsq_net_update(net));
        TH_OK(ctx, tsq_net_train_step(net, x, labels, 2, NULL, NULL));
        TH_OK(ctx, tsq_net_step_count(net, &t));
        ck_assert(t == (INT64_C(1) << 62) + 2);
        TH_OK(ctx, tsq_net_get_lr(net, &lr));
        ck_assert_msg(isfinite(lr) && lr >= 0, "lr %g", lr);
        tsq_tensor_destroy(x);
        tsq_tensor_destroy(y);
    }
    tsq_net_destroy(net);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_layer_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_layer *l = NULL;
    tsq_tensor *codes, *alpha = f32(ctx, 1, 2, 0, 0, 0), *bias = f32(ctx, 1, 2, 0, 0, 0), *p = NULL;
    const int64_t cs[2] = {2, 3};
    int32_t bits;
    float eps, delta;
    int i;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, cs, &codes));
    for (i = 0; i < 3; i++) {
        EXPECT(tsq_layer_act_quant_create(ctx, 2, nonfinite[i], 1.0f, &l), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        EXPECT(tsq_layer_act_quant_create(ctx, 2, 0.5f, nonfinite[i], &l), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        ck_assert_ptr_null(l);
    }
    /* A denormal delta makes 1/delta infinite: refused as by the quantizer. */
    EXPECT(tsq_layer_act_quant_create(ctx, 2, 0.0f, DENORMAL, &l), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    EXPECT(tsq_layer_act_quant_create(ctx, 8, 0.0f, FLT_MAX, &l), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, DENORMAL, 0.5f, &l));
    for (i = 0; i < 3; i++) {
        EXPECT(tsq_layer_act_quant_set_channel(l, -1, 0, 2, nonfinite[i], 1.0f),
               TSQ_ERR_NOT_FINITE, tsq_layer_errmsg(l), "");
        EXPECT(tsq_layer_act_quant_set_channel(l, 0, 4, 2, 0.5f, nonfinite[i]),
               TSQ_ERR_NOT_FINITE, tsq_layer_errmsg(l), "");
    }
    EXPECT(tsq_layer_act_quant_set_channel(l, 0, 4, 2, 0.5f, DENORMAL), TSQ_ERR_INVALID,
           tsq_layer_errmsg(l), "");
    EXPECT(tsq_layer_act_quant_set_channel(l, INT64_MAX, INT64_MAX, 2, 0.5f, 1.0f),
           TSQ_ERR_INVALID, tsq_layer_errmsg(l), "");
    TH_OK(ctx, tsq_layer_act_quant_get_channel(l, -1, NULL, &bits, &eps, &delta));
    ck_assert(bits == 2 && eps == DENORMAL && delta == 0.5f);
    tsq_layer_destroy(l);
    /* Low-bit layers: non-finite alpha or bias refused, nothing changed. */
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 3, 2, 2, &l));
    fill(alpha, 1.0f);
    fill(bias, 0.0f);
    for (i = 0; i < 3; i++) {
        nt_data(alpha)[1] = nonfinite[i];
        EXPECT(tsq_layer_lowbit_set(l, codes, alpha, bias), TSQ_ERR_NOT_FINITE,
               tsq_layer_errmsg(l), "");
        nt_data(alpha)[1] = 1.0f;
        nt_data(bias)[0] = nonfinite[i];
        EXPECT(tsq_layer_lowbit_set(l, codes, alpha, bias), TSQ_ERR_NOT_FINITE,
               tsq_layer_errmsg(l), "");
        nt_data(bias)[0] = 0.0f;
    }
    TH_OK(ctx, tsq_layer_param(l, 1, &p, NULL, NULL));
    ck_assert(all_equal(nt_data(p), 2, 1.0f)); /* alpha of a new layer, unchanged */
    tsq_layer_destroy(l);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    gdone(ctx, &g);
}
END_TEST

START_TEST(test_layer_sizes)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_layer *l = NULL;
    tsq_net *net = NULL;
    const int64_t huge3[3] = {INT64_C(1) << 31, INT64_C(1) << 31, 2};
    const int64_t max3[3] = {INT64_MAX, INT64_MAX, INT64_MAX};
    const int64_t big = INT64_C(1) << 30, M = INT64_MAX;
    tsq_status st;
    EXPECT(tsq_layer_dense_create(ctx, M, 1, &l), TSQ_ERR_INVALID, tsq_context_errmsg(ctx), "");
    EXPECT(tsq_layer_dense_create(ctx, 1, M, &l), TSQ_ERR_INVALID, tsq_context_errmsg(ctx), "");
    EXPECT(tsq_layer_lowbit_dense_create(ctx, M, M, 2, &l), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    /* Within each bound, but the weight count is 2^60: refused as too
     * large without asking the allocator for exabytes. */
    st = tsq_layer_dense_create(ctx, big, big, &l);
    ck_assert_msg(st == TSQ_ERR_INVALID || st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_NO_MEMORY,
                  "dense(2^30, 2^30): %s", tsq_status_string(st));
    ck_assert_ptr_null(l);
    EXPECT(tsq_layer_conv2d_create(ctx, M, 1, 3, 3, 1, 1, &l), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    EXPECT(tsq_layer_conv2d_create(ctx, 1, 1, M, M, M, 1, &l), TSQ_ERR_INVALID,
           tsq_context_errmsg(ctx), "");
    st = tsq_layer_conv2d_create(ctx, INT64_C(1) << 24, INT64_C(1) << 24, 1024, 1024, 1, 1, &l);
    ck_assert_msg(st == TSQ_ERR_INVALID || st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_NO_MEMORY,
                  "conv2d(2^24, 2^24, 1024x1024): %s", tsq_status_string(st));
    st = tsq_layer_lowbit_conv2d_create(ctx, INT64_C(1) << 24, INT64_C(1) << 24, 1024, 1024, 1,
                                        1, 2, &l);
    ck_assert_msg(st == TSQ_ERR_INVALID || st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_NO_MEMORY,
                  "lowbit_conv2d(2^24, 2^24, 1024x1024): %s", tsq_status_string(st));
    ck_assert_ptr_null(l);
    EXPECT(tsq_layer_batchnorm_create(ctx, M, &l), TSQ_ERR_INVALID, tsq_context_errmsg(ctx), "");
    EXPECT(tsq_layer_maxpool2d_create(ctx, M, M, &l), TSQ_ERR_INVALID, tsq_context_errmsg(ctx),
           "");
    EXPECT(tsq_net_create(ctx, 3, huge3, &net), TSQ_ERR_OVERFLOW, tsq_context_errmsg(ctx), "");
    EXPECT(tsq_net_create(ctx, 3, max3, &net), TSQ_ERR_OVERFLOW, tsq_context_errmsg(ctx), "");
    ck_assert_ptr_null(net);
    /* Shapes that grow inside a net: a huge image through a conv. */
    {
        const int64_t in[3] = {1, 46000, 46000};
        TH_OK(ctx, tsq_net_create(ctx, 3, in, &net));
        TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 1 << 20, 1, 1, 1, 0, &l));
        st = tsq_net_append(net, l);
        ck_assert_msg(st == TSQ_ERR_SHAPE || st == TSQ_ERR_OVERFLOW, "append: %s (%s)",
                      tsq_status_string(st), tsq_net_errmsg(net));
        tsq_layer_destroy(l);
        tsq_net_destroy(net);
    }
    gdone(ctx, &g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Loss                                                                */
/* ------------------------------------------------------------------ */

START_TEST(test_loss_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_tensor *z = f32(ctx, 2, 2, 3, 0, 0), *dz = f32(ctx, 2, 2, 3, 0, 0);
    const int32_t labels[2] = {0, 2};
    double loss = -7;
    int64_t correct = -7;
    int i;
    for (i = 0; i < 3; i++) {
        fill(z, 1.0f);
        nt_data(z)[4] = nonfinite[i];
        fill(dz, 7.0f);
        EXPECT(tsq_nn_softmax_cross_entropy(ctx, z, labels, 2, &loss, &correct, dz),
               TSQ_ERR_NOT_FINITE, tsq_context_errmsg(ctx), "");
        ck_assert(loss == -7 && correct == -7 && all_equal(nt_data(dz), 6, 7.0f));
    }
    for (i = 0; i < 3; i++) {
        const float v = i == 0 ? FLT_MAX : i == 1 ? 1e30f : DENORMAL;
        fill(z, 0.0f);
        nt_data(z)[0] = v;
        nt_data(z)[1] = -v;
        nt_data(z)[5] = -v;
        nt_data(z)[4] = v;
        TH_OK(ctx, tsq_nn_softmax_cross_entropy(ctx, z, labels, 2, &loss, &correct, dz));
        ck_assert_msg(isfinite(loss) && loss >= 0 && all_finite(nt_data(dz), 6),
                      "logits %g: loss %g", (double)v, loss);
    }
    tsq_tensor_destroy(z);
    tsq_tensor_destroy(dz);
    gdone(ctx, &g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Kernels and the plan                                                */
/* ------------------------------------------------------------------ */

START_TEST(test_kernel_values_and_sizes)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    tsq_thresholds *th = NULL;
    const float one[2] = {1, 1}, zero[2] = {0, 0};
    float bad[2];
    int32_t acc[4] = {0};
    uint64_t bytes;
    int i;
    for (i = 0; i < 3; i++) {
        bad[0] = 1;
        bad[1] = nonfinite[i];
        EXPECT(tsq_thresholds_create(ctx, 2, bad, NULL, 2, zero, one, 2, &th), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        EXPECT(tsq_thresholds_create(ctx, 2, one, bad, 2, zero, one, 2, &th), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        EXPECT(tsq_thresholds_create(ctx, 2, one, NULL, 2, bad, one, 2, &th), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        EXPECT(tsq_thresholds_create(ctx, 2, one, NULL, 2, zero, bad, 2, &th), TSQ_ERR_NOT_FINITE,
               tsq_context_errmsg(ctx), "");
        ck_assert_ptr_null(th);
    }
    EXPECT(tsq_thresholds_create(ctx, INT64_MAX, one, NULL, 2, zero, one, 1, &th),
           TSQ_ERR_INVALID, tsq_context_errmsg(ctx), "");
    /* Huge and denormal parameters: the integer thresholds stay exact. */
    {
        const float hugea[2] = {FLT_MAX, DENORMAL}, d2[2] = {DENORMAL, FLT_MAX / 4};
        tsq_status st = tsq_thresholds_create(ctx, 2, hugea, hugea, 2, zero, one, 2, &th);
        ck_assert_msg(st == TSQ_OK, "thresholds(FLT_MAX alpha): %s (%s)", tsq_status_string(st),
                      tsq_context_errmsg(ctx));
        tsq_thresholds_destroy(th);
        th = NULL;
        st = tsq_thresholds_create(ctx, 2, one, NULL, 2, zero, d2, 2, &th);
        ck_assert_msg(st == TSQ_OK || st == TSQ_ERR_INVALID, "thresholds(denormal delta): %s (%s)",
                      tsq_status_string(st), tsq_context_errmsg(ctx));
        tsq_thresholds_destroy(th);
        th = NULL;
    }
    TH_OK(ctx, tsq_thresholds_create(ctx, 2, one, NULL, 2, zero, one, 1, &th));
    {
        const int64_t s[1] = {4};
        tsq_tensor *out = u8(ctx, 1, s);
        tsq_status st = tsq_thresholds_apply(ctx, th, acc, 4, INT64_MAX, TSQ_KERNEL_AUTO, out);
        ck_assert_msg(st == TSQ_ERR_TOO_SMALL || st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_SHAPE,
                      "thresholds_apply(rows = INT64_MAX): %s", tsq_status_string(st));
        st = tsq_thresholds_apply(ctx, th, acc, INT64_MAX, INT64_MAX / 2 + 1, TSQ_KERNEL_AUTO, out);
        ck_assert_msg(st == TSQ_ERR_TOO_SMALL || st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_SHAPE,
                      "thresholds_apply(rows * channels wraps): %s", tsq_status_string(st));
        tsq_tensor_destroy(out);
    }
    tsq_thresholds_destroy(th);
    {
        const int64_t ws[2] = {8, 4};
        tsq_tensor *w = NULL;
        tsq_packed_weights *pw = NULL;
        tsq_status st;
        TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, ws, &w));
        TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
        st = tsq_lowbit_workspace_size(ctx, pw, INT64_MAX, 2, TSQ_KERNEL_AUTO, &bytes);
        ck_assert_msg(st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_INVALID || st == TSQ_OK,
                      "lowbit_workspace_size(INT64_MAX): %s", tsq_status_string(st));
        st = tsq_lowbit_workspace_size(ctx, pw, INT64_MAX, 2, TSQ_KERNEL_REF, &bytes);
        ck_assert_msg(st == TSQ_ERR_OVERFLOW || st == TSQ_ERR_INVALID || st == TSQ_OK,
                      "lowbit_workspace_size(INT64_MAX, ref): %s", tsq_status_string(st));
        tsq_packed_weights_destroy(pw);
        tsq_tensor_destroy(w);
    }
    gdone(ctx, &g);
}
END_TEST

/* A converted net (conv, BN, quantizer, low-bit conv, quantizer, flatten,
 * dense) built by hand, compiled into a plan. */
START_TEST(test_plan_values)
{
    guard_stats g;
    tsq_context *ctx = gctx(&g);
    const int64_t in[3] = {1, 4, 4}, cs[4] = {2, 2, 3, 3};
    tsq_layer *L[8] = {NULL};
    tsq_tensor *codes = NULL, *alpha = f32(ctx, 1, 2, 0, 0, 0), *x = f32(ctx, 4, 3, 1, 4, 4),
               *y = f32(ctx, 2, 3, 3, 0, 0);
    tsq_net *net;
    tsq_plan *plan = NULL;
    uint64_t bytes;
    int8_t *cd;
    th_rng r = {12};
    int i;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 4, cs, &codes));
    TH_OK(ctx, tsq_tensor_data(codes, (void **)&cd));
    for (i = 0; i < 36; i++)
        cd[i] = (int8_t)((int)(th_rng_next(&r) % 3) - 1);
    fill(alpha, 0.5f);
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 1, 1, &L[0]));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 2, &L[1]));
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.25f, 0.5f, &L[2]));
    TH_OK(ctx, tsq_layer_set_option(L[2], TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1));
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 2, 2, 3, 3, 1, 1, 2, &L[3]));
    TH_OK(ctx, tsq_layer_lowbit_set(L[3], codes, alpha, NULL));
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.25f, 0.5f, &L[4]));
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &L[5]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 32, 3, &L[6]));
    net = nt_net(ctx, 3, in, L);
    TH_OK(ctx, tsq_plan_create(ctx, net, &plan));
    for (i = 0; i < 3; i++) {
        nt_fill_normal(x, &r, 1.0);
        nt_data(x)[30] = nonfinite[i];
        fill(y, 7.0f);
        EXPECT(tsq_plan_run(ctx, plan, x, y, NULL, 0), TSQ_ERR_NOT_FINITE, tsq_context_errmsg(ctx),
               "");
        ck_assert(all_equal(nt_data(y), 9, 7.0f));
    }
    for (i = 0; i < 3; i++) {
        const float v = i == 0 ? DENORMAL : i == 1 ? FLT_MAX : 1e30f;
        tsq_status st;
        nt_fill_normal(x, &r, 1.0);
        nt_data(x)[3] = v;
        nt_data(x)[20] = -v;
        fill(y, 7.0f);
        st = tsq_plan_run(ctx, plan, x, y, NULL, 0);
        ck_assert_msg(st == TSQ_OK || st == TSQ_ERR_NOT_FINITE, "plan_run(%g): %s", (double)v,
                      tsq_status_string(st));
        if (st == TSQ_OK)
            ck_assert_msg(all_finite(nt_data(y), 9), "plan_run(%g): non-finite output", (double)v);
        else
            ck_assert(all_equal(nt_data(y), 9, 7.0f));
    }
    EXPECT(tsq_plan_workspace_size(ctx, plan, INT64_MAX, &bytes), TSQ_ERR_OVERFLOW,
           tsq_context_errmsg(ctx), "");
    tsq_plan_destroy(plan);
    tsq_net_destroy(net);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    gdone(ctx, &g);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("numbers");
    TCase *tc = tcase_create("numbers");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_tensor_values);
    tcase_add_test(tc, test_tensor_sizes);
    tcase_add_test(tc, test_context_options);
    tcase_add_test(tc, test_quantizer_values);
    tcase_add_test(tc, test_quantizer_sizes);
    tcase_add_test(tc, test_regressor_values);
    tcase_add_test(tc, test_regressor_sizes);
    tcase_add_test(tc, test_net_values);
    tcase_add_test(tc, test_net_options);
    tcase_add_test(tc, test_layer_values);
    tcase_add_test(tc, test_layer_sizes);
    tcase_add_test(tc, test_loss_values);
    tcase_add_test(tc, test_kernel_values_and_sizes);
    tcase_add_test(tc, test_plan_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    (void)nf_name;
    return th_run(suite());
}
