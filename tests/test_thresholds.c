/* Integer thresholds against the float epilogue they replace: for every
 * channel, the threshold form must give the code of
 * Q(fl(fl((float)acc * alpha) + bias)) at every code boundary +-2 (ties
 * included), on dense ranges, at the int32 extremes and on random
 * accumulators; for alpha > 0, < 0, = 0, tiny and huge alpha; for every
 * SIMD variant of the comparison. Plus every error path. */
#include "harness.h"
#include "kernels/kernels_internal.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The float epilogue, written out here as the layers compute it: the
 * product rounded to float, then the sum, then the quantizer formula. */
static int32_t float_code(int32_t acc, float alpha, float bias, float eps, float delta,
                          int32_t bits)
{
    float scaled = (float)acc * alpha;
    float v = scaled + bias;
    return tsq__quant_code(v, eps, 1.0f / delta, (1 << bits) - 1);
}

typedef struct {
    float alpha, bias, eps, delta;
} channel;

static const int32_t apply_kernels[] = {TSQ_KERNEL_REF, TSQ_KERNEL_AVX2, TSQ_KERNEL_VNNI,
                                        TSQ_KERNEL_VPOPCNT};

static int kernel_here(int32_t k)
{
    int32_t a = 0;
    ck_assert_int_eq(tsq_kernel_available(k, &a), TSQ_OK);
    return a;
}

/* Valgrind's emulation of single-precision arithmetic is not always
 * bit-exact: measured here, the same float code gave a result one ulp off
 * (and so a code one off at a near-tie) depending on the process it ran
 * in. Under valgrind the float epilogue is therefore not a reliable
 * oracle, and the comparison falls back to the reference kernel's codes
 * (valgrind runs are for memory errors; native runs check exactness). */
static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

/* Codes of every (acc, channel) pair through tsq_thresholds_apply with
 * each kernel, compared with float_code. accs holds rows x nch values. */
static void check_accs(tsq_context *ctx, const tsq_thresholds *th, const channel *ch,
                       int64_t nch, int32_t bits, const int32_t *accs, int64_t rows)
{
    tsq_tensor *out = NULL;
    const uint8_t *codes;
    uint8_t *ref = malloc((size_t)(rows * nch));
    int64_t i;
    size_t k;
    int valgrind = under_valgrind();
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, (const int64_t[]){rows, nch}, &out));
    codes = out->data;
    for (k = 0; k < sizeof apply_kernels / sizeof apply_kernels[0]; k++) {
        if (!kernel_here(apply_kernels[k]))
            continue;
        TH_OK(ctx, tsq_tensor_fill(out, 255));
        TH_OK(ctx, tsq_thresholds_apply(ctx, th, accs, rows * nch, rows, apply_kernels[k], out));
        if (k == 0)
            memcpy(ref, codes, (size_t)(rows * nch)); /* apply_kernels[0] is the reference */
        for (i = 0; i < rows * nch; i++) {
            const channel *c = &ch[i % nch];
            int32_t want = valgrind ? ref[i]
                                    : float_code(accs[i], c->alpha, c->bias, c->eps, c->delta,
                                                 bits);
            ck_assert_msg(codes[i] == want,
                          "kernel %s, channel %lld (alpha %a bias %a eps %a delta %a), acc %d: "
                          "code %d, float epilogue %d",
                          tsq_kernel_name(apply_kernels[k]), (long long)(i % nch),
                          (double)c->alpha, (double)c->bias, (double)c->eps, (double)c->delta,
                          accs[i], codes[i], want);
        }
    }
    free(ref);
    tsq_tensor_destroy(out);
}

static int32_t clamp_i32(int64_t v)
{
    return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

/* All channels: boundaries +-2, the extremes, a dense window and random
 * accumulators. */
static void check_channels(tsq_context *ctx, const channel *ch, int64_t nch, int32_t bits,
                           th_rng *s)
{
    float *alpha = malloc((size_t)nch * sizeof *alpha), *bias = malloc((size_t)nch * sizeof *bias);
    float *eps = malloc((size_t)nch * sizeof *eps), *delta = malloc((size_t)nch * sizeof *delta);
    int32_t maxcode = (1 << bits) - 1, *t = malloc((size_t)maxcode * sizeof *t);
    int64_t per = 5 * maxcode + 6 + 200 + 300, rows = per, i, c, j, m;
    int32_t *accs = malloc((size_t)(rows * nch) * sizeof *accs);
    tsq_thresholds *th = NULL;
    for (c = 0; c < nch; c++) {
        alpha[c] = ch[c].alpha;
        bias[c] = ch[c].bias;
        eps[c] = ch[c].eps;
        delta[c] = ch[c].delta;
    }
    TH_OK(ctx, tsq_thresholds_create(ctx, nch, alpha, bias, bits, eps, delta, nch, &th));
    for (c = 0; c < nch; c++) {
        int32_t dir, top, row = 0;
        TH_OK(ctx, tsq_thresholds_channel(th, c, &dir, &top, t, maxcode));
        ck_assert(dir == 1 || dir == -1);
        ck_assert_int_eq(dir, ch[c].alpha < 0.0f ? -1 : 1);
        for (m = 1; m < maxcode; m++)
            ck_assert_int_le(t[m - 1], t[m]);
        /* Every boundary +-2, in the acc domain (a = ~acc when dir < 0). */
        for (m = 0; m < maxcode; m++) {
            int32_t b = dir > 0 ? t[m] : ~t[m];
            for (j = -2; j <= 2; j++)
                accs[(row++) * nch + c] = clamp_i32((int64_t)b + j);
        }
        accs[(row++) * nch + c] = INT32_MIN;
        accs[(row++) * nch + c] = INT32_MIN + 1;
        accs[(row++) * nch + c] = INT32_MAX;
        accs[(row++) * nch + c] = INT32_MAX - 1;
        accs[(row++) * nch + c] = 0;
        accs[(row++) * nch + c] = -1;
        for (i = -100; i < 100; i++)
            accs[(row++) * nch + c] = (int32_t)i;
        for (i = 0; i < 300; i++) {
            /* Mostly near the boundaries' scale, some anywhere in int32. */
            uint64_t r = th_rng_next(s);
            accs[(row++) * nch + c] = (i % 3 == 0) ? (int32_t)(uint32_t)r
                                                   : (int32_t)((int64_t)(r % 200001) - 100000);
        }
        ck_assert_int_eq(row, per);
    }
    check_accs(ctx, th, ch, nch, bits, accs, rows);
    tsq_thresholds_destroy(th);
    free(accs);
    free(t);
    free(alpha);
    free(bias);
    free(eps);
    free(delta);
}

START_TEST(test_boundaries_random_channels)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {1};
    int32_t bits;
    if (under_valgrind())
        printf("test_boundaries_random_channels: under valgrind, codes are compared with the "
               "reference kernel, not with the float epilogue\n");
    for (bits = 1; bits <= 8; bits++) {
        channel ch[37];
        int64_t c;
        for (c = 0; c < 37; c++) {
            double sign = c % 3 == 0 ? -1.0 : 1.0;
            ch[c].alpha = (float)(sign * pow(10.0, -4.0 + 4.0 * th_rng_uniform(&s)));
            ch[c].bias = (float)(4.0 * th_rng_uniform(&s) - 2.0);
            ch[c].delta = (float)(0.05 + th_rng_uniform(&s));
            ch[c].eps = (float)(th_rng_uniform(&s) * ch[c].delta);
        }
        ch[4].alpha = 0.0f;  /* constant output */
        ch[5].alpha = -0.0f;
        ch[6].alpha = 1e-30f; /* so small that every int32 gives the same code */
        ch[7].alpha = 3e38f;  /* the product overflows to +-inf */
        ch[8].alpha = -3e38f;
        ch[9].bias = 1e30f;   /* saturated at the top code */
        ch[10].bias = -1e30f; /* always 0 */
        ch[11].eps = -1.0f;   /* negative eps: 0 is already above it */
        check_channels(ctx, ch, 37, bits, &s);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Ties: with delta = 1 and alpha = 1/2 (or -1/2), v = acc / 2 lands exactly
 * on every rounding boundary k + 1/2 and on eps; dense ranges then cover
 * every tie. */
START_TEST(test_ties_dense)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {2};
    channel ch[8] = {
        {0.5f, 0.0f, 2.0f, 1.0f},   {-0.5f, 0.0f, 2.0f, 1.0f}, {0.5f, 0.25f, 0.5f, 1.0f},
        {0.25f, -3.0f, 0.0f, 0.5f}, {1.0f, 0.5f, 1.5f, 1.0f},  {-1.0f, -0.5f, 0.5f, 1.0f},
        {0.1f, 0.0f, 0.3f, 0.6f},   {0.5f, 0.0f, 0.0f, 1.0f},
    };
    int32_t bits;
    for (bits = 1; bits <= 8; bits++) {
        int64_t rows = 4001, r, c;
        int32_t *accs = malloc((size_t)(rows * 8) * sizeof *accs);
        tsq_thresholds *th = NULL;
        float alpha[8], bias[8], eps[8], delta[8];
        for (c = 0; c < 8; c++) {
            alpha[c] = ch[c].alpha;
            bias[c] = ch[c].bias;
            eps[c] = ch[c].eps;
            delta[c] = ch[c].delta;
        }
        for (r = 0; r < rows; r++)
            for (c = 0; c < 8; c++)
                accs[r * 8 + c] = (int32_t)(r - 2000);
        TH_OK(ctx, tsq_thresholds_create(ctx, 8, alpha, bias, bits, eps, delta, 8, &th));
        check_accs(ctx, th, ch, 8, bits, accs, rows);
        tsq_thresholds_destroy(th);
        free(accs);
        check_channels(ctx, ch, 8, bits, &s);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* The channel's thresholds are exactly the first acc at which the code
 * reaches each level (checked directly for alpha > 0). */
START_TEST(test_threshold_is_first_reaching)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const float alpha = 0.013f, bias = -0.2f, eps = 0.33f, delta = 0.65f;
    int32_t t[3], dir, top, m;
    tsq_thresholds *th = NULL;
    TH_OK(ctx, tsq_thresholds_create(ctx, 1, &alpha, &bias, 2, &eps, &delta, 1, &th));
    TH_OK(ctx, tsq_thresholds_channel(th, 0, &dir, &top, t, 3));
    ck_assert_int_eq(dir, 1);
    ck_assert_int_eq(top, 3);
    for (m = 1; m <= 3; m++) {
        ck_assert_int_ge(float_code(t[m - 1], alpha, bias, eps, delta, 2), m);
        ck_assert_int_lt(float_code(t[m - 1] - 1, alpha, bias, eps, delta, 2), m);
    }
    /* eps = 0.33 lies between delta/2 and delta, so code 1 starts above eps:
     * (0.33 + 0.2) / 0.013 = 40.77, the first acc is 41. */
    ck_assert_int_eq(t[0], 41);
    ck_assert_int_eq(tsq_thresholds_channel(th, 0, &dir, &top, t, 2), TSQ_ERR_TOO_SMALL);
    ck_assert_int_eq(tsq_thresholds_channel(th, 1, &dir, &top, t, 3), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_thresholds_channel(th, -1, &dir, &top, t, 3), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_thresholds_channel(NULL, 0, &dir, &top, t, 3), TSQ_ERR_NULL);
    tsq_thresholds_destroy(th);
    th_context_done(ctx, &st);
}
END_TEST

/* A shared (eps, delta) equals the same values given per channel; NULL
 * bias equals zero bias. */
START_TEST(test_shared_qparams_and_null_bias)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    float alpha[20], zero[20], eps1 = 0.3f, delta1 = 0.6f, eps[20], delta[20];
    int32_t ta[15], tb[15], tc[15], da, db, dc, pa, pb, pc;
    tsq_thresholds *a = NULL, *b = NULL, *c = NULL;
    int64_t i, v;
    for (i = 0; i < 20; i++) {
        alpha[i] = 0.01f * (float)(i - 7);
        zero[i] = 0.0f;
        eps[i] = eps1;
        delta[i] = delta1;
    }
    TH_OK(ctx, tsq_thresholds_create(ctx, 20, alpha, NULL, 4, &eps1, &delta1, 1, &a));
    TH_OK(ctx, tsq_thresholds_create(ctx, 20, alpha, zero, 4, eps, delta, 20, &b));
    TH_OK(ctx, tsq_thresholds_create(ctx, 20, alpha, zero, 4, &eps1, &delta1, 1, &c));
    for (i = 0; i < 20; i++) {
        TH_OK(ctx, tsq_thresholds_channel(a, i, &da, &pa, ta, 15));
        TH_OK(ctx, tsq_thresholds_channel(b, i, &db, &pb, tb, 15));
        TH_OK(ctx, tsq_thresholds_channel(c, i, &dc, &pc, tc, 15));
        ck_assert_mem_eq(ta, tb, sizeof ta);
        ck_assert_mem_eq(ta, tc, sizeof ta);
        ck_assert_int_eq(da, db);
        ck_assert_int_eq(pa, pc);
    }
    TH_OK(ctx, tsq_thresholds_get(a, TSQ_THRESHOLDS_CHANNELS, &v));
    ck_assert_int_eq(v, 20);
    TH_OK(ctx, tsq_thresholds_get(a, TSQ_THRESHOLDS_CODE_BITS, &v));
    ck_assert_int_eq(v, 4);
    ck_assert_int_eq(tsq_thresholds_get(a, 0, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_thresholds_get(a, 1, NULL), TSQ_ERR_NULL);
    tsq_thresholds_destroy(a);
    tsq_thresholds_destroy(b);
    tsq_thresholds_destroy(c);
    tsq_thresholds_destroy(NULL);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_create_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    float alpha[4] = {1, 2, 3, 4}, bias[4] = {0, 0, 0, 0}, eps = 0.3f, delta = 0.6f;
    float two[2] = {0.3f, 0.3f}, bad_delta = 0.0f, nan = NAN;
    tsq_thresholds *th = (tsq_thresholds *)&st;
#define REFUSED(call, status, text)                                                   \
    do {                                                                              \
        ck_assert_int_eq((call), (status));                                           \
        ck_assert_ptr_null(th);                                                       \
        ck_assert_msg(strstr(tsq_context_errmsg(ctx), (text)) != NULL, "message '%s'", \
                      tsq_context_errmsg(ctx));                                       \
    } while (0)
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 0, &eps, &delta, 1, &th), TSQ_ERR_INVALID,
            "code_bits 0");
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 9, &eps, &delta, 1, &th), TSQ_ERR_INVALID,
            "code_bits 9");
    REFUSED(tsq_thresholds_create(ctx, 0, alpha, bias, 2, &eps, &delta, 1, &th), TSQ_ERR_INVALID,
            "channels 0");
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, two, two, 2, &th), TSQ_ERR_INVALID,
            "qparams 2");
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &eps, &bad_delta, 1, &th),
            TSQ_ERR_INVALID, "delta[0] = 0 must be > 0");
    alpha[3] = NAN;
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &eps, &delta, 1, &th),
            TSQ_ERR_NOT_FINITE, "alpha[3] is not finite");
    alpha[3] = 4;
    bias[1] = INFINITY;
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &eps, &delta, 1, &th),
            TSQ_ERR_NOT_FINITE, "bias[1] is not finite");
    bias[1] = 0;
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &nan, &delta, 1, &th),
            TSQ_ERR_NOT_FINITE, "eps[0] is not finite");
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &eps, &nan, 1, &th),
            TSQ_ERR_NOT_FINITE, "delta[0] is not finite");
    REFUSED(tsq_thresholds_create(ctx, 4, NULL, bias, 2, &eps, &delta, 1, &th), TSQ_ERR_NULL,
            "alpha is NULL");
    REFUSED(tsq_thresholds_create(ctx, 4, alpha, bias, 2, NULL, &delta, 1, &th), TSQ_ERR_NULL,
            "eps is NULL");
#undef REFUSED
    ck_assert_int_eq(tsq_thresholds_create(ctx, 4, alpha, bias, 2, &eps, &delta, 1, NULL),
                     TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_thresholds_create(NULL, 4, alpha, bias, 2, &eps, &delta, 1, &th),
                     TSQ_ERR_NULL);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_create_out_of_memory)
{
    int64_t k;
    float alpha[3] = {1, -1, 0}, eps = 0.3f, delta = 0.6f;
    for (k = 1; k <= 4; k++) {
        th_alloc_stats st;
        tsq_context *ctx = th_context(&st);
        tsq_thresholds *th = NULL;
        st.fail_at = st.total_allocs + k;
        ck_assert_int_eq(tsq_thresholds_create(ctx, 3, alpha, NULL, 2, &eps, &delta, 1, &th),
                         TSQ_ERR_NO_MEMORY);
        ck_assert_ptr_null(th);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "out of memory"));
        th_context_done(ctx, &st);
    }
}
END_TEST

START_TEST(test_apply_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    float alpha[3] = {1, -1, 0}, eps = 0.3f, delta = 0.6f;
    int32_t acc[6] = {0, 1, 2, 3, 4, 5};
    tsq_thresholds *th = NULL;
    tsq_tensor *out = NULL, *bad = NULL, *f = NULL;
    const uint8_t *o;
    TH_OK(ctx, tsq_thresholds_create(ctx, 3, alpha, NULL, 2, &eps, &delta, 1, &th));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, (const int64_t[]){2, 3}, &out));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 1, (const int64_t[]){5}, &bad));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, (const int64_t[]){6}, &f));
    TH_OK(ctx, tsq_tensor_fill(out, 9));
    o = out->data;
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, acc, 5, 2, 0, out), TSQ_ERR_TOO_SMALL);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "acc holds 5 values"));
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, acc, 6, 2, 0, bad), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "out has 5 elements"));
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, acc, 6, 2, 0, f), TSQ_ERR_DTYPE);
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, acc, 6, 0, 0, out), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, acc, 6, 2, 9, out), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_thresholds_apply(ctx, NULL, acc, 6, 2, 0, out), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_thresholds_apply(ctx, th, NULL, 6, 2, 0, out), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_thresholds_apply(NULL, th, acc, 6, 2, 0, out), TSQ_ERR_NULL);
    ck_assert_int_eq(o[0], 9);
    TH_OK(ctx, tsq_thresholds_apply(ctx, th, acc, 6, 2, 0, out));
    tsq_tensor_destroy(f);
    tsq_tensor_destroy(bad);
    tsq_tensor_destroy(out);
    tsq_thresholds_destroy(th);
    th_context_done(ctx, &st);
}
END_TEST

static Suite *thresholds_suite(void)
{
    Suite *s = suite_create("thresholds");
    TCase *tc = tcase_create("thresholds");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_boundaries_random_channels);
    tcase_add_test(tc, test_ties_dense);
    tcase_add_test(tc, test_threshold_is_first_reaching);
    tcase_add_test(tc, test_shared_qparams_and_null_bias);
    tcase_add_test(tc, test_create_errors);
    tcase_add_test(tc, test_create_out_of_memory);
    tcase_add_test(tc, test_apply_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(thresholds_suite()); }
