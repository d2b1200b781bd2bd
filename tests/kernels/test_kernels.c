/*
 * Every SIMD kernel table this build has, compared for equality with the reference kernels:
 * packed bytes, scales, zero points, the non-finite verdict and index, and dequantized output
 * in every output dtype, on random and adversarial inputs, every bit width, group size, input
 * dtype, span length 1..1025, and unaligned pointers. A table the CPU cannot run is skipped
 * (and says so); the test still checks the others.
 */
#include "aq_test.h"
#include "kernels.h"
#include "simd_tables.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#define KT_MAX_N 20000
#define KT_GUARD 64
#define KT_FILL 0xa5

static const unsigned kt_bits[] = {2, 4, 8};
static const size_t kt_groups[] = {8, 9, 16, 24, 33, 64, 100, 128, 256, AQ_GROUP_SIZE_ROW};
#define KT_NGROUPS (sizeof kt_groups / sizeof kt_groups[0])

/* The SIMD tables this CPU runs; prints the ones it skips. */
static size_t kt_tables(const aq__kernel_table **out)
{
    size_t m = aq_test_simd_tables(out, false);
    if (m == 0) {
        printf("no SIMD kernel table runs on this CPU: only the reference is tested\n");
    }
    return m;
}

enum { KT_NORMAL, KT_CONST, KT_TIES, KT_DENORMAL, KT_HUGE, KT_ZEROS, KT_SMALLINT, KT_MODES };

/* Input values of one mode, as float32 (f64 gets extra digits below). */
static float kt_value(int mode, size_t i, size_t g, uint64_t *seed)
{
    double u = aq_test_rand_uniform(seed);
    switch (mode) {
    case KT_CONST: {
        /* Constant within each run of g (the groups of a single-row span starting at 0),
         * with the occasional odd one out so that runs of other group sizes vary. */
        static const float consts[] = {0.0f, -0.0f, 1.5f, -3.25f, 0x1p-140f, -FLT_MAX, 7.0f};
        return consts[(i / (g < 1025 ? g : 1025)) % 7];
    }
    case KT_TIES:
        /* Integers and halves between 0 and 15 (or 255): with lo = 0 and hi = qmax the scale
         * is 1 and every .5 is a tie to round to even. */
        return (float)(aq_test_rand_u64(seed) % 32) * 0.5f;
    case KT_DENORMAL:
        return (float)((u - 0.5) * 0x1p-126) * (i % 3 == 0 ? 1.0f : 0x1p-10f);
    case KT_HUGE: {
        static const float huge[] = {FLT_MAX, -FLT_MAX, 3e38f, -1e38f, 1.0f, 0.0f};
        return i % 4 == 0 ? huge[aq_test_rand_u64(seed) % 6] : (float)((u - 0.5) * 6e38);
    }
    case KT_ZEROS: {
        static const float z[] = {0.0f, -0.0f, 0.0f, -0.0f, 1e-30f, -1e-30f};
        return z[aq_test_rand_u64(seed) % 6];
    }
    case KT_SMALLINT:
        return (float)(aq_test_rand_u64(seed) % 5) - 2.0f;
    default:
        return (float)aq_test_rand_normal(seed);
    }
}

/* Fills n elements of dtype at dst from mode. */
static void kt_fill(void *dst, aq_dtype dtype, size_t n, int mode, size_t g, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        float f = kt_value(mode, i, g, seed);
        switch (dtype) {
        case AQ_DTYPE_F32:
            ((float *)dst)[i] = f;
            break;
        case AQ_DTYPE_F16:
            ((uint16_t *)dst)[i] = aq__f32_to_f16(mode == KT_HUGE ? f * 0x1p-113f : f);
            break;
        case AQ_DTYPE_BF16:
            ((uint16_t *)dst)[i] = aq__f32_to_bf16(f);
            break;
        case AQ_DTYPE_F64: {
            /* Extra bits below float32 precision, including exact float32 ties. */
            double d = (double)f;
            if (mode == KT_NORMAL) {
                d += (double)f * 0x1p-25 * (double)(aq_test_rand_u64(seed) % 3);
            }
            ((double *)dst)[i] = d;
            break;
        }
        case AQ_DTYPE_COUNT:
            break;
        }
    }
}

typedef struct kt_out {
    uint8_t packed[KT_MAX_N + KT_GUARD];
    float scales[KT_MAX_N + KT_GUARD];
    float zps[KT_MAX_N + KT_GUARD];
    unsigned char deq[(KT_MAX_N + KT_GUARD) * 4];
} kt_out;

/* Fills what a span of n elements may touch, plus the guard, with the marker. */
static void kt_clear(kt_out *o, size_t n)
{
    memset(o->packed, KT_FILL, n + KT_GUARD);
    memset(o->scales, KT_FILL, (n + KT_GUARD) * sizeof(float));
    memset(o->zps, KT_FILL, (n + KT_GUARD) * sizeof(float));
}

static bool kt_guard_ok(const void *p, size_t used, size_t total)
{
    const unsigned char *c = p;
    for (size_t i = used; i < total; i++) {
        if (c[i] != KT_FILL) {
            return false;
        }
    }
    return true;
}

static kt_out kt_ref_out, kt_simd_out;

/* One span through the reference and one table: everything must match. Returns false (after
 * reporting) on the first difference. */
static bool kt_compare(const aq__kernel_table *k, const void *src, aq_dtype dtype,
                       const aq__span *s, const char *what)
{
    kt_out *r = &kt_ref_out, *v = &kt_simd_out;
    kt_clear(r, s->n);
    kt_clear(v, s->n);
    bool ok_r = aq__kernels_ref.quantize_affine[dtype](src, s, r->packed, r->scales, r->zps);
    bool ok_v = k->quantize_affine[dtype](src, s, v->packed, v->scales, v->zps);
    const size_t bytes = (s->n * s->bits + 7) / 8, groups = aq__span_groups(s);
    if (ok_r != ok_v) {
        aq_test_fail(__FILE__, __LINE__, "%s: finite verdict ref=%d %s=%d", what, ok_r, k->name,
                     ok_v);
        return false;
    }
    if (!ok_r) {
        size_t at_r = aq__kernels_ref.find_nonfinite[dtype](src, s->n);
        size_t at_v = k->find_nonfinite[dtype](src, s->n);
        if (at_r != at_v || at_r >= s->n) {
            aq_test_fail(__FILE__, __LINE__, "%s: first non-finite ref=%zu %s=%zu", what, at_r,
                         k->name, at_v);
            return false;
        }
        return true;
    }
    if (k->find_nonfinite[dtype](src, s->n) != s->n) {
        aq_test_fail(__FILE__, __LINE__, "%s: %s finds a non-finite value in finite input", what,
                     k->name);
        return false;
    }
    if (!kt_guard_ok(v->packed, bytes, bytes + KT_GUARD) ||
        !kt_guard_ok(v->scales, groups * 4, (groups + KT_GUARD) * 4) ||
        !kt_guard_ok(v->zps, groups * 4, (groups + KT_GUARD) * 4)) {
        aq_test_fail(__FILE__, __LINE__, "%s: %s wrote past its output", what, k->name);
        return false;
    }
    for (size_t i = 0; i < bytes; i++) {
        if (r->packed[i] != v->packed[i]) {
            aq_test_fail(__FILE__, __LINE__, "%s: packed byte %zu ref=0x%02x %s=0x%02x", what, i,
                         r->packed[i], k->name, v->packed[i]);
            return false;
        }
    }
    if (memcmp(r->scales, v->scales, groups * 4) != 0 || memcmp(r->zps, v->zps, groups * 4) != 0) {
        for (size_t i = 0; i < groups; i++) {
            if (aq__f32_bits(r->scales[i]) != aq__f32_bits(v->scales[i]) ||
                aq__f32_bits(r->zps[i]) != aq__f32_bits(v->zps[i])) {
                aq_test_fail(__FILE__, __LINE__,
                             "%s: group %zu scale ref=%a %s=%a, zero point ref=%a %s=%a", what, i,
                             (double)r->scales[i], k->name, (double)v->scales[i], (double)r->zps[i],
                             k->name, (double)v->zps[i]);
                return false;
            }
        }
    }
    /* Dequantize the reference's codes in every output dtype. */
    for (int od = 0; od < 3; od++) {
        size_t es = od == AQ_DTYPE_F32 ? 4 : 2;
        memset(r->deq, KT_FILL, (s->n + KT_GUARD) * es);
        memset(v->deq, KT_FILL, (s->n + KT_GUARD) * es);
        aq__kernels_ref.dequantize_affine[od](r->packed, r->scales, r->zps, s, r->deq);
        k->dequantize_affine[od](r->packed, r->scales, r->zps, s, v->deq);
        if (!kt_guard_ok(v->deq, s->n * es, (s->n + KT_GUARD) * es)) {
            aq_test_fail(__FILE__, __LINE__, "%s: %s dequantize (%s) wrote past its output", what,
                         k->name, aq_dtype_name((aq_dtype)od));
            return false;
        }
        if (memcmp(r->deq, v->deq, s->n * es) != 0) {
            for (size_t i = 0; i < s->n * es; i += es) {
                if (memcmp(r->deq + i, v->deq + i, es) != 0) {
                    aq_test_fail(__FILE__, __LINE__, "%s: dequantized (%s) element %zu differs",
                                 what, aq_dtype_name((aq_dtype)od), i / es);
                    return false;
                }
            }
        }
    }
    return true;
}

/* Input buffer with room for an offset of up to 3 elements, so pointers are unaligned to the
 * vector size. */
static double kt_src_store[KT_MAX_N + 8];

static void kt_sweep(aq_dtype dtype, int mode_lo, int mode_hi)
{
    const aq__kernel_table *tables[8];
    size_t nt = kt_tables(tables);
    const size_t es = aq_dtype_size(dtype);
    uint64_t seed = 12345 + (uint64_t)dtype;
    char what[160];
    size_t spans = 0;
    for (size_t t = 0; t < nt; t++) {
        for (int mode = mode_lo; mode < mode_hi; mode++) {
            for (size_t n = 1; n <= 1025; n++) {
                /* Every length for the random mode; a stride through the others keeps the
                 * sanitizer run short while still hitting every tail length modulo 64. */
                if (mode != KT_NORMAL && n > 160 && n % 7 != 0) {
                    continue;
                }
                for (size_t gi = 0; gi < KT_NGROUPS; gi++) {
                    /* Each group size sees every third length: still every tail length
                     * modulo 64 and every span length class, at a third of the time. */
                    if ((n + gi) % 3 != 0) {
                        continue;
                    }
                    for (size_t bi = 0; bi < 3; bi++) {
                        size_t g = kt_groups[gi];
                        size_t off = (n + gi + bi) % 4;
                        void *src = (unsigned char *)kt_src_store + off * es;
                        kt_fill(src, dtype, n, mode, g, &seed);
                        /* Single row starting at column 0, then a span that starts mid-row
                         * (col0 a group boundary) and crosses row ends. */
                        aq__span s1 = {n, 0, n, g, kt_bits[bi]};
                        snprintf(what, sizeof what, "%s %s mode %d n=%zu g=%zu bits=%u row",
                                 tables[t]->name, aq_dtype_name(dtype), mode, n, g, kt_bits[bi]);
                        if (!kt_compare(tables[t], src, dtype, &s1, what)) {
                            return;
                        }
                        size_t cols = g < 1000 ? 3 * g + (n % 5) : 37 + n % 50;
                        size_t col0 = g < 1000 ? g * (n % 3) : 0;
                        aq__span s2 = {n, col0, cols, g, kt_bits[bi]};
                        snprintf(what, sizeof what,
                                 "%s %s mode %d n=%zu g=%zu bits=%u cols=%zu col0=%zu",
                                 tables[t]->name, aq_dtype_name(dtype), mode, n, g, kt_bits[bi],
                                 cols, col0);
                        if (!kt_compare(tables[t], src, dtype, &s2, what)) {
                            return;
                        }
                        spans += 2;
                    }
                }
            }
        }
    }
    printf("%zu spans compared over %zu SIMD table(s)\n", spans, nt);
}

TEST(f32_random)
{
    kt_sweep(AQ_DTYPE_F32, KT_NORMAL, KT_NORMAL + 1);
}

TEST(f32_adversarial)
{
    kt_sweep(AQ_DTYPE_F32, KT_CONST, KT_MODES);
}

TEST(f16_all)
{
    kt_sweep(AQ_DTYPE_F16, KT_NORMAL, KT_MODES);
}

TEST(bf16_all)
{
    kt_sweep(AQ_DTYPE_BF16, KT_NORMAL, KT_MODES);
}

TEST(f64_all)
{
    kt_sweep(AQ_DTYPE_F64, KT_NORMAL, KT_MODES);
}

/* Long spans of whole groups (rows a multiple of the group size): the batched fast paths,
 * several batches in a row (bounded and not), with a non-finite value dropped into a late
 * batch too. */
TEST(long_regular_spans)
{
    const aq__kernel_table *tables[8];
    size_t nt = kt_tables(tables);
    static const size_t lengths[] = {2048, 4096, 8192 + 512, 16384 + 64};
    static const size_t groups[] = {32, 64, 128, 256, 512, 1024};
    char what[160];
    uint64_t seed = 5;
    for (size_t t = 0; t < nt; t++) {
        for (int dt = 0; dt < AQ_DTYPE_COUNT; dt++) {
            const aq_dtype dtype = (aq_dtype)dt;
            for (size_t li = 0; li < 4; li++) {
                for (size_t gi = 0; gi < 6; gi++) {
                    for (size_t bi = 0; bi < 3; bi++) {
                        const size_t n = lengths[li], g = groups[gi];
                        void *src = (unsigned char *)kt_src_store + (gi % 2) * aq_dtype_size(dtype);
                        /* KT_HUGE: groups whose hi - lo overflows float32 need the clamp
                         * that bounded batches skip (kernels_simd.h). */
                        static const int modes[] = {KT_SMALLINT, KT_NORMAL, KT_HUGE};
                        kt_fill(src, dtype, n, modes[(li + gi + bi) % 3], g, &seed);
                        aq__span sp = {n, 0, 4096 / g * g, g, kt_bits[bi]};
                        snprintf(what, sizeof what, "%s %s n=%zu g=%zu bits=%u long",
                                 tables[t]->name, aq_dtype_name(dtype), n, g, kt_bits[bi]);
                        if (!kt_compare(tables[t], src, dtype, &sp, what)) {
                            return;
                        }
                        /* A NaN late in the span. */
                        size_t at = n - 1 - (size_t)(aq_test_rand_u64(&seed) % 700);
                        switch (dtype) {
                        case AQ_DTYPE_F32:
                            ((float *)src)[at] = NAN;
                            break;
                        case AQ_DTYPE_F16:
                        case AQ_DTYPE_BF16:
                            ((uint16_t *)src)[at] = 0x7fffu;
                            break;
                        case AQ_DTYPE_F64:
                            ((double *)src)[at] = 1e300;
                            break;
                        case AQ_DTYPE_COUNT:
                            break;
                        }
                        if (!kt_compare(tables[t], src, dtype, &sp, what)) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/* NaN, +Inf, -Inf (and, for float64, a value beyond the float32 range) at every position of
 * spans of a few groups: every table must say "not finite" and find the same first index. */
TEST(nonfinite_every_position)
{
    const aq__kernel_table *tables[8];
    size_t nt = kt_tables(tables);
    char what[160];
    for (size_t t = 0; t < nt; t++) {
        for (int dt = 0; dt < AQ_DTYPE_COUNT; dt++) {
            const aq_dtype dtype = (aq_dtype)dt;
            const size_t es = aq_dtype_size(dtype);
            for (size_t n = 1; n <= 80; n += (n < 40 ? 1 : 13)) {
                for (size_t gi = 0; gi < 6; gi++) {
                    for (int kind = 0; kind < 4; kind++) {
                        if (kind == 3 && dtype != AQ_DTYPE_F64) {
                            continue;
                        }
                        for (size_t pos = 0; pos < n; pos++) {
                            uint64_t seed = pos;
                            void *src = (unsigned char *)kt_src_store + (pos % 3) * es;
                            kt_fill(src, dtype, n, KT_NORMAL, 8, &seed);
                            float bad = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
                            switch (dtype) {
                            case AQ_DTYPE_F32:
                                ((float *)src)[pos] = bad;
                                break;
                            case AQ_DTYPE_F16:
                                ((uint16_t *)src)[pos] = aq__f32_to_f16(bad);
                                break;
                            case AQ_DTYPE_BF16:
                                ((uint16_t *)src)[pos] = aq__f32_to_bf16(bad);
                                break;
                            case AQ_DTYPE_F64:
                                ((double *)src)[pos] = kind == 3 ? -1e39 : (double)bad;
                                break;
                            case AQ_DTYPE_COUNT:
                                break;
                            }
                            aq__span s = {n, 0, n, kt_groups[gi], 4};
                            snprintf(what, sizeof what, "%s %s n=%zu g=%zu kind=%d pos=%zu",
                                     tables[t]->name, aq_dtype_name(dtype), n, kt_groups[gi], kind,
                                     pos);
                            if (!kt_compare(tables[t], src, dtype, &s, what)) {
                                return;
                            }
                            CHECK_MSG(
                                !aq__kernels_ref.quantize_affine[dtype](
                                    src, &s, kt_ref_out.packed, kt_ref_out.scales, kt_ref_out.zps),
                                "%s: reference accepted a non-finite input", what);
                        }
                    }
                }
            }
        }
    }
}

/* Dequantize alone, with scales and zero points quantize would not produce: huge scales that
 * overflow float16, tiny ones that give subnormals, float16 and bfloat16 rounding ties. */
TEST(dequantize_adversarial_params)
{
    const aq__kernel_table *tables[8];
    size_t nt = kt_tables(tables);
    static uint8_t packed[KT_MAX_N];
    static float scales[KT_MAX_N], zps[KT_MAX_N];
    uint64_t seed = 99;
    char what[128];
    for (size_t t = 0; t < nt; t++) {
        for (size_t n = 1; n <= 1025; n += 3) {
            for (size_t bi = 0; bi < 3; bi++) {
                size_t g = kt_groups[n % KT_NGROUPS];
                aq__span s = {n, 0, n, g, kt_bits[bi]};
                size_t groups = aq__span_groups(&s);
                for (size_t i = 0; i < (n * kt_bits[bi] + 7) / 8; i++) {
                    packed[i] = (uint8_t)aq_test_rand_u64(&seed);
                }
                for (size_t i = 0; i < groups; i++) {
                    static const float sc[] = {1.0f,     1e30f,  3e38f, 1e-40f,
                                               0x1p-24f, 257.0f, 0.1f,  65504.0f / 255.0f};
                    scales[i] = sc[aq_test_rand_u64(&seed) % 8] *
                                (float)(1.0 + aq_test_rand_uniform(&seed) * 0x1p-10);
                    zps[i] = (float)((aq_test_rand_uniform(&seed) - 0.5) * 600.0);
                }
                snprintf(what, sizeof what, "%s n=%zu g=%zu bits=%u", tables[t]->name, n, g,
                         kt_bits[bi]);
                for (int od = 0; od < 3; od++) {
                    memset(kt_ref_out.deq, KT_FILL, (n + KT_GUARD) * 4);
                    memset(kt_simd_out.deq, KT_FILL, (n + KT_GUARD) * 4);
                    aq__kernels_ref.dequantize_affine[od](packed, scales, zps, &s, kt_ref_out.deq);
                    tables[t]->dequantize_affine[od](packed, scales, zps, &s, kt_simd_out.deq);
                    CHECK_MSG(memcmp(kt_ref_out.deq, kt_simd_out.deq, (n + KT_GUARD) * 4) == 0,
                              "%s: dequantized %s differs (or wrote past the end)", what,
                              aq_dtype_name((aq_dtype)od));
                }
            }
        }
    }
}

/* Dispatch: the default is the best table this CPU runs; AQ_KERNELS forces any table the CPU
 * runs; an unknown or unsupported name is an error. */
TEST(dispatch)
{
    const aq__kernel_table *all[8];
    bool ok[8];
    size_t n = aq__kernels_list(all, ok, 8);
    CHECK(n >= 1 && all[n - 1] == &aq__kernels_ref && ok[n - 1]);
    aq_error err;
    aq_ctx *ctx = NULL;
    unsetenv("AQ_KERNELS");
    CHECK_OK(aq_ctx_create(&ctx, &err));
    size_t best = 0;
    while (!ok[best]) {
        best++;
    }
    CHECK_MSG(strcmp(aq_ctx_kernels(ctx), all[best]->name) == 0, "default %s, best %s",
              aq_ctx_kernels(ctx), all[best]->name);
    aq_ctx_free(ctx);
    for (size_t i = 0; i < n; i++) {
        setenv("AQ_KERNELS", all[i]->name, 1);
        if (ok[i]) {
            CHECK_OK(aq_ctx_create(&ctx, &err));
            CHECK(strcmp(aq_ctx_kernels(ctx), all[i]->name) == 0);
            aq_ctx_free(ctx);
        } else {
            CHECK_FAILS(aq_ctx_create(&ctx, &err), AQ_UNSUPPORTED, "lacks the instructions");
            printf("AQ_KERNELS=%s refused: %s\n", all[i]->name, err.message);
        }
    }
    setenv("AQ_KERNELS", "sse9", 1);
    CHECK_FAILS(aq_ctx_create(&ctx, &err), AQ_UNSUPPORTED, "no such kernel set");
    unsetenv("AQ_KERNELS");
}

/* Error statistics (model files' sqnr, cosine, max error, and the floors and budgets decided
 * from them): every table gives the reference's sums bit for bit (one summation order,
 * kernels_stats.h), and the reference agrees with a plain element-by-element sum in double;
 * lengths around the lane, vector and staging sizes, unaligned pointers, sums added to what
 * acc already holds. */
TEST(error_stats_match_reference)
{
    const aq__kernel_table *tables[8];
    size_t nt = kt_tables(tables);
    static const size_t lens[] = {0,   1,   7,   8,   9,   15,  16,   17,  255,
                                  256, 257, 263, 511, 512, 513, 1000, 4099};
    static const aq_dtype dtypes[] = {AQ_DTYPE_F32, AQ_DTYPE_F16, AQ_DTYPE_BF16, AQ_DTYPE_F64};
    static float y[4099 + 1];
    uint64_t seed = 77;
    for (size_t d = 0; d < 4; d++) {
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const size_t n = lens[li];
            char *src = (char *)kt_src_store + 8; /* unaligned for the vector loads */
            kt_fill(src, dtypes[d], n, KT_NORMAL, 64, &seed);
            float *yy = y + 1;
            double plain[5] = {0.5, 0.25, 0.125, 0.0625, 0.0};
            for (size_t i = 0; i < n; i++) {
                double x = d == 3 ? ((double *)(void *)src)[i] : 0.0;
                if (d == 0) {
                    x = (double)((float *)(void *)src)[i];
                } else if (d == 1) {
                    x = (double)aq__f16_to_f32(((uint16_t *)(void *)src)[i]);
                } else if (d == 2) {
                    x = (double)aq__bf16_to_f32(((uint16_t *)(void *)src)[i]);
                }
                yy[i] = (float)(x + 0.01 * (aq_test_rand_uniform(&seed) - 0.5));
                double v = (double)yy[i], e = x - v;
                plain[0] += x * x;
                plain[1] += e * e;
                plain[2] += x * v;
                plain[3] += v * v;
                plain[4] = fabs(e) > plain[4] ? fabs(e) : plain[4];
            }
            double want[5] = {0.5, 0.25, 0.125, 0.0625, 0.0};
            CHECK(aq__kernels_ref.error_stats[dtypes[d]] != NULL);
            aq__kernels_ref.error_stats[dtypes[d]](src, yy, n, want);
            for (size_t k = 0; k < 5; k++) {
                if (!(fabs(want[k] - plain[k]) <= 1e-12 * fabs(plain[k]))) {
                    aq_test_fail(__FILE__, __LINE__, "ref dtype %zu n %zu stat %zu: %.17g vs %.17g",
                                 d, n, k, want[k], plain[k]);
                }
            }
            if (n > 0) {
                CHECK(want[4] > 0.0 && want[4] == plain[4]);
            }
            for (size_t t = 0; t < nt; t++) {
                aq__error_stats_fn fn = tables[t]->error_stats[dtypes[d]];
                if (fn == NULL) {
                    CHECK(d == 3); /* float64: the driver takes the reference's entry */
                    continue;
                }
                double got[5] = {0.5, 0.25, 0.125, 0.0625, 0.0};
                fn(src, yy, n, got);
                for (size_t k = 0; k < 5; k++) {
                    if (memcmp(&got[k], &want[k], sizeof got[k]) != 0) {
                        aq_test_fail(__FILE__, __LINE__,
                                     "%s dtype %zu n %zu stat %zu: %.17g vs %.17g", tables[t]->name,
                                     d, n, k, got[k], want[k]);
                    }
                }
            }
        }
    }
}

AQ_TEST_MAIN(AQ_CASE(f32_random), AQ_CASE(f32_adversarial), AQ_CASE(f16_all), AQ_CASE(bf16_all),
             AQ_CASE(f64_all), AQ_CASE(long_regular_spans), AQ_CASE(nonfinite_every_position),
             AQ_CASE(dequantize_adversarial_params), AQ_CASE(dispatch),
             AQ_CASE(error_stats_match_reference))
