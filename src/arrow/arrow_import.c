/*
 * Defensive import of foreign Arrow C Data Interface structures into column views.
 *
 * The C Data Interface carries no buffer sizes, so a producer's structure can only be checked
 * for what it states: buffer and child counts per format, non-negative lengths and offsets,
 * offsets that stay inside the child, view references that stay inside their buffer. Each
 * importer checks everything the accessors will rely on, once, so that reading a row later
 * needs no check and no branch on untrusted values.
 */
#include "arrow_internal.h"

#include <inttypes.h>
#include <stdlib.h>

/* Messages name the column and, for a list, its child: "Column 'weights' (child)". */
static aq_status imp_node(const char *col, const char *part, const struct ArrowSchema *s,
                          const struct ArrowArray *a, int64_t n_buffers, int64_t n_children,
                          int64_t need_length, aq_error *err)
{
    if (s == NULL || a == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Column '%s'%s: structure is NULL", col,
                             part);
    }
    if (s->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s'%s: the ArrowSchema was already released", col, part);
    }
    if (a->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s'%s: the ArrowArray was already released", col, part);
    }
    if (s->dictionary != NULL || a->dictionary != NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "Column '%s'%s: dictionary-encoded arrays are not supported", col,
                             part);
    }
    if (a->length < 0 || a->offset < 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: negative length or offset (length %" PRId64
                             ", offset %" PRId64 ")",
                             col, part, a->length, a->offset);
    }
    if (a->length > INT64_MAX - a->offset) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: offset + length overflows (length %" PRId64
                             ", offset %" PRId64 ")",
                             col, part, a->length, a->offset);
    }
    if (a->null_count < -1) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s'%s: invalid null_count %" PRId64,
                             col, part, a->null_count);
    }
    if (a->length < need_length) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: length %" PRId64 " is shorter than the %" PRId64
                             " rows its parent needs",
                             col, part, a->length, need_length);
    }
    if (a->n_buffers != n_buffers) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: %" PRId64 " buffers, expected %" PRId64
                             " for Arrow format '%s'",
                             col, part, a->n_buffers, n_buffers, s->format);
    }
    if (a->n_children != n_children || s->n_children != n_children) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: %" PRId64 " array children and %" PRId64
                             " schema children, expected %" PRId64 " for Arrow format '%s'",
                             col, part, a->n_children, s->n_children, n_children, s->format);
    }
    if (n_buffers > 0 && a->buffers == NULL) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s'%s: buffers is NULL", col, part);
    }
    if (n_children > 0) {
        if (a->children == NULL || s->children == NULL) {
            return aq__error_set(err, AQ_INVALID_DATA, "Column '%s'%s: children is NULL", col,
                                 part);
        }
        for (int64_t i = 0; i < n_children; i++) {
            if (a->children[i] == NULL || s->children[i] == NULL) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "Column '%s'%s: child %" PRId64 " is NULL", col, part, i);
            }
        }
    }
    if (n_buffers > 0 && a->null_count > 0 && a->buffers[0] == NULL) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: null_count is %" PRId64 " but there is no validity "
                             "buffer",
                             col, part, a->null_count);
    }
    return AQ_OK;
}

static const uint8_t *imp_validity(const struct ArrowArray *a)
{
    if (a->n_buffers == 0 || a->null_count == 0) {
        return NULL;
    }
    return a->buffers[0];
}

static bool imp_aligned(const void *p, size_t align)
{
    return ((uintptr_t)p & (align - 1)) == 0;
}

static aq_status imp_need_buffer(const char *col, const char *part, const void *p, const char *what,
                                 size_t align, aq_error *err)
{
    if (p == NULL) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s'%s: the %s buffer is NULL", col,
                             part, what);
    }
    if (!imp_aligned(p, align)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: the %s buffer is not aligned to %zu bytes", col, part,
                             what, align);
    }
    return AQ_OK;
}

/* Elements [first, end) of elem_bytes each at buf, or bits [first, end) when elem_bytes is 0
 * (a bitmap), must be mapped memory: the producer's offsets decide where they lie, and
 * nothing else bounds them (docs/decisions.md, "What a C Data producer can still get wrong"). */
static aq_status imp_span(const char *col, const char *part, const void *buf, const char *what,
                          int64_t first, int64_t end, size_t elem_bytes, aq_error *err)
{
    if (buf == NULL || end <= first) {
        return AQ_OK;
    }
    uint64_t lo, hi;
    bool over;
    if (elem_bytes == 0) {
        lo = (uint64_t)first / 8;
        hi = ((uint64_t)end + 7) / 8;
        over = false;
    } else {
        over = __builtin_mul_overflow((uint64_t)first, (uint64_t)elem_bytes, &lo) ||
               __builtin_mul_overflow((uint64_t)end, (uint64_t)elem_bytes, &hi);
    }
    if (over || hi > (uint64_t)(UINTPTR_MAX - (uintptr_t)buf) ||
        !aq__mem_mapped((const uint8_t *)buf + lo, (size_t)(hi - lo))) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s'%s: the %s buffer does not hold elements %" PRId64
                             " to %" PRId64 " that its offset and length imply (not mapped "
                             "memory)",
                             col, part, what, first, end);
    }
    return AQ_OK;
}

aq_status aq__arrow_check_batch(const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t *rows, int64_t *offset, aq_error *err)
{
    if (schema == NULL || array == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "input batch: schema or array is NULL");
    }
    if (schema->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "input batch: the ArrowSchema was already released");
    }
    if (array->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "input batch: the ArrowArray was already released");
    }
    if (schema->format == NULL || strcmp(schema->format, "+s") != 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "input batch must be a struct array (Arrow format '+s'), got '%s'",
                             schema->format != NULL ? schema->format : "(null)");
    }
    aq_status st = imp_node("<batch>", "", schema, array, 1, schema->n_children, 0, err);
    if (st != AQ_OK) {
        return st;
    }
    for (int64_t i = 0; i < schema->n_children; i++) {
        if (schema->children[i]->format == NULL) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "input batch: column %" PRId64 " has no format string", i);
        }
    }
    const uint8_t *validity = imp_validity(array);
    if ((st = imp_span("<batch>", "", validity, "validity", array->offset,
                       array->offset + array->length, 0, err)) != AQ_OK) {
        return st;
    }
    for (int64_t i = 0; validity != NULL && i < array->length; i++) {
        if (!arw_bit(validity, array->offset + i)) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT, "input batch: row %" PRId64 " is null",
                                 i);
        }
    }
    *rows = array->length;
    *offset = array->offset;
    return AQ_OK;
}

int64_t aq__arrow_find_column(const struct ArrowSchema *schema, const char *name)
{
    for (int64_t i = 0; i < schema->n_children; i++) {
        const char *n = schema->children[i]->name;
        if (n != NULL && strcmp(n, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- variable-length values ---- */

/* The offsets of rows [offset, offset + rows] of a variable-length or list column, 32-bit or
 * (wide) 64-bit: the buffer is there and aligned, and every row's pair is non-negative and
 * non-decreasing. Writes the first and the last offset. */
static aq_status imp_offsets(const char *col, const void *buf, bool wide, int64_t offset,
                             int64_t rows, int64_t *first, int64_t *last, aq_error *err)
{
    aq_status st = imp_need_buffer(col, "", buf, "offsets", wide ? 8 : 4, err);
    if (st == AQ_OK) {
        st = imp_span(col, "", buf, "offsets", offset, offset + rows + 1, wide ? 8 : 4, err);
    }
    if (st != AQ_OK) {
        return st;
    }
    const int32_t *o32 = buf;
    const int64_t *o64 = buf;
    for (int64_t i = offset; i < offset + rows; i++) {
        int64_t a = wide ? o64[i] : o32[i], b = wide ? o64[i + 1] : o32[i + 1];
        if (a < 0 || b < a) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "Column '%s': invalid offsets at row %" PRId64 " (%" PRId64
                                 ", %" PRId64 ")",
                                 col, i - offset, a, b);
        }
    }
    *first = wide ? o64[offset] : o32[offset];
    *last = wide ? o64[offset + rows] : o32[offset + rows];
    return AQ_OK;
}

/* The start of every column import: the structures must exist. A column of zero rows (any
 * type) or of the null type (every row is null) needs no buffers: it is checked as a bare node
 * and reported through *nulltype, which the caller records in its own kind. */
static aq_status imp_begin(const char *col, const struct ArrowSchema *schema,
                           const struct ArrowArray *array, int64_t parent_offset, int64_t rows,
                           bool *nulltype, aq_error *err)
{
    *nulltype = false;
    const char *f = schema != NULL ? schema->format : NULL;
    if (schema == NULL || array == NULL || f == NULL) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s': structure is NULL", col);
    }
    if (rows == 0 || strcmp(f, "n") == 0) {
        int64_t nb = rows == 0 ? array->n_buffers : 0;
        int64_t nc = rows == 0 ? array->n_children : 0;
        if (rows > 0 || array->release == NULL || schema->release == NULL) {
            aq_status st = imp_node(col, "", schema, array, nb, nc, parent_offset + rows, err);
            if (st != AQ_OK) {
                return st;
            }
        }
        *nulltype = true;
    }
    return AQ_OK;
}

aq_status aq__arrow_import_var(const char *col, bool binary, const char *expected,
                               const struct ArrowSchema *schema, const struct ArrowArray *array,
                               int64_t parent_offset, int64_t rows, arw_var *out, aq_error *err)
{
    memset(out, 0, sizeof *out);
    bool nulltype;
    aq_status st = imp_begin(col, schema, array, parent_offset, rows, &nulltype, err);
    if (st != AQ_OK) {
        return st;
    }
    if (nulltype) {
        out->kind = ARW_VAR_NULLTYPE;
        return AQ_OK;
    }
    const char *f = schema->format;
    char narrow = binary ? 'z' : 'u', wide = binary ? 'Z' : 'U';
    bool is_view = f[0] == 'v' && f[1] == narrow && f[2] == '\0';
    if (!is_view && !((f[0] == narrow || f[0] == wide) && f[1] == '\0')) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s' must be %s, got Arrow format '%s'", col, expected, f);
    }
    int64_t nb = is_view ? (array->n_buffers >= 3 ? array->n_buffers : 3) : 3;
    if ((st = imp_node(col, "", schema, array, nb, 0, parent_offset + rows, err)) != AQ_OK) {
        return st;
    }
    out->offset = array->offset + parent_offset;
    out->validity = imp_validity(array);
    if ((st = imp_span(col, "", out->validity, "validity", out->offset, out->offset + rows, 0,
                       err)) != AQ_OK) {
        return st;
    }
    if (is_view) {
        out->kind = ARW_VAR_VIEW;
        out->views = array->buffers[1];
        out->n_vbufs = array->n_buffers - 3;
        out->vbufs = (const uint8_t *const *)(array->buffers + 2);
        const int64_t *sizes = array->buffers[array->n_buffers - 1];
        if ((st = imp_need_buffer(col, "", out->views, "views", 4, err)) != AQ_OK ||
            (st = imp_span(col, "", out->views, "views", out->offset, out->offset + rows, 16,
                           err)) != AQ_OK) {
            return st;
        }
        if (out->n_vbufs > 0 &&
            ((st = imp_need_buffer(col, "", sizes, "variadic sizes", 8, err)) != AQ_OK ||
             (st = imp_span(col, "", sizes, "variadic sizes", 0, out->n_vbufs, 8, err)) != AQ_OK)) {
            return st;
        }
        for (int64_t i = 0; i < rows; i++) {
            if (!arw_var_valid(out, i)) {
                continue;
            }
            const uint8_t *v = out->views + (size_t)(out->offset + i) * 16;
            int32_t len, idx, off;
            memcpy(&len, v, 4);
            memcpy(&idx, v + 8, 4);
            memcpy(&off, v + 12, 4);
            if (len < 0) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "Column '%s': row %" PRId64 " has negative length %d", col, i,
                                     (int)len);
            }
            if (len > 12 && (idx < 0 || idx >= out->n_vbufs || off < 0 || out->vbufs[idx] == NULL ||
                             (int64_t)off + (int64_t)len > sizes[idx] ||
                             !aq__mem_mapped(out->vbufs[idx] + off, (size_t)len))) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "Column '%s': row %" PRId64 " refers outside its data "
                                     "buffers (buffer %d, offset %d, length %d)",
                                     col, i, (int)idx, (int)off, (int)len);
            }
        }
        return AQ_OK;
    }
    out->data = array->buffers[2];
    int64_t first, last;
    if (f[0] == narrow) {
        out->kind = ARW_VAR_32;
        out->off32 = array->buffers[1];
        if ((st = imp_offsets(col, out->off32, false, out->offset, rows, &first, &last, err)) !=
            AQ_OK) {
            return st;
        }
    } else {
        out->kind = ARW_VAR_64;
        out->off64 = array->buffers[1];
        if ((st = imp_offsets(col, out->off64, true, out->offset, rows, &first, &last, err)) !=
            AQ_OK) {
            return st;
        }
    }
    if (last > first && out->data == NULL) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s': the data buffer is NULL", col);
    }
    return imp_span(col, "", out->data, "data", first, last, 1, err);
}

void aq__arrow_var_get(const arw_var *v, int64_t i, const uint8_t **data, size_t *len)
{
    static const uint8_t empty[1] = {0};
    int64_t j = v->offset + i;
    int64_t a = 0, b = 0;
    switch (v->kind) {
    case ARW_VAR_32:
        a = v->off32[j];
        b = v->off32[j + 1];
        break;
    case ARW_VAR_64:
        a = v->off64[j];
        b = v->off64[j + 1];
        break;
    case ARW_VAR_VIEW: {
        const uint8_t *view = v->views + (size_t)j * 16;
        int32_t n, idx, off;
        memcpy(&n, view, 4);
        if (n <= 12) {
            *data = view + 4;
            *len = (size_t)n;
            return;
        }
        memcpy(&idx, view + 8, 4);
        memcpy(&off, view + 12, 4);
        *data = v->vbufs[idx] + off;
        *len = (size_t)n;
        return;
    }
    case ARW_VAR_NULLTYPE:
        break;
    }
    *data = b > a ? v->data + a : empty;
    *len = (size_t)(b - a);
}

aq_status aq__arrow_var_arena_size(const arw_var *v, int64_t rows, size_t *out, aq_error *err)
{
    size_t bytes = 0;
    for (int64_t i = 0; i < rows; i++) {
        size_t n = 0;
        if (arw_var_valid(v, i)) {
            const uint8_t *d;
            aq__arrow_var_get(v, i, &d, &n);
        }
        if (!aq__add_size(bytes, n + 1, &bytes)) {
            return aq__error_set(err, AQ_OVERFLOW, "layer names overflow");
        }
    }
    *out = bytes;
    return AQ_OK;
}

const char *aq__arrow_var_arena_copy(const arw_var *v, int64_t i, char **cursor, size_t *len)
{
    const uint8_t *d;
    size_t n;
    aq__arrow_var_get(v, i, &d, &n);
    char *s = *cursor;
    memcpy(s, d, n);
    s[n] = '\0';
    *cursor += n + 1;
    *len = n;
    return s;
}

/* ---- lists ---- */

static size_t imp_elem_size(char f)
{
    switch (f) {
    case 'f':
    case 'i':
        return 4;
    case 'e':
    case 'S':
        return 2;
    case 'g':
    case 'l':
        return 8;
    default:
        return 0;
    }
}

/* Parses the N of "+w:N". */
static bool imp_fixed_size(const char *f, int64_t *n)
{
    if (strncmp(f, "+w:", 3) != 0 || f[3] == '\0') {
        return false;
    }
    int64_t v = 0;
    for (const char *p = f + 3; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (INT32_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (*p - '0');
    }
    *n = v;
    return true;
}

aq_status aq__arrow_import_list(const char *col, const arw_list_spec *spec,
                                const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t parent_offset, int64_t rows, arw_list *out, aq_error *err)
{
    memset(out, 0, sizeof *out);
    bool nulltype;
    aq_status st = imp_begin(col, schema, array, parent_offset, rows, &nulltype, err);
    if (st != AQ_OK) {
        return st;
    }
    if (nulltype) {
        out->kind = ARW_LIST_NULLTYPE;
        return AQ_OK;
    }
    const char *f = schema->format;
    int64_t fixed = 0;
    if (strcmp(f, "+l") == 0) {
        out->kind = ARW_LIST_32;
    } else if (strcmp(f, "+L") == 0) {
        out->kind = ARW_LIST_64;
    } else if (spec->allow_fixed && imp_fixed_size(f, &fixed)) {
        out->kind = ARW_LIST_FIXED;
    } else {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s' must be %s, got Arrow format '%s'", col, spec->expected,
                             f);
    }
    int64_t nb = out->kind == ARW_LIST_FIXED ? 1 : 2;
    if ((st = imp_node(col, "", schema, array, nb, 1, parent_offset + rows, err)) != AQ_OK) {
        return st;
    }
    const struct ArrowSchema *cs = schema->children[0];
    const struct ArrowArray *ca = array->children[0];
    const char *cf = cs->format != NULL ? cs->format : "(null)";
    if (cf[0] == '\0' || cf[1] != '\0' || strchr(spec->child_formats, cf[0]) == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s' must be %s, got Arrow format '%s' with child format "
                             "'%s'",
                             col, spec->expected, f, cf);
    }
    if ((st = imp_node(col, " (list child)", cs, ca, 2, 0, 0, err)) != AQ_OK) {
        return st;
    }
    if (cf[0] == 'S') {
        /* uint16 values are bfloat16 only when the field says so (DESIGN decision): Arrow has
         * no bfloat16 type, so it travels as an extension type over uint16 storage. */
        const char *ext = NULL;
        size_t ext_len = 0;
        bool found = false;
        if ((st = aq__arrow_metadata_get(cs->metadata, "ARROW:extension:name", &ext, &ext_len,
                                         &found, err)) != AQ_OK) {
            return st;
        }
        if (!found || ext_len != strlen(AQ__ARROW_BF16_EXTENSION) ||
            memcmp(ext, AQ__ARROW_BF16_EXTENSION, ext_len) != 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Column '%s' must be %s, got Arrow format '%s' with child "
                                 "format 'S' (uint16 without the extension type '%s')",
                                 col, spec->expected, f, AQ__ARROW_BF16_EXTENSION);
        }
    }
    out->offset = array->offset + parent_offset;
    out->validity = imp_validity(array);
    out->fixed = fixed;
    out->child_format = cf[0];
    out->elem_size = imp_elem_size(cf[0]);
    out->values = ca->buffers[1];
    out->child_offset = ca->offset;
    out->child_validity = imp_validity(ca);
    int64_t first = 0, last = 0;
    if (out->kind == ARW_LIST_FIXED) {
        if (__builtin_mul_overflow(out->offset, fixed, &first) ||
            __builtin_mul_overflow(out->offset + rows, fixed, &last)) {
            return aq__error_set(err, AQ_INVALID_DATA, "Column '%s': list size overflows", col);
        }
    } else if (out->kind == ARW_LIST_32) {
        out->off32 = array->buffers[1];
        if ((st = imp_offsets(col, out->off32, false, out->offset, rows, &first, &last, err)) !=
            AQ_OK) {
            return st;
        }
    } else {
        out->off64 = array->buffers[1];
        if ((st = imp_offsets(col, out->off64, true, out->offset, rows, &first, &last, err)) !=
            AQ_OK) {
            return st;
        }
    }
    if (last > ca->length) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Column '%s': offsets run outside the list child (up to %" PRId64
                             ", child length %" PRId64 ")",
                             col, last, ca->length);
    }
    if (last > first) {
        if ((st = imp_need_buffer(col, " (list child)", out->values, "values", out->elem_size,
                                  err)) != AQ_OK) {
            return st;
        }
    }
    /* The child's offset is bounded by nothing but the producer's word: its values and
     * validity bits, where the rows' offsets put them, must be memory. */
    if (out->child_offset > INT64_MAX - last) {
        return aq__error_set(err, AQ_INVALID_DATA, "Column '%s' (list child): offset overflows",
                             col);
    }
    if ((st = imp_span(col, "", out->validity, "validity", out->offset, out->offset + rows, 0,
                       err)) != AQ_OK ||
        (st = imp_span(col, " (list child)", out->values, "values", out->child_offset + first,
                       out->child_offset + last, out->elem_size, err)) != AQ_OK ||
        (st = imp_span(col, " (list child)", out->child_validity, "validity",
                       out->child_offset + first, out->child_offset + last, 0, err)) != AQ_OK) {
        return st;
    }
    return AQ_OK;
}

void aq__arrow_list_get(const arw_list *l, int64_t i, int64_t *start, int64_t *count)
{
    int64_t j = l->offset + i;
    int64_t a, b;
    switch (l->kind) {
    case ARW_LIST_32:
        a = l->off32[j];
        b = l->off32[j + 1];
        break;
    case ARW_LIST_64:
        a = l->off64[j];
        b = l->off64[j + 1];
        break;
    case ARW_LIST_FIXED:
        a = j * l->fixed;
        b = a + l->fixed;
        break;
    default:
        a = b = 0;
        break;
    }
    *start = l->child_offset + a;
    *count = b - a;
}

int64_t aq__arrow_list_first_null(const arw_list *l, int64_t start, int64_t count)
{
    if (l->child_validity == NULL) {
        return -1;
    }
    int64_t i = 0;
    /* Whole bytes of a full bitmap at a time; bit by bit at the edges. */
    while (i < count && ((start + i) & 7) != 0) {
        if (!arw_bit(l->child_validity, start + i)) {
            return i;
        }
        i++;
    }
    while (count - i >= 8 && l->child_validity[(start + i) >> 3] == 0xff) {
        i += 8;
    }
    for (; i < count; i++) {
        if (!arw_bit(l->child_validity, start + i)) {
            return i;
        }
    }
    return -1;
}

/* ---- primitives ---- */

aq_status aq__arrow_import_prim(const char *col, char format, const char *expected,
                                const struct ArrowSchema *schema, const struct ArrowArray *array,
                                int64_t parent_offset, int64_t rows, arw_prim *out, aq_error *err)
{
    memset(out, 0, sizeof *out);
    bool nulltype;
    aq_status st = imp_begin(col, schema, array, parent_offset, rows, &nulltype, err);
    if (st != AQ_OK) {
        return st;
    }
    if (nulltype) {
        out->nulltype = 1;
        return AQ_OK;
    }
    const char *f = schema->format;
    if (f[0] != format || f[1] != '\0') {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Column '%s' must be %s, got Arrow format '%s'", col, expected, f);
    }
    if ((st = imp_node(col, "", schema, array, 2, 0, parent_offset + rows, err)) != AQ_OK) {
        return st;
    }
    out->offset = array->offset + parent_offset;
    out->validity = imp_validity(array);
    out->values = array->buffers[1];
    out->format = format;
    size_t size = imp_elem_size(format);
    if ((st = imp_need_buffer(col, "", out->values, "values", size == 0 ? 1 : size, err)) !=
            AQ_OK ||
        (st = imp_span(col, "", out->validity, "validity", out->offset, out->offset + rows, 0,
                       err)) != AQ_OK) {
        return st;
    }
    size_t width = format == 'b'                                     ? 0 /* a bit each */
                   : format == 'c' || format == 'C'                  ? 1
                   : format == 's' || format == 'S' || format == 'e' ? 2
                   : format == 'g' || format == 'l' || format == 'L' ? 8
                                                                     : 4;
    return imp_span(col, "", out->values, "values", out->offset, out->offset + rows, width, err);
}

/* ---- schema metadata ---- */

aq_status aq__arrow_metadata_get(const char *metadata, const char *key, const char **value,
                                 size_t *len, bool *found, aq_error *err)
{
    *found = false;
    if (metadata == NULL) {
        return AQ_OK;
    }
    const char *p = metadata;
    int32_t n;
    memcpy(&n, p, 4);
    p += 4;
    if (n < 0) {
        return aq__error_set(err, AQ_INVALID_DATA, "schema metadata: negative entry count %d",
                             (int)n);
    }
    size_t klen_want = strlen(key);
    for (int32_t i = 0; i < n; i++) {
        int32_t kl, vl;
        memcpy(&kl, p, 4);
        if (kl < 0) {
            return aq__error_set(err, AQ_INVALID_DATA, "schema metadata: negative key length");
        }
        const char *k = p + 4;
        p = k + kl;
        memcpy(&vl, p, 4);
        if (vl < 0) {
            return aq__error_set(err, AQ_INVALID_DATA, "schema metadata: negative value length");
        }
        const char *v = p + 4;
        p = v + vl;
        if ((size_t)kl == klen_want && memcmp(k, key, klen_want) == 0) {
            *value = v;
            *len = (size_t)vl;
            *found = true;
            return AQ_OK;
        }
    }
    return AQ_OK;
}
