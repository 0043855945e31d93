/* Tensors: creation, wrapping, queries, copies, reshape, fill, and every
 * error path, with a counting allocator that proves nothing leaks. */
#include "harness.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

START_TEST(test_create_owned)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[4] = {2, 3, 4, 5};
    int64_t got[4], n, d;
    int32_t nd, dt;
    uint64_t nb;
    float *data;
    tsq_tensor *t = NULL;
    int i;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 4, shape, &t));
    TH_OK(ctx, tsq_tensor_ndim(t, &nd));
    ck_assert_int_eq(nd, 4);
    TH_OK(ctx, tsq_tensor_dtype(t, &dt));
    ck_assert_int_eq(dt, TSQ_DTYPE_F32);
    TH_OK(ctx, tsq_tensor_numel(t, &n));
    ck_assert_int_eq(n, 120);
    TH_OK(ctx, tsq_tensor_nbytes(t, &nb));
    ck_assert_uint_eq(nb, 480);
    TH_OK(ctx, tsq_tensor_dim(t, 2, &d));
    ck_assert_int_eq(d, 4);
    TH_OK(ctx, tsq_tensor_shape(t, got, 4, &nd));
    ck_assert_mem_eq(got, shape, sizeof shape);
    TH_OK(ctx, tsq_tensor_data(t, (void **)&data));
    for (i = 0; i < 120; i++)
        ck_assert(data[i] == 0.0f); /* created zero-filled */
    ck_assert_int_eq((int)((uintptr_t)data % 64), 0);
    tsq_tensor_destroy(t);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_wrap_no_copy)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    uint8_t buf[12] = {1, 2, 3};
    const int64_t shape[2] = {3, 4};
    tsq_tensor *t = NULL;
    void *p;
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, shape, buf, sizeof buf, &t));
    TH_OK(ctx, tsq_tensor_data(t, &p));
    ck_assert_ptr_eq(p, buf);
    TH_OK(ctx, tsq_tensor_fill(t, 7));
    ck_assert_int_eq(buf[11], 7);
    tsq_tensor_destroy(t);
    ck_assert_int_eq(buf[0], 7); /* the caller's memory survives the handle */
    /* Too small a buffer is refused. */
    ck_assert_int_eq(tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, shape, buf, 11, &t), TSQ_ERR_TOO_SMALL);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "11 bytes"));
    ck_assert_int_eq(tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, shape, NULL, 12, &t), TSQ_ERR_NULL);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_copy_roundtrip)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[1] = {5};
    int8_t in[5] = {-1, 0, 1, -128, 127}, out[5] = {0}, big[8];
    tsq_tensor *t = NULL;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, shape, &t));
    TH_OK(ctx, tsq_tensor_copy_in(t, in, sizeof in));
    TH_OK(ctx, tsq_tensor_copy_out(t, out, sizeof out));
    ck_assert_mem_eq(in, out, sizeof in);
    TH_OK(ctx, tsq_tensor_copy_out(t, big, sizeof big)); /* larger is fine */
    ck_assert_mem_eq(in, big, sizeof in);
    /* Size mismatches write nothing. */
    memset(out, 9, sizeof out);
    ck_assert_int_eq(tsq_tensor_copy_out(t, out, 4), TSQ_ERR_TOO_SMALL);
    ck_assert_ptr_nonnull(strstr(tsq_tensor_errmsg(t), "4 bytes"));
    ck_assert_int_eq(out[0], 9);
    ck_assert_int_eq(tsq_tensor_copy_in(t, in, 4), TSQ_ERR_TOO_SMALL);
    ck_assert_int_eq(tsq_tensor_copy_in(t, NULL, 5), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_copy_out(t, NULL, 5), TSQ_ERR_NULL);
    TH_OK(ctx, tsq_tensor_copy_out(t, out, sizeof out));
    ck_assert_mem_eq(in, out, sizeof in);
    ck_assert_str_eq(tsq_tensor_errmsg(t), "");
    tsq_tensor_destroy(t);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_bad_shapes)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_tensor *t = (tsq_tensor *)&st;
    const int64_t zero[2] = {3, 0}, neg[1] = {-1}, ok[2] = {2, 2};
    const int64_t huge[4] = {INT64_C(1) << 32, INT64_C(1) << 32, 2, 1};
    const int64_t huge_bytes[2] = {INT64_C(1) << 31, INT64_C(1) << 31};
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, zero, &t), TSQ_ERR_SHAPE);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "dimension 1 is 0"));
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, neg, &t), TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 0, ok, &t), TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 5, ok, &t), TSQ_ERR_SHAPE);
    ck_assert_int_eq(tsq_tensor_create(ctx, 42, 2, ok, &t), TSQ_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "unknown dtype 42"));
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, huge, &t), TSQ_ERR_OVERFLOW);
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, huge_bytes, &t), TSQ_ERR_OVERFLOW);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "overflows"));
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, NULL, &t), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, ok, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_create(NULL, TSQ_DTYPE_F32, 2, ok, &t), TSQ_ERR_NULL);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(st.live_blocks, 1); /* only the context itself */
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_alloc_failure_each_step)
{
    /* Fail the first, then the second allocation: both report NO_MEMORY
     * and leave nothing behind. */
    int64_t k;
    const int64_t shape[2] = {8, 8};
    for (k = 1; k <= 2; k++) {
        th_alloc_stats st;
        tsq_context *ctx = th_context(&st);
        tsq_tensor *t = NULL;
        st.fail_at = st.total_allocs + k;
        ck_assert_int_eq(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, &t), TSQ_ERR_NO_MEMORY);
        ck_assert_ptr_null(t);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "out of memory"));
        th_context_done(ctx, &st);
    }
}
END_TEST

START_TEST(test_reshape)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[2] = {4, 6}, good[3] = {2, 3, 4}, bad[2] = {5, 5};
    int64_t d;
    int32_t nd;
    tsq_tensor *t = NULL;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, &t));
    TH_OK(ctx, tsq_tensor_reshape(t, 3, good));
    TH_OK(ctx, tsq_tensor_ndim(t, &nd));
    ck_assert_int_eq(nd, 3);
    ck_assert_int_eq(tsq_tensor_reshape(t, 2, bad), TSQ_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tsq_tensor_errmsg(t), "25 elements"));
    TH_OK(ctx, tsq_tensor_ndim(t, &nd)); /* unchanged */
    ck_assert_int_eq(nd, 3);
    ck_assert_int_eq(tsq_tensor_dim(t, 3, &d), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_tensor_dim(t, -1, &d), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_tensor_reshape(t, 2, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_shape(t, &d, 1, &nd), TSQ_ERR_TOO_SMALL);
    tsq_tensor_destroy(t);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_fill_and_nonfinite)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[1] = {4};
    tsq_tensor *f = NULL, *u = NULL, *i8 = NULL;
    float *x;
    int64_t n;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, shape, &f));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 1, shape, &u));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, shape, &i8));
    TH_OK(ctx, tsq_tensor_fill(f, 1.5));
    TH_OK(ctx, tsq_tensor_data(f, (void **)&x));
    ck_assert(x[3] == 1.5f);
    ck_assert_int_eq(tsq_tensor_fill(f, NAN), TSQ_ERR_NOT_FINITE);
    ck_assert_int_eq(tsq_tensor_fill(f, 1e300), TSQ_ERR_INVALID);
    ck_assert(x[0] == 1.5f);
    ck_assert_int_eq(tsq_tensor_fill(u, 256), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_tensor_fill(u, 1.5), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_tensor_fill(i8, -129), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_tensor_fill(i8, -128));
    TH_OK(ctx, tsq_tensor_count_nonfinite(f, &n));
    ck_assert_int_eq(n, 0);
    x[1] = NAN;
    x[2] = -INFINITY;
    TH_OK(ctx, tsq_tensor_count_nonfinite(f, &n));
    ck_assert_int_eq(n, 2);
    TH_OK(ctx, tsq_tensor_count_nonfinite(u, &n));
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tsq_tensor_count_nonfinite(NULL, &n), TSQ_ERR_NULL);
    tsq_tensor_destroy(f);
    tsq_tensor_destroy(u);
    tsq_tensor_destroy(i8);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_null_handles)
{
    int32_t i;
    int64_t n;
    uint64_t b;
    void *p;
    tsq_tensor_destroy(NULL);
    ck_assert_str_eq(tsq_tensor_errmsg(NULL), "no tensor");
    ck_assert_int_eq(tsq_tensor_dtype(NULL, &i), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_ndim(NULL, &i), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_dim(NULL, 0, &n), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_numel(NULL, &n), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_nbytes(NULL, &b), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_shape(NULL, &n, 1, &i), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_data(NULL, &p), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_copy_in(NULL, &n, 8), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_copy_out(NULL, &n, 8), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_reshape(NULL, 1, &n), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_tensor_fill(NULL, 0), TSQ_ERR_NULL);
}
END_TEST

/* A NULL output pointer: TSQ_ERR_NULL with a message on the tensor. */
START_TEST(test_null_outputs)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[2] = {2, 3};
    tsq_tensor *t = NULL;
    int64_t s[4];
    int32_t nd;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, &t));
#define NULL_OUT(expr, sub)                                                              \
    do {                                                                                 \
        ck_assert_int_eq((expr), TSQ_ERR_NULL);                                          \
        ck_assert_msg(strstr(tsq_tensor_errmsg(t), sub) != NULL, "%s: message \"%s\"", \
                      #expr, tsq_tensor_errmsg(t));                                      \
    } while (0)
    NULL_OUT(tsq_tensor_dtype(t, NULL), "tensor_dtype: dtype is NULL");
    NULL_OUT(tsq_tensor_ndim(t, NULL), "tensor_ndim: ndim is NULL");
    NULL_OUT(tsq_tensor_dim(t, 0, NULL), "tensor_dim: size is NULL");
    NULL_OUT(tsq_tensor_numel(t, NULL), "tensor_numel: count is NULL");
    NULL_OUT(tsq_tensor_nbytes(t, NULL), "tensor_nbytes: nbytes is NULL");
    NULL_OUT(tsq_tensor_shape(t, NULL, 4, &nd), "tensor_shape: shape is NULL");
    NULL_OUT(tsq_tensor_shape(t, s, 4, NULL), "tensor_shape: ndim is NULL");
    NULL_OUT(tsq_tensor_data(t, NULL), "tensor_data: data is NULL");
    NULL_OUT(tsq_tensor_count_nonfinite(t, NULL), "tensor_count_nonfinite: count is NULL");
#undef NULL_OUT
    tsq_tensor_destroy(t);
    th_context_done(ctx, &st);
}
END_TEST

/* tsq_tensor_wrap refuses an f32 buffer that is not 4-byte aligned (as
 * tensor.h promises) and leaves *out NULL; byte types take any address. */
START_TEST(test_wrap_alignment)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[1] = {4};
    float store[6];
    char *base = (char *)store;
    tsq_tensor *t = (tsq_tensor *)base; /* any non-NULL value: must become NULL */
    int off;
    for (off = 1; off < 4; off++) {
        t = (tsq_tensor *)base;
        ck_assert_int_eq(tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, shape, base + off, 16, &t),
                         TSQ_ERR_INVALID);
        ck_assert_ptr_null(t);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "not aligned"));
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 1, shape, base + off, 4, &t));
        TH_OK(ctx, tsq_tensor_fill(t, 3));
        tsq_tensor_destroy(t);
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_I8, 1, shape, base + off, 4, &t));
        tsq_tensor_destroy(t);
    }
    TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 1, shape, base + 4, 16, &t));
    TH_OK(ctx, tsq_tensor_fill(t, 1.5));
    ck_assert(store[1] == 1.5f && store[4] == 1.5f);
    tsq_tensor_destroy(t);
    th_context_done(ctx, &st);
}
END_TEST

static Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("tensor");
    tcase_add_test(tc, test_create_owned);
    tcase_add_test(tc, test_wrap_no_copy);
    tcase_add_test(tc, test_copy_roundtrip);
    tcase_add_test(tc, test_bad_shapes);
    tcase_add_test(tc, test_alloc_failure_each_step);
    tcase_add_test(tc, test_reshape);
    tcase_add_test(tc, test_fill_and_nonfinite);
    tcase_add_test(tc, test_null_handles);
    tcase_add_test(tc, test_null_outputs);
    tcase_add_test(tc, test_wrap_alignment);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(tensor_suite()); }
