/* libFuzzer target: the safetensors header parser (src/io/st_parse.c) over arbitrary bytes
 * taken as a whole file. Every input must give AQ_OK or a clean error, without a crash, a leak
 * or undefined behaviour; on success every entry must lie inside the data region. */
#include "io_internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aq__st_header h;
    aq_error err;
    if (aq__st_parse(data, size, "fuzz", &h, &err) == AQ_OK) {
        size_t covered = 0;
        for (size_t i = 0; i < h.n; i++) {
            if (h.entries[i].begin != covered || h.entries[i].end > h.data_size) {
                abort(); /* the parser let through offsets that do not tile the data */
            }
            covered = h.entries[i].end;
        }
        if (covered != h.data_size || h.data_start + h.data_size != size) {
            abort();
        }
        aq__st_header_reset(&h);
    } else if (err.message[0] == '\0') {
        abort(); /* every error has a message */
    }
    return 0;
}
