/* Time-aware calibration statistics (src/diffusion/calib.c): a calibration table through the
 * Arrow C Data Interface, combined into importance vectors; every kind of bad input. */
#include "aq_test.h"
#include "arrow_builder.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct crow {
    const char *layer;
    int64_t group;
    const double *ms;
    int64_t n;
} crow;

/* {layer_name: utf8, timestep_group: int64 (or int32), mean_square: list<float64>} */
static tb_node calib_batch(const crow *rows, int64_t n, bool int32_groups, const char *declared)
{
    const char *names[16];
    int64_t g64[16], lens[16], total = 0;
    int32_t g32[16];
    double values[256];
    for (int64_t i = 0; i < n; i++) {
        names[i] = rows[i].layer;
        g64[i] = rows[i].group;
        g32[i] = (int32_t)rows[i].group;
        lens[i] = rows[i].n;
        memcpy(values + total, rows[i].ms, (size_t)rows[i].n * sizeof(double));
        total += rows[i].n;
    }
    tb_node cols[3];
    cols[0] = tb_strings("u", "layer_name", names, NULL, n);
    cols[1] = int32_groups ? tb_prim("i", "timestep_group", g32, 4, n, NULL)
                           : tb_prim("l", "timestep_group", g64, 8, n, NULL);
    cols[2] =
        tb_list("+l", "mean_square", tb_prim("g", "item", values, 8, total, NULL), lens, n, NULL);
    tb_node batch = tb_struct("", cols, 3, n);
    if (declared != NULL) {
        const char *k[] = {"arrowquant.timestep_groups"};
        const char *v[] = {declared};
        tb_set_metadata(batch, k, v, 1);
    }
    return batch;
}

static const double a0[] = {1, 2, 3, 2}, a1[] = {40, 0, 0, 0};
static const double b0[] = {0, 4}, b1[] = {0, 6};

static void load(aq_calib **out, aq_calib_combine how)
{
    aq_error err;
    const crow rows[] = {{"a", 0, a0, 4}, {"b", 1, b1, 2}, {"a", 1, a1, 4}};
    const crow rows2[] = {{"b", 0, b0, 2}};
    aq_calib *c;
    CHECK_OK(aq_calib_create(&c, &err));
    tb_node t1 = calib_batch(rows, 3, false, NULL), t2 = calib_batch(rows2, 1, true, "2");
    CHECK_OK(aq_calib_add_batch(c, t1.s, t1.a, &err));
    CHECK_OK(aq_calib_add_batch(c, t2.s, t2.a, &err));
    tb_free(t1);
    tb_free(t2);
    CHECK_OK(aq_calib_finish(c, how, &err));
    *out = c;
}

TEST(combine_max)
{
    aq_error err;
    aq_calib *c = NULL;
    load(&c, AQ_CALIB_COMBINE_MAX);
    CHECK(c != NULL);
    CHECK(aq_calib_layer_count(c) == 2);
    aq_calib_layer_info info;
    CHECK_OK(aq_calib_layer_get(c, 0, &info, &err));
    CHECK(strcmp(info.name, "a") == 0 && info.channels == 4 && info.groups == 2);
    CHECK_MSG(fabs(info.scale_ratio - 5.0) < 1e-12, "%g", info.scale_ratio);
    CHECK_MSG(fabs(info.shape_variation - sqrt(4.125 / 6.125)) < 1e-12, "%g", info.shape_variation);
    CHECK_OK(aq_calib_layer_get(c, 1, &info, &err));
    CHECK(strcmp(info.name, "b") == 0 && fabs(info.scale_ratio - 1.5) < 1e-12);
    CHECK(info.shape_variation == 0.0);
    /* Linear [3, 4]: every row is the combined vector (normalised groups, maximum). */
    int64_t sa[2] = {3, 4};
    float imp[36];
    int found = -1;
    CHECK_OK(aq_calib_importance(c, "a.weight", sa, 2, imp, 12, &found, &err));
    CHECK(found == 1);
    static const float want_a[4] = {4.0f, 1.0f, 1.5f, 1.0f};
    for (size_t i = 0; i < 12; i++) {
        CHECK_MSG(imp[i] == want_a[i % 4], "a[%zu] = %g", i, (double)imp[i]);
    }
    /* Convolution [2, 2, 3, 3] with a pipeline component prefix: channel 0 was never active,
     * so it gets the floor. */
    int64_t sb[4] = {2, 2, 3, 3};
    CHECK_OK(aq_calib_importance(c, "unet/b.weight", sb, 4, imp, 36, &found, &err));
    CHECK(found == 1);
    for (size_t i = 0; i < 36; i++) {
        float want = (i % 18) < 9 ? (float)AQ_CALIB_FLOOR : 2.0f;
        CHECK_MSG(imp[i] == want, "b[%zu] = %g", i, (double)imp[i]);
    }
    /* A tensor without statistics: not found, output untouched. */
    imp[0] = -1.0f;
    CHECK_OK(aq_calib_importance(c, "c.weight", sa, 2, imp, 12, &found, &err));
    CHECK(found == 0 && imp[0] == -1.0f);
    CHECK_OK(aq_calib_importance(c, "a.bias", sa, 2, imp, 12, &found, &err));
    CHECK(found == 0);
    /* Shapes that do not fit. */
    int64_t bad[2] = {3, 5};
    CHECK_FAILS(aq_calib_importance(c, "a.weight", bad, 2, imp, 15, &found, &err),
                AQ_SHAPE_MISMATCH, "Calibration layer 'a' has 4 input channels");
    CHECK_FAILS(aq_calib_importance(c, "a.weight", sa, 1, imp, 3, &found, &err), AQ_SHAPE_MISMATCH,
                "has 1 dimensions");
    CHECK_FAILS(aq_calib_importance(c, "a.weight", sa, 2, imp, 11, &found, &err),
                AQ_INVALID_ARGUMENT, "importance buffer holds 11 elements, the tensor 12");
    /* Against a model's names. */
    const char *model[] = {"unet/a.weight", "unet/a.bias", "unet/b.weight"};
    CHECK_OK(aq_calib_check_model(c, model, 3, &err));
    CHECK_FAILS(aq_calib_check_model(c, model, 2, &err), AQ_INVALID_ARGUMENT,
                "statistics for layer 'b', which the model does not have (no tensor "
                "'b.weight')");
    CHECK_FAILS(aq_calib_add_batch(c, NULL, NULL, &err), AQ_INVALID_ARGUMENT, "NULL");
    aq_calib_free(c);
}

TEST(combine_mean_and_grouped_conv)
{
    aq_error err;
    aq_calib *c = NULL;
    load(&c, AQ_CALIB_COMBINE_MEAN);
    CHECK(c != NULL);
    int64_t sa[2] = {1, 4};
    float imp[8];
    int found;
    CHECK_OK(aq_calib_importance(c, "a.weight", sa, 2, imp, 4, &found, &err));
    static const float want[4] = {2.25f, 0.5f, 0.75f, 0.5f};
    for (size_t i = 0; i < 4; i++) {
        CHECK_MSG(imp[i] == want[i], "a[%zu] = %g", i, (double)imp[i]);
    }
    /* A depthwise convolution over b's 2 channels: [2, 1, 2, 2], row o reads channel o. */
    int64_t sd[4] = {2, 1, 2, 2};
    CHECK_OK(aq_calib_importance(c, "b.weight", sd, 4, imp, 8, &found, &err));
    for (size_t i = 0; i < 8; i++) {
        CHECK(imp[i] == (i < 4 ? (float)AQ_CALIB_FLOOR : 2.0f));
    }
    aq_calib_free(c);
}

/* Adds rows and expects the add (or, when at_finish, the finish) to fail. */
static void expect_refused(const crow *rows, int64_t n, const char *declared, bool at_finish,
                           aq_status status, const char *needle)
{
    aq_error err;
    aq_calib *c;
    CHECK_OK(aq_calib_create(&c, &err));
    tb_node t = calib_batch(rows, n, false, declared);
    if (at_finish) {
        CHECK_OK(aq_calib_add_batch(c, t.s, t.a, &err));
        CHECK_FAILS(aq_calib_finish(c, AQ_CALIB_COMBINE_MAX, &err), status, needle);
    } else {
        CHECK_FAILS(aq_calib_add_batch(c, t.s, t.a, &err), status, needle);
        /* The object refuses to go on after a refused batch. */
        CHECK_FAILS(aq_calib_finish(c, AQ_CALIB_COMBINE_MAX, &err), AQ_INVALID_ARGUMENT,
                    "an earlier batch was refused");
    }
    tb_free(t);
    aq_calib_free(c);
}

TEST(bad_tables)
{
    const double nan1[] = {1, (double)NAN}, neg[] = {1, -1}, one[] = {1}, two[] = {1, 2};
    const crow r_nan[] = {{"x", 0, nan1, 2}};
    expect_refused(r_nan, 1, NULL, false, AQ_NON_FINITE,
                   "Calibration layer 'x', timestep group 0: mean_square at channel 1 is NaN "
                   "or Inf");
    const crow r_neg[] = {{"x", 3, neg, 2}};
    expect_refused(r_neg, 1, NULL, false, AQ_INVALID_ARGUMENT, "channel 1 is negative");
    const crow r_dup[] = {{"x", 0, two, 2}, {"x", 0, two, 2}};
    expect_refused(r_dup, 2, NULL, false, AQ_INVALID_ARGUMENT,
                   "Calibration layer 'x' has timestep group 0 twice");
    const crow r_ch[] = {{"x", 0, two, 2}, {"x", 1, one, 1}};
    expect_refused(r_ch, 2, NULL, false, AQ_SHAPE_MISMATCH,
                   "timestep group 1 has 1 channels, an earlier group 2");
    const crow r_neg_group[] = {{"x", -1, two, 2}};
    expect_refused(r_neg_group, 1, NULL, false, AQ_INVALID_ARGUMENT, "group -1 is negative");
    const crow r_out[] = {{"x", 4, two, 2}};
    expect_refused(r_out, 1, "4", false, AQ_INVALID_ARGUMENT,
                   "timestep group 4 is outside 0..3 (arrowquant.timestep_groups)");
    expect_refused(r_out, 1, "four", false, AQ_INVALID_ARGUMENT,
                   "arrowquant.timestep_groups must be a decimal number");
    const crow r_empty[] = {{"x", 0, two, 0}};
    expect_refused(r_empty, 1, NULL, false, AQ_INVALID_ARGUMENT, "mean_square is empty");
    /* Missing groups: a hole, and groups declared but absent. */
    const crow r_hole[] = {
        {"x", 0, two, 2}, {"x", 2, two, 2}, {"y", 0, two, 2}, {"y", 1, two, 2}, {"y", 2, two, 2}};
    expect_refused(r_hole, 5, NULL, true, AQ_INVALID_ARGUMENT,
                   "Layer 'x' has no statistics for timestep group 1 (the table has groups "
                   "0..2)");
    const crow r_decl[] = {{"x", 0, two, 2}, {"x", 1, two, 2}};
    expect_refused(r_decl, 2, "3", true, AQ_INVALID_ARGUMENT,
                   "Layer 'x' has no statistics for timestep group 2 (the table has groups "
                   "0..2)");
    expect_refused(r_decl, 0, NULL, true, AQ_INVALID_ARGUMENT, "Calibration table has no rows");
}

TEST(bad_columns)
{
    aq_error err;
    aq_calib *c;
    CHECK_OK(aq_calib_create(&c, &err));
    const char *names[] = {"x"};
    const double v[] = {1.0};
    int64_t len[] = {1};
    tb_node cols[2];
    cols[0] = tb_strings("u", "layer_name", names, NULL, 1);
    cols[1] = tb_list("+l", "mean_square", tb_prim("g", "item", v, 8, 1, NULL), len, 1, NULL);
    tb_node t = tb_struct("", cols, 2, 1);
    CHECK_FAILS(aq_calib_add_batch(c, t.s, t.a, &err), AQ_INVALID_ARGUMENT,
                "Calibration table: missing required column 'timestep_group'. Expected schema");
    tb_free(t);
    aq_calib_free(c);

    CHECK_OK(aq_calib_create(&c, &err));
    const float f = 1.0f;
    const char *null_name[] = {NULL};
    int64_t g = 0;
    tb_node cols3[3];
    cols3[0] = tb_strings("u", "layer_name", null_name, NULL, 1);
    cols3[1] = tb_prim("l", "timestep_group", &g, 8, 1, NULL);
    cols3[2] = tb_list("+l", "mean_square", tb_prim("f", "item", &f, 4, 1, NULL), len, 1, NULL);
    t = tb_struct("", cols3, 3, 1);
    CHECK_FAILS(aq_calib_add_batch(c, t.s, t.a, &err), AQ_INVALID_ARGUMENT,
                "row 0: layer_name is null");
    tb_free(t);
    aq_calib_free(c);

    CHECK_OK(aq_calib_create(&c, &err));
    const int32_t i32 = 1;
    cols3[0] = tb_strings("u", "layer_name", names, NULL, 1);
    cols3[1] = tb_prim("l", "timestep_group", &g, 8, 1, NULL);
    cols3[2] = tb_list("+l", "mean_square", tb_prim("i", "item", &i32, 4, 1, NULL), len, 1, NULL);
    t = tb_struct("", cols3, 3, 1);
    CHECK_FAILS(aq_calib_add_batch(c, t.s, t.a, &err), AQ_INVALID_ARGUMENT,
                "Column 'mean_square' must be list<float32>");
    tb_free(t);
    /* Importance before finish. */
    int found;
    int64_t s2[2] = {1, 1};
    float out;
    CHECK_FAILS(aq_calib_importance(c, "x.weight", s2, 2, &out, 1, &found, &err),
                AQ_INVALID_ARGUMENT, "not finished");
    aq_calib_free(c);
}

AQ_TEST_MAIN({"combine_max", combine_max},
             {"combine_mean_and_grouped_conv", combine_mean_and_grouped_conv},
             {"bad_tables", bad_tables}, {"bad_columns", bad_columns})
