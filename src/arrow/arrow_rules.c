/*
 * Layer rules and calibration in the batch path: the base parameters the rules give a result,
 * and importance vectors from a finished aq_calib.
 */
#include "arrow_internal.h"
#include "quant_internal.h"

#include <stdlib.h>

aq_status aq__arrow_check_calib(const aq_batch_options *opts, aq_error *err)
{
    if (opts == NULL || opts->calib == NULL) {
        return AQ_OK;
    }
    /* An empty name matches no layer ("L.weight"), so this only asks whether the statistics
     * are finished, before any row could fail for that reason. */
    int found = 0;
    return aq_calib_importance(opts->calib, "", NULL, 0, NULL, 0, &found, err);
}

aq_status aq__arrow_importance(const aq_batch_options *opts, const aq_tensor *t, size_t elements,
                               float **out, aq_error *err)
{
    *out = NULL;
    if (opts == NULL || opts->calib == NULL || t->name == NULL) {
        return AQ_OK;
    }
    float *v = malloc((elements > 0 ? elements : 1) * sizeof *v);
    if (v == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory for its importance",
                             t->name);
    }
    int found = 0;
    aq_status st =
        aq_calib_importance(opts->calib, t->name, t->shape, t->ndim, v, elements, &found, err);
    if (st != AQ_OK || !found) {
        free(v);
        return st;
    }
    aq__importance_temper(v, elements);
    *out = v;
    return AQ_OK;
}

void aq__arrow_base_params(const aq_ctx *ctx, const aq_batch_options *opts, aq_scheme *scheme,
                           unsigned *bits, size_t *group_size)
{
    if (opts != NULL && opts->rules != NULL) {
        aq_profile prof;
        aq_rules_profile(opts->rules, &prof);
        *scheme = prof.scheme;
        *bits = prof.bit_width;
        *group_size = aq__scheme_group(prof.scheme, ctx->group_size);
        return;
    }
    *scheme = ctx->scheme;
    *bits = ctx->bit_width;
    *group_size = aq__scheme_group(ctx->scheme, ctx->group_size);
}
