/*
 * The bodies of the ggml block kernels (docs/gguf.md), included by one translation unit per
 * instruction set: kernels_ref_ggml.c (baseline) and kernels_ggml_avx2.c (compiled with AVX2).
 * The code is plain C whose sums run in fixed lanes (GG_LANES partial sums, added in lane
 * order) with no contraction, so every compilation gives the same bits; the wider instruction
 * set only lets the compiler use wider vectors. Everything here is static.
 *
 * With GG_SIMD defined, the including file supplies its own searches (gg_sym_blocks,
 * gg_sym_super, gg_aff_super), the packing of Q3_K and Q6_K (gg_pack_q3_k, _q6_k),
 * gg_encode_q3_k,
 * gg_encode_f16 and the decoders of the types it writes
 * (gg_decode_q8_0, _q4_0, _q5_0, _q2_k, _q3_k, _q4_k, _q5_k, _q6_k, _f16, _bf16) and ggml's
 * rounding encoders (gg_round_q8_0, _q4_0, _q5_0), with the
 * same contracts and bits; the reference ones are left out.
 */
#ifndef AQ_KERNELS_GGML_BODY_H
#define AQ_KERNELS_GGML_BODY_H

#include "kernels.h"
#include "kernels_ggml.h"

#include <float.h>
#include <math.h>

#define GG_QK 32u
#define GG_QKK 256u

static const int8_t gg_kvalues_iq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

static float gg_h2f(const uint8_t *p)
{
    return aq__f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static void gg_put_h(uint8_t *p, uint16_t h)
{
    p[0] = (uint8_t)(h & 0xffu);
    p[1] = (uint8_t)(h >> 8);
}

/* The float32 value that a binary16 store of v gives back. Clamped to the largest finite
 * binary16 so that a scale never becomes infinite. */
static float gg_f16_round(float v)
{
    if (v > 65504.0f) {
        v = 65504.0f;
    } else if (v < -65504.0f) {
        v = -65504.0f;
    }
    return aq__f16_to_f32(aq__f32_to_f16(v));
}

/* round(v) clamped to [lo, hi], as a float (ties to even; |v| < 2^22 after the clamp). */
static inline float gg_rclamp(float v, float lo, float hi)
{
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (v + 0x1.8p23f) - 0x1.8p23f;
}

/* Partial sums per loop (see gg_lanes_sum). */
#define GG_LANES 8u

/* The candidate grids of the symmetric searches (gg_sym_search): ncand codes per end of the
 * range, from back steps beyond the end inwards. Mapping the largest magnitude past the end
 * code (so that it clamps) matters with importance, where the few heavy columns decide. Q4_0
 * and Q5_0: 6 per end, from 1.25 beyond it in steps of 0.25; Q3_K with importance: 4 per
 * end, from 0.99 beyond it in steps of 0.33, and 2 + 1 super-block scales (gg_super_cands). Q2_K
 * searches wider with importance (gg_encode_q2_k). */
#define GG_Q4_NCAND 6u
#define GG_Q4_BACK 5u
#define GG_Q4_STEP 0.25f
#define GG_Q3_NCAND 4u
#define GG_Q3_BACK 3u
#define GG_Q3_STEP 0.33f
#define GG_Q3_ND 2u

/* The searches: gg_sym_blocks gives the codes and stored binary16 scales of m (<= 8)
 * consecutive symmetric 32-blocks (dh[k] and q[32 k + i] for block k); gg_sym_super and
 * gg_aff_super the parameters and codes of one super-block. */
static void gg_sym_blocks(const float *x, const float *w, size_t m, int qmin, int qmax,
                          unsigned ncand, unsigned back, float step, uint16_t *dh, int *q);
static void gg_sym_super(const float *x, const float *w, int qmin, int qmax, int pmin, int pmax,
                         unsigned ncand, unsigned back, float step, unsigned nd, uint16_t *d_out,
                         int *sc, int8_t *q);
static void gg_aff_super(const float *x, const float *w, unsigned nsub, unsigned sub, int qmax,
                         int pmax, unsigned ncand, bool cross, unsigned nd, uint16_t *d_out,
                         uint16_t *dmin_out, uint8_t *sc, uint8_t *mc, uint8_t *q);

/* The super-block scale candidates of a symmetric K type, as stored (binary16), from the
 * sub-block scales s[16] and smax, the first of them of largest magnitude: smax on scale code
 * pmin + k / 2 for k < nd (k = 0 is the plain choice), then the unweighted least-squares fit
 * of the scales to the codes that the first candidate gives. Returns the count (at most
 * GG_SUPER_MAXCAND). */
#define GG_SUPER_MAXCAND 9u
static unsigned gg_super_cands(const float *s, float smax, int pmin, int pmax, unsigned nd,
                               uint16_t *dc)
{
    unsigned n = 0;
    for (unsigned k = 0; k < nd && k + 1 < GG_SUPER_MAXCAND; k++) {
        dc[n++] = aq__f32_to_f16(gg_f16_round(smax / ((float)pmin + 0.5f * (float)k)));
    }
    const float d0 = aq__f16_to_f32(dc[0]);
    if (nd > 1 && d0 != 0.0f) {
        float sxc = 0.0f, scc = 0.0f;
        for (unsigned j = 0; j < 16; j++) {
            const float c = gg_rclamp(s[j] / d0, (float)pmin, (float)pmax);
            sxc += s[j] * c;
            scc += c * c;
        }
        if (scc > 0.0f) {
            dc[n++] = aq__f32_to_f16(gg_f16_round(sxc / scc));
        }
    }
    return n;
}

/* The super-block scale and min candidates of an affine K type, as stored (binary16), from
 * the sub-block scales s[] and mins m[]: the largest of each on code pmax + k / 2 for k < nd
 * (k = 0 is the plain choice). Returns the count. */
static unsigned gg_aff_cands(const float *s, const float *m, unsigned nsub, int pmax, unsigned nd,
                             uint16_t *dh, uint16_t *mh)
{
    float smax = 0.0f, mmax = 0.0f;
    for (unsigned j = 0; j < nsub; j++) {
        smax = s[j] > smax ? s[j] : smax;
        mmax = m[j] > mmax ? m[j] : mmax;
    }
    unsigned n = 0;
    for (unsigned k = 0; k < nd && k < GG_SUPER_MAXCAND; k++) {
        const float p = (float)pmax + 0.5f * (float)k;
        dh[n] = aq__f32_to_f16(gg_f16_round(smax / p));
        mh[n] = aq__f32_to_f16(gg_f16_round(mmax / p));
        n++;
    }
    return n;
}

#ifndef GG_SIMD

/* Nearest integer of v clamped to [lo, hi] (lo <= 0 <= hi <= 255), ties to even. */
static int gg_code(float v, int lo, int hi)
{
    if (!(v >= (float)lo)) {
        return lo;
    }
    if (v > (float)hi) {
        return hi;
    }
    float a = v < 0.0f ? -v : v;
    float r = (a + 0x1p23f) - 0x1p23f;
    return v < 0.0f ? -(int)r : (int)r;
}

/* The inner loops below run over a sub-block of 16 or 32 elements with GG_LANES partial sums
 * (element i into lane i % GG_LANES, added up in lane order at the end): a fixed order, so the
 * results are the same on every machine, and one the compiler can vectorise. Weights default to
 * the ones here. */
#    define GG_ONES8 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f
static const float gg_ones[32] = {GG_ONES8, GG_ONES8, GG_ONES8, GG_ONES8};

static float gg_lanes_sum(const float *acc)
{
    float t = 0.0f;
    for (unsigned l = 0; l < GG_LANES; l++) {
        t += acc[l];
    }
    return t;
}

/* ---------------------------------------------------------------------------------------- */
/* Searches                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Weighted squared error of codes round(x / d) clamped to [qmin, qmax], as d q in float32
 * (n a multiple of GG_LANES, at most 32). */
static float gg_sym_err(const float *x, const float *w, size_t n, float d, float qmin, float qmax)
{
    float acc[GG_LANES] = {0};
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (size_t b = 0; b < n; b += GG_LANES) {
        for (unsigned l = 0; l < GG_LANES; l++) {
            const size_t i = b + l;
            const float q = gg_rclamp(x[i] * id, qmin, qmax);
            const float r = x[i] - d * q;
            acc[l] += (w[i] * r) * r;
        }
    }
    return gg_lanes_sum(acc);
}

/* Least-squares refit of d for the codes that d0 gives: sum w x q / sum w q q. */
static float gg_sym_refit(const float *x, const float *w, size_t n, float d0, float qmin,
                          float qmax)
{
    const float id = 1.0f / d0;
    float axq[GG_LANES] = {0}, aqq[GG_LANES] = {0};
    for (size_t b = 0; b < n; b += GG_LANES) {
        for (unsigned l = 0; l < GG_LANES; l++) {
            const size_t i = b + l;
            const float q = gg_rclamp(x[i] * id, qmin, qmax);
            axq[l] += (w[i] * x[i]) * q;
            aqq[l] += (w[i] * q) * q;
        }
    }
    const float sqq = gg_lanes_sum(aqq);
    return sqq > 0.0f ? gg_lanes_sum(axq) / sqq : d0;
}

/* The scale d of a symmetric block (x ~ d q, q in [qmin, qmax]) with the least weighted error
 * among candidates that map the block's largest magnitude to a code near either end of the
 * range, each also refitted by least squares. With f16 every candidate is judged as stored
 * (rounded to binary16). 0 for an all-zero block. ncand candidates per end: the largest
 * magnitude on code end -/+ (c - back) step for c < ncand (with back 0 the first is ggml's
 * own choice, the largest magnitude on the far end of the range). */
static float gg_sym_search(const float *x, const float *w, size_t n, int qmin_i, int qmax_i,
                           unsigned ncand, unsigned back, float step, bool f16)
{
    const float qmin = (float)qmin_i, qmax = (float)qmax_i;
    /* The element of largest magnitude (the first such one). */
    float am8[GG_LANES] = {0};
    for (size_t b = 0; b < n; b += GG_LANES) {
        for (unsigned l = 0; l < GG_LANES; l++) {
            const float a = fabsf(x[b + l]);
            am8[l] = a > am8[l] ? a : am8[l];
        }
    }
    float amax = 0.0f, vmax = 0.0f;
    for (unsigned l = 0; l < GG_LANES; l++) {
        amax = am8[l] > amax ? am8[l] : amax;
    }
    for (size_t i = 0; i < n; i++) {
        if (fabsf(x[i]) == amax) {
            vmax = x[i];
            break;
        }
    }
    if (amax == 0.0f) {
        return 0.0f;
    }
    float best_d = 0.0f;
    float best_e = gg_sym_err(x, w, n, 0.0f, qmin, qmax);
    for (unsigned side = 0; side < 2; side++) {
        for (unsigned c = 0; c < ncand; c++) {
            const float o = ((float)c - (float)back) * step;
            const float L = side == 0 ? (float)qmin + o : (float)qmax - o;
            if (L == 0.0f) {
                continue;
            }
            float cand[2];
            cand[0] = vmax / L;
            if (f16) {
                cand[0] = gg_f16_round(cand[0]);
            }
            if (cand[0] == 0.0f || !isfinite(cand[0])) {
                continue;
            }
            cand[1] = gg_sym_refit(x, w, n, cand[0], qmin, qmax);
            if (f16) {
                cand[1] = gg_f16_round(cand[1]);
            }
            /* A sub-block scale (not stored as such) is judged by its refit alone. */
            for (unsigned k = f16 ? 0 : 1; k < 2; k++) {
                if (cand[k] == 0.0f || !isfinite(cand[k])) {
                    continue;
                }
                const float e = gg_sym_err(x, w, n, cand[k], qmin, qmax);
                if (e < best_e) {
                    best_e = e;
                    best_d = cand[k];
                }
            }
        }
    }
    return best_d;
}

/* The one-start fit of a symmetric sub-block (the fast level of gg_sym_super): the element of
 * largest magnitude (the largest element where it is at least as far from 0 as the smallest)
 * on code qmin, refitted once by least squares (gg_sym_refit), not judged. 0 for an all-zero
 * block or a start of 0 or not finite; the start itself where the refit is not finite. */
static float gg_sym_fit1(const float *x, const float *w, size_t n, int qmin, int qmax)
{
    float hi = x[0], lo = x[0];
    for (size_t i = 1; i < n; i++) {
        hi = x[i] > hi ? x[i] : hi;
        lo = x[i] < lo ? x[i] : lo;
    }
    const float d0 = (hi >= -lo ? hi : lo) / (float)qmin;
    if (d0 == 0.0f || !isfinite(d0)) {
        return 0.0f;
    }
    const float d = gg_sym_refit(x, w, n, d0, (float)qmin, (float)qmax);
    return isfinite(d) ? d : d0;
}

/* The scale s > 0 and min m >= 0 of an affine sub-block (x ~ s q - m, q in [0, qmax]) with
 * the least weighted error: codes from a grid over [min(lo, 0), hi] at several numbers of
 * levels, each fitted by weighted least squares (offset clamped to <= 0, as the format stores
 * only mins >= 0). An all-equal sub-block gets s = 0 and m = -x. */
static void gg_aff_search(const float *x, const float *w, size_t n, int qmax, unsigned ncand,
                          float *s_out, float *m_out)
{
    float lo8[GG_LANES], hi8[GG_LANES], aw[GG_LANES] = {0}, ax[GG_LANES] = {0};
    float axx[GG_LANES] = {0};
    for (unsigned l = 0; l < GG_LANES; l++) {
        lo8[l] = hi8[l] = x[l];
    }
    for (size_t b = 0; b < n; b += GG_LANES) {
        for (unsigned l = 0; l < GG_LANES; l++) {
            const size_t i = b + l;
            lo8[l] = x[i] < lo8[l] ? x[i] : lo8[l];
            hi8[l] = x[i] > hi8[l] ? x[i] : hi8[l];
            aw[l] += w[i];
            ax[l] += w[i] * x[i];
            axx[l] += (w[i] * x[i]) * x[i];
        }
    }
    float lo = lo8[0], hi = hi8[0];
    for (unsigned l = 1; l < GG_LANES; l++) {
        lo = lo8[l] < lo ? lo8[l] : lo;
        hi = hi8[l] > hi ? hi8[l] : hi;
    }
    const double sw = (double)gg_lanes_sum(aw), sx = (double)gg_lanes_sum(ax);
    const double sxx = (double)gg_lanes_sum(axx);
    if (lo > 0.0f) {
        lo = 0.0f;
    }
    if (hi <= lo) {
        *s_out = 0.0f;
        *m_out = -lo;
        return;
    }
    const float range = hi - lo;
    /* The plain min/max grid, then the least-squares fits. */
    double best_s = (double)range / (double)qmax, best_m = (double)lo;
    double best_e = (double)INFINITY;
    for (unsigned c = 0; c < ncand; c++) {
        const float levels = (float)qmax + ((float)c - (float)(ncand / 2)) * 0.5f;
        if (levels <= 0.5f) {
            continue;
        }
        const float inv = levels / range;
        float aq_[GG_LANES] = {0}, aqq[GG_LANES] = {0}, axq[GG_LANES] = {0};
        for (size_t b = 0; b < n; b += GG_LANES) {
            for (unsigned l = 0; l < GG_LANES; l++) {
                const size_t i = b + l;
                const float q = gg_rclamp((x[i] - lo) * inv, 0.0f, (float)qmax);
                aq_[l] += w[i] * q;
                aqq[l] += (w[i] * q) * q;
                axq[l] += (w[i] * x[i]) * q;
            }
        }
        double s, m, e;
        if (!aq__fit_candidate(sw, sx, sxx, (double)gg_lanes_sum(aq_), (double)gg_lanes_sum(aqq),
                               (double)gg_lanes_sum(axq), true, &s, &m, &e)) {
            continue;
        }
        if (e < best_e) {
            best_e = e;
            best_s = s;
            best_m = m;
        }
    }
    *s_out = (float)best_s;
    *m_out = (float)-best_m;
}

/* Weighted error of an affine sub-block with the decoder's arithmetic: fd = d sc and
 * fm = dmin mc as float32, codes round((x + fm) / fd), x_hat = fd q - fm. */
static float gg_aff_err(const float *x, const float *w, size_t n, float fd, float fm, float qmax)
{
    float acc[GG_LANES] = {0};
    const float id = fd > 0.0f ? 1.0f / fd : 0.0f;
    for (size_t b = 0; b < n; b += GG_LANES) {
        for (unsigned l = 0; l < GG_LANES; l++) {
            const size_t i = b + l;
            const float q = gg_rclamp((x[i] + fm) * id, 0.0f, qmax);
            const float r = x[i] - (fd * q - fm);
            acc[l] += (w[i] * r) * r;
        }
    }
    return gg_lanes_sum(acc);
}

static void gg_aff_codes(const float *x, size_t n, float fd, float fm, int qmax, uint8_t *q)
{
    const float id = fd > 0.0f ? 1.0f / fd : 0.0f;
    for (size_t i = 0; i < n; i++) {
        q[i] = (uint8_t)gg_rclamp((x[i] + fm) * id, 0.0f, (float)qmax);
    }
}

/* The scale and min codes of an affine sub-block under the super-block's d and dmin: the
 * rounded pair and its neighbours (the cross of 5 when cross), judged as decoded. Returns the
 * least error; writes the pair. */
static float gg_aff_pick(const float *xj, const float *wj, unsigned sub, int qmax, int pmax,
                         bool cross, float s, float m, float d, float dmin, uint8_t *sc,
                         uint8_t *mc)
{
    const int sc0 = d > 0.0f ? gg_code(s / d, 0, pmax) : 0;
    const int mc0 = dmin > 0.0f ? gg_code(m / dmin, 0, pmax) : 0;
    int bs = sc0, bm = mc0;
    float be = INFINITY;
    for (int a = sc0 - 1; a <= sc0 + 1; a++) {
        for (int b = mc0 - 1; b <= mc0 + 1; b++) {
            if (a < 0 || a > pmax || b < 0 || b > pmax || (cross && a != sc0 && b != mc0)) {
                continue;
            }
            const float e = gg_aff_err(xj, wj, sub, d * (float)a, dmin * (float)b, (float)qmax);
            if (e < be) {
                be = e;
                bs = a;
                bm = b;
            }
        }
    }
    *sc = (uint8_t)bs;
    *mc = (uint8_t)bm;
    return be;
}

/* Sub-block parameters of an affine super-block (Q2_K, Q4_K, Q5_K): nsub sub-blocks of sub
 * elements, codes 0..qmax, parameter codes 0..pmax. Writes d, dmin (as stored), sc[], mc[]
 * and the codes q[]. The super-block d and dmin put the largest scale and min on code
 * pmax + k / 2 (clamped to pmax) for k < nd; the pair with the least total error wins. */
static void gg_aff_super(const float *x, const float *w, unsigned nsub, unsigned sub, int qmax,
                         int pmax, unsigned ncand, bool cross, unsigned nd, uint16_t *d_out,
                         uint16_t *dmin_out, uint8_t *sc, uint8_t *mc, uint8_t *q)
{
    float s[16], m[16];
    for (unsigned j = 0; j < nsub; j++) {
        gg_aff_search(x + j * sub, w != NULL ? w + j * sub : gg_ones, sub, qmax, ncand, &s[j],
                      &m[j]);
    }
    uint16_t dh[GG_SUPER_MAXCAND], mh[GG_SUPER_MAXCAND];
    const unsigned n = gg_aff_cands(s, m, nsub, pmax, nd, dh, mh);
    unsigned best_k = 0;
    float best_t = INFINITY;
    for (unsigned k = 0; n > 1 && k < n; k++) {
        const float d = aq__f16_to_f32(dh[k]), dmin = aq__f16_to_f32(mh[k]);
        float t = 0.0f;
        for (unsigned j = 0; j < nsub; j++) {
            t += gg_aff_pick(x + j * sub, w != NULL ? w + j * sub : gg_ones, sub, qmax, pmax, cross,
                             s[j], m[j], d, dmin, &sc[j], &mc[j]);
        }
        if (k == 0 || t < best_t) {
            best_t = t;
            best_k = k;
        }
    }
    const float d = aq__f16_to_f32(dh[best_k]), dmin = aq__f16_to_f32(mh[best_k]);
    for (unsigned j = 0; j < nsub; j++) {
        const float *xj = x + j * sub;
        (void)gg_aff_pick(xj, w != NULL ? w + j * sub : gg_ones, sub, qmax, pmax, cross, s[j], m[j],
                          d, dmin, &sc[j], &mc[j]);
        gg_aff_codes(xj, sub, d * (float)sc[j], dmin * (float)mc[j], qmax, q + j * sub);
    }
    *d_out = dh[best_k];
    *dmin_out = mh[best_k];
}

/* A sub-block's scale code under super-block scale d: the best of the three codes nearest
 * sj / d within [pmin, pmax], or with two the codes either side of it (floor, clamped to
 * [pmin, pmax - 1], and the next), the first with the least weighted error, into *sc; returns
 * that error. */
static inline float gg_sym_sub_pick(const float *xj, const float *wj, float sj, float d, int qmin,
                                    int qmax, int pmin, int pmax, bool two, int *sc)
{
    int c0, lo, hi;
    if (two) {
        float f = d != 0.0f ? floorf(sj / d) : 0.0f;
        f = f < (float)pmin ? (float)pmin : f;
        f = f > (float)(pmax - 1) ? (float)(pmax - 1) : f;
        c0 = lo = (int)f;
        hi = lo + 1;
    } else {
        c0 = d != 0.0f ? gg_code(sj / d, pmin, pmax) : 0;
        lo = c0 - 1;
        hi = c0 + 1;
    }
    int best = c0;
    float be = INFINITY;
    for (int a = lo; a <= hi; a++) {
        if (a < pmin || a > pmax) {
            continue;
        }
        const float e = gg_sym_err(xj, wj, 16, d * (float)a, (float)qmin, (float)qmax);
        if (e < be) {
            be = e;
            best = a;
        }
    }
    *sc = best;
    return be;
}

/* Sub-block parameters of a symmetric super-block (Q3_K, Q6_K): 16 sub-blocks of 16, codes
 * [qmin, qmax], signed scale codes [pmin, pmax]. Writes d (as stored), sc[] and codes q[].
 * Each sub-block's scale s comes from gg_sym_search with ncand candidates per end; ncand 0 is
 * the fast level: s from gg_sym_fit1 (one start, one refit), and two scale codes tried per
 * sub-block instead of three (gg_sym_sub_pick). The super-block scale d is searched: nd candidates
 * (gg_super_cands), each judged by the super-block's total weighted error after every sub-block has
 * picked its best scale code; the first with the least total wins. */
static void gg_sym_super(const float *x, const float *w, int qmin, int qmax, int pmin, int pmax,
                         unsigned ncand, unsigned back, float step, unsigned nd, uint16_t *d_out,
                         int *sc, int8_t *q)
{
    float s[16];
    for (unsigned j = 0; j < 16; j++) {
        const float *wj = w != NULL ? w + j * 16 : gg_ones;
        s[j] = ncand == 0 ? gg_sym_fit1(x + j * 16, wj, 16, qmin, qmax)
                          : gg_sym_search(x + j * 16, wj, 16, qmin, qmax, ncand, back, step, false);
    }
    float smax = 0.0f, amax = 0.0f;
    for (unsigned j = 0; j < 16; j++) {
        if (fabsf(s[j]) > amax) {
            amax = fabsf(s[j]);
            smax = s[j];
        }
    }
    uint16_t dc[GG_SUPER_MAXCAND];
    const unsigned n = gg_super_cands(s, smax, pmin, pmax, nd, dc);
    unsigned best_k = 0;
    float best_t = INFINITY;
    for (unsigned k = 0; n > 1 && k < n; k++) {
        const float d = aq__f16_to_f32(dc[k]);
        float t = 0.0f;
        for (unsigned j = 0; j < 16; j++) {
            t += gg_sym_sub_pick(x + j * 16, w != NULL ? w + j * 16 : gg_ones, s[j], d, qmin, qmax,
                                 pmin, pmax, ncand == 0, &sc[j]);
        }
        if (k == 0 || t < best_t) {
            best_t = t;
            best_k = k;
        }
    }
    const float d = aq__f16_to_f32(dc[best_k]);
    for (unsigned j = 0; j < 16; j++) {
        const float *xj = x + j * 16;
        (void)gg_sym_sub_pick(xj, w != NULL ? w + j * 16 : gg_ones, s[j], d, qmin, qmax, pmin, pmax,
                              ncand == 0, &sc[j]);
        const float fd = d * (float)sc[j];
        const float id = fd != 0.0f ? 1.0f / fd : 0.0f;
        for (unsigned i = 0; i < 16; i++) {
            q[j * 16 + i] = (int8_t)gg_rclamp(xj[i] * id, (float)qmin, (float)qmax);
        }
    }
    *d_out = dc[best_k];
}

/* ---------------------------------------------------------------------------------------- */
/* 32-element block types                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Each block's scale by gg_sym_search, judged as stored (binary16). */
static void gg_sym_blocks(const float *x, const float *w, size_t m, int qmin, int qmax,
                          unsigned ncand, unsigned back, float step, uint16_t *dh, int *q)
{
    for (size_t k = 0; k < m; k++) {
        const float *xk = x + k * GG_QK;
        const float d = gg_sym_search(xk, w != NULL ? w + k * GG_QK : gg_ones, GG_QK, qmin, qmax,
                                      ncand, back, step, true);
        dh[k] = aq__f32_to_f16(d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (unsigned i = 0; i < GG_QK; i++) {
            q[k * GG_QK + i] = (int)gg_rclamp(xk[i] * id, (float)qmin, (float)qmax);
        }
    }
}

#endif /* GG_SIMD */

static uint32_t gg_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The codes of a symmetric 32-block after its binary16 d, in the layout of its type: int8
 * (Q8_0, codes -128..127), nibbles with bias 8 (Q4_0, -8..7), or the fifth bits then the
 * nibbles with bias 16 (Q5_0, -16..15): element i in the low nibble of byte i, i + 16 in the
 * high one. */
static void gg_pack_sym32(const int *q, int qmax, uint8_t *o)
{
    if (qmax == 127) {
        for (unsigned i = 0; i < GG_QK; i++) {
            o[i] = (uint8_t)(int8_t)q[i];
        }
        return;
    }
    const int bias = qmax + 1;
    if (qmax == 15) {
        uint32_t qh = 0;
        for (unsigned i = 0; i < GG_QK; i++) {
            qh |= (uint32_t)(((q[i] + 16) >> 4) & 1) << i;
        }
        for (unsigned j = 0; j < 4; j++) {
            o[j] = (uint8_t)(qh >> (8 * j));
        }
        o += 4;
    }
    for (unsigned i = 0; i < 16; i++) {
        o[i] = (uint8_t)(((q[i] + bias) & 15) | (((q[i + 16] + bias) & 15) << 4));
    }
}

/* The symmetric 32-block types, eight blocks per search call. */
static void gg_encode_sym32(const float *x, const float *w, size_t nb, uint8_t *out, int qmax,
                            unsigned ncand, unsigned back, float step, size_t bytes)
{
    uint16_t dh[8];
    int q[8 * GG_QK];
    for (size_t b = 0; b < nb; b += 8) {
        const size_t m = nb - b < 8 ? nb - b : 8;
        gg_sym_blocks(x + b * GG_QK, w != NULL ? w + b * GG_QK : NULL, m, -qmax - 1, qmax, ncand,
                      back, step, dh, q);
        for (size_t k = 0; k < m; k++) {
            uint8_t *o = out + (b + k) * bytes;
            gg_put_h(o, dh[k]);
            gg_pack_sym32(q + k * GG_QK, qmax, o + 2);
        }
    }
}

static void gg_encode_q8_0(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_sym32(x, w, nb, out, 127, 1, 0, 0.5f, 34);
}

static void gg_encode_q4_0(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_sym32(x, w, nb, out, 7, GG_Q4_NCAND, GG_Q4_BACK, GG_Q4_STEP, 18);
}

static void gg_encode_q5_0(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_sym32(x, w, nb, out, 15, GG_Q4_NCAND, GG_Q4_BACK, GG_Q4_STEP, 22);
}

/* ggml's own rounding for the 32-element types, with no search (the gguf_search setting's
 * "none", docs/gguf.md): the arithmetic of ggml's reference quantizers (quantize_row_q8_0_ref,
 * _q4_0_ref, _q5_0_ref) operation for operation, so the bytes are theirs. Q8_0: d = amax / 127,
 * codes roundf(x / d) (half away from zero) as x times the float32 reciprocal. Q4_0 and Q5_0:
 * d = m / -8 (-16), m the first element of largest magnitude, codes min(15 (31),
 * trunc(x id + 8.5 (16.5))). Importance is not used. Where the reciprocal overflows (a block
 * of values below about 2^-126, whose d is 0 as binary16), the products are not finite and
 * every code is 0, as ggml's x86 build writes (its conversion is undefined in C; the block
 * decodes to zeros either way). The one departure: a scale beyond binary16's range is stored
 * as the largest finite one where ggml's would be infinite. */
#ifndef GG_SIMD
static uint16_t gg_round_scale(float d)
{
    return aq__f32_to_f16(d > 65504.0f ? 65504.0f : d < -65504.0f ? -65504.0f : d);
}

/* The index of the first element of x[0..n) that is not finite, or n. */
static size_t gg_round_first_bad(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            return i;
        }
    }
    return n;
}

/* A block that is not finite gives bytes of no meaning, but the arithmetic below stays
 * defined on it (every conversion is guarded). */
static size_t gg_round_q8_0(const float *x, size_t nb, uint8_t *out)
{
    const float *const x0 = x;
    for (size_t b = 0; b < nb; b++, x += GG_QK, out += 34) {
        float amax = 0.0f;
        for (unsigned i = 0; i < GG_QK; i++) {
            const float a = fabsf(x[i]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        gg_put_h(out, gg_round_scale(d));
        for (unsigned i = 0; i < GG_QK; i++) {
            const float p = x[i] * id;
            out[2 + i] = (uint8_t)(int8_t)(fabsf(p) <= 128.0f ? (int)roundf(p) : 0);
        }
    }
    return gg_round_first_bad(x0, nb * GG_QK);
}

/* Q4_0 (half 8) and Q5_0 (half 16). */
static size_t gg_round_sym(const float *x, size_t nb, uint8_t *out, int half)
{
    const size_t bytes = half == 8 ? 18 : 22;
    const int top = 2 * half - 1;
    const float *const x0 = x;
    for (size_t b = 0; b < nb; b++, x += GG_QK, out += bytes) {
        float amax = 0.0f, m = 0.0f;
        for (unsigned i = 0; i < GG_QK; i++) {
            if (amax < fabsf(x[i])) {
                amax = fabsf(x[i]);
                m = x[i];
            }
        }
        const float d = m / (float)-half, id = d != 0.0f ? 1.0f / d : 0.0f;
        const float off = (float)half + 0.5f;
        gg_put_h(out, gg_round_scale(d));
        uint8_t *qs = out + (half == 8 ? 2 : 6);
        uint32_t qh = 0;
        for (unsigned i = 0; i < 16; i++) {
            const float v0 = x[i] * id + off, v1 = x[16 + i] * id + off;
            const int c0 = v0 >= 0.0f && v0 < 64.0f ? (int)v0 : 0;
            const int c1 = v1 >= 0.0f && v1 < 64.0f ? (int)v1 : 0;
            const int q0 = c0 < top ? c0 : top, q1 = c1 < top ? c1 : top;
            qs[i] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << i | (uint32_t)((q1 >> 4) & 1) << (16 + i);
        }
        if (half == 16) {
            for (unsigned j = 0; j < 4; j++) {
                out[2 + j] = (uint8_t)(qh >> (8 * j));
            }
        }
    }
    return gg_round_first_bad(x0, nb * GG_QK);
}

static size_t gg_round_q4_0(const float *x, size_t nb, uint8_t *out)
{
    return gg_round_sym(x, nb, out, 8);
}

static size_t gg_round_q5_0(const float *x, size_t nb, uint8_t *out)
{
    return gg_round_sym(x, nb, out, 16);
}
#endif

#ifndef GG_SIMD
static void gg_decode_q8_0(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 34, y += GG_QK) {
        const float d = gg_h2f(in);
        for (unsigned i = 0; i < GG_QK; i++) {
            y[i] = (float)(int8_t)in[2 + i] * d;
        }
    }
}
#endif

#ifndef GG_SIMD
static void gg_decode_q4_0(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 18, y += GG_QK) {
        const float d = gg_h2f(in);
        for (unsigned i = 0; i < 16; i++) {
            y[i] = d * (float)((int)(in[2 + i] & 15) - 8);
            y[i + 16] = d * (float)((int)(in[2 + i] >> 4) - 8);
        }
    }
}
#endif

static void gg_decode_q4_1(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 20, y += GG_QK) {
        const float d = gg_h2f(in), m = gg_h2f(in + 2);
        for (unsigned i = 0; i < 16; i++) {
            y[i] = d * (float)(in[4 + i] & 15) + m;
            y[i + 16] = d * (float)(in[4 + i] >> 4) + m;
        }
    }
}

#ifndef GG_SIMD
static void gg_decode_q5_0(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 22, y += GG_QK) {
        const float d = gg_h2f(in);
        const uint32_t qh = gg_get_u32(in + 2);
        for (unsigned i = 0; i < 16; i++) {
            const int lo = (int)(in[6 + i] & 15) | (int)(((qh >> i) & 1u) << 4);
            const int hi = (int)(in[6 + i] >> 4) | (int)(((qh >> (i + 16)) & 1u) << 4);
            y[i] = d * (float)(lo - 16);
            y[i + 16] = d * (float)(hi - 16);
        }
    }
}
#endif

static void gg_decode_q5_1(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 24, y += GG_QK) {
        const float d = gg_h2f(in), m = gg_h2f(in + 2);
        const uint32_t qh = gg_get_u32(in + 4);
        for (unsigned i = 0; i < 16; i++) {
            const unsigned lo = (in[8 + i] & 15u) | (((qh >> i) & 1u) << 4);
            const unsigned hi = (in[8 + i] >> 4) | (((qh >> (i + 16)) & 1u) << 4);
            y[i] = d * (float)lo + m;
            y[i + 16] = d * (float)hi + m;
        }
    }
}

static void gg_decode_iq4_nl(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 18, y += GG_QK) {
        const float d = gg_h2f(in);
        for (unsigned i = 0; i < 16; i++) {
            y[i] = d * (float)gg_kvalues_iq4[in[2 + i] & 15];
            y[i + 16] = d * (float)gg_kvalues_iq4[in[2 + i] >> 4];
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* K types (256-element super-blocks)                                                        */
/* ---------------------------------------------------------------------------------------- */

static void gg_encode_q2_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    for (size_t b = 0; b < nb; b++, x += GG_QKK, w = w != NULL ? w + GG_QKK : NULL, out += 84) {
        uint8_t sc[16], mc[16], q[GG_QKK];
        uint16_t dh, mh;
        /* With importance, 5 numbers of levels and 3 super-block pairs (about half the
         * speed); without, 3 and 1. */
        gg_aff_super(x, w, 16, 16, 3, 15, w != NULL ? 5 : 3, true, w != NULL ? 3 : 1, &dh, &mh, sc,
                     mc, q);
        for (unsigned j = 0; j < 16; j++) {
            out[j] = (uint8_t)(sc[j] | (mc[j] << 4));
        }
        uint8_t *qs = out + 16;
        memset(qs, 0, 64);
        for (unsigned t = 0; t < 8; t++) { /* element 32 t + l */
            for (unsigned l = 0; l < 32; l++) {
                qs[(t / 4) * 32 + l] |= (uint8_t)(q[32 * t + l] << (2 * (t % 4)));
            }
        }
        gg_put_h(out + 80, dh);
        gg_put_h(out + 82, mh);
    }
}

#ifndef GG_SIMD
static void gg_decode_q2_k(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 84, y += GG_QKK) {
        const float d = gg_h2f(in + 80), dmin = gg_h2f(in + 82);
        const uint8_t *qs = in + 16;
        for (unsigned e = 0; e < GG_QKK; e++) {
            const unsigned c = e / 128, s = (e % 128) / 32, l = e % 32, j = e / 16;
            const float dl = d * (float)(in[j] & 15);
            const float ml = dmin * (float)(in[j] >> 4);
            y[e] = dl * (float)((qs[c * 32 + l] >> (2 * s)) & 3) - ml;
        }
    }
}
#endif

/* The 6-bit scales of Q3_K (stored with +32) in their 12 bytes: the low four bits of scale j
 * in byte j % 8 (j < 8 low nibble), the high two in byte 8 + j % 4 at bit 2 (j / 4). */
static void gg_put_scales_q3(const int *sc, uint8_t *p)
{
    unsigned v[16];
    for (unsigned j = 0; j < 16; j++) {
        v[j] = (unsigned)(sc[j] + 32);
    }
    for (unsigned j = 0; j < 8; j++) {
        p[j] = (uint8_t)((v[j] & 15u) | ((v[j + 8] & 15u) << 4));
    }
    for (unsigned j = 0; j < 4; j++) {
        p[8 + j] = (uint8_t)(((v[j] >> 4) & 3u) | (((v[j + 4] >> 4) & 3u) << 2) |
                             (((v[j + 8] >> 4) & 3u) << 4) | (((v[j + 12] >> 4) & 3u) << 6));
    }
}

static int gg_get_scale_q3(const uint8_t *p, unsigned j)
{
    const unsigned lo = ((unsigned)p[j % 8] >> (4 * (j / 8))) & 15u;
    const unsigned hi = ((unsigned)p[8 + j % 4] >> (2 * (j / 4))) & 3u;
    return (int)(lo | (hi << 4)) - 32;
}

#ifdef GG_SIMD
static void gg_pack_q3_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out);
static void gg_pack_q6_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out);
#else
/* Q3_K's bytes of one super-block: codes q in -4..3, scales sc in -32..31, d. */
static void gg_pack_q3_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out)
{
    uint8_t *hmask = out, *qs = out + 32;
    memset(out, 0, 96);
    for (unsigned t = 0; t < 8; t++) { /* element 32 t + l */
        for (unsigned l = 0; l < 32; l++) {
            const unsigned u = (unsigned)(q[32 * t + l] + 4);
            qs[(t / 4) * 32 + l] |= (uint8_t)((u & 3u) << (2 * (t % 4)));
            hmask[l] |= (uint8_t)((u >> 2) << t);
        }
    }
    gg_put_scales_q3(sc, out + 96);
    gg_put_h(out + 108, dh);
}

/* Q6_K's bytes of one super-block: codes q in -32..31, scales sc in -128..127, d. */
static void gg_pack_q6_k(const int8_t *q, const int *sc, uint16_t dh, uint8_t *out)
{
    uint8_t *ql = out, *qh = out + 128;
    memset(out, 0, 192);
    for (unsigned c = 0; c < 2; c++) {
        for (unsigned t = 0; t < 4; t++) { /* element 128 c + 32 t + l */
            for (unsigned l = 0; l < 32; l++) {
                const unsigned u = (unsigned)(q[128 * c + 32 * t + l] + 32);
                ql[c * 64 + 32 * (t % 2) + l] |= (uint8_t)((u & 15u) << (4 * (t / 2)));
                qh[c * 32 + l] |= (uint8_t)((u >> 4) << (2 * t));
            }
        }
    }
    for (unsigned j = 0; j < 16; j++) {
        out[192 + j] = (uint8_t)(int8_t)sc[j];
    }
    gg_put_h(out + 208, dh);
}
#endif

/* The symmetric K types, Q3_K (six false) and Q6_K (six true). Without importance both
 * search less than with it, and still stay below ggml's error on the bench's distributions
 * (docs/gguf.md): Q6_K one candidate per end instead of two, Q3_K the fast level of
 * gg_sym_super (one start per sub-block, refitted once, two scale codes tried) and one
 * super-block scale. */
static void gg_encode_sym_k(const float *x, const float *w, size_t nb, uint8_t *out, bool six)
{
    const size_t bytes = six ? 210 : 110;
    for (size_t b = 0; b < nb; b++, x += GG_QKK, w = w != NULL ? w + GG_QKK : NULL, out += bytes) {
        int sc[16];
        int8_t q[GG_QKK];
        uint16_t dh;
        if (six) {
            gg_sym_super(x, w, -32, 31, -128, 127, w != NULL ? 2 : 1, 0, 0.5f, 1, &dh, sc, q);
            gg_pack_q6_k(q, sc, dh, out);
        } else if (w == NULL) {
            gg_sym_super(x, NULL, -4, 3, -32, 31, 0, 0, 0.0f, 1, &dh, sc, q);
            gg_pack_q3_k(q, sc, dh, out);
        } else {
            gg_sym_super(x, w, -4, 3, -32, 31, GG_Q3_NCAND, GG_Q3_BACK, GG_Q3_STEP, GG_Q3_ND, &dh,
                         sc, q);
            gg_pack_q3_k(q, sc, dh, out);
        }
    }
}

#ifndef GG_SIMD
static void gg_encode_q3_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_sym_k(x, w, nb, out, false);
}
#endif

static void gg_encode_q6_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_sym_k(x, w, nb, out, true);
}

#ifndef GG_SIMD
static void gg_decode_q3_k(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 110, y += GG_QKK) {
        const float d = gg_h2f(in + 108);
        const uint8_t *hmask = in, *qs = in + 32;
        float dl[16];
        for (unsigned j = 0; j < 16; j++) {
            dl[j] = d * (float)gg_get_scale_q3(in + 96, j);
        }
        for (unsigned e = 0; e < GG_QKK; e++) {
            const unsigned c = e / 128, s = (e % 128) / 32, l = e % 32;
            const int low = (qs[c * 32 + l] >> (2 * s)) & 3;
            const int high = (hmask[e % 32] >> (e / 32)) & 1;
            y[e] = dl[e / 16] * (float)(low - (high ? 0 : 4));
        }
    }
}
#endif

/* The 6-bit scales and mins of Q4_K and Q5_K in their 12 bytes. */
static void gg_put_scales_k4(const uint8_t *sc, const uint8_t *mc, uint8_t *p)
{
    for (unsigned j = 0; j < 4; j++) {
        p[j] = (uint8_t)((sc[j] & 63u) | ((unsigned)(sc[j + 4] >> 4) << 6));
        p[j + 4] = (uint8_t)((mc[j] & 63u) | ((unsigned)(mc[j + 4] >> 4) << 6));
        p[j + 8] = (uint8_t)((sc[j + 4] & 15u) | ((mc[j + 4] & 15u) << 4));
    }
}

/* The per-sub-block factors of a Q4_K or Q5_K super-block, as the decoder computes them:
 * d1[j] = d sc_j and m1[j] = dmin mc_j (float32). */
static void gg_get_factors_k4(const uint8_t *in, float *d1, float *m1)
{
    const float d = gg_h2f(in), dmin = gg_h2f(in + 2);
    const uint8_t *p = in + 4;
    for (unsigned j = 0; j < 8; j++) {
        unsigned sc, mc;
        if (j < 4) {
            sc = p[j] & 63u;
            mc = p[j + 4] & 63u;
        } else {
            sc = (p[j + 4] & 15u) | ((unsigned)(p[j - 4] >> 6) << 4);
            mc = (unsigned)(p[j + 4] >> 4) | ((unsigned)(p[j] >> 6) << 4);
        }
        d1[j] = d * (float)sc;
        m1[j] = dmin * (float)mc;
    }
}

/* The affine K types with 32-element sub-blocks, Q4_K (five false) and Q5_K (five true):
 * d, dmin, scales, then (Q5_K) the fifth bits qh[32], then the nibbles. */
static void gg_encode_k45(const float *x, const float *w, size_t nb, uint8_t *out, bool five)
{
    const size_t bytes = five ? 176 : 144;
    for (size_t b = 0; b < nb; b++, x += GG_QKK, w = w != NULL ? w + GG_QKK : NULL, out += bytes) {
        uint8_t sc[8], mc[8], q[GG_QKK];
        uint16_t dh, mh;
        if (five) {
            gg_aff_super(x, w, 8, 32, 31, 63, 3, false, 1, &dh, &mh, sc, mc, q);
        } else {
            gg_aff_super(x, w, 8, 32, 15, 63, 5, false, 1, &dh, &mh, sc, mc, q);
        }
        gg_put_h(out, dh);
        gg_put_h(out + 2, mh);
        gg_put_scales_k4(sc, mc, out + 4);
        uint8_t *qs = out + (five ? 48 : 16);
        if (five) {
            uint8_t *qh = out + 16;
            memset(qh, 0, 32);
            for (unsigned t = 0; t < 8; t++) {
                for (unsigned l = 0; l < 32; l++) {
                    qh[l] |= (uint8_t)((q[32 * t + l] >> 4) << t);
                }
            }
        }
        for (unsigned c = 0; c < 4; c++) {
            for (unsigned l = 0; l < 32; l++) {
                qs[c * 32 + l] =
                    (uint8_t)((q[64 * c + l] & 15u) | ((q[64 * c + 32 + l] & 15u) << 4));
            }
        }
    }
}

static void gg_encode_q4_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_k45(x, w, nb, out, false);
}

static void gg_encode_q5_k(const float *x, const float *w, size_t nb, uint8_t *out)
{
    gg_encode_k45(x, w, nb, out, true);
}

#ifndef GG_SIMD
static void gg_decode_k45(const uint8_t *in, size_t nb, float *y, bool five)
{
    const size_t bytes = five ? 176 : 144;
    for (size_t b = 0; b < nb; b++, in += bytes, y += GG_QKK) {
        float d1[8], m1[8];
        gg_get_factors_k4(in, d1, m1);
        const uint8_t *qh = in + 16, *qs = in + (five ? 48 : 16);
        for (unsigned j = 0; j < 8; j++) {
            const unsigned shift = 4 * (j % 2);
            for (unsigned l = 0; l < 32; l++) {
                unsigned q = ((unsigned)qs[(j / 2) * 32 + l] >> shift) & 15u;
                if (five) {
                    q |= (((unsigned)qh[l] >> j) & 1u) << 4;
                }
                y[j * 32 + l] = d1[j] * (float)q - m1[j];
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
#endif

#ifndef GG_SIMD
static void gg_decode_q6_k(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 210, y += GG_QKK) {
        const float d = gg_h2f(in + 208);
        const uint8_t *ql = in, *qh = in + 128;
        for (unsigned e = 0; e < GG_QKK; e++) {
            const unsigned c = e / 128, r = e % 128;
            const unsigned lo = (ql[c * 64 + r % 64] >> (4 * (r / 64))) & 15u;
            const unsigned hi = (qh[c * 32 + r % 32] >> (2 * (r / 32))) & 3u;
            const float dl = d * (float)(int8_t)in[192 + e / 16];
            y[e] = dl * (float)((int)(lo | (hi << 4)) - 32);
        }
    }
}
#endif

static void gg_decode_iq4_xs(const uint8_t *in, size_t nb, float *y)
{
    for (size_t b = 0; b < nb; b++, in += 136, y += GG_QKK) {
        const float d = gg_h2f(in);
        const unsigned sh = (unsigned)in[2] | ((unsigned)in[3] << 8);
        const uint8_t *sl = in + 4, *qs = in + 8;
        for (unsigned ib = 0; ib < 8; ib++) {
            const unsigned ls = (((unsigned)sl[ib / 2] >> (4 * (ib % 2))) & 15u) |
                                ((((unsigned)sh >> (2 * ib)) & 3u) << 4);
            const float dl = d * (float)((int)ls - 32);
            for (unsigned j = 0; j < 16; j++) {
                y[ib * 32 + j] = dl * (float)gg_kvalues_iq4[qs[ib * 16 + j] & 15];
                y[ib * 32 + j + 16] = dl * (float)gg_kvalues_iq4[qs[ib * 16 + j] >> 4];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Plain floats                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void gg_encode_f32(const float *x, const float *w, size_t n, uint8_t *out)
{
    (void)w;
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = aq__f32_bits(x[i]);
        for (unsigned k = 0; k < 4; k++) {
            out[4 * i + k] = (uint8_t)(u >> (8 * k));
        }
    }
}

static void gg_decode_f32(const uint8_t *in, size_t n, float *y)
{
    for (size_t i = 0; i < n; i++) {
        y[i] = aq__f32_from_bits(gg_get_u32(in + 4 * i));
    }
}

#ifndef GG_SIMD
static void gg_encode_f16(const float *x, const float *w, size_t n, uint8_t *out)
{
    (void)w;
    for (size_t i = 0; i < n; i++) {
        gg_put_h(out + 2 * i, aq__f32_to_f16(x[i]));
    }
}
#endif

#ifndef GG_SIMD
static void gg_decode_f16(const uint8_t *in, size_t n, float *y)
{
    for (size_t i = 0; i < n; i++) {
        y[i] = gg_h2f(in + 2 * i);
    }
}
#endif

static void gg_encode_bf16(const float *x, const float *w, size_t n, uint8_t *out)
{
    (void)w;
    for (size_t i = 0; i < n; i++) {
        gg_put_h(out + 2 * i, aq__f32_to_bf16(x[i]));
    }
}

#ifndef GG_SIMD
static void gg_decode_bf16(const uint8_t *in, size_t n, float *y)
{
    for (size_t i = 0; i < n; i++) {
        y[i] = aq__bf16_to_f32((uint16_t)(in[2 * i] | (in[2 * i + 1] << 8)));
    }
}
#endif

/* The table of one instruction set: the encoders and decoders of the including file. */
#define GG_KERNELS_TABLE(NAME)                                                                     \
    {                                                                                              \
        .name = NAME, .encode = {[AQ_GGUF_F32] = gg_encode_f32,   [AQ_GGUF_F16] = gg_encode_f16,   \
                                 [AQ_GGUF_Q4_0] = gg_encode_q4_0, [AQ_GGUF_Q5_0] = gg_encode_q5_0, \
                                 [AQ_GGUF_Q8_0] = gg_encode_q8_0, [AQ_GGUF_Q2_K] = gg_encode_q2_k, \
                                 [AQ_GGUF_Q3_K] = gg_encode_q3_k, [AQ_GGUF_Q4_K] = gg_encode_q4_k, \
                                 [AQ_GGUF_Q5_K] = gg_encode_q5_k, [AQ_GGUF_Q6_K] = gg_encode_q6_k, \
                                 [AQ_GGUF_BF16] = gg_encode_bf16},                                 \
        .encode_round = {[AQ_GGUF_Q4_0] = gg_round_q4_0,                                           \
                         [AQ_GGUF_Q5_0] = gg_round_q5_0,                                           \
                         [AQ_GGUF_Q8_0] = gg_round_q8_0},                                          \
        .decode = {[AQ_GGUF_F32] = gg_decode_f32,       [AQ_GGUF_F16] = gg_decode_f16,             \
                   [AQ_GGUF_Q4_0] = gg_decode_q4_0,     [AQ_GGUF_Q4_1] = gg_decode_q4_1,           \
                   [AQ_GGUF_Q5_0] = gg_decode_q5_0,     [AQ_GGUF_Q5_1] = gg_decode_q5_1,           \
                   [AQ_GGUF_Q8_0] = gg_decode_q8_0,     [AQ_GGUF_Q2_K] = gg_decode_q2_k,           \
                   [AQ_GGUF_Q3_K] = gg_decode_q3_k,     [AQ_GGUF_Q4_K] = gg_decode_q4_k,           \
                   [AQ_GGUF_Q5_K] = gg_decode_q5_k,     [AQ_GGUF_Q6_K] = gg_decode_q6_k,           \
                   [AQ_GGUF_IQ4_NL] = gg_decode_iq4_nl, [AQ_GGUF_IQ4_XS] = gg_decode_iq4_xs,       \
                   [AQ_GGUF_BF16] = gg_decode_bf16},                                               \
    }

#endif /* AQ_KERNELS_GGML_BODY_H */
