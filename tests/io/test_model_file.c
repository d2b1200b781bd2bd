/* The model pipeline through the C API: a checkpoint quantized into a model file (several
 * record batches, compressed), read back row by row, restored to safetensors; interruption
 * leaves nothing. Runs under ASan/UBSan in scripts/test (unaligned tensors included). */
#include "aq_common.h"
#include "aq_test.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/aq_model_test_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        abort();
    }
}

static int entries(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        n += de->d_name[0] != '.';
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void clean(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[512];
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.' || strlen(de->d_name) > 2) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(dir);
}

enum { N_T = 6 };
static int64_t sh_w[2] = {64, 256};
static int64_t sh_b[2] = {32, 512};
static int64_t sh_d[2] = {4, 4};
static int64_t sh_i[1] = {5};
static int64_t sh_h[1] = {64};
static int64_t sh_o[1] = {3};

/* A checkpoint whose F32 tensor is unaligned (it follows a 3-byte I8 tensor). */
static aq_status write_source(const char *path, aq_error *err)
{
    aq_st_spec specs[N_T] = {
        {"odd", AQ_ST_I8, NULL, sh_o, 1, 3},
        {"blocks.0.weight", AQ_ST_F32, NULL, sh_w, 2, 64 * 256 * 4},
        {"blocks.1.weight", AQ_ST_BF16, NULL, sh_b, 2, 32 * 512 * 2},
        {"tiny", AQ_ST_F64, NULL, sh_d, 2, 16 * 8},
        {"ids", AQ_ST_I32, NULL, sh_i, 1, 20},
        {"norm.weight", AQ_ST_F16, NULL, sh_h, 1, 128},
    };
    const char *k[1] = {"format"};
    const char *v[1] = {"pt"};
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, N_T, k, v, 1, &w, err);
    if (st != AQ_OK) {
        return st;
    }
    uint64_t seed = 42;
    int8_t odd[3] = {1, -2, 3};
    st = aq_st_writer_write(w, odd, 3, err);
    for (size_t i = 0; st == AQ_OK && i < 64 * 256; i++) {
        float x = (float)aq_test_rand_normal(&seed);
        st = aq_st_writer_write(w, &x, 4, err);
    }
    for (size_t i = 0; st == AQ_OK && i < 32 * 512; i++) {
        uint16_t h = aq__f32_to_bf16((float)aq_test_rand_normal(&seed));
        st = aq_st_writer_write(w, &h, 2, err);
    }
    for (size_t i = 0; st == AQ_OK && i < 16; i++) {
        double x = 0.1 * (double)i;
        st = aq_st_writer_write(w, &x, 8, err);
    }
    int32_t ids[5] = {5, 4, 3, 2, 1};
    if (st == AQ_OK) {
        st = aq_st_writer_write(w, ids, 20, err);
    }
    for (size_t i = 0; st == AQ_OK && i < 64; i++) {
        uint16_t h = aq__f32_to_f16(1.0f + (float)i / 64.0f);
        st = aq_st_writer_write(w, &h, 2, err);
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

TEST(quantize_read_restore)
{
    aq_error err;
    make_dir();
    char src[300], arrow[300], back[300];
    snprintf(src, sizeof src, "%s/src.safetensors", dir);
    snprintf(arrow, sizeof arrow, "%s/m.arrow", dir);
    snprintf(back, sizeof back, "%s/back.safetensors", dir);
    CHECK_OK(write_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 64, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    CHECK(((uintptr_t)aq_model_tensor(m, 1)->data & 3u) != 0); /* really unaligned */
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 100;
    o.compression = AQ_IPC_COMPRESSION_ZSTD;
    o.batch_bytes = 4096; /* several record batches */
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(s.tensors == N_T && s.quantized == 2 && s.kept == 4);
    CHECK(s.batches >= 3);
    CHECK(s.mean_sqnr_db > 18.0 && s.mean_sqnr_db < 22.0);
    CHECK(entries() == 2);
    aq_model_free(m);

    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(arrow, &qm, &err));
    CHECK(strcmp(aq_qmodel_metadata(qm, "arrowquant.group_size"), "64") == 0);
    CHECK(strcmp(aq_qmodel_metadata(qm, "arrowquant.model_metadata"), "{\"format\":\"pt\"}") == 0);
    const aq_qmodel_row *r;
    const char *want[N_T] = {"odd", "blocks.0.weight", "blocks.1.weight", "tiny",
                             "ids", "norm.weight"};
    for (int i = 0; i < N_T; i++) {
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        CHECK(r != NULL && strcmp(r->name, want[i]) == 0);
        if (i == 1 || i == 2) {
            CHECK(!r->raw && r->bit_width == 4 && r->group_size == 64);
            CHECK(r->sqnr_db > 18.0 && r->cosine > 0.99 && r->max_abs_error > 0.0);
        } else {
            CHECK(r->raw && strcmp(r->scheme, "raw") == 0);
        }
        if (i == 3) {
            CHECK(r->bit_width == 32 && strcmp(r->source_dtype, "F64") == 0);
        }
        if (i == 5) {
            CHECK(r->bit_width == 16);
        }
        if (i == 0) {
            CHECK(r->bit_width == 8 && r->data_size == 3 &&
                  memcmp(r->data, "\x01\xfe\x03", 3) == 0);
        }
    }
    CHECK_OK(aq_qmodel_next(qm, &r, &err));
    CHECK(r == NULL);
    aq_qmodel_free(qm);

    CHECK_OK(aq_qmodel_to_safetensors(ctx, arrow, back, AQ_ST_UNKNOWN, NULL, &err));
    aq_model *b;
    CHECK_OK(aq_model_open(back, &b, &err));
    CHECK(aq_model_count(b) == N_T);
    CHECK(aq_model_tensor(b, 2)->dtype == AQ_ST_BF16); /* source dtype restored */
    CHECK(aq_model_tensor(b, 3)->dtype == AQ_ST_F32);  /* F64 -> F32 */
    CHECK(aq_model_tensor(b, 5)->dtype == AQ_ST_F16);
    CHECK(memcmp(aq_model_tensor(b, 4)->data, "\x05\0\0\0\x04", 5) == 0);
    float x;
    memcpy(&x, (const char *)aq_model_tensor(b, 3)->data + 4 * 5, 4);
    CHECK(x == (float)0.5);
    aq_model_free(b);
    aq_ctx_free(ctx);
    clean();
}

TEST(cancel_leaves_nothing)
{
    aq_error err;
    make_dir();
    char src[300], arrow[300];
    snprintf(src, sizeof src, "%s/src.safetensors", dir);
    snprintf(arrow, sizeof arrow, "%s/m.arrow", dir);
    CHECK_OK(write_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    volatile int cancel = 1;
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.cancel = &cancel;
    CHECK_FAILS(aq_model_quantize(ctx, m, arrow, &o, NULL, &err), AQ_CANCELLED, "cancelled");
    CHECK(entries() == 1);
    /* An unknown dtype, or a bad keep, fails before any output. */
    o.cancel = NULL;
    char out2[320];
    snprintf(out2, sizeof out2, "%s/missing/m.arrow", dir);
    CHECK(aq_model_quantize(ctx, m, out2, &o, NULL, &err) != AQ_OK);
    CHECK(entries() == 1);
    aq_model_free(m);
    aq_ctx_free(ctx);
    clean();
}

TEST(keep_rules)
{
    aq_error err;
    make_dir();
    char src[300];
    snprintf(src, sizeof src, "%s/src.safetensors", dir);
    CHECK_OK(write_source(src, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    int kept;
    const char *why;
    CHECK_OK(aq_model_keep_rule(m, 0, NULL, &kept, &why, &err));
    CHECK(kept && strcmp(why, "not float") == 0);
    CHECK_OK(aq_model_keep_rule(m, 1, NULL, &kept, &why, &err));
    CHECK(!kept); /* 16384 elements: exactly the threshold */
    CHECK_OK(aq_model_keep_rule(m, 3, NULL, &kept, &why, &err));
    CHECK(kept && strcmp(why, "small") == 0);
    CHECK_OK(aq_model_keep_rule(m, 5, NULL, &kept, &why, &err));
    CHECK(kept && strcmp(why, "1-D") == 0);
    const char *pat[1] = {"blocks.*"};
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.keep = pat;
    o.n_keep = 1;
    CHECK_OK(aq_model_keep_rule(m, 2, &o, &kept, &why, &err));
    CHECK(kept && strcmp(why, "--keep") == 0);
    aq_model_free(m);
    clean();
}

TEST(large_binary_layout)
{
    /* quantized_data as large_binary (used when a tensor's data passes 2 GiB), forced. */
    aq_error err;
    make_dir();
    char src[300], arrow[300], back[300];
    snprintf(src, sizeof src, "%s/src.safetensors", dir);
    snprintf(arrow, sizeof arrow, "%s/m.arrow", dir);
    snprintf(back, sizeof back, "%s/back.safetensors", dir);
    CHECK_OK(write_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    setenv("AQ_MODEL_LARGE_BINARY", "1", 1);
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 100;
    aq_status st = aq_model_quantize(ctx, m, arrow, &o, NULL, &err);
    unsetenv("AQ_MODEL_LARGE_BINARY");
    CHECK_OK(st);
    aq_ipc_reader *r;
    struct ArrowSchema sc;
    CHECK_OK(aq_ipc_reader_open(arrow, &r, &err));
    CHECK_OK(aq_ipc_reader_schema(r, &sc, &err));
    CHECK(strcmp(sc.children[1]->format, "Z") == 0);
    sc.release(&sc);
    aq_ipc_reader_free(r);
    CHECK_OK(aq_qmodel_to_safetensors(ctx, arrow, back, AQ_ST_F32, NULL, &err));
    aq_model *b;
    CHECK_OK(aq_model_open(back, &b, &err));
    CHECK(aq_model_count(b) == N_T);
    float x, y;
    memcpy(&x, (const char *)aq_model_tensor(m, 1)->data + 400, 4);
    memcpy(&y, (const char *)aq_model_tensor(b, 1)->data + 400, 4);
    CHECK(fabsf(x - y) < 0.5f);
    aq_model_free(b);
    aq_model_free(m);
    aq_ctx_free(ctx);
    clean();
}

AQ_TEST_MAIN(AQ_CASE(quantize_read_restore), AQ_CASE(large_binary_layout),
             AQ_CASE(cancel_leaves_nothing), AQ_CASE(keep_rules))
