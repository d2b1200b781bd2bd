/* Internal interfaces of the GGUF reader and writer (src/io/gguf_*.c). */
#ifndef AQ_GGUF_INTERNAL_H
#define AQ_GGUF_INTERNAL_H

#include "aq_common.h"

typedef struct aq__gguf_meta {
    char *key;
    uint32_t type;    /* GGUF value type 0..12 */
    size_t value_off; /* of the value in the file */
    char *value;      /* rendered as text */
} aq__gguf_meta;

struct aq_gguf {
    char *label;        /* the path, for messages */
    const uint8_t *map; /* the file's bytes */
    size_t size;
    int mapped; /* 1: munmap map; 0: free it */
    int guard;  /* aq__mapped_add's slot + 1; 0: none */
    uint32_t version;
    size_t alignment;
    size_t data_start;
    aq_gguf_tensor *tensors;
    size_t n_tensors;
    aq__gguf_meta *meta;
    size_t n_meta;
};

/* Parses and validates the header of a whole GGUF file held in p[0..size): fills g's version,
 * alignment, metadata and tensors (data pointers into p). `label` starts every message. On
 * failure g holds what was read so far: release it with aq__gguf_reset. Used by the file
 * reader and the fuzzer. */
aq_status aq__gguf_parse(const uint8_t *p, size_t size, const char *label, aq_gguf *g,
                         aq_error *err);
void aq__gguf_reset(aq_gguf *g);

const char *aq__gguf_value_type_name(uint32_t t);
size_t aq__gguf_value_size(uint32_t t);

#endif /* AQ_GGUF_INTERNAL_H */
