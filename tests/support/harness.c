#include "harness.h"

#include <stdlib.h>
#include <string.h>

void *th_alloc(void *user, uint64_t size, uint64_t alignment)
{
    th_alloc_stats *s = user;
    void *p = NULL;
    s->total_allocs++;
    if (size > s->largest)
        s->largest = size;
    if (s->refuse_above && size > s->refuse_above) {
        s->refused_big++;
        s->failures++;
        return NULL;
    }
    if ((s->fail_at && s->total_allocs == s->fail_at) ||
        (s->fail_every_after && s->fail_at && s->total_allocs > s->fail_at)) {
        s->failures++;
        return NULL;
    }
    if (alignment < sizeof(void *))
        alignment = sizeof(void *);
    if (posix_memalign(&p, (size_t)alignment, (size_t)(size ? size : 1)) != 0)
        return NULL;
    /* Poison fresh memory so that reads of uninitialised bytes show up. */
    memset(p, 0xA5, (size_t)size);
    s->live_blocks++;
    return p;
}

void th_free(void *user, void *ptr)
{
    th_alloc_stats *s = user;
    s->live_blocks--;
    free(ptr);
}

tsq_context *th_context(th_alloc_stats *stats)
{
    tsq_context *ctx = NULL;
    memset(stats, 0, sizeof *stats);
    ck_assert_int_eq(tsq_context_create_with_allocator(&ctx, th_alloc, th_free, stats), TSQ_OK);
    ck_assert_ptr_nonnull(ctx);
    return ctx;
}

void th_context_done(tsq_context *ctx, th_alloc_stats *stats)
{
    tsq_context_destroy(ctx);
    ck_assert_msg(stats->live_blocks == 0, "%lld allocation(s) leaked",
                  (long long)stats->live_blocks);
    ck_assert_msg(stats->refused_big == 0,
                  "%lld allocation request(s) above %llu bytes (largest %llu bytes)",
                  (long long)stats->refused_big, (unsigned long long)stats->refuse_above,
                  (unsigned long long)stats->largest);
}

int th_run(Suite *suite)
{
    SRunner *sr = srunner_create(suite);
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

int th_quick(void)
{
    const char *q = getenv("TSQ_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}
