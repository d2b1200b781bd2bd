/*
 * kquant's dequantize of whole super-blocks to float16 and bfloat16 with 256-bit AVX2 and F16C
 * instructions (kernels_simd.h, SIMD_HAVE_KQ_SUPER16), bit-identical to kernels_ref_kquant.c.
 * Included by the AVX2 and AVX-512 tables (both built with -mavx2 -mf16c); nothing here is
 * compiled on its own.
 */
#ifndef AQ_KERNELS_KQ16_AVX2_H
#define AQ_KERNELS_KQ16_AVX2_H

#include "kernels.h"

#include <immintrin.h>

/* Whether 8-bit super-blocks come here too (an includer whose own kernels are as fast at 8
 * bits sets 0). */
#ifndef KQ16_BITS8
#    define KQ16_BITS8 1
#endif

/* Whole super-blocks to float16/bfloat16 (kernels_simd.h, simd_kq_super16): the sub-block
 * parameters of the whole super-block are decoded with vector shifts and masks; at 2 and 4
 * bits the tables of all its sub-blocks are computed together, at 8 bits the outputs directly.
 * Each table entry (output) is a * (float)q - b (a float32
 * multiplication, then a subtraction, as simd_kq_dequant computes it) rounded to nearest even
 * by avx2_half16. Only for finite a and b (no entry is NaN). */
#define SIMD_HAVE_KQ_SUPER16 1

/* The 16 outputs of x0 and x1 as float16 or bfloat16 words, x finite (no NaN): lane 0 holds
 * x0[0..3], x1[0..3]; lane 1 x0[4..7], x1[4..7] (the order of vpackusdw). The same bits as
 * avx2_half (kernels_avx2.c). */
static inline __m256i avx2_half16(__m256 x0, __m256 x1, aq_dtype out_dtype)
{
    if (out_dtype == AQ_DTYPE_F16) {
        const __m128i h0 = _mm256_cvtps_ph(x0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i h1 = _mm256_cvtps_ph(x1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        return _mm256_setr_m128i(_mm_unpacklo_epi64(h0, h1), _mm_unpackhi_epi64(h0, h1));
    }
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i u0 = _mm256_castps_si256(x0), u1 = _mm256_castps_si256(x1);
    const __m256i o0 = _mm256_and_si256(_mm256_srli_epi32(u0, 16), one);
    const __m256i o1 = _mm256_and_si256(_mm256_srli_epi32(u1, 16), one);
    const __m256i r0 = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u0, bias), o0), 16);
    const __m256i r1 = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u1, bias), o1), 16);
    return _mm256_packus_epi32(r0, r1); /* every r <= 0xffff: no saturation */
}

/* Low bytes of the 8 words of each 128-bit lane, then their high bytes. */
static inline __m256i avx2_split16(__m256i w)
{
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0,
                                           2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    return _mm256_shuffle_epi8(w, split);
}

/* 2 bits: 32 sub-blocks of 16 codes, parameter byte j = sc_j | mc_j << 4. Per 128 codes
 * (sub-blocks 8v..8v+7): the outputs of codes q = 0..3 of the 8 sub-blocks, one vector per q;
 * lane 0 of the tables holds sub-blocks 8v..8v+3 at entry 4q + s, lane 1 8v+4..8v+7. The 32
 * packed bytes of the 128 codes (lane 0: codes 0..63, lane 1: 64..127) are split into the four
 * codes of each byte, as 4q, and interleaved so that vector m holds sub-block m (lane 0) and
 * 4 + m (lane 1) in order. */
static inline void avx2_kq_super16_b2(const uint8_t *packed, const uint8_t *meta, float d,
                                      float dmin, aq_dtype out_dtype, uint16_t *o)
{
    const __m256 vd = _mm256_set1_ps(d), vdmin = _mm256_set1_ps(dmin);
    const __m256i m15 = _mm256_set1_epi32(15), m12 = _mm256_set1_epi8(12);
    for (size_t v = 0; v < 4; v++) {
        const __m256i pb = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(meta + 8 * v)));
        const __m256 a = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_and_si256(pb, m15)));
        const __m256 b = _mm256_mul_ps(vdmin, _mm256_cvtepi32_ps(_mm256_srli_epi32(pb, 4)));
        __m256 e[4];
        for (int q = 0; q < 4; q++) {
            e[q] = _mm256_sub_ps(_mm256_mul_ps(a, _mm256_set1_ps((float)q)), b);
        }
        /* s01 lane 0: low bytes of q = 0 (s 0..3), q = 1 (s 0..3), then the high bytes. */
        const __m256i s01 = avx2_split16(avx2_half16(e[0], e[1], out_dtype));
        const __m256i s23 = avx2_split16(avx2_half16(e[2], e[3], out_dtype));
        const __m256i tlo = _mm256_unpacklo_epi64(s01, s23), thi = _mm256_unpackhi_epi64(s01, s23);

        const __m256i x = _mm256_loadu_si256((const __m256i *)(packed + 32 * v));
        const __m256i c0 = _mm256_and_si256(_mm256_slli_epi16(x, 2), m12);
        const __m256i c1 = _mm256_and_si256(x, m12);
        const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(x, 2), m12);
        const __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m12);
        const __m256i t0 = _mm256_unpacklo_epi8(c0, c1), t1 = _mm256_unpackhi_epi8(c0, c1);
        const __m256i t2 = _mm256_unpacklo_epi8(c2, c3), t3 = _mm256_unpackhi_epi8(c2, c3);
        const __m256i u[4] = {_mm256_unpacklo_epi16(t0, t2), _mm256_unpackhi_epi16(t0, t2),
                              _mm256_unpacklo_epi16(t1, t3), _mm256_unpackhi_epi16(t1, t3)};
        uint16_t *ov = o + 128 * v;
        for (int m = 0; m < 4; m++) {
            const __m256i idx = _mm256_or_si256(u[m], _mm256_set1_epi8((char)m));
            const __m256i lo = _mm256_shuffle_epi8(tlo, idx), hi = _mm256_shuffle_epi8(thi, idx);
            const __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);
            _mm256_storeu_si256((__m256i *)(ov + 16 * m), _mm256_permute2x128_si256(w0, w1, 0x20));
            _mm256_storeu_si256((__m256i *)(ov + 64 + 16 * m),
                                _mm256_permute2x128_si256(w0, w1, 0x31));
        }
    }
}

/* The 6-bit parameters of 16 sub-blocks (three bytes per pair: sc, mc, sc, mc) as a = d * sc
 * and b = dmin * mc of the even sub-blocks (lane i: sub-block 2i) and of the odd ones. */
static inline void avx2_kq_params6(const uint8_t *meta, float d, float dmin, float *ae, float *be,
                                   float *ao, float *bo)
{
    /* Bytes 0..15 in lane 0 and 8..23 in lane 1; pair i's three bytes into dword i. */
    const __m256i raw = _mm256_setr_m128i(_mm_loadu_si128((const __m128i *)meta),
                                          _mm_loadu_si128((const __m128i *)(meta + 8)));
    const __m256i gather = _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1, 4,
                                            5, 6, -1, 7, 8, 9, -1, 10, 11, 12, -1, 13, 14, 15, -1);
    const __m256i p = _mm256_shuffle_epi8(raw, gather), m63 = _mm256_set1_epi32(63);
    const __m256 vd = _mm256_set1_ps(d), vdmin = _mm256_set1_ps(dmin);
    _mm256_storeu_ps(ae, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_and_si256(p, m63))));
    _mm256_storeu_ps(be, _mm256_mul_ps(vdmin, _mm256_cvtepi32_ps(
                                                  _mm256_and_si256(_mm256_srli_epi32(p, 6), m63))));
    _mm256_storeu_ps(
        ao, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(p, 12), m63))));
    _mm256_storeu_ps(bo, _mm256_mul_ps(vdmin, _mm256_cvtepi32_ps(_mm256_srli_epi32(p, 18))));
}

/* The table of one sub-block: its 16 outputs a * q - b, low bytes in tlo and high bytes in
 * thi, both lanes. The first vector holds q = 0..3, 8..11, the second 4..7, 12..15, so that
 * avx2_half16 puts q = 0..7 in lane 0 and 8..15 in lane 1. */
static inline void avx2_kq_table16(const float *a, const float *b, aq_dtype out_dtype, __m256i *tlo,
                                   __m256i *thi)
{
    const __m256 q0 = _mm256_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 8.0f, 9.0f, 10.0f, 11.0f);
    const __m256 q1 = _mm256_setr_ps(4.0f, 5.0f, 6.0f, 7.0f, 12.0f, 13.0f, 14.0f, 15.0f);
    const __m256 av = _mm256_broadcast_ss(a), bv = _mm256_broadcast_ss(b);
    const __m256i s =
        avx2_split16(avx2_half16(_mm256_sub_ps(_mm256_mul_ps(av, q0), bv),
                                 _mm256_sub_ps(_mm256_mul_ps(av, q1), bv), out_dtype));
    *tlo = _mm256_permute4x64_epi64(s, _MM_SHUFFLE(2, 0, 2, 0));
    *thi = _mm256_permute4x64_epi64(s, _MM_SHUFFLE(3, 1, 3, 1));
}

/* 32 outputs of a table from code bytes c: lane 0 codes 0..7 and 16..23, lane 1 8..15 and
 * 24..31. */
static inline void avx2_kq_look32(__m256i tlo, __m256i thi, __m256i c, uint16_t *o)
{
    const __m256i lo = _mm256_shuffle_epi8(tlo, c), hi = _mm256_shuffle_epi8(thi, c);
    _mm256_storeu_si256((__m256i *)o, _mm256_unpacklo_epi8(lo, hi));
    _mm256_storeu_si256((__m256i *)(o + 16), _mm256_unpackhi_epi8(lo, hi));
}

/* 4 bits: 16 sub-blocks of 32 codes, two at a time (32 packed bytes, low nibble first). */
static inline void avx2_kq_super16_b4(const uint8_t *packed, const uint8_t *meta, float d,
                                      float dmin, aq_dtype out_dtype, uint16_t *o)
{
    float ae[8], be[8], ao[8], bo[8];
    avx2_kq_params6(meta, d, dmin, ae, be, ao, bo);
    const __m256i m15 = _mm256_set1_epi8(15);
    for (size_t i = 0; i < 8; i++) {
        __m256i tlo0, thi0, tlo1, thi1;
        avx2_kq_table16(ae + i, be + i, out_dtype, &tlo0, &thi0);
        avx2_kq_table16(ao + i, bo + i, out_dtype, &tlo1, &thi1);
        const __m256i x = _mm256_loadu_si256((const __m256i *)(packed + 32 * i));
        const __m256i l = _mm256_and_si256(x, m15);
        const __m256i h = _mm256_and_si256(_mm256_srli_epi16(x, 4), m15);
        /* Per lane (sub-block): codes 0..15, then 16..31. */
        const __m256i u0 = _mm256_unpacklo_epi8(l, h), u1 = _mm256_unpackhi_epi8(l, h);
        /* Per lane: codes 0..7 and 16..23, then 8..15 and 24..31. */
        const __m256i w0 = _mm256_unpacklo_epi64(u0, u1), w1 = _mm256_unpackhi_epi64(u0, u1);
        avx2_kq_look32(tlo0, thi0, _mm256_permute2x128_si256(w0, w1, 0x20), o + 64 * i);
        avx2_kq_look32(tlo1, thi1, _mm256_permute2x128_si256(w0, w1, 0x31), o + 64 * i + 32);
    }
}

/* 8 bits: 16 sub-blocks of 32 codes (one byte each), by arithmetic, 16 outputs at a time. */
static inline void avx2_kq_super16_b8(const uint8_t *packed, const uint8_t *meta, float d,
                                      float dmin, aq_dtype out_dtype, uint16_t *o)
{
    float ab[4][8]; /* a and b of the even sub-blocks, then of the odd ones */
    avx2_kq_params6(meta, d, dmin, ab[0], ab[1], ab[2], ab[3]);
    for (size_t j = 0; j < 16; j++) {
        const __m256 a = _mm256_broadcast_ss(&ab[2 * (j % 2)][j / 2]);
        const __m256 b = _mm256_broadcast_ss(&ab[2 * (j % 2) + 1][j / 2]);
        for (size_t k = 0; k < 32; k += 16) {
            const uint8_t *p = packed + 32 * j + k;
            const __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
            const __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
            const __m256 e0 = _mm256_sub_ps(_mm256_mul_ps(a, _mm256_cvtepi32_ps(c0)), b);
            const __m256 e1 = _mm256_sub_ps(_mm256_mul_ps(a, _mm256_cvtepi32_ps(c1)), b);
            uint16_t *oj = o + 32 * j + k;
            if (out_dtype == AQ_DTYPE_F16) {
                _mm_storeu_si128((__m128i *)oj, _mm256_cvtps_ph(e0, _MM_FROUND_TO_NEAREST_INT |
                                                                        _MM_FROUND_NO_EXC));
                _mm_storeu_si128(
                    (__m128i *)(oj + 8),
                    _mm256_cvtps_ph(e1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            } else {
                const __m256i w = avx2_half16(e0, e1, out_dtype);
                _mm256_storeu_si256((__m256i *)oj,
                                    _mm256_permute4x64_epi64(w, _MM_SHUFFLE(3, 1, 2, 0)));
            }
        }
    }
}

/* Whether whole super-blocks of this width go to simd_kq_super16. */
static inline bool simd_kq_super16_use(unsigned bits, aq_dtype out_dtype)
{
    return (bits != 8 || KQ16_BITS8) && (out_dtype == AQ_DTYPE_BF16 || out_dtype == AQ_DTYPE_F16);
}

/* The 512 outputs of a whole super-block at dst[i..] (its packed codes start on a byte). */
static inline void simd_kq_super16(const uint8_t *packed, const uint8_t *meta, float d, float dmin,
                                   unsigned bits, aq_dtype out_dtype, void *dst, size_t i)
{
    uint16_t *o = (uint16_t *)dst + i;
    if (bits == 2) {
        avx2_kq_super16_b2(packed, meta, d, dmin, out_dtype, o);
    } else if (bits == 4) {
        avx2_kq_super16_b4(packed, meta, d, dmin, out_dtype, o);
    } else {
        avx2_kq_super16_b8(packed, meta, d, dmin, out_dtype, o);
    }
}
#endif
