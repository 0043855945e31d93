/* The cost of one fork-join of libtsq's threads (tsq__parallel_for: a
 * thread started and joined per call) for empty tasks, and the cost of the
 * BLAS thread rule inside it (docs/kernels.md, "Threads"). One JSON line
 * per measure, medians of 9 runs. */
#include "bench.h"
#include "internal.h"

static void nothing(void *arg, int64_t i)
{
    (void)arg;
    (void)i;
}

int main(void)
{
    const int reps = 2000;
    double t[9];
    int64_t threads;
    int r, i;
    bench_info("bench_threads");
    for (threads = 1; threads <= 4; threads *= 2) {
        char name[64];
        for (r = 0; r < 9; r++) {
            double t0 = bench_now();
            for (i = 0; i < reps; i++)
                tsq__parallel_for(threads, threads, nothing, NULL);
            t[r] = (bench_now() - t0) / reps * 1e6;
        }
        snprintf(name, sizeof name, "fork_join_threads%d", (int)threads);
        bench_line(name, bench_median(t, 9), "us");
    }
    return 0;
}
