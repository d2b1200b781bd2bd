/*
 * arrowquant.h - the one public header of libarrowquant: a stable part, then an experimental
 * part that a program opts into with AQ_EXPERIMENTAL (at the end; see docs/settings.md).
 *
 * ArrowQuant quantizes float tensors (float32, float16, bfloat16, float64) to packed 2, 4 or
 * 8-bit codes with one float32 scale and one float32 zero point per group, and restores them.
 * The packed format is specified, normatively, in docs/format.md.
 *
 * Conventions (see STYLE.md):
 *  - Every function that can fail returns an aq_status (AQ_OK == 0) and fills the aq_error passed
 *    as its last argument (NULL is allowed when the caller does not want the message).
 *  - Pointer arguments are borrowed for the duration of the call. Outputs are written only on
 *    success. Objects created by the library are released by the matching aq_*_free (which
 *    accepts NULL).
 *  - Sizes and counts are size_t; int64_t appears only where a foreign format (Arrow,
 *    safetensors) fixes it, and is checked for overflow on the way in.
 *  - Options structs (aq_*_options) carry their size as their first field. Start from
 *    AQ_SIZED_INIT(type), which zeroes the struct (every field's default) and sets the size
 *    the caller was compiled with, then set the fields wanted:
 *
 *        aq_batch_options opts = AQ_SIZED_INIT(aq_batch_options);
 *        opts.min_cosine = 0.99;
 *
 *    (In C++, where compound literals do not exist: `aq_batch_options opts{};
 *    opts.size = sizeof opts;`.) A size of 0 (a struct zeroed without the macro) is
 *    AQ_INVALID_ARGUMENT naming the struct. NULL, where a call takes it for options, means
 *    every default.
 *
 * Compatibility (the rules the library keeps within a major version; docs/decisions.md):
 *  - A function, struct field, enum value or macro of the stable part keeps its name, type
 *    and meaning. New API starts in the experimental part (AQ_EXPERIMENTAL, at the end of this
 *    header) and moves to the stable part once settled.
 *  - Options structs only grow, at their end, with fields whose zero is the old behaviour. A
 *    library reads min(caller's size, its own) bytes and takes defaults for the rest, so an
 *    older caller keeps working with a newer library; a newer caller's struct is accepted by
 *    an older library when the fields it does not know are zero, and is AQ_UNSUPPORTED
 *    (naming the struct) otherwise. Structs the library fills (summaries, results) are
 *    allocated by the caller and only grow at the end too.
 *  - AQ_VERSION_MINOR rises when API is added, AQ_VERSION_MAJOR when any of this breaks
 *    (then the shared library's SONAME changes with it).
 */
#ifndef ARROWQUANT_H
#define ARROWQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(AQ_BUILD_SHARED)
#    define AQ_API __declspec(dllexport)
#elif defined(__GNUC__)
#    define AQ_API __attribute__((visibility("default")))
#else
#    define AQ_API
#endif

#if defined(__GNUC__)
#    define AQ_MUST_CHECK __attribute__((warn_unused_result))
#else
#    define AQ_MUST_CHECK
#endif

/* A struct whose first field is `size_t size`, zeroed, with the size set: how an options
 * struct is started (see the conventions above). */
#define AQ_SIZED_INIT(type) ((type){.size = sizeof(type)})

/* ------------------------------------------------------------------------------------------ */
/* Version                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The one place the version is written: CMakeLists.txt (the library, the CMake package,
 * arrowquant.pc) and pyproject.toml (the Python package) read these three lines. */
#define AQ_VERSION_MAJOR 0
#define AQ_VERSION_MINOR 1
#define AQ_VERSION_PATCH 0
#define AQ_VERSION_NUMBER (AQ_VERSION_MAJOR * 10000 + AQ_VERSION_MINOR * 100 + AQ_VERSION_PATCH)
#define AQ__STR_(x) #x
#define AQ__STR(x) AQ__STR_(x)
#define AQ_VERSION_STRING \
    AQ__STR(AQ_VERSION_MAJOR) "." AQ__STR(AQ_VERSION_MINOR) "." AQ__STR(AQ_VERSION_PATCH)

/* Version of the packed format written into results (schema key arrowquant.format_version).
 * Version 2 lays kquant super-blocks over the flattened tensor; readers also accept version 1,
 * where "kquant" names the row-by-row layout (AQ_SCHEME_KQUANT_ROWS). See
 * aq_scheme_for_format_version. */
#define AQ_FORMAT_VERSION 2
/* The oldest format version readers accept. */
#define AQ_FORMAT_VERSION_MIN 1

/* The version of the library actually linked, as AQ_VERSION_NUMBER and as a string. Compare
 * with the macros to detect a header/library mismatch. */
AQ_API unsigned aq_version_number(void);
AQ_API const char *aq_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* Status and errors                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* X(name, default message). The enum, aq_status_name and aq_status_message are generated from
 * this one list, so they cannot drift apart. Codes are stable: new ones go at the end. */
#define AQ_STATUS_MAP(X)                               \
    X(OK, "success")                                   \
    X(INVALID_ARGUMENT, "invalid argument")            \
    X(INVALID_PARAMETER, "invalid parameter value")    \
    X(NON_FINITE, "input contains NaN or Inf")         \
    X(SHAPE_MISMATCH, "shape does not match the data") \
    X(OVERFLOW, "size overflows")                      \
    X(NO_MEMORY, "out of memory")                      \
    X(UNSUPPORTED, "unsupported type or feature")      \
    X(INVALID_DATA, "malformed input data")            \
    X(BUFFER_TOO_SMALL, "output buffer too small")     \
    X(IO, "input/output error")                        \
    X(CANCELLED, "cancelled")                          \
    X(INTERNAL, "internal error")

typedef enum aq_status {
#define AQ__STATUS_ENUM(name, msg) AQ_##name,
    AQ_STATUS_MAP(AQ__STATUS_ENUM)
#undef AQ__STATUS_ENUM
        AQ_STATUS_COUNT
} aq_status;

/* "AQ_INVALID_ARGUMENT" etc.; "AQ_UNKNOWN" for a value outside the enum. Never NULL. */
AQ_API const char *aq_status_name(aq_status status);
/* The default one-line description of a status. Never NULL. */
AQ_API const char *aq_status_message(aq_status status);

#define AQ_ERROR_MESSAGE_SIZE 512

/* Filled by a failing call: the status and a message that names what was wrong and where
 * (layer, column, file, index or byte offset). The message is always NUL-terminated. */
typedef struct aq_error {
    aq_status code;
    char message[AQ_ERROR_MESSAGE_SIZE];
} aq_error;

/* Resets an error to AQ_OK with an empty message. Accepts NULL. */
AQ_API void aq_error_clear(aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Element types and tensor views                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef enum aq_dtype {
    AQ_DTYPE_F32 = 0,
    AQ_DTYPE_F16 = 1,  /* IEEE 754 binary16 */
    AQ_DTYPE_BF16 = 2, /* bfloat16: the upper half of a float32 */
    AQ_DTYPE_F64 = 3,
    AQ_DTYPE_COUNT
} aq_dtype;

/* "f32", "f16", "bf16", "f64"; "unknown" otherwise. */
AQ_API const char *aq_dtype_name(aq_dtype dtype);
/* Bytes per element; 0 for an unknown dtype. */
AQ_API size_t aq_dtype_size(aq_dtype dtype);

/* A borrowed view of a contiguous, little-endian (host order) tensor. Nothing is copied.
 * The shape is [shape[0], ..., shape[ndim-1]]; ndim == 0 is a scalar (one element). The
 * tensor is seen as rows = shape[0] and cols = the product of the other dimensions (a 1-D
 * tensor is one row); see docs/format.md. */
typedef struct aq_tensor {
    const char *name; /* used in error messages; may be NULL */
    aq_dtype dtype;
    const void *data;
    const int64_t *shape;
    size_t ndim;
} aq_tensor;

#define AQ_MAX_NDIM 16

/* Checks that every element of a tensor is finite. On the first NaN or +-Inf returns
 * AQ_NON_FINITE with the message "Layer 'NAME' contains NaN or Inf at index I" and, when
 * first_bad is not NULL, stores I there (I is the flat, row-major element index). A float64
 * value outside the float32 range is reported the same way, since it cannot be quantized. */
AQ_API AQ_MUST_CHECK aq_status aq_tensor_check_finite(const aq_tensor *tensor, size_t *first_bad,
                                                      aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Context and parameters                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef enum aq_scheme {
    AQ_SCHEME_AFFINE = 0, /* min-max affine, docs/format.md section "affine" */
    /* Searched scales (docs/format.md 5.1): per group, clipping candidates with a least-squares
     * refit. The output is plain affine data (any affine reader restores it). */
    AQ_SCHEME_AFFINE_SEARCH = 1,
    /* Two-level scales (docs/format.md 5.2): 512-element super-blocks with float32 d and dmin
     * in scales and zero_points; 4- or 6-bit sub-block scales and mins after the codes in
     * the packed data. The group size is always 512 (AQ_KQUANT_SUPER_BLOCK). Super-blocks are
     * laid over the flattened tensor (one row of all its elements), so only the tensor's last
     * super-block may be partial: 2.625, 4.5 and 8.5 bits per weight on any shape, up to that
     * one block. */
    AQ_SCHEME_KQUANT = 2,
    /* The same scheme laid row by row (format version 1, where it was named "kquant"): each
     * row starts a super-block, so rows that are not a multiple of 512 pay for partial
     * blocks. Kept so that version-1 results and model files still read. */
    AQ_SCHEME_KQUANT_ROWS = 3,
    AQ_SCHEME_COUNT
} aq_scheme;

/* "affine", "affine_search", "kquant", "kquant_rows"; "unknown" otherwise. */
AQ_API const char *aq_scheme_name(aq_scheme scheme);
/* Looks a scheme up by its name. AQ_INVALID_PARAMETER, naming the known schemes, if unknown. */
AQ_API AQ_MUST_CHECK aq_status aq_scheme_from_name(const char *name, aq_scheme *out, aq_error *err);
/* The scheme a reader uses for a scheme named in data of the given format version: in
 * version 1, "kquant" (AQ_SCHEME_KQUANT) meant the row-by-row layout, AQ_SCHEME_KQUANT_ROWS.
 * Every other scheme reads the same in every version. */
AQ_API aq_scheme aq_scheme_for_format_version(aq_scheme scheme, int format_version);
/* Non-zero for both layouts of the two-level scheme (sub-block parameters). Superseded by
 * aq_scheme_get_info (the experimental part below), which says what a caller usually asks this
 * for: the fixed group size, the layout, importance and moment support. */
AQ_API int aq_scheme_is_kquant(aq_scheme scheme);

typedef enum aq_param {
    AQ_PARAM_BIT_WIDTH = 0,        /* 2, 4 or 8. Default 4. */
    AQ_PARAM_GROUP_SIZE = 1,       /* elements per group, 8 .. AQ_GROUP_SIZE_ROW. Default 128. */
    AQ_PARAM_SCHEME = 2,           /* an aq_scheme. Default AQ_SCHEME_AFFINE. */
    AQ_PARAM_THREADS = 3,          /* worker threads, 1 .. AQ_MAX_THREADS; 0 = one per online CPU.
                                      Default 1. Results never depend on it. */
    AQ_PARAM_PRESERVE_MOMENTS = 4, /* 0 or 1. Default 0. 1: after quantization, each row's
                                      scales and zero points are corrected so that the
                                      dequantized row keeps the original mean and variance
                                      (affine and affine_search only). See aq_quantize_ex. */
    AQ_PARAM_GGUF_SEARCH = 5,      /* 0 or 1. Default 1: the GGUF encoders of Q8_0, Q4_0 and
                                      Q5_0 search the block scale (lower error). 0: they round
                                      as ggml's reference quantizer does, with its bytes, at
                                      the memory's speed; importance is then not used. The
                                      other types always search (docs/gguf.md). */
    AQ_PARAM_COUNT
} aq_param;

#define AQ_DEFAULT_BIT_WIDTH 4
#define AQ_DEFAULT_GROUP_SIZE 128
#define AQ_MIN_GROUP_SIZE 8
/* The largest group size. Since a group never straddles rows, it means "one group per row"
 * for every row of up to 2^32 - 1 elements. */
#define AQ_GROUP_SIZE_ROW 4294967295u
#define AQ_MAX_THREADS 1024

/* "bit_width", "group_size", "scheme", "threads", "preserve_moments"; "unknown" otherwise. */
AQ_API const char *aq_param_name(aq_param param);

/* The inclusive bounds of a parameter. A value inside the bounds may still be refused (bit
 * width 3); aq_ctx_set_param says why. AQ_INVALID_ARGUMENT for an unknown parameter. */
AQ_API AQ_MUST_CHECK aq_status aq_param_bounds(aq_param param, int64_t *lower, int64_t *upper,
                                               aq_error *err);

/* An opaque context holding the parameters (and, later, the thread pool and the kernels
 * chosen for this CPU). A context may be used by one thread at a time; use one per thread. */
typedef struct aq_ctx aq_ctx;

/* Creates a context with the default parameters and the kernels chosen for this CPU (or
 * forced by the environment variable AQ_KERNELS, whose value must name a kernel set this build
 * and CPU have: AQ_UNSUPPORTED otherwise). *out is written only on success. */
AQ_API AQ_MUST_CHECK aq_status aq_ctx_create(aq_ctx **out, aq_error *err);
/* Frees a context. Accepts NULL. */
AQ_API void aq_ctx_free(aq_ctx *ctx);

/* The name of the kernel set the context uses: "ref", "avx2", "avx512" or "neon". */
AQ_API const char *aq_ctx_kernels(const aq_ctx *ctx);

/* Sets one parameter after validating it; on error the context is unchanged and the message
 * names the parameter, the value and what is allowed ("Invalid bit_width: 3. Must be 2, 4,
 * or 8"). */
AQ_API AQ_MUST_CHECK aq_status aq_ctx_set_param(aq_ctx *ctx, aq_param param, int64_t value,
                                                aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_ctx_get_param(const aq_ctx *ctx, aq_param param, int64_t *value,
                                                aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Quantizing one tensor                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The sizes of a quantized tensor, derived from its shape, bit width and group size. */
typedef struct aq_layout {
    size_t rows;           /* shape[0] (1 for 0-D and 1-D tensors) */
    size_t cols;           /* product of the other dimensions */
    size_t elements;       /* rows * cols */
    unsigned bit_width;    /* 2, 4 or 8 */
    size_t group_size;     /* as set; a row holds ceil(cols / group_size) groups */
    size_t groups_per_row; /* ceil(cols / group_size) */
    size_t groups;         /* rows * groups_per_row: the number of scales and zero points */
    size_t packed_bytes;   /* ceil(elements * bit_width / 8) */
} aq_layout;

/* Computes the layout of a tensor of the given shape with the given bit width and group size.
 * Refuses (with a message naming the dimension) negative dimensions, more than AQ_MAX_NDIM
 * dimensions, zero elements, sizes that overflow size_t, and invalid bit widths or group
 * sizes. */
AQ_API AQ_MUST_CHECK aq_status aq_layout_compute(const int64_t *shape, size_t ndim,
                                                 unsigned bit_width, size_t group_size,
                                                 aq_layout *out, aq_error *err);

/* Caller-provided output of aq_quantize; sizes from aq_layout_compute (or aq_quantize_bound).
 * The buffers must not overlap the input. */
typedef struct aq_qbuffers {
    uint8_t *packed;
    size_t packed_capacity; /* bytes available at packed */
    float *scales;
    float *zero_points;
    size_t groups_capacity; /* floats available at scales and at zero_points each */
} aq_qbuffers;

/* The layout aq_quantize will produce for this tensor with the context's parameters. */
AQ_API AQ_MUST_CHECK aq_status aq_quantize_bound(const aq_ctx *ctx, const aq_tensor *src,
                                                 aq_layout *out, aq_error *err);

/* Quantizes one tensor with the context's bit width, group size and scheme, writing packed
 * codes, scales and zero points into the caller's buffers. Fails, naming the layer, on NULL
 * data, an invalid shape, too small buffers, or a NaN/Inf (AQ_NON_FINITE with the index of the
 * first bad value). On failure the output buffers may have been partly written. */
AQ_API AQ_MUST_CHECK aq_status aq_quantize(aq_ctx *ctx, const aq_tensor *src,
                                           const aq_qbuffers *dst, aq_error *err);

/* A borrowed view of a quantized tensor, as found in a result row. */
typedef struct aq_qtensor {
    const char *name; /* used in error messages; may be NULL */
    aq_scheme scheme;
    unsigned bit_width;
    size_t group_size;
    const int64_t *shape;
    size_t ndim;
    const uint8_t *packed;
    size_t packed_size;
    const float *scales;
    const float *zero_points;
    size_t groups; /* number of entries in scales and in zero_points */
} aq_qtensor;

/* Restores floats: x = (q - zero_point) * scale, rounded to the output dtype (F32, F16 or
 * BF16) with round-half-to-even. out_capacity is in elements. Validates the quantized tensor
 * first (bit width, group size, packed size and group count against the shape, finite
 * scales and zero points) since it may come from an untrusted file. */
AQ_API AQ_MUST_CHECK aq_status aq_dequantize(aq_ctx *ctx, const aq_qtensor *src, aq_dtype out_dtype,
                                             void *out, size_t out_capacity, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Quality metrics                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Agreement between an original tensor and its reconstruction, computed in double precision.
 * With e = reference - approximation over n elements:
 *   mse = sum(e^2) / n;  rel_rmse = sqrt(mse) / std(reference) (population std);
 *   sqnr_db = 10 log10(sum(reference^2) / sum(e^2));  cosine = <a, b> / (|a| |b|);
 *   max_abs_error = max |e|.
 * Degenerate cases: sqnr_db is +INFINITY when e is all zero; rel_rmse is 0 when mse is 0 and
 * +INFINITY when std is 0 but mse is not; cosine is 1 when both tensors are all zero and 0
 * when exactly one is. */
typedef struct aq_metrics {
    size_t count;
    double mse;
    double rel_rmse;
    double sqnr_db;
    double cosine;
    double max_abs_error;
} aq_metrics;

/* Compares two tensors of equal element count (shapes may differ, dtypes may differ). Both
 * must be finite. */
AQ_API AQ_MUST_CHECK aq_status aq_metrics_compute(const aq_tensor *reference,
                                                  const aq_tensor *approximation, aq_metrics *out,
                                                  aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Arrow C Data Interface (src/arrow)                                                         */
/* ------------------------------------------------------------------------------------------ */

/* The Arrow C Data Interface and C Stream Interface structures, exactly as the Arrow project
 * specifies them (arrow/c/abi.h); guarded so that another definition of the same ABI may come
 * first. */
#ifndef ARROW_C_DATA_INTERFACE
#    define ARROW_C_DATA_INTERFACE

#    define ARROW_FLAG_DICTIONARY_ORDERED 1
#    define ARROW_FLAG_NULLABLE 2
#    define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};
#endif /* ARROW_C_DATA_INTERFACE */

#ifndef ARROW_C_STREAM_INTERFACE
#    define ARROW_C_STREAM_INTERFACE
struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};
#endif /* ARROW_C_STREAM_INTERFACE */

/* Called on the calling thread after each row (layer) is done: rows and weights processed so
 * far in this call or stream, skipped rows included. Return 0 to go on. A nonzero return
 * stops the call before its next row: it fails with AQ_CANCELLED ("cancelled by the progress
 * callback after N rows"), returns no partial output and releases everything it allocated (a
 * stream's get_next fails with ECANCELED, and keeps failing). This is how a host (Python's
 * Ctrl-C, a GUI's cancel button) stops a long batch. With target_bpw the rows are reported as
 * their options are measured (the bulk of the work), before the allocation is chosen. */
typedef int (*aq_progress_fn)(void *user, size_t rows_done, size_t elements_done);

/* Rows skipped in continue-on-error mode, with their reasons. Created by the caller, filled
 * by the calls that receive it in their options, read and freed by the caller. */
typedef struct aq_report aq_report;

AQ_API AQ_MUST_CHECK aq_status aq_report_create(aq_report **out, aq_error *err);
AQ_API void aq_report_free(aq_report *report);
/* Number of skipped rows recorded. */
AQ_API size_t aq_report_count(const aq_report *report);
/* Entry i (0 <= i < count): the row index in the input (counted across all batches of a
 * stream), the layer name ("" when the name itself was null or unreadable), the status and the
 * message. The strings are owned by the report. AQ_INVALID_ARGUMENT if i is out of range. */
AQ_API AQ_MUST_CHECK aq_status aq_report_get(const aq_report *report, size_t i, size_t *row,
                                             const char **layer_name, aq_status *code,
                                             const char **message, aq_error *err);

typedef struct aq_batch_options {
    size_t size;           /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    int continue_on_error; /* nonzero: skip bad rows (recorded in report) and go on */
    aq_progress_fn progress; /* may be NULL */
    void *progress_user;     /* passed to progress */
    aq_report *report;       /* may be NULL; receives skipped rows */
    /* Quality (0 = off; zero-initialised options keep plain quantization). With either set,
     * the rows of a batch go through aq_qset_quantize (see there): min_cosine, a cosine
     * similarity floor, quantizes a row that falls below it again with more bits (2 -> 4 ->
     * 8, same scheme); target_bpw, a size budget in bits per weight (codes, scales, zero
     * points and sub-block parameters all counted), chooses each row's bit width (and scheme,
     * among budget_schemes) so that the batch stays within it; AQ_TARGET_BPW_PROFILE (-1)
     * with rules is the default mode's size: the rules' profile's target_bpw over every row of
     * two or more dimensions, the rules' treatments preferences within it (docs/pipeline.md);
     * without rules, the batch's own size without a budget (each row at the base bits and
     * scheme, raised by min_cosine), so the allocation trades bits between rows at no extra
     * size. A
     * stream applies the budget to each batch, so the whole stream stays within it too. The
     * report (when given) receives one choice per quantized row (aq_report_choice_get) saying
     * what was chosen and whether the floor moved it. Rows are measured against their
     * dequantization, which costs about one extra quantization and dequantization per row and
     * option tried, and the chosen tensors are held until the batch is done (the output is
     * allocated at its final size). */
    double min_cosine;
    double target_bpw;
    /* The schemes target_bpw may choose from (NULL: the context's scheme only). When the rows
     * of a result end up with different schemes or group sizes, its schema carries
     * arrowquant.row_schemes (docs/format.md section 6). Streams accept one scheme only (a
     * stream's schema is fixed before its first batch): AQ_UNSUPPORTED otherwise. */
    const aq_scheme *budget_schemes;
    size_t n_budget_schemes;
    /* Diffusion layer rules (aq_rules_create; borrowed, must outlive a stream). NULL: every
     * row with the context's bits and scheme. With rules, each row is decided by
     * aq_rules_decide(layer_name, shape, source dtype) and is either kept or quantized at the
     * decided bits and scheme (the context's bits and scheme are then not used, its group size
     * still is for schemes other than kquant, as in aq_model_quantize; the result's
     * arrowquant.scheme is the rules' profile's). A kept row has bit_width 16 (raw little-endian
     * float16 in quantized_data) or 32 (float32: for bfloat16 sources, and for rows with a value
     * beyond float16's range) and empty scales and zero_points (docs/format.md section 6.1).
     * min_cosine raises any quantized row's bits; target_bpw covers only the rows that follow the
     * profile (rule "profile"), the rows the rules keep or fix at other bits stay as decided. A
     * decision that fails (contradictory overrides, a component the rules do not know) is a row
     * error naming the tensor. */
    const struct aq_rules *rules;
    /* Calibration statistics (aq_calib_finish done; borrowed, must outlive a stream). NULL: no
     * importance. Every quantized row whose layer has statistics (aq_calib_importance with the
     * row's name and shape) is quantized with the square root of that importance
     * (affine_search and kquant use it; plain affine ignores it), and the default mode's
     * budget weighs each option's error by it; rows without statistics are quantized
     * without. */
    const struct aq_calib *calib;
} aq_batch_options;

/* Quantizes a record batch given as a struct array (DESIGN.md 2.1: columns layer_name,
 * weights and optionally shape, found by name; other columns ignored) with the context's bit
 * width, group size and scheme. The result is a struct array with exactly the six columns of
 * DESIGN.md 2.2 and the arrowquant.* schema metadata (docs/format.md section 6), rows in input
 * order (skipped rows left out).
 *
 * The input is borrowed: weights are read in place from its buffers during the call, and the
 * caller still owns and releases schema and array afterwards; the output never refers to them.
 * On success out_schema and out_array are owned by the caller (release them). opts may be NULL
 * (stop at the first bad row, no progress). */
AQ_API AQ_MUST_CHECK aq_status aq_batch_quantize(aq_ctx *ctx, const struct ArrowSchema *schema,
                                                 const struct ArrowArray *array,
                                                 const aq_batch_options *opts,
                                                 struct ArrowSchema *out_schema,
                                                 struct ArrowArray *out_array, aq_error *err);

/* Quantizes n tensor views into one result struct array, as aq_batch_quantize does for a
 * batch (used for numpy arrays and other in-memory tensors). */
AQ_API AQ_MUST_CHECK aq_status aq_tensors_quantize(aq_ctx *ctx, const aq_tensor *tensors, size_t n,
                                                   const aq_batch_options *opts,
                                                   struct ArrowSchema *out_schema,
                                                   struct ArrowArray *out_array, aq_error *err);

/* Restores a result batch (the six columns; its schema metadata gives scheme and group size)
 * to a struct array of layer_name (utf8), weights (list<float32>) and shape (list<int64>). The
 * input is borrowed. */
AQ_API AQ_MUST_CHECK aq_status aq_batch_dequantize(aq_ctx *ctx, const struct ArrowSchema *schema,
                                                   const struct ArrowArray *array,
                                                   const aq_batch_options *opts,
                                                   struct ArrowSchema *out_schema,
                                                   struct ArrowArray *out_array, aq_error *err);

/* Streams: the output stream pulls one input batch per get_next and yields its result, so a
 * table of any size goes through with bounded memory. The input stream is moved into the
 * output stream (its release is set to NULL), even when the call fails. ctx, and the report,
 * progress user data and budget_schemes of opts, must outlive the output stream; opts itself
 * is copied. An
 * error inside get_next is returned as an errno-style code with the message available from
 * get_last_error (an input stream's own get_last_error text is passed on). */
AQ_API AQ_MUST_CHECK aq_status aq_stream_quantize(aq_ctx *ctx, struct ArrowArrayStream *input,
                                                  const aq_batch_options *opts,
                                                  struct ArrowArrayStream *out, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_stream_dequantize(aq_ctx *ctx, struct ArrowArrayStream *input,
                                                    const aq_batch_options *opts,
                                                    struct ArrowArrayStream *out, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Arrow IPC files and streams (src/ipc)                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Arrow IPC (https://arrow.apache.org/docs/format/Columnar.html#serialization-and-interprocess-
 * communication-ipc), both the streaming format and the file format (magic, footer, blocks),
 * with optional zstd or lz4-frame body compression. The metadata is read and written by the
 * library's own FlatBuffers code; there is no Arrow runtime.
 *
 * Types read and written: null, int8/16/32/64, uint8/16/32/64, float16/32/64, utf8,
 * large_utf8, binary, large_binary, utf8_view and binary_view (with their variadic buffers),
 * list, large_list, fixed_size_list and struct, nested freely. Anything else (and any
 * dictionary-encoded field) is refused with AQ_UNSUPPORTED naming the field and its type.
 * Schema and field key/value metadata are kept both ways. */

typedef enum aq_ipc_format {
    AQ_IPC_FORMAT_STREAM = 0, /* the streaming format (.arrows) */
    AQ_IPC_FORMAT_FILE = 1    /* the file format (.arrow, .feather v2): magic, footer, blocks */
} aq_ipc_format;

typedef enum aq_ipc_compression {
    AQ_IPC_COMPRESSION_NONE = 0,
    AQ_IPC_COMPRESSION_LZ4_FRAME = 1,
    AQ_IPC_COMPRESSION_ZSTD = 2
} aq_ipc_compression;

/* A reader of one IPC file or stream. Not thread-safe; use one per thread. */
typedef struct aq_ipc_reader aq_ipc_reader;

/* Opens an IPC file or stream (the format is recognised from the first bytes: "ARROW1" for
 * the file format) and reads its schema. The file is memory-mapped: uncompressed buffers are
 * handed out as pointers into the mapping, never copied (a buffer whose position in the file
 * is not 8-byte aligned is the exception: it is copied so that consumers get aligned data).
 * Arrays keep the mapping alive after the reader is freed. Every offset and length in the
 * metadata is checked against the file: a malformed file is AQ_INVALID_DATA naming the
 * file, the message and the byte offset. *out is written only on success. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_reader_open(const char *path, aq_ipc_reader **out,
                                                  aq_error *err);
/* As aq_ipc_reader_open, over size bytes in memory. The bytes are copied once, so the caller
 * may free data as soon as the call returns. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_reader_open_memory(const void *data, size_t size,
                                                         aq_ipc_reader **out, aq_error *err);
/* Frees a reader. Arrays already returned stay valid. Accepts NULL. */
AQ_API void aq_ipc_reader_free(aq_ipc_reader *reader);

AQ_API aq_ipc_format aq_ipc_reader_format(const aq_ipc_reader *reader);
/* For the file format, the number of record batches in the footer; for a stream, the number
 * read so far. */
AQ_API size_t aq_ipc_reader_num_batches(const aq_ipc_reader *reader);
/* A fresh copy of the schema (a struct "+s" whose children are the columns, with the schema
 * metadata), owned by the caller. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_reader_schema(const aq_ipc_reader *reader,
                                                    struct ArrowSchema *out, aq_error *err);
/* Reads the next record batch as a struct array (length = rows, one child per column), owned
 * by the caller. At the end of the data, returns AQ_OK with out->release == NULL. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_reader_next(aq_ipc_reader *reader, struct ArrowArray *out,
                                                  aq_error *err);
/* Turns a reader into an ArrowArrayStream. The stream takes the reader over (even on error):
 * do not free it afterwards; releasing the stream frees it. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_reader_stream(aq_ipc_reader *reader,
                                                    struct ArrowArrayStream *out, aq_error *err);

typedef struct aq_ipc_write_options {
    size_t size;          /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    aq_ipc_format format; /* default (0): the streaming format */
    aq_ipc_compression compression; /* default (0): none */
    int compression_level;          /* 0: the codec's default */
} aq_ipc_write_options;

/* A writer of one IPC file or stream. The data goes to a temporary file in the destination's
 * directory ("<path>.tmp-XXXXXX"), which aq_ipc_writer_close flushes, fsyncs and renames to
 * path: a reader never sees a partial file under the final name. */
typedef struct aq_ipc_writer aq_ipc_writer;

/* Creates the temporary file and writes the schema (a struct "+s" whose children are the
 * columns; borrowed). opts may be NULL (stream, uncompressed). */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_writer_open(const char *path,
                                                  const struct ArrowSchema *schema,
                                                  const aq_ipc_write_options *opts,
                                                  aq_ipc_writer **out, aq_error *err);
/* Writes one record batch (a struct array matching the schema; borrowed; sliced arrays are
 * written as their slice). Buffers are 64-byte aligned in the output. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_writer_write(aq_ipc_writer *writer,
                                                   const struct ArrowArray *batch, aq_error *err);
/* Finishes the output (end-of-stream marker, or footer and magic), fsyncs it and renames it
 * into place. On failure nothing is left under the final name and the temporary is removed.
 * The writer must still be freed. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_writer_close(aq_ipc_writer *writer, aq_error *err);
/* Frees a writer; if it was not closed successfully, removes its temporary file. Accepts NULL. */
AQ_API void aq_ipc_writer_free(aq_ipc_writer *writer);

/* Writes every batch of a stream to path (open, write each batch, close). The stream is
 * borrowed: the caller still releases it. On any error no file is left under path. */
AQ_API AQ_MUST_CHECK aq_status aq_ipc_write_stream(const char *path,
                                                   struct ArrowArrayStream *stream,
                                                   const aq_ipc_write_options *opts, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Safetensors checkpoints and model files (src/io)                                           */
/* ------------------------------------------------------------------------------------------ */

/* Safetensors files (https://github.com/huggingface/safetensors, format of the header and
 * data region), sharded checkpoints (a `*.safetensors.index.json` beside its shards) and
 * diffusers folders (`model_index.json` and one folder per component), read through memory
 * maps without copying, and a streaming safetensors writer. */

/* The element types of safetensors, by their names in the header. Tensors of F32, F16, BF16
 * and F64 can be quantized; the others are carried through unchanged. AQ_ST_UNKNOWN is a
 * dtype string this library does not know: such a tensor is readable as raw bytes (its size
 * cannot be checked against its shape) but cannot be quantized. */
typedef enum aq_st_dtype {
    AQ_ST_F64 = 0,
    AQ_ST_F32,
    AQ_ST_F16,
    AQ_ST_BF16,
    AQ_ST_I64,
    AQ_ST_I32,
    AQ_ST_I16,
    AQ_ST_I8,
    AQ_ST_U64,
    AQ_ST_U32,
    AQ_ST_U16,
    AQ_ST_U8,
    AQ_ST_BOOL,
    AQ_ST_F8_E4M3,
    AQ_ST_F8_E5M2,
    AQ_ST_F8_E8M0,
    AQ_ST_F8_E4M3FNUZ,
    AQ_ST_F8_E5M2FNUZ,
    AQ_ST_C64,
    AQ_ST_UNKNOWN,
    AQ_ST_DTYPE_COUNT
} aq_st_dtype;

/* "F32", "BF16", ... as written in safetensors headers; "UNKNOWN" for AQ_ST_UNKNOWN. */
AQ_API const char *aq_st_dtype_name(aq_st_dtype dtype);
/* Looks a dtype string up (case-sensitive, as in the format); AQ_ST_UNKNOWN if unknown. */
AQ_API aq_st_dtype aq_st_dtype_from_name(const char *name);
/* Bytes per element; 0 for AQ_ST_UNKNOWN. */
AQ_API size_t aq_st_dtype_size(aq_st_dtype dtype);
/* Sets *out to the quantizable dtype (F32, F16, BF16, F64) and returns 1, or returns 0. */
AQ_API int aq_st_dtype_to_aq(aq_st_dtype dtype, aq_dtype *out);

/* Largest header accepted, in bytes (the reference implementation's limit). */
#define AQ_ST_MAX_HEADER_SIZE 100000000u

/* One tensor of an opened model: borrowed from the model, valid until aq_model_free. `data`
 * points into the file mapping (read-only, little-endian, not necessarily aligned to the
 * element size). */
typedef struct aq_st_tensor {
    const char *name; /* full name; "component/name" in a diffusers pipeline folder */
    aq_st_dtype dtype;
    const char *dtype_name; /* as written in the file (kept for AQ_ST_UNKNOWN) */
    const int64_t *shape;
    size_t ndim;
    size_t elements; /* product of the shape (1 for a scalar) */
    const void *data;
    size_t nbytes;
    const char *file;      /* path of the file holding it */
    const char *component; /* diffusers component ("unet", ...) or "" */
} aq_st_tensor;

/* A checkpoint opened for reading: a `.safetensors` file, a `*.safetensors.index.json` of a
 * sharded checkpoint, or a folder (a diffusers pipeline with `model_index.json`, or one model
 * folder holding a single safetensors file or an index; a `.fp16` variant is used when it is
 * the only one). Every header is validated in full when the model is opened (8-byte length,
 * size cap, JSON, dtypes, shapes, offsets that tile the data region exactly, duplicate names).
 * Tensors come in file order; in a pipeline folder components are taken in name order and
 * tensor names get the component's name as prefix. */
typedef struct aq_model aq_model;

AQ_API AQ_MUST_CHECK aq_status aq_model_open(const char *path, aq_model **out, aq_error *err);
AQ_API void aq_model_free(aq_model *model);
/* Number of tensors, and tensor i (0 <= i < count; NULL otherwise). */
AQ_API size_t aq_model_count(const aq_model *model);
AQ_API const aq_st_tensor *aq_model_tensor(const aq_model *model, size_t i);
/* Index of the tensor with this full name; returns 0 and sets *index, or -1 if absent. */
AQ_API int aq_model_find(const aq_model *model, const char *name, size_t *index);
/* A view of tensor i for the quantizer. AQ_UNSUPPORTED if its dtype is not quantizable. The
 * data pointer may be unaligned for the element size (safetensors does not align tensors):
 * check before handing it to code that needs alignment (the quantizer does). */
AQ_API AQ_MUST_CHECK aq_status aq_model_tensor_view(const aq_model *model, size_t i, aq_tensor *out,
                                                    aq_error *err);
/* Lets go of the mapped pages of tensor i (madvise MADV_DONTNEED), so that peak memory stays
 * bounded while a model streams through; the data stays readable (it is read again from the
 * file if touched). */
AQ_API void aq_model_release(aq_model *model, size_t i);
/* The models's `__metadata__` (string to string; merged over the files of a sharded model,
 * with the index's own "metadata" object first). */
AQ_API size_t aq_model_metadata_count(const aq_model *model);
/* Entry i (0 <= i < count; else AQ_INVALID_ARGUMENT). Strings owned by the model. */
AQ_API AQ_MUST_CHECK aq_status aq_model_metadata_get(const aq_model *model, size_t i,
                                                     const char **key, const char **value,
                                                     aq_error *err);
/* The diffusers components of a pipeline folder, in order; 0 otherwise. The string is the
 * component's relative file name ("unet/diffusion_pytorch_model.safetensors"). */
AQ_API size_t aq_model_component_count(const aq_model *model);
AQ_API AQ_MUST_CHECK aq_status aq_model_component_get(const aq_model *model, size_t i,
                                                      const char **name, const char **file,
                                                      aq_error *err);
/* Checks an output path before any work, as the library's own writers do: not empty, its
 * folder exists and can be written, and what is there already is a regular file (or a link to
 * one), not a folder, a device, a FIFO, a socket or a dangling link; and it is none of the n
 * input files, compared by device and inode (so no other spelling, hard link or symbolic
 * link of an input either). For tools that write outputs of their own. */
AQ_API AQ_MUST_CHECK aq_status aq_output_check(const char *path, const char *const *inputs,
                                               size_t n_inputs, aq_error *err);

/* Input files are memory-mapped by the readers (safetensors, Arrow IPC, GGUF), and the data
 * pointers they hand out point into the mapping. A file truncated by another process while
 * it is mapped would raise SIGBUS on the next read past its new end, which kills the process.
 * The library guards its own mappings: the first one installs a SIGBUS handler (once, for the
 * life of the process) that turns a fault inside one of them into zeros for the rest of that
 * mapping and counts it, and passes any other SIGBUS to the handler it found (or the default
 * action). The library then refuses to use such zeros: every writer fails before it renames
 * its output into place (the temporary is removed) and the model-file reader fails, with
 * AQ_IO "PATH: the file changed while being read (truncated by another process?)". A host
 * that reads mapped tensor data itself takes aq_mapped_faults() before and calls
 * aq_mapped_check with it after. A host that installs its own SIGBUS handler later must pass
 * faults it does not own to the previous handler. */
AQ_API uint64_t aq_mapped_faults(void);
/* AQ_OK when no fault was caught since aq_mapped_faults() returned `since` and no mapping
 * that faulted is still open; else AQ_IO naming the latest file that faulted. */
AQ_API AQ_MUST_CHECK aq_status aq_mapped_check(uint64_t since, aq_error *err);

/* Removes the temporary files of every output this process is writing (the writers of model
 * files, IPC files and safetensors files create them beside their destination). Only for a
 * handler of a fatal signal: it is async-signal-safe, and the writers cannot go on after it.
 * (The readers guard their own mappings against SIGBUS: see aq_mapped_faults.) */
AQ_API void aq_temporaries_remove(void);

/* The members of a pipeline's model_index.json that gave no tensors, in name order, with
 * why ("no folder", "empty folder", "no weight files (configuration only)", "weights only
 * in a format other than safetensors (e.g. pytorch_model.bin)", "safetensors shards without
 * their index"); 0 otherwise. */
AQ_API size_t aq_model_skipped_count(const aq_model *model);
AQ_API AQ_MUST_CHECK aq_status aq_model_skipped_get(const aq_model *model, size_t i,
                                                    const char **name, const char **reason,
                                                    aq_error *err);
/* Total bytes of tensor data. */
AQ_API size_t aq_model_data_bytes(const aq_model *model);

/* Writing a safetensors file in a stream: the tensors (names, dtypes, shapes) and the
 * metadata are declared first, then their bytes are appended in the declared order, in as
 * many pieces as the caller likes. The file is written under a temporary name in the target
 * folder and renamed into place by aq_st_writer_finish only when every byte is there; a writer
 * freed before that removes the temporary file, so nothing is ever left under the final name
 * by a failed or interrupted run. */
typedef struct aq_st_spec {
    const char *name;
    aq_st_dtype dtype;
    const char *dtype_name; /* used for AQ_ST_UNKNOWN (raw bytes carried through); else NULL */
    const int64_t *shape;
    size_t ndim;
    size_t nbytes; /* must equal elements x dtype size for a known dtype */
} aq_st_spec;

typedef struct aq_st_writer aq_st_writer;

AQ_API AQ_MUST_CHECK aq_status aq_st_writer_open(const char *path, const aq_st_spec *tensors,
                                                 size_t n, const char *const *meta_keys,
                                                 const char *const *meta_values, size_t n_meta,
                                                 aq_st_writer **out, aq_error *err);
/* Appends bytes of the tensor data (in declared order). More bytes than declared is an error. */
AQ_API AQ_MUST_CHECK aq_status aq_st_writer_write(aq_st_writer *w, const void *data, size_t nbytes,
                                                  aq_error *err);
/* Checks that every declared byte was written, flushes to disk and renames into place. */
AQ_API AQ_MUST_CHECK aq_status aq_st_writer_finish(aq_st_writer *w, aq_error *err);
/* Frees the writer; removes the temporary file unless aq_st_writer_finish succeeded. */
AQ_API void aq_st_writer_free(aq_st_writer *w);

/* ---- Quantized model files (.arrow, DESIGN.md 2.4) ---- */

/* Tensors with fewer elements than this are kept as they are by default. */
#define AQ_MODEL_MIN_ELEMENTS 16384
/* Default target size of one record batch of a model file. */
#define AQ_MODEL_BATCH_BYTES ((size_t)64 << 20)

/* Progress of a model run, reported after each tensor. */
typedef struct aq_model_progress {
    size_t tensors_done;
    size_t tensors_total;
    size_t bytes_done; /* source bytes */
    size_t bytes_total;
    const char *current; /* name of the tensor just done */
    int planning; /* 1 during target_bpw's measuring pass (then the counts start over at 0) */
} aq_model_progress;

typedef void (*aq_model_progress_fn)(void *user, const aq_model_progress *progress);

/* What happened to one tensor of a model run (for aq_model_quantize_options.on_tensor). */
typedef struct aq_model_tensor_result {
    size_t index;
    const char *name; /* owned by the model */
    int kept;         /* 1: written as it is (the rest then says nothing) */
    aq_scheme scheme;
    unsigned bit_width;
    unsigned initial_bit_width; /* the context's bit width, or the budget's choice */
    int moved;                  /* 1 when the cosine floor raised the bit width */
    double initial_cosine;      /* the cosine at initial_bit_width */
    size_t group_size;          /* the layout's (512 for kquant) */
    size_t elements;
    size_t bytes; /* packed bytes + 4 per scale and per zero point */
    double sqnr_db;
    double cosine;
    const char *rule; /* with aq_model_quantize_options.rules: the aq_rule_name of the rule that
                         decided the tensor, or "not float" (kept); NULL without rules */
} aq_model_tensor_result;

typedef void (*aq_model_tensor_fn)(void *user, const aq_model_tensor_result *result);

/* aq_model_quantize_options.target_bpw: the default mode's size. With layer rules: the rules'
 * profile's target_bpw (2.625, 4.5, 8.5) over every float tensor of two or more dimensions,
 * every byte counted whether quantized or kept, whatever budget_scope says; the rules'
 * treatments (8 bits, kept in float) and the floor are preferences within it, overrides are
 * applied and counted (docs/pipeline.md). AQ_INVALID_PARAMETER when even the smallest options
 * do not fit. Without rules: the run's own size, each tensor at the context's bits and scheme,
 * raised by min_cosine (2 -> 4 -> 8) where it falls below it; the allocation then trades bits
 * between those tensors at no extra size. */
#define AQ_TARGET_BPW_PROFILE (-1.0)

/* What a size budget (aq_model_quantize_options.target_bpw) covers. */
typedef enum aq_budget_scope {
    /* The budget covers the tensors the budget chooses for: those that follow the profile
     * (with layer rules), or every quantized tensor (without): their bytes <= target_bpw / 8
     * times their parameters. */
    AQ_BUDGET_SCOPE_PROFILE = 0,
    /* The budget covers every float tensor of the model: target_bpw / 8 times all float
     * parameters (kept ones included), less the bytes of the kept tensors (as stored) and of
     * the tensors the rules fix (8-bit rules, overrides), is what the tensors the budget
     * chooses for may use. AQ_INVALID_PARAMETER, giving the smallest bits per weight reachable,
     * when that is less than their smallest options. */
    AQ_BUDGET_SCOPE_MODEL = 1
} aq_budget_scope;

typedef struct aq_model_quantize_options {
    size_t size; /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    const char *const *keep; /* glob patterns (fnmatch) of tensors to keep as they are */
    size_t n_keep;
    size_t min_elements; /* 0: AQ_MODEL_MIN_ELEMENTS */
    int compression;     /* an aq_ipc_compression value (0: none) */
    size_t batch_bytes;  /* 0: AQ_MODEL_BATCH_BYTES */
    const char *profile; /* written to the metadata; NULL: "local" */
    aq_model_progress_fn progress;
    void *progress_user;
    /* Polled between tensors and blocks; when it becomes nonzero the run stops with
     * AQ_CANCELLED and no output file is left behind (for SIGINT handlers). */
    const volatile int *cancel;
    /* Quality options (docs/decisions.md, "Quality options in the model pipeline"); all 0 / NULL
     * by default. min_cosine > 0: a quantized tensor whose cosine similarity with its source
     * falls below it is quantized again with more bits (2 -> 4 -> 8, same scheme). target_bpw
     * > 0: the bits (2, 4, 8) and scheme of every quantized tensor are chosen so that the
     * quantized tensors' packed bytes, scales and zero points stay within target_bpw bits per
     * weight, minimising their total squared error (greedily by error saved per byte, as
     * aq_qset_quantize; options below min_cosine are not chosen): a first pass measures every
     * option of every tensor without keeping its output, then the allocation is made, then the
     * tensors are quantized as chosen. AQ_INVALID_PARAMETER when the smallest options do not
     * fit. AQ_TARGET_BPW_PROFILE (-1): the default mode's size (see there). With rules and an
     * explicit target_bpw, only the tensors that follow the profile are chosen for, and
     * budget_scope says what the budget covers. schemes / n_schemes: the budget's candidates
     * (NULL: the context's scheme; with rules, the rules' profile scheme). */
    double min_cosine;
    double target_bpw;
    const aq_scheme *schemes;
    size_t n_schemes;
    /* Called after each tensor is written (may be NULL). */
    aq_model_tensor_fn on_tensor;
    void *on_tensor_user;
    /* Diffusion layer rules (aq_rules_create; NULL: the keep rule above). When set, every float
     * tensor is kept, or quantized at the bit width and scheme that aq_rules_decide gives it
     * (the context's scheme and bits are not used); keep and min_elements are ignored (give
     * --keep patterns as overrides of the rules); non-float tensors are kept. min_cosine still
     * raises a tensor's bits. With target_bpw, the tensors the rules keep or fix (the 8-bit
     * rules, overrides) stay as decided and the budget chooses the bits (and the scheme among
     * `schemes`, by default the rules' profile scheme) of the tensors that follow the profile
     * (rule AQ_RULE_PROFILE), over the scope budget_scope says. */
    const struct aq_rules *rules;
    /* Time-aware importance (a finished aq_calib; NULL: none). Checked first against the
     * model's tensor names (aq_calib_check_model: an error before any output). Every quantized
     * tensor the table has statistics for is quantized with the square root of
     * aq_calib_importance's vector as aq_quantize_options.importance, in the budget's
     * measuring pass, the writing pass and the cosine floor's requantization. affine_search
     * and kquant minimise the importance-weighted error; plain affine ignores importance; the
     * default mode's budget (rules without an explicit target_bpw) weighs each option's error
     * by it. Borrowed for the call. */
    const struct aq_calib *calib;
    /* What target_bpw counts (see aq_budget_scope); AQ_BUDGET_SCOPE_PROFILE by default. */
    aq_budget_scope budget_scope;
} aq_model_quantize_options;

/* Totals of a model run. Sizes count tensor payloads: source bytes in, and out the packed
 * codes plus the float32 scales and zero points (raw bytes for kept tensors). */
typedef struct aq_model_summary {
    size_t tensors;
    size_t quantized;
    size_t kept;
    size_t params;
    size_t quantized_params;
    size_t bytes_in;
    size_t bytes_out;
    size_t batches;
    double mean_sqnr_db; /* over quantized tensors (0 if none) */
    double min_sqnr_db;
    double mean_cosine;
    const char *worst;      /* tensor with the lowest SQNR (owned by the model); NULL if none */
    size_t moved;           /* tensors the cosine floor moved to more bits */
    size_t quantized_bytes; /* bytes_out of the quantized tensors alone */
} aq_model_summary;

/* The rule that decides, for tensor i of a model, whether it is kept as it is: user patterns
 * first, then non-float dtypes, tensors of 0 or 1 dimensions, names with a dotted part that
 * contains "embed", and tensors of fewer than min_elements elements. *reason receives a short
 * static string ("--keep", "1-D", "embedding", "small", "dtype I64"); kept is 0 or 1. A tensor
 * of unknown dtype that no pattern keeps is AQ_UNSUPPORTED: it cannot be quantized. */
AQ_API AQ_MUST_CHECK aq_status aq_model_keep_rule(const aq_model *model, size_t i,
                                                  const aq_model_quantize_options *opts, int *kept,
                                                  const char **reason, aq_error *err);

/* Quantizes a whole model into an Arrow IPC model file (DESIGN.md 2.4): one row per tensor,
 * in model order, in record batches of about batch_bytes; each tensor's mapped pages are
 * released once done, so memory stays near the largest tensor plus one batch. Quality figures
 * (SQNR, cosine, max error) are computed per tensor during the run. The file is written under
 * a temporary name and renamed into place only when complete. summary may be NULL. */
AQ_API AQ_MUST_CHECK aq_status aq_model_quantize(aq_ctx *ctx, aq_model *model, const char *out_path,
                                                 const aq_model_quantize_options *opts,
                                                 aq_model_summary *summary, aq_error *err);

/* A model file opened for reading, row by row. */
typedef struct aq_qmodel aq_qmodel;

/* One row of a model file, valid until the next aq_qmodel_next or aq_qmodel_free. Kept rows
 * have raw != 0, scheme "raw", group_size 0, no scales, and data holding the raw
 * little-endian values (float32 for bit_width 32, float16 for 16 when source_dtype is a float;
 * otherwise the source dtype's bytes). */
typedef struct aq_qmodel_row {
    const char *name;
    const char *scheme;
    const char *source_dtype;
    int raw;
    unsigned bit_width;
    size_t group_size;
    const int64_t *shape;
    size_t ndim;
    size_t elements;
    const uint8_t *data;
    size_t data_size;
    const float *scales;
    const float *zero_points;
    size_t groups;
    double sqnr_db;
    double cosine;
    double max_abs_error;
} aq_qmodel_row;

AQ_API AQ_MUST_CHECK aq_status aq_qmodel_open(const char *path, aq_qmodel **out, aq_error *err);
AQ_API void aq_qmodel_free(aq_qmodel *qm);
/* Value of a schema metadata key, or NULL. */
AQ_API const char *aq_qmodel_metadata(const aq_qmodel *qm, const char *key);
/* Next row: *row is NULL at the end. Every row is validated (types, sizes, scheme). */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_next(aq_qmodel *qm, const aq_qmodel_row **row,
                                              aq_error *err);
/* Starts over from the first row. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_rewind(aq_qmodel *qm, aq_error *err);
/* The safetensors dtype a row is restored to when no dtype is asked for: its source dtype
 * for F32, F16 and BF16, F32 for F64, the source dtype itself for raw non-float rows. */
AQ_API aq_st_dtype aq_qmodel_row_default_dtype(const aq_qmodel_row *row);
/* Restores elements [start, start + count) of a row as out_dtype (F32, F16 or BF16 for float
 * rows; a raw non-float row only as its own dtype, byte for byte). For quantized rows start
 * and count must be multiples of the row length (cols), except for the last block. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_row_restore(aq_ctx *ctx, const aq_qmodel_row *row,
                                                     size_t start, size_t count,
                                                     aq_st_dtype out_dtype, void *out,
                                                     aq_error *err);
/* Writes a model file back to safetensors (names, shapes and the source __metadata__ kept),
 * float tensors as out_dtype (AQ_ST_UNKNOWN: each tensor's default dtype), streaming. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_to_safetensors(aq_ctx *ctx, const char *in_path,
                                                        const char *out_path, aq_st_dtype out_dtype,
                                                        const volatile int *cancel, aq_error *err);
/* Writes a model file made from a diffusers pipeline folder back as one safetensors file per
 * component, under the component file names it came from (out_dir/unet/
 * diffusion_pytorch_model.safetensors, ...), names without the component prefix. out_dir must
 * exist. On failure the files and folders this call created are removed. */
AQ_API AQ_MUST_CHECK aq_status aq_qmodel_to_folder(aq_ctx *ctx, const char *in_path,
                                                   const char *out_dir, aq_st_dtype out_dtype,
                                                   const volatile int *cancel, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Quality: weighted quantization, moments, fallback and mixed precision (src/quant/quality.c) */
/* ------------------------------------------------------------------------------------------ */

/* The super-block size of AQ_SCHEME_KQUANT: its layout's group_size, whatever
 * AQ_PARAM_GROUP_SIZE says. A writer must record layout.group_size (from aq_quantize_bound),
 * not the context's parameter; a reader gives it back in aq_qtensor.group_size. */
#define AQ_KQUANT_SUPER_BLOCK 512u

/* aq_layout_compute for any scheme: for the kquant schemes, group_size is ignored (512 is
 * used), groups counts super-blocks and packed_bytes counts the codes and the packed sub-block
 * parameters after them. For AQ_SCHEME_KQUANT the layout is that of the flattened tensor
 * (rows 1, cols the element count); AQ_SCHEME_KQUANT_ROWS keeps the tensor's rows. */
AQ_API AQ_MUST_CHECK aq_status aq_layout_compute_scheme(aq_scheme scheme, const int64_t *shape,
                                                        size_t ndim, unsigned bit_width,
                                                        size_t group_size, aq_layout *out,
                                                        aq_error *err);

typedef struct aq_quantize_options {
    size_t size; /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    /* NULL, or one importance weight per element of the tensor (row-major, as the data):
     * finite and >= 0. affine_search and kquant then minimise the importance-weighted squared
     * error (docs/format.md 5.1); plain affine ignores it. Borrowed for the call. */
    const float *importance;
} aq_quantize_options;

/* Moment figures of one quantization (filled by aq_quantize_ex when asked for). For each row
 * with original mean mu and population standard deviation sigma, and dequantized mean mu_hat
 * and deviation sigma_hat, KL(N(mu, sigma^2) || N(mu_hat, sigma_hat^2)) =
 * ln(sigma_hat / sigma) + (sigma^2 + (mu - mu_hat)^2) / (2 sigma_hat^2) - 1/2. */
typedef struct aq_quantize_stats {
    size_t rows;           /* rows with sigma > 0 and sigma_hat > 0, over which KL is averaged */
    size_t rows_corrected; /* rows whose scales and zero points the correction changed */
    double kl_before;      /* mean KL of the quantized rows before the correction */
    double kl_after;       /* the same after it (== kl_before when no correction was made) */
} aq_quantize_stats;

/* aq_quantize with options (opts may be NULL) and, when stats is not NULL, the moment figures
 * (which cost one dequantization of the tensor). With AQ_PARAM_PRESERVE_MOMENTS set the rows
 * are corrected; with AQ_SCHEME_KQUANT that is AQ_UNSUPPORTED (its offsets cannot absorb a
 * row's mean shift). A bad importance vector (NaN, Inf or negative weight) is
 * AQ_INVALID_ARGUMENT naming the layer and the index. */
AQ_API AQ_MUST_CHECK aq_status aq_quantize_ex(aq_ctx *ctx, const aq_tensor *src,
                                              const aq_quantize_options *opts,
                                              const aq_qbuffers *dst, aq_quantize_stats *stats,
                                              aq_error *err);

/* Quantizing a list of tensors with a quality floor and/or a size budget. The result is an
 * aq_qset: one quantized tensor per input, in input order, each with the choice made for it. */
typedef struct aq_qset aq_qset;

typedef struct aq_qset_options {
    size_t size; /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    /* 0 = no floor. Otherwise a tensor whose cosine similarity falls below it is quantized
     * again with more bits (2 -> 4 -> 8, same scheme); with a budget, options below the floor
     * are not considered (unless none meets it: then the tensor's most accurate option). */
    double min_cosine;
    /* 0 = no budget: every tensor starts at the context's bit width. Otherwise the total size
     * (codes, scales, zero points, sub-block parameters) must stay within target_bpw bits per
     * weight: each tensor starts at its smallest option and the upgrade that saves the most
     * squared error per byte is taken first, while it fits. AQ_INVALID_PARAMETER when even
     * the smallest options do not fit. */
    double target_bpw;
    /* The schemes the budget may choose from, each at 2, 4 and 8 bits; NULL = the context's
     * scheme only. Ignored without a budget. */
    const aq_scheme *schemes;
    size_t n_schemes;
    /* NULL, or one importance vector (or NULL) per tensor, as aq_quantize_options. */
    const float *const *importance;
    /* May be NULL. Called after each tensor is done (floor only) or measured (budget), as
     * aq_progress_fn with the tensors and elements so far; nonzero stops the call with
     * AQ_CANCELLED (nothing is returned). */
    aq_progress_fn progress;
    void *progress_user;
} aq_qset_options;

/* What was chosen for one tensor and how well it came back. */
typedef struct aq_qset_choice {
    aq_scheme scheme;
    unsigned bit_width;
    unsigned initial_bit_width; /* the context's bit width, or the budget's first choice */
    int moved;                  /* 1 when the floor raised the bit width */
    int meets_min_cosine;       /* 1 when cosine >= min_cosine (always 1 without a floor) */
    size_t bytes;               /* packed bytes + 4 bytes per scale and per zero point */
    double bits_per_weight;     /* bytes * 8 / elements */
    aq_metrics metrics;         /* original vs dequantized */
} aq_qset_choice;

AQ_API AQ_MUST_CHECK aq_status aq_qset_quantize(aq_ctx *ctx, const aq_tensor *tensors, size_t n,
                                                const aq_qset_options *opts, aq_qset **out,
                                                aq_error *err);
AQ_API void aq_qset_free(aq_qset *set);
AQ_API size_t aq_qset_count(const aq_qset *set);
/* Entry i: the choice and a view of the quantized tensor (buffers and shape owned by the set,
 * valid until aq_qset_free; name borrowed from the input). AQ_INVALID_ARGUMENT if i is out of
 * range. Either output may be NULL. */
AQ_API AQ_MUST_CHECK aq_status aq_qset_get(const aq_qset *set, size_t i, aq_qset_choice *choice,
                                           aq_qtensor *tensor, aq_error *err);
/* Totals over the set: bytes (as in aq_qset_choice) and elements. */
AQ_API void aq_qset_totals(const aq_qset *set, size_t *bytes, size_t *elements);

/* The choices recorded in a report by aq_batch_quantize, aq_tensors_quantize and
 * aq_stream_quantize when min_cosine or target_bpw is set: one per quantized row, in row
 * order. Entry i gives the row index in the input (counted across the batches of a stream),
 * the layer name (owned by the report) and the choice (its metrics compare the row with its
 * dequantization; moved is 1 where the floor raised the bit width). AQ_INVALID_ARGUMENT if i
 * is out of range. Any output may be NULL. */
AQ_API size_t aq_report_choice_count(const aq_report *report);
AQ_API AQ_MUST_CHECK aq_status aq_report_choice_get(const aq_report *report, size_t i, size_t *row,
                                                    const char **layer_name, aq_qset_choice *choice,
                                                    aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Diffusion (src/diffusion): layer rules, profiles, time-aware importance                    */
/* ------------------------------------------------------------------------------------------ */

/* Deployment profiles. Each gives the bit width and scheme of the tensors that follow the
 * profile, and the quality goals handed to aq_qset_quantize: a floor on each tensor's cosine
 * similarity (min_cosine) and a size budget (target_bpw, in bits per weight, all metadata
 * counted, over the tensors that follow the profile; tensors that the layer rules keep in 16
 * bits or raise to 8 bits are outside the budget). Values in docs/diffusion.md, "Profiles". */
typedef struct aq_profile {
    const char *name;   /* "edge", "local", "cloud"; static storage */
    unsigned bit_width; /* 2, 4, 8 */
    aq_scheme scheme;   /* the scheme of mode="diffusion" */
    size_t group_size;  /* the layout's group size for that scheme */
    double min_cosine;  /* aq_qset_options.min_cosine */
    double target_bpw;  /* aq_qset_options.target_bpw */
} aq_profile;

#define AQ_PROFILE_COUNT 3

/* Looks a profile up by name. AQ_INVALID_PARAMETER for any other name, with the message
 * "Unknown profile 'NAME'. Known profiles: edge, local, cloud". */
AQ_API AQ_MUST_CHECK aq_status aq_profile_get(const char *name, aq_profile *out, aq_error *err);
/* Profile i (0 <= i < AQ_PROFILE_COUNT), from smallest to largest. AQ_INVALID_ARGUMENT past it. */
AQ_API AQ_MUST_CHECK aq_status aq_profile_at(size_t i, aq_profile *out, aq_error *err);

/* Architecture families, recognised from tensor names (diffusers and transformers naming). */
typedef enum aq_family {
    AQ_FAMILY_AUTO = 0,  /* detect from the names, per component (see aq_rules_create) */
    AQ_FAMILY_GENERIC,   /* none recognised: only the generic rules apply */
    AQ_FAMILY_UNET,      /* UNet2DModel, UNet2DConditionModel */
    AQ_FAMILY_DIT,       /* Transformer2DModel (DiT), PixArtTransformer2DModel */
    AQ_FAMILY_MMDIT,     /* SD3Transformer2DModel */
    AQ_FAMILY_FLUX,      /* FluxTransformer2DModel */
    AQ_FAMILY_VAE,       /* AutoencoderKL and other encoder/decoder autoencoders */
    AQ_FAMILY_CLIP_TEXT, /* CLIPTextModel, CLIPTextModelWithProjection */
    AQ_FAMILY_T5_TEXT,   /* T5EncoderModel */
    AQ_FAMILY_COUNT
} aq_family;

/* "auto", "generic", "unet", "dit", "mmdit", "flux", "vae", "clip_text", "t5_text";
 * "unknown" otherwise. */
AQ_API const char *aq_family_name(aq_family family);
/* AQ_INVALID_PARAMETER, naming the known families, for an unknown name. */
AQ_API AQ_MUST_CHECK aq_status aq_family_from_name(const char *name, aq_family *out, aq_error *err);
/* The family whose signature tensors appear among names (one component's tensors, without
 * a "component/" prefix); AQ_FAMILY_GENERIC when none does. Never fails. */
AQ_API aq_family aq_family_detect(const char *const *names, size_t n);

/* Why a tensor got its treatment. */
typedef enum aq_rule {
    AQ_RULE_PROFILE = 0,    /* follows the profile */
    AQ_RULE_BIAS,           /* kept: a bias */
    AQ_RULE_NORM,           /* kept: a normalisation scale */
    AQ_RULE_EMBEDDING,      /* kept: a token or class embedding table of at most
                               AQ_RULES_KEEP_TABLE_MAX elements (larger: the profile) */
    AQ_RULE_POSITIONAL,     /* kept: a positional table (absolute or relative) */
    AQ_RULE_VECTOR,         /* kept: any other tensor of fewer than 2 dimensions, of at most
                               AQ_RULES_KEEP_VECTOR_MAX elements (larger: the profile) */
    AQ_RULE_TIME_EMBEDDING, /* 8 bits: the timestep embedding MLP */
    AQ_RULE_CONDITIONING,   /* 8 bits: conditioning embedders (pooled text, guidance, ...) */
    AQ_RULE_MODULATION,     /* 8 bits: adaptive-norm modulation, time projections */
    AQ_RULE_FIRST_LAYER,    /* 8 bits: the input layer of an image or text stream */
    AQ_RULE_LAST_LAYER,     /* 8 bits: the output layer */
    AQ_RULE_LATENT,         /* 8 bits: a VAE's layers next to the latent */
    AQ_RULE_OVERRIDE,       /* a user override (aq_rules_add_override) */
    AQ_RULE_COUNT
} aq_rule;

/* "profile", "bias", "norm", "embedding", "positional", "vector", "time_embedding",
 * "conditioning", "modulation", "first_layer", "last_layer", "latent", "override";
 * "unknown" otherwise. */
AQ_API const char *aq_rule_name(aq_rule rule);

/* Bit width of a kept tensor in an override: stored as float16 (float32 for bfloat16
 * sources, see aq_rule_decision). */
#define AQ_RULES_KEEP 16u

/* The largest token embedding table, and the largest unnamed vector (a tensor of fewer than
 * 2 dimensions that is no bias or norm), the rules keep; larger ones follow the profile. A
 * text encoder's vocabulary (30522 x 384 in MiniLM) is well above the first; the second
 * leaves a weight passed flat, without its shape, to the profile. */
#define AQ_RULES_KEEP_TABLE_MAX ((size_t)1 << 20)
#define AQ_RULES_KEEP_VECTOR_MAX ((size_t)1 << 14)

/* The treatment of one tensor. */
typedef struct aq_rule_decision {
    int keep;            /* 1: stored unquantized, as raw floats of bit_width bits */
    unsigned bit_width;  /* 2, 4 or 8 when quantized; 16 or 32 when kept (32 only for bfloat16
                            sources, whose range float16 cannot hold) */
    aq_scheme scheme;    /* the profile's scheme (meaningless when kept) */
    size_t group_size;   /* the profile's group size (meaningless when kept) */
    aq_family family;    /* the family the tensor was judged under */
    aq_rule rule;        /* why */
    const char *pattern; /* for AQ_RULE_OVERRIDE, the pattern that matched (owned by the rules,
                            valid until aq_rules_free); NULL otherwise */
} aq_rule_decision;

/* Layer rules for one model (one component) or one diffusers pipeline (several). */
typedef struct aq_rules aq_rules;

/* Creates rules for a family and a profile (NULL: "local"). A name "COMPONENT/REST" belongs to
 * component COMPONENT (a diffusers pipeline folder: "unet/conv_in.weight"); a name without "/"
 * to the unnamed component. With AQ_FAMILY_AUTO each component's family is detected from its
 * names (n_names > 0 required; AQ_INVALID_ARGUMENT otherwise); with any other family, every
 * component is taken to be of that family and names may be NULL. names are borrowed. */
AQ_API AQ_MUST_CHECK aq_status aq_rules_create(aq_family family, const aq_profile *profile,
                                               const char *const *names, size_t n_names,
                                               aq_rules **out, aq_error *err);
AQ_API void aq_rules_free(aq_rules *rules);

/* Adds a user override: tensors whose full name matches the shell glob pattern (fnmatch, no
 * flags: '*' also matches '/' and '.') get bit_width 2, 4 or 8, or are kept (AQ_RULES_KEEP,
 * the --keep option). Overrides win over the default rules. The same pattern given twice
 * with different treatments is refused (AQ_INVALID_ARGUMENT: "Contradictory overrides: ...");
 * different patterns that match one tensor with different treatments are refused by
 * aq_rules_decide for that tensor. */
AQ_API AQ_MUST_CHECK aq_status aq_rules_add_override(aq_rules *rules, const char *pattern,
                                                     unsigned bit_width, aq_error *err);
/* Parses "PATTERN=BITS" (the --bits-for option; BITS is 2, 4, 8, or "keep" / 16) and adds it.
 * The last '=' splits, so patterns may contain '='. */
AQ_API AQ_MUST_CHECK aq_status aq_rules_add_override_spec(aq_rules *rules, const char *spec,
                                                          aq_error *err);

/* Decides the treatment of one tensor from its full name, shape and source dtype. Fails on a
 * NULL name, more than AQ_MAX_NDIM dimensions, a name of a component the rules were not
 * created with (AQ_FAMILY_AUTO only), or overrides that disagree about it (naming both
 * patterns). *out is written only on success. */
AQ_API AQ_MUST_CHECK aq_status aq_rules_decide(const aq_rules *rules, const char *name,
                                               const int64_t *shape, size_t ndim, aq_dtype dtype,
                                               aq_rule_decision *out, aq_error *err);

/* The components the rules know ("" for names without "/"), with their families. */
AQ_API size_t aq_rules_component_count(const aq_rules *rules);
AQ_API AQ_MUST_CHECK aq_status aq_rules_component_get(const aq_rules *rules, size_t i,
                                                      const char **component, aq_family *family,
                                                      aq_error *err);
/* The profile the rules were created with (copied). */
AQ_API void aq_rules_profile(const aq_rules *rules, aq_profile *out);

/* Time-aware calibration statistics. A calibration table (written by the Python helper
 * arrow_quant_v2.diffusion.calibrate, or by anyone) has one row per (layer, timestep group):
 *   layer_name      utf8 (large_utf8, string_view): the module's name, e.g.
 *                   "down_blocks.0.resnets.0.conv1" (its weight is "<layer_name>.weight")
 *   timestep_group  int32 or int64, >= 0
 *   mean_square     list (large_list, fixed_size_list) of float32 or float64: per input
 *                   channel, the mean of x^2 over every input the layer saw in that group
 * and optionally, in the schema metadata, arrowquant.timestep_groups (decimal): how many
 * groups the table must have. Without it the groups are 0 .. the largest seen.
 *
 * Combining groups: each group's vector is divided by its mean over the channels, so that
 * every part of the trajectory counts equally whatever its activation scale (activations at
 * high noise are much larger), then the groups are combined per channel by their maximum
 * (default: a channel that matters at any timestep is protected) or their mean. A floor of
 * AQ_CALIB_FLOOR (relative to the normalised mean of 1) keeps channels never active during
 * calibration from being ignored by the quantizer. */
typedef struct aq_calib aq_calib;

typedef enum aq_calib_combine {
    AQ_CALIB_COMBINE_MAX = 0,
    AQ_CALIB_COMBINE_MEAN = 1
} aq_calib_combine;

#define AQ_CALIB_FLOOR 0.01

AQ_API AQ_MUST_CHECK aq_status aq_calib_create(aq_calib **out, aq_error *err);
AQ_API void aq_calib_free(aq_calib *calib);
/* Adds the rows of one record batch (borrowed). Refuses, naming the layer, the group and the
 * channel: missing columns or wrong types, nulls, a negative group, the same (layer, group)
 * twice, a channel count that differs between a layer's groups, NaN, Inf or a negative mean
 * square, and a timestep_groups metadata value that differs between batches. Not allowed
 * after aq_calib_finish. */
AQ_API AQ_MUST_CHECK aq_status aq_calib_add_batch(aq_calib *calib, const struct ArrowSchema *schema,
                                                  const struct ArrowArray *array, aq_error *err);
/* Reads an Arrow IPC file or stream (src/ipc's reader) and adds every record batch with
 * aq_calib_add_batch. Errors name the file ("PATH: ..."): a missing or unreadable file, one
 * that is not Arrow IPC, and every refusal of aq_calib_add_batch. */
AQ_API AQ_MUST_CHECK aq_status aq_calib_add_ipc_file(aq_calib *calib, const char *path,
                                                     aq_error *err);
/* Checks that every layer has every timestep group (AQ_INVALID_ARGUMENT: "Layer 'L' has no
 * statistics for timestep group G (the table has groups 0..N-1)"), that the table is not
 * empty, then combines the groups. */
AQ_API AQ_MUST_CHECK aq_status aq_calib_finish(aq_calib *calib, aq_calib_combine combine,
                                               aq_error *err);

typedef struct aq_calib_layer_info {
    const char *name; /* owned by the calib object */
    size_t channels;
    size_t groups;
    /* How much the layer's input changes along the trajectory: the largest over the smallest
     * per-group mean (scale; +INFINITY when some group is all zero and another is not), and
     * the largest relative L2 distance of a normalised group vector from their mean (which
     * channels matter). */
    double scale_ratio;
    double shape_variation;
} aq_calib_layer_info;

/* After aq_calib_finish: layers in order of first appearance. */
AQ_API size_t aq_calib_layer_count(const aq_calib *calib);
AQ_API AQ_MUST_CHECK aq_status aq_calib_layer_get(const aq_calib *calib, size_t i,
                                                  aq_calib_layer_info *out, aq_error *err);
/* Checks the table against a model's tensor names: every calibration layer L must have a
 * tensor "L.weight", or "COMPONENT/L.weight". AQ_INVALID_ARGUMENT naming the first layer the
 * model does not have. */
AQ_API AQ_MUST_CHECK aq_status aq_calib_check_model(const aq_calib *calib,
                                                    const char *const *tensor_names, size_t n,
                                                    aq_error *err);
/* Fills out (out_len elements, one per element of the tensor, row-major) with the importance
 * of each weight of the tensor `name` ("L.weight" or "COMPONENT/L.weight") of the given shape:
 * the combined statistic of the input channel it multiplies. A weight of shape
 * [out, in/groups, k...] (a Linear [out, in], a convolution, a grouped convolution) is
 * matched to a layer of `in` channels. When the table has no such layer, *found is 0 and
 * out is untouched (quantize without importance); otherwise *found is 1. Errors: called
 * before aq_calib_finish, fewer than 2 dimensions, a channel count that does not fit the
 * shape (AQ_SHAPE_MISMATCH naming both), out_len different from the element count. */
AQ_API AQ_MUST_CHECK aq_status aq_calib_importance(const aq_calib *calib, const char *name,
                                                   const int64_t *shape, size_t ndim, float *out,
                                                   size_t out_len, int *found, aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Comparing two models (src/io/model_compare.c)                                              */
/* ------------------------------------------------------------------------------------------ */

/* What became of one tensor in a comparison. */
typedef enum aq_compare_status {
    AQ_COMPARE_COMPARED = 0,   /* float on both sides, same shape: metrics filled */
    AQ_COMPARE_MISSING_IN_A,   /* only B has it */
    AQ_COMPARE_MISSING_IN_B,   /* only A has it */
    AQ_COMPARE_SHAPE_MISMATCH, /* both have it, with different shapes */
    AQ_COMPARE_SAME_BYTES,     /* not a float tensor on some side: identical bytes */
    AQ_COMPARE_BYTES_DIFFER    /* not a float tensor on some side: bytes or kinds differ */
} aq_compare_status;

/* "compared", "missing in A", "missing in B", "shapes differ", "identical bytes",
 * "bytes differ"; "unknown" otherwise. */
AQ_API const char *aq_compare_status_name(aq_compare_status status);

/* One side of a compared tensor. */
typedef struct aq_compare_side {
    const char *dtype;  /* the source dtype ("F32", "F16", ...) */
    const char *scheme; /* a model file's row scheme ("affine", "kquant", "raw", ...); NULL for
                           a safetensors side */
    unsigned bit_width; /* a model file row's bit width (16 or 32 when kept); a safetensors
                           side: the dtype's bits (0 when unknown) */
    const int64_t *shape;
    size_t ndim;
} aq_compare_side;

/* One tensor of a comparison, handed to the callback (everything borrowed for the call). A
 * side the tensor is missing from has every field zero / NULL. */
typedef struct aq_compare_tensor {
    const char *name;
    aq_compare_status status;
    aq_compare_side a, b;
    size_t elements;      /* the element count (of the side that has it) */
    aq_metrics metrics;   /* A as reference, B as approximation; AQ_COMPARE_COMPARED only */
    int below_min_cosine; /* 1: compared, and the cosine is below the options' min_cosine */
} aq_compare_tensor;

/* Return 0 to go on; nonzero stops the comparison with AQ_CANCELLED. */
typedef int (*aq_compare_fn)(void *user, const aq_compare_tensor *tensor);

typedef struct aq_model_compare_options {
    size_t size;       /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    double min_cosine; /* 0: no floor; otherwise tensors below it are flagged and counted */
    /* 1: only A's tensors are reported (no pass over B for the tensors A lacks; the compare
     * command's behaviour). 0: then B's extra tensors, as AQ_COMPARE_MISSING_IN_A. */
    int a_only;
    aq_compare_fn on_tensor; /* may be NULL */
    void *on_tensor_user;
    const volatile int *cancel; /* polled between tensors (nonzero: AQ_CANCELLED); may be NULL */
} aq_model_compare_options;

/* Totals of a comparison. worst is owned by the summary: aq_model_compare_summary_reset
 * frees it (a summary is written only on success). */
typedef struct aq_model_compare_summary {
    size_t tensors;      /* tensors reported, every status */
    size_t compared;     /* AQ_COMPARE_COMPARED */
    size_t missing_in_a; /* 0 with a_only */
    size_t missing_in_b;
    size_t mismatched;       /* shapes differ, or non-float bytes differ */
    double mean_sqnr_db;     /* over compared tensors of finite SQNR; +INFINITY if none */
    double min_sqnr_db;      /* +INFINITY if none compared */
    double mean_cosine;      /* over compared tensors; 0 if none */
    double min_cosine;       /* 1 if none compared */
    char *worst;             /* the compared tensor of lowest cosine (then lowest SQNR); or NULL */
    size_t below_min_cosine; /* compared tensors below the options' min_cosine */
} aq_model_compare_summary;

/* Compares two models tensor by tensor, A as the reference: each side a safetensors file, a
 * sharded index, a folder (aq_model_open) or an arrowquant model file (.arrow, recognised by
 * its magic; its rows are dequantized to float32). Tensors are matched by full name and go
 * in A's order (then B's extra ones, without a_only). Float tensors of the same shape get
 * SQNR, cosine and max |error| (aq_metrics_compute: a NaN or Inf in either is an error naming
 * the tensor); other tensors are compared byte for byte. opts may be NULL; summary may be
 * NULL. Errors: files that cannot be opened or read (AQ_IO, AQ_INVALID_DATA, with the path),
 * AQ_CANCELLED from the callback or the cancel flag. */
AQ_API AQ_MUST_CHECK aq_status aq_model_compare(const char *a, const char *b,
                                                const aq_model_compare_options *opts,
                                                aq_model_compare_summary *summary, aq_error *err);
/* Frees what a summary owns and zeroes it. Accepts NULL. */
AQ_API void aq_model_compare_summary_reset(aq_model_compare_summary *summary);

/* The cosine floor a quantized model is held to when none is given (arrowquant validate,
 * Python's validate_quality): the arrowquant.min_cosine a model file records (written when
 * its run had a floor), else the min_cosine of the profile it records, else the local
 * profile's. A path that is not a model file gets the local profile's. */
typedef struct aq_model_floor {
    double min_cosine;
    const char *source;  /* "file" (arrowquant.min_cosine), "profile" (arrowquant.profile) or
                            "default" (the local profile); static storage */
    const char *profile; /* the profile's name (static storage); NULL for "file" */
} aq_model_floor;

/* Errors: a model file that cannot be opened (AQ_IO, AQ_INVALID_DATA, naming the file). */
AQ_API AQ_MUST_CHECK aq_status aq_model_default_floor(const char *quantized, aq_model_floor *out,
                                                      aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* GGUF (src/io/gguf_*.c; docs/gguf.md)                                                       */
/* ------------------------------------------------------------------------------------------ */

/* ggml's block types, with ggml's numeric ids (the values stored in a GGUF file). Types
 * marked "read" are decoded only; the others are also written, by the library's own searched
 * encoders, in ggml's exact block layouts. */
typedef enum aq_gguf_type {
    AQ_GGUF_F32 = 0,
    AQ_GGUF_F16 = 1,
    AQ_GGUF_Q4_0 = 2,
    AQ_GGUF_Q4_1 = 3, /* read */
    AQ_GGUF_Q5_0 = 6,
    AQ_GGUF_Q5_1 = 7, /* read */
    AQ_GGUF_Q8_0 = 8,
    AQ_GGUF_Q2_K = 10,
    AQ_GGUF_Q3_K = 11,
    AQ_GGUF_Q4_K = 12,
    AQ_GGUF_Q5_K = 13,
    AQ_GGUF_Q6_K = 14,
    AQ_GGUF_IQ4_NL = 20, /* read */
    AQ_GGUF_IQ4_XS = 23, /* read */
    AQ_GGUF_BF16 = 30
} aq_gguf_type;

/* ggml's name of a type ("Q4_K", "BF16", ...); "unknown" for a type this library lacks. */
AQ_API const char *aq_gguf_type_name(aq_gguf_type type);
/* The type of a name (case-insensitive). AQ_INVALID_PARAMETER naming the types that can be
 * written when the name is not one of them (write = 1) or of the known types (write = 0). */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_type_from_name(const char *name, int write,
                                                      aq_gguf_type *out, aq_error *err);
/* Elements and bytes per block of a known type (1 element for F32, F16, BF16); 1 if the
 * library can write the type. AQ_UNSUPPORTED for an unknown type. Any output may be NULL. */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_type_info(aq_gguf_type type, size_t *block_elements,
                                                 size_t *block_bytes, int *can_write,
                                                 aq_error *err);

/* Encodes a tensor (any aq_dtype, C order) into ggml blocks of type, over its flattened
 * elements, on the context's threads; the bytes are the same for any thread count. The
 * element count must be a multiple of the type's block (a tensor's innermost dimension must
 * be, for ggml: see aq_model_to_gguf). importance is NULL or one weight (finite, >= 0) per
 * element: the searched encoders then minimise the weighted error. out receives
 * elements / block * block_bytes bytes (out_size at least that). Errors: NaN/Inf
 * (AQ_NON_FINITE, "Layer 'NAME' contains NaN or Inf at index I"), a type that cannot be
 * written, a size that is not whole blocks, too small an output. */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_encode(aq_ctx *ctx, aq_gguf_type type, const aq_tensor *src,
                                              const float *importance, void *out, size_t out_size,
                                              aq_error *err);
/* Decodes n elements of type from data (size bytes: exactly n / block * block_bytes) into
 * float32, the same floats as ggml's reference decoder. */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_decode(aq_ctx *ctx, aq_gguf_type type, const void *data,
                                              size_t size, size_t n, float *out, aq_error *err);

/* A GGUF file (version 2 or 3, little-endian) opened for reading: memory-mapped, header,
 * metadata and tensor table validated in full when opened. */
typedef struct aq_gguf aq_gguf;

/* One tensor of a GGUF file. shape is in C order, outermost first (the reverse of ggml's
 * ne[]), the order of safetensors and torch. data points into the mapping. */
typedef struct aq_gguf_tensor {
    const char *name;
    aq_gguf_type type;
    size_t ndim;
    int64_t shape[AQ_MAX_NDIM];
    size_t elements;
    uint64_t offset; /* of the data in the file */
    size_t nbytes;
    const uint8_t *data;
} aq_gguf_tensor;

/* Opens and validates a GGUF file. Errors are AQ_INVALID_DATA (AQ_UNSUPPORTED for a tensor
 * type this library does not decode) naming the file, the byte offset and, past the header,
 * the metadata key or tensor: a short or truncated file, a bad magic or version, an unknown
 * value type, strings or arrays past the end, duplicate tensor names, more than 4
 * dimensions, an element count that overflows, a tensor whose offset is not a multiple of the
 * alignment or whose data runs past the end of the file, an alignment that is not a power of
 * two. *out is written only on success. */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_open(const char *path, aq_gguf **out, aq_error *err);
/* The same over bytes in memory (copied; label names them in messages). */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_open_memory(const void *data, size_t size, const char *label,
                                                   aq_gguf **out, aq_error *err);
AQ_API void aq_gguf_free(aq_gguf *g);
/* 1 if the file at path starts with the GGUF magic. */
AQ_API int aq_gguf_is_gguf(const char *path);
AQ_API uint32_t aq_gguf_version(const aq_gguf *g);
AQ_API size_t aq_gguf_alignment(const aq_gguf *g);
AQ_API size_t aq_gguf_tensor_count(const aq_gguf *g);
/* Tensor i in file order; NULL past the end. */
AQ_API const aq_gguf_tensor *aq_gguf_tensor_at(const aq_gguf *g, size_t i);
/* 1 and *index when a tensor has that name. */
AQ_API int aq_gguf_find(const aq_gguf *g, const char *name, size_t *index);
/* Metadata entries in file order: key, ggml's value type name ("string", "uint32", "array",
 * ...) and the value as text (strings as they are, numbers in decimal, booleans true/false,
 * arrays as "[type; N]" with up to their first 8 items). Owned by g. */
AQ_API size_t aq_gguf_metadata_count(const aq_gguf *g);
AQ_API AQ_MUST_CHECK aq_status aq_gguf_metadata_get(const aq_gguf *g, size_t i, const char **key,
                                                    const char **type, const char **value,
                                                    aq_error *err);
/* The value of a string entry, or NULL. */
AQ_API const char *aq_gguf_metadata_string(const aq_gguf *g, const char *key);
/* Decodes tensor i into float32 (out_capacity elements at least its element count). */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_tensor_dequantize(aq_ctx *ctx, const aq_gguf *g, size_t i,
                                                         float *out, size_t out_capacity,
                                                         aq_error *err);

/* What became of one tensor of a conversion to GGUF (borrowed for the callback). */
typedef struct aq_gguf_tensor_result {
    size_t index;
    const char *name;
    aq_gguf_type type;
    /* Why it got that type: the aq_rule_name of the rules' decision, or "type" (the options'
     * type), "1-D", "block" (innermost dimension not a multiple of the block: Q8_0 or F16),
     * "range" (F32: a value beyond float16's range). */
    const char *reason;
    size_t elements;
    size_t bytes;   /* of its data in the file */
    double sqnr_db; /* of its decoded floats against the source (+INFINITY when exact) */
    double cosine;
} aq_gguf_tensor_result;

typedef void (*aq_gguf_tensor_fn)(void *user, const aq_gguf_tensor_result *result);

/* Options of a conversion to GGUF. */
typedef struct aq_gguf_write_options {
    size_t size;       /* sizeof this struct, as AQ_SIZED_INIT sets it (see the conventions) */
    aq_gguf_type type; /* the type of the tensors that are quantized (any writable type) */
    /* Layer rules (aq_rules_create; NULL: none). With rules every float tensor gets the type
     * its decision maps to: kept -> F16 (F32 where the rule keeps 32 bits), 8 bits -> Q8_0,
     * the profile's bits -> `type` (so the diffusion rules give a mixed file). Without, every
     * tensor of 2 or more dimensions gets `type`. Either way a tensor whose innermost
     * dimension is not a multiple of the type's block (ggml blocks run along it) is stored as
     * Q8_0 when a K type was chosen and it is a multiple of 32, else as F16 (F32 if a value
     * is beyond float16's range); 1-D tensors as F32; non-float tensors are refused. */
    const struct aq_rules *rules;
    const struct aq_calib *calib; /* importance (as aq_model_quantize_options.calib) or NULL */
    /* general.architecture: NULL detects it from the tensor names ("flux", "sd3", "sdxl",
     * "sd1"; none written when not recognised, the convention of ComfyUI-GGUF's loader); ""
     * writes none. */
    const char *architecture;
    const char *name;            /* general.name, or NULL */
    aq_gguf_tensor_fn on_tensor; /* after each tensor is written (may be NULL) */
    void *on_tensor_user;
    const volatile int *cancel;
} aq_gguf_write_options;

/* Totals of a conversion. */
typedef struct aq_gguf_write_summary {
    size_t tensors;
    size_t quantized; /* tensors written in a block type other than F32/F16/BF16 */
    size_t bytes_in;  /* source tensor bytes */
    size_t bytes_out; /* the file's size */
    size_t count_by_type[AQ_GGUF_BF16 + 1]; /* tensors per aq_gguf_type */
} aq_gguf_write_summary;

/* Writes a model (aq_model_open) as a GGUF file (version 3, alignment 32), tensor names as
 * in the source, metadata general.architecture, general.quantization_version = 2,
 * general.file_type, general.alignment and the source's __metadata__ under
 * "arrowquant.meta.KEY". The header is written first, then one tensor at a time (memory
 * stays near the largest tensor); the file appears under out_path only when complete.
 * summary may be NULL. */
AQ_API AQ_MUST_CHECK aq_status aq_model_to_gguf(aq_ctx *ctx, aq_model *model, const char *out_path,
                                                const aq_gguf_write_options *opts,
                                                aq_gguf_write_summary *summary, aq_error *err);

/* Converts a GGUF file to one safetensors file: F32, F16 and BF16 tensors as they are, block
 * types decoded to out_dtype (AQ_ST_F32, AQ_ST_F16 or AQ_ST_BF16; AQ_ST_UNKNOWN means F32),
 * string metadata into __metadata__. Streaming, atomic. */
AQ_API AQ_MUST_CHECK aq_status aq_gguf_to_safetensors(aq_ctx *ctx, const char *in_path,
                                                      const char *out_path, aq_st_dtype out_dtype,
                                                      aq_error *err);

#ifdef __cplusplus
}
#endif

#endif /* ARROWQUANT_H */

/*
 * The experimental part of the API (the pattern of zstd's ZSTD_STATIC_LINKING_ONLY).
 *
 * What the part above declares is stable: it keeps its meaning within a major.minor release.
 * What follows may change in any release; new API starts here and moves above once it has
 * settled. A program opts in by defining AQ_EXPERIMENTAL before including this header, so that
 * depending on the unstable part is a visible choice:
 *
 *     #define AQ_EXPERIMENTAL
 *     #include <arrowquant.h>
 *
 * Structs that a caller fills carry their size as the first field: set it to sizeof the
 * struct as the caller was compiled (AQ_SIZED_INIT does), so a library with a longer struct
 * reads only the fields the caller knows and leaves the rest at their defaults. The
 * conventions above hold here too. The section has its own guard, so a file that included
 * this header without AQ_EXPERIMENTAL may define it and include the header again.
 */
#if defined(AQ_EXPERIMENTAL) && !defined(ARROWQUANT_H_EXPERIMENTAL)
#define ARROWQUANT_H_EXPERIMENTAL

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

#endif /* AQ_EXPERIMENTAL */
