/* aq_batch_quantize, aq_tensors_quantize and aq_batch_dequantize over hand-built Arrow
 * arrays: every accepted type, slices, empty and null-typed batches, continue-on-error and
 * progress, the reverse path. Bad input is in test_arrow_bad.c, streams in
 * test_arrow_stream.c. */
#include "arrow_internal.h" /* aq__arrow_quantize_batch, to lower the binary limit */
#include "arrow_test_util.h"

#include <math.h>

/* Quantizes b with ctx; on success out_s/out_a hold the result. */
#define QUANTIZE_OK(ctx, b, opts) \
    CHECK_OK(aq_batch_quantize((ctx), (b).s, (b).a, (opts), &out_s, &out_a, &err))

TEST(result_schema_is_the_seed_schema)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 64);
    CHECK(ctx != NULL);
    float w[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    tb_row rows[1] = {{"a", w, 10, NULL, 0, false}};
    tb_node b = tb_batch(rows, 1);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    CHECK(strcmp(out_s.format, "+s") == 0 && out_s.n_children == 6);
    static const char *names[6] = {"layer_name",  "quantized_data", "scales",
                                   "zero_points", "shape",          "bit_width"};
    static const char *formats[6] = {"u", "z", "+l", "+l", "+l", "C"};
    static const char *child[6] = {NULL, NULL, "f", "f", "l", NULL};
    for (int i = 0; i < 6; i++) {
        const struct ArrowSchema *c = out_s.children[i];
        CHECK_MSG(strcmp(c->name, names[i]) == 0 && strcmp(c->format, formats[i]) == 0,
                  "column %d: %s %s", i, c->name, c->format);
        CHECK(c->flags & ARROW_FLAG_NULLABLE);
        if (child[i] != NULL) {
            CHECK(c->n_children == 1 && strcmp(c->children[0]->name, "item") == 0 &&
                  strcmp(c->children[0]->format, child[i]) == 0 &&
                  (c->children[0]->flags & ARROW_FLAG_NULLABLE));
        } else {
            CHECK(c->n_children == 0);
        }
    }
    char buf[64];
    CHECK(meta_get(out_s.metadata, "arrowquant.format_version", buf, sizeof buf) &&
          strcmp(buf, "2") == 0);
    CHECK(meta_get(out_s.metadata, "arrowquant.scheme", buf, sizeof buf) &&
          strcmp(buf, "affine") == 0);
    CHECK(meta_get(out_s.metadata, "arrowquant.group_size", buf, sizeof buf) &&
          strcmp(buf, "64") == 0);
    CHECK(meta_get(out_s.metadata, "arrowquant.packing", buf, sizeof buf) &&
          strcmp(buf, "lsb-first") == 0);
    CHECK(out_a.length == 1 && out_a.n_children == 6 && out_a.n_buffers == 1);
    CHECK(out_a.children[1]->n_buffers == 3 && out_a.children[5]->n_buffers == 2);
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    aq_ctx_free(ctx);
}

TEST(utf8_list_float32_rows_match_tensor_api)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 64);
    CHECK(ctx != NULL);
    float *w = au_normal(1000, 1);
    int64_t s0[2] = {4, 100}, s2[3] = {2, 3, 50};
    tb_row rows[3] = {{"blocks.0.attn.weight", w, 400, s0, 2, false},
                      {"bias", w + 400, 300, NULL, 0, false},
                      {"conv", w + 700, 300, s2, 3, false}};
    tb_node b = tb_batch(rows, 3);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    CHECK(out_a.length == 3);
    int64_t s1[1] = {300};
    aq_tensor t[3] = {{"blocks.0.attn.weight", AQ_DTYPE_F32, w, s0, 2},
                      {"bias", AQ_DTYPE_F32, w + 400, s1, 1},
                      {"conv", AQ_DTYPE_F32, w + 700, s2, 3}};
    for (int i = 0; i < 3; i++) {
        rr_row r;
        rr_get(&out_a, false, i, &r);
        CHECK_MSG(rr_matches(ctx, &r, &t[i]), "row %d differs", i);
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(large_utf8_large_list_int32_shape)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 32);
    CHECK(ctx != NULL);
    float *w = au_normal(200, 2);
    const char *names[2] = {"x", "y"};
    int64_t wl[2] = {120, 80};
    int32_t shapes[3] = {12, 10, 80};
    int64_t sl[2] = {2, 1};
    tb_node cols[3] = {
        tb_strings("U", "layer_name", names, NULL, 2),
        tb_list("+L", "weights", tb_prim("f", "item", w, 4, 200, NULL), wl, 2, NULL),
        tb_list("+L", "shape", tb_prim("i", "item", shapes, 4, 3, NULL), sl, 2, NULL)};
    tb_node b = tb_struct("", cols, 3, 2);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    int64_t t0[2] = {12, 10}, t1[1] = {80};
    aq_tensor t[2] = {{"x", AQ_DTYPE_F32, w, t0, 2}, {"y", AQ_DTYPE_F32, w + 120, t1, 1}};
    for (int i = 0; i < 2; i++) {
        rr_row r;
        rr_get(&out_a, false, i, &r);
        CHECK_MSG(rr_matches(ctx, &r, &t[i]), "row %d differs", i);
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(string_view_names_fixed_size_list_weights)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(8, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(3 * 48, 3);
    const char *names[3] = {"short", "a.rather.long.layer.name.weight", "another.long.name.x"};
    tb_node cols[2] = {
        tb_views("vu", "layer_name", names, NULL, 3),
        tb_list("+w:48", "weights", tb_prim("f", "item", w, 4, 3 * 48, NULL), NULL, 3, NULL)};
    tb_node b = tb_struct("", cols, 2, 3);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    int64_t shape[1] = {48};
    for (int i = 0; i < 3; i++) {
        aq_tensor t = {names[i], AQ_DTYPE_F32, w + 48 * i, shape, 1};
        rr_row r;
        rr_get(&out_a, false, i, &r);
        CHECK_MSG(rr_matches(ctx, &r, &t), "row %d differs", i);
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

/* float16, float64 and bfloat16 (extension over uint16) children, quantized as the tensor API
 * quantizes the same values in the same dtype. */
TEST(float16_float64_bfloat16_children)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 32);
    CHECK(ctx != NULL);
    enum { N = 100 };
    float *f = au_normal(N, 4);
    uint16_t h[N], bf[N];
    double d[N];
    for (int i = 0; i < N; i++) {
        h[i] = aq__f32_to_f16(f[i]);
        bf[i] = aq__f32_to_bf16(f[i]);
        d[i] = (double)f[i] * 1.000001;
    }
    struct {
        const char *fmt;
        const void *data;
        size_t size;
        aq_dtype dtype;
    } cases[3] = {
        {"e", h, 2, AQ_DTYPE_F16}, {"g", d, 8, AQ_DTYPE_F64}, {"S", bf, 2, AQ_DTYPE_BF16}};
    for (int c = 0; c < 3; c++) {
        const char *names[1] = {"w"};
        int64_t wl[1] = {N};
        tb_node child = tb_prim(cases[c].fmt, "item", cases[c].data, cases[c].size, N, NULL);
        if (cases[c].dtype == AQ_DTYPE_BF16) {
            const char *k[1] = {"ARROW:extension:name"}, *v[1] = {"arrowquant.bfloat16"};
            tb_set_metadata(child, k, v, 1);
        }
        tb_node cols[2] = {tb_strings("u", "layer_name", names, NULL, 1),
                           tb_list("+l", "weights", child, wl, 1, NULL)};
        tb_node b = tb_struct("", cols, 2, 1);
        struct ArrowSchema out_s;
        struct ArrowArray out_a;
        QUANTIZE_OK(ctx, b, NULL);
        int64_t shape[1] = {N};
        aq_tensor t = {"w", cases[c].dtype, cases[c].data, shape, 1};
        rr_row r;
        rr_get(&out_a, false, 0, &r);
        CHECK_MSG(rr_matches(ctx, &r, &t), "format %s differs", cases[c].fmt);
        out_s.release(&out_s);
        out_a.release(&out_a);
        tb_free(b);
    }
    free(f);
    aq_ctx_free(ctx);
}

/* Offsets everywhere: the struct's, each column's, each list child's. */
TEST(sliced_arrays_at_every_level)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(7 + 5 * 40, 5);
    const char *names[6] = {"junk", "r0", "r1", "r2", "r3", "r4"};
    int64_t wl[6] = {0, 40, 40, 40, 40, 40};
    int64_t shp[12] = {99, 99, 8, 5, 4, 10, 2, 20, 40, 1, 40, 1};
    int64_t sl[6] = {2, 2, 2, 2, 2, 2};
    /* weights child starts 7 values in; every column starts one row in. */
    tb_node wchild = tb_prim("f", "item", w, 4, 7 + 5 * 40, NULL);
    wchild.a->offset = 7;
    wchild.a->length -= 7;
    tb_node cols[3] = {tb_strings("u", "layer_name", names, NULL, 6),
                       tb_list("+l", "weights", wchild, wl, 6, NULL),
                       tb_list("+l", "shape", tb_prim("l", "item", shp, 8, 12, NULL), sl, 6, NULL)};
    for (int i = 0; i < 3; i++) {
        cols[i].a->offset = 1;
        cols[i].a->length = 5;
    }
    tb_node b = tb_struct("", cols, 3, 5);
    /* And the struct itself starts at its row 2: rows r2, r3. */
    b.a->offset = 2;
    b.a->length = 2;
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    CHECK(out_a.length == 2);
    for (int i = 0; i < 2; i++) {
        int k = 2 + i; /* r2, r3 */
        aq_tensor t = {names[k + 1], AQ_DTYPE_F32, w + 7 + 40 * k, shp + 2 * (k + 1), 2};
        rr_row r;
        rr_get(&out_a, false, i, &r);
        CHECK_MSG(rr_matches(ctx, &r, &t), "row %d differs", i);
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

static void check_empty_result(aq_ctx *ctx, tb_node b)
{
    aq_error err;
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    CHECK(out_a.length == 0 && out_s.n_children == 6 && out_a.n_children == 6);
    for (int i = 0; i < 6; i++) {
        CHECK(out_a.children[i]->length == 0);
    }
    const int32_t *off = out_a.children[1]->buffers[1];
    CHECK(off != NULL && off[0] == 0);
    out_s.release(&out_s);
    out_a.release(&out_a);
}

TEST(zero_rows_whatever_the_types)
{
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    /* What pyarrow infers for empty Python lists: the null type. */
    tb_node c1[2] = {tb_null("layer_name", 0), tb_null("weights", 0)};
    tb_node b1 = tb_struct("", c1, 2, 0);
    check_empty_result(ctx, b1);
    tb_free(b1);
    /* Odd but empty types. */
    int32_t v = 0;
    tb_node c2[3] = {tb_prim("i", "layer_name", &v, 4, 0, NULL), tb_null("weights", 0),
                     tb_prim("f", "shape", &v, 4, 0, NULL)};
    tb_node b2 = tb_struct("", c2, 3, 0);
    check_empty_result(ctx, b2);
    tb_free(b2);
    /* Empty proper batch. */
    tb_node b3 = tb_batch(NULL, 0);
    check_empty_result(ctx, b3);
    tb_free(b3);
    aq_ctx_free(ctx);
}

TEST(null_shape_and_null_typed_shape_mean_flat)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(64, 6);
    const char *names[2] = {"a", "b"};
    int64_t wl[2] = {32, 32};
    tb_node cols[3] = {tb_strings("u", "layer_name", names, NULL, 2),
                       tb_list("+l", "weights", tb_prim("f", "item", w, 4, 64, NULL), wl, 2, NULL),
                       tb_null("shape", 2)};
    tb_node b = tb_struct("", cols, 3, 2);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    int64_t shape[1] = {32};
    for (int i = 0; i < 2; i++) {
        aq_tensor t = {names[i], AQ_DTYPE_F32, w + 32 * i, shape, 1};
        rr_row r;
        rr_get(&out_a, false, i, &r);
        CHECK(rr_matches(ctx, &r, &t));
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(columns_found_by_name_extra_columns_ignored)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(20, 7);
    const char *names[1] = {"only"};
    const char *extra[1] = {"ignored"};
    int64_t wl[1] = {20};
    int32_t iv[1] = {5};
    tb_node cols[4] = {tb_prim("i", "extra_int", iv, 4, 1, NULL),
                       tb_list("+l", "weights", tb_prim("f", "item", w, 4, 20, NULL), wl, 1, NULL),
                       tb_strings("u", "comment", extra, NULL, 1),
                       tb_strings("u", "layer_name", names, NULL, 1)};
    tb_node b = tb_struct("", cols, 4, 1);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, NULL);
    int64_t shape[1] = {20};
    aq_tensor t = {"only", AQ_DTYPE_F32, w, shape, 1};
    rr_row r;
    rr_get(&out_a, false, 0, &r);
    CHECK(rr_matches(ctx, &r, &t));
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(tensors_quantize_gives_the_batch_bytes)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 128);
    CHECK(ctx != NULL);
    float *w = au_normal(1500, 8);
    int64_t s0[2] = {10, 100}, s1[1] = {500};
    tb_row rows[2] = {{"a", w, 1000, s0, 2, false}, {"b", w + 1000, 500, s1, 1, false}};
    tb_node b = tb_batch(rows, 2);
    aq_tensor t[2] = {{"a", AQ_DTYPE_F32, w, s0, 2}, {"b", AQ_DTYPE_F32, w + 1000, s1, 1}};
    struct ArrowSchema out_s, t_s;
    struct ArrowArray out_a, t_a;
    QUANTIZE_OK(ctx, b, NULL);
    CHECK_OK(aq_tensors_quantize(ctx, t, 2, NULL, &t_s, &t_a, &err));
    CHECK(t_a.length == 2);
    for (int i = 0; i < 2; i++) {
        rr_row x, y;
        rr_get(&out_a, false, i, &x);
        rr_get(&t_a, false, i, &y);
        CHECK(x.packed_len == y.packed_len && memcmp(x.packed, y.packed, x.packed_len) == 0);
        CHECK(x.groups == y.groups && memcmp(x.scales, y.scales, 4 * x.groups) == 0 &&
              memcmp(x.zps, y.zps, 4 * x.groups) == 0);
        CHECK(x.ndim == y.ndim && memcmp(x.shape, y.shape, 8 * x.ndim) == 0);
        CHECK(rr_matches(ctx, &y, &t[i]));
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    t_s.release(&t_s);
    t_a.release(&t_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

typedef struct progress_log {
    size_t calls, rows, elements;
} progress_log;

static int on_progress(void *user, size_t rows, size_t elements)
{
    progress_log *p = user;
    p->calls++;
    p->rows = rows;
    p->elements = elements;
    return 0;
}

TEST(continue_on_error_skips_and_reports_in_row_order)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(32 * 6, 9);
    w[4 * 32 + 5] = NAN;
    int64_t bad_shape[2] = {3, 7};
    tb_row rows[6] = {
        {"good0", w, 32, NULL, 0, false},     {NULL, w + 32, 32, NULL, 0, false},
        {"nullw", NULL, 0, NULL, 0, true},    {"shape", w + 96, 32, bad_shape, 2, false},
        {"nan", w + 128, 32, NULL, 0, false}, {"good5", w + 160, 32, NULL, 0, false}};
    tb_node b = tb_batch(rows, 6);
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    progress_log log = {0, 0, 0};
    aq_batch_options opts = {.size = sizeof(aq_batch_options),
                             .continue_on_error = 1,
                             .progress = on_progress,
                             .progress_user = &log,
                             .report = rep};
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, &opts);
    CHECK(out_a.length == 2);
    int64_t shape[1] = {32};
    aq_tensor t0 = {"good0", AQ_DTYPE_F32, w, shape, 1};
    aq_tensor t5 = {"good5", AQ_DTYPE_F32, w + 160, shape, 1};
    rr_row r;
    rr_get(&out_a, false, 0, &r);
    CHECK(rr_matches(ctx, &r, &t0));
    rr_get(&out_a, false, 1, &r);
    CHECK(rr_matches(ctx, &r, &t5));
    CHECK(out_a.children[2]->children[0]->length == 4); /* 2 rows x 2 groups */
    CHECK(aq_report_count(rep) == 4);
    static const size_t want_rows[4] = {1, 2, 3, 4};
    static const char *want_names[4] = {"", "nullw", "shape", "nan"};
    static const aq_status want_codes[4] = {AQ_INVALID_ARGUMENT, AQ_INVALID_ARGUMENT,
                                            AQ_SHAPE_MISMATCH, AQ_NON_FINITE};
    static const char *want_msgs[4] = {"Row 1: layer_name is null",
                                       "Layer 'nullw' (row 2): weights is null",
                                       "shape [3, 7] has 21 elements but weights has 32 values",
                                       "Layer 'nan' contains NaN or Inf at index 5"};
    for (size_t i = 0; i < 4; i++) {
        size_t row;
        const char *name, *msg;
        aq_status code;
        CHECK_OK(aq_report_get(rep, i, &row, &name, &code, &msg, &err));
        CHECK_MSG(row == want_rows[i] && strcmp(name, want_names[i]) == 0 &&
                      code == want_codes[i] && strstr(msg, want_msgs[i]) != NULL,
                  "entry %zu: row %zu name '%s' %s '%s'", i, row, name, aq_status_name(code), msg);
    }
    CHECK(aq_report_get(rep, 4, NULL, NULL, NULL, NULL, &err) == AQ_INVALID_ARGUMENT);
    CHECK(log.calls == 6 && log.rows == 6);
    CHECK(log.elements == 32 * 5); /* every row but the null weights */
    out_s.release(&out_s);
    out_a.release(&out_a);
    aq_report_free(rep);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(progress_counts_rows_and_elements)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(8, 8);
    CHECK(ctx != NULL);
    float *w = au_normal(60, 10);
    tb_row rows[3] = {{"a", w, 10, NULL, 0, false},
                      {"b", w + 10, 20, NULL, 0, false},
                      {"c", w + 30, 30, NULL, 0, false}};
    tb_node b = tb_batch(rows, 3);
    progress_log log = {0, 0, 0};
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .progress = on_progress, .progress_user = &log};
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    QUANTIZE_OK(ctx, b, &opts);
    CHECK(log.calls == 3 && log.rows == 3 && log.elements == 60);
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

/* ---- the reverse path ---- */

TEST(dequantize_restores_every_row)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 32);
    CHECK(ctx != NULL);
    float *w = au_normal(700, 11);
    int64_t s0[2] = {10, 40}, s1[3] = {3, 2, 50};
    tb_row rows[2] = {{"a", w, 400, s0, 2, false}, {"b", w + 400, 300, s1, 3, false}};
    tb_node b = tb_batch(rows, 2);
    struct ArrowSchema q_s, d_s;
    struct ArrowArray q_a, d_a;
    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, NULL, &q_s, &q_a, &err));
    CHECK_OK(aq_batch_dequantize(ctx, &q_s, &q_a, NULL, &d_s, &d_a, &err));
    CHECK(strcmp(d_s.format, "+s") == 0 && d_s.n_children == 3);
    CHECK(strcmp(d_s.children[0]->name, "layer_name") == 0 &&
          strcmp(d_s.children[0]->format, "u") == 0);
    CHECK(strcmp(d_s.children[1]->name, "weights") == 0 &&
          strcmp(d_s.children[1]->format, "+l") == 0 &&
          strcmp(d_s.children[1]->children[0]->format, "f") == 0);
    CHECK(strcmp(d_s.children[2]->name, "shape") == 0 &&
          strcmp(d_s.children[2]->children[0]->format, "l") == 0);
    CHECK(d_a.length == 2);
    const int32_t *wo = d_a.children[1]->buffers[1];
    const float *wv = d_a.children[1]->children[0]->buffers[1];
    const int32_t *so = d_a.children[2]->buffers[1];
    const int64_t *sv = d_a.children[2]->children[0]->buffers[1];
    CHECK(wo[1] == 400 && wo[2] == 700 && so[1] == 2 && so[2] == 5);
    CHECK(sv[0] == 10 && sv[1] == 40 && sv[2] == 3 && sv[4] == 50);
    for (int i = 0; i < 2; i++) {
        rr_row r;
        rr_get(&q_a, false, i, &r);
        aq_qtensor q = {r.name,   AQ_SCHEME_AFFINE, r.bits,   32,    r.shape, r.ndim,
                        r.packed, r.packed_len,     r.scales, r.zps, r.groups};
        size_t n = i == 0 ? 400 : 300;
        float *want = malloc(n * sizeof *want);
        CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F32, want, n, &err));
        int same = memcmp(want, wv + wo[i], n * sizeof *want) == 0;
        free(want);
        CHECK_MSG(same, "row %d restored differently", i);
    }
    const int32_t *no = d_a.children[0]->buffers[1];
    CHECK(no[1] == 1 && memcmp((const char *)d_a.children[0]->buffers[2], "ab", 2) == 0);
    q_s.release(&q_s);
    q_a.release(&q_a);
    d_s.release(&d_s);
    d_a.release(&d_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

/* A result batch built by hand: the six columns, with kept rows (bit widths 32 and 16). */
static tb_node result_batch(const char *const *names, const char *const *packed,
                            const size_t *packed_len, const float *scales, const int64_t *ng,
                            const int64_t *shape, const int64_t *nd, const uint8_t *bits, int64_t n,
                            const char *const *mkeys, const char *const *mvals, int nmeta)
{
    int64_t tg = 0, td = 0;
    for (int64_t i = 0; i < n; i++) {
        tg += ng[i];
        td += nd[i];
    }
    tb_node cols[6] = {
        tb_strings("u", "layer_name", names, NULL, n),
        tb_strings("z", "quantized_data", packed, packed_len, n),
        tb_list("+l", "scales", tb_prim("f", "item", scales, 4, tg, NULL), ng, n, NULL),
        tb_list("+l", "zero_points", tb_prim("f", "item", scales, 4, tg, NULL), ng, n, NULL),
        tb_list("+l", "shape", tb_prim("l", "item", shape, 8, td, NULL), nd, n, NULL),
        tb_prim("C", "bit_width", bits, 1, n, NULL)};
    tb_node b = tb_struct("", cols, 6, n);
    tb_set_metadata(b, mkeys, mvals, nmeta);
    return b;
}

static const char *const good_keys[4] = {"arrowquant.format_version", "arrowquant.scheme",
                                         "arrowquant.group_size", "arrowquant.packing"};
static const char *const good_vals[4] = {"1", "affine", "8", "lsb-first"};

TEST(dequantize_kept_float32_and_float16_rows)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float f[3] = {1.5f, -2.25f, 3.0f};
    uint16_t h[2] = {aq__f32_to_f16(0.5f), aq__f32_to_f16(-4.0f)};
    const char *names[2] = {"norm.weight", "bias16"};
    const char *packed[2] = {(const char *)f, (const char *)h};
    size_t plen[2] = {12, 4};
    int64_t ng[2] = {0, 0}, shape[2] = {3, 2}, nd[2] = {1, 1};
    uint8_t bits[2] = {32, 16};
    float none[1] = {0};
    tb_node b =
        result_batch(names, packed, plen, none, ng, shape, nd, bits, 2, good_keys, good_vals, 4);
    struct ArrowSchema d_s;
    struct ArrowArray d_a;
    CHECK_OK(aq_batch_dequantize(ctx, b.s, b.a, NULL, &d_s, &d_a, &err));
    const float *wv = d_a.children[1]->children[0]->buffers[1];
    CHECK(d_a.length == 2 && wv[0] == 1.5f && wv[1] == -2.25f && wv[2] == 3.0f && wv[3] == 0.5f &&
          wv[4] == -4.0f);
    d_s.release(&d_s);
    d_a.release(&d_a);
    tb_free(b);
    aq_ctx_free(ctx);
}

TEST(dequantize_continue_on_error)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float f[2] = {1.0f, 2.0f};
    const char *names[2] = {"short", "ok"};
    const char *packed[2] = {(const char *)f, (const char *)f};
    size_t plen[2] = {5, 8}; /* 5 bytes cannot be 2 float32 */
    int64_t ng[2] = {0, 0}, shape[2] = {2, 2}, nd[2] = {1, 1};
    uint8_t bits[2] = {32, 32};
    tb_node b =
        result_batch(names, packed, plen, f, ng, shape, nd, bits, 2, good_keys, good_vals, 4);
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .continue_on_error = 1, .report = rep};
    struct ArrowSchema d_s;
    struct ArrowArray d_a;
    CHECK_OK(aq_batch_dequantize(ctx, b.s, b.a, &opts, &d_s, &d_a, &err));
    CHECK(d_a.length == 1 && aq_report_count(rep) == 1);
    size_t row;
    const char *name, *msg;
    aq_status code;
    CHECK_OK(aq_report_get(rep, 0, &row, &name, &code, &msg, &err));
    CHECK(row == 0 && strcmp(name, "short") == 0 && code == AQ_INVALID_DATA &&
          strstr(msg, "5 bytes of raw float32 data, expected 8") != NULL);
    d_s.release(&d_s);
    d_a.release(&d_a);
    aq_report_free(rep);
    tb_free(b);
    aq_ctx_free(ctx);
}

/* Rows quantized with different group sizes, described by arrowquant.row_schemes. */
TEST(dequantize_row_schemes)
{
    aq_error err;
    aq_ctx *c8 = au_ctx(4, 8), *c32 = au_ctx(2, 32);
    CHECK(c8 != NULL && c32 != NULL);
    float *w = au_normal(192, 12);
    int64_t sa[2] = {4, 32}, sb[1] = {64};
    aq_tensor ta = {"a", AQ_DTYPE_F32, w, sa, 2}, tb = {"b", AQ_DTYPE_F32, w + 128, sb, 1};
    struct ArrowSchema qs[2];
    struct ArrowArray qa[2];
    CHECK_OK(aq_tensors_quantize(c8, &ta, 1, NULL, &qs[0], &qa[0], &err));
    CHECK_OK(aq_tensors_quantize(c32, &tb, 1, NULL, &qs[1], &qa[1], &err));
    rr_row r[2];
    rr_get(&qa[0], false, 0, &r[0]);
    rr_get(&qa[1], false, 0, &r[1]);
    /* Concatenate the two rows by hand. */
    const char *names[2] = {"a", "b"};
    const char *packed[2] = {(const char *)r[0].packed, (const char *)r[1].packed};
    size_t plen[2] = {r[0].packed_len, r[1].packed_len};
    int64_t ng[2] = {(int64_t)r[0].groups, (int64_t)r[1].groups};
    float sc[64], zp[64];
    memcpy(sc, r[0].scales, r[0].groups * 4);
    memcpy(sc + r[0].groups, r[1].scales, r[1].groups * 4);
    memcpy(zp, r[0].zps, r[0].groups * 4);
    memcpy(zp + r[0].groups, r[1].zps, r[1].groups * 4);
    int64_t shapes[3] = {4, 32, 64}, nd[2] = {2, 1};
    uint8_t bits[2] = {4, 2};
    tb_node cols[6] = {
        tb_strings("u", "layer_name", names, NULL, 2),
        tb_strings("z", "quantized_data", packed, plen, 2),
        tb_list("+l", "scales", tb_prim("f", "item", sc, 4, ng[0] + ng[1], NULL), ng, 2, NULL),
        tb_list("+l", "zero_points", tb_prim("f", "item", zp, 4, ng[0] + ng[1], NULL), ng, 2, NULL),
        tb_list("+l", "shape", tb_prim("l", "item", shapes, 8, 3, NULL), nd, 2, NULL),
        tb_prim("C", "bit_width", bits, 1, 2, NULL)};
    tb_node b = tb_struct("", cols, 6, 2);
    const char *keys[3] = {"arrowquant.format_version", "arrowquant.packing",
                           "arrowquant.row_schemes"};
    static const char row_schemes[] =
        "[{\"scheme\": \"affine\", \"group_size\": 8},\n"
        " {\"group_size\": 32, \"note\": \"fallback\", \"scheme\": \"affine\"}]";
    const char *vals[3] = {"1", "lsb-first", row_schemes};
    tb_set_metadata(b, keys, vals, 3);
    struct ArrowSchema ds;
    struct ArrowArray da;
    CHECK_OK(aq_batch_dequantize(c8, b.s, b.a, NULL, &ds, &da, &err));
    CHECK(da.length == 2);
    const float *wv = da.children[1]->children[0]->buffers[1];
    float want[128];
    for (int i = 0; i < 2; i++) {
        aq_qtensor q = {names[i],    AQ_SCHEME_AFFINE, bits[i],     i == 0 ? 8u : 32u,
                        r[i].shape,  r[i].ndim,        r[i].packed, r[i].packed_len,
                        r[i].scales, r[i].zps,         r[i].groups};
        size_t n = i == 0 ? 128 : 64;
        CHECK_OK(aq_dequantize(c8, &q, AQ_DTYPE_F32, want, n, &err));
        CHECK_MSG(memcmp(want, wv + (i == 0 ? 0 : 128), n * 4) == 0, "row %d differs", i);
    }
    /* A slice holding only row 1 still takes its scheme from entry 1 of row_schemes. */
    struct ArrowSchema ss;
    struct ArrowArray sa1;
    b.a->offset = 1;
    b.a->length = 1;
    CHECK_OK(aq_batch_dequantize(c8, b.s, b.a, NULL, &ss, &sa1, &err));
    CHECK(sa1.length == 1);
    CHECK(memcmp(sa1.children[1]->children[0]->buffers[1], wv + 128, 64 * 4) == 0);
    ss.release(&ss);
    sa1.release(&sa1);
    ds.release(&ds);
    da.release(&da);
    tb_free(b);
    for (int i = 0; i < 2; i++) {
        qs[i].release(&qs[i]);
        qa[i].release(&qa[i]);
    }
    free(w);
    aq_ctx_free(c8);
    aq_ctx_free(c32);
}

/* quantized_data becomes large_binary past the binary limit (2 GiB for real; lowered here), and
 * a stream, whose schema says binary, refuses such a batch instead. */
TEST(large_binary_past_the_binary_limit)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(8, 16);
    CHECK(ctx != NULL);
    float *w = au_normal(96, 13);
    tb_row rows[2] = {{"a", w, 64, NULL, 0, false}, {"b", w + 64, 32, NULL, 0, false}};
    tb_node b = tb_batch(rows, 2);
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    arw_run run = {0, 0};
    CHECK_OK(aq__arrow_quantize_batch(ctx, b.s, b.a, NULL, &run, 95, true, &out_a, &out_s, &err));
    CHECK(strcmp(out_s.children[1]->format, "Z") == 0);
    int64_t shape_a[1] = {64}, shape_b[1] = {32};
    aq_tensor ta = {"a", AQ_DTYPE_F32, w, shape_a, 1}, tb = {"b", AQ_DTYPE_F32, w + 64, shape_b, 1};
    rr_row r;
    rr_get(&out_a, true, 0, &r);
    CHECK(rr_matches(ctx, &r, &ta));
    rr_get(&out_a, true, 1, &r);
    CHECK(rr_matches(ctx, &r, &tb));
    /* The reverse path reads large_binary. */
    struct ArrowSchema ds;
    struct ArrowArray da;
    CHECK_OK(aq_batch_dequantize(ctx, &out_s, &out_a, NULL, &ds, &da, &err));
    CHECK(da.length == 2);
    ds.release(&ds);
    da.release(&da);
    out_s.release(&out_s);
    out_a.release(&out_a);
    /* Exactly at the limit it stays binary. */
    CHECK_OK(aq__arrow_quantize_batch(ctx, b.s, b.a, NULL, &run, 96, true, &out_a, &out_s, &err));
    CHECK(strcmp(out_s.children[1]->format, "z") == 0);
    out_s.release(&out_s);
    out_a.release(&out_a);
    CHECK_FAILS(aq__arrow_quantize_batch(ctx, b.s, b.a, NULL, &run, 95, false, &out_a, NULL, &err),
                AQ_OVERFLOW, "a stream batch would hold 96 bytes of quantized data");
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(
    AQ_CASE(result_schema_is_the_seed_schema), AQ_CASE(utf8_list_float32_rows_match_tensor_api),
    AQ_CASE(large_utf8_large_list_int32_shape), AQ_CASE(string_view_names_fixed_size_list_weights),
    AQ_CASE(float16_float64_bfloat16_children), AQ_CASE(sliced_arrays_at_every_level),
    AQ_CASE(zero_rows_whatever_the_types), AQ_CASE(null_shape_and_null_typed_shape_mean_flat),
    AQ_CASE(columns_found_by_name_extra_columns_ignored),
    AQ_CASE(tensors_quantize_gives_the_batch_bytes),
    AQ_CASE(continue_on_error_skips_and_reports_in_row_order),
    AQ_CASE(progress_counts_rows_and_elements), AQ_CASE(dequantize_restores_every_row),
    AQ_CASE(dequantize_kept_float32_and_float16_rows), AQ_CASE(dequantize_continue_on_error),
    AQ_CASE(dequantize_row_schemes), AQ_CASE(large_binary_past_the_binary_limit))
