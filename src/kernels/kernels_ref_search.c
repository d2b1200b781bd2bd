/*
 * Reference kernels of the searched-scale scheme (docs/format.md section 5.1): per group, a
 * grid of clipping ranges, each followed by the closed-form weighted least-squares refit of
 * scale and offset; the candidate with the smallest weighted squared error wins. The output is
 * plain affine, so the affine dequantizer reads it.
 *
 * The loops are written so that the compiler can vectorise them (eight independent double
 * lanes, float32 rounding by the 2^23 trick, no calls in the loop bodies); the lane structure
 * is part of the specification, so SIMD versions and the numpy reference sum in the same order.
 */
#include "kernels.h"

#include <float.h>
#include <math.h>

#define SRCH_LANES 8
#define SRCH_CANDIDATES 16

#if defined(__GNUC__)
#    define SRCH_INLINE static inline __attribute__((always_inline))
#else
#    define SRCH_INLINE static inline
#endif

SRCH_INLINE float srch_load(const void *src, aq_dtype dtype, size_t i)
{
    switch (dtype) {
    case AQ_DTYPE_F32:
        return ((const float *)src)[i];
    case AQ_DTYPE_F16:
        return aq__f16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_BF16:
        return aq__bf16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_F64:
        return (float)((const double *)src)[i];
    case AQ_DTYPE_COUNT:
        break;
    }
    return 0.0f;
}

/* Clamps to [0, qmax] (a NaN becomes 0), then rounds half to even: adding and subtracting
 * 2^23 rounds any value in [0, 2^22] to an integer in the default rounding mode. */
SRCH_INLINE float srch_code(float u, float qmax)
{
    u = u > 0.0f ? u : 0.0f;
    u = u < qmax ? u : qmax;
    return (u + 0x1p23f) - 0x1p23f;
}

SRCH_INLINE double srch_reduce(const double *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* The search of docs/format.md 5.1 over n elements of src (dtype given) with weights w (NULL:
 * all 1): candidate c has qmax + first + c * step levels over [lo, hi], centred or anchored
 * at lo. Returns false when no candidate is valid. */
SRCH_INLINE bool srch_fit(const void *src, aq_dtype dtype, const float *w, size_t n, unsigned bits,
                          float lo, float hi, double first, double step, bool centred,
                          bool offset_le0, double *scale, double *offset)
{
    const float qmax = (float)((1u << bits) - 1u);
    double lw[SRCH_LANES] = {0}, lx[SRCH_LANES] = {0}, lxx[SRCH_LANES] = {0};
    size_t i = 0;
    for (; i + SRCH_LANES <= n; i += SRCH_LANES) {
        for (size_t j = 0; j < SRCH_LANES; j++) {
            double W = w != NULL ? (double)w[i + j] : 1.0;
            double X = (double)srch_load(src, dtype, i + j);
            lw[j] += W;
            lx[j] += W * X;
            lxx[j] += (W * X) * X;
        }
    }
    for (size_t j = 0; i + j < n; j++) {
        double W = w != NULL ? (double)w[i + j] : 1.0;
        double X = (double)srch_load(src, dtype, i + j);
        lw[j] += W;
        lx[j] += W * X;
        lxx[j] += (W * X) * X;
    }
    const double sw = srch_reduce(lw), sx = srch_reduce(lx), sxx = srch_reduce(lxx);
    const double range = (double)hi - (double)lo;

    bool found = false;
    double best_e = 0.0, best_s = 0.0, best_m = 0.0;
    for (unsigned c = 0; c < SRCH_CANDIDATES; c++) {
        double levels = (double)qmax + first + (double)c * step;
        float inv = (float)(levels / range);
        if (!(inv <= FLT_MAX)) {
            continue;
        }
        float off = centred ? (float)((levels - (double)qmax) / 2.0) : 0.0f;
        double lq[SRCH_LANES] = {0}, lqq[SRCH_LANES] = {0}, lxq[SRCH_LANES] = {0};
        for (i = 0; i + SRCH_LANES <= n; i += SRCH_LANES) {
            for (size_t j = 0; j < SRCH_LANES; j++) {
                double W = w != NULL ? (double)w[i + j] : 1.0;
                float x = srch_load(src, dtype, i + j);
                double Q = (double)srch_code((x - lo) * inv - off, qmax);
                lq[j] += W * Q;
                lqq[j] += (W * Q) * Q;
                lxq[j] += (W * (double)x) * Q;
            }
        }
        for (size_t j = 0; i + j < n; j++) {
            double W = w != NULL ? (double)w[i + j] : 1.0;
            float x = srch_load(src, dtype, i + j);
            double Q = (double)srch_code((x - lo) * inv - off, qmax);
            lq[j] += W * Q;
            lqq[j] += (W * Q) * Q;
            lxq[j] += (W * (double)x) * Q;
        }
        const double sq = srch_reduce(lq), sqq = srch_reduce(lqq), sxq = srch_reduce(lxq);
        double s, m, e;
        if (!aq__fit_candidate(sw, sx, sxx, sq, sqq, sxq, offset_le0, &s, &m, &e)) {
            continue;
        }
        if (!found || e < best_e) {
            found = true;
            best_e = e;
            best_s = s;
            best_m = m;
        }
    }
    if (found) {
        *scale = best_s;
        *offset = best_m;
    }
    return found;
}

/* One group: the searched fit, or the affine parameters of section 3 when no candidate is
 * valid or the fit does not fit float32. */
SRCH_INLINE void srch_group(aq__search_fit_fn fast, const void *src, aq_dtype dtype, const float *w,
                            size_t n, unsigned bits, uint8_t *packed, size_t bit0, float *scale_out,
                            float *zp_out)
{
    const float qmax = (float)((1u << bits) - 1u);
    float lo = srch_load(src, dtype, 0), hi = lo;
    for (size_t i = 1; i < n; i++) {
        float x = srch_load(src, dtype, i);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    lo = lo + 0.0f;
    hi = hi + 0.0f;
    float scale, inv, zp;
    double s, m;
    int found = 0;
    if (hi != lo) {
        const double step = bits == 2 ? 0.25 : 0.125;
        found = fast != NULL && dtype == AQ_DTYPE_F32 && w == NULL
                    ? fast((const float *)src, n, bits, lo, hi, step, &s, &m)
                    : -1;
        if (found < 0) {
            found = srch_fit(src, dtype, w, n, bits, lo, hi, 0.0, step, true, false, &s, &m);
        }
    }
    if (found > 0) {
        scale = (float)s;
        if (!(scale >= 0x1p-126f)) {
            scale = 0x1p-126f;
        }
        zp = (float)(-m / (double)scale);
        /* The extreme codes must dequantize to finite values (a fit may overshoot the
         * float32 range when the group spans most of it). */
        if (scale <= FLT_MAX && isfinite(zp) && isfinite((0.0f - zp) * scale) &&
            isfinite((qmax - zp) * scale)) {
            inv = 1.0f / scale;
            for (size_t i = 0; i < n; i++) {
                float q = srch_code(srch_load(src, dtype, i) * inv + zp, qmax);
                size_t bit = bit0 + i * bits;
                packed[bit / 8] |= (uint8_t)((unsigned)q << (bit % 8));
            }
            *scale_out = scale;
            *zp_out = zp;
            return;
        }
    }
    /* The affine scheme of section 3. */
    aq__affine_params(lo, hi, bits, &scale, &inv, &zp);
    for (size_t i = 0; i < n; i++) {
        float q = srch_code((srch_load(src, dtype, i) - lo) * inv, qmax);
        size_t bit = bit0 + i * bits;
        packed[bit / 8] |= (uint8_t)((unsigned)q << (bit % 8));
    }
    *scale_out = scale;
    *zp_out = zp;
}

void aq__search_span(aq__search_fit_fn fast, const void *src, aq_dtype dtype,
                     const float *importance, const aq__span *s, uint8_t *packed, float *scales,
                     float *zero_points)
{
    const size_t elem = aq_dtype_size(dtype);
    memset(packed, 0, (s->n * s->bits + 7) / 8);
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        srch_group(fast, (const char *)src + start * elem, dtype,
                   importance != NULL ? importance + start : NULL, len, s->bits, packed,
                   start * s->bits, &scales[group], &zero_points[group]);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
}

#define SRCH_ADAPTER(suffix, dtype)                                                          \
    void aq__quantize_search_ref_##suffix(const void *src, const float *importance,          \
                                          const aq__span *s, uint8_t *packed, float *scales, \
                                          float *zero_points)                                \
    {                                                                                        \
        aq__search_span(NULL, src, dtype, importance, s, packed, scales, zero_points);       \
    }

SRCH_ADAPTER(f32, AQ_DTYPE_F32)
SRCH_ADAPTER(f16, AQ_DTYPE_F16)
SRCH_ADAPTER(bf16, AQ_DTYPE_BF16)
SRCH_ADAPTER(f64, AQ_DTYPE_F64)
