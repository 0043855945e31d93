/* A minimal fork-join loop over POSIX threads. Threads are started per call:
 * libtsq parallelises only coarse work (output channels, batch items), where
 * the ~20 us start-up is negligible, and a per-call pool keeps the library
 * free of global state and background threads. */
#include "internal.h"

#include <pthread.h>

typedef struct {
    tsq__task_fn fn;
    void *arg;
    int64_t n;
    int64_t first, step;   /* static round-robin split: deterministic */
} worker_args;

static void run_share(worker_args *w)
{
    int64_t i;
    for (i = w->first; i < w->n; i += w->step)
        w->fn(w->arg, i);
}

static void *worker(void *p)
{
    run_share((worker_args *)p);
    return NULL;
}

void tsq__parallel_for(int64_t threads, int64_t n, tsq__task_fn fn, void *arg)
{
    enum { MAX_THREADS = 256 };
    pthread_t tid[MAX_THREADS];
    worker_args args[MAX_THREADS];
    int started[MAX_THREADS];
    int64_t t, i;

    if (threads > n)
        threads = n;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (threads <= 1) {
        for (i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    for (t = 0; t < threads; t++) {
        args[t].fn = fn;
        args[t].arg = arg;
        args[t].n = n;
        args[t].first = t;
        args[t].step = threads;
        started[t] = 0;
    }
    for (t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, worker, &args[t]) == 0;
    run_share(&args[0]);
    /* A thread that failed to start has its share run here, so the loop
     * always completes (the split stays the same: results are identical). */
    for (t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            run_share(&args[t]);
    }
}
