/*
 * AVX-512 (F, DQ) kernels of the quality schemes, bit-exact with the reference.
 *
 * kquant (docs/format.md 5.2): every super-block here, short ones sharing panels
 * (kernels_kquant_simd.h). Every per-element sum of the specification is a float32 sum over
 * one sub-block in element order, so sub-block j lives in lane j % 16 of panel j / 16 (the
 * super-block is transposed 16 x 16 at a time) and each lane adds its sub-block's terms in the
 * reference's order: no horizontal reductions. The once-per-candidate fit is the reference's
 * double arithmetic on two __m512d halves; max/min with the constant second return it for NaN
 * and equal zeros, as the reference's `u > 0 ? u : 0` and `u < qmax ? u : qmax` do; rounding
 * is vrndscaleps to nearest even, as the reference's (u + 2^23) - 2^23 on [0, qmax].
 *
 * affine_search (5.1): the search of unweighted float32 groups of 16 to 128 elements.
 * - The eight double lanes of the specification's block sums are the eight lanes of a __m512d:
 *   element i of a group goes to lane i mod 8, the vectors of elements 0-7, 8-15, ... are
 *   added in that order to a zero vector, exactly as the reference adds them one by one.
 * - The final ((L0 + L1) + (L2 + L3)) + ((L4 + L5) + (L6 + L7)) of eight sums at once is a
 *   transpose-and-add (kq5_tree8) whose three levels add the same pairs.
 * - The once-per-candidate double arithmetic is the reference's, eight candidates per vector
 *   (no fused multiply-add: intrinsics are never contracted).
 * - Sq and Sqq are sums of small integers, exact in any order.
 */
#include "kernels.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>

#define KQ5_CANDIDATES 16

/* r[c] = ((v[c]0 + v[c]1) + (v[c]2 + v[c]3)) + ((v[c]4 + v[c]5) + (v[c]6 + v[c]7)). */
static inline __m512d kq5_tree8(const __m512d v[8])
{
    __m512d p[4];
    for (int k = 0; k < 4; k++) {
        /* [a0+a1, b0+b1, a2+a3, b2+b3, a4+a5, b4+b5, a6+a7, b6+b7] */
        p[k] = _mm512_add_pd(_mm512_unpacklo_pd(v[2 * k], v[2 * k + 1]),
                             _mm512_unpackhi_pd(v[2 * k], v[2 * k + 1]));
    }
    __m512d q[2];
    for (int k = 0; k < 2; k++) {
        /* [a0123, b0123, a4567, b4567, c0123, d0123, c4567, d4567] */
        q[k] = _mm512_add_pd(_mm512_shuffle_f64x2(p[2 * k], p[2 * k + 1], 0x88),
                             _mm512_shuffle_f64x2(p[2 * k], p[2 * k + 1], 0xdd));
    }
    return _mm512_add_pd(_mm512_shuffle_f64x2(q[0], q[1], 0x88),
                         _mm512_shuffle_f64x2(q[0], q[1], 0xdd));
}

/* r[c] = the sum of the 16 lanes of v[c], in some order: for sums of small integers, exact in
 * float32, where every order gives the same. */
static inline __m512 kq5_sum16(const __m512 v[16])
{
    __m512 t[8], u[4], w[2];
    for (int k = 0; k < 8; k++) {
        t[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                             _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
    }
    for (int k = 0; k < 4; k++) {
        __m512d a = _mm512_castps_pd(t[2 * k]), b = _mm512_castps_pd(t[2 * k + 1]);
        u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    for (int k = 0; k < 2; k++) {
        w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xdd));
    }
    return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88),
                         _mm512_shuffle_f32x4(w[0], w[1], 0xdd));
}

static inline double kq5_tree1(__m512d v)
{
    double a[8];
    _mm512_storeu_pd(a, v);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static inline __m512d kq5_lo8(__m512 v)
{
    return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}

static inline __m512d kq5_hi8(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* The round-to-nearest-even intrinsic; unoptimised builds expand it to a macro that converts a
 * mask of all ones to a signed type, which -Wsign-conversion reports inside the compiler's
 * header. */
static inline __m512 kq5_rne(__m512 u)
{
#if defined(__GNUC__) && !defined(__OPTIMIZE__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wsign-conversion"
#endif
    return _mm512_roundscale_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#if defined(__GNUC__) && !defined(__OPTIMIZE__)
#    pragma GCC diagnostic pop
#endif
}

/* code(u) for u >= 0 or NaN-free u (docs/format.md 5.1): clamp, then round half to even. */
static inline __m512 kq5_code(__m512 u, __m512 qmax)
{
    u = _mm512_max_ps(u, _mm512_setzero_ps());
    u = _mm512_min_ps(u, qmax);
    /* Round to nearest even: the reference's (u + 2^23) - 2^23 for 0 <= u <= qmax. */
    return kq5_rne(u);
}

/* code(u) for u >= +0 (or NaN, which only an invalid candidate makes): the lower clamp is the
 * identity there. */
static inline __m512 kq5_code_pos(__m512 u, __m512 qmax)
{
    u = _mm512_min_ps(u, qmax);
    return kq5_rne(u);
}

/* The search of docs/format.md 5.1 over nv * 8 unweighted elements (nv = 2, 4, 8 or 16, a
 * constant at each call so that the loops unroll): candidate c has qmax + first + c * step
 * levels, centred or anchored at lo, with or without the constraint offset <= 0. */
static inline __attribute__((always_inline)) bool
kq5_search(const float *x, size_t nv, unsigned bits, float lo, float hi, double first, double step,
           bool centred, bool constrained, double *scale, double *offset)
{
    const float qmaxf = (float)((1u << bits) - 1u);
    const __m512 qmax = _mm512_set1_ps(qmaxf);
    const size_t nf = nv / 2; /* float vectors */
    __m512 xl[8];
    __m512d xd[16];
    for (size_t k = 0; k < 8; k++) {
        xl[k] = _mm512_setzero_ps();
        xd[2 * k] = _mm512_setzero_pd();
        xd[2 * k + 1] = _mm512_setzero_pd();
    }
    __m512d lx = _mm512_setzero_pd(), lxx = _mm512_setzero_pd();
    for (size_t k = 0; k < nf; k++) {
        __m512 v = _mm512_loadu_ps(x + 16 * k);
        xl[k] = _mm512_sub_ps(v, _mm512_set1_ps(lo));
        xd[2 * k] = kq5_lo8(v);
        xd[2 * k + 1] = kq5_hi8(v);
    }
    for (size_t k = 0; k < nv; k++) {
        lx = _mm512_add_pd(lx, xd[k]);
        lxx = _mm512_add_pd(lxx, _mm512_mul_pd(xd[k], xd[k]));
    }
    const double sw = (double)(nv * 8), sx = kq5_tree1(lx), sxx = kq5_tree1(lxx);
    const double range = (double)hi - (double)lo;

    /* The candidates' inverse steps, float32 as the reference rounds them. */
    float inv[KQ5_CANDIDATES], off[KQ5_CANDIDATES];
    bool inv_ok[KQ5_CANDIDATES];
    double levels[KQ5_CANDIDATES];
    for (unsigned c = 0; c < KQ5_CANDIDATES; c++) {
        levels[c] = (double)qmaxf + first + (double)c * step;
    }
    /* levels / range, two vector divisions (each correctly rounded, as the scalar one). */
    for (unsigned c0 = 0; c0 < KQ5_CANDIDATES; c0 += 8) {
        __m512d q = _mm512_div_pd(_mm512_loadu_pd(levels + c0), _mm512_set1_pd(range));
        _mm256_storeu_ps(inv + c0, _mm512_cvtpd_ps(q));
    }
    for (unsigned c = 0; c < KQ5_CANDIDATES; c++) {
        inv_ok[c] = inv[c] <= FLT_MAX;
        off[c] = centred ? (float)((levels[c] - (double)qmaxf) / 2.0) : 0.0f;
    }

    double e_out[KQ5_CANDIDATES], s_out[KQ5_CANDIDATES], m_out[KQ5_CANDIDATES];
    __mmask8 ok_out[KQ5_CANDIDATES / 8];
    const __m512d vsw = _mm512_set1_pd(sw), vsx = _mm512_set1_pd(sx), vsxx = _mm512_set1_pd(sxx),
                  zero = _mm512_setzero_pd(), two = _mm512_set1_pd(2.0),
                  inf = _mm512_set1_pd((double)INFINITY), vinvsw = _mm512_set1_pd(1.0 / sw);
    /* Per candidate: Sq and Sqq as float32 lanes (sums of integers below 2^24, exact), the
     * lanes of Sxq in double. */
    __m512 fq[KQ5_CANDIDATES], fqq[KQ5_CANDIDATES];
    __m512d vxq[KQ5_CANDIDATES];
    for (unsigned c = 0; c < KQ5_CANDIDATES; c++) {
        const __m512 vinv = _mm512_set1_ps(inv[c]), voff = _mm512_set1_ps(off[c]);
        /* Anchored: x - lo >= +0, inv > 0 and off = 0, so u >= +0. */
#define KQ5_U(k)                                                               \
    (centred ? kq5_code(_mm512_sub_ps(_mm512_mul_ps(xl[k], vinv), voff), qmax) \
             : kq5_code_pos(_mm512_mul_ps(xl[k], vinv), qmax))
        __m512 q = KQ5_U(0);
        __m512 aq = q, aqq = _mm512_mul_ps(q, q);
        __m512d axq = _mm512_add_pd(_mm512_setzero_pd(), _mm512_mul_pd(xd[0], kq5_lo8(q)));
        axq = _mm512_add_pd(axq, _mm512_mul_pd(xd[1], kq5_hi8(q)));
        for (size_t k = 1; k < nf; k++) {
            q = KQ5_U(k);
            aq = _mm512_add_ps(aq, q);
            aqq = _mm512_add_ps(aqq, _mm512_mul_ps(q, q));
            axq = _mm512_add_pd(axq, _mm512_mul_pd(xd[2 * k], kq5_lo8(q)));
            axq = _mm512_add_pd(axq, _mm512_mul_pd(xd[2 * k + 1], kq5_hi8(q)));
        }
        fq[c] = aq;
        fqq[c] = aqq;
        vxq[c] = axq;
#undef KQ5_U
    }
    const __m512 sq16 = kq5_sum16(fq), sqq16 = kq5_sum16(fqq);
    for (unsigned c0 = 0; c0 < KQ5_CANDIDATES; c0 += 8) {
        const __m512d sq = c0 == 0 ? kq5_lo8(sq16) : kq5_hi8(sq16);
        const __m512d sqq = c0 == 0 ? kq5_lo8(sqq16) : kq5_hi8(sqq16);
        const __m512d sxq = kq5_tree8(vxq + c0);
        const __m512d det = _mm512_sub_pd(_mm512_mul_pd(vsw, sqq), _mm512_mul_pd(sq, sq));
        __mmask8 ok = _mm512_cmp_pd_mask(det, zero, _CMP_GT_OQ);
        __m512d s =
            _mm512_div_pd(_mm512_sub_pd(_mm512_mul_pd(vsw, sxq), _mm512_mul_pd(sq, vsx)), det);
        /* sw is a power of two: dividing by it and multiplying by its exact inverse round the same
         * real number, so they give the same double. */
        __m512d m = _mm512_mul_pd(_mm512_sub_pd(vsx, _mm512_mul_pd(s, sq)), vinvsw);
        const __mmask8 mpos = constrained ? _mm512_cmp_pd_mask(m, zero, _CMP_GT_OQ) : (__mmask8)0;
        if (mpos != 0) {
            m = _mm512_mask_mov_pd(m, mpos, zero);
            s = _mm512_mask_div_pd(s, mpos, sxq, sqq);
        }
        ok &= _mm512_cmp_pd_mask(s, zero, _CMP_GT_OQ);
        ok &= _mm512_cmp_pd_mask(s, inf, _CMP_LT_OQ);
        ok &= _mm512_cmp_pd_mask(_mm512_abs_pd(m), inf, _CMP_LT_OQ);
        const __m512d s2 = _mm512_mul_pd(two, s);
        __m512d e = _mm512_sub_pd(vsxx, _mm512_mul_pd(s2, sxq));
        e = _mm512_sub_pd(e, _mm512_mul_pd(_mm512_mul_pd(two, m), vsx));
        e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(s, s), sqq));
        e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(s2, m), sq));
        e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(m, m), vsw));
        _mm512_storeu_pd(e_out + c0, e);
        _mm512_storeu_pd(s_out + c0, s);
        _mm512_storeu_pd(m_out + c0, m);
        ok_out[c0 / 8] = ok;
    }

    bool found = false;
    double best_e = 0.0, best_s = 0.0, best_m = 0.0;
    for (unsigned c = 0; c < KQ5_CANDIDATES; c++) {
        if (!inv_ok[c] || !(((unsigned)ok_out[c / 8] >> (c % 8)) & 1u)) {
            continue;
        }
        if (!found || e_out[c] < best_e) {
            found = true;
            best_e = e_out[c];
            best_s = s_out[c];
            best_m = m_out[c];
        }
    }
    if (found) {
        *scale = best_s;
        *offset = best_m;
    }
    return found;
}

/* Packs n codes (floats holding integers < 2^bits; n a multiple of 64) to n * bits / 8 bytes
 * at out. */
static void kq5_pack(const float *q, size_t n, unsigned bits, uint8_t *out)
{
    for (size_t k = 0; k < n; k += 64) {
        __m128i b[4];
        for (size_t t = 0; t < 4; t++) {
            b[t] = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_loadu_ps(q + k + 16 * t)));
        }
        __m512i v = _mm512_inserti64x2(
            _mm512_inserti64x2(_mm512_inserti64x2(_mm512_castsi128_si512(b[0]), b[1], 1), b[2], 2),
            b[3], 3); /* 64 codes, one byte each */
        if (bits == 8) {
            _mm512_storeu_si512((void *)(out + k), v);
        } else if (bits == 4) {
            /* In each 16-bit word c0 | c1 << 8, the low byte of w | w >> 4 is c0 | c1 << 4. */
            __m512i t = _mm512_or_si512(v, _mm512_srli_epi16(v, 4));
            _mm256_storeu_si256((__m256i *)(out + k / 2), _mm512_cvtepi16_epi8(t));
        } else {
            __m512i t = _mm512_or_si512(v, _mm512_srli_epi16(v, 6));
            __m256i h = _mm512_cvtepi16_epi8(t); /* 2-code nibbles */
            __m256i u = _mm256_or_si256(h, _mm256_srli_epi16(h, 4));
            _mm_storeu_si128((__m128i *)(out + k / 4), _mm256_cvtepi16_epi8(u));
        }
    }
}

/* Transposes a 16 x 16 float matrix held in r[0..15] (row k in r[k]) in place. */
static inline void kq5_tr16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    /* u[4k + e], 128-bit chunk c: rows 4k..4k+3 of column 4c + e. */
    for (int k = 0; k < 4; k++) {
        __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 2]);
        __m512d c = _mm512_castps_pd(t[4 * k + 1]), d = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int e = 0; e < 4; e++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xdd);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xdd);
        r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
        r[4 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
    }
}

/* Per-lane state of 16 sub-blocks (one panel) in the kquant super-block kernel. */
typedef struct kq5_panel {
    __m512 sw, sx;  /* sums of step 1, kept for the refit */
    __m512i sc, mc; /* sub-block codes */
} kq5_panel;

/* The search of step 1 for the 16 sub-blocks of a panel (xv: element i of every sub-block in
 * xv[i], n elements each; wv and wx: the weights and w * x the same way, or NULL when every
 * weight is 1, where w * x == x and w * q == q exactly): s and m of each lane into s[0..15],
 * m[0..15]; sw, sx into p. */
static inline __attribute__((always_inline)) void kq5_panel_fit(const __m512 *xv, const __m512 *wv,
                                                                const __m512 *wx, size_t n,
                                                                unsigned bits, kq5_panel *p,
                                                                double *s, double *m)
{
    const float qmaxf = (float)((1u << bits) - 1u);
    const __m512 qmax = _mm512_set1_ps(qmaxf), fzero = _mm512_setzero_ps();
    __m512 lo = xv[0], hi = xv[0], sw = fzero, sx = fzero, sxx = fzero;
    for (size_t i = 0; i < n; i++) {
        const __m512 wxi = wv != NULL ? wx[i] : xv[i];
        lo = _mm512_min_ps(xv[i], lo); /* x < lo ? x : lo */
        hi = _mm512_max_ps(xv[i], hi);
        sw = wv != NULL ? _mm512_add_ps(sw, wv[i]) : sw;
        sx = _mm512_add_ps(sx, wxi);
        sxx = _mm512_add_ps(sxx, _mm512_mul_ps(wxi, xv[i]));
    }
    lo = _mm512_add_ps(_mm512_min_ps(lo, fzero), fzero);
    hi = _mm512_add_ps(hi, fzero);
    const __mmask16 live = _mm512_cmp_ps_mask(hi, lo, _CMP_GT_OQ);
    if (wv == NULL) {
        sw = _mm512_set1_ps((float)n); /* n additions of 1.0f */
    }
    p->sw = sw;
    p->sx = sx;
    __m512 xl[32];
    for (size_t i = 0; i < n; i++) {
        xl[i] = _mm512_sub_ps(xv[i], lo);
    }
    const __m512d zero = _mm512_setzero_pd(), two = _mm512_set1_pd(2.0),
                  inf = _mm512_set1_pd((double)INFINITY);
    const __m512d SWh[2] = {kq5_lo8(sw), kq5_hi8(sw)};
    const __m512d SXh[2] = {kq5_lo8(sx), kq5_hi8(sx)}, SXXh[2] = {kq5_lo8(sxx), kq5_hi8(sxx)};
    const __m512d loh[2] = {kq5_lo8(lo), kq5_hi8(lo)};
    const __m512d hih[2] = {kq5_lo8(hi), kq5_hi8(hi)};
    const __m512d range[2] = {_mm512_sub_pd(hih[0], loh[0]), _mm512_sub_pd(hih[1], loh[1])};
    __m512d best_e[2] = {zero, zero}, best_s[2] = {zero, zero}, best_m[2] = {zero, zero};
    __mmask8 found[2] = {0, 0};
    for (unsigned c = 0; c < AQ__KQ_CANDIDATES; c++) {
        const __m512d levels = _mm512_set1_pd((double)qmaxf - 1.0 + (double)c * 0.25);
        const __m256 i0 = _mm512_cvtpd_ps(_mm512_div_pd(levels, range[0]));
        const __m256 i1 = _mm512_cvtpd_ps(_mm512_div_pd(levels, range[1]));
        const __m512 inv = _mm512_insertf32x8(_mm512_castps256_ps512(i0), i1, 1);
        const __mmask16 inv_ok = _mm512_cmp_ps_mask(inv, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
        __m512 sq = fzero, sqq = fzero, sxq = fzero;
        for (size_t i = 0; i < n; i++) {
            /* x - lo >= +0 and inv > 0: the lower clamp is the identity (a NaN from an
             * infinite inv only occurs in a skipped lane). */
            const __m512 q = kq5_code_pos(_mm512_mul_ps(xl[i], inv), qmax);
            const __m512 wq = wv != NULL ? _mm512_mul_ps(wv[i], q) : q;
            sq = _mm512_add_ps(sq, wq);
            sqq = _mm512_add_ps(sqq, _mm512_mul_ps(wq, q));
            sxq = _mm512_add_ps(sxq, _mm512_mul_ps(wv != NULL ? wx[i] : xv[i], q));
        }
        const __m512d SQh[2] = {kq5_lo8(sq), kq5_hi8(sq)}, SQQh[2] = {kq5_lo8(sqq), kq5_hi8(sqq)},
                      SXQh[2] = {kq5_lo8(sxq), kq5_hi8(sxq)};
        for (int h = 0; h < 2; h++) {
            const __m512d SQ = SQh[h], SQQ = SQQh[h], SXQ = SXQh[h], SX = SXh[h], SW = SWh[h];
            const __m512d det = _mm512_sub_pd(_mm512_mul_pd(SW, SQQ), _mm512_mul_pd(SQ, SQ));
            __mmask8 ok = (__mmask8)(((unsigned)(live & inv_ok)) >> (8 * h));
            ok &= _mm512_cmp_pd_mask(det, zero, _CMP_GT_OQ);
            __m512d sv =
                _mm512_div_pd(_mm512_sub_pd(_mm512_mul_pd(SW, SXQ), _mm512_mul_pd(SQ, SX)), det);
            __m512d mv = _mm512_div_pd(_mm512_sub_pd(SX, _mm512_mul_pd(sv, SQ)), SW);
            const __mmask8 mpos = _mm512_cmp_pd_mask(mv, zero, _CMP_GT_OQ);
            mv = _mm512_mask_mov_pd(mv, mpos, zero);
            if (mpos != 0) { /* rare: a division only where some lane needs it */
                sv = _mm512_mask_div_pd(sv, mpos, SXQ, SQQ);
            }
            ok &= _mm512_cmp_pd_mask(sv, zero, _CMP_GT_OQ);
            ok &= _mm512_cmp_pd_mask(sv, inf, _CMP_LT_OQ);
            ok &= _mm512_cmp_pd_mask(_mm512_abs_pd(mv), inf, _CMP_LT_OQ);
            const __m512d s2 = _mm512_mul_pd(two, sv);
            __m512d e = _mm512_sub_pd(SXXh[h], _mm512_mul_pd(s2, SXQ));
            e = _mm512_sub_pd(e, _mm512_mul_pd(_mm512_mul_pd(two, mv), SX));
            e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(sv, sv), SQQ));
            e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(s2, mv), SQ));
            e = _mm512_add_pd(e, _mm512_mul_pd(_mm512_mul_pd(mv, mv), SW));
            const __mmask8 better =
                ok & (__mmask8)(~found[h] | _mm512_cmp_pd_mask(e, best_e[h], _CMP_LT_OQ));
            best_e[h] = _mm512_mask_mov_pd(best_e[h], better, e);
            best_s[h] = _mm512_mask_mov_pd(best_s[h], better, sv);
            best_m[h] = _mm512_mask_mov_pd(best_m[h], better, mv);
            found[h] |= ok;
        }
    }
    /* No candidate: the min-max fit where the sub-block has a range, s = 0 where not; m = lo. */
    const __m512d vqmax = _mm512_set1_pd((double)qmaxf);
    for (int h = 0; h < 2; h++) {
        const __mmask8 lv = (__mmask8)(((unsigned)live) >> (8 * h));
        const __m512d fb = _mm512_maskz_div_pd(lv, range[h], vqmax);
        _mm512_storeu_pd(s + 8 * h, _mm512_mask_mov_pd(fb, found[h], best_s[h]));
        _mm512_storeu_pd(m + 8 * h, _mm512_mask_mov_pd(loh[h], found[h], best_m[h]));
    }
}

/* a = d * sc, b = dmin * mc and inv = 1 / a (0 where a is not positive) of 16 lanes. */
static inline void kq5_ab(const float *d, const float *dmin, __m512i sc, __m512i mc, __m512 *a,
                          __m512 *b, __m512 *inv)
{
    *a = _mm512_mul_ps(_mm512_loadu_ps(d), _mm512_cvtepi32_ps(sc));
    *b = _mm512_mul_ps(_mm512_loadu_ps(dmin), _mm512_cvtepi32_ps(mc));
    const __mmask16 pos = _mm512_cmp_ps_mask(*a, _mm512_setzero_ps(), _CMP_GT_OQ);
    *inv = _mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0f), *a);
}

/* Step 3 for the 16 sub-blocks of a panel: the nine errors of each lane, the best pair kept. */
static inline __attribute__((always_inline)) void kq5_panel_refine(const __m512 *xv,
                                                                   const __m512 *wv, size_t n,
                                                                   unsigned bits, const float *d,
                                                                   const float *dmin, kq5_panel *p)
{
    const __m512 qmax = _mm512_set1_ps((float)((1u << bits) - 1u));
    const __m512i kmax = _mm512_set1_epi32((int)((1u << aq__kq_param_bits(bits)) - 1u));
    const __m512i zero = _mm512_setzero_si512();
    const __m512i s0 = p->sc, m0 = p->mc;
    __m512i bs = s0, bm = m0;
    __m512 best = _mm512_setzero_ps();
    for (int t = 0; t < 9; t++) {
        /* (0, 0) first, then the neighbours with ds outer and dm inner. */
        const int k = t == 0 ? 4 : (t <= 4 ? t - 1 : t);
        const int ds = k / 3 - 1, dm = k % 3 - 1;
        const __m512i cs = _mm512_add_epi32(s0, _mm512_set1_epi32(ds));
        const __m512i cm = _mm512_add_epi32(m0, _mm512_set1_epi32(dm));
        __m512 a, b, inv;
        kq5_ab(d, dmin, cs, cm, &a, &b, &inv);
        __m512 e = _mm512_setzero_ps();
        for (size_t i = 0; i < n; i++) {
            const __m512 q = kq5_code(_mm512_mul_ps(_mm512_add_ps(xv[i], b), inv), qmax);
            const __m512 r = _mm512_sub_ps(xv[i], _mm512_sub_ps(_mm512_mul_ps(a, q), b));
            const __m512 wr = wv != NULL ? _mm512_mul_ps(wv[i], r) : r;
            const __m512 term = _mm512_mul_ps(wr, r);
            e = _mm512_add_ps(e, term);
        }
        if (t == 0) {
            best = e;
            continue;
        }
        __mmask16 ok = _mm512_cmp_ps_mask(e, best, _CMP_LT_OQ);
        ok &= _mm512_cmpge_epi32_mask(cs, zero) & _mm512_cmpge_epi32_mask(cm, zero);
        ok &= _mm512_cmple_epi32_mask(cs, kmax) & _mm512_cmple_epi32_mask(cm, kmax);
        best = _mm512_mask_mov_ps(best, ok, e);
        bs = _mm512_mask_mov_epi32(bs, ok, cs);
        bm = _mm512_mask_mov_epi32(bm, ok, cm);
    }
    p->sc = bs;
    p->mc = bm;
}

/* Codes of a panel (step 4) into qv. */
static inline void kq5_panel_codes(const __m512 *xv, size_t n, unsigned bits, const float *d,
                                   const float *dmin, const kq5_panel *p, __m512 *qv)
{
    const __m512 qmax = _mm512_set1_ps((float)((1u << bits) - 1u));
    __m512 a, b, inv;
    kq5_ab(d, dmin, p->sc, p->mc, &a, &b, &inv);
    for (size_t i = 0; i < n; i++) {
        qv[i] = kq5_code(_mm512_mul_ps(_mm512_add_ps(xv[i], b), inv), qmax);
    }
}

/* The vocabulary of the shared kquant driver (kernels_kquant_simd.h): 16 lanes. */
#define KQS_VL 16
#define KQS_WEIGHTED 1
#define KQS_EXPORT(suffix) aq__quantize_kquant_avx512_##suffix
typedef __m512 kqs_v;
typedef kq5_panel kqs_panel;
#define kqs_zero _mm512_setzero_ps
#define kqs_add _mm512_add_ps
#define kqs_mul _mm512_mul_ps
#define kqs_load _mm512_loadu_ps
#define kqs_store _mm512_storeu_ps
#define kqs_tr kq5_tr16
#define kqs_panel_fit kq5_panel_fit
#define kqs_panel_refine kq5_panel_refine
#define kqs_panel_codes kq5_panel_codes
#define kqs_pack kq5_pack
#define KQS_PACK_WIDE 1

static inline void kqs_codes_load(kqs_panel *p, const unsigned *sc, const unsigned *mc)
{
    p->sc = _mm512_loadu_si512((const void *)sc);
    p->mc = _mm512_loadu_si512((const void *)mc);
}

static inline void kqs_codes_store(const kqs_panel *p, unsigned *sc, unsigned *mc)
{
    _mm512_storeu_si512((void *)sc, p->sc);
    _mm512_storeu_si512((void *)mc, p->mc);
}

#include "kernels_kquant_simd.h"

/* affine_search (5.1): the search of groups of 16, 32, 64 or 128 unweighted float32 elements
 * here (sums of codes and squared codes stay below 2^24), the others in the reference. */
static int kq5_search_hook(const float *x, size_t n, unsigned bits, float lo, float hi, double step,
                           double *scale, double *offset)
{
    switch (n) {
    case 16:
        return kq5_search(x, 2, bits, lo, hi, 0.0, step, true, false, scale, offset);
    case 32:
        return kq5_search(x, 4, bits, lo, hi, 0.0, step, true, false, scale, offset);
    case 64:
        return kq5_search(x, 8, bits, lo, hi, 0.0, step, true, false, scale, offset);
    case 128:
        return kq5_search(x, 16, bits, lo, hi, 0.0, step, true, false, scale, offset);
    default:
        return -1;
    }
}

#define KQ5_SEARCH_ADAPTER(suffix, dtype)                                                         \
    void aq__quantize_search_avx512_##suffix(const void *src, const float *importance,            \
                                             const aq__span *s, uint8_t *packed, float *scales,   \
                                             float *zero_points)                                  \
    {                                                                                             \
        aq__search_span(kq5_search_hook, src, dtype, importance, s, packed, scales, zero_points); \
    }

KQ5_SEARCH_ADAPTER(f32, AQ_DTYPE_F32)
KQ5_SEARCH_ADAPTER(f16, AQ_DTYPE_F16)
KQ5_SEARCH_ADAPTER(bf16, AQ_DTYPE_BF16)
KQ5_SEARCH_ADAPTER(f64, AQ_DTYPE_F64)
