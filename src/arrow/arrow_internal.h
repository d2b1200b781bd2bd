/*
 * Reading foreign Arrow structures (C Data Interface) defensively, and the pieces shared by the
 * batch, dequantize and stream code of src/arrow.
 *
 * Import never copies: a column view holds pointers into the producer's buffers, validated
 * once (buffer and child counts, lengths, offsets, offsets against the child length) so that
 * the accessors below can read any row in [0, rows) without further checks. The producer's
 * structures must stay alive while a view is used.
 */
#ifndef AQ_ARROW_INTERNAL_H
#define AQ_ARROW_INTERNAL_H

#include "arrow_owned.h"

/* Arrow has no bfloat16 type: a list child of uint16 ('S') whose field carries this extension
 * name (metadata key ARROW:extension:name) holds bfloat16 values. */
#define AQ__ARROW_BF16_EXTENSION "arrowquant.bfloat16"

/* Variable-length values (utf8 / binary and their large and view forms). */
typedef enum arw_var_kind {
    ARW_VAR_NULLTYPE = 0, /* the null type: every value is null */
    ARW_VAR_32,           /* utf8 'u' / binary 'z' */
    ARW_VAR_64,           /* large_utf8 'U' / large_binary 'Z' */
    ARW_VAR_VIEW          /* string_view 'vu' / binary_view 'vz' */
} arw_var_kind;

typedef struct arw_var {
    arw_var_kind kind;
    int64_t offset;          /* physical index of row 0 (the parents' offsets included) */
    const uint8_t *validity; /* NULL when the column has no nulls */
    const int32_t *off32;
    const int64_t *off64;
    const uint8_t *data;
    const uint8_t *views;        /* 16 bytes per value */
    const uint8_t *const *vbufs; /* view data buffers */
    int64_t n_vbufs;
} arw_var;

/* Lists of primitive values (list '+l', large_list '+L', fixed_size_list '+w:N'). */
typedef enum arw_list_kind {
    ARW_LIST_NULLTYPE = 0,
    ARW_LIST_32,
    ARW_LIST_64,
    ARW_LIST_FIXED
} arw_list_kind;

typedef struct arw_list {
    arw_list_kind kind;
    int64_t offset;
    const uint8_t *validity;
    const int32_t *off32;
    const int64_t *off64;
    int64_t fixed;     /* values per list for ARW_LIST_FIXED */
    char child_format; /* 'f', 'e', 'g', 'S' (bfloat16), 'l', 'i' */
    size_t elem_size;
    const uint8_t *values;         /* the child's values buffer (physical index 0) */
    int64_t child_offset;          /* the child's own offset */
    const uint8_t *child_validity; /* NULL when the child has no nulls */
} arw_list;

/* Fixed-width primitive values. */
typedef struct arw_prim {
    int nulltype;
    int64_t offset;
    const uint8_t *validity;
    const uint8_t *values;
    char format;
} arw_prim;

static inline bool arw_bit(const uint8_t *bitmap, int64_t i)
{
    return ((unsigned)bitmap[i >> 3] >> (unsigned)(i & 7)) & 1u;
}

/* Row i of a column view is not null. */
static inline bool arw_var_valid(const arw_var *v, int64_t i)
{
    return v->kind != ARW_VAR_NULLTYPE &&
           (v->validity == NULL || arw_bit(v->validity, v->offset + i));
}

static inline bool arw_list_valid(const arw_list *l, int64_t i)
{
    return l->kind != ARW_LIST_NULLTYPE &&
           (l->validity == NULL || arw_bit(l->validity, l->offset + i));
}

static inline bool arw_prim_valid(const arw_prim *p, int64_t i)
{
    return !p->nulltype && (p->validity == NULL || arw_bit(p->validity, p->offset + i));
}

/* Value of a valid row i of a var column. */
void aq__arrow_var_get(const arw_var *v, int64_t i, const uint8_t **data, size_t *len);

/* An arena of layer names taken from a var column: the bytes that rows [0, rows) take as
 * NUL-terminated strings (a null row one byte; AQ_OVERFLOW past SIZE_MAX), and the copy of a
 * valid row i at *cursor, which moves past it. The copy returns the string and writes its
 * length. */
aq_status aq__arrow_var_arena_size(const arw_var *v, int64_t rows, size_t *out, aq_error *err);
const char *aq__arrow_var_arena_copy(const arw_var *v, int64_t i, char **cursor, size_t *len);

/* Values [start, start + count) in the child of a valid list row i. start is a physical index
 * (the child's own offset included): the values are at values + start * elem_size, and their
 * validity bits at child_validity bit start. */
void aq__arrow_list_get(const arw_list *l, int64_t i, int64_t *start, int64_t *count);

/* Index (within the list row) of the first null child value of [start, start + count), or -1. */
int64_t aq__arrow_list_first_null(const arw_list *l, int64_t start, int64_t count);

/* What the list importer accepts as child formats, and how an error describes the column. */
typedef struct arw_list_spec {
    const char *child_formats; /* one char per accepted child format, e.g. "feg" */
    const char *expected;      /* e.g. "list<float32> (list, large_list or ...)" */
    bool allow_fixed;
} arw_list_spec;

/* Checks the top-level struct array of a record batch (format '+s', one buffer, matching
 * children, not released, no null rows) and returns its length and offset. */
aq_status aq__arrow_check_batch(const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t *rows, int64_t *offset, aq_error *err);

/* Index of the child named `name`, or -1. */
int64_t aq__arrow_find_column(const struct ArrowSchema *schema, const char *name);

/* Column importers. col is the column's name (for messages); parent_offset and rows are the
 * batch's offset and length. When rows is 0 any type is accepted (the view is then null-typed
 * and never read). */
aq_status aq__arrow_import_var(const char *col, bool binary, const char *expected,
                               const struct ArrowSchema *schema, const struct ArrowArray *array,
                               int64_t parent_offset, int64_t rows, arw_var *out, aq_error *err);
aq_status aq__arrow_import_list(const char *col, const arw_list_spec *spec,
                                const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t parent_offset, int64_t rows, arw_list *out, aq_error *err);
aq_status aq__arrow_import_prim(const char *col, char format, const char *expected,
                                const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t parent_offset, int64_t rows, arw_prim *out, aq_error *err);

/* Looks key up in C Data Interface schema metadata (NULL allowed); *value points into it (not
 * NUL-terminated) and *found says whether the key is there. Negative lengths in the metadata
 * are an AQ_INVALID_DATA error. */
aq_status aq__arrow_metadata_get(const char *metadata, const char *key, const char **value,
                                 size_t *len, bool *found, aq_error *err);

/* One entry of arrowquant.row_schemes. */
typedef struct aq__row_scheme {
    aq_scheme scheme;
    size_t group_size;
    bool raw; /* {"scheme": "raw", "group_size": 0}: a kept row (bit_width 16 or 32) */
} aq__row_scheme;

/* Parses the value of arrowquant.row_schemes (len bytes, not NUL-terminated): a JSON array of
 * {"scheme": NAME, "group_size": N}. On success *out (free()) holds *count entries. */
aq_status aq__arrow_parse_row_schemes(const char *json, size_t len, aq__row_scheme **out,
                                      size_t *count, aq_error *err);

/* ---- skipped rows, progress ---- */

/* Running counters of one call or one stream: rows and elements seen so far. */
typedef struct arw_run {
    size_t rows_done;
    size_t elements_done;
} arw_run;

aq_status aq__arrow_report_add(aq_report *report, size_t row, const char *layer_name,
                               aq_status code, const char *message);

/* A row could not be planned. Stop mode (opts NULL or continue_on_error 0): copies row_err
 * into err and returns its code. Continue mode: keeps the reason in *message (owned) and
 * *status, to be reported in row order by aq__arrow_row_skip, and returns AQ_OK. */
aq_status aq__arrow_row_error(const aq_batch_options *opts, char **message, aq_status *status,
                              const aq_error *row_err, aq_error *err);

/* A row is skipped: stop mode fails the call with code and message; continue mode records the
 * row in the report and returns AQ_OK. */
aq_status aq__arrow_row_skip(const aq_batch_options *opts, size_t row, const char *name,
                             aq_status code, const char *message, aq_error *err);

/* One more row done (elements weights): counts it and calls the progress callback, which may
 * stop the call (AQ_CANCELLED, with the message naming the rows done). */
aq_status aq__arrow_progress(const aq_batch_options *opts, arw_run *run, size_t elements,
                             aq_error *err);

/* Records a quantized row's quality choice in the report (NULL: nothing). */
aq_status aq__arrow_report_choice(aq_report *report, size_t row, const char *layer_name,
                                  const aq_qset_choice *choice, aq_error *err);

/* "[2, 3]" into buf. */
void aq__arrow_format_shape(const int64_t *shape, size_t ndim, char *buf, size_t size);

/* The result schema (DESIGN.md 2.2) for the batch's base parameters (aq__arrow_base_params);
 * large selects large_binary for quantized_data. */
aq_status aq__arrow_result_schema(const aq_ctx *ctx, const aq_batch_options *opts, bool large,
                                  struct ArrowSchema *out, aq_error *err);
/* The same for a scheme and group size, with the value of arrowquant.row_schemes (NULL: none)
 * for batches whose rows do not share them. */
aq_status aq__arrow_result_schema_rows(aq_scheme scheme, size_t group_size, bool large,
                                       const char *row_schemes, struct ArrowSchema *out,
                                       aq_error *err);

/* ---- layer rules and calibration (arrow_rules.c) ---- */

/* The scheme, bits and group size that rows follow by default, written as the result's
 * arrowquant.scheme / group_size: the rules' profile's scheme and bits with rules, else the
 * context's; the group size is the context's (a kquant group size is always
 * AQ_KQUANT_SUPER_BLOCK). */
void aq__arrow_base_params(const aq_ctx *ctx, const aq_batch_options *opts, aq_scheme *scheme,
                           unsigned *bits, size_t *group_size);
/* With opts->calib: AQ_INVALID_ARGUMENT unless aq_calib_finish was done. */
aq_status aq__arrow_check_calib(const aq_batch_options *opts, aq_error *err);
/* The importance of a row from opts->calib (malloc'd, one per element) in *out, or NULL when
 * there is no calib or no statistics for the row's layer. Errors name the tensor (a channel
 * count that does not fit its shape). */
aq_status aq__arrow_importance(const aq_batch_options *opts, const aq_tensor *t, size_t elements,
                               float **out, aq_error *err);
/* The dequantized schema: layer_name utf8, weights list<float32>, shape list<int64>. */
aq_status aq__arrow_restored_schema(struct ArrowSchema *out, aq_error *err);

/* The most packed bytes one binary column can address (int32 offsets). */
#define AQ__ARROW_BINARY_LIMIT ((size_t)INT32_MAX)

/* Quantizes a batch. When its packed data exceeds binary_limit bytes (AQ__ARROW_BINARY_LIMIT;
 * tests pass less), quantized_data is large_binary if allow_large, else the batch is refused:
 * a stream fixes its schema (binary) before any data is seen. out_schema may be NULL. */
aq_status aq__arrow_quantize_batch(aq_ctx *ctx, const struct ArrowSchema *schema,
                                   const struct ArrowArray *array, const aq_batch_options *opts,
                                   arw_run *run, size_t binary_limit, bool allow_large,
                                   struct ArrowArray *out_array, struct ArrowSchema *out_schema,
                                   aq_error *err);
aq_status aq__arrow_dequantize_batch(aq_ctx *ctx, const struct ArrowSchema *schema,
                                     const struct ArrowArray *array, const aq_batch_options *opts,
                                     arw_run *run, struct ArrowArray *out_array, aq_error *err);
/* Checks a result schema (columns present, metadata) without data, for streams. */
aq_status aq__arrow_check_result_schema(const struct ArrowSchema *schema, aq_error *err);
/* Checks that an input schema has the required columns, for streams. */
aq_status aq__arrow_check_input_schema(const struct ArrowSchema *schema, aq_error *err);

#endif /* AQ_ARROW_INTERNAL_H */
