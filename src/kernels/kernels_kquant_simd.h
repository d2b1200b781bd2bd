/*
 * The kquant super-block driver (docs/format.md 5.2) written once over a small vocabulary. Each
 * kquant SIMD translation unit (kernels_kquant_avx2.c, kernels_kquant_avx512.c,
 * kernels_kquant_neon.c) defines the pieces below for its instruction set, then includes this
 * file, which defines the super-block function and the exported adapters. Nothing here is
 * compiled on its own.
 *
 * Sub-block j of a super-block lives in lane j % KQS_VL of panel j / KQS_VL: the super-block
 * is transposed KQS_VL x KQS_VL at a time on the way in and out, and element i of every
 * sub-block of panel p is the vector xv[p * sub + i].
 *
 *   KQS_VL                      float32 lanes per vector (sub-blocks per panel)
 *   kqs_v                       the float vector type
 *   KQS_WEIGHTED                1 when the panel functions take weights; 0 sends weighted
 *                               super-blocks to the reference
 *   KQS_EXPORT(suffix)          the exported name of the adapter for input dtype suffix
 *   kqs_v kqs_zero(void), kqs_add(a, b), kqs_mul(a, b)
 *   kqs_v kqs_load(const float *), void kqs_store(float *, kqs_v)   unaligned
 *   void kqs_tr(kqs_v r[KQS_VL])                 transposes KQS_VL rows in place
 *   kqs_panel                   per-lane state of a panel: float vectors sw, sx (the sums of
 *                               step 1, kept for the refit) and the sub-block codes
 *   void kqs_codes_load(kqs_panel *, const unsigned *sc, const unsigned *mc)
 *   void kqs_codes_store(const kqs_panel *, unsigned *sc, unsigned *mc)
 *                               KQS_VL sub-block codes between the panel and two arrays
 *   void kqs_panel_fit(xv, wv, wx, n, bits, kqs_panel *, double *s, double *m)   step 1: s
 *                               and m of each lane into s[0..VL-1], m[0..VL-1]; sw, sx set
 *                               (wv, wx: weights and w * x laid out as xv, or NULL)
 *   void kqs_panel_refine(xv, wv, n, bits, d, dmin, kqs_panel *)   step 3, from the codes
 *   void kqs_panel_codes(xv, n, bits, d, dmin, const kqs_panel *, kqs_v *qv)   step 4
 *   void kqs_pack(const float *q, unsigned bits, uint8_t *out)   512 codes (floats holding
 *                               integers < 2^bits) to 512 * bits / 8 bytes
 */
#ifndef KQS_VL
#    error "define the kquant vocabulary before including kernels_kquant_simd.h"
#endif

/* A whole super-block (full and byte-aligned; weighted when wv != NULL). */
static inline __attribute__((always_inline)) void
kqs_super_body(const kqs_v *wv, unsigned bits, uint8_t *codes, size_t bit0, uint8_t *meta,
               float *d_out, float *dmin_out, kqs_v *xv, const kqs_v *wx)
{
    const size_t sub = aq__kq_sub(bits), nsub = AQ__KQ_SUPER / sub, npan = nsub / KQS_VL;
    kqs_v qv[AQ__KQ_SUPER / KQS_VL];
    kqs_panel pan[AQ__KQ_SUPER / 16 / KQS_VL];
    double s[AQ__KQ_SUPER / 16], m[AQ__KQ_SUPER / 16];
    unsigned sc[AQ__KQ_SUPER / 16], mc[AQ__KQ_SUPER / 16];
    float tq[AQ__KQ_SUPER / 16], tqq[AQ__KQ_SUPER / 16], txq[AQ__KQ_SUPER / 16];
    float tw[AQ__KQ_SUPER / 16], tx[AQ__KQ_SUPER / 16];
    float q[AQ__KQ_SUPER];

    /* 1. */
    for (size_t p = 0; p < npan; p++) {
        kqs_panel_fit(xv + p * sub, wv != NULL ? wv + p * sub : NULL,
                      wv != NULL ? wx + p * sub : NULL, sub, bits, &pan[p], s + KQS_VL * p,
                      m + KQS_VL * p);
        kqs_store(tw + KQS_VL * p, pan[p].sw);
        kqs_store(tx + KQS_VL * p, pan[p].sx);
    }
    double smax = 0.0, mmax = 0.0;
    for (size_t j = 0; j < nsub; j++) {
        smax = s[j] > smax ? s[j] : smax;
        mmax = -m[j] > mmax ? -m[j] : mmax;
    }

    /* 2 and 3. */
    float d, dmin;
    aq__kq_params(s, m, nsub, bits, smax, mmax, &d, &dmin, sc, mc);
    for (size_t p = 0; p < npan; p++) {
        kqs_codes_load(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
        kqs_panel_refine(xv + p * sub, wv != NULL ? wv + p * sub : NULL, sub, bits, d, dmin,
                         &pan[p]);
        kqs_codes_store(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
    }

    /* 4 and 5: codes, the sums of the refit, one refit and new codes. */
    for (size_t p = 0; p < npan; p++) {
        const kqs_v *xp = xv + p * sub;
        kqs_v *qp = qv + p * sub;
        kqs_panel_codes(xp, sub, bits, d, dmin, &pan[p], qp);
        kqs_v sq = kqs_zero(), sqq = sq, sxq = sq;
        for (size_t i = 0; i < sub; i++) {
            const kqs_v wq = wv != NULL ? kqs_mul(wv[p * sub + i], qp[i]) : qp[i];
            sq = kqs_add(sq, wq);
            sqq = kqs_add(sqq, kqs_mul(wq, qp[i]));
            sxq = kqs_add(sxq, kqs_mul(wv != NULL ? wx[p * sub + i] : xp[i], qp[i]));
        }
        kqs_store(tq + KQS_VL * p, sq);
        kqs_store(tqq + KQS_VL * p, sqq);
        kqs_store(txq + KQS_VL * p, sxq);
    }
    if (aq__kq_refit(tq, tqq, txq, tw, tx, nsub, sc, mc, &d, &dmin)) {
        for (size_t p = 0; p < npan; p++) {
            kqs_panel_codes(xv + p * sub, sub, bits, d, dmin, &pan[p], qv + p * sub);
        }
    }

    /* Back to element order, then packed (codes is zeroed by the caller). */
    for (size_t p = 0; p < npan; p++) {
        for (size_t c0 = 0; c0 < sub; c0 += KQS_VL) {
            kqs_v *r = qv + p * sub + c0;
            kqs_tr(r);
            for (size_t l = 0; l < KQS_VL; l++) {
                kqs_store(q + (p * KQS_VL + l) * sub + c0, r[l]);
            }
        }
    }
    kqs_pack(q, bits, codes + bit0 / 8);
    aq__kq_put_params(meta, bits, AQ__KQ_SUPER, sc, mc);
    *d_out = d;
    *dmin_out = dmin;
}

/* Loads 512 values (sub-blocks of sub elements) transposed: element i of sub-block j of panel
 * p in lane j % KQS_VL of out[p * sub + i]. */
static inline void kqs_load_panels(const float *x, size_t sub, kqs_v *out)
{
    const size_t npan = AQ__KQ_SUPER / sub / KQS_VL;
    for (size_t p = 0; p < npan; p++) {
        for (size_t c0 = 0; c0 < sub; c0 += KQS_VL) {
            kqs_v *r = out + p * sub + c0;
            for (size_t l = 0; l < KQS_VL; l++) {
                r[l] = kqs_load(x + (p * KQS_VL + l) * sub + c0);
            }
            kqs_tr(r);
        }
    }
}

/* A whole super-block: full and byte-aligned ones here (weighted ones too where KQS_WEIGHTED),
 * the others in the reference. */
static void kqs_super(const float *x, const float *w, size_t len, unsigned bits, uint8_t *codes,
                      size_t bit0, uint8_t *meta, float *d_out, float *dmin_out)
{
    if ((!KQS_WEIGHTED && w != NULL) || len != AQ__KQ_SUPER || bit0 % 8 != 0) {
        aq__kq_super(x, w, len, bits, codes, bit0, meta, d_out, dmin_out);
        return;
    }
    const size_t sub = aq__kq_sub(bits);
    kqs_v xv[AQ__KQ_SUPER / KQS_VL];
    kqs_load_panels(x, sub, xv);
    if (w == NULL) {
        kqs_super_body(NULL, bits, codes, bit0, meta, d_out, dmin_out, xv, NULL);
        return;
    }
#if KQS_WEIGHTED
    kqs_v wv[AQ__KQ_SUPER / KQS_VL], wx[AQ__KQ_SUPER / KQS_VL];
    kqs_load_panels(w, sub, wv);
    for (size_t i = 0; i < AQ__KQ_SUPER / KQS_VL; i++) {
        wx[i] = kqs_mul(wv[i], xv[i]); /* w * x, as the reference rounds it */
    }
    kqs_super_body(wv, bits, codes, bit0, meta, d_out, dmin_out, xv, wx);
#endif
}

#define KQS_ADAPTER(suffix, dtype)                                                         \
    void KQS_EXPORT(suffix)(const void *src, const float *importance, const aq__span *s,   \
                            uint8_t *packed, uint8_t *meta, float *scales, float *mins)    \
    {                                                                                      \
        aq__kquant_span(kqs_super, src, dtype, importance, s, packed, meta, scales, mins); \
    }

KQS_ADAPTER(f32, AQ_DTYPE_F32)
KQS_ADAPTER(f16, AQ_DTYPE_F16)
KQS_ADAPTER(bf16, AQ_DTYPE_BF16)
KQS_ADAPTER(f64, AQ_DTYPE_F64)
#undef KQS_ADAPTER
