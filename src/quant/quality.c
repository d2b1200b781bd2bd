/*
 * The drivers of the quality features: the searched-scale and two-level schemes (their
 * layouts, span loops and the kquant dequantizer), the moment-preserving correction, and
 * quantizing a list of tensors with a cosine floor and a size budget (aq_qset).
 */
#include "quant_internal.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The largest magnitude kquant accepts: 2^125, so that a * q - b stays finite. */
#define AQ__KQ_MAX_ABS 0x1p125f

/* ---------------------------------------------------------------------------------------- */
/* Layouts                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Bytes of packed sub-block parameters of one row of a kquant layout. */
static size_t qual_kq_row_meta(const aq_layout *l)
{
    size_t last = l->cols - (l->groups_per_row - 1) * AQ__KQ_SUPER;
    return (l->groups_per_row - 1) * aq__kq_meta_bytes(l->bit_width, AQ__KQ_SUPER) +
           aq__kq_meta_bytes(l->bit_width, last);
}

static size_t qual_code_bytes(const aq_layout *l)
{
    return (l->elements * l->bit_width + 7) / 8;
}

aq_status aq__scheme_layout(const char *name, aq_scheme scheme, const int64_t *shape, size_t ndim,
                            unsigned bit_width, size_t group_size, aq_layout *out, aq_error *err)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    if (t == NULL) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "Layer '%s': unknown scheme %d",
                             aq__name_or_unnamed(name), (int)scheme);
    }
    if (!t->two_level) {
        return aq__quant_layout(name, shape, ndim, bit_width, group_size, out, err);
    }
    aq_layout l;
    aq_status st = aq__quant_layout(name, shape, ndim, bit_width, t->fixed_group, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    if (t->flattened) {
        /* Super-blocks over the flattened tensor (docs/format.md 5.2): one row of all the
         * elements, so only the last super-block may be partial. */
        l.rows = 1;
        l.cols = l.elements;
        l.groups_per_row = l.elements / AQ__KQ_SUPER + (l.elements % AQ__KQ_SUPER != 0);
        l.groups = l.groups_per_row;
    }
    size_t meta;
    if (!aq__mul_size(l.rows, qual_kq_row_meta(&l), &meta) ||
        !aq__add_size(l.packed_bytes, meta, &l.packed_bytes)) {
        return aq__error_set(err, AQ_OVERFLOW, "Layer '%s': quantized size overflows",
                             aq__name_or_unnamed(name));
    }
    *out = l;
    return AQ_OK;
}

aq_status aq_layout_compute_scheme(aq_scheme scheme, const int64_t *shape, size_t ndim,
                                   unsigned bit_width, size_t group_size, aq_layout *out,
                                   aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_layout_compute_scheme: NULL output");
    }
    return aq__scheme_layout(NULL, scheme, shape, ndim, bit_width, group_size, out, err);
}

/* Byte offset, inside the parameter area, of the kquant super-block starting at `start`. */
static size_t qual_kq_meta_offset(const aq_layout *l, size_t start)
{
    size_t row = start / l->cols, j = (start % l->cols) / AQ__KQ_SUPER;
    return row * qual_kq_row_meta(l) + j * aq__kq_meta_bytes(l->bit_width, AQ__KQ_SUPER);
}

/* ---------------------------------------------------------------------------------------- */
/* Quantizing one tensor                                                                    */
/* ---------------------------------------------------------------------------------------- */

static float qual_load(const aq_tensor *t, size_t i)
{
    switch (t->dtype) {
    case AQ_DTYPE_F32:
        return ((const float *)t->data)[i];
    case AQ_DTYPE_F16:
        return aq__f16_to_f32(((const uint16_t *)t->data)[i]);
    case AQ_DTYPE_BF16:
        return aq__bf16_to_f32(((const uint16_t *)t->data)[i]);
    case AQ_DTYPE_F64:
        return (float)((const double *)t->data)[i];
    case AQ_DTYPE_COUNT:
        break;
    }
    return 0.0f;
}

static double qual_kl(double mu, double sigma, double mu_hat, double sigma_hat)
{
    double dm = mu - mu_hat;
    return log(sigma_hat / sigma) + (sigma * sigma + dm * dm) / (2.0 * sigma_hat * sigma_hat) - 0.5;
}

/* Mean and population standard deviation of n values (two passes, double). */
static void qual_moments_f32(const float *x, size_t n, double *mu, double *sigma)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += (double)x[i];
    }
    double m = s / (double)n, v = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - m;
        v += d * d;
    }
    *mu = m;
    *sigma = sqrt(v / (double)n);
}

static void qual_row_moments(const aq_tensor *t, size_t row, size_t cols, double *mu, double *sigma)
{
    double s = 0.0;
    for (size_t i = 0; i < cols; i++) {
        s += (double)qual_load(t, row * cols + i);
    }
    double m = s / (double)cols, v = 0.0;
    for (size_t i = 0; i < cols; i++) {
        double d = (double)qual_load(t, row * cols + i) - m;
        v += d * d;
    }
    *mu = m;
    *sigma = sqrt(v / (double)cols);
}

/* Moment figures and, when asked, the per-row correction of an affine-format result. */
static aq_status qual_moments(aq_ctx *ctx, const aq_tensor *src, const aq_layout *l,
                              const aq_qbuffers *dst, bool correct, aq_quantize_stats *stats,
                              aq_error *err)
{
    aq_status st = AQ_OK;
    float *deq = malloc(l->elements * sizeof *deq);
    double *mu = malloc(l->rows * sizeof *mu), *sigma = malloc(l->rows * sizeof *sigma);
    if (deq == NULL || mu == NULL || sigma == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory for moment figures",
                           aq__name_or_unnamed(src->name));
        goto done;
    }
    aq_qtensor q = {src->name,   ctx->scheme,      l->bit_width, l->group_size,
                    src->shape,  src->ndim,        dst->packed,  l->packed_bytes,
                    dst->scales, dst->zero_points, l->groups};
    if ((st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, deq, l->elements, err)) != AQ_OK) {
        goto done;
    }
    aq_quantize_stats out = {0, 0, 0.0, 0.0};
    for (size_t r = 0; r < l->rows; r++) {
        double mh, sh;
        qual_row_moments(src, r, l->cols, &mu[r], &sigma[r]);
        qual_moments_f32(deq + r * l->cols, l->cols, &mh, &sh);
        if (sigma[r] > 0.0 && sh > 0.0) {
            out.rows++;
            out.kl_before += qual_kl(mu[r], sigma[r], mh, sh);
        }
        if (!correct || !(sigma[r] > 0.0) || !(sh > 0.0)) {
            continue;
        }
        /* x' = a * x_hat + c, folded into every group of the row: scale' = scale * a,
         * zero_point' = zero_point - c / scale'. Applied only if the whole row stays valid. */
        double a = sigma[r] / sh, c = mu[r] - a * mh;
        size_t g0 = r * l->groups_per_row;
        bool valid = true;
        for (size_t g = g0; g < g0 + l->groups_per_row && valid; g++) {
            float s2 = (float)((double)dst->scales[g] * a);
            float z2 = (float)((double)dst->zero_points[g] - c / (double)s2);
            valid = s2 >= 0x1p-126f && s2 <= FLT_MAX && isfinite(z2);
        }
        if (!valid) {
            continue;
        }
        for (size_t g = g0; g < g0 + l->groups_per_row; g++) {
            float s2 = (float)((double)dst->scales[g] * a);
            dst->zero_points[g] = (float)((double)dst->zero_points[g] - c / (double)s2);
            dst->scales[g] = s2;
        }
        out.rows_corrected++;
    }
    out.kl_after = out.kl_before;
    if (out.rows_corrected > 0) {
        if ((st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, deq, l->elements, err)) != AQ_OK) {
            goto done;
        }
        out.kl_after = 0.0;
        for (size_t r = 0; r < l->rows; r++) {
            double mh, sh;
            qual_moments_f32(deq + r * l->cols, l->cols, &mh, &sh);
            if (sigma[r] > 0.0 && sh > 0.0) {
                out.kl_after += qual_kl(mu[r], sigma[r], mh, sh);
            }
        }
    }
    if (out.rows > 0) {
        out.kl_before /= (double)out.rows;
        out.kl_after /= (double)out.rows;
    }
    if (stats != NULL) {
        *stats = out;
    }
done:
    free(deq);
    free(mu);
    free(sigma);
    return st;
}

/* One tensor's spans (the affine driver's, aq__quant_span_at) shared out over the context's
 * threads, one task per span. Spans start at group (super-block) boundaries whose packed
 * position is byte-aligned, so tasks write disjoint bytes and the output does not depend on
 * the thread count. */
typedef struct qual_job {
    const aq_tensor *src;
    const aq_layout *l;
    const aq_qbuffers *dst;
    const float *importance;
    const aq__scheme_traits *t;
    const aq__kernel_table *k;
    size_t elem, code_bytes;
    aq__pool *pool;
    size_t nspans;
    size_t *starts; /* nspans + 1 entries */
    size_t one[2];
    atomic_size_t first_bad; /* the lowest span with a value it refuses; nspans if none */
} qual_job;

/* Elements per span below which a tensor is one span on the calling thread. */
#define QUAL_SPAN_ELEMENTS ((size_t)1 << 16)

static aq_status qual_job_spans(aq_ctx *ctx, qual_job *job, aq_error *err)
{
    const aq_layout *l = job->l;
    job->starts = job->one;
    job->one[0] = 0;
    job->one[1] = l->elements;
    job->nspans = 1;
    if (l->elements <= QUAL_SPAN_ELEMENTS) {
        return AQ_OK;
    }
    size_t n = 0;
    for (size_t start = 0; start < l->elements; n++) {
        start += aq__quant_span_at(l, start).n;
    }
    if (n == 1) {
        return AQ_OK;
    }
    aq_status st = aq__ctx_pool(ctx, &job->pool, err);
    if (st != AQ_OK) {
        return st;
    }
    job->starts = malloc((n + 1) * sizeof *job->starts);
    if (job->starts == NULL) {
        job->starts = job->one;
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory for %zu spans", n);
    }
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        job->starts[i] = start;
        start += aq__quant_span_at(l, start).n;
    }
    job->starts[n] = l->elements;
    job->nspans = n;
    return AQ_OK;
}

/* How many leading elements of t from start (at most n) are surely within kquant's range: n
 * for a float32 span whose magnitudes are all at most 2^125 (checked on the bit patterns, eight
 * at a time, so that it costs little next to the kernel), else 0 (the caller then looks at
 * every element). */
static size_t qual_kq_in_range(const aq_tensor *t, size_t start, size_t n)
{
    if (t->dtype != AQ_DTYPE_F32) {
        return 0;
    }
    const uint32_t limit = 0x7e000000u; /* the bits of 2^125 */
    const float *p = (const float *)t->data + start;
    uint32_t over[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t j = 0; j < 8; j++) {
            uint32_t u;
            memcpy(&u, &p[i + j], sizeof u);
            over[j] |= (uint32_t)((u & 0x7fffffffu) > limit);
        }
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &p[i], sizeof u);
        over[0] |= (uint32_t)((u & 0x7fffffffu) > limit);
    }
    uint32_t any = 0;
    for (size_t j = 0; j < 8; j++) {
        any |= over[j];
    }
    return any != 0 ? 0 : n;
}

/* The values of [start, end) the schemes refuse, in the order a sequential pass reports them:
 * the first NaN/Inf of the span, else (kquant) the first |x| > 2^125. err may be NULL. */
static aq_status qual_span_check(const qual_job *job, size_t start, size_t end, aq_error *err)
{
    const char *name = aq__name_or_unnamed(job->src->name);
    const void *in = (const char *)job->src->data + start * job->elem;
    size_t at = job->k->find_nonfinite[job->src->dtype](in, end - start);
    if (at < end - start) {
        return aq__error_set(err, AQ_NON_FINITE, "Layer '%s' contains NaN or Inf at index %zu",
                             name, start + at);
    }
    if (job->t->max_abs > 0.0f) {
        /* a * q - b must not overflow float32 (docs/format.md 5.2). */
        for (size_t i = start + qual_kq_in_range(job->src, start, end - start); i < end; i++) {
            float v = qual_load(job->src, i);
            if (fabsf(v) > AQ__KQ_MAX_ABS) {
                return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                     "Layer '%s': value %g at index %zu is too large for kquant "
                                     "(|x| must be at most 2^125); use the affine scheme",
                                     name, (double)v, i);
            }
        }
    }
    return AQ_OK;
}

static void qual_task(void *arg, size_t i)
{
    qual_job *job = arg;
    /* Only the lowest failing span is reported: later spans need not run. */
    if (atomic_load_explicit(&job->first_bad, memory_order_relaxed) < i) {
        return;
    }
    const aq_layout *l = job->l;
    const aq_qbuffers *dst = job->dst;
    const size_t start = job->starts[i];
    aq__span s = aq__quant_span_at(l, start);
    size_t g = aq__quant_group_at(l, start);
    const void *in = (const char *)job->src->data + start * job->elem;
    uint8_t *packed = dst->packed + start * l->bit_width / 8;
    const aq__scheme_traits *t = job->t;
    uint8_t *sub =
        t->two_level ? dst->packed + job->code_bytes + qual_kq_meta_offset(l, start) : NULL;
    const float *w = job->importance != NULL ? job->importance + start : NULL;
    bool ok = t->kernel_checks || qual_span_check(job, start, start + s.n, NULL) == AQ_OK;
    ok = ok && t->quantize(job->k, job->src->dtype, in, w, &s, packed, sub, dst->scales + g,
                           dst->zero_points + g);
    if (!ok) {
        size_t cur = atomic_load(&job->first_bad);
        while (i < cur && !atomic_compare_exchange_weak(&job->first_bad, &cur, i)) {
        }
    }
}

aq_status aq_quantize_ex(aq_ctx *ctx, const aq_tensor *src, const aq_quantize_options *opts,
                         const aq_qbuffers *dst, aq_quantize_stats *stats, aq_error *err)
{
    if (ctx == NULL || src == NULL || dst == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_quantize_ex: NULL argument");
    }
    aq_quantize_options own;
    aq_status ost = AQ__OPTS_READ(aq_quantize_options, importance, own, opts, err);
    if (ost != AQ_OK) {
        return ost;
    }
    opts = opts != NULL ? &own : NULL;
    const char *name = aq__name_or_unnamed(src->name);
    if ((unsigned)src->dtype >= AQ_DTYPE_COUNT) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "Layer '%s': unknown dtype %d (expected f32, f16, bf16 or f64)", name,
                             (int)src->dtype);
    }
    if (src->data == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': data is NULL", name);
    }
    aq_layout l;
    aq_status st = aq_quantize_bound(ctx, src, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    if (dst->packed == NULL || dst->scales == NULL || dst->zero_points == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': an output buffer is NULL",
                             name);
    }
    if (dst->packed_capacity < l.packed_bytes || dst->groups_capacity < l.groups) {
        return aq__error_set(err, AQ_BUFFER_TOO_SMALL,
                             "Layer '%s': output needs %zu packed bytes and %zu groups, got %zu "
                             "and %zu",
                             name, l.packed_bytes, l.groups, dst->packed_capacity,
                             dst->groups_capacity);
    }
    if (ctx->preserve_moments && !aq__scheme_traits_of(ctx->scheme)->moments) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "Layer '%s': preserve_moments needs the affine or affine_search "
                             "scheme (kquant offsets cannot absorb a row's mean shift)",
                             name);
    }
    const float *importance = opts != NULL ? opts->importance : NULL;
    if (importance != NULL) {
        for (size_t i = 0; i < l.elements; i++) {
            if (!(importance[i] >= 0.0f && importance[i] <= FLT_MAX)) {
                return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                     "Layer '%s': importance weight at index %zu is %g; it must "
                                     "be finite and >= 0",
                                     name, i, (double)importance[i]);
            }
        }
    }

    qual_job job;
    memset(&job, 0, sizeof job);
    job.src = src;
    job.l = &l;
    job.dst = dst;
    job.importance = importance;
    job.t = aq__scheme_traits_of(ctx->scheme);
    job.k = ctx->kernels;
    job.elem = aq_dtype_size(src->dtype);
    job.code_bytes = qual_code_bytes(&l);
    if ((st = qual_job_spans(ctx, &job, err)) != AQ_OK) {
        return st;
    }
    atomic_init(&job.first_bad, job.nspans);
    aq__pool_run(job.pool, job.nspans, qual_task, &job);
    size_t bad = atomic_load(&job.first_bad);
    if (bad < job.nspans) {
        st = qual_span_check(&job, job.starts[bad], job.starts[bad + 1], err);
    }
    if (job.starts != job.one) {
        free(job.starts);
    }
    if (st != AQ_OK) {
        return st;
    }
    if (stats != NULL || ctx->preserve_moments) {
        return qual_moments(ctx, src, &l, dst, ctx->preserve_moments, stats, err);
    }
    return AQ_OK;
}

/* Dequantizing, every scheme: its spans (whole groups or super-blocks, byte-aligned) run on
 * the context's threads, each through the scheme's dequantize. */
typedef struct qual_dq_job {
    qual_job spans; /* starts and pool */
    const aq_qtensor *src;
    const aq__scheme_traits *t;
    const aq__kernel_table *k;
    aq_dtype out_dtype;
    size_t elem;
    void *out;
} qual_dq_job;

static void qual_dq_task(void *arg, size_t i)
{
    const qual_dq_job *job = arg;
    const aq_layout *l = job->spans.l;
    const size_t start = job->spans.starts[i];
    aq__span s = aq__quant_span_at(l, start);
    size_t g = aq__quant_group_at(l, start);
    const uint8_t *sub =
        job->t->two_level ? job->src->packed + job->spans.code_bytes + qual_kq_meta_offset(l, start)
                          : NULL;
    job->t->dequantize(job->k, job->out_dtype, job->src->packed + start * l->bit_width / 8, sub,
                       job->src->scales + g, job->src->zero_points + g, &s,
                       (char *)job->out + start * job->elem);
}

aq_status aq__dequantize_spans(aq_ctx *ctx, const aq_qtensor *src, const aq_layout *l,
                               aq_dtype out_dtype, void *out, aq_error *err)
{
    qual_dq_job job;
    memset(&job, 0, sizeof job);
    job.t = aq__scheme_traits_of(src->scheme);
    job.k = ctx->kernels;
    job.out_dtype = out_dtype;
    job.src = src;
    job.elem = aq_dtype_size(out_dtype);
    job.out = out;
    job.spans.l = l;
    job.spans.code_bytes = qual_code_bytes(l);
    aq_status st = qual_job_spans(ctx, &job.spans, err);
    if (st != AQ_OK) {
        return st;
    }
    aq__pool_run(job.spans.pool, job.spans.nspans, qual_dq_task, &job);
    if (job.spans.starts != job.spans.one) {
        free(job.spans.starts);
    }
    return AQ_OK;
}

/* Rows [r0, r0 + nr) of a tensor in the flattened kquant layout: the super-blocks that cover
 * them are dequantized into a scratch buffer (their codes, then their sub-block parameters, made
 * contiguous as a one-dimensional tensor of their own) and the rows' elements copied out. */
static aq_status qual_kq_flat_rows(aq_ctx *ctx, const aq_qtensor *src, const aq_layout *l,
                                   size_t r0, size_t nr, aq_dtype out_dtype, void *out,
                                   size_t out_capacity, aq_error *err)
{
    const char *name = aq__name_or_unnamed(src->name);
    aq_layout tl; /* the tensor's own rows */
    aq_status st =
        aq__quant_layout(src->name, src->shape, src->ndim, src->bit_width, AQ__KQ_SUPER, &tl, err);
    if (st != AQ_OK) {
        return st;
    }
    if (nr == 0 || r0 > tl.rows || nr > tl.rows - r0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Layer '%s': rows [%zu, +%zu) are not rows of %zu", name, r0, nr,
                             tl.rows);
    }
    if (r0 == 0 && nr == tl.rows) {
        return aq_dequantize(ctx, src, out_dtype, out, out_capacity, err);
    }
    const size_t e0 = r0 * tl.cols, e1 = e0 + nr * tl.cols;
    if (out_capacity < e1 - e0) {
        return aq__error_set(err, AQ_BUFFER_TOO_SMALL,
                             "Layer '%s': output holds %zu elements, needs %zu", name, out_capacity,
                             e1 - e0);
    }
    const size_t b0 = e0 / AQ__KQ_SUPER, b1 = e1 / AQ__KQ_SUPER + (e1 % AQ__KQ_SUPER != 0);
    const size_t be0 = b0 * AQ__KQ_SUPER;
    const size_t be1 = b1 * AQ__KQ_SUPER < l->elements ? b1 * AQ__KQ_SUPER : l->elements;
    int64_t sub[1] = {(int64_t)(be1 - be0)};
    aq_layout sl;
    memset(&sl, 0, sizeof sl); /* set by aq__scheme_layout; some compilers cannot tell */
    if ((st = aq__scheme_layout(src->name, src->scheme, sub, 1, src->bit_width, AQ__KQ_SUPER, &sl,
                                err)) != AQ_OK) {
        return st;
    }
    const size_t elem = aq_dtype_size(out_dtype);
    const size_t codes = qual_code_bytes(&sl), meta = sl.packed_bytes - codes;
    uint8_t *scratch = malloc(sl.packed_bytes);
    char *buf = malloc((be1 - be0) * (elem > 0 ? elem : 4));
    if (scratch == NULL || buf == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
        goto done;
    }
    /* Whole super-blocks start byte-aligned in both areas (512 codes fill whole bytes). */
    memcpy(scratch, src->packed + be0 * l->bit_width / 8, codes);
    memcpy(scratch + codes,
           src->packed + qual_code_bytes(l) + b0 * aq__kq_meta_bytes(l->bit_width, AQ__KQ_SUPER),
           meta);
    aq_qtensor q = *src;
    q.shape = sub;
    q.ndim = 1;
    q.packed = scratch;
    q.packed_size = sl.packed_bytes;
    q.scales = src->scales + b0;
    q.zero_points = src->zero_points + b0;
    q.groups = sl.groups;
    if ((st = aq_dequantize(ctx, &q, out_dtype, buf, be1 - be0, err)) != AQ_OK) {
        goto done;
    }
    memcpy(out, buf + (e0 - be0) * elem, (e1 - e0) * elem);
done:
    free(scratch);
    free(buf);
    return st;
}

aq_status aq__dequantize_rows(aq_ctx *ctx, const aq_qtensor *src, size_t r0, size_t nr,
                              aq_dtype out_dtype, void *out, size_t out_capacity, aq_error *err)
{
    const char *name = aq__name_or_unnamed(src->name);
    aq_layout l;
    aq_status st = aq__scheme_layout(src->name, src->scheme, src->shape, src->ndim, src->bit_width,
                                     src->group_size, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    if (src->packed_size != l.packed_bytes || src->groups != l.groups) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Layer '%s': %zu packed bytes and %zu groups, expected %zu and %zu "
                             "for %zu elements at %u bits with the %s scheme",
                             name, src->packed_size, src->groups, l.packed_bytes, l.groups,
                             l.elements, l.bit_width, aq_scheme_name(src->scheme));
    }
    const aq__scheme_traits *t = aq__scheme_traits_of(src->scheme);
    if (t->flattened) {
        return qual_kq_flat_rows(ctx, src, &l, r0, nr, out_dtype, out, out_capacity, err);
    }
    if (nr == 0 || r0 > l.rows || nr > l.rows - r0 || (r0 * l.cols * l.bit_width) % 8 != 0 ||
        (r0 + nr != l.rows && (nr * l.cols * l.bit_width) % 8 != 0)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Layer '%s': rows [%zu, +%zu) are not whole, byte-aligned rows of "
                             "%zu",
                             name, r0, nr, l.rows);
    }
    if (r0 == 0 && nr == l.rows) {
        return aq_dequantize(ctx, src, out_dtype, out, out_capacity, err);
    }
    int64_t sub[AQ_MAX_NDIM];
    memcpy(sub, src->shape, src->ndim * sizeof(int64_t));
    sub[0] = (int64_t)nr; /* several rows imply ndim >= 2 */
    aq_layout sl;
    if ((st = aq__scheme_layout(src->name, src->scheme, sub, src->ndim, src->bit_width,
                                src->group_size, &sl, err)) != AQ_OK) {
        return st;
    }
    size_t start = r0 * l.cols;
    aq_qtensor q = *src;
    q.shape = sub;
    q.packed = src->packed + start * l.bit_width / 8;
    q.packed_size = sl.packed_bytes;
    q.scales = src->scales + r0 * l.groups_per_row;
    q.zero_points = src->zero_points + r0 * l.groups_per_row;
    q.groups = sl.groups;
    if (!t->two_level) {
        return aq_dequantize(ctx, &q, out_dtype, out, out_capacity, err);
    }
    /* Codes of the rows, then their sub-block parameters, made contiguous. */
    size_t codes = qual_code_bytes(&sl), meta = sl.packed_bytes - codes;
    uint8_t *scratch = malloc(sl.packed_bytes);
    if (scratch == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
    }
    memcpy(scratch, q.packed, codes);
    memcpy(scratch + codes, src->packed + qual_code_bytes(&l) + r0 * qual_kq_row_meta(&l), meta);
    q.packed = scratch;
    st = aq_dequantize(ctx, &q, out_dtype, out, out_capacity, err);
    free(scratch);
    return st;
}
