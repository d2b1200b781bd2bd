/*
 * A minimal FlatBuffers reader and writer, enough for the Arrow IPC metadata (Schema.fbs,
 * Message.fbs, File.fbs). Written from the FlatBuffers binary format description; no
 * FlatBuffers runtime is used.
 *
 * Reader: every access is checked against the buffer (table, vtable, field, reference,
 * vector and string), so a hostile buffer yields AQ__FB_BAD instead of an out-of-bounds read.
 * Unknown or absent fields read as absent, so newer writers stay readable.
 *
 * Writer: objects are laid out front to back. References in FlatBuffers are unsigned and
 * point forward, so a table is written first with its reference slots zeroed, and each
 * referenced object is appended later and patched in (aq__fbb_patch).
 */
#ifndef AQ_IPC_FLATBUF_H
#define AQ_IPC_FLATBUF_H

#include "aq_common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Result of a reader access. */
enum { AQ__FB_BAD = -1, AQ__FB_ABSENT = 0, AQ__FB_OK = 1 };

/* A table inside a buffer. */
typedef struct aq__fbt {
    const uint8_t *buf;
    size_t size;     /* bytes in buf */
    size_t pos;      /* the table's position */
    size_t vtable;   /* its vtable's position */
    size_t vt_size;  /* vtable bytes */
    size_t tbl_size; /* the table's inline bytes */
} aq__fbt;

/* A vector (or string) inside a buffer: count elements starting at data. */
typedef struct aq__fbv {
    const uint8_t *buf;
    size_t size;
    size_t data; /* position of element 0 */
    size_t count;
} aq__fbv;

/* The root table of a buffer (a uoffset at position 0). */
int aq__fb_root(const uint8_t *buf, size_t size, aq__fbt *out);

/* Scalar fields of width 1, 2, 4 or 8 bytes (little endian, sign-extended by the signed
 * variants); `def` when absent. */
int aq__fbt_u8(const aq__fbt *t, unsigned slot, uint8_t def, uint8_t *out);
int aq__fbt_i16(const aq__fbt *t, unsigned slot, int16_t def, int16_t *out);
int aq__fbt_i32(const aq__fbt *t, unsigned slot, int32_t def, int32_t *out);
int aq__fbt_i64(const aq__fbt *t, unsigned slot, int64_t def, int64_t *out);

/* A sub-table, a vector of elem_size-byte elements, or a string (bytes, not NUL-terminated). */
int aq__fbt_table(const aq__fbt *t, unsigned slot, aq__fbt *out);
int aq__fbt_vector(const aq__fbt *t, unsigned slot, size_t elem_size, aq__fbv *out);
int aq__fbt_string(const aq__fbt *t, unsigned slot, const char **str, size_t *len);

/* Element i of a vector of tables (elem_size 4). */
int aq__fbv_table(const aq__fbv *v, size_t i, aq__fbt *out);
/* Element i of a vector of strings. */
int aq__fbv_string(const aq__fbv *v, size_t i, const char **str, size_t *len);
/* A 64-bit little-endian value at byte offset `at` of element i of a vector of structs. */
int64_t aq__fbv_i64(const aq__fbv *v, size_t i, size_t elem_size, size_t at);
int32_t aq__fbv_i32(const aq__fbv *v, size_t i, size_t elem_size, size_t at);

/* ---- writer ---- */

typedef struct aq__fbb {
    uint8_t *buf;
    size_t len;
    size_t cap;
    bool oom; /* sticky: an allocation failed; the buffer is unusable */
} aq__fbb;

/* One field of a table to write: a scalar of `size` bytes (1, 2, 4 or 8) holding `value`, or a
 * reference (size 0) whose slot position is returned for aq__fbb_patch. */
typedef struct aq__fbf {
    unsigned slot;
    unsigned size;
    uint64_t value;
} aq__fbf;

void aq__fbb_init(aq__fbb *b);
void aq__fbb_reset(aq__fbb *b);
/* Starts a buffer: the root reference, to patch with the root table. Returns its position. */
size_t aq__fbb_start(aq__fbb *b);
/* Writes a table (and its vtable just before it). refs receives the positions of the reference
 * fields, in the order they appear in fields. Returns the table's position. */
size_t aq__fbb_table(aq__fbb *b, const aq__fbf *fields, size_t n, size_t *refs);
/* Makes the reference at ref_pos point to target (which must lie after it). */
void aq__fbb_patch(aq__fbb *b, size_t ref_pos, size_t target);
/* A string; returns its position. */
size_t aq__fbb_string(aq__fbb *b, const char *s, size_t len);
/* A vector of count elements of elem_size bytes, its data aligned to align; data may be NULL
 * (zero-filled, e.g. reference slots to patch). Returns its position; *first receives the
 * position of element 0. */
size_t aq__fbb_vector(aq__fbb *b, size_t count, size_t elem_size, size_t align, const void *data,
                      size_t *first);
/* Pads with zeros up to a multiple of align. */
void aq__fbb_align(aq__fbb *b, size_t align);

#endif /* AQ_IPC_FLATBUF_H */
