/*
 * The .tsq container (docs/format.md): the header, the sections and their
 * CRC-32, the generic layer record (io/model_records.h), the packed low-bit
 * code encoding and the bounds checks that make hostile input harmless,
 * written with the one little-endian codec of core/codec.h.
 *
 *   header   "TSQM" | u32 version | u32 section count | u32 CRC of the 12 bytes before
 *   section  u32 tag | u64 payload length | payload | u32 CRC of tag, length and payload
 *
 * What each layer kind puts into its record is nn/net_records.c's business.
 */
#include "io/model_records.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "TSQM"
#define TAG_NETW 0x5754454Eu /* "NETW" read as a little-endian u32 */
#define TAG_LAYR 0x5259414Cu /* "LAYR" */
#define MAX_SECTIONS 4096
#define MAX_ATTR (UINT64_C(1) << 30)
#define MAX_DIM (UINT64_C(1) << 40)
#define MAX_INPUT_DIM (UINT64_C(1) << 24)

/* ------------------------------------------------------------------ */
/* Packed low-bit codes: value v in -m..m stored as v + m in `bits`     */
/* bits, least significant first (ternary: 2 bits, 4 codes a byte).     */
/* ------------------------------------------------------------------ */

uint64_t tsq__packed_bytes(int64_t count, int32_t bits)
{
    return ((uint64_t)count * (uint64_t)bits + 7) / 8;
}

static void put_packed(tsq__le_writer *w, const int8_t *codes, int64_t count, int32_t bits)
{
    int32_t m = (1 << (bits - 1)) - 1;
    uint32_t acc = 0;
    int fill = 0;
    int64_t i;
    for (i = 0; i < count; i++) {
        acc |= (uint32_t)(codes[i] + m) << fill;
        fill += bits;
        while (fill >= 8) {
            tsq__lew_u8(w, (uint8_t)acc);
            acc >>= 8;
            fill -= 8;
        }
    }
    if (fill > 0)
        tsq__lew_u8(w, (uint8_t)acc);
}

int tsq__unpack_codes(const unsigned char *src, int8_t *codes, int64_t count, int32_t bits)
{
    int32_t m = (1 << (bits - 1)) - 1;
    uint32_t mask = (1u << bits) - 1, acc = 0;
    int fill = 0;
    int64_t i;
    for (i = 0; i < count; i++) {
        int32_t v;
        while (fill < bits) {
            acc |= (uint32_t)(*src++) << fill;
            fill += 8;
        }
        v = (int32_t)(acc & mask) - m;
        acc >>= bits;
        fill -= bits;
        if (v > m) /* possible in a file written by another program */
            return 0;
        codes[i] = (int8_t)v;
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */
/* ------------------------------------------------------------------ */

static void put_array(tsq__le_writer *w, const tsq__rec_array *a)
{
    size_t len = strlen(a->name);
    int32_t d;
    tsq__lew_u8(w, (uint8_t)len);
    tsq__lew_bytes(w, a->name, len);
    tsq__lew_u8(w, (uint8_t)a->dtype);
    tsq__lew_u8(w, (uint8_t)a->encoding);
    tsq__lew_u8(w, (uint8_t)a->ndim);
    for (d = 0; d < a->ndim; d++)
        tsq__lew_u64(w, (uint64_t)a->shape[d]);
    if (a->encoding == TSQ__REC_PACKED) {
        tsq__lew_u64(w, tsq__packed_bytes(a->numel, a->packed_bits));
        put_packed(w, a->data, a->numel, a->packed_bits);
    } else if (a->dtype == TSQ_DTYPE_F32) {
        const float *x = a->data;
        int64_t i;
        tsq__lew_u64(w, (uint64_t)a->numel * 4);
        for (i = 0; i < a->numel; i++)
            tsq__lew_f32(w, x[i]);
    } else {
        tsq__lew_u64(w, (uint64_t)a->numel);
        tsq__lew_bytes(w, a->data, (uint64_t)a->numel);
    }
}

static void put_record(tsq__le_writer *w, const tsq__layer_rec *rec)
{
    int32_t i;
    tsq__lew_u32(w, (uint32_t)rec->kind);
    tsq__lew_u32(w, (uint32_t)rec->nattrs);
    for (i = 0; i < rec->nattrs; i++)
        tsq__lew_u64(w, (uint64_t)rec->attrs[i]);
    tsq__lew_u32(w, (uint32_t)rec->noptions);
    for (i = 0; i < rec->noptions; i++) {
        tsq__lew_u32(w, (uint32_t)(rec->option_keys[i] - TSQ__REC_OPTION_BASE));
        tsq__lew_f64(w, rec->option_values[i]);
    }
    if (rec->kind == TSQ__REC_KIND_WITH_CHANNELS) {
        int64_t c, count = rec->nchannels > 0 ? rec->nchannels : 1;
        tsq__lew_u64(w, (uint64_t)rec->nchannels);
        for (c = 0; c < count; c++) {
            int32_t bits = 0;
            float eps = 0.0f, delta = 0.0f;
            rec->ch_get(rec->ch_owner, c, &bits, &eps, &delta);
            tsq__lew_u32(w, (uint32_t)bits);
            tsq__lew_f32(w, eps);
            tsq__lew_f32(w, delta);
        }
    }
    tsq__lew_u32(w, (uint32_t)rec->narrays);
    for (i = 0; i < rec->narrays; i++)
        put_array(w, &rec->arrays[i]);
}

static void put_head(tsq__le_writer *w, const tsq__model_head *head)
{
    int32_t d;
    tsq__lew_u32(w, (uint32_t)head->in_ndim);
    for (d = 0; d < 3; d++)
        tsq__lew_u64(w, (uint64_t)(d < head->in_ndim ? head->in_shape[d] : 0));
    tsq__lew_u32(w, (uint32_t)head->nrecords);
}

/* One section: tag, length, payload (head or rec), CRC. The payload is
 * written twice: once to count its length, once for real. */
static void put_section(tsq__le_writer *w, uint32_t tag, const tsq__model_head *head,
                        const tsq__layer_rec *rec)
{
    tsq__le_writer count = {NULL, 0, 0};
    uint64_t start = w->pos;
    if (rec)
        put_record(&count, rec);
    else
        put_head(&count, head);
    tsq__lew_u32(w, tag);
    tsq__lew_u64(w, count.pos);
    if (rec)
        put_record(w, rec);
    else
        put_head(w, head);
    if (w->buf && w->pos <= w->cap)
        tsq__lew_u32(w, tsq__crc32(0, w->buf + start, (size_t)(w->pos - start)));
    else
        tsq__lew_u32(w, 0);
}

tsq_status tsq__model_write(tsq__le_writer *w, const tsq__model_head *head,
                            tsq__rec_source source, void *user)
{
    tsq__layer_rec rec;
    int32_t i;
    tsq__lew_bytes(w, MAGIC, 4);
    tsq__lew_u32(w, TSQ_MODEL_FORMAT_VERSION);
    tsq__lew_u32(w, (uint32_t)(1 + head->nrecords));
    tsq__lew_u32(w, w->buf && w->cap >= 12 ? tsq__crc32(0, w->buf, 12) : 0);
    put_section(w, TAG_NETW, head, NULL);
    for (i = 0; i < head->nrecords; i++) {
        memset(&rec, 0, sizeof rec);
        TSQ_FORWARD_IF_ERROR(source(user, i, &rec));
        put_section(w, TAG_LAYR, NULL, &rec);
    }
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

tsq_status tsq__model_fail(const tsq__model_cursor *cur, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (cur->record >= 0)
        return tsq__fail(&cur->ctx->obj, TSQ_ERR_FORMAT, "%s: section %d (layer %d): %s",
                         cur->where, (int)cur->section, (int)cur->record, what);
    return tsq__fail(&cur->ctx->obj, TSQ_ERR_FORMAT, "%s: section %d: %s", cur->where,
                     (int)cur->section, what);
}

static tsq_status parse_array(const tsq__model_cursor *cur, tsq__le_reader *r,
                              tsq__rec_array *a)
{
    uint8_t len = tsq__ler_u8(r);
    const unsigned char *name = tsq__ler_take(r, len);
    uint64_t elem;
    int32_t d;
    if (r->bad)
        return tsq__model_fail(cur, "truncated tensor record");
    memcpy(a->name, name, len);
    a->name[len] = '\0';
    a->dtype = tsq__ler_u8(r);
    a->encoding = tsq__ler_u8(r);
    a->ndim = tsq__ler_u8(r);
    if (r->bad || a->ndim < 1 || a->ndim > TSQ_MAX_DIMS)
        return tsq__model_fail(cur, "tensor '%s' has a bad rank", a->name);
    a->numel = 1;
    for (d = 0; d < a->ndim; d++) {
        uint64_t s = tsq__ler_u64(r);
        if (s < 1 || s > MAX_DIM || !tsq__mul_i64(a->numel, (int64_t)s, &a->numel))
            return tsq__model_fail(cur, "tensor '%s' dimension %d is %llu", a->name, (int)d,
                                   (unsigned long long)s);
        a->shape[d] = (int64_t)s;
    }
    a->nbytes = tsq__ler_u64(r);
    if (r->bad)
        return tsq__model_fail(cur, "truncated tensor '%s'", a->name);
    if (a->encoding == TSQ__REC_RAW) {
        elem = a->dtype == TSQ_DTYPE_F32 ? 4
               : (a->dtype == TSQ_DTYPE_I8 || a->dtype == TSQ_DTYPE_U8) ? 1 : 0;
        if (!elem || a->nbytes / elem != (uint64_t)a->numel || a->nbytes % elem)
            return tsq__model_fail(cur, "tensor '%s': %llu bytes for %lld elements of dtype %d",
                                   a->name, (unsigned long long)a->nbytes, (long long)a->numel,
                                   (int)a->dtype);
    } else if (a->encoding != TSQ__REC_PACKED || a->dtype != TSQ_DTYPE_I8) {
        return tsq__model_fail(cur, "tensor '%s': unknown encoding %d", a->name,
                               (int)a->encoding);
    }
    a->data = tsq__ler_take(r, a->nbytes);
    if (r->bad)
        return tsq__model_fail(cur, "tensor '%s' needs %llu bytes, the section has fewer",
                               a->name, (unsigned long long)a->nbytes);
    return TSQ_OK;
}

static tsq_status parse_channels(const tsq__model_cursor *cur, tsq__le_reader *r,
                                 tsq__layer_rec *rec)
{
    uint64_t nch = tsq__ler_u64(r), count;
    if (r->bad || nch > (uint64_t)TSQ__REC_MAX_CHANNELS)
        return tsq__model_fail(cur, "quantizer channel count %llu", (unsigned long long)nch);
    rec->nchannels = (int64_t)nch;
    count = nch ? nch : 1;
    rec->ch_bytes = tsq__ler_take(r, count * 12);
    if (!rec->ch_bytes)
        return tsq__model_fail(cur, "truncated quantizer parameters");
    return TSQ_OK;
}

static tsq_status parse_record(const tsq__model_cursor *cur, tsq__le_reader *r,
                               tsq__layer_rec *rec)
{
    int32_t i;
    memset(rec, 0, sizeof *rec);
    rec->kind = (int32_t)tsq__ler_u32(r);
    rec->nattrs = (int32_t)tsq__ler_u32(r);
    if (r->bad || rec->nattrs < 0 || rec->nattrs > TSQ__REC_MAX_ATTRS)
        return tsq__model_fail(cur, "%d config values (at most %d)", (int)rec->nattrs,
                               TSQ__REC_MAX_ATTRS);
    for (i = 0; i < rec->nattrs; i++) {
        uint64_t v = tsq__ler_u64(r);
        if (v > MAX_ATTR)
            return tsq__model_fail(cur, "config value %d is %llu", (int)i,
                                   (unsigned long long)v);
        rec->attrs[i] = (int64_t)v;
    }
    rec->noptions = (int32_t)tsq__ler_u32(r);
    if (r->bad || rec->noptions < 0 || rec->noptions > TSQ__REC_MAX_OPTIONS)
        return tsq__model_fail(cur, "bad option count");
    for (i = 0; i < rec->noptions; i++) {
        uint32_t key = tsq__ler_u32(r);
        if (!r->bad && (key < 1 || key > 0xFF))
            return tsq__model_fail(cur, "option key %u is outside 1..255", key);
        rec->option_keys[i] = TSQ__REC_OPTION_BASE + (int32_t)key;
        rec->option_values[i] = tsq__ler_f64(r);
    }
    if (rec->kind == TSQ__REC_KIND_WITH_CHANNELS)
        TSQ_FORWARD_IF_ERROR(parse_channels(cur, r, rec));
    rec->narrays = (int32_t)tsq__ler_u32(r);
    if (r->bad || rec->narrays < 0 || rec->narrays > TSQ__REC_MAX_ARRAYS)
        return tsq__model_fail(cur, "bad tensor count");
    for (i = 0; i < rec->narrays; i++)
        TSQ_FORWARD_IF_ERROR(parse_array(cur, r, &rec->arrays[i]));
    if (tsq__ler_left(r) != 0)
        return tsq__model_fail(cur, "%llu unexpected bytes at the end",
                               (unsigned long long)tsq__ler_left(r));
    return TSQ_OK;
}

const tsq__rec_array *tsq__rec_find_array(const tsq__layer_rec *rec, const char *name)
{
    int32_t i;
    for (i = 0; i < rec->narrays; i++)
        if (strcmp(rec->arrays[i].name, name) == 0)
            return &rec->arrays[i];
    return NULL;
}

void tsq__rec_channel(const tsq__layer_rec *rec, int64_t i, int32_t *bits, float *eps,
                      float *delta)
{
    const unsigned char *p = rec->ch_bytes + 12 * i;
    *bits = (int32_t)tsq__le_get_u32(p);
    *eps = tsq__le_get_f32(p + 4);
    *delta = tsq__le_get_f32(p + 8);
}

int64_t tsq__rec_read_f32(const tsq__rec_array *a, float *dst)
{
    const unsigned char *p = a->data;
    int64_t i;
    for (i = 0; i < a->numel; i++) {
        dst[i] = tsq__le_get_f32(p + 4 * i);
        if (!isfinite(dst[i]))
            return i;
    }
    return -1;
}

/* Checks a section's frame and CRC; on success `payload` reads its body. */
static tsq_status next_section(const tsq__model_cursor *cur, tsq__le_reader *file,
                               uint32_t *tag, tsq__le_reader *payload)
{
    uint64_t start = file->pos, len;
    uint32_t crc;
    *tag = tsq__ler_u32(file);
    len = tsq__ler_u64(file);
    if (file->bad || len > tsq__ler_left(file))
        return tsq__model_fail(cur, "truncated section header or payload");
    tsq__ler_init(payload, tsq__ler_take(file, len), len);
    crc = tsq__ler_u32(file);
    if (file->bad)
        return tsq__model_fail(cur, "truncated section checksum");
    if (crc != tsq__crc32(0, file->p + start, (size_t)(12 + len)))
        return tsq__model_fail(cur, "checksum mismatch (corrupt data)");
    return TSQ_OK;
}

/* The fixed 16-byte header; *nsections receives the section count. */
static tsq_status read_header(tsq_context *ctx, const char *where, tsq__le_reader *file,
                              uint32_t *nsections)
{
    uint32_t version;
    TSQ_RETURN_ERROR_IF(file->n < 16 || memcmp(file->p, MAGIC, 4) != 0, &ctx->obj,
                        TSQ_ERR_FORMAT, "%s: not a .tsq model (bad magic)", where);
    tsq__ler_take(file, 4);
    version = tsq__ler_u32(file);
    *nsections = tsq__ler_u32(file);
    TSQ_RETURN_ERROR_IF(tsq__ler_u32(file) != tsq__crc32(0, file->p, 12), &ctx->obj,
                        TSQ_ERR_FORMAT, "%s: header checksum mismatch", where);
    TSQ_RETURN_ERROR_IF(version > TSQ_MODEL_FORMAT_VERSION, &ctx->obj, TSQ_ERR_VERSION,
                        "%s: format version %u, this library reads up to %d", where, version,
                        TSQ_MODEL_FORMAT_VERSION);
    TSQ_RETURN_ERROR_IF(version == 0, &ctx->obj, TSQ_ERR_FORMAT, "%s: format version 0",
                        where);
    TSQ_RETURN_ERROR_IF(*nsections < 1 || *nsections > MAX_SECTIONS, &ctx->obj, TSQ_ERR_FORMAT,
                        "%s: %u sections", where, *nsections);
    return TSQ_OK;
}

static tsq_status read_head(const tsq__model_cursor *cur, tsq__le_reader *file,
                            uint32_t nsections, tsq__model_head *head)
{
    tsq__le_reader payload;
    uint32_t tag, in_ndim, nrecords, d;
    TSQ_FORWARD_IF_ERROR(next_section(cur, file, &tag, &payload));
    if (tag != TAG_NETW)
        return tsq__model_fail(cur, "the first section is not NETW");
    in_ndim = tsq__ler_u32(&payload);
    for (d = 0; d < 3; d++) {
        uint64_t s = tsq__ler_u64(&payload);
        if (s > MAX_INPUT_DIM || (d < in_ndim && s < 1))
            return tsq__model_fail(cur, "input dimension %u is %llu", d, (unsigned long long)s);
        head->in_shape[d] = (int64_t)s;
    }
    nrecords = tsq__ler_u32(&payload);
    if (payload.bad || tsq__ler_left(&payload) != 0 || in_ndim < 1 || in_ndim > 3)
        return tsq__model_fail(cur, "malformed network header");
    if (nrecords > TSQ__REC_MAX_RECORDS || nrecords + 1 != nsections)
        return tsq__model_fail(cur, "%u layers in %u sections", nrecords, nsections);
    head->in_ndim = (int32_t)in_ndim;
    head->nrecords = (int32_t)nrecords;
    return TSQ_OK;
}

static tsq_status read_records(tsq__model_cursor *cur, tsq__le_reader *file,
                               const tsq__model_head *head, const tsq__model_sink *sink)
{
    /* A record with its arrays is a few KiB: from the allocator, not the stack. */
    tsq__layer_rec *rec = tsq__alloc(cur->ctx, sizeof *rec);
    tsq_status st = TSQ_OK;
    int32_t i;
    TSQ_RETURN_ERROR_IF(!rec, &cur->ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory",
                        cur->where);
    for (i = 0; i < head->nrecords && st == TSQ_OK; i++) {
        uint32_t tag;
        tsq__le_reader payload;
        cur->section = i + 1;
        cur->record = i;
        st = next_section(cur, file, &tag, &payload);
        if (st == TSQ_OK && tag != TAG_LAYR)
            st = tsq__model_fail(cur, "expected a LAYR section");
        if (st == TSQ_OK)
            st = parse_record(cur, &payload, rec);
        if (st == TSQ_OK)
            st = sink->record(sink->user, cur, rec);
    }
    tsq__free(cur->ctx, rec);
    return st;
}

tsq_status tsq__model_read(tsq_context *ctx, const char *where, const void *buf, uint64_t size,
                           const tsq__model_sink *sink)
{
    tsq__model_cursor cur;
    tsq__model_head head;
    tsq__le_reader file;
    uint32_t nsections = 0;
    cur.ctx = ctx;
    cur.where = where;
    cur.section = 0;
    cur.record = -1;
    tsq__ler_init(&file, buf, size);
    memset(&head, 0, sizeof head);
    TSQ_FORWARD_IF_ERROR(read_header(ctx, where, &file, &nsections));
    TSQ_FORWARD_IF_ERROR(read_head(&cur, &file, nsections, &head));
    TSQ_FORWARD_IF_ERROR(sink->head(sink->user, &cur, &head));
    TSQ_FORWARD_IF_ERROR(read_records(&cur, &file, &head, sink));
    if (tsq__ler_left(&file) != 0) {
        cur.record = -1;
        return tsq__model_fail(&cur, "%llu bytes after the last section",
                               (unsigned long long)tsq__ler_left(&file));
    }
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Files                                                                */
/* ------------------------------------------------------------------ */

tsq_status tsq__file_write(const tsq__object *obj, const char *where, const char *path,
                           const void *buf, uint64_t size)
{
    char tmp[4096];
    FILE *f;
    int ok;
    TSQ_RETURN_ERROR_IF(snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp, obj,
                        TSQ_ERR_INVALID, "%s: path too long", where);
    f = fopen(tmp, "wb");
    TSQ_RETURN_ERROR_IF(!f, obj, TSQ_ERR_IO, "%s: cannot create %s: %s", where, tmp,
                        strerror(errno));
    ok = fwrite(buf, 1, (size_t)size, f) == (size_t)size;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return tsq__fail(obj, TSQ_ERR_IO, "%s: writing %s failed: %s", where, path,
                         strerror(e));
    }
    return TSQ_OK;
}

tsq_status tsq__file_read(tsq_context *ctx, const char *where, const char *path, void **buf,
                          uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    long len;
    void *p;
    TSQ_RETURN_ERROR_IF(!f, &ctx->obj, TSQ_ERR_IO, "%s: cannot open %s: %s", where, path,
                        strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return tsq__fail(&ctx->obj, TSQ_ERR_IO, "%s: cannot size %s", where, path);
    }
    p = tsq__alloc(ctx, (size_t)len);
    if (!p) {
        fclose(f);
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory (%ld bytes)", where,
                         len);
    }
    if (fread(p, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        tsq__free(ctx, p);
        return tsq__fail(&ctx->obj, TSQ_ERR_IO, "%s: cannot read %s", where, path);
    }
    fclose(f);
    *buf = p;
    *size = (uint64_t)len;
    return TSQ_OK;
}
