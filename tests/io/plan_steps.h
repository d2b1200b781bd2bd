/*
 * plan_steps.h - steps shared by the plan tests (test_model_plan.c, test_gguf_plan.c): a plan
 * read back from its bytes, as another process receives it, and ranges of a plan executed and
 * appended to a writer in order, as workers and the writer do.
 */
#ifndef AQ_TEST_PLAN_STEPS_H
#define AQ_TEST_PLAN_STEPS_H

#include "aq_common.h"

/* plan serialised, then read back into *back (the caller frees it). */
static inline aq_status plan_read_back(const aq_model_plan *plan, aq_model_plan **back,
                                       aq_error *err)
{
    void *bytes;
    size_t len;
    aq_status st = aq_model_plan_serialize(plan, &bytes, &len, err);
    if (st != AQ_OK) {
        return st;
    }
    st = aq_model_plan_deserialize(bytes, len, back, err);
    aq_model_plan_bytes_free(bytes);
    return st;
}

/* Executes [cuts[k], cuts[k+1]) of plan for each k (eo may be NULL) and appends each range's
 * rows to w in order. A range that gives another number of rows than it has tensors is
 * AQ_INTERNAL. */
static inline aq_status ranges_append(aq_ctx *ctx, aq_model *m, const aq_model_plan *plan,
                                      const size_t *cuts, size_t n_cuts,
                                      const aq_model_execute_options *eo, aq_model_writer *w,
                                      aq_error *err)
{
    for (size_t k = 0; k + 1 < n_cuts; k++) {
        struct ArrowSchema sc;
        struct ArrowArray rows;
        aq_status st = aq_model_execute(ctx, m, plan, cuts[k], cuts[k + 1], eo, &sc, &rows, err);
        if (st != AQ_OK) {
            return st;
        }
        if (rows.length != (int64_t)(cuts[k + 1] - cuts[k])) {
            st = aq__error_set(err, AQ_INTERNAL, "range %zu..%zu gave %lld rows", cuts[k],
                               cuts[k + 1], (long long)rows.length);
        } else {
            st = aq_model_writer_append(w, &sc, &rows, err);
        }
        rows.release(&rows);
        sc.release(&sc);
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

#endif
