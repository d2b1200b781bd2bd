/* libFuzzer target: the GGUF reader (src/io/gguf_read.c) over arbitrary bytes taken as a whole
 * file, then every tensor decoded. Every input must give AQ_OK or a clean error naming the
 * byte offset, without a crash, a leak or undefined behaviour; on success every tensor must
 * lie inside the file, aligned, and decode. */
#include "gguf_internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aq_gguf *g = NULL;
    aq_error err;
    if (aq_gguf_open_memory(data, size, "fuzz", &g, &err) != AQ_OK) {
        if (err.message[0] == '\0') {
            abort(); /* every error has a message */
        }
        return 0;
    }
    aq_ctx *ctx = NULL;
    if (aq_ctx_create(&ctx, &err) != AQ_OK) {
        abort();
    }
    for (size_t i = 0; i < aq_gguf_tensor_count(g); i++) {
        const aq_gguf_tensor *t = aq_gguf_tensor_at(g, i);
        if (t->offset % aq_gguf_alignment(g) != 0 || t->offset > size ||
            t->nbytes > size - t->offset || t->data != g->map + t->offset) {
            abort(); /* the reader let through a tensor outside the file */
        }
        if (t->elements > (1u << 20)) {
            continue; /* keep each run small; the bounds above were checked */
        }
        float *out = malloc((t->elements > 0 ? t->elements : 1) * sizeof *out);
        if (out != NULL) {
            if (aq_gguf_tensor_dequantize(ctx, g, i, out, t->elements, &err) != AQ_OK) {
                abort(); /* a validated tensor always decodes */
            }
            free(out);
        }
    }
    for (size_t i = 0; i < aq_gguf_metadata_count(g); i++) {
        const char *k, *ty, *v;
        if (aq_gguf_metadata_get(g, i, &k, &ty, &v, NULL) != AQ_OK || k == NULL || ty == NULL ||
            v == NULL) {
            abort();
        }
    }
    aq_ctx_free(ctx);
    aq_gguf_free(g);
    return 0;
}
