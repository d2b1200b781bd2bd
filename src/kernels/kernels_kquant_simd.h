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
 *   void kqs_panel_refine(xv, wv, mk, n, bits, d, dmin, kqs_panel *)   step 3, from the codes
 *                               (mk: NULL, or per element a lane mask of all ones where the
 *                               element is one of the sub-block's; the others add +0)
 *   void kqs_panel_codes(xv, n, bits, d, dmin, const kqs_panel *, kqs_v *qv)   step 4
 *                               (d, dmin: the KQS_VL lanes' super-block parameters, loaded
 *                               from two float arrays)
 *   void kqs_pack(const float *q, size_t n, unsigned bits, uint8_t *out)   n codes (floats
 *                               holding integers < 2^bits; n a multiple of 64) to n * bits / 8
 *                               bytes
 *
 * Super-blocks shorter than 512 elements (rows of kquant_rows, the last super-block of a
 * tensor) are gathered into batches: each takes the next whole sub-block slots of a 512-float
 * buffer, so the sub-blocks of several short super-blocks share the panels, each lane with its
 * own super-block's d and dmin. Only a super-block's last sub-block can be partial; that one
 * slot is padded with copies of its first value (lo and hi stay). Where KQS_WEIGHTED, a batch
 * with a partial slot runs weighted, weight 1 (or the importance) on every element and exactly
 * 0 on the padding, so that every sum of steps 1 and 5 adds +-0 there (w * x and w * q are
 * +-0 for finite x and q), and step 3 masks the padding's terms, which may be 0 * inf. Without
 * weighted panels, the partial slot's sums are redone over its own elements by the
 * reference's pieces (aq__kq_sub_fit, aq__kq_sub_refine, aq__kq_sub_sums). Codes are per
 * element, so the panel's are right either way. Codes that do not start a byte, or do not end
 * one, are ORed in one at a time.
 */
#ifndef KQS_VL
#    error "define the kquant vocabulary before including kernels_kquant_simd.h"
#endif

/* Elements of a batch of short super-blocks: two super-blocks' worth, so that rows of 320 at 4
 * bits fill 30 of 32 slots (one row would fill 10 of 16). */
#define KQS_CAP (2u * AQ__KQ_SUPER)

/* A super-block of a batch: its first slot (sub-block) and slot count, its length, where its
 * codes, parameters, d and dmin go. */
typedef struct kqs_item {
    size_t j0, nsub, len, bit0;
    uint8_t *meta;
    float *d_out, *dmin_out;
} kqs_item;

/* Steps 1 to 5 over a batch of nitems super-blocks laid out in nslot slots of sub elements
 * (xv, wv, wx: the panels; xs, ws: the same values in slot order, for the partial slots), then
 * the codes packed at codes (zeroed by the caller where ORed). */
static inline __attribute__((always_inline)) void
kqs_batch_body(const kqs_v *wv, const kqs_v *mk, unsigned bits, uint8_t *codes, const kqs_item *it,
               size_t nitems, size_t nslot, kqs_v *xv, const kqs_v *wx, const float *xs,
               const float *ws)
{
    const size_t sub = aq__kq_sub(bits), npan = (nslot + KQS_VL - 1) / KQS_VL;
    kqs_v qv[KQS_CAP / KQS_VL];
    kqs_panel pan[KQS_CAP / 16 / KQS_VL];
    double s[KQS_CAP / 16], m[KQS_CAP / 16];
    unsigned sc[KQS_CAP / 16], mc[KQS_CAP / 16];
    float tq[KQS_CAP / 16], tqq[KQS_CAP / 16], txq[KQS_CAP / 16];
    float tw[KQS_CAP / 16], tx[KQS_CAP / 16];
    float dl[KQS_CAP / 16], ml[KQS_CAP / 16];
    float q[KQS_CAP];

    /* 1. */
    for (size_t p = 0; p < npan; p++) {
        kqs_panel_fit(xv + p * sub, wv != NULL ? wv + p * sub : NULL,
                      wv != NULL ? wx + p * sub : NULL, sub, bits, &pan[p], s + KQS_VL * p,
                      m + KQS_VL * p);
        kqs_store(tw + KQS_VL * p, pan[p].sw);
        kqs_store(tx + KQS_VL * p, pan[p].sx);
    }
    for (size_t b = 0; b < nitems; b++) {
        if (mk == NULL && it[b].len % sub != 0) {
            const size_t j = it[b].j0 + it[b].nsub - 1;
            aq__kq_sub_fit(xs + j * sub, ws != NULL ? ws + j * sub : NULL, it[b].len % sub, bits,
                           &s[j], &m[j], &tw[j], &tx[j]);
        }
    }

    /* 2, per super-block; slots past the last super-block get zeros. */
    for (size_t j = 0; j < npan * KQS_VL; j++) {
        sc[j] = mc[j] = 0;
        dl[j] = ml[j] = 0.0f;
    }
    for (size_t b = 0; b < nitems; b++) {
        const size_t j0 = it[b].j0;
        double smax = 0.0, mmax = 0.0;
        for (size_t j = j0; j < j0 + it[b].nsub; j++) {
            smax = s[j] > smax ? s[j] : smax;
            mmax = -m[j] > mmax ? -m[j] : mmax;
        }
        float d, dmin;
        aq__kq_params(s + j0, m + j0, it[b].nsub, bits, smax, mmax, &d, &dmin, sc + j0, mc + j0);
        for (size_t j = j0; j < j0 + it[b].nsub; j++) {
            dl[j] = d;
            ml[j] = dmin;
        }
    }

    /* 3 (the partial slots from their step-2 codes, in the reference). */
    unsigned psc[KQS_CAP / 16], pmc[KQS_CAP / 16];
    for (size_t b = 0; b < nitems; b++) {
        psc[b] = sc[it[b].j0 + it[b].nsub - 1];
        pmc[b] = mc[it[b].j0 + it[b].nsub - 1];
    }
    for (size_t p = 0; p < npan; p++) {
        kqs_codes_load(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
        kqs_panel_refine(xv + p * sub, wv != NULL ? wv + p * sub : NULL,
                         mk != NULL ? mk + p * sub : NULL, sub, bits, dl + KQS_VL * p,
                         ml + KQS_VL * p, &pan[p]);
        kqs_codes_store(&pan[p], sc + KQS_VL * p, mc + KQS_VL * p);
    }
    bool partial = false;
    for (size_t b = 0; b < nitems; b++) {
        if (mk == NULL && it[b].len % sub != 0) {
            const size_t j = it[b].j0 + it[b].nsub - 1;
            sc[j] = psc[b];
            mc[j] = pmc[b];
            aq__kq_sub_refine(xs + j * sub, ws != NULL ? ws + j * sub : NULL, it[b].len % sub, bits,
                              dl[j], ml[j], &sc[j], &mc[j]);
            kqs_codes_load(&pan[j / KQS_VL], sc + j / KQS_VL * KQS_VL, mc + j / KQS_VL * KQS_VL);
            partial = true;
        }
    }

    /* 4 and 5: codes, the sums of the refit, one refit and new codes. */
    for (size_t p = 0; p < npan; p++) {
        const kqs_v *xp = xv + p * sub;
        kqs_v *qp = qv + p * sub;
        kqs_panel_codes(xp, sub, bits, dl + KQS_VL * p, ml + KQS_VL * p, &pan[p], qp);
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
    bool refit = false;
    for (size_t b = 0; b < nitems; b++) {
        const size_t j0 = it[b].j0, nsub = it[b].nsub;
        if (partial && it[b].len % sub != 0) {
            const size_t j = j0 + nsub - 1;
            aq__kq_sub_sums(xs + j * sub, ws != NULL ? ws + j * sub : NULL, it[b].len % sub, bits,
                            dl[j], ml[j], sc[j], mc[j], &tq[j], &tqq[j], &txq[j]);
        }
        float d = dl[j0], dmin = ml[j0];
        if (aq__kq_refit(tq + j0, tqq + j0, txq + j0, tw + j0, tx + j0, nsub, sc + j0, mc + j0, &d,
                         &dmin)) {
            for (size_t j = j0; j < j0 + nsub; j++) {
                dl[j] = d;
                ml[j] = dmin;
            }
            refit = true;
        }
    }
    if (refit) {
        for (size_t p = 0; p < npan; p++) {
            kqs_panel_codes(xv + p * sub, sub, bits, dl + KQS_VL * p, ml + KQS_VL * p, &pan[p],
                            qv + p * sub);
        }
    }

    /* Back to slot order, then packed. */
    for (size_t p = 0; p < npan; p++) {
        for (size_t c0 = 0; c0 < sub; c0 += KQS_VL) {
            kqs_v *r = qv + p * sub + c0;
            kqs_tr(r);
            for (size_t l = 0; l < KQS_VL; l++) {
                kqs_store(q + (p * KQS_VL + l) * sub + c0, r[l]);
            }
        }
    }
    for (size_t b = 0; b < nitems; b++) {
        const float *qb = q + it[b].j0 * sub;
        const size_t len = it[b].len, bit0 = it[b].bit0;
        /* From a byte boundary: whole bytes of 64 codes, then of 8 / bits; the rest ORed. */
        size_t i = 0;
        if (bit0 % 8 == 0) {
            const size_t n64 = len / 64 * 64, nb = len / 4 * 4;
            if (n64 > 0) {
                kqs_pack(qb, n64, bits, codes + bit0 / 8);
            }
            if (nb > n64) {
                aq__kq_pack_codes(qb + n64, nb - n64, bits, codes + (bit0 + n64 * bits) / 8);
            }
            i = nb;
        }
        for (; i < len; i++) {
            const size_t bit = bit0 + i * bits;
            codes[bit / 8] |= (uint8_t)((unsigned)qb[i] << (bit % 8));
        }
        aq__kq_put_params(it[b].meta, bits, len, sc + it[b].j0, mc + it[b].j0);
        *it[b].d_out = dl[it[b].j0];
        *it[b].dmin_out = ml[it[b].j0];
    }
}

/* Loads nslot sub-blocks of sub values (slot j at x + j * sub) transposed: element i of slot j
 * of panel p in lane j % KQS_VL of out[p * sub + i]; lanes past nslot are zero. */
static inline void kqs_load_panels(const float *x, size_t sub, size_t nslot, kqs_v *out)
{
    const size_t npan = (nslot + KQS_VL - 1) / KQS_VL;
    for (size_t p = 0; p < npan; p++) {
        for (size_t c0 = 0; c0 < sub; c0 += KQS_VL) {
            kqs_v *r = out + p * sub + c0;
            for (size_t l = 0; l < KQS_VL; l++) {
                const size_t j = p * KQS_VL + l;
                r[l] = j < nslot ? kqs_load(x + j * sub + c0) : kqs_zero();
            }
            kqs_tr(r);
        }
    }
}

/* A batch: the panels from x (and w, weighted) in slot order, then the body; masked: the
 * padding of partial slots masked in step 3 (weighted only). */
static void kqs_batch(const float *x, const float *w, bool masked, unsigned bits, uint8_t *codes,
                      const kqs_item *it, size_t nitems, size_t nslot)
{
    const size_t sub = aq__kq_sub(bits);
    kqs_v xv[KQS_CAP / KQS_VL];
    kqs_load_panels(x, sub, nslot, xv);
    if (w == NULL) {
        kqs_batch_body(NULL, NULL, bits, codes, it, nitems, nslot, xv, NULL, x, NULL);
        return;
    }
#if KQS_WEIGHTED
    kqs_v wv[KQS_CAP / KQS_VL], wx[KQS_CAP / KQS_VL];
    kqs_load_panels(w, sub, nslot, wv);
    const size_t nv = (nslot + KQS_VL - 1) / KQS_VL * sub;
    for (size_t i = 0; i < nv; i++) {
        wx[i] = kqs_mul(wv[i], xv[i]); /* w * x, as the reference rounds it */
    }
    if (!masked) {
        kqs_batch_body(wv, NULL, bits, codes, it, nitems, nslot, xv, wx, x, w);
        return;
    }
    union {
        uint32_t u[KQS_CAP];
        float f[KQS_CAP];
    } mb;
    for (size_t b = 0; b < nitems; b++) {
        for (size_t i = 0; i < it[b].nsub * sub; i++) {
            mb.u[it[b].j0 * sub + i] = i < it[b].len ? 0xffffffffu : 0u;
        }
    }
    kqs_v mk[KQS_CAP / KQS_VL];
    kqs_load_panels(mb.f, sub, nslot, mk);
    kqs_batch_body(wv, mk, bits, codes, it, nitems, nslot, xv, wx, x, w);
#else
    (void)masked;
#endif
}

/* The kquant kernel over a span (aq__quantize_kquant_fn): whole super-blocks one at a time
 * straight from the input, short ones gathered into batches of up to KQS_CAP / sub slots. */
static void kqs_span(const void *src, aq_dtype dtype, const float *importance, const aq__span *s,
                     uint8_t *packed, uint8_t *meta, float *scales, float *mins)
{
    const size_t sub = aq__kq_sub(s->bits);
    const size_t nslots = KQS_CAP / sub;
    const bool weighted = importance != NULL;
    float xb[KQS_CAP], wb[KQS_CAP]; /* a batch, slot order */
    kqs_item it[KQS_CAP / 16];
    size_t nitems = 0, used = 0;
    bool partial = false; /* the batch has a partial slot */
    memset(packed, 0, (s->n * s->bits + 7) / 8);
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        const float *w = weighted ? importance + start : NULL;
        const size_t nsub = (len + sub - 1) / sub;
        if (!KQS_WEIGHTED && weighted) {
            /* This instruction set has no weighted panels: the reference, one at a time. */
            float x[AQ__KQ_SUPER];
            aq__kq_load(src, dtype, start, len, x);
            aq__kq_super(x, w, len, s->bits, packed, start * s->bits, meta, &scales[group],
                         &mins[group]);
        } else if (len == AQ__KQ_SUPER && start * s->bits % 8 == 0) {
            const kqs_item one = {0,    AQ__KQ_SUPER / sub, len,         start * s->bits,
                                  meta, &scales[group],     &mins[group]};
            const float *x = (const float *)src + start;
            float xf[AQ__KQ_SUPER];
            if (dtype != AQ_DTYPE_F32) {
                aq__kq_load(src, dtype, start, len, xf);
                x = xf;
            }
            kqs_batch(x, w, false, s->bits, packed, &one, 1, AQ__KQ_SUPER / sub);
        } else {
            if (used + nsub > nslots) {
                kqs_batch(xb, weighted || (KQS_WEIGHTED && partial) ? wb : NULL,
                          KQS_WEIGHTED && partial, s->bits, packed, it, nitems, used);
                nitems = used = 0;
                partial = false;
            }
            aq__kq_load(src, dtype, start, len, xb + used * sub);
            if (weighted) {
                memcpy(wb + used * sub, w, len * sizeof(float));
            } else if (KQS_WEIGHTED && (partial || len % sub != 0)) {
                /* The batch runs weighted from now on: weight 1 on the elements so far. */
                for (size_t i = partial ? used * sub : 0; i < used * sub + len; i++) {
                    wb[i] = 1.0f;
                }
            }
            partial = partial || len % sub != 0;
            /* The partial slot's padding: its first value, weight 0. */
            for (size_t i = len; i < nsub * sub; i++) {
                xb[used * sub + i] = xb[used * sub + (len - len % sub)];
                wb[used * sub + i] = 0.0f;
            }
            it[nitems++] =
                (kqs_item){used, nsub, len, start * s->bits, meta, &scales[group], &mins[group]};
            used += nsub;
        }
        meta += aq__kq_meta_bytes(s->bits, len);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
    if (nitems > 0) {
        kqs_batch(xb, weighted || (KQS_WEIGHTED && partial) ? wb : NULL, KQS_WEIGHTED && partial,
                  s->bits, packed, it, nitems, used);
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
