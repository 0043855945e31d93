/* Low-bit kernels: packing round trips, every kernel bit-exact against a
 * brute-force product and against the reference kernel on random shapes
 * (sizes that are not multiples of any vector width included), saturation
 * corners, threads, workspaces, the fused threshold epilogue, im2col on
 * codes against a direct convolution, and every error path. Kernels the CPU
 * lacks are skipped, and the test says so. */
#include "harness.h"
#include "kernels/bitplane.h"
#include "kernels/conv.h"
#include "kernels/encode.h"
#include "kernels/kernels_internal.h"
#include "kernels/vec.h"
#if defined(TSQ_BLAS_OPENBLAS)
#include "blas.h" /* openblas_set_num_threads */
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int32_t simd_kernels[] = {TSQ_KERNEL_AVX2, TSQ_KERNEL_VNNI, TSQ_KERNEL_VPOPCNT};
#define NSIMD 3

/* ---- helpers ------------------------------------------------------------ */

static int kernel_here(int32_t kernel)
{
    int32_t avail = 0;
    ck_assert_int_eq(tsq_kernel_available(kernel, &avail), TSQ_OK);
    return avail;
}

static void say_skip(const char *test, int32_t kernel)
{
    printf("%s: SKIP kernel '%s': this CPU lacks its instructions\n", test,
           tsq_kernel_name(kernel));
}

/* Random weights of the b-bit alphabet; mode 0 random, 1 all +max,
 * 2 all -max, 3 sparse (most 0). */
static tsq_tensor *make_weights(tsq_context *ctx, int64_t k, int64_t n, int32_t bits, int mode,
                                th_rng *s)
{
    const int64_t shape[2] = {k, n};
    tsq_tensor *t = NULL;
    int8_t *w;
    int32_t lim = (1 << (bits - 1)) - 1;
    int64_t i;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, shape, &t));
    TH_OK(ctx, tsq_tensor_data(t, (void **)&w));
    for (i = 0; i < k * n; i++) {
        switch (mode) {
        case 1: w[i] = (int8_t)lim; break;
        case 2: w[i] = (int8_t)-lim; break;
        case 3: w[i] = th_rng_below(s, 4) ? 0 : (int8_t)(th_rng_below(s, 2 * lim + 1) - lim); break;
        default: w[i] = (int8_t)(th_rng_below(s, 2 * lim + 1) - lim); break;
        }
    }
    return t;
}

/* Random codes; mode 0 random, 1 all max, 2 sparse (about 60% zero). */
static tsq_tensor *make_codes(tsq_context *ctx, int64_t m, int64_t k, int32_t bits, int mode,
                              th_rng *s)
{
    const int64_t shape[2] = {m, k};
    tsq_tensor *t = NULL;
    uint8_t *x;
    int32_t maxcode = (1 << bits) - 1;
    int64_t i;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, shape, &t));
    TH_OK(ctx, tsq_tensor_data(t, (void **)&x));
    for (i = 0; i < m * k; i++) {
        if (mode == 1)
            x[i] = (uint8_t)maxcode;
        else if (mode == 2)
            x[i] = th_rng_below(s, 5) < 3 ? 0 : (uint8_t)th_rng_below(s, maxcode + 1);
        else
            x[i] = (uint8_t)th_rng_below(s, maxcode + 1);
    }
    return t;
}

static int32_t *brute(const tsq_tensor *codes, const tsq_tensor *w)
{
    int64_t m = codes->shape[0], k = codes->shape[1], n = w->shape[1], r, c, i;
    const uint8_t *x = codes->data;
    const int8_t *wv = w->data;
    int32_t *out = malloc((size_t)(m * n) * sizeof *out);
    ck_assert_ptr_nonnull(out);
    for (r = 0; r < m; r++)
        for (c = 0; c < n; c++) {
            int64_t sum = 0;
            for (i = 0; i < k; i++)
                sum += (int64_t)x[r * k + i] * wv[i * n + c];
            ck_assert(sum >= INT32_MIN && sum <= INT32_MAX);
            out[r * n + c] = (int32_t)sum;
        }
    return out;
}

/* Runs one kernel into a fresh buffer (with a canary after it). */
static int32_t *run_gemm(tsq_context *ctx, const tsq_packed_weights *pw, const tsq_tensor *codes,
                         int32_t bits, int32_t kernel)
{
    int64_t m = codes->ndim == 2 ? codes->shape[0] : 1, n;
    int32_t *acc;
    int64_t i;
    TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_COLS, &n));
    acc = malloc((size_t)(m * n + 16) * sizeof *acc);
    ck_assert_ptr_nonnull(acc);
    for (i = 0; i < m * n + 16; i++)
        acc[i] = 0x5A5A5A5A;
    TH_OK(ctx, tsq_lowbit_gemm(ctx, pw, codes, bits, kernel, acc, m * n, NULL, 0));
    for (i = m * n; i < m * n + 16; i++)
        ck_assert_int_eq(acc[i], 0x5A5A5A5A);
    return acc;
}

static void assert_same(const int32_t *want, const int32_t *got, int64_t m, int64_t n,
                        const char *what, int32_t kernel)
{
    int64_t i;
    for (i = 0; i < m * n; i++)
        ck_assert_msg(want[i] == got[i], "%s, kernel %s: acc[%lld][%lld] = %d, expected %d", what,
                      tsq_kernel_name(kernel), (long long)(i / n), (long long)(i % n), got[i],
                      want[i]);
}

/* One shape and bit widths through every kernel here; returns nothing,
 * asserts bit-exactness against brute force. */
static void check_shape(tsq_context *ctx, int64_t m, int64_t k, int64_t n, int32_t cbits,
                        int32_t wbits, int cmode, int wmode, th_rng *s)
{
    tsq_tensor *codes = make_codes(ctx, m, k, cbits, cmode, s);
    tsq_tensor *w = make_weights(ctx, k, n, wbits, wmode, s);
    tsq_packed_weights *pw = NULL;
    int32_t *want = brute(codes, w), *got;
    char what[128];
    int i;
    snprintf(what, sizeof what, "M=%lld K=%lld N=%lld codes %d-bit weights %d-bit", (long long)m,
             (long long)k, (long long)n, (int)cbits, (int)wbits);
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, wbits, &pw));
    got = run_gemm(ctx, pw, codes, cbits, TSQ_KERNEL_REF);
    assert_same(want, got, m, n, what, TSQ_KERNEL_REF);
    free(got);
    for (i = 0; i < NSIMD; i++) {
        if (!kernel_here(simd_kernels[i]))
            continue;
        got = run_gemm(ctx, pw, codes, cbits, simd_kernels[i]);
        assert_same(want, got, m, n, what, simd_kernels[i]);
        free(got);
    }
    got = run_gemm(ctx, pw, codes, cbits, TSQ_KERNEL_AUTO);
    assert_same(want, got, m, n, what, TSQ_KERNEL_AUTO);
    free(got);
    free(want);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
}

static void report_skips(const char *test)
{
    int i;
    for (i = 0; i < NSIMD; i++)
        if (!kernel_here(simd_kernels[i]))
            say_skip(test, simd_kernels[i]);
}

/* ---- packing ------------------------------------------------------------ */

START_TEST(test_pack_roundtrip)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {1};
    static const int64_t sizes[][2] = {{1, 1}, {63, 7}, {64, 8}, {65, 9}, {130, 17}, {5, 33}};
    int32_t bits;
    size_t i;
    for (bits = 2; bits <= 8; bits++)
        for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            int64_t k = sizes[i][0], n = sizes[i][1], v;
            tsq_tensor *w = make_weights(ctx, k, n, bits, 0, &s), *back = NULL;
            tsq_packed_weights *pw = NULL;
            TH_OK(ctx, tsq_packed_weights_create(ctx, w, bits, &pw));
            TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, w->shape, &back));
            TH_OK(ctx, tsq_packed_weights_unpack(pw, back));
            ck_assert_mem_eq(w->data, back->data, (size_t)(k * n));
            TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_ROWS, &v));
            ck_assert_int_eq(v, k);
            TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_COLS, &v));
            ck_assert_int_eq(v, n);
            TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_WEIGHT_BITS, &v));
            ck_assert_int_eq(v, bits);
            /* b bits per weight, K padded to 64 and N to 8. */
            TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_BYTES, &v));
            ck_assert_int_eq(v, (k + 63) / 64 * 8 * ((n + 7) / 8 * 8) * bits);
            tsq_tensor_destroy(back);
            tsq_packed_weights_destroy(pw);
            tsq_tensor_destroy(w);
        }
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_pack_two_bits_per_ternary_weight)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {2};
    tsq_tensor *w = make_weights(ctx, 3136, 256, 2, 0, &s);
    tsq_packed_weights *pw = NULL;
    int64_t bytes;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    TH_OK(ctx, tsq_packed_weights_get(pw, TSQ_PACKED_BYTES, &bytes));
    ck_assert_int_eq(bytes, 3136 * 256 * 2 / 8); /* no padding at this shape */
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_pack_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {3};
    const int64_t shape1[1] = {4}, shape2[2] = {4, 3};
    tsq_tensor *w = make_weights(ctx, 4, 3, 2, 0, &s), *w1 = NULL, *f = NULL, *back = NULL;
    tsq_packed_weights *pw = (tsq_packed_weights *)&st;
    int64_t v;
    int8_t *data;
    TH_OK(ctx, tsq_tensor_data(w, (void **)&data));
    data[2 * 3 + 1] = 2; /* not ternary */
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 2, &pw), TSQ_ERR_INVALID);
    ck_assert_ptr_null(pw);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "w[2][1] = 2"));
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 3, &pw)); /* 2 is a 3-bit weight */
    tsq_packed_weights_destroy(pw);
    data[0] = -128;
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 8, &pw), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "-127..127"));
    data[0] = 0;
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 1, &pw), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "weight_bits 1"));
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 9, &pw), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, shape1, &w1));
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w1, 2, &pw), TSQ_ERR_SHAPE);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape2, &f));
    ck_assert_int_eq(tsq_packed_weights_create(ctx, f, 2, &pw), TSQ_ERR_DTYPE);
    ck_assert_int_eq(tsq_packed_weights_create(ctx, NULL, 2, &pw), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 3, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_packed_weights_create(NULL, w, 3, &pw), TSQ_ERR_NULL);
    /* Unpack into the wrong shape or type writes nothing. */
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 3, &pw));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, (const int64_t[]){3, 4}, &back));
    TH_OK(ctx, tsq_tensor_fill(back, 7));
    ck_assert_int_eq(tsq_packed_weights_unpack(pw, back), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_tensor_errmsg(back), "must be 4 x 3"));
    ck_assert_int_eq(((int8_t *)back->data)[0], 7);
    ck_assert_int_eq(tsq_packed_weights_unpack(pw, f), TSQ_ERR_DTYPE);
    ck_assert_int_eq(tsq_packed_weights_unpack(NULL, back), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_packed_weights_get(pw, 99, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_packed_weights_get(pw, TSQ_PACKED_ROWS, NULL), TSQ_ERR_NULL);
    tsq_packed_weights_destroy(pw);
    tsq_packed_weights_destroy(NULL);
    tsq_tensor_destroy(back);
    tsq_tensor_destroy(f);
    tsq_tensor_destroy(w1);
    tsq_tensor_destroy(w);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_pack_out_of_memory)
{
    int64_t k;
    th_rng s = {4};
    for (k = 1; k <= 2; k++) {
        th_alloc_stats st;
        tsq_context *ctx = th_context(&st);
        tsq_tensor *w = make_weights(ctx, 10, 10, 2, 0, &s);
        tsq_packed_weights *pw = NULL;
        st.fail_at = st.total_allocs + k;
        ck_assert_int_eq(tsq_packed_weights_create(ctx, w, 2, &pw), TSQ_ERR_NO_MEMORY);
        ck_assert_ptr_null(pw);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "out of memory"));
        tsq_tensor_destroy(w);
        th_context_done(ctx, &st);
    }
}
END_TEST

/* The decoded panels (both decoders) hold exactly the weights. */
START_TEST(test_decode_panels)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {5};
    int32_t bits;
    for (bits = 2; bits <= 8; bits += 3) {
        int64_t k = 161, n = 37, k4n = tsq__k4n(k), np = tsq__panels(n), q, c, i;
        tsq_tensor *w = make_weights(ctx, k, n, bits, 0, &s);
        tsq_packed_weights *pw = NULL;
        int8_t *a = malloc((size_t)(np * k4n * 64)), *b = malloc((size_t)(np * k4n * 64));
        const int8_t *wv = w->data;
        TH_OK(ctx, tsq_packed_weights_create(ctx, w, bits, &pw));
        memset(a, 0x33, (size_t)(np * k4n * 64));
        tsq__decode_panels(pw, 0, np, a);
        for (q = 0; q < k4n; q++)
            for (c = 0; c < np * 16; c++)
                for (i = 0; i < 4; i++) {
                    int64_t kk = 4 * q + i;
                    int8_t want = kk < k && c < n ? wv[kk * n + c] : 0;
                    ck_assert_int_eq(a[((c / 16) * k4n + q) * 64 + (c % 16) * 4 + i], want);
                }
        if (kernel_here(TSQ_KERNEL_AVX2)) {
            memset(b, 0x44, (size_t)(np * k4n * 64));
            tsq__decode_panels_avx2(pw, 0, np, b);
            ck_assert_mem_eq(a, b, (size_t)(np * k4n * 64));
            /* A sub-range lands at the start of the buffer. */
            memset(b, 0x44, (size_t)(np * k4n * 64));
            tsq__decode_panels_avx2(pw, 1, np, b);
            ck_assert_mem_eq(a + k4n * 64, b, (size_t)((np - 1) * k4n * 64));
        }
        if (kernel_here(TSQ_KERNEL_VNNI)) {
            memset(b, 0x44, (size_t)(np * k4n * 64));
            tsq__decode_panels_avx512(pw, 0, np, b);
            ck_assert_mem_eq(a, b, (size_t)(np * k4n * 64));
            memset(b, 0x44, (size_t)(np * k4n * 64));
            tsq__decode_panels_avx512(pw, 1, np, b);
            ck_assert_mem_eq(a + k4n * 64, b, (size_t)((np - 1) * k4n * 64));
        }
        free(a);
        free(b);
        tsq_packed_weights_destroy(pw);
        tsq_tensor_destroy(w);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* ---- GEMM bit-exactness ---------------------------------------------------- */

START_TEST(test_gemm_small_shapes_all_kernels)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {10};
    static const int64_t ms[] = {1, 2, 5, 7, 9, 13};
    static const int64_t ks[] = {1, 3, 4, 5, 63, 64, 65, 130};
    static const int64_t ns[] = {1, 7, 8, 9, 16, 17, 31, 33};
    size_t a, b, c;
    report_skips("test_gemm_small_shapes_all_kernels");
    for (a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (b = 0; b < sizeof ks / sizeof ks[0]; b++)
            for (c = 0; c < sizeof ns / sizeof ns[0]; c++)
                check_shape(ctx, ms[a], ks[b], ns[c], 2, 2, 2, 0, &s);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_gemm_random_shapes_and_bits)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {11};
    int trial, trials = th_quick() ? 25 : 80;
    report_skips("test_gemm_random_shapes_and_bits");
    for (trial = 0; trial < trials; trial++) {
        int64_t m = 1 + th_rng_below(&s, 120), k = 1 + th_rng_below(&s, 700);
        int64_t n = 1 + th_rng_below(&s, 100);
        int32_t cbits = 1 + (int32_t)th_rng_below(&s, 8), wbits = 2 + (int32_t)th_rng_below(&s, 7);
        check_shape(ctx, m, k, n, cbits, wbits, (int)th_rng_below(&s, 3), (int)th_rng_below(&s, 4),
                    &s);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* Extreme operands: every code and weight at its largest magnitude, so the
 * 16-bit partial sums of the AVX2 kernel sit at their bound, including the
 * one-step bound (7-bit codes x 8-bit weights, 8 x 7) and the nibble split
 * (8 x 8). */
START_TEST(test_gemm_saturation_corners)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {12};
    static const int32_t pairs[][2] = {{2, 2}, {4, 4}, {7, 8}, {8, 7}, {8, 8}, {8, 2}, {1, 8}};
    size_t i;
    int wmode;
    report_skips("test_gemm_saturation_corners");
    for (i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        for (wmode = 1; wmode <= 2; wmode++) {
            check_shape(ctx, 11, 1001, 19, pairs[i][0], pairs[i][1], 1, wmode, &s);
            check_shape(ctx, 3, 258, 40, pairs[i][0], pairs[i][1], 1, wmode, &s);
        }
    th_context_done(ctx, &st);
}
END_TEST

/* Long K with 2-bit codes: more 16-bit steps than one flush period of the
 * AVX2 kernel (5461 groups of 4), and the largest accumulators. */
START_TEST(test_gemm_long_k)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {13};
    report_skips("test_gemm_long_k");
    check_shape(ctx, 3, 4 * 5461 + 77, 18, 2, 2, 1, 1, &s);
    check_shape(ctx, 2, 4 * 5461 + 77, 18, 2, 2, 0, 0, &s);
    check_shape(ctx, 2, 3000, 20, 4, 4, 1, 2, &s);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_gemv_rows_of_one)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {14};
    const int64_t shape1[1] = {777};
    tsq_tensor *codes = make_codes(ctx, 1, 777, 2, 2, &s), *flat = NULL;
    tsq_tensor *w = make_weights(ctx, 777, 301, 2, 0, &s);
    tsq_packed_weights *pw = NULL;
    int32_t *want = brute(codes, w), *got;
    int i;
    report_skips("test_gemv_rows_of_one");
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    /* A 1-D code vector is one row. */
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 1, shape1, codes->data, 777, &flat));
    for (i = 0; i < NSIMD; i++) {
        if (!kernel_here(simd_kernels[i]))
            continue;
        got = run_gemm(ctx, pw, flat, 2, simd_kernels[i]);
        assert_same(want, got, 1, 301, "gemv", simd_kernels[i]);
        free(got);
    }
    got = run_gemm(ctx, pw, flat, 2, TSQ_KERNEL_REF);
    assert_same(want, got, 1, 301, "gemv", TSQ_KERNEL_REF);
    free(got);
    free(want);
    tsq_tensor_destroy(flat);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* Threads split rows (many rows) or columns (few rows); the result is the
 * same bits as one thread. */
START_TEST(test_gemm_threads)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {15};
    /* Each shape has enough work (>= 3 * 2^20 multiply-adds) for 3 threads. */
    static const int64_t shapes[][3] = {{1, 2000, 1700}, {5, 1500, 450}, {200, 150, 110},
                                        {500, 150, 100}};
    size_t a;
    int64_t threads;
    for (a = 0; a < sizeof shapes / sizeof shapes[0]; a++) {
        int64_t m = shapes[a][0], k = shapes[a][1], n = shapes[a][2];
        tsq_tensor *codes = make_codes(ctx, m, k, 2, 2, &s);
        tsq_tensor *w = make_weights(ctx, k, n, 2, 0, &s);
        tsq_packed_weights *pw = NULL;
        int32_t *want = brute(codes, w), *got;
        ck_assert_int_ge(m * k * n, 3 << 20);
        TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
        for (threads = 2; threads <= 3; threads++) {
            int kern;
            TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
            for (kern = TSQ_KERNEL_AUTO; kern <= TSQ_KERNEL_VPOPCNT; kern++) {
                if (!kernel_here(kern))
                    continue;
                got = run_gemm(ctx, pw, codes, 2, kern);
                assert_same(want, got, m, n, "threads", kern);
                free(got);
            }
        }
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1));
        free(want);
        tsq_packed_weights_destroy(pw);
        tsq_tensor_destroy(w);
        tsq_tensor_destroy(codes);
    }
    th_context_done(ctx, &st);
}
END_TEST

/* ---- workspace ------------------------------------------------------------ */

START_TEST(test_workspace_caller_supplied)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {16};
    tsq_tensor *codes = make_codes(ctx, 37, 99, 3, 0, &s);
    tsq_tensor *w = make_weights(ctx, 99, 45, 3, 0, &s);
    tsq_packed_weights *pw = NULL;
    int32_t *want = brute(codes, w), got[37 * 45];
    int k;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 3, &pw));
    for (k = TSQ_KERNEL_AUTO; k <= TSQ_KERNEL_VPOPCNT; k++) {
        uint64_t need;
        uint8_t *buf;
        int64_t allocs;
        if (!kernel_here(k))
            continue;
        TH_OK(ctx, tsq_lowbit_workspace_size(ctx, pw, 37, 3, k, &need));
        buf = malloc((size_t)need + 1);
        /* Any alignment will do; the call then allocates nothing. */
        allocs = st.total_allocs;
        TH_OK(ctx, tsq_lowbit_gemm(ctx, pw, codes, 3, k, got, 37 * 45, buf + 1, need));
        ck_assert_int_eq(st.total_allocs, allocs);
        assert_same(want, got, 37, 45, "caller workspace", k);
        /* One byte short: refused, acc untouched. */
        memset(got, 0x11, sizeof got);
        ck_assert_int_eq(tsq_lowbit_gemm(ctx, pw, codes, 3, k, got, 37 * 45, buf + 1, need - 1),
                         TSQ_ERR_TOO_SMALL);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "workspace has"));
        ck_assert_int_eq(got[0], 0x11111111);
        free(buf);
    }
    free(want);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* ---- kernel choice ---------------------------------------------------------- */

START_TEST(test_kernel_select)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {17};
    tsq_tensor *w = make_weights(ctx, 64, 8, 2, 0, &s);
    tsq_packed_weights *pw = NULL;
    int32_t chosen, avail, k;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    TH_OK(ctx, tsq_lowbit_kernel_select(ctx, pw, 10, 2, TSQ_KERNEL_AUTO, &chosen));
    ck_assert(chosen >= TSQ_KERNEL_REF && chosen <= TSQ_KERNEL_VPOPCNT);
    ck_assert(kernel_here(chosen));
    printf("test_kernel_select: auto picks '%s' for ternary x 2-bit here\n",
           tsq_kernel_name(chosen));
    for (k = TSQ_KERNEL_REF; k <= TSQ_KERNEL_VPOPCNT; k++) {
        if (kernel_here(k)) {
            TH_OK(ctx, tsq_lowbit_kernel_select(ctx, pw, 10, 2, k, &chosen));
            ck_assert_int_eq(chosen, k);
        } else {
            ck_assert_int_eq(tsq_lowbit_kernel_select(ctx, pw, 10, 2, k, &chosen),
                             TSQ_ERR_UNSUPPORTED);
            ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "this CPU does not have"));
        }
    }
    ck_assert_int_eq(tsq_lowbit_kernel_select(ctx, pw, 10, 2, 7, &chosen), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "unknown kernel 7"));
    ck_assert_int_eq(tsq_lowbit_kernel_select(ctx, pw, 0, 2, 0, &chosen), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_lowbit_kernel_select(ctx, pw, 1, 9, 0, &chosen), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_lowbit_kernel_select(ctx, NULL, 1, 2, 0, &chosen), TSQ_ERR_NULL);
    ck_assert_str_eq(tsq_kernel_name(TSQ_KERNEL_VPOPCNT), "vpopcnt");
    ck_assert_str_eq(tsq_kernel_name(TSQ_KERNEL_AVX2), "avx2");
    ck_assert_str_eq(tsq_kernel_name(42), "unknown");
    TH_OK(ctx, tsq_kernel_available(TSQ_KERNEL_REF, &avail));
    ck_assert_int_eq(avail, 1);
    ck_assert_int_eq(tsq_kernel_available(-1, &avail), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_kernel_available(TSQ_KERNEL_REF, NULL), TSQ_ERR_NULL);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    th_context_done(ctx, &st);
}
END_TEST

/* A forced kernel the CPU lacks: this machine may have them all, so the
 * resolution is also checked against a CPU without any feature. */
START_TEST(test_forced_kernel_missing)
{
    tsq__object obj;
    int32_t chosen = -1, k;
    tsq__object_init(&obj, NULL);
    for (k = TSQ_KERNEL_AVX2; k <= TSQ_KERNEL_VPOPCNT; k++) {
        ck_assert_int_eq(tsq__kernel_resolve_for(&obj, "lowbit_gemm", k, 0u, 4, 2, 2, &chosen),
                         TSQ_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(obj.msg, tsq_kernel_name(k)));
        ck_assert_ptr_nonnull(strstr(obj.msg, "this CPU does not have"));
        ck_assert_int_eq(chosen, -1);
    }
    ck_assert_ptr_nonnull(strstr(obj.msg, "VPOPCNTDQ"));
    TH_OK(NULL, tsq__kernel_resolve_for(&obj, "x", TSQ_KERNEL_AUTO, 0u, 4, 2, 2, &chosen));
    ck_assert_int_eq(chosen, TSQ_KERNEL_REF);
    TH_OK(NULL, tsq__kernel_resolve_for(&obj, "x", TSQ_KERNEL_AUTO, TSQ_CPU_AVX2 | TSQ_CPU_FMA,
                                        4, 2, 2, &chosen));
    ck_assert_int_eq(chosen, TSQ_KERNEL_AVX2);
}
END_TEST

/* The automatic choice follows the measured table (docs/kernels.md): the
 * bit-serial kernel for few rows or few bit planes, else VNNI, else AVX2. */
START_TEST(test_auto_choice_table)
{
    const uint32_t all = TSQ_CPU_AVX2 | TSQ_CPU_FMA | TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW |
                         TSQ_CPU_AVX512VL | TSQ_CPU_AVX512VNNI | TSQ_CPU_AVX512VPOPCNTDQ;
    const uint32_t no_popcnt = all & ~(uint32_t)TSQ_CPU_AVX512VPOPCNTDQ;
    static const struct {
        uint32_t features;
        int64_t m;
        int32_t cbits, wbits, want;
    } cases[] = {
        {0xFFFFFFFFu, 1, 8, 8, TSQ_KERNEL_VPOPCNT}, {0xFFFFFFFFu, 100, 2, 2, TSQ_KERNEL_VPOPCNT},
        {0xFFFFFFFFu, 100, 1, 4, TSQ_KERNEL_VPOPCNT}, {0xFFFFFFFFu, 100, 2, 3, TSQ_KERNEL_VNNI},
        {0xFFFFFFFFu, 9, 4, 2, TSQ_KERNEL_VNNI},
    };
    tsq__object obj;
    size_t i;
    int32_t chosen;
    tsq__object_init(&obj, NULL);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TH_OK(NULL, tsq__kernel_resolve_for(&obj, "x", TSQ_KERNEL_AUTO, cases[i].features & all,
                                            cases[i].m, cases[i].cbits, cases[i].wbits,
                                            &chosen));
        ck_assert_int_eq(chosen, cases[i].want);
    }
    TH_OK(NULL, tsq__kernel_resolve_for(&obj, "x", TSQ_KERNEL_AUTO, no_popcnt, 1, 2, 2, &chosen));
    ck_assert_int_eq(chosen, TSQ_KERNEL_VNNI);
}
END_TEST

/* ---- errors ------------------------------------------------------------------ */

START_TEST(test_gemm_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {18};
    const int64_t shape3[3] = {2, 3, 10};
    tsq_tensor *codes = make_codes(ctx, 4, 10, 2, 0, &s);
    tsq_tensor *w = make_weights(ctx, 10, 6, 2, 0, &s), *w9 = make_weights(ctx, 9, 6, 2, 0, &s);
    tsq_tensor *bad = NULL, *f = NULL;
    tsq_packed_weights *pw = NULL, *pw9 = NULL;
    int32_t acc[24], i;
    uint8_t *x;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    TH_OK(ctx, tsq_packed_weights_create(ctx, w9, 2, &pw9));
    for (i = 0; i < 24; i++)
        acc[i] = -7;
#define REFUSED(call, status, text)                                                  \
    do {                                                                             \
        ck_assert_int_eq((call), (status));                                          \
        ck_assert_msg(strstr(tsq_context_errmsg(ctx), (text)) != NULL, "message '%s'", \
                      tsq_context_errmsg(ctx));                                      \
        ck_assert_int_eq(acc[0], -7);                                                \
    } while (0)
    REFUSED(tsq_lowbit_gemm(ctx, pw9, codes, 2, 0, acc, 24, NULL, 0), TSQ_ERR_SHAPE,
            "codes have 10 columns, the weights 9 rows");
    REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 2, 0, acc, 23, NULL, 0), TSQ_ERR_TOO_SMALL,
            "acc holds 23 values");
    REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 0, 0, acc, 24, NULL, 0), TSQ_ERR_INVALID,
            "code_bits 0");
    REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 2, 5, acc, 24, NULL, 0), TSQ_ERR_INVALID,
            "unknown kernel 5");
    REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 2, 0, NULL, 24, NULL, 0), TSQ_ERR_NULL, "acc");
    REFUSED(tsq_lowbit_gemm(ctx, NULL, codes, 2, 0, acc, 24, NULL, 0), TSQ_ERR_NULL,
            "packed weights");
    REFUSED(tsq_lowbit_gemm(ctx, pw, NULL, 2, 0, acc, 24, NULL, 0), TSQ_ERR_NULL, "codes");
    REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 2, 0, acc, 24, NULL, 5), TSQ_ERR_NULL,
            "workspace is NULL");
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 3, shape3, &bad));
    REFUSED(tsq_lowbit_gemm(ctx, pw, bad, 2, 0, acc, 24, NULL, 0), TSQ_ERR_SHAPE,
            "3 dimensions");
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, codes->shape, &f));
    REFUSED(tsq_lowbit_gemm(ctx, pw, f, 2, 0, acc, 24, NULL, 0), TSQ_ERR_DTYPE, "dtype f32");
    /* A code above 2^n - 1, with its position. */
    TH_OK(ctx, tsq_tensor_data(codes, (void **)&x));
    x[2 * 10 + 7] = 4;
    for (i = TSQ_KERNEL_AUTO; i <= TSQ_KERNEL_VPOPCNT; i++)
        if (kernel_here(i))
            REFUSED(tsq_lowbit_gemm(ctx, pw, codes, 2, i, acc, 24, NULL, 0), TSQ_ERR_INVALID,
                    "codes[2][7] = 4 exceeds 2^2 - 1 = 3");
    TH_OK(ctx, tsq_lowbit_gemm(ctx, pw, codes, 3, 0, acc, 24, NULL, 0)); /* fine for 3 bits */
    ck_assert_int_eq(tsq_lowbit_gemm(NULL, pw, codes, 3, 0, acc, 24, NULL, 0), TSQ_ERR_NULL);
#undef REFUSED
    tsq_tensor_destroy(f);
    tsq_tensor_destroy(bad);
    tsq_packed_weights_destroy(pw9);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w9);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* K * maxcode * maxweight above 2^31 - 1 could overflow an accumulator. */
START_TEST(test_gemm_overflow_refused)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {19};
    int64_t k = INT32_MAX / (255 * 127) + 1;
    tsq_tensor *codes = make_codes(ctx, 1, k, 8, 0, &s);
    tsq_tensor *w = make_weights(ctx, k, 1, 8, 0, &s);
    tsq_packed_weights *pw = NULL;
    int32_t acc = -7;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 8, &pw));
    ck_assert_int_eq(tsq_lowbit_gemm(ctx, pw, codes, 8, 0, &acc, 1, NULL, 0), TSQ_ERR_OVERFLOW);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "can overflow int32"));
    ck_assert_int_eq(acc, -7);
    {
        uint8_t *x = codes->data;
        int64_t i;
        for (i = 0; i < k; i++)
            x[i] &= 127;
    }
    TH_OK(ctx, tsq_lowbit_gemm(ctx, pw, codes, 7, 0, &acc, 1, NULL, 0)); /* 7-bit codes fit */
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_gemm_out_of_memory)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {20};
    tsq_tensor *codes = make_codes(ctx, 4, 10, 2, 0, &s);
    tsq_tensor *w = make_weights(ctx, 10, 6, 2, 0, &s);
    tsq_packed_weights *pw = NULL;
    int32_t acc[24];
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    acc[0] = -7;
    st.fail_at = st.total_allocs + 1;
    ck_assert_int_eq(tsq_lowbit_gemm(ctx, pw, codes, 2, 0, acc, 24, NULL, 0), TSQ_ERR_NO_MEMORY);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "workspace"));
    ck_assert_int_eq(acc[0], -7);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* ---- fused thresholds ------------------------------------------------------ */

START_TEST(test_gemm_threshold_fused)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {21};
    int64_t m = 131, k = 288, n = 37, i;
    tsq_tensor *codes = make_codes(ctx, m, k, 2, 2, &s);
    tsq_tensor *w = make_weights(ctx, k, n, 2, 0, &s), *out = NULL;
    tsq_packed_weights *pw = NULL;
    tsq_thresholds *th = NULL;
    float alpha[37], bias[37], eps = 0.3f, delta = 0.65f;
    int32_t *acc = brute(codes, w);
    int threads, kk;
    const uint8_t *got;
    for (i = 0; i < n; i++) {
        alpha[i] = (float)((int)th_rng_below(&s, 200) - 60) / 1000.0f; /* some negative, one 0 */
        bias[i] = (float)((int)th_rng_below(&s, 200) - 100) / 100.0f;
    }
    alpha[5] = 0.0f;
    TH_OK(ctx, tsq_packed_weights_create(ctx, w, 2, &pw));
    TH_OK(ctx, tsq_thresholds_create(ctx, n, alpha, bias, 2, &eps, &delta, 1, &th));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, (const int64_t[]){m, n}, &out));
    got = out->data;
    for (threads = 1; threads <= 2; threads++) {
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, threads));
        for (kk = TSQ_KERNEL_AUTO; kk <= TSQ_KERNEL_VPOPCNT; kk++) {
            if (!kernel_here(kk))
                continue;
            TH_OK(ctx, tsq_tensor_fill(out, 77));
            TH_OK(ctx, tsq_lowbit_gemm_threshold(ctx, pw, codes, 2, th, kk, out, NULL, 0));
            for (i = 0; i < m * n; i++) {
                int32_t want = tsq__affine_code(acc[i], alpha[i % n], bias[i % n], eps,
                                                1.0f / delta, 3);
                ck_assert_msg(got[i] == want, "kernel %s: code[%lld][%lld] = %d, expected %d",
                              tsq_kernel_name(kk), (long long)(i / n), (long long)(i % n),
                              got[i], want);
            }
        }
    }
    /* Wrong channel count, wrong output size: refused, output untouched. */
    TH_OK(ctx, tsq_tensor_fill(out, 77));
    {
        tsq_thresholds *th2 = NULL;
        tsq_tensor *small = NULL;
        TH_OK(ctx, tsq_thresholds_create(ctx, n - 1, alpha, bias, 2, &eps, &delta, 1, &th2));
        ck_assert_int_eq(tsq_lowbit_gemm_threshold(ctx, pw, codes, 2, th2, 0, out, NULL, 0),
                         TSQ_ERR_SHAPE);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "36 channels"));
        TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 1, (const int64_t[]){m * n - 1}, &small));
        ck_assert_int_eq(tsq_lowbit_gemm_threshold(ctx, pw, codes, 2, th, 0, small, NULL, 0),
                         TSQ_ERR_SHAPE);
        ck_assert_int_eq(tsq_lowbit_gemm_threshold(ctx, pw, codes, 2, NULL, 0, out, NULL, 0),
                         TSQ_ERR_NULL);
        ck_assert_int_eq(got[0], 77);
        tsq_tensor_destroy(small);
        tsq_thresholds_destroy(th2);
    }
    free(acc);
    tsq_tensor_destroy(out);
    tsq_thresholds_destroy(th);
    tsq_packed_weights_destroy(pw);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(codes);
    th_context_done(ctx, &st);
}
END_TEST

/* ---- im2col ------------------------------------------------------------------ */

/* A direct integer convolution in NCHW against im2col + GEMM, for both
 * layouts (the NHWC weights are the same filters, reordered). */
static void check_conv(tsq_context *ctx, int64_t b, int64_t c, int64_t h, int64_t wd,
                       int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t ph, int32_t pw_,
                       int64_t cout, th_rng *s)
{
    int64_t oh = (h + 2 * ph - kh) / sh + 1, ow = (wd + 2 * pw_ - kw) / sw + 1;
    int64_t rows = b * oh * ow, cols = c * kh * kw, i, n, oy, ox, co, ci, ky, kx, yy, xx;
    tsq_tensor *in = NULL, *in_hwc = NULL, *patches = NULL, *wt, *wt_hwc = NULL;
    tsq_packed_weights *pk = NULL, *pk_hwc = NULL;
    uint8_t *x, *xh;
    int8_t *wv, *wh;
    int32_t *acc = malloc((size_t)(rows * cout) * sizeof *acc);
    int32_t *acc2 = malloc((size_t)(rows * cout) * sizeof *acc2);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, (const int64_t[]){b, c, h, wd}, &in));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, (const int64_t[]){b, h, wd, c}, &in_hwc));
    x = in->data;
    xh = in_hwc->data;
    for (n = 0; n < b; n++)
        for (ci = 0; ci < c; ci++)
            for (yy = 0; yy < h; yy++)
                for (xx = 0; xx < wd; xx++) {
                    uint8_t v = (uint8_t)th_rng_below(s, 4);
                    x[((n * c + ci) * h + yy) * wd + xx] = v;
                    xh[((n * h + yy) * wd + xx) * c + ci] = v;
                }
    wt = make_weights(ctx, cols, cout, 2, 0, s); /* rows (ci, ky, kx) */
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, (const int64_t[]){cols, cout}, &wt_hwc));
    wv = wt->data;
    wh = wt_hwc->data;
    for (ci = 0; ci < c; ci++)
        for (ky = 0; ky < kh; ky++)
            for (kx = 0; kx < kw; kx++)
                for (co = 0; co < cout; co++)
                    wh[((ky * kw + kx) * c + ci) * cout + co] =
                        wv[((ci * kh + ky) * kw + kx) * cout + co];
    TH_OK(ctx, tsq_packed_weights_create(ctx, wt, 2, &pk));
    TH_OK(ctx, tsq_packed_weights_create(ctx, wt_hwc, 2, &pk_hwc));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, (const int64_t[]){rows, cols}, &patches));
    TH_OK(ctx, tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, kh, kw, sh, sw, ph, pw_, patches));
    TH_OK(ctx, tsq_lowbit_gemm(ctx, pk, patches, 2, TSQ_KERNEL_AUTO, acc, rows * cout, NULL, 0));
    TH_OK(ctx, tsq_im2col_codes(ctx, in_hwc, TSQ_LAYOUT_NHWC, kh, kw, sh, sw, ph, pw_, patches));
    TH_OK(ctx, tsq_lowbit_gemm(ctx, pk_hwc, patches, 2, TSQ_KERNEL_AUTO, acc2, rows * cout, NULL,
                               0));
    for (n = 0; n < b; n++)
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++)
                for (co = 0; co < cout; co++) {
                    int32_t sum = 0;
                    for (ci = 0; ci < c; ci++)
                        for (ky = 0; ky < kh; ky++)
                            for (kx = 0; kx < kw; kx++) {
                                yy = oy * sh - ph + ky;
                                xx = ox * sw - pw_ + kx;
                                if (yy < 0 || yy >= h || xx < 0 || xx >= wd)
                                    continue;
                                sum += x[((n * c + ci) * h + yy) * wd + xx] *
                                       wv[((ci * kh + ky) * kw + kx) * cout + co];
                            }
                    i = ((n * oh + oy) * ow + ox) * cout + co;
                    ck_assert_int_eq(acc[i], sum);
                    ck_assert_int_eq(acc2[i], sum);
                }
    free(acc);
    free(acc2);
    tsq_packed_weights_destroy(pk);
    tsq_packed_weights_destroy(pk_hwc);
    tsq_tensor_destroy(patches);
    tsq_tensor_destroy(wt);
    tsq_tensor_destroy(wt_hwc);
    tsq_tensor_destroy(in);
    tsq_tensor_destroy(in_hwc);
}

START_TEST(test_im2col_conv)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    th_rng s = {22};
    check_conv(ctx, 2, 3, 7, 6, 3, 3, 1, 1, 1, 1, 5, &s);
    check_conv(ctx, 1, 4, 9, 8, 3, 2, 2, 1, 0, 1, 33, &s);
    check_conv(ctx, 3, 1, 5, 5, 1, 1, 1, 1, 0, 0, 2, &s);
    check_conv(ctx, 2, 32, 14, 14, 3, 3, 1, 1, 1, 1, 64, &s); /* a Fashion-MNIST layer */
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_im2col_errors)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_tensor *in = NULL, *out = NULL, *in3 = NULL, *f = NULL;
    const uint8_t *o;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, (const int64_t[]){1, 2, 4, 4}, &in));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, (const int64_t[]){16, 18}, &out));
    TH_OK(ctx, tsq_tensor_fill(out, 9));
    o = out->data;
    TH_OK(ctx, tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 1, 1, out));
    ck_assert_int_eq(o[0], 0);
    TH_OK(ctx, tsq_tensor_fill(out, 9));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 0, 0, out),
                     TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "out must be 4 x 18"));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, 7, 3, 3, 1, 1, 1, 1, out), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "unknown layout 7"));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 0, 3, 1, 1, 0, 0, out),
                     TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 3, 3, 0, 1, 0, 0, out),
                     TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 3, 0, out),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "padding"));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 7, 3, 1, 1, 1, 1, out),
                     TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "does not fit"));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 3, (const int64_t[]){2, 4, 4}, &in3));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in3, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 1, 1, out),
                     TSQ_ERR_SHAPE);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, (const int64_t[]){16, 18}, &f));
    ck_assert_int_eq(tsq_im2col_codes(ctx, in, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 1, 1, f),
                     TSQ_ERR_DTYPE);
    ck_assert_int_eq(tsq_im2col_codes(ctx, NULL, TSQ_LAYOUT_NCHW, 3, 3, 1, 1, 1, 1, out),
                     TSQ_ERR_NULL);
    ck_assert_int_eq(o[5], 9);
    tsq_tensor_destroy(f);
    tsq_tensor_destroy(in3);
    tsq_tensor_destroy(out);
    tsq_tensor_destroy(in);
    th_context_done(ctx, &st);
}
END_TEST

/* Inside libtsq's parallel regions the BLAS runs one thread: every worker
 * calls it, and an OpenBLAS threading each call as well collapses (a
 * net with TSQ_CONTEXT_THREADS = 2 ran several times slower). Checked
 * through the count each worker sees, not through timings; afterwards the
 * caller's count is back. */
typedef struct {
    int seen[8];
} blas_seen;

static void record_blas_threads(void *arg, int64_t i)
{
    ((blas_seen *)arg)->seen[i] = tsq__blas_threads();
}

START_TEST(test_blas_single_threaded_in_regions)
{
    blas_seen b;
    int before, i;
#if defined(TSQ_BLAS_OPENBLAS)
    openblas_set_num_threads(2);
#endif
    before = tsq__blas_threads();
    memset(&b, 0, sizeof b);
    tsq__parallel_for(4, 8, record_blas_threads, &b);
    for (i = 0; i < 8; i++)
        ck_assert_int_eq(b.seen[i], 1);
    ck_assert_int_eq(tsq__blas_threads(), before);
    /* One thread: no region, the BLAS keeps its own threads. */
    tsq__parallel_for(1, 2, record_blas_threads, &b);
    ck_assert_int_eq(b.seen[0], before);
}
END_TEST

/* The one im2col (kernels/conv.h) against a brute-force window read: u8
 * and f32 elements, both layouts, all or listed positions, rectangular
 * strides and padding. */
static double elem_at(const void *x, size_t es, int64_t i)
{
    if (es == 1)
        return ((const uint8_t *)x)[i];
    return ((const float *)x)[i];
}

static void check_rows(size_t es, int32_t layout, int64_t n, int64_t c, int64_t h, int64_t w,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                       int sampled, th_rng *rng)
{
    tsq__conv_geom g;
    tsq__object obj;
    int64_t npos, b, i, ci, ky, kx, numel = n * c * h * w;
    unsigned char *x = malloc((size_t)numel * es), *rows;
    int64_t *pos = NULL;
    memset(&obj, 0, sizeof obj);
    ck_assert_int_eq(tsq__conv_geom_check(&obj, "test", c, h, w, kh, kw, sh, sw, ph, pw, &g),
                     TSQ_OK);
    for (i = 0; i < numel; i++) { /* never 0, so a padding cell shows */
        uint64_t r = th_rng_next(rng);
        if (es == 1)
            x[i] = (unsigned char)(1 + (r >> 60));
        else
            ((float *)x)[i] = (float)(1 + (r >> 40) % 1000) / 8.0f;
    }
    npos = sampled ? (g.ohw + 1) / 2 : g.ohw;
    if (sampled) {
        pos = malloc((size_t)(n * npos) * sizeof *pos);
        for (i = 0; i < n * npos; i++)
            pos[i] = (i * 7 + i / npos) % g.ohw;
    }
    rows = malloc((size_t)(n * npos * g.k) * es);
    tsq__im2col_rows(&g, es, layout, x, rows, 0, n, pos, npos);
    for (b = 0; b < n; b++)
        for (i = 0; i < npos; i++) {
            int64_t p = pos ? pos[b * npos + i] : i, oy = p / g.ow, ox = p % g.ow;
            const unsigned char *row = rows + (size_t)((b * npos + i) * g.k) * es;
            for (ci = 0; ci < c; ci++)
                for (ky = 0; ky < kh; ky++)
                    for (kx = 0; kx < kw; kx++) {
                        int64_t iy = oy * sh - ph + ky, ix = ox * sw - pw + kx, col, src;
                        double want = 0.0;
                        col = layout == TSQ__NCHW ? (ci * kh + ky) * kw + kx
                                                  : (ky * kw + kx) * c + ci;
                        src = layout == TSQ__NCHW ? ((b * c + ci) * h + iy) * w + ix
                                                  : ((b * h + iy) * w + ix) * c + ci;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                            want = elem_at(x, es, src);
                        ck_assert_msg(elem_at(row, es, col) == want,
                                      "es %d layout %d image %lld position %lld column %lld",
                                      (int)es, (int)layout, (long long)b, (long long)p,
                                      (long long)col);
                    }
        }
    free(rows);
    free(pos);
    free(x);
}

START_TEST(test_im2col_rows_one_kernel)
{
    th_rng seed = {5};
    int32_t layout;
    for (layout = TSQ__NCHW; layout <= TSQ__NHWC; layout++) {
        check_rows(1, layout, 2, 3, 7, 6, 3, 3, 1, 1, 1, 1, 0, &seed);
        check_rows(1, layout, 3, 5, 9, 8, 3, 2, 2, 1, 0, 1, 1, &seed);
        check_rows(4, layout, 2, 7, 6, 5, 2, 3, 1, 2, 1, 2, 0, &seed);
        check_rows(4, layout, 1, 9, 5, 5, 1, 1, 1, 1, 0, 0, 1, &seed);
    }
}
END_TEST

/* The code max-pool (NHWC bytes, SIMD inside) against a brute-force
 * window maximum, with channel counts around the vector width. */
START_TEST(test_code_maxpool)
{
    const int64_t cs[] = {1, 15, 16, 17, 37, 64};
    th_rng seed = {3};
    size_t t;
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        int64_t c = cs[t], n = 3, h = 7, w = 6, k = 2, s = 2, oh = 3, ow = 3, i, b, y, x, ch;
        uint8_t *in = malloc((size_t)(n * h * w * c)), *out = malloc((size_t)(n * oh * ow * c));
        for (i = 0; i < n * h * w * c; i++)
            in[i] = (uint8_t)(th_rng_next(&seed) >> 56);
        tsq__maxpool_u8_nhwc(in, out, 0, n, h, w, c, oh, ow, k, s);
        for (b = 0; b < n; b++)
            for (y = 0; y < oh; y++)
                for (x = 0; x < ow; x++)
                    for (ch = 0; ch < c; ch++) {
                        int64_t a, d;
                        uint8_t m = 0;
                        for (a = 0; a < k; a++)
                            for (d = 0; d < k; d++) {
                                uint8_t v = in[((b * h + y * s + a) * w + x * s + d) * c + ch];
                                m = v > m ? v : m;
                            }
                        ck_assert_int_eq(out[((b * oh + y) * ow + x) * c + ch], m);
                    }
        free(in);
        free(out);
    }
}
END_TEST

/* ---- bit-plane activations (kernels/bitplane.h) ---- */

/* Bit b of the code of channel c at pixel (y, x) of a bit-plane image. */
static int bp_bit(const tsq__bp_geom *g, const uint8_t *img, int32_t b, int64_t y, int64_t x,
                  int64_t c)
{
    const uint8_t *px = img + b * g->plane + ((y + g->pad) * (g->w + 2 * g->pad) + x + g->pad) * g->cb;
    return (px[c / 8] >> (c % 8)) & 1;
}

/* Codes to planes: every code's bits where the layout says, zeros elsewhere
 * (channels padded to bytes, the border), and the AVX-512 version the same
 * bytes; odd channel counts (1, 5, 17, 37, 70) and two paddings. */
START_TEST(test_bitplane_from_codes)
{
    const int64_t cs[] = {1, 5, 8, 17, 32, 37, 64, 70};
    th_rng seed = {11};
    size_t t;
    int64_t pad;
    int32_t nb;
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (pad = 0; pad <= 1; pad++)
            for (nb = 1; nb <= 2; nb++) {
                tsq__bp_geom g;
                int64_t i, y, x, c, set = 0, want = 0;
                uint8_t *codes, *a, *b2;
                int32_t b;
                tsq__bp_geom_init(&g, cs[t], 5, 7, pad, nb);
                codes = malloc((size_t)(5 * 7 * cs[t]));
                a = malloc((size_t)g.image);
                b2 = malloc((size_t)g.image);
                for (i = 0; i < 5 * 7 * cs[t]; i++)
                    codes[i] = (uint8_t)th_rng_below(&seed, 1 << nb);
                memset(a, 0xAB, (size_t)g.image);
                tsq__bp_from_codes_ref(&g, codes, a);
                for (y = 0; y < 5; y++)
                    for (x = 0; x < 7; x++)
                        for (c = 0; c < cs[t]; c++)
                            for (b = 0; b < nb; b++) {
                                int bit = (codes[(y * 7 + x) * cs[t] + c] >> b) & 1;
                                ck_assert_int_eq(bp_bit(&g, a, b, y, x, c), bit);
                                want += bit;
                            }
                for (i = 0; i < g.image; i++)
                    set += __builtin_popcount(a[i]);
                ck_assert_int_eq(set, want); /* nothing else set */
                if (kernel_here(TSQ_KERNEL_VPOPCNT)) {
                    memset(b2, 0x5A, (size_t)g.image);
                    tsq__bp_from_codes_avx512(&g, codes, b2);
                    ck_assert_int_eq(memcmp(a, b2, (size_t)g.image), 0);
                }
                free(codes);
                free(a);
                free(b2);
            }
}
END_TEST

/* The im2col gather of a tile: bit k = tsq__bp_k(ky, kx, c) of row (oy, ox)
 * is the code bit at the window's pixel (zero in the border), zero beyond;
 * windows 3 x 3 and 1 x 2, strides 1 and 2, tiles starting mid-row; rows
 * of up to 4 registers (70 channels: 27 bytes a window row, 81 an im2col
 * row, so window rows straddle 64-byte boundaries) and beyond (200
 * channels: the byte-copy fallback); window rows of up to 16 and 32 bytes
 * take the plain-load path (buffers with the documented slack). */
START_TEST(test_bitplane_gather)
{
    const int64_t cs[] = {1, 5, 17, 32, 37, 64, 70, 200};
    const int64_t wins[][2] = {{3, 3}, {1, 2}};
    th_rng seed = {12};
    size_t t, wi;
    int64_t stride;
    int bytes;
    for (bytes = 0; bytes <= 1; bytes++)
        for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
            for (wi = 0; wi < 2; wi++)
                for (stride = 1; stride <= 2; stride++) {
                    int64_t h = 6, w = 7, pad = wins[wi][0] == 3 ? 1 : 0, i, r, q0, rowb;
                    tsq__bp_geom g;
                    tsq__bp_window win;
                    uint8_t *codes, *img;
                    uint64_t *a, *b2;
                    tsq__bp_geom_fill(&g, cs[t], h, w, pad, 2, bytes);
                    win.kh = wins[wi][0];
                    win.kw = wins[wi][1];
                    win.stride = stride;
                    win.oh = (h + 2 * pad - win.kh) / stride + 1;
                    win.ow = (w + 2 * pad - win.kw) / stride + 1;
                    win.kwords = (win.kh * win.kw * g.cb + 7) / 8;
                    codes = malloc((size_t)(h * w * cs[t]));
                    img = calloc(1, (size_t)(g.image + TSQ__BP_SLACK));
                    for (i = 0; i < h * w * cs[t]; i++)
                        codes[i] = (uint8_t)th_rng_below(&seed, 4);
                    if (bytes)
                        tsq__bp_bytes_from_codes(&g, codes, img);
                    else
                        tsq__bp_from_codes_ref(&g, codes, img);
                    q0 = win.ow / 2; /* mid-row start */
                    r = win.oh * win.ow - q0;
                    rowb = g.planes * win.kwords * 8;
                    a = malloc((size_t)(r * rowb));
                    b2 = malloc((size_t)(r * rowb) + TSQ__BP_SLACK);
                    memset(a, 0xFF, (size_t)(r * rowb));
                    tsq__bp_gather_ref(&g, &win, img, q0, r, a);
                    for (i = 0; i < r; i++) {
                        int64_t oy = (q0 + i) / win.ow, ox = (q0 + i) % win.ow, ky, kx, c, k;
                        int32_t b;
                        for (b = 0; b < g.planes; b++) {
                            const uint64_t *row = a + (i * g.planes + b) * win.kwords;
                            const uint8_t *rb = (const uint8_t *)row;
                            int64_t ones = 0, want = 0;
                            for (ky = 0; ky < win.kh; ky++)
                                for (kx = 0; kx < win.kw; kx++)
                                    for (c = 0; c < cs[t]; c++) {
                                        int64_t y = oy * stride + ky - pad, x = ox * stride + kx - pad;
                                        int code = y >= 0 && y < h && x >= 0 && x < w
                                                       ? codes[(y * w + x) * cs[t] + c]
                                                       : 0;
                                        k = tsq__bp_k(&g, win.kw, ky, kx, c);
                                        if (bytes) {
                                            ck_assert_int_eq(rb[k], code);
                                            want += code;
                                        } else {
                                            int bit = (code >> b) & 1;
                                            ck_assert_int_eq((int)((row[k / 64] >> (k % 64)) & 1), bit);
                                            want += bit;
                                        }
                                    }
                            for (k = 0; k < win.kwords * 8; k++)
                                ones += bytes ? rb[k] : __builtin_popcount(rb[k]);
                            ck_assert_int_eq(ones, want); /* nothing else set */
                        }
                    }
                    if (kernel_here(TSQ_KERNEL_VPOPCNT)) {
                        memset(b2, 0x33, (size_t)(r * rowb));
                        tsq__bp_gather_avx512(&g, &win, img, q0, r, b2);
                        ck_assert_int_eq(memcmp(a, b2, (size_t)(r * rowb)), 0);
                    }
                    free(codes);
                    free(img);
                    free(a);
                    free(b2);
                }
}
END_TEST

/* The VNNI and AVX2 kernels reading a convolution's window rows in place
 * from the byte layout give the bits of the same kernel on the gathered
 * im2col rows:
 * channel counts whose window rows are whole groups of 4 k, strides 1 and
 * 2, a start mid-row, row counts that leave partial tiles, 13 and 40
 * output channels (partial panels), and random weights in the panels'
 * padding past the window (where the gathered rows hold zeros), and 1368
 * channels (a window of more than 1024 groups of 4 k; more than the 2730
 * groups after which the AVX2 kernel widens its 16-bit sums). */
START_TEST(test_conv_in_place)
{
    const int64_t cs[] = {4, 8, 12, 20, 36, 64, 1368}, ns[] = {13, 40};
    th_rng seed = {15};
    size_t t, ni;
    int64_t stride;
    int vnni = kernel_here(TSQ_KERNEL_VNNI), avx2 = kernel_here(TSQ_KERNEL_AVX2);
    if (!vnni && !avx2) {
        say_skip("test_conv_in_place", TSQ_KERNEL_AVX2);
        return;
    }
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (ni = 0; ni < 2; ni++)
            for (stride = 1; stride <= 2; stride++) {
                int64_t h = 6, w = 7, pad = 1, n = ns[ni], i, r, q0, k, k4n, np, p, q, l, e;
                tsq__bp_geom g;
                tsq__bp_window win;
                uint8_t *codes, *img, *xp;
                const uint8_t **rows;
                int8_t *dec;
                int32_t *a1, *a2;
                tsq__bp_geom_bytes(&g, cs[t], h, w, pad, 2);
                win.kh = win.kw = 3;
                win.stride = stride;
                win.oh = (h + 2 * pad - 3) / stride + 1;
                win.ow = (w + 2 * pad - 3) / stride + 1;
                win.kwords = (9 * g.cb + 7) / 8;
                k = win.kwords * 8;
                k4n = (k + 3) / 4;
                np = (n + 15) / 16;
                codes = malloc((size_t)(h * w * cs[t]));
                img = calloc(1, (size_t)(g.image + TSQ__BP_SLACK));
                for (i = 0; i < h * w * cs[t]; i++)
                    codes[i] = (uint8_t)th_rng_below(&seed, 4);
                tsq__bp_bytes_from_codes(&g, codes, img);
                dec = malloc((size_t)(np * k4n * 64));
                for (p = 0; p < np; p++)
                    for (q = 0; q < k4n; q++)
                        for (l = 0; l < 16; l++)
                            for (e = 0; e < 4; e++)
                                dec[(p * k4n + q) * 64 + 4 * l + e] =
                                    16 * p + l < n ? (int8_t)((int)th_rng_below(&seed, 3) - 1)
                                                   : 0;
                q0 = win.ow / 2;
                r = win.oh * win.ow - q0;
                xp = malloc((size_t)(r * k) + TSQ__BP_SLACK);
                rows = malloc((size_t)r * sizeof *rows);
                a1 = malloc((size_t)(r * 48) * sizeof(int32_t));
                a2 = malloc((size_t)(r * 48) * sizeof(int32_t));
                tsq__bp_gather_ref(&g, &win, img, q0, r, (uint64_t *)(void *)xp);
                for (i = 0; i < r; i++) {
                    int64_t oy = (q0 + i) / win.ow, ox = (q0 + i) % win.ow;
                    rows[i] = img + oy * stride * g.row + ox * stride * g.cb;
                }
                for (e = 0; e < 2; e++) {
                    if (!(e ? avx2 : vnni))
                        continue;
                    memset(a1, 0x11, (size_t)(r * 48) * sizeof(int32_t));
                    memset(a2, 0x22, (size_t)(r * 48) * sizeof(int32_t));
                    if (e) { /* 2-bit codes times ternary weights: products up to 3 */
                        tsq__gemm_avx2(xp, k, r, k, dec, 3, 0, n, a1, 48);
                        tsq__conv_avx2(rows, r, 3, 3 * g.cb, g.row, k, dec, 3, 0, n, a2, 48);
                    } else {
                        tsq__gemm_vnni(xp, k, r, k, dec, 0, n, a1, 48);
                        tsq__conv_vnni(rows, r, 3, 3 * g.cb, g.row, k, dec, 0, n, a2, 48);
                    }
                    for (i = 0; i < r; i++)
                        ck_assert_int_eq(
                            memcmp(a1 + i * 48, a2 + i * 48, (size_t)n * sizeof(int32_t)), 0);
                    /* Both equal the plain sums over the window. */
                    for (i = 0; i < r; i += 5)
                        for (l = 0; l < n; l += 3) {
                            int64_t sum = 0, kk;
                            for (kk = 0; kk < 9 * g.cb; kk++)
                                sum += (int64_t)xp[i * k + kk] *
                                       dec[((l / 16) * k4n + kk / 4) * 64 + (l % 16) * 4 + kk % 4];
                            ck_assert_int_eq(a2[i * 48 + l], sum);
                        }
                }
                free(codes);
                free(img);
                free(dec);
                free(xp);
                free(rows);
                free(a1);
                free(a2);
            }
}
END_TEST

/* The threshold epilogue into planes (and into the byte layout): each
 * output bit (byte) is the code of
 * tsq__thresholds_apply_ref (the max over the 2 x 2 window when pooled,
 * odd widths and heights floored), on bands of rows, negative and positive
 * scales, 1-, 2- and 3-bit codes and odd channel counts; the AVX-512
 * versions (and the AVX2 one of the byte layout) write the same bytes. */
/* The pair kernel (gemm_pairs_avx2.c) against plain sums: a 3 x 3
 * convolution read in place from the pair layout (channel counts not a
 * multiple of 8, strides 1 and 2, column counts across the 64-column
 * blocks), and the gemm form on rows of k not a multiple of 64, batch-like
 * row counts 1, 7 and 257; ternary weights (byte sums flushed every 21
 * pairs) and weights with -2 (every 10), including the all-extreme corners
 * the flush bound is for. */
static int32_t pair_code(const uint8_t *x, int64_t k)
{
    return (x[k / 2] >> (4 + 2 * (k % 2))) & 3;
}

START_TEST(test_pairs_product)
{
    const int64_t cs[] = {2, 6, 10, 34, 64}, ns[] = {1, 13, 64, 70, 130};
    th_rng seed = {29};
    size_t t, ni;
    int neg;
    if (!kernel_here(TSQ_KERNEL_AVX2)) {
        say_skip("test_pairs_product", TSQ_KERNEL_AVX2);
        return;
    }
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (neg = 0; neg <= 1; neg++) {
                int64_t h = 6, w = 7, pad = 1, n = ns[ni], C = cs[t], stride = 1 + (int64_t)(ni % 2);
                int64_t oh = (h + 2 * pad - 3) / stride + 1, ow = (w + 2 * pad - 3) / stride + 1;
                int64_t kpairs = (9 * C / 2 + 7) / 8 * 8, k = 2 * kpairs, m = oh * ow, i, l;
                int32_t flush = neg ? 10 : 21;
                tsq__bp_geom g;
                uint8_t *codes = malloc((size_t)(h * w * C)), *img, *panels;
                int8_t *wt = calloc((size_t)(k * n), 1);
                int32_t *acc = malloc((size_t)(m * 136) * sizeof(int32_t));
                const uint8_t **rows = malloc((size_t)m * sizeof *rows);
                tsq__bp_geom_pairs(&g, C, h, w, pad, 2);
                img = calloc(1, (size_t)g.image);
                panels = malloc((size_t)tsq__pair_panel_bytes(k, n));
                for (i = 0; i < h * w * C; i++)
                    codes[i] = (uint8_t)th_rng_below(&seed, 4);
                tsq__bp_bytes_from_codes(&g, codes, img);
                for (i = 0; i < 9 * C * n; i++)
                    wt[i] = (int8_t)((int)th_rng_below(&seed, neg ? 4 : 3) - (neg ? 2 : 1));
                tsq__pair_panels(wt, k, n, panels);
                for (i = 0; i < m; i++)
                    rows[i] = img + (i / ow) * stride * g.row + (i % ow) * stride * g.cb;
                memset(acc, 0x55, (size_t)(m * 136) * sizeof(int32_t));
                tsq__conv_pairs_avx2(rows, m, 3, 3 * g.cb, g.row, kpairs, panels, flush, n, acc,
                                     136);
                for (i = 0; i < m; i++) {
                    int64_t oy = i / ow, ox = i % ow;
                    for (l = 0; l < n; l++) {
                        int64_t sum = 0, ky, kx, ci;
                        for (ky = 0; ky < 3; ky++)
                            for (kx = 0; kx < 3; kx++)
                                for (ci = 0; ci < C; ci++) {
                                    int64_t y = oy * stride + ky - pad, x = ox * stride + kx - pad;
                                    if (y < 0 || y >= h || x < 0 || x >= w)
                                        continue;
                                    sum += codes[(y * w + x) * C + ci] *
                                           wt[((ky * 3 + kx) * C + ci) * n + l];
                                }
                        ck_assert_int_eq(acc[i * 136 + l], sum);
                    }
                    ck_assert_int_eq(acc[i * 136 + n], 0x55555555); /* nothing past n */
                }
                free(codes);
                free(img);
                free(panels);
                free(wt);
                free(acc);
                free(rows);
            }
    { /* the gemm form; corners: every code 3 times every weight -2 (or 1) */
        const int64_t ms[] = {1, 7, 257}, kps[] = {1, 37, 1568};
        size_t a, b;
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++)
                for (neg = 0; neg <= 3; neg++) {
                    int64_t m = ms[a], kpairs = kps[b], k = 2 * kpairs, n = 70, ldx = kpairs + 3;
                    int64_t i, l, q;
                    int32_t flush = neg % 2 ? 10 : 21;
                    uint8_t *x = malloc((size_t)(m * ldx)), *panels;
                    int8_t *wt = malloc((size_t)(k * n));
                    int32_t *acc = malloc((size_t)(m * n) * sizeof(int32_t));
                    panels = malloc((size_t)tsq__pair_panel_bytes(k, n));
                    for (i = 0; i < m * ldx; i++)
                        x[i] = neg >= 2 ? 16 * 15 : (uint8_t)(16 * th_rng_below(&seed, 16));
                    for (i = 0; i < k * n; i++)
                        wt[i] = neg >= 2 ? (int8_t)(neg % 2 ? -2 : 1)
                                         : (int8_t)((int)th_rng_below(&seed, neg ? 4 : 3) -
                                                    (neg ? 2 : 1));
                    tsq__pair_panels(wt, k, n, panels);
                    tsq__gemm_pairs_avx2(x, ldx, m, kpairs, panels, flush, n, acc, n);
                    for (i = 0; i < m; i++)
                        for (l = 0; l < n; l++) {
                            int64_t sum = 0;
                            for (q = 0; q < k; q++)
                                sum += pair_code(x + i * ldx, q) * wt[q * n + l];
                            ck_assert_int_eq(acc[i * n + l], sum);
                        }
                    free(x);
                    free(panels);
                    free(wt);
                    free(acc);
                }
    }
}
END_TEST

/* The byte-layout epilogue into geometry g (bytes or pairs), band by band:
 * each channel's code, read from its byte and shift, is the largest of
 * its pool window's codes (codes: the thresholds' NHWC output), and the
 * AVX2 and AVX-512 versions write the reference's bytes (AVX-512: bytes
 * only). */
static void check_epilogue_bytes(const tsq_thresholds *th, const int32_t *acc, int64_t C,
                                 int64_t oh, int64_t ow, int64_t band, int pool,
                                 const tsq__bp_geom *g, const uint8_t *codes)
{
    uint8_t *ra = calloc(1, (size_t)g->image), *rv = calloc(1, (size_t)g->image);
    uint8_t *r2 = calloc(1, (size_t)g->image);
    int64_t y0, oy, ox, c, s = pool ? 2 : 1;
    int avx512 = g->bytes == 1 && kernel_here(TSQ_KERNEL_VPOPCNT), avx2 = kernel_here(TSQ_KERNEL_AVX2);
    for (y0 = 0; y0 < oh; y0 += band) {
        int64_t nr = oh - y0 < band ? oh - y0 : band;
        const int32_t *a = acc + y0 * ow * C;
        tsq__bp_epilogue_bytes_ref(th, a, C, y0, nr, ow, pool, g, ra);
        if (avx512)
            tsq__bp_epilogue_bytes_avx512(th, a, C, y0, nr, ow, pool, g, rv);
        if (avx2)
            tsq__bp_epilogue_bytes_avx2(th, a, C, y0, nr, ow, pool, g, r2);
    }
    for (oy = 0; oy < g->h; oy++)
        for (ox = 0; ox < g->w; ox++)
            for (c = 0; c < C; c++) {
                int64_t dy, dx;
                int32_t want = 0;
                uint8_t byte = ra[((oy + 1) * (g->w + 2) + ox + 1) * g->cb + tsq__bp_byte_of(g, c)];
                for (dy = 0; dy < s; dy++)
                    for (dx = 0; dx < s; dx++) {
                        int32_t v = codes[((oy * s + dy) * ow + ox * s + dx) * C + c];
                        want = v > want ? v : want;
                    }
                ck_assert_int_eq((byte >> tsq__bp_shift_of(g, c)) & (g->bytes == 2 ? 3 : 255), want);
            }
    if (avx512)
        ck_assert_int_eq(memcmp(ra, rv, (size_t)g->image), 0);
    if (avx2)
        ck_assert_int_eq(memcmp(ra, r2, (size_t)g->image), 0);
    free(ra);
    free(rv);
    free(r2);
}

START_TEST(test_bitplane_epilogue)
{
    const int64_t cs[] = {1, 5, 16, 17, 33, 64};
    tsq_context *ctx = NULL;
    th_rng seed = {13};
    size_t t;
    int32_t bits;
    int pool;
    ck_assert_int_eq(tsq_context_create(&ctx), TSQ_OK);
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (bits = 1; bits <= 3; bits++)
            for (pool = 0; pool <= 1; pool++) {
                int64_t C = cs[t], oh = 7, ow = 5, i, y0, band = 4, oy, ox, c;
                int64_t gh = pool ? oh / 2 : oh, gw = pool ? ow / 2 : ow;
                float alpha[64], bias[64], eps = 0.1f, delta = 0.4f;
                int32_t *acc = malloc((size_t)(oh * ow * C) * sizeof(int32_t));
                uint8_t *codes = malloc((size_t)(oh * ow * C)), *a, *b2;
                tsq_thresholds *th = NULL;
                tsq__bp_geom g;
                tsq__bp_geom_init(&g, C, gh, gw, 1, bits);
                a = calloc(1, (size_t)g.image);
                b2 = calloc(1, (size_t)g.image);
                for (c = 0; c < C; c++) {
                    alpha[c] = (float)(th_rng_below(&seed, 2) ? 0.05 : -0.05) *
                               (float)(1 + th_rng_below(&seed, 4));
                    bias[c] = 0.1f * (float)(th_rng_below(&seed, 11) - 5);
                }
                for (i = 0; i < oh * ow * C; i++)
                    acc[i] = (int32_t)th_rng_below(&seed, 81) - 40;
                ck_assert_int_eq(tsq_thresholds_create(ctx, C, alpha, bias, bits, &eps, &delta,
                                                       1, &th), TSQ_OK);
                tsq__thresholds_apply_ref(th, acc, C, oh * ow, 0, C, codes, C);
                for (y0 = 0; y0 < oh; y0 += band) {
                    int64_t nr = oh - y0 < band ? oh - y0 : band;
                    tsq__bp_epilogue_ref(th, acc + y0 * ow * C, C, y0, nr, ow, pool, &g, a);
                    if (kernel_here(TSQ_KERNEL_VPOPCNT))
                        tsq__bp_epilogue_avx512(th, acc + y0 * ow * C, C, y0, nr, ow, pool, &g, b2);
                }
                for (oy = 0; oy < gh; oy++)
                    for (ox = 0; ox < gw; ox++)
                        for (c = 0; c < C; c++) {
                            int64_t s = pool ? 2 : 1, dy, dx;
                            int32_t want = 0, got = 0, b;
                            for (dy = 0; dy < s; dy++)
                                for (dx = 0; dx < s; dx++) {
                                    int32_t v = codes[((oy * s + dy) * ow + ox * s + dx) * C + c];
                                    want = v > want ? v : want;
                                }
                            for (b = 0; b < bits; b++)
                                got |= bp_bit(&g, a, b, oy, ox, c) << b;
                            ck_assert_int_eq(got, want);
                        }
                if (kernel_here(TSQ_KERNEL_VPOPCNT))
                    ck_assert_int_eq(memcmp(a, b2, (size_t)g.image), 0);
                { /* the byte layout (the codes themselves), and the pair layout */
                    tsq__bp_geom gb;
                    tsq__bp_geom_bytes(&gb, C, gh, gw, 1, bits);
                    check_epilogue_bytes(th, acc, C, oh, ow, band, pool, &gb, codes);
                    if (C % 2 == 0 && bits <= 2) {
                        tsq__bp_geom_pairs(&gb, C, gh, gw, 1, bits);
                        ck_assert_int_eq(gb.cb, C / 2);
                        check_epilogue_bytes(th, acc, C, oh, ow, band, pool, &gb, codes);
                    }
                }
                tsq_thresholds_destroy(th);
                free(acc);
                free(codes);
                free(a);
                free(b2);
            }
    tsq_context_destroy(ctx);
}
END_TEST

/* The float front into planes: the AVX-512 version writes the bytes of the
 * reference, which holds tsq__quant_code of the affine and ReLU outputs
 * (computed here as the separate stages do), with and without the affine
 * and the ReLU, per-channel code widths, widths not a multiple of 16 and
 * 5, 32, 37 and 64 channels. */
START_TEST(test_bitplane_encode)
{
    const int64_t cs[] = {5, 32, 37, 64};
    th_rng seed = {14};
    size_t t;
    int32_t nb, mode;
    for (t = 0; t < sizeof cs / sizeof cs[0]; t++)
        for (nb = 1; nb <= 2; nb++)
            for (mode = 0; mode < 4; mode++) {
                int64_t C = cs[t], h = 3, w = 21, i, c, y, x;
                int affine = mode & 1, relu = (mode >> 1) & 1;
                float *xs = malloc((size_t)(C * h * w) * sizeof(float));
                float a[64], b[64], eps[64], inv[64];
                int32_t maxc[64];
                uint8_t *r1, *r2;
                tsq__bp_geom g;
                tsq__bp_geom_init(&g, C, h, w, 1, nb);
                r1 = malloc((size_t)g.image);
                r2 = malloc((size_t)g.image);
                for (c = 0; c < C; c++) {
                    a[c] = 0.5f + (float)th_rng_below(&seed, 100) / 50.0f;
                    b[c] = (float)(th_rng_below(&seed, 100) - 50) / 100.0f;
                    eps[c] = c % 3 == 0 ? -0.1f : (float)th_rng_below(&seed, 40) / 100.0f;
                    inv[c] = 1.0f / (0.2f + (float)th_rng_below(&seed, 40) / 100.0f);
                    maxc[c] = nb == 2 && c % 4 ? 3 : 1;
                }
                for (i = 0; i < C * h * w; i++)
                    xs[i] = (float)(th_rng_below(&seed, 2001) - 1000) / 700.0f;
                xs[0] = -0.0f;
                tsq__bp_encode_ref(&g, xs, affine ? a : NULL, b, relu, eps, inv, maxc, r1);
                for (c = 0; c < C; c++)
                    for (y = 0; y < h; y++)
                        for (x = 0; x < w; x++) {
                            float v = xs[(c * h + y) * w + x];
                            int32_t code, got = 0, bit;
                            if (affine)
                                v = a[c] * v + b[c];
                            if (relu)
                                v = v > 0.0f ? v : 0.0f;
                            code = tsq__quant_code(v, eps[c], inv[c], maxc[c]);
                            for (bit = 0; bit < nb; bit++)
                                got |= bp_bit(&g, r1, bit, y, x, c) << bit;
                            ck_assert_int_eq(got, code);
                        }
                if (kernel_here(TSQ_KERNEL_VPOPCNT)) {
                    memset(r2, 0x77, (size_t)g.image);
                    tsq__bp_encode_avx512(&g, xs, affine ? a : NULL, b, relu, eps, inv, maxc, r2);
                    ck_assert_int_eq(memcmp(r1, r2, (size_t)g.image), 0);
                }
                { /* the byte layout: the codes themselves */
                    tsq__bp_geom gb;
                    uint8_t *q1, *q2;
                    tsq__bp_geom_bytes(&gb, C, h, w, 1, nb);
                    q1 = malloc((size_t)gb.image);
                    q2 = malloc((size_t)gb.image);
                    tsq__bp_encode_bytes_ref(&gb, xs, affine ? a : NULL, b, relu, eps, inv, maxc,
                                             q1);
                    for (c = 0; c < C; c++)
                        for (y = 0; y < h; y++)
                            for (x = 0; x < w; x++) {
                                int32_t got = 0, bit;
                                for (bit = 0; bit < nb; bit++)
                                    got |= bp_bit(&g, r1, bit, y, x, c) << bit;
                                ck_assert_int_eq(q1[((y + 1) * (w + 2) + x + 1) * C + c], got);
                            }
                    if (kernel_here(TSQ_KERNEL_VPOPCNT)) {
                        memset(q2, 0x77, (size_t)gb.image);
                        tsq__bp_encode_bytes_avx512(&gb, xs, affine ? a : NULL, b, relu, eps, inv,
                                                    maxc, q2);
                        ck_assert_int_eq(memcmp(q1, q2, (size_t)gb.image), 0);
                    }
                    free(q1);
                    free(q2);
                }
                free(xs);
                free(r1);
                free(r2);
            }
}
END_TEST

/* Geometries of the direct convolution: the fmnist first layer, channel
 * counts and widths that are no multiple of 8 or 16, a 5 x 5 window, a
 * 3 x 1 window, more channels than the kernels' blocks. */
static const int64_t direct_geoms[][7] = {
    /* cin, h, w, cout, kh, kw, pad */
    {1, 28, 28, 32, 3, 3, 1}, {3, 7, 19, 13, 3, 3, 1}, {1, 6, 9, 17, 5, 5, 2},
    {3, 5, 40, 9, 3, 1, 0},   {1, 3, 2, 70, 2, 2, 1},
};
#define SMALL_DIRECT (sizeof direct_geoms / sizeof direct_geoms[0])
/* Larger patches, direct only with a SIMD kernel: one chain (k = 288, the
 * fmnist net's; 405; k = 447, 448 terms with the bias, the longest), two
 * (k = 448 with the bias, 449 without, 576, and 450 cut off the channel
 * boundaries), odd and even output heights (the AVX-512 kernel's row
 * pairs), channel counts no multiple of 8. */
static const int64_t direct_big_geoms[][7] = {
    {32, 14, 14, 11, 3, 3, 1}, {149, 12, 13, 3, 3, 1, 1}, {7, 13, 14, 9, 8, 8, 4},
    {5, 11, 12, 16, 9, 9, 4}, {64, 12, 12, 10, 3, 3, 1}, {50, 13, 13, 11, 3, 3, 1},
};
#define ALL_DIRECT (SMALL_DIRECT + sizeof direct_big_geoms / sizeof direct_big_geoms[0])

static void direct_geom(size_t i, tsq__conv_geom *g)
{
    const int64_t *d = i < SMALL_DIRECT ? direct_geoms[i] : direct_big_geoms[i - SMALL_DIRECT];
    uint32_t simd = TSQ_CPU_AVX2 | TSQ_CPU_FMA;
    ck_assert(tsq__conv_geom_init(g, d[0], d[1], d[2], d[3], d[4], d[5], 1, d[6]));
    ck_assert(tsq__conv_direct_runs(g, simd));
    ck_assert(tsq__conv_direct_runs(g, 0) == (i < SMALL_DIRECT));
}

static void fill_signed(th_rng *r, float *v, int64_t n, int zeros)
{
    int64_t i;
    for (i = 0; i < n; i++)
        v[i] = zeros && i % 5 == 0 ? 0.0f : (float)(th_rng_below(r, 2001) - 1000) / 997.0f;
}

/* The chains of image 0's outputs (with the bias) written out from the
 * rule itself: up to 448 terms one chain, else a first chain over the
 * first half of the k + 1 terms rounded up to 16 and a second over the
 * rest, the bias last, added. */
/* y against each output's chains written out from the rule: k + 1 terms
 * (the bias the last) without a scale, k with one (then scale * chain +
 * bias). */
static void check_chains(const tsq__conv_geom *g, const float *x, const float *w,
                         const float *scale, const float *b, const float *y)
{
    int64_t terms = g->k + (scale ? 0 : 1);
    int64_t split = terms <= 448 ? g->k : (terms / 2 + 15) / 16 * 16;
    int64_t co, p;
    ck_assert_int_eq(tsq__conv_direct_split(g, !scale), split);
    for (co = 0; co < g->cout; co++)
        for (p = 0; p < g->ohw; p++) {
            float first = 0.0f, acc = 0.0f, out;
            int64_t t;
            for (t = 0; t < g->k; t++) {
                int64_t c = t / (g->kh * g->kw), ky = t / g->kw % g->kh, kx = t % g->kw;
                int64_t iy = p / g->ow - g->pad + ky, ix = p % g->ow - g->pad + kx;
                float v = iy < 0 || iy >= g->h || ix < 0 || ix >= g->w
                              ? 0.0f
                              : x[(c * g->h + iy) * g->w + ix];
                if (t == split) {
                    first = acc;
                    acc = 0.0f;
                }
                acc = fmaf(w[co * g->k + t], v, acc);
            }
            if (scale) {
                out = split < g->k ? first + acc : acc;
                out = scale[co] * out + b[co];
            } else {
                out = split < g->k ? first + (acc + b[co]) : acc + b[co];
            }
            ck_assert_int_eq(memcmp(&out, y + co * g->ohw + p, sizeof out), 0);
        }
}

/* The direct convolution: every kernel this CPU runs writes the C
 * oracle's bits; the oracle is the convolution (against a sum in double,
 * to float rounding); tsq__conv_forward gives the same bits for 1 to 3
 * threads and any CPU features. Which geometries go direct is checked too:
 * large patches, strides and 1 x 1 convolutions stay on the GEMM. */
START_TEST(test_conv_direct)
{
    th_rng r = {41};
    size_t i;
    tsq__conv_geom big, strided, one;
    ck_assert(tsq__conv_geom_init(&big, 4, 9, 9, 8, 3, 3, 1, 1)); /* k = 36 */
    ck_assert(tsq__conv_geom_init(&strided, 1, 9, 9, 8, 3, 3, 2, 1));
    ck_assert(tsq__conv_geom_init(&one, 3, 9, 9, 8, 1, 1, 1, 0));
    ck_assert(!tsq__conv_direct_runs(&big, ~0u) && !tsq__conv_direct_runs(&strided, ~0u) &&
              !tsq__conv_direct_runs(&one, ~0u));
    for (i = 0; i < ALL_DIRECT; i++) {
        tsq__conv_geom g;
        int64_t nx, ny, batch = 5, co, p, n, threads;
        float *x, *w, *b, *sc, *y0, *y1, *ws, *pk;
        int scaled;
        direct_geom(i, &g);
        nx = g.cin * g.h * g.w;
        ny = g.cout * g.ohw;
        x = malloc((size_t)(batch * nx) * sizeof(float));
        w = malloc((size_t)(g.cout * g.k) * sizeof(float));
        b = malloc((size_t)g.cout * sizeof(float));
        sc = malloc((size_t)g.cout * sizeof(float));
        y0 = malloc((size_t)(batch * ny) * sizeof(float));
        y1 = malloc((size_t)(batch * ny) * sizeof(float));
        ws = malloc(tsq__conv_ws_floats(&g, 3, 0) * sizeof(float));
        pk = malloc((size_t)tsq__conv_direct_pack_floats(&g) * sizeof(float));
        fill_signed(&r, x, batch * nx, 1);
        fill_signed(&r, w, g.cout * g.k, 0);
        fill_signed(&r, b, g.cout, 0);
        fill_signed(&r, sc, g.cout, 0);
        tsq__conv_direct_pack(&g, w, pk);
        /* without and with a low-bit layer's scale */
        for (scaled = 0; scaled < 2; scaled++) {
            tsq__conv_direct_op op = {&g, w, pk, scaled ? sc : NULL, NULL};
            for (n = 0; n < batch; n++) {
                op.bias = n % 2 ? NULL : b;
                tsq__conv_direct_ref(&op, x + n * nx, y0 + n * ny, ws);
            }
            for (co = 0; co < g.cout; co++) /* image 0, with the bias */
                for (p = 0; p < g.ohw; p++) {
                    int64_t oy = p / g.ow, ox = p % g.ow, c, ky, kx;
                    double sum = 0.0, mag = 0.0, s = scaled ? sc[co] : 1.0;
                    for (c = 0; c < g.cin; c++)
                        for (ky = 0; ky < g.kh; ky++)
                            for (kx = 0; kx < g.kw; kx++) {
                                int64_t iy = oy - g.pad + ky, ix = ox - g.pad + kx;
                                double v = iy < 0 || iy >= g.h || ix < 0 || ix >= g.w
                                               ? 0.0
                                               : x[(c * g.h + iy) * g.w + ix];
                                double t = (double)w[(co * g.cin + c) * g.kh * g.kw + ky * g.kw + kx] * v;
                                sum += t;
                                mag += fabs(t);
                            }
                    sum = s * sum + b[co];
                    mag = fabs(s) * mag + fabs(b[co]);
                    ck_assert(fabs(y0[co * g.ohw + p] - sum) <= 4e-7 * (double)(g.k + 2) * mag);
                }
            check_chains(&g, x, w, op.scale, b, y0);
            if (kernel_here(TSQ_KERNEL_AVX2))
                for (n = 0; n < batch; n++) {
                    op.bias = n % 2 ? NULL : b;
                    tsq__conv_direct_avx2(&op, x + n * nx, y1 + n * ny, ws);
                    ck_assert_int_eq(memcmp(y0 + n * ny, y1 + n * ny, (size_t)ny * sizeof(float)), 0);
                    memset(y1 + n * ny, 0x55, (size_t)ny * sizeof(float));
                    tsq__conv_direct_ch_avx2(&op, x + n * nx, y1 + n * ny, ws);
                    ck_assert_int_eq(memcmp(y0 + n * ny, y1 + n * ny, (size_t)ny * sizeof(float)), 0);
                }
            if (kernel_here(TSQ_KERNEL_VPOPCNT) || kernel_here(TSQ_KERNEL_VNNI))
                for (n = 0; n < batch; n++) {
                    op.bias = n % 2 ? NULL : b;
                    tsq__conv_direct_avx512(&op, x + n * nx, y1 + n * ny, ws);
                    ck_assert_int_eq(memcmp(y0 + n * ny, y1 + n * ny, (size_t)ny * sizeof(float)), 0);
                    memset(y1 + n * ny, 0x55, (size_t)ny * sizeof(float));
                    tsq__conv_direct_ch_avx512(&op, x + n * nx, y1 + n * ny, ws);
                    ck_assert_int_eq(memcmp(y0 + n * ny, y1 + n * ny, (size_t)ny * sizeof(float)), 0);
                }
            op.bias = b;
            for (n = 0; n < batch; n++) /* the whole batch with the bias */
                tsq__conv_direct_ref(&op, x + n * nx, y0 + n * ny, ws);
            for (threads = 1; threads <= 3; threads++) {
                uint32_t cpus[] = {0, TSQ_CPU_AVX2 | TSQ_CPU_FMA, 0xFFFFFFFFu}, cpu;
                for (cpu = 0; cpu < 3; cpu++) {
                    uint32_t have = tsq__cpu_detect() & cpus[cpu];
                    if (!tsq__conv_direct_runs(&g, have))
                        continue; /* the GEMM's bits: the BLAS's own */
                    memset(y1, 0x55, (size_t)(batch * ny) * sizeof(float));
                    tsq__conv_forward(&g, threads, have, x, w, op.scale, b, y1, batch, ws);
                    ck_assert_int_eq(memcmp(y0, y1, (size_t)(batch * ny) * sizeof(float)), 0);
                }
            }
        }
        free(x);
        free(w);
        free(b);
        free(sc);
        free(y0);
        free(y1);
        free(ws);
        free(pk);
    }
}
END_TEST

/* Float max-pooling against the rule written out: each output is the
 * first maximum in window order (strict >, so ties keep the earlier value
 * and a NaN never replaces the best), its index in the plane the argmax.
 * Values from a small set make ties common; NaN and -inf are mixed in;
 * widths with 4-output groups and tails, odd planes, and a 3 x 3 window
 * (the generic loop). */
START_TEST(test_maxpool_f32)
{
    static const int64_t geoms[][4] = {{28, 28, 2, 2}, {14, 14, 2, 2}, {7, 9, 2, 2},
                                       {5, 19, 2, 2}, {9, 9, 3, 2}, {8, 8, 2, 1}};
    static const float vals[] = {0.0f, -0.0f, 1.0f, 1.0f, 2.0f, -3.0f, -INFINITY, 0.5f};
    th_rng r = {47};
    size_t i;
    for (i = 0; i < sizeof geoms / sizeof geoms[0]; i++) {
        int64_t h = geoms[i][0], w = geoms[i][1], k = geoms[i][2], s = geoms[i][3];
        int64_t oh = (h - k) / s + 1, ow = (w - k) / s + 1, planes = 3, j, pl, oy, ox;
        float *x = malloc((size_t)(planes * h * w) * sizeof(float));
        float *y = malloc((size_t)(planes * oh * ow) * sizeof(float));
        int32_t *am = malloc((size_t)(planes * oh * ow) * sizeof(int32_t));
        for (j = 0; j < planes * h * w; j++)
            x[j] = j % 29 == 5 ? NAN : vals[th_rng_below(&r, 8)];
        memset(am, 0xff, (size_t)(planes * oh * ow) * sizeof(int32_t));
        tsq__maxpool_f32(x, y, am, 1, planes, h, w, oh, ow, k, s); /* plane 0 untouched */
        ck_assert_int_eq(am[0], -1);
        for (pl = 1; pl < planes; pl++)
            for (oy = 0; oy < oh; oy++)
                for (ox = 0; ox < ow; ox++) {
                    const float *xp = x + pl * h * w;
                    int64_t best = oy * s * w + ox * s, a, b, o = pl * oh * ow + oy * ow + ox;
                    for (a = 0; a < k; a++)
                        for (b = 0; b < k; b++) {
                            int64_t idx = (oy * s + a) * w + ox * s + b;
                            if (xp[idx] > xp[best])
                                best = idx;
                        }
                    ck_assert_int_eq(am[o], best);
                    ck_assert_int_eq(memcmp(&y[o], &xp[best], sizeof(float)), 0);
                }
        free(x);
        free(y);
        free(am);
    }
}
END_TEST

/* Geometries of the direct backward (conv_grad.c): the fmnist net's
 * three, channel counts that are no multiple of 8 or 16 (and 40: a pair of
 * channel vectors, then one), odd heights (the dx kernel's row pairs),
 * and P = 576 and 930 positions (the weight gradient's depth cut in two
 * and in three blocks). */
static const int64_t grad_geoms[][7] = {
    {32, 28, 28, 32, 3, 3, 1}, {32, 14, 14, 64, 3, 3, 1}, {64, 14, 14, 64, 3, 3, 1},
    {5, 11, 12, 16, 9, 9, 4},  {50, 13, 13, 11, 3, 3, 1}, {8, 12, 12, 40, 3, 3, 1},
    {4, 24, 24, 5, 3, 3, 1},   {4, 30, 31, 3, 3, 3, 1},   {7, 13, 14, 9, 8, 8, 4},
};

/* The weight gradient's chains written out from the rule: blocks of at
 * most 448 positions, between 448 and 896 left cut at half rounded up to
 * 16, each chain from +0, added in order; acc is [dW db] transposed. */
static void check_grad_chains(const tsq__conv_geom *g, const float *x, const float *dy,
                              const float *acc, int64_t ld)
{
    int64_t co, t, P = g->ohw;
    for (co = 0; co < g->cout; co += 3)
        for (t = 0; t <= g->k; t += 7) {
            float sum = 0.0f;
            int64_t p0 = 0, n, p;
            for (; p0 < P; p0 += n) {
                float s = 0.0f;
                n = P - p0 >= 896 ? 448 : P - p0 > 448 ? ((P - p0) / 2 + 15) / 16 * 16 : P - p0;
                ck_assert_int_eq(tsq__conv_depth_block(P - p0), n);
                for (p = p0; p < p0 + n; p++) {
                    int64_t c = t / (g->kh * g->kw), ky = t / g->kw % g->kh, kx = t % g->kw;
                    int64_t iy = p / g->ow - g->pad + ky, ix = p % g->ow - g->pad + kx;
                    float v = t == g->k ? 1.0f
                              : iy < 0 || iy >= g->h || ix < 0 || ix >= g->w
                                  ? 0.0f
                                  : x[(c * g->h + iy) * g->w + ix];
                    s = fmaf(dy[co * P + p], v, s);
                }
                sum = sum + s;
            }
            ck_assert_int_eq(memcmp(&sum, acc + t * ld + co, sizeof sum), 0);
        }
}

/* The channel sums of batch-norm over rows: the rule written out (8
 * partials in double, element i to partial i % 8, the tail to partial 0,
 * folded in order, row after row) and every kernel this CPU runs give the
 * same bits. Values of mixed magnitudes make the order visible: a sum
 * taken in another order differs in its last bits. Row counts with and
 * without a remainder of 4 or 2 (the rows side by side of the AVX-512 and
 * AVX2 kernels), lengths with tails (196 = 24 * 8 + 4); the sums of dy
 * and dy x also with the ReLU's gradient folded in. */
static void sums_rule(const float *x, const float *dy, int64_t stride, int64_t rows, int64_t n,
                      double *a, double *b)
{
    int64_t r, i, k;
    for (r = 0; r < rows; r++) {
        double s[8] = {0}, q[8] = {0};
        for (i = 0; i < n; i++) {
            double v = x[r * stride + i], g = dy ? dy[r * stride + i] : v;
            k = i < n / 8 * 8 ? i % 8 : 0;
            s[k] += g;
            q[k] += g * v;
        }
        for (k = 0; k < 8; k++) {
            *a += s[k];
            *b += q[k];
        }
    }
}

START_TEST(test_vec_sums_rows)
{
    static const int64_t lens[] = {0, 1, 7, 8, 13, 196, 784};
    static const int64_t row_counts[] = {1, 3, 4, 5, 9, 128};
    uint32_t cpus[] = {0, tsq__cpu_detect()};
    th_rng r = {77};
    size_t li, ri, ci;
    for (li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (ri = 0; ri < sizeof row_counts / sizeof row_counts[0]; ri++) {
            int64_t n = lens[li], rows = row_counts[ri], stride = n + 5, i;
            float *x = malloc((size_t)(rows * stride + 1) * sizeof(float));
            float *dy = malloc((size_t)(rows * stride + 1) * sizeof(float));
            double w[4] = {0.25, -1.5, 0, 0}, want[4] = {0.25, -1.5, 0, 0};
            for (i = 0; i < rows * stride + 1; i++) {
                x[i] = (float)(th_rng_normal(&r) * (i % 3 ? 1.0 : 1e5));
                dy[i] = (float)(th_rng_normal(&r) * (i % 4 ? 1e-3 : 10.0));
            }
            sums_rule(x, NULL, stride, rows, n, &want[0], &want[1]);
            want[2] = 3.0;
            want[3] = -2.0;
            sums_rule(x, dy, stride, rows, n, &want[2], &want[3]);
            for (ci = 0; ci < 2; ci++) {
                double got[4] = {w[0], w[1], 3.0, -2.0};
                tsq__vec_sums_rows(cpus[ci], x, stride, rows, n, &got[0], &got[1]);
                tsq__vec_dot_sum_rows(cpus[ci], dy, x, stride, rows, n, &got[2], &got[3]);
                ck_assert_int_eq(memcmp(got, want, sizeof got), 0);
            }
            { /* with the ReLU's gradient: dy where 0.7 x - 0.2 > 0, else 0 */
                float *g = malloc((size_t)(rows * stride + 1) * sizeof(float));
                for (i = 0; i < rows * stride + 1; i++)
                    g[i] = 0.7f * x[i] + -0.2f > 0.0f ? dy[i] : 0.0f;
                want[2] = 3.0;
                want[3] = -2.0;
                sums_rule(x, g, stride, rows, n, &want[2], &want[3]);
                for (ci = 0; ci < 2; ci++) {
                    double got[2] = {3.0, -2.0};
                    tsq__vec_dot_sum_rows_relu(cpus[ci], dy, x, 0.7f, -0.2f, stride, rows, n,
                                               &got[0], &got[1]);
                    ck_assert_int_eq(memcmp(got, want + 2, sizeof got), 0);
                }
                free(g);
            }
            free(x);
            free(dy);
        }
}
END_TEST

/* The direct backward: the C oracle against the gradients in double (to
 * float rounding) and against its chains written out; the AVX2 and
 * AVX-512 kernels (those this CPU runs) give the oracle's bits;
 * tsq__conv_backward gives, for 1 to 3 threads and either kernel set, the
 * oracle's accumulators added in thread order. */
START_TEST(test_conv_grad)
{
    th_rng r = {47};
    size_t i;
    const uint32_t avx2 = TSQ_CPU_AVX2 | TSQ_CPU_FMA, need = avx2 | TSQ_CPU_AVX512F;
    uint32_t cpu = tsq__cpu_detect();
    int simd = (cpu & need) == need, simd2 = (cpu & avx2) == avx2;
    /* the AVX2 set alone, then (on AVX-512) the AVX-512 one */
    uint32_t sets[2] = {cpu & ~(uint32_t)TSQ_CPU_AVX512F, cpu};
    tsq__conv_geom big, thin;
    /* on AVX2 alone the GEMMs keep what they run faster (conv_grad.c):
     * more than 128 output channels, fewer than 8 input channels with more
     * than 16 outputs */
    ck_assert(tsq__conv_geom_init(&big, 64, 14, 14, 256, 3, 3, 1, 1));
    ck_assert(tsq__conv_grad_direct_runs(&big, need) && !tsq__conv_grad_direct_runs(&big, avx2));
    big.cout = 128;
    ck_assert(tsq__conv_grad_direct_runs(&big, avx2));
    ck_assert(tsq__conv_geom_init(&thin, 4, 28, 28, 32, 3, 3, 1, 1));
    ck_assert(tsq__conv_grad_direct_runs(&thin, need) && !tsq__conv_grad_direct_runs(&thin, avx2));
    thin.cout = 16;
    ck_assert(tsq__conv_grad_direct_runs(&thin, avx2));
    /* quick runs (valgrind, sanitizers) leave out the fmnist-sized three */
    for (i = th_quick() ? 3 : 0; i < sizeof grad_geoms / sizeof grad_geoms[0]; i++) {
        const int64_t *d = grad_geoms[i];
        tsq__conv_geom g;
        int64_t batch = 3, nx, ny, ld, cols, n, threads, t, co, c, iy, ix;
        float *x, *w, *dy, *acc, *acc1, *dx, *dx1, *ws, *scratch, *dw, *db, *wp;
        int set;
        ck_assert(tsq__conv_geom_init(&g, d[0], d[1], d[2], d[3], d[4], d[5], 1, d[6]));
        ck_assert(tsq__conv_grad_direct_runs(&g, need));
        ck_assert(tsq__conv_grad_direct_runs(&g, avx2));
        ck_assert(!tsq__conv_grad_direct_runs(&g, TSQ_CPU_AVX2));
        g.k = TSQ__CONV_DIRECT_K; /* a small patch's backward stays on the BLAS */
        ck_assert(!tsq__conv_grad_direct_runs(&g, need));
        ck_assert(!tsq__conv_grad_direct_runs(&g, avx2));
        g.k = g.cin * g.kh * g.kw;
        nx = g.cin * g.h * g.w;
        ny = g.cout * g.ohw;
        ld = tsq__conv_grad_ld(&g);
        cols = g.k + 1;
        x = malloc((size_t)(batch * nx) * sizeof(float));
        w = malloc((size_t)(g.cout * g.k) * sizeof(float));
        dy = malloc((size_t)(batch * ny) * sizeof(float));
        acc = calloc((size_t)(4 * ld * cols), sizeof(float)); /* per thread, up to 3, + total */
        acc1 = calloc((size_t)(ld * cols), sizeof(float));
        dx = malloc((size_t)(batch * nx) * sizeof(float));
        dx1 = malloc((size_t)(batch * nx) * sizeof(float));
        dw = malloc((size_t)(g.cout * g.k) * sizeof(float));
        db = malloc((size_t)g.cout * sizeof(float));
        scratch = malloc((size_t)tsq__conv_grad_ws_floats(&g) * sizeof(float));
        wp = malloc((size_t)tsq__conv_grad_prep_floats(&g) * sizeof(float));
        ws = malloc(tsq__conv_ws_floats(&g, 3, 1) * sizeof(float));
        fill_signed(&r, x, batch * nx, 1);
        fill_signed(&r, w, g.cout * g.k, 0);
        fill_signed(&r, dy, batch * ny, 1);
        ck_assert(tsq__conv_grad_prep_floats(&g) >= g.cout * g.k);
        tsq__conv_grad_prep_ref(&g, w, wp);
        ck_assert_int_eq(memcmp(w, wp, (size_t)(g.cout * g.k) * sizeof(float)), 0);
        for (n = 0; n < batch; n++) {
            tsq__conv_grad_dx_ref(&g, w, dy + n * ny, dx + n * nx, scratch);
            if (simd2) {
                if (n == 0)
                    tsq__conv_grad_prep_avx2(&g, w, wp);
                memset(dx1 + n * nx, 0x55, (size_t)nx * sizeof(float));
                tsq__conv_grad_dx_avx2(&g, wp, dy + n * ny, dx1 + n * nx, scratch);
                ck_assert_int_eq(memcmp(dx + n * nx, dx1 + n * nx, (size_t)nx * sizeof(float)), 0);
            }
            if (simd) {
                tsq__conv_grad_prep_avx512(&g, w, wp);
                tsq__conv_grad_dx_avx512(&g, wp, dy + n * ny, dx1 + n * nx, scratch);
                ck_assert_int_eq(memcmp(dx + n * nx, dx1 + n * nx, (size_t)nx * sizeof(float)), 0);
            }
        }
        /* image 0's dx against the sum in double */
        for (c = 0; c < g.cin; c++)
            for (iy = 0; iy < g.h; iy++)
                for (ix = 0; ix < g.w; ix++) {
                    double sum = 0.0, mag = 0.0;
                    int64_t ky, kx;
                    for (co = 0; co < g.cout; co++)
                        for (ky = 0; ky < g.kh; ky++)
                            for (kx = 0; kx < g.kw; kx++) {
                                int64_t oy = iy + g.pad - ky, ox = ix + g.pad - kx;
                                double v;
                                if (oy < 0 || oy >= g.oh || ox < 0 || ox >= g.ow)
                                    continue;
                                v = (double)w[(co * g.cin + c) * g.kh * g.kw + ky * g.kw + kx] *
                                    dy[(co * g.oh + oy) * g.ow + ox];
                                sum += v;
                                mag += fabs(v);
                            }
                    ck_assert(fabs(dx[(c * g.h + iy) * g.w + ix] - sum) <=
                              4e-7 * (double)(g.cout * g.kh * g.kw + 1) * mag);
                }
        tsq__conv_grad_dw_ref(&g, x, dy, cols, acc1, scratch);
        check_grad_chains(&g, x, dy, acc1, ld);
        if (simd2) { /* with the k columns of dW alone too (no bias) */
            memset(acc, 0, (size_t)(ld * cols) * sizeof(float));
            tsq__conv_grad_dw_avx2(&g, x, dy, cols, acc, scratch);
            ck_assert_int_eq(memcmp(acc, acc1, (size_t)(ld * cols) * sizeof(float)), 0);
            memset(acc, 0, (size_t)(ld * cols) * sizeof(float));
            tsq__conv_grad_dw_avx2(&g, x, dy, g.k, acc, scratch);
            ck_assert_int_eq(memcmp(acc, acc1, (size_t)(ld * g.k) * sizeof(float)), 0);
        }
        if (simd) {
            memset(acc, 0, (size_t)(ld * cols) * sizeof(float));
            tsq__conv_grad_dw_avx512(&g, x, dy, cols, acc, scratch);
            ck_assert_int_eq(memcmp(acc, acc1, (size_t)(ld * cols) * sizeof(float)), 0);
        }
        for (set = 0; set < (simd ? 2 : simd2 ? 1 : 0); set++)
            for (threads = 1; threads <= 3; threads++) {
                float *total = acc + 3 * ld * cols;
                memset(acc, 0, (size_t)(4 * ld * cols) * sizeof(float));
                for (n = 0; n < batch; n++)
                    tsq__conv_grad_dw_ref(&g, x + n * nx, dy + n * ny, cols,
                                          acc + (n % threads) * ld * cols, scratch);
                memcpy(total, acc, (size_t)(ld * cols) * sizeof(float));
                for (t = 1; t < threads; t++)
                    for (n = 0; n < ld * cols; n++)
                        total[n] += acc[t * ld * cols + n];
                memset(dx1, 0x55, (size_t)(batch * nx) * sizeof(float));
                tsq__conv_backward(&g, threads, sets[set], x, w, dy, dw, db, dx1, batch, ws);
                ck_assert_int_eq(memcmp(dx, dx1, (size_t)(batch * nx) * sizeof(float)), 0);
                for (co = 0; co < g.cout; co++) {
                    for (t = 0; t < g.k; t++)
                        ck_assert_int_eq(memcmp(dw + co * g.k + t, total + t * ld + co, 4), 0);
                    ck_assert_int_eq(memcmp(db + co, total + g.k * ld + co, 4), 0);
                }
            }
        free(x); free(w); free(dy); free(acc); free(acc1); free(dx); free(dx1);
        free(dw); free(db); free(scratch); free(ws); free(wp);
    }
    if (!simd2)
        fprintf(stderr, "test_conv_grad: no AVX2 + FMA here: the oracle alone was checked\n");
    else if (!simd)
        fprintf(stderr, "test_conv_grad: no AVX-512 here: the oracle and AVX2 were checked\n");
}
END_TEST

/* The first convolution fused with the front into the byte layout: the
 * bytes of the direct convolution followed by the reference front, with
 * and without bias, affine and ReLU, 1- and 2-bit codes, on the geometries
 * above (up to 70 channels: two passes of the AVX-512 kernel, three of the
 * AVX2 one, the last partial), and with eps below
 * half a step on some channels (negative on a third) or above it on all,
 * where the kernel leaves out the ReLU and the clamp at code 1. */
START_TEST(test_conv_front_bytes)
{
    th_rng r = {43};
    size_t i;
    int avx512 = kernel_here(TSQ_KERNEL_VNNI) || kernel_here(TSQ_KERNEL_VPOPCNT);
    int avx2 = kernel_here(TSQ_KERNEL_AVX2);
    if (!avx512 && !avx2) {
        say_skip("test_conv_front_bytes", TSQ_KERNEL_AVX2);
        return;
    }
    for (i = 0; i < sizeof direct_geoms / sizeof direct_geoms[0]; i++) {
        tsq__conv_geom g;
        int mode;
        direct_geom(i, &g);
        for (mode = 0; mode < 32; mode++) {
            int bias = mode & 1, affine = (mode >> 1) & 1, relu = (mode >> 2) & 1;
            int high_eps = (mode >> 4) & 1;
            int32_t nb = 1 + ((mode >> 3) & 1), c;
            int64_t nx = g.cin * g.h * g.w, ld = (g.cout + 15) / 16 * 16, t;
            float *x = malloc((size_t)nx * sizeof(float)), *w, *wt, *b, *y, *ws;
            float *a = malloc((size_t)g.cout * sizeof(float));
            float *sh = malloc((size_t)g.cout * sizeof(float));
            float *eps = malloc((size_t)g.cout * sizeof(float));
            float *inv = malloc((size_t)g.cout * sizeof(float));
            int32_t *maxc = malloc((size_t)g.cout * sizeof(int32_t));
            tsq__bp_geom og;
            tsq__conv_front f;
            uint8_t *q1, *q2;
            w = malloc((size_t)(g.cout * g.k) * sizeof(float));
            wt = calloc((size_t)(g.k * ld), sizeof(float));
            b = malloc((size_t)g.cout * sizeof(float));
            y = malloc((size_t)(g.cout * g.ohw) * sizeof(float));
            ws = malloc((size_t)tsq__conv_direct_ws_floats(&g) * sizeof(float));
            fill_signed(&r, x, nx, 1);
            fill_signed(&r, w, g.cout * g.k, 0);
            fill_signed(&r, b, g.cout, 0);
            for (c = 0; c < g.cout; c++) {
                a[c] = 0.5f + (float)th_rng_below(&r, 100) / 50.0f;
                sh[c] = (float)(th_rng_below(&r, 100) - 50) / 100.0f;
                eps[c] = c % 3 == 0 ? -0.1f : (float)th_rng_below(&r, 40) / 100.0f;
                inv[c] = 1.0f / (0.2f + (float)th_rng_below(&r, 40) / 100.0f);
                if (high_eps) /* eps inv from 0.51 to 0.9: every code above eps is >= 1 */
                    eps[c] = (0.51f + (float)th_rng_below(&r, 40) / 100.0f) / inv[c];
                maxc[c] = nb == 2 && c % 4 ? 3 : 1;
                for (t = 0; t < g.k; t++)
                    wt[t * ld + c] = w[c * g.k + t];
            }
            tsq__bp_geom_bytes(&og, g.cout, g.oh, g.ow, 1, nb);
            q1 = malloc((size_t)og.image);
            q2 = malloc((size_t)og.image);
            {
                tsq__conv_direct_op op = {&g, w, NULL, NULL, bias ? b : NULL};
                tsq__conv_direct_ref(&op, x, y, ws);
            }
            tsq__bp_encode_bytes_ref(&og, y, affine ? a : NULL, sh, relu, eps, inv, maxc, q1);
            f.g = &g;
            f.wt = wt;
            f.ld = ld;
            f.bias = bias ? b : NULL;
            f.a = affine ? a : NULL;
            f.b = sh;
            f.relu = relu;
            f.eps = eps;
            f.inv_delta = inv;
            f.maxcode = maxc;
            f.short_form = tsq__front_short_form(eps, inv, g.cout);
            if (avx512) {
                memset(q2, 0x77, (size_t)og.image);
                tsq__conv_front_bytes_avx512(&f, x, &og, q2, ws);
                ck_assert_int_eq(memcmp(q1, q2, (size_t)og.image), 0);
            }
            if (avx2) {
                memset(q2, 0x77, (size_t)og.image);
                tsq__conv_front_bytes_avx2(&f, x, &og, q2, ws);
                ck_assert_int_eq(memcmp(q1, q2, (size_t)og.image), 0);
            }
            free(x); free(w); free(wt); free(b); free(y); free(ws);
            free(a); free(sh); free(eps); free(inv); free(maxc); free(q1); free(q2);
        }
    }
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pack_roundtrip);
    tcase_add_test(tc, test_blas_single_threaded_in_regions);
    tcase_add_test(tc, test_im2col_rows_one_kernel);
    tcase_add_test(tc, test_code_maxpool);
    tcase_add_test(tc, test_bitplane_from_codes);
    tcase_add_test(tc, test_bitplane_gather);
    tcase_add_test(tc, test_conv_in_place);
    tcase_add_test(tc, test_pairs_product);
    tcase_add_test(tc, test_bitplane_epilogue);
    tcase_add_test(tc, test_bitplane_encode);
    tcase_add_test(tc, test_conv_direct);
    tcase_add_test(tc, test_maxpool_f32);
    tcase_add_test(tc, test_vec_sums_rows);
    tcase_add_test(tc, test_conv_grad);
    tcase_add_test(tc, test_conv_front_bytes);
    tcase_add_test(tc, test_pack_two_bits_per_ternary_weight);
    tcase_add_test(tc, test_pack_errors);
    tcase_add_test(tc, test_pack_out_of_memory);
    tcase_add_test(tc, test_decode_panels);
    tcase_add_test(tc, test_gemm_small_shapes_all_kernels);
    tcase_add_test(tc, test_gemm_random_shapes_and_bits);
    tcase_add_test(tc, test_gemm_saturation_corners);
    tcase_add_test(tc, test_gemm_long_k);
    tcase_add_test(tc, test_gemv_rows_of_one);
    tcase_add_test(tc, test_gemm_threads);
    tcase_add_test(tc, test_workspace_caller_supplied);
    tcase_add_test(tc, test_kernel_select);
    tcase_add_test(tc, test_forced_kernel_missing);
    tcase_add_test(tc, test_auto_choice_table);
    tcase_add_test(tc, test_gemm_errors);
    tcase_add_test(tc, test_gemm_overflow_refused);
    tcase_add_test(tc, test_gemm_out_of_memory);
    tcase_add_test(tc, test_gemm_threshold_fused);
    tcase_add_test(tc, test_im2col_conv);
    tcase_add_test(tc, test_im2col_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(kernels_suite()); }
