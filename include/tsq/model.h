/*
 * libtsq - model.h: saving and loading networks as .tsq model files.
 *
 * The format (docs/format.md) is little-endian, starts with the magic
 * "TSQM" and a format version that is independent of the library version,
 * and is made of sections that each carry a CRC-32. Low-bit weight codes are
 * stored packed (2 bits per ternary weight, k bits per k-bit weight), with
 * their per-channel scale and offset; activation quantizers keep their bits,
 * eps and delta per channel; full-precision layers keep their float
 * parameters. A loaded network gives bit-identical outputs.
 *
 * The loader trusts no size in the file: every count is checked against the
 * bytes actually present before anything is allocated, so a truncated,
 * corrupted or hostile file is refused with TSQ_ERR_FORMAT (or
 * TSQ_ERR_VERSION) and a message naming the section and field.
 *
 * Threads: saving reads the net (one thread at a time on it); loading only
 * uses the context.
 */
#ifndef TSQ_MODEL_H
#define TSQ_MODEL_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The model-file format version written by this library. Files of a newer
 * version are refused with TSQ_ERR_VERSION. */
#define TSQ_MODEL_FORMAT_VERSION 1

/*! tsq_net_save() :
 *  Serializes the net into buf (capacity bytes). With buf NULL, only
 *  computes the size. *size receives the number of bytes needed (written
 *  on success). The optimiser state is not saved: a model file is for
 *  inference and for resuming from the weights.
 *  @return TSQ_OK, TSQ_ERR_NULL (net; size with a message on the net),
 *  TSQ_ERR_TOO_SMALL (capacity
 *  < *size; nothing useful is written), TSQ_ERR_UNSUPPORTED (a layer kind
 *  the format cannot hold), TSQ_ERR_INVALID (a low-bit code outside its
 *  alphabet). Errors go on the net. */
TSQ_API tsq_status tsq_net_save(tsq_net *net, void *buf, uint64_t capacity, uint64_t *size);

/*! tsq_net_load() :
 *  Builds a new net from a serialized model of `size` bytes. The caller
 *  keeps ownership of buf. *out receives the net (destroy it with
 *  tsq_net_destroy), or NULL on failure.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_FORMAT (bad magic, a CRC
 *  mismatch, a truncated or inconsistent section), TSQ_ERR_VERSION (a newer
 *  format), TSQ_ERR_NO_MEMORY. Errors go on the context. */
TSQ_API tsq_status tsq_net_load(tsq_context *ctx, const void *buf, uint64_t size,
                                tsq_net **out);

/*! tsq_net_save_file() / tsq_net_load_file() :
 *  The same through a file path (written whole, then renamed into place,
 *  so a crash never leaves a half-written model under the final name).
 *  @return as above, plus TSQ_ERR_IO (open, read, write or rename failed;
 *  the message has the path and the system's reason). */
TSQ_API tsq_status tsq_net_save_file(tsq_net *net, const char *path);
TSQ_API tsq_status tsq_net_load_file(tsq_context *ctx, const char *path, tsq_net **out);

/*! tsq_net_weight_bytes() :
 *  The bytes the net's weights take in a model file: packed low-bit codes
 *  plus every float parameter and state (scales, offsets, batch-norm
 *  statistics, quantizer parameters). A full-precision net gives 4 bytes
 *  per parameter.
 *  @return TSQ_OK, TSQ_ERR_NULL (net; bytes with a message on the net). */
TSQ_API tsq_status tsq_net_weight_bytes(tsq_net *net, uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_MODEL_H */
