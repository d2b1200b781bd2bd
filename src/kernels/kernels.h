/*
 * Kernel interface. Kernels are pure functions over contiguous memory: they never allocate,
 * never fail, touch no globals and never see Arrow types. Each instruction set provides one
 * const table; dispatch.c picks one per context.
 *
 * A span is a run of consecutive elements of the flattened tensor that starts on a group
 * boundary and ends on a group boundary (or at the end of the tensor), and whose first element
 * sits at a byte boundary of the packed output (docs/format.md section 5). Spans may cross row
 * ends; groups restart at each row. The driver (src/quant) cuts tensors into spans; the
 * kernels below see only one span at a time.
 */
#ifndef AQ_KERNELS_H
#define AQ_KERNELS_H

#include "aq_common.h"

/* Where a span sits in its tensor: the column of its first element (a group boundary) and
 * the geometry needed to find group ends. */
typedef struct aq__span {
    size_t n;          /* elements in the span */
    size_t col0;       /* column of the first element within its row */
    size_t cols;       /* row length */
    size_t group_size; /* g */
    unsigned bits;     /* 2, 4 or 8 */
} aq__span;

/* Number of groups a span covers. */
size_t aq__span_groups(const aq__span *s);

/* Quantizes a span with the affine scheme. src points at the span's first element, of the
 * dtype the function is registered for. Writes ceil(n * bits / 8) bytes at packed (the last
 * byte zero-padded) and one scale and zero point per group. Returns false if any input element
 * is not finite (or, for float64, not representable as a finite float32); the output is then
 * unspecified and the caller locates the element with find_nonfinite. */
typedef bool (*aq__quantize_fn)(const void *src, const aq__span *s, uint8_t *packed, float *scales,
                                float *zero_points);

/* Dequantizes a span: x = ((float)q - zero_point) * scale, stored in the function's output
 * dtype. packed, scales and zero_points point at the span's first byte and group. */
typedef void (*aq__dequantize_fn)(const uint8_t *packed, const float *scales,
                                  const float *zero_points, const aq__span *s, void *dst);

/* Index of the first element that is NaN, +-Inf or (float64) beyond the float32 range; n if
 * none. */
typedef size_t (*aq__find_nonfinite_fn)(const void *src, size_t n);

/* Error statistics of y, a float32 approximation, against src (n elements of the function's
 * dtype): adds sum x^2, sum (x - y)^2, sum x*y and sum y^2 to acc[0..3] and raises acc[4] to
 * max |x - y|. Every table sums in the same order (kernels_stats.h), so the sums, and every
 * figure and decision taken from them, are the same on every CPU. */
typedef void (*aq__error_stats_fn)(const void *src, const float *y, size_t n, double acc[5]);

#include "kernels_quality.h"

typedef struct aq__kernel_table {
    const char *name;                                    /* "ref", "avx2", "avx512", "neon" */
    aq__quantize_fn quantize_affine[AQ_DTYPE_COUNT];     /* by input dtype */
    aq__dequantize_fn dequantize_affine[AQ_DTYPE_COUNT]; /* by output dtype; F64 is NULL */
    aq__find_nonfinite_fn find_nonfinite[AQ_DTYPE_COUNT];
    /* Quality schemes (kernels_quality.h). A table may leave them NULL: the driver then uses
     * the reference table's entries. */
    aq__quantize_search_fn quantize_search[AQ_DTYPE_COUNT];     /* by input dtype */
    aq__quantize_kquant_fn quantize_kquant[AQ_DTYPE_COUNT];     /* by input dtype */
    aq__dequantize_kquant_fn dequantize_kquant[AQ_DTYPE_COUNT]; /* by output dtype */
    /* By source dtype; NULL: the reference table's (always for float64, whose values the
     * SIMD loads round to float32). */
    aq__error_stats_fn error_stats[AQ_DTYPE_COUNT];
    /* ggml's block encoders (kernels_ggml.h); NULL: the reference's. */
    const struct aq__ggml_kernels *ggml;
} aq__kernel_table;

extern const aq__kernel_table aq__kernels_ref;
/* The SIMD tables, each defined only in builds for its architecture (sources.cmake) and
 * handed out by aq__kernels_select only when the CPU and the OS support it. */
extern const aq__kernel_table aq__kernels_avx2;
extern const aq__kernel_table aq__kernels_avx512;
extern const aq__kernel_table aq__kernels_neon;

/* Every table this build has, best first, with whether this CPU can run it (for tests and
 * benchmarks that compare tables). Returns the number of entries written to `tables` and
 * `supported` (at most `cap`). */
size_t aq__kernels_list(const aq__kernel_table **tables, bool *supported, size_t cap);

/* The table for this CPU, or the one named by the environment variable AQ_KERNELS ("ref",
 * "avx2", ...) when it is set. Returns NULL and fills err when AQ_KERNELS names a table this
 * build or this CPU does not have. */
const aq__kernel_table *aq__kernels_select(aq_error *err);

/* Per-group parameters of the affine scheme (docs/format.md section 3), shared by every
 * kernel so that the once-per-group arithmetic is written exactly once. lo and hi are the
 * group's float32 min and max. */
static inline void aq__affine_params(float lo, float hi, unsigned bits, float *scale, float *inv,
                                     float *zero_point)
{
    lo = lo + 0.0f;
    hi = hi + 0.0f;
    if (hi == lo) {
        *scale = 1.0f;
        *inv = 0.0f; /* every code is 0: (x - lo) * 0 */
        *zero_point = -lo;
        return;
    }
    double qmax = (double)((1u << bits) - 1u);
    float s = (float)(((double)hi - (double)lo) / qmax);
    if (!(s >= 0x1p-126f)) {
        s = 0x1p-126f;
    }
    *scale = s;
    *inv = 1.0f / s;
    *zero_point = (float)(-(double)lo / (double)s);
}

#endif /* AQ_KERNELS_H */
