/* The quality schemes' SIMD kernels against the reference, byte for byte. kquant: codes,
 * packed sub-block parameters, d and dmin, over every input dtype, bit width, importance or
 * none, row lengths that make full, short and unaligned super-blocks, and values chosen to
 * reach every branch (constant, all-negative and all-positive sub-blocks, whose fitted offset
 * comes out positive and is set to 0, ties on the code grid, subnormals,
 * 2^125, outliers, ranges too small for some candidates). affine_search: codes, scales and
 * zero points over the same values and every group size, handled by the SIMD search or not.
 * kquant's dequantize: every output dtype, bit width and layout, whole tensors and spans that
 * start past the first super-block, on quantized data and on random codes with adversarial d
 * and dmin (signed zeros, subnormals, the float32 extremes, infinities, NaN). */
#include "../kernels/simd_tables.h"
#include "aq_test.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    KS_GAUSS,
    KS_OUTLIER,
    KS_CONST,
    KS_NEG,
    KS_TIES,
    KS_TINY,
    KS_HUGE,
    KS_ZERO,
    KS_POS,
    KS_MODES
};

/* One value of a sub-block in the given mode. */
static float ks_value(int mode, uint64_t *seed, float base)
{
    double z = aq_test_rand_normal(seed);
    switch (mode) {
    case KS_OUTLIER:
        return (float)(aq_test_rand_uniform(seed) < 0.05 ? (z < 0 ? -0.4 : 0.4) : 0.02 * z);
    case KS_CONST:
        return base;
    case KS_NEG:
        return (float)(-fabs(0.02 * z) - 0.001);
    case KS_TIES:
        return (float)(floor(z * 8.0) * 0.0625);
    case KS_TINY:
        return (float)(z * 1e-39); /* subnormal: range too small for some candidates */
    case KS_HUGE:
        return (float)(aq_test_rand_uniform(seed) < 0.2 ? (z < 0 ? -0x1p125 : 0x1p125)
                                                        : z * 0x1p120);
    case KS_ZERO:
        return 0.0f;
    case KS_POS: /* far from 0: the least-squares offset of the grid anchored at 0 is > 0 */
        return (float)(0.05 + 0.005 * z);
    default:
        return (float)(0.02 * z);
    }
}

/* Fills x with runs of 16 values, each run in a random mode (mode < 0) or the given one. */
static void ks_fill(float *x, size_t n, uint64_t seed, int mode)
{
    for (size_t i = 0; i < n; i += 16) {
        int m = mode >= 0 ? mode : (int)(aq_test_rand_u64(&seed) % KS_MODES);
        float base = (float)(aq_test_rand_normal(&seed) * 0.02);
        for (size_t j = i; j < i + 16 && j < n; j++) {
            x[j] = ks_value(m, &seed, base);
        }
    }
}

static size_t ks_meta_bytes(size_t rows, size_t cols, unsigned bits)
{
    size_t per_row = 0;
    for (size_t c = 0; c < cols; c += AQ__KQ_SUPER) {
        size_t len = cols - c < AQ__KQ_SUPER ? cols - c : AQ__KQ_SUPER;
        per_row += aq__kq_meta_bytes(bits, len);
    }
    return rows * per_row;
}

typedef struct ks_out {
    uint8_t *packed, *meta;
    float *d, *dmin;
} ks_out;

static void ks_run(aq__quantize_kquant_fn fn, const void *src, const float *imp, size_t rows,
                   size_t cols, unsigned bits, ks_out *o)
{
    size_t n = rows * cols, groups = rows * ((cols + AQ__KQ_SUPER - 1) / AQ__KQ_SUPER);
    size_t pb = (n * bits + 7) / 8, mb = ks_meta_bytes(rows, cols, bits);
    o->packed = malloc(pb + 1);
    o->meta = malloc(mb + 1);
    o->d = malloc(groups * 4 + 4);
    o->dmin = malloc(groups * 4 + 4);
    memset(o->packed, 0xa5, pb + 1); /* the kernel clears what it owns */
    memset(o->meta, 0xa5, mb + 1);
    aq__span s = {n, 0, cols, AQ__KQ_SUPER, bits};
    fn(src, imp, &s, o->packed, o->meta, o->d, o->dmin);
}

static void ks_free(ks_out *o)
{
    free(o->packed);
    free(o->meta);
    free(o->d);
    free(o->dmin);
}

static int ks_tables(const aq__kernel_table **out)
{
    int m = (int)aq_test_simd_tables(out, true);
    if (m == 0) {
        printf("no SIMD kquant kernel runs on this CPU: nothing to compare\n");
    }
    return m;
}

/* Compares every SIMD table with the reference on one input; returns the mismatches. */
static int ks_compare(const void *src, aq_dtype dtype, const float *imp, size_t rows, size_t cols,
                      unsigned bits)
{
    const aq__kernel_table *t[8];
    int nt = ks_tables(t), bad = 0;
    size_t n = rows * cols, groups = rows * ((cols + AQ__KQ_SUPER - 1) / AQ__KQ_SUPER);
    ks_out r;
    ks_run(aq__kernels_ref.quantize_kquant[dtype], src, imp, rows, cols, bits, &r);
    for (int k = 0; k < nt; k++) {
        ks_out o;
        ks_run(t[k]->quantize_kquant[dtype], src, imp, rows, cols, bits, &o);
        if (memcmp(r.packed, o.packed, (n * bits + 7) / 8) != 0 ||
            memcmp(r.meta, o.meta, ks_meta_bytes(rows, cols, bits)) != 0 ||
            memcmp(r.d, o.d, groups * 4) != 0 || memcmp(r.dmin, o.dmin, groups * 4) != 0) {
            printf("mismatch: %s, dtype %d, %zu x %zu, %u bits, importance %s\n", t[k]->name,
                   (int)dtype, rows, cols, bits, imp != NULL ? "yes" : "no");
            bad++;
        }
        ks_free(&o);
    }
    ks_free(&r);
    return bad;
}

/* affine_search: every SIMD table against the reference on one input and group size. */
static int ks_compare_search(const float *x, const float *imp, size_t rows, size_t cols, size_t g,
                             unsigned bits)
{
    const aq__kernel_table *t[8];
    const aq__kernel_table *all[8];
    bool ok[8];
    size_t nall = aq__kernels_list(all, ok, 8);
    int nt = 0, bad = 0;
    for (size_t i = 0; i < nall; i++) {
        if (all[i] != &aq__kernels_ref && ok[i] && all[i]->quantize_search[AQ_DTYPE_F32] != NULL) {
            t[nt++] = all[i];
        }
    }
    size_t n = rows * cols, groups = rows * ((cols + g - 1) / g), pb = (n * bits + 7) / 8;
    aq__span s = {n, 0, cols, g, bits};
    uint8_t *p0 = malloc(pb), *p1 = malloc(pb);
    float *s0 = malloc(groups * 4), *z0 = malloc(groups * 4);
    float *s1 = malloc(groups * 4), *z1 = malloc(groups * 4);
    aq__kernels_ref.quantize_search[AQ_DTYPE_F32](x, imp, &s, p0, s0, z0);
    for (int k = 0; k < nt; k++) {
        t[k]->quantize_search[AQ_DTYPE_F32](x, imp, &s, p1, s1, z1);
        if (memcmp(p0, p1, pb) != 0 || memcmp(s0, s1, groups * 4) != 0 ||
            memcmp(z0, z1, groups * 4) != 0) {
            printf("search mismatch: %s, %zu x %zu, g %zu, %u bits\n", t[k]->name, rows, cols, g,
                   bits);
            bad++;
        }
    }
    free(p0);
    free(p1);
    free(s0);
    free(z0);
    free(s1);
    free(z1);
    return bad;
}

/* The last five are tensors of rows of 320, 1100, 37, 7 and 600 in the flattened layout of
 * kquant (docs/format.md 5.2: one row of every element), whose super-blocks straddle rows. */
static const size_t ks_shapes[][2] = {
    {2, 512}, {3, 1100},     {1, 4096},     {5, 37},     {3, 513},   {3, 1025},   {2, 1536},
    {7, 16},  {1, 40 * 320}, {1, 3 * 1100}, {1, 5 * 37}, {1, 3 * 7}, {1, 2 * 600}};

TEST(f32_every_mode)
{
    static const unsigned bits[3] = {2, 4, 8};
    for (size_t sh = 0; sh < sizeof ks_shapes / sizeof ks_shapes[0]; sh++) {
        size_t rows = ks_shapes[sh][0], cols = ks_shapes[sh][1], n = rows * cols;
        float *x = malloc(n * 4);
        for (int mode = -1; mode < KS_MODES; mode++) {
            ks_fill(x, n, 100 + sh * 16 + (size_t)(mode + 1), mode);
            for (int b = 0; b < 3; b++) {
                CHECK(ks_compare(x, AQ_DTYPE_F32, NULL, rows, cols, bits[b]) == 0);
            }
        }
        free(x);
    }
}

TEST(f32_importance)
{
    static const unsigned bits[3] = {2, 4, 8};
    size_t rows = 3, cols = 1100, n = rows * cols;
    float *x = malloc(n * 4), *w = malloc(n * 4);
    uint64_t seed = 9;
    ks_fill(x, n, 11, -1);
    for (size_t i = 0; i < n; i++) {
        w[i] = aq_test_rand_uniform(&seed) < 0.1 ? 0.0f : (float)aq_test_rand_uniform(&seed);
        /* Whole runs of zero weights (a sub-block with no weight at all) and of large ones. */
        if ((i / 16) % 7 == 3) {
            w[i] = 0.0f;
        } else if ((i / 16) % 7 == 5) {
            w[i] *= 1000.0f;
        }
    }
    for (int b = 0; b < 3; b++) {
        CHECK(ks_compare(x, AQ_DTYPE_F32, w, rows, cols, bits[b]) == 0);
    }
    free(x);
    free(w);
}

TEST(search_every_mode)
{
    static const size_t groups[] = {16, 32, 64, 128, 96, 256};
    static const size_t shapes[][2] = {{3, 1100}, {2, 512}, {5, 37}};
    for (size_t sh = 0; sh < 3; sh++) {
        size_t rows = shapes[sh][0], cols = shapes[sh][1], n = rows * cols;
        float *x = malloc(n * 4);
        for (int mode = -1; mode < KS_MODES; mode++) {
            ks_fill(x, n, 300 + sh * 16 + (size_t)(mode + 1), mode);
            for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
                for (unsigned b = 2; b <= 8; b *= 2) {
                    CHECK(ks_compare_search(x, NULL, rows, cols, groups[gi], b) == 0);
                }
            }
        }
        free(x);
    }
}

TEST(other_dtypes)
{
    size_t rows = 3, cols = 1100, n = rows * cols;
    float *x = malloc(n * 4);
    uint16_t *h = malloc(n * 2), *bf = malloc(n * 2);
    double *d = malloc(n * 8);
    ks_fill(x, n, 21, KS_GAUSS);
    for (size_t i = 0; i < n; i++) {
        h[i] = aq__f32_to_f16(x[i]);
        bf[i] = aq__f32_to_bf16(x[i]);
        d[i] = (double)x[i] * (1.0 + 1e-9);
    }
    for (unsigned b = 2; b <= 8; b *= 2) {
        CHECK(ks_compare(h, AQ_DTYPE_F16, NULL, rows, cols, b) == 0);
        CHECK(ks_compare(bf, AQ_DTYPE_BF16, NULL, rows, cols, b) == 0);
        CHECK(ks_compare(d, AQ_DTYPE_F64, NULL, rows, cols, b) == 0);
    }
    free(x);
    free(h);
    free(bf);
    free(d);
}

/* Spans of kquant_rows (super-blocks follow rows): every row length from 1 to 100 and lengths
 * around the super-block, which make partial last sub-blocks, short super-blocks sharing panels
 * and codes that start inside a byte; spans that start at every column offset of a row. */
static int ks_compare_span(const float *x, const float *imp, size_t n, size_t col0, size_t cols,
                           unsigned bits)
{
    const aq__kernel_table *t[8];
    int nt = ks_tables(t), bad = 0;
    size_t groups = 0, mb = 0;
    for (size_t e = 0, col = col0; e < n;) {
        size_t len = cols - col < AQ__KQ_SUPER ? cols - col : AQ__KQ_SUPER;
        len = len < n - e ? len : n - e;
        groups++;
        mb += aq__kq_meta_bytes(bits, len);
        e += len;
        col = (col + len) % cols;
    }
    const size_t pb = (n * bits + 7) / 8;
    const aq__span s = {n, col0, cols, AQ__KQ_SUPER, bits};
    uint8_t *p[2] = {malloc(pb + 1), malloc(pb + 1)}, *m[2] = {malloc(mb + 1), malloc(mb + 1)};
    float *d[2] = {malloc(groups * 4), malloc(groups * 4)};
    float *dm[2] = {malloc(groups * 4), malloc(groups * 4)};
    aq__kernels_ref.quantize_kquant[AQ_DTYPE_F32](x, imp, &s, p[0], m[0], d[0], dm[0]);
    for (int k = 0; k < nt; k++) {
        memset(p[1], 0xa5, pb + 1);
        memset(m[1], 0xa5, mb + 1);
        t[k]->quantize_kquant[AQ_DTYPE_F32](x, imp, &s, p[1], m[1], d[1], dm[1]);
        if (memcmp(p[0], p[1], pb) != 0 || memcmp(m[0], m[1], mb) != 0 ||
            memcmp(d[0], d[1], groups * 4) != 0 || memcmp(dm[0], dm[1], groups * 4) != 0) {
            printf("span mismatch: %s, n %zu, col0 %zu, cols %zu, %u bits, importance %s\n",
                   t[k]->name, n, col0, cols, bits, imp != NULL ? "yes" : "no");
            bad++;
        }
    }
    for (int i = 0; i < 2; i++) {
        free(p[i]);
        free(m[i]);
        free(d[i]);
        free(dm[i]);
    }
    return bad;
}

TEST(every_row_length)
{
    static const size_t extra[] = {127, 255, 320, 496, 500, 511, 513, 527, 1000, 1100, 1535};
    const size_t nlen = 100 + sizeof extra / sizeof extra[0];
    float *x = malloc(6 * 1600 * 4), *w = malloc(6 * 1600 * 4);
    uint64_t seed = 5;
    for (size_t li = 0; li < nlen; li++) {
        const size_t cols = li < 100 ? li + 1 : extra[li - 100], rows = cols < 100 ? 6 : 3;
        const size_t n = rows * cols;
        ks_fill(x, n, 700 + li, -1);
        for (size_t i = 0; i < n; i++) {
            w[i] = aq_test_rand_uniform(&seed) < 0.1 ? 0.0f : (float)aq_test_rand_uniform(&seed);
        }
        for (unsigned b = 2; b <= 8; b *= 2) {
            CHECK(ks_compare_span(x, NULL, n, 0, cols, b) == 0);
            CHECK(ks_compare_span(x, w, n, 0, cols, b) == 0);
        }
    }
    free(x);
    free(w);
}

TEST(every_span_offset)
{
    static const size_t lens[] = {37, 100, 600};
    float *x = malloc(4 * 600 * 4), *w = malloc(4 * 600 * 4);
    uint64_t seed = 6;
    for (size_t li = 0; li < 3; li++) {
        const size_t cols = lens[li];
        ks_fill(x, 4 * cols, 800 + li, -1);
        for (size_t i = 0; i < 4 * cols; i++) {
            w[i] = (float)aq_test_rand_uniform(&seed);
        }
        for (size_t col0 = 0; col0 < cols; col0 += cols < 100 ? 1 : 7) {
            const size_t n = 3 * cols - col0 + col0 % 5; /* ends mid-row too */
            for (unsigned b = 2; b <= 8; b *= 2) {
                CHECK(ks_compare_span(x, NULL, n, col0, cols, b) == 0);
                CHECK(ks_compare_span(x, w, n, col0, cols, b) == 0);
            }
        }
    }
    free(x);
    free(w);
}

/* ---- dequantize: every table's dequantize_kquant against the reference, bit for bit ---- */

/* d and dmin that reach every float32 case of a * q - b (bit patterns): zeros of both signs,
 * subnormals, the extremes of the range, infinities, and NaNs with and without a payload
 * (quiet and signalling), whose float16 and bfloat16 forms the conversions must match. */
static const uint32_t kd_params[] = {
    0x00000000u, 0x80000000u, 0x00000001u, 0x80400000u, 0x00800000u, 0x3a83126fu,
    0xc0200000u, 0x3c4985f0u, 0x7149f2cau, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u,
    0xff800000u, 0x7fc00000u, 0xffc0beefu, 0x7fa12345u, 0x71800000u, 0x40e00000u,
};

static float kd_param(uint64_t *seed)
{
    uint32_t u = kd_params[aq_test_rand_u64(seed) % (sizeof kd_params / sizeof kd_params[0])];
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Dequantizes one span (elements [e0, e0 + n) of a tensor of rows of cols, whose super-block
 * g0 and meta byte m0 it starts at) with fn into out (n + 64 elements of out_dtype, filled
 * with 0xa5 first, so writes past the span show). */
static void kd_run(aq__dequantize_kquant_fn fn, const uint8_t *packed, const uint8_t *meta,
                   const float *d, const float *dmin, size_t e0, size_t n, size_t cols,
                   unsigned bits, size_t elem, uint8_t *out)
{
    memset(out, 0xa5, (n + 64) * elem);
    aq__span s = {n, e0 % cols, cols, AQ__KQ_SUPER, bits};
    fn(packed + e0 * bits / 8, meta, d, dmin, &s, out);
}

/* Every table against the reference on random codes and sub-block parameters, super-block
 * parameters from kd_params (adversarial) or from a quantization, for the whole tensor and
 * for the span that starts at its second super-block; returns the mismatches. */
static int kd_compare(size_t rows, size_t cols, unsigned bits, uint64_t seed, bool adversarial)
{
    const aq__kernel_table *t[8];
    int nt = ks_tables(t), bad = 0;
    const size_t n = rows * cols, gpr = (cols + AQ__KQ_SUPER - 1) / AQ__KQ_SUPER;
    const size_t groups = rows * gpr;
    ks_out q;
    float *x = malloc(n * 4);
    ks_fill(x, n, seed, -1);
    ks_run(aq__kernels_ref.quantize_kquant[AQ_DTYPE_F32], x, NULL, rows, cols, bits, &q);
    free(x);
    if (adversarial) {
        /* Any bits are codes and sub-block parameters the kernel must read as written. */
        const size_t pb = (n * bits + 7) / 8, mb = ks_meta_bytes(rows, cols, bits);
        for (size_t i = 0; i < pb; i++) {
            q.packed[i] = (uint8_t)aq_test_rand_u64(&seed);
        }
        for (size_t i = 0; i < mb; i++) {
            q.meta[i] = (uint8_t)aq_test_rand_u64(&seed);
        }
        for (size_t g = 0; g < groups; g++) {
            q.d[g] = kd_param(&seed);
            q.dmin[g] = kd_param(&seed);
        }
    }
    /* The whole tensor, and (when it has one) the span from the second super-block of the
     * first row to the end, as the driver cuts spans at super-block boundaries. */
    size_t starts[2] = {0, AQ__KQ_SUPER};
    int nstarts = cols > AQ__KQ_SUPER ? 2 : 1;
    for (int dt = AQ_DTYPE_F32; dt <= AQ_DTYPE_BF16; dt++) {
        const size_t elem = dt == AQ_DTYPE_F32 ? 4 : 2;
        uint8_t *r = malloc((n + 64) * elem), *o = malloc((n + 64) * elem);
        for (int si = 0; si < nstarts; si++) {
            const size_t e0 = starts[si], g0 = e0 / AQ__KQ_SUPER;
            const uint8_t *meta = q.meta + (e0 == 0 ? 0 : aq__kq_meta_bytes(bits, AQ__KQ_SUPER));
            kd_run(aq__kernels_ref.dequantize_kquant[dt], q.packed, meta, q.d + g0, q.dmin + g0, e0,
                   n - e0, cols, bits, elem, r);
            for (int k = 0; k < nt; k++) {
                if (t[k]->dequantize_kquant[dt] == NULL) {
                    continue;
                }
                kd_run(t[k]->dequantize_kquant[dt], q.packed, meta, q.d + g0, q.dmin + g0, e0,
                       n - e0, cols, bits, elem, o);
                if (memcmp(r, o, (n - e0 + 64) * elem) != 0) {
                    size_t i = 0;
                    while (memcmp(r + i * elem, o + i * elem, elem) == 0) {
                        i++;
                    }
                    printf("dequantize mismatch: %s, %s, %zu x %zu from %zu, %u bits, %s, "
                           "element %zu\n",
                           t[k]->name, aq_dtype_name((aq_dtype)dt), rows, cols, e0, bits,
                           adversarial ? "adversarial" : "quantized", e0 + i);
                    bad++;
                }
            }
        }
        free(r);
        free(o);
    }
    ks_free(&q);
    return bad;
}

TEST(dequantize_every_table)
{
    const aq__kernel_table *t[8];
    int nt = ks_tables(t), with = 0;
    for (int k = 0; k < nt; k++) {
        with += t[k]->dequantize_kquant[AQ_DTYPE_F32] != NULL;
    }
    printf("%d SIMD table(s) with a kquant dequantize kernel\n", with);
    for (size_t sh = 0; sh < sizeof ks_shapes / sizeof ks_shapes[0]; sh++) {
        for (unsigned b = 2; b <= 8; b *= 2) {
            CHECK(kd_compare(ks_shapes[sh][0], ks_shapes[sh][1], b, 500 + sh, false) == 0);
            CHECK(kd_compare(ks_shapes[sh][0], ks_shapes[sh][1], b, 700 + sh, true) == 0);
        }
    }
    /* Short tensors: one partial super-block, a partial last sub-block, odd lengths. */
    static const size_t shorts[] = {1, 3, 5, 15, 17, 31, 33, 100, 511, 1023};
    for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++) {
        for (unsigned b = 2; b <= 8; b *= 2) {
            CHECK(kd_compare(1, shorts[i], b, 900 + i, true) == 0);
            CHECK(kd_compare(3, shorts[i], b, 950 + i, true) == 0);
        }
    }
}

AQ_TEST_MAIN(AQ_CASE(f32_every_mode), AQ_CASE(f32_importance), AQ_CASE(every_row_length),
             AQ_CASE(every_span_offset), AQ_CASE(search_every_mode), AQ_CASE(other_dtypes),
             AQ_CASE(dequantize_every_table))
