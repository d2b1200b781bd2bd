/* Bad Arrow input: each case gets its own status and message, the caller's structures stay
 * intact (released afterwards by the test, so ASan sees any leak), and nothing is written to
 * the outputs. */
#include "arrow_test_util.h"

#include <math.h>

/* A good two-row batch: "a" [2, 8] and "b" [16]. */
static tb_node good_batch(float **w)
{
    *w = au_normal(32, 42);
    static const int64_t s0[2] = {2, 8};
    tb_row rows[2] = {{"a", *w, 16, s0, 2, false}, {"b", *w + 16, 16, NULL, 0, false}};
    return tb_batch(rows, 2);
}

/* Expects aq_batch_quantize on b to fail with status and a message containing needle, and the
 * outputs untouched. */
#define EXPECT_QUANTIZE_FAILS(ctx, b, status, needle)                                     \
    do {                                                                                  \
        struct ArrowSchema out_s_;                                                        \
        struct ArrowArray out_a_;                                                         \
        out_s_.release = NULL;                                                            \
        out_a_.release = NULL;                                                            \
        CHECK_FAILS(aq_batch_quantize((ctx), (b).s, (b).a, NULL, &out_s_, &out_a_, &err), \
                    (status), (needle));                                                  \
        CHECK(out_s_.release == NULL && out_a_.release == NULL);                          \
    } while (0)

TEST(missing_required_columns_verbatim)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float w[4] = {1, 2, 3, 4};
    const char *names[1] = {"a"};
    int64_t wl[1] = {4};
    tb_node c1[1] = {tb_list("+l", "weights", tb_prim("f", "item", w, 4, 4, NULL), wl, 1, NULL)};
    tb_node b1 = tb_struct("", c1, 1, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b1, AQ_INVALID_ARGUMENT,
                          "Missing required column 'layer_name'. Expected schema: {layer_name: "
                          "string, weights: list<float32>, shape: list<int64>}");
    tb_free(b1);
    tb_node c2[1] = {tb_strings("u", "layer_name", names, NULL, 1)};
    tb_node b2 = tb_struct("", c2, 1, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b2, AQ_INVALID_ARGUMENT,
                          "Missing required column 'weights'. Expected schema: {layer_name: "
                          "string, weights: list<float32>, shape: list<int64>}");
    tb_free(b2);
    /* Missing even in an empty batch: the schema is wrong whatever the rows. */
    tb_node c3[1] = {tb_null("layer_name", 0)};
    tb_node b3 = tb_struct("", c3, 1, 0);
    EXPECT_QUANTIZE_FAILS(ctx, b3, AQ_INVALID_ARGUMENT, "Missing required column 'weights'");
    tb_free(b3);
    aq_ctx_free(ctx);
}

TEST(wrong_column_types_name_column_expected_and_actual)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float w[4] = {1, 2, 3, 4};
    int32_t iw[4] = {1, 2, 3, 4};
    const char *names[1] = {"a"};
    int64_t wl[1] = {4};
    /* layer_name as int32 */
    tb_node c1[2] = {tb_prim("i", "layer_name", iw, 4, 1, NULL),
                     tb_list("+l", "weights", tb_prim("f", "item", w, 4, 4, NULL), wl, 1, NULL)};
    tb_node b1 = tb_struct("", c1, 2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b1, AQ_INVALID_ARGUMENT,
                          "Column 'layer_name' must be string (utf8, large_utf8 or string_view), "
                          "got Arrow format 'i'");
    tb_free(b1);
    /* weights as list<int32> */
    tb_node c2[2] = {tb_strings("u", "layer_name", names, NULL, 1),
                     tb_list("+l", "weights", tb_prim("i", "item", iw, 4, 4, NULL), wl, 1, NULL)};
    tb_node b2 = tb_struct("", c2, 2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b2, AQ_INVALID_ARGUMENT,
                          "Column 'weights' must be list<float32> (list, large_list or "
                          "fixed_size_list of float32, float16, float64 or arrowquant.bfloat16), "
                          "got Arrow format '+l' with child format 'i'");
    tb_free(b2);
    /* weights as a flat float32 column */
    tb_node c3[2] = {tb_strings("u", "layer_name", names, NULL, 1),
                     tb_prim("f", "weights", w, 4, 1, NULL)};
    tb_node b3 = tb_struct("", c3, 2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b3, AQ_INVALID_ARGUMENT, "Column 'weights' must be list<float32>");
    CHECK(strstr(err.message, "got Arrow format 'f'") != NULL);
    tb_free(b3);
    /* shape as list<float32> */
    tb_node c4[3] = {tb_strings("u", "layer_name", names, NULL, 1),
                     tb_list("+l", "weights", tb_prim("f", "item", w, 4, 4, NULL), wl, 1, NULL),
                     tb_list("+l", "shape", tb_prim("f", "item", w, 4, 1, NULL), wl, 1, NULL)};
    tb_node b4 = tb_struct("", c4, 3, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b4, AQ_INVALID_ARGUMENT,
                          "Column 'shape' must be list<int64> (list, large_list or "
                          "fixed_size_list of int64 or int32), got Arrow format '+l' with child "
                          "format 'f'");
    tb_free(b4);
    /* uint16 values without the bfloat16 extension name */
    uint16_t h[4] = {0};
    tb_node c5[2] = {tb_strings("u", "layer_name", names, NULL, 1),
                     tb_list("+l", "weights", tb_prim("S", "item", h, 2, 4, NULL), wl, 1, NULL)};
    tb_node b5 = tb_struct("", c5, 2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b5, AQ_INVALID_ARGUMENT,
                          "child format 'S' (uint16 without the extension type "
                          "'arrowquant.bfloat16')");
    tb_free(b5);
    aq_ctx_free(ctx);
}

TEST(null_name_and_null_weights_name_the_row)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    tb_row r1[2] = {{"a", w, 8, NULL, 0, false}, {NULL, w, 8, NULL, 0, false}};
    tb_node b1 = tb_batch(r1, 2);
    EXPECT_QUANTIZE_FAILS(ctx, b1, AQ_INVALID_ARGUMENT, "Row 1: layer_name is null");
    tb_free(b1);
    tb_row r2[2] = {{"a", w, 8, NULL, 0, false}, {"b", NULL, 0, NULL, 0, true}};
    tb_node b2 = tb_batch(r2, 2);
    EXPECT_QUANTIZE_FAILS(ctx, b2, AQ_INVALID_ARGUMENT, "Layer 'b' (row 1): weights is null");
    tb_free(b2);
    /* A null value inside a weights list. */
    const char *names[1] = {"holey"};
    int64_t wl[1] = {8};
    uint8_t valid[8] = {1, 1, 1, 0, 1, 1, 1, 1};
    tb_node c3[2] = {tb_strings("u", "layer_name", names, NULL, 1),
                     tb_list("+l", "weights", tb_prim("f", "item", w, 4, 8, valid), wl, 1, NULL)};
    tb_node b3 = tb_struct("", c3, 2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b3, AQ_INVALID_ARGUMENT,
                          "Layer 'holey' (row 0): weights has a null value at index 3");
    tb_free(b3);
    aq_ctx_free(ctx);
}

TEST(shape_product_mismatch_names_layer_and_numbers)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float w[10] = {0};
    int64_t s[2] = {3, 4};
    tb_row r[1] = {{"blocks.1.ff", w, 10, s, 2, false}};
    tb_node b = tb_batch(r, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_SHAPE_MISMATCH,
                          "Layer 'blocks.1.ff' (row 0): shape [3, 4] has 12 elements but weights "
                          "has 10 values");
    tb_free(b);
    int64_t neg[2] = {-2, -5};
    tb_row r2[1] = {{"neg", w, 10, neg, 2, false}};
    tb_node b2 = tb_batch(r2, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b2, AQ_INVALID_ARGUMENT, "Layer 'neg': dimension 0 is negative");
    tb_free(b2);
    tb_row r3[1] = {{"empty", w, 0, NULL, 0, false}};
    tb_node b3 = tb_batch(r3, 1);
    EXPECT_QUANTIZE_FAILS(ctx, b3, AQ_INVALID_ARGUMENT, "Layer 'empty' has no elements");
    tb_free(b3);
    aq_ctx_free(ctx);
}

TEST(nan_and_inf_name_layer_and_index)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 8);
    CHECK(ctx != NULL);
    float *w = au_normal(64, 3);
    w[32 + 21] = NAN;
    int64_t s[2] = {4, 8};
    tb_row r[2] = {{"ok", w, 32, s, 2, false}, {"up.0.conv", w + 32, 32, s, 2, false}};
    tb_node b = tb_batch(r, 2);
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_NON_FINITE,
                          "Layer 'up.0.conv' contains NaN or Inf at index 21");
    tb_free(b);
    w[32 + 21] = 0;
    w[7] = -INFINITY;
    tb_node b2 = tb_batch(r, 2);
    EXPECT_QUANTIZE_FAILS(ctx, b2, AQ_NON_FINITE, "Layer 'ok' contains NaN or Inf at index 7");
    tb_free(b2);
    free(w);
    aq_ctx_free(ctx);
}

TEST(wrong_number_of_buffers_or_children)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float *w;
    tb_node b = good_batch(&w);
    struct ArrowArray *weights = b.a->children[1];
    weights->n_buffers = 1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights': 1 buffers, expected 2 for Arrow format '+l'");
    weights->n_buffers = 2;
    weights->n_children = 0;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights': 0 array children and 1 schema children, expected 1");
    weights->n_children = 1;
    b.a->children[0]->n_buffers = 2;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'layer_name': 2 buffers, expected 3 for Arrow format 'u'");
    b.a->children[0]->n_buffers = 3;
    weights->children[0]->n_buffers = 1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights' (list child): 1 buffers, expected 2");
    weights->children[0]->n_buffers = 2;
    b.a->n_children = 2; /* the batch itself: schema says 3 */
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA, "2 array children and 3 schema children");
    b.a->n_children = 3;
    b.a->n_buffers = 0;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA, "0 buffers, expected 1 for Arrow format '+s'");
    b.a->n_buffers = 1;
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(negative_length_or_offset)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float *w;
    tb_node b = good_batch(&w);
    b.a->length = -1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA, "negative length or offset (length -1");
    b.a->length = 2;
    b.a->offset = -3;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA, "offset -3)");
    b.a->offset = 0;
    b.a->children[1]->offset = -1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights': negative length or offset (length 2, offset -1)");
    b.a->children[1]->offset = 0;
    b.a->children[1]->children[0]->length = -5;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights' (list child): negative length or offset");
    b.a->children[1]->children[0]->length = 32;
    /* A column shorter than the batch. */
    b.a->children[0]->length = 1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'layer_name': length 1 is shorter than the 2 rows");
    b.a->children[0]->length = 2;
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(offsets_outside_the_child)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float *w;
    tb_node b = good_batch(&w);
    int32_t *off = (int32_t *)(uintptr_t)b.a->children[1]->buffers[1];
    off[2] = 33; /* the child holds 32 values */
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights': offsets run outside the list child (up to 33, child "
                          "length 32)");
    off[2] = 32;
    off[1] = 40; /* decreasing */
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'weights': invalid offsets at row 1 (40, 32)");
    off[1] = 16;
    int32_t *noff = (int32_t *)(uintptr_t)b.a->children[0]->buffers[1];
    noff[0] = -1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'layer_name': invalid offsets at row 0 (-1, 1)");
    noff[0] = 0;
    /* A slice that runs past the child: offset moves the window beyond the end. */
    b.a->children[1]->children[0]->length = 20;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA, "offsets run outside the list child");
    b.a->children[1]->children[0]->length = 32;
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(already_released_structures)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float *w;
    tb_node b = good_batch(&w);
    void (*arel)(struct ArrowArray *) = b.a->release;
    void (*srel)(struct ArrowSchema *) = b.s->release;
    b.a->release = NULL;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_ARGUMENT,
                          "input batch: the ArrowArray was already released");
    b.a->release = arel;
    b.s->release = NULL;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_ARGUMENT,
                          "input batch: the ArrowSchema was already released");
    b.s->release = srel;
    struct ArrowArray *col = b.a->children[1];
    arel = col->release;
    col->release = NULL;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_ARGUMENT,
                          "Column 'weights': the ArrowArray was already released");
    col->release = arel;
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(other_malformed_batches)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    CHECK(ctx != NULL);
    float *w;
    tb_node b = good_batch(&w);
    /* Not a struct. */
    tb_node col = {b.s->children[1], b.a->children[1]};
    EXPECT_QUANTIZE_FAILS(ctx, col, AQ_INVALID_ARGUMENT,
                          "input batch must be a struct array (Arrow format '+s'), got '+l'");
    /* A dictionary-encoded column. */
    struct ArrowSchema dict;
    memset(&dict, 0, sizeof dict);
    b.s->children[0]->dictionary = &dict;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_UNSUPPORTED,
                          "Column 'layer_name': dictionary-encoded arrays are not supported");
    b.s->children[0]->dictionary = NULL;
    /* A null row of the struct itself. */
    uint8_t bits = 0x1; /* row 1 null */
    b.a->buffers[0] = &bits;
    b.a->null_count = 1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_ARGUMENT, "input batch: row 1 is null");
    b.a->buffers[0] = NULL;
    b.a->null_count = 0;
    /* A null count without a validity buffer. */
    b.a->children[0]->null_count = 1;
    EXPECT_QUANTIZE_FAILS(ctx, b, AQ_INVALID_DATA,
                          "Column 'layer_name': null_count is 1 but there is no validity buffer");
    b.a->children[0]->null_count = 0;
    /* NULL arguments. */
    struct ArrowSchema os;
    struct ArrowArray oa;
    CHECK_FAILS(aq_batch_quantize(ctx, NULL, b.a, NULL, &os, &oa, &err), AQ_INVALID_ARGUMENT,
                "NULL");
    CHECK_FAILS(aq_batch_quantize(NULL, b.s, b.a, NULL, &os, &oa, &err), AQ_INVALID_ARGUMENT,
                "NULL");
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

/* ---- the reverse path ---- */

static tb_node quantized(aq_ctx *ctx, float **w, struct ArrowSchema *qs, struct ArrowArray *qa)
{
    tb_node b = good_batch(w);
    aq_error err;
    if (aq_batch_quantize(ctx, b.s, b.a, NULL, qs, qa, &err) != AQ_OK) {
        qs->release = NULL;
        qa->release = NULL;
    }
    return b;
}

static void set_meta(struct ArrowSchema *s, char **saved, const char *const *vals)
{
    /* Replaces the library's metadata with a test copy (restored before release). */
    *saved = (char *)(uintptr_t)s->metadata;
    size_t total = 4;
    for (int i = 0; i < 4; i++) {
        total += 8 + strlen(vals[2 * i]) + strlen(vals[2 * i + 1]);
    }
    char *m = calloc(1, total), *p = m;
    int32_t v = 4;
    memcpy(p, &v, 4);
    p += 4;
    for (int i = 0; i < 8; i++) {
        v = (int32_t)strlen(vals[i]);
        memcpy(p, &v, 4);
        memcpy(p + 4, vals[i], (size_t)v);
        p += 4 + v;
    }
    s->metadata = m;
}

#define EXPECT_DEQUANTIZE_FAILS(ctx, s, a, status, needle)                                  \
    do {                                                                                    \
        struct ArrowSchema ds_;                                                             \
        struct ArrowArray da_;                                                              \
        ds_.release = NULL;                                                                 \
        da_.release = NULL;                                                                 \
        CHECK_FAILS(aq_batch_dequantize((ctx), (s), (a), NULL, &ds_, &da_, &err), (status), \
                    (needle));                                                              \
        CHECK(ds_.release == NULL && da_.release == NULL);                                  \
    } while (0)

static void check_meta_case(aq_ctx *ctx, struct ArrowSchema *qs, struct ArrowArray *qa,
                            const char *const *vals, aq_status status, const char *needle)
{
    aq_error err;
    char *saved;
    set_meta(qs, &saved, vals);
    struct ArrowSchema ds;
    struct ArrowArray da;
    ds.release = NULL;
    da.release = NULL;
    aq_error_clear(&err);
    aq_status st = aq_batch_dequantize(ctx, qs, qa, NULL, &ds, &da, &err);
    free((void *)(uintptr_t)qs->metadata);
    qs->metadata = saved;
    CHECK_MSG(st == status && strstr(err.message, needle) != NULL && ds.release == NULL,
              "got %s '%s', expected %s '%s'", aq_status_name(st), err.message,
              aq_status_name(status), needle);
}

TEST(dequantize_checks_metadata)
{
    aq_ctx *ctx = au_ctx(4, 8);
    CHECK(ctx != NULL);
    float *w;
    struct ArrowSchema qs;
    struct ArrowArray qa;
    tb_node b = quantized(ctx, &w, &qs, &qa);
    CHECK(qs.release != NULL);
    const char *v1[8] = {"arrowquant.format_version", "3", "arrowquant.scheme",  "affine",
                         "arrowquant.group_size",     "8", "arrowquant.packing", "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v1, AQ_UNSUPPORTED,
                    "arrowquant.format_version '3' is not supported (this library reads versions "
                    "1 to 2)");
    const char *v1b[8] = {"arrowquant.format_version", "01", "arrowquant.scheme",  "affine",
                          "arrowquant.group_size",     "8",  "arrowquant.packing", "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v1b, AQ_UNSUPPORTED, "arrowquant.format_version '01'");
    const char *v2[8] = {"arrowquant.format_version", "1", "arrowquant.scheme",  "nf4",
                         "arrowquant.group_size",     "8", "arrowquant.packing", "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v2, AQ_UNSUPPORTED, "arrowquant.scheme 'nf4' is not supported");
    const char *v3[8] = {"arrowquant.format_version", "1", "arrowquant.scheme",  "affine",
                         "arrowquant.group_size",     "7", "arrowquant.packing", "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v3, AQ_INVALID_DATA,
                    "arrowquant.group_size '7' is not a valid group size");
    const char *v4[8] = {"arrowquant.format_version", "1", "arrowquant.scheme",  "affine",
                         "arrowquant.group_size",     "8", "arrowquant.packing", "msb-first"};
    check_meta_case(ctx, &qs, &qa, v4, AQ_UNSUPPORTED,
                    "arrowquant.packing 'msb-first' is not supported (expected 'lsb-first')");
    const char *v5[8] = {"other",
                         "1",
                         "arrowquant.scheme",
                         "affine",
                         "arrowquant.group_size",
                         "8",
                         "arrowquant.packing",
                         "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v5, AQ_INVALID_DATA,
                    "the schema metadata has no 'arrowquant.format_version'");
    /* A group size that differs from the one used makes the group counts wrong. */
    const char *v6[8] = {"arrowquant.format_version", "1",  "arrowquant.scheme",  "affine",
                         "arrowquant.group_size",     "16", "arrowquant.packing", "lsb-first"};
    check_meta_case(ctx, &qs, &qa, v6, AQ_INVALID_DATA,
                    "Layer 'b' (row 1): 8 packed bytes and 2 groups, expected 8 and 1");
    qs.release(&qs);
    qa.release(&qa);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(dequantize_checks_columns_and_rows)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 8);
    CHECK(ctx != NULL);
    float *w;
    struct ArrowSchema qs;
    struct ArrowArray qa;
    tb_node b = quantized(ctx, &w, &qs, &qa);
    CHECK(qs.release != NULL);
    /* Missing column: rename scales. */
    const char *saved_name = qs.children[2]->name;
    qs.children[2]->name = "scale";
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_ARGUMENT,
                            "Missing required column 'scales' in a quantized batch");
    qs.children[2]->name = saved_name;
    /* Wrong type: bit_width as int8. */
    const char *saved_fmt = qs.children[5]->format;
    qs.children[5]->format = "c";
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_ARGUMENT,
                            "Column 'bit_width' must be uint8, got Arrow format 'c'");
    qs.children[5]->format = saved_fmt;
    /* Bit width 3. */
    uint8_t *bits = (uint8_t *)(uintptr_t)qa.children[5]->buffers[1];
    bits[1] = 3;
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_PARAMETER,
                            "Layer 'b' (row 1): Invalid bit_width: 3. Must be 2, 4, or 8");
    bits[1] = 4;
    /* Packed data one byte short: shrink row 1 by moving the last offset. */
    int32_t *po = (int32_t *)(uintptr_t)qa.children[1]->buffers[1];
    po[2] -= 1;
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_DATA,
                            "Layer 'b' (row 1): 7 packed bytes and 2 groups, expected 8 and 2");
    po[2] += 1;
    /* scales and zero_points of different lengths. */
    int32_t *zo = (int32_t *)(uintptr_t)qa.children[3]->buffers[1];
    zo[2] -= 1;
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_DATA,
                            "Layer 'b' (row 1): 2 scales but 1 zero points");
    zo[2] += 1;
    /* A non-finite scale. */
    float *sc = (float *)(uintptr_t)qa.children[2]->children[0]->buffers[1];
    float keep = sc[3];
    sc[3] = NAN;
    EXPECT_DEQUANTIZE_FAILS(ctx, &qs, &qa, AQ_INVALID_DATA,
                            "Layer 'b': scale or zero point of group 1 is not finite");
    sc[3] = keep;
    /* And intact, it works. */
    struct ArrowSchema ds;
    struct ArrowArray da;
    CHECK_OK(aq_batch_dequantize(ctx, &qs, &qa, NULL, &ds, &da, &err));
    ds.release(&ds);
    da.release(&da);
    qs.release(&qs);
    qa.release(&qa);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(dequantize_checks_row_schemes)
{
    aq_ctx *ctx = au_ctx(4, 8);
    CHECK(ctx != NULL);
    float *w;
    struct ArrowSchema qs;
    struct ArrowArray qa;
    tb_node b = quantized(ctx, &w, &qs, &qa);
    CHECK(qs.release != NULL);
    static const struct {
        const char *json;
        aq_status status;
        const char *needle;
    } cases[] = {
        {"[{\"scheme\": \"affine\", \"group_size\": 8}", AQ_INVALID_DATA,
         "arrowquant.row_schemes is not valid: expected ',' or ']' at byte 38"},
        {"[{\"scheme\": \"nf4\", \"group_size\": 8}]", AQ_UNSUPPORTED,
         "arrowquant.row_schemes names scheme 'nf4', which is not supported"},
        {"[{\"scheme\": \"affine\", \"group_size\": 4}]", AQ_INVALID_DATA,
         "invalid group size at byte"},
        {"[{\"scheme\": \"affine\"}]", AQ_INVALID_DATA,
         "an entry lacks \"scheme\" or \"group_size\""},
        {"[{\"scheme\": \"affine\", \"group_size\": 8}] x", AQ_INVALID_DATA,
         "trailing characters at byte 40"},
        {"{}", AQ_INVALID_DATA, "expected '[' at byte 0"},
        {"[{\"scheme\": \"affine\", \"group_size\": 8, \"x\": [1]}]", AQ_INVALID_DATA,
         "expected a non-negative integer"},
        /* Valid, but one entry for two rows. */
        {"[{\"scheme\": \"affine\", \"group_size\": 8}]", AQ_INVALID_DATA,
         "Layer 'b' (row 1): arrowquant.row_schemes has only 1 entries"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *vals[8] = {
            "arrowquant.format_version", "1",           "arrowquant.packing", "lsb-first",
            "arrowquant.row_schemes",    cases[i].json, "arrowquant.scheme",  "affine"};
        check_meta_case(ctx, &qs, &qa, vals, cases[i].status, cases[i].needle);
    }
    qs.release(&qs);
    qa.release(&qa);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(AQ_CASE(missing_required_columns_verbatim),
             AQ_CASE(wrong_column_types_name_column_expected_and_actual),
             AQ_CASE(null_name_and_null_weights_name_the_row),
             AQ_CASE(shape_product_mismatch_names_layer_and_numbers),
             AQ_CASE(nan_and_inf_name_layer_and_index),
             AQ_CASE(wrong_number_of_buffers_or_children), AQ_CASE(negative_length_or_offset),
             AQ_CASE(offsets_outside_the_child), AQ_CASE(already_released_structures),
             AQ_CASE(other_malformed_batches), AQ_CASE(dequantize_checks_metadata),
             AQ_CASE(dequantize_checks_columns_and_rows), AQ_CASE(dequantize_checks_row_schemes))
