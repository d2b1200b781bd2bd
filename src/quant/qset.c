/*
 * Quantizing a list of tensors with a cosine floor (fallback to more bits) and a size budget
 * (mixed precision chosen greedily by squared error saved per byte).
 */
#include "pipeline.h"

#include <math.h>
#include <stdlib.h>

typedef struct qset_item {
    aq_qset_choice choice;
    const char *name;
    int64_t shape[AQ_MAX_NDIM];
    size_t ndim;
    aq_layout layout;
    uint8_t *packed;
    float *scales;
    float *zero_points;
} qset_item;

struct aq_qset {
    size_t n;
    qset_item *items;
};

static void qset_item_reset(qset_item *it)
{
    free(it->packed);
    free(it->scales);
    free(it->zero_points);
    it->packed = NULL;
    it->scales = NULL;
    it->zero_points = NULL;
}

void aq_qset_free(aq_qset *set)
{
    if (set == NULL) {
        return;
    }
    for (size_t i = 0; i < set->n; i++) {
        qset_item_reset(&set->items[i]);
    }
    free(set->items);
    free(set);
}

size_t aq_qset_count(const aq_qset *set)
{
    return set != NULL ? set->n : 0;
}

aq_status aq_qset_get(const aq_qset *set, size_t i, aq_qset_choice *choice, aq_qtensor *tensor,
                      aq_error *err)
{
    if (set == NULL || i >= set->n) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qset_get: index %zu out of range", i);
    }
    const qset_item *it = &set->items[i];
    if (choice != NULL) {
        *choice = it->choice;
    }
    if (tensor != NULL) {
        aq_qtensor q = {
            it->name,   it->choice.scheme, it->layout.bit_width, it->layout.group_size,
            it->shape,  it->ndim,          it->packed,           it->layout.packed_bytes,
            it->scales, it->zero_points,   it->layout.groups};
        *tensor = q;
    }
    return AQ_OK;
}

void aq_qset_totals(const aq_qset *set, size_t *bytes, size_t *elements)
{
    size_t b = 0, e = 0;
    for (size_t i = 0; set != NULL && i < set->n; i++) {
        b += set->items[i].choice.bytes;
        e += set->items[i].layout.elements;
    }
    if (bytes != NULL) {
        *bytes = b;
    }
    if (elements != NULL) {
        *elements = e;
    }
}

/* Quantizes t with (scheme, bits) into it's own buffers (replacing any) and measures it. */
static aq_status qset_run(aq_ctx *ctx, const aq_tensor *t, const float *importance,
                          aq_scheme scheme, unsigned bits, double min_cosine, qset_item *it,
                          aq_error *err)
{
    aq_ctx tmp = *ctx;
    tmp.scheme = scheme;
    tmp.bit_width = bits;
    aq_layout l;
    aq_status st = aq_quantize_bound(&tmp, t, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    qset_item_reset(it);
    float *deq = NULL;
    it->packed = malloc(l.packed_bytes);
    it->scales = malloc(l.groups * sizeof(float));
    it->zero_points = malloc(l.groups * sizeof(float));
    deq = malloc(l.elements * sizeof(float));
    if (it->packed == NULL || it->scales == NULL || it->zero_points == NULL || deq == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory",
                           aq__name_or_unnamed(t->name));
        goto done;
    }
    aq_qbuffers b = {it->packed, l.packed_bytes, it->scales, it->zero_points, l.groups};
    aq_quantize_options o = {.size = sizeof(aq_quantize_options), .importance = importance};
    if ((st = aq_quantize_ex(&tmp, t, &o, &b, NULL, err)) != AQ_OK) {
        goto done;
    }
    aq_qtensor q = {t->name,    scheme,         l.bit_width, l.group_size,    t->shape, t->ndim,
                    it->packed, l.packed_bytes, it->scales,  it->zero_points, l.groups};
    if ((st = aq_dequantize(&tmp, &q, AQ_DTYPE_F32, deq, l.elements, err)) != AQ_OK) {
        goto done;
    }
    aq_tensor r = {t->name, AQ_DTYPE_F32, deq, t->shape, t->ndim};
    if ((st = aq_metrics_compute(t, &r, &it->choice.metrics, err)) != AQ_OK) {
        goto done;
    }
    it->layout = l;
    it->choice.scheme = scheme;
    it->choice.bit_width = bits;
    it->choice.bytes = l.packed_bytes + 2 * l.groups * sizeof(float);
    it->choice.bits_per_weight = (double)it->choice.bytes * 8.0 / (double)l.elements;
    it->choice.meets_min_cosine = !(min_cosine > 0.0) || it->choice.metrics.cosine >= min_cosine;
done:
    free(deq);
    if (st != AQ_OK) {
        qset_item_reset(it);
    }
    return st;
}

/* One attempt of the floor (aq__floor_run): t at `bits` in the context's scheme. */
typedef struct qset_attempt {
    aq_ctx *ctx;
    const aq_tensor *t;
    const float *importance;
    double min_cosine;
    qset_item *it;
} qset_attempt;

static aq_status qset_attempt_at(void *user, unsigned bits, double *cosine, aq_error *err)
{
    qset_attempt *a = user;
    aq_status st =
        qset_run(a->ctx, a->t, a->importance, a->ctx->scheme, bits, a->min_cosine, a->it, err);
    *cosine = a->it->choice.metrics.cosine;
    return st;
}

typedef aq__budget_option qset_option;

static const unsigned qset_bits[3] = {2, 4, 8};

/* Tensor i is done: tells the caller's progress function, which may stop the call. */
static aq_status qset_progress(const aq_qset_options *opts, size_t i, const aq_tensor *tensors,
                               size_t *done_elements, aq_error *err)
{
    size_t count = 0;
    if (aq__shape_elements(tensors[i].name, tensors[i].shape, tensors[i].ndim, &count, NULL) ==
        AQ_OK) {
        *done_elements += count;
    }
    if (opts != NULL && opts->progress != NULL &&
        opts->progress(opts->progress_user, i + 1, *done_elements) != 0) {
        return aq__error_set(err, AQ_CANCELLED,
                             "cancelled by the progress callback after %zu tensors", i + 1);
    }
    return AQ_OK;
}

/* The caller's options (NULL: every default) read into *o, and their bounds checked. */
static aq_status qset_read_options(const aq_qset_options *opts, aq_qset_options *o, aq_error *err)
{
    aq_status st = AQ__OPTS_READ(aq_qset_options, progress_user, *o, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    if (!(o->min_cosine >= 0.0 && o->min_cosine <= 1.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid min_cosine: %g. Must be between 0 (off) and 1",
                             o->min_cosine);
    }
    if (!(o->target_bpw >= 0.0 && o->target_bpw <= 64.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. Must be between 0 (off) and 64",
                             o->target_bpw);
    }
    return AQ_OK;
}

aq_status aq_qset_quantize(aq_ctx *ctx, const aq_tensor *tensors, size_t n,
                           const aq_qset_options *opts, aq_qset **out, aq_error *err)
{
    if (ctx == NULL || out == NULL || (n > 0 && tensors == NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qset_quantize: NULL argument");
    }
    aq_qset_options read;
    aq_status ost = qset_read_options(opts, &read, err);
    if (ost != AQ_OK) {
        return ost;
    }
    opts = opts != NULL ? &read : NULL;
    const double min_cos = read.min_cosine;
    const double target = read.target_bpw;
    /* qset_run quantizes through copies of the context, which must share its thread pool:
     * create it now, so that no copy creates (and leaks) one of its own. */
    aq__pool *pool;
    aq_status pst = aq__ctx_pool(ctx, &pool, err);
    if (pst != AQ_OK) {
        return pst;
    }
    aq_scheme own = ctx->scheme;
    const aq_scheme *schemes = &own;
    size_t n_schemes = 1;
    if (opts != NULL && opts->schemes != NULL && opts->n_schemes > 0) {
        schemes = opts->schemes;
        n_schemes = opts->n_schemes;
        for (size_t s = 0; s < n_schemes; s++) {
            if ((unsigned)schemes[s] >= AQ_SCHEME_COUNT) {
                return aq__error_set(err, AQ_INVALID_PARAMETER,
                                     "Invalid scheme %d in the budget's scheme list",
                                     (int)schemes[s]);
            }
        }
    }
    aq_status st = AQ_OK;
    qset_option *opt = NULL;
    size_t *count = NULL, *pos = NULL;
    aq_qset *set = calloc(1, sizeof *set);
    if (set == NULL || (n > 0 && (set->items = calloc(n, sizeof *set->items)) == NULL)) {
        st = aq__error_set(err, AQ_NO_MEMORY, "aq_qset_quantize: out of memory");
        goto done;
    }
    set->n = n;
    for (size_t i = 0; i < n; i++) {
        const aq_tensor *t = &tensors[i];
        if (t->ndim > AQ_MAX_NDIM || (t->ndim > 0 && t->shape == NULL)) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': invalid shape",
                               aq__name_or_unnamed(t->name));
            goto done;
        }
        set->items[i].name = t->name;
        set->items[i].ndim = t->ndim;
        if (t->ndim > 0) {
            memcpy(set->items[i].shape, t->shape, t->ndim * sizeof *t->shape);
        }
    }
    const float *const *imp = opts != NULL ? opts->importance : NULL;
    size_t done_elements = 0;

    if (!(target > 0.0)) {
        /* Floor only: the context's scheme and bits, then more bits while below the floor. */
        for (size_t i = 0; i < n; i++) {
            qset_item *it = &set->items[i];
            unsigned bits = ctx->bit_width;
            qset_attempt a = {ctx, &tensors[i], imp != NULL ? imp[i] : NULL, min_cos, it};
            if ((st = aq__floor_run(&bits, min_cos, false, qset_attempt_at, &a, NULL, err)) !=
                AQ_OK) {
                goto done;
            }
            it->choice.initial_bit_width = ctx->bit_width;
            it->choice.moved = bits != ctx->bit_width;
            if ((st = qset_progress(opts, i, tensors, &done_elements, err)) != AQ_OK) {
                goto done;
            }
        }
        goto done;
    }

    /* Budget: measure every option of every tensor, keep each tensor's convex hull. */
    const size_t per = n_schemes * 3;
    opt = calloc((n > 0 ? n : 1) * per, sizeof *opt);
    count = calloc(n > 0 ? n : 1, sizeof *count);
    pos = calloc(n > 0 ? n : 1, sizeof *pos);
    if (opt == NULL || count == NULL || pos == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "aq_qset_quantize: out of memory");
        goto done;
    }
    size_t total_elements = 0;
    for (size_t i = 0; i < n; i++) {
        qset_option *o = opt + i * per;
        size_t m = 0;
        for (size_t s = 0; s < n_schemes; s++) {
            for (size_t b = 0; b < 3; b++) {
                qset_item *it = &set->items[i];
                if ((st = qset_run(ctx, &tensors[i], imp != NULL ? imp[i] : NULL, schemes[s],
                                   qset_bits[b], min_cos, it, err)) != AQ_OK) {
                    goto done;
                }
                o[m].scheme = schemes[s];
                o[m].bits = qset_bits[b];
                o[m].bytes = it->choice.bytes;
                o[m].sse = it->choice.metrics.mse * (double)it->layout.elements;
                o[m].meets = it->choice.meets_min_cosine != 0;
                m++;
            }
        }
        total_elements += set->items[i].layout.elements;
        count[i] = m;
        if ((st = qset_progress(opts, i, tensors, &done_elements, err)) != AQ_OK) {
            goto done;
        }
    }
    if ((st = aq__budget_allocate(opt, n, per, count, total_elements, target, min_cos > 0.0, pos,
                                  err)) != AQ_OK) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const qset_option *o = opt + i * per;
        qset_item *it = &set->items[i];
        if ((st = qset_run(ctx, &tensors[i], imp != NULL ? imp[i] : NULL, o[pos[i]].scheme,
                           o[pos[i]].bits, min_cos, it, err)) != AQ_OK) {
            goto done;
        }
        it->choice.initial_bit_width = o[0].bits;
        it->choice.moved = 0;
    }

done:
    free(opt);
    free(count);
    free(pos);
    if (st != AQ_OK) {
        aq_qset_free(set);
        return st;
    }
    *out = set;
    return AQ_OK;
}
