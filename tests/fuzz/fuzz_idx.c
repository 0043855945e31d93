/* libFuzzer target: the demo's IDX parser must reject or accept any bytes
 * without crashing, leaking or reading out of bounds. */
#include <stddef.h>
#include <stdint.h>

#include "../../examples/fmnist/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idx_array a;
    char err[256];
    int rank;
    for (rank = 1; rank <= 3; rank++) {
        if (idx_parse(data, size, rank, &a, err, sizeof err) == 0) {
            /* touch the last byte: the claimed size must be real */
            volatile uint8_t last = a.data[a.count * a.item_size - 1];
            (void)last;
            idx_free(&a);
        }
    }
    return 0;
}
