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
 *                               (d, dmin: the KQS_VL lanes' super-block parameters, loaded
 *                               from two float arrays)
 *   KQS_PACK_WIDE               1 when kqs_pack is a vector pack (cheaper to run on 64
 *                               codes than the scalar one on 16 or more); 0 if not defined
 *   void kqs_pack(const float *q, size_t n, unsigned bits, uint8_t *out)   n codes (floats
 *                               holding integers < 2^bits; n a multiple of 64) to n * bits / 8
 *                               bytes
 *
 * Super-blocks shorter than 512 elements (rows of kquant_rows, the last super-block of a
 * tensor) are gathered into batches: each takes the next of 1024 / sub whole sub-block slots
 * (read where they are for float32 input, converted into a buffer otherwise), so the
 * sub-blocks of several short super-blocks share the panels, each lane with its own
 * super-block's d and dmin. Only a super-block's last sub-block can be partial; partial
 * sub-blocks of one length pn go to panels of their own, whose loops run over pn elements, so
 * that every sum adds exactly the sub-block's terms in element order, with no padding,
 * weights or masks. A super-block's sub-blocks thus sit in two places; steps 2 and 5 gather
 * their entries in order, and the codes are packed from each place. Codes before the first
 * byte boundary, or after the last, are ORed in one at a time.
 */
#ifndef KQS_VL
#    error "define the kquant vocabulary before including kernels_kquant_simd.h"
#endif
#ifndef KQS_PACK_WIDE
#    define KQS_PACK_WIDE 0
#endif

/* Whole-slot elements of a batch of short super-blocks: two super-blocks' worth, so that rows
 * of 320 at 4 bits fill 30 of 32 slots (one row would fill 10 of 16). */
#define KQS_CAP (2u * AQ__KQ_SUPER)
/* Partial slots of a batch, and their panels. */
#define KQS_PCAP 64u
#define KQS_PPAN ((KQS_PCAP + KQS_VL - 1) / KQS_VL)
/* Per-slot entries: the whole slots (a multiple of KQS_VL), then the partial ones. */
#define KQS_NS (KQS_CAP / 16 + KQS_PPAN * KQS_VL)

/* A super-block of a batch: its first whole slot and whole-slot count, its partial slot (when
 * len is not a multiple of the sub-block), its length, where its codes, parameters, d and dmin
 * go. */
typedef struct kqs_item {
    size_t j0, nfull, jp, len, bit0;
    uint8_t *meta;
    float *d_out, *dmin_out;
} kqs_item;

/* Per-slot index of sub-block k of item it (pb: the first partial entry). */
static inline size_t kqs_slot(const kqs_item *it, size_t k, size_t pb)
{
    return k < it->nfull ? it->j0 + k : pb + it->jp;
}

/* n codes (floats holding integers < 2^bits) at bits bit0 + i * bits of codes: ORed one at a
 * time up to a byte boundary, then whole bytes (overwritten; 64 codes at a time, and where
 * kqs_pack is a vector pack, a last 64 of which only the bytes needed are kept), the rest
 * ORed. q must be readable, and hold integers < 2^bits, 64 floats past its n codes. */
static inline void kqs_put(const float *q, size_t n, unsigned bits, uint8_t *codes, size_t bit0)
{
    size_t i = 0;
    for (; i < n && (bit0 + i * bits) % 8 != 0; i++) {
        const size_t bit = bit0 + i * bits;
        codes[bit / 8] |= (uint8_t)((unsigned)q[i] << (bit % 8));
    }
    const size_t n64 = (n - i) / 64 * 64, nb = (n - i) / 4 * 4;
    if (n64 > 0) {
        kqs_pack(q + i, n64, bits, codes + (bit0 + i * bits) / 8);
    }
    if (nb > n64 && (!KQS_PACK_WIDE || nb - n64 < 16)) {
        aq__kq_pack_codes(q + i + n64, nb - n64, bits, codes + (bit0 + (i + n64) * bits) / 8);
    } else if (nb > n64) { /* a vector pack: 64 codes packed, the bytes needed kept */
        uint8_t tb[64];
        kqs_pack(q + i + n64, 64, bits, tb);
        uint8_t *dst = codes + (bit0 + (i + n64) * bits) / 8;
        for (size_t k = 0; k < (nb - n64) * bits / 8; k++) {
            dst[k] = tb[k];
        }
    }
    for (i += nb; i < n; i++) {
        const size_t bit = bit0 + i * bits;
        codes[bit / 8] |= (uint8_t)((unsigned)q[i] << (bit % 8));
    }
}

/* Steps 1 to 5 over a batch of nitems super-blocks: nfs whole slots (panels xv, wv, wx of sub
 * elements each) and nps partial slots of pn elements (panels xvp, wvp, wxp of pn rounded up to
 * KQS_VL elements each; loops run over the pn), then the codes packed at codes (zeroed by the
 * caller where ORed). wv == NULL: unweighted. */
static inline __attribute__((always_inline)) void
kqs_batch_body(const kqs_v *wv, const kqs_v *wvp, unsigned bits, uint8_t *codes, const kqs_item *it,
               size_t nitems, size_t nfs, size_t nps, size_t pn, const kqs_v *xv, const kqs_v *wx,
               const kqs_v *xvp, const kqs_v *wxp)
{
    const size_t sub = aq__kq_sub(bits);
    const size_t nfp = (nfs + KQS_VL - 1) / KQS_VL, npan = nfp + (nps + KQS_VL - 1) / KQS_VL;
    const size_t pnr = (pn + KQS_VL - 1) / KQS_VL * KQS_VL, pb = nfp * KQS_VL;
    kqs_v qv[KQS_CAP / KQS_VL], qvp[KQS_PPAN * 32];
    kqs_panel pan[KQS_CAP / 16 / KQS_VL + KQS_PPAN];
    double s[KQS_NS], m[KQS_NS];
    unsigned sc[KQS_NS], mc[KQS_NS];
    float tq[KQS_NS], tqq[KQS_NS], txq[KQS_NS], tw[KQS_NS], tx[KQS_NS], dl[KQS_NS], ml[KQS_NS];
    float q[KQS_CAP + 64], qp[KQS_PCAP * 32 + 64]; /* 64 zero codes past the last panel */
    /* Per super-block, its sub-blocks' entries gathered in order. */
    unsigned gsc[AQ__KQ_SUPER / 16], gmc[AQ__KQ_SUPER / 16];
    float gq[AQ__KQ_SUPER / 16], gqq[AQ__KQ_SUPER / 16], gxq[AQ__KQ_SUPER / 16];
    float gw[AQ__KQ_SUPER / 16], gx[AQ__KQ_SUPER / 16];

/* Panel p's first vector in a whole-slot array a or a partial-slot array ap, and its length. */
#define KQS_PV(a, ap, p) ((p) < nfp ? (a) + (p)*sub : (ap) + ((p)-nfp) * pnr)
#define KQS_PLEN(p) ((p) < nfp ? sub : pn)

    /* 1. */
    for (size_t p = 0; p < npan; p++) {
        kqs_panel_fit(KQS_PV(xv, xvp, p), wv != NULL ? KQS_PV(wv, wvp, p) : NULL,
                      wv != NULL ? KQS_PV(wx, wxp, p) : NULL, KQS_PLEN(p), bits, &pan[p],
                      s + KQS_VL * p, m + KQS_VL * p);
        kqs_store(tw + KQS_VL * p, pan[p].sw);
        kqs_store(tx + KQS_VL * p, pan[p].sx);
    }

    /* 2: each super-block's d and dmin, given to its slots (slots past the last super-block
     * get zeros), then every slot's codes against its own: one loop of independent
     * divisions over the batch rather than one call per super-block. */
    const double kmax = (double)((1u << aq__kq_param_bits(bits)) - 1u);
    for (size_t j = 0; j < npan * KQS_VL; j++) {
        dl[j] = ml[j] = 0.0f;
    }
    for (size_t b = 0; b < nitems; b++) {
        const size_t nsub = it[b].nfull + (it[b].len % sub != 0);
        double smax = 0.0, mmax = 0.0;
        for (size_t k = 0; k < nsub; k++) {
            const size_t j = kqs_slot(&it[b], k, pb);
            smax = s[j] > smax ? s[j] : smax;
            mmax = -m[j] > mmax ? -m[j] : mmax;
        }
        const float d = aq__kq_param_unit(smax, kmax), dmin = aq__kq_param_unit(mmax, kmax);
        for (size_t k = 0; k < nsub; k++) {
            const size_t j = kqs_slot(&it[b], k, pb);
            dl[j] = d;
            ml[j] = dmin;
        }
    }
    for (size_t j = 0; j < npan * KQS_VL; j++) {
        sc[j] = aq__kq_param_code(s[j], dl[j], kmax);
        mc[j] = aq__kq_param_code(-m[j], ml[j], kmax);
    }

    /* 3. */
    for (size_t p = 0; p < npan; p++) {
        kqs_codes_load(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
        kqs_panel_refine(KQS_PV(xv, xvp, p), wv != NULL ? KQS_PV(wv, wvp, p) : NULL, KQS_PLEN(p),
                         bits, dl + KQS_VL * p, ml + KQS_VL * p, &pan[p]);
        kqs_codes_store(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
    }

    /* 4 and 5: codes, the sums of the refit, one refit and new codes. */
    for (size_t p = 0; p < npan; p++) {
        const kqs_v *xp = KQS_PV(xv, xvp, p), *wp = wv != NULL ? KQS_PV(wv, wvp, p) : NULL;
        const kqs_v *wxq = wv != NULL ? KQS_PV(wx, wxp, p) : xp;
        kqs_v *qq = KQS_PV(qv, qvp, p);
        const size_t n = KQS_PLEN(p);
        kqs_panel_codes(xp, n, bits, dl + KQS_VL * p, ml + KQS_VL * p, &pan[p], qq);
        kqs_v sq = kqs_zero(), sqq = sq, sxq = sq;
        for (size_t i = 0; i < n; i++) {
            const kqs_v wq = wp != NULL ? kqs_mul(wp[i], qq[i]) : qq[i];
            sq = kqs_add(sq, wq);
            sqq = kqs_add(sqq, kqs_mul(wq, qq[i]));
            sxq = kqs_add(sxq, kqs_mul(wxq[i], qq[i]));
        }
        kqs_store(tq + KQS_VL * p, sq);
        kqs_store(tqq + KQS_VL * p, sqq);
        kqs_store(txq + KQS_VL * p, sxq);
    }
    bool refit = false;
    for (size_t b = 0; b < nitems; b++) {
        const size_t nsub = it[b].nfull + (it[b].len % sub != 0);
        if (it[b].len % sub == 0) { /* contiguous */
            const size_t j0 = it[b].j0;
            float d = dl[j0], dmin = ml[j0];
            if (aq__kq_refit(tq + j0, tqq + j0, txq + j0, tw + j0, tx + j0, nsub, sc + j0, mc + j0,
                             &d, &dmin)) {
                for (size_t j = j0; j < j0 + nsub; j++) {
                    dl[j] = d;
                    ml[j] = dmin;
                }
                refit = true;
            }
            continue;
        }
        for (size_t k = 0; k < nsub; k++) {
            const size_t j = kqs_slot(&it[b], k, pb);
            gq[k] = tq[j];
            gqq[k] = tqq[j];
            gxq[k] = txq[j];
            gw[k] = tw[j];
            gx[k] = tx[j];
            gsc[k] = sc[j];
            gmc[k] = mc[j];
        }
        const size_t j0 = kqs_slot(&it[b], 0, pb);
        float d = dl[j0], dmin = ml[j0];
        if (aq__kq_refit(gq, gqq, gxq, gw, gx, nsub, gsc, gmc, &d, &dmin)) {
            for (size_t k = 0; k < nsub; k++) {
                const size_t j = kqs_slot(&it[b], k, pb);
                dl[j] = d;
                ml[j] = dmin;
            }
            refit = true;
        }
    }
    if (refit) {
        for (size_t p = 0; p < npan; p++) {
            kqs_panel_codes(KQS_PV(xv, xvp, p), KQS_PLEN(p), bits, dl + KQS_VL * p, ml + KQS_VL * p,
                            &pan[p], KQS_PV(qv, qvp, p));
        }
    }

    /* Back to slot order (whole slots at q + j * sub, partial ones at qp + k * pnr), then
     * packed. */
    for (size_t p = 0; p < npan; p++) {
        const size_t n = p < nfp ? sub : pnr;
        float *dst = p < nfp ? q + p * KQS_VL * sub : qp + (p - nfp) * KQS_VL * pnr;
        for (size_t c0 = 0; c0 < n; c0 += KQS_VL) {
            kqs_v *r = KQS_PV(qv, qvp, p) + c0;
            kqs_tr(r);
            for (size_t l = 0; l < KQS_VL; l++) {
                kqs_store(dst + l * n + c0, r[l]);
            }
        }
    }
#undef KQS_PV
#undef KQS_PLEN
    memset(q + nfp * KQS_VL * sub, 0, 64 * sizeof(float));
    memset(qp + (npan - nfp) * KQS_VL * pnr, 0, 64 * sizeof(float));
    for (size_t b = 0; b < nitems; b++) {
        const size_t len = it[b].len, bit0 = it[b].bit0, nf = it[b].nfull * sub;
        kqs_put(q + it[b].j0 * sub, nf, bits, codes, bit0);
        if (nps > 0 && len != nf) { /* nf * bits is a whole number of bytes */
            kqs_put(qp + it[b].jp * pnr, len - nf, bits, codes, bit0 + nf * bits);
        }
        const size_t nsub = it[b].nfull + (len % sub != 0);
        for (size_t k = 0; k < nsub; k++) {
            const size_t j = kqs_slot(&it[b], k, pb);
            gsc[k] = sc[j];
            gmc[k] = mc[j];
        }
        aq__kq_put_params(it[b].meta, bits, len, gsc, gmc);
        const size_t j0 = kqs_slot(&it[b], 0, pb);
        *it[b].d_out = dl[j0];
        *it[b].dmin_out = ml[j0];
    }
}

/* Loads nslot slots (slot j at xs[j], its first rows elements used; rows a multiple of
 * KQS_VL) transposed: element i of slot j of panel p in lane j % KQS_VL of out[p * rows + i];
 * lanes past nslot are zero. */
static inline void kqs_load_panels(const float *const *xs, size_t rows, size_t nslot, kqs_v *out)
{
    const size_t npan = (nslot + KQS_VL - 1) / KQS_VL;
    for (size_t p = 0; p < npan; p++) {
        for (size_t c0 = 0; c0 < rows; c0 += KQS_VL) {
            kqs_v *r = out + p * rows + c0;
            for (size_t l = 0; l < KQS_VL; l++) {
                const size_t j = p * KQS_VL + l;
                r[l] = j < nslot ? kqs_load(xs[j] + c0) : kqs_zero();
            }
            kqs_tr(r);
        }
    }
}

/* A batch: the whole slots at xs[j] (and ws[j], weighted: sub elements each, read where they
 * are), the partial slots of pn elements from xp (and wp) at a stride of sub, padded to a
 * multiple of KQS_VL; then the body. */
static void kqs_batch(const float *const *xs, const float *const *ws, const float *xp,
                      const float *wp, unsigned bits, uint8_t *codes, const kqs_item *it,
                      size_t nitems, size_t nfs, size_t nps, size_t pn)
{
    const size_t sub = aq__kq_sub(bits), pnr = (pn + KQS_VL - 1) / KQS_VL * KQS_VL;
    kqs_v xv[KQS_CAP / KQS_VL], xvp[KQS_PPAN * 32];
    const float *ps[KQS_PPAN * KQS_VL];
    kqs_load_panels(xs, sub, nfs, xv);
    for (size_t j = 0; j < nps; j++) {
        ps[j] = xp + j * sub;
    }
    kqs_load_panels(ps, pnr, nps, xvp);
    if (ws == NULL && nps == 0) { /* whole slots only: the partial panels compiled out */
        kqs_batch_body(NULL, NULL, bits, codes, it, nitems, nfs, 0, 0, xv, NULL, xvp, NULL);
        return;
    }
    if (ws == NULL) {
        kqs_batch_body(NULL, NULL, bits, codes, it, nitems, nfs, nps, pn, xv, NULL, xvp, NULL);
        return;
    }
#if KQS_WEIGHTED
    kqs_v wv[KQS_CAP / KQS_VL], wx[KQS_CAP / KQS_VL], wvp[KQS_PPAN * 32], wxp[KQS_PPAN * 32];
    kqs_load_panels(ws, sub, nfs, wv);
    for (size_t j = 0; j < nps; j++) {
        ps[j] = wp + j * sub;
    }
    kqs_load_panels(ps, pnr, nps, wvp);
    const size_t nv = (nfs + KQS_VL - 1) / KQS_VL * sub, nvp = (nps + KQS_VL - 1) / KQS_VL * pnr;
    for (size_t i = 0; i < nv; i++) {
        wx[i] = kqs_mul(wv[i], xv[i]); /* w * x, as the reference rounds it */
    }
    for (size_t i = 0; i < nvp; i++) {
        wxp[i] = kqs_mul(wvp[i], xvp[i]);
    }
    kqs_batch_body(wv, wvp, bits, codes, it, nitems, nfs, nps, pn, xv, wx, xvp, wxp);
#else
    (void)wp;
#endif
}

/* The kquant kernel over a span (aq__quantize_kquant_fn): whole super-blocks one at a time
 * straight from the input, short ones gathered into batches of up to KQS_CAP / sub whole slots
 * and KQS_PCAP partial slots of one length. */
static void kqs_span(const void *src, aq_dtype dtype, const float *importance, const aq__span *s,
                     uint8_t *packed, uint8_t *meta, float *scales, float *mins)
{
    const size_t sub = aq__kq_sub(s->bits);
    const size_t nslots = KQS_CAP / sub;
    const bool weighted = importance != NULL;
    /* Whole slots are read where they are (float32 input and the weights) or from xb
     * (converted); partial slots are copied, zero-padded, at a stride of sub. */
    float xb[KQS_CAP];
    float xpb[KQS_PCAP * 32], wpb[KQS_PCAP * 32];
    const float *xs[KQS_CAP / 16], *ws[KQS_CAP / 16];
    kqs_item it[KQS_CAP / 16 + KQS_PCAP];
    size_t nitems = 0, nfs = 0, nps = 0, pn = 0;
    memset(packed, 0, (s->n * s->bits + 7) / 8);
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        const float *w = weighted ? importance + start : NULL;
        if (!KQS_WEIGHTED && weighted) {
            /* This instruction set has no weighted panels: the reference, one at a time. */
            float x[AQ__KQ_SUPER];
            aq__kq_load(src, dtype, start, len, x);
            aq__kq_super(x, w, len, s->bits, packed, start * s->bits, meta, &scales[group],
                         &mins[group]);
        } else if (len == AQ__KQ_SUPER && start * s->bits % 8 == 0) {
            const kqs_item one = {0,    AQ__KQ_SUPER / sub, 0,           len, start * s->bits,
                                  meta, &scales[group],     &mins[group]};
            const float *x = (const float *)src + start;
            float xf[AQ__KQ_SUPER];
            const float *xo[AQ__KQ_SUPER / 16], *wo[AQ__KQ_SUPER / 16];
            if (dtype != AQ_DTYPE_F32) {
                aq__kq_load(src, dtype, start, len, xf);
                x = xf;
            }
            for (size_t k = 0; k < AQ__KQ_SUPER / sub; k++) {
                xo[k] = x + k * sub;
                wo[k] = weighted ? w + k * sub : NULL;
            }
            kqs_batch(xo, weighted ? wo : NULL, NULL, NULL, s->bits, packed, &one, 1,
                      AQ__KQ_SUPER / sub, 0, 0);
        } else {
            const size_t nfull = len / sub, part = len % sub;
            if (nfs + nfull > nslots ||
                (part != 0 && (nps == KQS_PCAP || (nps > 0 && part != pn)))) {
                kqs_batch(xs, weighted ? ws : NULL, xpb, weighted ? wpb : NULL, s->bits, packed, it,
                          nitems, nfs, nps, pn);
                nitems = nfs = nps = 0;
            }
            const float *x = (const float *)src + start;
            if (dtype != AQ_DTYPE_F32) {
                aq__kq_load(src, dtype, start, nfull * sub, xb + nfs * sub);
                x = xb + nfs * sub;
            }
            for (size_t k = 0; k < nfull; k++) {
                xs[nfs + k] = x + k * sub;
                ws[nfs + k] = weighted ? w + k * sub : NULL;
            }
            if (part != 0) {
                /* The partial slot, zeros up to a multiple of KQS_VL (never read by a step). */
                const size_t pr = (part + KQS_VL - 1) / KQS_VL * KQS_VL;
                float *xd = xpb + nps * sub;
                aq__kq_load(src, dtype, start + nfull * sub, part, xd);
                memset(xd + part, 0, (pr - part) * sizeof(float));
                if (weighted) {
                    memcpy(wpb + nps * sub, w + nfull * sub, part * sizeof(float));
                    memset(wpb + nps * sub + part, 0, (pr - part) * sizeof(float));
                }
                pn = part;
            }
            it[nitems++] = (kqs_item){nfs,  nfull,          nps,         len, start * s->bits,
                                      meta, &scales[group], &mins[group]};
            nfs += nfull;
            nps += part != 0;
        }
        meta += aq__kq_meta_bytes(s->bits, len);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
    if (nitems > 0) {
        kqs_batch(xs, weighted ? ws : NULL, xpb, weighted ? wpb : NULL, s->bits, packed, it, nitems,
                  nfs, nps, pn);
    }
}

#define KQS_ADAPTER(suffix, dtype)                                                       \
    void KQS_EXPORT(suffix)(const void *src, const float *importance, const aq__span *s, \
                            uint8_t *packed, uint8_t *meta, float *scales, float *mins)  \
    {                                                                                    \
        kqs_span(src, dtype, importance, s, packed, meta, scales, mins);                 \
    }

KQS_ADAPTER(f32, AQ_DTYPE_F32)
KQS_ADAPTER(f16, AQ_DTYPE_F16)
KQS_ADAPTER(bf16, AQ_DTYPE_BF16)
KQS_ADAPTER(f64, AQ_DTYPE_F64)
#undef KQS_ADAPTER
