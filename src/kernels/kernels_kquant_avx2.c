/*
 * AVX2 version of the kquant super-block (docs/format.md 5.2), bit-exact with the reference.
 * The same design as kernels_kquant_avx512.c with eight lanes: every per-element sum of the
 * specification is a float32 sum over one sub-block in element order, so sub-block j lives in
 * lane j % 8 of panel j / 8 (the super-block is transposed 8 x 8 at a time) and each lane adds
 * its sub-block's terms in the reference's order. The once-per-candidate double arithmetic
 * runs on two __m256d halves, left to right as written, without fused multiply-add (this file
 * is built without -mfma). Short super-blocks share panels (kernels_kquant_simd.h).
 */
#include "kernels.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>

/* Transposes an 8 x 8 float matrix held in r[0..7] (row k in r[k]) in place. */
static inline void kq2_tr8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    /* u[4k + e], 128-bit half c: rows 4k..4k+3 of column 4c + e. */
    for (int k = 0; k < 2; k++) {
        __m256d a = _mm256_castps_pd(t[4 * k]), b = _mm256_castps_pd(t[4 * k + 2]);
        __m256d c = _mm256_castps_pd(t[4 * k + 1]), d = _mm256_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, b));
        u[4 * k + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, b));
        u[4 * k + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(c, d));
        u[4 * k + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(c, d));
    }
    for (int e = 0; e < 4; e++) {
        r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
        r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
    }
}

static inline __m256d kq2_lo4(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
}

static inline __m256d kq2_hi4(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

/* The double mask of lanes 4h..4h+3 of a float mask. */
static inline __m256d kq2_half_mask(__m256 mask, int h)
{
    __m128i m = h == 0 ? _mm256_castsi256_si128(_mm256_castps_si256(mask))
                       : _mm256_extractf128_si256(_mm256_castps_si256(mask), 1);
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(m));
}

/* code(u) (docs/format.md 5.1): clamp with the constant second (max(NaN, 0) = 0, as the
 * reference's u > 0 ? u : 0), then round half to even. */
static inline __m256 kq2_code(__m256 u, __m256 qmax)
{
    u = _mm256_max_ps(u, _mm256_setzero_ps());
    u = _mm256_min_ps(u, qmax);
    return _mm256_round_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Per-lane state of the 8 sub-blocks of a panel. */
typedef struct kq2_panel {
    __m256 sw, sx;  /* sums of step 1, kept for the refit */
    __m256i sc, mc; /* sub-block codes */
} kq2_panel;

/* Step 1 for the 8 sub-blocks of a panel (xv[i]: element i of each, n elements): s and m of
 * each lane into s[0..7], m[0..7]; sw and sx into p. */
static inline __attribute__((always_inline)) void kq2_panel_fit(const __m256 *xv, const __m256 *wv,
                                                                const __m256 *wx, size_t n,
                                                                unsigned bits, kq2_panel *p,
                                                                double *s, double *m)
{
    const float qmaxf = (float)((1u << bits) - 1u);
    const __m256 qmax = _mm256_set1_ps(qmaxf), fzero = _mm256_setzero_ps();
    __m256 lo = xv[0], hi = xv[0], sw = fzero, sx = fzero, sxx = fzero;
    for (size_t i = 0; i < n; i++) {
        const __m256 wxi = wv != NULL ? wx[i] : xv[i];
        lo = _mm256_min_ps(xv[i], lo); /* x < lo ? x : lo */
        hi = _mm256_max_ps(xv[i], hi);
        sw = wv != NULL ? _mm256_add_ps(sw, wv[i]) : sw;
        sx = _mm256_add_ps(sx, wxi);
        sxx = _mm256_add_ps(sxx, _mm256_mul_ps(wxi, xv[i]));
    }
    lo = _mm256_add_ps(_mm256_min_ps(lo, fzero), fzero);
    hi = _mm256_add_ps(hi, fzero);
    const __m256 live = _mm256_cmp_ps(hi, lo, _CMP_GT_OQ);
    if (wv == NULL) {
        sw = _mm256_set1_ps((float)n); /* n additions of 1.0f */
    }
    p->sw = sw;
    p->sx = sx;
    __m256 xl[32];
    for (size_t i = 0; i < n; i++) {
        xl[i] = _mm256_sub_ps(xv[i], lo);
    }
    const __m256d zero = _mm256_setzero_pd(), two = _mm256_set1_pd(2.0),
                  inf = _mm256_set1_pd((double)INFINITY),
                  absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffll));
    const __m256d SWh[2] = {kq2_lo4(sw), kq2_hi4(sw)};
    const __m256d SXh[2] = {kq2_lo4(sx), kq2_hi4(sx)}, SXXh[2] = {kq2_lo4(sxx), kq2_hi4(sxx)};
    const __m256d loh[2] = {kq2_lo4(lo), kq2_hi4(lo)}, hih[2] = {kq2_lo4(hi), kq2_hi4(hi)};
    const __m256d range[2] = {_mm256_sub_pd(hih[0], loh[0]), _mm256_sub_pd(hih[1], loh[1])};
    __m256d best_e[2] = {zero, zero}, best_s[2] = {zero, zero}, best_m[2] = {zero, zero};
    __m256d found[2] = {zero, zero}; /* all-ones lanes where a candidate was valid */
    for (unsigned c = 0; c < AQ__KQ_CANDIDATES; c++) {
        const __m256d levels = _mm256_set1_pd((double)qmaxf - 1.0 + (double)c * 0.25);
        const __m128 i0 = _mm256_cvtpd_ps(_mm256_div_pd(levels, range[0]));
        const __m128 i1 = _mm256_cvtpd_ps(_mm256_div_pd(levels, range[1]));
        const __m256 inv = _mm256_insertf128_ps(_mm256_castps128_ps256(i0), i1, 1);
        const __m256 ok_f =
            _mm256_and_ps(live, _mm256_cmp_ps(inv, _mm256_set1_ps(FLT_MAX), _CMP_LE_OQ));
        __m256 sq = fzero, sqq = fzero, sxq = fzero;
        for (size_t i = 0; i < n; i++) {
            /* x - lo >= +0 and inv > 0 (or infinite in a skipped lane). */
            const __m256 q = kq2_code(_mm256_mul_ps(xl[i], inv), qmax);
            const __m256 wq = wv != NULL ? _mm256_mul_ps(wv[i], q) : q;
            sq = _mm256_add_ps(sq, wq);
            sqq = _mm256_add_ps(sqq, _mm256_mul_ps(wq, q));
            sxq = _mm256_add_ps(sxq, _mm256_mul_ps(wv != NULL ? wx[i] : xv[i], q));
        }
        const __m256d SQh[2] = {kq2_lo4(sq), kq2_hi4(sq)}, SQQh[2] = {kq2_lo4(sqq), kq2_hi4(sqq)},
                      SXQh[2] = {kq2_lo4(sxq), kq2_hi4(sxq)};
        for (int h = 0; h < 2; h++) {
            const __m256d SQ = SQh[h], SQQ = SQQh[h], SXQ = SXQh[h], SX = SXh[h], SW = SWh[h];
            const __m256d det = _mm256_sub_pd(_mm256_mul_pd(SW, SQQ), _mm256_mul_pd(SQ, SQ));
            __m256d ok =
                _mm256_and_pd(kq2_half_mask(ok_f, h), _mm256_cmp_pd(det, zero, _CMP_GT_OQ));
            __m256d sv =
                _mm256_div_pd(_mm256_sub_pd(_mm256_mul_pd(SW, SXQ), _mm256_mul_pd(SQ, SX)), det);
            __m256d mv = _mm256_div_pd(_mm256_sub_pd(SX, _mm256_mul_pd(sv, SQ)), SW);
            const __m256d mpos = _mm256_cmp_pd(mv, zero, _CMP_GT_OQ);
            mv = _mm256_blendv_pd(mv, zero, mpos);
            if (_mm256_movemask_pd(mpos) != 0) { /* rare: a division only where needed */
                sv = _mm256_blendv_pd(sv, _mm256_div_pd(SXQ, SQQ), mpos);
            }
            ok = _mm256_and_pd(ok, _mm256_cmp_pd(sv, zero, _CMP_GT_OQ));
            ok = _mm256_and_pd(ok, _mm256_cmp_pd(sv, inf, _CMP_LT_OQ));
            ok = _mm256_and_pd(ok, _mm256_cmp_pd(_mm256_and_pd(mv, absmask), inf, _CMP_LT_OQ));
            const __m256d s2 = _mm256_mul_pd(two, sv);
            __m256d e = _mm256_sub_pd(SXXh[h], _mm256_mul_pd(s2, SXQ));
            e = _mm256_sub_pd(e, _mm256_mul_pd(_mm256_mul_pd(two, mv), SX));
            e = _mm256_add_pd(e, _mm256_mul_pd(_mm256_mul_pd(sv, sv), SQQ));
            e = _mm256_add_pd(e, _mm256_mul_pd(_mm256_mul_pd(s2, mv), SQ));
            e = _mm256_add_pd(e, _mm256_mul_pd(_mm256_mul_pd(mv, mv), SW));
            const __m256d better = _mm256_and_pd(
                ok, _mm256_or_pd(
                        _mm256_andnot_pd(found[h], _mm256_castsi256_pd(_mm256_set1_epi64x(-1))),
                        _mm256_cmp_pd(e, best_e[h], _CMP_LT_OQ)));
            best_e[h] = _mm256_blendv_pd(best_e[h], e, better);
            best_s[h] = _mm256_blendv_pd(best_s[h], sv, better);
            best_m[h] = _mm256_blendv_pd(best_m[h], mv, better);
            found[h] = _mm256_or_pd(found[h], ok);
        }
    }
    /* No candidate: the min-max fit where the sub-block has a range, s = 0 where not; m = lo. */
    const __m256d vqmax = _mm256_set1_pd((double)qmaxf);
    for (int h = 0; h < 2; h++) {
        const __m256d fb = _mm256_and_pd(kq2_half_mask(live, h), _mm256_div_pd(range[h], vqmax));
        _mm256_storeu_pd(s + 4 * h, _mm256_blendv_pd(fb, best_s[h], found[h]));
        _mm256_storeu_pd(m + 4 * h, _mm256_blendv_pd(loh[h], best_m[h], found[h]));
    }
}

/* a = d * sc, b = dmin * mc and inv = 1 / a (0 where a is not positive) of 8 lanes. */
static inline void kq2_ab(const float *d, const float *dmin, __m256i sc, __m256i mc, __m256 *a,
                          __m256 *b, __m256 *inv)
{
    *a = _mm256_mul_ps(_mm256_loadu_ps(d), _mm256_cvtepi32_ps(sc));
    *b = _mm256_mul_ps(_mm256_loadu_ps(dmin), _mm256_cvtepi32_ps(mc));
    const __m256 pos = _mm256_cmp_ps(*a, _mm256_setzero_ps(), _CMP_GT_OQ);
    *inv = _mm256_and_ps(pos, _mm256_div_ps(_mm256_set1_ps(1.0f), *a));
}

/* Step 3 for the 8 sub-blocks of a panel: the nine errors of each lane, the best pair kept. */
static inline __attribute__((always_inline)) void kq2_panel_refine(const __m256 *xv,
                                                                   const __m256 *wv, size_t n,
                                                                   unsigned bits, const float *d,
                                                                   const float *dmin, kq2_panel *p)
{
    const __m256 qmax = _mm256_set1_ps((float)((1u << bits) - 1u));
    const __m256i kmax1 = _mm256_set1_epi32((int)(1u << aq__kq_param_bits(bits)));
    const __m256i minus1 = _mm256_set1_epi32(-1);
    const __m256i s0 = p->sc, m0 = p->mc;
    __m256i bs = s0, bm = m0;
    __m256 best = _mm256_setzero_ps();
    for (int t = 0; t < 9; t++) {
        /* (0, 0) first, then the neighbours with ds outer and dm inner. */
        const int k = t == 0 ? 4 : (t <= 4 ? t - 1 : t);
        const int ds = k / 3 - 1, dm = k % 3 - 1;
        const __m256i cs = _mm256_add_epi32(s0, _mm256_set1_epi32(ds));
        const __m256i cm = _mm256_add_epi32(m0, _mm256_set1_epi32(dm));
        __m256 a, b, inv;
        kq2_ab(d, dmin, cs, cm, &a, &b, &inv);
        __m256 e = _mm256_setzero_ps();
        for (size_t i = 0; i < n; i++) {
            const __m256 q = kq2_code(_mm256_mul_ps(_mm256_add_ps(xv[i], b), inv), qmax);
            const __m256 r = _mm256_sub_ps(xv[i], _mm256_sub_ps(_mm256_mul_ps(a, q), b));
            const __m256 wr = wv != NULL ? _mm256_mul_ps(wv[i], r) : r;
            const __m256 term = _mm256_mul_ps(wr, r);
            e = _mm256_add_ps(e, term);
        }
        if (t == 0) {
            best = e;
            continue;
        }
        /* 0 <= cs, cm <= kmax, as -1 < c < kmax + 1. */
        __m256i valid =
            _mm256_and_si256(_mm256_cmpgt_epi32(cs, minus1), _mm256_cmpgt_epi32(kmax1, cs));
        valid = _mm256_and_si256(
            valid, _mm256_and_si256(_mm256_cmpgt_epi32(cm, minus1), _mm256_cmpgt_epi32(kmax1, cm)));
        const __m256 ok =
            _mm256_and_ps(_mm256_castsi256_ps(valid), _mm256_cmp_ps(e, best, _CMP_LT_OQ));
        best = _mm256_blendv_ps(best, e, ok);
        bs = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(bs), _mm256_castsi256_ps(cs), ok));
        bm = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(bm), _mm256_castsi256_ps(cm), ok));
    }
    p->sc = bs;
    p->mc = bm;
}

/* Codes of a panel (step 4) into qv. */
static inline void kq2_panel_codes(const __m256 *xv, size_t n, unsigned bits, const float *d,
                                   const float *dmin, const kq2_panel *p, __m256 *qv)
{
    const __m256 qmax = _mm256_set1_ps((float)((1u << bits) - 1u));
    __m256 a, b, inv;
    kq2_ab(d, dmin, p->sc, p->mc, &a, &b, &inv);
    for (size_t i = 0; i < n; i++) {
        qv[i] = kq2_code(_mm256_mul_ps(_mm256_add_ps(xv[i], b), inv), qmax);
    }
}

/* The vocabulary of the shared kquant driver (kernels_kquant_simd.h): 8 lanes. */
#define KQS_VL 8
#define KQS_WEIGHTED 1
#define KQS_EXPORT(suffix) aq__quantize_kquant_avx2_##suffix
typedef __m256 kqs_v;
typedef kq2_panel kqs_panel;
#define kqs_zero _mm256_setzero_ps
#define kqs_add _mm256_add_ps
#define kqs_mul _mm256_mul_ps
#define kqs_load _mm256_loadu_ps
#define kqs_store _mm256_storeu_ps
#define kqs_tr kq2_tr8
#define kqs_panel_fit kq2_panel_fit
#define kqs_panel_refine kq2_panel_refine
#define kqs_panel_codes kq2_panel_codes

static inline void kqs_codes_load(kqs_panel *p, const unsigned *sc, const unsigned *mc)
{
    p->sc = _mm256_loadu_si256((const __m256i *)(const void *)sc);
    p->mc = _mm256_loadu_si256((const __m256i *)(const void *)mc);
}

static inline void kqs_codes_store(const kqs_panel *p, unsigned *sc, unsigned *mc)
{
    _mm256_storeu_si256((__m256i *)(void *)sc, p->sc);
    _mm256_storeu_si256((__m256i *)(void *)mc, p->mc);
}

static inline void kqs_pack(const float *q, size_t n, unsigned bits, uint8_t *out)
{
    aq__kq_pack_codes(q, n, bits, out);
}

#include "kernels_kquant_simd.h"
