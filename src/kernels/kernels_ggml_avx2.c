/*
 * The ggml block kernels compiled for AVX2 with F16C (sources.cmake). The packing is the
 * reference's code (kernels_ggml_body.h); the searches are replaced by ones that run eight
 * blocks or sub-blocks at once, one per vector lane. Each lane does the reference's arithmetic
 * operation by operation: the reference sums element i into lane i % 8 and then adds the eight
 * lanes in order, and so do these, with the data transposed (element i of every block in one
 * vector), so that a reference lane is a loop step here. The choices (which candidate wins,
 * ties included) follow the reference's order, a candidate the reference skips is masked out,
 * and gg_code's rounding of a scale code is gv_rclamp's (both round to nearest even within the
 * code range), so the bytes are the same on every input. Candidate scales that the reference
 * tries one after the other share a pass over the data here (up to GV_BATCH, each with its own
 * sums), and without importance the products by a weight of 1 are left out (they are exact). The
 * decoders of the written types do the reference's one float32 product (and difference) per
 * element, eight at a time. tests/kernels/test_ggml_kernels.c checks both. The only symbol is the
 * table aq__ggml_kernels_avx2, handed out with the AVX2 and AVX-512 kernel tables.
 */
#define GG_SIMD 1
#include "kernels_ggml_body.h"

#include <immintrin.h>

/* Up to eight blocks of n (<= 32) elements, transposed: x[8 i + k] is element i of block k.
 * Lanes past the last block hold zeros with weight 1 and their results are dropped. */
typedef struct gv_group {
    _Alignas(32) float x[32 * 8];
    _Alignas(32) float w[32 * 8];
    const float *wt; /* w, or gv_ones when there are no weights */
} gv_group;

#define GV_ONES8 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f
#define GV_ONES32 GV_ONES8, GV_ONES8, GV_ONES8, GV_ONES8
_Alignas(32) static const float gv_ones[32 * 8] = {GV_ONES32, GV_ONES32, GV_ONES32, GV_ONES32,
                                                   GV_ONES32, GV_ONES32, GV_ONES32, GV_ONES32};

/* Rows r[k] (eight floats of block k) become columns: r[i] holds float i of every block. */
static inline void gv_transpose8(__m256 *r)
{
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* dst[8 i + k] = src[k n + i] for i < n (a multiple of 8), eight blocks. */
static void gv_transpose(const float *src, unsigned n, float *dst)
{
    for (unsigned c = 0; c < n; c += 8) {
        __m256 r[8];
        for (unsigned k = 0; k < 8; k++) {
            r[k] = _mm256_loadu_ps(src + k * n + c);
        }
        gv_transpose8(r);
        for (unsigned i = 0; i < 8; i++) {
            _mm256_store_ps(dst + 8 * (c + i), r[i]);
        }
    }
}

static void gv_load(gv_group *g, const float *x, const float *w, size_t m, unsigned n)
{
    g->wt = w != NULL ? g->w : gv_ones;
    if (m == 8) {
        gv_transpose(x, n, g->x);
        if (w != NULL) {
            gv_transpose(w, n, g->w);
        }
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        for (size_t k = 0; k < 8; k++) {
            g->x[8 * i + k] = k < m ? x[k * n + i] : 0.0f;
            if (w != NULL) {
                g->w[8 * i + k] = k < m ? w[k * n + i] : 1.0f;
            }
        }
    }
}

static inline __m256 gv_x(const gv_group *g, unsigned i)
{
    return _mm256_load_ps(g->x + 8 * i);
}

static inline __m256 gv_w(const gv_group *g, unsigned i)
{
    return _mm256_load_ps(g->wt + 8 * i);
}

/* gg_rclamp lane by lane: max(lo, v) is "v < lo ? lo : v", min(hi, v) is "v > hi ? hi : v". */
static inline __m256 gv_rclamp(__m256 v, __m256 lo, __m256 hi)
{
    const __m256 magic = _mm256_set1_ps(0x1.8p23f);
    v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
    return _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
}

/* gv_rclamp in one rounding instruction, for the sums of the symmetric searches only: the
 * same integer (nearest even; the clamp keeps |v| <= 255), but -0 where gv_rclamp gives +0,
 * and there that sign does not show: x - d q is x, and a product of it adds a zero to a sum
 * that starts at +0. */
static inline __m256 gv_rclamp_sum(__m256 v, __m256 lo, __m256 hi)
{
    return _mm256_round_ps(_mm256_min_ps(hi, _mm256_max_ps(lo, v)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline __m256 gv_abs(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline __m256 gv_isfinite(__m256 v)
{
    return _mm256_cmp_ps(gv_abs(v), _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
}

/* gg_f16_round lane by lane (F16C rounds to nearest even, as aq__f32_to_f16 does). */
static inline __m256 gv_f16_round(__m256 v)
{
    v = _mm256_min_ps(_mm256_set1_ps(65504.0f), v);
    v = _mm256_max_ps(_mm256_set1_ps(-65504.0f), v);
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 1 / d where d != 0 (C's !=: also where d is NaN), else 0. */
static inline __m256 gv_inv_nz(__m256 d)
{
    const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    return _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), d));
}

/* At most this many candidate scales share one pass over a group (registers bound it). The
 * batched passes are inlined where the count is a constant, so that their sums stay in
 * registers (gv_sym_batch). */
#define GV_BATCH 4u
#define GV_INLINE static inline __attribute__((always_inline))

/* gg_sym_err per lane, of nd (<= GV_BATCH) candidate scales d[] in one pass over the group:
 * each candidate keeps its own sums, in the reference's order, so e[c] is gg_sym_err of d[c]
 * bit for bit; the candidates share the loads and run side by side. wtd false: the group has
 * no weights, and the products by a weight of 1 (exact) are left out. */
GV_INLINE void gv_sym_err_n(const gv_group *g, unsigned n, const __m256 *d, unsigned nd, bool wtd,
                            __m256 qmin, __m256 qmax, __m256 *e)
{
    __m256 id[GV_BATCH];
    for (unsigned c = 0; c < nd; c++) {
        id[c] = gv_inv_nz(d[c]);
        e[c] = _mm256_setzero_ps();
    }
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 acc[GV_BATCH];
        for (unsigned c = 0; c < nd; c++) {
            acc[c] = _mm256_setzero_ps();
        }
        for (unsigned i = l; i < n; i += GG_LANES) {
            const __m256 x = gv_x(g, i);
            for (unsigned c = 0; c < nd; c++) {
                const __m256 q = gv_rclamp_sum(_mm256_mul_ps(x, id[c]), qmin, qmax);
                const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(d[c], q));
                const __m256 wr = wtd ? _mm256_mul_ps(gv_w(g, i), r) : r;
                acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(wr, r));
            }
        }
        for (unsigned c = 0; c < nd; c++) {
            e[c] = _mm256_add_ps(e[c], acc[c]);
        }
    }
}

/* gg_sym_refit per lane, of nd (<= GV_BATCH) starting scales d0[] in one pass, as
 * gv_sym_err_n: d[c] is gg_sym_refit of d0[c] bit for bit. */
GV_INLINE void gv_sym_refit_n(const gv_group *g, unsigned n, const __m256 *d0, unsigned nd,
                              bool wtd, __m256 qmin, __m256 qmax, __m256 *d)
{
    __m256 id[GV_BATCH], sxq[GV_BATCH], sqq[GV_BATCH];
    for (unsigned c = 0; c < nd; c++) {
        id[c] = _mm256_div_ps(_mm256_set1_ps(1.0f), d0[c]);
        sxq[c] = sqq[c] = _mm256_setzero_ps();
    }
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 axq[GV_BATCH], aqq[GV_BATCH];
        for (unsigned c = 0; c < nd; c++) {
            axq[c] = aqq[c] = _mm256_setzero_ps();
        }
        for (unsigned i = l; i < n; i += GG_LANES) {
            const __m256 x = gv_x(g, i);
            const __m256 wx = wtd ? _mm256_mul_ps(gv_w(g, i), x) : x;
            for (unsigned c = 0; c < nd; c++) {
                const __m256 q = gv_rclamp_sum(_mm256_mul_ps(x, id[c]), qmin, qmax);
                const __m256 wq = wtd ? _mm256_mul_ps(gv_w(g, i), q) : q;
                axq[c] = _mm256_add_ps(axq[c], _mm256_mul_ps(wx, q));
                aqq[c] = _mm256_add_ps(aqq[c], _mm256_mul_ps(wq, q));
            }
        }
        for (unsigned c = 0; c < nd; c++) {
            sxq[c] = _mm256_add_ps(sxq[c], axq[c]);
            sqq[c] = _mm256_add_ps(sqq[c], aqq[c]);
        }
    }
    for (unsigned c = 0; c < nd; c++) {
        const __m256 pos = _mm256_cmp_ps(sqq[c], _mm256_setzero_ps(), _CMP_GT_OQ);
        d[c] = _mm256_blendv_ps(d0[c], _mm256_div_ps(sxq[c], sqq[c]), pos);
    }
}

/* gg_sym_err per lane of the scale 0: every code is 0 and x - 0 * 0 is x, so the error is the
 * sum of w x x, in the same order. */
static __m256 gv_sym_err0(const gv_group *g, unsigned n)
{
    const bool wtd = g->wt != gv_ones;
    __m256 t = _mm256_setzero_ps();
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 acc = _mm256_setzero_ps();
        for (unsigned i = l; i < n; i += GG_LANES) {
            const __m256 x = gv_x(g, i);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(wtd ? _mm256_mul_ps(gv_w(g, i), x) : x, x));
        }
        t = _mm256_add_ps(t, acc);
    }
    return t;
}

/* The batched passes with nd and the weights' presence as constants of each call (see
 * GV_BATCH). */
#define GV_BATCH_CALL(F, ...)                                \
    do {                                                     \
        const bool wtd_ = g->wt != gv_ones;                  \
        switch (nd * 2 + wtd_) {                             \
        case 9:                                              \
            F(g, n, __VA_ARGS__, 4, true, qmin, qmax, out);  \
            break;                                           \
        case 8:                                              \
            F(g, n, __VA_ARGS__, 4, false, qmin, qmax, out); \
            break;                                           \
        case 7:                                              \
            F(g, n, __VA_ARGS__, 3, true, qmin, qmax, out);  \
            break;                                           \
        case 6:                                              \
            F(g, n, __VA_ARGS__, 3, false, qmin, qmax, out); \
            break;                                           \
        case 5:                                              \
            F(g, n, __VA_ARGS__, 2, true, qmin, qmax, out);  \
            break;                                           \
        case 4:                                              \
            F(g, n, __VA_ARGS__, 2, false, qmin, qmax, out); \
            break;                                           \
        case 3:                                              \
            F(g, n, __VA_ARGS__, 1, true, qmin, qmax, out);  \
            break;                                           \
        default:                                             \
            F(g, n, __VA_ARGS__, 1, false, qmin, qmax, out); \
            break;                                           \
        }                                                    \
    } while (0)

static void gv_sym_err_batch(const gv_group *g, unsigned n, const __m256 *d, unsigned nd,
                             __m256 qmin, __m256 qmax, __m256 *out)
{
    GV_BATCH_CALL(gv_sym_err_n, d);
}

static void gv_sym_refit_batch(const gv_group *g, unsigned n, const __m256 *d0, unsigned nd,
                               __m256 qmin, __m256 qmax, __m256 *out)
{
    GV_BATCH_CALL(gv_sym_refit_n, d0);
}

/* gg_sym_search per lane. The candidates the reference tries one after the other are tried
 * GV_BATCH at a time (each pass over the group serves them all), and the best is then taken
 * in the reference's order. */
static __m256 gv_sym_search(const gv_group *g, unsigned n, int qmin_i, int qmax_i, unsigned ncand,
                            unsigned back, float step, bool f16)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 qmin = _mm256_set1_ps((float)qmin_i), qmax = _mm256_set1_ps((float)qmax_i);
    __m256 amax = zero, vmax = zero;
    for (unsigned i = 0; i < n; i++) {
        amax = _mm256_max_ps(gv_abs(gv_x(g, i)), amax);
    }
    /* The first element of largest magnitude: the last match, scanning backwards. */
    for (unsigned i = n; i-- > 0;) {
        const __m256 x = gv_x(g, i);
        vmax = _mm256_blendv_ps(vmax, x, _mm256_cmp_ps(gv_abs(x), amax, _CMP_EQ_OQ));
    }
    __m256 best_d = zero;
    __m256 best_e = gv_sym_err0(g, n);
    /* The starting scales the reference refits, in its order, with the lanes where it goes
     * on (a scale that is 0 or not finite is skipped). */
    __m256 start[2 * 16], ok0[2 * 16];
    unsigned nc = 0;
    for (unsigned side = 0; side < 2; side++) {
        for (unsigned c = 0; c < ncand && nc < 2 * 16; c++) {
            const float o = ((float)c - (float)back) * step;
            const float L = side == 0 ? (float)qmin_i + o : (float)qmax_i - o;
            if (L == 0.0f) {
                continue;
            }
            __m256 c0 = _mm256_div_ps(vmax, _mm256_set1_ps(L));
            if (f16) {
                c0 = gv_f16_round(c0);
            }
            const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(c0, zero, _CMP_NEQ_UQ), gv_isfinite(c0));
            if (_mm256_movemask_ps(ok) == 0) {
                continue;
            }
            start[nc] = c0;
            ok0[nc++] = ok;
        }
    }
    for (unsigned c0 = 0; c0 < nc; c0 += GV_BATCH) {
        const unsigned m = nc - c0 < GV_BATCH ? nc - c0 : GV_BATCH;
        __m256 cand[2][GV_BATCH], e[2][GV_BATCH];
        gv_sym_refit_batch(g, n, start + c0, m, qmin, qmax, cand[1]);
        for (unsigned c = 0; c < m; c++) {
            cand[0][c] = start[c0 + c];
            if (f16) {
                cand[1][c] = gv_f16_round(cand[1][c]);
            }
        }
        if (f16) {
            gv_sym_err_batch(g, n, cand[0], m, qmin, qmax, e[0]);
        }
        gv_sym_err_batch(g, n, cand[1], m, qmin, qmax, e[1]);
        for (unsigned c = 0; c < m; c++) {
            for (unsigned k = f16 ? 0 : 1; k < 2; k++) {
                const __m256 ok = _mm256_and_ps(
                    ok0[c0 + c], _mm256_and_ps(_mm256_cmp_ps(cand[k][c], zero, _CMP_NEQ_UQ),
                                               gv_isfinite(cand[k][c])));
                const __m256 better = _mm256_and_ps(ok, _mm256_cmp_ps(e[k][c], best_e, _CMP_LT_OQ));
                best_e = _mm256_blendv_ps(best_e, e[k][c], better);
                best_d = _mm256_blendv_ps(best_d, cand[k][c], better);
            }
        }
    }
    return _mm256_andnot_ps(_mm256_cmp_ps(amax, zero, _CMP_EQ_OQ), best_d);
}

/* gg_sym_fit1 per lane: the same start (max_ps(x, hi) is "x > hi ? x : hi"), one refit
 * (gv_sym_refit_n with one scale), the same fallbacks. */
static __m256 gv_sym_fit1(const gv_group *g, unsigned n, int qmin_i, int qmax_i)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 qmin = _mm256_set1_ps((float)qmin_i), qmax = _mm256_set1_ps((float)qmax_i);
    __m256 hi = gv_x(g, 0), lo = hi;
    for (unsigned i = 1; i < n; i++) {
        hi = _mm256_max_ps(gv_x(g, i), hi);
        lo = _mm256_min_ps(gv_x(g, i), lo);
    }
    const __m256 far = _mm256_cmp_ps(hi, _mm256_sub_ps(zero, lo), _CMP_GE_OQ);
    const __m256 d0 = _mm256_div_ps(_mm256_blendv_ps(lo, hi, far), qmin);
    const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(d0, zero, _CMP_NEQ_UQ), gv_isfinite(d0));
    __m256 d;
    gv_sym_refit_batch(g, n, &d0, 1, qmin, qmax, &d);
    return _mm256_and_ps(ok, _mm256_blendv_ps(d0, d, gv_isfinite(d)));
}

/* round(x / d) clamped, as ints, of lane k into q[k * stride + i] for the first m lanes. */
static void gv_codes_sym(const gv_group *g, unsigned n, __m256 d, int qmin, int qmax, size_t m,
                         int *q, size_t stride)
{
    const __m256 id = gv_inv_nz(d);
    const __m256 lo = _mm256_set1_ps((float)qmin), hi = _mm256_set1_ps((float)qmax);
    /* Eight elements of every lane at a time, transposed back: r[k] then holds elements
     * i0..i0+7 of lane k (n is a multiple of 8). */
    for (unsigned i0 = 0; i0 < n; i0 += 8) {
        __m256 r[8];
        for (unsigned i = 0; i < 8; i++) {
            r[i] = _mm256_castsi256_ps(
                _mm256_cvtps_epi32(gv_rclamp(_mm256_mul_ps(gv_x(g, i0 + i), id), lo, hi)));
        }
        gv_transpose8(r);
        for (size_t k = 0; k < m; k++) {
            _mm256_storeu_si256((__m256i *)(q + k * stride + i0), _mm256_castps_si256(r[k]));
        }
    }
}

static void gg_sym_blocks(const float *x, const float *w, size_t m, int qmin, int qmax,
                          unsigned ncand, unsigned back, float step, uint16_t *dh, int *q)
{
    gv_group g;
    gv_load(&g, x, w, m, GG_QK);
    const __m256 d = gv_sym_search(&g, GG_QK, qmin, qmax, ncand, back, step, true);
    _Alignas(32) float dd[8];
    _mm256_store_ps(dd, d);
    for (size_t k = 0; k < m; k++) {
        dh[k] = aq__f32_to_f16(dd[k]);
    }
    gv_codes_sym(&g, GG_QK, d, qmin, qmax, m, q, GG_QK);
}

/* One half (eight sub-blocks, one per lane) of gg_sym_super's choice of scale codes under the
 * super-block scale d (gg_sym_sub_pick, two or three codes): the codes (as floats) and their
 * errors. */
static __m256 gv_super_half(const gv_group *g, const float *s, float d, int qmin, int qmax,
                            int pmin, int pmax, bool two, __m256 *err)
{
    const __m256 dv = _mm256_set1_ps(d);
    const __m256 lo = _mm256_set1_ps((float)pmin), hi = _mm256_set1_ps((float)pmax);
    const __m256 ql = _mm256_set1_ps((float)qmin), qh = _mm256_set1_ps((float)qmax);
    const __m256 sv = _mm256_load_ps(s);
    __m256 c0;
    if (d == 0.0f) {
        c0 = _mm256_setzero_ps();
    } else if (two) {
        c0 = _mm256_round_ps(_mm256_div_ps(sv, dv), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        c0 = _mm256_min_ps(_mm256_set1_ps((float)(pmax - 1)), _mm256_max_ps(lo, c0));
    } else {
        c0 = gv_rclamp(_mm256_div_ps(sv, dv), lo, hi);
    }
    const unsigned na = two ? 2 : 3;
    __m256 a[3], dk[3], e[3];
    for (unsigned k = 0; k < na; k++) {
        a[k] = _mm256_add_ps(c0, _mm256_set1_ps((float)k - (two ? 0.0f : 1.0f)));
        dk[k] = _mm256_mul_ps(dv, a[k]);
    }
    gv_sym_err_batch(g, 16, dk, na, ql, qh, e);
    __m256 best = c0, be = _mm256_set1_ps(INFINITY);
    for (unsigned k = 0; k < na; k++) {
        const __m256 ok =
            _mm256_and_ps(_mm256_cmp_ps(a[k], lo, _CMP_GE_OQ), _mm256_cmp_ps(a[k], hi, _CMP_LE_OQ));
        const __m256 better = _mm256_and_ps(ok, _mm256_cmp_ps(e[k], be, _CMP_LT_OQ));
        be = _mm256_blendv_ps(be, e[k], better);
        best = _mm256_blendv_ps(best, a[k], better);
    }
    *err = be;
    return best;
}

/* The most groups that the fast level of Q3_K runs side by side: two super-blocks. */
#define GV_SIDE 4u

/* gv_sym_fit1 of ng (<= GV_SIDE) groups without weights, side by side: independent chains of
 * gv_sym_fit1's operations (gv_sym_refit_n's sums without the weights), so that one's
 * latencies hide another's. s[8 k + i]: sub-block i of group k. */
GV_INLINE void gv_sym_fit1_side(const gv_group *g, unsigned ng, int qmin_i, int qmax_i, float *s)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 qmin = _mm256_set1_ps((float)qmin_i), qmax = _mm256_set1_ps((float)qmax_i);
    __m256 hi[GV_SIDE], lo[GV_SIDE], d0[GV_SIDE], id[GV_SIDE], sxq[GV_SIDE], sqq[GV_SIDE];
    for (unsigned h = 0; h < ng; h++) {
        hi[h] = lo[h] = gv_x(&g[h], 0);
    }
    for (unsigned i = 1; i < 16; i++) {
        for (unsigned h = 0; h < ng; h++) {
            hi[h] = _mm256_max_ps(gv_x(&g[h], i), hi[h]);
            lo[h] = _mm256_min_ps(gv_x(&g[h], i), lo[h]);
        }
    }
    for (unsigned h = 0; h < ng; h++) {
        const __m256 far = _mm256_cmp_ps(hi[h], _mm256_sub_ps(zero, lo[h]), _CMP_GE_OQ);
        d0[h] = _mm256_div_ps(_mm256_blendv_ps(lo[h], hi[h], far), qmin);
        id[h] = _mm256_div_ps(_mm256_set1_ps(1.0f), d0[h]);
        sxq[h] = sqq[h] = zero;
    }
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 axq[GV_SIDE], aqq[GV_SIDE];
        for (unsigned h = 0; h < ng; h++) {
            axq[h] = aqq[h] = zero;
        }
        for (unsigned i = l; i < 16; i += GG_LANES) {
            for (unsigned h = 0; h < ng; h++) {
                const __m256 x = gv_x(&g[h], i);
                const __m256 q = gv_rclamp_sum(_mm256_mul_ps(x, id[h]), qmin, qmax);
                axq[h] = _mm256_add_ps(axq[h], _mm256_mul_ps(x, q));
                aqq[h] = _mm256_add_ps(aqq[h], _mm256_mul_ps(q, q));
            }
        }
        for (unsigned h = 0; h < ng; h++) {
            sxq[h] = _mm256_add_ps(sxq[h], axq[h]);
            sqq[h] = _mm256_add_ps(sqq[h], aqq[h]);
        }
    }
    for (unsigned h = 0; h < ng; h++) {
        const __m256 ok =
            _mm256_and_ps(_mm256_cmp_ps(d0[h], zero, _CMP_NEQ_UQ), gv_isfinite(d0[h]));
        const __m256 pos = _mm256_cmp_ps(sqq[h], zero, _CMP_GT_OQ);
        const __m256 d = _mm256_blendv_ps(d0[h], _mm256_div_ps(sxq[h], sqq[h]), pos);
        _mm256_store_ps(s + 8 * h, _mm256_and_ps(ok, _mm256_blendv_ps(d0[h], d, gv_isfinite(d))));
    }
}

/* gv_super_half with two codes, of ng (<= GV_SIDE) groups side by side, without weights (the
 * sums of gv_sym_err_n); group k under the super-block scale d[k]: the chosen codes as
 * floats, best[k]. */
GV_INLINE void gv_pick2_side(const gv_group *g, unsigned ng, const float *s, const float *d,
                             int qmin, int qmax, int pmin, int pmax, __m256 *best)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lo = _mm256_set1_ps((float)pmin), hi = _mm256_set1_ps((float)pmax);
    const __m256 ql = _mm256_set1_ps((float)qmin), qh = _mm256_set1_ps((float)qmax);
    __m256 a[GV_SIDE][2], fd[GV_SIDE][2], id[GV_SIDE][2], e[GV_SIDE][2];
    for (unsigned h = 0; h < ng; h++) {
        const __m256 dv = _mm256_set1_ps(d[h]);
        __m256 c0 = zero;
        if (d[h] != 0.0f) {
            c0 = _mm256_round_ps(_mm256_div_ps(_mm256_load_ps(s + 8 * h), dv),
                                 _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            c0 = _mm256_min_ps(_mm256_set1_ps((float)(pmax - 1)), _mm256_max_ps(lo, c0));
        }
        for (unsigned k = 0; k < 2; k++) {
            a[h][k] = _mm256_add_ps(c0, _mm256_set1_ps((float)k));
            fd[h][k] = _mm256_mul_ps(dv, a[h][k]);
            id[h][k] = gv_inv_nz(fd[h][k]);
            e[h][k] = zero;
        }
    }
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 acc[GV_SIDE][2];
        for (unsigned h = 0; h < ng; h++) {
            acc[h][0] = acc[h][1] = zero;
        }
        for (unsigned i = l; i < 16; i += GG_LANES) {
            for (unsigned h = 0; h < ng; h++) {
                const __m256 x = gv_x(&g[h], i);
                for (unsigned k = 0; k < 2; k++) {
                    const __m256 q = gv_rclamp_sum(_mm256_mul_ps(x, id[h][k]), ql, qh);
                    const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(fd[h][k], q));
                    acc[h][k] = _mm256_add_ps(acc[h][k], _mm256_mul_ps(r, r));
                }
            }
        }
        for (unsigned h = 0; h < ng; h++) {
            for (unsigned k = 0; k < 2; k++) {
                e[h][k] = _mm256_add_ps(e[h][k], acc[h][k]);
            }
        }
    }
    for (unsigned h = 0; h < ng; h++) {
        __m256 b = a[h][0], be = _mm256_set1_ps(INFINITY);
        for (unsigned k = 0; k < 2; k++) {
            const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(a[h][k], lo, _CMP_GE_OQ),
                                            _mm256_cmp_ps(a[h][k], hi, _CMP_LE_OQ));
            const __m256 better = _mm256_and_ps(ok, _mm256_cmp_ps(e[h][k], be, _CMP_LT_OQ));
            be = _mm256_blendv_ps(be, e[h][k], better);
            b = _mm256_blendv_ps(b, a[h][k], better);
        }
        best[h] = b;
    }
}

/* The first of s[0..16) of largest magnitude (0 when all are 0): the lowest index where |s| is
 * the largest. */
static inline float gv_first_largest16(const float *s)
{
    const __m256 a0 = gv_abs(_mm256_load_ps(s)), a1 = gv_abs(_mm256_load_ps(s + 8));
    __m256 am = _mm256_max_ps(a0, a1);
    am = _mm256_max_ps(am, _mm256_permute2f128_ps(am, am, 1));
    am = _mm256_max_ps(am, _mm256_shuffle_ps(am, am, _MM_SHUFFLE(1, 0, 3, 2)));
    am = _mm256_max_ps(am, _mm256_shuffle_ps(am, am, _MM_SHUFFLE(2, 3, 0, 1)));
    const unsigned at = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a0, am, _CMP_EQ_OQ)) |
                        ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a1, am, _CMP_EQ_OQ)) << 8);
    return _mm256_cvtss_f32(am) > 0.0f ? s[__builtin_ctz(at)] : 0.0f;
}

/* The codes of a symmetric super-block from the input as it lies, 32 elements (two sub-blocks)
 * at a time: round(x / fd) clamped, as x times idv (the reciprocals of the reference's
 * fd = d sc, 0 where fd is 0; sub-block 8 h + k in lane k of idv[h]). */
static void gv_codes_super(const float *x, const __m256 *idv, int qmin, int qmax, int8_t *q)
{
    const __m256 lo = _mm256_set1_ps((float)qmin), hi = _mm256_set1_ps((float)qmax);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (unsigned j = 0; j < 16; j += 2) {
        __m256i c[4];
        for (unsigned u = 0; u < 2; u++) {
            const __m256 id =
                _mm256_permutevar8x32_ps(idv[(j + u) / 8], _mm256_set1_epi32((int)((j + u) % 8)));
            for (unsigned v = 0; v < 2; v++) {
                const __m256 xv = _mm256_loadu_ps(x + 16 * (j + u) + 8 * v);
                const __m256 r =
                    _mm256_round_ps(_mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(xv, id))),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                c[2 * u + v] = _mm256_cvttps_epi32(r);
            }
        }
        const __m256i p16 =
            _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
        _mm256_storeu_si256((__m256i *)(q + 16 * j), _mm256_permutevar8x32_epi32(p16, order));
    }
}

/* Q3_K without importance (gg_sym_super's fast level: one d, so no judging of d), for nsb
 * (1 or 2) super-blocks side by side. */
GV_INLINE void gv_q3_fast(const float *x, unsigned nsb, uint8_t *out)
{
    gv_group g[GV_SIDE];
    _Alignas(32) float s[8 * GV_SIDE];
    float d[GV_SIDE];
    uint16_t dh[2];
    const unsigned ng = 2 * nsb;
    for (unsigned k = 0; k < ng; k++) {
        gv_load(&g[k], x + 128 * k, NULL, 8, 16);
    }
    gv_sym_fit1_side(g, ng, -4, 3, s);
    for (unsigned b = 0; b < nsb; b++) {
        uint16_t dc[GG_SUPER_MAXCAND];
        (void)gg_super_cands(s + 16 * b, gv_first_largest16(s + 16 * b), -32, 31, 1, dc);
        dh[b] = dc[0];
        d[2 * b] = d[2 * b + 1] = aq__f16_to_f32(dc[0]);
    }
    __m256 best[GV_SIDE];
    gv_pick2_side(g, ng, s, d, -4, 3, -32, 31, best);
    for (unsigned b = 0; b < nsb; b++) {
        int sc[16];
        int8_t q[GG_QKK];
        __m256 idv[2];
        for (unsigned h = 0; h < 2; h++) {
            const __m256 bh = best[2 * b + h];
            _mm256_storeu_si256((__m256i *)(sc + 8 * h), _mm256_cvtps_epi32(bh));
            idv[h] = gv_inv_nz(_mm256_mul_ps(_mm256_set1_ps(d[2 * b]), bh));
        }
        gv_codes_super(x + GG_QKK * b, idv, -4, 3, q);
        gg_pack_q3_k(q, sc, dh[b], out + 110 * b);
    }
}

static void gg_encode_q3_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    if (w != NULL) {
        gg_encode_sym_k(x, w, nb, out, false);
        return;
    }
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        gv_q3_fast(x + GG_QKK * b, 2, out + 110 * b);
    }
    if (b < nb) {
        gv_q3_fast(x + GG_QKK * b, 1, out + 110 * b);
    }
}

static void gg_sym_super(const float *x, const float *w, int qmin, int qmax, int pmin, int pmax,
                         unsigned ncand, unsigned back, float step, unsigned nd, uint16_t *d_out,
                         int *sc, int8_t *q)
{
    gv_group g[2];
    _Alignas(32) float s[16];
    for (unsigned h = 0; h < 2; h++) {
        gv_load(&g[h], x + h * 128, w != NULL ? w + h * 128 : NULL, 8, 16);
        _mm256_store_ps(
            s + 8 * h, ncand == 0 ? gv_sym_fit1(&g[h], 16, qmin, qmax)
                                  : gv_sym_search(&g[h], 16, qmin, qmax, ncand, back, step, false));
    }
    uint16_t dc[GG_SUPER_MAXCAND];
    const unsigned n = gg_super_cands(s, gv_first_largest16(s), pmin, pmax, nd, dc);
    unsigned best_k = 0;
    float best_t = INFINITY;
    for (unsigned k = 0; n > 1 && k < n; k++) {
        const float dk = aq__f16_to_f32(dc[k]);
        _Alignas(32) float be[16];
        for (unsigned h = 0; h < 2; h++) {
            __m256 e;
            (void)gv_super_half(&g[h], s + 8 * h, dk, qmin, qmax, pmin, pmax, ncand == 0, &e);
            _mm256_store_ps(be + 8 * h, e);
        }
        float t = 0.0f;
        for (unsigned j = 0; j < 16; j++) {
            t += be[j];
        }
        if (k == 0 || t < best_t) {
            best_t = t;
            best_k = k;
        }
    }
    const float d = aq__f16_to_f32(dc[best_k]);
    __m256 idv[2];
    for (unsigned h = 0; h < 2; h++) {
        __m256 e;
        const __m256 best =
            gv_super_half(&g[h], s + 8 * h, d, qmin, qmax, pmin, pmax, ncand == 0, &e);
        _mm256_storeu_si256((__m256i *)(sc + 8 * h), _mm256_cvtps_epi32(best));
        idv[h] = gv_inv_nz(_mm256_mul_ps(_mm256_set1_ps(d), best));
    }
    gv_codes_super(x, idv, qmin, qmax, q);
    *d_out = dc[best_k];
}

/* The packing of the reference's gg_pack_q3_k and _q6_k, 32 codes at a time: element 32 t + l
 * of the super-block is byte l of row t. */
static inline __m256i gv_row(const int8_t *q, unsigned t, int bias)
{
    return _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(q + 32 * t)),
                           _mm256_set1_epi8((char)bias));
}

/* Each byte of v shifted left by k (its bits stay in the byte: v < 256 >> k). */
#define GV_SHL8(v, k) _mm256_slli_epi16((v), (k))

static void gg_pack_q3_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out)
{
    const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    __m256i qs[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    __m256i hm = _mm256_setzero_si256();
    for (unsigned t = 0; t < 8; t++) {
        const __m256i u = gv_row(q, t, 4); /* 0..7 */
        const __m256i lo = _mm256_and_si256(u, m3);
        const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(u, 2), m1);
        switch (t % 4) {
        case 0:
            qs[t / 4] = _mm256_or_si256(qs[t / 4], lo);
            break;
        case 1:
            qs[t / 4] = _mm256_or_si256(qs[t / 4], GV_SHL8(lo, 2));
            break;
        case 2:
            qs[t / 4] = _mm256_or_si256(qs[t / 4], GV_SHL8(lo, 4));
            break;
        default:
            qs[t / 4] = _mm256_or_si256(qs[t / 4], GV_SHL8(lo, 6));
            break;
        }
        hm = _mm256_or_si256(hm, _mm256_sll_epi16(hb, _mm_cvtsi32_si128((int)t)));
    }
    _mm256_storeu_si256((__m256i *)out, hm);
    _mm256_storeu_si256((__m256i *)(out + 32), qs[0]);
    _mm256_storeu_si256((__m256i *)(out + 64), qs[1]);
    gg_put_scales_q3(sc, out + 96);
    gg_put_h(out + 108, dh);
}

static void gg_pack_q6_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out)
{
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    for (unsigned c = 0; c < 2; c++) {
        __m256i u[4], hi[4];
        for (unsigned t = 0; t < 4; t++) {
            u[t] = gv_row(q, 4 * c + t, 32); /* 0..63 */
            hi[t] = _mm256_and_si256(_mm256_srli_epi16(u[t], 4), m3);
            u[t] = _mm256_and_si256(u[t], m15);
        }
        _mm256_storeu_si256((__m256i *)(out + 64 * c), _mm256_or_si256(u[0], GV_SHL8(u[2], 4)));
        _mm256_storeu_si256((__m256i *)(out + 64 * c + 32),
                            _mm256_or_si256(u[1], GV_SHL8(u[3], 4)));
        const __m256i h = _mm256_or_si256(_mm256_or_si256(hi[0], GV_SHL8(hi[1], 2)),
                                          _mm256_or_si256(GV_SHL8(hi[2], 4), GV_SHL8(hi[3], 6)));
        _mm256_storeu_si256((__m256i *)(out + 128 + 32 * c), h);
    }
    for (unsigned j = 0; j < 16; j++) {
        out[192 + j] = (uint8_t)(int8_t)sc[j];
    }
    gg_put_h(out + 208, dh);
}

/* gg_aff_err per lane. */
static __m256 gv_aff_err(const gv_group *g, unsigned n, __m256 fd, __m256 fm, __m256 qmax)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256 pos = _mm256_cmp_ps(fd, zero, _CMP_GT_OQ);
    const __m256 id = _mm256_and_ps(pos, _mm256_div_ps(_mm256_set1_ps(1.0f), fd));
    __m256 t = zero;
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 acc = zero;
        for (unsigned i = l; i < n; i += GG_LANES) {
            const __m256 x = gv_x(g, i);
            const __m256 q = gv_rclamp(_mm256_mul_ps(_mm256_add_ps(x, fm), id), zero, qmax);
            const __m256 r = _mm256_sub_ps(x, _mm256_sub_ps(_mm256_mul_ps(fd, q), fm));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(gv_w(g, i), r), r));
        }
        t = _mm256_add_ps(t, acc);
    }
    return t;
}

/* gg_aff_search for each lane: the sums in vectors, each candidate's fit (double) per lane. */
static void gv_aff_search(const gv_group *g, unsigned n, int qmax, unsigned ncand, float *s_out,
                          float *m_out)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 lo = zero, hi = zero, sw = zero, sx = zero, sxx = zero;
    for (unsigned l = 0; l < GG_LANES; l++) {
        __m256 lo8 = gv_x(g, l), hi8 = lo8, aw = zero, ax = zero, axx = zero;
        for (unsigned i = l; i < n; i += GG_LANES) {
            const __m256 x = gv_x(g, i), w = gv_w(g, i);
            lo8 = _mm256_min_ps(x, lo8);
            hi8 = _mm256_max_ps(x, hi8);
            aw = _mm256_add_ps(aw, w);
            ax = _mm256_add_ps(ax, _mm256_mul_ps(w, x));
            axx = _mm256_add_ps(axx, _mm256_mul_ps(_mm256_mul_ps(w, x), x));
        }
        if (l == 0) {
            lo = lo8;
            hi = hi8;
        } else {
            lo = _mm256_min_ps(lo8, lo);
            hi = _mm256_max_ps(hi8, hi);
        }
        sw = _mm256_add_ps(sw, aw);
        sx = _mm256_add_ps(sx, ax);
        sxx = _mm256_add_ps(sxx, axx);
    }
    lo = _mm256_blendv_ps(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
    const __m256 range = _mm256_sub_ps(hi, lo);
    _Alignas(32) float lo_a[8], hi_a[8], range_a[8], sw_a[8], sx_a[8], sxx_a[8];
    _mm256_store_ps(lo_a, lo);
    _mm256_store_ps(hi_a, hi);
    _mm256_store_ps(range_a, range);
    _mm256_store_ps(sw_a, sw);
    _mm256_store_ps(sx_a, sx);
    _mm256_store_ps(sxx_a, sxx);
    double best_s[8], best_m[8], best_e[8];
    for (unsigned k = 0; k < 8; k++) {
        best_s[k] = (double)range_a[k] / (double)qmax;
        best_m[k] = (double)lo_a[k];
        best_e[k] = (double)INFINITY;
    }
    const __m256 qm = _mm256_set1_ps((float)qmax);
    for (unsigned c = 0; c < ncand; c++) {
        const float levels = (float)qmax + ((float)c - (float)(ncand / 2)) * 0.5f;
        if (levels <= 0.5f) {
            continue;
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(levels), range);
        __m256 sq = zero, sqq = zero, sxq = zero;
        for (unsigned l = 0; l < GG_LANES; l++) {
            __m256 aq_ = zero, aqq = zero, axq = zero;
            for (unsigned i = l; i < n; i += GG_LANES) {
                const __m256 x = gv_x(g, i), w = gv_w(g, i);
                const __m256 q = gv_rclamp(_mm256_mul_ps(_mm256_sub_ps(x, lo), inv), zero, qm);
                aq_ = _mm256_add_ps(aq_, _mm256_mul_ps(w, q));
                aqq = _mm256_add_ps(aqq, _mm256_mul_ps(_mm256_mul_ps(w, q), q));
                axq = _mm256_add_ps(axq, _mm256_mul_ps(_mm256_mul_ps(w, x), q));
            }
            sq = _mm256_add_ps(sq, aq_);
            sqq = _mm256_add_ps(sqq, aqq);
            sxq = _mm256_add_ps(sxq, axq);
        }
        _Alignas(32) float sq_a[8], sqq_a[8], sxq_a[8];
        _mm256_store_ps(sq_a, sq);
        _mm256_store_ps(sqq_a, sqq);
        _mm256_store_ps(sxq_a, sxq);
        for (unsigned k = 0; k < 8; k++) {
            double s, m, e;
            if (hi_a[k] <= lo_a[k] ||
                !aq__fit_candidate((double)sw_a[k], (double)sx_a[k], (double)sxx_a[k],
                                   (double)sq_a[k], (double)sqq_a[k], (double)sxq_a[k], true, &s,
                                   &m, &e)) {
                continue;
            }
            if (e < best_e[k]) {
                best_e[k] = e;
                best_s[k] = s;
                best_m[k] = m;
            }
        }
    }
    for (unsigned k = 0; k < 8; k++) {
        if (hi_a[k] <= lo_a[k]) {
            s_out[k] = 0.0f;
            m_out[k] = -lo_a[k];
        } else {
            s_out[k] = (float)best_s[k];
            m_out[k] = (float)-best_m[k];
        }
    }
}

/* gg_aff_pick for the eight sub-blocks of a group under d and dmin: the codes (as floats) and
 * the errors. */
static __m256 gv_aff_pick(const gv_group *g, unsigned sub, int qmax, int pmax, bool cross,
                          const float *s, const float *m, float d, float dmin, __m256 *bm_out,
                          __m256 *err)
{
    const __m256 zero = _mm256_setzero_ps(), dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(dmin);
    const __m256 pm = _mm256_set1_ps((float)pmax), qm = _mm256_set1_ps((float)qmax);
    const __m256 sc0 = d > 0.0f ? gv_rclamp(_mm256_div_ps(_mm256_load_ps(s), dv), zero, pm) : zero;
    const __m256 mc0 =
        dmin > 0.0f ? gv_rclamp(_mm256_div_ps(_mm256_load_ps(m), mv), zero, pm) : zero;
    __m256 bs = sc0, bm = mc0, be = _mm256_set1_ps(INFINITY);
    for (int oa = -1; oa <= 1; oa++) {
        const __m256 a = _mm256_add_ps(sc0, _mm256_set1_ps((float)oa));
        const __m256 oka =
            _mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_GE_OQ), _mm256_cmp_ps(a, pm, _CMP_LE_OQ));
        for (int ob = -1; ob <= 1; ob++) {
            if (cross && oa != 0 && ob != 0) {
                continue;
            }
            const __m256 b = _mm256_add_ps(mc0, _mm256_set1_ps((float)ob));
            const __m256 ok = _mm256_and_ps(oka, _mm256_and_ps(_mm256_cmp_ps(b, zero, _CMP_GE_OQ),
                                                               _mm256_cmp_ps(b, pm, _CMP_LE_OQ)));
            const __m256 e = gv_aff_err(g, sub, _mm256_mul_ps(dv, a), _mm256_mul_ps(mv, b), qm);
            const __m256 better = _mm256_and_ps(ok, _mm256_cmp_ps(e, be, _CMP_LT_OQ));
            be = _mm256_blendv_ps(be, e, better);
            bs = _mm256_blendv_ps(bs, a, better);
            bm = _mm256_blendv_ps(bm, b, better);
        }
    }
    *bm_out = bm;
    *err = be;
    return bs;
}

static void gg_aff_super(const float *x, const float *w, unsigned nsub, unsigned sub, int qmax,
                         int pmax, unsigned ncand, bool cross, unsigned nd, uint16_t *d_out,
                         uint16_t *dmin_out, uint8_t *sc, uint8_t *mc, uint8_t *q)
{
    const unsigned ng = nsub / 8;
    gv_group g[2];
    _Alignas(32) float s[16], m[16];
    for (unsigned h = 0; h < ng; h++) {
        gv_load(&g[h], x + h * 8 * sub, w != NULL ? w + h * 8 * sub : NULL, 8, sub);
        gv_aff_search(&g[h], sub, qmax, ncand, s + 8 * h, m + 8 * h);
    }
    uint16_t dh[GG_SUPER_MAXCAND], mh[GG_SUPER_MAXCAND];
    const unsigned n = gg_aff_cands(s, m, nsub, pmax, nd, dh, mh);
    unsigned best_k = 0;
    float best_t = INFINITY;
    for (unsigned k = 0; n > 1 && k < n; k++) {
        const float dk = aq__f16_to_f32(dh[k]), mk = aq__f16_to_f32(mh[k]);
        _Alignas(32) float be[16];
        for (unsigned h = 0; h < ng; h++) {
            __m256 bm, e;
            (void)gv_aff_pick(&g[h], sub, qmax, pmax, cross, s + 8 * h, m + 8 * h, dk, mk, &bm, &e);
            _mm256_store_ps(be + 8 * h, e);
        }
        float t = 0.0f;
        for (unsigned j = 0; j < nsub; j++) {
            t += be[j];
        }
        if (k == 0 || t < best_t) {
            best_t = t;
            best_k = k;
        }
    }
    const float d = aq__f16_to_f32(dh[best_k]), dmin = aq__f16_to_f32(mh[best_k]);
    const __m256 zero = _mm256_setzero_ps(), dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(dmin);
    const __m256 qm = _mm256_set1_ps((float)qmax);
    for (unsigned h = 0; h < ng; h++) {
        __m256 bm, e;
        const __m256 bs =
            gv_aff_pick(&g[h], sub, qmax, pmax, cross, s + 8 * h, m + 8 * h, d, dmin, &bm, &e);
        _Alignas(32) int32_t bsi[8], bmi[8];
        _mm256_store_si256((__m256i *)bsi, _mm256_cvtps_epi32(bs));
        _mm256_store_si256((__m256i *)bmi, _mm256_cvtps_epi32(bm));
        for (unsigned k = 0; k < 8; k++) {
            sc[8 * h + k] = (uint8_t)bsi[k];
            mc[8 * h + k] = (uint8_t)bmi[k];
        }
        /* The codes, as gg_aff_codes. */
        const __m256 fd = _mm256_mul_ps(dv, bs), fm = _mm256_mul_ps(mv, bm);
        const __m256 id = _mm256_and_ps(_mm256_cmp_ps(fd, zero, _CMP_GT_OQ),
                                        _mm256_div_ps(_mm256_set1_ps(1.0f), fd));
        uint8_t *qg = q + h * 8 * sub;
        for (unsigned i = 0; i < sub; i++) {
            _Alignas(32) int32_t t[8];
            _mm256_store_si256(
                (__m256i *)t, _mm256_cvtps_epi32(gv_rclamp(
                                  _mm256_mul_ps(_mm256_add_ps(gv_x(&g[h], i), fm), id), zero, qm)));
            for (unsigned k = 0; k < 8; k++) {
                qg[k * sub + i] = (uint8_t)t[k];
            }
        }
    }
    *d_out = dh[best_k];
    *dmin_out = mh[best_k];
}

/* ---------------------------------------------------------------------------------------- */
/* Decoders: the reference's one float32 product (and difference) per element, eight at once */
/* ---------------------------------------------------------------------------------------- */

/* Eight bytes as eight 32-bit lanes, zero-extended. */
static inline __m256i gv_u8x8(const uint8_t *p)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

static void gg_decode_q8_0(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 34, y += GG_QK) {
        const __m256 d = _mm256_set1_ps(gg_h2f(in));
        for (unsigned i = 0; i < GG_QK; i += 8) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(in + 2 + i)));
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

static void gg_decode_q4_0(const uint8_t *in, size_t nb, float *y)
{
    const __m256i fifteen = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    for (size_t b = 0; b < nb; b++, in += 18, y += GG_QK) {
        const __m256 d = _mm256_set1_ps(gg_h2f(in));
        for (unsigned i = 0; i < 16; i += 8) {
            const __m256i q = gv_u8x8(in + 2 + i);
            const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(q, fifteen), eight);
            const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(q, 4), eight);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
            _mm256_storeu_ps(y + 16 + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
        }
    }
}

static void gg_decode_k45(const uint8_t *in, size_t nb, float *y, bool five)
{
    const size_t bytes = five ? 176 : 144;
    const __m256i fifteen = _mm256_set1_epi32(15), one = _mm256_set1_epi32(1);
    for (size_t b = 0; b < nb; b++, in += bytes, y += GG_QKK) {
        float d1[8], m1[8];
        gg_get_factors_k4(in, d1, m1);
        const uint8_t *qh = in + 16, *qs = in + (five ? 48 : 16);
        for (unsigned j = 0; j < 8; j++) {
            const __m256 dv = _mm256_set1_ps(d1[j]), mv = _mm256_set1_ps(m1[j]);
            const int shift = 4 * (int)(j % 2);
            for (unsigned l = 0; l < 32; l += 8) {
                __m256i q = _mm256_and_si256(
                    _mm256_srli_epi32(gv_u8x8(qs + (j / 2) * 32 + l), shift), fifteen);
                if (five) {
                    const __m256i h =
                        _mm256_and_si256(_mm256_srli_epi32(gv_u8x8(qh + l), (int)j), one);
                    q = _mm256_or_si256(q, _mm256_slli_epi32(h, 4));
                }
                _mm256_storeu_ps(y + j * 32 + l,
                                 _mm256_sub_ps(_mm256_mul_ps(dv, _mm256_cvtepi32_ps(q)), mv));
            }
        }
    }
}

static void gg_decode_q4_k(const uint8_t *in, size_t nb, float *y)
{
    gg_decode_k45(in, nb, y, false);
}

static void gg_decode_q5_k(const uint8_t *in, size_t nb, float *y)
{
    gg_decode_k45(in, nb, y, true);
}

static void gg_decode_q6_k(const uint8_t *in, size_t nb, float *y)
{
    const __m256i fifteen = _mm256_set1_epi32(15), three = _mm256_set1_epi32(3);
    const __m256i bias = _mm256_set1_epi32(32);
    for (size_t b = 0; b < nb; b++, in += 210, y += GG_QKK) {
        const float d = gg_h2f(in + 208);
        const uint8_t *ql = in, *qh = in + 128;
        for (unsigned e = 0; e < GG_QKK; e += 8) {
            const unsigned c = e / 128, r = e % 128;
            const __m256i lo = _mm256_and_si256(
                _mm256_srli_epi32(gv_u8x8(ql + c * 64 + r % 64), (int)(4 * (r / 64))), fifteen);
            const __m256i hi = _mm256_and_si256(
                _mm256_srli_epi32(gv_u8x8(qh + c * 32 + r % 32), (int)(2 * (r / 32))), three);
            const __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), bias);
            const __m256 dl = _mm256_set1_ps(d * (float)(int8_t)in[192 + e / 16]);
            _mm256_storeu_ps(y + e, _mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)));
        }
    }
}

static void gg_decode_q5_0(const uint8_t *in, size_t nb, float *y)
{
    const __m256i fifteen = _mm256_set1_epi32(15), one = _mm256_set1_epi32(1);
    const __m256i sixteen = _mm256_set1_epi32(16),
                  lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t b = 0; b < nb; b++, in += 22, y += GG_QK) {
        const __m256 d = _mm256_set1_ps(gg_h2f(in));
        const __m256i qh = _mm256_set1_epi32((int)gg_get_u32(in + 2));
        for (unsigned i = 0; i < 16; i += 8) {
            const __m256i q = gv_u8x8(in + 6 + i);
            const __m256i at = _mm256_add_epi32(lanes, _mm256_set1_epi32((int)i));
            const __m256i hlo = _mm256_and_si256(_mm256_srlv_epi32(qh, at), one);
            const __m256i hhi =
                _mm256_and_si256(_mm256_srlv_epi32(qh, _mm256_add_epi32(at, sixteen)), one);
            const __m256i lo =
                _mm256_or_si256(_mm256_and_si256(q, fifteen), _mm256_slli_epi32(hlo, 4));
            const __m256i hi = _mm256_or_si256(_mm256_srli_epi32(q, 4), _mm256_slli_epi32(hhi, 4));
            _mm256_storeu_ps(y + i,
                             _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(lo, sixteen))));
            _mm256_storeu_ps(y + 16 + i,
                             _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(hi, sixteen))));
        }
    }
}

static void gg_decode_q2_k(const uint8_t *in, size_t nb, float *y)
{
    const __m256i three = _mm256_set1_epi32(3);
    for (size_t b = 0; b < nb; b++, in += 84, y += GG_QKK) {
        const float d = gg_h2f(in + 80), dmin = gg_h2f(in + 82);
        const uint8_t *qs = in + 16;
        float dls[16], mls[16];
        for (unsigned j = 0; j < 16; j++) {
            dls[j] = d * (float)(in[j] & 15);
            mls[j] = dmin * (float)(in[j] >> 4);
        }
        for (unsigned e = 0; e < GG_QKK; e += 8) {
            const unsigned c = e / 128, s = (e % 128) / 32, l = e % 32;
            const __m256 dl = _mm256_set1_ps(dls[e / 16]);
            const __m256 ml = _mm256_set1_ps(mls[e / 16]);
            const __m256i q =
                _mm256_and_si256(_mm256_srli_epi32(gv_u8x8(qs + c * 32 + l), (int)(2 * s)), three);
            _mm256_storeu_ps(y + e, _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)), ml));
        }
    }
}

static void gg_decode_q3_k(const uint8_t *in, size_t nb, float *y)
{
    const __m256i three = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1);
    const __m256i four = _mm256_set1_epi32(4);
    for (size_t b = 0; b < nb; b++, in += 110, y += GG_QKK) {
        const float d = gg_h2f(in + 108);
        const uint8_t *hmask = in, *qs = in + 32;
        float dl[16];
        for (unsigned j = 0; j < 16; j++) {
            dl[j] = d * (float)gg_get_scale_q3(in + 96, j);
        }
        for (unsigned e = 0; e < GG_QKK; e += 8) {
            const unsigned c = e / 128, s = (e % 128) / 32, l = e % 32;
            const __m256i low =
                _mm256_and_si256(_mm256_srli_epi32(gv_u8x8(qs + c * 32 + l), (int)(2 * s)), three);
            const __m256i high =
                _mm256_and_si256(_mm256_srli_epi32(gv_u8x8(hmask + e % 32), (int)(e / 32)), one);
            /* low - (high ? 0 : 4) */
            const __m256i q =
                _mm256_add_epi32(_mm256_sub_epi32(low, four), _mm256_slli_epi32(high, 2));
            _mm256_storeu_ps(y + e,
                             _mm256_mul_ps(_mm256_set1_ps(dl[e / 16]), _mm256_cvtepi32_ps(q)));
        }
    }
}

/* F16C rounds to nearest even, as aq__f32_to_f16 does, and overflows to infinity alike (the
 * encoders get finite input: NaN payloads do not arise). */
static void gg_encode_f16(const float *x, const float *w, size_t n, uint8_t *out)
{
    (void)w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128(
            (__m128i *)(out + 2 * i),
            _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) {
        gg_put_h(out + 2 * i, aq__f32_to_f16(x[i]));
    }
}

static void gg_decode_f16(const uint8_t *in, size_t n, float *y)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + 2 * i))));
    }
    for (; i < n; i++) {
        y[i] = gg_h2f(in + 2 * i);
    }
}

static void gg_decode_bf16(const uint8_t *in, size_t n, float *y)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + 2 * i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < n; i++) {
        y[i] = aq__bf16_to_f32((uint16_t)(in[2 * i] | (in[2 * i + 1] << 8)));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* ggml's rounding (no search): the reference's scalar scale, then the codes eight at a time   */
/* ---------------------------------------------------------------------------------------- */

/* The largest |x| of a 32-block, as bits, into every lane; v receives the block's four
 * vectors. The bits of a magnitude order as its value, and a NaN's above +Inf's: the result
 * is 0x7f800000 or more exactly when the block holds an element that is not finite. */
static inline __m256i gv_amax32(const float *x, __m256 *v)
{
    const __m256i mag = _mm256_set1_epi32(0x7fffffff);
    __m256i a = _mm256_setzero_si256();
    for (unsigned k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        a = _mm256_max_epi32(a, _mm256_and_si256(_mm256_castps_si256(v[k]), mag));
    }
    a = _mm256_max_epi32(a, _mm256_permute2x128_si256(a, a, 1));
    a = _mm256_max_epi32(a, _mm256_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_max_epi32(a, _mm256_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* What the rounding encoders return: nb * 32, or the index of the first element that is not
 * finite, searched from block `bad` (the first whose largest magnitude says so). */
static size_t gv_round_result(const float *x, size_t nb, size_t bad)
{
    if (bad == SIZE_MAX) {
        return nb * GG_QK;
    }
    size_t i = bad * GG_QK;
    while (isfinite(x[i])) {
        i++;
    }
    return i;
}

/* roundf: nearest, halves away from zero, as trunc(p + copysign(0.49999997, p)): the sum
 * rounds up to the next integer exactly when |p|'s fraction is 0.5 or more. */
static inline __m256 gv_roundf(__m256 p)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), below_half = _mm256_set1_ps(0x1.fffffep-2f);
    const __m256 s = _mm256_add_ps(p, _mm256_or_ps(below_half, _mm256_and_ps(sign, p)));
    return _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

/* The stored scales d = m / div of eight blocks (m[k] for block k) and the reciprocals id
 * the codes are made with, as the reference's scalar arithmetic: IEEE division, F16C's
 * nearest-even binary16 after the clamp (aq__f32_to_f16's bits). */
static inline __m256 gv_round_scales(const float *m, float div, uint16_t *dh)
{
    const __m256 d = _mm256_div_ps(_mm256_loadu_ps(m), _mm256_set1_ps(div));
    const __m256 big = _mm256_set1_ps(65504.0f);
    const __m256 dc = _mm256_max_ps(_mm256_min_ps(d, big), _mm256_sub_ps(_mm256_setzero_ps(), big));
    _mm_storeu_si128((__m128i *)dh, _mm256_cvtps_ph(dc, _MM_FROUND_TO_NEAREST_INT));
    const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    return _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d), nz);
}

/* Blocks that are not finite give bytes of no meaning; every operation stays defined on
 * them (a product that is not finite converts to INT32_MIN and from there to code 0). */
static size_t gg_round_q8_0(const float *x, size_t nb, uint8_t *out)
{
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i imin = _mm256_set1_epi32(INT32_MIN);
    _Alignas(32) uint32_t amax[8] = {0};
    _Alignas(32) float id[8];
    uint16_t dh[8];
    size_t bad = SIZE_MAX;
    for (size_t b = 0; b < nb; b += 8) {
        const size_t m = nb - b < 8 ? nb - b : 8;
        for (size_t k = 0; k < m; k++) {
            __m256 v[4];
            amax[k] = (uint32_t)_mm256_cvtsi256_si32(gv_amax32(x + (b + k) * GG_QK, v));
            if (amax[k] >= 0x7f800000u && bad == SIZE_MAX) {
                bad = b + k;
            }
        }
        _mm256_store_ps(id, gv_round_scales((const float *)(const void *)amax, 127.0f, dh));
        for (size_t k = 0; k < m; k++) {
            const float *xb = x + (b + k) * GG_QK;
            uint8_t *o = out + (b + k) * 34;
            gg_put_h(o, dh[k]);
            const __m256 vid = _mm256_set1_ps(id[k]);
            __m256i q[4];
            for (unsigned j = 0; j < 4; j++) {
                const __m256i t =
                    _mm256_cvttps_epi32(gv_roundf(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * j), vid)));
                /* a product that is not finite converts to INT32_MIN: code 0, as the reference */
                q[j] = _mm256_andnot_si256(_mm256_cmpeq_epi32(t, imin), t);
            }
            /* int32 -> int8 (exact: |code| <= 127); the packs interleave 128-bit halves, the
             * permutation puts the four-byte groups back in element order. */
            const __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(o + 2), _mm256_permutevar8x32_epi32(p, order));
        }
    }
    return gv_round_result(x, nb, bad);
}

/* Q4_0 (half 8) and Q5_0 (half 16), as the reference's gg_round_sym. */
static size_t gg_round_sym(const float *x, size_t nb, uint8_t *out, int half)
{
    const size_t bytes = half == 8 ? 18 : 22;
    const __m256i top = _mm256_set1_epi32(2 * half - 1), fifteen = _mm256_set1_epi32(15);
    const __m256i mag = _mm256_set1_epi32(0x7fffffff);
    const __m256 off = _mm256_set1_ps((float)half + 0.5f);
    _Alignas(32) float mx[8] = {0}, id[8];
    uint16_t dh[8];
    size_t bad = SIZE_MAX;
    for (size_t b = 0; b < nb; b += 8) {
        const size_t m = nb - b < 8 ? nb - b : 8;
        for (size_t k = 0; k < m; k++) {
            const float *xb = x + (b + k) * GG_QK;
            __m256 v[4];
            const __m256i va = gv_amax32(xb, v);
            const uint32_t amax = (uint32_t)_mm256_cvtsi256_si32(va);
            if (amax >= 0x7f800000u && bad == SIZE_MAX) {
                bad = b + k;
            }
            /* The reference keeps the first element of largest magnitude, or its start +0
             * when every element is +-0. Equal magnitudes are equal bits; the block's
             * largest is among them, so the mask is never empty. */
            uint32_t at = 0;
            for (unsigned j = 0; j < 4; j++) {
                const __m256i a = _mm256_and_si256(_mm256_castps_si256(v[j]), mag);
                at |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a, va)))
                      << (8 * j);
            }
            mx[k] = amax != 0 ? xb[__builtin_ctz(at)] : 0.0f;
        }
        _mm256_store_ps(id, gv_round_scales(mx, (float)-half, dh));
        for (size_t k = 0; k < m; k++) {
            const float *xb = x + (b + k) * GG_QK;
            uint8_t *o = out + (b + k) * bytes;
            gg_put_h(o, dh[k]);
            const __m256 vid = _mm256_set1_ps(id[k]);
            __m256i c[4];
            uint32_t qh = 0;
            for (unsigned j = 0; j < 4; j++) {
                c[j] = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_add_ps(
                                            _mm256_mul_ps(_mm256_loadu_ps(xb + 8 * j), vid), off)),
                                        top);
                qh |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c[j], 27)))
                      << (8 * j);
            }
            /* Byte i: element i's low nibble, element 16 + i's high one. */
            const __m256i lo =
                _mm256_or_si256(_mm256_and_si256(c[0], fifteen),
                                _mm256_slli_epi32(_mm256_and_si256(c[2], fifteen), 4));
            const __m256i hi =
                _mm256_or_si256(_mm256_and_si256(c[1], fifteen),
                                _mm256_slli_epi32(_mm256_and_si256(c[3], fifteen), 4));
            const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
            const __m128i b16 =
                _mm_packus_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
            if (half == 16) {
                for (unsigned j = 0; j < 4; j++) {
                    o[2 + j] = (uint8_t)(qh >> (8 * j));
                }
            }
            _mm_storeu_si128((__m128i *)(o + (half == 8 ? 2 : 6)), b16);
        }
    }
    return gv_round_result(x, nb, bad);
}

static size_t gg_round_q4_0(const float *x, size_t nb, uint8_t *out)
{
    return gg_round_sym(x, nb, out, 8);
}

static size_t gg_round_q5_0(const float *x, size_t nb, uint8_t *out)
{
    return gg_round_sym(x, nb, out, 16);
}

const aq__ggml_kernels aq__ggml_kernels_avx2 = GG_KERNELS_TABLE("avx2");
