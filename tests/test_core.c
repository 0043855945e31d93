/* Core: versions, status strings, context options, allocator, info, CPU;
 * the contracts of core.h (a NULL output gets a message, key families are
 * disjoint) and the internal pieces every handle shares: the option table,
 * the little-endian codec and the CRC-32. */
#include "harness.h"

#include "core/codec.h"
#include "core/options.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

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
    for (s = TSQ_ERR_NULL; s <= TSQ_ERR_CANCELLED; s++) {
        const char *m = tsq_status_string(s);
        ck_assert_msg(strncmp(m, "TSQ_ERR_", 8) == 0, "status %d: %s", (int)s, m);
    }
    ck_assert_str_eq(tsq_status_string(-1), "unknown status");
    ck_assert_str_eq(tsq_status_string(TSQ_ERR_CANCELLED + 1), "unknown status");
    ck_assert_int_eq(TSQ_ERR_CANCELLED, 16); /* appended after TSQ_ERR_INTERNAL */
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
    double v, lo, hi;
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
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "outside 1..256"));
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
    double v;
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
    th_alloc_stats st;
    uint32_t f = 0xffffffffu, g = 0;
    tsq_context *ctx = th_context(&st);
    TH_OK(ctx, tsq_context_cpu_features(ctx, &f));
    /* Implications that any consistent detection must respect. */
    if (f & TSQ_CPU_AVX512VNNI)
        ck_assert(f & TSQ_CPU_AVX512F);
    if (f & TSQ_CPU_AVX512BW)
        ck_assert(f & TSQ_CPU_AVX512F);
    /* AMX-INT8 only beside the AVX-512 set its plan stages share. */
    if (f & TSQ_CPU_AMXINT8)
        ck_assert_uint_eq(f & (TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW | TSQ_CPU_AVX512VL |
                               TSQ_CPU_AVX512VNNI),
                          TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW | TSQ_CPU_AVX512VL |
                              TSQ_CPU_AVX512VNNI);
    ck_assert_uint_eq(f & ~0x1ffu, 0);
    ck_assert_int_eq(tsq_context_cpu_features(ctx, NULL), TSQ_ERR_NULL);
    ck_assert_str_eq(tsq_context_errmsg(ctx), "context_cpu_features: features is NULL");
    ck_assert_int_eq(tsq_context_cpu_features(NULL, &g), TSQ_ERR_NULL);
    ck_assert_uint_eq(g, 0); /* nothing written */
    {
        /* TSQ_CONTEXT_CPU_MASK: the features used are the detected ones it
         * keeps; all by default; bad values refused, the mask unchanged. */
        double v = 0, lo = 0, hi = 0;
        uint32_t m = 0;
        TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_CPU_MASK, &v));
        ck_assert(v == 4294967295.0);
        TH_OK(ctx, tsq_context_option_bounds(TSQ_CONTEXT_CPU_MASK, &lo, &hi));
        ck_assert(lo == 0.0 && hi == 4294967295.0);
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK,
                                          (double)(0xffffffffu & ~(uint32_t)TSQ_CPU_AMXINT8)));
        TH_OK(ctx, tsq_context_cpu_features(ctx, &m));
        ck_assert_uint_eq(m, f & ~(uint32_t)TSQ_CPU_AMXINT8);
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, 0));
        TH_OK(ctx, tsq_context_cpu_features(ctx, &m));
        ck_assert_uint_eq(m, 0);
        ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, -1), TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, 4294967296.0),
                         TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, 2.5), TSQ_ERR_INVALID);
        ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, NAN), TSQ_ERR_INVALID);
        TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_CPU_MASK, &v));
        ck_assert(v == 0.0);
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_CPU_MASK, 4294967295.0));
        TH_OK(ctx, tsq_context_cpu_features(ctx, &m));
        ck_assert_uint_eq(m, f);
    }
#if defined(__x86_64__)
    /* Compare with the compiler's own detection of the same features. */
    __builtin_cpu_init();
    ck_assert_int_eq(!!(f & TSQ_CPU_AVX2), !!__builtin_cpu_supports("avx2"));
    ck_assert_int_eq(!!(f & TSQ_CPU_AVX512F), !!__builtin_cpu_supports("avx512f"));
#endif
    th_context_done(ctx, &st);
}
END_TEST

/* A NULL output pointer is TSQ_ERR_NULL with a message on the context;
 * keys of another family are refused by name. */
START_TEST(test_context_contracts)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const char *info = NULL;
    double v = 0, lo, hi;
    ck_assert_int_eq(TSQ_CONTEXT_THREADS, 0x0101);
    ck_assert_int_eq(TSQ_CONTEXT_LOG_LEVEL, 0x0102);
    ck_assert_int_eq(TSQ_INFO_VERSION, 0x0A01);
    ck_assert_int_eq(TSQ_INFO_SUMMARY, 0x0A06);
    ck_assert_int_eq(tsq_context_info(ctx, TSQ_INFO_VERSION, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "context_info: out is NULL"));
    ck_assert_int_eq(tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "value is NULL"));
    ck_assert_int_eq(tsq_context_get_seed(ctx, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "seed is NULL"));
    /* another family's key, with the value of one of ours */
    ck_assert_int_eq(tsq_context_set_option(ctx, TSQ_QUANTIZER_BITS, 2), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "quantizer key"));
    ck_assert_int_eq(tsq_context_get_option(ctx, TSQ_INFO_CPU, &v), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "context info key"));
    ck_assert_int_eq(tsq_context_option_bounds(1, &lo, &hi), TSQ_ERR_INVALID); /* old number */
    ck_assert_int_eq(tsq_context_info(ctx, TSQ_CONTEXT_THREADS, &info), TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "unknown key"));
    ck_assert_int_eq(tsq_context_info(ctx, 1, &info), TSQ_ERR_INVALID);
    /* nothing changed, and a successful call clears the message */
    TH_OK(ctx, tsq_context_get_option(ctx, TSQ_CONTEXT_THREADS, &v));
    ck_assert_int_eq(v, 1);
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1));
    ck_assert_str_eq(tsq_context_errmsg(ctx), "");
    th_context_done(ctx, &st);
}
END_TEST

/* The option table of core/options.h, on a handle of its own. */
typedef struct toy {
    tsq__object obj;
    int32_t small;
    int64_t big;
    double real;
    int flag;
    double hooked;  /* stored by the hook, which refuses 0.75 */
    uint32_t kind;  /* scope bits */
} toy;

static void toy_load(const void *handle, const tsq__option *o, double *value)
{
    const toy *t = handle;
    *value = o->storage == TSQ__OPT_HOOK ? t->hooked : (double)t->small * 10 + (o->key & 0xFF);
}

static tsq_status toy_store(void *handle, const tsq__option *o, double value, const char *where)
{
    toy *t = handle;
    TSQ_RETURN_ERROR_IF(value == 0.75, &t->obj, TSQ_ERR_INVALID, "%s: %s: the hook says no",
                        where, o->name);
    t->hooked = value;
    return TSQ_OK;
}

static uint32_t toy_scope(const void *handle)
{
    return ((const toy *)handle)->kind;
}

static void toy_describe(const void *handle, char *buf, size_t cap)
{
    snprintf(buf, cap, "kind-%u toys", (unsigned)((const toy *)handle)->kind);
}

static const tsq__option_table toy_table;

static const tsq__option toy_options[] = {
    {0x0301, "small", -3, 5, 2, TSQ__OPT_I32, 0, offsetof(toy, small), 0, NULL, 0},
    {0x0302, "big", 0, 1e15, 7, TSQ__OPT_I64, 0, offsetof(toy, big), 0, NULL, 0},
    {0x0303, "real", -1, 1, 0.5, TSQ__OPT_F64, 0, offsetof(toy, real), 0, NULL, 0},
    {0x0304, "derived", 0, 100, 0, TSQ__OPT_COMPUTED, 0, 0, 0, NULL, 0},
    {0x0305, "flag", 0, 1, 1, TSQ__OPT_INT, 0, offsetof(toy, flag), 2, NULL, 0},
    {0x0306, "hooked", 0, 1, 0.25, TSQ__OPT_HOOK, 0, 0, 0, NULL, 0},
    /* bounds, default and integrality of "small" */
    {0x0307, "like_small", 0, 0, 0, TSQ__OPT_F64, 0, offsetof(toy, real), 0, &toy_table, 0x0301},
};
static const tsq__option_table toy_table = {"regressor", 0x0300, 7, toy_options, toy_store,
                                            toy_load, toy_scope, toy_describe, NULL};

START_TEST(test_option_table)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    toy t;
    const toy *ct = &t;
    double v, lo, hi;
    memset(&t, 0, sizeof t);
    tsq__object_init(&t.obj, ctx);
    t.kind = 1;
    ck_assert_int_eq(tsq__option_defaults(&toy_table, &t), TSQ_OK);
    /* flag applies to kind 2 only: left alone; like_small takes small's default */
    ck_assert(t.small == 2 && t.big == 7 && t.real == 2 && t.flag == 0 && t.hooked == 0.25);
    ck_assert_int_eq(tsq__option_bounds(&toy_table, 0x0302, &lo, &hi), TSQ_OK);
    ck_assert(lo == 0 && hi == 1e15);
    ck_assert_int_eq(tsq__option_bounds(&toy_table, 0x0307, &lo, &hi), TSQ_OK);
    ck_assert(lo == -3 && hi == 5);
    ck_assert_int_eq(tsq__option_bounds(&toy_table, 0x0308, &lo, &hi), TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq__option_bounds(&toy_table, 0x0301, NULL, &hi), TSQ_ERR_NULL);
    /* set: bounds, integrality, NaN, read-only, families; failures change nothing */
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0301, -3), TSQ_OK);
    ck_assert_int_eq(t.small, -3);
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0301, 6),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "toy_set: small = 6 is outside -3 .. 5"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0301, 1.5),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "must be an integer"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0307, 1.5),
                     TSQ_ERR_INVALID); /* integral because small is */
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "like_small must be an integer"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0307, 6),
                     TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0303, NAN),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "real = NaN is refused"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0304, 1),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "derived is read-only"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0305, 1),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "toy_set: flag does not apply to kind-1 toys"));
    ck_assert_int_eq(tsq__option_get(&toy_table, &t.obj, "toy_get", &t, 0x0305, &v),
                     TSQ_ERR_INVALID);
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0306, 0.75),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "toy_set: hooked: the hook says no"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0201, 1),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "a quantizer key, not a regressor one"));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0300, 1),
                     TSQ_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(t.obj.msg, "no regressor option"));
    ck_assert(t.small == -3 && t.big == 7 && t.real == 2 && t.flag == 0 && t.hooked == 0.25);
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0302, 1e15), TSQ_OK);
    ck_assert(t.big == INT64_C(1000000000000000));
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0303, -0.25), TSQ_OK);
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0306, 1), TSQ_OK);
    ck_assert(t.hooked == 1);
    t.kind = 2;
    ck_assert_int_eq(tsq__option_set(&toy_table, &t.obj, "toy_set", &t, 0x0305, 1), TSQ_OK);
    ck_assert_int_eq(t.flag, 1);
    /* get through a const handle: the message is still writable */
    ck_assert_int_eq(tsq__option_get(&toy_table, &ct->obj, "toy_get", ct, 0x0303, &v), TSQ_OK);
    ck_assert(v == -0.25);
    ck_assert_int_eq(tsq__option_get(&toy_table, &ct->obj, "toy_get", ct, 0x0304, &v), TSQ_OK);
    ck_assert(v == -30 + 4);
    ck_assert_int_eq(tsq__option_get(&toy_table, &ct->obj, "toy_get", ct, 0x0306, &v), TSQ_OK);
    ck_assert(v == 1);
    ck_assert_int_eq(tsq__option_get(&toy_table, &ct->obj, "toy_get", ct, 0x0301, NULL),
                     TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(ct->obj.msg, "toy_get: value is NULL"));
    /* no handle: the defaults */
    ck_assert_int_eq(tsq__option_get(&toy_table, &t.obj, "toy_get", NULL, 0x0303, &v), TSQ_OK);
    ck_assert(v == 0.5);
    ck_assert_int_eq(tsq__option_get(&toy_table, &t.obj, "toy_get", NULL, 0x0307, &v), TSQ_OK);
    ck_assert(v == 2);
    ck_assert_int_eq(tsq__option_get(&toy_table, &t.obj, "toy_get", NULL, 0x0201, &v),
                     TSQ_ERR_INVALID);
    ck_assert_str_eq(tsq__key_family(0x0A06), "context info");
    ck_assert_ptr_null(tsq__key_family(0x0B01));
    ck_assert_ptr_null(tsq__key_family(0x0100));
    th_context_done(ctx, &st);
}
END_TEST

/* The one little-endian codec: byte order, floats by their bits, the
 * counting writer, the reader that stops at its end; and zlib's CRC-32. */
START_TEST(test_codec_and_crc)
{
    unsigned char b[32], big[64];
    const unsigned char want[12] = {0x04, 0x03, 0x02, 0x01, 0x08, 0x07, 0x06, 0x05,
                                    0x04, 0x03, 0x02, 0x01};
    tsq__le_writer w = {NULL, 0, 0};
    tsq__le_reader r;
    unsigned i;
    tsq__le_put_u32(b, 0x01020304u);
    tsq__le_put_u64(b + 4, UINT64_C(0x0102030405060708));
    ck_assert_mem_eq(b, want, 4);
    ck_assert_mem_eq(b + 4, want + 4, 8);
    ck_assert_uint_eq(tsq__le_get_u32(b), 0x01020304u);
    ck_assert(tsq__le_get_u64(b + 4) == UINT64_C(0x0102030405060708));
    tsq__le_put_f32(b, -1.5f);
    ck_assert_uint_eq(tsq__le_get_u32(b), 0xBFC00000u);
    ck_assert(tsq__le_get_f32(b) == -1.5f);
    tsq__le_put_f64(b, DBL_MAX);
    ck_assert(tsq__le_get_f64(b) == DBL_MAX);
    /* the writer counts without a buffer, then writes the same bytes */
    tsq__lew_u8(&w, 7);
    tsq__lew_u32(&w, 1);
    tsq__lew_u64(&w, 2);
    tsq__lew_f32(&w, 0.5f);
    tsq__lew_f64(&w, 0.25);
    tsq__lew_bytes(&w, "abc", 3);
    ck_assert(w.pos == 1 + 4 + 8 + 4 + 8 + 3);
    w.buf = big;
    w.cap = sizeof big;
    w.pos = 0;
    tsq__lew_u8(&w, 7);
    tsq__lew_u32(&w, 1);
    tsq__lew_u64(&w, 2);
    tsq__lew_f32(&w, 0.5f);
    tsq__lew_f64(&w, 0.25);
    tsq__lew_bytes(&w, "abc", 3);
    tsq__ler_init(&r, big, w.pos);
    ck_assert_uint_eq(tsq__ler_u8(&r), 7);
    ck_assert_uint_eq(tsq__ler_u32(&r), 1);
    ck_assert(tsq__ler_u64(&r) == 2);
    ck_assert(tsq__ler_f32(&r) == 0.5f);
    ck_assert(tsq__ler_f64(&r) == 0.25);
    ck_assert_mem_eq(tsq__ler_take(&r, 3), "abc", 3);
    ck_assert(!r.bad && tsq__ler_left(&r) == 0);
    ck_assert_uint_eq(tsq__ler_u32(&r), 0); /* past the end: zero, and bad from now on */
    ck_assert(r.bad);
    tsq__ler_init(&r, big, 3);
    ck_assert_ptr_null(tsq__ler_take(&r, UINT64_MAX));
    ck_assert(r.bad && tsq__ler_u8(&r) == 0);
    /* a writer past its capacity writes nothing but keeps counting */
    w.buf = b;
    w.cap = 2;
    w.pos = 0;
    memset(b, 0, sizeof b);
    tsq__lew_u32(&w, 0xFFFFFFFFu);
    ck_assert(w.pos == 4 && b[0] == 0 && b[1] == 0);
    /* CRC-32: the check value, and the bitwise reference on every length */
    ck_assert_uint_eq(tsq__crc32(0, "123456789", 9), 0xCBF43926u);
    for (i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 37 + 11);
    for (i = 0; i <= sizeof big; i++) {
        ck_assert_uint_eq(tsq__crc32(0, big, i), th_ref_crc32(big, i));
        ck_assert_uint_eq(tsq__crc32(tsq__crc32(0, big, i / 2), big + i / 2, i - i / 2),
                          th_ref_crc32(big, i));
    }
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
    tcase_add_test(tc, test_context_contracts);
    tcase_add_test(tc, test_option_table);
    tcase_add_test(tc, test_codec_and_crc);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(core_suite()); }
