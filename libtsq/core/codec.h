/*
 * The one little-endian codec and CRC-32 of libtsq's serialized formats
 * (the quantizer blob, the model file): fixed-width integers and IEEE-754
 * floats as the little-endian integers of their bits, whatever the host's
 * byte order; a writer that counts when it has no buffer, so a format is
 * written by one function run twice (size, then bytes); and a reader that
 * never reads past its end, so hostile input can only make it stop.
 */
#ifndef TSQ_CORE_CODEC_H
#define TSQ_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- fixed offsets: the caller has checked the bytes are there ---- */

static inline void tsq__le_put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void tsq__le_put_u64(unsigned char *p, uint64_t v)
{
    tsq__le_put_u32(p, (uint32_t)v);
    tsq__le_put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t tsq__le_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t tsq__le_get_u64(const unsigned char *p)
{
    return (uint64_t)tsq__le_get_u32(p) | (uint64_t)tsq__le_get_u32(p + 4) << 32;
}

/* A float as the integer of its IEEE-754 bits, and back (the one
 * reinterpretation: memcpy of the same size). */
#define TSQ__BITCAST(to, from_type, x)                                                   \
    static inline to x(from_type v)                                                      \
    {                                                                                    \
        to r;                                                                            \
        memcpy(&r, &v, sizeof r);                                                        \
        return r;                                                                        \
    }
TSQ__BITCAST(uint32_t, float, tsq__f32_bits)
TSQ__BITCAST(uint64_t, double, tsq__f64_bits)
TSQ__BITCAST(float, uint32_t, tsq__bits_f32)
TSQ__BITCAST(double, uint64_t, tsq__bits_f64)
#undef TSQ__BITCAST

static inline void tsq__le_put_f32(unsigned char *p, float f)
{
    tsq__le_put_u32(p, tsq__f32_bits(f));
}

static inline void tsq__le_put_f64(unsigned char *p, double d)
{
    tsq__le_put_u64(p, tsq__f64_bits(d));
}

static inline float tsq__le_get_f32(const unsigned char *p)
{
    return tsq__bits_f32(tsq__le_get_u32(p));
}

static inline double tsq__le_get_f64(const unsigned char *p)
{
    return tsq__bits_f64(tsq__le_get_u64(p));
}

/* ---- streams ---- */

/* A writer appends at pos; with buf NULL (or past cap) it only counts, so
 * pos is always the size the whole output needs. */
typedef struct tsq__le_writer {
    unsigned char *buf;
    uint64_t cap, pos;
} tsq__le_writer;

void tsq__lew_bytes(tsq__le_writer *w, const void *p, uint64_t n);
void tsq__lew_u8(tsq__le_writer *w, uint8_t v);
void tsq__lew_u32(tsq__le_writer *w, uint32_t v);
void tsq__lew_u64(tsq__le_writer *w, uint64_t v);
void tsq__lew_f32(tsq__le_writer *w, float v);
void tsq__lew_f64(tsq__le_writer *w, double v);

/* A reader over n bytes. Any read past the end sets `bad` and returns
 * zeros (NULL for take), and every later read fails too, so a parser may
 * read a whole record and check `bad` once. */
typedef struct tsq__le_reader {
    const unsigned char *p;
    uint64_t n, pos;
    int bad;
} tsq__le_reader;

void tsq__ler_init(tsq__le_reader *r, const void *p, uint64_t n);
const unsigned char *tsq__ler_take(tsq__le_reader *r, uint64_t n);
uint8_t tsq__ler_u8(tsq__le_reader *r);
uint32_t tsq__ler_u32(tsq__le_reader *r);
uint64_t tsq__ler_u64(tsq__le_reader *r);
float tsq__ler_f32(tsq__le_reader *r);
double tsq__ler_f64(tsq__le_reader *r);
/* Bytes not read yet. */
static inline uint64_t tsq__ler_left(const tsq__le_reader *r) { return r->n - r->pos; }

/* ---- CRC-32 as zlib computes it (core/crc32.c) ----
 * tsq__crc32(0, data, n) is the checksum of data; a running checksum
 * continues with tsq__crc32(crc, more, m). */
uint32_t tsq__crc32(uint32_t crc, const void *data, size_t n);

#endif /* TSQ_CORE_CODEC_H */
