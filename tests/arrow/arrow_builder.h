/*
 * A small, test-only builder of Arrow C Data Interface structures, written independently of
 * src/arrow so that the library is not tested against its own export code. Every node is a
 * heap-allocated (schema, array) pair whose release callbacks free the node's buffers and
 * children; tb_free releases a top-level pair (if still unreleased) and frees the two structs.
 *
 * Tests corrupt the structures freely (n_buffers, lengths, release) to check validation; the
 * release callbacks only rely on what tb_ stored in private_data, so they still free
 * everything afterwards.
 */
#ifndef AQ_ARROW_BUILDER_H
#define AQ_ARROW_BUILDER_H

#include "arrowquant.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct tb_node {
    struct ArrowSchema *s;
    struct ArrowArray *a;
} tb_node;

/* Fixed-width values: format "f", "e", "g", "l", "i", "C", "S", ...; valid may be NULL (no
 * nulls) or one byte per value (0 = null). Values are copied. */
tb_node tb_prim(const char *format, const char *name, const void *values, size_t elem_size,
                int64_t n, const uint8_t *valid);

/* Strings: format "u", "U" (or "z", "Z" for binary); NULL entries are nulls. lens may be NULL
 * (strlen) for binary with embedded NULs. */
tb_node tb_strings(const char *format, const char *name, const char *const *values,
                   const size_t *lens, int64_t n);

/* string_view ("vu") or binary_view ("vz"), long values spread over two data buffers. */
tb_node tb_views(const char *format, const char *name, const char *const *values,
                 const size_t *lens, int64_t n);

/* A list ("+l", "+L") over child with n rows of the given lengths (row i has lengths[i]
 * values; lengths of null rows still advance the offsets when nonzero), or a fixed-size list
 * ("+w:N", lengths ignored). valid may be NULL. Takes ownership of child. */
tb_node tb_list(const char *format, const char *name, tb_node child, const int64_t *lengths,
                int64_t n, const uint8_t *valid);

/* The null type, n rows. */
tb_node tb_null(const char *name, int64_t n);

/* A struct of n_children columns (ownership taken) and the given length. */
tb_node tb_struct(const char *name, tb_node *children, int64_t n_children, int64_t length);

/* Sets a schema node's metadata from n key/value pairs. */
void tb_set_metadata(tb_node node, const char *const *keys, const char *const *values, int n);

/* Releases (if still unreleased) and frees a top-level pair. */
void tb_free(tb_node node);

/* Float rows of a record batch: names, weights (float32) and optional shapes. */
typedef struct tb_row {
    const char *name; /* NULL: null name */
    const float *w;   /* NULL with n == 0 and null_weights: null weights */
    int64_t n;
    const int64_t *shape; /* NULL: null shape */
    int64_t ndim;
    bool null_weights;
} tb_row;

/* {layer_name: utf8, weights: list<float32>, shape: list<int64>} from rows. */
tb_node tb_batch(const tb_row *rows, int64_t n);

/* An ArrowArrayStream over batches (ownership taken) sharing schema (ownership taken). When
 * fail_at >= 0, get_next number fail_at returns EIO with get_last_error "fail_message". */
void tb_stream(struct ArrowArrayStream *out, tb_node schema_source, tb_node *batches, int n,
               int fail_at, const char *fail_message);

#endif /* AQ_ARROW_BUILDER_H */
