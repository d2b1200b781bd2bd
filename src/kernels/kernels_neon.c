/*
 * NEON (AArch64 Advanced SIMD) kernels: 4 lanes. Advanced SIMD, half-precision conversion and
 * float64 vectors are part of the AArch64 base architecture, so this file needs no flags and
 * dispatch.c no run-time check. The algorithm is kernels_simd.h; this file supplies the vector
 * primitives.
 */
#include "kernels.h"

#include <arm_neon.h>

#define SIMD_VL 4
#define SIMD_NAME "neon"
#define SIMD_TABLE_NAME aq__kernels_neon
/* kquant's super-block (kernels_kquant_neon.c). */
#define SIMD_KQUANT_QUANTIZE                                                                       \
    {                                                                                              \
        aq__quantize_kquant_neon_f32, aq__quantize_kquant_neon_f16, aq__quantize_kquant_neon_bf16, \
            aq__quantize_kquant_neon_f64                                                           \
    }

typedef float32x4_t simd_v;

static inline simd_v simd_load(const void *src, aq_dtype dtype, size_t i)
{
    switch (dtype) {
    case AQ_DTYPE_F16:
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)src + i)));
    case AQ_DTYPE_BF16:
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)src + i), 16));
    case AQ_DTYPE_F64: {
        const double *d = (const double *)src + i;
        return vcvt_high_f32_f64(vcvt_f32_f64(vld1q_f64(d)), vld1q_f64(d + 2));
    }
    case AQ_DTYPE_F32:
    case AQ_DTYPE_COUNT:
        break;
    }
    return vld1q_f32((const float *)src + i);
}

/* Tails go through a small buffer whose unused lanes repeat element i. */
static inline simd_v simd_load_part(const void *src, aq_dtype dtype, size_t i, size_t cnt)
{
    unsigned char tmp[4 * sizeof(double)];
    const size_t es = aq_dtype_size(dtype);
    memcpy(tmp, (const unsigned char *)src + i * es, cnt * es);
    for (size_t j = cnt; j < 4; j++) {
        memcpy(tmp + j * es, tmp, es);
    }
    return simd_load(tmp, dtype, 0);
}

static inline simd_v simd_set1(float f)
{
    return vdupq_n_f32(f);
}

static inline simd_v simd_zero(void)
{
    return vdupq_n_f32(0.0f);
}

static inline simd_v simd_min(simd_v a, simd_v b)
{
    return vminq_f32(a, b);
}

static inline simd_v simd_max(simd_v a, simd_v b)
{
    return vmaxq_f32(a, b);
}

static inline simd_v simd_bad_acc(simd_v acc, simd_v x)
{
    uint32x4_t z = vreinterpretq_u32_f32(vmulq_f32(x, vdupq_n_f32(0.0f)));
    return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(acc), z));
}

static inline bool simd_bad_any(simd_v acc)
{
    const uint32x4_t e = vdupq_n_u32(0x7f800000u);
    return vmaxvq_u32(vceqq_u32(vandq_u32(vreinterpretq_u32_f32(acc), e), e)) != 0;
}

static inline void simd_store(float *dst, simd_v v)
{
    vst1q_f32(dst, v);
}

/* Pairwise min/max reduce four groups' partials into one vector in two steps. */
static inline void simd_reduce(float *pmin, float *pmax, size_t count, float *lo, float *hi)
{
    for (size_t k = count; k < 4; k++) {
        memcpy(pmin + k * 4, pmin, 4 * sizeof(float));
        memcpy(pmax + k * 4, pmax, 4 * sizeof(float));
    }
    float32x4_t a = vpminq_f32(vld1q_f32(pmin), vld1q_f32(pmin + 4));
    float32x4_t b = vpminq_f32(vld1q_f32(pmin + 8), vld1q_f32(pmin + 12));
    float32x4_t c = vpmaxq_f32(vld1q_f32(pmax), vld1q_f32(pmax + 4));
    float32x4_t d = vpmaxq_f32(vld1q_f32(pmax + 8), vld1q_f32(pmax + 12));
    float rlo[4], rhi[4];
    vst1q_f32(rlo, vpminq_f32(a, b));
    vst1q_f32(rhi, vpmaxq_f32(c, d));
    memcpy(lo, rlo, count * sizeof(float));
    memcpy(hi, rhi, count * sizeof(float));
}

/* A NaN converts to 0 on ARM, so the non-finite check stays on the input values here. */
static inline void simd_codes(uint8_t *dst, simd_v x, simd_v lo, simd_v inv, simd_v qmax,
                              simd_v *flag)
{
    *flag = simd_bad_acc(*flag, x);
    simd_v u = vminq_f32(vmulq_f32(vsubq_f32(x, lo), inv), qmax);
    uint16x4_t q16 = vmovn_u32(vcvtnq_u32_f32(u)); /* round to nearest, ties to even */
    uint8x8_t q8 = vmovn_u16(vcombine_u16(q16, q16));
    uint32_t word = vget_lane_u32(vreinterpret_u32_u8(q8), 0);
    memcpy(dst, &word, 4);
}

static inline bool simd_flag_any(simd_v flag)
{
    return simd_bad_any(flag);
}

static size_t simd_pack(const uint8_t *codes, size_t nbytes, unsigned bits, uint8_t *out)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 16 <= nbytes; b += 16) {
            vst1q_u8(out + b, vld1q_u8(codes + b));
        }
    } else if (bits == 4) {
        for (; b + 16 <= nbytes; b += 16) {
            uint8x16x2_t c = vld2q_u8(codes + 2 * b);
            vst1q_u8(out + b, vorrq_u8(c.val[0], vshlq_n_u8(c.val[1], 4)));
        }
    } else {
        for (; b + 16 <= nbytes; b += 16) {
            uint8x16x4_t c = vld4q_u8(codes + 4 * b);
            uint8x16_t v = vorrq_u8(c.val[0], vshlq_n_u8(c.val[1], 2));
            v = vorrq_u8(v, vshlq_n_u8(c.val[2], 4));
            v = vorrq_u8(v, vshlq_n_u8(c.val[3], 6));
            vst1q_u8(out + b, v);
        }
    }
    return b;
}

static size_t simd_unpack(const uint8_t *packed, size_t nbytes, unsigned bits, uint8_t *codes)
{
    size_t b = 0;
    if (bits == 8) {
        for (; b + 16 <= nbytes; b += 16) {
            vst1q_u8(codes + b, vld1q_u8(packed + b));
        }
    } else if (bits == 4) {
        for (; b + 16 <= nbytes; b += 16) {
            uint8x16_t x = vld1q_u8(packed + b);
            uint8x16x2_t c = {{vandq_u8(x, vdupq_n_u8(0x0f)), vshrq_n_u8(x, 4)}};
            vst2q_u8(codes + 2 * b, c);
        }
    } else {
        const uint8x16_t m = vdupq_n_u8(3);
        for (; b + 16 <= nbytes; b += 16) {
            uint8x16_t x = vld1q_u8(packed + b);
            uint8x16x4_t c = {{vandq_u8(x, m), vandq_u8(vshrq_n_u8(x, 2), m),
                               vandq_u8(vshrq_n_u8(x, 4), m), vshrq_n_u8(x, 6)}};
            vst4q_u8(codes + 4 * b, c);
        }
    }
    return b;
}

/* `finite` (a constant after inlining) says that no lane is NaN, which holds whenever the
 * group's scale and zero point are finite (kernels_simd.h, simd_dequant_piece): the NaN
 * fix-ups are then left out. */
/* cnt <= 4 outputs of x at dst[i..]. */
static inline void neon_dq_store(simd_v x, bool finite, aq_dtype out_dtype, void *dst, size_t i,
                                 size_t cnt)
{
    if (out_dtype == AQ_DTYPE_F32) {
        float *d = (float *)dst + i;
        if (cnt == 4) {
            vst1q_f32(d, x);
        } else {
            float tmp[4];
            vst1q_f32(tmp, x);
            memcpy(d, tmp, cnt * sizeof(float));
        }
        return;
    }
    uint16x4_t h;
    if (out_dtype == AQ_DTYPE_F16) {
        h = vreinterpret_u16_f16(vcvt_f16_f32(x)); /* round to nearest even (FPCR default) */
        if (!finite) {
            /* The conversion keeps the top of a NaN's payload; aq__f32_to_f16 gives
             * sign | 0x7e00. */
            uint16x4_t nan = vmovn_u32(vmvnq_u32(vceqq_f32(x, x)));
            h = vbsl_u16(nan, vand_u16(h, vdup_n_u16(0xfe00)), h);
        }
    } else {
        /* Round to nearest even on the bits; NaN stays a quiet NaN (as aq__f32_to_bf16). */
        uint32x4_t u = vreinterpretq_u32_f32(x);
        uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
        uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd), 16);
        if (!finite) {
            uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
            r = vbslq_u32(nan, vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40)), r);
        }
        h = vmovn_u32(r);
    }
    uint16_t *d = (uint16_t *)dst + i;
    if (cnt == 4) {
        vst1_u16(d, h);
    } else {
        uint16_t tmp[4];
        vst1_u16(tmp, h);
        memcpy(d, tmp, cnt * sizeof(uint16_t));
    }
}

static inline void simd_dequant(const uint8_t *codes, simd_v zp, simd_v scale, bool finite,
                                aq_dtype out_dtype, void *dst, size_t i, size_t cnt)
{
    uint32_t word;
    memcpy(&word, codes, 4);
    uint16x8_t w = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(word)));
    simd_v x = vmulq_f32(vsubq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(w))), zp), scale);
    neon_dq_store(x, finite, out_dtype, dst, i, cnt);
}

/* kquant (kernels_simd.h, simd_kq_dequant): a * q - b, vmulq then vsubq (never the fused
 * vfmaq). 16 codes at a time, four vectors; a sub-block is a whole number of them. */
#define SIMD_HAVE_KQ_DEQUANT 1
#define SIMD_KQ_W 16
static inline void simd_kq_dequant(const uint8_t *codes, const float *a, const float *b,
                                   unsigned shift, bool finite, aq_dtype out_dtype, void *dst,
                                   size_t i, size_t cnt)
{
    const uint8x16_t c = vld1q_u8(codes);
    const uint16x8_t lo = vmovl_u8(vget_low_u8(c)), hi = vmovl_u8(vget_high_u8(c));
    const uint32x4_t q[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_u16(vget_high_u16(lo)),
                             vmovl_u16(vget_low_u16(hi)), vmovl_u16(vget_high_u16(hi))};
    for (size_t k = 0; k < 4 && 4 * k < cnt; k++) {
        const size_t j = (4 * k) >> shift;
        simd_v x = vsubq_f32(vmulq_f32(vdupq_n_f32(a[j]), vcvtq_f32_u32(q[k])), vdupq_n_f32(b[j]));
        neon_dq_store(x, finite, out_dtype, dst, i + 4 * k, cnt - 4 * k < 4 ? cnt - 4 * k : 4);
    }
}

#include "kernels_simd.h"
