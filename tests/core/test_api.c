/* The public API's contracts: version, statuses, parameters and their bounds, bad input. */
#include "test_util.h"

#include <float.h>
#include <math.h>

TEST(version_matches_header)
{
    CHECK(aq_version_number() == AQ_VERSION_NUMBER);
    CHECK(strcmp(aq_version_string(), AQ_VERSION_STRING) == 0);
}

TEST(status_names_and_messages)
{
    CHECK(strcmp(aq_status_name(AQ_OK), "AQ_OK") == 0);
    CHECK(strcmp(aq_status_name(AQ_NON_FINITE), "AQ_NON_FINITE") == 0);
    CHECK(strcmp(aq_status_name((aq_status)999), "AQ_UNKNOWN") == 0);
    CHECK(strcmp(aq_status_message(AQ_NO_MEMORY), "out of memory") == 0);
    for (int s = 0; s < AQ_STATUS_COUNT; s++) {
        CHECK(aq_status_name((aq_status)s)[0] == 'A');
        CHECK(strlen(aq_status_message((aq_status)s)) > 0);
    }
    aq_error err;
    err.code = AQ_IO;
    strcpy(err.message, "x");
    aq_error_clear(&err);
    CHECK(err.code == AQ_OK && err.message[0] == '\0');
    aq_error_clear(NULL);
}

TEST(parameter_bounds_and_defaults)
{
    aq_error err;
    int64_t lo, hi, v;
    CHECK_OK(aq_param_bounds(AQ_PARAM_BIT_WIDTH, &lo, &hi, &err));
    CHECK(lo == 2 && hi == 8);
    CHECK_OK(aq_param_bounds(AQ_PARAM_GROUP_SIZE, &lo, &hi, &err));
    CHECK(lo == 8 && hi == (int64_t)AQ_GROUP_SIZE_ROW);
    CHECK_OK(aq_param_bounds(AQ_PARAM_THREADS, &lo, &hi, &err));
    CHECK(lo == 0 && hi == AQ_MAX_THREADS);
    CHECK_FAILS(aq_param_bounds((aq_param)42, &lo, &hi, &err), AQ_INVALID_ARGUMENT,
                "unknown parameter 42");
    CHECK(strcmp(aq_param_name(AQ_PARAM_GROUP_SIZE), "group_size") == 0);

    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_BIT_WIDTH, &v, &err));
    CHECK(v == 4);
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_GROUP_SIZE, &v, &err));
    CHECK(v == 128);
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_SCHEME, &v, &err));
    CHECK(v == AQ_SCHEME_AFFINE);
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_THREADS, &v, &err));
    CHECK(v == 1);
    aq_ctx_free(ctx);
    aq_ctx_free(NULL);
}

TEST(invalid_parameters_are_refused)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 3, &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 3. Must be 2, 4, or 8");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 16, &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 16");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 0, &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: 0");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 7, &err), AQ_INVALID_PARAMETER,
                "Must be between 8 and 4294967295");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)1 << 40, &err),
                AQ_INVALID_PARAMETER, "Invalid group_size");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, -1, &err), AQ_INVALID_PARAMETER,
                "Invalid threads: -1");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, 9, &err), AQ_INVALID_PARAMETER,
                "Invalid scheme: 9");
    CHECK_FAILS(aq_ctx_set_param(ctx, (aq_param)77, 1, &err), AQ_INVALID_ARGUMENT,
                "unknown parameter 77");
    CHECK_FAILS(aq_ctx_set_param(NULL, AQ_PARAM_BIT_WIDTH, 4, &err), AQ_INVALID_ARGUMENT,
                "NULL context");
    /* A refused value leaves the context unchanged. */
    int64_t v;
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_BIT_WIDTH, &v, &err));
    CHECK(v == 4);
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, AQ_GROUP_SIZE_ROW, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 0, &err));
    aq_ctx_free(ctx);

    aq_scheme scheme;
    CHECK_OK(aq_scheme_from_name("affine", &scheme, &err));
    CHECK(scheme == AQ_SCHEME_AFFINE);
    CHECK(strcmp(aq_scheme_name(AQ_SCHEME_AFFINE), "affine") == 0);
    CHECK_FAILS(aq_scheme_from_name("magic", &scheme, &err), AQ_INVALID_PARAMETER,
                "Invalid scheme: 'magic'");
    /* Errors may be ignored by passing NULL. */
    CHECK(aq_scheme_from_name("magic", &scheme, NULL) == AQ_INVALID_PARAMETER);
}

TEST(forced_kernels_must_exist)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    setenv("AQ_KERNELS", "no-such-isa", 1);
    CHECK_FAILS(aq_ctx_create(&ctx, &err), AQ_UNSUPPORTED, "AQ_KERNELS=no-such-isa");
    CHECK(ctx == NULL);
    setenv("AQ_KERNELS", "ref", 1);
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_ctx_free(ctx);
    unsetenv("AQ_KERNELS");
}

TEST(layouts)
{
    aq_error err;
    aq_layout l;
    int64_t s1[1] = {1000};
    CHECK_OK(aq_layout_compute(s1, 1, 4, 128, &l, &err));
    CHECK(l.rows == 1 && l.cols == 1000 && l.groups == 8 && l.packed_bytes == 500);
    int64_t s3[3] = {10, 3, 7};
    CHECK_OK(aq_layout_compute(s3, 3, 2, 8, &l, &err));
    CHECK(l.rows == 10 && l.cols == 21 && l.groups_per_row == 3 && l.groups == 30);
    CHECK(l.packed_bytes == (210 * 2 + 7) / 8);
    CHECK_OK(aq_layout_compute(NULL, 0, 8, 8, &l, &err));
    CHECK(l.elements == 1 && l.rows == 1 && l.packed_bytes == 1);
    CHECK_OK(aq_layout_compute(s3, 3, 4, AQ_GROUP_SIZE_ROW, &l, &err));
    CHECK(l.groups == 10);

    int64_t neg[2] = {4, -1};
    CHECK_FAILS(aq_layout_compute(neg, 2, 4, 8, &l, &err), AQ_INVALID_ARGUMENT,
                "dimension 1 is negative (-1)");
    int64_t zero[2] = {4, 0};
    CHECK_FAILS(aq_layout_compute(zero, 2, 4, 8, &l, &err), AQ_INVALID_ARGUMENT, "has no elements");
    int64_t huge[3] = {INT64_MAX, INT64_MAX, 2};
    CHECK_FAILS(aq_layout_compute(huge, 3, 4, 8, &l, &err), AQ_OVERFLOW, "overflows");
    int64_t big[2] = {(int64_t)1 << 62, 4};
    CHECK_FAILS(aq_layout_compute(big, 2, 8, 8, &l, &err), AQ_OVERFLOW, "overflows");
    CHECK_FAILS(aq_layout_compute(s1, 1, 3, 8, &l, &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 3");
    CHECK_FAILS(aq_layout_compute(s1, 1, 4, 0, &l, &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: 0");
    int64_t many[AQ_MAX_NDIM + 1];
    for (int i = 0; i <= AQ_MAX_NDIM; i++) {
        many[i] = 1;
    }
    CHECK_FAILS(aq_layout_compute(many, AQ_MAX_NDIM + 1, 4, 8, &l, &err), AQ_INVALID_ARGUMENT,
                "at most 16 are supported");
    CHECK_FAILS(aq_layout_compute(NULL, 2, 4, 8, &l, &err), AQ_INVALID_ARGUMENT, "shape is NULL");
    CHECK_FAILS(aq_layout_compute(s1, 1, 4, 8, NULL, &err), AQ_INVALID_ARGUMENT, "NULL output");
}

TEST(quantize_bad_input)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    float x[16] = {0};
    uint8_t packed[8];
    float scales[1], zps[1];
    int64_t n = 16;
    aq_qbuffers out = {packed, sizeof packed, scales, zps, 1};
    aq_tensor t = {"layer.w", AQ_DTYPE_F32, x, &n, 1};
    CHECK_OK(aq_quantize(ctx, &t, &out, &err));

    CHECK_FAILS(aq_quantize(NULL, &t, &out, &err), AQ_INVALID_ARGUMENT, "NULL argument");
    CHECK_FAILS(aq_quantize(ctx, NULL, &out, &err), AQ_INVALID_ARGUMENT, "tensor is NULL");
    CHECK_FAILS(aq_quantize(ctx, &t, NULL, &err), AQ_INVALID_ARGUMENT, "NULL argument");
    aq_tensor nodata = t;
    nodata.data = NULL;
    CHECK_FAILS(aq_quantize(ctx, &nodata, &out, &err), AQ_INVALID_ARGUMENT,
                "Layer 'layer.w': data is NULL");
    aq_tensor badtype = t;
    badtype.dtype = (aq_dtype)9;
    CHECK_FAILS(aq_quantize(ctx, &badtype, &out, &err), AQ_UNSUPPORTED, "unknown dtype 9");
    int64_t zero = 0;
    aq_tensor empty = {"empty", AQ_DTYPE_F32, x, &zero, 1};
    CHECK_FAILS(aq_quantize(ctx, &empty, &out, &err), AQ_INVALID_ARGUMENT,
                "Layer 'empty' has no elements");
    int64_t over[2] = {INT64_MAX, 3};
    aq_tensor overflow = {"huge", AQ_DTYPE_F32, x, over, 2};
    CHECK_FAILS(aq_quantize(ctx, &overflow, &out, &err), AQ_OVERFLOW, "Layer 'huge'");
    aq_qbuffers small = {packed, 7, scales, zps, 1};
    CHECK_FAILS(aq_quantize(ctx, &t, &small, &err), AQ_BUFFER_TOO_SMALL,
                "needs 8 packed bytes and 1 groups, got 7 and 1");
    aq_qbuffers nullout = {NULL, 8, scales, zps, 1};
    CHECK_FAILS(aq_quantize(ctx, &t, &nullout, &err), AQ_INVALID_ARGUMENT,
                "an output buffer is NULL");
    aq_ctx_free(ctx);
}

/* A NaN or Inf anywhere is reported with the layer name and the index of the first one. */
TEST(nonfinite_at_every_index)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    enum { N = 300 };
    float x[N];
    uint16_t h[N];
    double d[N];
    uint8_t packed[N];
    float scales[N], zps[N];
    aq_qbuffers out = {packed, sizeof packed, scales, zps, N};
    int64_t shape[2] = {3, 100};
    char expected[96];
    static const float bad_f32[3] = {NAN, INFINITY, -INFINITY};
    for (size_t at = 0; at < N; at++) {
        for (int b = 0; b < 3; b++) {
            for (int i = 0; i < N; i++) {
                x[i] = (float)i * 0.01f;
                h[i] = 0x3c00; /* 1.0 */
                d[i] = (double)i;
            }
            x[at] = bad_f32[b];
            h[at] = b == 0 ? 0x7e00 : b == 1 ? 0x7c00 : 0xfc00;
            d[at] = b == 0 ? (double)NAN : b == 1 ? 1e300 : -(double)INFINITY;
            /* a second bad value later must not hide the first */
            if (at + 7 < N) {
                x[at + 7] = NAN;
            }
            snprintf(expected, sizeof expected, "Layer 'w' contains NaN or Inf at index %zu", at);
            aq_tensor tf = {"w", AQ_DTYPE_F32, x, shape, 2};
            aq_tensor th = {"w", AQ_DTYPE_F16, h, shape, 2};
            aq_tensor td = {"w", AQ_DTYPE_F64, d, shape, 2};
            CHECK_FAILS(aq_quantize(ctx, &tf, &out, &err), AQ_NON_FINITE, expected);
            CHECK_FAILS(aq_quantize(ctx, &th, &out, &err), AQ_NON_FINITE, expected);
            CHECK_FAILS(aq_quantize(ctx, &td, &out, &err), AQ_NON_FINITE, expected);
            size_t first = 0;
            CHECK_FAILS(aq_tensor_check_finite(&tf, &first, &err), AQ_NON_FINITE, expected);
            CHECK(first == at);
        }
    }
    aq_ctx_free(ctx);
}

TEST(nonfinite_in_a_large_tensor)
{
    /* Past the first span, so the index is reported relative to the whole tensor. */
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    size_t n = 300000;
    float *x = calloc(n, sizeof(float));
    uint8_t *packed = malloc(n);
    float *scales = malloc(n / 8 * sizeof(float)), *zps = malloc(n / 8 * sizeof(float));
    CHECK(x && packed && scales && zps);
    x[250001] = INFINITY;
    int64_t shape = (int64_t)n;
    aq_tensor t = {"big", AQ_DTYPE_F32, x, &shape, 1};
    aq_qbuffers out = {packed, n, scales, zps, n / 8};
    CHECK_FAILS(aq_quantize(ctx, &t, &out, &err), AQ_NON_FINITE,
                "Layer 'big' contains NaN or Inf at index 250001");
    aq_ctx_free(ctx);
    free(x);
    free(packed);
    free(scales);
    free(zps);
}

TEST(dequantize_validates_its_input)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    int64_t shape[2] = {2, 16};
    uint8_t packed[16] = {0};
    float scales[2] = {1.0f, 1.0f}, zps[2] = {0.0f, 0.0f};
    float out[32];
    aq_qtensor q = {"q", AQ_SCHEME_AFFINE, 4, 128, shape, 2, packed, 16, scales, zps, 2};
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F32, out, 32, &err));

    aq_qtensor bad = q;
    bad.packed_size = 15;
    CHECK_FAILS(aq_dequantize(ctx, &bad, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_DATA,
                "Layer 'q': 15 packed bytes, expected 16");
    bad = q;
    bad.groups = 3;
    CHECK_FAILS(aq_dequantize(ctx, &bad, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_DATA,
                "3 scales and zero points, expected 2");
    bad = q;
    bad.bit_width = 3;
    CHECK_FAILS(aq_dequantize(ctx, &bad, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 3");
    bad = q;
    bad.group_size = 0;
    CHECK_FAILS(aq_dequantize(ctx, &bad, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: 0");
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, out, 31, &err), AQ_BUFFER_TOO_SMALL,
                "output holds 31 elements, needs 32");
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F64, out, 32, &err), AQ_UNSUPPORTED,
                "must be f32, f16 or bf16");
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, NULL, 32, &err), AQ_INVALID_ARGUMENT,
                "a buffer is NULL");
    scales[1] = INFINITY;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_DATA,
                "group 1 is not finite");
    scales[1] = 1.0f;
    zps[0] = NAN;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_DATA,
                "group 0 is not finite");
    bad = q;
    bad.scheme = (aq_scheme)5;
    CHECK_FAILS(aq_dequantize(ctx, &bad, AQ_DTYPE_F32, out, 32, &err), AQ_UNSUPPORTED,
                "unknown scheme 5");
    CHECK_FAILS(aq_dequantize(NULL, &q, AQ_DTYPE_F32, out, 32, &err), AQ_INVALID_ARGUMENT,
                "NULL argument");
    aq_ctx_free(ctx);
}

/* Options structs carry their size: a struct zeroed without AQ_SIZED_INIT is refused, naming
 * it; a newer caller's longer struct is accepted while the fields this library does not know
 * are zero, and refused once one is set. */
TEST(options_carry_their_size)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    float x[16] = {0.5f, -1.0f, 2.0f};
    uint8_t packed[8];
    float scales[1], zps[1];
    int64_t n = 16;
    aq_qbuffers out = {packed, sizeof packed, scales, zps, 1};
    aq_tensor t = {"layer.w", AQ_DTYPE_F32, x, &n, 1};
    aq_quantize_options zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    CHECK_FAILS(aq_quantize_ex(ctx, &t, &zeroed, &out, NULL, &err), AQ_INVALID_ARGUMENT,
                "aq_quantize_options.size is 0");
    CHECK(strstr(err.message, "AQ_SIZED_INIT(aq_quantize_options)") != NULL);
    aq_quantize_options o = AQ_SIZED_INIT(aq_quantize_options);
    CHECK(o.size == sizeof o && o.importance == NULL);
    CHECK_OK(aq_quantize_ex(ctx, &t, &o, &out, NULL, &err));
    struct {
        aq_quantize_options known;
        uint64_t later_field;
    } newer;
    memset(&newer, 0, sizeof newer);
    newer.known.size = sizeof newer;
    CHECK_OK(aq_quantize_ex(ctx, &t, &newer.known, &out, NULL, &err));
    newer.later_field = 1;
    CHECK_FAILS(aq_quantize_ex(ctx, &t, &newer.known, &out, NULL, &err), AQ_UNSUPPORTED,
                "does not know");
    /* The same for a struct with many fields, read by another layer. */
    aq_model_compare_options co;
    memset(&co, 0, sizeof co);
    CHECK_FAILS(aq_model_compare("a.safetensors", "b.safetensors", &co, NULL, &err),
                AQ_INVALID_ARGUMENT, "aq_model_compare_options.size is 0");
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(AQ_CASE(version_matches_header), AQ_CASE(status_names_and_messages),
             AQ_CASE(parameter_bounds_and_defaults), AQ_CASE(invalid_parameters_are_refused),
             AQ_CASE(forced_kernels_must_exist), AQ_CASE(layouts), AQ_CASE(quantize_bad_input),
             AQ_CASE(nonfinite_at_every_index), AQ_CASE(nonfinite_in_a_large_tensor),
             AQ_CASE(dequantize_validates_its_input), AQ_CASE(options_carry_their_size))
