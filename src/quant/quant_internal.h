/* Internal view of the context and the tensor driver, shared by src/quant and the modules
 * above it (src/arrow, src/ipc, src/io). */
#ifndef AQ_QUANT_INTERNAL_H
#define AQ_QUANT_INTERNAL_H

#include "aq_common.h"
#include "kernels.h"

struct aq_ctx {
    unsigned bit_width;
    size_t group_size;
    aq_scheme scheme;
    unsigned threads; /* 0 = one per online CPU */
    const aq__kernel_table *kernels;
    bool preserve_moments; /* AQ_PARAM_PRESERVE_MOMENTS (quality.c) */
};

/* Number of elements of a shape, with every dimension checked (non-negative, at most
 * AQ_MAX_NDIM dimensions, no size_t overflow). name is used in the message. Zero elements
 * are allowed here; callers that need data refuse them. */
aq_status aq__shape_elements(const char *name, const int64_t *shape, size_t ndim, size_t *out,
                             aq_error *err);

/* Validates a bit width or group size with the messages of the public API. */
aq_status aq__check_bit_width(int64_t value, aq_error *err);
aq_status aq__check_group_size(int64_t value, aq_error *err);

/* The driver's layout and span cutting (quantize.c), for the other drivers. */
aq_status aq__quant_layout(const char *name, const int64_t *shape, size_t ndim,
                           unsigned bit_width, size_t group_size, aq_layout *out, aq_error *err);
aq__span aq__quant_span_at(const aq_layout *l, size_t start);
size_t aq__quant_group_at(const aq_layout *l, size_t start);

/* Layout of any scheme, and the quality schemes' drivers (quality.c). */
aq_status aq__scheme_layout(const char *name, aq_scheme scheme, const int64_t *shape,
                            size_t ndim, unsigned bit_width, size_t group_size, aq_layout *out,
                            aq_error *err);
aq_status aq__dequantize_kquant(aq_ctx *ctx, const aq_qtensor *src, aq_dtype out_dtype,
                                void *out, size_t out_capacity, aq_error *err);

#endif /* AQ_QUANT_INTERNAL_H */
