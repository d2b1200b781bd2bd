/* Arrow IPC writer: stream and file formats, 64-byte aligned, optional body compression,
 * written to a temporary file renamed into place on close. */
#include "ipc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define IPC_ALIGN 64
#define IPC_MAX_DEPTH 64
#define IPC_VERSION_V5 4

typedef struct ipc_wblock {
    int64_t offset;
    int32_t meta_len;
    int64_t body_len;
} ipc_wblock;

struct aq_ipc_writer {
    char *path;
    char *tmp_path;
    int fd;
    size_t pos;      /* bytes written so far */
    uint64_t faults; /* aq_mapped_faults() when opened */
    aq_ipc_write_options opts;
    bool drop_behind;    /* aq__ipc_writer_drop_behind */
    size_t wb_lo, wb_hi; /* the pages whose writeback the last step started */
    size_t page;
    aq__ipc_schema schema;
    ipc_wblock *blocks;
    size_t n_blocks, cap_blocks;
    bool closed;
};

/* One buffer of a batch body: an optional 8-byte prefix (the uncompressed length, when the
 * body is compressed), then len bytes at p. */
typedef struct wbuf {
    bool has_prefix;
    int64_t prefix;
    const uint8_t *p;
    size_t len;
} wbuf;

/* What one batch needs: nodes, buffers and variadic counts in field order, plus the
 * temporary copies (rebased offsets, shifted bitmaps, compressed data) to free afterwards. */
typedef struct wbatch {
    aq_ipc_writer *w;
    int64_t *nodes; /* pairs: length, null_count */
    size_t n_nodes, cap_nodes;
    wbuf *bufs;
    size_t n_bufs, cap_bufs;
    int64_t *variadic;
    size_t n_variadic, cap_variadic;
    void **owned;
    size_t n_owned, cap_owned;
    aq_error *err;
} wbatch;

static bool wb_grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap) {
        return true;
    }
    size_t nc = *cap ? *cap * 2 : 16;
    void *np = realloc(*p, nc * elem);
    if (np == NULL) {
        return false;
    }
    *p = np;
    *cap = nc;
    return true;
}

static aq_status wb_oom(wbatch *b)
{
    return aq__error_set(b->err, AQ_NO_MEMORY, "%s: out of memory writing a batch", b->w->path);
}

static void *wb_alloc(wbatch *b, size_t n)
{
    if (!wb_grow((void **)&b->owned, &b->cap_owned, b->n_owned, sizeof *b->owned)) {
        return NULL;
    }
    void *p = malloc(n > 0 ? n : 1);
    if (p != NULL) {
        b->owned[b->n_owned++] = p;
    }
    return p;
}

static aq_status wb_node(wbatch *b, int64_t length, int64_t nulls)
{
    if (!wb_grow((void **)&b->nodes, &b->cap_nodes, 2 * b->n_nodes + 1, 2 * sizeof *b->nodes)) {
        return wb_oom(b);
    }
    b->nodes[2 * b->n_nodes] = length;
    b->nodes[2 * b->n_nodes + 1] = nulls;
    b->n_nodes++;
    return AQ_OK;
}

static aq_status wb_buf(wbatch *b, const void *p, size_t len)
{
    if (!wb_grow((void **)&b->bufs, &b->cap_bufs, b->n_bufs, sizeof *b->bufs)) {
        return wb_oom(b);
    }
    b->bufs[b->n_bufs++] = (wbuf){false, 0, p, len};
    return AQ_OK;
}

static aq_status wb_fail(wbatch *b, const aq__ipc_field *f, const char *what)
{
    return aq__error_set(b->err, AQ_INVALID_ARGUMENT, "%s: column '%s' (%s): %s", b->w->path,
                         f->name, aq__ipc_type_name(f), what);
}

/* The validity of rows [start, start + n): none when there are no nulls, else a bitmap
 * starting at bit 0 (borrowed when byte-aligned, shifted into a copy otherwise). */
static aq_status wb_validity(wbatch *b, const struct ArrowArray *a, size_t start, size_t n,
                             int64_t *nulls)
{
    const uint8_t *bits = a->n_buffers > 0 ? a->buffers[0] : NULL;
    *nulls = 0;
    if (bits == NULL || a->null_count == 0 || n == 0) {
        return wb_buf(b, NULL, 0);
    }
    size_t bytes = (n + 7) / 8;
    const uint8_t *src = bits + start / 8;
    if (start % 8 != 0) {
        uint8_t *copy = wb_alloc(b, bytes);
        if (copy == NULL) {
            return wb_oom(b);
        }
        memset(copy, 0, bytes);
        for (size_t i = 0; i < n; i++) {
            size_t j = start + i;
            if (((unsigned)bits[j / 8] >> (j % 8)) & 1u) {
                copy[i / 8] = (uint8_t)(copy[i / 8] | (1u << (i % 8)));
            }
        }
        src = copy;
    }
    size_t set = 0;
    for (size_t i = 0; i < n / 8; i++) {
        set += (size_t)__builtin_popcount(src[i]);
    }
    for (size_t i = n / 8 * 8; i < n; i++) {
        set += ((unsigned)src[i / 8] >> (i % 8)) & 1u;
    }
    *nulls = (int64_t)(n - set);
    return wb_buf(b, *nulls > 0 ? src : NULL, *nulls > 0 ? bytes : 0);
}

static int64_t wb_offset(const void *p, int width, size_t i)
{
    if (width == 4) {
        int32_t v;
        memcpy(&v, (const uint8_t *)p + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, (const uint8_t *)p + 8 * i, 8);
    return v;
}

/* Writes the offsets of rows [start, start + n) rebased to start at 0; returns the range of
 * the data (or child) they cover. */
static aq_status wb_offsets(wbatch *b, const aq__ipc_field *f, const struct ArrowArray *a,
                            size_t start, size_t n, int width, size_t *first, size_t *count)
{
    const void *offs = a->buffers[1];
    if (offs == NULL) {
        if (n == 0) {
            *first = *count = 0;
            return wb_buf(b, NULL, 0);
        }
        return wb_fail(b, f, "the offsets buffer is NULL");
    }
    int64_t o0 = wb_offset(offs, width, start), on = wb_offset(offs, width, start + n);
    if (o0 < 0 || on < o0) {
        return wb_fail(b, f, "the offsets are negative or decreasing");
    }
    size_t bytes = (n + 1) * (size_t)width;
    const void *src = (const uint8_t *)offs + start * (size_t)width;
    if (o0 != 0) {
        uint8_t *copy = wb_alloc(b, bytes);
        if (copy == NULL) {
            return wb_oom(b);
        }
        for (size_t i = 0; i <= n; i++) {
            int64_t v = wb_offset(offs, width, start + i) - o0;
            if (width == 4) {
                int32_t v32 = (int32_t)v;
                memcpy(copy + 4 * i, &v32, 4);
            } else {
                memcpy(copy + 8 * i, &v, 8);
            }
        }
        src = copy;
    }
    *first = (size_t)o0;
    *count = (size_t)(on - o0);
    return wb_buf(b, src, bytes);
}

static aq_status wb_field(wbatch *b, const aq__ipc_field *f, const struct ArrowArray *a,
                          size_t start, size_t n, int depth);

/* Checks the node's shape (buffers, children, length) before reading it. */
static aq_status wb_check(wbatch *b, const aq__ipc_field *f, const struct ArrowArray *a,
                          size_t start, size_t n, int64_t n_buffers, int depth)
{
    if (a == NULL || a->release == NULL) {
        return wb_fail(b, f, "the array is NULL or released");
    }
    if (depth > IPC_MAX_DEPTH) {
        return wb_fail(b, f, "nested too deep");
    }
    if ((n_buffers >= 0 && a->n_buffers != n_buffers) || (a->n_buffers > 0 && a->buffers == NULL)) {
        return wb_fail(b, f, "the array has the wrong number of buffers for its type");
    }
    if ((int64_t)f->n_children != a->n_children || (a->n_children > 0 && a->children == NULL)) {
        return wb_fail(b, f, "the array has the wrong number of children for its type");
    }
    if (a->length < 0 || a->offset < 0 || start < (size_t)a->offset ||
        start + n > (size_t)a->offset + (size_t)a->length) {
        return wb_fail(b, f, "the array is shorter than its parent says");
    }
    return AQ_OK;
}

static aq_status wb_field(wbatch *b, const aq__ipc_field *f, const struct ArrowArray *a,
                          size_t start, size_t n, int depth)
{
    int64_t expect = 2;
    switch (f->kind) {
    case AQ__K_NULL:
        expect = 0;
        break;
    case AQ__K_BINARY:
    case AQ__K_UTF8:
    case AQ__K_LARGE_BINARY:
    case AQ__K_LARGE_UTF8:
        expect = 3;
        break;
    case AQ__K_FIXED_SIZE_LIST:
    case AQ__K_STRUCT:
        expect = 1;
        break;
    case AQ__K_BINARY_VIEW:
    case AQ__K_UTF8_VIEW:
        expect = -1;
        break;
    default:
        break;
    }
    aq_status st = wb_check(b, f, a, start, n, expect, depth);
    if (st != AQ_OK) {
        return st;
    }
    if (f->kind == AQ__K_NULL) {
        return wb_node(b, (int64_t)n, (int64_t)n);
    }
    size_t node = b->n_nodes;
    st = wb_node(b, (int64_t)n, 0);
    int64_t nulls = 0;
    if (st == AQ_OK) {
        st = wb_validity(b, a, start, n, &nulls);
    }
    if (st != AQ_OK) {
        return st;
    }
    b->nodes[2 * node + 1] = nulls;
    size_t first, count;
    switch (f->kind) {
    case AQ__K_INT:
    case AQ__K_FLOAT: {
        size_t w = (size_t)f->bit_width / 8;
        if (a->buffers[1] == NULL && n > 0) {
            return wb_fail(b, f, "the data buffer is NULL");
        }
        return wb_buf(b, n > 0 ? (const uint8_t *)a->buffers[1] + start * w : NULL, n * w);
    }
    case AQ__K_BINARY:
    case AQ__K_UTF8:
    case AQ__K_LARGE_BINARY:
    case AQ__K_LARGE_UTF8: {
        int width = (f->kind == AQ__K_BINARY || f->kind == AQ__K_UTF8) ? 4 : 8;
        st = wb_offsets(b, f, a, start, n, width, &first, &count);
        if (st != AQ_OK) {
            return st;
        }
        if (count > 0 && a->buffers[2] == NULL) {
            return wb_fail(b, f, "the data buffer is NULL");
        }
        return wb_buf(b, count > 0 ? (const uint8_t *)a->buffers[2] + first : NULL, count);
    }
    case AQ__K_LIST:
    case AQ__K_LARGE_LIST: {
        st = wb_offsets(b, f, a, start, n, f->kind == AQ__K_LIST ? 4 : 8, &first, &count);
        if (st != AQ_OK) {
            return st;
        }
        const struct ArrowArray *c = a->children[0];
        return wb_field(b, &f->children[0], c, (c ? (size_t)c->offset : 0) + first, count,
                        depth + 1);
    }
    case AQ__K_FIXED_SIZE_LIST: {
        const struct ArrowArray *c = a->children[0];
        size_t k = (size_t)f->list_size;
        return wb_field(b, &f->children[0], c, (c ? (size_t)c->offset : 0) + start * k, n * k,
                        depth + 1);
    }
    case AQ__K_STRUCT:
        for (size_t i = 0; i < f->n_children && st == AQ_OK; i++) {
            const struct ArrowArray *c = a->children[i];
            st = wb_field(b, &f->children[i], c, (c ? (size_t)c->offset : 0) + start, n, depth + 1);
        }
        return st;
    case AQ__K_BINARY_VIEW:
    case AQ__K_UTF8_VIEW: {
        if (a->n_buffers < 3) {
            return wb_fail(b, f, "a view array needs at least 3 buffers");
        }
        size_t nvar = (size_t)a->n_buffers - 3;
        const int64_t *sizes = a->buffers[a->n_buffers - 1];
        if ((a->buffers[1] == NULL && n > 0) || (sizes == NULL && nvar > 0)) {
            return wb_fail(b, f, "a view array has a NULL buffer");
        }
        st = wb_buf(b, n > 0 ? (const uint8_t *)a->buffers[1] + 16 * start : NULL, 16 * n);
        for (size_t k = 0; k < nvar && st == AQ_OK; k++) {
            if (sizes[k] < 0) {
                return wb_fail(b, f, "a variadic buffer has a negative size");
            }
            st = wb_buf(b, a->buffers[2 + k], (size_t)sizes[k]);
        }
        if (st == AQ_OK &&
            !wb_grow((void **)&b->variadic, &b->cap_variadic, b->n_variadic, sizeof(int64_t))) {
            return wb_oom(b);
        }
        if (st == AQ_OK) {
            b->variadic[b->n_variadic++] = (int64_t)nvar;
        }
        return st;
    }
    default:
        return AQ_OK;
    }
}

static void wb_reset(wbatch *b)
{
    for (size_t i = 0; i < b->n_owned; i++) {
        free(b->owned[i]);
    }
    free(b->owned);
    free(b->nodes);
    free(b->bufs);
    free(b->variadic);
}

/* ---- output ---- */

/* Drop-behind (aq__ipc_writer_drop_behind). Every W_DROP_CHUNK bytes written, and after each
 * record batch, writeback of the whole pages written since the last step starts at once, and
 * the pages of the step before, whose writeback has had that long to finish, are waited for
 * and dropped from the page cache. So the file keeps about two chunks in the cache, later
 * writes reuse the pages just freed (a page the system has not used for a few seconds costs
 * about ten times as much to write into on this VM: docs/decisions.md, "The write path"), and
 * the final fsync waits for the last chunk only. A file that cannot do this (not Linux, a
 * pipe) is written as usual; a failed writeback is reported as the write's error. */
#define W_DROP_CHUNK ((size_t)8 << 20)

static aq_status w_drop_behind(aq_ipc_writer *w, aq_error *err)
{
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE) && defined(POSIX_FADV_DONTNEED)
    if (!w->drop_behind) {
        return AQ_OK;
    }
    size_t hi = w->pos / w->page * w->page;
    if (hi == w->wb_hi) {
        return AQ_OK;
    }
    const char *failed = NULL;
    if (w->wb_hi > w->wb_lo) {
        const unsigned int wait =
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
        if (sync_file_range(w->fd, (off_t)w->wb_lo, (off_t)(w->wb_hi - w->wb_lo), wait) != 0) {
            failed = "writing back";
        } else {
            (void)posix_fadvise(w->fd, (off_t)w->wb_lo, (off_t)(w->wb_hi - w->wb_lo),
                                POSIX_FADV_DONTNEED);
        }
    }
    if (failed == NULL) {
        w->wb_lo = w->wb_hi;
        w->wb_hi = hi;
        if (sync_file_range(w->fd, (off_t)w->wb_lo, (off_t)(w->wb_hi - w->wb_lo),
                            SYNC_FILE_RANGE_WRITE) != 0) {
            failed = "starting writeback of";
        }
    }
    if (failed != NULL) {
        if (errno == EIO || errno == ENOSPC || errno == EDQUOT) {
            return aq__error_set(err, AQ_IO, "%s: %s bytes %zu to %zu failed: %s", w->path, failed,
                                 w->wb_lo, w->wb_hi, strerror(errno));
        }
        w->drop_behind = false; /* not supported on this file */
    }
#else
    (void)w;
    (void)err;
#endif
    return AQ_OK;
}

void aq__ipc_writer_drop_behind(aq_ipc_writer *w, bool on)
{
    long page = sysconf(_SC_PAGESIZE);
    w->page = page > 0 ? (size_t)page : 4096;
    w->drop_behind = on;
    w->wb_lo = w->wb_hi = w->pos / w->page * w->page;
}

static aq_status w_write(aq_ipc_writer *w, const void *p, size_t n, aq_error *err)
{
    const uint8_t *c = p;
    while (n > 0) {
        size_t m = n > (1u << 30) ? (1u << 30) : n;
        if (w->drop_behind && m > w->wb_hi + W_DROP_CHUNK - w->pos) {
            m = w->wb_hi + W_DROP_CHUNK - w->pos; /* > 0: the step below ran at the bound */
        }
        ssize_t r = write(w->fd, c, m);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return aq__error_set(err, AQ_IO, "%s: write failed after %zu bytes: %s", w->path,
                                 w->pos, strerror(errno));
        }
        c += r;
        n -= (size_t)r;
        w->pos += (size_t)r;
        if (w->drop_behind && w->pos - w->wb_hi >= W_DROP_CHUNK) {
            aq_status st = w_drop_behind(w, err);
            if (st != AQ_OK) {
                return st;
            }
        }
    }
    return AQ_OK;
}

static aq_status w_pad(aq_ipc_writer *w, size_t align, aq_error *err)
{
    static const uint8_t zeros[IPC_ALIGN];
    size_t pad = (align - w->pos % align) % align;
    return w_write(w, zeros, pad, err);
}

/* Writes one message: the continuation marker, the metadata length, the flatbuffer padded so
 * that the body starts 64-byte aligned, then the body; fills *block (may be NULL). */
static aq_status w_message(aq_ipc_writer *w, const aq__fbb *fb, const wbuf *bufs, size_t n_bufs,
                           const size_t *buf_offsets, size_t body_len, ipc_wblock *block,
                           aq_error *err)
{
    if (fb->oom) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory building metadata", w->path);
    }
    size_t start = w->pos;
    size_t end = start + 8 + fb->len;
    size_t meta = 8 + fb->len + (IPC_ALIGN - end % IPC_ALIGN) % IPC_ALIGN;
    if (meta - 8 > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW, "%s: metadata too large", w->path);
    }
    uint32_t head[2] = {0xFFFFFFFFu, (uint32_t)(meta - 8)};
    aq_status st = w_write(w, head, 8, err);
    if (st == AQ_OK) {
        st = w_write(w, fb->buf, fb->len, err);
    }
    if (st == AQ_OK) {
        st = w_pad(w, IPC_ALIGN, err);
    }
    const size_t body = w->pos;
    for (size_t i = 0; i < n_bufs && st == AQ_OK; i++) {
        static const uint8_t zeros[IPC_ALIGN];
        size_t gap = body + buf_offsets[i] - w->pos;
        st = w_write(w, zeros, gap, err);
        if (st == AQ_OK && bufs[i].has_prefix) {
            st = w_write(w, &bufs[i].prefix, 8, err);
        }
        if (st == AQ_OK) {
            st = w_write(w, bufs[i].p, bufs[i].len, err);
        }
    }
    if (st == AQ_OK) {
        st = w_pad(w, IPC_ALIGN, err);
    }
    if (st == AQ_OK && block != NULL) {
        *block = (ipc_wblock){(int64_t)start, (int32_t)meta, (int64_t)body_len};
    }
    return st;
}

/* Message { version, header_type, header, bodyLength }; returns the header reference. */
static size_t w_message_table(aq__fbb *fb, uint8_t type, size_t body_len)
{
    aq__fbb_start(fb);
    aq__fbf fs[4] = {{0, 2, IPC_VERSION_V5}, {1, 1, type}, {2, 0, 0}, {3, 8, body_len}};
    size_t ref;
    size_t t = aq__fbb_table(fb, fs, 4, &ref);
    aq__fbb_patch(fb, 0, t);
    return ref;
}

static aq_status w_compress(wbatch *b, aq_error *err)
{
    aq_ipc_compression codec = b->w->opts.compression;
    for (size_t i = 0; i < b->n_bufs; i++) {
        wbuf *x = &b->bufs[i];
        if (x->len == 0) {
            continue;
        }
        x->has_prefix = true;
        x->prefix = -1;
        size_t cap = aq__ipc_compress_bound(codec, x->len);
        uint8_t *dst = wb_alloc(b, cap);
        if (dst == NULL) {
            return wb_oom(b);
        }
        size_t n;
        aq_status st =
            aq__ipc_compress(codec, b->w->opts.compression_level, x->p, x->len, dst, cap, &n, err);
        if (st != AQ_OK) {
            return st;
        }
        /* Stored compressed even when it does not shrink (the format would allow it as is,
         * length -1): the frame's content checksum is then over every buffer of the file,
         * for a few bytes a buffer (docs/format.md 6.2). */
        x->prefix = (int64_t)x->len;
        x->p = dst;
        x->len = n;
    }
    return AQ_OK;
}

static aq_status w_batch(aq_ipc_writer *w, wbatch *b, int64_t length, aq_error *err)
{
    aq_status st = AQ_OK;
    if (w->opts.compression != AQ_IPC_COMPRESSION_NONE) {
        st = w_compress(b, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    size_t *offsets = calloc(b->n_bufs + 1, sizeof *offsets);
    int64_t *descr = calloc(2 * b->n_bufs + 1, sizeof *descr);
    aq__fbb fb;
    aq__fbb_init(&fb);
    if (offsets == NULL || descr == NULL) {
        st = wb_oom(b);
        goto done;
    }
    size_t body = 0;
    for (size_t i = 0; i < b->n_bufs; i++) {
        size_t len = b->bufs[i].len + (b->bufs[i].has_prefix ? 8 : 0);
        offsets[i] = body;
        descr[2 * i] = (int64_t)body;
        descr[2 * i + 1] = (int64_t)len;
        body += (len + IPC_ALIGN - 1) / IPC_ALIGN * IPC_ALIGN;
    }
    size_t hdr = w_message_table(&fb, AQ__MSG_RECORD_BATCH, body);
    bool compressed = w->opts.compression != AQ_IPC_COMPRESSION_NONE;
    aq__fbf rb[5] = {{0, 8, (uint64_t)length}, {1, 0, 0}, {2, 0, 0}, {3, 0, 0}, {4, 0, 0}};
    aq__fbf rb_used[5];
    size_t n_rb = 0;
    rb_used[n_rb++] = rb[0];
    rb_used[n_rb++] = rb[1];
    rb_used[n_rb++] = rb[2];
    if (compressed) {
        rb_used[n_rb++] = rb[3];
    }
    if (b->n_variadic > 0) {
        rb_used[n_rb++] = rb[4];
    }
    size_t refs[4];
    size_t t = aq__fbb_table(&fb, rb_used, n_rb, refs);
    aq__fbb_patch(&fb, hdr, t);
    aq__fbb_patch(&fb, refs[0], aq__fbb_vector(&fb, b->n_nodes, 16, 8, b->nodes, NULL));
    aq__fbb_patch(&fb, refs[1], aq__fbb_vector(&fb, b->n_bufs, 16, 8, descr, NULL));
    size_t r = 2;
    if (compressed) {
        aq__fbf c = {0, 1, w->opts.compression == AQ_IPC_COMPRESSION_ZSTD ? 1u : 0u};
        aq__fbb_patch(&fb, refs[r++], aq__fbb_table(&fb, &c, 1, NULL));
    }
    if (b->n_variadic > 0) {
        aq__fbb_patch(&fb, refs[r], aq__fbb_vector(&fb, b->n_variadic, 8, 8, b->variadic, NULL));
    }
    if (!wb_grow((void **)&w->blocks, &w->cap_blocks, w->n_blocks, sizeof *w->blocks)) {
        st = wb_oom(b);
        goto done;
    }
    st = w_message(w, &fb, b->bufs, b->n_bufs, offsets, body, &w->blocks[w->n_blocks], err);
    if (st == AQ_OK) {
        w->n_blocks++;
    }
done:
    aq__fbb_reset(&fb);
    free(offsets);
    free(descr);
    return st;
}

/* ---- public API ---- */

static void w_discard(aq_ipc_writer *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    aq__tmpfile_forget(w->tmp_path);
    if (w->tmp_path != NULL && !w->closed) {
        unlink(w->tmp_path);
    }
}

void aq_ipc_writer_free(aq_ipc_writer *w)
{
    if (w == NULL) {
        return;
    }
    w_discard(w);
    aq__ipc_field_reset(&w->schema.root);
    free(w->blocks);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

aq_status aq_ipc_writer_open(const char *path, const struct ArrowSchema *schema,
                             const aq_ipc_write_options *opts, aq_ipc_writer **out, aq_error *err)
{
    if (path == NULL || schema == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_writer_open: NULL argument");
    }
    aq_ipc_write_options o;
    aq_status ost = AQ__OPTS_READ(aq_ipc_write_options, compression_level, o, opts, err);
    if (ost != AQ_OK) {
        return ost;
    }
    if (o.format != AQ_IPC_FORMAT_STREAM && o.format != AQ_IPC_FORMAT_FILE) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "unknown IPC format %d", (int)o.format);
    }
    if (o.compression != AQ_IPC_COMPRESSION_NONE && o.compression != AQ_IPC_COMPRESSION_ZSTD &&
        o.compression != AQ_IPC_COMPRESSION_LZ4_FRAME) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "unknown IPC compression %d",
                             (int)o.compression);
    }
    aq_status st;
    aq__fbb fb;
    aq__fbb_init(&fb);
    aq_ipc_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    w->fd = -1;
    w->opts = o;
    size_t plen = strlen(path);
    w->path = malloc(plen + 1);
    if (w->path == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(w->path, path, plen + 1);
    st = aq__ipc_schema_import(schema, &w->schema, err);
    if (st != AQ_OK) {
        aq__error_prefix(err, "%s", path);
        goto done;
    }
    w->faults = aq_mapped_faults();
    if ((st = aq__tmpfile_create(path, &w->tmp_path, &w->fd, err)) != AQ_OK) {
        goto done;
    }
    if (o.format == AQ_IPC_FORMAT_FILE) {
        st = w_write(w, "ARROW1\0\0", 8, err);
        if (st != AQ_OK) {
            goto done;
        }
    }
    size_t hdr = w_message_table(&fb, AQ__MSG_SCHEMA, 0);
    aq__fbb_patch(&fb, hdr, aq__ipc_schema_write(&fb, &w->schema));
    st = w_message(w, &fb, NULL, 0, NULL, 0, NULL, err);
done:
    aq__fbb_reset(&fb);
    if (st != AQ_OK) {
        aq_ipc_writer_free(w);
        return st;
    }
    *out = w;
    return AQ_OK;
}

aq_status aq_ipc_writer_write(aq_ipc_writer *w, const struct ArrowArray *batch, aq_error *err)
{
    if (w == NULL || batch == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_writer_write: NULL argument");
    }
    if (w->fd < 0 || w->closed) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the writer is closed or failed",
                             w->path);
    }
    const aq__ipc_field *root = &w->schema.root;
    if (batch->release == NULL || batch->length < 0 || batch->offset < 0 ||
        batch->n_children != (int64_t)root->n_children ||
        (batch->n_children > 0 && batch->children == NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "%s: the batch is not a struct array of the schema's %zu columns",
                             w->path, root->n_children);
    }
    if (batch->null_count > 0 && batch->n_buffers > 0 && batch->buffers != NULL &&
        batch->buffers[0] != NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "%s: the batch (a struct array) has null rows; a record batch "
                             "cannot",
                             w->path);
    }
    wbatch b;
    memset(&b, 0, sizeof b);
    b.w = w;
    b.err = err;
    aq_status st = AQ_OK;
    size_t n = (size_t)batch->length;
    for (size_t i = 0; i < root->n_children && st == AQ_OK; i++) {
        const struct ArrowArray *c = batch->children[i];
        size_t start = (c ? (size_t)c->offset : 0) + (size_t)batch->offset;
        st = wb_field(&b, &root->children[i], c, start, n, 1);
    }
    if (st == AQ_OK) {
        st = w_batch(w, &b, batch->length, err);
    }
    if (st == AQ_OK) {
        st = w_drop_behind(w, err);
    }
    wb_reset(&b);
    if (st != AQ_OK && st != AQ_INVALID_ARGUMENT) {
        /* The output is now in an unknown state: stop here. */
        w_discard(w);
    }
    return st;
}

static aq_status w_footer(aq_ipc_writer *w, aq_error *err)
{
    aq__fbb fb;
    aq__fbb_init(&fb);
    aq__fbb_start(&fb);
    aq__fbf fs[4] = {{0, 2, IPC_VERSION_V5}, {1, 0, 0}, {2, 0, 0}, {3, 0, 0}};
    size_t refs[3];
    size_t t = aq__fbb_table(&fb, fs, 4, refs);
    aq__fbb_patch(&fb, 0, t);
    aq__fbb_patch(&fb, refs[0], aq__ipc_schema_write(&fb, &w->schema));
    aq__fbb_patch(&fb, refs[1], aq__fbb_vector(&fb, 0, 24, 8, NULL, NULL));
    size_t first;
    aq__fbb_patch(&fb, refs[2], aq__fbb_vector(&fb, w->n_blocks, 24, 8, NULL, &first));
    if (!fb.oom) {
        for (size_t i = 0; i < w->n_blocks; i++) {
            uint8_t *e = fb.buf + first + 24 * i;
            memcpy(e, &w->blocks[i].offset, 8);
            memcpy(e + 8, &w->blocks[i].meta_len, 4);
            memcpy(e + 16, &w->blocks[i].body_len, 8);
        }
    }
    aq_status st;
    if (fb.oom || fb.len > INT32_MAX) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: cannot build the footer", w->path);
    } else {
        int32_t len = (int32_t)fb.len;
        st = w_write(w, fb.buf, fb.len, err);
        if (st == AQ_OK) {
            st = w_write(w, &len, 4, err);
        }
        if (st == AQ_OK) {
            st = w_write(w, "ARROW1", 6, err);
        }
    }
    aq__fbb_reset(&fb);
    return st;
}

aq_status aq_ipc_writer_close(aq_ipc_writer *w, aq_error *err)
{
    if (w == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_writer_close: NULL argument");
    }
    if (w->fd < 0 || w->closed) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the writer is closed or failed",
                             w->path);
    }
    static const uint32_t eos[2] = {0xFFFFFFFFu, 0};
    /* An input truncated while it was read gave zeros: they must not land under the name. */
    aq_status st = aq_mapped_check(w->faults, err);
    if (st == AQ_OK) {
        st = w_write(w, eos, 8, err);
    }
    if (st == AQ_OK && w->opts.format == AQ_IPC_FORMAT_FILE) {
        st = w_footer(w, err);
    }
    if (st == AQ_OK && fsync(w->fd) != 0) {
        st = aq__error_set(err, AQ_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    }
    if (st == AQ_OK) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) {
            st = aq__error_set(err, AQ_IO, "%s: close failed: %s", w->path, strerror(errno));
        }
    }
    aq__tmpfile_forget(w->tmp_path);
    if (st == AQ_OK && rename(w->tmp_path, w->path) != 0) {
        st = aq__error_set(err, AQ_IO, "%s: cannot rename %s into place: %s", w->path, w->tmp_path,
                           strerror(errno));
    }
    if (st != AQ_OK) {
        w_discard(w);
        return st;
    }
    w->closed = true;
    /* Make the rename itself durable. */
    char *dir_buf = malloc(strlen(w->path) + 1);
    if (dir_buf != NULL) {
        strcpy(dir_buf, w->path);
        int dfd = open(dirname(dir_buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir_buf);
    }
    return AQ_OK;
}

aq_status aq_ipc_write_stream(const char *path, struct ArrowArrayStream *stream,
                              const aq_ipc_write_options *opts, aq_error *err)
{
    if (path == NULL || stream == NULL || stream->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ipc_write_stream: NULL argument");
    }
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    struct ArrowArray batch;
    memset(&batch, 0, sizeof batch);
    aq_ipc_writer *w = NULL;
    aq_status st;
    int rc = stream->get_schema(stream, &schema);
    if (rc != 0) {
        const char *m = stream->get_last_error ? stream->get_last_error(stream) : NULL;
        st = aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the input stream has no schema: %s", path,
                           m ? m : strerror(rc));
        goto done;
    }
    st = aq_ipc_writer_open(path, &schema, opts, &w, err);
    while (st == AQ_OK) {
        rc = stream->get_next(stream, &batch);
        if (rc != 0) {
            const char *m = stream->get_last_error ? stream->get_last_error(stream) : NULL;
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the input stream failed: %s", path,
                               m ? m : strerror(rc));
            break;
        }
        if (batch.release == NULL) {
            st = aq_ipc_writer_close(w, err);
            break;
        }
        st = aq_ipc_writer_write(w, &batch, err);
        batch.release(&batch);
    }
done:
    aq_ipc_writer_free(w);
    aq__schema_release_if(&schema);
    return st;
}
