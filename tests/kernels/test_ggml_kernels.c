/*
 * ggml block kernels (kernels_ggml.h): every SIMD table's encoders and decoders give the
 * reference's bytes and floats on random and adversarial blocks; structural properties of the
 * encoders (exact zeros and constant blocks where the format can hold them, codes in range,
 * the stored scales finite). Agreement with ggml's own decoder is checked against PyPI's gguf
 * in tests/python/gguf.
 */
#include "aq_test.h"
#include "kernels_ggml.h"
#include "simd_tables.h"

#include <math.h>
#include <stdlib.h>

#define GK_N 4096u /* elements per case: whole blocks of every type */

enum {
    GK_GAUSS,
    GK_OUTLIER,
    GK_ZERO,
    GK_CONST,
    GK_NEGCONST,
    GK_HUGE,
    GK_TINY,
    GK_TIES,
    GK_ONEHOT,
    GK_CASES
};

static void gk_fill(int kind, uint64_t *rng, float *x)
{
    for (size_t i = 0; i < GK_N; i++) {
        double z = aq_test_rand_normal(rng);
        float v = 0.0f;
        switch (kind) {
        case GK_GAUSS:
            v = (float)(0.02 * z);
            break;
        case GK_OUTLIER:
            v = (float)(i % 101 == 0 ? 0.4 * z : 0.02 * z);
            break;
        case GK_ZERO:
            v = 0.0f;
            break;
        case GK_CONST:
            v = 0.375f;
            break;
        case GK_NEGCONST:
            v = -3.0f;
            break;
        case GK_HUGE:
            v = (float)(3e4 * z);
            break;
        case GK_TINY:
            v = (float)(1e-30 * z);
            break;
        case GK_TIES:
            v = (float)(nearbyint(4.0 * z) / 8.0);
            break;
        default:
            v = i % 97 == 0 ? 1.0f : 0.0f;
            break;
        }
        x[i] = v;
    }
}

/* Bit for bit, except that any NaN matches any NaN: random blocks of the types without an
 * encoder hold NaN scales, and which operand's payload a NaN sum keeps depends on the order
 * the compiler gives the commutative operands (it differs between -O0 and -O2). */
static bool gk_same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0 && !(isnan(a[i]) && isnan(b[i]))) {
            return false;
        }
    }
    return true;
}

TEST(simd_tables_match_the_reference)
{
    const aq__kernel_table *tables[8];
    const size_t nt = aq_test_simd_tables(tables, false);
    float *x = malloc(GK_N * sizeof *x), *w = malloc(GK_N * sizeof *w);
    float *y0 = malloc(GK_N * sizeof *y0), *y1 = malloc(GK_N * sizeof *y1);
    uint8_t *b0 = malloc(GK_N * 4), *b1 = malloc(GK_N * 4);
    CHECK(x != NULL && w != NULL && y0 != NULL && y1 != NULL && b0 != NULL && b1 != NULL);
    uint64_t rng = 42;
    for (size_t i = 0; i < GK_N; i++) {
        w[i] = (float)(0.25 + aq_test_rand_uniform(&rng));
    }
    for (size_t ti = 0; ti < aq__ggml_traits_count(); ti++) {
        const aq__ggml_traits *tr = aq__ggml_traits_at(ti);
        const size_t nb = GK_N / tr->block;
        for (int kind = 0; kind < GK_CASES; kind++) {
            gk_fill(kind, &rng, x);
            for (int weighted = 0; weighted < 2; weighted++) {
                const float *imp = weighted ? w : NULL;
                if (tr->encode_ref != NULL) {
                    tr->encode_ref(x, imp, nb, b0);
                } else {
                    for (size_t i = 0; i < nb * tr->bytes; i++) {
                        b0[i] = (uint8_t)aq_test_rand_u64(&rng);
                    }
                }
                tr->decode_ref(b0, nb, y0);
                for (size_t t = 0; t < nt; t++) {
                    const aq__ggml_kernels *gk = tables[t]->ggml;
                    if (gk == NULL) {
                        continue;
                    }
                    if (tr->encode_ref != NULL) {
                        CHECK(gk->encode[tr->type] != NULL);
                        gk->encode[tr->type](x, imp, nb, b1);
                        CHECK_MSG(memcmp(b0, b1, nb * tr->bytes) == 0,
                                  "%s %s case %d weighted %d: bytes differ from the reference",
                                  tables[t]->name, tr->name, kind, weighted);
                    }
                    if (tr->encode_round_ref != NULL) {
                        CHECK(gk->encode_round[tr->type] != NULL);
                        CHECK(tr->encode_round_ref(x, nb, b0 + GK_N * 2) == GK_N);
                        CHECK(gk->encode_round[tr->type](x, nb, b1) == GK_N);
                        CHECK_MSG(memcmp(b0 + GK_N * 2, b1, nb * tr->bytes) == 0,
                                  "%s %s case %d: ggml's rounding differs from the reference",
                                  tables[t]->name, tr->name, kind);
                    }
                    CHECK(gk->decode[tr->type] != NULL);
                    gk->decode[tr->type](b0, nb, y1);
                    CHECK_MSG(gk_same_floats(y0, y1, GK_N),
                              "%s %s case %d: decoded floats differ from the reference",
                              tables[t]->name, tr->name, kind);
                }
            }
        }
    }
    free(x);
    free(w);
    free(y0);
    free(y1);
    free(b0);
    free(b1);
}

/* Block counts that leave a partial group of eight (the SIMD searches run eight blocks or
 * sub-blocks per vector), from an unaligned start, with and without weights, on blocks that
 * mix scales (so that the lanes of one vector take different branches). */
TEST(simd_tables_match_the_reference_on_odd_counts)
{
    const aq__kernel_table *tables[8];
    const size_t nt = aq_test_simd_tables(tables, false);
    float *x = malloc((GK_N + 1) * sizeof *x), *w = malloc((GK_N + 1) * sizeof *w);
    float *y0 = malloc(GK_N * sizeof *y0), *y1 = malloc(GK_N * sizeof *y1);
    uint8_t *b0 = malloc(GK_N * 4), *b1 = malloc(GK_N * 4);
    CHECK(x != NULL && w != NULL && y0 != NULL && y1 != NULL && b0 != NULL && b1 != NULL);
    uint64_t rng = 5;
    for (size_t i = 0; i <= GK_N; i++) {
        const size_t blk = i / 32;
        const double scale = blk % 5 == 0 ? 0.0 : blk % 5 == 1 ? 1e-3 : blk % 5 == 2 ? 40.0 : 0.02;
        x[i] = (float)(scale * aq_test_rand_normal(&rng) + (blk % 7 == 3 ? 0.5 : 0.0));
        w[i] = (float)(blk % 3 == 0 ? 0.0 : aq_test_rand_uniform(&rng));
    }
    static const size_t counts[] = {1, 3, 7, 9, 15};
    for (size_t ti = 0; ti < aq__ggml_traits_count(); ti++) {
        const aq__ggml_traits *tr = aq__ggml_traits_at(ti);
        /* Random bytes: every scale, every code, subnormal, infinite and NaN halves. */
        const size_t nr = GK_N / tr->block - 1;
        for (size_t i = 0; i < nr * tr->bytes; i++) {
            b0[i] = (uint8_t)aq_test_rand_u64(&rng);
        }
        tr->decode_ref(b0, nr, y0);
        for (size_t t = 0; t < nt; t++) {
            if (tables[t]->ggml != NULL) {
                tables[t]->ggml->decode[tr->type](b0, nr, y1);
                CHECK_MSG(gk_same_floats(y0, y1, nr * tr->block),
                          "%s %s: random bytes decode differently from the reference",
                          tables[t]->name, tr->name);
            }
        }
        if (tr->encode_ref == NULL) {
            continue;
        }
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            const size_t nb = tr->block == 1 ? counts[c] * 37 : counts[c];
            for (int weighted = 0; weighted < 2; weighted++) {
                const float *imp = weighted ? w + 1 : NULL;
                tr->encode_ref(x + 1, imp, nb, b0);
                tr->decode_ref(b0, nb, y0);
                for (size_t t = 0; t < nt; t++) {
                    const aq__ggml_kernels *gk = tables[t]->ggml;
                    if (gk == NULL) {
                        continue;
                    }
                    gk->encode[tr->type](x + 1, imp, nb, b1);
                    CHECK_MSG(memcmp(b0, b1, nb * tr->bytes) == 0,
                              "%s %s %zu blocks weighted %d: bytes differ from the reference",
                              tables[t]->name, tr->name, nb, weighted);
                    if (tr->encode_round_ref != NULL) {
                        CHECK(tr->encode_round_ref(x + 1, nb, b0 + GK_N * 2) == nb * 32);
                        CHECK(gk->encode_round[tr->type](x + 1, nb, b1) == nb * 32);
                        CHECK_MSG(memcmp(b0 + GK_N * 2, b1, nb * tr->bytes) == 0,
                                  "%s %s %zu blocks: ggml's rounding differs from the reference",
                                  tables[t]->name, tr->name, nb);
                    }
                    gk->decode[tr->type](b0, nb, y1);
                    CHECK_MSG(gk_same_floats(y0, y1, nb * tr->block),
                              "%s %s %zu blocks: decoded floats differ from the reference",
                              tables[t]->name, tr->name, nb);
                }
            }
        }
    }
    free(x);
    free(w);
    free(y0);
    free(y1);
    free(b0);
    free(b1);
}

TEST(encoders_keep_what_the_format_can_hold)
{
    float *x = malloc(GK_N * sizeof *x), *y = malloc(GK_N * sizeof *y);
    uint8_t *b = malloc(GK_N * 4);
    CHECK(x != NULL && y != NULL && b != NULL);
    uint64_t rng = 7;
    for (size_t ti = 0; ti < aq__ggml_traits_count(); ti++) {
        const aq__ggml_traits *tr = aq__ggml_traits_at(ti);
        if (tr->encode_ref == NULL) {
            continue;
        }
        const size_t nb = GK_N / tr->block;
        for (int kind = 0; kind < GK_CASES; kind++) {
            if (kind == GK_HUGE && tr->type == AQ_GGUF_F16) {
                continue; /* beyond float16's range: the driver refuses it */
            }
            gk_fill(kind, &rng, x);
            tr->encode_ref(x, NULL, nb, b);
            tr->decode_ref(b, nb, y);
            double se = 0.0, ss = 0.0;
            for (size_t i = 0; i < GK_N; i++) {
                CHECK_MSG(isfinite(y[i]), "%s case %d: element %zu decodes to %g", tr->name, kind,
                          i, (double)y[i]);
                se += ((double)x[i] - (double)y[i]) * ((double)x[i] - (double)y[i]);
                ss += (double)x[i] * (double)x[i];
            }
            if (kind == GK_ZERO || (kind == GK_ONEHOT && tr->block == 1)) {
                CHECK_MSG(se == 0.0, "%s case %d: not exact", tr->name, kind);
            }
            /* A block of one value 0.375 (or -3) is held exactly by every symmetric type
             * (d = v / code) and by the affine K types only up to their binary16 scales. */
            if (kind == GK_GAUSS || kind == GK_TIES) {
                CHECK_MSG(se <= 0.2 * ss, "%s case %d: relative error %g", tr->name, kind,
                          sqrt(se / ss));
            }
        }
    }
    free(x);
    free(y);
    free(b);
}

/* ggml's rounding (AQ_PARAM_GGUF_SEARCH 0) on blocks whose bytes follow by hand from ggml's
 * reference quantizers: halves away from zero (Q8_0), the first element of largest magnitude
 * setting the sign of d (Q4_0, Q5_0), the top code clamped, and +-0 blocks (d = -0). Every
 * kernel table gives these bytes. */
TEST(rounding_encoders_follow_ggml)
{
    const aq__kernel_table *tables[8];
    const size_t nt = aq_test_simd_tables(tables, false);
    float x[32];
    uint8_t b[34];
    for (size_t t = 0; t <= nt; t++) {
        const aq__ggml_kernels *gk = t < nt ? tables[t]->ggml : NULL;
        if (t < nt && gk == NULL) {
            continue;
        }
        aq__ggml_round_fn e8 = gk ? gk->encode_round[AQ_GGUF_Q8_0]
                                  : aq__ggml_traits_of(AQ_GGUF_Q8_0)->encode_round_ref;
        aq__ggml_round_fn e4 = gk ? gk->encode_round[AQ_GGUF_Q4_0]
                                  : aq__ggml_traits_of(AQ_GGUF_Q4_0)->encode_round_ref;
        aq__ggml_round_fn e5 = gk ? gk->encode_round[AQ_GGUF_Q5_0]
                                  : aq__ggml_traits_of(AQ_GGUF_Q5_0)->encode_round_ref;
        /* Q8_0: amax 127 gives d = 1 (0x3c00) and codes roundf(x). */
        for (unsigned i = 0; i < 32; i++) {
            x[i] = (float)i - 15.5f; /* -15.5 .. 15.5: every code a half */
        }
        x[31] = 127.0f;
        CHECK(e8(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0x3c);
        for (unsigned i = 0; i < 31; i++) {
            const int want = i < 16 ? (int)i - 16 : (int)i - 15; /* away from zero */
            CHECK_MSG((int8_t)b[2 + i] == want, "Q8_0 element %u: %d, expected %d", i,
                      (int)(int8_t)b[2 + i], want);
        }
        CHECK((int8_t)b[33] == 127);
        /* Q4_0: -8 first, then 8: m = -8, d = 1, codes trunc(x + 8.5) up to 15. */
        memset(x, 0, sizeof x);
        x[0] = -8.0f;
        x[1] = 8.0f;
        x[2] = 0.49f;
        x[16] = 3.0f;
        CHECK(e4(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0x3c);
        CHECK(b[2] == (0 | 11 << 4) && b[3] == (15 | 8 << 4) && b[4] == (8 | 8 << 4));
        /* The other order: m = 8, d = -1 (0xbc00), so 8 -> code 0 and -8 -> 16 -> 15. */
        x[0] = 8.0f;
        x[1] = -8.0f;
        CHECK(e4(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0xbc);
        CHECK(b[2] == (0 | 5 << 4) && b[3] == (15 | 8 << 4) && b[4] == (8 | 8 << 4));
        /* Q5_0: m = -16, d = 1: code trunc(x + 16.5); the fifth bits in qh. */
        memset(x, 0, sizeof x);
        x[0] = -16.0f;
        x[1] = 16.0f;
        x[17] = 4.0f;
        CHECK(e5(x, 1, b) == 32);
        const uint32_t qh =
            (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
        CHECK(b[0] == 0x00 && b[1] == 0x3c);
        CHECK((qh & 1u) == 0 && (qh >> 1 & 1u) == 1 && (qh >> 17 & 1u) == 1 && (qh >> 2 & 1u) == 1);
        CHECK(b[6] == 0 && b[7] == (15 | (20 & 15) << 4));
        /* Blocks of +-0: m stays +0, d = +0 / -8 = -0 (0x8000); Q8_0's d = +0. */
        for (unsigned i = 0; i < 32; i++) {
            x[i] = i % 2 ? -0.0f : 0.0f;
        }
        CHECK(e4(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0x80 && b[2] == 0x88);
        CHECK(e5(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0x80 && b[2] == 0xff && b[5] == 0xff && b[6] == 0);
        CHECK(e8(x, 1, b) == 32);
        CHECK(b[0] == 0x00 && b[1] == 0x00 && b[2] == 0 && b[33] == 0);
        /* Subnormal blocks: 1 / d overflows, every product is infinite or NaN: codes 0 (and
         * d 0 as binary16), the bytes of ggml's x86 build. */
        for (unsigned i = 0; i < 32; i++) {
            x[i] = (float)((int)i - 16) * 1e-40f;
        }
        static const uint8_t zero[34];
        CHECK(e8(x, 1, b) == 32);
        CHECK(memcmp(b, zero, 34) == 0);
        CHECK(e4(x, 1, b) == 32);
        CHECK(memcmp(b, zero, 18) == 0); /* d = -1.6e-39 / -8 > 0 */
        CHECK(e5(x, 1, b) == 32);
        CHECK(memcmp(b, zero, 22) == 0);
    }
}

/* The rounding encoders check as they encode: every table returns the index of the first NaN
 * or Inf, wherever it sits (first block, last, inside a batch of eight, after a finite +Inf
 * neighbour's block), and the element count when all are finite. */
TEST(rounding_encoders_find_the_first_non_finite)
{
    const aq__kernel_table *tables[8];
    const size_t nt = aq_test_simd_tables(tables, false);
    enum { N = 32 * 21 };
    static float x[N];
    static uint8_t b[N * 2];
    static const size_t at[] = {0, 31, 32, 250, 255, 256, 300, N - 33, N - 1};
    static const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    uint64_t rng = 5;
    for (size_t t = 0; t <= nt; t++) {
        const aq__ggml_kernels *gk = t < nt ? tables[t]->ggml : NULL;
        if (t < nt && gk == NULL) {
            continue;
        }
        static const aq_gguf_type types[] = {AQ_GGUF_Q8_0, AQ_GGUF_Q4_0, AQ_GGUF_Q5_0};
        for (size_t ty = 0; ty < 3; ty++) {
            aq__ggml_round_fn e = gk ? gk->encode_round[types[ty]]
                                     : aq__ggml_traits_of((uint32_t)types[ty])->encode_round_ref;
            for (size_t a = 0; a < sizeof at / sizeof at[0]; a++) {
                for (size_t v = 0; v < sizeof bad / sizeof bad[0]; v++) {
                    for (size_t i = 0; i < N; i++) {
                        x[i] = (float)(0.02 * aq_test_rand_normal(&rng));
                    }
                    x[at[a]] = bad[v];
                    if (a + 1 < sizeof at / sizeof at[0]) {
                        x[at[a + 1]] = bad[(v + 1) % 4]; /* a later one is not reported */
                    }
                    const size_t got = e(x, N / 32, b);
                    CHECK_MSG(got == at[a], "%s type %u: %g at %zu, reported at %zu",
                              gk ? tables[t]->name : "ref", (unsigned)types[ty], (double)bad[v],
                              at[a], got);
                    x[at[a]] = 3e38f; /* finite, however large: not reported */
                    const size_t next = a + 1 < sizeof at / sizeof at[0] ? at[a + 1] : N;
                    CHECK(e(x, N / 32, b) == next);
                }
            }
        }
    }
}

TEST(traits_are_ggml_sizes)
{
    static const struct {
        aq_gguf_type t;
        uint32_t block, bytes;
    } want[] = {{AQ_GGUF_F32, 1, 4},      {AQ_GGUF_F16, 1, 2},        {AQ_GGUF_Q4_0, 32, 18},
                {AQ_GGUF_Q4_1, 32, 20},   {AQ_GGUF_Q5_0, 32, 22},     {AQ_GGUF_Q5_1, 32, 24},
                {AQ_GGUF_Q8_0, 32, 34},   {AQ_GGUF_Q2_K, 256, 84},    {AQ_GGUF_Q3_K, 256, 110},
                {AQ_GGUF_Q4_K, 256, 144}, {AQ_GGUF_Q5_K, 256, 176},   {AQ_GGUF_Q6_K, 256, 210},
                {AQ_GGUF_IQ4_NL, 32, 18}, {AQ_GGUF_IQ4_XS, 256, 136}, {AQ_GGUF_BF16, 1, 2}};
    CHECK(aq__ggml_traits_count() == sizeof want / sizeof want[0]);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const aq__ggml_traits *t = aq__ggml_traits_of((uint32_t)want[i].t);
        CHECK(t != NULL && t->block == want[i].block && t->bytes == want[i].bytes);
    }
    CHECK(aq__ggml_traits_of(9) == NULL); /* Q8_1: not read */
    CHECK(aq__ggml_traits_of(99) == NULL);
}

AQ_TEST_MAIN(AQ_CASE(simd_tables_match_the_reference),
             AQ_CASE(simd_tables_match_the_reference_on_odd_counts),
             AQ_CASE(encoders_keep_what_the_format_can_hold),
             AQ_CASE(rounding_encoders_follow_ggml),
             AQ_CASE(rounding_encoders_find_the_first_non_finite), AQ_CASE(traits_are_ggml_sizes))
