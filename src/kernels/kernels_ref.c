/*
 * Reference kernels: docs/format.md written as plainly as possible. Every SIMD kernel is
 * tested for bit-identical output against these, so clarity wins over speed here.
 */
#include "kernels.h"
#include "kernels_stats.h"

#include <math.h>

/* Element i of a span as float32 (docs/format.md section 2). */
static float ref_load(const void *src, aq_dtype dtype, size_t i)
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
    return NAN;
}

size_t aq__span_groups(const aq__span *s)
{
    size_t groups = 0;
    size_t col = s->col0;
    for (size_t done = 0; done < s->n;) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - done) {
            len = s->n - done;
        }
        done += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
        groups++;
    }
    return groups;
}

static bool ref_quantize(const void *src, aq_dtype dtype, const aq__span *s, uint8_t *packed,
                         float *scales, float *zero_points)
{
    const size_t bytes = (s->n * s->bits + 7) / 8;
    const float qmax = (float)((1u << s->bits) - 1u);
    bool finite = true;
    memset(packed, 0, bytes);

    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        float lo = ref_load(src, dtype, start);
        float hi = lo;
        for (size_t i = start; i < start + len; i++) {
            float x = ref_load(src, dtype, i);
            if (!isfinite(x)) {
                finite = false;
            }
            if (x < lo) {
                lo = x;
            }
            if (x > hi) {
                hi = x;
            }
        }
        float scale, inv, zero_point;
        aq__affine_params(lo, hi, s->bits, &scale, &inv, &zero_point);
        lo = lo + 0.0f;
        scales[group] = scale;
        zero_points[group] = zero_point;
        for (size_t i = start; i < start + len; i++) {
            float t = ref_load(src, dtype, i) - lo;
            float u = t * inv;
            float q = nearbyintf(u);
            if (!(q >= 0.0f)) { /* also maps the NaN of a non-finite input to 0 */
                q = 0.0f;
            }
            if (q > qmax) {
                q = qmax;
            }
            size_t bit = i * s->bits;
            packed[bit / 8] |= (uint8_t)((unsigned)q << (bit % 8));
        }
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
    return finite;
}

static void ref_dequantize(const uint8_t *packed, const float *scales, const float *zero_points,
                           const aq__span *s, aq_dtype out_dtype, void *dst)
{
    const unsigned mask = (1u << s->bits) - 1u;
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        for (size_t i = start; i < start + len; i++) {
            size_t bit = i * s->bits;
            unsigned q = ((unsigned)packed[bit / 8] >> (bit % 8)) & mask;
            float x = ((float)q - zero_points[group]) * scales[group];
            switch (out_dtype) {
            case AQ_DTYPE_F32:
                ((float *)dst)[i] = x;
                break;
            case AQ_DTYPE_F16:
                ((uint16_t *)dst)[i] = aq__f32_to_f16(x);
                break;
            case AQ_DTYPE_BF16:
                ((uint16_t *)dst)[i] = aq__f32_to_bf16(x);
                break;
            case AQ_DTYPE_F64:
            case AQ_DTYPE_COUNT:
                break;
            }
        }
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
}

static size_t ref_find_nonfinite(const void *src, aq_dtype dtype, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref_load(src, dtype, i))) {
            return i;
        }
    }
    return n;
}

/* One small adapter per dtype, so the table holds plain function pointers. */
#define AQ__REF_ADAPTERS(suffix, dtype)                                                    \
    static bool ref_quantize_##suffix(const void *src, const aq__span *s, uint8_t *packed, \
                                      float *scales, float *zero_points)                   \
    {                                                                                      \
        return ref_quantize(src, dtype, s, packed, scales, zero_points);                   \
    }                                                                                      \
    static size_t ref_find_nonfinite_##suffix(const void *src, size_t n)                   \
    {                                                                                      \
        return ref_find_nonfinite(src, dtype, n);                                          \
    }

AQ__REF_ADAPTERS(f32, AQ_DTYPE_F32)
AQ__REF_ADAPTERS(f16, AQ_DTYPE_F16)
AQ__REF_ADAPTERS(bf16, AQ_DTYPE_BF16)
AQ__REF_ADAPTERS(f64, AQ_DTYPE_F64)

#define AQ__REF_DEQUANT(suffix, dtype)                                                          \
    static void ref_dequantize_##suffix(const uint8_t *packed, const float *scales,             \
                                        const float *zero_points, const aq__span *s, void *dst) \
    {                                                                                           \
        ref_dequantize(packed, scales, zero_points, s, dtype, dst);                             \
    }

AQ__REF_DEQUANT(f32, AQ_DTYPE_F32)
AQ__REF_DEQUANT(f16, AQ_DTYPE_F16)
AQ__REF_DEQUANT(bf16, AQ_DTYPE_BF16)

/* Error statistics: kernels_stats.h, the same sums on every table. */
static void ref_widen(const void *src, aq_dtype dtype, size_t i, size_t cnt, float *out)
{
    for (size_t k = 0; k < cnt; k++) {
        out[k] = ref_load(src, dtype, i + k);
    }
}

STATS_DEFINE(ref_error_stats, ref_widen)

#define REF_STATS(suffix, dtype)                                                                   \
    static void ref_error_stats_##suffix(const void *src, const float *y, size_t n, double acc[5]) \
    {                                                                                              \
        ref_error_stats(src, dtype, y, n, acc);                                                    \
    }
REF_STATS(f32, AQ_DTYPE_F32)
REF_STATS(f16, AQ_DTYPE_F16)
REF_STATS(bf16, AQ_DTYPE_BF16)
REF_STATS(f64, AQ_DTYPE_F64)

const aq__kernel_table aq__kernels_ref = {
    .name = "ref",
    .quantize_affine = {ref_quantize_f32, ref_quantize_f16, ref_quantize_bf16, ref_quantize_f64},
    .dequantize_affine = {ref_dequantize_f32, ref_dequantize_f16, ref_dequantize_bf16, NULL},
    .find_nonfinite = {ref_find_nonfinite_f32, ref_find_nonfinite_f16, ref_find_nonfinite_bf16,
                       ref_find_nonfinite_f64},
    .quantize_search = {aq__quantize_search_ref_f32, aq__quantize_search_ref_f16,
                        aq__quantize_search_ref_bf16, aq__quantize_search_ref_f64},
    .quantize_kquant = {aq__quantize_kquant_ref_f32, aq__quantize_kquant_ref_f16,
                        aq__quantize_kquant_ref_bf16, aq__quantize_kquant_ref_f64},
    .dequantize_kquant = {aq__dequantize_kquant_ref_f32, aq__dequantize_kquant_ref_f16,
                          aq__dequantize_kquant_ref_bf16, NULL},
    .error_stats = {ref_error_stats_f32, ref_error_stats_f16, ref_error_stats_bf16,
                    ref_error_stats_f64},
};
