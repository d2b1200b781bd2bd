/* The quality schemes through the public API: names and parameters, round-trip bounds, the
 * searched scales never worse than min-max, kquant's layout and error targets, importance
 * weights, the moment correction, and the errors a reader or a caller can meet. */
#include "aq_common.h"
#include "aq_test.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ts_out {
    aq_layout l;
    uint8_t *packed;
    float *scales, *zps, *deq;
} ts_out;

static void ts_free(ts_out *o)
{
    free(o->packed);
    free(o->scales);
    free(o->zps);
    free(o->deq);
    memset(o, 0, sizeof *o);
}

static aq_ctx *ts_ctx(aq_scheme scheme, unsigned bits, size_t g)
{
    aq_ctx *ctx = NULL;
    aq_error err;
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)g, &err) != AQ_OK) {
        fprintf(stderr, "ts_ctx: %s\n", err.message);
        aq_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Quantizes with ctx (and importance), then dequantizes to float32 with the given scheme. */
static aq_status ts_run(aq_ctx *ctx, const aq_tensor *t, const float *importance, ts_out *o,
                        aq_quantize_stats *stats, aq_error *err)
{
    memset(o, 0, sizeof *o);
    aq_status st = aq_quantize_bound(ctx, t, &o->l, err);
    if (st != AQ_OK) {
        return st;
    }
    o->packed = malloc(o->l.packed_bytes);
    o->scales = malloc(o->l.groups * 4);
    o->zps = malloc(o->l.groups * 4);
    o->deq = malloc(o->l.elements * 4);
    aq_qbuffers b = {o->packed, o->l.packed_bytes, o->scales, o->zps, o->l.groups};
    aq_quantize_options opts = {.size = sizeof(aq_quantize_options), .importance = importance};
    if ((st = aq_quantize_ex(ctx, t, &opts, &b, stats, err)) != AQ_OK) {
        ts_free(o);
        return st;
    }
    int64_t scheme;
    if ((st = aq_ctx_get_param(ctx, AQ_PARAM_SCHEME, &scheme, err)) != AQ_OK) {
        ts_free(o);
        return st;
    }
    aq_qtensor q = {t->name,    (aq_scheme)scheme, o->l.bit_width,    o->l.group_size, t->shape,
                    t->ndim,    o->packed,         o->l.packed_bytes, o->scales,       o->zps,
                    o->l.groups};
    if ((st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, o->deq, o->l.elements, err)) != AQ_OK) {
        ts_free(o);
    }
    return st;
}

static void ts_fill(float *x, size_t n, uint64_t seed, double outlier_rate)
{
    for (size_t i = 0; i < n; i++) {
        double v = 0.02 * aq_test_rand_normal(&seed);
        if (aq_test_rand_uniform(&seed) < outlier_rate) {
            v = aq_test_rand_uniform(&seed) < 0.5 ? -0.4 : 0.4;
        }
        x[i] = (float)v;
    }
}

TEST(names_and_params)
{
    aq_error err;
    aq_scheme s;
    CHECK_OK(aq_scheme_from_name("affine_search", &s, &err));
    CHECK(s == AQ_SCHEME_AFFINE_SEARCH);
    CHECK_OK(aq_scheme_from_name("kquant", &s, &err));
    CHECK(s == AQ_SCHEME_KQUANT);
    CHECK(strcmp(aq_scheme_name(AQ_SCHEME_KQUANT), "kquant") == 0);
    CHECK(strcmp(aq_scheme_name(AQ_SCHEME_AFFINE_SEARCH), "affine_search") == 0);
    CHECK_FAILS(aq_scheme_from_name("q4k", &s, &err), AQ_INVALID_PARAMETER,
                "affine, affine_search, kquant");
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    int64_t lo, hi, v;
    CHECK_OK(aq_param_bounds(AQ_PARAM_PRESERVE_MOMENTS, &lo, &hi, &err));
    CHECK(lo == 0 && hi == 1);
    CHECK(strcmp(aq_param_name(AQ_PARAM_PRESERVE_MOMENTS), "preserve_moments") == 0);
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, 2, &err), AQ_INVALID_PARAMETER,
                "Invalid preserve_moments: 2");
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, 1, &err));
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, &v, &err));
    CHECK(v == 1);
    CHECK_OK(aq_param_bounds(AQ_PARAM_SCHEME, &lo, &hi, &err));
    CHECK(hi == AQ_SCHEME_KQUANT_ROWS);
    CHECK(strcmp(aq_scheme_name(AQ_SCHEME_KQUANT_ROWS), "kquant_rows") == 0);
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_KQUANT, 1) == AQ_SCHEME_KQUANT_ROWS);
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_KQUANT, 2) == AQ_SCHEME_KQUANT);
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_AFFINE_SEARCH, 1) == AQ_SCHEME_AFFINE_SEARCH);
    aq_ctx_free(ctx);
}

/* Squared error of each group, for the affine format. */
static double ts_group_sse(const float *x, const float *deq, const aq_layout *l, size_t g)
{
    size_t row = g / l->groups_per_row, j = g % l->groups_per_row;
    size_t begin = row * l->cols + j * l->group_size;
    size_t len =
        l->cols - j * l->group_size < l->group_size ? l->cols - j * l->group_size : l->group_size;
    double e = 0.0;
    for (size_t i = begin; i < begin + len; i++) {
        double d = (double)x[i] - (double)deq[i];
        e += d * d;
    }
    return e;
}

TEST(search_never_worse_than_minmax)
{
    static const size_t groups[] = {8, 32, 64, 128, 256, AQ_GROUP_SIZE_ROW};
    static const unsigned bits[] = {2, 4, 8};
    static const size_t colss[] = {1, 7, 100, 333};
    aq_error err;
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
        for (size_t bi = 0; bi < 3; bi++) {
            for (size_t ci = 0; ci < sizeof colss / sizeof colss[0]; ci++) {
                size_t rows = 5, cols = colss[ci], n = rows * cols;
                float *x = malloc(n * 4);
                ts_fill(x, n, 100 + gi * 10 + bi + ci * 1000, 0.01);
                if (cols >= 100) {
                    for (size_t i = 0; i < 20; i++) {
                        x[cols + i] = 0.25f; /* a constant run */
                    }
                }
                int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
                aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
                aq_ctx *ca = ts_ctx(AQ_SCHEME_AFFINE, bits[bi], groups[gi]);
                aq_ctx *cs = ts_ctx(AQ_SCHEME_AFFINE_SEARCH, bits[bi], groups[gi]);
                ts_out a, s;
                CHECK(ca != NULL && cs != NULL);
                CHECK_OK(ts_run(ca, &t, NULL, &a, NULL, &err));
                CHECK_OK(ts_run(cs, &t, NULL, &s, NULL, &err));
                CHECK(a.l.packed_bytes == s.l.packed_bytes && a.l.groups == s.l.groups);
                for (size_t g = 0; g < s.l.groups; g++) {
                    double ea = ts_group_sse(x, a.deq, &a.l, g);
                    double es = ts_group_sse(x, s.deq, &s.l, g);
                    CHECK_MSG(es <= ea * (1.0 + 1e-4) + 1e-12,
                              "bits %u g %zu cols %zu group %zu: search %.6g > affine %.6g",
                              bits[bi], groups[gi], cols, g, es, ea);
                    CHECK(isfinite(s.scales[g]) && s.scales[g] >= FLT_MIN);
                }
                /* Constant groups round-trip exactly (the run starts a group when g <= 20). */
                if (cols >= 100 && groups[gi] <= 16) {
                    for (size_t i = 0; i < 16; i++) {
                        CHECK(s.deq[cols + i] == 0.25f);
                    }
                }
                /* The output is plain affine: an affine reader gives the same floats. */
                aq_qtensor q = {
                    "w",      AQ_SCHEME_AFFINE, s.l.bit_width, s.l.group_size, shape,     2,
                    s.packed, s.l.packed_bytes, s.scales,      s.zps,          s.l.groups};
                float *again = malloc(n * 4);
                CHECK_OK(aq_dequantize(ca, &q, AQ_DTYPE_F32, again, n, &err));
                CHECK(memcmp(again, s.deq, n * 4) == 0);
                free(again);
                ts_free(&a);
                ts_free(&s);
                aq_ctx_free(ca);
                aq_ctx_free(cs);
                free(x);
            }
        }
    }
}

TEST(search_dtypes_match_f32)
{
    /* f16, bf16 and f64 inputs give the bytes of their float32 conversion. */
    aq_error err;
    size_t n = 3 * 300;
    float *x = malloc(n * 4);
    uint16_t *h = malloc(n * 2), *bf = malloc(n * 2);
    double *d = malloc(n * 8);
    ts_fill(x, n, 7, 0.002);
    for (size_t i = 0; i < n; i++) {
        h[i] = aq__f32_to_f16(x[i]);
        bf[i] = aq__f32_to_bf16(x[i]);
        d[i] = (double)x[i];
    }
    int64_t shape[2] = {3, 300};
    for (int scheme = AQ_SCHEME_AFFINE_SEARCH; scheme <= AQ_SCHEME_KQUANT; scheme++) {
        aq_ctx *ctx = ts_ctx((aq_scheme)scheme, 4, 64);
        CHECK(ctx != NULL);
        const void *data[3] = {h, bf, d};
        aq_dtype dts[3] = {AQ_DTYPE_F16, AQ_DTYPE_BF16, AQ_DTYPE_F64};
        for (int k = 0; k < 3; k++) {
            float *conv = malloc(n * 4);
            for (size_t i = 0; i < n; i++) {
                conv[i] =
                    k == 0 ? aq__f16_to_f32(h[i]) : (k == 1 ? aq__bf16_to_f32(bf[i]) : (float)d[i]);
            }
            aq_tensor t1 = {"w", dts[k], data[k], shape, 2};
            aq_tensor t2 = {"w", AQ_DTYPE_F32, conv, shape, 2};
            ts_out o1, o2;
            CHECK_OK(ts_run(ctx, &t1, NULL, &o1, NULL, &err));
            CHECK_OK(ts_run(ctx, &t2, NULL, &o2, NULL, &err));
            CHECK(memcmp(o1.packed, o2.packed, o1.l.packed_bytes) == 0);
            CHECK(memcmp(o1.scales, o2.scales, o1.l.groups * 4) == 0);
            CHECK(memcmp(o1.zps, o2.zps, o1.l.groups * 4) == 0);
            ts_free(&o1);
            ts_free(&o2);
            free(conv);
        }
        aq_ctx_free(ctx);
    }
    free(x);
    free(h);
    free(bf);
    free(d);
}

static unsigned ts_bits(const uint8_t *p, size_t bit, unsigned width)
{
    unsigned v = 0;
    for (unsigned k = 0; k < width; k++) {
        v |= (((unsigned)p[(bit + k) / 8] >> ((bit + k) % 8)) & 1u) << k;
    }
    return v;
}

/* Both layouts of kquant: super-blocks over the flattened tensor (kquant) and row by row
 * (kquant_rows, format version 1). The flattened layout stays within 2.625 / 4.5 / 8.5 bits
 * per weight, every byte counted, up to the metadata of the tensor's one partial super-block
 * (at most 88 bits); the row layout pays that for every row. */
TEST(kquant_layout_and_bounds)
{
    aq_error err;
    static const unsigned bits[] = {2, 4, 8};
    static const double bpw[] = {2.625, 4.5, 8.5};
    static const size_t colss[] = {1024, 1100, 5, 513, 320};
    static const aq_scheme schemes[] = {AQ_SCHEME_KQUANT, AQ_SCHEME_KQUANT_ROWS};
    for (size_t si = 0; si < 2; si++) {
        for (size_t bi = 0; bi < 3; bi++) {
            for (size_t ci = 0; ci < 5; ci++) {
                size_t rows = 3, cols = colss[ci], n = rows * cols;
                const bool flat = schemes[si] == AQ_SCHEME_KQUANT;
                /* The super-block geometry: one row of n elements when flat. */
                size_t R = flat ? 1 : rows, C = flat ? n : cols;
                float *x = malloc(n * 4);
                ts_fill(x, n, 31 + bi + ci * 7, 0.003);
                for (size_t i = 0; i < cols && i < 40; i++) {
                    x[i] = 0.0f; /* an all-zero sub-block */
                }
                int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
                aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
                aq_ctx *ctx = ts_ctx(schemes[si], bits[bi], 128);
                CHECK(ctx != NULL);
                ts_out o;
                CHECK_OK(ts_run(ctx, &t, NULL, &o, NULL, &err));
                CHECK(o.l.group_size == AQ_KQUANT_SUPER_BLOCK);
                CHECK(o.l.groups == R * ((C + 511) / 512));
                double got = (double)(o.l.packed_bytes + 8 * o.l.groups) * 8.0;
                if (C % 512 == 0) {
                    CHECK_MSG(fabs(got / (double)n - bpw[bi]) < 1e-12, "bits %u: %.4f bpw",
                              bits[bi], got / (double)n);
                }
                if (flat) {
                    CHECK_MSG(got <= bpw[bi] * (double)n + 88.0,
                              "bits %u, %zu x %zu: %.0f bits, bound %.1f + 88", bits[bi], rows,
                              cols, got, bpw[bi] * (double)n);
                }
                /* Every element inside its sub-block's range is within a / 2 (plus rounding). */
                size_t sub = bits[bi] == 2 ? 16 : 32, pb = bits[bi] == 2 ? 4 : 6;
                size_t code_bytes = (n * bits[bi] + 7) / 8, meta = code_bytes;
                float qmax = (float)((1u << bits[bi]) - 1);
                for (size_t r = 0; r < R; r++) {
                    for (size_t c0 = 0; c0 < C; c0 += 512) {
                        size_t g = r * ((C + 511) / 512) + c0 / 512;
                        size_t len = C - c0 < 512 ? C - c0 : 512;
                        size_t nsub = (len + sub - 1) / sub;
                        for (size_t j = 0; j < nsub; j++) {
                            unsigned sc = ts_bits(o.packed + meta, 2 * j * pb, (unsigned)pb);
                            unsigned mc = ts_bits(o.packed + meta, (2 * j + 1) * pb, (unsigned)pb);
                            float a = o.scales[g] * (float)sc, b = o.zps[g] * (float)mc;
                            for (size_t i = j * sub; i < len && i < (j + 1) * sub; i++) {
                                size_t k = r * C + c0 + i;
                                if (x[k] >= -b && x[k] <= a * qmax - b) {
                                    double e = fabs((double)x[k] - (double)o.deq[k]);
                                    double tol = (fabs((double)x[k]) + (double)a * (double)qmax +
                                                  (double)b) *
                                                 0x1p-20;
                                    CHECK_MSG(e <= (double)a / 2 + tol,
                                              "bits %u cols %zu element %zu: error %.3g, a %.3g",
                                              bits[bi], cols, k, e, (double)a);
                                }
                            }
                        }
                        meta += ((nsub * 2 * pb) + 7) / 8;
                    }
                }
                CHECK(meta == o.l.packed_bytes);
                if (cols >= 40) {
                    for (size_t i = 0; i < 32; i++) {
                        CHECK_MSG(o.deq[i] == 0.0f, "zero sub-block: element %zu is %g", i,
                                  (double)o.deq[i]);
                    }
                }
                ts_free(&o);
                aq_ctx_free(ctx);
                free(x);
            }
        }
    }
}

/* Relative RMSE of one scheme on a Gaussian tensor (the targets of bench/quality, on a smaller
 * tensor than bench/quality's). */
static double ts_rel_rmse(aq_scheme scheme, unsigned bits, size_t g)
{
    aq_error err;
    size_t rows = 64, cols = 4096, n = rows * cols;
    float *x = malloc(n * 4);
    ts_fill(x, n, 2026, 0.0);
    int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    aq_ctx *ctx = ts_ctx(scheme, bits, g);
    ts_out o;
    double r = (double)INFINITY;
    if (ctx != NULL && ts_run(ctx, &t, NULL, &o, NULL, &err) == AQ_OK) {
        aq_tensor d = {"w", AQ_DTYPE_F32, o.deq, shape, 2};
        aq_metrics m;
        if (aq_metrics_compute(&t, &d, &m, &err) == AQ_OK) {
            r = m.rel_rmse;
        }
        ts_free(&o);
    }
    aq_ctx_free(ctx);
    free(x);
    return r;
}

TEST(kquant_beats_reference_points)
{
    double r2 = ts_rel_rmse(AQ_SCHEME_KQUANT, 2, 512);
    double r4 = ts_rel_rmse(AQ_SCHEME_KQUANT, 4, 512);
    double r8 = ts_rel_rmse(AQ_SCHEME_KQUANT, 8, 512);
    CHECK_MSG(r2 <= 0.2965, "2 bits: %.4f", r2);
    CHECK_MSG(r4 <= 0.0714, "4 bits: %.4f", r4);
    CHECK_MSG(r8 <= 0.0054, "8 bits: %.4f", r8);
    double a4 = ts_rel_rmse(AQ_SCHEME_AFFINE, 4, 128);
    double s4 = ts_rel_rmse(AQ_SCHEME_AFFINE_SEARCH, 4, 128);
    CHECK_MSG(s4 < a4, "search %.4f, affine %.4f", s4, a4);
}

TEST(kquant_output_dtypes)
{
    aq_error err;
    size_t n = 2 * 700;
    float *x = malloc(n * 4);
    ts_fill(x, n, 5, 0.0);
    int64_t shape[2] = {2, 700};
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    aq_ctx *ctx = ts_ctx(AQ_SCHEME_KQUANT, 4, 128);
    ts_out o;
    CHECK_OK(ts_run(ctx, &t, NULL, &o, NULL, &err));
    aq_qtensor q = {"w",      AQ_SCHEME_KQUANT, 4,        512,   shape,     2,
                    o.packed, o.l.packed_bytes, o.scales, o.zps, o.l.groups};
    uint16_t *h = malloc(n * 2), *bf = malloc(n * 2);
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F16, h, n, &err));
    CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_BF16, bf, n, &err));
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i] == aq__f32_to_f16(o.deq[i]));
        CHECK(bf[i] == aq__f32_to_bf16(o.deq[i]));
    }
    /* A reader's checks. */
    q.group_size = 128;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, o.deq, n, &err), AQ_INVALID_DATA,
                "kquant group size is 128, expected 512");
    q.group_size = 512;
    q.packed_size--;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, o.deq, n, &err), AQ_INVALID_DATA,
                "packed bytes, expected");
    q.packed_size++;
    q.groups--;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, o.deq, n, &err), AQ_INVALID_DATA,
                "scales and zero points, expected");
    q.groups++;
    o.zps[1] = NAN;
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, o.deq, n, &err), AQ_INVALID_DATA,
                "super-block 1 is not finite");
    CHECK_FAILS(aq_dequantize(ctx, &q, AQ_DTYPE_F32, o.deq, n - 1, &err), AQ_BUFFER_TOO_SMALL,
                "needs 1400");
    aq_layout l;
    CHECK_OK(aq_layout_compute_scheme(AQ_SCHEME_KQUANT, shape, 2, 4, 64, &l, &err));
    CHECK(l.packed_bytes == o.l.packed_bytes && l.group_size == 512);
    free(h);
    free(bf);
    ts_free(&o);
    aq_ctx_free(ctx);
    free(x);
}

TEST(bad_input)
{
    aq_error err;
    size_t n = 4 * 100;
    float *x = malloc(n * 4), *w = malloc(n * 4);
    ts_fill(x, n, 9, 0.0);
    for (size_t i = 0; i < n; i++) {
        w[i] = 1.0f;
    }
    int64_t shape[2] = {4, 100};
    aq_tensor t = {"layer.w", AQ_DTYPE_F32, x, shape, 2};
    for (int scheme = AQ_SCHEME_AFFINE_SEARCH; scheme <= AQ_SCHEME_KQUANT; scheme++) {
        aq_ctx *ctx = ts_ctx((aq_scheme)scheme, 4, 32);
        ts_out o;
        x[237] = NAN;
        CHECK_FAILS(ts_run(ctx, &t, NULL, &o, NULL, &err), AQ_NON_FINITE,
                    "Layer 'layer.w' contains NaN or Inf at index 237");
        x[237] = 0.0f;
        w[55] = -1.0f;
        CHECK_FAILS(ts_run(ctx, &t, w, &o, NULL, &err), AQ_INVALID_ARGUMENT,
                    "importance weight at index 55");
        w[55] = INFINITY;
        CHECK_FAILS(ts_run(ctx, &t, w, &o, NULL, &err), AQ_INVALID_ARGUMENT,
                    "must be finite and >= 0");
        w[55] = 1.0f;
        aq_ctx_free(ctx);
    }
    /* Huge values: kquant refuses beyond 2^125, affine_search round-trips them finitely. */
    x[301] = 3e38f;
    x[302] = -3e38f;
    aq_ctx *ctx = ts_ctx(AQ_SCHEME_KQUANT, 4, 32);
    ts_out o;
    CHECK_FAILS(ts_run(ctx, &t, NULL, &o, NULL, &err), AQ_INVALID_ARGUMENT,
                "at index 301 is too large for kquant");
    aq_ctx_free(ctx);
    x[301] = 0x1p125f;
    x[302] = -0x1p125f;
    ctx = ts_ctx(AQ_SCHEME_KQUANT, 8, 32);
    CHECK_OK(ts_run(ctx, &t, NULL, &o, NULL, &err));
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(isfinite(o.deq[i]), "kquant: element %zu restored as %g", i, (double)o.deq[i]);
    }
    CHECK(fabs((double)o.deq[301] - 0x1p125) < 0x1p125 / 64);
    ts_free(&o);
    aq_ctx_free(ctx);
    x[301] = 3e38f;
    x[302] = -3e38f;
    ctx = ts_ctx(AQ_SCHEME_AFFINE_SEARCH, 2, 32);
    CHECK_OK(ts_run(ctx, &t, NULL, &o, NULL, &err));
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(isfinite(o.deq[i]), "search: element %zu restored as %g", i, (double)o.deq[i]);
    }
    ts_free(&o);
    aq_ctx_free(ctx);
    x[301] = 0.0f;
    x[302] = 0.0f;
    ctx = ts_ctx(AQ_SCHEME_KQUANT, 4, 32);
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, 1, &err));
    CHECK_FAILS(ts_run(ctx, &t, NULL, &o, NULL, &err), AQ_UNSUPPORTED, "preserve_moments");
    aq_ctx_free(ctx);
    free(x);
    free(w);
}

TEST(importance_lowers_weighted_error)
{
    aq_error err;
    size_t rows = 16, cols = 1024, n = rows * cols;
    float *x = malloc(n * 4), *w = malloc(n * 4);
    ts_fill(x, n, 77, 0.0);
    uint64_t seed = 78;
    for (size_t i = 0; i < n; i++) {
        /* Some columns matter much more than others (as calibration would say). */
        w[i] = (i % cols) % 16 == 0 ? 50.0f : (float)aq_test_rand_uniform(&seed);
    }
    w[3] = 0.0f;
    int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    for (int scheme = AQ_SCHEME_AFFINE_SEARCH; scheme <= AQ_SCHEME_KQUANT; scheme++) {
        for (unsigned bits = 2; bits <= 4; bits += 2) {
            aq_ctx *ctx = ts_ctx((aq_scheme)scheme, bits, 64);
            ts_out plain, weighted;
            CHECK_OK(ts_run(ctx, &t, NULL, &plain, NULL, &err));
            CHECK_OK(ts_run(ctx, &t, w, &weighted, NULL, &err));
            double ep = 0.0, ew = 0.0;
            for (size_t i = 0; i < n; i++) {
                double a = (double)x[i] - (double)plain.deq[i];
                double b = (double)x[i] - (double)weighted.deq[i];
                ep += (double)w[i] * a * a;
                ew += (double)w[i] * b * b;
            }
            CHECK_MSG(ew < ep, "scheme %d bits %u: weighted %.6g, plain %.6g", scheme, bits, ew,
                      ep);
            ts_free(&plain);
            ts_free(&weighted);
            aq_ctx_free(ctx);
        }
    }
    free(x);
    free(w);
}

TEST(moments_preserved)
{
    aq_error err;
    size_t rows = 8, cols = 2000, n = rows * cols;
    float *x = malloc(n * 4);
    ts_fill(x, n, 99, 0.001);
    for (size_t i = 0; i < cols; i++) {
        x[i] += 0.05f; /* a row with a mean far from 0 */
    }
    int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    for (int scheme = AQ_SCHEME_AFFINE; scheme <= AQ_SCHEME_AFFINE_SEARCH; scheme++) {
        aq_ctx *ctx = ts_ctx((aq_scheme)scheme, 2, 128);
        ts_out before, after;
        aq_quantize_stats s0, s1;
        CHECK_OK(ts_run(ctx, &t, NULL, &before, &s0, &err));
        CHECK(s0.rows == rows && s0.rows_corrected == 0 && s0.kl_after == s0.kl_before);
        CHECK(s0.kl_before > 0.0);
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, 1, &err));
        CHECK_OK(ts_run(ctx, &t, NULL, &after, &s1, &err));
        CHECK(s1.rows_corrected == rows);
        CHECK_MSG(s1.kl_after < 1e-9 && s1.kl_before == s0.kl_before, "KL %.3g -> %.3g",
                  s1.kl_before, s1.kl_after);
        /* The codes do not change; each row's mean and deviation come back. */
        CHECK(memcmp(before.packed, after.packed, before.l.packed_bytes) == 0);
        for (size_t r = 0; r < rows; r++) {
            double m0 = 0, m1 = 0, v0 = 0, v1 = 0;
            for (size_t i = 0; i < cols; i++) {
                m0 += (double)x[r * cols + i];
                m1 += (double)after.deq[r * cols + i];
            }
            m0 /= (double)cols;
            m1 /= (double)cols;
            for (size_t i = 0; i < cols; i++) {
                double d0 = (double)x[r * cols + i] - m0;
                double d1 = (double)after.deq[r * cols + i] - m1;
                v0 += d0 * d0;
                v1 += d1 * d1;
            }
            CHECK_MSG(fabs(m0 - m1) < 1e-6 && fabs(sqrt(v0 / v1) - 1.0) < 1e-5,
                      "row %zu: mean %.6g vs %.6g, var %.6g vs %.6g", r, m0, m1, v0, v1);
        }
        /* aq_quantize applies the option too. */
        aq_qbuffers b = {before.packed, before.l.packed_bytes, before.scales, before.zps,
                         before.l.groups};
        CHECK_OK(aq_quantize(ctx, &t, &b, &err));
        CHECK(memcmp(before.scales, after.scales, before.l.groups * 4) == 0);
        ts_free(&before);
        ts_free(&after);
        aq_ctx_free(ctx);
    }
    free(x);
}

/* Adversarial inputs of every length 1..1025: denormals, mixed magnitudes, constant, all
 * negative and all positive runs, exact code-grid ties. Both schemes must produce finite
 * results (UBSan checks the conversions), and affine_search must not lose to min-max. */
TEST(adversarial_lengths)
{
    aq_error err;
    uint64_t seed = 555;
    for (size_t len = 1; len <= 1025; len += (len < 70 ? 1 : 37)) {
        float *x = malloc(len * 4);
        int kind = (int)(len % 6);
        for (size_t i = 0; i < len; i++) {
            double u = aq_test_rand_uniform(&seed);
            switch (kind) {
            case 0:
                x[i] = (float)((u - 0.5) * 1e-40); /* denormals */
                break;
            case 1:
                x[i] = (float)(i % 3 == 0 ? (u - 0.5) * 1e30 : (u - 0.5) * 1e-30);
                break;
            case 2:
                x[i] = -0.75f; /* constant */
                break;
            case 3:
                x[i] = (float)(-1.0 - u); /* all negative */
                break;
            case 4:
                x[i] = (float)(1.0 + u); /* all positive */
                break;
            default:
                x[i] = (float)(i % 16) * 0.125f + 0.0625f; /* ties on the grid */
                break;
            }
        }
        int64_t shape[1] = {(int64_t)len};
        aq_tensor t = {"adv", AQ_DTYPE_F32, x, shape, 1};
        for (unsigned bits = 2; bits <= 8; bits *= 2) {
            aq_ctx *ca = ts_ctx(AQ_SCHEME_AFFINE, bits, 32);
            aq_ctx *cs = ts_ctx(AQ_SCHEME_AFFINE_SEARCH, bits, 32);
            aq_ctx *ck = ts_ctx(AQ_SCHEME_KQUANT, bits, 32);
            ts_out a, s, k;
            CHECK_OK(ts_run(ca, &t, NULL, &a, NULL, &err));
            CHECK_OK(ts_run(cs, &t, NULL, &s, NULL, &err));
            CHECK_OK(ts_run(ck, &t, NULL, &k, NULL, &err));
            double ea = 0, es = 0;
            for (size_t i = 0; i < len; i++) {
                CHECK_MSG(isfinite(s.deq[i]) && isfinite(k.deq[i]), "len %zu kind %d bits %u", len,
                          kind, bits);
                double da = (double)x[i] - (double)a.deq[i], ds = (double)x[i] - (double)s.deq[i];
                ea += da * da;
                es += ds * ds;
            }
            CHECK_MSG(es <= ea * (1.0 + 1e-4) + 1e-300, "len %zu kind %d bits %u: %.6g > %.6g", len,
                      kind, bits, es, ea);
            if (kind == 2) {
                for (size_t i = 0; i < len; i++) {
                    CHECK(s.deq[i] == -0.75f);
                }
            }
            ts_free(&a);
            ts_free(&s);
            ts_free(&k);
            aq_ctx_free(ca);
            aq_ctx_free(cs);
            aq_ctx_free(ck);
        }
        free(x);
    }
}

AQ_TEST_MAIN(AQ_CASE(names_and_params), AQ_CASE(adversarial_lengths),
             AQ_CASE(search_never_worse_than_minmax), AQ_CASE(search_dtypes_match_f32),
             AQ_CASE(kquant_layout_and_bounds), AQ_CASE(kquant_beats_reference_points),
             AQ_CASE(kquant_output_dtypes), AQ_CASE(bad_input),
             AQ_CASE(importance_lowers_weighted_error), AQ_CASE(moments_preserved))
