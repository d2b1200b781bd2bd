/*
 * AVX2 kernels (with F16C for half precision): 8 lanes. Compiled with its own flags
 * (sources.cmake); the only symbol is the table aq__kernels_avx2, which dispatch.c hands out
 * only when the CPU and the OS support these instructions. The algorithm is kernels_simd.h;
 * this file supplies the vector primitives.
 */
#include "kernels.h"

#include <immintrin.h>
#include <math.h>

#define SIMD_VL 8
#define SIMD_NAME "avx2"
#define SIMD_TABLE_NAME aq__kernels_avx2
/* ggml block encoders (kernels_ggml_avx2.c). */
#include "kernels_ggml.h"
#define SIMD_GGML &aq__ggml_kernels_avx2
/* kquant's super-block (kernels_kquant_avx2.c). */
#define SIMD_KQUANT_QUANTIZE                                                                       \
    {                                                                                              \
        aq__quantize_kquant_avx2_f32, aq__quantize_kquant_avx2_f16, aq__quantize_kquant_avx2_bf16, \
            aq__quantize_kquant_avx2_f64                                                           \
    }

typedef __m256 simd_v;

static inline simd_v simd_load(const void *src, aq_dtype dtype, size_t i)
{
    switch (dtype) {
    case AQ_DTYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
    case AQ_DTYPE_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case AQ_DTYPE_F64: {
        const double *d = (const double *)src + i;
        __m128 lo = _mm256_cvtpd_ps(_mm256_loadu_pd(d));
        __m128 hi = _mm256_cvtpd_ps(_mm256_loadu_pd(d + 4));
        return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
    }
    case AQ_DTYPE_F32:
    case AQ_DTYPE_COUNT:
        break;
    }
    return _mm256_loadu_ps((const float *)src + i);
}

/* Tails go through a small buffer: AVX2 has masked loads for 32- and 64-bit elements only,
 * and tails are rare enough that a copy costs nothing measurable. */
static inline simd_v simd_load_part(const void *src, aq_dtype dtype, size_t i, size_t cnt)
{
    unsigned char tmp[8 * sizeof(double)];
    const size_t es = aq_dtype_size(dtype);
    memcpy(tmp, (const unsigned char *)src + i * es, cnt * es);
    for (size_t j = cnt; j < 8; j++) {
        memcpy(tmp + j * es, tmp, es); /* lanes past the end repeat element i */
    }
    return simd_load(tmp, dtype, 0);
}

static inline simd_v simd_set1(float f)
{
    return _mm256_set1_ps(f);
}

static inline simd_v simd_zero(void)
{
    return _mm256_setzero_ps();
}

static inline simd_v simd_min(simd_v a, simd_v b)
{
    return _mm256_min_ps(a, b);
}

static inline simd_v simd_max(simd_v a, simd_v b)
{
    return _mm256_max_ps(a, b);
}

static inline simd_v simd_bad_acc(simd_v acc, simd_v x)
{
    return _mm256_or_ps(acc, _mm256_mul_ps(x, _mm256_setzero_ps()));
}

static inline bool simd_bad_any(simd_v acc)
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    __m256i hit = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(acc), e), e);
    return _mm256_movemask_ps(_mm256_castsi256_ps(hit)) != 0;
}

static inline void simd_store(float *dst, simd_v v)
{
    _mm256_store_ps(dst, v);
}

/* Min and max of up to 8 groups at once (see kernels_avx512.c): a shuffle tree, then one
 * permutation. */
static inline __m256 avx2_reduce8(const float *p, bool is_min)
{
    __m256 w[4], x[2];
    for (int j = 0; j < 4; j++) {
        __m256 a = _mm256_load_ps(p + (2 * j) * 8), b = _mm256_load_ps(p + (2 * j + 1) * 8);
        __m256 t1 = _mm256_permute2f128_ps(a, b, 0x20);
        __m256 t2 = _mm256_permute2f128_ps(a, b, 0x31);
        w[j] = is_min ? _mm256_min_ps(t1, t2) : _mm256_max_ps(t1, t2);
    }
    for (int j = 0; j < 2; j++) {
        __m256 t1 = _mm256_shuffle_ps(w[2 * j], w[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0));
        __m256 t2 = _mm256_shuffle_ps(w[2 * j], w[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1));
        x[j] = is_min ? _mm256_min_ps(t1, t2) : _mm256_max_ps(t1, t2);
    }
    __m256 t1 = _mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0));
    __m256 t2 = _mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1));
    __m256 r = is_min ? _mm256_min_ps(t1, t2) : _mm256_max_ps(t1, t2);
    /* Lane 4c + p holds group 2p + c. */
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The per-group arithmetic of aq__affine_params for 8 groups at once, operation for
 * operation: IEEE division, conversion and negation give the same bits in any lane. */
#define SIMD_HAVE_PARAMS 1
static inline void simd_params(float *pmin, float *pmax, size_t count, unsigned bits, float *scales,
                               float *zero_points, float *glo, float *ginv, bool *bounded)
{
    for (size_t k = count; k < 8; k++) {
        memcpy(pmin + k * 8, pmin, 8 * sizeof(float));
        memcpy(pmax + k * 8, pmax, 8 * sizeof(float));
    }
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lo = _mm256_add_ps(avx2_reduce8(pmin, true), zero);
    const __m256 hi = _mm256_add_ps(avx2_reduce8(pmax, false), zero);
    const __m256 constant = _mm256_cmp_ps(hi, lo, _CMP_EQ_OQ);
    /* Lanes past count repeat group 0, so all 8 may be tested. NaN compares false. */
    *bounded = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(INFINITY),
                                                _CMP_LT_OQ)) == 0xff;
    const __m256d qmax = _mm256_set1_pd((double)((1u << bits) - 1u));
    const __m256d dlo_a = _mm256_cvtps_pd(_mm256_castps256_ps128(lo));
    const __m256d dlo_b = _mm256_cvtps_pd(_mm256_extractf128_ps(lo, 1));
    const __m256d dhi_a = _mm256_cvtps_pd(_mm256_castps256_ps128(hi));
    const __m256d dhi_b = _mm256_cvtps_pd(_mm256_extractf128_ps(hi, 1));
    __m128 s_a = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_sub_pd(dhi_a, dlo_a), qmax));
    __m128 s_b = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_sub_pd(dhi_b, dlo_b), qmax));
    /* max(s, FLT_MIN) returns FLT_MIN when s is NaN too, as !(s >= FLT_MIN) does. */
    __m256 scale = _mm256_insertf128_ps(_mm256_castps128_ps256(s_a), s_b, 1);
    scale = _mm256_max_ps(scale, _mm256_set1_ps(0x1p-126f));
    __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), scale);
    const __m256d neg = _mm256_set1_pd(-0.0);
    __m128 z_a = _mm256_cvtpd_ps(
        _mm256_div_pd(_mm256_xor_pd(dlo_a, neg), _mm256_cvtps_pd(_mm256_castps256_ps128(scale))));
    __m128 z_b = _mm256_cvtpd_ps(
        _mm256_div_pd(_mm256_xor_pd(dlo_b, neg), _mm256_cvtps_pd(_mm256_extractf128_ps(scale, 1))));
    __m256 zp = _mm256_insertf128_ps(_mm256_castps128_ps256(z_a), z_b, 1);
    /* Constant groups: scale 1, inv 0, zero point -lo. */
    scale = _mm256_blendv_ps(scale, _mm256_set1_ps(1.0f), constant);
    inv = _mm256_blendv_ps(inv, zero, constant);
    zp = _mm256_blendv_ps(zp, _mm256_xor_ps(lo, _mm256_set1_ps(-0.0f)), constant);
    /* The batch's own lo and inv (8 each) with plain stores, which forward to the next
     * pass's broadcasts. */
    _mm256_storeu_ps(glo, lo);
    _mm256_storeu_ps(ginv, inv);
    float t[2][8];
    _mm256_storeu_ps(t[0], scale);
    _mm256_storeu_ps(t[1], zp);
    memcpy(scales, t[0], count * sizeof(float));
    memcpy(zero_points, t[1], count * sizeof(float));
}

static inline void simd_codes(uint8_t *dst, simd_v x, simd_v lo, simd_v inv, simd_v qmax,
                              simd_v *flag)
{
    /* min(qmax, u), not min(u, qmax): the NaN of a non-finite input must survive. */
    simd_v u = _mm256_min_ps(qmax, _mm256_mul_ps(_mm256_sub_ps(x, lo), inv));
    __m256i q = _mm256_cvtps_epi32(u);
    *flag = _mm256_or_ps(*flag, _mm256_castsi256_ps(q));
    /* Byte 0 of each 32-bit lane to the low 4 bytes of each half, then the halves together. */
    const __m256i pick =
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    q = _mm256_shuffle_epi8(q, pick);
    q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    _mm_storel_epi64((__m128i *)dst, _mm256_castsi256_si128(q));
}

/* The codes of simd_codes, without the clamp for bounded batches (kernels_simd.h). */
static inline __m256i avx2_code(__m256 x, __m256 lo, __m256 inv, __m256 qmax, bool clamp)
{
    __m256 u = _mm256_mul_ps(_mm256_sub_ps(x, lo), inv);
    return _mm256_cvtps_epi32(clamp ? _mm256_min_ps(qmax, u) : u);
}

/* 32 elements quantized and packed in registers: the four code vectors are narrowed
 * together (two packs and one permutation), then combined as simd_pack does. */
#define SIMD_HAVE_BLOCK 1
static inline void simd_block(const void *src, aq_dtype dtype, size_t i, simd_v lo, simd_v inv,
                              simd_v qmax, unsigned bits, bool clamp, uint8_t *out, simd_v *flag)
{
    /* Written out, not looped: the four code vectors must stay in registers. */
#define SIMD_Q(j) avx2_code(simd_load(src, dtype, i + 8 * (j)), lo, inv, qmax, clamp)
    const __m256i q[4] = {SIMD_Q(0), SIMD_Q(1), SIMD_Q(2), SIMD_Q(3)};
#undef SIMD_Q
    __m256i any = _mm256_or_si256(_mm256_or_si256(q[0], q[1]), _mm256_or_si256(q[2], q[3]));
    *flag = _mm256_castsi256_ps(_mm256_or_si256(_mm256_castps_si256(*flag), any));
    /* Lane l of the packed vector holds elements 4l..4l+3 of q0, q1, q2, q3. */
    __m256i c =
        _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
    c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (bits == 8) {
        _mm256_storeu_si256((__m256i *)out, c);
    } else if (bits == 4) {
        __m256i w = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x1001));
        w = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), _MM_SHUFFLE(3, 1, 2, 0));
        _mm_storeu_si128((__m128i *)out, _mm256_castsi256_si128(w));
    } else {
        __m256i w = _mm256_maddubs_epi16(c, _mm256_set1_epi16(0x0401));
        __m256i d = _mm256_madd_epi16(w, _mm256_set1_epi32(0x00100001));
        d = _mm256_packus_epi16(_mm256_packus_epi32(d, d), d);
        __m128i lo4 = _mm256_castsi256_si128(d), hi4 = _mm256_extracti128_si256(d, 1);
        _mm_storel_epi64((__m128i *)out, _mm_unpacklo_epi32(lo4, hi4));
    }
}

static inline bool simd_flag_any(simd_v flag)
{
    return _mm256_movemask_ps(flag) != 0;
}

static size_t simd_pack(const uint8_t *codes, size_t nbytes, unsigned bits, uint8_t *out)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 32 <= nbytes; b += 32) {
            _mm256_storeu_si256((__m256i *)(out + b),
                                _mm256_loadu_si256((const __m256i *)(codes + b)));
        }
    } else if (bits == 4) {
        const __m256i mul = _mm256_set1_epi16(0x1001); /* c0 + 16 * c1 */
        for (; b + 32 <= nbytes; b += 32) {
            const uint8_t *c = codes + 2 * b;
            __m256i w0 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)c), mul);
            __m256i w1 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(c + 32)), mul);
            __m256i p =
                _mm256_permute4x64_epi64(_mm256_packus_epi16(w0, w1), _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_si256((__m256i *)(out + b), p);
        }
    } else {
        const __m256i mul8 = _mm256_set1_epi16(0x0401);      /* c0 + 4 * c1 */
        const __m256i mul16 = _mm256_set1_epi32(0x00100001); /* w0 + 16 * w1 */
        for (; b + 32 <= nbytes; b += 32) {
            const uint8_t *c = codes + 4 * b;
            __m256i d[4];
            for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(c + 32 * j));
                d[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(v, mul8), mul16);
            }
            __m256i p =
                _mm256_packus_epi16(_mm256_packs_epi32(d[0], d[1]), _mm256_packs_epi32(d[2], d[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(out + b), p);
        }
    }
    return b;
}

static size_t simd_unpack(const uint8_t *packed, size_t nbytes, unsigned bits, uint8_t *codes)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 32 <= nbytes; b += 32) {
            _mm256_storeu_si256((__m256i *)(codes + b),
                                _mm256_loadu_si256((const __m256i *)(packed + b)));
        }
    } else if (bits == 4) {
        const __m256i m_lo = _mm256_set1_epi16(0x000f), m_hi = _mm256_set1_epi16(0x0f00);
        for (; b + 16 <= nbytes; b += 16) {
            __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(packed + b)));
            __m256i c = _mm256_or_si256(_mm256_and_si256(w, m_lo),
                                        _mm256_and_si256(_mm256_slli_epi16(w, 4), m_hi));
            _mm256_storeu_si256((__m256i *)(codes + 2 * b), c);
        }
    } else {
        for (; b + 8 <= nbytes; b += 8) {
            __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(packed + b)));
            __m256i c = _mm256_and_si256(d, _mm256_set1_epi32(3));
            c = _mm256_or_si256(
                c, _mm256_and_si256(_mm256_slli_epi32(d, 6), _mm256_set1_epi32(0x300)));
            c = _mm256_or_si256(
                c, _mm256_and_si256(_mm256_slli_epi32(d, 12), _mm256_set1_epi32(0x30000)));
            c = _mm256_or_si256(
                c, _mm256_and_si256(_mm256_slli_epi32(d, 18), _mm256_set1_epi32(0x3000000)));
            _mm256_storeu_si256((__m256i *)(codes + 4 * b), c);
        }
    }
    return b;
}

/* 8 float32 to float16 or bfloat16 (8 words), rounded to nearest even as aq__f32_to_f16 and
 * aq__f32_to_bf16 do (NaN stays a quiet NaN). simd_dequant and simd_lut_make both convert
 * through here, so a table entry has the bits the arithmetic path gives its code. `finite`
 * (a constant after inlining) says that no lane is NaN, which holds whenever the group's
 * scale and zero point are finite (kernels_simd.h, simd_dequant_piece): the NaN fix-ups are
 * then left out. */
static inline __m128i avx2_half(simd_v x, aq_dtype out_dtype, bool finite)
{
    if (out_dtype == AQ_DTYPE_F16) {
        __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (!finite) {
            /* vcvtps2ph keeps the top of a NaN's payload; aq__f32_to_f16 gives sign | 0x7e00. */
            const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
            const __m128i nan16 =
                _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256(nan, 1));
            h = _mm_blendv_epi8(h, _mm_and_si128(h, _mm_set1_epi16(-512)), nan16);
        }
        return h;
    }
    __m256i u = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
    if (!finite) {
        __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        r = _mm256_blendv_epi8(
            r, _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40)), nan);
    }
    r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castsi256_si128(r);
}

/* cnt <= 8 outputs of x at dst[i..]. */
static inline void avx2_dq_store(simd_v x, bool finite, aq_dtype out_dtype, void *dst, size_t i,
                                 size_t cnt)
{
    if (out_dtype == AQ_DTYPE_F32) {
        float *d = (float *)dst + i;
        if (cnt == 8) {
            _mm256_storeu_ps(d, x);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, x);
            memcpy(d, tmp, cnt * sizeof(float));
        }
        return;
    }
    __m128i h = avx2_half(x, out_dtype, finite);
    uint16_t *d = (uint16_t *)dst + i;
    if (cnt == 8) {
        _mm_storeu_si128((__m128i *)d, h);
    } else {
        uint16_t tmp[8];
        _mm_storeu_si128((__m128i *)tmp, h);
        memcpy(d, tmp, cnt * sizeof(uint16_t));
    }
}

static inline void simd_dequant(const uint8_t *codes, simd_v zp, simd_v scale, bool finite,
                                aq_dtype out_dtype, void *dst, size_t i, size_t cnt)
{
    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)codes));
    simd_v x = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), zp), scale);
    avx2_dq_store(x, finite, out_dtype, dst, i, cnt);
}

/* kquant (kernels_simd.h, simd_kq_dequant): a * q - b, a multiplication then a subtraction
 * (this file is built without FMA). 32 codes at a time, four vectors; every sub-block is a
 * multiple of 8 codes, so a vector never straddles two. */
#define SIMD_HAVE_KQ_DEQUANT 1
#define SIMD_KQ_W 32
static inline void simd_kq_dequant(const uint8_t *codes, const float *a, const float *b,
                                   unsigned shift, bool finite, aq_dtype out_dtype, void *dst,
                                   size_t i, size_t cnt)
{
    for (size_t k = 0; k < SIMD_KQ_W / 8 && 8 * k < cnt; k++) {
        __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + 8 * k)));
        const size_t j = (8 * k) >> shift;
        simd_v x = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(a[j]), _mm256_cvtepi32_ps(q)),
                                 _mm256_set1_ps(b[j]));
        avx2_dq_store(x, finite, out_dtype, dst, i + 8 * k, cnt - 8 * k < 8 ? cnt - 8 * k : 8);
    }
}

/* Dequantize by table (kernels_simd.h): the 16 outputs of codes 0..15 of a group, computed
 * by the arithmetic and conversion of simd_dequant, split into a table of their low bytes and
 * one of their high bytes (each in both 128-bit lanes); two vpshufb look up 32 codes and
 * two unpacks interleave the bytes into 32 outputs. */
#ifndef SIMD_LUT
#    define SIMD_LUT 1
#endif
#if SIMD_LUT
#    define SIMD_HAVE_LUT 1
#    define SIMD_LUT_W 32
typedef struct simd_lut {
    __m256i lo, hi;
} simd_lut;

static inline simd_lut simd_lut_make(simd_v zp, simd_v scale, bool finite, aq_dtype out_dtype)
{
    const simd_v iota0 = _mm256_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f);
    const simd_v iota1 = _mm256_setr_ps(8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f);
    const __m128i h0 = avx2_half(_mm256_mul_ps(_mm256_sub_ps(iota0, zp), scale), out_dtype, finite);
    const __m128i h1 = avx2_half(_mm256_mul_ps(_mm256_sub_ps(iota1, zp), scale), out_dtype, finite);
    /* Low bytes of the 8 words, then their high bytes. */
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i a = _mm_shuffle_epi8(h0, split), b = _mm_shuffle_epi8(h1, split);
    simd_lut t;
    t.lo = _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(a, b));
    t.hi = _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(a, b));
    return t;
}

/* cnt <= 32 outputs at dst[i..] from 32 code bytes c (each < 16). */
static inline void avx2_lut_apply(simd_lut t, __m256i c, void *dst, size_t i, size_t cnt)
{
    /* Quadwords 0 2 1 3: lane 0 holds codes 0-7 and 16-23, lane 1 codes 8-15 and 24-31, so
     * the in-lane unpacks give outputs 0-15, then 16-31, in order. */
    c = _mm256_permute4x64_epi64(c, _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i lo = _mm256_shuffle_epi8(t.lo, c), hi = _mm256_shuffle_epi8(t.hi, c);
    const __m256i o0 = _mm256_unpacklo_epi8(lo, hi), o1 = _mm256_unpackhi_epi8(lo, hi);
    uint16_t *d = (uint16_t *)dst + i;
    if (cnt == SIMD_LUT_W) {
        _mm256_storeu_si256((__m256i *)d, o0);
        _mm256_storeu_si256((__m256i *)(d + 16), o1);
    } else {
        uint16_t tmp[SIMD_LUT_W];
        _mm256_storeu_si256((__m256i *)tmp, o0);
        _mm256_storeu_si256((__m256i *)(tmp + 16), o1);
        memcpy(d, tmp, cnt * sizeof(uint16_t));
    }
}

/* cnt <= 32 outputs at dst[i..] from the codes (each < 16; 32 are readable). */
static inline void simd_lut_apply(simd_lut t, const uint8_t *codes, void *dst, size_t i, size_t cnt)
{
    avx2_lut_apply(t, _mm256_loadu_si256((const __m256i *)codes), dst, i, cnt);
}

/* Which outputs go by table: bfloat16 and float16 at 2 and 4 bits. */
static inline bool simd_lut_use(unsigned bits, aq_dtype out_dtype)
{
    return bits <= 4 && (out_dtype == AQ_DTYPE_BF16 || out_dtype == AQ_DTYPE_F16);
}

/* kquant by table (kernels_simd.h, simd_kq_dequantize): at 4 bits the 16 outputs a * q - b of
 * one 32-code sub-block; at 2 bits the 4 outputs of each of four 16-code sub-blocks, sub-block
 * s at entries 4s..4s+3. Computed as simd_kq_dequant computes them (a multiplication, then a
 * subtraction, then avx2_half). */
#    define SIMD_HAVE_KQ_LUT 1
/* Which kquant outputs go by table: float16 and bfloat16 at 2 and 4 bits. */
static inline bool simd_kq_lut_use(unsigned bits, aq_dtype out_dtype)
{
    return (bits == 2 || bits == 4) && (out_dtype == AQ_DTYPE_BF16 || out_dtype == AQ_DTYPE_F16);
}

static inline simd_lut simd_kq_lut_make(const float *a, const float *b, unsigned bits, bool finite,
                                        aq_dtype out_dtype)
{
    simd_v a0, a1, b0, b1, q0, q1;
    if (bits == 2) {
        const __m256 av = _mm256_castps128_ps256(_mm_loadu_ps(a));
        const __m256 bv = _mm256_castps128_ps256(_mm_loadu_ps(b));
        const __m256i s01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        const __m256i s23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
        a0 = _mm256_permutevar8x32_ps(av, s01);
        a1 = _mm256_permutevar8x32_ps(av, s23);
        b0 = _mm256_permutevar8x32_ps(bv, s01);
        b1 = _mm256_permutevar8x32_ps(bv, s23);
        q0 = q1 = _mm256_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 0.0f, 1.0f, 2.0f, 3.0f);
    } else {
        a0 = a1 = _mm256_set1_ps(a[0]);
        b0 = b1 = _mm256_set1_ps(b[0]);
        q0 = _mm256_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f);
        q1 = _mm256_setr_ps(8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f);
    }
    const __m128i h0 = avx2_half(_mm256_sub_ps(_mm256_mul_ps(a0, q0), b0), out_dtype, finite);
    const __m128i h1 = avx2_half(_mm256_sub_ps(_mm256_mul_ps(a1, q1), b1), out_dtype, finite);
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i x = _mm_shuffle_epi8(h0, split), y = _mm_shuffle_epi8(h1, split);
    simd_lut t;
    t.lo = _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(x, y));
    t.hi = _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(x, y));
    return t;
}

/* cnt <= 32 outputs at dst[i..] from 32 codes (readable); at 2 bits they are sub-blocks
 * 2 * half and 2 * half + 1 of the table's four. */
static inline void simd_kq_lut_apply(simd_lut t, const uint8_t *codes, unsigned bits, unsigned half,
                                     void *dst, size_t i, size_t cnt)
{
    __m256i c = _mm256_loadu_si256((const __m256i *)codes);
    if (bits == 2) {
        const long long lo = half ? 0x0808080808080808ll : 0, hi = lo + 0x0404040404040404ll;
        c = _mm256_add_epi8(c, _mm256_setr_epi64x(lo, lo, hi, hi));
    }
    avx2_lut_apply(t, c, dst, i, cnt);
}

/* 32 outputs at dst[i..] straight from the 16 packed bytes of 32 4-bit codes (low nibble
 * first), without the stage. */
#    define SIMD_HAVE_KQ_LUT_PACKED4 1
static inline void simd_kq_lut_apply_packed4(simd_lut t, const uint8_t *p, void *dst, size_t i)
{
    const __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    avx2_lut_apply(t, _mm256_setr_m128i(_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)), dst,
                   i, SIMD_LUT_W);
}

/* Whole super-blocks to float16/bfloat16 (kernels_simd.h, simd_kq_super16). */
#    include "kernels_kq16_avx2.h"
#endif

/* The error statistics' lane-wise maximum and widening (kernels_stats.h): vmaxpd, vcvtps2pd. */
#define STATS_MAX4(a, m) ((stats_d4)_mm256_max_pd((__m256d)(a), (__m256d)(m)))
#define STATS_WIDEN4(p) ((stats_d4)_mm256_cvtps_pd(_mm_loadu_ps(p)))

#include "kernels_simd.h"
