/* Shared test support: a counting allocator that can fail on demand (the
 * k-th request, every request after it, or every request above a size),
 * and helpers to run a Check suite. Every test creates its contexts with
 * th_context() and ends with th_context_done(), which asserts that every
 * allocation made through the context was freed and that no request was
 * above refuse_above. The generator is in rng.h, the brute-force
 * references in reference.h. */
#ifndef TSQ_TEST_HARNESS_H
#define TSQ_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>

#include "tsq.h"
#include "reference.h"
#include "rng.h"

typedef struct th_alloc_stats {
    int64_t live_blocks;   /* allocations not yet freed */
    int64_t total_allocs;  /* allocations attempted */
    int64_t fail_at;       /* fail the fail_at-th allocation (1-based); 0 = never */
    int64_t fail_every_after; /* if nonzero, also fail every later one */
    int64_t failures;      /* allocations refused */
    uint64_t refuse_above; /* if nonzero, refuse (and count) larger requests */
    int64_t refused_big;   /* requests above refuse_above */
    uint64_t largest;      /* the largest request seen */
} th_alloc_stats;

void *th_alloc(void *user, uint64_t size, uint64_t alignment);
void th_free(void *user, void *ptr);

/* A context whose allocations are counted in *stats (zeroed here). */
tsq_context *th_context(th_alloc_stats *stats);
/* Destroys the context and asserts that no block is still live and that no
 * request was above stats->refuse_above (when set). */
void th_context_done(tsq_context *ctx, th_alloc_stats *stats);

/* Runs the suite (CK_NORMAL output) and returns a process exit code. */
int th_run(Suite *suite);

/* 1 when TSQ_TEST_QUICK is set: tests may then use smaller sizes. */
int th_quick(void);

/* Assert a status, printing the message of the given context on failure. */
#define TH_OK(ctx, expr)                                                      \
    do {                                                                      \
        tsq_status th_st_ = (expr);                                           \
        ck_assert_msg(th_st_ == TSQ_OK, "%s -> %s (%s)", #expr,               \
                      tsq_status_string(th_st_), tsq_context_errmsg(ctx));    \
    } while (0)

#endif
