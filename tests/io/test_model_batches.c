/* Where the model pipeline's output memory comes from (src/io/model_quant.c): rows quantized
 * straight into their batch's arena (grown while rows are pending, reused from batch to batch,
 * written by the writer thread while the next batch fills), rows of their own (larger than a
 * batch), and affine tensors quantized and measured block by block. Every way gives the same
 * rows: the same bytes as aq_quantize of the whole tensor, the same statistics. Runs under
 * ASan/UBSan in scripts/test. */
#include "aq_common.h"
#include "aq_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 12 quantized float16 tensors of 200 x 1000 (rows not a multiple of the measuring block,
 * columns not a multiple of the group), each followed by a kept 1-D bfloat16 tensor (kept
 * rows are converted to float32 into the arena) and a kept odd-sized float32 tensor. */
enum { N_Q = 12, N_T = 3 * N_Q, ROWS = 200, COLS = 1000, N_B = 777, N_S = 5 };
static int64_t sh_q[2] = {ROWS, COLS};
static int64_t sh_b[1] = {N_B};
static int64_t sh_s[1] = {N_S};
static char names[N_T][32];

static aq_status write_source(const char *path, aq_error *err)
{
    aq_st_spec specs[N_T];
    for (int i = 0; i < N_Q; i++) {
        snprintf(names[3 * i], sizeof names[0], "blocks.%d.weight", i);
        snprintf(names[3 * i + 1], sizeof names[0], "blocks.%d.norm", i);
        snprintf(names[3 * i + 2], sizeof names[0], "blocks.%d.bias", i);
        specs[3 * i] = (aq_st_spec){names[3 * i], AQ_ST_F16, NULL, sh_q, 2, ROWS * COLS * 2};
        specs[3 * i + 1] = (aq_st_spec){names[3 * i + 1], AQ_ST_BF16, NULL, sh_b, 1, N_B * 2};
        specs[3 * i + 2] = (aq_st_spec){names[3 * i + 2], AQ_ST_F32, NULL, sh_s, 1, N_S * 4};
    }
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, N_T, NULL, NULL, 0, &w, err);
    if (st != AQ_OK) {
        return st;
    }
    uint64_t seed = 7;
    uint16_t *h = malloc((size_t)ROWS * COLS * 2);
    if (h == NULL) {
        aq_st_writer_free(w);
        return aq__error_set(err, AQ_NO_MEMORY, "test: out of memory");
    }
    for (int i = 0; st == AQ_OK && i < N_Q; i++) {
        for (size_t k = 0; k < (size_t)ROWS * COLS; k++) {
            h[k] = aq__f32_to_f16((float)(aq_test_rand_normal(&seed) * (1.0 + i)));
        }
        st = aq_st_writer_write(w, h, (size_t)ROWS * COLS * 2, err);
        for (size_t k = 0; st == AQ_OK && k < N_B; k++) {
            uint16_t b = aq__f32_to_bf16((float)aq_test_rand_normal(&seed));
            st = aq_st_writer_write(w, &b, 2, err);
        }
        for (size_t k = 0; st == AQ_OK && k < N_S; k++) {
            float x = (float)((size_t)i * N_S + k);
            st = aq_st_writer_write(w, &x, 4, err);
        }
    }
    free(h);
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

static char dir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* Quantizes src into name with the given batch size, thread count and compression;
 * *batches: how many. */
static void quantize_as(const char *src, const char *name, unsigned bits, size_t batch_bytes,
                        unsigned threads, int compression, size_t *batches)
{
    aq_error err;
    char out[300];
    path_in(out, sizeof out, name);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 1000;
    o.batch_bytes = batch_bytes;
    o.compression = compression;
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, out, &o, &s, &err));
    CHECK(s.tensors == N_T && s.quantized == N_Q && s.kept == 2 * N_Q);
    aq_model_free(m);
    aq_ctx_free(ctx);
    *batches = s.batches;
}

static void quantize(const char *src, const char *name, unsigned bits, size_t batch_bytes,
                     unsigned threads, size_t *batches)
{
    quantize_as(src, name, bits, batch_bytes, threads, 0, batches);
}

/* Every row of file `name` equals the same row of file `ref`; the quantized rows equal
 * aq_quantize of the whole source tensor. */
static void same_rows(const char *src, const char *name, const char *ref, unsigned bits)
{
    aq_error err;
    char a[300], b[300];
    path_in(a, sizeof a, name);
    path_in(b, sizeof b, ref);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_qmodel *qa, *qb;
    CHECK_OK(aq_qmodel_open(a, &qa, &err));
    CHECK_OK(aq_qmodel_open(b, &qb, &err));
    uint8_t *packed = malloc((size_t)ROWS * COLS);
    float *sc = malloc((size_t)ROWS * COLS * sizeof(float));
    float *zp = malloc((size_t)ROWS * COLS * sizeof(float));
    CHECK(packed != NULL && sc != NULL && zp != NULL);
    for (size_t i = 0; i < N_T; i++) {
        const aq_qmodel_row *x, *y;
        CHECK_OK(aq_qmodel_next(qa, &x, &err));
        CHECK(x != NULL);
        /* x stays valid until the next call on qa, y until the next on qb. */
        CHECK_OK(aq_qmodel_next(qb, &y, &err));
        CHECK(y != NULL);
        CHECK(strcmp(x->name, names[i]) == 0 && strcmp(y->name, names[i]) == 0);
        CHECK(x->raw == y->raw && x->bit_width == y->bit_width && x->groups == y->groups);
        CHECK(x->data_size == y->data_size && memcmp(x->data, y->data, x->data_size) == 0);
        CHECK(x->groups == 0 || (memcmp(x->scales, y->scales, x->groups * 4) == 0 &&
                                 memcmp(x->zero_points, y->zero_points, x->groups * 4) == 0));
        /* Statistics: the same sums in the same order, so the same doubles. */
        CHECK(x->sqnr_db == y->sqnr_db || (isinf(x->sqnr_db) && isinf(y->sqnr_db)));
        CHECK(x->cosine == y->cosine && x->max_abs_error == y->max_abs_error);
        if (i % 3 == 1) {
            CHECK(x->raw && x->bit_width == 32 && x->data_size == N_B * 4);
        }
        if (i % 3 == 2) {
            float v;
            memcpy(&v, x->data + 4 * 3, 4);
            CHECK(x->raw && v == (float)(i / 3 * N_S + 3));
        }
        if (i % 3 == 0) {
            CHECK(!x->raw && x->bit_width == bits && x->sqnr_db > 5.0);
            aq_tensor t;
            CHECK_OK(aq_model_tensor_view(m, i, &t, &err));
            aq_layout l;
            CHECK_OK(aq_quantize_bound(ctx, &t, &l, &err));
            aq_qbuffers q = {packed, (size_t)ROWS * COLS, sc, zp, (size_t)ROWS * COLS};
            CHECK_OK(aq_quantize(ctx, &t, &q, &err));
            CHECK(l.packed_bytes == x->data_size && l.groups == x->groups);
            CHECK(memcmp(packed, x->data, l.packed_bytes) == 0);
            CHECK(memcmp(sc, x->scales, l.groups * 4) == 0);
            CHECK(memcmp(zp, x->zero_points, l.groups * 4) == 0);
        }
    }
    const aq_qmodel_row *end;
    CHECK_OK(aq_qmodel_next(qa, &end, &err));
    CHECK(end == NULL);
    free(packed);
    free(sc);
    free(zp);
    aq_qmodel_free(qa);
    aq_qmodel_free(qb);
    aq_model_free(m);
    aq_ctx_free(ctx);
}

static void clean(const char *const *files, size_t n)
{
    char p[300];
    for (size_t i = 0; i < n; i++) {
        path_in(p, sizeof p, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void check_bits(unsigned bits)
{
    aq_error err;
    snprintf(dir, sizeof dir, "/tmp/aq_batches_test_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[300];
    path_in(src, sizeof src, "src.safetensors");
    CHECK_OK(write_source(src, &err));
    size_t own = 0, one = 0, some = 0, threads = 0;
    /* Every row its own batch, in buffers of its own (each row is larger than a batch). */
    quantize(src, "own.arrow", bits, 1, 1, &own);
    /* One batch: all rows in one arena, back to back. */
    quantize(src, "one.arrow", bits, (size_t)64 << 20, 1, &one);
    /* Several batches: the two arenas take turns, the writer thread writes the other. */
    quantize(src, "some.arrow", bits, 150000, 1, &some);
    /* Three threads: whole tensors quantized on the pool, then measured. */
    quantize(src, "threads.arrow", bits, 150000, 3, &threads);
    CHECK(own == N_T && one == 1 && some > 3 && threads == some);
    same_rows(src, "one.arrow", "own.arrow", bits);
    same_rows(src, "some.arrow", "own.arrow", bits);
    same_rows(src, "threads.arrow", "own.arrow", bits);
    const char *files[] = {"src.safetensors", "own.arrow", "one.arrow", "some.arrow",
                           "threads.arrow"};
    clean(files, sizeof files / sizeof files[0]);
}

TEST(arena_batches_give_the_same_rows_4_bits)
{
    check_bits(4);
}

TEST(arena_batches_give_the_same_rows_2_bits)
{
    check_bits(2);
}

/* Rows held in place (aq_qmodel_row_hold) outlive their batch and the reader, keep their bytes
 * while the reader gives back the pages of the rows it passes, and take writes without
 * changing the file (a mapped file is copy-on-write). */
static void check_holds(const char *path, const char *ref)
{
    aq_error err;
    aq_qmodel *qm, *qr;
    CHECK_OK(aq_qmodel_open(path, &qm, &err));
    aq_qmodel_hold *none = NULL;
    CHECK_FAILS(aq_qmodel_row_hold(qm, &none, &err), AQ_INVALID_ARGUMENT, "no current row");
    aq_qmodel_hold *holds[N_T] = {0};
    const uint8_t *data[N_T];
    const float *scales[N_T];
    size_t sizes[N_T], groups[N_T];
    for (size_t i = 0; i < N_T; i++) {
        const aq_qmodel_row *r;
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        CHECK(r != NULL);
        if (i % 3 != 0) {
            continue; /* kept rows: given back as the reader passes them */
        }
        CHECK_OK(aq_qmodel_row_hold(qm, &holds[i], &err));
        data[i] = r->data;
        scales[i] = r->scales;
        sizes[i] = r->data_size;
        groups[i] = r->groups;
    }
    const aq_qmodel_row *end;
    CHECK_OK(aq_qmodel_next(qm, &end, &err));
    CHECK(end == NULL);
    CHECK_FAILS(aq_qmodel_row_hold(qm, &none, &err), AQ_INVALID_ARGUMENT, "no current row");
    aq_qmodel_free(qm);
    for (size_t i = 0; i < N_T; i += 3) {
        CHECK_OK(aq_qmodel_hold_check(holds[i], &err));
        ((uint8_t *)(uintptr_t)data[i])[0] ^= 0xFF;
    }
    CHECK_OK(aq_qmodel_open(ref, &qr, &err));
    for (size_t i = 0; i < N_T; i++) {
        const aq_qmodel_row *r;
        CHECK_OK(aq_qmodel_next(qr, &r, &err));
        if (i % 3 != 0) {
            continue;
        }
        CHECK(r->data_size == sizes[i] && r->groups == groups[i]);
        CHECK((uint8_t)(data[i][0] ^ r->data[0]) == 0xFFu);
        CHECK(memcmp(data[i] + 1, r->data + 1, sizes[i] - 1) == 0);
        CHECK(memcmp(scales[i], r->scales, groups[i] * 4) == 0);
    }
    aq_qmodel_free(qr);
    /* Out of order: each batch goes with its last hold. */
    for (size_t i = N_T; i-- > 0;) {
        aq_qmodel_hold_free(holds[i]);
    }
    aq_qmodel_hold_free(NULL);
}

TEST(held_rows_outlive_their_batches)
{
    aq_error err;
    snprintf(dir, sizeof dir, "/tmp/aq_batches_test_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[300], plain[300], zstd[300], ref[300];
    path_in(src, sizeof src, "src.safetensors");
    CHECK_OK(write_source(src, &err));
    size_t n;
    quantize_as(src, "plain.arrow", 4, 150000, 1, AQ_IPC_COMPRESSION_NONE, &n);
    CHECK(n > 3);
    quantize_as(src, "zstd.arrow", 4, 150000, 1, AQ_IPC_COMPRESSION_ZSTD, &n);
    quantize_as(src, "ref.arrow", 4, 150000, 1, AQ_IPC_COMPRESSION_NONE, &n);
    path_in(plain, sizeof plain, "plain.arrow");
    path_in(zstd, sizeof zstd, "zstd.arrow");
    path_in(ref, sizeof ref, "ref.arrow");
    check_holds(plain, ref);
    check_holds(zstd, ref);
    /* The writes went to this process's copies only. */
    check_holds(plain, ref);
    const char *files[] = {"src.safetensors", "plain.arrow", "zstd.arrow", "ref.arrow"};
    clean(files, sizeof files / sizeof files[0]);
}

/* A file truncated under a hold fails aq_qmodel_hold_check before any held page is read (the
 * file's size against the mapping), so no SIGBUS handler is needed to see it; a hold on a
 * decompressed batch does not depend on the file. */
static void check_truncated(const char *path, bool mapped)
{
    aq_error err;
    aq_qmodel *qm;
    const aq_qmodel_row *r;
    aq_qmodel_hold *h = NULL;
    CHECK_OK(aq_qmodel_open(path, &qm, &err));
    CHECK_OK(aq_qmodel_next(qm, &r, &err));
    CHECK(r != NULL && !r->raw);
    CHECK_OK(aq_qmodel_row_hold(qm, &h, &err));
    aq_qmodel_free(qm);
    CHECK_OK(aq_qmodel_hold_check(h, &err));
    CHECK(truncate(path, 4096) == 0);
    if (mapped) {
        CHECK_FAILS(aq_qmodel_hold_check(h, &err), AQ_IO,
                    "changed while in use (truncated by another process?): 4096 bytes now");
        CHECK(strstr(err.message, path) != NULL);
    } else {
        CHECK_OK(aq_qmodel_hold_check(h, &err));
    }
    aq_qmodel_hold_free(h);
}

TEST(held_rows_of_a_truncated_file_fail_before_reading)
{
    aq_error err;
    snprintf(dir, sizeof dir, "/tmp/aq_batches_test_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[300], plain[300], zstd[300];
    path_in(src, sizeof src, "src.safetensors");
    CHECK_OK(write_source(src, &err));
    size_t n;
    quantize_as(src, "plain.arrow", 4, 150000, 1, AQ_IPC_COMPRESSION_NONE, &n);
    quantize_as(src, "zstd.arrow", 4, 150000, 1, AQ_IPC_COMPRESSION_ZSTD, &n);
    path_in(plain, sizeof plain, "plain.arrow");
    path_in(zstd, sizeof zstd, "zstd.arrow");
    check_truncated(plain, true);
    check_truncated(zstd, false);
    const char *files[] = {"src.safetensors", "plain.arrow", "zstd.arrow"};
    clean(files, sizeof files / sizeof files[0]);
}

AQ_TEST_MAIN(AQ_CASE(arena_batches_give_the_same_rows_4_bits),
             AQ_CASE(arena_batches_give_the_same_rows_2_bits),
             AQ_CASE(held_rows_outlive_their_batches),
             AQ_CASE(held_rows_of_a_truncated_file_fail_before_reading))
