/* libtsq's fork-join loops over POSIX threads, and the BLAS thread rule.
 *
 * Threads are started per call: libtsq parallelises only coarse work
 * (output channels, batch items, row blocks), and a per-call fork keeps
 * the library free of background threads (docs/kernels.md, "Threads",
 * compares it with a pool).
 *
 * Inside a region with more than one thread, each of libtsq's threads may
 * call the BLAS; OpenBLAS would then thread every call as well and the
 * calls collapse into waiting for each other. So the region sets
 * OpenBLAS's thread count to 1 and puts the caller's value back after.
 * OpenBLAS keeps that count process-wide: two contexts running regions in
 * different threads at once may leave it at 1 (never wrong, only slower
 * for the caller's own BLAS calls). The reference CBLAS has no threads:
 * nothing to do there. */
#include "internal.h"

#if defined(TSQ_BLAS_OPENBLAS)
#include "blas.h" /* openblas_get_num_threads / openblas_set_num_threads */
#endif

#include <pthread.h>
#include <stdatomic.h>

/* The tasks are handed out from a shared counter, in index order: a thread
 * that finishes early takes the next one, so tasks of uneven cost (channels,
 * column blocks) keep every thread busy to the end. Which thread runs a task
 * never changes its result: fn(arg, i) depends on i only. */
typedef struct {
    tsq__task_fn fn;
    void *arg;
    int64_t n;
    atomic_llong next;
} shared_tasks;

static void run_tasks(shared_tasks *s)
{
    int64_t i;
    while ((i = (int64_t)atomic_fetch_add_explicit(&s->next, 1, memory_order_relaxed)) < s->n)
        s->fn(s->arg, i);
}

static void *worker(void *p)
{
    run_tasks((shared_tasks *)p);
    return NULL;
}

int tsq__blas_threads(void)
{
#if defined(TSQ_BLAS_OPENBLAS)
    return openblas_get_num_threads();
#else
    return 1;
#endif
}

/* Sets the BLAS to one thread; returns what to restore (0: nothing). */
int tsq__blas_single_begin(void)
{
#if defined(TSQ_BLAS_OPENBLAS)
    int saved = openblas_get_num_threads();
    if (saved == 1)
        return 0;
    openblas_set_num_threads(1);
    return saved;
#else
    return 0;
#endif
}

void tsq__blas_single_end(int saved)
{
#if defined(TSQ_BLAS_OPENBLAS)
    if (saved > 0)
        openblas_set_num_threads(saved);
#else
    (void)saved;
#endif
}

void tsq__parallel_for(int64_t threads, int64_t n, tsq__task_fn fn, void *arg)
{
    enum { MAX_THREADS = 256 };
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS];
    shared_tasks tasks;
    int64_t t, i;
    int saved;

    if (threads > n)
        threads = n;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads <= 1) {
        for (i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    saved = tsq__blas_single_begin();
    tasks.fn = fn;
    tasks.arg = arg;
    tasks.n = n;
    atomic_init(&tasks.next, 0);
    for (t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, worker, &tasks) == 0;
    /* A thread that failed to start takes no tasks: the others, this one
     * included, run them all, with the same results. */
    run_tasks(&tasks);
    for (t = 1; t < threads; t++)
        if (started[t])
            pthread_join(tid[t], NULL);
    tsq__blas_single_end(saved);
}

typedef struct {
    tsq__range_fn fn;
    void *arg;
    int64_t n, chunks;
} range_job;

static void range_task(void *p, int64_t i)
{
    range_job *j = p;
    int64_t lo = j->n * i / j->chunks, hi = j->n * (i + 1) / j->chunks;
    if (lo < hi)
        j->fn(j->arg, lo, hi);
}

void tsq__parallel_range(int64_t threads, int64_t n, int64_t cost, tsq__range_fn fn, void *arg)
{
    range_job j;
    if (n <= 0)
        return;
    if (threads > n)
        threads = n;
    /* Below ~64k elements a thread start (~20 us) costs more than it saves. */
    if (threads <= 1 || (double)n * (double)cost < 65536.0) {
        fn(arg, 0, n);
        return;
    }
    j.fn = fn;
    j.arg = arg;
    j.n = n;
    j.chunks = threads;
    tsq__parallel_for(threads, threads, range_task, &j);
}
