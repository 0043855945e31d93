/* The context: allocator, options, seed, logging, and error recording
 * (the one error path of every handle: tsq__fail / tsq__clear). */
#include "internal.h"
#include "core/options.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TSQ_ALIGN 64

static void *default_alloc(void *user, uint64_t size, uint64_t alignment)
{
    void *p = NULL;
    (void)user;
    if (size > SIZE_MAX)
        return NULL;
    if (alignment < sizeof(void *))
        alignment = sizeof(void *);
    if (posix_memalign(&p, (size_t)alignment, size ? (size_t)size : 1) != 0)
        return NULL;
    return p;
}

static void default_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

void *tsq__alloc(tsq_context *ctx, size_t size)
{
    return ctx->alloc_fn(ctx->alloc_user, (uint64_t)(size ? size : 1), TSQ_ALIGN);
}

void *tsq__calloc(tsq_context *ctx, size_t count, size_t size)
{
    size_t total;
    void *p;
    if (!tsq__mul_size(count, size, &total))
        return NULL;
    p = tsq__alloc(ctx, total);
    if (p)
        memset(p, 0, total);
    return p;
}

void tsq__free(tsq_context *ctx, void *ptr)
{
    if (ptr)
        ctx->free_fn(ctx->alloc_user, ptr);
}

int tsq__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

int tsq__mul_i64(int64_t a, int64_t b, int64_t *out)
{
    /* Only non-negative operands occur in shape arithmetic. */
    if (a < 0 || b < 0)
        return 0;
    if (a != 0 && b > INT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

void tsq__object_init(tsq__object *obj, tsq_context *ctx)
{
    obj->ctx = ctx;
    obj->msg = obj->msg_buf;
    obj->msg_buf[0] = '\0';
}

void tsq__clear(const tsq__object *obj)
{
    /* Only write when there is a message: a call that succeeds then only
     * reads the object, so handles that create objects from a shared
     * context (tsq_net_learn_codes, tsq_net_fit_transform, tsq_plan_run
     * with a shared context) do not race on its message. */
    if (obj->msg[0] != '\0')
        obj->msg[0] = '\0';
}

static void vlog(tsq_context *ctx, int32_t level, const char *fmt, va_list ap)
{
    char line[TSQ_MSG_CAP];
    if (!ctx || !ctx->log_fn || level > ctx->log_level)
        return;
    vsnprintf(line, sizeof line, fmt, ap);
    ctx->log_fn(ctx->log_user, level, line);
}

void tsq__log(tsq_context *ctx, int32_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, level, fmt, ap);
    va_end(ap);
}

tsq_status tsq__fail(const tsq__object *obj, tsq_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(obj->msg, TSQ_MSG_CAP, fmt, ap);
    va_end(ap);
    if (obj->ctx && obj->ctx->log_fn && obj->ctx->log_level >= 1)
        obj->ctx->log_fn(obj->ctx->log_user, 1, obj->msg);
    return status;
}

/* The CPU mask: the features the kernels may use are the detected ones
 * that the mask keeps, recomputed when it is set. */
static tsq_status context_store(void *handle, const tsq__option *o, double value,
                                const char *where)
{
    tsq_context *ctx = handle;
    (void)o;
    (void)where;
    ctx->cpu_mask = (uint32_t)value;
    ctx->cpu = ctx->cpu_detected & ctx->cpu_mask;
    return TSQ_OK;
}

static void context_load(const void *handle, const tsq__option *o, double *value)
{
    (void)o;
    *value = (double)((const tsq_context *)handle)->cpu_mask;
}

static const tsq__option context_options[] = {
    {TSQ_CONTEXT_THREADS, "threads", 1, 256, 1, TSQ__OPT_I64, 0,
     offsetof(tsq_context, threads), 0, NULL, 0},
    {TSQ_CONTEXT_LOG_LEVEL, "log_level", 0, 4, 1, TSQ__OPT_I64, 0,
     offsetof(tsq_context, log_level), 0, NULL, 0},
    {TSQ_CONTEXT_CPU_MASK, "cpu_mask", 0, 4294967295.0, 4294967295.0, TSQ__OPT_HOOK,
     TSQ__OPT_INTEGER, 0, 0, NULL, 0},
};

static const tsq__option_table context_table = {
    "context", 0x0100, (int32_t)(sizeof context_options / sizeof context_options[0]),
    context_options, context_store, context_load, NULL, NULL, ".."};

static tsq_status create(tsq_context **out, tsq_alloc_fn alloc_fn, tsq_free_fn free_fn,
                         void *user)
{
    tsq_context *ctx;
    ctx = alloc_fn(user, sizeof *ctx, TSQ_ALIGN);
    if (!ctx)
        return TSQ_ERR_NO_MEMORY;
    memset(ctx, 0, sizeof *ctx);
    tsq__object_init(&ctx->obj, ctx);
    ctx->alloc_fn = alloc_fn;
    ctx->free_fn = free_fn;
    ctx->alloc_user = user;
    ctx->cpu_detected = tsq__cpu_detect(); /* once: the kernels and plans read ctx->cpu */
    (void)tsq__option_defaults(&context_table, ctx); /* cannot fail; sets cpu too */
    *out = ctx;
    return TSQ_OK;
}

tsq_status tsq_context_create(tsq_context **out)
{
    if (!out)
        return TSQ_ERR_NULL;
    *out = NULL;
    return create(out, default_alloc, default_free, NULL);
}

tsq_status tsq_context_create_with_allocator(tsq_context **out, tsq_alloc_fn alloc_fn,
                                             tsq_free_fn free_fn, void *user)
{
    if (!out)
        return TSQ_ERR_NULL;
    *out = NULL;
    if (!alloc_fn || !free_fn)
        return TSQ_ERR_NULL;
    return create(out, alloc_fn, free_fn, user);
}

void tsq_context_destroy(tsq_context *ctx)
{
    if (ctx)
        ctx->free_fn(ctx->alloc_user, ctx);
}

const char *tsq_context_errmsg(const tsq_context *ctx)
{
    return ctx ? ctx->obj.msg : "no context";
}

tsq_status tsq_context_option_bounds(int32_t key, double *lo, double *hi)
{
    return tsq__option_bounds(&context_table, key, lo, hi);
}

tsq_status tsq_context_set_option(tsq_context *ctx, int32_t key, double value)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(tsq__option_set(&context_table, &ctx->obj, "context_set_option", ctx,
                                         key, value));
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

tsq_status tsq_context_get_option(const tsq_context *ctx, int32_t key, double *value)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    return tsq__option_get(&context_table, &ctx->obj, "context_get_option", ctx, key, value);
}

tsq_status tsq_context_cpu_features(const tsq_context *ctx, uint32_t *features)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!features, &ctx->obj, TSQ_ERR_NULL,
                        "context_cpu_features: features is NULL");
    *features = ctx->cpu;
    return TSQ_OK;
}

tsq_status tsq_context_set_seed(tsq_context *ctx, uint64_t seed)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    ctx->seed = seed;
    ctx->streams = 0;
    return TSQ_OK;
}

tsq_status tsq_context_get_seed(const tsq_context *ctx, uint64_t *seed)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!seed, &ctx->obj, TSQ_ERR_NULL, "context_get_seed: seed is NULL");
    *seed = ctx->seed;
    return TSQ_OK;
}

tsq_status tsq_context_set_log(tsq_context *ctx, tsq_log_fn fn, void *user)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    ctx->log_fn = fn;
    ctx->log_user = fn ? user : NULL;
    return TSQ_OK;
}

tsq_status tsq_context_set_progress(tsq_context *ctx, tsq_progress_fn fn, void *user)
{
    if (!ctx)
        return TSQ_ERR_NULL;
    ctx->progress_fn = fn;
    ctx->progress_user = fn ? user : NULL;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

const char *tsq_progress_stage_name(int32_t stage)
{
    switch (stage) {
    case TSQ_PROGRESS_QUANTIZER_FIT: return "quantizer fit";
    case TSQ_PROGRESS_NET_LEARN_CODES: return "learn codes";
    case TSQ_PROGRESS_REGRESSOR_PASS: return "regressor pass";
    case TSQ_PROGRESS_NET_FIT_TRANSFORM: return "fit transform";
    case TSQ_PROGRESS_PLAN_CREATE: return "plan create";
    default: return "unknown stage";
    }
}

tsq_status tsq__progress(const tsq__object *obj, int32_t stage, int64_t done, int64_t total,
                         const char *where)
{
    const tsq_context *ctx = obj->ctx;
    if (!ctx || !ctx->progress_fn)
        return TSQ_OK;
    if (ctx->progress_fn(ctx->progress_user, stage, done, total) == 0)
        return TSQ_OK;
    return tsq__fail(obj, TSQ_ERR_CANCELLED,
                     "%s: cancelled by the progress callback (%s, %lld of %lld)", where,
                     tsq_progress_stage_name(stage), (long long)done, (long long)total);
}
