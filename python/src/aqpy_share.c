/*
 * aqpy_share.c - sharing Arrow C structures between owners: holders of result arrays and
 * their exports, schema copies, streams over held batches, the capsules of the Arrow
 * PyCapsule interface, and joining the result batches of a stream into one.
 *
 * A result array is held once (aq__py_holder) and exported as many times as consumers ask:
 * each export is a fresh tree of nodes that borrow the held buffers and keep the holder alive,
 * so a consumer may move children out or release from any thread (C Data Interface rules).
 */
#include "aqpy.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Holders and exports                                                                        */
/* ------------------------------------------------------------------------------------------ */

struct aq__py_holder {
    atomic_size_t refs;
    struct ArrowArray array;
};

aq__py_holder *aq__py_holder_create(struct ArrowArray *array)
{
    aq__py_holder *h = malloc(sizeof *h);
    if (h == NULL) {
        if (array->release != NULL) {
            array->release(array);
        }
        return NULL;
    }
    atomic_init(&h->refs, 1);
    h->array = *array;
    array->release = NULL;
    return h;
}

void aq__py_holder_retain(aq__py_holder *h)
{
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
}

void aq__py_holder_release(aq__py_holder *h)
{
    if (h == NULL) {
        return;
    }
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) {
        if (h->array.release != NULL) {
            h->array.release(&h->array);
        }
        free(h);
    }
}

const struct ArrowArray *aq__py_holder_array(const aq__py_holder *h)
{
    return &h->array;
}

typedef struct lt_export_priv {
    aq__py_holder *holder;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *nodes;
    struct ArrowArray *dictionary;
} lt_export_priv;

static void lt_export_release(struct ArrowArray *a)
{
    lt_export_priv *p = a->private_data;
    if (p->children != NULL) {
        for (int64_t i = 0; i < a->n_children; i++) {
            if (p->children[i]->release != NULL) {
                p->children[i]->release(p->children[i]);
            }
        }
    }
    if (p->dictionary != NULL && p->dictionary->release != NULL) {
        p->dictionary->release(p->dictionary);
    }
    free(p->buffers);
    free(p->children);
    free(p->nodes);
    free(p->dictionary);
    aq__py_holder_release(p->holder);
    free(p);
    a->release = NULL;
}

static int lt_export_node(aq__py_holder *h, const struct ArrowArray *src, struct ArrowArray *dst)
{
    lt_export_priv *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    aq__py_holder_retain(h);
    p->holder = h;
    dst->length = src->length;
    dst->null_count = src->null_count;
    dst->offset = src->offset;
    dst->n_buffers = src->n_buffers;
    dst->n_children = src->n_children;
    dst->buffers = NULL;
    dst->children = NULL;
    dst->dictionary = NULL;
    dst->private_data = p;
    dst->release = lt_export_release; /* from here on, a half-built node releases cleanly */

    size_t nb = (size_t)src->n_buffers, nc = (size_t)src->n_children;
    if (nb > 0) {
        p->buffers = malloc(nb * sizeof *p->buffers);
        if (p->buffers == NULL) {
            goto fail;
        }
        memcpy(p->buffers, src->buffers, nb * sizeof *p->buffers);
        dst->buffers = p->buffers;
    }
    if (nc > 0) {
        p->nodes = calloc(nc, sizeof *p->nodes);
        p->children = malloc(nc * sizeof *p->children);
        if (p->nodes == NULL || p->children == NULL) {
            free(p->nodes);
            free(p->children);
            p->nodes = NULL;
            p->children = NULL;
            goto fail;
        }
        for (size_t i = 0; i < nc; i++) {
            p->children[i] = &p->nodes[i];
        }
        dst->children = p->children;
        for (size_t i = 0; i < nc; i++) {
            if (lt_export_node(h, src->children[i], p->children[i]) != 0) {
                goto fail;
            }
        }
    }
    if (src->dictionary != NULL) {
        p->dictionary = calloc(1, sizeof *p->dictionary);
        if (p->dictionary == NULL || lt_export_node(h, src->dictionary, p->dictionary) != 0) {
            goto fail;
        }
        dst->dictionary = p->dictionary;
    }
    return 0;
fail:
    dst->release(dst);
    return -1;
}

int aq__py_holder_export(aq__py_holder *h, struct ArrowArray *out)
{
    return lt_export_node(h, &h->array, out);
}

/* ------------------------------------------------------------------------------------------ */
/* Schema copies                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct lt_schema_priv {
    char *format;
    char *name;
    char *metadata;
    struct ArrowSchema **children;
    struct ArrowSchema *nodes;
    struct ArrowSchema *dictionary;
} lt_schema_priv;

static void lt_schema_release(struct ArrowSchema *s)
{
    lt_schema_priv *p = s->private_data;
    if (p->children != NULL) {
        for (int64_t i = 0; i < s->n_children; i++) {
            if (p->children[i]->release != NULL) {
                p->children[i]->release(p->children[i]);
            }
        }
    }
    if (p->dictionary != NULL && p->dictionary->release != NULL) {
        p->dictionary->release(p->dictionary);
    }
    free(p->format);
    free(p->name);
    free(p->metadata);
    free(p->children);
    free(p->nodes);
    free(p->dictionary);
    free(p);
    s->release = NULL;
}

/* Size in bytes of C Data Interface metadata: int32 count, then length-prefixed keys and
 * values. */
size_t aq__py_metadata_size(const char *metadata)
{
    int32_t n, len;
    size_t pos = sizeof(int32_t);
    memcpy(&n, metadata, sizeof n);
    for (int32_t i = 0; i < 2 * n; i++) {
        memcpy(&len, metadata + pos, sizeof len);
        pos += sizeof len + (size_t)len;
    }
    return pos;
}

char *aq__py_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

int aq__py_schema_copy(const struct ArrowSchema *src, struct ArrowSchema *dst)
{
    lt_schema_priv *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    memset(dst, 0, sizeof *dst);
    dst->flags = src->flags;
    dst->n_children = src->n_children;
    dst->private_data = p;
    dst->release = lt_schema_release;
    p->format = aq__py_strdup(src->format);
    if (p->format == NULL) {
        goto fail;
    }
    dst->format = p->format;
    if (src->name != NULL) {
        if ((p->name = aq__py_strdup(src->name)) == NULL) {
            goto fail;
        }
        dst->name = p->name;
    }
    if (src->metadata != NULL) {
        size_t n = aq__py_metadata_size(src->metadata);
        if ((p->metadata = malloc(n)) == NULL) {
            goto fail;
        }
        memcpy(p->metadata, src->metadata, n);
        dst->metadata = p->metadata;
    }
    size_t nc = (size_t)src->n_children;
    if (nc > 0) {
        p->nodes = calloc(nc, sizeof *p->nodes);
        p->children = malloc(nc * sizeof *p->children);
        if (p->nodes == NULL || p->children == NULL) {
            free(p->nodes);
            free(p->children);
            p->nodes = NULL;
            p->children = NULL;
            goto fail;
        }
        for (size_t i = 0; i < nc; i++) {
            p->children[i] = &p->nodes[i];
        }
        dst->children = p->children;
        for (size_t i = 0; i < nc; i++) {
            if (aq__py_schema_copy(src->children[i], p->children[i]) != 0) {
                goto fail;
            }
        }
    }
    if (src->dictionary != NULL) {
        p->dictionary = calloc(1, sizeof *p->dictionary);
        if (p->dictionary == NULL || aq__py_schema_copy(src->dictionary, p->dictionary) != 0) {
            goto fail;
        }
        dst->dictionary = p->dictionary;
    }
    return 0;
fail:
    dst->release(dst);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Streams over held batches                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct lt_stream_priv {
    struct ArrowSchema schema;
    aq__py_holder **holders;
    size_t n;
    size_t next;
} lt_stream_priv;

static int lt_stream_get_schema(struct ArrowArrayStream *s, struct ArrowSchema *out)
{
    lt_stream_priv *p = s->private_data;
    return aq__py_schema_copy(&p->schema, out) == 0 ? 0 : ENOMEM;
}

static int lt_stream_get_next(struct ArrowArrayStream *s, struct ArrowArray *out)
{
    lt_stream_priv *p = s->private_data;
    if (p->next == p->n) {
        memset(out, 0, sizeof *out); /* release == NULL: end of stream */
        return 0;
    }
    if (aq__py_holder_export(p->holders[p->next], out) != 0) {
        return ENOMEM;
    }
    p->next++;
    return 0;
}

static const char *lt_stream_get_last_error(struct ArrowArrayStream *s)
{
    (void)s;
    return "out of memory";
}

static void lt_stream_release(struct ArrowArrayStream *s)
{
    lt_stream_priv *p = s->private_data;
    if (p->schema.release != NULL) {
        p->schema.release(&p->schema);
    }
    for (size_t i = 0; i < p->n; i++) {
        aq__py_holder_release(p->holders[i]);
    }
    free(p->holders);
    free(p);
    s->release = NULL;
}

int aq__py_stream_over(const struct ArrowSchema *schema, aq__py_holder *const *holders, size_t n,
                       struct ArrowArrayStream *out)
{
    lt_stream_priv *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    if (n > 0 && (p->holders = malloc(n * sizeof *p->holders)) == NULL) {
        free(p);
        return -1;
    }
    if (aq__py_schema_copy(schema, &p->schema) != 0) {
        free(p->holders);
        free(p);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        aq__py_holder_retain(holders[i]);
        p->holders[i] = holders[i];
    }
    p->n = n;
    out->get_schema = lt_stream_get_schema;
    out->get_next = lt_stream_get_next;
    out->get_last_error = lt_stream_get_last_error;
    out->release = lt_stream_release;
    out->private_data = p;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Concatenation of result batches                                                            */
/* ------------------------------------------------------------------------------------------ */

/* A node built here: it owns its buffers and children. */
typedef struct lt_owned_priv {
    void *buffers[3];
    const void *buffer_ptrs[3];
    struct ArrowArray **children;
    struct ArrowArray *nodes;
} lt_owned_priv;

static void lt_owned_release(struct ArrowArray *a)
{
    lt_owned_priv *p = a->private_data;
    if (p->children != NULL) {
        for (int64_t i = 0; i < a->n_children; i++) {
            if (p->children[i]->release != NULL) {
                p->children[i]->release(p->children[i]);
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        free(p->buffers[i]);
    }
    free(p->children);
    free(p->nodes);
    free(p);
    a->release = NULL;
}

static int lt_owned_init(struct ArrowArray *out, int64_t length, int64_t n_buffers,
                         int64_t n_children)
{
    lt_owned_priv *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->length = length;
    out->n_buffers = n_buffers;
    out->n_children = n_children;
    out->buffers = p->buffer_ptrs;
    out->private_data = p;
    out->release = lt_owned_release;
    if (n_children > 0) {
        p->nodes = calloc((size_t)n_children, sizeof *p->nodes);
        p->children = malloc((size_t)n_children * sizeof *p->children);
        if (p->nodes == NULL || p->children == NULL) {
            out->n_children = 0; /* nothing built below yet */
            out->release(out);
            return -1;
        }
        for (int64_t i = 0; i < n_children; i++) {
            p->children[i] = &p->nodes[i];
        }
        out->children = p->children;
    }
    return 0;
}

static void *lt_owned_buffer(struct ArrowArray *a, int i, size_t bytes)
{
    lt_owned_priv *p = a->private_data;
    p->buffers[i] = malloc(bytes > 0 ? bytes : 1);
    p->buffer_ptrs[i] = p->buffers[i];
    return p->buffers[i];
}

/* A run of `len` logical elements of an array, from logical index `start`. */
typedef struct lt_slice {
    const struct ArrowArray *a;
    int64_t start;
    int64_t len;
} lt_slice;

static size_t lt_fixed_width(const char *f)
{
    if (f[0] == '\0' || f[1] != '\0') {
        return 0;
    }
    switch (f[0]) {
    case 'c':
    case 'C':
        return 1;
    case 's':
    case 'S':
    case 'e':
        return 2;
    case 'i':
    case 'I':
    case 'f':
        return 4;
    case 'l':
    case 'L':
    case 'g':
        return 8;
    default:
        return 0;
    }
}

static int64_t lt_offset_at(const void *offsets, int wide, int64_t k)
{
    return wide ? ((const int64_t *)offsets)[k] : ((const int32_t *)offsets)[k];
}

static int lt_concat_node(const struct ArrowSchema *s, const lt_slice *in, size_t n,
                          struct ArrowArray *out);

/* Offsets of n slices rebased into one buffer (buffer 1 of out); fills the child or data
 * ranges they cover into ranges[]. */
static int lt_concat_offsets(const lt_slice *in, size_t n, int wide, struct ArrowArray *out,
                             lt_slice *ranges, int64_t *total)
{
    int64_t rows = out->length, at = 0, acc = 0;
    void *off = lt_owned_buffer(out, 1, (size_t)(rows + 1) * (wide ? 8u : 4u));
    if (off == NULL) {
        return -1;
    }
    if (wide) {
        ((int64_t *)off)[0] = 0;
    } else {
        ((int32_t *)off)[0] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        const void *src = in[i].a->buffers[1];
        int64_t k0 = in[i].a->offset + in[i].start;
        int64_t base = lt_offset_at(src, wide, k0);
        for (int64_t j = 0; j <= in[i].len; j++) {
            int64_t v = acc + lt_offset_at(src, wide, k0 + j) - base;
            if (j == in[i].len && i + 1 < n) {
                break; /* the next slice writes this position */
            }
            if (wide) {
                ((int64_t *)off)[at + j] = v;
            } else {
                ((int32_t *)off)[at + j] = (int32_t)v;
            }
        }
        int64_t end = lt_offset_at(src, wide, k0 + in[i].len);
        ranges[i].a = in[i].a;
        ranges[i].start = base;
        ranges[i].len = end - base;
        acc += end - base;
        at += in[i].len;
    }
    if (!wide && acc > INT32_MAX) {
        return -2;
    }
    *total = acc;
    return 0;
}

static int lt_concat_node(const struct ArrowSchema *s, const lt_slice *in, size_t n,
                          struct ArrowArray *out)
{
    int64_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i].a->null_count != 0) {
            return -2;
        }
        rows += in[i].len;
    }
    const char *f = s->format;
    size_t w = lt_fixed_width(f);
    int rc;
    if (w > 0) {
        if (lt_owned_init(out, rows, 2, 0) != 0) {
            return -1;
        }
        uint8_t *dst = lt_owned_buffer(out, 1, (size_t)rows * w);
        if (dst == NULL) {
            out->release(out);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = in[i].a->buffers[1];
            size_t bytes = (size_t)in[i].len * w;
            if (bytes > 0) {
                memcpy(dst, src + (size_t)(in[i].a->offset + in[i].start) * w, bytes);
            }
            dst += bytes;
        }
        return 0;
    }
    int is_bytes =
        strcmp(f, "u") == 0 || strcmp(f, "z") == 0 || strcmp(f, "U") == 0 || strcmp(f, "Z") == 0;
    int is_list = strcmp(f, "+l") == 0 || strcmp(f, "+L") == 0;
    if (is_bytes || is_list) {
        int wide = f[0] == 'U' || f[0] == 'Z' || strcmp(f, "+L") == 0;
        lt_slice *ranges = malloc((n > 0 ? n : 1) * sizeof *ranges);
        int64_t total = 0;
        if (ranges == NULL) {
            return -1;
        }
        if (lt_owned_init(out, rows, is_bytes ? 3 : 2, is_bytes ? 0 : 1) != 0) {
            free(ranges);
            return -1;
        }
        rc = lt_concat_offsets(in, n, wide, out, ranges, &total);
        if (rc == 0 && is_bytes) {
            uint8_t *dst = lt_owned_buffer(out, 2, (size_t)total);
            if (dst == NULL) {
                rc = -1;
            }
            for (size_t i = 0; rc == 0 && i < n; i++) {
                if (ranges[i].len > 0) {
                    memcpy(dst, (const uint8_t *)in[i].a->buffers[2] + ranges[i].start,
                           (size_t)ranges[i].len);
                }
                dst += ranges[i].len;
            }
        } else if (rc == 0) {
            for (size_t i = 0; i < n; i++) {
                ranges[i].a = in[i].a->children[0];
            }
            rc = lt_concat_node(s->children[0], ranges, n, out->children[0]);
        }
        free(ranges);
        if (rc != 0) {
            out->release(out);
        }
        return rc;
    }
    if (strcmp(f, "+s") == 0) {
        lt_slice *kids = malloc((n > 0 ? n : 1) * sizeof *kids);
        if (kids == NULL) {
            return -1;
        }
        if (lt_owned_init(out, rows, 1, s->n_children) != 0) {
            free(kids);
            return -1;
        }
        rc = 0;
        for (int64_t c = 0; rc == 0 && c < s->n_children; c++) {
            for (size_t i = 0; i < n; i++) {
                kids[i].a = in[i].a->children[c];
                kids[i].start = in[i].a->offset + in[i].start;
                kids[i].len = in[i].len;
            }
            rc = lt_concat_node(s->children[c], kids, n, out->children[c]);
        }
        free(kids);
        if (rc != 0) {
            out->release(out);
        }
        return rc;
    }
    return -2;
}

int aq__py_concat(const struct ArrowSchema *schema, aq__py_holder *const *holders, size_t n,
                  struct ArrowArray *out)
{
    lt_slice *in = malloc((n > 0 ? n : 1) * sizeof *in);
    if (in == NULL) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        in[i].a = aq__py_holder_array(holders[i]);
        in[i].start = 0;
        in[i].len = in[i].a->length;
    }
    int rc = lt_concat_node(schema, in, n, out);
    free(in);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Capsules                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* A capsule owns a heap copy of a C Data Interface struct: the caller's struct is moved into
 * it (marked released), and the capsule's destructor releases the copy unless a consumer has
 * moved it out. The three struct types share this code through one definition each. */
#define LT_CAPSULE(kind, type, capname)                                         \
    static void lt_##kind##_capsule_free(PyObject *cap)                         \
    {                                                                           \
        type *x = PyCapsule_GetPointer(cap, capname);                           \
        if (x != NULL && x->release != NULL) {                                  \
            x->release(x);                                                      \
        }                                                                       \
        free(x);                                                                \
    }                                                                           \
    PyObject *aq__py_##kind##_capsule(type *src)                                \
    {                                                                           \
        type *heap = malloc(sizeof *heap);                                      \
        if (heap == NULL) {                                                     \
            src->release(src);                                                  \
            return PyErr_NoMemory();                                            \
        }                                                                       \
        *heap = *src;                                                           \
        src->release = NULL;                                                    \
        PyObject *cap = PyCapsule_New(heap, capname, lt_##kind##_capsule_free); \
        if (cap == NULL) {                                                      \
            heap->release(heap);                                                \
            free(heap);                                                         \
        }                                                                       \
        return cap;                                                             \
    }

LT_CAPSULE(schema, struct ArrowSchema, AQPY_CAPSULE_SCHEMA)
LT_CAPSULE(array, struct ArrowArray, AQPY_CAPSULE_ARRAY)
LT_CAPSULE(stream, struct ArrowArrayStream, AQPY_CAPSULE_STREAM)

PyObject *aq__py_exc_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void aq__py_exc_raise(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}
