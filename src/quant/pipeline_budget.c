/*
 * An explicit size budget over a set of tensors read one at a time (the model path's): the
 * sizes known before any tensor is read, a measuring pass (every scheme of the budget's list at
 * 2, 4 and 8 bits, each option quantized and measured, its output dropped), then the
 * allocation (aq__budget_allocate). The tensors come through an aq__budget_source, so the
 * pass reads each from wherever its caller keeps it (a file's mapping) and gives it back.
 */
#include "pipeline.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The sizes known before any tensor is measured: least/all, the budgeted tensors' smallest
 * bytes and their weights; fixed/floats, the bytes of the other float tensors (scope model
 * only) and the weights of every float tensor. */
typedef struct pb_sizes {
    size_t least, all, fixed, floats;
} pb_sizes;

static aq_status pb_sizes_of(const aq_ctx *ctx, const aq__budget_source *src,
                             const aq__budget_params *bp, pb_sizes *z, aq_error *err)
{
    memset(z, 0, sizeof *z);
    for (size_t i = 0; i < src->n; i++) {
        const aq__plan_role role = src->role(src->user, i);
        if (role == AQ__PLAN_OUTSIDE) {
            continue; /* not a float: outside every scope */
        }
        const int64_t *shape;
        size_t ndim, elements;
        src->shape(src->user, i, &shape, &ndim, &elements);
        z->floats += elements;
        aq_status st;
        if (role == AQ__PLAN_FIXED) {
            size_t b = 0;
            if (bp->whole && (st = src->fixed(src->user, i, &b, err)) != AQ_OK) {
                return st;
            }
            z->fixed += b;
            continue;
        }
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < bp->n_schemes; k++) {
            aq_layout l;
            if ((st = aq_layout_compute_scheme(bp->schemes[k], shape, ndim, 2,
                                               aq__ctx_group_size(ctx), &l, err)) != AQ_OK) {
                return st;
            }
            size_t b = l.packed_bytes + 2 * l.groups * sizeof(float);
            best = b < best ? b : best;
        }
        z->least += best;
        z->all += elements;
    }
    return AQ_OK;
}

/* An explicit budget in bits per weight over the budgeted tensors (*target), refused before
 * the measuring pass when even the smallest layouts exceed it. */
static aq_status pb_target(const aq__budget_params *bp, const pb_sizes *z, double *target,
                           aq_error *err)
{
    *target = bp->target_bpw;
    if (bp->whole) {
        double budget_bytes = floor(bp->target_bpw * (double)z->floats / 8.0) - (double)z->fixed;
        if (z->floats > 0 &&
            (double)(z->least + z->fixed) > floor(bp->target_bpw * (double)z->floats / 8.0)) {
            return aq__error_set(
                err, AQ_INVALID_PARAMETER,
                "Invalid target_bpw: %g over the whole model (budget scope model). The smallest "
                "allocation needs %.4f bits per weight over its %zu float parameters (kept and "
                "rule-fixed tensors alone take %.4f)",
                bp->target_bpw, (double)(z->least + z->fixed) * 8.0 / (double)z->floats, z->floats,
                (double)z->fixed * 8.0 / (double)z->floats);
        }
        /* budget_bytes is whole: half a byte more keeps rounding from refusing an exact fit
         * without admitting a byte too many. */
        *target = z->all > 0 ? (budget_bytes + 0.5) * 8.0 / (double)z->all : 0.0;
    } else if (z->all > 0 && (double)z->least > bp->target_bpw * (double)z->all / 8.0) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. The smallest allocation needs %.4f bits "
                             "per weight",
                             bp->target_bpw, (double)z->least * 8.0 / (double)z->all);
    }
    return AQ_OK;
}

/* The measuring pass: every (scheme, 2/4/8 bits) of every budgeted tensor, in their order,
 * into rows of opt (*m of them, over *elements weights). */
static aq_status pb_measure(aq_ctx *ctx, const aq__budget_source *src, const aq__budget_params *bp,
                            aq__budget_option *opt, size_t *count, size_t *m, size_t *elements,
                            aq_error *err)
{
    static const unsigned bits[3] = {2, 4, 8};
    const size_t per = 3 * bp->n_schemes;
    aq__scratch sc;
    memset(&sc, 0, sizeof sc);
    aq_status st = AQ_OK;
    for (size_t i = 0; i < src->n && st == AQ_OK; i++) {
        if (src->role(src->user, i) != AQ__PLAN_CHOSEN) {
            continue;
        }
        aq_tensor t;
        const float *imp = NULL;
        st = src->view(src->user, i, &t, &imp, err);
        aq__budget_option *row = opt + *m * per;
        for (size_t k = 0; k < per && st == AQ_OK; k++) {
            st = aq__option_measure(ctx, &t, imp, bp->schemes[k / 3], bits[k % 3], 0,
                                    bp->min_cosine, bp->cancel, &sc, &row[count[*m]++], err);
        }
        src->release(src->user, i);
        if (st != AQ_OK) {
            break;
        }
        const int64_t *shape;
        size_t ndim, n;
        src->shape(src->user, i, &shape, &ndim, &n);
        *elements += n;
        (*m)++;
        src->measured(src->user, i);
    }
    aq__scratch_free(&sc);
    return st;
}

/* AQ_TARGET_BPW_PROFILE: the run's own size over the budgeted tensors, each at the own scheme
 * and bits, raised by the floor as without a budget (2 -> 4 -> 8 while below it), in bits per
 * weight over the m budgeted tensors' elements. */
static aq_status pb_self(const aq_ctx *ctx, const aq__budget_source *src,
                         const aq__budget_params *bp, const aq__budget_option *opt, size_t per,
                         const size_t *count, size_t m, size_t elements, double *target,
                         aq_error *err)
{
    double total = 0.0;
    for (size_t j = 0, i = 0; j < m; j++, i++) {
        while (src->role(src->user, i) != AQ__PLAN_CHOSEN) {
            i++;
        }
        const aq__budget_option *row = opt + j * per, *pick = NULL;
        for (size_t q = 0; q < count[j]; q++) {
            if (row[q].scheme != bp->own_scheme || row[q].bits < bp->own_bits) {
                continue;
            }
            pick = &row[q]; /* options come in increasing bits per scheme */
            if (row[q].meets) {
                break;
            }
        }
        if (pick != NULL) {
            total += (double)pick->bytes;
            continue;
        }
        /* The own scheme is not among the candidates: its layout at its bits. */
        const int64_t *shape;
        size_t ndim, n;
        src->shape(src->user, i, &shape, &ndim, &n);
        aq_layout l;
        aq_status st = aq_layout_compute_scheme(bp->own_scheme, shape, ndim, bp->own_bits,
                                                aq__ctx_group_size(ctx), &l, err);
        if (st != AQ_OK) {
            return st;
        }
        total += (double)(l.packed_bytes + 2 * l.groups * sizeof(float));
    }
    *target = (total + 0.5) * 8.0 / (double)elements;
    return AQ_OK;
}

aq_status aq__budget_over(aq_ctx *ctx, const aq__budget_source *src, const aq__budget_params *bp,
                          aq__budget_option *plan, aq_error *err)
{
    for (size_t k = 0; k < bp->n_schemes; k++) {
        if ((unsigned)bp->schemes[k] >= AQ_SCHEME_COUNT) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid scheme %d in the budget's list", (int)bp->schemes[k]);
        }
    }
    const size_t per = 3 * bp->n_schemes, rows = src->n > 0 ? src->n : 1;
    aq__budget_option *opt = calloc(rows * per, sizeof *opt);
    size_t *count = calloc(rows, sizeof *count), *choice = calloc(rows, sizeof *choice);
    aq_status st = AQ_OK;
    pb_sizes z;
    size_t m = 0, elements = 0;
    double target = 0.0;
    if (opt == NULL || count == NULL || choice == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory planning the budget");
        goto done;
    }
    const bool self = bp->target_bpw == AQ_TARGET_BPW_PROFILE;
    if ((st = pb_sizes_of(ctx, src, bp, &z, err)) != AQ_OK ||
        (!self && (st = pb_target(bp, &z, &target, err)) != AQ_OK) ||
        (st = pb_measure(ctx, src, bp, opt, count, &m, &elements, err)) != AQ_OK ||
        m == 0 /* nothing to choose: every float tensor is kept or fixed */ ||
        (self &&
         (st = pb_self(ctx, src, bp, opt, per, count, m, elements, &target, err)) != AQ_OK)) {
        goto done;
    }
    st = aq__budget_allocate(opt, m, per, count, elements, target, bp->min_cosine > 0.0, choice,
                             err);
    if (st == AQ_INVALID_PARAMETER && bp->whole) {
        /* Only the floor can get here: each row's first option is now its smallest meeting
         * min_cosine. Say it over the whole model. */
        size_t need = z.fixed;
        for (size_t j = 0; j < m; j++) {
            need += opt[j * per].bytes;
        }
        st = aq__error_set(err, AQ_INVALID_PARAMETER,
                           "Invalid target_bpw: %g over the whole model (budget scope model). "
                           "The smallest allocation meeting min_cosine needs %.4f bits per weight "
                           "over its %zu float parameters",
                           bp->target_bpw, (double)need * 8.0 / (double)z.floats, z.floats);
    }
    for (size_t i = 0, j = 0; i < src->n && st == AQ_OK; i++) {
        if (src->role(src->user, i) == AQ__PLAN_CHOSEN) {
            plan[i] = opt[j * per + choice[j]];
            j++;
        }
    }
done:
    free(opt);
    free(count);
    free(choice);
    return st;
}
