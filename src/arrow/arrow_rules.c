/*
 * Layer rules and calibration in the batch path: the parts that do not depend on the batch
 * plan. Kept rows (docs/format.md 6.1) are raw little-endian float16 or float32; importance
 * vectors come from a finished aq_calib.
 */
#include "arrow_internal.h"
#include "quant_internal.h"

#include <stdlib.h>

/* Element k of a tensor as the float32 value x of docs/format.md section 2. */
static float ar_value(const aq_tensor *t, size_t k)
{
    switch (t->dtype) {
    case AQ_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * k, 2);
        return aq__f16_to_f32(h);
    }
    case AQ_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * k, 2);
        return aq__bf16_to_f32(h);
    }
    case AQ_DTYPE_F64: {
        double d;
        memcpy(&d, (const uint8_t *)t->data + 8 * k, 8);
        return (float)d;
    }
    default: {
        float f;
        memcpy(&f, (const uint8_t *)t->data + 4 * k, 4);
        return f;
    }
    }
}

aq_status aq__arrow_keep_bits(const aq_tensor *t, size_t elements, unsigned decided, unsigned *bits,
                              aq_error *err)
{
    /* NaN and Inf are refused as for quantized rows (float64 beyond float32's range too). */
    aq_status st = aq_tensor_check_finite(t, NULL, err);
    if (st != AQ_OK) {
        return st;
    }
    unsigned b = decided == 16 ? 16u : 32u;
    if (b == 16 && t->dtype != AQ_DTYPE_F16) {
        /* A value that float16 would turn into Inf keeps the whole row in float32. */
        for (size_t k = 0; k < elements; k++) {
            uint16_t h = aq__f32_to_f16(ar_value(t, k));
            if ((h & 0x7c00u) == 0x7c00u) {
                b = 32;
                break;
            }
        }
    }
    *bits = b;
    return AQ_OK;
}

void aq__arrow_keep_encode(const aq_tensor *t, size_t elements, unsigned bits, uint8_t *out)
{
    if (bits == 16 && t->dtype == AQ_DTYPE_F16) {
        memcpy(out, t->data, elements * 2);
    } else if (bits == 32 && t->dtype == AQ_DTYPE_F32) {
        memcpy(out, t->data, elements * 4);
    } else if (bits == 16) {
        for (size_t k = 0; k < elements; k++) {
            uint16_t h = aq__f32_to_f16(ar_value(t, k));
            memcpy(out + 2 * k, &h, 2);
        }
    } else {
        for (size_t k = 0; k < elements; k++) {
            float f = ar_value(t, k);
            memcpy(out + 4 * k, &f, 4);
        }
    }
}

aq_status aq__arrow_check_calib(const aq_batch_options *opts, aq_error *err)
{
    if (opts == NULL || opts->calib == NULL) {
        return AQ_OK;
    }
    /* An empty name matches no layer ("L.weight"), so this only asks whether the statistics
     * are finished, before any row could fail for that reason. */
    int found = 0;
    return aq_calib_importance(opts->calib, "", NULL, 0, NULL, 0, &found, err);
}

aq_status aq__arrow_importance(const aq_batch_options *opts, const aq_tensor *t, size_t elements,
                               float **out, aq_error *err)
{
    *out = NULL;
    if (opts == NULL || opts->calib == NULL || t->name == NULL) {
        return AQ_OK;
    }
    float *v = malloc((elements > 0 ? elements : 1) * sizeof *v);
    if (v == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory for its importance",
                             t->name);
    }
    int found = 0;
    aq_status st =
        aq_calib_importance(opts->calib, t->name, t->shape, t->ndim, v, elements, &found, err);
    if (st != AQ_OK || !found) {
        free(v);
        return st;
    }
    aq__importance_temper(v, elements);
    *out = v;
    return AQ_OK;
}

void aq__arrow_base_params(const aq_ctx *ctx, const aq_batch_options *opts, aq_scheme *scheme,
                           unsigned *bits, size_t *group_size)
{
    if (opts != NULL && opts->rules != NULL) {
        aq_profile prof;
        aq_rules_profile(opts->rules, &prof);
        *scheme = prof.scheme;
        *bits = prof.bit_width;
        *group_size = aq__scheme_group(prof.scheme, ctx->group_size);
        return;
    }
    *scheme = ctx->scheme;
    *bits = ctx->bit_width;
    *group_size = aq__scheme_group(ctx->scheme, ctx->group_size);
}
