/* Internal view of the context and the tensor driver, shared by src/quant and the modules
 * above it (src/arrow, src/ipc, src/io). */
#ifndef AQ_QUANT_INTERNAL_H
#define AQ_QUANT_INTERNAL_H

#include "aq_common.h"
#include "kernels.h"

/* A fixed set of worker threads owned by a context (pool.c). */
typedef struct aq__pool aq__pool;
typedef void (*aq__pool_task_fn)(void *arg, size_t task);

struct aq_ctx {
    unsigned bit_width;
    size_t group_size;
    aq_scheme scheme;
    unsigned threads; /* 0 = one per online CPU */
    const aq__kernel_table *kernels;
    aq__pool *pool;        /* created on first use with several threads; freed by aq_ctx_free */
    bool preserve_moments; /* AQ_PARAM_PRESERVE_MOMENTS (quality.c) */
    bool gguf_search;      /* AQ_PARAM_GGUF_SEARCH (gguf_codec.c) */
};

/* A scheme's kernels over one span (aq__span: whole groups or super-blocks, starting on a
 * byte of the packed codes), through the kernel table k (its reference kernel where k has
 * none). codes: the span's packed codes; sub: its sub-block parameters (two-level schemes;
 * NULL otherwise); scales and zero_points: its groups' (d and dmin for two-level schemes).
 * quantize returns false when the span holds a value the kernel refuses (only kernels that
 * check values, kernel_checks); importance is NULL or the span's weights (ignored by schemes
 * without importance). dtype is the input's for quantize, the output's for dequantize. */
typedef bool (*aq__scheme_quantize_fn)(const aq__kernel_table *k, aq_dtype dtype, const void *src,
                                       const float *importance, const aq__span *s, uint8_t *codes,
                                       uint8_t *sub, float *scales, float *zero_points);
typedef void (*aq__scheme_dequantize_fn)(const aq__kernel_table *k, aq_dtype dtype,
                                         const uint8_t *codes, const uint8_t *sub,
                                         const float *scales, const float *zero_points,
                                         const aq__span *s, void *out);

/* One row of the table of schemes (scheme.c); aq_scheme_info is its public view. */
typedef struct aq__scheme_traits {
    aq_scheme scheme;
    const char *name;
    unsigned bits_mask;   /* bit b set: b bits allowed */
    unsigned fixed_group; /* 0: the context's group size; else the layout's always */
    bool flattened;       /* blocks over the flattened tensor */
    bool two_level;       /* d/dmin per block, sub-block scales and mins in the packed data */
    bool importance;      /* the search uses an importance vector */
    bool moments;         /* the moment correction applies */
    bool selectable;      /* false: read only */
    float max_abs;        /* largest |x| accepted; 0: any finite */
    int gguf[9];          /* the GGUF type of the same role at b bits, or -1 */
    aq__scheme_quantize_fn quantize;
    aq__scheme_dequantize_fn dequantize;
    bool kernel_checks; /* quantize refuses NaN/Inf itself; else the driver checks first */
} aq__scheme_traits;

/* The table's row for a scheme; NULL for a value outside aq_scheme. */
const aq__scheme_traits *aq__scheme_traits_of(aq_scheme scheme);
/* The group size a layout of `scheme` uses: the scheme's own where it fixes one, else
 * group_size. */
size_t aq__scheme_group(aq_scheme scheme, size_t group_size);
/* The scheme whose layout is the largest at a given bit width and group size (parameters per
 * sub-block, rows padded one by one): a bound for a tensor that may take any scheme. */
aq_scheme aq__scheme_widest(void);
/* The GGUF type for a tensor of bit_width bits: that of the first selectable scheme with GGUF
 * types, at the largest width it has one for that is at most bit_width (its smallest when
 * none is); -1 when no scheme has a GGUF type. */
int aq__scheme_gguf_type(unsigned bit_width);

/* The number of threads a `threads` parameter means: itself, or the online CPUs for 0. */
unsigned aq__threads_resolve(unsigned threads);

/* A pool of `threads` threads in all: the caller of aq__pool_run plus threads - 1 workers
 * (fewer if the system refuses to start more; results never depend on the count). */
aq_status aq__pool_create(unsigned threads, aq__pool **out, aq_error *err);
/* Stops and joins the workers. Accepts NULL. */
void aq__pool_free(aq__pool *pool);
/* Threads that take part in aq__pool_run (workers + the caller); 1 for NULL. */
unsigned aq__pool_threads(const aq__pool *pool);
/* Runs fn(arg, i) for every i in [0, ntasks) on the pool's threads and the calling thread,
 * and returns when all have finished (in a fork()ed child, on the calling thread alone). Tasks run
 * in any order and concurrently: fn must only write what task i owns. pool may be NULL (everything
 * runs on the caller). One job at a time per pool (a context is used by one thread at a time). */
void aq__pool_run(aq__pool *pool, size_t ntasks, aq__pool_task_fn fn, void *arg);

/* The context's pool for its `threads` parameter, created on first use; NULL (and AQ_OK)
 * when the parameter resolves to one thread. */
aq_status aq__ctx_pool(aq_ctx *ctx, aq__pool **out, aq_error *err);

/* Number of elements of a shape, with every dimension checked (non-negative, at most
 * AQ_MAX_NDIM dimensions, no size_t overflow). name is used in the message. Zero elements
 * are allowed here; callers that need data refuse them. */
aq_status aq__shape_elements(const char *name, const int64_t *shape, size_t ndim, size_t *out,
                             aq_error *err);

/* Validates a bit width or group size with the messages of the public API. */
aq_status aq__check_bit_width(int64_t value, aq_error *err);
aq_status aq__check_group_size(int64_t value, aq_error *err);

/* The driver's layout and span cutting (quantize.c), for the other drivers. */
aq_status aq__quant_layout(const char *name, const int64_t *shape, size_t ndim, unsigned bit_width,
                           size_t group_size, aq_layout *out, aq_error *err);
aq__span aq__quant_span_at(const aq_layout *l, size_t start);
size_t aq__quant_group_at(const aq_layout *l, size_t start);

/* Layout of any scheme, and the quality schemes' drivers (quality.c). */
aq_status aq__scheme_layout(const char *name, aq_scheme scheme, const int64_t *shape, size_t ndim,
                            unsigned bit_width, size_t group_size, aq_layout *out, aq_error *err);
/* Dequantizes a tensor of any scheme that aq_dequantize has checked against its layout l,
 * with its scheme's dequantize over spans on the context's threads; fails only when those
 * threads or the list of spans cannot be had. */
aq_status aq__dequantize_spans(aq_ctx *ctx, const aq_qtensor *src, const aq_layout *l,
                               aq_dtype out_dtype, void *out, aq_error *err);

/* Dequantizes rows [r0, r0 + nr) of a whole quantized tensor of any scheme (src describes the
 * whole tensor; its sizes are checked against its scheme's layout) into out (nr * cols
 * elements). Rows are the tensor's own (shape[0] of them), whatever the scheme's layout. The
 * rows must start on a byte of the packed codes and end on one or at the end of the tensor
 * (AQ_INVALID_ARGUMENT otherwise; any rows for the flattened kquant layout). A kquant tensor
 * keeps the sub-block parameters of all its super-blocks after all codes, so the super-blocks
 * covering the rows are gathered into a scratch copy of their codes and parameters (allocated
 * here, about the size of the rows' packed data). */
aq_status aq__dequantize_rows(aq_ctx *ctx, const aq_qtensor *src, size_t r0, size_t nr,
                              aq_dtype out_dtype, void *out, size_t out_capacity, aq_error *err);

/* One option of a size budget for one tensor: scheme and bits, its size and squared error,
 * and whether it meets the cosine floor (true without one). */
typedef struct aq__budget_option {
    aq_scheme scheme;
    unsigned bits;
    size_t group_size; /* its layout's group size; 0: the context's */
    size_t bytes;
    double sse;
    /* The default mode's objective (pipeline.c): the importance-weighted squared error over the
     * tensor's sum of squares; 0 for the raw option. */
    double relative;
    double cosine; /* its cosine similarity with the source (1 for the raw option) */
    bool meets;
    bool keep; /* the tensor stored unquantized (bits 16 or 32), an option of the default mode */
} aq__budget_option;

/* Turns a calibration's importance (aq_calib_importance: each input channel's combined,
 * normalised mean square activation) into the weights the quantizer and the budget use: its
 * square root, in place. The mean square itself (the output's squared error, were channels
 * independent) lets a few loud channels dominate a group's search; at 2 bits that spoils the
 * other channels of the group, and the samples get worse than with no importance at all
 * (docs/pipeline.md, "Time-aware importance"). */
void aq__importance_temper(float *imp, size_t n);

/* The budget's allocation (pipeline.c), shared by aq_qset_quantize and the model pipeline. opt
 * holds n rows of `per` options, row i with count[i] measured options; they are rewritten in
 * place to each tensor's lower convex hull of (bytes, sse) among the options meeting the floor
 * (or the most accurate one when none does). Each tensor starts at its smallest option; the
 * upgrade saving the most squared error per added byte is taken while the total stays within
 * target * total_elements / 8 bytes. choice[i] receives the index of tensor i's option in its
 * rewritten row. AQ_INVALID_PARAMETER when the smallest options exceed the budget (floor: the
 * message says "meeting min_cosine"). */
aq_status aq__budget_allocate(aq__budget_option *opt, size_t n, size_t per, const size_t *count,
                              size_t total_elements, double target, bool floor, size_t *choice,
                              aq_error *err);

/* GGUF block types (gguf_codec.c): the ggml traits of a type, NULL if unknown, for the GGUF
 * reader and writer above this layer. */
struct aq__ggml_traits;
const struct aq__ggml_traits *aq__gguf_traits(uint32_t type);

#endif /* AQ_QUANT_INTERNAL_H */
