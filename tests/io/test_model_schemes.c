/* Every scheme through the model pipeline from C: kquant rows restored whole and in blocks of
 * rows (its sub-block parameters live after all codes), the cosine floor and the size budget
 * of aq_model_quantize_options, and their bad values. Runs under ASan/UBSan in scripts/test. */
#include "aq_common.h"
#include "aq_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MS_N = 3 };
/* 600 columns: one full super-block and a short one per row. */
static int64_t ms_a[2] = {40, 600};
static int64_t ms_b[2] = {64, 256};
static int64_t ms_c[2] = {32, 128};

/* A Gaussian tensor, a heavy-tailed one (outlier columns) and a small Gaussian one. */
static aq_status ms_source(const char *path, aq_error *err)
{
    aq_st_spec specs[MS_N] = {
        {"a.weight", AQ_ST_F32, NULL, ms_a, 2, 40 * 600 * 4},
        {"b.weight", AQ_ST_F32, NULL, ms_b, 2, 64 * 256 * 4},
        {"c.weight", AQ_ST_F32, NULL, ms_c, 2, 32 * 128 * 4},
    };
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, MS_N, NULL, NULL, 0, &w, err);
    if (st != AQ_OK) {
        return st;
    }
    uint64_t seed = 7;
    for (size_t i = 0; st == AQ_OK && i < 40 * 600; i++) {
        float x = (float)aq_test_rand_normal(&seed);
        st = aq_st_writer_write(w, &x, 4, err);
    }
    for (size_t i = 0; st == AQ_OK && i < 64 * 256; i++) {
        double g = aq_test_rand_normal(&seed);
        float x = (float)(i % 256 < 3 ? 30.0 * g : g * g * g);
        st = aq_st_writer_write(w, &x, 4, err);
    }
    for (size_t i = 0; st == AQ_OK && i < 32 * 128; i++) {
        float x = (float)aq_test_rand_normal(&seed);
        st = aq_st_writer_write(w, &x, 4, err);
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

typedef struct ms_seen {
    aq_model_tensor_result r[MS_N];
    size_t n;
} ms_seen;

static void ms_on_tensor(void *user, const aq_model_tensor_result *r)
{
    ms_seen *s = user;
    if (s->n < MS_N) {
        s->r[s->n++] = *r;
    }
}

static void ms_paths(char *dir, size_t n, char *src, char *arrow)
{
    snprintf(dir, n, "/tmp/aq_model_schemes_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        abort();
    }
    snprintf(src, 320, "%s/src.safetensors", dir);
    snprintf(arrow, 320, "%s/m.arrow", dir);
}

static void ms_clean(const char *dir, const char *src, const char *arrow)
{
    unlink(src);
    unlink(arrow);
    rmdir(dir);
}

/* Rows restored in blocks through the reader equal the whole tensor, in both kquant layouts:
 * super-blocks over the flattened tensor (blocks of rows then start inside a super-block) and
 * row by row. */
static void ms_restore_in_blocks(aq_scheme scheme)
{
    aq_error err;
    char dir[64], src[320], arrow[320];
    ms_paths(dir, sizeof dir, src, arrow);
    CHECK_OK(ms_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 100;
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(s.quantized == MS_N);
    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(arrow, &qm, &err));
    CHECK(strcmp(aq_qmodel_metadata(qm, "arrowquant.scheme"), aq_scheme_name(scheme)) == 0);
    CHECK(strcmp(aq_qmodel_metadata(qm, "arrowquant.group_size"), "512") == 0);
    const aq_qmodel_row *r;
    CHECK_OK(aq_qmodel_next(qm, &r, &err));
    CHECK(r != NULL && strcmp(r->scheme, aq_scheme_name(scheme)) == 0 && r->group_size == 512);
    aq_layout l;
    CHECK_OK(aq_layout_compute_scheme(scheme, ms_a, 2, 2, 512, &l, &err));
    CHECK(r->data_size == l.packed_bytes && r->groups == (scheme == AQ_SCHEME_KQUANT ? 47u : 80u));
    /* Whole, through the public dequantizer, and in blocks of 8 rows through the reader. */
    size_t n = 40 * 600;
    float *whole = malloc(n * sizeof(float)), *blocks = malloc(n * sizeof(float));
    CHECK(whole != NULL && blocks != NULL);
    aq_qtensor q = {r->name,   scheme,         2,        512, ms_a, 2, r->data, r->data_size,
                    r->scales, r->zero_points, r->groups};
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F32, whole, n, &err));
    for (size_t r0 = 0; r0 < 40; r0 += 8) {
        CHECK_OK(
            aq_qmodel_row_restore(ctx, r, r0 * 600, 8 * 600, AQ_ST_F32, blocks + r0 * 600, &err));
    }
    CHECK(memcmp(whole, blocks, n * sizeof(float)) == 0);
    /* The quality recorded while quantizing is that of the restored values. */
    const float *orig = aq_model_tensor(m, 0)->data;
    double xx = 0.0, ee = 0.0;
    for (size_t k = 0; k < n; k++) {
        double e = (double)orig[k] - (double)whole[k];
        xx += (double)orig[k] * (double)orig[k];
        ee += e * e;
    }
    /* The recorded figure comes from the kernels' error statistics, which sum in float32
     * lanes before double (docs/decisions.md): about 1e-6 relative, 1e-5 dB here. */
    CHECK(fabs(10.0 * log10(xx / ee) - r->sqnr_db) < 1e-4);
    /* One row alone (a block that is not a multiple of 8 rows), and a range that does not
     * start on a row, which is refused rather than misread. */
    CHECK_OK(aq_qmodel_row_restore(ctx, r, 13 * 600, 600, AQ_ST_F32, blocks, &err));
    CHECK(memcmp(whole + 13 * 600, blocks, 600 * sizeof(float)) == 0);
    CHECK_FAILS(aq_qmodel_row_restore(ctx, r, 300, 600, AQ_ST_F32, blocks, &err),
                AQ_INVALID_ARGUMENT, "not whole");
    free(whole);
    free(blocks);
    aq_qmodel_free(qm);
    aq_model_free(m);
    aq_ctx_free(ctx);
    ms_clean(dir, src, arrow);
}

TEST(kquant_rows_restore_in_blocks)
{
    ms_restore_in_blocks(AQ_SCHEME_KQUANT);
    ms_restore_in_blocks(AQ_SCHEME_KQUANT_ROWS);
}

TEST(floor_moves_tensors)
{
    aq_error err;
    char dir[64], src[320], arrow[320];
    ms_paths(dir, sizeof dir, src, arrow);
    CHECK_OK(ms_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 2, &err)); /* copies share the pool */
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 100;
    o.min_cosine = 0.99;
    ms_seen seen = {0};
    o.on_tensor = ms_on_tensor;
    o.on_tensor_user = &seen;
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(seen.n == MS_N && s.moved == MS_N); /* 2-bit affine is below 0.99 everywhere */
    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(arrow, &qm, &err));
    for (size_t i = 0; i < MS_N; i++) {
        const aq_model_tensor_result *x = &seen.r[i];
        CHECK(x->moved && x->initial_bit_width == 2 && x->bit_width >= 4);
        CHECK(x->initial_cosine < 0.99 && x->cosine >= 0.99);
        const aq_qmodel_row *r;
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        CHECK(r->bit_width == x->bit_width && r->cosine == x->cosine);
        CHECK(r->data_size == x->elements * x->bit_width / 8);
    }
    aq_qmodel_free(qm);
    aq_model_free(m);
    aq_ctx_free(ctx);
    ms_clean(dir, src, arrow);
}

TEST(budget_allocates_and_fits)
{
    aq_error err;
    char dir[64], src[320], arrow[320];
    ms_paths(dir, sizeof dir, src, arrow);
    CHECK_OK(ms_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_scheme cands[2] = {AQ_SCHEME_AFFINE, AQ_SCHEME_KQUANT};
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 100;
    o.target_bpw = 4.0;
    o.schemes = cands;
    o.n_schemes = 2;
    ms_seen seen = {0};
    o.on_tensor = ms_on_tensor;
    o.on_tensor_user = &seen;
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(seen.n == MS_N);
    size_t bytes = 0, elements = 0;
    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(arrow, &qm, &err));
    for (size_t i = 0; i < MS_N; i++) {
        const aq_qmodel_row *r;
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        const aq_model_tensor_result *x = &seen.r[i];
        CHECK(strcmp(r->scheme, aq_scheme_name(x->scheme)) == 0 && r->bit_width == x->bit_width);
        CHECK(r->group_size == (x->scheme == AQ_SCHEME_KQUANT ? 512u : 128u));
        size_t b = r->data_size + 8 * r->groups;
        CHECK(b == x->bytes);
        bytes += b;
        elements += r->elements;
    }
    aq_qmodel_free(qm);
    CHECK(bytes == s.quantized_bytes);
    CHECK(8.0 * (double)bytes <= 4.0 * (double)elements);
    CHECK(8.0 * (double)bytes > 3.0 * (double)elements); /* the budget is used */
    /* Out of range and impossible budgets are refused before any file is written. */
    o.target_bpw = 1.0;
    CHECK_FAILS(aq_model_quantize(ctx, m, arrow, &o, &s, &err), AQ_INVALID_PARAMETER,
                "smallest allocation");
    o.target_bpw = 0.0;
    o.min_cosine = 1.5;
    CHECK_FAILS(aq_model_quantize(ctx, m, arrow, &o, &s, &err), AQ_INVALID_PARAMETER, "min_cosine");
    o.min_cosine = 0.0;
    o.target_bpw = -2.0; /* -1 is AQ_TARGET_BPW_PROFILE */
    CHECK_FAILS(aq_model_quantize(ctx, m, arrow, &o, &s, &err), AQ_INVALID_PARAMETER, "target_bpw");
    aq_model_free(m);
    aq_ctx_free(ctx);
    ms_clean(dir, src, arrow);
}

AQ_TEST_MAIN(AQ_CASE(kquant_rows_restore_in_blocks), AQ_CASE(floor_moves_tensors),
             AQ_CASE(budget_allocates_and_fits))
