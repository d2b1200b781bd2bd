/* Helpers shared by the core tests: quantize/dequantize a float32 buffer in one call. */
#ifndef AQ_TEST_UTIL_H
#define AQ_TEST_UTIL_H

#include "aq_common.h"
#include "aq_test.h"

#include <stdlib.h>
#include <string.h>

typedef struct tu_result {
    aq_layout layout;
    uint8_t *packed;
    float *scales;
    float *zero_points;
    float *restored;
} tu_result;

static inline void tu_result_free(tu_result *r)
{
    free(r->packed);
    free(r->scales);
    free(r->zero_points);
    free(r->restored);
    memset(r, 0, sizeof *r);
}

/* Quantizes `t` with ctx and restores it to float32. Returns the status of the first failing
 * call (err filled); on success r owns its buffers. */
static inline aq_status tu_roundtrip(aq_ctx *ctx, const aq_tensor *t, tu_result *r, aq_error *err)
{
    memset(r, 0, sizeof *r);
    aq_status st = aq_quantize_bound(ctx, t, &r->layout, err);
    if (st != AQ_OK) {
        return st;
    }
    r->packed = malloc(r->layout.packed_bytes);
    r->scales = malloc(r->layout.groups * sizeof(float));
    r->zero_points = malloc(r->layout.groups * sizeof(float));
    r->restored = malloc(r->layout.elements * sizeof(float));
    if (!r->packed || !r->scales || !r->zero_points || !r->restored) {
        tu_result_free(r);
        return AQ_NO_MEMORY;
    }
    aq_qbuffers b = {r->packed, r->layout.packed_bytes, r->scales, r->zero_points,
                     r->layout.groups};
    if ((st = aq_quantize(ctx, t, &b, err)) != AQ_OK) {
        tu_result_free(r);
        return st;
    }
    aq_qtensor q = {t->name,   AQ_SCHEME_AFFINE, r->layout.bit_width, r->layout.group_size,
                    t->shape,  t->ndim,          r->packed,           r->layout.packed_bytes,
                    r->scales, r->zero_points,   r->layout.groups};
    if ((st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, r->restored, r->layout.elements, err)) !=
        AQ_OK) {
        tu_result_free(r);
        return st;
    }
    return AQ_OK;
}

static inline aq_ctx *tu_ctx(unsigned bits, size_t group_size)
{
    aq_ctx *ctx = NULL;
    aq_error err;
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)group_size, &err) != AQ_OK) {
        fprintf(stderr, "tu_ctx: %s\n", err.message);
        aq_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Code k of a packed buffer (docs/format.md section 5). */
static inline unsigned tu_code(const uint8_t *packed, size_t k, unsigned bits)
{
    size_t bit = k * bits;
    return ((unsigned)packed[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

#endif /* AQ_TEST_UTIL_H */
