/* Shared pieces of the libFuzzer targets (tests/fuzz/fuzz_*.c):
 *
 *  - a capped, counting allocator, so that a hostile size in the input makes
 *    libtsq fail with TSQ_ERR_NO_MEMORY instead of making the fuzzer run out
 *    of memory (-rss_limit_mb=2048), and so that every block given out
 *    through a context is proven freed when the context is destroyed;
 *  - FZ_REQUIRE, which reports a broken promise and abort()s: libFuzzer then
 *    saves the input as a crash;
 *  - the CRC-32 and little-endian codec of the serialized formats, the
 *    library's own (libtsq/core/codec.h; the targets link the static
 *    library), so that a target can repair the checksums of a mutated input
 *    and reach the parsing behind them. test_core checks that CRC against a
 *    bit-by-bit reference.
 *
 * Everything here is static: each target is one translation unit. */
#ifndef TSQ_FUZZ_COMMON_H
#define TSQ_FUZZ_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsq.h"
#include "core/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_REQUIRE(cond, ...)                                                \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz: %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* ---- capped allocator ---------------------------------------------------- */

/* The largest total of live bytes a context may hold. Large enough for any
 * model a small input can describe, far below the fuzzer's RSS limit. */
#define FZ_HEAP_CAP (UINT64_C(384) << 20)
#define FZ_HEADER 64u /* keeps the 64-byte alignment libtsq may ask for */

typedef struct fz_heap {
    uint64_t live_bytes;
    int64_t live_blocks;
    int64_t refused;
} fz_heap;

static inline void *fz_alloc(void *user, uint64_t size, uint64_t alignment)
{
    fz_heap *h = user;
    void *p = NULL;
    if (alignment > FZ_HEADER || (alignment & (alignment - 1)) != 0)
        return NULL;
    if (size > FZ_HEAP_CAP - h->live_bytes) {
        h->refused++;
        return NULL;
    }
    if (posix_memalign(&p, FZ_HEADER, (size_t)size + FZ_HEADER) != 0)
        return NULL;
    memcpy(p, &size, sizeof size);
    h->live_bytes += size;
    h->live_blocks++;
    return (uint8_t *)p + FZ_HEADER;
}

static inline void fz_free(void *user, void *ptr)
{
    fz_heap *h = user;
    uint8_t *base = (uint8_t *)ptr - FZ_HEADER;
    uint64_t size;
    memcpy(&size, base, sizeof size);
    FZ_REQUIRE(h->live_blocks > 0 && size <= h->live_bytes, "free of an unknown block");
    h->live_bytes -= size;
    h->live_blocks--;
    free(base);
}

static inline tsq_context *fz_context(fz_heap *h)
{
    tsq_context *ctx = NULL;
    memset(h, 0, sizeof *h);
    FZ_REQUIRE(tsq_context_create_with_allocator(&ctx, fz_alloc, fz_free, h) == TSQ_OK,
               "context");
    return ctx;
}

/* Destroys the context: every block libtsq took must be back. */
static inline void fz_context_done(tsq_context *ctx, fz_heap *h)
{
    tsq_context_destroy(ctx);
    FZ_REQUIRE(h->live_blocks == 0 && h->live_bytes == 0,
               "%lld blocks (%llu bytes) leaked through the context",
               (long long)h->live_blocks, (unsigned long long)h->live_bytes);
}

/* ---- messages -------------------------------------------------------------- */

/* A message must be a NUL-terminated string (ASan checks the read) that fits
 * the library's message buffer; `nonempty` when a call has just failed. */
static inline void fz_check_msg(const char *msg, int nonempty, const char *what)
{
    size_t n;
    FZ_REQUIRE(msg != NULL, "%s: errmsg is NULL", what);
    n = strlen(msg);
    FZ_REQUIRE(n < 4096, "%s: errmsg of %zu bytes", what, n);
    if (nonempty)
        FZ_REQUIRE(n > 0, "%s: a failed call left no message", what);
}

/* ---- the library's own little-endian codec and CRC-32 (core/codec.h) ----- */

static inline uint32_t fz_crc32(const uint8_t *p, uint64_t n)
{
    return tsq__crc32(0, p, (size_t)n);
}

static inline uint32_t fz_get_u32(const uint8_t *p) { return tsq__le_get_u32(p); }
static inline uint64_t fz_get_u64(const uint8_t *p) { return tsq__le_get_u64(p); }
static inline void fz_put_u32(uint8_t *p, uint32_t v) { tsq__le_put_u32(p, v); }

/* Bitwise equality of doubles (NaN equals the same NaN). */
static inline int fz_same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static inline int fz_same_float(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

#endif
