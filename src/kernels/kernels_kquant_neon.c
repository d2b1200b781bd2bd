/*
 * NEON (AArch64) version of the kquant super-block (docs/format.md 5.2), bit-exact with the
 * reference. The design of kernels_kquant_avx2.c with four lanes: every per-element sum of the
 * specification is a float32 sum over one sub-block in element order, so sub-block j lives in
 * lane j % 4 of panel j / 4 (the super-block is transposed 4 x 4 at a time) and each lane adds
 * its sub-block's terms in the reference's order. The once-per-candidate double arithmetic
 * runs on two float64x2_t halves, left to right as written; -ffp-contract=off keeps the
 * compiler from fusing multiplies and adds. Clamps are compare-and-select, exactly the
 * reference's `u > 0 ? u : 0` (NEON's max would keep a NaN). Weighted super-blocks go to the
 * reference; short ones share panels (kernels_kquant_simd.h).
 */
#include "kernels.h"

#include <arm_neon.h>
#include <float.h>
#include <math.h>

/* Transposes a 4 x 4 float matrix held in r[0..3] (row k in r[k]) in place. */
static inline void kqn_tr4(float32x4_t r[4])
{
    const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

static inline float64x2_t kqn_lo2(float32x4_t v)
{
    return vcvt_f64_f32(vget_low_f32(v));
}

static inline float64x2_t kqn_hi2(float32x4_t v)
{
    return vcvt_high_f64_f32(v);
}

/* The double mask of lanes 2h, 2h + 1 of a float mask. */
static inline uint64x2_t kqn_half_mask(uint32x4_t mask, int h)
{
    const int32x4_t m = vreinterpretq_s32_u32(mask);
    return vreinterpretq_u64_s64(h == 0 ? vmovl_s32(vget_low_s32(m)) : vmovl_high_s32(m));
}

/* code(u) (docs/format.md 5.1): u > 0 ? u : 0, then u < qmax ? u : qmax, then round half to
 * even. */
static inline float32x4_t kqn_code(float32x4_t u, float32x4_t qmax)
{
    const float32x4_t zero = vdupq_n_f32(0.0f);
    u = vbslq_f32(vcgtq_f32(u, zero), u, zero);
    u = vbslq_f32(vcltq_f32(u, qmax), u, qmax);
    return vrndnq_f32(u);
}

/* Per-lane state of the 4 sub-blocks of a panel. */
typedef struct kqn_panel {
    float32x4_t sw, sx; /* sums of step 1, kept for the refit */
    int32x4_t sc, mc;   /* sub-block codes */
} kqn_panel;

/* Step 1 for the 4 sub-blocks of a panel (xv[i]: element i of each, n elements): s and m of
 * each lane into s[0..3], m[0..3]; sw and sx into p. */
static inline __attribute__((always_inline)) void
kqn_panel_fit(const float32x4_t *xv, size_t n, unsigned bits, kqn_panel *p, double *s, double *m)
{
    const float qmaxf = (float)((1u << bits) - 1u);
    const float32x4_t qmax = vdupq_n_f32(qmaxf), fzero = vdupq_n_f32(0.0f);
    float32x4_t lo = xv[0], hi = xv[0], sx = fzero, sxx = fzero;
    for (size_t i = 0; i < n; i++) {
        lo = vbslq_f32(vcltq_f32(xv[i], lo), xv[i], lo);
        hi = vbslq_f32(vcgtq_f32(xv[i], hi), xv[i], hi);
        sx = vaddq_f32(sx, xv[i]);
        sxx = vaddq_f32(sxx, vmulq_f32(xv[i], xv[i]));
    }
    lo = vaddq_f32(vbslq_f32(vcltq_f32(lo, fzero), lo, fzero), fzero);
    hi = vaddq_f32(hi, fzero);
    const uint32x4_t live = vcgtq_f32(hi, lo);
    p->sw = vdupq_n_f32((float)n);
    p->sx = sx;
    float32x4_t xl[32];
    for (size_t i = 0; i < n; i++) {
        xl[i] = vsubq_f32(xv[i], lo);
    }
    const float64x2_t zero = vdupq_n_f64(0.0), two = vdupq_n_f64(2.0),
                      inf = vdupq_n_f64((double)INFINITY), SW = vdupq_n_f64((double)n);
    const float64x2_t SXh[2] = {kqn_lo2(sx), kqn_hi2(sx)}, SXXh[2] = {kqn_lo2(sxx), kqn_hi2(sxx)};
    const float64x2_t loh[2] = {kqn_lo2(lo), kqn_hi2(lo)}, hih[2] = {kqn_lo2(hi), kqn_hi2(hi)};
    const float64x2_t range[2] = {vsubq_f64(hih[0], loh[0]), vsubq_f64(hih[1], loh[1])};
    float64x2_t best_e[2] = {zero, zero}, best_s[2] = {zero, zero}, best_m[2] = {zero, zero};
    uint64x2_t found[2] = {vdupq_n_u64(0), vdupq_n_u64(0)};
    for (unsigned c = 0; c < AQ__KQ_CANDIDATES; c++) {
        const float64x2_t levels = vdupq_n_f64((double)qmaxf - 1.0 + (double)c * 0.25);
        const float32x4_t inv = vcvt_high_f32_f64(vcvt_f32_f64(vdivq_f64(levels, range[0])),
                                                  vdivq_f64(levels, range[1]));
        const uint32x4_t ok_f = vandq_u32(live, vcleq_f32(inv, vdupq_n_f32(FLT_MAX)));
        float32x4_t sq = fzero, sqq = fzero, sxq = fzero;
        for (size_t i = 0; i < n; i++) {
            const float32x4_t q = kqn_code(vmulq_f32(xl[i], inv), qmax);
            sq = vaddq_f32(sq, q);
            sqq = vaddq_f32(sqq, vmulq_f32(q, q));
            sxq = vaddq_f32(sxq, vmulq_f32(xv[i], q));
        }
        const float64x2_t SQh[2] = {kqn_lo2(sq), kqn_hi2(sq)},
                          SQQh[2] = {kqn_lo2(sqq), kqn_hi2(sqq)},
                          SXQh[2] = {kqn_lo2(sxq), kqn_hi2(sxq)};
        for (int h = 0; h < 2; h++) {
            const float64x2_t SQ = SQh[h], SQQ = SQQh[h], SXQ = SXQh[h], SX = SXh[h];
            const float64x2_t det = vsubq_f64(vmulq_f64(SW, SQQ), vmulq_f64(SQ, SQ));
            uint64x2_t ok = vandq_u64(kqn_half_mask(ok_f, h), vcgtq_f64(det, zero));
            float64x2_t sv = vdivq_f64(vsubq_f64(vmulq_f64(SW, SXQ), vmulq_f64(SQ, SX)), det);
            float64x2_t mv = vdivq_f64(vsubq_f64(SX, vmulq_f64(sv, SQ)), SW);
            const uint64x2_t mpos = vcgtq_f64(mv, zero);
            mv = vbslq_f64(mpos, zero, mv);
            sv = vbslq_f64(mpos, vdivq_f64(SXQ, SQQ), sv);
            ok = vandq_u64(ok, vcgtq_f64(sv, zero));
            ok = vandq_u64(ok, vcltq_f64(sv, inf));
            ok = vandq_u64(ok, vcltq_f64(vabsq_f64(mv), inf));
            const float64x2_t s2 = vmulq_f64(two, sv);
            float64x2_t e = vsubq_f64(SXXh[h], vmulq_f64(s2, SXQ));
            e = vsubq_f64(e, vmulq_f64(vmulq_f64(two, mv), SX));
            e = vaddq_f64(e, vmulq_f64(vmulq_f64(sv, sv), SQQ));
            e = vaddq_f64(e, vmulq_f64(vmulq_f64(s2, mv), SQ));
            e = vaddq_f64(e, vmulq_f64(vmulq_f64(mv, mv), SW));
            const uint64x2_t better = vandq_u64(
                ok, vorrq_u64(vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(found[h]))),
                              vcltq_f64(e, best_e[h])));
            best_e[h] = vbslq_f64(better, e, best_e[h]);
            best_s[h] = vbslq_f64(better, sv, best_s[h]);
            best_m[h] = vbslq_f64(better, mv, best_m[h]);
            found[h] = vorrq_u64(found[h], ok);
        }
    }
    /* No candidate: the min-max fit where the sub-block has a range, s = 0 where not; m = lo. */
    const float64x2_t vqmax = vdupq_n_f64((double)qmaxf);
    for (int h = 0; h < 2; h++) {
        const float64x2_t fb = vbslq_f64(kqn_half_mask(live, h), vdivq_f64(range[h], vqmax), zero);
        vst1q_f64(s + 2 * h, vbslq_f64(found[h], best_s[h], fb));
        vst1q_f64(m + 2 * h, vbslq_f64(found[h], best_m[h], loh[h]));
    }
}

/* a = d * sc, b = dmin * mc and inv = 1 / a (0 where a is not positive) of 4 lanes. */
static inline void kqn_ab(const float *d, const float *dmin, int32x4_t sc, int32x4_t mc,
                          float32x4_t *a, float32x4_t *b, float32x4_t *inv)
{
    *a = vmulq_f32(vld1q_f32(d), vcvtq_f32_s32(sc));
    *b = vmulq_f32(vld1q_f32(dmin), vcvtq_f32_s32(mc));
    const uint32x4_t pos = vcgtq_f32(*a, vdupq_n_f32(0.0f));
    *inv = vbslq_f32(pos, vdivq_f32(vdupq_n_f32(1.0f), *a), vdupq_n_f32(0.0f));
}

/* Step 3 for the 4 sub-blocks of a panel: the nine errors of each lane, the best pair kept. */
static inline __attribute__((always_inline)) void kqn_panel_refine(const float32x4_t *xv, size_t n,
                                                                   unsigned bits, const float *d,
                                                                   const float *dmin, kqn_panel *p)
{
    const float32x4_t qmax = vdupq_n_f32((float)((1u << bits) - 1u));
    const int32x4_t kmax = vdupq_n_s32((int)((1u << aq__kq_param_bits(bits)) - 1u));
    const int32x4_t izero = vdupq_n_s32(0);
    const int32x4_t s0 = p->sc, m0 = p->mc;
    int32x4_t bs = s0, bm = m0;
    float32x4_t best = vdupq_n_f32(0.0f);
    for (int t = 0; t < 9; t++) {
        /* (0, 0) first, then the neighbours with ds outer and dm inner. */
        const int k = t == 0 ? 4 : (t <= 4 ? t - 1 : t);
        const int ds = k / 3 - 1, dm = k % 3 - 1;
        const int32x4_t cs = vaddq_s32(s0, vdupq_n_s32(ds));
        const int32x4_t cm = vaddq_s32(m0, vdupq_n_s32(dm));
        float32x4_t a, b, inv;
        kqn_ab(d, dmin, cs, cm, &a, &b, &inv);
        float32x4_t e = vdupq_n_f32(0.0f);
        for (size_t i = 0; i < n; i++) {
            const float32x4_t q = kqn_code(vmulq_f32(vaddq_f32(xv[i], b), inv), qmax);
            const float32x4_t r = vsubq_f32(xv[i], vsubq_f32(vmulq_f32(a, q), b));
            e = vaddq_f32(e, vmulq_f32(r, r));
        }
        if (t == 0) {
            best = e;
            continue;
        }
        uint32x4_t ok = vcltq_f32(e, best);
        ok = vandq_u32(ok, vandq_u32(vcgeq_s32(cs, izero), vcgeq_s32(cm, izero)));
        ok = vandq_u32(ok, vandq_u32(vcleq_s32(cs, kmax), vcleq_s32(cm, kmax)));
        best = vbslq_f32(ok, e, best);
        bs = vbslq_s32(ok, cs, bs);
        bm = vbslq_s32(ok, cm, bm);
    }
    p->sc = bs;
    p->mc = bm;
}

/* Codes of a panel (step 4) into qv. */
static inline void kqn_panel_codes(const float32x4_t *xv, size_t n, unsigned bits, const float *d,
                                   const float *dmin, const kqn_panel *p, float32x4_t *qv)
{
    const float32x4_t qmax = vdupq_n_f32((float)((1u << bits) - 1u));
    float32x4_t a, b, inv;
    kqn_ab(d, dmin, p->sc, p->mc, &a, &b, &inv);
    for (size_t i = 0; i < n; i++) {
        qv[i] = kqn_code(vmulq_f32(vaddq_f32(xv[i], b), inv), qmax);
    }
}

/* The vocabulary of the shared kquant driver (kernels_kquant_simd.h): 4 lanes, unweighted
 * super-blocks only (weighted ones go to the reference). */
#define KQS_VL 4
#define KQS_WEIGHTED 0
#define KQS_EXPORT(suffix) aq__quantize_kquant_neon_##suffix
typedef float32x4_t kqs_v;
typedef kqn_panel kqs_panel;
#define kqs_add vaddq_f32
#define kqs_mul vmulq_f32
#define kqs_load vld1q_f32
#define kqs_store vst1q_f32
#define kqs_tr kqn_tr4
#define kqs_panel_codes kqn_panel_codes

static inline float32x4_t kqs_zero(void)
{
    return vdupq_n_f32(0.0f);
}

/* Only ever called unweighted (KQS_WEIGHTED 0): wv and wx are NULL. */
static inline __attribute__((always_inline)) void
kqs_panel_fit(const float32x4_t *xv, const float32x4_t *wv, const float32x4_t *wx, size_t n,
              unsigned bits, kqn_panel *p, double *s, double *m)
{
    (void)wv;
    (void)wx;
    kqn_panel_fit(xv, n, bits, p, s, m);
}

static inline __attribute__((always_inline)) void kqs_panel_refine(const float32x4_t *xv,
                                                                   const float32x4_t *wv, size_t n,
                                                                   unsigned bits, const float *d,
                                                                   const float *dmin, kqn_panel *p)
{
    (void)wv;
    kqn_panel_refine(xv, n, bits, d, dmin, p);
}

static inline void kqs_codes_load(kqs_panel *p, const unsigned *sc, const unsigned *mc)
{
    p->sc = vreinterpretq_s32_u32(vld1q_u32(sc));
    p->mc = vreinterpretq_s32_u32(vld1q_u32(mc));
}

static inline void kqs_codes_store(const kqs_panel *p, unsigned *sc, unsigned *mc)
{
    vst1q_u32(sc, vreinterpretq_u32_s32(p->sc));
    vst1q_u32(mc, vreinterpretq_u32_s32(p->mc));
}

static inline void kqs_pack(const float *q, size_t n, unsigned bits, uint8_t *out)
{
    aq__kq_pack_codes(q, n, bits, out);
}

#include "kernels_kquant_simd.h"
