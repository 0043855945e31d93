/* Shared test support: a counting allocator that can fail on demand, and
 * helpers to run a Check suite. Every test creates its contexts with
 * th_context() and ends with th_context_done(), which asserts that every
 * allocation made through the context was freed. */
#ifndef TSQ_TEST_HARNESS_H
#define TSQ_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>

#include "tsq.h"

typedef struct th_alloc_stats {
    int64_t live_blocks;   /* allocations not yet freed */
    int64_t total_allocs;  /* allocations attempted */
    int64_t fail_at;       /* fail the fail_at-th allocation (1-based); 0 = never */
    int64_t fail_every_after; /* if nonzero, also fail every later one */
    int64_t failures;      /* allocations refused */
} th_alloc_stats;

void *th_alloc(void *user, uint64_t size, uint64_t alignment);
void th_free(void *user, void *ptr);

/* A context whose allocations are counted in *stats (zeroed here). */
tsq_context *th_context(th_alloc_stats *stats);
/* Destroys the context and asserts that no block is still live. */
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
