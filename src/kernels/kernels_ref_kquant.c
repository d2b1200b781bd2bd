/*
 * Reference kernels of the two-level scheme "kquant" (docs/format.md section 5.2). A
 * super-block of up to 512 elements of a row holds sub-blocks of 16 (2 bits) or 32 (4 and 8
 * bits) elements; each sub-block has its own scale and min, quantized to 4 or 6 bits against
 * the super-block's float32 d and dmin:
 *
 *     x_hat = (d * sc) * q - (dmin * mc)
 *
 * Super-blocks are at most 512 elements, so a kernel converts one into a float32 buffer on
 * its stack and works there; nothing is allocated.
 *
 * Every per-element sum is a float32 sum over one sub-block in element order, so a SIMD kernel
 * that gives each sub-block its own lane (kernels_kquant_avx512.c) adds the same terms in the
 * same order and gets the same bits without horizontal reductions.
 */
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

static float kq_code(float u, float qmax)
{
    u = u > 0.0f ? u : 0.0f;
    u = u < qmax ? u : qmax;
    return (u + 0x1p23f) - 0x1p23f;
}

static unsigned kq_get_bits(const uint8_t *stream, size_t bit, unsigned width)
{
    unsigned v = 0;
    for (unsigned k = 0; k < width; k++) {
        v |= (((unsigned)stream[(bit + k) / 8] >> ((bit + k) % 8)) & 1u) << k;
    }
    return v;
}

/* The search of step 1 over one sub-block of n elements (docs/format.md 5.2): float32 sums in
 * element order, the fit of each candidate in double. Returns false when no candidate is
 * valid. */
static bool kq_search(const float *x, const float *w, size_t n, float qmax, float lo, float hi,
                      float sw, float sx, float sxx, double *scale, double *offset)
{
    const double range = (double)hi - (double)lo;
    const double SW = (double)sw, SX = (double)sx, SXX = (double)sxx;
    bool found = false;
    double best_e = 0.0, best_s = 0.0, best_m = 0.0;
    for (unsigned c = 0; c < AQ__KQ_CANDIDATES; c++) {
        const double levels = (double)qmax - 1.0 + (double)c * 0.25;
        const float inv = (float)(levels / range);
        if (!(inv <= FLT_MAX)) {
            continue;
        }
        float sq = 0.0f, sqq = 0.0f, sxq = 0.0f;
        for (size_t i = 0; i < n; i++) {
            const float W = w != NULL ? w[i] : 1.0f;
            const float q = kq_code((x[i] - lo) * inv, qmax);
            sq += W * q;
            sqq += (W * q) * q;
            sxq += (W * x[i]) * q;
        }
        double s, m, e;
        if (!aq__fit_candidate(SW, SX, SXX, (double)sq, (double)sqq, (double)sxq, true, &s, &m,
                               &e)) {
            continue;
        }
        if (!found || e < best_e) {
            found = true;
            best_e = e;
            best_s = s;
            best_m = m;
        }
    }
    if (found) {
        *scale = best_s;
        *offset = best_m;
    }
    return found;
}

/* Weighted squared error of one sub-block for parameter codes (sc, mc), codes re-rounded
 * (step 3), summed in float32 in element order. */
static float kq_sub_error(const float *x, const float *w, size_t n, float qmax, float d, float dmin,
                          unsigned sc, unsigned mc)
{
    const float a = d * (float)sc;
    const float b = dmin * (float)mc;
    const float inv = a > 0.0f ? 1.0f / a : 0.0f; /* inv == 0 makes every code 0 */
    float e = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float W = w != NULL ? w[i] : 1.0f;
        const float q = kq_code((x[i] + b) * inv, qmax);
        const float r = x[i] - (a * q - b);
        e += (W * r) * r;
    }
    return e;
}

/* Step 3 for one sub-block: the best (sc, mc) among the rounded codes and their eight
 * neighbours, compared with the original pair's neighbours only. */
static void kq_refine(const float *x, const float *w, size_t n, unsigned bits, float d, float dmin,
                      unsigned *sc, unsigned *mc)
{
    const float qmax = (float)((1u << bits) - 1u);
    const int kmax = (int)((1u << aq__kq_param_bits(bits)) - 1u);
    const unsigned s0 = *sc, m0 = *mc;
    unsigned bs = s0, bm = m0;
    float best = kq_sub_error(x, w, n, qmax, d, dmin, bs, bm);
    for (int ds = -1; ds <= 1; ds++) {
        for (int dm = -1; dm <= 1; dm++) {
            int cs = (int)s0 + ds, cm = (int)m0 + dm;
            if ((ds == 0 && dm == 0) || cs < 0 || cm < 0 || cs > kmax || cm > kmax) {
                continue;
            }
            float e = kq_sub_error(x, w, n, qmax, d, dmin, (unsigned)cs, (unsigned)cm);
            if (e < best) {
                best = e;
                bs = (unsigned)cs;
                bm = (unsigned)cm;
            }
        }
    }
    *sc = bs;
    *mc = bm;
}

/* Codes of a super-block for the quantized parameters (step 4): q = code((x + b) * inv). */
static void kq_codes(const float *x, size_t len, size_t sub, float qmax, float d, float dmin,
                     const unsigned *sc, const unsigned *mc, float *q)
{
    for (size_t j0 = 0, j = 0; j0 < len; j0 += sub, j++) {
        size_t n = len - j0 < sub ? len - j0 : sub;
        const float a = d * (float)sc[j];
        const float b = dmin * (float)mc[j];
        const float inv = a > 0.0f ? 1.0f / a : 0.0f;
        for (size_t i = 0; i < n; i++) {
            q[j0 + i] = kq_code((x[j0 + i] + b) * inv, qmax);
        }
    }
}

/* Step 1 for one sub-block of n elements: the fit s, m and the sums of w and w * x. */
static void kq_sub_fit(const float *x, const float *w, size_t n, unsigned bits, double *s,
                       double *m, float *tw, float *tx)
{
    const float qmax = (float)((1u << bits) - 1u);
    float lo = x[0], hi = x[0];
    float sw = 0.0f, sx = 0.0f, sxx = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float W = w != NULL ? w[i] : 1.0f;
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        sw += W;
        sx += W * x[i];
        sxx += (W * x[i]) * x[i];
    }
    lo = (lo < 0.0f ? lo : 0.0f) + 0.0f;
    hi = hi + 0.0f;
    *tw = sw;
    *tx = sx;
    if (hi <= lo) {
        *s = 0.0;
        *m = (double)lo;
    } else if (!kq_search(x, w, n, qmax, lo, hi, sw, sx, sxx, s, m)) {
        *s = ((double)hi - (double)lo) / (double)qmax;
        *m = (double)lo;
    }
}

bool aq__kq_refit_solve(double saa, double sab, double sbb, double sxa, double sxb, float *d,
                        float *dmin)
{
    double det = saa * sbb - sab * sab;
    double nd, ne;
    if (det > 0.0) {
        nd = (sxa * sbb - sab * sxb) / det;
        ne = (sab * sxa - saa * sxb) / det;
    } else if (sbb == 0.0 && saa > 0.0) {
        nd = sxa / saa;
        ne = (double)*dmin;
    } else {
        return false;
    }
    if (!(nd > 0.0) || !(ne >= 0.0) || !isfinite(nd) || !isfinite(ne)) {
        return false;
    }
    float fd = (float)nd;
    if (!(fd >= 0x1p-126f)) {
        fd = 0x1p-126f;
    }
    float fe = (float)ne;
    if (!(fd <= FLT_MAX) || !(fe <= FLT_MAX)) {
        return false;
    }
    *d = fd;
    *dmin = fe;
    return true;
}

bool aq__kq_refit(const float *tq, const float *tqq, const float *txq, const float *tw,
                  const float *tx, size_t nsub, const unsigned *sc, const unsigned *mc, float *d,
                  float *dmin)
{
    double saa = 0.0, sab = 0.0, sbb = 0.0, sxa = 0.0, sxb = 0.0;
    for (size_t j = 0; j < nsub; j++) {
        const double S = (double)sc[j], B = (double)mc[j];
        saa += (S * S) * (double)tqq[j];
        sab += (S * B) * (double)tq[j];
        sbb += (B * B) * (double)tw[j];
        sxa += S * (double)txq[j];
        sxb += B * (double)tx[j];
    }
    return aq__kq_refit_solve(saa, sab, sbb, sxa, sxb, d, dmin);
}

void aq__kq_params(const double *s, const double *m, size_t nsub, unsigned bits, double smax,
                   double mmax, float *d_out, float *dmin_out, unsigned *sc, unsigned *mc)
{
    const double kmax = (double)((1u << aq__kq_param_bits(bits)) - 1u);
    const float d = aq__kq_param_unit(smax, kmax), dmin = aq__kq_param_unit(mmax, kmax);
    for (size_t j = 0; j < nsub; j++) {
        /* s >= 0 and m <= 0 (step 1's constraint), so both quotients are >= 0 or -0. */
        sc[j] = aq__kq_param_code(s[j], d, kmax);
        mc[j] = aq__kq_param_code(-m[j], dmin, kmax);
    }
    *d_out = d;
    *dmin_out = dmin;
}

void aq__kq_put_params(uint8_t *meta, unsigned bits, size_t len, const unsigned *sc,
                       const unsigned *mc)
{
    /* The lsb-first stream of docs/format.md 5.2, a byte at a time (values are < 2^pbits). */
    const unsigned pbits = aq__kq_param_bits(bits);
    const size_t sub = aq__kq_sub(bits);
    const size_t nsub = len / sub + (len % sub != 0);
    uint64_t acc = 0;
    unsigned held = 0;
    size_t out = 0;
    for (size_t j = 0; j < nsub; j++) {
        acc |= (uint64_t)sc[j] << held;
        acc |= (uint64_t)mc[j] << (held + pbits);
        held += 2 * pbits;
        while (held >= 8) {
            meta[out++] = (uint8_t)acc;
            acc >>= 8;
            held -= 8;
        }
    }
    if (held > 0) {
        meta[out++] = (uint8_t)acc;
    }
}

/* One super-block of len elements (float32, finite); codes go at bits bit0 + i * bits of
 * codes, the sub-block parameters at meta (written whole). */
void aq__kq_super(const float *x, const float *w, size_t len, unsigned bits, uint8_t *codes,
                  size_t bit0, uint8_t *meta, float *d_out, float *dmin_out)
{
    const size_t sub = aq__kq_sub(bits);
    const float qmax = (float)((1u << bits) - 1u);
    const size_t nsub = len / sub + (len % sub != 0);
    double s[AQ__KQ_SUPER / 16] = {0}, m[AQ__KQ_SUPER / 16] = {0};
    float tw[AQ__KQ_SUPER / 16] = {0}, tx[AQ__KQ_SUPER / 16] = {0};
    float tq[AQ__KQ_SUPER / 16] = {0}, tqq[AQ__KQ_SUPER / 16] = {0}, txq[AQ__KQ_SUPER / 16] = {0};
    unsigned sc[AQ__KQ_SUPER / 16], mc[AQ__KQ_SUPER / 16];
    float q[AQ__KQ_SUPER];

    /* 1. Each sub-block: its sums, then the search with a non-positive offset. */
    double smax = 0.0, mmax = 0.0;
    for (size_t j = 0; j < nsub; j++) {
        const size_t j0 = j * sub;
        const size_t n = len - j0 < sub ? len - j0 : sub;
        kq_sub_fit(x + j0, w != NULL ? w + j0 : NULL, n, bits, &s[j], &m[j], &tw[j], &tx[j]);
        smax = s[j] > smax ? s[j] : smax;
        mmax = -m[j] > mmax ? -m[j] : mmax;
    }

    /* 2. The super-block's d and dmin, and the sub-block codes. */
    float d, dmin;
    aq__kq_params(s, m, nsub, bits, smax, mmax, &d, &dmin, sc, mc);

    /* 3. Each sub-block: the best (sc, mc) among the rounded codes and their neighbours. */
    for (size_t j = 0; j < nsub; j++) {
        const size_t j0 = j * sub;
        const size_t n = len - j0 < sub ? len - j0 : sub;
        kq_refine(x + j0, w != NULL ? w + j0 : NULL, n, bits, d, dmin, &sc[j], &mc[j]);
    }

    /* 4 and 5. Codes, then one least-squares refit of d and dmin followed by new codes. */
    kq_codes(x, len, sub, qmax, d, dmin, sc, mc, q);
    for (size_t j = 0; j < nsub; j++) {
        const size_t j0 = j * sub;
        const size_t n = len - j0 < sub ? len - j0 : sub;
        float sq = 0.0f, sqq = 0.0f, sxq = 0.0f;
        for (size_t i = j0; i < j0 + n; i++) {
            const float W = w != NULL ? w[i] : 1.0f;
            sq += W * q[i];
            sqq += (W * q[i]) * q[i];
            sxq += (W * x[i]) * q[i];
        }
        tq[j] = sq;
        tqq[j] = sqq;
        txq[j] = sxq;
    }
    if (aq__kq_refit(tq, tqq, txq, tw, tx, nsub, sc, mc, &d, &dmin)) {
        kq_codes(x, len, sub, qmax, d, dmin, sc, mc, q);
    }

    for (size_t i = 0; i < len; i++) {
        size_t bit = bit0 + i * bits;
        codes[bit / 8] |= (uint8_t)((unsigned)q[i] << (bit % 8));
    }
    aq__kq_put_params(meta, bits, len, sc, mc);
    *d_out = d;
    *dmin_out = dmin;
}

static void kq_load(const void *src, aq_dtype dtype, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case AQ_DTYPE_F32:
            out[i] = ((const float *)src)[i];
            break;
        case AQ_DTYPE_F16:
            out[i] = aq__f16_to_f32(((const uint16_t *)src)[i]);
            break;
        case AQ_DTYPE_BF16:
            out[i] = aq__bf16_to_f32(((const uint16_t *)src)[i]);
            break;
        case AQ_DTYPE_F64:
            out[i] = (float)((const double *)src)[i];
            break;
        case AQ_DTYPE_COUNT:
            out[i] = 0.0f;
            break;
        }
    }
}

void aq__kq_load(const void *src, aq_dtype dtype, size_t start, size_t n, float *out)
{
    if (dtype == AQ_DTYPE_F32) {
        memcpy(out, (const float *)src + start, n * sizeof(float));
        return;
    }
    kq_load((const char *)src + start * aq_dtype_size(dtype), dtype, n, out);
}

void aq__kquant_span(aq__kq_super_fn super, const void *src, aq_dtype dtype,
                     const float *importance, const aq__span *s, uint8_t *packed, uint8_t *meta,
                     float *scales, float *mins)
{
    const size_t elem = aq_dtype_size(dtype);
    float x[AQ__KQ_SUPER];
    memset(packed, 0, (s->n * s->bits + 7) / 8);
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        const float *w = importance != NULL ? importance + start : NULL;
        if (dtype == AQ_DTYPE_F32) {
            super((const float *)src + start, w, len, s->bits, packed, start * s->bits, meta,
                  &scales[group], &mins[group]);
        } else {
            kq_load((const char *)src + start * elem, dtype, len, x);
            super(x, w, len, s->bits, packed, start * s->bits, meta, &scales[group], &mins[group]);
        }
        meta += aq__kq_meta_bytes(s->bits, len);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
}

/* Writes n float32 values as out_dtype (round to nearest even for f16 and bf16). */
static void kq_store(const float *v, size_t n, aq_dtype out_dtype, void *dst)
{
    switch (out_dtype) {
    case AQ_DTYPE_F32:
        memcpy(dst, v, n * sizeof(float));
        break;
    case AQ_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            ((uint16_t *)dst)[i] = aq__f32_to_f16(v[i]);
        }
        break;
    case AQ_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            ((uint16_t *)dst)[i] = aq__f32_to_bf16(v[i]);
        }
        break;
    case AQ_DTYPE_F64:
    case AQ_DTYPE_COUNT:
        break;
    }
}

/* Codes e0 .. e0 + n - 1 of a packed stream (docs/format.md section 5), byte by byte when
 * the first one starts a byte. */
static void kq_unpack(const uint8_t *packed, size_t e0, size_t n, unsigned bits, unsigned mask,
                      uint8_t *q)
{
    size_t bit = e0 * bits;
    if (bit % 8 == 0) {
        const uint8_t *p = packed + bit / 8;
        switch (bits) {
        case 8:
            memcpy(q, p, n);
            return;
        case 4:
            for (size_t k = 0; k < n / 2; k++) {
                q[2 * k] = (uint8_t)(p[k] & 15u);
                q[2 * k + 1] = (uint8_t)(p[k] >> 4);
            }
            if (n % 2 != 0) {
                q[n - 1] = (uint8_t)(p[n / 2] & 15u);
            }
            return;
        default:
            for (size_t k = 0; k < n / 4; k++) {
                q[4 * k] = (uint8_t)(p[k] & 3u);
                q[4 * k + 1] = (uint8_t)((p[k] >> 2) & 3u);
                q[4 * k + 2] = (uint8_t)((p[k] >> 4) & 3u);
                q[4 * k + 3] = (uint8_t)(p[k] >> 6);
            }
            for (size_t k = n / 4 * 4; k < n; k++) {
                q[k] = (uint8_t)(((unsigned)p[k / 4] >> (2 * (k % 4))) & 3u);
            }
            return;
        }
    }
    for (size_t t = 0; t < n; t++, bit += bits) {
        q[t] = (uint8_t)(((unsigned)packed[bit / 8] >> (bit % 8)) & mask);
    }
}

static void kq_dequantize(const uint8_t *packed, const uint8_t *meta, const float *scales,
                          const float *mins, const aq__span *s, aq_dtype out_dtype, void *dst)
{
    const size_t sub = aq__kq_sub(s->bits);
    const unsigned pbits = aq__kq_param_bits(s->bits);
    const unsigned mask = (1u << s->bits) - 1u;
    const size_t elem = out_dtype == AQ_DTYPE_F32 ? 4 : 2;
    float v[32]; /* one sub-block: aq__kq_sub is 16 or 32 */
    uint8_t q[32];
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
        if (len > s->n - start) {
            len = s->n - start;
        }
        for (size_t j0 = 0, j = 0; j0 < len; j0 += sub, j++) {
            size_t n = len - j0 < sub ? len - j0 : sub;
            float a = scales[group] * (float)kq_get_bits(meta, 2 * j * pbits, pbits);
            float b = mins[group] * (float)kq_get_bits(meta, (2 * j + 1) * pbits, pbits);
            const size_t e0 = start + j0;
            kq_unpack(packed, e0, n, s->bits, mask, q);
            /* f32 straight to the output; the loop is left to the auto-vectoriser. */
            float *o = out_dtype == AQ_DTYPE_F32 ? (float *)dst + e0 : v;
            for (size_t t = 0; t < n; t++) {
                o[t] = a * (float)q[t] - b;
            }
            if (out_dtype != AQ_DTYPE_F32) {
                kq_store(v, n, out_dtype, (char *)dst + e0 * elem);
            }
        }
        meta += aq__kq_meta_bytes(s->bits, len);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
}

static void kq_super_ref(const float *x, const float *w, size_t len, unsigned bits, uint8_t *codes,
                         size_t bit0, uint8_t *meta, float *d_out, float *dmin_out)
{
    aq__kq_super(x, w, len, bits, codes, bit0, meta, d_out, dmin_out);
}

#define KQ_ADAPTERS(suffix, dtype)                                                            \
    void aq__quantize_kquant_ref_##suffix(const void *src, const float *importance,           \
                                          const aq__span *s, uint8_t *packed, uint8_t *meta,  \
                                          float *scales, float *mins)                         \
    {                                                                                         \
        aq__kquant_span(kq_super_ref, src, dtype, importance, s, packed, meta, scales, mins); \
    }

KQ_ADAPTERS(f32, AQ_DTYPE_F32)
KQ_ADAPTERS(f16, AQ_DTYPE_F16)
KQ_ADAPTERS(bf16, AQ_DTYPE_BF16)
KQ_ADAPTERS(f64, AQ_DTYPE_F64)

#define KQ_DEQUANT(suffix, dtype)                                                       \
    void aq__dequantize_kquant_ref_##suffix(const uint8_t *packed, const uint8_t *meta, \
                                            const float *scales, const float *mins,     \
                                            const aq__span *s, void *dst)               \
    {                                                                                   \
        kq_dequantize(packed, meta, scales, mins, s, dtype, dst);                       \
    }

KQ_DEQUANT(f32, AQ_DTYPE_F32)
KQ_DEQUANT(f16, AQ_DTYPE_F16)
KQ_DEQUANT(bf16, AQ_DTYPE_BF16)
