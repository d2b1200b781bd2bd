/* Owned Arrow C structures: nodes that free their own strings, buffers and children. */
#include "arrow_owned.h"

#include <stdatomic.h>
#include <stdlib.h>

struct aq__keepalive {
    atomic_size_t refs;
    void (*destroy)(void *data);
    void *data;
};

aq__keepalive *aq__keepalive_create(void (*destroy)(void *data), void *data)
{
    aq__keepalive *k = malloc(sizeof *k);
    if (k == NULL) {
        return NULL;
    }
    atomic_init(&k->refs, 1);
    k->destroy = destroy;
    k->data = data;
    return k;
}

void aq__keepalive_retain(aq__keepalive *k)
{
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
}

void aq__keepalive_release(aq__keepalive *k)
{
    if (k == NULL) {
        return;
    }
    if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        if (k->destroy != NULL) {
            k->destroy(k->data);
        }
        free(k);
    }
}

void *aq__aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) {
        return NULL;
    }
    if (rounded == 0) {
        rounded = 64;
    }
    unsigned char *p = aligned_alloc(64, rounded);
    if (p != NULL && rounded > bytes) {
        memset(p + bytes, 0, rounded - bytes);
    }
    return p;
}

/* ---- schema nodes ---- */

typedef struct owned_schema {
    char *format;
    char *name;
    char *metadata;
    struct ArrowSchema *child_nodes; /* n_children nodes, pointed to by children[] */
    struct ArrowSchema **child_ptrs;
} owned_schema;

static void owned_schema_release(struct ArrowSchema *schema)
{
    if (schema == NULL || schema->release == NULL) {
        return;
    }
    owned_schema *p = schema->private_data;
    for (int64_t i = 0; i < schema->n_children; i++) {
        struct ArrowSchema *c = schema->children[i];
        if (c != NULL && c->release != NULL) {
            c->release(c);
        }
    }
    if (schema->dictionary != NULL && schema->dictionary->release != NULL) {
        schema->dictionary->release(schema->dictionary);
    }
    if (p != NULL) {
        free(p->format);
        free(p->name);
        free(p->metadata);
        free(p->child_nodes);
        free(p->child_ptrs);
        free(p);
    }
    schema->release = NULL;
}

aq_status aq__schema_alloc(struct ArrowSchema *out, const char *format, const char *name,
                           int64_t flags, int64_t n_children, aq_error *err)
{
    memset(out, 0, sizeof *out);
    owned_schema *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building an Arrow schema");
    }
    out->private_data = p;
    out->release = owned_schema_release;
    out->flags = flags;
    p->format = aq__strdup(format);
    p->name = aq__strdup(name);
    if (n_children > 0) {
        p->child_nodes = calloc((size_t)n_children, sizeof *p->child_nodes);
        p->child_ptrs = calloc((size_t)n_children, sizeof *p->child_ptrs);
    }
    if (p->format == NULL || (name != NULL && p->name == NULL) ||
        (n_children > 0 && (p->child_nodes == NULL || p->child_ptrs == NULL))) {
        owned_schema_release(out);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building an Arrow schema");
    }
    for (int64_t i = 0; i < n_children; i++) {
        p->child_ptrs[i] = &p->child_nodes[i];
    }
    out->format = p->format;
    out->name = p->name;
    out->n_children = n_children;
    out->children = p->child_ptrs;
    return AQ_OK;
}

static void owned_put_i32(char *dst, int32_t v)
{
    memcpy(dst, &v, sizeof v); /* the C Data Interface uses native byte order */
}

aq_status aq__schema_set_metadata(struct ArrowSchema *schema, const char *const *keys,
                                  const char *const *values, size_t n, aq_error *err)
{
    owned_schema *p = schema->private_data;
    size_t total = 4;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]), vl = strlen(values[i]);
        if (kl > INT32_MAX || vl > INT32_MAX || !aq__add_size(total, 8 + kl + vl, &total)) {
            return aq__error_set(err, AQ_OVERFLOW, "schema metadata too large");
        }
    }
    if (n > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW, "schema metadata too large");
    }
    char *buf = malloc(total);
    if (buf == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building schema metadata");
    }
    char *w = buf;
    owned_put_i32(w, (int32_t)n);
    w += 4;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]), vl = strlen(values[i]);
        owned_put_i32(w, (int32_t)kl);
        memcpy(w + 4, keys[i], kl);
        w += 4 + kl;
        owned_put_i32(w, (int32_t)vl);
        memcpy(w + 4, values[i], vl);
        w += 4 + vl;
    }
    free(p->metadata);
    p->metadata = buf;
    schema->metadata = buf;
    return AQ_OK;
}

aq_status aq__schema_set_metadata_raw(struct ArrowSchema *schema, const char *encoded, size_t size,
                                      aq_error *err)
{
    owned_schema *p = schema->private_data;
    char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building schema metadata");
    }
    memcpy(buf, encoded, size);
    free(p->metadata);
    p->metadata = buf;
    schema->metadata = buf;
    return AQ_OK;
}

/* ---- array nodes ---- */

typedef struct owned_array {
    const void **buffers;  /* n_buffers pointers, handed out as array->buffers */
    void **owned;          /* n_buffers: what to free(), or NULL */
    aq__keepalive **keeps; /* n_buffers: what to release, or NULL */
    struct ArrowArray *child_nodes;
    struct ArrowArray **child_ptrs;
} owned_array;

static void owned_array_release(struct ArrowArray *array)
{
    if (array == NULL || array->release == NULL) {
        return;
    }
    owned_array *p = array->private_data;
    for (int64_t i = 0; i < array->n_children; i++) {
        struct ArrowArray *c = array->children[i];
        if (c != NULL && c->release != NULL) {
            c->release(c);
        }
    }
    if (array->dictionary != NULL && array->dictionary->release != NULL) {
        array->dictionary->release(array->dictionary);
    }
    if (p != NULL) {
        for (int64_t i = 0; i < array->n_buffers; i++) {
            if (p->owned != NULL) {
                free(p->owned[i]);
            }
            if (p->keeps != NULL) {
                aq__keepalive_release(p->keeps[i]);
            }
        }
        free(p->buffers);
        free(p->owned);
        free(p->keeps);
        free(p->child_nodes);
        free(p->child_ptrs);
        free(p);
    }
    array->release = NULL;
}

aq_status aq__array_alloc(struct ArrowArray *out, int64_t length, int64_t n_buffers,
                          int64_t n_children, aq_error *err)
{
    memset(out, 0, sizeof *out);
    owned_array *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building an Arrow array");
    }
    out->private_data = p;
    out->release = owned_array_release;
    size_t nb = n_buffers > 0 ? (size_t)n_buffers : 1;
    p->buffers = calloc(nb, sizeof *p->buffers);
    p->owned = calloc(nb, sizeof *p->owned);
    p->keeps = calloc(nb, sizeof *p->keeps);
    if (n_children > 0) {
        p->child_nodes = calloc((size_t)n_children, sizeof *p->child_nodes);
        p->child_ptrs = calloc((size_t)n_children, sizeof *p->child_ptrs);
    }
    if (p->buffers == NULL || p->owned == NULL || p->keeps == NULL ||
        (n_children > 0 && (p->child_nodes == NULL || p->child_ptrs == NULL))) {
        owned_array_release(out);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building an Arrow array");
    }
    for (int64_t i = 0; i < n_children; i++) {
        p->child_ptrs[i] = &p->child_nodes[i];
    }
    out->length = length;
    out->n_buffers = n_buffers;
    out->n_children = n_children;
    out->buffers = p->buffers;
    out->children = p->child_ptrs;
    return AQ_OK;
}

void *aq__array_buffer_alloc(struct ArrowArray *array, int64_t i, size_t bytes)
{
    void *b = aq__aligned_alloc(bytes);
    if (b != NULL) {
        aq__array_buffer_adopt(array, i, b);
    }
    return b;
}

void aq__array_buffer_adopt(struct ArrowArray *array, int64_t i, void *buffer)
{
    owned_array *p = array->private_data;
    free(p->owned[i]);
    p->owned[i] = buffer;
    p->buffers[i] = buffer;
}

void aq__array_buffer_borrow(struct ArrowArray *array, int64_t i, const void *data,
                             aq__keepalive *keep)
{
    owned_array *p = array->private_data;
    if (keep != NULL) {
        aq__keepalive_retain(keep);
    }
    aq__keepalive_release(p->keeps[i]);
    p->keeps[i] = keep;
    p->buffers[i] = data;
}

void aq__schema_move(struct ArrowSchema *src, struct ArrowSchema *dst)
{
    memcpy(dst, src, sizeof *dst);
    src->release = NULL;
}

void aq__array_move(struct ArrowArray *src, struct ArrowArray *dst)
{
    memcpy(dst, src, sizeof *dst);
    src->release = NULL;
}

void aq__schema_release_if(struct ArrowSchema *schema)
{
    if (schema != NULL && schema->release != NULL) {
        schema->release(schema);
    }
}

void aq__array_release_if(struct ArrowArray *array)
{
    if (array != NULL && array->release != NULL) {
        array->release(array);
    }
}
