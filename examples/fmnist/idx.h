/*
 * Reader for the IDX format of MNIST and Fashion-MNIST (gzipped or plain).
 * Part of the demo, not of libtsq: the library itself never reads files.
 *
 * IDX: a big-endian header {0, 0, type, ndim}, then ndim big-endian uint32
 * dimensions, then the data. Only unsigned bytes (type 0x08) are accepted:
 * images have 3 dimensions (count, rows, cols), labels 1 (count).
 */
#ifndef FMNIST_IDX_H
#define FMNIST_IDX_H

#include <stddef.h>
#include <stdint.h>

typedef struct idx_array {
    int64_t ndim;
    int64_t dims[3];
    int64_t count;     /* dims[0] */
    int64_t item_size; /* product of the other dims (1 for labels) */
    uint8_t *data;     /* count * item_size bytes, malloc'ed */
} idx_array;

/* Parses an IDX buffer that must hold exactly one array of `want_ndim`
 * dimensions. Every size is validated against the buffer: a truncated,
 * oversized or foreign buffer is an error, never a crash. On success fills
 * *out (data malloc'ed; free with idx_free) and returns 0; on error returns
 * -1 with a message in err. */
int idx_parse(const uint8_t *buf, size_t len, int want_ndim, idx_array *out, char *err,
              size_t errcap);

/* Reads a file (gzip or plain; zlib tells them apart) and parses it. */
int idx_load(const char *path, int want_ndim, idx_array *out, char *err, size_t errcap);

void idx_free(idx_array *a);

#endif
