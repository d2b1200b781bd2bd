/*
 * A measured prototype of trellis-coded quantization (TCQ) for weights, outside the library's
 * format (docs/schemes.md): relative RMSE on the four distributions of bench/quality
 * (bench/weights_gen.h, the same generator and seeds, the first --weights draws), bits per
 * weight with every scale counted, and encode / decode speed on one core (process CPU time,
 * scalar C, best of --reps).
 *
 * The scheme (Marcellin and Fischer's TCQ over Ungerboeck's amplitude trellises):
 *  - A uniform grid of N = 2^(R+1) levels per sub-block, split into four subsets D0..D3 (level
 *    k in D_(k mod 4)); union codebooks A0 = D0 u D2 and A1 = D1 u D3.
 *  - A trellis of 2^nu states (nu = 2..8; nu = 0 is the scalar baseline on A0 alone), realised
 *    as the systematic feedback encoder of the parity-check polynomials (h0, h1) of
 *    Ungerboeck's table for one-dimensional signals: a state fixes the parity bit z0 (its union
 *    codebook A_z0), one input bit u picks D = 2u + z0 and the next state.
 *  - Each element costs R bits: u and the index of its level within D (R - 1 bits); the
 *    decoder follows the states from the u's, so the path costs nothing more.
 *  - The trellis runs over super-blocks of 256 elements from state 0 (--persub 1: from state 0
 *    at every sub-block). Grid of a sub-block of --sub elements:
 *      --asym 1 (default): level k = k * step - offset, step and offset codes of --sbits bits
 *        against two fp16 units per super-block (kquant's layout: 4.5 bits per weight at R 4,
 *        sub 32, 6 bits; 2.625 at R 2, sub 16, 4 bits);
 *      --asym 0: level k = (k - (N - 1) / 2) * step, one step code and one fp16 unit.
 *  - Encoder (squared error): per super-block, --cands range candidates (the sub-blocks'
 *    min-max ranges shrunk by 4% steps from --shrink0; symmetric: RMS times --c), each a
 *    Viterbi search followed by --iters rounds of the least-squares grid of every sub-block for
 *    the levels chosen (re-quantized) and a new search; the best kept. --persub 1 searches each
 *    sub-block alone (its own candidates and rounds, then the 3 x 3 neighbouring codes);
 *    --persub 2 chooses the grids that way but searches the super-block as a whole.
 *  - Levels: k itself (uniform), or with --pw P at c + c sign(t) |t|^P (c = (N - 1) / 2,
 *    t = (k - c) / c); --pws P1,P2,.. (up to four) tries each grid per super-block and keeps
 *    the best, its index in the sign bits of the super-block's two fp16 units (never negative),
 *    so the bits per weight do not change.
 *  - The decoder checks that every level lies in its state's union codebook.
 *
 *   bench_tcq [--weights N] [--rate R] [--nu NU] [--sub B] [--sbits S] [--asym 0|1]
 *             [--cands K] [--shrink0 F] [--iters I] [--persub 0|1|2] [--pw P] [--pws P1,P2,..]
 *             [--c C] [--reps K]
 */
#include "weights_gen.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TQ_SUPER 256
#define TQ_MAXS 256

/* Ungerboeck's parity-check polynomials (octal) for amplitude modulation, by nu. */
static const unsigned tq_h0[9] = {0, 0, 05, 013, 023, 045, 0103, 0235, 0515};
static const unsigned tq_h1[9] = {0, 0, 02, 004, 004, 010, 0024, 0126, 0362};

/* The grid's level positions lv[k] on [0, N - 1] (k = 0..N-1): k itself (--pw 1), or denser
 * towards the middle, c + c * sign(t) |t|^pw with c = (N - 1) / 2, t = (k - c) / c. */
static float tq_lvg[4][128];
static float tq_pwg[4] = {1.0f, 1.0f, 1.0f, 1.0f};
/* The grid in use; --pws: up to four grids, chosen per super-block (two bits: the sign bits of
 * the two fp16 units, which are never negative). */
static int tq_g = 0, tq_ngrids = 1;
#define tq_lv (tq_lvg[tq_g])
#define tq_pw (tq_pwg[tq_g])

static void tq_levels(int nl)
{
    const double c = (nl - 1) * 0.5;
    for (int g = 0; g < 4; g++) {
        for (int k = 0; k < nl; k++) {
            const double t = (k - c) / c;
            tq_lvg[g][k] = (float)(c + c * (t < 0 ? -1.0 : 1.0) * pow(fabs(t), (double)tq_pwg[g]));
        }
    }
}

/* The index-space position of a grid position v (the inverse of the map above). */
static float tq_index(float v, int nl)
{
    if (tq_pw == 1.0f) {
        return v;
    }
    const float c = (float)(nl - 1) * 0.5f, t = (v - c) / c;
    return c + c * (t < 0.0f ? -1.0f : 1.0f) * powf(fabsf(t), 1.0f / tq_pw);
}

typedef struct tq_trellis {
    unsigned nstates;
    uint8_t z0[TQ_MAXS];       /* the parity bit (union codebook) of each state */
    uint16_t next[TQ_MAXS][2]; /* the next state for input bit u */
} tq_trellis;

/* Observer form of z0 = (h1 / h0) u over GF(2): z0_n is the state's bit 0; the state (bits
 * w_1..w_nu as bits 0..nu-1) moves by w_i <- w_{i+1} ^ h0_i z0 ^ h1_i u. */
static void tq_trellis_make(unsigned nu, tq_trellis *t)
{
    t->nstates = 1u << nu;
    if (nu == 0) { /* the scalar baseline: one state, the union codebook A0 only */
        t->z0[0] = 0;
        t->next[0][0] = t->next[0][1] = 0;
        return;
    }
    for (unsigned s = 0; s < t->nstates; s++) {
        const unsigned z0 = s & 1u;
        t->z0[s] = (uint8_t)z0;
        for (unsigned u = 0; u < 2; u++) {
            unsigned ns = 0;
            for (unsigned i = 1; i <= nu; i++) {
                unsigned w = i < nu ? (s >> i) & 1u : 0u;
                w ^= ((tq_h0[nu] >> i) & 1u) & z0;
                w ^= ((tq_h1[nu] >> i) & 1u) & u;
                ns |= w << (i - 1);
            }
            t->next[s][u] = (uint16_t)ns;
        }
    }
}

static float tq_fp16(float v)
{
    if (!(v > 0.0f)) {
        return 0.0f;
    }
    int e;
    double m = frexp((double)v, &e); /* v = m * 2^e, m in [0.5, 1) */
    m = nearbyint(m * 2048.0) / 2048.0;
    return (float)ldexp(m, e);
}

typedef struct tq_cfg {
    unsigned rate, nu, sub, sbits, iters, asym, cands, persub;
    float c, shrink0;
} tq_cfg;

/* Viterbi over n elements with per-element step st (from state 0); out: the level index k of
 * each element. Returns the squared error. */
static double tq_viterbi(const tq_trellis *t, const float *x, const float *st, const float *off,
                         size_t n, unsigned rate, uint16_t *bp, int16_t *kd, uint8_t *k_out)
{
    const int nl = 1 << (rate + 1), per = nl / 4;
    float cost[TQ_MAXS], nc[TQ_MAXS];
    const unsigned S = t->nstates;
    for (unsigned s = 0; s < S; s++) {
        cost[s] = s == 0 ? 0.0f : FLT_MAX;
    }
    for (size_t i = 0; i < n; i++) {
        float err[4];
        const float u = tq_index((x[i] - off[i]) / st[i], nl); /* index on the level grid */
        for (int d = 0; d < 4; d++) {
            int j = (int)lrintf((u - (float)d) * 0.25f);
            j = j < 0 ? 0 : (j >= per ? per - 1 : j);
            int k = 4 * j + d;
            float r = x[i] - (tq_lv[k] * st[i] + off[i]);
            if (tq_pw != 1.0f) { /* non-uniform: the neighbours in the subset too */
                for (int dj = -1; dj <= 1; dj += 2) {
                    const int j2 = j + dj;
                    if (j2 < 0 || j2 >= per) {
                        continue;
                    }
                    const float r2 = x[i] - (tq_lv[4 * j2 + d] * st[i] + off[i]);
                    if (r2 * r2 < r * r) {
                        r = r2;
                        k = 4 * j2 + d;
                    }
                }
            }
            err[d] = r * r;
            kd[i * 4 + (size_t)d] = (int16_t)k;
        }
        for (unsigned s = 0; s < S; s++) {
            nc[s] = FLT_MAX;
        }
        uint16_t *b = bp + i * S;
        for (unsigned s = 0; s < S; s++) {
            if (cost[s] == FLT_MAX) {
                continue;
            }
            const unsigned z0 = t->z0[s];
            for (unsigned uu = 0; uu < 2; uu++) {
                const unsigned ns = t->next[s][uu];
                const float c = cost[s] + err[2 * uu + z0];
                if (c < nc[ns]) {
                    nc[ns] = c;
                    b[ns] = (uint16_t)(2 * s + uu);
                }
            }
        }
        memcpy(cost, nc, S * sizeof(float));
    }
    unsigned best = 0;
    for (unsigned s = 1; s < S; s++) {
        best = cost[s] < cost[best] ? s : best;
    }
    const double e = (double)cost[best];
    for (size_t i = n; i-- > 0;) {
        const unsigned p = bp[i * S + best], s = p >> 1, uu = p & 1u;
        k_out[i] = (uint8_t)kd[i * 4 + 2 * uu + t->z0[s]];
        best = s;
    }
    return e;
}

/* Codes of one super-block's steps (and, asymmetric, offsets) from per-sub-block wishes
 * (want_st > 0, want_lo <= 0; nsb of them): one fp16 unit each, codes 1..2^sbits - 1 (steps) and
 * 0..2^sbits - 1 (offsets); st and off per element. */
static void tq_steps(const tq_cfg *cf, const float *want_st, const float *want_lo, size_t nsb,
                     float *unit, float *ounit, unsigned *code, unsigned *mcode, float *st,
                     float *off)
{
    const unsigned cmax = (1u << cf->sbits) - 1u, sub = cf->sub;
    const float half = (float)((1 << (cf->rate + 1)) - 1) * 0.5f;
    float mx = 0.0f, mn = 0.0f;
    for (size_t j = 0; j < nsb; j++) {
        mx = want_st[j] > mx ? want_st[j] : mx;
        mn = -want_lo[j] > mn ? -want_lo[j] : mn;
    }
    float un = tq_fp16(mx / (float)cmax), on = tq_fp16(mn / (float)cmax);
    un = un > 0.0f ? un : 1e-30f;
    for (size_t j = 0; j < nsb; j++) {
        long q = lrintf(want_st[j] / un);
        q = q < 1 ? 1 : (q > (long)cmax ? (long)cmax : q);
        code[j] = (unsigned)q;
        long m = on > 0.0f ? lrintf(-want_lo[j] / on) : 0;
        m = m < 0 ? 0 : (m > (long)cmax ? (long)cmax : m);
        mcode[j] = cf->asym ? (unsigned)m : 0u;
        for (unsigned i = 0; i < sub; i++) {
            st[j * sub + i] = un * (float)q;
            off[j * sub + i] = cf->asym ? -on * (float)m : -half * un * (float)q;
        }
    }
    *unit = un;
    *ounit = cf->asym ? on : 0.0f;
}

typedef struct tq_coded {
    uint8_t *k;      /* level index per element (R bits: u and the index in its subset) */
    unsigned *code;  /* step code per sub-block */
    unsigned *mcode; /* offset code per sub-block (asymmetric) */
    float *unit;     /* fp16 step unit per super-block */
    float *ounit;    /* fp16 offset unit per super-block (asymmetric) */
    uint8_t *grid;   /* the grid of each super-block (--pw2; the free sign bit of the unit) */
} tq_coded;

/* The Viterbi search's scratch (back pointers and per-state decisions of one super-block),
 * allocated once by the caller of the encoders. */
typedef struct tq_scratch {
    uint16_t *bp;
    int16_t *kd;
} tq_scratch;

/* The asymmetric grid's start for a range [lo, hi] shrunk by shrink around its middle: the
 * step of nl levels over it and its low end (<= 0). */
static void tq_range_start(float lo, float hi, float shrink, int nl, float *step, float *low)
{
    const float mid = 0.5f * (lo + hi), h = 0.5f * (hi - lo) * shrink;
    *step = 2.0f * h / (float)(nl - 1);
    *low = mid - h < 0.0f ? mid - h : 0.0f;
}

/* Least squares (step, offset <= 0) of one sub-block for its levels k; false if none. */
static bool tq_fit(const float *x, const uint8_t *k, unsigned n, float *step, float *lo)
{
    double sk = 0.0, skk = 0.0, sx = 0.0, sxk = 0.0;
    for (unsigned i = 0; i < n; i++) {
        const double l = (double)tq_lv[k[i]];
        sk += l;
        skk += l * l;
        sx += (double)x[i];
        sxk += (double)x[i] * l;
    }
    const double det = n * skk - sk * sk;
    if (!(det > 0.0)) {
        return false;
    }
    double a = (n * sxk - sk * sx) / det, c0 = (sx - a * sk) / n;
    if (c0 > 0.0) { /* offset clamped to 0: the step alone */
        c0 = 0.0;
        a = skk > 0.0 ? sxk / skk : 0.0;
    }
    if (!(a > 0.0)) {
        return false;
    }
    *step = (float)a;
    *lo = (float)c0;
    return true;
}

/* The per-sub-block search (asymmetric grid, each sub-block's trellis from state 0): per
 * sub-block, the range candidates and least-squares rounds each with its own Viterbi search
 * on the unquantized grid; then the super-block's units, and per sub-block the best of the
 * 3 x 3 neighbouring (step, offset) codes, again each searched. */
static void tq_encode_persub(const tq_trellis *t, const tq_cfg *cf, const float *x, size_t n,
                             tq_coded *o, const tq_scratch *sc)
{
    const unsigned sub = cf->sub, nsb = TQ_SUPER / sub, cmax = (1u << cf->sbits) - 1u;
    const int nl = 1 << (cf->rate + 1);
    uint16_t *bp = sc->bp;
    int16_t *kd = sc->kd;
    uint8_t kt[TQ_SUPER];
    float st[TQ_SUPER], off[TQ_SUPER], want[TQ_SUPER], wlo[TQ_SUPER];
    for (size_t b = 0; b < n / TQ_SUPER; b++) {
        const float *xb = x + b * TQ_SUPER;
        uint8_t *kb = o->k + b * TQ_SUPER;
        unsigned *cb = o->code + b * nsb, *mb = o->mcode + b * nsb;
        for (unsigned j = 0; j < nsb; j++) {
            const float *xj = xb + j * sub;
            float lo = 0.0f, hi = 0.0f;
            for (unsigned i = 0; i < sub; i++) {
                lo = xj[i] < lo ? xj[i] : lo;
                hi = xj[i] > hi ? xj[i] : hi;
            }
            double best = INFINITY;
            want[j] = hi > lo ? (hi - lo) / (float)(nl - 1) : 1e-30f;
            wlo[j] = lo;
            for (unsigned cand = 0; cand < cf->cands; cand++) {
                float a, c0;
                tq_range_start(lo, hi, cf->shrink0 - 0.04f * (float)cand, nl, &a, &c0);
                if (!(a > 0.0f)) {
                    continue;
                }
                for (unsigned it = 0; it <= cf->iters; it++) {
                    for (unsigned i = 0; i < sub; i++) {
                        st[i] = a;
                        off[i] = c0;
                    }
                    const double e = tq_viterbi(t, xj, st, off, sub, cf->rate, bp, kd, kt);
                    if (e < best) {
                        best = e;
                        want[j] = a;
                        wlo[j] = c0;
                    }
                    if (!tq_fit(xj, kt, sub, &a, &c0)) {
                        break;
                    }
                }
            }
        }
        /* Units, codes, then the 3 x 3 neighbourhood of each sub-block's codes; or (persub 2)
         * one search of the whole super-block and rounds of least squares, as the plain
         * encoder does after its own choice of steps. */
        float un, on;
        tq_steps(cf, want, wlo, nsb, &un, &on, cb, mb, st, off);
        if (cf->persub == 2) {
            double e = tq_viterbi(t, xb, st, off, TQ_SUPER, cf->rate, bp, kd, kb);
            unsigned ct[TQ_SUPER / 2], mt[TQ_SUPER / 2];
            float u2, o2;
            for (unsigned it = 0; it < cf->iters; it++) {
                for (unsigned j = 0; j < nsb; j++) {
                    float a, c0;
                    if (tq_fit(xb + j * sub, kb + j * sub, sub, &a, &c0)) {
                        want[j] = a;
                        wlo[j] = c0;
                    }
                }
                tq_steps(cf, want, wlo, nsb, &u2, &o2, ct, mt, st, off);
                const double e2 = tq_viterbi(t, xb, st, off, TQ_SUPER, cf->rate, bp, kd, kt);
                if (!(e2 < e)) {
                    break;
                }
                e = e2;
                un = u2;
                on = o2;
                memcpy(kb, kt, TQ_SUPER);
                memcpy(cb, ct, nsb * sizeof(unsigned));
                memcpy(mb, mt, nsb * sizeof(unsigned));
            }
            o->unit[b] = un;
            o->ounit[b] = on;
            continue;
        }
        for (unsigned j = 0; j < nsb; j++) {
            const float *xj = xb + j * sub;
            const unsigned c0 = cb[j], m0 = mb[j];
            double best = INFINITY;
            for (int ds = -1; ds <= 1; ds++) {
                for (int dm = -1; dm <= 1; dm++) {
                    const int cs = (int)c0 + ds, cm = (int)m0 + dm;
                    if (cs < 1 || cm < 0 || cs > (int)cmax || cm > (int)cmax) {
                        continue;
                    }
                    for (unsigned i = 0; i < sub; i++) {
                        st[i] = un * (float)cs;
                        off[i] = -on * (float)cm;
                    }
                    const double e = tq_viterbi(t, xj, st, off, sub, cf->rate, bp, kd, kt);
                    if (e < best) {
                        best = e;
                        cb[j] = (unsigned)cs;
                        mb[j] = (unsigned)cm;
                        memcpy(kb + j * sub, kt, sub);
                    }
                }
            }
        }
        o->unit[b] = un;
        o->ounit[b] = on;
    }
}

static void tq_encode(const tq_trellis *t, const tq_cfg *cf, const float *x, size_t n, tq_coded *o,
                      const tq_scratch *sc)
{
    if (cf->persub) {
        tq_encode_persub(t, cf, x, n, o, sc);
        return;
    }
    const unsigned sub = cf->sub, nsb = TQ_SUPER / sub;
    const int nl = 1 << (cf->rate + 1);
    const float half = (float)(nl - 1) * 0.5f;
    uint16_t *bp = sc->bp;
    int16_t *kd = sc->kd;
    uint8_t kt[TQ_SUPER];
    float st[TQ_SUPER], off[TQ_SUPER], want[TQ_SUPER], wlo[TQ_SUPER];
    for (size_t b = 0; b < n / TQ_SUPER; b++) {
        const float *xb = x + b * TQ_SUPER;
        uint8_t *kb = o->k + b * TQ_SUPER;
        unsigned *cb = o->code + b * nsb, *mb = o->mcode + b * nsb;
        double best = INFINITY;
        /* Range shrink candidates (on each grid): the whole super-block searched for each, the
         * best kept. */
        for (unsigned gc = 0; gc < (unsigned)tq_ngrids * cf->cands; gc++) {
            const unsigned cand = gc % cf->cands;
            tq_g = (int)(gc / cf->cands);
            const float shrink = cf->shrink0 - 0.04f * (float)cand;
            for (unsigned j = 0; j < nsb; j++) {
                double ss = 0.0;
                float lo = 0.0f, hi = 0.0f;
                for (unsigned i = 0; i < sub; i++) {
                    const float v = xb[j * sub + i];
                    ss += (double)v * (double)v;
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                if (cf->asym) {
                    tq_range_start(lo, hi, shrink, nl, &want[j], &wlo[j]);
                } else {
                    want[j] = shrink * cf->c * (float)sqrt(ss / sub) / (float)nl;
                    wlo[j] = 0.0f;
                }
                want[j] = want[j] > 0.0f ? want[j] : 1e-30f;
            }
            float un, on;
            unsigned ct[TQ_SUPER / 2], mt[TQ_SUPER / 2];
            tq_steps(cf, want, wlo, nsb, &un, &on, ct, mt, st, off);
            double e = tq_viterbi(t, xb, st, off, TQ_SUPER, cf->rate, bp, kd, kt);
            for (unsigned it = 0; it < cf->iters; it++) {
                for (unsigned j = 0; j < nsb; j++) { /* least squares for the levels chosen */
                    double sk = 0.0, skk = 0.0, sx = 0.0, sxk = 0.0;
                    for (unsigned i = 0; i < sub; i++) {
                        const double k =
                            (double)tq_lv[kt[j * sub + i]] - (cf->asym ? 0.0 : (double)half);
                        const double v = xb[j * sub + i];
                        sk += k;
                        skk += k * k;
                        sx += v;
                        sxk += v * k;
                    }
                    if (cf->asym) {
                        const double det = sub * skk - sk * sk;
                        if (det > 0.0) {
                            const double a = (sub * sxk - sk * sx) / det, c0 = (sx - a * sk) / sub;
                            if (a > 0.0) {
                                want[j] = (float)a;
                                wlo[j] = c0 < 0.0 ? (float)c0 : 0.0f;
                            }
                        }
                    } else if (skk > 0.0 && sxk > 0.0) {
                        want[j] = (float)(sxk / skk);
                    }
                }
                tq_steps(cf, want, wlo, nsb, &un, &on, ct, mt, st, off);
                e = tq_viterbi(t, xb, st, off, TQ_SUPER, cf->rate, bp, kd, kt);
            }
            if (e < best) {
                best = e;
                memcpy(kb, kt, TQ_SUPER);
                memcpy(cb, ct, nsb * sizeof(unsigned));
                memcpy(mb, mt, nsb * sizeof(unsigned));
                o->unit[b] = un;
                o->ounit[b] = on;
                o->grid[b] = (uint8_t)tq_g;
            }
        }
    }
}

/* The decoder: it follows the states from each element's u (the subset's top bit, given with
 * the level), checking that the level is in the state's union codebook. */
static size_t tq_decode(const tq_trellis *t, const tq_cfg *cf, const tq_coded *o, size_t n,
                        float *y)
{
    const unsigned sub = cf->sub, nsb = TQ_SUPER / sub;
    const float half = (float)((1 << (cf->rate + 1)) - 1) * 0.5f;
    size_t bad = 0;
    for (size_t b = 0; b < n / TQ_SUPER; b++) {
        unsigned s = 0;
        tq_g = o->grid[b];
        for (unsigned j = 0; j < nsb; j++) {
            s = cf->persub == 1 ? 0u : s; /* persub 1: each sub-block from state 0 */
            const float step = o->unit[b] * (float)o->code[b * nsb + j];
            const float off = cf->asym ? -o->ounit[b] * (float)o->mcode[b * nsb + j] : -half * step;
            for (unsigned i = 0; i < sub; i++) {
                const size_t e = b * TQ_SUPER + j * sub + i;
                const unsigned k = o->k[e], d = k & 3u;
                bad += (d & 1u) != t->z0[s];
                y[e] = tq_lv[k] * step + off;
                s = t->next[s][d >> 1];
            }
        }
    }
    return bad;
}

int main(int argc, char **argv)
{
    size_t n = (size_t)1 << 20;
    tq_cfg cf = {4, 3, 32, 6, 2, 1, 4, 0, 0.0f, 1.0f};
    int reps = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--weights") == 0) {
            n = (size_t)strtoull(v, NULL, 10) / TQ_SUPER * TQ_SUPER;
        } else if (strcmp(a, "--rate") == 0) {
            cf.rate = (unsigned)atoi(v);
        } else if (strcmp(a, "--nu") == 0) {
            cf.nu = (unsigned)atoi(v);
        } else if (strcmp(a, "--sub") == 0) {
            cf.sub = (unsigned)atoi(v);
        } else if (strcmp(a, "--sbits") == 0) {
            cf.sbits = (unsigned)atoi(v);
        } else if (strcmp(a, "--iters") == 0) {
            cf.iters = (unsigned)atoi(v);
        } else if (strcmp(a, "--asym") == 0) {
            cf.asym = (unsigned)atoi(v);
        } else if (strcmp(a, "--pw") == 0) {
            tq_pwg[0] = (float)atof(v);
        } else if (strcmp(a, "--pws") == 0) { /* e.g. 1,1.3,0.8 */
            tq_ngrids = 0;
            for (const char *q = v; *q != '\0' && tq_ngrids < 4;) {
                char *end;
                const float pw = strtof(q, &end);
                if (end == q || !(pw > 0.0f)) {
                    fprintf(stderr, "bench_tcq: bad --pws '%s'\n", v);
                    return 2;
                }
                tq_pwg[tq_ngrids++] = pw;
                q = *end == ',' ? end + 1 : end;
            }
        } else if (strcmp(a, "--persub") == 0) {
            cf.persub = (unsigned)atoi(v);
        } else if (strcmp(a, "--cands") == 0) {
            cf.cands = (unsigned)atoi(v);
        } else if (strcmp(a, "--shrink0") == 0) {
            cf.shrink0 = (float)atof(v);
        } else if (strcmp(a, "--c") == 0) {
            cf.c = (float)atof(v);
        } else if (strcmp(a, "--reps") == 0) {
            reps = atoi(v);
        } else {
            fprintf(stderr, "bench_tcq: unknown option %s\n", a);
            return 2;
        }
    }
    if (cf.cands == 0 || (cf.persub && (!cf.asym || tq_ngrids > 1)) ||
        (!cf.asym && tq_ngrids > 2) || cf.rate < 1 || cf.rate > 6 || (cf.nu == 1) || cf.nu > 8 ||
        cf.sub == 0 || TQ_SUPER % cf.sub != 0 || cf.sbits < 2 || cf.sbits > 16) {
        fprintf(stderr,
                "bench_tcq: rate 1..6, nu 0 (scalar) or 2..8, sub dividing 256, sbits 2..16, "
                "--persub with --asym 1 and one grid, more than two grids with --asym 1\n");
        return 2;
    }
    if (cf.c == 0.0f) { /* the RMS-to-span constant: levels span about +-c/2 RMS */
        cf.c = cf.rate >= 4 ? 9.0f : (cf.rate == 3 ? 7.0f : 5.0f);
    }
    tq_trellis t;
    tq_trellis_make(cf.nu, &t);
    tq_levels(1 << (cf.rate + 1));
    const double bpw = (double)cf.rate + (double)(cf.asym ? 2 : 1) * cf.sbits / cf.sub +
                       (cf.asym ? 32.0 : 16.0) / TQ_SUPER;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    tq_coded o = {malloc(n),
                  malloc(n / cf.sub * sizeof(unsigned)),
                  malloc(n / cf.sub * sizeof(unsigned)),
                  malloc(n / TQ_SUPER * sizeof(float)),
                  malloc(n / TQ_SUPER * sizeof(float)),
                  calloc(n / TQ_SUPER, 1)};
    tq_scratch sc = {malloc(TQ_SUPER * t.nstates * sizeof(uint16_t)),
                     malloc(TQ_SUPER * 4 * sizeof(int16_t))};
    if (!x || !y || !o.k || !o.code || !o.mcode || !o.unit || !o.ounit || !o.grid || !sc.bp ||
        !sc.kd) {
        fprintf(stderr, "bench_tcq: out of memory for %zu weights\n", n);
        return 1;
    }
    memset(y, 0, n * sizeof(float)); /* pages touched before any decode is timed */
    printf(
        "| distribution | code bits | states | sub-block | param bits | grid, search | LS rounds | "
        "bits/weight | rel RMSE | encode M/s | decode M/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int d = 0; d < WG_DISTS; d++) {
        wg_generate(d, x, n);
        double enc = 0.0, dec = 0.0;
        size_t bad = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = wg_now();
            tq_encode(&t, &cf, x, n, &o, &sc);
            double t1 = wg_now();
            bad = tq_decode(&t, &cf, &o, n, y);
            double t2 = wg_now();
            enc = (double)n / (t1 - t0) > enc ? (double)n / (t1 - t0) : enc;
            dec = (double)n / (t2 - t1) > dec ? (double)n / (t2 - t1) : dec;
        }
        double mean = 0.0, var = 0.0, se = 0.0;
        for (size_t i = 0; i < n; i++) {
            mean += (double)x[i];
        }
        mean /= (double)n;
        for (size_t i = 0; i < n; i++) {
            var += ((double)x[i] - mean) * ((double)x[i] - mean);
            se += ((double)x[i] - (double)y[i]) * ((double)x[i] - (double)y[i]);
        }
        if (bad != 0) {
            fprintf(stderr, "bench_tcq: %zu levels outside their state's codebook\n", bad);
            return 1;
        }
        char grid[128];
        if (cf.asym) {
            snprintf(grid, sizeof grid, "min-max, %u ranges%s", cf.cands,
                     cf.persub == 1 ? ", per sub-block"
                                    : (cf.persub == 2 ? ", chosen per sub-block" : ""));
        } else {
            snprintf(grid, sizeof grid, "symmetric, c %.2f", (double)cf.c);
        }
        if (tq_ngrids > 1 || tq_pwg[0] != 1.0f) {
            size_t used = strlen(grid);
            snprintf(grid + used, sizeof grid - used, ", levels");
            for (int g = 0; g < tq_ngrids; g++) {
                used = strlen(grid);
                snprintf(grid + used, sizeof grid - used, "%s^%.2f", g == 0 ? " " : " or ",
                         (double)tq_pwg[g]);
            }
        }
        printf("| %s | %u | %u | %u | %u | %s | %u | %.4f | %.4f | %.2f | %.1f |\n",
               wg_dist_names[d], cf.rate, t.nstates, cf.sub, cf.sbits, grid, cf.iters, bpw,
               sqrt(se / var), enc / 1e6, dec / 1e6);
    }
    free(x);
    free(y);
    free(o.k);
    free(o.code);
    free(o.mcode);
    free(o.unit);
    free(o.ounit);
    free(o.grid);
    free(sc.bp);
    free(sc.kd);
    return 0;
}
