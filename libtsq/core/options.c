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

void tsq__option_limits(const tsq__option *o, double *lo, double *hi, double *def, int *integer)
{
    const tsq__option *s = o->like ? tsq__option_find(o->like, o->like_key) : o;
    if (!s)
        s = o; /* a table bug; the option's own values are the fallback */
    *lo = s->lo;
    *hi = s->hi;
    *def = s->def;
    *integer = (s->flags & TSQ__OPT_INTEGER) || s->storage == TSQ__OPT_I32 ||
               s->storage == TSQ__OPT_INT || s->storage == TSQ__OPT_I64;
}

tsq_status tsq__option_bounds(const tsq__option_table *t, int32_t key, double *lo, double *hi)
{
    const tsq__option *o = tsq__option_find(t, key);
    double def;
    int integer;
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (!o)
        return TSQ_ERR_INVALID;
    tsq__option_limits(o, lo, hi, &def, &integer);
    return TSQ_OK;
}

static int applies(const tsq__option_table *t, const tsq__option *o, const void *handle)
{
    return !o->scope || !handle || !t->scope || (o->scope & t->scope(handle)) != 0;
}

/* Finds key's option for handle, or records why there is none. */
static tsq_status lookup(const tsq__option_table *t, const tsq__object *obj, const char *where,
                         const void *handle, int32_t key, const tsq__option **opt)
{
    const tsq__option *o = tsq__option_find(t, key);
    const char *family = tsq__key_family(key);
    if (!o && family && (key & ~0xFF) != t->base)
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: unknown key 0x%04x: a %s key, not a %s one",
                         where, (unsigned)key, family, t->family);
    TSQ_RETURN_ERROR_IF(!o, obj, TSQ_ERR_INVALID,
                        "%s: unknown key 0x%04x (%d): no %s option has it", where, (unsigned)key,
                        (int)key, t->family);
    if (!applies(t, o, handle)) {
        char what[64] = "this handle";
        if (t->describe)
            t->describe(handle, what, sizeof what);
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: %s does not apply to %s", where, o->name,
                         what);
    }
    *opt = o;
    return TSQ_OK;
}

static int read_only(const tsq__option *o)
{
    return (o->flags & TSQ__OPT_READ_ONLY) || o->storage == TSQ__OPT_COMPUTED;
}

tsq_status tsq__option_check(const tsq__option_table *t, const tsq__object *obj,
                             const char *where, const void *handle, int32_t key, double value,
                             const tsq__option **opt)
{
    const tsq__option *o = NULL;
    double lo, hi, def;
    int integer;
    TSQ_FORWARD_IF_ERROR(lookup(t, obj, where, handle, key, &o));
    TSQ_RETURN_ERROR_IF(read_only(o), obj, TSQ_ERR_INVALID, "%s: %s is read-only", where,
                        o->name);
    tsq__option_limits(o, &lo, &hi, &def, &integer);
    TSQ_RETURN_ERROR_IF(isnan(value), obj, TSQ_ERR_INVALID, "%s: %s = NaN is refused", where,
                        o->name);
    TSQ_RETURN_ERROR_IF(!(value >= lo && value <= hi), obj, TSQ_ERR_INVALID,
                        "%s: %s = %g is outside %g%s%g", where, o->name, value, lo,
                        t->range_sep ? t->range_sep : " .. ", hi);
    TSQ_RETURN_ERROR_IF(integer && value != floor(value), obj, TSQ_ERR_INVALID,
                        "%s: %s must be an integer, got %g", where, o->name, value);
    *opt = o;
    return TSQ_OK;
}

tsq_status tsq__option_store(const tsq__option_table *t, const tsq__option *o, void *handle,
                             double value, const char *where)
{
    char *field = (char *)handle + o->offset;
    switch (o->storage) {
    case TSQ__OPT_I32: *(int32_t *)(void *)field = (int32_t)value; break;
    case TSQ__OPT_INT: *(int *)(void *)field = (int)value; break;
    case TSQ__OPT_I64: *(int64_t *)(void *)field = (int64_t)value; break;
    case TSQ__OPT_F64: *(double *)(void *)field = value; break;
    case TSQ__OPT_HOOK: return t->store(handle, o, value, where);
    default: return TSQ_ERR_INTERNAL; /* COMPUTED: refused by the check */
    }
    return TSQ_OK;
}

tsq_status tsq__option_set(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, void *handle, int32_t key, double value)
{
    const tsq__option *o = NULL;
    TSQ_FORWARD_IF_ERROR(tsq__option_check(t, obj, where, handle, key, value, &o));
    return tsq__option_store(t, o, handle, value, where);
}

tsq_status tsq__option_get(const tsq__option_table *t, const tsq__object *obj,
                           const char *where, const void *handle, int32_t key, double *value)
{
    const tsq__option *o = NULL;
    const char *field;
    double lo, hi, def;
    int integer;
    TSQ_RETURN_ERROR_IF(!value, obj, TSQ_ERR_NULL, "%s: value is NULL", where);
    TSQ_FORWARD_IF_ERROR(lookup(t, obj, where, handle, key, &o));
    tsq__option_limits(o, &lo, &hi, &def, &integer);
    if (!handle) {
        *value = def;
        return TSQ_OK;
    }
    field = (const char *)handle + o->offset;
    switch (o->storage) {
    case TSQ__OPT_I32: *value = *(const int32_t *)(const void *)field; break;
    case TSQ__OPT_INT: *value = *(const int *)(const void *)field; break;
    case TSQ__OPT_I64: *value = (double)*(const int64_t *)(const void *)field; break;
    case TSQ__OPT_F64: *value = *(const double *)(const void *)field; break;
    default: t->load(handle, o, value); break;
    }
    return TSQ_OK;
}

tsq_status tsq__option_defaults(const tsq__option_table *t, void *handle)
{
    int32_t i;
    double lo, hi, def;
    int integer;
    for (i = 0; i < t->count; i++) {
        const tsq__option *o = &t->options[i];
        if (read_only(o) || !applies(t, o, handle))
            continue;
        tsq__option_limits(o, &lo, &hi, &def, &integer);
        TSQ_FORWARD_IF_ERROR(tsq__option_store(t, o, handle, def, "defaults"));
    }
    return TSQ_OK;
}
