/*
 * Dequantize of every SIMD kernel table against the reference, bit for bit and byte for byte
 * around the output, aimed at what dequantizing by table (2 and 4 bits to float16 and
 * bfloat16, kernels_simd.h) and the arithmetic paths beside it must get right:
 *   - group pieces of any length and offset: tails of every length, groups that cross the
 *     kernels' staging chunks of 4096 codes, rows that are not a multiple of the group size,
 *     spans that start mid-row, odd group sizes (1, 33, 96, 1000, 4097, ...), unaligned
 *     packed and output pointers;
 *   - every rounding case of bfloat16 (all 65,536 low halves below a few high halves: ties to
 *     even both ways, carries into the exponent, overflow to infinity, subnormals);
 *   - scales and zero points that quantize never writes but a file can carry: NaN (quiet,
 *     signalling, with payloads, negative), +-Inf, huge values whose products overflow,
 *     subnormal and zero scales, zero points equal to a code (so 0 * Inf is met).
 * A table the CPU cannot run is skipped (and says so).
 */
#include "aq_test.h"
#include "kernels.h"
#include "simd_tables.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#define DQ_MAX 70000
#define DQ_GUARD 64
#define DQ_FILL 0xa5

static uint8_t dq_packed_store[DQ_MAX + 16];
static float dq_scales[DQ_MAX], dq_zps[DQ_MAX];
static unsigned char dq_ref[(DQ_MAX + 2 * DQ_GUARD) * 4], dq_simd[(DQ_MAX + 2 * DQ_GUARD) * 4];

static const unsigned dq_bits[] = {2, 4, 8};

static size_t dq_tables(const aq__kernel_table **out)
{
    size_t m = aq_test_simd_tables(out, false);
    if (m == 0) {
        printf("no SIMD kernel table runs on this CPU: only the reference is tested\n");
    }
    return m;
}

/* One span dequantized into every output dtype by the reference and by table k, each output
 * starting dst_off elements into a buffer filled with a marker: the outputs must be equal and
 * the marker untouched before and after. Returns false after reporting the first difference. */
static bool dq_compare_in(const aq__kernel_table *k, const uint8_t *packed, const aq__span *s,
                          size_t dst_off, const char *what);

/* The group of element i of span s. */
static size_t dq_group_of(const aq__span *s, size_t i)
{
    size_t col = s->col0, group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        if (i < start + len) {
            return group;
        }
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
    return group;
}

/* Whether bits u of an output of dtype od are a NaN. */
static bool dq_is_nan(uint32_t u, int od)
{
    switch (od) {
    case AQ_DTYPE_F32:
        return (u & 0x7fffffffu) > 0x7f800000u;
    case AQ_DTYPE_F16:
        return (u & 0x7fffu) > 0x7c00u;
    default:
        return (u & 0x7fffu) > 0x7f80u;
    }
}

/* The packed codes are copied to a heap block of exactly their size first, so that a kernel
 * reading past them is caught by AddressSanitizer (8-bit codes are read in place). */
static bool dq_compare(const aq__kernel_table *k, const uint8_t *packed, const aq__span *s,
                       size_t dst_off, const char *what)
{
    const size_t bytes = (s->n * s->bits + 7) / 8;
    uint8_t *exact = malloc(bytes);
    if (exact == NULL) {
        aq_test_fail(__FILE__, __LINE__, "%s: out of memory", what);
        return false;
    }
    memcpy(exact, packed, bytes);
    bool ok = dq_compare_in(k, exact, s, dst_off, what);
    free(exact);
    return ok;
}

static bool dq_compare_in(const aq__kernel_table *k, const uint8_t *packed, const aq__span *s,
                          size_t dst_off, const char *what)
{
    for (int od = 0; od < 3; od++) {
        const size_t es = od == AQ_DTYPE_F32 ? 4 : 2;
        const size_t total = (s->n + 2 * DQ_GUARD) * es, at = (DQ_GUARD + dst_off) * es;
        memset(dq_ref, DQ_FILL, total);
        memset(dq_simd, DQ_FILL, total);
        aq__kernels_ref.dequantize_affine[od](packed, dq_scales, dq_zps, s, dq_ref + at);
        k->dequantize_affine[od](packed, dq_scales, dq_zps, s, dq_simd + at);
        if (memcmp(dq_ref, dq_simd, total) == 0) {
            continue;
        }
        for (size_t b = 0; b < total; b++) {
            if (dq_ref[b] == dq_simd[b]) {
                continue;
            }
            if (b < at || b >= at + s->n * es) {
                aq_test_fail(__FILE__, __LINE__, "%s: %s dequantize (%s) wrote byte %zd outside",
                             what, k->name, aq_dtype_name((aq_dtype)od),
                             (ptrdiff_t)b - (ptrdiff_t)at);
                return false;
            }
            const size_t i = (b - at) / es;
            uint32_t r = 0, v = 0;
            memcpy(&r, dq_ref + at + i * es, es);
            memcpy(&v, dq_simd + at + i * es, es);
            const size_t grp = dq_group_of(s, i);
            if (dq_is_nan(r, od) && dq_is_nan(v, od) && isnan(dq_scales[grp]) &&
                isnan(dq_zps[grp])) {
                /* NaN - NaN times NaN: which payload survives is unspecified (IEEE 754), and
                 * the compiler may commute the reference's multiplication. */
                b = at + (i + 1) * es - 1;
                continue;
            }
            aq_test_fail(__FILE__, __LINE__,
                         "%s: %s dequantize (%s) element %zu (group %zu, scale 0x%08x, zero "
                         "point 0x%08x): ref 0x%x, got 0x%x",
                         what, k->name, aq_dtype_name((aq_dtype)od), i, grp,
                         (unsigned)aq__f32_bits(dq_scales[grp]),
                         (unsigned)aq__f32_bits(dq_zps[grp]), (unsigned)r, (unsigned)v);
            return false;
        }
    }
    return true;
}

static float dq_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Random packed codes: n codes of `bits` at p (whole bytes). */
static void dq_fill_codes(uint8_t *p, size_t n, unsigned bits, uint64_t *seed)
{
    for (size_t i = 0; i < (n * bits + 7) / 8; i++) {
        p[i] = (uint8_t)aq_test_rand_u64(seed);
    }
}

/* Ordinary parameters: what quantize writes for data of standard deviation about 1. */
static void dq_fill_plain(size_t groups, unsigned bits, uint64_t *seed)
{
    const float qmax = (float)((1u << bits) - 1u);
    for (size_t i = 0; i < groups; i++) {
        dq_scales[i] = (float)(0.5 + aq_test_rand_uniform(seed)) * 6.0f / qmax;
        dq_zps[i] = (float)(aq_test_rand_uniform(seed) * (double)qmax);
    }
}

/* Parameters a file can carry, quantize or not. */
static void dq_fill_hostile(size_t groups, uint64_t *seed)
{
    static const uint32_t scale_bits[] = {0x7fc00000u, 0x7fc00001u, 0x7fffffffu, 0xffc12345u,
                                          0x7f800001u, 0xff800001u, /* NaN */
                                          0x7f800000u, 0xff800000u, /* Inf */
                                          0x7f7fffffu, 0x7f000000u, 0x00000000u, 0x80000000u,
                                          0x00000001u, 0x00400000u, /* huge,
                                                                       0, sub */
                                          0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u,
                                          0x477fe000u, 0x477ff000u, /* ties,
                                                       f16 limits */
                                          0x33800000u, 0x387fc000u, 0x3f800000u, 0xbf800000u,
                                          0x3dcccccdu};
    static const uint32_t zp_bits[] = {0x00000000u, 0x80000000u, 0x3f800000u, 0x40400000u,
                                       0x41700000u, 0x437f0000u, 0x3f000000u, 0x40100000u,
                                       0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u,
                                       0x7fc00000u, 0x7fa00001u, 0xffffffffu, 0x00000001u};
    const size_t ns = sizeof scale_bits / sizeof scale_bits[0];
    const size_t nz = sizeof zp_bits / sizeof zp_bits[0];
    for (size_t i = 0; i < groups; i++) {
        uint64_t r = aq_test_rand_u64(seed);
        dq_scales[i] =
            r % 4 == 0 ? (float)aq_test_rand_normal(seed) : dq_from_bits(scale_bits[(r >> 2) % ns]);
        dq_zps[i] = (r >> 16) % 4 == 0 ? (float)((aq_test_rand_uniform(seed) - 0.5) * 40.0)
                                       : dq_from_bits(zp_bits[(r >> 18) % nz]);
    }
}

/* Group pieces of every kind: each group size with spans of assorted lengths, single rows
 * and multi-row spans starting mid-row, packed and output pointers at assorted offsets. */
static void dq_geometry_sweep(bool hostile)
{
    const aq__kernel_table *tables[8];
    const size_t nt = dq_tables(tables);
    static const size_t groups[] = {
        1,  2,  3,   7,   16,   31,   32,   33,   63,   64,
        65, 96, 100, 128, 1000, 4095, 4096, 4097, 5000, AQ_GROUP_SIZE_ROW};
    static const size_t lengths[] = {1,    2,    3,    5,    15,   16,   17,   31,    32,   33,
                                     47,   63,   64,   65,   95,   96,   97,   127,   129,  200,
                                     1000, 4095, 4096, 4097, 4160, 8191, 8193, 12289, 20000};
    const size_t ng = sizeof groups / sizeof groups[0];
    const size_t nl = sizeof lengths / sizeof lengths[0];
    uint64_t seed = hostile ? 7 : 3;
    char what[200];
    size_t spans = 0;
    for (size_t t = 0; t < nt; t++) {
        for (size_t gi = 0; gi < ng; gi++) {
            for (size_t li = 0; li < nl; li++) {
                for (size_t bi = 0; bi < 3; bi++) {
                    const size_t g = groups[gi], n = lengths[li];
                    const unsigned bits = dq_bits[bi];
                    /* Long spans with small groups cost the most: every other one. */
                    if (n > 4160 && g < 64 && (gi + li + bi) % 2 != 0) {
                        continue;
                    }
                    uint8_t *packed = dq_packed_store + (gi + li) % 4;
                    dq_fill_codes(packed, n, bits, &seed);
                    /* A single row from column 0; a span from the start of the second or
                     * third group of a row that is not a multiple of g (and is crossed);
                     * rows shorter than a group. */
                    const size_t gg = g < 8192 ? g : 8192;
                    const aq__span shapes[3] = {
                        {n, 0, n, g, bits},
                        {n, g < 4096 ? gg * (1 + (n % 2)) : 0, 3 * gg + 1 + n % 7, g, bits},
                        {n, 0, 5 + n % 11, g, bits},
                    };
                    for (size_t si = 0; si < 3; si++) {
                        const aq__span *s = &shapes[si];
                        const size_t ngr = aq__span_groups(s);
                        if (hostile) {
                            dq_fill_hostile(ngr, &seed);
                        } else {
                            dq_fill_plain(ngr, bits, &seed);
                        }
                        const size_t off = (gi + li + si) % 3;
                        snprintf(what, sizeof what,
                                 "n=%zu g=%zu bits=%u cols=%zu col0=%zu packed+%zu dst+%zu%s", n, g,
                                 bits, s->cols, s->col0, (size_t)(packed - dq_packed_store), off,
                                 hostile ? " hostile parameters" : "");
                        if (!dq_compare(tables[t], packed, s, off, what)) {
                            return;
                        }
                        spans++;
                    }
                }
            }
        }
    }
    printf("%zu spans compared in 3 output dtypes over %zu SIMD table(s)\n", spans, nt);
}

TEST(pieces_of_every_length_and_offset)
{
    dq_geometry_sweep(false);
}

TEST(parameters_a_file_can_carry)
{
    dq_geometry_sweep(true);
}

/* Groups of one element each whose scale walks through all 65,536 low halves under a given
 * high half, zero point 0: code 1 gives the scale itself, code 2 twice it, code 3 three
 * times, so every bfloat16 rounding case (below, above and at the tie, with an odd and an
 * even high half) and the float16 ones nearby are met, as are carries into the exponent,
 * overflow to infinity and subnormals. Then the same with groups of 16 and 33 (one scale
 * per group, every code) so the table paths see them too. */
TEST(every_bfloat16_rounding_case)
{
    const aq__kernel_table *tables[8];
    const size_t nt = dq_tables(tables);
    static const uint32_t highs[] = {0x3f80u, 0x3f81u, 0x7f7fu, 0x0000u, 0x8001u, 0x477fu, 0x3880u};
    static const size_t groups[] = {1, 16, 33};
    uint64_t seed = 11;
    char what[160];
    for (size_t t = 0; t < nt; t++) {
        for (size_t hi = 0; hi < sizeof highs / sizeof highs[0]; hi++) {
            for (size_t gi = 0; gi < 3; gi++) {
                for (size_t bi = 0; bi < 3; bi++) {
                    const size_t g = groups[gi];
                    const unsigned bits = dq_bits[bi];
                    const size_t n = 65536 * g < DQ_MAX ? 65536 * g : DQ_MAX / g * g;
                    dq_fill_codes(dq_packed_store, n, bits, &seed);
                    for (size_t k = 0; k < n / g; k++) {
                        /* Low halves in order for groups of 1; spread over them for wider
                         * groups, which fit fewer. */
                        uint32_t lo = g == 1 ? (uint32_t)k : (uint32_t)(k * 65537u / (n / g));
                        dq_scales[k] = dq_from_bits(highs[hi] << 16 | (lo & 0xffffu));
                        dq_zps[k] = 0.0f;
                    }
                    aq__span s = {n, 0, n, g, bits};
                    snprintf(what, sizeof what, "scales 0x%04xXXXX g=%zu bits=%u",
                             (unsigned)highs[hi], g, bits);
                    if (!dq_compare(tables[t], dq_packed_store, &s, 0, what)) {
                        return;
                    }
                }
            }
        }
    }
}

AQ_TEST_MAIN(AQ_CASE(pieces_of_every_length_and_offset), AQ_CASE(parameters_a_file_can_carry),
             AQ_CASE(every_bfloat16_rounding_case))
