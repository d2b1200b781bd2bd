/* Quantizing a list of tensors with a cosine floor (fallback to more bits) and a size budget
 * (mixed precision): what moves, what the budget buys, and the errors. */
#include "aq_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QS_N 3
#define QS_ROWS 16
#define QS_COLS 1024

typedef struct qs_fixture {
    float *data[QS_N];
    int64_t shape[2];
    aq_tensor t[QS_N];
} qs_fixture;

/* Three tensors of growing difficulty: Gaussian, Laplace-like, and Gaussian with outliers. */
static void qs_setup(qs_fixture *f)
{
    static const char *const names[QS_N] = {"gauss", "laplace", "outliers"};
    uint64_t seed = 4242;
    f->shape[0] = QS_ROWS;
    f->shape[1] = QS_COLS;
    for (int k = 0; k < QS_N; k++) {
        f->data[k] = malloc(QS_ROWS * QS_COLS * sizeof(float));
        for (size_t i = 0; i < QS_ROWS * QS_COLS; i++) {
            double v = aq_test_rand_normal(&seed);
            if (k == 1) {
                double u = aq_test_rand_uniform(&seed) - 0.5;
                v = -(u < 0 ? -1.0 : 1.0) * log(1.0 - 2.0 * fabs(u));
            } else if (k == 2 && aq_test_rand_uniform(&seed) < 0.01) {
                v = 20.0;
            }
            f->data[k][i] = (float)(0.02 * v);
        }
        aq_tensor t = {names[k], AQ_DTYPE_F32, f->data[k], f->shape, 2};
        f->t[k] = t;
    }
}

static void qs_teardown(qs_fixture *f)
{
    for (int k = 0; k < QS_N; k++) {
        free(f->data[k]);
    }
}

/* Dequantizes entry i of a set and returns its cosine against the original. */
static double qs_cosine(aq_ctx *ctx, const aq_qset *set, size_t i, const aq_tensor *orig)
{
    aq_error err;
    aq_qtensor q;
    aq_qset_choice c;
    if (aq_qset_get(set, i, &c, &q, &err) != AQ_OK) {
        return -2.0;
    }
    float *deq = malloc(QS_ROWS * QS_COLS * sizeof(float));
    double cosine = -2.0;
    aq_metrics m;
    aq_tensor d = {"d", AQ_DTYPE_F32, deq, orig->shape, orig->ndim};
    if (aq_dequantize(ctx, &q, AQ_DTYPE_F32, deq, QS_ROWS * QS_COLS, &err) == AQ_OK &&
        aq_metrics_compute(orig, &d, &m, &err) == AQ_OK) {
        cosine = m.cosine;
    }
    free(deq);
    return cosine;
}

TEST(floor_moves_tensors_up)
{
    aq_error err;
    qs_fixture f;
    qs_setup(&f);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, AQ_SCHEME_AFFINE_SEARCH, &err));

    /* Without a floor everything stays at 2 bits. */
    aq_qset *plain;
    CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, NULL, &plain, &err));
    CHECK(aq_qset_count(plain) == QS_N);
    aq_qset_choice c0[QS_N];
    for (size_t i = 0; i < QS_N; i++) {
        CHECK_OK(aq_qset_get(plain, i, &c0[i], NULL, &err));
        CHECK(c0[i].bit_width == 2 && !c0[i].moved && c0[i].meets_min_cosine);
    }

    /* A floor of 0.99: no 2-bit result reaches it, so every tensor moves to 4 bits (or 8),
     * its bytes really change, and what comes back meets the floor. */
    aq_qset_options o = {.size = sizeof(aq_qset_options), .min_cosine = 0.99};
    aq_qset *set;
    CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err));
    for (size_t i = 0; i < QS_N; i++) {
        aq_qset_choice c;
        aq_qtensor q;
        CHECK_OK(aq_qset_get(set, i, &c, &q, &err));
        CHECK_MSG(c0[i].metrics.cosine < 0.99, "%zu: 2-bit cosine %.4f", i, c0[i].metrics.cosine);
        CHECK(c.moved && c.initial_bit_width == 2 && c.bit_width >= 4);
        CHECK(c.meets_min_cosine && c.metrics.cosine >= 0.99);
        CHECK(q.bit_width == c.bit_width && q.scheme == AQ_SCHEME_AFFINE_SEARCH);
        CHECK(c.bytes > c0[i].bytes && q.packed_size == QS_ROWS * QS_COLS * c.bit_width / 8);
        double cosine = qs_cosine(ctx, set, i, &f.t[i]);
        CHECK_MSG(fabs(cosine - c.metrics.cosine) < 1e-12, "%zu: %.6f vs %.6f", i, cosine,
                  c.metrics.cosine);
    }
    /* A low floor moves nothing. */
    aq_qset *low;
    o.min_cosine = 0.5;
    CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, &o, &low, &err));
    for (size_t i = 0; i < QS_N; i++) {
        aq_qset_choice c;
        CHECK_OK(aq_qset_get(low, i, &c, NULL, &err));
        CHECK(!c.moved && c.bit_width == 2);
    }
    /* An impossible floor ends at 8 bits, flagged. */
    aq_qset *high;
    o.min_cosine = 1.0;
    CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, &o, &high, &err));
    aq_qset_choice c;
    CHECK_OK(aq_qset_get(high, 0, &c, NULL, &err));
    CHECK(c.bit_width == 8 && c.moved && !c.meets_min_cosine);
    CHECK_FAILS(aq_qset_get(high, QS_N, &c, NULL, &err), AQ_INVALID_ARGUMENT, "out of range");
    aq_qset_free(plain);
    aq_qset_free(set);
    aq_qset_free(low);
    aq_qset_free(high);
    aq_ctx_free(ctx);
    qs_teardown(&f);
}

static double qs_total_sse(const aq_qset *set)
{
    aq_error err;
    double sse = 0.0;
    for (size_t i = 0; i < aq_qset_count(set); i++) {
        aq_qset_choice c;
        if (aq_qset_get(set, i, &c, NULL, &err) != AQ_OK) {
            return (double)INFINITY;
        }
        sse += c.metrics.mse * (double)c.metrics.count;
    }
    return sse;
}

TEST(budget_allocates_by_error_per_byte)
{
    aq_error err;
    qs_fixture f;
    qs_setup(&f);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_scheme schemes[2] = {AQ_SCHEME_AFFINE_SEARCH, AQ_SCHEME_KQUANT};
    const size_t elements = QS_N * QS_ROWS * QS_COLS;
    double prev_sse = (double)INFINITY;
    static const double targets[] = {2.7, 3.5, 4.5, 6.0, 9.0};
    for (size_t k = 0; k < sizeof targets / sizeof targets[0]; k++) {
        aq_qset_options o = {.size = sizeof(aq_qset_options),
                             .target_bpw = targets[k],
                             .schemes = schemes,
                             .n_schemes = 2};
        aq_qset *set;
        CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err));
        size_t bytes, n;
        aq_qset_totals(set, &bytes, &n);
        CHECK(n == elements);
        CHECK_MSG((double)bytes * 8.0 <= targets[k] * (double)n, "target %.2f: %.4f bpw",
                  targets[k], (double)bytes * 8.0 / (double)n);
        double sse = qs_total_sse(set);
        CHECK_MSG(sse < prev_sse, "target %.2f: sse %.6g, smaller budget %.6g", targets[k], sse,
                  prev_sse);
        prev_sse = sse;
        if (targets[k] == 4.5) {
            /* At least as good as spending the budget evenly on the best 4-bit scheme. */
            aq_ctx *k4;
            CHECK_OK(aq_ctx_create(&k4, &err));
            CHECK_OK(aq_ctx_set_param(k4, AQ_PARAM_SCHEME, AQ_SCHEME_KQUANT, &err));
            aq_qset *even;
            CHECK_OK(aq_qset_quantize(k4, f.t, QS_N, NULL, &even, &err));
            CHECK_MSG(sse <= qs_total_sse(even), "budget %.6g, even kquant-4 %.6g", sse,
                      qs_total_sse(even));
            aq_qset_free(even);
            aq_ctx_free(k4);
        }
        if (targets[k] == 9.0) {
            for (size_t i = 0; i < QS_N; i++) {
                aq_qset_choice c;
                CHECK_OK(aq_qset_get(set, i, &c, NULL, &err));
                CHECK(c.bit_width == 8);
            }
        }
        aq_qset_free(set);
    }
    /* With a cosine floor, options below it are not used. */
    aq_qset_options o = {.size = sizeof(aq_qset_options),
                         .min_cosine = 0.995,
                         .target_bpw = 4.5,
                         .schemes = schemes,
                         .n_schemes = 2};
    aq_qset *set;
    CHECK_OK(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err));
    for (size_t i = 0; i < QS_N; i++) {
        aq_qset_choice c;
        CHECK_OK(aq_qset_get(set, i, &c, NULL, &err));
        CHECK(c.meets_min_cosine && c.bit_width >= 4);
    }
    aq_qset_free(set);
    /* Errors. */
    o.min_cosine = 0.0;
    o.target_bpw = 2.0;
    CHECK_FAILS(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err), AQ_INVALID_PARAMETER,
                "smallest allocation needs 2.5");
    o.target_bpw = -1.0;
    CHECK_FAILS(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err), AQ_INVALID_PARAMETER,
                "Invalid target_bpw");
    o.target_bpw = 4.0;
    o.min_cosine = 1.5;
    CHECK_FAILS(aq_qset_quantize(ctx, f.t, QS_N, &o, &set, &err), AQ_INVALID_PARAMETER,
                "Invalid min_cosine");
    aq_scheme bad = AQ_SCHEME_COUNT;
    aq_qset_options ob = {
        .size = sizeof(aq_qset_options), .target_bpw = 4.0, .schemes = &bad, .n_schemes = 1};
    CHECK_FAILS(aq_qset_quantize(ctx, f.t, QS_N, &ob, &set, &err), AQ_INVALID_PARAMETER,
                "Invalid scheme");
    f.data[1][5] = NAN;
    CHECK_FAILS(aq_qset_quantize(ctx, f.t, QS_N, NULL, &set, &err), AQ_NON_FINITE,
                "Layer 'laplace' contains NaN or Inf at index 5");
    aq_ctx_free(ctx);
    qs_teardown(&f);
}

AQ_TEST_MAIN(AQ_CASE(floor_moves_tensors_up), AQ_CASE(budget_allocates_by_error_per_byte))
