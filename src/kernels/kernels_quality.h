/*
 * Kernel interface of the quality schemes (docs/format.md sections 5.1 and 5.2): searched
 * scales ("affine_search") and the two-level scheme ("kquant"). Included by kernels.h; the
 * kernels follow the same rules (pure, no allocation, no failure). Unlike the affine kernels,
 * they expect finite input: the driver checks first.
 */
#ifndef AQ_KERNELS_QUALITY_H
#define AQ_KERNELS_QUALITY_H

#include <math.h>

/* Quantizes a span with the searched-scale scheme. importance is NULL (all weights 1) or
 * points at the span's first importance weight (finite, >= 0). Output as the affine kernel. */
typedef void (*aq__quantize_search_fn)(const void *src, const float *importance, const aq__span *s,
                                       uint8_t *packed, float *scales, float *zero_points);

/* Quantizes a span with the two-level scheme: s->group_size is the super-block size
 * (AQ__KQ_SUPER). Writes the span's codes at packed (ceil(n * bits / 8) bytes, the last byte
 * zero-padded), the packed sub-block parameters of its super-blocks at meta (see
 * aq__kq_meta_bytes), and one d and dmin per super-block at scales and mins. */
typedef void (*aq__quantize_kquant_fn)(const void *src, const float *importance, const aq__span *s,
                                       uint8_t *packed, uint8_t *meta, float *scales, float *mins);

/* Dequantizes a span of the two-level scheme into the function's output dtype. */
typedef void (*aq__dequantize_kquant_fn)(const uint8_t *packed, const uint8_t *meta,
                                         const float *scales, const float *mins, const aq__span *s,
                                         void *dst);

/* One candidate's weighted least-squares fit from its sums (docs/format.md 5.1 and 5.2): the
 * scale s and offset m that minimise sum W (x - (s q + m))^2, with m clamped to 0 and s
 * refitted alone when offset_le0 and m > 0, and the fit's error e, in the specification's
 * operation order (double). False when the candidate is not valid: no positive determinant,
 * s not positive and finite, or m not finite. Shared by the reference kernels; the SIMD
 * kernels do the same arithmetic lane by lane. */
static inline bool aq__fit_candidate(double sw, double sx, double sxx, double sq, double sqq,
                                     double sxq, bool offset_le0, double *s_out, double *m_out,
                                     double *e_out)
{
    const double det = sw * sqq - sq * sq;
    if (!(det > 0.0)) {
        return false;
    }
    double s = (sw * sxq - sq * sx) / det;
    double m = (sx - s * sq) / sw;
    if (offset_le0 && m > 0.0) {
        m = 0.0;
        s = sxq / sqq;
    }
    if (!(s > 0.0) || !isfinite(s) || !isfinite(m)) {
        return false;
    }
    *s_out = s;
    *m_out = m;
    *e_out = sxx - (2.0 * s) * sxq - (2.0 * m) * sx + (s * s) * sqq + ((2.0 * s) * m) * sq +
             (m * m) * sw;
    return true;
}

/* Geometry of the two-level scheme (docs/format.md section 5.2), and the number of clipping
 * candidates of its sub-block search. */
#define AQ__KQ_SUPER 512u
#define AQ__KQ_CANDIDATES 8u

/* Sub-block size: 16 elements at 2 bits, 32 at 4 and 8 bits. */
static inline size_t aq__kq_sub(unsigned bits)
{
    return bits == 2 ? 16u : 32u;
}

/* Bits of each quantized sub-block scale and min: 4 at 2 bits, 6 at 4 and 8 bits. */
static inline unsigned aq__kq_param_bits(unsigned bits)
{
    return bits == 2 ? 4u : 6u;
}

/* Bytes of packed sub-block parameters of a super-block of len elements. */
static inline size_t aq__kq_meta_bytes(unsigned bits, size_t len)
{
    size_t sub = aq__kq_sub(bits);
    size_t nsub = len / sub + (len % sub != 0);
    return (nsub * 2u * aq__kq_param_bits(bits) + 7u) / 8u;
}

/* One super-block of len elements (float32, finite; w NULL = all 1): its codes go at bits
 * bit0 + i * bits of codes (zeroed by the caller; ORed in), its sub-block parameters at meta
 * (written whole), d and dmin at d_out, dmin_out. */
typedef void (*aq__kq_super_fn)(const float *x, const float *w, size_t len, unsigned bits,
                                uint8_t *codes, size_t bit0, uint8_t *meta, float *d_out,
                                float *dmin_out);

/* The reference super-block (docs/format.md 5.2). */
void aq__kq_super(const float *x, const float *w, size_t len, unsigned bits, uint8_t *codes,
                  size_t bit0, uint8_t *meta, float *d_out, float *dmin_out);

/* Step 2 of docs/format.md 5.2 in two pieces, shared by the reference and the SIMD kernels:
 * the super-block's unit (d from smax, dmin from mmax; kmax = 2^pbits - 1), and the code of
 * one sub-block parameter v (s, or -m; v >= 0 or -0) against it: nearbyint(v / unit) in the
 * default rounding mode (half to even), clamped to kmax, 0 where the unit is 0. Below 2^52,
 * adding and subtracting 2^52 rounds as nearbyint does; from 2^52 up t is an integer. */
static inline float aq__kq_param_unit(double mx, double kmax)
{
    float u = 0.0f;
    if (mx > 0.0) {
        u = (float)(mx / kmax);
        u = u >= 0x1p-126f ? u : 0x1p-126f;
    }
    return u;
}

static inline unsigned aq__kq_param_code(double v, float unit, double kmax)
{
    double t = unit > 0.0f ? v / (double)unit : 0.0;
    t = t < 0x1p52 ? (t + 0x1p52) - 0x1p52 : t;
    return (unsigned)(t < kmax ? t : kmax);
}

/* Pieces of the reference super-block shared with the SIMD one: step 2 (d, dmin and the
 * sub-block codes from the fits s, m of nsub sub-blocks, smax and mmax as in the spec); the
 * refit of step 5 from the per-sub-block float32 sums of w*q, (w*q)*q, (w*x)*q, w and w*x
 * (false: no refit; d, dmin unchanged), and its solve from the five double sums; the packed
 * sub-block parameters. */
void aq__kq_params(const double *s, const double *m, size_t nsub, unsigned bits, double smax,
                   double mmax, float *d_out, float *dmin_out, unsigned *sc, unsigned *mc);
bool aq__kq_refit(const float *tq, const float *tqq, const float *txq, const float *tw,
                  const float *tx, size_t nsub, const unsigned *sc, const unsigned *mc, float *d,
                  float *dmin);
bool aq__kq_refit_solve(double saa, double sab, double sbb, double sxa, double sxb, float *d,
                        float *dmin);
void aq__kq_put_params(uint8_t *meta, unsigned bits, size_t len, const unsigned *sc,
                       const unsigned *mc);

/* Packs n codes (integral floats, in element order; n a multiple of 8 / bits) LSB-first into
 * out, whole bytes from its first (the SIMD super-blocks, whose bit offset is byte-aligned;
 * out is overwritten, not ORed). */
static inline void aq__kq_pack_codes(const float *q, size_t n, unsigned bits, uint8_t *out)
{
    const unsigned per = 8u / bits;
    for (size_t i = 0; i < n; i += per) {
        unsigned v = 0;
        for (unsigned k = 0; k < per; k++) {
            v |= (unsigned)q[i + k] << (k * bits);
        }
        out[i / per] = (uint8_t)v;
    }
}

/* Elements start .. start + n - 1 of src (of dtype) as float32 into out (n <= 512). */
void aq__kq_load(const void *src, aq_dtype dtype, size_t start, size_t n, float *out);

/* The kquant kernel over a span of the given input dtype (aq__quantize_kquant_fn), each
 * super-block done by super (kernels_ref_kquant.c). */
void aq__kquant_span(aq__kq_super_fn super, const void *src, aq_dtype dtype,
                     const float *importance, const aq__span *s, uint8_t *packed, uint8_t *meta,
                     float *scales, float *mins);

/* A faster search for the affine_search scheme (5.1, centred, no constraint, step given) over
 * n unweighted float32 elements: 1 with (*scale, *offset) set, 0 when no candidate was valid,
 * -1 when it does not handle this n (the reference search then runs). */
typedef int (*aq__search_fit_fn)(const float *x, size_t n, unsigned bits, float lo, float hi,
                                 double step, double *scale, double *offset);

/* The affine_search kernel over a span of the given input dtype (aq__quantize_search_fn);
 * fast (may be NULL) does the search of unweighted float32 groups it handles
 * (kernels_ref_search.c). */
void aq__search_span(aq__search_fit_fn fast, const void *src, aq_dtype dtype,
                     const float *importance, const aq__span *s, uint8_t *packed, float *scales,
                     float *zero_points);

/* The reference kernels, by dtype, for the reference table (kernels_ref.c). */
void aq__quantize_search_ref_f32(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_f16(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_bf16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_f64(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_kquant_ref_f32(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_f16(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_bf16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_f64(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__dequantize_kquant_ref_f32(const uint8_t *packed, const uint8_t *meta, const float *scales,
                                   const float *mins, const aq__span *s, void *dst);
void aq__dequantize_kquant_ref_f16(const uint8_t *packed, const uint8_t *meta, const float *scales,
                                   const float *mins, const aq__span *s, void *dst);
void aq__dequantize_kquant_ref_bf16(const uint8_t *packed, const uint8_t *meta, const float *scales,
                                    const float *mins, const aq__span *s, void *dst);

/* affine_search with the AVX-512 search, and kquant with the AVX-512 super-block
 * (kernels_kquant_avx512.c; x86 builds only, handed out through
 * aq__kernels_avx512). */
void aq__quantize_search_avx512_f32(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_avx512_f16(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_avx512_bf16(const void *src, const float *importance, const aq__span *s,
                                     uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_avx512_f64(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_kquant_avx512_f32(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx512_f16(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx512_bf16(const void *src, const float *importance, const aq__span *s,
                                     uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx512_f64(const void *src, const float *importance, const aq__span *s,
                                    uint8_t *packed, uint8_t *meta, float *scales, float *mins);

/* kquant with the AVX2 super-block (kernels_kquant_avx2.c; x86 builds only, handed out
 * through aq__kernels_avx2). */
void aq__quantize_kquant_avx2_f32(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx2_f16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx2_bf16(const void *src, const float *importance, const aq__span *s,
                                   uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_avx2_f64(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);

/* kquant with the NEON super-block (kernels_kquant_neon.c; AArch64 builds only, handed out
 * through aq__kernels_neon). */
void aq__quantize_kquant_neon_f32(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_neon_f16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_neon_bf16(const void *src, const float *importance, const aq__span *s,
                                   uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_neon_f64(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);

#endif /* AQ_KERNELS_QUALITY_H */
