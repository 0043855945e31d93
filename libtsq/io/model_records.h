/*
 * The .tsq container as a generic record reader and writer (docs/format.md):
 * a header, a NETW section (the input sample shape and the record count),
 * then one LAYR section per layer record, each section with its CRC-32.
 * A layer record is what any layer kind puts in the file: a kind number,
 * integer attributes, (key, f64) options, the optional per-channel
 * quantizer block and named arrays (raw f32/i8/u8, or packed low-bit
 * codes). This folder knows how records are framed, bounded and checked
 * against hostile input; it does not know what a kind's attributes mean or
 * which arrays it needs: nn/net_records.c maps layers of a tsq_net to
 * records, nn/net_load.c records back to layers, and a reader that builds
 * something else (an inference plan) can read the same records with only
 * core underneath.
 */
#ifndef TSQ_IO_MODEL_RECORDS_H
#define TSQ_IO_MODEL_RECORDS_H

#include "internal.h"
#include "core/codec.h"

#define TSQ__REC_MAX_ATTRS 16
#define TSQ__REC_MAX_OPTIONS 16
#define TSQ__REC_MAX_ARRAYS 8
#define TSQ__REC_MAX_RECORDS 4095
#define TSQ__REC_MAX_CHANNELS (INT64_C(1) << 24)

/* A layer option is stored by its number within the layer-option family
 * (TSQ_LAYER_OPT_TRAINABLE = 0x0401 is stored as 1), as format 1 always
 * stored it: the file does not change when the API numbers its key
 * families. Records hold the API's keys. */
#define TSQ__REC_OPTION_BASE 0x0400

/* How an array's bytes encode its elements. */
enum { TSQ__REC_RAW = 0, TSQ__REC_PACKED = 1 };

/* The layer kind whose records carry the per-channel quantizer block
 * (u64 count, then (u32 bits, f32 eps, f32 delta) per channel). */
#define TSQ__REC_KIND_WITH_CHANNELS TSQ_LAYER_ACT_QUANT

typedef struct tsq__rec_array {
    char name[256];        /* NUL-terminated, at most 255 bytes */
    int32_t dtype;         /* TSQ_DTYPE_* */
    int32_t encoding;      /* TSQ__REC_RAW or TSQ__REC_PACKED (dtype i8) */
    int32_t packed_bits;   /* writer: the code width of a packed array */
    int32_t ndim;
    int64_t shape[TSQ_MAX_DIMS];
    int64_t numel;
    uint64_t nbytes;       /* reader: the stored bytes, all present */
    const void *data;      /* writer: the elements; reader: the stored bytes */
} tsq__rec_array;

typedef struct tsq__layer_rec {
    int32_t kind;
    int32_t nattrs;
    int64_t attrs[TSQ__REC_MAX_ATTRS];     /* each 0 .. 2^30 */
    int32_t noptions;
    int32_t option_keys[TSQ__REC_MAX_OPTIONS];
    double option_values[TSQ__REC_MAX_OPTIONS];
    /* the quantizer block (kind TSQ__REC_KIND_WITH_CHANNELS only): nchannels
     * 0 means one per-tensor set; max(1, nchannels) entries either way */
    int64_t nchannels;
    /* writer: entry i of the block, asked of ch_owner */
    void (*ch_get)(void *ch_owner, int64_t i, int32_t *bits, float *eps, float *delta);
    void *ch_owner;
    const unsigned char *ch_bytes; /* reader: the stored triples */
    int32_t narrays;
    tsq__rec_array arrays[TSQ__REC_MAX_ARRAYS];
} tsq__layer_rec;

typedef struct tsq__model_head {
    int32_t in_ndim;          /* 1..3 */
    int64_t in_shape[3];      /* unused dimensions 0 */
    int32_t nrecords;
} tsq__model_head;

/* The array of that name in rec, or NULL. */
const tsq__rec_array *tsq__rec_find_array(const tsq__layer_rec *rec, const char *name);

/* ---- writing ---- */

/* Fills *rec for record `index` (rec is zeroed first; the pointers in it
 * must stay valid until the writer is done with the record). Called once
 * per record and tsq__model_write call. A failure's message is the
 * callback's to record. */
typedef tsq_status (*tsq__rec_source)(void *user, int32_t index, tsq__layer_rec *rec);

/* Writes (w->buf NULL: counts) the whole model. Fails only when a record
 * callback fails. */
tsq_status tsq__model_write(tsq__le_writer *w, const tsq__model_head *head,
                            tsq__rec_source source, void *user);

/* The bytes `count` codes of `bits` bits take when packed. */
uint64_t tsq__packed_bytes(int64_t count, int32_t bits);

/* ---- reading ---- */

/* Where the reader is, for the messages of the sinks. */
typedef struct tsq__model_cursor {
    tsq_context *ctx;
    const char *where;   /* "net_load" */
    int32_t section;
    int32_t record;      /* -1 outside a LAYR section */
} tsq__model_cursor;

/* Records TSQ_ERR_FORMAT on the context as
 * "<where>: section S (layer L): <what>" and returns it. */
tsq_status tsq__model_fail(const tsq__model_cursor *cur, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Called once after the NETW section, then once per LAYR record in order;
 * a failure stops the reading and is returned as is. */
typedef struct tsq__model_sink {
    tsq_status (*head)(void *user, const tsq__model_cursor *cur, const tsq__model_head *head);
    tsq_status (*record)(void *user, const tsq__model_cursor *cur, const tsq__layer_rec *rec);
    void *user;
} tsq__model_sink;

/* Reads a whole model of `size` bytes: the header, every section's frame
 * and CRC, each record's structure (counts, ranks, names, dimensions, that
 * every array's bytes are present and match its element count), and that
 * nothing follows the last section. Messages go on cur.ctx. */
tsq_status tsq__model_read(tsq_context *ctx, const char *where, const void *buf, uint64_t size,
                           const tsq__model_sink *sink);

/* Channel i's (bits, eps, delta) of a record read from a file. */
void tsq__rec_channel(const tsq__layer_rec *rec, int64_t i, int32_t *bits, float *eps,
                      float *delta);

/* Unpacks `count` codes of `bits` bits (value v stored as v + m, m =
 * 2^(bits-1) - 1, least significant bits first) from src, which holds
 * tsq__packed_bytes(count, bits) bytes. Returns 0 if a stored value lies
 * outside -m..m. */
int tsq__unpack_codes(const unsigned char *src, int8_t *codes, int64_t count, int32_t bits);

/* Reads a stored raw f32 array into dst (numel floats). Returns the index
 * of the first non-finite value, or -1 when all are finite. */
int64_t tsq__rec_read_f32(const tsq__rec_array *a, float *dst);

/* ---- files ---- */

/* Reads the whole file into a buffer from the context's allocator
 * (*buf, *size; free with tsq__free). Messages on ctx. */
tsq_status tsq__file_read(tsq_context *ctx, const char *where, const char *path, void **buf,
                          uint64_t *size);
/* Writes size bytes to path.tmp, then renames it to path, so a crash never
 * leaves a half-written file under the final name. Messages on obj. */
tsq_status tsq__file_write(const tsq__object *obj, const char *where, const char *path,
                           const void *buf, uint64_t size);

#endif /* TSQ_IO_MODEL_RECORDS_H */
