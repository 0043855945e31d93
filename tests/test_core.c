/* Core: versions, status strings, context options, allocator, info, CPU. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

START_TEST(test_version)
{
    char buf[32];
    ck_assert_uint_eq(tsq_version_number(), TSQ_VERSION_NUMBER);
    snprintf(buf, sizeof buf, "%d.%d.%d", TSQ_VERSION_MAJOR, TSQ_VERSION_MINOR,
             TSQ_VERSION_PATCH);
    ck_assert_str_eq(tsq_version_string(), buf);
    ck_assert_str_eq(TSQ_VERSION_STRING, buf);
}
END_TEST

START_TEST(test_status_strings)
{
    tsq_status s;
    ck_assert_str_eq(tsq_status_string(TSQ_OK), "TSQ_OK: success");
    for (s = TSQ_ERR_NULL; s <= TSQ_ERR_INTERNAL; s++) {
        const char *m = tsq_status_string(s);
        ck_assert_msg(strncmp(m, "TSQ_ERR_", 8) == 0, "status %d: %s", (int)s, m);
    }
    ck_assert_str_eq(tsq_status_string(-1), "unknown status");
    ck_assert_str_eq(tsq_status_string(TSQ_ERR_INTERNAL + 1), "unknown status");
    /* Frozen numbers: released values must never move. */
    ck_assert_int_eq(TSQ_ERR_NULL, 1);
    ck_assert_int_eq(TSQ_ERR_SHAPE, 3);
    ck_assert_int_eq(TSQ_ERR_NO_MEMORY, 6);
    ck_assert_int_eq(TSQ_ERR_INTERNAL, 15);
}
END_TEST

START_TEST(test_context_defaults_and_options)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    int64_t v, lo, hi;
    uint64_t seed;
    ck_assert_str_eq(tsq_context_errmsg(ctx), "");
    TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, &v));
    ck_assert_int_eq(v, 1);
    TH_OK(ctx, tsq_context_option_bounds(TSQ_CONTEXT_THREADS, &lo, &hi));
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, 256);
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 4));
    TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, &v));
    ck_assert_int_eq(v, 4);
    /* Out of bounds: refused, value unchanged, message says why. */
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 0), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "outside 1 .. 256"));
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 257), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, &v));
    ck_assert_int_eq(v, 4);
    ck_assert_int_eq(tsq_context_set_option(ctx, 999, 1), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "unknown key"));
    ck_assert_int_eq(tsq_context_get_option(ctx, 999, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_context_option_bounds(999, &lo, &hi), TSQ_ERR_INVALID);
    /* A successful call clears the message. */
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_LOG_LEVEL, 0));
    ck_assert_str_eq(tsq_context_errmsg(ctx), "");
    TH_OK(ctx, tsq_context_set_seed(ctx, 1234567890123ull));
    TH_OK(ctx, tsq_context_get_seed(ctx, &seed));
    ck_assert_uint_eq(seed, 1234567890123ull);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_context_null_paths)
{
    tsq_context *ctx = (tsq_context *)&ctx; /* must be reset to NULL */
    int64_t v;
    uint64_t s;
    const char *info;
    ck_assert_int_eq(tsq_context_create(NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_create_with_allocator(&ctx, NULL, th_free, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_null(ctx);
    ck_assert_int_eq(tsq_context_create_with_allocator(NULL, th_alloc, th_free, NULL),
                     TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_set_option(NULL, TSQ_CONTEXT_THREADS, 1), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_get_option(NULL, TSQ_CONTEXT_THREADS, &v), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_option_bounds(TSQ_CONTEXT_THREADS, NULL, &v), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_set_seed(NULL, 1), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_get_seed(NULL, &s), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_set_log(NULL, NULL, NULL), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_context_info(NULL, TSQ_INFO_BLAS, &info), TSQ_ERR_NULL);
    ck_assert_str_eq(tsq_context_errmsg(NULL), "no context");
    tsq_context_destroy(NULL);
}
END_TEST

START_TEST(test_context_alloc_failure)
{
    th_alloc_stats st;
    tsq_context *ctx = (tsq_context *)&st;
    memset(&st, 0, sizeof st);
    st.fail_at = 1;
    ck_assert_int_eq(tsq_context_create_with_allocator(&ctx, th_alloc, th_free, &st),
                     TSQ_ERR_NO_MEMORY);
    ck_assert_ptr_null(ctx);
    ck_assert_int_eq(st.live_blocks, 0);
}
END_TEST

typedef struct {
    int calls;
    int32_t level;
    char last[256];
} log_sink;

static void sink(void *user, int32_t level, const char *msg)
{
    log_sink *s = user;
    s->calls++;
    s->level = level;
    snprintf(s->last, sizeof s->last, "%s", msg);
}

START_TEST(test_log_callback)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    log_sink s;
    memset(&s, 0, sizeof s);
    /* Without a callback nothing is printed or called. */
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, -5), TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_context_set_log(ctx, sink, &s));
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, -5), TSQ_ERR_INVALID);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.level, 1);
    ck_assert_str_eq(s.last, tsq_context_errmsg(ctx));
    /* Level 0 silences errors too. */
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_LOG_LEVEL, 0));
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, -5), TSQ_ERR_INVALID);
    ck_assert_int_eq(s.calls, 1);
    TH_OK(ctx, tsq_context_set_log(ctx, NULL, NULL));
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_info)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const char *s = NULL;
    int32_t key;
    for (key = TSQ_INFO_VERSION; key <= TSQ_INFO_SUMMARY; key++) {
        TH_OK(ctx, tsq_context_info(ctx, key, &s));
        ck_assert_ptr_nonnull(s);
        ck_assert_int_gt((int)strlen(s), 0);
    }
    TH_OK(ctx, tsq_context_info(ctx, TSQ_INFO_VERSION, &s));
    ck_assert_str_eq(s, TSQ_VERSION_STRING);
    TH_OK(ctx, tsq_context_info(ctx, TSQ_INFO_BLAS, &s));
#ifdef TSQ_BLAS_OPENBLAS
    ck_assert_msg(strncmp(s, "OpenBLAS", 8) == 0, "BLAS reported as %s", s);
    TH_OK(ctx, tsq_context_info(ctx, TSQ_INFO_BLAS_CORE, &s));
    ck_assert_str_ne(s, "n/a");
#else
    ck_assert_msg(strstr(s, "reference") != NULL, "BLAS reported as %s", s);
#endif
    ck_assert_int_eq(tsq_context_info(ctx, 77, &s), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq_context_info(ctx, TSQ_INFO_BLAS, NULL), TSQ_ERR_NULL);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_cpu_features)
{
    uint32_t f = 0xffffffffu;
    TH_OK(NULL, tsq_cpu_features(&f));
    /* Implications that any consistent detection must respect. */
    if (f & TSQ_CPU_AVX512VNNI)
        ck_assert(f & TSQ_CPU_AVX512F);
    if (f & TSQ_CPU_AVX512BW)
        ck_assert(f & TSQ_CPU_AVX512F);
    ck_assert_uint_eq(f & ~0xffu, 0);
    ck_assert_int_eq(tsq_cpu_features(NULL), TSQ_ERR_NULL);
#if defined(__x86_64__)
    /* Compare with the compiler's own detection of the same features. */
    __builtin_cpu_init();
    ck_assert_int_eq(!!(f & TSQ_CPU_AVX2), !!__builtin_cpu_supports("avx2"));
    ck_assert_int_eq(!!(f & TSQ_CPU_AVX512F), !!__builtin_cpu_supports("avx512f"));
#endif
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_version);
    tcase_add_test(tc, test_status_strings);
    tcase_add_test(tc, test_context_defaults_and_options);
    tcase_add_test(tc, test_context_null_paths);
    tcase_add_test(tc, test_context_alloc_failure);
    tcase_add_test(tc, test_log_callback);
    tcase_add_test(tc, test_info);
    tcase_add_test(tc, test_cpu_features);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(core_suite()); }
