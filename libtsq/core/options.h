/*
 * The one option-table mechanism of libtsq's handles. A handle family
 * (context, quantizer, ...) describes its options once, as a table of
 * {key, name, lo, hi, default, type, offset}, and set/get/bounds/defaults
 * are done here for every family: range and integrality checks, NaN
 * refusal, read-only keys and the family check (each family owns the keys
 * base + 1 .. base + 0xFF, so a key of another family is refused with a
 * message naming that family).
 *
 * Values travel as doubles (exact for every integer option, whose bounds
 * are far below 2^53) and are stored in the handle's own typed fields at
 * `offset`, so a handle keeps reading plain struct fields. An option whose
 * value the handle computes (a read-only count, a state flag) has type
 * TSQ__OPT_COMPUTED; the get call then asks the table's `computed` hook.
 *
 * To adopt it, a handle family writes its table and calls the four
 * functions below from its public set/get/bounds calls, doing any side
 * effect (clearing fitted state, refusing a change in some state) around
 * the call; see quant/quantizer.c and core/context.c.
 */
#ifndef TSQ_CORE_OPTIONS_H
#define TSQ_CORE_OPTIONS_H

#include "internal.h"

#include <stddef.h>

enum {
    TSQ__OPT_I32 = 1,   /* int32_t field, integral values only */
    TSQ__OPT_I64 = 2,   /* int64_t field, integral values only */
    TSQ__OPT_F64 = 3,   /* double field */
    TSQ__OPT_COMPUTED = 4 /* no field: read-only, answered by the hook */
};

typedef struct tsq__option {
    int32_t key;
    const char *name;
    double lo, hi, def;   /* inclusive bounds; def is ignored for COMPUTED */
    int32_t type;
    int32_t read_only;
    size_t offset;        /* offsetof the field in the handle */
} tsq__option;

typedef struct tsq__option_table {
    const char *family;   /* "context", "quantizer": used in messages */
    int32_t base;         /* keys are base + 1 .. base + count */
    int32_t count;
    const tsq__option *options; /* options[i].key == base + 1 + i */
    /* value of a TSQ__OPT_COMPUTED option of `handle` */
    double (*computed)(const void *handle, int32_t key);
    /* between the bounds in "x is outside lo<sep>hi": each family keeps
     * the spelling its messages had ("..", " .. ") */
    const char *range_sep;
} tsq__option_table;

/* The family that owns a key ("quantizer"), or NULL. */
const char *tsq__key_family(int32_t key);

/* The option of `key` in table t, or NULL. */
const tsq__option *tsq__option_find(const tsq__option_table *t, int32_t key);

/* Writes the inclusive bounds of key; TSQ_ERR_NULL, TSQ_ERR_INVALID
 * (no handle, so no message). */
tsq_status tsq__option_bounds(const tsq__option_table *t, int32_t key, double *lo, double *hi);

/* Checks that `value` may be set for key (known in this family, writable,
 * in bounds, integral where the field is, not NaN); on failure records a
 * message on obj prefixed with `where`. *opt receives the option. */
tsq_status tsq__option_check(const tsq__option_table *t, const tsq__object *obj,
                             const char *where, int32_t key, double value,
                             const tsq__option **opt);

/* Stores a checked value into the handle's field. */
void tsq__option_store(const tsq__option *o, void *handle, double value);

/* tsq__option_check then tsq__option_store. */
tsq_status tsq__option_set(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, void *handle, int32_t key, double value);

/* Reads key's value (TSQ_ERR_NULL with a message when value is NULL,
 * TSQ_ERR_INVALID for a key of another family or none). */
tsq_status tsq__option_get(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, const void *handle, int32_t key, double *value);

/* The default of key's option (TSQ_ERR_INVALID: not in the table), so
 * that another handle offering the same option (the net conversion
 * session's per-layer quantizer options) reads it from here instead of
 * repeating it. */
tsq_status tsq__option_default(const tsq__option_table *t, int32_t key, double *def);

/* Writes every option's default into the handle. */
void tsq__option_defaults(const tsq__option_table *t, void *handle);

#endif /* TSQ_CORE_OPTIONS_H */
