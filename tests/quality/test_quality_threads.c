/* aq_quantize_ex (affine_search, kquant, the moment correction) on the context's thread pool:
 * the same bytes for any thread count, with and without importance weights, and the same
 * first refused value (NaN/Inf, or a kquant value beyond 2^125) whatever the threads; kquant's
 * dequantize, the same bytes for any thread count. */
#include "aq_common.h"
#include "aq_test.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct qt_out {
    aq_layout l;
    uint8_t *packed;
    float *scales, *zps;
} qt_out;

static void qt_free(qt_out *o)
{
    free(o->packed);
    free(o->scales);
    free(o->zps);
    memset(o, 0, sizeof *o);
}

static aq_status qt_run(const aq_tensor *t, aq_scheme scheme, unsigned bits, size_t g,
                        unsigned threads, int moments, const float *importance, qt_out *o,
                        aq_error *err)
{
    memset(o, 0, sizeof *o);
    aq_ctx *ctx = NULL;
    aq_status st;
    if ((st = aq_ctx_create(&ctx, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)g, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, moments, err)) != AQ_OK ||
        (st = aq_quantize_bound(ctx, t, &o->l, err)) != AQ_OK) {
        goto done;
    }
    o->packed = malloc(o->l.packed_bytes);
    o->scales = malloc(o->l.groups * sizeof(float));
    o->zps = malloc(o->l.groups * sizeof(float));
    if (o->packed == NULL || o->scales == NULL || o->zps == NULL) {
        st = AQ_NO_MEMORY;
        goto done;
    }
    aq_qbuffers b = {o->packed, o->l.packed_bytes, o->scales, o->zps, o->l.groups};
    aq_quantize_options opt = {.size = sizeof(aq_quantize_options), .importance = importance};
    st = aq_quantize_ex(ctx, t, &opt, &b, NULL, err);
done:
    aq_ctx_free(ctx);
    return st;
}

static bool qt_same(const qt_out *a, const qt_out *b)
{
    return a->l.packed_bytes == b->l.packed_bytes && a->l.groups == b->l.groups &&
           memcmp(a->packed, b->packed, a->l.packed_bytes) == 0 &&
           memcmp(a->scales, b->scales, a->l.groups * sizeof(float)) == 0 &&
           memcmp(a->zps, b->zps, a->l.groups * sizeof(float)) == 0;
}

TEST(quality_schemes_same_bytes_for_any_thread_count)
{
    /* 301 rows of 1111: several spans per tensor, rows not a multiple of the groups. */
    int64_t shape[2] = {301, 1111};
    const size_t n = 301 * 1111;
    float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
    CHECK(x != NULL && w != NULL);
    uint64_t seed = 17;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed) * (i % 1111 == 5 ? 40.0f : 1.0f);
        w[i] = (float)(i % 7) * 0.25f;
    }
    static const struct {
        aq_scheme scheme;
        unsigned bits;
        size_t g;
        int moments;
        bool importance;
    } cases[] = {
        {AQ_SCHEME_AFFINE_SEARCH, 4, 64, 0, false}, {AQ_SCHEME_AFFINE_SEARCH, 2, 100, 0, true},
        {AQ_SCHEME_KQUANT, 4, 512, 0, false},       {AQ_SCHEME_KQUANT, 2, 512, 0, true},
        {AQ_SCHEME_KQUANT, 8, 512, 0, false},       {AQ_SCHEME_AFFINE, 4, 128, 1, false},
        {AQ_SCHEME_AFFINE_SEARCH, 8, 9, 1, false}};
    static const unsigned threads[] = {2, 3, 8};
    aq_error err;
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const float *imp = cases[c].importance ? w : NULL;
        qt_out one, many;
        CHECK_OK(qt_run(&t, cases[c].scheme, cases[c].bits, cases[c].g, 1, cases[c].moments, imp,
                        &one, &err));
        for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
            aq_status st = qt_run(&t, cases[c].scheme, cases[c].bits, cases[c].g, threads[k],
                                  cases[c].moments, imp, &many, &err);
            bool same = st == AQ_OK && qt_same(&one, &many);
            qt_free(&many);
            CHECK_MSG(same, "case %zu: %u threads differ from 1 thread (%s)", c, threads[k],
                      err.message);
        }
        qt_free(&one);
    }
    free(x);
    free(w);
}

/* kquant's dequantize runs its spans on the context's threads: the same bytes for any thread
 * count, both layouts, every bit width, float32 and bfloat16 out. */
TEST(kquant_dequantize_same_bytes_for_any_thread_count)
{
    int64_t shape[2] = {301, 1111};
    const size_t n = 301 * 1111;
    float *x = malloc(n * sizeof(float));
    uint8_t *one = malloc(n * 4), *many = malloc(n * 4);
    CHECK(x != NULL && one != NULL && many != NULL);
    uint64_t seed = 29;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    aq_error err;
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    static const aq_scheme schemes[] = {AQ_SCHEME_KQUANT, AQ_SCHEME_KQUANT_ROWS};
    static const aq_dtype dtypes[] = {AQ_DTYPE_F32, AQ_DTYPE_BF16};
    static const unsigned threads[] = {1, 2, 3, 8};
    for (size_t sc = 0; sc < 2; sc++) {
        for (unsigned bits = 2; bits <= 8; bits *= 2) {
            qt_out q;
            CHECK_OK(qt_run(&t, schemes[sc], bits, 512, 1, 0, NULL, &q, &err));
            aq_qtensor qt = {"w",      schemes[sc],      bits,     512,   shape,     2,
                             q.packed, q.l.packed_bytes, q.scales, q.zps, q.l.groups};
            for (size_t d = 0; d < 2; d++) {
                const size_t bytes = n * aq_dtype_size(dtypes[d]);
                for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
                    aq_ctx *ctx = NULL;
                    CHECK_OK(aq_ctx_create(&ctx, &err));
                    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads[k], &err));
                    uint8_t *out = k == 0 ? one : many;
                    memset(out, 0xa5, bytes);
                    CHECK_OK(aq_dequantize(ctx, &qt, dtypes[d], out, n, &err));
                    aq_ctx_free(ctx);
                    CHECK_MSG(k == 0 || memcmp(one, many, bytes) == 0,
                              "%s, %u bits, %s: %u threads differ from 1 thread",
                              aq_scheme_name(schemes[sc]), bits, aq_dtype_name(dtypes[d]),
                              threads[k]);
                }
            }
            qt_free(&q);
        }
    }
    free(x);
    free(one);
    free(many);
}

TEST(quality_first_refused_value_whatever_the_threads)
{
    int64_t shape[2] = {400, 1000};
    const size_t n = 400000;
    float *x = malloc(n * sizeof(float));
    CHECK(x != NULL);
    uint64_t seed = 5;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    x[390001] = NAN;
    x[250000] = 0x1p126f; /* refused by kquant only */
    x[150010] = INFINITY;
    static const unsigned threads[] = {1, 2, 3, 8};
    aq_error err;
    aq_tensor t = {"layer.bad", AQ_DTYPE_F32, x, shape, 2};
    for (size_t k = 0; k < 4; k++) {
        qt_out o;
        CHECK_FAILS(qt_run(&t, AQ_SCHEME_KQUANT, 4, 512, threads[k], 0, NULL, &o, &err),
                    AQ_NON_FINITE, "Layer 'layer.bad' contains NaN or Inf at index 150010");
        qt_free(&o);
        CHECK_FAILS(qt_run(&t, AQ_SCHEME_AFFINE_SEARCH, 4, 64, threads[k], 0, NULL, &o, &err),
                    AQ_NON_FINITE, "at index 150010");
        qt_free(&o);
    }
    x[150010] = 0.0f;
    for (size_t k = 0; k < 4; k++) {
        qt_out o;
        CHECK_FAILS(qt_run(&t, AQ_SCHEME_KQUANT, 4, 512, threads[k], 0, NULL, &o, &err),
                    AQ_INVALID_ARGUMENT, "at index 250000 is too large for kquant");
        qt_free(&o);
        CHECK_FAILS(qt_run(&t, AQ_SCHEME_AFFINE_SEARCH, 2, 64, threads[k], 0, NULL, &o, &err),
                    AQ_NON_FINITE, "at index 390001");
        qt_free(&o);
    }
    free(x);
}

AQ_TEST_MAIN(AQ_CASE(quality_schemes_same_bytes_for_any_thread_count),
             AQ_CASE(quality_first_refused_value_whatever_the_threads),
             AQ_CASE(kquant_dequantize_same_bytes_for_any_thread_count))
