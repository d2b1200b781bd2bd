/* The IPC reader and writer from C: round trips, atomic output, and bad input (truncation at
 * every byte and message boundary, bad magic, lengths and offsets outside the file, negative
 * lengths, schema/batch mismatch, unknown codec, corrupt compressed data). */
#include "../arrow/arrow_test_util.h"
#include "aq_common.h"
#include "aq_test.h"
#include "arrow_owned.h"
#include "flatbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a small batch built by hand: layer_name utf8, weights list<float32>, shape
 * list<int64>, bits uint8 (with a null) ---- */

static void ti_build(struct ArrowSchema *s, struct ArrowArray *a, int seed)
{
    aq_error err;
    if (aq__schema_alloc(s, "+s", NULL, 0, 4, &err) != AQ_OK ||
        aq__schema_alloc(s->children[0], "u", "layer_name", ARROW_FLAG_NULLABLE, 0, &err) ||
        aq__schema_alloc(s->children[1], "+l", "weights", ARROW_FLAG_NULLABLE, 1, &err) ||
        aq__schema_alloc(s->children[1]->children[0], "f", "item", ARROW_FLAG_NULLABLE, 0, &err) ||
        aq__schema_alloc(s->children[2], "+l", "shape", ARROW_FLAG_NULLABLE, 1, &err) ||
        aq__schema_alloc(s->children[2]->children[0], "l", "item", ARROW_FLAG_NULLABLE, 0, &err) ||
        aq__schema_alloc(s->children[3], "C", "bits", ARROW_FLAG_NULLABLE, 0, &err)) {
        abort();
    }
    const char *keys[] = {"arrowquant.scheme", "bin\x01"};
    const char *vals[] = {"affine", "x"};
    if (aq__schema_set_metadata(s, keys, vals, 2, &err) != AQ_OK) {
        abort();
    }
    const int64_t rows = 3;
    if (aq__array_alloc(a, rows, 1, 4, &err) != AQ_OK) {
        abort();
    }
    /* layer_name */
    struct ArrowArray *c = a->children[0];
    (void)aq__array_alloc(c, rows, 3, 0, &err);
    int32_t *no = aq__array_buffer_alloc(c, 1, 4 * sizeof(int32_t));
    char *nd = aq__array_buffer_alloc(c, 2, 32);
    no[0] = 0;
    no[1] = 5;
    no[2] = 9;
    no[3] = 17;
    memcpy(nd, "conv1fc.1down.0.w", 17);
    nd[0] = (char)('a' + seed);
    /* weights: 2, 0, 3 floats */
    c = a->children[1];
    (void)aq__array_alloc(c, rows, 2, 1, &err);
    int32_t *wo = aq__array_buffer_alloc(c, 1, 4 * sizeof(int32_t));
    wo[0] = 0;
    wo[1] = 2;
    wo[2] = 2;
    wo[3] = 5;
    (void)aq__array_alloc(c->children[0], 5, 2, 0, &err);
    float *wv = aq__array_buffer_alloc(c->children[0], 1, 5 * sizeof(float));
    for (int i = 0; i < 5; i++) {
        wv[i] = (float)(i + seed) * 0.5f;
    }
    /* shape: [2], [0], [3] */
    c = a->children[2];
    (void)aq__array_alloc(c, rows, 2, 1, &err);
    int32_t *so = aq__array_buffer_alloc(c, 1, 4 * sizeof(int32_t));
    so[0] = 0;
    so[1] = 1;
    so[2] = 2;
    so[3] = 3;
    (void)aq__array_alloc(c->children[0], 3, 2, 0, &err);
    int64_t *sv = aq__array_buffer_alloc(c->children[0], 1, 3 * sizeof(int64_t));
    sv[0] = 2;
    sv[1] = 0;
    sv[2] = 3;
    /* bits: 4, null, 8 */
    c = a->children[3];
    (void)aq__array_alloc(c, rows, 2, 0, &err);
    uint8_t *bv = aq__array_buffer_alloc(c, 0, 1);
    bv[0] = 0x5;
    c->null_count = 1;
    uint8_t *bd = aq__array_buffer_alloc(c, 1, 3);
    bd[0] = 4;
    bd[1] = 0;
    bd[2] = 8;
}

static char ti_dir[256];

/* At exit: the test's folder goes (each test unlinks its files; a failed one may leave some,
 * and then the folder stays for a look). */
static void ti_remove_dir(void)
{
    rmdir(ti_dir);
}

static const char *ti_path(const char *name)
{
    static char path[512];
    if (ti_dir[0] == '\0') {
        snprintf(ti_dir, sizeof ti_dir, "/tmp/aq_test_ipc_XXXXXX");
        if (mkdtemp(ti_dir) == NULL) {
            abort();
        }
        atexit(ti_remove_dir);
    }
    snprintf(path, sizeof path, "%s/%s", ti_dir, name);
    return path;
}

/* Writes `batches` copies of the test batch. */
static aq_status ti_write(const char *path, aq_ipc_format fmt, aq_ipc_compression comp, int batches,
                          aq_error *err)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    ti_build(&s, &a, 0);
    aq_ipc_write_options o = {.size = sizeof(aq_ipc_write_options),
                              .format = fmt,
                              .compression = comp,
                              .compression_level = 0};
    aq_ipc_writer *w = NULL;
    aq_status st = aq_ipc_writer_open(path, &s, &o, &w, err);
    for (int i = 0; i < batches && st == AQ_OK; i++) {
        st = aq_ipc_writer_write(w, &a, err);
    }
    if (st == AQ_OK) {
        st = aq_ipc_writer_close(w, err);
    }
    aq_ipc_writer_free(w);
    s.release(&s);
    a.release(&a);
    return st;
}

/* Checks a read batch against ti_build(seed 0). */
static bool ti_same(const struct ArrowArray *a)
{
    if (a->length != 3 || a->n_children != 4) {
        return false;
    }
    const struct ArrowArray *n = a->children[0];
    const int32_t *no = n->buffers[1];
    if (no[3] != 17 || memcmp((const char *)n->buffers[2] + no[1], "fc.1", 4) != 0) {
        return false;
    }
    const float *w = a->children[1]->children[0]->buffers[1];
    const int32_t *wo = a->children[1]->buffers[1];
    if (wo[3] != 5 || w[4] != 2.0f) {
        return false;
    }
    const int64_t *sv = a->children[2]->children[0]->buffers[1];
    if (sv[2] != 3) {
        return false;
    }
    const struct ArrowArray *b = a->children[3];
    const uint8_t *bv = b->buffers[0], *bd = b->buffers[1];
    return b->null_count == 1 && (bv[0] & 7) == 5 && bd[0] == 4 && bd[2] == 8;
}

static aq_status ti_read_all(aq_ipc_reader *r, size_t *n_batches, aq_error *err)
{
    *n_batches = 0;
    for (;;) {
        struct ArrowArray a;
        aq_status st = aq_ipc_reader_next(r, &a, err);
        if (st != AQ_OK) {
            return st;
        }
        if (a.release == NULL) {
            return AQ_OK;
        }
        bool same = ti_same(&a);
        a.release(&a);
        if (!same) {
            return aq__error_set(err, AQ_INTERNAL, "batch %zu differs", *n_batches);
        }
        ++*n_batches;
    }
}

/* True when C Data Interface metadata holds key with the given value. */
static bool ti_meta_is(const char *m, const char *key, const char *value)
{
    char buf[256];
    return m != NULL && meta_get(m, key, buf, sizeof buf) != NULL && strcmp(buf, value) == 0;
}

TEST(roundtrip_all_formats_and_codecs)
{
    aq_error err;
    for (int fmt = 0; fmt < 2; fmt++) {
        for (int comp = 0; comp < 3; comp++) {
            const char *p = ti_path("rt.arrow");
            CHECK_OK(ti_write(p, (aq_ipc_format)fmt, (aq_ipc_compression)comp, 3, &err));
            aq_ipc_reader *r = NULL;
            CHECK_OK(aq_ipc_reader_open(p, &r, &err));
            CHECK(aq_ipc_reader_format(r) == (aq_ipc_format)fmt);
            /* the file format knows its batches from the footer; a stream counts as it reads */
            CHECK(aq_ipc_reader_num_batches(r) == (fmt == AQ_IPC_FORMAT_FILE ? 3u : 0u));
            struct ArrowSchema s;
            CHECK_OK(aq_ipc_reader_schema(r, &s, &err));
            CHECK(strcmp(s.format, "+s") == 0 && s.n_children == 4);
            CHECK(strcmp(s.children[1]->children[0]->format, "f") == 0);
            CHECK(ti_meta_is(s.metadata, "arrowquant.scheme", "affine"));
            CHECK(ti_meta_is(s.metadata, "bin\x01", "x"));
            s.release(&s);
            size_t n;
            CHECK_OK(ti_read_all(r, &n, &err));
            CHECK_MSG(n == 3, "fmt %d comp %d: %zu batches", fmt, comp, n);
            CHECK(aq_ipc_reader_num_batches(r) == 3);
            aq_ipc_reader_free(r);
            unlink(p);
        }
    }
}

/* ---- bad input ---- */

typedef struct ti_bytes {
    uint8_t *p;
    size_t n;
} ti_bytes;

static ti_bytes ti_load(const char *path)
{
    ti_bytes b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return b;
    }
    fseek(f, 0, SEEK_END);
    b.n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc(b.n);
    if (b.p == NULL || fread(b.p, 1, b.n, f) != b.n) {
        abort();
    }
    fclose(f);
    return b;
}

/* Writes a file of our test batches and loads its bytes. */
static ti_bytes ti_make(aq_ipc_format fmt, aq_ipc_compression comp, int batches)
{
    aq_error err;
    const char *p = ti_path("bad.arrow");
    if (ti_write(p, fmt, comp, batches, &err) != AQ_OK) {
        fprintf(stderr, "%s\n", err.message);
        abort();
    }
    ti_bytes b = ti_load(p);
    unlink(p);
    return b;
}

/* Opens and reads everything; returns the first failure (or AQ_OK) with its message. */
static aq_status ti_read_bytes(const uint8_t *p, size_t n, size_t *batches, aq_error *err)
{
    aq_ipc_reader *r = NULL;
    *batches = 0;
    aq_status st = aq_ipc_reader_open_memory(p, n, &r, err);
    if (st != AQ_OK) {
        return st;
    }
    struct ArrowSchema s;
    st = aq_ipc_reader_schema(r, &s, err);
    if (st == AQ_OK) {
        s.release(&s);
    }
    while (st == AQ_OK) {
        struct ArrowArray a;
        st = aq_ipc_reader_next(r, &a, err);
        if (st != AQ_OK || a.release == NULL) {
            break;
        }
        ++*batches;
        a.release(&a);
    }
    aq_ipc_reader_free(r);
    return st;
}

/* A message of the stream: where it starts, its flatbuffer, its body. */
typedef struct ti_msg {
    size_t start, fb, fb_len, body, body_len;
    aq__fbt header;
} ti_msg;

static size_t ti_messages(const ti_bytes *b, ti_msg *out, size_t cap)
{
    size_t pos = memcmp(b->p, "ARROW1", 6) == 0 ? 8 : 0, n = 0;
    while (n < cap) {
        int32_t len;
        memcpy(&len, b->p + pos + 4, 4);
        if (len == 0) {
            break;
        }
        ti_msg *m = &out[n++];
        m->start = pos;
        m->fb = pos + 8;
        m->fb_len = (size_t)len;
        aq__fbt msg;
        int64_t body_len;
        if (aq__fb_root(b->p + m->fb, m->fb_len, &msg) != AQ__FB_OK ||
            aq__fbt_i64(&msg, 3, 0, &body_len) != AQ__FB_OK ||
            aq__fbt_table(&msg, 2, &m->header) != AQ__FB_OK) {
            abort();
        }
        m->body = m->fb + m->fb_len;
        m->body_len = (size_t)body_len;
        pos = m->body + m->body_len;
    }
    return n;
}

/* The absolute position of a field of a table found in message m. */
static size_t ti_field_pos(const ti_msg *m, const aq__fbt *t, unsigned slot)
{
    uint16_t off;
    memcpy(&off, t->buf + t->vtable + 4 + 2 * slot, 2);
    return m->fb + t->pos + off;
}

/* The absolute position of element 0 of a vector field of a message's header. */
static size_t ti_vector_pos(const ti_msg *m, unsigned slot, size_t elem, size_t *count)
{
    aq__fbv v;
    if (aq__fbt_vector(&m->header, slot, elem, &v) != AQ__FB_OK) {
        abort();
    }
    *count = v.count;
    return m->fb + v.data;
}

static void ti_put_i64(uint8_t *p, int64_t v)
{
    memcpy(p, &v, 8);
}

/* Expects reading b to fail with `status` and a message containing needle. */
#define CHECK_BAD(b, status, needle)                                          \
    do {                                                                      \
        size_t nb_;                                                           \
        CHECK_FAILS(ti_read_bytes((b).p, (b).n, &nb_, &err), status, needle); \
    } while (0)

TEST(truncated_at_every_byte)
{
    aq_error err;
    for (int fmt = 0; fmt < 2; fmt++) {
        ti_bytes b = ti_make((aq_ipc_format)fmt, AQ_IPC_COMPRESSION_ZSTD, 2);
        size_t n;
        CHECK_OK(ti_read_bytes(b.p, b.n, &n, &err));
        CHECK(n == 2);
        for (size_t cut = 0; cut < b.n; cut++) {
            aq_error_clear(&err);
            aq_status st = ti_read_bytes(b.p, cut, &n, &err);
            CHECK_MSG(st != AQ_OK && err.message[0] != '\0', "format %d cut at %zu of %zu: %s", fmt,
                      cut, b.n, aq_status_name(st));
        }
        free(b.p);
    }
}

TEST(truncated_at_message_boundaries)
{
    aq_error err;
    for (int fmt = 0; fmt < 2; fmt++) {
        ti_bytes b = ti_make((aq_ipc_format)fmt, AQ_IPC_COMPRESSION_NONE, 3);
        ti_msg m[8];
        size_t count = ti_messages(&b, m, 8);
        CHECK(count == 4); /* schema + 3 batches */
        for (size_t i = 1; i <= count; i++) {
            ti_bytes cut = {b.p,
                            i < count ? m[i].start : m[count - 1].body + m[count - 1].body_len};
            if (fmt == AQ_IPC_FORMAT_STREAM) {
                CHECK_BAD(cut, AQ_INVALID_DATA, "without the end-of-stream marker");
            } else {
                CHECK_BAD(cut, AQ_INVALID_DATA, "does not end with it");
            }
        }
        free(b.p);
    }
}

TEST(wrong_magic)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_FILE, AQ_IPC_COMPRESSION_NONE, 1);
    b.p[b.n - 1] = 'X';
    CHECK_BAD(b, AQ_INVALID_DATA, "does not end with it");
    b.p[b.n - 1] = '1';
    memcpy(b.p, "ARROW2", 6);
    CHECK_BAD(b, AQ_INVALID_DATA, "not an Arrow IPC file or stream");
    const char junk[] = "PAR1 this is not arrow at all";
    ti_bytes j = {(uint8_t *)junk, sizeof junk};
    CHECK_BAD(j, AQ_INVALID_DATA, "not an Arrow IPC file or stream");
    free(b.p);
}

TEST(metadata_length_beyond_the_file)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_STREAM, AQ_IPC_COMPRESSION_NONE, 1);
    ti_msg m[4];
    CHECK(ti_messages(&b, m, 4) == 2);
    int32_t huge = 0x7fff0000, neg = -16;
    memcpy(b.p + m[1].start + 4, &huge, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "goes beyond the end of the data");
    memcpy(b.p + m[1].start + 4, &neg, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "negative metadata length -16");
    memcpy(b.p + 4, &huge, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "at byte offset 0 goes beyond");
    free(b.p);

    b = ti_make(AQ_IPC_FORMAT_FILE, AQ_IPC_COMPRESSION_NONE, 1);
    memcpy(b.p + b.n - 10, &huge, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "footer length");
    free(b.p);
}

TEST(buffer_outside_the_body)
{
    aq_error err;
    for (int fmt = 0; fmt < 2; fmt++) {
        ti_bytes b = ti_make((aq_ipc_format)fmt, AQ_IPC_COMPRESSION_NONE, 2);
        ti_msg m[4];
        CHECK(ti_messages(&b, m, 4) == 3);
        size_t nbuf;
        size_t bufs = ti_vector_pos(&m[2], 2, 16, &nbuf);
        CHECK(nbuf == 13);
        uint8_t *save = malloc(b.n);
        memcpy(save, b.p, b.n);
        ti_put_i64(b.p + bufs + 16 * 4, (int64_t)m[2].body_len + 8); /* an offset */
        CHECK_BAD(b, AQ_INVALID_DATA, "lies outside the body");
        CHECK(strstr(err.message, "record batch 1") != NULL);
        memcpy(b.p, save, b.n);
        ti_put_i64(b.p + bufs + 16 * 4 + 8, (int64_t)m[2].body_len); /* a length */
        CHECK_BAD(b, AQ_INVALID_DATA, "lies outside the body");
        memcpy(b.p, save, b.n);
        ti_put_i64(b.p + bufs + 16 * 4 + 8, -1); /* a negative length */
        CHECK_BAD(b, AQ_INVALID_DATA, "length -1");
        memcpy(b.p, save, b.n);
        ti_put_i64(b.p + bufs + 16 * 1 + 8, 4); /* offsets too short for 3 rows */
        CHECK_BAD(b, AQ_INVALID_DATA, "the offsets buffer has 4 bytes, 16 needed");
        CHECK(strstr(err.message, "field 'layer_name'") != NULL);
        memcpy(b.p, save, b.n);
        /* an offset that points past the string data */
        int32_t bad = 99;
        memcpy(b.p + m[2].body + (size_t)((int64_t *)(void *)(save + bufs + 16))[0] + 8, &bad, 4);
        CHECK_BAD(b, AQ_INVALID_DATA, "offsets must be non-decreasing and within the data");
        free(save);
        free(b.p);
    }
}

TEST(negative_lengths)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_STREAM, AQ_IPC_COMPRESSION_NONE, 1);
    ti_msg m[4];
    CHECK(ti_messages(&b, m, 4) == 2);
    size_t nn;
    size_t nodes = ti_vector_pos(&m[1], 1, 16, &nn);
    CHECK(nn == 6);
    ti_put_i64(b.p + nodes + 16 * 2, -5);
    CHECK_BAD(b, AQ_INVALID_DATA, "invalid field node: length -5");
    ti_put_i64(b.p + nodes + 16 * 2, 5);
    ti_put_i64(b.p + nodes + 16 * 2 + 8, -1);
    CHECK_BAD(b, AQ_INVALID_DATA, "null count -1");
    ti_put_i64(b.p + nodes + 16 * 2 + 8, 0);
    ti_put_i64(b.p + ti_field_pos(&m[1], &m[1].header, 0), -3);
    CHECK_BAD(b, AQ_INVALID_DATA, "negative length -3");
    free(b.p);
}

TEST(schema_batch_mismatch)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_STREAM, AQ_IPC_COMPRESSION_NONE, 1);
    ti_msg m[4];
    CHECK(ti_messages(&b, m, 4) == 2);
    size_t nn, nb;
    size_t nodes = ti_vector_pos(&m[1], 1, 16, &nn);
    size_t bufs = ti_vector_pos(&m[1], 2, 16, &nb);
    uint32_t v = (uint32_t)nn - 1;
    memcpy(b.p + nodes - 4, &v, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "field nodes, fewer than the schema's fields");
    v = (uint32_t)nn;
    memcpy(b.p + nodes - 4, &v, 4);
    v = (uint32_t)nb - 2;
    memcpy(b.p + bufs - 4, &v, 4);
    CHECK_BAD(b, AQ_INVALID_DATA, "fewer than the schema needs");
    v = (uint32_t)nb;
    memcpy(b.p + bufs - 4, &v, 4);
    /* A column whose length differs from the batch's. */
    ti_put_i64(b.p + ti_field_pos(&m[1], &m[1].header, 0), 2);
    CHECK_BAD(b, AQ_INVALID_DATA, "column 'layer_name' has 3 rows, the batch 2");
    free(b.p);
}

TEST(unknown_compression_codec)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_STREAM, AQ_IPC_COMPRESSION_ZSTD, 1);
    ti_msg m[4];
    CHECK(ti_messages(&b, m, 4) == 2);
    aq__fbt comp;
    CHECK(aq__fbt_table(&m[1].header, 3, &comp) == AQ__FB_OK);
    b.p[ti_field_pos(&m[1], &comp, 0)] = 7;
    CHECK_BAD(b, AQ_UNSUPPORTED, "unknown compression codec 7");
    free(b.p);
}

/* One float32 column "w" of 4096 compressible values, written with a codec. */
static ti_bytes ti_make_compressible(aq_ipc_compression codec)
{
    aq_error err;
    struct ArrowSchema s;
    struct ArrowArray a;
    if (aq__schema_alloc(&s, "+s", NULL, 0, 1, &err) != AQ_OK ||
        aq__schema_alloc(s.children[0], "f", "w", 0, 0, &err) != AQ_OK ||
        aq__array_alloc(&a, 4096, 1, 1, &err) != AQ_OK ||
        aq__array_alloc(a.children[0], 4096, 2, 0, &err) != AQ_OK) {
        abort();
    }
    float *v = aq__array_buffer_alloc(a.children[0], 1, 4096 * sizeof(float));
    for (int i = 0; i < 4096; i++) {
        v[i] = (float)(i % 7);
    }
    const char *p = ti_path("c.arrow");
    aq_ipc_write_options o = {.size = sizeof(aq_ipc_write_options),
                              .format = AQ_IPC_FORMAT_FILE,
                              .compression = codec,
                              .compression_level = 0};
    aq_ipc_writer *w = NULL;
    if (aq_ipc_writer_open(p, &s, &o, &w, &err) != AQ_OK ||
        aq_ipc_writer_write(w, &a, &err) != AQ_OK || aq_ipc_writer_close(w, &err) != AQ_OK) {
        abort();
    }
    aq_ipc_writer_free(w);
    s.release(&s);
    a.release(&a);
    ti_bytes b = ti_load(p);
    unlink(p);
    return b;
}

TEST(corrupt_compressed_buffer)
{
    aq_error err;
    const struct {
        aq_ipc_compression codec;
        const char *name;
    } codecs[] = {{AQ_IPC_COMPRESSION_ZSTD, "zstd"}, {AQ_IPC_COMPRESSION_LZ4_FRAME, "lz4"}};
    for (size_t c = 0; c < 2; c++) {
        ti_bytes b = ti_make_compressible(codecs[c].codec);
        size_t n;
        CHECK_OK(ti_read_bytes(b.p, b.n, &n, &err));
        ti_msg m[4];
        CHECK(ti_messages(&b, m, 4) == 2);
        size_t nb;
        size_t bufs = ti_vector_pos(&m[1], 2, 16, &nb);
        CHECK(nb == 2);
        /* Buffer 1 holds the 16 KiB of floats, compressed: an 8-byte length, then a frame. */
        int64_t off, len, raw;
        memcpy(&off, b.p + bufs + 16, 8);
        memcpy(&len, b.p + bufs + 24, 8);
        memcpy(&raw, b.p + m[1].body + (size_t)off, 8);
        CHECK(raw == 4096 * 4 && len > 8 && len < 4096);
        uint8_t *frame = b.p + m[1].body + (size_t)off + 8;
        uint8_t *save = malloc(b.n);
        memcpy(save, b.p, b.n);
        frame[0] ^= 0xff; /* the frame's magic number */
        CHECK_BAD(b, AQ_INVALID_DATA, codecs[c].name);
        CHECK(strstr(err.message, "field 'w'") != NULL);
        memcpy(b.p, save, b.n);
        /* The second half of the frame overwritten. */
        memset(frame + (len - 8) / 2, 0xAB, (size_t)(len - 8) - (size_t)(len - 8) / 2);
        CHECK_BAD(b, AQ_INVALID_DATA, codecs[c].name);
        memcpy(b.p, save, b.n);
        /* A wrong uncompressed length. */
        ti_put_i64(b.p + m[1].body + (size_t)off, raw + 1);
        CHECK_BAD(b, AQ_INVALID_DATA, codecs[c].name);
        memcpy(b.p, save, b.n);
        ti_put_i64(b.p + m[1].body + (size_t)off, INT64_MAX);
        CHECK_BAD(b, AQ_INVALID_DATA, "claims");
        free(save);
        free(b.p);
    }
}

TEST(arrays_outlive_the_reader_and_the_mapping_is_shared)
{
    aq_error err;
    const char *p = ti_path("keep.arrow");
    CHECK_OK(ti_write(p, AQ_IPC_FORMAT_FILE, AQ_IPC_COMPRESSION_NONE, 2, &err));
    aq_ipc_reader *r = NULL;
    CHECK_OK(aq_ipc_reader_open(p, &r, &err));
    struct ArrowArray a, b;
    CHECK_OK(aq_ipc_reader_next(r, &a, &err));
    CHECK_OK(aq_ipc_reader_next(r, &b, &err));
    /* Uncompressed buffers point into one mapping, 64-byte aligned as written: the distance
     * between the two batches' float buffers is the distance in the file. */
    const uint8_t *fa = a.children[1]->children[0]->buffers[1];
    const uint8_t *fb = b.children[1]->children[0]->buffers[1];
    CHECK(((uintptr_t)fa % 64) == 0 && ((uintptr_t)fb % 64) == 0);
    aq_ipc_reader_free(r);
    unlink(p); /* the mapping stays valid after the file is gone */
    CHECK(fb > fa && (size_t)(fb - fa) < 4096);
    CHECK(ti_same(&a) && ti_same(&b));
    a.release(&a);
    CHECK(ti_same(&b));
    b.release(&b);
}

TEST(misaligned_buffers_are_copied)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_FILE, AQ_IPC_COMPRESSION_NONE, 1);
    ti_msg m[4];
    CHECK(ti_messages(&b, m, 4) == 2);
    size_t nb;
    size_t bufs = ti_vector_pos(&m[1], 2, 16, &nb);
    CHECK(nb == 13);
    /* Buffer 12 is the uint8 column's data (3 bytes at a 64-byte aligned offset): move it one
     * byte on, to an odd address in the mapping. */
    int64_t off;
    memcpy(&off, b.p + bufs + 16 * 12, 8);
    ti_put_i64(b.p + bufs + 16 * 12, off + 1);
    ti_put_i64(b.p + bufs + 16 * 12 + 8, 3);
    uint8_t *data = b.p + m[1].body + (size_t)off;
    data[1] = 7;
    data[2] = 8;
    data[3] = 9;
    const char *p = ti_path("odd.arrow");
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL && fwrite(b.p, 1, b.n, f) == b.n);
    fclose(f);
    free(b.p);
    aq_ipc_reader *r = NULL;
    CHECK_OK(aq_ipc_reader_open(p, &r, &err));
    struct ArrowArray a;
    CHECK_OK(aq_ipc_reader_next(r, &a, &err));
    aq_ipc_reader_free(r);
    unlink(p);
    const uint8_t *got = a.children[3]->buffers[1];
    CHECK(((uintptr_t)got % 64) == 0); /* a copy, aligned */
    CHECK(got[0] == 7 && got[1] == 8 && got[2] == 9);
    const float *w = a.children[1]->children[0]->buffers[1];
    CHECK(w[4] == 2.0f); /* the other buffers are untouched */
    a.release(&a);
}

TEST(array_stream_interface)
{
    aq_error err;
    ti_bytes b = ti_make(AQ_IPC_FORMAT_STREAM, AQ_IPC_COMPRESSION_LZ4_FRAME, 2);
    b.n -= 8; /* drop the end-of-stream marker */
    aq_ipc_reader *r = NULL;
    CHECK_OK(aq_ipc_reader_open_memory(b.p, b.n, &r, &err));
    free(b.p);
    struct ArrowArrayStream s;
    CHECK_OK(aq_ipc_reader_stream(r, &s, &err));
    struct ArrowSchema schema;
    CHECK(s.get_schema(&s, &schema) == 0);
    CHECK(schema.n_children == 4 && strcmp(schema.children[0]->name, "layer_name") == 0);
    schema.release(&schema);
    struct ArrowArray a;
    for (int i = 0; i < 2; i++) {
        CHECK(s.get_next(&s, &a) == 0 && a.release != NULL && ti_same(&a));
        a.release(&a);
    }
    CHECK(s.get_next(&s, &a) == EINVAL);
    CHECK(strstr(s.get_last_error(&s), "end-of-stream marker") != NULL);
    s.release(&s);
    CHECK(s.release == NULL);
}

static size_t ti_dir_entries(void)
{
    size_t n = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", ti_dir);
    FILE *f = popen(cmd, "r");
    if (f != NULL) {
        if (fscanf(f, "%zu", &n) != 1) {
            n = 999;
        }
        pclose(f);
    }
    return n;
}

TEST(writer_errors_leave_no_file)
{
    aq_error err;
    struct ArrowSchema s;
    struct ArrowArray a;
    ti_build(&s, &a, 0);
    aq_ipc_writer *w = NULL;
    CHECK_FAILS(aq_ipc_writer_open("/nonexistent-dir/x.arrow", &s, NULL, &w, &err), AQ_IO,
                "/nonexistent-dir/x.arrow");
    const char *p = ti_path("w.arrow");
    CHECK(ti_dir_entries() == 0);
    aq_ipc_write_options o = {.size = sizeof(aq_ipc_write_options),
                              .format = AQ_IPC_FORMAT_FILE,
                              .compression = AQ_IPC_COMPRESSION_ZSTD,
                              .compression_level = 3};
    CHECK_OK(aq_ipc_writer_open(p, &s, &o, &w, &err));
    CHECK_OK(aq_ipc_writer_write(w, &a, &err));
    CHECK(ti_dir_entries() == 1 && access(p, F_OK) != 0); /* only the temporary */
    /* a batch that does not match the schema */
    a.n_children = 3;
    CHECK_FAILS(aq_ipc_writer_write(w, &a, &err), AQ_INVALID_ARGUMENT, "4 columns");
    a.n_children = 4;
    a.children[1]->n_buffers = 3;
    CHECK_FAILS(aq_ipc_writer_write(w, &a, &err), AQ_INVALID_ARGUMENT,
                "column 'weights' (list): the array has the wrong number of buffers");
    a.children[1]->n_buffers = 2;
    aq_ipc_writer_free(w); /* never closed: the temporary goes */
    CHECK(ti_dir_entries() == 0);

    /* an unsupported type is refused at open, naming the field */
    struct ArrowSchema *c = s.children[3];
    const char *saved = c->format;
    c->format = "tsu:UTC";
    CHECK_FAILS(aq_ipc_writer_open(p, &s, NULL, &w, &err), AQ_UNSUPPORTED,
                "field 'bits' has type 'tsu:UTC'");
    c->format = saved;
    CHECK(ti_dir_entries() == 0);

    /* closing twice is an error, not a crash */
    CHECK_OK(aq_ipc_writer_open(p, &s, NULL, &w, &err));
    CHECK_OK(aq_ipc_writer_close(w, &err));
    CHECK_FAILS(aq_ipc_writer_close(w, &err), AQ_INVALID_ARGUMENT, "closed");
    aq_ipc_writer_free(w);
    CHECK(access(p, F_OK) == 0 && ti_dir_entries() == 1);
    unlink(p);
    s.release(&s);
    a.release(&a);
}

TEST(flatbuffer_reader_bounds)
{
    /* Layout: root offset at 0 -> table at 8 (soffset -8: vtable at 16, 6 bytes: size 6,
     * table size 8, field 0 at table offset 4 = byte 12); the vector of field 0 at 24. */
    uint8_t buf[40] = {0};
    aq__fbt t;
    aq__fbv v;
    buf[0] = 44; /* root beyond the end */
    CHECK(aq__fb_root(buf, sizeof buf, &t) == AQ__FB_BAD);
    buf[0] = 8;
    int32_t soff = 100; /* vtable before the start of the buffer */
    memcpy(buf + 8, &soff, 4);
    CHECK(aq__fb_root(buf, sizeof buf, &t) == AQ__FB_BAD);
    soff = -8;
    memcpy(buf + 8, &soff, 4);
    uint16_t vt[3] = {6, 8, 4};
    memcpy(buf + 16, vt, 6);
    CHECK(aq__fb_root(buf, sizeof buf, &t) == AQ__FB_OK);
    uint32_t rel = 1000; /* field 0 as a reference going past the end */
    memcpy(buf + 12, &rel, 4);
    CHECK(aq__fbt_vector(&t, 0, 4, &v) == AQ__FB_BAD);
    rel = 12; /* the vector at 24, claiming 1000 elements */
    memcpy(buf + 12, &rel, 4);
    uint32_t count = 1000;
    memcpy(buf + 24, &count, 4);
    CHECK(aq__fbt_vector(&t, 0, 4, &v) == AQ__FB_BAD);
    count = 2;
    memcpy(buf + 24, &count, 4);
    CHECK(aq__fbt_vector(&t, 0, 4, &v) == AQ__FB_OK && v.count == 2);
    CHECK(aq__fbt_vector(&t, 0, 8, &v) == AQ__FB_BAD); /* 2 x 8 bytes do not fit */
    CHECK(aq__fbt_vector(&t, 1, 4, &v) == AQ__FB_ABSENT);
    aq__fbt sub;
    CHECK(aq__fbv_table(&v, 0, &sub) == AQ__FB_BAD); /* element 0 is offset 0 */
    CHECK(aq__fbv_table(&v, 2, &sub) == AQ__FB_BAD); /* past the count */
    vt[2] = 6; /* field 0 at offset 6: 4 bytes overrun the 8-byte table */
    memcpy(buf + 16, vt, 6);
    CHECK(aq__fb_root(buf, sizeof buf, &t) == AQ__FB_OK);
    CHECK(aq__fbt_vector(&t, 0, 4, &v) == AQ__FB_BAD);
    vt[0] = 7; /* odd vtable size */
    memcpy(buf + 16, vt, 6);
    CHECK(aq__fb_root(buf, sizeof buf, &t) == AQ__FB_BAD);
}

AQ_TEST_MAIN(AQ_CASE(roundtrip_all_formats_and_codecs), AQ_CASE(truncated_at_every_byte),
             AQ_CASE(truncated_at_message_boundaries), AQ_CASE(wrong_magic),
             AQ_CASE(metadata_length_beyond_the_file), AQ_CASE(buffer_outside_the_body),
             AQ_CASE(negative_lengths), AQ_CASE(schema_batch_mismatch),
             AQ_CASE(unknown_compression_codec), AQ_CASE(corrupt_compressed_buffer),
             AQ_CASE(arrays_outlive_the_reader_and_the_mapping_is_shared),
             AQ_CASE(misaligned_buffers_are_copied), AQ_CASE(array_stream_interface),
             AQ_CASE(writer_errors_leave_no_file), AQ_CASE(flatbuffer_reader_bounds))
