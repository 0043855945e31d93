/* The block arena of core/internal.h: a growing list of allocations from
 * one context, freed in one call. */
#include "internal.h"

#include <string.h>

void *tsq__arena_alloc(tsq__arena *a, size_t bytes)
{
    void *p;
    if (a->nblocks == a->cap) {
        int64_t cap = a->cap ? 2 * a->cap : 64;
        void **n = tsq__calloc(a->ctx, (size_t)cap, sizeof *n);
        if (!n)
            return NULL;
        if (a->blocks)
            memcpy(n, a->blocks, (size_t)a->nblocks * sizeof *n);
        tsq__free(a->ctx, a->blocks);
        a->blocks = n;
        a->cap = cap;
    }
    p = tsq__alloc(a->ctx, bytes ? bytes : 1);
    if (p)
        a->blocks[a->nblocks++] = p;
    return p;
}

void tsq__arena_free(tsq__arena *a)
{
    int64_t i;
    for (i = 0; i < a->nblocks; i++)
        tsq__free(a->ctx, a->blocks[i]);
    tsq__free(a->ctx, a->blocks);
    a->blocks = NULL;
    a->nblocks = a->cap = 0;
}
