/* Arrow IPC reader: stream and file formats, memory-mapped, every offset checked. */
#include "ipc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IPC_CONTINUATION 0xFFFFFFFFu
#define IPC_MAX_DEPTH 64

/* A mapped (or copied) input, owned through a keepalive so that arrays outlive the reader. */
typedef struct ipc_region {
    void *addr;
    size_t size;
    bool mapped;
    int guard; /* aq__mapped_add's slot + 1; 0: none */
    int fd;    /* the mapped file, open as long as the mapping (pread, fstat); -1: none */
} ipc_region;

static void ipc_region_destroy(void *data)
{
    ipc_region *m = data;
    if (m->mapped) {
        aq__mapped_remove(m->guard - 1);
        munmap(m->addr, m->size);
        if (m->fd >= 0) {
            close(m->fd);
        }
    } else {
        free(m->addr);
    }
    free(m);
}

typedef struct ipc_block {
    size_t offset;
    size_t meta_len;
    size_t body_len;
} ipc_block;

struct aq_ipc_reader {
    char *where; /* the path, or "<memory>", for messages */
    aq__keepalive *keep;
    const uint8_t *data;
    size_t size;
    aq_ipc_format format;
    aq__ipc_schema schema;
    size_t pos;        /* stream: position of the next message */
    size_t limit;      /* end of the message area (file: the footer's start) */
    bool eos;          /* the end was reached */
    ipc_block *blocks; /* file: record batch blocks */
    size_t n_blocks;
    size_t batches; /* record batches returned so far */
    bool mapped;    /* data is a private file mapping (its clean pages can be dropped) */
    int guard;      /* the mapping's aq__mapped_add slot + 1; 0: none */
    int fd;         /* the mapped file (the region's, which closes it; pread); -1: none */
};

/* One message: its header table, body and position. */
typedef struct ipc_message {
    bool eos;
    size_t start;    /* position of the message (its continuation marker) */
    size_t meta_len; /* prefix + flatbuffer + padding */
    uint8_t type;
    aq__fbt header;
    size_t body; /* position of the body */
    size_t body_len;
} ipc_message;

static uint32_t rd_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int64_t rd_i64(const uint8_t *p)
{
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Reads the message at pos, which must end by `limit`. */
static aq_status rd_message(const aq_ipc_reader *r, size_t pos, size_t limit, ipc_message *m,
                            aq_error *err)
{
    memset(m, 0, sizeof *m);
    m->start = pos;
    if (limit - pos < 4) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: truncated at byte offset %zu: expected a message header "
                             "(continuation marker and length) or the end-of-stream marker",
                             r->where, pos);
    }
    uint32_t word = rd_u32(r->data + pos);
    if (word == 0) {
        /* The end-of-stream marker of writers before Arrow 0.15 (no continuation). */
        m->eos = true;
        m->meta_len = 4;
        return AQ_OK;
    }
    if (word != IPC_CONTINUATION) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: expected the continuation marker 0xFFFFFFFF at byte offset %zu, "
                             "found 0x%08X",
                             r->where, pos, (unsigned)word);
    }
    if (limit - pos < 8) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: truncated at byte offset %zu: the message length is missing "
                             "after the continuation marker",
                             r->where, pos);
    }
    const size_t prefix = 8;
    word = rd_u32(r->data + pos + 4);
    int32_t len = (int32_t)word;
    if (len == 0) {
        m->eos = true;
        m->meta_len = prefix;
        return AQ_OK;
    }
    if (len < 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: negative metadata length %d at byte offset %zu", r->where,
                             (int)len, pos);
    }
    if ((size_t)len > limit - pos - prefix) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: the metadata length %d at byte offset %zu goes beyond the end "
                             "of the data (%zu bytes)",
                             r->where, (int)len, pos, limit);
    }
    size_t fb = pos + prefix;
    aq__fbt msg;
    int16_t version;
    uint8_t type;
    int64_t body_len;
    if (aq__fb_root(r->data + fb, (size_t)len, &msg) != AQ__FB_OK ||
        aq__fbt_i16(&msg, 0, 0, &version) != AQ__FB_OK ||
        aq__fbt_u8(&msg, 1, 0, &type) != AQ__FB_OK ||
        aq__fbt_i64(&msg, 3, 0, &body_len) != AQ__FB_OK) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: malformed message metadata at byte offset %zu", r->where, pos);
    }
    if (version < 3) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "%s: message at byte offset %zu uses metadata version V%d; V4 or "
                             "V5 is required",
                             r->where, pos, version + 1);
    }
    if (aq__fbt_table(&msg, 2, &m->header) != AQ__FB_OK) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: message at byte offset %zu has no header",
                             r->where, pos);
    }
    size_t body = fb + (size_t)len;
    if (body_len < 0 || (uint64_t)body_len > limit - body) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: message at byte offset %zu has a body of %lld bytes at byte "
                             "offset %zu, beyond the end of the data (%zu bytes)",
                             r->where, pos, (long long)body_len, body, limit);
    }
    m->meta_len = prefix + (size_t)len;
    m->type = type;
    m->body = body;
    m->body_len = (size_t)body_len;
    return AQ_OK;
}

/* ---- record batches ---- */

typedef struct batch_decoder {
    const aq_ipc_reader *r;
    size_t batch; /* index, for messages */
    size_t body;  /* position of the body in the data */
    size_t body_len;
    aq__fbv nodes;    /* FieldNode: 16 bytes */
    aq__fbv buffers;  /* Buffer: 16 bytes */
    aq__fbv variadic; /* long */
    bool has_variadic;
    size_t node_i, buf_i, var_i;
    aq_ipc_compression codec;
    aq_error *err;
} batch_decoder;

static const int64_t ipc_zero_offsets[2] = {0, 0};

static aq_status bd_fail(batch_decoder *d, const aq__ipc_field *f, const char *fmt, const char *a,
                         long long x, long long y)
{
    char what[256];
    snprintf(what, sizeof what, fmt, a, x, y);
    return aq__error_set(d->err, AQ_INVALID_DATA, "%s: record batch %zu: field '%s' (%s): %s",
                         d->r->where, d->batch, f->name, aq__ipc_type_name(f), what);
}

/* Takes the next buffer of the body as buffer `slot` of arr: borrowed from the mapping when
 * uncompressed and aligned, else copied or decompressed into memory the node owns. */
static aq_status bd_buffer(batch_decoder *d, const aq__ipc_field *f, struct ArrowArray *arr,
                           int64_t slot, const uint8_t **out, size_t *out_len)
{
    if (d->buf_i >= d->buffers.count) {
        return bd_fail(d, f, "the batch has %s%lld buffers, fewer than the schema needs", "",
                       (long long)d->buffers.count, 0);
    }
    size_t i = d->buf_i++;
    int64_t off = aq__fbv_i64(&d->buffers, i, 16, 0);
    int64_t len = aq__fbv_i64(&d->buffers, i, 16, 8);
    if (off < 0 || len < 0 || (uint64_t)off > d->body_len ||
        (uint64_t)len > d->body_len - (uint64_t)off) {
        return aq__error_set(d->err, AQ_INVALID_DATA,
                             "%s: record batch %zu: field '%s' (%s): buffer %zu (offset %lld, "
                             "length %lld) lies outside the body of %zu bytes at byte offset %zu",
                             d->r->where, d->batch, f->name, aq__ipc_type_name(f), i,
                             (long long)off, (long long)len, d->body_len, d->body);
    }
    const uint8_t *p = d->r->data + d->body + (size_t)off;
    size_t n = (size_t)len;
    if (d->codec != AQ_IPC_COMPRESSION_NONE && n > 0) {
        if (n < 8) {
            return bd_fail(d, f,
                           "compressed buffer %s%lld is %lld bytes, shorter than its "
                           "8-byte length prefix",
                           "", (long long)i, (long long)n);
        }
        int64_t raw = rd_i64(p);
        p += 8;
        n -= 8;
        if (raw != -1) {
            if (raw < 0 || (uint64_t)raw > aq__ipc_decompress_limit(d->codec, n)) {
                return bd_fail(d, f, "compressed buffer %s%lld claims %lld uncompressed bytes", "",
                               (long long)i, (long long)raw);
            }
            uint8_t *dst = aq__array_buffer_alloc(arr, slot, (size_t)raw);
            if (dst == NULL) {
                return aq__error_set(d->err, AQ_NO_MEMORY,
                                     "%s: out of memory decompressing %lld bytes", d->r->where,
                                     (long long)raw);
            }
            aq_status st = aq__ipc_decompress(d->codec, p, n, d->r->fd, (size_t)(p - d->r->data),
                                              dst, (size_t)raw, d->err);
            if (st != AQ_OK) {
                aq__error_prefix(d->err, "%s: record batch %zu: field '%s': buffer %zu",
                                 d->r->where, d->batch, f->name, i);
                return st;
            }
            *out = dst;
            *out_len = (size_t)raw;
            return AQ_OK;
        }
    }
    if (n == 0) {
        *out = NULL;
        *out_len = 0;
        return AQ_OK;
    }
    if (((uintptr_t)p & 7u) == 0) {
        aq__array_buffer_borrow(arr, slot, p, d->r->keep);
        *out = p;
    } else {
        uint8_t *copy = aq__array_buffer_alloc(arr, slot, n);
        if (copy == NULL) {
            return aq__error_set(d->err, AQ_NO_MEMORY, "%s: out of memory", d->r->where);
        }
        memcpy(copy, p, n);
        *out = copy;
    }
    *out_len = n;
    return AQ_OK;
}

static bool bd_bit(const uint8_t *bits, size_t i)
{
    return bits == NULL || (((unsigned)bits[i / 8] >> (i % 8)) & 1u) != 0;
}

/* Checks an offsets buffer of length+1 entries of `width` bytes: non-negative,
 * non-decreasing, the last at most `limit`. Stores the last offset. */
static aq_status bd_offsets(batch_decoder *d, const aq__ipc_field *f, const uint8_t *p, size_t len,
                            size_t n, int width, size_t limit, size_t *last)
{
    size_t need;
    if (!aq__add_size(n, 1, &need) || !aq__mul_size(need, (size_t)width, &need) || len < need) {
        return bd_fail(d, f, "the offsets buffer has %s%lld bytes, %lld needed", "", (long long)len,
                       (long long)need);
    }
    int64_t prev = 0;
    for (size_t i = 0; i <= n; i++) {
        int64_t v;
        if (width == 4) {
            int32_t v32;
            memcpy(&v32, p + 4 * i, 4);
            v = v32;
        } else {
            memcpy(&v, p + 8 * i, 8);
        }
        if (v < prev || (uint64_t)v > limit) {
            return bd_fail(d, f,
                           "offset %s%lld is %lld: offsets must be non-decreasing and "
                           "within the data",
                           "", (long long)i, (long long)v);
        }
        prev = v;
    }
    *last = (size_t)prev;
    return AQ_OK;
}

static aq_status bd_field(batch_decoder *d, const aq__ipc_field *f, struct ArrowArray *out,
                          int depth);

static aq_status bd_offsets_slot(batch_decoder *d, const aq__ipc_field *f, struct ArrowArray *arr,
                                 size_t length, int width, const uint8_t **p, size_t *n)
{
    aq_status st = bd_buffer(d, f, arr, 1, p, n);
    if (st == AQ_OK && length == 0 && *n < (size_t)width) {
        /* An empty array may come without offsets; consumers expect one zero offset. */
        aq__array_buffer_borrow(arr, 1, ipc_zero_offsets, NULL);
        *p = (const uint8_t *)ipc_zero_offsets;
        *n = sizeof ipc_zero_offsets;
    }
    return st;
}

static aq_status bd_views(batch_decoder *d, const aq__ipc_field *f, struct ArrowArray *out,
                          size_t length, int64_t nulls)
{
    const uint8_t *validity = NULL;
    int64_t nv = aq__fbv_i64(&d->variadic, d->var_i++, 8, 0);
    if (nv < 0 || (uint64_t)nv > d->buffers.count) {
        return bd_fail(d, f, "variadic buffer count %s%lld is invalid", "", (long long)nv, 0);
    }
    size_t nvar = (size_t)nv;
    aq_status st = aq__array_alloc(out, (int64_t)length, 3 + (int64_t)nvar, 0, d->err);
    if (st != AQ_OK) {
        return st;
    }
    out->null_count = nulls;
    const uint8_t *p, *views;
    size_t n, views_len;
    st = bd_buffer(d, f, out, 0, &p, &n);
    if (st != AQ_OK) {
        return st;
    }
    if (out->null_count == 0) {
        aq__array_buffer_borrow(out, 0, NULL, NULL);
    } else if (n < (length + 7) / 8) {
        return bd_fail(d, f, "the validity bitmap has %s%lld bytes for %lld rows", "", (long long)n,
                       (long long)length);
    } else {
        validity = p;
    }
    st = bd_buffer(d, f, out, 1, &views, &views_len);
    if (st != AQ_OK) {
        return st;
    }
    if (views_len / 16 < length) {
        return bd_fail(d, f, "the views buffer has %s%lld bytes for %lld rows", "",
                       (long long)views_len, (long long)length);
    }
    int64_t *sizes = aq__array_buffer_alloc(out, 2 + (int64_t)nvar, (nvar + 1) * sizeof(int64_t));
    if (sizes == NULL) {
        return aq__error_set(d->err, AQ_NO_MEMORY, "%s: out of memory", d->r->where);
    }
    for (size_t k = 0; k < nvar; k++) {
        const uint8_t *vp;
        size_t vn;
        st = bd_buffer(d, f, out, 2 + (int64_t)k, &vp, &vn);
        if (st != AQ_OK) {
            return st;
        }
        sizes[k] = (int64_t)vn;
    }
    for (size_t i = 0; i < length; i++) {
        if (!bd_bit(validity, i)) {
            continue;
        }
        int32_t len, idx, off;
        memcpy(&len, views + 16 * i, 4);
        if (len < 0) {
            return bd_fail(d, f, "view %s%lld has the negative length %lld", "", (long long)i,
                           (long long)len);
        }
        if (len <= 12) {
            continue;
        }
        memcpy(&idx, views + 16 * i + 8, 4);
        memcpy(&off, views + 16 * i + 12, 4);
        if (idx < 0 || (size_t)idx >= nvar || off < 0 ||
            (uint64_t)off + (uint64_t)len > (uint64_t)sizes[idx]) {
            return bd_fail(d, f, "view %s%lld points outside its data buffer (buffer %lld)", "",
                           (long long)i, (long long)idx);
        }
    }
    return AQ_OK;
}

static aq_status bd_field(batch_decoder *d, const aq__ipc_field *f, struct ArrowArray *out,
                          int depth)
{
    if (d->node_i >= d->nodes.count) {
        return bd_fail(d, f, "the batch has %s%lld field nodes, fewer than the schema's fields", "",
                       (long long)d->nodes.count, 0);
    }
    if (depth > IPC_MAX_DEPTH) {
        return bd_fail(d, f, "nested too deep%s", "", 0, 0);
    }
    int64_t length = aq__fbv_i64(&d->nodes, d->node_i, 16, 0);
    int64_t nulls = aq__fbv_i64(&d->nodes, d->node_i, 16, 8);
    d->node_i++;
    if (length < 0 || nulls < 0 || nulls > length) {
        return bd_fail(d, f, "invalid field node: length %s%lld, null count %lld", "",
                       (long long)length, (long long)nulls);
    }
    size_t n = (size_t)length;
    if (f->kind == AQ__K_NULL) {
        aq_status st = aq__array_alloc(out, length, 0, 0, d->err);
        out->null_count = length;
        return st;
    }
    if (f->kind == AQ__K_BINARY_VIEW || f->kind == AQ__K_UTF8_VIEW) {
        if (!d->has_variadic || d->var_i >= d->variadic.count) {
            return bd_fail(d, f, "the batch has no variadic buffer count for this field%s", "", 0,
                           0);
        }
        return bd_views(d, f, out, n, nulls);
    }
    int64_t n_buffers = 2, n_children = 0;
    switch (f->kind) {
    case AQ__K_BINARY:
    case AQ__K_UTF8:
    case AQ__K_LARGE_BINARY:
    case AQ__K_LARGE_UTF8:
        n_buffers = 3;
        break;
    case AQ__K_LIST:
    case AQ__K_LARGE_LIST:
        n_children = 1;
        break;
    case AQ__K_FIXED_SIZE_LIST:
        n_buffers = 1;
        n_children = 1;
        break;
    case AQ__K_STRUCT:
        n_buffers = 1;
        n_children = (int64_t)f->n_children;
        break;
    default:
        break;
    }
    aq_status st = aq__array_alloc(out, length, n_buffers, n_children, d->err);
    if (st != AQ_OK) {
        return st;
    }
    out->null_count = nulls;
    const uint8_t *p;
    size_t pn;
    st = bd_buffer(d, f, out, 0, &p, &pn);
    if (st != AQ_OK) {
        return st;
    }
    if (nulls == 0) {
        aq__array_buffer_borrow(out, 0, NULL, NULL);
    } else if (pn < (n + 7) / 8) {
        return bd_fail(d, f, "the validity bitmap has %s%lld bytes for %lld rows", "",
                       (long long)pn, (long long)length);
    }
    size_t need, last;
    switch (f->kind) {
    case AQ__K_INT:
    case AQ__K_FLOAT:
        st = bd_buffer(d, f, out, 1, &p, &pn);
        if (st == AQ_OK && (!aq__mul_size(n, (size_t)f->bit_width / 8, &need) || pn < need)) {
            return bd_fail(d, f, "the data buffer has %s%lld bytes for %lld rows", "",
                           (long long)pn, (long long)length);
        }
        return st;
    case AQ__K_BINARY:
    case AQ__K_UTF8:
    case AQ__K_LARGE_BINARY:
    case AQ__K_LARGE_UTF8: {
        int width = (f->kind == AQ__K_BINARY || f->kind == AQ__K_UTF8) ? 4 : 8;
        const uint8_t *offs, *data;
        size_t offs_n, data_n;
        st = bd_offsets_slot(d, f, out, n, width, &offs, &offs_n);
        if (st == AQ_OK) {
            st = bd_buffer(d, f, out, 2, &data, &data_n);
        }
        if (st == AQ_OK) {
            st = bd_offsets(d, f, offs, offs_n, n, width, data_n, &last);
        }
        return st;
    }
    case AQ__K_LIST:
    case AQ__K_LARGE_LIST: {
        int width = f->kind == AQ__K_LIST ? 4 : 8;
        const uint8_t *offs;
        size_t offs_n;
        st = bd_offsets_slot(d, f, out, n, width, &offs, &offs_n);
        if (st == AQ_OK) {
            st = bd_field(d, &f->children[0], out->children[0], depth + 1);
        }
        if (st == AQ_OK) {
            st = bd_offsets(d, f, offs, offs_n, n, width, (size_t)out->children[0]->length, &last);
        }
        return st;
    }
    case AQ__K_FIXED_SIZE_LIST:
        st = bd_field(d, &f->children[0], out->children[0], depth + 1);
        if (st == AQ_OK && (!aq__mul_size(n, (size_t)f->list_size, &need) ||
                            (size_t)out->children[0]->length < need)) {
            return bd_fail(d, f, "the child has %s%lld values, %lld rows need more", "",
                           (long long)out->children[0]->length, (long long)length);
        }
        return st;
    case AQ__K_STRUCT:
        for (size_t i = 0; i < f->n_children && st == AQ_OK; i++) {
            st = bd_field(d, &f->children[i], out->children[i], depth + 1);
            if (st == AQ_OK && out->children[i]->length < length) {
                return bd_fail(d, f, "child %s%lld is shorter than the struct (%lld rows)", "",
                               (long long)i, (long long)length);
            }
        }
        return st;
    default:
        return AQ_OK;
    }
}

/* Decodes a RecordBatch message into a struct array. */
static aq_status rd_batch(aq_ipc_reader *r, const ipc_message *m, struct ArrowArray *out,
                          aq_error *err)
{
    batch_decoder d;
    memset(&d, 0, sizeof d);
    d.r = r;
    d.batch = r->batches;
    d.body = m->body;
    d.body_len = m->body_len;
    d.err = err;
    const aq__fbt *h = &m->header;
    int64_t length;
    aq__fbt comp;
    if (aq__fbt_i64(h, 0, 0, &length) != AQ__FB_OK ||
        aq__fbt_vector(h, 1, 16, &d.nodes) == AQ__FB_BAD ||
        aq__fbt_vector(h, 2, 16, &d.buffers) == AQ__FB_BAD) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: record batch %zu at byte offset %zu: malformed metadata",
                             r->where, d.batch, m->start);
    }
    int rc = aq__fbt_vector(h, 4, 8, &d.variadic);
    if (rc == AQ__FB_BAD) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: record batch %zu: malformed variadicBufferCounts", r->where,
                             d.batch);
    }
    d.has_variadic = rc == AQ__FB_OK;
    if (length < 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: record batch %zu at byte offset %zu has the negative length "
                             "%lld",
                             r->where, d.batch, m->start, (long long)length);
    }
    rc = aq__fbt_table(h, 3, &comp);
    if (rc == AQ__FB_BAD) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: record batch %zu: malformed compression",
                             r->where, d.batch);
    }
    if (rc == AQ__FB_OK) {
        uint8_t codec, method;
        if (aq__fbt_u8(&comp, 0, 0, &codec) != AQ__FB_OK ||
            aq__fbt_u8(&comp, 1, 0, &method) != AQ__FB_OK) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "%s: record batch %zu: malformed compression", r->where, d.batch);
        }
        if (codec > 1) {
            return aq__error_set(err, AQ_UNSUPPORTED,
                                 "%s: record batch %zu: unknown compression codec %u (known: 0 "
                                 "lz4_frame, 1 zstd)",
                                 r->where, d.batch, (unsigned)codec);
        }
        if (method != 0) {
            return aq__error_set(err, AQ_UNSUPPORTED,
                                 "%s: record batch %zu: unknown body compression method %u",
                                 r->where, d.batch, (unsigned)method);
        }
        d.codec = codec == 0 ? AQ_IPC_COMPRESSION_LZ4_FRAME : AQ_IPC_COMPRESSION_ZSTD;
    }
    const aq__ipc_field *root = &r->schema.root;
    struct ArrowArray tmp;
    aq_status st = aq__array_alloc(&tmp, length, 1, (int64_t)root->n_children, err);
    if (st != AQ_OK) {
        return st;
    }
    for (size_t i = 0; i < root->n_children && st == AQ_OK; i++) {
        st = bd_field(&d, &root->children[i], tmp.children[i], 1);
        if (st == AQ_OK && tmp.children[i]->length != length) {
            st = aq__error_set(err, AQ_INVALID_DATA,
                               "%s: record batch %zu: column '%s' has %lld rows, the batch %lld",
                               r->where, d.batch, root->children[i].name,
                               (long long)tmp.children[i]->length, (long long)length);
        }
    }
    if (st == AQ_OK && (d.node_i != d.nodes.count || d.buf_i != d.buffers.count ||
                        (d.has_variadic && d.var_i != d.variadic.count))) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: record batch %zu does not match the schema: %zu field nodes and "
                           "%zu buffers, the schema's %zu fields use %zu and %zu",
                           r->where, d.batch, d.nodes.count, d.buffers.count,
                           r->schema.total_fields, d.node_i, d.buf_i);
    }
    if (st != AQ_OK) {
        aq__array_release_if(&tmp);
        return st;
    }
    aq__array_move(&tmp, out);
    return AQ_OK;
}

/* ---- opening ---- */

static aq_status rd_schema_message(aq_ipc_reader *r, size_t pos, aq_error *err)
{
    ipc_message m;
    aq_status st = rd_message(r, pos, r->limit, &m, err);
    if (st != AQ_OK) {
        return st;
    }
    if (m.eos || m.type != AQ__MSG_SCHEMA) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: the first message (byte offset %zu) is not a schema", r->where,
                             pos);
    }
    st = aq__ipc_schema_read(&m.header, &r->schema, r->where, err);
    r->pos = m.body + m.body_len;
    return st;
}

static aq_status rd_footer(aq_ipc_reader *r, aq_error *err)
{
    const size_t size = r->size;
    if (size < 8 + 10 || memcmp(r->data + size - 6, "ARROW1", 6) != 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: the file starts with the Arrow magic but does not end with it "
                             "(truncated? %zu bytes)",
                             r->where, size);
    }
    int32_t flen = (int32_t)rd_u32(r->data + size - 10);
    if (flen <= 0 || (size_t)flen > size - 10 - 8) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: footer length %d does not fit in the file (%zu bytes)", r->where,
                             (int)flen, size);
    }
    size_t fstart = size - 10 - (size_t)flen;
    r->limit = fstart;
    aq__fbt footer, schema;
    aq__fbv dicts, batches;
    if (aq__fb_root(r->data + fstart, (size_t)flen, &footer) != AQ__FB_OK ||
        aq__fbt_table(&footer, 1, &schema) != AQ__FB_OK ||
        aq__fbt_vector(&footer, 2, 24, &dicts) == AQ__FB_BAD ||
        aq__fbt_vector(&footer, 3, 24, &batches) == AQ__FB_BAD) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: malformed footer at byte offset %zu",
                             r->where, fstart);
    }
    aq_status st = aq__ipc_schema_read(&schema, &r->schema, r->where, err);
    if (st != AQ_OK) {
        return st;
    }
    if (aq__fbt_vector(&footer, 2, 24, &dicts) == AQ__FB_OK && dicts.count > 0) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "%s: the file holds %zu dictionary batches; dictionaries are not "
                             "supported",
                             r->where, dicts.count);
    }
    size_t nb = 0;
    if (aq__fbt_vector(&footer, 3, 24, &batches) == AQ__FB_OK) {
        nb = batches.count;
    }
    r->blocks = calloc(nb > 0 ? nb : 1, sizeof *r->blocks);
    if (r->blocks == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", r->where);
    }
    for (size_t i = 0; i < nb; i++) {
        int64_t off = aq__fbv_i64(&batches, i, 24, 0);
        int32_t meta = aq__fbv_i32(&batches, i, 24, 8);
        int64_t body = aq__fbv_i64(&batches, i, 24, 16);
        if (off < 8 || meta <= 0 || body < 0 || (uint64_t)off > fstart ||
            (uint64_t)meta > fstart - (uint64_t)off ||
            (uint64_t)body > fstart - (uint64_t)off - (uint64_t)meta) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "%s: footer block %zu (offset %lld, metadata %d, body %lld "
                                 "bytes) lies outside the file's %zu bytes of messages",
                                 r->where, i, (long long)off, (int)meta, (long long)body, fstart);
        }
        r->blocks[i] = (ipc_block){(size_t)off, (size_t)meta, (size_t)body};
    }
    r->n_blocks = nb;
    return AQ_OK;
}

static aq_status rd_open(aq_ipc_reader *r, aq_error *err)
{
    if (r->size >= 8 && memcmp(r->data, "ARROW1", 6) == 0) {
        r->format = AQ_IPC_FORMAT_FILE;
        return rd_footer(r, err);
    }
    r->format = AQ_IPC_FORMAT_STREAM;
    r->limit = r->size;
    if (r->size < 8 || rd_u32(r->data) != IPC_CONTINUATION) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: not an Arrow IPC file or stream (neither the \"ARROW1\" magic "
                             "nor the continuation marker 0xFFFFFFFF at byte 0)",
                             r->where);
    }
    return rd_schema_message(r, 0, err);
}

static aq_status rd_create(const char *where, aq__keepalive *keep, const uint8_t *data, size_t size,
                           aq_ipc_reader **out, aq_error *err)
{
    aq_ipc_reader *r = calloc(1, sizeof *r);
    if (r == NULL) {
        aq__keepalive_release(keep);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory opening %s", where);
    }
    r->keep = keep;
    r->fd = -1;
    r->data = data;
    r->size = size;
    r->where = malloc(strlen(where) + 1);
    if (r->where == NULL) {
        aq_ipc_reader_free(r);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory opening %s", where);
    }
    strcpy(r->where, where);
    aq_status st = rd_open(r, err);
    if (st != AQ_OK) {
        aq_ipc_reader_free(r);
        return st;
    }
    *out = r;
    return AQ_OK;
}

aq_status aq_ipc_reader_open(const char *path, aq_ipc_reader **out, aq_error *err)
{
    if (path == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_reader_open: NULL argument");
    }
    int fd;
    struct stat sb;
    aq_status st = aq__file_open_read(path, &fd, &sb, err);
    if (st != AQ_OK) {
        return st;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size < 8) {
        close(fd);
        return aq__error_set(
            err, AQ_INVALID_DATA, "%s: not an Arrow IPC file or stream (%s, %lld bytes)", path,
            S_ISREG(sb.st_mode) ? "too short" : "not a regular file", (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *addr = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    if (addr == MAP_FAILED) {
        close(fd);
        return aq__error_set(err, AQ_IO, "%s: cannot map: %s", path, strerror(e));
    }
    ipc_region *m = malloc(sizeof *m);
    aq__keepalive *keep = m != NULL ? aq__keepalive_create(ipc_region_destroy, m) : NULL;
    if (keep == NULL) {
        free(m);
        munmap(addr, size);
        close(fd);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory opening %s", path);
    }
    /* The region owns fd from here: it is closed with the mapping (also when rd_create fails),
     * so that holders of the mapping's memory can compare the file's size with it. */
    *m = (ipc_region){addr, size, true, aq__mapped_add(addr, size, path) + 1, fd};
    st = rd_create(path, keep, addr, size, out, err);
    if (st == AQ_OK) {
        (*out)->mapped = true;
        (*out)->guard = m->guard;
        (*out)->fd = fd;
    }
    return st;
}

bool aq__ipc_reader_in_map(const aq_ipc_reader *r, const void *p)
{
    uintptr_t a = (uintptr_t)p, d = (uintptr_t)r->data;
    return r->mapped && a >= d && a - d < r->size;
}

int aq__ipc_reader_guard(const aq_ipc_reader *r)
{
    return r->mapped ? r->guard - 1 : -1;
}

int aq__ipc_reader_map_fd(const aq_ipc_reader *r, size_t *size)
{
    *size = r->mapped ? r->size : 0;
    return r->mapped ? r->fd : -1;
}

aq_status aq__ipc_reader_copy_on_write(aq_ipc_reader *r, aq_error *err)
{
    if (!r->mapped) {
        return AQ_OK;
    }
    /* A private mapping may gain PROT_WRITE whatever the file's open mode: writes then go to
     * copies of the pages, never to the file. */
    if (mprotect((void *)(uintptr_t)r->data, r->size, PROT_READ | PROT_WRITE) != 0) {
        return aq__error_set(err, AQ_IO, "%s: cannot map copy-on-write: %s", r->where,
                             strerror(errno));
    }
    return AQ_OK;
}

aq_status aq_ipc_reader_open_memory(const void *data, size_t size, aq_ipc_reader **out,
                                    aq_error *err)
{
    if ((data == NULL && size > 0) || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_reader_open_memory: NULL argument");
    }
    void *copy = aq__aligned_alloc(size);
    ipc_region *m = malloc(sizeof *m);
    aq__keepalive *keep =
        copy != NULL && m != NULL ? aq__keepalive_create(ipc_region_destroy, m) : NULL;
    if (keep == NULL) {
        free(copy);
        free(m);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory copying %zu bytes", size);
    }
    if (size > 0) {
        memcpy(copy, data, size);
    }
    *m = (ipc_region){copy, size, false, 0, -1};
    return rd_create("<memory>", keep, copy, size, out, err);
}

void aq_ipc_reader_free(aq_ipc_reader *r)
{
    if (r == NULL) {
        return;
    }
    aq__ipc_field_reset(&r->schema.root);
    aq__keepalive_release(r->keep); /* closes fd with the mapping, once nothing holds it */
    free(r->blocks);
    free(r->where);
    free(r);
}

aq_ipc_format aq_ipc_reader_format(const aq_ipc_reader *r)
{
    return r->format;
}

size_t aq_ipc_reader_num_batches(const aq_ipc_reader *r)
{
    return r->format == AQ_IPC_FORMAT_FILE ? r->n_blocks : r->batches;
}

aq_status aq_ipc_reader_schema(const aq_ipc_reader *r, struct ArrowSchema *out, aq_error *err)
{
    if (r == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_reader_schema: NULL argument");
    }
    return aq__ipc_schema_export(&r->schema, out, err);
}

static aq_status rd_next_file(aq_ipc_reader *r, struct ArrowArray *out, aq_error *err)
{
    const ipc_block *b = &r->blocks[r->batches];
    ipc_message m;
    aq_status st = rd_message(r, b->offset, r->limit, &m, err);
    if (st != AQ_OK) {
        return st;
    }
    if (m.eos || m.type != AQ__MSG_RECORD_BATCH) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: footer block %zu (byte offset %zu) is not a record batch",
                             r->where, r->batches, b->offset);
    }
    if (m.meta_len != b->meta_len || m.body_len != b->body_len) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: footer block %zu says %zu + %zu bytes, the message at byte "
                             "offset %zu has %zu + %zu",
                             r->where, r->batches, b->meta_len, b->body_len, b->offset, m.meta_len,
                             m.body_len);
    }
    return rd_batch(r, &m, out, err);
}

/* A file's footer lists its record batches; one that lost blocks (a damaged count or a
 * missing vector) would end the file early without a word. The Arrow file format holds a
 * whole stream before its footer, so the message after the last listed one (or after the
 * schema) must not be a record batch. Anything else there is left alone, as other writers may
 * differ in what they put before the footer. */
static aq_status rd_check_end(const aq_ipc_reader *r, aq_error *err)
{
    ipc_message m;
    aq_error ignore;
    size_t pos;
    if (r->n_blocks > 0) {
        const ipc_block *b = &r->blocks[r->n_blocks - 1];
        pos = b->offset + b->meta_len + b->body_len;
    } else {
        if (rd_message(r, 8, r->limit, &m, &ignore) != AQ_OK || m.eos) {
            return AQ_OK;
        }
        pos = m.body + m.body_len;
    }
    if (pos >= r->limit || rd_message(r, pos, r->limit, &m, &ignore) != AQ_OK || m.eos ||
        m.type != AQ__MSG_RECORD_BATCH) {
        return AQ_OK;
    }
    return aq__error_set(err, AQ_INVALID_DATA,
                         "%s: the footer lists %zu record batches, but another one follows at "
                         "byte offset %zu (damaged footer?)",
                         r->where, r->n_blocks, pos);
}

aq_status aq_ipc_reader_next(aq_ipc_reader *r, struct ArrowArray *out, aq_error *err)
{
    if (r == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_reader_next: NULL argument");
    }
    struct ArrowArray tmp;
    memset(&tmp, 0, sizeof tmp);
    aq_status st = AQ_OK;
    if (r->format == AQ_IPC_FORMAT_FILE) {
        if (r->batches < r->n_blocks) {
            st = rd_next_file(r, &tmp, err);
        } else if (!r->eos) {
            r->eos = true;
            st = rd_check_end(r, err);
        }
    } else {
        while (!r->eos) {
            if (r->pos == r->limit) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "%s: the stream ends at byte offset %zu without the "
                                     "end-of-stream marker (truncated?)",
                                     r->where, r->pos);
            }
            ipc_message m;
            st = rd_message(r, r->pos, r->limit, &m, err);
            if (st != AQ_OK) {
                return st;
            }
            if (m.eos) {
                r->eos = true;
                break;
            }
            if (m.type == AQ__MSG_DICTIONARY) {
                return aq__error_set(err, AQ_UNSUPPORTED,
                                     "%s: dictionary batch at byte offset %zu; dictionaries "
                                     "are not supported",
                                     r->where, m.start);
            }
            if (m.type != AQ__MSG_RECORD_BATCH) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "%s: unexpected message of type %u at byte offset %zu "
                                     "(expected a record batch)",
                                     r->where, (unsigned)m.type, m.start);
            }
            st = rd_batch(r, &m, &tmp, err);
            if (st != AQ_OK) {
                return st;
            }
            r->pos = m.body + m.body_len;
            break;
        }
    }
    if (st != AQ_OK) {
        return st;
    }
    if (tmp.release != NULL) {
        r->batches++;
    }
    aq__array_move(&tmp, out);
    return AQ_OK;
}

/* ---- ArrowArrayStream ---- */

typedef struct ipc_stream_private {
    aq_ipc_reader *reader;
    aq_error err;
} ipc_stream_private;

static int ipc_errno(aq_status st)
{
    switch (st) {
    case AQ_OK:
        return 0;
    case AQ_NO_MEMORY:
        return ENOMEM;
    case AQ_IO:
        return EIO;
    case AQ_UNSUPPORTED:
        return ENOTSUP;
    default:
        return EINVAL;
    }
}

static int ipc_stream_get_schema(struct ArrowArrayStream *s, struct ArrowSchema *out)
{
    ipc_stream_private *p = s->private_data;
    return ipc_errno(aq_ipc_reader_schema(p->reader, out, &p->err));
}

static int ipc_stream_get_next(struct ArrowArrayStream *s, struct ArrowArray *out)
{
    ipc_stream_private *p = s->private_data;
    return ipc_errno(aq_ipc_reader_next(p->reader, out, &p->err));
}

static const char *ipc_stream_last_error(struct ArrowArrayStream *s)
{
    ipc_stream_private *p = s->private_data;
    return p->err.code != AQ_OK ? p->err.message : NULL;
}

static void ipc_stream_release(struct ArrowArrayStream *s)
{
    if (s == NULL || s->release == NULL) {
        return;
    }
    ipc_stream_private *p = s->private_data;
    aq_ipc_reader_free(p->reader);
    free(p);
    s->release = NULL;
}

aq_status aq_ipc_reader_stream(aq_ipc_reader *reader, struct ArrowArrayStream *out, aq_error *err)
{
    if (reader == NULL || out == NULL) {
        aq_ipc_reader_free(reader);
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_reader_stream: NULL argument");
    }
    ipc_stream_private *p = calloc(1, sizeof *p);
    if (p == NULL) {
        aq_ipc_reader_free(reader);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    p->reader = reader;
    out->get_schema = ipc_stream_get_schema;
    out->get_next = ipc_stream_get_next;
    out->get_last_error = ipc_stream_last_error;
    out->release = ipc_stream_release;
    out->private_data = p;
    return AQ_OK;
}
