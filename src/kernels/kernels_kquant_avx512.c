/*
 * AVX-512 (F, DQ) versions of the two hot steps of the kquant scheme (docs/format.md 5.2):
 * the clipping search of step 1 and the neighbour refinement of step 3, for full unweighted
 * sub-blocks (16 or 32 elements); everything else, and weighted or short sub-blocks, is the
 * reference code (aq__kquant_span with these hooks). Bit-exact with the reference:
 *
 * - The eight double lanes of the specification's block sums are the eight lanes of a __m512d:
 *   element i of a sub-block goes to lane i mod 8, the vectors of elements 0-7, 8-15, ... are
 *   added in that order to a zero vector, exactly as the reference adds them one by one.
 * - The final ((L0 + L1) + (L2 + L3)) + ((L4 + L5) + (L6 + L7)) of eight sums at once is a
 *   transpose-and-add (kq5_tree8) whose three levels add the same pairs.
 * - Per element the float32 operations are the reference's; max(u, 0) and min(u, qmax) use
 *   maxps/minps with the constant second, which return it for NaN and for equal zeros, as the
 *   reference's `u > 0 ? u : 0` and `u < qmax ? u : qmax` do.
 * - The once-per-candidate double arithmetic is the reference's, eight candidates per vector
 *   (no fused multiply-add: intrinsics are never contracted).
 * - Sw, Sq and Sqq are sums of small integers, exact in any order.
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

/* The search of step 1 over a full sub-block of nv * 8 elements (nv = 2 or 4), unweighted. */
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

/* kquant's sub-block search (step 1 of 5.2). */
static inline __attribute__((always_inline)) bool
kq5_fit(const float *x, size_t nv, unsigned bits, float lo, float hi, double *scale, double *offset)
{
    return kq5_search(x, nv, bits, lo, hi, -1.0, 0.125, false, true, scale, offset);
}

static bool kq5_fit_hook(const float *x, const float *w, size_t n, unsigned bits, float lo,
                         float hi, double *scale, double *offset)
{
    if (w == NULL && n == aq__kq_sub(bits)) {
        return n == 32 ? kq5_fit(x, 4, bits, lo, hi, scale, offset)
                       : kq5_fit(x, 2, bits, lo, hi, scale, offset);
    }
    return aq__search_fit_kquant(x, w, n, bits, lo, hi, scale, offset);
}

/* Step 3 over a full unweighted sub-block of nv * 8 elements: the nine errors at once. */
static inline __attribute__((always_inline)) void kq5_refine(const float *x, size_t nv,
                                                             unsigned bits, float d, float dmin,
                                                             unsigned *sc, unsigned *mc)
{
    const __m512 qmax = _mm512_set1_ps((float)((1u << bits) - 1u));
    const int kmax = (int)((1u << aq__kq_param_bits(bits)) - 1u);
    const size_t nf = nv / 2;
    __m512 xv[2];
    __m512d xd[4];
    for (size_t k = 0; k < nf; k++) {
        xv[k] = _mm512_loadu_ps(x + 16 * k);
        xd[2 * k] = kq5_lo8(xv[k]);
        xd[2 * k + 1] = kq5_hi8(xv[k]);
    }
    const int s0 = (int)*sc, m0 = (int)*mc;
    /* Pair p = 0..7 are the neighbours in the reference's order, 8 is (s0, m0). */
    int ps[9], pm[9];
    bool valid[9];
    __m512d acc[9];
    for (int p = 0, t = 0; t < 9; t++) {
        int ds = t / 3 - 1, dm = t % 3 - 1;
        int k = (ds == 0 && dm == 0) ? 8 : p++;
        ps[k] = s0 + ds;
        pm[k] = m0 + dm;
        valid[k] = ps[k] >= 0 && pm[k] >= 0 && ps[k] <= kmax && pm[k] <= kmax;
    }
    /* 1 / a for the three scales s0 - 1, s0, s0 + 1 (0 where a is not positive). */
    float ainv[3];
    for (int t = 0; t < 3; t++) {
        const float a = d * (float)(s0 + t - 1);
        ainv[t] = a > 0.0f ? 1.0f / a : 0.0f;
    }
    for (int k = 0; k < 9; k++) {
        __m512d e = _mm512_setzero_pd();
        if (valid[k]) {
            const float a = d * (float)ps[k];
            const float b = dmin * (float)pm[k];
            const float inv = ainv[ps[k] - s0 + 1];
            const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vinv = _mm512_set1_ps(inv);
            for (size_t j = 0; j < nf; j++) {
                __m512 q = kq5_code(_mm512_mul_ps(_mm512_add_ps(xv[j], vb), vinv), qmax);
                __m512 xh = _mm512_sub_ps(_mm512_mul_ps(va, q), vb);
                __m512d r0 = _mm512_sub_pd(xd[2 * j], kq5_lo8(xh));
                __m512d r1 = _mm512_sub_pd(xd[2 * j + 1], kq5_hi8(xh));
                e = _mm512_add_pd(e, _mm512_mul_pd(r0, r0));
                e = _mm512_add_pd(e, _mm512_mul_pd(r1, r1));
            }
        }
        acc[k] = e;
    }
    double err[8];
    _mm512_storeu_pd(err, kq5_tree8(acc));
    double best = kq5_tree1(acc[8]);
    unsigned bs = (unsigned)s0, bm = (unsigned)m0;
    for (int k = 0; k < 8; k++) {
        if (valid[k] && err[k] < best) {
            best = err[k];
            bs = (unsigned)ps[k];
            bm = (unsigned)pm[k];
        }
    }
    *sc = bs;
    *mc = bm;
}

static void kq5_refine_hook(const float *x, const float *w, size_t n, unsigned bits, float d,
                            float dmin, unsigned *sc, unsigned *mc)
{
    if (w == NULL && n == aq__kq_sub(bits)) {
        if (n == 32) {
            kq5_refine(x, 4, bits, d, dmin, sc, mc);
        } else {
            kq5_refine(x, 2, bits, d, dmin, sc, mc);
        }
        return;
    }
    aq__kq_refine_ref(x, w, n, bits, d, dmin, sc, mc);
}

static const aq__kq_hooks kq5_hooks = {kq5_fit_hook, kq5_refine_hook};

/* Codes of one full sub-block (nf float vectors) for its quantized parameters (step 4), as
 * floats at q. */
static inline void kq5_codes(const float *x, size_t nf, __m512 qmax, float d, float dmin,
                             unsigned sc, unsigned mc, float *q)
{
    const float a = d * (float)sc;
    const float b = dmin * (float)mc;
    if (!(a > 0.0f)) {
        for (size_t k = 0; k < nf; k++) {
            _mm512_storeu_ps(q + 16 * k, _mm512_setzero_ps());
        }
        return;
    }
    const __m512 vb = _mm512_set1_ps(b), vinv = _mm512_set1_ps(1.0f / a);
    for (size_t k = 0; k < nf; k++) {
        __m512 u = _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(x + 16 * k), vb), vinv);
        _mm512_storeu_ps(q + 16 * k, kq5_code(u, qmax));
    }
}

/* Packs 512 codes (floats holding integers < 2^bits) to 512 * bits / 8 bytes at out. */
static void kq5_pack(const float *q, unsigned bits, uint8_t *out)
{
    for (size_t k = 0; k < AQ__KQ_SUPER; k += 64) {
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

/* A whole super-block: full, unweighted and byte-aligned ones here, the others through the
 * reference with the SIMD sub-block steps. */
static void kq5_super(const float *x, const float *w, size_t len, unsigned bits, uint8_t *codes,
                      size_t bit0, uint8_t *meta, float *d_out, float *dmin_out)
{
    if (w != NULL || len != AQ__KQ_SUPER || bit0 % 8 != 0) {
        aq__kq_super(&kq5_hooks, x, w, len, bits, codes, bit0, meta, d_out, dmin_out);
        return;
    }
    const size_t sub = aq__kq_sub(bits), nsub = AQ__KQ_SUPER / sub, nv = sub / 8, nf = nv / 2;
    const float qmaxf = (float)((1u << bits) - 1u);
    const __m512 qmax = _mm512_set1_ps(qmaxf);
    double s[AQ__KQ_SUPER / 16], m[AQ__KQ_SUPER / 16];
    unsigned sc[AQ__KQ_SUPER / 16], mc[AQ__KQ_SUPER / 16];
    float q[AQ__KQ_SUPER];

    /* 1. */
    double smax = 0.0, mmax = 0.0;
    for (size_t j = 0; j < nsub; j++) {
        const float *xj = x + j * sub;
        __m512 vmin = _mm512_loadu_ps(xj), vmax = vmin;
        for (size_t k = 1; k < nf; k++) {
            vmin = _mm512_min_ps(vmin, _mm512_loadu_ps(xj + 16 * k));
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(xj + 16 * k));
        }
        float lo = _mm512_reduce_min_ps(vmin), hi = _mm512_reduce_max_ps(vmax);
        lo = (lo < 0.0f ? lo : 0.0f) + 0.0f;
        hi = hi + 0.0f;
        if (hi <= lo) {
            s[j] = 0.0;
            m[j] = (double)lo;
        } else if (!(nv == 4 ? kq5_fit(xj, 4, bits, lo, hi, &s[j], &m[j])
                             : kq5_fit(xj, 2, bits, lo, hi, &s[j], &m[j]))) {
            s[j] = ((double)hi - (double)lo) / (double)qmaxf;
            m[j] = (double)lo;
        }
        smax = s[j] > smax ? s[j] : smax;
        mmax = -m[j] > mmax ? -m[j] : mmax;
    }

    /* 2 and 3. */
    float d, dmin;
    aq__kq_params(s, m, nsub, bits, smax, mmax, &d, &dmin, sc, mc);
    for (size_t j = 0; j < nsub; j++) {
        if (nv == 4) {
            kq5_refine(x + j * sub, 4, bits, d, dmin, &sc[j], &mc[j]);
        } else {
            kq5_refine(x + j * sub, 2, bits, d, dmin, &sc[j], &mc[j]);
        }
    }

    /* 4 and 5: codes, then at most two refits, each followed by new codes. With every weight
     * 1, (W*A)*A is A*A and so on; the lanes are the specification's. */
    for (size_t j = 0; j < nsub; j++) {
        kq5_codes(x + j * sub, nf, qmax, d, dmin, sc[j], mc[j], q + j * sub);
    }
    for (unsigned r = 0; r < 2; r++) {
        __m512d laa = _mm512_setzero_pd(), lab = laa, lbb = laa, lxa = laa, lxb = laa;
        for (size_t i = 0; i < AQ__KQ_SUPER; i += 8) {
            const __m512d S = _mm512_set1_pd((double)sc[i / sub]);
            const __m512d B = _mm512_set1_pd((double)mc[i / sub]);
            const __m512d X = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
            const __m512d A = _mm512_mul_pd(S, _mm512_cvtps_pd(_mm256_loadu_ps(q + i)));
            laa = _mm512_add_pd(laa, _mm512_mul_pd(A, A));
            lab = _mm512_add_pd(lab, _mm512_mul_pd(A, B));
            lbb = _mm512_add_pd(lbb, _mm512_mul_pd(B, B));
            lxa = _mm512_add_pd(lxa, _mm512_mul_pd(X, A));
            lxb = _mm512_add_pd(lxb, _mm512_mul_pd(X, B));
        }
        if (!aq__kq_refit_solve(kq5_tree1(laa), kq5_tree1(lab), kq5_tree1(lbb), kq5_tree1(lxa),
                                kq5_tree1(lxb), &d, &dmin)) {
            break;
        }
        for (size_t j = 0; j < nsub; j++) {
            kq5_codes(x + j * sub, nf, qmax, d, dmin, sc[j], mc[j], q + j * sub);
        }
    }

    kq5_pack(q, bits, codes + bit0 / 8);
    aq__kq_put_params(meta, bits, len, sc, mc);
    *d_out = d;
    *dmin_out = dmin;
}

#define KQ5_ADAPTER(suffix, dtype)                                                              \
    void aq__quantize_kquant_avx512_##suffix(const void *src, const float *importance,          \
                                             const aq__span *s, uint8_t *packed, uint8_t *meta, \
                                             float *scales, float *mins)                        \
    {                                                                                           \
        aq__kquant_span(kq5_super, src, dtype, importance, s, packed, meta, scales, mins);      \
    }

KQ5_ADAPTER(f32, AQ_DTYPE_F32)
KQ5_ADAPTER(f16, AQ_DTYPE_F16)
KQ5_ADAPTER(bf16, AQ_DTYPE_BF16)
KQ5_ADAPTER(f64, AQ_DTYPE_F64)

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
