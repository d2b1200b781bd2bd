/* Test-only Arrow builder (see arrow_builder.h). Aborts on out-of-memory: tests only. */
#include "arrow_builder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *tb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "arrow_builder: out of memory\n");
        abort();
    }
    return p;
}

static char *tb_strdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = tb_xcalloc(strlen(s) + 1, 1);
    memcpy(d, s, strlen(s));
    return d;
}

/* ---- schema nodes ---- */

typedef struct tb_schema_priv {
    char *format, *name, *metadata;
    int64_t n_children;
    struct ArrowSchema **children;
} tb_schema_priv;

static void tb_schema_release(struct ArrowSchema *s)
{
    tb_schema_priv *p = s->private_data;
    for (int64_t i = 0; i < p->n_children; i++) {
        if (p->children[i]->release != NULL) {
            p->children[i]->release(p->children[i]);
        }
        free(p->children[i]);
    }
    free(p->children);
    free(p->format);
    free(p->name);
    free(p->metadata);
    free(p);
    s->release = NULL;
}

static struct ArrowSchema *tb_schema_new(const char *format, const char *name, int64_t flags,
                                         int64_t n_children)
{
    struct ArrowSchema *s = tb_xcalloc(1, sizeof *s);
    tb_schema_priv *p = tb_xcalloc(1, sizeof *p);
    p->format = tb_strdup(format);
    p->name = tb_strdup(name);
    p->n_children = n_children;
    p->children = tb_xcalloc((size_t)n_children, sizeof *p->children);
    s->format = p->format;
    s->name = p->name;
    s->flags = flags;
    s->n_children = n_children;
    s->children = p->children;
    s->release = tb_schema_release;
    s->private_data = p;
    return s;
}

/* ---- array nodes ---- */

typedef struct tb_array_priv {
    int64_t n_buffers;
    void **owned; /* what to free, independent of array->buffers */
    const void **buffers;
    int64_t n_children;
    struct ArrowArray **children;
} tb_array_priv;

static void tb_array_release(struct ArrowArray *a)
{
    tb_array_priv *p = a->private_data;
    for (int64_t i = 0; i < p->n_children; i++) {
        if (p->children[i]->release != NULL) {
            p->children[i]->release(p->children[i]);
        }
        free(p->children[i]);
    }
    for (int64_t i = 0; i < p->n_buffers; i++) {
        free(p->owned[i]);
    }
    free(p->owned);
    free(p->buffers);
    free(p->children);
    free(p);
    a->release = NULL;
}

static struct ArrowArray *tb_array_new(int64_t length, int64_t n_buffers, int64_t n_children)
{
    struct ArrowArray *a = tb_xcalloc(1, sizeof *a);
    tb_array_priv *p = tb_xcalloc(1, sizeof *p);
    p->n_buffers = n_buffers;
    p->owned = tb_xcalloc((size_t)n_buffers, sizeof *p->owned);
    p->buffers = tb_xcalloc((size_t)n_buffers, sizeof *p->buffers);
    p->n_children = n_children;
    p->children = tb_xcalloc((size_t)n_children, sizeof *p->children);
    a->length = length;
    a->n_buffers = n_buffers;
    a->buffers = p->buffers;
    a->n_children = n_children;
    a->children = p->children;
    a->release = tb_array_release;
    a->private_data = p;
    return a;
}

/* Buffer i: a copy of bytes (or zeroes when src is NULL), 8-byte aligned by malloc. */
static void *tb_buffer(struct ArrowArray *a, int64_t i, const void *src, size_t bytes)
{
    tb_array_priv *p = a->private_data;
    void *b = tb_xcalloc(bytes + 8, 1);
    if (src != NULL) {
        memcpy(b, src, bytes);
    }
    p->owned[i] = b;
    p->buffers[i] = b;
    return b;
}

static void tb_validity(struct ArrowArray *a, const uint8_t *valid, int64_t n)
{
    if (valid == NULL) {
        return;
    }
    uint8_t *bits = tb_buffer(a, 0, NULL, (size_t)(n + 7) / 8);
    int64_t nulls = 0;
    for (int64_t i = 0; i < n; i++) {
        if (valid[i]) {
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
        } else {
            nulls++;
        }
    }
    a->null_count = nulls;
}

tb_node tb_prim(const char *format, const char *name, const void *values, size_t elem_size,
                int64_t n, const uint8_t *valid)
{
    tb_node node = {tb_schema_new(format, name, ARROW_FLAG_NULLABLE, 0), tb_array_new(n, 2, 0)};
    tb_validity(node.a, valid, n);
    tb_buffer(node.a, 1, values, elem_size * (size_t)n);
    return node;
}

tb_node tb_strings(const char *format, const char *name, const char *const *values,
                   const size_t *lens, int64_t n)
{
    tb_node node = {tb_schema_new(format, name, ARROW_FLAG_NULLABLE, 0), tb_array_new(n, 3, 0)};
    bool large = format[0] == 'U' || format[0] == 'Z';
    uint8_t *valid = tb_xcalloc((size_t)n, 1);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        valid[i] = values[i] != NULL;
        total += values[i] == NULL ? 0 : (lens != NULL ? lens[i] : strlen(values[i]));
    }
    tb_validity(node.a, valid, n);
    if (node.a->null_count == 0) {
        tb_array_priv *p = node.a->private_data;
        free(p->owned[0]);
        p->owned[0] = NULL;
        p->buffers[0] = NULL;
    }
    free(valid);
    char *data = tb_buffer(node.a, 2, NULL, total);
    void *offs = tb_buffer(node.a, 1, NULL, (size_t)(n + 1) * (large ? 8 : 4));
    size_t at = 0;
    for (int64_t i = 0; i <= n; i++) {
        if (large) {
            ((int64_t *)offs)[i] = (int64_t)at;
        } else {
            ((int32_t *)offs)[i] = (int32_t)at;
        }
        if (i < n && values[i] != NULL) {
            size_t len = lens != NULL ? lens[i] : strlen(values[i]);
            memcpy(data + at, values[i], len);
            at += len;
        }
    }
    return node;
}

tb_node tb_views(const char *format, const char *name, const char *const *values,
                 const size_t *lens, int64_t n)
{
    /* validity, views, two data buffers, variadic sizes */
    tb_node node = {tb_schema_new(format, name, ARROW_FLAG_NULLABLE, 0), tb_array_new(n, 5, 0)};
    uint8_t *valid = tb_xcalloc((size_t)n, 1);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        valid[i] = values[i] != NULL;
        total += values[i] == NULL ? 0 : (lens != NULL ? lens[i] : strlen(values[i]));
    }
    tb_validity(node.a, valid, n);
    free(valid);
    uint8_t *views = tb_buffer(node.a, 1, NULL, (size_t)n * 16);
    char *bufs[2] = {tb_buffer(node.a, 2, NULL, total), tb_buffer(node.a, 3, NULL, total)};
    int64_t *sizes = tb_buffer(node.a, 4, NULL, 16);
    for (int64_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }
        int32_t len = (int32_t)(lens != NULL ? lens[i] : strlen(values[i]));
        uint8_t *v = views + i * 16;
        memcpy(v, &len, 4);
        if (len <= 12) {
            memcpy(v + 4, values[i], (size_t)len);
        } else {
            int32_t b = (int32_t)(i % 2); /* alternate buffers */
            int32_t off = (int32_t)sizes[b];
            memcpy(v + 4, values[i], 4);
            memcpy(v + 8, &b, 4);
            memcpy(v + 12, &off, 4);
            memcpy(bufs[b] + off, values[i], (size_t)len);
            sizes[b] += len;
        }
    }
    return node;
}

tb_node tb_list(const char *format, const char *name, tb_node child, const int64_t *lengths,
                int64_t n, const uint8_t *valid)
{
    bool fixed = format[1] == 'w';
    tb_node node = {tb_schema_new(format, name, ARROW_FLAG_NULLABLE, 1),
                    tb_array_new(n, fixed ? 1 : 2, 1)};
    node.s->children[0] = child.s;
    node.a->children[0] = child.a;
    tb_validity(node.a, valid, n);
    if (!fixed) {
        bool large = format[1] == 'L';
        void *offs = tb_buffer(node.a, 1, NULL, (size_t)(n + 1) * (large ? 8 : 4));
        int64_t at = 0;
        for (int64_t i = 0; i <= n; i++) {
            if (large) {
                ((int64_t *)offs)[i] = at;
            } else {
                ((int32_t *)offs)[i] = (int32_t)at;
            }
            if (i < n) {
                at += lengths[i];
            }
        }
    }
    return node;
}

tb_node tb_null(const char *name, int64_t n)
{
    tb_node node = {tb_schema_new("n", name, ARROW_FLAG_NULLABLE, 0), tb_array_new(n, 0, 0)};
    node.a->null_count = n;
    return node;
}

tb_node tb_struct(const char *name, tb_node *children, int64_t n_children, int64_t length)
{
    tb_node node = {tb_schema_new("+s", name, 0, n_children), tb_array_new(length, 1, n_children)};
    for (int64_t i = 0; i < n_children; i++) {
        node.s->children[i] = children[i].s;
        node.a->children[i] = children[i].a;
    }
    return node;
}

void tb_set_metadata(tb_node node, const char *const *keys, const char *const *values, int n)
{
    size_t total = 4;
    for (int i = 0; i < n; i++) {
        total += 8 + strlen(keys[i]) + strlen(values[i]);
    }
    char *m = tb_xcalloc(total, 1);
    char *w = m;
    int32_t v = n;
    memcpy(w, &v, 4);
    w += 4;
    for (int i = 0; i < n; i++) {
        v = (int32_t)strlen(keys[i]);
        memcpy(w, &v, 4);
        memcpy(w + 4, keys[i], (size_t)v);
        w += 4 + v;
        v = (int32_t)strlen(values[i]);
        memcpy(w, &v, 4);
        memcpy(w + 4, values[i], (size_t)v);
        w += 4 + v;
    }
    tb_schema_priv *p = node.s->private_data;
    free(p->metadata);
    p->metadata = m;
    node.s->metadata = m;
}

void tb_free(tb_node node)
{
    if (node.s != NULL) {
        if (node.s->release != NULL) {
            node.s->release(node.s);
        }
        free(node.s);
    }
    if (node.a != NULL) {
        if (node.a->release != NULL) {
            node.a->release(node.a);
        }
        free(node.a);
    }
}

tb_node tb_batch(const tb_row *rows, int64_t n)
{
    const char **names = tb_xcalloc((size_t)n, sizeof *names);
    int64_t *wlen = tb_xcalloc((size_t)n, sizeof *wlen);
    int64_t *slen = tb_xcalloc((size_t)n, sizeof *slen);
    uint8_t *wvalid = tb_xcalloc((size_t)n, 1);
    uint8_t *svalid = tb_xcalloc((size_t)n, 1);
    int64_t wtotal = 0, stotal = 0;
    for (int64_t i = 0; i < n; i++) {
        names[i] = rows[i].name;
        wlen[i] = rows[i].n;
        wvalid[i] = !rows[i].null_weights;
        slen[i] = rows[i].shape != NULL ? rows[i].ndim : 0;
        svalid[i] = rows[i].shape != NULL;
        wtotal += wlen[i];
        stotal += slen[i];
    }
    float *w = tb_xcalloc((size_t)wtotal, sizeof *w);
    int64_t *s = tb_xcalloc((size_t)stotal, sizeof *s);
    int64_t wa = 0, sa = 0;
    for (int64_t i = 0; i < n; i++) {
        if (rows[i].n > 0) {
            memcpy(w + wa, rows[i].w, (size_t)rows[i].n * sizeof *w);
        }
        if (rows[i].shape != NULL && rows[i].ndim > 0) {
            memcpy(s + sa, rows[i].shape, (size_t)rows[i].ndim * sizeof *s);
        }
        wa += wlen[i];
        sa += slen[i];
    }
    tb_node cols[3];
    cols[0] = tb_strings("u", "layer_name", names, NULL, n);
    cols[1] = tb_list("+l", "weights", tb_prim("f", "item", w, 4, wtotal, NULL), wlen, n, wvalid);
    cols[2] = tb_list("+l", "shape", tb_prim("l", "item", s, 8, stotal, NULL), slen, n, svalid);
    free(names);
    free(wlen);
    free(slen);
    free(wvalid);
    free(svalid);
    free(w);
    free(s);
    return tb_struct("", cols, 3, n);
}

/* ---- streams ---- */

typedef struct tb_stream_priv {
    tb_node schema;
    tb_node *batches;
    int n, next, fail_at;
    char message[256];
} tb_stream_priv;

static struct ArrowSchema *tb_schema_copy(const struct ArrowSchema *src)
{
    struct ArrowSchema *d = tb_schema_new(src->format, src->name, src->flags, src->n_children);
    for (int64_t i = 0; i < src->n_children; i++) {
        d->children[i] = tb_schema_copy(src->children[i]);
    }
    if (src->metadata != NULL) {
        const char *p = src->metadata;
        int32_t count, len;
        memcpy(&count, p, 4);
        p += 4;
        for (int32_t i = 0; i < 2 * count; i++) {
            memcpy(&len, p, 4);
            p += 4 + len;
        }
        size_t total = (size_t)(p - src->metadata);
        tb_schema_priv *pr = d->private_data;
        pr->metadata = tb_xcalloc(total, 1);
        memcpy(pr->metadata, src->metadata, total);
        d->metadata = pr->metadata;
    }
    return d;
}

static int tb_stream_get_schema(struct ArrowArrayStream *self, struct ArrowSchema *out)
{
    tb_stream_priv *p = self->private_data;
    struct ArrowSchema *copy = tb_schema_copy(p->schema.s);
    *out = *copy;
    free(copy);
    return 0;
}

static int tb_stream_get_next(struct ArrowArrayStream *self, struct ArrowArray *out)
{
    tb_stream_priv *p = self->private_data;
    if (p->next == p->fail_at) {
        return EIO;
    }
    if (p->next >= p->n) {
        out->release = NULL;
        return 0;
    }
    tb_node *b = &p->batches[p->next++];
    *out = *b->a;
    b->a->release = NULL;
    return 0;
}

static const char *tb_stream_last_error(struct ArrowArrayStream *self)
{
    tb_stream_priv *p = self->private_data;
    return p->message;
}

static void tb_stream_release(struct ArrowArrayStream *self)
{
    tb_stream_priv *p = self->private_data;
    for (int i = 0; i < p->n; i++) {
        tb_free(p->batches[i]);
    }
    free(p->batches);
    tb_free(p->schema);
    free(p);
    self->release = NULL;
}

void tb_stream(struct ArrowArrayStream *out, tb_node schema_source, tb_node *batches, int n,
               int fail_at, const char *fail_message)
{
    tb_stream_priv *p = tb_xcalloc(1, sizeof *p);
    p->schema = schema_source;
    p->batches = tb_xcalloc((size_t)n, sizeof *p->batches);
    for (int i = 0; i < n; i++) {
        p->batches[i] = batches[i];
        /* Batches travel without their schema; the stream's schema describes them. */
        p->batches[i].s->release(p->batches[i].s);
    }
    p->n = n;
    p->fail_at = fail_at;
    snprintf(p->message, sizeof p->message, "%s", fail_message != NULL ? fail_message : "");
    out->get_schema = tb_stream_get_schema;
    out->get_next = tb_stream_get_next;
    out->get_last_error = tb_stream_last_error;
    out->release = tb_stream_release;
    out->private_data = p;
}
