/* The little-endian writer and bounds-checked reader of core/codec.h. Every
 * width goes through one pair (put_le / get_le); floats travel as the
 * integers of their bits. */
#include "core/codec.h"

void tsq__lew_bytes(tsq__le_writer *w, const void *p, uint64_t n)
{
    if (w->buf && w->pos <= w->cap && n <= w->cap - w->pos)
        memcpy(w->buf + w->pos, p, (size_t)n);
    w->pos += n;
}

/* The low n bytes of v, least significant first. */
static void put_le(tsq__le_writer *w, uint64_t v, unsigned n)
{
    unsigned char b[8];
    unsigned i;
    for (i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    tsq__lew_bytes(w, b, n);
}

void tsq__lew_u8(tsq__le_writer *w, uint8_t v) { put_le(w, v, 1); }
void tsq__lew_u32(tsq__le_writer *w, uint32_t v) { put_le(w, v, 4); }
void tsq__lew_u64(tsq__le_writer *w, uint64_t v) { put_le(w, v, 8); }
void tsq__lew_f32(tsq__le_writer *w, float v) { put_le(w, tsq__f32_bits(v), 4); }
void tsq__lew_f64(tsq__le_writer *w, double v) { put_le(w, tsq__f64_bits(v), 8); }

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

/* An n-byte little-endian integer, or 0 past the end. */
static uint64_t get_le(tsq__le_reader *r, unsigned n)
{
    const unsigned char *q = tsq__ler_take(r, n);
    uint64_t v = 0;
    unsigned i;
    for (i = 0; q && i < n; i++)
        v |= (uint64_t)q[i] << (8 * i);
    return v;
}

uint8_t tsq__ler_u8(tsq__le_reader *r) { return (uint8_t)get_le(r, 1); }
uint32_t tsq__ler_u32(tsq__le_reader *r) { return (uint32_t)get_le(r, 4); }
uint64_t tsq__ler_u64(tsq__le_reader *r) { return get_le(r, 8); }
float tsq__ler_f32(tsq__le_reader *r) { return tsq__bits_f32((uint32_t)get_le(r, 4)); }
double tsq__ler_f64(tsq__le_reader *r) { return tsq__bits_f64(get_le(r, 8)); }
