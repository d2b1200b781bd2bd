/* IPC schemas: Schema.fbs tables <-> the type tree <-> ArrowSchema. */
#include "ipc_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* Nesting and size limits for untrusted schemas: FlatBuffers may share one sub-table between
 * several parents, so a small buffer can describe an exponentially large tree. */
#define IPC_MAX_DEPTH 64
#define IPC_MAX_FIELDS 100000

/* Field slots (Schema.fbs, table Field). */
enum {
    F_NAME = 0,
    F_NULLABLE = 1,
    F_TYPE_TYPE = 2,
    F_TYPE = 3,
    F_DICT = 4,
    F_CHILDREN = 5,
    F_META = 6
};

static const char *const ipc_union_names[AQ__FBT_MAX + 1] = {
    "NONE",          "Null",      "Int",           "FloatingPoint",
    "Binary",        "Utf8",      "Bool",          "Decimal",
    "Date",          "Time",      "Timestamp",     "Interval",
    "List",          "Struct",    "Union",         "FixedSizeBinary",
    "FixedSizeList", "Map",       "Duration",      "LargeBinary",
    "LargeUtf8",     "LargeList", "RunEndEncoded", "BinaryView",
    "Utf8View",      "ListView",  "LargeListView"};

void aq__ipc_field_reset(aq__ipc_field *f)
{
    for (size_t i = 0; i < f->n_children; i++) {
        aq__ipc_field_reset(&f->children[i]);
    }
    free(f->children);
    free(f->name);
    free(f->metadata);
    memset(f, 0, sizeof *f);
}

void aq__ipc_field_format(const aq__ipc_field *f, char *buf, size_t cap)
{
    static const char ints[2][4] = {{'C', 'S', 'I', 'L'}, {'c', 's', 'i', 'l'}};
    const char *s = "";
    char one[2] = {0, 0};
    switch (f->kind) {
    case AQ__K_NULL:
        s = "n";
        break;
    case AQ__K_INT:
        one[0] = ints[f->is_signed][f->bit_width == 8    ? 0
                                    : f->bit_width == 16 ? 1
                                    : f->bit_width == 32 ? 2
                                                         : 3];
        s = one;
        break;
    case AQ__K_FLOAT:
        s = f->bit_width == 16 ? "e" : f->bit_width == 32 ? "f" : "g";
        break;
    case AQ__K_BINARY:
        s = "z";
        break;
    case AQ__K_UTF8:
        s = "u";
        break;
    case AQ__K_LARGE_BINARY:
        s = "Z";
        break;
    case AQ__K_LARGE_UTF8:
        s = "U";
        break;
    case AQ__K_BINARY_VIEW:
        s = "vz";
        break;
    case AQ__K_UTF8_VIEW:
        s = "vu";
        break;
    case AQ__K_LIST:
        s = "+l";
        break;
    case AQ__K_LARGE_LIST:
        s = "+L";
        break;
    case AQ__K_STRUCT:
        s = "+s";
        break;
    case AQ__K_FIXED_SIZE_LIST:
        snprintf(buf, cap, "+w:%d", (int)f->list_size);
        return;
    }
    snprintf(buf, cap, "%s", s);
}

const char *aq__ipc_type_name(const aq__ipc_field *f)
{
    switch (f->kind) {
    case AQ__K_NULL:
        return "null";
    case AQ__K_INT: {
        static const char *const names[2][4] = {{"uint8", "uint16", "uint32", "uint64"},
                                                {"int8", "int16", "int32", "int64"}};
        int i = f->bit_width == 8 ? 0 : f->bit_width == 16 ? 1 : f->bit_width == 32 ? 2 : 3;
        return names[f->is_signed][i];
    }
    case AQ__K_FLOAT:
        return f->bit_width == 16 ? "float16" : f->bit_width == 32 ? "float32" : "float64";
    case AQ__K_BINARY:
        return "binary";
    case AQ__K_UTF8:
        return "utf8";
    case AQ__K_LARGE_BINARY:
        return "large_binary";
    case AQ__K_LARGE_UTF8:
        return "large_utf8";
    case AQ__K_BINARY_VIEW:
        return "binary_view";
    case AQ__K_UTF8_VIEW:
        return "utf8_view";
    case AQ__K_LIST:
        return "list";
    case AQ__K_LARGE_LIST:
        return "large_list";
    case AQ__K_FIXED_SIZE_LIST:
        return "fixed_size_list";
    case AQ__K_STRUCT:
        return "struct";
    }
    return "unknown";
}

/* ---- reading Schema.fbs ---- */

typedef struct schema_reader {
    const char *where;
    size_t fields;
    aq_error *err;
} schema_reader;

static aq_status sr_bad(schema_reader *r, const char *what, const char *field)
{
    return aq__error_set(r->err, AQ_INVALID_DATA, "%s: malformed schema metadata (%s%s%s)",
                         r->where, what, field ? " of field " : "", field ? field : "");
}

/* Reads a [KeyValue] vector into the C Data Interface encoding. */
static aq_status sr_metadata(schema_reader *r, const aq__fbt *t, unsigned slot, const char *field,
                             char **out, size_t *out_len)
{
    aq__fbv v;
    int rc = aq__fbt_vector(t, slot, 4, &v);
    if (rc == AQ__FB_BAD) {
        return sr_bad(r, "custom_metadata", field);
    }
    if (rc == AQ__FB_ABSENT || v.count == 0) {
        return AQ_OK;
    }
    if (v.count > INT32_MAX) {
        return sr_bad(r, "custom_metadata count", field);
    }
    size_t total = 4;
    for (int pass = 0; pass < 2; pass++) {
        char *w = NULL;
        if (pass == 1) {
            *out = malloc(total);
            if (*out == NULL) {
                return aq__error_set(r->err, AQ_NO_MEMORY, "%s: out of memory", r->where);
            }
            *out_len = total;
            int32_t n = (int32_t)v.count;
            memcpy(*out, &n, 4);
            w = *out + 4;
        }
        for (size_t i = 0; i < v.count; i++) {
            aq__fbt kv;
            const char *s[2] = {"", ""};
            size_t n[2] = {0, 0};
            if (aq__fbv_table(&v, i, &kv) != AQ__FB_OK) {
                return sr_bad(r, "custom_metadata entry", field);
            }
            for (unsigned k = 0; k < 2; k++) {
                if (aq__fbt_string(&kv, k, &s[k], &n[k]) == AQ__FB_BAD || n[k] > INT32_MAX) {
                    return sr_bad(r, "custom_metadata string", field);
                }
                if (pass == 0) {
                    if (!aq__add_size(total, 4 + n[k], &total)) {
                        return sr_bad(r, "custom_metadata size", field);
                    }
                } else {
                    int32_t len = (int32_t)n[k];
                    memcpy(w, &len, 4);
                    memcpy(w + 4, s[k], n[k]);
                    w += 4 + n[k];
                }
            }
        }
    }
    return AQ_OK;
}

/* The type of field f from its type table (union member type_type): f's kind and parameters,
 * and in *want_children the number of children the type has (SIZE_MAX: any). */
static aq_status sr_type(schema_reader *r, uint8_t type_type, const aq__fbt *type, aq__ipc_field *f,
                         size_t *want_children)
{
    *want_children = 0;
    switch (type_type) {
    case AQ__FBT_NULL:
        f->kind = AQ__K_NULL;
        break;
    case AQ__FBT_INT: {
        int32_t bw;
        uint8_t sign;
        if (aq__fbt_i32(type, 0, 0, &bw) != AQ__FB_OK ||
            aq__fbt_u8(type, 1, 0, &sign) != AQ__FB_OK) {
            return sr_bad(r, "Int type", f->name);
        }
        if (bw != 8 && bw != 16 && bw != 32 && bw != 64) {
            return aq__error_set(r->err, AQ_INVALID_DATA,
                                 "%s: field '%s' has an Int type of %d bits", r->where, f->name,
                                 (int)bw);
        }
        f->kind = AQ__K_INT;
        f->bit_width = bw;
        f->is_signed = sign != 0;
        break;
    }
    case AQ__FBT_FLOAT: {
        int16_t prec;
        if (aq__fbt_i16(type, 0, 0, &prec) != AQ__FB_OK || prec < 0 || prec > 2) {
            return sr_bad(r, "FloatingPoint precision", f->name);
        }
        f->kind = AQ__K_FLOAT;
        f->bit_width = 16 << prec;
        break;
    }
    case AQ__FBT_BINARY:
        f->kind = AQ__K_BINARY;
        break;
    case AQ__FBT_UTF8:
        f->kind = AQ__K_UTF8;
        break;
    case AQ__FBT_LARGE_BINARY:
        f->kind = AQ__K_LARGE_BINARY;
        break;
    case AQ__FBT_LARGE_UTF8:
        f->kind = AQ__K_LARGE_UTF8;
        break;
    case AQ__FBT_BINARY_VIEW:
        f->kind = AQ__K_BINARY_VIEW;
        break;
    case AQ__FBT_UTF8_VIEW:
        f->kind = AQ__K_UTF8_VIEW;
        break;
    case AQ__FBT_LIST:
        f->kind = AQ__K_LIST;
        *want_children = 1;
        break;
    case AQ__FBT_LARGE_LIST:
        f->kind = AQ__K_LARGE_LIST;
        *want_children = 1;
        break;
    case AQ__FBT_STRUCT:
        f->kind = AQ__K_STRUCT;
        *want_children = SIZE_MAX;
        break;
    case AQ__FBT_FIXED_SIZE_LIST: {
        int32_t n;
        if (aq__fbt_i32(type, 0, 0, &n) != AQ__FB_OK || n < 0) {
            return sr_bad(r, "FixedSizeList listSize", f->name);
        }
        f->kind = AQ__K_FIXED_SIZE_LIST;
        f->list_size = n;
        *want_children = 1;
        break;
    }
    default:
        return aq__error_set(r->err, AQ_UNSUPPORTED,
                             "%s: field '%s' has type %s, which is not supported (supported: "
                             "null, integers, floats, utf8, binary, their large and view "
                             "variants, list, large_list, fixed_size_list, struct)",
                             r->where, f->name,
                             type_type <= AQ__FBT_MAX ? ipc_union_names[type_type] : "unknown");
    }
    return AQ_OK;
}

static aq_status sr_field(schema_reader *r, const aq__fbt *t, int depth, aq__ipc_field *f)
{
    const char *name = "";
    size_t name_len = 0;
    if (aq__fbt_string(t, F_NAME, &name, &name_len) == AQ__FB_BAD) {
        return sr_bad(r, "name", NULL);
    }
    f->name = malloc(name_len + 1);
    if (f->name == NULL) {
        return aq__error_set(r->err, AQ_NO_MEMORY, "%s: out of memory", r->where);
    }
    memcpy(f->name, name, name_len);
    f->name[name_len] = '\0';
    if (memchr(name, '\0', name_len) != NULL) {
        return sr_bad(r, "a NUL byte in the name", f->name);
    }
    if (++r->fields > IPC_MAX_FIELDS || depth > IPC_MAX_DEPTH) {
        return aq__error_set(r->err, AQ_UNSUPPORTED,
                             "%s: the schema nests deeper than %d or has more than %d fields",
                             r->where, IPC_MAX_DEPTH, IPC_MAX_FIELDS);
    }
    uint8_t nullable, type_type;
    if (aq__fbt_u8(t, F_NULLABLE, 0, &nullable) != AQ__FB_OK ||
        aq__fbt_u8(t, F_TYPE_TYPE, 0, &type_type) != AQ__FB_OK) {
        return sr_bad(r, "type", f->name);
    }
    f->nullable = nullable != 0;
    aq__fbt dict, type;
    int rc = aq__fbt_table(t, F_DICT, &dict);
    if (rc == AQ__FB_BAD) {
        return sr_bad(r, "dictionary", f->name);
    }
    if (rc == AQ__FB_OK) {
        return aq__error_set(r->err, AQ_UNSUPPORTED,
                             "%s: field '%s' is dictionary-encoded; dictionaries are not "
                             "supported",
                             r->where, f->name);
    }
    rc = aq__fbt_table(t, F_TYPE, &type);
    if (rc != AQ__FB_OK) {
        return sr_bad(r, "missing type table", f->name);
    }
    size_t want_children;
    aq_status st = sr_type(r, type_type, &type, f, &want_children);
    if (st != AQ_OK) {
        return st;
    }
    aq__fbv kids;
    rc = aq__fbt_vector(t, F_CHILDREN, 4, &kids);
    if (rc == AQ__FB_BAD) {
        return sr_bad(r, "children", f->name);
    }
    size_t n_kids = rc == AQ__FB_OK ? kids.count : 0;
    if (want_children != SIZE_MAX && n_kids != want_children) {
        return aq__error_set(r->err, AQ_INVALID_DATA,
                             "%s: field '%s' of type %s has %zu children, expected %zu", r->where,
                             f->name, aq__ipc_type_name(f), n_kids, want_children);
    }
    if (n_kids > 0) {
        f->children = calloc(n_kids, sizeof *f->children);
        if (f->children == NULL) {
            return aq__error_set(r->err, AQ_NO_MEMORY, "%s: out of memory", r->where);
        }
        f->n_children = n_kids;
        for (size_t i = 0; i < n_kids; i++) {
            aq__fbt ct;
            if (aq__fbv_table(&kids, i, &ct) != AQ__FB_OK) {
                return sr_bad(r, "child", f->name);
            }
            st = sr_field(r, &ct, depth + 1, &f->children[i]);
            if (st != AQ_OK) {
                return st;
            }
        }
    }
    return sr_metadata(r, t, F_META, f->name, &f->metadata, &f->metadata_len);
}

aq_status aq__ipc_schema_read(const aq__fbt *schema, aq__ipc_schema *out, const char *where,
                              aq_error *err)
{
    schema_reader r = {where, 0, err};
    aq__ipc_schema s;
    memset(&s, 0, sizeof s);
    s.root.kind = AQ__K_STRUCT;
    aq_status st;
    int16_t endianness;
    aq__fbv fields;
    if (aq__fbt_i16(schema, 0, 0, &endianness) != AQ__FB_OK) {
        st = sr_bad(&r, "endianness", NULL);
        goto done;
    }
    if (endianness != 0) {
        st = aq__error_set(err, AQ_UNSUPPORTED, "%s: big-endian data is not supported", where);
        goto done;
    }
    int rc = aq__fbt_vector(schema, 1, 4, &fields);
    if (rc == AQ__FB_BAD) {
        st = sr_bad(&r, "fields", NULL);
        goto done;
    }
    s.root.name = calloc(1, 1);
    if (s.root.name == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", where);
        goto done;
    }
    if (rc == AQ__FB_OK && fields.count > 0) {
        if (fields.count > IPC_MAX_FIELDS) {
            st = aq__error_set(err, AQ_UNSUPPORTED, "%s: more than %d fields", where,
                               IPC_MAX_FIELDS);
            goto done;
        }
        s.root.children = calloc(fields.count, sizeof *s.root.children);
        if (s.root.children == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", where);
            goto done;
        }
        s.root.n_children = fields.count;
        for (size_t i = 0; i < fields.count; i++) {
            aq__fbt ft;
            if (aq__fbv_table(&fields, i, &ft) != AQ__FB_OK) {
                st = sr_bad(&r, "field table", NULL);
                goto done;
            }
            st = sr_field(&r, &ft, 1, &s.root.children[i]);
            if (st != AQ_OK) {
                goto done;
            }
        }
    }
    st = sr_metadata(&r, schema, 2, NULL, &s.root.metadata, &s.root.metadata_len);
    if (st != AQ_OK) {
        goto done;
    }
    s.total_fields = r.fields;
    *out = s;
    return AQ_OK;
done:
    aq__ipc_field_reset(&s.root);
    return st;
}

/* ---- export to ArrowSchema ---- */

static aq_status se_field(const aq__ipc_field *f, struct ArrowSchema *out, aq_error *err)
{
    char format[32];
    aq__ipc_field_format(f, format, sizeof format);
    aq_status st = aq__schema_alloc(out, format, f->name, f->nullable ? ARROW_FLAG_NULLABLE : 0,
                                    (int64_t)f->n_children, err);
    if (st != AQ_OK) {
        return st;
    }
    if (f->metadata != NULL) {
        st = aq__schema_set_metadata_raw(out, f->metadata, f->metadata_len, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    for (size_t i = 0; i < f->n_children; i++) {
        st = se_field(&f->children[i], out->children[i], err);
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

aq_status aq__ipc_schema_export(const aq__ipc_schema *s, struct ArrowSchema *out, aq_error *err)
{
    struct ArrowSchema tmp;
    aq_status st = se_field(&s->root, &tmp, err);
    if (st != AQ_OK) {
        aq__schema_release_if(&tmp);
        return st;
    }
    tmp.flags = 0;
    aq__schema_move(&tmp, out);
    return AQ_OK;
}

/* ---- import from ArrowSchema ---- */

/* The size of a C Data Interface metadata blob, walking its lengths. */
static aq_status si_metadata_size(const char *m, const char *field, size_t *out, aq_error *err)
{
    int32_t n;
    memcpy(&n, m, 4);
    size_t at = 4;
    if (n < 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "field '%s': metadata has a negative entry count", field);
    }
    for (int64_t i = 0; i < 2 * (int64_t)n; i++) {
        int32_t len;
        memcpy(&len, m + at, 4);
        if (len < 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "field '%s': metadata has a negative length", field);
        }
        at += 4 + (size_t)len;
    }
    *out = at;
    return AQ_OK;
}

static aq_status si_field(const struct ArrowSchema *s, int depth, aq__ipc_field *f, size_t *count,
                          aq_error *err)
{
    const char *name = s->name != NULL ? s->name : "";
    const char *fmt = s->format != NULL ? s->format : "";
    f->name = malloc(strlen(name) + 1);
    if (f->name == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    strcpy(f->name, name);
    if (depth > IPC_MAX_DEPTH || ++*count > IPC_MAX_FIELDS) {
        return aq__error_set(err, AQ_UNSUPPORTED, "the schema nests too deep or is too large");
    }
    f->nullable = (s->flags & ARROW_FLAG_NULLABLE) != 0;
    if (s->dictionary != NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "field '%s' is dictionary-encoded; dictionaries are not supported",
                             name);
    }
    int64_t want_children = 0;
    static const char ints[] = "cCsSiIlL";
    const char *p;
    if (fmt[0] != '\0' && fmt[1] == '\0' && (p = strchr(ints, fmt[0])) != NULL) {
        f->kind = AQ__K_INT;
        f->bit_width = 8 << ((p - ints) / 2);
        f->is_signed = ((p - ints) % 2) == 0;
    } else if (strcmp(fmt, "n") == 0) {
        f->kind = AQ__K_NULL;
    } else if (strcmp(fmt, "e") == 0 || strcmp(fmt, "f") == 0 || strcmp(fmt, "g") == 0) {
        f->kind = AQ__K_FLOAT;
        f->bit_width = fmt[0] == 'e' ? 16 : fmt[0] == 'f' ? 32 : 64;
    } else if (strcmp(fmt, "z") == 0) {
        f->kind = AQ__K_BINARY;
    } else if (strcmp(fmt, "u") == 0) {
        f->kind = AQ__K_UTF8;
    } else if (strcmp(fmt, "Z") == 0) {
        f->kind = AQ__K_LARGE_BINARY;
    } else if (strcmp(fmt, "U") == 0) {
        f->kind = AQ__K_LARGE_UTF8;
    } else if (strcmp(fmt, "vz") == 0) {
        f->kind = AQ__K_BINARY_VIEW;
    } else if (strcmp(fmt, "vu") == 0) {
        f->kind = AQ__K_UTF8_VIEW;
    } else if (strcmp(fmt, "+l") == 0) {
        f->kind = AQ__K_LIST;
        want_children = 1;
    } else if (strcmp(fmt, "+L") == 0) {
        f->kind = AQ__K_LARGE_LIST;
        want_children = 1;
    } else if (strcmp(fmt, "+s") == 0) {
        f->kind = AQ__K_STRUCT;
        want_children = -1;
    } else if (strncmp(fmt, "+w:", 3) == 0) {
        char *end;
        long n = strtol(fmt + 3, &end, 10);
        if (*end != '\0' || end == fmt + 3 || n < 0 || n > INT32_MAX) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT, "field '%s': bad format '%s'", name,
                                 fmt);
        }
        f->kind = AQ__K_FIXED_SIZE_LIST;
        f->list_size = (int32_t)n;
        want_children = 1;
    } else {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "field '%s' has type '%s', which cannot be written to Arrow IPC by "
                             "this library",
                             name, fmt);
    }
    if (s->n_children < 0 || (want_children >= 0 && s->n_children != want_children) ||
        (s->n_children > 0 && s->children == NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "field '%s' of type '%s' has %lld children",
                             name, fmt, (long long)s->n_children);
    }
    if (s->metadata != NULL) {
        size_t len = 0;
        aq_status st = si_metadata_size(s->metadata, name, &len, err);
        if (st != AQ_OK) {
            return st;
        }
        f->metadata = malloc(len);
        if (f->metadata == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        memcpy(f->metadata, s->metadata, len);
        f->metadata_len = len;
    }
    if (s->n_children > 0) {
        f->children = calloc((size_t)s->n_children, sizeof *f->children);
        if (f->children == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        f->n_children = (size_t)s->n_children;
        for (size_t i = 0; i < f->n_children; i++) {
            if (s->children[i] == NULL) {
                return aq__error_set(err, AQ_INVALID_ARGUMENT, "field '%s': child %zu is NULL",
                                     name, i);
            }
            aq_status st = si_field(s->children[i], depth + 1, &f->children[i], count, err);
            if (st != AQ_OK) {
                return st;
            }
        }
    }
    return AQ_OK;
}

aq_status aq__ipc_schema_import(const struct ArrowSchema *schema, aq__ipc_schema *out,
                                aq_error *err)
{
    aq__ipc_schema s;
    memset(&s, 0, sizeof s);
    if (schema == NULL || schema->release == NULL || schema->format == NULL ||
        strcmp(schema->format, "+s") != 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "a record batch schema must be a struct ('+s'), got '%s'",
                             schema && schema->format ? schema->format : "(null)");
    }
    size_t count = 0;
    aq_status st = si_field(schema, 0, &s.root, &count, err);
    if (st != AQ_OK) {
        aq__ipc_field_reset(&s.root);
        return st;
    }
    s.total_fields = count - 1;
    *out = s;
    return AQ_OK;
}

/* ---- writing Schema.fbs ---- */

static size_t sw_metadata(aq__fbb *b, const char *m)
{
    int32_t n;
    memcpy(&n, m, 4);
    size_t first;
    size_t vec = aq__fbb_vector(b, (size_t)n, 4, 4, NULL, &first);
    size_t at = 4;
    for (int32_t i = 0; i < n; i++) {
        int32_t kl, vl;
        memcpy(&kl, m + at, 4);
        const char *k = m + at + 4;
        at += 4 + (size_t)kl;
        memcpy(&vl, m + at, 4);
        const char *v = m + at + 4;
        at += 4 + (size_t)vl;
        size_t refs[2];
        aq__fbf kv[2] = {{0, 0, 0}, {1, 0, 0}};
        size_t t = aq__fbb_table(b, kv, 2, refs);
        aq__fbb_patch(b, first + 4 * (size_t)i, t);
        aq__fbb_patch(b, refs[0], aq__fbb_string(b, k, (size_t)kl));
        aq__fbb_patch(b, refs[1], aq__fbb_string(b, v, (size_t)vl));
    }
    return vec;
}

/* The Type union tag of a kind. */
static uint8_t sw_tag(aq__ipc_kind kind)
{
    switch (kind) {
    case AQ__K_NULL:
        return AQ__FBT_NULL;
    case AQ__K_INT:
        return AQ__FBT_INT;
    case AQ__K_FLOAT:
        return AQ__FBT_FLOAT;
    case AQ__K_BINARY:
        return AQ__FBT_BINARY;
    case AQ__K_UTF8:
        return AQ__FBT_UTF8;
    case AQ__K_LARGE_BINARY:
        return AQ__FBT_LARGE_BINARY;
    case AQ__K_LARGE_UTF8:
        return AQ__FBT_LARGE_UTF8;
    case AQ__K_BINARY_VIEW:
        return AQ__FBT_BINARY_VIEW;
    case AQ__K_UTF8_VIEW:
        return AQ__FBT_UTF8_VIEW;
    case AQ__K_LIST:
        return AQ__FBT_LIST;
    case AQ__K_LARGE_LIST:
        return AQ__FBT_LARGE_LIST;
    case AQ__K_STRUCT:
        return AQ__FBT_STRUCT;
    case AQ__K_FIXED_SIZE_LIST:
        return AQ__FBT_FIXED_SIZE_LIST;
    }
    return 0;
}

/* The type table: parameters for Int, FloatingPoint and FixedSizeList, empty otherwise (it
 * must still be present). */
static size_t sw_type(aq__fbb *b, const aq__ipc_field *f)
{
    aq__fbf fs[2];
    switch (f->kind) {
    case AQ__K_INT:
        fs[0] = (aq__fbf){0, 4, (uint64_t)f->bit_width};
        fs[1] = (aq__fbf){1, 1, f->is_signed ? 1u : 0u};
        return aq__fbb_table(b, fs, 2, NULL);
    case AQ__K_FLOAT:
        fs[0] = (aq__fbf){0, 2, f->bit_width == 16 ? 0u : f->bit_width == 32 ? 1u : 2u};
        return aq__fbb_table(b, fs, 1, NULL);
    case AQ__K_FIXED_SIZE_LIST:
        fs[0] = (aq__fbf){0, 4, (uint32_t)f->list_size};
        return aq__fbb_table(b, fs, 1, NULL);
    default:
        return aq__fbb_table(b, NULL, 0, NULL);
    }
}

static size_t sw_field(aq__fbb *b, const aq__ipc_field *f)
{
    aq__fbf fs[6] = {{F_NAME, 0, 0},
                     {F_NULLABLE, 1, f->nullable ? 1u : 0u},
                     {F_TYPE_TYPE, 1, sw_tag(f->kind)},
                     {F_TYPE, 0, 0},
                     {F_CHILDREN, 0, 0},
                     {F_META, 0, 0}};
    size_t n = f->metadata != NULL ? 6 : 5;
    size_t refs[4];
    size_t t = aq__fbb_table(b, fs, n, refs);
    aq__fbb_patch(b, refs[0], aq__fbb_string(b, f->name, strlen(f->name)));
    aq__fbb_patch(b, refs[1], sw_type(b, f));
    /* Arrow C++ requires the children vector, even empty. */
    size_t first;
    aq__fbb_patch(b, refs[2], aq__fbb_vector(b, f->n_children, 4, 4, NULL, &first));
    for (size_t i = 0; i < f->n_children; i++) {
        aq__fbb_patch(b, first + 4 * i, sw_field(b, &f->children[i]));
    }
    if (f->metadata != NULL) {
        aq__fbb_patch(b, refs[3], sw_metadata(b, f->metadata));
    }
    return t;
}

size_t aq__ipc_schema_write(aq__fbb *b, const aq__ipc_schema *s)
{
    aq__fbf fs[2] = {{1, 0, 0}, {2, 0, 0}};
    size_t refs[2];
    size_t t = aq__fbb_table(b, fs, s->root.metadata != NULL ? 2 : 1, refs);
    size_t first;
    aq__fbb_patch(b, refs[0], aq__fbb_vector(b, s->root.n_children, 4, 4, NULL, &first));
    for (size_t i = 0; i < s->root.n_children; i++) {
        aq__fbb_patch(b, first + 4 * i, sw_field(b, &s->root.children[i]));
    }
    if (s->root.metadata != NULL) {
        aq__fbb_patch(b, refs[1], sw_metadata(b, s->root.metadata));
    }
    return t;
}
