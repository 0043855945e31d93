/*
 * The one option-table mechanism of libtsq's handles. Every handle family
 * with options (context, quantizer, regressor, layer, net conversion)
 * describes them once, as a table of {key, name, bounds, default,
 * integer-or-not, storage}, and set/get/bounds/defaults are done here:
 * the family check (each family owns the keys base + 1 .. base + 0xFF, so
 * a key of another family is refused with a message naming that family),
 * NaN refusal, range and integrality checks, read-only keys, and options
 * that apply to some handles of the family only (a layer option of
 * another layer kind).
 *
 * Values travel as doubles (exact for every integer option, whose bounds
 * are far below 2^53). An option is stored in one of three ways:
 *   - a typed field of the handle at `offset` (I32, INT, I64, F64), so the
 *     handle keeps reading plain struct fields;
 *   - through the table's `store` / `load` hooks (HOOK), for a value that
 *     lives elsewhere (a layer kind's own struct) or has side effects;
 *   - computed on reading (COMPUTED: read-only, answered by `load`).
 * An option may take its bounds, default and integrality from an option
 * of another table (`like`, `like_key`): the net's conversion options
 * that stand for quantizer options read them from the quantizer's table,
 * so each is stated once.
 *
 * A family writes its table and calls tsq__option_set / get / bounds /
 * defaults from its public calls, doing what is not per option (refusing
 * a change while a fit runs, clearing the message) around them.
 */
#ifndef TSQ_CORE_OPTIONS_H
#define TSQ_CORE_OPTIONS_H

#include "internal.h"

#include <stddef.h>

/* Storage of an option's value. */
enum {
    TSQ__OPT_I32 = 1,     /* int32_t field at offset */
    TSQ__OPT_INT = 2,     /* int field at offset */
    TSQ__OPT_I64 = 3,     /* int64_t field at offset */
    TSQ__OPT_F64 = 4,     /* double field at offset */
    TSQ__OPT_HOOK = 5,    /* the table's store / load hooks */
    TSQ__OPT_COMPUTED = 6 /* read-only, answered by the load hook */
};

/* Flags of an option. */
enum {
    TSQ__OPT_INTEGER = 1,  /* integral values only (implied by the integer fields) */
    TSQ__OPT_READ_ONLY = 2 /* set is refused (implied by COMPUTED) */
};

struct tsq__option_table;

typedef struct tsq__option {
    int32_t key;
    const char *name;
    double lo, hi, def;   /* inclusive bounds and default (unless `like`) */
    int32_t storage;      /* TSQ__OPT_I32 .. TSQ__OPT_COMPUTED */
    int32_t flags;        /* TSQ__OPT_INTEGER | TSQ__OPT_READ_ONLY */
    size_t offset;        /* offsetof the field in the handle */
    /* Handles of the family the option applies to, as bits that the
     * table's `scope` hook gives for a handle; 0: every handle. */
    uint32_t scope;
    /* Non-NULL: bounds, default and integrality are those of `like_key`
     * in this table. */
    const struct tsq__option_table *like;
    int32_t like_key;
} tsq__option;

typedef struct tsq__option_table {
    const char *family;   /* "context", "quantizer": used in messages */
    int32_t base;         /* keys are base + 1 .. base + count */
    int32_t count;
    const tsq__option *options; /* options[i].key == base + 1 + i */
    /* HOOK options: store a checked value (may refuse it, with a message
     * on obj); COMPUTED and HOOK options: read the value. NULL when the
     * table has none. */
    tsq_status (*store)(void *handle, const tsq__option *o, double value, const char *where);
    void (*load)(const void *handle, const tsq__option *o, double *value);
    /* The scope bits of a handle, and what it is in "x does not apply to
     * <what>" ("a dense layer"; NULL when every option applies to every
     * handle). */
    uint32_t (*scope)(const void *handle);
    void (*describe)(const void *handle, char *buf, size_t cap);
    /* between the bounds in "x is outside lo<sep>hi" (NULL: " .. ") */
    const char *range_sep;
} tsq__option_table;

/* The family that owns a key ("quantizer"), or NULL. */
const char *tsq__key_family(int32_t key);

/* The option of `key` in table t, or NULL. */
const tsq__option *tsq__option_find(const tsq__option_table *t, int32_t key);

/* The bounds, default and integrality of option o (its own or its
 * `like`'s). */
void tsq__option_limits(const tsq__option *o, double *lo, double *hi, double *def,
                        int *integer);

/* Writes the inclusive bounds of key; TSQ_ERR_NULL, TSQ_ERR_INVALID
 * (no handle, so no message). */
tsq_status tsq__option_bounds(const tsq__option_table *t, int32_t key, double *lo, double *hi);

/* Checks that `value` may be set for key on handle (known in this family,
 * applicable to this handle, writable, not NaN, in bounds, integral where
 * it must be); on failure records a message on obj prefixed with `where`.
 * *opt receives the option. */
tsq_status tsq__option_check(const tsq__option_table *t, const tsq__object *obj,
                             const char *where, const void *handle, int32_t key, double value,
                             const tsq__option **opt);

/* Stores a checked value (into the field, or through the store hook). */
tsq_status tsq__option_store(const tsq__option_table *t, const tsq__option *o, void *handle,
                             double value, const char *where);

/* tsq__option_check then tsq__option_store. */
tsq_status tsq__option_set(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, void *handle, int32_t key, double value);

/* Reads key's value (TSQ_ERR_NULL with a message when value is NULL,
 * TSQ_ERR_INVALID for a key of another family, none, or one that does not
 * apply to this handle). A NULL handle reads the defaults (a handle not
 * made yet, such as a net's conversion state before its first use). */
tsq_status tsq__option_get(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, const void *handle, int32_t key, double *value);

/* Writes the default of every writable option that applies to handle.
 * Fails only if a store hook refuses a default (a bug). */
tsq_status tsq__option_defaults(const tsq__option_table *t, void *handle);

#endif /* TSQ_CORE_OPTIONS_H */
