/* CRC-32 as zlib computes it: tsq__crc32(0, data, n) is the checksum of
 * data; a running checksum continues with tsq__crc32(crc, more, m).
 * Used by the quantizer's serialized form and the model file. */
#ifndef TSQ_IO_CRC32_H
#define TSQ_IO_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t tsq__crc32(uint32_t crc, const void *data, size_t n);

#endif
