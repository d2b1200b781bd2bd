/*
 * The safetensors header parser. The format: an unsigned 64-bit little-endian length N, then N
 * bytes of JSON (an object; trailing spaces allowed), then the data region. Each JSON member is
 * a tensor {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the data
 * region, except "__metadata__", a string-to-string object. Everything that comes from the file
 * is checked here, once, so the rest of the library can trust the entries: offsets must tile
 * the data region exactly (no gap, no overlap, nothing past its end), and every tensor's byte
 * size must match its dtype and shape.
 *
 * Headers can be large (a million tensors make a 60-100 MB header), so the header is not
 * loaded as one JSON tree, which costs about a kilobyte per tensor. A scanner walks the outer
 * object's grammar (members "key": value separated by commas) and Jansson parses each member
 * alone; names, shapes and metadata go to one arena. Any syntax error, and any duplicate name,
 * makes the parser load the whole header with Jansson instead, so that every malformed header
 * gets Jansson's message and byte position, as a whole-tree parse would give it.
 */
#include "io_internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>

static const struct {
    const char *name;
    size_t size;
} st_dtypes[AQ_ST_DTYPE_COUNT] = {
    [AQ_ST_F64] = {"F64", 8},
    [AQ_ST_F32] = {"F32", 4},
    [AQ_ST_F16] = {"F16", 2},
    [AQ_ST_BF16] = {"BF16", 2},
    [AQ_ST_I64] = {"I64", 8},
    [AQ_ST_I32] = {"I32", 4},
    [AQ_ST_I16] = {"I16", 2},
    [AQ_ST_I8] = {"I8", 1},
    [AQ_ST_U64] = {"U64", 8},
    [AQ_ST_U32] = {"U32", 4},
    [AQ_ST_U16] = {"U16", 2},
    [AQ_ST_U8] = {"U8", 1},
    [AQ_ST_BOOL] = {"BOOL", 1},
    [AQ_ST_F8_E4M3] = {"F8_E4M3", 1},
    [AQ_ST_F8_E5M2] = {"F8_E5M2", 1},
    [AQ_ST_F8_E8M0] = {"F8_E8M0", 1},
    [AQ_ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 1},
    [AQ_ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 1},
    [AQ_ST_C64] = {"C64", 8},
    [AQ_ST_UNKNOWN] = {"UNKNOWN", 0},
};

const char *aq_st_dtype_name(aq_st_dtype dtype)
{
    return (unsigned)dtype < AQ_ST_DTYPE_COUNT ? st_dtypes[dtype].name : "UNKNOWN";
}

aq_st_dtype aq_st_dtype_from_name(const char *name)
{
    if (name != NULL) {
        for (int i = 0; i < AQ_ST_UNKNOWN; i++) {
            if (strcmp(name, st_dtypes[i].name) == 0) {
                return (aq_st_dtype)i;
            }
        }
    }
    return AQ_ST_UNKNOWN;
}

size_t aq_st_dtype_size(aq_st_dtype dtype)
{
    return (unsigned)dtype < AQ_ST_DTYPE_COUNT ? st_dtypes[dtype].size : 0;
}

int aq_st_dtype_to_aq(aq_st_dtype dtype, aq_dtype *out)
{
    aq_dtype d;
    switch (dtype) {
    case AQ_ST_F32:
        d = AQ_DTYPE_F32;
        break;
    case AQ_ST_F16:
        d = AQ_DTYPE_F16;
        break;
    case AQ_ST_BF16:
        d = AQ_DTYPE_BF16;
        break;
    case AQ_ST_F64:
        d = AQ_DTYPE_F64;
        break;
    default:
        return 0;
    }
    if (out != NULL) {
        *out = d;
    }
    return 1;
}

/* The arena: blocks of at least ST_BLOCK bytes, freed together with the header. */
typedef struct aq__st_block {
    struct aq__st_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
} st_block;

#define ST_BLOCK ((size_t)1 << 20)

static void *stp_alloc(aq__st_header *h, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    st_block *b = h->arena;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > ST_BLOCK ? n : ST_BLOCK;
        if ((b = malloc(sizeof *b + cap)) == NULL) {
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        if (h->arena != NULL && n > ST_BLOCK) {
            /* A large string goes behind the current block, which stays open. */
            b->next = h->arena->next;
            h->arena->next = b;
            b->used = n;
            return b->data;
        }
        b->next = h->arena;
        h->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static char *stp_strdup(aq__st_header *h, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = stp_alloc(h, n);
    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

void aq__st_header_reset(aq__st_header *h)
{
    if (h == NULL) {
        return;
    }
    free(h->entries);
    free(h->meta_keys);
    free(h->meta_values);
    while (h->arena != NULL) {
        st_block *next = h->arena->next;
        free(h->arena);
        h->arena = next;
    }
    memset(h, 0, sizeof *h);
}

/* A JSON integer that must be a non-negative size; false otherwise. */
static bool stp_size(const json_t *v, size_t *out)
{
    if (!json_is_integer(v)) {
        return false;
    }
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > SIZE_MAX) {
        return false;
    }
    *out = (size_t)i;
    return true;
}

static aq_status stp_metadata(const json_t *obj, const char *label, aq__st_header *h, aq_error *err)
{
    if (!json_is_object(obj)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: \"__metadata__\" must be an object of strings", label);
    }
    size_t n = json_object_size(obj);
    h->meta_keys = calloc(n + 1, sizeof(char *));
    h->meta_values = calloc(n + 1, sizeof(char *));
    if (h->meta_keys == NULL || h->meta_values == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading metadata", label);
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (!json_is_string(value)) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "%s: \"__metadata__\" value of \"%s\" is not a string", label,
                                 key);
        }
        h->meta_keys[h->n_meta] = stp_strdup(h, key);
        h->meta_values[h->n_meta] = stp_strdup(h, json_string_value(value));
        h->n_meta++;
        if (h->meta_keys[h->n_meta - 1] == NULL || h->meta_values[h->n_meta - 1] == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading metadata", label);
        }
    }
    return AQ_OK;
}

static aq_status stp_entry(const char *key, const json_t *obj, const char *label, aq__st_header *h,
                           aq__st_entry *e, aq_error *err)
{
    if (!json_is_object(obj)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: tensor '%s': expected an object with dtype, shape and "
                             "data_offsets",
                             label, key);
    }
    if ((e->name = stp_strdup(h, key)) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", label);
    }
    const json_t *dtype = json_object_get(obj, "dtype");
    const json_t *shape = json_object_get(obj, "shape");
    const json_t *offs = json_object_get(obj, "data_offsets");
    if (!json_is_string(dtype)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: tensor '%s': \"dtype\" missing or not a string", label, key);
    }
    e->dtype = aq_st_dtype_from_name(json_string_value(dtype));
    if (e->dtype != AQ_ST_UNKNOWN) {
        e->dtype_name = (char *)st_dtypes[e->dtype].name;
    } else if ((e->dtype_name = stp_strdup(h, json_string_value(dtype))) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", label);
    }
    if (!json_is_array(shape)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: tensor '%s': \"shape\" missing or not an array", label, key);
    }
    e->ndim = json_array_size(shape);
    if (e->ndim > AQ_MAX_NDIM) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "%s: tensor '%s': %zu dimensions, at most %d supported", label, key,
                             e->ndim, AQ_MAX_NDIM);
    }
    e->shape = stp_alloc(h, (e->ndim + 1) * sizeof(int64_t));
    if (e->shape == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", label);
    }
    memset(e->shape, 0, (e->ndim + 1) * sizeof(int64_t));
    e->elements = 1;
    for (size_t d = 0; d < e->ndim; d++) {
        size_t v;
        if (!stp_size(json_array_get(shape, d), &v) || v > INT64_MAX) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "%s: tensor '%s': shape[%zu] is not a non-negative integer", label,
                                 key, d);
        }
        e->shape[d] = (int64_t)v;
        if (!aq__mul_size(e->elements, v, &e->elements)) {
            return aq__error_set(err, AQ_OVERFLOW, "%s: tensor '%s': element count overflows",
                                 label, key);
        }
    }
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !stp_size(json_array_get(offs, 0), &e->begin) ||
        !stp_size(json_array_get(offs, 1), &e->end)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: tensor '%s': \"data_offsets\" must be [begin, end], two "
                             "non-negative integers",
                             label, key);
    }
    if (e->end < e->begin) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: tensor '%s': data_offsets [%zu, %zu] end before they begin",
                             label, key, e->begin, e->end);
    }
    if (e->dtype != AQ_ST_UNKNOWN) {
        size_t bytes;
        if (!aq__mul_size(e->elements, aq_st_dtype_size(e->dtype), &bytes)) {
            return aq__error_set(err, AQ_OVERFLOW, "%s: tensor '%s': byte size overflows", label,
                                 key);
        }
        if (bytes != e->end - e->begin) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "%s: tensor '%s': data_offsets [%zu, %zu] hold %zu bytes, but "
                                 "%s x %zu elements need %zu",
                                 label, key, e->begin, e->end, e->end - e->begin, e->dtype_name,
                                 e->elements, bytes);
        }
    }
    return AQ_OK;
}

/* One member of the outer object: the metadata or a tensor. h->entries has room for it. */
static aq_status stp_member(const char *key, const json_t *value, const char *label,
                            aq__st_header *h, aq_error *err)
{
    if (strcmp(key, "__metadata__") == 0) {
        return stp_metadata(value, label, h, err);
    }
    aq__st_entry *e = &h->entries[h->n++];
    aq_status st = stp_entry(key, value, label, h, e, err);
    if (st == AQ_OK && e->end > h->data_size) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: tensor '%s': data_offsets [%zu, %zu] extend past the data "
                           "region (%zu bytes from byte %zu): truncated file or bad offsets",
                           label, key, e->begin, e->end, h->data_size, h->data_start);
    }
    return st;
}

/* The whole header as one JSON tree: the path for headers the scanner does not accept. */
static aq_status stp_parse_tree(const uint8_t *json, const char *label, aq__st_header *h,
                                aq_error *err)
{
    aq_status st = AQ_OK;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)json, h->header_size, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: header JSON is invalid at byte %zu of the file: %s", label,
                           (size_t)jerr.position + 8, jerr.text);
        goto done;
    }
    if (!json_is_object(root)) {
        st = aq__error_set(err, AQ_INVALID_DATA, "%s: header is not a JSON object", label);
        goto done;
    }
    h->entries = calloc(json_object_size(root) + 1, sizeof *h->entries);
    if (h->entries == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading the header", label);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if ((st = stp_member(key, value, label, h, err)) != AQ_OK) {
            goto done;
        }
    }
done:
    json_decref(root);
    return st;
}

/* The scanner. Each function returns the position after what it skipped, or NULL where the
 * text does not fit the outer grammar (Jansson then names the error). Strings and nested
 * values are only delimited here; Jansson checks them when it parses the member. */
static const uint8_t *scan_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end)
{
    if (p >= end || *p != '"') {
        return NULL;
    }
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const uint8_t *scan_value(const uint8_t *p, const uint8_t *end)
{
    if (p >= end) {
        return NULL;
    }
    if (*p == '"') {
        return scan_string(p, end);
    }
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            if (*p == '"') {
                if ((p = scan_string(p, end)) == NULL) {
                    return NULL;
                }
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            p++;
        }
        return NULL;
    }
    const uint8_t *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r') {
        p++;
    }
    return p > start ? p : NULL;
}

/* Walks the outer object. With emit false it only counts the members (*count); with emit true
 * it parses each member with Jansson and stores it. *fallback is set where the text does not
 * fit the grammar or a member is not valid JSON. */
static aq_status stp_scan(const uint8_t *json, const char *label, aq__st_header *h, bool emit,
                          size_t *count, bool *fallback, aq_error *err)
{
    const uint8_t *end = json + h->header_size;
    const uint8_t *p = scan_ws(json, end);
    char *buf = NULL;
    size_t buf_cap = 0;
    aq_status st = AQ_OK;
    *count = 0;
    *fallback = true;
    if (p >= end || *p != '{') {
        goto done;
    }
    p = scan_ws(p + 1, end);
    bool first = true;
    while (p < end && !(first && *p == '}')) {
        const uint8_t *key = p;
        if ((p = scan_string(p, end)) == NULL || (p = scan_ws(p, end)) >= end || *p != ':' ||
            (p = scan_value(scan_ws(p + 1, end), end)) == NULL) {
            goto done;
        }
        if (emit) {
            /* The member alone, as a one-member object. */
            size_t n = (size_t)(p - key);
            if (n + 3 > buf_cap) {
                free(buf);
                buf_cap = n + 3 > 4096 ? n + 3 : 4096;
                if ((buf = malloc(buf_cap)) == NULL) {
                    *fallback = false;
                    st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading the header",
                                       label);
                    goto done;
                }
            }
            buf[0] = '{';
            memcpy(buf + 1, key, n);
            buf[n + 1] = '}';
            json_error_t jerr;
            json_t *obj = json_loadb(buf, n + 2, JSON_REJECT_DUPLICATES, &jerr);
            void *it = obj != NULL ? json_object_iter(obj) : NULL;
            if (it == NULL ||
                (h->meta_keys != NULL && strcmp(json_object_iter_key(it), "__metadata__") == 0)) {
                json_decref(obj); /* invalid, or a second metadata object */
                goto done;
            }
            st = stp_member(json_object_iter_key(it), json_object_iter_value(it), label, h, err);
            json_decref(obj);
            if (st != AQ_OK) {
                *fallback = false;
                goto done;
            }
        }
        (*count)++;
        first = false;
        p = scan_ws(p, end);
        if (p < end && *p == ',') {
            p = scan_ws(p + 1, end);
            if (p >= end || *p != '"') {
                goto done;
            }
            continue;
        }
        break;
    }
    if (p >= end || *p != '}' || scan_ws(p + 1, end) != end) {
        goto done;
    }
    *fallback = false;
done:
    free(buf);
    return st;
}

static int stp_cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether two tensors share a name. */
static aq_status stp_has_duplicates(const aq__st_header *h, const char *label, bool *dup,
                                    aq_error *err)
{
    *dup = false;
    if (h->n < 2) {
        return AQ_OK;
    }
    const char **names = malloc(h->n * sizeof *names);
    if (names == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading the header", label);
    }
    for (size_t i = 0; i < h->n; i++) {
        names[i] = h->entries[i].name;
    }
    qsort(names, h->n, sizeof *names, stp_cmp_name);
    for (size_t i = 1; i < h->n && !*dup; i++) {
        *dup = strcmp(names[i - 1], names[i]) == 0;
    }
    free(names);
    return AQ_OK;
}

static int stp_cmp_offset(const void *a, const void *b)
{
    const aq__st_entry *x = a;
    const aq__st_entry *y = b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

aq_status aq__st_parse(const uint8_t *bytes, size_t size, const char *label, aq__st_header *out,
                       aq_error *err)
{
    aq__st_header h;
    memset(&h, 0, sizeof h);
    aq_status st = AQ_OK;
    if (size < 8) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: not a safetensors file: %zu bytes, too short for the 8-byte "
                           "header length",
                           label, size);
        goto done;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) {
        n = (n << 8) | bytes[i];
    }
    if (n > AQ_ST_MAX_HEADER_SIZE) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: not a safetensors file: header length %" PRIu64
                           " exceeds the limit of %u bytes",
                           label, n, AQ_ST_MAX_HEADER_SIZE);
        goto done;
    }
    if (n > size - 8) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: header length %" PRIu64 " is larger than the file (%zu bytes "
                           "after the length field): truncated or not a safetensors file",
                           label, n, size - 8);
        goto done;
    }
    if (n < 2 || bytes[8] != '{') {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: not a safetensors file: the header at byte 8 is not a JSON "
                           "object",
                           label);
        goto done;
    }
    h.header_size = (size_t)n;
    h.data_start = 8 + h.header_size;
    h.data_size = size - h.data_start;
    const uint8_t *json = bytes + 8;
    size_t members;
    bool fallback;
    if ((st = stp_scan(json, label, &h, false, &members, &fallback, err)) != AQ_OK) {
        goto done;
    }
    if (!fallback) {
        if ((h.entries = calloc(members + 1, sizeof *h.entries)) == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory reading the header", label);
            goto done;
        }
        if ((st = stp_scan(json, label, &h, true, &members, &fallback, err)) != AQ_OK) {
            goto done;
        }
    }
    bool dup = false;
    if (!fallback && (st = stp_has_duplicates(&h, label, &dup, err)) != AQ_OK) {
        goto done;
    }
    if (fallback || dup) {
        size_t header_size = h.header_size;
        aq__st_header_reset(&h);
        h.header_size = header_size;
        h.data_start = 8 + h.header_size;
        h.data_size = size - h.data_start;
        if ((st = stp_parse_tree(json, label, &h, err)) != AQ_OK) {
            goto done;
        }
    }
    qsort(h.entries, h.n, sizeof *h.entries, stp_cmp_offset);
    size_t expect = 0;
    for (size_t i = 0; i < h.n; i++) {
        const aq__st_entry *e = &h.entries[i];
        if (e->begin != expect) {
            if (e->begin < expect) {
                st = aq__error_set(err, AQ_INVALID_DATA,
                                   "%s: tensor '%s' (data_offsets [%zu, %zu]) overlaps tensor "
                                   "'%s' which ends at %zu",
                                   label, e->name, e->begin, e->end, h.entries[i - 1].name, expect);
            } else {
                st = aq__error_set(err, AQ_INVALID_DATA,
                                   "%s: gap in the data region: bytes [%zu, %zu) belong to no "
                                   "tensor (next is '%s')",
                                   label, expect, e->begin, e->name);
            }
            goto done;
        }
        expect = e->end;
    }
    if (expect != h.data_size) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: the tensors cover %zu bytes but the data region holds %zu "
                           "(trailing bytes after the last tensor)",
                           label, expect, h.data_size);
        goto done;
    }
    *out = h;
    memset(&h, 0, sizeof h);
done:
    aq__st_header_reset(&h);
    return st;
}
