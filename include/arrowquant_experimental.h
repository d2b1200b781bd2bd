/*
 * arrowquant_experimental.h - the experimental part of libarrowquant's API.
 *
 * arrowquant.h is the stable surface: what it declares keeps its meaning within a major.minor
 * release. What this header declares may change in any release; new API starts here and moves
 * to arrowquant.h once it has settled. A program opts in by defining AQ_EXPERIMENTAL before
 * including it, so that depending on the unstable part is a visible choice:
 *
 *     #define AQ_EXPERIMENTAL
 *     #include <arrowquant_experimental.h>
 *
 * Structs that a caller fills carry their size as the first field: set it to sizeof the
 * struct as the caller was compiled (AQ_SIZED_INIT, from arrowquant.h, does), so a library with a
 * longer struct reads only the fields the caller knows and leaves the rest at their defaults. The
 * conventions of arrowquant.h hold here too.
 */
#ifndef ARROWQUANT_EXPERIMENTAL_H
#define ARROWQUANT_EXPERIMENTAL_H

#ifndef AQ_EXPERIMENTAL
#    error "arrowquant_experimental.h may change in any release: define AQ_EXPERIMENTAL first"
#endif

#include "arrowquant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Schemes                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* What a scheme is, from the library's one table of schemes: what callers would otherwise
 * test scheme by scheme. */
typedef struct aq_scheme_info {
    size_t size;             /* sizeof(aq_scheme_info), set by the caller */
    aq_scheme scheme;        /* filled by the library, as every field below */
    const char *name;        /* aq_scheme_name; static storage */
    unsigned bits_mask;      /* bit b set: b bits per weight are allowed (2, 4, 8) */
    size_t fixed_group_size; /* 0: the layout takes the context's group size; else always
                                this one (AQ_KQUANT_SUPER_BLOCK for both kquant layouts) */
    int flattened;           /* 1: blocks laid over the flattened tensor; 0: row by row */
    int sub_block_params;    /* 1: per-sub-block scales and mins follow the codes in the
                                packed data; scales and zero_points hold d and dmin */
    int importance;          /* 1: an importance vector steers the search */
    int preserve_moments;    /* 1: AQ_PARAM_PRESERVE_MOMENTS applies to it */
    int selectable;          /* 0: read only (a layout of older files), never written */
    float max_abs;           /* largest |x| quantized; 0: any finite value */
    /* The GGUF type a tensor of this scheme is written as at b bits (index b), where GGUF has
     * one of the same role; -1 where none does. */
    int gguf_type[9];
} aq_scheme_info;

/* Fills *out (whose size field the caller has set) for `scheme`. AQ_INVALID_PARAMETER for an
 * unknown scheme, AQ_INVALID_ARGUMENT for a size smaller than the first release's struct. */
AQ_API AQ_MUST_CHECK aq_status aq_scheme_get_info(aq_scheme scheme, aq_scheme_info *out,
                                                  aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Settings                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Every choice of a quantization run lives in one table, owned by the library: its name, type,
 * bounds, default and help. The command's flags, the Python keywords and DiffusionQuantConfig
 * are read from it, so a setting is added in one place (src/diffusion/settings.c). Values are
 * set and read by name on an aq_settings object, checked when set (the message names the
 * setting and what it accepts); a profile is applied by one call. */

typedef enum aq_setting_type {
    AQ_SETTING_INT = 0,    /* an integer in [lower, upper]; `choices` lists the only values
                              allowed when not every integer in the bounds is */
    AQ_SETTING_FLOAT = 1,  /* a finite number; 0 means "off" when off_allowed, otherwise (and for
                              every other value) it must lie in [lower, upper] (upper excluded
                              when upper_open) */
    AQ_SETTING_BOOL = 2,   /* 0 or 1 ("true"/"false"/"yes"/"no"/"on"/"off" as text) */
    AQ_SETTING_CHOICE = 3, /* one of the comma-separated names in `choices` */
} aq_setting_type;

typedef struct aq_setting_info {
    size_t size; /* sizeof(aq_setting_info), set by the caller */
    const char *name;
    aq_setting_type type;
    double lower, upper;       /* INT and FLOAT bounds (inclusive but see upper_open) */
    int upper_open;            /* FLOAT: upper itself is excluded */
    int off_allowed;           /* FLOAT: 0 is accepted outside the bounds and means "off" */
    const char *choices;       /* CHOICE: "a,b,c"; INT: the allowed values when sparse; else NULL */
    const char *default_value; /* as text, as aq_settings_set_text takes it */
    const char *flag;          /* the command's option ("--bits"); NULL if it has none */
    int in_profile;            /* 1: a profile gives this setting's default */
    const char *help;          /* one line */
    int gguf;                  /* 1: GGUF output (aq_model_to_gguf's callers) applies it */
    int model_file; /* 1: the model file's writer (aq_model_quantize's callers) applies it */
} aq_setting_info;

/* The number of settings; aq_setting_at(i) for i below it describes each. */
AQ_API size_t aq_setting_count(void);
AQ_API AQ_MUST_CHECK aq_status aq_setting_at(size_t i, aq_setting_info *out, aq_error *err);
/* AQ_INVALID_PARAMETER naming the known settings for an unknown name. */
AQ_API AQ_MUST_CHECK aq_status aq_setting_find(const char *name, aq_setting_info *out,
                                               aq_error *err);

/* The values of every setting: the defaults until set. One thread at a time. */
typedef struct aq_settings aq_settings;

AQ_API AQ_MUST_CHECK aq_status aq_settings_create(aq_settings **out, aq_error *err);
AQ_API void aq_settings_free(aq_settings *s);

/* Set by name. set_text parses the value as the setting's type (the command's and Python's
 * way in); set_int and set_float take INT/BOOL/CHOICE (the choice's index) and FLOAT values
 * (set_float also INT ones, if integral). A value outside what the setting accepts is
 * AQ_INVALID_PARAMETER, "Invalid NAME: VALUE. Must be ...", and leaves the value as it was. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_text(aq_settings *s, const char *name,
                                                    const char *value, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_int(aq_settings *s, const char *name, int64_t value,
                                                   aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_float(aq_settings *s, const char *name, double value,
                                                     aq_error *err);
/* Read by name. get_int: INT, BOOL, CHOICE (the index); get_float: any numeric; get_text: any,
 * as text in storage owned by s, valid until the setting changes or s is freed. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_int(const aq_settings *s, const char *name,
                                                   int64_t *out, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_float(const aq_settings *s, const char *name,
                                                     double *out, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_text(const aq_settings *s, const char *name,
                                                    const char **out, aq_error *err);
/* *out = 1 when the setting was set explicitly (not a default, not from a profile). */
AQ_API AQ_MUST_CHECK aq_status aq_settings_is_set(const aq_settings *s, const char *name, int *out,
                                                  aq_error *err);

/* Sets "profile" to `name` and gives every setting the profile covers (in_profile) the
 * profile's value, unless it was set explicitly; settings set later still win. Then applies
 * the scheme's fixed group size (kquant: 512) unless group_size was set explicitly.
 * AQ_INVALID_PARAMETER, naming the known profiles, for an unknown name. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_apply_profile(aq_settings *s, const char *name,
                                                         aq_error *err);

/* Checks the settings together (a group_size that the scheme fixes otherwise, a scheme only
 * readable, bits the scheme does not allow): AQ_INVALID_PARAMETER naming both settings. The
 * group size of a scheme that fixes it follows the scheme unless set explicitly. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_check(aq_settings *s, aq_error *err);

/* aq_settings_check, then the context's parameters (bit_width, group_size, scheme, threads,
 * preserve_moments) from the settings. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_apply_ctx(aq_settings *s, aq_ctx *ctx, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* The model pipeline in three steps: plan, execute, write                                    */
/* ------------------------------------------------------------------------------------------ */

/* aq_model_quantize is these three calls in one (docs/pipeline.md, "Plan, execute, write"); a
 * distributed driver calls them apart: plan once per model, execute ranges of tensors on any
 * number of workers, write the file from their rows in order. The file is byte for byte what
 * aq_model_quantize writes with the same context and options, however the tensors were
 * divided. */

/* Every decision about a model's tensors: kept or quantized, scheme, bits and group (the layer
 * rules, the keep rule, the budget's allocation: a budget measures every candidate of every
 * tensor it chooses for, so planning reads those tensors' weights once), with the model-wide
 * fields of the file (metadata, the floor, the batch size). It holds no weights. */
typedef struct aq_model_plan aq_model_plan;

/* Plans `model` with ctx (its bits, group size, scheme, moments; its threads measure the
 * budget's options) and opts as aq_model_quantize takes them (the progress callback reports
 * the budget's measuring pass; on_tensor is not called). Nothing is written. */
AQ_API AQ_MUST_CHECK aq_status aq_model_plan_create(aq_ctx *ctx, aq_model *model,
                                                    const aq_model_quantize_options *opts,
                                                    aq_model_plan **out, aq_error *err);
/* The plan of a GGUF file (docs/gguf.md): each tensor's GGUF type (the options' type, the
 * layer rules' choice, the fallbacks for 1-D tensors, misfit rows and values beyond float16),
 * the header's fields (general.architecture, general.name, the source's metadata) and
 * gguf_search from ctx. aq_model_to_gguf is this plan, aq_model_execute and aq_model_writer in
 * one process; from a GGUF plan, aq_model_execute makes each tensor's GGUF block bytes and
 * aq_model_writer writes the GGUF file. opts' on_tensor and cancel are not used here. Values
 * beyond float16 are looked for (in tensors that would be F16) while planning. */
AQ_API AQ_MUST_CHECK aq_status aq_model_plan_create_gguf(aq_ctx *ctx, aq_model *model,
                                                         const aq_gguf_write_options *opts,
                                                         aq_model_plan **out, aq_error *err);
AQ_API void aq_model_plan_free(aq_model_plan *plan);
/* The number of tensors (the model's). */
AQ_API size_t aq_model_plan_count(const aq_model_plan *plan);

typedef struct aq_model_plan_tensor {
    size_t size;              /* sizeof(aq_model_plan_tensor), set by the caller */
    const char *name;         /* owned by the plan, as every string below */
    const char *source_dtype; /* as the checkpoint names it */
    int kept;                 /* 1: written as it is (float32 for BF16/F64 sources) */
    aq_scheme scheme;         /* of a quantized tensor, as every field up to group_size */
    unsigned bit_width;       /* before the floor */
    size_t group_size;        /* the context's group for it (a scheme may fix its own) */
    int floor_may_raise;      /* 1: the floor may raise its bits when executed */
    size_t elements;
    size_t source_bytes;
    const char *rule; /* the deciding layer rule's name; NULL without rules */
    /* A GGUF plan's (aq_model_plan_create_gguf): the tensor's aq_gguf_type, why it got it (as
     * aq_gguf_tensor_result.reason) and its bytes in the file; kept is then 1 for F32, F16
     * and BF16, and scheme, bit_width and group_size say nothing. A model file's plan: -1,
     * NULL, 0. */
    int gguf_type;
    const char *gguf_reason;
    size_t gguf_bytes;
} aq_model_plan_tensor;

AQ_API AQ_MUST_CHECK aq_status aq_model_plan_tensor_get(const aq_model_plan *plan, size_t i,
                                                        aq_model_plan_tensor *out, aq_error *err);

/* The plan as bytes, to send to workers (*out is the caller's, to free with
 * aq_model_plan_bytes_free), and back. deserialize checks the bytes (a checksum over them
 * all, every field): AQ_INVALID_DATA naming the byte offset and what was expected. */
AQ_API AQ_MUST_CHECK aq_status aq_model_plan_serialize(const aq_model_plan *plan, void **out,
                                                       size_t *out_len, aq_error *err);
AQ_API void aq_model_plan_bytes_free(void *bytes);
AQ_API AQ_MUST_CHECK aq_status aq_model_plan_deserialize(const void *bytes, size_t len,
                                                         aq_model_plan **out, aq_error *err);

typedef struct aq_model_execute_options {
    size_t size;           /* sizeof(aq_model_execute_options), set by the caller */
    const aq_calib *calib; /* required when the plan was made with one; else NULL */
    /* Polled between tensors and blocks: nonzero stops with AQ_CANCELLED. */
    const volatile int *cancel;
    /* Called after each tensor (tensors_done counts from `begin`). */
    aq_model_progress_fn progress;
    void *progress_user;
} aq_model_execute_options;

/* Quantizes (or keeps) tensors [begin, end) of the plan from `model` (the one planned, or an
 * identical copy on another machine: names, dtypes, shapes and sizes are checked,
 * AQ_SHAPE_MISMATCH naming the first that differs) into *rows, a struct array of one row per
 * tensor in order, described by *schema (both the caller's to release): the model file's
 * columns, then `initial_cosine` (float64: the tensor's cosine at the plan's bits, before the
 * floor raised them; what aq_model_tensor_result.initial_cosine reports), which the writer
 * reads and the file does not hold. ctx gives the threads; its other parameters come from the
 * plan. A tensor that fails (NaN, a truncated source) fails the call with its name in the
 * message. opts may be NULL. From a GGUF plan the rows are each tensor's bytes in the GGUF
 * file: the columns layer_name (utf8), gguf_type (uint32), data (large_binary: the blocks),
 * sqnr_db and cosine (float64: of the decoded floats against the source) and checksum
 * (uint64). */
AQ_API AQ_MUST_CHECK aq_status aq_model_execute(aq_ctx *ctx, aq_model *model,
                                                const aq_model_plan *plan, size_t begin, size_t end,
                                                const aq_model_execute_options *opts,
                                                struct ArrowSchema *schema, struct ArrowArray *rows,
                                                aq_error *err);

/* aq_model_quantize following `plan` (made for `model` with the same options, here or
 * elsewhere, and serialised in between) instead of planning: every tensor executed and
 * written here, the same bytes aq_model_quantize writes. ctx gives the threads, the plan the
 * other parameters; of opts only the callbacks (progress, on_tensor, cancel) and the
 * calibration (required when the plan was made with one) are read. The model is checked
 * against the plan as aq_model_execute checks it. */
AQ_API AQ_MUST_CHECK aq_status aq_model_quantize_plan(aq_ctx *ctx, aq_model *model,
                                                      const aq_model_plan *plan,
                                                      const char *out_path,
                                                      const aq_model_quantize_options *opts,
                                                      aq_model_summary *summary, aq_error *err);

/* aq_model_to_gguf following `plan` (aq_model_plan_create_gguf, for `model`, here or elsewhere,
 * serialised in between) instead of planning: every tensor executed and written here, the same
 * bytes, reports (opts->on_tensor) and summary aq_model_to_gguf gives. Of opts only on_tensor,
 * cancel and the calibration (required when the plan was made with one) are read; the type,
 * rules and header fields come from the plan. A model file's plan is refused, as
 * aq_model_quantize_plan refuses a GGUF plan. The model is checked against the plan as
 * aq_model_execute checks it. */
AQ_API AQ_MUST_CHECK aq_status aq_model_to_gguf_plan(aq_ctx *ctx, aq_model *model,
                                                     const aq_model_plan *plan,
                                                     const char *out_path,
                                                     const aq_gguf_write_options *opts,
                                                     aq_gguf_write_summary *summary, aq_error *err);

/* Assembles a model file (a GGUF file from a GGUF plan) from a plan and the rows
 * aq_model_execute made of its tensors, wherever they were made: appended in tensor order (any
 * number of rows a call), checked against the plan (names, layouts, shapes and each row's
 * checksum: AQ_INVALID_DATA naming the row and what was expected, for rows out of order,
 * missing, or of another plan), written under a temporary name and renamed into place by close.
 * The plan must outlive the writer. */
typedef struct aq_model_writer aq_model_writer;

typedef struct aq_model_writer_options {
    size_t size; /* sizeof(aq_model_writer_options), set by the caller */
    /* Called for each row as it is appended, with what aq_model_quantize reports of its tensor
     * (names point into the plan; initial_cosine is NaN for a moved tensor whose row lacks
     * the initial_cosine column). A GGUF plan's writer calls it too: scheme, bit_width and
     * group_size are then 0 (the tensor's type is on_gguf_tensor's), bytes its bytes in the
     * file. */
    aq_model_tensor_fn on_tensor;
    void *on_tensor_user;
    /* Called after each row (tensors_done counts from the first tensor), for either plan. */
    aq_model_progress_fn progress;
    void *progress_user;
    /* A GGUF plan's writer only (refused for a model file's): called for each row as it is
     * appended, with what aq_model_to_gguf reports of its tensor (names point into the plan). */
    aq_gguf_tensor_fn on_gguf_tensor;
    void *on_gguf_tensor_user;
    /* The checkpoint the rows were made from (optional): the plan must match it, and the
     * output may not be one of its files, as aq_model_quantize_plan checks. */
    const aq_model *model;
    /* The calibration the plan was made with (optional): the output may not be one of its
     * files. */
    const aq_calib *calib;
} aq_model_writer_options;

/* opts may be NULL (no callbacks). */
AQ_API AQ_MUST_CHECK aq_status aq_model_writer_open(const aq_model_plan *plan, const char *out_path,
                                                    const aq_model_writer_options *opts,
                                                    aq_model_writer **out, aq_error *err);
/* Rows are read (copied), not taken: the caller still releases them. */
AQ_API AQ_MUST_CHECK aq_status aq_model_writer_append(aq_model_writer *w,
                                                      const struct ArrowSchema *schema,
                                                      const struct ArrowArray *rows, aq_error *err);
/* Every tensor must have been appended (AQ_INVALID_DATA naming the first missing one). The
 * summary is aq_model_quantize's (its `worst` points into the plan); for a GGUF file, tensors
 * in F32, F16 or BF16 count as kept and bytes_out is the file's size. */
AQ_API AQ_MUST_CHECK aq_status aq_model_writer_close(aq_model_writer *w, aq_model_summary *summary,
                                                     aq_error *err);
/* aq_model_writer_close for a GGUF plan's writer, with aq_model_to_gguf's summary (equal to it
 * for the same plan and rows); a model file's writer is refused. */
AQ_API AQ_MUST_CHECK aq_status aq_model_writer_close_gguf(aq_model_writer *w,
                                                          aq_gguf_write_summary *summary,
                                                          aq_error *err);
/* Without a successful close the temporary file is removed; the final name is not touched. */
AQ_API void aq_model_writer_free(aq_model_writer *w);

/* ------------------------------------------------------------------------------------------ */
/* Model file rows used in place                                                              */
/* ------------------------------------------------------------------------------------------ */

/* A share of the memory a model file row lies in: the record batch the reader decompressed,
 * or the file's mapping for an uncompressed file. */
typedef struct aq_qmodel_hold aq_qmodel_hold;

/* Keeps the memory of the row aq_qmodel_next last handed out (its data, scales and
 * zero_points) valid until aq_qmodel_hold_free, past the next aq_qmodel_next and past
 * aq_qmodel_free, so that a caller can use the row in place instead of copying it (the torch
 * runtime keeps packed weights this way). The reader then leaves that row's pages resident
 * instead of giving them back when it moves on. Several holds on rows of one batch share its
 * memory, which goes with the last of them. A row's scales and zero points that the reader
 * had to copy (misaligned in the file; never in files this library writes) are copied into
 * the hold: read row->scales and row->zero_points after this call. The memory is writable: a
 * mapped file is mapped copy-on-write (writes stay in this process; the file never changes).
 * The file must not be truncated while a hold on its mapping lives: the pages past its new
 * end read as zeros (see aq_mapped_faults), and aq_qmodel_hold_check then fails. The file
 * stays open as long as the mapping. AQ_INVALID_ARGUMENT when no row is current. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_row_hold(aq_qmodel *qm, aq_qmodel_hold **out,
                                                  aq_error *err);
/* AQ_OK unless the file the hold maps was truncated while mapped (AQ_IO naming the file).
 * Call it before reading the held memory and again after: before, it compares the file's size
 * (fstat) with the mapping, so a truncated file is refused whatever SIGBUS handler the process
 * has; after, it sees a fault that the library's guard turned into zeros during the read (a
 * truncation between the two calls). One flag load and one fstat. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_hold_check(const aq_qmodel_hold *hold, aq_error *err);
/* Accepts NULL. Thread-safe against other holds on the same batch. */
AQ_API void aq_qmodel_hold_free(aq_qmodel_hold *hold);

#ifdef __cplusplus
}
#endif

#endif /* ARROWQUANT_EXPERIMENTAL_H */
