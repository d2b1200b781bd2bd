/*
 * The tensor driver: validates a tensor, computes its layout, cuts it into spans and runs the
 * kernels over them. Span boundaries depend only on the tensor's layout, never on the number
 * of threads, so the output bytes are the same however the work is shared out.
 */
#include "quant_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

/* Target elements per span: large enough to amortise the per-span overhead, small enough to
 * spread a tensor over threads and to keep a span's input and output in cache. */
#define QUANT_SPAN_ELEMENTS ((size_t)1 << 16)

aq_status aq__shape_elements(const char *name, const int64_t *shape, size_t ndim, size_t *out,
                             aq_error *err)
{
    if (ndim > AQ_MAX_NDIM) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Layer '%s': %zu dimensions, at most %d are supported",
                             aq__name_or_unnamed(name), ndim, AQ_MAX_NDIM);
    }
    if (ndim > 0 && shape == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': shape is NULL",
                             aq__name_or_unnamed(name));
    }
    size_t n = 1;
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Layer '%s': dimension %zu is negative (%" PRId64 ")",
                                 aq__name_or_unnamed(name), i, shape[i]);
        }
        if ((uint64_t)shape[i] > SIZE_MAX || !aq__mul_size(n, (size_t)shape[i], &n)) {
            return aq__error_set(err, AQ_OVERFLOW,
                                 "Layer '%s': the shape's element count overflows at dimension "
                                 "%zu (%" PRId64 ")",
                                 aq__name_or_unnamed(name), i, shape[i]);
        }
    }
    *out = n;
    return AQ_OK;
}

static aq_status quant_layout(const char *name, const int64_t *shape, size_t ndim,
                              unsigned bit_width, size_t group_size, aq_layout *out, aq_error *err)
{
    aq_status st;
    if ((st = aq__check_bit_width(bit_width, err)) != AQ_OK ||
        (st = aq__check_group_size((int64_t)group_size, err)) != AQ_OK) {
        return st;
    }
    size_t elements = 0;
    if ((st = aq__shape_elements(name, shape, ndim, &elements, err)) != AQ_OK) {
        return st;
    }
    if (elements == 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s' has no elements",
                             aq__name_or_unnamed(name));
    }
    aq_layout l;
    l.rows = ndim >= 2 ? (size_t)shape[0] : 1;
    l.cols = elements / l.rows;
    l.elements = elements;
    l.bit_width = bit_width;
    l.group_size = group_size;
    l.groups_per_row = l.cols / group_size + (l.cols % group_size != 0);
    size_t bits;
    if (!aq__mul_size(l.rows, l.groups_per_row, &l.groups) ||
        !aq__mul_size(elements, bit_width, &bits)) {
        return aq__error_set(err, AQ_OVERFLOW, "Layer '%s': quantized size overflows",
                             aq__name_or_unnamed(name));
    }
    l.packed_bytes = bits / 8 + (bits % 8 != 0);
    *out = l;
    return AQ_OK;
}

aq_status aq_layout_compute(const int64_t *shape, size_t ndim, unsigned bit_width,
                            size_t group_size, aq_layout *out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_layout_compute: NULL output");
    }
    return quant_layout(NULL, shape, ndim, bit_width, group_size, out, err);
}

static aq_status quant_check_tensor(const aq_tensor *t, aq_error *err)
{
    if (t == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor is NULL");
    }
    if ((unsigned)t->dtype >= AQ_DTYPE_COUNT) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "Layer '%s': unknown dtype %d (expected f32, f16, bf16 or f64)",
                             aq__name_or_unnamed(t->name), (int)t->dtype);
    }
    if (t->data == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': data is NULL",
                             aq__name_or_unnamed(t->name));
    }
    return AQ_OK;
}

aq_status aq_quantize_bound(const aq_ctx *ctx, const aq_tensor *src, aq_layout *out, aq_error *err)
{
    if (ctx == NULL || src == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_quantize_bound: NULL argument");
    }
    return aq__scheme_layout(src->name, ctx->scheme, src->shape, src->ndim, ctx->bit_width,
                             ctx->group_size, out, err);
}

/* The span that starts at element `start`: it ends at the first group boundary at or past
 * start + QUANT_SPAN_ELEMENTS whose packed position is byte-aligned, or at the tensor's end. */
static aq__span quant_next_span(const aq_layout *l, size_t start)
{
    aq__span s = {0, start % l->cols, l->cols, l->group_size, l->bit_width};
    size_t per_byte = 8 / l->bit_width;
    size_t end = start;
    if (l->elements - start <= QUANT_SPAN_ELEMENTS) {
        end = l->elements;
    } else {
        end = start + QUANT_SPAN_ELEMENTS;
        for (;;) {
            size_t col = end % l->cols;
            if (col != 0) {
                /* Move to the next group boundary of this row (or the row's end). */
                size_t in_group = col % l->group_size;
                if (in_group != 0) {
                    size_t step = l->group_size - in_group;
                    end = step < l->cols - col ? end + step : end + (l->cols - col);
                }
            }
            if (end >= l->elements) {
                end = l->elements;
                break;
            }
            if (end % per_byte == 0) {
                break;
            }
            /* Not byte-aligned: try the next boundary. Row starts r*cols are aligned at least
             * every 8 rows, so this ends. */
            col = end % l->cols;
            size_t step = l->group_size < l->cols - col ? l->group_size : l->cols - col;
            end += step;
        }
    }
    s.n = end - start;
    return s;
}

/* Index of the group that starts at element `start` (a group boundary). */
static size_t quant_group_index(const aq_layout *l, size_t start)
{
    return (start / l->cols) * l->groups_per_row + (start % l->cols) / l->group_size;
}

aq_status aq_quantize(aq_ctx *ctx, const aq_tensor *src, const aq_qbuffers *dst, aq_error *err)
{
    if (ctx == NULL || dst == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_quantize: NULL argument");
    }
    if (src == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor is NULL");
    }
    /* One driver for every scheme (quality.c): the table of schemes picks the kernels. */
    return aq_quantize_ex(ctx, src, NULL, dst, NULL, err);
}

/* The checks of aq_dequantize for every scheme: the output dtype, the scheme's own parameter
 * (kquant's super-block size, or a known scheme), the buffers against the layout, the output
 * capacity and finite parameters. The wording names kquant's super-blocks and d/dmin where the
 * scheme is kquant. Writes the layout on success. */
static aq_status quant_dequantize_check(const aq_qtensor *src, aq_dtype out_dtype, const void *out,
                                        size_t out_capacity, aq_layout *out_l, aq_error *err)
{
    const char *name = aq__name_or_unnamed(src->name);
    const aq__scheme_traits *t = aq__scheme_traits_of(src->scheme);
    if (out_dtype != AQ_DTYPE_F32 && out_dtype != AQ_DTYPE_F16 && out_dtype != AQ_DTYPE_BF16) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "Layer '%s': dequantize output dtype must be f32, f16 or bf16", name);
    }
    if (t == NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED, "Layer '%s': unknown scheme %d", name,
                             (int)src->scheme);
    }
    const bool kq = t->two_level;
    if (t->fixed_group != 0 && src->group_size != t->fixed_group) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Layer '%s': kquant group size is %zu, expected %u (the super-block "
                             "size)",
                             name, src->group_size, t->fixed_group);
    }
    aq_layout l;
    aq_status st = aq__scheme_layout(src->name, src->scheme, src->shape, src->ndim, src->bit_width,
                                     src->group_size, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    if (src->packed_size != l.packed_bytes) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Layer '%s': %zu packed bytes, expected %zu for %zu elements at "
                             "%u bits%s",
                             name, src->packed_size, l.packed_bytes, l.elements, l.bit_width,
                             kq ? " with kquant sub-block parameters" : "");
    }
    if (src->groups != l.groups) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "Layer '%s': %zu scales and zero points, expected %zu (%zu rows x "
                             "%zu %s)",
                             name, src->groups, l.groups, l.rows, l.groups_per_row,
                             kq ? "super-blocks" : "groups");
    }
    if (src->packed == NULL || src->scales == NULL || src->zero_points == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': a buffer is NULL", name);
    }
    if (out_capacity < l.elements) {
        return aq__error_set(err, AQ_BUFFER_TOO_SMALL,
                             "Layer '%s': output holds %zu elements, needs %zu", name, out_capacity,
                             l.elements);
    }
    for (size_t i = 0; i < l.groups; i++) {
        if (!isfinite(src->scales[i]) || !isfinite(src->zero_points[i])) {
            return aq__error_set(err, AQ_INVALID_DATA, "Layer '%s': %s of %s %zu is not finite",
                                 name, kq ? "d or dmin" : "scale or zero point",
                                 kq ? "super-block" : "group", i);
        }
    }
    *out_l = l;
    return AQ_OK;
}

aq_status aq_dequantize(aq_ctx *ctx, const aq_qtensor *src, aq_dtype out_dtype, void *out,
                        size_t out_capacity, aq_error *err)
{
    if (ctx == NULL || src == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_dequantize: NULL argument");
    }
    aq_layout l;
    aq_status st = quant_dequantize_check(src, out_dtype, out, out_capacity, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    return aq__dequantize_spans(ctx, src, &l, out_dtype, out, err); /* quality.c */
}

aq_status aq_tensor_check_finite(const aq_tensor *tensor, size_t *first_bad, aq_error *err)
{
    aq_status st = quant_check_tensor(tensor, err);
    if (st != AQ_OK) {
        return st;
    }
    size_t n;
    if ((st = aq__shape_elements(tensor->name, tensor->shape, tensor->ndim, &n, err)) != AQ_OK) {
        return st;
    }
    size_t at = aq__kernels_ref.find_nonfinite[tensor->dtype](tensor->data, n);
    if (at < n) {
        if (first_bad != NULL) {
            *first_bad = at;
        }
        return aq__error_set(err, AQ_NON_FINITE, "Layer '%s' contains NaN or Inf at index %zu",
                             aq__name_or_unnamed(tensor->name), at);
    }
    return AQ_OK;
}

/* Entry points for the other drivers (quality.c). */
aq_status aq__quant_layout(const char *name, const int64_t *shape, size_t ndim, unsigned bit_width,
                           size_t group_size, aq_layout *out, aq_error *err)
{
    return quant_layout(name, shape, ndim, bit_width, group_size, out, err);
}

aq__span aq__quant_span_at(const aq_layout *l, size_t start)
{
    return quant_next_span(l, start);
}

size_t aq__quant_group_at(const aq_layout *l, size_t start)
{
    return quant_group_index(l, start);
}
