/* The option tables of core/options.h: lookup, checks, typed storage. */
#include "core/options.h"

#include <math.h>

/* The key families of the public headers (0x0100 apart, first key = base + 1). */
static const struct {
    int32_t base;
    const char *name;
} families[] = {
    {0x0100, "context"},         {0x0200, "quantizer"},     {0x0300, "regressor"},
    {0x0400, "layer option"},    {0x0500, "layer info"},    {0x0600, "net conversion"},
    {0x0700, "plan"},            {0x0800, "packed weights"}, {0x0900, "thresholds"},
    {0x0A00, "context info"},
};

const char *tsq__key_family(int32_t key)
{
    size_t i;
    for (i = 0; i < sizeof families / sizeof families[0]; i++)
        if (key > families[i].base && key <= families[i].base + 0xFF)
            return families[i].name;
    return NULL;
}

const tsq__option *tsq__option_find(const tsq__option_table *t, int32_t key)
{
    int64_t i = (int64_t)key - t->base - 1;
    if (i < 0 || i >= t->count)
        return NULL;
    return &t->options[i];
}

tsq_status tsq__option_bounds(const tsq__option_table *t, int32_t key, double *lo, double *hi)
{
    const tsq__option *o = tsq__option_find(t, key);
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (!o)
        return TSQ_ERR_INVALID;
    *lo = o->lo;
    *hi = o->hi;
    return TSQ_OK;
}

/* The message for a key that is not in t. */
static tsq_status unknown_key(const tsq__option_table *t, const tsq__object *obj,
                              const char *where, int32_t key)
{
    const char *family = tsq__key_family(key);
    if (family && (key & ~0xFF) != t->base)
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: unknown key 0x%04x: a %s key, not a %s one",
                         where, (unsigned)key, family, t->family);
    return tsq__fail(obj, TSQ_ERR_INVALID, "%s: unknown key 0x%04x (%d): no %s option has it",
                     where, (unsigned)key, (int)key, t->family);
}

tsq_status tsq__option_check(const tsq__option_table *t, const tsq__object *obj,
                             const char *where, int32_t key, double value,
                             const tsq__option **opt)
{
    const tsq__option *o = tsq__option_find(t, key);
    if (!o)
        return unknown_key(t, obj, where, key);
    TSQ_RETURN_ERROR_IF(o->read_only || o->type == TSQ__OPT_COMPUTED, obj, TSQ_ERR_INVALID,
                        "%s: %s is read-only", where, o->name);
    TSQ_RETURN_ERROR_IF(!(value >= o->lo && value <= o->hi), obj, TSQ_ERR_INVALID,
                        "%s: %s = %g is outside %g%s%g", where, o->name, value, o->lo,
                        t->range_sep ? t->range_sep : " .. ", o->hi);
    TSQ_RETURN_ERROR_IF(o->type != TSQ__OPT_F64 && value != floor(value), obj, TSQ_ERR_INVALID,
                        "%s: %s must be an integer, got %g", where, o->name, value);
    *opt = o;
    return TSQ_OK;
}

void tsq__option_store(const tsq__option *o, void *handle, double value)
{
    char *field = (char *)handle + o->offset;
    switch (o->type) {
    case TSQ__OPT_I32: *(int32_t *)(void *)field = (int32_t)value; break;
    case TSQ__OPT_I64: *(int64_t *)(void *)field = (int64_t)value; break;
    case TSQ__OPT_F64: *(double *)(void *)field = value; break;
    default: break;
    }
}

tsq_status tsq__option_set(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, void *handle, int32_t key, double value)
{
    const tsq__option *o = NULL;
    TSQ_FORWARD_IF_ERROR(tsq__option_check(t, obj, where, key, value, &o));
    tsq__option_store(o, handle, value);
    return TSQ_OK;
}

tsq_status tsq__option_get(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, const void *handle, int32_t key, double *value)
{
    const tsq__option *o = tsq__option_find(t, key);
    const char *field;
    TSQ_RETURN_ERROR_IF(!value, obj, TSQ_ERR_NULL, "%s: value is NULL", where);
    if (!o)
        return unknown_key(t, obj, where, key);
    field = (const char *)handle + o->offset;
    switch (o->type) {
    case TSQ__OPT_I32: *value = *(const int32_t *)(const void *)field; break;
    case TSQ__OPT_I64: *value = (double)*(const int64_t *)(const void *)field; break;
    case TSQ__OPT_F64: *value = *(const double *)(const void *)field; break;
    default: *value = t->computed(handle, key); break;
    }
    return TSQ_OK;
}

tsq_status tsq__option_default(const tsq__option_table *t, int32_t key, double *def)
{
    const tsq__option *o = tsq__option_find(t, key);
    if (!o || o->type == TSQ__OPT_COMPUTED)
        return TSQ_ERR_INVALID;
    *def = o->def;
    return TSQ_OK;
}

void tsq__option_defaults(const tsq__option_table *t, void *handle)
{
    int32_t i;
    for (i = 0; i < t->count; i++)
        if (t->options[i].type != TSQ__OPT_COMPUTED)
            tsq__option_store(&t->options[i], handle, t->options[i].def);
}
