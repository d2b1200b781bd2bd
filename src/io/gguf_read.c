/*
 * GGUF reader (docs/gguf.md). The whole header (metadata and tensor table) is parsed and
 * checked when a file is opened, so that every later access is in bounds: each read is
 * checked against the bytes left, and each tensor's data against the alignment and the end of
 * the file. Messages name the file, the byte offset and the key or tensor being read.
 */
#include "gguf_internal.h"
#include "kernels_ggml.h"
#include "quant_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Nested arrays deeper than this are refused (a stack bound for hostile files). */
#define GR_MAX_DEPTH 8
/* Items of an array rendered in its text value. */
#define GR_SHOW_ITEMS 8

static const char *const gr_type_names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                            "int32",  "float32", "bool",   "string", "array",
                                            "uint64", "int64",   "float64"};

const char *aq__gguf_value_type_name(uint32_t t)
{
    return t < sizeof gr_type_names / sizeof gr_type_names[0] ? gr_type_names[t] : "unknown";
}

/* Size of a scalar value type; 0 for string, array and unknown types. */
size_t aq__gguf_value_size(uint32_t t)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sizes / sizeof sizes[0] ? sizes[t] : 0;
}

typedef struct gr_cur {
    const uint8_t *p;
    size_t size;
    size_t off;
    const char *label;
    const char *what; /* "key 'K'" or "tensor 'T'" being read, for messages; may be "" */
    aq_error *err;
} gr_cur;

static aq_status gr_fail(gr_cur *c, aq_status code, const char *fmt, ...) AQ__PRINTF(3, 4);

static aq_status gr_fail(gr_cur *c, aq_status code, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return aq__error_set(c->err, code, "%s: byte %zu%s%s: %s", c->label, c->off,
                         c->what[0] != '\0' ? ", " : "", c->what, msg);
}

static aq_status gr_need(gr_cur *c, size_t n, const char *thing)
{
    if (c->size - c->off < n) {
        return gr_fail(c, AQ_INVALID_DATA, "truncated: %s needs %zu bytes, %zu left", thing, n,
                       c->size - c->off);
    }
    return AQ_OK;
}

static uint64_t gr_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < n; k++) {
        v |= (uint64_t)p[k] << (8 * k);
    }
    return v;
}

static aq_status gr_u32(gr_cur *c, uint32_t *v, const char *thing)
{
    aq_status st = gr_need(c, 4, thing);
    if (st == AQ_OK) {
        *v = (uint32_t)gr_le(c->p + c->off, 4);
        c->off += 4;
    }
    return st;
}

static aq_status gr_u64(gr_cur *c, uint64_t *v, const char *thing)
{
    aq_status st = gr_need(c, 8, thing);
    if (st == AQ_OK) {
        *v = gr_le(c->p + c->off, 8);
        c->off += 8;
    }
    return st;
}

/* A string: its bytes stay in the buffer (*s, *len). */
static aq_status gr_str(gr_cur *c, const uint8_t **s, size_t *len, const char *thing)
{
    uint64_t n;
    aq_status st = gr_u64(c, &n, thing);
    if (st != AQ_OK) {
        return st;
    }
    if (n > c->size - c->off) {
        c->off -= 8;
        return gr_fail(c, AQ_INVALID_DATA, "%s of %" PRIu64 " bytes runs past the end (%zu left)",
                       thing, n, c->size - c->off - 8);
    }
    *s = c->p + c->off;
    *len = (size_t)n;
    c->off += (size_t)n;
    return AQ_OK;
}

static char *gr_strndup(const uint8_t *s, size_t n)
{
    char *r = malloc(n + 1);
    if (r != NULL) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

/* A growing text buffer for rendered values. */
typedef struct gr_text {
    char *buf;
    size_t len, cap;
} gr_text;

static bool gr_text_add(gr_text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap == 0 ? 64 : t->cap;
        while (cap < t->len + n + 1) {
            cap *= 2;
        }
        char *b = realloc(t->buf, cap);
        if (b == NULL) {
            return false;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
    return true;
}

static bool gr_text_fmt(gr_text *t, const char *fmt, ...) AQ__PRINTF(2, 3);

static bool gr_text_fmt(gr_text *t, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return k >= 0 && gr_text_add(t, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

static bool gr_scalar_text(gr_text *t, uint32_t type, const uint8_t *p)
{
    uint64_t u = gr_le(p, (unsigned)aq__gguf_value_size(type));
    switch (type) {
    case 0:
    case 2:
    case 4:
    case 10:
        return gr_text_fmt(t, "%" PRIu64, u);
    case 1:
        return gr_text_fmt(t, "%d", (int)(int8_t)u);
    case 3:
        return gr_text_fmt(t, "%d", (int)(int16_t)u);
    case 5:
        return gr_text_fmt(t, "%" PRId32, (int32_t)(uint32_t)u);
    case 11:
        return gr_text_fmt(t, "%" PRId64, (int64_t)u);
    case 6:
        return gr_text_fmt(t, "%.9g", (double)aq__f32_from_bits((uint32_t)u));
    case 7:
        return gr_text_fmt(t, "%s", u != 0 ? "true" : "false");
    default: {
        double d;
        memcpy(&d, &u, 8);
        return gr_text_fmt(t, "%.17g", d);
    }
    }
}

/* Reads (and, when t is not NULL, renders) one value of type `type`. */
static aq_status gr_value(gr_cur *c, uint32_t type, gr_text *t, unsigned depth)
{
    aq_status st;
    if (type == 8) {
        const uint8_t *s;
        size_t n;
        if ((st = gr_str(c, &s, &n, "string value")) != AQ_OK) {
            return st;
        }
        if (t != NULL && !gr_text_add(t, (const char *)s, n)) {
            return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
        }
        return AQ_OK;
    }
    if (type == 9) {
        if (depth >= GR_MAX_DEPTH) {
            return gr_fail(c, AQ_INVALID_DATA, "arrays nested deeper than %d", GR_MAX_DEPTH);
        }
        uint32_t et;
        uint64_t n;
        if ((st = gr_u32(c, &et, "array item type")) != AQ_OK) {
            return st;
        }
        if (et > 12) {
            c->off -= 4;
            return gr_fail(c, AQ_INVALID_DATA, "unknown array item type %" PRIu32 " (known: 0..12)",
                           et);
        }
        if ((st = gr_u64(c, &n, "array length")) != AQ_OK) {
            return st;
        }
        const size_t es = aq__gguf_value_size(et);
        /* Every item takes at least one byte (strings 8, arrays 12). */
        const uint64_t min_item = es != 0 ? es : (et == 8 ? 8u : 12u);
        if (n > (c->size - c->off) / min_item) {
            c->off -= 8;
            return gr_fail(c, AQ_INVALID_DATA,
                           "array of %" PRIu64 " %s items runs past the end (%zu bytes left)", n,
                           aq__gguf_value_type_name(et), c->size - c->off - 8);
        }
        if (t != NULL && !gr_text_fmt(t, "[%s; %" PRIu64 "]", aq__gguf_value_type_name(et), n)) {
            return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
        }
        if (es != 0) {
            for (uint64_t k = 0; t != NULL && k < n && k < GR_SHOW_ITEMS; k++) {
                if (!gr_text_add(t, k == 0 ? " " : ", ", k == 0 ? 1 : 2) ||
                    !gr_scalar_text(t, et, c->p + c->off + k * es)) {
                    return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
                }
            }
            c->off += (size_t)(n * es);
            return AQ_OK;
        }
        for (uint64_t k = 0; k < n; k++) {
            gr_text *sub = NULL;
            if (t != NULL && k < GR_SHOW_ITEMS && et == 8) {
                if (!gr_text_add(t, k == 0 ? " " : ", ", k == 0 ? 1 : 2)) {
                    return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
                }
                sub = t;
            }
            if ((st = gr_value(c, et, sub, depth + 1)) != AQ_OK) {
                return st;
            }
        }
        return AQ_OK;
    }
    const size_t size = aq__gguf_value_size(type);
    if (size == 0) {
        return gr_fail(c, AQ_INVALID_DATA, "unknown value type %" PRIu32 " (known: 0..12)", type);
    }
    if ((st = gr_need(c, size, aq__gguf_value_type_name(type))) != AQ_OK) {
        return st;
    }
    if (t != NULL && !gr_scalar_text(t, type, c->p + c->off)) {
        return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
    }
    c->off += size;
    return AQ_OK;
}

static int gr_name_cmp(const void *a, const void *b)
{
    const aq_gguf_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void aq__gguf_reset(aq_gguf *g)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        free((char *)g->tensors[i].name);
    }
    for (size_t i = 0; i < g->n_meta; i++) {
        free(g->meta[i].key);
        free(g->meta[i].value);
    }
    free(g->tensors);
    free(g->meta);
    g->tensors = NULL;
    g->meta = NULL;
    g->n_tensors = g->n_meta = 0;
}

/* The header: magic, version and the two counts (checked against the file size), and the
 * tables allocated for them. */
static aq_status gr_header(gr_cur *c, aq_gguf *g, uint64_t *n_tensors, uint64_t *n_kv)
{
    aq_status st;
    if ((st = gr_need(c, 4, "the magic")) != AQ_OK) {
        return st;
    }
    if (memcmp(c->p, "GGUF", 4) != 0) {
        return gr_fail(c, AQ_INVALID_DATA, "not a GGUF file (expected the magic \"GGUF\")");
    }
    c->off = 4;
    uint32_t version;
    if ((st = gr_u32(c, &version, "the version")) != AQ_OK) {
        return st;
    }
    if (version != 2 && version != 3) {
        c->off -= 4;
        return gr_fail(c, AQ_UNSUPPORTED, "GGUF version %" PRIu32 " (2 and 3 are read)", version);
    }
    if ((st = gr_u64(c, n_tensors, "the tensor count")) != AQ_OK ||
        (st = gr_u64(c, n_kv, "the metadata count")) != AQ_OK) {
        return st;
    }
    /* A metadata entry takes at least 8 + 4 + 1 bytes, a tensor entry 8 + 4 + 4 + 8. */
    if (*n_kv > (c->size - c->off) / 13 || *n_tensors > (c->size - c->off) / 24) {
        c->off -= 16;
        return gr_fail(c, AQ_INVALID_DATA,
                       "%" PRIu64 " tensors and %" PRIu64 " metadata entries cannot fit in %zu "
                       "bytes",
                       *n_tensors, *n_kv, c->size);
    }
    g->version = version;
    g->alignment = 32;
    if ((g->meta = calloc((size_t)*n_kv + 1, sizeof *g->meta)) == NULL ||
        (g->tensors = calloc((size_t)*n_tensors + 1, sizeof *g->tensors)) == NULL) {
        return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
    }
    return AQ_OK;
}

/* general.alignment, from the value of metadata entry m. */
static aq_status gr_alignment(gr_cur *c, const aq__gguf_meta *m, aq_gguf *g)
{
    uint64_t a = 0;
    if (m->type == 4) {
        a = gr_le(c->p + m->value_off, 4);
    } else if (m->type == 10) {
        a = gr_le(c->p + m->value_off, 8);
    } else {
        c->off = m->value_off;
        return gr_fail(c, AQ_INVALID_DATA, "general.alignment must be a uint32, not %s",
                       aq__gguf_value_type_name(m->type));
    }
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 20)) {
        c->off = m->value_off;
        return gr_fail(c, AQ_INVALID_DATA,
                       "alignment %" PRIu64 " is not a power of two up to 1 MiB", a);
    }
    g->alignment = (size_t)a;
    return AQ_OK;
}

/* Metadata entry i: its key, type and value (as text in g->meta). what (320 bytes) names the
 * entry in messages. */
static aq_status gr_meta_entry(gr_cur *c, uint64_t i, char *what, gr_text *text, aq_gguf *g)
{
    aq_status st;
    const uint8_t *k;
    size_t klen;
    snprintf(what, 320, "metadata entry %" PRIu64, i);
    c->what = what;
    if ((st = gr_str(c, &k, &klen, "key")) != AQ_OK) {
        return st;
    }
    aq__gguf_meta *m = &g->meta[g->n_meta];
    if ((m->key = gr_strndup(k, klen)) == NULL) {
        return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
    }
    g->n_meta++;
    snprintf(what, 320, "key '%.200s'", m->key);
    uint32_t type;
    if ((st = gr_u32(c, &type, "value type")) != AQ_OK) {
        return st;
    }
    if (type > 12) {
        c->off -= 4;
        return gr_fail(c, AQ_INVALID_DATA, "unknown value type %" PRIu32 " (known: 0..12)", type);
    }
    m->type = type;
    m->value_off = c->off;
    text->len = 0;
    if ((st = gr_value(c, type, text, 0)) != AQ_OK) {
        return st;
    }
    if ((m->value = gr_strndup((const uint8_t *)(text->buf != NULL ? text->buf : ""), text->len)) ==
        NULL) {
        return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
    }
    if (strcmp(m->key, "general.alignment") == 0) {
        return gr_alignment(c, m, g);
    }
    return AQ_OK;
}

/* The dimensions of a tensor entry (ggml's order, innermost first) and their product. */
static aq_status gr_dims(gr_cur *c, uint32_t *nd, uint64_t *ne, uint64_t *elements)
{
    aq_status st;
    if ((st = gr_u32(c, nd, "dimension count")) != AQ_OK) {
        return st;
    }
    if (*nd == 0 || *nd > 4) {
        c->off -= 4;
        return gr_fail(c, AQ_INVALID_DATA, "%" PRIu32 " dimensions (ggml has 1 to 4)", *nd);
    }
    *elements = 1;
    for (uint32_t d = 0; d < *nd; d++) {
        if ((st = gr_u64(c, &ne[d], "dimension")) != AQ_OK) {
            return st;
        }
        if (ne[d] > (uint64_t)INT64_MAX || (ne[d] != 0 && *elements > UINT64_MAX / ne[d])) {
            c->off -= 8;
            return gr_fail(c, AQ_INVALID_DATA,
                           "dimension %" PRIu32 " of %" PRIu64 " overflows the element count", d,
                           ne[d]);
        }
        *elements *= ne[d];
    }
    return AQ_OK;
}

/* Tensor entry i: name, shape, type and (relative) data offset into g->tensors. */
static aq_status gr_tensor_entry(gr_cur *c, uint64_t i, char *what, aq_gguf *g)
{
    aq_status st;
    const uint8_t *nm;
    size_t nlen;
    snprintf(what, 320, "tensor %" PRIu64, i);
    c->what = what;
    if ((st = gr_str(c, &nm, &nlen, "name")) != AQ_OK) {
        return st;
    }
    aq_gguf_tensor *t = &g->tensors[g->n_tensors];
    if ((t->name = gr_strndup(nm, nlen)) == NULL) {
        return aq__error_set(c->err, AQ_NO_MEMORY, "%s: out of memory", c->label);
    }
    g->n_tensors++;
    snprintf(what, 320, "tensor '%.200s'", t->name);
    uint32_t nd = 0;
    uint64_t ne[4] = {0}, elements = 0;
    if ((st = gr_dims(c, &nd, ne, &elements)) != AQ_OK) {
        return st;
    }
    uint32_t type;
    if ((st = gr_u32(c, &type, "type")) != AQ_OK) {
        return st;
    }
    const aq__ggml_traits *tr = aq__gguf_traits(type);
    if (tr == NULL) {
        c->off -= 4;
        return gr_fail(c, AQ_UNSUPPORTED,
                       "tensor type %" PRIu32 " is not one this library "
                       "reads (see docs/gguf.md)",
                       type);
    }
    if (ne[0] % tr->block != 0) {
        c->off -= 4;
        return gr_fail(c, AQ_INVALID_DATA,
                       "innermost dimension %" PRIu64 " is not a multiple of %s's block of %u",
                       ne[0], tr->name, tr->block);
    }
    uint64_t offset;
    if ((st = gr_u64(c, &offset, "data offset")) != AQ_OK) {
        return st;
    }
    const uint64_t blocks = elements / tr->block;
    if (elements > SIZE_MAX || blocks > UINT64_MAX / tr->bytes) {
        c->off -= 8;
        return gr_fail(c, AQ_INVALID_DATA, "size overflows");
    }
    t->type = (aq_gguf_type)type;
    t->ndim = nd;
    for (uint32_t d = 0; d < nd; d++) {
        t->shape[d] = (int64_t)ne[nd - 1 - d];
    }
    t->elements = (size_t)elements;
    t->nbytes = (size_t)(blocks * tr->bytes);
    t->offset = offset; /* relative until the data start is known */
    return AQ_OK;
}

/* The data section (aligned after the tables) and each tensor's place in it, checked against
 * the alignment and the end of the file. */
static aq_status gr_place_data(gr_cur *c, aq_gguf *g)
{
    c->what = "";
    const size_t data_start =
        c->off % g->alignment == 0 ? c->off : c->off + (g->alignment - c->off % g->alignment);
    if (g->n_tensors > 0 && data_start > c->size) {
        return gr_fail(c, AQ_INVALID_DATA,
                       "truncated: the data section starts at byte %zu past "
                       "the end of the file (%zu bytes)",
                       data_start, c->size);
    }
    g->data_start = data_start;
    for (size_t i = 0; i < g->n_tensors; i++) {
        aq_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0) {
            return aq__error_set(c->err, AQ_INVALID_DATA,
                                 "%s: tensor '%s': data offset %" PRIu64 " (byte %" PRIu64
                                 ") is not a multiple of the alignment %zu",
                                 c->label, t->name, t->offset, (uint64_t)data_start + t->offset,
                                 g->alignment);
        }
        if (t->offset > c->size - data_start || t->nbytes > c->size - data_start - t->offset) {
            return aq__error_set(c->err, AQ_INVALID_DATA,
                                 "%s: tensor '%s': data of %zu bytes at byte %" PRIu64
                                 " runs past the end of the file (%zu bytes)",
                                 c->label, t->name, t->nbytes, (uint64_t)data_start + t->offset,
                                 c->size);
        }
        t->offset += data_start;
        t->data = c->p + t->offset;
    }
    return AQ_OK;
}

/* ComfyUI-GGUF's convention for tensors of more dimensions than ggml has (or reshaped ones):
 * the true shape, outermost first, as an int32 array under "comfy.gguf.orig_shape.NAME". */
static aq_status gr_orig_shapes(gr_cur *c, aq_gguf *g)
{
    static const char orig[] = "comfy.gguf.orig_shape.";
    for (size_t i = 0; i < g->n_meta; i++) {
        const aq__gguf_meta *m = &g->meta[i];
        size_t ti;
        if (strncmp(m->key, orig, sizeof orig - 1) != 0 ||
            !aq_gguf_find(g, m->key + sizeof orig - 1, &ti)) {
            continue;
        }
        aq_gguf_tensor *t = &g->tensors[ti];
        const uint8_t *v = c->p + m->value_off;
        const uint64_t n = m->type == 9 ? gr_le(v + 4, 8) : 0;
        uint64_t prod = 1;
        bool ok = m->type == 9 && gr_le(v, 4) == 5 && n >= 1 && n <= AQ_MAX_NDIM;
        for (uint64_t d = 0; ok && d < n; d++) {
            const int32_t dim = (int32_t)(uint32_t)gr_le(v + 12 + 4 * d, 4);
            ok = dim >= 0 && (dim == 0 || prod <= UINT64_MAX / (uint64_t)dim);
            prod *= ok ? (uint64_t)dim : 1u;
        }
        if (!ok || prod != t->elements) {
            c->off = m->value_off;
            c->what = "";
            return gr_fail(c, AQ_INVALID_DATA,
                           "key '%.200s' is not an int32 array of up to %d dimensions holding "
                           "the %zu elements of tensor '%.200s'",
                           m->key, AQ_MAX_NDIM, t->elements, t->name);
        }
        t->ndim = (size_t)n;
        for (uint64_t d = 0; d < n; d++) {
            t->shape[d] = (int32_t)(uint32_t)gr_le(v + 12 + 4 * d, 4);
        }
    }
    return AQ_OK;
}

/* Every tensor name once. */
static aq_status gr_unique_names(const aq_gguf *g, const char *label, aq_error *err)
{
    if (g->n_tensors < 2) {
        return AQ_OK;
    }
    const aq_gguf_tensor **sorted = malloc(g->n_tensors * sizeof *sorted);
    if (sorted == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", label);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        sorted[i] = &g->tensors[i];
    }
    qsort(sorted, g->n_tensors, sizeof *sorted, gr_name_cmp);
    aq_status st = AQ_OK;
    for (size_t i = 1; i < g->n_tensors && st == AQ_OK; i++) {
        if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0) {
            st = aq__error_set(err, AQ_INVALID_DATA,
                               "%s: tensor '%s' appears twice in the tensor table", label,
                               sorted[i]->name);
        }
    }
    free(sorted);
    return st;
}

aq_status aq__gguf_parse(const uint8_t *p, size_t size, const char *label, aq_gguf *g,
                         aq_error *err)
{
    gr_cur c = {.p = p, .size = size, .off = 0, .label = label, .what = "", .err = err};
    char what[320];
    gr_text text = {0};
    uint64_t n_tensors, n_kv;
    aq_status st = gr_header(&c, g, &n_tensors, &n_kv);
    for (uint64_t i = 0; st == AQ_OK && i < n_kv; i++) {
        st = gr_meta_entry(&c, i, what, &text, g);
    }
    for (uint64_t i = 0; st == AQ_OK && i < n_tensors; i++) {
        st = gr_tensor_entry(&c, i, what, g);
    }
    if (st == AQ_OK) {
        st = gr_place_data(&c, g);
    }
    if (st == AQ_OK) {
        st = gr_orig_shapes(&c, g);
    }
    if (st == AQ_OK) {
        st = gr_unique_names(g, label, err);
    }
    free(text.buf);
    return st;
}
