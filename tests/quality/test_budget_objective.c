/* The default mode's budget objective (pipeline.c, docs/pipeline.md "The budget's objective"):
 * each option's relative error, the squared error (importance-weighted, the importance scaled
 * to a mean of 1) over the tensor's sum of squares, checked against sums computed here from
 * the dequantized tensor; the plain squared error stays as it was. */
#include "aq_test.h"
#include "pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BO_ROWS 12
#define BO_COLS 200
#define BO_N (BO_ROWS * BO_COLS)

/* Quantizes t with affine (bits, groups of 64) and dequantizes it into y. */
static void bo_roundtrip(aq_ctx *ctx, const aq_tensor *t, unsigned bits, float *y)
{
    aq_error err;
    aq_ctx c = aq__ctx_with(ctx, AQ_SCHEME_AFFINE, bits, 64);
    aq_layout l;
    CHECK_OK(aq_quantize_bound(&c, t, &l, &err));
    uint8_t *packed = malloc(l.packed_bytes);
    float *scales = malloc(l.groups * sizeof(float)), *zps = malloc(l.groups * sizeof(float));
    aq_qbuffers qb = {packed, l.packed_bytes, scales, zps, l.groups};
    CHECK_OK(aq_quantize_ex(&c, t, NULL, &qb, NULL, &err));
    aq_qtensor q = {t->name, AQ_SCHEME_AFFINE, bits,   64,  t->shape, t->ndim,
                    packed,  l.packed_bytes,   scales, zps, l.groups};
    CHECK_OK(aq_dequantize(&c, &q, AQ_DTYPE_F32, y, BO_N, &err));
    free(packed);
    free(scales);
    free(zps);
}

TEST(objective_is_the_weighted_relative_error)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq__pool *pool = NULL;
    CHECK_OK(aq__ctx_pool(ctx, &pool, &err)); /* before the copies of ctx share it */
    float *x = malloc(BO_N * sizeof(float)), *y = malloc(BO_N * sizeof(float));
    float *imp = malloc(BO_N * sizeof(float));
    uint64_t seed = 77;
    for (size_t i = 0; i < BO_N; i++) {
        x[i] = (float)(0.03 * aq_test_rand_normal(&seed));
        imp[i] = (float)(0.01 + 5.0 * aq_test_rand_uniform(&seed));
    }
    int64_t shape[2] = {BO_ROWS, BO_COLS};
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    aq__scratch sc;
    memset(&sc, 0, sizeof sc);
    for (unsigned bits = 2; bits <= 8; bits *= 2) {
        bo_roundtrip(ctx, &t, bits, y);
        double xx = 0.0, ee = 0.0, we = 0.0, ww = 0.0;
        for (size_t i = 0; i < BO_N; i++) {
            double e = (double)x[i] - (double)y[i];
            xx += (double)x[i] * (double)x[i];
            ee += e * e;
            we += (double)imp[i] * e * e;
            ww += (double)imp[i];
        }
        /* Plain affine ignores the importance: the same codes with and without it. */
        aq__budget_option plain, weighted;
        CHECK_OK(aq__option_measure(ctx, &t, NULL, AQ_SCHEME_AFFINE, bits, 64, 0.0, NULL, &sc,
                                    &plain, &err));
        CHECK_OK(aq__option_measure(ctx, &t, imp, AQ_SCHEME_AFFINE, bits, 64, 0.0, NULL, &sc,
                                    &weighted, &err));
        CHECK_MSG(fabs(plain.sse - ee) <= 1e-9 * ee, "bits %u: sse %g, expected %g", bits,
                  plain.sse, ee);
        CHECK(weighted.sse == plain.sse);
        double rel = ee / xx, wrel = we * ((double)BO_N / ww) / xx;
        CHECK_MSG(fabs(plain.relative - rel) <= 1e-9 * rel, "bits %u: relative %g, expected %g",
                  bits, plain.relative, rel);
        CHECK_MSG(fabs(weighted.relative - wrel) <= 1e-9 * wrel,
                  "bits %u: weighted relative %g, expected %g", bits, weighted.relative, wrel);
        /* The same tensor at another scale has the same relative error (a power of two keeps
         * every code). */
        for (size_t i = 0; i < BO_N; i++) {
            x[i] *= 64.0f;
        }
        aq__budget_option scaled;
        CHECK_OK(aq__option_measure(ctx, &t, imp, AQ_SCHEME_AFFINE, bits, 64, 0.0, NULL, &sc,
                                    &scaled, &err));
        CHECK_MSG(fabs(scaled.relative - weighted.relative) <= 1e-12 * wrel,
                  "bits %u: relative %g at 64x the scale, %g at 1x", bits, scaled.relative,
                  weighted.relative);
        CHECK(fabs(scaled.sse - 4096.0 * plain.sse) <= 1e-9 * scaled.sse);
        for (size_t i = 0; i < BO_N; i++) {
            x[i] /= 64.0f;
        }
    }
    /* An importance of one everywhere is the plain relative error. */
    for (size_t i = 0; i < BO_N; i++) {
        imp[i] = 1.0f;
    }
    aq__budget_option a, b;
    CHECK_OK(aq__option_measure(ctx, &t, NULL, AQ_SCHEME_KQUANT, 4, 0, 0.0, NULL, &sc, &a, &err));
    CHECK_OK(aq__option_measure(ctx, &t, imp, AQ_SCHEME_KQUANT, 4, 0, 0.0, NULL, &sc, &b, &err));
    CHECK_MSG(fabs(a.relative - b.relative) <= 1e-9 * a.relative, "kquant: %g against %g",
              a.relative, b.relative);
    aq__scratch_free(&sc);
    free(x);
    free(y);
    free(imp);
    aq_ctx_free(ctx);
}

TEST(tempered_importance_is_its_square_root)
{
    float v[5] = {0.0f, 0.01f, 1.0f, 4.0f, 1e6f};
    aq__importance_temper(v, 5);
    CHECK(v[0] == 0.0f && v[1] == sqrtf(0.01f) && v[2] == 1.0f && v[3] == 2.0f && v[4] == 1e3f);
}

AQ_TEST_MAIN(AQ_CASE(objective_is_the_weighted_relative_error),
             AQ_CASE(tempered_importance_is_its_square_root))
