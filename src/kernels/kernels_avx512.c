/*
 * AVX-512 kernels (F, BW, DQ, VL): 16 lanes. Compiled with its own flags (sources.cmake); the
 * only symbol is the table aq__kernels_avx512, which dispatch.c hands out only when the CPU
 * and the OS support these instructions. The algorithm is kernels_simd.h; this file supplies
 * the vector primitives.
 */
#include "kernels.h"

#include <immintrin.h>
#include <math.h>

#define SIMD_VL 16
#define SIMD_NAME "avx512"
#define SIMD_TABLE_NAME aq__kernels_avx512
/* ggml block encoders (kernels_ggml_avx2.c). */
#include "kernels_ggml.h"
#define SIMD_GGML &aq__ggml_kernels_avx2
/* The quality schemes' searches and kquant's refinement (kernels_kquant_avx512.c). */
#define SIMD_SEARCH_QUANTIZE                                                \
    {                                                                       \
        aq__quantize_search_avx512_f32, aq__quantize_search_avx512_f16,     \
            aq__quantize_search_avx512_bf16, aq__quantize_search_avx512_f64 \
    }
#define SIMD_KQUANT_QUANTIZE                                                \
    {                                                                       \
        aq__quantize_kquant_avx512_f32, aq__quantize_kquant_avx512_f16,     \
            aq__quantize_kquant_avx512_bf16, aq__quantize_kquant_avx512_f64 \
    }

typedef __m512 simd_v;

static inline simd_v simd_load(const void *src, aq_dtype dtype, size_t i)
{
    switch (dtype) {
    case AQ_DTYPE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i)));
    case AQ_DTYPE_BF16: {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)src + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case AQ_DTYPE_F64: {
        const double *d = (const double *)src + i;
        __m256 lo = _mm512_cvtpd_ps(_mm512_loadu_pd(d));
        __m256 hi = _mm512_cvtpd_ps(_mm512_loadu_pd(d + 8));
        return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
    }
    case AQ_DTYPE_F32:
    case AQ_DTYPE_COUNT:
        break;
    }
    return _mm512_loadu_ps((const float *)src + i);
}

static inline simd_v simd_load_part(const void *src, aq_dtype dtype, size_t i, size_t cnt)
{
    const __mmask16 k = (__mmask16)((1u << cnt) - 1u);
    simd_v v;
    switch (dtype) {
    case AQ_DTYPE_F16:
        v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)src + i));
        break;
    case AQ_DTYPE_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t *)src + i);
        v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        break;
    }
    case AQ_DTYPE_F64: {
        const double *d = (const double *)src + i;
        __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(k & 0xffu), d));
        __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(k >> 8), d + 8));
        v = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
        break;
    }
    case AQ_DTYPE_F32:
    case AQ_DTYPE_COUNT:
    default:
        v = _mm512_maskz_loadu_ps(k, (const float *)src + i);
        break;
    }
    /* Lanes past the end repeat element i, so they change neither min nor max. */
    return _mm512_mask_mov_ps(_mm512_broadcastss_ps(_mm512_castps512_ps128(v)), k, v);
}

static inline simd_v simd_set1(float f)
{
    return _mm512_set1_ps(f);
}

static inline simd_v simd_zero(void)
{
    return _mm512_setzero_ps();
}

static inline simd_v simd_min(simd_v a, simd_v b)
{
    return _mm512_min_ps(a, b);
}

static inline simd_v simd_max(simd_v a, simd_v b)
{
    return _mm512_max_ps(a, b);
}

static inline simd_v simd_bad_acc(simd_v acc, simd_v x)
{
    return _mm512_or_ps(acc, _mm512_mul_ps(x, _mm512_setzero_ps()));
}

static inline bool simd_bad_any(simd_v acc)
{
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(acc), e), e) != 0;
}

static inline void simd_store(float *dst, simd_v v)
{
    _mm512_store_ps(dst, v);
}

/* A group's 16 min (or max) partials are folded to 8 as they are kept (one 256-bit
 * operation, spread through the pass), stored at p + 8k: a vector of the batch then holds
 * two groups, which is the first level of a tree done. */
#define SIMD_HAVE_KEEP 1
static inline void simd_keep(float *p, size_t k, simd_v v, bool is_min)
{
    const __m256 a = _mm512_castps512_ps256(v), b = _mm512_extractf32x8_ps(v, 1);
    _mm256_store_ps(p + 8 * k, is_min ? _mm256_min_ps(a, b) : _mm256_max_ps(a, b));
}

/* Min and max of 16 groups at once from their 8 kept partials each: a tree of shuffles
 * halves the partials of two vectors per step, so 16 groups cost 7 min (and 7 max)
 * instructions on 8 vectors. The result comes out as a 4x4 transpose, undone by one
 * permutation. */
static inline __m512 avx512_reduce16(const float *p, bool is_min)
{
    __m512 x[4], y[2];
    for (int j = 0; j < 4; j++) {
        /* Groups 4j .. 4j + 3, 4 lanes each. */
        __m512 a = _mm512_load_ps(p + 32 * j), b = _mm512_load_ps(p + 32 * j + 16);
        __m512 t1 = _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m512 t2 = _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        x[j] = is_min ? _mm512_min_ps(t1, t2) : _mm512_max_ps(t1, t2);
    }
    for (int j = 0; j < 2; j++) {
        __m512 t1 = _mm512_shuffle_ps(x[2 * j], x[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 t2 = _mm512_shuffle_ps(x[2 * j], x[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1));
        y[j] = is_min ? _mm512_min_ps(t1, t2) : _mm512_max_ps(t1, t2);
    }
    __m512 t1 = _mm512_shuffle_ps(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0));
    __m512 t2 = _mm512_shuffle_ps(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1));
    __m512 r = is_min ? _mm512_min_ps(t1, t2) : _mm512_max_ps(t1, t2);
    /* Lane 4c + p holds group 4p + c. */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(idx, r);
}

/* The per-group arithmetic of aq__affine_params for 16 groups at once, operation for
 * operation: IEEE division, conversion and negation give the same bits in any lane. */
#define SIMD_HAVE_PARAMS 1
static inline void simd_params(float *pmin, float *pmax, size_t count, unsigned bits, float *scales,
                               float *zero_points, float *glo, float *ginv, bool *bounded)
{
    for (size_t k = count; k < 16; k++) { /* groups past count repeat group 0 */
        memcpy(pmin + k * 8, pmin, 8 * sizeof(float));
        memcpy(pmax + k * 8, pmax, 8 * sizeof(float));
    }
    const __m512 zero = _mm512_setzero_ps();
    const __m512 lo = _mm512_add_ps(avx512_reduce16(pmin, true), zero);
    const __m512 hi = _mm512_add_ps(avx512_reduce16(pmax, false), zero);
    const __mmask16 constant = _mm512_cmp_ps_mask(hi, lo, _CMP_EQ_OQ);
    /* Lanes past count repeat group 0, so all 16 may be tested. NaN compares false. */
    *bounded = _mm512_cmp_ps_mask(_mm512_sub_ps(hi, lo), _mm512_set1_ps(INFINITY), _CMP_LT_OQ) ==
               (__mmask16)0xffff;
    const __m512d qmax = _mm512_set1_pd((double)((1u << bits) - 1u));
    const __m256 lo_a = _mm512_castps512_ps256(lo), lo_b = _mm512_extractf32x8_ps(lo, 1);
    const __m256 hi_a = _mm512_castps512_ps256(hi), hi_b = _mm512_extractf32x8_ps(hi, 1);
    const __m512d dlo_a = _mm512_cvtps_pd(lo_a), dlo_b = _mm512_cvtps_pd(lo_b);
    __m256 s_a = _mm512_cvtpd_ps(_mm512_div_pd(_mm512_sub_pd(_mm512_cvtps_pd(hi_a), dlo_a), qmax));
    __m256 s_b = _mm512_cvtpd_ps(_mm512_div_pd(_mm512_sub_pd(_mm512_cvtps_pd(hi_b), dlo_b), qmax));
    /* max(s, FLT_MIN) returns FLT_MIN when s is NaN too, as !(s >= FLT_MIN) does. */
    __m512 scale = _mm512_insertf32x8(_mm512_castps256_ps512(s_a), s_b, 1);
    scale = _mm512_max_ps(scale, _mm512_set1_ps(0x1p-126f));
    __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), scale);
    const __m512d neg = _mm512_set1_pd(-0.0);
    __m256 z_a = _mm512_cvtpd_ps(
        _mm512_div_pd(_mm512_xor_pd(dlo_a, neg), _mm512_cvtps_pd(_mm512_castps512_ps256(scale))));
    __m256 z_b = _mm512_cvtpd_ps(_mm512_div_pd(_mm512_xor_pd(dlo_b, neg),
                                               _mm512_cvtps_pd(_mm512_extractf32x8_ps(scale, 1))));
    __m512 zp = _mm512_insertf32x8(_mm512_castps256_ps512(z_a), z_b, 1);
    /* Constant groups: scale 1, inv 0, zero point -lo. */
    scale = _mm512_mask_mov_ps(scale, constant, _mm512_set1_ps(1.0f));
    inv = _mm512_mask_mov_ps(inv, constant, zero);
    zp = _mm512_mask_mov_ps(zp, constant, _mm512_xor_ps(lo, _mm512_set1_ps(-0.0f)));
    /* The batch's own lo and inv with plain stores (the next pass broadcasts them one by one:
     * a masked store does not forward to those loads). */
    _mm512_storeu_ps(glo, lo);
    _mm512_storeu_ps(ginv, inv);
    const __mmask16 k = (__mmask16)((1u << count) - 1u);
    _mm512_mask_storeu_ps(scales, k, scale);
    _mm512_mask_storeu_ps(zero_points, k, zp);
}

static inline void simd_codes(uint8_t *dst, simd_v x, simd_v lo, simd_v inv, simd_v qmax,
                              simd_v *flag)
{
    /* min(qmax, u), not min(u, qmax): the NaN of a non-finite input must survive. */
    simd_v u = _mm512_min_ps(qmax, _mm512_mul_ps(_mm512_sub_ps(x, lo), inv));
    __m512i q = _mm512_cvtps_epi32(u);
    *flag = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(*flag), q));
    _mm_storeu_si128((__m128i *)dst, _mm512_cvtepi32_epi8(q));
}

/* The codes of simd_codes, without the clamp for bounded batches (kernels_simd.h). */
static inline __m512i avx512_code(__m512 x, __m512 lo, __m512 inv, __m512 qmax, bool clamp)
{
    __m512 u = _mm512_mul_ps(_mm512_sub_ps(x, lo), inv);
    return _mm512_cvtps_epi32(clamp ? _mm512_min_ps(qmax, u) : u);
}

/* simd_block for bfloat16: the even elements of 32 come out of one load by a shift and the
 * odd ones by a mask (a bfloat16 is the upper half of its float32), so the codes of
 * neighbours sit in the same lane of two vectors and combine with a shift and an OR before
 * one narrowing per 32 elements (no widening shuffle per load, no pack-and-permute). */
static inline void simd_block_bf16(const void *src, size_t i, simd_v lo, simd_v inv, simd_v qmax,
                                   unsigned bits, bool clamp, uint8_t *out, simd_v *flag)
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i v0 = _mm512_loadu_si512((const uint16_t *)src + i);
    const __m512i v1 = _mm512_loadu_si512((const uint16_t *)src + i + 32);
#define SIMD_QB(x) avx512_code(_mm512_castsi512_ps(x), lo, inv, qmax, clamp)
    /* Lane l: elements 2l (e) and 2l + 1 (o) of the first 32 (0) and of the next 32 (1). */
    const __m512i e0 = SIMD_QB(_mm512_slli_epi32(v0, 16)), o0 = SIMD_QB(_mm512_and_si512(v0, hi));
    const __m512i e1 = SIMD_QB(_mm512_slli_epi32(v1, 16)), o1 = SIMD_QB(_mm512_and_si512(v1, hi));
#undef SIMD_QB
    __m512i any = _mm512_ternarylogic_epi32(e0, o0, e1, 0xfe);
    *flag =
        _mm512_castsi512_ps(_mm512_ternarylogic_epi32(any, o1, _mm512_castps_si512(*flag), 0xfe));
    if (bits == 8) {
        /* Lane l: bytes 2l, 2l + 1. */
        _mm256_storeu_si256((__m256i *)out,
                            _mm512_cvtepi32_epi16(_mm512_or_si512(e0, _mm512_slli_epi32(o0, 8))));
        _mm256_storeu_si256((__m256i *)(out + 32),
                            _mm512_cvtepi32_epi16(_mm512_or_si512(e1, _mm512_slli_epi32(o1, 8))));
    } else if (bits == 4) {
        /* Lane l: packed byte l. */
        _mm_storeu_si128((__m128i *)out,
                         _mm512_cvtepi32_epi8(_mm512_or_si512(e0, _mm512_slli_epi32(o0, 4))));
        _mm_storeu_si128((__m128i *)(out + 16),
                         _mm512_cvtepi32_epi8(_mm512_or_si512(e1, _mm512_slli_epi32(o1, 4))));
    } else {
        /* Lane l: the 4 bits of elements 2l, 2l + 1; lanes 2m and 2m + 1 make packed byte m,
         * combined in the low byte of qword m. */
        __m512i r0 = _mm512_or_si512(e0, _mm512_slli_epi32(o0, 2));
        __m512i r1 = _mm512_or_si512(e1, _mm512_slli_epi32(o1, 2));
        r0 = _mm512_or_si512(r0, _mm512_srli_epi64(r0, 28));
        r1 = _mm512_or_si512(r1, _mm512_srli_epi64(r1, 28));
        _mm_storel_epi64((__m128i *)out, _mm512_cvtepi64_epi8(r0));
        _mm_storel_epi64((__m128i *)(out + 8), _mm512_cvtepi64_epi8(r1));
    }
}

/* 64 elements quantized and packed in registers: the four code vectors are narrowed
 * together (two packs and one permutation instead of four narrowing stores), then combined
 * into 4- or 2-bit codes as simd_pack does. */
#define SIMD_HAVE_BLOCK 1
static inline void simd_block(const void *src, aq_dtype dtype, size_t i, simd_v lo, simd_v inv,
                              simd_v qmax, unsigned bits, bool clamp, uint8_t *out, simd_v *flag)
{
    if (dtype == AQ_DTYPE_BF16) {
        simd_block_bf16(src, i, lo, inv, qmax, bits, clamp, out, flag);
        return;
    }
    /* Written out, not looped: the four code vectors must stay in registers. */
#define SIMD_Q(j) avx512_code(simd_load(src, dtype, i + 16 * (j)), lo, inv, qmax, clamp)
    const __m512i q[4] = {SIMD_Q(0), SIMD_Q(1), SIMD_Q(2), SIMD_Q(3)};
#undef SIMD_Q
    __m512i any = _mm512_or_si512(_mm512_or_si512(q[0], q[1]), _mm512_or_si512(q[2], q[3]));
    *flag = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(*flag), any));
    /* Lane l of the packed vector holds elements 4l..4l+3 of q0, q1, q2, q3: transpose. */
    __m512i c =
        _mm512_packus_epi16(_mm512_packus_epi32(q[0], q[1]), _mm512_packus_epi32(q[2], q[3]));
    c = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), c);
    if (bits == 8) {
        _mm512_storeu_si512(out, c);
    } else if (bits == 4) {
        __m512i w = _mm512_maddubs_epi16(c, _mm512_set1_epi16(0x1001));
        _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi16_epi8(w));
    } else {
        __m512i w = _mm512_maddubs_epi16(c, _mm512_set1_epi16(0x0401));
        __m512i d = _mm512_madd_epi16(w, _mm512_set1_epi32(0x00100001));
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(d));
    }
}

/* simd_minmax_block (kernels_simd.h). A bfloat16 is the upper half of its float32, so a
 * vector of 32 of them gives the even elements as floats by one shift and the odd ones by
 * one mask, without the widening shuffle of simd_load: min and max do not care which lane
 * holds which element. */
#define SIMD_HAVE_MINMAX_BLOCK 1
static inline void simd_minmax_block(const void *src, aq_dtype dtype, size_t i, simd_v *mn0,
                                     simd_v *mn1, simd_v *mx0, simd_v *mx1)
{
    simd_v x0, x1, x2, x3;
    if (dtype == AQ_DTYPE_BF16) {
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
        const __m512i v0 = _mm512_loadu_si512((const uint16_t *)src + i);
        const __m512i v1 = _mm512_loadu_si512((const uint16_t *)src + i + 32);
        x0 = _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16));
        x1 = _mm512_castsi512_ps(_mm512_and_si512(v0, hi));
        x2 = _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16));
        x3 = _mm512_castsi512_ps(_mm512_and_si512(v1, hi));
    } else {
        x0 = simd_load(src, dtype, i);
        x1 = simd_load(src, dtype, i + 16);
        x2 = simd_load(src, dtype, i + 32);
        x3 = simd_load(src, dtype, i + 48);
    }
    *mn0 = _mm512_min_ps(*mn0, _mm512_min_ps(x0, x2));
    *mx0 = _mm512_max_ps(*mx0, _mm512_max_ps(x0, x2));
    *mn1 = _mm512_min_ps(*mn1, _mm512_min_ps(x1, x3));
    *mx1 = _mm512_max_ps(*mx1, _mm512_max_ps(x1, x3));
}

static inline bool simd_flag_any(simd_v flag)
{
    return _mm512_movepi32_mask(_mm512_castps_si512(flag)) != 0;
}

static size_t simd_pack(const uint8_t *codes, size_t nbytes, unsigned bits, uint8_t *out)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 64 <= nbytes; b += 64) {
            _mm512_storeu_si512(out + b, _mm512_loadu_si512(codes + b));
        }
    } else if (bits == 4) {
        const __m512i mul = _mm512_set1_epi16(0x1001); /* c0 + 16 * c1 */
        for (; b + 32 <= nbytes; b += 32) {
            __m512i w = _mm512_maddubs_epi16(_mm512_loadu_si512(codes + 2 * b), mul);
            _mm256_storeu_si256((__m256i *)(out + b), _mm512_cvtepi16_epi8(w));
        }
    } else {
        const __m512i mul8 = _mm512_set1_epi16(0x0401);      /* c0 + 4 * c1 */
        const __m512i mul16 = _mm512_set1_epi32(0x00100001); /* w0 + 16 * w1 */
        for (; b + 16 <= nbytes; b += 16) {
            __m512i w = _mm512_maddubs_epi16(_mm512_loadu_si512(codes + 4 * b), mul8);
            __m512i d = _mm512_madd_epi16(w, mul16);
            _mm_storeu_si128((__m128i *)(out + b), _mm512_cvtepi32_epi8(d));
        }
    }
    return b;
}

static size_t simd_unpack(const uint8_t *packed, size_t nbytes, unsigned bits, uint8_t *codes)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 64 <= nbytes; b += 64) {
            _mm512_storeu_si512(codes + b, _mm512_loadu_si512(packed + b));
        }
    } else if (bits == 4) {
        const __m512i m_lo = _mm512_set1_epi16(0x000f), m_hi = _mm512_set1_epi16(0x0f00);
        for (; b + 32 <= nbytes; b += 32) {
            __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(packed + b)));
            __m512i c = _mm512_or_si512(_mm512_and_si512(w, m_lo),
                                        _mm512_and_si512(_mm512_slli_epi16(w, 4), m_hi));
            _mm512_storeu_si512(codes + 2 * b, c);
        }
    } else {
        for (; b + 16 <= nbytes; b += 16) {
            __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(packed + b)));
            __m512i c = _mm512_and_si512(d, _mm512_set1_epi32(3));
            c = _mm512_or_si512(
                c, _mm512_and_si512(_mm512_slli_epi32(d, 6), _mm512_set1_epi32(0x300)));
            c = _mm512_or_si512(
                c, _mm512_and_si512(_mm512_slli_epi32(d, 12), _mm512_set1_epi32(0x30000)));
            c = _mm512_or_si512(
                c, _mm512_and_si512(_mm512_slli_epi32(d, 18), _mm512_set1_epi32(0x3000000)));
            _mm512_storeu_si512(codes + 4 * b, c);
        }
    }
    return b;
}

/* 16 float32 to float16 or bfloat16, rounded to nearest even as aq__f32_to_f16 and
 * aq__f32_to_bf16 do (NaN stays a quiet NaN). simd_dequant and simd_lut_make both convert
 * through here, so a table entry has the bits the arithmetic path gives its code. `finite`
 * (a constant after inlining) says that no lane is NaN, which holds whenever the group's
 * scale and zero point are finite (kernels_simd.h, simd_dequant_piece): the NaN fix-ups are
 * then left out. */
static inline __m256i avx512_half(simd_v x, aq_dtype out_dtype, bool finite)
{
    const __mmask16 nan = finite ? 0 : _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    if (out_dtype == AQ_DTYPE_F16) {
        /* The masked form: GCC's unoptimised macro for the plain one trips -Wsign-conversion. */
        __m256i h = _mm512_maskz_cvtps_ph((__mmask16)0xffff, x,
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        /* vcvtps2ph keeps the top of a NaN's payload; aq__f32_to_f16 gives sign | 0x7e00. */
        return _mm256_mask_mov_epi16(h, nan, _mm256_and_si256(h, _mm256_set1_epi16(-512)));
    }
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
    r = _mm512_mask_mov_epi32(r, nan,
                              _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

/* 32 float32 to bfloat16 as avx512_half does, but rounding without shifts (a test mask
 * picks the bias, 0x8000 for an odd upper half, 0x7fff for an even one) and narrowing both
 * vectors with one vpermt2w that takes the upper words, instead of a shift and a vpmovdw per
 * vector: the shift and shuffle pipes bound this loop on Zen 4. */
static inline __m512i avx512_bf16x2(simd_v x0, simd_v x1, bool finite)
{
    const __m512i bit16 = _mm512_set1_epi32(0x10000);
    const __m512i below = _mm512_set1_epi32(0x7fff), tie = _mm512_set1_epi32(0x8000);
    const __m512i u0 = _mm512_castps_si512(x0), u1 = _mm512_castps_si512(x1);
    __m512i r0 = _mm512_mask_add_epi32(_mm512_add_epi32(u0, below),
                                       _mm512_test_epi32_mask(u0, bit16), u0, tie);
    __m512i r1 = _mm512_mask_add_epi32(_mm512_add_epi32(u1, below),
                                       _mm512_test_epi32_mask(u1, bit16), u1, tie);
    if (!finite) {
        /* The upper word of u | 0x400000 is (u >> 16) | 0x40, as aq__f32_to_bf16. */
        const __m512i quiet = _mm512_set1_epi32(0x400000);
        r0 = _mm512_mask_or_epi32(r0, _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q), u0, quiet);
        r1 = _mm512_mask_or_epi32(r1, _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q), u1, quiet);
    }
    /* Word 2j + 1 of r0 for j < 16, word 2(j - 16) + 1 of r1 for j >= 16. */
    const __m512i upper = _mm512_setr_epi32(0x30001, 0x70005, 0xb0009, 0xf000d, 0x130011, 0x170015,
                                            0x1b0019, 0x1f001d, 0x230021, 0x270025, 0x2b0029,
                                            0x2f002d, 0x330031, 0x370035, 0x3b0039, 0x3f003d);
    return _mm512_permutex2var_epi16(r0, upper, r1);
}

/* 32 outputs (cnt of them stored) at dst[i..]: x0 holds outputs 0-15, x1 16-31. */
static inline void avx512_dq_store(simd_v x0, simd_v x1, bool finite, aq_dtype out_dtype, void *dst,
                                   size_t i, size_t cnt)
{
    const __mmask32 k = cnt >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << cnt) - 1u);
    if (out_dtype == AQ_DTYPE_F32) {
        float *d = (float *)dst + i;
        if (cnt == 32) {
            _mm512_storeu_ps(d, x0);
            _mm512_storeu_ps(d + 16, x1);
        } else {
            _mm512_mask_storeu_ps(d, (__mmask16)k, x0);
            _mm512_mask_storeu_ps(d + 16, (__mmask16)(k >> 16), x1);
        }
        return;
    }
    uint16_t *d = (uint16_t *)dst + i;
    if (out_dtype == AQ_DTYPE_F16) {
        const __m256i h0 = avx512_half(x0, out_dtype, finite);
        const __m256i h1 = avx512_half(x1, out_dtype, finite);
        if (cnt == 32) {
            _mm256_storeu_si256((__m256i *)d, h0);
            _mm256_storeu_si256((__m256i *)(d + 16), h1);
        } else {
            _mm256_mask_storeu_epi16(d, (__mmask16)k, h0);
            _mm256_mask_storeu_epi16(d + 16, (__mmask16)(k >> 16), h1);
        }
        return;
    }
    const __m512i h = avx512_bf16x2(x0, x1, finite);
    if (cnt == 32) {
        _mm512_storeu_si512(d, h);
    } else {
        _mm512_mask_storeu_epi16(d, k, h);
    }
}

/* 32 codes at a time (SIMD_DQ_W), so that bfloat16 narrows two vectors at once. */
#define SIMD_DQ_W 32
static inline void simd_dequant(const uint8_t *codes, simd_v zp, simd_v scale, bool finite,
                                aq_dtype out_dtype, void *dst, size_t i, size_t cnt)
{
    const __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    const __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16)));
    const simd_v x0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(q0), zp), scale);
    const simd_v x1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(q1), zp), scale);
    avx512_dq_store(x0, x1, finite, out_dtype, dst, i, cnt);
}

/* kquant (kernels_simd.h, simd_kq_dequant): a * q - b, a multiplication then a subtraction
 * (this file is built without FMA). */
#define SIMD_HAVE_KQ_DEQUANT 1
static inline void simd_kq_dequant(const uint8_t *codes, const float *a, const float *b,
                                   unsigned shift, bool finite, aq_dtype out_dtype, void *dst,
                                   size_t i, size_t cnt)
{
    const size_t j1 = (size_t)16 >> shift; /* sub-block of codes 16..31: 1 or 0 */
    const __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    const __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16)));
    const simd_v x0 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(a[0]), _mm512_cvtepi32_ps(q0)),
                                    _mm512_set1_ps(b[0]));
    const simd_v x1 = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(a[j1]), _mm512_cvtepi32_ps(q1)),
                                    _mm512_set1_ps(b[j1]));
    avx512_dq_store(x0, x1, finite, out_dtype, dst, i, cnt);
}

/* Dequantize by table (kernels_simd.h): the 16 outputs of codes 0..15 of a group, computed
 * by the arithmetic and conversion of simd_dequant, sit in the low half of one register;
 * vpermw (AVX-512BW) then looks up 32 outputs from 32 code words at a time. */
#ifndef SIMD_LUT
#    define SIMD_LUT 1
#endif
#ifndef SIMD_LUT_F16
#    define SIMD_LUT_F16 1
#endif
#if SIMD_LUT
#    define SIMD_HAVE_LUT 1
#    define SIMD_LUT_W 32
typedef __m512i simd_lut;

static inline simd_lut simd_lut_make(simd_v zp, simd_v scale, bool finite, aq_dtype out_dtype)
{
    const simd_v iota = _mm512_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f,
                                       10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f);
    return _mm512_zextsi256_si512(
        avx512_half(_mm512_mul_ps(_mm512_sub_ps(iota, zp), scale), out_dtype, finite));
}

/* cnt <= 32 outputs at dst[i..] from the codes (each < 16). */
static inline void simd_lut_apply(simd_lut t, const uint8_t *codes, void *dst, size_t i, size_t cnt)
{
    uint16_t *d = (uint16_t *)dst + i;
    if (cnt == SIMD_LUT_W) {
        __m512i idx = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)codes));
        _mm512_storeu_si512(d, _mm512_permutexvar_epi16(idx, t));
    } else {
        const __mmask32 k = (__mmask32)((1u << cnt) - 1u);
        __m512i idx = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(k, codes));
        _mm512_mask_storeu_epi16(d, k, _mm512_permutexvar_epi16(idx, t));
    }
}

/* Which outputs go by table: bfloat16 and float16 at 2 and 4 bits. */
static inline bool simd_lut_use(unsigned bits, aq_dtype out_dtype)
{
    return bits <= 4 && (out_dtype == AQ_DTYPE_BF16 || (SIMD_LUT_F16 && out_dtype == AQ_DTYPE_F16));
}

/* kquant by table (kernels_simd.h, simd_kq_dequantize): at 4 bits the 16 outputs a * q - b of
 * one 32-code sub-block; at 2 bits the 4 outputs of each of four 16-code sub-blocks, sub-block
 * s at entries 4s..4s+3. Computed as simd_kq_dequant computes them (a multiplication, then a
 * subtraction, then avx512_half). */
#    define SIMD_HAVE_KQ_LUT 1
/* Which kquant outputs go by table: float16 and bfloat16 at 2 bits. At 4 bits a table serves
 * one 32-code sub-block, and building it (a 16-lane conversion) then looking up costs more
 * than converting the two 16-lane vectors of arithmetic (measured 0.77-0.81x). */
static inline bool simd_kq_lut_use(unsigned bits, aq_dtype out_dtype)
{
    return bits == 2 && (out_dtype == AQ_DTYPE_BF16 || out_dtype == AQ_DTYPE_F16);
}

static inline simd_lut simd_kq_lut_make(const float *a, const float *b, unsigned bits, bool finite,
                                        aq_dtype out_dtype)
{
    simd_v av, bv, q;
    if (bits == 2) {
        const __m512i s = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        av = _mm512_permutexvar_ps(s, _mm512_castps128_ps512(_mm_loadu_ps(a)));
        bv = _mm512_permutexvar_ps(s, _mm512_castps128_ps512(_mm_loadu_ps(b)));
        q = _mm512_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 0.0f, 1.0f, 2.0f, 3.0f, 0.0f, 1.0f, 2.0f, 3.0f,
                           0.0f, 1.0f, 2.0f, 3.0f);
    } else {
        av = _mm512_set1_ps(a[0]);
        bv = _mm512_set1_ps(b[0]);
        q = _mm512_setr_ps(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f,
                           12.0f, 13.0f, 14.0f, 15.0f);
    }
    return _mm512_zextsi256_si512(
        avx512_half(_mm512_sub_ps(_mm512_mul_ps(av, q), bv), out_dtype, finite));
}

/* cnt <= 32 outputs at dst[i..] from the step's codes; at 2 bits they are sub-blocks
 * 2 * half and 2 * half + 1 of the table's four. */
static inline void simd_kq_lut_apply(simd_lut t, const uint8_t *codes, unsigned bits, unsigned half,
                                     void *dst, size_t i, size_t cnt)
{
    uint16_t *d = (uint16_t *)dst + i;
    const __mmask32 k = cnt == SIMD_LUT_W ? (__mmask32)~0u : (__mmask32)((1u << cnt) - 1u);
    __m512i idx = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(k, codes));
    if (bits == 2) {
        const long long lo = half ? 0x0008000800080008ll : 0, hi = lo + 0x0004000400040004ll;
        idx = _mm512_add_epi16(idx, _mm512_setr_epi64(lo, lo, lo, lo, hi, hi, hi, hi));
    }
    _mm512_mask_storeu_epi16(d, k, _mm512_permutexvar_epi16(idx, t));
}

/* Whole super-blocks to float16/bfloat16 at 2 and 4 bits (kernels_simd.h, simd_kq_super16):
 * the 256-bit code of the AVX2 table, which measures faster here than the 512-bit tables
 * (bench/results/dequant_floor_2026-12-07.md); 8 bits keep simd_kq_dequant. */
#    define KQ16_BITS8 0
#    include "kernels_kq16_avx2.h"
#endif

/* The error statistics' lane-wise maximum and widening (kernels_stats.h): vmaxpd, vcvtps2pd. */
#define STATS_MAX4(a, m) ((stats_d4)_mm256_max_pd((__m256d)(a), (__m256d)(m)))
#define STATS_WIDEN4(p) ((stats_d4)_mm256_cvtps_pd(_mm_loadu_ps(p)))

#include "kernels_simd.h"
