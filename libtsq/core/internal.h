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

/* Every handle begins with this, so that error reporting is uniform. The
 * message is the one part of a handle that calls taking the handle as const
 * may write (core.h, "Life cycle of a handle"): `msg` points at `msg_buf`,
 * so a const handle reaches a writable buffer without a cast. The buffer is
 * inside the handle, so reporting never allocates and out-of-memory can
 * always be reported. Handles are never copied by value (the pointer would
 * then point into the original). */
typedef struct tsq__object {
    tsq_context *ctx;
    char *msg;                  /* == msg_buf, set by tsq__object_init */
    char msg_buf[TSQ_MSG_CAP];
} tsq__object;

struct tsq_context {
    tsq__object obj; /* obj.ctx points to the context itself */
    tsq_alloc_fn alloc_fn;
    tsq_free_fn free_fn;
    void *alloc_user;
    int64_t threads;
    uint32_t cpu;       /* TSQ_CPU_* features the kernels use: cpu_detected & cpu_mask */
    uint32_t cpu_detected; /* detected once, at creation */
    uint32_t cpu_mask;  /* TSQ_CONTEXT_CPU_MASK */
    int64_t log_level;
    uint64_t seed;
    uint64_t streams;   /* number of random streams handed out so far */
    tsq_log_fn log_fn;
    void *log_user;
    tsq_progress_fn progress_fn;
    void *progress_user;
    char info[TSQ_INFO_CAP];
};

/* ---- memory: every allocation goes through the context ---- */
void *tsq__alloc(tsq_context *ctx, size_t size);   /* 64-byte aligned */
void *tsq__calloc(tsq_context *ctx, size_t count, size_t size);
void tsq__free(tsq_context *ctx, void *ptr);       /* accepts NULL */

/* Blocks allocated one at a time and freed together (core/arena.c): the
 * arrays a loader or a plan description borrows. Start from
 * {ctx, NULL, 0, 0}; tsq__arena_alloc returns NULL when out of memory;
 * tsq__arena_free frees every block and the list. */
typedef struct tsq__arena {
    tsq_context *ctx;
    void **blocks;
    int64_t nblocks, cap;
} tsq__arena;
void *tsq__arena_alloc(tsq__arena *a, size_t bytes);
void tsq__arena_free(tsq__arena *a);

/* Overflow-checked arithmetic; return 0 on overflow, 1 on success. */
int tsq__mul_size(size_t a, size_t b, size_t *out);
int tsq__mul_i64(int64_t a, int64_t b, int64_t *out);

/* For loops over a few dozen floats that the compiler would otherwise turn
 * into a memcpy or memset call each (loop-idiom recognition): at rows of
 * 28 floats, with borders of 1, the calls cost more than the copies. */
#if defined(__clang__)
#define TSQ__NO_LIBCALLS __attribute__((no_builtin("memcpy", "memset")))
#elif defined(__GNUC__)
#define TSQ__NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define TSQ__NO_LIBCALLS
#endif

/* ---- errors ---- */
/* Records "fmt..." as the object's message, logs it at level 1, and returns
 * `status`. Takes a const object: see tsq__object. */
tsq_status tsq__fail(const tsq__object *obj, tsq_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Clears the object's message (called when a call succeeds). Writes only when
 * there is a message, so successful calls on a shared handle do not race. */
void tsq__clear(const tsq__object *obj);

/* The one error path. TSQ_RETURN_ERROR_IF fails the calling function with
 * a message on obj when cond holds; TSQ_FORWARD_IF_ERROR returns the status
 * of a call that failed (its message is already recorded, by the callee):
 *
 *     TSQ_RETURN_ERROR_IF(!out, &q->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
 *     TSQ_FORWARD_IF_ERROR(check_input(q, where, "x", x, &l));
 *
 * Both leave through `return`, so they belong before the first write. */
#define TSQ_RETURN_ERROR_IF(cond, obj, status, ...)                                \
    do {                                                                           \
        if (cond)                                                                  \
            return tsq__fail((obj), (status), __VA_ARGS__);                        \
    } while (0)
#define TSQ_FORWARD_IF_ERROR(expr)                                                 \
    do {                                                                           \
        tsq_status tsq__forwarded = (expr);                                        \
        if (tsq__forwarded != TSQ_OK)                                              \
            return tsq__forwarded;                                                 \
    } while (0)

void tsq__log(tsq_context *ctx, int32_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Reports `done` of `total` for a TSQ_PROGRESS_* stage to the context's
 * progress callback, if any (from the calling thread, outside parallel
 * regions). Returns TSQ_OK, or TSQ_ERR_CANCELLED with a message on obj when
 * the callback asks to stop: call it where failing still leaves the
 * caller's data untouched. */
tsq_status tsq__progress(const tsq__object *obj, int32_t stage, int64_t done, int64_t total,
                         const char *where);
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
/* Bytes of t's data (0 for NULL). */
uint64_t tsq__tensor_bytes(const tsq_tensor *t);
/* *out = an owned copy of src (same dtype, shape and data), NULL for a NULL
 * src; the context's status on failure (*out NULL). */
tsq_status tsq__tensor_dup(tsq_context *ctx, const tsq_tensor *src, tsq_tensor **out);
/* Validates dtype/ndim/shape and computes numel and byte count; on failure
 * records the message on obj and returns the status. */
tsq_status tsq__shape_check(const tsq__object *obj, const char *where, int32_t dtype,
                            int32_t ndim, const int64_t *shape, int64_t *numel,
                            uint64_t *nbytes);
/* Checks t is non-NULL and has the given dtype; records the error on obj. */
tsq_status tsq__expect_dtype(const tsq__object *obj, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype);
/* 1 if every float is finite. */
int tsq__all_finite(const float *x, int64_t n);

/* ---- CPU ---- */
uint32_t tsq__cpu_detect(void);
/* Asks Linux for this process's permission to use the AMX tile data (the
 * kernel refuses tile instructions until then: SIGILL). 1 if granted
 * (again: it is idempotent), 0 if refused or not Linux on x86-64. */
int tsq__amx_permit(void);

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
 * (the calling thread included): each free thread takes the next index.
 * Blocks until all are done. fn must not fail; it records its own errors,
 * and its result must depend on i only, never on the thread that ran it.
 * With threads <= 1 it runs inline. */
typedef void (*tsq__task_fn)(void *arg, int64_t index);
void tsq__parallel_for(int64_t threads, int64_t n, tsq__task_fn fn, void *arg);
/* Contiguous-range splitting and the BLAS thread rule: core/parallel.h. */
#include "parallel.h"

#endif /* TSQ_INTERNAL_H */
