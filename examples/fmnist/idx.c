/* IDX reader: validate everything, trust no size from the file. */
#include "idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Caps that keep a hostile header from asking for absurd memory: the real
 * Fashion-MNIST training images are 47 MB uncompressed. */
#define IDX_MAX_BYTES ((size_t)1 << 30)
#define IDX_MAX_DIM 100000000u

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int idx_parse(const uint8_t *buf, size_t len, int want_ndim, idx_array *out, char *err,
              size_t errcap)
{
    size_t header, payload = 1;
    int i, ndim;
    memset(out, 0, sizeof *out);
    if (want_ndim < 1 || want_ndim > 3) {
        snprintf(err, errcap, "idx: can only read 1 to 3 dimensions");
        return -1;
    }
    if (len < 4) {
        snprintf(err, errcap, "idx: file has %zu bytes, too short for a header", len);
        return -1;
    }
    if (buf[0] != 0 || buf[1] != 0) {
        snprintf(err, errcap, "idx: bad magic %02x %02x (not an IDX file)", buf[0], buf[1]);
        return -1;
    }
    if (buf[2] != 0x08) {
        snprintf(err, errcap, "idx: element type 0x%02x, only unsigned bytes (0x08) supported",
                 buf[2]);
        return -1;
    }
    ndim = buf[3];
    if (ndim != want_ndim) {
        snprintf(err, errcap, "idx: %d dimensions, expected %d", ndim, want_ndim);
        return -1;
    }
    header = 4 + 4 * (size_t)ndim;
    if (len < header) {
        snprintf(err, errcap, "idx: truncated header (%zu of %zu bytes)", len, header);
        return -1;
    }
    for (i = 0; i < ndim; i++) {
        uint32_t d = be32(buf + 4 + 4 * i);
        if (d == 0 || d > IDX_MAX_DIM) {
            snprintf(err, errcap, "idx: dimension %d is %u", i, d);
            return -1;
        }
        if (payload > IDX_MAX_BYTES / d) {
            snprintf(err, errcap, "idx: data larger than %zu bytes", IDX_MAX_BYTES);
            return -1;
        }
        payload *= d;
        out->dims[i] = d;
    }
    if (len - header != payload) {
        snprintf(err, errcap, "idx: %s: header says %zu data bytes, file has %zu",
                 len - header < payload ? "truncated" : "trailing data", payload, len - header);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->data = malloc(payload);
    if (!out->data) {
        snprintf(err, errcap, "idx: out of memory for %zu bytes", payload);
        memset(out, 0, sizeof *out);
        return -1;
    }
    memcpy(out->data, buf + header, payload);
    out->ndim = ndim;
    out->count = out->dims[0];
    out->item_size = (int64_t)(payload / (size_t)out->dims[0]);
    return 0;
}

/* Reads the whole (decompressed) file into memory, up to the cap. */
static int read_all(const char *path, uint8_t **buf, size_t *len, char *err, size_t errcap)
{
    size_t cap = 1 << 20, n = 0;
    uint8_t *b;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errcap, "idx: cannot open %s", path);
        return -1;
    }
    b = malloc(cap);
    for (;;) {
        int got;
        if (!b) {
            snprintf(err, errcap, "idx: out of memory reading %s", path);
            gzclose(f);
            return -1;
        }
        if (n == cap) {
            uint8_t *nb;
            if (cap >= IDX_MAX_BYTES + 64) {
                snprintf(err, errcap, "idx: %s is larger than %zu bytes", path, IDX_MAX_BYTES);
                free(b);
                gzclose(f);
                return -1;
            }
            cap *= 2;
            nb = realloc(b, cap);
            if (!nb)
                free(b);
            b = nb;
            continue;
        }
        got = gzread(f, b + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (got < 0) {
            int zerr;
            snprintf(err, errcap, "idx: %s: %s", path, gzerror(f, &zerr));
            free(b);
            gzclose(f);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    /* A truncated gzip stream reads as a short file without an error from
     * gzread in some zlib versions; gzclose_r reports it. */
    if (gzclose_r(f) != Z_OK) {
        snprintf(err, errcap, "idx: %s: corrupt or truncated gzip data", path);
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

int idx_load(const char *path, int want_ndim, idx_array *out, char *err, size_t errcap)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    char inner[200];
    memset(out, 0, sizeof *out);
    if (read_all(path, &buf, &len, err, errcap) != 0)
        return -1;
    rc = idx_parse(buf, len, want_ndim, out, inner, sizeof inner);
    if (rc != 0)
        snprintf(err, errcap, "%s: %s", path, inner);
    free(buf);
    return rc;
}

void idx_free(idx_array *a)
{
    if (a) {
        free(a->data);
        memset(a, 0, sizeof *a);
    }
}
