/*
 * Error statistics (aq__error_stats_fn) with one summation order for every kernel table, so
 * that every figure derived from them (SQNR, cosine, errors, and the floors and budgets that
 * decide bytes from them) is the same on every CPU.
 *
 * The order: element k of a call adds to lane k % 8 of eight double accumulators per sum; at
 * the end of the call the lanes are added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
 * and that total is added to acc. Every term is computed in double from the source value (exact
 * for float32, float16 and bfloat16 sources; float64 keeps its precision) and the float32
 * approximation, so each lane sees the same IEEE operations in the same order whatever the vector
 * width: the eight-lane vectors below are GCC vector extensions, which the compiler splits into
 * two SSE2/NEON registers, two AVX2 registers or one AVX-512 register. The maximum absolute error
 * does not depend on the order.
 *
 * Included by each kernel translation unit, after it defines how to widen a run of its source
 * elements to float32 (STATS_WIDEN); nothing here is compiled on its own.
 */
#ifndef AQ_KERNELS_STATS_H
#define AQ_KERNELS_STATS_H

#include "kernels.h"

#include <string.h>

#define STATS_LANES 8
/* Elements widened to float32 at a time for 2-byte sources: a multiple of the lane count, so
 * lane k % 8 does not depend on the staging. */
#define STATS_RUN 256

/* The eight lanes as two halves of four: 32-byte vectors, which GCC keeps in registers on
 * AVX2 and AVX-512 (64-byte ones it kept in memory on AVX2). */
typedef double stats_d4 __attribute__((vector_size(4 * sizeof(double))));
typedef float stats_f4 __attribute__((vector_size(4 * sizeof(float))));
typedef int64_t stats_i4 __attribute__((vector_size(4 * sizeof(int64_t))));

/* Unaligned views for the loads (the sources carry no alignment promise). */
typedef double stats_d4u __attribute__((vector_size(4 * sizeof(double)), aligned(8)));
typedef float stats_f4u __attribute__((vector_size(4 * sizeof(float)), aligned(4)));

typedef struct stats_lanes {
    stats_d4 xx[2], ee[2], xy[2], yy[2], mx[2];
} stats_lanes;

/* Lane-wise maximum of two vectors of non-negative values (a NaN in a is passed over): any order
 * gives the same result, so an instruction set may define its own (vmaxpd on x86); this one selects
 * bitwise. */
/* Four float32 values from p (no alignment) widened to double. An instruction set may define
 * its own (vcvtps2pd on x86, where GCC 12 lowers the generic conversion through the stack). */
#ifndef STATS_WIDEN4
#    define STATS_WIDEN4(p) __builtin_convertvector(*(const stats_f4u *)(p), stats_d4)
#endif

#ifndef STATS_MAX4
#    define STATS_MAX4(a, m) \
        ((stats_d4)(((stats_i4)(a) & ((a) > (m))) | ((stats_i4)(m) & ~((a) > (m)))))
#endif

/* Adds four elements to the lanes of one half (xx .. mx name that half's accumulators). */
#define STATS_ADD4(xx, ee, xy, yy, mx, x, v)                   \
    do {                                                       \
        const stats_d4 x_ = (x), v_ = (v), e_ = x_ - v_;       \
        xx += x_ * x_;                                         \
        ee += e_ * e_;                                         \
        xy += x_ * v_;                                         \
        yy += v_ * v_;                                         \
        mx = STATS_MAX4((stats_d4)((stats_i4)e_ & ~sign), mx); \
    } while (0)

/* The loop over whole groups of eight elements, x given by load(i) as a stats_d4 of elements
 * i .. i + 3; the lanes live in local variables across it, one named variable per half so
 * that they stay in registers. */
#define STATS_LOOP(sp, n, load, y)                                                       \
    do {                                                                                 \
        const stats_i4 sign = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};              \
        stats_d4 xx0 = (sp)->xx[0], ee0 = (sp)->ee[0], xy0 = (sp)->xy[0];                \
        stats_d4 yy0 = (sp)->yy[0], mx0 = (sp)->mx[0];                                   \
        stats_d4 xx1 = (sp)->xx[1], ee1 = (sp)->ee[1], xy1 = (sp)->xy[1];                \
        stats_d4 yy1 = (sp)->yy[1], mx1 = (sp)->mx[1];                                   \
        for (; i + STATS_LANES <= (n); i += STATS_LANES) {                               \
            STATS_ADD4(xx0, ee0, xy0, yy0, mx0, load(i), STATS_WIDEN4((y) + i));         \
            STATS_ADD4(xx1, ee1, xy1, yy1, mx1, load(i + 4), STATS_WIDEN4((y) + i + 4)); \
        }                                                                                \
        (sp)->xx[0] = xx0, (sp)->ee[0] = ee0, (sp)->xy[0] = xy0;                         \
        (sp)->yy[0] = yy0, (sp)->mx[0] = mx0;                                            \
        (sp)->xx[1] = xx1, (sp)->ee[1] = ee1, (sp)->xy[1] = xy1;                         \
        (sp)->yy[1] = yy1, (sp)->mx[1] = mx1;                                            \
    } while (0)

/* One element into lane l, as STATS_ADD4 adds it there. */
static inline void stats_add1(stats_lanes *s, size_t l, double x, double v)
{
    const size_t h = l / 4, k = l % 4;
    double e = x - v;
    s->xx[h][k] += x * x;
    s->ee[h][k] += e * e;
    s->xy[h][k] += x * v;
    s->yy[h][k] += v * v;
    double a = e < 0.0 ? -e : e;
    if (a > s->mx[h][k]) {
        s->mx[h][k] = a;
    }
}

/* Elements [0, n) of x (float32) and y, starting at lane 0. */
static inline void stats_run_f32(stats_lanes *s, const float *x, const float *y, size_t n)
{
    size_t i = 0;
#define STATS_X(i) STATS_WIDEN4(x + (i))
    STATS_LOOP(s, n, STATS_X, y);
#undef STATS_X
    for (; i < n; i++) {
        stats_add1(s, i % STATS_LANES, (double)x[i], (double)y[i]);
    }
}

static inline void stats_run_f64(stats_lanes *s, const double *x, const float *y, size_t n)
{
    size_t i = 0;
#define STATS_X(i) (*(const stats_d4u *)(x + (i)))
    STATS_LOOP(s, n, STATS_X, y);
#undef STATS_X
    for (; i < n; i++) {
        stats_add1(s, i % STATS_LANES, x[i], (double)y[i]);
    }
}

static inline double stats_total(const stats_d4 v[2])
{
    return ((v[0][0] + v[0][1]) + (v[0][2] + v[0][3])) +
           ((v[1][0] + v[1][1]) + (v[1][2] + v[1][3]));
}

/* The whole aq__error_stats_fn. widen(src, dtype, i, cnt, out) writes source elements
 * i .. i+cnt-1 as float32 to out (only called for float16 and bfloat16). */
#define STATS_DEFINE(fn, widen)                                                              \
    static void fn(const void *src, aq_dtype dtype, const float *y, size_t n, double acc[5]) \
    {                                                                                        \
        stats_lanes s;                                                                       \
        memset(&s, 0, sizeof s);                                                             \
        if (dtype == AQ_DTYPE_F32) {                                                         \
            stats_run_f32(&s, (const float *)src, y, n);                                     \
        } else if (dtype == AQ_DTYPE_F64) {                                                  \
            stats_run_f64(&s, (const double *)src, y, n);                                    \
        } else {                                                                             \
            float buf[STATS_RUN] __attribute__((aligned(64)));                               \
            for (size_t i = 0; i < n; i += STATS_RUN) {                                      \
                size_t cnt = n - i < STATS_RUN ? n - i : STATS_RUN;                          \
                widen(src, dtype, i, cnt, buf);                                              \
                stats_run_f32(&s, buf, y + i, cnt);                                          \
            }                                                                                \
        }                                                                                    \
        acc[0] += stats_total(s.xx);                                                         \
        acc[1] += stats_total(s.ee);                                                         \
        acc[2] += stats_total(s.xy);                                                         \
        acc[3] += stats_total(s.yy);                                                         \
        for (size_t l = 0; l < STATS_LANES; l++) {                                           \
            if (s.mx[l / 4][l % 4] > acc[4]) {                                               \
                acc[4] = s.mx[l / 4][l % 4];                                                 \
            }                                                                                \
        }                                                                                    \
    }

#endif /* AQ_KERNELS_STATS_H */
