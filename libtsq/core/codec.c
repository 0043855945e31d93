/* The little-endian writer and bounds-checked reader of core/codec.h. */
#include "core/codec.h"

void tsq__lew_bytes(tsq__le_writer *w, const void *p, uint64_t n)
{
    if (w->buf && w->pos <= w->cap && n <= w->cap - w->pos)
        memcpy(w->buf + w->pos, p, (size_t)n);
    w->pos += n;
}

void tsq__lew_u8(tsq__le_writer *w, uint8_t v) { tsq__lew_bytes(w, &v, 1); }

void tsq__lew_u32(tsq__le_writer *w, uint32_t v)
{
    unsigned char b[4];
    tsq__le_put_u32(b, v);
    tsq__lew_bytes(w, b, 4);
}

void tsq__lew_u64(tsq__le_writer *w, uint64_t v)
{
    unsigned char b[8];
    tsq__le_put_u64(b, v);
    tsq__lew_bytes(w, b, 8);
}

void tsq__lew_f32(tsq__le_writer *w, float v)
{
    unsigned char b[4];
    tsq__le_put_f32(b, v);
    tsq__lew_bytes(w, b, 4);
}

void tsq__lew_f64(tsq__le_writer *w, double v)
{
    unsigned char b[8];
    tsq__le_put_f64(b, v);
    tsq__lew_bytes(w, b, 8);
}

void tsq__ler_init(tsq__le_reader *r, const void *p, uint64_t n)
{
    r->p = p;
    r->n = n;
    r->pos = 0;
    r->bad = 0;
}

const unsigned char *tsq__ler_take(tsq__le_reader *r, uint64_t n)
{
    const unsigned char *q;
    if (r->bad || n > r->n - r->pos) {
        r->bad = 1;
        return NULL;
    }
    q = r->p + r->pos;
    r->pos += n;
    return q;
}

uint8_t tsq__ler_u8(tsq__le_reader *r)
{
    const unsigned char *q = tsq__ler_take(r, 1);
    return q ? q[0] : 0;
}

uint32_t tsq__ler_u32(tsq__le_reader *r)
{
    const unsigned char *q = tsq__ler_take(r, 4);
    return q ? tsq__le_get_u32(q) : 0;
}

uint64_t tsq__ler_u64(tsq__le_reader *r)
{
    const unsigned char *q = tsq__ler_take(r, 8);
    return q ? tsq__le_get_u64(q) : 0;
}

float tsq__ler_f32(tsq__le_reader *r)
{
    const unsigned char *q = tsq__ler_take(r, 4);
    return q ? tsq__le_get_f32(q) : 0.0f;
}

double tsq__ler_f64(tsq__le_reader *r)
{
    const unsigned char *q = tsq__ler_take(r, 8);
    return q ? tsq__le_get_f64(q) : 0.0;
}
