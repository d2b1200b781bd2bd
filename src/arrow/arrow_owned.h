/*
 * Building Arrow C structures that the library hands out: every node owns its strings, its
 * children and its buffers, and frees them in its release callback, as the C Data Interface
 * requires. Shared by the result export (src/arrow) and the IPC reader (src/ipc).
 *
 * A node is built in place: aq__schema_alloc / aq__array_alloc set release, so a half-built
 * tree can always be released (children whose release is still NULL are skipped).
 */
#ifndef AQ_ARROW_OWNED_H
#define AQ_ARROW_OWNED_H

#include "aq_common.h"

/* A reference-counted owner of memory that arrays borrow without copying (an IPC file mapping,
 * a decompressed body). destroy(data) runs when the last reference goes. Thread-safe. */
typedef struct aq__keepalive aq__keepalive;

aq__keepalive *aq__keepalive_create(void (*destroy)(void *data), void *data);
void aq__keepalive_retain(aq__keepalive *k);
/* Accepts NULL. */
void aq__keepalive_release(aq__keepalive *k);

/* Initialises *out as a schema node with copies of format and name (name may be NULL) and
 * n_children zeroed child nodes (out->children[i]->release == NULL until built). */
aq_status aq__schema_alloc(struct ArrowSchema *out, const char *format, const char *name,
                           int64_t flags, int64_t n_children, aq_error *err);

/* Sets the node's metadata from n key/value pairs, encoded as the C Data Interface says
 * (int32 count, then int32 length + bytes for each key and value). Replaces earlier metadata. */
aq_status aq__schema_set_metadata(struct ArrowSchema *schema, const char *const *keys,
                                  const char *const *values, size_t n, aq_error *err);

/* Sets the node's metadata to a copy of `size` bytes already in the C Data Interface encoding
 * (keys and values may hold any bytes, NUL included). Replaces earlier metadata. */
aq_status aq__schema_set_metadata_raw(struct ArrowSchema *schema, const char *encoded, size_t size,
                                      aq_error *err);

/* Initialises *out as an array node of the given length with n_buffers NULL buffers and
 * n_children zeroed child nodes. null_count and offset start at 0. */
aq_status aq__array_alloc(struct ArrowArray *out, int64_t length, int64_t n_buffers,
                          int64_t n_children, aq_error *err);

/* Allocates `bytes` (64-byte aligned, rounded up to a multiple of 64 with zeroed padding) as
 * buffer i of a node built by aq__array_alloc, owned by it. Returns NULL when out of memory. */
void *aq__array_buffer_alloc(struct ArrowArray *array, int64_t i, size_t bytes);

/* Hands an already allocated buffer (from aq__aligned_alloc) to the node as buffer i. */
void aq__array_buffer_adopt(struct ArrowArray *array, int64_t i, void *buffer);

/* Makes buffer i point into memory owned by keep (retained until the node is released). */
void aq__array_buffer_borrow(struct ArrowArray *array, int64_t i, const void *data,
                             aq__keepalive *keep);

/* 64-byte aligned allocation with zeroed padding up to a multiple of 64; free with free(). */
void *aq__aligned_alloc(size_t bytes);

/* Moves a structure: *dst takes it over and src->release becomes NULL. */
void aq__schema_move(struct ArrowSchema *src, struct ArrowSchema *dst);
void aq__array_move(struct ArrowArray *src, struct ArrowArray *dst);

/* Releases if not released yet (release != NULL). Accept NULL. */
void aq__schema_release_if(struct ArrowSchema *schema);
void aq__array_release_if(struct ArrowArray *array);

#endif /* AQ_ARROW_OWNED_H */
