/*
 * libtsq internal header: shared by the sources, never installed.
 * Names with the tsq__ prefix are internal and hidden from the shared
 * library by -fvisibility=hidden.
 */
#ifndef TSQ_INTERNAL_H
#define TSQ_INTERNAL_H

#define TSQ_BUILDING_LIBRARY 1
#define TSQ_EXPERIMENTAL 1
#include "tsq.h"
#include "tsq/experimental.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define TSQ_MSG_CAP 256
#define TSQ_INFO_CAP 640

/* Every handle begins with this, so that error reporting is uniform: the
 * message lives in the handle (no allocation needed to report an error, so
 * out-of-memory can always be reported). */
typedef struct tsq__object {
    tsq_context *ctx;
    char msg[TSQ_MSG_CAP];
} tsq__object;

struct tsq_context {
    tsq__object obj; /* obj.ctx points to the context itself */
    tsq_alloc_fn alloc_fn;
    tsq_free_fn free_fn;
    void *alloc_user;
    int64_t threads;
    uint32_t cpu;       /* TSQ_CPU_* features, detected once at creation */
    int64_t log_level;
    uint64_t seed;
    uint64_t streams;   /* number of random streams handed out so far */
    tsq_log_fn log_fn;
    void *log_user;
    char info[TSQ_INFO_CAP];
};

/* ---- memory: every allocation goes through the context ---- */
void *tsq__alloc(tsq_context *ctx, size_t size);   /* 64-byte aligned */
void *tsq__calloc(tsq_context *ctx, size_t count, size_t size);
void tsq__free(tsq_context *ctx, void *ptr);       /* accepts NULL */

/* Overflow-checked arithmetic; return 0 on overflow, 1 on success. */
int tsq__mul_size(size_t a, size_t b, size_t *out);
int tsq__mul_i64(int64_t a, int64_t b, int64_t *out);

/* ---- errors ---- */
/* Records "fmt..." as the object's message, logs it at level 1, and returns
 * `status`, so that a failing path reads `return tsq__fail(obj, st, ...);`. */
tsq_status tsq__fail(tsq__object *obj, tsq_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Clears the object's message (called on entry of calls that succeed). */
void tsq__clear(tsq__object *obj);
void tsq__log(tsq_context *ctx, int32_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Initialises the common header of a new handle. */
void tsq__object_init(tsq__object *obj, tsq_context *ctx);

/* ---- tensors (internal view) ---- */
struct tsq_tensor {
    tsq__object obj;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[TSQ_MAX_DIMS];
    int64_t numel;
    void *data;
    int owns_data;
};
size_t tsq__dtype_size(int32_t dtype);
/* Validates dtype/ndim/shape and computes numel and byte count; on failure
 * records the message on obj and returns the status. */
tsq_status tsq__shape_check(tsq__object *obj, const char *where, int32_t dtype,
                            int32_t ndim, const int64_t *shape, int64_t *numel,
                            uint64_t *nbytes);
/* Checks t is non-NULL and has the given dtype; records the error on obj. */
tsq_status tsq__expect_dtype(tsq__object *obj, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype);
/* 1 if every float is finite. */
int tsq__all_finite(const float *x, int64_t n);

/* ---- CPU ---- */
uint32_t tsq__cpu_detect(void);

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */
typedef struct tsq__rng {
    uint64_t s[4];
} tsq__rng;
/* A new independent stream from the context's seed (the context counts the
 * streams it hands out, so that every object gets a different one). */
void tsq__rng_from_context(tsq_context *ctx, tsq__rng *rng);
void tsq__rng_seed(tsq__rng *rng, uint64_t seed, uint64_t stream);
uint64_t tsq__rng_next(tsq__rng *rng);
double tsq__rng_uniform(tsq__rng *rng);    /* [0, 1) */
double tsq__rng_normal(tsq__rng *rng);     /* N(0, 1) */
uint64_t tsq__rng_below(tsq__rng *rng, uint64_t n); /* [0, n) */

/* ---- threads ---- */
/* Calls fn(arg, i) for i in [0, n), spread over up to `threads` threads
 * (the calling thread included). Blocks until all are done. fn must not
 * fail; it records its own errors. With threads <= 1 it runs inline. */
typedef void (*tsq__task_fn)(void *arg, int64_t index);
void tsq__parallel_for(int64_t threads, int64_t n, tsq__task_fn fn, void *arg);
/* Contiguous-range splitting and the BLAS thread rule: core/parallel.h. */
#include "parallel.h"

#endif /* TSQ_INTERNAL_H */
