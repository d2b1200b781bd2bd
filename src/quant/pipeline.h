/* The quantization pipeline's stages that every entry point shares (pipeline.c): measuring a
 * tensor's options, the floor and the size budget, and the default mode's model-wide size with
 * the layer rules as preferences. The batch path (src/arrow) and the model path (src/io) are
 * adapters: they read their tensors, ask these stages what each tensor becomes, and write the
 * result in their own format. docs/pipeline.md has the stages and what the size counts. */
#ifndef AQ_PIPELINE_H
#define AQ_PIPELINE_H

#include "quant_internal.h"

/* A copy of ctx that quantizes with another scheme, bits and group size: the same kernels and
 * thread pool (aq__ctx_pool must have created the pool on ctx first, or each copy would make
 * its own), nothing of it owned. */
aq_ctx aq__ctx_with(const aq_ctx *ctx, aq_scheme scheme, unsigned bits, size_t group_size);

/* The context's group size (for schemes whose layout has one). */
size_t aq__ctx_group_size(const aq_ctx *ctx);

/* SQNR (dB), cosine similarity and the sum of squared errors from the sums a kernel's
 * error_stats gives (acc[0] sum x^2, acc[1] sum e^2, acc[2] sum x*y, acc[3] sum y^2, acc[4]
 * max |e|): the one place these formulas live. */
void aq__metrics_from_sums(const double acc[5], double *sqnr, double *cosine, double *maxerr);

/* Adds the error sums of y (float32) against src (n elements of dtype d) to acc, with the
 * kernel table's error statistics (the same sums on every table). */
void aq__error_sums(const aq_ctx *ctx, aq_dtype d, const void *src, const float *y, size_t n,
                    double acc[5]);

/* ---- measuring a quantized tensor against its source, block of rows by block of rows ---- */

/* Rows dequantized at once: a multiple of 8 rows near 2^16 elements, so that every block starts
 * on a byte of the packed codes. The sums come in block order, the same whether the tensor was
 * quantized whole or block by block. */
typedef struct aq__meter {
    aq_ctx *ctx;
    const aq_tensor *src;
    aq_qtensor q;      /* the whole tensor as quantized, in its scheme's layout */
    size_t rows, cols; /* the tensor's own rows (shape[0]), whatever the scheme's layout */
    size_t block_rows;
    float *buf; /* block_rows * cols floats, the caller's (aq__meter_buffer) */
    double acc[5];
    /* NULL, or one importance weight per element of the tensor (row-major): then wacc[0] sums
     * imp * e^2 and wacc[1] imp, in block order. */
    const float *imp;
    double wacc[2];
    const volatile int *cancel; /* polled between blocks; may be NULL */
} aq__meter;

/* Starts measuring src as quantized into (packed, scales, zps) laid out as l with scheme. The
 * block buffer is *buf (grown to the block's size when smaller than *cap; the caller frees it),
 * so that it is reused from tensor to tensor. */
aq_status aq__meter_init(aq_ctx *ctx, const aq_tensor *src, aq_scheme scheme, const aq_layout *l,
                         const uint8_t *packed, const float *scales, const float *zps, float **buf,
                         size_t *cap, aq__meter *m, aq_error *err);
/* Adds rows [r0, r1) of the tensor (whole blocks from its start, or its end) to the sums. */
aq_status aq__meter_rows(aq__meter *m, size_t r0, size_t r1, aq_error *err);

/* ---- options, the floor and the budget ---- */

/* A tensor's output buffers while it is measured, reused from option to option and tensor to
 * tensor. aq__scratch_free frees them. */
typedef struct aq__scratch {
    uint8_t *packed;
    size_t packed_cap;
    float *scales, *zps;
    size_t groups_cap;
    float *mbuf;
    size_t mbuf_cap;
} aq__scratch;
void aq__scratch_free(aq__scratch *s);

/* Quantizes src with (scheme, bits, group_size; 0: the context's) (importance imp, may be
 * NULL) into the scratch buffers and measures it: out gets the scheme, bits, group size (as
 * given), bytes (codes, scales and zero points), the squared error, the relative error (the
 * squared error weighted by imp scaled to a mean of 1, over the tensor's sum of squares) and
 * whether the cosine reaches min_cosine (true when min_cosine is 0). */
aq_status aq__option_measure(aq_ctx *ctx, const aq_tensor *src, const float *imp, aq_scheme scheme,
                             unsigned bits, size_t group_size, double min_cosine,
                             const volatile int *cancel, aq__scratch *sc, aq__budget_option *out,
                             aq_error *err);

/* The (scheme, bits, group size) a default-mode budget measures for each tensor: every scheme
 * of list (n of them; with none, `fallback`, the profile's scheme) at 2, 4 and 8 bits in the
 * context's group size (groups[k] = 0), plain affine at 2, 4 and 8 bits in it unless affine is
 * listed, and plain affine at 2, 4 and 8 bits in groups of 128, 256 and 512 whatever the
 * context's group size (the profiles' is kquant's 512, the command's 128: the same options
 * either way, so the entry points choose the same bytes). Affine with groups of 128 takes exactly N
 * + 0.5 bits per weight on rows of whole groups, where kquant's last partial super-block takes a
 * little more: without it, a model whose rules ask for more bits somewhere could not fit 2.625 at
 * all (2-bit affine takes 2.5). The wider groups take N + 0.25 and N + 0.125 (a little more on rows
 * of partial groups): the steps between the widths, so that a model whose tensors all want N bits
 * need not drop one to the next width down when every N-bit option of some tensors takes a little
 * more than N + 0.5. Returns the count (at most AQ__PLAN_MAX_CANDIDATES); AQ_INVALID_PARAMETER for
 * an unknown scheme. */
#define AQ__PLAN_WIDE_GROUPS 3
#define AQ__PLAN_MAX_CANDIDATES (3 * AQ_SCHEME_COUNT + 3 + 3 * AQ__PLAN_WIDE_GROUPS)
aq_status aq__plan_candidates(const aq_scheme *list, size_t n, aq_scheme fallback,
                              aq_scheme *schemes, unsigned *bits, size_t *groups, size_t *count,
                              aq_error *err);

/* How the default mode's size treats one tensor, from its rule decision: */
typedef enum aq__plan_role {
    AQ__PLAN_OUTSIDE = 0, /* not counted: a tensor of fewer than 2 dimensions the rules keep as
                             it comes (a bias, a norm, another vector), or not a float tensor */
    AQ__PLAN_FIXED,       /* counted at the bytes it is written with, not chosen for: what a
                             user override decides (kept or given bits), whatever its shape */
    AQ__PLAN_CHOSEN       /* counted, and the budget chooses among its options; the rules'
                             treatment (8 bits, or kept in float) is its preference */
} aq__plan_role;
/* (An empty tensor is outside: there is nothing to count.) */
aq__plan_role aq__plan_role_of(const aq_rule_decision *d, size_t ndim, size_t elements);

/* The size of the default mode: target_bpw bits per weight over `elements` counted weights,
 * in whole bytes. */
size_t aq__plan_budget_bytes(double target_bpw, size_t elements);

/* The default mode's allocation over n tensors: opt holds n rows of `per` options, row i with
 * count[i] of them (rewritten in place to each row's lower convex hull of (bytes, sse)); want[i]
 * is the bytes of the option the rules prefer for tensor i (0: none). Every tensor starts at its
 * smallest option; then, while the total stays within budget bytes, each tensor moves up to its
 * smallest option meeting the floor (with floor), then up to the rules' preferred option, then
 * any upgrade that fits, each stage taking the upgrade saving the most squared error per added
 * byte first. choice[i] gets the index of tensor i's option in its rewritten row.
 * AQ_INVALID_PARAMETER when even the smallest options exceed the budget; the message gives both
 * sizes over the `counted` weights, with fixed_bytes of tensors outside the choice. */
aq_status aq__plan_allocate(aq__budget_option *opt, size_t n, size_t per, const size_t *count,
                            const size_t *want, size_t budget, size_t fixed_bytes, size_t counted,
                            double target_bpw, bool floor, size_t *choice, aq_error *err);

/* ---- the default mode's plan over a set of tensors, as both paths run it ---- */

/* What the rules prefer for a chosen tensor. */
typedef struct aq__plan_pref {
    size_t keep_bytes; /* > 0: the rules keep it in float, as keep_bits raw floats of this size */
    unsigned keep_bits;
    unsigned bits; /* > 0: the rules give it these bits (and scheme) rather than the profile's */
    aq_scheme scheme;
    size_t group_size; /* the layout's group size of that scheme, for its size */
} aq__plan_pref;

/* The plan's arrays: row j (tensor index[j] of the caller) holds count[j] options of per. */
typedef struct aq__plan {
    aq_scheme schemes[AQ__PLAN_MAX_CANDIDATES];
    unsigned bits[AQ__PLAN_MAX_CANDIDATES];
    size_t groups[AQ__PLAN_MAX_CANDIDATES]; /* 0: the context's group size */
    size_t n_candidates, per, m;
    aq__budget_option *opt;
    size_t *count, *want, *choice, *index;
    float **imps;          /* each row's importance (owned; NULL for none) */
    size_t counted, fixed; /* weights within the size, and the bytes of the fixed tensors */
    aq__scratch scratch;
} aq__plan;

/* A plan for up to n chosen tensors, measuring the candidates of aq__plan_candidates. */
aq_status aq__plan_init(aq__plan *p, size_t n, const aq_scheme *list, size_t n_list,
                        aq_scheme fallback, aq_error *err);
void aq__plan_free(aq__plan *p);

/* Measures chosen tensor t (the caller's tensor `index`, importance imp or NULL) into the
 * plan's next row: every candidate, and the raw option for a kept one. Each option's sse is
 * its relative error (aq__budget_option.relative): the plan minimises the sum of the tensors'
 * relative errors, importance-weighted where there is an importance. With own, imp (from
 * malloc) belongs to the plan from here on, kept as p->imps[row] until aq__plan_free, even on
 * failure; otherwise it is only borrowed for the call. A failure leaves the row out (the caller
 * may go on without it). */
aq_status aq__plan_measure(aq__plan *p, aq_ctx *ctx, const aq_tensor *t, float *imp, bool own,
                           const aq__plan_pref *pref, double min_cosine, const volatile int *cancel,
                           size_t index, aq_error *err);

/* The allocation over the measured rows at target_bpw over p->counted weights (p->fixed bytes
 * outside the choice): aq__plan_allocate. Row j's chosen option is then
 * p->opt[j * p->per + p->choice[j]], to be quantized in its group size (0: the context's). */
aq_status aq__plan_run(aq__plan *p, double target_bpw, bool floor, aq_error *err);

/* The default mode's plan over tensors 0..n-1 of a caller, as both paths run it: aq__plan_init
 * with (list, n_list, fallback), then each tensor by its role (src->role): a fixed one adds its
 * weights and bytes (src->fixed) to the size, a chosen one is measured into the plan
 * (src->measure, which calls aq__plan_measure; a caller that skips bad tensors returns AQ_OK
 * without a row), then the allocation at target_bpw (aq__plan_run). The caller reads the
 * choices (p->index, p->choice) and frees p (aq__plan_free) in every case. */
typedef struct aq__plan_source {
    void *user;
    aq__plan_role (*role)(void *user, size_t i);
    aq_status (*fixed)(void *user, size_t i, size_t *elements, size_t *bytes, aq_error *err);
    aq_status (*measure)(void *user, size_t i, aq__plan *p, aq_error *err);
} aq__plan_source;
aq_status aq__plan_over(aq__plan *p, size_t n, const aq_scheme *list, size_t n_list,
                        aq_scheme fallback, const aq__plan_source *src, double target_bpw,
                        bool floor, aq_error *err);

/* The floor, as every path applies it: attempt quantizes the tensor at a bit width and gives
 * its cosine; while that stays below min_cosine (and the width is not fixed, by a budget's
 * choice), the next width is tried: 2 -> 4 -> 8. *bits is the first width in, the kept one out;
 * *initial_cosine (may be NULL) the cosine at the first. attempt's buffers hold the kept
 * width's result (it replaces them at each attempt). */
typedef aq_status (*aq__floor_attempt_fn)(void *user, unsigned bits, double *cosine, aq_error *err);
aq_status aq__floor_run(unsigned *bits, double min_cosine, bool fixed, aq__floor_attempt_fn attempt,
                        void *user, double *initial_cosine, aq_error *err);

/* ---- an explicit budget over tensors read one at a time (pipeline_budget.c) ---- */

/* The tensors an explicit budget plans over: each one's role (OUTSIDE: not a float tensor;
 * FIXED: a float tensor the budget does not choose for; CHOSEN: one it does), its shape, a fixed
 * tensor's bytes (asked only when the budget covers the whole model), and a chosen one's view
 * and importance (NULL: none) for the measuring pass, given back by release (called after
 * view, whether it succeeded or not), then `measured` (progress). */
typedef struct aq__budget_source {
    void *user;
    size_t n;
    aq__plan_role (*role)(void *user, size_t i);
    void (*shape)(void *user, size_t i, const int64_t **shape, size_t *ndim, size_t *elements);
    aq_status (*fixed)(void *user, size_t i, size_t *bytes, aq_error *err);
    aq_status (*view)(void *user, size_t i, aq_tensor *t, const float **imp, aq_error *err);
    void (*release)(void *user, size_t i);
    void (*measured)(void *user, size_t i);
} aq__budget_source;

typedef struct aq__budget_params {
    double target_bpw; /* > 0, or AQ_TARGET_BPW_PROFILE: the size the own scheme and bits take,
                          raised by the floor */
    bool whole;        /* target_bpw covers every float tensor, not only the chosen ones */
    double min_cosine;
    const aq_scheme *schemes; /* the candidates, each at 2, 4 and 8 bits (at least one) */
    size_t n_schemes;
    aq_scheme own_scheme; /* what the chosen tensors would get without a budget */
    unsigned own_bits;
    const volatile int *cancel;
} aq__budget_params;

/* The budget's choice for each chosen tensor i in plan[i] (n entries, the others untouched);
 * nothing when no tensor is chosen. AQ_INVALID_PARAMETER, before any tensor is read, when even
 * the smallest layouts exceed the budget, and after the measuring pass when the floor cannot
 * fit. */
aq_status aq__budget_over(aq_ctx *ctx, const aq__budget_source *src, const aq__budget_params *bp,
                          aq__budget_option *plan, aq_error *err);

/* ---- the pipeline over a set of tensors held in memory (pipeline_set.c) ----
 *
 * The batch and stream paths (src/arrow) and aq_tensors_quantize are its adapters: they fill
 * the items (a tensor view each, read in place), and write the result in their own format;
 * everything between, decide, floor and budget, execute, is here. What the stages need from
 * above this layer (the layer rules' decision, a calibration's importance, where a bad row or
 * a choice is reported, progress) comes through aq__pipe_hooks. */

/* One tensor of the set. */
typedef struct aq__pipe_item {
    const char *name; /* NUL-terminated; "" when unknown */
    size_t name_len;
    aq_tensor t;
    aq_layout layout;
    size_t elements;  /* weights in the row, 0 when unknown */
    aq_status status; /* AQ_OK, or why the row is skipped (continue mode) */
    char *message;    /* with status: the reason, owned */
    /* With a floor or a budget: the row's quantized tensor, entry set_index of set (owned by
     * the pipe). */
    const aq_qset *set;
    size_t set_index;
    aq_scheme scheme;
    aq_qset_choice choice;
    /* Layer rules: kept rows are stored raw (layout.bit_width 16 or 32, no groups); fixed rows
     * have bits from a rule other than the profile's and stay outside an explicit budget. */
    bool kept;
    bool fixed;
    aq__plan_role role; /* what the default mode's size does with the row */
} aq__pipe_item;

/* What the stages ask of the caller. Each returns AQ_OK or the error that stops the set. */
typedef struct aq__pipe_hooks {
    void *user;
    /* The layer rules' decision for t, in *d with *ruled = true; *ruled = false without rules. */
    aq_status (*decide)(void *user, const aq_tensor *t, aq_rule_decision *d, bool *ruled,
                        aq_error *err);
    /* t's importance (malloc'd, one per element) in *out, or NULL for none. */
    aq_status (*importance)(void *user, const aq_tensor *t, size_t elements, float **out,
                            aq_error *err);
    /* A row failed before execution (row_err): stop mode copies it to err and returns its code;
     * continue mode keeps the reason in *message (owned) and *status and returns AQ_OK. */
    aq_status (*row_error)(void *user, char **message, aq_status *status, const aq_error *row_err,
                           aq_error *err);
    /* Row i is left out of the result: stop mode fails with code and message. */
    aq_status (*row_skip)(void *user, size_t i, const char *name, aq_status code,
                          const char *message, aq_error *err);
    /* One more row done (elements weights); may stop the set (AQ_CANCELLED). */
    aq_status (*progress)(void *user, size_t elements, aq_error *err);
    /* Row i was quantized with a floor's or a budget's choice. */
    aq_status (*choice)(void *user, size_t i, const char *name, const aq_qset_choice *c,
                        aq_error *err);
} aq__pipe_hooks;

/* The floor and the budget of a set (all zero: plain quantization). */
typedef struct aq__pipe_quality {
    double min_cosine;
    double target_bpw; /* > 0, or AQ_TARGET_BPW_PROFILE */
    const aq_scheme *budget_schemes;
    size_t n_budget_schemes;
    bool rules;         /* the rows were decided by layer rules */
    double profile_bpw; /* with rules: their profile's target_bpw */
} aq__pipe_quality;

typedef struct aq__pipe {
    size_t n;
    aq__pipe_item *items;
    char *names;     /* name arena */
    int64_t *shapes; /* n * AQ_MAX_NDIM */
    aq_qset **sets;  /* one per row (floor) and one for the set (budget) */
    size_t n_sets;
    size_t reported; /* rows whose progress was reported */
    /* What rows follow by default (the rules' profile's scheme and bits, or the context's). */
    aq_scheme base_scheme;
    unsigned base_bits;
    size_t base_group;
    aq__pipe_quality q;
    aq__pipe_hooks h;
} aq__pipe;

/* n items (zeroed, each with the context's scheme), a name arena of name_bytes and the shapes'
 * room; q and h are copied in. */
aq_status aq__pipe_alloc(aq__pipe *p, const aq_ctx *ctx, size_t n, size_t name_bytes,
                         const aq__pipe_quality *q, const aq__pipe_hooks *h, aq_error *err);
void aq__pipe_free(aq__pipe *p);

/* Item i from tensor views (the caller's, borrowed): checked, bounded and decided; a bad one
 * goes to h.row_error. */
aq_status aq__pipe_from_tensors(aq__pipe *p, const aq_ctx *ctx, const aq_tensor *tensors,
                                aq_error *err);

/* Decide: the layer rules' decision for item i (whose view and layout are set) replaces the
 * context's layout: kept (raw), or the decided bits and scheme in the context's group size.
 * Errors go to row_err. */
aq_status aq__pipe_decide(aq__pipe *p, const aq_ctx *ctx, size_t i, aq_error *row_err);

/* Floor and budget: every row's choice (the pool made first, the rows quantized through
 * copies of ctx). With neither, nothing happens. */
aq_status aq__pipe_choose(aq__pipe *p, aq_ctx *ctx, aq_error *err);

/* Execute: row i's packed codes, scales and zero points written at packed/scales/zps (its
 * layout's sizes): from the choice, raw for a kept row, or through the kernels. A row the
 * kernels refuse sets *skipped (and goes to h.row_skip). */
aq_status aq__pipe_encode(aq__pipe *p, aq_ctx *ctx, size_t i, uint8_t *packed, float *scales,
                          float *zps, bool *skipped, aq_error *err);

/* Progress for rows [p->reported, upto] not yet reported, each once, in order. */
aq_status aq__pipe_progress_to(aq__pipe *p, size_t upto, aq_error *err);

/* The raw bit width (16 or 32) of a row kept as decided: 16 widened to 32 where a value would
 * overflow float16; NaN/Inf refused as quantization refuses them. */
aq_status aq__pipe_keep_bits(const aq_tensor *t, size_t elements, unsigned decided, unsigned *bits,
                             aq_error *err);
/* A kept row's raw float16 (bits 16) or float32 (bits 32) values, host order. */
void aq__pipe_keep_encode(const aq_tensor *t, size_t elements, unsigned bits, uint8_t *out);

#endif /* AQ_PIPELINE_H */
