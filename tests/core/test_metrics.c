/* Quality metrics against values computed by hand, and the float16/bfloat16 conversions. */
#include "test_util.h"

#include <float.h>
#include <math.h>

static bool close_to(double a, double b)
{
    return fabs(a - b) <= 1e-12 * (fabs(b) + 1.0);
}

TEST(metrics_by_hand)
{
    aq_error err;
    float a[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float b[4] = {1.0f, 2.0f, 3.0f, 5.0f};
    int64_t n = 4;
    aq_tensor ta = {"a", AQ_DTYPE_F32, a, &n, 1};
    aq_tensor tb = {"b", AQ_DTYPE_F32, b, &n, 1};
    aq_metrics m;
    CHECK_OK(aq_metrics_compute(&ta, &tb, &m, &err));
    /* e = (0,0,0,-1): mse 1/4; std of a = sqrt(1.25); sum a^2 = 30. */
    CHECK(m.count == 4);
    CHECK(close_to(m.mse, 0.25));
    CHECK(close_to(m.rel_rmse, 0.5 / sqrt(1.25)));
    CHECK(close_to(m.sqnr_db, 10.0 * log10(30.0)));
    CHECK(close_to(m.cosine, 34.0 / (sqrt(30.0) * sqrt(39.0))));
    CHECK(close_to(m.max_abs_error, 1.0));
}

TEST(metrics_degenerate_cases)
{
    aq_error err;
    float z[3] = {0, 0, 0}, c[3] = {2, 2, 2}, d[3] = {2, 2, 3};
    int64_t n = 3;
    aq_tensor tz = {"z", AQ_DTYPE_F32, z, &n, 1};
    aq_tensor tc = {"c", AQ_DTYPE_F32, c, &n, 1};
    aq_tensor td = {"d", AQ_DTYPE_F32, d, &n, 1};
    aq_metrics m;
    CHECK_OK(aq_metrics_compute(&tz, &tz, &m, &err));
    CHECK(m.cosine == 1.0 && m.rel_rmse == 0.0 && isinf(m.sqnr_db) && m.sqnr_db > 0);
    CHECK_OK(aq_metrics_compute(&tz, &tc, &m, &err));
    CHECK(m.cosine == 0.0);
    CHECK_OK(aq_metrics_compute(&tc, &td, &m, &err));
    CHECK(isinf(m.rel_rmse)); /* constant reference, non-zero error */
}

TEST(metrics_mixed_dtypes_and_errors)
{
    aq_error err;
    double a[3] = {1.0, -2.0, 0.5};
    uint16_t h[3] = {0x3c00, 0xc000, 0x3800}; /* 1, -2, 0.5 in binary16 */
    int64_t n = 3, n4 = 4;
    aq_tensor ta = {"a", AQ_DTYPE_F64, a, &n, 1};
    aq_tensor th = {"h", AQ_DTYPE_F16, h, &n, 1};
    aq_metrics m;
    CHECK_OK(aq_metrics_compute(&ta, &th, &m, &err));
    CHECK(m.mse == 0.0 && m.cosine == 1.0);
    aq_tensor t4 = {"four", AQ_DTYPE_F64, a, &n4, 1};
    CHECK_FAILS(aq_metrics_compute(&t4, &th, &m, &err), AQ_SHAPE_MISMATCH,
                "4 reference elements but 3 approximation elements");
    a[1] = (double)NAN;
    CHECK_FAILS(aq_metrics_compute(&ta, &th, &m, &err), AQ_NON_FINITE,
                "Layer 'a' contains NaN or Inf at index 1");
    CHECK_FAILS(aq_metrics_compute(NULL, &th, &m, &err), AQ_INVALID_ARGUMENT, "reference");
    CHECK_FAILS(aq_metrics_compute(&th, &th, NULL, &err), AQ_INVALID_ARGUMENT, "NULL output");
}

/* Conversions against values worked out from the IEEE 754 encodings. */
TEST(half_conversions)
{
    CHECK(aq__f16_to_f32(0x3c00) == 1.0f);
    CHECK(aq__f16_to_f32(0x7bff) == 65504.0f);
    CHECK(aq__f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(aq__f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(aq__f16_to_f32(0x83ff) == -1023.0f * 0x1p-24f);
    CHECK(isinf(aq__f16_to_f32(0x7c00)) && isnan(aq__f16_to_f32(0x7e00)));
    CHECK(aq__f32_to_f16(1.0f) == 0x3c00);
    CHECK(aq__f32_to_f16(65504.0f) == 0x7bff);
    CHECK(aq__f32_to_f16(65519.0f) == 0x7bff); /* below the halfway point to 65536 */
    CHECK(aq__f32_to_f16(65520.0f) == 0x7c00); /* the halfway point rounds to even: Inf */
    CHECK(aq__f32_to_f16(-1e10f) == 0xfc00);
    CHECK(aq__f32_to_f16(0x1p-24f) == 0x0001);
    CHECK(aq__f32_to_f16(0x1p-25f) == 0x0000);   /* tie between 0 and 1 ulp: even */
    CHECK(aq__f32_to_f16(0x1.8p-24f) == 0x0002); /* tie between 1 and 2 ulps: even */
    CHECK(aq__f32_to_f16(1023.0f * 0x1p-24f + 0x1p-25f) == 0x0400); /* to the first normal */
    CHECK(aq__f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);               /* tie: even */
    CHECK(aq__f32_to_f16(1.0f + 0x1.8p-10f) == 0x3c02);
    CHECK(aq__f32_to_f16(-0.0f) == 0x8000);
    CHECK((aq__f32_to_f16(NAN) & 0x7e00) == 0x7e00);
    CHECK(aq__f32_to_bf16(1.0f) == 0x3f80);
    CHECK(aq__f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);   /* tie: even */
    CHECK(aq__f32_to_bf16(1.0f + 0x1.8p-7f) == 0x3f82); /* tie: even (up) */
    CHECK(aq__f32_to_bf16(FLT_MAX) == 0x7f80);          /* rounds up to Inf */
    CHECK(aq__bf16_to_f32(0xc2f7) == -123.5f);
    /* Every binary16 value survives a round trip through float32. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = aq__f16_to_f32((uint16_t)h);
        if (!isnan(f)) {
            CHECK_MSG(aq__f32_to_f16(f) == h, "f16 0x%04x does not round-trip", h);
        }
    }
}

AQ_TEST_MAIN(AQ_CASE(metrics_by_hand), AQ_CASE(metrics_degenerate_cases),
             AQ_CASE(metrics_mixed_dtypes_and_errors), AQ_CASE(half_conversions))
