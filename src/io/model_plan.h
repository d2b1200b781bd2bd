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
    /* A GGUF plan: the tensor's aq_gguf_type, why it got it (static: "type", "1-D", "block",
     * "range" or the rule's name), its bytes in the file (whole blocks of that type). */
    uint32_t gguf_type;
    const char *reason;
    size_t gguf_bytes;
} aq__plan_tensor;

/* What a plan writes. */
typedef enum aq__plan_format {
    AQ__PLAN_MODEL_FILE = 0, /* the Arrow IPC model file (model_quant.c) */
    AQ__PLAN_GGUF = 1,       /* a GGUF file (gguf_write.c) */
} aq__plan_format;

struct aq_model_plan {
    aq__plan_format format;
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
    /* A GGUF plan: the options' type (general.file_type), the context's gguf_search,
     * general.architecture and general.name (NULL: none written), the source's __metadata__. */
    uint32_t gguf_type;
    int gguf_search;
    char *arch;
    char *gguf_name;
    size_t n_meta;
    char **meta_keys, **meta_values;
};

/* An empty plan of n tensors (every pointer NULL). */
aq_status aq__model_plan_alloc(size_t n, aq_model_plan **out, aq_error *err);
/* Checks that the plan was made from a model with these tensors (names, dtypes, shapes, sizes):
 * AQ_SHAPE_MISMATCH naming the first tensor that differs. */
aq_status aq__model_plan_match(const aq_model_plan *plan, const aq_model *model, aq_error *err);
/* The checks before a plan made elsewhere is followed here (fn names the public call in the
 * messages): the plan made with a calibration exactly when one is given, made for this model
 * (aq__model_plan_match), and out_path a place the file can go, none of the inputs. */
aq_status aq__model_plan_follow_check(const char *fn, const aq_model_plan *plan,
                                      const aq_model *model, const aq_calib *calib,
                                      const char *out_path, aq_error *err);
/* The bytes tensor i takes in the file when kept (float32 for BF16/F64 sources). */
size_t aq__model_plan_kept_bytes(const aq__plan_tensor *t);
/* Whether a GGUF plan's tensor t holds a decision the GGUF planner makes: a writable type,
 * whole blocks of it, its size, kept exactly for the float types (gguf_write.c). */
bool aq__gguf_plan_tensor_ok(const aq__plan_tensor *t);
/* A copy of the model's tensors (names, dtypes, shapes, sizes) into the plan's records. */
aq_status aq__model_plan_tensors(aq_model_plan *plan, const aq_model *model, aq_error *err);
/* A copy of a string (NULL stays NULL); false when out of memory. */
bool aq__model_plan_dup(char **out, const char *str);

/* ---- GGUF plans (gguf_plan.c, gguf_write.c) ---- */

/* aq_model_plan_create_gguf with options already read. */
aq_status aq__gguf_plan_make(aq_ctx *ctx, aq_model *model, const aq_gguf_write_options *opts,
                             aq_model_plan **out, aq_error *err);
/* aq_model_execute of a GGUF plan, its arguments checked (range, calibration, model). */
aq_status aq__gguf_execute(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan, size_t begin,
                           size_t end, const aq_model_execute_options *opts,
                           struct ArrowSchema *schema, struct ArrowArray *rows, aq_error *err);
/* aq_model_writer of a GGUF plan: the header written at open, then each tensor's bytes. */
typedef struct aq__gguf_writer aq__gguf_writer;
aq_status aq__gguf_writer_open(const aq_model_plan *plan, const char *out_path,
                               aq_gguf_tensor_fn on_tensor, void *on_tensor_user,
                               aq__gguf_writer **out, aq_error *err);
aq_status aq__gguf_writer_append(aq__gguf_writer *w, const struct ArrowSchema *schema,
                                 const struct ArrowArray *rows, aq_error *err);
aq_status aq__gguf_writer_close(aq__gguf_writer *w, aq_model_summary *summary,
                                aq_gguf_write_summary *gguf_summary, aq_error *err);
void aq__gguf_writer_free(aq__gguf_writer *w);
/* The writer's reports as a model file's writer makes them (aq_model_writer_options' on_tensor
 * and progress): each tensor written, as aq_model_quantize reports one (scheme, bit_width and
 * group_size 0: its type is on_gguf_tensor's), then progress. */
void aq__gguf_writer_reports(aq__gguf_writer *w, aq_model_tensor_fn on_tensor, void *on_tensor_user,
                             aq_model_progress_fn progress, void *progress_user);

/* ---- rows: the struct arrays aq_model_execute makes and aq_model_writer reads (model_rows.c) */

/* A utf8 column of one string per row; a column of n fixed-size values. */
aq_status aq__rows_utf8(struct ArrowArray *a, const char *const *strs, size_t n, aq_error *err);
aq_status aq__rows_prim(struct ArrowArray *a, const void *vals, size_t elem, size_t n,
                        aq_error *err);
/* Reading rows in place. Element j (of the parent's rows) of a variable-size column (wide:
 * 64-bit offsets): its values' start and count. */
void aq__rows_span(const struct ArrowArray *a, bool wide, int64_t j, int64_t *start, size_t *n);
/* Element j (of the parent's rows) of a fixed-size column of elem-byte values. */
const void *aq__rows_value(const struct ArrowArray *a, int64_t j, size_t elem);
/* Element idx of a buffer of elem-byte values; NULL for a buffer that is absent (an empty
 * column may have none). */
const void *aq__rows_at(const void *base, size_t elem, int64_t idx);
/* Whether s[0..n) is the string want. */
bool aq__rows_is(const char *s, size_t n, const char *want);
/* AQ_INVALID_DATA naming the first of the n columns of rows that has nulls. */
aq_status aq__rows_no_nulls(const struct ArrowArray *rows, const char *const *names, size_t n,
                            aq_error *err);

/* ---- the summary of a written file (model_rows.c) ---- */

typedef struct aq__model_totals {
    aq_model_summary sum;
    double sqnr_sum, cos_sum;
    size_t finite;
} aq__model_totals;

void aq__model_totals_init(aq__model_totals *tot);
/* One tensor written: kept (as it is, or in a float type) or quantized, its source and output
 * bytes and its quality. name must outlive the summary. */
void aq__model_totals_add(aq__model_totals *tot, const char *name, bool kept, size_t elements,
                          size_t bytes_in, size_t bytes_out, double sqnr_db, double cosine);
/* The means, once every tensor is written, into *out (may be NULL). */
void aq__model_totals_finish(aq__model_totals *tot, size_t batches, aq_model_summary *out);

#endif /* AQ_MODEL_PLAN_H */
