/* The model pipeline's plan (model_plan.c, model_quant.c): what aq_model_plan_create decides
 * for every tensor of a model, what aq_model_execute follows and what aq_model_writer assembles
 * a file from. Internal to src/io. */
#ifndef AQ_MODEL_PLAN_H
#define AQ_MODEL_PLAN_H

#include "aq_common.h"

/* One tensor of the plan. */
typedef struct aq__plan_tensor {
    char *name;
    char *dtype_name; /* as the source names it */
    int64_t *shape;
    size_t ndim;
    size_t elements;
    size_t nbytes; /* in the source */
    int kept;      /* 1: written as it is */
    int fixed;     /* 1: the budget chose scheme/bits/group; the floor does not raise them */
    aq_scheme scheme;
    unsigned bits;
    size_t group_size; /* the context's group for the call (the layout may fix its own) */
    const char *rule;  /* the deciding rule's name (static: aq_rule_name, "not float"); NULL
                          without rules */
} aq__plan_tensor;

struct aq_model_plan {
    size_t n;
    aq__plan_tensor *t;
    /* The context the quantized tensors are made with. */
    unsigned ctx_bits;
    size_t ctx_group;
    aq_scheme ctx_scheme;
    int preserve_moments;
    double min_cosine;     /* the floor (0: none) */
    double recorded_floor; /* what the file records as arrowquant.min_cosine */
    int large;             /* quantized_data is large_binary */
    size_t batch_bytes;
    int compression;
    int calibrated; /* planned with a calibration: execute needs the same one */
    char *profile;
    char *model_meta;
    char *components;
};

/* An empty plan of n tensors (every pointer NULL). */
aq_status aq__model_plan_alloc(size_t n, aq_model_plan **out, aq_error *err);
/* Checks that the plan was made from a model with these tensors (names, dtypes, shapes, sizes):
 * AQ_SHAPE_MISMATCH naming the first tensor that differs. */
aq_status aq__model_plan_match(const aq_model_plan *plan, const aq_model *model, aq_error *err);
/* The bytes tensor i takes in the file when kept (float32 for BF16/F64 sources). */
size_t aq__model_plan_kept_bytes(const aq__plan_tensor *t);

#endif /* AQ_MODEL_PLAN_H */
