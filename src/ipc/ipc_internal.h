/*
 * Shared by the IPC reader and writer: the type tree both sides work on, the FlatBuffers slot
 * numbers of the Arrow format files, and the body compression codecs.
 */
#ifndef AQ_IPC_INTERNAL_H
#define AQ_IPC_INTERNAL_H

#include "aq_common.h"
#include "arrow_owned.h"
#include "flatbuf.h"

/* Type union tags of Schema.fbs (union Type; 0 is NONE). */
enum {
    AQ__FBT_NULL = 1,
    AQ__FBT_INT = 2,
    AQ__FBT_FLOAT = 3,
    AQ__FBT_BINARY = 4,
    AQ__FBT_UTF8 = 5,
    AQ__FBT_LIST = 12,
    AQ__FBT_STRUCT = 13,
    AQ__FBT_FIXED_SIZE_LIST = 16,
    AQ__FBT_LARGE_BINARY = 19,
    AQ__FBT_LARGE_UTF8 = 20,
    AQ__FBT_LARGE_LIST = 21,
    AQ__FBT_BINARY_VIEW = 23,
    AQ__FBT_UTF8_VIEW = 24,
    AQ__FBT_MAX = 26
};

/* MessageHeader union tags of Message.fbs. */
enum { AQ__MSG_SCHEMA = 1, AQ__MSG_DICTIONARY = 2, AQ__MSG_RECORD_BATCH = 3 };

/* The kinds of columns the library reads and writes. */
typedef enum aq__ipc_kind {
    AQ__K_NULL,
    AQ__K_INT,   /* bit_width 8/16/32/64, is_signed */
    AQ__K_FLOAT, /* bit_width 16/32/64 */
    AQ__K_BINARY,
    AQ__K_UTF8,
    AQ__K_LARGE_BINARY,
    AQ__K_LARGE_UTF8,
    AQ__K_BINARY_VIEW,
    AQ__K_UTF8_VIEW,
    AQ__K_LIST,
    AQ__K_LARGE_LIST,
    AQ__K_FIXED_SIZE_LIST,
    AQ__K_STRUCT
} aq__ipc_kind;

typedef struct aq__ipc_field {
    char *name;
    aq__ipc_kind kind;
    int bit_width; /* ints and floats */
    bool is_signed;
    int32_t list_size; /* fixed_size_list */
    bool nullable;
    char *metadata; /* C Data Interface encoding, or NULL */
    size_t metadata_len;
    size_t n_children;
    struct aq__ipc_field *children;
} aq__ipc_field;

/* A schema: the root is a struct whose children are the columns. */
typedef struct aq__ipc_schema {
    aq__ipc_field root;
    size_t total_fields; /* every node of the tree below the root */
} aq__ipc_schema;

void aq__ipc_field_reset(aq__ipc_field *f);

/* The C Data Interface format string of a field ("i", "+l", "+w:4", ...). */
void aq__ipc_field_format(const aq__ipc_field *f, char *buf, size_t cap);
/* A readable type name for messages ("int32", "list", ...). */
const char *aq__ipc_type_name(const aq__ipc_field *f);

/* Reads a Schema table. `where` names the input for messages. */
aq_status aq__ipc_schema_read(const aq__fbt *schema, aq__ipc_schema *out, const char *where,
                              aq_error *err);
/* Builds an owned ArrowSchema from the tree. */
aq_status aq__ipc_schema_export(const aq__ipc_schema *s, struct ArrowSchema *out, aq_error *err);
/* Reads an ArrowSchema (the "+s" of a batch) into a tree; refuses unsupported types naming
 * the field. */
aq_status aq__ipc_schema_import(const struct ArrowSchema *schema, aq__ipc_schema *out,
                                aq_error *err);
/* Writes a Schema table; returns its position. */
size_t aq__ipc_schema_write(aq__fbb *b, const aq__ipc_schema *s);

/* ---- body compression ---- */

/* Decompresses src into dst, which must receive exactly dst_size bytes. fd >= 0: src is the
 * mapping of that file's bytes at file_off, which zstd reads with pread in small steps
 * instead, so that the compressed bytes never become resident pages of the mapping. */
aq_status aq__ipc_decompress(aq_ipc_compression codec, const uint8_t *src, size_t src_size, int fd,
                             size_t file_off, uint8_t *dst, size_t dst_size, aq_error *err);
/* True when p points into the file mapping of a reader from aq_ipc_reader_open; false for
 * memory the reader allocated (decompressed or realigned buffers) and for a reader of memory. */
bool aq__ipc_reader_in_map(const aq_ipc_reader *r, const void *p);
/* The aq__mapped_add slot of a reader's file mapping (-1: none, or not mapped). */
int aq__ipc_reader_guard(const aq_ipc_reader *r);
/* The file descriptor of a reader's file mapping, open as long as any memory of the mapping is
 * held (not only as long as the reader), and in *size the mapped size (the file's size when
 * opened); -1 and 0 for a reader of memory. For fstat only: the caller must not close it. */
int aq__ipc_reader_map_fd(const aq_ipc_reader *r, size_t *size);
/* Makes a reader's file mapping writable copy-on-write (its writes never reach the file), for
 * callers that hand its memory out in place; nothing for a reader of memory. */
aq_status aq__ipc_reader_copy_on_write(aq_ipc_reader *r, aq_error *err);
/* The most bytes one can claim to decompress from src_size compressed bytes; a larger claim is
 * a corrupt file (refused before allocating). */
size_t aq__ipc_decompress_limit(aq_ipc_compression codec, size_t src_size);
/* Worst-case compressed size. */
size_t aq__ipc_compress_bound(aq_ipc_compression codec, size_t size);
/* Compresses; *out_size receives the compressed size. */
aq_status aq__ipc_compress(aq_ipc_compression codec, int level, const uint8_t *src, size_t src_size,
                           uint8_t *dst, size_t dst_cap, size_t *out_size, aq_error *err);
const char *aq__ipc_codec_name(aq_ipc_compression codec);

/* Drop-behind for a large file written once (the model pipeline's output): after each record
 * batch, writeback of its bytes starts and the batch before it is waited for and dropped from
 * the page cache (ipc_writer.c, w_drop_behind). Off by default. */
void aq__ipc_writer_drop_behind(aq_ipc_writer *w, bool on);

#endif /* AQ_IPC_INTERNAL_H */
