/*
 * The pipeline over a set of tensors held in memory: decide, floor and budget, execute.
 *
 * The Arrow batch and stream paths and aq_tensors_quantize fill the items (views read in
 * place), then ask these stages what each row becomes and write its bytes straight into their
 * own result buffers. A floor quantizes each row through aq_qset_quantize (more bits while
 * below it); an explicit budget puts every row through one aq_qset_quantize; the default mode's
 * size is the plan the model path runs too (aq__plan_over). Rows the rules keep are stored raw.
 */
#include "pipeline.h"

#include <stdlib.h>

/* ---- the set ---- */

void aq__pipe_free(aq__pipe *p)
{
    for (size_t i = 0; p->items != NULL && i < p->n; i++) {
        free(p->items[i].message);
    }
    for (size_t i = 0; p->sets != NULL && i < p->n_sets; i++) {
        aq_qset_free(p->sets[i]);
    }
    free(p->sets);
    free(p->items);
    free(p->names);
    free(p->shapes);
    memset(p, 0, sizeof *p);
}

aq_status aq__pipe_alloc(aq__pipe *p, const aq_ctx *ctx, size_t n, size_t name_bytes,
                         const aq__pipe_quality *q, const aq__pipe_hooks *h, aq_error *err)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->q = *q;
    p->h = *h;
    size_t shape_count;
    if (!aq__mul_size(n, AQ_MAX_NDIM, &shape_count)) {
        return aq__error_set(err, AQ_OVERFLOW, "batch has too many rows");
    }
    p->items = calloc(n > 0 ? n : 1, sizeof *p->items);
    p->names = malloc(name_bytes > 0 ? name_bytes : 1);
    p->shapes = malloc((shape_count > 0 ? shape_count : 1) * sizeof *p->shapes);
    if (p->items == NULL || p->names == NULL || p->shapes == NULL) {
        aq__pipe_free(p);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", n);
    }
    for (size_t i = 0; i < n; i++) {
        p->items[i].scheme = ctx->scheme;
    }
    return AQ_OK;
}

/* ---- decide ---- */

/* Element k of a tensor as the float32 value x of docs/format.md section 2. */
static float ps_value(const aq_tensor *t, size_t k)
{
    switch (t->dtype) {
    case AQ_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * k, 2);
        return aq__f16_to_f32(h);
    }
    case AQ_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * k, 2);
        return aq__bf16_to_f32(h);
    }
    case AQ_DTYPE_F64: {
        double d;
        memcpy(&d, (const uint8_t *)t->data + 8 * k, 8);
        return (float)d;
    }
    default: {
        float f;
        memcpy(&f, (const uint8_t *)t->data + 4 * k, 4);
        return f;
    }
    }
}

aq_status aq__pipe_keep_bits(const aq_tensor *t, size_t elements, unsigned decided, unsigned *bits,
                             aq_error *err)
{
    /* NaN and Inf are refused as for quantized rows (float64 beyond float32's range too). */
    aq_status st = aq_tensor_check_finite(t, NULL, err);
    if (st != AQ_OK) {
        return st;
    }
    unsigned b = decided == 16 ? 16u : 32u;
    if (b == 16 && t->dtype != AQ_DTYPE_F16) {
        /* A value that float16 would turn into Inf keeps the whole row in float32. */
        for (size_t k = 0; k < elements; k++) {
            uint16_t h = aq__f32_to_f16(ps_value(t, k));
            if ((h & 0x7c00u) == 0x7c00u) {
                b = 32;
                break;
            }
        }
    }
    *bits = b;
    return AQ_OK;
}

void aq__pipe_keep_encode(const aq_tensor *t, size_t elements, unsigned bits, uint8_t *out)
{
    if (bits == 16 && t->dtype == AQ_DTYPE_F16) {
        memcpy(out, t->data, elements * 2);
    } else if (bits == 32 && t->dtype == AQ_DTYPE_F32) {
        memcpy(out, t->data, elements * 4);
    } else if (bits == 16) {
        for (size_t k = 0; k < elements; k++) {
            uint16_t h = aq__f32_to_f16(ps_value(t, k));
            memcpy(out + 2 * k, &h, 2);
        }
    } else {
        for (size_t k = 0; k < elements; k++) {
            float f = ps_value(t, k);
            memcpy(out + 4 * k, &f, 4);
        }
    }
}

aq_status aq__pipe_decide(aq__pipe *p, const aq_ctx *ctx, size_t i, aq_error *row_err)
{
    aq__pipe_item *it = &p->items[i];
    if (p->h.decide == NULL) {
        return AQ_OK;
    }
    aq_rule_decision d;
    bool ruled = false;
    aq_status st = p->h.decide(p->h.user, &it->t, &d, &ruled, row_err);
    if (st != AQ_OK || !ruled) {
        return st;
    }
    it->role = aq__plan_role_of(&d, it->t.ndim, it->layout.elements);
    if (d.keep) {
        size_t n = it->layout.elements;
        unsigned bits;
        if ((st = aq__pipe_keep_bits(&it->t, n, d.bit_width, &bits, row_err)) != AQ_OK) {
            return st;
        }
        aq_layout l = it->layout;
        l.bit_width = bits;
        l.group_size = 0;
        l.groups_per_row = 0;
        l.groups = 0;
        if (!aq__mul_size(n, bits / 8, &l.packed_bytes)) {
            return aq__error_set(row_err, AQ_OVERFLOW, "Layer '%s': size overflows", it->name);
        }
        it->layout = l;
        it->kept = true;
        return AQ_OK;
    }
    aq_layout l;
    if ((st = aq_layout_compute_scheme(d.scheme, it->t.shape, it->t.ndim, d.bit_width,
                                       ctx->group_size, &l, row_err)) != AQ_OK) {
        aq__error_prefix(row_err, "Layer '%s'", it->name);
        return st;
    }
    it->layout = l;
    it->scheme = d.scheme;
    it->fixed = d.rule != AQ_RULE_PROFILE;
    return AQ_OK;
}

aq_status aq__pipe_from_tensors(aq__pipe *p, const aq_ctx *ctx, const aq_tensor *tensors,
                                aq_error *err)
{
    for (size_t i = 0; i < p->n; i++) {
        aq__pipe_item *item = &p->items[i];
        const aq_tensor *t = &tensors[i];
        item->name = t->name != NULL ? t->name : "";
        item->name_len = strlen(item->name);
        item->t = *t;
        aq_error row_err;
        aq_error_clear(&row_err);
        aq_status st = aq_quantize_bound(ctx, t, &item->layout, &row_err);
        if (st == AQ_OK) {
            item->elements = item->layout.elements;
            if ((unsigned)t->dtype >= AQ_DTYPE_COUNT || t->data == NULL) {
                st = aq__error_set(&row_err, AQ_INVALID_ARGUMENT,
                                   "Layer '%s': invalid dtype or NULL data",
                                   aq__name_or_unnamed(t->name));
            }
        }
        if (st == AQ_OK) {
            st = aq__pipe_decide(p, ctx, i, &row_err);
        }
        if (st != AQ_OK && (st = p->h.row_error(p->h.user, &item->message, &item->status, &row_err,
                                                err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

/* ---- progress ---- */

aq_status aq__pipe_progress_to(aq__pipe *p, size_t upto, aq_error *err)
{
    while (p->reported <= upto && p->reported < p->n) {
        aq_status st = p->h.progress(p->h.user, p->items[p->reported].elements, err);
        p->reported++;
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

/* ---- floor and budget ---- */

static bool ps_uses_importance(aq_scheme scheme)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    return t != NULL && t->importance;
}

/* Row it's importance when its scheme uses one (NULL otherwise). */
static aq_status ps_importance(const aq__pipe *p, const aq__pipe_item *it, float **imp,
                               aq_error *err)
{
    *imp = NULL;
    return ps_uses_importance(it->scheme)
               ? p->h.importance(p->h.user, &it->t, it->layout.elements, imp, err)
               : AQ_OK;
}

/* The row's quantized tensor, chosen by the quality driver, becomes the row's layout. */
static aq_status ps_take_choice(aq__pipe_item *it, const aq_qset *set, size_t k, aq_error *err)
{
    aq_qtensor q;
    aq_status st = aq_qset_get(set, k, &it->choice, &q, err);
    if (st != AQ_OK) {
        return st;
    }
    it->set = set;
    it->set_index = k;
    it->scheme = q.scheme;
    it->layout.bit_width = q.bit_width;
    it->layout.group_size = q.group_size;
    it->layout.groups = q.groups;
    it->layout.packed_bytes = q.packed_size;
    return AQ_OK;
}

/* Which rows go one by one through the driver: all (a floor only; progress, and so
 * cancellation, between rows as without a floor), those the rules fix (outside an explicit
 * budget), or those a user override fixes (counted in the default mode's size). */
typedef enum ps_rows { PS_ALL_ROWS, PS_FIXED_ROWS, PS_OVERRIDE_ROWS } ps_rows;

static aq_status ps_each(aq__pipe *p, aq_ctx *ctx, ps_rows which, aq_error *err)
{
    const bool all_rows = which == PS_ALL_ROWS;
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = p->q.min_cosine;
    for (size_t i = 0; i < p->n; i++) {
        aq__pipe_item *it = &p->items[i];
        aq_status st;
        const bool picked = all_rows || (which == PS_FIXED_ROWS && it->fixed) ||
                            (which == PS_OVERRIDE_ROWS && it->role == AQ__PLAN_FIXED);
        if (it->status == AQ_OK && !it->kept && picked) {
            aq_error row_err;
            aq_error_clear(&row_err);
            aq_qset *set = NULL;
            aq_ctx rc = aq__ctx_with(ctx, it->scheme, it->layout.bit_width, it->layout.group_size);
            float *imp = NULL;
            st = ps_importance(p, it, &imp, &row_err);
            if (st == AQ_OK) {
                const float *const imps[1] = {imp};
                qo.importance = imp != NULL ? imps : NULL;
                st = aq_qset_quantize(&rc, &it->t, 1, &qo, &set, &row_err);
                qo.importance = NULL;
            }
            free(imp);
            if (st == AQ_OK) {
                p->sets[p->n_sets++] = set;
                if ((st = ps_take_choice(it, set, 0, err)) != AQ_OK) {
                    return st;
                }
            } else if (st == AQ_NO_MEMORY || st == AQ_INVALID_PARAMETER) {
                if (err != NULL) {
                    *err = row_err;
                }
                return st;
            } else if ((st = p->h.row_error(p->h.user, &it->message, &it->status, &row_err, err)) !=
                       AQ_OK) {
                return st;
            }
        }
        if (all_rows && (st = aq__pipe_progress_to(p, i, err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

/* AQ_TARGET_BPW_PROFILE: the budget is what the rows would take without one, each at the
 * base scheme and bits (the rules' profile's, or the context's), raised by min_cosine as the
 * floor alone would (2 -> 4 -> 8). In *out, bits per weight with half a bit of the whole set
 * added, so that the budget in bytes is that size exactly, whatever the rounding of
 * target * elements / 8 (sizes are whole bytes). */
static aq_status ps_profile_target(aq_ctx *bc, double min_cosine, const aq_tensor *tensors,
                                   float *const *imps, size_t k, double *out, aq_error *err)
{
    size_t bytes = 0, elements = 0;
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = min_cosine;
    for (size_t j = 0; j < k; j++) {
        const aq_tensor *t = &tensors[j];
        aq_layout l;
        aq_status st = aq_layout_compute_scheme(bc->scheme, t->shape, t->ndim, bc->bit_width,
                                                bc->group_size, &l, err);
        if (st != AQ_OK) {
            return st;
        }
        size_t b = l.packed_bytes + 8 * l.groups;
        if (min_cosine > 0.0) {
            const float *const imp[1] = {imps[j]};
            qo.importance = imps[j] != NULL ? imp : NULL;
            aq_qset *set = NULL;
            aq_qset_choice c;
            if ((st = aq_qset_quantize(bc, t, 1, &qo, &set, err)) != AQ_OK ||
                (st = aq_qset_get(set, 0, &c, NULL, err)) != AQ_OK) {
                aq_qset_free(set);
                return st;
            }
            aq_qset_free(set);
            b = c.bytes;
        }
        bytes += b;
        elements += l.elements;
    }
    *out = elements > 0 ? ((double)bytes * 8.0 + 0.5) / (double)elements : 0.0;
    return AQ_OK;
}

/* The driver's progress, mapped to the set's rows. */
typedef struct ps_shim {
    aq__pipe *p;
    const size_t *rows; /* tensor k of the driver's set is row rows[k] */
    aq_error err;       /* why the set stopped, when it did */
} ps_shim;

static int ps_shim_progress(void *user, size_t done, size_t elements)
{
    ps_shim *sh = user;
    (void)elements;
    return aq__pipe_progress_to(sh->p, sh->rows[done - 1], &sh->err) != AQ_OK;
}

/* An explicit budget: every row it covers in one call of the driver, which needs them all to
 * share the budget. Non-finite rows are found first so that continue mode can skip them. */
static aq_status ps_budget(aq__pipe *p, aq_ctx *ctx, aq_error *err)
{
    aq_status st = AQ_OK;
    size_t k = 0;
    aq_tensor *tensors = malloc((p->n > 0 ? p->n : 1) * sizeof *tensors);
    size_t *rows = malloc((p->n > 0 ? p->n : 1) * sizeof *rows);
    float **imps = calloc(p->n > 0 ? p->n : 1, sizeof *imps);
    if (tensors == NULL || rows == NULL || imps == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", p->n);
        goto done;
    }
    bool any_importance = false;
    for (size_t i = 0; i < p->n; i++) {
        aq__pipe_item *it = &p->items[i];
        if (it->status != AQ_OK || it->kept || it->fixed) {
            continue;
        }
        aq_error row_err;
        aq_error_clear(&row_err);
        if (aq_tensor_check_finite(&it->t, NULL, &row_err) != AQ_OK ||
            p->h.importance(p->h.user, &it->t, it->layout.elements, &imps[k], &row_err) != AQ_OK) {
            if ((st = p->h.row_error(p->h.user, &it->message, &it->status, &row_err, err)) !=
                AQ_OK) {
                goto done;
            }
            continue;
        }
        any_importance = any_importance || imps[k] != NULL;
        tensors[k] = it->t;
        rows[k++] = i;
    }
    ps_shim sh = {p, rows, {AQ_OK, ""}};
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = p->q.min_cosine;
    qo.target_bpw = p->q.target_bpw;
    qo.schemes = p->q.budget_schemes;
    qo.n_schemes = p->q.n_budget_schemes;
    qo.importance = any_importance ? (const float *const *)imps : NULL;
    qo.progress = ps_shim_progress;
    qo.progress_user = &sh;
    aq_qset *set = NULL;
    /* The budget's rows start from the base scheme and bits; the group size of the non-kquant
     * schemes is the context's either way. */
    aq_ctx bc = aq__ctx_with(ctx, p->base_scheme, p->base_bits, ctx->group_size);
    if (p->q.target_bpw == AQ_TARGET_BPW_PROFILE) {
        if ((st = ps_profile_target(&bc, p->q.min_cosine, tensors, imps, k, &qo.target_bpw, err)) !=
            AQ_OK) {
            goto done;
        }
        if (k == 0) {
            qo.target_bpw = 0.0; /* nothing to choose for; the driver then has no budget */
        }
    }
    st = aq_qset_quantize(&bc, tensors, k, &qo, &set, err);
    if (st == AQ_CANCELLED && sh.err.code == AQ_CANCELLED) {
        if (err != NULL) {
            *err = sh.err; /* the set's own message, counting its rows */
        }
    }
    if (st != AQ_OK) {
        goto done;
    }
    p->sets[p->n_sets++] = set;
    for (size_t j = 0; j < k; j++) {
        if ((st = ps_take_choice(&p->items[rows[j]], set, j, err)) != AQ_OK) {
            goto done;
        }
    }
done:
    for (size_t j = 0; imps != NULL && j < k; j++) {
        free(imps[j]);
    }
    free(imps);
    free(tensors);
    free(rows);
    return st;
}

/* ---- the default mode's size over the set (aq__plan_over) ---- */

typedef struct ps_plan_src {
    aq__pipe *p;
    aq_ctx *ctx;
    aq_error *err;
} ps_plan_src;

static aq__plan_role ps_plan_role(void *user, size_t i)
{
    const aq__pipe_item *it = &((ps_plan_src *)user)->p->items[i];
    return it->status != AQ_OK ? AQ__PLAN_OUTSIDE : it->role;
}

static aq_status ps_plan_fixed(void *user, size_t i, size_t *elements, size_t *bytes, aq_error *err)
{
    const aq__pipe_item *it = &((ps_plan_src *)user)->p->items[i];
    (void)err;
    *elements = it->layout.elements;
    *bytes = it->layout.packed_bytes + 2 * it->layout.groups * sizeof(float);
    return AQ_OK;
}

/* Row i measured into the plan: its options and the rules' preference. A row that fails
 * (non-finite, a calibration that does not fit) goes to h.row_error. */
static aq_status ps_plan_measure(void *user, size_t i, aq__plan *pl, aq_error *err)
{
    ps_plan_src *src = user;
    aq__pipe *p = src->p;
    aq__pipe_item *it = &p->items[i];
    aq_error row_err;
    aq_error_clear(&row_err);
    float *imp = NULL;
    aq_status st = aq_tensor_check_finite(&it->t, NULL, &row_err);
    if (st == AQ_OK) {
        st = p->h.importance(p->h.user, &it->t, it->layout.elements, &imp, &row_err);
    }
    if (st == AQ_OK) {
        aq__plan_pref pref;
        memset(&pref, 0, sizeof pref);
        if (it->kept) {
            pref.keep_bytes = it->layout.packed_bytes;
            pref.keep_bits = it->layout.bit_width;
        } else if (it->fixed) {
            pref.bits = it->layout.bit_width;
            pref.scheme = it->scheme;
            pref.group_size = src->ctx->group_size;
        }
        st = aq__plan_measure(pl, src->ctx, &it->t, imp, true, &pref, p->q.min_cosine, NULL, i,
                              &row_err);
    }
    if (st != AQ_OK) {
        return p->h.row_error(p->h.user, &it->message, &it->status, &row_err, err);
    }
    return AQ_OK;
}

/* The chosen option of row it becomes its treatment: kept, or quantized through the driver. */
static aq_status ps_plan_take(aq__pipe *p, aq_ctx *ctx, aq__pipe_item *it,
                              const aq__budget_option *x, const float *imp, aq_error *err)
{
    if (x->keep) {
        return AQ_OK;
    }
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    const float *const imps[1] = {imp};
    qo.importance = imp != NULL ? imps : NULL;
    aq_ctx rc =
        aq__ctx_with(ctx, x->scheme, x->bits, x->group_size > 0 ? x->group_size : ctx->group_size);
    aq_qset *set = NULL;
    aq_status st = aq_qset_quantize(&rc, &it->t, 1, &qo, &set, err);
    if (st != AQ_OK) {
        return st;
    }
    p->sets[p->n_sets++] = set;
    it->kept = false;
    return ps_take_choice(it, set, 0, err);
}

/* The default budget with layer rules: one size over every counted row of the set (the rules'
 * profile's target_bpw), the rules' treatments (8 bits, kept in float) as preferences within
 * it. Rows a user override decides are quantized first, as decided, and counted. */
static aq_status ps_default_size(aq__pipe *p, aq_ctx *ctx, aq_error *err)
{
    aq_status st = ps_each(p, ctx, PS_OVERRIDE_ROWS, err);
    if (st != AQ_OK) {
        return st;
    }
    ps_plan_src user = {p, ctx, err};
    const aq__plan_source src = {&user, ps_plan_role, ps_plan_fixed, ps_plan_measure};
    aq__plan pl;
    st = aq__plan_over(&pl, p->n, p->q.budget_schemes, p->q.n_budget_schemes, p->base_scheme, &src,
                       p->q.profile_bpw, p->q.min_cosine > 0.0, err);
    for (size_t j = 0; j < pl.m && st == AQ_OK; j++) {
        st = ps_plan_take(p, ctx, &p->items[pl.index[j]], &pl.opt[j * pl.per + pl.choice[j]],
                          pl.imps[j], err);
    }
    aq__plan_free(&pl);
    return st;
}

aq_status aq__pipe_choose(aq__pipe *p, aq_ctx *ctx, aq_error *err)
{
    const aq__pipe_quality *q = &p->q;
    aq_status st;
    if (p->n > 0) {
        /* Rows quantize through copies of the context (aq__ctx_with): its pool must exist on
         * the context itself first, or each copy would create (and leak) one. */
        aq__pool *pool;
        if ((st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
            return st;
        }
    }
    if (q->min_cosine == 0.0 && q->target_bpw == 0.0) {
        return AQ_OK;
    }
    /* Checked here too, so that an empty set refuses bad values as a full one does. */
    if (!(q->min_cosine >= 0.0 && q->min_cosine <= 1.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid min_cosine: %g. Must be between 0 (off) and 1",
                             q->min_cosine);
    }
    const bool budget = q->target_bpw > 0.0 || q->target_bpw == AQ_TARGET_BPW_PROFILE;
    if (!(q->target_bpw >= 0.0 && q->target_bpw <= 64.0) && !budget) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. Must be between 0 (off) and 64, or "
                             "AQ_TARGET_BPW_PROFILE (-1)",
                             q->target_bpw);
    }
    p->sets = calloc(p->n + 1, sizeof *p->sets); /* one per row, and a budget's */
    if (p->sets == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", p->n);
    }
    if (!budget) {
        return ps_each(p, ctx, PS_ALL_ROWS, err);
    }
    if (q->rules && q->target_bpw == AQ_TARGET_BPW_PROFILE) {
        return ps_default_size(p, ctx, err);
    }
    if (q->rules && (st = ps_each(p, ctx, PS_FIXED_ROWS, err)) != AQ_OK) {
        return st;
    }
    return ps_budget(p, ctx, err);
}

/* ---- execute ---- */

aq_status aq__pipe_encode(aq__pipe *p, aq_ctx *ctx, size_t i, uint8_t *packed, float *scales,
                          float *zps, bool *skipped, aq_error *err)
{
    aq__pipe_item *it = &p->items[i];
    const aq_layout *l = &it->layout;
    if (it->set != NULL) {
        aq_qtensor q;
        aq_status st = aq_qset_get(it->set, it->set_index, NULL, &q, err);
        if (st != AQ_OK || (st = p->h.choice(p->h.user, i, it->name, &it->choice, err)) != AQ_OK) {
            return st;
        }
        memcpy(packed, q.packed, q.packed_size);
        memcpy(scales, q.scales, q.groups * sizeof(float));
        memcpy(zps, q.zero_points, q.groups * sizeof(float));
        return AQ_OK;
    }
    if (it->kept) {
        aq__pipe_keep_encode(&it->t, l->elements, l->bit_width, packed);
        return AQ_OK;
    }
    aq_qbuffers qb = {packed, l->packed_bytes, scales, zps, l->groups};
    aq_error row_err;
    aq_error_clear(&row_err);
    aq_ctx rc = aq__ctx_with(ctx, it->scheme, l->bit_width, l->group_size);
    float *imp = NULL;
    aq_status rst = ps_importance(p, it, &imp, &row_err);
    if (rst == AQ_OK) {
        aq_quantize_options qo = {.size = sizeof(aq_quantize_options), .importance = imp};
        rst = imp != NULL ? aq_quantize_ex(&rc, &it->t, &qo, &qb, NULL, &row_err)
                          : aq_quantize(&rc, &it->t, &qb, &row_err);
    }
    free(imp);
    if (rst == AQ_OK) {
        return AQ_OK;
    }
    it->status = row_err.code;
    *skipped = true;
    return p->h.row_skip(p->h.user, i, it->name, row_err.code, row_err.message, err);
}
