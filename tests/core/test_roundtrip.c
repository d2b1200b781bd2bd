/* Round trips through the reference path: error bounds, constant groups, tails, adversarial
 * values and the quality targets of the core engine. */
#include "test_util.h"

#include <float.h>
#include <math.h>

static const size_t group_sizes[] = {8, 32, 64, 128, 256, AQ_GROUP_SIZE_ROW};
static const unsigned bit_widths[] = {2, 4, 8};

/* Checks every element of a round trip: |x - x_hat| <= scale/2 plus float32 rounding, exact
 * reconstruction of constant groups, zero padding after the last code. */
static void check_roundtrip(const float *x, const tu_result *r, const char *what)
{
    const aq_layout *l = &r->layout;
    for (size_t k = 0; k < l->elements; k++) {
        size_t row = k / l->cols, col = k % l->cols;
        size_t g = row * l->groups_per_row + col / l->group_size;
        double scale = (double)r->scales[g], zp = (double)r->zero_points[g];
        double err = fabs((double)x[k] - (double)r->restored[k]);
        /* Float32 rounding of t = x - lo, u = t * inv, (q - zp) and (q - zp) * scale: a few
         * ulps of the magnitudes involved. */
        double qmax = (double)((1u << l->bit_width) - 1u);
        double tol = (fabs((double)x[k]) + scale * (qmax + fabs(zp))) * 0x1p-21 + 0x1p-149;
        CHECK_MSG(err <= scale / 2 + tol,
                  "%s: element %zu: x=%.9g restored=%.9g scale=%.9g zp=%.9g err=%.3g", what, k,
                  (double)x[k], (double)r->restored[k], scale, zp, err);
    }
    /* Constant groups round-trip exactly. */
    for (size_t g = 0; g < l->groups; g++) {
        size_t row = g / l->groups_per_row, j = g % l->groups_per_row;
        size_t begin = row * l->cols + j * l->group_size;
        size_t len = l->cols - j * l->group_size;
        if (len > l->group_size) {
            len = l->group_size;
        }
        bool constant = true;
        for (size_t i = 1; i < len; i++) {
            constant = constant && x[begin + i] == x[begin];
        }
        if (constant) {
            for (size_t i = 0; i < len; i++) {
                CHECK_MSG(r->restored[begin + i] == x[begin + i],
                          "%s: constant group %zu not exact at %zu", what, g, begin + i);
            }
        }
    }
    size_t used_bits = l->elements * l->bit_width;
    if (used_bits % 8 != 0) {
        unsigned pad = (unsigned)r->packed[l->packed_bytes - 1] >> (used_bits % 8);
        CHECK_MSG(pad == 0, "%s: padding bits not zero", what);
    }
}

static void roundtrip_f32(const float *x, const int64_t *shape, size_t ndim, unsigned bits,
                          size_t g, const char *what)
{
    aq_error err;
    aq_ctx *ctx = tu_ctx(bits, g);
    CHECK(ctx != NULL);
    aq_tensor t = {what, AQ_DTYPE_F32, x, shape, ndim};
    tu_result r;
    aq_status st = tu_roundtrip(ctx, &t, &r, &err);
    aq_ctx_free(ctx);
    CHECK_MSG(st == AQ_OK, "%s: %s", what, err.message);
    check_roundtrip(x, &r, what);
    tu_result_free(&r);
}

TEST(every_bit_width_group_size_and_length)
{
    uint64_t seed = 1;
    float *x = malloc(1025 * sizeof(float));
    CHECK(x != NULL);
    for (size_t i = 0; i < 1025; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    char what[96];
    for (size_t b = 0; b < 3; b++) {
        for (size_t gi = 0; gi < 6; gi++) {
            for (int64_t n = 1; n <= 1025; n++) {
                snprintf(what, sizeof what, "bits=%u g=%zu n=%lld", bit_widths[b], group_sizes[gi],
                         (long long)n);
                roundtrip_f32(x, &n, 1, bit_widths[b], group_sizes[gi], what);
            }
        }
    }
    free(x);
}

TEST(matrices_with_short_tail_groups)
{
    /* Rows whose length is not a multiple of the group size: groups restart at every row, and
     * odd row lengths put row starts in the middle of a packed byte. */
    static const int64_t shapes[][3] = {{3, 100, 0},  {7, 13, 0}, {5, 3, 7},  {1, 1, 0},
                                        {33, 257, 0}, {2, 8, 0},  {9, 129, 0}};
    static const size_t ndims[] = {2, 2, 3, 2, 2, 2, 2};
    uint64_t seed = 2;
    float *x = malloc(33 * 257 * sizeof(float));
    CHECK(x != NULL);
    for (size_t i = 0; i < 33 * 257; i++) {
        x[i] = (float)(aq_test_rand_normal(&seed) * 0.02);
    }
    char what[96];
    for (size_t s = 0; s < sizeof ndims / sizeof ndims[0]; s++) {
        for (size_t b = 0; b < 3; b++) {
            for (size_t gi = 0; gi < 6; gi++) {
                snprintf(what, sizeof what, "shape#%zu bits=%u g=%zu", s, bit_widths[b],
                         group_sizes[gi]);
                roundtrip_f32(x, shapes[s], ndims[s], bit_widths[b], group_sizes[gi], what);
            }
        }
    }
    free(x);
}

TEST(groups_restart_at_rows)
{
    /* A [3, 10] tensor with group size 8 has groups of 8 and 2 elements in each row. */
    aq_error err;
    float x[30];
    for (int i = 0; i < 30; i++) {
        x[i] = (float)(i % 10) + (float)(i / 10) * 100.0f;
    }
    int64_t shape[2] = {3, 10};
    aq_ctx *ctx = tu_ctx(4, 8);
    CHECK(ctx != NULL);
    aq_tensor t = {"rows", AQ_DTYPE_F32, x, shape, 2};
    tu_result r;
    CHECK_OK(tu_roundtrip(ctx, &t, &r, &err));
    aq_ctx_free(ctx);
    CHECK(r.layout.groups == 6 && r.layout.groups_per_row == 2);
    CHECK(r.layout.packed_bytes == 15);
    /* Row 1, second group is {108, 109}: scale (float)(1/15), zero point -108 / scale. */
    CHECK(r.scales[3] == (float)(1.0 / 15.0));
    CHECK(r.zero_points[3] == (float)(-108.0 / (double)r.scales[3]));
    CHECK(tu_code(r.packed, 18, 4) == 0 && tu_code(r.packed, 19, 4) == 15);
    check_roundtrip(x, &r, "rows");
    tu_result_free(&r);
}

TEST(constant_groups_are_exact)
{
    static const float values[] = {0.0f,     -0.0f,   1.0f,      -3.5f,      FLT_MAX,
                                   -FLT_MAX, FLT_MIN, 0x1p-149f, -0x1p-140f, 12345.678f};
    for (size_t b = 0; b < 3; b++) {
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            float x[40];
            for (int i = 0; i < 40; i++) {
                x[i] = values[v];
            }
            int64_t n = 40;
            roundtrip_f32(x, &n, 1, bit_widths[b], 8, "constant");
            roundtrip_f32(x, &n, 1, bit_widths[b], AQ_GROUP_SIZE_ROW, "constant row");
        }
    }
}

TEST(adversarial_values)
{
    enum { N = 512 };
    float x[N];
    uint64_t seed = 3;
    char what[64];
    for (int kind = 0; kind < 6; kind++) {
        for (int i = 0; i < N; i++) {
            double z = aq_test_rand_normal(&seed);
            switch (kind) {
            case 0: /* the extremes of float32 in one group */
                x[i] = (i % 3 == 0) ? FLT_MAX : (i % 3 == 1) ? -FLT_MAX : (float)z;
                break;
            case 1: /* subnormals only */
                x[i] = (float)(z * 0x1p-140);
                break;
            case 2: /* subnormals mixed with normals */
                x[i] = (i % 2) ? (float)(z * 0x1p-145) : (float)z;
                break;
            case 3: /* exact .5 ties: 0..15 in steps of 0.5 give codes at ties for g=8 */
                x[i] = (float)(i % 31) * 0.5f;
                break;
            case 4: /* one large outlier per group of 8 */
                x[i] = (i % 8 == 5) ? (float)(z * 1e4) : (float)(z * 1e-3);
                break;
            default: /* huge but finite range, both signs */
                x[i] = (float)(z * 1e37);
                break;
            }
        }
        int64_t n = N;
        for (size_t b = 0; b < 3; b++) {
            for (size_t gi = 0; gi < 6; gi++) {
                snprintf(what, sizeof what, "kind=%d bits=%u g=%zu", kind, bit_widths[b],
                         group_sizes[gi]);
                roundtrip_f32(x, &n, 1, bit_widths[b], group_sizes[gi], what);
            }
        }
    }
}

TEST(ties_round_to_even)
{
    /* Group {0, 15} at 4 bits: scale 1, so x = 0.5, 1.5, 2.5 sit exactly on ties and must
     * round to 0, 2, 2. */
    aq_error err;
    float x[8] = {0.0f, 15.0f, 0.5f, 1.5f, 2.5f, 3.5f, 14.5f, 7.0f};
    int64_t n = 8;
    aq_ctx *ctx = tu_ctx(4, 8);
    CHECK(ctx != NULL);
    aq_tensor t = {"ties", AQ_DTYPE_F32, x, &n, 1};
    tu_result r;
    CHECK_OK(tu_roundtrip(ctx, &t, &r, &err));
    aq_ctx_free(ctx);
    static const unsigned expected[8] = {0, 15, 0, 2, 2, 4, 14, 7};
    for (size_t i = 0; i < 8; i++) {
        CHECK_MSG(tu_code(r.packed, i, 4) == expected[i], "code %zu is %u, expected %u", i,
                  tu_code(r.packed, i, 4), expected[i]);
    }
    CHECK(r.scales[0] == 1.0f && r.zero_points[0] == 0.0f);
    tu_result_free(&r);
}

/* Quantizes the same values given as each input dtype; outputs must equal those of the
 * float32 values the dtype converts to (docs/format.md section 2). */
TEST(input_dtypes_match_their_float32_values)
{
    enum { N = 300 };
    uint64_t seed = 4;
    float f32[N];
    uint16_t f16[N], bf16[N];
    double f64[N];
    float from16[N], frombf[N], from64[N];
    for (int i = 0; i < N; i++) {
        double z = aq_test_rand_normal(&seed);
        f64[i] = z;
        f32[i] = (float)z;
        f16[i] = aq__f32_to_f16((float)z);
        bf16[i] = (uint16_t)(aq__f32_bits((float)z) >> 16);
        from16[i] = aq__f16_to_f32(f16[i]);
        frombf[i] = aq__bf16_to_f32(bf16[i]);
        from64[i] = (float)f64[i];
    }
    (void)f32;
    const void *inputs[3] = {f16, bf16, f64};
    const float *as_f32[3] = {from16, frombf, from64};
    const aq_dtype dtypes[3] = {AQ_DTYPE_F16, AQ_DTYPE_BF16, AQ_DTYPE_F64};
    int64_t shape[2] = {3, 100};
    for (int d = 0; d < 3; d++) {
        aq_error err;
        aq_ctx *ctx = tu_ctx(4, 32);
        CHECK(ctx != NULL);
        aq_tensor a = {"typed", dtypes[d], inputs[d], shape, 2};
        aq_tensor b = {"as_f32", AQ_DTYPE_F32, as_f32[d], shape, 2};
        tu_result ra, rb;
        CHECK_OK(tu_roundtrip(ctx, &a, &ra, &err));
        CHECK_OK(tu_roundtrip(ctx, &b, &rb, &err));
        aq_ctx_free(ctx);
        CHECK(memcmp(ra.packed, rb.packed, ra.layout.packed_bytes) == 0);
        CHECK(memcmp(ra.scales, rb.scales, ra.layout.groups * sizeof(float)) == 0);
        CHECK(memcmp(ra.zero_points, rb.zero_points, ra.layout.groups * sizeof(float)) == 0);
        check_roundtrip(as_f32[d], &ra, aq_dtype_name(dtypes[d]));
        tu_result_free(&ra);
        tu_result_free(&rb);
    }
}

TEST(dequantize_to_f16_and_bf16)
{
    enum { N = 1000 };
    uint64_t seed = 5;
    float x[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    int64_t n = N;
    aq_error err;
    aq_ctx *ctx = tu_ctx(8, 64);
    CHECK(ctx != NULL);
    aq_tensor t = {"half", AQ_DTYPE_F32, x, &n, 1};
    tu_result r;
    CHECK_OK(tu_roundtrip(ctx, &t, &r, &err));
    aq_qtensor q = {
        "half",        AQ_SCHEME_AFFINE, 8, 64, &n, 1, r.packed, r.layout.packed_bytes, r.scales,
        r.zero_points, r.layout.groups};
    uint16_t h[N], b[N];
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F16, h, N, &err));
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_BF16, b, N, &err));
    aq_ctx_free(ctx);
    for (int i = 0; i < N; i++) {
        CHECK(h[i] == aq__f32_to_f16(r.restored[i]));
        CHECK(b[i] == aq__f32_to_bf16(r.restored[i]));
    }
    tu_result_free(&r);
}

/* The quality targets of the core engine on 1,048,576 N(0,1) values, group size 128. */
TEST(cosine_targets_on_gaussian)
{
    enum { N = 1 << 20 };
    static const double targets[3] = {0.88, 0.99, 0.9999};
    float *x = malloc(N * sizeof(float));
    CHECK(x != NULL);
    uint64_t seed = 6;
    for (size_t i = 0; i < N; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    int64_t shape[2] = {1024, 1024};
    for (size_t b = 0; b < 3; b++) {
        aq_error err;
        aq_ctx *ctx = tu_ctx(bit_widths[b], 128);
        CHECK(ctx != NULL);
        aq_tensor t = {"gaussian", AQ_DTYPE_F32, x, shape, 2};
        tu_result r;
        CHECK_OK(tu_roundtrip(ctx, &t, &r, &err));
        aq_ctx_free(ctx);
        aq_tensor back = {"restored", AQ_DTYPE_F32, r.restored, shape, 2};
        aq_metrics m;
        CHECK_OK(aq_metrics_compute(&t, &back, &m, &err));
        printf("bits=%u cosine=%.6f sqnr=%.2f dB rel_rmse=%.4f\n", bit_widths[b], m.cosine,
               m.sqnr_db, m.rel_rmse);
        CHECK_MSG(m.cosine >= targets[b], "bits=%u: cosine %.6f below %.4f", bit_widths[b],
                  m.cosine, targets[b]);
        tu_result_free(&r);
    }
    free(x);
}

AQ_TEST_MAIN(AQ_CASE(every_bit_width_group_size_and_length),
             AQ_CASE(matrices_with_short_tail_groups), AQ_CASE(groups_restart_at_rows),
             AQ_CASE(constant_groups_are_exact), AQ_CASE(adversarial_values),
             AQ_CASE(ties_round_to_even), AQ_CASE(input_dtypes_match_their_float32_values),
             AQ_CASE(dequantize_to_f16_and_bf16), AQ_CASE(cosine_targets_on_gaussian))
