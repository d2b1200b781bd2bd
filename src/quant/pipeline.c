/*
 * The quantization pipeline's shared stages (pipeline.h): measuring options, the floor and the
 * size budget, and the default mode's model-wide size. The batch and model paths call these and
 * keep only their input and output.
 */
#include "pipeline.h"

#include <math.h>
#include <stdlib.h>

aq_ctx aq__ctx_with(const aq_ctx *ctx, aq_scheme scheme, unsigned bits, size_t group_size)
{
    aq_ctx c = *ctx;
    c.scheme = scheme;
    c.bit_width = bits;
    c.group_size = group_size; /* kquant ignores it (its layout's is always 512) */
    return c;
}

size_t aq__ctx_group_size(const aq_ctx *ctx)
{
    return ctx->group_size;
}

void aq__metrics_from_sums(const double acc[5], double *sqnr, double *cosine, double *maxerr)
{
    const double xx = acc[0], ee = acc[1], xy = acc[2], yy = acc[3];
    *sqnr = ee == 0.0 ? (double)INFINITY : 10.0 * log10(xx / ee);
    if (xx == 0.0 && yy == 0.0) {
        *cosine = 1.0;
    } else if (xx == 0.0 || yy == 0.0) {
        *cosine = 0.0;
    } else {
        *cosine = xy / (sqrt(xx) * sqrt(yy));
    }
    *maxerr = acc[4];
}

void aq__error_sums(const aq_ctx *ctx, aq_dtype d, const void *src, const float *y, size_t n,
                    double acc[5])
{
    /* The same sums on every table, so figures, floors and budgets do not depend on the CPU. */
    aq__error_stats_fn stats = ctx->kernels->error_stats[d];
    if (stats == NULL) {
        stats = aq__kernels_ref.error_stats[d];
    }
    stats(src, y, n, acc);
}

/* ---- the meter ---- */

#define PL_BLOCK_ELEMENTS ((size_t)1 << 16)

aq_status aq__meter_init(aq_ctx *ctx, const aq_tensor *src, aq_scheme scheme, const aq_layout *l,
                         const uint8_t *packed, const float *scales, const float *zps, float **buf,
                         size_t *cap, aq__meter *m, aq_error *err)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    m->src = src;
    m->rows = src->ndim >= 2 ? (size_t)src->shape[0] : 1;
    m->cols = m->rows > 0 ? l->elements / m->rows : 0;
    size_t block_rows = m->cols > 0 ? PL_BLOCK_ELEMENTS / m->cols : 8;
    block_rows = block_rows < 8 ? 8 : block_rows / 8 * 8;
    size_t need = block_rows * m->cols;
    if (need > l->elements) {
        need = l->elements;
    }
    if (need > *cap) {
        free(*buf);
        *cap = 0;
        if ((*buf = malloc(need * sizeof(float))) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory measuring quality",
                                 aq__name_or_unnamed(src->name));
        }
        *cap = need;
    }
    m->block_rows = block_rows;
    m->buf = *buf;
    m->q.name = src->name;
    m->q.scheme = scheme;
    m->q.bit_width = l->bit_width;
    m->q.group_size = l->group_size;
    m->q.shape = src->shape;
    m->q.ndim = src->ndim;
    m->q.packed = packed;
    m->q.packed_size = l->packed_bytes;
    m->q.scales = scales;
    m->q.zero_points = zps;
    m->q.groups = l->groups;
    return AQ_OK;
}

static double pl_load(aq_dtype d, const void *src, size_t i)
{
    switch (d) {
    case AQ_DTYPE_F16:
        return (double)aq__f16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_BF16:
        return (double)aq__bf16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_F64:
        return ((const double *)src)[i];
    default:
        return (double)((const float *)src)[i];
    }
}

/* Adds sum imp * (x - y)^2 and sum imp to w: plain C in element order, the same sums on every
 * CPU (the importance-weighted error the importance-aware schemes minimise). */
static void pl_weighted_sums(aq_dtype d, const void *src, const float *y, const float *imp,
                             size_t n, double w[2])
{
    double se = 0.0, si = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = pl_load(d, src, i) - (double)y[i];
        se += (double)imp[i] * (e * e);
        si += (double)imp[i];
    }
    w[0] += se;
    w[1] += si;
}

aq_status aq__meter_rows(aq__meter *m, size_t r0, size_t r1, aq_error *err)
{
    const size_t esize = aq_dtype_size(m->src->dtype);
    for (; r0 < r1; r0 += m->block_rows) {
        if (m->cancel != NULL && *m->cancel != 0) {
            return aq__error_set(err, AQ_CANCELLED, "cancelled");
        }
        size_t nr = r1 - r0 < m->block_rows ? r1 - r0 : m->block_rows;
        size_t n = nr * m->cols;
        aq_status st = aq__dequantize_rows(m->ctx, &m->q, r0, nr, AQ_DTYPE_F32, m->buf, n, err);
        if (st != AQ_OK) {
            return st;
        }
        const void *x = (const char *)m->src->data + r0 * m->cols * esize;
        aq__error_sums(m->ctx, m->src->dtype, x, m->buf, n, m->acc);
        if (m->imp != NULL) {
            pl_weighted_sums(m->src->dtype, x, m->buf, m->imp + r0 * m->cols, n, m->wacc);
        }
    }
    return AQ_OK;
}

/* ---- measuring one option ---- */

void aq__scratch_free(aq__scratch *s)
{
    free(s->packed);
    free(s->scales);
    free(s->zps);
    free(s->mbuf);
    memset(s, 0, sizeof *s);
}

static aq_status pl_scratch_reserve(aq__scratch *s, const aq_layout *l, const char *name,
                                    aq_error *err)
{
    if (l->packed_bytes > s->packed_cap) {
        free(s->packed);
        s->packed_cap = 0;
        if ((s->packed = malloc(l->packed_bytes)) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
        }
        s->packed_cap = l->packed_bytes;
    }
    if (l->groups > s->groups_cap) {
        free(s->scales);
        free(s->zps);
        s->groups_cap = 0;
        s->scales = malloc(l->groups * sizeof(float));
        s->zps = malloc(l->groups * sizeof(float));
        if (s->scales == NULL || s->zps == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
        }
        s->groups_cap = l->groups;
    }
    return AQ_OK;
}

/* The error the budget minimises for one option (docs/pipeline.md, "The budget's objective"):
 * the squared error, weighted by the importance when there is one (scaled to a mean weight of
 * 1, so that weighted and unweighted tensors compare), over the tensor's own sum of squares.
 * Each tensor's relative error counts the same whatever its size or scale: a small first or
 * last layer is no cheaper to spoil than a large one. An all-zero tensor keeps its plain
 * squared error (zero for every option that restores zeros). */
static double pl_objective(const aq__meter *m, size_t n)
{
    double e = m->acc[1];
    if (m->imp != NULL && m->wacc[1] > 0.0) {
        e = m->wacc[0] * ((double)n / m->wacc[1]);
    }
    return m->acc[0] > 0.0 ? e / m->acc[0] : e;
}

void aq__importance_temper(float *imp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        imp[i] = sqrtf(imp[i]);
    }
}

aq_status aq__option_measure(aq_ctx *ctx, const aq_tensor *src, const float *imp, aq_scheme scheme,
                             unsigned bits, size_t group_size, double min_cosine,
                             const volatile int *cancel, aq__scratch *sc, aq__budget_option *out,
                             aq_error *err)
{
    aq_ctx c = aq__ctx_with(ctx, scheme, bits, group_size > 0 ? group_size : ctx->group_size);
    aq_layout l;
    aq_status st = aq_quantize_bound(&c, src, &l, err);
    if (st != AQ_OK ||
        (st = pl_scratch_reserve(sc, &l, aq__name_or_unnamed(src->name), err)) != AQ_OK) {
        return st;
    }
    aq_qbuffers qb = {sc->packed, l.packed_bytes, sc->scales, sc->zps, l.groups};
    aq_quantize_options qo = {.size = sizeof(aq_quantize_options), .importance = imp};
    aq__meter m;
    if ((st = aq_quantize_ex(&c, src, &qo, &qb, NULL, err)) != AQ_OK ||
        (st = aq__meter_init(&c, src, scheme, &l, sc->packed, sc->scales, sc->zps, &sc->mbuf,
                             &sc->mbuf_cap, &m, err)) != AQ_OK) {
        return st;
    }
    m.cancel = cancel;
    m.imp = imp;
    if ((st = aq__meter_rows(&m, 0, m.rows, err)) != AQ_OK) {
        return st;
    }
    double sqnr, cosine, maxerr;
    aq__metrics_from_sums(m.acc, &sqnr, &cosine, &maxerr);
    memset(out, 0, sizeof *out);
    out->scheme = scheme;
    out->bits = bits;
    out->group_size = group_size;
    out->bytes = l.packed_bytes + 2 * l.groups * sizeof(float);
    out->sse = m.acc[1];
    out->relative = pl_objective(&m, l.elements);
    out->cosine = cosine;
    out->meets = !(min_cosine > 0.0) || cosine >= min_cosine;
    return AQ_OK;
}

/* ---- the default mode's plan ---- */

aq_status aq__plan_candidates(const aq_scheme *list, size_t n, aq_scheme fallback,
                              aq_scheme *schemes, unsigned *bits, size_t *groups, size_t *count,
                              aq_error *err)
{
    static const unsigned b3[3] = {2, 4, 8};
    static const size_t wide[AQ__PLAN_WIDE_GROUPS] = {128, 256, 512};
    if (list == NULL || n == 0) {
        list = &fallback;
        n = 1;
    }
    size_t k = 0;
    bool affine = false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)list[i] >= AQ_SCHEME_COUNT) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid scheme %d in the budget's scheme list", (int)list[i]);
        }
        bool seen = false;
        for (size_t j = 0; j < i; j++) {
            seen = seen || list[j] == list[i];
        }
        if (seen) {
            continue;
        }
        affine = affine || list[i] == AQ_SCHEME_AFFINE;
        for (size_t b = 0; b < 3; b++) {
            schemes[k] = list[i];
            groups[k] = 0;
            bits[k++] = b3[b];
        }
    }
    for (size_t b = 0; !affine && b < 3; b++) {
        schemes[k] = AQ_SCHEME_AFFINE;
        groups[k] = 0;
        bits[k++] = b3[b];
    }
    for (size_t g = 0; g < AQ__PLAN_WIDE_GROUPS; g++) {
        for (size_t b = 0; b < 3; b++) {
            schemes[k] = AQ_SCHEME_AFFINE;
            groups[k] = wide[g];
            bits[k++] = b3[b];
        }
    }
    *count = k;
    return AQ_OK;
}

aq__plan_role aq__plan_role_of(const aq_rule_decision *d, size_t ndim, size_t elements)
{
    if (elements == 0) {
        return AQ__PLAN_OUTSIDE;
    }
    if (d->rule == AQ_RULE_OVERRIDE) {
        return AQ__PLAN_FIXED;
    }
    if (d->keep && ndim < 2) {
        return AQ__PLAN_OUTSIDE;
    }
    return AQ__PLAN_CHOSEN;
}

size_t aq__plan_budget_bytes(double target_bpw, size_t elements)
{
    return (size_t)floor(target_bpw * (double)elements / 8.0);
}

/* ---- the floor and the budget ---- */

static int pl_option_cmp(const void *a, const void *b)
{
    const aq__budget_option *x = a, *y = b;
    if (x->bytes != y->bytes) {
        return x->bytes < y->bytes ? -1 : 1;
    }
    return x->sse < y->sse ? -1 : (x->sse > y->sse ? 1 : 0);
}

/* Keeps, in place, the lower convex hull of (bytes, sse) with strictly falling sse: the
 * options worth upgrading through. Returns the new count. */
static size_t pl_hull(aq__budget_option *o, size_t n)
{
    qsort(o, n, sizeof *o, pl_option_cmp);
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
        if (h > 0 && o[i].sse >= o[h - 1].sse) {
            continue; /* bigger and no better */
        }
        while (h >= 2) {
            /* Drop the last point if it lies on or above the segment from h-2 to i. */
            double s1 = (o[h - 2].sse - o[h - 1].sse) / (double)(o[h - 1].bytes - o[h - 2].bytes);
            double s2 = (o[h - 1].sse - o[i].sse) / (double)(o[i].bytes - o[h - 1].bytes);
            if (s2 >= s1) {
                h--;
            } else {
                break;
            }
        }
        o[h++] = o[i];
    }
    return h;
}

/* The upgrades: while one fits within budget, the one saving the most squared error per
 * added byte among tensors below their cap[i] (an index into their hull). */
static void pl_upgrade(const aq__budget_option *opt, size_t n, size_t per, const size_t *cap,
                       size_t *choice, size_t *total, double budget)
{
    for (;;) {
        size_t pick = n;
        double best = -1.0;
        for (size_t i = 0; i < n; i++) {
            if (choice[i] + 1 >= cap[i]) {
                continue;
            }
            const aq__budget_option *a = opt + i * per + choice[i], *b = a + 1;
            size_t extra = b->bytes - a->bytes;
            if ((double)(*total + extra) > budget) {
                continue;
            }
            double gain = (a->sse - b->sse) / (double)extra;
            if (gain > best) {
                best = gain;
                pick = i;
            }
        }
        if (pick == n) {
            return;
        }
        const aq__budget_option *a = opt + pick * per + choice[pick];
        *total += a[1].bytes - a[0].bytes;
        choice[pick]++;
    }
}

aq_status aq__budget_allocate(aq__budget_option *opt, size_t n, size_t per, const size_t *count_in,
                              size_t total_elements, double target, bool floor, size_t *choice,
                              aq_error *err)
{
    size_t *count = calloc(n > 0 ? n : 1, sizeof *count);
    if (count == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "budget: out of memory");
    }
    size_t total_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        aq__budget_option *o = opt + i * per;
        size_t m = count_in[i], meeting = 0, k = 0;
        for (size_t j = 0; j < m; j++) {
            meeting += o[j].meets;
        }
        if (meeting > 0) {
            for (size_t j = 0; j < m; j++) {
                if (o[j].meets) {
                    o[k++] = o[j];
                }
            }
            m = k;
        } else {
            size_t best = 0;
            for (size_t j = 1; j < m; j++) {
                best = o[j].sse < o[best].sse ? j : best;
            }
            o[0] = o[best];
            m = 1;
        }
        count[i] = pl_hull(o, m);
        choice[i] = 0;
        total_bytes += o[0].bytes;
    }
    const double budget = target * (double)total_elements / 8.0;
    if ((double)total_bytes > budget) {
        free(count);
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. The smallest allocation%s needs %.4f bits "
                             "per weight",
                             target, floor ? " meeting min_cosine" : "",
                             (double)total_bytes * 8.0 / (double)total_elements);
    }
    pl_upgrade(opt, n, per, count, choice, &total_bytes, budget);
    free(count);
    return AQ_OK;
}

/* One exchange after the upgrades: the upgrade of a tensor that no longer fits, paid for by
 * one-step downgrades of others (never below lo[j], the cheapest squared error per freed byte
 * first), taken when it lowers the total squared error. The greedy upgrades take small steps
 * (kquant's partial super-block over affine's exact N + 0.5) before a large one (4 to 8 bits)
 * that then no longer fits; this trades them back. Returns whether one was made. */
typedef struct pl_down {
    size_t j;
    double loss;
    size_t freed;
} pl_down;

static int pl_down_cmp(const void *a, const void *b)
{
    const pl_down *x = a, *y = b;
    double lx = x->loss / (double)x->freed, ly = y->loss / (double)y->freed;
    return lx < ly ? -1 : (lx > ly ? 1 : (x->j < y->j ? -1 : (x->j > y->j ? 1 : 0)));
}

static bool pl_exchange(const aq__budget_option *opt, size_t n, size_t per, const size_t *cap,
                        const size_t *lo, size_t *choice, size_t *total, size_t budget,
                        pl_down *downs)
{
    for (size_t i = 0; i < n; i++) {
        if (choice[i] + 1 >= cap[i]) {
            continue;
        }
        const aq__budget_option *a = opt + i * per + choice[i];
        size_t extra = a[1].bytes - a[0].bytes;
        if (*total + extra <= budget) {
            continue;
        }
        size_t need = *total + extra - budget, nd = 0;
        double gain = a[0].sse - a[1].sse;
        for (size_t j = 0; j < n; j++) {
            if (j != i && choice[j] > lo[j]) {
                const aq__budget_option *c = opt + j * per + choice[j];
                pl_down d = {j, c[-1].sse - c[0].sse, c[0].bytes - c[-1].bytes};
                if (d.freed > 0) {
                    downs[nd++] = d;
                }
            }
        }
        qsort(downs, nd, sizeof *downs, pl_down_cmp);
        size_t freed = 0, k = 0;
        double loss = 0.0;
        for (; k < nd && freed < need && loss < gain; k++) {
            freed += downs[k].freed;
            loss += downs[k].loss;
        }
        if (freed >= need && loss < gain) {
            for (size_t q = 0; q < k; q++) {
                choice[downs[q].j]--;
            }
            choice[i]++;
            *total = *total + extra - freed;
            return true;
        }
    }
    return false;
}

aq_status aq__plan_allocate(aq__budget_option *opt, size_t n, size_t per, const size_t *count_in,
                            const size_t *want, size_t budget, size_t fixed_bytes, size_t counted,
                            double target_bpw, bool floor, size_t *choice, aq_error *err)
{
    size_t *count = calloc(n > 0 ? n : 1, sizeof *count);
    size_t *wish = calloc(n > 0 ? n : 1, sizeof *wish);
    size_t *meet = calloc(n > 0 ? n : 1, sizeof *meet);
    if (count == NULL || wish == NULL || meet == NULL) {
        free(count);
        free(wish);
        free(meet);
        return aq__error_set(err, AQ_NO_MEMORY, "budget: out of memory");
    }
    size_t total = fixed_bytes;
    for (size_t i = 0; i < n; i++) {
        aq__budget_option *o = opt + i * per;
        count[i] = pl_hull(o, count_in[i]);
        choice[i] = 0;
        total += o[0].bytes;
        /* The floor's wish: the smallest option meeting it (none without a floor, or when no
         * option meets it); the rules' wish: the largest option within their treatment's size
         * (and at least the floor's). Both are caps on the tensor's hull index, plus one. */
        size_t f = 0, w = 0;
        for (size_t j = 0; floor && j < count[i]; j++) {
            if (o[j].meets) {
                f = j;
                break;
            }
        }
        for (size_t j = 0; want[i] > 0 && j < count[i]; j++) {
            if (o[j].bytes <= want[i]) {
                w = j;
            }
        }
        meet[i] = f + 1;
        wish[i] = (w > f ? w : f) + 1;
    }
    aq_status st = AQ_OK;
    if (total > budget) {
        st = aq__error_set(err, AQ_INVALID_PARAMETER,
                           "The model does not fit in %g bits per weight: its %zu counted "
                           "weights take at least %.4f bits per weight (every tensor at its "
                           "smallest option; %.4f of it for tensors given by overrides)",
                           target_bpw, counted, (double)total * 8.0 / (double)counted,
                           (double)fixed_bytes * 8.0 / (double)counted);
    } else {
        /* The floor first, then the rules' preferences, then any upgrade that fits; then
         * exchanges that keep what the floor and the preferences got (and the upgrades they
         * leave room for). */
        pl_upgrade(opt, n, per, meet, choice, &total, (double)budget);
        pl_upgrade(opt, n, per, wish, choice, &total, (double)budget);
        pl_upgrade(opt, n, per, count, choice, &total, (double)budget);
        pl_down *downs = malloc((n > 0 ? n : 1) * sizeof *downs);
        for (size_t i = 0; i < n; i++) {
            /* The lower bound: what the floor and the preferences got stays. */
            meet[i] = wish[i] - 1 < choice[i] ? wish[i] - 1 : choice[i];
        }
        for (size_t round = 0; downs != NULL && round < 4 * n + 4; round++) {
            if (!pl_exchange(opt, n, per, count, meet, choice, &total, budget, downs)) {
                break;
            }
            pl_upgrade(opt, n, per, count, choice, &total, (double)budget);
        }
        free(downs);
    }
    free(meet);
    free(count);
    free(wish);
    return st;
}

/* ---- the default mode's plan ---- */

aq_status aq__plan_init(aq__plan *p, size_t n, const aq_scheme *list, size_t n_list,
                        aq_scheme fallback, aq_error *err)
{
    memset(p, 0, sizeof *p);
    aq_status st = aq__plan_candidates(list, n_list, fallback, p->schemes, p->bits, p->groups,
                                       &p->n_candidates, err);
    if (st != AQ_OK) {
        return st;
    }
    p->per = p->n_candidates + 1; /* and the raw option */
    size_t rows = n > 0 ? n : 1;
    p->opt = calloc(rows * p->per, sizeof *p->opt);
    p->count = calloc(rows, sizeof *p->count);
    p->want = calloc(rows, sizeof *p->want);
    p->choice = calloc(rows, sizeof *p->choice);
    p->index = calloc(rows, sizeof *p->index);
    p->imps = calloc(rows, sizeof *p->imps);
    if (p->opt == NULL || p->count == NULL || p->want == NULL || p->choice == NULL ||
        p->index == NULL || p->imps == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning %zu tensors", n);
    }
    return AQ_OK;
}

void aq__plan_free(aq__plan *p)
{
    for (size_t j = 0; p->imps != NULL && j < p->m; j++) {
        free(p->imps[j]);
    }
    free(p->imps);
    free(p->opt);
    free(p->count);
    free(p->want);
    free(p->choice);
    free(p->index);
    aq__scratch_free(&p->scratch);
    memset(p, 0, sizeof *p);
}

/* Whether candidate j would lay the same groups over t as another candidate of its scheme and
 * bits that is preferred to it (the same group size, or one group a row for both), so the same
 * bytes and codes: a fixed group size is preferred to the context's, a smaller fixed one to a
 * larger. Such a candidate is not measured, so that the group size a tensor is written with
 * does not depend on the entry point's context. */
static aq_status pl_same_groups(const aq__plan *p, const aq_ctx *ctx, const aq_tensor *t, size_t j,
                                bool *same, aq_error *err)
{
    *same = false;
    const size_t gj = p->groups[j] > 0 ? p->groups[j] : ctx->group_size;
    aq_layout lj;
    aq_status st =
        aq_layout_compute_scheme(p->schemes[j], t->shape, t->ndim, p->bits[j], gj, &lj, err);
    for (size_t i = 0; i < p->n_candidates && st == AQ_OK && !*same; i++) {
        if (i == j || p->groups[i] == 0 || p->schemes[i] != p->schemes[j] ||
            p->bits[i] != p->bits[j] || (p->groups[j] > 0 && p->groups[i] >= p->groups[j])) {
            continue;
        }
        aq_layout li;
        st = aq_layout_compute_scheme(p->schemes[i], t->shape, t->ndim, p->bits[i], p->groups[i],
                                      &li, err);
        *same =
            st == AQ_OK && li.groups == lj.groups && (p->groups[i] == gj || lj.groups_per_row == 1);
    }
    return st;
}

aq_status aq__plan_measure(aq__plan *p, aq_ctx *ctx, const aq_tensor *t, float *imp, bool own,
                           const aq__plan_pref *pref, double min_cosine, const volatile int *cancel,
                           size_t index, aq_error *err)
{
    aq__budget_option *row = p->opt + p->m * p->per;
    size_t k = 0, want = 0;
    aq_status st = AQ_OK;
    for (size_t j = 0; j < p->n_candidates && st == AQ_OK; j++) {
        bool same = false;
        if ((st = pl_same_groups(p, ctx, t, j, &same, err)) != AQ_OK || same) {
            continue;
        }
        st = aq__option_measure(ctx, t, imp, p->schemes[j], p->bits[j], p->groups[j], min_cosine,
                                cancel, &p->scratch, &row[k], err);
        if (st != AQ_OK) {
            break;
        }
        /* The default mode minimises the sum of the tensors' relative errors. */
        row[k].sse = row[k].relative;
        if (pref->bits > 0 && row[k].scheme == pref->scheme && row[k].bits == pref->bits &&
            row[k].group_size == 0) {
            want = row[k].bytes;
        }
        k++;
    }
    if (st != AQ_OK) {
        if (own) {
            free(imp);
        }
        return st;
    }
    if (pref->keep_bytes > 0) {
        aq__budget_option *x = &row[k++];
        memset(x, 0, sizeof *x);
        x->bytes = pref->keep_bytes;
        x->bits = pref->keep_bits;
        x->cosine = 1.0;
        x->meets = true;
        x->keep = true;
        want = x->bytes;
    } else if (pref->bits > 0 && want == 0) {
        /* The rules' scheme is not among the candidates: its layout's size. */
        aq_layout l;
        if ((st = aq_layout_compute_scheme(pref->scheme, t->shape, t->ndim, pref->bits,
                                           pref->group_size, &l, err)) != AQ_OK) {
            if (own) {
                free(imp);
            }
            return st;
        }
        want = l.packed_bytes + 2 * l.groups * sizeof(float);
    }
    size_t n = 0;
    (void)aq__shape_elements(t->name, t->shape, t->ndim, &n, NULL);
    p->counted += n;
    p->count[p->m] = k;
    p->want[p->m] = want;
    p->imps[p->m] = own ? imp : NULL;
    p->index[p->m++] = index;
    return AQ_OK;
}

aq_status aq__plan_run(aq__plan *p, double target_bpw, bool floor, aq_error *err)
{
    return aq__plan_allocate(p->opt, p->m, p->per, p->count, p->want,
                             aq__plan_budget_bytes(target_bpw, p->counted), p->fixed, p->counted,
                             target_bpw, floor, p->choice, err);
}

aq_status aq__plan_over(aq__plan *p, size_t n, const aq_scheme *list, size_t n_list,
                        aq_scheme fallback, const aq__plan_source *src, double target_bpw,
                        bool floor, aq_error *err)
{
    aq_status st = aq__plan_init(p, n, list, n_list, fallback, err);
    for (size_t i = 0; i < n && st == AQ_OK; i++) {
        aq__plan_role role = src->role(src->user, i);
        if (role == AQ__PLAN_FIXED) {
            size_t elements = 0, bytes = 0;
            st = src->fixed(src->user, i, &elements, &bytes, err);
            p->counted += elements;
            p->fixed += bytes;
        } else if (role == AQ__PLAN_CHOSEN) {
            st = src->measure(src->user, i, p, err);
        }
    }
    if (st == AQ_OK) {
        st = aq__plan_run(p, target_bpw, floor, err);
    }
    return st;
}

aq_status aq__floor_run(unsigned *bits, double min_cosine, bool fixed, aq__floor_attempt_fn attempt,
                        void *user, double *initial_cosine, aq_error *err)
{
    const unsigned first = *bits;
    unsigned b = first;
    for (;;) {
        double cosine = 0.0;
        aq_status st = attempt(user, b, &cosine, err);
        if (st != AQ_OK) {
            return st;
        }
        if (b == first && initial_cosine != NULL) {
            *initial_cosine = cosine;
        }
        if (fixed || !(min_cosine > 0.0) || cosine >= min_cosine || b >= 8) {
            break;
        }
        b = b == 2 ? 4 : 8;
    }
    *bits = b;
    return AQ_OK;
}
