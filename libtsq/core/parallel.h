/*
 * libtsq's threads (parallel.c): the range splitter over tsq__parallel_for
 * (declared in internal.h) and the rule that keeps the BLAS one-threaded
 * inside libtsq's own parallel regions.
 */
#ifndef TSQ_CORE_PARALLEL_H
#define TSQ_CORE_PARALLEL_H

#include <stdint.h>

/* Runs fn(arg, lo, hi) over [0, n) split into at most `threads` contiguous
 * chunks (deterministic: the split depends only on n and threads). `cost`
 * is the rough number of elements touched per item: small jobs run inline,
 * since starting threads costs more than they would save. */
typedef void (*tsq__range_fn)(void *arg, int64_t lo, int64_t hi);
void tsq__parallel_range(int64_t threads, int64_t n, int64_t cost, tsq__range_fn fn, void *arg);

/* The BLAS's own thread count (1 when the BLAS cannot tell, e.g. the
 * reference CBLAS). Inside a region of tsq__parallel_for with more than one
 * thread it is 1: every worker calls the BLAS, and an OpenBLAS that also
 * threads each call makes the calls wait for each other. */
int tsq__blas_threads(void);

/* Sets the BLAS to one thread (as inside a region) and returns what
 * tsq__blas_single_end puts back (0: nothing). For callers whose BLAS
 * calls are too small to gain from the BLAS's threads, e.g. the plan: an
 * OpenBLAS that threads them leaves its workers spinning in sched_yield
 * after every call. */
int tsq__blas_single_begin(void);
void tsq__blas_single_end(int saved);

#endif /* TSQ_CORE_PARALLEL_H */
